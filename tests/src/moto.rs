//! moto in server mode, from the project's virtual environment (created by `tests/setup.sh`).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Moto {
    child: Child,
    pub endpoint: String,
    /// The last lines moto wrote to stderr. It logs every request there, so the pipe is drained continuously: a full
    /// pipe would block moto mid-request.
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

const STDERR_LINES_KEPT: usize = 50;

/// `MOTO_SERVER` when set, else `.venv/bin/moto_server` in the workspace.
pub fn moto_server_path() -> PathBuf {
    std::env::var_os("MOTO_SERVER").map(PathBuf::from).unwrap_or_else(|| crate::workspace_root().join(".venv/bin/moto_server"))
}

impl Moto {
    pub fn start() -> Moto {
        let server = moto_server_path();
        assert!(server.exists(), "{} not found: run `bash tests/setup.sh` (the README's test command does) to install moto", server.display());
        let port = crate::free_port();
        let mut command = Command::new(&server);
        command.args(["-H", "127.0.0.1", "-p", &port.to_string()]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        crate::die_with_parent(&mut command);
        let mut child = command.spawn().unwrap_or_else(|e| panic!("starting {}: {e}", server.display()));
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(pipe) = child.stderr.take() {
            let tail = stderr_tail.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut tail = tail.lock().unwrap();
                    if tail.len() == STDERR_LINES_KEPT {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
        }
        let mut moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}"), stderr_tail };
        moto.wait_ready(port);
        moto
    }

    fn wait_ready(&mut self, port: u16) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(status)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                let stderr = self.stderr_tail.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n");
                panic!("moto exited at start ({status}):\n{stderr}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("moto did not listen on port {port} within 60 s");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
