//! One SQS record at a time: open the envelope, validate every row, then bring each user to what its row says.

use std::sync::Arc;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use shared::batch::{BatchProcessor, RecordError};
use shared::db_event::EventKind;
use shared::envelope::database_event;
use shared::logging::mask_email;
use shared::metrics::Metrics;

use crate::config::OnUserDeleted;
use crate::directory::{DirectoryError, UserDirectory};
use crate::mapping::{desired_attributes, plan_writes, username, UserChange};

/// The table whose rows are Cognito users; the queue's subscription filter lets only these through, and anything
/// else that arrives is acknowledged and counted.
pub const USERS_TABLE: &str = "users";

/// Records handled at once. Cognito allows 25 AdminUpdateUserAttributes per second per pool and the event source
/// runs several invocations in parallel, so a small number keeps bursts short.
pub const CONCURRENCY: usize = 4;

pub struct AttributeSync<D> {
    directory: D,
    on_user_deleted: OnUserDeleted,
    metrics: Arc<Metrics>,
}

impl<D: UserDirectory> AttributeSync<D> {
    pub fn new(directory: D, on_user_deleted: OnUserDeleted, metrics: Arc<Metrics>) -> Self {
        Self { directory, on_user_deleted, metrics }
    }

    pub async fn handle_batch(&self, processor: &BatchProcessor, event: SqsEvent) -> SqsBatchResponse {
        let outcome = processor.process(event, |record| self.handle_record(record)).await;
        outcome.count_into(&self.metrics);
        outcome.response()
    }

    pub async fn handle_record(&self, record: SqsMessage) -> Result<(), RecordError> {
        let event = database_event(&record).map_err(RecordError::poison)?;
        if event.table != USERS_TABLE {
            tracing::info!(event = %event.label(), "not a users event; acknowledged");
            self.metrics.count("RecordsIgnored", 1);
            return Ok(());
        }
        match event.kind {
            EventKind::RecordsCreated | EventKind::RecordUpdated => {
                // Every row is validated before the first write, so a poison record changes nothing.
                let changes = event.map_rows(desired_attributes).map_err(RecordError::Poison)?;
                for change in changes {
                    self.sync_user(&change).await?;
                }
            }
            EventKind::RecordsDeleted => {
                let usernames = event.map_rows(username).map_err(RecordError::Poison)?;
                for name in usernames {
                    self.remove_user(&name).await?;
                }
            }
            EventKind::Other(ref name) => {
                tracing::info!(event = %name, "event not handled by this function; acknowledged");
                self.metrics.count("RecordsIgnored", 1);
            }
        }
        Ok(())
    }

