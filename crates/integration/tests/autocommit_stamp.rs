//! Autocommit writes sent with the extended protocol carry a commit stamp:
//! the proxy holds the batch's Sync until the server has answered the batch
//! (with a Flush in its place), then sends the stamp and the Sync. These
//! tests check the mechanics on a healthy primary — writes are stamped once,
//! reads are not, errors still reach the client, pipelined batches each get
//! their own stamp; `commit_in_flight.rs` checks what it is for.

use futures_util::{future, pin_mut, TryStreamExt};
use understudy_integration::{sqlstate, Harness, Target};

async fn stamps(direct: &tokio_postgres::Client) -> i64 {
    direct
        .query_one("select count(*) from understudy.ledger", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autocommit_writes_are_stamped_once_and_reads_are_not() {
    let h = Harness::start().await;
    let direct = h.connect(Target::Direct).await;
    direct
        .batch_execute("create table t (id int primary key)")
        .await
        .unwrap();
    let client = h.connect(Target::Proxy).await;
    let before = stamps(&direct).await;

    let inserted = client
        .execute("insert into t values ($1)", &[&1i32])
        .await
        .unwrap();
    assert_eq!(inserted, 1, "the client gets the INSERT's own row count");
    assert_eq!(stamps(&direct).await, before + 1, "the write was stamped");

    let read: i64 = client
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(read, 1);
    assert_eq!(stamps(&direct).await, before + 1, "a read is not stamped");

    let returned: i32 = client
        .query_one("insert into t values (2) returning id * 10", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(returned, 20, "RETURNING rows arrive unchanged");
    assert_eq!(stamps(&direct).await, before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_autocommit_write_reports_its_error_and_commits_nothing() {
    let h = Harness::start().await;
    let direct = h.connect(Target::Direct).await;
    direct
        .batch_execute("create table t (id int primary key); insert into t values (1)")
        .await
        .unwrap();
    let client = h.connect(Target::Proxy).await;
    let before = stamps(&direct).await;
    let error = client
        .execute("insert into t values ($1)", &[&1i32])
        .await
        .expect_err("a duplicate key");
    assert_eq!(sqlstate(&error), "23505");
    assert_eq!(stamps(&direct).await, before, "no stamp for a failed batch");
    let after = client
        .execute("insert into t values ($1)", &[&2i32])
        .await
        .unwrap();
    assert_eq!(after, 1, "the session goes on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_autocommit_writes_each_get_their_own_stamp() {
    let h = Harness::start().await;
    let direct = h.connect(Target::Direct).await;
    direct
        .batch_execute("create table t (id int primary key)")
        .await
        .unwrap();
    let client = h.connect(Target::Proxy).await;
    let insert = client.prepare("insert into t values ($1)").await.unwrap();
    let before = stamps(&direct).await;
    // tokio-postgres pipelines concurrent queries on one connection: each
    // is its own Bind/Execute/Sync batch, sent back to back.
    let writes: Vec<_> = (1..=20i32)
        .map(|id| {
            let client = &client;
            let insert = &insert;
            async move { client.execute(insert, &[&id]).await }
        })
        .collect();
    let counts = future::try_join_all(writes).await.unwrap();
    assert!(counts.iter().all(|&n| n == 1));
    assert_eq!(stamps(&direct).await, before + 20, "one stamp per batch");
    let rows: i64 = direct
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 20);
    let stream = client
        .query_raw("select id from t order by id", std::iter::empty::<i32>())
        .await
        .unwrap();
    pin_mut!(stream);
    let mut ids = Vec::new();
    while let Some(row) = stream.try_next().await.unwrap() {
        ids.push(row.get::<_, i32>(0));
    }
    assert_eq!(ids, (1..=20).collect::<Vec<_>>());
}
