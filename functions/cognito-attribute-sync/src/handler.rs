//! One SQS record at a time: open the envelope, validate every row, then bring each user to what its row says, in
//! the order of the changes: an older change never overwrites a newer one (see [`shared::ordering`]).
//!
//! Any size of record: an invocation works on a batch for a slice of its time ([`WORK_SLICE`], less near its
//! deadline), the records of the batch at once, a few rows of each at once, every Cognito call paced at this
//! instance's share of the account's quotas. The rows a record did not reach by then go on as a new message on its
//! own queue (see [`crate::hand_on`]) and the record is acknowledged: no row is read twice for lack of time, no
//! record spends a receive for it, and a small change queued behind an import waits a slice at most.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use shared::batch::{BatchProcessor, RecordError};
use shared::db_event::{DatabaseEvent, EventKind, Row};
use shared::envelope::unwrap_sqs_body;
use shared::logging::mask_email;
use shared::metrics::Metrics;
use shared::ordering::{
    parse_version, user_key, version_of, Claim, Lease, OrderingGuard, SameVersion, Version, LEASE_GRACE,
};
use shared::pacer::Pacer;
use tokio::time::Instant;

use crate::config::OnUserDeleted;
use crate::hand_on::{continuation, HandOn};
use crate::ports::{DirectoryError, UserDirectory};
use shared::user_attributes::{desired_attributes, plan_writes, username, UserChange};

/// The table whose rows are Cognito users; the queue's subscription filter lets only these through, and anything
/// else that arrives is acknowledged and counted.
pub const USERS_TABLE: &str = "users";

/// Records handled at once: the whole batch (the event source's `BatchSize`), so a small change beside an import
/// waits for a few paced calls, not for the import's rows.
pub const CONCURRENCY: usize = 10;
/// Rows of one record in flight at once: the pacer, not the round trip, sets the pace of a lone large record.
pub const ROW_CONCURRENCY: usize = 2;
/// The longest an invocation works on its batch before handing the rest on: a change queued behind a large import
/// is received within about this long.
pub const WORK_SLICE: Duration = Duration::from_secs(10);
/// Kept back before the answer for the rows in flight when the slice ends (a read, two writes, the commit) and the
/// hand-on itself.
pub const HAND_ON_RESERVE: Duration = Duration::from_secs(3);
/// A rest of this many rows or more goes on as two messages, so both instances can take a part: the last large
/// record of an import was otherwise written at one instance's pace to its end.
pub const SPLIT_REST_FROM: usize = 50;
/// Cognito's account quotas of the calls this function makes: `UserUpdate` (the admin writes) and `UserRead`
/// (AdminGetUser), per second. Reads are paced at the same share of theirs as writes.
pub const USER_UPDATE_QUOTA: f64 = 25.0;
pub const USER_READ_QUOTA: f64 = 120.0;

/// The version of a change with no time at all (a hand-made event): older than every change that has one.
const UNKNOWN_VERSION: Version = 0;

/// A user another writer holds is claimed again this many times, with jittered backoff from
/// [`CONTENTION_BACKOFF`], before the row is handed on.
pub const CONTENTION_RETRIES: u32 = 6;
const CONTENTION_BACKOFF: Duration = Duration::from_millis(200);

/// How far a deletion versioned on the event's clock is moved ahead by default (`DELETE_SKEW_TOLERANCE_SECONDS`).
pub const DEFAULT_DELETE_SKEW_TOLERANCE: Duration = Duration::from_secs(5);

/// The times one batch works to.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// No row starts, and no paced call is waited for, after this: the rest is handed on.
    pub hand_on_by: Instant,
    /// The answer must be posted by then: a row in flight still finishes before it.
    pub answer_by: Instant,
    /// A claim left by this invocation lapses then ([`LEASE_GRACE`] after its deadline).
    pub lease_until: SystemTime,
}

impl Window {
    /// The window of an invocation started now with `deadline`.
    pub fn until(deadline: Instant) -> Self {
        let now = Instant::now();
        let lease_until = SystemTime::now() + deadline.saturating_duration_since(now) + LEASE_GRACE;
        // Half a second is left to post the answer: past the deadline Lambda throws it away with the whole batch.
        let answer_by = deadline.checked_sub(Duration::from_millis(500)).unwrap_or(deadline);
        let hand_on_by = (now + WORK_SLICE).min(answer_by.checked_sub(HAND_ON_RESERVE).unwrap_or(now));
        Self {
            hand_on_by,
            answer_by,
            lease_until,
        }
    }
}

/// This instance's pace of Cognito calls: its share of the account's quotas.
pub struct CognitoPace {
    writes: FairPacer,
    reads: FairPacer,
}

impl CognitoPace {
    /// `updates_per_second` is this instance's share of `UserUpdate`; reads get the same share of `UserRead`.
    pub fn new(updates_per_second: f64) -> Self {
        Self {
            writes: FairPacer::new(updates_per_second),
            reads: FairPacer::new(updates_per_second * USER_READ_QUOTA / USER_UPDATE_QUOTA),
        }
    }
}

/// A pacer whose slots go in the order they were asked for: the pacer alone lets every waiter race for each slot,
/// and a small change could lose every race to an import's next row.
struct FairPacer {
    pacer: Pacer,
    /// tokio's mutex queues its waiters first come, first served.
    turn: tokio::sync::Mutex<()>,
}

