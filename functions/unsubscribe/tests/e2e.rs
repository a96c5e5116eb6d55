//! End to end: publish-history-email sends the notification (raw MIME through moto's SES, the signing key from an
//! SSM SecureString); the test follows the email's own List-Unsubscribe link into the unsubscribe binary, as a
//! mailbox provider's one-click POST through the Function URL (payload format 2.0). Cognito's writes are counted
//! through the recording proxy.

use e2e_harness::fixtures::{create_idempotency_table, put_secret, user_state, verify_sender, SENDER_ADDRESS};
use e2e_harness::mail::{sent_emails, SentEmail};
use e2e_harness::runtime::FunctionProcess;
use e2e_harness::{built_binaries, function_url_request, PoolStack};
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_unsubscribe");
const KEY: &str = "/local/unsubscribe-key";
const OLD_KEY: &str = "/local/unsubscribe-key-previous";
const BASE_URL: &str = "https://unsubscribe.example.com/u";

async fn stack() -> PoolStack {
    let stack = PoolStack::start("publish-history-email-dlq").await;
    verify_sender(&aws_sdk_ses::Client::new(&stack.aws.sdk)).await;
    create_idempotency_table(&stack.dynamodb, "idempotency").await;
    let ssm = aws_sdk_ssm::Client::new(&stack.aws.sdk);
    put_secret(&ssm, KEY, &"c".repeat(64)).await;
    put_secret(&ssm, OLD_KEY, &"o".repeat(64)).await;
    stack
}

/// publish-history-email signing with the key in `key_parameter`; sends one acme row, returns what it sent.
fn send_notifications(stack: &PoolStack, key_parameter: &str, title: &str) -> Vec<SentEmail> {
    let mut sender = FunctionProcess::start(
        &built_binaries().join("publish-history-email"),
        &stack.aws.function_env(&[
            ("USER_POOL_ID", stack.pool_id.as_str()),
            ("SENDER_ADDRESS", SENDER_ADDRESS),
            ("IDEMPOTENCY_TABLE", "idempotency"),
            ("FANOUT_QUEUE_URL", stack.fanout_url.as_str()),
            ("UNSUBSCRIBE_URL", BASE_URL),
            ("UNSUBSCRIBE_KEY_PARAMETER", key_parameter),
            ("SUBSCRIBER_CACHE_TTL_SECONDS", "0"),
        ]),
    );
    let before = sent_emails(&stack.aws.proxy).len();
    let message = json!({"event": "records_created", "table": "publish_history", "records": [{"id": format!("ph-{title}"), "_tenant": "acme", "title": title}]});
    let response = sender
        .invoke(&e2e_harness::sqs_event(
            "publish-history-email",
            &[("m-1", message.to_string())],
        ))
        .response();
    assert_eq!(response["batchItemFailures"], json!([]), "{response}");
    sent_emails(&stack.aws.proxy).split_off(before)
}

fn start(stack: &PoolStack, previous: bool) -> FunctionProcess {
    let mut settings = vec![
        ("USER_POOL_ID", stack.pool_id.as_str()),
        ("UNSUBSCRIBE_KEY_PARAMETER", KEY),
        ("SENDER_ADDRESS", SENDER_ADDRESS),
    ];
    if previous {
        settings.push(("UNSUBSCRIBE_PREVIOUS_KEY_PARAMETER", OLD_KEY));
    }
    stack.start_function(BINARY, &settings)
}

fn call(function: &mut FunctionProcess, method: &str, url: &str, body: Option<&str>) -> Value {
    function.invoke(&function_url_request(method, url, body)).response()
}

fn unsubscribe_writes(stack: &PoolStack) -> usize {
    stack.aws.proxy.calls_of("AdminUpdateUserAttributes").len()
}

async fn subscribed(stack: &PoolStack, email: &str) -> String {
    user_state(&stack.cognito, &stack.pool_id, email)
        .await
        .1
        .get("custom:subPublishHistory")
        .cloned()
        .unwrap_or_default()
}

