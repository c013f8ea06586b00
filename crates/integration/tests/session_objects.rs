//! Objects only a session's backend has — a temporary table, a `WITH HOLD`
//! cursor, a session-level advisory lock — cannot follow the session to a
//! new server. A session that holds one gets a clear `08006` at a failover
//! instead of going on without it (its temporary rows gone, its lock free
//! for anyone); a session that released them moves as usual.

use understudy_integration::{Harness, RawConn, Target};
use understudy_protocol::backend::tag;
use understudy_testkit::{PASSWORD, SUPERUSER};

/// A session through the proxy that has run `setup`, each statement
/// succeeding.
async fn session_that_ran(port: u16, setup: &[&str]) -> RawConn {
    let (mut conn, _) = RawConn::login(port, SUPERUSER, PASSWORD).await;
    for sql in setup {
        let frames = conn.simple_query(sql).await;
        assert!(
            frames.iter().all(|f| f.tag != tag::ERROR_RESPONSE),
            "{sql} failed"
        );
    }
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_holding_backend_only_objects_end_clearly_and_the_others_move() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let port = h.port(Target::Proxy);
    let mut temporary = session_that_ran(
        port,
        &[
            "create temp table scratch (x int)",
            "insert into scratch values (1)",
        ],
    )
    .await;
    let mut cursor = session_that_ran(
        port,
        &["declare rows cursor with hold for select g from generate_series(1, 10) g"],
    )
    .await;
    let mut lock = session_that_ran(port, &["select pg_advisory_lock(42)"]).await;
    let released = h.connect(Target::Proxy).await;
    released
        .batch_execute(
            "create temp table gone (x int); drop table gone;
             begin; declare kept cursor with hold for select 1; commit; close kept;
             select pg_advisory_lock(7); select pg_advisory_unlock(7);
             create temp table dropped_at_commit (x int) on commit drop",
        )
        .await
        .unwrap();
    h.wait_replicated().await;

    h.fail_over().await;

    for (conn, what) in [
        (&mut temporary, "temporary object scratch"),
        (&mut cursor, "WITH HOLD cursor rows"),
        (&mut lock, "advisory lock"),
    ] {
        let error = conn.expect_error().await;
        assert_eq!(error.code, "08006", "{error}");
        assert!(error.message.contains("cannot be moved"), "{error}");
        assert!(error.message.contains(what), "{error}");
        assert!(conn.closed().await, "the session ends after the error");
    }
    let one: i32 = released
        .query_one("select 1", &[])
        .await
        .expect("a session that released its objects moved")
        .get(0);
    assert_eq!(one, 1);
    // The lock the ended session held is free on the new primary, as it
    // would be for a client whose server crashed.
    let free: bool = released
        .query_one("select pg_try_advisory_lock(42)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(free);
}
