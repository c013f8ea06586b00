//! A COMMIT whose acknowledgement is lost in a failover is resolved exactly
//! once by the commit ledger: when the new primary has the transaction, the
//! client is told it committed; when it does not, the transaction is
//! replayed and committed there. Either way the row exists once.
//!
//! Synchronous replication holds the COMMIT on the old primary at the exact
//! moment that matters: after the commit record is written, before the
//! client hears of it.

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use understudy_integration::{Harness, Target};

const DEADLINE: Duration = Duration::from_secs(30);

type Commit = tokio::task::JoinHandle<(tokio_postgres::Client, Result<(), tokio_postgres::Error>)>;

/// The COMMIT's session and answer, once the client has it.
async fn answered(commit: Commit) -> (tokio_postgres::Client, Result<(), tokio_postgres::Error>) {
    tokio::time::timeout(DEADLINE, commit)
        .await
        .expect("the COMMIT is answered")
        .expect("the COMMIT's task")
}

/// A cluster with table `t`, and a session through the proxy that ran
/// `opening` (a Query each) and sent `commit`: the commit record reaches the synchronous
/// standby, which does not apply it, so the primary never acknowledges it.
/// Returns the COMMIT's task once the primary waits for the standby.
async fn commit_the_standby_received(
    h: &Harness,
    opening: &[&str],
    commit: &'static str,
) -> Commit {
    h.cluster
        .connect()
        .await
        .batch_execute("create table t (id int)")
        .await
        .unwrap();
    h.make_standby_synchronous("remote_apply").await;
    let standby = h.cluster.connect_to(1).await;
    let client = h.connect(Target::Proxy).await;
    for sql in opening {
        client.batch_execute(sql).await.unwrap();
    }
    standby
        .batch_execute("select pg_wal_replay_pause()")
        .await
        .unwrap();
    let commit = tokio::spawn(async move {
        let result = client.batch_execute(commit).await;
        (client, result)
    });
    h.commit_waiting_for_the_standby().await;
    commit
}

/// As [`commit_the_standby_received`], but the standby's WAL receiver is
/// frozen, then killed with the primary (which is killed here, and the
/// standby promoted): the commit record never gets there (what its socket
/// held is lost), and the primary never acknowledged the COMMIT.
async fn commit_the_standby_never_received(
    h: &mut Harness,
    opening: &str,
    commit: &'static str,
) -> Commit {
    h.cluster
        .connect()
        .await
        .batch_execute("create table t (id int)")
        .await
        .unwrap();
    h.make_standby_synchronous("on").await;
    let standby = h.cluster.connect_to(1).await;
    let receiver: i32 = standby
        .query_one("select pid from pg_stat_wal_receiver", &[])
        .await
        .unwrap()
        .get(0);
    let client = h.connect(Target::Proxy).await;
    client.batch_execute(opening).await.unwrap();
    kill(Pid::from_raw(receiver), Signal::SIGSTOP).unwrap();
    let commit = tokio::spawn(async move {
        let result = client.batch_execute(commit).await;
        (client, result)
    });
    h.commit_waiting_for_the_standby().await;

    h.cluster.primary().kill(Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(receiver), Signal::SIGKILL).unwrap();
    h.promote_standby().await;
    commit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_that_reached_the_standby_is_reported_once() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let commit =
        commit_the_standby_received(&h, &["begin; insert into t values (1)"], "commit").await;

    h.fail_over().await;

    let (client, result) = answered(commit).await;
    result.expect("the COMMIT succeeds");
    assert_eq!(h.ids_on_new_primary("t").await, [1]);
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1, "the session goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_that_never_reached_the_standby_is_replayed_once() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let commit =
        commit_the_standby_never_received(&mut h, "begin; insert into t values (1)", "commit")
            .await;

    let (_client, result) = answered(commit).await;
    result.expect("the COMMIT succeeds");
    assert_eq!(h.ids_on_new_primary("t").await, [1]);
}

