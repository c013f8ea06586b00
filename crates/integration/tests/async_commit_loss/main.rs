//! No commit is lost with asynchronous replication: transactions the client
//! saw committed but the standby never received are applied on the new
//! primary after a failover, exactly once.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use understudy_integration::{data_row_text, encode_bind_text, Harness, RawConn, Target};
use understudy_protocol::backend::tag;
use understudy_protocol::frontend::{
    encode_close_statement, encode_execute, encode_parse, encode_sync,
};
use understudy_testkit::understudy_cluster::StopMode;
use understudy_testkit::{PASSWORD, SUPERUSER};

mod statements;

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
    /// One chain: BEGIN, then each an INSERT ended by `COMMIT AND CHAIN`
    /// (the last by COMMIT), so that every transaction but the first runs
    /// in a block it did not open.
    Chained,
    /// Each an autocommit `SELECT add_row(id)`, a function that inserts the
    /// row: half through the extended protocol, half as a simple Query.
    FunctionCalls,
    /// Each an autocommit `CALL insert_row(id)`, a procedure that inserts
    /// the row: half through the extended protocol, half as a simple Query.
    ProcedureCalls,
}

/// A session through the proxy that committed one transaction the standby
/// has replayed and then 20 it never receives: the primary's WAL sender is frozen.
/// Returns the session's client and the WAL sender's pid.
async fn commits_only_the_primary_has(
    h: &Harness,
    commits: Commits,
) -> (tokio_postgres::Client, i32) {
    let (client, sender) = session_the_standby_stops_following(h).await;
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
            Commits::FunctionCalls => call_row_function(&client, "add_row", id).await,
            Commits::ProcedureCalls if id % 2 == 0 => {
                client.execute("call insert_row($1)", &[&id]).await.unwrap();
            }
            Commits::ProcedureCalls => client
                .batch_execute(&format!("call insert_row({id})"))
                .await
                .unwrap(),
            Commits::Chained => {
                if id == 1 {
                    client.batch_execute("begin").await.unwrap();
                }
                client.execute(insert, &[&id]).await.unwrap();
                let end = if id == 20 {
                    "commit"
                } else {
                    "commit and chain"
                };
                client.batch_execute(end).await.unwrap();
            }
        }
    }
    (client, sender)
}

/// A session through the proxy that committed one transaction the standby
/// has replayed, after which the primary's WAL sender is frozen: what
/// commits from then on never leaves the primary. Returns the session's
/// client and the WAL sender's pid.
async fn session_the_standby_stops_following(h: &Harness) -> (tokio_postgres::Client, i32) {
    create_table(h).await;
    h.wait_replicated().await;

    let client = h.connect(Target::Proxy).await;
    // A first transaction gives the session its ledger.
    for sql in ["begin", "insert into t values (0, 'first')", "commit"] {
        client.batch_execute(sql).await.unwrap();
    }
    h.wait_replicated().await;
    let sender = h.freeze_wal_sender().await;
    (client, sender)
}

/// Calls `function`, which inserts row `id` and returns `id`, in an
/// autocommit `SELECT`: through the extended protocol for even ids (checking
/// what it returned), as a simple Query for odd ones.
async fn call_row_function(client: &tokio_postgres::Client, function: &str, id: i32) {
    if id % 2 == 0 {
        let row = client
            .query_one(&format!("select {function}($1)"), &[&id])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), id);
    } else {
        client
            .batch_execute(&format!("select {function}({id})"))
            .await
            .unwrap();
    }
}

/// Creates the table the tests write to, and a function and a procedure
/// that write to it, on the primary.
async fn create_table(h: &Harness) {
    h.cluster
        .connect()
        .await
        .batch_execute(
            "create table t (id int primary key, note text);
             create function add_row(i int) returns int language sql as
                 $$ insert into t values (i, 'lost unless re-applied') returning i $$;
             create procedure insert_row(i int) language plpgsql as
                 $$ begin insert into t values (i, 'lost unless re-applied'); end $$",
        )
        .await
        .unwrap();
}

