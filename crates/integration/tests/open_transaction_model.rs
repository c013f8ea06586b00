//! Open transactions replayed after a failover, checked against a model.
//! Each client opens a transaction and runs steps drawn from a fixed seed on
//! rows only it touches — inserts, updates, deletes, reads of its rows,
//! savepoints released and rolled back to, through the simple and the
//! extended protocol — while a model (with a copy per savepoint) records
//! what its rows must be. The failover comes half way; the clients go on
//! in the same transactions, every read must match the model before and
//! after, and once they commit the table must hold exactly the models'
//! rows. `OPEN_TRANSACTION_MODEL_TRACE=1` prints each client's steps;
//! `OPEN_TRANSACTION_MODEL_SEED=n` draws other sequences.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;
use understudy_integration::{Harness, Target};

const STEPS: usize = 40;

/// A client's rows (`k` → `v`) and its open savepoints, innermost last.
#[derive(Default)]
struct Model {
    rows: BTreeMap<i32, i32>,
    savepoints: Vec<(String, BTreeMap<i32, i32>)>,
    next_savepoint: u32,
}

async fn step(client: &Client, id: i32, model: &mut Model, rng: &mut StdRng) {
    let k = rng.gen_range(0..8);
    let extended = rng.gen_bool(0.5);
    let op = rng.gen_range(0..8);
    if std::env::var_os("OPEN_TRANSACTION_MODEL_TRACE").is_some() {
        eprintln!("client {id}: op {op}, k {k}, extended {extended}");
    }
    match op {
        0 | 1 if !model.rows.contains_key(&k) => {
            let v = rng.gen_range(0..1000);
            if extended {
                client
                    .execute("insert into items values ($1, $2, $3)", &[&id, &k, &v])
                    .await
                    .unwrap();
            } else {
                client
                    .batch_execute(&format!("insert into items values ({id}, {k}, {v})"))
                    .await
                    .unwrap();
            }
            model.rows.insert(k, v);
        }
        2 => {
            let changed = client
                .execute(
                    "update items set v = v + 1 where client = $1 and k = $2",
                    &[&id, &k],
                )
                .await
                .unwrap();
            assert_eq!(changed, u64::from(model.rows.contains_key(&k)));
            if let Some(v) = model.rows.get_mut(&k) {
                *v += 1;
            }
        }
        3 => {
            client
                .batch_execute(&format!(
                    "delete from items where client = {id} and k = {k}"
                ))
                .await
                .unwrap();
            model.rows.remove(&k);
        }
        4 => {
            let name = format!("s{}", model.next_savepoint);
            model.next_savepoint += 1;
            client
                .batch_execute(&format!("savepoint {name}"))
                .await
                .unwrap();
            model.savepoints.push((name, model.rows.clone()));
        }
        5 if !model.savepoints.is_empty() => {
            let i = rng.gen_range(0..model.savepoints.len());
            let (name, rows) = model.savepoints[i].clone();
            client
                .batch_execute(&format!("rollback to savepoint {name}"))
                .await
                .unwrap();
            // The savepoint stays; those made after it are gone.
            model.savepoints.truncate(i + 1);
            model.rows = rows;
        }
        6 if !model.savepoints.is_empty() => {
            let i = rng.gen_range(0..model.savepoints.len());
            let name = model.savepoints[i].0.clone();
            client
                .batch_execute(&format!("release savepoint {name}"))
                .await
                .unwrap();
            model.savepoints.truncate(i);
        }
        _ => check_rows(client, id, model).await,
    }
}

async fn check_rows(client: &Client, id: i32, model: &Model) {
    let rows: BTreeMap<i32, i32> = client
        .query("select k, v from items where client = $1", &[&id])
        .await
        .unwrap_or_else(|e| panic!("client {id} reads its rows: {e:?}"))
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(rows, model.rows, "client {id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_transactions_go_on_after_a_failover_as_their_models_say() {
    let mut h = Harness::start_with(1, |_| {}).await;
    h.cluster
        .connect()
        .await
        .batch_execute(
            "create table items (client int, k int, v int, primary key (client, k));
             insert into items select c, k, c * 100 + k from generate_series(1, 24) c,
                 generate_series(0, 3) k",
        )
        .await
        .unwrap();
    let mut clients = Vec::new();
    for id in 1..=24i32 {
        let client = h.connect(Target::Proxy).await;
        let rows = (0..4).map(|k| (k, id * 100 + k)).collect();
        let mut model = Model {
            rows,
            ..Model::default()
        };
        let seed = understudy_integration::seed_from_env("OPEN_TRANSACTION_MODEL_SEED");
        let mut rng = StdRng::seed_from_u64(seed * 1000 + id as u64);
        client.batch_execute("begin").await.unwrap();
        for _ in 0..STEPS {
            step(&client, id, &mut model, &mut rng).await;
        }
        clients.push((id, client, model, rng));
    }
    h.wait_replicated().await;

    h.fail_over().await;

    for (id, client, model, rng) in &mut clients {
        check_rows(client, *id, model).await;
        for _ in 0..STEPS {
            step(client, *id, model, rng).await;
        }
        client.batch_execute("commit").await.unwrap();
    }
    let direct = h.cluster.connect_to(1).await;
    for (id, _, model, _) in &clients {
        check_rows(&direct, *id, model).await;
    }
}
