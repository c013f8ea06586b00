//! A real Java application, on the PostgreSQL JDBC driver, through a
//! failover (`jdbc/FailoverClient.java`): four threads insert and update
//! rows in autocommit with server-side prepared statements from the first
//! execution (a named Parse in the same batch as its Bind, Execute and
//! Sync), send batches, and run transactions with a savepoint (released or
//! rolled back to) that read with a fetch size (a named portal, a few rows
//! per Execute), and COPY rows in with the driver's CopyManager outside a
//! transaction, while the primary is killed
//! part way — with its last commits never sent to the standby, so that the
//! commit log must apply them again — or a switchover moves the sessions. No SQLException may reach the application, and the new
//! primary must hold exactly the rows each thread saw committed, each
//! updated exactly once.
//!
//! Needs a JDK (`javac`, `java`) and Debian's `libpostgresql-jdbc-java`;
//! `.ci/run` installs them.

use std::path::Path;

use understudy_integration::application::{create_rows_table, run_through, Move};
use understudy_integration::Harness;

const DRIVER: &str = "/usr/share/java/postgresql.jar";
/// Compiles the client into a temporary directory.
fn compile() -> tempfile::TempDir {
    assert!(
        Path::new(DRIVER).is_file(),
        "{DRIVER} is missing: install Debian's libpostgresql-jdbc-java (.ci/run does)"
    );
    let classes = tempfile::tempdir().expect("a temporary directory");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/jdbc/FailoverClient.java");
    let status = std::process::Command::new("javac")
        .arg("-cp")
        .arg(DRIVER)
        .arg("-d")
        .arg(classes.path())
        .arg(&source)
        .status()
        .unwrap_or_else(|e| panic!("running javac: {e} (install a JDK: .ci/run does)"));
    assert!(status.success(), "javac failed on {}", source.display());
    classes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jdbc_application_runs_through_a_failover_without_an_error() {
    run(Move::Failover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jdbc_application_runs_through_a_switchover_without_an_error() {
    run(Move::Switchover).await;
}

/// Runs the application through `movement` and checks what the new
/// primary has.
async fn run(movement: Move) {
    let classes = compile();
    let mut h = Harness::start_with(1, |_| {}).await;
    create_rows_table(&h, "jdbc_rows").await;

    let mut java = tokio::process::Command::new("java");
    java.arg("-cp")
        .arg(format!("{DRIVER}:{}", classes.path().display()))
        .arg("FailoverClient");
    // Each autocommit insert was updated once; batch, transaction and
    // copied rows never; rows rolled back to their savepoint (`x…`) are not
    // there.
    run_through(
        &mut h,
        java,
        "jdbc_rows",
        "^(r[0-9]+[+]|[btsa][0-9]+)$",
        movement,
    )
    .await;
}
