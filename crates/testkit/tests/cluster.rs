//! The test cluster against real PostgreSQL: replication to a standby, a killed primary,
//! promotion, roles, and cleanup on drop.

use std::time::Duration;

use understudy_cluster::{node_role, Role, Signal};
use understudy_testkit::{wait_until, TestCluster};

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn write_on_primary_becomes_visible_on_standby() {
    let cluster = TestCluster::start_with_standbys(1).await;
    let primary = cluster.connect().await;
    let standby = cluster.connect_to(1).await;
    assert_eq!(node_role(&primary).await.expect("role"), Role::Primary);
    assert_eq!(node_role(&standby).await.expect("role"), Role::Standby);

    primary
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (42)")
        .await
        .expect("write on primary");
    let visible = wait_until(DEADLINE, || async {
        match standby.query_opt("SELECT v FROM t", &[]).await {
            Ok(Some(row)) => row.get::<_, i32>(0) == 42,
            _ => false,
        }
    })
    .await;
    assert!(visible, "row replicated to the standby");
    let err = standby
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .expect_err("a standby refuses writes");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
    );
}

#[tokio::test]
async fn killed_primary_is_gone_and_promoted_standby_takes_writes() {
    let mut cluster = TestCluster::start_with_standbys(1).await;
    let primary = cluster.connect().await;
    primary
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
        .await
        .expect("write on primary");
    let standby = cluster.connect_to(1).await;
    assert!(
        wait_until(DEADLINE, || async {
            standby
                .query_opt("SELECT 1 FROM t", &[])
                .await
                .ok()
                .flatten()
                .is_some()
        })
        .await,
        "table replicated"
    );

    let pid = cluster.primary().postmaster_pid().expect("primary running");
    cluster.primary().kill(Signal::SIGKILL).expect("kill -9");
    assert!(
        wait_until(DEADLINE, || async {
            cluster.primary().postmaster_pid().is_none()
        })
        .await,
        "postmaster {pid} gone after SIGKILL"
    );

    cluster.standby_mut(0).promote().await.expect("promote");
    let promoted = cluster.connect_to(1).await;
    assert_eq!(node_role(&promoted).await.expect("role"), Role::Primary);
    promoted
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .expect("write on the promoted standby");
    let count: i64 = promoted
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(count, 2);
}

#[tokio::test]
async fn killed_primary_restarts_in_place() {
    let mut cluster = TestCluster::start().await;
    cluster
        .connect()
        .await
        .batch_execute("CREATE TABLE t (v int); INSERT INTO t VALUES (7)")
        .await
        .expect("write");
    let port = cluster.primary().port();
    cluster.primary().kill(Signal::SIGKILL).expect("kill -9");
    assert!(
        wait_until(DEADLINE, || async {
            cluster.primary().postmaster_pid().is_none()
        })
        .await
    );

    cluster
        .primary_mut()
        .start()
        .await
        .expect("restart after kill -9");
    assert_eq!(cluster.primary().port(), port, "same address after restart");
    let v: i32 = cluster
        .connect()
        .await
        .query_one("SELECT v FROM t", &[])
        .await
        .expect("read after crash recovery")
        .get(0);
    assert_eq!(v, 7);
}

#[tokio::test]
async fn drop_leaves_no_process_and_no_directory() {
    let cluster = TestCluster::start_with_standbys(1).await;
    // Open connections so that backends exist too.
    let _a = cluster.connect().await;
    let _b = cluster.connect_to(1).await;
    let mut pids: Vec<i32> = cluster.nodes().iter().flat_map(|n| n.processes()).collect();
    for node in cluster.nodes() {
        pids.push(node.postmaster_pid().expect("running"));
    }
    assert!(
        pids.len() > 4,
        "postmasters, backends and replication processes: {pids:?}"
    );
    let dir = cluster.dir().to_path_buf();
    drop(cluster);
    let alive: Vec<i32> = pids
        .into_iter()
        .filter(|pid| understudy_cluster::process::is_alive(*pid))
        .collect();
    assert!(alive.is_empty(), "still alive after drop: {alive:?}");
    assert!(!dir.exists(), "{} removed", dir.display());
}

#[tokio::test]
async fn drop_during_a_panic_stops_the_servers() {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = tokio::spawn(async move {
        let cluster = TestCluster::start().await;
        let pid = cluster.primary().postmaster_pid().expect("running");
        tx.send(pid).expect("send pid");
        panic!("test body fails while the cluster is alive");
    });
    assert!(handle.await.expect_err("the task panicked").is_panic());
    let pid = rx.recv().expect("pid");
    assert!(
        !understudy_cluster::process::is_alive(pid),
        "postmaster {pid} stopped"
    );
}

#[tokio::test]
async fn roles_with_md5_and_scram_secrets_can_log_in() {
    let cluster = TestCluster::start().await;
    cluster
        .create_role("alice", "a-secret", "scram-sha-256")
        .await;
    cluster.create_role("bob", "b-secret", "md5").await;
    let admin = cluster.connect().await;
    for (name, prefix) in [("alice", "SCRAM-SHA-256$"), ("bob", "md5")] {
        let secret: String = admin
            .query_one(
                "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                &[&name],
            )
            .await
            .expect("secret")
            .get(0);
        assert!(secret.starts_with(prefix), "{name}: {secret}");
    }
    for (user, password) in [("alice", "a-secret"), ("bob", "b-secret")] {
        let creds = understudy_cluster::Credentials {
            superuser: user.to_string(),
            password: password.to_string(),
        };
        let client = cluster
            .primary()
            .connect(&creds, "postgres")
            .await
            .unwrap_or_else(|e| panic!("{user} logs in: {e}"));
        let who: String = client
            .query_one("SELECT current_user::text", &[])
            .await
            .expect("q")
            .get(0);
        assert_eq!(who, user);
    }
    let wrong = understudy_cluster::Credentials {
        superuser: "bob".into(),
        password: "wrong".into(),
    };
    assert!(cluster.primary().connect(&wrong, "postgres").await.is_err());
}

#[tokio::test]
async fn wait_until_reports_timeout() {
    assert!(!wait_until(Duration::from_millis(50), || async { false }).await);
    let mut n = 0;
    assert!(
        wait_until(Duration::from_secs(5), || {
            n += 1;
            let done = n >= 3;
            async move { done }
        })
        .await
    );
}
