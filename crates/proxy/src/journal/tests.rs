//! Unit tests of reply matching, units and session state.

use std::ops::ControlFlow;

use bytes::BytesMut;
use understudy_protocol::backend::TransactionStatus;
use understudy_protocol::scan::Scanner;
use understudy_protocol::FrameWriter;

use super::{Journal, Limits, NotReplayable};

pub(super) fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    let mut w = FrameWriter::tagged(&mut out, tag);
    w.bytes(body);
    w.finish();
    out.to_vec()
}

pub(super) fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', format!("{sql}\0").as_bytes())
}

pub(super) fn parse(name: &str, sql: &str) -> Vec<u8> {
    msg(b'P', format!("{name}\0{sql}\0\0\0").as_bytes())
}

pub(super) fn complete(tag: &str) -> Vec<u8> {
    msg(b'C', format!("{tag}\0").as_bytes())
}

pub(super) fn ready(status: u8) -> Vec<u8> {
    msg(b'Z', &[status])
}

pub(super) fn client(journal: &mut Journal, frames: &[Vec<u8>]) {
    for frame in frames {
        journal.client_message(frame[0], Some(frame));
    }
}

/// Feeds server bytes through a scanner, in small chunks.
pub(super) fn server(journal: &mut Journal, frames: &[Vec<u8>]) {
    let unscanned = server_in_chunks(journal, &frames.concat(), 3);
    assert_eq!(unscanned, 0);
}

/// Feeds `stream` through a scanner `chunk` bytes at a time; returns how
/// many bytes at the end were left unscanned (a message cut short).
fn server_in_chunks(journal: &mut Journal, stream: &[u8], chunk: usize) -> usize {
    let mut scanner = Scanner::new(1 << 20);
    let mut pending = Vec::new();
    for piece_of_stream in stream.chunks(chunk) {
        pending.extend_from_slice(piece_of_stream);
        let scanned = scanner
            .scan(
                &pending,
                |tag, _| super::server_message_needed_whole(tag),
                |piece| {
                    journal.server_piece(piece);
                    ControlFlow::Continue(())
                },
            )
            .unwrap();
        pending.drain(..scanned.relay_upto);
    }
    pending.len()
}

#[test]
fn a_simple_query_unit_ends_at_ready_for_query_idle() {
    let mut j = Journal::new(Limits::default());
    client(&mut j, &[query("select 1")]);
    assert!(!j.is_idle());
    server(
        &mut j,
        &[
            msg(b'T', b"desc"),
            msg(b'D', b"row"),
            complete("SELECT 1"),
            ready(b'I'),
        ],
    );
    assert!(j.is_idle());
    assert_eq!(j.tx_status, TransactionStatus::Idle);
    assert_eq!(j.session.script_len(), 0);
}

#[test]
fn a_transaction_stays_in_the_unit_until_it_ends() {
    let mut j = Journal::new(Limits::default());
    client(&mut j, &[query("begin")]);
    server(&mut j, &[complete("BEGIN"), ready(b'T')]);
    client(&mut j, &[query("update t set x = 1")]);
    server(&mut j, &[complete("UPDATE 1"), ready(b'T')]);
    assert_eq!(j.requests().len(), 2);
    assert!(j.requests().iter().all(|r| r.reply.done));
    client(&mut j, &[query("commit")]);
    server(&mut j, &[complete("COMMIT"), ready(b'I')]);
    assert!(j.is_idle());
}

#[test]
fn settings_are_kept_unless_rolled_back() {
    let mut j = Journal::new(Limits::default());
    session_query(&mut j, "set search_path = a", &["SET"]);
    client(
        &mut j,
        &[
            query("begin"),
            query("set timezone = 'UTC'"),
            query("rollback"),
        ],
    );
    server(
        &mut j,
        &[
            complete("BEGIN"),
            ready(b'T'),
            complete("SET"),
            ready(b'T'),
            complete("ROLLBACK"),
            ready(b'I'),
        ],
    );
    assert_eq!(j.session.script_len(), 1);
    client(&mut j, &[query("discard all")]);
    server(&mut j, &[complete("DISCARD ALL"), ready(b'I')]);
    assert_eq!(j.session.script_len(), 0);
}

