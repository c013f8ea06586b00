//! Which autocommit statements besides data writes are kept in the commit
//! log and applied again on the new primary: `SELECT`s calling functions
//! that write, `CALL`s of procedures that cannot commit inside them, DDL
//! sent as simple Queries, `setval`; and what a re-apply cannot reproduce
//! (an id drawn from a sequence).

use super::*;

/// An autocommit `SELECT` is a read, except when it calls a function that
/// writes: the proxy knows the database's volatile functions, stamps such a
/// `SELECT` like the write it is, and keeps it in the commit log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_by_functions_autocommit_selects_call_are_on_the_new_primary() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (client, sender) = commits_only_the_primary_has(&h, Commits::FunctionCalls).await;
    fail_over_and_count(&mut h, &client, sender).await;
}

/// A `CALL` of a procedure that cannot commit inside it is stamped and kept
/// like an `INSERT`, sent as a simple Query too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_by_autocommit_calls_are_on_the_new_primary() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (client, sender) = commits_only_the_primary_has(&h, Commits::ProcedureCalls).await;
    fail_over_and_count(&mut h, &client, sender).await;
}

/// DDL sent as a simple Query is stamped and kept like a data write, alone
/// in its Query or with other statements, as a migration script run by psql
/// sends it: the tables it created are on the new primary too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_the_standby_never_received_is_on_the_new_primary() {
    let mut h = Harness::start_with(1, |_| {}).await;
    let (client, sender) = session_the_standby_stops_following(&h).await;
    for id in 1..=20 {
        let sql = if id % 2 == 0 {
            format!("create table u{id} (id int)")
        } else {
            format!(
                "create table u{id} (id int);
                 insert into t values ({id}, 'lost unless re-applied')"
            )
        };
        client.batch_execute(&sql).await.unwrap();
    }
    lose_the_primary(&mut h, sender).await;

    let tables: i64 = client
        .query_one(
            "select count(*) from pg_class where relname ~ '^u[0-9]+$' and relkind = 'r'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 20, "the tables the Queries created");
    let rows: i64 = client
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 11, "the first row and those of the odd Queries");
    assert_reapplied(&h, 20);
}

/// A re-applied transaction runs its statements again: an id an `INSERT`
/// drew from a sequence is drawn again on the new primary, where the
/// sequence continues after the values the standby had logged ahead. The
/// rows are all there, under other ids than the client was told, and each
/// difference the client could see (the `RETURNING` id) is counted and
/// logged, not silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serial_id_a_reapplied_insert_draws_again_is_reported() {
    let mut h = Harness::start_with(1, |_| {}).await;
    h.cluster
        .connect()
        .await
        .batch_execute(
            "create table s (id serial primary key, note text);
             insert into s (note) values ('the standby has the sequence logged ahead')",
        )
        .await
        .unwrap();
    let (client, sender) = session_the_standby_stops_following(&h).await;
    let mut told = Vec::new();
    for _ in 0..5 {
        let row = client
            .query_one(
                "insert into s (note) values ('re-applied') returning id",
                &[],
            )
            .await
            .unwrap();
        told.push(row.get::<_, i32>(0));
    }
    lose_the_primary(&mut h, sender).await;

    let ids: Vec<i32> = client
        .query(
            "select id from s where note = 're-applied' order by id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids.len(), 5, "every row is there");
    assert_ne!(ids, told, "drawn again: {ids:?}, told {told:?}");
    let log = h.proxy.commit_log();
    assert_eq!(log.reapplied.load(Ordering::Acquire), 5, "the inserts");
    assert_eq!(
        log.reapplied_mismatches.load(Ordering::Acquire),
        5,
        "each id drawn again is reported"
    );
}

/// `setval` writes a sequence: an autocommit `SELECT setval(…)` is stamped
/// and kept like a write, so the new primary's sequence continues where the
/// client set it, not where the standby last saw it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_set_by_an_autocommit_select_is_set_on_the_new_primary() {
    let mut h = Harness::start_with(1, |_| {}).await;
    h.cluster
        .connect()
        .await
        .batch_execute("create sequence ids")
        .await
        .unwrap();
    let (client, sender) = session_the_standby_stops_following(&h).await;
    client
        .batch_execute("select setval('ids', 1000)")
        .await
        .unwrap();
    lose_the_primary(&mut h, sender).await;

    let next: i64 = client
        .query_one("select nextval('ids')", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(next, 1001, "the sequence continues where the client set it");
}

/// A function created through the proxy counts as one that may write at once,
/// not only once the proxy reads the catalog again: a `SELECT` calling it
/// right after is stamped and kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_by_a_function_created_through_the_proxy_are_on_the_new_primary() {
    let mut h = Harness::start_with(1, |_| {}).await;
    create_table(&h).await;
    let client = h.connect(Target::Proxy).await;
    client
        .batch_execute(
            "insert into t values (0, 'first');
             create function fresh_row(i int) returns int language sql as
                 $$ insert into t values (i, 'lost unless re-applied') returning i $$",
        )
        .await
        .unwrap();
    h.wait_replicated().await;
    let sender = h.freeze_wal_sender().await;
    for id in 1..=20 {
        call_row_function(&client, "fresh_row", id).await;
    }
    fail_over_and_count(&mut h, &client, sender).await;
}
