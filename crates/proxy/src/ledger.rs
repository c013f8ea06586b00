//! The commit ledger: how a COMMIT whose acknowledgement was lost in a
//! failover is resolved exactly once (docs/decisions/0001).
//!
//! When a client commits a transaction, the proxy sends, in the same write
//! and inside that transaction, `SELECT understudy.stamp_written(<token>)`:
//! if the transaction wrote anything (it has a transaction id) the token is
//! inserted into `understudy.ledger`, so the token exists exactly when the
//! transaction committed, and the function returns it (`SELECT 1`); a
//! transaction that wrote nothing gets no row and no token (`SELECT 0`),
//! and is not kept in the commit log: the ledger could not tell later
//! whether a new primary has it, and applying it again — after later
//! writes — could change what they did. After a failover, `understudy.committed(<token>)`
//! on the new primary tells whether the COMMIT in flight took effect there.
//! The table and both functions live in each database clients use; they are
//! created on first use by `auth.auth_user`. In the background, old rows
//! are deleted and the index's new ranges summarized.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::Mutex;
use understudy_config::Config;

use crate::topology::{self, TopologyRx};
use crate::writing_functions::{self, Routines, WritingFunctions};

/// Creates the ledger objects; safe to run again.
///
/// Tokens grow with time (microseconds since the epoch in the high bits),
/// so a BRIN index finds one cheaply while costing next to nothing per
/// insert: the stamp sits on every write transaction's commit path, inside
/// its locks. The functions name every object with its schema and set no
/// `search_path` (saving a settings push and pop per call); functions are
/// never looked up in `pg_temp`, so nothing can stand in for them.
const SETUP: &str = "
CREATE SCHEMA IF NOT EXISTS understudy;
CREATE TABLE IF NOT EXISTS understudy.ledger (token bigint NOT NULL);
CREATE INDEX IF NOT EXISTS ledger_token ON understudy.ledger USING brin (token);
CREATE OR REPLACE FUNCTION understudy.stamp_written(token bigint) RETURNS SETOF bigint
    LANGUAGE plpgsql SECURITY DEFINER AS $$
BEGIN
    IF pg_catalog.txid_current_if_assigned() IS NOT NULL THEN
        INSERT INTO understudy.ledger (token) VALUES (stamp_written.token);
        RETURN NEXT stamp_written.token;
    END IF;
END $$;
CREATE OR REPLACE FUNCTION understudy.committed(token bigint) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER AS $$
    SELECT EXISTS (SELECT 1 FROM understudy.ledger l WHERE l.token = committed.token)
$$;
CREATE OR REPLACE FUNCTION understudy.committed_among(tokens bigint[]) RETURNS SETOF bigint
    LANGUAGE sql STABLE SECURITY DEFINER AS $$
    SELECT l.token FROM understudy.ledger l
    WHERE l.token BETWEEN (SELECT pg_catalog.min(t) FROM pg_catalog.unnest(committed_among.tokens) t)
                      AND (SELECT pg_catalog.max(t) FROM pg_catalog.unnest(committed_among.tokens) t)
      AND l.token = ANY (committed_among.tokens)
$$;
REVOKE ALL ON understudy.ledger FROM PUBLIC;
GRANT USAGE ON SCHEMA understudy TO PUBLIC;
GRANT EXECUTE ON FUNCTION understudy.stamp_written(bigint), understudy.committed(bigint),
    understudy.committed_among(bigint[]) TO PUBLIC;
";

/// Bits of a token below its timestamp: a counter of this process.
const TOKEN_COUNTER_BITS: u32 = 22;
/// Tokens count milliseconds from 2025-01-01 (room for 69 years).
const TOKEN_EPOCH_MS: u64 = 1_735_689_600_000;

