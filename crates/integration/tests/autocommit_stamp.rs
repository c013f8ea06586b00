//! Autocommit writes sent with the extended protocol carry a commit stamp:
//! the proxy holds the batch's Sync until the server has answered the batch
//! (with a Flush in its place), then sends the stamp and the Sync. A simple
//! Query of one data-writing statement goes through the extended protocol
//! for the same purpose, and its client must not be able to tell. These
//! tests check the mechanics on a healthy primary — writes are stamped once,
//! reads are not, errors still reach the client, pipelined batches each get
//! their own stamp, translated Queries answer byte for byte as PostgreSQL
//! does, the ledger's index stays quick to search; `commit_in_flight.rs`
//! checks what it is for.

use futures_util::{future, pin_mut, TryStreamExt};
use understudy_integration::{describe, sqlstate, Harness, RawConn, Target};
use understudy_testkit::{PASSWORD, SUPERUSER};

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

/// Simple Queries, and whether the proxy's stamp leaves a ledger row: the
/// data writes that succeed and change a row (a transaction without a
/// transaction id has nothing to commit, and its stamp records nothing). Each runs on the same table contents, directly and through the
/// proxy, and must get the same bytes back (result columns are expressions:
/// a column of the table would carry the table's oid, which differs between
/// the two runs).
const SIMPLE_QUERIES: &[(&str, bool)] = &[
    ("insert into t values (1, 'a')", true),
    (
        "insert into t values (2, 'b'), (3, 'c') returning id * 10 as x, note || '!' as n",
        true,
    ),
    ("update t set note = 'z' where id > 100", false),
    ("/* app */ delete from t where id = 3 -- one row", true),
    ("insert into t values (4, 'shout')", true),
    ("insert into t values (1, 'dup')", false),
    ("insert into t values (", false),
    ("delete from t where id = 1/0", false),
    ("update t set note = $1", false),
    (
        "with d as (delete from t where id = 2 returning id) select count(*) from d",
        true,
    ),
    (
        "merge into t using (values (1)) v(id) on t.id = v.id when matched then update set note = 'm'",
        true,
    ),
    ("select * into t_copy from t", true),
    ("update t set note = 'x;y' where id = 1;", true),
    ("select id + 0, note || '' from t order by id", false),
    ("insert into t values (7, 'g'); insert into t values (8, 'h')", true),
    ("select 1; insert into t values (9, 'i') returning id + 1", true),
    ("insert into t values (10, 'j'); insert into t values (1, 'dup')", false),
    ("insert into t values (11, 'k'); insert into", false),
    ("insert into t values (12, 'l'); select 1/0", false),
    (
        "begin; insert into t values (13, 'é'); update t set note = 'm' where id = 13; commit",
        true,
    ),
    ("begin; insert into t values (14, 'n'); insert into t values (x); commit", false),
    ("rollback", false),
    ("create table u (id int)", true),
    ("create table u (id int)", false),
    ("alter table u add column note text; insert into u values (1, 'a')", true),
    ("comment on table u is 'made through the proxy'", true),
    ("create table u2 (id int); drop table u2", true),
    ("drop table u", true),
    ("drop table if exists u", false),
    ("create index concurrently t_note on t (note)", false),
    ("select count(*) from t", false),
];

