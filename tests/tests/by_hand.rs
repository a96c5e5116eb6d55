//! docs/local-aws.md's "Running a function by hand", as a user follows it, under cargo-lambda's own emulator: the local
//! stack `run-local.sh --keep` leaves up, `cargo lambda watch` (the pinned cargo-lambda), every sample in `events/`
//! invoked with `cargo lambda invoke`, and the work each one does asserted in the services, not only its answer.
//! Then events published by hand go through the real queues, the template's event sources delivering them to cargo
//! lambda watch: a large tenant's publish history fans out and every chunk is emailed; a large users event is handed
//! on past its slice and every row is applied.
//!
//! cargo lambda watch runs here with `--only-lambda-apis`, the suite's binaries started against its Runtime API:
//! run as the README runs it, it would rebuild the binaries with other features while other tests run them. What
//! the functions meet is cargo-lambda's: its deadline (the constant 600000 ms), its invoke endpoint and its CLI.

use std::collections::BTreeSet;
use std::time::Duration;

use e2e_harness::by_hand::{deliver_to_watch, publish_database_event, write_env_files, write_stack_file, Stand};
use e2e_harness::cargo_lambda::{env_file, CliInvocation, Watch};
use e2e_harness::fixtures::{eligible_subscribers, get_parameter, peek_all, user_state, wait_until, SampleUser};
use e2e_harness::{built_binaries, dead_letter_info, workspace_root};
use serde_json::{json, Value};

/// An environment file as cargo-lambda reads it (`KEY='value'` lines, `#` comments), in order; the access key left
/// out, since each process started here gets a key of its own.
fn read_env_file(path: &std::path::Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (key, value) = l.split_once('=').unwrap_or_else(|| panic!("{}: {l}", path.display()));
            (key.to_owned(), value.trim_matches('\'').to_owned())
        })
        .filter(|(k, _)| k != "AWS_ACCESS_KEY_ID")
        .collect()
}

#[test]
fn cargo_lambda_watch_reads_each_functions_env_file_where_run_local_writes_it() {
    let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
    for function in std::fs::read_dir(workspace_root().join("functions")).unwrap() {
        let function = function.unwrap().file_name().to_string_lossy().into_owned();
        let section = format!(
            "[workspace.metadata.lambda.bin.{function}.watch]\nenv_file = \"{}\"",
            env_file(&function)
        );
        assert!(
            manifest.contains(&section),
            "Cargo.toml names {function}'s env file for cargo lambda watch:\n{section}"
        );
    }
}

