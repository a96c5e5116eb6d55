//! The local stack, provisioned on moto from `infra/template.yaml` itself, so the two cannot drift: the queues with
//! their visibility timeouts and redrive policies, the topic subscriptions with their filter and redrive policies, the
//! idempotency table, the restriction parameter, and each function's environment and SQS event source. What the
//! template takes as given (the database-event and alarm topics, the user pool, the sender identity, the worker
//! group) is created beside it, as the application's own stack would have it.

use std::collections::HashMap;

use serde_yaml::Value;

use crate::fixtures::{create_launch_hook, create_sample_users, create_user_pool, create_worker_group, WORKER_GROUP};

/// The environment name locally: every named resource is `local-...`.
pub const ENVIRONMENT: &str = "local";
use crate::iam::ACCOUNT;

pub struct Queue {
    pub name: String,
    pub url: String,
    pub arn: String,
}

/// An SQS event source mapping, as the template declares it.
pub struct SqsSource {
    pub queue: String,
    pub batch_size: i32,
    pub window_seconds: u64,
}

pub struct Function {
    pub logical_id: String,
    /// The binary (the crate directory of `CodeUri`).
    pub binary: String,
    pub environment: Vec<(String, String)>,
    /// Its SQS event sources, in the template's order.
    pub sqs: Vec<SqsSource>,
}

pub struct LocalStack {
    pub database_topic_arn: String,
    pub alarm_topic_arn: String,
    pub user_pool_id: String,
    /// By logical id.
    pub queues: HashMap<String, Queue>,
    pub functions: Vec<Function>,
    /// The template's own topics' ARNs, by logical id.
    pub topics: HashMap<String, String>,
    /// The restriction parameter's name.
    pub restriction_parameter: String,
    pub worker_group: String,
}

impl LocalStack {
    pub fn function(&self, binary: &str) -> &Function {
        self.functions
            .iter()
            .find(|f| f.binary == binary)
            .unwrap_or_else(|| panic!("the template deploys no {binary}"))
    }

    pub fn queue(&self, logical_id: &str) -> &Queue {
        self.queues
            .get(logical_id)
            .unwrap_or_else(|| panic!("the template has no queue {logical_id}"))
    }

    /// An event source with Lambda's semantics for `source` (one of a function's SQS events), feeding `function`.
    pub fn event_source<F: crate::event_source::Invoke>(
        &self,
        sqs: &aws_sdk_sqs::Client,
        source: &SqsSource,
        function: F,
    ) -> crate::event_source::EventSource<F> {
        let queue = self.queue(&source.queue);
        crate::event_source::EventSource::start(
            sqs.clone(),
            queue.url.clone(),
            queue.arn.clone(),
            source.batch_size,
            std::time::Duration::from_secs(source.window_seconds),
            function,
        )
    }

    /// Publishes `message` to the database-event topic with the `event` and `table` attributes the subscriptions'
    /// filter policies read, as the application's API does.
    pub async fn publish_database_event(&self, sns: &aws_sdk_sns::Client, message: String, event: &str, table: &str) {
        publish_to_database_topic(sns, &self.database_topic_arn, message, event, table)
            .await
            .expect("publish to the database-event topic");
    }

    /// A publish history of `tenant` created (`id` its title too), published to the database-event topic.
    pub async fn publish_history_created(&self, sns: &aws_sdk_sns::Client, tenant: &str, id: &str) {
        let message = serde_json::json!({"event": "records_created", "table": "publish_history", "records": [{"id": id, "_tenant": tenant, "title": id}]});
        self.publish_database_event(sns, message.to_string(), "records_created", "publish_history")
            .await;
    }
}

