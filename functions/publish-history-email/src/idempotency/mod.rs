//! At most one email per (row, recipient), however often the row is delivered: an idempotency record per send, in
//! the way of the Powertools idempotency utility. [`OnceOnly`] is the protocol: claim the record (`INPROGRESS`,
//! expiring with the invocation so a crashed send is retried), send, then complete it (`COMPLETED`, kept for
//! `IDEMPOTENCY_TTL_SECONDS`, at least as long as any path back to the function) or release it after a failed send.
//! Completions are group-committed: the sends that finish while one completion is being written are written
//! together next, up to [`COMPLETE_BATCH`], so a busy instance makes far fewer than one write per email, and none
//! waits for a batch to fill.
//!
//! Table: partition key `id` (String), TTL attribute `expiration` (epoch seconds), `status`, `in_progress_expiration`
//! (epoch milliseconds) and `outcome`.
//!
//! Adapters: [`dynamodb`] (the table), [`NoIdempotency`] (no table: at least once), and `memory` for the tests.

pub mod dynamodb;
#[cfg(test)]
pub(crate) mod memory;

use std::future::Future;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use tokio::sync::oneshot;

use crate::error::DependencyError;
use crate::ports::SendError;

pub const STATUS_IN_PROGRESS: &str = "INPROGRESS";
pub const STATUS_COMPLETED: &str = "COMPLETED";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Ours to send.
    Acquired,
    /// Sent (or rejected for good) before: skip.
    AlreadyCompleted,
    /// Another invocation is sending it right now, or crashed less than its deadline ago: try again later.
    InProgress,
}

/// The most records one [`IdempotencyStore::complete`] writes: DynamoDB's `BatchWriteItem` takes 25.
pub const COMPLETE_BATCH: usize = 25;

/// The records a completion could not write, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unwritten {
    pub keys: Vec<String>,
    pub error: String,
}

#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    async fn claim(&self, key: &str, in_progress_until: SystemTime) -> Result<Claim, DependencyError>;
    /// Completes the records of `completed` (key, outcome), at most [`COMPLETE_BATCH`] distinct keys, in one write.
    async fn complete(&self, completed: &[(String, String)]) -> Result<(), Unwritten>;
    /// Gives a claim back after a failed send, so the next delivery may send.
    async fn release(&self, key: &str) -> Result<(), DependencyError>;
}

#[async_trait]
impl<T: IdempotencyStore + ?Sized> IdempotencyStore for Box<T> {
    async fn claim(&self, key: &str, in_progress_until: SystemTime) -> Result<Claim, DependencyError> {
        (**self).claim(key, in_progress_until).await
    }
    async fn complete(&self, completed: &[(String, String)]) -> Result<(), Unwritten> {
        (**self).complete(completed).await
    }
    async fn release(&self, key: &str) -> Result<(), DependencyError> {
        (**self).release(key).await
    }
}

/// The default of `IDEMPOTENCY_TTL_SECONDS`: 14 days (the longest an SQS queue, and so the dead-letter queue, keeps a
/// message) plus one day for the redrive itself and the queue's own retries.
pub const DEFAULT_RECORD_TTL: Duration = Duration::from_secs(15 * 24 * 60 * 60);

/// Without `IDEMPOTENCY_TABLE`: every claim is granted (at least once delivery).
pub struct NoIdempotency;

#[async_trait]
impl IdempotencyStore for NoIdempotency {
    async fn claim(&self, _: &str, _: SystemTime) -> Result<Claim, DependencyError> {
        Ok(Claim::Acquired)
    }
    async fn complete(&self, _: &[(String, String)]) -> Result<(), Unwritten> {
        Ok(())
    }
    async fn release(&self, _: &str) -> Result<(), DependencyError> {
        Ok(())
    }
}

