//! What moto lacks for lifecycle hooks, answered by the recording proxy in front of it: `CompleteLifecycleAction`
//! and `RecordLifecycleActionHeartbeat` (recorded for assertions, with Auto Scaling's "No active Lifecycle Action"
//! for an action completed or lapsed before), and what moto's SSM cannot do: a failed health check command for
//! chosen instances (moto's SSM commands always succeed), an instance that never registers, SSM throttling. The
//! instances of the sample events are placed in the harness's worker group, as Auto Scaling
//! tags its instances: lifecycle-hook-completer may send commands only to instances of its group.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use crate::proxy::{Call, RecordingProxy, Reply};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletedAction {
    pub instance_id: String,
    pub token: String,
    pub result: String,
}

#[derive(Default)]
struct State {
    completed: Vec<CompletedAction>,
    heartbeats: Vec<String>,
    unhealthy: HashSet<String>,
    /// Instances whose SSM agent never registers: SendCommand answers `InvalidInstanceId`.
    unregistered: HashSet<String>,
    /// SSM calls (SendCommand, GetCommandInvocation) still to answer with `ThrottlingException`.
    ssm_throttles: usize,
    /// Actions (by token) that lapse, as Auto Scaling lets them: when, and the heartbeat timeout that a heartbeat
    /// restarts.
    lapses: std::collections::HashMap<String, (std::time::Instant, std::time::Duration)>,
}

#[derive(Clone, Default)]
pub struct LifecycleStandIn {
    state: Arc<Mutex<State>>,
}

/// The instances the sample events under `events/lifecycle-hook-completer/` launch.
pub const SAMPLE_INSTANCES: &[&str] = &["i-0a1b2c3d4e5f60718", "i-0badc0ffee0d15ea5", "i-0f00dfeed0000beef"];

const XMLNS: &str = "http://autoscaling.amazonaws.com/doc/2011-01-01/";

fn xml_ok(operation: &str) -> Reply {
    Reply {
        status: 200,
        content_type: "text/xml",
        body: format!(
            "<{operation}Response xmlns=\"{XMLNS}\"><{operation}Result/><ResponseMetadata><RequestId>00000000-0000-4000-8000-000000000000</RequestId></ResponseMetadata></{operation}Response>"
        ),
    }
}

fn no_active_action(instance: &str) -> Reply {
    Reply {
        status: 400,
        content_type: "text/xml",
        body: format!(
            "<ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>Sender</Type><Code>ValidationError</Code><Message>No active Lifecycle Action found with instance ID {instance}</Message></Error><RequestId>00000000-0000-4000-8000-000000000001</RequestId></ErrorResponse>"
        ),
    }
}

fn ssm_error(code: &str, message: &str) -> Reply {
    Reply {
        status: 400,
        content_type: "application/x-amz-json-1.1",
        body: serde_json::json!({"__type": code, "message": message}).to_string(),
    }
}

impl LifecycleStandIn {
    /// Installs the stand-in on `proxy` (replacing any responder it had).
    pub fn install(proxy: &RecordingProxy) -> LifecycleStandIn {
        proxy.place_instances(crate::fixtures::WORKER_GROUP, SAMPLE_INSTANCES);
        let stand_in = LifecycleStandIn::default();
        let state = stand_in.state.clone();
        proxy.respond_with(move |call| answer(&state, call));
        stand_in
    }

    /// From now on the health check command of `instance_id` fails, as when its application does not answer.
    pub fn make_unhealthy(&self, instance_id: &str) {
        self.state.lock().unwrap().unhealthy.insert(instance_id.to_owned());
    }

    /// From now on `instance_id` never registers with SSM (a broken agent, instance profile or VPC endpoint).
    pub fn never_registers(&self, instance_id: &str) {
        self.state.lock().unwrap().unregistered.insert(instance_id.to_owned());
    }

    /// The next `calls` SSM calls are throttled, as SSM answers above its rate.
    pub fn throttle_ssm(&self, calls: usize) {
        self.state.lock().unwrap().ssm_throttles = calls;
    }

    /// The action of `token` lapses `timeout` after `started` unless a heartbeat restarts it; after that both calls
    /// answer "No active Lifecycle Action", as Auto Scaling does once it has applied the hook's default result.
    pub fn lapses(&self, token: &str, started: std::time::Instant, timeout: std::time::Duration) {
        self.state
            .lock()
            .unwrap()
            .lapses
            .insert(token.to_owned(), (started + timeout, timeout));
    }

    pub fn completed(&self) -> Vec<CompletedAction> {
        self.state.lock().unwrap().completed.clone()
    }

    pub fn heartbeats(&self) -> Vec<String> {
        self.state.lock().unwrap().heartbeats.clone()
    }
}

fn answer(state: &Mutex<State>, call: &Call) -> Option<Reply> {
    match call.operation.as_str() {
        operation @ ("CompleteLifecycleAction" | "RecordLifecycleActionHeartbeat") => {
            let form = call.form();
            let instance = form.get("InstanceId").cloned().unwrap_or_default();
            let token = form.get("LifecycleActionToken").cloned().unwrap_or_default();
            let mut state = state.lock().unwrap();
            // Auto Scaling forgets an action once it is completed or lapsed: both calls then fail the same way.
            let lapsed = state
                .lapses
                .get(&token)
                .is_some_and(|(at, _)| std::time::Instant::now() >= *at);
            if lapsed || state.completed.iter().any(|c| c.token == token) {
                return Some(no_active_action(&instance));
            }
            if let Some((at, timeout)) = state
                .lapses
                .get_mut(&token)
                .filter(|_| operation == "RecordLifecycleActionHeartbeat")
            {
                *at = std::time::Instant::now() + *timeout;
            }
            if operation == "CompleteLifecycleAction" {
                let result = form.get("LifecycleActionResult").cloned().unwrap_or_default();
                state.completed.push(CompletedAction {
                    instance_id: instance,
                    token,
                    result,
                });
            } else {
                state.heartbeats.push(instance);
            }
            Some(xml_ok(operation))
        }
        "SendCommand" | "GetCommandInvocation" if state.lock().unwrap().ssm_throttles > 0 => {
            state.lock().unwrap().ssm_throttles -= 1;
            Some(ssm_error("ThrottlingException", "Rate exceeded"))
        }
        "SendCommand" => {
            let request: serde_json::Value = serde_json::from_str(&call.body).ok()?;
            let instance = request["InstanceIds"][0].as_str()?;
            state
                .lock()
                .unwrap()
                .unregistered
                .contains(instance)
                .then(|| ssm_error("InvalidInstanceId", "Instances not in a valid state for account"))
        }
        "GetCommandInvocation" => {
            let request: serde_json::Value = serde_json::from_str(&call.body).ok()?;
            let instance = request["InstanceId"].as_str()?;
            if !state.lock().unwrap().unhealthy.contains(instance) {
                return None;
            }
            let body = serde_json::json!({
                "CommandId": request["CommandId"], "InstanceId": instance, "DocumentName": "AWS-RunShellScript",
                "Status": "Failed", "StatusDetails": "Failed", "ResponseCode": 7,
                "StandardOutputContent": "", "StandardErrorContent": "curl: (7) Failed to connect to localhost port 8000 after 0 ms: Connection refused"
            });
            Some(Reply {
                status: 200,
                content_type: "application/x-amz-json-1.1",
                body: body.to_string(),
            })
        }
        _ => None,
    }
}
