//! The local stack's data: a user pool shaped like production (custom attributes `_tenant` and
//! `subPublishHistory`), sample users of two tenants, and queues. Shared by the end-to-end tests and the local run.

use std::collections::HashMap;

use aws_sdk_cognitoidentityprovider::types::{AttributeDataType, AttributeType, SchemaAttributeType, StringAttributeConstraintsType};

/// A sample user: (email, given_name, family_name, tenant, subscribed to publish history).
pub struct SampleUser {
    pub email: &'static str,
    pub given_name: &'static str,
    pub family_name: &'static str,
    pub tenant: &'static str,
    pub subscribed: bool,
}

/// Two tenants, mixed subscriptions. The sample events in events/ name these users.
pub const SAMPLE_USERS: &[SampleUser] = &[
    SampleUser { email: "ada@example.com", given_name: "Ada", family_name: "Byron", tenant: "acme", subscribed: true },
    SampleUser { email: "grace@example.com", given_name: "Grace", family_name: "Hopper", tenant: "acme", subscribed: true },
    SampleUser { email: "edsger@example.com", given_name: "Edsger", family_name: "Dijkstra", tenant: "acme", subscribed: false },
    SampleUser { email: "alan@example.com", given_name: "Alan", family_name: "Turing", tenant: "globex", subscribed: true },
    SampleUser { email: "katherine@example.com", given_name: "", family_name: "", tenant: "", subscribed: false },
];

fn custom_string(name: &str) -> SchemaAttributeType {
    SchemaAttributeType::builder()
        .name(name)
        .attribute_data_type(AttributeDataType::String)
        .mutable(true)
        .string_attribute_constraints(StringAttributeConstraintsType::builder().min_length("0").max_length("2048").build())
        .build()
}

fn attribute(name: &str, value: &str) -> AttributeType {
    AttributeType::builder().name(name).value(value).build().expect("name is set")
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
        .user_attributes(attribute("email_verified", "true"))
        .user_attributes(attribute("custom:subPublishHistory", if user.subscribed { "true" } else { "false" }));
    for (name, value) in [("given_name", user.given_name), ("family_name", user.family_name), ("custom:_tenant", user.tenant)] {
        if !value.is_empty() {
            request = request.user_attributes(attribute(name, value));
        }
    }
    request.send().await.expect("create user");
}

pub async fn create_sample_users(cognito: &aws_sdk_cognitoidentityprovider::Client, pool_id: &str) {
    for user in SAMPLE_USERS {
        create_user(cognito, pool_id, user).await;
    }
}

/// A user's attributes and enabled flag, as Cognito holds them.
pub async fn user_state(cognito: &aws_sdk_cognitoidentityprovider::Client, pool_id: &str, username: &str) -> (bool, HashMap<String, String>) {
    let user = cognito.admin_get_user().user_pool_id(pool_id).username(username).send().await.expect("get user");
    let attributes = user.user_attributes().iter().map(|a| (a.name().to_owned(), a.value().unwrap_or_default().to_owned())).collect();
    (user.enabled(), attributes)
}

pub async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue().queue_name(name).send().await.expect("create queue").queue_url().expect("queue url").to_owned()
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