/// The key of one notification: the row and a hash of the recipient, so the table never holds an address.
pub fn notification_key(tenant: &str, row_id: &str, recipient: &str) -> String {
    let digest = Sha256::digest(recipient.trim().to_lowercase().as_bytes());
    let hash: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("publish-history-email#{tenant}#{row_id}#{hash}")
}

/// How a guarded send ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Guarded {
    /// This call sent (or was refused for good): the outcome, and whether the record says so. A send whose record
    /// could not be completed may be sent again once the in-progress claim lapses.
    Ran {
        outcome: Result<String, SendError>,
        recorded: bool,
    },
    /// Done before, by this or another invocation: nothing sent.
    AlreadyCompleted,
    /// Another invocation holds the claim (or crashed less than its deadline ago): try again later.
    InProgress,
    /// The store did not answer the claim in time: nothing sent; a claim it wrote lapses with this invocation, so
    /// try again later, as for [`Guarded::InProgress`].
    ClaimUnanswered,
    /// The store could not be asked: nothing sent, try again later.
    StoreUnavailable(DependencyError),
}

/// A completion waiting for the next write, and who waits for it.
struct PendingCompletion {
    key: String,
    outcome: &'static str,
    written: oneshot::Sender<Result<(), String>>,
}

/// The once-only protocol over an [`IdempotencyStore`]: claim, act, then complete or release.
pub struct OnceOnly<I> {
    store: I,
    /// Completions not yet taken by a write.
    pending: std::sync::Mutex<Vec<PendingCompletion>>,
    /// Held by the one task writing a batch of completions.
    writer: tokio::sync::Mutex<()>,
}

impl<I: IdempotencyStore> OnceOnly<I> {
    pub fn new(store: I) -> Self {
        Self {
            store,
            pending: std::sync::Mutex::new(Vec::new()),
            writer: tokio::sync::Mutex::new(()),
        }
    }

