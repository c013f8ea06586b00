//! A planned switchover under load, as clients see it: an embedded primary and
//! standby under the orchestrator, the proxy following its view, and clients
//! writing through the proxy without pause (autocommit statements on the extended
//! protocol, and explicit transactions). The switchover moves every session to the
//! new primary with no client error, no acknowledged row missing and none written
//! twice; the sessions' backends on the new primary were opened while it was still
//! the standby (not while the clients waited for it); and each client's pause — the
//! longest time from a statement sent to its answer — is reported next to the
//! orchestrator's phases.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_postgres::NoTls;
use understudy_config::{Config, Secret, Server};
use understudy_integration::understudy_testkit::understudy_cluster::{
    ClusterView, EmbeddedCluster, HealthSettings, Orchestrator, Phase,
};
use understudy_integration::understudy_testkit::wait_until;
use understudy_proxy::{topology, BackendAddr, Topology, TopologyTx};

/// Clients writing during the switchover.
const CLIENTS: usize = 8;
/// Statements each client completes after the switchover before the test stops them.
const AFTER: u64 = 20;
/// Upper bound for anything the test waits for.
const DEADLINE: Duration = Duration::from_secs(120);
/// A client that waits this long for one statement was not moved at a transaction
/// boundary but held up by something else (a replay, a reconnect, a hold timeout).
const PAUSE_BOUND: Duration = Duration::from_secs(2);

/// What sessions see of the orchestrator's view (as `understudy up` publishes it).
fn topology_of(view: &ClusterView) -> Topology {
    Topology {
        primary: view.primary.as_ref().map(|p| BackendAddr {
            name: p.name.clone(),
            host: p.host.clone(),
            port: p.port,
        }),
        draining: view.phase == Phase::Draining,
        lossless: view.lossless,
        successor: view.successor.as_ref().map(|s| BackendAddr {
            name: s.name.clone(),
            host: s.host.clone(),
            port: s.port,
        }),
    }
}

fn follow_view(mut view: watch::Receiver<ClusterView>, topology: TopologyTx) {
    tokio::spawn(async move {
        while view.changed().await.is_ok() {
            let next = topology_of(&view.borrow_and_update());
            topology.send_replace(next);
        }
    });
}

/// One client's record: how many rows it had acknowledged, its longest wait for a
/// statement, and the statements it completed after the switchover.
#[derive(Default)]
struct Record {
    acknowledged: AtomicU64,
    after: AtomicU64,
    /// The longest statement: when it was sent and answered, in µs since the epoch.
    longest: std::sync::Mutex<(u64, u64)>,
}