/// The commit log re-applied `n` commits, each giving the replies the
/// client had.
fn assert_reapplied(h: &Harness, n: u64) {
    let log = h.proxy.commit_log();
    assert_eq!(
        log.reapplied.load(Ordering::Acquire),
        n,
        "commits re-applied"
    );
    assert_eq!(
        log.reapplied_mismatches.load(Ordering::Acquire),
        0,
        "re-applied commits whose replies differed"
    );
}

/// Kills the primary and its frozen WAL sender (so that what the sender
/// held never reaches the standby), and promotes the standby.
async fn lose_the_primary(h: &mut Harness, sender: i32) {
    h.cluster.primary().kill(Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(sender), Signal::SIGKILL).unwrap();
    h.promote_standby().await;
}

/// Loses the primary ([`lose_the_primary`]), and checks through `client`
/// (whose session moves) and directly that all 21 transactions are there,
/// once each.
async fn fail_over_and_count(h: &mut Harness, client: &tokio_postgres::Client, sender: i32) {
    lose_the_primary(h, sender).await;
    count_after_failover(h, client).await;
}

/// After the failover: checks through `client` (whose session moves) and
/// directly that all 21 transactions are there, once each.
async fn count_after_failover(h: &Harness, client: &tokio_postgres::Client) {
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
    assert_reapplied(h, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_the_standby_never_received_are_on_the_new_primary() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (client, sender) = commits_only_the_primary_has(&h, Commits::InTransactionBlocks).await;
    fail_over_and_count(&mut h, &client, sender).await;
}

/// Transactions chained with `COMMIT AND CHAIN` are kept one by one, and
/// applied again each in a transaction of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_commits_the_standby_never_received_are_on_the_new_primary() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (client, sender) = commits_only_the_primary_has(&h, Commits::Chained).await;
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
    assert_reapplied(&h, 0);
}

/// A batch as JDBC sends the first execution of a statement it keeps: the
/// named Parse, its Bind and Execute, and the Sync that commits it.
fn prepare_and_insert(statement: &str, id: i32) -> BytesMut {
    let mut out = BytesMut::new();
    encode_parse(
        statement,
        "insert into t values ($1::text::int, 'prepared')",
        &mut out,
    );
    encode_bind_text("", statement, &[&id.to_string()], &mut out);
    encode_execute("", &mut out);
    encode_sync(&mut out);
    out
}

/// Drivers such as JDBC prepare a named statement in the same batch as its
/// first execution, and close and prepare it again when it leaves their
/// statement cache. Such commits must apply again on a server that lost
/// them: each re-apply starts from the session state its transaction
/// started from (without the statement it prepares), and a connection that
/// re-applied one is put back into that state before it re-applies another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocommit_writes_that_prepare_their_statement_are_on_the_new_primary() {
    let mut h = Harness::start_with(1, |_| {}).await;
    create_table(&h).await;
    let (mut conn, _) = RawConn::login(h.port(Target::Proxy), SUPERUSER, PASSWORD).await;
    h.wait_replicated().await;
    let sender = h.freeze_wal_sender().await;
    // Prepared with the first insert, used by the second, closed, then
    // prepared again with the third.
    conn.send(&prepare_and_insert("S_1", 1)).await;
    conn.expect_frames(&[
        tag::PARSE_COMPLETE,
        tag::BIND_COMPLETE,
        tag::COMMAND_COMPLETE,
        tag::READY_FOR_QUERY,
    ])
    .await;
    let mut out = BytesMut::new();
    encode_bind_text("", "S_1", &["2"], &mut out);
    encode_execute("", &mut out);
    encode_sync(&mut out);
    encode_close_statement("S_1", &mut out);
    encode_sync(&mut out);
    conn.send(&out).await;
    conn.expect_frames(&[
        tag::BIND_COMPLETE,
        tag::COMMAND_COMPLETE,
        tag::READY_FOR_QUERY,
        tag::CLOSE_COMPLETE,
        tag::READY_FOR_QUERY,
    ])
    .await;
    conn.send(&prepare_and_insert("S_1", 3)).await;
    conn.expect_frames(&[
        tag::PARSE_COMPLETE,
        tag::BIND_COMPLETE,
        tag::COMMAND_COMPLETE,
        tag::READY_FOR_QUERY,
    ])
    .await;

    lose_the_primary(&mut h, sender).await;

    let frames = conn
        .simple_query("select string_agg(id::text, ',' order by id) from t")
        .await;
    let row = frames
        .iter()
        .find(|f| f.tag == tag::DATA_ROW)
        .expect("a row");
    assert_eq!(data_row_text(&row.body, 0).as_deref(), Some("1,2,3"));
    assert_reapplied(&h, 3);
}

