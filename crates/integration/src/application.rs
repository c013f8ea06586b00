//! Real applications, on the drivers of other languages, run through a
//! failover or a switchover (`tests/jdbc.rs`, `tests/psycopg.rs`,
//! `tests/asyncpg.rs`, `tests/node_postgres.rs`, `tests/php_pdo.rs`).
//!
//! Each application is a program of its own under `tests/<driver>/` that
//! takes `<port> <password> <workers> <rounds>`, runs `workers` threads of
//! `rounds` rounds each on connections through the proxy, prints
//! `progress <worker> <round>` after every round and, at the end,
//! `committed <worker> <rows>` with the rows each worker saw committed; it
//! exits with a failure status on any driver error. A worker done with its
//! rounds waits until its standard input ends before its last checks and
//! before closing its connections: the harness closes it once every session
//! has moved, so that every session is open when they move (a worker ahead
//! of the others could otherwise close its own first). The applications
//! write to a table made by [`create_rows_table`], marking in each row's
//! `note` what was done to it. [`run_through`] runs one with 4 workers of 60 rounds,
//! moves its sessions a third of the way through, and once it has finished
//! successfully checks that the new primary holds exactly the rows each
//! worker saw committed and that every note matches what the application
//! wrote (none written twice).
//!
//! `APPLICATION_WORKERS` and `APPLICATION_ROUNDS` override the sizes for
//! longer hunts.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::{Harness, Target};

/// How the sessions are moved.
#[derive(Debug, Clone, Copy)]
pub enum Move {
    /// The primary is killed, with the last commits only on it: its WAL
    /// sender is frozen until two rows per worker are not on the standby.
    Failover,
    /// A planned switchover.
    Switchover,
}

/// The application's output, read as it comes.
struct Output {
    rx: UnboundedReceiver<String>,
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
                .unwrap_or_else(|_| {
                    panic!(
                        "the application stopped making progress:\n{}",
                        self.lines.join("\n")
                    )
                })
                .unwrap_or_else(|| {
                    panic!("the application ended early:\n{}", self.lines.join("\n"))
                });
            self.progress += usize::from(line.starts_with("progress "));
            self.lines.push(line);
        }
    }
}

/// Workers and rounds of each application, unless `APPLICATION_WORKERS` or
/// `APPLICATION_ROUNDS` say otherwise.
const WORKERS: usize = 4;
const ROUNDS: usize = 60;

/// The workers and rounds to run.
fn size(workers: usize, rounds: usize) -> (usize, usize) {
    let var = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} is a number, not {v:?}"))
            })
            .unwrap_or(default)
    };
    (
        var("APPLICATION_WORKERS", workers),
        var("APPLICATION_ROUNDS", rounds),
    )
}

/// The command that runs the Python client `script`, after checking that
/// `python3` can import `module` (`install` says how to get it).
pub fn python_client(module: &str, script: &Path, install: &str) -> tokio::process::Command {
    let importable = std::process::Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .unwrap_or_else(|e| panic!("running python3: {e} (install Python 3)"));
    assert!(
        importable.success(),
        "python3 cannot import {module}: {install} (.ci/run does)"
    );
    let mut command = tokio::process::Command::new("python3");
    command.arg(script);
    command
}

/// Runs `application` (a command missing only its arguments) through
/// `movement`, then checks its rows in `table`: as many per worker as it
/// saw committed, each `note` matching `notes` (a PostgreSQL regular
/// expression).
pub async fn run_through(
    h: &mut Harness,
    application: tokio::process::Command,
    table: &str,
    notes: &str,
    movement: Move,
) {
    let (workers, rounds) = size(WORKERS, ROUNDS);
    let output = run_application(h, application, table, workers, rounds, movement).await;
    assert_rows_per_worker(h, table, &output, workers).await;
    assert_every_note_matches(h, table, notes).await;
}

