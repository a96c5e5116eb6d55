//! The invocation's deadline as a point on tokio's clock, less a margin: work that would end past it is not started,
//! so a function answers (and reports what it could not do) before Lambda cuts it off.
//!
//! Lambda always sends a deadline in the future. cargo-lambda's emulator (`cargo lambda watch`) sends the constant
//! `Lambda-Runtime-Deadline-Ms: 600000`, ten minutes after the Unix epoch, so under it every invocation would look
//! already late: nothing done, everything handed back or handed on. A deadline already past when the invocation
//! arrives is therefore read as "no deadline given", and the function works to a local budget instead: its template
//! `Timeout`, or [`LOCAL_BUDGET_VARIABLE`] seconds. The first such invocation logs one warning naming the cause.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::config::{ConfigError, Env, VarSource};

/// Seconds an invocation that arrives with its deadline already past may work (default: the template `Timeout`).
/// Never needed on Lambda; for `cargo lambda watch`, where every deadline is past.
pub const LOCAL_BUDGET_VARIABLE: &str = "LOCAL_DEADLINE_SECONDS";

/// How a function reads its invocations' deadlines.
#[derive(Debug)]
pub struct DeadlineRule {
    local_budget: Duration,
    warned: AtomicBool,
}

impl DeadlineRule {
    pub fn new(local_budget: Duration) -> Self {
        Self {
            local_budget,
            warned: AtomicBool::new(false),
        }
    }

    /// `timeout` is the function's template `Timeout`, the budget unless [`LOCAL_BUDGET_VARIABLE`] says otherwise.
    pub fn from_env<S: VarSource>(env: &Env<S>, timeout: Duration) -> Result<Self, ConfigError> {
        let seconds: u64 = env.parsed_or(LOCAL_BUDGET_VARIABLE, timeout.as_secs())?;
        if seconds == 0 {
            return Err(ConfigError::invalid(
                LOCAL_BUDGET_VARIABLE,
                "0",
                "must be at least 1 second",
            ));
        }
        Ok(Self::new(Duration::from_secs(seconds)))
    }

    /// `deadline_ms` is the Runtime API's `Lambda-Runtime-Deadline-Ms` (`lambda_runtime::Context::deadline`).
    pub fn work_deadline(&self, deadline_ms: u64, margin: Duration) -> Instant {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Instant::now() + self.remaining(deadline_ms, now_ms).saturating_sub(margin)
    }

    /// The time left at `now_ms`: the deadline's when it is ahead, the local budget when it is already past.
    fn remaining(&self, deadline_ms: u64, now_ms: u64) -> Duration {
        if deadline_ms > now_ms {
            return Duration::from_millis(deadline_ms - now_ms);
        }
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                deadline_ms,
                local_budget_seconds = self.local_budget.as_secs(),
                "the invocation's deadline was already past when it arrived: Lambda never sends one, cargo-lambda's \
                 emulator sends the constant 600000; each such invocation works to the local budget instead (the \
                 template Timeout, or {LOCAL_BUDGET_VARIABLE})"
            );
        }
        self.local_budget
    }

    /// Whether an invocation has been read against the local budget (and the warning logged).
    pub fn warned(&self) -> bool {
        self.warned.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_ms() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
    }

    #[test]
    fn a_deadline_ahead_is_honoured_exactly_less_the_margin() {
        let rule = DeadlineRule::new(Duration::from_secs(30));
        let deadline = rule.work_deadline(now_ms() + 10_000, Duration::from_secs(2));
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            left <= Duration::from_secs(8) && left > Duration::from_millis(7_500),
            "{left:?}"
        );
        // A few milliseconds ahead is still Lambda's deadline, not the local budget.
        assert_eq!(rule.remaining(1_000_005, 1_000_000), Duration::from_millis(5));
        assert_eq!(rule.remaining(1_000_001, 1_000_000), Duration::from_millis(1));
        assert!(!rule.warned(), "no warning while deadlines are in the future");
    }

    #[test]
    fn a_deadline_past_on_arrival_gives_the_local_budget_and_one_warning() {
        let rule = DeadlineRule::new(Duration::from_secs(30));
        // cargo-lambda's constant, and a deadline exactly now.
        assert_eq!(rule.remaining(600_000, now_ms()), Duration::from_secs(30));
        assert!(rule.warned());
        assert_eq!(rule.remaining(1_000_000, 1_000_000), Duration::from_secs(30));
        let deadline = rule.work_deadline(600_000, Duration::from_secs(2));
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            left <= Duration::from_secs(28) && left > Duration::from_millis(27_500),
            "{left:?}"
        );
    }

    /// The lines `f` logs, as the fmt subscriber writes them.
    fn logs_of(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buffer.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn the_warning_is_logged_once() {
        let logs = logs_of(|| {
            let rule = DeadlineRule::new(Duration::from_secs(30));
            for _ in 0..3 {
                rule.work_deadline(600_000, Duration::ZERO);
            }
        });
        assert_eq!(logs.matches("already past when it arrived").count(), 1, "{logs}");
        assert!(logs.contains("cargo-lambda"), "the warning names the cause: {logs}");
    }

    #[test]
    fn the_budget_is_the_timeout_unless_the_variable_says_otherwise() {
        let env = Env::from_pairs(&[]);
        assert_eq!(
            DeadlineRule::from_env(&env, Duration::from_secs(120))
                .unwrap()
                .local_budget,
            Duration::from_secs(120)
        );
        let env = Env::from_pairs(&[(LOCAL_BUDGET_VARIABLE, "900")]);
        assert_eq!(
            DeadlineRule::from_env(&env, Duration::from_secs(120))
                .unwrap()
                .local_budget,
            Duration::from_secs(900)
        );
        for bad in ["0", "soon", "-1"] {
            let env = Env(std::collections::HashMap::from([(LOCAL_BUDGET_VARIABLE, bad)]));
            let error = DeadlineRule::from_env(&env, Duration::from_secs(120))
                .unwrap_err()
                .to_string();
            assert!(error.contains(LOCAL_BUDGET_VARIABLE), "{error}");
        }
    }
}
