//! Moving a session to another server when its backend is lost.
//!
//! The client is held (it sees a slow server, not an error) while the
//! session waits for a primary, opens a backend there (or takes the one a
//! session parked for a switchover opened in advance) as the same role with
//! the same startup parameters, restores the session state, replays the
//! open unit and verifies every reply the client already has. The client
//! then continues where it was. When the open transaction cannot be
//! reproduced, the client gets `40001` for that transaction and the session
//! stays usable; when the session cannot be moved at all, the client gets a
//! clear `08006` error instead of a hang.
//!
//! # Layout
//! - [`verdict`]: end or move, when a backend is lost.
//! - [`replay`]: session state restore, unit replay and verification.
//! - [`commit`]: a COMMIT in flight, resolved through the ledger.
//! - [`answers`]: the replies to what the client waits for when its unit
//!   is given up.
//! - this module: holding, reconnecting, and failing a transaction cleanly.

pub mod answers;
pub mod commit;
pub mod replay;
pub mod verdict;

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use understudy_protocol::backend::{
    sqlstate, ErrorFields, ParameterStatus, Severity, TransactionStatus,
};
use understudy_protocol::frontend::encode_query;

use self::answers::{answer_outstanding, Answers};
use self::commit::CommitOutcome;
use self::replay::{replay_unit, restore_session, restore_snapshot, ReplayError};
use crate::backend::{self, BackendConn, BackendCredential};
use crate::error::SessionError;
use crate::journal::session::Snapshot;
use crate::journal::Reply;
use crate::park::Successor;
use crate::relay::RelayState;
use crate::session::ProxyContext;
use crate::topology::{self, BackendAddr};

/// Pause between attempts to reach a new primary.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// How many times one open transaction (or request in flight) is moved.
/// A statement that crashes the server would otherwise be replayed, and
/// crash it again, for ever.
pub const MAX_MOVES_PER_UNIT: u32 = 3;

use understudy_protocol::backend::sqlstate::{
    IN_FAILED_TRANSACTION, SERIALIZATION_FAILURE, TRANSACTION_RESOLUTION_UNKNOWN,
};

/// Who the session is on a server: what a new backend is opened with.
pub struct Identity {
    /// Startup parameters sent to servers.
    pub params: Vec<(String, String)>,
    /// What proves the role to a server.
    pub credential: BackendCredential,
}

impl Identity {
    /// Opens a backend on `addr` as this role with these startup parameters,
    /// within `timeout`.
    pub async fn connect(
        &self,
        ctx: &ProxyContext,
        addr: &BackendAddr,
        timeout: Duration,
    ) -> Result<BackendConn, SessionError> {
        backend::connect(
            addr,
            &self.params,
            &self.credential,
            &ctx.server_tls,
            timeout,
            ctx.config.proxy.max_message_len(),
        )
        .await
    }
}

/// Why a session could not be moved; the client is told this and the
/// session ends.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    /// The journal cannot rebuild the session.
    #[error("the connection to the server was lost and the session cannot be moved: {0}")]
    NotReplayable(String),
    /// No primary accepted the session within the hold time.
    #[error("the connection to the server was lost and no primary became available within {0} ms")]
    NoPrimary(u128),
    /// The new server would not take the session.
    #[error("the connection to the server was lost and the session could not be rebuilt on {server}: {why}")]
    Rebuild {
        /// The new server.
        server: String,
        /// What went wrong.
        why: String,
    },
    /// The same open transaction lost its backend too many times.
    #[error("the connection to the server was lost {0} times while running the same transaction, which is not replayed again (a statement in it may be crashing the server)")]
    MovedTooOften(u32),
    /// The client went away meanwhile.
    #[error("client connection failed during the move: {0}")]
    Client(std::io::Error),
    /// The client has only the beginning of a message from the lost server,
    /// and what was in flight cannot be run again to give it the rest: its
    /// connection can only be closed.
    #[error("the connection to the server was lost in the middle of a message to the client, and what was running cannot be run again to finish it ({0}); the client connection is closed")]
    CutMessage(String),
}

