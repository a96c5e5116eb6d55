//! The main job, locally: the whole event flow on one machine. The local stack is provisioned on moto from the SAM
//! template; database events are published to the topic, SNS delivers them to the queues through the template's
//! filter policies, the event sources hand batches to the real function binaries, and the lifecycle action and the
//! alarm are delivered as EventBridge and SNS would; then cognito-reconcile compares a real PostgreSQL users table
//! with the pool, in a dry run and a repair. A short report says what happened; every expectation that did not hold
//! is listed, and the caller exits non-zero.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use shared::logging::mask_email;

use crate::fixtures::{
    eligible_subscribers, fresh_lifecycle_event, get_parameter, peek_all, queue_is_drained, sample_event, user_state,
    wait_until, SAMPLE_USERS,
};
use crate::lifecycle_stand_in::LifecycleStandIn;
use crate::moto::Moto;
use crate::proxy::RecordingProxy;
use crate::runtime::FunctionProcess;
use crate::stack::{provision, LocalStack};
use crate::users_db::UsersDb;
use crate::{dead_letter_info, local_aws_env, sdk_config};

pub const APP_BASE_URL: &str = "https://app.navlab.online";
/// Its health check fails in the scenario, as an instance whose application never comes up.
pub const BROKEN_INSTANCE: &str = "i-0badc0ffee0d15ea5";

/// What went against expectations.
#[derive(Default)]
pub struct Report {
    pub problems: Vec<String>,
}

impl Report {
    fn expect(&mut self, ok: bool, what: impl Into<String>) {
        let what = what.into();
        println!("    {}  {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            self.problems.push(what);
        }
    }
}

/// The running local stack: moto, the recording proxy the functions reach it through, the stack's description.
pub struct Running {
    pub moto: Moto,
    pub proxy: RecordingProxy,
    pub stack: LocalStack,
    pub report: Report,
    /// The users table cognito-reconcile reads.
    pub users_db: UsersDb,
}

/// Where the function binaries are: `CARGO_TARGET_DIR` (or target/) /debug.
pub fn binaries_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
        .join("debug")
}

fn who(email: &str) -> String {
    let tenant = SAMPLE_USERS
        .iter()
        .find(|u| u.email == email)
        .map(|u| u.tenant)
        .filter(|t| !t.is_empty())
        .unwrap_or("no tenant");
    format!("{} ({tenant})", mask_email(email))
}

type Snapshot = HashMap<&'static str, (bool, HashMap<String, String>)>;

async fn snapshot(cognito: &aws_sdk_cognitoidentityprovider::Client, pool_id: &str) -> Snapshot {
    let mut users = HashMap::new();
    for user in SAMPLE_USERS {
        users.insert(user.email, user_state(cognito, pool_id, user.email).await);
    }
    users
}

fn print_changes(before: &Snapshot, after: &Snapshot) {
    let mut any = false;
    for user in SAMPLE_USERS {
        let (enabled_before, old) = &before[user.email];
        let (enabled_after, new) = &after[user.email];
        for name in ["given_name", "family_name", "custom:_tenant"] {
            let (o, n) = (
                old.get(name).map(String::as_str).unwrap_or("-"),
                new.get(name).map(String::as_str).unwrap_or("-"),
            );
            if o != n {
                println!("    {:<30} {name}: {o} -> {n}", who(user.email));
                any = true;
            }
        }
        if enabled_before != enabled_after {
            println!(
                "    {:<30} enabled: {enabled_before} -> {enabled_after}",
                who(user.email)
            );
            any = true;
        }
    }
    if !any {
        println!("    (no change)");
    }
}

