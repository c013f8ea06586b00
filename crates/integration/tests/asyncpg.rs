//! A real asyncio application, on asyncpg, through a failover
//! (`asyncpg/failover_client.py`): four tasks prepare every statement by
//! name (Parse, Describe and Flush, the Close of an older statement and a
//! Sync after, then Bind and Execute) with a statement cache small enough
//! that old statements are closed every round, send binary parameters and
//! results, an enum the driver looks up in the catalog, `executemany`,
//! explicit prepared statements, transactions with a nested savepoint
//! (released or rolled back to), a cursor (a named portal read a few rows
//! per Execute and closed), binary `COPY FROM STDIN` in a transaction and
//! simple-protocol `SET`s, while the primary is killed part way — with its
//! last commits never sent to the standby, so that the commit log must apply
//! them again — or a switchover moves the sessions. No asyncpg error may
//! reach the application; its `LISTEN` must still hold afterwards, no
//! notification may be heard twice, and the new primary must hold exactly
//! the rows each task saw committed, each updated exactly once.
//!
//! Needs asyncpg for the machine's `python3` (`pip install asyncpg`);
//! `.ci/run` installs it.

use std::path::Path;

use understudy_integration::application::{create_rows_table, python_client, run_through, Move};
use understudy_integration::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asyncpg_application_runs_through_a_failover_without_an_error() {
    run(Move::Failover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asyncpg_application_runs_through_a_switchover_without_an_error() {
    run(Move::Switchover).await;
}

/// Runs the application through `movement` and checks what the new
/// primary has.
async fn run(movement: Move) {
    let client = python_client(
        "asyncpg",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/asyncpg/failover_client.py"),
        "pip install asyncpg",
    );
    let mut h = Harness::start_with(1, |_| {}).await;
    create_rows_table(&h, "apg_rows").await;
    h.cluster
        .connect()
        .await
        .batch_execute(
            "create type mood as enum ('calm', 'busy'); alter table apg_rows add column mood mood",
        )
        .await
        .unwrap();
    h.wait_replicated().await;

    // Each autocommit insert was updated once; the other rows never; rows
    // rolled back to their savepoint (`x…`) are not there.
    run_through(
        &mut h,
        client,
        "apg_rows",
        "^(r[0-9]+[+]|[mtsca][0-9]+)$",
        movement,
    )
    .await;
}