/// How the client sends its autocommit INSERT.
#[derive(Clone, Copy)]
enum Protocol {
    /// Parse/Bind/Execute/Sync (tokio-postgres `execute`).
    Extended,
    /// One Query message (tokio-postgres `simple_query`).
    Simple,
    /// One Query message with two INSERTs (of 1 and 2).
    SimpleTwoStatements,
    /// One Query message inserting a random id, which it returns.
    SimpleRandom,
    /// One Query message with a whole transaction block.
    SimpleTransaction,
    /// One Query message with DDL and the INSERT.
    SimpleWithDdl,
    /// One Query message with a whole transaction block and a statement
    /// after its COMMIT, which is not translated.
    SimpleCommitInTheMiddle,
}

/// Sends an autocommit INSERT of 1 and loses the primary after the server
/// committed it locally but before any acknowledgement left it (the commit
/// waits for a frozen synchronous standby, then the backend is frozen and
/// killed with its server). The standby's WAL receiver is killed too, so
/// the commit record it may hold unread in its socket is lost: the new
/// primary never has the INSERT. Returns the client and the INSERT's outcome.
async fn autocommit_insert_lost_before_its_ack(
    h: &mut Harness,
    protocol: Protocol,
) -> (tokio_postgres::Client, Result<(), tokio_postgres::Error>) {
    autocommit_insert_lost_before_its_ack_returning(h, protocol, Default::default()).await
}

/// [`autocommit_insert_lost_before_its_ack`], leaving in `returned_ids` the
/// ids a `SimpleRandom` INSERT returned to the client.
async fn autocommit_insert_lost_before_its_ack_returning(
    h: &mut Harness,
    protocol: Protocol,
    returned_ids: std::sync::Arc<std::sync::Mutex<Vec<i32>>>,
) -> (tokio_postgres::Client, Result<(), tokio_postgres::Error>) {
    h.cluster
        .connect()
        .await
        .batch_execute("create table t (id int)")
        .await
        .unwrap();
    h.make_standby_synchronous("on").await;
    let standby = h.cluster.connect_to(1).await;
    let receiver: i32 = standby
        .query_one("select pid from pg_stat_wal_receiver", &[])
        .await
        .unwrap()
        .get(0);
    let client = h.connect(Target::Proxy).await;
    let prepared = client.prepare("insert into t values (1)").await.unwrap();
    kill(Pid::from_raw(receiver), Signal::SIGSTOP).unwrap();
    let insert = tokio::spawn(async move {
        let returned_ids = &returned_ids;
        let result = match protocol {
            Protocol::Extended => client.execute(&prepared, &[]).await.map(|n| {
                assert_eq!(n, 1, "the INSERT's row count");
            }),
            Protocol::Simple => {
                client
                    .simple_query("insert into t values (1)")
                    .await
                    .map(|messages| {
                        assert_eq!(command_counts(&messages), [1], "one INSERT of one row");
                    })
            }
            Protocol::SimpleRandom => client
                .simple_query("insert into t values ((random() * 1000000)::int) returning id")
                .await
                .map(|messages| {
                    let returned: Vec<i32> = messages
                        .iter()
                        .filter_map(|m| match m {
                            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
                            _ => None,
                        })
                        .filter_map(|id| id.parse().ok())
                        .collect();
                    *returned_ids.lock().unwrap() = returned;
                }),
            Protocol::SimpleTransaction => client
                .simple_query("begin; insert into t values (1); commit")
                .await
                .map(|_| ()),
            Protocol::SimpleWithDdl => client
                .simple_query("create table u (id int); insert into t values (1)")
                .await
                .map(|_| ()),
            Protocol::SimpleCommitInTheMiddle => client
                .simple_query("begin; insert into t values (1); commit; select 1")
                .await
                .map(|_| ()),
            Protocol::SimpleTwoStatements => client
                .simple_query("insert into t values (1); insert into t values (2)")
                .await
                .map(|_| ()),
        };
        (client, result)
    });
    let backend = h.commit_waiting_for_the_standby().await;
    kill(Pid::from_raw(backend), Signal::SIGSTOP).unwrap();
    h.cluster.primary().kill(Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(backend), Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(receiver), Signal::SIGKILL).unwrap();
    h.promote_standby().await;
    tokio::time::timeout(DEADLINE, insert)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_autocommit_write_in_flight_that_never_reached_the_standby_is_replayed_once() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (client, result) = autocommit_insert_lost_before_its_ack(&mut h, Protocol::Extended).await;
    result.expect("the INSERT succeeds once");
    assert_eq!(h.ids_on_new_primary("t").await, [1]);
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1, "the session goes on");
}

