//! `understudy up`: creates (or reuses) a primary and a streaming standby
//! under DIR, hands them to the failover orchestrator, starts the proxy and
//! the admin endpoint in front of them, prints `ready: <connection URI>`,
//! and runs in the foreground until Ctrl-C or SIGTERM, which stop the proxy
//! and both servers.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use understudy_cluster::{
    ClusterView, EmbeddedCluster, HealthSettings, NodeStatus, Orchestrator, OrchestratorHandle,
    Phase,
};
use understudy_config::{Config, Secret, Server};
use understudy_proxy::{topology, BackendAddr, Topology, TopologyTx};

use crate::admin::{self, AdminState, NodeReport, NodesFn};
use crate::cli::UpArgs;
use crate::run::{reload, shut_down, until_stopped};
use crate::runtime_files::{self, Instance};
use crate::tls_files::TlsFiles;
use crate::CliError;

/// Runs until SIGINT or SIGTERM.
pub async fn run(args: UpArgs) -> Result<(), CliError> {
    // Both ports are claimed before the servers are created: a port chosen for a
    // server meanwhile (here or by any other program) can then never be one of
    // them, and a port in use is reported at once, not after initdb.
    let (proxy_addr, admin_addr) = listen_addrs(&args);
    let proxy_listener = understudy_proxy::bind(proxy_addr).await?;
    let admin_listener = tokio::net::TcpListener::bind(admin_addr)
        .await
        .map_err(|e| admin_bind_error(admin_addr, &e))?;
    // With port 0 the kernel chose: the configuration names the real ports.
    let bound = (
        proxy_listener.local_addr().unwrap_or(proxy_addr),
        admin_listener.local_addr().unwrap_or(admin_addr),
    );
    let cluster = EmbeddedCluster::up(&args.dir).await?;
    let dir = cluster.dir().to_path_buf();
    tracing::info!(dir = %dir.display(), data = %cluster.data_root().display(), "cluster is up");
    if let Some(advice) = cluster.huge_pages_advice().await {
        tracing::warn!("{advice}");
    }
    let tls = TlsFiles::under(&dir);
    let config = match tls.ensure() {
        Ok(()) => embedded_config(&cluster, &args, bound, Some(&tls))?,
        Err(e) => {
            tracing::warn!("{e}; clients will be offered no TLS");
            embedded_config(&cluster, &args, bound, None)?
        }
    };
    let config = Arc::new(config);
    let creds = cluster.creds.clone();
    let orchestrator = Arc::new(Orchestrator::spawn(
        cluster,
        HealthSettings::from(&config.health),
    ));

    let view = orchestrator.view();
    let (topology_tx, topology_rx) = topology::channel(topology_of(&view.borrow()));
    follow_view(view, topology_tx);

    let proxy =
        match understudy_proxy::start_on(proxy_listener, Arc::clone(&config), topology_rx).await {
            Ok(proxy) => proxy,
            Err(e) => {
                stop(&orchestrator).await;
                return Err(e.into());
            }
        };
    let admin_state = Arc::new(admin_state(&orchestrator, &proxy));
    let admin = match admin::serve_on(admin_listener, admin_state) {
        Ok(admin) => admin,
        Err(e) => {
            stop(&orchestrator).await;
            return Err(admin_bind_error(admin_addr, &e));
        }
    };
    let instance = Instance {
        pid: std::process::id(),
        proxy: proxy.local_addr(),
        admin: admin.addr,
    };
    if let Err(e) = runtime_files::write(&dir, &instance) {
        tracing::warn!(error = %e, "cannot write the instance file; `understudy status --dir` will not find this instance");
    }
    let uri = format!(
        "postgresql://{}:{}@127.0.0.1:{}/postgres",
        percent_encode(&creds.superuser),
        percent_encode(&creds.password),
        proxy.local_addr().port()
    );
    tracing::info!(admin = %admin.addr, "understudy is ready; Ctrl-C stops the proxy and both servers");
    if config.tls.enabled() {
        tracing::info!(
            "TLS: connect with sslmode=verify-full sslrootcert={}",
            tls.ca_cert.display()
        );
    }
    println!("ready: {uri}");

    let (tls, rules) = (proxy.tls_reloader(), proxy.rules());
    until_stopped(|| reload(&tls, &rules)).await;
    shut_down(proxy, config.proxy.shutdown_grace()).await;
    // The port is free once the instance file is gone: a new `up` can start at once.
    admin.close().await;
    runtime_files::remove(&dir);
    stop(&orchestrator).await;
    tracing::info!("stopped");
    Ok(())
}

/// What sessions see of the orchestrator's view.
pub(crate) fn topology_of(view: &ClusterView) -> Topology {
    Topology {
        primary: view.primary.as_ref().map(|p| BackendAddr {
            name: p.name.clone(),
            host: p.host.clone(),
            port: p.port,
        }),
        draining: view.phase == Phase::Draining,
        lossless: view.lossless,
        successor: view.successor.as_ref().map(|s| BackendAddr {
            name: s.name.clone(),
            host: s.host.clone(),
            port: s.port,
        }),
    }
}

