//! One invocation of a reconciliation run: list the pool (once per run, kept across warm invocations), read the
//! table page by page after where the run stands, compare each row with its pool user through the one mapping the
//! event path uses, and repair what differs through the ordering guard, paced. It stops [`STOP_MARGIN`] before the
//! invocation's deadline and hands back a continuation that resumes after the last row handled.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use shared::logging::mask_email;
use shared::metrics::Metrics;
use shared::ordering::{version_of, Claim, OrderingGuard, Version, LEASE_GRACE};
use shared::pacer::Pacer;
use shared::startup::FunctionError;
use shared::user_attributes::{desired_attributes, plan_writes, Desired, UserChange, WritePlan};
use tokio::time::Instant;

use crate::ports::{user_key, DirectoryError, ListedUser, PoolDirectory, UserRow, UserTable};
use crate::run::{Continuation, Counts, Difference, Drift, Request, Summary, LISTED_AT_MOST};

/// The run stops this long before the invocation's deadline, to answer with its continuation.
pub const STOP_MARGIN: Duration = Duration::from_secs(5);
/// Rows read per query.
pub const PAGE_SIZE: i64 = 500;
/// A user another writer holds, or a write Cognito refused for the moment, is tried this many times more.
const RETRIES: u32 = 3;

/// The pool's users by key (lower-cased address), in key order.
type Pool = BTreeMap<String, ListedUser>;

pub struct Reconciler<D, G> {
    directory: D,
    guard: G,
    write_pacer: Pacer,
    page_size: i64,
    metrics: Arc<Metrics>,
    /// The listing of the run in progress, kept for its next invocation when it lands on this instance.
    listing: Mutex<Option<(String, Arc<Pool>)>>,
}

/// How handling one row ended.
enum Handled {
    Done,
    /// The invocation's time is up before the row was finished: the next invocation handles it again.
    OutOfTime,
}

impl<D: PoolDirectory, G: OrderingGuard> Reconciler<D, G> {
    pub fn new(directory: D, guard: G, max_writes_per_second: f64, metrics: Arc<Metrics>) -> Self {
        Self {
            directory,
            guard,
            write_pacer: Pacer::new(max_writes_per_second),
            page_size: PAGE_SIZE,
            metrics,
            listing: Mutex::new(None),
        }
    }

    pub fn with_page_size(mut self, page_size: i64) -> Self {
        self.page_size = page_size.max(1);
        self
    }

    pub async fn run<T: UserTable>(
        &self,
        request: Request,
        table: &T,
        deadline: Instant,
    ) -> Result<Summary, FunctionError> {
        let stop_at = deadline.checked_sub(STOP_MARGIN).unwrap_or_else(Instant::now);
        let lease_until = SystemTime::now() + deadline.saturating_duration_since(Instant::now()) + LEASE_GRACE;
        let mut run = match request {
            Request::Start { dry_run } => Continuation {
                dry_run,
                run_started_at: Utc::now().to_rfc3339(),
                after: None,
                counts: Counts::default(),
                drifted_users: Vec::new(),
                missing_users: Vec::new(),
            },
            Request::Continue(continuation) => continuation,
        };
        let at_start = run.counts.clone();
        tracing::info!(dry_run = run.dry_run, run = %run.run_started_at, resumes = run.after.is_some(), "reconciliation");
        let pool = self.pool(&run.run_started_at).await?;
        let complete = loop {
            if Instant::now() >= stop_at {
                break false;
            }
            let read_at = version_of(Utc::now());
            let rows = table
                .page(run.after.as_deref(), self.page_size)
                .await
                .map_err(|e| FunctionError::new("DatabaseError", e))?;
            let mut out_of_time = false;
            for row in &rows {
                if Instant::now() >= stop_at {
                    out_of_time = true;
                    break;
                }
                let key = row.key();
                let after = run.after.clone().unwrap_or_default();
                // Pool users between the last row and this one have no row.
                let unmatched = if key > after {
                    pool.range::<String, _>((Excluded(&after), Excluded(&key))).count() as u64
                } else {
                    0
                };
                if let Handled::OutOfTime = self
                    .reconcile_row(table, row, pool.get(&key), read_at, &mut run, stop_at, lease_until)
                    .await
                {
                    out_of_time = true;
                    break;
                }
                run.counts.not_in_database += unmatched;
                run.after = Some(key);
            }
            if out_of_time {
                break false;
            }
            if (rows.len() as i64) < self.page_size {
                let after = run.after.clone().unwrap_or_default();
                run.counts.not_in_database += pool.range::<String, _>((Excluded(&after), Unbounded)).count() as u64;
                break true;
            }
        };
        self.count_metrics(&at_start, &run.counts);
        if complete {
            self.listing.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
        tracing::info!(complete, counts = ?run.counts, "reconciliation invocation done");
        Ok(Summary {
            dry_run: run.dry_run,
            complete,
            counts: run.counts.clone(),
            drifted_users: run.drifted_users.clone(),
            missing_users: run.missing_users.clone(),
            continuation: (!complete).then_some(run),
        })
    }

    /// The pool of run `run`: listed once, then reused by the run's later invocations on this instance.
    async fn pool(&self, run: &str) -> Result<Arc<Pool>, FunctionError> {
        if let Some((listed_for, pool)) = self.listing.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            if listed_for == run {
                return Ok(pool.clone());
            }
        }
        let users = self
            .directory
            .list_users()
            .await
            .map_err(|e| FunctionError::new("DependencyUnavailable", format!("listing the user pool: {e}")))?;
        let pool: Arc<Pool> = Arc::new(
            users
                .into_iter()
                .map(|user| (user_key(user.attributes.get("email").unwrap_or(&user.username)), user))
                .collect(),
        );
        tracing::info!(users = pool.len(), "listed the user pool");
        *self.listing.lock().unwrap_or_else(|p| p.into_inner()) = Some((run.to_owned(), pool.clone()));
        Ok(pool)
    }

