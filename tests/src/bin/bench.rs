//! Benchmarks of the figures that matter for these functions: cold start as Lambda bills it (init plus the first
//! invocation, over TLS, at the CPU share of each memory size), warm invocations, peak memory, AWS calls per unit of
//! work, the cost per million invocations at each size, and package size. Run with `bash tests/bench.sh`.
//!
//! Prints a Markdown report and writes it to `tests/bench-results.md` (checked in with its date and machine). It
//! asserts nothing: goals live here, read off the report, never in timed tests.
//!
//! `BENCH_RUNS` (cold starts per function and size, default 5), `BENCH_SIZES` (memory sizes in MB, default
//! 128,256,512,1024), `BENCH_VARIANTS` (extra `name=binary-dir` pairs, `;`-separated: other builds of the SDK floor,
//! for the levers),
//! `BENCH_ONLY` (function names: only those, beside the floors), `BENCH_SKIP_RECONCILE`, `BENCH_SKIP_FANOUT` and
//! `BENCH_SKIP_IMPORT` (skip the runs at scale), `BENCH_ONLY_FANOUT` / `BENCH_ONLY_IMPORT` (only
//! publish-history-email's,
//! or cognito-attribute-sync's, run at scale), `BENCH_FANOUT_LOGS` (a directory: that run's function logs go there),
//! `BENCH_NO_WARM_PAUSE` (the warm invocation right after the first, to look into the warm stall docs/performance.md
//! describes).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e_harness::cpu_share::CpuShare;
use e2e_harness::fixtures::{fresh_lifecycle_event, sample_event};
use e2e_harness::lifecycle_stand_in::LifecycleStandIn;
use e2e_harness::moto::Moto;
use e2e_harness::proxy::RecordingProxy;
use e2e_harness::runtime::FunctionProcess;
use e2e_harness::stack::{provision, LocalStack};
use e2e_harness::tls::{LocalCa, TlsFront};
use e2e_harness::{local_aws_env, workspace_root};
use serde_json::Value;

/// Lambda's arm64 price (eu-west-1 and us-east-1, first tier): per GB-second, and per million requests.
const PRICE_PER_GB_SECOND: f64 = 0.000_013_333_4;
const PRICE_PER_MILLION_REQUESTS: f64 = 0.20;
/// The budgets of docs/performance.md.
const INIT_BUDGET: f64 = 1.25;
const COLD_BUDGET: f64 = 1.5;
const RSS_BUDGET_MIB: f64 = 16.0;
const ZIP_BUDGET_MB: f64 = 4.0;
/// Longer than the CFS period of [`CpuShare`] (100 ms): after it, a cgroup's quota is unspent.
const QUOTA_REFILL: Duration = Duration::from_millis(250);
/// SES's send rate of an account out of the sandbox, at the start.
const PRODUCTION_SEND_RATE: f64 = 14.0;
/// The SDK floor's row name.
const FLOOR: &str = "sdk-floor";
/// The floor that makes its call at init as well: the comparison for functions that read a secret at init.
const FLOOR_CALL_AT_INIT: &str = "sdk-floor (call at init)";

/// The AWS services the functions call, each on its own loopback address so that, as against AWS's per-service
/// hosts, each gets its own connection and TLS handshake. `AWS_ENDPOINT_URL_<SERVICE>` names them.
const SERVICE_HOSTS: [(&str, &str); 6] = [
    ("SSM", "127.0.0.2"),
    ("COGNITO_IDENTITY_PROVIDER", "127.0.0.3"),
    ("SES", "127.0.0.4"),
    ("DYNAMODB", "127.0.0.5"),
    ("AUTO_SCALING", "127.0.0.6"),
    ("SQS", "127.0.0.7"),
];

/// One function (or floor build) and how to give it a unit of work.
struct Workload {
    name: String,
    binary: PathBuf,
    /// Which template function's environment it runs with.
    env_of: Option<&'static str>,
    /// Set on top of that.
    extra_env: Vec<(String, String)>,
    /// The floor it is compared with: the one that calls at init for a function that reads a secret at init.
    floor: &'static str,
    unit: &'static str,
    /// The event of the `n`th invocation: a fresh unit of work each time where the function would otherwise see a
    /// replay (new rows, newer versions), so every figure is of real work.
    event: Box<dyn Fn(u64) -> Value>,
}

/// The database events of an SQS batch made new: each row gets a new id and a newer version, and each user a new
/// surname, so the ordering guard and the once-only guard see new work, not a replay.
fn fresh_database_events(mut event: Value, n: u64) -> Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    for record in event["Records"].as_array_mut().into_iter().flatten() {
        let Some(body) = record["body"].as_str() else { continue };
        let Ok(mut envelope) = serde_json::from_str::<Value>(body) else {
            continue;
        };
        let Some(Ok(mut message)) = envelope["Message"].as_str().map(serde_json::from_str::<Value>) else {
            continue;
        };
        if message.get("occurredAt").is_some() {
            message["occurredAt"] = now.clone().into();
        }
        let rows: Vec<&mut Value> = if message.get("records").is_some() {
            message["records"].as_array_mut().into_iter().flatten().collect()
        } else {
            message.get_mut("record").into_iter().collect()
        };
        for row in rows {
            match &row["id"] {
                Value::Number(id) => row["id"] = (id.as_u64().unwrap_or(0) * 1000 + n).into(),
                Value::String(id) => row["id"] = format!("{id}-{n}").into(),
                _ => {}
            }
            if let Some(last) = row["lastName"].as_str() {
                row["lastName"] = format!("{}{n}", last.trim_end_matches(|c: char| c.is_ascii_digit())).into();
                row["updatedAt"] = now.clone().into();
            }
        }
        envelope["Message"] = message.to_string().into();
        record["body"] = envelope.to_string().into();
    }
    event
}

