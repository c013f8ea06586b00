//! A real Python application, on psycopg 3, through a failover
//! (`psycopg/failover_client.py`): four threads send work in pipeline mode
//! (statements sent before any result is read, one Sync for several),
//! prepare every statement on the server from its first execution with a
//! cache small enough that old statements are closed in the pipelines that
//! prepare new ones, run `executemany` with `RETURNING`, transactions with a
//! nested savepoint (released or rolled back to), a notification and a
//! server-side cursor, `COPY FROM STDIN` in a transaction and binary
//! reads, while the primary is killed part way — with its last commits never
//! sent to the standby, so that the commit log must apply them again — or a
//! switchover moves the sessions. No psycopg error may reach the
//! application; its `LISTEN` must still hold afterwards, no notification
//! may be heard twice, and the new primary must hold exactly the rows each
//! thread saw committed, each updated exactly once.
//!
//! Needs psycopg 3 for the machine's `python3` (`pip install
//! "psycopg[binary]"`); `.ci/run` installs it.

use std::path::Path;

use understudy_integration::application::{create_rows_table, python_client, run_through, Move};
use understudy_integration::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_psycopg_application_runs_through_a_failover_without_an_error() {
    run(Move::Failover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_psycopg_application_runs_through_a_switchover_without_an_error() {
    run(Move::Switchover).await;
}

/// Runs the application through `movement` and checks what the new
/// primary has.
async fn run(movement: Move) {
    let client = python_client(
        "psycopg",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/psycopg/failover_client.py"),
        "pip install \"psycopg[binary]\"",
    );
    let mut h = Harness::start_with(1, |_| {}).await;
    create_rows_table(&h, "py_rows").await;

    // Each pipelined insert was updated once; the other rows never; rows
    // rolled back to their savepoint (`x…`) are not there.
    run_through(
        &mut h,
        client,
        "py_rows",
        "^(r[0-9]+[+]|[mtsca][0-9]+)$",
        movement,
    )
    .await;
}
