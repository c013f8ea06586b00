//! The `journal` target: a client stream and a server stream, cut from the
//! input and fed in alternating chunks the way the relay sees them, through
//! the relay's checks of client headers and into the session
//! [`Journal`].
//!
//! Input: one byte for the chunk size, two for the length of the client
//! stream, then the client stream and the server stream.
//!
//! It panics when an invariant does not hold:
//! - every kept request frame is one whole frame of its type;
//! - a ReadyForQuery event leaves the journal in that transaction status;
//! - the session state's replay script decodes into whole frames, with one
//!   Query or Sync per ReadyForQuery it expects;
//! - every journal query (replayability, commit detection, restarting the
//!   replies) answers without panicking, and a statement that is a COMMIT
//!   mentions one.

use std::ops::ControlFlow;

use bytes::BytesMut;
use understudy_protocol::backend::{self, ErrorFields};
use understudy_protocol::frontend;
use understudy_protocol::scan::{body_of, Piece, Scanner, Stop};
use understudy_protocol::Frame;

use crate::commit_sql;
use crate::journal::{server_message_needed_whole, Journal, Limits, ServerEvent};

/// Largest frame the scanners accept.
const MAX_MESSAGE_LEN: usize = 1 << 16;

/// Small journal limits, so that the fuzzer reaches them; the shared
/// budget is small too, and must be whole again when the journal is gone.
fn limits() -> Limits {
    Limits {
        max_unit_bytes: 2048,
        max_session_bytes: 2048,
        budget: std::sync::Arc::new(crate::journal::JournalBudget::new(4096)),
    }
}

/// One direction of the session.
struct Direction<'a> {
    input: &'a [u8],
    offset: usize,
    pending: Vec<u8>,
    scanner: Scanner,
    /// The relay stopped reading this direction (Terminate, a refused
    /// message, a FATAL error).
    ended: bool,
}

impl<'a> Direction<'a> {
    fn new(input: &'a [u8]) -> Self {
        Direction {
            input,
            offset: 0,
            pending: Vec::new(),
            scanner: Scanner::new(MAX_MESSAGE_LEN),
            ended: false,
        }
    }

    /// Takes the next `chunk` bytes of input; false when none are left.
    fn receive(&mut self, chunk: usize) -> bool {
        if self.ended || self.offset >= self.input.len() {
            return false;
        }
        let end = (self.offset + chunk).min(self.input.len());
        self.pending
            .extend_from_slice(&self.input[self.offset..end]);
        self.offset = end;
        true
    }
}

/// Runs one session's streams through the journal.
pub fn journal(data: &[u8]) {
    let Some((&[chunk, high, low], streams)) = data.split_first_chunk::<3>() else {
        return;
    };
    let chunk = usize::from(chunk % 64) + 1;
    let split = usize::from(u16::from_be_bytes([high, low])).min(streams.len());
    let (client_input, server_input) = streams.split_at(split);
    let mut client = Direction::new(client_input);
    let mut server = Direction::new(server_input);
    let limits = limits();
    let budget = std::sync::Arc::clone(&limits.budget);
    let mut journal = Journal::new(limits);
    loop {
        let from_client = client.receive(chunk);
        if from_client {
            feed_client(&mut client, &mut journal);
        }
        let from_server = server.receive(chunk);
        if from_server {
            feed_server(&mut server, &mut journal);
        }
        if !from_client && !from_server {
            break;
        }
    }
    check(&mut journal);
    drop(journal);
    assert_eq!(budget.used(), 0, "a journal gives back every byte it took");
}

