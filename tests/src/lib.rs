//! The end-to-end test harness. Nothing here reaches AWS: every test starts its own moto server on a free loopback
//! port, runs the function binaries as Lambda would (through the Runtime API), and stops everything on drop.

pub mod by_hand;
pub mod cargo_lambda;
pub mod cpu_share;
pub mod event_source;
pub mod fixtures;
pub mod iam;
pub mod lifecycle_stand_in;
pub mod mail;
pub mod memory_cap;
pub mod moto;
pub mod postgres;
pub mod proxy;
pub mod quotas;
pub mod runtime;
pub mod scenario;
pub mod stack;
pub mod tls;
pub mod users_db;

use std::path::PathBuf;

/// The workspace root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A free TCP port on loopback. The port is released before use, so another process could take it first; the
/// servers started on it fail loudly if that ever happens.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// SDK configuration for test set-up calls against a local endpoint: dummy credentials, a fixed region.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(shared::aws::https_client(&shared::config::Env::from_pairs(&[])).expect("the SDK's client"))
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(REGION))
        .test_credentials()
        .load()
        .await
}

pub const REGION: &str = "eu-west-1";

/// The environment a function binary gets to reach the local AWS: what `AWS_ENDPOINT_URL` plus dummy credentials
/// are locally, nothing at all is in production.
pub fn local_aws_env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_REGION", REGION),
        ("AWS_DEFAULT_REGION", REGION),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Makes a child process die with the process that started it, so an interrupted test or local run (Ctrl-C, a
/// killed CI job) leaves no moto server or function binary behind. The signal fires when the spawning thread ends,
/// which for the harness is the test or the main thread that owns the child anyway.
pub fn die_with_parent(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches nothing of the parent's state.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A server's stderr, read line by line as it comes (a full pipe would block the server), with the last `keep`
/// lines kept for error messages, and a readiness check: [`ServerOutput::wait_for`] returns once a line contains the
/// server's marker, or says it exited first.
pub struct ServerOutput {
    lines: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
    ready: std::sync::mpsc::Receiver<bool>,
}

impl ServerOutput {
    pub fn watch(pipe: impl std::io::Read + Send + 'static, marker: &'static str, keep: usize) -> ServerOutput {
        use std::io::BufRead;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let (ready, readiness) = std::sync::mpsc::channel();
        let kept = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                if line.contains(marker) {
                    let _ = ready.send(true);
                }
                let mut kept = kept.lock().unwrap();
                if kept.len() == keep {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
            let _ = ready.send(false);
        });
        ServerOutput {
            lines,
            ready: readiness,
        }
    }

    /// Waits for the marker; panics, with what the server said, when it exits first or `limit` passes.
    pub fn wait_for(&self, server: &str, limit: std::time::Duration) {
        match self.ready.recv_timeout(limit) {
            Ok(true) => {}
            Ok(false) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                panic!("{server} exited at start:\n{}", self.text())
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("{server} was not ready within {limit:?}:\n{}", self.text())
            }
        }
    }

    pub fn text(&self) -> String {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// moto with the recording proxy in front, and an SDK configuration for set-up calls (made directly to moto, so
/// they are not among the recorded calls of the function under test).
pub struct LocalAws {
    pub proxy: proxy::RecordingProxy,
    pub sdk: aws_config::SdkConfig,
    pub moto: moto::Moto,
}

impl LocalAws {
    pub async fn start() -> LocalAws {
        let moto = moto::Moto::start();
        let proxy = proxy::RecordingProxy::start(&moto.endpoint);
        let sdk = sdk_config(&moto.endpoint).await;
        LocalAws { proxy, sdk, moto }
    }

    /// The environment of a function binary that reaches this local AWS through the proxy, plus `settings`.
    pub fn function_env(&self, settings: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env = local_aws_env(&self.proxy.endpoint);
        env.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    }
}

/// The template's own stack (`stack::provision`) on moto behind the recording proxy with `quotas` enforced, and
/// clients for set-up calls and assertions: what the tests at scale start from.
pub struct TemplateStack {
    pub proxy: proxy::RecordingProxy,
    pub stack: stack::LocalStack,
    pub sqs: aws_sdk_sqs::Client,
    pub sns: aws_sdk_sns::Client,
    pub cognito: aws_sdk_cognitoidentityprovider::Client,
    pub moto: moto::Moto,
}

impl TemplateStack {
    /// `visibility_timeout` overrides the queues' (see [`stack::provision`]).
    pub async fn start(quotas: quotas::Quotas, visibility_timeout: Option<i32>) -> TemplateStack {
        let moto = moto::Moto::start();
        let proxy = proxy::RecordingProxy::start(&moto.endpoint);
        proxy.enforce_quotas(Some(quotas));
        let stack = stack::provision(&moto.endpoint, scenario::APP_BASE_URL, visibility_timeout).await;
        let sdk = sdk_config(&moto.endpoint).await;
        TemplateStack {
            sqs: aws_sdk_sqs::Client::new(&sdk),
            sns: aws_sdk_sns::Client::new(&sdk),
            cognito: aws_sdk_cognitoidentityprovider::Client::new(&sdk),
            proxy,
            stack,
            moto,
        }
    }

    /// An instance of the template's `binary` (its environment from the template, plus `overrides`), with `timeout`.
    pub fn instance(
        &self,
        binary: &std::path::Path,
        timeout: std::time::Duration,
        overrides: &[(&str, &str)],
    ) -> runtime::FunctionProcess {
        let name = binary.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let mut env = local_aws_env(&self.proxy.endpoint);
        env.extend(self.stack.function(name).environment.iter().cloned());
        env.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut function = runtime::FunctionProcess::start(binary, &env);
        function.timeout = timeout;
        function
    }
}

/// What the queue-fed functions' end-to-end tests start from: the local AWS, the user pool with the sample users,
/// the function's dead-letter queue, and clients for set-up calls and assertions.
pub struct PoolStack {
    pub aws: LocalAws,
    pub cognito: aws_sdk_cognitoidentityprovider::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub pool_id: String,
    pub dlq_url: String,
    /// publish-history-email's own fan-out queue (`FANOUT_QUEUE_URL`), which every instance of it is configured with.
    pub fanout_url: String,
}

impl PoolStack {
    pub async fn start(dead_letter_queue: &str) -> PoolStack {
        let aws = LocalAws::start().await;
        let cognito = aws_sdk_cognitoidentityprovider::Client::new(&aws.sdk);
        let sqs = aws_sdk_sqs::Client::new(&aws.sdk);
        let dynamodb = aws_sdk_dynamodb::Client::new(&aws.sdk);
        let pool_id = fixtures::create_user_pool(&cognito, "users").await;
        fixtures::create_sample_users(&cognito, &pool_id).await;
        let dlq_url = fixtures::create_queue(&sqs, dead_letter_queue).await;
        let fanout_url = fixtures::create_queue(&sqs, "publish-history-email-fanout").await;
        PoolStack {
            aws,
            cognito,
            sqs,
            dynamodb,
            pool_id,
            dlq_url,
            fanout_url,
        }
    }

    /// Starts `binary` against this stack with `settings`.
    pub fn start_function(&self, binary: &str, settings: &[(&str, &str)]) -> runtime::FunctionProcess {
        runtime::FunctionProcess::start(std::path::Path::new(binary), &self.aws.function_env(settings))
    }
}

/// An SQS event of `(message id, body)` records, as Lambda hands it to a function (queue ARN of `queue`).
pub fn sqs_event(queue: &str, records: &[(&str, String)]) -> serde_json::Value {
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|(id, body)| {
            serde_json::json!({
                "messageId": id, "receiptHandle": format!("handle-{id}"), "body": body,
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": chrono::Utc::now().timestamp_millis().to_string()},
                "messageAttributes": {}, "eventSource": "aws:sqs",
                "eventSourceARN": format!("arn:aws:sqs:{REGION}:123456789012:{queue}"), "awsRegion": REGION
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
}

/// A Lambda Function URL request (payload format 2.0) for `method` on `url`, as the URL's front end hands it to the
/// function: the path, the query string and its parameters, a form body.
pub fn function_url_request(method: &str, url: &str, body: Option<&str>) -> serde_json::Value {
    let without_scheme = url.split_once("://").map(|(_, rest)| rest).unwrap_or(url);
    let (host, path_and_query) = without_scheme
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap_or((without_scheme, "/".to_owned()));
    let (path, query) = path_and_query
        .split_once('?')
        .map(|(p, q)| (p.to_owned(), q.to_owned()))
        .unwrap_or((path_and_query.clone(), String::new()));
    let parameters: serde_json::Map<String, serde_json::Value> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_owned(), serde_json::Value::String(v.to_owned())))
        })
        .collect();
    let mut request = serde_json::json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
        "headers": {"host": host, "content-type": "application/x-www-form-urlencoded", "user-agent": "e2e-harness"},
        "requestContext": {
            "accountId": "anonymous", "apiId": "local", "domainName": host, "domainPrefix": "local",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "e2e-harness"},
            "requestId": format!("req-{}", std::process::id()), "routeKey": "$default", "stage": "$default",
            "time": "23/Nov/2026:10:00:00 +0000", "timeEpoch": 1795000000000u64
        },
        "isBase64Encoded": false
    });
    if !parameters.is_empty() {
        request["queryStringParameters"] = serde_json::Value::Object(parameters);
    }
    if let Some(body) = body {
        request["body"] = serde_json::Value::String(body.to_owned());
    }
    request
}

