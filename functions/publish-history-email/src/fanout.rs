//! Fan-out through the function's own queue (`FANOUT_QUEUE_URL`): a row's recipients in chunk messages, and the
//! continuation of whatever one invocation could not finish (a chunk's rest, a listing's next page).
//!
//! A task message is a JSON object with a `fanout` field; it is the same function's input, from its fan-out queue's
//! event source. Every hand-on is a new message, so a row never uses up its receives for lack of time; once-only
//! records per (row, recipient) make a duplicated chunk harmless.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shared::pacer::Pacer;
use tokio::time::Instant;

use crate::error::DependencyError;
use crate::notification::PublishHistory;
use crate::ports::{FanoutQueue, Recipient, UserSource};
use crate::recipients::IndexBuilder;

/// Recipients in one chunk message: at the account's rate share, a few seconds to a few minutes of sending.
pub const CHUNK_RECIPIENTS: usize = 500;
/// A chunk's recipients' size in its message: well under SQS's 256 KiB with the row and the envelope.
pub const CHUNK_BYTES: usize = 192 * 1024;
/// The fewest recipients worth a chunk of their own.
pub const MIN_CHUNK_RECIPIENTS: usize = 25;
/// SQS's longest `DelaySeconds`.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fanout", rename_all = "lowercase")]
pub enum Task {
    /// Email `history` to these recipients.
    Chunk {
        history: PublishHistory,
        recipients: Vec<Recipient>,
        /// Hand-ons in a row that sent nothing because sends failed: past the limit, the message fails instead, so the
        /// queue's redrive policy keeps it in the dead-letter queue.
        #[serde(default)]
        stalls: u32,
    },
    /// Go on listing the pool from `from` (`None`: the first page) for these rows.
    Listing {
        histories: Vec<PublishHistory>,
        #[serde(default)]
        from: Option<String>,
        #[serde(default)]
        stalls: u32,
    },
}

impl Task {
    /// `None` when `body` is not a fan-out task (a database event, say); `Some(Err)` for a task that does not parse.
    pub fn parse(body: &str) -> Option<Result<Task, String>> {
        let value: serde_json::Value = serde_json::from_str(body).ok()?;
        value.get("fanout")?;
        Some(serde_json::from_value(value).map_err(|e| format!("a fan-out task that does not parse: {e}")))
    }
}

/// A recipient's share of a chunk message, in bytes (its JSON, with room for quoting).
fn recipient_bytes(recipient: &Recipient) -> usize {
    24 + recipient.email.len()
        + recipient.sub.as_deref().map_or(0, str::len)
        + recipient.given_name.as_deref().map_or(0, |n| n.len() * 2)
}

/// Splits recipients into chunks of at most [`CHUNK_RECIPIENTS`] and [`CHUNK_BYTES`], and into at least `parts`
/// (the instances that can take them at once) while each keeps [`MIN_CHUNK_RECIPIENTS`].
pub fn split(recipients: Vec<Recipient>, parts: usize) -> Vec<Vec<Recipient>> {
    let per_chunk = recipients
        .len()
        .div_ceil(parts.max(1))
        .clamp(MIN_CHUNK_RECIPIENTS, CHUNK_RECIPIENTS);
    let mut chunks = Vec::new();
    let (mut chunk, mut bytes) = (Vec::new(), 0);
    for recipient in recipients {
        let size = recipient_bytes(&recipient);
        if !chunk.is_empty() && (chunk.len() >= per_chunk || bytes + size > CHUNK_BYTES) {
            chunks.push(std::mem::take(&mut chunk));
            bytes = 0;
        }
        bytes += size;
        chunk.push(recipient);
    }
    if !chunk.is_empty() {
        chunks.push(chunk);
    }
    chunks
}

/// Hands tasks on to the fan-out queue.
pub struct Fanout<Q> {
    queue: Q,
    /// The instances that take chunks at once (`MAXIMUM_CONCURRENCY`): a row is split into at least as many.
    parts: usize,
}

impl<Q: FanoutQueue> Fanout<Q> {
    pub fn new(queue: Q, parts: usize) -> Self {
        Self { queue, parts }
    }

    /// Queues `recipients` of `history` as chunk messages, at least one for each instance, visible after `delay`;
    /// returns how many.
    pub async fn chunks(
        &self,
        history: &PublishHistory,
        recipients: Vec<Recipient>,
        delay: Duration,
        stalls: u32,
    ) -> Result<usize, String> {
        self.queue_chunks(history, split(recipients, self.parts), delay, stalls)
            .await
    }

    /// Queues a full chunk a listing found as one message (split only past [`CHUNK_BYTES`]): the listing's next
    /// chunks are for the other instances. Split for each of them, every chunk would be half as long, and each
    /// chunk's invocation costs its poll and its tail; returns how many.
    pub async fn full_chunk(&self, history: &PublishHistory, recipients: Vec<Recipient>) -> Result<usize, String> {
        self.queue_chunks(history, split(recipients, 1), Duration::ZERO, 0)
            .await
    }

    async fn queue_chunks(
        &self,
        history: &PublishHistory,
        chunks: Vec<Vec<Recipient>>,
        delay: Duration,
        stalls: u32,
    ) -> Result<usize, String> {
        let count = chunks.len();
        for recipients in chunks {
            self.hand_on(
                &Task::Chunk {
                    history: history.clone(),
                    recipients,
                    stalls,
                },
                delay,
            )
            .await?;
        }
        Ok(count)
    }

    pub async fn hand_on(&self, task: &Task, delay: Duration) -> Result<(), String> {
        let body = serde_json::to_string(task).map_err(|e| e.to_string())?;
        self.queue
            .hand_on(body, delay.min(MAX_DELAY))
            .await
            .map_err(|e| format!("handing work on to the fan-out queue failed: {e}"))
    }
}

