//! Finding the primary among the servers of `understudy run`: every server
//! is asked `pg_is_in_recovery()` over a control connection — and, when it
//! has a `patroni` URL, its Patroni REST API, which then decides (see
//! [`patroni`](crate::patroni)) — the one that is primary is published, and
//! the answers are kept for `/status`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use understudy_config::{Config, Server};
use understudy_proxy::{BackendAddr, Topology, TopologyTx};

use crate::admin::NodeReport;

/// How often every server is asked.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The latest answers of every server, by name.
#[derive(Default)]
pub struct Observed {
    nodes: Mutex<HashMap<String, NodeReport>>,
}

impl Observed {
    /// Reports in configuration order.
    pub fn reports(&self, servers: &[Server]) -> Vec<NodeReport> {
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        servers
            .iter()
            .filter_map(|s| nodes.get(&s.name).cloned())
            .collect()
    }
}

/// Polls the servers for as long as the process runs.
pub fn spawn(config: Arc<Config>, topology: TopologyTx) -> Arc<Observed> {
    let observed = Arc::new(Observed::default());
    let shared = Arc::clone(&observed);
    tokio::spawn(async move {
        let mut clients: HashMap<String, tokio_postgres::Client> = HashMap::new();
        loop {
            let mut primary = None;
            let mut primary_lsn = None;
            let mut replay = Vec::new();
            for server in &config.servers {
                let probe = probe(&config, server, &mut clients).await;
                let leads = match (&server.patroni, &probe) {
                    (Some(url), Ok((false, _))) => {
                        match crate::patroni::leads(url, config.backend.connect_timeout()).await {
                            Ok(leads) => leads,
                            Err(e) => {
                                tracing::warn!(server = %server.name, "{e}");
                                false
                            }
                        }
                    }
                    _ => true,
                };
                let role = match &probe {
                    Ok((false, _)) if !leads => {
                        tracing::debug!(server = %server.name, "out of recovery, but Patroni does not confirm it leads");
                        "not leader"
                    }
                    Ok((false, lsn)) => {
                        if primary.is_none() {
                            primary = Some(server);
                            primary_lsn = Some(*lsn);
                        } else {
                            tracing::warn!(server = %server.name, "more than one server is out of recovery; keeping the first listed as primary");
                        }
                        "primary"
                    }
                    Ok((true, lsn)) => {
                        replay.push((server.name.clone(), *lsn));
                        "standby"
                    }
                    Err(e) => {
                        tracing::debug!(server = %server.name, error = %e, "server unreachable");
                        clients.remove(&server.name);
                        "down"
                    }
                };
                let mut nodes = shared.nodes.lock().unwrap_or_else(PoisonError::into_inner);
                nodes.insert(
                    server.name.clone(),
                    NodeReport {
                        name: server.name.clone(),
                        role: role.to_owned(),
                        port: server.port,
                        pid: None,
                        data_dir: None,
                        lag_bytes: None,
                        huge_pages: None,
                    },
                );
            }
            if let Some(primary_lsn) = primary_lsn {
                let mut nodes = shared.nodes.lock().unwrap_or_else(PoisonError::into_inner);
                for (name, lsn) in replay {
                    if let Some(node) = nodes.get_mut(&name) {
                        node.lag_bytes = Some(primary_lsn.saturating_sub(lsn));
                    }
                }
            }
            let next = Topology {
                draining: false,
                lossless: false,
                successor: None,
                primary: primary.map(|s| BackendAddr {
                    name: s.name.clone(),
                    host: s.host.clone(),
                    port: s.port,
                }),
            };
            topology.send_if_modified(|current| {
                if *current != next {
                    tracing::info!(primary = ?next.primary, "topology changed");
                    *current = next;
                    true
                } else {
                    false
                }
            });
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    });
    observed
}

/// Asks one server whether it is in recovery, and its WAL position (insert
/// position on a primary, replay position on a standby) in bytes.
async fn probe(
    config: &Config,
    server: &Server,
    clients: &mut HashMap<String, tokio_postgres::Client>,
) -> Result<(bool, u64), String> {
    if clients.get(&server.name).is_none_or(|c| c.is_closed()) {
        let client = understudy_proxy::control::connect(
            config,
            &server.host,
            server.port,
            "postgres",
            "understudy-monitor",
            config.backend.connect_timeout(),
        )
        .await
        .map_err(|e| understudy_proxy::control::describe_error(&e, config))?;
        clients.insert(server.name.clone(), client);
    }
    let Some(client) = clients.get(&server.name) else {
        return Err("no connection".into());
    };
    let query = "SELECT pg_is_in_recovery(), \
                 (CASE WHEN pg_is_in_recovery() THEN coalesce(pg_last_wal_replay_lsn(), '0/0') \
                  ELSE pg_current_wal_insert_lsn() END - '0/0'::pg_lsn)::float8";
    let row = tokio::time::timeout(
        config.backend.connect_timeout(),
        client.query_one(query, &[]),
    )
    .await
    .map_err(|_| "health query timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    let in_recovery: bool = row.try_get(0).map_err(|e| e.to_string())?;
    let lsn: f64 = row.try_get(1).map_err(|e| e.to_string())?;
    Ok((in_recovery, lsn as u64))
}