impl MoveError {
    /// The FATAL error the client receives.
    pub fn to_fields(&self) -> ErrorFields {
        ErrorFields::new(
            Severity::Fatal,
            sqlstate::CONNECTION_FAILURE,
            self.to_string(),
        )
    }
}

/// Opens a backend on the current primary (or takes the one a parked session
/// opened there in advance, `successor`) and rebuilds the session there.
/// `client` receives what the move itself has to tell it (a changed
/// ParameterStatus, or the failure of a transaction that could not be
/// replayed). On success returns the new backend and the bytes to write to
/// the client before anything else the new backend sends.
///
/// `client_cut`: the client has only the beginning of the last message the
/// lost server sent. A replay gives it the rest; an error in its place
/// would be read as part of it, so when the unit is given up instead the
/// move fails with [`MoveError::CutMessage`] and nothing is written.
pub async fn move_session<C: AsyncWrite + Unpin>(
    client: &mut C,
    state: &mut RelayState,
    identity: &Identity,
    lost: &BackendAddr,
    successor: Option<Successor<'_>>,
    client_cut: bool,
    ctx: &ProxyContext,
) -> Result<(BackendConn, Bytes), MoveError> {
    let cut = |why: &str| MoveError::CutMessage(why.to_owned());
    state
        .journal
        .replayable()
        .map_err(|reason| MoveError::NotReplayable(reason.to_string()))?;
    if !state.journal.is_idle() {
        let unit = state.journal.unit_number();
        state.unit_moves = match state.unit_moves {
            (moved, count) if moved == unit => (unit, count + 1),
            _ => (unit, 1),
        };
        if state.unit_moves.1 > MAX_MOVES_PER_UNIT {
            return Err(MoveError::MovedTooOften(state.unit_moves.1));
        }
    }
    let started = Instant::now();
    let hold = ctx.hold_timeout();
    let deadline = started + hold;
    // What the proxy received from the lost backend.
    let old = state.journal.restart_replies();
    // What of it the client has: the reference every replay attempt is
    // checked against. Replies kept from the client (an autocommit write
    // waiting for its ReadyForQuery) are the client's only if the write
    // committed; otherwise the replay's replies take their place.
    let (delivered, held) = match state.held_replies.take() {
        Some(kept) => (kept.delivered, kept.bytes.freeze()),
        None => (old.clone(), Bytes::new()),
    };
    let delivered = &delivered[..];
    let outcome_unknown = state.journal.outcome_unknown(&old);
    let mut successor = successor;
    loop {
        let opened = match successor.take() {
            Some(successor) => opened_on_primary(successor, ctx).await,
            None => None,
        };
        let mut backend = match opened {
            Some(backend) => backend,
            None => connect_before(deadline, identity, lost, ctx)
                .await
                .ok_or(MoveError::NoPrimary(hold.as_millis()))?,
        };
        let server = backend.addr.to_string();
        // Commits the new primary may have lost go first, before any
        // session continues.
        crate::commit_log::reapply::run(ctx, &backend.addr).await;
        if outcome_unknown {
            tracing::warn!(
                server,
                "a statement that may have committed was in flight; its outcome is unknown"
            );
            if client_cut {
                return Err(cut("whether it committed is unknown"));
            }
            client.write_all(&held).await.map_err(MoveError::Client)?;
            return resolution_unknown(client, state, &old, backend).await;
        }
        let rebuilt = rebuild(&mut backend, state, &old, delivered, &held).await;
        match rebuilt {
            Ok((tail, parameters)) => {
                announce_changes(client, state, parameters).await?;
                state.backend_pid = backend.key.process_id;
                tracing::info!(from = %lost, to = %backend.addr, ms = started.elapsed().as_millis() as u64, "session moved");
                return Ok((backend, tail));
            }
            Err(ReplayError::Io(e)) if Instant::now() < deadline => {
                tracing::info!(server, error = %e, "the new server failed during the move; trying again");
                continue;
            }
            Err(ReplayError::ResultsLost(why)) => {
                tracing::warn!(
                    server,
                    "the COMMIT in flight had taken effect, but results the client waits for were lost: {why}"
                );
                let lost = ErrorFields::new(
                    Severity::Error,
                    TRANSACTION_RESOLUTION_UNKNOWN,
                    format!(
                        "the transaction committed, but the connection to the server was lost \
                         before all the client waits for reached understudy ({why})"
                    ),
                )
                .with_hint("Its changes are in the database: do not run it again.");
                if client_cut {
                    return Err(cut(&format!("it committed, but {why}")));
                }
                // The session state is already restored on this backend.
                client.write_all(&held).await.map_err(MoveError::Client)?;
                answer_unknown(client, state, &old, lost).await?;
                state.backend_pid = backend.key.process_id;
                return Ok((backend, Bytes::new()));
            }
            Err(ReplayError::Diverged(why)) => {
                tracing::warn!(
                    server,
                    "transaction not replayable: {why}; failing it with 40001"
                );
                if client_cut {
                    return Err(cut(&why));
                }
                let backend = fail_transaction(
                    client, state, delivered, identity, &why, deadline, lost, ctx,
                )
                .await?;
                return Ok((backend, Bytes::new()));
            }
            Err(e) => {
                return Err(MoveError::Rebuild {
                    server,
                    why: e.to_string(),
                })
            }
        }
    }
}