#[test]
fn a_query_mixing_settings_and_work_keeps_only_its_settings() {
    let mut j = Journal::new(Limits::default());
    client(
        &mut j,
        &[query("set a.b = 1; insert into t values (1); listen c")],
    );
    server(
        &mut j,
        &[
            complete("SET"),
            complete("INSERT 0 1"),
            complete("LISTEN"),
            ready(b'I'),
        ],
    );
    assert_eq!(j.replayable(), Ok(()));
    let snapshot = j.session.snapshot();
    assert_eq!(snapshot.readies, 1);
    assert_eq!(&snapshot.messages[..], &query("set a.b = 1; listen c;")[..]);
}

#[test]
fn a_statement_mixing_settings_and_work_blocks_replay() {
    let mut j = Journal::new(Limits::default());
    client(
        &mut j,
        &[query(
            "select set_config('a.b', '1', false), count(*) from t",
        )],
    );
    server(
        &mut j,
        &[msg(b'D', b"row"), complete("SELECT 1"), ready(b'I')],
    );
    assert_eq!(j.replayable(), Err(NotReplayable::MixedSessionStatement));
}

#[test]
fn extended_errors_skip_to_sync_and_named_statements_are_kept() {
    let mut j = Journal::new(Limits::default());
    client(
        &mut j,
        &[
            parse("s1", "select 1"),
            msg(b'B', b"\0s1\0\0\0\0\0\0\0"),
            msg(b'E', b"\0\0\0\0\0"),
            msg(b'S', b""),
        ],
    );
    server(
        &mut j,
        &[
            msg(b'1', b""),
            msg(b'2', b""),
            msg(b'D', b"x"),
            complete("SELECT 1"),
            ready(b'I'),
        ],
    );
    assert!(j.is_idle());
    assert_eq!(j.session.prepared_count(), 1);

    client(
        &mut j,
        &[
            parse("s2", "select 1/0"),
            msg(b'B', b"\0s2\0\0\0\0\0\0\0"),
            msg(b'E', b"\0\0\0\0\0"),
            msg(b'S', b""),
        ],
    );
    server(
        &mut j,
        &[
            msg(b'1', b""),
            msg(b'2', b""),
            msg(b'E', b"SERROR\0C22012\0\0"),
            ready(b'I'),
        ],
    );
    assert!(
        j.is_idle(),
        "the error skips Execute, Sync gets ReadyForQuery"
    );
    assert_eq!(j.session.prepared_count(), 2);

    client(&mut j, &[msg(b'C', b"Ss1\0"), msg(b'S', b"")]);
    server(&mut j, &[msg(b'3', b""), ready(b'I')]);
    assert_eq!(j.session.prepared_count(), 1);
}

#[test]
fn replies_are_digested_the_same_whatever_the_chunking() {
    let replies = [
        msg(b'T', b"desc"),
        msg(b'D', &[7u8; 500]),
        complete("SELECT 1"),
        ready(b'T'),
    ];
    let mut a = Journal::new(Limits::default());
    client(&mut a, &[query("begin; select ...")]);
    server(&mut a, &replies);
    let old = a.restart_replies();
    assert!(!a.requests()[0].reply.done);
    server(&mut a, &replies);
    let new = &a.requests()[0].reply;
    assert!(new.done);
    assert_eq!((new.bytes, new.digest()), (old[0].bytes, old[0].digest()));
}

/// The reply to a `begin; select` Query after `stream` was fed in chunks of
/// `chunk` bytes (a row may be cut at the end).
fn reply_after(stream: &[u8], chunk: usize) -> super::Reply {
    let mut j = Journal::new(Limits::default());
    client(&mut j, &[query("begin; select ...")]);
    server_in_chunks(&mut j, stream, chunk);
    j.requests()[0].reply.clone()
}

#[test]
fn a_reply_cut_inside_a_row_has_one_digest_for_the_same_bytes_however_they_came() {
    let rows = [
        msg(b'T', b"desc"),
        msg(b'D', &[1u8; 300]),
        msg(b'D', &[2u8; 300]),
    ];
    let mut stream = rows.concat();
    stream.truncate(stream.len() - 100);
    let whole = reply_after(&stream, stream.len());
    for chunk in [1, 7, 64, 301] {
        let cut = reply_after(&stream, chunk);
        assert_eq!(
            (cut.bytes, cut.digest()),
            (whole.bytes, whole.digest()),
            "chunks of {chunk}"
        );
        assert!(cut.same_result(&whole));
    }
    // One byte of the cut row differs: another digest.
    let mut other = stream.clone();
    let last = other.len() - 1;
    other[last] = 9;
    let differs = reply_after(&other, 7);
    assert_eq!(differs.bytes, whole.bytes);
    assert_ne!(differs.digest(), whole.digest());
    assert!(!differs.same_result(&whole));
    // One byte less: the same bytes so far, but not the same reply.
    let shorter = reply_after(&stream[..stream.len() - 1], 7);
    assert_ne!(shorter.digest(), whole.digest());
}

