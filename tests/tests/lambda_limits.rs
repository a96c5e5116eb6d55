//! The emulator holds function processes to Lambda's limits, shown on a stand-in function (`lambda-probe`) that
//! does exactly what each event asks: a late answer is thrown away and the process replaced, a response over 6 MB
//! is refused, 1,024 file descriptors, and the memory size where the kernel lets the harness cap it.

use std::path::Path;
use std::time::Duration;

use e2e_harness::runtime::{memory_cap_refusal, FunctionProcess, Invocation, MAX_RESPONSE_BYTES};
use serde_json::json;

const PROBE: &str = env!("CARGO_BIN_EXE_lambda-probe");

fn probe() -> FunctionProcess {
    FunctionProcess::start(Path::new(PROBE), &[])
}

fn error_type(invocation: &Invocation) -> String {
    match invocation {
        Invocation::Error(error) => error["errorType"].as_str().unwrap_or_default().to_owned(),
        Invocation::Response(response) => panic!("expected an error, got {response}"),
    }
}

#[test]
fn an_answer_after_the_deadline_is_thrown_away_and_the_next_invocation_gets_a_new_process() {
    let mut function = probe();
    function.timeout = Duration::from_secs(1);
    let late = function.invoke(&json!({"sleepMs": 1500}));
    assert_eq!(error_type(&late), "Sandbox.Timedout", "{late:?}");
    assert!(
        matches!(&late, Invocation::Error(e) if e["errorMessage"].as_str().unwrap().contains("Task timed out after 1.00 seconds"))
    );
    // The late answer never surfaces: the next invocation gets its own, from a new process.
    let next = function.invoke(&json!({"n": 2})).response();
    assert_eq!(next, json!({"echo": {"n": 2}}));
    assert_eq!(function.restarts(), 1);
}

#[test]
fn a_response_over_six_megabytes_is_refused() {
    let mut function = probe();
    let fits = function
        .invoke(&json!({"responseBytes": MAX_RESPONSE_BYTES - 100}))
        .response();
    assert!(fits["padding"].is_string());
    let refused = function.invoke(&json!({"responseBytes": MAX_RESPONSE_BYTES}));
    assert_eq!(error_type(&refused), "Function.ResponseSizeTooLarge", "{refused:?}");
}

#[test]
fn a_process_has_lambdas_1024_file_descriptors() {
    let mut function = probe();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", function.pid())).unwrap();
    let open_files = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    assert_eq!(
        open_files.split_whitespace().skip(3).take(2).collect::<Vec<_>>(),
        vec!["1024", "1024"],
        "{open_files}"
    );
    let answer = function.invoke(&json!({"openFiles": true})).response();
    let opened = answer["opened"].as_u64().unwrap();
    assert!(
        (1000..1024).contains(&opened),
        "stdin/out/err and the runtime's own take the rest: {answer}"
    );
    assert!(
        answer["refused"].as_str().unwrap().contains("Too many open files"),
        "{answer}"
    );
}

#[test]
fn a_process_over_its_memory_size_is_killed_where_the_kernel_allows_a_cap() {
    let mut function = probe();
    let Some(cap) = function.memory_cap() else {
        // Plainly: this machine does not let the harness cap memory, so this limit is not enforced here.
        println!(
            "NOT ENFORCED HERE: function processes run without Lambda's memory cap: {}",
            memory_cap_refusal().unwrap_or_default()
        );
        return;
    };
    assert_eq!(
        cap.limit_bytes(),
        Some(128 * 1024 * 1024),
        "the cap is the memory size (128 MB)"
    );
    assert_eq!(
        function.invoke(&json!({"allocateMb": 64})).response()["allocatedMb"],
        64
    );
    let over = function.invoke(&json!({"allocateMb": 200}));
    assert_eq!(error_type(&over), "Runtime.ExitError", "{over:?}");
    assert!(
        matches!(&over, Invocation::Error(e) if e["errorMessage"].as_str().unwrap().contains("Runtime.OutOfMemory")),
        "{over:?}"
    );
    assert_eq!(
        function.invoke(&json!({"n": 3})).response(),
        json!({"echo": {"n": 3}}),
        "a new process takes the next invocation"
    );
}
