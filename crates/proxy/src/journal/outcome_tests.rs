//! Unit tests of [`Journal::outcome_unknown`]: what a lost server may have
//! committed of the requests in flight.

use super::super::tests::{
    bind, client, complete, execute, msg, outstanding, parse, prepare_named, query, ready, server,
};
use super::super::{Journal, Limits};

#[test]
fn an_autocommit_write_whose_sync_was_sent_has_an_unknown_outcome() {
    let mut j = Journal::new(Limits::default());
    client(
        &mut j,
        &[
            parse("", "insert into t values (1)"),
            msg(b'B', b"\0\0\0\0\0\0\0\0"),
            execute(),
            msg(b'S', b""),
        ],
    );
    let old = outstanding(&mut j);
    assert!(j.outcome_unknown(&old));
}

#[test]
fn reads_and_transaction_starts_in_flight_are_safe_to_repeat() {
    for sql in ["select 1", "begin", "set search_path = a"] {
        let mut j = Journal::new(Limits::default());
        client(&mut j, &[query(sql)]);
        let old = outstanding(&mut j);
        assert!(!j.outcome_unknown(&old), "{sql}");
    }
}

#[test]
fn a_copy_from_stdin_commits_nothing_until_its_rows_end() {
    let copy_data = msg(b'd', b"1\n");
    let unfinished = [query("copy t from stdin"), copy_data.clone()];
    let mut j = Journal::new(Limits::default());
    client(&mut j, &unfinished);
    let old = outstanding(&mut j);
    assert!(!j.outcome_unknown(&old), "the server waits for more rows");

    let mut j = Journal::new(Limits::default());
    client(&mut j, &unfinished);
    client(&mut j, &[msg(b'f', b"gave up\0")]);
    let old = outstanding(&mut j);
    assert!(!j.outcome_unknown(&old), "the client failed the COPY");

    let mut j = Journal::new(Limits::default());
    client(&mut j, &unfinished);
    client(&mut j, &[msg(b'c', b"")]);
    let old = outstanding(&mut j);
    assert!(
        j.outcome_unknown(&old),
        "the rows are complete: it may have committed"
    );

    let mut j = Journal::new(Limits::default());
    client(&mut j, &[query("copy t from '/tmp/rows'")]);
    let old = outstanding(&mut j);
    assert!(j.outcome_unknown(&old), "a COPY from a server file");
}

#[test]
fn an_unstamped_commit_in_flight_has_an_unknown_outcome_but_other_statements_do_not() {
    let mut j = in_transaction();
    client(&mut j, &[query("update t set x = 1")]);
    let old = outstanding(&mut j);
    assert!(!j.outcome_unknown(&old), "nothing commits before COMMIT");

    let mut j = in_transaction();
    client(&mut j, &[query("commit")]);
    let old = outstanding(&mut j);
    assert!(j.outcome_unknown(&old));
}

#[test]
fn a_named_statement_prepared_earlier_is_classified_by_its_text() {
    let mut j = Journal::new(Limits::default());
    prepare_named(&mut j, "ins", "insert into t values ($1)");
    client(
        &mut j,
        &[msg(b'B', b"\0ins\0\0\0\0\0\0\0"), execute(), msg(b'S', b"")],
    );
    let old = outstanding(&mut j);
    assert!(j.outcome_unknown(&old));
}

#[test]
fn a_statement_in_flight_in_a_failed_transaction_commits_nothing() {
    let mut j = in_transaction();
    client(&mut j, &[query("select 1/0")]);
    server(
        &mut j,
        &[
            msg(b'E', b"SERROR\0C22012\0Mdivision by zero\0\0"),
            ready(b'E'),
        ],
    );
    client(&mut j, &[query("release savepoint sp0")]);
    let old = outstanding(&mut j);
    assert!(!j.outcome_unknown(&old));
}

#[test]
fn an_execute_of_a_statement_that_does_not_exist_commits_nothing() {
    let mut j = in_transaction();
    client(&mut j, &[bind("s10"), execute(), msg(b'S', b"")]);
    server(
        &mut j,
        &[
            msg(
                b'E',
                b"SERROR\0C26000\0Mprepared statement \"s10\" does not exist\0\0",
            ),
            ready(b'E'),
        ],
    );
    client(&mut j, &[query("release savepoint sp0")]);
    let old = outstanding(&mut j);
    assert!(!j.outcome_unknown(&old));
}

#[test]
fn work_after_a_rollback_in_the_same_batch_may_have_committed() {
    // Simple protocol: the statements after ROLLBACK run in an implicit
    // transaction that commits at the end of the Query.
    let mut j = in_transaction();
    client(&mut j, &[query("rollback; insert into t values (1)")]);
    let old = outstanding(&mut j);
    assert!(j.outcome_unknown(&old));

    // Extended protocol: the same up to the batch's Sync.
    let mut j = in_transaction();
    client(
        &mut j,
        &[
            parse("", "rollback"),
            bind(""),
            execute(),
            parse("", "insert into t values (1)"),
            bind(""),
            execute(),
            msg(b'S', b""),
        ],
    );
    let old = outstanding(&mut j);
    assert!(j.outcome_unknown(&old));

    // A rollback alone commits nothing.
    let mut j = in_transaction();
    client(
        &mut j,
        &[parse("", "rollback"), bind(""), execute(), msg(b'S', b"")],
    );
    let old = outstanding(&mut j);
    assert!(!j.outcome_unknown(&old));
}

