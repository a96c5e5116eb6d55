//! End to end: the built binary, run through the Lambda Runtime API against moto (SES with a verified sender, a
//! user pool of two tenants with mixed subscribers, the DynamoDB idempotency table), on the sample events. The
//! recording proxy in front of moto captures every SendRawEmail, so recipients and content are asserted exactly.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;
use e2e_harness::fixtures::{
    create_idempotency_table, eligible_subscribers, sample_event, scan_all, verify_sender, SENDER_ADDRESS,
};
use e2e_harness::proxy::RecordingProxy;
use e2e_harness::runtime::FunctionProcess;
use e2e_harness::{batch_failures as failures, dead_lettered, ids_at, PoolStack};

const BINARY: &str = env!("CARGO_BIN_EXE_publish-history-email");
const TABLE: &str = "publish-history-email-idempotency";
/// The template's dead-letter retention, from which it sets IDEMPOTENCY_TTL_SECONDS.
const DEAD_LETTER_RETENTION: &str = "1209600";
const DAY: i64 = 24 * 3600;

struct Stack {
    pool: PoolStack,
    function: FunctionProcess,
    /// The function's own fan-out queue: its URL and ARN.
    fanout: (String, String),
}

impl std::ops::Deref for Stack {
    type Target = PoolStack;
    fn deref(&self) -> &PoolStack {
        &self.pool
    }
}

async fn stack() -> Stack {
    let pool = PoolStack::start("publish-history-email-dlq").await;
    verify_sender(&aws_sdk_ses::Client::new(&pool.aws.sdk)).await;
    create_idempotency_table(&pool.dynamodb, TABLE).await;
    let url = pool.fanout_url.clone();
    let attributes = pool
        .sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let arn = attributes.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
    let fanout = (url, arn);
    let function = start(&pool, &fanout.0);
    Stack { pool, function, fanout }
}

/// An instance of the function as the template configures it (but for a 1 s wait of a spent daily quota).
fn start(pool: &PoolStack, fanout_url: &str) -> FunctionProcess {
    pool.start_function(
        BINARY,
        &[
            ("FANOUT_QUEUE_URL", fanout_url),
            ("DAILY_QUOTA_RETRY_SECONDS", "1"),
            ("USER_POOL_ID", pool.pool_id.as_str()),
            ("SENDER_ADDRESS", SENDER_ADDRESS),
            ("APP_BASE_URL", "https://app.navlab.online"),
            ("IDEMPOTENCY_TABLE", TABLE),
            ("IDEMPOTENCY_TTL_SECONDS", DEAD_LETTER_RETENTION),
            ("DEAD_LETTER_QUEUE_URL", pool.dlq_url.as_str()),
        ],
    )
}

/// `count` subscribers of tenant `tenant`: (their addresses, sorted).
async fn subscribers(pool: &PoolStack, tenant: &'static str, count: usize) -> Vec<String> {
    let mut addresses = Vec::new();
    for i in 0..count {
        let email: &'static str = Box::leak(format!("{tenant}{i:03}@example.com").into_boxed_str());
        let user = e2e_harness::fixtures::SampleUser {
            email,
            tenant,
            subscription: "true",
            ..e2e_harness::fixtures::SAMPLE_USERS[0]
        };
        e2e_harness::fixtures::create_user(&pool.cognito, &pool.pool_id, &user).await;
        addresses.push(email.to_owned());
    }
    addresses.sort();
    addresses
}

/// A database event creating publish history `id` of `tenant`, as one SQS record.
fn history_row(tenant: &str, id: &str) -> serde_json::Value {
    let message = serde_json::json!({"event": "records_created", "table": "publish_history", "records": [{"id": id, "_tenant": tenant, "title": id}]});
    e2e_harness::sqs_event("publish-history-email", &[(id, message.to_string())])
}

