//! The client-facing listener: accepts connections, enforces
//! `max_client_connections`, and spawns one session task per client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use understudy_config::Config;
use understudy_protocol::backend::{sqlstate, ErrorFields, Severity};

use crate::cancel::CancelMap;
use crate::commit_log::CommitLog;
use crate::drain::Drain;
use crate::journal::JournalBudget;
use crate::ledger::Ledgers;
use crate::metrics::{self, ProxyMetrics};
use crate::secrets::SecretStore;
use crate::session::{self, ProxyContext, Shutdown};
use crate::tls::{ClientTls, ServerTls, TlsError};
use crate::topology::TopologyRx;

/// The proxy could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The listen address is unavailable.
    #[error("cannot listen on {addr}: {source} (is another process using it? change proxy.listen or --port)")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A TLS setting cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The rules file cannot be used.
    #[error("proxy.rules: {0}")]
    Rules(#[from] understudy_rules::RulesError),
}

/// How often a shutdown looks whether every connection has closed.
const CLOSE_POLL: Duration = Duration::from_millis(10);
/// How long a shutdown waits for sessions to go once told to end now.
const FORCED_END_WAIT: Duration = Duration::from_secs(5);

/// What a graceful shutdown did.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownReport {
    /// Client connections open when it began.
    pub open_at_start: u64,
    /// Sessions still in a transaction when the grace period ended.
    pub ended_by_grace: u64,
    /// Connections still open at the end (peers that did not go away).
    pub left_open: u64,
    /// How long it took.
    pub took: Duration,
}

/// A running proxy.
pub struct ProxyHandle {
    drain: Drain,
    rules: Arc<crate::rules::Rules>,
    holds: Arc<crate::rules::holds::Holds>,
    commit_log: Arc<CommitLog>,
    local_addr: SocketAddr,
    metrics: Arc<ProxyMetrics>,
    cancel: Arc<CancelMap>,
    client_tls: Arc<ClientTls>,
    shutdown: watch::Sender<Shutdown>,
    stop: watch::Sender<bool>,
    accept_task: JoinHandle<()>,
}

impl ProxyHandle {
    /// The tables held for maintenance.
    pub fn holds(&self) -> Arc<crate::rules::holds::Holds> {
        Arc::clone(&self.holds)
    }

    /// The proxy's rules (to reload them).
    pub fn rules(&self) -> Arc<crate::rules::Rules> {
        Arc::clone(&self.rules)
    }

    /// The address clients connect to (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The proxy's counters.
    pub fn metrics(&self) -> Arc<ProxyMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Committed transactions the standbys may not have yet.
    pub fn commit_log(&self) -> Arc<CommitLog> {
        Arc::clone(&self.commit_log)
    }

    /// Parks sessions for a switchover: `wait_parked` resolves when every
    /// session is at a transaction boundary.
    pub fn drain_handle(&self) -> Drain {
        self.drain.clone()
    }

    /// Sessions holding a cancel key, i.e. open sessions.
    pub fn open_sessions(&self) -> usize {
        self.cancel.len()
    }

    /// The proxy's TLS certificate, to reload it (on SIGHUP) while the
    /// proxy runs.
    pub fn tls_reloader(&self) -> Arc<ClientTls> {
        Arc::clone(&self.client_tls)
    }

    /// Reads the TLS certificate and key files again; sessions already open
    /// keep the connection they have. On error the previous certificate
    /// stays in use.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        self.client_tls.reload()
    }

    /// Stops accepting connections. Open sessions continue until their
    /// clients leave or the process exits.
    pub async fn stop_accepting(self) {
        let _ = self.stop.send(true);
        let _ = self.accept_task.await;
    }

    /// Shuts the proxy down gracefully: stops accepting, ends every session
    /// at its next transaction boundary (idle ones at once) with `57P01`,
    /// and after `grace` ends the rest wherever they are (their open
    /// transactions roll back). Resolves when no connection is left, or
    /// shortly after the grace period if a peer does not go away.
    pub async fn shutdown(mut self, grace: Duration) -> ShutdownReport {
        let started = std::time::Instant::now();
        let _ = self.stop.send(true);
        let _ = (&mut self.accept_task).await;
        let open_at_start = self.open_connections();
        let _ = self.shutdown.send(Shutdown::Draining);
        let drained = self.wait_closed(grace).await;
        let ended_by_grace = if drained {
            0
        } else {
            let left = self.open_connections();
            tracing::warn!(
                sessions = left,
                grace_ms = grace.as_millis() as u64,
                "grace period over; ending the sessions still in a transaction"
            );
            let _ = self.shutdown.send(Shutdown::Now);
            self.wait_closed(FORCED_END_WAIT).await;
            left
        };
        ShutdownReport {
            open_at_start,
            ended_by_grace,
            left_open: self.open_connections(),
            took: started.elapsed(),
        }
    }

    fn open_connections(&self) -> u64 {
        self.metrics
            .connections_active
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until no client connection is open, at most `limit`.
    async fn wait_closed(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        while self.open_connections() > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(CLOSE_POLL).await;
        }
        true
    }
}

