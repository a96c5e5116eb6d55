//! Structured JSON logs with the request id on every line, and no email address in full.
//!
//! `lambda_runtime` opens a span per invocation carrying `requestId`; the JSON formatter writes the current span on
//! every line, so each line of an invocation names its request. Every line also passes through [`mask_emails`]
//! before it reaches stdout: a field that forgets to mask cannot leak an address.

use std::io::{self, Write};

use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the JSON subscriber. The level comes from `AWS_LAMBDA_LOG_LEVEL` (set by Lambda's advanced logging
/// controls) or `RUST_LOG`, default `info`; see [`log_filter`] for what the SDK's own crates may write.
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok());
    let subscriber = tracing_subscriber::fmt()
        // The fmt builder caps at INFO by default, under any filter layered on it: the filter alone decides.
        .with_max_level(tracing::Level::TRACE)
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
        .with_writer(MaskingStdout)
        .finish();
    let _ = subscriber.with(log_filter(level.as_deref())).try_init();
}

/// The crates that see requests, responses and events on the wire: at `trace` they write bodies (a decrypted
/// SecureString, an address, `lambda_runtime` the whole event with an unsubscribe token in it), and `aws_sigv4`
/// writes the canonical request, session token included, at `debug`.
const WIRE_TARGETS: [&str; 11] = [
    "aws_smithy_runtime",
    "aws_smithy_http_client",
    "aws_runtime",
    "aws_config",
    "hyper",
    "hyper_util",
    "h2",
    "rustls",
    "lambda_runtime",
    "lambda_runtime_api_client",
    "lambda_http",
];

/// A level (`info`) or `target=level` directives (`info,aws_smithy_runtime=debug`), as `RUST_LOG` takes them;
/// Lambda's `FATAL` is `error`; anything unreadable, and every target not named, is `info`. `Targets`, not
/// `EnvFilter`: the same directives without a regex engine.
///
/// A plain level is this project's: the SDK and HTTP crates ([`WIRE_TARGETS`]) stay at `info` unless named, and
/// even named go no further than `debug`; `aws_sigv4` never below `info`. No level writes a credential, a token
/// or a body.
pub fn log_filter(level: Option<&str>) -> Targets {
    let directives = level.unwrap_or("info").trim().to_lowercase().replace("fatal", "error");
    let targets = match directives.parse::<Targets>() {
        Ok(targets) if targets.default_level().is_some() => targets,
        // Only targets named: the rest at `info`, not silenced.
        Ok(targets) => targets.with_default(tracing::Level::INFO),
        Err(_) => Targets::new().with_default(tracing::Level::INFO),
    };
    let named: Vec<(String, LevelFilter)> = targets
        .iter()
        .map(|(target, level)| (target.to_owned(), level))
        .collect();
    let mut capped = targets;
    for wire in WIRE_TARGETS {
        let level = named
            .iter()
            .find(|(target, _)| target == wire)
            .map(|(_, level)| (*level).min(LevelFilter::DEBUG))
            .unwrap_or(LevelFilter::INFO);
        capped = capped.with_target(wire, level);
    }
    // Named wire targets' sub-targets (`aws_smithy_runtime::client`) take their crate's cap: a deeper directive
    // would otherwise win over it.
    for (target, level) in &named {
        if WIRE_TARGETS.iter().any(|wire| target.starts_with(&format!("{wire}::"))) {
            capped = capped.with_target(target.clone(), (*level).min(LevelFilter::DEBUG));
        }
    }
    capped.with_target("aws_sigv4", LevelFilter::INFO)
}

/// Stdout, with email addresses masked. tracing-subscriber formats a whole line and writes it at once.
pub struct MaskingStdout;

pub struct MaskingWriter<W: Write>(pub W);

impl<W: Write> Write for MaskingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.write_all(mask_emails(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl<'a> MakeWriter<'a> for MaskingStdout {
    type Writer = MaskingWriter<io::StdoutLock<'a>>;
    fn make_writer(&'a self) -> Self::Writer {
        MaskingWriter(io::stdout().lock())
    }
}

fn is_local_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"._%+-'".contains(&c)
}

fn is_domain_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'.' || c == b'-'
}

