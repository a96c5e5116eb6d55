//! moto in server mode, from the project's virtual environment (created by `tests/setup.sh`).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
        // moto (werkzeug) says ` * Running on http://...` once it listens: the start waits for that line, or for the
        // end of its output when it exits instead.
        let (ready, listening) = channel::<bool>();
        if let Some(pipe) = child.stderr.take() {
            let tail = stderr_tail.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.contains("Running on") {
                        let _ = ready.send(true);
                    }
                    let mut tail = tail.lock().unwrap();
                    if tail.len() == STDERR_LINES_KEPT {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
                let _ = ready.send(false);
            });
        }
        let moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}"), stderr_tail };
        match listening.recv_timeout(Duration::from_secs(60)) {
            Ok(true) => moto,
            Ok(false) | Err(RecvTimeoutError::Disconnected) => panic!("moto exited at start:\n{}", moto.stderr()),
            Err(RecvTimeoutError::Timeout) => panic!("moto did not listen on port {port} within 60 s:\n{}", moto.stderr()),
        }
    }

    fn stderr(&self) -> String {
        self.stderr_tail.lock().unwrap().iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