/// A transaction that wrote nothing leaves no token in the ledger, so a new
/// primary could never be shown to have it: it is not kept as committed.
/// Were it applied again after a failover, behind writes that came after
/// it, it could act on them: here an autocommit `DELETE` that found no row
/// would delete the row inserted after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_that_wrote_nothing_is_not_applied_again() {
    let mut h = Harness::start_with(1, |_| {}).await;
    create_table(&h).await;
    let client = h.connect(Target::Proxy).await;
    // A first commit starts the proxy's WAL sampler, which is then frozen:
    // no commit leaves the log, even once the standby has it.
    client
        .batch_execute("insert into t values (0, 'first')")
        .await
        .unwrap();
    let direct = h.cluster.connect().await;
    let find_sampler = "select pid from pg_stat_activity where application_name = 'understudy-lsn'";
    let started = understudy_testkit::wait_until(Duration::from_secs(10), || async {
        direct.query_opt(find_sampler, &[]).await.unwrap().is_some()
    })
    .await;
    assert!(started, "the WAL sampler connects");
    let sampler: i32 = direct.query_one(find_sampler, &[]).await.unwrap().get(0);
    kill(Pid::from_raw(sampler), Signal::SIGSTOP).unwrap();
    client
        .batch_execute("delete from t where id = 1")
        .await
        .unwrap();
    client
        .batch_execute("insert into t values (1, 'after the delete')")
        .await
        .unwrap();
    h.wait_replicated().await;

    h.cluster.primary().kill(Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(sampler), Signal::SIGKILL).unwrap();
    h.promote_standby().await;

    let count: i64 = client
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 2, "the row inserted after the DELETE is there");
    assert_reapplied(&h, 0);
}

/// The WAL sampler's round that finds no standby streaming — a primary
/// dying takes its WAL senders with it, and the sampler's own backend may
/// answer once more; a standby may be restarting — must not let go of the
/// commits the failover needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_stay_in_the_log_while_no_standby_streams() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (client, sender) = commits_only_the_primary_has(&h, Commits::InTransactionBlocks).await;
    // The standby stops; the WAL sender, woken, finds its standby gone.
    h.cluster.standby_mut(0).stop(StopMode::Fast).await.unwrap();
    kill(Pid::from_raw(sender), Signal::SIGCONT).unwrap();
    let primary = h.cluster.connect().await;
    let gone = understudy_testkit::wait_until(Duration::from_secs(10), || async {
        primary
            .query_one("select count(*) from pg_stat_replication", &[])
            .await
            .map(|row| row.get::<_, i64>(0) == 0)
            .unwrap_or(false)
    })
    .await;
    assert!(gone, "no standby streams");
    let log = h.proxy.commit_log();
    let round = log.lsn.round();
    // The sampler stops once the log is empty.
    let sampled = understudy_testkit::wait_until(Duration::from_secs(10), || async {
        log.lsn.round() >= round + 2 || log.is_empty()
    })
    .await;
    assert!(sampled, "the sampler saw the primary without a standby");
    assert!(log.len() >= 20, "{} commits kept", log.len());

    // The primary dies before the standby is back: the standby never gets
    // the 20 commits, and is promoted without them.
    h.cluster.primary().kill(Signal::SIGKILL).unwrap();
    h.cluster.standby_mut(0).start().await.unwrap();
    h.promote_standby().await;
    count_after_failover(&h, &client).await;
}

