//! The session journal: everything needed to rebuild a session on another
//! server and to check that the rebuilt session is the same session.
//!
//! The journal follows the conversation message by message. Every client
//! message since the session was last idle (`ReadyForQuery` with status
//! `I`) is kept — the *unit*: the open transaction, or the requests in
//! flight — with the server's reply to it, digested (byte count and an xxh3
//! hash of the reply's messages, asynchronous ones excluded, and a digest
//! that ignores the order of its rows). When a unit
//! ends, what it did to the session (`SET`, `LISTEN`, `PREPARE`, protocol
//! prepared statements, …) moves to [`session::SessionState`] and the rest is
//! dropped, so the journal of an idle session is only its session state.
//!
//! Replies are matched to requests the way the server produces them: in
//! order; an error in the extended protocol makes the server skip to the next
//! Sync; `ReadyForQuery` ends a simple Query, a FunctionCall or a Sync.
//!
//! # Layout
//! - [`request`]: which server message completes the reply to a request.
//! - `reply`: a request of the unit and the digest of its reply.
//! - `limits`: what the journal may hold, and why a session cannot move.
//! - [`budget`]: the byte budget all sessions' journals share.
//! - [`session`]: the session state a new backend must be given again.
//! - `set_config`: `SELECT set_config(…)` statements counted as settings,
//!   `SET LOCAL` as work.
//! - `mixed_query`: the settings of a Query that also did other work.
//! - `compaction`: earlier settings scripts a new one makes void.
//! - `copy_in`: a COPY's rows folded into one request; what the server
//!   ignores while a COPY takes rows, and between units.
//! - [`pins`]: objects only the backend has (temporary tables, hold cursors,
//!   advisory locks), which keep a session from moving.
//! - `lexer`: the keyword scan and small SQL lexer those two read with.
//! - `statements`: which SQL text a request of the unit runs.
//! - `committed`: a stamped transaction that committed, for the commit log.
//! - `chain`: a `COMMIT AND CHAIN` ends the unit; the chained transaction
//!   is a unit of its own.
//! - `outcome`: whether the unit may write (its Sync waits for a stamp),
//!   and whether a lost server may have committed part of it.
//! - this module: the unit, reply matching and commit bookkeeping.

pub mod budget;
mod chain;
mod committed;
mod compaction;
mod copy_in;
pub(crate) mod lexer;
mod limits;
mod mixed_query;
mod outcome;
pub mod pins;
mod reply;
pub mod request;
pub mod session;
mod set_config;
mod statements;

use copy_in::does_nothing_between_units;

use bytes::BytesMut;
use understudy_protocol::backend::{self, TransactionStatus};
use understudy_protocol::frontend;
use understudy_protocol::scan::{body_of, Piece};
use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use std::sync::Arc;

use crate::writing_functions::{self, WritingFunctions};

pub use self::budget::JournalBudget;
pub use self::committed::CommittedUnit;
pub use self::limits::{Limits, NotReplayable};
pub use self::reply::{Reply, Request};
use self::request::{CommandKind, Expect, Sender};
use self::session::SessionState;

/// True for server messages the journal must see whole (their body
/// matters); everything else may be followed piece by piece.
pub fn server_message_needed_whole(tag: u8) -> bool {
    matches!(
        tag,
        backend::tag::READY_FOR_QUERY
            | backend::tag::COMMAND_COMPLETE
            | backend::tag::ERROR_RESPONSE
    )
}

/// True for server messages that belong to no request: NoticeResponse,
/// NotificationResponse and ParameterStatus may come at any time.
pub fn is_asynchronous(tag: u8) -> bool {
    matches!(
        tag,
        backend::tag::NOTICE_RESPONSE
            | backend::tag::NOTIFICATION_RESPONSE
            | backend::tag::PARAMETER_STATUS
    )
}

/// What a server message meant for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEvent {
    /// Nothing the session acts on.
    None,
    /// ReadyForQuery: the server waits, with this transaction status.
    Ready(TransactionStatus),
}

