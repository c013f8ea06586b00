//! Rules on the wire: the proxy-wide rule set (loaded from the rules file,
//! swapped on reload without touching sessions), and each session's use of
//! it.
//!
//! # Layout
//! - [`client`]: Query and Parse held, rewritten or refused.
//! - [`results`]: which request the server's replies belong to, and the
//!   masking of DataRows.
//! - [`copy_data`]: masking `COPY … TO STDOUT` rows (text, CSV, binary).
//! - [`holds`]: tables held for maintenance and the wait of a session.
//! - this module: [`Rules`] (load, reload) and [`SessionRulesState`].
//!
//! Cost: with no rules for a session and nothing held, a Query or Parse
//! costs two channel reads and nothing is parsed; without mask rules the
//! replies are not followed at all.

pub mod client;
pub mod copy_data;
pub mod holds;
pub mod results;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::watch;
use understudy_rules::{ClientInfo, RuleSet, RulesError, SessionRules};

/// The proxy's rules: where they come from and the version in force.
pub struct Rules {
    path: Option<PathBuf>,
    tx: watch::Sender<Arc<RuleSet>>,
}

impl Rules {
    /// Loads the rules file at `path` (empty: no rules).
    pub fn load(path: &str) -> Result<Rules, RulesError> {
        let (set, path) = if path.is_empty() {
            (RuleSet::default(), None)
        } else {
            (RuleSet::from_file(path)?, Some(PathBuf::from(path)))
        };
        let (tx, _) = watch::channel(Arc::new(set));
        Ok(Rules { path, tx })
    }

    /// True when a rules file is configured (even if it has no rules yet).
    pub fn configured(&self) -> bool {
        self.path.is_some()
    }

    /// Reads the rules file again and puts it in force; sessions pick it up
    /// at their next statement. On error the rules in force stay. Returns
    /// the number of rules now in force.
    pub fn reload(&self) -> Result<usize, RulesError> {
        let Some(path) = &self.path else {
            return Ok(0);
        };
        let set = RuleSet::from_file(path)?;
        let count = set.rules.len();
        self.tx.send_replace(Arc::new(set));
        Ok(count)
    }

    /// The rule set in force.
    pub fn current(&self) -> Arc<RuleSet> {
        self.tx.borrow().clone()
    }

    /// A session's view of the rules and holds.
    pub fn for_session(
        &self,
        client: ClientInfo,
        holds: &holds::Holds,
        metrics: Arc<crate::metrics::ProxyMetrics>,
    ) -> Box<SessionRulesState> {
        let mut rx = self.tx.subscribe();
        let set = rx.borrow_and_update().clone();
        let session = set.for_client(&client);
        let mut results = results::ResultTracker::default();
        results.set_fallback(session.fallback_mask());
        let tracking = session.masks();
        let mut held = holds.subscribe();
        let held_latest = Arc::clone(&held.borrow_and_update());
        Box::new(SessionRulesState {
            session,
            client,
            rx,
            results,
            held_latest,
            held,
            metrics,
            waiting: None,
            refused_after_wait: None,
            table_columns: std::collections::HashMap::new(),
            column_lookup: None,
            tracking,
            refusals: client::Refusals::default(),
            prepared: std::collections::HashMap::new(),
        })
    }
}

/// Looks up the column names of a table (for `COPY table TO` masking);
/// `None` when the lookup fails.
pub type ColumnLookup = Arc<
    dyn Fn(understudy_rules::TableName) -> Pin<Box<dyn Future<Output = Option<Vec<String>>> + Send>>
        + Send
        + Sync,
>;

/// One session's rules and what it tracks to apply them.
pub struct SessionRulesState {
    rx: watch::Receiver<Arc<RuleSet>>,
    client: ClientInfo,
    /// The rules that apply to this session.
    pub session: SessionRules,
    /// Which result the server's rows belong to, and their masks.
    pub results: results::ResultTracker,
    held: watch::Receiver<Arc<holds::HeldSet>>,
    /// The held set as last seen on `held`.
    held_latest: Arc<holds::HeldSet>,
    metrics: Arc<crate::metrics::ProxyMetrics>,
    /// What the session waits for before reading its client again.
    waiting: Option<Pin<Box<dyn Future<Output = holds::WaitOutcome> + Send>>>,
    /// The next held statement is refused with this message (its wait
    /// timed out).
    refused_after_wait: Option<String>,
    /// Column names of tables, for `COPY … TO` masking.
    table_columns: std::collections::HashMap<understudy_rules::TableName, Vec<String>>,
    /// How column names are looked up.
    column_lookup: Option<ColumnLookup>,
    /// Some rule masks results: requests and replies are followed.
    tracking: bool,
    /// Refusals of Parse messages, whose errors the relay rewrites.
    pub refusals: client::Refusals,
    /// The text of each prepared statement.
    prepared: std::collections::HashMap<Vec<u8>, Arc<str>>,
}

impl SessionRulesState {
    /// True when requests and replies are followed to mask rows (some
    /// rule masks results for this session).
    pub fn tracking(&self) -> bool {
        self.tracking
    }

    /// Sets how column names are looked up for `COPY table TO` masking.
    pub fn set_column_lookup(&mut self, lookup: ColumnLookup) {
        self.column_lookup = Some(lookup);
    }

    /// True while the session waits (for a held table, or a lookup)
    /// before reading its client again.
    pub fn is_waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Polls what the session waits for; `true` when the wait is over and
    /// the client may be read again.
    pub fn poll_wait(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(waiting) = self.waiting.as_mut() else {
            return false;
        };
        let Poll::Ready(outcome) = waiting.as_mut().poll(cx) else {
            return false;
        };
        self.waiting = None;
        match outcome {
            holds::WaitOutcome::Released => {}
            holds::WaitOutcome::Expired(message) => self.refused_after_wait = Some(message),
            holds::WaitOutcome::Columns(table, columns) => {
                // A failed lookup leaves no names: the COPY's values are
                // then all masked.
                self.table_columns
                    .insert(table, columns.unwrap_or_default());
            }
        }
        true
    }

    /// Takes up a reloaded rule set, if there is one.
    pub fn refresh(&mut self) {
        if self.rx.has_changed().unwrap_or(false) {
            let set = self.rx.borrow_and_update().clone();
            self.session = set.for_client(&self.client);
            self.results.set_fallback(self.session.fallback_mask());
            let tracking = self.session.masks();
            if tracking != self.tracking {
                // Replies in flight were not followed (or no longer need
                // to be): start over, masking rows that cannot be placed.
                self.results = results::ResultTracker::default();
                self.results.set_fallback(self.session.fallback_mask());
                self.results.start_late();
                self.tracking = tracking;
            }
        }
    }
}
