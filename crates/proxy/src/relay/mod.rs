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
//! COMMIT, and in front of the Sync of an autocommit write, behind a Flush
//! ([`SyncHold`]); an autocommit write sent as a simple Query goes through
//! the extended protocol for that ([`translate`]). No
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
//! - `replies`: the scan of the server's bytes.
//! - `commits`: which prepared statements are COMMITs.
//! - `autocommit`: the held Sync of an autocommit write and its stamp.
//! - `held`: an autocommit write's replies, kept until its ReadyForQuery.
//! - `standby_wait`: the acknowledgement of a commit too large for the
//!   commit log, kept until the standbys have it.
//! - [`translate`]: a simple Query run through the extended protocol.
//! - `idle`: the idle-in-transaction timer.
//! - this module: the poll loop and the scan of the client's bytes.

use std::future::poll_fn;
use std::ops::ControlFlow;
use std::task::Poll;

use bytes::BytesMut;
use std::collections::HashMap;
use tokio::io::{AsyncRead, AsyncWrite};

use understudy_protocol::backend::sqlstate::PROGRAM_LIMIT_EXCEEDED;
use understudy_protocol::backend::TransactionStatus;
use understudy_protocol::backend::{ErrorFields, Severity};
use understudy_protocol::frontend::{self, encode_flush, encode_query, encode_sync};
use understudy_protocol::scan::{body_of, Piece, Stop};

use std::sync::Arc;

mod autocommit;
mod commits;
mod held;
mod idle;
mod pipe;
mod replies;
mod standby_wait;
pub mod translate;

pub use held::HeldReplies;
pub use standby_wait::StandbyWait;

pub use self::commits::CommitStatements;
use self::pipe::pump;
pub use self::pipe::Pipe;
use self::replies::scan_server;

use self::autocommit::inject_implicit_stamp;
pub use self::autocommit::SyncHold;
pub use self::idle::IdleTimer;

