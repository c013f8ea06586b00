//! The commit ledger: how a COMMIT whose acknowledgement was lost in a
//! failover is resolved exactly once (docs/decisions/0001).
//!
//! When a client commits a transaction, the proxy sends, in the same write
//! and inside that transaction, `SELECT understudy.stamp(<token>)`: if the
//! transaction wrote anything (it has a transaction id) the token is
//! inserted into `understudy.ledger`, so the token exists exactly when the
//! transaction committed. After a failover, `understudy.committed(<token>)`
//! on the new primary tells whether the COMMIT in flight took effect there.
//! The table and both functions live in each database clients use; they are
//! created on first use by `auth.auth_user`. Old rows are deleted in the
//! background.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use understudy_config::Config;

use crate::topology::{self, TopologyRx};

/// Creates the ledger objects; safe to run again.
const SETUP: &str = "
CREATE SCHEMA IF NOT EXISTS understudy;
CREATE TABLE IF NOT EXISTS understudy.ledger (
    token bigint NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS ledger_token ON understudy.ledger USING hash (token);
CREATE OR REPLACE FUNCTION understudy.stamp(token bigint) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF txid_current_if_assigned() IS NOT NULL THEN
        INSERT INTO understudy.ledger (token) VALUES (stamp.token);
    END IF;
END $$;
CREATE OR REPLACE FUNCTION understudy.committed(token bigint) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM understudy.ledger l WHERE l.token = committed.token)
$$;
REVOKE ALL ON understudy.ledger FROM PUBLIC;
GRANT USAGE ON SCHEMA understudy TO PUBLIC;
GRANT EXECUTE ON FUNCTION understudy.stamp(bigint), understudy.committed(bigint) TO PUBLIC;
";

/// How long ledger rows are kept: far longer than any failover takes.
const RETENTION: &str = "10 minutes";
/// How often old rows are deleted.
const CLEAN_EVERY: Duration = Duration::from_secs(60);

/// The statement sent before a client's COMMIT.
pub fn stamp_sql(token: i64) -> String {
    format!("SELECT understudy.stamp({token})")
}

/// The statement that tells whether a token's transaction committed.
pub fn committed_sql(token: i64) -> String {
    format!("SELECT understudy.committed({token})")
}

/// A fresh token for one transaction.
pub fn new_token() -> i64 {
    (rand::random::<u64>() >> 1) as i64
}

/// Which databases have a ledger, as far as this proxy knows.
pub struct Ledgers {
    config: Arc<Config>,
    topology: TopologyRx,
    ready: Mutex<HashMap<String, bool>>,
}

impl Ledgers {
    /// No database checked yet.
    pub fn new(config: Arc<Config>, topology: TopologyRx) -> Self {
        Ledgers {
            config,
            topology,
            ready: Mutex::new(HashMap::new()),
        }
    }

    /// True when `database` has the ledger (creating it if needed). A
    /// database where it cannot be created runs without exactly-once
    /// commits across failovers; that is logged once.
    pub async fn ensure(self: &Arc<Self>, database: &str) -> bool {
        let mut ready = self.ready.lock().await;
        if let Some(&ok) = ready.get(database) {
            return ok;
        }
        let ok = match self.setup(database).await {
            Ok(()) => {
                let this = Arc::clone(self);
                let database = database.to_owned();
                tokio::spawn(async move { this.clean(database).await });
                true
            }
            Err(e) => {
                tracing::warn!(database, error = %e, "cannot create the commit ledger; commits in flight during a failover will not be resolved in this database");
                false
            }
        };
        ready.insert(database.to_owned(), ok);
        ok
    }

    async fn connect(&self, database: &str) -> Result<tokio_postgres::Client, String> {
        let mut topology = self.topology.clone();
        let timeout = self.config.backend.connect_timeout();
        let primary = topology::wait_for_primary(&mut topology, timeout)
            .await
            .ok_or("no primary server is available")?;
        crate::control::connect(
            &self.config,
            &primary.host,
            primary.port,
            database,
            "understudy-ledger",
            timeout,
        )
        .await
        .map_err(|e| e.to_string())
    }

    async fn setup(&self, database: &str) -> Result<(), String> {
        let client = self.connect(database).await?;
        let exists: bool = client
            .query_one(
                "SELECT to_regprocedure('understudy.committed(bigint)') IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if exists {
            return Ok(());
        }
        client
            .batch_execute(&format!("BEGIN; {SETUP} COMMIT;"))
            .await
            .map_err(|e| e.to_string())
    }

    async fn clean(&self, database: String) {
        loop {
            tokio::time::sleep(CLEAN_EVERY).await;
            let sql = format!(
                "DELETE FROM understudy.ledger WHERE committed_at < now() - interval '{RETENTION}'"
            );
            match self.connect(&database).await {
                Ok(client) => {
                    if let Err(e) = client.batch_execute(&sql).await {
                        tracing::debug!(database, error = %e, "ledger cleanup failed");
                    }
                }
                Err(e) => tracing::debug!(database, error = %e, "ledger cleanup could not connect"),
            }
        }
    }
}