/// The database events the scenario publishes: (what, message, event attribute, table attribute).
fn database_events() -> Vec<(&'static str, String, &'static str, &'static str)> {
    vec![
        (
            "users: Ada's surname changes",
            json!({"event": "record_updated", "table": "users", "record": {"id": 101, "email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace", "_tenant": "acme"}}).to_string(),
            "record_updated",
            "users",
        ),
        (
            "users: Katherine's row is created in tenant globex",
            json!({"event": "records_created", "table": "users", "records": [{"id": 103, "email": "katherine@example.com", "firstName": "Katherine", "lastName": "Johnson", "_tenant": "globex"}]}).to_string(),
            "records_created",
            "users",
        ),
        (
            "users: Alan's row is deleted",
            json!({"event": "records_deleted", "table": "users", "records": [{"id": 104, "email": "alan@example.com"}]}).to_string(),
            "records_deleted",
            "users",
        ),
        (
            "publish_history: created for acme (a title with markup)",
            json!({"event": "records_created", "table": "publish_history", "records": [{"id": "ph-1001", "_tenant": "acme", "title": "Winter catalogue <script>alert('x')</script>", "publishedBy": "Ada Lovelace", "createdAt": "2026-11-21T10:04:57Z"}]}).to_string(),
            "records_created",
            "publish_history",
        ),
        (
            "publish_history: created for globex",
            json!({"event": "records_created", "table": "publish_history", "tenant": "globex", "records": [{"id": 2001, "name": "Pricing update", "publishedBy": "Alan Turing"}]}).to_string(),
            "records_created",
            "publish_history",
        ),
        (
            "publish_history: updated (no subscription takes it)",
            json!({"event": "record_updated", "table": "publish_history", "record": {"id": "ph-1001", "_tenant": "acme", "title": "Renamed"}}).to_string(),
            "record_updated",
            "publish_history",
        ),
        ("users: a malformed message", r#"{"event":"record_updated","table":"users","record":{"email":"ada@exa"#.to_owned(), "record_updated", "users"),
    ]
}

fn binary(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --bins` (tests/run-local.sh and tests/test.sh do)",
        path.display()
    );
    path
}

/// Runs the scenario and returns the running stack (moto still up) with its report.
pub async fn run(binaries: &Path) -> Running {
    let moto = Moto::start();
    println!("local AWS (moto) listening on {}", moto.endpoint);
    // The functions reach moto through the recording proxy: it shows what they sent, and stands in for the
    // lifecycle calls moto lacks.
    let proxy = RecordingProxy::start(&moto.endpoint);
    // As in AWS: each function under its policy from the template, within AWS's default quotas.
    proxy.enforce_quotas(Some(crate::quotas::Quotas::aws()));
    println!("enforced: each function's IAM policy from infra/template.yaml, AWS's default quotas and the services' size limits");
    let stand_in = LifecycleStandIn::install(&proxy);
    stand_in.make_unhealthy(BROKEN_INSTANCE);
    let stack = provision(&moto.endpoint, APP_BASE_URL, None).await;
    println!(
        "local stack provisioned from infra/template.yaml: {} queues, {} functions",
        stack.queues.len(),
        stack.functions.len()
    );
    let mut report = Report::default();
    let sdk = sdk_config(&moto.endpoint).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let sns = aws_sdk_sns::Client::new(&sdk);
    let cognito = aws_sdk_cognitoidentityprovider::Client::new(&sdk);
    let ssm = aws_sdk_ssm::Client::new(&sdk);

    let start_with = |name: &str, overrides: &[(&str, &str)]| {
        let mut env = local_aws_env(&proxy.endpoint);
        env.extend(stack.function(name).environment.iter().cloned());
        env.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        FunctionProcess::start(&binary(binaries, name), &env)
    };
    let start = |name: &str| start_with(name, &[]);
    let mut sources = Vec::new();
    // One instance per event source (publish-history-email has two: its rows and its own fan-out queue).
    for name in ["cognito-attribute-sync", "publish-history-email"] {
        for source in &stack.function(name).sqs {
            sources.push((name, stack.event_source(&sqs, source, start(name))));
        }
    }

    // 1. Database events through SNS, the subscriptions' filter policies and the queues.
    println!(
        "\n== database events -> SNS topic -> filtered SQS queues -> cognito-attribute-sync, publish-history-email"
    );
    let before = snapshot(&cognito, &stack.user_pool_id).await;
    for (what, message, event, table) in database_events() {
        stack.publish_database_event(&sns, message, event, table).await;
        println!("  published  {what}");
    }
    let acme = eligible_subscribers("acme");
    let globex = eligible_subscribers("globex");
    // Alan's row is deleted by an event published with globex's history: whether he is still emailed depends on
    // which of the two functions gets there first, and both orders are right. The others are emailed either way.
    let globex_without_alan: Vec<&str> = globex.iter().copied().filter(|e| *e != "alan@example.com").collect();
    let expected_emails = acme.len() + globex_without_alan.len();
    let cognito_dlq = &stack.queue("CognitoAttributeSyncDeadLetterQueue").url;
    wait_until(Duration::from_secs(90), || async {
        let emails = proxy.calls_of("SendRawEmail").len();
        let dead = peek_all(&sqs, cognito_dlq).await.len();
        let alan_disabled = !user_state(&cognito, &stack.user_pool_id, "alan@example.com").await.0;
        emails >= expected_emails && dead >= 1 && alan_disabled
    })
    .await;
    // Nothing else is on its way once the queues are empty with nothing in flight.
    let source_queues: Vec<String> = [
        "CognitoAttributeSyncQueue",
        "PublishHistoryEmailQueue",
        "PublishHistoryEmailFanoutQueue",
    ]
    .iter()
    .map(|q| stack.queue(q).url.clone())
    .collect();
    let drained = wait_until(Duration::from_secs(30), || async {
        let mut all = true;
        for url in &source_queues {
            all &= queue_is_drained(&sqs, url).await;
        }
        all
    })
    .await;
    report.expect(drained, "the source queues drained: nothing left in them or in flight");
    let mut processes = Vec::new();
    for (name, source) in sources {
        let stats = source.stats();
        println!(
            "  {name}: {} batch(es), {} record(s), {} reported for redelivery",
            stats.batches, stats.records, stats.failures
        );
        report.expect(stats.failures == 0, format!("{name}: no record left for redelivery"));
        processes.push(source.stop().await);
    }
    let after = snapshot(&cognito, &stack.user_pool_id).await;
    println!("  Cognito attributes, before -> after:");
    print_changes(&before, &after);
    let attr = |email: &str, name: &str| after[email].1.get(name).cloned().unwrap_or_default();
    report.expect(
        attr("ada@example.com", "family_name") == "Lovelace",
        "Ada's family_name is Lovelace",
    );
    report.expect(
        attr("katherine@example.com", "custom:_tenant") == "globex",
        "Katherine is in tenant globex",
    );
    report.expect(!after["alan@example.com"].0, "Alan's deleted account is disabled");

    println!("  emails sent:");
    let mut by_subject: HashMap<String, Vec<String>> = HashMap::new();
    for email in crate::mail::sent_emails(&proxy) {
        let to = email.destinations.first().cloned().unwrap_or_default();
        let subject = email.subject.clone();
        println!("    to {:<30} {subject}", who(&to));
        by_subject.entry(subject).or_default().push(to);
    }
    by_subject.values_mut().for_each(|v| v.sort());
    let got = |subject: &str| by_subject.get(subject).cloned().unwrap_or_default();
    report.expect(
        got("New publish history: Winter catalogue <script>alert('x')</script>") == acme,
        "acme's subscribers got the acme history, once each",
    );
    let pricing = got("New publish history: Pricing update");
    report.expect(
        pricing == globex || pricing == globex_without_alan,
        "globex's subscribers got the globex history, once each (Alan too if his deletion came after the listing)",
    );
    report.expect(
        by_subject.len() == 2,
        "no email for the updated history (filtered out by the subscription)",
    );

    // 2. A lifecycle action, delivered as EventBridge does.
    // The template gives an instance 420 s; locally 6 s, checked every second, keep the run short.
    let fast = [
        ("HEALTHCHECK_DEADLINE_SECONDS", "6"),
        ("HEALTHCHECK_INTERVAL_SECONDS", "1"),
    ];
    println!(
        "\n== EventBridge launch lifecycle actions -> lifecycle-hook-completer (locally: 6 s deadline, 1 s interval)"
    );
    let mut lifecycle = start_with("lifecycle-hook-completer", &fast);
    let mut verdicts = Vec::new();
    for (file, why) in [
        ("eventbridge-launch-lifecycle-action.json", "healthy instance"),
        (
            "sns-launch-lifecycle-action.json",
            "instance whose application never answers",
        ),
    ] {
        let outcome = lifecycle
            .invoke(&fresh_lifecycle_event(&format!("lifecycle-hook-completer/{file}")))
            .response();
        println!(
            "  {why}: {} -> {} after {} check(s) in {:.1} s",
            outcome["instance"].as_str().unwrap_or("?"),
            outcome["result"].as_str().unwrap_or("?"),
            outcome["attempts"],
            outcome["elapsedSeconds"].as_f64().unwrap_or(0.0)
        );
        verdicts.push(outcome["result"].as_str().unwrap_or_default().to_owned());
    }
    let completed: Vec<String> = stand_in
        .completed()
        .iter()
        .map(|c| format!("{} {}", c.instance_id, c.result))
        .collect();
    println!("  CompleteLifecycleAction: {}", completed.join(", "));
    report.expect(
        verdicts == ["CONTINUE", "ABANDON"],
        "the healthy instance continued, the broken one abandoned",
    );
    processes.push(lifecycle);

    // 3. The scale-out alarm, delivered as SNS does, then the group's launch result as EventBridge does.
    println!(
        "\n== CPU alarm (SNS) and launch result (EventBridge) -> alarm-instance-updater -> {}",
        stack.restriction_parameter
    );
    let mut updater = start("alarm-instance-updater");
    let mut timeline = Vec::new();
    for (file, what) in [
        ("sns-alarm-cpu-high.json", "cpu_high ALARM"),
        ("eventbridge-launch-successful.json", "instance launch successful"),
    ] {
        let summary = updater
            .invoke(&sample_event(&format!("alarm-instance-updater/{file}")))
            .response();
        let value = get_parameter(&ssm, &stack.restriction_parameter).await;
        let restricted = value["restricted"].as_bool().unwrap_or(false);
        let state = if restricted {
            format!("restricted until {}", value["expiresAt"].as_str().unwrap_or("?"))
        } else {
            "not restricted".to_owned()
        };
        let why = summary["steps"][0]["why"]
            .as_str()
            .unwrap_or("?")
            .chars()
            .take(90)
            .collect::<String>();
        println!(
            "  {what:<28} -> {state}{}  ({why})",
            if summary["written"] == true { ", written" } else { "" }
        );
        timeline.push(restricted);
    }
    report.expect(
        timeline == [true, false],
        "restricted during the scale-out, lifted once the group settled",
    );
    processes.push(updater);

    // 4. The reconciliation: Postgres holds the users as they are; Cognito has drifted.
    println!("\n== users table (PostgreSQL) -> cognito-reconcile -> Cognito: dry run, then repair");
    let users_db = UsersDb::start();
    // The users as they are: as the events above made them, but Grace married and the event for it was lost.
    let rows = crate::fixtures::users_table_rows();
    let borrowed: Vec<crate::users_db::UserRow> = rows
        .iter()
        .map(|(e, f, l, t)| (e.as_str(), f.as_deref(), l.as_deref(), t.as_deref()))
        .collect();
    users_db.insert(&borrowed);
    // Edsger's tenant was removed in the console by mistake.
    cognito
        .admin_delete_user_attributes()
        .user_pool_id(&stack.user_pool_id)
        .username("edsger@example.com")
        .user_attribute_names("custom:_tenant")
        .send()
        .await
        .expect("drift Edsger");
    println!(
        "  users table: {} rows; drift: Grace's surname is stale, Edsger's tenant is missing, Hedy has no Cognito user",
        rows.len()
    );
    let before = snapshot(&cognito, &stack.user_pool_id).await;
    // As in AWS: the URL has no password; the operator keeps it in an SSM SecureString the function reads at init.
    let password_parameter = stack
        .function("cognito-reconcile")
        .environment
        .iter()
        .find(|(k, _)| k == "DATABASE_PASSWORD_PARAMETER")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    crate::fixtures::put_secret(&ssm, &password_parameter, crate::users_db::PASSWORD).await;
    let database_url = users_db.url_without_password();
    let mut reconcile = start_with("cognito-reconcile", &[("DATABASE_URL", database_url.as_str())]);
    let counts = |s: &serde_json::Value| {
        [
            "scanned",
            "inSync",
            "drifted",
            "repaired",
            "missingInPool",
            "notInDatabase",
            "failed",
        ]
        .map(|k| format!("{k} {}", s[k]))
        .join(", ")
    };
    let dry = reconcile.invoke(&json!({"dryRun": true})).response();
    println!("  dry run: {}", counts(&dry));
    for drift in dry["driftedUsers"].as_array().into_iter().flatten() {
        let differences: Vec<String> = drift["differences"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                format!(
                    "{}: {} -> {}",
                    d["attribute"].as_str().unwrap_or("?"),
                    d["cognito"].as_str().unwrap_or("-"),
                    d["database"].as_str().unwrap_or("-")
                )
            })
            .collect();
        println!(
            "    drifted  {}  {}",
            drift["user"].as_str().unwrap_or("?"),
            differences.join(", ")
        );
    }
    for missing in dry["missingUsers"].as_array().into_iter().flatten() {
        println!("    missing in the pool  {}", missing.as_str().unwrap_or("?"));
    }
    report.expect(
        dry["drifted"] == 2 && dry["missingInPool"] == 1 && dry["repaired"] == 0,
        "the dry run finds Grace and Edsger drifted, Hedy missing, and repairs nothing",
    );
    report.expect(
        snapshot(&cognito, &stack.user_pool_id).await == before,
        "the dry run changed nothing in Cognito",
    );
    let repair = reconcile.invoke(&json!({"dryRun": false})).response();
    println!("  repair:  {}", counts(&repair));
    let after = snapshot(&cognito, &stack.user_pool_id).await;
    println!("  Cognito attributes, before -> after:");
    print_changes(&before, &after);
    let attr = |email: &str, name: &str| after[email].1.get(name).cloned().unwrap_or_default();
    report.expect(
        repair["repaired"] == 2 && repair["complete"] == true,
        "the repair run repairs both, in one invocation",
    );
    report.expect(
        attr("grace@example.com", "family_name") == "Murray" && attr("edsger@example.com", "custom:_tenant") == "acme",
        "Grace is Murray and Edsger is back in acme",
    );
    let hedy = cognito
        .admin_get_user()
        .user_pool_id(&stack.user_pool_id)
        .username("hedy@example.com")
        .send()
        .await;
    report.expect(hedy.is_err(), "Hedy is not created (sign-up creates users)");
    processes.push(reconcile);

    // 5. One-click unsubscribe: Ada follows her email's List-Unsubscribe link; the next history does not email her.
    println!("\n== one-click unsubscribe (RFC 8058): an email's List-Unsubscribe link -> unsubscribe (Function URL)");
    let emails = crate::mail::sent_emails(&proxy);
    let ada_email = emails.iter().find(|e| e.destinations == ["ada@example.com"]);
    report.expect(
        ada_email.is_some_and(|e| {
            e.header("List-Unsubscribe-Post") == Some("List-Unsubscribe=One-Click")
                && e.header("List-Id").is_some_and(|id| id.contains("acme"))
        }),
        "Ada's email carries List-Unsubscribe, List-Unsubscribe-Post and List-Id",
    );
    let link = ada_email.and_then(|e| e.unsubscribe_url()).unwrap_or_default();
    println!(
        "  List-Unsubscribe of {}: {}...",
        who("ada@example.com"),
        link.chars().take(60).collect::<String>()
    );
    let mut unsubscribe = start("unsubscribe");
    let page = unsubscribe
        .invoke(&crate::function_url_request("GET", &link, None))
        .response();
    println!("  GET  (a link scanner)      -> {}", page["statusCode"]);
    let flag = |snapshot: &Snapshot, email: &str| {
        snapshot[email]
            .1
            .get("custom:subPublishHistory")
            .cloned()
            .unwrap_or_default()
    };
    report.expect(
        page["statusCode"] == 200 && flag(&snapshot(&cognito, &stack.user_pool_id).await, "ada@example.com") == "true",
        "a GET shows the page and changes nothing",
    );
    let done = unsubscribe
        .invoke(&crate::function_url_request(
            "POST",
            &link,
            Some("List-Unsubscribe=One-Click"),
        ))
        .response();
    println!("  POST List-Unsubscribe=One-Click -> {}", done["statusCode"]);
    let now = snapshot(&cognito, &stack.user_pool_id).await;
    println!(
        "  custom:subPublishHistory: {} {}, {} {}",
        who("ada@example.com"),
        flag(&now, "ada@example.com"),
        who("grace@example.com"),
        flag(&now, "grace@example.com")
    );
    report.expect(
        done["statusCode"] == 200 && flag(&now, "ada@example.com") == "false" && flag(&now, "grace@example.com") == "1",
        "the one-click POST unsubscribed Ada, and only Ada",
    );
    // The next publish history of acme, to a new instance (an instance that listed the pool before keeps the old list
    // for up to SUBSCRIBER_CACHE_TTL_SECONDS).
    let before = crate::mail::sent_emails(&proxy).len();
    let mut notifier = start("publish-history-email");
    let message = json!({"event": "records_created", "table": "publish_history", "records": [{"id": "ph-1002", "_tenant": "acme", "title": "Spring roadmap"}]});
    let envelope = shared::testing::sns_envelope(&message.to_string(), "records_created", "publish_history");
    notifier
        .invoke(&crate::sqs_event(
            "local-publish-history-email",
            &[("m-next", envelope)],
        ))
        .response();
    let next: Vec<String> = crate::mail::sent_emails(&proxy)
        .split_off(before)
        .into_iter()
        .flat_map(|e| e.destinations)
        .collect();
    println!(
        "  next acme history emailed: {}",
        next.iter().map(|e| who(e)).collect::<Vec<_>>().join(", ")
    );
    report.expect(
        next == ["grace@example.com"],
        "the next acme publish history emails Grace, not Ada",
    );
    processes.push(unsubscribe);
    processes.push(notifier);

    // 5b. SES feedback: Grace marks an acme email as spam. SES's configuration set publishes the complaint to its
    // topic (moto sends no feedback, so the scenario publishes what SES would), SNS delivers it to ses-feedback's
    // queue in its envelope, and the next publish history skips her.
    println!("\n== SES feedback: a complaint -> the configuration set's topic -> SQS -> ses-feedback");
    let feedback = stack.event_source(
        &sqs,
        stack.function("ses-feedback").sqs.first().expect("an SQS event source"),
        start("ses-feedback"),
    );
    let complaint = json!({"eventType": "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": "grace@example.com"}], "complaintFeedbackType": "abuse", "timestamp": chrono::Utc::now().to_rfc3339()},
        "mail": {"messageId": "0102019ad1c0-local", "destination": ["grace@example.com"], "tags": {"ses:configuration-set": ["local-event-workers"], "tenant": ["acme"], "row": ["ph-1002"]}}});
    sns.publish()
        .topic_arn(&stack.topics["SesFeedbackTopic"])
        .message(complaint.to_string())
        .send()
        .await
        .expect("publish to the feedback topic");
    println!(
        "  published  a complaint (abuse) from {} about acme's row ph-1002",
        who("grace@example.com")
    );
    let unsubscribed = wait_until(Duration::from_secs(30), || async {
        flag(&snapshot(&cognito, &stack.user_pool_id).await, "grace@example.com") == "false"
    })
    .await;
    println!(
        "  custom:subPublishHistory: {} {}",
        who("grace@example.com"),
        flag(&snapshot(&cognito, &stack.user_pool_id).await, "grace@example.com")
    );
    report.expect(unsubscribed, "Grace's spam complaint unsubscribed her");
    let stats = feedback.stats();
    report.expect(stats.failures == 0, "ses-feedback: no record left for redelivery");
    processes.push(feedback.stop().await);
    let before = crate::mail::sent_emails(&proxy).len();
    let mut notifier = start("publish-history-email");
    let message = json!({"event": "records_created", "table": "publish_history", "records": [{"id": "ph-1003", "_tenant": "acme", "title": "Summer plans"}]});
    let envelope = shared::testing::sns_envelope(&message.to_string(), "records_created", "publish_history");
    let answered = notifier
        .invoke(&crate::sqs_event(
            "local-publish-history-email",
            &[("m-after-complaint", envelope)],
        ))
        .response();
    report.expect(
        answered["batchItemFailures"] == json!([]),
        "the row after the complaint was handled, not handed back",
    );
    let after_complaint: Vec<String> = crate::mail::sent_emails(&proxy)
        .split_off(before)
        .into_iter()
        .flat_map(|e| e.destinations)
        .collect();
    println!(
        "  next acme history emailed: {}",
        if after_complaint.is_empty() {
            "nobody".to_owned()
        } else {
            after_complaint.join(", ")
        }
    );
    report.expect(
        after_complaint.is_empty(),
        "after Ada's unsubscribe and Grace's complaint, acme's next publish history emails neither",
    );
    processes.push(notifier);

    // 6. What ended in the dead-letter queues.
    println!("\n== dead-letter queues");
    let mut dead_counts = HashMap::new();
    let mut dlqs: Vec<(&String, &crate::stack::Queue)> = stack
        .queues
        .iter()
        .filter(|(id, _)| id.contains("DeadLetter") || id.contains("FailedEvents"))
        .collect();
    dlqs.sort_by_key(|(id, _)| id.as_str());
    for (logical_id, queue) in dlqs {
        let messages = peek_all(&sqs, &queue.url).await;
        println!("  {}: {} message(s)", queue.name, messages.len());
        for message in &messages {
            println!("    - {}", dead_letter_info(message).1);
        }
        // Records, not messages: a dead-letter send that the SDK retried after a slow answer may store one record
        // twice (SQS is at least once too); a redrive handles both copies like any redelivery.
        let records: std::collections::BTreeSet<String> = messages.iter().map(|m| dead_letter_info(m).0).collect();
        dead_counts.insert(logical_id.clone(), records.len());
    }
    report.expect(
        dead_counts.get("CognitoAttributeSyncDeadLetterQueue") == Some(&1),
        "the malformed record is in cognito-attribute-sync's dead-letter queue",
    );
    report.expect(
        dead_counts.values().sum::<usize>() == 1,
        "no other record in any dead-letter queue",
    );
    let leaked = processes
        .iter()
        .flat_map(|p| p.output())
        .filter(|l| SAMPLE_USERS.iter().any(|u| l.contains(u.email)))
        .count();
    report.expect(leaked == 0, "no email address in full in any function's logs");
    let denials = proxy.take_denials();
    report.expect(
        denials.is_empty(),
        format!("no call denied by a function's policy ({} denied)", denials.len()),
    );
    for denial in &denials {
        println!("  denied  {}: {}", denial.operation, denial.message);
    }
    // A throttled call is retried (the SDK's and the functions' own retries); what matters is that nothing was lost.
    for (function, refusal) in proxy.refusals() {
        println!(
            "  throttled or refused  {function}: {} {}",
            refusal.code, refusal.message
        );
    }

    println!();
    if report.problems.is_empty() {
        println!("everything happened as expected");
    } else {
        println!("{} expectation(s) failed:", report.problems.len());
        for problem in &report.problems {
            println!("  - {problem}");
        }
    }
    drop(processes);
    Running {
        moto,
        proxy,
        stack,
        report,
        users_db,
    }
}
