//! The state a session has built up and a new backend must be given again:
//! settings (`SET`, `RESET`), `LISTEN`s, SQL `PREPARE`s — kept as the client
//! messages that made them, to be sent again in order — and the protocol
//! prepared statements (named Parse messages) that still exist.

use bytes::{BufMut, Bytes, BytesMut};
use rustc_hash::FxHashMap;
use understudy_protocol::frontend::tag;

use super::compaction::{self, Effect, Kept};
use super::lexer;
use super::mixed_query;
use super::pins::Pins;
use super::request::Expect;
use super::{NotReplayable, Reply};
use crate::commit_sql::AutocommitKind;
use crate::writing_functions::{self, WritingFunctions};

/// One thing to give a new backend again.
enum Entry {
    /// A named prepared statement: its name, the Parse message, and how
    /// its execution bears on an autocommit batch.
    Prepared {
        name: Vec<u8>,
        frame: BytesMut,
        kind: AutocommitKind,
        /// Its text mentions a word the journal acts on when it runs
        /// (`lexer::worth_reading`).
        worth_reading: bool,
    },
    /// Client messages that changed settings; ends with a message that gets
    /// ReadyForQuery (a Query or a Sync).
    Script { frames: BytesMut, effect: Effect },
}

/// An item of the replay, in the order the session made them.
pub enum ReplayItem<'a> {
    /// A named Parse message (needs a Sync after it).
    Parse(&'a [u8]),
    /// Messages that end with a Query or Sync.
    Script(&'a [u8]),
}

/// The session state serialised for a new backend: the messages to send,
/// and how many ReadyForQuery they produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Messages, in order (named Parses followed by a Sync).
    pub messages: Bytes,
    /// ReadyForQuery messages the server sends in answer.
    pub readies: usize,
}

/// A Sync message.
const SYNC: [u8; 5] = [tag::SYNC, 0, 0, 0, 4];

/// Session state of one session.
#[derive(Default)]
pub struct SessionState {
    /// `entries` serialised, until they change.
    cached: std::sync::Mutex<Option<Snapshot>>,
    /// Prepared statements and settings, in the order they were made (a
    /// statement may depend on an earlier `SET search_path`).
    entries: Vec<Entry>,
    /// Why the state cannot be rebuilt, if it cannot.
    pub blocked: Option<NotReplayable>,
    /// Objects only the current backend has; none while the session may move.
    pub pins: Pins,
    /// How many named prepared statements mention a word the journal acts on.
    prepared_worth_reading: usize,
    /// Where each named prepared statement is in `entries`. Every autocommit
    /// Execute of one looks it up, and drivers keep hundreds (JDBC caches up
    /// to 256): a scan of `entries` would cost the session's every request
    /// in proportion. Fx: the names are short and the client chooses them
    /// for its own session only, so hash flooding harms no one else.
    prepared_at: FxHashMap<Vec<u8>, usize>,
    /// Counts the changes of `entries`.
    version: u64,
}

impl SessionState {
    /// The state as messages for a new backend (cached until it changes).
    pub fn snapshot(&self) -> Snapshot {
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(snapshot) = cached.as_ref() {
            return snapshot.clone();
        }
        let mut out = BytesMut::new();
        let mut readies = 0;
        let mut parses_pending = false;
        for item in self.replay_items() {
            match item {
                ReplayItem::Parse(frame) => {
                    out.extend_from_slice(frame);
                    parses_pending = true;
                }
                ReplayItem::Script(frames) => {
                    if std::mem::take(&mut parses_pending) {
                        out.extend_from_slice(&SYNC);
                        readies += 1;
                    }
                    // Each settings entry ends with one Query or one Sync.
                    out.extend_from_slice(frames);
                    readies += 1;
                }
            }
        }
        if parses_pending {
            out.extend_from_slice(&SYNC);
            readies += 1;
        }
        let snapshot = Snapshot {
            messages: out.freeze(),
            readies,
        };
        *cached = Some(snapshot.clone());
        snapshot
    }

    /// A number that changes whenever the state does.
    pub fn version(&self) -> u64 {
        self.version
    }

    fn changed(&mut self) {
        self.version += 1;
        *self
            .cached
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// What to send a new backend, in order.
    pub fn replay_items(&self) -> impl Iterator<Item = ReplayItem<'_>> {
        self.entries.iter().map(|entry| match entry {
            Entry::Prepared { frame, .. } => ReplayItem::Parse(frame),
            Entry::Script { frames, .. } => ReplayItem::Script(frames),
        })
    }

