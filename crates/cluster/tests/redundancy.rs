//! Redundancy after a failover against real PostgreSQL: the old primary rebuilt as a
//! streaming standby and a second crash survived, the roles kept across a restart, and
//! nothing left running after shutdown, even with a rebuild under way.

mod support;

use nix::sys::signal::kill;
use nix::unistd::Pid;
use understudy_cluster::process::{is_alive, processes_in_dir};
use understudy_cluster::{EmbeddedCluster, Node, Redundancy, Role, Signal, Step};

use support::{
    alive, eventually, failover_steps, find, has_row, lenient, node_pids, print_since,
    streams_from, unix_ms, Fixture, SERIAL,
};

#[tokio::test]
async fn redundancy_is_restored_and_a_second_crash_fails_over_back() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start(lenient()).await;
    let roles = fx.handle.roles();
    let (node_a, node_b) = (roles.primary, roles.standby);
    fx.primary()
        .await
        .batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('first')")
        .await
        .expect("write");
    eventually("the first row replicated", || {
        has_row(&node_b, &fx.creds, "SELECT 1 FROM t WHERE v = 'first'")
    })
    .await;

    node_a
        .kill(Signal::SIGKILL)
        .expect("kill -9 the first primary");
    fx.wait_view("the first failover", |v| v.generation == 2)
        .await;
    node_b
        .connect(&fx.creds, "postgres")
        .await
        .expect("connect")
        .execute("INSERT INTO t VALUES ('between the crashes')", &[])
        .await
        .expect("write on the new primary");

    fx.wait_redundancy().await;
    let roles = fx.handle.roles();
    assert_eq!(roles.primary.name(), node_b.name());
    assert_eq!(roles.standby.name(), node_a.name());
    let rebuilt = roles.standby;
    assert!(streams_from(&roles.primary, &fx.creds, rebuilt.name()).await);
    eventually("the row written between the crashes replicated", || {
        has_row(
            &rebuilt,
            &fx.creds,
            "SELECT 1 FROM t WHERE v = 'between the crashes'",
        )
    })
    .await;
    let events = fx.handle.events();
    let restored = find(&events, Step::RedundancyRestored);
    assert_eq!(restored.node, node_a.name());
    assert!(restored.detail.contains("pg_rewind"), "{}", restored.detail);
    eprintln!(
        "redundancy restored in {} ms: {}",
        restored.elapsed_ms, restored.detail
    );
    let status = fx.handle.status().await;
    assert_eq!(
        status
            .iter()
            .map(|s| (s.name.as_str(), s.role))
            .collect::<Vec<_>>(),
        [
            (node_b.name(), Role::Primary),
            (node_a.name(), Role::Standby)
        ]
    );

    let second_victim = node_b.postmaster_pid().expect("postmaster");
    let killed_at = unix_ms();
    node_b
        .kill(Signal::SIGKILL)
        .expect("kill -9 the second primary");
    let view = fx
        .wait_view("the second failover", |v| v.generation == 3)
        .await;
    assert_eq!(
        view.primary.map(|p| p.name),
        Some(node_a.name().to_string())
    );
    assert!(!is_alive(second_victim));
    eprintln!("second failover:");
    let steps = failover_steps(&fx.handle.events());
    print_since(killed_at, "kill -9", &steps[..4]);
    let client = rebuilt
        .connect(&fx.creds, "postgres")
        .await
        .expect("connect");
    let rows: Vec<String> = client
        .query("SELECT v FROM t ORDER BY v", &[])
        .await
        .expect("read")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(rows, ["between the crashes", "first"]);
    client
        .execute("INSERT INTO t VALUES ('after the second crash')", &[])
        .await
        .expect("write after the second failover");

    // And the third crash would be survived too.
    fx.wait_redundancy().await;
    assert!(streams_from(&rebuilt, &fx.creds, node_b.name()).await);
    let metrics = fx.handle.metrics();
    assert_eq!(metrics.failovers_total(), 2);
    assert_eq!(metrics.rebuilds_total(), 2);
    fx.handle.shutdown().await.expect("shutdown");
}

/// Writes WAL across two segment switches on `node` and waits until `standby` has
/// replayed it.
async fn segments_replicated(fx: &Fixture, node: &Node, standby: &Node, mark: i32) {
    node.connect(&fx.creds, "postgres")
        .await
        .expect("connect to the primary")
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS t (v int);
             INSERT INTO t SELECT 1; SELECT pg_catalog.pg_switch_wal();
             INSERT INTO t SELECT 2; SELECT pg_catalog.pg_switch_wal();
             INSERT INTO t SELECT {mark};"
        ))
        .await
        .expect("write WAL");
    let query = format!("SELECT 1 FROM t WHERE v = {mark}");
    eventually("the writes replicated", || {
        has_row(standby, &fx.creds, &query)
    })
    .await;
}