impl Record {
    fn longest_ms(&self) -> u64 {
        let (sent, answered) = *self.longest.lock().expect("lock");
        (answered - sent) / 1000
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_under_load_moves_every_client_without_error_or_lost_row() {
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cluster = EmbeddedCluster::up(&dir.path().join(".understudy"))
        .await
        .expect("cluster up");
    let creds = cluster.creds.clone();
    let mut config = Config::default_for_embedded();
    config.backend.tls_mode = understudy_config::BackendTlsMode::Disable;
    config.proxy.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    config.auth.auth_user = creds.superuser.clone();
    config.auth.auth_password = Secret::new(creds.password.clone());
    config.servers = [&cluster.primary, &cluster.standby]
        .into_iter()
        .map(|node| Server {
            name: node.name().to_owned(),
            host: Ipv4Addr::LOCALHOST.to_string(),
            port: node.port(),
            patroni: None,
        })
        .collect();
    let config = Arc::new(config);
    let health = HealthSettings {
        probe_interval: Duration::from_millis(100),
        probe_timeout: Duration::from_secs(2),
        failure_timeout: Duration::from_secs(4),
    };
    let orchestrator = Orchestrator::spawn(cluster, health);
    let view = orchestrator.view();
    let (topology_tx, topology_rx) = topology::channel(topology_of(&view.borrow()));
    follow_view(view, topology_tx);
    let proxy = understudy_proxy::start(Arc::clone(&config), topology_rx)
        .await
        .expect("proxy starts");
    let port = proxy.local_addr().port();
    let connect = || {
        let mut pg = tokio_postgres::Config::new();
        pg.host("127.0.0.1")
            .port(port)
            .user(&creds.superuser)
            .password(&creds.password)
            .dbname("postgres");
        async move {
            let (client, conn) = pg.connect(NoTls).await.expect("connect through the proxy");
            tokio::spawn(conn);
            client
        }
    };
    connect()
        .await
        .batch_execute("CREATE TABLE w (client int, seq bigint, PRIMARY KEY (client, seq))")
        .await
        .expect("create table");

    let stop = Arc::new(AtomicBool::new(false));
    let switched = Arc::new(AtomicBool::new(false));
    let records: Vec<Arc<Record>> = (0..CLIENTS).map(|_| Arc::default()).collect();
    let epoch = Instant::now();
    let mut workers = Vec::new();
    for (id, record) in records.iter().enumerate() {
        let client = connect().await;
        let (record, stop, switched, epoch) = (
            Arc::clone(record),
            Arc::clone(&stop),
            Arc::clone(&switched),
            epoch,
        );
        workers.push(tokio::spawn(async move {
            let insert = client
                .prepare("INSERT INTO w VALUES ($1, $2)")
                .await
                .expect("prepare");
            let id = id as i32;
            let explicit = id % 2 == 1;
            let mut seq: i64 = 0;
            while !stop.load(Ordering::Acquire) {
                seq += 1;
                let sent = epoch.elapsed().as_micros() as u64;
                let result = if explicit {
                    // BEGIN, INSERT and COMMIT as separate statements: the session
                    // parks between transactions only.
                    let mut result = client.batch_execute("BEGIN").await;
                    if result.is_ok() {
                        result = client.execute(&insert, &[&id, &seq]).await.map(|_| ());
                    }
                    if result.is_ok() {
                        result = client.batch_execute("COMMIT").await;
                    }
                    result
                } else {
                    client.execute(&insert, &[&id, &seq]).await.map(|_| ())
                };
                let answered = epoch.elapsed().as_micros() as u64;
                if let Err(e) = result {
                    panic!("client {id} got an error at row {seq}: {e}");
                }
                record.acknowledged.store(seq as u64, Ordering::Release);
                {
                    let mut longest = record.longest.lock().expect("lock");
                    if answered - sent > longest.1 - longest.0 {
                        *longest = (sent, answered);
                    }
                }
                if switched.load(Ordering::Acquire) {
                    record.after.fetch_add(1, Ordering::AcqRel);
                }
            }
        }));
    }
    // Every client is writing before the switchover starts.
    let writing = wait_until(DEADLINE, || {
        let all = records
            .iter()
            .all(|r| r.acknowledged.load(Ordering::Acquire) >= 10);
        async move { all }
    })
    .await;
    assert!(writing, "every client writes before the switchover");
    // Only the switchover's pause counts, not the clients' warm-up.
    for record in &records {
        *record.longest.lock().expect("lock") = (0, 0);
    }
    // When the new primary is published, to split each client's pause into the wait
    // for it and the move after it.
    let published = {
        let mut view = orchestrator.view();
        let old = view.borrow().primary.clone();
        tokio::spawn(async move {
            let _ = view
                .wait_for(|v| v.primary.is_some() && v.primary != old && v.phase == Phase::Serving)
                .await;
            (
                epoch.elapsed().as_micros() as u64,
                std::time::SystemTime::now(),
            )
        })
    };

    let report = orchestrator
        .switchover(proxy.drain_handle().wait_parked())
        .await
        .expect("switchover");
    switched.store(true, Ordering::Release);
    let moved = wait_until(DEADLINE, || {
        let all = records
            .iter()
            .all(|r| r.after.load(Ordering::Acquire) >= AFTER);
        async move { all }
    })
    .await;
    assert!(moved, "every client writes after the switchover");
    let (published, published_at) = published.await.expect("publication seen");
    let new_primary = orchestrator.roles().primary;
    assert_eq!(new_primary.name(), report.new_primary);
    let direct = new_primary
        .connect(&creds, "postgres")
        .await
        .expect("connect to the new primary");
    let opened_before: i64 = direct
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_stat_activity \
             WHERE backend_type = 'client backend' AND backend_start < $1",
            &[&published_at],
        )
        .await
        .expect("backends")
        .get(0);
    let backends: Vec<String> = direct
        .query(
            "SELECT format('%s %s %s %s', pid, backend_start, state, left(query, 30)) \
             FROM pg_catalog.pg_stat_activity WHERE backend_type = 'client backend'",
            &[],
        )
        .await
        .expect("backends")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        opened_before >= CLIENTS as i64,
        "only {opened_before} backends on the new primary were opened before its publication \
         at {published_at:?}: {backends:#?}"
    );
    stop.store(true, Ordering::Release);
    for worker in workers {
        worker.await.expect("no client failed");
    }

    let pauses: Vec<u64> = records.iter().map(|r| r.longest_ms()).collect();
    // For each client's longest statement: ms from sending it to the publication of
    // the new primary, and from there to its answer.
    let split: Vec<(i64, i64)> = records
        .iter()
        .map(|r| {
            let (sent, answered) = *r.longest.lock().expect("lock");
            let ms = |a: u64, b: u64| (b as i64 - a as i64) / 1000;
            (ms(sent, published), ms(published, answered))
        })
        .collect();
    eprintln!(
        "switchover: paused_ms={} stop_ms={} catch_up_ms={} promote_ms={} drain_ms={} total_ms={}; \
         longest wait per client (ms): {pauses:?}; before/after publication: {split:?}",
        report.paused_ms,
        report.stop_ms,
        report.catch_up_ms,
        report.promote_ms,
        report.drain_ms,
        report.total_ms,
    );
    // Lossless: the proxy's commit log had nothing to re-apply, and was not
    // re-applied to the old primary when the switchover began either.
    let log = proxy.commit_log();
    assert_eq!(log.reapplied.load(Ordering::Acquire), 0);
    assert_eq!(log.reapplied_mismatches.load(Ordering::Acquire), 0);
    for (id, record) in records.iter().enumerate() {
        let acknowledged = record.acknowledged.load(Ordering::Acquire) as i64;
        let row = direct
            .query_one(
                "SELECT count(*), coalesce(max(seq), 0) FROM w WHERE client = $1",
                &[&(id as i32)],
            )
            .await
            .expect("count rows");
        let (count, max): (i64, i64) = (row.get(0), row.get(1));
        // Every acknowledged row is there, once; clients stop only between statements.
        assert!(
            count == acknowledged && max == acknowledged,
            "client {id}: acknowledged {acknowledged}, found {count} rows up to {max}"
        );
    }
    for (id, pause) in pauses.iter().enumerate() {
        assert!(
            Duration::from_millis(*pause) < PAUSE_BOUND,
            "client {id} waited {pause} ms for one statement"
        );
    }
    drop(direct);
    proxy.shutdown(Duration::from_secs(1)).await;
    orchestrator.shutdown().await.expect("shutdown");
}
