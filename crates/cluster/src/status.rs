//! Questions asked of running nodes: which role a node plays (`pg_is_in_recovery()`),
//! where its WAL stands, how far a standby's replay trails the primary, and whether its
//! shared memory is in huge pages (and how many it would take).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;

use crate::error::{ClusterError, Result};
use crate::node::shared_memory::SharedMemoryPages;
use crate::node::{Credentials, Node};

/// The role a node plays, as reported by the node itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Accepts writes (`pg_is_in_recovery()` is false).
    Primary,
    /// In recovery, replaying WAL from a primary.
    Standby,
    /// Not reachable: stopped, crashed or not answering.
    Down,
}

impl Role {
    /// `"primary"`, `"standby"` or `"down"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
            Role::Down => "down",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `understudy status` shows about one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// Its role, or `down` when it did not answer.
    pub role: Role,
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// Live postmaster pid.
    pub pid: Option<i32>,
    /// Data directory.
    pub data_dir: PathBuf,
    /// For a standby: bytes of WAL the primary has written that it has not replayed yet.
    pub lag_bytes: Option<u64>,
    /// Whether its shared memory is in huge pages; None when not known (not running).
    #[serde(default)]
    pub huge_pages: Option<bool>,
}

/// Role, port, pid and lag of each of `nodes`, in order; a node that does not answer
/// within `timeout` is `down`. The lag of a standby is measured against the node that
/// reports itself primary.
pub async fn collect(nodes: &[&Node], creds: &Credentials, timeout: Duration) -> Vec<NodeStatus> {
    let mut clients = Vec::new();
    for node in nodes {
        let client = node.connect_within(creds, "postgres", timeout).await.ok();
        let role = match &client {
            Some(client) => node_role(client).await.unwrap_or(Role::Down),
            None => Role::Down,
        };
        clients.push((node, client, role));
    }
    let writer = clients
        .iter()
        .find(|(_, _, role)| *role == Role::Primary)
        .and_then(|(_, client, _)| client.as_ref());
    let mut out = Vec::new();
    for (node, client, role) in &clients {
        let lag_bytes = match (writer, client, role) {
            (Some(writer), Some(client), Role::Standby) => {
                replication_lag_bytes(writer, client).await.ok().flatten()
            }
            _ => None,
        };
        out.push(NodeStatus {
            name: node.name().to_string(),
            role: *role,
            port: node.port(),
            pid: node.postmaster_pid(),
            data_dir: node.data_dir().to_path_buf(),
            lag_bytes,
            huge_pages: node
                .shared_memory_pages()
                .map(|pages| pages == SharedMemoryPages::Huge),
        });
    }
    out
}

/// The role of the node behind `client`: [`Role::Standby`] when in recovery.
pub async fn node_role(client: &Client) -> Result<Role> {
    let row = client
        .query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
        .await
        .map_err(ClusterError::sql("asking pg_is_in_recovery()"))?;
    let in_recovery: bool = row.get(0);
    Ok(if in_recovery {
        Role::Standby
    } else {
        Role::Primary
    })
}

/// How many huge pages the node behind `client` needs for its shared memory
/// (`shared_memory_size_in_huge_pages`, PostgreSQL 15 and later); None when the server
/// does not tell (an older version, or -1: huge pages not supported).
pub async fn huge_pages_needed(client: &Client) -> Option<u64> {
    let text = client_text(client, "SHOW shared_memory_size_in_huge_pages")
        .await
        .ok()??;
    text.parse::<i64>().ok().and_then(|n| u64::try_from(n).ok())
}

/// The primary's current WAL write position, as a byte position.
pub async fn current_wal_lsn(primary: &Client) -> Result<u64> {
    let row = client_text(primary, "SELECT pg_catalog.pg_current_wal_lsn()::text").await?;
    row.as_deref().and_then(parse_lsn).ok_or_else(|| {
        ClusterError::Inconsistent("pg_current_wal_lsn() returned no position".into())
    })
}

/// The last WAL position a standby has replayed (None on a primary).
pub async fn replay_lsn(standby: &Client) -> Result<Option<u64>> {
    let text = client_text(standby, "SELECT pg_catalog.pg_last_wal_replay_lsn()::text").await?;
    Ok(text.as_deref().and_then(parse_lsn))
}

/// Bytes of WAL written on `primary` that `standby` has not replayed yet; None when
/// `standby` is not in recovery. Zero when the standby is at or past the sampled position.
pub async fn replication_lag_bytes(primary: &Client, standby: &Client) -> Result<Option<u64>> {
    let primary_lsn = current_wal_lsn(primary).await?;
    let replayed = replay_lsn(standby).await?;
    Ok(replayed.map(|replayed| primary_lsn.saturating_sub(replayed)))
}

/// Formats a byte position as an LSN in PostgreSQL's `X/X` form.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parses an LSN in PostgreSQL's `XXXXXXXX/XXXXXXXX` form.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    let hi = u32::from_str_radix(hi, 16).ok()?;
    let lo = u32::from_str_radix(lo, 16).ok()?;
    Some((u64::from(hi) << 32) | u64::from(lo))
}

async fn client_text(client: &Client, sql: &str) -> Result<Option<String>> {
    let row = client
        .query_one(sql, &[])
        .await
        .map_err(ClusterError::sql(format!("running {sql}")))?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lsns() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        assert_eq!(parse_lsn("garbage"), None);
        assert_eq!(parse_lsn("1/zz"), None);
        assert_eq!(format_lsn((0x16 << 32) | 0xB374_D848), "16/B374D848");
        assert_eq!(parse_lsn(&format_lsn(12345)), Some(12345));
    }

    #[test]
    fn roles_serialize_lowercase() {
        let status = NodeStatus {
            name: "primary".into(),
            role: Role::Primary,
            port: 5432,
            pid: Some(7),
            data_dir: PathBuf::from("/d"),
            lag_bytes: None,
            huge_pages: Some(false),
        };
        let text = toml::to_string(&status).expect("serialize");
        assert!(text.contains("role = \"primary\""), "{text}");
    }
}