/// The unit may have committed on the lost server and nothing can tell:
/// the client gets `08007` (transaction resolution unknown) for what it
/// still waits for, on a fresh backend with its session state.
async fn resolution_unknown<C: AsyncWrite + Unpin>(
    client: &mut C,
    state: &mut RelayState,
    old: &[Reply],
    mut backend: BackendConn,
) -> Result<(BackendConn, Bytes), MoveError> {
    let server = backend.addr.to_string();
    let conn = &mut backend.conn;
    restore_session(&mut conn.stream, &mut conn.rbuf, &state.journal)
        .await
        .map_err(|e| MoveError::Rebuild {
            server,
            why: e.to_string(),
        })?;
    let unknown = ErrorFields::new(
        Severity::Error,
        TRANSACTION_RESOLUTION_UNKNOWN,
        "the connection to the server was lost while this statement may have been committing; whether it took effect is unknown",
    )
    .with_hint("Check whether its changes are present before running it again.");
    answer_unknown(client, state, old, unknown).await?;
    state.backend_pid = backend.key.process_id;
    Ok((backend, Bytes::new()))
}

/// Answers everything the client still waits for with `error` (`08007`)
/// and ends the unit: the session is idle, outside any transaction.
async fn answer_unknown<C: AsyncWrite + Unpin>(
    client: &mut C,
    state: &mut RelayState,
    old: &[Reply],
    error: ErrorFields,
) -> Result<(), MoveError> {
    let (out, _) = answer_outstanding(
        &state.journal,
        old,
        &Answers {
            error: error.clone(),
            later_queries: Some(error),
            closes_complete: false,
            syncs_fail: true,
            status: TransactionStatus::Idle,
        },
    );
    client.write_all(&out).await.map_err(MoveError::Client)?;
    state.journal.abandon_unit(TransactionStatus::Idle);
    Ok(())
}

/// The backend opened in advance, when it is on the published primary.
async fn opened_on_primary(successor: Successor<'_>, ctx: &ProxyContext) -> Option<BackendConn> {
    let primary = ctx.topology.borrow().primary.clone()?;
    successor.into_backend_for(&primary).await
}

/// Connects to the primary the topology names, retrying until `deadline`.
async fn connect_before(
    deadline: Instant,
    identity: &Identity,
    lost: &BackendAddr,
    ctx: &ProxyContext,
) -> Option<BackendConn> {
    let mut topology = ctx.topology.clone();
    loop {
        let remaining = deadline.checked_duration_since(Instant::now())?;
        let primary = topology::wait_for_primary(&mut topology, remaining).await?;
        let attempt = identity
            .connect(
                ctx,
                &primary,
                ctx.config.backend.connect_timeout().min(remaining),
            )
            .await;
        match attempt {
            Ok(backend) => return Some(backend),
            Err(e) => {
                tracing::debug!(server = %primary, lost = %lost, error = %e, "new primary not reachable yet");
                if let SessionError::ServerRefused(fields) = &e {
                    if !fields.code.starts_with("57P") && !fields.code.starts_with("08") {
                        return None;
                    }
                }
                let pause = RETRY_PAUSE.min(deadline.checked_duration_since(Instant::now())?);
                let _ = tokio::time::timeout(pause, topology.changed()).await;
            }
        }
    }
}

