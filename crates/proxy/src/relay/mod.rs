//! The hot path: relaying bytes between a client and its backend.
//!
//! One future drives both directions of a session. Each direction is a
//! [`Pipe`]: bytes are read into a buffer, the
//! [`Scanner`](understudy_protocol::scan::Scanner) finds frame
//! boundaries and shows the session the few messages it follows
//! (`ReadyForQuery`, `Terminate`, …), and the scanned bytes are written to
//! the other side unchanged, without being copied. A direction reads again
//! only once its previous bytes are written, which bounds memory per session
//! and passes backpressure through, while the other direction keeps moving.
//!
//! Towards the server the relay adds only commit stamps: in front of a
//! COMMIT, and behind an autocommit write whose Sync it holds until the
//! batch is answered ([`SyncHold`]); an autocommit write sent as a simple
//! Query goes through the extended protocol for that ([`translate`]). No
//! stamp is sent while a cancel of the session is in flight
//! ([`CancelsInFlight`]): its signal could hit the stamp.
//! Towards the client it cuts out the stamps' replies and the
//! acknowledgements of translated Queries, holds back a FATAL error, and
//! rewrites what a move changed (the pid of notifications, `25P02` of a
//! failed-over transaction).
//!
//! The loop is written as a hand-made `poll` function rather than
//! `tokio::select!` over read/write futures: it needs no split of the
//! sockets, builds no futures per message, and costs the same syscalls as a
//! bare byte copy (read, write, nothing else) — on a small machine the cost
//! of a proxy is exactly its wake-ups and syscalls per message.
//!
//! # Layout
//! - `pipe`: one direction's buffers, and the read/write pump.
//! - `commits`: which prepared statements are COMMITs.
//! - `autocommit`: the held Sync of an autocommit write and its stamp.
//! - [`translate`]: a simple Query run through the extended protocol.
//! - `idle`: the idle-in-transaction timer.
//! - this module: the poll loop and the scans of both directions.

use std::future::poll_fn;
use std::ops::ControlFlow;
use std::task::Poll;

use bytes::BytesMut;
use std::collections::HashMap;
use tokio::io::{AsyncRead, AsyncWrite};

use understudy_protocol::backend::sqlstate::{
    IN_FAILED_TRANSACTION, PROGRAM_LIMIT_EXCEEDED, SERIALIZATION_FAILURE,
};
use understudy_protocol::backend::TransactionStatus;
use understudy_protocol::backend::{self, ErrorFields, ParameterStatus, Severity};
use understudy_protocol::frontend::{self, encode_flush, encode_query};
use understudy_protocol::scan::{body_of, Piece, Stop};

use std::sync::Arc;

mod autocommit;
mod commits;
mod idle;
mod pipe;
pub mod translate;

pub use self::commits::CommitStatements;
pub use self::pipe::Pipe;
use self::pipe::{pump, take_server_frame};

use self::autocommit::inject_implicit_stamp;
pub use self::autocommit::SyncHold;
pub use self::idle::IdleTimer;

use crate::cancel::CancelsInFlight;
use crate::commit_log::CommitLog;
use crate::error::{SessionError, Side};
use crate::failover::Identity;
use crate::journal::{is_asynchronous, server_message_needed_whole, Journal, Limits};
use crate::ledger;
use crate::metrics::{self, ProxyMetrics};
use crate::rules::client::ClientAction;

