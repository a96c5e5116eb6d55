//! Benchmarks of the figures that matter for these functions: cold start (init) time, peak memory, AWS calls per
//! unit of work, and package size. Run with `bash tests/bench.sh` (release binaries, against moto on loopback).
//! Prints figures; asserts nothing (goals live here, not in timed tests).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use e2e_harness::fixtures::{fresh_lifecycle_event, sample_event};
use e2e_harness::lifecycle_stand_in::LifecycleStandIn;
use e2e_harness::moto::Moto;
use e2e_harness::proxy::RecordingProxy;
use e2e_harness::runtime::FunctionProcess;
use e2e_harness::stack::provision;
use e2e_harness::{local_aws_env, workspace_root};

const COLD_STARTS: usize = 5;

/// Each function with a realistic event and what one unit of its work is.
fn workloads(ada_unsubscribe_url: &str) -> Vec<(&'static str, serde_json::Value, &'static str)> {
    vec![
        ("cognito-attribute-sync", sample_event("cognito-attribute-sync/sns-envelope-batch.json"), "3 records: 1 user changed, 1 unchanged, 1 other table"),
        ("publish-history-email", sample_event("publish-history-email/sns-envelope-batch.json"), "2 rows: 4 emails to 2 tenants' subscribers"),
        ("lifecycle-hook-completer", fresh_lifecycle_event("lifecycle-hook-completer/eventbridge-launch-lifecycle-action.json"), "1 launch, healthy at once"),
        ("alarm-instance-updater", sample_event("alarm-instance-updater/sns-alarm-cpu-high.json"), "1 ALARM: restriction written"),
        (
            "unsubscribe",
            e2e_harness::function_url_request("POST", ada_unsubscribe_url, Some("List-Unsubscribe=One-Click")),
            "1 one-click POST: the user unsubscribed",
        ),
    ]
}

