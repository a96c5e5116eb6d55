//! Who gets an email: the pool's users, grouped by tenant, filtered to the eligible subscribers, and cached.
//!
//! Cognito's ListUsers cannot filter on custom attributes (and allows 30 calls per second, 60 users a page), so the
//! whole pool is listed once and the result is kept for `SUBSCRIBER_CACHE_TTL_SECONDS` across warm invocations.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::ports::UserSource;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolUser {
    /// Cognito's immutable id of the user: what the unsubscribe link names instead of the address.
    pub sub: Option<String>,
    pub email: Option<String>,
    pub given_name: Option<String>,
    pub tenant: Option<String>,
    pub subscribed: bool,
    pub enabled: bool,
    pub confirmed: bool,
    pub email_verified: bool,
}

impl PoolUser {
    /// Subscribed, enabled, confirmed (a password set, or a federated sign-in), with a verified email address.
    pub fn is_eligible(&self) -> bool {
        self.subscribed && self.enabled && self.confirmed && self.email_verified && self.email.is_some()
    }
}

/// `custom:subPublishHistory`: `true`, `1` or `yes`, any case.
pub fn is_true_flag(value: &str) -> bool {
    ["true", "1", "yes"].iter().any(|t| t.eq_ignore_ascii_case(value.trim()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub sub: Option<String>,
    pub email: String,
    pub given_name: Option<String>,
}

/// Eligible recipients by tenant.
pub type SubscriberIndex = HashMap<String, Vec<Recipient>>;

pub fn index_subscribers(users: Vec<PoolUser>) -> SubscriberIndex {
    let mut index: SubscriberIndex = HashMap::new();
    for user in users.into_iter().filter(PoolUser::is_eligible) {
        if let (Some(tenant), Some(email)) = (user.tenant, user.email) {
            index.entry(tenant).or_default().push(Recipient { sub: user.sub, email, given_name: user.given_name });
        }
    }
    index
}

pub struct SubscriberCache<S> {
    source: S,
    ttl: Duration,
    cached: tokio::sync::Mutex<Option<(Instant, Arc<SubscriberIndex>)>>,
}

impl<S: UserSource> SubscriberCache<S> {
    pub fn new(source: S, ttl: Duration) -> Self {
        Self { source, ttl, cached: tokio::sync::Mutex::new(None) }
    }

    /// The cached index while fresh, otherwise one new listing. Callers that arrive during a listing wait for it
    /// rather than list again.
    pub async fn index(&self) -> Result<Arc<SubscriberIndex>, String> {
        let mut cached = self.cached.lock().await;
        if let Some((listed_at, index)) = cached.as_ref() {
            if listed_at.elapsed() < self.ttl {
                return Ok(index.clone());
            }
        }
        let users = self.source.list_users().await?;
        let count = users.len();
        let index = Arc::new(index_subscribers(users));
        tracing::info!(users = count, tenants = index.len(), "listed the user pool");
        *cached = Some((Instant::now(), index.clone()));
        Ok(index)
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
    fn flag_values() {
        for yes in ["true", "TRUE", "1", "yes", "Yes "] {
            assert!(is_true_flag(yes), "{yes}");
        }
        for no in ["false", "0", "no", "", "y"] {
            assert!(!is_true_flag(no), "{no}");
        }
    }

    #[test]
    fn only_eligible_users_are_indexed_by_tenant() {
        let users = vec![
            user("a@x.co", "acme"),
            user("b@x.co", "globex"),
            PoolUser { subscribed: false, ..user("c@x.co", "acme") },
            PoolUser { enabled: false, ..user("d@x.co", "acme") },
            PoolUser { confirmed: false, ..user("e@x.co", "acme") },
            PoolUser { email_verified: false, ..user("f@x.co", "acme") },
            PoolUser { tenant: None, ..user("g@x.co", "acme") },
        ];
        let index = index_subscribers(users);
        let emails = |tenant: &str| index[tenant].iter().map(|r| r.email.as_str()).collect::<Vec<_>>();
        assert_eq!(emails("acme"), vec!["a@x.co"]);
        assert_eq!(emails("globex"), vec!["b@x.co"]);
        assert_eq!(index.len(), 2);
    }
}