/// How far a listing got in one invocation.
#[derive(Debug, Default)]
pub struct Listed {
    /// Per row: the recipients found and not yet handed on as chunks (fewer than a chunk).
    pub found: Vec<(PublishHistory, Vec<Recipient>)>,
    /// Per row: how many chunks were handed on while listing.
    pub chunks: Vec<usize>,
    /// Where the listing goes on (`None`: from the first page).
    pub next: Option<String>,
    /// It reached the last page.
    pub finished: bool,
    /// Why it stopped early, when a page failed (after the SDK's retries).
    pub error: Option<DependencyError>,
    pub pages: usize,
}

/// Lists the pool from `from` for `histories` until the last page or `until`, whichever comes first: each row's
/// eligible recipients are gathered and, a full chunk at a time, handed on. `index` sees every eligible user.
/// Pages are paced by `pacer` (the instance's share of the account's ListUsers rate).
pub async fn list_for<S: UserSource, Q: FanoutQueue>(
    source: &S,
    pacer: &Pacer,
    fanout: &Fanout<Q>,
    histories: &[PublishHistory],
    from: Option<String>,
    until: Instant,
    index: &mut IndexBuilder,
) -> Result<Listed, String> {
    let mut rows_of: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, history) in histories.iter().enumerate() {
        rows_of.entry(history.tenant.as_str()).or_default().push(i);
    }
    let mut listed = Listed {
        found: histories.iter().map(|h| (h.clone(), Vec::new())).collect(),
        chunks: vec![0; histories.len()],
        next: from,
        finished: false,
        error: None,
        pages: 0,
    };
    loop {
        if pacer.acquire(until).await.is_err() {
            return Ok(listed);
        }
        let page = match source.list_page(listed.next.as_deref()).await {
            Ok(page) => page,
            Err(error) => {
                listed.error = Some(error);
                return Ok(listed);
            }
        };
        listed.pages += 1;
        for (tenant, recipient) in page
            .users
            .into_iter()
            .filter_map(crate::ports::PoolUser::into_recipient)
        {
            index.add(&tenant, &recipient);
            for &row in rows_of.get(tenant.as_str()).into_iter().flatten() {
                let (history, found) = &mut listed.found[row];
                found.push(recipient.clone());
                if found.len() >= CHUNK_RECIPIENTS {
                    let full = std::mem::take(found);
                    listed.chunks[row] += fanout.full_chunk(history, full).await?;
                }
            }
        }
        listed.next = page.next;
        if listed.next.is_none() {
            listed.finished = true;
            return Ok(listed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipient(i: usize) -> Recipient {
        Recipient {
            sub: Some(format!("sub-{i}")),
            email: format!("user{i}@example.com"),
            given_name: Some("Ada".into()),
        }
    }

    fn history() -> PublishHistory {
        PublishHistory {
            id: "ph-1".into(),
            tenant: "acme".into(),
            title: "T".into(),
            published_by: None,
            created_at: None,
        }
    }

    #[test]
    fn chunks_are_bounded_by_count_and_by_bytes_and_keep_every_recipient_once() {
        let sizes = |recipients: usize, parts: usize| {
            split((0..recipients).map(recipient).collect(), parts)
                .iter()
                .map(Vec::len)
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(1_201, 2), vec![500, 500, 201]);
        assert_eq!(
            sizes(400, 2),
            vec![200, 200],
            "one chunk for each instance that can take one"
        );
        assert_eq!(sizes(60, 4), vec![25, 25, 10], "but none smaller than worth it");
        assert_eq!(sizes(10, 2), vec![10]);
        let long_name = Recipient {
            given_name: Some("n".repeat(2048)),
            ..recipient(0)
        };
        let chunks = split(vec![long_name; 200], 1);
        assert!(
            chunks.len() > 1
                && chunks
                    .iter()
                    .all(|c| c.iter().map(recipient_bytes).sum::<usize>() <= CHUNK_BYTES)
        );
        assert_eq!(chunks.iter().map(Vec::len).sum::<usize>(), 200);
        assert!(split(Vec::new(), 2).is_empty());
    }

    #[test]
    fn a_full_chunk_message_fits_sqs() {
        let worst = Recipient {
            sub: Some("s".repeat(36)),
            email: format!("{}@example.com", "a".repeat(240)),
            given_name: Some("\u{e9}".repeat(1024)),
        };
        for chunk in split(vec![worst; 600], 1) {
            let body = serde_json::to_string(&Task::Chunk {
                history: history(),
                recipients: chunk,
                stalls: 0,
            })
            .unwrap();
            assert!(body.len() < 256 * 1024 - 8 * 1024, "{} bytes", body.len());
        }
    }

    #[test]
    fn tasks_round_trip_and_other_bodies_are_not_tasks() {
        let task = Task::Chunk {
            history: history(),
            recipients: vec![recipient(1)],
            stalls: 2,
        };
        let body = serde_json::to_string(&task).unwrap();
        assert!(
            body.contains(r#""fanout":"chunk""#) && body.contains(r#""e":"user1@example.com""#),
            "{body}"
        );
        assert_eq!(Task::parse(&body), Some(Ok(task)));
        let listing = Task::Listing {
            histories: vec![history()],
            from: Some("token".into()),
            stalls: 0,
        };
        assert_eq!(
            Task::parse(&serde_json::to_string(&listing).unwrap()),
            Some(Ok(listing))
        );
        assert_eq!(Task::parse(r#"{"Type":"Notification","Message":"{}"}"#), None);
        assert_eq!(Task::parse("not json"), None);
        assert!(matches!(Task::parse(r#"{"fanout":"chunk"}"#), Some(Err(_))));
    }
}