/// Invokes with `event` and, as SQS would, redelivers what the function hands back, up to `rounds` times.
fn deliver(function: &mut FunctionProcess, event: &serde_json::Value, rounds: usize) -> usize {
    for round in 1..=rounds {
        if failures(&function.invoke(event).response()).is_empty() {
            return round;
        }
    }
    panic!("{event} still handed back after {rounds} deliveries");
}

/// Runs what the function handed on to its fan-out queue, as that queue's event source does (a message a batch,
/// deleted once handled, left for redelivery otherwise), until the queue holds nothing: visible, delayed or in
/// flight. Returns the invocations.
async fn run_fanout(stack: &mut Stack, limit: std::time::Duration) -> usize {
    let started = std::time::Instant::now();
    let mut invocations = 0;
    loop {
        assert!(
            started.elapsed() < limit,
            "the fan-out queue did not drain within {limit:?}"
        );
        let received = stack
            .sqs
            .receive_message()
            .queue_url(&stack.fanout.0)
            .max_number_of_messages(1)
            .wait_time_seconds(1)
            .visibility_timeout(2)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
            .send()
            .await
            .expect("receive from the fan-out queue");
        let Some(message) = received.messages().first().cloned() else {
            if e2e_harness::fixtures::queue_is_drained(&stack.sqs, &stack.fanout.0).await {
                return invocations;
            }
            continue;
        };
        let event =
            serde_json::json!({"Records": [e2e_harness::event_source::lambda_record(&message, &stack.fanout.1)]});
        invocations += 1;
        if failures(&stack.function.invoke(&event).response()).is_empty() {
            stack
                .sqs
                .delete_message()
                .queue_url(&stack.fanout.0)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .expect("delete");
        }
    }
}

/// Sent emails: (recipient, subject, HTML part), each checked to go to its one recipient from the sender.
fn sent_emails(proxy: &RecordingProxy) -> Vec<(String, String, String)> {
    e2e_harness::mail::sent_emails(proxy)
        .into_iter()
        .map(|email| {
            assert_eq!(
                email.destinations.len(),
                1,
                "one recipient per email: {:?}",
                email.destinations
            );
            assert_eq!(email.to, email.destinations, "the To header names the one destination");
            assert!(email.header("Cc").is_none() && email.header("Bcc").is_none());
            assert_eq!(
                email.source, "no-reply@navlab.online",
                "the bare address: the From header carries the name"
            );
            assert_eq!(
                email.from,
                (Some("Navlab".to_owned()), "no-reply@navlab.online".to_owned()),
                "the From header names the sender"
            );
            (email.destinations[0].clone(), email.subject, email.html)
        })
        .collect()
}