/// The journal of one session.
pub struct Journal {
    limits: Limits,
    requests: Vec<Request>,
    /// Index of the first request that may still get replies.
    cursor: usize,
    arena: BytesMut,
    /// Request the server frame in progress belongs to (`None`: an
    /// asynchronous message such as NoticeResponse).
    frame_owner: Option<usize>,
    /// Type of the server frame in progress.
    frame_tag: u8,
    /// After an error in the extended protocol the server skips to Sync.
    skipping_to_sync: bool,
    /// The client has not sent the Sync that ends the skipping yet: its
    /// next extended messages are skipped too. Messages sent behind that
    /// Sync are not, even while the server is still skipping.
    skipping_new_requests: bool,
    /// Transaction status of the latest ReadyForQuery.
    pub tx_status: TransactionStatus,
    /// Why the unit cannot be replayed, if it cannot.
    unit_blocked: Option<NotReplayable>,
    /// Settings, listens and prepared statements of the session.
    pub session: SessionState,
    /// The ledger token stamped into the open unit's transaction, if any.
    pub commit_token: Option<i64>,
    /// The stamp went into an implicit transaction (an autocommit extended
    /// batch), which the unit's Sync commits.
    stamp_implicit: bool,
    /// The stamp recorded no token: the transaction wrote nothing, and is
    /// not kept as committed.
    stamped_nothing: bool,
    /// A transaction committed inside the open unit and another began: the
    /// unit is neither replayed nor kept in the commit log.
    committed_inside: bool,
    /// Stamped transactions that committed, not yet taken by the relay.
    committed: Vec<CommittedUnit>,
    /// Hash of the server message in progress, when it comes in pieces.
    message_hash: Xxh3,
    /// A request of the unit may run a statement whose text the journal
    /// reads when the unit ends (`lexer::worth_reading`); most units have
    /// none, and their end skips the reading.
    unit_worth_reading: bool,
    /// Units ended so far: tells one open unit from the next.
    units_ended: u64,
    /// An Execute started a `COPY … FROM STDIN` and the client has not
    /// ended its rows: the server ignores the Syncs and Flushes it sends
    /// meanwhile (see [`Journal::copy_in_started`]).
    copying_in: bool,
    /// The open unit runs in a transaction chained to one that committed
    /// (`COMMIT AND CHAIN`): a transaction block it did not open.
    chain: Option<chain::Chain>,
    /// The database's functions a `SELECT` may write through: a statement
    /// calling one counts as a write.
    writing_functions: Option<Arc<WritingFunctions>>,
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.limits.budget.release(self.arena.len());
    }
}

impl Journal {
    /// An empty journal: a session that just started.
    pub fn new(limits: Limits) -> Self {
        Journal {
            limits,
            requests: Vec::new(),
            cursor: 0,
            arena: BytesMut::new(),
            frame_owner: None,
            frame_tag: 0,
            skipping_to_sync: false,
            skipping_new_requests: false,
            tx_status: TransactionStatus::Idle,
            unit_blocked: None,
            session: SessionState::default(),
            commit_token: None,
            stamp_implicit: false,
            stamped_nothing: false,
            committed_inside: false,
            committed: Vec::new(),
            message_hash: Xxh3::new(),
            unit_worth_reading: false,
            units_ended: 0,
            copying_in: false,
            chain: None,
            writing_functions: None,
        }
    }

    /// A number that stays the same while one unit is open and changes
    /// when it ends.
    pub fn unit_number(&self) -> u64 {
        self.units_ended
    }

    /// Largest client message kept whole (larger ones are relayed without
    /// being kept, and make the unit not replayable).
    pub fn max_message_len(&self) -> usize {
        self.limits.max_unit_bytes
    }

    /// Why the session cannot be moved now, or `Ok` if it can.
    pub fn replayable(&self) -> Result<(), NotReplayable> {
        match (&self.session.blocked, &self.unit_blocked) {
            (Some(reason), _) | (None, Some(reason)) => Err(reason.clone()),
            (None, None) => self
                .session
                .pins
                .reason()
                .map_or(self.chain_replayable(), Err),
        }
    }

