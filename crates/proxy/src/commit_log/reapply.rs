//! Applying, on a new primary, the committed transactions it may not have:
//! in commit order, each as the role and with the session state it ran
//! with, skipped when its ledger token shows it is there already. A
//! re-applied transaction whose replies differ from the original's is
//! reported (log and metric), never silently dropped. A primary published as
//! lossless (a switchover: it replayed everything its predecessor wrote) has
//! every entry already; the log is cleared without a round trip.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use understudy_protocol::frame::Frame;
use understudy_protocol::scan::Piece;
use understudy_protocol::DEFAULT_MAX_MESSAGE_LEN;

use super::Entry;
use crate::backend::{self, BackendConn};
use crate::failover::replay::{read_whole, restore_snapshot, ReplayError};
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
    let mut connections: Vec<(Arc<crate::failover::Identity>, Snapshot, BackendConn)> = Vec::new();
    let mut applied = 0u64;
    for entry in entries {
        let found = connections.iter().position(|(identity, session, _)| {
            Arc::ptr_eq(identity, &entry.identity) && *session == entry.session
        });
        let index = match found {
            Some(i) => i,
            None => match open(ctx, primary, &entry).await {
                Ok(conn) => {
                    connections.push((Arc::clone(&entry.identity), entry.session.clone(), conn));
                    connections.len() - 1
                }
                Err(e) => {
                    tracing::error!(
                        token = entry.unit.token,
                        "cannot re-apply a committed transaction: {e}"
                    );
                    log.reapplied_mismatches.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
        };
        let conn = &mut connections[index].2;
        match apply(conn, &entry).await {
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
                connections.remove(index);
            }
        }
    }
    log.reapplied.fetch_add(applied, Ordering::Relaxed);
    tracing::info!(primary = %primary, applied, "commits re-applied");
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
    let mut conn = backend::connect(
        primary,
        &entry.identity.params,
        &entry.identity.credential,
        &ctx.server_tls,
        ctx.config.backend.connect_timeout(),
        ctx.config.proxy.max_message_len(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let c = &mut conn.conn;
    restore_snapshot(&mut c.stream, &mut c.rbuf, &entry.session)
        .await
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

enum Applied {
    AlreadyThere,
    Same,
    Different(String),
}

async fn apply(conn: &mut BackendConn, entry: &Entry) -> Result<Applied, ReplayError> {
    let c = &mut conn.conn;
    let token = entry.unit.token;
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

    let mut journal = Journal::new(Limits::default());
    let mut rest = &entry.unit.frames[..];
    let mut offset = 0;
    while let Ok(Some((tag, total))) = Frame::peek_header(rest, DEFAULT_MAX_MESSAGE_LEN) {
        let frame = &rest[..total.min(rest.len())];
        if entry.unit.stamp.as_ref().is_some_and(|s| s.start == offset) {
            journal.injected_message(frame, token);
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
    while !journal.is_idle() {
        let frame = read_whole(&mut c.stream, &mut c.rbuf).await?;
        journal.server_piece(Piece::Start {
            tag: frame[0],
            total: frame.len(),
            bytes: &frame,
            rest: 0,
        });
    }
    Ok(match journal.take_committed().pop() {
        Some(again) if again.digest == entry.unit.digest => Applied::Same,
        Some(_) => Applied::Different("its replies differ from the original's".into()),
        None => Applied::Different("it did not commit on the new primary".into()),
    })
}
