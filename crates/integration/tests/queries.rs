//! Simple and extended queries over many types, multi-statement and empty
//! queries, transactions and savepoints: the same client code gets the same
//! results directly and through the proxy.

use std::error::Error;

use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};
use understudy_integration::understudy_testkit::{PASSWORD, SUPERUSER};
use understudy_integration::{connect_with, sqlstate, Harness, BOTH};

/// A value exactly as the server sent it in binary format.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Every message of a simple query, with column names and NULLs spelled out.
fn render_simple(messages: &[SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m {
            SimpleQueryMessage::RowDescription(columns) => format!(
                "columns {}",
                columns
                    .iter()
                    .map(|c| c.name())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            SimpleQueryMessage::Row(row) => (0..row.len())
                .map(|i| {
                    row.get(i)
                        .map_or_else(|| "<NULL>".to_owned(), |v| format!("{v:?}"))
                })
                .collect::<Vec<_>>()
                .join("|"),
            SimpleQueryMessage::CommandComplete(n) => format!("complete {n}"),
            other => format!("unexpected {other:?}"),
        })
        .collect()
}

/// Every row of an extended query as the server's binary values, with the
/// column names and type oids.
async fn raw_rows(
    client: &Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> (Vec<(String, u32)>, Vec<Vec<Option<Raw>>>) {
    let stmt = client
        .prepare(sql)
        .await
        .unwrap_or_else(|e| panic!("prepare {sql}: {e}"));
    let columns = stmt
        .columns()
        .iter()
        .map(|c| (c.name().to_owned(), c.type_().oid()))
        .collect();
    let rows = client
        .query(&stmt, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let values = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| row.get::<_, Option<Raw>>(i))
                .collect()
        })
        .collect();
    (columns, values)
}

