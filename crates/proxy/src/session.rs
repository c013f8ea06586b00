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
use understudy_protocol::frontend::encode_terminate;
use understudy_protocol::startup::{StartupMessage, StartupPacket};
use understudy_protocol::DEFAULT_MAX_MESSAGE_LEN;

use crate::backend::{self, BackendConn};
use crate::cancel::{self, CancelMap, CancelRegistration, CancelTarget};
use crate::client_auth;
use crate::conn::FramedConn;
use crate::error::{SessionError, Side};
use crate::journal::Limits;
use crate::metrics::{self, ProxyMetrics};
use crate::relay::{self, Pipe, RelayEnd, RelayState};
use crate::secrets::SecretStore;
use crate::topology::{self, TopologyRx};

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
}

/// A session that completed startup.
struct Opened {
    backend: BackendConn,
    _cancel: CancelRegistration,
}

/// Serves one client connection until it ends.
pub async fn serve(stream: TcpStream, peer: SocketAddr, ctx: Arc<ProxyContext>) {
    let _ = stream.set_nodelay(true);
    let mut client = FramedConn::new(stream, Side::Client, DEFAULT_MAX_MESSAGE_LEN);
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

/// Relays an opened session until it ends.
async fn run(
    mut client: FramedConn<TcpStream>,
    opened: Opened,
    peer: SocketAddr,
    ctx: &ProxyContext,
) {
    let Opened { backend, _cancel } = opened;
    let mut server = backend.conn;
    let m = &ctx.metrics;
    metrics::inc(&m.sessions_total);
    metrics::inc(&m.sessions_active);
    let mut to_server = Pipe::new(std::mem::take(&mut client.rbuf), DEFAULT_MAX_MESSAGE_LEN);
    let mut to_client = Pipe::new(std::mem::take(&mut server.rbuf), DEFAULT_MAX_MESSAGE_LEN);
    let mut state = RelayState::new(Limits::default());
    let end = relay::relay(
        &mut client.stream,
        &mut server.stream,
        &mut to_server,
        &mut to_client,
        &mut state,
        m,
    )
    .await;
    metrics::dec(&m.sessions_active);
    match end {
        RelayEnd::ClientTerminated => {}
        RelayEnd::Failed(e) => {
            if let SessionError::Protocol {
                side: Side::Client, ..
            } = &e
            {
                metrics::inc(&m.client_protocol_errors_total);
                let fields =
                    ErrorFields::new(Severity::Fatal, sqlstate::PROTOCOL_VIOLATION, e.to_string());
                let mut out = BytesMut::new();
                fields.encode_error(&mut out);
                let _ = client.stream.write_all(&out).await;
            }
            if !matches!(
                e,
                SessionError::Closed(Side::Server)
                    | SessionError::Io {
                        side: Side::Server,
                        ..
                    }
            ) {
                let mut out = BytesMut::new();
                encode_terminate(&mut out);
                let _ = server.stream.write_all(&out).await;
            }
            if e.is_quiet() {
                tracing::debug!(%peer, "session ended: {e}");
            } else {
                tracing::info!(%peer, "session ended: {e}");
            }
        }
    }
}

/// Runs the startup phase. `Ok(None)` means the connection was a cancel
/// request and has been served.
async fn open(
    client: &mut FramedConn<TcpStream>,
    peer: SocketAddr,
    ctx: &ProxyContext,
) -> Result<Option<Opened>, SessionError> {
    let startup = loop {
        match client.read_startup().await? {
            StartupPacket::SslRequest | StartupPacket::GssEncRequest => {
                client.out().extend_from_slice(b"N");
                client.flush().await?;
            }
            StartupPacket::Cancel(request) => {
                metrics::inc(&ctx.metrics.cancel_requests_total);
                if let Some(target) = ctx.cancel.lookup(&request) {
                    forward_cancel(target, ctx).await;
                } else {
                    tracing::debug!(%peer, "cancel request with an unknown key ignored");
                }
                return Ok(None);
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
        connect_timeout,
        DEFAULT_MAX_MESSAGE_LEN,
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
        _cancel: registration,
    }))
}

/// Checks the protocol version and returns the parameters to send to the
/// server. Newer 3.x minor versions and `_pq_.` options are declined with
/// NegotiateProtocolVersion, as PostgreSQL does.
fn negotiate(
    client: &mut FramedConn<TcpStream>,
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
            newest_minor: 0,
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
    client: &mut FramedConn<TcpStream>,
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
