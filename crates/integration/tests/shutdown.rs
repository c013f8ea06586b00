//! Graceful shutdown of `understudy run` on SIGTERM: no new connections,
//! idle sessions end at once with `57P01`, open transactions may finish
//! (and their COMMIT succeeds), and after `proxy.shutdown_grace_ms` the
//! sessions still in a transaction end too, their transaction rolled back.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio_postgres::{Client, NoTls};
use understudy_integration::run_process::{servers_config, RunProcess};
use understudy_integration::sqlstate;
use understudy_testkit::{wait_until, TestCluster, PASSWORD, SUPERUSER};

async fn session(port: u16) -> Client {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(SUPERUSER)
        .password(PASSWORD)
        .dbname("postgres")
        .connect(NoTls)
        .await
        .expect("a session through the proxy");
    tokio::spawn(connection);
    client
}

async fn ids(cluster: &TestCluster) -> Vec<i32> {
    cluster
        .connect()
        .await
        .query("select id from shut order by id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_open_transactions_commit_and_ends_idle_sessions_at_once() {
    let cluster = TestCluster::start().await;
    cluster
        .connect()
        .await
        .batch_execute("create table shut (id int primary key)")
        .await
        .unwrap();
    let config = format!(
        "{}[proxy]\nshutdown_grace_ms = 60000\n",
        servers_config(&cluster)
    );
    let mut run = RunProcess::start(&config, "info").await;
    let port = run.proxy_port;
    let busy = session(port).await;
    let idle = session(port).await;
    busy.batch_execute("begin; insert into shut values (1)")
        .await
        .unwrap();
    idle.simple_query("select 1").await.unwrap();

    let signalled = Instant::now();
    run.signal(Signal::SIGTERM);
    let idle_ended = wait_until(Duration::from_secs(10), || async { idle.is_closed() }).await;
    assert!(
        idle_ended,
        "the idle session is ended at once: {}",
        run.output()
    );
    let refused = wait_until(Duration::from_secs(10), || async {
        tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(port)
            .user(SUPERUSER)
            .password(PASSWORD)
            .connect(NoTls)
            .await
            .is_err()
    })
    .await;
    assert!(refused, "no new connections during the shutdown");
    assert!(run.alive(), "the proxy waits for the open transaction");

    busy.batch_execute("insert into shut values (2)")
        .await
        .expect("the open transaction goes on");
    busy.batch_execute("commit")
        .await
        .expect("its COMMIT succeeds");
    let status = run
        .wait(Duration::from_secs(20))
        .await
        .expect("the proxy exits once the transaction ended");
    assert!(status.success(), "{status}: {}", run.output());
    assert!(
        signalled.elapsed() < Duration::from_secs(30),
        "it did not wait for the grace period"
    );
    assert_eq!(
        ids(&cluster).await,
        vec![1, 2],
        "the committed rows are there"
    );
    let after = busy.simple_query("select 1").await;
    assert!(after.is_err(), "the session ended after its transaction");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_transactions_still_open_after_the_grace_period() {
    let cluster = TestCluster::start().await;
    cluster
        .connect()
        .await
        .batch_execute("create table shut (id int primary key)")
        .await
        .unwrap();
    let config = format!(
        "{}[proxy]\nshutdown_grace_ms = 500\n",
        servers_config(&cluster)
    );
    let mut run = RunProcess::start(&config, "info").await;
    let lingering = session(run.proxy_port).await;
    lingering
        .batch_execute("begin; insert into shut values (1)")
        .await
        .unwrap();
    run.signal(Signal::SIGTERM);
    let status = run
        .wait(Duration::from_secs(20))
        .await
        .expect("the proxy exits after the grace period");
    assert!(status.success(), "{status}: {}", run.output());
    let error = lingering
        .batch_execute("commit")
        .await
        .expect_err("the session was ended");
    let code = sqlstate(&error);
    assert!(
        code == "57P01" || lingering.is_closed(),
        "57P01 or a closed connection, got {error:?}"
    );
    let rolled_back = wait_until(Duration::from_secs(10), || async {
        ids(&cluster).await.is_empty()
    })
    .await;
    assert!(rolled_back, "the unfinished transaction was not committed");
    assert!(
        run.output().contains("grace period over"),
        "{}",
        run.output()
    );
}