#[test]
fn pipelined_requests_after_an_idle_point_stay_in_the_unit() {
    let mut j = Journal::new(Limits::default());
    client(&mut j, &[query("select 1"), query("select 2")]);
    server(&mut j, &[complete("SELECT 1"), ready(b'I')]);
    assert_eq!(j.requests().len(), 1);
    assert_eq!(j.frame(&j.requests()[0]).unwrap(), &query("select 2")[..]);
}

#[test]
fn oversized_units_are_not_replayable_until_they_end() {
    let mut j = Journal::new(Limits {
        max_unit_bytes: 64,
        max_session_bytes: 64,
        ..Limits::default()
    });
    client(&mut j, &[query("begin"), query(&"x".repeat(100))]);
    assert_eq!(j.replayable(), Err(NotReplayable::UnitTooLarge));
    server(
        &mut j,
        &[
            complete("BEGIN"),
            ready(b'T'),
            complete("SELECT 1"),
            ready(b'T'),
        ],
    );
    client(&mut j, &[query("commit")]);
    server(&mut j, &[complete("COMMIT"), ready(b'I')]);
    assert_eq!(j.replayable(), Ok(()));
}

#[test]
fn the_shared_budget_blocks_the_session_that_does_not_fit_and_is_returned_at_unit_end() {
    let budget = std::sync::Arc::new(super::JournalBudget::new(40));
    let limits = Limits {
        budget: std::sync::Arc::clone(&budget),
        ..Limits::default()
    };
    let mut first = Journal::new(limits.clone());
    let mut second = Journal::new(limits);
    client(&mut first, &[query("begin"), query(&"a".repeat(20))]);
    assert_eq!(first.replayable(), Ok(()));
    client(&mut second, &[query(&"b".repeat(30))]);
    assert_eq!(
        second.replayable(),
        Err(NotReplayable::TotalTooLarge),
        "the second session's message does not fit beside the first's"
    );
    server(
        &mut first,
        &[
            complete("BEGIN"),
            ready(b'T'),
            complete("SELECT 1"),
            ready(b'T'),
        ],
    );
    client(&mut first, &[query("commit")]);
    server(&mut first, &[complete("COMMIT"), ready(b'I')]);
    assert_eq!(budget.used(), 0, "an ended unit gives its bytes back");
    drop(second);
    assert_eq!(budget.used(), 0);
}

/// Runs `sql` as an autocommit Query answered with `tags`.
pub(super) fn session_query(j: &mut Journal, sql: &str, tags: &[&str]) {
    client(j, &[query(sql)]);
    let mut replies: Vec<Vec<u8>> = tags.iter().map(|t| complete(t)).collect();
    replies.push(ready(b'I'));
    server(j, &replies);
}

/// Prepares the named statement `name` in a batch of its own.
pub(super) fn prepare_named(j: &mut Journal, name: &str, sql: &str) {
    client(j, &[parse(name, sql), msg(b'S', b"")]);
    server(j, &[msg(b'1', b""), ready(b'I')]);
}

pub(super) fn outstanding(j: &mut Journal) -> Vec<super::Reply> {
    j.restart_replies()
}

pub(super) fn bind(statement: &str) -> Vec<u8> {
    msg(b'B', format!("\0{statement}\0\0\0\0\0\0\0").as_bytes())
}

pub(super) fn execute() -> Vec<u8> {
    msg(b'E', b"\0\0\0\0\0")
}

#[test]
fn a_batch_executing_a_prepared_write_may_write_and_a_read_does_not() {
    let mut j = Journal::new(Limits::default());
    client(
        &mut j,
        &[
            parse("w", "insert into t values (1)"),
            parse("r", "select 1"),
            msg(b'S', b""),
        ],
    );
    server(&mut j, &[msg(b'1', b""), msg(b'1', b""), ready(b'I')]);
    assert!(j.is_idle());
    client(&mut j, &[bind("r"), execute()]);
    assert!(!j.batch_may_write(), "a prepared read");
    client(&mut j, &[bind("w"), execute()]);
    assert!(j.batch_may_write(), "a prepared write");
    client(&mut j, &[msg(b'S', b"")]);
    client(&mut j, &[bind("r"), execute()]);
    assert!(
        !j.batch_may_write(),
        "only the batch after the last Sync counts"
    );
}

