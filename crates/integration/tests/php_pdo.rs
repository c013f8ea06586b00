//! A real PHP application, on PDO's PostgreSQL driver (pdo_pgsql, on
//! libpq), through a failover (`php/failover_client.php`): four worker
//! processes insert and update rows in autocommit with native prepared
//! statements (each named, parsed in a round trip of its own and closed
//! with a SQL `DEALLOCATE` when the statement object goes away — a new
//! statement text every round), run transactions as `BEGIN`/`COMMIT`
//! Queries with a savepoint (released or rolled back to), copy rows in with
//! `pgsqlCopyFromArray` outside a transaction, `SET` settings and listen
//! for notifications, while the primary is killed part way — with its last
//! commits never sent to the standby, so that the commit log must apply
//! them again — or a switchover moves the sessions. No PDO error may reach
//! the application; its `LISTEN` must still hold afterwards, no
//! notification may be heard twice, and the new primary must hold exactly
//! the rows each worker saw committed, each updated exactly once.
//!
//! Needs PHP's command line with pdo_pgsql and pcntl (Debian's `php-cli`
//! and `php-pgsql`); `.ci/run` installs them.

use std::path::Path;

use understudy_integration::application::{create_rows_table, run_through, Move};
use understudy_integration::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_php_pdo_application_runs_through_a_failover_without_an_error() {
    run(Move::Failover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_php_pdo_application_runs_through_a_switchover_without_an_error() {
    run(Move::Switchover).await;
}

/// Runs the application through `movement` and checks what the new
/// primary has.
async fn run(movement: Move) {
    let has_pdo_pgsql = std::process::Command::new("php")
        .args([
            "-r",
            "exit(extension_loaded('pdo_pgsql') && function_exists('pcntl_fork') ? 0 : 1);",
        ])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        has_pdo_pgsql,
        "PHP with pdo_pgsql and pcntl is missing: apt-get install -y php-cli php-pgsql (.ci/run does)"
    );
    let mut h = Harness::start_with(1, |_| {}).await;
    create_rows_table(&h, "php_rows").await;

    let mut php = tokio::process::Command::new("php");
    php.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/php/failover_client.php"));
    // Each autocommit insert was updated once; transaction and copied rows
    // never; rows rolled back to their savepoint (`x…`) are not there.
    run_through(
        &mut h,
        php,
        "php_rows",
        "^(r[0-9]+[+]|[tsa][0-9]+)$",
        movement,
    )
    .await;
}
