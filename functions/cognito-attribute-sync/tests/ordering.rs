//! End to end, as SQS really delivers: the same user's changes out of order, again, in one batch, and in two
//! instances at once, against moto (Cognito, and DynamoDB for the ordering guard, whose conditions moto evaluates).
//! The final attributes always equal the newest row.

use e2e_harness::fixtures::{create_table, user_state};
use e2e_harness::runtime::FunctionProcess;
use e2e_harness::{batch_failures, sqs_event, PoolStack};
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_cognito-attribute-sync");
const ORDERING_TABLE: &str = "user-attribute-ordering";
const QUEUE: &str = "dev-cognito-attribute-sync";

async fn stack() -> PoolStack {
    let stack = PoolStack::start("cognito-attribute-sync-dlq").await;
    create_table(&stack.dynamodb, ORDERING_TABLE, None).await;
    stack
}

fn start(stack: &PoolStack) -> FunctionProcess {
    stack.start_function(BINARY, &[("USER_POOL_ID", stack.pool_id.as_str()), ("ORDERING_TABLE", ORDERING_TABLE)])
}

/// A change of Ada's surname at `second` seconds past 10:00, in an SNS envelope, as the queue holds it.
fn change(event: &str, last_name: &str, second: u32) -> (String, String) {
    let message = json!({"event": event, "table": "users", "occurredAt": format!("2026-11-20T10:{:02}:{:02}Z", second / 60, second % 60),
                         "record": {"email": "ada@example.com", "lastName": last_name}});
    let body = shared::testing::sns_envelope(&message.to_string(), event, "users");
    (format!("m-{last_name}-{second}"), body)
}

fn event(changes: &[(String, String)]) -> Value {
    let records: Vec<(&str, String)> = changes.iter().map(|(id, body)| (id.as_str(), body.clone())).collect();
    sqs_event(QUEUE, &records)
}

/// Invokes with `changes` and, as SQS would, redelivers the reported failures until none is left.
fn deliver(function: &mut FunctionProcess, changes: &[(String, String)]) {
    let mut pending = changes.to_vec();
    for _ in 0..20 {
        let failed = batch_failures(&function.invoke(&event(&pending)).response());
        pending.retain(|(id, _)| failed.contains(id));
        if pending.is_empty() {
            return;
        }
    }
    panic!("changes still failing after 20 deliveries: {pending:?}");
}

async fn surname(stack: &PoolStack) -> Option<String> {
    user_state(&stack.cognito, &stack.pool_id, "ada@example.com").await.1.get("family_name").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_change_redelivered_to_another_instance_does_not_overwrite_a_newer_one() {
    let stack = stack().await;
    deliver(&mut start(&stack), &[change("record_updated", "Newer", 10)]);
    assert_eq!(surname(&stack).await.as_deref(), Some("Newer"));
    // A retry hands the older change to a fresh instance.
    deliver(&mut start(&stack), &[change("record_updated", "Older", 0)]);
    assert_eq!(surname(&stack).await.as_deref(), Some("Newer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_then_newer_ends_with_the_newer() {
    let stack = stack().await;
    let mut function = start(&stack);
    deliver(&mut function, &[change("record_updated", "Older", 0)]);
    assert_eq!(surname(&stack).await.as_deref(), Some("Older"));
    deliver(&mut function, &[change("record_updated", "Newer", 10)]);
    assert_eq!(surname(&stack).await.as_deref(), Some("Newer"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_and_older_in_one_batch_always_end_with_the_newer() {
    let stack = stack().await;
    let mut function = start(&stack);
    for round in 0..10u32 {
        let (newer, older) = (format!("Newer{round}"), format!("Older{round}"));
        deliver(&mut function, &[change("record_updated", &newer, 20 * round + 10), change("record_updated", &older, 20 * round)]);
        assert_eq!(surname(&stack).await, Some(newer), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_racing_on_one_user_end_with_the_newest_change() {
    let stack = stack().await;
    let (mut first, mut second) = (start(&stack), start(&stack));
    for round in 0..5u32 {
        let base = 100 * round;
        let first_changes: Vec<_> = [1, 4, 2].iter().map(|s| change("record_updated", &format!("R{round}S{s}"), base + s)).collect();
        let second_changes: Vec<_> = [3, 5, 0].iter().map(|s| change("record_updated", &format!("R{round}S{s}"), base + s)).collect();
        std::thread::scope(|scope| {
            scope.spawn(|| deliver(&mut first, &first_changes));
            scope.spawn(|| deliver(&mut second, &second_changes));
        });
        assert_eq!(surname(&stack).await, Some(format!("R{round}S5")), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_replayed_after_the_delete_does_not_bring_the_attributes_back() {
    let stack = stack().await;
    let mut function =
        stack.start_function(BINARY, &[("USER_POOL_ID", stack.pool_id.as_str()), ("ORDERING_TABLE", ORDERING_TABLE), ("ON_USER_DELETED", "delete")]);
    deliver(&mut function, &[change("records_created", "Lovelace", 0)]);
    deliver(&mut function, &[change("records_deleted", "Lovelace", 10)]);
    assert!(stack.cognito.admin_get_user().user_pool_id(&stack.pool_id).username("ada@example.com").send().await.is_err(), "deleted");
    // She signs up again (no surname yet); the old create comes back from a redrive.
    let ada = e2e_harness::fixtures::SampleUser { family_name: "", ..e2e_harness::fixtures::SAMPLE_USERS[0] };
    e2e_harness::fixtures::create_user(&stack.cognito, &stack.pool_id, &ada).await;
    deliver(&mut function, &[change("records_created", "Lovelace", 0)]);
    assert_eq!(surname(&stack).await, None, "the replayed create was older than the delete");
    // A new change after the delete applies.
    deliver(&mut function, &[change("record_updated", "King", 20)]);
    assert_eq!(surname(&stack).await.as_deref(), Some("King"));
}
