//! End to end, as SQS really delivers: the same user's changes out of order, again, in one batch, and in two
//! instances at once, against moto (Cognito, and DynamoDB for the ordering guard, whose conditions moto evaluates).
//! The final attributes always equal the newest row.

use e2e_harness::fixtures::{create_table, user_state};
use e2e_harness::runtime::FunctionProcess;
use e2e_harness::{batch_failures, sqs_event, PoolStack};
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_cognito-attribute-sync");
const ORDERING_TABLE: &str = "user-attribute-ordering";
/// The function's source queue as the local stack names it: what its policy lets it hand rows on to.
const QUEUE: &str = "local-cognito-attribute-sync";

async fn stack() -> PoolStack {
    let stack = PoolStack::start("cognito-attribute-sync-dlq").await;
    create_table(&stack.dynamodb, ORDERING_TABLE, None).await;
    stack
}

fn start(stack: &PoolStack) -> FunctionProcess {
    stack.start_function(
        BINARY,
        &[
            ("USER_POOL_ID", stack.pool_id.as_str()),
            ("ORDERING_TABLE", ORDERING_TABLE),
        ],
    )
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
    user_state(&stack.cognito, &stack.pool_id, "ada@example.com")
        .await
        .1
        .get("family_name")
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
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
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn newer_and_older_in_one_batch_always_end_with_the_newer() {
    let stack = stack().await;
    let mut function = start(&stack);
    for round in 0..10u32 {
        let (newer, older) = (format!("Newer{round}"), format!("Older{round}"));
        deliver(
            &mut function,
            &[
                change("record_updated", &newer, 20 * round + 10),
                change("record_updated", &older, 20 * round),
            ],
        );
        assert_eq!(surname(&stack).await, Some(newer), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn two_instances_racing_on_one_user_end_with_the_newest_change() {
    let stack = stack().await;
    let (mut first, mut second) = (start(&stack), start(&stack));
    for round in 0..5u32 {
        let base = 100 * round;
        let first_changes: Vec<_> = [1, 4, 2]
            .iter()
            .map(|s| change("record_updated", &format!("R{round}S{s}"), base + s))
            .collect();
        let second_changes: Vec<_> = [3, 5, 0]
            .iter()
            .map(|s| change("record_updated", &format!("R{round}S{s}"), base + s))
            .collect();
        std::thread::scope(|scope| {
            scope.spawn(|| deliver(&mut first, &first_changes));
            scope.spawn(|| deliver(&mut second, &second_changes));
        });
        assert_eq!(surname(&stack).await, Some(format!("R{round}S5")), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_create_replayed_after_the_delete_does_not_bring_the_attributes_back() {
    let stack = stack().await;
    let mut function = stack.start_function(
        BINARY,
        &[
            ("USER_POOL_ID", stack.pool_id.as_str()),
            ("ORDERING_TABLE", ORDERING_TABLE),
            ("ON_USER_DELETED", "delete"),
        ],
    );
    deliver(&mut function, &[change("records_created", "Lovelace", 0)]);
    deliver(&mut function, &[change("records_deleted", "Lovelace", 10)]);
    assert!(
        stack
            .cognito
            .admin_get_user()
            .user_pool_id(&stack.pool_id)
            .username("ada@example.com")
            .send()
            .await
            .is_err(),
        "deleted"
    );
    // She signs up again (no surname yet); the old create comes back from a redrive.
    let ada = e2e_harness::fixtures::SampleUser {
        family_name: "",
        ..e2e_harness::fixtures::SAMPLE_USERS[0]
    };
    e2e_harness::fixtures::create_user(&stack.cognito, &stack.pool_id, &ada).await;
    deliver(&mut function, &[change("records_created", "Lovelace", 0)]);
    assert_eq!(
        surname(&stack).await,
        None,
        "the replayed create was older than the delete"
    );
    // A new change after the delete applies.
    deliver(&mut function, &[change("record_updated", "King", 20)]);
    assert_eq!(surname(&stack).await.as_deref(), Some("King"));
}

/// A change of Ada at `occurred_at` whose row is `record` (its own timestamps, if any, inside).
fn row_change(id: &str, event: &str, occurred_at: &str, record: Value) -> (String, String) {
    let mut record = record;
    record["email"] = json!("ada@example.com");
    let message = json!({"event": event, "table": "users", "occurredAt": occurred_at, "record": record});
    (
        id.to_owned(),
        shared::testing::sns_envelope(&message.to_string(), event, "users"),
    )
}

async fn enabled(stack: &PoolStack) -> bool {
    user_state(&stack.cognito, &stack.pool_id, "ada@example.com").await.0
}

/// ON_USER_DELETED=disable (the default): the row deleted and created again is a change newer than the deletion, so
/// Ada can sign in again (AdminEnableUser, granted by the template); the old create replayed is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_user_created_again_after_the_deletion_is_enabled_and_a_replayed_older_create_is_not() {
    let stack = stack().await;
    let mut function = start(&stack);
    deliver(&mut function, &[change("records_created", "Lovelace", 0)]);
    deliver(&mut function, &[change("records_deleted", "Lovelace", 10)]);
    assert!(!enabled(&stack).await, "the deletion disables");
    deliver(&mut function, &[change("records_created", "Lovelace", 0)]);
    assert!(
        !enabled(&stack).await,
        "a replayed create older than the deletion enabled the user"
    );
    assert_eq!(stack.aws.proxy.calls_of("AdminEnableUser").len(), 0);
    deliver(&mut function, &[change("records_created", "King", 20)]);
    assert!(enabled(&stack).await, "the row created again did not enable the user");
    assert_eq!(surname(&stack).await.as_deref(), Some("King"));
    // Redelivered: nothing more to do.
    deliver(&mut function, &[change("records_created", "King", 20)]);
    assert_eq!(stack.aws.proxy.calls_of("AdminEnableUser").len(), 1);
}

/// Updates carry the row's `updatedAt` (the database's clock); a deletion stamped only by the API's `occurredAt`,
/// from a clock 3 s slower, still wins (DELETE_SKEW_TOLERANCE_SECONDS, 5 s by default). A deletion carrying the
/// row's own `updatedAt` is ordered on the database's clock whatever `occurredAt` says, and a replay of the update
/// it followed does not bring the user back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_deletion_on_a_slower_clock_still_wins_and_one_with_the_rows_timestamp_orders_on_the_database_clock() {
    let stack = stack().await;
    let mut function = start(&stack);
    let update = row_change(
        "u1",
        "record_updated",
        "2026-11-20T10:00:10Z",
        json!({"lastName": "King", "updatedAt": "2026-11-20T10:00:10Z"}),
    );
    deliver(&mut function, std::slice::from_ref(&update));
    deliver(
        &mut function,
        &[row_change("d1", "records_deleted", "2026-11-20T10:00:07Z", json!({}))],
    );
    assert!(
        !enabled(&stack).await,
        "a deletion 3 s behind the last update on another clock was taken as stale"
    );

    let again = row_change(
        "u2",
        "records_created",
        "2026-11-20T10:01:00Z",
        json!({"lastName": "Byron", "updatedAt": "2026-11-20T10:01:00Z"}),
    );
    deliver(&mut function, std::slice::from_ref(&again));
    assert!(enabled(&stack).await);
    // The API's clock an hour behind; the deleted row says when it last changed.
    deliver(
        &mut function,
        &[row_change(
            "d2",
            "records_deleted",
            "2026-11-20T09:01:00Z",
            json!({"updatedAt": "2026-11-20T10:01:00Z"}),
        )],
    );
    assert!(
        !enabled(&stack).await,
        "a deletion with the row's own timestamp was ordered on the API's clock"
    );
    deliver(&mut function, &[again]);
    assert!(
        !enabled(&stack).await,
        "the replayed update the deletion followed enabled the user again"
    );

    // Beyond the tolerance the clocks decide; a wider tolerance covers a wider skew.
    let mut tolerant = stack.start_function(
        BINARY,
        &[
            ("USER_POOL_ID", stack.pool_id.as_str()),
            ("ORDERING_TABLE", ORDERING_TABLE),
            ("DELETE_SKEW_TOLERANCE_SECONDS", "15"),
        ],
    );
    deliver(
        &mut tolerant,
        &[row_change(
            "u3",
            "record_updated",
            "2026-11-20T10:02:00Z",
            json!({"lastName": "Ada", "updatedAt": "2026-11-20T10:02:00Z"}),
        )],
    );
    assert!(enabled(&stack).await);
    deliver(
        &mut tolerant,
        &[row_change("d3", "records_deleted", "2026-11-20T10:01:50Z", json!({}))],
    );
    assert!(
        !enabled(&stack).await,
        "a deletion 10 s behind, under a 15 s tolerance, was taken as stale"
    );
}

/// Another writer (a second instance, the reconciliation) holds Ada for 3 s: the change waits within the invocation
/// and applies, instead of going back to the queue for its visibility timeout. A lease that outlasts the waiting
/// hands the row on as a new message on the record's own queue, and the record is acknowledged: it spends no receive
/// and never reaches the dead-letter queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_user_held_by_another_writer_for_seconds_is_applied_within_the_invocation() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let stack = stack().await;
    let hold = |seconds: i64| {
        let until = chrono::Utc::now().timestamp_millis() + seconds * 1000;
        stack
            .dynamodb
            .put_item()
            .table_name(ORDERING_TABLE)
            .item("id", AttributeValue::S(shared::ordering::user_key("ada@example.com")))
            .item("version", AttributeValue::N("0".into()))
            .item("lease_owner", AttributeValue::S("cognito-reconcile-run".into()))
            .item("lease_until", AttributeValue::N(until.to_string()))
            .send()
    };
    let mut function = stack.start_function(
        BINARY,
        &[
            ("USER_POOL_ID", stack.pool_id.as_str()),
            ("ORDERING_TABLE", ORDERING_TABLE),
            ("DEAD_LETTER_QUEUE_URL", &stack.dlq_url),
        ],
    );
    hold(3).await.expect("hold the user");
    let started = std::time::Instant::now();
    let response = function
        .invoke(&event(&[change("record_updated", "Held", 10)]))
        .response();
    assert_eq!(batch_failures(&response), Vec::<String>::new(), "{response}");
    assert_eq!(surname(&stack).await.as_deref(), Some("Held"));
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "applied while the other writer held the user"
    );

    let source = e2e_harness::fixtures::create_queue(&stack.sqs, QUEUE).await;
    hold(600).await.expect("hold the user");
    let response = function
        .invoke(&event(&[change("record_updated", "Later", 20)]))
        .response();
    assert_eq!(
        batch_failures(&response),
        Vec::<String>::new(),
        "acknowledged: {response}\n{}",
        function.output().join("\n")
    );
    let handed_on = e2e_harness::fixtures::peek_all(&stack.sqs, &source).await;
    assert_eq!(handed_on.len(), 1, "the row goes on as a new message on its own queue");
    let rest: Value = serde_json::from_str(handed_on[0].body().unwrap()).unwrap();
    assert_eq!(
        (rest["records"][0]["lastName"].as_str(), rest["continues"].as_str()),
        (Some("Later"), Some("m-Later-20"))
    );
    assert_eq!(
        e2e_harness::fixtures::peek_all(&stack.sqs, &stack.dlq_url).await.len(),
        0,
        "contention dead-lettered a change"
    );
    assert_eq!(surname(&stack).await.as_deref(), Some("Held"));
}