    /// True when the request at index `i` runs a COMMIT (a Query, or an
    /// Execute of a COMMIT statement).
    pub fn request_commits(&self, i: usize) -> bool {
        i < self.requests.len()
            && self
                .statement_text(i)
                .is_some_and(crate::commit_sql::commits)
    }

    /// True when no request is open and no transaction either: the session
    /// is idle between units.
    pub fn is_idle(&self) -> bool {
        self.requests.is_empty() && self.chain.is_none()
    }

    /// The requests of the open unit.
    pub fn requests(&self) -> &[Request] {
        &self.requests
    }

    /// The bytes of a kept request.
    pub fn frame(&self, request: &Request) -> Option<&[u8]> {
        request.frame.clone().map(|range| &self.arena[range])
    }

    /// Records a client message. `frame` is the whole message (header
    /// included), or `None` when it was too large to keep. A message that
    /// does nothing between units (see `copy_in::does_nothing_between_units`) is
    /// not part of any.
    pub fn client_message(&mut self, tag: u8, frame: Option<&[u8]>) {
        if self.is_idle() && does_nothing_between_units(tag) {
            return;
        }
        self.record(tag, frame, Sender::Client);
    }

    /// Records a message sent to the server within the open unit.
    fn record(&mut self, tag: u8, frame: Option<&[u8]>, sender: Sender) {
        let expect = Expect::of(tag);
        let frame = match frame {
            Some(bytes) if self.arena.len() + bytes.len() > self.limits.max_unit_bytes => {
                self.block_unit(NotReplayable::UnitTooLarge);
                None
            }
            Some(bytes) if !self.limits.budget.try_charge(bytes.len()) => {
                self.block_unit(NotReplayable::TotalTooLarge);
                None
            }
            Some(bytes) => {
                let start = self.arena.len();
                self.arena.extend_from_slice(bytes);
                Some(start..self.arena.len())
            }
            None => {
                self.block_unit(NotReplayable::MessageTooLarge);
                None
            }
        };
        if tag == frontend::tag::COPY_DATA && self.extend_copy_data(frame.clone()) {
            return;
        }
        let mut reply = Reply::default();
        if expect == Expect::Nothing || (self.skipping_new_requests && expect.is_extended()) {
            reply.done = true;
        }
        match tag {
            frontend::tag::SYNC | frontend::tag::FLUSH if self.copying_in => reply.done = true,
            frontend::tag::SYNC => self.skipping_new_requests = false,
            frontend::tag::COPY_DONE | frontend::tag::COPY_FAIL => self.copying_in = false,
            _ => {}
        }
        // The proxy's own statements (the stamp) are known to need no reading.
        if !self.unit_worth_reading && sender == Sender::Client {
            let bytes = frame.clone().map(|r| &self.arena[r]);
            self.unit_worth_reading = match (tag, bytes) {
                (frontend::tag::QUERY, Some(f)) => cstr_at(f, 5).is_some_and(lexer::worth_reading),
                (frontend::tag::PARSE, Some(f)) => cstr_at(f, 5)
                    .and_then(|name| cstr_at(f, 5 + name.len() + 1))
                    .is_some_and(lexer::worth_reading),
                (frontend::tag::BIND, _) => self.session.has_prepared_worth_reading(),
                _ => false,
            };
        }
        self.requests.push(Request {
            tag,
            expect,
            frame,
            reply,
            injected: false,
            translated: false,
        });
    }

    /// Takes the stamped transactions that committed since the last call.
    pub fn take_committed(&mut self) -> Vec<CommittedUnit> {
        std::mem::take(&mut self.committed)
    }

    /// True when committed transactions wait to be taken.
    pub fn has_committed(&self) -> bool {
        !self.committed.is_empty()
    }

    /// Records a message the proxy itself sends to the server within the
    /// unit (the commit stamp), carrying `token`.
    pub fn injected_message(&mut self, frame: &[u8], token: i64) {
        self.record(frame[0], Some(frame), Sender::Proxy);
        if let Some(last) = self.requests.last_mut() {
            last.injected = true;
        }
        self.commit_token = Some(token);
    }

