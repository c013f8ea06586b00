//! Errors in the middle of a pipeline: tokio-postgres sends the requests of
//! futures polled together without waiting for answers, so a failing query
//! sits between queries already sent. Which requests succeed and which fail
//! (and with which SQLSTATE) must be the same directly and through the
//! proxy, and the session must keep working afterwards.

use futures_util::future::join_all;
use tokio_postgres::Client;
use understudy_integration::{sqlstate, Harness, BOTH};

type Outcome = Result<Vec<i32>, String>;

fn outcome(result: Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>) -> Outcome {
    result
        .map(|rows| rows.iter().map(|r| r.get::<_, i32>(0)).collect())
        .map_err(|e| sqlstate(&e))
}

/// One prepared statement executed with several parameters at once; the
/// third divides by zero.
async fn pipelined_prepared(client: &Client) -> Vec<Outcome> {
    let stmt = client.prepare("select 100 / $1::int").await.unwrap();
    let divisors = [1i32, 2, 0, 5, 10, 0, 50];
    let stmt = &stmt;
    let futures = divisors
        .iter()
        .map(|d| async move { client.query(stmt, &[d]).await });
    join_all(futures).await.into_iter().map(outcome).collect()
}

/// Unprepared queries (each a Parse/Describe then a Bind/Execute) polled
/// together, with a division by zero and a syntax error among them.
async fn pipelined_unprepared(client: &Client) -> Vec<Outcome> {
    let queries = [
        "select 1",
        "select 2 + 0",
        "select 1 / (select 0)",
        "select 4",
        "selec 5",
        "select generate_series(6, 8)",
    ];
    let futures = queries.iter().map(|q| client.query(*q, &[]));
    join_all(futures).await.into_iter().map(outcome).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_mid_pipeline_fails_only_its_own_query() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let client = h.connect(target).await;
        let prepared = pipelined_prepared(&client).await;
        let unprepared = pipelined_unprepared(&client).await;
        let after = outcome(client.query("select 42", &[]).await);
        outputs.push((prepared, unprepared, after));
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    let (prepared, unprepared, after) = &outputs[1];
    let err = |code: &str| Err(code.to_owned());
    assert_eq!(
        prepared,
        &vec![
            Ok(vec![100]),
            Ok(vec![50]),
            err("22012"),
            Ok(vec![20]),
            Ok(vec![10]),
            err("22012"),
            Ok(vec![2])
        ]
    );
    assert_eq!(
        unprepared,
        &vec![
            Ok(vec![1]),
            Ok(vec![2]),
            err("22012"),
            Ok(vec![4]),
            err("42601"),
            Ok(vec![6, 7, 8])
        ]
    );
    assert_eq!(after, &Ok(vec![42]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_mid_pipeline_inside_a_transaction_then_rollback() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let client = h.connect(target).await;
        client
            .batch_execute("create temp table p(i int)")
            .await
            .unwrap();
        let insert = client
            .prepare("insert into p values ($1) returning i")
            .await
            .unwrap();
        client.batch_execute("begin").await.unwrap();
        // Everything is prepared first, so that the requests go out in this
        // order: insert 1, insert 2, a division by zero, then two requests
        // the failed transaction refuses.
        let divide = client.prepare("select 1 / $1::int").await.unwrap();
        let plus = client.prepare("select $1::int + 0").await.unwrap();
        let requests = [
            (&insert, 1i32),
            (&insert, 2),
            (&divide, 0),
            (&insert, 3),
            (&plus, 5),
        ];
        let client_ref = &client;
        let futures = requests
            .iter()
            .map(|(stmt, v)| async move { client_ref.query(*stmt, &[v]).await });
        let in_tx: Vec<Outcome> = join_all(futures).await.into_iter().map(outcome).collect();
        let still_failed = client
            .simple_query("select 1")
            .await
            .map(|_| ())
            .map_err(|e| sqlstate(&e));
        client.batch_execute("rollback").await.unwrap();
        let count: i64 = client
            .query_one("select count(*) from p", &[])
            .await
            .unwrap()
            .get(0);
        // The session is usable again, in and out of transactions.
        client.batch_execute("begin").await.unwrap();
        let mut after = vec![outcome(client.query("select 1", &[]).await)];
        client.batch_execute("commit").await.unwrap();
        after.push(outcome(client.query(&insert, &[&7i32]).await));
        outputs.push((in_tx, still_failed, count, after));
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    let (in_tx, still_failed, count, after) = &outputs[1];
    let err = |code: &str| Err(code.to_owned());
    assert_eq!(
        in_tx,
        &vec![
            Ok(vec![1]),
            Ok(vec![2]),
            err("22012"),
            err("25P02"),
            err("25P02")
        ]
    );
    assert_eq!(still_failed, &Err("25P02".to_owned()));
    assert_eq!(*count, 0, "ROLLBACK undid the inserts");
    assert_eq!(after, &vec![Ok(vec![1]), Ok(vec![7])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_simple_and_extended_queries_with_errors_match_direct() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let client = h.connect(target).await;
        let simple = |sql: &'static str| {
            let client = &client;
            async move {
                client
                    .simple_query(sql)
                    .await
                    .map(|m| understudy_integration::render(&m))
                    .map_err(|e| sqlstate(&e))
            }
        };
        let (a, b, c, d, e) = futures_util::join!(
            simple("select 1; select 2"),
            client.query("select $1::int / 0", &[&1i32]),
            simple("select 3; select 1/0; select 4"),
            client.query("select $1::int", &[&5i32]),
            simple("select 6"),
        );
        outputs.push((a, outcome(b), c, outcome(d), e));
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    let (a, b, c, d, e) = &outputs[1];
    assert_eq!(
        a.as_ref().unwrap(),
        &vec!["other", "1", "complete 1", "other", "2", "complete 1"]
    );
    assert_eq!(b, &Err("22012".to_owned()));
    assert_eq!(c, &Err("22012".to_owned()));
    assert_eq!(d, &Ok(vec![5]));
    assert_eq!(e.as_ref().unwrap(), &vec!["other", "6", "complete 1"]);
}