/// Runs every query of `queries` (in the client encoding `encoding`) on
/// `port` from the same table contents and returns the messages each got,
/// and whether it added a row to the ledger.
async fn simple_replies(
    h: &Harness,
    port: u16,
    encoding: &str,
    queries: &[&[u8]],
) -> Vec<(Vec<String>, bool)> {
    let admin = h.connect(Target::Direct).await;
    admin
        .batch_execute(
            "drop table if exists public.t, public.t_copy;
             create table public.t (id int primary key, note text);
             create trigger shout before insert on public.t for each row
                 when (new.note = 'shout') execute function public.shout();",
        )
        .await
        .unwrap();
    let (mut raw, _) = RawConn::login(port, SUPERUSER, PASSWORD).await;
    raw.simple_query(&format!("set client_encoding = '{encoding}'"))
        .await;
    let mut replies = Vec::new();
    let mut stamped = stamps(&admin).await;
    for sql in queries {
        let frames = raw.simple_query_bytes(sql).await;
        let messages = frames
            .iter()
            .map(|f| format!("{} {:?}", describe(f), f.body))
            .collect();
        let before = std::mem::replace(&mut stamped, stamps(&admin).await);
        replies.push((messages, stamped > before));
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_writes_are_stamped_and_answered_exactly_as_postgresql_answers() {
    let h = Harness::start().await;
    let queries: Vec<&[u8]> = SIMPLE_QUERIES.iter().map(|(q, _)| q.as_bytes()).collect();
    let stamped: Vec<bool> = SIMPLE_QUERIES.iter().map(|(_, s)| *s).collect();
    compare_simple_replies(&h, "UTF8", &queries, &stamped).await;
}

/// Runs `queries` directly and through the proxy: the same bytes back, and
/// a ledger row through the proxy exactly for those `stamped` says.
async fn compare_simple_replies(h: &Harness, encoding: &str, queries: &[&[u8]], stamped: &[bool]) {
    let direct = h.connect(Target::Direct).await;
    direct
        .batch_execute(
            "create or replace function public.shout() returns trigger language plpgsql as
                 $$ begin raise notice 'row %', new.id; return new; end $$",
        )
        .await
        .unwrap();
    // The first session through the proxy creates the ledger.
    let _proxied = h.connect(Target::Proxy).await;
    let expected = simple_replies(h, h.port(Target::Direct), encoding, queries).await;
    let got = simple_replies(h, h.port(Target::Proxy), encoding, queries).await;
    for ((sql, stamp), (expected, got)) in
        queries.iter().zip(stamped).zip(expected.iter().zip(&got))
    {
        let sql = String::from_utf8_lossy(sql);
        assert_eq!(got.0, expected.0, "the replies to {sql:?}");
        assert!(!expected.1, "nothing stamps directly");
        assert_eq!(got.1, *stamp, "stamped through the proxy: {sql:?}");
    }
}

/// A session in a single-byte encoding (LATIN1: `é` is the byte 0xE9) gets
/// its autocommit writes stamped too, with the same replies, error
/// positions included, as PostgreSQL's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_byte_encoding_writes_are_stamped_and_answered_exactly_as_postgresql_answers() {
    let h = Harness::start().await;
    let queries: [(&[u8], bool); 6] = [
        (b"insert into t values (1, '\xe9t\xe9')", true),
        (
            b"insert into t values (2, '\xe0;'); insert into t values (3, 'b') returning note || '\xe8' as n",
            true,
        ),
        (
            b"insert into t values (5, '\xe9\xe9'); insert into t values (6, nosuchcolumn)",
            false,
        ),
        (b"/* \xe9 */ update t set note = note || '\xff' where id = 1", true),
        (b"select id + 0, note || '' from t order by id", false),
        (b"insert into t values (1, '\xe9')", false),
    ];
    let (sql, stamped): (Vec<&[u8]>, Vec<bool>) = queries.into_iter().unzip();
    compare_simple_replies(&h, "LATIN1", &sql, &stamped).await;
}

/// A driver that reads an error sends its next requests at once: behind the
/// failed batch's Sync, before that Sync's ReadyForQuery. The server runs
/// them, so the statement they prepare exists and a read of it is a read:
/// never stamped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_prepared_behind_a_failed_batch_is_not_stamped() {
    use bytes::BytesMut;
    use understudy_protocol::backend::tag;
    use understudy_protocol::frontend::{
        encode_bind, encode_execute, encode_flush, encode_parse, encode_sync,
    };

    let h = Harness::start().await;
    let (mut conn, _) = RawConn::login(h.port(Target::Proxy), SUPERUSER, PASSWORD).await;
    let mut out = BytesMut::new();
    encode_parse("", "select 1 / g from generate_series(0, 0) g", &mut out);
    encode_bind("", "", &mut out);
    encode_execute("", &mut out);
    encode_flush(&mut out);
    conn.send(&out).await;
    conn.expect_frame(tag::PARSE_COMPLETE).await;
    conn.expect_frame(tag::BIND_COMPLETE).await;
    assert_eq!(conn.expect_error().await.code, "22012");

    // The server skips to a Sync it has not received yet.
    conn.sync_and_prepare("two", "select 2").await;

    let mut out = BytesMut::new();
    encode_bind("", "two", &mut out);
    encode_execute("", &mut out);
    encode_sync(&mut out);
    conn.send(&out).await;
    for expected in [
        tag::BIND_COMPLETE,
        tag::DATA_ROW,
        tag::COMMAND_COMPLETE,
        tag::READY_FOR_QUERY,
    ] {
        conn.expect_frame(expected).await;
    }
    assert!(
        !conn.has_prepared_statement("understudy_stamp").await,
        "a batch of reads was stamped"
    );
}

