//! End to end: the built binary, run through the Lambda Runtime API against moto (the user pool with the sample
//! users; the dead-letter queue), on the sample SES notifications in events/ses-feedback/, in both formats SES
//! publishes. Cognito's writes are counted through the recording proxy.

use e2e_harness::fixtures::{create_idempotency_table, sample_event, user_state, verify_sender, SENDER_ADDRESS};
use e2e_harness::runtime::FunctionProcess;
use e2e_harness::{batch_failures, built_binaries, dead_lettered, sqs_event, PoolStack};
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_ses-feedback");
const QUEUE: &str = "dev-ses-feedback";

async fn stack() -> PoolStack {
    PoolStack::start("ses-feedback-dlq").await
}

fn start(stack: &PoolStack) -> FunctionProcess {
    stack.start_function(
        BINARY,
        &[
            ("USER_POOL_ID", stack.pool_id.as_str()),
            ("DEAD_LETTER_QUEUE_URL", stack.dlq_url.as_str()),
        ],
    )
}

async fn flag(stack: &PoolStack, email: &str) -> String {
    user_state(&stack.cognito, &stack.pool_id, email)
        .await
        .1
        .get("custom:subPublishHistory")
        .cloned()
        .unwrap_or_default()
}

fn writes(stack: &PoolStack) -> usize {
    stack.aws.proxy.calls_of("AdminUpdateUserAttributes").len()
}

/// An SES notification in the SNS envelope, as the feedback queue holds it.
fn record(id: &str, notification: &Value) -> (String, String) {
    let envelope = json!({"Type": "Notification", "MessageId": format!("n-{id}"), "TopicArn": "arn:aws:sns:eu-west-1:123456789012:dev-ses-feedback",
                          "Message": notification.to_string(), "Timestamp": "2026-12-01T10:00:05.000Z"});
    (id.to_owned(), envelope.to_string())
}

fn event(records: &[(String, String)]) -> Value {
    let records: Vec<(&str, String)> = records.iter().map(|(id, body)| (id.as_str(), body.clone())).collect();
    sqs_event(QUEUE, &records)
}

