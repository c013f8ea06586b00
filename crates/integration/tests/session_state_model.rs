//! Session state after a failover or a switchover, checked against a
//! model. Each client
//! changes its state in a sequence drawn from a fixed seed — settings by
//! `SET`, `RESET` and `set_config`, through the simple and the extended
//! protocol, in transactions kept and rolled back; SQL and protocol prepared
//! statements made and dropped; `LISTEN` and `UNLISTEN`; committed writes in
//! between — while a model records what its state must be. After the
//! move every client's settings, prepared statements and channels must
//! be what its model says. `SESSION_MODEL_TRACE=1` prints each client's
//! steps; `SESSION_MODEL_SEED=n` draws other sequences. And a session that sets the same things on every request keeps
//! within a small state limit.

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::{Client, SimpleQueryMessage, Statement};
use understudy_integration::{Harness, Target};

const TIMEZONES: [&str; 4] = ["Asia/Tokyo", "Europe/Paris", "America/New_York", "UTC"];
const STEPS: usize = 60;

/// What a client's session state must be.
struct Model {
    search_path: String,
    timezone: String,
    tenant: Option<String>,
    sql_prepared: BTreeSet<u32>,
    protocol_prepared: Vec<(Statement, i32)>,
    channels: BTreeSet<u32>,
    isolation: String,
    application_name: String,
}

async fn first_value(client: &Client, sql: &str) -> Option<String> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
            _ => None,
        })
        .flatten()
}

