//! The once-only records in memory, for the tests: as the DynamoDB adapter keeps them (an in-progress claim blocks
//! others only until its invocation's deadline, a completed record until it expires), with latencies to set.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::{Claim, IdempotencyStore, Unwritten, COMPLETE_BATCH, STATUS_COMPLETED, STATUS_IN_PROGRESS};
use crate::error::DependencyError;

/// Records as the DynamoDB adapter keeps them: an in-progress claim blocks others only until its invocation's
/// deadline, a completed record until it expires.
#[derive(Default)]
pub struct MemoryStore {
    pub records: Mutex<HashMap<String, (&'static str, SystemTime)>>,
    pub ttl: Duration,
    /// Each completion write's round trip.
    pub latency: Duration,
    /// Each claim's round trip.
    pub claim_latency: Mutex<Duration>,
    /// The records each completion write took.
    pub writes: Mutex<Vec<usize>>,
}

#[async_trait]
impl IdempotencyStore for std::sync::Arc<MemoryStore> {
    async fn claim(&self, key: &str, in_progress_until: SystemTime) -> Result<Claim, DependencyError> {
        let latency = *self.claim_latency.lock().unwrap();
        tokio::time::sleep(latency).await;
        let mut records = self.records.lock().unwrap();
        let now = SystemTime::now();
        match records.get(key) {
            Some((STATUS_COMPLETED, expires)) if *expires > now => Ok(Claim::AlreadyCompleted),
            Some((_, until)) if *until > now => Ok(Claim::InProgress),
            _ => {
                records.insert(key.into(), (STATUS_IN_PROGRESS, in_progress_until));
                Ok(Claim::Acquired)
            }
        }
    }
    async fn complete(&self, completed: &[(String, String)]) -> Result<(), Unwritten> {
        let mut keys: Vec<&str> = completed.iter().map(|(key, _)| key.as_str()).collect();
        keys.sort_unstable();
        keys.dedup();
        assert!(
            keys.len() == completed.len() && keys.len() <= COMPLETE_BATCH,
            "a write DynamoDB refuses: {keys:?}"
        );
        self.writes.lock().unwrap().push(keys.len());
        tokio::time::sleep(self.latency).await;
        let expires = SystemTime::now() + self.ttl.max(Duration::from_secs(1));
        let mut records = self.records.lock().unwrap();
        keys.into_iter().for_each(|key| {
            records.insert(key.into(), (STATUS_COMPLETED, expires));
        });
        Ok(())
    }
    async fn release(&self, key: &str) -> Result<(), DependencyError> {
        let mut records = self.records.lock().unwrap();
        if records
            .get(key)
            .is_some_and(|(status, _)| *status == STATUS_IN_PROGRESS)
        {
            records.remove(key);
        }
        Ok(())
    }
}
