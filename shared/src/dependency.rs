//! A call to another service that failed, classified once, where it failed: whether the same call can succeed later.
//! Ports return it instead of text, so no caller decides by reading a message.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::batch::RecordError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DependencyError {
    /// Throttled past the SDK's retries, timed out, a 5xx, unreachable: the same call may succeed later.
    #[error("{0}")]
    Unavailable(String),
    /// Refused as asked (access denied, a missing resource, a request the service will not take): it fails again
    /// until the set-up is fixed.
    #[error("{0}")]
    Refused(String),
}

/// Error codes that mean the request itself, or our permission to make it, is refused.
const REFUSED_CODES: [&str; 9] = [
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "ValidationException",
    "ValidationError",
    "ResourceNotFoundException",
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
    "InvalidParameterValue",
];

impl DependencyError {
    /// Whether calling again, unchanged, can help.
    pub fn retry_helps(&self) -> bool {
        matches!(self, DependencyError::Unavailable(_))
    }

    /// The same failure, saying what was being done (`reading /x`), so the log line needs no other context.
    pub fn within(self, context: impl std::fmt::Display) -> Self {
        match self {
            DependencyError::Unavailable(text) => DependencyError::Unavailable(format!("{context}: {text}")),
            DependencyError::Refused(text) => DependencyError::Refused(format!("{context}: {text}")),
        }
    }

    /// An SDK call's error: a service error with one of [`REFUSED_CODES`] is refused, anything else (throttling,
    /// 5xx, a timeout, a connection that failed) may pass later.
    pub fn from_sdk<E, R>(error: SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let refused = error.code().is_some_and(|code| REFUSED_CODES.contains(&code));
        let text = aws_smithy_types::error::display::DisplayErrorContext(&error).to_string();
        match refused {
            true => DependencyError::Refused(text),
            false => DependencyError::Unavailable(text),
        }
    }
}

/// A record whose dependency failed is not at fault: it comes back, whether for a later try or for an operator's fix
/// (the queue's redrive keeps it).
impl From<DependencyError> for RecordError {
    fn from(error: DependencyError) -> Self {
        RecordError::Transient(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::operation::send_message::SendMessageError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn service_error(code: &str) -> SdkError<SendMessageError, Response> {
        let error = SendMessageError::generic(
            ErrorMetadata::builder()
                .code(code)
                .message("as the service said")
                .build(),
        );
        SdkError::service_error(
            error,
            Response::new(StatusCode::try_from(400).unwrap(), SdkBody::empty()),
        )
    }

    #[test]
    fn access_denied_and_a_missing_resource_are_refused_throttling_and_timeouts_may_pass() {
        for code in [
            "AccessDenied",
            "AccessDeniedException",
            "AWS.SimpleQueueService.NonExistentQueue",
        ] {
            let error = DependencyError::from_sdk(service_error(code));
            assert!(
                matches!(&error, DependencyError::Refused(text) if text.contains(code)),
                "{code}: {error:?}"
            );
            assert!(!error.retry_helps());
        }
        for code in [
            "ThrottlingException",
            "RequestThrottled",
            "InternalError",
            "ServiceUnavailable",
        ] {
            assert!(DependencyError::from_sdk(service_error(code)).retry_helps(), "{code}");
        }
        let timeout: SdkError<SendMessageError, Response> = SdkError::timeout_error("attempt timed out");
        assert!(DependencyError::from_sdk(timeout).retry_helps());
    }

    #[test]
    fn either_brings_the_record_back() {
        for error in [
            DependencyError::Unavailable("throttled".into()),
            DependencyError::Refused("denied".into()),
        ] {
            assert!(matches!(RecordError::from(error), RecordError::Transient(_)));
        }
    }
}