async fn column(client: &Client, sql: &str) -> BTreeSet<String> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Runs `STEPS` random changes on `client`, keeping `model` true.
async fn wander(client: &Client, model: &mut Model, rng: &mut StdRng, writes: &mut i64) {
    for _ in 0..STEPS {
        let n = rng.gen_range(0..4u32);
        let op = rng.gen_range(0..19);
        if std::env::var_os("SESSION_MODEL_TRACE").is_some() {
            eprintln!("step: op {op}, n {n}");
        }
        match op {
            0 => {
                client
                    .batch_execute(&format!("set search_path = s{n}"))
                    .await
                    .unwrap();
                model.search_path = format!("s{n}");
            }
            1 => {
                // Extended protocol, through a statement closed right after.
                let zone = TIMEZONES[n as usize];
                client
                    .execute(&format!("set timezone = '{zone}'"), &[])
                    .await
                    .unwrap();
                model.timezone = zone.to_owned();
            }
            2 => {
                let value = format!("tenant-{}", rng.gen_range(0..1000));
                client
                    .query_one("select set_config('app.tenant', $1, false)", &[&value])
                    .await
                    .unwrap();
                model.tenant = Some(value);
            }
            3 => client
                .batch_execute(&format!("begin; set search_path = s{n}; rollback"))
                .await
                .unwrap(),
            4 => client
                .batch_execute(
                    "begin; select set_config('app.tenant', 'local', true); \
                     set local timezone = 'Asia/Kolkata'; savepoint a; select 1; \
                     rollback to a; commit",
                )
                .await
                .unwrap(),
            5 if !model.sql_prepared.contains(&n) => {
                let prepare = format!("prepare p{n} as select {n}");
                if rng.gen_bool(0.5) {
                    client.batch_execute(&prepare).await.unwrap();
                } else {
                    // A PREPARE outlives a rollback; the LISTEN does not.
                    for sql in ["begin", &prepare, "listen gone", "rollback"] {
                        client.batch_execute(sql).await.unwrap();
                    }
                }
                model.sql_prepared.insert(n);
            }
            6 if model.sql_prepared.contains(&n) => {
                // A DEALLOCATE, like a PREPARE, outlives a rollback.
                let sql = if rng.gen_bool(0.5) {
                    format!("deallocate p{n}")
                } else {
                    format!("begin; deallocate p{n}; rollback")
                };
                client.batch_execute(&sql).await.unwrap();
                model.sql_prepared.remove(&n);
            }
            7 => {
                let add = rng.gen_range(0..100);
                let statement = client
                    .prepare(&format!("select $1::int + {add}"))
                    .await
                    .unwrap();
                model.protocol_prepared.push((statement, add));
            }
            8 if !model.protocol_prepared.is_empty() => {
                let i = rng.gen_range(0..model.protocol_prepared.len());
                // Dropping the handle closes the statement.
                model.protocol_prepared.remove(i);
            }
            9 => {
                *writes += 1;
                if rng.gen_bool(0.5) {
                    client
                        .batch_execute("insert into public.writes default values")
                        .await
                        .unwrap();
                } else {
                    client
                        .batch_execute("begin; insert into public.writes default values; commit")
                        .await
                        .unwrap();
                }
            }
            10 => {
                client
                    .batch_execute(&format!("listen ch{n}"))
                    .await
                    .unwrap();
                model.channels.insert(n);
            }
            11 => {
                client
                    .batch_execute(&format!("unlisten ch{n}"))
                    .await
                    .unwrap();
                model.channels.remove(&n);
            }
            12 => {
                // Only DISCARD ALL resets the session.
                let what = ["plans", "sequences", "temp", "all"][n as usize];
                client
                    .batch_execute(&format!("discard {what}"))
                    .await
                    .unwrap();
                if what == "all" {
                    model.search_path = r#""$user", public"#.to_owned();
                    model.timezone = "Etc/UTC".to_owned();
                    model.tenant = None;
                    model.sql_prepared.clear();
                    model.protocol_prepared.clear();
                    model.channels.clear();
                    model.isolation = "read committed".to_owned();
                    model.application_name = String::new();
                }
            }
            14 => {
                let level = [
                    "read committed",
                    "repeatable read",
                    "serializable",
                    "read committed",
                ][n as usize];
                client
                    .batch_execute(&format!(
                        "set session characteristics as transaction isolation level {level}"
                    ))
                    .await
                    .unwrap();
                model.isolation = level.to_owned();
            }
            15 => {
                client.batch_execute("reset all").await.unwrap();
                model.search_path = r#""$user", public"#.to_owned();
                model.timezone = "Etc/UTC".to_owned();
                model.tenant = None;
                model.isolation = "read committed".to_owned();
                model.application_name = String::new();
            }
            16 => {
                let name = format!("app-{n}");
                client
                    .batch_execute(&format!("set application_name = '{name}'"))
                    .await
                    .unwrap();
                model.application_name = name;
            }
            17 => {
                // A protocol prepared statement outlives the rollback of the
                // transaction it was made in; a LISTEN in a committed one stays.
                client.batch_execute("begin").await.unwrap();
                let add = rng.gen_range(0..100);
                let statement = client
                    .prepare(&format!("select $1::int + {add}"))
                    .await
                    .unwrap();
                client.batch_execute("rollback").await.unwrap();
                model.protocol_prepared.push((statement, add));
                client
                    .batch_execute(&format!("begin; listen ch{n}; commit"))
                    .await
                    .unwrap();
                model.channels.insert(n);
            }
            _ => {
                client
                    .batch_execute(&format!("reset timezone; set search_path = s{n}, public"))
                    .await
                    .unwrap();
                model.timezone = "Etc/UTC".to_owned();
                model.search_path = format!("s{n}, public");
            }
        }
    }
}

async fn check(client: &Client, model: &Model, seed: u64) {
    let shown = (
        first_value(client, "show search_path").await,
        first_value(client, "show timezone").await,
        // Unset and reset read the same: NULL, or '' once the name is known.
        first_value(client, "select current_setting('app.tenant', true)")
            .await
            .filter(|t| !t.is_empty()),
        first_value(client, "show default_transaction_isolation").await,
        first_value(client, "show application_name").await,
    );
    let expected = (
        Some(model.search_path.clone()),
        Some(model.timezone.clone()),
        model.tenant.clone().filter(|t| !t.is_empty()),
        Some(model.isolation.clone()),
        Some(model.application_name.clone()),
    );
    assert_eq!(shown, expected, "settings of the client with seed {seed}");
    let sql_prepared = column(
        client,
        "select name from pg_catalog.pg_prepared_statements where from_sql",
    )
    .await;
    let expected: BTreeSet<String> = model.sql_prepared.iter().map(|n| format!("p{n}")).collect();
    assert_eq!(
        sql_prepared, expected,
        "SQL prepared statements, seed {seed}"
    );
    for (statement, add) in &model.protocol_prepared {
        let sum: i32 = client
            .query_one(statement, &[&1i32])
            .await
            .unwrap_or_else(|e| panic!("protocol statement (+{add}), seed {seed}: {e}"))
            .get(0);
        assert_eq!(sum, 1 + add);
    }
    let channels = column(client, "select pg_catalog.pg_listening_channels()::text").await;
    let expected: BTreeSet<String> = model.channels.iter().map(|n| format!("ch{n}")).collect();
    assert_eq!(channels, expected, "channels, seed {seed}");
}