    /// Number of named prepared statements.
    pub fn prepared_count(&self) -> usize {
        self.prepared_at.len()
    }

    /// Number of settings entries.
    pub fn script_len(&self) -> usize {
        self.entries.len() - self.prepared_count()
    }

    fn bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|e| match e {
                Entry::Prepared { name, frame, .. } => name.len() + frame.len(),
                Entry::Script { frames, .. } => frames.len(),
            })
            .sum()
    }

    /// The SQL text of a named prepared statement of the session.
    pub fn prepared_text(&self, wanted: &[u8]) -> Option<&[u8]> {
        let (_, frame, _) = self.prepared(wanted)?;
        let body = frame.get(5..)?;
        first_cstr(body.get(wanted.len() + 1..)?)
    }

    /// The named prepared statement `wanted`: its kind, Parse message and
    /// whether its text is worth reading.
    fn prepared(&self, wanted: &[u8]) -> Option<(AutocommitKind, &BytesMut, bool)> {
        match self.entries.get(*self.prepared_at.get(wanted)?)? {
            Entry::Prepared {
                kind,
                frame,
                worth_reading,
                ..
            } => Some((*kind, frame, *worth_reading)),
            Entry::Script { .. } => None,
        }
    }

    /// True when a named prepared statement of the session mentions a word
    /// the journal acts on (`lexer::worth_reading`).
    pub fn has_prepared_worth_reading(&self) -> bool {
        self.prepared_worth_reading > 0
    }

    /// The SQL text of a named prepared statement of the session, when it
    /// mentions a word the journal acts on (`lexer::worth_reading`).
    pub fn prepared_text_worth_reading(&self, wanted: &[u8]) -> Option<&[u8]> {
        match self.prepared(wanted)? {
            (_, _, true) => self.prepared_text(wanted),
            _ => None,
        }
    }

    /// How running a named prepared statement of the session bears on an
    /// autocommit batch (worked out once, when it was prepared).
    pub fn prepared_kind(&self, wanted: &[u8]) -> Option<AutocommitKind> {
        self.prepared(wanted).map(|(kind, _, _)| kind)
    }

    fn forget_prepared(&mut self, name: &[u8]) {
        let Some(i) = self.prepared_at.remove(name) else {
            return;
        };
        self.changed();
        if let Entry::Prepared { worth_reading, .. } = self.entries.remove(i) {
            self.prepared_worth_reading -= usize::from(worth_reading);
        }
        // Drivers close statements one at a time as their caches turn over:
        // the later entries move down by one, nothing is hashed again.
        for at in self.prepared_at.values_mut() {
            if *at > i {
                *at -= 1;
            }
        }
    }

    /// Counts the statements worth reading and finds every statement's
    /// place again, after `entries` changed.
    fn reindex_prepared(&mut self) {
        self.prepared_worth_reading = 0;
        self.prepared_at.clear();
        for (i, entry) in self.entries.iter().enumerate() {
            if let Entry::Prepared {
                name,
                worth_reading,
                ..
            } = entry
            {
                self.prepared_worth_reading += usize::from(*worth_reading);
                self.prepared_at.insert(name.clone(), i);
            }
        }
    }

    pub(super) fn block(&mut self, reason: NotReplayable) {
        if self.blocked.is_none() {
            self.blocked = Some(reason);
        }
    }

    /// A Parse message got ParseComplete.
    pub(super) fn parsed(
        &mut self,
        frame: Option<&[u8]>,
        max_bytes: usize,
        functions: Option<&WritingFunctions>,
    ) {
        let Some(frame) = frame else {
            return;
        };
        let Some(name) = first_cstr(frame.get(5..).unwrap_or_default()) else {
            return;
        };
        if name.is_empty() {
            return;
        }
        self.forget_prepared(name);
        self.changed();
        let body = frame.get(5 + name.len() + 1..).unwrap_or_default();
        let kind = first_cstr(body).map_or(AutocommitKind::MayWrite, |sql| {
            writing_functions::autocommit_kind(sql, functions)
        });
        let worth_reading = first_cstr(body).is_some_and(lexer::worth_reading);
        self.prepared_at.insert(name.to_vec(), self.entries.len());
        self.entries.push(Entry::Prepared {
            name: name.to_vec(),
            frame: BytesMut::from(frame),
            kind,
            worth_reading,
        });
        self.prepared_worth_reading += usize::from(worth_reading);
        if self.bytes() > max_bytes {
            self.block(NotReplayable::SessionStateTooLarge);
        }
    }

    /// A Close message got CloseComplete.
    pub(super) fn closed(&mut self, frame: Option<&[u8]>) {
        let Some(body) = frame.and_then(|f| f.get(5..)) else {
            return;
        };
        if let Some((&b'S', rest)) = body.split_first() {
            if let Some(name) = first_cstr(rest) {
                self.forget_prepared(name);
            }
        }
    }

    /// A unit ended with the session idle: keeps what it did to the session
    /// (of a unit that rolled back, the caller leaves only its `PREPARE`s and
    /// `DEALLOCATE`s counted as session commands).
    pub(super) fn unit_finished(
        &mut self,
        requests: &[(u8, Reply, Option<&[u8]>)],
        max_bytes: usize,
    ) {
        // The serialised state is taken with every committed write (for the
        // commit log) and must not outlive a change.
        let entries_before = self.entries.len();
        let discarded = requests.iter().any(|(_, reply, _)| reply.discarded);
        if discarded {
            self.entries.clear();
            self.reindex_prepared();
        }
        // Extended-protocol settings: each Execute with the messages since
        // the previous one (its Parse, Bind, Describe) is kept when it was a
        // session command, and what a Sync ends becomes one script.
        let mut kept = BytesMut::new();
        let mut group = BytesMut::new();
        for (k, (message_tag, reply, frame)) in requests.iter().enumerate() {
            let expect = Expect::of(*message_tag);
            // Statements the unit parsed after this request are already
            // in the state; a script kept now goes before them.
            let parsed_later = || parsed_names(&requests[k + 1..]);
            if reply.session_commands > 0 && reply.other_commands > 0 {
                // A Query keeps its settings statements when they can be
                // told apart; anything else cannot be run again alone.
                let settings = match (*message_tag, frame) {
                    (tag::QUERY, Some(frame)) if !reply.failed => {
                        mixed_query::settings_only(query_text(frame), reply.session_commands)
                    }
                    _ => None,
                };
                match settings {
                    Some(script) => self.push_script(script, &parsed_later()),
                    None => self.block(NotReplayable::MixedSessionStatement),
                }
                continue;
            }
            match (*message_tag, frame) {
                (tag::QUERY, _) if reply.session_commands == 0 || reply.failed => {}
                (tag::QUERY, Some(frame)) => {
                    self.push_script(BytesMut::from(*frame), &parsed_later())
                }
                (tag::QUERY, None) => self.block(NotReplayable::MessageTooLarge),
                (tag::SYNC, Some(frame)) => {
                    if !kept.is_empty() {
                        kept.put_slice(frame);
                        self.push_script(std::mem::take(&mut kept), &parsed_later());
                    }
                    group.clear();
                }
                // What a Describe, Close or Flush did leaves nothing a new
                // backend needs, and a Describe or Close may name a
                // statement closed before the session moves.
                (tag::DESCRIBE | tag::CLOSE | tag::FLUSH, _) => {}
                (tag::BIND, Some(frame)) => match self.unnamed_version(frame) {
                    // A named statement may be closed before the session
                    // moves: the script runs its text as the unnamed one.
                    Some((parse, bind)) => {
                        group.put_slice(&parse);
                        group.put_slice(&bind);
                    }
                    None => group.put_slice(frame),
                },
                (_, Some(frame)) if expect.is_extended() => {
                    if !is_named_parse(*message_tag, frame) {
                        // Named statements are restored from their own entry.
                        group.put_slice(frame);
                    }
                    if *message_tag == tag::EXECUTE {
                        if reply.session_commands > 0 && !reply.failed {
                            kept.put_slice(&group);
                        }
                        group.clear();
                    }
                }
                _ => {}
            }
        }
        if discarded || self.entries.len() != entries_before {
            self.changed();
        }
        if self.bytes() > max_bytes {
            self.block(NotReplayable::SessionStateTooLarge);
        }
    }
}

