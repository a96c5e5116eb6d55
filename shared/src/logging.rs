//! Structured JSON logs with the request id on every line, and no email address in full.
//!
//! `lambda_runtime` opens a span per invocation carrying `requestId`; the JSON formatter writes the current span on
//! every line, so each line of an invocation names its request. Every line also passes through [`mask_emails`]
//! before it reaches stdout: a field that forgets to mask cannot leak an address.

use std::io::{self, Write};

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the JSON subscriber. The level comes from `AWS_LAMBDA_LOG_LEVEL` (set by Lambda's advanced logging
/// controls) or `RUST_LOG`, default `info`.
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().or_else(|| std::env::var("RUST_LOG").ok());
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
        .with_writer(MaskingStdout)
        .finish();
    let _ = subscriber.with(log_filter(level.as_deref())).try_init();
}

/// A level (`info`) or `target=level` directives (`info,aws_smithy_runtime=debug`), as `RUST_LOG` takes them;
/// Lambda's `FATAL` is `error`; anything unreadable, and every target not named, is `info`. `Targets`, not `EnvFilter`: the same directives
/// without a regex engine.
pub fn log_filter(level: Option<&str>) -> Targets {
    let directives = level.unwrap_or("info").trim().to_lowercase().replace("fatal", "error");
    match directives.parse::<Targets>() {
        Ok(targets) if targets.default_level().is_some() => targets,
        // Only targets named: the rest at `info`, not silenced.
        Ok(targets) => targets.with_default(tracing::Level::INFO),
        Err(_) => Targets::new().with_default(tracing::Level::INFO),
    }
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
        let looks_like_address = start < i && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.');
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
        use tracing::level_filters::LevelFilter;
        assert_eq!(log_filter(None).default_level(), Some(LevelFilter::INFO));
        assert_eq!(log_filter(Some("DEBUG")).default_level(), Some(LevelFilter::DEBUG));
        assert_eq!(log_filter(Some("FATAL")).default_level(), Some(LevelFilter::ERROR));
        assert_eq!(log_filter(Some("not a level!")).default_level(), Some(LevelFilter::INFO));
        let directives = log_filter(Some("warn,aws_smithy_runtime=debug"));
        assert!(directives.would_enable("aws_smithy_runtime::client", &tracing::Level::DEBUG));
        assert!(!directives.would_enable("shared::batch", &tracing::Level::INFO));
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
        for text in ["no address here", "a @ b", "user@localhost", "@example.com", "x@.com", "ü@ü", ""] {
            assert_eq!(mask_emails(text), text);
        }
    }

    #[test]
    fn writer_masks_what_passes_through() {
        let mut out = Vec::new();
        MaskingWriter(&mut out).write_all(b"{\"to\":\"alice@example.com\"}\n").unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"to\":\"a***@example.com\"}\n");
    }
}
