//! IAM in the local AWS, since moto enforces none: every function process signs with an access key of its own
//! ([`register`], called when the harness starts a function), the recording proxy maps each call to the IAM action
//! and resource ARN AWS would authorize ([`requests_of`]), and evaluates it against that function's policy from
//! `infra/template.yaml`, resolved against what the function was really configured with: a `!Ref` in the function's
//! `Environment` names the same thing as the variable's value, so the policy names exactly the queues, tables,
//! pools and parameters the function was given; an SQS event source's queue is given too (its records name it), by
//! its name in the local stack. Template parameters no variable carries take their default, or the
//! harness's value ([`harness_parameters`]). A call no statement allows gets the service's own AccessDenied answer.
//!
//! Supported, because the template uses them: Allow and Deny, Action and NotAction, Resource and NotResource with
//! `*` and `?` wildcards, `!If` on the template's conditions, and the condition operators StringEquals, StringLike,
//! ArnEquals and ArnLike (with their `IfExists` forms). Anything else in a policy is an error at registration, never
//! silently ignored.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_yaml::Value;

use crate::REGION;

pub const ACCOUNT: &str = "123456789012";

/// One authorization AWS makes for a call: an action on a resource, with the request's condition keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub action: String,
    pub resource: String,
    pub context: HashMap<String, String>,
}

impl Request {
    pub fn new(action: &str, resource: impl Into<String>) -> Request {
        Request {
            action: action.to_owned(),
            resource: resource.into(),
            context: HashMap::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<String>) -> Request {
        self.context.insert(key.to_owned(), value.into());
        self
    }
}

#[derive(Debug, Clone)]
struct Condition {
    operator: String,
    key: String,
    values: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Statement {
    pub sid: String,
    allow: bool,
    actions: Vec<String>,
    not_actions: Vec<String>,
    /// `None` where the template names something this function was not configured with: it matches nothing.
    resources: Vec<Option<String>>,
    not_resources: Vec<Option<String>>,
    conditions: Vec<Condition>,
}

/// A function's identity-based policy, resolved.
#[derive(Debug, Clone)]
pub struct FunctionPolicy {
    /// The binary (the crate directory of the function's `CodeUri`).
    pub function: String,
    pub statements: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Allowed by the statement of that Sid.
    Allowed(String),
    Denied(String),
}

/// IAM's wildcard match: `*` any run of characters, `?` one; actions compare without case.
pub fn wildcard_match(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = if ignore_case {
        (
            pattern.to_lowercase().chars().collect(),
            text.to_lowercase().chars().collect(),
        )
    } else {
        (pattern.chars().collect(), text.chars().collect())
    };
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl Statement {
    fn matches_action(&self, action: &str) -> bool {
        if !self.not_actions.is_empty() {
            return !self.not_actions.iter().any(|a| wildcard_match(a, action, true));
        }
        self.actions.iter().any(|a| wildcard_match(a, action, true))
    }

    fn matches_resource(&self, resource: &str) -> bool {
        if !self.not_resources.is_empty() {
            return !self
                .not_resources
                .iter()
                .flatten()
                .any(|r| wildcard_match(r, resource, false));
        }
        self.resources
            .iter()
            .flatten()
            .any(|r| wildcard_match(r, resource, false))
    }

    fn matches_conditions(&self, context: &HashMap<String, String>) -> bool {
        self.conditions.iter().all(|condition| {
            let if_exists = condition.operator.ends_with("IfExists");
            let operator = condition.operator.trim_end_matches("IfExists");
            // Condition keys compare without case, as IAM's do.
            let value = context
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(&condition.key))
                .map(|(_, v)| v);
            let Some(value) = value else { return if_exists };
            condition.values.iter().any(|wanted| match operator {
                "StringEquals" | "ArnEquals" => wanted == value,
                "StringLike" | "ArnLike" => wildcard_match(wanted, value, false),
                _ => false,
            })
        })
    }

    fn applies(&self, request: &Request) -> bool {
        self.matches_action(&request.action)
            && self.matches_resource(&request.resource)
            && self.matches_conditions(&request.context)
    }

    /// The actions this statement grants by name (for the report of grants no test exercised).
    pub fn granted_actions(&self) -> &[String] {
        if self.allow {
            &self.actions
        } else {
            &[]
        }
    }
}

impl FunctionPolicy {
    /// IAM's evaluation within one account: an explicit Deny wins, then any Allow, else the implicit deny.
    /// `revoked` actions are taken out of every Allow (a test's policy with an action removed).
    pub fn evaluate(&self, request: &Request, revoked: &[String]) -> Decision {
        if let Some(deny) = self.statements.iter().find(|s| !s.allow && s.applies(request)) {
            return Decision::Denied(format!(
                "with an explicit deny in an identity-based policy (Sid {})",
                deny.sid
            ));
        }
        if revoked.iter().any(|a| a.eq_ignore_ascii_case(&request.action)) {
            return Decision::Denied(format!(
                "because no identity-based policy allows the {} action",
                request.action
            ));
        }
        match self.statements.iter().find(|s| s.allow && s.applies(request)) {
            Some(allow) => Decision::Allowed(allow.sid.clone()),
            None => Decision::Denied(format!(
                "because no identity-based policy allows the {} action",
                request.action
            )),
        }
    }
}

/// What `!Ref`, `!Sub`, `!GetAtt` and `!If` resolve to for one function.
struct Resolver<'a> {
    template: &'a Value,
    refs: HashMap<String, String>,
    arns: HashMap<String, String>,
}

impl Resolver<'_> {
    fn resolve(&self, value: &Value) -> Result<Vec<Option<String>>, String> {
        Ok(match value {
            Value::Sequence(items) => {
                let mut out = Vec::new();
                for item in items {
                    out.extend(self.resolve(item)?);
                }
                out
            }
            Value::String(s) => vec![Some(s.clone())],
            Value::Number(n) => vec![Some(n.to_string())],
            Value::Bool(b) => vec![Some(b.to_string())],
            Value::Tagged(tagged) => match tagged.tag.to_string().trim_start_matches('!') {
                "Ref" => vec![tagged.value.as_str().and_then(|name| self.refs.get(name).cloned())],
                "Sub" => vec![tagged.value.as_str().and_then(|text| self.substitute(text))],
                "GetAtt" => {
                    let target = tagged.value.as_str().unwrap_or_default();
                    match target.split_once('.') {
                        Some((resource, "Arn")) => vec![self.arns.get(resource).cloned()],
                        _ => return Err(format!("!GetAtt {target} in a policy: the harness resolves only .Arn")),
                    }
                }
                "If" => {
                    let branches = tagged.value.as_sequence().ok_or("!If takes a list")?;
                    let condition = branches
                        .first()
                        .and_then(Value::as_str)
                        .ok_or("!If names a condition")?;
                    let branch = if self.condition(condition)? {
                        branches.get(1)
                    } else {
                        branches.get(2)
                    };
                    self.resolve(branch.ok_or("!If takes two branches")?)?
                }
                other => return Err(format!("!{other} in a policy is not supported by the harness")),
            },
            other => return Err(format!("unexpected value in a policy: {other:?}")),
        })
    }

