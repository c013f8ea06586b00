//! Applying, on a new primary, the committed transactions it may not have:
//! in commit order, each as the role and with the session state it ran
//! with, skipped when its ledger token shows it is there already (the
//! tokens of one database are looked up in one query). A
//! re-applied transaction whose replies differ from the original's is
//! reported (log and metric), never silently dropped. A primary published as
//! lossless (a switchover: it replayed everything its predecessor wrote) has
//! every entry already; the log is cleared without a round trip.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::future::join_all;
use tokio::io::AsyncWriteExt;
use understudy_protocol::backend::ErrorFields;
use understudy_protocol::frame::Frame;
use understudy_protocol::scan::Piece;
use understudy_protocol::DEFAULT_MAX_MESSAGE_LEN;

use super::Entry;
use crate::backend::BackendConn;
use crate::failover::replay::{read_whole, restore_snapshot, ReplayError};
use crate::failover::Identity;
use crate::journal::session::Snapshot;
use crate::journal::{Journal, Limits};
use crate::ledger;
use crate::session::ProxyContext;
use crate::topology::BackendAddr;

/// Records that commits are made on `primary`, the one the proxy starts
/// with: the log is not re-applied there. Called at start, before any
/// session could hold the gate.
pub fn commits_made_on(ctx: &ProxyContext, primary: &BackendAddr) {
    if let Ok(mut gate) = ctx.commit_log.reapply_gate.try_lock() {
        gate.get_or_insert_with(|| (primary.host.clone(), primary.port));
    }
}

/// Re-applies the log on `primary`, once per new primary; concurrent
/// callers wait until it is done.
pub async fn run(ctx: &ProxyContext, primary: &BackendAddr) {
    let log = &ctx.commit_log;
    let mut gate = log.reapply_gate.lock().await;
    let key = (primary.host.clone(), primary.port);
    if gate.as_ref() == Some(&key) {
        return;
    }
    let entries = log.drain();
    *gate = Some(key);
    if entries.is_empty() {
        return;
    }
    if published_lossless(ctx, primary) {
        tracing::debug!(primary = %primary, count = entries.len(), "the new primary replayed every commit of the old one; nothing to re-apply");
        return;
    }
    tracing::info!(primary = %primary, count = entries.len(), "re-applying commits the new primary may not have");
    let ledger = look_up(ctx, primary, &entries).await;
    let pending: Vec<Entry> = entries
        .into_iter()
        .filter(|entry| ledger.knows(entry.unit.token) != Some(true))
        .collect();
    let mut connections = open_all(ctx, primary, &pending).await;
    let mut applied = 0u64;
    for entry in &pending {
        let Some(slot) = slot_for(&mut connections, entry) else {
            // open_all made one for every session state; never silently dropped.
            tracing::error!(
                token = entry.unit.token,
                "cannot re-apply a committed transaction: no connection for its session"
            );
            log.reapplied_mismatches.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if std::mem::take(&mut slot.changed) {
            // The entry before changed the connection's session state (it
            // prepared a statement, say, which this one may prepare again).
            if let Ok(conn) = &mut slot.conn {
                if let Err(e) = reset(conn, &slot.session).await {
                    slot.conn = Err(format!("resetting the session state failed: {e}"));
                }
            }
        }
        if slot.conn.is_err() {
            // Opening failed: tried again for each of its entries, as it may pass.
            slot.conn = open(ctx, primary, entry).await;
        }
        let conn = match &mut slot.conn {
            Ok(conn) => conn,
            Err(why) => {
                tracing::error!(
                    token = entry.unit.token,
                    "cannot re-apply a committed transaction: {why}"
                );
                log.reapplied_mismatches.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let check = ledger.knows(entry.unit.token).is_none();
        slot.changed = entry.unit.changes_session;
        match apply(conn, entry, check).await {
            Ok(Applied::AlreadyThere) => {}
            Ok(Applied::Same) => applied += 1,
            Ok(Applied::Different(why)) => {
                applied += 1;
                log.reapplied_mismatches.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    token = entry.unit.token,
                    "a re-applied transaction gave different results: {why}"
                );
            }
            Err(e) => {
                log.reapplied_mismatches.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    token = entry.unit.token,
                    "re-applying a committed transaction failed: {e}"
                );
                // The next entry of this session gets a fresh connection.
                slot.conn = Err(format!("the connection failed: {e}"));
            }
        }
    }
    for slot in connections {
        if let Ok(conn) = slot.conn {
            conn.close().await;
        }
    }
    log.reapplied.fetch_add(applied, Ordering::Relaxed);
    tracing::info!(primary = %primary, applied, "commits re-applied");
}

/// A connection with the session state some entries started from.
struct Slot {
    identity: Arc<Identity>,
    session: Snapshot,
    conn: Result<BackendConn, String>,
    /// The last entry applied on `conn` changed its session state.
    changed: bool,
}

/// The connection for `entry`'s role and session state (one is opened for
/// each by [`open_all`]).
fn slot_for<'a>(slots: &'a mut [Slot], entry: &Entry) -> Option<&'a mut Slot> {
    slots.iter_mut().find(|slot| {
        Arc::ptr_eq(&slot.identity, &entry.identity) && slot.session == entry.unit.session
    })
}

