//! `understudy up`: creates (or reuses) a primary and a streaming standby
//! under DIR, starts the proxy and the admin endpoint in front of them,
//! prints `ready: <connection URI>`, and runs in the foreground until
//! Ctrl-C or SIGTERM, which stop the proxy and both servers.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::sync::RwLock;
use understudy_cluster::{EmbeddedCluster, NodeStatus};
use understudy_config::{Config, Secret, Server};
use understudy_proxy::{topology, BackendAddr, Topology};

use crate::admin::{self, AdminState, NodeReport, NodesFn};
use crate::cli::UpArgs;
use crate::run::shutdown_signal;
use crate::runtime_files::{self, Instance};
use crate::CliError;

/// Runs until SIGINT or SIGTERM.
pub async fn run(args: UpArgs) -> Result<(), CliError> {
    let cluster = EmbeddedCluster::up(&args.dir).await?;
    let dir = cluster.dir().to_path_buf();
    tracing::info!(dir = %dir.display(), data = %cluster.data_root().display(), "cluster is up");

    let config = Arc::new(embedded_config(&cluster, &args)?);
    let primary = BackendAddr {
        name: cluster.primary.name().to_owned(),
        host: Ipv4Addr::LOCALHOST.to_string(),
        port: cluster.primary.port(),
    };
    let (_topology_tx, topology_rx) = topology::channel(Topology {
        primary: Some(primary),
    });
    let creds = cluster.creds.clone();
    let cluster = Arc::new(RwLock::new(Some(cluster)));

    let proxy = match understudy_proxy::start(Arc::clone(&config), topology_rx).await {
        Ok(proxy) => proxy,
        Err(e) => {
            stop_cluster(&cluster).await;
            return Err(e.into());
        }
    };
    let nodes: NodesFn = {
        let cluster = Arc::clone(&cluster);
        Arc::new(move || {
            let cluster = Arc::clone(&cluster);
            Box::pin(async move {
                match cluster.read().await.as_ref() {
                    Some(cluster) => cluster.status().await.into_iter().map(report).collect(),
                    None => Vec::new(),
                }
            })
        })
    };
    let admin_state = Arc::new(AdminState {
        proxy_port: proxy.local_addr().port(),
        metrics: proxy.metrics(),
        nodes,
        token: String::new(),
    });
    let admin_addr = match admin::serve(config.admin.listen, admin_state).await {
        Ok(addr) => addr,
        Err(e) => {
            stop_cluster(&cluster).await;
            return Err(CliError::Other(format!(
                "cannot listen on {} for the admin endpoint: {e} (choose another with --admin-port)",
                config.admin.listen
            )));
        }
    };
    let instance = Instance {
        pid: std::process::id(),
        proxy: proxy.local_addr(),
        admin: admin_addr,
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
    tracing::info!(admin = %admin_addr, "understudy is ready; Ctrl-C stops the proxy and both servers");
    println!("ready: {uri}");

    shutdown_signal().await;
    tracing::info!("shutting down");
    proxy.stop_accepting().await;
    runtime_files::remove(&dir);
    stop_cluster(&cluster).await;
    tracing::info!("stopped");
    Ok(())
}

fn embedded_config(cluster: &EmbeddedCluster, args: &UpArgs) -> Result<Config, CliError> {
    let mut config = Config::default_for_embedded();
    config.proxy.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let admin_port = args.admin_port.unwrap_or(args.port.wrapping_add(1));
    config.admin.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, admin_port));
    config.auth.auth_user = cluster.creds.superuser.clone();
    config.auth.auth_password = Secret::new(cluster.creds.password.clone());
    config.servers = [&cluster.primary, &cluster.standby]
        .into_iter()
        .map(|node| Server {
            name: node.name().to_owned(),
            host: Ipv4Addr::LOCALHOST.to_string(),
            port: node.port(),
        })
        .collect();
    config.validate()?;
    Ok(config)
}

async fn stop_cluster(cluster: &RwLock<Option<EmbeddedCluster>>) {
    if let Some(cluster) = cluster.write().await.take() {
        if let Err(e) = cluster.shutdown().await {
            tracing::error!(error = %e, "stopping the servers failed");
        }
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
