//! The main job, locally: every function as a real binary (through the Lambda Runtime API) against moto, on the
//! sample events in events/, with a short report of what changed. Exits non-zero when anything did not happen as
//! expected. Run it with `bash tests/run-local.sh` (which installs moto and builds the binaries first).
//! `--keep` leaves moto running afterwards for `cargo lambda invoke` by hand.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use e2e_harness::fixtures::{
    create_launch_hook, fresh_lifecycle_event, create_worker_group, get_parameter, put_parameter, INITIAL_RESTRICTION, RESTRICTION_PARAMETER, WORKER_GROUP,
    create_idempotency_table, create_queue, create_sample_users, create_user_pool, eligible_subscribers, peek_all, sample_event, user_state,
    verify_sender, SAMPLE_USERS, SENDER_ADDRESS,
};
use e2e_harness::lifecycle_stand_in::LifecycleStandIn;
use e2e_harness::proxy::RecordingProxy;
use e2e_harness::moto::Moto;
use e2e_harness::runtime::FunctionProcess;
use e2e_harness::{batch_failures, dead_letter_info, local_aws_env, sdk_config};
use shared::logging::mask_email;

/// Collects what went against expectations; the exit code says whether anything did.
#[derive(Default)]
struct Report {
    problems: Vec<String>,
}

impl Report {
    fn expect(&mut self, ok: bool, what: impl Into<String>) {
        let what = what.into();
        if ok {
            println!("    ok    {what}");
        } else {
            println!("    FAIL  {what}");
            self.problems.push(what);
        }
    }
}

fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| e2e_harness::workspace_root().join("target"));
    let path = target.join("debug").join(name);
    if !path.exists() {
        eprintln!("{} not built: run `cargo build --bins` (tests/run-local.sh does)", path.display());
        std::process::exit(2);
    }
    path
}

/// A sample user as the report names them: masked address (as in the functions' logs) and tenant.
fn who(email: &str) -> String {
    let tenant = SAMPLE_USERS.iter().find(|u| u.email == email).map(|u| u.tenant).filter(|t| !t.is_empty()).unwrap_or("no tenant");
    format!("{} ({tenant})", mask_email(email))
}

fn failures(response: &serde_json::Value) -> usize {
    batch_failures(response).len()
}

