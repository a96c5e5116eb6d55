//! The local stack's data: a user pool shaped like production (custom attributes `_tenant` and
//! `subPublishHistory`), sample users of two tenants, and queues. Shared by the end-to-end tests and the local run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use aws_sdk_cognitoidentityprovider::types::{
    AttributeDataType, AttributeType, SchemaAttributeType, StringAttributeConstraintsType,
};

/// A sample user of the pool.
pub struct SampleUser {
    pub email: &'static str,
    pub given_name: &'static str,
    pub family_name: &'static str,
    /// `custom:_tenant`; empty for none.
    pub tenant: &'static str,
    /// `custom:subPublishHistory` as stored (the function accepts true, 1 or yes in any case).
    pub subscription: &'static str,
    pub enabled: bool,
    /// CONFIRMED (a permanent password set); otherwise FORCE_CHANGE_PASSWORD, as after an admin invitation.
    pub confirmed: bool,
    pub email_verified: bool,
}

const fn user(
    email: &'static str,
    given_name: &'static str,
    family_name: &'static str,
    tenant: &'static str,
    subscription: &'static str,
) -> SampleUser {
    SampleUser {
        email,
        given_name,
        family_name,
        tenant,
        subscription,
        enabled: true,
        confirmed: true,
        email_verified: true,
    }
}

/// Two tenants, mixed subscriptions and account states. The sample events in events/ name these users.
pub const SAMPLE_USERS: &[SampleUser] = &[
    user("ada@example.com", "Ada", "Byron", "acme", "true"),
    user("grace@example.com", "Grace", "Hopper", "acme", "1"),
    user("edsger@example.com", "Edsger", "Dijkstra", "acme", "false"),
    SampleUser {
        enabled: false,
        ..user("barbara@example.com", "Barbara", "Liskov", "acme", "true")
    },
    SampleUser {
        email_verified: false,
        ..user("donald@example.com", "Donald", "Knuth", "acme", "true")
    },
    SampleUser {
        confirmed: false,
        ..user("margaret@example.com", "Margaret", "Hamilton", "acme", "true")
    },
    user("alan@example.com", "Alan", "Turing", "globex", "true"),
    user("linus@example.com", "Linus", "Torvalds", "globex", "YES"),
    user("katherine@example.com", "", "", "", "false"),
];

/// Who must get a publish-history email for a row of `tenant`: subscribed, enabled, confirmed, verified.
pub fn eligible_subscribers(tenant: &str) -> Vec<&'static str> {
    let mut emails: Vec<&'static str> = SAMPLE_USERS
        .iter()
        .filter(|u| u.tenant == tenant && ["true", "1", "yes"].contains(&u.subscription.to_lowercase().as_str()))
        .filter(|u| u.enabled && u.confirmed && u.email_verified)
        .map(|u| u.email)
        .collect();
    emails.sort();
    emails
}

fn custom_string(name: &str) -> SchemaAttributeType {
    SchemaAttributeType::builder()
        .name(name)
        .attribute_data_type(AttributeDataType::String)
        .mutable(true)
        .string_attribute_constraints(
            StringAttributeConstraintsType::builder()
                .min_length("0")
                .max_length("2048")
                .build(),
        )
        .build()
}

fn attribute(name: &str, value: &str) -> AttributeType {
    AttributeType::builder()
        .name(name)
        .value(value)
        .build()
        .expect("name is set")
}

/// Creates the user pool (email as username) and returns its id.
pub async fn create_user_pool(cognito: &aws_sdk_cognitoidentityprovider::Client, name: &str) -> String {
    let pool = cognito
        .create_user_pool()
        .pool_name(name)
        .username_attributes(aws_sdk_cognitoidentityprovider::types::UsernameAttributeType::Email)
        .schema(custom_string("_tenant"))
        .schema(custom_string("subPublishHistory"))
        .send()
        .await
        .expect("create user pool");
    pool.user_pool().and_then(|p| p.id()).expect("pool id").to_owned()
}

/// Creates one user with its attributes (empty values are left out), email verified, no invitation sent.
pub async fn create_user(cognito: &aws_sdk_cognitoidentityprovider::Client, pool_id: &str, user: &SampleUser) {
    let mut request = cognito
        .admin_create_user()
        .user_pool_id(pool_id)
        .username(user.email)
        .message_action(aws_sdk_cognitoidentityprovider::types::MessageActionType::Suppress)
        .user_attributes(attribute("email", user.email))
        .user_attributes(attribute(
            "email_verified",
            if user.email_verified { "true" } else { "false" },
        ))
        .user_attributes(attribute("custom:subPublishHistory", user.subscription));
    for (name, value) in [
        ("given_name", user.given_name),
        ("family_name", user.family_name),
        ("custom:_tenant", user.tenant),
    ] {
        if !value.is_empty() {
            request = request.user_attributes(attribute(name, value));
        }
    }
    request.send().await.expect("create user");
    if user.confirmed {
        cognito
            .admin_set_user_password()
            .user_pool_id(pool_id)
            .username(user.email)
            .password("Local-Passw0rd!")
            .permanent(true)
            .send()
            .await
            .expect("confirm user");
    }
    if !user.enabled {
        cognito
            .admin_disable_user()
            .user_pool_id(pool_id)
            .username(user.email)
            .send()
            .await
            .expect("disable user");
    }
}

