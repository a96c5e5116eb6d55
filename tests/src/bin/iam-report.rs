//! Least privilege, measured: after the suite, per function, the permissions its policy in `infra/template.yaml`
//! grants that no test exercised (the recording proxy records each grant that allowed a call). Exits non-zero when
//! such a grant has no `# unexercised: <why>` comment on its line or the line above: either a test covers a grant,
//! or the template says why it is there.

use e2e_harness::iam::{exercised, exercised_dir, grants, unexercised};

fn main() {
    let path = e2e_harness::workspace_root().join("infra/template.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let template: serde_yaml::Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let grants = grants(&template, &text);
    let seen = exercised(&exercised_dir());
    if seen.is_empty() {
        eprintln!(
            "iam-report: no calls were recorded under {}; run the suite first",
            exercised_dir().display()
        );
        std::process::exit(2);
    }
    let unexercised = unexercised(&grants, &seen);
    println!(
        "== Permissions granted that no test exercised ({} of {} grants)",
        unexercised.len(),
        grants.len()
    );
    let mut unexplained = 0;
    for grant in &unexercised {
        match &grant.reason {
            Some(reason) => println!("  {} {} {}: {reason}", grant.function, grant.sid, grant.action),
            None => {
                unexplained += 1;
                println!(
                    "  {} {} {}: NOT EXERCISED and the template does not say why",
                    grant.function, grant.sid, grant.action
                );
            }
        }
    }
    if unexplained > 0 {
        eprintln!("iam-report: {unexplained} grant(s) no test exercised; cover each with a test, or say why on its template line (`# unexercised: ...`)");
        std::process::exit(1);
    }
}