/// A Flush sent between requests (psycopg sends one after a pipeline) asks
/// nothing of the server: the next autocommit write is stamped as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_between_requests_does_not_keep_the_next_write_from_its_stamp() {
    use bytes::BytesMut;
    use understudy_protocol::frontend::encode_flush;

    let h = Harness::start().await;
    let direct = h.connect(Target::Direct).await;
    direct
        .batch_execute("create table t (id int primary key)")
        .await
        .unwrap();
    let (mut conn, _) = RawConn::login(h.port(Target::Proxy), SUPERUSER, PASSWORD).await;
    conn.simple_query("select 1").await;
    let mut flush = BytesMut::new();
    encode_flush(&mut flush);
    conn.send(&flush).await;
    let before = stamps(&direct).await;
    conn.simple_query("insert into t values (1)").await;
    assert_eq!(stamps(&direct).await, before + 1, "the write was stamped");
}

/// Heap pages a lookup of the newest ledger token reads: every page of the
/// ranges its BRIN index has not summarized, plus the matching range's.
async fn pages_a_lookup_reads(direct: &tokio_postgres::Client) -> u64 {
    let plan = direct
        .simple_query(
            "explain (analyze) select exists (select 1 from understudy.ledger \
             where token = (select max(token) from understudy.ledger))",
        )
        .await
        .unwrap();
    plan.iter()
        .filter_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .filter(|line| line.contains("Heap Blocks:"))
        .flat_map(|line| {
            line.split_whitespace()
                .filter_map(|word| {
                    word.split_once('=')
                        .and_then(|(_, n)| n.parse::<u64>().ok())
                })
                .collect::<Vec<_>>()
        })
        .sum()
}

/// The ledger's BRIN index is summarized in the background: PostgreSQL does
/// it only when it vacuums (off for the ledger here), and a lookup — one per
/// session with a COMMIT in flight at a failover — would read every row
/// written since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_index_is_kept_summarized() {
    let h = Harness::start().await;
    let direct = h.connect(Target::Direct).await;
    direct
        .batch_execute("create table t (id int)")
        .await
        .unwrap();
    let client = h.connect(Target::Proxy).await;
    client
        .execute("insert into t values ($1)", &[&1i32])
        .await
        .unwrap();
    direct
        .batch_execute(
            "alter table understudy.ledger set (autovacuum_enabled = off); \
             insert into understudy.ledger \
             select (select max(token) from understudy.ledger) + g \
             from generate_series(1, 150000) g; \
             set enable_seqscan = off",
        )
        .await
        .unwrap();
    // 150 000 tokens fill about 660 pages; a summarized range is 128.
    let direct = &direct;
    let summarized =
        understudy_testkit::wait_until(std::time::Duration::from_secs(40), || async move {
            pages_a_lookup_reads(direct).await <= 2 * 128
        })
        .await;
    assert!(
        summarized,
        "a lookup still reads {} pages",
        pages_a_lookup_reads(direct).await
    );
}