use crate::cancel::CancelsInFlight;
use crate::commit_log::CommitLog;
use crate::error::{SessionError, Side};
use crate::failover::Identity;
use crate::journal::{Journal, Limits};
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
    pub pending_commit: Option<Vec<u8>>,
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
    /// A simple Query that may write came while earlier requests were
    /// unanswered (a client pipelining it behind them): it stays unread
    /// until they are answered, so that whether it runs in autocommit is
    /// known and, if it does, it goes through the extended protocol with
    /// its stamp instead of committing without one.
    pub(crate) query_waits_for_replies: bool,
    /// The replies of a stamped autocommit batch, kept from the client
    /// until its ReadyForQuery (see `held`).
    pub held_replies: Option<HeldReplies>,
    /// How long the acknowledgement of a commit too large for the commit
    /// log may wait for the standbys (`journal.large_commit_wait_ms`).
    pub large_commit_wait: Option<std::time::Duration>,
    /// Such an acknowledgement, waiting (see `standby_wait`).
    pub standby_wait: Option<StandbyWait>,
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
            query_waits_for_replies: false,
            held_replies: None,
            large_commit_wait: None,
            standby_wait: None,
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
    // Outside the relay the sockets are polled with the task's own waker.
    to_server.open_read_gate();
    to_client.open_read_gate();
    poll_fn(|cx| {
        if parks_now(state, to_server) {
            return Poll::Ready(RelayEnd::Parked);
        }
        state.poll_standby_wait(cx, to_client);
        let from_server = pump(cx, server, client, to_client, Side::Server, |pipe, n| {
            metrics::add(&metrics.server_bytes_in, n as u64);
            let scanned = scan_server(pipe, state, metrics);
            state.hold_or_release(pipe);
            state.hold_for_standbys(pipe);
            scanned
        });
        if let Poll::Ready(end) = from_server {
            return Poll::Ready(end);
        }
        if state.standby_wait.is_some() {
            // A wait that began with these replies looks at the standbys
            // now, and is woken to look again.
            state.poll_standby_wait(cx, to_client);
            if !to_client.out.is_empty() {
                cx.waker().wake_by_ref();
            }
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
        if state.query_waits_for_replies && state.journal.outstanding() == 0 {
            // The earlier requests are answered: scan the Query again.
            state.query_waits_for_replies = false;
            if !state.client_terminated {
                to_server.resume_reading();
            }
        }
        state.release_proxys_sync(to_server);
        if state.sync_hold == SyncHold::Sent && state.journal.outstanding() == 0 {
            // The stamped batch is answered, ReadyForQuery included (it may
            // have left a transaction block open): read the client again.
            state.sync_hold = SyncHold::Off;
            if !state.client_terminated && !state.stamp_deferred {
                to_server.resume_reading();
            }
        }
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
        // While a commit's acknowledgement waits for the standbys the client
        // is not read: its next transaction starts once it has that.
        let from_client = if state.standby_wait.is_some() && to_server.out.is_empty() {
            Poll::Pending
        } else {
            pump(cx, client, server, to_server, Side::Client, |pipe, n| {
                metrics::add(&metrics.client_bytes_in, n as u64);
                scan_client(pipe, state, metrics)
            })
        };
        if let Poll::Ready(end) = from_client {
            return Poll::Ready(end);
        }
        if state.release_proxys_sync(to_server) {
            // Written by the next poll.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let holding_sync = matches!(state.sync_hold, SyncHold::Waiting | SyncHold::Sent)
            || state.held_sync_is_proxys
            || state.stamp_deferred
            || state.query_waits_for_replies;
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
        let mut sync_len = 0;
        let mut refused = None;
        let rules = &mut state.rules;
        let parameters = &state.parameters;
        let mut replacement: Option<(usize, BytesMut)> = None;
        let mut wait = false;
        let mut translate = None;
        let mut wait_for_replies = false;
        let mut copy_end = None;
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
                    if hold == SyncHold::CopyIn
                        && rest == 0
                        && matches!(tag, frontend::tag::COPY_DONE | frontend::tag::COPY_FAIL)
                    {
                        journal.client_message(tag, Some(bytes));
                        copy_end = Some(tag);
                        return ControlFlow::Break(Stop::After);
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
                                sync_len = total;
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
                    {
                        let functions = journal.writing_functions();
                        if let Some(t) =
                            translate::translation(body_of(bytes), parameters, functions)
                        {
                            if journal.is_idle() {
                                translate = Some((total, t));
                                return ControlFlow::Break(Stop::Before);
                            }
                            if journal.outstanding() > 0 {
                                wait_for_replies = true;
                                return ControlFlow::Break(Stop::Before);
                            }
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
            // the extended protocol, with a Sync of the proxy's own behind
            // the stamp, as for an extended batch.
            let _query = pipe.buf.split_to(total);
            let mut out = assembled.take().unwrap_or_default();
            out.reserve(relayed.len() + translation.encoded_len());
            out.extend_from_slice(&relayed);
            metrics::inc(&metrics.queries_total);
            if translation.copy_in {
                // The rows follow: the client is read on, and its CopyDone
                // gets the stamp and the proxy's Sync (`end_copy_in`).
                for sql in &translation.statements {
                    translate::encode_statement(sql, &mut out, &mut state.journal);
                }
                state.sync_hold = SyncHold::CopyIn;
                pipe.out = out.freeze();
                pipe.unscanned = true;
                return Ok(());
            }
            translate::encode_statements(&translation.statements, &mut out, &mut state.journal);
            if state.cancel_settling {
                // No stamp while a cancel is in flight: the proxy's Sync
                // waits, held, and goes with the stamp once the cancels end.
                state.pending_commit = translation.commit;
                state.sync_hold = SyncHold::Waiting;
                state.held_sync_is_proxys = true;
                pipe.pause_after(out.freeze());
                return Ok(());
            }
            let stamped = state.stamps_implicit();
            if stamped {
                inject_implicit_stamp(&mut out, &mut state.journal);
            }
            if let Some(commit) = translation.commit {
                translate::encode_statement(&commit, &mut out, &mut state.journal);
            }
            let start = out.len();
            encode_sync(&mut out);
            // Its ReadyForQuery ends the client's Query: the Sync stands for it.
            state
                .journal
                .client_message(frontend::tag::SYNC, Some(&out[start..]));
            state.sync_hold = SyncHold::Sent;
            if stamped {
                state.hold_replies_of_batch();
            }
            pipe.pause_after(out.freeze());
            return Ok(());
        }
        if let Some(end) = copy_end {
            let mut out = assembled.take().unwrap_or_default();
            out.extend_from_slice(&relayed);
            state.end_copy_in(end == frontend::tag::COPY_DONE, &mut out);
            pipe.pause_after(out.freeze());
            return Ok(());
        }
        if wait_for_replies {
            // Read again once the earlier requests are answered (`relay`).
            state.query_waits_for_replies = true;
            pipe.pause_after(joined(assembled.take(), relayed));
            return Ok(());
        }
        if defer {
            // The request a stamp goes with waits, unread, until the
            // session's cancels in flight end; the relay reads it again then.
            state.stamp_deferred = true;
            pipe.pause_after(joined(assembled.take(), relayed));
            return Ok(());
        }
        match sync_event {
            Some(SyncHold::Waiting) => {
                // The Flush sends the batch's replies on their way before
                // anything commits. Normally the stamp and the client's Sync
                // follow in the same write, and the client is read again once
                // the batch's ReadyForQuery is in. While a cancel is in
                // flight there is no stamp: the Sync is held and goes with
                // the stamp once the cancels end.
                let mut out = assembled.take().unwrap_or_default();
                out.extend_from_slice(&relayed);
                let start = out.len();
                encode_flush(&mut out);
                state.journal.injected_request(&out[start..]);
                if state.cancel_settling {
                    state.sync_hold = SyncHold::Waiting;
                } else {
                    let stamped = state.stamps_implicit();
                    if stamped {
                        inject_implicit_stamp(&mut out, &mut state.journal);
                    }
                    let sync = pipe.buf.split_to(sync_len);
                    state
                        .journal
                        .client_message(frontend::tag::SYNC, Some(&sync));
                    out.extend_from_slice(&sync);
                    state.sync_hold = SyncHold::Sent;
                    if stamped {
                        state.hold_replies_of_batch();
                    }
                }
                pipe.pause_after(out.freeze());
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
                pipe.pause_after(out.freeze());
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
pub(super) fn joined(assembled: Option<BytesMut>, relayed: BytesMut) -> bytes::Bytes {
    match assembled {
        Some(mut out) => {
            out.extend_from_slice(&relayed);
            out.freeze()
        }
        None => relayed.freeze(),
    }
}