impl SessionState {
    /// Keeps a settings script, first dropping the earlier entries it makes
    /// void (`compaction`); a script whose whole effect was to undo what it
    /// dropped (`DEALLOCATE` of a statement the state holds) is not kept
    /// either. `parsed_later` names the statements its unit prepared after
    /// it: they are neither voided by it nor restored before it.
    fn push_script(&mut self, frames: BytesMut, parsed_later: &[Vec<u8>]) {
        let effect = script_text(&frames).map_or(Effect::Other, compaction::effect_of);
        let later: Vec<Entry> = self
            .entries
            .extract_if(.., |entry| {
                matches!(entry, Entry::Prepared { name, .. } if parsed_later.contains(name))
            })
            .collect();
        let kept: Vec<Kept<'_>> = self
            .entries
            .iter()
            .map(|entry| match entry {
                Entry::Prepared { name, .. } => Kept::Prepared(name),
                Entry::Script { effect, .. } => Kept::Script(effect),
            })
            .collect();
        let verdict = compaction::verdict(&effect, &kept);
        for &i in verdict.void.iter().rev() {
            self.entries.remove(i);
        }
        if verdict.keep_new {
            self.entries.push(Entry::Script { frames, effect });
        }
        self.entries.extend(later);
        self.reindex_prepared();
        self.changed();
    }