/// Runs `application` with `workers` threads of `rounds` rounds through the
/// proxy, moves the sessions a third of the way through — for a failover,
/// once it has committed rows to `table` that only the primary has — and
/// returns the application's output once it has exited successfully.
async fn run_application(
    h: &mut Harness,
    mut application: tokio::process::Command,
    table: &str,
    workers: usize,
    rounds: usize,
    movement: Move,
) -> String {
    let mut child = application
        .arg(h.port(Target::Proxy).to_string())
        .arg(understudy_testkit::PASSWORD)
        .arg(workers.to_string())
        .arg(rounds.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {application:?}: {e}"));
    // Closed once every session has moved: the workers finish only then.
    let moved = child.stdin.take().expect("the application's input");
    let mut lines = BufReader::new(child.stdout.take().expect("the application's output")).lines();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut output = Output {
        rx,
        lines: Vec::new(),
        progress: 0,
    };
    output.wait_for_rounds(workers * rounds / 3).await;
    let metrics = h.proxy.metrics();
    // Every worker's sessions are open by now, and stay so until the
    // application's input ends.
    let sessions = metrics.sessions_active.load(Ordering::Acquire);
    assert!(
        sessions >= workers as u64,
        "{sessions} sessions for {workers} workers"
    );
    match movement {
        Move::Failover => {
            let sender = h.freeze_wal_sender().await;
            // Progress lines already on their way were written before the
            // freeze: what counts is rows the standby does not have.
            let primary = h.cluster.connect().await;
            let standby = h.cluster.connect_to(1).await;
            let count = format!("select count(*) from {table}");
            let (primary, standby, count) = (&primary, &standby, &count);
            let primary_only =
                understudy_testkit::wait_until(Duration::from_secs(60), || async move {
                    row_count(primary, count).await - row_count(standby, count).await
                        >= 2 * workers as i64
                })
                .await;
            assert!(
                primary_only,
                "the application committed rows the standby does not have"
            );
            h.cluster.primary().kill(Signal::SIGKILL).unwrap();
            kill(Pid::from_raw(sender), Signal::SIGKILL).unwrap();
            h.promote_standby().await;
        }
        Move::Switchover => h.switch_over().await,
    }
    // Idle sessions move too, as soon as they find their backend gone; the
    // count is checked exactly below, once the application has ended.
    let moved_total = &metrics.sessions_moved_total;
    understudy_testkit::wait_until(Duration::from_secs(60), || async move {
        moved_total.load(Ordering::Acquire) >= sessions
    })
    .await;
    drop(moved);
    let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
        .await
        .expect("the application finishes")
        .expect("the application's exit status");
    // The rest of the output, up to its end.
    while let Some(line) = tokio::time::timeout(Duration::from_secs(10), output.rx.recv())
        .await
        .expect("the application's output ends")
    {
        output.lines.push(line);
    }
    let output = output.lines.join("\n");
    assert!(status.success(), "the application failed:\n{output}");
    assert_eq!(
        metrics.sessions_moved_total.load(Ordering::Acquire),
        sessions,
        "every session moved ({} moves failed; the proxy's log is above):\n{output}",
        metrics.move_failures_total.load(Ordering::Acquire)
    );
    if let Move::Failover = movement {
        let log = h.proxy.commit_log();
        assert!(
            log.reapplied.load(Ordering::Acquire) > 0,
            "the commits only the old primary had were applied again"
        );
        assert_eq!(
            log.reapplied_mismatches.load(Ordering::Acquire),
            0,
            "re-applied commits whose replies differed"
        );
    }
    output
}

/// The one number `sql` returns.
async fn row_count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Creates `table (id int primary key, worker int, note text)` and waits
/// until the standby has it.
pub async fn create_rows_table(h: &Harness, table: &str) {
    h.cluster
        .connect()
        .await
        .batch_execute(&format!(
            "create table {table} (id int primary key, worker int not null, note text not null)"
        ))
        .await
        .unwrap();
    h.wait_replicated().await;
}

/// Checks that the new primary's `table` holds, for each worker, exactly
/// the rows it reported committed in the application's `output`.
async fn assert_rows_per_worker(h: &Harness, table: &str, output: &str, workers: usize) {
    let new_primary = h.cluster.connect_to(1).await;
    for worker in 0..workers {
        let reported: i64 = output
            .lines()
            .find_map(|l| l.strip_prefix(&format!("committed {worker} ")))
            .unwrap_or_else(|| panic!("worker {worker} reports its rows:\n{output}"))
            .parse()
            .expect("a row count");
        let rows: i64 = new_primary
            .query_one(
                &format!("select count(*) from {table} where worker = $1"),
                &[&(worker as i32)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, reported, "worker {worker}'s rows");
    }
}

/// Checks that every row's `note` on the new primary matches `pattern` (a
/// PostgreSQL regular expression): the applications mark what each write
/// did, so a row updated twice or a row rolled back shows here.
async fn assert_every_note_matches(h: &Harness, table: &str, pattern: &str) {
    let wrong: Vec<String> = h
        .cluster
        .connect_to(1)
        .await
        .query(
            &format!("select note from {table} where note !~ $1 order by id"),
            &[&pattern],
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