/// Rebuilds the session on `backend`: a COMMIT in flight resolved through
/// the ledger (`old`: the replies the proxy received; `held`: those of them
/// the client has not been given, which are its if the COMMIT took effect),
/// else the open unit replayed and checked against `delivered`, the replies
/// the client has.
async fn rebuild(
    backend: &mut BackendConn,
    state: &mut RelayState,
    old: &[Reply],
    delivered: &[Reply],
    held: &[u8],
) -> Result<(Bytes, std::collections::HashMap<String, String>), ReplayError> {
    let conn = &mut backend.conn;
    let mut parameters = restore_session(&mut conn.stream, &mut conn.rbuf, &state.journal).await?;
    if let Some(wait) = &state.standby_wait {
        // The session was idle, waiting for the standbys to have its last
        // transaction: nothing else is in flight.
        let mut tail = commit::held_commit_reply(&mut conn.stream, &mut conn.rbuf, wait).await?;
        tail.extend_from_slice(held);
        state.standby_wait = None;
        return Ok((tail.freeze(), parameters));
    }
    match commit::resolve(&mut conn.stream, &mut conn.rbuf, &state.journal, old).await? {
        CommitOutcome::Committed(replies) => {
            tracing::info!("the COMMIT in flight had taken effect; answering the client");
            state.journal.abandon_unit(TransactionStatus::Idle);
            let mut tail = BytesMut::from(held);
            tail.extend_from_slice(&replies);
            return Ok((tail.freeze(), parameters));
        }
        CommitOutcome::CommittedAndChained(replies, opening) => {
            tracing::info!(
                "the COMMIT AND CHAIN in flight had taken effect; opening the chained \
                 transaction again and answering the client"
            );
            send_opening(conn, &opening).await?;
            state.journal.continue_chain(opening);
            let mut tail = BytesMut::from(held);
            tail.extend_from_slice(&replies);
            return Ok((tail.freeze(), parameters));
        }
        CommitOutcome::ResultsLost(why) => return Err(ReplayError::ResultsLost(why)),
        CommitOutcome::Replay => {}
    }
    if let Some(opening) = state.journal.chain_opening() {
        // A transaction chained to one that committed: opened again with the
        // characteristics the chain's first BEGIN gave it.
        send_opening(conn, opening).await?;
    }
    let replayed = replay_unit(
        &mut conn.stream,
        &mut conn.rbuf,
        &mut state.journal,
        delivered,
    )
    .await?;
    parameters.extend(replayed.parameters);
    Ok((replayed.tail, parameters))
}

/// Opens a chained transaction on the new server with the statement that
/// opened the chain's first one, as the client sent it.
async fn send_opening(
    conn: &mut crate::conn::FramedConn<crate::stream::Stream>,
    opening: &str,
) -> Result<(), ReplayError> {
    let mut out = BytesMut::new();
    encode_query(opening, &mut out);
    let opened = Snapshot {
        messages: out.freeze(),
        readies: 1,
    };
    restore_snapshot(&mut conn.stream, &mut conn.rbuf, &opened)
        .await
        .map(|_parameters| ())
}

/// Tells the client about parameters whose value differs on the new server.
async fn announce_changes<C: AsyncWrite + Unpin>(
    client: &mut C,
    state: &mut RelayState,
    parameters: std::collections::HashMap<String, String>,
) -> Result<(), MoveError> {
    let mut out = BytesMut::new();
    for (name, value) in parameters {
        if state.parameters.get(&name) != Some(&value) {
            ParameterStatus {
                name: name.clone(),
                value: value.clone(),
            }
            .encode(&mut out);
            state.parameters.insert(name, value);
        }
    }
    if !out.is_empty() {
        client.write_all(&out).await.map_err(MoveError::Client)?;
    }
    Ok(())
}

