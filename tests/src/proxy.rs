//! A recording proxy in front of moto: it records every AWS call (operation and body) so tests can assert what a
//! function called, not only the state it left. Two hooks, settable at any time, cover what moto cannot do: a
//! responder answers calls itself (calls moto lacks, or a failure to inject), and a rewriter changes moto's answer
//! (a state moto cannot model). Tests that use them say so.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Debug, Clone)]
pub struct Call {
    /// The operation: from `X-Amz-Target` (JSON protocols) or the `Action` form field (query protocols).
    pub operation: String,
    pub body: String,
}

/// A response the proxy gives instead of forwarding.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

type Responder = dyn Fn(&Call) -> Option<Reply> + Send + Sync;
type Rewriter = dyn Fn(&Call, String) -> String + Send + Sync;

#[derive(Default)]
struct Hooks {
    responder: Option<Arc<Responder>>,
    rewriter: Option<Arc<Rewriter>>,
}

/// A call the function's template policy did not allow (see [`crate::iam`]).
#[derive(Debug, Clone)]
pub struct Denial {
    pub function: String,
    pub operation: String,
    /// AWS's message, naming the action and the resource.
    pub message: String,
}

#[derive(Default)]
struct IamState {
    /// Per function binary, actions taken out of its policy by a test.
    revoked: HashMap<String, Vec<String>>,
    instance_groups: crate::iam::InstanceGroups,
    denials: Vec<Denial>,
    quotas: crate::quotas::QuotaState,
}

pub struct RecordingProxy {
    pub endpoint: String,
    calls: Arc<Mutex<Vec<Call>>>,
    hooks: Arc<Mutex<Hooks>>,
    iam: Arc<Mutex<IamState>>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

fn operation_of(request: &tiny_http::Request, body: &str) -> String {
    if let Some(target) = request.headers().iter().find(|h| h.field.equiv("X-Amz-Target")) {
        let target = target.value.as_str();
        return target.rsplit('.').next().unwrap_or(target).to_owned();
    }
    body.split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{} {}", request.method(), request.url()))
}

impl Call {
    /// The fields of a form-encoded (query protocol) request body, decoded.
    pub fn form(&self) -> std::collections::HashMap<String, String> {
        form_fields(&self.body).into_iter().collect()
    }
}

/// The fields of a form-encoded body, decoded, in order.
pub fn form_fields(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 2;
            }
            (byte, _) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl RecordingProxy {
    pub fn start(upstream: &str) -> Self {
        let server =
            Arc::new(tiny_http::Server::from_listener(crate::no_delay_listener(), None).expect("proxy listens"));
        let port = server.server_addr().to_ip().expect("an IP address").port();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let hooks = Arc::new(Mutex::new(Hooks::default()));
        let iam = Arc::new(Mutex::new(IamState::default()));
        let upstream = upstream.trim_end_matches('/').to_owned();
        let (server2, calls2, hooks2, iam2) = (server.clone(), calls.clone(), hooks.clone(), iam.clone());
        let thread = std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new().build();
            for request in server2.incoming_requests() {
                let (agent, calls, hooks, iam, upstream) = (
                    agent.clone(),
                    calls2.clone(),
                    hooks2.clone(),
                    iam2.clone(),
                    upstream.clone(),
                );
                std::thread::spawn(move || forward(request, &agent, &calls, &hooks, &iam, &upstream));
            }
        });
        RecordingProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            calls,
            hooks,
            iam,
            server,
            thread: Some(thread),
        }
    }

    /// Takes `action` (e.g. `ses:SendRawEmail`) out of the policy of every `function` process: what its calls meet
    /// with that line deleted from the template.
    pub fn revoke(&self, function: &str, action: &str) {
        self.iam
            .lock()
            .unwrap()
            .revoked
            .entry(function.to_owned())
            .or_default()
            .push(action.to_owned());
    }

    /// Gives `function` its template policy back, whole.
    pub fn restore(&self, function: &str) {
        self.iam.lock().unwrap().revoked.remove(function);
    }

    /// Says that these instances belong to Auto Scaling group `group`, as its `aws:autoscaling:groupName` tag does:
    /// the condition lifecycle-hook-completer's SendCommand permission reads.
    pub fn place_instances(&self, group: &str, instances: &[&str]) {
        let mut iam = self.iam.lock().unwrap();
        for instance in instances {
            iam.instance_groups.insert(instance.to_string(), group.to_owned());
        }
    }

    /// Switches AWS's rate quotas on (or off with `None`) for the calls of function processes; the services' size
    /// limits are always on.
    pub fn enforce_quotas(&self, quotas: Option<crate::quotas::Quotas>) {
        self.iam.lock().unwrap().quotas.enforce(quotas);
    }

    /// A new SES day: the 24-hour count starts again from zero (the local day is otherwise the proxy's life).
    pub fn start_new_ses_day(&self) {
        self.iam.lock().unwrap().quotas.start_new_day();
    }

    /// The calls refused for a quota or a limit so far: (function, AWS's answer).
    pub fn refusals(&self) -> Vec<(String, crate::quotas::Refusal)> {
        self.iam.lock().unwrap().quotas.refusals.clone()
    }

    /// The calls denied so far, which the proxy then forgets. A proxy dropped with denials no test took fails.
    pub fn take_denials(&self) -> Vec<Denial> {
        std::mem::take(&mut self.iam.lock().unwrap().denials)
    }

    /// Answers the calls for which `responder` returns a reply, instead of moto.
    pub fn respond_with(&self, responder: impl Fn(&Call) -> Option<Reply> + Send + Sync + 'static) {
        self.hooks.lock().unwrap().responder = Some(Arc::new(responder));
    }

    /// Passes moto's answers (bodies) through `rewriter`; `None` stops rewriting.
    pub fn rewrite_with(&self, rewriter: Option<Box<Rewriter>>) {
        self.hooks.lock().unwrap().rewriter = rewriter.map(Arc::from);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Calls of one operation, e.g. `AdminUpdateUserAttributes`.
    pub fn calls_of(&self, operation: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.operation == operation).collect()
    }
}