pub async fn create_sample_users(cognito: &aws_sdk_cognitoidentityprovider::Client, pool_id: &str) {
    for user in SAMPLE_USERS {
        create_user(cognito, pool_id, user).await;
    }
}

/// A user's attributes and enabled flag, as Cognito holds them.
pub async fn user_state(
    cognito: &aws_sdk_cognitoidentityprovider::Client,
    pool_id: &str,
    username: &str,
) -> (bool, HashMap<String, String>) {
    let user = cognito
        .admin_get_user()
        .user_pool_id(pool_id)
        .username(username)
        .send()
        .await
        .expect("get user");
    let attributes = user
        .user_attributes()
        .iter()
        .map(|a| (a.name().to_owned(), a.value().unwrap_or_default().to_owned()))
        .collect();
    (user.enabled(), attributes)
}

pub async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .expect("create queue")
        .queue_url()
        .expect("queue url")
        .to_owned()
}

/// Every message in a queue, received and left in it (visibility timeout 0).
pub async fn peek_all(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let output = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .visibility_timeout(0)
        .message_attribute_names("All")
        .send()
        .await
        .expect("receive messages");
    output.messages().to_vec()
}

/// A sample event from events/.
pub fn sample_event(path: &str) -> serde_json::Value {
    let full = crate::workspace_root().join("events").join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", full.display()))
}

/// The SES sender the functions use locally, verified as in production.
pub const SENDER_ADDRESS: &str = "Navlab <no-reply@navlab.online>";

pub async fn verify_sender(ses: &aws_sdk_ses::Client) {
    ses.verify_email_identity()
        .email_address("no-reply@navlab.online")
        .send()
        .await
        .expect("verify sender");
}

/// The idempotency table as the SAM template declares it: partition key `id`, TTL on `expiration`.
/// A table keyed by `id` (String), as the template's tables are; `ttl_attribute` names its TTL attribute, if any.
pub async fn create_table(dynamodb: &aws_sdk_dynamodb::Client, name: &str, ttl_attribute: Option<&str>) {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TimeToLiveSpecification,
    };
    dynamodb
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("create table");
    if let Some(attribute) = ttl_attribute {
        dynamodb
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(attribute)
                    .enabled(true)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("enable TTL");
    }
}

/// The idempotency table of publish-history-email (TTL attribute `expiration`).
pub async fn create_idempotency_table(dynamodb: &aws_sdk_dynamodb::Client, name: &str) {
    create_table(dynamodb, name, Some("expiration")).await;
}

/// Every item of a table.
pub async fn scan_all(
    dynamodb: &aws_sdk_dynamodb::Client,
    name: &str,
) -> Vec<HashMap<String, aws_sdk_dynamodb::types::AttributeValue>> {
    dynamodb
        .scan()
        .table_name(name)
        .send()
        .await
        .expect("scan")
        .items()
        .to_vec()
}

/// The worker fleet's group name in the sample events.
pub const WORKER_GROUP: &str = "workers";
/// The restriction parameter, and its initial value as the SAM template creates it.
pub const RESTRICTION_PARAMETER: &str = "/bg-removal/restriction";
pub const INITIAL_RESTRICTION: &str = r#"{"restricted":false,"reason":"initial value"}"#;

/// An Auto Scaling group of `desired` instances (moto starts them InService at once).
pub async fn create_worker_group(autoscaling: &aws_sdk_autoscaling::Client, name: &str, desired: i32) {
    let configuration = format!("{name}-launch-configuration");
    autoscaling
        .create_launch_configuration()
        .launch_configuration_name(&configuration)
        // moto's stock AMI.
        .image_id("ami-12c6146b")
        .instance_type("c6g.xlarge")
        .send()
        .await
        .expect("create launch configuration");
    autoscaling
        .create_auto_scaling_group()
        .auto_scaling_group_name(name)
        .launch_configuration_name(&configuration)
        .min_size(1)
        .max_size(6)
        .desired_capacity(desired)
        .availability_zones("eu-west-1a")
        .send()
        .await
        .expect("create Auto Scaling group");
}

