//! A real Node.js application, on node-postgres, through a failover
//! (`node/failover_client.js`): four clients send parameterised queries (an
//! unnamed Parse, Bind, Describe, Execute and Sync each), named prepared
//! statements parsed once and bound again, several statements in one simple
//! Query, binary results, transactions with a savepoint (released or rolled
//! back to) that read through pg-cursor (a portal read a few rows per
//! Execute, with Flush and no Sync in between) and `SET`s, while the primary
//! is killed part way — with its last commits never sent to the standby, so
//! that the commit log must apply them again — or a switchover moves the
//! sessions. No error may reach the application; its `LISTEN` must still
//! hold afterwards, no notification may be heard twice, and the new primary
//! must hold exactly the rows each client saw committed, each updated
//! exactly once.
//!
//! Needs Node.js and the client's packages (`npm ci --prefix
//! crates/integration/tests/node`); `.ci/run` installs them.

use std::path::Path;

use understudy_integration::application::{create_rows_table, run_through, Move};
use understudy_integration::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_postgres_application_runs_through_a_failover_without_an_error() {
    run(Move::Failover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_postgres_application_runs_through_a_switchover_without_an_error() {
    run(Move::Switchover).await;
}

/// Runs the application through `movement` and checks what the new
/// primary has.
async fn run(movement: Move) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    assert!(
        dir.join("node_modules/pg").is_dir() && dir.join("node_modules/pg-cursor").is_dir(),
        "node-postgres is missing: npm ci --prefix {} (.ci/run does)",
        dir.display()
    );
    let mut h = Harness::start_with(1, |_| {}).await;
    create_rows_table(&h, "node_rows").await;

    let mut node = tokio::process::Command::new("node");
    node.arg(dir.join("failover_client.js"));
    // Each autocommit insert was updated once; the other rows never; rows
    // rolled back to their savepoint (`x…`) are not there.
    run_through(
        &mut h,
        node,
        "node_rows",
        "^(r[0-9]+[+]|[qts][0-9]+)$",
        movement,
    )
    .await;
}