const MANY_TYPES: &str = "select 42::int2 as small, 2147483647::int4 as int, '-9223372036854775808'::int8 as big, \
     3.14159::float8 as dbl, 1e-7::float4 as flt, \
     123456789012345678901234567890.123456789::numeric as num, 'NaN'::numeric as nan, \
     'héllo wörld ✓ 日本語 🐘'::text as txt, E'\\\\xdeadbeef00ff'::bytea as bin, \
     array[1,2,null,4]::int4[] as ints, array['a b','c\"d',null,'é']::text[] as texts, \
     '{\"k\": [1, 2.5, \"ü\", null, true]}'::json as js, '{\"k\": [1, 2.5, \"ü\", null, true]}'::jsonb as jsb, \
     '2024-02-29 12:34:56.789+00'::timestamptz as tstz, '2024-02-29 12:34:56.789'::timestamp as ts, \
     '2024-02-29'::date as d, '1 day 02:03:04.5'::interval as iv, \
     null::text as null_text, null::int4 as null_int, true as yes, 'f'::bool as no, \
     '00000000-0000-0000-0000-00000000002a'::uuid as id";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_queries_over_many_types_match_direct() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let client = h.connect(target).await;
        client.batch_execute("set timezone = 'UTC'").await.unwrap();
        let sql = format!("{MANY_TYPES}; select g, g * g as sq from generate_series(1, 5) g");
        let messages = client.simple_query(&sql).await.unwrap();
        outputs.push(render_simple(&messages));
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    let proxy = &outputs[1];
    assert!(
        proxy[1].contains("\"héllo wörld ✓ 日本語 🐘\""),
        "{proxy:?}"
    );
    assert!(proxy[1].contains("\"\\\\xdeadbeef00ff\""), "{proxy:?}");
    assert!(
        proxy[1].contains("\"2024-02-29 12:34:56.789+00\""),
        "{proxy:?}"
    );
    assert!(proxy[1].contains("<NULL>|<NULL>"), "{proxy:?}");
    assert_eq!(proxy[2], "complete 1");
    assert_eq!(proxy[3], "columns g,sq");
    assert_eq!(proxy[8], "\"5\"|\"25\"");
    assert_eq!(proxy.last().map(String::as_str), Some("complete 5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_queries_over_many_types_match_direct() {
    let h = Harness::start().await;
    let text = "héllo ✓ 日本語 🐘 'quoted' \"double\" \\ back".to_owned();
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
    let ints = vec![Some(1i32), None, Some(-3)];
    let texts = vec![Some("a,b".to_owned()), None, Some("ü".to_owned())];
    let json = serde_json::json!({"k": [1, 2.5, "ü", null, true], "nested": {"e": "🐘"}});
    let null_int: Option<i32> = None;
    let null_text: Option<String> = None;
    let sql = "select $1::int2, $2::int4, $3::int8, $4::float4, $5::float8, $6::bool, $7::text, \
               $8::bytea, $9::int4[], $10::text[], $11::jsonb, $12::json, $13::int4, $14::text, \
               $15::text::numeric, $16::text::timestamptz, $17::text::interval";
    let mut outputs = Vec::new();
    for target in BOTH {
        let client = h.connect(target).await;
        client
            .batch_execute("set timezone = 'Europe/Paris'")
            .await
            .unwrap();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 17] = [
            &-7i16,
            &i32::MIN,
            &i64::MAX,
            &1.5f32,
            &std::f64::consts::PI,
            &true,
            &text,
            &bytes,
            &ints,
            &texts,
            &json,
            &json,
            &null_int,
            &null_text,
            &"-12345678901234567890.000000000001",
            &"2024-02-29 23:59:59.999999+05:30",
            &"1 year 2 mons 3 days 04:05:06.7",
        ];
        let row = client.query_one(sql, &params).await.unwrap();
        assert_eq!(row.get::<_, i16>(0), -7);
        assert_eq!(row.get::<_, i32>(1), i32::MIN);
        assert_eq!(row.get::<_, i64>(2), i64::MAX);
        assert_eq!(row.get::<_, f32>(3), 1.5);
        assert_eq!(row.get::<_, f64>(4), std::f64::consts::PI);
        assert!(row.get::<_, bool>(5));
        assert_eq!(row.get::<_, String>(6), text);
        assert_eq!(row.get::<_, Vec<u8>>(7), bytes);
        assert_eq!(row.get::<_, Vec<Option<i32>>>(8), ints);
        assert_eq!(row.get::<_, Vec<Option<String>>>(9), texts);
        assert_eq!(row.get::<_, serde_json::Value>(10), json);
        assert_eq!(row.get::<_, serde_json::Value>(11), json);
        assert_eq!(row.get::<_, Option<i32>>(12), None);
        assert_eq!(row.get::<_, Option<String>>(13), None);
        let raw = raw_rows(&client, sql, &params).await;
        let many = raw_rows(&client, MANY_TYPES, &[]).await;
        let series = raw_rows(
            &client,
            "select g, md5(g::text), g % 3 = 0, now() - now() from generate_series(1, $1::int) g",
            &[&1000i32],
        )
        .await;
        assert_eq!(series.1.len(), 1000);
        outputs.push((raw, many, series));
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    let names: Vec<&str> = outputs[1].1 .0.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"small"));
    assert_eq!(names.last(), Some(&"id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamptz_follows_the_session_timezone() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let mut config = h.pg_config(target, SUPERUSER, PASSWORD);
        config.options("-c TimeZone=Asia/Kathmandu");
        let (client, connection) = config.connect(NoTls).await.unwrap();
        let reported = connection.parameter("TimeZone").map(str::to_owned);
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let sql = "select '2024-02-29 12:34:56.789+00'::timestamptz, \
                   '2024-02-29 12:34:56.789+00'::timestamptz::text, current_setting('TimeZone')";
        let mut seen = vec![reported];
        let mut raw = Vec::new();
        for set in [
            "",
            "set timezone = 'America/St_Johns'",
            "set timezone = 'UTC'",
        ] {
            if !set.is_empty() {
                client.batch_execute(set).await.unwrap();
            }
            let simple = client.simple_query(sql).await.unwrap();
            seen.extend(render_simple(&simple).into_iter().map(Some));
            raw.push(raw_rows(&client, sql, &[]).await);
        }
        outputs.push((seen, raw));
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    let seen: Vec<String> = outputs[1]
        .0
        .iter()
        .map(|s| s.clone().unwrap_or_default())
        .collect();
    assert_eq!(seen[0], "Asia/Kathmandu", "ParameterStatus of the greeting");
    let rows: Vec<&String> = seen.iter().filter(|s| s.starts_with('"')).collect();
    assert_eq!(
        rows[0],
        "\"2024-02-29 18:19:56.789+05:45\"|\"2024-02-29 18:19:56.789+05:45\"|\"Asia/Kathmandu\""
    );
    assert_eq!(
        rows[1],
        "\"2024-02-29 09:04:56.789-03:30\"|\"2024-02-29 09:04:56.789-03:30\"|\"America/St_Johns\""
    );
    assert_eq!(
        rows[2],
        "\"2024-02-29 12:34:56.789+00\"|\"2024-02-29 12:34:56.789+00\"|\"UTC\""
    );
    // The binary timestamptz is the same instant whatever the zone.
    let raw = &outputs[1].1;
    assert_eq!(raw[0].1[0][0], raw[1].1[0][0]);
    assert_ne!(raw[0].1[0][1], raw[1].1[0][1]);
}

/// Runs `sql` as a simple query and renders the outcome, error included.
async fn outcome(client: &Client, sql: &str) -> Vec<String> {
    match client.simple_query(sql).await {
        Ok(messages) => render_simple(&messages),
        Err(e) => vec![format!("error {}", sqlstate(&e))],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_statement_and_empty_queries_match_direct() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let client = h.connect(target).await;
        let mut log = Vec::new();
        log.push(outcome(&client, "").await);
        log.push(outcome(&client, "  ;  ").await);
        log.push(outcome(&client, "-- only a comment").await);
        client.batch_execute("").await.unwrap();
        log.push(vec![format!(
            "extended empty {:?}",
            client.execute("", &[]).await.map_err(|e| sqlstate(&e))
        )]);
        log.push(
            outcome(
                &client,
                "create temp table m(i int primary key, s text); \
                 insert into m values (1, 'a'), (2, 'b'); \
                 update m set s = s || '!' where i = 2 returning *; \
                 select * from m order by i; ; \
                 delete from m where i = 1",
            )
            .await,
        );
        // One implicit transaction: the error undoes the first insert too.
        log.push(
            outcome(
                &client,
                "insert into m values (3, 'c'); select 1/0; insert into m values (4, 'd')",
            )
            .await,
        );
        log.push(outcome(&client, "insert into m values (2, 'dup')").await);
        log.push(outcome(&client, "select i, s from m order by i").await);
        outputs.push(log);
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    let log = &outputs[1];
    assert_eq!(log[0], vec!["complete 0"], "empty query");
    assert_eq!(log[3], vec!["extended empty Ok(0)"]);
    assert_eq!(log[5], vec!["error 22012"]);
    assert_eq!(log[6], vec!["error 23505"]);
    assert_eq!(log[7], vec!["columns i,s", "\"2\"|\"b!\"", "complete 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_and_savepoints_match_direct() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let mut client = h.connect(target).await;
        let mut log = Vec::new();
        client
            .batch_execute("create temp table tx(i int)")
            .await
            .unwrap();
        log.push(
            outcome(
                &client,
                "begin; insert into tx values (1); savepoint a; insert into tx values (2); \
                 rollback to savepoint a; insert into tx values (3); savepoint b; \
                 insert into tx values (4); release savepoint b; commit",
            )
            .await,
        );
        log.push(outcome(&client, "begin; insert into tx values (5); rollback").await);
        // An error inside a savepoint, rolled back to, and the transaction goes on.
        log.push(outcome(&client, "begin").await);
        log.push(outcome(&client, "insert into tx values (6)").await);
        log.push(outcome(&client, "savepoint s").await);
        log.push(outcome(&client, "select 1/0").await);
        log.push(outcome(&client, "insert into tx values (66)").await);
        log.push(outcome(&client, "rollback to savepoint s").await);
        log.push(outcome(&client, "insert into tx values (7)").await);
        log.push(outcome(&client, "commit").await);
        // The driver's own transaction and savepoint API (extended protocol).
        {
            let mut t = client.transaction().await.unwrap();
            t.execute("insert into tx values ($1)", &[&8i32])
                .await
                .unwrap();
            {
                let sp = t.savepoint("sp_inner").await.unwrap();
                sp.execute("insert into tx values ($1)", &[&9i32])
                    .await
                    .unwrap();
                sp.rollback().await.unwrap();
            }
            {
                let sp = t.savepoint("kept").await.unwrap();
                sp.execute("insert into tx values ($1)", &[&10i32])
                    .await
                    .unwrap();
                sp.commit().await.unwrap();
            }
            t.commit().await.unwrap();
        }
        {
            let t = client.transaction().await.unwrap();
            t.execute("insert into tx values ($1)", &[&11i32])
                .await
                .unwrap();
            // Dropped without commit: rolled back.
        }
        log.push(outcome(&client, "commit").await);
        let rows: Vec<i32> = client
            .query("select i from tx order by i", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        log.push(vec![format!("{rows:?}")]);
        outputs.push(log);
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    let log = &outputs[1];
    assert_eq!(log[5], vec!["error 22012"]);
    assert_eq!(
        log[6],
        vec!["error 25P02"],
        "failed transaction refuses statements"
    );
    assert_eq!(
        log.last().unwrap(),
        &vec!["[1, 3, 4, 6, 7, 8, 10]".to_owned()]
    );
}

/// Runs the same statements with a connection made by [`connect_with`], to
/// check that a session configured by startup options behaves the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_options_and_application_name_reach_the_server() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let mut config = h.pg_config(target, SUPERUSER, PASSWORD);
        config
            .application_name(format!("queries-{target:?}"))
            .options("-c search_path=pg_catalog,public -c statement_timeout=12345");
        let client = connect_with(&config).await.unwrap();
        let row = client
            .query_one(
                "select current_setting('application_name'), current_setting('search_path'), \
                 current_setting('statement_timeout'), current_database(), current_user",
                &[],
            )
            .await
            .unwrap();
        let values: Vec<String> = (0..5).map(|i| row.get::<_, String>(i)).collect();
        outputs.push(values);
    }
    assert_eq!(outputs[0][0], "queries-Direct");
    assert_eq!(outputs[1][0], "queries-Proxy");
    assert_eq!(outputs[0][1..], outputs[1][1..], "direct vs proxy");
    assert_eq!(outputs[1][1], "pg_catalog,public");
    assert_eq!(outputs[1][2], "12345ms");
    assert_eq!(outputs[1][4], SUPERUSER);
}
