//! `Node` operations against real PostgreSQL: start failures, stop, restart after a
//! crash that left backends behind, and cleanup of a frozen server.

use std::time::Duration;

use understudy_cluster::process::is_alive;
use understudy_cluster::{ClusterError, Signal, StopMode};
use understudy_testkit::{wait_until, TestCluster};

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn start_on_a_taken_port_fails_with_the_log() {
    let mut cluster = TestCluster::start().await;
    cluster
        .primary_mut()
        .stop(StopMode::Fast)
        .await
        .expect("stop");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    cluster.primary_mut().set_port(port);
    cluster
        .primary_mut()
        .set_start_timeout(Duration::from_secs(10));
    let err = cluster
        .primary_mut()
        .start()
        .await
        .expect_err("port in use");
    match &err {
        ClusterError::StartFailed { log_tail, .. } => {
            assert!(log_tail.contains("could not bind"), "{log_tail}")
        }
        other => panic!("expected StartFailed, got {other}"),
    }
    assert!(err.to_string().contains("did not start"), "{err}");
    assert!(cluster.primary().postmaster_pid().is_none());
    assert!(
        cluster.primary().processes().is_empty(),
        "nothing left running"
    );

    cluster
        .primary_mut()
        .start_on_free_port()
        .await
        .expect("start elsewhere");
    assert_ne!(cluster.primary().port(), port);
    cluster
        .connect()
        .await
        .simple_query("SELECT 1")
        .await
        .expect("query");
}

#[tokio::test]
async fn stop_leaves_nothing_and_is_idempotent() {
    let mut cluster = TestCluster::start().await;
    let _client = cluster.connect().await;
    let pids = cluster.primary().processes();
    assert!(pids.len() > 3, "{pids:?}");
    cluster
        .primary_mut()
        .stop(StopMode::Fast)
        .await
        .expect("stop");
    assert!(pids.iter().all(|pid| !is_alive(*pid)));
    assert!(cluster.primary().postmaster_pid().is_none());
    cluster
        .primary_mut()
        .stop(StopMode::Fast)
        .await
        .expect("stopping a stopped node");
    assert!(matches!(
        cluster.primary().kill(Signal::SIGTERM),
        Err(ClusterError::NotRunning { .. })
    ));
    cluster.primary_mut().start().await.expect("start again");
    cluster
        .connect()
        .await
        .simple_query("SELECT 1")
        .await
        .expect("query");
}

#[tokio::test]
async fn restart_after_kill_clears_orphaned_backends() {
    let mut cluster = TestCluster::start().await;
    let client = cluster.connect().await;
    let backend: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("pid")
        .get(0);
    // A CPU-bound query does not notice the death of its postmaster: the backend
    // survives the kill as an orphan holding the shared memory.
    let busy = tokio::spawn(async move {
        let _ = client
            .simple_query("SELECT count(*) FROM generate_series(1, 1000000000000)")
            .await;
    });
    let active = wait_until(DEADLINE, || async {
        let admin = cluster.connect().await;
        let rows = admin
            .query(
                "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                &[&backend],
            )
            .await
            .expect("pg_stat_activity");
        !rows.is_empty()
    })
    .await;
    assert!(active, "the busy query is running");
    cluster.primary().kill(Signal::SIGKILL).expect("kill -9");
    assert!(
        wait_until(DEADLINE, || async {
            cluster.primary().postmaster_pid().is_none()
        })
        .await
    );
    assert!(
        is_alive(backend),
        "backend {backend} outlives its postmaster"
    );

    cluster.primary_mut().start().await.expect("restart");
    assert!(!is_alive(backend), "the orphaned backend {backend} is gone");
    let fresh = cluster.connect().await;
    fresh
        .simple_query("SELECT 1")
        .await
        .expect("query after restart");
    busy.abort();
}

#[tokio::test]
async fn frozen_server_is_stopped_on_drop() {
    let cluster = TestCluster::start_with_standbys(1).await;
    let _client = cluster.connect().await;
    let mut pids = cluster.primary().processes();
    pids.extend(cluster.standby(0).processes());
    cluster.primary().kill(Signal::SIGSTOP).expect("SIGSTOP");
    drop(cluster);
    let alive: Vec<i32> = pids.into_iter().filter(|pid| is_alive(*pid)).collect();
    assert!(alive.is_empty(), "alive after drop: {alive:?}");
}

#[tokio::test]
async fn conn_string_works_with_tokio_postgres() {
    let cluster = TestCluster::start().await;
    let conn = cluster.primary().conn_string(cluster.creds());
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .expect("connect with the connection string");
    tokio::spawn(connection);
    let one: i32 = client.query_one("SELECT 1", &[]).await.expect("q").get(0);
    assert_eq!(one, 1);
}