    #[allow(clippy::too_many_arguments)]
    async fn reconcile_row<T: UserTable>(
        &self,
        table: &T,
        row: &UserRow,
        user: Option<&ListedUser>,
        read_at: Version,
        run: &mut Continuation,
        stop_at: Instant,
        lease_until: SystemTime,
    ) -> Handled {
        let masked = mask_email(&row.email);
        let Some(user) = user else {
            run.counts.scanned += 1;
            run.counts.missing_in_pool += 1;
            if run.missing_users.len() < LISTED_AT_MOST {
                run.missing_users.push(masked.clone());
            }
            tracing::info!(user = %masked, "row without a pool user; not created (sign-up creates users)");
            return Handled::Done;
        };
        let change = match desired_attributes(&row.as_contract_row()) {
            Ok(change) => change,
            Err(reason) => {
                run.counts.scanned += 1;
                run.counts.failed += 1;
                tracing::warn!(user = %masked, reason = %reason, "row Cognito cannot take; skipped");
                return Handled::Done;
            }
        };
        let plan = plan_writes(&change, &user.attributes);
        if plan.is_empty() {
            run.counts.scanned += 1;
            run.counts.in_sync += 1;
            return Handled::Done;
        }
        if run.dry_run {
            run.counts.scanned += 1;
            run.counts.drifted += 1;
            if run.drifted_users.len() < LISTED_AT_MOST {
                run.drifted_users.push(Drift {
                    user: masked,
                    differences: differences(&change, &user.attributes),
                });
            }
            return Handled::Done;
        }
        // The row was read at `read_at` (or says when it changed): a change the event path applied after that is newer.
        let version = row.updated_at.unwrap_or(read_at);
        let mut outcome = self
            .repair(&user.username, &row.email, &change, version, stop_at, lease_until)
            .await;
        if let Repair::Stale { applied } = outcome {
            outcome = self
                .recheck(table, &user.username, &row.key(), applied, stop_at, lease_until)
                .await;
        }
        match outcome {
            Repair::OutOfTime => return Handled::OutOfTime,
            Repair::InLine => run.counts.superseded += 1,
            Repair::Stale { .. } => run.counts.failed += 1,
            Repair::Repaired => run.counts.repaired += 1,
            Repair::Vanished => run.counts.missing_in_pool += 1,
            Repair::Failed => run.counts.failed += 1,
        }
        run.counts.scanned += 1;
        run.counts.drifted += 1;
        Handled::Done
    }

    /// Claims the user for the row's version, re-reads it (the listing may be minutes old), writes what still
    /// differs, paced, and commits.
    /// `username` is the pool's name of the user (with an email alias, not the address); the guard knows users by
    /// their address, as the event path does.
    async fn repair(
        &self,
        username: &str,
        email: &str,
        change: &UserChange,
        version: Version,
        stop_at: Instant,
        lease_until: SystemTime,
    ) -> Repair {
        let key = shared::ordering::user_key(email);
        let masked = mask_email(username);
        let mut attempt = 0;
        let lease = loop {
            match self
                .guard
                .claim(&key, version, shared::ordering::SameVersion::Apply, lease_until)
                .await
            {
                Ok(Claim::Acquired(lease)) => break lease,
                Ok(Claim::Stale { applied }) => return Repair::Stale { applied },
                Ok(Claim::Busy) | Err(_) if attempt < RETRIES => {
                    attempt += 1;
                    if !self.back_off(attempt, stop_at).await {
                        return Repair::OutOfTime;
                    }
                }
                Ok(Claim::Busy) | Err(_) => return Repair::Failed,
            }
        };
        let outcome = self.write(username, change, stop_at).await;
        let settled = match outcome {
            Repair::Repaired | Repair::InLine => self.guard.commit(&lease, false).await,
            _ => self.guard.release(&lease).await,
        };
        if let Err(error) = settled {
            tracing::warn!(user = %masked, error = %error, "could not settle the ordering lease; it lapses with this invocation");
        }
        outcome
    }