    /// For a Bind of a named statement the session prepared: a Parse of
    /// the same text and parameter types as the unnamed statement, and the
    /// Bind rewritten to use it. None for the unnamed statement or one the
    /// session does not have.
    fn unnamed_version(&self, bind: &[u8]) -> Option<(BytesMut, BytesMut)> {
        let body = bind.get(5..)?;
        let portal = first_cstr(body)?;
        let after_portal = body.get(portal.len() + 1..)?;
        let statement = first_cstr(after_portal)?;
        if statement.is_empty() {
            return None;
        }
        let (_, parse, _) = self.prepared(statement)?;
        let parse_rest = parse.get(5 + statement.len() + 1..)?;
        let bind_rest = after_portal.get(statement.len() + 1..)?;
        Some((
            frame_of(tag::PARSE, &[b"\0", parse_rest]),
            frame_of(tag::BIND, &[portal, b"\0\0", bind_rest]),
        ))
    }
}

/// A message of type `message_tag` whose body is `parts` in order.
fn frame_of(message_tag: u8, parts: &[&[u8]]) -> BytesMut {
    let body_len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = BytesMut::with_capacity(5 + body_len);
    out.put_u8(message_tag);
    out.put_u32((4 + body_len) as u32);
    for part in parts {
        out.put_slice(part);
    }
    out
}

fn is_named_parse(message_tag: u8, frame: &[u8]) -> bool {
    message_tag == tag::PARSE
        && first_cstr(frame.get(5..).unwrap_or_default()).is_some_and(|name| !name.is_empty())
}

/// Names of the named statements that `requests` prepared.
fn parsed_names(requests: &[(u8, Reply, Option<&[u8]>)]) -> Vec<Vec<u8>> {
    requests
        .iter()
        .filter(|(message_tag, reply, _)| {
            *message_tag == tag::PARSE && reply.bytes > 0 && !reply.failed
        })
        .filter_map(|(_, _, frame)| first_cstr(frame.and_then(|f| f.get(5..))?))
        .filter(|name| !name.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The SQL text a settings script runs: a Query's, or that of the one
/// statement an extended-protocol script parses and executes. None for
/// anything else.
fn script_text(frames: &[u8]) -> Option<&[u8]> {
    let mut text = None;
    let mut executes = 0;
    let mut rest = frames;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let frame = rest.get(..1 + len)?;
        match frame[0] {
            tag::QUERY if rest.len() == frame.len() && text.is_none() => {
                return Some(query_text(frame))
            }
            tag::PARSE if text.is_none() => {
                let body = frame.get(5..)?;
                let name = first_cstr(body)?;
                text = first_cstr(body.get(name.len() + 1..)?);
            }
            tag::PARSE => return None,
            tag::EXECUTE => executes += 1,
            _ => {}
        }
        rest = &rest[frame.len()..];
    }
    (executes == 1).then_some(text).flatten()
}

/// The SQL text of a Query message.
fn query_text(frame: &[u8]) -> &[u8] {
    first_cstr(frame.get(5..).unwrap_or_default()).unwrap_or_default()
}

fn first_cstr(bytes: &[u8]) -> Option<&[u8]> {
    let end = bytes.iter().position(|&b| b == 0)?;
    Some(&bytes[..end])
}