/// Ada's one-click link, signed with the local stack's key as publish-history-email signs it.
async fn ada_unsubscribe_url(moto: &Moto, stack: &e2e_harness::stack::LocalStack) -> String {
    let cognito = aws_sdk_cognitoidentityprovider::Client::new(&e2e_harness::sdk_config(&moto.endpoint).await);
    let ada = cognito.admin_get_user().user_pool_id(&stack.user_pool_id).username("ada@example.com").send().await.expect("Ada");
    let sub = ada.user_attributes().iter().find(|a| a.name() == "sub").and_then(|a| a.value()).unwrap_or_default().to_owned();
    let key = shared::unsubscribe::SigningKey::new(e2e_harness::stack::LOCAL_UNSUBSCRIBE_KEY).expect("the local key");
    format!("https://unsubscribe.local/?token={}", key.sign(&sub, "acme", chrono::Utc::now().timestamp()))
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// The arm64 package (bootstrap) that `sam build` produced, if any: (bytes, gzip -9 bytes).
fn package_size(binary: &str) -> Option<(u64, u64)> {
    let candidates =
        [workspace_root().join("target/sam/lambda").join(binary).join("bootstrap"), workspace_root().join("target/lambda").join(binary).join("bootstrap")];
    let path = candidates.iter().find(|p| p.exists())?;
    let size = std::fs::metadata(path).ok()?.len();
    let gzip = std::process::Command::new("gzip").args(["-9", "-c"]).arg(path).output().ok()?;
    Some((size, gzip.stdout.len() as u64))
}

/// Rows and pool users of the reconciliation benchmark, and how many of them have drifted.
const RECONCILE_USERS: usize = 10_000;
const RECONCILE_DRIFTED: usize = 100;

/// cognito-reconcile at scale: 10,000 rows in PostgreSQL and 10,000 pool users, 1 % drifted; one repair run.
async fn reconcile_at_scale(binaries: &std::path::Path, moto: &Moto, proxy: &RecordingProxy, stack: &e2e_harness::stack::LocalStack) {
    use futures::StreamExt;
    let sdk = e2e_harness::sdk_config(&moto.endpoint).await;
    let cognito = aws_sdk_cognitoidentityprovider::Client::new(&sdk);
    let pool = &stack.user_pool_id;
    let started = std::time::Instant::now();
    futures::stream::iter(0..RECONCILE_USERS)
        // moto's user pools fail under concurrent writes (an HTML 500 now and then): one at a time.
        .for_each_concurrent(1, |i| {
            let cognito = cognito.clone();
            async move {
                let email = format!("bench{i:05}@example.com");
                let attribute = |n: &str, v: &str| aws_sdk_cognitoidentityprovider::types::AttributeType::builder().name(n).value(v).build().unwrap();
                cognito
                    .admin_create_user()
                    .user_pool_id(pool)
                    .username(&email)
                    .message_action(aws_sdk_cognitoidentityprovider::types::MessageActionType::Suppress)
                    .user_attributes(attribute("email", &email))
                    .user_attributes(attribute("given_name", "Bench"))
                    .user_attributes(attribute("family_name", &format!("User{i}")))
                    .user_attributes(attribute("custom:_tenant", "acme"))
                    .send()
                    .await
                    .expect("create a bench user");
            }
        })
        .await;
    let db = e2e_harness::users_db::UsersDb::start();
    // Every hundredth row has a new surname Cognito does not know yet.
    db.sql(&format!(
        r#"INSERT INTO users (email, "firstName", "lastName", "_tenant")
           SELECT format('bench%s@example.com', lpad(i::text, 5, '0')), 'Bench',
                  CASE WHEN i % {} = 0 THEN format('Renamed%s', i) ELSE format('User%s', i) END, 'acme'
           FROM generate_series(0, {}) AS i"#,
        RECONCILE_USERS / RECONCILE_DRIFTED,
        RECONCILE_USERS - 1
    ));
    println!("\ncognito-reconcile: {RECONCILE_USERS} rows and pool users, {RECONCILE_DRIFTED} drifted (set up in {:.0} s)", started.elapsed().as_secs_f64());
    let mut env = local_aws_env(&proxy.endpoint);
    env.extend(stack.function("cognito-reconcile").environment.iter().cloned());
    env.retain(|(k, _)| k != "DATABASE_PASSWORD_PARAMETER");
    env.push(("DATABASE_URL".into(), db.url()));
    env.push(("RECONCILE_MAX_WRITES_PER_SECOND".into(), "25".into()));
    let mut process = FunctionProcess::start(&binaries.join("cognito-reconcile"), &env);
    process.timeout = Duration::from_secs(300);
    let before = proxy.calls().len();
    let started = std::time::Instant::now();
    let summary = process.invoke(&serde_json::json!({"dryRun": false})).response();
    let wall = started.elapsed();
    let mut calls = BTreeMap::new();
    for call in &proxy.calls()[before..] {
        *calls.entry(call.operation.clone()).or_insert(0) += 1;
    }
    let breakdown: Vec<String> = calls.iter().map(|(op, n)| format!("{op} {n}")).collect();
    println!(
        "  one repair run: {:.1} s wall, peak RSS {:.1} MiB, complete {}, scanned {}, drifted {}, repaired {}",
        wall.as_secs_f64(),
        process.peak_rss_kib().unwrap_or(0) as f64 / 1024.0,
        summary["complete"],
        summary["scanned"],
        summary["drifted"],
        summary["repaired"]
    );
    println!("  AWS calls: {}", breakdown.join(", "));
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let binaries = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target/release"));
    let moto = Moto::start();
    let proxy = RecordingProxy::start(&moto.endpoint);
    let _stand_in = LifecycleStandIn::install(&proxy);
    let stack = provision(&moto.endpoint, e2e_harness::scenario::APP_BASE_URL, None).await;
    println!("binaries: {}  (x86_64 here; Lambda runs the arm64 build)", binaries.display());
    println!("{:<26} {:>14} {:>13} {:>10}  unit of work / calls by operation", "function", "init (median)", "peak RSS", "AWS calls");
    let ada_link = ada_unsubscribe_url(&moto, &stack).await;
    for (name, event, unit) in workloads(&ada_link) {
        let mut env = local_aws_env(&proxy.endpoint);
        env.extend(stack.function(name).environment.iter().cloned());
        let mut inits = Vec::new();
        let mut peak = 0;
        let mut first_calls = BTreeMap::new();
        for run in 0..COLD_STARTS {
            let mut process = FunctionProcess::start(&binaries.join(name), &env);
            inits.push(process.init_duration().expect("the function polled for an invocation"));
            let before = proxy.calls().len();
            process.invoke(&event).response();
            if run == 0 {
                for call in &proxy.calls()[before..] {
                    *first_calls.entry(call.operation.clone()).or_insert(0) += 1;
                }
            }
            peak = peak.max(process.peak_rss_kib().unwrap_or(0));
        }
        let total: usize = first_calls.values().sum();
        let breakdown: Vec<String> = first_calls.iter().map(|(op, n)| format!("{op} {n}")).collect();
        println!(
            "{:<26} {:>11.1} ms {:>9.1} MiB {:>10}  {unit}: {}",
            name,
            median(inits).as_secs_f64() * 1000.0,
            peak as f64 / 1024.0,
            total,
            breakdown.join(", ")
        );
    }
    reconcile_at_scale(&binaries, &moto, &proxy, &stack).await;
    println!();
    for (name, _, _) in workloads(&ada_link).into_iter().chain([("cognito-reconcile", serde_json::Value::Null, "")]) {
        match package_size(name) {
            Some((size, gzip)) => {
                println!("package {name:<26} bootstrap {:>6.1} MiB, zipped about {:>5.1} MiB (arm64)", size as f64 / 1048576.0, gzip as f64 / 1048576.0)
            }
            None => println!("package {name:<26} not built for arm64 yet (sam build, or the infra test, builds it)"),
        }
    }
}
