//! `understudy run` with `servers[].patroni`: the primary is the server whose
//! Patroni REST API answers `GET /primary` with 200. The servers are real;
//! Patroni itself (which needs a DCS such as etcd) is stood in for by a
//! listener that serves its REST contract — 200 with `"role": "primary"` on
//! the leader, 503 with `"role": "replica"` elsewhere — from a leader flag
//! the test moves, as Patroni moves its leader lock.
//!
//! The case Patroni is for: the old primary lost the leader lock but still
//! runs out of recovery (split brain until Patroni demotes it); by
//! `pg_is_in_recovery()` alone both servers look primary.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_postgres::NoTls;
use understudy_integration::run_process::RunProcess;
use understudy_integration::FAILOVER_DEADLINE;
use understudy_testkit::{wait_until, TestCluster, PASSWORD, SUPERUSER};

/// Serves Patroni's `GET /primary` for one node; returns its URL.
async fn patroni_rest(leader: Arc<AtomicBool>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let leader = Arc::clone(&leader);
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let asks_primary = request.starts_with(b"GET /primary ");
                let (status, role) = if asks_primary && leader.load(Ordering::SeqCst) {
                    ("200 OK", "primary")
                } else if asks_primary {
                    ("503 Service Unavailable", "replica")
                } else {
                    ("404 Not Found", "unknown")
                };
                let body = format!("{{\"state\": \"running\", \"role\": \"{role}\"}}");
                let response = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_patroni_names_leader_is_primary_even_when_both_are_out_of_recovery() {
    let mut cluster = TestCluster::start_with_standbys(1).await;
    let (a_leads, b_leads) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(false)),
    );
    let (a_url, b_url) = (
        patroni_rest(Arc::clone(&a_leads)).await,
        patroni_rest(Arc::clone(&b_leads)).await,
    );
    let (a_port, b_port) = (cluster.primary().port(), cluster.standby(0).port());
    let config = format!(
        "[auth]\nauth_user = \"{SUPERUSER}\"\nauth_password = \"{PASSWORD}\"\n\
         [[servers]]\nname = \"a\"\nhost = \"127.0.0.1\"\nport = {a_port}\npatroni = \"{a_url}\"\n\
         [[servers]]\nname = \"b\"\nhost = \"127.0.0.1\"\nport = {b_port}\npatroni = \"{b_url}\"\n"
    );
    let run = RunProcess::start(&config, "info").await;
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(run.proxy_port)
        .user(SUPERUSER)
        .password(PASSWORD)
        .dbname("postgres")
        .connect(NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let port_of = |row: tokio_postgres::Row| row.get::<_, i32>(0) as u16;
    let on = port_of(
        client
            .query_one("select inet_server_port()", &[])
            .await
            .unwrap(),
    );
    assert_eq!(on, a_port, "the session runs on the leader Patroni names");

    // Split brain: b is promoted while a still runs out of recovery; then
    // Patroni moves the leader lock to b.
    cluster.standby_mut(0).promote().await.unwrap();
    b_leads.store(true, Ordering::SeqCst);
    a_leads.store(false, Ordering::SeqCst);
    let moved = wait_until(FAILOVER_DEADLINE, || async {
        client
            .query_one("select inet_server_port()", &[])
            .await
            .is_ok_and(|row| port_of(row) == b_port)
    })
    .await;
    assert!(
        moved,
        "the session follows Patroni's leader although a is out of recovery too: {}",
        run.output()
    );
    let still = port_of(
        client
            .query_one("select inet_server_port()", &[])
            .await
            .unwrap(),
    );
    assert_eq!(still, b_port, "and stays there");
}
