//! An autocommit `COPY … FROM STDIN` sent as a simple Query (what psql's
//! `\copy`, psycopg's `copy()`, asyncpg's `copy_records_to_table` and
//! JDBC's `CopyManager` send). The proxy runs it through the extended
//! protocol so that its commit carries a stamp; the client must not be able
//! to tell (the same bytes as PostgreSQL's, for rows, bad rows, CopyFail,
//! an error while the client still sends). Through a failover — while its
//! rows stream, and once its CopyDone was sent but before the client heard
//! the outcome — the client gets `COPY n` once and the rows exist once.

use std::time::Duration;

use bytes::BytesMut;
use futures_util::SinkExt;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::task::JoinHandle;
use understudy_integration::understudy_testkit::{PASSWORD, SUPERUSER};
use understudy_integration::{describe, Harness, RawConn, Target};
use understudy_protocol::backend::tag;
use understudy_protocol::frontend::{self, encode_query};
use understudy_protocol::{Frame, FrameWriter};

const DEADLINE: Duration = Duration::from_secs(30);

/// CopyData messages carrying the text rows `ids`, one per message.
fn rows(ids: std::ops::Range<i32>) -> BytesMut {
    let lines: Vec<String> = ids.map(|id| format!("{id}\n")).collect();
    copy_data(&lines.iter().map(String::as_str).collect::<Vec<_>>())
}

/// One CopyData message per line of `lines`.
fn copy_data(lines: &[&str]) -> BytesMut {
    let mut out = BytesMut::new();
    for line in lines {
        let mut w = FrameWriter::tagged(&mut out, frontend::tag::COPY_DATA);
        w.bytes(line.as_bytes());
        w.finish();
    }
    out
}

fn copy_done() -> BytesMut {
    let mut out = BytesMut::new();
    FrameWriter::tagged(&mut out, frontend::tag::COPY_DONE).finish();
    out
}

fn copy_fail(why: &str) -> BytesMut {
    let mut out = BytesMut::new();
    let mut w = FrameWriter::tagged(&mut out, frontend::tag::COPY_FAIL);
    w.cstr(why);
    w.finish();
    out
}

fn query(sql: &str) -> BytesMut {
    let mut out = BytesMut::new();
    encode_query(sql, &mut out);
    out
}

/// One step of a client's exchange.
enum Step {
    /// Send these bytes.
    Send(Vec<u8>),
    /// Read messages up to and including one of this type.
    ReadTo(u8),
}

/// Exchanges of a client running `COPY … FROM STDIN` outside a transaction
/// block, and whether the proxy's stamp leaves a ledger row (only for a
/// COPY that commits rows). Each runs on the same table contents directly and
/// through the proxy and must get the same messages back.
fn copy_exchanges() -> Vec<(&'static str, Vec<Step>, bool)> {
    use Step::{ReadTo, Send};
    let sql = "copy t from stdin";
    vec![
        (
            "rows, one firing a trigger's notice, then CopyDone",
            vec![
                Send(query(sql).to_vec()),
                Send(copy_data(&["1\ta\n", "2\tshout\n"]).to_vec()),
                Send(copy_done().to_vec()),
                ReadTo(tag::READY_FOR_QUERY),
            ],
            true,
        ),
        (
            "everything sent at once",
            vec![
                Send([query(sql), copy_data(&["3\tc\n"]), copy_done()].concat()),
                ReadTo(tag::READY_FOR_QUERY),
            ],
            true,
        ),
        (
            "a bad row among others, everything sent at once",
            vec![
                Send(
                    [
                        query(sql),
                        copy_data(&["4\td\n", "x\ty\n", "5\te\n"]),
                        copy_done(),
                    ]
                    .concat(),
                ),
                ReadTo(tag::READY_FOR_QUERY),
            ],
            false,
        ),
        (
            "a duplicate key found at CopyDone",
            vec![
                Send(query(sql).to_vec()),
                ReadTo(tag::COPY_IN_RESPONSE),
                Send([copy_data(&["1\tdup\n"]), copy_done()].concat()),
                ReadTo(tag::READY_FOR_QUERY),
            ],
            false,
        ),
        (
            "CopyFail",
            vec![
                Send(query(sql).to_vec()),
                Send(copy_data(&["6\tf\n"]).to_vec()),
                Send(copy_fail("the client gave up").to_vec()),
                ReadTo(tag::READY_FOR_QUERY),
            ],
            false,
        ),
        (
            "a bad row, the client waiting for the outcome before it ends the rows",
            vec![
                Send(query(sql).to_vec()),
                ReadTo(tag::COPY_IN_RESPONSE),
                Send(copy_data(&["7\tg\n", "not a number\n"]).to_vec()),
                ReadTo(tag::READY_FOR_QUERY),
                // Ignored by the server, which is no longer copying.
                Send([copy_data(&["8\th\n"]), copy_done()].concat()),
                Send(query("select count(*) from t").to_vec()),
                ReadTo(tag::READY_FOR_QUERY),
            ],
            false,
        ),
        // Stamped, but a transaction that wrote nothing leaves no ledger
        // row (docs/decisions/0013).
        (
            "no rows",
            vec![
                Send(query(sql).to_vec()),
                Send(copy_done().to_vec()),
                ReadTo(tag::READY_FOR_QUERY),
            ],
            false,
        ),
    ]
}

