//! One client session, from its first packet to its last byte: startup,
//! authentication, opening its backend, then the relay.
//!
//! A session is one tokio task that owns its client socket and its backend
//! connection; nothing about it is shared except its cancel key.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use understudy_auth::Secret;
use understudy_config::{AuthMethod, Config};
use understudy_protocol::backend::{
    sqlstate, Authentication, ErrorFields, NegotiateProtocolVersion, ReadyForQuery, Severity,
    TransactionStatus,
};
use understudy_protocol::frontend::{encode_terminate, AUTH_MESSAGE_LIMIT};
use understudy_protocol::startup::{StartupMessage, StartupPacket};

use crate::backend::{self, BackendConn};
use crate::cancel::{self, CancelMap, CancelRegistration, CancelTarget};
use crate::client_auth;
use crate::conn::FramedConn;
use crate::error::{SessionError, Side};
use crate::failover::{self, verdict::Verdict, Identity};
use crate::journal::Limits;
use crate::metrics::{self, ProxyMetrics};
use crate::park::{park, Opening, Parked};
use crate::relay::{self, IdleTimer, Pipe, RelayEnd, RelayState};
use crate::secrets::SecretStore;
use crate::stream::Stream;
use crate::topology::{self, BackendAddr, TopologyRx};
use crate::wake_gate::WakeGate;

/// Everything sessions share.
pub struct ProxyContext {
    /// The configuration in force.
    pub config: Arc<Config>,
    /// Where the primary is.
    pub topology: TopologyRx,
    /// Cancel keys of live sessions.
    pub cancel: Arc<CancelMap>,
    /// Role secrets.
    pub secrets: SecretStore,
    /// Counters.
    pub metrics: Arc<ProxyMetrics>,
    /// Commit ledgers per database.
    pub ledgers: Arc<crate::ledger::Ledgers>,
    /// Committed transactions the standby may not have yet.
    pub commit_log: Arc<crate::commit_log::CommitLog>,
    /// Sessions parked for a switchover.
    pub drain: crate::drain::Drain,
    /// Bytes all sessions' journals may keep together.
    pub journal_budget: Arc<crate::journal::JournalBudget>,
    /// The proxy's certificate for clients.
    pub client_tls: Arc<crate::tls::ClientTls>,
    /// TLS towards the servers.
    pub server_tls: crate::tls::ServerTls,
    /// Whether the proxy is shutting down.
    pub shutdown: tokio::sync::watch::Receiver<Shutdown>,
    /// The rules in force.
    pub rules: Arc<crate::rules::Rules>,
    /// Tables held for maintenance.
    pub holds: Arc<crate::rules::holds::Holds>,
}

/// The proxy's shutdown, as sessions see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Serving.
    Running,
    /// Sessions end at their next transaction boundary.
    Draining,
    /// The grace period is over: sessions end now.
    Now,
}

/// A session that completed startup.
struct Opened {
    backend: BackendConn,
    cancel: CancelRegistration,
    identity: Arc<Identity>,
    /// The session's database has a commit ledger.
    ledger: bool,
}

impl ProxyContext {
    /// How long a session whose backend is lost waits for a new primary.
    pub fn hold_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.config.health.hold_timeout_ms)
    }
}

/// Serves one client connection until it ends.
pub async fn serve(stream: TcpStream, peer: SocketAddr, ctx: Arc<ProxyContext>) {
    let _ = stream.set_nodelay(true);
    // Until it is authenticated, a client may only send what PostgreSQL
    // accepts then: a longer length would make the proxy reserve memory for it.
    let max_message_len = ctx.config.proxy.max_message_len().min(AUTH_MESSAGE_LIMIT);
    let mut client = FramedConn::new(Stream::Plain(stream), Side::Client, max_message_len);
    let deadline = ctx.config.proxy.startup_timeout();
    let opened = match tokio::time::timeout(deadline, open(&mut client, peer, &ctx)).await {
        Ok(Ok(Some(opened))) => opened,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return end_with_error(&mut client, e, peer, &ctx.metrics).await,
        Err(_) => {
            let e = SessionError::Refused(ErrorFields::new(
                Severity::Fatal,
                sqlstate::PROTOCOL_VIOLATION,
                format!(
                    "startup and authentication did not finish within {} ms",
                    deadline.as_millis()
                ),
            ));
            return end_with_error(&mut client, e, peer, &ctx.metrics).await;
        }
    };
    run(client, opened, peer, &ctx).await;
}