/// Recipients per subject, sorted.
fn recipients_by_subject(emails: &[(String, String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut by_subject: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (to, subject, _) in emails {
        by_subject.entry(subject.clone()).or_default().push(to.clone());
    }
    by_subject.values_mut().for_each(|v| v.sort());
    by_subject
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn each_eligible_subscriber_gets_exactly_one_email_and_redelivery_sends_nothing_new() {
    let mut stack = stack().await;
    let event = sample_event("publish-history-email/sns-envelope-batch.json");
    let response = stack.function.invoke(&event).response();
    assert_eq!(failures(&response), Vec::<String>::new());

    let emails = sent_emails(&stack.aws.proxy);
    let by_subject = recipients_by_subject(&emails);
    let acme_subject = "New publish history: Winter catalogue <script>alert('x')</script> & prices";
    let globex_subject = "New publish history: Pricing update";
    assert_eq!(
        by_subject.keys().collect::<Vec<_>>(),
        vec![globex_subject, acme_subject]
    );
    assert_eq!(by_subject[acme_subject], eligible_subscribers("acme"));
    assert_eq!(by_subject[globex_subject], eligible_subscribers("globex"));
    assert_eq!(
        eligible_subscribers("acme"),
        vec!["ada@example.com", "grace@example.com"],
        "fixture: disabled, unverified, unconfirmed and unsubscribed users are left out"
    );
    assert_eq!(emails.len(), 4, "exactly one email per recipient per row");

    let (_, _, html) = emails.iter().find(|(_, subject, _)| subject == acme_subject).unwrap();
    assert!(
        html.contains("Winter catalogue &lt;script&gt;alert(&#x27;x&#x27;)&lt;&#x2f;script&gt; &amp; prices"),
        "{html}"
    );
    assert!(!html.contains("<script>"), "the title must arrive as text, not markup");
    assert!(html.contains("Ada Lovelace") && html.contains("21 November 2026, 10:04 UTC"));
    assert!(html.contains("publish-history&#x2f;ph-1001"), "link to the row: {html}");

    // The idempotency table holds one completed record per (row, recipient), and no address.
    let items = once_only_records(&stack).await;
    assert_eq!(items.len(), 4);
    for item in &items {
        assert_eq!(item["status"].as_s().unwrap(), "COMPLETED");
        assert!(item["expiration"].as_n().unwrap().parse::<u64>().unwrap() > 0);
        assert!(!item["id"].as_s().unwrap().contains('@'));
    }

    // SQS (or SNS) delivers the same batch again: nothing new is sent.
    let response = stack.function.invoke(&event).response();
    assert_eq!(failures(&response), Vec::<String>::new());
    assert_eq!(
        stack.aws.proxy.calls_of("SendRawEmail").len(),
        4,
        "a redelivered batch sent again"
    );

    // Raw delivery works the same way.
    let response = stack
        .function
        .invoke(&sample_event("publish-history-email/raw-delivery.json"))
        .response();
    assert_eq!(failures(&response), Vec::<String>::new());
    let by_subject = recipients_by_subject(&sent_emails(&stack.aws.proxy));
    assert_eq!(
        by_subject["New publish history: Spring roadmap"],
        eligible_subscribers("acme")
    );

    // Within the cache TTL the pool was listed once for all three invocations.
    assert_eq!(stack.aws.proxy.calls_of("ListUsers").len(), 1);
    assert_eq!(stack.aws.proxy.calls_of("GetSendQuota").len(), 1);
    let output = stack.function.output();
    assert!(
        !output.iter().any(|l| l.contains("ada@example.com")),
        "an address was logged in full"
    );
}

/// The template's policy with `ses:SendRawEmail` taken out (as it was once deployed, allowing only `ses:SendEmail`):
/// SES's AccessDenied is named, no recipient is retried within the invocation, and every row comes back for
/// redelivery, which sends once the policy is whole again.
/// A chunk from the fan-out queue, as `events/publish-history-email/fanout-chunk.json` has it: its recipients get
/// the row's email, once however often the chunk comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_from_the_fanout_queue_emails_its_recipients_once() {
    let mut stack = stack().await;
    let event = sample_event("publish-history-email/fanout-chunk.json");
    for _ in 0..2 {
        assert_eq!(
            failures(&stack.function.invoke(&event).response()),
            Vec::<String>::new()
        );
    }
    let by_subject = recipients_by_subject(&sent_emails(&stack.aws.proxy));
    assert_eq!(
        by_subject["New publish history: Autumn price list"],
        vec!["ada@example.com", "grace@example.com"]
    );
    assert_eq!(by_subject.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn without_ses_send_raw_email_in_its_policy_every_row_is_kept_and_the_denial_is_named() {
    let mut stack = stack().await;
    stack.aws.proxy.revoke("publish-history-email", "ses:SendRawEmail");
    let event = sample_event("publish-history-email/sns-envelope-batch.json");
    assert_eq!(
        failures(&stack.function.invoke(&event).response()),
        ids_at(&event, &[0, 1]),
        "both rows are handed back"
    );
    let output = stack.function.output().join("\n");
    assert!(
        output.contains("AccessDenied") && output.contains("ses:SendRawEmail"),
        "{output}"
    );
    let denials = stack.aws.proxy.take_denials();
    assert!(
        (2..=4).contains(&denials.len()),
        "at most one refused attempt per recipient, no retry loop: {denials:?}"
    );
    assert!(denials.iter().all(|d| d.operation == "SendRawEmail"));
    assert!(sent_emails(&stack.aws.proxy).is_empty());

    stack.aws.proxy.restore("publish-history-email");
    assert_eq!(
        failures(&stack.function.invoke(&event).response()),
        Vec::<String>::new()
    );
    assert_eq!(
        sent_emails(&stack.aws.proxy).len(),
        4,
        "each recipient once, after the redelivery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_batch_mixing_good_and_poison_records_sends_the_good_and_dead_letters_the_poison() {
    let mut stack = stack().await;
    let event = sample_event("publish-history-email/mixed-batch.json");
    let response = stack.function.invoke(&event).response();
    assert_eq!(
        failures(&response),
        Vec::<String>::new(),
        "poison is dead-lettered, not returned"
    );

    let by_subject = recipients_by_subject(&sent_emails(&stack.aws.proxy));
    assert_eq!(by_subject.len(), 1);
    assert_eq!(
        by_subject["New publish history: Audit log export"],
        eligible_subscribers("acme")
    );

    let dead = dead_lettered(&stack.sqs, &stack.dlq_url).await;
    assert_eq!(
        dead.iter().map(|(source, _)| source.clone()).collect::<Vec<_>>(),
        ids_at(&event, &[1, 2])
    );
    let reasons: Vec<String> = dead.into_iter().map(|(_, reason)| reason).collect();
    assert!(reasons.iter().any(|r| r.contains("no `id`")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("not valid JSON")), "{reasons:?}");
}

/// The once-only records of the idempotency table (without the send-rate registry's item, which it holds too).
async fn once_only_records(stack: &Stack) -> Vec<std::collections::HashMap<String, AttributeValue>> {
    let registry = publish_history_email::send_rate::dynamodb::SENDERS_KEY;
    scan_all(&stack.dynamodb, TABLE)
        .await
        .into_iter()
        .filter(|item| item["id"].as_s().map(String::as_str) != Ok(registry))
        .collect()
}

/// Moves every idempotency record `seconds` into the past, as if it had been written that long ago.
async fn age_records(stack: &Stack, seconds: i64) {
    for item in once_only_records(stack).await {
        let expiration: i64 = item["expiration"].as_n().unwrap().parse().unwrap();
        stack
            .dynamodb
            .update_item()
            .table_name(TABLE)
            .key("id", item["id"].clone())
            .update_expression("SET expiration = :e")
            .expression_attribute_values(":e", AttributeValue::N((expiration - seconds).to_string()))
            .send()
            .await
            .expect("age the record");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_redrive_after_the_old_one_day_window_still_sends_nothing() {
    let mut stack = stack().await;
    let event = sample_event("publish-history-email/sns-envelope-batch.json");
    assert_eq!(
        failures(&stack.function.invoke(&event).response()),
        Vec::<String>::new()
    );
    let sent = stack.aws.proxy.calls_of("SendRawEmail").len();
    assert_eq!(sent, 4);

    // Every record expires no sooner than the dead-letter queue lets a message go.
    let retention: i64 = DEAD_LETTER_RETENTION.parse().unwrap();
    let now = chrono::Utc::now().timestamp();
    for item in once_only_records(&stack).await {
        let expiration: i64 = item["expiration"].as_n().unwrap().parse().unwrap();
        assert!(
            expiration >= now + retention - 60,
            "the record expires {} s from now, before the dead-letter queue's {retention} s",
            expiration - now
        );
    }

    // Two days later the operator redrives the dead-letter queue: the batch comes back and sends nothing.
    age_records(&stack, 2 * DAY).await;
    assert_eq!(
        failures(&stack.function.invoke(&event).response()),
        Vec::<String>::new()
    );
    assert_eq!(
        stack.aws.proxy.calls_of("SendRawEmail").len(),
        sent,
        "a redrive on day 2 emailed again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_claim_left_by_a_crashed_invocation_is_taken_over_once_its_deadline_has_passed() {
    let mut stack = stack().await;
    let event = sample_event("publish-history-email/sns-envelope-batch.json");
    // Another invocation claimed Ada's email of the acme row and died a minute ago.
    let now_ms = chrono::Utc::now().timestamp_millis();
    let key = publish_history_email::idempotency::notification_key("acme", "ph-1001", "ada@example.com");
    stack
        .dynamodb
        .put_item()
        .table_name(TABLE)
        .item("id", AttributeValue::S(key.clone()))
        .item("status", AttributeValue::S("INPROGRESS".into()))
        .item("expiration", AttributeValue::N((now_ms / 1000 + DAY).to_string()))
        .item(
            "in_progress_expiration",
            AttributeValue::N((now_ms - 60_000).to_string()),
        )
        .send()
        .await
        .expect("put the crashed claim");
    assert_eq!(
        failures(&stack.function.invoke(&event).response()),
        Vec::<String>::new()
    );
    let to_ada = sent_emails(&stack.aws.proxy)
        .iter()
        .filter(|(to, subject, _)| to == "ada@example.com" && subject.contains("Winter catalogue"))
        .count();
    assert_eq!(to_ada, 1, "the lapsed claim is taken over and Ada gets her email once");
    let record = once_only_records(&stack)
        .await
        .into_iter()
        .find(|item| item["id"].as_s().unwrap() == &key)
        .unwrap();
    assert_eq!(record["status"].as_s().unwrap(), "COMPLETED");
}

/// Two instances send at once for one account (SES's rate is the account's, not the instance's), at 5 emails a
/// second: they find each other in the send-rate registry and pace at their shares, so SES throttles none of the
/// 2 x 20 emails, and each goes out exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn two_instances_share_the_accounts_send_rate_and_send_each_email_once() {
    let mut stack = stack().await;
    stack.aws.proxy.enforce_quotas(Some(e2e_harness::quotas::Quotas {
        ses_max_send_rate: 5.0,
        ..e2e_harness::quotas::Quotas::aws()
    }));
    let tenant = subscribers(&stack, "initech", 20).await;
    let mut second = start(&stack, &stack.fanout.0);
    let (first_row, second_row) = (history_row("initech", "ph-rate-1"), history_row("initech", "ph-rate-2"));
    let started = std::time::Instant::now();
    tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let one = scope.spawn(|| deliver(&mut stack.function, &first_row, 1));
            let two = scope.spawn(|| deliver(&mut second, &second_row, 1));
            (one.join().unwrap(), two.join().unwrap())
        })
    });
    let throttled = stack
        .aws
        .proxy
        .refusals()
        .iter()
        .filter(|(_, r)| r.message == "Maximum sending rate exceeded.")
        .count();
    assert_eq!(throttled, 0, "together within the account's rate");
    // 40 emails at 5/s take 8 s at the very least; at one share each (1.5/s), about 13 s.
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    let by_subject = recipients_by_subject(&sent_emails(&stack.aws.proxy));
    assert_eq!(
        by_subject["New publish history: ph-rate-1"], tenant,
        "each subscriber once"
    );
    assert_eq!(
        by_subject["New publish history: ph-rate-2"], tenant,
        "each subscriber once"
    );
    let output = second.output().join("\n");
    assert!(
        output.contains("sending instances"),
        "the second instance saw the first: {output}"
    );
}

/// With SES's 24-hour quota spent part way through a row, the rest is handed on to the fan-out queue to wait for
/// the quota (not failed: the row uses up no receive), the log says why, and once a new day allows it, the rest
/// goes out and nobody gets the email twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_spent_daily_quota_hands_the_rest_on_and_it_is_sent_after_the_quota_resets_exactly_once() {
    let mut stack = stack().await;
    stack.aws.proxy.enforce_quotas(Some(e2e_harness::quotas::Quotas {
        ses_max_24_hour_send: 3.0,
        ..e2e_harness::quotas::Quotas::aws()
    }));
    let tenant = subscribers(&stack, "initech", 5).await;
    let row = history_row("initech", "ph-daily");
    assert_eq!(
        failures(&stack.function.invoke(&row).response()),
        Vec::<String>::new(),
        "handed on, not handed back"
    );
    assert_eq!(sent_emails(&stack.aws.proxy).len(), 3);
    let output = stack.function.output().join("\n");
    assert!(output.contains("Daily message quota exceeded."), "{output}");
    let refused = stack.aws.proxy.refusals().len();
    assert!(
        (1..=2).contains(&refused),
        "SES asked until it said the quota is spent, then no more: {refused}"
    );

    // A chunk waits on the fan-out queue; a hand-on on a still-spent quota waits again.
    let waited = stack.aws.proxy.refusals().len();
    assert!(
        !e2e_harness::fixtures::queue_is_drained(&stack.sqs, &stack.fanout.0).await,
        "the rest waits in the fan-out queue"
    );
    // The next day.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    stack.aws.proxy.start_new_ses_day();
    run_fanout(&mut stack, std::time::Duration::from_secs(60)).await;
    let by_subject = recipients_by_subject(&sent_emails(&stack.aws.proxy));
    assert_eq!(by_subject["New publish history: ph-daily"], tenant);
    assert!(
        stack.aws.proxy.refusals().len() - waited <= 1,
        "at most one more refusal before the new day"
    );
}

/// SES hangs past the invocation's deadline (each send answers after 4 s, with a 5 s function timeout): the
/// function still answers before the deadline, handing what it could not send on to the fan-out queue, instead of
/// being cut off by Lambda (which would throw the answer away and return the whole batch); the hand-ons send each
/// email once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn sends_hanging_past_the_deadline_are_given_up_in_time_and_handed_on() {
    let mut stack = stack().await;
    let slow = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let hanging = slow.clone();
    stack.aws.proxy.respond_with(move |call| {
        if call.operation != "SendRawEmail" || !hanging.load(std::sync::atomic::Ordering::SeqCst) {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_secs(4));
        // The send never reached SES: it is not sent.
        Some(e2e_harness::proxy::Reply {
            status: 503,
            content_type: "text/xml",
            body: "<ErrorResponse><Error><Type>Receiver</Type><Code>ServiceUnavailable</Code><Message>Service unavailable</Message></Error></ErrorResponse>"
                .into(),
        })
    });
    stack.function.timeout = std::time::Duration::from_secs(5);
    let event = sample_event("publish-history-email/sns-envelope-batch.json");
    let answered = stack.function.invoke(&event);
    let e2e_harness::runtime::Invocation::Response(response) = answered else {
        panic!("cut off by the deadline: {answered:?}")
    };
    assert_eq!(failures(&response), Vec::<String>::new(), "both rows handed on");
    assert_eq!(stack.function.restarts(), 0, "answered within the deadline");

    slow.store(false, std::sync::atomic::Ordering::SeqCst);
    // What the proxy answered itself never reached SES: the emails are those sent from now on.
    let hung = stack.aws.proxy.calls_of("SendRawEmail").len();
    stack.function.timeout = std::time::Duration::from_secs(60);
    run_fanout(&mut stack, std::time::Duration::from_secs(60)).await;
    let by_subject = recipients_by_subject(&sent_emails(&stack.aws.proxy).split_off(hung));
    assert_eq!(
        by_subject.values().map(Vec::len).sum::<usize>(),
        4,
        "each recipient once: {by_subject:?}"
    );
}

/// Listing a pool of 360 users takes seven ListUsers pages; with Cognito's ListUsers rate lowered to 2 a second
/// (AWS's is 30, shared by the whole account) the pages come faster than that: the throttled pages are retried or
/// the listing goes on from its page in another invocation, and the row reaches every subscriber, once. The
/// function asks for the attributes it reads, no more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_pool_listed_faster_than_cognitos_list_users_rate_is_throttled_resumed_and_complete() {
    let mut stack = stack().await;
    let tenant = subscribers(&stack, "initech", 3).await;
    let mut creating = tokio::task::JoinSet::new();
    for i in 0..350 {
        let (cognito, pool) = (stack.cognito.clone(), stack.pool_id.clone());
        creating.spawn(async move {
            let email: &'static str = Box::leak(format!("bystander{i:03}@example.com").into_boxed_str());
            let user = e2e_harness::fixtures::SampleUser {
                email,
                tenant: "umbrella",
                subscription: "false",
                ..e2e_harness::fixtures::SAMPLE_USERS[0]
            };
            e2e_harness::fixtures::create_user(&cognito, &pool, &user).await;
        });
        if creating.len() >= 8 {
            creating.join_next().await;
        }
    }
    creating.join_all().await;
    let mut quotas = e2e_harness::quotas::Quotas::aws();
    quotas.cognito = vec![("UserList", &["ListUsers"], 2)];
    stack.aws.proxy.enforce_quotas(Some(quotas));
    let row = history_row("initech", "ph-pages");
    assert_eq!(
        deliver(&mut stack.function, &row, 1),
        1,
        "answered, nothing handed back"
    );
    run_fanout(&mut stack, std::time::Duration::from_secs(90)).await;
    let throttled = stack
        .aws
        .proxy
        .refusals()
        .iter()
        .filter(|(_, r)| r.code == "TooManyRequestsException")
        .count();
    assert!(
        throttled > 0,
        "the pages never came faster than the rate: the test proves nothing"
    );
    let listings = stack.aws.proxy.calls_of("ListUsers");
    assert!(listings.len() >= 7, "the whole pool, page by page");
    let asked: serde_json::Value = serde_json::from_str(&listings[0].body).unwrap();
    assert_eq!(asked["AttributesToGet"].as_array().map(Vec::len), Some(6), "{asked}");
    assert_eq!(
        recipients_by_subject(&sent_emails(&stack.aws.proxy))["New publish history: ph-pages"],
        tenant
    );
}

