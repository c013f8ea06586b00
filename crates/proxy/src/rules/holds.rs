//! Tables held for maintenance: a proxy-wide set, changed by the admin
//! endpoint (`understudy maintenance start <table…>` / `end`). A session
//! whose next statement touches a held table stops reading its client
//! before that statement (the client sees a slow server; the connection
//! and the replies to its earlier requests keep flowing) until the table is
//! released, or until the rules file's `hold_timeout_ms`, after which the
//! statement fails with `55P03` and a message saying why.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::metrics::{self, ProxyMetrics};

/// Counts a statement in `understudy_held_statements` while it waits.
struct Waiting(Arc<ProxyMetrics>);

impl Waiting {
    fn new(metrics: Arc<ProxyMetrics>) -> Self {
        metrics::inc(&metrics.held_statements);
        Waiting(metrics)
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::dec(&self.0.held_statements);
    }
}
use understudy_rules::names::TablePattern;
use understudy_rules::TableName;

/// The held tables.
#[derive(Debug, Default)]
pub struct HeldSet(Vec<TablePattern>);

impl HeldSet {
    /// The first of `tables` that is held.
    pub fn holding<'a>(&self, tables: &'a [TableName]) -> Option<&'a TableName> {
        tables.iter().find(|t| self.0.iter().any(|p| p.matches(t)))
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The held tables as written.
    pub fn names(&self) -> Vec<String> {
        self.0.iter().map(ToString::to_string).collect()
    }
}

/// The proxy-wide registry.
pub struct Holds {
    tx: watch::Sender<Arc<HeldSet>>,
}

impl Default for Holds {
    fn default() -> Self {
        Holds {
            tx: watch::channel(Arc::new(HeldSet::default())).0,
        }
    }
}

impl Holds {
    /// Holds `tables` (in addition to those already held). Returns every
    /// held table.
    pub fn start(&self, tables: &[String]) -> Result<Vec<String>, String> {
        let mut patterns = Vec::with_capacity(tables.len());
        for t in tables {
            patterns.push(TablePattern::parse(t).ok_or_else(|| {
                format!("\"{t}\" is not a table name (write name or schema.name)")
            })?);
        }
        if patterns.is_empty() {
            return Err("name at least one table to hold".into());
        }
        let mut all = Vec::new();
        self.tx.send_modify(|held| {
            let mut set = held.0.clone();
            for p in patterns {
                if !set.contains(&p) {
                    set.push(p);
                }
            }
            all = set.iter().map(ToString::to_string).collect();
            *held = Arc::new(HeldSet(set));
        });
        Ok(all)
    }

    /// Releases every held table; the sessions waiting go on in order.
    pub fn end(&self) {
        self.tx.send_replace(Arc::new(HeldSet::default()));
    }

    /// The held tables now.
    pub fn current(&self) -> Arc<HeldSet> {
        self.tx.borrow().clone()
    }

    /// A receiver for sessions.
    pub fn subscribe(&self) -> watch::Receiver<Arc<HeldSet>> {
        self.tx.subscribe()
    }
}

/// What a session waited for, and how it ended.
#[derive(Debug)]
pub enum WaitOutcome {
    /// The tables were released.
    Released,
    /// The wait timed out: the statement is refused with this message.
    Expired(String),
    /// Column names of a table, looked up for `COPY … TO` masking.
    Columns(TableName, Option<Vec<String>>),
}

/// Waits until none of `tables` is held, at most `timeout`.
pub async fn wait_released(
    mut rx: watch::Receiver<Arc<HeldSet>>,
    tables: Vec<TableName>,
    timeout: Duration,
    metrics: Arc<ProxyMetrics>,
) -> WaitOutcome {
    let _waiting = Waiting::new(metrics);
    let started = Instant::now();
    let released = async {
        loop {
            if rx.borrow_and_update().holding(&tables).is_none() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    };
    match tokio::time::timeout(timeout, released).await {
        Ok(()) => WaitOutcome::Released,
        Err(_) => {
            let held = rx.borrow().holding(&tables).map(ToString::to_string);
            WaitOutcome::Expired(format!(
                "table {} is held for maintenance; the statement waited {} ms",
                held.unwrap_or_default(),
                started.elapsed().as_millis()
            ))
        }
    }
}