/// Relays an opened session until it ends, moving it to a new backend
/// when the current one is lost.
async fn run(mut client: FramedConn<Stream>, opened: Opened, peer: SocketAddr, ctx: &ProxyContext) {
    let Opened {
        backend,
        cancel,
        identity,
        ledger,
    } = opened;
    let parameters = backend.greeting_parameters();
    let m = &ctx.metrics;
    metrics::inc(&m.sessions_total);
    metrics::inc(&m.sessions_active);
    let mut addr = backend.addr;
    let mut server = backend.conn;
    let max_message_len = ctx.config.proxy.max_message_len();
    let mut to_server = Pipe::new(std::mem::take(&mut client.rbuf), max_message_len);
    let mut to_client = Pipe::new(std::mem::take(&mut server.rbuf), max_message_len);
    let journal = &ctx.config.journal;
    let limits = Limits {
        max_unit_bytes: usize::try_from(journal.max_transaction_bytes).unwrap_or(usize::MAX),
        max_session_bytes: usize::try_from(journal.max_session_state_bytes).unwrap_or(usize::MAX),
        budget: Arc::clone(&ctx.journal_budget),
    };
    let mut state = RelayState::new(limits, backend.key.process_id);
    state.parameters = parameters;
    state.max_pipelined_requests = ctx.config.proxy.max_pipelined_requests;
    state.idle_in_transaction = ctx
        .config
        .proxy
        .idle_in_transaction_timeout()
        .map(IdleTimer::new);
    state.ledger = ledger;
    state.cancels = Some(Arc::clone(&cancel.in_flight));
    state.commit_log = ledger.then(|| (Arc::clone(&ctx.commit_log), Arc::clone(&identity)));
    state.large_commit_wait = ctx.config.journal.large_commit_wait();
    let who = client_info(&identity, peer);
    let database = who.database.clone();
    if ledger {
        let functions = ctx.ledgers.writing_functions(&database);
        state.journal.set_writing_functions(functions);
    }
    let mut rules = ctx
        .rules
        .for_session(who, &ctx.holds, Arc::clone(&ctx.metrics));
    rules.set_column_lookup(column_lookup(ctx, database));
    state.rules = Some(rules);
    let mut topology = ctx.topology.clone();
    let mut shutdown = ctx.shutdown.clone();
    // A parked session's next backend, opened on the successor while it waits.
    let open_on_successor = |next: BackendAddr| -> Opening<'_> {
        let identity = &identity;
        Box::pin(async move {
            identity
                .connect(ctx, &next, ctx.config.backend.connect_timeout())
                .await
        })
    };
    let mut successor = None;
    loop {
        let parking = state.park_when_idle;
        let step = tokio::select! {
            biased;
            end = relay::relay(&mut client.stream, &mut server.stream, &mut to_server, &mut to_client, &mut state, m) => Step::Ended(end),
            event = WakeGate::new(topology_event(&mut topology, &addr, parking)) => Step::Topology(event),
            phase = WakeGate::new(shutdown_phase(&mut shutdown, parking)) => Step::Shutdown(phase),
        };
        let shutting_down = *shutdown.borrow() != Shutdown::Running;
        let end = match step {
            Step::Shutdown(Shutdown::Now) | Step::Ended(RelayEnd::Parked) if shutting_down => {
                let fields = ErrorFields::new(
                    Severity::Fatal,
                    sqlstate::ADMIN_SHUTDOWN,
                    "terminating connection due to administrator command".to_owned(),
                )
                .with_detail("understudy is shutting down.".to_owned());
                state.release_held_replies(&mut to_client);
                end_by_proxy(&mut client, &mut server, &mut to_client, fields).await;
                tracing::debug!(%peer, "session ended by the proxy's shutdown");
                break;
            }
            Step::Shutdown(_) => {
                state.park_when_idle = true;
                continue;
            }
            Step::Ended(RelayEnd::IdleInTransaction) => {
                let after = state
                    .idle_in_transaction
                    .as_ref()
                    .map_or(0, |t| t.after().as_millis());
                let fields = ErrorFields::new(
                    Severity::Fatal,
                    sqlstate::IDLE_IN_TRANSACTION_TIMEOUT,
                    "terminating connection due to idle-in-transaction timeout".to_owned(),
                )
                .with_detail(format!(
                    "The session was idle inside a transaction for {after} ms \
                     (understudy proxy.idle_in_transaction_timeout_ms); the transaction was \
                     rolled back."
                ));
                end_by_proxy(&mut client, &mut server, &mut to_client, fields).await;
                metrics::inc(&m.idle_in_transaction_timeouts_total);
                tracing::info!(%peer, "session ended: idle in transaction for {after} ms");
                break;
            }
            Step::Ended(RelayEnd::Parked) => {
                match park(&mut topology, &addr, &ctx.drain, open_on_successor).await {
                    Parked::Resume => {
                        state.park_when_idle = false;
                        to_server.resume_reading();
                        continue;
                    }
                    Parked::Move(opened) => {
                        successor = opened;
                        RelayEnd::Failed(SessionError::Closed(Side::Server))
                    }
                }
            }
            Step::Ended(end) => end,
            Step::Topology(TopologyEvent::Drain) => {
                state.park_when_idle = true;
                continue;
            }
            Step::Topology(TopologyEvent::Moved) => {
                RelayEnd::Failed(SessionError::Closed(Side::Server))
            }
        };
        let fatal = match end {
            RelayEnd::ClientTerminated => break,
            // Handled above; a relay never parks twice in a row.
            RelayEnd::Parked | RelayEnd::IdleInTransaction => continue,
            RelayEnd::ServerFatal => state.server_fatal.take(),
            RelayEnd::Failed(e) if e.side() == Some(Side::Server) => {
                tracing::debug!(%peer, backend = %addr, "backend lost: {e}");
                None
            }
            RelayEnd::Failed(e) => {
                let cut = to_client.mid_message();
                end_after_client_failure(&mut client, &mut server, e, cut, peer, m).await;
                break;
            }
        };
        if failover::verdict::decide(fatal.as_ref(), &addr, &ctx.config).await == Verdict::End {
            state.release_held_replies(&mut to_client);
            if let Some(fields) = fatal {
                let mut out = BytesMut::new();
                fields.encode_error(&mut out);
                let _ = to_client.drain_to(&mut client.stream).await;
                let _ = client.stream.write_all(&out).await;
                tracing::info!(%peer, backend = %addr, "backend ended by the server: {fields}");
            }
            break;
        }
        if let Err(e) = to_client.drain_to(&mut client.stream).await {
            tracing::debug!(%peer, "client gone before the move: {e}");
            break;
        }
        to_server.discard_output();
        let client_cut = to_client.mid_message();
        let moving = failover::move_session(
            &mut client.stream,
            &mut state,
            &identity,
            &addr,
            successor.take(),
            client_cut,
            ctx,
        );
        match moving.await {
            Ok((moved, tail)) => {
                metrics::inc(&m.sessions_moved_total);
                cancel.retarget(CancelTarget {
                    addr: moved.addr.clone(),
                    key: moved.key,
                });
                addr = moved.addr;
                server = moved.conn;
                // A replayed unit gives the rest of its replies from where
                // the old server stopped, which is where the tracker is; a
                // unit that was failed instead never gets them.
                if let (Some(rules), true) = (state.rules.as_deref_mut(), state.journal.is_idle()) {
                    rules.results.lose_track();
                }
                to_client.restart(tail, std::mem::take(&mut server.rbuf));
                state.settle_sync_hold(&mut to_server);
            }
            Err(e) => {
                metrics::inc(&m.move_failures_total);
                tracing::warn!(%peer, "{e}");
                if !client_cut {
                    // Inside a message it would be read as part of it: the
                    // client then only sees its connection closed, as
                    // directly when its server dies.
                    let mut out = BytesMut::new();
                    e.to_fields().encode_error(&mut out);
                    let _ = client.stream.write_all(&out).await;
                }
                break;
            }
        }
    }
    metrics::dec(&m.sessions_active);
}