#[test]
fn a_copy_in_is_one_request_however_many_rows_it_sends() {
    let mut j = Journal::new(Limits::default());
    client(&mut j, &[query("copy t from stdin")]);
    server(&mut j, &[msg(b'G', b"\0\0\0")]);
    let rows: Vec<Vec<u8>> = (0..1000)
        .map(|i| msg(b'd', format!("{i}\n").as_bytes()))
        .collect();
    client(&mut j, &rows);
    client(&mut j, &[msg(b'c', b"")]);
    assert_eq!(j.requests().len(), 3, "Query, the rows, CopyDone");
    let kept = j.frame(&j.requests()[1]).unwrap();
    assert_eq!(kept, &rows.concat()[..], "every row is kept, in order");
    assert!(j.outstanding() <= 3);
}

#[test]
fn a_copy_that_fails_skips_to_the_sync_behind_its_rows() {
    // The server ignored the Sync behind the Execute while it copied; after
    // the bad row it skips to the next one, past the stamp.
    let mut j = Journal::new(Limits::default());
    prepare_named(&mut j, "s0", "copy t from stdin");
    client(&mut j, &[bind("s0"), execute(), msg(b'S', b"")]);
    server(&mut j, &[msg(b'2', b""), msg(b'G', b"\0\0\0")]);
    client(&mut j, &[msg(b'd', b"x\n"), msg(b'c', b"")]);
    for stamp in [
        parse("understudy_stamp", "select 1"),
        bind("understudy_stamp"),
        execute(),
    ] {
        j.injected_request(&stamp);
    }
    client(&mut j, &[msg(b'S', b"")]);
    server(
        &mut j,
        &[msg(b'E', b"SERROR\0C22P02\0Mbad\0\0"), ready(b'I')],
    );
    assert!(j.is_idle(), "the ReadyForQuery answered the last Sync");
}

#[test]
fn a_flush_or_copy_rows_sent_between_units_leave_the_session_idle() {
    let mut j = Journal::new(Limits::default());
    // A Flush behind a batch's Sync, sent before its ReadyForQuery.
    client(
        &mut j,
        &[parse("", "select 1"), msg(b'S', b""), msg(b'H', b"")],
    );
    server(&mut j, &[msg(b'1', b""), ready(b'I')]);
    assert!(j.is_idle(), "the Flush is no part of the next unit");
    // The rest of a COPY that failed, sent after its ReadyForQuery.
    client(&mut j, &[msg(b'd', b"1\n"), msg(b'c', b""), msg(b'H', b"")]);
    assert!(j.is_idle(), "ignored by the server, no part of any unit");
    client(&mut j, &[query("select 1")]);
    assert_eq!(j.requests().len(), 1);
}

#[test]
fn syncs_sent_while_a_copy_takes_rows_get_no_reply() {
    // tokio-postgres: Bind/Execute/Sync, the rows, CopyDone and a second
    // Sync. The server ignores the first Sync, as it ignores a Flush, while
    // it copies; the second one's ReadyForQuery ends the unit.
    let mut j = Journal::new(Limits::default());
    prepare_named(&mut j, "s0", "copy t from stdin");
    client(&mut j, &[bind("s0"), execute(), msg(b'S', b"")]);
    server(&mut j, &[msg(b'2', b""), msg(b'G', b"\0\0\0")]);
    client(&mut j, &[msg(b'd', b"1\n"), msg(b'H', b""), msg(b'c', b"")]);
    assert!(
        j.batch_may_write(),
        "the rows are complete: the COPY commits at the next Sync"
    );
    client(&mut j, &[msg(b'S', b"")]);
    server(&mut j, &[complete("COPY 1"), ready(b'I')]);
    assert!(
        j.is_idle(),
        "the second Sync's ReadyForQuery ended the unit"
    );
    client(&mut j, &[query("select 1")]);
    server(
        &mut j,
        &[msg(b'T', b"desc"), complete("SELECT 1"), ready(b'I')],
    );
    assert!(j.is_idle(), "the replies of the next request are its own");
}

