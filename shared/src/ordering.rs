//! The ordering guard: an older change of a user never overwrites a newer one, whatever order, how often and in how
//! many instances at once the changes arrive. Shared by every writer of the user attributes (the event path and the
//! reconciliation), so they order against each other too.
//!
//! Per user, one item keeps the version (microseconds since the epoch) of the last change applied and, while a
//! writer works, a lease. A writer claims the user for its version with a conditional write: granted only when no
//! newer version was applied and nobody holds an unexpired lease. It then writes Cognito and commits (the version
//! moves, the lease goes). The lease lasts until the writer's invocation ends, so a crashed writer blocks the user
//! only until then, and two writers can never write the same user at once.
//!
//! Table (`ORDERING_TABLE`): partition key `id` (String) = `user#` and a SHA-256 of the lower-cased email, so the
//! table holds no address; `version` (Number), `deleted` (Boolean: the last change applied was a deletion),
//! `lease_owner` (String) and `lease_until` (Number, epoch milliseconds) while claimed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::dependency::DependencyError;

/// How long a lease outlives its writer's invocation: a Cognito request sent just before Lambda cut the invocation
/// off may still be applied after its deadline (the SDK's attempt timeout is 5 s); no other writer starts before.
pub const LEASE_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A change's place in a user's history: microseconds since the epoch.
pub type Version = i64;

/// The version of a point in time.
pub fn version_of(time: DateTime<Utc>) -> Version {
    time.timestamp_micros()
}

/// Parses a timestamp as rows and events carry it: RFC 3339 (`2026-11-20T10:00:00.123Z`), Postgres' text form
/// (`2026-11-20 10:00:00.123+00`), or a number of milliseconds since the epoch.
pub fn parse_version(value: &serde_json::Value) -> Option<Version> {
    match value {
        serde_json::Value::Number(n) => n.as_i64().and_then(|ms| ms.checked_mul(1000)),
        serde_json::Value::String(s) => {
            let s = s.trim();
            let normalised = match s.as_bytes().get(10) {
                Some(b' ') => format!("{}T{}", &s[..10], &s[11..]),
                _ => s.to_owned(),
            };
            // Postgres writes a bare `+00` offset; RFC 3339 wants `+00:00`.
            let normalised = match normalised.rfind(['+', '-']) {
                Some(i) if i > 10 && normalised.len() - i == 3 => format!("{normalised}:00"),
                _ => normalised,
            };
            DateTime::parse_from_rfc3339(&normalised)
                .ok()
                .map(|t| version_of(t.with_timezone(&Utc)))
        }
        _ => None,
    }
}

/// The guard's key of a user: no address in clear.
pub fn user_key(email: &str) -> String {
    let digest = Sha256::digest(email.trim().to_lowercase().as_bytes());
    let hash: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("user#{hash}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours until committed, released, or the lease lapses.
    Acquired(Lease),
    /// A change at least as new was applied before: this one must not be.
    Stale { applied: Version },
    /// Another writer holds the user right now: try again later.
    Busy,
}

/// What a claim does with a change of exactly the version last applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameVersion {
    /// Apply it again: the reconciliation repairs a user whose Cognito attributes drifted since its last change.
    Apply,
    /// It is that change, delivered again: stale, so a redelivery costs no Cognito call (the event path).
    Skip,
}

/// A granted claim: who holds it, for which version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    pub owner: String,
    pub version: Version,
    /// The last change applied to this user was a deletion: a newer change brings the user back.
    pub after_deletion: bool,
}

/// Why the guard could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The lease lapsed and another writer may hold the user: the change must be claimed and applied again.
    #[error("the lease lapsed before the commit")]
    LeaseLost,
    /// The table could not be asked (see [`DependencyError::retry_helps`]).
    #[error("{0}")]
    Dependency(#[from] DependencyError),
}

#[async_trait]
pub trait OrderingGuard: Send + Sync {
    /// Claims `key` for a change of `version`; the lease lapses at `until` (the end of the invocation). `same` says
    /// whether the version last applied is claimed again or stale.
    async fn claim(
        &self,
        key: &str,
        version: Version,
        same: SameVersion,
        until: SystemTime,
    ) -> Result<Claim, GuardError>;
    /// The change was applied: the version moves to the lease's and the lease goes. An error means the lease was
    /// lost (it lapsed and another writer took the user): the change must be applied again.
    async fn commit(&self, lease: &Lease, deleted: bool) -> Result<(), GuardError>;
    /// The change was not applied: gives the user back, version unchanged.
    async fn release(&self, lease: &Lease) -> Result<(), GuardError>;
}