    async fn sync_user(&self, change: &UserChange) -> Result<(), RecordError> {
        let user = mask_email(&change.username);
        let current = match self.directory.get_user(&change.username).await {
            Ok(current) => current,
            Err(DirectoryError::UserNotFound) => {
                tracing::warn!(user = %user, "user not in the pool; skipped");
                self.metrics.count("UsersNotFound", 1);
                return Ok(());
            }
            Err(e) => return Err(to_record_error(e)),
        };
        let plan = plan_writes(change, &current.attributes);
        if plan.is_empty() {
            tracing::info!(user = %user, "attributes already match; no write");
            self.metrics.count("UsersUnchanged", 1);
            return Ok(());
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
        Ok(())
    }

    /// A user that vanished between read and write was deleted meanwhile: nothing left to sync.
    fn write(&self, result: Result<(), DirectoryError>) -> Result<(), RecordError> {
        match result {
            Ok(()) | Err(DirectoryError::UserNotFound) => Ok(()),
            Err(e) => Err(to_record_error(e)),
        }
    }

    async fn remove_user(&self, username: &str) -> Result<(), RecordError> {
        let user = mask_email(username);
        let result = match self.on_user_deleted {
            OnUserDeleted::Ignore => {
                tracing::info!(user = %user, "row deleted; ON_USER_DELETED=ignore leaves the user");
                self.metrics.count("UsersDeletionIgnored", 1);
                return Ok(());
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
                Ok(())
            }
            Err(DirectoryError::UserNotFound) => {
                tracing::warn!(user = %user, "user of a deleted row not in the pool; skipped");
                self.metrics.count("UsersNotFound", 1);
                Ok(())
            }
            Err(e) => Err(to_record_error(e)),
        }
    }
}

fn to_record_error(error: DirectoryError) -> RecordError {
    match error {
        DirectoryError::Rejected(_) => RecordError::poison(error),
        _ => RecordError::transient(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::DirectoryUser;
    use async_trait::async_trait;
    use serde_json::json;
    use shared::testing::{sns_envelope, sqs_event, sqs_record};
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
        async fn delete_user(&self, username: &str) -> Result<(), DirectoryError> {
            self.check(username)?;
            self.writes.lock().unwrap().push(format!("delete-user {username}"));
            self.users.lock().unwrap().remove(username);
            Ok(())
        }
    }

    fn sync(directory: FakeDirectory, policy: OnUserDeleted) -> AttributeSync<FakeDirectory> {
        AttributeSync::new(directory, policy, Arc::new(Metrics::new("Test", "cognito-attribute-sync")))
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
        sync.handle_record(record).await.unwrap();
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
        sync.handle_record(record).await.unwrap();
        assert!(sync.directory.writes().is_empty());
    }

    #[tokio::test]
    async fn missing_user_is_skipped_not_retried() {
        let sync = sync(FakeDirectory::default(), OnUserDeleted::Disable);
        let record = users_event("records_created", json!([{"email":"ghost@example.com","firstName":"G"}]));
        assert_eq!(sync.handle_record(record).await, Ok(()));
        assert!(sync.directory.writes().is_empty());
    }

    #[tokio::test]
    async fn one_invalid_row_makes_the_record_poison_before_any_write() {
        let directory = FakeDirectory::default().with_user("ada@example.com", &[]);
        let sync = sync(directory, OnUserDeleted::Disable);
        let record = users_event("records_created", json!([{"email":"ada@example.com","firstName":"Ada"},{"email":"b@example.com","lastName":{"x":1}}]));
        let err = sync.handle_record(record).await.unwrap_err();
        assert!(matches!(&err, RecordError::Poison(reason) if reason.contains("row 1") && reason.contains("lastName")), "{err:?}");
        assert!(sync.directory.writes().is_empty());
    }

    #[tokio::test]
    async fn unparseable_body_is_poison() {
        let sync = sync(FakeDirectory::default(), OnUserDeleted::Disable);
        assert!(matches!(sync.handle_record(sqs_record("m", "{not json")).await, Err(RecordError::Poison(_))));
    }

    #[tokio::test]
    async fn other_tables_and_events_are_acknowledged_without_calls() {
        let directory = FakeDirectory { unavailable: vec!["ada@example.com".into()], ..Default::default() };
        let sync = sync(directory, OnUserDeleted::Disable);
        let other_table = json!({"event":"records_created","table":"publish_history","records":[{"email":"ada@example.com"}]}).to_string();
        assert_eq!(sync.handle_record(sqs_record("m", &other_table)).await, Ok(()));
        let other_event = json!({"event":"records_archived","table":"users","records":[{"email":"ada@example.com"}]}).to_string();
        assert_eq!(sync.handle_record(sqs_record("m", &other_event)).await, Ok(()));
        let metrics = sync.metrics.take_document().unwrap();
        assert_eq!(metrics["RecordsIgnored"], 2.0);
    }

    #[tokio::test]
    async fn deleted_row_disables_by_default_and_only_once() {
        let directory = FakeDirectory::default().with_user("ada@example.com", &[]);
        let sync = sync(directory, OnUserDeleted::Disable);
        let deleted = || users_event("records_deleted", json!([{"email":"ada@example.com"}]));
        sync.handle_record(deleted()).await.unwrap();
        sync.handle_record(deleted()).await.unwrap();
        assert_eq!(sync.directory.writes(), vec!["disable ada@example.com".to_string()]);
        assert!(!sync.directory.user("ada@example.com").unwrap().enabled);
    }

    #[tokio::test]
    async fn deleted_row_follows_delete_and_ignore_policies() {
        let sync_delete = sync(FakeDirectory::default().with_user("ada@example.com", &[]), OnUserDeleted::Delete);
        sync_delete.handle_record(users_event("records_deleted", json!([{"email":"ada@example.com"}]))).await.unwrap();
        assert_eq!(sync_delete.directory.writes(), vec!["delete-user ada@example.com".to_string()]);
        assert!(sync_delete.directory.user("ada@example.com").is_none());
        // Redelivered after the delete: the user is gone, which is not an error.
        sync_delete.handle_record(users_event("records_deleted", json!([{"email":"ada@example.com"}]))).await.unwrap();

        let sync_ignore = sync(FakeDirectory::default().with_user("ada@example.com", &[]), OnUserDeleted::Ignore);
        sync_ignore.handle_record(users_event("records_deleted", json!([{"email":"ada@example.com"}]))).await.unwrap();
        assert!(sync_ignore.directory.writes().is_empty());
        assert!(sync_ignore.directory.user("ada@example.com").unwrap().enabled);
    }

    #[tokio::test]
    async fn unavailable_directory_is_transient_and_rejection_is_poison() {
        let directory = FakeDirectory { unavailable: vec!["ada@example.com".into()], ..Default::default() };
        let sync1 = sync(directory, OnUserDeleted::Disable);
        let record = users_event("record_updated", json!([{"email":"ada@example.com","firstName":"Ada"}]));
        assert!(matches!(sync1.handle_record(record.clone()).await, Err(RecordError::Transient(_))));

        let directory = FakeDirectory { rejected_attribute: Some("custom:_tenant".into()), ..Default::default() }.with_user("ada@example.com", &[]);
        let sync2 = sync(directory, OnUserDeleted::Disable);
        let record = users_event("record_updated", json!([{"email":"ada@example.com","_tenant":"acme"}]));
        assert!(matches!(sync2.handle_record(record).await, Err(RecordError::Poison(reason)) if reason.contains("custom:_tenant")));
    }

    #[tokio::test]
    async fn batch_reports_only_the_records_that_can_succeed_later() {
        let directory = FakeDirectory { unavailable: vec!["busy@example.com".into()], ..Default::default() }.with_user("ada@example.com", &[]);
        let sync = sync(directory, OnUserDeleted::Disable);
        let good = json!({"event":"record_updated","table":"users","record":{"email":"ada@example.com","firstName":"Ada"}}).to_string();
        let busy = json!({"event":"record_updated","table":"users","record":{"email":"busy@example.com","firstName":"B"}}).to_string();
        let event = sqs_event(vec![sqs_record("good", &good), sqs_record("busy", &busy), sqs_record("poison", "{oops")]);
        let response = sync.handle_batch(&BatchProcessor::new(CONCURRENCY, None), event).await;
        let mut failed: Vec<_> = response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
        failed.sort();
        // Without a dead-letter queue the poison record is reported too, so the queue's redrive policy moves it.
        assert_eq!(failed, vec!["busy", "poison"]);
        assert_eq!(sync.directory.writes(), vec![r#"update ada@example.com [("given_name", "Ada")]"#.to_string()]);
    }
}