/// A user who signs in through a social or SAML provider is `EXTERNAL_PROVIDER`, not `CONFIRMED`, and is as
/// eligible. moto cannot create a federated user, so the proxy's rewriter presents one as Cognito lists it; an
/// invited user who never set a password (`FORCE_CHANGE_PASSWORD`) still gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_subscriber_who_signs_in_through_a_social_provider_is_emailed_like_a_confirmed_one() {
    let mut stack = stack().await;
    let federated = e2e_harness::fixtures::SampleUser {
        email: "federated@example.com",
        confirmed: false,
        ..e2e_harness::fixtures::SAMPLE_USERS[0]
    };
    e2e_harness::fixtures::create_user(&stack.cognito, &stack.pool_id, &federated).await;
    stack.aws.proxy.rewrite_with(Some(Box::new(|call, body| {
        if call.operation != "ListUsers" {
            return body;
        }
        let mut listing: serde_json::Value = serde_json::from_str(&body).expect("ListUsers answers JSON");
        for user in listing["Users"].as_array_mut().into_iter().flatten() {
            let email = user["Attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["Name"] == "email")
                .map(|a| a["Value"].clone());
            if email == Some(serde_json::json!("federated@example.com")) {
                user["UserStatus"] = serde_json::json!("EXTERNAL_PROVIDER");
            }
        }
        listing.to_string()
    })));
    assert_eq!(deliver(&mut stack.function, &history_row("acme", "ph-federated"), 1), 1);
    let mut expected: Vec<String> = eligible_subscribers("acme").iter().map(|s| s.to_string()).collect();
    expected.push("federated@example.com".into());
    expected.sort();
    assert_eq!(
        recipients_by_subject(&sent_emails(&stack.aws.proxy))["New publish history: ph-federated"],
        expected
    );
    assert!(
        !expected.contains(&"margaret@example.com".to_owned()),
        "FORCE_CHANGE_PASSWORD stays ineligible"
    );
}