/// A complaint as an identity notification (`notificationType`), the older of the two formats.
fn identity_complaint(address: &str) -> Value {
    json!({"notificationType": "Complaint", "complaint": {"complainedRecipients": [{"emailAddress": address}], "complaintFeedbackType": "abuse",
           "timestamp": "2026-12-01T10:00:04.000Z"}, "mail": {"messageId": "0102019ad1c0-x", "destination": [address]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_complaint_in_each_format_and_a_permanent_bounce_unsubscribe_once_and_a_replay_writes_nothing() {
    let stack = stack().await;
    let mut function = start(&stack);
    // Event publishing: Grace marked the acme email as spam.
    let complaint = sample_event("ses-feedback/complaint-event-publishing.json");
    assert_eq!(
        batch_failures(&function.invoke(&complaint).response()),
        Vec::<String>::new()
    );
    assert_eq!(flag(&stack, "grace@example.com").await, "false");
    // Identity notification: Ada's address bounced for good.
    let bounce = sample_event("ses-feedback/permanent-bounce-identity-notification.json");
    assert_eq!(
        batch_failures(&function.invoke(&bounce).response()),
        Vec::<String>::new()
    );
    assert_eq!(flag(&stack, "ada@example.com").await, "false");
    // Identity notification: Linus complained.
    let linus = event(&[record("fb-linus", &identity_complaint("linus@example.com"))]);
    assert_eq!(
        batch_failures(&function.invoke(&linus).response()),
        Vec::<String>::new()
    );
    assert_eq!(flag(&stack, "linus@example.com").await, "false");
    assert_eq!(writes(&stack), 3, "one write each");
    assert_eq!(flag(&stack, "alan@example.com").await, "true", "nobody else");

    // SQS delivers again (and a redrive, days later): the flags are off, nothing more is written.
    for again in [&complaint, &bounce, &linus] {
        assert_eq!(batch_failures(&function.invoke(again).response()), Vec::<String>::new());
    }
    assert_eq!(writes(&stack), 3, "a replay wrote");
    let output = function.output();
    for address in ["grace@example.com", "ada@example.com", "linus@example.com"] {
        assert!(
            !output.iter().any(|l| l.contains(address)),
            "{address} in full in the log"
        );
    }
    assert!(
        output
            .iter()
            .any(|l| l.contains("unsubscribed from the publish-history email")
                && l.contains("acme")
                && l.contains("ph-1001")),
        "traced by its tags"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn transient_bounces_not_spam_reports_deliveries_and_unknown_addresses_change_nothing_and_fail_nothing() {
    let stack = stack().await;
    let mut function = start(&stack);
    let batch = sample_event("ses-feedback/no-unsubscribe-batch.json");
    assert_eq!(
        batch_failures(&function.invoke(&batch).response()),
        Vec::<String>::new()
    );
    let unknown = event(&[record("fb-unknown", &identity_complaint("nobody@example.com"))]);
    assert_eq!(
        batch_failures(&function.invoke(&unknown).response()),
        Vec::<String>::new()
    );
    assert_eq!(writes(&stack), 0);
    assert_eq!(flag(&stack, "linus@example.com").await, "YES", "Linus stays subscribed");
    let output = function.output().join("\n");
    for metric in [
        "\"TransientBounces\":1",
        "\"NotSpamReports\":1",
        "\"OtherFeedback\":1",
        "\"RecipientsNotInPool\":1",
    ] {
        assert!(output.contains(metric), "{metric} not counted:\n{output}");
    }
    assert!(dead_lettered(&stack.sqs, &stack.dlq_url).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_malformed_record_is_dead_lettered_with_its_reason_and_the_rest_of_the_batch_goes_on() {
    let stack = stack().await;
    let mut function = start(&stack);
    let records = vec![
        ("fb-not-json".to_owned(), "{oops".to_owned()),
        record("fb-not-ses", &json!({"event": "records_created", "table": "users"})),
        record("fb-grace", &identity_complaint("grace@example.com")),
    ];
    assert_eq!(
        batch_failures(&function.invoke(&event(&records)).response()),
        Vec::<String>::new(),
        "the poison is dead-lettered, not returned"
    );
    assert_eq!(flag(&stack, "grace@example.com").await, "false");
    let dead = dead_lettered(&stack.sqs, &stack.dlq_url).await;
    assert_eq!(
        dead.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
        ["fb-not-json", "fb-not-ses"]
    );
    assert!(dead[1].1.contains("eventType"), "{dead:?}");
}

/// The template's policy with `cognito-idp:AdminUpdateUserAttributes` taken out: the record goes back to the queue
/// (not to the dead-letter queue, it is no poison) and the denial is named; with the policy whole, the redelivery
/// unsubscribes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn without_admin_update_user_attributes_in_its_policy_the_feedback_is_kept_and_the_denial_named() {
    let stack = stack().await;
    stack
        .aws
        .proxy
        .revoke("ses-feedback", "cognito-idp:AdminUpdateUserAttributes");
    let mut function = start(&stack);
    let complaint = sample_event("ses-feedback/complaint-event-publishing.json");
    assert_eq!(
        batch_failures(&function.invoke(&complaint).response()),
        vec!["fb-complaint".to_owned()]
    );
    assert_eq!(flag(&stack, "grace@example.com").await, "1");
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
    stack.aws.proxy.restore("ses-feedback");
    assert_eq!(
        batch_failures(&function.invoke(&complaint).response()),
        Vec::<String>::new()
    );
    assert_eq!(flag(&stack, "grace@example.com").await, "false");
    assert!(dead_lettered(&stack.sqs, &stack.dlq_url).await.is_empty());
}

/// After Grace's complaint, the next acme publish history goes to Ada only; every email carries the tenant and row
/// as SES message tags (which SES returns with a bounce or complaint), and no address among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn after_a_complaint_publish_history_email_no_longer_emails_that_user() {
    let stack = stack().await;
    verify_sender(&aws_sdk_ses::Client::new(&stack.aws.sdk)).await;
    create_idempotency_table(&stack.dynamodb, "idempotency").await;
    let mut function = start(&stack);
    assert_eq!(
        batch_failures(
            &function
                .invoke(&sample_event("ses-feedback/complaint-event-publishing.json"))
                .response()
        ),
        Vec::<String>::new()
    );
    let mut sender = FunctionProcess::start(
        &built_binaries().join("publish-history-email"),
        &stack.aws.function_env(&[
            ("USER_POOL_ID", stack.pool_id.as_str()),
            ("SENDER_ADDRESS", SENDER_ADDRESS),
            ("IDEMPOTENCY_TABLE", "idempotency"),
            ("FANOUT_QUEUE_URL", stack.fanout_url.as_str()),
        ]),
    );
    let message = json!({"event": "records_created", "table": "publish_history", "records": [{"id": "ph-1003", "_tenant": "acme", "title": "After the complaint"}]});
    let response = sender
        .invoke(&sqs_event("publish-history-email", &[("m-1", message.to_string())]))
        .response();
    assert_eq!(response["batchItemFailures"], json!([]), "{response}");
    let sends = stack.aws.proxy.calls_of("SendRawEmail");
    let recipients: Vec<String> = sends
        .iter()
        .filter_map(|c| c.form().get("Destinations.member.1").cloned())
        .collect();
    assert_eq!(
        recipients,
        ["ada@example.com"],
        "Grace complained: no more email to her"
    );
    let form = sends[0].form();
    let tags: Vec<(String, String)> = (1..=2)
        .map(|n| {
            (
                form[&format!("Tags.member.{n}.Name")].clone(),
                form[&format!("Tags.member.{n}.Value")].clone(),
            )
        })
        .collect();
    assert_eq!(
        tags,
        [
            ("tenant".to_owned(), "acme".to_owned()),
            ("row".to_owned(), "ph-1003".to_owned())
        ]
    );
}