async fn ledger_rows(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one("select count(*) from understudy.ledger", &[])
        .await
        .unwrap()
        .get(0)
}

/// Runs [`copy_exchanges`] on `port` from the same table contents; returns
/// the messages each exchange got and whether it added a ledger row.
async fn copy_replies(h: &Harness, port: u16) -> Vec<(Vec<String>, bool)> {
    let admin = h.connect(Target::Direct).await;
    admin
        .batch_execute(
            "drop table if exists public.t;
             create table public.t (id int primary key, note text);
             create trigger shout before insert on public.t for each row
                 when (new.note = 'shout') execute function public.shout();",
        )
        .await
        .unwrap();
    let (mut conn, _) = RawConn::login(port, SUPERUSER, PASSWORD).await;
    let mut replies = Vec::new();
    for (_, steps, _) in copy_exchanges() {
        let before = ledger_rows(&admin).await;
        let mut messages = Vec::new();
        for step in steps {
            match step {
                Step::Send(bytes) => conn.send(&bytes).await,
                Step::ReadTo(last) => loop {
                    let frame = conn.read_frame().await.expect("an answer");
                    messages.push(format!("{} {:?}", describe(&frame), frame.body));
                    if frame.tag == last {
                        break;
                    }
                },
            }
        }
        replies.push((messages, ledger_rows(&admin).await > before));
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_is_stamped_and_answered_exactly_as_postgresql_answers() {
    let h = Harness::start().await;
    let direct = h.connect(Target::Direct).await;
    direct
        .batch_execute(
            "create function public.shout() returns trigger language plpgsql as
                 $$ begin raise notice 'row %', new.id; return new; end $$",
        )
        .await
        .unwrap();
    // The first session through the proxy creates the ledger.
    let _proxied = h.connect(Target::Proxy).await;
    let expected = copy_replies(&h, h.port(Target::Direct)).await;
    let got = copy_replies(&h, h.port(Target::Proxy)).await;
    for ((what, _, stamp), (expected, got)) in
        copy_exchanges().iter().zip(expected.iter().zip(&got))
    {
        assert_eq!(got.0, expected.0, "the replies to {what}");
        assert!(!expected.1, "nothing stamps directly: {what}");
        assert_eq!(got.1, *stamp, "stamped through the proxy: {what}");
    }
}

async fn create_table(h: &Harness) {
    h.cluster
        .connect()
        .await
        .batch_execute("create table t (id int)")
        .await
        .unwrap();
}

/// Starts `COPY t FROM STDIN` on `conn` and reads its CopyInResponse.
async fn start_copy(conn: &mut RawConn) {
    let mut out = BytesMut::new();
    encode_query("copy t from stdin", &mut out);
    conn.send(&out).await;
    conn.expect_frame(tag::COPY_IN_RESPONSE).await;
}

/// Reads the end of a COPY: its CommandComplete, which must say `COPY n`,
/// and ReadyForQuery outside a transaction block.
async fn expect_copied(conn: &mut RawConn, n: usize) {
    let frame: Frame = conn.read_frame().await.expect("the COPY's answer");
    assert_eq!(
        (frame.tag, String::from_utf8_lossy(&frame.body)),
        (tag::COMMAND_COMPLETE, format!("COPY {n}\0").into()),
        "the COPY's answer: {}",
        describe(&frame)
    );
    let ready = conn.expect_frame(tag::READY_FOR_QUERY).await;
    assert_eq!(&ready.body[..], b"I", "outside a transaction block");
}

async fn session_goes_on(conn: &mut RawConn) {
    let frames = conn.simple_query("select 1").await;
    assert!(
        frames.iter().any(|f| f.tag == tag::DATA_ROW),
        "the session goes on: {:?}",
        frames.iter().map(describe).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_whose_rows_are_streaming_moves_and_copies_every_row_once() {
    let mut h = Harness::start_with(1, |_| {}).await;
    create_table(&h).await;
    let (mut conn, _) = RawConn::login(h.port(Target::Proxy), SUPERUSER, PASSWORD).await;
    start_copy(&mut conn).await;
    conn.send(&rows(1..101)).await;

    h.fail_over().await;

    conn.send(&rows(101..201)).await;
    conn.send(&copy_done()).await;
    expect_copied(&mut conn, 200).await;
    assert_eq!(
        h.ids_on_new_primary("t").await,
        (1..201).collect::<Vec<_>>()
    );
    session_goes_on(&mut conn).await;
}

/// How the client sends its COPY.
#[derive(Debug, Clone, Copy)]
enum Protocol {
    /// A simple Query, then the rows and CopyDone.
    Simple,
    /// tokio-postgres: Bind/Execute/Sync, the rows, then CopyDone and a
    /// second Sync (the server ignores the first one while it copies).
    Extended,
}

/// A session through the proxy, of the kind `protocol` needs.
enum Session {
    Raw(RawConn),
    Driver(tokio_postgres::Client),
}

/// Opens a session through the proxy (before the test stalls replication:
/// the proxy's first session may create the ledger, a commit of its own).
async fn open_session(h: &Harness, protocol: Protocol) -> Session {
    match protocol {
        Protocol::Simple => Session::Raw(
            RawConn::login(h.port(Target::Proxy), SUPERUSER, PASSWORD)
                .await
                .0,
        ),
        Protocol::Extended => Session::Driver(h.connect(Target::Proxy).await),
    }
}

/// Starts `session` copying rows 1 to 100 into `t`, in a task of its own
/// that ends once the COPY is answered: it returns the rows the client was
/// told were copied, having checked that the session goes on.
fn copy_100_rows(session: Session) -> JoinHandle<u64> {
    tokio::spawn(async move {
        match session {
            Session::Raw(mut conn) => {
                start_copy(&mut conn).await;
                conn.send(&rows(1..101)).await;
                conn.send(&copy_done()).await;
                expect_copied(&mut conn, 100).await;
                session_goes_on(&mut conn).await;
                100
            }
            Session::Driver(client) => {
                let sink = client
                    .copy_in::<_, bytes::Bytes>("copy t from stdin")
                    .await
                    .expect("the COPY starts");
                futures_util::pin_mut!(sink);
                let lines: String = (1..101).map(|id| format!("{id}\n")).collect();
                sink.send(lines.into()).await.expect("the rows are sent");
                let copied = sink.finish().await.expect("the COPY succeeds");
                let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
                assert_eq!(one, 1, "the session goes on");
                copied
            }
        }
    })
}

async fn a_copy_whose_commit_reached_the_standby(protocol: Protocol) {
    let mut h = Harness::start_with(1, |_| {}).await;
    create_table(&h).await;
    h.make_standby_synchronous("remote_apply").await;
    let session = open_session(&h, protocol).await;
    // The standby receives the commit record but does not apply it, so the
    // primary never acknowledges the COPY.
    h.cluster
        .connect_to(1)
        .await
        .batch_execute("select pg_wal_replay_pause()")
        .await
        .unwrap();
    let copy = copy_100_rows(session);
    h.commit_waiting_for_the_standby().await;

    h.fail_over().await;

    let copied = tokio::time::timeout(DEADLINE, copy).await.unwrap().unwrap();
    assert_eq!(copied, 100, "the client is told of its rows once");
    assert_eq!(
        h.ids_on_new_primary("t").await,
        (1..101).collect::<Vec<_>>()
    );
}

async fn a_copy_whose_commit_never_reached_the_standby(protocol: Protocol) {
    let mut h = Harness::start_with(1, |_| {}).await;
    create_table(&h).await;
    h.make_standby_synchronous("on").await;
    let standby = h.cluster.connect_to(1).await;
    let receiver: i32 = standby
        .query_one("select pid from pg_stat_wal_receiver", &[])
        .await
        .unwrap()
        .get(0);
    let session = open_session(&h, protocol).await;
    kill(Pid::from_raw(receiver), Signal::SIGSTOP).unwrap();
    let copy = copy_100_rows(session);
    let backend = h.commit_waiting_for_the_standby().await;
    // The COPY's backend dies with its commit unacknowledged, and the
    // standby never gets the commit record.
    kill(Pid::from_raw(backend), Signal::SIGSTOP).unwrap();
    h.cluster.primary().kill(Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(backend), Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(receiver), Signal::SIGKILL).unwrap();
    h.promote_standby().await;

    let copied = tokio::time::timeout(DEADLINE, copy).await.unwrap().unwrap();
    assert_eq!(copied, 100, "the client is told of its rows once");
    assert_eq!(
        h.ids_on_new_primary("t").await,
        (1..101).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_whose_commit_reached_the_standby_is_reported_once() {
    a_copy_whose_commit_reached_the_standby(Protocol::Simple).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_whose_commit_never_reached_the_standby_is_replayed_once() {
    a_copy_whose_commit_never_reached_the_standby(Protocol::Simple).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_protocol_copy_whose_commit_reached_the_standby_is_reported_once() {
    a_copy_whose_commit_reached_the_standby(Protocol::Extended).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extended_protocol_copy_whose_commit_never_reached_the_standby_is_replayed_once() {
    a_copy_whose_commit_never_reached_the_standby(Protocol::Extended).await;
}

/// After a COPY sent with the extended protocol, whose first Sync the
/// server ignored, the session goes on as usual: the COPY and the next
/// write each stamped, the write answered, the session movable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_sent_with_the_extended_protocol_leaves_the_session_as_it_was() {
    let mut h = Harness::start_with(1, |_| {}).await;
    create_table(&h).await;
    let client = h.connect(Target::Proxy).await;
    let admin = h.connect(Target::Direct).await;
    let stamps_before = ledger_rows(&admin).await;
    let sink = client
        .copy_in::<_, bytes::Bytes>("copy t from stdin")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1\n2\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    assert_eq!(
        ledger_rows(&admin).await,
        stamps_before + 1,
        "the COPY was stamped"
    );
    let inserted = tokio::time::timeout(
        DEADLINE,
        client.execute("insert into t values ($1)", &[&3i32]),
    )
    .await
    .expect("the INSERT is answered")
    .unwrap();
    assert_eq!(inserted, 1);
    assert_eq!(
        ledger_rows(&admin).await,
        stamps_before + 2,
        "the INSERT was stamped"
    );
    h.wait_replicated().await;
    h.fail_over().await;
    let rows: i64 = client
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 3, "the session moved with nothing lost");
}

/// A COPY acknowledged by a primary whose standby never got it (its WAL
/// sender frozen) is applied again on the new primary from the commit log,
/// once.
async fn an_acknowledged_copy_lost_with_the_primary(protocol: Protocol) {
    let mut h = Harness::start_with(1, |_| {}).await;
    create_table(&h).await;
    let session = open_session(&h, protocol).await;
    h.wait_replicated().await;
    let sender = h.freeze_wal_sender().await;
    let copied = tokio::time::timeout(DEADLINE, copy_100_rows(session))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(copied, 100);

    h.cluster.primary().kill(Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(sender), Signal::SIGKILL).unwrap();
    h.promote_standby().await;
    // A new session through the proxy waits for the commit log's re-apply.
    let client = h.connect(Target::Proxy).await;
    let count: i64 = client
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 100);
    assert_eq!(
        h.ids_on_new_primary("t").await,
        (1..101).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_copy_the_standby_lacks_is_applied_again() {
    an_acknowledged_copy_lost_with_the_primary(Protocol::Simple).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acknowledged_extended_protocol_copy_the_standby_lacks_is_applied_again() {
    an_acknowledged_copy_lost_with_the_primary(Protocol::Extended).await;
}

/// An autocommit COPY too large for the journal cannot be applied again
/// from the commit log: its acknowledgement waits for the standby, and a
/// primary lost first gives the client `40001`, never a row count for rows
/// the database does not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_too_large_for_the_journal_is_acknowledged_only_once_the_standby_has_it() {
    let mut h = Harness::start_with(1, |config| config.journal.max_transaction_bytes = 256).await;
    create_table(&h).await;
    let client = h.connect(Target::Proxy).await;
    h.wait_replicated().await;
    let sender = h.freeze_wal_sender().await;
    let copy = tokio::spawn(async move {
        let sink = client
            .copy_in::<_, bytes::Bytes>("copy t from stdin")
            .await?;
        futures_util::pin_mut!(sink);
        // About 400 bytes of rows: more than the journal keeps.
        let lines: String = (1..101).map(|id| format!("{id}\n")).collect();
        sink.send(lines.into()).await?;
        sink.finish().await
    });
    let log = h.proxy.commit_log();
    let committed = understudy_integration::understudy_testkit::wait_until(DEADLINE, || async {
        log.too_large.load(std::sync::atomic::Ordering::Acquire) == 1
    })
    .await;
    assert!(committed, "the COPY committed on the primary");
    assert!(
        !copy.is_finished(),
        "its acknowledgement waits for the standby"
    );

    h.cluster.primary().kill(Signal::SIGKILL).unwrap();
    kill(Pid::from_raw(sender), Signal::SIGKILL).unwrap();
    h.promote_standby().await;
    let error = tokio::time::timeout(DEADLINE, copy)
        .await
        .expect("the COPY is answered after the failover")
        .unwrap()
        .expect_err("the new primary does not have the rows");
    assert_eq!(understudy_integration::sqlstate(&error), "40001", "{error}");
    assert_eq!(h.ids_on_new_primary("t").await, Vec::<i32>::new());
}