/// Runs `setup` on the primary, then `send` with a client of the proxy: the
/// commit it makes (or its first) reaches the standby, which does not apply
/// it, so the primary never answers. Fails over and returns what `send`
/// returned.
async fn sent_while_the_standby_holds_its_commit<F, Fut, R>(
    h: &mut Harness,
    setup: &str,
    send: F,
) -> R
where
    F: FnOnce(tokio_postgres::Client) -> Fut,
    Fut: std::future::Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    h.cluster
        .connect()
        .await
        .batch_execute(setup)
        .await
        .unwrap();
    h.make_standby_synchronous("remote_apply").await;
    let standby = h.cluster.connect_to(1).await;
    let client = h.connect(Target::Proxy).await;
    standby
        .batch_execute("select pg_wal_replay_pause()")
        .await
        .unwrap();
    let task = tokio::spawn(send(client));
    h.commit_waiting_for_the_standby().await;

    h.fail_over().await;

    tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap()
}

/// [`sent_while_the_standby_holds_its_commit`] for `statement` sent with
/// the extended protocol: the client and the statement's outcome.
async fn extended_statement_the_standby_received(
    h: &mut Harness,
    setup: &str,
    statement: &'static str,
) -> (tokio_postgres::Client, Result<u64, tokio_postgres::Error>) {
    sent_while_the_standby_holds_its_commit(h, setup, |client| async move {
        let result = client.execute(statement, &[]).await;
        (client, result)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_autocommit_write_in_flight_that_reached_the_standby_is_reported_once() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (client, result) = extended_statement_the_standby_received(
        &mut h,
        "create table t (id int)",
        "insert into t values (1)",
    )
    .await;
    assert_eq!(result.expect("the INSERT succeeds"), 1, "its row count");
    assert_eq!(h.ids_on_new_primary("t").await, [1], "applied once");
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1, "the session goes on");
}

/// The row counts of the CommandCompletes of a simple Query's reply.
fn command_counts(messages: &[tokio_postgres::SimpleQueryMessage]) -> Vec<u64> {
    messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_autocommit_write_in_flight_that_never_reached_the_standby_is_replayed_once() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (client, result) = autocommit_insert_lost_before_its_ack(&mut h, Protocol::Simple).await;
    result.expect("the INSERT succeeds once");
    assert_eq!(h.ids_on_new_primary("t").await, [1]);
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1, "the session goes on");
}

/// Sends `sql` as one simple Query, whose commit reaches the standby but is
/// never acknowledged, fails over, and checks the client got its rows
/// (`rows`: their first column) and its row counts once, and that rows 1
/// and 2 exist once. The database has a function `add_rows()` and a
/// procedure `add_two()` that insert them.
async fn simple_query_that_reached_the_standby(sql: &'static str, rows: &[&str], counts: &[u64]) {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (client, result) = sent_while_the_standby_holds_its_commit(
        &mut h,
        "create table t (id int);
         create function add_rows() returns setof int language sql as
             $$ insert into t values (1), (2) returning id * 10 $$;
         create procedure add_two() language sql as $$ insert into t values (1), (2) $$",
        |client| async move {
            let result = client.simple_query(sql).await;
            (client, result)
        },
    )
    .await;
    let messages = result.expect("the Query succeeds");
    let returned: Vec<&str> = messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
            _ => None,
        })
        .collect();
    assert_eq!(returned, rows, "its rows, once");
    assert_eq!(command_counts(&messages), counts, "its row counts, once");
    assert_eq!(h.ids_on_new_primary("t").await, [1, 2], "applied once");
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1, "the session goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_autocommit_write_in_flight_that_reached_the_standby_is_reported_once() {
    simple_query_that_reached_the_standby(
        "insert into t values (1), (2) returning id * 10",
        &["10", "20"],
        &[2],
    )
    .await;
}

