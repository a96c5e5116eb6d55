//! A bulk import end to end, as Lambda runs it: the stack provisioned from infra/template.yaml on moto, the users
//! events published to the database-event topic, and the built binary in two instances fed by an event source with
//! Lambda's SQS semantics (visibility timeout, receive count, partial batch responses, the redrive policy to the
//! dead-letter queue). Cognito's account quotas are enforced by the recording proxy (25 user updates a second), and
//! a short function timeout makes each event larger than one invocation can apply.

use std::time::{Duration, Instant};

use e2e_harness::event_source::EventSource;
use e2e_harness::fixtures::{create_user, queue_is_drained, user_state, wait_until, SampleUser, SAMPLE_USERS};
use e2e_harness::quotas::Quotas;
use e2e_harness::TemplateStack;
use serde_json::json;

const BINARY: &str = env!("CARGO_BIN_EXE_cognito-attribute-sync");
/// The function's timeout here: an invocation works 2.5 s of it (the answer's and the hand-on's reserves).
const TIMEOUT: Duration = Duration::from_secs(6);
const EVENTS: usize = 3;
const ROWS: usize = 100;

fn email(event: usize, row: usize) -> String {
    format!("import{event}-{row:03}@example.com")
}

struct Local(TemplateStack);

impl std::ops::Deref for Local {
    type Target = TemplateStack;
    fn deref(&self) -> &TemplateStack {
        &self.0
    }
}

async fn local() -> Local {
    Local(TemplateStack::start(Quotas::aws(), Some(TIMEOUT.as_secs() as i32 + 2)).await)
}

impl Local {
    /// An instance of the function as the template configures it, fed by the template's event source.
    fn instance(&self) -> EventSource {
        let function = self.0.instance(std::path::Path::new(BINARY), TIMEOUT, &[]);
        self.stack.event_source(
            &self.sqs,
            &self.stack.function("cognito-attribute-sync").sqs[0],
            function,
        )
    }

    /// The users the import names, in the pool already (as the API creates them) with none of the row's values.
    async fn pool(&self) {
        let mut creating = tokio::task::JoinSet::new();
        for event in 0..EVENTS {
            for row in 0..ROWS {
                let email: &'static str = Box::leak(email(event, row).into_boxed_str());
                let (cognito, pool) = (self.cognito.clone(), self.stack.user_pool_id.clone());
                creating.spawn(async move {
                    let user = SampleUser {
                        email,
                        given_name: "",
                        family_name: "",
                        tenant: "",
                        ..SAMPLE_USERS[0]
                    };
                    create_user(&cognito, &pool, &user).await;
                });
                if creating.len() >= 8 {
                    creating.join_next().await;
                }
            }
        }
        creating.join_all().await;
    }

    /// The import: `EVENTS` records_created events of `ROWS` rows each, as the API publishes them.
    async fn publish_import(&self) {
        for event in 0..EVENTS {
            let rows: Vec<_> = (0..ROWS)
                .map(|row| {
                    json!({"email": email(event, row), "firstName": format!("First{row}"), "lastName": format!("Last{event}"), "_tenant": "initech",
                                  "updatedAt": "2026-12-01T09:00:00.000001Z"})
                })
                .collect();
            let message = json!({"event": "records_created", "table": "users", "records": rows});
            self.stack
                .publish_database_event(&self.sns, message.to_string(), "records_created", "users")
                .await;
        }
    }

    fn calls(&self, operation: &str) -> usize {
        self.proxy.calls_of(operation).len()
    }

    fn throttled(&self) -> usize {
        self.proxy
            .refusals()
            .iter()
            .filter(|(_, refusal)| refusal.code == "TooManyRequestsException")
            .count()
    }

    async fn imported(&self) -> usize {
        let mut right = 0;
        for event in 0..EVENTS {
            for row in 0..ROWS {
                let (_, attributes) = user_state(&self.cognito, &self.stack.user_pool_id, &email(event, row)).await;
                let want = [
                    ("given_name", format!("First{row}")),
                    ("family_name", format!("Last{event}")),
                    ("custom:_tenant", "initech".to_owned()),
                ];
                right += usize::from(want.iter().all(|(name, value)| attributes.get(*name) == Some(value)));
            }
        }
        right
    }

    async fn family_name(&self, username: &str) -> Option<String> {
        user_state(&self.cognito, &self.stack.user_pool_id, username)
            .await
            .1
            .get("family_name")
            .cloned()
    }