fn workloads(binaries: &Path, ada_unsubscribe_url: String, floor_variants: &[(String, PathBuf)]) -> Vec<Workload> {
    let fixed = |path: &'static str| Box::new(move |_| sample_event(path)) as Box<dyn Fn(u64) -> Value>;
    let mut all = vec![
        Workload {
            name: FLOOR.into(),
            binary: binaries.join(FLOOR),
            env_of: None,
            extra_env: vec![],
            floor: FLOOR,
            unit: "1 SSM GetParameter",
            event: Box::new(|_| serde_json::json!({})),
        },
        Workload {
            name: FLOOR_CALL_AT_INIT.into(),
            binary: binaries.join(FLOOR),
            env_of: None,
            extra_env: vec![("FLOOR_CALL_AT_INIT".into(), "1".into())],
            floor: FLOOR_CALL_AT_INIT,
            unit: "1 SSM GetParameter (and one at init)",
            event: Box::new(|_| serde_json::json!({})),
        },
        Workload {
            name: "cognito-attribute-sync".into(),
            binary: binaries.join("cognito-attribute-sync"),
            env_of: Some("cognito-attribute-sync"),
            extra_env: vec![],
            floor: FLOOR,
            unit: "3 records: 2 users renamed, 1 other table",
            event: Box::new(|n| fresh_database_events(sample_event("cognito-attribute-sync/sns-envelope-batch.json"), n)),
        },
        Workload {
            name: "publish-history-email".into(),
            binary: binaries.join("publish-history-email"),
            env_of: Some("publish-history-email"),
            extra_env: vec![],
            // Reads its SecureString at init.
            floor: FLOOR_CALL_AT_INIT,
            unit: "2 new rows: an email to each subscriber of 2 tenants (3 once Ada has unsubscribed in the unsubscribe row)",
            event: Box::new(|n| fresh_database_events(sample_event("publish-history-email/sns-envelope-batch.json"), n)),
        },
        Workload {
            name: "lifecycle-hook-completer".into(),
            binary: binaries.join("lifecycle-hook-completer"),
            env_of: Some("lifecycle-hook-completer"),
            extra_env: vec![],
            floor: FLOOR,
            unit: "1 launch, healthy at once",
            event: Box::new(|_| fresh_lifecycle_event("lifecycle-hook-completer/eventbridge-launch-lifecycle-action.json")),
        },
        Workload {
            name: "alarm-instance-updater".into(),
            binary: binaries.join("alarm-instance-updater"),
            env_of: Some("alarm-instance-updater"),
            extra_env: vec![],
            floor: FLOOR,
            unit: "1 ALARM during a scale-out: the restriction written (each ALARM pushes its expiry later)",
            event: fixed("alarm-instance-updater/sns-alarm-cpu-high.json"),
        },
        Workload {
            name: "unsubscribe".into(),
            binary: binaries.join("unsubscribe"),
            env_of: Some("unsubscribe"),
            extra_env: vec![],
            // Reads its SecureString at init.
            floor: FLOOR_CALL_AT_INIT,
            unit: "1 one-click POST (Ada's; after her first, a read and no write)",
            event: Box::new(move |_| e2e_harness::function_url_request("POST", &ada_unsubscribe_url, Some("List-Unsubscribe=One-Click"))),
        },
    ];
    for (variant, dir) in floor_variants {
        all.push(Workload {
            name: format!("{FLOOR} ({variant})"),
            binary: dir.join(FLOOR),
            env_of: None,
            extra_env: vec![],
            floor: FLOOR,
            unit: "1 SSM GetParameter",
            event: Box::new(|_| serde_json::json!({})),
        });
    }
    all
}

/// Ada's one-click link, signed with the local stack's key as publish-history-email signs it.
async fn ada_unsubscribe_url(moto: &Moto, stack: &LocalStack) -> String {
    let cognito = aws_sdk_cognitoidentityprovider::Client::new(&e2e_harness::sdk_config(&moto.endpoint).await);
    let ada = cognito
        .admin_get_user()
        .user_pool_id(&stack.user_pool_id)
        .username("ada@example.com")
        .send()
        .await
        .expect("Ada");
    let sub = ada
        .user_attributes()
        .iter()
        .find(|a| a.name() == "sub")
        .and_then(|a| a.value())
        .unwrap_or_default()
        .to_owned();
    let key = shared::unsubscribe::SigningKey::new(e2e_harness::stack::LOCAL_UNSUBSCRIBE_KEY).expect("the local key");
    format!(
        "https://unsubscribe.local/?token={}",
        key.sign(&sub, "acme", chrono::Utc::now().timestamp())
    )
}