/// Opens, all at once, one connection per session state among `entries`:
/// each takes a few ms (authentication, a new backend, the session state
/// restored), and every session waits for the whole re-apply.
async fn open_all(ctx: &ProxyContext, primary: &BackendAddr, entries: &[Entry]) -> Vec<Slot> {
    let mut firsts: Vec<&Entry> = Vec::new();
    for entry in entries {
        let seen = firsts.iter().any(|first| {
            Arc::ptr_eq(&first.identity, &entry.identity)
                && first.unit.session == entry.unit.session
        });
        if !seen {
            firsts.push(entry);
        }
    }
    let opened = join_all(firsts.iter().map(|entry| open(ctx, primary, entry))).await;
    firsts
        .into_iter()
        .zip(opened)
        .map(|(entry, conn)| Slot {
            identity: Arc::clone(&entry.identity),
            session: entry.unit.session.clone(),
            conn,
            changed: false,
        })
        .collect()
}

/// Asks the new primary's ledger which entries it has, one query per
/// database (where the ledger rows of its sessions are), each on a plain
/// connection as the first role seen there: the session state of a
/// connection that only looks up tokens does not matter, and most entries
/// of a failover are found there, so they need no connection of their own.
/// A database whose lookup fails leaves its entries to be asked one by one.
async fn look_up(ctx: &ProxyContext, primary: &BackendAddr, entries: &[Entry]) -> LedgerAnswers {
    let mut answers = LedgerAnswers::default();
    for (identity, tokens) in tokens_by_database(entries) {
        let looked_up = async {
            let mut conn = identity
                .connect(ctx, primary, ctx.config.backend.connect_timeout())
                .await
                .map_err(|e| e.to_string())?;
            let present = committed_among(&mut conn, &tokens).await;
            conn.close().await;
            present
        };
        match looked_up.await {
            Ok(present) => answers.learn(&tokens, present),
            Err(e) => tracing::debug!("looking up the ledger tokens together failed: {e}"),
        }
    }
    answers
}

/// True when the topology names `primary` as the primary and says it has
/// replayed everything its predecessor wrote.
fn published_lossless(ctx: &ProxyContext, primary: &BackendAddr) -> bool {
    let topology = ctx.topology.borrow();
    topology.lossless
        && topology
            .primary
            .as_ref()
            .is_some_and(|p| p.host == primary.host && p.port == primary.port)
}