    async fn write(&self, username: &str, change: &UserChange, stop_at: Instant) -> Repair {
        let masked = mask_email(username);
        let current = match self.directory.get_user(username).await {
            Ok(current) => current,
            Err(DirectoryError::UserNotFound) => return Repair::Vanished,
            Err(error) => {
                tracing::warn!(user = %masked, error = %error, "could not read the user");
                return Repair::Failed;
            }
        };
        let WritePlan { updates, deletions } = plan_writes(change, &current.attributes);
        if updates.is_empty() && deletions.is_empty() {
            tracing::info!(user = %masked, "in line with the row when read again; no write");
            return Repair::InLine;
        }
        if !updates.is_empty() {
            if let Some(outcome) = self
                .call(&masked, stop_at, || {
                    self.directory.update_attributes(username, &updates)
                })
                .await
            {
                return outcome;
            }
        }
        if !deletions.is_empty() {
            if let Some(outcome) = self
                .call(&masked, stop_at, || {
                    self.directory.delete_attributes(username, &deletions)
                })
                .await
            {
                return outcome;
            }
        }
        tracing::info!(user = %masked, updated = updates.len(), deleted = deletions.len(), "repaired");
        Repair::Repaired
    }

    /// One paced write, retried with backoff while Cognito throttles it (after the SDK's own retries); `None` when it
    /// went through.
    async fn call<F, Fut>(&self, masked: &str, stop_at: Instant, write: F) -> Option<Repair>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), DirectoryError>>,
    {
        let mut attempt = 0;
        loop {
            if self.write_pacer.acquire(stop_at).await.is_err() {
                return Some(Repair::OutOfTime);
            }
            match write().await {
                Ok(()) => return None,
                Err(DirectoryError::UserNotFound) => return Some(Repair::Vanished),
                Err(DirectoryError::Unavailable(error)) if attempt < RETRIES => {
                    attempt += 1;
                    tracing::warn!(user = %masked, error = %error, attempt, "write refused for now; backing off");
                    if !self.back_off(attempt, stop_at).await {
                        return Some(Repair::OutOfTime);
                    }
                }
                Err(error) => {
                    tracing::warn!(user = %masked, error = %error, "write failed");
                    return Some(Repair::Failed);
                }
            }
        }
    }

    /// A newer version was applied than the row's: on a timestamp alone, that may be another clock's. The row as it
    /// is now, all committed changes in it, says what the user must be: already that (`InLine`), or written now
    /// under the version applied (an equal version may apply), so the table's values are not left behind.
    async fn recheck<T: UserTable>(
        &self,
        table: &T,
        username: &str,
        key: &str,
        applied: Version,
        stop_at: Instant,
        lease_until: SystemTime,
    ) -> Repair {
        let masked = mask_email(username);
        let row = match table.row(key).await {
            Ok(Some(row)) => row,
            Ok(None) => {
                tracing::info!(user = %masked, "the row was deleted since it was read; left as it is");
                return Repair::InLine;
            }
            Err(error) => {
                tracing::warn!(user = %masked, error = %error, "could not read the row again");
                return Repair::Failed;
            }
        };
        let change = match desired_attributes(&row.as_contract_row()) {
            Ok(change) => change,
            Err(_) => return Repair::Failed,
        };
        let version = row.updated_at.unwrap_or(applied).max(applied);
        let outcome = self
            .repair(username, &row.email, &change, version, stop_at, lease_until)
            .await;
        if let Repair::Stale { applied } = outcome {
            tracing::warn!(user = %masked, applied, "still differs from its row after a newer change; left for the next run");
        }
        outcome
    }

    /// Waits 1, 2, 4 s...; false when that would pass `stop_at`.
    async fn back_off(&self, attempt: u32, stop_at: Instant) -> bool {
        let wait = Duration::from_secs(1 << (attempt - 1).min(4));
        if Instant::now() + wait >= stop_at {
            return false;
        }
        tokio::time::sleep(wait).await;
        true
    }

    fn count_metrics(&self, before: &Counts, after: &Counts) {
        let delta = |a: u64, b: u64| a.saturating_sub(b) as usize;
        self.metrics.count("UsersScanned", delta(after.scanned, before.scanned));
        self.metrics.count("UsersDrifted", delta(after.drifted, before.drifted));
        self.metrics
            .count("UsersRepaired", delta(after.repaired, before.repaired));
        self.metrics.count(
            "UsersMissingInPool",
            delta(after.missing_in_pool, before.missing_in_pool),
        );
        self.metrics.count(
            "PoolUsersNotInDatabase",
            delta(after.not_in_database, before.not_in_database),
        );
    }
}

