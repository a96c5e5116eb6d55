//! End to end: the built binary, run through the Lambda Runtime API against moto (the worker group and its launch
//! hook; SSM Run Command), on the sample events. moto lacks CompleteLifecycleAction and
//! RecordLifecycleActionHeartbeat and its SSM commands always succeed, so the harness's stand-in on the recording
//! proxy answers the two Auto Scaling calls (recording them) and fails the health check of chosen instances.

use std::path::Path;

use e2e_harness::fixtures::{
    create_launch_hook, create_worker_group, fresh_lifecycle_event, lifecycle_event_at, WORKER_GROUP,
};
use e2e_harness::lifecycle_stand_in::{CompletedAction, LifecycleStandIn};
use e2e_harness::runtime::{FunctionProcess, Invocation};
use e2e_harness::LocalAws;

const BINARY: &str = env!("CARGO_BIN_EXE_lifecycle-hook-completer");

async fn stack(settings: &[(&str, &str)]) -> (LocalAws, LifecycleStandIn, FunctionProcess) {
    let aws = LocalAws::start().await;
    let autoscaling = aws_sdk_autoscaling::Client::new(&aws.sdk);
    create_worker_group(&autoscaling, WORKER_GROUP, 1).await;
    create_launch_hook(&autoscaling, WORKER_GROUP).await;
    let stand_in = LifecycleStandIn::install(&aws.proxy);
    let function = FunctionProcess::start(Path::new(BINARY), &aws.function_env(settings));
    (aws, stand_in, function)
}