/// The ids of a group's instances.
pub async fn group_instances(autoscaling: &aws_sdk_autoscaling::Client, name: &str) -> Vec<String> {
    let output = autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names(name)
        .send()
        .await
        .expect("describe group");
    output
        .auto_scaling_groups()
        .first()
        .map(|g| {
            g.instances()
                .iter()
                .filter_map(|i| i.instance_id().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub async fn put_parameter(ssm: &aws_sdk_ssm::Client, name: &str, value: &str) {
    ssm.put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .expect("put parameter");
}

/// An SSM `SecureString`, as an operator creates a secret the functions read at init.
pub async fn put_secret(ssm: &aws_sdk_ssm::Client, name: &str, value: &str) {
    ssm.put_parameter()
        .name(name)
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .overwrite(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("put the secret {name}: {e}"));
}

pub async fn get_parameter(ssm: &aws_sdk_ssm::Client, name: &str) -> serde_json::Value {
    let output = ssm.get_parameter().name(name).send().await.expect("get parameter");
    let value = output.parameter().and_then(|p| p.value()).unwrap_or_default();
    serde_json::from_str(value).unwrap_or_else(|_| serde_json::Value::String(value.to_owned()))
}

/// The worker fleet's launch hook, as in production: held in Pending:Wait, CONTINUE by default, 450 s heartbeat.
pub const LAUNCH_HOOK: &str = "workers-launching";

pub async fn create_launch_hook(autoscaling: &aws_sdk_autoscaling::Client, group: &str) {
    autoscaling
        .put_lifecycle_hook()
        .auto_scaling_group_name(group)
        .lifecycle_hook_name(LAUNCH_HOOK)
        .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
        .heartbeat_timeout(450)
        .default_result("CONTINUE")
        .send()
        .await
        .expect("put lifecycle hook");
}

/// A sample lifecycle event, its time set to `now` (the health check deadline counts from it).
pub fn fresh_lifecycle_event(path: &str) -> serde_json::Value {
    lifecycle_event_at(path, chrono::Utc::now())
}

/// A sample lifecycle event that happened at `time`: a late one is a redelivery or a retry.
pub fn lifecycle_event_at(path: &str, time: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    let mut event = sample_event(path);
    let now = time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    if event.get("time").is_some() {
        event["time"] = serde_json::Value::String(now);
    } else if let Some(records) = event["Records"].as_array_mut() {
        for record in records {
            for pointer in ["/Sns/Message", "/body"] {
                if let Some(text) = record.pointer(pointer).and_then(|m| m.as_str()) {
                    let mut message: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
                    if message.get("Time").is_some() {
                        message["Time"] = serde_json::Value::String(now.clone());
                    }
                    *record.pointer_mut(pointer).unwrap() = serde_json::Value::String(message.to_string());
                }
            }
        }
    }
    event
}

/// Whether `queue` holds no message, visible or in flight.
pub async fn queue_is_drained(sqs: &aws_sdk_sqs::Client, queue: &str) -> bool {
    use aws_sdk_sqs::types::QueueAttributeName::{
        ApproximateNumberOfMessages, ApproximateNumberOfMessagesDelayed, ApproximateNumberOfMessagesNotVisible,
    };
    let Ok(output) = sqs
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(ApproximateNumberOfMessages)
        .attribute_names(ApproximateNumberOfMessagesNotVisible)
        .attribute_names(ApproximateNumberOfMessagesDelayed)
        .send()
        .await
    else {
        return false;
    };
    let attributes = output.attributes().cloned().unwrap_or_default();
    [
        ApproximateNumberOfMessages,
        ApproximateNumberOfMessagesNotVisible,
        ApproximateNumberOfMessagesDelayed,
    ]
    .iter()
    .all(|name| attributes.get(name).map(String::as_str) == Some("0"))
}

/// Checks `condition` until it holds or `limit` passes; whether it held.
pub async fn wait_until<F, Fut>(limit: Duration, condition: F) -> bool
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if condition().await {
            return true;
        }
        if started.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The users table as the application keeps it: the sample users, Grace married (the event for it was lost, so
/// Cognito still says Hopper), and Hedy, who has no Cognito user.
pub fn users_table_rows() -> Vec<crate::users_db::OwnedUserRow> {
    SAMPLE_USERS
        .iter()
        .map(|u| {
            let text = |v: &str| (!v.is_empty()).then(|| v.to_owned());
            let (first, last, tenant) = match u.email {
                // As the sample events make them.
                "ada@example.com" => (text("Ada"), text("Lovelace"), text("acme")),
                "katherine@example.com" => (text("Katherine"), text("Johnson"), text("globex")),
                "grace@example.com" => (text("Grace"), text("Murray"), text("acme")),
                _ => (text(u.given_name), text(u.family_name), text(u.tenant)),
            };
            (u.email.to_owned(), first, last, tenant)
        })
        .chain(std::iter::once((
            "hedy@example.com".to_owned(),
            Some("Hedy".to_owned()),
            Some("Lamarr".to_owned()),
            Some("globex".to_owned()),
        )))
        .collect()
}