#[test]
fn an_execute_runs_the_statement_bound_to_its_own_portal() {
    let mut j = Journal::new(Limits::default());
    client(
        &mut j,
        &[
            parse("w", "insert into t values (1)"),
            parse("r", "select 1"),
            msg(b'B', b"p1\0w\0\0\0\0\0\0\0"),
            msg(b'B', b"p2\0r\0\0\0\0\0\0\0"),
            msg(b'E', b"p1\0\0\0\0\0"),
            msg(b'S', b""),
        ],
    );
    let old = outstanding(&mut j);
    assert!(j.outcome_unknown(&old), "the insert bound to p1 runs");
}

/// A journal in a transaction block (`begin` answered).
fn in_transaction() -> Journal {
    let mut j = Journal::new(Limits::default());
    client(&mut j, &[query("begin")]);
    server(&mut j, &[complete("BEGIN"), ready(b'T')]);
    j
}

/// A journal in a transaction that failed (`select 1/0` got an error).
fn in_failed_transaction() -> Journal {
    let mut j = in_transaction();
    client(&mut j, &[query("select 1/0")]);
    server(
        &mut j,
        &[
            msg(b'E', b"SERROR\0C22012\0Mdivision by zero\0\0"),
            ready(b'E'),
        ],
    );
    j
}

#[test]
fn a_commit_in_flight_in_a_failed_transaction_commits_nothing() {
    let mut j = in_failed_transaction();
    client(&mut j, &[query("commit")]);
    let old = outstanding(&mut j);
    assert!(
        !j.outcome_unknown(&old),
        "COMMIT of a failed transaction rolls back"
    );

    // What comes after it in the same batch runs on its own, and may commit.
    let mut j = in_failed_transaction();
    client(
        &mut j,
        &[query("commit"), query("insert into t values (1)")],
    );
    let old = outstanding(&mut j);
    assert!(j.outcome_unknown(&old));
}

#[test]
fn an_execute_of_a_statement_the_session_never_prepared_commits_nothing_in_a_transaction() {
    let mut j = in_transaction();
    client(&mut j, &[bind("s10"), execute(), msg(b'S', b"")]);
    let old = outstanding(&mut j);
    assert!(!j.outcome_unknown(&old));

    // The unnamed statement outlives the batch that parsed it: unknown,
    // it may be anything.
    let mut j = in_transaction();
    client(&mut j, &[bind(""), execute(), msg(b'S', b"")]);
    let old = outstanding(&mut j);
    assert!(j.outcome_unknown(&old));
}

#[test]
fn an_autocommit_batch_that_failed_commits_nothing() {
    let mut j = Journal::new(Limits::default());
    client(
        &mut j,
        &[
            parse("", "update t set x = 1"),
            bind(""),
            execute(),
            execute(),
            msg(b'H', b""),
        ],
    );
    server(
        &mut j,
        &[
            msg(b'1', b""),
            msg(b'2', b""),
            complete("UPDATE 0"),
            msg(b'E', b"SERROR\0C55000\0Mportal \"\" cannot be run\0\0"),
        ],
    );
    // The client sends the rest of its batch after reading the error.
    client(&mut j, &[bind("s2"), execute(), msg(b'S', b"")]);
    let old = outstanding(&mut j);
    assert!(!j.outcome_unknown(&old));
}

#[test]
fn a_write_behind_a_begin_in_the_same_batch_commits_nothing() {
    // As JDBC starts a transaction: BEGIN, the first statement, one Sync.
    let mut j = Journal::new(Limits::default());
    client(
        &mut j,
        &[
            parse("", "BEGIN"),
            bind(""),
            execute(),
            parse("", "insert into t values (1)"),
            bind(""),
            execute(),
            msg(b'S', b""),
        ],
    );
    let old = outstanding(&mut j);
    assert!(!j.outcome_unknown(&old));

    // A COMMIT in the same batch may have committed it.
    let mut j = Journal::new(Limits::default());
    client(
        &mut j,
        &[
            parse("", "BEGIN"),
            bind(""),
            execute(),
            parse("", "insert into t values (1)"),
            bind(""),
            execute(),
            parse("", "COMMIT"),
            bind(""),
            execute(),
            msg(b'S', b""),
        ],
    );
    let old = outstanding(&mut j);
    assert!(j.outcome_unknown(&old));
}

#[test]
fn a_query_of_reads_and_settings_only_is_safe_to_repeat() {
    for (sql, unknown) in [
        ("select 1; select 1 / 0; select 2", false),
        ("select k from t order by k; show search_path", false),
        (
            // asyncpg's reset of a connection given back to its pool.
            "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;",
            false,
        ),
        ("set a.b = 1; update t set k = 1", true),
        ("select 1; insert into t values (1)", true),
        ("select 1; select * into u from t", true),
    ] {
        let mut j = Journal::new(Limits::default());
        client(&mut j, &[query(sql)]);
        let old = outstanding(&mut j);
        assert_eq!(j.outcome_unknown(&old), unknown, "{sql}");
    }
}
