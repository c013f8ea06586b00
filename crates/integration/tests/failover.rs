//! Sessions survive the loss of their primary: idle sessions, open
//! transactions, a result set half streamed, session settings, prepared
//! statements and LISTEN move to the promoted standby; a transaction whose
//! replay differs fails with 40001 and the session stays usable; a `COPY …
//! TO STDOUT` half streamed continues too; a backend
//! terminated on purpose ends its session as it would directly.

use std::time::Duration;

use futures_util::{pin_mut, StreamExt, TryStreamExt};
use tokio_postgres::{AsyncMessage, NoTls};
use understudy_integration::{describe, Harness, RawConn, Target};
use understudy_protocol::backend::{tag, ErrorFields};
use understudy_testkit::{PASSWORD, SUPERUSER};

const DEADLINE: Duration = understudy_integration::FAILOVER_DEADLINE;

/// The first column of every row of a simple query's answer.
fn first_column(messages: &[tokio_postgres::SimpleQueryMessage]) -> Vec<&str> {
    messages
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_session_keeps_its_settings_and_prepared_statements() {
    let mut h = Harness::start_with(1, |_| {}).await;
    h.cluster
        .connect()
        .await
        .batch_execute("create schema app; create table app.items (id int primary key, note text)")
        .await
        .unwrap();
    let client = h.connect(Target::Proxy).await;
    client
        .batch_execute(
            "set search_path = app; set timezone = 'Asia/Tokyo'; prepare one as select 1",
        )
        .await
        .unwrap();
    let insert = client
        .prepare("insert into items values ($1, $2)")
        .await
        .unwrap();
    client.execute(&insert, &[&1i32, &"before"]).await.unwrap();
    h.wait_replicated().await;

    h.fail_over().await;

    client.execute(&insert, &[&2i32, &"after"]).await.unwrap();
    let rows = client
        .simple_query("show search_path; show timezone; execute one")
        .await
        .unwrap();
    let values = first_column(&rows);
    assert_eq!(values, ["app", "Asia/Tokyo", "1"]);
    let notes: Vec<String> = client
        .query("select note from items order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(notes, ["before", "after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_transaction_is_replayed_and_commits_once() {
    let mut h = Harness::start_with(1, |_| {}).await;
    h.cluster
        .connect()
        .await
        .batch_execute("create table t (id int primary key); insert into t values (1)")
        .await
        .unwrap();
    h.wait_replicated().await;
    let client = h.connect(Target::Proxy).await;
    client.batch_execute("begin").await.unwrap();
    client
        .execute("insert into t values (2)", &[])
        .await
        .unwrap();
    let seen: i64 = client
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 2);

    h.fail_over().await;

    client
        .execute("insert into t values (3)", &[])
        .await
        .unwrap();
    client.batch_execute("commit").await.unwrap();
    let ids: Vec<i32> = h
        .cluster
        .connect_to(1)
        .await
        .query("select id from t order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_whose_replay_differs_fails_with_40001_and_the_session_goes_on() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let client = h.connect(Target::Proxy).await;
    client.batch_execute("begin").await.unwrap();
    client.query_one("select random()", &[]).await.unwrap();

    h.fail_over().await;
    let err = client
        .query_one("select 1", &[])
        .await
        .expect_err("the transaction cannot continue");
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("40001"),
        "{err}"
    );
    client.batch_execute("rollback").await.unwrap();
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_streamed_result_continues_without_duplicates() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let client = h.connect(Target::Proxy).await;
    let rows = client
        .query_raw(
            "select g from generate_series(1, 1000000) g order by g",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    pin_mut!(rows);
    let mut expected = 1i32;
    while expected <= 100_000 {
        let row = rows.next().await.unwrap().unwrap();
        assert_eq!(row.get::<_, i32>(0), expected);
        expected += 1;
    }

    h.fail_over().await;

    while let Some(row) = rows.try_next().await.unwrap() {
        assert_eq!(row.get::<_, i32>(0), expected);
        expected += 1;
    }
    assert_eq!(expected, 1_000_001);
}

/// A `COPY … TO STDOUT` of a read, the rows a million lines.
const COPY_OUT: &str = "copy (select g from generate_series(1, 1000000) g order by g) to stdout";

/// Through the extended protocol (tokio-postgres's `copy_out`): a COPY in
/// flight is a read like a `SELECT`, replayed, not an unknown outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_streamed_copy_out_continues_without_duplicates() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let client = h.connect(Target::Proxy).await;
    let lines = client.copy_out(COPY_OUT).await.unwrap();
    pin_mut!(lines);
    let mut expected = 1u32;
    while expected <= 100_000 {
        let line = lines.next().await.unwrap().unwrap();
        assert_eq!(&line[..], format!("{expected}\n").as_bytes());
        expected += 1;
    }

    h.fail_over().await;

    while let Some(line) = lines.try_next().await.unwrap() {
        assert_eq!(&line[..], format!("{expected}\n").as_bytes());
        expected += 1;
    }
    assert_eq!(expected, 1_000_001);
}

/// The same COPY as a simple Query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_streamed_copy_out_of_a_simple_query_continues_without_duplicates() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (mut conn, _) = RawConn::login(h.port(Target::Proxy), SUPERUSER, PASSWORD).await;
    let mut query = bytes::BytesMut::new();
    understudy_protocol::frontend::encode_query(COPY_OUT, &mut query);
    conn.send(&query).await;
    conn.expect_frame(tag::COPY_OUT_RESPONSE).await;
    let mut expected = 1u32;
    let mut check = |frame: understudy_protocol::frame::Frame| {
        assert_eq!(&frame.body[..], format!("{expected}\n").as_bytes());
        expected += 1;
    };
    for _ in 0..100_000 {
        check(conn.expect_frame(tag::COPY_DATA).await);
    }

    h.fail_over().await;

    loop {
        let frame = conn.read_frame().await.expect("the rest of the COPY");
        match frame.tag {
            tag::COPY_DATA => check(frame),
            tag::COPY_DONE => break,
            _ => panic!("expected the COPY's rows, got {}", describe(&frame)),
        }
    }
    conn.expect_frames(&[tag::COMMAND_COMPLETE, tag::READY_FOR_QUERY])
        .await;
    assert_eq!(expected, 1_000_001);
}

/// A result half streamed whose replay differs (`random()`): the client
/// gets `40001` when it has whole messages, and when it has only part of
/// one (the usual case: the proxy relays what it reads, wherever a message
/// ends) its connection is closed, as directly when the server dies; never
/// an error written inside a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_cut_by_a_failover_that_cannot_continue_it_is_never_corrupted() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (mut conn, _) = RawConn::login(h.port(Target::Proxy), SUPERUSER, PASSWORD).await;
    let mut query = bytes::BytesMut::new();
    understudy_protocol::frontend::encode_query(
        "select g, md5(random()::text) from generate_series(1, 1000000) g",
        &mut query,
    );
    conn.send(&query).await;
    conn.expect_frame(tag::ROW_DESCRIPTION).await;
    let mut expected = 1u32;
    let mut check = |frame: &understudy_protocol::frame::Frame| {
        let g = understudy_integration::data_row_text(&frame.body, 0);
        let md5 = understudy_integration::data_row_text(&frame.body, 1).unwrap_or_default();
        assert_eq!(g, Some(expected.to_string()), "{}", describe(frame));
        assert!(
            md5.len() == 32 && md5.bytes().all(|b| b.is_ascii_hexdigit()),
            "row {expected}: {}",
            describe(frame)
        );
        expected += 1;
    };
    for _ in 0..100_000 {
        check(&conn.expect_frame(tag::DATA_ROW).await);
    }

    h.fail_over().await;

    loop {
        match conn.read_frame_or_close().await {
            Ok(frame) if frame.tag == tag::DATA_ROW => check(&frame),
            Ok(frame) => {
                assert_eq!(frame.tag, tag::ERROR_RESPONSE, "{}", describe(&frame));
                let error = ErrorFields::parse(&frame.body).expect("an error");
                assert_eq!(error.code, "40001", "{error}");
                conn.expect_frame(tag::READY_FOR_QUERY).await;
                let rows = conn.simple_query("select 40 + 2").await;
                assert!(
                    rows.iter().any(|f| f.tag == tag::DATA_ROW),
                    "the session goes on"
                );
                break;
            }
            Err(part) => {
                assert!(
                    !part.is_empty(),
                    "closed between messages, without an error"
                );
                assert_eq!(part[0], tag::DATA_ROW, "the rest is the start of a row");
                break;
            }
        }
    }
    assert!(expected > 100_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_survives_and_notifications_arrive_from_the_new_primary() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (listener, mut connection) = h
        .pg_config(
            Target::Proxy,
            understudy_testkit::SUPERUSER,
            understudy_testkit::PASSWORD,
        )
        .connect(NoTls)
        .await
        .unwrap();
    let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        pin_mut!(stream);
        while let Some(Ok(message)) = stream.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.payload().to_owned());
            }
        }
    });
    listener.batch_execute("listen jobs").await.unwrap();

    h.fail_over().await;
    // The move happens when the session notices; a query makes it notice.
    listener.batch_execute("select 1").await.unwrap();

    let notifier = h.connect(Target::Proxy).await;
    notifier
        .batch_execute("notify jobs, 'after'")
        .await
        .unwrap();
    let got = tokio::time::timeout(DEADLINE, notifications.recv())
        .await
        .expect("notification within the deadline");
    assert_eq!(got.as_deref(), Some("after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_terminated_on_purpose_ends_the_session_like_directly() {
    let h = Harness::start_with(1, |_| {}).await;
    let client = h.connect(Target::Proxy).await;
    let pid: i32 = client
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let admin = h.cluster.connect().await;
    admin
        .query_one("select pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let err = client
        .query_one("select 1", &[])
        .await
        .expect_err("the session was terminated");
    let code = err.as_db_error().map(|e| e.code().code().to_owned());
    assert!(
        code.as_deref() == Some("57P01") || err.is_closed(),
        "expected the server's 57P01 or a closed connection, got {err}"
    );
    assert!(client.is_closed() || client.query_one("select 1", &[]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_diverged_transaction_never_commits_even_with_its_commit_in_flight() {
    let mut h = Harness::start_with(1, |_| {}).await;
    h.cluster
        .connect()
        .await
        .batch_execute("create table t (id int)")
        .await
        .unwrap();
    h.wait_replicated().await;
    let client = h.connect(Target::Proxy).await;
    client.batch_execute("begin").await.unwrap();
    client
        .execute("insert into t values (1)", &[])
        .await
        .unwrap();
    client.query_one("select random()", &[]).await.unwrap();
    let backend: i32 = client
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    // The backend is frozen, so the COMMIT waits unread in its socket.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(backend),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let metrics = h.proxy.metrics();
    let sent_before = metrics
        .queries_total
        .load(std::sync::atomic::Ordering::Relaxed);
    let commit = tokio::spawn(async move {
        let result = client.batch_execute("commit").await;
        (client, result)
    });
    let forwarded = understudy_testkit::wait_until(DEADLINE, || {
        let metrics = metrics.clone();
        async move {
            metrics
                .queries_total
                .load(std::sync::atomic::Ordering::Relaxed)
                > sent_before
        }
    })
    .await;
    assert!(forwarded, "the COMMIT reached the proxy");

    h.cluster
        .primary()
        .kill(nix::sys::signal::Signal::SIGKILL)
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(backend),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    h.promote_standby().await;

    let (client, result) = tokio::time::timeout(DEADLINE, commit)
        .await
        .unwrap()
        .unwrap();
    let err = result.expect_err("the transaction read random() and cannot be replayed");
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("40001"),
        "{err}"
    );
    let rows: i64 = client
        .query_one("select count(*) from t", &[])
        .await
        .expect("after a failed COMMIT the session is idle and usable")
        .get(0);
    assert_eq!(rows, 0, "the diverged transaction did not commit");
}

/// The pid of the primary's backend that runs `sql`, if one does.
async fn backend_running(h: &Harness, sql: &str) -> Option<i32> {
    let (admin, connection) = h
        .pg_config(
            Target::Direct,
            understudy_testkit::SUPERUSER,
            understudy_testkit::PASSWORD,
        )
        .connect(NoTls)
        .await
        .ok()?;
    tokio::spawn(connection);
    admin
        .query_opt("select pid from pg_stat_activity where query = $1", &[&sql])
        .await
        .ok()
        .flatten()
        .map(|row| row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_that_keeps_crashing_the_server_is_not_replayed_for_ever() {
    let h = Harness::start_with(1, |_| {}).await;
    let client = h.connect(Target::Proxy).await;
    const SQL: &str = "select pg_sleep(600)";
    let query = tokio::spawn(async move {
        let result = client.simple_query(SQL).await;
        (client, result)
    });
    let mut kills = 0;
    let mut killed = Vec::new();
    loop {
        // The statement runs (first, or replayed on the restarted server),
        // or the session gave up. A killed backend may still be listed
        // until the postmaster notices.
        let backend = std::cell::Cell::new(None);
        let settled = understudy_testkit::wait_until(DEADLINE, || {
            let (h, query, backend, killed) = (&h, &query, &backend, &killed);
            async move {
                let running = backend_running(h, SQL).await;
                backend.set(running.filter(|pid| !killed.contains(pid)));
                backend.get().is_some() || query.is_finished()
            }
        })
        .await;
        assert!(settled, "the statement runs again or the session ends");
        let Some(pid) = backend.get() else { break };
        assert!(
            kills < 4,
            "the statement was replayed after its fourth loss"
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        killed.push(pid);
        kills += 1;
    }
    let (_client, result) = tokio::time::timeout(DEADLINE, query)
        .await
        .unwrap()
        .unwrap();
    let err = result.expect_err("the session gives up");
    // A move can also land on a backend the server's crash restart then
    // ends, so a kill may cost more than one move: count the moves.
    let moved = h
        .proxy
        .metrics()
        .sessions_moved_total
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(moved, 3, "moved three times, then given up ({kills} kills)");
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("08006"),
        "{err}"
    );
    let message = err.as_db_error().map(|e| e.message()).unwrap_or_default();
    assert!(message.contains("not replayed again"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_made_by_set_config_or_beside_other_work_in_a_batch_survive() {
    use bytes::BytesMut;
    use understudy_integration::RawConn;
    use understudy_protocol::backend::tag;
    use understudy_protocol::frontend::{encode_bind, encode_execute, encode_parse, encode_sync};
    use understudy_testkit::{PASSWORD, SUPERUSER};

    let mut h = Harness::start_with(1, |_| {}).await;
    let client = h.connect(Target::Proxy).await;
    client
        .query_one("select set_config('app.tenant', $1, false)", &[&"42"])
        .await
        .unwrap();
    client
        .simple_query("select pg_catalog.set_config('app.region', 'eu', false)")
        .await
        .unwrap();
    // A transaction-local one is gone with its transaction, here as there.
    client
        .batch_execute("begin; select set_config('app.local', 'x', true); commit")
        .await
        .unwrap();

    // One batch: a SET, then a query, then the Sync.
    let (mut raw, _) = RawConn::login(h.port(Target::Proxy), SUPERUSER, PASSWORD).await;
    let mut out = BytesMut::new();
    encode_parse("", "set timezone = 'Asia/Tokyo'", &mut out);
    encode_bind("", "", &mut out);
    encode_execute("", &mut out);
    encode_parse("", "select 1", &mut out);
    encode_bind("", "", &mut out);
    encode_execute("", &mut out);
    encode_sync(&mut out);
    raw.send(&out).await;
    loop {
        let frame = raw.read_frame().await.expect("the batch's replies");
        assert_ne!(frame.tag, tag::ERROR_RESPONSE);
        if frame.tag == tag::READY_FOR_QUERY {
            break;
        }
    }

    h.fail_over().await;

    let row = client
        .query_one(
            "select current_setting('app.tenant'), current_setting('app.region'), \
             coalesce(current_setting('app.local', true), '')",
            &[],
        )
        .await
        .unwrap();
    let values: (String, String, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(values, ("42".into(), "eu".into(), "".into()));
    let frames = raw.simple_query("show timezone").await;
    let shown = frames
        .iter()
        .find(|f| f.tag == tag::DATA_ROW)
        .map(|f| String::from_utf8_lossy(&f.body).into_owned())
        .expect("a row");
    assert!(shown.contains("Asia/Tokyo"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_made_after_a_committed_write_survive() {
    let mut h = Harness::start_with(1, |_| {}).await;
    h.cluster
        .connect()
        .await
        .batch_execute("create schema app; create table app.items (id int)")
        .await
        .unwrap();
    let client = h.connect(Target::Proxy).await;
    // A committed write: the commit log keeps it with the session state of
    // that moment.
    client
        .batch_execute("begin; insert into app.items values (1); commit")
        .await
        .unwrap();
    client
        .batch_execute("set search_path = app; set timezone = 'Asia/Tokyo'")
        .await
        .unwrap();
    h.wait_replicated().await;

    h.fail_over().await;

    let rows = client
        .simple_query("show search_path; show timezone")
        .await
        .unwrap();
    let values = first_column(&rows);
    assert_eq!(values, ["app", "Asia/Tokyo"]);
}

/// Creates table `chained` and runs `statements` through the proxy, each
/// as a simple Query that must succeed; returns the connection once the
/// standby has replayed what committed.
async fn chain_through_the_proxy(h: &Harness, statements: &[&str]) -> RawConn {
    h.cluster
        .connect()
        .await
        .batch_execute("create table chained (id int primary key)")
        .await
        .unwrap();
    let (mut conn, _) = RawConn::login(h.port(Target::Proxy), SUPERUSER, PASSWORD).await;
    for sql in statements {
        let frames = conn.simple_query(sql).await;
        assert!(frames.iter().all(|f| f.tag != tag::ERROR_RESPONSE), "{sql}");
    }
    h.wait_replicated().await;
    conn
}

/// A transaction chained to one that committed (`COMMIT AND CHAIN`) keeps
/// that one's isolation level and access mode: at a failover it is replayed
/// behind the chain's own `BEGIN`, and goes on with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_chained_to_a_committed_one_moves_with_its_characteristics() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let mut conn = chain_through_the_proxy(
        &h,
        &[
            "begin isolation level repeatable read",
            "insert into chained values (1)",
            "commit and chain",
            "insert into chained values (2)",
        ],
    )
    .await;

    h.fail_over().await;

    let frames = conn.simple_query("show transaction_isolation").await;
    let shown: Vec<String> = frames
        .iter()
        .filter(|f| f.tag == tag::DATA_ROW)
        .filter_map(|f| understudy_integration::data_row_text(&f.body, 0))
        .collect();
    assert_eq!(shown, ["repeatable read"], "{frames:?}");
    for sql in ["insert into chained values (3)", "commit"] {
        let frames = conn.simple_query(sql).await;
        assert!(frames.iter().all(|f| f.tag != tag::ERROR_RESPONSE), "{sql}");
    }
    let ids: Vec<i32> = h
        .cluster
        .connect_to(1)
        .await
        .query("select id from chained order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
}

/// A chain whose characteristics were changed inside it (`SET TRANSACTION`)
/// cannot be opened again with them: at a failover the session ends with
/// `08006` saying why, and the committed row is on the new primary once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chained_transaction_whose_characteristics_changed_ends_its_session_clearly() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let mut conn = chain_through_the_proxy(
        &h,
        &[
            "begin",
            "set transaction isolation level serializable",
            "insert into chained values (1)",
            "commit and chain",
            "insert into chained values (2)",
        ],
    )
    .await;

    h.fail_over().await;

    let error = conn.expect_error().await;
    assert_eq!(error.code, "08006", "{error}");
    assert!(error.message.contains("COMMIT AND CHAIN"), "{error}");
    assert!(conn.closed().await, "the session ends after the error");
    let ids: Vec<i32> = h
        .cluster
        .connect_to(1)
        .await
        .query("select id from chained", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(ids, vec![1]);
}
