//! Promoting the standby: `pg_ctl promote` (or `pg_promote()` on a connection the
//! caller kept open, which spares starting a program), then waiting (polling every few
//! ms, finer than the 100 ms steps of `pg_ctl promote -w` and `pg_promote(true)`) until
//! it really accepts writes; and the physical replication slot the next standby will use:
//! reserved on the standby before a failover's promotion, made sure of on the new
//! primary once it is published. Every step may be repeated: a
//! node that is already promoted is only checked.

use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::Client;

use crate::embedded::STANDBY_SLOT;
use crate::error::{ClusterError, Result};
use crate::node::{Credentials, Node};
use crate::status::{self, Role};

/// How long a promoted node may take to accept writes.
const WRITABLE_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between checks.
const POLL: Duration = Duration::from_millis(2);
/// Bound on one connection attempt while waiting.
const CONNECT: Duration = Duration::from_secs(2);
/// How long a promotion may look stalled before it is asked for again. Asked to promote
/// just as its stream from the old primary ends (a switchover promotes while the old
/// primary is still exiting), PostgreSQL's startup process can go to sleep waiting for
/// WAL for `wal_retrieve_retry_interval` (5 s by default) before it acts on the request;
/// its log then shows "waiting for WAL to become available". Another request wakes it.
const REQUEST_AGAIN: Duration = Duration::from_millis(20);

/// Promotes `node` and waits until it accepts writes; returns a description of what
/// was done for the event log.
pub(super) async fn promote(node: &mut Node, creds: &Credentials) -> Result<String> {
    let observer = node.clone();
    let (client, requested) = tokio::join!(
        observer.connect_within(creds, "postgres", CONNECT),
        node.request_promotion()
    );
    let mut client = client.ok();
    let done = match requested {
        Ok(()) => "pg_ctl promote, accepts writes",
        Err(e) => {
            // pg_ctl refuses a server that is not in recovery: promoted by an earlier
            // attempt. Anything else is a real failure.
            let role = match &client {
                Some(c) => status::node_role(c).await.ok(),
                None => None,
            };
            if role != Some(Role::Primary) {
                return Err(e);
            }
            "already promoted, accepts writes"
        }
    };
    wait_writable(node, creds, &mut client).await?;
    Ok(done.to_string())
}

/// Promotes `node` with `pg_promote()` on `client`, a connection to it opened earlier,
/// and waits until it accepts writes on that connection (a new one if it breaks).
/// Returns a description of what was done for the event log.
pub(super) async fn promote_on(node: &Node, creds: &Credentials, client: Client) -> Result<String> {
    let requested = client
        .simple_query("SELECT pg_catalog.pg_promote(false)")
        .await;
    let mut client = Some(client);
    let done = match requested {
        Ok(_) => "pg_promote, accepts writes",
        Err(e) => {
            // PostgreSQL refuses a server that is not in recovery: promoted already.
            // Anything else is a real failure.
            let role = match &client {
                Some(c) => status::node_role(c).await.ok(),
                None => None,
            };
            if role != Some(Role::Primary) {
                return Err(ClusterError::sql(format!(
                    "promoting node {} with pg_promote()",
                    node.name()
                ))(e));
            }
            "already promoted, accepts writes"
        }
    };
    wait_writable(node, creds, &mut client).await?;
    Ok(done.to_string())
}

/// Polls until `node` is out of recovery and can assign a transaction id (a write).
async fn wait_writable(
    node: &Node,
    creds: &Credentials,
    client: &mut Option<Client>,
) -> Result<()> {
    let deadline = Instant::now() + WRITABLE_DEADLINE;
    let mut requested = Instant::now();
    loop {
        let last_error = match writable(node, creds, client).await {
            Ok(true) => return Ok(()),
            Ok(false) => {
                if requested.elapsed() >= REQUEST_AGAIN {
                    if let Some(c) = client.as_ref() {
                        // Refused once the server is out of recovery: promoted then.
                        let _ = c.simple_query("SELECT pg_catalog.pg_promote(false)").await;
                    }
                    requested = Instant::now();
                }
                "still in recovery".to_string()
            }
            Err(e) => {
                *client = None;
                e
            }
        };
        if Instant::now() >= deadline {
            return Err(ClusterError::Inconsistent(format!(
                "node {} does not accept writes {} s after its promotion ({last_error}); see {}",
                node.name(),
                WRITABLE_DEADLINE.as_secs(),
                node.log_file().display()
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One check on a kept connection (opened when missing).
async fn writable(
    node: &Node,
    creds: &Credentials,
    client: &mut Option<Client>,
) -> std::result::Result<bool, String> {
    if client.is_none() {
        *client = Some(
            node.connect_within(creds, "postgres", CONNECT)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let Some(c) = client.as_ref() else {
        return Err("no connection".into());
    };
    let messages = c
        .simple_query("SELECT pg_catalog.txid_current() WHERE NOT pg_catalog.pg_is_in_recovery()")
        .await
        .map_err(|e| e.to_string())?;
    Ok(messages
        .iter()
        .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_))))
}

/// Creates, on the standby about to be promoted (`client` is connected to it), the
/// physical slot [`STANDBY_SLOT`] the old primary will follow it with, reserving WAL
/// from the standby's last restartpoint on, after dropping one left from an earlier
/// time. Once rewound, the old primary replays from its last checkpoint before the two
/// histories parted, which is at or after that restartpoint; without the slot, the
/// checkpoint PostgreSQL starts at the promotion may remove that WAL before the rebuild
/// asks for it, and the rewound node waits for WAL that is gone until the rebuild falls
/// back to a full base backup. Done before the promotion, while the old primary is
/// fenced, so it costs the failover nothing.
pub(super) async fn reserve_wal_for_old_primary(node: &Node, client: &Client) -> Result<()> {
    create_slot(node, client).await
}

/// Makes sure the new primary has the physical slot [`STANDBY_SLOT`] for the rebuilt
/// standby: the one reserved before the promotion is kept (it holds the WAL a rewound
/// node needs); without one, a slot reserving WAL from now on is created. Done after
/// publishing: only the rebuilt standby needs it.
pub(super) async fn prepare_slot(node: &Node, creds: &Credentials) -> Result<()> {
    let client = node.connect_within(creds, "postgres", CONNECT).await?;
    let reserved = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_replication_slots \
             WHERE slot_name = $1 AND restart_lsn IS NOT NULL",
            &[&STANDBY_SLOT],
        )
        .await
        .map_err(ClusterError::sql(slot_context("looking up the", node)))?;
    if reserved.is_some() {
        return Ok(());
    }
    create_slot(node, &client).await
}

/// Drops [`STANDBY_SLOT`] if `node` has it, and creates it reserving WAL at once.
async fn create_slot(node: &Node, client: &Client) -> Result<()> {
    client
        .execute(
            "SELECT pg_catalog.pg_drop_replication_slot(slot_name) \
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&STANDBY_SLOT],
        )
        .await
        .map_err(ClusterError::sql(slot_context("dropping the stale", node)))?;
    client
        .execute(
            "SELECT pg_catalog.pg_create_physical_replication_slot($1, true)",
            &[&STANDBY_SLOT],
        )
        .await
        .map_err(ClusterError::sql(slot_context("creating", node)))?;
    Ok(())
}

fn slot_context(what: &str, node: &Node) -> String {
    format!(
        "{what} replication slot {STANDBY_SLOT} on node {}",
        node.name()
    )
}
