//! Builders for test events (the aws_lambda_events types are `#[non_exhaustive]`).

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};

pub fn sqs_record(message_id: &str, body: &str) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = Some(message_id.to_owned());
    record.body = Some(body.to_owned());
    record.event_source_arn = Some("arn:aws:sqs:eu-west-1:123456789012:test-queue".to_owned());
    record
}

pub fn with_string_attribute(mut record: SqsMessage, name: &str, value: &str) -> SqsMessage {
    let mut attribute = SqsMessageAttribute::default();
    attribute.string_value = Some(value.to_owned());
    attribute.data_type = Some("String".to_owned());
    record.message_attributes.insert(name.to_owned(), attribute);
    record
}

pub fn sqs_event(records: Vec<SqsMessage>) -> SqsEvent {
    let mut event = SqsEvent::default();
    event.records = records;
    event
}

/// An SNS notification envelope around `message`, as SNS writes it into an SQS queue without raw delivery.
pub fn sns_envelope(message: &str, event: &str, table: &str) -> String {
    serde_json::json!({
        "Type": "Notification",
        "MessageId": "5f1c7a8e-0000-4000-8000-000000000001",
        "TopicArn": "arn:aws:sns:eu-west-1:123456789012:database-events",
        "Message": message,
        "Timestamp": "2026-11-20T10:00:00.000Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLE",
        "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/cert.pem",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
        "MessageAttributes": {
            "event": {"Type": "String", "Value": event},
            "table": {"Type": "String", "Value": table}
        }
    })
    .to_string()
}

/// Proves that a function's configuration reads exactly the variables it declares (the SAM template test checks the
/// template against the same declaration): `read` is given `values` and must ask for every declared name, no other.
pub fn assert_reads_exactly<C, E: std::fmt::Debug>(
    declared: &[&str],
    values: &[(&str, &str)],
    read: impl FnOnce(&crate::config::Env<std::sync::Arc<crate::config::RecordingSource>>) -> Result<C, E>,
) {
    let source = std::sync::Arc::new(crate::config::RecordingSource::new(values));
    if let Err(error) = read(&crate::config::Env(source.clone())) {
        panic!("the configuration was rejected: {error:?}");
    }
    let mut declared: Vec<String> = declared.iter().map(|v| v.to_string()).collect();
    declared.sort();
    assert_eq!(
        source.asked(),
        declared,
        "the variables read differ from the declared ones"
    );
}

/// The ordering guard in memory, honouring what the DynamoDB adapter honours: a claim is refused for a version older
/// than the one applied (stale) and while another owner's lease has not lapsed (busy); only the owner commits.
#[derive(Default)]
pub struct MemoryOrderingGuard {
    pub items: std::sync::Mutex<std::collections::HashMap<String, GuardItem>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardItem {
    pub version: Option<crate::ordering::Version>,
    pub deleted: bool,
    pub lease: Option<(String, std::time::SystemTime)>,
}

#[async_trait::async_trait]
impl crate::ordering::OrderingGuard for MemoryOrderingGuard {
    async fn claim(
        &self,
        key: &str,
        version: crate::ordering::Version,
        same: crate::ordering::SameVersion,
        until: std::time::SystemTime,
    ) -> Result<crate::ordering::Claim, crate::ordering::GuardError> {
        use crate::ordering::{Claim, Lease, SameVersion};
        let mut items = self.items.lock().unwrap();
        let item = items.entry(key.to_owned()).or_default();
        if let Some(applied) = item
            .version
            .filter(|applied| *applied > version || (*applied == version && same == SameVersion::Skip))
        {
            return Ok(Claim::Stale { applied });
        }
        if item
            .lease
            .as_ref()
            .is_some_and(|(_, lapses)| *lapses > std::time::SystemTime::now())
        {
            return Ok(Claim::Busy);
        }
        let owner = crate::ordering::new_owner();
        item.lease = Some((owner.clone(), until));
        Ok(Claim::Acquired(Lease {
            key: key.to_owned(),
            owner,
            version,
            after_deletion: item.deleted,
        }))
    }

    async fn commit(&self, lease: &crate::ordering::Lease, deleted: bool) -> Result<(), crate::ordering::GuardError> {
        let mut items = self.items.lock().unwrap();
        let item = items.entry(lease.key.clone()).or_default();
        if item.lease.as_ref().map(|(owner, _)| owner) != Some(&lease.owner) {
            return Err(crate::ordering::GuardError::LeaseLost);
        }
        *item = GuardItem {
            version: Some(lease.version),
            deleted,
            lease: None,
        };
        Ok(())
    }

    async fn release(&self, lease: &crate::ordering::Lease) -> Result<(), crate::ordering::GuardError> {
        let mut items = self.items.lock().unwrap();
        if let Some(item) = items
            .get_mut(&lease.key)
            .filter(|item| item.lease.as_ref().map(|(owner, _)| owner) == Some(&lease.owner))
        {
            item.lease = None;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl crate::ordering::OrderingGuard for std::sync::Arc<MemoryOrderingGuard> {
    async fn claim(
        &self,
        key: &str,
        version: crate::ordering::Version,
        same: crate::ordering::SameVersion,
        until: std::time::SystemTime,
    ) -> Result<crate::ordering::Claim, crate::ordering::GuardError> {
        (**self).claim(key, version, same, until).await
    }
    async fn commit(&self, lease: &crate::ordering::Lease, deleted: bool) -> Result<(), crate::ordering::GuardError> {
        (**self).commit(lease, deleted).await
    }
    async fn release(&self, lease: &crate::ordering::Lease) -> Result<(), crate::ordering::GuardError> {
        (**self).release(lease).await
    }
}