/// A session through a proxy whose journal keeps at most 4 kB of a
/// transaction (and whose large COMMITs wait at most `wait_ms` for the
/// standbys), with the primary's WAL sender frozen, that sent the COMMIT of
/// a transaction of 8 kB and more: the COMMIT runs in a task. Returns once
/// the transaction committed on the primary and the proxy had its reply.
struct LargeCommit {
    client: std::sync::Arc<tokio_postgres::Client>,
    commit: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    sender: i32,
}

async fn large_commit_while_the_standby_gets_nothing(h: &Harness) -> LargeCommit {
    create_table(h).await;
    let client = std::sync::Arc::new(h.connect(Target::Proxy).await);
    h.wait_replicated().await;
    let sender = h.freeze_wal_sender().await;
    let large = "x".repeat(8192);
    for sql in [
        "begin".to_owned(),
        format!("insert into t values (1, '{large}')"),
        "insert into t values (2, 'small')".to_owned(),
    ] {
        client.batch_execute(&sql).await.unwrap();
    }
    let committing = std::sync::Arc::clone(&client);
    let commit = tokio::spawn(async move { committing.batch_execute("commit").await });
    // The proxy counts such a transaction when its COMMIT's reply comes in.
    let log = h.proxy.commit_log();
    let seen = understudy_testkit::wait_until(Duration::from_secs(10), || async {
        log.too_large.load(Ordering::Acquire) == 1
    })
    .await;
    assert!(seen, "the transaction committed on the primary");
    LargeCommit {
        client,
        commit,
        sender,
    }
}

fn large_commit_proxy(wait_ms: u64) -> impl FnOnce(&mut understudy_config::Config) {
    move |config| {
        config.journal.max_transaction_bytes = 4096;
        config.journal.large_commit_wait_ms = wait_ms;
    }
}

/// A transaction too large for the journal (`journal.max_transaction_bytes`)
/// cannot be applied again whole, so the commit log does not keep it: part
/// of it must never be applied alone. Its COMMIT is acknowledged only once
/// the standby has it; the primary dies first: the new primary does not have
/// it, and the client gets `40001`, never a COMMIT of a transaction that is
/// not in the database. The session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_commit_lost_with_the_primary_is_never_acknowledged_nor_applied_in_part() {
    let mut h = Harness::start_with(1, large_commit_proxy(60_000)).await;
    let large = large_commit_while_the_standby_gets_nothing(&h).await;
    assert!(
        !large.commit.is_finished(),
        "the COMMIT waits for the standby"
    );

    h.cluster.primary().kill(Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(large.sender), Signal::SIGKILL).unwrap();
    h.promote_standby().await;
    let error = tokio::time::timeout(Duration::from_secs(30), large.commit)
        .await
        .expect("the COMMIT is answered after the failover")
        .unwrap()
        .expect_err("the transaction is not on the new primary");
    assert_eq!(understudy_integration::sqlstate(&error), "40001", "{error}");
    let rows: i64 = large
        .client
        .query_one("select count(*) from t", &[])
        .await
        .expect("the session goes on")
        .get(0);
    assert_eq!(rows, 0, "no part of the transaction was applied again");
    let log = h.proxy.commit_log();
    assert_eq!(log.too_large.load(Ordering::Acquire), 1, "it is counted");
}

/// The COMMIT of a transaction too large for the commit log returns once
/// the standby has flushed it, and not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_commit_is_acknowledged_once_the_standby_has_it() {
    let h = Harness::start_with(1, large_commit_proxy(60_000)).await;
    let large = large_commit_while_the_standby_gets_nothing(&h).await;
    // The sampler looks at the standby every 20 ms: many rounds pass.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !large.commit.is_finished(),
        "the COMMIT waits for the standby"
    );

    kill(Pid::from_raw(large.sender), Signal::SIGCONT).unwrap();
    tokio::time::timeout(Duration::from_secs(30), large.commit)
        .await
        .expect("the COMMIT is answered once the standby has it")
        .unwrap()
        .expect("committed");
    let on_standby: i64 = h
        .cluster
        .connect_to(1)
        .await
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        on_standby, 2,
        "the standby had the transaction when the client heard of it"
    );
    assert_eq!(
        h.proxy
            .commit_log()
            .large_unconfirmed
            .load(Ordering::Acquire),
        0
    );
}