    /// Records a message the proxy itself sends to the server within the
    /// unit that carries no token (a Flush, the parts of an implicit stamp).
    pub fn injected_request(&mut self, frame: &[u8]) {
        self.record(frame[0], Some(frame), Sender::Proxy);
        if let Some(last) = self.requests.last_mut() {
            last.injected = true;
        }
    }

    /// Records a message the proxy sends in place of a client's simple
    /// Query (see [`Request::translated`]).
    pub fn translated_request(&mut self, frame: &[u8]) {
        self.record(frame[0], Some(frame), Sender::Client);
        if let Some(last) = self.requests.last_mut() {
            last.translated = true;
        }
    }

    /// Marks the unit's stamp as one of an implicit transaction: the Sync
    /// commits it, and an error of the stamp is the client's error.
    pub fn mark_stamp_implicit(&mut self) {
        self.stamp_implicit = true;
    }

    /// The unit's stamp is in an implicit transaction.
    pub fn stamp_is_implicit(&self) -> bool {
        self.stamp_implicit
    }

    /// After an error in the extended protocol the server ignores messages
    /// until the next Sync.
    pub fn skipping_to_sync(&self) -> bool {
        self.skipping_to_sync
    }

    /// True when the next reply message, of type `tag`, is for the proxy
    /// and not the client: a reply to an injected request, or an
    /// acknowledgement the simple protocol does not send to a translated
    /// Query.
    pub fn next_reply_is_proxys(&mut self, tag: u8) -> bool {
        self.current().is_some_and(|i| {
            let request = &self.requests[i];
            request.injected
                || (request.translated
                    && matches!(
                        tag,
                        backend::tag::PARSE_COMPLETE
                            | backend::tag::BIND_COMPLETE
                            | backend::tag::NO_DATA
                    ))
        })
    }

    /// True when an injected or translated request still waits for (part
    /// of) its reply: its reply messages are then followed whole, to take
    /// out what the client must not see.
    pub fn proxy_replies_pending(&self) -> bool {
        self.requests
            .iter()
            .any(|r| (r.injected || r.translated) && !r.reply.done)
    }

    fn block_unit(&mut self, reason: NotReplayable) {
        if self.unit_blocked.is_none() {
            self.unit_blocked = Some(reason);
        }
    }

    /// Requests sent and not completely answered yet (an upper bound: a
    /// request answered early behind an unanswered one still counts).
    pub fn outstanding(&mut self) -> usize {
        self.current().map_or(0, |i| self.requests.len() - i)
    }

    /// Index of the request the next reply message belongs to.
    pub fn next_reply_owner(&mut self) -> Option<usize> {
        self.current()
    }

    /// Forgets the open unit (after its transaction was failed on purpose)
    /// and sets the transaction status the client was told.
    pub fn abandon_unit(&mut self, status: TransactionStatus) {
        self.requests.clear();
        self.clear_arena();
        self.cursor = 0;
        self.frame_owner = None;
        self.skipping_to_sync = false;
        self.skipping_new_requests = false;
        self.copying_in = false;
        self.unit_blocked = None;
        self.commit_token = None;
        self.stamp_implicit = false;
        self.stamped_nothing = false;
        self.committed_inside = false;
        self.chain = None;
        self.tx_status = status;
        self.units_ended += 1;
    }

    /// Empties the arena and gives its bytes back to the budget.
    fn clear_arena(&mut self) {
        self.limits.budget.release(self.arena.len());
        self.arena.clear();
    }

    fn current(&mut self) -> Option<usize> {
        while self.cursor < self.requests.len() && self.requests[self.cursor].reply.done {
            self.cursor += 1;
        }
        (self.cursor < self.requests.len()).then_some(self.cursor)
    }

