//! A Lambda Runtime API emulator: runs a function binary as Lambda does (the binary polls
//! `/2018-06-01/runtime/invocation/next` and posts its response or error), one invocation at a time, within
//! Lambda's limits: an answer after the deadline is thrown away (the invocation fails with `Sandbox.Timedout`
//! and the process is replaced, as Lambda resets the sandbox), a response over 6 MB is refused, the process has
//! 1,024 file descriptors and, where the kernel lets the harness cap it, its `MemorySize` of memory.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::cpu_share::CpuShare;

const PREFIX: &str = "/2018-06-01/runtime";
/// Lambda's limit on a synchronous invocation's response.
pub const MAX_RESPONSE_BYTES: usize = 6_291_556;
/// Lambda's limit on a function process's open file descriptors.
pub const MAX_FILE_DESCRIPTORS: u64 = 1024;

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    Response(Value),
    /// The function reported an error (`/error`): the error document Lambda would return.
    Error(Value),
}

impl Invocation {
    pub fn response(self) -> Value {
        match self {
            Invocation::Response(v) => v,
            Invocation::Error(e) => panic!("function returned an error: {e}"),
        }
    }
}

struct Pending {
    request_id: String,
    event: Value,
    /// `Lambda-Runtime-Deadline-Ms`: now plus the function's timeout.
    deadline_ms: u64,
}

#[derive(Default)]
struct Shared {
    results: Mutex<HashMap<String, Sender<Invocation>>>,
    init_error: Mutex<Option<Value>>,
    /// When the function first asked for an invocation: the end of its init (cold start).
    first_poll: Mutex<Option<Instant>>,
    first_poll_seen: Condvar,
}

/// How to start the process again after a timeout or a crash, as Lambda starts a new sandbox.
#[derive(Clone)]
struct Launch {
    binary: PathBuf,
    env: Vec<(String, String)>,
    memory_mb: u64,
    /// The `cgroup.procs` files of a CPU share the process runs confined to.
    cpu_share: Vec<PathBuf>,
}

/// A function binary running under the emulator. Dropping it stops the process.
pub struct FunctionProcess {
    child: Child,
    launch: Launch,
    /// Its memory cgroup; `None` where the kernel does not let the harness cap memory (see [`memory_cap_refusal`]).
    memory: Option<crate::memory_cap::MemoryCap>,
    /// Replaced after a timeout or a crash: the next invocation starts a new process first.
    broken: bool,
    restarts: u32,
    name: String,
    invocations: Sender<Pending>,
    shared: Arc<Shared>,
    server: Arc<tiny_http::Server>,
    output: Arc<Mutex<Vec<String>>>,
    /// One message per output pipe the process closed: both closed means it has exited and all it printed is read.
    pipes_closed: Receiver<()>,
    counter: u64,
    spawned_at: Instant,
    /// The deadline each invocation gets, as Lambda's function timeout (60 s unless a test sets it).
    pub timeout: Duration,
}

impl FunctionProcess {
    /// Starts `binary` with `env` (plus the variables Lambda always sets) against a new Runtime API endpoint.
    pub fn start(binary: &Path, env: &[(String, String)]) -> FunctionProcess {
        Self::spawn(
            Launch {
                binary: binary.to_owned(),
                env: env.to_vec(),
                memory_mb: 128,
                cpu_share: Vec::new(),
            },
            Default::default(),
        )
    }

    /// As [`FunctionProcess::start`], confined from its first instruction to the CPU share of a memory size, which
    /// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` then says, as on Lambda.
    pub fn start_confined(binary: &Path, env: &[(String, String)], share: &CpuShare) -> FunctionProcess {
        Self::spawn(
            Launch {
                binary: binary.to_owned(),
                env: env.to_vec(),
                memory_mb: share.memory_mb,
                cpu_share: share.procs().to_vec(),
            },
            Default::default(),
        )
    }

