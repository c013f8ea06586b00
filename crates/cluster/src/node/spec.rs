//! What a node is made of ([`NodeSpec`]), who administers it ([`Credentials`]), how it
//! is stopped ([`StopMode`]), and picking free loopback ports.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::error::{ClusterError, Result};
use crate::files::HostAuth;

/// What a node is made of: where its files live and how it listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Name used in logs, errors and `application_name`.
    pub name: String,
    /// The data directory (created if missing).
    pub data_dir: PathBuf,
    /// TCP port on 127.0.0.1 (0: pick a free one at start).
    pub port: u16,
    /// Directory of the Unix-domain socket (keep its path short: 107-byte limit).
    pub socket_dir: PathBuf,
    /// Where the server and the programs run for it write their output.
    pub log_file: PathBuf,
    /// `fsync`; off (with `initdb`/`pg_basebackup --no-sync`) only for test clusters.
    pub fsync: bool,
    /// Authentication method of `pg_hba.conf`.
    pub host_auth: HostAuth,
}

impl NodeSpec {
    /// A durable node (fsync on, SCRAM authentication).
    pub fn new(
        name: impl Into<String>,
        data_dir: impl Into<PathBuf>,
        port: u16,
        socket_dir: impl Into<PathBuf>,
        log_file: impl Into<PathBuf>,
    ) -> NodeSpec {
        NodeSpec {
            name: name.into(),
            data_dir: data_dir.into(),
            port,
            socket_dir: socket_dir.into(),
            log_file: log_file.into(),
            fsync: true,
            host_auth: HostAuth::ScramSha256,
        }
    }
}

/// The superuser of a cluster.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// Role name.
    pub superuser: String,
    /// Plaintext password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("superuser", &self.superuser)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to stop a node (the `pg_ctl stop -m` modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Wait for clients to disconnect.
    Smart,
    /// Disconnect clients, checkpoint, exit.
    Fast,
    /// Exit at once; crash recovery at next start.
    Immediate,
}

impl StopMode {
    /// The `pg_ctl -m` argument.
    pub fn as_str(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }

    /// The postmaster signal with the same effect.
    pub fn signal(self) -> Signal {
        match self {
            StopMode::Smart => Signal::SIGTERM,
            StopMode::Fast => Signal::SIGINT,
            StopMode::Immediate => Signal::SIGQUIT,
        }
    }
}

/// Picks a currently free TCP port on 127.0.0.1 that this process has not
/// picked before.
///
/// The kernel may hand the same port to two binds in a row once the first
/// listener is closed, so two calls could otherwise give one port to two
/// listeners of the same test or cluster (a proxy and its admin endpoint,
/// say). Remembering what was handed out keeps every pick distinct.
pub fn free_port() -> Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    const ATTEMPTS: usize = 64;
    for _ in 0..ATTEMPTS {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(ClusterError::io("finding a free port on 127.0.0.1"))?;
        let port = listener
            .local_addr()
            .map_err(ClusterError::io("finding a free port on 127.0.0.1"))?
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    Err(ClusterError::io("finding a free port on 127.0.0.1")(
        std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("{ATTEMPTS} binds in a row gave ports this process already uses"),
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_never_hands_out_a_port_twice() {
        // A thousand binds to port 0 among ~14 000 ephemeral ports repeat a
        // port almost surely; every pick must still be new.
        let mut seen = BTreeSet::new();
        for _ in 0..1000 {
            let port = free_port().expect("a free port");
            assert!(seen.insert(port), "port {port} was handed out twice");
        }
    }
}
