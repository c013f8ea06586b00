//! The rules engine through the proxy, against real PostgreSQL: the
//! shipped example (card numbers masked however they are selected,
//! `reporting` refused on `salaries`), each rule kind, simple and extended
//! protocol, text and binary results.

use std::sync::atomic::Ordering;

use tokio_postgres::SimpleQueryMessage;
use understudy_integration::understudy_testkit::wait_until;
use understudy_integration::{sqlstate, Harness, Target};

const CARD: &str = "4111111111111111";
const MASKED: &str = "************1111";

/// A proxy with `rules` (TOML) as its rules file.
async fn harness(rules: &str) -> (Harness, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, rules).unwrap();
    let harness = Harness::start_with(0, |c| c.proxy.rules = path.display().to_string()).await;
    (harness, dir)
}

fn example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/rules.toml"
    ))
    .unwrap()
}

/// The single text value of a simple query.
async fn simple_value(client: &tokio_postgres::Client, sql: &str) -> Option<String> {
    let messages = client.simple_query(sql).await.unwrap();
    messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(row.get(0).map(str::to_owned)),
        _ => None,
    })?
}

async fn setup(h: &Harness) {
    let admin = h.connect(Target::Direct).await;
    admin
        .batch_execute(&format!(
            "CREATE TABLE t (id int, card_number text, holder text);
             INSERT INTO t VALUES (1, '{CARD}', 'Ada');
             CREATE TABLE salaries (who text, amount int);
             INSERT INTO salaries VALUES ('Ada', 100);
             CREATE ROLE reporting LOGIN PASSWORD 'reporting-pw';
             GRANT SELECT ON t, salaries TO reporting;"
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_masks_card_numbers_in_text_and_binary_results() {
    let (h, _dir) = harness(&example()).await;
    setup(&h).await;
    let client = h.connect(Target::Proxy).await;
    for sql in [
        "SELECT card_number FROM t",
        "SELECT card_number AS x FROM t",
        "SELECT upper(card_number) FROM t",
        "SELECT x FROM (SELECT card_number AS x FROM t) s",
        "SELECT t.card_number FROM t JOIN t AS u ON u.id = t.id",
    ] {
        assert_eq!(
            simple_value(&client, sql).await.as_deref(),
            Some(MASKED),
            "{sql}"
        );
        // Extended protocol: tokio-postgres asks for binary results.
        let row = client.query_one(sql, &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), MASKED, "{sql} (binary)");
    }
    let row = client
        .query_one(
            "SELECT id, card_number, holder FROM t WHERE id = $1",
            &[&1i32],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
    assert_eq!(row.get::<_, String>(1), MASKED);
    assert_eq!(row.get::<_, String>(2), "Ada");
    let row = client.query_one("SELECT * FROM t", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>("card_number"), MASKED);
    assert_eq!(row.get::<_, String>("holder"), "Ada");
    // Columns that are not masked pass unchanged.
    assert_eq!(
        simple_value(&client, "SELECT holder FROM t")
            .await
            .as_deref(),
        Some("Ada")
    );
    // The same rows directly from the server are not masked.
    let direct = h.connect(Target::Direct).await;
    assert_eq!(
        simple_value(&direct, "SELECT card_number FROM t")
            .await
            .as_deref(),
        Some(CARD)
    );
    assert!(
        h.proxy
            .metrics()
            .masked_values_total
            .load(Ordering::Relaxed)
            >= 10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_denies_salaries_to_reporting_with_42501() {
    let (h, _dir) = harness(&example()).await;
    setup(&h).await;
    let reporting = h
        .connect_as(Target::Proxy, "reporting", "reporting-pw")
        .await
        .unwrap();
    let e = reporting
        .simple_query("SELECT * FROM salaries")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let message = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(
        message.contains("reporting cannot read salaries"),
        "{message}"
    );
    let e = reporting
        .query("SELECT * FROM salaries", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let e = reporting
        .query("SELECT amount FROM salaries WHERE who = $1", &[&"Ada"])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");
    // Parameters of any type: the refusal comes at Parse, as the server's
    // own error, before the client binds anything.
    let e = reporting
        .query("SELECT who FROM salaries WHERE amount > $1", &[&5i32])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    let e = reporting
        .prepare("SELECT who FROM salaries WHERE amount > $1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e:?}");
    // What the parser cannot read is refused as the syntax error it is.
    let e = reporting
        .simple_query("SELEC * FROM salaries")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42601");
    let e = reporting
        .query("SELEC * FROM salaries", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42601");
    // The session goes on, and other tables are readable.
    assert_eq!(
        simple_value(&reporting, "SELECT count(*) FROM t")
            .await
            .as_deref(),
        Some("1")
    );
    // Other roles are not concerned.
    let admin = h.connect(Target::Proxy).await;
    assert_eq!(
        simple_value(&admin, "SELECT amount FROM salaries")
            .await
            .as_deref(),
        Some("100")
    );
    let metrics = h.proxy.metrics();
    assert_eq!(metrics.rule_denials_total.load(Ordering::Relaxed), 5);
    let mut text = String::new();
    metrics.render_prometheus(&mut text);
    assert!(
        text.contains("understudy_rule_denials{rule=\"reporting cannot read salaries\"} 5"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_inside_a_transaction_aborts_it_like_a_server_error() {
    let (h, _dir) = harness(
        r#"
[[rule]]
name = "no unbounded deletes"
deny = { statements = ["delete_without_where", "ddl"] }
"#,
    )
    .await;
    setup(&h).await;
    let client = h.connect(Target::Proxy).await;
    client.batch_execute("BEGIN").await.unwrap();
    let e = client.batch_execute("DELETE FROM t").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let e = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "25P02");
    client.batch_execute("ROLLBACK").await.unwrap();
    let e = client.execute("DROP TABLE t", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert_eq!(
        client
            .execute("DELETE FROM t WHERE id = 2", &[])
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        simple_value(&client, "SELECT count(*) FROM t")
            .await
            .as_deref(),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrites_rename_limit_and_replace_by_fingerprint() {
    let (h, _dir) = harness(
        r#"
[[rule]]
name = "legacy name"
rewrite = { rename_table = { from = "legacy_events", to = "events" } }
[[rule]]
name = "cap events"
rewrite = { limit = { table = "events", rows = 2 } }
[[rule]]
name = "holder lookup"
rewrite = { query = "SELECT holder FROM t WHERE id = 0", replacement = "SELECT upper(holder) FROM t WHERE id = $1" }
"#,
    )
    .await;
    setup(&h).await;
    let admin = h.connect(Target::Direct).await;
    admin
        .batch_execute(
            "CREATE TABLE events (n int); INSERT INTO events SELECT generate_series(1, 10);",
        )
        .await
        .unwrap();
    let client = h.connect(Target::Proxy).await;
    let rows = client
        .simple_query("SELECT n FROM legacy_events")
        .await
        .unwrap();
    let count = rows
        .iter()
        .filter(|m| matches!(m, SimpleQueryMessage::Row(_)))
        .count();
    assert_eq!(count, 2);
    assert_eq!(
        client
            .query("SELECT n FROM events", &[])
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        client
            .query("SELECT n FROM events LIMIT 5", &[])
            .await
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        simple_value(&client, "SELECT holder FROM t WHERE id = 1")
            .await
            .as_deref(),
        Some("ADA")
    );
    let row = client
        .query_one("SELECT holder FROM t WHERE id = $1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "ADA");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_transaction_proceeds_after_maintenance_end_while_others_run() {
    let (h, _dir) = harness(&example()).await;
    setup(&h).await;
    let holds = h.proxy.holds();
    let held = h.connect(Target::Proxy).await;
    held.batch_execute("SET application_name = 'held-session'; BEGIN")
        .await
        .unwrap();
    held.execute("SELECT count(*) FROM salaries", &[])
        .await
        .unwrap();
    holds.start(&["t".to_owned()]).unwrap();

    let waiting = tokio::spawn(async move {
        held.execute("UPDATE t SET holder = 'Bob' WHERE id = 1", &[])
            .await
            .unwrap();
        held.batch_execute("COMMIT").await.unwrap();
    });
    // The UPDATE reaches the proxy and waits there; it never reaches the
    // server while t is held: the session's backend stays idle in its
    // transaction.
    let metrics = h.proxy.metrics();
    assert!(
        wait_until(std::time::Duration::from_secs(10), || async {
            metrics.held_statements.load(Ordering::Relaxed) == 1
        })
        .await,
        "the UPDATE waits for the hold"
    );
    let direct = h.connect(Target::Direct).await;
    let idle_in_transaction = || async {
        let row = direct
            .query_one(
                "SELECT state, query FROM pg_stat_activity WHERE application_name = 'held-session'",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, String>(0) == "idle in transaction"
            && !row.get::<_, String>(1).starts_with("UPDATE")
    };
    assert!(idle_in_transaction().await);
    // Other sessions run meanwhile, also on other tables.
    let other = h.connect(Target::Proxy).await;
    assert_eq!(
        simple_value(&other, "SELECT amount FROM salaries")
            .await
            .as_deref(),
        Some("100")
    );
    other
        .execute("INSERT INTO salaries VALUES ('Bob', 50)", &[])
        .await
        .unwrap();
    assert!(!waiting.is_finished());
    assert!(idle_in_transaction().await);
    assert_eq!(
        simple_value(&direct, "SELECT holder FROM t")
            .await
            .as_deref(),
        Some("Ada")
    );

    assert_eq!(metrics.held_statements.load(Ordering::Relaxed), 1);
    holds.end();
    tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the held transaction proceeds after end")
        .unwrap();
    assert_eq!(
        simple_value(&direct, "SELECT holder FROM t")
            .await
            .as_deref(),
        Some("Bob")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_past_its_timeout_fails_the_statement_clearly() {
    let (h, _dir) = harness("hold_timeout_ms = 300\n").await;
    setup(&h).await;
    h.proxy.holds().start(&["t".to_owned()]).unwrap();
    let client = h.connect(Target::Proxy).await;
    let e = client.simple_query("SELECT * FROM t").await.unwrap_err();
    assert_eq!(sqlstate(&e), "55P03");
    let message = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default();
    assert!(message.contains("held for maintenance"), "{message}");
    // Tables that are not held are not affected, and the session goes on.
    assert_eq!(
        simple_value(&client, "SELECT count(*) FROM salaries")
            .await
            .as_deref(),
        Some("1")
    );
}

/// Runs one psql command (simple protocol) against the proxy; its stdout.
async fn psql(h: &Harness, command: &str) -> String {
    let output = tokio::process::Command::new("/usr/bin/psql")
        .arg("-X")
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-d")
        .arg(h.conninfo(Target::Proxy))
        .arg("-c")
        .arg(command)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(std::process::Stdio::null())
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(60), output)
        .await
        .expect("psql finishes within 60 s")
        .unwrap();
    assert!(
        output.status.success(),
        "psql {command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Everything `COPY … TO STDOUT` sends, through tokio-postgres (extended protocol).
async fn copy_out(client: &tokio_postgres::Client, sql: &str) -> Vec<u8> {
    use futures_util::TryStreamExt;
    let stream = client.copy_out(sql).await.unwrap();
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    chunks.concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_masks_card_numbers_in_copy_to_stdout() {
    let (h, _dir) = harness(&example()).await;
    setup(&h).await;
    // Simple protocol (psql), no column list: the proxy looks the columns up.
    assert_eq!(
        psql(&h, "COPY t TO STDOUT").await,
        format!("1\t{MASKED}\tAda\n")
    );
    assert_eq!(
        psql(
            &h,
            "COPY t (card_number, id) TO STDOUT WITH (FORMAT csv, HEADER)"
        )
        .await,
        format!("card_number,id\n{MASKED},1\n")
    );
    // Extended protocol.
    let client = h.connect(Target::Proxy).await;
    assert_eq!(
        copy_out(&client, "COPY t TO STDOUT").await,
        format!("1\t{MASKED}\tAda\n").into_bytes()
    );
    assert_eq!(
        copy_out(
            &client,
            "COPY (SELECT holder, card_number AS x FROM t) TO STDOUT"
        )
        .await,
        format!("Ada\t{MASKED}\n").into_bytes()
    );
    // Binary COPY: the masked value becomes NULL (-1 length) in the tuple.
    let data = copy_out(&client, "COPY t TO STDOUT (FORMAT binary)").await;
    let direct = h.connect(Target::Direct).await;
    let raw = copy_out(&direct, "COPY t TO STDOUT (FORMAT binary)").await;
    assert!(raw.windows(CARD.len()).any(|w| w == CARD.as_bytes()));
    assert!(!data.windows(4).any(|w| w == b"1111"), "card number leaked");
    assert!(data.windows(3).any(|w| w == b"Ada"));
    // Tables without masked columns are copied unchanged.
    assert_eq!(psql(&h, "COPY salaries TO STDOUT").await, "Ada\t100\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloaded_rules_apply_to_open_sessions_and_bad_files_are_refused() {
    let (h, dir) = harness("").await;
    setup(&h).await;
    let client = h.connect(Target::Proxy).await;
    assert_eq!(
        simple_value(&client, "SELECT card_number FROM t")
            .await
            .as_deref(),
        Some(CARD)
    );
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, example()).unwrap();
    assert_eq!(h.proxy.rules().reload().unwrap(), 2);
    // The same session, not reconnected, now gets masked values.
    assert_eq!(
        simple_value(&client, "SELECT card_number FROM t")
            .await
            .as_deref(),
        Some(MASKED)
    );
    let row = client
        .query_one("SELECT card_number FROM t", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), MASKED);
    // A broken file is refused with its line and key; the rules stay.
    std::fs::write(
        &path,
        "[[rule]]\nname = \"x\"\nmask = { columns = [\"a\"], method = \"blur\" }\n",
    )
    .unwrap();
    let e = h.proxy.rules().reload().unwrap_err().to_string();
    assert!(
        e.contains("rule[0].mask.method") && e.contains("line 3"),
        "{e}"
    );
    assert_eq!(
        simple_value(&client, "SELECT card_number FROM t")
            .await
            .as_deref(),
        Some(MASKED)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_lists_client_filters_functions_and_other_mask_methods() {
    let (h, _dir) = harness(
        r#"
[[rule]]
name = "bi is read-only on t"
clients = { application_names = ["bi"] }
allow = { tables = ["t"], statements = ["select", "utility"] }

[[rule]]
name = "no sleeping"
deny = { functions = ["pg_sleep"] }

[[rule]]
name = "holders hashed"
mask = { columns = ["holder"], tables = ["t"], method = "hash", unprovable = "deny" }

[[rule]]
name = "ids redacted"
mask = { columns = ["secret_*"], method = "redact" }
"#,
    )
    .await;
    setup(&h).await;
    let admin = h.connect(Target::Direct).await;
    admin
        .batch_execute("CREATE TABLE codes (secret_pin bigint, secret_word varchar); INSERT INTO codes VALUES (1234, 'swordfish');")
        .await
        .unwrap();
    let mut bi_config = h.pg_config(
        Target::Proxy,
        understudy_integration::understudy_testkit::SUPERUSER,
        understudy_integration::understudy_testkit::PASSWORD,
    );
    bi_config.application_name("bi");
    let bi = understudy_integration::connect_with(&bi_config)
        .await
        .unwrap();
    assert_eq!(
        simple_value(&bi, "SELECT count(*) FROM t").await.as_deref(),
        Some("1")
    );
    let e = bi.simple_query("SELECT * FROM salaries").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let e = bi
        .simple_query("UPDATE t SET id = 2 WHERE id = 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    // Other applications are not limited by the allow list.
    let app = h.connect(Target::Proxy).await;
    app.batch_execute("UPDATE t SET id = 1 WHERE id = 1")
        .await
        .unwrap();

    let e = app.simple_query("SELECT pg_sleep(0)").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");

    // hash: the hex SHA-256 of the text.
    let hashed = "a42ad1a8b8fbf02d1b69c96bbfa29c5dba6b5a5e12efd4e06e4a31d9a20cd31a".len();
    let holder = simple_value(&app, "SELECT holder FROM t").await.unwrap();
    assert_eq!(holder.len(), hashed);
    assert!(holder.chars().all(|c| c.is_ascii_hexdigit()));
    assert_ne!(holder, "Ada");
    // unprovable = deny: an expression over the column is refused.
    let e = app
        .simple_query("SELECT lower(holder) FROM t")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    // redact, by name pattern; in binary format a bigint becomes NULL and a
    // varchar is redacted.
    assert_eq!(
        simple_value(&app, "SELECT secret_pin FROM codes")
            .await
            .as_deref(),
        Some("********")
    );
    let row = app
        .query_one("SELECT secret_pin, secret_word FROM codes", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<i64>>(0), None);
    assert_eq!(row.get::<_, String>(1), "********");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_prepared_before_a_reload_cannot_bypass_new_masks() {
    let (h, dir) = harness("").await;
    setup(&h).await;
    let client = h.connect(Target::Proxy).await;
    let prepared = client.prepare("SELECT card_number FROM t").await.unwrap();
    assert_eq!(
        client
            .query_one(&prepared, &[])
            .await
            .unwrap()
            .get::<_, String>(0),
        CARD
    );
    std::fs::write(dir.path().join("rules.toml"), example()).unwrap();
    h.proxy.rules().reload().unwrap();
    // Any statement first lets the session take the new rules up.
    client.simple_query("SELECT 1").await.unwrap();
    assert_eq!(
        client
            .query_one(&prepared, &[])
            .await
            .unwrap()
            .get::<_, String>(0),
        MASKED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_results_stay_masked_across_a_failover() {
    use futures_util::{pin_mut, StreamExt, TryStreamExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, example()).unwrap();
    let mut h = Harness::start_with(1, |c| c.proxy.rules = path.display().to_string()).await;
    h.cluster
        .connect()
        .await
        .batch_execute(
            "CREATE TABLE cards AS SELECT g AS id, lpad(g::text, 16, '4') AS card_number \
             FROM generate_series(1, 200000) g",
        )
        .await
        .unwrap();
    h.wait_replicated().await;
    let client = h.connect(Target::Proxy).await;
    // A transaction that read masked rows is replayed and goes on.
    client.batch_execute("BEGIN").await.unwrap();
    let row = client
        .query_one("SELECT card_number FROM cards WHERE id = 1", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "************4441");
    // A result half streamed when the primary dies.
    let rows = client
        .query_raw(
            "SELECT id, card_number FROM cards ORDER BY id",
            std::iter::empty::<i32>(),
        )
        .await
        .unwrap();
    pin_mut!(rows);
    let mut expected = 1i32;
    while expected <= 20_000 {
        let row = rows.next().await.unwrap().unwrap();
        assert_eq!(row.get::<_, i32>(0), expected);
        assert!(row.get::<_, String>(1).starts_with("************"));
        expected += 1;
    }

    h.fail_over().await;

    while let Some(row) = rows.try_next().await.unwrap() {
        assert_eq!(row.get::<_, i32>(0), expected);
        let card = row.get::<_, String>(1);
        assert_eq!(card.len(), 16);
        assert!(card.starts_with("************"), "{card} leaked");
        expected += 1;
    }
    assert_eq!(expected, 200_001);
    let row = client
        .query_one("SELECT card_number FROM cards WHERE id = 2", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "************4442");
    client.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_around_a_refusal_keep_their_order() {
    let (h, _dir) = harness(&example()).await;
    setup(&h).await;
    let reporting = h
        .connect_as(Target::Proxy, "reporting", "reporting-pw")
        .await
        .unwrap();
    let (first, refused, last) = tokio::join!(
        reporting.query_one("SELECT id FROM t WHERE id = $1", &[&1i32]),
        reporting.query("SELECT who FROM salaries WHERE amount > $1", &[&1i32]),
        reporting.query_one("SELECT card_number FROM t WHERE id = $1", &[&1i32]),
    );
    assert_eq!(first.unwrap().get::<_, i32>(0), 1);
    assert_eq!(sqlstate(&refused.unwrap_err()), "42501");
    assert_eq!(last.unwrap().get::<_, String>(0), MASKED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_prepared_before_a_hold_wait_at_bind() {
    let (h, _dir) = harness("hold_timeout_ms = 60000\n").await;
    setup(&h).await;
    let holds = h.proxy.holds();
    let client = h.connect(Target::Proxy).await;
    let update = client
        .prepare("UPDATE t SET holder = $1 WHERE id = 1")
        .await
        .unwrap();
    holds.start(&["t".to_owned()]).unwrap();
    let waiting = tokio::spawn(async move {
        client.execute(&update, &[&"Bob"]).await.unwrap();
        client
    });
    let metrics = h.proxy.metrics();
    assert!(
        wait_until(std::time::Duration::from_secs(10), || async {
            metrics.held_statements.load(Ordering::Relaxed) == 1
        })
        .await,
        "the Bind waits for the hold"
    );
    let direct = h.connect(Target::Direct).await;
    assert_eq!(
        simple_value(&direct, "SELECT holder FROM t")
            .await
            .as_deref(),
        Some("Ada")
    );
    holds.end();
    let client = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the held statement proceeds after end")
        .unwrap();
    assert_eq!(
        simple_value(&direct, "SELECT holder FROM t")
            .await
            .as_deref(),
        Some("Bob")
    );
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_statement_held_past_the_timeout_fails_with_55p03() {
    let (h, _dir) = harness("hold_timeout_ms = 300\n").await;
    setup(&h).await;
    let client = h.connect(Target::Proxy).await;
    let select = client
        .prepare("SELECT holder FROM t WHERE id = $1")
        .await
        .unwrap();
    h.proxy.holds().start(&["t".to_owned()]).unwrap();
    let e = client.query(&select, &[&1i32]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "55P03", "{e:?}");
    h.proxy.holds().end();
    let row = client.query_one(&select, &[&1i32]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "Ada");
}