/// The `itemIdentifier`s of a partial batch response, sorted. Panics when the response is not one.
pub fn batch_failures(response: &serde_json::Value) -> Vec<String> {
    let mut ids: Vec<String> = response["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("not a partial batch response: {response}"))
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids
}

/// The message ids of an SQS event, in order.
pub fn message_ids(event: &serde_json::Value) -> Vec<String> {
    event["Records"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| r["messageId"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A dead-lettered message's `SourceMessageId` and `ErrorMessage` attributes.
pub fn dead_letter_info(message: &aws_sdk_sqs::types::Message) -> (String, String) {
    let attribute = |name: &str| {
        message
            .message_attributes()
            .and_then(|a| a.get(name))
            .and_then(|v| v.string_value())
            .unwrap_or_default()
            .to_owned()
    };
    (attribute("SourceMessageId"), attribute("ErrorMessage"))
}

/// What a dead-letter queue holds: each message's `SourceMessageId` and `ErrorMessage`, sorted by source.
pub async fn dead_lettered(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<(String, String)> {
    let mut dead: Vec<(String, String)> = fixtures::peek_all(sqs, queue_url)
        .await
        .iter()
        .map(dead_letter_info)
        .collect();
    dead.sort();
    dead
}

/// The message ids of `event` at `positions`, sorted: the records expected in a dead-letter queue.
pub fn ids_at(event: &serde_json::Value, positions: &[usize]) -> Vec<String> {
    let ids = message_ids(event);
    let mut picked: Vec<String> = positions.iter().map(|&i| ids[i].clone()).collect();
    picked.sort();
    picked
}

/// Builds the function binaries (once per process) and returns their directory. Tests of the whole flow need other
/// packages' binaries, which cargo builds for a test only when asked; cargo holds no lock while tests run, so the
/// test asks. Outside `cargo test`, `cargo` from PATH.
pub fn built_binaries() -> &'static std::path::Path {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--workspace", "--bins", "--quiet"])
            .current_dir(workspace_root())
            .status()
            .expect("running cargo build");
        assert!(status.success(), "cargo build --bins failed");
        scenario::binaries_dir()
    })
}

/// A loopback listener whose connections send at once (TCP_NODELAY, which Linux passes to accepted sockets):
/// tiny_http writes a response's head and body apart, and on a kept-alive connection Nagle's algorithm would hold
/// the body until the client's delayed acknowledgement, 40 ms later.
pub fn no_delay_listener() -> std::net::TcpListener {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback listener");
    let on: libc::c_int = 1;
    // SAFETY: a valid socket descriptor and a c_int option value of the size given.
    let set = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        set,
        0,
        "TCP_NODELAY on a loopback listener: {}",
        std::io::Error::last_os_error()
    );
    listener
}