    /// Completes `key` with the others pending: whoever holds the writer writes up to [`COMPLETE_BATCH`] of them,
    /// and answers each before it lets go, so a completion is answered by the write that took it or takes it itself.
    async fn complete(&self, key: &str, outcome: &'static str) -> Result<(), String> {
        let (written, mut answer) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(PendingCompletion {
                key: key.to_owned(),
                outcome,
                written,
            });
        loop {
            let _writer = self.writer.lock().await;
            match answer.try_recv() {
                Ok(result) => return result,
                // The task writing it was cancelled mid-write: whether it was written is unknown.
                Err(oneshot::error::TryRecvError::Closed) => {
                    return Err("the write of this completion was cancelled".into())
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let batch: Vec<PendingCompletion> = {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                let mut keys = std::collections::HashSet::new();
                // Distinct keys only (BatchWriteItem refuses a key twice); a repeat waits for the next write.
                let (batch, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut *pending)
                    .into_iter()
                    .partition(|c| keys.len() < COMPLETE_BATCH && keys.insert(c.key.clone()));
                *pending = rest;
                batch
            };
            if batch.is_empty() {
                // Neither pending nor answered: cannot happen, as the write that took it answers before letting go.
                return Err("the completion was lost before its write".into());
            }
            let records: Vec<(String, String)> = batch.iter().map(|c| (c.key.clone(), c.outcome.to_owned())).collect();
            let result = self.store.complete(&records).await;
            for completion in batch {
                let answer = match &result {
                    Err(unwritten) if unwritten.keys.contains(&completion.key) => Err(unwritten.error.clone()),
                    _ => Ok(()),
                };
                let _ = completion.written.send(answer);
            }
        }
    }

    /// Runs `send` unless `key` was completed before or is claimed elsewhere. `in_progress_until` is when this
    /// invocation ends: a claim left by a crash lapses then. A claim not answered by `claim_by` is given up, so a
    /// slow store cannot hold the invocation past its answer. A retryable failure releases the claim, so the next
    /// delivery sends; a success or a permanent rejection completes it.
    pub async fn run<F, Fut>(
        &self,
        key: &str,
        in_progress_until: SystemTime,
        claim_by: tokio::time::Instant,
        send: F,
    ) -> Guarded
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<String, SendError>>,
    {
        match tokio::time::timeout_at(claim_by, self.store.claim(key, in_progress_until)).await {
            Ok(Ok(Claim::Acquired)) => {}
            Ok(Ok(Claim::AlreadyCompleted)) => return Guarded::AlreadyCompleted,
            Ok(Ok(Claim::InProgress)) => return Guarded::InProgress,
            Ok(Err(error)) => return Guarded::StoreUnavailable(error),
            Err(_) => return Guarded::ClaimUnanswered,
        }
        let outcome = send().await;
        let recorded = match &outcome {
            Ok(_) => self.complete(key, "sent").await,
            Err(SendError::Rejected(_)) => self.complete(key, "rejected").await,
            Err(SendError::Retryable(_) | SendError::Refused(_) | SendError::QuotaSpent(_) | SendError::NoTime) => {
                if let Err(error) = self.store.release(key).await {
                    // The claim then lapses with the invocation's deadline and the redelivery sends.
                    tracing::warn!(error = %error, "could not release the idempotency record");
                }
                return Guarded::Ran {
                    outcome,
                    recorded: false,
                };
            }
        };
        if let Err(error) = &recorded {
            // Sent but not recorded: a redelivery after the claim lapses would send again. Nothing better can be
            // done here than to say so (functions/publish-history-email/README.md gives the window).
            tracing::error!(error = %error, "the idempotency record was not completed");
        }
        Guarded::Ran {
            outcome,
            recorded: recorded.is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryStore;
    use super::*;

    fn store() -> std::sync::Arc<MemoryStore> {
        std::sync::Arc::new(MemoryStore {
            ttl: DEFAULT_RECORD_TTL,
            ..Default::default()
        })
    }

    fn soon() -> SystemTime {
        SystemTime::now() + Duration::from_secs(60)
    }

    /// A claim deadline no test store comes near.
    fn later() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_the_store_does_not_answer_in_time_is_given_up_and_nothing_is_sent() {
        let store = store();
        *store.claim_latency.lock().unwrap() = Duration::from_secs(5);
        let once = OnceOnly::new(store.clone());
        let claim_by = tokio::time::Instant::now() + Duration::from_secs(1);
        assert_eq!(
            once.run("k", soon(), claim_by, || async { panic!("sent without a claim") })
                .await,
            Guarded::ClaimUnanswered
        );
        assert_eq!(
            tokio::time::Instant::now(),
            claim_by,
            "given up at its deadline, not when the store answered"
        );
    }

    #[test]
    fn key_names_row_and_hashes_recipient() {
        let key = notification_key("acme", "ph-1", "Ada@Example.com ");
        assert!(key.starts_with("publish-history-email#acme#ph-1#"));
        assert!(!key.to_lowercase().contains("ada"), "{key}");
        assert_eq!(key, notification_key("acme", "ph-1", "ada@example.com"));
        assert_ne!(key, notification_key("acme", "ph-2", "ada@example.com"));
        assert_ne!(key, notification_key("acme", "ph-1", "grace@example.com"));
    }

    #[tokio::test]
    async fn a_completed_send_is_never_sent_again() {
        let once = OnceOnly::new(store());
        let first = once.run("k", soon(), later(), || async { Ok("m-1".to_string()) }).await;
        assert_eq!(
            first,
            Guarded::Ran {
                outcome: Ok("m-1".into()),
                recorded: true
            }
        );
        let again = once.run("k", soon(), later(), || async { panic!("sent twice") }).await;
        assert_eq!(again, Guarded::AlreadyCompleted);
    }

    #[tokio::test]
    async fn a_rejection_is_completed_too_and_a_retryable_failure_is_released() {
        let once = OnceOnly::new(store());
        let rejected = once
            .run("r", soon(), later(), || async {
                Err(SendError::Rejected("blacklisted".into()))
            })
            .await;
        assert!(matches!(rejected, Guarded::Ran { recorded: true, .. }));
        assert_eq!(
            once.run("r", soon(), later(), || async { panic!("retried a rejection") })
                .await,
            Guarded::AlreadyCompleted
        );

        let failed = once
            .run("t", soon(), later(), || async {
                Err(SendError::Retryable("throttled".into()))
            })
            .await;
        assert!(matches!(failed, Guarded::Ran { recorded: false, .. }));
        let retried = once.run("t", soon(), later(), || async { Ok("m-2".to_string()) }).await;
        assert_eq!(
            retried,
            Guarded::Ran {
                outcome: Ok("m-2".into()),
                recorded: true
            },
            "released, so the redelivery sends"
        );
    }

    #[tokio::test]
    async fn a_claim_held_elsewhere_blocks_until_its_invocation_ends() {
        let store = store();
        store
            .records
            .lock()
            .unwrap()
            .insert("k".into(), (STATUS_IN_PROGRESS, soon()));
        let once = OnceOnly::new(store.clone());
        assert_eq!(
            once.run("k", soon(), later(), || async { panic!("sent while claimed") })
                .await,
            Guarded::InProgress
        );
        // The other invocation crashed; its deadline has passed.
        store.records.lock().unwrap().insert(
            "k".into(),
            (STATUS_IN_PROGRESS, SystemTime::now() - Duration::from_secs(1)),
        );
        assert!(matches!(
            once.run("k", soon(), later(), || async { Ok("m".to_string()) }).await,
            Guarded::Ran { recorded: true, .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn completions_finishing_during_a_write_are_written_together_next() {
        let store = std::sync::Arc::new(MemoryStore {
            ttl: DEFAULT_RECORD_TTL,
            latency: Duration::from_millis(20),
            ..Default::default()
        });
        let once = OnceOnly::new(store.clone());
        let keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
        let results = futures::future::join_all(
            keys.iter()
                .map(|key| once.run(key, soon(), later(), || async { Ok("m".to_string()) })),
        )
        .await;
        assert!(
            results.iter().all(|r| matches!(r, Guarded::Ran { recorded: true, .. })),
            "{results:?}"
        );
        let writes = store.writes.lock().unwrap().clone();
        // The first write takes the one completion there is; the 59 that finish meanwhile go in the next writes.
        assert_eq!(writes, vec![1, 25, 25, 9]);
        for key in &keys {
            assert_eq!(
                once.run(key, soon(), later(), || async { panic!("sent twice") }).await,
                Guarded::AlreadyCompleted,
                "{key}"
            );
        }
    }

    #[tokio::test]
    async fn a_record_the_write_left_unwritten_is_reported_unrecorded_and_only_it() {
        struct LeavesOne(std::sync::Arc<MemoryStore>);
        #[async_trait]
        impl IdempotencyStore for LeavesOne {
            async fn claim(&self, key: &str, until: SystemTime) -> Result<Claim, DependencyError> {
                self.0.claim(key, until).await
            }
            async fn complete(&self, completed: &[(String, String)]) -> Result<(), Unwritten> {
                let (left, written): (Vec<_>, Vec<_>) = completed.iter().cloned().partition(|(key, _)| key == "b");
                self.0.complete(&written).await?;
                Err(Unwritten {
                    keys: left.into_iter().map(|(key, _)| key).collect(),
                    error: "throttled".into(),
                })
            }
            async fn release(&self, key: &str) -> Result<(), DependencyError> {
                self.0.release(key).await
            }
        }
        let once = OnceOnly::new(LeavesOne(store()));
        assert!(matches!(
            once.run("a", soon(), later(), || async { Ok("m".to_string()) }).await,
            Guarded::Ran { recorded: true, .. }
        ));
        assert!(matches!(
            once.run("b", soon(), later(), || async { Ok("m".to_string()) }).await,
            Guarded::Ran { recorded: false, .. }
        ));
    }
}