async fn open(
    ctx: &ProxyContext,
    primary: &BackendAddr,
    entry: &Entry,
) -> Result<BackendConn, String> {
    let mut conn = entry
        .identity
        .connect(ctx, primary, ctx.config.backend.connect_timeout())
        .await
        .map_err(|e| e.to_string())?;
    let c = &mut conn.conn;
    restore_snapshot(&mut c.stream, &mut c.rbuf, &entry.unit.session)
        .await
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// Puts `conn` back into `session`: `DISCARD ALL`, then the state again.
async fn reset(conn: &mut BackendConn, session: &Snapshot) -> Result<(), ReplayError> {
    run_query(conn, "DISCARD ALL").await?;
    let c = &mut conn.conn;
    restore_snapshot(&mut c.stream, &mut c.rbuf, session).await?;
    Ok(())
}

/// Runs `sql` as a simple Query, failing on an error.
async fn run_query(conn: &mut BackendConn, sql: &str) -> Result<(), ReplayError> {
    let c = &mut conn.conn;
    let mut out = BytesMut::new();
    understudy_protocol::frontend::encode_query(sql, &mut out);
    c.stream.write_all(&out).await.map_err(ReplayError::Io)?;
    let mut failed = None;
    loop {
        let frame = read_whole(&mut c.stream, &mut c.rbuf).await?;
        match frame[0] {
            b'E' => {
                let fields = ErrorFields::parse(&frame[5..])
                    .map_err(|e| ReplayError::Protocol(e.to_string()))?;
                failed = Some(fields);
            }
            b'Z' => break,
            _ => {}
        }
    }
    failed.map_or(Ok(()), |fields| Err(ReplayError::Restore(fields)))
}

enum Applied {
    AlreadyThere,
    Same,
    Different(String),
}

/// The tokens of `entries`, grouped by the database they ran in, each group
/// with the identity of its first entry.
fn tokens_by_database(entries: &[Entry]) -> Vec<(Arc<Identity>, Vec<i64>)> {
    let mut groups: Vec<(&str, Arc<Identity>, Vec<i64>)> = Vec::new();
    for entry in entries {
        let database = database_of(&entry.identity);
        match groups.iter_mut().find(|(d, _, _)| *d == database) {
            Some((_, _, tokens)) => tokens.push(entry.unit.token),
            None => groups.push((
                database,
                Arc::clone(&entry.identity),
                vec![entry.unit.token],
            )),
        }
    }
    groups
        .into_iter()
        .map(|(_, identity, tokens)| (identity, tokens))
        .collect()
}

/// The database a session runs in: its `database` startup parameter, or
/// its user name, as PostgreSQL decides.
fn database_of(identity: &Identity) -> &str {
    let param = |name: &str| {
        identity
            .params
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    };
    param("database").or_else(|| param("user")).unwrap_or("")
}

/// What the new primary's ledger said about the tokens looked up together.
#[derive(Default)]
struct LedgerAnswers {
    /// Tokens looked up.
    asked: HashSet<i64>,
    /// Those of them that are there: their transactions committed.
    present: HashSet<i64>,
}

impl LedgerAnswers {
    fn learn(&mut self, asked: &[i64], present: HashSet<i64>) {
        self.asked.extend(asked);
        self.present.extend(present);
    }

    /// Whether `token`'s transaction is on the new primary; None when it was
    /// not looked up.
    fn knows(&self, token: i64) -> Option<bool> {
        self.asked
            .contains(&token)
            .then(|| self.present.contains(&token))
    }
}

/// Which of `tokens` the server behind `conn` has in its ledger, in one
/// query (see [`ledger::committed_among_sql`]).
async fn committed_among(conn: &mut BackendConn, tokens: &[i64]) -> Result<HashSet<i64>, String> {
    let c = &mut conn.conn;
    let mut out = BytesMut::new();
    understudy_protocol::frontend::encode_query(&ledger::committed_among_sql(tokens), &mut out);
    c.stream.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut present = HashSet::new();
    let mut failure = None;
    loop {
        let frame = read_whole(&mut c.stream, &mut c.rbuf)
            .await
            .map_err(|e| e.to_string())?;
        match frame[0] {
            b'D' => match single_bigint(&frame) {
                Some(token) => {
                    present.insert(token);
                }
                None => failure = Some("a row that is not one bigint".to_string()),
            },
            b'E' => failure = Some("the server answered with an error".to_string()),
            b'Z' => break,
            _ => {}
        }
    }
    match failure {
        None => Ok(present),
        Some(why) => Err(why),
    }
}

/// The value of a DataRow of one non-null text column holding a bigint.
fn single_bigint(frame: &[u8]) -> Option<i64> {
    let columns = i16::from_be_bytes(frame.get(5..7)?.try_into().ok()?);
    let len = i32::from_be_bytes(frame.get(7..11)?.try_into().ok()?);
    if columns != 1 || len < 0 {
        return None;
    }
    let text = frame.get(11..11 + usize::try_from(len).ok()?)?;
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Re-applies `entry` on `conn`; `check` first asks the ledger whether it is
/// there already (when it was not looked up with others).
async fn apply(conn: &mut BackendConn, entry: &Entry, check: bool) -> Result<Applied, ReplayError> {
    let c = &mut conn.conn;
    let token = entry.unit.token;
    if check {
        let mut out = BytesMut::new();
        understudy_protocol::frontend::encode_query(&ledger::committed_sql(token), &mut out);
        c.stream.write_all(&out).await.map_err(ReplayError::Io)?;
        let mut committed = false;
        loop {
            let frame = read_whole(&mut c.stream, &mut c.rbuf).await?;
            match frame[0] {
                b'D' => committed = frame.ends_with(b"t"),
                b'Z' => break,
                _ => {}
            }
        }
        if committed {
            return Ok(Applied::AlreadyThere);
        }
    }

    if entry.unit.chained {
        // Its messages run in the transaction its predecessor's COMMIT AND
        // CHAIN opened: they have no BEGIN of their own.
        run_query(conn, "BEGIN").await?;
    }
    let c = &mut conn.conn;
    let mut journal = Journal::new(Limits::default());
    let mut rest = &entry.unit.frames[..];
    let mut offset = 0;
    while let Ok(Some((tag, total))) = Frame::peek_header(rest, DEFAULT_MAX_MESSAGE_LEN) {
        let frame = &rest[..total.min(rest.len())];
        if entry.unit.stamp.as_ref().is_some_and(|s| s.start == offset) {
            journal.injected_message(frame, token);
            if entry.unit.stamp_implicit {
                // The unit's Sync commits it, as it did the original.
                journal.mark_stamp_implicit();
            }
        } else {
            journal.client_message(tag, Some(frame));
        }
        offset += frame.len();
        rest = &rest[frame.len()..];
    }
    c.stream
        .write_all(&entry.unit.frames)
        .await
        .map_err(ReplayError::Io)?;
    // A unit that ends in COMMIT AND CHAIN is over at that commit, with
    // the chained transaction open.
    while !journal.is_idle() && !journal.has_committed() {
        let frame = read_whole(&mut c.stream, &mut c.rbuf).await?;
        journal.server_piece(Piece::Start {
            tag: frame[0],
            total: frame.len(),
            bytes: &frame,
            rest: 0,
        });
    }
    if entry.unit.chains {
        // The transaction the client went on with is a unit of its own.
        run_query(conn, "ROLLBACK").await?;
    }
    Ok(match journal.take_committed().pop() {
        Some(again) if again.digest == entry.unit.digest => Applied::Same,
        Some(_) => Applied::Different("its replies differ from the original's".into()),
        None => Applied::Different("it did not commit on the new primary".into()),
    })
}