pub fn read_template() -> Value {
    let path = crate::workspace_root().join("infra/template.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The local stack's unsubscribe signing key (64 hex characters, as the README tells operators to make one).
pub const LOCAL_UNSUBSCRIBE_KEY: &str = "6c6f63616c2d756e7375627363726962652d6b65792d666f722d746573747321";

/// What `!Ref`, `!Sub`, `!GetAtt` and `!If` resolve to locally.
struct Resolver {
    refs: HashMap<String, String>,
    arns: HashMap<String, String>,
    names: HashMap<String, String>,
}

impl Resolver {
    fn resolve(&self, value: &Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Tagged(tagged) => {
                let tag = tagged.tag.to_string();
                match tag.trim_start_matches('!') {
                    "Ref" => tagged.value.as_str().and_then(|name| self.refs.get(name).cloned()),
                    "Sub" => tagged.value.as_str().map(|text| self.substitute(text)),
                    "GetAtt" => {
                        let target = tagged.value.as_str()?;
                        let (resource, attribute) = target.split_once('.')?;
                        match attribute {
                            "Arn" => self.arns.get(resource).cloned(),
                            // A function's URL (SAM names it <Function>Url): locally an address the harness serves.
                            "FunctionUrl" => Some(format!(
                                "https://{}.lambda-url.local/",
                                resource.trim_end_matches("Url").to_lowercase()
                            )),
                            "QueueName" => self.names.get(resource).cloned(),
                            _ => None,
                        }
                    }
                    // Locally every condition is false (not prod, no configuration set, no email, no deletes).
                    "If" => tagged
                        .value
                        .as_sequence()
                        .and_then(|branches| branches.get(2))
                        .and_then(|b| self.resolve(b)),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn substitute(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let Some(end) = rest[start..].find('}') else { break };
            let name = &rest[start + 2..start + end];
            out.push_str(self.refs.get(name).map(String::as_str).unwrap_or(""));
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        out
    }
}

fn resources_of<'a>(template: &'a Value, kind: &'a str) -> impl Iterator<Item = (String, &'a Value)> + 'a {
    template["Resources"]
        .as_mapping()
        .into_iter()
        .flatten()
        .filter(move |(_, r)| r["Type"] == kind)
        .map(|(k, r)| (k.as_str().unwrap_or_default().to_owned(), &r["Properties"]))
}

fn parameter_default(template: &Value, name: &str) -> String {
    template["Parameters"][name]["Default"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Provisions the stack on the local AWS at `endpoint`. `visibility_timeout` overrides the template's, for tests
/// that want a failed record back in seconds rather than minutes.
pub async fn provision(endpoint: &str, app_base_url: &str, visibility_timeout: Option<i32>) -> LocalStack {
    let template = read_template();
    let sdk = crate::sdk_config(endpoint).await;
    let sns = aws_sdk_sns::Client::new(&sdk);
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let cognito = aws_sdk_cognitoidentityprovider::Client::new(&sdk);
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let ssm = aws_sdk_ssm::Client::new(&sdk);
    let autoscaling = aws_sdk_autoscaling::Client::new(&sdk);
    let region = crate::REGION;

    // What the template takes as given.
    let topic = |name: String| {
        let sns = sns.clone();
        async move {
            sns.create_topic()
                .name(name)
                .send()
                .await
                .expect("create topic")
                .topic_arn()
                .unwrap_or_default()
                .to_owned()
        }
    };
    let database_topic_arn = topic(format!("{ENVIRONMENT}-database-events")).await;
    let alarm_topic_arn = topic(format!("{ENVIRONMENT}-alarm-update-instance")).await;
    let user_pool_id = create_user_pool(&cognito, &format!("{ENVIRONMENT}-users")).await;
    create_sample_users(&cognito, &user_pool_id).await;
    let sender_identity = parameter_default(&template, "SenderIdentity");
    aws_sdk_ses::Client::new(&sdk)
        .verify_domain_identity()
        .domain(&sender_identity)
        .send()
        .await
        .expect("verify sender identity");
    create_worker_group(&autoscaling, WORKER_GROUP, 2).await;
    create_launch_hook(&autoscaling, WORKER_GROUP).await;

    let mut resolver = Resolver {
        refs: HashMap::new(),
        arns: HashMap::new(),
        names: HashMap::new(),
    };
    for (name, parameter) in template["Parameters"].as_mapping().into_iter().flatten() {
        let name = name.as_str().unwrap_or_default().to_owned();
        let default = match &parameter["Default"] {
            Value::Number(n) => n.to_string(),
            other => other.as_str().unwrap_or_default().to_owned(),
        };
        resolver.refs.insert(name, default);
    }
    for (name, value) in [
        ("Environment", ENVIRONMENT.to_owned()),
        ("DatabaseEventTopicArn", database_topic_arn.clone()),
        ("AlarmTopicArn", alarm_topic_arn.clone()),
        ("UserPoolId", user_pool_id.clone()),
        ("WorkerAutoScalingGroupName", WORKER_GROUP.to_owned()),
        ("AppBaseUrl", app_base_url.to_owned()),
        ("AWS::Region", region.to_owned()),
        ("AWS::AccountId", ACCOUNT.to_owned()),
        ("AWS::Partition", "aws".to_owned()),
    ] {
        resolver.refs.insert(name.to_owned(), value);
    }

    // The template's own topics (the SES feedback topic, the operations topic) and the SES configuration set.
    let mut topics = HashMap::new();
    for (logical_id, properties) in resources_of(&template, "AWS::SNS::Topic") {
        let name = resolver
            .resolve(&properties["TopicName"])
            .unwrap_or_else(|| format!("{ENVIRONMENT}-{logical_id}"));
        let arn = topic(name.clone()).await;
        topics.insert(logical_id.clone(), arn.clone());
        resolver.refs.insert(logical_id.clone(), arn.clone());
        resolver.arns.insert(logical_id.clone(), arn);
        resolver.names.insert(logical_id, name);
    }
    for (logical_id, properties) in resources_of(&template, "AWS::SES::ConfigurationSet") {
        let name = resolver.resolve(&properties["Name"]).expect("configuration set name");
        let set = aws_sdk_ses::types::ConfigurationSet::builder()
            .name(&name)
            .build()
            .expect("a configuration set");
        aws_sdk_ses::Client::new(&sdk)
            .create_configuration_set()
            .configuration_set(set)
            .send()
            .await
            .expect("create configuration set");
        resolver.refs.insert(logical_id, name);
    }

    // Queues first, then their redrive policies (a dead-letter queue must exist before it is named).
    let mut queues = HashMap::new();
    for (logical_id, properties) in resources_of(&template, "AWS::SQS::Queue") {
        let name = resolver.resolve(&properties["QueueName"]).expect("queue name");
        let mut request = sqs.create_queue().queue_name(&name);
        let visibility = visibility_timeout
            .map(|v| v.to_string())
            .or_else(|| resolver.resolve(&properties["VisibilityTimeout"]));
        if let Some(visibility) = visibility {
            request = request.attributes(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout, visibility);
        }
        let url = request
            .send()
            .await
            .expect("create queue")
            .queue_url()
            .unwrap_or_default()
            .to_owned();
        let arn = format!("arn:aws:sqs:{region}:{ACCOUNT}:{name}");
        resolver.refs.insert(logical_id.clone(), url.clone());
        resolver.arns.insert(logical_id.clone(), arn.clone());
        resolver.names.insert(logical_id.clone(), name.clone());
        queues.insert(logical_id, Queue { name, url, arn });
    }
    for (logical_id, properties) in resources_of(&template, "AWS::SQS::Queue") {
        let redrive = &properties["RedrivePolicy"];
        if redrive.is_null() {
            continue;
        }
        let policy = serde_json::json!({
            "deadLetterTargetArn": resolver.resolve(&redrive["deadLetterTargetArn"]).expect("dead-letter target"),
            "maxReceiveCount": redrive["maxReceiveCount"].as_u64().unwrap_or(5),
        });
        sqs.set_queue_attributes()
            .queue_url(&queues[&logical_id].url)
            .attributes(
                aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy,
                policy.to_string(),
            )
            .send()
            .await
            .expect("set redrive policy");
    }

    // The database-event subscriptions with their filter policies (SQS protocol only: the operations email is not
    // for a local run).
    for (_, properties) in resources_of(&template, "AWS::SNS::Subscription") {
        if properties["Protocol"] != "sqs" {
            continue;
        }
        let topic_arn = resolver.resolve(&properties["TopicArn"]).expect("subscription topic");
        let endpoint = resolver
            .resolve(&properties["Endpoint"])
            .expect("subscription endpoint");
        let filter: serde_json::Value = serde_json::to_value(&properties["FilterPolicy"]).unwrap_or_default();
        let mut request = sns.subscribe().topic_arn(topic_arn).protocol("sqs").endpoint(endpoint);
        if !filter.is_null() {
            request = request.attributes("FilterPolicy", filter.to_string());
        }
        if let Some(scope) = properties["FilterPolicyScope"].as_str() {
            request = request.attributes("FilterPolicyScope", scope);
        }
        if let Some(raw) = properties["RawMessageDelivery"].as_bool() {
            request = request.attributes("RawMessageDelivery", raw.to_string());
        }
        if let Some(dead_letters) = resolver.resolve(&properties["RedrivePolicy"]["deadLetterTargetArn"]) {
            request = request.attributes(
                "RedrivePolicy",
                serde_json::json!({"deadLetterTargetArn": dead_letters}).to_string(),
            );
        }
        request.send().await.expect("subscribe queue");
    }

    for (logical_id, properties) in resources_of(&template, "AWS::DynamoDB::Table") {
        let name = resolver.resolve(&properties["TableName"]).expect("table name");
        crate::fixtures::create_table(
            &dynamodb,
            &name,
            properties["TimeToLiveSpecification"]["AttributeName"].as_str(),
        )
        .await;
        resolver.refs.insert(logical_id, name);
    }

    let mut restriction_parameter = String::new();
    for (logical_id, properties) in resources_of(&template, "AWS::SSM::Parameter") {
        let name = resolver.resolve(&properties["Name"]).expect("parameter name");
        let value = resolver.resolve(&properties["Value"]).expect("parameter value");
        crate::fixtures::put_parameter(&ssm, &name, &value).await;
        resolver.refs.insert(logical_id, name.clone());
        restriction_parameter = name;
    }

    // The signing key of the unsubscribe links, which the operator creates as a SecureString.
    let key_parameter = parameter_default(&template, "UnsubscribeKeyParameterName");
    crate::fixtures::put_secret(&ssm, &key_parameter, LOCAL_UNSUBSCRIBE_KEY).await;

    let mut functions = Vec::new();
    for (logical_id, properties) in resources_of(&template, "AWS::Serverless::Function") {
        let binary = properties["CodeUri"]
            .as_str()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut environment = Vec::new();
        for variables in [
            &template["Globals"]["Function"]["Environment"]["Variables"],
            &properties["Environment"]["Variables"],
        ] {
            for (name, value) in variables.as_mapping().into_iter().flatten() {
                let name = name.as_str().unwrap_or_default().to_owned();
                let value = resolver
                    .resolve(value)
                    .unwrap_or_else(|| panic!("{logical_id}: cannot resolve {name} locally"));
                environment.push((name, value));
            }
        }
        let sqs_sources = properties["Events"]
            .as_mapping()
            .into_iter()
            .flatten()
            .map(|(_, e)| e)
            .filter(|e| e["Type"] == "SQS")
            .map(|event| {
                let p = &event["Properties"];
                let queue = match &p["Queue"] {
                    Value::Tagged(tagged) => tagged
                        .value
                        .as_str()
                        .unwrap_or_default()
                        .trim_end_matches(".Arn")
                        .to_owned(),
                    other => panic!("{logical_id}: the SQS event's Queue should be !GetAtt <queue>.Arn, not {other:?}"),
                };
                SqsSource {
                    queue,
                    batch_size: p["BatchSize"].as_i64().unwrap_or(10) as i32,
                    window_seconds: p["MaximumBatchingWindowInSeconds"].as_u64().unwrap_or(0),
                }
            });
        let sqs = sqs_sources.collect();
        functions.push(Function {
            logical_id,
            binary,
            environment,
            sqs,
        });
    }

    LocalStack {
        database_topic_arn,
        alarm_topic_arn,
        user_pool_id,
        queues,
        functions,
        topics,
        restriction_parameter,
        worker_group: WORKER_GROUP.to_owned(),
    }
}

/// Publishes `message` to the database-event topic `topic_arn` with the `event` and `table` attributes the
/// subscriptions' filter policies read, as the application's API does.
pub async fn publish_to_database_topic(
    sns: &aws_sdk_sns::Client,
    topic_arn: &str,
    message: String,
    event: &str,
    table: &str,
) -> Result<
    aws_sdk_sns::operation::publish::PublishOutput,
    aws_sdk_sns::error::SdkError<aws_sdk_sns::operation::publish::PublishError>,
> {
    let attribute = |value: &str| {
        aws_sdk_sns::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(value)
            .build()
            .expect("data type is set")
    };
    sns.publish()
        .topic_arn(topic_arn)
        .message(message)
        .message_attributes("event", attribute(event))
        .message_attributes("table", attribute(table))
        .send()
        .await
}