/// A `SELECT` calling a function that writes is stamped like a write: the
/// ledger shows it committed, so it is not run a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn select_calling_a_writing_function_in_flight_that_reached_the_standby_is_reported_once() {
    simple_query_that_reached_the_standby("select * from add_rows()", &["10", "20"], &[2]).await;
}

/// A `CALL` of a procedure that cannot commit inside it is stamped like a
/// write: the ledger shows it committed, so it is not run a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_call_in_flight_that_reached_the_standby_is_reported_once() {
    simple_query_that_reached_the_standby("call add_two()", &[], &[0]).await;
}

/// A `DO` block that does not end transactions inside it is stamped like a
/// write too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_do_block_in_flight_that_reached_the_standby_is_reported_once() {
    simple_query_that_reached_the_standby(
        "do $$ begin insert into t values (1); insert into t values (2); end $$",
        &[],
        &[0],
    )
    .await;
}

/// Maintenance that changes no data (`VACUUM`, `ANALYZE`, …) is not a write
/// whose outcome matters: in flight at a failover it is run again on the
/// new primary, and the client gets its reply, not `08007`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_in_flight_is_run_again_on_the_new_primary() {
    let mut h = Harness::start_with(1, |_| {}).await;
    // The statistics' commit is the one the primary never answers.
    let (client, result) = sent_while_the_standby_holds_its_commit(
        &mut h,
        "create table t (id int); insert into t select generate_series(1, 1000)",
        |client| async move {
            let result = client.simple_query("analyze t").await;
            (client, result)
        },
    )
    .await;
    result.expect("the ANALYZE succeeds");
    let analyzed: bool = client
        .query_one(
            "select count(*) > 0 from pg_stats where tablename = 't'",
            &[],
        )
        .await
        .expect("the session goes on")
        .get(0);
    assert!(analyzed, "the new primary has the table's statistics");
}

/// A procedure that commits inside it cannot be resolved by a stamp, which
/// commits with its last transaction: what it committed before is on the
/// new primary whatever the ledger says. In flight at a failover, its
/// outcome is unknown (`08007`), and it is not run a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_of_a_procedure_that_commits_inside_in_flight_gets_08007_and_is_not_run_again() {
    let mut h = Harness::start_with(1, |_| {}).await;
    // The procedure's first COMMIT is the one the primary never returns from.
    let (client, result) = extended_statement_the_standby_received(
        &mut h,
        "create table t (id int);
         create procedure add_in_two_commits() language plpgsql as $$
         begin
             insert into t values (1);
             commit;
             insert into t values (2);
         end $$",
        "call add_in_two_commits()",
    )
    .await;
    let error = result.expect_err("the outcome of the CALL is unknown");
    assert_eq!(understudy_integration::sqlstate(&error), "08007", "{error}");
    assert_eq!(
        h.ids_on_new_primary("t").await,
        [1],
        "what the procedure committed, once"
    );
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1, "the session goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_sent_as_one_query_that_reached_the_standby_is_reported_once() {
    simple_query_that_reached_the_standby(
        "begin; insert into t values (1), (2) returning id * 10; commit",
        &["10", "20"],
        &[0, 2, 0],
    )
    .await;
}

