//! cargo-lambda's own emulator, the one users run the functions under by hand (docs/local-aws.md, "Running a function
//! by
//! hand"): `cargo lambda watch` and `cargo lambda invoke`, the pinned cargo-lambda from the project's .venv. It is
//! not the harness's Runtime API ([`crate::runtime`]): it sends every invocation the constant deadline
//! `Lambda-Runtime-Deadline-Ms: 600000` (see `shared::deadline`), answers a function error with HTTP 500, and runs
//! the functions with the environment cargo-lambda gives them.
//!
//! Each function's environment, as the template configures it against the local stack, is a file under
//! [`ENV_DIR`]; the root `Cargo.toml` names it for each binary (`[workspace.metadata.lambda.bin.<name>.watch]
//! env_file`), so `cargo lambda watch` started at the workspace root gives every function its own settings.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::runtime::Invocation;

/// Where the functions' environment files are, relative to the directory `cargo lambda watch` runs in.
pub const ENV_DIR: &str = "target/lambda-env";

/// The environment file of `function`, relative to where `cargo lambda watch` runs.
pub fn env_file(function: &str) -> String {
    format!("{ENV_DIR}/{function}.env")
}

/// Writes `env` as the environment file of `function` under `base` (cargo-lambda's format: `KEY='value'` lines).
pub fn write_env_file(base: &Path, function: &str, env: &[(String, String)]) -> std::io::Result<PathBuf> {
    let path = base.join(env_file(function));
    std::fs::create_dir_all(path.parent().expect("a directory"))?;
    let mut file = std::fs::File::create(&path)?;
    writeln!(
        file,
        "# {function}'s environment against the local stack, written by tests/run-local.sh --keep."
    )?;
    for (key, value) in env {
        if value.contains('\'') || value.contains('\n') {
            return Err(std::io::Error::other(format!(
                "{key}'s value cannot be written to an env file: {value:?}"
            )));
        }
        writeln!(file, "{key}='{value}'")?;
    }
    Ok(path)
}

/// The project's .venv/bin first on PATH, where tests/setup.sh installs the pinned cargo-lambda.
fn path_with_venv() -> std::ffi::OsString {
    let venv = crate::workspace_root().join(".venv/bin");
    let mut paths = vec![venv];
    paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
    std::env::join_paths(paths).expect("PATH entries")
}

/// How long `cargo lambda invoke` may take, the first build of a function by cargo lambda watch included.
pub const INVOKE_LIMIT: Duration = Duration::from_secs(180);

/// `cargo lambda watch` with only its Lambda APIs (`--only-lambda-apis`): the function binaries the suite built are
/// started against it ([`Watch::start_function`]) instead of being rebuilt by it with other features while other
/// tests run them. The Runtime API, its deadlines, the invoke endpoint and `cargo lambda invoke` are cargo-lambda's.
pub struct Watch {
    child: Child,
    pub port: u16,
    output: crate::ServerOutput,
    functions: Vec<WatchedFunction>,
}

impl Watch {
    pub fn start_apis_only() -> Watch {
        Self::start(&["--only-lambda-apis"], &crate::workspace_root())
    }

    /// `cargo lambda watch` as the README runs it: it builds and starts each function at its first invocation, with
    /// the environment file the root `Cargo.toml` names for it, read relative to `dir` (where it runs).
    pub fn start_building_in(dir: &Path) -> Watch {
        Self::start(&[], dir)
    }

    fn start(flags: &[&str], dir: &Path) -> Watch {
        let port = crate::free_port();
        let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        command
            .args(["lambda", "watch", "--ignore-changes"])
            .args(flags)
            .args(["--invoke-address", "127.0.0.1", "--invoke-port"])
            .arg(port.to_string())
            .arg("--manifest-path")
            .arg(crate::workspace_root().join("Cargo.toml"))
            .env("PATH", path_with_venv())
            .env("NO_COLOR", "1")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        crate::die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .expect("starting cargo lambda watch (tests/setup.sh installs it into .venv)");
        let output = crate::ServerOutput::watch(
            child.stdout.take().expect("stdout is piped"),
            "starting Runtime server",
            200,
        );
        output.wait_for("cargo lambda watch", Duration::from_secs(60));
        Watch {
            child,
            port,
            output,
            functions: Vec::new(),
        }
    }

