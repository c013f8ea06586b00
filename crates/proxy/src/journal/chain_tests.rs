//! Unit tests of transactions chained to one that committed.

use super::tests::{client, complete, msg, query, ready, server};
use super::{Journal, Limits, NotReplayable};

/// The stamp's reply: the token was recorded.
fn stamped(j: &mut Journal, token: i64) {
    j.injected_message(
        &query(&format!("SELECT understudy.stamp_written({token})")),
        token,
    );
    server(
        j,
        &[
            msg(b'T', b"desc"),
            msg(b'D', b"row"),
            complete("SELECT 1"),
            ready(b'T'),
        ],
    );
}

#[test]
fn a_commit_and_chain_ends_the_unit_and_each_transaction_is_kept() {
    let mut j = Journal::new(Limits::default());
    client(&mut j, &[query("begin")]);
    server(&mut j, &[complete("BEGIN"), ready(b'T')]);
    client(&mut j, &[query("insert into t values (1)")]);
    server(&mut j, &[complete("INSERT 0 1"), ready(b'T')]);
    stamped(&mut j, 7);
    client(&mut j, &[query("commit and chain")]);
    server(&mut j, &[complete("COMMIT"), ready(b'T')]);
    let first = j.take_committed();
    assert_eq!(first.len(), 1, "the committed transaction is kept");
    assert_eq!(first[0].token, 7);
    assert!(first[0].chains && !first[0].chained);
    assert_eq!(
        j.chain_opening(),
        Some("begin"),
        "the chained transaction is replayed behind the chain's BEGIN"
    );
    assert_eq!(j.replayable(), Ok(()));
    assert!(!j.is_idle(), "a transaction is open");
    assert_eq!(j.commit_token, None, "its COMMIT gets a stamp of its own");

    client(&mut j, &[query("insert into t values (2)")]);
    server(&mut j, &[complete("INSERT 0 1"), ready(b'T')]);
    stamped(&mut j, 8);
    client(&mut j, &[query("commit")]);
    server(&mut j, &[complete("COMMIT"), ready(b'I')]);
    let second = j.take_committed();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].token, 8);
    assert!(second[0].chained && !second[0].chains);
    let has = |frames: &[u8], text: &[u8]| frames.windows(text.len()).any(|w| w == text);
    assert!(has(&second[0].frames, b"values (2)"));
    assert!(
        !has(&second[0].frames, b"values (1)") && !has(&second[0].frames, b"begin"),
        "only its own messages"
    );
    assert!(has(&first[0].frames, b"begin") && !has(&first[0].frames, b"values (2)"));
    assert!(j.is_idle());
    assert_eq!(j.replayable(), Ok(()));
    assert_eq!(j.chain_opening(), None);
}

/// Runs `statements` (each answered with its tag, in a transaction) as
/// simple Queries, the last being a `COMMIT AND CHAIN`.
fn run(j: &mut Journal, statements: &[(&str, &str)]) {
    for (sql, tag) in statements {
        client(j, &[query(sql)]);
        server(j, &[complete(tag), ready(b'T')]);
    }
}

#[test]
fn a_chain_is_replayed_behind_its_opening_until_its_characteristics_change() {
    let mut j = Journal::new(Limits::default());
    let opening = "begin isolation level repeatable read, read only";
    run(
        &mut j,
        &[
            (opening, "BEGIN"),
            ("select 1", "SELECT 1"),
            ("commit and chain", "COMMIT"),
        ],
    );
    assert_eq!(j.chain_opening(), Some(opening));
    run(
        &mut j,
        &[("select 2", "SELECT 1"), ("commit and chain", "COMMIT")],
    );
    assert_eq!(j.chain_opening(), Some(opening), "along the whole chain");
    assert_eq!(j.replayable(), Ok(()));
    run(&mut j, &[("set transaction read write", "SET")]);
    assert_eq!(
        j.replayable(),
        Err(NotReplayable::ChainedTransaction),
        "changed inside the chained transaction"
    );
    run(&mut j, &[("commit and chain", "COMMIT")]);
    assert_eq!(j.chain_opening(), None, "nor after it");
    assert_eq!(j.replayable(), Err(NotReplayable::ChainedTransaction));
}

#[test]
fn a_chain_whose_defaults_changed_or_that_began_with_other_work_is_not_replayed() {
    for first in [
        &[
            ("begin", "BEGIN"),
            ("set default_transaction_isolation = 'serializable'", "SET"),
        ][..],
        &[("begin; select 1", "SELECT 1")][..],
    ] {
        let mut j = Journal::new(Limits::default());
        run(&mut j, first);
        run(&mut j, &[("commit and chain", "COMMIT")]);
        assert_eq!(j.chain_opening(), None, "{first:?}");
        assert_eq!(j.replayable(), Err(NotReplayable::ChainedTransaction));
    }
}

#[test]
fn a_commit_and_begin_in_one_query_is_neither_replayed_nor_kept() {
    let mut j = Journal::new(Limits::default());
    client(&mut j, &[query("begin")]);
    server(&mut j, &[complete("BEGIN"), ready(b'T')]);
    client(&mut j, &[query("insert into t values (1)")]);
    server(&mut j, &[complete("INSERT 0 1"), ready(b'T')]);
    client(&mut j, &[query("commit; begin; insert into t values (2)")]);
    server(
        &mut j,
        &[
            complete("COMMIT"),
            complete("BEGIN"),
            complete("INSERT 0 1"),
            ready(b'T'),
        ],
    );
    assert_eq!(j.replayable(), Err(NotReplayable::CommitInsideUnit));
    stamped(&mut j, 9);
    client(&mut j, &[query("commit")]);
    server(&mut j, &[complete("COMMIT"), ready(b'I')]);
    assert!(
        !j.has_committed(),
        "applied again, the first transaction would run twice"
    );
    assert_eq!(j.replayable(), Ok(()));
}

#[test]
fn a_commit_and_chain_in_flight_tells_its_opening_and_the_chain_goes_on_from_it() {
    let mut j = Journal::new(Limits::default());
    let opening = "begin isolation level serializable";
    run(
        &mut j,
        &[
            (opening, "BEGIN"),
            ("insert into t values (1)", "INSERT 0 1"),
        ],
    );
    client(&mut j, &[query("commit and chain")]);
    // The server was lost before it answered.
    let commit = j.requests().len() - 1;
    assert!(j.request_chains(commit));
    assert_eq!(j.opening_chained_by(commit).as_deref(), Some(opening));

    j.continue_chain(opening.to_owned());
    assert!(j.requests().is_empty(), "the committed unit is done with");
    assert!(!j.is_idle(), "the client is in the chained transaction");
    assert_eq!(j.chain_opening(), Some(opening));
    assert_eq!(j.replayable(), Ok(()));
}

#[test]
fn a_commit_and_chain_in_flight_after_a_characteristic_changed_has_no_opening() {
    let mut j = Journal::new(Limits::default());
    run(
        &mut j,
        &[
            ("begin", "BEGIN"),
            ("set transaction isolation level repeatable read", "SET"),
        ],
    );
    client(&mut j, &[query("commit and chain")]);
    let commit = j.requests().len() - 1;
    assert_eq!(j.opening_chained_by(commit), None);
}