/// What the relay tracks about the session while it runs.
pub struct RelayState {
    /// The session journal, which also knows the transaction status.
    pub journal: Journal,
    /// The client sent Terminate.
    pub client_terminated: bool,
    /// A FATAL error the server sent, held back from the client until the
    /// session decides whether to move or to end.
    pub server_fatal: Option<ErrorFields>,
    /// Latest value of every ParameterStatus the client was sent.
    pub parameters: HashMap<String, String>,
    /// The backend pid the client knows (from its BackendKeyData).
    pub client_pid: i32,
    /// The pid of the current backend; differs from `client_pid` after a
    /// move, and notifications from it are rewritten to `client_pid`.
    pub backend_pid: i32,
    /// Set when a failover failed the client's open transaction before the
    /// client heard of it: the server rejects the transaction's commands
    /// with `25P02`, which the client receives as `40001` with this reason,
    /// until the transaction ends.
    pub failed_over_transaction: Option<String>,
    /// The database has a commit ledger: COMMITs get a stamp.
    pub ledger: bool,
    /// Which prepared statements are COMMITs.
    pub commits: CommitStatements,
    /// Where committed transactions go until the standby has them, with
    /// the identity they ran as.
    pub commit_log: Option<(Arc<CommitLog>, Arc<Identity>)>,
    /// Stop before the next request that would start a new unit.
    pub park_when_idle: bool,
    /// Where an autocommit batch's Sync is held for its commit stamp.
    pub sync_hold: SyncHold,
    /// The held Sync is the proxy's own: it ends a client's simple Query
    /// that went through the extended protocol, and the relay sends it.
    pub held_sync_is_proxys: bool,
    /// The COMMIT of a translated `BEGIN; …; COMMIT` Query, sent behind the
    /// stamp when the proxy's Sync is released.
    pub pending_commit: Option<String>,
    /// Requests the client may have outstanding at once.
    pub max_pipelined_requests: usize,
    /// Ends the session when it sits idle inside a transaction too long.
    pub idle_in_transaction: Option<IdleTimer>,
    /// The session's rules, when the proxy has a rules file.
    pub rules: Option<Box<crate::rules::SessionRulesState>>,
    /// The open unit (by [`Journal::unit_number`]) and how many times it was
    /// moved to another backend.
    pub unit_moves: (u64, u32),
    /// The session's cancels the server has not finished with.
    pub cancels: Option<Arc<CancelsInFlight>>,
    /// A cancel is in flight (as of this poll): no stamp is sent, since
    /// its signal could still reach the backend while the stamp runs and
    /// roll back a transaction the client's statements completed in.
    pub(crate) cancel_settling: bool,
    /// A stamp waits for the cancels in flight to end: the request it goes
    /// with stays unread until then.
    pub(crate) stamp_deferred: bool,
}

impl RelayState {
    /// State of a session that just opened on backend `pid`.
    pub fn new(limits: Limits, pid: i32) -> Self {
        RelayState {
            journal: Journal::new(limits),
            client_terminated: false,
            server_fatal: None,
            parameters: HashMap::new(),
            client_pid: pid,
            backend_pid: pid,
            failed_over_transaction: None,
            ledger: false,
            commits: CommitStatements::default(),
            commit_log: None,
            park_when_idle: false,
            sync_hold: SyncHold::Off,
            held_sync_is_proxys: false,
            pending_commit: None,
            max_pipelined_requests: usize::MAX,
            idle_in_transaction: None,
            rules: None,
            unit_moves: (0, 0),
            cancels: None,
            cancel_settling: false,
            stamp_deferred: false,
        }
    }
}

/// Why the relay stopped.
#[derive(Debug)]
pub enum RelayEnd {
    /// The client sent Terminate, and it was passed on to the server.
    ClientTerminated,
    /// The server sent a FATAL error (held in [`RelayState::server_fatal`]);
    /// everything before it was relayed.
    ServerFatal,
    /// The session reached a transaction boundary while parking was asked
    /// for; the client's next request waits unread.
    Parked,
    /// The session was idle inside a transaction for
    /// `proxy.idle_in_transaction_timeout_ms`.
    IdleInTransaction,
    /// A side closed its socket or failed.
    Failed(SessionError),
}

