//! One SQS record at a time: open the envelope, validate every row, then bring each user to what its row says, in
//! the order of the changes: an older change never overwrites a newer one (see [`shared::ordering`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use shared::batch::{BatchProcessor, RecordError};
use shared::db_event::{EventKind, Row};
use shared::envelope::published_database_event;
use shared::logging::mask_email;
use shared::metrics::Metrics;
use shared::ordering::{parse_version, user_key, version_of, Claim, Lease, OrderingGuard, Version, LEASE_GRACE};
use tokio::time::Instant;

use crate::config::OnUserDeleted;
use crate::ports::{DirectoryError, UserDirectory};
use shared::user_attributes::{desired_attributes, plan_writes, username, UserChange};

/// The table whose rows are Cognito users; the queue's subscription filter lets only these through, and anything
/// else that arrives is acknowledged and counted.
pub const USERS_TABLE: &str = "users";

/// Records handled at once. Cognito allows 25 AdminUpdateUserAttributes per second per pool and the event source
/// runs several invocations in parallel, so a small number keeps bursts short.
pub const CONCURRENCY: usize = 4;

/// The version of a change with no time at all (a hand-made event): older than every change that has one.
const UNKNOWN_VERSION: Version = 0;

/// A user another writer holds is claimed again this many times within the invocation, with jittered backoff from
/// [`CONTENTION_BACKOFF`], before the record goes back to the queue.
pub const CONTENTION_RETRIES: u32 = 6;
const CONTENTION_BACKOFF: Duration = Duration::from_millis(200);

/// How far a deletion versioned on the event's clock is moved ahead by default (`DELETE_SKEW_TOLERANCE_SECONDS`).
pub const DEFAULT_DELETE_SKEW_TOLERANCE: Duration = Duration::from_secs(5);

