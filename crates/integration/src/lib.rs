//! Shared set-up of the integration tests: a real PostgreSQL cluster
//! (from `understudy-testkit`) with an understudy proxy in front of it, run
//! in the test's own runtime, and helpers to run the same client code
//! directly and through the proxy.
//!
//! # Layout
//! - [`Harness`]: cluster + proxy, connection helpers.
//! - [`Target`]: direct to PostgreSQL, or through understudy.
//! - The scenarios are in `tests/`, one file each.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};
use understudy_config::{Config, Secret, Server};
use understudy_proxy::{topology, BackendAddr, ProxyHandle, Topology, TopologyTx};
use understudy_testkit::{TestCluster, PASSWORD, SUPERUSER};

pub use understudy_testkit;

/// Where a client connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Straight to the primary.
    Direct,
    /// Through the proxy.
    Proxy,
}

/// Both targets, for tests that compare them.
pub const BOTH: [Target; 2] = [Target::Direct, Target::Proxy];

/// A running cluster with a proxy in front of its primary.
pub struct Harness {
    /// The PostgreSQL servers.
    pub cluster: TestCluster,
    /// The proxy.
    pub proxy: ProxyHandle,
    /// The configuration the proxy runs with.
    pub config: Arc<Config>,
    /// Publishes the primary to the proxy.
    pub topology: TopologyTx,
}

impl Harness {
    /// A primary with a proxy in passthrough mode.
    pub async fn start() -> Harness {
        Harness::start_with(0, |_| {}).await
    }

    /// A primary and `standbys` standbys, with a proxy whose configuration
    /// `customize` may change (listen address and servers are set already).
    pub async fn start_with(standbys: usize, customize: impl FnOnce(&mut Config)) -> Harness {
        let cluster = TestCluster::start_with_standbys(standbys).await;
        let mut config = Config::default_for_embedded();
        config.proxy.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        config.auth.auth_user = SUPERUSER.to_owned();
        config.auth.auth_password = Secret::new(PASSWORD);
        config.servers = cluster
            .nodes()
            .iter()
            .map(|node| Server {
                name: node.name().to_owned(),
                host: Ipv4Addr::LOCALHOST.to_string(),
                port: node.port(),
            })
            .collect();
        customize(&mut config);
        let config = Arc::new(config);
        let (topology, rx) = topology::channel(Topology {
            primary: Some(BackendAddr {
                name: cluster.primary().name().to_owned(),
                host: Ipv4Addr::LOCALHOST.to_string(),
                port: cluster.primary().port(),
            }),
        });
        let proxy = understudy_proxy::start(Arc::clone(&config), rx)
            .await
            .expect("proxy starts");
        Harness {
            cluster,
            proxy,
            config,
            topology,
        }
    }

    /// Port of `target`.
    pub fn port(&self, target: Target) -> u16 {
        match target {
            Target::Direct => self.cluster.primary().port(),
            Target::Proxy => self.proxy.local_addr().port(),
        }
    }

    /// Connection settings for `target` as `user`.
    pub fn pg_config(&self, target: Target, user: &str, password: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port(target))
            .user(user)
            .password(password)
            .dbname("postgres");
        config
    }

    /// A libpq connection string for `target` as the superuser.
    pub fn conninfo(&self, target: Target) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} password={PASSWORD} dbname=postgres",
            self.port(target)
        )
    }

    /// Connects to `target` as the superuser.
    pub async fn connect(&self, target: Target) -> Client {
        self.connect_as(target, SUPERUSER, PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("connecting to {target:?}: {e}"))
    }

    /// Connects to `target` as `user`; the connection runs in a spawned task.
    pub async fn connect_as(
        &self,
        target: Target,
        user: &str,
        password: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = self.pg_config(target, user, password).connect(NoTls).await?;
        let _task: JoinHandle<()> = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }
}

/// Renders every row of a simple-protocol result as text, for comparisons.
pub fn render(messages: &[tokio_postgres::SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => (0..row.len())
                .map(|i| row.get(i).unwrap_or("NULL").to_owned())
                .collect::<Vec<_>>()
                .join("|"),
            tokio_postgres::SimpleQueryMessage::CommandComplete(n) => format!("complete {n}"),
            _ => "other".to_owned(),
        })
        .collect()
}