enum Repair {
    Repaired,
    /// Cognito already says what the row says (a newer change brought it there).
    InLine,
    /// A newer version than the row's was applied: to be checked against the row as it is now.
    Stale {
        applied: Version,
    },
    Vanished,
    Failed,
    OutOfTime,
}

/// What differs between Cognito and the row, attribute by attribute.
fn differences(change: &UserChange, current: &std::collections::HashMap<String, String>) -> Vec<Difference> {
    let plan = plan_writes(change, current);
    let changed = plan
        .updates
        .iter()
        .map(|(name, _)| name.clone())
        .chain(plan.deletions.iter().cloned());
    changed
        .map(|attribute| {
            let database = change
                .attributes
                .iter()
                .find(|(name, _)| *name == attribute)
                .and_then(|(_, desired)| match desired {
                    Desired::Set(value) => Some(value.clone()),
                    Desired::Remove => None,
                });
            Difference {
                cognito: current.get(&attribute).cloned(),
                database,
                attribute,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryPool, MemoryTable};
    use shared::testing::{GuardItem, MemoryOrderingGuard};

    type TestReconciler = Reconciler<Arc<MemoryPool>, Arc<MemoryOrderingGuard>>;

    fn row(email: &str, first: &str, last: &str) -> UserRow {
        UserRow {
            email: email.into(),
            first_name: Some(first.into()),
            last_name: Some(last.into()),
            tenant: Some("acme".into()),
            updated_at: None,
        }
    }

    /// `users` rows, of which the pool has the first `in_line` as the table says and the rest with an old surname;
    /// plus a row whose user is not in the pool.
    fn stand(
        users: usize,
        in_line: usize,
        writes_per_second: f64,
    ) -> (TestReconciler, MemoryTable, Arc<MemoryPool>, Arc<MemoryOrderingGuard>) {
        let (table, pool, guard) = (
            MemoryTable::default(),
            Arc::new(MemoryPool::default()),
            Arc::new(MemoryOrderingGuard::default()),
        );
        for i in 0..users {
            let email = format!("user{i:03}@example.com");
            table.insert(row(&email, "Ada", "Lovelace"));
            let surname = if i < in_line { "Lovelace" } else { "Byron" };
            pool.insert(
                &email,
                &[
                    ("given_name", "Ada"),
                    ("family_name", surname),
                    ("custom:_tenant", "acme"),
                ],
            );
        }
        table.insert(row("zz-not-in-pool@example.com", "Zed", "Zero"));
        let reconciler = Reconciler::new(
            pool.clone(),
            guard.clone(),
            writes_per_second,
            Arc::new(Metrics::new("Test", "cognito-reconcile")),
        )
        .with_page_size(7);
        (reconciler, table, pool, guard)
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(300)
    }

    #[tokio::test(start_paused = true)]
    async fn a_dry_run_reports_drift_and_the_missing_and_writes_nothing() {
        let (reconciler, table, pool, _) = stand(20, 15, 10.0);
        let summary = reconciler
            .run(Request::Start { dry_run: true }, &table, far())
            .await
            .unwrap();
        assert!(summary.complete && summary.continuation.is_none());
        assert_eq!(
            (summary.counts.scanned, summary.counts.in_sync, summary.counts.drifted),
            (21, 15, 5)
        );
        assert_eq!((summary.counts.missing_in_pool, summary.counts.repaired), (1, 0));
        assert_eq!(summary.drifted_users.len(), 5);
        let differences = &summary.drifted_users[0].differences;
        assert_eq!(differences.len(), 1, "only the surname differs: {differences:?}");
        assert_eq!(
            (differences[0].cognito.as_deref(), differences[0].database.as_deref()),
            (Some("Byron"), Some("Lovelace"))
        );
        assert!(
            !summary.drifted_users[0].user.contains("user0"),
            "masked: {}",
            summary.drifted_users[0].user
        );
        assert!(pool.writes().is_empty(), "a dry run wrote: {:?}", pool.writes());
        assert!(
            *table.pages_read.lock().unwrap() >= 3,
            "read page by page, 7 rows a page"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_repair_writes_exactly_the_drifted_users_once_and_a_second_run_writes_nothing() {
        let (reconciler, table, pool, _) = stand(20, 15, 10.0);
        let summary = reconciler
            .run(Request::Start { dry_run: false }, &table, far())
            .await
            .unwrap();
        assert_eq!(
            (summary.counts.drifted, summary.counts.repaired, summary.counts.failed),
            (5, 5, 0)
        );
        let mut written = pool.writes();
        written.sort();
        let expected: Vec<String> = (15..20).map(|i| format!("update user{i:03}@example.com")).collect();
        assert_eq!(written, expected);
        assert_eq!(pool.attributes("user019@example.com")["family_name"], "Lovelace");
        let again = reconciler
            .run(Request::Start { dry_run: false }, &table, far())
            .await
            .unwrap();
        assert_eq!((again.counts.in_sync, again.counts.drifted), (20, 0));
        assert_eq!(pool.writes().len(), 5, "nothing written the second time");
    }

    /// Writes paced at 2 a second, and an invocation with 4 s of work in it: the run stops in time, hands back a
    /// continuation, and the next invocations go on after the last row handled, each user written once.
    #[tokio::test(start_paused = true)]
    async fn a_run_cut_by_its_deadline_goes_on_from_its_continuation_and_writes_nobody_twice() {
        let (reconciler, table, pool, _) = stand(20, 0, 2.0);
        let mut request = Request::Start { dry_run: false };
        let mut invocations = 0;
        let summary = loop {
            invocations += 1;
            let deadline = Instant::now() + STOP_MARGIN + Duration::from_secs(4);
            let summary = reconciler.run(request, &table, deadline).await.unwrap();
            assert!(Instant::now() <= deadline, "answered after the deadline");
            match summary.continuation.clone() {
                Some(continuation) => request = Request::Continue(continuation),
                None => break summary,
            }
            assert!(invocations < 20, "the run never finished");
        };
        assert!(invocations >= 3, "one invocation did it all: {invocations}");
        assert_eq!(
            (
                summary.counts.scanned,
                summary.counts.repaired,
                summary.counts.missing_in_pool
            ),
            (21, 20, 1)
        );
        let written = pool.writes();
        let mut unique = written.clone();
        unique.sort();
        unique.dedup();
        assert_eq!((written.len(), unique.len()), (20, 20), "each user written once");
    }

    /// The event path applied a change newer than the row the run read: the user is in line with the row as it is
    /// now, and the run leaves it, counted as superseded.
    #[tokio::test(start_paused = true)]
    async fn a_user_a_newer_change_brought_in_line_meanwhile_is_left_as_it_is() {
        let (reconciler, table, pool, guard) = stand(1, 0, 10.0);
        let newer = version_of(Utc::now()) + 60_000_000;
        guard.items.lock().unwrap().insert(
            user_key("user000@example.com"),
            GuardItem {
                version: Some(newer),
                ..Default::default()
            },
        );
        // Meanwhile the event path wrote what the row now says.
        pool.insert(
            "user000@example.com",
            &[
                ("given_name", "Ada"),
                ("family_name", "Lovelace"),
                ("custom:_tenant", "acme"),
            ],
        );
        table.insert(UserRow {
            updated_at: Some(newer),
            ..row("user000@example.com", "Ada", "Lovelace")
        });
        // The run's listing is older: it saw the old surname.
        let listed = Arc::new(Pool::from([(
            user_key("user000@example.com"),
            ListedUser {
                username: "user000@example.com".into(),
                enabled: true,
                confirmed: true,
                attributes: [
                    ("email", "user000@example.com"),
                    ("family_name", "Byron"),
                    ("given_name", "Ada"),
                    ("custom:_tenant", "acme"),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            },
        )]));
        *reconciler.listing.lock().unwrap() = Some(("run-1".into(), listed));
        let start = Continuation {
            dry_run: false,
            run_started_at: "run-1".into(),
            after: None,
            counts: Counts::default(),
            drifted_users: Vec::new(),
            missing_users: Vec::new(),
        };
        let summary = reconciler.run(Request::Continue(start), &table, far()).await.unwrap();
        assert_eq!(
            (
                summary.counts.drifted,
                summary.counts.superseded,
                summary.counts.repaired
            ),
            (1, 1, 0)
        );
        assert!(pool.writes().is_empty(), "{:?}", pool.writes());
    }
}
