//! The harness's throwaway PostgreSQL: a real server on a free port that answers, and goes away with its owner.

use e2e_harness::postgres::Postgres;

#[test]
fn a_throwaway_server_answers_and_is_removed_on_drop() {
    let postgres = Postgres::start();
    assert_eq!(postgres.psql("postgres", "SELECT 40 + 2").trim(), "42");
    let port = postgres.port;
    drop(postgres);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server still listens after drop"
    );
}
