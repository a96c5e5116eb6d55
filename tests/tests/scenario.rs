//! The README's main job as a test: the whole event flow on one machine (see `e2e_harness::scenario`), with the
//! function binaries built from the current sources.

use e2e_harness::built_binaries;
use e2e_harness::scenario::run;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "slow: the whole event flow, every binary; tests/test.sh runs it"]
async fn the_whole_event_flow_happens_as_expected() {
    let running = run(built_binaries()).await;
    assert!(
        running.report.problems.is_empty(),
        "expectations failed: {:#?}",
        running.report.problems
    );
}