/// Past `journal.large_commit_wait_ms` such a COMMIT is acknowledged without
/// the standby, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_commit_is_acknowledged_without_the_standby_after_the_wait() {
    let h = Harness::start_with(1, large_commit_proxy(200)).await;
    let large = large_commit_while_the_standby_gets_nothing(&h).await;
    tokio::time::timeout(Duration::from_secs(30), large.commit)
        .await
        .expect("the COMMIT is answered after the wait")
        .unwrap()
        .expect("committed");
    assert_eq!(
        h.proxy
            .commit_log()
            .large_unconfirmed
            .load(Ordering::Acquire),
        1
    );
    kill(Pid::from_raw(large.sender), Signal::SIGCONT).unwrap();
}

/// With no standby streaming for longer than `journal.large_commit_wait_ms`
/// (one down, or being rebuilt after a failover), a large COMMIT would only
/// wait the limit out: it is acknowledged at once, and counted. Once a
/// standby streams again, large COMMITs wait for it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_commits_are_acknowledged_at_once_while_no_standby_streams() {
    const WAIT: Duration = Duration::from_secs(3);
    let mut h = Harness::start_with(1, large_commit_proxy(WAIT.as_millis() as u64)).await;
    create_table(&h).await;
    let client = h.connect(Target::Proxy).await;
    h.cluster.standby_mut(0).stop(StopMode::Fast).await.unwrap();
    let primary = h.cluster.connect().await;
    let streaming = |n: i64| {
        let primary = &primary;
        move || async move {
            primary
                .query_one("select count(*) from pg_stat_replication", &[])
                .await
                .is_ok_and(|row| row.get::<_, i64>(0) == n)
        }
    };
    assert!(
        understudy_testkit::wait_until(Duration::from_secs(10), streaming(0)).await,
        "no standby streams"
    );
    let large = "x".repeat(8192);
    let large_commit = |id: i32| {
        let (client, large) = (&client, &large);
        async move {
            client.batch_execute("begin").await.unwrap();
            client
                .batch_execute(&format!("insert into t values ({id}, '{large}')"))
                .await
                .unwrap();
            let started = Instant::now();
            client.batch_execute("commit").await.expect("committed");
            started.elapsed()
        }
    };
    let log = h.proxy.commit_log();
    let unconfirmed = || log.large_unconfirmed.load(Ordering::Acquire);

    // The first waits the limit out: until then the sampler was not looking.
    large_commit(1).await;
    assert_eq!(unconfirmed(), 1);
    let known = understudy_testkit::wait_until(Duration::from_secs(10), || async {
        log.lsn
            .standbys_absent_for()
            .is_some_and(|absent| absent >= WAIT)
    })
    .await;
    assert!(known, "the sampler goes on finding no standby");
    let took = large_commit(2).await;
    assert!(
        took < WAIT / 2,
        "acknowledged at once without a standby, took {took:?}"
    );
    assert_eq!(unconfirmed(), 2, "and counted");

    // The standby is back: the next large COMMIT waits for it, and is
    // acknowledged once it has the transaction, not when the wait runs out.
    h.cluster.standby_mut(0).start().await.unwrap();
    assert!(
        understudy_testkit::wait_until(Duration::from_secs(30), streaming(1)).await,
        "the standby streams again"
    );
    let seen = understudy_testkit::wait_until(Duration::from_secs(10), || async {
        log.lsn.standbys_absent_for().is_none()
    })
    .await;
    assert!(seen, "the sampler saw the standby back");
    large_commit(3).await;
    assert_eq!(unconfirmed(), 2, "confirmed by the standby");
}