    /// Follows one piece of a server message.
    pub fn server_piece(&mut self, piece: Piece<'_>) -> ServerEvent {
        match piece {
            Piece::More { bytes, rest } => {
                let Some(i) = self.frame_owner else {
                    return ServerEvent::None;
                };
                self.message_hash.update(bytes);
                let message_hash = self.message_hash.digest();
                let reply = &mut self.requests[i].reply;
                if rest > 0 {
                    reply.absorb_part(bytes.len(), message_hash);
                    return ServerEvent::None;
                }
                reply.message_done(self.frame_tag, bytes.len(), message_hash);
                // Messages whose body matters (ReadyForQuery, CommandComplete)
                // are always scanned whole, so the body is not needed here.
                self.complete_message(i, self.frame_tag, &[])
            }
            Piece::Start {
                tag, bytes, rest, ..
            } => {
                if is_asynchronous(tag) {
                    self.frame_owner = None;
                    return ServerEvent::None;
                }
                let Some(i) = self.current() else {
                    self.frame_owner = None;
                    self.block_unit(NotReplayable::Desynchronised);
                    return self.untracked_ready(tag, bytes, rest);
                };
                self.frame_owner = Some(i);
                self.frame_tag = tag;
                if rest > 0 {
                    self.message_hash.reset();
                    self.message_hash.update(bytes);
                    let hash_so_far = self.message_hash.digest();
                    self.requests[i].reply.absorb_part(bytes.len(), hash_so_far);
                    return ServerEvent::None;
                }
                self.requests[i]
                    .reply
                    .message_done(tag, bytes.len(), xxh3_64(bytes));
                self.complete_message(i, tag, body_of(bytes))
            }
        }
    }

    /// A ReadyForQuery that matched no request still tells the status.
    fn untracked_ready(&mut self, tag: u8, bytes: &[u8], rest: usize) -> ServerEvent {
        if tag == backend::tag::READY_FOR_QUERY && rest == 0 {
            if let Some(status) = status_of(body_of(bytes)) {
                self.tx_status = status;
                if status == TransactionStatus::Idle {
                    self.end_unit(self.requests.len(), false);
                }
                return ServerEvent::Ready(status);
            }
        }
        ServerEvent::None
    }

    /// Applies a complete server message to request `i`.
    fn complete_message(&mut self, i: usize, tag: u8, body: &[u8]) -> ServerEvent {
        let expect = self.requests[i].expect;
        if tag == backend::tag::COPY_IN_RESPONSE && expect == Expect::ExecuteEnd {
            self.copy_in_started(i);
            return ServerEvent::None;
        }
        let injected = self.requests[i].injected;
        let reply = &mut self.requests[i].reply;
        match tag {
            backend::tag::PARSE_COMPLETE if expect == Expect::ParseComplete => reply.done = true,
            backend::tag::BIND_COMPLETE if expect == Expect::BindComplete => reply.done = true,
            backend::tag::CLOSE_COMPLETE if expect == Expect::CloseComplete => reply.done = true,
            backend::tag::ROW_DESCRIPTION | backend::tag::NO_DATA
                if expect == Expect::Description =>
            {
                reply.done = true
            }
            backend::tag::COMMAND_COMPLETE => {
                let command = body.split(|&b| b == 0).next().unwrap_or_default();
                match CommandKind::of_tag(command) {
                    CommandKind::Session => {
                        reply.session_commands += 1;
                        if command.starts_with(b"PREPARE") || command.starts_with(b"DEALLOCATE") {
                            reply.prepares += 1;
                        }
                    }
                    CommandKind::Discard => reply.discarded = true,
                    CommandKind::Other => {
                        reply.other_commands += 1;
                        reply.defined_functions |= writing_functions::defines_functions(command);
                    }
                    CommandKind::Transaction => {}
                }
                reply.rolled_back = command == b"ROLLBACK";
                reply.committed |= command == b"COMMIT";
                if injected && command == crate::ledger::STAMPED_NOTHING {
                    self.stamped_nothing = true;
                }
                if expect == Expect::ExecuteEnd {
                    reply.done = true;
                }
            }
            backend::tag::EMPTY_QUERY_RESPONSE | backend::tag::PORTAL_SUSPENDED
                if expect == Expect::ExecuteEnd =>
            {
                reply.done = true
            }
            backend::tag::ERROR_RESPONSE => {
                reply.failed = true;
                // A COPY that fails stops copying.
                self.copying_in = false;
                if expect.is_extended() {
                    reply.done = true;
                    self.skipping_to_sync = true;
                    // Skipped: what was sent between the error and the next
                    // Sync, and what the client sends until that Sync.
                    self.skipping_new_requests = true;
                    for later in &mut self.requests[i + 1..] {
                        // Not a Sync the server ignored while it copied.
                        if later.tag == frontend::tag::SYNC && !later.reply.done {
                            self.skipping_new_requests = false;
                            break;
                        }
                        if later.expect.is_extended() {
                            later.reply.done = true;
                        }
                    }
                }
            }
            backend::tag::READY_FOR_QUERY => {
                reply.done = true;
                self.skipping_to_sync = false;
                if let Some(status) = status_of(body) {
                    self.tx_status = status;
                    if status == TransactionStatus::Idle {
                        self.end_unit(i + 1, false);
                    } else if self.requests[..=i].iter().any(|r| r.reply.committed)
                        && !self.end_at_chained_commit(i)
                    {
                        // A transaction committed and another one began in
                        // the same unit (`COMMIT; BEGIN` in one Query):
                        // replayed, or applied again from the commit log,
                        // the committed part would run twice.
                        self.committed_inside = true;
                        self.block_unit(NotReplayable::CommitInsideUnit);
                    }
                    return ServerEvent::Ready(status);
                }
                self.block_unit(NotReplayable::Desynchronised);
            }
            _ => {}
        }
        ServerEvent::None
    }