#[test]
fn requests_sent_behind_the_sync_of_a_failed_batch_are_not_skipped() {
    // A driver sends its next batch as soon as it reads the error, before
    // the failed batch's ReadyForQuery: the server runs that batch.
    let mut j = Journal::new(Limits::default());
    client(
        &mut j,
        &[
            parse("sleep", "select pg_sleep(60)"),
            bind("sleep"),
            execute(),
            msg(b'S', b""),
        ],
    );
    server(
        &mut j,
        &[
            msg(b'1', b""),
            msg(b'2', b""),
            msg(b'E', b"SERROR\0C57014\0\0"),
        ],
    );
    client(
        &mut j,
        &[
            msg(b'C', b"Ssleep\0"),
            msg(b'S', b""),
            parse("pid", "select pg_backend_pid()"),
            msg(b'D', b"Spid\0"),
            msg(b'S', b""),
        ],
    );
    server(
        &mut j,
        &[
            ready(b'I'),
            msg(b'3', b""),
            ready(b'I'),
            msg(b'1', b""),
            msg(b't', b"\0\0"),
            msg(b'T', b"desc"),
            ready(b'I'),
        ],
    );
    assert!(j.is_idle());
    assert_eq!(
        j.session.prepared_text(b"pid"),
        Some(&b"select pg_backend_pid()"[..]),
        "the Parse behind the failed batch's Sync was answered"
    );
    assert_eq!(j.session.prepared_text(b"sleep"), None, "closed");
    client(&mut j, &[bind("pid"), execute()]);
    assert!(!j.batch_may_write(), "a read of a known statement");
}

#[test]
fn requests_before_the_sync_of_a_failed_batch_are_skipped() {
    let mut j = Journal::new(Limits::default());
    client(
        &mut j,
        &[parse("bad", "select 1/0"), bind("bad"), execute()],
    );
    server(
        &mut j,
        &[
            msg(b'1', b""),
            msg(b'2', b""),
            msg(b'E', b"SERROR\0C22012\0\0"),
        ],
    );
    // Sent after the error, still before the Sync: the server skips them.
    client(&mut j, &[parse("later", "select 2"), msg(b'S', b"")]);
    assert_eq!(j.outstanding(), 1, "only the Sync waits for a reply");
    server(&mut j, &[ready(b'I')]);
    assert!(j.is_idle());
    assert_eq!(j.session.prepared_text(b"later"), None);
    assert_eq!(j.session.prepared_text(b"bad"), Some(&b"select 1/0"[..]));
}

#[test]
fn a_temporary_table_kept_past_its_transaction_makes_the_session_unmovable() {
    let mut j = Journal::new(Limits::default());
    client(
        &mut j,
        &[query("begin"), query("create temp table t (x int)")],
    );
    server(
        &mut j,
        &[
            complete("BEGIN"),
            ready(b'T'),
            complete("CREATE TABLE"),
            ready(b'T'),
        ],
    );
    assert_eq!(j.replayable(), Ok(()), "the open transaction replays it");
    client(&mut j, &[query("commit")]);
    server(&mut j, &[complete("COMMIT"), ready(b'I')]);
    assert_eq!(
        j.replayable(),
        Err(NotReplayable::TemporaryObject("t".into()))
    );
    client(&mut j, &[query("drop table t")]);
    server(&mut j, &[complete("DROP TABLE"), ready(b'I')]);
    assert_eq!(j.replayable(), Ok(()));
}

#[test]
fn an_advisory_lock_taken_through_a_prepared_statement_makes_the_session_unmovable() {
    let mut j = Journal::new(Limits::default());
    let run = |j: &mut Journal, statement: &str| {
        client(j, &[bind(statement), execute(), msg(b'S', b"")]);
        server(
            j,
            &[
                msg(b'2', b""),
                msg(b'D', b"x"),
                complete("SELECT 1"),
                ready(b'I'),
            ],
        );
    };
    client(
        &mut j,
        &[
            parse("lock", "select pg_advisory_lock($1)"),
            parse("unlock", "select pg_advisory_unlock($1)"),
            msg(b'S', b""),
        ],
    );
    server(&mut j, &[msg(b'1', b""), msg(b'1', b""), ready(b'I')]);
    assert_eq!(j.replayable(), Ok(()));
    run(&mut j, "lock");
    assert_eq!(j.replayable(), Err(NotReplayable::AdvisoryLock));
    run(&mut j, "unlock");
    assert_eq!(j.replayable(), Ok(()));
    // An Execute skipped after an error took nothing.
    client(
        &mut j,
        &[
            parse("", "select 1/0"),
            bind(""),
            execute(),
            bind("lock"),
            execute(),
            msg(b'S', b""),
        ],
    );
    server(
        &mut j,
        &[
            msg(b'1', b""),
            msg(b'2', b""),
            msg(b'E', b"SERROR\0C22012\0\0"),
            ready(b'I'),
        ],
    );
    assert_eq!(j.replayable(), Ok(()));
}

