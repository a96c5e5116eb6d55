//! End to end: the built binary, run through the Lambda Runtime API against moto, on the sample events in events/.
//! A recording proxy in front of moto shows which calls the function made.

use std::collections::HashMap;

use e2e_harness::fixtures::{create_table, peek_all, sample_event, user_state};
use e2e_harness::proxy::RecordingProxy;
use e2e_harness::runtime::FunctionProcess;
use e2e_harness::{batch_failures as failures, dead_lettered, ids_at, message_ids, PoolStack};
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_cognito-attribute-sync");

pub const ORDERING_TABLE: &str = "user-attribute-ordering";

async fn stack() -> PoolStack {
    let stack = PoolStack::start("cognito-attribute-sync-dlq").await;
    create_table(&stack.dynamodb, ORDERING_TABLE, None).await;
    stack
}

fn start(stack: &PoolStack, settings: &[(&str, &str)]) -> FunctionProcess {
    let mut settings = settings.to_vec();
    settings.push(("ORDERING_TABLE", ORDERING_TABLE));
    stack.start_function(BINARY, &settings)
}

/// Calls of `operation` whose request names `username`.
fn calls_for(proxy: &RecordingProxy, operation: &str, username: &str) -> usize {
    proxy
        .calls_of(operation)
        .iter()
        .filter(|c| c.body.contains(username))
        .count()
}

fn attr<'a>(attributes: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    attributes.get(name).map(String::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sample_events_bring_cognito_in_line_with_the_user_rows() {
    let stack = stack().await;
    let pool = stack.pool_id.clone();
    let mut function = start(
        &stack,
        &[("USER_POOL_ID", &pool), ("DEAD_LETTER_QUEUE_URL", &stack.dlq_url)],
    );

    // SNS envelopes: Ada's surname changes, Grace's row matches Cognito already, a publish_history row is ignored.
    let response = function
        .invoke(&sample_event("cognito-attribute-sync/sns-envelope-batch.json"))
        .response();
    assert_eq!(failures(&response), Vec::<String>::new());
    let (_, ada) = user_state(&stack.cognito, &pool, "ada@example.com").await;
    assert_eq!(attr(&ada, "given_name"), Some("Ada"));
    assert_eq!(attr(&ada, "family_name"), Some("Lovelace"));
    assert_eq!(attr(&ada, "custom:_tenant"), Some("acme"));
    assert_eq!(
        calls_for(&stack.aws.proxy, "AdminUpdateUserAttributes", "ada@example.com"),
        1
    );
    assert_eq!(
        calls_for(&stack.aws.proxy, "AdminUpdateUserAttributes", "grace@example.com"),
        0,
        "unchanged user got a write"
    );
    assert_eq!(
        calls_for(&stack.aws.proxy, "AdminDeleteUserAttributes", "grace@example.com"),
        0,
        "unchanged user got a write"
    );

    // Raw delivery: a new user row gives Katherine her names and tenant.
    let response = function
        .invoke(&sample_event("cognito-attribute-sync/raw-delivery.json"))
        .response();
    assert_eq!(failures(&response), Vec::<String>::new());
    let (_, katherine) = user_state(&stack.cognito, &pool, "katherine@example.com").await;
    assert_eq!(attr(&katherine, "given_name"), Some("Katherine"));
    assert_eq!(attr(&katherine, "family_name"), Some("Johnson"));
    assert_eq!(attr(&katherine, "custom:_tenant"), Some("globex"));

    // A deleted row disables the account (the default ON_USER_DELETED).
    let (enabled_before, _) = user_state(&stack.cognito, &pool, "alan@example.com").await;
    assert!(enabled_before);
    let response = function
        .invoke(&sample_event("cognito-attribute-sync/user-deleted.json"))
        .response();
    assert_eq!(failures(&response), Vec::<String>::new());
    let (enabled_after, _) = user_state(&stack.cognito, &pool, "alan@example.com").await;
    assert!(!enabled_after, "deleted user still enabled");

    // Poison records go to the dead-letter queue with their reason; the good record beside them still succeeds.
    let poison_event = sample_event("cognito-attribute-sync/poison-record.json");
    let response = function.invoke(&poison_event).response();
    assert_eq!(
        failures(&response),
        Vec::<String>::new(),
        "dead-lettered poison is acknowledged"
    );
    let sources: Vec<String> = dead_lettered(&stack.sqs, &stack.dlq_url)
        .await
        .into_iter()
        .map(|(source, _)| source)
        .collect();
    assert_eq!(sources, ids_at(&poison_event, &[1, 2]));
    let dead = peek_all(&stack.sqs, &stack.dlq_url).await;
    let records = poison_event["Records"].as_array().unwrap();
    for message in &dead {
        let attributes = message.message_attributes().unwrap();
        let source = attributes["SourceMessageId"].string_value().unwrap();
        let original = records.iter().find(|r| r["messageId"] == source).unwrap();
        assert_eq!(
            message.body(),
            original["body"].as_str(),
            "dead-lettered body is the original"
        );
        let reason = attributes["ErrorMessage"].string_value().unwrap();
        assert!(!reason.is_empty());
        assert_eq!(
            attributes["SourceQueueArn"].string_value(),
            Some("arn:aws:sqs:eu-west-1:123456789012:local-cognito-attribute-sync")
        );
    }
    assert_eq!(
        calls_for(&stack.aws.proxy, "AdminUpdateUserAttributes", "grace@example.com"),
        0
    );

    // Logs: JSON lines, each line of an invocation with its request id, no email address in full.
    let output = function.output();
    let invocation_lines: Vec<Value> = output
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| {
            line.get("message")
                .is_some_and(|m| m == "attributes synced" || m == "batch processed")
        })
        .collect();
    assert!(
        invocation_lines.len() >= 4,
        "expected log lines, got:\n{}",
        output.join("\n")
    );
    for line in &invocation_lines {
        assert!(
            line["span"]["requestId"].as_str().is_some_and(|id| !id.is_empty()),
            "no request id: {line}"
        );
    }
    for address in [
        "ada@example.com",
        "grace@example.com",
        "alan@example.com",
        "katherine@example.com",
    ] {
        assert!(
            !output.iter().any(|line| line.contains(address)),
            "{address} logged in full"
        );
    }
    assert!(
        output.iter().any(|line| line.contains("a***@example.com")),
        "masked address expected in logs"
    );
    // One EMF document per invocation.
    let emf = output
        .iter()
        .filter(|line| line.contains("\"CloudWatchMetrics\""))
        .count();
    assert_eq!(emf, 4);
}

