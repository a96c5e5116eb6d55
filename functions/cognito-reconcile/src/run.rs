//! A reconciliation run as the function sees it: the request that starts or continues it, the counts it carries
//! from one invocation to the next, and the summary it answers with.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Every count is cumulative over the whole run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    /// Table rows read.
    pub scanned: u64,
    pub in_sync: u64,
    pub drifted: u64,
    pub repaired: u64,
    /// Rows whose user is not in the pool (never created: sign-up creates users).
    pub missing_in_pool: u64,
    /// Pool users with no row (never touched).
    pub not_in_database: u64,
    /// Rows whose values Cognito cannot take, or writes that kept failing.
    pub failed: u64,
    /// Drifted users whose attributes a newer change had set meanwhile (through the ordering guard): left as they are.
    pub superseded: u64,
}

/// One attribute that differs, as the dry run reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Difference {
    pub attribute: String,
    pub cognito: Option<String>,
    pub database: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    /// The address, masked.
    pub user: String,
    pub differences: Vec<Difference>,
}

/// At most this many drifted (dry run) and missing users are listed.
pub const LISTED_AT_MOST: usize = 100;

/// Where a run stands: what an invocation hands the next one (the summary's `continuation`, given back as the whole
/// event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Continuation {
    pub dry_run: bool,
    /// When the run started (RFC 3339): it names the run.
    pub run_started_at: String,
    /// The key (lower-cased address) of the last row handled; the next invocation reads after it.
    #[serde(default)]
    pub after: Option<String>,
    pub counts: Counts,
    #[serde(default)]
    pub drifted_users: Vec<Drift>,
    #[serde(default)]
    pub missing_users: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Start { dry_run: bool },
    Continue(Continuation),
}

/// A scheduled event (EventBridge rule: repair), `{"dryRun": bool}` (by hand, or a schedule's input), or a
/// continuation.
pub fn parse_request(payload: &Value) -> Result<Request, String> {
    if payload.get("runStartedAt").is_some() {
        let continuation =
            serde_json::from_value(payload.clone()).map_err(|e| format!("not a continuation of a run: {e}"))?;
        return Ok(Request::Continue(continuation));
    }
    if payload.get("source").and_then(Value::as_str) == Some("aws.events")
        && payload.get("detail-type").and_then(Value::as_str) == Some("Scheduled Event")
    {
        return Ok(Request::Start { dry_run: false });
    }
    match payload.get("dryRun") {
        Some(Value::Bool(dry_run)) => Ok(Request::Start { dry_run: *dry_run }),
        _ => {
            Err(r#"expected {"dryRun": true} or {"dryRun": false}, a scheduled event, or a run's continuation"#.into())
        }
    }
}

/// What the function answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub dry_run: bool,
    pub complete: bool,
    #[serde(flatten)]
    pub counts: Counts,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drifted_users: Vec<Drift>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_users: Vec<String>,
    /// Present until the run is complete: invoke the function with exactly this object to go on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continuation: Option<Continuation>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests() {
        assert_eq!(
            parse_request(&json!({"dryRun": true})),
            Ok(Request::Start { dry_run: true })
        );
        assert_eq!(
            parse_request(&json!({"dryRun": false})),
            Ok(Request::Start { dry_run: false })
        );
        let scheduled = json!({"version": "0", "source": "aws.events", "detail-type": "Scheduled Event", "detail": {}});
        assert_eq!(
            parse_request(&scheduled),
            Ok(Request::Start { dry_run: false }),
            "a schedule repairs"
        );
        assert!(parse_request(&json!({})).unwrap_err().contains("dryRun"));
        assert!(parse_request(&json!({"dryRun": "yes"})).is_err());
    }

    #[test]
    fn a_summarys_continuation_is_a_request_that_continues_the_run() {
        let continuation = Continuation {
            dry_run: true,
            run_started_at: "2026-11-23T10:00:00Z".into(),
            after: Some("m@example.com".into()),
            counts: Counts {
                scanned: 7,
                drifted: 2,
                ..Default::default()
            },
            drifted_users: vec![],
            missing_users: vec!["a***@example.com".into()],
        };
        let summary = Summary {
            dry_run: true,
            complete: false,
            counts: continuation.counts.clone(),
            drifted_users: vec![],
            missing_users: vec![],
            continuation: Some(continuation.clone()),
        };
        let answered = serde_json::to_value(&summary).unwrap();
        assert_eq!(answered["scanned"], 7);
        assert_eq!(answered["complete"], false);
        assert_eq!(
            parse_request(&answered["continuation"]),
            Ok(Request::Continue(continuation))
        );
    }
}