/// Kills `primary` after it wrote what `standby` never receives: the two histories
/// part, so the old primary needs a real rewind.
async fn crash_after_a_write_the_standby_lacks(fx: &Fixture, primary: &Node, standby: &Node) {
    let receiver: i32 = standby
        .connect(&fx.creds, "postgres")
        .await
        .expect("connect to the standby")
        .query_one("SELECT pid FROM pg_catalog.pg_stat_wal_receiver", &[])
        .await
        .expect("the standby's WAL receiver")
        .get(0);
    let receiver = Pid::from_raw(receiver);
    kill(receiver, Signal::SIGSTOP).expect("freeze the WAL receiver");
    primary
        .connect(&fx.creds, "postgres")
        .await
        .expect("connect to the primary")
        .batch_execute("INSERT INTO t SELECT 0")
        .await
        .expect("a write the standby never gets");
    primary.kill(Signal::SIGKILL).expect("kill -9 the primary");
    kill(receiver, Signal::SIGKILL).expect("kill the frozen WAL receiver");
}

/// Two crashes in a row, each parting the histories: the node promoted by the first
/// crash checkpoints at its promotion, and the one promoted by the second (rebuilt from
/// it moments before, so its own last restartpoint is older still) checkpoints at its
/// own, which would remove the WAL from that first checkpoint on. The rewound node must
/// still find that WAL on the new primary (reserved before the promotion) and follow it
/// at once, without a base backup.
#[tokio::test]
async fn a_node_rewound_right_after_its_own_promotion_follows_without_a_base_backup() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start(lenient()).await;
    let roles = fx.handle.roles();
    let (node_a, node_b) = (roles.primary, roles.standby);
    segments_replicated(&fx, &node_a, &node_b, 5).await;
    crash_after_a_write_the_standby_lacks(&fx, &node_a, &node_b).await;
    fx.wait_view("the first failover", |v| v.generation == 2)
        .await;
    fx.wait_redundancy().await;

    segments_replicated(&fx, &node_b, &node_a, 6).await;
    crash_after_a_write_the_standby_lacks(&fx, &node_b, &node_a).await;
    fx.wait_view("the second failover", |v| v.generation == 3)
        .await;
    fx.wait_redundancy().await;
    let events = fx.handle.events();
    let restored: Vec<_> = events
        .iter()
        .filter(|e| e.step == Step::RedundancyRestored)
        .map(|e| (e.node.as_str(), e.detail.as_str()))
        .collect();
    assert_eq!(restored.len(), 2, "{restored:?}");
    assert!(
        restored
            .iter()
            .all(|(_, detail)| detail.contains("pg_rewind")),
        "a node was rebuilt otherwise: {restored:?}"
    );
    assert!(
        !events.iter().any(|e| e.step == Step::RebuildFailed),
        "a rebuild attempt failed: {:?}",
        events
            .iter()
            .filter(|e| e.step == Step::RebuildFailed)
            .map(|e| &e.detail)
            .collect::<Vec<_>>()
    );
    fx.handle.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn up_after_a_failover_starts_the_promoted_node_as_primary() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start(lenient()).await;
    let roles = fx.handle.roles();
    roles.primary.kill(Signal::SIGKILL).expect("kill -9");
    fx.wait_view("the failover", |v| v.generation == 2).await;
    fx.primary()
        .await
        .batch_execute("CREATE TABLE written_on_the_promoted_node (v int)")
        .await
        .expect("write");
    fx.wait_redundancy().await;
    fx.handle.shutdown().await.expect("shutdown");

    let cluster = EmbeddedCluster::up(&fx.work()).await.expect("up again");
    assert_eq!(cluster.primary.name(), roles.standby.name());
    assert_eq!(cluster.standby.name(), roles.primary.name());
    let status = cluster.status().await;
    assert_eq!(
        (status[0].role, status[1].role),
        (Role::Primary, Role::Standby)
    );
    cluster
        .primary
        .connect(&fx.creds, "postgres")
        .await
        .expect("connect")
        .query_one("SELECT count(*) FROM written_on_the_promoted_node", &[])
        .await
        .expect("the promoted node's data");
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn shutdown_after_failovers_leaves_no_process_of_the_cluster() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start(lenient()).await;
    let roles = fx.handle.roles();
    let data_dirs = [
        roles.primary.data_dir().to_path_buf(),
        roles.standby.data_dir().to_path_buf(),
    ];
    let mut pids = node_pids(&roles.primary);
    pids.extend(node_pids(&roles.standby));

    roles.primary.kill(Signal::SIGKILL).expect("kill -9");
    fx.wait_view("the first failover", |v| v.generation == 2)
        .await;
    fx.wait_redundancy().await;
    let roles = fx.handle.roles();
    pids.extend(node_pids(&roles.primary));
    pids.extend(node_pids(&roles.standby));
    roles.primary.kill(Signal::SIGKILL).expect("kill -9 again");
    fx.wait_view("the second failover", |v| v.generation == 3)
        .await;
    // The rebuild of the second victim is under way: shutdown interrupts it.
    assert_eq!(fx.handle.redundancy(), Redundancy::Rebuilding);
    pids.extend(node_pids(&fx.handle.roles().primary));

    fx.handle.shutdown().await.expect("shutdown");
    let survivors = alive(&pids);
    assert!(survivors.is_empty(), "alive after shutdown: {survivors:?}");
    for dir in &data_dirs {
        assert!(
            processes_in_dir(dir).is_empty(),
            "nothing runs in {}",
            dir.display()
        );
    }
    assert_eq!(fx.handle.view().borrow().primary, None);
    assert!(fx.handle.events().iter().any(|e| e.step == Step::ShutDown));
    fx.handle
        .shutdown()
        .await
        .expect("a second shutdown does nothing");
}