    fn scalar(&self, value: &Value) -> Result<Option<String>, String> {
        Ok(self.resolve(value)?.into_iter().next().flatten())
    }

    fn condition(&self, name: &str) -> Result<bool, String> {
        let definition = &self.template["Conditions"][name];
        if definition.is_null() {
            return Err(format!("the template has no condition {name}"));
        }
        self.truth(definition)
    }

    fn truth(&self, value: &Value) -> Result<bool, String> {
        let Value::Tagged(tagged) = value else {
            return Err(format!("a condition is a function, not {value:?}"));
        };
        let arguments = tagged.value.as_sequence();
        match tagged.tag.to_string().trim_start_matches('!') {
            "Equals" => {
                let items = arguments.filter(|a| a.len() == 2).ok_or("!Equals takes two values")?;
                Ok(self.scalar(&items[0])? == self.scalar(&items[1])?)
            }
            "Not" => self
                .truth(arguments.and_then(|a| a.first()).ok_or("!Not takes one condition")?)
                .map(|t| !t),
            "And" => arguments
                .ok_or("!And takes conditions")?
                .iter()
                .try_fold(true, |all, c| Ok(all && self.truth(c)?)),
            "Or" => arguments
                .ok_or("!Or takes conditions")?
                .iter()
                .try_fold(false, |any, c| Ok(any || self.truth(c)?)),
            "Condition" => self.condition(tagged.value.as_str().unwrap_or_default()),
            other => Err(format!("!{other} in a condition is not supported by the harness")),
        }
    }

    /// `None` when the text names something unknown to this function.
    fn substitute(&self, text: &str) -> Option<String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}')?;
            out.push_str(self.refs.get(&rest[start + 2..start + end])?);
            rest = &rest[start + end + 1..];
        }
        out.push_str(rest);
        Some(out)
    }
}