    fn spawn(launch: Launch, output: Arc<Mutex<Vec<String>>>) -> FunctionProcess {
        let binary = launch.binary.as_path();
        // Without TCP_NODELAY, the event of a warm invocation (sent on the function's kept-alive connection, its head
        // and body apart) waited for the function's delayed acknowledgement: 40 ms of every warm invocation.
        let server =
            Arc::new(tiny_http::Server::from_listener(crate::no_delay_listener(), None).expect("runtime API listens"));
        let address = format!(
            "127.0.0.1:{}",
            server.server_addr().to_ip().expect("an IP address").port()
        );
        let (invocations, queue) = channel::<Pending>();
        let shared = Arc::new(Shared::default());
        let name = binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        {
            let (server, shared, name) = (server.clone(), shared.clone(), name.clone());
            let queue = Arc::new(Mutex::new(queue));
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    let (shared, queue, name) = (shared.clone(), queue.clone(), name.clone());
                    std::thread::spawn(move || serve(request, &shared, &queue, &name));
                }
            });
        }
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", &address)
            .env("AWS_LAMBDA_FUNCTION_NAME", &name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", launch.memory_mb.to_string())
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "local")
            .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in &launch.env {
            command.env(key, value);
        }
        // An access key of its own, so the recording proxy evaluates this function's policy from the template.
        if let Some(access_key) = crate::iam::register(&name, &launch.env) {
            command.env("AWS_ACCESS_KEY_ID", access_key);
        }
        crate::die_with_parent(&mut command);
        limit_file_descriptors(&mut command);
        let memory = match crate::memory_cap::MemoryCap::create(launch.memory_mb) {
            Ok(cap) => Some(cap),
            Err(reason) => {
                note_memory_cap_refusal(&reason);
                None
            }
        };
        let mut cgroups = launch.cpu_share.clone();
        cgroups.extend(memory.as_ref().map(|m| m.procs()));
        crate::cpu_share::enter_cgroups_on_exec(&mut command, &cgroups);
        let spawned_at = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let (closed, pipes_closed) = channel();
        for pipe in [
            child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
            child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let (output, closed) = (output.clone(), closed.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    output.lock().unwrap().push(line);
                }
                let _ = closed.send(());
            });
        }
        FunctionProcess {
            child,
            launch,
            memory,
            broken: false,
            restarts: 0,
            name,
            invocations,
            shared,
            server,
            output,
            pipes_closed,
            counter: 0,
            spawned_at,
            timeout: Duration::from_secs(60),
        }
    }

    /// Replaces a timed-out or crashed process with a new one (a cold start), keeping what the old one printed.
    fn restart(&mut self) {
        let mut fresh = Self::spawn(self.launch.clone(), self.output.clone());
        fresh.timeout = self.timeout;
        fresh.counter = self.counter;
        fresh.restarts = self.restarts + 1;
        std::mem::swap(self, &mut fresh);
    }

    /// How many times the process was replaced after a timeout or a crash.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// The process's memory cgroup, when the harness could cap it.
    pub fn memory_cap(&self) -> Option<&crate::memory_cap::MemoryCap> {
        self.memory.as_ref()
    }

    /// The process id, e.g. to read `/proc/<pid>/limits`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Invokes the function with `event` and waits for its answer.
    pub fn invoke(&mut self, event: &Value) -> Invocation {
        if self.broken {
            self.restart();
        }
        self.counter += 1;
        let request_id = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), self.counter);
        let (sender, receiver) = channel();
        self.shared.results.lock().unwrap().insert(request_id.clone(), sender);
        let deadline_ms = (SystemTime::now() + self.timeout)
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        self.invocations
            .send(Pending {
                request_id: request_id.clone(),
                event: event.clone(),
                deadline_ms,
            })
            .expect("runtime API alive");
        self.wait(receiver, &request_id, Instant::now() + self.timeout)
    }

    /// The answer, or Lambda's error when the deadline passes first or the process dies: then an answer it posts
    /// later is thrown away and the next invocation gets a new process.
    fn wait(&mut self, receiver: Receiver<Invocation>, request_id: &str, deadline: Instant) -> Invocation {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left.min(Duration::from_millis(50))) {
                Ok(result) => return result,
                Err(RecvTimeoutError::Disconnected) => panic!("runtime API dropped invocation {request_id}"),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let oom = self.memory.as_ref().is_some_and(|m| m.oom_killed());
                return self.fail(
                    request_id,
                    "Runtime.ExitError",
                    format!(
                        "RequestId: {request_id} Error: Runtime exited with error: {status}{}",
                        if oom {
                            " (over its memory size: Runtime.OutOfMemory)"
                        } else {
                            ""
                        }
                    ),
                );
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let seconds = self.timeout.as_secs_f64();
                return self.fail(
                    request_id,
                    "Sandbox.Timedout",
                    format!("RequestId: {request_id} Error: Task timed out after {seconds:.2} seconds"),
                );
            }
        }
    }

    fn fail(&mut self, request_id: &str, error_type: &str, message: String) -> Invocation {
        // Whatever the process posts for this invocation from now on is thrown away.
        self.shared.results.lock().unwrap().remove(request_id);
        self.broken = true;
        eprintln!("{}: {message}; its output:\n{}", self.name, self.output().join("\n"));
        Invocation::Error(serde_json::json!({"errorType": error_type, "errorMessage": message}))
    }

    /// Everything the process printed so far (stdout and stderr), line by line.
    pub fn output(&self) -> Vec<String> {
        self.output.lock().unwrap().clone()
    }

    /// Init time: from the process start to its first `/invocation/next` (waits for it, at most 30 s).
    pub fn init_duration(&self) -> Option<Duration> {
        let first_poll = self.shared.first_poll.lock().unwrap();
        let (first_poll, _) = self
            .shared
            .first_poll_seen
            .wait_timeout_while(first_poll, Duration::from_secs(30), |at| at.is_none())
            .unwrap();
        first_poll.map(|at| at.duration_since(self.spawned_at))
    }

    /// The process's peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// What the function posted to `/runtime/init/error`, if anything.
    pub fn init_error(&self) -> Option<Value> {
        self.shared.init_error.lock().unwrap().clone()
    }

    /// Waits for the process to exit by itself (an init failure), at most `limit`: until it has closed both output
    /// pipes, so everything it printed last is read.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        for _ in 0..2 {
            self.pipes_closed
                .recv_timeout(until.saturating_duration_since(Instant::now()))
                .ok()?;
        }
        self.child.wait().ok()
    }
}

