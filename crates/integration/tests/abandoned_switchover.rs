//! A switchover that does not happen. A session parked for it goes on with
//! the backend it had, and the backend it opened in advance on the successor
//! is ended as a client ends a session, with Terminate: the successor counts
//! it as a normal disconnection, not as a session whose client vanished
//! (`pg_stat_database.sessions_abandoned`).

use std::net::Ipv4Addr;

use understudy_integration::understudy_testkit::{wait_until, PASSWORD, SUPERUSER};
use understudy_integration::{connect_with, Harness, Target, FAILOVER_DEADLINE};
use understudy_proxy::{BackendAddr, Topology};

const APPLICATION: &str = "abandoned-switchover";

/// `(sessions_abandoned, session_time)` of database `postgres`, read afresh.
async fn disconnections(server: &tokio_postgres::Client) -> (i64, f64) {
    server
        .simple_query("select pg_stat_clear_snapshot()")
        .await
        .expect("clear the statistics snapshot");
    let row = server
        .query_one(
            "select sessions_abandoned, session_time from pg_stat_database \
             where datname = 'postgres'",
            &[],
        )
        .await
        .expect("read pg_stat_database");
    (row.get(0), row.get(1))
}

async fn backends_of_the_client(server: &tokio_postgres::Client) -> i64 {
    server
        .query_one(
            "select count(*) from pg_stat_activity where application_name = $1",
            &[&APPLICATION],
        )
        .await
        .expect("read pg_stat_activity")
        .get(0)
}

async fn backend_pid(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("the session answers")
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_switchover_ends_the_backends_opened_in_advance() {
    let harness = Harness::start_with(1, |_| {}).await;
    let successor = harness.cluster.connect_to(1).await;
    let (abandoned_before, session_time_before) = disconnections(&successor).await;

    let mut config = harness.pg_config(Target::Proxy, SUPERUSER, PASSWORD);
    config.application_name(APPLICATION);
    let client = connect_with(&config)
        .await
        .expect("connect through the proxy");
    let pid = backend_pid(&client).await;

    let current = harness.topology.borrow().clone();
    let standby = harness.cluster.standby(0);
    harness.topology.send_replace(Topology {
        draining: true,
        successor: Some(BackendAddr {
            name: standby.name().to_owned(),
            host: Ipv4Addr::LOCALHOST.to_string(),
            port: standby.port(),
        }),
        ..current.clone()
    });
    let opened = wait_until(FAILOVER_DEADLINE, || async {
        backends_of_the_client(&successor).await == 1
    })
    .await;
    assert!(
        opened,
        "the parked session opened a backend on the successor"
    );

    harness.topology.send_replace(current);
    assert_eq!(
        backend_pid(&client).await,
        pid,
        "the session goes on with its backend"
    );
    let closed = wait_until(FAILOVER_DEADLINE, || async {
        backends_of_the_client(&successor).await == 0
            && disconnections(&successor).await.1 > session_time_before
    })
    .await;
    assert!(closed, "the backend opened in advance was ended");
    let (abandoned_after, _) = disconnections(&successor).await;
    assert_eq!(
        abandoned_after, abandoned_before,
        "the backend opened in advance was dropped without Terminate"
    );
}