/// A poison record as large as SQS allows is dead-lettered whole: the reason is shortened so the message, with
/// its attributes, stays within the 256 KiB the proxy enforces as SQS does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_of_nearly_256_kib_is_dead_lettered_whole() {
    let stack = stack().await;
    let mut function = start(
        &stack,
        &[
            ("USER_POOL_ID", stack.pool_id.as_str()),
            ("DEAD_LETTER_QUEUE_URL", &stack.dlq_url),
        ],
    );
    let mut body = "{\"event\":\"record_updated\",\"table\":\"users\",\"pad\":\"".to_owned();
    body.push_str(&"x".repeat(262_144 - 40 - body.len()));
    let event = e2e_harness::sqs_event("dev-cognito-attribute-sync", &[("m-huge", body.clone())]);
    let response = function.invoke(&event).response();
    assert_eq!(
        failures(&response),
        Vec::<String>::new(),
        "dead-lettered, not handed back: {:?} {}",
        stack.aws.proxy.refusals(),
        function.output().join("\n")
    );
    assert!(
        stack.aws.proxy.refusals().is_empty(),
        "{:?}",
        stack.aws.proxy.refusals()
    );
    let kept = peek_all(&stack.sqs, &stack.dlq_url).await;
    assert_eq!(kept.len(), 1);
    assert_eq!(
        kept[0].body(),
        Some(body.as_str()),
        "the body is kept whole, for the redrive"
    );
}