/// Tokens handed out by this process.
static TOKENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How long ledger rows are kept: far longer than any failover takes.
const RETENTION: Duration = Duration::from_secs(600);
/// How often old rows are deleted, in upkeep periods (each
/// [`writing_functions::REFRESH_EVERY`]).
const CLEAN_EVERY_PERIODS: u32 = 6;
/// Summarizes the ranges of the ledger's index not summarized yet, at each
/// upkeep period: a BRIN index finds nothing in a range it has not
/// summarized, so a lookup reads every row inserted since the last
/// summary. PostgreSQL summarizes only when it vacuums, which on a busy
/// ledger can be minutes of writes apart (26 ms per lookup over 300 000
/// rows, where a summarized index takes about 1): every session with a
/// COMMIT in flight at a failover makes one lookup.
const SUMMARIZE: &str =
    "SELECT pg_catalog.brin_summarize_new_values('understudy.ledger_token'::pg_catalog.regclass)";

/// The statement sent before a client's COMMIT. Its CommandComplete is
/// `SELECT 1` when the token was recorded, `SELECT 0` when the transaction
/// wrote nothing ([`STAMPED_NOTHING`]).
pub fn stamp_sql(token: i64) -> String {
    format!("SELECT understudy.stamp_written({token})")
}

/// The CommandComplete tag of a stamp whose transaction wrote nothing.
pub const STAMPED_NOTHING: &[u8] = b"SELECT 0";

/// The statement that tells whether a token's transaction committed.
pub fn committed_sql(token: i64) -> String {
    format!("SELECT understudy.committed({token})")
}

/// The statement that lists which of `tokens` belong to committed
/// transactions, one row each. The newest ledger rows are the ones looked
/// up after a failover, and the BRIN index has not summarised them yet, so
/// every lookup reads all of them: one lookup for many tokens (bounded by
/// their lowest and highest, which the index can use) reads them once.
pub fn committed_among_sql(tokens: &[i64]) -> String {
    let list: Vec<String> = tokens.iter().map(i64::to_string).collect();
    format!(
        "SELECT understudy.committed_among('{{{}}}'::bigint[])",
        list.join(",")
    )
}

/// A fresh token for one transaction: milliseconds since 2025, then a
/// counter of this process. Unique within the process (up to four million
/// tokens a millisecond), and growing with time, which keeps the BRIN index
/// useful and makes the cleanup a range delete. Two proxies writing the
/// same ledger would need an instance number in the low bits as well.
pub fn new_token() -> i64 {
    let count = TOKENS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    token_at(std::time::SystemTime::now()) | (count & ((1 << TOKEN_COUNTER_BITS) - 1)) as i64
}

/// The smallest token of a transaction stamped at `at`.
fn token_at(at: std::time::SystemTime) -> i64 {
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
        .saturating_sub(TOKEN_EPOCH_MS);
    (ms << TOKEN_COUNTER_BITS) as i64
}

/// Which databases have a ledger, as far as this proxy knows, and the
/// functions a `SELECT` may write through in each of them.
pub struct Ledgers {
    config: Arc<Config>,
    topology: TopologyRx,
    ready: Mutex<HashMap<String, bool>>,
    functions: std::sync::Mutex<HashMap<String, Arc<WritingFunctions>>>,
}

