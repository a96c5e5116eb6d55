//! End to end: the built binary, run through the Lambda Runtime API against moto (an Auto Scaling group with
//! instances, the restriction parameter), on the sample events. Every PutParameter is counted through the
//! recording proxy.
//!
//! moto launches instances InService at once and has no `Pending*` lifecycle states, so the two "not settled yet"
//! moments of a scale-out (an instance still pending; the desired capacity raised before the new instance is listed)
//! are shown by the proxy rewriting moto's DescribeAutoScalingGroups answer. Everything else is moto's own state.

use std::path::Path;

use chrono::{DateTime, Utc};
use e2e_harness::fixtures::{
    create_worker_group, get_parameter, group_instances, put_parameter, sample_event, INITIAL_RESTRICTION,
    RESTRICTION_PARAMETER, WORKER_GROUP,
};
use e2e_harness::runtime::{FunctionProcess, Invocation};
use e2e_harness::LocalAws;
use serde_json::Value;

const BINARY: &str = env!("CARGO_BIN_EXE_alarm-instance-updater");
const MAX_SECONDS: i64 = 900;

struct Stack {
    aws: LocalAws,
    ssm: aws_sdk_ssm::Client,
    autoscaling: aws_sdk_autoscaling::Client,
    function: FunctionProcess,
}

async fn stack(settings: &[(&str, &str)]) -> Stack {
    let aws = LocalAws::start().await;
    let ssm = aws_sdk_ssm::Client::new(&aws.sdk);
    let autoscaling = aws_sdk_autoscaling::Client::new(&aws.sdk);
    create_worker_group(&autoscaling, WORKER_GROUP, 2).await;
    put_parameter(&ssm, RESTRICTION_PARAMETER, INITIAL_RESTRICTION).await;
    let mut all = vec![
        ("RESTRICTION_PARAMETER", RESTRICTION_PARAMETER),
        ("AUTOSCALING_GROUP_NAME", WORKER_GROUP),
    ];
    all.extend_from_slice(settings);
    let function = FunctionProcess::start(Path::new(BINARY), &aws.function_env(&all));
    Stack {
        aws,
        ssm,
        autoscaling,
        function,
    }
}

impl Stack {
    fn invoke(&mut self, event: &str) -> Value {
        self.function
            .invoke(&sample_event(&format!("alarm-instance-updater/{event}")))
            .response()
    }
    async fn parameter(&self) -> Value {
        get_parameter(&self.ssm, RESTRICTION_PARAMETER).await
    }
    fn writes(&self) -> usize {
        self.aws.proxy.calls_of("PutParameter").len()
    }
}

/// The moment after a scale-out raised the desired capacity, before the new instance is listed: moto launches at
/// once, so the proxy shows it (2 in service of 3 desired).
fn desired_capacity_raised(stack: &Stack) {
    stack.aws.proxy.rewrite_with(Some(Box::new(|call, body| {
        if call.operation == "DescribeAutoScalingGroups" {
            body.replace(
                "<DesiredCapacity>2</DesiredCapacity>",
                "<DesiredCapacity>3</DesiredCapacity>",
            )
        } else {
            body
        }
    })));
}