/// Relays between `client` and `server` until one of them ends the session.
pub async fn relay<C, S>(
    client: &mut C,
    server: &mut S,
    to_server: &mut Pipe,
    to_client: &mut Pipe,
    state: &mut RelayState,
    metrics: &ProxyMetrics,
) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    poll_fn(|cx| {
        if parks_now(state, to_server) {
            return Poll::Ready(RelayEnd::Parked);
        }
        let from_server = pump(cx, server, client, to_client, Side::Server, |pipe, n| {
            metrics::add(&metrics.server_bytes_in, n as u64);
            scan_server(pipe, state, metrics)
        });
        if let Poll::Ready(end) = from_server {
            return Poll::Ready(end);
        }
        state.cancel_settling = state.ledger
            && state
                .cancels
                .as_deref()
                .is_some_and(|cancels| cancels.poll_settling(cx));
        if state.stamp_deferred && !state.cancel_settling {
            // The cancels ended: read the request the stamp goes with again.
            state.stamp_deferred = false;
            if !state.client_terminated {
                to_server.resume_reading();
            }
        }
        state.release_proxys_sync(to_server);
        let released = matches!(state.sync_hold, SyncHold::Ready | SyncHold::Pass);
        if released
            && !state.stamp_deferred
            && to_server.done_reading
            && !state.client_terminated
            && !state.held_sync_is_proxys
        {
            // The held Sync's batch is answered: read it again to send it.
            to_server.resume_reading();
        }
        let from_client = pump(cx, client, server, to_server, Side::Client, |pipe, n| {
            metrics::add(&metrics.client_bytes_in, n as u64);
            scan_client(pipe, state, metrics)
        });
        if let Poll::Ready(end) = from_client {
            return Poll::Ready(end);
        }
        if state.release_proxys_sync(to_server) {
            // Written by the next poll.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let holding_sync = state.sync_hold == SyncHold::Waiting
            || state.held_sync_is_proxys
            || state.stamp_deferred;
        let mut waiting = false;
        if let Some(rules) = state.rules.as_deref_mut() {
            if rules.poll_wait(cx) {
                // Read and scan the waiting statement again.
                to_server.resume_reading();
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            waiting = rules.is_waiting();
        }
        if !waiting
            && !holding_sync
            && to_server.done_reading
            && to_server.out.is_empty()
            && !to_server.needs_flush
        {
            if state.client_terminated {
                return Poll::Ready(RelayEnd::ClientTerminated);
            }
            return Poll::Ready(RelayEnd::Parked);
        }
        if to_client.done_reading && to_client.out.is_empty() && !to_client.needs_flush {
            return Poll::Ready(RelayEnd::ServerFatal);
        }
        // The replies just relayed may have ended the last transaction; park
        // once the client has them.
        let delivered = to_client.out.is_empty() && !to_client.needs_flush;
        if delivered && parks_now(state, to_server) {
            return Poll::Ready(RelayEnd::Parked);
        }
        if let Some(timer) = &mut state.idle_in_transaction {
            let journal = &mut state.journal;
            let idle = journal.tx_status != TransactionStatus::Idle
                && journal.outstanding() == 0
                && to_server.buf.is_empty()
                && to_server.out.is_empty();
            if timer.poll(cx, idle).is_ready() {
                return Poll::Ready(RelayEnd::IdleInTransaction);
            }
        }
        Poll::Pending
    })
    .await
}

/// True (and the client side stops reading) when parking is asked for and
/// the session is at a transaction boundary with no whole request waiting.
fn parks_now(state: &RelayState, to_server: &mut Pipe) -> bool {
    if !state.park_when_idle || !state.journal.is_idle() || to_server.done_reading {
        return false;
    }
    let pending = understudy_protocol::Frame::peek_header(&to_server.buf, usize::MAX)
        .ok()
        .flatten()
        .is_some_and(|(_, total)| to_server.buf.len() >= total);
    if pending || !to_server.out.is_empty() {
        return false;
    }
    to_server.done_reading = true;
    true
}

/// Scans bytes from the client: journals each message, counts requests,
/// notices Terminate, and puts the commit stamp in front of a COMMIT.
fn scan_client(
    pipe: &mut Pipe,
    state: &mut RelayState,
    metrics: &ProxyMetrics,
) -> Result<(), SessionError> {
    // Only when a stamp is injected are bytes copied into `assembled`.
    let mut assembled: Option<BytesMut> = None;
    loop {
        let max_kept = state.journal.max_message_len();
        // While a cancel is in flight, a stamp waits (see `cancel_settling`).
        let settling = state.cancel_settling;
        let defer_implicit_stamp =
            settling && state.sync_hold == SyncHold::Ready && state.stamps_implicit();
        let journal = &mut state.journal;
        let commits = &mut state.commits;
        let stamping = state.ledger
            && journal.commit_token.is_none()
            && journal.tx_status == TransactionStatus::InTransaction;
        let parking = state.park_when_idle;
        let hold = state.sync_hold;
        // A stamp from an earlier batch still in flight does not count: this
        // batch's Sync waits for it to end, then gets its own.
        let autocommit = state.ledger && journal.tx_status == TransactionStatus::Idle;
        let mut defer = false;
        let mut parked = false;
        let mut terminated = false;
        let mut stamp = false;
        let mut sync_event = None;
        let mut refused = None;
        let rules = &mut state.rules;
        let parameters = &state.parameters;
        let mut replacement: Option<(usize, BytesMut)> = None;
        let mut wait = false;
        let mut translate = None;
        let scanned = pipe
            .scanner
            .scan(
                &pipe.buf,
                // A message the server would refuse is not waited for whole:
                // its first piece is refused below as soon as it arrives.
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
                    // The server would end the session on these, silently
                    // for an oversized one: that looks like a lost server,
                    // which the proxy would move the session away from,
                    // again and again. Refuse them here, at once.
                    if let Err(error) = frontend::check_header(tag, total) {
                        refused = Some(error);
                        return ControlFlow::Break(Stop::Before);
                    }
                    if tag == frontend::tag::TERMINATE {
                        terminated = true;
                        return ControlFlow::Break(Stop::After);
                    }
                    if parking && journal.is_idle() {
                        parked = true;
                        return ControlFlow::Break(Stop::Before);
                    }
                    if tag == frontend::tag::SYNC && rest == 0 {
                        match hold {
                            SyncHold::Ready if defer_implicit_stamp => {
                                defer = true;
                                return ControlFlow::Break(Stop::Before);
                            }
                            SyncHold::Ready => {
                                sync_event = Some(SyncHold::Ready);
                                return ControlFlow::Break(Stop::Before);
                            }
                            SyncHold::Pass => {
                                journal.client_message(tag, Some(bytes));
                                sync_event = Some(SyncHold::Pass);
                                return ControlFlow::Break(Stop::After);
                            }
                            SyncHold::Off if autocommit && journal.batch_may_write() => {
                                sync_event = Some(SyncHold::Waiting);
                                return ControlFlow::Break(Stop::Before);
                            }
                            SyncHold::Waiting => {
                                // Still waiting for the batch's replies.
                                sync_event = Some(SyncHold::Off);
                                return ControlFlow::Break(Stop::Before);
                            }
                            _ => {}
                        }
                    }
                    if rest == 0 && commits.starts_commit(tag, body_of(bytes)) && stamping {
                        if settling {
                            defer = true;
                        } else {
                            stamp = true;
                        }
                        return ControlFlow::Break(Stop::Before);
                    }
                    if let (Some(rules), 0) = (rules.as_deref_mut(), rest) {
                        match rules.client_message(tag, bytes, metrics) {
                            Some(ClientAction::Replace(frame)) => {
                                replacement = Some((total, frame));
                                return ControlFlow::Break(Stop::Before);
                            }
                            Some(ClientAction::Wait) => {
                                wait = true;
                                return ControlFlow::Break(Stop::Before);
                            }
                            None => {}
                        }
                    }
                    if tag == frontend::tag::QUERY
                        && rest == 0
                        && autocommit
                        && hold == SyncHold::Off
                        && journal.is_idle()
                    {
                        if let Some(t) = translate::translation(body_of(bytes), parameters) {
                            translate = Some((total, t));
                            return ControlFlow::Break(Stop::Before);
                        }
                    }
                    if matches!(tag, frontend::tag::QUERY | frontend::tag::EXECUTE) {
                        metrics::inc(&metrics.queries_total);
                    }
                    journal.client_message(tag, (rest == 0).then_some(bytes));
                    ControlFlow::Continue(())
                },
            )
            .map_err(|source| SessionError::Protocol {
                side: Side::Client,
                source: frontend::type_first(source),
            })?;
        if let Some(source) = refused {
            return Err(SessionError::Protocol {
                side: Side::Client,
                source,
            });
        }
        let relayed = pipe.buf.split_to(scanned.relay_upto);
        if let Some((total, translation)) = translate {
            // An autocommit write sent as a simple Query: it goes through
            // the extended protocol, and its Sync (the proxy's) waits for
            // the replies, as for an extended batch.
            let _query = pipe.buf.split_to(total);
            let mut out = assembled.take().unwrap_or_default();
            out.extend_from_slice(&relayed);
            metrics::inc(&metrics.queries_total);
            translate::encode_statements(&translation.statements, &mut out, &mut state.journal);
            state.pending_commit = translation.commit;
            state.sync_hold = SyncHold::Waiting;
            state.held_sync_is_proxys = true;
            pipe.out = out.freeze();
            pipe.done_reading = true;
            pipe.unscanned = true;
            return Ok(());
        }
        if defer {
            // The request a stamp goes with waits, unread, until the
            // session's cancels in flight end; the relay reads it again then.
            pipe.out = joined(assembled.take(), relayed);
            state.stamp_deferred = true;
            pipe.done_reading = true;
            pipe.unscanned = true;
            return Ok(());
        }
        match sync_event {
            Some(SyncHold::Waiting) => {
                // Hold the Sync; the Flush makes the server answer the batch.
                let mut out = assembled.take().unwrap_or_default();
                out.extend_from_slice(&relayed);
                let start = out.len();
                encode_flush(&mut out);
                state.journal.injected_request(&out[start..]);
                state.sync_hold = SyncHold::Waiting;
                pipe.out = out.freeze();
                pipe.done_reading = true;
                pipe.unscanned = true;
                return Ok(());
            }
            Some(SyncHold::Ready) => {
                let out = assembled.get_or_insert_with(BytesMut::new);
                out.extend_from_slice(&relayed);
                if state.stamps_implicit() {
                    inject_implicit_stamp(out, &mut state.journal);
                }
                state.sync_hold = SyncHold::Pass;
                continue;
            }
            Some(SyncHold::Off) => {
                let mut out = assembled.take().unwrap_or_default();
                out.extend_from_slice(&relayed);
                pipe.out = out.freeze();
                pipe.done_reading = true;
                pipe.unscanned = true;
                return Ok(());
            }
            Some(SyncHold::Pass) => {
                assembled
                    .get_or_insert_with(BytesMut::new)
                    .extend_from_slice(&relayed);
                state.sync_hold = SyncHold::Off;
                continue;
            }
            _ => {}
        }
        if stamp {
            let out = assembled.get_or_insert_with(BytesMut::new);
            out.extend_from_slice(&relayed);
            let token = ledger::new_token();
            let start = out.len();
            encode_query(&ledger::stamp_sql(token), out);
            state.journal.injected_message(&out[start..], token);
            continue;
        }
        if let Some((total, frame)) = replacement {
            // A statement rewritten or refused by a rule: the server gets
            // the replacement, and the journal keeps what the server got.
            let _ = pipe.buf.split_to(total);
            let out = assembled.get_or_insert_with(BytesMut::new);
            out.extend_from_slice(&relayed);
            if frame[0] == frontend::tag::QUERY {
                metrics::inc(&metrics.queries_total);
            }
            state.journal.client_message(frame[0], Some(&frame));
            out.extend_from_slice(&frame);
            continue;
        }
        pipe.out = joined(assembled.take(), relayed);
        if state.journal.outstanding() > state.max_pipelined_requests {
            return Err(SessionError::Refused(
                ErrorFields::new(
                    Severity::Fatal,
                    PROGRAM_LIMIT_EXCEEDED,
                    format!(
                        "more than {} requests were sent without reading their results \
                         (understudy proxy.max_pipelined_requests)",
                        state.max_pipelined_requests
                    ),
                )
                .with_hint("Read the results of pipelined requests before sending more."),
            ));
        }
        if terminated {
            // Nothing after Terminate is meaningful: stop reading the client.
            state.client_terminated = true;
            pipe.buf.clear();
            pipe.done_reading = true;
        }
        if parked {
            // The next request stays in `buf`, unjournaled, until the
            // session resumes.
            pipe.done_reading = true;
            pipe.unscanned = true;
        }
        if wait {
            // The statement stays in `buf` until the wait is over; the
            // server's replies keep flowing meanwhile.
            pipe.done_reading = true;
        }
        return Ok(());
    }
}