/// A lease owner name unique to this process and claim.
pub fn new_owner() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The DynamoDB adapter (`ORDERING_TABLE`).
#[cfg(feature = "ordering")]
pub struct DynamoOrderingGuard {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

#[cfg(feature = "ordering")]
mod dynamo {
    use super::*;
    use crate::dynamodb::{consistent_attribute, epoch_millis, number};
    use aws_sdk_dynamodb::error::ProvideErrorMetadata;
    use aws_sdk_dynamodb::types::AttributeValue;

    impl DynamoOrderingGuard {
        pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
            Self {
                client,
                table: table.into(),
            }
        }

        async fn applied_version(&self, key: &str) -> Result<Option<Version>, DependencyError> {
            let version = consistent_attribute(&self.client, &self.table, key, "version")
                .await
                .map_err(DependencyError::Unavailable)?;
            Ok(version
                .as_ref()
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok()))
        }
    }

    #[async_trait]
    impl OrderingGuard for DynamoOrderingGuard {
        async fn claim(
            &self,
            key: &str,
            version: Version,
            same: SameVersion,
            until: SystemTime,
        ) -> Result<Claim, GuardError> {
            let owner = new_owner();
            let newer = match same {
                SameVersion::Apply => "#version <= :version",
                SameVersion::Skip => "#version < :version",
            };
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("id", AttributeValue::S(key.to_owned()))
                .update_expression("SET lease_owner = :owner, lease_until = :until")
                .condition_expression(format!("(attribute_not_exists(#version) OR {newer}) AND (attribute_not_exists(lease_until) OR lease_until < :now)"))
                // Names in full, so no attribute name can collide with one of DynamoDB's reserved words.
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":owner", AttributeValue::S(owner.clone()))
                .expression_attribute_values(":until", number(epoch_millis(until)))
                .expression_attribute_values(":version", number(version))
                .expression_attribute_values(":now", number(epoch_millis(SystemTime::now())))
                // The item as it was: whether the last change applied was a deletion.
                .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
                .send()
                .await;
            match result {
                Ok(output) => {
                    let after_deletion = output
                        .attributes()
                        .and_then(|item| item.get("deleted"))
                        .and_then(|v| v.as_bool().ok())
                        .copied()
                        .unwrap_or(false);
                    Ok(Claim::Acquired(Lease {
                        key: key.to_owned(),
                        owner,
                        version,
                        after_deletion,
                    }))
                }
                Err(error) if error.code() == Some("ConditionalCheckFailedException") => {
                    match self.applied_version(key).await? {
                        Some(applied) if applied > version || (applied == version && same == SameVersion::Skip) => {
                            Ok(Claim::Stale { applied })
                        }
                        _ => Ok(Claim::Busy),
                    }
                }
                Err(error) => Err(DependencyError::from_sdk(error).into()),
            }
        }

        async fn commit(&self, lease: &Lease, deleted: bool) -> Result<(), GuardError> {
            self.client
                .update_item()
                .table_name(&self.table)
                .key("id", AttributeValue::S(lease.key.clone()))
                .update_expression("SET #version = :version, #deleted = :deleted REMOVE lease_owner, lease_until")
                .condition_expression("lease_owner = :owner")
                .expression_attribute_names("#version", "version")
                .expression_attribute_names("#deleted", "deleted")
                .expression_attribute_values(":version", number(lease.version))
                .expression_attribute_values(":deleted", AttributeValue::Bool(deleted))
                .expression_attribute_values(":owner", AttributeValue::S(lease.owner.clone()))
                .send()
                .await
                .map(|_| ())
                .map_err(|e| {
                    if e.code() == Some("ConditionalCheckFailedException") {
                        GuardError::LeaseLost
                    } else {
                        DependencyError::from_sdk(e).into()
                    }
                })
        }

        async fn release(&self, lease: &Lease) -> Result<(), GuardError> {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("id", AttributeValue::S(lease.key.clone()))
                .update_expression("REMOVE lease_owner, lease_until")
                .condition_expression("lease_owner = :owner")
                .expression_attribute_values(":owner", AttributeValue::S(lease.owner.clone()))
                .send()
                .await;
            match result {
                Ok(_) => Ok(()),
                // Lapsed and taken: nothing of ours to give back.
                Err(error) if error.code() == Some("ConditionalCheckFailedException") => Ok(()),
                Err(error) => Err(DependencyError::from_sdk(error).into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_parse_from_rfc3339_postgres_text_and_epoch_millis() {
        let t = parse_version(&json!("2026-11-20T10:00:00.123Z")).unwrap();
        assert_eq!(parse_version(&json!("2026-11-20 10:00:00.123+00")), Some(t));
        assert_eq!(parse_version(&json!("2026-11-20T11:00:00.123+01:00")), Some(t));
        assert_eq!(parse_version(&json!(1_795_168_800_123i64)), Some(1_795_168_800_123_000));
        assert!(parse_version(&json!("2026-11-20T10:00:10Z")).unwrap() > t);
        assert_eq!(parse_version(&json!("yesterday")), None);
        assert_eq!(parse_version(&json!(true)), None);
    }

    #[test]
    fn the_key_holds_no_address_and_ignores_case() {
        let key = user_key(" Ada@Example.com");
        assert!(
            key.starts_with("user#") && !key.contains("ada") && !key.contains('@'),
            "{key}"
        );
        assert_eq!(key, user_key("ada@example.com"));
        assert_ne!(key, user_key("grace@example.com"));
    }

    #[test]
    fn owners_are_unique() {
        assert_ne!(new_owner(), new_owner());
    }
}

#[cfg(all(test, feature = "ordering"))]
mod adapter_tests {
    use super::*;
    use crate::dynamodb::epoch_millis;
    use aws_sdk_dynamodb::operation::get_item::GetItemOutput;
    use aws_sdk_dynamodb::operation::update_item::{UpdateItemError, UpdateItemOutput};
    use aws_sdk_dynamodb::types::error::ConditionalCheckFailedException;
    use aws_sdk_dynamodb::types::AttributeValue;
    use aws_smithy_mocks::{mock, mock_client, RuleMode};

    fn conditional_failure() -> UpdateItemError {
        UpdateItemError::ConditionalCheckFailedException(
            ConditionalCheckFailedException::builder()
                .message("The conditional request failed")
                .meta(
                    aws_sdk_dynamodb::error::ErrorMetadata::builder()
                        .code("ConditionalCheckFailedException")
                        .build(),
                )
                .build(),
        )
    }

    fn applied(version: i64) -> GetItemOutput {
        GetItemOutput::builder()
            .item("id", AttributeValue::S("user#x".into()))
            .item("version", AttributeValue::N(version.to_string()))
            .build()
    }

    fn until() -> SystemTime {
        SystemTime::now() + std::time::Duration::from_secs(30)
    }

    #[tokio::test]
    async fn a_claim_is_conditional_on_the_version_and_a_lapsed_lease() {
        let claim = mock!(aws_sdk_dynamodb::Client::update_item)
            .match_requests(|r| {
                let values = r.expression_attribute_values().unwrap();
                let now: u128 = values[":now"].as_n().unwrap().parse().unwrap();
                r.condition_expression().unwrap().contains("#version <= :version")
                    && r.condition_expression().unwrap().contains("lease_until < :now")
                    && values[":version"].as_n().unwrap() == "20"
                    && now.abs_diff(epoch_millis(SystemTime::now())) < 5_000
            })
            .then_output(|| UpdateItemOutput::builder().build());
        let guard = DynamoOrderingGuard::new(mock_client!(aws_sdk_dynamodb, [&claim]), "ordering");
        let result = guard.claim("user#x", 20, SameVersion::Apply, until()).await.unwrap();
        assert!(
            matches!(result, Claim::Acquired(Lease { version: 20, .. })),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_claim_that_skips_the_same_version_asks_for_a_newer_one_and_calls_the_applied_one_stale() {
        let claim = mock!(aws_sdk_dynamodb::Client::update_item)
            .match_requests(|r| r.condition_expression().unwrap().contains("#version < :version"))
            .then_error(conditional_failure);
        let same = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| applied(20));
        let guard = DynamoOrderingGuard::new(
            mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&claim, &same]),
            "ordering",
        );
        assert_eq!(
            guard.claim("user#x", 20, SameVersion::Skip, until()).await.unwrap(),
            Claim::Stale { applied: 20 }
        );

        let refused = mock!(aws_sdk_dynamodb::Client::update_item).then_error(conditional_failure);
        let same = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| applied(20));
        let guard = DynamoOrderingGuard::new(
            mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&refused, &same]),
            "ordering",
        );
        assert_eq!(
            guard.claim("user#x", 20, SameVersion::Apply, until()).await.unwrap(),
            Claim::Busy,
            "applied again: only a lease refuses it"
        );
    }

    #[tokio::test]
    async fn a_claim_tells_whether_the_last_change_applied_was_a_deletion() {
        let after_delete = mock!(aws_sdk_dynamodb::Client::update_item)
            .match_requests(|r| r.return_values() == Some(&aws_sdk_dynamodb::types::ReturnValue::AllOld))
            .then_output(|| {
                UpdateItemOutput::builder()
                    .attributes("deleted", AttributeValue::Bool(true))
                    .attributes("version", AttributeValue::N("10".into()))
                    .build()
            });
        let first_ever =
            mock!(aws_sdk_dynamodb::Client::update_item).then_output(|| UpdateItemOutput::builder().build());
        let guard = DynamoOrderingGuard::new(
            mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&after_delete, &first_ever]),
            "ordering",
        );
        assert!(matches!(
            guard.claim("user#x", 20, SameVersion::Apply, until()).await.unwrap(),
            Claim::Acquired(Lease {
                after_deletion: true,
                ..
            })
        ));
        assert!(matches!(
            guard.claim("user#y", 20, SameVersion::Apply, until()).await.unwrap(),
            Claim::Acquired(Lease {
                after_deletion: false,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn a_refused_claim_is_stale_when_a_newer_version_was_applied_and_busy_otherwise() {
        let refused = mock!(aws_sdk_dynamodb::Client::update_item).then_error(conditional_failure);
        let newer = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| applied(30));
        let guard = DynamoOrderingGuard::new(
            mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&refused, &newer]),
            "ordering",
        );
        assert_eq!(
            guard.claim("user#x", 20, SameVersion::Apply, until()).await.unwrap(),
            Claim::Stale { applied: 30 }
        );

        let refused = mock!(aws_sdk_dynamodb::Client::update_item).then_error(conditional_failure);
        let older = mock!(aws_sdk_dynamodb::Client::get_item).then_output(|| applied(10));
        let guard = DynamoOrderingGuard::new(
            mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&refused, &older]),
            "ordering",
        );
        assert_eq!(
            guard.claim("user#x", 20, SameVersion::Apply, until()).await.unwrap(),
            Claim::Busy,
            "an older version applied: someone holds the lease"
        );
    }

    #[tokio::test]
    async fn commit_moves_the_version_only_for_the_lease_owner() {
        let commit = mock!(aws_sdk_dynamodb::Client::update_item)
            .match_requests(|r| {
                let values = r.expression_attribute_values().unwrap();
                r.condition_expression() == Some("lease_owner = :owner")
                    && values[":owner"].as_s().unwrap() == "me"
                    && values[":version"].as_n().unwrap() == "20"
                    && values[":deleted"] == AttributeValue::Bool(true)
            })
            .then_output(|| UpdateItemOutput::builder().build());
        let lost = mock!(aws_sdk_dynamodb::Client::update_item).then_error(conditional_failure);
        let lease = Lease {
            key: "user#x".into(),
            owner: "me".into(),
            version: 20,
            after_deletion: false,
        };
        let guard = DynamoOrderingGuard::new(
            mock_client!(aws_sdk_dynamodb, RuleMode::Sequential, [&commit, &lost]),
            "ordering",
        );
        guard.commit(&lease, true).await.unwrap();
        assert_eq!(guard.commit(&lease, true).await.unwrap_err(), GuardError::LeaseLost);
    }
}