/// A call's signer, when it is a function process under its template policy.
struct Signer {
    policy: Arc<crate::iam::FunctionPolicy>,
    service: String,
    json_protocol: bool,
}

impl Signer {
    fn of(request: &tiny_http::Request) -> Option<Signer> {
        let authorization = request.headers().iter().find(|h| h.field.equiv("Authorization"))?;
        let (key, service) = crate::iam::credential_of(authorization.value.as_str())?;
        let json_protocol = request.headers().iter().any(|h| h.field.equiv("X-Amz-Target"));
        Some(Signer {
            policy: crate::iam::policy_for(&key)?,
            service,
            json_protocol,
        })
    }

    /// `Err` with AWS's denial answer when any of `requests` is not allowed; each allowing statement is recorded.
    fn authorize(
        &self,
        call: &Call,
        requests: Result<Vec<crate::iam::Request>, String>,
        iam: &Mutex<IamState>,
    ) -> Result<(), tiny_http::Response<std::io::Cursor<Vec<u8>>>> {
        let function = &self.policy.function;
        let mut iam = iam.lock().unwrap();
        let revoked = iam.revoked.get(function).cloned().unwrap_or_default();
        let denied = match requests {
            Err(reason) => Some(format!(
                "User: {function} is not authorized to perform {}: {reason}",
                call.operation
            )),
            Ok(requests) => requests
                .iter()
                .find_map(|request| match self.policy.evaluate(request, &revoked) {
                    crate::iam::Decision::Allowed(sid) => {
                        crate::iam::record_exercised(function, &sid, &request.action);
                        None
                    }
                    crate::iam::Decision::Denied(reason) => {
                        Some(crate::iam::denial_message(function, request, &reason))
                    }
                }),
        };
        let Some(message) = denied else { return Ok(()) };
        iam.denials.push(Denial {
            function: function.clone(),
            operation: call.operation.clone(),
            message: message.clone(),
        });
        Err(error_response(
            crate::iam::access_denied(&self.service, self.json_protocol, &message),
            None,
        ))
    }

    /// `Err` with AWS's answer when the call is over a service limit or a quota switched on; otherwise the call is
    /// counted against them. SES's `GetSendQuota` is answered here when the quotas are on, so a function paces
    /// itself by the rate it is held to.
    fn admit(&self, call: &Call, iam: &Mutex<IamState>) -> Admission {
        let mut iam = iam.lock().unwrap();
        if self.service == "ses" && call.operation == "GetSendQuota" {
            if let Some(body) = iam.quotas.send_quota() {
                return Admission::Answered(
                    tiny_http::Response::from_string(body)
                        .with_header(tiny_http::Header::from_bytes("Content-Type", "text/xml").unwrap()),
                );
            }
        }
        match iam
            .quotas
            .admit(&self.policy.function, &self.service, &call.operation, &call.body)
        {
            None => Admission::Forward,
            Some(refusal) => {
                let answer =
                    crate::iam::service_error(self.json_protocol, refusal.status, &refusal.code, &refusal.message);
                Admission::Refused(error_response(answer, refusal.query_code.as_deref()))
            }
        }
    }
}

enum Admission {
    Forward,
    /// Answered by the proxy itself (a call, recorded as one).
    Answered(tiny_http::Response<std::io::Cursor<Vec<u8>>>),
    Refused(tiny_http::Response<std::io::Cursor<Vec<u8>>>),
}

