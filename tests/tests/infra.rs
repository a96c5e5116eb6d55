//! The SAM template's checks, offline and without credentials: the template and the crates agree on each function's
//! environment; `sam validate` (plain and `--lint`), cfn-lint and checkov pass; `sam build` builds all six functions
//! for arm64 with cargo-lambda. The tools come from the project's .venv (tests/setup.sh).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use e2e_harness::workspace_root;
use serde_yaml::Value;

fn template() -> Value {
    let path = workspace_root().join("infra/template.yaml");
    serde_yaml::from_str(&std::fs::read_to_string(&path).expect("infra/template.yaml")).expect("the template is YAML")
}

fn keys(value: &Value) -> BTreeSet<String> {
    value
        .as_mapping()
        .map(|m| m.keys().filter_map(|k| k.as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

/// The environment variables each crate declares that it reads.
fn declared(crate_dir: &str) -> &'static [&'static str] {
    match crate_dir {
        "cognito-attribute-sync" => cognito_attribute_sync::config::Config::VARIABLES,
        "publish-history-email" => publish_history_email::config::Config::VARIABLES,
        "lifecycle-hook-completer" => lifecycle_hook_completer::config::Config::VARIABLES,
        "alarm-instance-updater" => alarm_instance_updater::config::Config::VARIABLES,
        "cognito-reconcile" => cognito_reconcile::config::Config::VARIABLES,
        "unsubscribe" => unsubscribe::config::Config::VARIABLES,
        "ses-feedback" => ses_feedback::config::Config::VARIABLES,
        other => panic!("the template deploys {other}, which is not a function crate"),
    }
}

#[test]
fn each_functions_environment_is_exactly_what_its_crate_reads() {
    let template = template();
    let globals = keys(&template["Globals"]["Function"]["Environment"]["Variables"]);
    assert_eq!(
        globals,
        BTreeSet::from([shared::metrics::NAMESPACE_VARIABLE.to_owned()]),
        "globals carry only what every function reads"
    );
    let mut deployed = BTreeSet::new();
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let properties = &resource["Properties"];
        let crate_dir = properties["CodeUri"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned();
        let mut variables = keys(&properties["Environment"]["Variables"]);
        variables.extend(globals.iter().cloned());
        let mut expected: BTreeSet<String> = declared(&crate_dir).iter().map(|v| v.to_string()).collect();
        expected.insert(shared::metrics::NAMESPACE_VARIABLE.to_owned());
        assert_eq!(variables, expected, "{name:?} ({crate_dir})");
        assert_eq!(resource["Metadata"]["BuildMethod"], "rust-cargolambda", "{name:?}");
        deployed.insert(crate_dir);
    }
    let functions: BTreeSet<String> = std::fs::read_dir(workspace_root().join("functions"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        deployed, functions,
        "every function crate is deployed, and nothing else"
    );
}

/// The `Timeout` each crate declares it has: its budget under an emulator that sends no usable deadline.
fn declared_timeout(crate_dir: &str) -> std::time::Duration {
    match crate_dir {
        "cognito-attribute-sync" => cognito_attribute_sync::config::TIMEOUT,
        "publish-history-email" => publish_history_email::config::TIMEOUT,
        "lifecycle-hook-completer" => lifecycle_hook_completer::config::TIMEOUT,
        "alarm-instance-updater" => alarm_instance_updater::config::TIMEOUT,
        "cognito-reconcile" => cognito_reconcile::config::TIMEOUT,
        "unsubscribe" => unsubscribe::config::TIMEOUT,
        "ses-feedback" => ses_feedback::config::TIMEOUT,
        other => panic!("the template deploys {other}, which is not a function crate"),
    }
}

#[test]
fn each_crate_knows_its_template_timeout() {
    let template = template();
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let properties = &resource["Properties"];
        let crate_dir = properties["CodeUri"].as_str().unwrap().rsplit('/').next().unwrap();
        let timeout = properties["Timeout"]
            .as_u64()
            .unwrap_or_else(|| panic!("{name:?} sets its Timeout"));
        assert_eq!(
            declared_timeout(crate_dir).as_secs(),
            timeout,
            "{name:?}: config::TIMEOUT is the template's Timeout"
        );
    }
}

#[test]
fn sqs_fed_functions_report_batch_item_failures_and_queues_outlast_six_timeouts() {
    let template = template();
    let resources = template["Resources"].as_mapping().unwrap();
    let mut sqs_events = 0;
    for (name, resource) in resources {
        if resource["Type"] != "AWS::Serverless::Function" {
            continue;
        }
        let timeout = resource["Properties"]["Timeout"].as_u64().unwrap_or(3);
        for (_, event) in resource["Properties"]["Events"].as_mapping().into_iter().flatten() {
            if event["Type"] != "SQS" {
                continue;
            }
            sqs_events += 1;
            let properties = &event["Properties"];
            assert_eq!(
                properties["FunctionResponseTypes"][0], "ReportBatchItemFailures",
                "{name:?}"
            );
            // A number, or a Number parameter that Lambda's minimum of 2 bounds.
            let concurrency = match &properties["ScalingConfig"]["MaximumConcurrency"] {
                Value::Tagged(reference) => {
                    let parameter = &template["Parameters"][reference.value.as_str().unwrap()];
                    assert_eq!(parameter["Type"], "Number", "{name:?}");
                    parameter["MinValue"].as_u64()
                }
                other => other.as_u64(),
            };
            assert!(
                concurrency.is_some_and(|c| c >= 2),
                "{name:?}: MaximumConcurrency {concurrency:?}"
            );
            let Value::Tagged(queue) = &properties["Queue"] else {
                panic!("{name:?}: Queue should be !GetAtt <queue>.Arn")
            };
            let queue = queue.value.clone();
            let queue_name = queue.as_str().unwrap().trim_end_matches(".Arn");
            let queue = &resources[&Value::from(queue_name)];
            let visibility = queue["Properties"]["VisibilityTimeout"].as_u64().unwrap();
            assert!(
                visibility >= 6 * timeout,
                "{queue_name}: visibility {visibility} < 6 x {timeout}"
            );
            assert!(
                queue["Properties"]["RedrivePolicy"]["maxReceiveCount"]
                    .as_u64()
                    .is_some(),
                "{queue_name} has no redrive policy"
            );
        }
    }
    assert_eq!(
        sqs_events, 4,
        "publish-history-email's rows and fan-out, cognito-attribute-sync's, ses-feedback's"
    );
}

/// The logical ids an alarm on `metric` names through `dimension` (`!Ref X` or `!GetAtt X.QueueName`).
fn alarmed(template: &Value, metric: &str, dimension: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for resource in template["Resources"].as_mapping().unwrap().values() {
        if resource["Type"] != "AWS::CloudWatch::Alarm" || resource["Properties"]["MetricName"] != metric {
            continue;
        }
        assert!(
            resource["Properties"]["AlarmActions"]
                .as_sequence()
                .is_some_and(|a| !a.is_empty()),
            "an alarm nobody hears: {resource:?}"
        );
        for d in resource["Properties"]["Dimensions"].as_sequence().into_iter().flatten() {
            if d["Name"].as_str() != Some(dimension) {
                continue;
            }
            match &d["Value"] {
                Value::Tagged(value) => named.extend(
                    value
                        .value
                        .as_str()
                        .map(|v| v.trim_end_matches(".QueueName").to_owned()),
                ),
                value => named.extend(value.as_str().map(str::to_owned)),
            }
        }
    }
    named
}

#[test]
fn every_function_has_an_error_alarm_and_every_source_queue_a_backlog_alarm() {
    let template = template();
    let resources = template["Resources"].as_mapping().unwrap();
    let functions: BTreeSet<String> = resources
        .iter()
        .filter(|(_, r)| r["Type"] == "AWS::Serverless::Function")
        .filter_map(|(id, _)| id.as_str().map(str::to_owned))
        .collect();
    assert_eq!(functions.len(), 7);
    assert_eq!(
        alarmed(&template, "Errors", "FunctionName"),
        functions,
        "an Errors alarm per function"
    );
    let source_queues: BTreeSet<String> = resources
        .values()
        .flat_map(|r| {
            r["Properties"]["Events"]
                .as_mapping()
                .into_iter()
                .flatten()
                .map(|(_, e)| e.clone())
                .collect::<Vec<_>>()
        })
        .filter(|e| e["Type"] == "SQS")
        .filter_map(|e| match &e["Properties"]["Queue"] {
            Value::Tagged(queue) => queue.value.as_str().map(|q| q.trim_end_matches(".Arn").to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(source_queues.len(), 4);
    assert_eq!(
        alarmed(&template, "ApproximateAgeOfOldestMessage", "QueueName"),
        source_queues,
        "a backlog alarm per source queue"
    );
}

/// Every email goes out through a configuration set that always exists; its bounces and complaints reach
/// ses-feedback through the topic and the queue (the SNS envelope kept), with SES's suppression on; and the sender's
/// reputation is alarmed on at half of SES's review thresholds.
#[test]
fn the_configuration_set_routes_bounces_and_complaints_to_ses_feedback_and_reputation_is_alarmed_on() {
    let template = template();
    let resources = &template["Resources"];
    let set = &resources["EmailConfigurationSet"];
    assert_eq!(set["Type"], "AWS::SES::ConfigurationSet");
    assert_eq!(
        set["Properties"]["SuppressionOptions"]["SuppressedReasons"],
        serde_yaml::from_str::<Value>("[BOUNCE, COMPLAINT]").unwrap()
    );
    assert_eq!(set["Properties"]["ReputationOptions"]["ReputationMetricsEnabled"], true);
    let sends_with =
        &function(&template, "PublishHistoryEmailFunction")["Environment"]["Variables"]["SES_CONFIGURATION_SET"];
    assert_eq!(
        ref_name(sends_with).as_deref(),
        Some("EmailConfigurationSet"),
        "publish-history-email always sends with it"
    );
    let destination = &resources["EmailFeedbackDestination"]["Properties"];
    assert_eq!(
        ref_name(&destination["ConfigurationSetName"]).as_deref(),
        Some("EmailConfigurationSet")
    );
    assert_eq!(
        destination["EventDestination"]["MatchingEventTypes"],
        serde_yaml::from_str::<Value>("[bounce, complaint]").unwrap()
    );
    assert_eq!(
        ref_name(&destination["EventDestination"]["SnsDestination"]["TopicARN"]).as_deref(),
        Some("SesFeedbackTopic")
    );
    let subscription = &resources["SesFeedbackSubscription"]["Properties"];
    assert_eq!(ref_name(&subscription["TopicArn"]).as_deref(), Some("SesFeedbackTopic"));
    assert_eq!(subscription["RawMessageDelivery"], false);
    let feedback = function(&template, "SesFeedbackFunction");
    assert!(feedback["Events"]["Feedback"]["Properties"]["FunctionResponseTypes"]
        .as_sequence()
        .is_some_and(|t| t.iter().any(|t| t == "ReportBatchItemFailures")));
    for (metric, threshold) in [("Reputation.BounceRate", 0.025), ("Reputation.ComplaintRate", 0.0005)] {
        let alarm = resources
            .as_mapping()
            .unwrap()
            .values()
            .find(|r| r["Properties"]["MetricName"] == metric)
            .unwrap_or_else(|| panic!("no alarm on {metric}"));
        assert_eq!(alarm["Properties"]["Namespace"], "AWS/SES");
        assert_eq!(
            alarm["Properties"]["Threshold"].as_f64(),
            Some(threshold),
            "{metric}: half of SES's review threshold"
        );
        assert!(alarm["Properties"]["AlarmActions"]
            .as_sequence()
            .is_some_and(|a| !a.is_empty()));
    }
}

/// The alarms on the functions' own metrics name the service dimension the metrics are written with.
#[test]
fn the_alarms_on_function_metrics_watch_what_the_functions_count() {
    let template = template();
    assert_eq!(
        alarmed(&template, "InstancesNotRegistered", "service"),
        BTreeSet::from(["lifecycle-hook-completer".to_owned()])
    );
    assert_eq!(
        alarmed(&template, "UnsubscribeFailed", "service"),
        BTreeSet::from(["unsubscribe".to_owned()])
    );
}

#[test]
fn the_reconcile_state_machine_retries_throttling_timeouts_and_unknown_ends_with_backoff() {
    let template = template();
    let task =
        &template["Resources"]["CognitoReconcileStateMachine"]["Properties"]["Definition"]["States"]["Reconcile"];
    let retries = task["Retry"].as_sequence().expect("the task retries");
    let retried: BTreeSet<String> = retries
        .iter()
        .flat_map(|r| {
            r["ErrorEquals"]
                .as_sequence()
                .unwrap()
                .iter()
                .filter_map(|e| e.as_str().map(str::to_owned))
        })
        .collect();
    for error in [
        "Lambda.TooManyRequestsException",
        "Lambda.ServiceException",
        "Lambda.Unknown",
        "Sandbox.Timedout",
        "States.Timeout",
    ] {
        assert!(retried.contains(error), "{error} is not retried: {retried:?}");
    }
    assert!(
        !retried.contains("States.ALL"),
        "a run that failed on its own error is not retried blindly"
    );
    for retry in retries {
        assert!(
            retry["BackoffRate"].as_f64().unwrap_or(1.0) > 1.0 && retry["IntervalSeconds"].as_u64().unwrap_or(0) > 0,
            "{retry:?}"
        );
    }
}

fn function<'a>(template: &'a Value, logical_id: &str) -> &'a Value {
    &template["Resources"][logical_id]["Properties"]
}

fn ref_name(value: &Value) -> Option<String> {
    match value {
        Value::Tagged(tagged) if tagged.tag == "Ref" => tagged.value.as_str().map(str::to_owned),
        _ => None,
    }
}

#[test]
fn once_only_records_outlive_every_dead_letter_queue() {
    let template = template();
    let ttl =
        &function(&template, "PublishHistoryEmailFunction")["Environment"]["Variables"]["IDEMPOTENCY_TTL_SECONDS"];
    let retention_parameter =
        ref_name(ttl).expect("IDEMPOTENCY_TTL_SECONDS comes from the dead-letter retention parameter");
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        if resource["Type"] == "AWS::SQS::Queue" && resource["Properties"]["MessageRetentionPeriod"] != Value::Null {
            assert_eq!(
                ref_name(&resource["Properties"]["MessageRetentionPeriod"]),
                Some(retention_parameter.clone()),
                "{name:?}"
            );
        }
    }
    let default = template["Parameters"][retention_parameter.as_str()]["Default"]
        .as_u64()
        .unwrap();
    assert!(
        default >= 14 * 24 * 3600,
        "the dead-letter queues keep messages 14 days; {default} s"
    );
}

#[test]
fn the_lifecycle_timeout_leaves_room_for_the_deadline_and_a_last_check() {
    let template = template();
    let properties = function(&template, "LifecycleHookCompleterFunction");
    let timeout = properties["Timeout"].as_u64().unwrap();
    let deadline: u64 = properties["Environment"]["Variables"]["HEALTHCHECK_DEADLINE_SECONDS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let needed = deadline
        + (lifecycle_hook_completer::handler::DEADLINE_MARGIN + lifecycle_hook_completer::handler::RESULT_WAIT)
            .as_secs();
    assert!(
        timeout >= needed,
        "Timeout {timeout} < HEALTHCHECK_DEADLINE_SECONDS {deadline} plus margins = {needed}"
    );
}

#[test]
fn a_user_missing_from_the_pool_is_skipped_before_the_queue_dead_letters_it() {
    let template = template();
    let properties = function(&template, "CognitoAttributeSyncFunction");
    let retry: u64 = properties["Environment"]["Variables"]["USER_NOT_FOUND_RETRY_SECONDS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let queue = &template["Resources"]["CognitoAttributeSyncQueue"]["Properties"];
    let visibility = queue["VisibilityTimeout"].as_u64().unwrap();
    let receives = queue["RedrivePolicy"]["maxReceiveCount"].as_u64().unwrap();
    assert!(
        retry < (receives - 1) * visibility,
        "{retry} s of retries would outlast {receives} receives of {visibility} s"
    );
}

/// A user held by another writer waits for its lease: the longest lease (the reconciliation's invocation plus the
/// guard's grace) must lapse within the queue's redeliveries, so contention alone never dead-letters a change.
#[test]
fn a_contended_user_is_free_again_before_the_queue_dead_letters_its_change() {
    let template = template();
    let longest_writer = function(&template, "CognitoReconcileFunction")["Timeout"]
        .as_u64()
        .unwrap();
    let lease = longest_writer + shared::ordering::LEASE_GRACE.as_secs();
    let queue = &template["Resources"]["CognitoAttributeSyncQueue"]["Properties"];
    let visibility = queue["VisibilityTimeout"].as_u64().unwrap();
    let receives = queue["RedrivePolicy"]["maxReceiveCount"].as_u64().unwrap();
    assert!(
        lease < (receives - 1) * visibility,
        "a {lease} s lease outlasts {receives} receives of {visibility} s"
    );
}

/// `infra/samconfig.toml`, read by the project's Python (tomllib) into JSON.
fn samconfig() -> serde_json::Value {
    let script = "import json, sys, tomllib; print(json.dumps(tomllib.load(open(sys.argv[1], 'rb'))))";
    let path = workspace_root().join("infra/samconfig.toml");
    let output = Command::new(venv_bin("python"))
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("run python");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("samconfig.toml as JSON")
}

/// `sam deploy --config-env dev|prod` deploys as it stands: every parameter the template requires is given, every one
/// given exists and is allowed, the environment's names carry its prefix (one account holds both), the account's own
/// resources come from that environment's SSM parameters, and alarms and retention are set per environment.
#[test]
fn samconfig_deploys_dev_and_prod_with_every_required_parameter() {
    let template = template();
    let parameters = template["Parameters"].as_mapping().unwrap();
    let config = samconfig();
    let mut settings = std::collections::BTreeMap::new();
    for environment in ["dev", "prod"] {
        let deploy = &config[environment]["deploy"]["parameters"];
        assert_eq!(deploy["stack_name"], format!("{environment}-event-workers"));
        assert!(deploy["capabilities"].as_str().unwrap().contains("CAPABILITY_IAM"));
        let overrides: std::collections::BTreeMap<String, String> = deploy["parameter_overrides"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                o.as_str()
                    .unwrap()
                    .split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .unwrap()
            })
            .collect();
        assert_eq!(overrides["Environment"], environment);
        for (name, parameter) in parameters {
            let name = name.as_str().unwrap();
            let given = overrides.get(name);
            assert!(
                given.is_some() || !parameter["Default"].is_null(),
                "{environment}: {name} has no default and is not given"
            );
            let Some(value) = given else { continue };
            if let Some(allowed) = parameter["AllowedValues"].as_sequence() {
                assert!(
                    allowed.iter().any(|a| a.as_str() == Some(value)),
                    "{environment}: {name}={value} not allowed"
                );
            }
            if let (Some(min), Ok(number)) = (parameter["MinValue"].as_u64(), value.parse::<u64>()) {
                assert!(
                    number >= min && number <= parameter["MaxValue"].as_u64().unwrap_or(u64::MAX),
                    "{environment}: {name}={value} out of range"
                );
            }
            if parameter["Type"]
                .as_str()
                .unwrap()
                .starts_with("AWS::SSM::Parameter::Value")
            {
                assert!(
                    value.starts_with(&format!("/{environment}/")),
                    "{environment}: {name} reads another environment's parameter: {value}"
                );
            }
        }
        for name in overrides.keys() {
            assert!(
                parameters.contains_key(name.as_str()),
                "{environment}: {name} is not a template parameter"
            );
        }
        settings.insert(environment, overrides);
    }
    for per_environment in ["QueueAgeAlarmSeconds", "DeadLetterRetentionSeconds"] {
        assert_ne!(
            settings["dev"].get(per_environment),
            settings["prod"].get(per_environment),
            "{per_environment} is the same in dev and prod"
        );
    }
    assert_eq!(
        settings["prod"]["DeadLetterRetentionSeconds"], "1209600",
        "prod keeps dead letters the SQS maximum"
    );
}

fn venv_bin(tool: &str) -> PathBuf {
    let path = workspace_root().join(".venv/bin").join(tool);
    assert!(path.exists(), "{} not found: run `bash tests/setup.sh`", path.display());
    path
}

/// Runs a tool offline: a region, no credentials, no telemetry; the project's .venv first on PATH (cargo-lambda).
fn run(tool: &str, args: &[&str]) -> String {
    run_with(tool, args, &[])
}

fn run_with(tool: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    let output = Command::new(venv_bin(tool))
        .envs(env.iter().copied())
        .args(args)
        .current_dir(workspace_root().join("infra"))
        .env(
            "PATH",
            format!("{}:{path}", workspace_root().join(".venv/bin").display()),
        )
        .env("AWS_DEFAULT_REGION", "eu-west-1")
        .env("SAM_CLI_TELEMETRY", "0")
        .env("SAM_CLI_BETA_RUST_CARGO_LAMBDA", "1")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{tool} {args:?} failed:\n{text}");
    text
}

#[test]
fn sam_validate_passes() {
    assert!(run("sam", &["validate", "--template-file", "template.yaml"]).contains("is a valid SAM Template"));
}

#[test]
fn sam_validate_lint_passes() {
    assert!(run("sam", &["validate", "--lint", "--template-file", "template.yaml"]).contains("is a valid SAM Template"));
}

#[test]
fn cfn_lint_passes() {
    run("cfn-lint", &["template.yaml"]);
}

#[test]
fn checkov_passes_with_every_skip_explained() {
    let output = run(
        "checkov",
        &[
            "-f",
            "template.yaml",
            "--framework",
            "cloudformation",
            "--compact",
            "--quiet",
            "--skip-download",
        ],
    );
    assert!(output.contains("Failed checks: 0"), "{output}");
    // Every skip in the template carries a reason.
    let template = template();
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        for skip in resource["Metadata"]["checkov"]["skip"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let reason = skip["comment"].as_str().unwrap_or_default();
            assert!(reason.len() > 20, "{name:?} skips {:?} without a reason", skip["id"]);
        }
    }
}

/// The deployment build: all seven functions, release, arm64 (cargo-lambda cross-compiles through zig). About ten
/// minutes on two cores from a clean target: the README's test command runs it, plain `cargo test` does not.
#[test]
#[ignore = "slow: a release arm64 cross-build; tests/test.sh runs it"]
fn sam_build_builds_every_function_for_arm64() {
    let build_dir = std::env::temp_dir().join(format!("sam-build-{}", std::process::id()));
    let build_dir_text = build_dir.to_string_lossy().into_owned();
    // Its own target directory: the release arm64 build shares nothing with the debug one, and cargo running inside
    // this test must not wait on the lock of the `cargo test` that runs it.
    let target = workspace_root().join("target/sam");
    run_with(
        "sam",
        &[
            "build",
            "--beta-features",
            "--template-file",
            "template.yaml",
            "--build-dir",
            &build_dir_text,
        ],
        &[("CARGO_TARGET_DIR", &target.to_string_lossy())],
    );
    for function in [
        "PublishHistoryEmailFunction",
        "CognitoAttributeSyncFunction",
        "LifecycleHookCompleterFunction",
        "AlarmInstanceUpdaterFunction",
        "CognitoReconcileFunction",
        "UnsubscribeFunction",
        "SesFeedbackFunction",
    ] {
        let bootstrap = build_dir.join(function).join("bootstrap");
        let bytes = std::fs::read(&bootstrap).unwrap_or_else(|e| panic!("{}: {e}", bootstrap.display()));
        // ELF, 64-bit, e_machine 0xB7 = AArch64.
        assert_eq!(&bytes[..4], b"\x7fELF", "{function}");
        assert_eq!(
            u16::from_le_bytes([bytes[18], bytes[19]]),
            0xB7,
            "{function} is not an arm64 binary"
        );
    }
    let _ = std::fs::remove_dir_all(&build_dir);
}

/// The logical id behind `!GetAtt X.Arn` (or `!Ref X`).
fn target_of(value: &Value) -> Option<String> {
    match value {
        Value::Tagged(tagged) => tagged.value.as_str().map(|v| v.trim_end_matches(".Arn").to_owned()),
        _ => None,
    }
}

/// Each queue that keeps what a hop could not deliver lets exactly that source's service send to it, scoped to the
/// source's ARN; `source` is how the template names the source (`!Ref Topic`, or the rule's ARN as a `!Sub`).
fn assert_queue_accepts(template: &Value, queue: &str, service: &str, source: &Value) {
    let granted = template["Resources"]
        .as_mapping()
        .unwrap()
        .values()
        .filter(|r| r["Type"] == "AWS::SQS::QueuePolicy")
        .any(|policy| {
            let properties = &policy["Properties"];
            properties["Queues"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|q| ref_name(q).as_deref() == Some(queue))
                && properties["PolicyDocument"]["Statement"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .any(|statement| {
                        statement["Principal"]["Service"] == service
                            && statement["Action"] == "sqs:SendMessage"
                            && target_of(&statement["Resource"]).as_deref() == Some(queue)
                            && statement["Condition"]["ArnEquals"]["aws:SourceArn"] == *source
                    })
        });
    assert!(
        granted,
        "{queue} does not let {service} send from {source:?} (a queue policy scoped to the source ARN)"
    );
}

/// Every hop between services keeps what it could not deliver: each SNS subscription (the template's own and the
/// functions' SNS events) has a redrive policy, each EventBridge target and schedule a dead-letter config beside its
/// retry policy. Each of those queues accepts exactly that source and is alarmed on any message.
#[test]
fn every_hop_between_services_keeps_what_it_could_not_deliver_in_an_alarmed_queue() {
    let template = template();
    let resources = template["Resources"].as_mapping().unwrap();
    let alarmed_queues = alarmed(&template, "ApproximateNumberOfMessagesVisible", "QueueName");
    let mut hops = 0;
    for (name, resource) in resources {
        let name = name.as_str().unwrap();
        if resource["Type"] == "AWS::SNS::Subscription" {
            let queue = target_of(&resource["Properties"]["RedrivePolicy"]["deadLetterTargetArn"])
                .unwrap_or_else(|| panic!("{name}: no RedrivePolicy"));
            assert_queue_accepts(
                &template,
                &queue,
                "sns.amazonaws.com",
                &resource["Properties"]["TopicArn"],
            );
            assert!(alarmed_queues.contains(&queue), "{name}: {queue} is not alarmed on");
            hops += 1;
        }
        if resource["Type"] == "AWS::Events::Rule" {
            for target in resource["Properties"]["Targets"].as_sequence().into_iter().flatten() {
                assert!(
                    !target["DeadLetterConfig"]["Arn"].is_null(),
                    "{name}: a target without a DeadLetterConfig"
                );
            }
        }
        for (event_name, event) in resource["Properties"]["Events"].as_mapping().into_iter().flatten() {
            let event_name = event_name.as_str().unwrap();
            let properties = &event["Properties"];
            match event["Type"].as_str() {
                Some("SNS") => {
                    let queue = target_of(&properties["RedrivePolicy"]["deadLetterTargetArn"])
                        .unwrap_or_else(|| panic!("{name}/{event_name}: no RedrivePolicy"));
                    assert_queue_accepts(&template, &queue, "sns.amazonaws.com", &properties["Topic"]);
                    assert!(
                        alarmed_queues.contains(&queue),
                        "{name}/{event_name}: {queue} is not alarmed on"
                    );
                    hops += 1;
                }
                Some("EventBridgeRule" | "CloudWatchEvent") => {
                    let queue = target_of(&properties["DeadLetterConfig"]["Arn"])
                        .unwrap_or_else(|| panic!("{name}/{event_name}: no DeadLetterConfig"));
                    assert!(
                        properties["RetryPolicy"]["MaximumEventAgeInSeconds"].as_u64().is_some(),
                        "{name}/{event_name}: no RetryPolicy"
                    );
                    let rule = properties["RuleName"].clone();
                    let Value::Tagged(rule) = rule else {
                        panic!("{name}/{event_name}: RuleName should be a !Sub")
                    };
                    let arn = format!(
                        "arn:${{AWS::Partition}}:events:${{AWS::Region}}:${{AWS::AccountId}}:rule/{}",
                        rule.value.as_str().unwrap()
                    );
                    let source: Value = serde_yaml::from_str(&format!("!Sub \"{arn}\"")).unwrap();
                    assert_queue_accepts(&template, &queue, "events.amazonaws.com", &source);
                    assert!(
                        alarmed_queues.contains(&queue),
                        "{name}/{event_name}: {queue} is not alarmed on"
                    );
                    hops += 1;
                }
                // EventBridge Scheduler sends to its dead-letter queue with the schedule's role, which SAM scopes
                // to that queue (sqs:SendMessage on its ARN): no queue policy.
                Some("ScheduleV2") => {
                    let queue = target_of(&properties["DeadLetterConfig"]["Arn"])
                        .unwrap_or_else(|| panic!("{name}/{event_name}: no DeadLetterConfig"));
                    assert!(
                        properties["RetryPolicy"]["MaximumRetryAttempts"].as_u64().is_some(),
                        "{name}/{event_name}: no RetryPolicy"
                    );
                    assert!(
                        alarmed_queues.contains(&queue),
                        "{name}/{event_name}: {queue} is not alarmed on"
                    );
                    hops += 1;
                }
                _ => {}
            }
        }
    }
    assert_eq!(hops, 8, "the three database-event and feedback subscriptions, the operations e-mail, the alarm topic, two rules, the schedule");
}

/// A public Function URL cannot take the workers' concurrency: its reserved concurrency comes from a Number
/// parameter (0 = uncapped, for new accounts that cannot reserve), prod sets it, and its throttles are alarmed on.
#[test]
fn a_public_function_url_is_capped_by_a_concurrency_parameter_and_its_throttles_alarm() {
    let template = template();
    let mut public = 0;
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        let properties = &resource["Properties"];
        if properties["FunctionUrlConfig"]["AuthType"] != "NONE" {
            continue;
        }
        public += 1;
        let name = name.as_str().unwrap();
        let Value::Tagged(cap) = &properties["ReservedConcurrentExecutions"] else {
            panic!("{name}: a public Function URL without a concurrency cap")
        };
        let parameter = match (cap.tag.to_string().as_str(), &cap.value) {
            ("!Ref", Value::String(parameter)) => parameter.clone(),
            ("!If", Value::Sequence(branches)) => {
                assert_eq!(
                    ref_name(&branches[2]).as_deref(),
                    Some("AWS::NoValue"),
                    "{name}: uncapped only when the parameter is 0"
                );
                ref_name(&branches[1]).unwrap_or_else(|| panic!("{name}: the cap is not a parameter"))
            }
            other => panic!("{name}: ReservedConcurrentExecutions {other:?}"),
        };
        let declared = &template["Parameters"][parameter.as_str()];
        assert_eq!(declared["Type"], "Number", "{parameter}");
        assert_eq!(declared["MinValue"].as_u64(), Some(0), "{parameter}: 0 means uncapped");
        let prod = samconfig()["prod"]["deploy"]["parameters"]["parameter_overrides"].clone();
        let set = prod
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o.as_str()?.strip_prefix(&format!("{parameter}=")))
            .next();
        assert!(
            set.and_then(|v| v.parse::<u64>().ok()).is_some_and(|v| v > 0),
            "prod does not cap {name}: {set:?}"
        );
        assert!(
            alarmed(&template, "Throttles", "FunctionName").contains(name),
            "{name}: its throttles are not alarmed on"
        );
    }
    assert_eq!(public, 1, "unsubscribe");
}

/// awslabs' serverless-rules pass, and every rule the template ignores (for the template or one resource) says why
/// in `cfn-lint-reasons`, as checkov's skips do.
#[test]
fn serverless_rules_pass_with_every_ignore_explained() {
    run("cfn-lint", &["template.yaml", "-a", "cfn_lint_serverless.rules"]);
    let template = template();
    let mut places = vec![("the template".to_owned(), &template["Metadata"])];
    for (name, resource) in template["Resources"].as_mapping().unwrap() {
        places.push((name.as_str().unwrap().to_owned(), &resource["Metadata"]));
    }
    for (place, metadata) in places {
        for rule in metadata["cfn-lint"]["config"]["ignore_checks"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let rule = rule.as_str().unwrap();
            let reason = metadata["cfn-lint-reasons"][rule].as_str().unwrap_or_default();
            assert!(reason.len() > 20, "{place} ignores {rule} without a reason");
        }
    }
}
