//! AWS client set-up: one `aws_config` load at init, shared by every client and reused across invocations.
//!
//! The standard chain is used untouched, so `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` point the functions
//! at a local AWS (moto) and nothing of that is set in production.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use crate::config::{ConfigError, Env, VarSource};

/// Standard retry mode (exponential backoff with jitter, throttling and 5xx retried) with a few more attempts than
/// the default three, because every worker runs under a service quota (Cognito, SES) that throttles bursts.
pub const MAX_ATTEMPTS: u32 = 4;

pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(20))
        .build()
}

pub async fn load_sdk_config() -> Result<SdkConfig, ConfigError> {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client(&Env::process())?)
        .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
        .timeout_config(timeouts())
        .load()
        .await;
    Ok(config)
}

/// The roots AWS service endpoints chain to (Amazon Trust Services), compiled in: the system store holds about 140
/// roots that would be read and parsed at the first connection of every cold start, to trust these five.
pub const AWS_ROOT_CERTIFICATES: &str = include_str!("../certs/amazon-trust-services.pem");

/// Extra root certificates (a PEM file), as the AWS CLI and the other SDKs take them: for a TLS-inspecting proxy, or a
/// local AWS behind a throwaway CA. Unset on Lambda.
pub const CA_BUNDLE_VARIABLE: &str = "AWS_CA_BUNDLE";

/// The SDK's HTTPS client (hyper and rustls), built here so that its crypto and its roots are ours to choose. Chosen
/// on `tests/bench.sh`'s figures (docs/performance.md, "Cold start and memory size"): ring, whose random numbers come
/// from the
/// kernel, instead of aws-lc, which seeds its generator from CPU jitter at the first handshake (about 20 ms of CPU,
/// 0.3 s at 128 MB); the AWS roots compiled in instead of the system store read and parsed at the first connection.
/// The features `tls-aws-lc` and `system-roots` bring the old choices back, for the benchmark's comparison.
///
/// An `AWS_CA_BUNDLE` that cannot be read, or holds anything but certificates, stops the cold start with an error that
/// names it (the SDK would panic on it at the first connection).
pub fn https_client<S: VarSource>(env: &Env<S>) -> Result<SharedHttpClient, ConfigError> {
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    #[cfg(feature = "tls-aws-lc")]
    let crypto = CryptoMode::AwsLc;
    #[cfg(not(feature = "tls-aws-lc"))]
    let crypto = CryptoMode::Ring;
    let builder = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(crypto));
    if cfg!(feature = "system-roots") {
        // rustls-native-certs: the system store, or the file `SSL_CERT_FILE` names.
        return Ok(builder.build_https());
    }
    let mut roots = tls::TrustStore::empty()
        .with_native_roots(false)
        .with_pem_certificate(AWS_ROOT_CERTIFICATES.as_bytes());
    if let Some(path) = env.optional(CA_BUNDLE_VARIABLE) {
        let bundle = std::fs::read(&path)
            .map_err(|e| ConfigError::invalid(CA_BUNDLE_VARIABLE, &path, format!("cannot read it: {e}")))?;
        let count =
            root_certificates(&bundle).map_err(|reason| ConfigError::invalid(CA_BUNDLE_VARIABLE, &path, reason))?;
        tracing::info!(variable = CA_BUNDLE_VARIABLE, count, "extra root certificates trusted");
        roots = roots.with_pem_certificate(bundle);
    }
    let context = tls::TlsContext::builder()
        .with_trust_store(roots)
        .build()
        .expect("a TLS context takes any trust store");
    Ok(builder.tls_context(context).build_https())
}

/// How many root certificates a PEM bundle holds, each checked as rustls will take it; an error for none or one bad.
pub fn root_certificates(pem: &[u8]) -> Result<usize, String> {
    use rustls_pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    for certificate in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
        let certificate = certificate.map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
        store
            .add(certificate)
            .map_err(|e| format!("a certificate that is not a usable root: {e}"))?;
    }
    match store.len() {
        0 => Err("no PEM certificate in it".into()),
        count => Ok(count),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RecordingSource;

    #[test]
    fn the_compiled_in_aws_roots_are_the_five_amazon_trust_services_roots() {
        assert_eq!(root_certificates(AWS_ROOT_CERTIFICATES.as_bytes()), Ok(5));
    }

    #[test]
    fn an_unusable_ca_bundle_stops_the_cold_start_naming_the_variable() {
        let dir = std::env::temp_dir().join(format!("ca-bundle-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not-pem.txt");
        std::fs::write(&not_pem, "hello").unwrap();
        let broken = dir.join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        for path in [dir.join("missing.pem"), not_pem, broken] {
            let path = path.display().to_string();
            let env = Env(RecordingSource::new(&[(CA_BUNDLE_VARIABLE, path.as_str())]));
            let error = https_client(&env)
                .err()
                .unwrap_or_else(|| panic!("{path} was taken"))
                .to_string();
            assert!(error.contains(CA_BUNDLE_VARIABLE) && error.contains(&path), "{error}");
        }
        let good = dir.join("good.pem");
        std::fs::write(&good, AWS_ROOT_CERTIFICATES).unwrap();
        let good = good.display().to_string();
        assert!(https_client(&Env(RecordingSource::new(&[(CA_BUNDLE_VARIABLE, good.as_str())]))).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