fn time(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().unwrap_or_else(|| panic!("not a time: {value}")))
        .unwrap()
        .with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restricts_on_alarm_and_lifts_only_once_the_group_has_settled() {
    let mut stack = stack(&[("RESTRICT_ON_ALARMS", "cpu_high"), ("RESTRICTION_MAX_SECONDS", "900")]).await;

    // ALARM -> restricted, expiring after RESTRICTION_MAX_SECONDS.
    let summary = stack.invoke("sns-alarm-cpu-high.json");
    assert_eq!(summary["written"], true, "{summary}");
    let first = stack.parameter().await;
    assert_eq!(first["restricted"], true);
    assert_eq!(first["alarm"], "cpu_high");
    assert_eq!(first["autoScalingGroup"], WORKER_GROUP);
    assert_eq!(
        (first["desiredCapacity"].as_u64(), first["inService"].as_u64()),
        (Some(2), Some(2))
    );
    let window = time(&first["expiresAt"]) - time(&first["since"]);
    assert_eq!(window.num_seconds(), MAX_SECONDS);
    assert_eq!(stack.writes(), 1);

    // A second ALARM (a real metric-math notification) a minute later -> one more write, the expiry later. Rather
    // than wait, the stored restriction is moved a minute into the past.
    let mut first = first;
    for field in ["since", "expiresAt"] {
        first[field] = Value::String(
            (time(&first[field]) - chrono::Duration::seconds(60)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        );
    }
    put_parameter(&stack.ssm, RESTRICTION_PARAMETER, &first.to_string()).await;
    stack.invoke("sns-alarm-cpu-high-metric-math.json");
    let second = stack.parameter().await;
    assert_eq!(stack.writes(), 2);
    assert!(
        time(&second["expiresAt"]) > time(&first["expiresAt"]),
        "expiry not pushed later: {first} -> {second}"
    );
    assert_eq!(second["since"], first["since"], "the same restriction goes on");

    // OK while an instance is still pending -> still restricted, nothing written.
    let instances = group_instances(&stack.autoscaling, WORKER_GROUP).await;
    let pending_instance = instances[0].clone();
    stack.aws.proxy.rewrite_with(Some(Box::new(move |call, body| {
        if call.operation != "DescribeAutoScalingGroups" {
            return body;
        }
        // Make the first instance of moto's answer Pending:Wait, as a launching instance held by its lifecycle hook.
        let marker = format!("<InstanceId>{pending_instance}</InstanceId>");
        match body.find(&marker) {
            Some(at) => {
                let (head, tail) = body.split_at(at);
                format!(
                    "{head}{}",
                    tail.replacen(
                        "<LifecycleState>InService</LifecycleState>",
                        "<LifecycleState>Pending:Wait</LifecycleState>",
                        1
                    )
                )
            }
            None => body,
        }
    })));
    // The OK is recorded (so a late ALARM or OK is ordered against it), and the feature stays restricted.
    let summary = stack.invoke("sns-ok-cpu-high.json");
    assert_eq!(summary["written"], true, "{summary}");
    assert!(
        summary["steps"][0]["why"].as_str().unwrap().contains("1 pending"),
        "{summary}"
    );
    let recorded = stack.parameter().await;
    assert_eq!(
        (recorded["restricted"].as_bool(), recorded["alarmState"].as_str()),
        (Some(true), Some("OK")),
        "{recorded}"
    );
    assert_eq!(recorded["alarmStateChangedAt"], "2026-11-21T10:09:00.000Z");
    let writes = stack.writes();
    stack.aws.proxy.rewrite_with(None);

    // A launch event right after the scale-out raised the desired capacity, before the new instance is listed:
    // fewer than desired in service -> still restricted. (moto launches at once, so the proxy shows that moment.)
    desired_capacity_raised(&stack);
    let summary = stack.invoke("eventbridge-launch-successful.json");
    assert_eq!(summary["written"], false, "{summary}");
    assert!(
        summary["steps"][0]["why"]
            .as_str()
            .unwrap()
            .contains("2 of 3 desired in service"),
        "{summary}"
    );
    assert_eq!(stack.writes(), writes, "no write while not settled");
    stack.aws.proxy.rewrite_with(None);

    // The OK delivered again changes nothing; the next launch result, the group settled (moto's own answer: every
    // instance InService) -> lifted.
    assert_eq!(stack.invoke("sns-ok-cpu-high.json")["written"], false);
    let summary = stack.invoke("eventbridge-launch-successful.json");
    assert_eq!(summary["written"], true, "{summary}");
    let lifted = stack.parameter().await;
    assert_eq!(lifted["restricted"], false);
    assert!(lifted.get("expiresAt").is_none() && lifted.get("alarm").is_none());
    assert_eq!(lifted["inService"], 2);

    // OK again, INSUFFICIENT_DATA and a test notification: nothing to change, nothing written.
    let writes = stack.writes();
    stack.invoke("sns-ok-cpu-high.json");
    stack.invoke("direct-alarm-insufficient-data.json");
    stack.invoke("sns-asg-test-notification.json");
    assert_eq!(stack.writes(), writes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn alarms_outside_restrict_on_alarms_are_ignored() {
    let mut stack = stack(&[("RESTRICT_ON_ALARMS", "cpu_high")]).await;
    let summary = stack.invoke("sns-alarm-disk-full.json");
    assert_eq!(summary["written"], false);
    assert!(summary["steps"][0]["why"]
        .as_str()
        .unwrap()
        .contains("not in RESTRICT_ON_ALARMS"));
    assert_eq!(stack.parameter().await["restricted"], false);
    assert_eq!(stack.writes(), 0);
    assert_eq!(
        stack.aws.proxy.calls_of("DescribeAutoScalingGroups").len(),
        0,
        "no group lookup for a decision that needs none"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn an_expired_restriction_is_lifted_by_any_event() {
    let mut stack = stack(&[]).await;
    let expired = r#"{"restricted":true,"reason":"alarm cpu_high in ALARM","since":"2026-11-21T09:00:00Z","expiresAt":"2026-11-21T09:15:00Z","alarm":"cpu_high","autoScalingGroup":"workers","desiredCapacity":3,"inService":2}"#;
    put_parameter(&stack.ssm, RESTRICTION_PARAMETER, expired).await;
    let summary = stack.invoke("direct-alarm-insufficient-data.json");
    assert_eq!(summary["written"], true, "{summary}");
    assert_eq!(summary["before"]["restricted"], true);
    assert_eq!(summary["after"]["restricted"], false);
    let lifted = stack.parameter().await;
    assert_eq!(lifted["restricted"], false);
    assert!(lifted["reason"]
        .as_str()
        .unwrap()
        .contains("expired at 2026-11-21T09:15:00Z"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrecognised_input_fails_the_invocation_with_a_clear_error() {
    let mut stack = stack(&[]).await;
    match stack.function.invoke(&serde_json::json!({"hello": "world"})) {
        Invocation::Error(error) => {
            assert!(
                error["errorMessage"].as_str().unwrap().contains("unrecognised event"),
                "{error}"
            );
            // What failure destinations and CloudWatch show: a name, not a Rust type.
            assert_eq!(error["errorType"], "MalformedEvent", "{error}");
        }
        Invocation::Response(response) => panic!("expected an error, got {response}"),
    }
    assert_eq!(stack.writes(), 0);
}

/// The template's policy with `ssm:PutParameter` taken out: the invocation fails naming the denial (Lambda then
/// retries the asynchronous event), the feature stays as it was, and the retry restricts once the policy is whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn without_ssm_put_parameter_in_its_policy_the_invocation_fails_naming_access_denied() {
    let mut stack = stack(&[("RESTRICT_ON_ALARMS", "cpu_high")]).await;
    stack.aws.proxy.revoke("alarm-instance-updater", "ssm:PutParameter");
    let event = sample_event("alarm-instance-updater/sns-alarm-cpu-high.json");
    match stack.function.invoke(&event) {
        Invocation::Error(error) => {
            let message = error["errorMessage"].as_str().unwrap_or_default();
            assert!(
                message.contains("AccessDenied") && message.contains("ssm:PutParameter"),
                "{error}"
            );
        }
        Invocation::Response(response) => panic!("a restriction that was never written reported as done: {response}"),
    }
    assert_eq!(stack.parameter().await["restricted"], false);
    let denials = stack.aws.proxy.take_denials();
    assert!(
        !denials.is_empty() && denials.iter().all(|d| d.operation == "PutParameter"),
        "{denials:?}"
    );

    stack.aws.proxy.restore("alarm-instance-updater");
    assert_eq!(stack.function.invoke(&event).response()["written"], true);
    assert_eq!(stack.parameter().await["restricted"], true);
}

/// Two instances handle the same alarm at once (SNS delivers at least once, Lambda runs them side by side) under
/// SSM's one update at a time per parameter: the one refused with TooManyUpdates reads, decides and writes again,
/// and both invocations succeed with the feature restricted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn two_instances_writing_the_parameter_at_once_both_succeed_after_too_many_updates() {
    let mut stack = stack(&[("RESTRICT_ON_ALARMS", "cpu_high")]).await;
    stack.aws.proxy.enforce_quotas(Some(e2e_harness::quotas::Quotas::aws()));
    let env = stack.aws.function_env(&[
        ("RESTRICTION_PARAMETER", RESTRICTION_PARAMETER),
        ("AUTOSCALING_GROUP_NAME", WORKER_GROUP),
        ("RESTRICT_ON_ALARMS", "cpu_high"),
    ]);
    let mut second = FunctionProcess::start(Path::new(BINARY), &env);
    let event = sample_event("alarm-instance-updater/sns-alarm-cpu-high.json");
    let mut contended = 0;
    for _ in 0..5 {
        put_parameter(&stack.ssm, RESTRICTION_PARAMETER, INITIAL_RESTRICTION).await;
        let (first, other) = tokio::task::block_in_place(|| {
            std::thread::scope(|scope| {
                let one = scope.spawn(|| stack.function.invoke(&event));
                let two = scope.spawn(|| second.invoke(&event));
                (one.join().unwrap(), two.join().unwrap())
            })
        });
        for outcome in [first, other] {
            assert!(matches!(outcome, Invocation::Response(_)), "{outcome:?}");
        }
        assert_eq!(stack.parameter().await["restricted"], true);
        contended = stack
            .aws
            .proxy
            .refusals()
            .iter()
            .filter(|(_, r)| r.code == "TooManyUpdates")
            .count();
        if contended > 0 {
            break;
        }
    }
    assert!(
        contended > 0,
        "the two writes never met: the test did not cross the limit"
    );
    assert!(second
        .output()
        .iter()
        .chain(stack.function.output().iter())
        .any(|l| l.contains("deciding again")));
}

/// An alarm's reason may be 1,023 characters, twice that JSON-escaped: the restriction still fits SSM's 4 KB
/// standard parameter, which the proxy enforces as SSM does (the unit test of `to_json` covers a reason that
/// would not fit and is shortened).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn the_longest_alarm_reason_is_written_within_ssms_four_kilobytes() {
    let mut stack = stack(&[("RESTRICT_ON_ALARMS", "cpu_high")]).await;
    let mut event = sample_event("alarm-instance-updater/sns-alarm-cpu-high.json");
    let mut alarm: Value = serde_json::from_str(event["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap();
    alarm["NewStateReason"] = Value::String("\"\\".repeat(511) + "!");
    event["Records"][0]["Sns"]["Message"] = Value::String(alarm.to_string());
    let summary = stack.function.invoke(&event).response();
    assert_eq!(summary["written"], true, "{summary}");
    let stored = stack.parameter().await;
    assert_eq!(stored["restricted"], true);
    assert!(
        stored["reason"].as_str().unwrap().ends_with('!'),
        "the whole reason is kept: {stored}"
    );
    assert!(
        stack.aws.proxy.refusals().is_empty(),
        "{:?}",
        stack.aws.proxy.refusals()
    );
}

/// The sample alarm notification of cpu_high in `state`, with its `StateChangeTime` at `changed_at`.
fn alarm_event(state: &str, changed_at: DateTime<Utc>) -> Value {
    let mut event = sample_event("alarm-instance-updater/sns-alarm-cpu-high.json");
    let mut alarm: Value = serde_json::from_str(event["Records"][0]["Sns"]["Message"].as_str().unwrap()).unwrap();
    alarm["NewStateValue"] = Value::String(state.to_owned());
    alarm["OldStateValue"] = Value::String(if state == "OK" { "ALARM" } else { "OK" }.to_owned());
    alarm["StateChangeTime"] = Value::String(changed_at.format("%Y-%m-%dT%H:%M:%S%.3f%z").to_string());
    event["Records"][0]["Sns"]["Message"] = Value::String(alarm.to_string());
    event
}

/// SNS delivers in no order and again: an OK older than the ALARM applied does not lift, the ALARM delivered again
/// pushes nothing, and only the OK that came after it (here with the group settled) lifts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn alarm_notifications_apply_in_the_order_of_their_state_change_time() {
    let mut stack = stack(&[("RESTRICT_ON_ALARMS", "cpu_high")]).await;
    let t0 = Utc::now() - chrono::Duration::seconds(60);
    assert_eq!(
        stack.function.invoke(&alarm_event("ALARM", t0)).response()["written"],
        true
    );
    let late_ok = stack
        .function
        .invoke(&alarm_event("OK", t0 - chrono::Duration::seconds(30)))
        .response();
    assert_eq!(late_ok["written"], false, "{late_ok}");
    assert!(
        late_ok["steps"][0]["why"]
            .as_str()
            .unwrap()
            .contains("late or repeated"),
        "{late_ok}"
    );
    assert_eq!(stack.parameter().await["restricted"], true);
    let writes = stack.writes();
    assert_eq!(
        stack.function.invoke(&alarm_event("ALARM", t0)).response()["written"],
        false,
        "a redelivered ALARM"
    );
    assert_eq!(stack.writes(), writes);
    assert_eq!(
        stack
            .function
            .invoke(&alarm_event("OK", t0 + chrono::Duration::seconds(30)))
            .response()["written"],
        true
    );
    assert_eq!(stack.parameter().await["restricted"], false);
    // The old ALARM redelivered after the lift does not restrict again.
    assert_eq!(
        stack.function.invoke(&alarm_event("ALARM", t0)).response()["written"],
        false
    );
    assert_eq!(stack.parameter().await["restricted"], false);
}

/// The alarm's OK (older, the group settled: it lifts) and its next ALARM run at once in two instances, under SSM's
/// one update at a time. The group lookup takes 600 ms (the proxy holds moto's answer) and the OK starts 300 ms
/// after the ALARM, so both read the same version and the stale lift lands 300 ms after the fresh restriction,
/// past SSM's TooManyUpdates: the lost update SSM's PutParameter (no condition) allows. The version the lift got
/// shows it overwrote another writer; it decides again from that version, and the feature ends restricted, as the
/// newer ALARM says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_stale_lift_landing_after_a_fresh_restriction_is_undone() {
    let mut stack = stack(&[("RESTRICT_ON_ALARMS", "cpu_high")]).await;
    stack.aws.proxy.enforce_quotas(Some(e2e_harness::quotas::Quotas::aws()));
    stack.aws.proxy.rewrite_with(Some(Box::new(|call, body| {
        if call.operation == "DescribeAutoScalingGroups" {
            std::thread::sleep(std::time::Duration::from_millis(600));
        }
        body
    })));
    let env = stack.aws.function_env(&[
        ("RESTRICTION_PARAMETER", RESTRICTION_PARAMETER),
        ("AUTOSCALING_GROUP_NAME", WORKER_GROUP),
        ("RESTRICT_ON_ALARMS", "cpu_high"),
    ]);
    let mut second = FunctionProcess::start(Path::new(BINARY), &env);
    let base = Utc::now() - chrono::Duration::seconds(3600);
    for round in 0..3i64 {
        let t = base + chrono::Duration::seconds(100 * round);
        // Restricted by the ALARM at t; then OK at t+10 (lifts: the group is settled) and ALARM again at t+20.
        assert_eq!(
            stack.function.invoke(&alarm_event("ALARM", t)).response()["written"],
            true,
            "round {round}"
        );
        let (ok, alarm) = (
            alarm_event("OK", t + chrono::Duration::seconds(10)),
            alarm_event("ALARM", t + chrono::Duration::seconds(20)),
        );
        let (lift, restrict) = tokio::task::block_in_place(|| {
            std::thread::scope(|scope| {
                let restrict = scope.spawn(|| second.invoke(&alarm));
                std::thread::sleep(std::time::Duration::from_millis(300));
                let lift = scope.spawn(|| stack.function.invoke(&ok));
                (lift.join().unwrap(), restrict.join().unwrap())
            })
        });
        for outcome in [&lift, &restrict] {
            assert!(matches!(outcome, Invocation::Response(_)), "round {round}: {outcome:?}");
        }
        let stored = stack.parameter().await;
        assert_eq!(
            (stored["restricted"].as_bool(), stored["alarmState"].as_str()),
            (Some(true), Some("ALARM")),
            "round {round}: {stored}\n{}\n{}",
            stack.function.output().join("\n"),
            second.output().join("\n")
        );
    }
    let overtaken = stack
        .function
        .output()
        .iter()
        .filter(|l| l.contains("another writer wrote after our read"))
        .count();
    assert!(
        overtaken > 0,
        "the lift never landed after the restriction: the test did not cross the race"
    );
}

/// A scale-out longer than RESTRICTION_MAX_SECONDS: the restriction has lapsed while an instance is still pending
/// and the alarm is still in ALARM (the parameter records its last transition), so the launch result renews it
/// instead of letting the heavy feature back in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "slow: end to end; plain cargo test keeps one per file, tests/test.sh runs them all"]
async fn a_launch_during_a_long_scale_out_renews_a_lapsed_restriction() {
    let mut stack = stack(&[("RESTRICT_ON_ALARMS", "cpu_high")]).await;
    let lapsed = r#"{"restricted":true,"reason":"alarm cpu_high in ALARM","since":"2026-11-21T09:00:00Z","expiresAt":"2026-11-21T09:15:00Z","alarm":"cpu_high","autoScalingGroup":"workers","desiredCapacity":3,"inService":2,"alarmState":"ALARM","alarmStateChangedAt":"2026-11-21T09:00:00.000Z"}"#;
    put_parameter(&stack.ssm, RESTRICTION_PARAMETER, lapsed).await;
    desired_capacity_raised(&stack);
    let summary = stack.invoke("eventbridge-launch-successful.json");
    assert_eq!(summary["written"], true, "{summary}");
    assert!(
        summary["steps"][0]["why"].as_str().unwrap().contains("renewed"),
        "{summary}"
    );
    let renewed = stack.parameter().await;
    assert_eq!(renewed["restricted"], true);
    assert!(
        time(&renewed["expiresAt"]) > Utc::now() + chrono::Duration::seconds(MAX_SECONDS - 60),
        "{renewed}"
    );

    // Settled: the next launch result lifts it.
    stack.aws.proxy.rewrite_with(None);
    assert_eq!(stack.invoke("eventbridge-launch-successful.json")["written"], true);
    assert_eq!(stack.parameter().await["restricted"], false);
}