/// How the sessions are moved to the standby.
enum Move {
    Failover,
    Switchover,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_clients_session_state_is_what_its_model_says_after_a_failover() {
    wander_then_move(Move::Failover).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_clients_session_state_is_what_its_model_says_after_a_switchover() {
    wander_then_move(Move::Switchover).await;
}

/// A setting made on every request — a row-level security tenant through
/// a prepared statement, an application name in a Query — and a pool's
/// reset every few requests do not grow the session state: with room for
/// 4 kB of it, the session still moves after a thousand requests, with the
/// last values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_made_on_every_request_do_not_outgrow_the_state_limit() {
    let mut h = Harness::start_with(1, |config| {
        config.journal.max_session_state_bytes = 4096;
    })
    .await;
    let client = h.connect(Target::Proxy).await;
    let tenant = client
        .prepare("select set_config('app.tenant', $1, false)")
        .await
        .unwrap();
    for n in 0..1000 {
        if n % 10 == 0 {
            // asyncpg's reset of a connection given back to its pool.
            client
                .batch_execute(
                    "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;",
                )
                .await
                .unwrap();
        }
        client.query_one(&tenant, &[&n.to_string()]).await.unwrap();
        client
            .batch_execute(&format!("set application_name = 'request {n}'"))
            .await
            .unwrap();
    }
    h.wait_replicated().await;
    h.fail_over().await;
    assert_eq!(
        first_value(&client, "select current_setting('app.tenant')").await,
        Some("999".to_owned())
    );
    assert_eq!(
        first_value(&client, "show application_name").await,
        Some("request 999".to_owned())
    );
    let moved = h
        .proxy
        .metrics()
        .sessions_moved_total
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(moved, 1);
}

async fn wander_then_move(how: Move) {
    let mut h = Harness::start_with(1, |_| {}).await;
    h.cluster
        .connect()
        .await
        .batch_execute(
            "create schema s0; create schema s1; create schema s2; create schema s3;
             create table public.writes (id bigserial primary key)",
        )
        .await
        .unwrap();
    let mut clients = Vec::new();
    let mut writes = 0;
    let first_seed = 1 + 8 * understudy_integration::seed_from_env("SESSION_MODEL_SEED");
    for seed in first_seed..first_seed + 8 {
        let client = h.connect(Target::Proxy).await;
        let mut model = Model {
            search_path: first_value(&client, "show search_path").await.unwrap(),
            timezone: first_value(&client, "show timezone").await.unwrap(),
            tenant: None,
            sql_prepared: BTreeSet::new(),
            protocol_prepared: Vec::new(),
            channels: BTreeSet::new(),
            isolation: first_value(&client, "show default_transaction_isolation")
                .await
                .unwrap(),
            application_name: first_value(&client, "show application_name").await.unwrap(),
        };
        assert_eq!(model.timezone, "Etc/UTC", "the servers' default time zone");
        let mut rng = StdRng::seed_from_u64(seed);
        wander(&client, &mut model, &mut rng, &mut writes).await;
        clients.push((seed, client, model));
    }
    check(&clients[0].1, &clients[0].2, clients[0].0).await;
    h.wait_replicated().await;

    match how {
        Move::Failover => h.fail_over().await,
        Move::Switchover => h.switch_over().await,
    }

    for (seed, client, model) in &clients {
        check(client, model, *seed).await;
    }
    let moved = h
        .proxy
        .metrics()
        .sessions_moved_total
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(moved, clients.len() as u64, "every session moved once");
    let counted: i64 = h
        .cluster
        .connect_to(1)
        .await
        .query_one("select count(*) from public.writes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(counted, writes);
}