/// The ARN of a resource of `kind` whose `!Ref` is `reference` (a queue's URL, a table's or a parameter's name).
fn arn_of(kind: &str, reference: &str) -> Option<String> {
    match kind {
        "AWS::SQS::Queue" => reference
            .rsplit('/')
            .next()
            .map(|name| format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")),
        "AWS::DynamoDB::Table" => Some(format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{reference}")),
        "AWS::SNS::Topic" => Some(reference.to_owned()),
        _ => None,
    }
}

/// The values of template parameters that no function's environment carries, as the local stack has them.
pub fn harness_parameters() -> HashMap<String, String> {
    HashMap::from([
        ("Environment".to_owned(), crate::stack::ENVIRONMENT.to_owned()),
        (
            "WorkerAutoScalingGroupName".to_owned(),
            crate::fixtures::WORKER_GROUP.to_owned(),
        ),
    ])
}

/// The policy of the function whose `CodeUri` ends in `binary`, resolved against its environment `env`. `None` for
/// a binary the template does not deploy (the benchmark's SDK floor).
pub fn policy_from_template(
    template: &Value,
    binary: &str,
    env: &[(String, String)],
) -> Result<Option<FunctionPolicy>, String> {
    let resources = template["Resources"]
        .as_mapping()
        .ok_or("the template has no Resources")?;
    let Some(function) = resources.values().find(|r| {
        r["Type"] == "AWS::Serverless::Function"
            && r["Properties"]["CodeUri"]
                .as_str()
                .is_some_and(|uri| uri.rsplit('/').next() == Some(binary))
    }) else {
        return Ok(None);
    };
    let properties = &function["Properties"];
    let mut resolver = Resolver {
        template,
        refs: HashMap::new(),
        arns: HashMap::new(),
    };
    for (name, parameter) in template["Parameters"].as_mapping().into_iter().flatten() {
        let default = match &parameter["Default"] {
            Value::Number(n) => Some(n.to_string()),
            other => other.as_str().map(str::to_owned),
        };
        if let (Some(name), Some(default)) = (name.as_str(), default) {
            resolver.refs.insert(name.to_owned(), default);
        }
    }
    resolver.refs.extend(harness_parameters());
    resolver.refs.extend([
        ("AWS::Region".to_owned(), REGION.to_owned()),
        ("AWS::AccountId".to_owned(), ACCOUNT.to_owned()),
        ("AWS::Partition".to_owned(), "aws".to_owned()),
    ]);
    // What the function was configured with names what its policy names.
    for (variable, value) in properties["Environment"]["Variables"]
        .as_mapping()
        .into_iter()
        .flatten()
    {
        let Value::Tagged(tagged) = value else { continue };
        if tagged.tag.to_string().trim_start_matches('!') != "Ref" {
            continue;
        }
        let (Some(variable), Some(target)) = (variable.as_str(), tagged.value.as_str()) else {
            continue;
        };
        let Some((_, configured)) = env.iter().rev().find(|(k, _)| k == variable) else {
            continue;
        };
        resolver.refs.insert(target.to_owned(), configured.clone());
        if let Some(arn) = resources
            .get(target)
            .and_then(|r| r["Type"].as_str())
            .and_then(|kind| arn_of(kind, configured))
        {
            resolver.arns.insert(target.to_owned(), arn);
        }
    }
    // Its SQS event sources' queues: given to the function in each record's `eventSourceARN`, not in a variable.
    for (_, event) in properties["Events"].as_mapping().into_iter().flatten() {
        let (true, Value::Tagged(queue)) = (event["Type"] == "SQS", &event["Properties"]["Queue"]) else {
            continue;
        };
        let Some(target) = queue.value.as_str().and_then(|t| t.strip_suffix(".Arn")) else {
            continue;
        };
        if resolver.arns.contains_key(target) {
            continue;
        }
        let name = resolver.resolve(
            &resources
                .get(target)
                .map(|r| r["Properties"]["QueueName"].clone())
                .unwrap_or_default(),
        );
        if let Some(name) = name.ok().into_iter().flatten().flatten().next() {
            resolver
                .arns
                .insert(target.to_owned(), format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"));
        }
    }
    let mut statements = Vec::new();
    for document in properties["Policies"].as_sequence().into_iter().flatten() {
        let Some(list) = document["Statement"].as_sequence() else {
            return Err(format!(
                "{binary}: only inline policy documents are supported by the harness, not {document:?}"
            ));
        };
        for statement in list {
            let sid = statement["Sid"].as_str().unwrap_or("(no Sid)").to_owned();
            let allow = match statement["Effect"].as_str() {
                Some("Allow") => true,
                Some("Deny") => false,
                other => return Err(format!("{binary} {sid}: Effect {other:?}")),
            };
            let mut conditions = Vec::new();
            for (operator, keys) in statement["Condition"].as_mapping().into_iter().flatten() {
                let operator = operator.as_str().unwrap_or_default().to_owned();
                if !["StringEquals", "StringLike", "ArnEquals", "ArnLike"]
                    .contains(&operator.trim_end_matches("IfExists"))
                {
                    return Err(format!(
                        "{binary} {sid}: the harness does not evaluate the condition operator {operator}"
                    ));
                }
                for (key, values) in keys.as_mapping().into_iter().flatten() {
                    let values = resolver
                        .resolve(values)
                        .map_err(|e| format!("{binary} {sid}: {e}"))?
                        .into_iter()
                        .flatten()
                        .collect();
                    conditions.push(Condition {
                        operator: operator.clone(),
                        key: key.as_str().unwrap_or_default().to_owned(),
                        values,
                    });
                }
            }
            let resolve = |field: &str| -> Result<Vec<Option<String>>, String> {
                if statement[field].is_null() {
                    Ok(Vec::new())
                } else {
                    resolver
                        .resolve(&statement[field])
                        .map_err(|e| format!("{binary} {sid}: {e}"))
                }
            };
            let (resources, not_resources) = (resolve("Resource")?, resolve("NotResource")?);
            // An action under a false `!If` is `AWS::NoValue`: no action at all.
            let actions =
                |field: &str| -> Result<Vec<String>, String> { Ok(resolve(field)?.into_iter().flatten().collect()) };
            statements.push(Statement {
                sid: sid.clone(),
                allow,
                actions: actions("Action")?,
                not_actions: actions("NotAction")?,
                resources,
                not_resources,
                conditions,
            });
        }
    }
    Ok(Some(FunctionPolicy {
        function: binary.to_owned(),
        statements,
    }))
}

/// Access key -> the policy of the function process that signs with it, for every proxy in this process.
fn registry() -> &'static Mutex<HashMap<String, Arc<FunctionPolicy>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<FunctionPolicy>>>> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// The access key a new process of `binary` with `env` signs with, its policy registered for the proxy; `None` for
/// a binary the template does not deploy (it keeps the harness's unrestricted key). Panics on a policy the harness
/// cannot evaluate: a policy it would half-read would prove nothing.
pub fn register(binary: &str, env: &[(String, String)]) -> Option<String> {
    static TEMPLATE: OnceLock<Value> = OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let template = TEMPLATE.get_or_init(crate::stack::read_template);
    let policy = policy_from_template(template, binary, env).unwrap_or_else(|e| panic!("infra/template.yaml: {e}"))?;
    let key = format!(
        "{}{}",
        binary.replace('-', "").to_uppercase(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    registry().lock().unwrap().insert(key.clone(), Arc::new(policy));
    Some(key)
}

/// The policy of the function process that signed with `access_key`; `None` for the harness's own key.
pub fn policy_for(access_key: &str) -> Option<Arc<FunctionPolicy>> {
    registry().lock().unwrap().get(access_key).cloned()
}

/// The access key and the signing service of a SigV4 `Authorization` header.
pub fn credential_of(authorization: &str) -> Option<(String, String)> {
    let credential = authorization.split("Credential=").nth(1)?.split([',', ' ']).next()?;
    let mut parts = credential.split('/');
    let key = parts.next()?.to_owned();
    let service = parts.nth(2)?.to_owned();
    Some((key, service))
}

/// What the harness knows of the world that IAM conditions read: the Auto Scaling group of each instance (the tag
/// `aws:autoscaling:groupName` that Auto Scaling puts on its instances).
pub type InstanceGroups = HashMap<String, String>;

fn json_field<'a>(body: &'a serde_json::Value, field: &str) -> Result<&'a str, String> {
    body[field]
        .as_str()
        .ok_or_else(|| format!("the request has no {field}"))
}

fn ssm_parameter_arn(name: &str) -> String {
    // `name:version` or `name:label` selects a version; IAM authorizes the parameter itself.
    let name = name.trim_start_matches('/').split(':').next().unwrap_or_default();
    format!("arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{name}")
}

/// The authorizations AWS makes for one call (every one must be allowed), or why the harness cannot tell.
/// `service` is the SigV4 signing name, `body` the request's (JSON or form-encoded) body.
pub fn requests_of(
    service: &str,
    operation: &str,
    body: &str,
    form: &HashMap<String, String>,
    instances: &InstanceGroups,
) -> Result<Vec<Request>, String> {
    let json: serde_json::Value = if form.contains_key("Action") {
        serde_json::Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_default()
    };
    let any = |prefix: &str| format!("arn:aws:{prefix}:{REGION}:{ACCOUNT}:*");
    Ok(match (service, operation) {
        ("cognito-idp", _) => {
            let pool = json_field(&json, "UserPoolId")?;
            vec![Request::new(&format!("cognito-idp:{operation}"), format!("arn:aws:cognito-idp:{REGION}:{ACCOUNT}:userpool/{pool}"))]
        }
        ("sqs", _) => {
            let url = json_field(&json, "QueueUrl")?;
            // A batch call authorizes as its single action.
            let action = operation.strip_suffix("Batch").unwrap_or(operation);
            vec![Request::new(&format!("sqs:{action}"), arn_of("AWS::SQS::Queue", url).unwrap_or_default())]
        }
        ("dynamodb", "BatchGetItem" | "BatchWriteItem") => {
            // Authorized for each table the batch names.
            let tables = json["RequestItems"].as_object().filter(|t| !t.is_empty()).ok_or_else(|| format!("dynamodb:{operation} without RequestItems"))?;
            tables.keys().map(|table| Request::new(&format!("dynamodb:{operation}"), format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}"))).collect()
        }
        ("dynamodb", "TransactWriteItems" | "TransactGetItems") => {
            return Err(format!("dynamodb:{operation}: the harness maps single-table and batch calls only"));
        }
        ("dynamodb", _) => {
            let table = json_field(&json, "TableName")?;
            vec![Request::new(&format!("dynamodb:{operation}"), format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{table}"))]
        }
        ("ssm", "GetParameter" | "PutParameter" | "DeleteParameter" | "GetParameterHistory") => {
            vec![Request::new(&format!("ssm:{operation}"), ssm_parameter_arn(json_field(&json, "Name")?))]
        }
        ("ssm", "GetParameters") => {
            json["Names"].as_array().into_iter().flatten().filter_map(|n| n.as_str()).map(|n| Request::new("ssm:GetParameters", ssm_parameter_arn(n))).collect()
        }
        ("ssm", "SendCommand") => {
            let document = json_field(&json, "DocumentName")?;
            let mut requests = vec![Request::new("ssm:SendCommand", format!("arn:aws:ssm:{REGION}::document/{document}"))];
            for instance in json["InstanceIds"].as_array().into_iter().flatten().filter_map(|i| i.as_str()) {
                let mut request = Request::new("ssm:SendCommand", format!("arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance}"));
                if let Some(group) = instances.get(instance) {
                    request = request.with("ssm:resourceTag/aws:autoscaling:groupName", group.clone());
                }
                requests.push(request);
            }
            if json["Targets"].is_array() {
                return Err("ssm:SendCommand with Targets: the harness maps InstanceIds only".into());
            }
            requests
        }
        // Calls that support no resource-level permission authorize on "*".
        ("ssm", "GetCommandInvocation" | "ListCommandInvocations" | "ListCommands" | "DescribeInstanceInformation") => {
            vec![Request::new(&format!("ssm:{operation}"), any("ssm"))]
        }
        ("autoscaling", "CompleteLifecycleAction" | "RecordLifecycleActionHeartbeat" | "SetInstanceHealth" | "UpdateAutoScalingGroup") => {
            let group = form.get("AutoScalingGroupName").ok_or("the request has no AutoScalingGroupName")?;
            vec![Request::new(
                &format!("autoscaling:{operation}"),
                format!("arn:aws:autoscaling:{REGION}:{ACCOUNT}:autoScalingGroup:00000000-0000-4000-8000-000000000000:autoScalingGroupName/{group}"),
            )]
        }
        ("autoscaling", describe) if describe.starts_with("Describe") => vec![Request::new(&format!("autoscaling:{describe}"), any("autoscaling"))],
        ("ses" | "email", "GetSendQuota" | "GetSendStatistics" | "GetAccountSendingEnabled") => vec![Request::new(&format!("ses:{operation}"), any("ses"))],
        ("ses" | "email", "SendRawEmail" | "SendEmail" | "SendTemplatedEmail" | "SendBulkTemplatedEmail") => {
            // SES authorizes a send against the sending identity (the From address's own identity where it is
            // verified as one, else its domain; the harness verifies domains) and the configuration set.
            let source = form.get("Source").or_else(|| form.get("FromArn")).ok_or("a raw send without Source: the harness cannot tell its identity")?;
            let address = source.rsplit('<').next().unwrap_or(source).trim_end_matches('>').trim();
            let domain = address.rsplit('@').next().unwrap_or(address);
            let action = format!("ses:{operation}");
            let mut requests = vec![Request::new(&action, format!("arn:aws:ses:{REGION}:{ACCOUNT}:identity/{domain}"))];
            if let Some(set) = form.get("ConfigurationSetName") {
                requests.push(Request::new(&action, format!("arn:aws:ses:{REGION}:{ACCOUNT}:configuration-set/{set}")));
            }
            requests
        }
        _ => return Err(format!("the harness does not know the IAM action and resource of {service}:{operation}; add it to tests/src/iam.rs")),
    })
}

/// The extra authorization a SecureString's decryption makes: kms:Decrypt of its key, through SSM.
pub fn decrypt_request() -> Request {
    Request::new(
        "kms:Decrypt",
        format!("arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-4000-8000-00000000a55m"),
    )
    .with("kms:ViaService", format!("ssm.{REGION}.amazonaws.com"))
}

/// AWS's answer to a denied call, in the service's own protocol: a status, a content type, a body and, for the
/// JSON protocols, the error-type header.
pub fn access_denied(service: &str, json_protocol: bool, message: &str) -> (u16, &'static str, String, Option<String>) {
    // SQS's JSON protocol spells the code as its query protocol did.
    let code = if json_protocol && service != "sqs" {
        "AccessDeniedException"
    } else {
        "AccessDenied"
    };
    service_error(json_protocol, if json_protocol { 400 } else { 403 }, code, message)
}

/// An error answer as AWS gives it: (status, content type, body, the `x-amzn-ErrorType` of the JSON protocols).
/// `code` may carry a JSON namespace (`com.amazonaws.sqs#...`); the query protocol's answer uses the bare name.
pub fn service_error(
    json_protocol: bool,
    status: u16,
    code: &str,
    message: &str,
) -> (u16, &'static str, String, Option<String>) {
    if json_protocol {
        let body = serde_json::json!({ "__type": code, "message": message, "Message": message }).to_string();
        (
            status,
            "application/x-amz-json-1.1",
            body,
            Some(code.rsplit('#').next().unwrap_or(code).to_owned()),
        )
    } else {
        let escaped = message
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;");
        let code = code.rsplit('#').next().unwrap_or(code);
        let body = format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{escaped}</Message></Error><RequestId>00000000-0000-4000-8000-000000000400</RequestId></ErrorResponse>"
        );
        (status, "text/xml", body, None)
    }
}

/// The message AWS gives a denied call.
pub fn denial_message(function: &str, request: &Request, reason: &str) -> String {
    format!(
        "User: arn:aws:sts::{ACCOUNT}:assumed-role/{function}-role/{function} is not authorized to perform: {} on resource: {} {reason}",
        request.action, request.resource
    )
}

/// Where each test process writes the grants its calls used, for the report of grants no test exercised.
pub fn exercised_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
        .join("iam-exercised")
}

/// Records that `function`'s statement `sid` allowed `action` (one line per distinct grant and process).
pub fn record_exercised(function: &str, sid: &str, action: &str) {
    use std::io::Write;
    static SEEN: OnceLock<Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    let line = format!("{function}\t{sid}\t{action}\n");
    // Held while writing: the proxy serves calls on many threads, and two lines written at once must not interleave.
    let mut seen = SEEN.get_or_init(Default::default).lock().unwrap();
    if !seen.insert(line.clone()) {
        return;
    }
    let dir = exercised_dir();
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{}.tsv", std::process::id())))
    {
        // One write of the whole line (writeln! may split it into several, which other processes' lines can split).
        let _ = file.write_all(line.as_bytes());
    }
}

/// One action a function's policy grants: the statement, the action as written (a pattern), its template line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub function: String,
    pub sid: String,
    pub action: String,
    /// The comment on the action's line or the line above it, which says why a grant no test exercises is there.
    pub reason: Option<String>,
}

/// The comment that justifies a grant no test exercises: `# unexercised: <why>`.
const UNEXERCISED: &str = "# unexercised:";

/// Every Allow action of every function's inline policy, both branches of an `!If` included (a grant a parameter
/// switches on is a grant); `template_text` is the same template as text, for the comments YAML parsing drops.
pub fn grants(template: &Value, template_text: &str) -> Vec<Grant> {
    fn actions(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) => out.push(s.clone()),
            Value::Sequence(items) => items.iter().for_each(|item| actions(item, out)),
            Value::Tagged(tagged) if tagged.tag.to_string().trim_start_matches('!') == "If" => tagged
                .value
                .as_sequence()
                .into_iter()
                .flatten()
                .skip(1)
                .for_each(|branch| actions(branch, out)),
            _ => {}
        }
    }
    let lines: Vec<&str> = template_text.lines().collect();
    let mut grants = Vec::new();
    for resource in template["Resources"].as_mapping().into_iter().flat_map(|m| m.values()) {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let Some(function) = resource["Properties"]["CodeUri"]
            .as_str()
            .and_then(|uri| uri.rsplit('/').next())
        else {
            continue;
        };
        for statement in resource["Properties"]["Policies"]
            .as_sequence()
            .into_iter()
            .flatten()
            .flat_map(|d| d["Statement"].as_sequence().into_iter().flatten())
        {
            if statement["Effect"] != "Allow" {
                continue;
            }
            let sid = statement["Sid"].as_str().unwrap_or("(no Sid)").to_owned();
            let mut listed = Vec::new();
            actions(&statement["Action"], &mut listed);
            // The statement's lines: from its Sid to the next statement's.
            let start = lines
                .iter()
                .position(|l| l.trim() == format!("- Sid: {sid}"))
                .unwrap_or(lines.len());
            let end = lines
                .iter()
                .skip(start + 1)
                .position(|l| l.trim_start().starts_with("- Sid:"))
                .map_or(lines.len(), |n| start + 1 + n);
            for action in listed {
                let at = (start..end).find(|&n| lines[n].contains(action.as_str()));
                let reason = at.and_then(|n| {
                    [Some(lines[n]), n.checked_sub(1).map(|above| lines[above])]
                        .into_iter()
                        .flatten()
                        .find_map(|line| {
                            line.find(UNEXERCISED)
                                .map(|i| line[i + UNEXERCISED.len()..].trim().to_owned())
                        })
                });
                grants.push(Grant {
                    function: function.to_owned(),
                    sid: sid.clone(),
                    action,
                    reason,
                });
            }
        }
    }
    grants
}

/// What the suite exercised: (function, Sid, action called) from every test process's records in `dir`.
pub fn exercised(dir: &std::path::Path) -> std::collections::HashSet<(String, String, String)> {
    let mut seen = std::collections::HashSet::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for line in std::fs::read_to_string(entry.path()).unwrap_or_default().lines() {
            let mut fields = line.split('\t').map(str::to_owned);
            if let (Some(function), Some(sid), Some(action)) = (fields.next(), fields.next(), fields.next()) {
                seen.insert((function, sid, action));
            }
        }
    }
    seen
}