/// AWS's error answer, with the headers the JSON protocols read the error's code from.
fn error_response(
    (status, content_type, body, error_type): (u16, &'static str, String, Option<String>),
    query_code: Option<&str>,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let mut response = tiny_http::Response::from_string(body)
        .with_status_code(status)
        .with_header(tiny_http::Header::from_bytes("Content-Type", content_type).unwrap());
    if let Some(error_type) = error_type {
        let query_code = query_code.unwrap_or(&error_type).to_owned();
        response.add_header(tiny_http::Header::from_bytes("x-amzn-ErrorType", error_type.as_bytes()).unwrap());
        response.add_header(
            tiny_http::Header::from_bytes("x-amzn-query-error", format!("{query_code};Sender").as_bytes()).unwrap(),
        );
    }
    response
}

fn forward(
    mut request: tiny_http::Request,
    agent: &ureq::Agent,
    calls: &Mutex<Vec<Call>>,
    hooks: &Mutex<Hooks>,
    iam: &Mutex<IamState>,
    upstream: &str,
) {
    let mut body = Vec::new();
    let _ = request.as_reader().read_to_end(&mut body);
    let text = String::from_utf8_lossy(&body).into_owned();
    let call = Call {
        operation: operation_of(&request, &text),
        body: text,
    };
    let signer = Signer::of(&request);
    if let Some(signer) = &signer {
        let form = if signer.json_protocol {
            HashMap::new()
        } else {
            call.form()
        };
        let instances = iam.lock().unwrap().instance_groups.clone();
        let requests = crate::iam::requests_of(&signer.service, &call.operation, &call.body, &form, &instances);
        // A denied or refused call does nothing at the service: it is among the denials or refusals, not the calls.
        if let Err(denied) = signer.authorize(&call, requests, iam) {
            let _ = request.respond(denied);
            return;
        }
        match signer.admit(&call, iam) {
            Admission::Forward => {}
            Admission::Answered(answer) => {
                calls.lock().unwrap().push(call.clone());
                let _ = request.respond(answer);
                return;
            }
            Admission::Refused(refused) => {
                let _ = request.respond(refused);
                return;
            }
        }
    }
    calls.lock().unwrap().push(call.clone());
    let (responder, rewriter) = {
        let hooks = hooks.lock().unwrap();
        (hooks.responder.clone(), hooks.rewriter.clone())
    };
    if let Some(reply) = responder.and_then(|responder| responder(&call)) {
        let response = tiny_http::Response::from_string(reply.body)
            .with_status_code(reply.status)
            .with_header(tiny_http::Header::from_bytes("Content-Type", reply.content_type).unwrap());
        let _ = request.respond(response);
        return;
    }
    let mut upstream_request = agent.request(request.method().as_str(), &format!("{upstream}{}", request.url()));
    for header in request.headers() {
        let name = header.field.as_str().as_str();
        if !name.eq_ignore_ascii_case("host") && !name.eq_ignore_ascii_case("content-length") {
            upstream_request = upstream_request.set(name, header.value.as_str());
        }
    }
    let response = match upstream_request.send_bytes(&body) {
        Ok(response) | Err(ureq::Error::Status(_, response)) => response,
        Err(error) => {
            let _ = request.respond(tiny_http::Response::from_string(error.to_string()).with_status_code(502));
            return;
        }
    };
    let status = response.status();
    let headers: Vec<tiny_http::Header> = response
        .headers_names()
        .iter()
        .filter(|name| {
            !["content-length", "transfer-encoding", "connection"].contains(&name.to_ascii_lowercase().as_str())
        })
        .filter_map(|name| tiny_http::Header::from_bytes(name.as_bytes(), response.header(name)?.as_bytes()).ok())
        .collect();
    let mut response_body = Vec::new();
    let _ = response.into_reader().read_to_end(&mut response_body);
    // Decrypting a SecureString is a second authorization, of kms:Decrypt through SSM.
    if let Some(signer) = signer
        .as_ref()
        .filter(|s| s.service == "ssm" && call.operation.starts_with("GetParameter"))
    {
        let decrypts = serde_json::from_str::<serde_json::Value>(&call.body).is_ok_and(|b| b["WithDecryption"] == true);
        if decrypts && String::from_utf8_lossy(&response_body).contains("\"SecureString\"") {
            if let Err(denied) = signer.authorize(&call, Ok(vec![crate::iam::decrypt_request()]), iam) {
                let _ = request.respond(denied);
                return;
            }
        }
    }
    if let Some(rewriter) = rewriter {
        response_body = rewriter(&call, String::from_utf8_lossy(&response_body).into_owned()).into_bytes();
    }
    let mut reply = tiny_http::Response::from_data(response_body).with_status_code(status);
    for header in headers {
        reply.add_header(header);
    }
    let _ = request.respond(reply);
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Every test and the main job fail on a denial nobody expected (took), even one a function tolerated.
        let denials = self.take_denials();
        if !denials.is_empty() && !std::thread::panicking() {
            panic!(
                "calls denied by the functions' policies in infra/template.yaml:\n{}",
                denials
                    .iter()
                    .map(|d| format!("  {}: {}", d.operation, d.message))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_form_values() {
        assert_eq!(
            super::percent_decode("a%40b.co+%3Cscript%3E%zz%"),
            "a@b.co <script>%zz%"
        );
        assert_eq!(super::percent_decode("%C3%A9"), "é");
    }
}