/// `jane.doe@example.com` -> `j***@example.com`. The domain stays (it tells which provider rejected a message);
/// the local part, which identifies the person, does not.
pub fn mask_emails(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'@' {
            i += 1;
            continue;
        }
        let mut start = i;
        while start > copied && is_local_char(bytes[start - 1]) {
            start -= 1;
        }
        let mut end = i + 1;
        while end < bytes.len() && is_domain_char(bytes[end]) {
            end += 1;
        }
        let domain = text[i + 1..end].trim_end_matches('.');
        let looks_like_address =
            start < i && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.');
        if looks_like_address {
            out.push_str(&text[copied..start]);
            out.push_str(&text[start..start + 1]);
            out.push_str("***@");
            copied = i + 1;
        }
        i += 1;
    }
    out.push_str(&text[copied..]);
    out
}

/// One address, masked: for fields that name a recipient.
pub fn mask_email(address: &str) -> String {
    mask_emails(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_level_comes_from_lambda_or_rust_log_directives() {
        assert_eq!(log_filter(None).default_level(), Some(LevelFilter::INFO));
        assert_eq!(log_filter(Some("DEBUG")).default_level(), Some(LevelFilter::DEBUG));
        assert_eq!(log_filter(Some("FATAL")).default_level(), Some(LevelFilter::ERROR));
        assert_eq!(
            log_filter(Some("not a level!")).default_level(),
            Some(LevelFilter::INFO)
        );
        let directives = log_filter(Some("warn,aws_smithy_runtime=debug"));
        assert!(directives.would_enable("aws_smithy_runtime::client", &tracing::Level::DEBUG));
        assert!(!directives.would_enable("shared::batch", &tracing::Level::INFO));
    }

    #[test]
    fn a_plain_level_is_ours_and_the_wire_crates_never_write_bodies_or_signatures() {
        let debug = log_filter(Some("debug"));
        assert!(debug.would_enable("cognito_attribute_sync::handler", &tracing::Level::DEBUG));
        assert!(!debug.would_enable("aws_smithy_runtime::client::orchestrator", &tracing::Level::DEBUG));
        assert!(debug.would_enable("aws_smithy_runtime::client::orchestrator", &tracing::Level::INFO));
        let everything = log_filter(Some(
            "trace,aws_smithy_runtime=trace,aws_smithy_runtime::client=trace,aws_sigv4=trace,hyper=trace",
        ));
        assert!(everything.would_enable("shared::batch", &tracing::Level::TRACE));
        assert!(everything.would_enable("aws_smithy_runtime::client", &tracing::Level::DEBUG));
        assert!(!everything.would_enable("aws_smithy_runtime::client", &tracing::Level::TRACE));
        assert!(!everything.would_enable("hyper::proto", &tracing::Level::TRACE));
        assert!(!everything.would_enable("aws_sigv4::http_request", &tracing::Level::DEBUG));
    }

    #[test]
    fn masks_the_local_part_and_keeps_the_domain() {
        assert_eq!(mask_email("jane.doe@example.com"), "j***@example.com");
        assert_eq!(
            mask_emails(r#"{"msg":"sent to jane+x@mail.example.org and bob@b.io","n":1}"#),
            r#"{"msg":"sent to j***@mail.example.org and b***@b.io","n":1}"#
        );
    }

    #[test]
    fn leaves_text_without_addresses_alone() {
        for text in [
            "no address here",
            "a @ b",
            "user@localhost",
            "@example.com",
            "x@.com",
            "ü@ü",
            "",
        ] {
            assert_eq!(mask_emails(text), text);
        }
    }

    #[test]
    fn writer_masks_what_passes_through() {
        let mut out = Vec::new();
        MaskingWriter(&mut out)
            .write_all(b"{\"to\":\"alice@example.com\"}\n")
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"to\":\"a***@example.com\"}\n");
    }
}
