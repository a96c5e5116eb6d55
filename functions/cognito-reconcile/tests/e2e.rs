//! End to end against a real PostgreSQL (a throwaway server) and the local AWS (moto: the user pool, DynamoDB for
//! the ordering guard): the built binary, through the Lambda Runtime API. The recording proxy counts the writes.

use std::collections::HashMap;
use std::time::Duration;

use e2e_harness::fixtures::{create_table, create_user, user_state, SampleUser, SAMPLE_USERS};
use e2e_harness::runtime::{FunctionProcess, Invocation};
use e2e_harness::users_db::{UserRow, UsersDb};
use e2e_harness::{built_binaries, sqs_event, PoolStack};
use serde_json::{json, Value};

const BINARY: &str = env!("CARGO_BIN_EXE_cognito-reconcile");
const ORDERING_TABLE: &str = "user-attribute-ordering";

/// The table as the truth: Ada's surname changed (Cognito still says Byron), Katherine has names and a tenant
/// Cognito lacks, Donald's surname is longer than Cognito takes, Hedy has no pool user, Linus has no row.
const ROWS: &[UserRow] = &[
    ("ada@example.com", Some("Ada"), Some("Lovelace"), Some("acme")),
    ("grace@example.com", Some("Grace"), Some("Hopper"), Some("acme")),
    ("edsger@example.com", Some("Edsger"), Some("Dijkstra"), Some("acme")),
    ("barbara@example.com", Some("Barbara"), Some("Liskov"), Some("acme")),
    ("margaret@example.com", Some("Margaret"), Some("Hamilton"), Some("acme")),
    ("alan@example.com", Some("Alan"), Some("Turing"), Some("globex")),
    (
        "katherine@example.com",
        Some("Katherine"),
        Some("Johnson"),
        Some("globex"),
    ),
    ("hedy@example.com", Some("Hedy"), Some("Lamarr"), Some("globex")),
];

struct Stack {
    pool: PoolStack,
    db: UsersDb,
}

async fn stack() -> Stack {
    let pool = PoolStack::start("unused-dlq").await;
    create_table(&pool.dynamodb, ORDERING_TABLE, None).await;
    let db = UsersDb::start();
    db.insert(ROWS);
    let long = "K".repeat(3000);
    db.insert(&[("donald@example.com", Some("Donald"), Some(long.as_str()), Some("acme"))]);
    Stack { pool, db }
}

impl Stack {
    fn start(&self, settings: &[(&str, &str)]) -> FunctionProcess {
        let url = self.db.url();
        let mut all = vec![
            ("USER_POOL_ID", self.pool.pool_id.as_str()),
            ("DATABASE_URL", url.as_str()),
            ("ORDERING_TABLE", ORDERING_TABLE),
            ("RECONCILE_MAX_WRITES_PER_SECOND", "25"),
        ];
        all.extend_from_slice(settings);
        self.pool.start_function(BINARY, &all)
    }

    /// Attribute writes through the proxy, by the written user's address.
    async fn writes(&self) -> HashMap<String, usize> {
        let mut writes = HashMap::new();
        for operation in ["AdminUpdateUserAttributes", "AdminDeleteUserAttributes"] {
            for call in self.pool.aws.proxy.calls_of(operation) {
                let body: Value = serde_json::from_str(&call.body).unwrap();
                // The pool has email as an alias: the function writes by username (the user's sub).
                let username = body["Username"].as_str().unwrap();
                let email = self
                    .attributes(username)
                    .await
                    .get("email")
                    .cloned()
                    .unwrap_or_else(|| username.to_owned());
                *writes.entry(email).or_default() += 1;
            }
        }
        writes
    }

    async fn attributes(&self, email: &str) -> HashMap<String, String> {
        user_state(&self.pool.cognito, &self.pool.pool_id, email).await.1
    }
}