/// The account is still in the SES sandbox, where only verified identities may receive: SES refuses Grace, but that
/// refusal is our configuration, not her address. Nothing is recorded as rejected; the row is handed back, and once
/// the account has production access the redelivery sends her the email, and Ada nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_sandbox_refusal_is_not_filed_as_the_recipients_rejection() {
    let mut stack = stack().await;
    let sandbox = e2e_harness::quotas::Quotas {
        ses_sandbox_recipients: Some(vec!["ada@example.com".into()]),
        ..e2e_harness::quotas::Quotas::aws()
    };
    stack.aws.proxy.enforce_quotas(Some(sandbox));
    let row = history_row("acme", "ph-sandbox");
    assert_eq!(
        failures(&stack.function.invoke(&row).response()),
        vec!["ph-sandbox".to_owned()],
        "handed back, not settled"
    );
    assert_eq!(
        sent_emails(&stack.aws.proxy)
            .iter()
            .map(|e| e.0.clone())
            .collect::<Vec<_>>(),
        vec!["ada@example.com"]
    );
    let statuses: Vec<String> = once_only_records(&stack)
        .await
        .iter()
        .filter_map(|item| item.get("status")?.as_s().ok().cloned())
        .collect();
    assert!(
        !statuses.iter().any(|s| s == "rejected"),
        "a sandbox refusal was filed as a rejection: {statuses:?}"
    );
    assert!(
        stack.function.output().join("\n").contains("sandbox"),
        "the log says why"
    );

    stack.aws.proxy.enforce_quotas(Some(e2e_harness::quotas::Quotas::aws()));
    assert_eq!(deliver(&mut stack.function, &row, 1), 1);
    assert_eq!(
        recipients_by_subject(&sent_emails(&stack.aws.proxy))["New publish history: ph-sandbox"],
        eligible_subscribers("acme")
    );
}

