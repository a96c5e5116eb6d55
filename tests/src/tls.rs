//! The local AWS behind TLS, as Lambda reaches the real one: a throwaway certificate authority, a server certificate
//! chain shaped like AWS's (RSA 2048: root, intermediate, leaf), and a TLS front that terminates it and forwards the
//! plain bytes to the local AWS (moto, or the recording proxy in front of it).
//!
//! The functions trust the throwaway root through `AWS_CA_BUNDLE` (shared::aws: extra roots beside the compiled-in
//! AWS ones, one more certificate to parse, as a corporate proxy's would be). A build with the `system-roots` lever
//! reads the system store instead, through `SSL_CERT_FILE`: [`LocalCa::trust_bundle`] is the machine's own bundle plus
//! the throwaway root, as large as Lambda's (about 140 roots), so that lever is timed on what it would load there.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

/// Where Debian (and this machine) keeps the system's root certificates; Amazon Linux's is
/// `/etc/pki/tls/certs/ca-bundle.crt`, of about the same size.
pub const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A throwaway CA and the server certificate it issued, in a temporary directory removed on drop.
pub struct LocalCa {
    dir: PathBuf,
    /// The throwaway root alone: what `AWS_CA_BUNDLE` names.
    pub root: PathBuf,
    /// The system's roots plus the throwaway root: what `SSL_CERT_FILE` names.
    pub trust_bundle: PathBuf,
    /// Leaf then intermediate, as a server sends them.
    chain: PathBuf,
    key: PathBuf,
}

impl LocalCa {
    /// Makes the chain with openssl (Debian's openssl package; tests/setup.sh installs it where missing). The leaf
    /// names `localhost` and `hosts` (IP addresses).
    pub fn create(hosts: &[String]) -> LocalCa {
        let dir = std::env::temp_dir().join(format!("local-ca-{}-{}", std::process::id(), crate::free_port()));
        std::fs::create_dir_all(&dir).expect("a directory for the throwaway CA");
        let file = |name: &str| dir.join(name);
        let openssl = |args: &[&str]| {
            let made = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("run openssl (tests/setup.sh installs it where missing)");
            assert!(
                made.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&made.stderr)
            );
        };
        let sans: Vec<String> = std::iter::once("DNS:localhost".to_owned())
            .chain(hosts.iter().map(|ip| format!("IP:{ip}")))
            .collect();
        std::fs::write(
            file("ca.ext"),
            "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
        )
        .unwrap();
        std::fs::write(
            file("leaf.ext"),
            format!(
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName={}\n",
                sans.join(",")
            ),
        )
        .unwrap();
        let rsa = ["-newkey", "rsa:2048", "-nodes", "-sha256"];
        openssl(
            &[
                &["req", "-x509"],
                &rsa[..],
                &[
                    "-days",
                    "2",
                    "-keyout",
                    "root.key",
                    "-out",
                    "root.pem",
                    "-subj",
                    "/CN=Local AWS bench root",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"],
                &rsa[..],
                &[
                    "-keyout",
                    "int.key",
                    "-out",
                    "int.csr",
                    "-subj",
                    "/CN=Local AWS bench intermediate",
                ],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            "int.csr",
            "-CA",
            "root.pem",
            "-CAkey",
            "root.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            "ca.ext",
            "-out",
            "int.pem",
        ]);
        openssl(
            &[
                &["req"],
                &rsa[..],
                &["-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost"],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "int.pem",
            "-CAkey",
            "int.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-sha256",
            "-extfile",
            "leaf.ext",
            "-out",
            "leaf.pem",
        ]);
        let read = |name: &str| std::fs::read(file(name)).unwrap();
        std::fs::write(file("chain.pem"), [read("leaf.pem"), read("int.pem")].concat()).unwrap();
        let system = std::fs::read(SYSTEM_BUNDLE)
            .unwrap_or_else(|e| panic!("{SYSTEM_BUNDLE}: {e} (Debian's ca-certificates package)"));
        std::fs::write(
            file("trust-bundle.pem"),
            [system, b"\n".to_vec(), read("root.pem")].concat(),
        )
        .unwrap();
        LocalCa {
            root: file("root.pem"),
            trust_bundle: file("trust-bundle.pem"),
            chain: file("chain.pem"),
            key: file("leaf.key"),
            dir,
        }
    }

    fn server_config(&self) -> rustls::ServerConfig {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let chain = CertificateDer::pem_file_iter(&self.chain)
            .expect("the chain")
            .collect::<Result<Vec<_>, _>>()
            .expect("PEM certificates");
        let key = PrivateKeyDer::from_pem_file(&self.key).expect("the leaf's key");
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("the leaf matches its key")
    }
}

impl Drop for LocalCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Terminates TLS on one port of each of several loopback addresses and forwards every connection, as plain TCP, to
/// `upstream`. Several addresses stand for AWS's several service hosts: a client opens one connection (and one
/// handshake) per host, as it does against `ssm.<region>.amazonaws.com`, `cognito-idp...` and so on.
pub struct TlsFront {
    pub port: u16,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsFront {
    pub fn start(ca: &LocalCa, hosts: &[String], upstream: &str) -> TlsFront {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the TLS front");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(ca.server_config()));
        let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let port = crate::free_port();
        for host in hosts {
            // Bound here, before returning, so a client can connect at once; served on the front's own runtime (a
            // std listener, so this works inside a caller's runtime too).
            let listener = std::net::TcpListener::bind((host.as_str(), port))
                .unwrap_or_else(|e| panic!("listen on {host}:{port}: {e}"));
            listener.set_nonblocking(true).expect("a non-blocking listener");
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            runtime.spawn(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("a listener on the front's runtime");
                while let Ok((client, _)) = listener.accept().await {
                    let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
                    tokio::spawn(async move {
                        let _ = client.set_nodelay(true);
                        let Ok(mut tls) = acceptor.accept(client).await else {
                            return;
                        };
                        let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let _ = plain.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    });
                }
            });
        }
        TlsFront {
            port,
            runtime: Some(runtime),
        }
    }

    /// `https://<host>:<port>`, for `AWS_ENDPOINT_URL_<SERVICE>`.
    pub fn endpoint(&self, host: &str) -> String {
        format!("https://{host}:{}", self.port)
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
