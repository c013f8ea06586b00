//! COPY through the proxy: 100 MB streamed in with COPY FROM STDIN and read
//! back with COPY TO STDOUT, in text and in binary format. The bytes that
//! come back (count and SHA-256) must be the ones sent, directly and through
//! the proxy alike. Rows are generated chunk by chunk while streaming, so
//! the 100 MB never sit in memory at once.
//!
//! The data is read back in `id` order: PostgreSQL may store a short row in
//! the free space of an earlier page, so a table's physical order is not
//! the order of the COPY.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;
use understudy_integration::{Harness, BOTH};

/// Bytes streamed in by each COPY FROM STDIN.
const TOTAL: usize = 100 * 1024 * 1024;
/// Size of one chunk handed to the sink.
const CHUNK: usize = 1024 * 1024;
/// Distinct payloads the rows cycle through.
const POOL: usize = 4099;

/// Byte count and SHA-256 of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Digested {
    bytes: u64,
    sha256: String,
}

#[derive(Default)]
struct Digester {
    bytes: u64,
    hasher: Sha256,
}

impl Digester {
    fn update(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        self.hasher.update(data);
    }

    fn finish(self) -> Digested {
        let sha256 = self
            .hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Digested {
            bytes: self.bytes,
            sha256,
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// Text payloads that need no escaping in COPY text format, some with
/// multi-byte characters.
fn text_pool() -> Vec<String> {
    const ALPHABET: &[char] = &[
        'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l', 'm', 'n', 'o', 'p', 'q', 'r',
        's', 't', 'u', 'v', 'w', 'x', 'y', 'z', 'A', 'B', 'C', 'D', 'E', 'F', '0', '1', '2', '3',
        '4', '5', '6', '7', '8', '9', ' ', '-', '+', 'é', 'ü', '✓', '日', '🐘',
    ];
    (0..POOL)
        .map(|i| {
            pseudo_random(i as u64, 40 + i % 80)
                .into_iter()
                .map(|b| ALPHABET[b as usize % ALPHABET.len()])
                .collect()
        })
        .collect()
}

/// Streams about [`TOTAL`] bytes of COPY data into `sql`, made by `row`
/// (which appends row `n` to the buffer); `header` and `trailer` frame the
/// rows. Returns the digest of what was sent and the number of rows.
async fn copy_in(
    client: &Client,
    sql: &str,
    header: &[u8],
    trailer: &[u8],
    mut row: impl FnMut(u64, &mut BytesMut),
) -> (Digested, u64) {
    let sink = client.copy_in::<_, Bytes>(sql).await.unwrap();
    futures_util::pin_mut!(sink);
    let mut sent = Digester::default();
    let mut rows = 0u64;
    let mut chunk = BytesMut::with_capacity(CHUNK + 4096);
    chunk.extend_from_slice(header);
    while sent.bytes as usize + chunk.len() < TOTAL {
        row(rows, &mut chunk);
        rows += 1;
        if chunk.len() >= CHUNK {
            let data = chunk.split().freeze();
            sent.update(&data);
            sink.send(data).await.unwrap();
        }
    }
    chunk.extend_from_slice(trailer);
    let data = chunk.split().freeze();
    sent.update(&data);
    sink.send(data).await.unwrap();
    let copied = sink.finish().await.unwrap();
    assert_eq!(copied, rows, "rows reported by COPY");
    (sent.finish(), rows)
}

/// Reads `sql` (a COPY … TO STDOUT) to the end and digests it.
async fn copy_out(client: &Client, sql: &str) -> Digested {
    let stream = client.copy_out(sql).await.unwrap();
    futures_util::pin_mut!(stream);
    let mut received = Digester::default();
    while let Some(data) = stream.next().await {
        received.update(&data.unwrap());
    }
    received.finish()
}

async fn count(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("select count(*) from {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_text_100mb_in_and_out_matches_direct() {
    let h = Harness::start().await;
    let pool = text_pool();
    let mut outputs = Vec::new();
    for target in BOTH {
        let client = h.connect(target).await;
        let table = format!("copy_text_{target:?}").to_lowercase();
        client
            .batch_execute(&format!(
                "create unlogged table {table}(id bigint, n int, payload text)"
            ))
            .await
            .unwrap();
        let (sent, rows) = copy_in(
            &client,
            &format!("copy {table} from stdin"),
            b"",
            b"",
            |i, out| {
                let payload = &pool[(i as usize * 7) % POOL];
                out.extend_from_slice(format!("{i}\t{}\t{payload}\n", i % 1000).as_bytes());
            },
        )
        .await;
        let back = copy_out(
            &client,
            &format!("copy (select * from {table} order by id) to stdout"),
        )
        .await;
        assert_eq!(
            back, sent,
            "{target:?}: COPY TO returns the bytes COPY FROM got"
        );
        let csv = copy_out(
            &client,
            &format!(
                "copy (select * from {table} order by id) to stdout with (format csv, header)"
            ),
        )
        .await;
        assert_eq!(
            count(&client, &table).await,
            rows as i64,
            "{target:?}: rows in the table"
        );
        outputs.push((sent, rows, back, csv));
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    assert!(outputs[1].0.bytes >= TOTAL as u64 - CHUNK as u64);
}

/// The column values of row `i` in COPY binary format.
fn binary_row(i: u64, pool: &[String], blobs: &[Vec<u8>], out: &mut BytesMut) {
    out.put_i16(4);
    out.put_i32(8);
    out.put_i64(i as i64);
    if i % 10 == 3 {
        out.put_i32(-1); // NULL
    } else {
        out.put_i32(4);
        out.put_i32((i % 1000) as i32 - 500);
    }
    let payload = pool[(i as usize * 13) % POOL].as_bytes();
    out.put_i32(payload.len() as i32);
    out.put_slice(payload);
    let blob = &blobs[(i as usize * 5) % blobs.len()];
    out.put_i32(blob.len() as i32);
    out.put_slice(blob);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_binary_100mb_in_and_out_matches_direct() {
    let h = Harness::start().await;
    let pool = text_pool();
    let blobs: Vec<Vec<u8>> = (0..257)
        .map(|i| pseudo_random(1000 + i, (i as usize * 3) % 200))
        .collect();
    let mut header = b"PGCOPY\n\xff\r\n\0".to_vec();
    header.extend_from_slice(&0i32.to_be_bytes()); // flags
    header.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    let trailer = (-1i16).to_be_bytes();
    let mut outputs = Vec::new();
    for target in BOTH {
        let client = h.connect(target).await;
        let table = format!("copy_bin_{target:?}").to_lowercase();
        client
            .batch_execute(&format!(
                "create unlogged table {table}(id bigint, n int, payload text, blob bytea)"
            ))
            .await
            .unwrap();
        let (sent, rows) = copy_in(
            &client,
            &format!("copy {table} from stdin with (format binary)"),
            &header,
            &trailer,
            |i, out| binary_row(i, &pool, &blobs, out),
        )
        .await;
        let back = copy_out(
            &client,
            &format!("copy (select * from {table} order by id) to stdout with (format binary)"),
        )
        .await;
        assert_eq!(
            back, sent,
            "{target:?}: COPY TO returns the bytes COPY FROM got"
        );
        assert_eq!(
            count(&client, &table).await,
            rows as i64,
            "{target:?}: rows in the table"
        );
        let nulls: i64 = client
            .query_one(
                &format!("select count(*) from {table} where n is null"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        outputs.push((sent, rows, back, nulls));
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    assert!(outputs[1].3 > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_copy_in_leaves_the_session_usable() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let client = h.connect(target).await;
        client
            .batch_execute("create temp table c(i int)")
            .await
            .unwrap();
        let sink = client
            .copy_in::<_, Bytes>("copy c from stdin")
            .await
            .unwrap();
        futures_util::pin_mut!(sink);
        sink.send(Bytes::from_static(b"1\n2\nnot a number\n4\n"))
            .await
            .unwrap();
        let failed = sink
            .finish()
            .await
            .map_err(|e| understudy_integration::sqlstate(&e));
        let after: i64 = client
            .query_one("select count(*) from c", &[])
            .await
            .unwrap()
            .get(0);
        outputs.push((failed, after));
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    assert_eq!(outputs[1], (Err("22P02".to_owned()), 0));
}
