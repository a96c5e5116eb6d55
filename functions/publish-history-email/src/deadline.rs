//! The invocation's time, as both the batch and each send count it: nothing starts after the work deadline
//! (Lambda's deadline less [`DEADLINE_MARGIN`]), and what is running then has [`ANSWER_SLACK`] more to finish.

use std::time::Duration;

/// The invocation's deadline less this is when no send may start; what is still running `ANSWER_SLACK` later is
/// given up, leaving a second to answer before Lambda's deadline.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(3);
pub const ANSWER_SLACK: Duration = Duration::from_secs(2);
