//! The subscriptions in memory, for the handler tests of the functions that switch them: looked up as the pool looks
//! them up (by address or `sub`), every write recorded, and the pool made unavailable on demand.

use std::sync::Mutex;

use async_trait::async_trait;

use super::{DirectoryError, Subscriber, SubscriberKey, Subscriptions};

/// One pool user.
#[derive(Debug, Clone)]
pub struct MemoryUser {
    pub username: String,
    pub email: String,
    pub sub: String,
    pub subscribed: bool,
}

#[derive(Default)]
pub struct MemorySubscriptions {
    pub users: Mutex<Vec<MemoryUser>>,
    /// Each write, as `unsubscribe <username>` or `resubscribe <username>`.
    pub writes: Mutex<Vec<String>>,
    /// Every call fails as Cognito does after the SDK's retries.
    pub unavailable: Mutex<bool>,
}

impl MemorySubscriptions {
    /// A user whose username is its address and whose `sub` is `sub-<address>`.
    pub fn add(&self, email: &str, subscribed: bool) {
        let user = MemoryUser {
            username: email.to_owned(),
            email: email.to_owned(),
            sub: format!("sub-{email}"),
            subscribed,
        };
        self.users.lock().unwrap().push(user);
    }

    pub fn is_subscribed(&self, username: &str) -> Option<bool> {
        self.users
            .lock()
            .unwrap()
            .iter()
            .find(|u| u.username == username)
            .map(|u| u.subscribed)
    }

    pub fn writes(&self) -> Vec<String> {
        self.writes.lock().unwrap().clone()
    }

    fn available(&self) -> Result<(), DirectoryError> {
        match *self.unavailable.lock().unwrap() {
            true => Err(DirectoryError::Unavailable(
                "TooManyRequestsException after retries".into(),
            )),
            false => Ok(()),
        }
    }

    fn set(&self, username: &str, subscribed: bool) -> Result<(), DirectoryError> {
        self.available()?;
        let mut users = self.users.lock().unwrap();
        let user = users
            .iter_mut()
            .find(|u| u.username == username)
            .ok_or(DirectoryError::UserNotFound)?;
        user.subscribed = subscribed;
        let verb = if subscribed { "resubscribe" } else { "unsubscribe" };
        self.writes.lock().unwrap().push(format!("{verb} {username}"));
        Ok(())
    }
}

#[async_trait]
impl Subscriptions for MemorySubscriptions {
    async fn find(&self, key: SubscriberKey<'_>) -> Result<Option<Subscriber>, DirectoryError> {
        self.available()?;
        let users = self.users.lock().unwrap();
        let found = users.iter().find(|u| match key {
            SubscriberKey::Email(address) => u.email == address,
            SubscriberKey::Sub(sub) => u.sub == sub,
        });
        Ok(found.map(|u| Subscriber {
            username: u.username.clone(),
            subscribed: u.subscribed,
        }))
    }

    async fn unsubscribe(&self, username: &str) -> Result<(), DirectoryError> {
        self.set(username, false)
    }

    async fn resubscribe(&self, username: &str) -> Result<(), DirectoryError> {
        self.set(username, true)
    }
}
