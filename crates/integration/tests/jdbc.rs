//! A real Java application, on the PostgreSQL JDBC driver, through a
//! failover (`jdbc/FailoverClient.java`): four threads insert and update
//! rows in autocommit with server-side prepared statements from the first
//! execution (a named Parse in the same batch as its Bind, Execute and
//! Sync), send batches, and run transactions with a savepoint (released or
//! rolled back to) that read with a fetch size (a named portal, a few rows
//! per Execute), while the primary is killed
//! part way — with its last commits never sent to the standby, so that the
//! commit log must apply them again — or a switchover moves the sessions. No SQLException may reach the application, and the new
//! primary must hold exactly the rows each thread saw committed, each
//! updated exactly once.
//!
//! Needs a JDK (`javac`, `java`) and Debian's `libpostgresql-jdbc-java`;
//! `.ci/run` installs them.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use understudy_integration::{Harness, Target};
use understudy_testkit::PASSWORD;

const DRIVER: &str = "/usr/share/java/postgresql.jar";
const WORKERS: usize = 4;
const ROUNDS: usize = 60;

/// The application's output, read as it comes.
struct Output {
    rx: tokio::sync::mpsc::UnboundedReceiver<String>,
    lines: Vec<String>,
    /// Rounds done, all workers together.
    progress: usize,
}

impl Output {
    /// Reads until the workers have done `until` rounds together.
    async fn wait_for_rounds(&mut self, until: usize) {
        while self.progress < until {
            let line = tokio::time::timeout(Duration::from_secs(60), self.rx.recv())
                .await
                .expect("the application goes on")
                .unwrap_or_else(|| {
                    panic!("the application ended early:\n{}", self.lines.join("\n"))
                });
            self.progress += usize::from(line.starts_with("progress "));
            self.lines.push(line);
        }
    }
}

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

/// How the sessions are moved.
#[derive(Clone, Copy)]
enum Move {
    /// The primary is killed, with the last rounds' commits only on it:
    /// its WAL sender is frozen a few rounds before.
    Failover,
    /// A planned switchover.
    Switchover,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jdbc_application_runs_through_a_failover_without_an_error() {
    run_through(Move::Failover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jdbc_application_runs_through_a_switchover_without_an_error() {
    run_through(Move::Switchover).await;
}

/// Runs the application, moves its sessions a third of the way through,
/// and checks what it reports and what the new primary has.
async fn run_through(movement: Move) {
    let classes = compile();
    let mut h = Harness::start_with(1, |_| {}).await;
    h.cluster
        .connect()
        .await
        .batch_execute(
            "create table jdbc_rows (id int primary key, worker int not null, note text not null)",
        )
        .await
        .unwrap();
    h.wait_replicated().await;

    let mut java = tokio::process::Command::new("java")
        .arg("-cp")
        .arg(format!("{DRIVER}:{}", classes.path().display()))
        .arg("FailoverClient")
        .arg(h.port(Target::Proxy).to_string())
        .arg(PASSWORD)
        .arg(WORKERS.to_string())
        .arg(ROUNDS.to_string())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("running java");
    let mut lines = BufReader::new(java.stdout.take().expect("java's output")).lines();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    // The sessions move a third of the way through.
    let mut output = Output {
        rx,
        lines: Vec::new(),
        progress: 0,
    };
    output.wait_for_rounds(WORKERS * ROUNDS / 3).await;
    match movement {
        Move::Failover => {
            let sender = h.freeze_wal_sender().await;
            output
                .wait_for_rounds(WORKERS * ROUNDS / 3 + 2 * WORKERS)
                .await;
            h.cluster.primary().kill(Signal::SIGKILL).unwrap();
            kill(Pid::from_raw(sender), Signal::SIGKILL).unwrap();
            h.promote_standby().await;
        }
        Move::Switchover => h.switch_over().await,
    }
    let status = tokio::time::timeout(Duration::from_secs(120), java.wait())
        .await
        .expect("the application finishes")
        .expect("java's exit status");
    // The rest of the output, up to its end.
    while let Some(line) = tokio::time::timeout(Duration::from_secs(10), output.rx.recv())
        .await
        .expect("the application's output ends")
    {
        output.lines.push(line);
    }
    let output = output.lines.join("\n");
    assert!(status.success(), "the application failed:\n{output}");

    let new_primary = h.cluster.connect_to(1).await;
    for worker in 0..WORKERS {
        let reported: i64 = output
            .lines()
            .find_map(|l| l.strip_prefix(&format!("committed {worker} ")))
            .unwrap_or_else(|| panic!("worker {worker} reports its rows:\n{output}"))
            .parse()
            .expect("a row count");
        let rows: i64 = new_primary
            .query_one(
                "select count(*) from jdbc_rows where worker = $1",
                &[&(worker as i32)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, reported, "worker {worker}'s rows");
    }
    // Each autocommit insert was updated once; batch and transaction rows
    // never; rows rolled back to their savepoint (`x…`) are not there.
    let wrong: Vec<String> = new_primary
        .query(
            "select note from jdbc_rows where note !~ '^(r[0-9]+[+]|[bts][0-9]+)$'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(
        wrong.is_empty(),
        "rows written twice or not at all: {wrong:?}"
    );
}
