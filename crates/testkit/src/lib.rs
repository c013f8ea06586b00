//! Real PostgreSQL clusters for tests and benchmarks: a primary and optional streaming
//! standbys in a temporary directory under /tmp, on free loopback ports, with `fsync`
//! off for speed. Dropping a [`TestCluster`] (also while a test panics) stops every
//! server it started by pid and removes the directory.
//!
//! # Layout
//!
//! - [`TestCluster`] — creation, access to nodes and credentials, roles, cleanup.
//! - [`wait_until`] — polling a condition with a deadline instead of sleeping.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use understudy_cluster::{
    process, Credentials, HostAuth, Node, NodeSpec, PgBinaries, RunAs, StopMode,
};

pub use understudy_cluster;

/// Superuser of every test cluster (named as the embedded cluster's is).
pub const SUPERUSER: &str = understudy_cluster::workdir::SUPERUSER;
/// Its password.
pub const PASSWORD: &str = "understudy-test";
/// How long `Drop` waits after SIGQUIT before SIGKILL.
const DROP_GRACE: Duration = Duration::from_secs(5);
/// Pause between polls of [`wait_until`].
const POLL: Duration = Duration::from_millis(20);

/// A primary (node 0) and `n` streaming standbys (nodes 1..=n, replication slots
/// `standby_1`, …) running as the PostgreSQL user. `pg_hba.conf` uses `md5`, so roles
/// with md5 secrets and roles with SCRAM secrets can both log in.
pub struct TestCluster {
    nodes: Vec<Node>,
    creds: Credentials,
    bins: PgBinaries,
    run_as: RunAs,
    dir: TempDir,
}

impl TestCluster {
    /// A running primary. Panics when PostgreSQL cannot be started.
    pub async fn start() -> TestCluster {
        TestCluster::start_with_standbys(0).await
    }

    /// A running primary and `n` running streaming standbys (asynchronous, each with its
    /// own slot). Panics when PostgreSQL cannot be started; whatever was started by then
    /// is stopped.
    pub async fn start_with_standbys(n: usize) -> TestCluster {
        let bins = PgBinaries::locate().unwrap_or_else(|e| panic!("{e}"));
        let run_as = RunAs::detect().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::Builder::new()
            .prefix("understudy-test-")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("creating a temporary directory under /tmp: {e}"));
        run_as.chown(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let mut cluster = TestCluster {
            nodes: Vec::new(),
            creds: Credentials {
                superuser: SUPERUSER.to_string(),
                password: PASSWORD.to_string(),
            },
            bins,
            run_as,
            dir,
        };
        let spec = cluster.spec("primary");
        let mut primary = Node::init_primary(&cluster.bins, &cluster.run_as, spec, &cluster.creds)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Registered before starting so that Drop stops it whatever happens next.
        cluster.nodes.push(primary.clone());
        primary
            .start_on_free_port()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        cluster.nodes[0] = primary;
        for i in 1..=n {
            cluster.add_standby(i).await;
        }
        cluster
    }

    /// The primary the cluster was created with (node 0).
    pub fn primary(&self) -> &Node {
        &self.nodes[0]
    }

    /// Mutable access to node 0.
    pub fn primary_mut(&mut self) -> &mut Node {
        &mut self.nodes[0]
    }

    /// Standby `i` (0-based).
    pub fn standby(&self, i: usize) -> &Node {
        &self.nodes[i + 1]
    }

    /// Mutable access to standby `i` (0-based).
    pub fn standby_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i + 1]
    }

    /// Every node, primary first.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Mutable access to every node, primary first.
    pub fn nodes_mut(&mut self) -> &mut [Node] {
        &mut self.nodes
    }

    /// The superuser and its password.
    pub fn creds(&self) -> &Credentials {
        &self.creds
    }

    /// The PostgreSQL programs in use.
    pub fn bins(&self) -> &PgBinaries {
        &self.bins
    }

    /// The user the servers run as.
    pub fn run_as(&self) -> &RunAs {
        &self.run_as
    }

    /// The temporary directory holding data, sockets and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A superuser connection to database `postgres` on node 0. Panics on failure.
    pub async fn connect(&self) -> tokio_postgres::Client {
        self.connect_to(0).await
    }

    /// A superuser connection to database `postgres` on node `i` (0 is the primary).
    pub async fn connect_to(&self, i: usize) -> tokio_postgres::Client {
        self.nodes[i]
            .connect(&self.creds, "postgres")
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Creates a login role `name` whose password is stored with `password_encryption`
    /// (`"scram-sha-256"` or `"md5"`). Panics on failure.
    pub async fn create_role(&self, name: &str, password: &str, password_encryption: &str) {
        let client = self.connect().await;
        let sql = format!(
            "SET password_encryption = {}; CREATE ROLE {} LOGIN PASSWORD {}",
            quote_literal(password_encryption),
            quote_ident(name),
            quote_literal(password)
        );
        client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("creating role {name}: {e}"));
    }

    async fn add_standby(&mut self, i: usize) {
        let spec = self.spec(&format!("standby{i}"));
        let slot = format!("standby_{i}");
        let mut standby = Node::create_standby(
            &self.bins,
            &self.run_as,
            &self.nodes[0],
            spec,
            &self.creds,
            &slot,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let index = self.nodes.len();
        self.nodes.push(standby.clone());
        standby
            .start_on_free_port()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.nodes[index] = standby;
    }

    fn spec(&self, name: &str) -> NodeSpec {
        let root = self.dir.path();
        let mut spec = NodeSpec::new(
            name,
            root.join(name),
            0,
            root.join("sock"),
            root.join(format!("{name}.log")),
        );
        spec.fsync = false;
        spec.host_auth = HostAuth::Md5;
        spec
    }
}

impl Drop for TestCluster {
    /// Stops every server of the cluster by pid (SIGQUIT, SIGKILL after a short grace,
    /// orphaned backends included) and waits until they are gone; the temporary
    /// directory is removed afterwards. Needs no async runtime.
    fn drop(&mut self) {
        for node in &self.nodes {
            process::stop_dir_blocking(node.data_dir(), StopMode::Immediate.signal(), DROP_GRACE);
        }
    }
}

/// Polls `condition` every 20 ms until it returns true (then true) or `timeout` passes
/// (then false).
pub async fn wait_until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Quotes an SQL string literal.
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Quotes an SQL identifier.
pub fn quote_ident(value: &str) -> String {
    format!("\"{}\"", value.replace('"', "\"\""))
}
