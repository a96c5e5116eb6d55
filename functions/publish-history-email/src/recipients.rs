//! Who gets an email: the pool's users, filtered to the eligible subscribers and grouped by tenant, and the cache of
//! a whole listing across warm invocations.
//!
//! Cognito's ListUsers cannot filter on custom attributes (and allows 30 calls per second for the whole account,
//! 60 users a page), so a fan-out lists the whole pool, page by page (see `fanout`). A listing that completes within
//! one invocation is kept for `SUBSCRIBER_CACHE_TTL_SECONDS`, unless it holds more than [`CACHE_MAX_RECIPIENTS`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::ports::{PoolUser, Recipient};

/// The most eligible subscribers a cached listing holds (about 120 bytes each): a larger pool is listed per fan-out.
pub const CACHE_MAX_RECIPIENTS: usize = 50_000;

impl PoolUser {
    /// Subscribed, enabled, confirmed (a password set, or a federated sign-in), with a verified email address.
    pub fn is_eligible(&self) -> bool {
        self.subscribed && self.enabled && self.confirmed && self.email_verified && self.email.is_some()
    }

    /// The user's tenant and recipient, when eligible.
    pub fn into_recipient(self) -> Option<(String, Recipient)> {
        if !self.is_eligible() {
            return None;
        }
        Some((
            self.tenant?,
            Recipient {
                sub: self.sub,
                email: self.email?,
                given_name: self.given_name,
            },
        ))
    }
}

/// Eligible recipients by tenant.
pub type SubscriberIndex = HashMap<String, Vec<Recipient>>;

/// An index being built from a listing that started at the pool's first page; it gives up (and frees what it held)
/// past `max` recipients.
pub struct IndexBuilder {
    index: Option<SubscriberIndex>,
    count: usize,
    max: usize,
}

impl IndexBuilder {
    pub fn new(max: usize) -> Self {
        Self {
            index: Some(SubscriberIndex::new()),
            count: 0,
            max,
        }
    }

    /// One that keeps nothing (a listing resumed part way cannot be a whole index).
    pub fn none() -> Self {
        Self {
            index: None,
            count: 0,
            max: 0,
        }
    }

    pub fn add(&mut self, tenant: &str, recipient: &Recipient) {
        let Some(index) = self.index.as_mut() else { return };
        self.count += 1;
        if self.count > self.max {
            self.index = None;
            return;
        }
        index.entry(tenant.to_owned()).or_default().push(recipient.clone());
    }

    pub fn finish(self) -> Option<SubscriberIndex> {
        self.index
    }
}

pub fn index_subscribers(users: Vec<PoolUser>) -> SubscriberIndex {
    let mut builder = IndexBuilder::new(usize::MAX);
    for (tenant, recipient) in users.into_iter().filter_map(PoolUser::into_recipient) {
        builder.add(&tenant, &recipient);
    }
    builder.finish().unwrap_or_default()
}

/// The last whole listing, while fresh.
pub struct SubscriberCache {
    ttl: Duration,
    cached: std::sync::Mutex<Option<(Instant, Arc<SubscriberIndex>)>>,
}

impl SubscriberCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            cached: std::sync::Mutex::new(None),
        }
    }

    pub fn fresh(&self) -> Option<Arc<SubscriberIndex>> {
        let cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        cached
            .as_ref()
            .filter(|(listed_at, _)| listed_at.elapsed() < self.ttl)
            .map(|(_, index)| index.clone())
    }

    pub fn store(&self, index: SubscriberIndex, listed_at: Instant) -> Arc<SubscriberIndex> {
        let index = Arc::new(index);
        if !self.ttl.is_zero() {
            *self.cached.lock().unwrap_or_else(|e| e.into_inner()) = Some((listed_at, index.clone()));
        }
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(email: &str, tenant: &str) -> PoolUser {
        PoolUser {
            sub: None,
            email: Some(email.into()),
            given_name: None,
            tenant: Some(tenant.into()),
            subscribed: true,
            enabled: true,
            confirmed: true,
            email_verified: true,
        }
    }

    #[test]
    fn only_eligible_users_are_indexed_by_tenant() {
        let users = vec![
            user("a@x.co", "acme"),
            user("b@x.co", "globex"),
            PoolUser {
                subscribed: false,
                ..user("c@x.co", "acme")
            },
            PoolUser {
                enabled: false,
                ..user("d@x.co", "acme")
            },
            PoolUser {
                confirmed: false,
                ..user("e@x.co", "acme")
            },
            PoolUser {
                email_verified: false,
                ..user("f@x.co", "acme")
            },
            PoolUser {
                tenant: None,
                ..user("g@x.co", "acme")
            },
        ];
        let index = index_subscribers(users);
        let emails = |tenant: &str| index[tenant].iter().map(|r| r.email.as_str()).collect::<Vec<_>>();
        assert_eq!(emails("acme"), vec!["a@x.co"]);
        assert_eq!(emails("globex"), vec!["b@x.co"]);
        assert_eq!(index.len(), 2);
    }

    #[test]
    fn an_index_past_its_bound_is_dropped_not_kept() {
        let recipient = Recipient {
            sub: None,
            email: "a@x.co".into(),
            given_name: None,
        };
        let mut builder = IndexBuilder::new(2);
        builder.add("acme", &recipient);
        builder.add("acme", &recipient);
        assert_eq!(builder.index.as_ref().map(|i| i["acme"].len()), Some(2));
        builder.add("acme", &recipient);
        assert_eq!(builder.finish(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_is_fresh_for_its_ttl_and_a_zero_ttl_keeps_nothing() {
        let cache = SubscriberCache::new(Duration::from_secs(300));
        assert!(cache.fresh().is_none());
        cache.store(index_subscribers(vec![user("a@x.co", "acme")]), Instant::now());
        assert!(cache.fresh().is_some());
        tokio::time::advance(Duration::from_secs(301)).await;
        assert!(cache.fresh().is_none());
        let none = SubscriberCache::new(Duration::ZERO);
        none.store(SubscriberIndex::new(), Instant::now());
        assert!(none.fresh().is_none());
    }
}