/// Every sample in `events/`: a new one fails the test until it is given its check below.
fn samples() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for function in std::fs::read_dir(workspace_root().join("events")).unwrap() {
        let function = function.unwrap().path();
        if !function.is_dir() {
            continue;
        }
        for sample in std::fs::read_dir(&function).unwrap() {
            let sample = sample.unwrap().path();
            if sample.extension().is_some_and(|e| e == "json") {
                found.insert(
                    sample
                        .strip_prefix(workspace_root().join("events"))
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    found
}

struct Run {
    stand: Stand,
    watch: Watch,
    cognito: aws_sdk_cognitoidentityprovider::Client,
    ssm: aws_sdk_ssm::Client,
    sqs: aws_sdk_sqs::Client,
    invoked: BTreeSet<String>,
}

impl Run {
    /// `cargo lambda invoke` of `events/<sample>`; its answer, after checking the CLI succeeded.
    fn invoke(&mut self, sample: &str) -> Value {
        let function = sample.split('/').next().unwrap();
        let result: CliInvocation = self
            .watch
            .invoke(function, &workspace_root().join("events").join(sample));
        self.invoked.insert(sample.to_owned());
        let answer = result.answer.clone().unwrap_or_else(|| {
            panic!(
                "{sample}: no answer ({result:?})\n{}",
                self.watch.output_of(function).join("\n")
            )
        });
        assert!(result.success, "{sample}: {answer}");
        let shown: String = answer.to_string().chars().take(160).collect();
        println!("  {sample}: {shown}");
        answer
    }

    /// `cargo lambda invoke` of an event written to a file first, as a user saves one.
    fn invoke_event(&self, function: &str, event: &Value) -> Value {
        let file = std::env::temp_dir().join(format!("by-hand-{}-{function}.json", std::process::id()));
        std::fs::write(&file, event.to_string()).unwrap();
        let result = self.watch.invoke(function, &file);
        let _ = std::fs::remove_file(&file);
        match result.answer.clone() {
            Some(answer) if result.success => answer,
            _ => panic!("{function}: {result:?}"),
        }
    }

    async fn attribute(&self, email: &str, name: &str) -> String {
        user_state(&self.cognito, &self.stand.stack.user_pool_id, email)
            .await
            .1
            .get(name)
            .cloned()
            .unwrap_or_default()
    }

    async fn enabled(&self, email: &str) -> bool {
        user_state(&self.cognito, &self.stand.stack.user_pool_id, email).await.0
    }

    async fn restriction(&self) -> Value {
        get_parameter(&self.ssm, &self.stand.stack.restriction_parameter).await
    }

    /// The records in `queue`'s dead-letter queue (`logical_id` in the template), by source message id.
    async fn dead_letters(&self, logical_id: &str) -> BTreeSet<String> {
        peek_all(&self.sqs, &self.stand.stack.queue(logical_id).url)
            .await
            .iter()
            .map(|m| dead_letter_info(m).0)
            .collect()
    }

    fn emails_since(&self, before: usize) -> Vec<(String, String)> {
        let mut sent: Vec<(String, String)> = e2e_harness::mail::sent_emails(&self.stand.proxy)
            .split_off(before)
            .into_iter()
            .map(|e| (e.subject.clone(), e.destinations.first().cloned().unwrap_or_default()))
            .collect();
        sent.sort();
        sent
    }

    fn emails(&self) -> usize {
        e2e_harness::mail::sent_emails(&self.stand.proxy).len()
    }
}

fn sample_ids(sample: &str, positions: &[usize]) -> BTreeSet<String> {
    let event = e2e_harness::fixtures::sample_event(sample);
    positions
        .iter()
        .map(|&i| event["Records"][i]["messageId"].as_str().unwrap().to_owned())
        .collect()
}

fn subject(title: &str) -> String {
    format!("New publish history: {title}")
}

fn to(title: &str, recipients: &[&str]) -> Vec<(String, String)> {
    recipients.iter().map(|r| (subject(title), r.to_string())).collect()
}

/// The two tests below one at a time: the second has cargo lambda watch rebuild a binary the first runs.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The README's command itself: `cargo lambda watch` at the root (here, in a directory holding the env files) builds
/// and starts the function at its first invocation, with the environment file the root `Cargo.toml` names for it:
/// nothing exported. The emulator's deadline does not stop its work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: cargo lambda watch builds the function; tests/test.sh runs it"]
async fn cargo_lambda_watch_builds_a_function_that_reads_its_env_file_and_does_its_work() {
    let _one = ONE_AT_A_TIME.lock().await;
    let stand = Stand::start().await;
    let base = std::env::temp_dir().join(format!("by-hand-build-{}", std::process::id()));
    write_env_files(
        &base,
        &stand.stack,
        &stand.proxy.endpoint,
        &stand.users_db.url_without_password(),
    )
    .expect("the env files are written");
    let watch = Watch::start_building_in(&base);
    let sample = workspace_root().join("events/cognito-attribute-sync/sns-envelope-batch.json");
    let result = watch.invoke("cognito-attribute-sync", &sample);
    let _ = std::fs::remove_dir_all(&base);
    assert!(result.success, "{result:?}\n{}", watch.text());
    assert_eq!(result.answer.unwrap()["batchItemFailures"], json!([]));
    let cognito = aws_sdk_cognitoidentityprovider::Client::new(&stand.sdk);
    let ada = user_state(&cognito, &stand.stack.user_pool_id, "ada@example.com")
        .await
        .1;
    assert_eq!(
        ada.get("family_name").map(String::as_str),
        Some("Lovelace"),
        "the record applied, with the pool from its env file"
    );
    assert!(
        watch.text().contains("already past when it arrived"),
        "the emulator's deadline warned about:\n{}",
        watch.text()
    );
    assert!(
        stand.proxy.take_denials().is_empty(),
        "under its own policy, from the access key in its env file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: the local stack, cargo lambda watch and two large events through the queues; tests/test.sh runs it"]
async fn every_sample_does_its_work_under_cargo_lambda_watch_and_hand_ons_go_through_the_queues() {
    let _one = ONE_AT_A_TIME.lock().await;
    let binaries = built_binaries();
    let stand = Stand::start().await;
    // Each function's environment as run-local.sh --keep writes it for cargo lambda watch, read back from its file.
    let base = std::env::temp_dir().join(format!("by-hand-{}", std::process::id()));
    let database_url = stand.users_db.url_without_password();
    write_env_files(&base, &stand.stack, &stand.proxy.endpoint, &database_url).expect("the env files are written");
    write_stack_file(&base, &stand.moto.endpoint, &stand.stack).expect("the stack file is written");
    let mut watch = Watch::start_apis_only();
    for function in &stand.stack.functions {
        let env = read_env_file(&base.join(env_file(&function.binary)));
        assert_eq!(
            env,
            stand
                .function_env(&function.binary)
                .into_iter()
                .filter(|(k, _)| k != "AWS_ACCESS_KEY_ID")
                .collect::<Vec<_>>()
        );
        watch.start_function(&binaries.join(&function.binary), &env);
    }
    let sqs = aws_sdk_sqs::Client::new(&stand.sdk);
    let sources = deliver_to_watch(&stand.stack, &sqs, watch.port);
    let mut run = Run {
        cognito: aws_sdk_cognitoidentityprovider::Client::new(&stand.sdk),
        ssm: aws_sdk_ssm::Client::new(&stand.sdk),
        sqs,
        stand,
        watch,
        invoked: BTreeSet::new(),
    };
    // Created first: publish-history-email keeps the subscribers it listed for SUBSCRIBER_CACHE_TTL_SECONDS.
    let tenant_users = large_tenant(&run, 160).await;

    println!("alarm-instance-updater: the restriction parameter after each");
    let answer = run.invoke("alarm-instance-updater/direct-alarm-insufficient-data.json");
    assert_eq!(
        (answer["written"].clone(), run.restriction().await["restricted"].clone()),
        (json!(false), json!(false)),
        "INSUFFICIENT_DATA changes nothing"
    );
    let answer = run.invoke("alarm-instance-updater/sns-alarm-cpu-high.json");
    assert_eq!(
        (answer["written"].clone(), run.restriction().await["restricted"].clone()),
        (json!(true), json!(true)),
        "cpu_high ALARM restricts"
    );
    let restricted = run.restriction().await;
    run.invoke("alarm-instance-updater/sns-alarm-cpu-high-metric-math.json");
    assert_eq!(
        run.restriction().await["restricted"],
        true,
        "a metric-math cpu_high ALARM keeps it restricted"
    );
    let restricted_again = run.restriction().await;
    run.invoke("alarm-instance-updater/sns-alarm-disk-full.json");
    assert_eq!(
        run.restriction().await,
        restricted_again,
        "disk_full is not a scale-out alarm: nothing written"
    );
    run.invoke("alarm-instance-updater/sns-asg-test-notification.json");
    assert_eq!(
        run.restriction().await,
        restricted_again,
        "Auto Scaling's test notification changes nothing"
    );
    assert_eq!(restricted["alarm"], "cpu_high");
    let answer = run.invoke("alarm-instance-updater/sns-ok-cpu-high.json");
    assert_eq!(
        (answer["written"].clone(), run.restriction().await["restricted"].clone()),
        (json!(true), json!(false)),
        "cpu_high OK with the group settled lifts it"
    );
    let answer = run.invoke("alarm-instance-updater/eventbridge-launch-successful.json");
    assert_eq!(
        (answer["written"].clone(), run.restriction().await["restricted"].clone()),
        (json!(false), json!(false)),
        "a launch result with nothing restricted"
    );

    println!("lifecycle-hook-completer: the verdicts completed with Auto Scaling");
    let verdicts = |run: &Run| {
        run.stand
            .stand_in
            .completed()
            .iter()
            .map(|c| format!("{} {}", c.instance_id, c.result))
            .collect::<Vec<_>>()
    };
    run.invoke("lifecycle-hook-completer/eventbridge-launch-lifecycle-action.json");
    assert_eq!(
        verdicts(&run),
        ["i-0a1b2c3d4e5f60718 CONTINUE"],
        "the healthy instance continues after its check"
    );
    run.invoke("lifecycle-hook-completer/sns-launch-lifecycle-action.json");
    assert_eq!(
        verdicts(&run)[1..],
        ["i-0badc0ffee0d15ea5 ABANDON"],
        "the instance whose application never answers is abandoned"
    );
    let answer = run.invoke("lifecycle-hook-completer/eventbridge-warm-pool-lifecycle-action.json");
    assert_eq!(
        verdicts(&run)[2..],
        ["i-0f00dfeed0000beef CONTINUE"],
        "a warm-pool launch continues without a check"
    );
    assert_eq!(answer["attempts"], 0);
    run.invoke("lifecycle-hook-completer/sns-test-notification.json");
    assert_eq!(verdicts(&run).len(), 3, "the test notification completes nothing");

    println!("cognito-attribute-sync: the users in Cognito");
    let answer = run.invoke("cognito-attribute-sync/sns-envelope-batch.json");
    assert_eq!(answer["batchItemFailures"], json!([]));
    assert_eq!(
        run.attribute("ada@example.com", "family_name").await,
        "Lovelace",
        "Ada's surname applied"
    );
    assert_eq!(
        run.attribute("grace@example.com", "family_name").await,
        "Hopper",
        "Grace's unchanged row"
    );
    run.invoke("cognito-attribute-sync/raw-delivery.json");
    assert_eq!(
        run.attribute("katherine@example.com", "custom:_tenant").await,
        "globex",
        "Katherine's new row applied"
    );
    assert_eq!(run.attribute("katherine@example.com", "given_name").await, "Katherine");
    run.invoke("cognito-attribute-sync/user-deleted.json");
    assert!(
        !run.enabled("alan@example.com").await,
        "Alan's deleted row disables his account"
    );
    let answer = run.invoke("cognito-attribute-sync/poison-record.json");
    assert_eq!(
        answer["batchItemFailures"],
        json!([]),
        "the poison records are dead-lettered and acknowledged, not handed back"
    );
    assert_eq!(
        run.dead_letters("CognitoAttributeSyncDeadLetterQueue").await,
        sample_ids("cognito-attribute-sync/poison-record.json", &[1, 2])
    );

    println!("cognito-reconcile: the users table against the pool");
    let answer = run.invoke("cognito-reconcile/dry-run.json");
    assert_eq!(
        (
            answer["drifted"].clone(),
            answer["missingInPool"].clone(),
            answer["repaired"].clone()
        ),
        (json!(1), json!(1), json!(0)),
        "Grace drifted, Hedy missing"
    );
    assert_eq!(
        run.attribute("grace@example.com", "family_name").await,
        "Hopper",
        "a dry run writes nothing"
    );
    let answer = run.invoke("cognito-reconcile/repair.json");
    assert_eq!(
        (answer["repaired"].clone(), answer["complete"].clone()),
        (json!(1), json!(true))
    );
    assert_eq!(
        run.attribute("grace@example.com", "family_name").await,
        "Murray",
        "the repair applies the table's surname"
    );
    let answer = run.invoke("cognito-reconcile/scheduled-event.json");
    assert_eq!(
        (
            answer["drifted"].clone(),
            answer["dryRun"].clone(),
            answer["complete"].clone()
        ),
        (json!(0), json!(false), json!(true)),
        "nothing left to repair"
    );
    let answer = run.invoke("cognito-reconcile/continuation.json");
    let carried = answer["scanned"].as_u64().unwrap() > 5000 && answer["repaired"].as_u64().unwrap() >= 50;
    assert!(
        answer["complete"] == true && carried,
        "the continuation resumes after its user, its counts carried: {answer}"
    );

    println!("publish-history-email: the emails sent");
    let acme = eligible_subscribers("acme");
    let before = run.emails();
    let answer = run.invoke("publish-history-email/sns-envelope-batch.json");
    assert_eq!(answer["batchItemFailures"], json!([]));
    let mut expected = to("Winter catalogue <script>alert('x')</script> & prices", &acme);
    // Alan was disabled above: of globex, Linus only.
    expected.extend(to("Pricing update", &["linus@example.com"]));
    expected.sort();
    assert_eq!(
        run.emails_since(before),
        expected,
        "each row emailed by its own invocation, nothing left to the fan-out queue"
    );
    let before = run.emails();
    run.invoke("publish-history-email/raw-delivery.json");
    assert_eq!(run.emails_since(before), to("Spring roadmap", &acme));
    let before = run.emails();
    run.invoke("publish-history-email/fanout-chunk.json");
    assert_eq!(
        run.emails_since(before),
        to("Autumn price list", &["ada@example.com", "grace@example.com"]),
        "a chunk emails its recipients"
    );
    let before = run.emails();
    let answer = run.invoke("publish-history-email/mixed-batch.json");
    assert_eq!(answer["batchItemFailures"], json!([]));
    assert_eq!(
        run.emails_since(before),
        Vec::<(String, String)>::new(),
        "ph-1003 was emailed by its chunk: once only"
    );
    assert_eq!(
        run.dead_letters("PublishHistoryEmailDeadLetterQueue").await,
        sample_ids("publish-history-email/mixed-batch.json", &[1, 2])
    );

    println!("unsubscribe: the pages");
    let subscribed = run.flags().await;
    for sample in ["unsubscribe/link-scanner-get.json", "unsubscribe/one-click-post.json"] {
        let answer = run.invoke(sample);
        assert_eq!(answer["statusCode"], 400, "{sample}: signed for no user here, refused");
        assert!(
            answer["body"].as_str().unwrap().contains("Navlab"),
            "{sample}: the page names the product"
        );
    }
    assert_eq!(run.flags().await, subscribed, "a refused link writes nothing");
    // A real link: Linus's email's List-Unsubscribe, POSTed as his mail client does.
    let link = e2e_harness::mail::sent_emails(&run.stand.proxy)
        .into_iter()
        .find(|e| e.destinations == ["linus@example.com"])
        .and_then(|e| e.unsubscribe_url())
        .expect("Linus's email has a List-Unsubscribe link");
    let answer = run.invoke_event(
        "unsubscribe",
        &e2e_harness::function_url_request("POST", &link, Some("List-Unsubscribe=One-Click")),
    );
    assert_eq!(answer["statusCode"], 200);
    assert_eq!(
        run.attribute("linus@example.com", "custom:subPublishHistory").await,
        "false",
        "the one-click POST unsubscribed Linus"
    );

    println!("ses-feedback: who is unsubscribed");
    run.invoke("ses-feedback/complaint-event-publishing.json");
    assert_eq!(
        run.attribute("grace@example.com", "custom:subPublishHistory").await,
        "false",
        "Grace's spam complaint"
    );
    run.invoke("ses-feedback/permanent-bounce-identity-notification.json");
    assert_eq!(
        run.attribute("ada@example.com", "custom:subPublishHistory").await,
        "false",
        "Ada's permanent bounce"
    );
    let before = run.proxy_writes();
    let answer = run.invoke("ses-feedback/no-unsubscribe-batch.json");
    assert_eq!(answer["batchItemFailures"], json!([]));
    assert_eq!(
        run.proxy_writes(),
        before,
        "a transient bounce, a not-spam complaint and a delivery unsubscribe nobody"
    );

    assert_eq!(run.invoked, samples(), "every sample in events/ has its check here");

    println!("by hand through the queues: a large tenant's publish history and a large users event");
    let before = run.emails();
    // As `publish-event` publishes them, from the stack file run-local.sh --keep writes.
    let history = json!({"event": "records_created", "table": "publish_history", "records": [{"id": "ph-9001", "_tenant": "initech", "title": "Initech all hands"}]});
    publish_database_event(&base, &history.to_string())
        .await
        .expect("published");
    let rows: Vec<Value> = tenant_users
        .iter()
        .enumerate()
        .map(|(i, email)| json!({"id": 9000 + i, "email": email, "firstName": "Peter", "lastName": "Gibbons", "_tenant": "initech"}))
        .collect();
    let users = json!({"event": "records_created", "table": "users", "records": rows, "occurredAt": chrono::Utc::now().to_rfc3339()});
    publish_database_event(&base, &users.to_string())
        .await
        .expect("published");
    let everyone: BTreeSet<String> = tenant_users.iter().cloned().collect();
    let emailed = wait_until(Duration::from_secs(120), || async {
        run.emails_since(before)
            .iter()
            .filter(|(s, _)| *s == subject("Initech all hands"))
            .map(|(_, to)| to.clone())
            .collect::<BTreeSet<_>>()
            == everyone
    })
    .await;
    assert!(
        emailed,
        "every initech subscriber emailed once the chunks went through the fan-out queue to cargo lambda watch ({} of {}):\n{}",
        run.emails_since(before).len(),
        everyone.len(),
        run.watch.output_of("publish-history-email").iter().rev().take(30).cloned().collect::<Vec<_>>().join("\n")
    );
    let mut applied = false;
    for _ in 0..120 {
        let mut all = true;
        for email in tenant_users.iter().step_by(16).chain(tenant_users.last()) {
            all &= run.attribute(email, "family_name").await == "Gibbons";
        }
        if all {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(applied, "the users event's rows are all applied");
    for email in &tenant_users {
        assert_eq!(run.attribute(email, "family_name").await, "Gibbons", "{email}");
    }
    assert_eq!(
        run.emails_since(before).len(),
        tenant_users.len(),
        "each subscriber emailed once"
    );
    let sent = |needle: &str| {
        run.stand
            .proxy
            .calls()
            .iter()
            .filter(|c| c.operation.starts_with("SendMessage") && c.body.contains(needle))
            .count()
    };
    assert!(sent("chunk") >= 1, "the row fanned out to the fan-out queue in chunks");
    assert!(
        sent("continues") >= 1,
        "the users event outlasted its slice and handed its rest on through its queue"
    );
    for source in sources {
        let stats = source.stats();
        let function = source.stop().await.function;
        assert_eq!(stats.failures, 0, "{function}: nothing handed back");
    }
    let denials = run.stand.proxy.take_denials();
    assert!(
        denials.is_empty(),
        "every call within the function's template policy: {denials:#?}"
    );
    let _ = std::fs::remove_dir_all(&base);
    let warnings = run
        .watch
        .output_of("cognito-attribute-sync")
        .iter()
        .filter(|l| l.contains("already past when it arrived"))
        .count();
    assert_eq!(warnings, 1, "the emulator's deadline is warned about once per process");
}

impl Run {
    /// `custom:subPublishHistory` of Ada, Grace and Linus.
    async fn flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        for email in ["ada@example.com", "grace@example.com", "linus@example.com"] {
            flags.push(self.attribute(email, "custom:subPublishHistory").await);
        }
        flags
    }

    /// Cognito writes so far (all functions): unsubscribes and attribute updates.
    fn proxy_writes(&self) -> usize {
        self.stand
            .proxy
            .calls()
            .iter()
            .filter(|c| c.operation.starts_with("AdminUpdate") || c.operation.starts_with("AdminDisable"))
            .count()
    }
}

/// `count` subscribed users in tenant initech; their addresses, sorted.
async fn large_tenant(run: &Run, count: usize) -> Vec<String> {
    let mut emails = Vec::new();
    for i in 0..count {
        let email: &'static str = Box::leak(format!("peter{i:03}@initech.example").into_boxed_str());
        let user = SampleUser {
            email,
            given_name: "Peter",
            family_name: "Smith",
            tenant: "initech",
            subscription: "true",
            enabled: true,
            confirmed: true,
            email_verified: true,
        };
        e2e_harness::fixtures::create_user(&run.cognito, &run.stand.stack.user_pool_id, &user).await;
        emails.push(email.to_owned());
    }
    emails
}