/// The lost run returned a random id the client never received: the proxy
/// keeps an autocommit write's replies until its ReadyForQuery. So the
/// write is run again on the new primary and the client gets that run's
/// id, with no error, and the row exists once with that id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocommit_write_in_flight_returns_what_its_run_on_the_new_primary_returned() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let returned = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (client, result) = autocommit_insert_lost_before_its_ack_returning(
        &mut h,
        Protocol::SimpleRandom,
        std::sync::Arc::clone(&returned),
    )
    .await;
    result.expect("the INSERT succeeds once");
    let returned = returned.lock().unwrap().clone();
    assert_eq!(returned.len(), 1, "one id returned: {returned:?}");
    assert_eq!(
        h.ids_on_new_primary("t").await,
        returned,
        "the row the client was told of, once"
    );
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1, "the session goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_of_two_writes_in_flight_is_replayed_once() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (client, result) =
        autocommit_insert_lost_before_its_ack(&mut h, Protocol::SimpleTwoStatements).await;
    result.expect("the INSERTs succeed once");
    assert_eq!(h.ids_on_new_primary("t").await, [1, 2]);
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1, "the session goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_sent_as_one_query_in_flight_is_replayed_once() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (client, result) =
        autocommit_insert_lost_before_its_ack(&mut h, Protocol::SimpleTransaction).await;
    result.expect("the transaction commits once");
    assert_eq!(h.ids_on_new_primary("t").await, [1]);
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1, "the session goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_with_ddl_in_flight_is_replayed_once() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (client, result) =
        autocommit_insert_lost_before_its_ack(&mut h, Protocol::SimpleWithDdl).await;
    result.expect("the DDL and the INSERT succeed once");
    assert_eq!(h.ids_on_new_primary("t").await, [1]);
    let created: bool = client
        .query_one("select to_regclass('u') is not null", &[])
        .await
        .expect("the session goes on")
        .get(0);
    assert!(created, "the table the Query created is on the new primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_with_a_commit_in_the_middle_in_flight_gets_08007_and_the_session_goes_on() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (client, result) =
        autocommit_insert_lost_before_its_ack(&mut h, Protocol::SimpleCommitInTheMiddle).await;
    let err = result.expect_err("the outcome of the Query is unknown");
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("08007"),
        "{err}"
    );
    let rows: i64 = client
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert!(rows <= 1, "never applied twice, found {rows} rows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ledger_a_commit_in_flight_gets_08007() {
    let mut h = Harness::start_with(1, |c| c.journal.ledger = false).await;
    h.cluster
        .connect()
        .await
        .batch_execute("create table t (id int)")
        .await
        .unwrap();
    h.make_standby_synchronous("remote_apply").await;
    let standby = h.cluster.connect_to(1).await;
    let client = h.connect(Target::Proxy).await;
    client
        .batch_execute("begin; insert into t values (1)")
        .await
        .unwrap();
    standby
        .batch_execute("select pg_wal_replay_pause()")
        .await
        .unwrap();
    let commit = tokio::spawn(async move {
        let result = client.batch_execute("commit").await;
        (client, result)
    });
    h.commit_waiting_for_the_standby().await;

    h.fail_over().await;

    let (client, result) = answered(commit).await;
    let err = result.expect_err("nothing can tell whether the COMMIT took effect");
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("08007"),
        "{err}"
    );
    assert_eq!(h.ids_on_new_primary("t").await, [1], "never applied twice");
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1, "the session goes on");
    let no_ledger: bool = h
        .cluster
        .connect_to(1)
        .await
        .query_one("select to_regnamespace('understudy') is null", &[])
        .await
        .unwrap()
        .get(0);
    assert!(no_ledger, "no ledger schema was created");
}

/// A COMMIT that took effect on the lost server while the client had
/// already pipelined its next request behind it: the proxy knows the
/// transaction committed but has no answer for that request, which only the
/// lost server could give. The client is told the transaction committed
/// (`08007` with that message) — not `40001`, which would have it run the
/// transaction again — and the row exists once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_that_took_effect_with_a_request_pipelined_behind_it_is_reported_committed() {
    use bytes::BytesMut;
    use understudy_integration::understudy_testkit::{PASSWORD, SUPERUSER};
    use understudy_integration::RawConn;
    use understudy_protocol::backend::{tag, ErrorFields};
    use understudy_protocol::frontend::{encode_bind, encode_execute, encode_parse, encode_sync};

    let mut h = Harness::start_with(1, |_| {}).await;
    h.cluster
        .connect()
        .await
        .batch_execute("create table t (id int)")
        .await
        .unwrap();
    h.make_standby_synchronous("remote_apply").await;
    let standby = h.cluster.connect_to(1).await;
    let (mut conn, _key) = RawConn::login(h.port(Target::Proxy), SUPERUSER, PASSWORD).await;
    conn.simple_query("begin").await;
    conn.simple_query("insert into t values (1)").await;
    standby
        .batch_execute("select pg_wal_replay_pause()")
        .await
        .unwrap();
    let mut batches = BytesMut::new();
    for sql in ["commit", "select 2"] {
        encode_parse("", sql, &mut batches);
        encode_bind("", "", &mut batches);
        encode_execute("", &mut batches);
        encode_sync(&mut batches);
    }
    conn.send(&batches).await;
    h.commit_waiting_for_the_standby().await;

    h.fail_over().await;

    let mut errors = Vec::new();
    let mut completions = Vec::new();
    let mut readies = 0;
    while readies < 2 {
        let frame = tokio::time::timeout(DEADLINE, conn.read_frame())
            .await
            .expect("the client is answered")
            .expect("the session stays open");
        match frame.tag {
            tag::ERROR_RESPONSE => errors.push(ErrorFields::parse(&frame.body).unwrap()),
            tag::COMMAND_COMPLETE => completions.push(frame.body.clone()),
            tag::READY_FOR_QUERY => readies += 1,
            _ => {}
        }
    }
    assert!(
        completions.is_empty(),
        "no completion is made up: {completions:?}"
    );
    let first = errors.first().expect("an error for what was in flight");
    assert_eq!(first.code, "08007", "{first:?}");
    assert!(
        first.message.contains("the transaction committed"),
        "{first:?}"
    );
    assert_eq!(h.ids_on_new_primary("t").await, [1]);
    let frames = conn.simple_query("select 1").await;
    assert!(
        frames.iter().any(|f| f.tag == tag::DATA_ROW),
        "the session goes on"
    );
}