fn median(values: &[Duration]) -> Duration {
    let mut values = values.to_vec();
    values.sort();
    values[values.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Lambda bills each phase rounded up to the millisecond; init is billed for a custom runtime (`provided.al2023`).
fn dollars_per_million(billed: Duration, memory_mb: u64) -> f64 {
    let billed_ms = ms(billed).ceil();
    1e6 * billed_ms / 1000.0 * memory_mb as f64 / 1024.0 * PRICE_PER_GB_SECOND + PRICE_PER_MILLION_REQUESTS
}

#[derive(Default)]
struct Samples {
    init: Vec<Duration>,
    first: Vec<Duration>,
    warm: Vec<Duration>,
    /// CPU time of init plus the first invocation, and of the warm invocation, where the cgroup counts it.
    cold_cpu: Vec<Duration>,
    warm_cpu: Vec<Duration>,
    peak_rss_kib: u64,
    first_calls: BTreeMap<String, usize>,
    warm_calls: usize,
}

impl Samples {
    fn cold(&self) -> Vec<Duration> {
        self.init.iter().zip(&self.first).map(|(i, f)| *i + *f).collect()
    }

    /// What the cold start adds to the work itself: cold minus warm, run by run.
    fn penalty(&self) -> Vec<Duration> {
        self.cold()
            .iter()
            .zip(&self.warm)
            .map(|(c, w)| c.saturating_sub(*w))
            .collect()
    }

    /// The same in CPU time, which the quota's timing does not blur (shown, not divided: the floor's is a fraction
    /// of a millisecond).
    fn cpu_penalty(&self) -> Vec<Duration> {
        self.cold_cpu
            .iter()
            .zip(&self.warm_cpu)
            .map(|(c, w)| c.saturating_sub(*w))
            .collect()
    }
}

/// The environment a function gets to reach the local AWS over TLS: every service on its own host, the throwaway
/// root trusted through `AWS_CA_BUNDLE` (and, for a build with the `system-roots` lever, `SSL_CERT_FILE`).
fn tls_env(front: &TlsFront, ca: &LocalCa, proxy_endpoint: &str) -> Vec<(String, String)> {
    let mut env = local_aws_env(proxy_endpoint);
    for (key, value) in env.iter_mut() {
        if key == "AWS_ENDPOINT_URL" {
            *value = front.endpoint("127.0.0.1");
        }
    }
    for (service, host) in SERVICE_HOSTS {
        env.push((format!("AWS_ENDPOINT_URL_{service}"), front.endpoint(host)));
    }
    env.push(("AWS_CA_BUNDLE".into(), ca.root.display().to_string()));
    env.push(("SSL_CERT_FILE".into(), ca.trust_bundle.display().to_string()));
    env
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    format!(
        "{} {cpu}, {cores} cores, Linux {}",
        std::env::consts::ARCH,
        kernel.trim()
    )
}

/// The arm64 zip `cargo lambda build --release --arm64 --output-format zip` made (target/lambda/<name>/bootstrap.zip).
fn zip_size(name: &str) -> Option<u64> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    std::fs::metadata(target.join("lambda").join(name).join("bootstrap.zip"))
        .ok()
        .map(|m| m.len())
}

/// The template's `MemorySize` for each function (its own, else the Globals').
fn template_memory_sizes() -> BTreeMap<String, u64> {
    let template = e2e_harness::stack::read_template();
    let global = template["Globals"]["Function"]["MemorySize"].as_u64();
    let mut sizes = BTreeMap::new();
    for (_, resource) in template["Resources"].as_mapping().into_iter().flatten() {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let Some(code) = resource["Properties"]["CodeUri"].as_str() else {
            continue;
        };
        let binary = code
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        if let Some(size) = resource["Properties"]["MemorySize"].as_u64().or(global) {
            sizes.insert(binary, size);
        }
    }
    sizes
}

/// Rows and pool users of the reconciliation benchmark, and how many of them have drifted.
const RECONCILE_USERS: usize = 10_000;
const RECONCILE_DRIFTED: usize = 100;

const FANOUT_RECIPIENTS: usize = 10_000;
const FANOUT_SEND_RATE: f64 = 200.0;
const LARGE_POOL: usize = 100_000;

/// A user pool the proxy answers ListUsers for itself (moto lists a large pool in minutes a page): `size` users,
/// every `every`th a subscriber of `tenant`, the others of tenant `other` and not subscribed. SES sends are answered
/// by the proxy too (after its quotas), so moto's own pace does not set the benchmark's.
fn synthetic_pool(proxy: &RecordingProxy, size: usize, every: usize, tenant: &'static str) {
    let sent = std::sync::atomic::AtomicUsize::new(0);
    proxy.respond_with(move |call| match call.operation.as_str() {
        "ListUsers" => {
            let request: Value = serde_json::from_str(&call.body).unwrap_or_default();
            let start: usize = request["PaginationToken"].as_str().and_then(|t| t.parse().ok()).unwrap_or(0);
            let limit = request["Limit"].as_u64().unwrap_or(60) as usize;
            let end = (start + limit).min(size);
            let users: Vec<Value> = (start..end)
                .map(|i| {
                    let subscriber = i % every == 0;
                    let attribute = |name: &str, value: String| serde_json::json!({"Name": name, "Value": value});
                    serde_json::json!({
                        "Username": format!("user{i}"),
                        "Enabled": true,
                        "UserStatus": "CONFIRMED",
                        "Attributes": [
                            attribute("sub", format!("00000000-0000-4000-8000-{i:012}")),
                            attribute("email", format!("bench{i:06}@example.com")),
                            attribute("email_verified", "true".into()),
                            attribute("given_name", "Bench".into()),
                            attribute("custom:_tenant", if subscriber { tenant } else { "other" }.into()),
                            attribute("custom:subPublishHistory", subscriber.to_string()),
                        ],
                    })
                })
                .collect();
            let mut page = serde_json::json!({"Users": users});
            if end < size {
                page["PaginationToken"] = Value::String(end.to_string());
            }
            Some(e2e_harness::proxy::Reply { status: 200, content_type: "application/x-amz-json-1.1", body: page.to_string() })
        }
        "SendRawEmail" => {
            let n = sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Some(e2e_harness::proxy::Reply {
                status: 200,
                content_type: "text/xml",
                body: format!(
                    "<SendRawEmailResponse xmlns=\"http://ses.amazonaws.com/doc/2010-12-01/\"><SendRawEmailResult><MessageId>bench-{n}</MessageId></SendRawEmailResult><ResponseMetadata><RequestId>00000000-0000-4000-8000-{n:012}</RequestId></ResponseMetadata></SendRawEmailResponse>"
                ),
            })
        }
        _ => None,
    });
}

/// The event sources of publish-history-email as the template has them: one instance on the rows' queue, two on
/// the fan-out queue.
fn fanout_sources(
    binaries: &Path,
    proxy: &RecordingProxy,
    stack: &LocalStack,
    sqs: &aws_sdk_sqs::Client,
) -> Vec<e2e_harness::event_source::EventSource> {
    let function = stack.function("publish-history-email");
    [0, 1, 1]
        .into_iter()
        .map(|n| {
            let mut env = local_aws_env(&proxy.endpoint);
            env.extend(function.environment.iter().cloned());
            let mut process = FunctionProcess::start(&binaries.join("publish-history-email"), &env);
            process.timeout = Duration::from_secs(120);
            stack.event_source(sqs, &function.sqs[n], process)
        })
        .collect()
}

async fn wait_for(limit: Duration, condition: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    while !condition() {
        if started.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// publish-history-email at scale, through the template's event sources (one instance on the rows' queue, two on
/// the fan-out queue, 128 MB each): a 10,000-recipient row at an enforced 200 emails a second, then a row whose
/// five subscribers are spread over a 100,000-user pool, at Cognito's 30 ListUsers a second for the account.
async fn fanout_at_scale(binaries: &Path, report: &mut String) {
    let moto = Moto::start();
    let proxy = RecordingProxy::start(&moto.endpoint);
    proxy.enforce_quotas(Some(e2e_harness::quotas::Quotas {
        ses_max_send_rate: FANOUT_SEND_RATE,
        ses_max_24_hour_send: 1e9,
        ..e2e_harness::quotas::Quotas::aws()
    }));
    let stack = provision(&moto.endpoint, e2e_harness::scenario::APP_BASE_URL, None).await;
    let sdk = e2e_harness::sdk_config(&moto.endpoint).await;
    let (sqs, sns) = (aws_sdk_sqs::Client::new(&sdk), aws_sdk_sns::Client::new(&sdk));
    let sends = |proxy: &RecordingProxy| proxy.calls_of("SendRawEmail").len();

    synthetic_pool(&proxy, FANOUT_RECIPIENTS, 1, "bench");
    let sources = fanout_sources(binaries, &proxy, &stack, &sqs);
    let before = proxy.calls().len();
    let started = Instant::now();
    stack.publish_history_created(&sns, "bench", "ph-bench").await;
    // When the first email went out, and each further quarter of them.
    let marks = std::sync::Mutex::new(Vec::new());
    let done = wait_for(Duration::from_secs(600), || {
        let sent = sends(&proxy);
        let mut marks = marks.lock().unwrap();
        let next = if marks.is_empty() {
            1
        } else {
            marks.len() * FANOUT_RECIPIENTS / 4
        };
        if sent >= next {
            marks.push(started.elapsed());
        }
        sent >= FANOUT_RECIPIENTS
    })
    .await;
    let wall = started.elapsed();
    let marks: Vec<String> = marks
        .into_inner()
        .unwrap()
        .iter()
        .map(|d| format!("{:.1}", d.as_secs_f64()))
        .collect();
    let calls = calls_since(&proxy, before);
    let throttled = proxy
        .refusals()
        .iter()
        .filter(|(_, r)| r.message == "Maximum sending rate exceeded.")
        .count();
    let unique: std::collections::BTreeSet<String> = proxy
        .calls_of("SendRawEmail")
        .iter()
        .filter_map(|c| c.form().get("Destinations.member.1").cloned())
        .collect();
    let mut rss = Vec::new();
    for (n, source) in sources.into_iter().enumerate() {
        let process = source.stop().await;
        rss.push(format!("{:.1}", process.peak_rss_kib().unwrap_or(0) as f64 / 1024.0));
        if let Some(dir) = std::env::var_os("BENCH_FANOUT_LOGS") {
            let _ = std::fs::write(
                Path::new(&dir).join(format!("publish-history-email-{n}.log")),
                process.output().join("\n"),
            );
        }
    }
    let emails = sends(&proxy).max(1);
    let per_email: Vec<String> = calls
        .iter()
        .map(|(op, n)| format!("{op} {:.3}", *n as f64 / emails as f64))
        .collect();
    let ideal = FANOUT_RECIPIENTS as f64 / FANOUT_SEND_RATE;
    let _ = writeln!(
        report,
        "\n## publish-history-email at scale\n\nThe template's event sources (one instance on the rows' queue, two on the fan-out queue; 128 MB each, \
         full cores, plain HTTP); ListUsers and SendRawEmail answered by the recording proxy after its quotas.\n\n\
         **{FANOUT_RECIPIENTS} recipients at {FANOUT_SEND_RATE}/s**: {} in {:.1} s: wall ÷ (recipients ÷ rate) = {:.2}; \
         {throttled} sends throttled ({:.2} %); {} distinct recipients of {emails} sends; peak RSS per instance (rows, fan-out, fan-out): {} MiB. \
         The first email after {} s, each further quarter of them after {} s.\n\n\
         AWS calls per email: {:.3} ({}).",
        if done { "all sent" } else { "NOT all sent" },
        wall.as_secs_f64(),
        wall.as_secs_f64() / ideal,
        throttled as f64 * 100.0 / emails as f64,
        unique.len(),
        rss.join(", "),
        marks.first().map_or("-", String::as_str),
        marks.get(1..).map_or_else(String::new, |m| m.join(", ")),
        calls.values().sum::<usize>() as f64 / emails as f64,
        per_email.join(", "),
    );

    // The large pool: five subscribers, one every 20,000 users.
    let pages_before = proxy.calls_of("ListUsers").len();
    let sent_before = sends(&proxy);
    synthetic_pool(&proxy, LARGE_POOL, LARGE_POOL / 5, "needle");
    let sources = fanout_sources(binaries, &proxy, &stack, &sqs);
    let started = Instant::now();
    stack.publish_history_created(&sns, "needle", "ph-needle").await;
    let done = wait_for(Duration::from_secs(900), || sends(&proxy) >= sent_before + 5).await;
    let wall = started.elapsed();
    let pages = proxy.calls_of("ListUsers").len() - pages_before;
    let list_throttled = proxy
        .refusals()
        .iter()
        .filter(|(_, r)| r.code == "TooManyRequestsException")
        .count();
    for source in sources {
        source.stop().await;
    }
    let _ = writeln!(
        report,
        "\n**A {LARGE_POOL}-user pool listed** for one row (LIST_USERS_RATE 10 per instance, the template's): {} in {:.1} s, {pages} ListUsers pages \
         ({:.1} pages/s), {list_throttled} throttled.",
        if done { "its 5 subscribers emailed" } else { "NOT done" },
        wall.as_secs_f64(),
        pages as f64 / wall.as_secs_f64(),
    );
}

/// cognito-reconcile at scale: 10,000 rows in PostgreSQL and 10,000 pool users, 1 % drifted; one repair run.
const IMPORT_USERS: usize = 10_000;
/// Rows per users event: about 160 KB, as the API publishes a large import.
const IMPORT_ROWS_PER_EVENT: usize = 900;
/// Cognito's account quota of user updates a second, which the proxy enforces.
const COGNITO_USER_UPDATES: f64 = 25.0;

/// A user pool the proxy answers AdminGetUser and AdminUpdateUserAttributes for itself, after its quotas (moto's own
/// pace would set the benchmark's): every user exists with none of the import's attributes yet.
fn synthetic_import_pool(proxy: &RecordingProxy) {
    proxy.respond_with(|call| match call.operation.as_str() {
        "AdminGetUser" => {
            let request: Value = serde_json::from_str(&call.body).unwrap_or_default();
            let username = request["Username"].as_str().unwrap_or_default();
            let user = serde_json::json!({"Username": username, "Enabled": true, "UserStatus": "CONFIRMED",
                                          "UserAttributes": [{"Name": "email", "Value": username}]});
            Some(e2e_harness::proxy::Reply {
                status: 200,
                content_type: "application/x-amz-json-1.1",
                body: user.to_string(),
            })
        }
        "AdminUpdateUserAttributes" => Some(e2e_harness::proxy::Reply {
            status: 200,
            content_type: "application/x-amz-json-1.1",
            body: "{}".into(),
        }),
        _ => None,
    });
}

/// cognito-attribute-sync at scale: a 10,000-user import in events of 900 rows, through the template's event source
/// (two instances, 128 MB, the template's timeout and pace) at Cognito's enforced account quotas.
async fn import_at_scale(binaries: &Path, report: &mut String) {
    let moto = Moto::start();
    let proxy = RecordingProxy::start(&moto.endpoint);
    proxy.enforce_quotas(Some(e2e_harness::quotas::Quotas::aws()));
    let stack = provision(&moto.endpoint, e2e_harness::scenario::APP_BASE_URL, None).await;
    let sdk = e2e_harness::sdk_config(&moto.endpoint).await;
    let (sqs, sns) = (aws_sdk_sqs::Client::new(&sdk), aws_sdk_sns::Client::new(&sdk));
    synthetic_import_pool(&proxy);
    let function = stack.function("cognito-attribute-sync");
    let pace = function
        .environment
        .iter()
        .find(|(name, _)| name == "USER_UPDATES_PER_SECOND")
        .map_or("its default", |(_, v)| v.as_str())
        .to_owned();
    let sources: Vec<_> = (0..2)
        .map(|_| {
            let mut env = local_aws_env(&proxy.endpoint);
            env.extend(function.environment.iter().cloned());
            let mut process = FunctionProcess::start(&binaries.join("cognito-attribute-sync"), &env);
            process.timeout = Duration::from_secs(30);
            stack.event_source(&sqs, &function.sqs[0], process)
        })
        .collect();
    let updated = |proxy: &RecordingProxy| proxy.calls_of("AdminUpdateUserAttributes").len();
    let before = proxy.calls().len();
    let started = Instant::now();
    for (n, first) in (0..IMPORT_USERS).step_by(IMPORT_ROWS_PER_EVENT).enumerate() {
        let rows: Vec<Value> = (first..(first + IMPORT_ROWS_PER_EVENT).min(IMPORT_USERS))
            .map(|i| {
                serde_json::json!({"email": format!("import{i:05}@example.com"), "firstName": "Imported", "lastName": format!("User{i}"),
                                        "_tenant": "bench", "updatedAt": "2026-12-01T09:00:00.000001Z"})
            })
            .collect();
        let message = serde_json::json!({"event": "records_created", "table": "users", "eventId": format!("import-{n}"), "records": rows});
        stack
            .publish_database_event(&sns, message.to_string(), "records_created", "users")
            .await;
    }
    let marks = std::sync::Mutex::new(Vec::new());
    let done = wait_for(Duration::from_secs(1200), || {
        let done = updated(&proxy);
        let mut marks = marks.lock().unwrap();
        if done >= (marks.len() + 1) * IMPORT_USERS / 4 {
            marks.push(started.elapsed());
        }
        done >= IMPORT_USERS
    })
    .await;
    let wall = started.elapsed();
    let calls = calls_since(&proxy, before);
    let throttled = proxy
        .refusals()
        .iter()
        .filter(|(_, r)| r.code == "TooManyRequestsException")
        .count();
    let distinct: std::collections::BTreeSet<String> = proxy
        .calls_of("AdminUpdateUserAttributes")
        .iter()
        .filter_map(|c| {
            serde_json::from_str::<Value>(&c.body).ok()?["Username"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    let (mut rss, mut handed_back, mut invocations) = (Vec::new(), 0, 0);
    for source in sources {
        handed_back += source.stats().failures;
        invocations += source.stats().batches;
        let process = source.stop().await;
        rss.push(format!("{:.1}", process.peak_rss_kib().unwrap_or(0) as f64 / 1024.0));
    }
    let dead = e2e_harness::fixtures::peek_all(&sqs, &stack.queue("CognitoAttributeSyncDeadLetterQueue").url)
        .await
        .len();
    let users = updated(&proxy).max(1) as f64;
    let cognito: usize = calls
        .iter()
        .filter(|(op, _)| op.starts_with("Admin") || op.as_str() == "ListUsers")
        .map(|(_, n)| n)
        .sum();
    let per_user: Vec<String> = calls
        .iter()
        .map(|(op, n)| format!("{op} {:.3}", *n as f64 / users))
        .collect();
    let marks: Vec<String> = marks
        .into_inner()
        .unwrap()
        .iter()
        .map(|d| format!("{:.1}", d.as_secs_f64()))
        .collect();
    let ideal = IMPORT_USERS as f64 / COGNITO_USER_UPDATES;
    let _ = writeln!(
        report,
        "\n## cognito-attribute-sync at scale\n\nThe template's event source (two instances, 128 MB, 30 s timeout, USER_UPDATES_PER_SECOND \
         {pace} each); AdminGetUser and AdminUpdateUserAttributes answered by the recording proxy after Cognito's account quotas.\n\n\
         **A {IMPORT_USERS}-user import** in events of {IMPORT_ROWS_PER_EVENT} rows: {} in {:.1} s: wall ÷ (users ÷ {COGNITO_USER_UPDATES}/s) = {:.2}; \
         {} distinct users written; {throttled} Cognito calls throttled; {handed_back} records handed back, {dead} dead-lettered, \
         {invocations} invocations; peak RSS per instance {} MiB. Each quarter of the users after {} s.\n\n\
         Cognito calls per user: {:.3}; AWS calls per user: {:.3} ({}).",
        if done { "all written" } else { "NOT all written" },
        wall.as_secs_f64(),
        wall.as_secs_f64() / ideal,
        distinct.len(),
        rss.join(", "),
        marks.join(", "),
        cognito as f64 / users,
        calls.values().sum::<usize>() as f64 / users,
        per_user.join(", "),
    );
}

/// Runs one section at scale alone and puts it in place of its last figures in tests/bench-results.md.
async fn only_section<'a, F>(header: &str, run: F)
where
    F: std::future::Future<Output = String> + 'a,
{
    let section = run.await;
    println!("{section}");
    let out = workspace_root().join("tests/bench-results.md");
    let previous = std::fs::read_to_string(&out).unwrap_or_default();
    let updated = match previous.find(header) {
        Some(start) => {
            let end = previous[start + header.len()..]
                .find("\n## ")
                .map_or(previous.len(), |i| start + header.len() + i);
            format!("{}{}{}", &previous[..start], section.trim_end(), &previous[end..])
        }
        None => format!("{}\n{}", previous.trim_end(), section),
    };
    std::fs::write(&out, updated.trim_end().to_owned() + "\n")
        .unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

async fn reconcile_at_scale(
    binaries: &Path,
    moto: &Moto,
    proxy: &RecordingProxy,
    stack: &LocalStack,
    report: &mut String,
) {
    use futures::StreamExt;
    let sdk = e2e_harness::sdk_config(&moto.endpoint).await;
    let cognito = aws_sdk_cognitoidentityprovider::Client::new(&sdk);
    let pool = &stack.user_pool_id;
    futures::stream::iter(0..RECONCILE_USERS)
        // moto's user pools fail under concurrent writes (an HTML 500 now and then): one at a time.
        .for_each_concurrent(1, |i| {
            let cognito = cognito.clone();
            async move {
                let email = format!("bench{i:05}@example.com");
                let attribute = |n: &str, v: &str| {
                    aws_sdk_cognitoidentityprovider::types::AttributeType::builder()
                        .name(n)
                        .value(v)
                        .build()
                        .unwrap()
                };
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
    let mut env = local_aws_env(&proxy.endpoint);
    env.extend(stack.function("cognito-reconcile").environment.iter().cloned());
    env.retain(|(k, _)| k != "DATABASE_PASSWORD_PARAMETER");
    env.push(("DATABASE_URL".into(), db.url()));
    env.push(("RECONCILE_MAX_WRITES_PER_SECOND".into(), "25".into()));
    let mut process = FunctionProcess::start(&binaries.join("cognito-reconcile"), &env);
    process.timeout = Duration::from_secs(300);
    let before = proxy.calls().len();
    let started = Instant::now();
    let summary = process.invoke(&serde_json::json!({"dryRun": false})).response();
    let wall = started.elapsed();
    let mut calls = BTreeMap::new();
    for call in &proxy.calls()[before..] {
        *calls.entry(call.operation.clone()).or_insert(0) += 1;
    }
    let breakdown: Vec<String> = calls.iter().map(|(op, n)| format!("{op} {n}")).collect();
    let _ = writeln!(
        report,
        "\n## cognito-reconcile at scale\n\n{RECONCILE_USERS} rows and pool users, {RECONCILE_DRIFTED} drifted, one repair run (full core, plain HTTP, \
         writes paced at 25/s): {:.1} s wall, peak RSS {:.1} MiB; complete {}, scanned {}, drifted {}, repaired {}.\n\nAWS calls: {}.",
        wall.as_secs_f64(),
        process.peak_rss_kib().unwrap_or(0) as f64 / 1024.0,
        summary["complete"],
        summary["scanned"],
        summary["drifted"],
        summary["repaired"],
        breakdown.join(", ")
    );
}

/// The budgets of docs/performance.md, read off this run at each function's chosen memory size.
fn budgets(
    report: &mut String,
    results: &BTreeMap<u64, BTreeMap<String, Samples>>,
    workloads: &[Workload],
    chosen: &BTreeMap<String, u64>,
) {
    let _ = writeln!(
        report,
        "\n## Budgets, at each function's `MemorySize`\n\nInit ≤ {INIT_BUDGET}x the floor's; cold start ≤ {COLD_BUDGET}x the floor's, read on what it adds to the work \
         (cold − warm: a first invocation also does the function's real calls), judged in CPU time (the local warm wall times carry a stall \
         docs/performance.md describes); peak RSS ≤ {RSS_BUDGET_MIB} MiB; arm64 zip ≤ {ZIP_BUDGET_MB} MB.\n"
    );
    let _ = writeln!(
        report,
        "| function | MB | init ÷ floor | cold − warm ÷ floor's (wall) | same in CPU | peak RSS MiB | zip MB | within |\n|---|--:|--:|--:|--:|--:|--:|---|"
    );
    let mark = |ok: bool| if ok { "" } else { " ✗" };
    for workload in workloads.iter().filter(|w| w.env_of.is_some()) {
        let Some(size) = chosen.get(&workload.name) else {
            continue;
        };
        let Some(by_function) = results.get(size) else { continue };
        let (s, floor) = (&by_function[&workload.name], &by_function[workload.floor]);
        let init = ms(median(&s.init)) / ms(median(&floor.init));
        let wall = ms(median(&s.penalty())) / ms(median(&floor.penalty()));
        let cpu =
            (!s.cpu_penalty().is_empty()).then(|| ms(median(&s.cpu_penalty())) / ms(median(&floor.cpu_penalty())));
        let rss = s.peak_rss_kib as f64 / 1024.0;
        let zip = zip_size(&workload.name).map(|bytes| bytes as f64 / 1e6);
        let ok = init <= INIT_BUDGET
            && cpu.is_some_and(|c| c <= COLD_BUDGET)
            && rss <= RSS_BUDGET_MIB
            && zip.is_some_and(|z| z <= ZIP_BUDGET_MB);
        let _ = writeln!(
            report,
            "| {} | {size} | {init:.2}{} | {wall:.2} | {} | {rss:.1}{} | {} | {} |",
            workload.name,
            mark(init <= INIT_BUDGET),
            cpu.map_or("not confined".to_owned(), |c| format!(
                "{c:.2}{}",
                mark(c <= COLD_BUDGET)
            )),
            mark(rss <= RSS_BUDGET_MIB),
            zip.map_or("not built".to_owned(), |z| format!(
                "{z:.2}{}",
                mark(z <= ZIP_BUDGET_MB)
            )),
            if ok { "yes" } else { "no" }
        );
    }
}

fn calls_since(proxy: &RecordingProxy, before: usize) -> BTreeMap<String, usize> {
    let mut calls = BTreeMap::new();
    for call in &proxy.calls()[before..] {
        *calls.entry(call.operation.clone()).or_insert(0) += 1;
    }
    calls
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let binaries = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/release"));
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let sizes: Vec<u64> = env_list("BENCH_SIZES", "128,256,512,1024")
        .iter()
        .map(|s| s.parse().expect("BENCH_SIZES: memory sizes in MB"))
        .collect();
    let variants: Vec<(String, PathBuf)> = std::env::var("BENCH_VARIANTS")
        .unwrap_or_default()
        .split(';')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(n, d)| (n.to_owned(), PathBuf::from(d)))
                .expect("BENCH_VARIANTS: name=binary-dir;...")
        })
        .collect();

    if std::env::var_os("BENCH_ONLY_FANOUT").is_some() {
        let mut section = String::new();
        return only_section("\n## publish-history-email at scale", async {
            fanout_at_scale(&binaries, &mut section).await;
            section
        })
        .await;
    }
    if std::env::var_os("BENCH_ONLY_IMPORT").is_some() {
        let mut section = String::new();
        return only_section("\n## cognito-attribute-sync at scale", async {
            import_at_scale(&binaries, &mut section).await;
            section
        })
        .await;
    }
    let moto = Moto::start();
    let proxy = RecordingProxy::start(&moto.endpoint);
    let _stand_in = LifecycleStandIn::install(&proxy);
    // moto reports the SES sandbox's send rate (1 per second), so publish-history-email would spend its invocations
    // waiting on its pacer; a production account starts at 14 per second. Stand-in, for this benchmark only.
    proxy.rewrite_with(Some(Box::new(|call, body| {
        if call.operation == "GetSendQuota" {
            let rate = body
                .split("<MaxSendRate>")
                .nth(1)
                .and_then(|rest| rest.split("</MaxSendRate>").next())
                .unwrap_or_default()
                .to_owned();
            body.replace(
                &format!("<MaxSendRate>{rate}</MaxSendRate>"),
                &format!("<MaxSendRate>{PRODUCTION_SEND_RATE}</MaxSendRate>"),
            )
        } else {
            body
        }
    })));
    let stack = provision(&moto.endpoint, e2e_harness::scenario::APP_BASE_URL, None).await;
    let hosts: Vec<String> = std::iter::once("127.0.0.1")
        .chain(SERVICE_HOSTS.iter().map(|(_, h)| *h))
        .map(str::to_owned)
        .collect();
    let ca = LocalCa::create(&hosts);
    let front = TlsFront::start(&ca, &hosts, &proxy.endpoint);
    let base_env = tls_env(&front, &ca, &proxy.endpoint);
    let only = env_list("BENCH_ONLY", "");
    let mut workloads = workloads(&binaries, ada_unsubscribe_url(&moto, &stack).await, &variants);
    workloads.retain(|w| {
        only.is_empty() || w.name.starts_with(FLOOR) || only.iter().any(|o| w.name.starts_with(o.as_str()))
    });
    let chosen = template_memory_sizes();

    let mut report = String::new();
    let _ = writeln!(report, "# Benchmark results\n");
    let _ = writeln!(
        report,
        "Made by `bash tests/bench.sh` on {} on {}. Release binaries ({}, x86_64 here; Lambda runs the arm64 build) against moto \
         behind TLS (a throwaway RSA 2048 root and intermediate, trusted through `AWS_CA_BUNDLE`), \
         one loopback host per AWS service; medians of {runs} cold starts per function and size, interleaved.\n",
        chrono::Utc::now().format("%Y-%m-%d"),
        machine(),
        binaries.display()
    );

    let mut results: BTreeMap<u64, BTreeMap<String, Samples>> = BTreeMap::new();
    let mut confinement = BTreeMap::new();
    let mut invocation = 0;
    for &size in &sizes {
        let share = CpuShare::create(size);
        confinement.insert(
            size,
            share
                .as_ref()
                .map(|s| format!("{:.1} % of a vCPU", s.vcpu() * 100.0))
                .map_err(Clone::clone),
        );
        if let Err(why) = &share {
            eprintln!("{size} MB: NOT CONFINED, full CPU: {why}");
        }
        for run in 0..runs {
            for workload in &workloads {
                let mut env = base_env.clone();
                match workload.env_of {
                    Some(function) => env.extend(stack.function(function).environment.iter().cloned()),
                    None => env.push(("FLOOR_PARAMETER".into(), stack.restriction_parameter.clone())),
                }
                env.extend(workload.extra_env.iter().cloned());
                // A full CFS period with nothing running, so the quota is whole again: the previous process (killed
                // at the end of its iteration) must not leave this one throttled; a new Lambda environment starts
                // with its share unspent.
                std::thread::sleep(QUOTA_REFILL);
                let cpu_before = share.as_ref().ok().and_then(CpuShare::cpu_time);
                let mut process = match &share {
                    Ok(share) => FunctionProcess::start_confined(&workload.binary, &env, share),
                    Err(_) => FunctionProcess::start(&workload.binary, &env),
                };
                let samples = results
                    .entry(size)
                    .or_default()
                    .entry(workload.name.clone())
                    .or_default();
                samples.init.push(
                    process
                        .init_duration()
                        .unwrap_or_else(|| panic!("{} never polled for an invocation", workload.name)),
                );
                for warm in [false, true] {
                    if warm && std::env::var_os("BENCH_NO_WARM_PAUSE").is_none() {
                        // A warm invocation comes after a pause, not in the throttled tail of the first one.
                        std::thread::sleep(QUOTA_REFILL);
                    }
                    invocation += 1;
                    let cpu_at_start = share.as_ref().ok().and_then(CpuShare::cpu_time);
                    let event = (workload.event)(invocation);
                    let before = proxy.calls().len();
                    let started = Instant::now();
                    let outcome = process.invoke(&event);
                    let took = started.elapsed();
                    if let e2e_harness::runtime::Invocation::Error(error) = &outcome {
                        panic!(
                            "{} failed at {size} MB: {error}\n{}",
                            workload.name,
                            process.output().join("\n")
                        );
                    }
                    let calls = calls_since(&proxy, before);
                    if warm {
                        samples.warm.push(took);
                        samples.warm_calls = calls.values().sum();
                        if let (Some(before), Some(now)) =
                            (cpu_at_start, share.as_ref().ok().and_then(CpuShare::cpu_time))
                        {
                            samples.warm_cpu.push(now.saturating_sub(before));
                        }
                    } else {
                        samples.first.push(took);
                        samples.first_calls = calls;
                        if let (Some(before), Some(now)) =
                            (cpu_before, share.as_ref().ok().and_then(CpuShare::cpu_time))
                        {
                            samples.cold_cpu.push(now.saturating_sub(before));
                        }
                    }
                }
                samples.peak_rss_kib = samples.peak_rss_kib.max(process.peak_rss_kib().unwrap_or(0));
            }
            eprintln!("{size} MB: cold start round {} of {runs} done", run + 1);
        }
    }

    let _ = writeln!(report, "## Cold and warm, by memory size\n");
    let _ = writeln!(
        report,
        "Init: process start to its first poll of the Runtime API. First: the first invocation (new TLS connections, its real calls). \
         Cold = init + first, what Lambda bills for a cold start of a custom runtime. Warm: the next invocation, on open connections. \
         Cold CPU: the CPU time of init and first together, which the quota stretches into the wall times beside it. \
         The ratios compare with the floor that calls at init for the functions that read a secret at init (publish-history-email, \
         unsubscribe), with the plain floor for the others. \
         Cold − warm: what the cold start adds to the work itself (a function that waits on AWS for a second, as the lifecycle health \
         check does, is not slow to start). \
         Cost: Lambda arm64, ${PRICE_PER_GB_SECOND}/GB-s plus ${PRICE_PER_MILLION_REQUESTS:.2} per million requests, each phase rounded up to 1 ms. \
         ★ marks the template's `MemorySize`.\n"
    );
    for (&size, by_function) in &results {
        let _ = writeln!(
            report,
            "### {size} MB ({})\n",
            match &confinement[&size] {
                Ok(share) => format!("confined to {share}"),
                Err(why) => format!("NOT CONFINED, full CPU: {why}"),
            }
        );
        let _ = writeln!(
            report,
            "| function | init ms | first ms | cold ms | warm ms | cold CPU ms | warm CPU ms | init ÷ floor | cold ÷ floor | cold − warm ÷ floor's | cold − warm CPU ms | peak RSS MiB | $ per M cold | $ per M warm |"
        );
        let _ = writeln!(report, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for workload in &workloads {
            let floor = &by_function[workload.floor];
            let s = &by_function[&workload.name];
            let (init, first, cold, warm) = (median(&s.init), median(&s.first), median(&s.cold()), median(&s.warm));
            let star = if chosen.get(&workload.name) == Some(&size) {
                " ★"
            } else {
                ""
            };
            let cpu = |values: &[Duration]| {
                if values.is_empty() {
                    "n/a".to_owned()
                } else {
                    format!("{:.1}", ms(median(values)))
                }
            };
            let cpu_penalty = cpu(&s.cpu_penalty());
            let _ = writeln!(
                report,
                "| {}{star} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {:.2} | {:.2} | {:.2} | {cpu_penalty} | {:.1} | {:.2} | {:.2} |",
                workload.name,
                ms(init),
                ms(first),
                ms(cold),
                ms(warm),
                cpu(&s.cold_cpu),
                cpu(&s.warm_cpu),
                ms(init) / ms(median(&floor.init)),
                ms(cold) / ms(median(&floor.cold())),
                ms(median(&s.penalty())) / ms(median(&floor.penalty())),
                s.peak_rss_kib as f64 / 1024.0,
                dollars_per_million(cold, size),
                dollars_per_million(warm, size),
            );
        }
        let _ = writeln!(report);
    }

    let _ = writeln!(report, "## AWS calls per unit of work\n\n| function | unit of work | first invocation | warm invocation |\n|---|---|---|--:|");
    if let Some(by_function) = results.values().next() {
        for workload in &workloads {
            let s = &by_function[&workload.name];
            let breakdown: Vec<String> = s.first_calls.iter().map(|(op, n)| format!("{op} {n}")).collect();
            let _ = writeln!(
                report,
                "| {} | {} | {}: {} | {} |",
                workload.name,
                workload.unit,
                s.first_calls.values().sum::<usize>(),
                breakdown.join(", "),
                s.warm_calls
            );
        }
    }

    let _ = writeln!(report, "\n## Packages (arm64 zip, `cargo lambda build --release --arm64 --output-format zip`)\n\n| function | zip MB |\n|---|--:|");
    for name in [
        "cognito-attribute-sync",
        "publish-history-email",
        "lifecycle-hook-completer",
        "alarm-instance-updater",
        "unsubscribe",
        "cognito-reconcile",
    ] {
        match zip_size(name) {
            Some(bytes) => {
                let _ = writeln!(report, "| {name} | {:.2} |", bytes as f64 / 1e6);
            }
            None => {
                let _ = writeln!(report, "| {name} | not built |");
            }
        }
    }

    budgets(&mut report, &results, &workloads, &chosen);

    if std::env::var_os("BENCH_SKIP_RECONCILE").is_none() {
        reconcile_at_scale(&binaries, &moto, &proxy, &stack, &mut report).await;
    }
    if std::env::var_os("BENCH_SKIP_FANOUT").is_none() {
        fanout_at_scale(&binaries, &mut report).await;
    }
    if std::env::var_os("BENCH_SKIP_IMPORT").is_none() {
        import_at_scale(&binaries, &mut report).await;
    }
    println!("{report}");
    let out = workspace_root().join("tests/bench-results.md");
    std::fs::write(&out, &report).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
    eprintln!("written to {}", out.display());
}