/// A check takes 2 to 4 s (the command's result is polled every 2 to 4 s): a 10 s deadline leaves room for two.
const FAST: &[(&str, &str)] = &[
    ("HEALTHCHECK_INTERVAL_SECONDS", "1"),
    ("HEALTHCHECK_DEADLINE_SECONDS", "10"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_instance_is_continued_and_a_redelivery_is_not_an_error() {
    let (aws, stand_in, mut function) = stack(FAST).await;
    let event = fresh_lifecycle_event("lifecycle-hook-completer/eventbridge-launch-lifecycle-action.json");
    let outcome = function.invoke(&event).response();
    assert_eq!(outcome["instance"], "i-0a1b2c3d4e5f60718");
    assert_eq!(
        (
            outcome["result"].as_str(),
            outcome["completed"].as_bool(),
            outcome["attempts"].as_u64()
        ),
        (Some("CONTINUE"), Some(true), Some(1))
    );
    assert!(outcome["elapsedSeconds"].as_f64().is_some());
    assert_eq!(
        stand_in.completed(),
        vec![CompletedAction {
            instance_id: "i-0a1b2c3d4e5f60718".into(),
            token: "c613620e-07e2-4ed2-a9e2-ef8258911ade".into(),
            result: "CONTINUE".into()
        }]
    );
    // The health check ran through SSM Run Command, with the configured URL.
    let sends = aws.proxy.calls_of("SendCommand");
    assert_eq!(sends.len(), 1);
    assert!(
        sends[0].body.contains("AWS-RunShellScript") && sends[0].body.contains("http://localhost:8000/healthcheck"),
        "{}",
        sends[0].body
    );
    assert!(
        !aws.proxy.calls_of("DescribeLifecycleHooks").is_empty(),
        "the hook's heartbeat timeout is read from moto"
    );

    // EventBridge delivers the event again: Auto Scaling has no active action any more; that is not an error.
    let again = function.invoke(&event).response();
    assert_eq!(again["completed"], false);
    assert!(
        again["reason"].as_str().unwrap().contains("no active lifecycle action"),
        "{again}"
    );
    assert_eq!(stand_in.completed().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn an_instance_whose_check_keeps_failing_is_abandoned_at_the_deadline() {
    let (_aws, stand_in, mut function) = stack(FAST).await;
    stand_in.make_unhealthy("i-0badc0ffee0d15ea5");
    let outcome = function
        .invoke(&fresh_lifecycle_event(
            "lifecycle-hook-completer/sns-launch-lifecycle-action.json",
        ))
        .response();
    assert_eq!(
        (outcome["result"].as_str(), outcome["completed"].as_bool()),
        (Some("ABANDON"), Some(true))
    );
    assert!(outcome["attempts"].as_u64().unwrap() >= 2, "{outcome}");
    let reason = outcome["reason"].as_str().unwrap();
    assert!(
        reason.contains("not healthy by the deadline") && reason.contains("Connection refused"),
        "{reason}"
    );
    assert_eq!(stand_in.completed()[0].result, "ABANDON");
    assert_eq!(stand_in.completed()[0].instance_id, "i-0badc0ffee0d15ea5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn on_unhealthy_continue_warm_pool_and_test_notification() {
    let mut settings = FAST.to_vec();
    settings.push(("ON_UNHEALTHY", "CONTINUE"));
    let (aws, stand_in, mut function) = stack(&settings).await;
    stand_in.make_unhealthy("i-0badc0ffee0d15ea5");
    let outcome = function
        .invoke(&fresh_lifecycle_event(
            "lifecycle-hook-completer/sns-launch-lifecycle-action.json",
        ))
        .response();
    assert_eq!(outcome["result"], "CONTINUE");

    let sends_before = aws.proxy.calls_of("SendCommand").len();
    let warm = function
        .invoke(&fresh_lifecycle_event(
            "lifecycle-hook-completer/eventbridge-warm-pool-lifecycle-action.json",
        ))
        .response();
    assert_eq!(
        (warm["result"].as_str(), warm["attempts"].as_u64()),
        (Some("CONTINUE"), Some(0))
    );
    assert_eq!(
        aws.proxy.calls_of("SendCommand").len(),
        sends_before,
        "no health check for the warm pool"
    );

    let test = function
        .invoke(&fresh_lifecycle_event(
            "lifecycle-hook-completer/sns-test-notification.json",
        ))
        .response();
    assert_eq!(
        (test["result"].as_str(), test["completed"].as_bool()),
        (Some("NONE"), Some(false))
    );
    assert_eq!(stand_in.completed().len(), 2);
}

/// Ten minutes after the event: past the 10 s deadline, as a redelivery or an asynchronous retry arrives.
fn late(path: &str) -> serde_json::Value {
    lifecycle_event_at(path, chrono::Utc::now() - chrono::Duration::minutes(10))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_late_event_gets_a_real_check_continue_when_healthy_abandon_when_not() {
    let (aws, stand_in, mut function) = stack(FAST).await;
    let healthy = function
        .invoke(&late(
            "lifecycle-hook-completer/eventbridge-launch-lifecycle-action.json",
        ))
        .response();
    assert_eq!(
        (healthy["result"].as_str(), healthy["completed"].as_bool()),
        (Some("CONTINUE"), Some(true)),
        "{healthy}"
    );
    assert!(
        !aws.proxy.calls_of("GetCommandInvocation").is_empty(),
        "the verdict rests on the command's result"
    );

    stand_in.make_unhealthy("i-0badc0ffee0d15ea5");
    let unhealthy = function
        .invoke(&late("lifecycle-hook-completer/sns-launch-lifecycle-action.json"))
        .response();
    assert_eq!(
        (unhealthy["result"].as_str(), unhealthy["attempts"].as_u64()),
        (Some("ABANDON"), Some(1)),
        "{unhealthy}"
    );
    assert!(
        unhealthy["reason"].as_str().unwrap().contains("Connection refused"),
        "{unhealthy}"
    );
    let results: Vec<String> = stand_in.completed().into_iter().map(|c| c.result).collect();
    assert_eq!(results, vec!["CONTINUE", "ABANDON"]);
}

/// The template's policy with `ssm:SendCommand` taken out: the proxy answers as IAM does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn without_ssm_send_command_in_its_policy_the_invocation_fails_naming_access_denied_and_completes_nothing() {
    let (aws, stand_in, mut function) = stack(FAST).await;
    aws.proxy.revoke("lifecycle-hook-completer", "ssm:SendCommand");
    match function.invoke(&fresh_lifecycle_event(
        "lifecycle-hook-completer/eventbridge-launch-lifecycle-action.json",
    )) {
        Invocation::Error(error) => {
            assert_eq!(error["errorType"], "HealthCheckFailed", "{error}");
            let message = error["errorMessage"].as_str().unwrap();
            assert!(
                message.contains("AccessDenied") && message.contains("ssm:SendCommand"),
                "{error}"
            );
        }
        Invocation::Response(response) => panic!("an unhealthy verdict on no evidence: {response}"),
    }
    assert!(stand_in.completed().is_empty(), "no CompleteLifecycleAction");
    let denials = aws.proxy.take_denials();
    assert!(
        !denials.is_empty() && denials.iter().all(|d| d.operation == "SendCommand"),
        "{denials:?}"
    );
}

/// An instance of another group (here: not tagged as the worker group's) is out of the function's reach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn an_instance_outside_the_worker_group_cannot_be_sent_a_command() {
    let (aws, stand_in, mut function) = stack(FAST).await;
    aws.proxy.place_instances("another-group", &["i-0a1b2c3d4e5f60718"]);
    let outcome = function.invoke(&fresh_lifecycle_event(
        "lifecycle-hook-completer/eventbridge-launch-lifecycle-action.json",
    ));
    assert!(
        matches!(&outcome, Invocation::Error(e) if e["errorMessage"].as_str().unwrap_or("").contains("AccessDenied")),
        "{outcome:?}"
    );
    assert!(stand_in.completed().is_empty());
    let denials = aws.proxy.take_denials();
    assert!(
        denials.iter().any(|d| d.message.contains("i-0a1b2c3d4e5f60718")),
        "{denials:?}"
    );
}

/// A hook about to lapse (AWS's shortest heartbeat timeout, 30 s, most of it gone when the event arrives) gets a
/// heartbeat before the verdict, so the action is still there to complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_hook_about_to_lapse_gets_a_heartbeat_before_the_verdict() {
    let (aws, stand_in, mut function) = stack(&[
        ("HEALTHCHECK_INTERVAL_SECONDS", "1"),
        ("HEALTHCHECK_DEADLINE_SECONDS", "32"),
    ])
    .await;
    aws_sdk_autoscaling::Client::new(&aws.sdk)
        .put_lifecycle_hook()
        .auto_scaling_group_name(WORKER_GROUP)
        .lifecycle_hook_name(e2e_harness::fixtures::LAUNCH_HOOK)
        .lifecycle_transition("autoscaling:EC2_INSTANCE_LAUNCHING")
        .heartbeat_timeout(30)
        .default_result("ABANDON")
        .send()
        .await
        .expect("the hook with AWS's shortest heartbeat timeout");
    stand_in.make_unhealthy("i-0a1b2c3d4e5f60718");
    let event = lifecycle_event_at(
        "lifecycle-hook-completer/eventbridge-launch-lifecycle-action.json",
        chrono::Utc::now() - chrono::Duration::seconds(28),
    );
    // Auto Scaling lets the action lapse 30 s after it began, 2 s from now, unless a heartbeat restarts it.
    let began = std::time::Instant::now()
        .checked_sub(std::time::Duration::from_secs(28))
        .unwrap();
    stand_in.lapses(
        "c613620e-07e2-4ed2-a9e2-ef8258911ade",
        began,
        std::time::Duration::from_secs(30),
    );
    let outcome = function.invoke(&event).response();
    assert_eq!(
        (outcome["result"].as_str(), outcome["completed"].as_bool()),
        (Some("ABANDON"), Some(true)),
        "the verdict came after the lapse: {outcome}"
    );
    assert!(outcome["heartbeats"].as_u64().unwrap_or(0) >= 1, "{outcome}");
    assert_eq!(
        stand_in.heartbeats().first().map(String::as_str),
        Some("i-0a1b2c3d4e5f60718")
    );
    assert_eq!(stand_in.completed().len(), 1);
}

/// The instance's SSM agent never registers (a broken agent, instance profile or VPC endpoint: fleet-wide, this
/// would abandon every new instance). That says nothing of the application: the action is completed with the hook's
/// own default result (the fixture's hook: CONTINUE), though ON_UNHEALTHY is ABANDON, and counted for the alarm;
/// ON_NOT_REGISTERED=ABANDON overrides it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn an_instance_that_never_registers_with_ssm_gets_the_hooks_default_result_and_is_counted() {
    let (aws, stand_in, mut function) = stack(FAST).await;
    stand_in.never_registers("i-0a1b2c3d4e5f60718");
    let outcome = function
        .invoke(&fresh_lifecycle_event(
            "lifecycle-hook-completer/eventbridge-launch-lifecycle-action.json",
        ))
        .response();
    assert_eq!(
        (outcome["result"].as_str(), outcome["completed"].as_bool()),
        (Some("CONTINUE"), Some(true)),
        "{outcome}"
    );
    let reason = outcome["reason"].as_str().unwrap();
    assert!(
        reason.contains("never registered with SSM") && reason.contains("DefaultResult"),
        "{reason}"
    );
    assert!(
        outcome["attempts"].as_u64().unwrap() >= 2,
        "checked until the deadline: {outcome}"
    );
    let output = function.output().join("\n");
    assert!(
        output.contains("\"InstancesNotRegistered\":1"),
        "the metric the alarm watches: {output}"
    );

    let mut settings = FAST.to_vec();
    settings.push(("ON_NOT_REGISTERED", "ABANDON"));
    let mut strict = FunctionProcess::start(Path::new(BINARY), &aws.function_env(&settings));
    stand_in.never_registers("i-0badc0ffee0d15ea5");
    let outcome = strict
        .invoke(&fresh_lifecycle_event(
            "lifecycle-hook-completer/sns-launch-lifecycle-action.json",
        ))
        .response();
    assert_eq!(
        (outcome["result"].as_str(), outcome["completed"].as_bool()),
        (Some("ABANDON"), Some(true)),
        "{outcome}"
    );
}

/// SSM throttles SendCommand and GetCommandInvocation beyond the SDK's own retries (a large scale-out): that is no
/// result yet, backed off with jitter, never a failed check; the healthy instance is continued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn ssm_throttling_past_the_sdks_retries_is_waited_out_and_the_instance_continued() {
    let (aws, stand_in, mut function) = stack(&[
        ("HEALTHCHECK_INTERVAL_SECONDS", "1"),
        ("HEALTHCHECK_DEADLINE_SECONDS", "40"),
    ])
    .await;
    let throttles = 3 * shared::aws::MAX_ATTEMPTS as usize;
    stand_in.throttle_ssm(throttles);
    let outcome = function
        .invoke(&fresh_lifecycle_event(
            "lifecycle-hook-completer/eventbridge-launch-lifecycle-action.json",
        ))
        .response();
    assert_eq!(
        (outcome["result"].as_str(), outcome["completed"].as_bool()),
        (Some("CONTINUE"), Some(true)),
        "{outcome}"
    );
    let ssm_calls = aws.proxy.calls_of("SendCommand").len() + aws.proxy.calls_of("GetCommandInvocation").len();
    assert!(
        ssm_calls > throttles,
        "every throttle was answered and the check went on: {ssm_calls} calls"
    );
}
