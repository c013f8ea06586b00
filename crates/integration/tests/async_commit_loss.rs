//! No commit is lost with asynchronous replication: transactions the client
//! saw committed but the standby never received are applied on the new
//! primary after a failover, exactly once.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use understudy_integration::{Harness, Target};

/// How the 20 commits the standby never receives are made.
#[derive(Clone, Copy)]
enum Commits {
    /// Each an INSERT between BEGIN and COMMIT.
    InTransactionBlocks,
    /// Each an autocommit INSERT: half through the extended protocol (a
    /// Sync commits them), half as a simple Query (which the proxy sends
    /// through the extended protocol, ended by a Sync of its own). Each
    /// simple Query comes pipelined behind the Close and Sync with which
    /// tokio-postgres drops the statement of the INSERT before it.
    Autocommit,
}

/// A session through the proxy that committed one transaction the standby
/// has replayed and then 20 it never receives: the primary's WAL sender is frozen.
/// Returns the session's client and the WAL sender's pid.
async fn commits_only_the_primary_has(
    h: &Harness,
    commits: Commits,
) -> (tokio_postgres::Client, i32) {
    h.cluster
        .connect()
        .await
        .batch_execute("create table t (id int primary key, note text)")
        .await
        .unwrap();
    h.wait_replicated().await;
    let sender: i32 = h
        .cluster
        .connect()
        .await
        .query_one("select pid from pg_stat_replication", &[])
        .await
        .unwrap()
        .get(0);

    let client = h.connect(Target::Proxy).await;
    // A first transaction gives the session its ledger.
    for sql in ["begin", "insert into t values (0, 'first')", "commit"] {
        client.batch_execute(sql).await.unwrap();
    }
    h.wait_replicated().await;
    // The primary's WAL sender is frozen: what commits now never leaves the
    // primary.
    kill(Pid::from_raw(sender), Signal::SIGSTOP).unwrap();
    for id in 1..=20 {
        let insert = "insert into t values ($1, 'lost unless re-applied')";
        match commits {
            Commits::InTransactionBlocks => {
                client.batch_execute("begin").await.unwrap();
                client.execute(insert, &[&id]).await.unwrap();
                client.batch_execute("commit").await.unwrap();
            }
            Commits::Autocommit if id % 2 == 0 => {
                client.execute(insert, &[&id]).await.unwrap();
            }
            Commits::Autocommit => client
                .batch_execute(&format!(
                    "insert into t values ({id}, 'lost unless re-applied')"
                ))
                .await
                .unwrap(),
        }
    }
    (client, sender)
}

/// Kills the primary and its frozen WAL sender, promotes the standby, and
/// checks through `client` (whose session moves) and directly that all 21
/// transactions are there, once each.
async fn fail_over_and_count(h: &mut Harness, client: &tokio_postgres::Client, sender: i32) {
    h.cluster.primary().kill(Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(sender), Signal::SIGKILL).unwrap();
    h.promote_standby().await;

    // The session moves on its next statement; the lost commits are
    // applied before it continues.
    let count: i64 = client
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 21);
    let direct: i64 = h
        .cluster
        .connect_to(1)
        .await
        .query_one("select count(distinct id) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(direct, 21);
    // The first transaction was on the standby; the 20 others were applied
    // again, each giving the replies the client had.
    let log = h.proxy.commit_log();
    assert_eq!(log.reapplied.load(Ordering::Acquire), 20);
    assert_eq!(log.reapplied_mismatches.load(Ordering::Acquire), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_the_standby_never_received_are_on_the_new_primary() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (client, sender) = commits_only_the_primary_has(&h, Commits::InTransactionBlocks).await;
    fail_over_and_count(&mut h, &client, sender).await;
}

/// Autocommit writes are committed by their Sync, not by a COMMIT: their
/// re-apply commits the same way, gives the replies the client had, and is
/// counted as such (not as a transaction that did not commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocommit_writes_the_standby_never_received_are_on_the_new_primary() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (client, sender) = commits_only_the_primary_has(&h, Commits::Autocommit).await;
    fail_over_and_count(&mut h, &client, sender).await;
}

/// Commits stay in the log while the standby lacks them, and leave it once the
/// standby has flushed them: the WAL position sampler sees the standby pass
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_leave_the_log_once_the_standby_has_flushed_them() {
    let h = Harness::start_with(1, |_| {}).await;
    let (_client, sender) = commits_only_the_primary_has(&h, Commits::InTransactionBlocks).await;
    let log = h.proxy.commit_log();
    assert!(
        log.len() >= 20,
        "the 20 commits the standby lacks are kept ({} kept)",
        log.len()
    );
    kill(Pid::from_raw(sender), Signal::SIGCONT).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !log.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{} commits still kept after the standby caught up",
            log.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log.dropped.load(Ordering::Acquire), 0);
}

/// A new view that names the same primary (a switchover that begins and is
/// abandoned) must not spend the commit log on the server that made those
/// commits: it is still needed when that server is lost later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_naming_the_same_primary_keeps_the_commit_log() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (client, sender) = commits_only_the_primary_has(&h, Commits::InTransactionBlocks).await;
    h.topology.send_modify(|t| t.draining = true);
    h.topology.send_modify(|t| t.draining = false);
    fail_over_and_count(&mut h, &client, sender).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_the_standby_had_not_applied_are_on_the_new_primary() {
    let mut h = Harness::start_with(1, |_| {}).await;
    h.cluster
        .connect()
        .await
        .batch_execute("create table t (id int primary key)")
        .await
        .unwrap();
    h.wait_replicated().await;
    let standby = h.cluster.connect_to(1).await;
    // The standby receives everything but applies it an hour late.
    standby
        .batch_execute("alter system set recovery_min_apply_delay = '1h'")
        .await
        .unwrap();
    standby
        .batch_execute("select pg_reload_conf()")
        .await
        .unwrap();

    let client = h.connect(Target::Proxy).await;
    for id in 1..=20 {
        client.batch_execute("begin").await.unwrap();
        client
            .execute("insert into t values ($1)", &[&id])
            .await
            .unwrap();
        client.batch_execute("commit").await.unwrap();
    }
    let applied: i64 = standby
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        applied < 20,
        "the delay holds transactions back ({applied} applied)"
    );

    h.cluster.primary().kill(Signal::SIGKILL).unwrap();
    h.promote_standby().await;

    let ids: Vec<i32> = client
        .query("select id from t order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
    // The new primary had every commit (promotion applies what the delay
    // held back): the ledger lookup found all 20, none was run again.
    let log = h.proxy.commit_log();
    assert_eq!(log.reapplied.load(Ordering::Acquire), 0);
    assert_eq!(log.reapplied_mismatches.load(Ordering::Acquire), 0);
}
