//! Unit tests of the session state a new backend is given: scripts that
//! name closed statements, compaction of repeated settings, resets and
//! deallocations, and the order of statements prepared after a script.

use super::tests::{
    bind, client, complete, execute, msg, parse, prepare_named, query, ready, server, session_query,
};
use super::{Journal, Limits};

#[test]
fn a_setting_made_through_a_statement_closed_later_is_restored_without_it() {
    // asyncpg's catalog lookup: Parse, Describe and Flush of each statement,
    // then Bind, Execute and Sync; the statement is closed a few units on.
    let mut j = Journal::new(Limits::default());
    let setting = "SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new";
    client(
        &mut j,
        &[
            parse("s3", setting),
            msg(b'D', b"Ss3\0"),
            msg(b'H', b""),
            bind("s3"),
            execute(),
            msg(b'S', b""),
        ],
    );
    server(
        &mut j,
        &[
            msg(b'1', b""),
            msg(b't', b"\0\0"),
            msg(b'T', b"desc"),
            msg(b'2', b""),
            msg(b'D', b"row"),
            complete("SELECT 1"),
            ready(b'I'),
        ],
    );
    client(&mut j, &[msg(b'C', b"Ss3\0"), msg(b'S', b"")]);
    server(&mut j, &[msg(b'3', b""), ready(b'I')]);
    assert_eq!(j.session.blocked, None);
    assert_eq!(j.session.prepared_count(), 0);
    let snapshot = j.session.snapshot();
    let messages = &snapshot.messages[..];
    assert!(
        !messages.windows(3).any(|w| w == b"s3\0"),
        "the script names the closed statement: {messages:?}"
    );
    assert!(messages.windows(12).any(|w| w == b"set_config('"));
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn a_setting_made_on_every_request_is_kept_once() {
    let mut j = Journal::new(Limits::default());
    session_query(&mut j, "listen c", &["LISTEN"]);
    for n in 0..1000 {
        // Row-level security: the tenant set through the extended protocol,
        // a named statement prepared now and then, the application name in
        // a Query.
        let tenant = format!("SELECT set_config('app.tenant', '{n}', false)");
        client(
            &mut j,
            &[parse("", &tenant), bind(""), execute(), msg(b'S', b"")],
        );
        server(
            &mut j,
            &[
                msg(b'1', b""),
                msg(b'2', b""),
                msg(b'D', b"row"),
                complete("SELECT 1"),
                ready(b'I'),
            ],
        );
        if n % 100 == 0 {
            prepare_named(&mut j, &format!("s{n}"), "select 1");
        }
        session_query(
            &mut j,
            &format!("set application_name = 'app {n}'"),
            &["SET"],
        );
        session_query(&mut j, "listen c", &["LISTEN"]);
    }
    assert_eq!(j.replayable(), Ok(()));
    assert_eq!(j.session.prepared_count(), 10);
    assert_eq!(
        j.session.script_len(),
        3,
        "the listen, the tenant, the name"
    );
    let snapshot = j.session.snapshot();
    assert!(contains(&snapshot.messages, "listen c"));
    assert!(contains(
        &snapshot.messages,
        "set_config('app.tenant', '999', false)"
    ));
    assert!(!contains(&snapshot.messages, "'998'"));
    assert!(contains(&snapshot.messages, "'app 999'"));
}

#[test]
fn the_snapshot_follows_a_setting_that_replaced_an_earlier_one() {
    let mut j = Journal::new(Limits::default());
    session_query(&mut j, "set app.x = 'one'", &["SET"]);
    assert!(contains(&j.session.snapshot().messages, "'one'"));
    session_query(&mut j, "set app.x = 'two'", &["SET"]);
    let snapshot = j.session.snapshot();
    assert!(contains(&snapshot.messages, "'two'"));
    assert!(!contains(&snapshot.messages, "'one'"));
}

#[test]
fn a_pool_reset_on_every_release_keeps_the_state_small() {
    let mut j = Journal::new(Limits::default());
    for n in 0..1000 {
        session_query(&mut j, &format!("set app.user = '{n}'"), &["SET"]);
        session_query(&mut j, "listen c", &["LISTEN"]);
        session_query(
            &mut j,
            "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;",
            &["SELECT 1", "CLOSE CURSOR ALL", "UNLISTEN", "RESET"],
        );
    }
    assert_eq!(j.replayable(), Ok(()));
    assert_eq!(j.session.script_len(), 1, "one reset");
}

#[test]
fn a_setting_that_changes_parsing_stays_before_a_statement_parsed_under_it() {
    let mut j = Journal::new(Limits::default());
    session_query(&mut j, "set search_path = a", &["SET"]);
    prepare_named(&mut j, "s1", "select * from t");
    session_query(&mut j, "set search_path = b", &["SET"]);
    session_query(&mut j, "set search_path = c", &["SET"]);
    session_query(&mut j, "reset all", &["RESET"]);
    let snapshot = j.session.snapshot();
    assert!(contains(&snapshot.messages, "search_path = a"));
    assert!(!contains(&snapshot.messages, "search_path = b"));
    assert!(!contains(&snapshot.messages, "search_path = c"));
    assert_eq!(j.session.script_len(), 2, "search_path = a, reset all");
}

#[test]
fn statements_prepared_and_deallocated_on_every_request_leave_nothing() {
    let mut j = Journal::new(Limits::default());
    for n in 0..1000 {
        // PHP's PDO: a protocol prepared statement, deallocated in SQL.
        let name = format!("pdo_stmt_{n:08}");
        prepare_named(&mut j, &name, "select 1");
        session_query(&mut j, &format!("DEALLOCATE {name}"), &["DEALLOCATE"]);
        // A SQL PREPARE and DEALLOCATE.
        session_query(&mut j, "prepare q as select 2", &["PREPARE"]);
        session_query(&mut j, "deallocate q", &["DEALLOCATE"]);
        if n % 10 == 0 {
            session_query(&mut j, "prepare r as select 3", &["PREPARE"]);
            session_query(&mut j, "deallocate all", &["DEALLOCATE ALL"]);
        }
    }
    assert_eq!(j.replayable(), Ok(()));
    assert_eq!(j.session.prepared_count(), 0);
    assert_eq!(j.session.script_len(), 0);
    assert_eq!(j.session.snapshot().readies, 0);
}

fn position(haystack: &[u8], needle: &str) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())
}