/// A column set to null removes the attribute (AdminDeleteUserAttributes); a redelivery finds nothing to remove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surname_set_to_null_is_removed_once() {
    let stack = stack().await;
    let pool = stack.pool_id.clone();
    let mut function = start(&stack, &[("USER_POOL_ID", &pool)]);
    let message = serde_json::json!({"event": "record_updated", "table": "users", "occurredAt": chrono::Utc::now().to_rfc3339(),
                                     "record": {"email": "ada@example.com", "lastName": null}});
    let event = e2e_harness::sqs_event("dev-cognito-attribute-sync", &[("m-null", message.to_string())]);
    for _ in 0..2 {
        assert_eq!(failures(&function.invoke(&event).response()), Vec::<String>::new());
    }
    assert_eq!(
        attr(
            &user_state(&stack.cognito, &pool, "ada@example.com").await.1,
            "family_name"
        ),
        None
    );
    assert_eq!(
        calls_for(&stack.aws.proxy, "AdminDeleteUserAttributes", "ada@example.com"),
        1
    );
}

/// The template's policy with `cognito-idp:AdminUpdateUserAttributes` taken out: Ada's change is handed back for
/// redelivery (not dead-lettered, not acknowledged), the log names the denial, and the redelivery applies it once
/// the policy is whole again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_admin_update_user_attributes_in_its_policy_the_change_is_kept_and_the_denial_is_named() {
    let stack = stack().await;
    let pool = stack.pool_id.clone();
    let mut function = start(
        &stack,
        &[("USER_POOL_ID", &pool), ("DEAD_LETTER_QUEUE_URL", &stack.dlq_url)],
    );
    stack
        .aws
        .proxy
        .revoke("cognito-attribute-sync", "cognito-idp:AdminUpdateUserAttributes");
    let event = sample_event("cognito-attribute-sync/sns-envelope-batch.json");
    assert_eq!(
        failures(&function.invoke(&event).response()),
        ids_at(&event, &[0]),
        "Ada's change is handed back"
    );
    assert!(
        peek_all(&stack.sqs, &stack.dlq_url).await.is_empty(),
        "a denial is not poison"
    );
    let output = function.output().join("\n");
    assert!(
        output.contains("AccessDenied") && output.contains("cognito-idp:AdminUpdateUserAttributes"),
        "{output}"
    );
    let denials = stack.aws.proxy.take_denials();
    assert!(
        !denials.is_empty() && denials.iter().all(|d| d.operation == "AdminUpdateUserAttributes"),
        "{denials:?}"
    );
    assert_ne!(
        attr(
            &user_state(&stack.cognito, &pool, "ada@example.com").await.1,
            "family_name"
        ),
        Some("Lovelace")
    );

    stack.aws.proxy.restore("cognito-attribute-sync");
    assert_eq!(failures(&function.invoke(&event).response()), Vec::<String>::new());
    assert_eq!(
        attr(
            &user_state(&stack.cognito, &pool, "ada@example.com").await.1,
            "family_name"
        ),
        Some("Lovelace")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_dead_letter_queue_poison_and_unreachable_pool_are_reported_for_redelivery() {
    let stack = stack().await;
    // A pool that does not exist: every Cognito call fails, as during an outage or a misconfiguration.
    let mut function = start(&stack, &[("USER_POOL_ID", "eu-west-1_doesnotexist")]);
    let event = sample_event("cognito-attribute-sync/poison-record.json");
    let response = function.invoke(&event).response();
    let mut all = message_ids(&event);
    all.sort();
    assert_eq!(
        failures(&response),
        all,
        "nothing may be acknowledged that was not handled or kept"
    );
    assert!(peek_all(&stack.sqs, &stack.dlq_url).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_configuration_fails_init_and_names_the_variable() {
    let stack = stack().await;
    let mut function = start(&stack, &[("ON_USER_DELETED", "delete")]);
    let status = function
        .wait_exit(std::time::Duration::from_secs(20))
        .expect("the function exits at init");
    assert!(!status.success());
    let output = function.output().join("\n");
    assert!(
        output.contains("USER_POOL_ID"),
        "init error does not name the variable:\n{output}"
    );
}