/// The open transaction cannot be reproduced: the client gets `40001` for
/// it, and a fresh backend is put in the state the client now believes in
/// (a failed transaction block, or idle).
#[allow(clippy::too_many_arguments)]
async fn fail_transaction<C: AsyncWrite + Unpin>(
    client: &mut C,
    state: &mut RelayState,
    old: &[Reply],
    identity: &Identity,
    why: &str,
    deadline: Instant,
    lost: &BackendAddr,
    ctx: &ProxyContext,
) -> Result<BackendConn, MoveError> {
    // A failed COMMIT ends the transaction, as in PostgreSQL: the client is
    // then idle, not in an aborted block.
    let commit_outstanding =
        (0..old.len()).any(|i| !old[i].done && state.journal.request_commits(i));
    let explicit = state.journal.tx_status != TransactionStatus::Idle && !commit_outstanding;
    let status = if explicit {
        TransactionStatus::Failed
    } else {
        TransactionStatus::Idle
    };
    let mut backend = connect_before(deadline, identity, lost, ctx)
        .await
        .ok_or(MoveError::NoPrimary(ctx.hold_timeout().as_millis()))?;
    let server = backend.addr.to_string();
    let rebuild_error = |e: ReplayError| MoveError::Rebuild {
        server: server.clone(),
        why: e.to_string(),
    };
    let conn = &mut backend.conn;
    restore_session(&mut conn.stream, &mut conn.rbuf, &state.journal)
        .await
        .map_err(rebuild_error)?;
    if explicit {
        // An aborted transaction block, so that the server rejects what the
        // client sends until its ROLLBACK, as it would have.
        let mut out = BytesMut::new();
        encode_query("BEGIN; SELECT 1/0", &mut out);
        conn.stream
            .write_all(&out)
            .await
            .map_err(|e| rebuild_error(ReplayError::Io(e)))?;
        wait_ready(conn).await.map_err(rebuild_error)?;
    }

    let aborted = ErrorFields::new(
        Severity::Error,
        IN_FAILED_TRANSACTION,
        "current transaction is aborted, commands ignored until end of transaction block",
    );
    let (out, told) = answer_outstanding(
        &state.journal,
        old,
        &Answers {
            error: serialization_failure(why),
            // The transaction block stays aborted until the client ends it.
            later_queries: explicit.then_some(aborted),
            closes_complete: true,
            // A Sync of an autocommit batch would have committed it.
            syncs_fail: state.journal.tx_status == TransactionStatus::Idle,
            status,
        },
    );
    if !told && explicit {
        // The client has no request waiting: it hears of the failure from
        // the next command of its transaction.
        state.failed_over_transaction = Some(format!(
            "the transaction was interrupted by a failover and could not be replayed: {why}"
        ));
    }
    client.write_all(&out).await.map_err(MoveError::Client)?;
    state.journal.abandon_unit(status);
    state.backend_pid = backend.key.process_id;
    metrics_divergence(ctx);
    Ok(backend)
}

/// The `40001` a client gets for a transaction that could not be replayed,
/// saying `why`.
fn serialization_failure(why: &str) -> ErrorFields {
    ErrorFields::new(
        Severity::Error,
        SERIALIZATION_FAILURE,
        format!("the transaction was interrupted by a failover and could not be replayed: {why}"),
    )
    .with_hint("Retry the transaction.")
}

fn metrics_divergence(ctx: &ProxyContext) {
    crate::metrics::inc(&ctx.metrics.replay_divergences_total);
}

async fn wait_ready(
    conn: &mut crate::conn::FramedConn<crate::stream::Stream>,
) -> Result<(), ReplayError> {
    loop {
        let frame = conn
            .read_frame()
            .await
            .map_err(|e| ReplayError::Protocol(e.to_string()))?;
        if frame.tag == understudy_protocol::backend::tag::READY_FOR_QUERY {
            return Ok(());
        }
    }
}