/// Publishes every change of the orchestrator's view to the sessions.
fn follow_view(mut view: tokio::sync::watch::Receiver<ClusterView>, topology: TopologyTx) {
    tokio::spawn(async move {
        while view.changed().await.is_ok() {
            let next = topology_of(&view.borrow_and_update());
            topology.send_replace(next);
        }
    });
}

fn admin_state(
    orchestrator: &Arc<OrchestratorHandle>,
    proxy: &understudy_proxy::ProxyHandle,
) -> AdminState {
    let nodes: NodesFn = {
        let orchestrator = Arc::clone(orchestrator);
        Arc::new(move || {
            let orchestrator = Arc::clone(&orchestrator);
            Box::pin(async move {
                orchestrator
                    .status()
                    .await
                    .into_iter()
                    .map(report)
                    .collect()
            })
        })
    };
    let metrics = orchestrator.metrics();
    let commit_log = proxy.commit_log();
    let failover = {
        let orchestrator = Arc::clone(orchestrator);
        Arc::new(move || {
            let view = orchestrator.view().borrow().clone();
            serde_json::json!({
                "generation": view.generation,
                "phase": view.phase.as_str(),
                "redundancy": format!("{:?}", orchestrator.redundancy()).to_lowercase(),
                "events": orchestrator.events(),
            })
        })
    };
    let switchover = {
        let orchestrator = Arc::clone(orchestrator);
        let drained = proxy.drain_handle();
        Arc::new(move || {
            let orchestrator = Arc::clone(&orchestrator);
            let drained = drained.clone();
            Box::pin(async move {
                let report = orchestrator
                    .switchover(drained.wait_parked())
                    .await
                    .map_err(|e| e.to_string())?;
                serde_json::to_value(&report).map_err(|e| e.to_string())
            }) as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>
        })
    };
    AdminState {
        proxy_port: proxy.local_addr().port(),
        metrics: proxy.metrics(),
        nodes,
        token: String::new(),
        extra_metrics: Some(Arc::new(move |out: &mut String| {
            metrics.render_prometheus(out);
            commit_log.render_prometheus(out);
        })),
        failover: Some(failover),
        switchover: Some(switchover),
        rules: proxy.rules(),
        holds: proxy.holds(),
    }
}

fn embedded_config(
    cluster: &EmbeddedCluster,
    args: &UpArgs,
    (proxy_listen, admin_listen): (SocketAddr, SocketAddr),
    tls: Option<&TlsFiles>,
) -> Result<Config, CliError> {
    let mut config = Config::default_for_embedded();
    if let Some(tls) = tls {
        config.tls.cert_file = tls.cert.display().to_string();
        config.tls.key_file = tls.key.display().to_string();
    }
    // The embedded servers listen on loopback without TLS.
    config.backend.tls_mode = understudy_config::BackendTlsMode::Disable;
    config.proxy.listen = proxy_listen;
    config.admin.listen = admin_listen;
    if let Some(rules) = &args.rules {
        config.proxy.rules = rules.display().to_string();
    }
    config.auth.auth_user = cluster.creds.superuser.clone();
    config.auth.auth_password = Secret::new(cluster.creds.password.clone());
    config.servers = [&cluster.primary, &cluster.standby]
        .into_iter()
        .map(|node| Server {
            name: node.name().to_owned(),
            host: Ipv4Addr::LOCALHOST.to_string(),
            port: node.port(),
            patroni: None,
        })
        .collect();
    config.validate()?;
    Ok(config)
}

/// The proxy's and the admin endpoint's addresses, on loopback. The admin port
/// defaults to the proxy port + 1, or to any free port when the proxy's is 0.
fn listen_addrs(args: &UpArgs) -> (SocketAddr, SocketAddr) {
    let default_admin_port = match args.port {
        0 => 0,
        port => port.wrapping_add(1),
    };
    let admin_port = args.admin_port.unwrap_or(default_admin_port);
    (
        SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)),
        SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port)),
    )
}

fn admin_bind_error(addr: SocketAddr, e: &std::io::Error) -> CliError {
    CliError::Other(format!(
        "cannot listen on {addr} for the admin endpoint: {e} (choose another with --admin-port)"
    ))
}

async fn stop(orchestrator: &OrchestratorHandle) {
    if let Err(e) = orchestrator.shutdown().await {
        tracing::error!(error = %e, "stopping the servers failed");
    }
}

fn report(node: NodeStatus) -> NodeReport {
    NodeReport {
        name: node.name,
        role: node.role.to_string(),
        port: node.port,
        pid: node.pid,
        data_dir: Some(node.data_dir.display().to_string()),
        lag_bytes: node.lag_bytes,
        huge_pages: node.huge_pages,
    }
}

/// Percent-encodes a URI userinfo component.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