fn to<'a>(emails: &'a [SentEmail], address: &str) -> &'a SentEmail {
    emails
        .iter()
        .find(|e| e.destinations == [address])
        .unwrap_or_else(|| panic!("no email to {address}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn each_email_carries_the_three_headers_and_its_link_unsubscribes_exactly_its_recipient() {
    let stack = stack().await;
    let emails = send_notifications(&stack, KEY, "Winter catalogue");
    assert_eq!(emails.len(), 2, "Ada and Grace are acme's subscribers");
    for email in &emails {
        assert_eq!(email.destinations.len(), 1, "one recipient per message");
        let url = email.unsubscribe_url().expect("List-Unsubscribe");
        assert!(
            url.starts_with(&format!("{BASE_URL}?token=")) && !url.contains('@'),
            "{url}"
        );
        assert_eq!(
            email.header("List-Unsubscribe-Post"),
            Some("List-Unsubscribe=One-Click")
        );
        assert_eq!(
            email.header("List-Id"),
            Some("Publish history <publish-history.acme.navlab.online>")
        );
        assert!(email.text.contains(&url), "the visible link in the text part");
        assert!(
            email.html.contains("Unsubscribe</a>") && email.html.contains(&url.replace('/', "&#x2f;")),
            "the visible link in the HTML part"
        );
    }
    let mut function = start(&stack, false);
    let ada_link = to(&emails, "ada@example.com").unsubscribe_url().unwrap();

    // A link scanner's GET changes nothing; the page posts back to the same link.
    let page = call(&mut function, "GET", &ada_link, None);
    assert_eq!(page["statusCode"], 200, "{page}");
    assert!(page["body"].as_str().unwrap().contains("method=\"post\""));
    assert_eq!(unsubscribe_writes(&stack), 0, "a GET wrote");
    let headers = &page["headers"];
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(headers["content-security-policy"]
        .as_str()
        .unwrap()
        .starts_with("default-src 'none'"));

    // The mailbox provider's one-click POST unsubscribes Ada, and only Ada.
    let done = call(&mut function, "POST", &ada_link, Some("List-Unsubscribe=One-Click"));
    assert_eq!(done["statusCode"], 200, "{done}");
    assert_eq!(subscribed(&stack, "ada@example.com").await, "false");
    assert_eq!(
        subscribed(&stack, "grace@example.com").await,
        "1",
        "Grace is still subscribed"
    );
    assert_eq!(unsubscribe_writes(&stack), 1);
    // Again: already unsubscribed, no write.
    assert_eq!(
        call(&mut function, "POST", &ada_link, Some("List-Unsubscribe=One-Click"))["statusCode"],
        200
    );
    assert_eq!(unsubscribe_writes(&stack), 1);
    assert_eq!(call(&mut function, "PUT", &ada_link, None)["statusCode"], 405);

    // The next publish history of acme does not email her.
    let next = send_notifications(&stack, KEY, "Spring roadmap");
    assert_eq!(
        next.iter().map(|e| e.destinations[0].as_str()).collect::<Vec<_>>(),
        vec!["grace@example.com"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn forged_edited_and_missing_tokens_fail_without_a_write_and_a_rotated_key_still_works() {
    let stack = stack().await;
    let emails = send_notifications(&stack, KEY, "Winter catalogue");
    let grace_link = to(&emails, "grace@example.com").unsubscribe_url().unwrap();
    let mut function = start(&stack, true);

    // A token signed with another key.
    let forged = format!(
        "{BASE_URL}?token={}",
        shared::unsubscribe::SigningKey::new(&"x".repeat(64)).unwrap().sign(
            "any-sub",
            "acme",
            chrono::Utc::now().timestamp()
        )
    );
    // Grace's token edited by one character.
    let mut edited = grace_link.clone().into_bytes();
    let last = edited.len() - 1;
    edited[last] = if edited[last] == b'A' { b'B' } else { b'A' };
    let edited = String::from_utf8(edited).unwrap();
    for (what, url) in [
        ("another key", forged.as_str()),
        ("one character edited", edited.as_str()),
        ("no token", "https://unsubscribe.example.com/"),
    ] {
        let refused = call(&mut function, "POST", url, Some("List-Unsubscribe=One-Click"));
        assert_eq!(refused["statusCode"], 400, "{what}: {refused}");
        let body = refused["body"].as_str().unwrap();
        assert!(
            !body.contains("grace") && !body.contains("acme"),
            "{what}: the page reveals nothing: {body}"
        );
        assert_eq!(call(&mut function, "GET", url, None)["statusCode"], 400, "{what}");
    }
    assert_eq!(unsubscribe_writes(&stack), 0);

    // Rotation: an email signed with the previous key (before the rotation) still unsubscribes.
    let old_emails = send_notifications(&stack, OLD_KEY, "Before the rotation");
    let old_link = to(&old_emails, "grace@example.com").unsubscribe_url().unwrap();
    assert_eq!(
        call(&mut function, "POST", &old_link, Some("List-Unsubscribe=One-Click"))["statusCode"],
        200
    );
    assert_eq!(subscribed(&stack, "grace@example.com").await, "false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_title_with_line_breaks_and_bcc_adds_no_header_and_no_recipient() {
    let stack = stack().await;
    let emails = send_notifications(&stack, KEY, "Q4\r\nBcc: victim@evil.example\r\nX-Injected: yes");
    assert_eq!(emails.len(), 2);
    for email in &emails {
        assert_eq!(email.destinations.len(), 1, "{:?}", email.destinations);
        assert!(
            email.header("Bcc").is_none() && email.header("X-Injected").is_none(),
            "{:?}",
            email.headers
        );
        assert!(!email.destinations.iter().any(|d| d.contains("evil")));
        assert!(
            email.subject.contains("Q4") && email.subject.contains("Bcc: victim@evil.example"),
            "the title stays text: {}",
            email.subject
        );
    }
}

/// The template's policy with one action taken out at a time: without `cognito-idp:AdminUpdateUserAttributes` the
/// one-click POST answers 503 (the mailbox provider retries) and the log names the denial; without `kms:Decrypt` the
/// function cannot read its signing key and fails its init naming the action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn without_its_update_or_its_decrypt_permission_nothing_is_unsubscribed_and_the_denial_is_named() {
    let stack = stack().await;
    let emails = send_notifications(&stack, KEY, "Winter catalogue");
    let ada_link = to(&emails, "ada@example.com").unsubscribe_url().unwrap();
    stack
        .aws
        .proxy
        .revoke("unsubscribe", "cognito-idp:AdminUpdateUserAttributes");
    let mut function = start(&stack, false);
    let refused = call(&mut function, "POST", &ada_link, Some("List-Unsubscribe=One-Click"));
    assert_eq!(refused["statusCode"], 503, "{refused}");
    assert_eq!(subscribed(&stack, "ada@example.com").await, "true", "still subscribed");
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

    stack.aws.proxy.restore("unsubscribe");
    assert_eq!(
        call(&mut function, "POST", &ada_link, Some("List-Unsubscribe=One-Click"))["statusCode"],
        200
    );
    assert_eq!(
        subscribed(&stack, "ada@example.com").await,
        "false",
        "the retried POST unsubscribes"
    );

    stack.aws.proxy.revoke("unsubscribe", "kms:Decrypt");
    let mut cold = start(&stack, false);
    let status = cold
        .wait_exit(std::time::Duration::from_secs(20))
        .expect("the function exits at init");
    assert!(!status.success());
    let output = cold.output().join("\n");
    assert!(
        output.contains("UNSUBSCRIBE_KEY_PARAMETER") && output.contains("kms:Decrypt"),
        "{output}"
    );
    let denials = stack.aws.proxy.take_denials();
    assert!(
        !denials.is_empty() && denials.iter().all(|d| d.operation == "GetParameter"),
        "{denials:?}"
    );
}

/// Lambda's advanced logging controls set `AWS_LAMBDA_LOG_LEVEL`: at `debug` the function's debug lines appear, at
/// `info` they do not; at every level, even with the SDK's and HTTP crates' tracing asked for by name, no line holds
/// a credential, the session token, the signing key, the link's token or a full address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn the_log_level_switch_takes_effect_and_no_level_writes_a_secret_or_an_address() {
    const SECRET_KEY: &str = "wJalrXUtnFEMI-secret-access-key-for-log-test";
    const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjE-session-token-for-log-test";
    let stack = stack().await;
    let emails = send_notifications(&stack, KEY, "Winter catalogue");
    let ada_link = to(&emails, "ada@example.com").unsubscribe_url().unwrap();
    let token = ada_link.split_once("token=").unwrap().1.to_owned();
    let levels = [
        ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
        ("AWS_LAMBDA_LOG_LEVEL", "DEBUG"),
        (
            "RUST_LOG",
            "trace,aws_smithy_runtime=trace,aws_smithy_runtime::client::orchestrator=trace,aws_sigv4=trace,hyper=trace,aws_config=trace,lambda_runtime=trace",
        ),
    ];
    for (variable, level) in levels {
        let mut function = stack.start_function(
            BINARY,
            &[
                ("USER_POOL_ID", stack.pool_id.as_str()),
                ("UNSUBSCRIBE_KEY_PARAMETER", KEY),
                ("SENDER_ADDRESS", SENDER_ADDRESS),
                (variable, level),
                ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
                ("AWS_SESSION_TOKEN", SESSION_TOKEN),
            ],
        );
        assert_eq!(call(&mut function, "GET", &ada_link, None)["statusCode"], 200);
        assert_eq!(
            call(&mut function, "POST", &ada_link, Some("List-Unsubscribe=One-Click"))["statusCode"],
            200
        );
        let output = function.output();
        let debug_lines = output.iter().filter(|l| l.contains("\"level\":\"DEBUG\"")).count();
        let ours = output
            .iter()
            .any(|l| l.contains("\"level\":\"DEBUG\"") && l.contains("link verified"));
        if level == "INFO" {
            assert_eq!(debug_lines, 0, "debug lines at info:\n{}", output.join("\n"));
        } else {
            assert!(ours, "no debug line of the function at {level}:\n{}", output.join("\n"));
        }
        for secret in [
            SECRET_KEY,
            SESSION_TOKEN,
            &"c".repeat(64),
            token.as_str(),
            "ada@example.com",
            "grace@example.com",
        ] {
            let leaked: Vec<&String> = output.iter().filter(|l| l.contains(secret)).collect();
            assert!(leaked.is_empty(), "{variable}={level} wrote {secret:?}: {leaked:?}");
        }
        // The SDK's debug lines are there when named: the cap is not a blanket silence.
        if variable == "RUST_LOG" {
            assert!(
                output
                    .iter()
                    .any(|l| l.contains("\"level\":\"DEBUG\"") && !l.contains("link verified")),
                "no SDK debug line"
            );
        }
    }
}

/// A recipient's way back, through the real binary: the email's link unsubscribes, the confirmation page's "subscribe
/// again" (a POST with the same token and `action=resubscribe`) sets the flag back for that user only, once, and the
/// page then offers to unsubscribe again, which works as before. The pages name the product, not the recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_then_subscribe_again_then_unsubscribe_again() {
    let stack = stack().await;
    let emails = send_notifications(&stack, KEY, "Spring catalogue");
    let url = to(&emails, "ada@example.com")
        .unsubscribe_url()
        .expect("List-Unsubscribe");
    let mut function = start(&stack, false);
    let grace = subscribed(&stack, "grace@example.com").await;

    let unsubscribed = call(&mut function, "POST", &url, Some("List-Unsubscribe=One-Click"));
    assert_eq!(unsubscribed["statusCode"], 200, "{unsubscribed}");
    let page = unsubscribed["body"].as_str().unwrap();
    assert!(
        page.contains("You are unsubscribed") && page.contains(">Navlab</p>") && page.contains("value=\"resubscribe\""),
        "{page}"
    );
    assert!(!page.contains("ada@example.com") && !page.contains("acme"), "{page}");
    assert_eq!(subscribed(&stack, "ada@example.com").await, "false");

    let again = call(&mut function, "POST", &url, Some("action=resubscribe"));
    assert_eq!(again["statusCode"], 200, "{again}");
    assert!(again["body"].as_str().unwrap().contains("You are subscribed again"));
    assert_eq!(subscribed(&stack, "ada@example.com").await, "true");
    assert_eq!(subscribed(&stack, "grace@example.com").await, grace, "that user only");
    let writes = unsubscribe_writes(&stack);
    assert_eq!(
        call(&mut function, "POST", &url, Some("action=resubscribe"))["statusCode"],
        200
    );
    assert_eq!(unsubscribe_writes(&stack), writes, "subscribed again once");

    let unsubscribed_again = call(&mut function, "POST", &url, Some("List-Unsubscribe=One-Click"));
    assert_eq!(unsubscribed_again["statusCode"], 200);
    assert_eq!(subscribed(&stack, "ada@example.com").await, "false");
    assert_eq!(unsubscribe_writes(&stack), writes + 1);
}