/// What the relay does with client bytes (`relay::scan_client`).
fn feed_client(client: &mut Direction<'_>, journal: &mut Journal) {
    let max_kept = journal.max_message_len();
    let mut stop = false;
    let scanned = client.scanner.scan(
        &client.pending,
        |tag, total| total <= max_kept && frontend::check_header(tag, total).is_ok(),
        |piece| {
            let Piece::Start {
                tag,
                bytes,
                rest,
                total,
            } = piece
            else {
                return ControlFlow::Continue(());
            };
            if frontend::check_header(tag, total).is_err() || tag == frontend::tag::TERMINATE {
                stop = true;
                return ControlFlow::Break(Stop::Before);
            }
            if rest == 0 && tag == frontend::tag::QUERY {
                check_sql(body_of(bytes));
            }
            journal.client_message(tag, (rest == 0).then_some(bytes));
            ControlFlow::Continue(())
        },
    );
    match scanned {
        Ok(scanned) if !stop => {
            client.pending.drain(..scanned.relay_upto);
        }
        _ => client.ended = true,
    }
}

/// What the relay does with server bytes (`relay::scan_server`).
fn feed_server(server: &mut Direction<'_>, journal: &mut Journal) {
    let mut stop = false;
    let scanned = server.scanner.scan(
        &server.pending,
        |tag, _| {
            server_message_needed_whole(tag)
                || tag == backend::tag::PARAMETER_STATUS
                || tag == backend::tag::NOTIFICATION_RESPONSE
        },
        |piece| {
            if let Piece::Start { tag, bytes, .. } = piece {
                if tag == backend::tag::ERROR_RESPONSE
                    && ErrorFields::parse(body_of(bytes)).is_ok_and(|f| f.is_fatal())
                {
                    stop = true;
                    return ControlFlow::Break(Stop::Before);
                }
            }
            if let ServerEvent::Ready(status) = journal.server_piece(piece) {
                assert_eq!(journal.tx_status, status, "ReadyForQuery sets the status");
            }
            ControlFlow::Continue(())
        },
    );
    match scanned {
        Ok(scanned) if !stop => {
            server.pending.drain(..scanned.relay_upto);
        }
        _ => server.ended = true,
    }
}

fn check_sql(sql_with_nul: &[u8]) {
    let sql = sql_with_nul.split(|&b| b == 0).next().unwrap_or_default();
    if commit_sql::is_commit(sql) {
        assert!(
            commit_sql::mentions_transaction_end(sql),
            "a COMMIT mentions one"
        );
    }
    if commit_sql::is_read_only(sql) {
        assert!(commit_sql::is_harmless_to_repeat(sql));
    }
    let _ = commit_sql::has_second_statement(sql);
}

/// Asks the journal everything a failover would.
fn check(journal: &mut Journal) {
    for request in journal.requests() {
        if let Some(frame) = journal.frame(request) {
            assert_eq!(
                frame[0], request.tag,
                "a kept frame is of its request's type"
            );
            let header = Frame::peek_header(frame, MAX_MESSAGE_LEN).expect("a valid header");
            assert_eq!(
                header,
                Some((request.tag, frame.len())),
                "a kept frame is whole"
            );
        }
    }
    let _ = journal.replayable();
    let _ = journal.is_idle();
    for i in 0..journal.requests().len() {
        let _ = journal.request_commits(i);
    }
    let old = journal.restart_replies();
    let _ = journal.outcome_unknown(&old);
    let snapshot = journal.session.snapshot();
    let mut messages = BytesMut::from(&snapshot.messages[..]);
    let mut ends = 0;
    while let Some(frame) =
        Frame::decode(&mut messages, usize::MAX >> 1).expect("the replay script is valid")
    {
        if matches!(frame.tag, frontend::tag::QUERY | frontend::tag::SYNC) {
            ends += 1;
        }
    }
    assert!(messages.is_empty(), "the replay script is whole frames");
    assert_eq!(
        ends, snapshot.readies,
        "one Query or Sync per ReadyForQuery"
    );
    for unit in journal.take_committed() {
        let mut frames = BytesMut::from(&unit.frames[..]);
        while Frame::decode(&mut frames, usize::MAX >> 1)
            .expect("a committed unit is valid")
            .is_some()
        {}
        assert!(frames.is_empty(), "a committed unit is whole frames");
    }
}
