//! Query cancellation through the proxy: the client's cancel key reaches the
//! right backend quickly, a wrong key cancels nobody, and the pid a client
//! is told in BackendKeyData is its backend's `pg_backend_pid()`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use nix::sys::signal::Signal;
use tokio_postgres::{Client, NoTls};
use understudy_integration::understudy_testkit::{wait_until, PASSWORD, SUPERUSER};
use understudy_integration::{data_row_text, sqlstate, Harness, RawConn, Target};
use understudy_protocol::backend::tag;
use understudy_protocol::backend::BackendKeyData;
use understudy_protocol::frontend::{
    self, encode_bind, encode_execute, encode_flush, encode_parse, encode_query, encode_sync,
};
use understudy_protocol::startup::CancelRequest;
use understudy_protocol::FrameWriter;

async fn backend_pid(client: &Client) -> i32 {
    client
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Waits until backend `pid` sleeps in pg_sleep. Its statement's text is
/// not enough: pg_stat_activity shows it as active while it is parsed too,
/// and a cancel then would hit the Parse instead.
async fn wait_until_sleeping(h: &Harness, pid: i32) {
    let observer = h.connect(Target::Direct).await;
    let sleeping = wait_until(Duration::from_secs(10), || async {
        observer
            .query_one(
                "select count(*) from pg_stat_activity \
                 where pid = $1 and state = 'active' and wait_event = 'PgSleep'",
                &[&pid],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 1
    })
    .await;
    assert!(sleeping, "backend {pid} never started its pg_sleep");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_through_the_proxy_stops_pg_sleep_within_a_second() {
    let h = Harness::start().await;
    let client = Arc::new(h.connect(Target::Proxy).await);
    let pid = backend_pid(&client).await;
    let token = client.cancel_token();
    let sleeper = {
        let client = Arc::clone(&client);
        tokio::spawn(async move { client.query_one("select pg_sleep(60)", &[]).await })
    };
    wait_until_sleeping(&h, pid).await;
    let started = Instant::now();
    token.cancel_query(NoTls).await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("the cancelled query ends")
        .unwrap();
    let elapsed = started.elapsed();
    let err = result.expect_err("pg_sleep(60) must be cancelled");
    assert_eq!(sqlstate(&err), "57014", "{err}");
    assert!(elapsed < Duration::from_secs(1), "cancel took {elapsed:?}");
    // tokio-postgres does not wait for the cancel connection to close, and
    // until the server closes it the cancel's signal may still reach the
    // backend (PostgreSQL signals it twice) and cancel whatever runs then.
    // The proxy counts the cancel as forwarded once the server closed it.
    let metrics = h.proxy.metrics();
    let forwarded = wait_until(Duration::from_secs(10), || async {
        metrics.cancel_forwarded_total.load(Ordering::Relaxed) == 1
    })
    .await;
    assert!(forwarded, "the server never finished with the cancel");
    // The session goes on, on the same backend.
    assert_eq!(backend_pid(&client).await, pid);
    let n: i32 = client.query_one("select 41 + 1", &[]).await.unwrap().get(0);
    assert_eq!(n, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_with_a_wrong_key_cancels_nobody() {
    let h = Harness::start().await;
    let client = Arc::new(h.connect(Target::Proxy).await);
    let pid = backend_pid(&client).await;
    let victim = {
        let client = Arc::clone(&client);
        tokio::spawn(async move { client.query_one("select pg_sleep(1)", &[]).await })
    };
    wait_until_sleeping(&h, pid).await;
    // The victim's real pid with a random key: only the key is wrong.
    let mut request = BytesMut::new();
    CancelRequest {
        process_id: pid,
        secret_key: rand::random(),
    }
    .encode(&mut request);
    assert_eq!(request.len(), 16);
    let mut conn = RawConn::connect(h.port(Target::Proxy)).await;
    conn.send(&request).await;
    assert!(
        conn.closed().await,
        "the proxy answers a CancelRequest by closing"
    );
    assert!(
        !victim.is_finished(),
        "the cancel request must be handled while the victim still sleeps"
    );
    let result = tokio::time::timeout(Duration::from_secs(10), victim)
        .await
        .expect("the victim's query ends")
        .unwrap();
    assert!(
        result.is_ok(),
        "the victim was cancelled: {:?}",
        result.err()
    );
    let metrics = h.proxy.metrics();
    assert_eq!(metrics.cancel_requests_total.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.cancel_forwarded_total.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_key_data_pid_is_the_backend_pid() {
    let h = Harness::start().await;
    let (mut conn, key) = RawConn::login(h.port(Target::Proxy), SUPERUSER, PASSWORD).await;
    let frames = conn.simple_query("select pg_backend_pid()").await;
    let row = frames
        .iter()
        .find(|f| f.tag == tag::DATA_ROW)
        .expect("a row");
    let pid: i32 = data_row_text(&row.body, 0).unwrap().parse().unwrap();
    assert_eq!(
        pid, key.process_id,
        "BackendKeyData pid vs pg_backend_pid()"
    );

    // The same seen from the server: the session's application_name is
    // found directly in pg_stat_activity with that pid.
    let mut config = h.pg_config(Target::Proxy, SUPERUSER, PASSWORD);
    config.application_name("cancel-pid-check");
    let client = understudy_integration::connect_with(&config).await.unwrap();
    let through_proxy = backend_pid(&client).await;
    let observer = h.connect(Target::Direct).await;
    let seen: Vec<i32> = observer
        .query(
            "select pid from pg_stat_activity where application_name = 'cancel-pid-check'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, vec![through_proxy]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_cancel_request_with_the_announced_key_cancels() {
    let h = Harness::start().await;
    let port = h.port(Target::Proxy);
    let (mut conn, key) = RawConn::login(port, SUPERUSER, PASSWORD).await;
    let mut query = BytesMut::new();
    understudy_protocol::frontend::encode_query("select pg_sleep(60)", &mut query);
    conn.send(&query).await;
    wait_until_sleeping(&h, key.process_id).await;
    let mut request = BytesMut::new();
    CancelRequest {
        process_id: key.process_id,
        secret_key: key.secret_key,
    }
    .encode(&mut request);
    let started = Instant::now();
    let mut canceller = RawConn::connect(port).await;
    canceller.send(&request).await;
    // RowDescription comes first, then the error.
    conn.expect_frame(tag::ROW_DESCRIPTION).await;
    let error = conn.expect_error().await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "cancel took {:?}",
        started.elapsed()
    );
    assert_eq!(error.code, "57014", "{error}");
    conn.expect_frame(tag::READY_FOR_QUERY).await;
    let frames = conn.simple_query("select 7").await;
    let row = frames
        .iter()
        .find(|f| f.tag == tag::DATA_ROW)
        .expect("a row");
    assert_eq!(data_row_text(&row.body, 0).as_deref(), Some("7"));
}

/// Sends the proxy a CancelRequest with `key` on a connection of its own,
/// which is returned open.
async fn send_cancel(port: u16, key: BackendKeyData) -> RawConn {
    let mut request = BytesMut::new();
    CancelRequest {
        process_id: key.process_id,
        secret_key: key.secret_key,
    }
    .encode(&mut request);
    let mut canceller = RawConn::connect(port).await;
    canceller.send(&request).await;
    canceller
}

/// The pattern of the flaky run of
/// `cancel_through_the_proxy_stops_pg_sleep_within_a_second`: tokio-postgres
/// returns the cancel's error as soon as it reads it and sends its next
/// requests at once, behind the failed batch's Sync but before that Sync's
/// ReadyForQuery. The server runs them; the proxy must not take them for
/// skipped, or it forgets the statement they prepare and later stamps a
/// read of it as if it wrote (and a cancel hitting that stamp then failed
/// the read with the stamp's message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_prepared_behind_a_cancelled_statement_is_not_stamped() {
    let h = Harness::start().await;
    let port = h.port(Target::Proxy);
    let (mut conn, key) = RawConn::login(port, SUPERUSER, PASSWORD).await;
    let mut out = BytesMut::new();
    encode_parse("sleeper", "select pg_sleep(60)", &mut out);
    encode_bind("", "sleeper", &mut out);
    encode_execute("", &mut out);
    encode_flush(&mut out);
    conn.send(&out).await;
    wait_until_sleeping(&h, key.process_id).await;
    let mut canceller = send_cancel(port, key).await;
    assert!(canceller.closed().await, "the cancel is served");
    conn.expect_frame(tag::PARSE_COMPLETE).await;
    conn.expect_frame(tag::BIND_COMPLETE).await;
    let error = conn.expect_error().await;
    assert_eq!(error.code, "57014", "{error}");

    // The server skips to a Sync it has not received yet: the Sync goes
    // with the next requests, which the server then runs.
    conn.sync_and_prepare("pid", "select pg_backend_pid()")
        .await;

    let mut out = BytesMut::new();
    encode_bind("", "pid", &mut out);
    encode_execute("", &mut out);
    encode_sync(&mut out);
    conn.send(&out).await;
    conn.expect_frame(tag::BIND_COMPLETE).await;
    let row = conn.expect_frame(tag::DATA_ROW).await;
    assert_eq!(
        data_row_text(&row.body, 0),
        Some(key.process_id.to_string())
    );
    conn.expect_frame(tag::COMMAND_COMPLETE).await;
    conn.expect_frame(tag::READY_FOR_QUERY).await;
    // A stamp would have left the proxy's statement on the backend.
    assert!(
        !conn.has_prepared_statement("understudy_stamp").await,
        "a batch of reads was stamped"
    );
}

/// Unfreezes a frozen postmaster when dropped, so that a failing test does
/// not leave its server stopped.
struct Frozen<'a>(&'a Harness);

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        let _ = self.0.cluster.primary().kill(Signal::SIGCONT);
    }
}

/// Freezes the primary's postmaster, which then accepts the cancel
/// connection (the kernel does) but neither handles it nor closes it, and
/// sends the proxy a cancel with `key`: once the proxy has it, the cancel is
/// in flight until the returned guard is dropped. Returns the guard and the
/// cancel connection.
async fn cancel_in_flight(h: &Harness, port: u16, key: BackendKeyData) -> (Frozen<'_>, RawConn) {
    h.cluster.primary().kill(Signal::SIGSTOP).unwrap();
    let frozen = Frozen(h);
    let canceller = send_cancel(port, key).await;
    let metrics = h.proxy.metrics();
    let seen = wait_until(Duration::from_secs(10), || async {
        metrics.cancel_requests_total.load(Ordering::Relaxed) == 1
    })
    .await;
    assert!(seen, "the proxy never got the cancel request");
    (frozen, canceller)
}

/// A cancel's signal may reach the backend until the server closes the
/// cancel connection (PostgreSQL even signals a backend twice, to its pid
/// and to its process group). The proxy holds the client's cancel
/// connection open until then, as PostgreSQL does, and holds back the
/// stamp of an autocommit write meanwhile: a signal landing in the stamp
/// would roll back a write whose statements had completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stamp_waits_until_the_server_is_done_with_a_cancel() {
    let h = Harness::start().await;
    h.connect(Target::Direct)
        .await
        .batch_execute("create table t (id int)")
        .await
        .unwrap();
    let observer = h.connect(Target::Direct).await;
    let port = h.port(Target::Proxy);
    let (mut conn, key) = RawConn::login(port, SUPERUSER, PASSWORD).await;

    let (frozen, mut canceller) = cancel_in_flight(&h, port, key).await;

    let mut out = BytesMut::new();
    encode_parse("", "insert into t values (1)", &mut out);
    encode_bind("", "", &mut out);
    encode_execute("", &mut out);
    encode_sync(&mut out);
    conn.send(&out).await;
    conn.expect_frame(tag::PARSE_COMPLETE).await;
    conn.expect_frame(tag::BIND_COMPLETE).await;
    conn.expect_frame(tag::COMMAND_COMPLETE).await;
    // Nothing more may come while the cancel is in flight: no stamp, so no
    // commit, and the cancel connection stays open. (A bounded check: what
    // is asserted is that something does not happen.)
    let quiet = Duration::from_millis(500);
    assert!(
        tokio::time::timeout(quiet, conn.read_frame())
            .await
            .is_err(),
        "the batch was committed while a cancel was in flight"
    );
    assert!(
        tokio::time::timeout(quiet, canceller.closed())
            .await
            .is_err(),
        "the proxy closed the cancel connection before the server did"
    );
    let uncommitted: i64 = observer
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(uncommitted, 0);

    drop(frozen);
    assert!(canceller.closed().await, "the cancel is served");
    conn.expect_frame(tag::READY_FOR_QUERY).await;
    let committed: i64 = observer
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(committed, 1, "the write committed once the cancel was over");
    let metrics = h.proxy.metrics();
    assert_eq!(metrics.cancel_forwarded_total.load(Ordering::Relaxed), 1);
}

/// The same for a `COPY … FROM STDIN` outside a transaction, whose stamp
/// goes behind its rows: while a cancel is in flight the COPY is answered
/// but not committed, and commits with its stamp once the cancel is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_waits_for_its_stamp_until_the_server_is_done_with_a_cancel() {
    let h = Harness::start().await;
    let admin = h.connect(Target::Direct).await;
    admin
        .batch_execute("create table t (id int)")
        .await
        .unwrap();
    let port = h.port(Target::Proxy);
    let (mut conn, key) = RawConn::login(port, SUPERUSER, PASSWORD).await;
    let stamps = || async {
        admin
            .query_one("select count(*) from understudy.ledger", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let stamps_before = stamps().await;

    let (frozen, mut canceller) = cancel_in_flight(&h, port, key).await;

    let mut out = BytesMut::new();
    encode_query("copy t from stdin", &mut out);
    conn.send(&out).await;
    conn.expect_frame(tag::COPY_IN_RESPONSE).await;
    let mut out = BytesMut::new();
    for row in ["1\n", "2\n"] {
        let mut w = FrameWriter::tagged(&mut out, frontend::tag::COPY_DATA);
        w.bytes(row.as_bytes());
        w.finish();
    }
    FrameWriter::tagged(&mut out, frontend::tag::COPY_DONE).finish();
    conn.send(&out).await;
    conn.expect_frame(tag::COMMAND_COMPLETE).await;
    let quiet = Duration::from_millis(500);
    assert!(
        tokio::time::timeout(quiet, conn.read_frame())
            .await
            .is_err(),
        "the COPY was committed while a cancel was in flight"
    );
    let uncommitted: i64 = admin
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(uncommitted, 0);

    drop(frozen);
    assert!(canceller.closed().await, "the cancel is served");
    let ready = conn.expect_frame(tag::READY_FOR_QUERY).await;
    assert_eq!(&ready.body[..], b"I");
    let copied: i64 = admin
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(copied, 2, "the COPY committed");
    assert_eq!(stamps().await, stamps_before + 1, "with its stamp");
}
