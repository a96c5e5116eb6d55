//! The README's main command (`bash tests/run-local.sh`, which installs the tools and builds the binaries first):
//! the whole event flow on one machine, see `e2e_harness::scenario`. Exits non-zero when anything did not happen as
//! expected. `--keep` leaves the local stack up afterwards for running the functions by hand under
//! `cargo lambda watch` (see `e2e_harness::by_hand`): it writes each function's environment file and keeps the
//! template's SQS event sources delivering to cargo lambda watch's invoke endpoint until Enter is pressed.

use std::process::ExitCode;

use e2e_harness::by_hand;

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> ExitCode {
    let keep = std::env::args().any(|a| a == "--keep");
    let running = e2e_harness::scenario::run(&e2e_harness::scenario::binaries_dir()).await;
    if keep {
        let root = e2e_harness::workspace_root();
        let database_url = running.users_db.url_without_password();
        let written = by_hand::write_env_files(&root, &running.stack, &running.proxy.endpoint, &database_url)
            .and_then(|_| by_hand::write_stack_file(&root, &running.moto.endpoint, &running.stack));
        if let Err(error) = written {
            eprintln!("writing the functions' environment files failed: {error}");
            return ExitCode::FAILURE;
        }
        let sqs = aws_sdk_sqs::Client::new(&e2e_harness::sdk_config(&running.moto.endpoint).await);
        let sources = by_hand::deliver_to_watch(&running.stack, &sqs, by_hand::WATCH_PORT);
        println!("\nThe local stack stays up (local AWS: {}).", running.moto.endpoint);
        println!(
            "Each function's environment is in {}/<function>.env, which cargo lambda watch reads.",
            e2e_harness::cargo_lambda::ENV_DIR
        );
        println!(
            "The template's SQS event sources deliver to cargo lambda watch on port {} once it listens.",
            by_hand::WATCH_PORT
        );
        println!("In another shell, at the repository's root:");
        println!("  export PATH=\"$PWD/.venv/bin:$PATH\"");
        println!("  cargo lambda watch > /tmp/watch.log 2>&1 &");
        println!("  cargo lambda invoke cognito-attribute-sync --data-file events/cognito-attribute-sync/sns-envelope-batch.json");
        println!("  cargo run -q -p e2e-harness --bin publish-event -- '{{\"event\":\"record_updated\",\"table\":\"users\",\"record\":{{\"id\":101,\"email\":\"ada@example.com\",\"firstName\":\"Ada\",\"lastName\":\"King\",\"_tenant\":\"acme\"}}}}'");
        println!("Press Enter to stop it.");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        for source in sources {
            let stats = source.stats();
            let function = source.stop().await.function;
            if stats.batches > 0 {
                println!(
                    "  {function}: {} batch(es), {} record(s), {} reported for redelivery",
                    stats.batches, stats.records, stats.failures
                );
            }
        }
        for denial in running.proxy.take_denials() {
            println!("  denied  {}: {}", denial.operation, denial.message);
        }
    }
    if running.report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
