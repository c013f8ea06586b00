//! `understudy run` in front of servers managed by someone else: when the
//! primary dies, sessions are held until the external manager promotes the
//! standby, then continue there — open transaction included.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_postgres::NoTls;
use understudy_integration::{free_port, understudy_binary, FAILOVER_DEADLINE};
use understudy_testkit::{wait_until, TestCluster, PASSWORD, SUPERUSER};

/// The proxy process; stopped when dropped.
struct Run(Child);

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_wait_for_the_external_promotion_and_continue() {
    let mut cluster = TestCluster::start_with_standbys(1).await;
    cluster
        .connect()
        .await
        .batch_execute("create table t (id int primary key); insert into t values (1)")
        .await
        .unwrap();
    let proxy_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("understudy.toml");
    std::fs::write(
        &config,
        format!(
            "[proxy]\nlisten = \"127.0.0.1:{proxy_port}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [auth]\nauth_user = \"{SUPERUSER}\"\nauth_password = \"{PASSWORD}\"\n\
             [[servers]]\nname = \"a\"\nhost = \"127.0.0.1\"\nport = {a}\n\
             [[servers]]\nname = \"b\"\nhost = \"127.0.0.1\"\nport = {b}\n",
            admin = free_port(),
            a = cluster.primary().port(),
            b = cluster.standby(0).port(),
        ),
    )
    .unwrap();
    let mut child = Command::new(understudy_binary())
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _run = Run(child);
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(FAILOVER_DEADLINE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("ready:") {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(ready, "understudy run printed its ready line");

    let mut pg = tokio_postgres::Config::new();
    pg.host("127.0.0.1")
        .port(proxy_port)
        .user(SUPERUSER)
        .password(PASSWORD)
        .dbname("postgres");
    // Discovery may not have found the primary yet: the session waits.
    let (client, connection) = pg.connect(NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute("begin").await.unwrap();
    client
        .execute("insert into t values (2)", &[])
        .await
        .unwrap();
    let standby = cluster.connect_to(1).await;
    let replicated = wait_until(FAILOVER_DEADLINE, || {
        let standby = &standby;
        async move {
            standby
                .query_one("select count(*) from t", &[])
                .await
                .is_ok_and(|r| r.get::<_, i64>(0) == 1)
        }
    })
    .await;
    assert!(replicated);

    cluster.primary().kill(Signal::SIGKILL).unwrap();
    let primary = cluster.primary().clone();
    assert!(
        wait_until(FAILOVER_DEADLINE, || {
            let primary = primary.clone();
            async move { primary.processes().is_empty() }
        })
        .await
    );
    // The next statement is held: no primary is reachable until the
    // external manager promotes the standby.
    let held = tokio::spawn(async move {
        let result = client.execute("insert into t values (3)", &[]).await;
        (client, result)
    });
    cluster.standby_mut(0).promote().await.unwrap();

    let (client, result) = tokio::time::timeout(Duration::from_secs(60), held)
        .await
        .unwrap()
        .unwrap();
    result.expect("the held statement runs on the new primary");
    client.batch_execute("commit").await.unwrap();
    let ids: Vec<i32> = cluster
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