pub struct AttributeSync<D, G> {
    directory: D,
    guard: G,
    on_user_deleted: OnUserDeleted,
    /// How long a change of a user not (yet) in the pool is retried before it is skipped.
    user_not_found_retry: Duration,
    delete_skew_tolerance: Duration,
    metrics: Arc<Metrics>,
    /// One change at a time per user in this instance: the changes of one user in a batch wait for each other
    /// instead of failing on the guard's lease.
    user_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// What a row asks of one user, and where the change stands in that user's history.
enum Change {
    Upsert(UserChange),
    Delete(String),
}

impl Change {
    fn username(&self) -> &str {
        match self {
            Change::Upsert(change) => &change.username,
            Change::Delete(username) => username,
        }
    }
}

impl<D: UserDirectory, G: OrderingGuard> AttributeSync<D, G> {
    pub fn new(directory: D, guard: G, on_user_deleted: OnUserDeleted, user_not_found_retry: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            directory,
            guard,
            on_user_deleted,
            user_not_found_retry,
            delete_skew_tolerance: DEFAULT_DELETE_SKEW_TOLERANCE,
            metrics,
            user_locks: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_delete_skew_tolerance(mut self, tolerance: Duration) -> Self {
        self.delete_skew_tolerance = tolerance;
        self
    }

    /// `deadline` is the invocation's: a claim left by this invocation lapses [`LEASE_GRACE`] after it.
    pub async fn handle_batch(&self, processor: &BatchProcessor, event: SqsEvent, deadline: Instant) -> SqsBatchResponse {
        let lease_until = SystemTime::now() + deadline.saturating_duration_since(Instant::now()) + LEASE_GRACE;
        // Half a second is left to post the answer: past the deadline Lambda throws it away with the whole batch.
        let answer_by = deadline.checked_sub(Duration::from_millis(500)).unwrap_or(deadline);
        let outcome = processor.process_until(event, Some(answer_by), |record| self.handle_record(record, lease_until)).await;
        outcome.count_into(&self.metrics);
        outcome.response()
    }

    pub async fn handle_record(&self, record: SqsMessage, lease_until: SystemTime) -> Result<(), RecordError> {
        let (event, published_at) = published_database_event(&record).map_err(RecordError::poison)?;
        if event.table != USERS_TABLE {
            tracing::info!(event = %event.label(), "not a users event; acknowledged");
            self.metrics.count("RecordsIgnored", 1);
            return Ok(());
        }
        let event_version = match event.occurred_at.as_deref() {
            Some(text) => Some(
                parse_version(&serde_json::Value::String(text.to_owned())).ok_or_else(|| RecordError::poison("`occurredAt` is not an RFC 3339 timestamp"))?,
            ),
            None => published_at.map(version_of),
        };
        // Every row is validated before the first write, so a poison record changes nothing.
        let changes: Vec<(Change, Version)> = match event.kind {
            EventKind::RecordsCreated | EventKind::RecordUpdated => {
                event.map_rows(|row| Ok((Change::Upsert(desired_attributes(row)?), row_version(row, event_version)?))).map_err(RecordError::Poison)?
            }
            EventKind::RecordsDeleted => event
                .map_rows(|row| Ok((Change::Delete(username(row)?), deletion_version(row, event_version, self.delete_skew_tolerance)?)))
                .map_err(RecordError::Poison)?,
            EventKind::Other(ref name) => {
                tracing::info!(event = %name, "event not handled by this function; acknowledged");
                self.metrics.count("RecordsIgnored", 1);
                return Ok(());
            }
        };
        for (change, version) in changes {
            self.apply_in_order(&change, version, lease_until).await?;
        }
        Ok(())
    }

    /// Claims the user for this change's version, applies it, and commits the version; a change older than the
    /// last one applied is skipped.
    async fn apply_in_order(&self, change: &Change, version: Version, lease_until: SystemTime) -> Result<(), RecordError> {
        let user = mask_email(change.username());
        let key = user_key(change.username());
        let lock = self.user_lock(&key);
        let _held = lock.lock().await;
        // Another writer (an instance, the reconciliation) holds a user for seconds: wait for it here rather than
        // hand the record back for the queue's whole visibility timeout.
        let answer_by = lease_until.checked_sub(LEASE_GRACE + Duration::from_secs(1)).unwrap_or(lease_until);
        let mut attempt = 0;
        let lease = loop {
            match self.guard.claim(&key, version, lease_until).await.map_err(RecordError::transient)? {
                Claim::Acquired(lease) => break lease,
                Claim::Stale { applied } => {
                    tracing::info!(user = %user, version, applied, "a newer change of this user was applied already; skipped");
                    self.metrics.count("ChangesStale", 1);
                    return Ok(());
                }
                Claim::Busy => {
                    attempt += 1;
                    let pause = shared::backoff::jittered(CONTENTION_BACKOFF, attempt, Duration::from_secs(2));
                    if attempt > CONTENTION_RETRIES || SystemTime::now() + pause > answer_by {
                        self.metrics.count("ChangesDeferred", 1);
                        return Err(RecordError::transient(format!("another writer holds {user}; retried at the next delivery")));
                    }
                    self.metrics.count("ChangesContended", 1);
                    tokio::time::sleep(pause).await;
                }
            }
        };
        let applied = match change {
            Change::Upsert(change) => self.sync_user(change, version, lease.after_deletion).await,
            Change::Delete(username) => self.remove_user(username).await,
        };
        let settled = self.settle(&lease, applied, matches!(change, Change::Delete(_))).await;
        drop(_held);
        self.forget_lock(&key, lock);
        settled
    }

    /// Commits the version of an applied change, or gives the user back when it was not applied.
    async fn settle(&self, lease: &Lease, applied: Result<Applied, RecordError>, deleted: bool) -> Result<(), RecordError> {
        match applied {
            Ok(Applied::Yes) => self
                .guard
                .commit(lease, deleted)
                .await
                .map_err(|e| RecordError::transient(format!("the change was applied but its version not recorded ({e}); it is applied again"))),
            Ok(Applied::NotInPool) => {
                self.release(lease).await;
                Ok(())
            }
            Err(error) => {
                self.release(lease).await;
                Err(error)
            }
        }
    }

    async fn release(&self, lease: &Lease) {
        if let Err(error) = self.guard.release(lease).await {
            // The lease then lapses with this invocation.
            tracing::warn!(error = %error, "could not release the ordering lease");
        }
    }

    fn user_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.user_locks.lock().unwrap_or_else(|p| p.into_inner()).entry(key.to_owned()).or_default().clone()
    }