/// Binds `config.proxy.listen` and starts accepting clients.
pub async fn start(config: Arc<Config>, topology: TopologyRx) -> Result<ProxyHandle, StartError> {
    let listener = bind(config.proxy.listen).await?;
    start_on(listener, config, topology).await
}

/// Binds the proxy's listening socket without serving it yet: a caller that has
/// slow work to do before [`start_on`] (creating the servers) claims its port
/// first, so nothing started meanwhile can take it.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Starts accepting clients on `listener` (from [`bind`]), ignoring
/// `config.proxy.listen`.
pub async fn start_on(
    listener: TcpListener,
    config: Arc<Config>,
    topology: TopologyRx,
) -> Result<ProxyHandle, StartError> {
    let client_tls = Arc::new(ClientTls::load(&config.tls)?);
    let server_tls = ServerTls::new(&config.backend)?;
    let addr = config.proxy.listen;
    let local_addr = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    let rules = Arc::new(crate::rules::Rules::load(&config.proxy.rules)?);
    let holds = Arc::new(crate::rules::holds::Holds::default());
    let metrics = Arc::new(ProxyMetrics::default());
    let commit_log = Arc::new(CommitLog::new(
        usize::try_from(config.journal.max_commit_log_entries).unwrap_or(usize::MAX),
    ));
    crate::commit_log::lsn::spawn(
        Arc::clone(&commit_log),
        Arc::clone(&config),
        topology.clone(),
    );
    let cancel = Arc::new(CancelMap::default());
    let (shutdown, shutdown_rx) = watch::channel(Shutdown::Running);
    let ctx = Arc::new(ProxyContext {
        shutdown: shutdown_rx,
        secrets: SecretStore::new(Arc::clone(&config), topology.clone()),
        ledgers: Arc::new(Ledgers::new(Arc::clone(&config), topology.clone())),
        commit_log: Arc::clone(&commit_log),
        drain: Drain::new(Arc::clone(&metrics)),
        rules: Arc::clone(&rules),
        holds: Arc::clone(&holds),
        config: Arc::clone(&config),
        topology,
        cancel: Arc::clone(&cancel),
        metrics: Arc::clone(&metrics),
        client_tls: Arc::clone(&client_tls),
        server_tls,
        journal_budget: Arc::new(JournalBudget::new(
            usize::try_from(config.journal.max_total_bytes).unwrap_or(usize::MAX),
        )),
    });
    spawn_reapply_on_new_primary(Arc::clone(&ctx));
    let ctx_drain = ctx.drain.clone();
    let (stop, stopped) = watch::channel(false);
    let accept_task = tokio::spawn(accept_loop(listener, ctx, stopped));
    tracing::info!(%local_addr, "proxy listening");
    Ok(ProxyHandle {
        rules,
        holds,
        drain: ctx_drain,
        commit_log: Arc::clone(&commit_log),
        local_addr,
        metrics,
        cancel,
        client_tls,
        shutdown,
        stop,
        accept_task,
    })
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ProxyContext>,
    mut stopped: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(ctx.config.proxy.max_client_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors or a similar transient condition:
                // back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        metrics::inc(&ctx.metrics.connections_total);
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::inc(&ctx.metrics.connections_refused_total);
            tokio::spawn(refuse_too_many(
                stream,
                ctx.config.proxy.max_client_connections,
            ));
            continue;
        };
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            metrics::inc(&ctx.metrics.connections_active);
            session::serve(stream, peer, Arc::clone(&ctx)).await;
            metrics::dec(&ctx.metrics.connections_active);
            drop(slot);
        });
    }
}

/// Re-applies the commit log whenever a new primary is published, whether
/// or not a session moves. The primary at start is where the log's commits
/// are made: a later view naming it again (a switchover beginning, a
/// failover abandoned) re-applies nothing there.
fn spawn_reapply_on_new_primary(ctx: Arc<ProxyContext>) {
    let mut topology = ctx.topology.clone();
    let first = topology.borrow_and_update().primary.clone();
    if let Some(first) = first {
        crate::commit_log::reapply::commits_made_on(&ctx, &first);
    }
    tokio::spawn(async move {
        while topology.changed().await.is_ok() {
            let primary = topology.borrow_and_update().primary.clone();
            if let Some(primary) = primary {
                crate::commit_log::reapply::run(&ctx, &primary).await;
            }
        }
    });
}

async fn refuse_too_many(mut stream: TcpStream, limit: usize) {
    let mut out = BytesMut::new();
    ErrorFields::new(
        Severity::Fatal,
        sqlstate::TOO_MANY_CONNECTIONS,
        format!(
            "sorry, too many clients already (understudy proxy.max_client_connections = {limit})"
        ),
    )
    .encode_error(&mut out);
    let _ = stream.write_all(&out).await;
}