    /// The session became idle after request `end - 1` (or, when `chains`,
    /// that request's `COMMIT AND CHAIN` opened the next transaction): what
    /// the finished requests did to the session is kept, the rest is
    /// dropped.
    fn end_unit(&mut self, end: usize, chains: bool) {
        let end = end.min(self.requests.len());
        // The state the unit started from, for the commit log: taken before
        // what the unit did becomes session state.
        let started_from = self.commit_token.map(|_| self.session.snapshot());
        let version_before = self.session.version();
        // Prepared statements are not transactional: whatever the unit's
        // fate, the ones it created or closed stay so. They become session
        // state only now, so that a replay of an open unit recreates its own.
        for request in self.requests[..end]
            .iter()
            .filter(|r| !r.injected && !r.translated)
        {
            let answered = request.reply.bytes > 0 && !request.reply.failed;
            let frame = request.frame.clone().map(|r| &self.arena[r]);
            match request.tag {
                frontend::tag::PARSE if answered => self.session.parsed(
                    frame,
                    self.limits.max_session_bytes,
                    self.writing_functions.as_deref(),
                ),
                frontend::tag::CLOSE if answered => self.session.closed(frame),
                _ => {}
            }
        }
        let finished = &self.requests[..end];
        // A ROLLBACK TO SAVEPOINT (tagged ROLLBACK too) does not end the
        // transaction; which settings it undid is not followed, so a unit
        // that changed settings and rolled back to a savepoint cannot be
        // rebuilt faithfully.
        let to_savepoint = |i: usize| {
            finished[i].reply.rolled_back
                && self
                    .statement_text(i)
                    .is_some_and(crate::commit_sql::rolls_back_to_savepoint)
        };
        let rolled_back = (0..end)
            .rev()
            .find(|&i| {
                let reply = &finished[i].reply;
                reply.session_commands + reply.other_commands > 0
                    || (reply.rolled_back && !to_savepoint(i))
            })
            .is_some_and(|i| finished[i].reply.rolled_back && !to_savepoint(i));
        let savepoint_rolled_back = (0..end).any(to_savepoint);
        self.note_defined_functions(end);
        if self.unit_worth_reading {
            for (i, text, outcome) in self.statements_worth_reading(end, !rolled_back) {
                self.session.pins.apply(&text, outcome);
                set_config::count_as_settings(&text, &mut self.requests[i].reply);
            }
        }
        // SQL prepared statements outlive a rollback; settings and LISTENs
        // do not. A reply with both cannot be split.
        if rolled_back {
            for request in &mut self.requests[..end] {
                if request.reply.prepares > 0
                    && request.reply.prepares < request.reply.session_commands
                {
                    self.session.block(NotReplayable::MixedSessionStatement);
                }
                request.reply.session_commands = request.reply.prepares;
            }
        }
        let finished = &self.requests[..end];
        if savepoint_rolled_back
            && finished
                .iter()
                .any(|r| r.reply.session_commands > r.reply.prepares)
        {
            self.session
                .block(NotReplayable::SettingBesideSavepointRollback);
        }
        if finished
            .iter()
            .any(|r| r.reply.session_commands > 0 || r.reply.discarded)
        {
            let frames: Vec<(u8, Reply, Option<&[u8]>)> = finished
                .iter()
                .map(|r| {
                    (
                        r.tag,
                        r.reply.clone(),
                        r.frame.clone().map(|range| &self.arena[range]),
                    )
                })
                .collect();
            self.session
                .unit_finished(&frames, self.limits.max_session_bytes);
        }
        if let (Some(token), Some(started_from)) = (self.commit_token, started_from) {
            let finished = &self.requests[..end];
            let implicit_committed =
                self.stamp_implicit && !finished.iter().any(|r| r.reply.failed);
            let committed = implicit_committed || finished.iter().any(|r| r.reply.committed);
            if committed && !self.stamped_nothing && !self.committed_inside {
                self.committed.push(CommittedUnit::of(
                    token,
                    implicit_committed,
                    finished,
                    &self.arena,
                    started_from,
                    self.session.version() != version_before,
                    (self.chain.is_some(), chains),
                ));
            }
        }
        self.requests.drain(..end);
        if self
            .requests
            .iter()
            .all(|r| r.reply.done && does_nothing_between_units(r.tag))
        {
            // Sent behind the unit's end (a Flush after its Sync, the rest
            // of a COPY that failed): no part of the next unit.
            self.requests.clear();
        }
        self.units_ended += 1;
        self.chain = None;
        self.cursor = 0;
        self.frame_owner = None;
        // The stamp, if any, belonged to the transaction that just ended.
        self.commit_token = None;
        self.stamp_implicit = false;
        self.stamped_nothing = false;
        self.committed_inside = false;
        if self.requests.is_empty() {
            self.clear_arena();
            self.unit_blocked = None;
            self.unit_worth_reading = false;
        } else if let Some(base) = self
            .requests
            .iter()
            .find_map(|r| r.frame.as_ref().map(|f| f.start))
        {
            // Drop the finished requests' bytes; later ones move to the front.
            let _ = self.arena.split_to(base);
            self.limits.budget.release(base);
            for request in &mut self.requests {
                if let Some(frame) = &mut request.frame {
                    *frame = frame.start - base..frame.end - base;
                }
            }
        }
    }

    /// Starts the replies of every open request over (for a replay on a new
    /// server) and returns the replies seen so far, to compare against.
    pub fn restart_replies(&mut self) -> Vec<Reply> {
        let old = self.requests.iter().map(|r| r.reply.clone()).collect();
        for request in &mut self.requests {
            request.reply = Reply::default();
            if request.expect == Expect::Nothing {
                request.reply.done = true;
            }
        }
        self.cursor = 0;
        self.frame_owner = None;
        self.skipping_to_sync = false;
        self.skipping_new_requests = false;
        // Found again when the replayed COPY starts.
        self.copying_in = false;
        old
    }
}

/// The NUL-terminated string at `at` in `bytes`.
fn cstr_at(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let rest = bytes.get(at..)?;
    let end = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..end])
}

fn status_of(body: &[u8]) -> Option<TransactionStatus> {
    match body {
        [b'I'] => Some(TransactionStatus::Idle),
        [b'T'] => Some(TransactionStatus::InTransaction),
        [b'E'] => Some(TransactionStatus::Failed),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod state_tests;

#[cfg(test)]
mod chain_tests;