    /// Drops a user's lock once nobody else waits for it, so the map does not grow across invocations.
    fn forget_lock(&self, key: &str, lock: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = self.user_locks.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody else holds or waits for it.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(key);
        }
    }

    /// A user not in the pool: retried while the change is young (the API may create the Cognito user a moment
    /// after the row), then skipped.
    fn not_in_pool(&self, user: &str, version: Version) -> Result<Applied, RecordError> {
        let changed_at = DateTime::<Utc>::from_timestamp_micros(version).unwrap_or_default();
        let age = (Utc::now() - changed_at).to_std().unwrap_or_default();
        if version != UNKNOWN_VERSION && age < self.user_not_found_retry {
            self.metrics.count("UsersNotYetInPool", 1);
            return Err(RecordError::transient(format!("{user} is not in the pool yet ({} s after the change); retried", age.as_secs())));
        }
        tracing::warn!(user = %user, "user not in the pool; skipped");
        self.metrics.count("UsersNotFound", 1);
        Ok(Applied::NotInPool)
    }

    /// `after_deletion`: the last change applied was this user's deletion, so this newer change brings the user
    /// back, and with `ON_USER_DELETED=disable` that means enabling it again.
    async fn sync_user(&self, change: &UserChange, version: Version, after_deletion: bool) -> Result<Applied, RecordError> {
        let user = mask_email(&change.username);
        let current = match self.directory.get_user(&change.username).await {
            Ok(current) => current,
            Err(DirectoryError::UserNotFound) => return self.not_in_pool(&user, version),
            Err(e) => return Err(RecordError::from(e)),
        };
        if after_deletion && !current.enabled && self.on_user_deleted == OnUserDeleted::Disable {
            self.write(self.directory.enable_user(&change.username).await)?;
            tracing::info!(user = %user, "a change newer than the deletion: user enabled again");
            self.metrics.count("UsersEnabled", 1);
        }
        let plan = plan_writes(change, &current.attributes);
        if plan.is_empty() {
            tracing::info!(user = %user, "attributes already match; no write");
            self.metrics.count("UsersUnchanged", 1);
            return Ok(Applied::Yes);
        }
        if !plan.updates.is_empty() {
            self.write(self.directory.update_attributes(&change.username, &plan.updates).await)?;
        }
        if !plan.deletions.is_empty() {
            self.write(self.directory.delete_attributes(&change.username, &plan.deletions).await)?;
        }
        let updated: Vec<&str> = plan.updates.iter().map(|(name, _)| name.as_str()).collect();
        tracing::info!(user = %user, updated = ?updated, deleted = ?plan.deletions, "attributes synced");
        self.metrics.count("UsersUpdated", 1);
        Ok(Applied::Yes)
    }

    /// A user that vanished between read and write was deleted meanwhile: nothing left to sync.
    fn write(&self, result: Result<(), DirectoryError>) -> Result<(), RecordError> {
        match result {
            Ok(()) | Err(DirectoryError::UserNotFound) => Ok(()),
            Err(e) => Err(RecordError::from(e)),
        }
    }