impl FairPacer {
    fn new(rate: f64) -> Self {
        Self {
            pacer: Pacer::new(rate),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// The next slot before `until`, in turn; `Err` when there is none.
    async fn acquire(&self, until: Instant) -> Result<(), ()> {
        let _turn = self.turn.lock().await;
        self.pacer.acquire(until).await
    }
}

pub struct AttributeSync<D, G, H> {
    directory: D,
    guard: G,
    hand_on: H,
    pace: CognitoPace,
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

/// How one row ended in this invocation.
enum RowOutcome {
    Done,
    /// Not started, or given back before any Cognito call: it goes on in the next invocation.
    NotReached,
    Failed(RecordError),
}

impl<D: UserDirectory, G: OrderingGuard, H: HandOn> AttributeSync<D, G, H> {
    pub fn new(
        directory: D,
        guard: G,
        hand_on: H,
        pace: CognitoPace,
        on_user_deleted: OnUserDeleted,
        user_not_found_retry: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            directory,
            guard,
            hand_on,
            pace,
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

    /// `deadline` is the invocation's.
    pub async fn handle_batch(
        &self,
        processor: &BatchProcessor,
        event: SqsEvent,
        deadline: Instant,
    ) -> SqsBatchResponse {
        let window = Window::until(deadline);
        let outcome = processor
            .process_until(event, Some(window.answer_by), |record| {
                self.handle_record(record, window)
            })
            .await;
        outcome.count_into(&self.metrics);
        outcome.response()
    }

    pub async fn handle_record(&self, record: SqsMessage, window: Window) -> Result<(), RecordError> {
        let published = unwrap_sqs_body(&record).map_err(RecordError::poison)?;
        let event = DatabaseEvent::from_json(&published.message).map_err(RecordError::poison)?;
        if event.table != USERS_TABLE {
            tracing::info!(event = %event.label(), "not a users event; acknowledged");
            self.metrics.count("RecordsIgnored", 1);
            return Ok(());
        }
        let event_version = match event.occurred_at.as_deref() {
            Some(text) => Some(
                parse_version(&serde_json::Value::String(text.to_owned()))
                    .ok_or_else(|| RecordError::poison("`occurredAt` is not an RFC 3339 timestamp"))?,
            ),
            None => published.published_at.map(version_of),
        };
        // Every row is validated before the first write, so a poison record changes nothing.
        let changes: Vec<(Change, Version)> = match event.kind {
            EventKind::RecordsCreated | EventKind::RecordUpdated => event
                .map_rows(|row| {
                    Ok((
                        Change::Upsert(desired_attributes(row)?),
                        row_version(row, event_version)?,
                    ))
                })
                .map_err(RecordError::Poison)?,
            EventKind::RecordsDeleted => event
                .map_rows(|row| {
                    Ok((
                        Change::Delete(username(row)?),
                        deletion_version(row, event_version, self.delete_skew_tolerance)?,
                    ))
                })
                .map_err(RecordError::Poison)?,
            EventKind::Other(ref name) => {
                tracing::info!(event = %name, "event not handled by this function; acknowledged");
                self.metrics.count("RecordsIgnored", 1);
                return Ok(());
            }
        };
        let outcomes: Vec<RowOutcome> = futures::stream::iter(changes)
            .map(|(change, version)| async move {
                if Instant::now() >= window.hand_on_by {
                    return RowOutcome::NotReached;
                }
                self.apply_in_order(&change, version, window).await
            })
            .buffered(ROW_CONCURRENCY)
            .collect()
            .await;
        let mut rest = Vec::new();
        let mut failure: Option<RecordError> = None;
        for (row, outcome) in event.rows.into_iter().zip(outcomes) {
            match outcome {
                RowOutcome::Done => {}
                RowOutcome::NotReached => rest.push(row),
                // A poison row makes the record poison; otherwise the first failure is the record's.
                RowOutcome::Failed(error) => {
                    if failure
                        .as_ref()
                        .is_none_or(|f| matches!(error, RecordError::Poison(_)) && !matches!(f, RecordError::Poison(_)))
                    {
                        failure = Some(error);
                    }
                }
            }
        }
        // A failed row brings the whole record back; its rows applied meanwhile are stale at the guard then, at no
        // Cognito call, and those not reached are reached then.
        if let Some(error) = failure {
            return Err(error);
        }
        if rest.is_empty() {
            return Ok(());
        }
        self.hand_on(&record, &published.message, rest, event_version).await
    }

    async fn hand_on(
        &self,
        record: &SqsMessage,
        message: &str,
        rest: Vec<Row>,
        event_version: Option<Version>,
    ) -> Result<(), RecordError> {
        let left = rest.len();
        let queue = record.event_source_arn.as_deref().ok_or_else(|| {
            RecordError::transient(format!(
                "{left} rows not reached, and the record names no queue to hand them on to"
            ))
        })?;
        let id = record.message_id.as_deref().unwrap_or("unknown");
        let parts = if left >= SPLIT_REST_FROM { 2 } else { 1 };
        // A part sent before another failed is applied twice at most: the guard makes the second time stale.
        for part in rest.chunks(left.div_ceil(parts)) {
            let body = continuation(message, part.to_vec(), event_version, id).map_err(RecordError::poison)?;
            self.hand_on
                .hand_on(queue, &body)
                .await
                .map_err(|e| RecordError::transient(format!("{left} rows not reached and not handed on ({e})")))?;
        }
        tracing::info!(
            message_id = id,
            rows = left,
            messages = parts,
            "rows not reached in this invocation handed on as new messages"
        );
        self.metrics.count("RowsHandedOn", left);
        Ok(())
    }

    /// Claims the user for this change's version, applies it at the pace, and commits the version; a change older
    /// than the last one applied, or that very change again, is skipped without a Cognito call.
    async fn apply_in_order(&self, change: &Change, version: Version, window: Window) -> RowOutcome {
        let user = mask_email(change.username());
        let key = user_key(change.username());
        let lock = self.user_lock(&key);
        let held = lock.lock().await;
        let outcome = self.claim_and_apply(change, version, window, &user, &key).await;
        drop(held);
        self.forget_lock(&key, lock);
        outcome
    }

    async fn claim_and_apply(
        &self,
        change: &Change,
        version: Version,
        window: Window,
        user: &str,
        key: &str,
    ) -> RowOutcome {
        // A change without a time cannot be told from another one of the same user: it is applied again.
        let same = if version == UNKNOWN_VERSION {
            SameVersion::Apply
        } else {
            SameVersion::Skip
        };
        let mut attempt = 0;
        let lease = loop {
            if Instant::now() >= window.hand_on_by {
                return RowOutcome::NotReached;
            }
            match self.guard.claim(key, version, same, window.lease_until).await {
                Ok(Claim::Acquired(lease)) => break lease,
                Ok(Claim::Stale { applied }) if applied == version => {
                    tracing::info!(user = %user, version, "this change was applied already; skipped");
                    self.metrics.count("ChangesAlreadyApplied", 1);
                    return RowOutcome::Done;
                }
                Ok(Claim::Stale { applied }) => {
                    tracing::info!(user = %user, version, applied, "a newer change of this user was applied already; skipped");
                    self.metrics.count("ChangesStale", 1);
                    return RowOutcome::Done;
                }
                // Another writer (an instance, the reconciliation) holds the user for seconds: wait for it here, or
                // hand the row on, rather than hand the record back for the queue's whole visibility timeout.
                Ok(Claim::Busy) => {
                    attempt += 1;
                    let pause = shared::backoff::jittered(CONTENTION_BACKOFF, attempt, Duration::from_secs(2));
                    if attempt > CONTENTION_RETRIES || Instant::now() + pause >= window.hand_on_by {
                        tracing::info!(user = %user, "another writer holds this user; the row is handed on");
                        self.metrics.count("ChangesDeferred", 1);
                        return RowOutcome::NotReached;
                    }
                    self.metrics.count("ChangesContended", 1);
                    tokio::time::sleep(pause).await;
                }
                Err(error) => return RowOutcome::Failed(RecordError::transient(error)),
            }
        };
        // The first read and write of the row are paced before any call: a row that cannot have them in this slice
        // is given back unread, so it is read once, by the invocation that applies it.
        if self.pace.reads.acquire(window.hand_on_by).await.is_err()
            || self.pace.writes.acquire(window.hand_on_by).await.is_err()
        {
            self.release(&lease).await;
            return RowOutcome::NotReached;
        }
        let applied = match change {
            Change::Upsert(change) => self.sync_user(change, version, lease.after_deletion, window).await,
            Change::Delete(username) => self.remove_user(username).await,
        };
        match self.settle(&lease, applied, matches!(change, Change::Delete(_))).await {
            Ok(()) => RowOutcome::Done,
            Err(error) => RowOutcome::Failed(error),
        }
    }

    /// Commits the version of an applied change, or gives the user back when it was not applied.
    async fn settle(
        &self,
        lease: &Lease,
        applied: Result<Applied, RecordError>,
        deleted: bool,
    ) -> Result<(), RecordError> {
        match applied {
            Ok(Applied::Yes) => self.guard.commit(lease, deleted).await.map_err(|e| {
                RecordError::transient(format!(
                    "the change was applied but its version not recorded ({e}); it is applied again"
                ))
            }),
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
        self.user_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_owned())
            .or_default()
            .clone()
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
            return Err(RecordError::transient(format!(
                "{user} is not in the pool yet ({} s after the change); retried",
                age.as_secs()
            )));
        }
        tracing::warn!(user = %user, "user not in the pool; skipped");
        self.metrics.count("UsersNotFound", 1);
        Ok(Applied::NotInPool)
    }

    /// A second write of the same row (the attributes to delete, the user to enable) takes a paced slot too; it
    /// may wait past the slice, not past the answer.
    async fn paced_write(&self, window: Window) -> Result<(), RecordError> {
        self.pace
            .writes
            .acquire(window.answer_by)
            .await
            .map_err(|()| RecordError::transient("no Cognito write slot left before the answer"))
    }

    /// `after_deletion`: the last change applied was this user's deletion, so this newer change brings the user
    /// back, and with `ON_USER_DELETED=disable` that means enabling it again. The first read and write slots are
    /// taken already.
    async fn sync_user(
        &self,
        change: &UserChange,
        version: Version,
        after_deletion: bool,
        window: Window,
    ) -> Result<Applied, RecordError> {
        let user = mask_email(&change.username);
        let current = match self.directory.get_user(&change.username).await {
            Ok(current) => current,
            Err(DirectoryError::UserNotFound) => return self.not_in_pool(&user, version),
            Err(e) => return Err(RecordError::from(e)),
        };
        let mut slot_taken = true;
        if after_deletion && !current.enabled && self.on_user_deleted == OnUserDeleted::Disable {
            self.write(self.directory.enable_user(&change.username).await)?;
            slot_taken = false;
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
            if !std::mem::take(&mut slot_taken) {
                self.paced_write(window).await?;
            }
            self.write(self.directory.update_attributes(&change.username, &plan.updates).await)?;
        }
        if !plan.deletions.is_empty() {
            if !std::mem::take(&mut slot_taken) {
                self.paced_write(window).await?;
            }
            self.write(
                self.directory
                    .delete_attributes(&change.username, &plan.deletions)
                    .await,
            )?;
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

    /// Its read and write slots are taken already.
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
    Ok(row_timestamp(row, "updatedAt")?
        .or(event_version)
        .unwrap_or(UNKNOWN_VERSION))
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
    Ok(event_version.map_or(UNKNOWN_VERSION, |v| {
        v.saturating_add(skew_tolerance.as_micros() as Version)
    }))
}

fn row_timestamp(row: &Row, field: &str) -> Result<Option<Version>, String> {
    match row.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => parse_version(value)
            .map(Some)
            .ok_or_else(|| format!("field `{field}` is neither an RFC 3339 timestamp nor epoch milliseconds")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hand_on::fake::RecordingHandOn;
    use crate::ports::DirectoryUser;
    use async_trait::async_trait;
    use serde_json::{json, Value};
    use shared::ordering::user_key;
    use shared::testing::{sns_envelope, sqs_event, sqs_record, MemoryOrderingGuard};
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// An in-memory user pool that records every write and counts the reads.
    #[derive(Default)]
    struct FakeDirectory {
        users: Mutex<HashMap<String, DirectoryUser>>,
        writes: Mutex<Vec<String>>,
        reads: AtomicUsize,
        /// Usernames whose calls fail as if Cognito were unavailable.
        unavailable: Vec<String>,
        /// Attribute names the pool rejects.
        rejected_attribute: Option<String>,
    }

    impl FakeDirectory {
        fn with_user(self, username: &str, attributes: &[(&str, &str)]) -> Self {
            let user = DirectoryUser {
                enabled: true,
                attributes: attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            };
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
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.check(username)?;
            Ok(self.user(username).unwrap())
        }
        async fn update_attributes(
            &self,
            username: &str,
            attributes: &[(String, String)],
        ) -> Result<(), DirectoryError> {
            self.check(username)?;
            if let Some(bad) = attributes
                .iter()
                .find(|(n, _)| Some(n) == self.rejected_attribute.as_ref())
            {
                return Err(DirectoryError::Rejected(format!("{} is not in the schema", bad.0)));
            }
            self.writes
                .lock()
                .unwrap()
                .push(format!("update {username} {attributes:?}"));
            let mut users = self.users.lock().unwrap();
            let user = users.get_mut(username).unwrap();
            user.attributes.extend(attributes.iter().cloned());
            Ok(())
        }
        async fn delete_attributes(&self, username: &str, names: &[String]) -> Result<(), DirectoryError> {
            self.check(username)?;
            self.writes
                .lock()
                .unwrap()
                .push(format!("delete-attributes {username} {names:?}"));
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

    type Sync = AttributeSync<FakeDirectory, Arc<MemoryOrderingGuard>, Arc<RecordingHandOn>>;

    fn paced_sync(directory: FakeDirectory, policy: OnUserDeleted, updates_per_second: f64) -> Sync {
        let metrics = Arc::new(Metrics::new("Test", "cognito-attribute-sync"));
        let pace = CognitoPace::new(updates_per_second);
        AttributeSync::new(
            directory,
            Arc::default(),
            Arc::default(),
            pace,
            policy,
            Duration::from_secs(300),
            metrics,
        )
    }

    fn sync(directory: FakeDirectory, policy: OnUserDeleted) -> Sync {
        paced_sync(directory, policy, 1_000.0)
    }

    /// A 30 s invocation's window, started now.
    fn until() -> Window {
        Window::until(Instant::now() + Duration::from_secs(30))
    }

    fn lapses_in_30s() -> SystemTime {
        SystemTime::now() + Duration::from_secs(30)
    }

    fn users_event(event: &str, rows: serde_json::Value) -> SqsMessage {
        let message = json!({"event": event, "table": "users", "records": rows}).to_string();
        sqs_record("m-1", &sns_envelope(&message, event, "users"))
    }

    #[tokio::test]
    async fn updated_row_writes_only_the_attributes_that_differ() {
        let directory = FakeDirectory::default().with_user(
            "ada@example.com",
            &[
                ("given_name", "Ada"),
                ("family_name", "Byron"),
                ("custom:_tenant", "acme"),
            ],
        );
        let sync = sync(directory, OnUserDeleted::Disable);
        let record = users_event(
            "record_updated",
            json!([{"email":"ada@example.com","firstName":"Ada","lastName":"Lovelace","_tenant":null}]),
        );
        sync.handle_record(record, until()).await.unwrap();
        assert_eq!(
            sync.directory.writes(),
            vec![
                r#"update ada@example.com [("family_name", "Lovelace")]"#.to_string(),
                r#"delete-attributes ada@example.com ["custom:_tenant"]"#.to_string(),
            ]
        );
        let user = sync.directory.user("ada@example.com").unwrap();
        assert_eq!(user.attributes.get("family_name").map(String::as_str), Some("Lovelace"));
        assert!(!user.attributes.contains_key("custom:_tenant"));
    }

    #[tokio::test]
    async fn unchanged_user_gets_no_write() {
        let directory =
            FakeDirectory::default().with_user("ada@example.com", &[("given_name", "Ada"), ("custom:_tenant", "acme")]);
        let sync = sync(directory, OnUserDeleted::Disable);
        let record = users_event(
            "record_updated",
            json!([{"email":"ada@example.com","firstName":"Ada","_tenant":"acme","lastName":null}]),
        );
        sync.handle_record(record, until()).await.unwrap();
        assert!(sync.directory.writes().is_empty());
    }

    #[tokio::test]
    async fn missing_user_is_skipped_not_retried() {
        let sync = sync(FakeDirectory::default(), OnUserDeleted::Disable);
        let record = users_event(
            "records_created",
            json!([{"email":"ghost@example.com","firstName":"G"}]),
        );
        assert_eq!(sync.handle_record(record, until()).await, Ok(()));
        assert!(sync.directory.writes().is_empty());
    }

    #[tokio::test]
    async fn one_invalid_row_makes_the_record_poison_before_any_write() {
        let directory = FakeDirectory::default().with_user("ada@example.com", &[]);
        let sync = sync(directory, OnUserDeleted::Disable);
        let record = users_event(
            "records_created",
            json!([{"email":"ada@example.com","firstName":"Ada"},{"email":"b@example.com","lastName":{"x":1}}]),
        );
        let err = sync.handle_record(record, until()).await.unwrap_err();
        assert!(
            matches!(&err, RecordError::Poison(reason) if reason.contains("row 1") && reason.contains("lastName")),
            "{err:?}"
        );
        assert!(sync.directory.writes().is_empty());
    }

    #[tokio::test]
    async fn unparseable_body_is_poison() {
        let sync = sync(FakeDirectory::default(), OnUserDeleted::Disable);
        assert!(matches!(
            sync.handle_record(sqs_record("m", "{not json"), until()).await,
            Err(RecordError::Poison(_))
        ));
    }

    #[tokio::test]
    async fn other_tables_and_events_are_acknowledged_without_calls() {
        let directory = FakeDirectory {
            unavailable: vec!["ada@example.com".into()],
            ..Default::default()
        };
        let sync = sync(directory, OnUserDeleted::Disable);
        let other_table =
            json!({"event":"records_created","table":"publish_history","records":[{"email":"ada@example.com"}]})
                .to_string();
        assert_eq!(sync.handle_record(sqs_record("m", &other_table), until()).await, Ok(()));
        let other_event =
            json!({"event":"records_archived","table":"users","records":[{"email":"ada@example.com"}]}).to_string();
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
        let sync_delete = sync(
            FakeDirectory::default().with_user("ada@example.com", &[]),
            OnUserDeleted::Delete,
        );
        sync_delete
            .handle_record(
                users_event("records_deleted", json!([{"email":"ada@example.com"}])),
                until(),
            )
            .await
            .unwrap();
        assert_eq!(
            sync_delete.directory.writes(),
            vec!["delete-user ada@example.com".to_string()]
        );
        assert!(sync_delete.directory.user("ada@example.com").is_none());
        // Redelivered after the delete: the user is gone, which is not an error.
        sync_delete
            .handle_record(
                users_event("records_deleted", json!([{"email":"ada@example.com"}])),
                until(),
            )
            .await
            .unwrap();

        let sync_ignore = sync(
            FakeDirectory::default().with_user("ada@example.com", &[]),
            OnUserDeleted::Ignore,
        );
        sync_ignore
            .handle_record(
                users_event("records_deleted", json!([{"email":"ada@example.com"}])),
                until(),
            )
            .await
            .unwrap();
        assert!(sync_ignore.directory.writes().is_empty());
        assert!(sync_ignore.directory.user("ada@example.com").unwrap().enabled);
    }

    #[tokio::test]
    async fn unavailable_directory_is_transient_and_rejection_is_poison() {
        let directory = FakeDirectory {
            unavailable: vec!["ada@example.com".into()],
            ..Default::default()
        };
        let sync1 = sync(directory, OnUserDeleted::Disable);
        let record = users_event("record_updated", json!([{"email":"ada@example.com","firstName":"Ada"}]));
        assert!(matches!(
            sync1.handle_record(record.clone(), until()).await,
            Err(RecordError::Transient(_))
        ));

        let directory = FakeDirectory {
            rejected_attribute: Some("custom:_tenant".into()),
            ..Default::default()
        }
        .with_user("ada@example.com", &[]);
        let sync2 = sync(directory, OnUserDeleted::Disable);
        let record = users_event("record_updated", json!([{"email":"ada@example.com","_tenant":"acme"}]));
        assert!(
            matches!(sync2.handle_record(record, until()).await, Err(RecordError::Poison(reason)) if reason.contains("custom:_tenant"))
        );
    }

    #[tokio::test]
    async fn batch_reports_only_the_records_that_can_succeed_later() {
        let directory = FakeDirectory {
            unavailable: vec!["busy@example.com".into()],
            ..Default::default()
        }
        .with_user("ada@example.com", &[]);
        let sync = sync(directory, OnUserDeleted::Disable);
        let good =
            json!({"event":"record_updated","table":"users","record":{"email":"ada@example.com","firstName":"Ada"}})
                .to_string();
        let busy =
            json!({"event":"record_updated","table":"users","record":{"email":"busy@example.com","firstName":"B"}})
                .to_string();
        let event = sqs_event(vec![
            sqs_record("good", &good),
            sqs_record("busy", &busy),
            sqs_record("poison", "{oops"),
        ]);
        let response = sync
            .handle_batch(
                &BatchProcessor::new(CONCURRENCY, None),
                event,
                Instant::now() + Duration::from_secs(30),
            )
            .await;
        let mut failed: Vec<_> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.clone())
            .collect();
        failed.sort();
        // Without a dead-letter queue the poison record is reported too, so the queue's redrive policy moves it.
        assert_eq!(failed, vec!["busy", "poison"]);
        assert_eq!(
            sync.directory.writes(),
            vec![r#"update ada@example.com [("given_name", "Ada")]"#.to_string()]
        );
    }

    const QUEUE: &str = "arn:aws:sqs:eu-west-1:123456789012:dev-cognito-attribute-sync";

    /// `count` users of an import, each in the pool with none of the row's attributes yet.
    fn import(count: usize, occurred_at: &str) -> (FakeDirectory, SqsMessage) {
        let directory = FakeDirectory::default();
        let rows: Vec<_> = (0..count)
            .map(|i| {
                let email = format!("user{i:04}@example.com");
                directory.users.lock().unwrap().insert(
                    email.clone(),
                    DirectoryUser {
                        enabled: true,
                        attributes: HashMap::new(),
                    },
                );
                json!({"email": email, "firstName": format!("First{i}"), "_tenant": "acme"})
            })
            .collect();
        let message = json!({"event": "records_created", "table": "users", "occurredAt": occurred_at, "records": rows})
            .to_string();
        let mut record = sqs_record("import-1", &sns_envelope(&message, "records_created", "users"));
        record.event_source_arn = Some(QUEUE.into());
        (directory, record)
    }

    /// A record larger than a slice at the pace: what is reached is applied, the rest goes on as one new message on
    /// the record's own queue (same event, same version), and the record is acknowledged. The continuation applies
    /// the rest, and nothing is read twice.
    #[tokio::test(start_paused = true)]
    async fn rows_not_reached_in_the_slice_go_on_as_a_new_message_and_none_is_read_twice() {
        let (directory, record) = import(300, "2026-11-20T10:00:00.123456Z");
        let sync = paced_sync(directory, OnUserDeleted::Disable, 10.0);
        let started = Instant::now();
        assert_eq!(
            sync.handle_record(record, until()).await,
            Ok(()),
            "acknowledged, not handed back"
        );
        assert!(
            started.elapsed() <= WORK_SLICE + HAND_ON_RESERVE,
            "answered within the slice: {:?}",
            started.elapsed()
        );
        let written = sync.directory.writes().len();
        assert!((90..=110).contains(&written), "10 a second for 10 s: {written}");
        let sent = sync.hand_on.sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 2, "a large rest in two parts, one for each instance");
        assert!(sent.iter().all(|(queue, _)| queue == QUEUE), "the record's own queue");
        let parts = sync.hand_on.bodies();
        let rest: Vec<&Value> = parts.iter().flat_map(|p| p["records"].as_array().unwrap()).collect();
        assert_eq!(rest.len(), 300 - written, "exactly the rows not applied");
        assert_eq!(
            rest[0]["email"],
            format!("user{written:04}@example.com"),
            "in their order"
        );
        assert!(
            (parts[0]["records"].as_array().unwrap().len() as i64
                - parts[1]["records"].as_array().unwrap().len() as i64)
                .abs()
                <= 1,
            "halves"
        );
        for part in &parts {
            assert_eq!(part["occurredAt"], "2026-11-20T10:00:00.123456Z");
            assert_eq!(part["continues"], "import-1");
        }

        // Each continuation, as the queue delivers it (raw), until nothing is left.
        let mut delivered = 0;
        while delivered < sync.hand_on.sent.lock().unwrap().len() {
            let body = sync.hand_on.sent.lock().unwrap()[delivered].1.clone();
            delivered += 1;
            let mut record = sqs_record(&format!("rest-{delivered}"), &body);
            record.event_source_arn = Some(QUEUE.into());
            assert_eq!(sync.handle_record(record, until()).await, Ok(()));
        }
        assert_eq!(sync.directory.writes().len(), 300, "every user written once");
        assert_eq!(sync.directory.reads.load(Ordering::SeqCst), 300, "every user read once");
        assert!(sync.directory.users.lock().unwrap().values().all(|u| u
            .attributes
            .get("custom:_tenant")
            .map(String::as_str)
            == Some("acme")));
    }

    /// The whole import delivered again (a redelivery, or the API sending it twice): every row is stale at the
    /// guard, with no Cognito call at all, and nothing waits for the pace.
    #[tokio::test(start_paused = true)]
    async fn the_same_import_delivered_again_costs_no_cognito_call() {
        let (directory, record) = import(40, "2026-11-20T10:00:00Z");
        let sync = paced_sync(directory, OnUserDeleted::Disable, 1_000.0);
        sync.handle_record(record.clone(), until()).await.unwrap();
        assert_eq!(
            (
                sync.directory.reads.load(Ordering::SeqCst),
                sync.directory.writes().len()
            ),
            (40, 40)
        );
        let _ = sync.metrics.take_document();
        sync.handle_record(record, until()).await.unwrap();
        assert_eq!(
            (
                sync.directory.reads.load(Ordering::SeqCst),
                sync.directory.writes().len()
            ),
            (40, 40),
            "no read, no write"
        );
        assert_eq!(sync.metrics.take_document().unwrap()["ChangesAlreadyApplied"], 40.0);
        assert!(sync.hand_on.sent.lock().unwrap().is_empty());
    }

    /// A change without any time cannot be told from another change of the user: it is applied again.
    #[tokio::test]
    async fn a_change_without_a_time_is_applied_again() {
        let sync = sync(
            FakeDirectory::default().with_user("ada@example.com", &[]),
            OnUserDeleted::Disable,
        );
        let untimed = || {
            sqs_record("m", &json!({"event": "record_updated", "table": "users", "record": {"email": "ada@example.com", "lastName": "L"}}).to_string())
        };
        sync.handle_record(untimed(), until()).await.unwrap();
        sync.handle_record(untimed(), until()).await.unwrap();
        assert_eq!(sync.directory.reads.load(Ordering::SeqCst), 2);
    }

    /// A batch of an import and a one-user change: the change does not wait for the import's rows.
    #[tokio::test(start_paused = true)]
    async fn a_small_change_beside_an_import_is_applied_within_seconds() {
        let (directory, big) = import(200, "2026-11-20T10:00:00Z");
        let directory = directory.with_user("ada@example.com", &[]);
        let sync = Arc::new(paced_sync(directory, OnUserDeleted::Disable, 10.0));
        let small = change_at("record_updated", "ada@example.com", "Lovelace", "2026-11-20T10:00:05Z");
        let started = Instant::now();
        let watcher = {
            let sync = sync.clone();
            tokio::spawn(async move {
                while family_name(&sync, "ada@example.com").is_none() && started.elapsed() < Duration::from_secs(60) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                started.elapsed()
            })
        };
        let response = sync
            .handle_batch(
                &BatchProcessor::new(CONCURRENCY, None),
                sqs_event(vec![big, small]),
                Instant::now() + Duration::from_secs(30),
            )
            .await;
        assert!(response.batch_item_failures.is_empty(), "{response:?}");
        let took = watcher.await.unwrap();
        assert!(took < Duration::from_secs(1), "the small change waited {took:?}");
    }

    /// The rest cannot be handed on (the queue refuses): the record comes back whole, and its applied rows are
    /// stale at the next delivery.
    #[tokio::test(start_paused = true)]
    async fn a_rest_that_cannot_be_handed_on_brings_the_record_back() {
        let (directory, record) = import(300, "2026-11-20T10:00:00Z");
        let mut sync = paced_sync(directory, OnUserDeleted::Disable, 10.0);
        sync.hand_on = Arc::new(RecordingHandOn {
            refuse: true,
            ..Default::default()
        });
        assert!(
            matches!(sync.handle_record(record, until()).await, Err(RecordError::Transient(reason)) if reason.contains("not handed on"))
        );
    }

    fn change_at(event: &str, email: &str, last_name: &str, occurred_at: &str) -> SqsMessage {
        let message = json!({"event": event, "table": "users", "occurredAt": occurred_at, "record": {"email": email, "lastName": last_name}}).to_string();
        sqs_record(&format!("m-{last_name}"), &sns_envelope(&message, event, "users"))
    }

    fn family_name(sync: &Sync, email: &str) -> Option<String> {
        sync.directory
            .user(email)
            .and_then(|u| u.attributes.get("family_name").cloned())
    }

    fn minutes_ago(minutes: i64) -> String {
        (Utc::now() - chrono::Duration::minutes(minutes)).to_rfc3339()
    }

    #[tokio::test]
    async fn an_older_change_delivered_after_a_newer_one_is_skipped() {
        let sync = sync(
            FakeDirectory::default().with_user("ada@example.com", &[]),
            OnUserDeleted::Disable,
        );
        sync.handle_record(
            change_at("record_updated", "ada@example.com", "Newer", "2026-11-20T10:00:10Z"),
            until(),
        )
        .await
        .unwrap();
        sync.handle_record(
            change_at("record_updated", "ada@example.com", "Older", "2026-11-20T10:00:00Z"),
            until(),
        )
        .await
        .unwrap();
        assert_eq!(family_name(&sync, "ada@example.com").as_deref(), Some("Newer"));
        assert_eq!(sync.metrics.take_document().unwrap()["ChangesStale"], 1.0);
        // The same change again (a redelivery) is no error and writes nothing new.
        sync.handle_record(
            change_at("record_updated", "ada@example.com", "Newer", "2026-11-20T10:00:10Z"),
            until(),
        )
        .await
        .unwrap();
        assert_eq!(sync.directory.writes().len(), 1);
    }

    #[tokio::test]
    async fn newer_and_older_in_one_batch_end_with_the_newer() {
        for _ in 0..20 {
            let sync = sync(
                FakeDirectory::default().with_user("ada@example.com", &[]),
                OnUserDeleted::Disable,
            );
            let event = sqs_event(vec![
                change_at("record_updated", "ada@example.com", "Newer", "2026-11-20T10:00:10Z"),
                change_at("record_updated", "ada@example.com", "Older", "2026-11-20T10:00:00Z"),
            ]);
            let response = sync
                .handle_batch(
                    &BatchProcessor::new(CONCURRENCY, None),
                    event,
                    Instant::now() + Duration::from_secs(30),
                )
                .await;
            assert!(
                response.batch_item_failures.is_empty(),
                "the user's changes wait for each other, not fail"
            );
            assert_eq!(family_name(&sync, "ada@example.com").as_deref(), Some("Newer"));
        }
    }

    #[tokio::test]
    async fn the_rows_updated_at_orders_before_the_events_time() {
        let sync = sync(
            FakeDirectory::default().with_user("ada@example.com", &[]),
            OnUserDeleted::Disable,
        );
        let newer_row = json!({"event": "record_updated", "table": "users", "occurredAt": "2026-11-20T10:00:00Z",
                               "record": {"email": "ada@example.com", "lastName": "Newer", "updatedAt": "2026-11-20 10:00:30.5+00"}});
        let older_row = json!({"event": "record_updated", "table": "users", "occurredAt": "2026-11-20T10:01:00Z",
                               "record": {"email": "ada@example.com", "lastName": "Older", "updatedAt": "2026-11-20T10:00:20Z"}});
        sync.handle_record(sqs_record("a", &newer_row.to_string()), until())
            .await
            .unwrap();
        sync.handle_record(sqs_record("b", &older_row.to_string()), until())
            .await
            .unwrap();
        assert_eq!(family_name(&sync, "ada@example.com").as_deref(), Some("Newer"));
        let bad = json!({"event": "record_updated", "table": "users", "record": {"email": "ada@example.com", "updatedAt": "last tuesday"}});
        assert!(
            matches!(sync.handle_record(sqs_record("c", &bad.to_string()), until()).await, Err(RecordError::Poison(r)) if r.contains("updatedAt"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_held_by_another_writer_is_waited_for_then_handed_on_not_handed_back() {
        let sync = sync(
            FakeDirectory::default().with_user("ada@example.com", &[]),
            OnUserDeleted::Disable,
        );
        let key = user_key("ada@example.com");
        sync.guard.items.lock().unwrap().insert(
            key,
            shared::testing::GuardItem {
                lease: Some(("elsewhere".into(), lapses_in_30s())),
                ..Default::default()
            },
        );
        let mut record = change_at("record_updated", "ada@example.com", "Newer", "2026-11-20T10:00:10Z");
        record.event_source_arn = Some(QUEUE.into());
        let result = sync.handle_record(record, until()).await;
        assert_eq!(result, Ok(()), "acknowledged: the row goes on as a new message");
        assert!(sync.directory.writes().is_empty());
        let handed_on = sync.hand_on.bodies();
        assert_eq!(handed_on.len(), 1);
        assert_eq!(
            handed_on[0]["records"],
            json!([{"email": "ada@example.com", "lastName": "Newer"}])
        );
        assert_eq!(sync.metrics.take_document().unwrap()["ChangesDeferred"], 1.0);
    }

    #[tokio::test]
    async fn a_create_replayed_after_the_delete_does_not_bring_the_attributes_back() {
        let directory = FakeDirectory::default().with_user("ada@example.com", &[("family_name", "Byron")]);
        let sync = sync(directory, OnUserDeleted::Delete);
        let deleted = json!({"event": "records_deleted", "table": "users", "occurredAt": "2026-11-20T10:00:10Z", "record": {"email": "ada@example.com"}});
        sync.handle_record(sqs_record("d", &deleted.to_string()), until())
            .await
            .unwrap();
        assert!(sync.directory.user("ada@example.com").is_none());
        // The sign-up creates the user again; the old create is redelivered from the dead-letter queue.
        sync.directory.users.lock().unwrap().insert(
            "ada@example.com".into(),
            DirectoryUser {
                enabled: true,
                attributes: HashMap::new(),
            },
        );
        sync.handle_record(
            change_at("records_created", "ada@example.com", "Byron", "2026-11-20T10:00:00Z"),
            until(),
        )
        .await
        .unwrap();
        assert_eq!(family_name(&sync, "ada@example.com"), None);
        assert!(sync.guard.items.lock().unwrap()[&user_key("ada@example.com")].deleted);
    }

    #[tokio::test]
    async fn a_user_not_yet_in_the_pool_is_retried_while_the_change_is_young_then_skipped() {
        let sync = sync(FakeDirectory::default(), OnUserDeleted::Disable);
        let young = sync
            .handle_record(
                change_at("records_created", "new@example.com", "New", &minutes_ago(1)),
                until(),
            )
            .await;
        assert!(matches!(young, Err(RecordError::Transient(reason)) if reason.contains("not in the pool yet")));
        let old = sync
            .handle_record(
                change_at("records_created", "new@example.com", "New", &minutes_ago(10)),
                until(),
            )
            .await;
        assert_eq!(old, Ok(()));
        assert_eq!(
            sync.guard.items.lock().unwrap()[&user_key("new@example.com")].version,
            None,
            "nothing applied, no version"
        );
    }
}
