//! Failover against real PostgreSQL: kill -9 and SIGSTOP of the primary (detection,
//! fencing, promotion, publication, timings), and no promotion of an unreachable standby.
//! Redundancy after a failover is in `redundancy.rs`; switchover in `switchover.rs`.

mod support;

use understudy_cluster::process::is_alive;
use understudy_cluster::{HealthSettings, Phase, Signal, Step};

use support::{
    alive, eventually, failover_steps, find, has_row, kinds, node_pids, print_since, unix_ms,
    Fixture, SERIAL,
};

#[tokio::test]
async fn kill_9_of_the_primary_promotes_the_standby_and_fences_the_old_one() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start(HealthSettings::default()).await;
    let roles = fx.handle.roles();
    let (old, standby) = (roles.primary, roles.standby);
    let before = fx.handle.view().borrow().clone();
    assert_eq!(before.generation, 1);
    assert_eq!(before.phase, Phase::Serving);
    assert_eq!(
        before.primary.as_ref().map(|p| p.name.as_str()),
        Some(old.name())
    );

    let client = fx.primary().await;
    client
        .batch_execute("CREATE TABLE t (v text); INSERT INTO t VALUES ('before the crash')")
        .await
        .expect("write");
    eventually("the row replicated", || {
        has_row(
            &standby,
            &fx.creds,
            "SELECT 1 FROM t WHERE v = 'before the crash'",
        )
    })
    .await;
    // A session busy on the old primary: a backend running a CPU-bound query does not
    // notice that its postmaster died, and would go on (and could commit) unless fenced.
    let orphan = old.connect(&fx.creds, "postgres").await.expect("connect");
    let orphan_pid: i32 = orphan
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .expect("backend pid")
        .get(0);
    let busy = tokio::spawn(async move {
        orphan
            .simple_query("SELECT count(*) FROM generate_series(1, 100000000000)")
            .await
    });
    eventually("the busy query running", || {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                    &[&orphan_pid],
                )
                .await
                .map(|row| row.get::<_, i64>(0) == 1)
                .unwrap_or(false)
        }
    })
    .await;
    let old_pids = node_pids(&old);
    assert!(old_pids.contains(&orphan_pid), "{old_pids:?}");
    assert!(
        old_pids.len() >= 5,
        "postmaster, backends, walsender: {old_pids:?}"
    );

    let killed_at = unix_ms();
    old.kill(Signal::SIGKILL).expect("kill -9 the postmaster");
    let after = fx
        .wait_view("the standby published as primary", |v| {
            v.generation == 2 && v.primary.is_some()
        })
        .await;
    let primary = after.primary.clone().expect("primary");
    assert_eq!(primary.name, standby.name());
    assert_eq!(primary.port, standby.port());
    assert_eq!(after.phase, Phase::Serving);

    eprintln!("failover after kill -9:");
    let steps = failover_steps(&fx.handle.events());
    print_since(killed_at, "kill -9", &steps[..4]);
    assert_eq!(
        kinds(&steps)[..5],
        [
            Step::FailureDetected,
            Step::Fenced,
            Step::Promoted,
            Step::Published,
            Step::RebuildStarted
        ]
    );
    let detected = find(&steps, Step::FailureDetected);
    assert_eq!(detected.node, old.name());
    assert!(
        detected.detail.contains("has exited"),
        "{}",
        detected.detail
    );
    let fenced = find(&steps, Step::Fenced);
    assert_eq!(fenced.node, old.name());
    assert!(
        fenced.detail.contains(&orphan_pid.to_string()),
        "the busy orphaned backend {orphan_pid} was killed by fencing: {}",
        fenced.detail
    );
    assert_eq!(find(&steps, Step::Promoted).node, standby.name());
    let published = find(&steps, Step::Published);
    assert_eq!(published.node, standby.name());
    assert!(published.elapsed_ms >= find(&steps, Step::Promoted).elapsed_ms);
    let metrics = fx.handle.metrics();
    assert_eq!(metrics.failovers_total(), 1);
    assert_eq!(metrics.generation(), 2);
    let mut text = String::new();
    metrics.render_prometheus(&mut text);
    assert!(text.contains("understudy_failovers_total 1\n"), "{text}");

    let survivors = alive(&old_pids);
    assert!(
        survivors.is_empty(),
        "processes of the old primary alive: {survivors:?}"
    );
    assert!(!is_alive(orphan_pid), "the orphaned backend was fenced");
    let busy = busy.await.expect("task");
    assert!(busy.is_err(), "the busy query was cut off: {busy:?}");

    let new = standby;
    let client = new
        .connect(&fx.creds, "postgres")
        .await
        .expect("connect to the new primary");
    let kept: String = client
        .query_one("SELECT v FROM t", &[])
        .await
        .expect("the replicated row is there")
        .get(0);
    assert_eq!(kept, "before the crash");
    client
        .execute("INSERT INTO t VALUES ('after the failover')", &[])
        .await
        .expect("the new primary accepts writes");
    assert_eq!(fx.handle.roles().primary.name(), new.name());
    let state = std::fs::read_to_string(fx.work().join("state.toml")).expect("state.toml");
    assert!(
        state.contains(&format!("primary = \"{}\"", new.name())),
        "{state}"
    );
    fx.handle.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn sigstop_of_the_primary_is_detected_as_hung_and_fenced() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start(HealthSettings::default()).await;
    let roles = fx.handle.roles();
    let (old, standby) = (roles.primary, roles.standby);
    let old_pids = node_pids(&old);
    let postmaster = old.postmaster_pid().expect("postmaster");

    let stopped_at = unix_ms();
    old.kill(Signal::SIGSTOP).expect("SIGSTOP the postmaster");
    let after = fx
        .wait_view("the standby published as primary", |v| v.generation == 2)
        .await;
    assert_eq!(
        after.primary.map(|p| p.name),
        Some(standby.name().to_string())
    );

    eprintln!("failover after SIGSTOP:");
    let steps = failover_steps(&fx.handle.events());
    print_since(stopped_at, "SIGSTOP", &steps[..4]);
    let detected = find(&steps, Step::FailureDetected);
    assert!(
        detected.detail.contains("is stopped"),
        "{}",
        detected.detail
    );
    assert!(
        detected.step_ms >= 400,
        "declared only after failure_timeout without a successful probe: {} ms",
        detected.step_ms
    );
    let fenced = find(&steps, Step::Fenced);
    assert!(
        fenced.detail.contains(&postmaster.to_string()),
        "{}",
        fenced.detail
    );
    assert!(!is_alive(postmaster), "the stopped postmaster was killed");
    let survivors = alive(&old_pids);
    assert!(
        survivors.is_empty(),
        "processes of the old primary alive: {survivors:?}"
    );

    let client = standby
        .connect(&fx.creds, "postgres")
        .await
        .expect("connect");
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("query")
        .get(0);
    assert!(!in_recovery, "the standby was promoted");
    client
        .batch_execute("CREATE TABLE written_after_sigstop (v int)")
        .await
        .expect("write");
    fx.handle.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn an_unreachable_standby_is_not_promoted_and_a_recovered_primary_serves_again() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start(HealthSettings::default()).await;
    let roles = fx.handle.roles();
    let (primary, standby) = (roles.primary, roles.standby);
    let primary_pid = primary.postmaster_pid().expect("postmaster");

    standby.kill(Signal::SIGSTOP).expect("SIGSTOP the standby");
    primary.kill(Signal::SIGSTOP).expect("SIGSTOP the primary");
    let held = fx
        .wait_view("no primary published", |v| v.primary.is_none())
        .await;
    assert_eq!(held.phase, Phase::FailingOver);
    assert_eq!(held.generation, 1);
    eventually("the unavailable standby recorded", || {
        let events = fx.handle.events();
        async move { events.iter().any(|e| e.step == Step::StandbyUnavailable) }
    })
    .await;
    let events = fx.handle.events();
    assert!(
        !events.iter().any(|e| e.step == Step::Fenced),
        "{:?}",
        kinds(&events)
    );
    assert!(is_alive(primary_pid), "the primary was not fenced");

    primary.kill(Signal::SIGCONT).expect("SIGCONT the primary");
    let back = fx
        .wait_view("the primary published again", |v| v.primary.is_some())
        .await;
    assert_eq!(back.generation, 1);
    assert_eq!(back.phase, Phase::Serving);
    assert_eq!(
        back.primary.map(|p| p.name),
        Some(primary.name().to_string())
    );
    assert!(fx
        .handle
        .events()
        .iter()
        .any(|e| e.step == Step::PrimaryRecovered));

    standby.kill(Signal::SIGCONT).expect("SIGCONT the standby");
    let client = standby
        .connect(&fx.creds, "postgres")
        .await
        .expect("connect");
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .expect("query")
        .get(0);
    assert!(in_recovery, "the standby was never promoted");
    assert_eq!(fx.handle.metrics().failovers_total(), 0);
    fx.handle.shutdown().await.expect("shutdown");
}