    async fn remove_user(&self, username: &str) -> Result<Applied, RecordError> {
        let user = mask_email(username);
        let result = match self.on_user_deleted {
            OnUserDeleted::Ignore => {
                tracing::info!(user = %user, "row deleted; ON_USER_DELETED=ignore leaves the user");
                self.metrics.count("UsersDeletionIgnored", 1);
                return Ok(Applied::Yes);
            }
            OnUserDeleted::Delete => self.directory.delete_user(username).await.map(|()| "UsersDeleted"),
            OnUserDeleted::Disable => match self.directory.get_user(username).await {
                Ok(current) if !current.enabled => Ok("UsersAlreadyDisabled"),
                Ok(_) => self.directory.disable_user(username).await.map(|()| "UsersDisabled"),
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(metric) => {
                tracing::info!(user = %user, outcome = metric, "deleted row applied");
                self.metrics.count(metric, 1);
                Ok(Applied::Yes)
            }
            // Gone already: the deletion holds, and its version orders later changes.
            Err(DirectoryError::UserNotFound) => {
                tracing::info!(user = %user, "user of a deleted row not in the pool");
                self.metrics.count("UsersNotFound", 1);
                Ok(Applied::Yes)
            }
            Err(e) => Err(RecordError::from(e)),
        }
    }
}

/// Whether a change reached Cognito.
enum Applied {
    Yes,
    /// The user is not in the pool: nothing applied, the version stays.
    NotInPool,
}

/// A row's version: its `updatedAt` when present, else the event's (`occurredAt`, else when it was published).
fn row_version(row: &Row, event_version: Option<Version>) -> Result<Version, String> {
    Ok(row_timestamp(row, "updatedAt")?.or(event_version).unwrap_or(UNKNOWN_VERSION))
}

/// A deletion's version, on the database's clock where the row carries it, as upserts are: its `deletedAt`, else
/// just after its `updatedAt` (the deletion followed the row's last change, so a replay of that change sorts before
/// it). Only without either is it the event's clock, moved `skew_tolerance` ahead: a deletion the API's slower clock
/// placed up to that long before the last update still wins.
fn deletion_version(row: &Row, event_version: Option<Version>, skew_tolerance: Duration) -> Result<Version, String> {
    if let Some(deleted_at) = row_timestamp(row, "deletedAt")? {
        return Ok(deleted_at);
    }
    if let Some(updated_at) = row_timestamp(row, "updatedAt")? {
        return Ok(updated_at + 1);
    }
    Ok(event_version.map_or(UNKNOWN_VERSION, |v| v.saturating_add(skew_tolerance.as_micros() as Version)))
}

fn row_timestamp(row: &Row, field: &str) -> Result<Option<Version>, String> {
    match row.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => parse_version(value).map(Some).ok_or_else(|| format!("field `{field}` is neither an RFC 3339 timestamp nor epoch milliseconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::DirectoryUser;
    use async_trait::async_trait;
    use serde_json::json;
    use shared::ordering::user_key;
    use shared::testing::{sns_envelope, sqs_event, sqs_record, MemoryOrderingGuard};
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// An in-memory user pool that records every write.
    #[derive(Default)]
    struct FakeDirectory {
        users: Mutex<HashMap<String, DirectoryUser>>,
        writes: Mutex<Vec<String>>,
        /// Usernames whose calls fail as if Cognito were unavailable.
        unavailable: Vec<String>,
        /// Attribute names the pool rejects.
        rejected_attribute: Option<String>,
    }

    impl FakeDirectory {
        fn with_user(self, username: &str, attributes: &[(&str, &str)]) -> Self {
            let user = DirectoryUser { enabled: true, attributes: attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };
            self.users.lock().unwrap().insert(username.to_string(), user);
            self
        }
        fn writes(&self) -> Vec<String> {
            self.writes.lock().unwrap().clone()
        }
        fn user(&self, username: &str) -> Option<DirectoryUser> {
            self.users.lock().unwrap().get(username).cloned()
        }
        fn check(&self, username: &str) -> Result<(), DirectoryError> {
            if self.unavailable.iter().any(|u| u == username) {
                return Err(DirectoryError::Unavailable("ThrottlingException after retries".into()));
            }
            if self.users.lock().unwrap().contains_key(username) {
                Ok(())
            } else {
                Err(DirectoryError::UserNotFound)
            }
        }
    }

    #[async_trait]
    impl UserDirectory for FakeDirectory {
        async fn get_user(&self, username: &str) -> Result<DirectoryUser, DirectoryError> {
            self.check(username)?;
            Ok(self.user(username).unwrap())
        }
        async fn update_attributes(&self, username: &str, attributes: &[(String, String)]) -> Result<(), DirectoryError> {
            self.check(username)?;
            if let Some(bad) = attributes.iter().find(|(n, _)| Some(n) == self.rejected_attribute.as_ref()) {
                return Err(DirectoryError::Rejected(format!("{} is not in the schema", bad.0)));
            }
            self.writes.lock().unwrap().push(format!("update {username} {attributes:?}"));
            let mut users = self.users.lock().unwrap();
            let user = users.get_mut(username).unwrap();
            user.attributes.extend(attributes.iter().cloned());
            Ok(())
        }
        async fn delete_attributes(&self, username: &str, names: &[String]) -> Result<(), DirectoryError> {
            self.check(username)?;
            self.writes.lock().unwrap().push(format!("delete-attributes {username} {names:?}"));
            let mut users = self.users.lock().unwrap();
            let user = users.get_mut(username).unwrap();
            names.iter().for_each(|n| {
                user.attributes.remove(n);
            });
            Ok(())
        }
        async fn disable_user(&self, username: &str) -> Result<(), DirectoryError> {
            self.check(username)?;
            self.writes.lock().unwrap().push(format!("disable {username}"));
            self.users.lock().unwrap().get_mut(username).unwrap().enabled = false;
            Ok(())
        }
        async fn enable_user(&self, username: &str) -> Result<(), DirectoryError> {
            self.check(username)?;
            self.writes.lock().unwrap().push(format!("enable {username}"));
            self.users.lock().unwrap().get_mut(username).unwrap().enabled = true;
            Ok(())
        }
        async fn delete_user(&self, username: &str) -> Result<(), DirectoryError> {
            self.check(username)?;
            self.writes.lock().unwrap().push(format!("delete-user {username}"));
            self.users.lock().unwrap().remove(username);
            Ok(())
        }
    }

    type Sync = AttributeSync<FakeDirectory, Arc<MemoryOrderingGuard>>;

    fn sync(directory: FakeDirectory, policy: OnUserDeleted) -> Sync {
        AttributeSync::new(directory, Arc::default(), policy, Duration::from_secs(300), Arc::new(Metrics::new("Test", "cognito-attribute-sync")))
    }

    fn until() -> SystemTime {
        SystemTime::now() + Duration::from_secs(30)
    }

    fn users_event(event: &str, rows: serde_json::Value) -> SqsMessage {
        let message = json!({"event": event, "table": "users", "records": rows}).to_string();
        sqs_record("m-1", &sns_envelope(&message, event, "users"))
    }

    #[tokio::test]
    async fn updated_row_writes_only_the_attributes_that_differ() {
        let directory = FakeDirectory::default().with_user("ada@example.com", &[("given_name", "Ada"), ("family_name", "Byron"), ("custom:_tenant", "acme")]);
        let sync = sync(directory, OnUserDeleted::Disable);
        let record = users_event("record_updated", json!([{"email":"ada@example.com","firstName":"Ada","lastName":"Lovelace","_tenant":null}]));
        sync.handle_record(record, until()).await.unwrap();
        assert_eq!(
            sync.directory.writes(),
            vec![r#"update ada@example.com [("family_name", "Lovelace")]"#.to_string(), r#"delete-attributes ada@example.com ["custom:_tenant"]"#.to_string(),]
        );
        let user = sync.directory.user("ada@example.com").unwrap();
        assert_eq!(user.attributes.get("family_name").map(String::as_str), Some("Lovelace"));
        assert!(!user.attributes.contains_key("custom:_tenant"));
    }

    #[tokio::test]
    async fn unchanged_user_gets_no_write() {
        let directory = FakeDirectory::default().with_user("ada@example.com", &[("given_name", "Ada"), ("custom:_tenant", "acme")]);
        let sync = sync(directory, OnUserDeleted::Disable);
        let record = users_event("record_updated", json!([{"email":"ada@example.com","firstName":"Ada","_tenant":"acme","lastName":null}]));
        sync.handle_record(record, until()).await.unwrap();
        assert!(sync.directory.writes().is_empty());
    }

    #[tokio::test]
    async fn missing_user_is_skipped_not_retried() {
        let sync = sync(FakeDirectory::default(), OnUserDeleted::Disable);
        let record = users_event("records_created", json!([{"email":"ghost@example.com","firstName":"G"}]));
        assert_eq!(sync.handle_record(record, until()).await, Ok(()));
        assert!(sync.directory.writes().is_empty());
    }

    #[tokio::test]
    async fn one_invalid_row_makes_the_record_poison_before_any_write() {
        let directory = FakeDirectory::default().with_user("ada@example.com", &[]);
        let sync = sync(directory, OnUserDeleted::Disable);
        let record = users_event("records_created", json!([{"email":"ada@example.com","firstName":"Ada"},{"email":"b@example.com","lastName":{"x":1}}]));
        let err = sync.handle_record(record, until()).await.unwrap_err();
        assert!(matches!(&err, RecordError::Poison(reason) if reason.contains("row 1") && reason.contains("lastName")), "{err:?}");
        assert!(sync.directory.writes().is_empty());
    }

    #[tokio::test]
    async fn unparseable_body_is_poison() {
        let sync = sync(FakeDirectory::default(), OnUserDeleted::Disable);
        assert!(matches!(sync.handle_record(sqs_record("m", "{not json"), until()).await, Err(RecordError::Poison(_))));
    }

    #[tokio::test]
    async fn other_tables_and_events_are_acknowledged_without_calls() {
        let directory = FakeDirectory { unavailable: vec!["ada@example.com".into()], ..Default::default() };
        let sync = sync(directory, OnUserDeleted::Disable);
        let other_table = json!({"event":"records_created","table":"publish_history","records":[{"email":"ada@example.com"}]}).to_string();
        assert_eq!(sync.handle_record(sqs_record("m", &other_table), until()).await, Ok(()));
        let other_event = json!({"event":"records_archived","table":"users","records":[{"email":"ada@example.com"}]}).to_string();
        assert_eq!(sync.handle_record(sqs_record("m", &other_event), until()).await, Ok(()));
        let metrics = sync.metrics.take_document().unwrap();
        assert_eq!(metrics["RecordsIgnored"], 2.0);
    }

    #[tokio::test]
    async fn deleted_row_disables_by_default_and_only_once() {
        let directory = FakeDirectory::default().with_user("ada@example.com", &[]);
        let sync = sync(directory, OnUserDeleted::Disable);
        let deleted = || users_event("records_deleted", json!([{"email":"ada@example.com"}]));
        sync.handle_record(deleted(), until()).await.unwrap();
        sync.handle_record(deleted(), until()).await.unwrap();
        assert_eq!(sync.directory.writes(), vec!["disable ada@example.com".to_string()]);
        assert!(!sync.directory.user("ada@example.com").unwrap().enabled);
    }

    #[tokio::test]
    async fn deleted_row_follows_delete_and_ignore_policies() {
        let sync_delete = sync(FakeDirectory::default().with_user("ada@example.com", &[]), OnUserDeleted::Delete);
        sync_delete.handle_record(users_event("records_deleted", json!([{"email":"ada@example.com"}])), until()).await.unwrap();
        assert_eq!(sync_delete.directory.writes(), vec!["delete-user ada@example.com".to_string()]);
        assert!(sync_delete.directory.user("ada@example.com").is_none());
        // Redelivered after the delete: the user is gone, which is not an error.
        sync_delete.handle_record(users_event("records_deleted", json!([{"email":"ada@example.com"}])), until()).await.unwrap();

        let sync_ignore = sync(FakeDirectory::default().with_user("ada@example.com", &[]), OnUserDeleted::Ignore);
        sync_ignore.handle_record(users_event("records_deleted", json!([{"email":"ada@example.com"}])), until()).await.unwrap();
        assert!(sync_ignore.directory.writes().is_empty());
        assert!(sync_ignore.directory.user("ada@example.com").unwrap().enabled);
    }

    #[tokio::test]
    async fn unavailable_directory_is_transient_and_rejection_is_poison() {
        let directory = FakeDirectory { unavailable: vec!["ada@example.com".into()], ..Default::default() };
        let sync1 = sync(directory, OnUserDeleted::Disable);
        let record = users_event("record_updated", json!([{"email":"ada@example.com","firstName":"Ada"}]));
        assert!(matches!(sync1.handle_record(record.clone(), until()).await, Err(RecordError::Transient(_))));

        let directory = FakeDirectory { rejected_attribute: Some("custom:_tenant".into()), ..Default::default() }.with_user("ada@example.com", &[]);
        let sync2 = sync(directory, OnUserDeleted::Disable);
        let record = users_event("record_updated", json!([{"email":"ada@example.com","_tenant":"acme"}]));
        assert!(matches!(sync2.handle_record(record, until()).await, Err(RecordError::Poison(reason)) if reason.contains("custom:_tenant")));
    }

    #[tokio::test]
    async fn batch_reports_only_the_records_that_can_succeed_later() {
        let directory = FakeDirectory { unavailable: vec!["busy@example.com".into()], ..Default::default() }.with_user("ada@example.com", &[]);
        let sync = sync(directory, OnUserDeleted::Disable);
        let good = json!({"event":"record_updated","table":"users","record":{"email":"ada@example.com","firstName":"Ada"}}).to_string();
        let busy = json!({"event":"record_updated","table":"users","record":{"email":"busy@example.com","firstName":"B"}}).to_string();
        let event = sqs_event(vec![sqs_record("good", &good), sqs_record("busy", &busy), sqs_record("poison", "{oops")]);
        let response = sync.handle_batch(&BatchProcessor::new(CONCURRENCY, None), event, Instant::now() + Duration::from_secs(30)).await;
        let mut failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        failed.sort();
        // Without a dead-letter queue the poison record is reported too, so the queue's redrive policy moves it.
        assert_eq!(failed, vec!["busy", "poison"]);
        assert_eq!(sync.directory.writes(), vec![r#"update ada@example.com [("given_name", "Ada")]"#.to_string()]);
    }

    fn change_at(event: &str, email: &str, last_name: &str, occurred_at: &str) -> SqsMessage {
        let message = json!({"event": event, "table": "users", "occurredAt": occurred_at, "record": {"email": email, "lastName": last_name}}).to_string();
        sqs_record(&format!("m-{last_name}"), &sns_envelope(&message, event, "users"))
    }

    fn family_name(sync: &Sync, email: &str) -> Option<String> {
        sync.directory.user(email).and_then(|u| u.attributes.get("family_name").cloned())
    }

    fn minutes_ago(minutes: i64) -> String {
        (Utc::now() - chrono::Duration::minutes(minutes)).to_rfc3339()
    }

    #[tokio::test]
    async fn an_older_change_delivered_after_a_newer_one_is_skipped() {
        let sync = sync(FakeDirectory::default().with_user("ada@example.com", &[]), OnUserDeleted::Disable);
        sync.handle_record(change_at("record_updated", "ada@example.com", "Newer", "2026-11-20T10:00:10Z"), until()).await.unwrap();
        sync.handle_record(change_at("record_updated", "ada@example.com", "Older", "2026-11-20T10:00:00Z"), until()).await.unwrap();
        assert_eq!(family_name(&sync, "ada@example.com").as_deref(), Some("Newer"));
        assert_eq!(sync.metrics.take_document().unwrap()["ChangesStale"], 1.0);
        // The same change again (a redelivery) is no error and writes nothing new.
        sync.handle_record(change_at("record_updated", "ada@example.com", "Newer", "2026-11-20T10:00:10Z"), until()).await.unwrap();
        assert_eq!(sync.directory.writes().len(), 1);
    }

    #[tokio::test]
    async fn newer_and_older_in_one_batch_end_with_the_newer() {
        for _ in 0..20 {
            let sync = sync(FakeDirectory::default().with_user("ada@example.com", &[]), OnUserDeleted::Disable);
            let event = sqs_event(vec![
                change_at("record_updated", "ada@example.com", "Newer", "2026-11-20T10:00:10Z"),
                change_at("record_updated", "ada@example.com", "Older", "2026-11-20T10:00:00Z"),
            ]);
            let response = sync.handle_batch(&BatchProcessor::new(CONCURRENCY, None), event, Instant::now() + Duration::from_secs(30)).await;
            assert!(response.batch_item_failures.is_empty(), "the user's changes wait for each other, not fail");
            assert_eq!(family_name(&sync, "ada@example.com").as_deref(), Some("Newer"));
        }
    }

    #[tokio::test]
    async fn the_rows_updated_at_orders_before_the_events_time() {
        let sync = sync(FakeDirectory::default().with_user("ada@example.com", &[]), OnUserDeleted::Disable);
        let newer_row = json!({"event": "record_updated", "table": "users", "occurredAt": "2026-11-20T10:00:00Z",
                               "record": {"email": "ada@example.com", "lastName": "Newer", "updatedAt": "2026-11-20 10:00:30.5+00"}});
        let older_row = json!({"event": "record_updated", "table": "users", "occurredAt": "2026-11-20T10:01:00Z",
                               "record": {"email": "ada@example.com", "lastName": "Older", "updatedAt": "2026-11-20T10:00:20Z"}});
        sync.handle_record(sqs_record("a", &newer_row.to_string()), until()).await.unwrap();
        sync.handle_record(sqs_record("b", &older_row.to_string()), until()).await.unwrap();
        assert_eq!(family_name(&sync, "ada@example.com").as_deref(), Some("Newer"));
        let bad = json!({"event": "record_updated", "table": "users", "record": {"email": "ada@example.com", "updatedAt": "last tuesday"}});
        assert!(matches!(sync.handle_record(sqs_record("c", &bad.to_string()), until()).await, Err(RecordError::Poison(r)) if r.contains("updatedAt")));
    }

    #[tokio::test]
    async fn a_user_held_by_another_instance_is_retried_later() {
        let sync = sync(FakeDirectory::default().with_user("ada@example.com", &[]), OnUserDeleted::Disable);
        let key = user_key("ada@example.com");
        sync.guard.items.lock().unwrap().insert(key, shared::testing::GuardItem { lease: Some(("elsewhere".into(), until())), ..Default::default() });
        let result = sync.handle_record(change_at("record_updated", "ada@example.com", "Newer", "2026-11-20T10:00:10Z"), until()).await;
        assert!(matches!(result, Err(RecordError::Transient(_))), "{result:?}");
        assert!(sync.directory.writes().is_empty());
    }

    #[tokio::test]
    async fn a_create_replayed_after_the_delete_does_not_bring_the_attributes_back() {
        let directory = FakeDirectory::default().with_user("ada@example.com", &[("family_name", "Byron")]);
        let sync = sync(directory, OnUserDeleted::Delete);
        let deleted = json!({"event": "records_deleted", "table": "users", "occurredAt": "2026-11-20T10:00:10Z", "record": {"email": "ada@example.com"}});
        sync.handle_record(sqs_record("d", &deleted.to_string()), until()).await.unwrap();
        assert!(sync.directory.user("ada@example.com").is_none());
        // The sign-up creates the user again; the old create is redelivered from the dead-letter queue.
        sync.directory.users.lock().unwrap().insert("ada@example.com".into(), DirectoryUser { enabled: true, attributes: HashMap::new() });
        sync.handle_record(change_at("records_created", "ada@example.com", "Byron", "2026-11-20T10:00:00Z"), until()).await.unwrap();
        assert_eq!(family_name(&sync, "ada@example.com"), None);
        assert!(sync.guard.items.lock().unwrap()[&user_key("ada@example.com")].deleted);
    }

    #[tokio::test]
    async fn a_user_not_yet_in_the_pool_is_retried_while_the_change_is_young_then_skipped() {
        let sync = sync(FakeDirectory::default(), OnUserDeleted::Disable);
        let young = sync.handle_record(change_at("records_created", "new@example.com", "New", &minutes_ago(1)), until()).await;
        assert!(matches!(young, Err(RecordError::Transient(reason)) if reason.contains("not in the pool yet")));
        let old = sync.handle_record(change_at("records_created", "new@example.com", "New", &minutes_ago(10)), until()).await;
        assert_eq!(old, Ok(()));
        assert_eq!(sync.guard.items.lock().unwrap()[&user_key("new@example.com")].version, None, "nothing applied, no version");
    }
}
