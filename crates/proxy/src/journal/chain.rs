//! A transaction chained to one that committed (`COMMIT AND CHAIN`): the
//! unit ends at that commit, so the committed transaction goes to the
//! commit log like any other, and the chained transaction is a unit of its
//! own — one that runs in a transaction block it did not open. Once it
//! commits it is kept like any other, and applied again behind a BEGIN.
//!
//! The chained transaction keeps the isolation level, read-only and
//! deferrable modes of the one before, which a plain `BEGIN` on a new
//! server would not give it. So it is replayed behind the statement that
//! opened the chain's first transaction ([`Chain::opening`]: `BEGIN
//! ISOLATION LEVEL …`, sent again as the client sent it), and only while
//! that statement tells its characteristics: no statement of the chain may
//! have changed them or their session defaults (`SET TRANSACTION`,
//! `default_transaction_isolation`, …, see
//! `commit_sql::changes_transaction_characteristics`).

use understudy_protocol::backend::TransactionStatus;
use understudy_protocol::frontend;

use super::{Journal, NotReplayable};
use crate::commit_sql;

/// The chain the open unit's transaction belongs to.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The statement that opened the chain's first transaction, when it
    /// tells the characteristics every transaction of the chain has.
    opening: Option<String>,
}

impl Journal {
    /// At a ReadyForQuery that leaves a transaction open after request
    /// `i`, in whose reply a transaction committed: when that was a lone
    /// `COMMIT AND CHAIN` with nothing but Syncs and Flushes behind it, the
    /// unit ends there and the chained transaction starts a new one. False
    /// (nothing done) otherwise: another statement ran after the commit, in
    /// the same request or pipelined behind it, or an earlier transaction
    /// of the unit committed.
    pub(super) fn end_at_chained_commit(&mut self, i: usize) -> bool {
        let requests = &self.requests[..=i];
        let Some(commit) = requests.iter().rposition(|r| r.reply.committed) else {
            return false;
        };
        let alone = !self.committed_inside
            && !requests[..commit].iter().any(|r| r.reply.committed)
            && requests[commit + 1..]
                .iter()
                .all(|r| matches!(r.tag, frontend::tag::SYNC | frontend::tag::FLUSH));
        if !alone || !self.request_chains(commit) {
            return false;
        }
        let opening = self.opening_chained_by(commit);
        self.end_unit(i + 1, true);
        if opening.is_none() {
            self.block_unit(NotReplayable::ChainedTransaction);
        }
        self.chain = Some(Chain { opening });
        true
    }

    /// The statement that opens, on a new server, the transaction the
    /// `COMMIT AND CHAIN` of request `commit` chains to the open one: the
    /// open chain's, or the open unit's own `BEGIN`; none when a statement
    /// up to that request changed the characteristics.
    pub fn opening_chained_by(&self, commit: usize) -> Option<String> {
        match &self.chain {
            Some(chain) => chain.opening.clone(),
            None => self.transaction_opening(commit),
        }
        .filter(|_| !self.changes_characteristics(commit + 1))
    }

    /// After a `COMMIT AND CHAIN` in flight at a failover that the ledger
    /// shows committed: the open unit is done with, and the session is in
    /// the chained transaction, which `opening` opened on the new server.
    pub fn continue_chain(&mut self, opening: String) {
        self.abandon_unit(TransactionStatus::InTransaction);
        self.chain = Some(Chain {
            opening: Some(opening),
        });
    }

    /// True when the request at index `i` runs a `COMMIT AND CHAIN` (a
    /// Query, or an Execute of one).
    pub fn request_chains(&self, i: usize) -> bool {
        i < self.requests.len()
            && self
                .statement_text(i)
                .is_some_and(commit_sql::is_commit_and_chain)
    }

    /// The statement that opens the chained transaction the open unit runs
    /// in, to be sent before the unit is replayed on a new server.
    pub fn chain_opening(&self) -> Option<&str> {
        self.chain.as_ref()?.opening.as_deref()
    }

    /// Whether the open unit can be replayed as far as its chain goes: not
    /// once one of its statements changed the transaction's characteristics.
    pub(super) fn chain_replayable(&self) -> Result<(), NotReplayable> {
        match &self.chain {
            Some(_) if self.changes_characteristics(self.requests.len()) => {
                Err(NotReplayable::ChainedTransaction)
            }
            _ => Ok(()),
        }
    }

    /// The text of the statement among the first `upto + 1` requests that
    /// opened the transaction (`BEGIN …`, `START TRANSACTION …`), alone in
    /// its request.
    fn transaction_opening(&self, upto: usize) -> Option<String> {
        (0..=upto)
            .filter_map(|k| self.statement_text(k))
            .find(|text| commit_sql::starts_transaction(text))
            .and_then(|text| std::str::from_utf8(text).ok())
            .map(str::to_owned)
    }

    /// True when one of the first `count` requests may have changed the
    /// transaction's characteristics or their session defaults.
    fn changes_characteristics(&self, count: usize) -> bool {
        (0..count.min(self.requests.len()))
            .filter_map(|k| self.statement_text(k))
            .any(commit_sql::changes_transaction_characteristics)
    }
}
