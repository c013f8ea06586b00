//! A result set of a million rows, read as a stream: the row count and a
//! SHA-256 over every value are the same directly and through the proxy.

use futures_util::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, SimpleQueryMessage};
use understudy_integration::{Harness, BOTH};

const ROWS: u64 = 1_000_000;
const SQL: &str = "select g, md5(g::text) from generate_series(1, 1000000) g";

fn hex(digest: impl AsRef<[u8]>) -> String {
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Extended protocol, rows decoded one at a time from the stream.
async fn extended_digest(client: &Client) -> (u64, String, i32) {
    let no_params: [&(dyn ToSql + Sync); 0] = [];
    let stream = client.query_raw(SQL, no_params).await.unwrap();
    futures_util::pin_mut!(stream);
    let mut hasher = Sha256::new();
    let mut count = 0u64;
    let mut last = 0;
    while let Some(row) = stream.try_next().await.unwrap() {
        let g: i32 = row.get(0);
        let md5: &str = row.get(1);
        hasher.update(g.to_be_bytes());
        hasher.update(md5.as_bytes());
        count += 1;
        last = g;
    }
    (count, hex(hasher.finalize()), last)
}

/// Simple protocol, rows as text from the stream.
async fn simple_digest(client: &Client) -> (u64, String, String) {
    let stream = client.simple_query_raw(SQL).await.unwrap();
    futures_util::pin_mut!(stream);
    let mut hasher = Sha256::new();
    let mut count = 0u64;
    let mut last = String::new();
    while let Some(message) = stream.next().await {
        if let SimpleQueryMessage::Row(row) = message.unwrap() {
            let g = row.get(0).unwrap_or_default();
            hasher.update(g.as_bytes());
            hasher.update(b"|");
            hasher.update(row.get(1).unwrap_or_default().as_bytes());
            hasher.update(b"\n");
            count += 1;
            last = g.to_owned();
        }
    }
    (count, hex(hasher.finalize()), last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_rows_extended_protocol_match_direct() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let client = h.connect(target).await;
        outputs.push(extended_digest(&client).await);
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    assert_eq!(outputs[1].0, ROWS);
    assert_eq!(outputs[1].2, ROWS as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn million_rows_simple_protocol_match_direct() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let client = h.connect(target).await;
        outputs.push(simple_digest(&client).await);
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    assert_eq!(outputs[1].0, ROWS);
    assert_eq!(outputs[1].2, ROWS.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoning_a_large_result_leaves_the_session_usable() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let client = h.connect(target).await;
        let no_params: [&(dyn ToSql + Sync); 0] = [];
        {
            let stream = client.query_raw(SQL, no_params).await.unwrap();
            futures_util::pin_mut!(stream);
            let first: Vec<i32> = stream
                .by_ref()
                .take(3)
                .map(|row| row.unwrap().get::<_, i32>(0))
                .collect()
                .await;
            assert_eq!(first, vec![1, 2, 3]);
        }
        let after: i64 = client
            .query_one("select count(*) from generate_series(1, 12345)", &[])
            .await
            .unwrap()
            .get(0);
        outputs.push(after);
    }
    assert_eq!(outputs, vec![12345, 12345]);
}