impl Ledgers {
    /// No database checked yet.
    pub fn new(config: Arc<Config>, topology: TopologyRx) -> Self {
        Ledgers {
            config,
            topology,
            ready: Mutex::new(HashMap::new()),
            functions: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The functions a `SELECT` may write through in `database`, once its
    /// ledger exists ([`Ledgers::ensure`]).
    pub fn writing_functions(&self, database: &str) -> Option<Arc<WritingFunctions>> {
        self.functions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(database)
            .cloned()
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
            Ok(client) => {
                // Read before the first session goes on, so that its first
                // statements are already classified with them.
                let functions = Arc::new(WritingFunctions::default());
                match names_of_writing_functions(&client).await {
                    Ok(names) => functions.replace(names),
                    Err(e) => {
                        tracing::warn!(database, error = %e, "cannot read which functions may write; autocommit SELECTs calling them are not stamped until they are read");
                    }
                }
                self.functions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(database.to_owned(), Arc::clone(&functions));
                let this = Arc::clone(self);
                let name = database.to_owned();
                tokio::spawn(async move { this.upkeep(name, functions, client).await });
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
        .map_err(|e| crate::control::describe_error(&e, &self.config))
    }

    /// Creates what the ledger lacks; returns the connection it used.
    async fn setup(&self, database: &str) -> Result<tokio_postgres::Client, String> {
        let client = self.connect(database).await?;
        let exists: bool = client
            .query_one(
                // The newest object of SETUP: a ledger made by an older
                // version gets what it lacks.
                "SELECT to_regprocedure('understudy.stamp_written(bigint)') IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        if !exists {
            client
                .batch_execute(&format!("BEGIN; {SETUP} COMMIT;"))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(client)
    }

    /// The background work on `database`'s ledger connection (kept open,
    /// and opened again on the current primary when it fails): the names
    /// of the writing functions read again every
    /// [`writing_functions::REFRESH_EVERY`] and at once when a session
    /// defined one; at each of those periods the ledger's index summarized;
    /// every [`CLEAN_EVERY_PERIODS`] periods its old rows deleted.
    async fn upkeep(
        &self,
        database: String,
        functions: Arc<WritingFunctions>,
        client: tokio_postgres::Client,
    ) {
        let mut client = Some(client);
        let mut periods = 0u32;
        loop {
            let period_ended = tokio::select! {
                _ = tokio::time::sleep(writing_functions::REFRESH_EVERY) => true,
                _ = functions.changed() => false,
            };
            if client
                .as_ref()
                .is_none_or(tokio_postgres::Client::is_closed)
            {
                client = match self.connect(&database).await {
                    Ok(client) => Some(client),
                    Err(e) => {
                        tracing::debug!(database, error = %e, "cannot connect for the ledger's upkeep");
                        continue;
                    }
                };
            }
            let Some(connected) = &client else {
                continue;
            };
            match names_of_writing_functions(connected).await {
                Ok(names) => functions.replace(names),
                Err(e) => {
                    tracing::debug!(database, error = %e, "cannot read which functions may write");
                    client = None;
                    continue;
                }
            }
            if !period_ended {
                continue;
            }
            periods += 1;
            let mut statements = vec![SUMMARIZE.to_owned()];
            if periods.is_multiple_of(CLEAN_EVERY_PERIODS) {
                let oldest = token_at(std::time::SystemTime::now() - RETENTION);
                statements.push(format!(
                    "DELETE FROM understudy.ledger WHERE token < {oldest}"
                ));
            }
            for sql in statements {
                // A server error (not the index's owner, say) leaves the
                // other statement to run.
                if let Err(e) = connected.batch_execute(&sql).await {
                    tracing::debug!(database, error = %e, sql, "ledger upkeep failed");
                }
            }
        }
    }
}

/// The routines [`writing_functions::QUERY`] returns.
async fn names_of_writing_functions(client: &tokio_postgres::Client) -> Result<Routines, String> {
    let rows = client
        .query(writing_functions::QUERY, &[])
        .await
        .map_err(|e| e.to_string())?;
    let mut routines = Routines::default();
    for row in &rows {
        let name: String = row.try_get(0).map_err(|e| e.to_string())?;
        let kind: &str = row.try_get(1).map_err(|e| e.to_string())?;
        routines.add(name.into_bytes(), kind);
    }
    Ok(routines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_positive_and_grow_with_time() {
        let a = new_token();
        let b = new_token();
        assert!(a > 0 && b > 0 && a != b);
        let later = token_at(std::time::SystemTime::now() + std::time::Duration::from_millis(5));
        assert!(later > a.max(b));
        let old = token_at(std::time::SystemTime::now() - RETENTION);
        assert!(old < a);
    }
}