#[test]
fn a_statement_prepared_after_a_script_in_the_same_unit_is_restored_after_it() {
    // psycopg: DEALLOCATE ALL in a transaction, then a new statement
    // prepared before the COMMIT; and a search path set before a statement
    // that is parsed under it.
    let mut j = Journal::new(Limits::default());
    prepare_named(&mut j, "old", "select 0");
    session_query(&mut j, "begin", &["BEGIN"]);
    client(&mut j, &[query("deallocate all")]);
    server(&mut j, &[complete("DEALLOCATE ALL"), ready(b'T')]);
    client(&mut j, &[query("set search_path = a")]);
    server(&mut j, &[complete("SET"), ready(b'T')]);
    client(&mut j, &[parse("s1", "select * from t"), msg(b'S', b"")]);
    server(&mut j, &[msg(b'1', b""), ready(b'T')]);
    client(&mut j, &[query("commit")]);
    server(&mut j, &[complete("COMMIT"), ready(b'I')]);
    assert_eq!(j.session.prepared_count(), 1);
    let snapshot = j.session.snapshot();
    let messages = &snapshot.messages[..];
    assert_eq!(position(messages, "select 0"), None, "deallocated");
    let set = position(messages, "search_path = a").expect("the setting");
    let parsed = position(messages, "select * from t").expect("the statement");
    assert!(
        set < parsed,
        "the statement is parsed under its search path"
    );
}

#[test]
fn every_prepared_statement_is_found_by_name_however_the_state_changed() {
    use crate::commit_sql::AutocommitKind;
    let mut j = Journal::new(Limits::default());
    let text = |n: usize| {
        if n.is_multiple_of(3) {
            format!("insert into t{n} values (1)")
        } else {
            format!("select {n}")
        }
    };
    let mut expected: Vec<usize> = Vec::new();
    for n in 0..300 {
        prepare_named(&mut j, &format!("S_{n}"), &text(n));
        expected.push(n);
        match n % 50 {
            // Settings between statements: entries of another kind, and
            // compaction removing the earlier setting from among them.
            10 | 30 => session_query(&mut j, &format!("set app.x = '{n}'"), &["SET"]),
            // A statement closed in the middle moves every later one.
            20 => {
                let closed = expected.remove(expected.len() / 2);
                client(
                    &mut j,
                    &[
                        msg(b'C', format!("SS_{closed}\0").as_bytes()),
                        msg(b'S', b""),
                    ],
                );
                server(&mut j, &[msg(b'3', b""), ready(b'I')]);
            }
            // Prepared again under the same name, with another text.
            40 => prepare_named(&mut j, &format!("S_{}", expected[0]), &text(expected[0])),
            _ => {}
        }
        if n == 200 {
            session_query(&mut j, "discard all", &["DISCARD ALL"]);
            expected.clear();
        }
    }
    assert_eq!(j.session.prepared_count(), expected.len());
    for n in 0..300 {
        let name = format!("S_{n}");
        let found = j.session.prepared_text(name.as_bytes());
        if expected.contains(&n) {
            assert_eq!(found, Some(text(n).as_bytes()), "{name}");
            let kind = j.session.prepared_kind(name.as_bytes());
            assert_eq!(kind, Some(AutocommitKind::of(text(n).as_bytes())), "{name}");
        } else {
            assert_eq!(found, None, "{name} was closed or discarded");
            assert_eq!(j.session.prepared_kind(name.as_bytes()), None, "{name}");
        }
    }
}
