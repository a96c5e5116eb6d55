//! The README's main command (`bash tests/run-local.sh`, which installs the tools and builds the binaries first):
//! the whole event flow on one machine, see `e2e_harness::scenario`. Exits non-zero when anything did not happen as
//! expected. `--keep` leaves the local AWS running afterwards, for `cargo lambda invoke` by hand.

use std::process::ExitCode;

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> ExitCode {
    let keep = std::env::args().any(|a| a == "--keep");
    let running = e2e_harness::scenario::run(&e2e_harness::scenario::binaries_dir()).await;
    if keep {
        println!("\nThe local stack stays up. For `cargo lambda watch` / `cargo lambda invoke` in another shell:");
        for (key, value) in running.exports() {
            match key.split_once(':') {
                None => println!("  export {key}='{value}'"),
                Some((function, variable)) => println!("  {function}: export {variable}='{value}'"),
            }
        }
        println!("Press Enter to stop it.");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    if running.report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
