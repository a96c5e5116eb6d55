//! The ports in memory, for the handler tests: a users table read in key order after a key (keyset pagination, as
//! the Postgres adapter reads it), and a pool whose users are listed, read and written, each write recorded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::ports::{DatabaseError, DirectoryError, DirectoryUser, ListedUser, PoolDirectory, UserRow, UserTable};

#[derive(Default)]
pub struct MemoryTable {
    /// Rows by key (the lower-cased address), so a page is a range.
    pub rows: Mutex<BTreeMap<String, UserRow>>,
    /// The pages asked for.
    pub pages_read: Mutex<usize>,
}

impl MemoryTable {
    pub fn insert(&self, row: UserRow) {
        self.rows.lock().unwrap().insert(row.key(), row);
    }
}

#[async_trait]
impl UserTable for MemoryTable {
    async fn page(&self, after: Option<&str>, limit: i64) -> Result<Vec<UserRow>, DatabaseError> {
        *self.pages_read.lock().unwrap() += 1;
        let rows = self.rows.lock().unwrap();
        let after = after.unwrap_or_default();
        Ok(rows
            .iter()
            .filter(|(key, _)| key.as_str() > after)
            .take(limit.max(0) as usize)
            .map(|(_, row)| row.clone())
            .collect())
    }

    async fn row(&self, key: &str) -> Result<Option<UserRow>, DatabaseError> {
        Ok(self.rows.lock().unwrap().get(key).cloned())
    }
}

#[derive(Default)]
pub struct MemoryPool {
    /// Users by username, with their attributes.
    pub users: Mutex<HashMap<String, HashMap<String, String>>>,
    /// Each write, as `update <username>` or `delete <username>`.
    pub writes: Mutex<Vec<String>>,
}

impl MemoryPool {
    /// A user whose username is its address.
    pub fn insert(&self, email: &str, attributes: &[(&str, &str)]) {
        let mut all: HashMap<String, String> = attributes.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        all.insert("email".into(), email.to_owned());
        self.users.lock().unwrap().insert(email.to_owned(), all);
    }

    pub fn attributes(&self, username: &str) -> HashMap<String, String> {
        self.users.lock().unwrap().get(username).cloned().unwrap_or_default()
    }

    pub fn writes(&self) -> Vec<String> {
        self.writes.lock().unwrap().clone()
    }
}

#[async_trait]
impl PoolDirectory for MemoryPool {
    async fn list_users(&self) -> Result<Vec<ListedUser>, DirectoryError> {
        let users = self.users.lock().unwrap();
        let listed = users.iter().map(|(username, attributes)| ListedUser {
            username: username.clone(),
            enabled: true,
            confirmed: true,
            attributes: attributes.clone(),
        });
        Ok(listed.collect())
    }

    async fn get_user(&self, username: &str) -> Result<DirectoryUser, DirectoryError> {
        let users = self.users.lock().unwrap();
        let attributes = users.get(username).cloned().ok_or(DirectoryError::UserNotFound)?;
        Ok(DirectoryUser {
            enabled: true,
            attributes,
        })
    }

    async fn update_attributes(&self, username: &str, attributes: &[(String, String)]) -> Result<(), DirectoryError> {
        let mut users = self.users.lock().unwrap();
        let user = users.get_mut(username).ok_or(DirectoryError::UserNotFound)?;
        user.extend(attributes.iter().cloned());
        self.writes.lock().unwrap().push(format!("update {username}"));
        Ok(())
    }

    async fn delete_attributes(&self, username: &str, names: &[String]) -> Result<(), DirectoryError> {
        let mut users = self.users.lock().unwrap();
        let user = users.get_mut(username).ok_or(DirectoryError::UserNotFound)?;
        names.iter().for_each(|name| {
            user.remove(name);
        });
        self.writes.lock().unwrap().push(format!("delete {username}"));
        Ok(())
    }
}

#[async_trait]
impl<T: PoolDirectory> PoolDirectory for std::sync::Arc<T> {
    async fn list_users(&self) -> Result<Vec<ListedUser>, DirectoryError> {
        (**self).list_users().await
    }
    async fn get_user(&self, username: &str) -> Result<DirectoryUser, DirectoryError> {
        (**self).get_user(username).await
    }
    async fn update_attributes(&self, username: &str, attributes: &[(String, String)]) -> Result<(), DirectoryError> {
        (**self).update_attributes(username, attributes).await
    }
    async fn delete_attributes(&self, username: &str, names: &[String]) -> Result<(), DirectoryError> {
        (**self).delete_attributes(username, names).await
    }
}
