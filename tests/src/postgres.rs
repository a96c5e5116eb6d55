//! A throwaway PostgreSQL server for a test or the local run: a new cluster in a temporary directory, on a free
//! loopback port, run in the foreground as a child that dies with its parent, removed on drop. The server refuses
//! to run as root, so as root it runs as the `postgres` user the distribution's package creates (tests/setup.sh
//! installs PostgreSQL where it is missing).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The superuser's password; the database is local and thrown away.
pub const SUPERUSER_PASSWORD: &str = "local-superuser";

pub struct Postgres {
    child: Child,
    dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    output: crate::ServerOutput,
}

/// The directory of `initdb` and `postgres`: Debian keeps them under /usr/lib/postgresql/<version>/bin.
fn bin_dir() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(Result::ok)
                .map(|d| d.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    if let Some(newest) = candidates.pop() {
        return newest;
    }
    let found = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    match found {
        Some(output) => PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
        None => {
            panic!("PostgreSQL's initdb not found: run `bash tests/setup.sh` (the README's commands do) to install it")
        }
    }
}

/// As root, the uid and gid of `postgres`; otherwise `None` (run as ourselves).
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: getuid and getpwnam read process and passwd state; the result is copied out at once.
    unsafe {
        if libc::getuid() != 0 {
            return None;
        }
        let entry = libc::getpwnam(c"postgres".as_ptr());
        assert!(
            !entry.is_null(),
            "running as root needs a `postgres` user to run the server: run `bash tests/setup.sh`"
        );
        Some(((*entry).pw_uid, (*entry).pw_gid))
    }
}

fn as_server_user(command: &mut Command) -> &mut Command {
    if let Some((uid, gid)) = server_user() {
        command.uid(uid).gid(gid).env("HOME", "/tmp");
    }
    command
}

impl Postgres {
    pub fn start() -> Postgres {
        Self::start_with(false)
    }

    /// A server that takes only TLS connections over TCP (a self-signed certificate made with openssl), as RDS
    /// with `rds.force_ssl`: a client that connects at all has spoken TLS.
    pub fn start_tls_only() -> Postgres {
        Self::start_with(true)
    }

    fn start_with(tls_only: bool) -> Postgres {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!(
            "event-workers-pg-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let data = dir.join("data");
        std::fs::create_dir_all(&dir).expect("create the cluster's directory");
        let password_file = dir.join("password");
        std::fs::write(&password_file, SUPERUSER_PASSWORD).expect("write the password file");
        if let Some((uid, gid)) = server_user() {
            for path in [&dir, &password_file] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("hand the directory to postgres");
            }
        }
        let output = as_server_user(Command::new(bin.join("initdb")).args([
            "-D",
            &data.to_string_lossy(),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            "--pwfile",
            &password_file.to_string_lossy(),
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]))
        .output()
        .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );

        let mut tls = Vec::new();
        if tls_only {
            let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
            let made = Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=localhost",
                    "-keyout",
                ])
                .arg(&key)
                .arg("-out")
                .arg(&cert)
                .output()
                .expect("run openssl (Debian's openssl package; tests/setup.sh installs it where missing)");
            assert!(
                made.status.success(),
                "openssl failed: {}",
                String::from_utf8_lossy(&made.stderr)
            );
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("key permissions");
            if let Some((uid, gid)) = server_user() {
                for path in [&cert, &key] {
                    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("hand the certificate to postgres");
                }
            }
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n",
            )
            .expect("write pg_hba.conf");
            tls = vec![
                "-c".to_owned(),
                "ssl=on".to_owned(),
                "-c".to_owned(),
                format!("ssl_cert_file={}", cert.display()),
                "-c".to_owned(),
                format!("ssl_key_file={}", key.display()),
            ];
        }
        let port = crate::free_port();
        let mut command = Command::new(bin.join("postgres"));
        command.args(&tls);
        command
            .args([
                "-D",
                &data.to_string_lossy(),
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
            ])
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args([
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "synchronous_commit=off",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_server_user(&mut command);
        crate::die_with_parent(&mut command);
        let mut child = command.spawn().expect("start postgres");
        // The server says so once it accepts connections.
        let output = crate::ServerOutput::watch(
            child.stderr.take().expect("stderr is piped"),
            "ready to accept connections",
            200,
        );
        output.wait_for("postgres", Duration::from_secs(60));
        Postgres {
            child,
            dir,
            port,
            bin,
            output,
        }
    }

    /// The last lines the server logged.
    pub fn log(&self) -> String {
        self.output.text()
    }

    /// A libpq URL to `database` as `user` with `password`.
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// Runs `sql` as the superuser in `database` with psql; panics with psql's output when it fails.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
                "-At",
                "-c",
                sql,
            ])
            .env("PGPASSWORD", SUPERUSER_PASSWORD)
            .output()
            .expect("run psql");
        assert!(
            output.status.success(),
            "psql failed on {sql}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
