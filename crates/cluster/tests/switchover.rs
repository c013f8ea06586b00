//! Planned switchover against real PostgreSQL: sessions are asked to drain before the
//! primary stops, nothing written before is lost, the roles swap, the old primary
//! streams from the new one, and a switchover back works the same way.

mod support;

use understudy_cluster::{ClusterError, Phase, Role, Signal, Step};

use support::{eventually, find, has_row, kinds, lenient, streams_from, Fixture, SERIAL};

#[tokio::test]
async fn switchover_swaps_roles_without_losing_data_and_the_old_primary_follows() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start(lenient()).await;
    let roles = fx.handle.roles();
    let (old, new) = (roles.primary, roles.standby);
    fx.primary()
        .await
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, v text); \
             INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, 20000) g",
        )
        .await
        .expect("write");

    let view = fx.handle.view();
    let old_name = old.name().to_string();
    let new_name = new.name().to_string();
    let report = fx
        .handle
        .switchover(async move {
            // Sessions are asked to drain before anything is stopped.
            let seen = view.borrow().clone();
            assert_eq!(seen.phase, Phase::Draining);
            assert_eq!(seen.primary.map(|p| p.name), Some(old_name));
            // Sessions learn where they will go, to open their backends there meanwhile.
            assert_eq!(seen.successor.map(|s| s.name), Some(new_name));
        })
        .await
        .expect("switchover");
    eprintln!("switchover: {report:?}");
    assert_eq!(report.old_primary, old.name());
    assert_eq!(report.new_primary, new.name());
    assert_eq!(report.generation, 2);
    assert!(report.paused_ms <= report.total_ms);
    assert!(
        report.standby_restored_ms.is_some(),
        "the old primary streams again: {report:?}"
    );

    let view = fx.handle.view().borrow().clone();
    assert_eq!(view.generation, 2);
    assert_eq!(view.phase, Phase::Serving);
    assert_eq!(view.primary.map(|p| p.name), Some(new.name().to_string()));
    assert!(
        view.lossless,
        "the standby replayed the shutdown checkpoint"
    );
    assert_eq!(view.successor, None);

    // Everything written before is on the new primary at once: no waiting here.
    let client = new.connect(&fx.creds, "postgres").await.expect("connect");
    let count: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(count, 20000);
    client
        .execute("INSERT INTO t VALUES (20001, 'after the switchover')", &[])
        .await
        .expect("the new primary accepts writes");

    let roles = fx.handle.roles();
    assert_eq!(roles.primary.name(), new.name());
    assert_eq!(roles.standby.name(), old.name());
    let status = fx.handle.status().await;
    assert_eq!(
        status
            .iter()
            .map(|s| (s.name.as_str(), s.role))
            .collect::<Vec<_>>(),
        [(new.name(), Role::Primary), (old.name(), Role::Standby)]
    );
    assert!(streams_from(&new, &fx.creds, old.name()).await);
    eventually("the write after the switchover replicated", || {
        has_row(
            &roles.standby,
            &fx.creds,
            "SELECT 1 FROM t WHERE id = 20001",
        )
    })
    .await;

    let events = fx.handle.events();
    let steps: Vec<Step> = kinds(&events);
    let order = [
        Step::SwitchoverStarted,
        Step::Drained,
        Step::PrimaryStopped,
        Step::CaughtUp,
        Step::Promoted,
        Step::Published,
        Step::RebuildStarted,
        Step::RedundancyRestored,
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|step| steps.iter().position(|s| s == step).expect("step recorded"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    assert!(
        find(&events, Step::PrimaryStopped)
            .detail
            .contains("cleanly"),
        "{:?}",
        find(&events, Step::PrimaryStopped)
    );
    let metrics = fx.handle.metrics();
    assert_eq!(metrics.switchovers_total(), 1);
    assert_eq!(metrics.failovers_total(), 0);
    let state = std::fs::read_to_string(fx.work().join("state.toml")).expect("state.toml");
    assert!(
        state.contains(&format!("primary = \"{}\"", new.name())),
        "{state}"
    );

    // And back: the former primary, now a standby, takes the role again.
    let report = fx
        .handle
        .switchover(async {})
        .await
        .expect("switchover back");
    eprintln!("switchover back: {report:?}");
    assert_eq!(report.new_primary, old.name());
    assert_eq!(report.generation, 3);
    assert!(report.standby_restored_ms.is_some(), "{report:?}");
    let client = old.connect(&fx.creds, "postgres").await.expect("connect");
    let count: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .await
        .expect("read")
        .get(0);
    assert_eq!(count, 20001);
    assert!(streams_from(&old, &fx.creds, new.name()).await);
    fx.handle.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn switchover_is_refused_without_a_streaming_standby() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start(lenient()).await;
    let roles = fx.handle.roles();
    roles
        .standby
        .kill(Signal::SIGKILL)
        .expect("kill the standby");
    eventually("the standby gone from pg_stat_replication", || {
        let (primary, creds, name) = (&roles.primary, &fx.creds, roles.standby.name());
        async move { !streams_from(primary, creds, name).await }
    })
    .await;

    let err = fx
        .handle
        .switchover(async { panic!("sessions must not be drained for a refused switchover") })
        .await
        .expect_err("refused");
    assert!(matches!(err, ClusterError::NotReady { .. }), "{err}");
    assert!(err.to_string().contains("not streaming"), "{err}");
    let view = fx.handle.view().borrow().clone();
    assert_eq!(view.generation, 1);
    assert_eq!(view.phase, Phase::Serving);
    assert_eq!(
        view.primary.map(|p| p.name),
        Some(roles.primary.name().to_string())
    );
    fx.primary()
        .await
        .batch_execute("CREATE TABLE still_writable (v int)")
        .await
        .expect("the primary still serves");
    fx.handle.shutdown().await.expect("shutdown");
}
