//! The ports of the handler: the users table (Postgres, the source of truth) and the user pool (Cognito).

pub use crate::error::{DatabaseError, DirectoryError};
use async_trait::async_trait;
use serde_json::Value;
use shared::db_event::Row;
pub use shared::directory::{DirectoryUser, ListedUser};
use shared::ordering::Version;

/// A row of the users table, with the columns of the database-event contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub tenant: Option<String>,
    /// `updatedAt`, when the table has it.
    pub updated_at: Option<Version>,
}

impl UserRow {
    /// The row's place in the table's order and its pool user's key: the lower-cased address.
    pub fn key(&self) -> String {
        user_key(&self.email)
    }

    /// The row as the database-event contract writes it. Every column is present: the table is the whole truth, so a
    /// NULL removes the attribute, exactly as a `null` in an event does.
    pub fn as_contract_row(&self) -> Row {
        let text = |v: &Option<String>| v.clone().map(Value::String).unwrap_or(Value::Null);
        let mut row = Row::new();
        row.insert("email".into(), Value::String(self.email.clone()));
        row.insert("firstName".into(), text(&self.first_name));
        row.insert("lastName".into(), text(&self.last_name));
        row.insert("_tenant".into(), text(&self.tenant));
        row
    }
}

/// How rows and pool users are matched: by address, whatever its case.
pub fn user_key(email: &str) -> String {
    email.trim().to_lowercase()
}

#[async_trait]
pub trait UserTable: Send + Sync {
    /// Up to `limit` rows whose key comes after `after`, in key order (keyset pagination: never the whole table).
    async fn page(&self, after: Option<&str>, limit: i64) -> Result<Vec<UserRow>, DatabaseError>;
    /// The row of `key` (a lower-cased address) as it is now, if any.
    async fn row(&self, key: &str) -> Result<Option<UserRow>, DatabaseError>;
}

#[async_trait]
pub trait PoolDirectory: Send + Sync {
    /// Every user of the pool (paced under ListUsers' quota).
    async fn list_users(&self) -> Result<Vec<ListedUser>, DirectoryError>;
    async fn get_user(&self, username: &str) -> Result<DirectoryUser, DirectoryError>;
    async fn update_attributes(&self, username: &str, attributes: &[(String, String)]) -> Result<(), DirectoryError>;
    async fn delete_attributes(&self, username: &str, names: &[String]) -> Result<(), DirectoryError>;
}
