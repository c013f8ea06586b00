//! Where sessions connect: the current primary, published through a `watch`
//! channel by whoever knows it (the embedded cluster of `understudy up`, or
//! server discovery in `understudy run`). Sessions only read it.

use std::fmt;
use std::time::Duration;

use tokio::sync::watch;

/// Address of one PostgreSQL server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendAddr {
    /// Name of the server, as configured (used in logs and metrics).
    pub name: String,
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for BackendAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}:{})", self.name, self.host, self.port)
    }
}

/// The cluster as the proxy sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    /// The server that accepts writes, when one is known.
    pub primary: Option<BackendAddr>,
    /// A planned switchover is under way: sessions stop at their next
    /// transaction boundary and wait for the new primary.
    pub draining: bool,
    /// The primary has replayed everything the previous one wrote (a switchover
    /// after that server's clean shutdown): every commit the proxy acknowledged
    /// is there, so the commit log has nothing to re-apply on it.
    pub lossless: bool,
    /// While a switchover drains: the server that will be promoted. Parked
    /// sessions open their next backend there in advance.
    pub successor: Option<BackendAddr>,
}

/// Sending side of the topology channel.
pub type TopologyTx = watch::Sender<Topology>;
/// Receiving side of the topology channel.
pub type TopologyRx = watch::Receiver<Topology>;

/// A channel that starts with `initial`.
pub fn channel(initial: Topology) -> (TopologyTx, TopologyRx) {
    watch::channel(initial)
}

/// Waits up to `timeout` until a primary is known, and returns it.
pub async fn wait_for_primary(rx: &mut TopologyRx, timeout: Duration) -> Option<BackendAddr> {
    let wait = rx.wait_for(|t| t.primary.is_some());
    match tokio::time::timeout(timeout, wait).await {
        Ok(Ok(topology)) => topology.primary.clone(),
        _ => None,
    }
}
