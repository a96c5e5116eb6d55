//! How the function's calls fail, each variant saying whether trying again helps. Every port returns one of these,
//! never text: [`DependencyError`] (shared by all the functions) for the pool, the queue, the once-only table and the
//! send-rate registry, and [`SendError`] for one email, whose outcome decides between a retry within the invocation,
//! a hand-on and the record coming back. Both become `shared::batch::RecordError` where a record's fate is decided.

pub use shared::dependency::DependencyError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The recipient is refused for good (invalid address, suppressed, rejected content): never retried.
    #[error("rejected: {0}")]
    Rejected(String),
    /// Throttled, 5xx or a timeout: may succeed on a retry within this invocation.
    #[error("not sent: {0}")]
    Retryable(String),
    /// The account's 24-hour quota is spent: nothing more goes out until it allows again.
    #[error("quota spent: {0}")]
    QuotaSpent(String),
    /// Refused for every recipient until an operator fixes it (AccessDenied, the sender's identity unverified):
    /// retrying within the invocation only repeats the refusal, so the message waits for its redelivery.
    #[error("refused: {0}")]
    Refused(String),
    /// No send slot, or too little time for the call, before the invocation's deadline (never the mailer's answer).
    #[error("no time left in this invocation")]
    NoTime,
}

impl SendError {
    /// Whether sending the same email again, within this invocation, can help.
    pub fn retry_helps(&self) -> bool {
        matches!(self, SendError::Retryable(_))
    }
}