    /// Starts the built `binary` against this emulator's Runtime API, with `env` (its own access key too, so the
    /// recording proxy holds it to its template policy), within Lambda's 1,024 file descriptors.
    pub fn start_function(&mut self, binary: &Path, env: &[(String, String)]) {
        let name = binary
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let mut command = Command::new(binary);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            // What cargo lambda watch gives the functions it starts, the Runtime API under the function's name.
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{}/.rt/{name}", self.port),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", &name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(access_key) = crate::iam::register(&name, env) {
            command.env("AWS_ACCESS_KEY_ID", access_key);
        }
        crate::die_with_parent(&mut command);
        crate::runtime::limit_file_descriptors(&mut command);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let output = Arc::new(Mutex::new(Vec::new()));
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|p| Box::new(p) as _),
        ]
        .into_iter()
        .flatten()
        {
            let output = output.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                    output.lock().unwrap().push(line);
                }
            });
        }
        self.functions.push(WatchedFunction { name, child, output });
    }

    /// The log lines `function` has written so far.
    pub fn output_of(&self, function: &str) -> Vec<String> {
        self.functions
            .iter()
            .filter(|f| f.name == function)
            .flat_map(|f| f.output.lock().unwrap().clone())
            .collect()
    }

    /// `cargo lambda invoke <function> --data-file <data_file>`, as the README runs it; given up after
    /// [`INVOKE_LIMIT`] (a function that fails its init leaves the invocation waiting).
    pub fn invoke(&self, function: &str, data_file: &Path) -> CliInvocation {
        let mut child = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "lambda",
                "invoke",
                function,
                "--invoke-address",
                "127.0.0.1",
                "--output-format",
                "json",
                "--invoke-port",
            ])
            .arg(self.port.to_string())
            .arg("--data-file")
            .arg(data_file)
            .env("PATH", path_with_venv())
            .env("NO_COLOR", "1")
            .current_dir(crate::workspace_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running cargo lambda invoke");
        let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut text = String::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_string(&mut text);
                }
                text
            })
        };
        let stdout = read(child.stdout.take().map(|p| Box::new(p) as _));
        let stderr = read(child.stderr.take().map(|p| Box::new(p) as _));
        let started = std::time::Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if started.elapsed() < INVOKE_LIMIT => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let stdout = stdout.join().unwrap_or_default();
        let mut stderr = stderr.join().unwrap_or_default();
        if status.is_none() {
            stderr.push_str(&format!("\n(no answer within {INVOKE_LIMIT:?}: given up)"));
        }
        CliInvocation {
            success: status.is_some_and(|s| s.success()),
            answer: serde_json::from_str(&stdout).ok(),
            stdout,
            stderr,
        }
    }

    /// What cargo lambda watch said, for a failure's message.
    pub fn text(&self) -> String {
        self.output.text()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        for function in &mut self.functions {
            let _ = function.child.kill();
            let _ = function.child.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A built function binary polling cargo lambda watch's Runtime API.
struct WatchedFunction {
    name: String,
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

/// What `cargo lambda invoke` printed: the function's answer (JSON) when it succeeded.
#[derive(Debug)]
pub struct CliInvocation {
    pub success: bool,
    pub answer: Option<Value>,
    pub stdout: String,
    pub stderr: String,
}

/// A function under `cargo lambda watch`, invoked through the watch's invoke endpoint
/// (`/2015-03-31/functions/<name>/invocations`), as an event source hands it batches in AWS. cargo lambda watch
/// starts (and, after an edit, rebuilds) the function at its first invocation, so the wait is long.
pub struct WatchInvoker {
    pub function: String,
    pub address: std::net::SocketAddr,
    agent: ureq::Agent,
}

impl WatchInvoker {
    pub fn new(function: &str, port: u16) -> WatchInvoker {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(900)).build();
        WatchInvoker {
            function: function.to_owned(),
            address: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            agent,
        }
    }
}

impl crate::event_source::Invoke for WatchInvoker {
    fn invoke(&mut self, event: &Value) -> Invocation {
        let url = format!(
            "http://{}/2015-03-31/functions/{}/invocations",
            self.address, self.function
        );
        match self
            .agent
            .post(&url)
            .set("Content-Type", "application/json")
            .send_string(&event.to_string())
        {
            Ok(response) => {
                let body = response.into_string().unwrap_or_default();
                match serde_json::from_str(&body) {
                    Ok(answer) => Invocation::Response(answer),
                    Err(e) => Invocation::Error(
                        serde_json::json!({"errorType": "InvalidResponse", "errorMessage": format!("{e}: {body}")}),
                    ),
                }
            }
            Err(ureq::Error::Status(status, response)) => {
                let body = response.into_string().unwrap_or_default();
                Invocation::Error(serde_json::from_str(&body).unwrap_or_else(
                    |_| serde_json::json!({"errorType": format!("HTTP {status}"), "errorMessage": body}),
                ))
            }
            Err(e) => Invocation::Error(serde_json::json!({"errorType": "Unreachable", "errorMessage": e.to_string()})),
        }
    }

    /// cargo lambda watch is listening.
    fn ready(&self) -> bool {
        std::net::TcpStream::connect_timeout(&self.address, Duration::from_millis(200)).is_ok()
    }
}