/// A sender display name outside ASCII: SES refuses a `Source` that is not 7-bit (the harness refuses it as SES
/// does), so the function sends the bare address as `Source` and the name, RFC 2047 encoded, in the From header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_display_name_outside_ascii_sends_and_reaches_the_recipient_encoded() {
    let stack = stack().await;
    let mut function = stack.start_function(
        BINARY,
        &[
            ("USER_POOL_ID", stack.pool_id.as_str()),
            ("SENDER_ADDRESS", "Nävlab Ürün <no-reply@navlab.online>"),
            ("FANOUT_QUEUE_URL", stack.fanout.0.as_str()),
            ("IDEMPOTENCY_TABLE", TABLE),
            ("DEAD_LETTER_QUEUE_URL", stack.dlq_url.as_str()),
        ],
    );
    assert_eq!(deliver(&mut function, &history_row("acme", "ph-umlaut"), 1), 1);
    let emails = e2e_harness::mail::sent_emails(&stack.aws.proxy);
    assert_eq!(emails.len(), eligible_subscribers("acme").len());
    for email in &emails {
        assert_eq!(email.source, "no-reply@navlab.online");
        assert_eq!(
            email.from,
            (Some("Nävlab Ürün".to_owned()), "no-reply@navlab.online".to_owned())
        );
        assert!(
            email.header("From").unwrap().is_ascii(),
            "the header as sent is 7-bit: {:?}",
            email.header("From")
        );
    }
    assert!(
        stack.aws.proxy.refusals().is_empty(),
        "{:?}",
        stack.aws.proxy.refusals()
    );
}
