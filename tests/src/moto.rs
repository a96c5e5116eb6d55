//! moto in server mode, from the project's virtual environment (created by `tests/setup.sh`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Moto {
    child: Child,
    pub endpoint: String,
    /// What moto writes to stderr (every request), drained continuously; its last lines kept.
    pub output: crate::ServerOutput,
}

const STDERR_LINES_KEPT: usize = 50;

/// `MOTO_SERVER` when set, else `.venv/bin/moto_server` in the workspace.
pub fn moto_server_path() -> PathBuf {
    std::env::var_os("MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join(".venv/bin/moto_server"))
}

impl Moto {
    pub fn start() -> Moto {
        let server = moto_server_path();
        assert!(
            server.exists(),
            "{} not found: run `bash tests/setup.sh` (the README's test command does) to install moto",
            server.display()
        );
        let port = crate::free_port();
        let mut command = Command::new(&server);
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        crate::die_with_parent(&mut command);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", server.display()));
        // moto (werkzeug) says ` * Running on http://...` once it listens.
        let output = crate::ServerOutput::watch(
            child.stderr.take().expect("stderr is piped"),
            "Running on",
            STDERR_LINES_KEPT,
        );
        output.wait_for("moto", Duration::from_secs(60));
        Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            output,
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