fn counts(summary: &Value) -> [u64; 8] {
    [
        "scanned",
        "inSync",
        "drifted",
        "repaired",
        "missingInPool",
        "notInDatabase",
        "failed",
        "superseded",
    ]
    .map(|k| summary[k].as_u64().unwrap_or_else(|| panic!("{k} in {summary}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_reports_drift_and_missing_users_and_writes_nothing() {
    let stack = stack().await;
    let summary = stack.start(&[]).invoke(&json!({"dryRun": true})).response();
    assert_eq!(
        (summary["dryRun"].as_bool(), summary["complete"].as_bool()),
        (Some(true), Some(true)),
        "{summary}"
    );
    // 9 rows: 5 in sync, Ada and Katherine drifted, Donald's too long, Hedy missing; Linus has no row.
    assert_eq!(counts(&summary), [9, 5, 2, 0, 1, 1, 1, 0], "{summary}");
    let drifted: Vec<&str> = summary["driftedUsers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["user"].as_str().unwrap())
        .collect();
    assert_eq!(drifted, vec!["a***@example.com", "k***@example.com"]);
    let ada = &summary["driftedUsers"][0]["differences"];
    assert_eq!(
        ada,
        &json!([{"attribute": "family_name", "cognito": "Byron", "database": "Lovelace"}])
    );
    assert_eq!(summary["missingUsers"], json!(["h***@example.com"]));
    assert!(
        stack.writes().await.is_empty(),
        "a dry run wrote: {:?}",
        stack.writes().await
    );
    assert!(!summary.to_string().contains("ada@example.com"), "addresses are masked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_repair_run_brings_exactly_the_drifted_users_in_line() {
    let stack = stack().await;
    let mut function = stack.start(&[]);
    let summary = function.invoke(&json!({"dryRun": false})).response();
    assert_eq!(counts(&summary), [9, 5, 2, 2, 1, 1, 1, 0], "{summary}");
    let ada = stack.attributes("ada@example.com").await;
    assert_eq!(
        (
            ada["given_name"].as_str(),
            ada["family_name"].as_str(),
            ada["custom:_tenant"].as_str()
        ),
        ("Ada", "Lovelace", "acme")
    );
    let katherine = stack.attributes("katherine@example.com").await;
    assert_eq!(
        (
            katherine["given_name"].as_str(),
            katherine["family_name"].as_str(),
            katherine["custom:_tenant"].as_str()
        ),
        ("Katherine", "Johnson", "globex")
    );
    let writes = stack.writes().await;
    assert_eq!(writes.len(), 2, "only the drifted users were written: {writes:?}");
    assert_eq!((writes["ada@example.com"], writes["katherine@example.com"]), (1, 1));
    assert!(
        stack
            .pool
            .cognito
            .admin_get_user()
            .user_pool_id(&stack.pool.pool_id)
            .username("hedy@example.com")
            .send()
            .await
            .is_err(),
        "missing users are never created"
    );
    assert_eq!(
        stack.attributes("linus@example.com").await["family_name"],
        "Torvalds",
        "pool users with no row are never touched"
    );

    // Nothing is left to repair.
    let again = function.invoke(&json!({"dryRun": true})).response();
    assert_eq!(counts(&again)[2], 0, "{again}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_run_cut_by_its_deadline_continues_where_it_stopped_and_rewrites_nobody() {
    let stack = stack().await;
    // Twelve more drifted users, at one write a second: more than one 12 s invocation (5 s of it kept back) can do.
    let extra: Vec<(String, String)> = (0..12)
        .map(|i| (format!("user{i:02}@example.com"), format!("New{i}")))
        .collect();
    for (email, _) in &extra {
        let email: &'static str = Box::leak(email.clone().into_boxed_str());
        create_user(
            &stack.pool.cognito,
            &stack.pool.pool_id,
            &SampleUser {
                email,
                family_name: "Old",
                ..SAMPLE_USERS[0]
            },
        )
        .await;
    }
    let rows: Vec<UserRow> = extra
        .iter()
        .map(|(email, name)| (email.as_str(), Some("Ada"), Some(name.as_str()), Some("acme")))
        .collect();
    stack.db.insert(&rows);
    let mut function = stack.start(&[("RECONCILE_MAX_WRITES_PER_SECOND", "1")]);
    function.timeout = Duration::from_secs(12);

    let first = function.invoke(&json!({"dryRun": false})).response();
    assert_eq!(first["complete"], false, "{first}");
    let mut summary = first.clone();
    let mut invocations = 1;
    while summary["complete"] == false {
        assert!(invocations < 10, "the run makes no progress: {summary}");
        summary = function.invoke(&summary["continuation"]).response();
        invocations += 1;
    }
    assert!(
        counts(&first)[3] >= 3,
        "the first invocation repaired some users before it stopped: {first}"
    );
    assert_eq!(counts(&summary), [21, 5, 14, 14, 1, 1, 1, 0], "{summary}");
    let writes = stack.writes().await;
    assert!(writes.values().all(|n| *n == 1), "a user was written twice: {writes:?}");
    assert_eq!(writes.len(), 14);
    for (email, name) in &extra {
        assert_eq!(&stack.attributes(email).await["family_name"], name);
    }
}

/// The event path applied "King" under a version newer than the row's `updatedAt`, but the table (the truth) still
/// says Lovelace: the API's clock ran ahead, or its transaction never committed. A newer timestamp alone does not
/// make the change newer: the reconciliation reads the row again, finds it still differs, and repairs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_newer_timestamp_alone_does_not_leave_cognito_behind_its_row() {
    let stack = stack().await;
    stack
        .db
        .sql("UPDATE users SET \"updatedAt\" = now() - interval '1 minute' WHERE email = 'ada@example.com'");
    let mut sync = FunctionProcess::start(
        &built_binaries().join("cognito-attribute-sync"),
        &stack.pool.aws.function_env(&[
            ("USER_POOL_ID", stack.pool.pool_id.as_str()),
            ("ORDERING_TABLE", ORDERING_TABLE),
        ]),
    );
    let message = json!({"event": "record_updated", "table": "users", "occurredAt": chrono::Utc::now().to_rfc3339(), "record": {"email": "ada@example.com", "lastName": "King"}});
    let response = sync
        .invoke(&sqs_event(
            "dev-cognito-attribute-sync",
            &[("m-1", message.to_string())],
        ))
        .response();
    assert_eq!(response["batchItemFailures"], json!([]));
    assert_eq!(stack.attributes("ada@example.com").await["family_name"], "King");

    let summary = stack.start(&[]).invoke(&json!({"dryRun": false})).response();
    // Repaired: Ada and the sample table's one drifted user.
    assert_eq!(
        (summary["superseded"].as_u64(), summary["repaired"].as_u64()),
        (Some(0), Some(2)),
        "{summary}"
    );
    assert_eq!(
        stack.attributes("ada@example.com").await["family_name"],
        "Lovelace",
        "counted as superseded on a timestamp alone"
    );
    // Under the same version: a replay of the event path's change is not newer than the repair.
    let response = sync
        .invoke(&sqs_event(
            "dev-cognito-attribute-sync",
            &[("m-1", message.to_string())],
        ))
        .response();
    assert_eq!(response["batchItemFailures"], json!([]));
    let again = stack.start(&[]).invoke(&json!({"dryRun": false})).response();
    assert_eq!(
        stack.attributes("ada@example.com").await["family_name"],
        "Lovelace",
        "{again}"
    );
}

fn error_of(invocation: Invocation) -> Value {
    match invocation {
        Invocation::Error(error) => error,
        Invocation::Response(response) => panic!("expected an error, got {response}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_wrong_password_or_a_missing_table_is_a_clear_error_and_writes_nothing() {
    let stack = stack().await;
    let wrong = stack
        .db
        .url()
        .replace(e2e_harness::users_db::PASSWORD, "wrong-password");
    let error = error_of(
        stack
            .start(&[("DATABASE_URL", &wrong)])
            .invoke(&json!({"dryRun": false})),
    );
    assert_eq!(error["errorType"], "DatabaseError", "{error}");
    let message = error["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("password authentication failed") && !message.contains("wrong-password"),
        "{message}"
    );

    let error = error_of(
        stack
            .start(&[("USERS_TABLE", "people")])
            .invoke(&json!({"dryRun": false})),
    );
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap()
            .contains("\"people\" does not exist"),
        "{error}"
    );

    stack.db.sql("ALTER TABLE users RENAME COLUMN \"_tenant\" TO tenant");
    let error = error_of(stack.start(&[]).invoke(&json!({"dryRun": false})));
    assert!(
        error["errorMessage"]
            .as_str()
            .unwrap()
            .contains("lacks the column(s) _tenant"),
        "{error}"
    );

    let error = error_of(stack.start(&[]).invoke(&json!({"repair": "please"})));
    assert_eq!(error["errorType"], "MalformedEvent", "{error}");
    assert!(stack.writes().await.is_empty());
}

/// A surname the table no longer has is removed from Cognito (AdminDeleteUserAttributes), not left stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_surname_the_row_no_longer_has_is_removed() {
    let stack = stack().await;
    stack
        .db
        .sql("UPDATE users SET \"lastName\" = NULL WHERE email = 'grace@example.com'");
    let summary = stack.start(&[]).invoke(&json!({"dryRun": false})).response();
    assert_eq!(summary["failed"], 1, "only Donald's, as before: {summary}");
    assert!(
        !stack.attributes("grace@example.com").await.contains_key("family_name"),
        "{summary}"
    );
    assert_eq!(stack.pool.aws.proxy.calls_of("AdminDeleteUserAttributes").len(), 1);
}

/// The template's policy with `cognito-idp:ListUsers` taken out: the run fails naming the denial and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn without_list_users_in_its_policy_the_run_fails_naming_access_denied() {
    let stack = stack().await;
    stack
        .pool
        .aws
        .proxy
        .revoke("cognito-reconcile", "cognito-idp:ListUsers");
    let error = error_of(stack.start(&[]).invoke(&json!({"dryRun": false})));
    let message = error["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("AccessDenied") && message.contains("cognito-idp:ListUsers"),
        "{error}"
    );
    assert!(stack.writes().await.is_empty());
    let denials = stack.pool.aws.proxy.take_denials();
    assert!(
        !denials.is_empty() && denials.iter().all(|d| d.operation == "ListUsers"),
        "{denials:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_tls_connection_works_through_the_sdks_crypto_provider() {
    // RDS-like: the server refuses connections without TLS, so a run that reads the table spoke TLS; and a second
    // rustls provider in the binary would have made it panic at this first connection.
    let pool = PoolStack::start("unused-dlq").await;
    create_table(&pool.dynamodb, ORDERING_TABLE, None).await;
    let db = UsersDb::start_tls_only();
    db.insert(ROWS);
    let stack = Stack { pool, db };
    let required = stack.db.url_with_sslmode("require");
    let summary = stack
        .start(&[("DATABASE_URL", &required)])
        .invoke(&json!({"dryRun": true}))
        .response();
    assert_eq!(
        (summary["complete"].as_bool(), summary["scanned"].as_u64()),
        (Some(true), Some(8)),
        "{summary}"
    );
    let plain = stack.db.url_with_sslmode("disable");
    let error = error_of(
        stack
            .start(&[("DATABASE_URL", &plain)])
            .invoke(&json!({"dryRun": true})),
    );
    assert_eq!(
        error["errorType"], "DatabaseError",
        "without TLS the server refuses: {error}"
    );
}

/// Cognito's user updates are 25 a second for the whole account: a repair run at its configured 25 a second and
/// cognito-attribute-sync writing at the same time go over it together. The throttled writes are retried, and
/// every user ends as the table says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn writes_of_two_functions_beyond_cognitos_25_a_second_are_retried_and_all_land() {
    let stack = stack().await;
    stack
        .pool
        .aws
        .proxy
        .enforce_quotas(Some(e2e_harness::quotas::Quotas::aws()));
    let drifted: Vec<(String, String)> = (0..40)
        .map(|i| (format!("drift{i:02}@example.com"), format!("Row{i}")))
        .collect();
    let changed: Vec<(String, String)> = (0..30)
        .map(|i| (format!("event{i:02}@example.com"), format!("Event{i}")))
        .collect();
    for (email, _) in drifted.iter().chain(&changed) {
        let email: &'static str = Box::leak(email.clone().into_boxed_str());
        create_user(
            &stack.pool.cognito,
            &stack.pool.pool_id,
            &SampleUser {
                email,
                family_name: "Old",
                ..SAMPLE_USERS[0]
            },
        )
        .await;
    }
    let rows: Vec<UserRow> = drifted
        .iter()
        .map(|(email, name)| (email.as_str(), Some("Ada"), Some(name.as_str()), Some("acme")))
        .collect();
    stack.db.insert(&rows);
    let mut reconcile = stack.start(&[]);
    let mut sync = FunctionProcess::start(
        &built_binaries().join("cognito-attribute-sync"),
        &stack.pool.aws.function_env(&[
            ("USER_POOL_ID", stack.pool.pool_id.as_str()),
            ("ORDERING_TABLE", ORDERING_TABLE),
        ]),
    );
    let batches: Vec<Value> = changed
        .chunks(10)
        .map(|chunk| {
            let records: Vec<(String, String)> = chunk
                .iter()
                .map(|(email, name)| {
                    let message = json!({"event": "record_updated", "table": "users", "occurredAt": chrono::Utc::now().to_rfc3339(), "record": {"email": email, "lastName": name}});
                    (format!("m-{email}"), message.to_string())
                })
                .collect();
            let records: Vec<(&str, String)> = records.iter().map(|(id, body)| (id.as_str(), body.clone())).collect();
            sqs_event("dev-cognito-attribute-sync", &records)
        })
        .collect();
    let summary = tokio::task::block_in_place(|| {
        std::thread::scope(|scope| {
            let run = scope.spawn(|| reconcile.invoke(&json!({"dryRun": false})).response());
            for batch in &batches {
                // As SQS redelivers what the function hands back.
                let mut handed_back = 0;
                while !e2e_harness::batch_failures(&sync.invoke(batch).response()).is_empty() {
                    handed_back += 1;
                    assert!(handed_back < 10, "a batch keeps failing");
                }
            }
            run.join().unwrap()
        })
    });
    let throttled = stack
        .pool
        .aws
        .proxy
        .refusals()
        .iter()
        .filter(|(_, r)| r.code == "TooManyRequestsException")
        .count();
    assert!(
        throttled > 0,
        "the two functions never went over 25 a second together: the test proves nothing"
    );
    assert_eq!(
        summary["failed"], 1,
        "only Donald's surname, too long for Cognito: {summary}"
    );
    for (email, name) in drifted.iter().chain(&changed) {
        assert_eq!(&stack.attributes(email).await["family_name"], name, "{email}");
    }
}