#[test]
fn the_session_snapshot_follows_settings_made_after_it_was_taken() {
    let mut j = Journal::new(Limits::default());
    session_query(&mut j, "set search_path = a", &["SET"]);
    assert_eq!(j.session.snapshot().readies, 1);
    session_query(&mut j, "set timezone = 'UTC'", &["SET"]);
    assert_eq!(j.session.snapshot().readies, 2);
    session_query(&mut j, "discard all", &["DISCARD ALL"]);
    assert_eq!(j.session.snapshot().readies, 0);
}

/// Runs `statements` as one transaction block of simple Queries, each
/// answered with the tag given.
fn transaction(j: &mut Journal, statements: &[(&str, &str)]) {
    for (i, (sql, tag)) in statements.iter().enumerate() {
        client(j, &[query(sql)]);
        let status = if i + 1 == statements.len() {
            b'I'
        } else {
            b'T'
        };
        server(j, &[complete(tag), ready(status)]);
    }
}

#[test]
fn a_rollback_to_a_savepoint_does_not_undo_the_whole_transaction() {
    let mut j = Journal::new(Limits::default());
    transaction(
        &mut j,
        &[
            ("begin", "BEGIN"),
            ("create temp table t (x int)", "CREATE TABLE"),
            ("savepoint s", "SAVEPOINT"),
            ("select 1", "SELECT 1"),
            ("rollback to s", "ROLLBACK"),
            ("commit", "COMMIT"),
        ],
    );
    assert_eq!(
        j.replayable(),
        Err(NotReplayable::TemporaryObject("t".into()))
    );

    let mut j = Journal::new(Limits::default());
    transaction(
        &mut j,
        &[
            ("begin", "BEGIN"),
            ("set local statement_timeout = 5000", "SET"),
            ("savepoint s", "SAVEPOINT"),
            ("rollback to savepoint s", "ROLLBACK"),
            ("commit", "COMMIT"),
        ],
    );
    assert_eq!(
        j.replayable(),
        Ok(()),
        "SET LOCAL ends with its transaction"
    );

    let mut j = Journal::new(Limits::default());
    transaction(
        &mut j,
        &[
            ("begin", "BEGIN"),
            ("set search_path = a", "SET"),
            ("savepoint s", "SAVEPOINT"),
            ("rollback to s", "ROLLBACK"),
            ("commit", "COMMIT"),
        ],
    );
    assert_eq!(
        j.replayable(),
        Err(NotReplayable::SettingBesideSavepointRollback)
    );
}

/// The reply to one `select` in an open transaction, its rows in the order
/// given; `server` feeds it in pieces of three bytes.
fn replied(rows: &[&[u8]], whole: bool) -> super::Reply {
    let mut j = Journal::new(Limits::default());
    client(&mut j, &[query("begin; select ...")]);
    let mut replies = vec![msg(b'T', b"desc")];
    replies.extend(rows.iter().map(|r| msg(b'D', r)));
    if whole {
        replies.extend([complete("SELECT 3"), ready(b'T')]);
    }
    server(&mut j, &replies);
    j.requests()[0].reply.clone()
}

#[test]
fn the_same_rows_in_another_order_are_the_same_result() {
    let (a, b, c): (&[u8], &[u8], &[u8]) = (b"first row", b"second row", b"third!row");
    let ordered = replied(&[a, b, c], true);
    assert!(ordered.same_result(&replied(&[a, b, c], true)));
    assert!(ordered.same_result(&replied(&[c, a, b], true)));
    assert!(!ordered.same_result(&replied(&[a, b, b"other row"], true)));
    assert!(!ordered.same_result(&replied(&[a, a, b], true)));
    // Cut inside a row: only the very same bytes will do.
    let mut cut = Journal::new(Limits::default());
    client(&mut cut, &[query("begin; select ...")]);
    let mut stream = [msg(b'T', b"desc"), msg(b'D', a), msg(b'D', b)].concat();
    stream.truncate(stream.len() - 2);
    let mut scanner = Scanner::new(1 << 20);
    scanner
        .scan(
            &stream,
            |tag, _| super::server_message_needed_whole(tag),
            |piece| {
                cut.server_piece(piece);
                ControlFlow::Continue(())
            },
        )
        .unwrap();
    let partial = cut.requests()[0].reply.clone();
    assert_eq!(partial.rows_digest(), None);
}