/// The grants no call of the suite was allowed by.
pub fn unexercised<'a>(
    grants: &'a [Grant],
    exercised: &std::collections::HashSet<(String, String, String)>,
) -> Vec<&'a Grant> {
    grants
        .iter()
        .filter(|grant| {
            !exercised.iter().any(|(function, sid, action)| {
                *function == grant.function && *sid == grant.sid && wildcard_match(&grant.action, action, true)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_is_unexercised_until_a_call_it_allowed_is_recorded_and_carries_its_reason() {
        let text = "Resources:\n  F:\n    Type: AWS::Serverless::Function\n    Properties:\n      CodeUri: functions/f\n      Policies:\n        - Statement:\n            - Sid: Send\n              Effect: Allow\n              Action:\n                - ses:SendRaw*\n                # unexercised: only with a configuration set\n                - !If [C, ses:GetSendQuota, !Ref AWS::NoValue]\n";
        let template: Value = serde_yaml::from_str(text).unwrap();
        let grants = grants(&template, text);
        assert_eq!(
            grants.iter().map(|g| g.action.as_str()).collect::<Vec<_>>(),
            vec!["ses:SendRaw*", "ses:GetSendQuota"]
        );
        assert_eq!(
            (grants[0].reason.as_deref(), grants[1].reason.as_deref()),
            (None, Some("only with a configuration set"))
        );
        let mut seen = std::collections::HashSet::new();
        assert_eq!(unexercised(&grants, &seen).len(), 2);
        seen.insert(("f".to_owned(), "Send".to_owned(), "ses:SendRawEmail".to_owned()));
        assert_eq!(
            unexercised(&grants, &seen)
                .iter()
                .map(|g| g.action.as_str())
                .collect::<Vec<_>>(),
            vec!["ses:GetSendQuota"]
        );
    }

    #[test]
    fn wildcards_match_as_iam_does() {
        assert!(wildcard_match(
            "arn:aws:ec2:*:*:instance/*",
            "arn:aws:ec2:eu-west-1:1:instance/i-1",
            false
        ));
        assert!(wildcard_match("ses:Send*", "SES:SENDRAWEMAIL", true));
        assert!(!wildcard_match("ses:SendEmail", "ses:SendRawEmail", true));
        assert!(wildcard_match("a?c", "abc", false) && !wildcard_match("a?c", "abbc", false));
        assert!(wildcard_match("*", "", false));
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_policy_names_what_the_function_was_configured_with() {
        let template = crate::stack::read_template();
        let configured = env(&[
            ("USER_POOL_ID", "eu-west-1_abc"),
            ("DEAD_LETTER_QUEUE_URL", "http://127.0.0.1:1/123456789012/sync-dlq"),
            ("ORDERING_TABLE", "order"),
        ]);
        let policy = policy_from_template(&template, "cognito-attribute-sync", &configured)
            .unwrap()
            .unwrap();
        let pool = format!("arn:aws:cognito-idp:{REGION}:{ACCOUNT}:userpool/eu-west-1_abc");
        assert!(matches!(
            policy.evaluate(&Request::new("cognito-idp:AdminUpdateUserAttributes", &pool), &[]),
            Decision::Allowed(_)
        ));
        let other_pool = format!("arn:aws:cognito-idp:{REGION}:{ACCOUNT}:userpool/eu-west-1_other");
        assert!(matches!(
            policy.evaluate(&Request::new("cognito-idp:AdminUpdateUserAttributes", other_pool), &[]),
            Decision::Denied(_)
        ));
        assert!(matches!(
            policy.evaluate(&Request::new("cognito-idp:AdminDeleteUser", &pool), &[]),
            Decision::Denied(_)
        ));
        let dlq = format!("arn:aws:sqs:{REGION}:{ACCOUNT}:sync-dlq");
        assert!(matches!(
            policy.evaluate(&Request::new("sqs:SendMessage", &dlq), &[]),
            Decision::Allowed(_)
        ));
        assert!(matches!(
            policy.evaluate(&Request::new("sqs:SendMessage", &dlq), &["sqs:SendMessage".to_owned()]),
            Decision::Denied(_)
        ));
        let table = format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/order");
        assert!(matches!(
            policy.evaluate(&Request::new("dynamodb:UpdateItem", &table), &[]),
            Decision::Allowed(_)
        ));
        assert!(matches!(
            policy.evaluate(&Request::new("dynamodb:Scan", &table), &[]),
            Decision::Denied(_)
        ));
    }

    #[test]
    fn an_action_under_if_follows_the_condition_of_the_configured_parameter() {
        let template = crate::stack::read_template();
        let deleting = env(&[("USER_POOL_ID", "eu-west-1_abc"), ("ON_USER_DELETED", "delete")]);
        let pool = format!("arn:aws:cognito-idp:{REGION}:{ACCOUNT}:userpool/eu-west-1_abc");
        let delete = Request::new("cognito-idp:AdminDeleteUser", &pool);
        let policy = policy_from_template(&template, "cognito-attribute-sync", &deleting)
            .unwrap()
            .unwrap();
        assert!(matches!(policy.evaluate(&delete, &[]), Decision::Allowed(_)));
        let disabling = env(&[("USER_POOL_ID", "eu-west-1_abc"), ("ON_USER_DELETED", "disable")]);
        let policy = policy_from_template(&template, "cognito-attribute-sync", &disabling)
            .unwrap()
            .unwrap();
        assert!(matches!(policy.evaluate(&delete, &[]), Decision::Denied(_)));
    }

    #[test]
    fn conditions_are_evaluated_not_ignored() {
        let template = crate::stack::read_template();
        let policy = policy_from_template(&template, "lifecycle-hook-completer", &[])
            .unwrap()
            .unwrap();
        let instance = format!("arn:aws:ec2:{REGION}:{ACCOUNT}:instance/i-1");
        let ours =
            Request::new("ssm:SendCommand", &instance).with("ssm:resourceTag/aws:autoscaling:groupName", "workers");
        assert!(matches!(policy.evaluate(&ours, &[]), Decision::Allowed(_)));
        let theirs =
            Request::new("ssm:SendCommand", &instance).with("ssm:resourceTag/aws:autoscaling:groupName", "databases");
        assert!(matches!(policy.evaluate(&theirs, &[]), Decision::Denied(_)));
        assert!(
            matches!(
                policy.evaluate(&Request::new("ssm:SendCommand", &instance), &[]),
                Decision::Denied(_)
            ),
            "an untagged instance"
        );

        let unsubscribe = policy_from_template(&template, "unsubscribe", &[]).unwrap().unwrap();
        assert!(matches!(
            unsubscribe.evaluate(&decrypt_request(), &[]),
            Decision::Allowed(_)
        ));
        let direct = Request::new("kms:Decrypt", decrypt_request().resource);
        assert!(
            matches!(unsubscribe.evaluate(&direct, &[]), Decision::Denied(_)),
            "kms:Decrypt outside SSM"
        );
    }

    #[test]
    fn a_send_authorizes_against_its_identity_and_configuration_set() {
        let form: HashMap<String, String> = [
            ("Action", "SendRawEmail"),
            ("Source", "Navlab <no-reply@navlab.online>"),
            ("ConfigurationSetName", "local-event-workers"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
        let requests = requests_of("email", "SendRawEmail", "", &form, &HashMap::new()).unwrap();
        let resources: Vec<&str> = requests.iter().map(|r| r.resource.as_str()).collect();
        assert_eq!(
            resources,
            [
                format!("arn:aws:ses:{REGION}:{ACCOUNT}:identity/navlab.online"),
                format!("arn:aws:ses:{REGION}:{ACCOUNT}:configuration-set/local-event-workers")
            ]
        );
        assert!(requests.iter().all(|r| r.action == "ses:SendRawEmail"));
        let batch = requests_of(
            "sqs",
            "SendMessageBatch",
            r#"{"QueueUrl":"http://h/123456789012/q"}"#,
            &HashMap::new(),
            &HashMap::new(),
        )
        .unwrap();
        assert_eq!(
            batch,
            vec![Request::new(
                "sqs:SendMessage",
                format!("arn:aws:sqs:{REGION}:{ACCOUNT}:q")
            )]
        );
        assert!(requests_of("ec2", "RunInstances", "", &HashMap::new(), &HashMap::new())
            .unwrap_err()
            .contains("does not know"));
        let writes = requests_of(
            "dynamodb",
            "BatchWriteItem",
            r#"{"RequestItems":{"a":[],"b":[]}}"#,
            &HashMap::new(),
            &HashMap::new(),
        )
        .unwrap();
        let table = |t: &str| {
            Request::new(
                "dynamodb:BatchWriteItem",
                format!("arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{t}"),
            )
        };
        assert_eq!(
            writes,
            vec![table("a"), table("b")],
            "a batch write authorizes for every table it names"
        );
    }
}