/// What a scan passes on: the bytes it assembled (only when it inserted or
/// replaced a message) followed by the scanned bytes, which are otherwise
/// passed on without a copy.
fn joined(assembled: Option<BytesMut>, relayed: BytesMut) -> bytes::Bytes {
    match assembled {
        Some(mut out) => {
            out.extend_from_slice(&relayed);
            out.freeze()
        }
        None => relayed.freeze(),
    }
}

/// Scans bytes from the server: follows replies and the transaction
/// status, holds back a FATAL error, and rewrites the pid of the session's
/// own notifications after a move.
fn scan_server(
    pipe: &mut Pipe,
    state: &mut RelayState,
    metrics: &ProxyMetrics,
) -> Result<(), SessionError> {
    // Only when a message is replaced are bytes copied into `assembled`.
    let mut assembled: Option<BytesMut> = None;
    loop {
        let journal = &mut state.journal;
        let parameters = &mut state.parameters;
        let rewrite_pid = (state.backend_pid != state.client_pid).then_some(state.backend_pid);
        let failed_over = state.failed_over_transaction.is_some();
        let proxy_pending = journal.proxy_replies_pending();
        let rules = &mut state.rules;
        let (tracking, wants_rows) = match rules.as_deref() {
            Some(r) if r.tracking() => (true, r.results.wants_rows()),
            Some(_) => (false, false),
            None => (false, false),
        };
        let mut masked_row: Option<(usize, BytesMut)> = None;
        let mut refusal: Option<(usize, ErrorFields)> = None;
        let mut fatal = None;
        let mut replace = None;
        let mut drop = None;
        let mut copy_in = false;
        let mut notifications = Vec::new();
        let mut offset = 0;
        let scanned = pipe
            .scanner
            .scan(
                &pipe.buf,
                |tag, _| {
                    proxy_pending
                        || server_message_needed_whole(tag)
                        || tag == backend::tag::PARAMETER_STATUS
                        || tag == backend::tag::NOTIFICATION_RESPONSE
                        || (tracking && tag == backend::tag::ROW_DESCRIPTION)
                        || (wants_rows
                            && matches!(tag, backend::tag::DATA_ROW | backend::tag::COPY_DATA))
                },
                |piece| {
                    let start = offset;
                    match piece {
                        Piece::Start { bytes, .. } | Piece::More { bytes, .. } => {
                            offset += bytes.len()
                        }
                    }
                    if let Piece::Start {
                        tag, bytes, total, ..
                    } = piece
                    {
                        // A FATAL error is the server ending the connection
                        // (e.g. its postmaster died), not the stamp's reply:
                        // it is held like any other, and the stamp stays in
                        // flight for the failover to resolve.
                        if proxy_pending
                            && !is_asynchronous(tag)
                            && !is_fatal_error(tag, bytes)
                            && journal.next_reply_is_proxys(tag)
                        {
                            drop = Some(total);
                            return ControlFlow::Break(Stop::Before);
                        }
                        match tag {
                            backend::tag::ERROR_RESPONSE => {
                                metrics::inc(&metrics.server_errors_total);
                                if let Ok(fields) = ErrorFields::parse(body_of(bytes)) {
                                    if fields.is_fatal() {
                                        fatal = Some(fields);
                                        return ControlFlow::Break(Stop::Before);
                                    }
                                    if let Some((code, message)) = rules.as_deref().and_then(|r| {
                                        r.refusals.of_error(&fields.code, &fields.message)
                                    }) {
                                        let error = ErrorFields::new(
                                            Severity::Error,
                                            code,
                                            message.to_owned(),
                                        );
                                        if let (Some(rules), true) =
                                            (rules.as_deref_mut(), tracking)
                                        {
                                            rules.results.server_message(tag, bytes);
                                        }
                                        refusal = Some((total, error));
                                        return ControlFlow::Break(Stop::Before);
                                    }
                                    if failed_over && fields.code == IN_FAILED_TRANSACTION {
                                        if let (Some(rules), true) =
                                            (rules.as_deref_mut(), tracking)
                                        {
                                            rules.results.server_message(tag, bytes);
                                        }
                                        replace = Some(total);
                                        return ControlFlow::Break(Stop::Before);
                                    }
                                }
                            }
                            backend::tag::READY_FOR_QUERY if bytes.get(5) == Some(&b'I') => {
                                // The failed transaction is over.
                                state.failed_over_transaction = None;
                            }
                            backend::tag::COPY_IN_RESPONSE | backend::tag::COPY_BOTH_RESPONSE => {
                                copy_in = true;
                            }
                            backend::tag::PARAMETER_STATUS => {
                                if let Ok(p) = ParameterStatus::parse(body_of(bytes)) {
                                    parameters.insert(p.name, p.value);
                                }
                            }
                            backend::tag::NOTIFICATION_RESPONSE => {
                                if let (Some(pid), Some(b)) = (rewrite_pid, bytes.get(5..9)) {
                                    if i32::from_be_bytes([b[0], b[1], b[2], b[3]]) == pid {
                                        notifications.push(start + 5);
                                    }
                                }
                            }
                            _ => {}
                        }
                        if let (Some(rules), true) =
                            (rules.as_deref_mut(), tracking && bytes.len() == total)
                        {
                            if let Some((row, n)) = rules.results.server_message(tag, bytes) {
                                metrics::add(&metrics.masked_values_total, n);
                                masked_row = Some((total, row));
                                return ControlFlow::Break(Stop::Before);
                            }
                        }
                    }
                    journal.server_piece(piece);
                    ControlFlow::Continue(())
                },
            )
            .map_err(|source| SessionError::Protocol {
                side: Side::Server,
                source,
            })?;
        for at in notifications {
            pipe.buf[at..at + 4].copy_from_slice(&state.client_pid.to_be_bytes());
        }
        let relayed = pipe.buf.split_to(scanned.relay_upto);
        if let Some(total) = drop {
            // The reply to the proxy's own stamp, or an acknowledgement of
            // a translated Query: the client never sees it, except a stamp's
            // error, which it gets as a warning (its COMMIT will
            // then report ROLLBACK, as PostgreSQL does for a failed
            // transaction).
            let out = assembled.get_or_insert_with(BytesMut::new);
            let frame = take_server_frame(pipe, total, &relayed, out, &mut state.journal);
            if frame[0] == backend::tag::ERROR_RESPONSE {
                if let Ok(mut fields) = ErrorFields::parse(body_of(&frame)) {
                    if state.journal.stamp_is_implicit() {
                        // The Sync will roll the batch back: the client
                        // must hear it failed.
                        fields.message = format!(
                            "understudy could not record the commit, so the statement was rolled back: {}",
                            fields.message
                        );
                        fields.encode_error(out);
                    } else {
                        fields.severity = "WARNING".into();
                        fields.message =
                            format!("understudy could not record the commit: {}", fields.message);
                        fields.encode_notice(out);
                    }
                }
            }
            continue;
        }
        if let Some((total, error)) = refusal {
            // A Parse refused by a rule: the server's error for its
            // stand-in statement becomes the refusal. The journal digests
            // the server's bytes, which a replay reproduces.
            let out = assembled.get_or_insert_with(BytesMut::new);
            take_server_frame(pipe, total, &relayed, out, &mut state.journal);
            error.encode_error(out);
            continue;
        }
        if let Some((total, row)) = masked_row {
            // A row with masked values: the journal digests the server's
            // own bytes (a replay compares them with the new server's), the
            // client gets the masked row.
            let out = assembled.get_or_insert_with(BytesMut::new);
            take_server_frame(pipe, total, &relayed, out, &mut state.journal);
            out.extend_from_slice(&row);
            continue;
        }
        // Every command of the failed transaction hears why, until it ends:
        // the first 25P02 may answer a request the client does not wait for
        // (a driver's deferred Close), so it is not enough to rewrite one.
        if let (Some(total), Some(why)) = (replace, state.failed_over_transaction.clone()) {
            // The errors the client gets after its transaction was failed
            // over say so, with the code drivers retry on.
            let _ = pipe.buf.split_to(total);
            let out = assembled.get_or_insert_with(BytesMut::new);
            out.extend_from_slice(&relayed);
            let start = out.len();
            ErrorFields::new(Severity::Error, SERIALIZATION_FAILURE, why)
                .with_hint("Retry the transaction.")
                .encode_error(out);
            let replacement = out.split_off(start);
            state.journal.server_piece(Piece::Start {
                tag: backend::tag::ERROR_RESPONSE,
                total: replacement.len(),
                bytes: &replacement,
                rest: 0,
            });
            out.extend_from_slice(&replacement);
            continue;
        }
        pipe.out = joined(assembled.take(), relayed);
        if fatal.is_some() {
            state.server_fatal = fatal;
            pipe.done_reading = true;
        }
        if state.sync_hold == SyncHold::Waiting {
            if copy_in {
                // The server wants the client's data (a COPY the batch check
                // did not recognise): the Sync must go, without a stamp.
                state.sync_hold = SyncHold::Pass;
            } else if state.journal.outstanding() == 0 {
                state.sync_hold = SyncHold::Ready;
            }
        }
        if state.journal.has_committed() {
            let committed = state.journal.take_committed();
            if let Some((log, identity)) = &state.commit_log {
                let session = state.journal.session.snapshot();
                for unit in committed {
                    log.push(identity, session.clone(), unit);
                }
            }
        }
        return Ok(());
    }
}

/// True for an ErrorResponse (whole frame `bytes`) of severity FATAL or PANIC.
fn is_fatal_error(tag: u8, bytes: &[u8]) -> bool {
    tag == backend::tag::ERROR_RESPONSE
        && ErrorFields::parse(body_of(bytes)).is_ok_and(|fields| fields.is_fatal())
}
