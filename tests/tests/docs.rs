//! The docs name only what exists: every relative link leads to a file (and its heading, for an anchor), every
//! repository path in backticks exists, every source file named by itself exists somewhere in the workspace, and the
//! README stays a first screen and its links.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The README's size: what this is, the two commands, the layout, the event flow and links.
const README_MAX_LINES: usize = 200;
/// Where the repository's own paths start.
const TOP_LEVEL: [&str; 7] = ["functions/", "shared/", "tests/", "infra/", "events/", "docs/", ".ci/"];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

/// Every Markdown file of the repository, outside build output and installed tools.
fn markdown_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable directory").flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | ".venv" | ".git" | "node_modules") {
                markdown_files(&path, found);
            }
        } else if name.ends_with(".md") {
            found.push(path);
        }
    }
}

/// Every file name in the workspace's sources and tests, for a module named by itself (`delivery.rs`).
fn source_file_names(dir: &Path, names: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("readable directory").flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "target" | ".venv" | ".git") {
                source_file_names(&path, names);
            }
        } else {
            names.insert(name);
        }
    }
}

/// The text outside fenced code blocks: links and paths there are prose, not commands to copy.
fn prose(text: &str) -> String {
    let mut fenced = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    prose(text)
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect()
}

/// The targets of `[text](target)` links.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            found.push(rest[..end].trim().to_owned());
        }
    }
    found
}

/// The spans in backticks.
fn code_spans(text: &str) -> Vec<String> {
    text.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

fn relative(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

#[test]
fn every_link_in_the_docs_leads_to_a_file_and_heading_that_exist() {
    let mut files = Vec::new();
    markdown_files(&root(), &mut files);
    assert!(files.len() >= 10, "the docs were not found: {files:?}");
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for link in links(&prose(&text)) {
            if link.starts_with("http://") || link.starts_with("https://") || link.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = link
                .split_once('#')
                .map_or((link.as_str(), None), |(p, f)| (p, Some(f)));
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            if !target.exists() {
                broken.push(format!("{}: {link} (no such file)", relative(file)));
                continue;
            }
            if let Some(fragment) = fragment {
                let headings = anchors(&std::fs::read_to_string(&target).unwrap_or_default());
                if !headings.contains(fragment) {
                    broken.push(format!("{}: {link} (no such heading)", relative(file)));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_path_and_source_file_the_docs_name_exists() {
    let root = root();
    let mut files = Vec::new();
    markdown_files(&root, &mut files);
    let mut names = BTreeSet::new();
    for dir in ["functions", "shared", "tests", "infra", "events", "docs", ".ci"] {
        source_file_names(&root.join(dir), &mut names);
    }
    let mut missing = Vec::new();
    for file in &files {
        for span in code_spans(&prose(&std::fs::read_to_string(file).unwrap())) {
            // Placeholders and patterns name no one file.
            if span.contains(['<', '*', ' ', '{', '$']) || span.contains("...") {
                continue;
            }
            let path = span.trim_end_matches('/');
            if TOP_LEVEL.iter().any(|top| span.starts_with(top)) {
                if !root.join(path).exists() {
                    missing.push(format!("{}: `{span}`", relative(file)));
                }
            } else if !path.contains('/') && path.ends_with(".rs") && !names.contains(path) {
                missing.push(format!("{}: `{span}` (no such source file)", relative(file)));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "the docs name what does not exist:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_readme_is_a_first_screen_and_its_links() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= README_MAX_LINES,
        "README.md has {lines} lines; the rest belongs in docs/ or a function's README"
    );
    for function in std::fs::read_dir(root().join("functions")).unwrap().flatten() {
        let name = function.file_name().to_string_lossy().into_owned();
        assert!(
            function.path().join("README.md").exists(),
            "functions/{name} has no README"
        );
        assert!(
            readme.contains(&format!("functions/{name}/README.md")),
            "README.md does not link functions/{name}/README.md"
        );
    }
    for doc in ["contract", "local-aws", "operating", "performance", "testing"] {
        assert!(
            readme.contains(&format!("docs/{doc}.md")),
            "README.md does not link docs/{doc}.md"
        );
    }
}

#[test]
fn the_link_reader_finds_anchors_links_and_paths() {
    assert_eq!(anchor(" What the local AWS enforces"), "what-the-local-aws-enforces");
    assert_eq!(
        anchor("Configuration, logs and AWS clients"),
        "configuration-logs-and-aws-clients"
    );
    assert_eq!(links("see [a](docs/x.md#y) and [b](#z)"), ["docs/x.md#y", "#z"]);
    assert_eq!(code_spans("run `cargo test` in `tests/`"), ["cargo test", "tests/"]);
    assert_eq!(prose("a\n```sh\n[x](nowhere)\n```\nb\n"), "a\nb\n");
}