impl Drop for FunctionProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.server.unblock();
    }
}

fn json_response(status: u16, body: &Value) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    tiny_http::Response::from_string(body.to_string())
        .with_status_code(status)
        .with_header(tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap())
}

fn serve(mut request: tiny_http::Request, shared: &Shared, queue: &Mutex<Receiver<Pending>>, name: &str) {
    let url = request.url().to_owned();
    let mut body = Vec::new();
    let _ = request.as_reader().read_to_end(&mut body);
    let accepted = json_response(202, &serde_json::json!({"status": "OK"}));
    let Some(path) = url.strip_prefix(PREFIX) else {
        let _ = request.respond(json_response(404, &serde_json::json!({"errorMessage": "unknown path"})));
        return;
    };
    if path == "/invocation/next" {
        shared.first_poll.lock().unwrap().get_or_insert_with(Instant::now);
        shared.first_poll_seen.notify_all();
        // Long poll, as the real Runtime API does: the function waits here between invocations.
        let pending = loop {
            let received = queue.lock().unwrap().recv_timeout(Duration::from_millis(200));
            match received {
                Ok(pending) => break pending,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        };
        let deadline = pending.deadline_ms;
        let mut response = json_response(200, &pending.event);
        for (key, value) in [
            ("Lambda-Runtime-Aws-Request-Id", pending.request_id.clone()),
            ("Lambda-Runtime-Deadline-Ms", deadline.to_string()),
            (
                "Lambda-Runtime-Invoked-Function-Arn",
                format!("arn:aws:lambda:{}:123456789012:function:{name}", crate::REGION),
            ),
            (
                "Lambda-Runtime-Trace-Id",
                "Root=1-00000000-000000000000000000000000;Sampled=0".to_owned(),
            ),
        ] {
            response.add_header(tiny_http::Header::from_bytes(key, value.as_bytes()).unwrap());
        }
        let _ = request.respond(response);
    } else if path == "/init/error" {
        *shared.init_error.lock().unwrap() = serde_json::from_slice(&body).ok();
        let _ = request.respond(accepted);
    } else if let Some(rest) = path.strip_prefix("/invocation/") {
        let (request_id, kind) = rest.split_once('/').unwrap_or((rest, ""));
        if kind == "response" && body.len() > MAX_RESPONSE_BYTES {
            let message =
                format!("Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes).");
            if let Some(sender) = shared.results.lock().unwrap().remove(request_id) {
                let _ = sender.send(Invocation::Error(
                    serde_json::json!({"errorType": "Function.ResponseSizeTooLarge", "errorMessage": message}),
                ));
            }
            let refusal = serde_json::json!({"errorMessage": format!("Exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."), "errorType": "RequestEntityTooLarge"});
            let _ = request.respond(json_response(413, &refusal));
            return;
        }
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let result = match kind {
            "response" => Invocation::Response(value),
            _ => Invocation::Error(value),
        };
        if let Some(sender) = shared.results.lock().unwrap().remove(request_id) {
            let _ = sender.send(result);
        }
        let _ = request.respond(accepted);
    } else {
        let _ = request.respond(json_response(404, &serde_json::json!({"errorMessage": "unknown path"})));
    }
}

/// Lambda's 1,024 open files, soft and hard, from the process's first instruction.
pub fn limit_file_descriptors(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setrlimit is async-signal-safe and touches nothing of the parent's state.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: MAX_FILE_DESCRIPTORS as libc::rlim_t,
                rlim_max: MAX_FILE_DESCRIPTORS as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Why function processes run without a memory cap here, if they do (said once per test process).
pub fn memory_cap_refusal() -> Option<String> {
    MEMORY_CAP_REFUSAL.get().cloned()
}

static MEMORY_CAP_REFUSAL: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn note_memory_cap_refusal(reason: &str) {
    if MEMORY_CAP_REFUSAL.set(reason.to_owned()).is_ok() {
        eprintln!("function processes run without Lambda's memory cap here: {reason}");
    }
}