/// A `COMMIT AND CHAIN` that took effect, in a transaction opened by a
/// `BEGIN` of its own: the client is told it committed, and is in the
/// chained transaction, opened on the new primary by that `BEGIN` again, so
/// with the committed one's isolation level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_and_chain_that_reached_the_standby_goes_on_in_the_chained_transaction() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let opening = [
        "begin isolation level serializable",
        "insert into t values (1)",
    ];
    let commit = commit_the_standby_received(&h, &opening, "commit and chain").await;

    h.fail_over().await;

    let (client, result) = answered(commit).await;
    result.expect("the COMMIT AND CHAIN succeeds");
    let isolation: String = client
        .query_one("show transaction_isolation", &[])
        .await
        .expect("the session goes on")
        .get(0);
    assert_eq!(isolation, "serializable", "the chain goes on");
    client
        .batch_execute("insert into t values (2); rollback")
        .await
        .unwrap();
    assert_eq!(
        h.ids_on_new_primary("t").await,
        [1],
        "the COMMIT took effect once; the chained transaction is the client's to end"
    );
}

/// A `COMMIT AND CHAIN` that took effect, in a transaction whose `BEGIN`
/// shared its Query with another statement: what opened it is not known,
/// so the chained transaction cannot be opened again with its
/// characteristics. The client hears that its transaction committed
/// (`08007`) and is idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_and_chain_of_an_unknown_opening_that_reached_the_standby_is_reported_committed() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let opening = ["begin isolation level serializable; insert into t values (1)"];
    let commit = commit_the_standby_received(&h, &opening, "commit and chain").await;

    h.fail_over().await;

    let (client, result) = answered(commit).await;
    let error = result.expect_err("the chained transaction is not there");
    assert_eq!(understudy_integration::sqlstate(&error), "08007", "{error}");
    let message = error.as_db_error().map(|e| e.message()).unwrap_or_default();
    assert!(message.contains("committed"), "{message}");
    assert_eq!(h.ids_on_new_primary("t").await, [1]);
    let open: bool = client
        .query_one("select txid_current_if_assigned() is not null", &[])
        .await
        .expect("the session goes on")
        .get(0);
    assert!(!open, "no transaction is open");
}

/// A `COMMIT AND CHAIN` that did not take effect is replayed with its
/// transaction, and the chained transaction goes on on the new primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_and_chain_that_never_reached_the_standby_is_replayed_once() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let opening = "begin isolation level repeatable read; insert into t values (1)";
    let commit = commit_the_standby_never_received(&mut h, opening, "commit and chain").await;

    let (client, result) = answered(commit).await;
    result.expect("the COMMIT AND CHAIN succeeds");
    let isolation: String = client
        .query_one("show transaction_isolation", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(isolation, "repeatable read", "the chain goes on");
    client
        .batch_execute("insert into t values (2); commit")
        .await
        .unwrap();
    assert_eq!(h.ids_on_new_primary("t").await, [1, 2]);
}