/// Prints what a dead-letter queue holds and returns how many messages.
async fn print_dead_letters(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> usize {
    let dead = peek_all(sqs, queue_url).await;
    println!("  dead-letter queue: {} message(s)", dead.len());
    for message in &dead {
        println!("    - {}", dead_letter_info(message).1);
    }
    dead.len()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

type Snapshot = HashMap<&'static str, (bool, HashMap<String, String>)>;

async fn snapshot(cognito: &aws_sdk_cognitoidentityprovider::Client, pool_id: &str) -> Snapshot {
    let mut users = HashMap::new();
    for user in SAMPLE_USERS {
        users.insert(user.email, user_state(cognito, pool_id, user.email).await);
    }
    users
}

const SYNCED: [&str; 3] = ["given_name", "family_name", "custom:_tenant"];

fn print_changes(before: &Snapshot, after: &Snapshot) {
    let mut any = false;
    for user in SAMPLE_USERS {
        let (enabled_before, old) = &before[user.email];
        let (enabled_after, new) = &after[user.email];
        for name in SYNCED {
            let (o, n) = (old.get(name).map(String::as_str).unwrap_or("-"), new.get(name).map(String::as_str).unwrap_or("-"));
            if o != n {
                println!("    {:<30} {name}: {o} -> {n}", who(user.email));
                any = true;
            }
        }
        if enabled_before != enabled_after {
            println!("    {:<30} enabled: {enabled_before} -> {enabled_after}", who(user.email));
            any = true;
        }
    }
    if !any {
        println!("    (no change in Cognito)");
    }
}

async fn cognito_attribute_sync(moto: &Moto, report: &mut Report) -> Vec<(String, String)> {
    println!("\n== cognito-attribute-sync: user rows -> Cognito attributes");
    let sdk = sdk_config(&moto.endpoint).await;
    let cognito = aws_sdk_cognitoidentityprovider::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let pool_id = create_user_pool(&cognito, "local-users").await;
    create_sample_users(&cognito, &pool_id).await;
    let dlq_url = create_queue(&sqs, "local-cognito-attribute-sync-dlq").await;
    let settings = owned(&[("USER_POOL_ID", &pool_id), ("DEAD_LETTER_QUEUE_URL", &dlq_url)]);
    let mut env = local_aws_env(&moto.endpoint);
    env.extend(settings.iter().cloned());
    let mut function = FunctionProcess::start(&binary("cognito-attribute-sync"), &env);

    for file in ["sns-envelope-batch.json", "raw-delivery.json", "user-deleted.json", "poison-record.json"] {
        let event = sample_event(&format!("cognito-attribute-sync/{file}"));
        let records = event["Records"].as_array().map(Vec::len).unwrap_or(0);
        let before = snapshot(&cognito, &pool_id).await;
        let response = function.invoke(&event).response();
        let after = snapshot(&cognito, &pool_id).await;
        println!("  events/cognito-attribute-sync/{file}: {records} records, batchItemFailures: {}", failures(&response));
        print_changes(&before, &after);
    }
    let state = snapshot(&cognito, &pool_id).await;
    let attr = |email: &str, name: &str| state[email].1.get(name).cloned().unwrap_or_default();
    let dead = print_dead_letters(&sqs, &dlq_url).await;
    report.expect(attr("ada@example.com", "family_name") == "Lovelace", "Ada's family_name is Lovelace");
    report.expect(attr("katherine@example.com", "custom:_tenant") == "globex", "Katherine joined tenant globex");
    report.expect(!state["alan@example.com"].0, "Alan's deleted account is disabled");
    report.expect(attr("grace@example.com", "family_name") == "Hopper", "Grace is unchanged");
    report.expect(dead == 2, "the two poison records are in the dead-letter queue");
    settings
}

async fn publish_history_email(moto: &Moto, report: &mut Report) -> Vec<(String, String)> {
    println!("\n== publish-history-email: created publish history -> emails to the tenant's subscribers");
    // Sends are read off a recording proxy in front of the local SES.
    let proxy = RecordingProxy::start(&moto.endpoint);
    let sdk = sdk_config(&moto.endpoint).await;
    let cognito = aws_sdk_cognitoidentityprovider::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    verify_sender(&aws_sdk_ses::Client::new(&sdk)).await;
    let pool_id = create_user_pool(&cognito, "local-subscribers").await;
    create_sample_users(&cognito, &pool_id).await;
    let table = "local-publish-history-email-idempotency";
    create_idempotency_table(&aws_sdk_dynamodb::Client::new(&sdk), table).await;
    let dlq_url = create_queue(&sqs, "local-publish-history-email-dlq").await;
    let settings = owned(&[
        ("USER_POOL_ID", &pool_id),
        ("SENDER_ADDRESS", SENDER_ADDRESS),
        ("APP_BASE_URL", "https://app.navlab.online"),
        ("IDEMPOTENCY_TABLE", table),
        ("DEAD_LETTER_QUEUE_URL", &dlq_url),
    ]);
    let mut env = local_aws_env(&proxy.endpoint);
    env.extend(settings.iter().cloned());
    let mut function = FunctionProcess::start(&binary("publish-history-email"), &env);

    let mut sends_before = 0;
    for file in ["sns-envelope-batch.json", "sns-envelope-batch.json", "raw-delivery.json", "mixed-batch.json"] {
        let event = sample_event(&format!("publish-history-email/{file}"));
        let records = event["Records"].as_array().map(Vec::len).unwrap_or(0);
        let response = function.invoke(&event).response();
        let sends = proxy.calls_of("SendEmail");
        println!("  events/publish-history-email/{file}: {records} records, batchItemFailures: {}", failures(&response));
        if sends.len() == sends_before {
            println!("    (no email sent)");
        }
        for call in &sends[sends_before..] {
            let form = call.form();
            let to = form.get("Destination.ToAddresses.member.1").cloned().unwrap_or_default();
            println!("    email to {:<30} {}", who(&to), form.get("Message.Subject.Data").cloned().unwrap_or_default());
        }
        sends_before = sends.len();
    }
    let dead = print_dead_letters(&sqs, &dlq_url).await;
    let expected = 2 * eligible_subscribers("acme").len() + eligible_subscribers("globex").len() + eligible_subscribers("acme").len();
    report.expect(sends_before == expected, format!("{expected} emails: one per eligible subscriber per row, none on redelivery"));
    report.expect(dead == 2, "the two poison records are in the dead-letter queue");
    report.expect(proxy.calls_of("ListUsers").len() == 1, "the user pool was listed once (subscriber cache)");
    settings
}

async fn alarm_instance_updater(moto: &Moto, report: &mut Report) -> Vec<(String, String)> {
    println!("\n== alarm-instance-updater: scale-out alarm -> background removal restricted, lifted once settled");
    let sdk = sdk_config(&moto.endpoint).await;
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    create_worker_group(&aws_sdk_autoscaling::Client::new(&sdk), WORKER_GROUP, 2).await;
    put_parameter(&ssm, RESTRICTION_PARAMETER, INITIAL_RESTRICTION).await;
    let settings = owned(&[
        ("RESTRICTION_PARAMETER", RESTRICTION_PARAMETER),
        ("AUTOSCALING_GROUP_NAME", WORKER_GROUP),
        ("RESTRICT_ON_ALARMS", "cpu_high"),
        ("RESTRICTION_MAX_SECONDS", "900"),
    ]);
    let mut env = local_aws_env(&moto.endpoint);
    env.extend(settings.iter().cloned());
    let mut function = FunctionProcess::start(&binary("alarm-instance-updater"), &env);
    let mut timeline = Vec::new();
    for file in ["sns-alarm-cpu-high.json", "sns-alarm-disk-full.json", "eventbridge-launch-successful.json", "sns-ok-cpu-high.json"] {
        let summary = function.invoke(&sample_event(&format!("alarm-instance-updater/{file}"))).response();
        let value = get_parameter(&ssm, RESTRICTION_PARAMETER).await;
        let restricted = value["restricted"].as_bool().unwrap_or(false);
        let state = if restricted { format!("restricted until {}", value["expiresAt"].as_str().unwrap_or("?")) } else { "not restricted".into() };
        let why = summary["steps"].as_array().and_then(|s| s.first()).and_then(|s| s["why"].as_str()).unwrap_or("?").to_owned();
        println!("  events/alarm-instance-updater/{file}");
        println!("    {RESTRICTION_PARAMETER}: {state}{}", if summary["written"] == true { " (written)" } else { "" });
        println!("    why: {}", why.chars().take(110).collect::<String>());
        timeline.push(restricted);
    }
    report.expect(timeline == [true, true, false, false], "restricted by cpu_high, disk_full ignored, lifted once the group settled");
    settings
}

async fn lifecycle_hook_completer(moto: &Moto, report: &mut Report) -> Vec<(String, String)> {
    println!("\n== lifecycle-hook-completer: launching instance -> health check through SSM -> CONTINUE or ABANDON");
    // moto lacks the lifecycle completion calls: the harness's stand-in answers them on a proxy in front of moto,
    // and makes the health check of the second instance fail, as an application that never comes up.
    let proxy = RecordingProxy::start(&moto.endpoint);
    let stand_in = LifecycleStandIn::install(&proxy);
    stand_in.make_unhealthy("i-0badc0ffee0d15ea5");
    let sdk = sdk_config(&moto.endpoint).await;
    let autoscaling = aws_sdk_autoscaling::Client::new(&sdk);
    let group = "workers-launch";
    create_worker_group(&autoscaling, group, 1).await;
    create_launch_hook(&autoscaling, group).await;
    let settings = owned(&[("HEALTHCHECK_INTERVAL_SECONDS", "1"), ("HEALTHCHECK_DEADLINE_SECONDS", "5"), ("ON_UNHEALTHY", "ABANDON")]);
    let mut env = local_aws_env(&proxy.endpoint);
    env.extend(settings.iter().cloned());
    let mut function = FunctionProcess::start(&binary("lifecycle-hook-completer"), &env);
    let mut verdicts = Vec::new();
    for file in ["eventbridge-launch-lifecycle-action.json", "sns-launch-lifecycle-action.json", "eventbridge-warm-pool-lifecycle-action.json"] {
        let outcome = function.invoke(&fresh_lifecycle_event(&format!("lifecycle-hook-completer/{file}"))).response();
        println!("  events/lifecycle-hook-completer/{file}");
        println!(
            "    {} -> {} after {} check(s), {:.1} s: {}",
            outcome["instance"].as_str().unwrap_or("?"),
            outcome["result"].as_str().unwrap_or("?"),
            outcome["attempts"],
            outcome["elapsedSeconds"].as_f64().unwrap_or(0.0),
            outcome["reason"].as_str().unwrap_or("").chars().take(100).collect::<String>()
        );
        verdicts.push(outcome["result"].as_str().unwrap_or("").to_owned());
    }
    let completed: Vec<String> = stand_in.completed().iter().map(|c| format!("{} {}", c.instance_id, c.result)).collect();
    println!("  CompleteLifecycleAction calls: {}", completed.join(", "));
    report.expect(verdicts == ["CONTINUE", "ABANDON", "CONTINUE"], "healthy instance continued, broken one abandoned, warm pool continued");
    report.expect(completed.len() == 3, "each lifecycle action completed exactly once");
    settings
}

#[tokio::main]
async fn main() -> ExitCode {
    let keep = std::env::args().any(|a| a == "--keep");
    let moto = Moto::start();
    println!("local AWS (moto) listening on {}", moto.endpoint);
    let mut report = Report::default();
    let mut settings = cognito_attribute_sync(&moto, &mut report).await;
    settings.extend(publish_history_email(&moto, &mut report).await);
    settings.extend(lifecycle_hook_completer(&moto, &mut report).await);
    settings.extend(alarm_instance_updater(&moto, &mut report).await);

    println!();
    if report.problems.is_empty() {
        println!("everything happened as expected");
    } else {
        println!("{} expectation(s) failed:", report.problems.len());
        for problem in &report.problems {
            println!("  - {problem}");
        }
    }
    if keep {
        println!("\nThe local stack stays up. In another shell, for `cargo lambda watch` / `cargo lambda invoke`:");
        for (key, value) in local_aws_env(&moto.endpoint) {
            println!("  export {key}={value}");
        }
        println!("and the functions' own settings (both use USER_POOL_ID and DEAD_LETTER_QUEUE_URL: pick one function's values):");
        for (key, value) in &settings {
            println!("  {key}='{value}'");
        }
        println!("Press Enter to stop it.");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
