//! The README's main job as a test: the whole event flow on one machine (see `e2e_harness::scenario`).
//!
//! It runs the four function binaries from target/debug, which `tests/test.sh` builds before `cargo test`; cargo
//! cannot build another package's binaries for a test, so a binary older than its sources fails the test rather
//! than test stale code.

use std::path::Path;
use std::time::SystemTime;

use e2e_harness::scenario::{binaries_dir, run};
use e2e_harness::workspace_root;

fn newest_source(dir: &Path) -> SystemTime {
    let mut newest = SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        let modified = if path.is_dir() { newest_source(&path) } else { entry.metadata().and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH) };
        newest = newest.max(modified);
    }
    newest
}

fn assert_fresh(binary: &str) {
    let path = binaries_dir().join(binary);
    let built = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{} is not built: run `cargo build --bins` first (tests/test.sh does)", path.display()));
    let root = workspace_root();
    let sources = newest_source(&root.join("functions").join(binary)).max(newest_source(&root.join("shared")));
    assert!(built >= sources, "{} is older than its sources: run `cargo build --bins` first (tests/test.sh does)", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_whole_event_flow_happens_as_expected() {
    for binary in ["cognito-attribute-sync", "publish-history-email", "lifecycle-hook-completer", "alarm-instance-updater"] {
        assert_fresh(binary);
    }
    let running = run(&binaries_dir()).await;
    assert!(running.report.problems.is_empty(), "expectations failed: {:#?}", running.report.problems);
}
