//! Prepared statements through the proxy: protocol-level (Parse/Bind/Close)
//! and SQL-level (PREPARE/EXECUTE/DEALLOCATE), reused many times, with the
//! same results directly and through the proxy.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use understudy_integration::{render, sqlstate, Harness, BOTH};

/// Named statements of the session, counted with a simple query (which
/// prepares nothing itself).
async fn prepared_count(client: &Client) -> String {
    let messages = client
        .simple_query("select count(*) from pg_prepared_statements")
        .await
        .unwrap();
    render(&messages)[1].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_prepared_statement_reused_ten_thousand_times() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let client = h.connect(target).await;
        let stmt = client
            .prepare("select $1::int * 2, md5($1::text), $2::text || '-' || $1::text")
            .await
            .unwrap();
        let mut hasher = Sha256::new();
        for i in 0..10_000i32 {
            let tag = format!("t{}", i % 7);
            let row = client.query_one(&stmt, &[&i, &tag]).await.unwrap();
            let doubled: i32 = row.get(0);
            let md5: &str = row.get(1);
            let joined: &str = row.get(2);
            assert_eq!(doubled, i * 2, "{target:?} execution {i}");
            assert_eq!(joined, format!("{tag}-{i}"), "{target:?} execution {i}");
            assert_eq!(md5.len(), 32);
            hasher.update(md5.as_bytes());
        }
        let calls: i64 = client
            .query_one(
                "select count(*) from pg_prepared_statements where statement like 'select $1::int * 2%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            calls, 1,
            "{target:?}: one server-side statement, parsed once"
        );
        outputs.push(format!("{:x}", hasher.finalize()));
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_statements_prepared_and_closed_at_protocol_level() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let client = h.connect(target).await;
        let before = prepared_count(&client).await;
        let mut statements = Vec::new();
        for k in 0..500i32 {
            let stmt = client
                .prepare(&format!("select $1::int + {k}, '{k}'::text as k{k}"))
                .await
                .unwrap();
            statements.push(stmt);
        }
        let while_open = prepared_count(&client).await;
        let mut sums = 0i64;
        for (k, stmt) in statements.iter().enumerate() {
            let row = client.query_one(stmt, &[&1000i32]).await.unwrap();
            let v: i32 = row.get(0);
            assert_eq!(v, 1000 + k as i32);
            assert_eq!(stmt.columns()[1].name(), format!("k{k}"));
            sums += i64::from(v);
        }
        // Dropping a statement sends Close; the server forgets it.
        statements.truncate(100);
        let after_close = prepared_count(&client).await;
        drop(statements);
        let all_closed = prepared_count(&client).await;
        outputs.push((before, while_open, sums, after_close, all_closed));
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    let expected_sum: i64 = (0..500).map(|k| 1000 + k).sum();
    assert_eq!(
        outputs[1],
        (
            "0".to_owned(),
            "500".to_owned(),
            expected_sum,
            "100".to_owned(),
            "0".to_owned()
        )
    );
}

/// Runs a simple query and renders its outcome, error included.
async fn outcome(client: &Client, sql: &str) -> Vec<String> {
    match client.simple_query(sql).await {
        Ok(messages) => render(&messages),
        Err(e) => vec![format!("error {}", sqlstate(&e))],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_execute_deallocate_match_direct() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let client = h.connect(target).await;
        let mut log = Vec::new();
        log.push(outcome(&client, "prepare add(int, int) as select $1 + $2 as total").await);
        log.push(
            outcome(
                &client,
                "prepare pair(text) as select $1 || '!' as shout, length($1) as len",
            )
            .await,
        );
        for i in 0..200 {
            log.push(outcome(&client, &format!("execute add({i}, {})", i * 3)).await);
        }
        log.push(outcome(&client, "execute pair('héllo 🐘')").await);
        // Also usable through the extended protocol.
        let row = client.query_one("execute add(20, 22)", &[]).await.unwrap();
        log.push(vec![row.get::<_, i32>(0).to_string()]);
        log.push(
            outcome(
                &client,
                "select name, statement from pg_prepared_statements where from_sql order by name",
            )
            .await,
        );
        log.push(outcome(&client, "prepare add(int) as select 1").await);
        log.push(outcome(&client, "deallocate add").await);
        log.push(outcome(&client, "execute add(1, 2)").await);
        log.push(outcome(&client, "deallocate all").await);
        log.push(outcome(&client, "execute pair('x')").await);
        log.push(
            outcome(
                &client,
                "select count(*) from pg_prepared_statements where from_sql",
            )
            .await,
        );
        outputs.push(log);
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    let log = &outputs[1];
    assert_eq!(log[2], vec!["other", "0", "complete 1"]);
    assert_eq!(log[201], vec!["other", "796", "complete 1"]);
    assert_eq!(log[202], vec!["other", "héllo 🐘!|7", "complete 1"]);
    assert_eq!(log[203], vec!["42"]);
    assert_eq!(
        log[205],
        vec!["error 42P05"],
        "duplicate prepared statement"
    );
    assert_eq!(
        log[207],
        vec!["error 26000"],
        "executing a deallocated statement"
    );
    assert_eq!(log[209], vec!["error 26000"]);
    assert_eq!(log[210], vec!["other", "0", "complete 1"]);
}