/// Looks up a table's columns on the primary over a control connection
/// (for `COPY table TO` masking).
fn column_lookup(ctx: &ProxyContext, database: String) -> crate::rules::ColumnLookup {
    let config = Arc::clone(&ctx.config);
    let topology = ctx.topology.clone();
    Arc::new(move |table: understudy_rules::TableName| {
        let config = Arc::clone(&config);
        let primary = topology.borrow().primary.clone();
        let database = database.clone();
        Box::pin(async move {
            let primary = primary?;
            let client = crate::control::connect(
                &config,
                &primary.host,
                primary.port,
                &database,
                "understudy-rules",
                config.backend.connect_timeout(),
            )
            .await
            .ok()?;
            let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
            let name = match &table.schema {
                Some(schema) => format!("{}.{}", quote(schema), quote(&table.name)),
                None => quote(&table.name),
            };
            let rows = client
                .query(
                    "SELECT attname::text FROM pg_catalog.pg_attribute \
                     WHERE attrelid = pg_catalog.to_regclass($1) AND attnum > 0 AND NOT attisdropped \
                     ORDER BY attnum",
                    &[&name],
                )
                .await
                .ok()?;
            Some(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })
    })
}

/// Who the client is, for the rules' client filters.
fn client_info(identity: &Identity, peer: SocketAddr) -> understudy_rules::ClientInfo {
    let param = |name: &str| {
        identity
            .params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let user = param("user").unwrap_or_default();
    understudy_rules::ClientInfo {
        database: param("database")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| user.clone()),
        user,
        application_name: param("application_name"),
        address: peer.ip(),
    }
}

/// What the session's relay loop does next.
enum Step {
    Ended(RelayEnd),
    Topology(TopologyEvent),
    Shutdown(Shutdown),
}

/// Resolves when the proxy's shutdown concerns the session: `Draining`
/// once (unless it already parks), `Now` when the grace period is over.
async fn shutdown_phase(
    shutdown: &mut tokio::sync::watch::Receiver<Shutdown>,
    parking: bool,
) -> Shutdown {
    loop {
        match *shutdown.borrow_and_update() {
            Shutdown::Now => return Shutdown::Now,
            Shutdown::Draining if !parking => return Shutdown::Draining,
            _ => {}
        }
        if shutdown.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// Ends a session on the proxy's own decision: the client gets what was
/// already on its way, then `fields` (a FATAL error) unless that ended
/// inside a message, and the backend a Terminate (which rolls back an open
/// transaction).
async fn end_by_proxy(
    client: &mut FramedConn<Stream>,
    server: &mut FramedConn<Stream>,
    to_client: &mut Pipe,
    fields: ErrorFields,
) {
    let mut out = BytesMut::new();
    encode_terminate(&mut out);
    let _ = server.stream.write_all(&out).await;
    if to_client.drain_to(&mut client.stream).await.is_err() {
        return;
    }
    if !to_client.mid_message() {
        out.clear();
        fields.encode_error(&mut out);
        let _ = client.stream.write_all(&out).await;
    }
    let _ = client.stream.shutdown().await;
}

/// A topology change that concerns a session.
enum TopologyEvent {
    /// Another server is primary now (the session's was demoted or replaced).
    Moved,
    /// A switchover started: stop at the next transaction boundary.
    Drain,
}

/// Resolves when the topology concerns the session.
async fn topology_event(
    topology: &mut TopologyRx,
    current: &BackendAddr,
    parking: bool,
) -> TopologyEvent {
    loop {
        {
            let now = topology.borrow_and_update();
            if let Some(primary) = &now.primary {
                if primary.host != current.host || primary.port != current.port {
                    return TopologyEvent::Moved;
                }
            }
            if now.draining && !parking {
                return TopologyEvent::Drain;
            }
        }
        if topology.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// The client failed or left: tell it why if it is a protocol error (and
/// `client_cut` is false: what it was sent does not end inside a message),
/// and end the backend politely.
async fn end_after_client_failure(
    client: &mut FramedConn<Stream>,
    server: &mut FramedConn<Stream>,
    e: SessionError,
    client_cut: bool,
    peer: SocketAddr,
    m: &ProxyMetrics,
) {
    let fields = match &e {
        SessionError::Protocol {
            side: Side::Client, ..
        } => {
            metrics::inc(&m.client_protocol_errors_total);
            Some(ErrorFields::new(
                Severity::Fatal,
                sqlstate::PROTOCOL_VIOLATION,
                e.to_string(),
            ))
        }
        SessionError::Refused(fields) => Some(fields.clone()),
        _ => None,
    };
    let mut out = BytesMut::new();
    encode_terminate(&mut out);
    let _ = server.stream.write_all(&out).await;
    if let Some(fields) = fields.filter(|_| !client_cut) {
        let mut out = BytesMut::new();
        fields.encode_error(&mut out);
        let _ = client.stream.write_all(&out).await;
        linger_close(&mut client.stream).await;
    }
    if e.is_quiet() {
        tracing::debug!(%peer, "session ended: {e}");
    } else {
        tracing::info!(%peer, "session ended: {e}");
    }
}

/// How long a refused client's remaining input is read and dropped.
const LINGER: std::time::Duration = std::time::Duration::from_millis(500);

/// Closes a client connection after an error so that the client reads the
/// error: closing a socket with unread input makes the kernel reset the
/// connection, and a client still sending (the rest of a refused message)
/// would lose the error with it. The write side is shut first, then input
/// is drained until the client closes or [`LINGER`] passes.
async fn linger_close(stream: &mut Stream) {
    use tokio::io::AsyncReadExt;
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 16 * 1024];
    let drain = async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Runs the startup phase. `Ok(None)` means the connection was a cancel
/// request and has been served.
async fn open(
    client: &mut FramedConn<Stream>,
    peer: SocketAddr,
    ctx: &ProxyContext,
) -> Result<Option<Opened>, SessionError> {
    let startup = loop {
        match client.read_startup().await? {
            StartupPacket::SslRequest if !client.stream.is_tls() => {
                accept_tls(client, ctx).await?;
            }
            StartupPacket::SslRequest | StartupPacket::GssEncRequest if client.stream.is_tls() => {
                return Err(refused(
                    sqlstate::PROTOCOL_VIOLATION,
                    "encryption requested on an already encrypted connection".to_owned(),
                ));
            }
            StartupPacket::GssEncRequest => {
                client.out().extend_from_slice(b"N");
                client.flush().await?;
            }
            StartupPacket::Cancel(request) => {
                // Counted once the session knows of it (`lookup`), so that a
                // cancel seen in the metrics is also seen by its session.
                let found = ctx.cancel.lookup(&request);
                metrics::inc(&ctx.metrics.cancel_requests_total);
                if let Some((target, _in_flight)) = found {
                    forward_cancel(target, ctx).await;
                } else {
                    tracing::debug!(%peer, "cancel request with an unknown key ignored");
                }
                return Ok(None);
            }
            StartupPacket::Startup(_) if ctx.client_tls.required() && !client.stream.is_tls() => {
                return Err(refused(
                    sqlstate::INVALID_AUTHORIZATION,
                    "understudy accepts only encrypted connections (tls.require_tls = true); \
                     connect with sslmode=require"
                        .to_owned(),
                ));
            }
            StartupPacket::Startup(startup) => break startup,
            _ => {
                return Err(refused(
                    sqlstate::PROTOCOL_VIOLATION,
                    "unsupported startup request".to_owned(),
                ))
            }
        }
    };
    let params = negotiate(client, &startup)?;
    let user = startup
        .param("user")
        .filter(|u| !u.is_empty())
        .ok_or_else(|| {
            refused(
                sqlstate::INVALID_AUTHORIZATION,
                "no PostgreSQL user name specified in startup packet".to_owned(),
            )
        })?
        .to_owned();
    let database = startup
        .param("database")
        .filter(|d| !d.is_empty())
        .unwrap_or(&user)
        .to_owned();

    let method = ctx.config.hba_method(&user, &database, peer.ip());
    let secret: Option<Secret> = ctx.secrets.lookup(&user).await?;
    let credential = match client_auth::authenticate(client, method, &user, secret).await {
        Ok(credential) => credential,
        Err(e) => {
            metrics::inc(&ctx.metrics.auth_failures_total);
            return Err(e);
        }
    };
    if method == AuthMethod::Trust {
        tracing::debug!(%peer, user, "trusted without password");
    }

    let mut topology = ctx.topology.clone();
    let connect_timeout = ctx.config.backend.connect_timeout();
    let primary = topology::wait_for_primary(&mut topology, connect_timeout)
        .await
        .ok_or_else(|| {
            refused(
                sqlstate::CANNOT_CONNECT_NOW,
                "no primary server is available".to_owned(),
            )
        })?;
    let backend = match backend::connect(
        &primary,
        &params,
        &credential,
        &ctx.server_tls,
        connect_timeout,
        ctx.config.proxy.max_message_len(),
    )
    .await
    {
        Ok(backend) => backend,
        Err(e) => {
            if !matches!(e, SessionError::ServerRefused(_)) {
                metrics::inc(&ctx.metrics.backend_connect_errors_total);
            }
            return Err(e);
        }
    };
    let registration = ctx.cancel.register(CancelTarget {
        addr: backend.addr.clone(),
        key: backend.key,
    });

    // Commits the primary may have lost (it was just promoted) are applied
    // again before any session runs there, a new one as a moved one: a
    // client must not miss a transaction another was told had committed.
    // Once they are, this returns at once.
    crate::commit_log::reapply::run(ctx, &backend.addr).await;
    // Before the client may send anything: its first transaction must
    // already find the ledger.
    let ledger = ctx.config.journal.ledger && ctx.ledgers.ensure(&database).await;
    Authentication::Ok.encode(client.out());
    client.out().extend_from_slice(&backend.greeting);
    registration.client_key.encode(client.out());
    ReadyForQuery {
        status: TransactionStatus::Idle,
    }
    .encode(client.out());
    client.flush().await?;
    tracing::debug!(%peer, user, database, backend = %backend.addr, pid = backend.key.process_id, "session opened");
    Ok(Some(Opened {
        backend,
        cancel: registration,
        identity: Arc::new(Identity { params, credential }),
        ledger,
    }))
}

/// Answers an SSLRequest: `N` when the proxy has no certificate, else `S`
/// and the TLS handshake, after which startup continues encrypted.
async fn accept_tls(
    client: &mut FramedConn<Stream>,
    ctx: &ProxyContext,
) -> Result<(), SessionError> {
    let Some(acceptor) = ctx.client_tls.acceptor() else {
        client.out().extend_from_slice(b"N");
        return client.flush().await;
    };
    if !client.rbuf.is_empty() {
        // Bytes sent after SSLRequest, before the handshake, would be taken
        // as if they had come encrypted (CVE-2021-23222 in libpq's terms).
        return Err(refused(
            sqlstate::PROTOCOL_VIOLATION,
            "received unencrypted data after SSL request".to_owned(),
        ));
    }
    client.out().extend_from_slice(b"S");
    client.flush().await?;
    let Some(tcp) = client.stream.take_plain() else {
        return Err(SessionError::Closed(Side::Client));
    };
    let tls = acceptor
        .accept(tcp)
        .await
        .map_err(|e| SessionError::TlsHandshake(e.to_string()))?;
    client.stream = Stream::Tls(Box::new(tokio_rustls::TlsStream::Server(tls)));
    metrics::inc(&ctx.metrics.tls_handshakes_total);
    Ok(())
}

/// Checks the protocol version and returns the parameters to send to the
/// server. Newer 3.x minor versions and `_pq_.` options are declined with
/// NegotiateProtocolVersion, as PostgreSQL does.
fn negotiate(
    client: &mut FramedConn<Stream>,
    startup: &StartupMessage,
) -> Result<Vec<(String, String)>, SessionError> {
    if startup.major() != 3 {
        return Err(refused(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!(
                "unsupported frontend protocol {}.{}: server supports 3.0 to 3.0",
                startup.major(),
                startup.minor()
            ),
        ));
    }
    let (options, params): (Vec<_>, Vec<_>) = startup
        .params
        .iter()
        .cloned()
        .partition(|(k, _)| k.starts_with("_pq_."));
    if startup.minor() > 0 || !options.is_empty() {
        NegotiateProtocolVersion {
            // PostgreSQL sends the whole newest version (3.0 = 196608), not a
            // bare minor number, and libpq rejects anything below 3.0.
            newest_version: understudy_protocol::PROTOCOL_VERSION_3_0,
            unrecognized: options.into_iter().map(|(k, _)| k).collect(),
        }
        .encode(client.out());
    }
    Ok(params)
}

async fn forward_cancel(target: CancelTarget, ctx: &ProxyContext) {
    match cancel::forward_cancel(&target, ctx.config.backend.connect_timeout()).await {
        Ok(()) => metrics::inc(&ctx.metrics.cancel_forwarded_total),
        Err(e) => {
            tracing::warn!(backend = %target.addr, error = %e, "could not forward a cancel request")
        }
    }
}

fn refused(code: &str, message: String) -> SessionError {
    SessionError::Refused(ErrorFields::new(Severity::Fatal, code, message))
}

/// Tells the client why its session cannot go on (unless it already knows),
/// then closes.
async fn end_with_error(
    client: &mut FramedConn<Stream>,
    e: SessionError,
    peer: SocketAddr,
    metrics: &ProxyMetrics,
) {
    let fields = match &e {
        SessionError::Refused(fields) | SessionError::ServerRefused(fields) => Some(fields.clone()),
        SessionError::Protocol {
            side: Side::Client, ..
        } => {
            metrics::inc(&metrics.client_protocol_errors_total);
            Some(ErrorFields::new(
                Severity::Fatal,
                sqlstate::PROTOCOL_VIOLATION,
                e.to_string(),
            ))
        }
        SessionError::Io {
            side: Side::Server, ..
        }
        | SessionError::Timeout(_)
        | SessionError::Protocol {
            side: Side::Server, ..
        } => Some(ErrorFields::new(
            Severity::Fatal,
            sqlstate::UNABLE_TO_CONNECT,
            format!("understudy could not open a session on the server: {e}"),
        )),
        SessionError::Offloaded { .. } => Some(ErrorFields::new(
            Severity::Fatal,
            sqlstate::INTERNAL_ERROR,
            format!("understudy could not finish the login: {e}"),
        )),
        _ => None,
    };
    if let Some(fields) = fields {
        fields.encode_error(client.out());
        let _ = client.flush().await;
    }
    if e.is_quiet() || matches!(e, SessionError::AuthFailed { .. }) {
        tracing::debug!(%peer, "connection ended during startup: {e}");
    } else {
        tracing::info!(%peer, "connection ended during startup: {e}");
    }
}
