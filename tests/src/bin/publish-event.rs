//! Publishes a database event to the local stack `run-local.sh --keep` left up, as the application's API does (the
//! `event` and `table` message attributes the subscriptions filter on), so it goes through SNS, the filtered queues
//! and the event sources to the functions under `cargo lambda watch`:
//! `cargo run -q -p e2e-harness --bin publish-event -- '{"event":"record_updated","table":"users","record":{...}}'`
//! (or a file holding the event).

use std::process::ExitCode;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(argument) = std::env::args().nth(1) else {
        eprintln!("usage: publish-event '<database event JSON>' | <file>");
        return ExitCode::from(2);
    };
    let message = match std::fs::read_to_string(&argument) {
        Ok(text) => text,
        Err(_) => argument,
    };
    match e2e_harness::by_hand::publish_database_event(&e2e_harness::workspace_root(), &message).await {
        Ok(done) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("publish-event: {error}");
            ExitCode::FAILURE
        }
    }
}