    async fn dead_lettered(&self) -> usize {
        e2e_harness::fixtures::peek_all(&self.sqs, &self.stack.queue("CognitoAttributeSyncDeadLetterQueue").url)
            .await
            .len()
    }

    async fn drained(&self) -> bool {
        queue_is_drained(&self.sqs, &self.stack.queue("CognitoAttributeSyncQueue").url).await
    }
}

/// Three events of 100 users each, each more than one invocation can apply at the pace (a 6 s timeout works 2.5 s),
/// through two instances at Cognito's enforced quota: every user ends right, nothing is dead-lettered, no record is
/// handed back, the instances together stay within the quota, the time is close to users ÷ quota, and each user
/// costs one read and one write. A one-user change published behind the import is applied within seconds. The same
/// import delivered again then writes nothing and reads nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: work at scale through the queues; tests/test.sh runs it"]
async fn an_import_larger_than_an_invocation_goes_on_in_the_next_within_the_quota_and_a_change_behind_it_is_not_held_up(
) {
    let local = local().await;
    local.pool().await;
    let sources = [local.instance(), local.instance()];
    let started = Instant::now();
    local.publish_import().await;
    let users = EVENTS * ROWS;

    // Grace is a sample user: her surname changes while the import runs.
    let change = json!({"event": "record_updated", "table": "users", "record": {"email": "grace@example.com", "lastName": "Brewster"}});
    assert!(
        wait_until(Duration::from_secs(30), || async {
            local.calls("AdminUpdateUserAttributes") >= 40
        })
        .await,
        "the import never started"
    );
    local
        .stack
        .publish_database_event(&local.sns, change.to_string(), "record_updated", "users")
        .await;
    let published = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || async {
            local.family_name("grace@example.com").await.as_deref() == Some("Brewster")
        })
        .await
    );
    let change_took = published.elapsed();
    let import_so_far = local.calls("AdminUpdateUserAttributes");
    assert!(
        change_took < Duration::from_secs(8),
        "the change waited {change_took:?} behind the import"
    );
    assert!(import_so_far < users, "the change was applied only after the import");

    assert!(
        wait_until(Duration::from_secs(120), || async {
            local.calls("AdminUpdateUserAttributes") > users && local.drained().await
        })
        .await
    );
    let took = started.elapsed();
    assert_eq!(local.imported().await, users, "every user right");
    assert_eq!(local.dead_lettered().await, 0, "nothing dead-lettered");
    let (reads, writes) = (local.calls("AdminGetUser"), local.calls("AdminUpdateUserAttributes"));
    assert_eq!(writes, users + 1, "one write per user, none twice");
    assert_eq!(
        reads,
        users + 1,
        "one read per user: no row read again for lack of time"
    );
    // Within the quota together: a throttle is the exception (the calls' jitter on the way), and the SDK retries it.
    let throttled = local.throttled();
    assert!(
        throttled * 100 <= reads + writes,
        "{throttled} of {} Cognito calls throttled: over 1 %",
        reads + writes
    );
    let bound = Duration::from_secs_f64(users as f64 / 25.0);
    assert!(took >= bound, "faster than Cognito's quota allows: {took:?}");
    assert!(
        took <= bound * 3,
        "{took:?} for {users} users; the quota allows {bound:?}"
    );
    let mut handed_back = 0;
    let mut invocations = 0;
    for source in &sources {
        handed_back += source.stats().failures;
        invocations += source.stats().batches;
    }
    assert_eq!(handed_back, 0, "no record spent a receive for lack of time");

    // The same import again (a redelivery, or the API publishing twice): stale at the guard, no Cognito call.
    let received = |sources: &[EventSource]| sources.iter().map(|s| s.stats().records).sum::<usize>();
    let before = received(&sources);
    local.publish_import().await;
    assert!(
        wait_until(Duration::from_secs(60), || async {
            received(&sources) >= before + EVENTS && local.drained().await
        })
        .await
    );
    assert_eq!(
        (local.calls("AdminGetUser"), local.calls("AdminUpdateUserAttributes")),
        (reads, writes),
        "the second delivery read or wrote"
    );
    assert_eq!(local.dead_lettered().await, 0);
    for source in sources {
        source.stop().await;
    }
    let ratio = took.as_secs_f64() / bound.as_secs_f64();
    eprintln!("{users} users in {took:?} (bound {bound:?}, ratio {ratio:.2}), {invocations} invocations, the change behind it in {change_took:?}");
}
