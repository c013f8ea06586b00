//! The view of the cluster that the orchestrator publishes to sessions: which node
//! accepts writes, how many times that has changed, and whether a failover or a
//! switchover is under way.

use serde::Serialize;

use crate::node::Node;

/// Where a node listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Endpoint {
    /// Node name (`node1`, `node2`).
    pub name: String,
    /// IP address (always loopback for the embedded cluster).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// The endpoint of `node` (TCP on 127.0.0.1).
    pub fn of(node: &Node) -> Endpoint {
        Endpoint {
            name: node.name().to_string(),
            host: "127.0.0.1".to_string(),
            port: node.port(),
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}:{})", self.name, self.host, self.port)
    }
}

/// What the cluster is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// `primary` accepts writes; sessions use it.
    Serving,
    /// A switchover is under way. With a primary: sessions should finish their
    /// transaction and park at the next transaction boundary. Without one: every session
    /// is parked and the standby is being promoted; hold until a primary is published.
    Draining,
    /// The primary failed (or stopped answering); sessions hold until a new primary is
    /// published.
    FailingOver,
}

impl Phase {
    /// `serving`, `draining` or `failing_over`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Serving => "serving",
            Phase::Draining => "draining",
            Phase::FailingOver => "failing_over",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The published state of the cluster, sent on a `tokio::sync::watch` channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterView {
    /// The node sessions connect to, once it accepts writes; `None` while there is none
    /// (failover or switchover in progress, or the cluster was shut down): hold.
    pub primary: Option<Endpoint>,
    /// Starts at 1 and increases by one every time the primary changes (a failover or a
    /// switchover); unchanged when the same primary is published again.
    pub generation: u64,
    /// What the cluster is doing.
    pub phase: Phase,
    /// `primary` has replayed everything its predecessor wrote, up to that node's clean
    /// shutdown (a switchover): no commit acknowledged before can be missing there.
    pub lossless: bool,
    /// While a switchover drains: the node that will be promoted (sessions may connect
    /// to it in advance; it becomes writable when promoted).
    pub successor: Option<Endpoint>,
}

impl ClusterView {
    /// A primary that serves, in `generation`.
    pub fn serving(primary: Endpoint, generation: u64) -> ClusterView {
        ClusterView {
            primary: Some(primary),
            generation,
            phase: Phase::Serving,
            lossless: false,
            successor: None,
        }
    }

    /// A primary that serves, in `generation`, and that has replayed everything its
    /// predecessor wrote (see [`ClusterView::lossless`]).
    pub fn handed_over(primary: Endpoint, generation: u64) -> ClusterView {
        ClusterView {
            lossless: true,
            ..ClusterView::serving(primary, generation)
        }
    }

    /// No primary, in `generation`, while `phase` lasts.
    pub fn holding(generation: u64, phase: Phase) -> ClusterView {
        ClusterView {
            primary: None,
            generation,
            phase,
            lossless: false,
            successor: None,
        }
    }
}
