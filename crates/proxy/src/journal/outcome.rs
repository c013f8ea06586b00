//! What the open unit may have written: whether its autocommit batch may
//! write, so that its Sync waits for a stamp ([`Journal::batch_may_write`]),
//! and whether a server lost with requests in flight may have committed
//! part of it without the client hearing of it ([`Journal::outcome_unknown`]).
//! Such a unit must not be replayed: it could apply twice. What decides:
//! an autocommit write whose end (Sync or the end of a Query) was sent, a
//! COMMIT that carries no stamp, work after a ROLLBACK in the same batch;
//! what does not: answered requests of an open transaction, statements
//! behind a BEGIN in the same batch, a batch that got an error, a COPY
//! whose rows the client has not completed, and
//! whatever a failed transaction refuses — until the client ends it,
//! PostgreSQL answers every statement with `25P02` and, in the extended
//! protocol, skips the rest of the batch up to its Sync.

use understudy_protocol::backend::TransactionStatus;
use understudy_protocol::frontend;

use super::{cstr_at, Expect, Journal, Reply, Request};
use crate::commit_sql::{
    self, ends_transaction_alone, refused_in_failed_transaction, AutocommitKind,
};

impl Journal {
    /// True when the extended-protocol batch sent since the unit's last Sync
    /// may write: an Execute whose statement is unknown or not harmless to
    /// repeat, or a COPY whose rows the client completed, and nothing in it
    /// that starts or ends a transaction (those batches are not autocommit
    /// writes) and no simple Query. A Sync the server ignored because it
    /// came while a COPY took rows does not end the batch.
    pub fn batch_may_write(&self) -> bool {
        let mut may_write = false;
        let mut rows_completed = false;
        for i in (0..self.requests.len()).rev() {
            let request = &self.requests[i];
            if request.injected {
                continue;
            }
            match request.tag {
                frontend::tag::SYNC if request.reply.done && request.reply.bytes == 0 => {}
                frontend::tag::SYNC => break,
                frontend::tag::COPY_DONE => rows_completed = true,
                frontend::tag::QUERY | frontend::tag::FUNCTION_CALL => return false,
                frontend::tag::EXECUTE => match self.executed_kind(i) {
                    // A COPY FROM STDIN whose rows are complete commits at
                    // this Sync; the client's rows still to come, it is not
                    // answered before they are.
                    Some(AutocommitKind::NeverHold)
                        if rows_completed
                            && self
                                .executed_text(i)
                                .is_some_and(crate::commit_sql::is_copy) =>
                    {
                        may_write = true
                    }
                    Some(AutocommitKind::NeverHold) => return false,
                    Some(AutocommitKind::Harmless) => {}
                    Some(AutocommitKind::MayWrite) | None => may_write = true,
                },
                _ => {}
            }
        }
        may_write
    }

    /// True when the lost server may have committed part of the unit
    /// without the client hearing of it, and no ledger stamp can tell: an
    /// implicit transaction that may have written and whose end (Sync or the
    /// end of a Query) was sent, or a COMMIT that carries no stamp. Such a
    /// unit must not be replayed (it could apply twice).
    pub fn outcome_unknown(&self, old: &[Reply]) -> bool {
        let outstanding = |i: usize| old.get(i).is_some_and(|o| !o.done);
        let end_outstanding = self
            .requests
            .iter()
            .enumerate()
            .any(|(i, r)| outstanding(i) && !r.injected && r.expect == Expect::Ready);
        if !end_outstanding || self.commit_token.is_some() {
            return false;
        }
        if self.tx_status == TransactionStatus::Failed && self.refused_as_failed(old) {
            return false;
        }
        let mut explicit = self.tx_status != TransactionStatus::Idle;
        for (i, request) in self.requests.iter().enumerate() {
            // In an open transaction, what was answered committed nothing,
            // whatever it was (even an Execute of a statement that does not
            // exist, whose text is unknown).
            if explicit && !outstanding(i) {
                continue;
            }
            if !explicit && request.tag == frontend::tag::EXECUTE && self.batch_rolled_back(i, old)
            {
                continue;
            }
            let text = match request.tag {
                frontend::tag::QUERY => self.frame(request).and_then(|f| cstr_at(f, 5)),
                frontend::tag::EXECUTE => self.executed_text(i),
                frontend::tag::FUNCTION_CALL => return true,
                _ => continue,
            };
            if !explicit && self.copy_not_completed(i, text) {
                continue;
            }
            let Some(text) = text else {
                if explicit && self.runs_unknown_named_statement(i) {
                    continue;
                }
                return true;
            };
            if commit_sql::starts_transaction(text) {
                // What follows runs in the transaction block it opens (a
                // driver sends BEGIN in the same batch as the first
                // statement): a Sync does not commit it.
                explicit = true;
                continue;
            }
            let may_commit = explicit
                && (commit_sql::commits(text)
                    || (commit_sql::has_second_statement(text)
                        && commit_sql::mentions_transaction_end(text))
                    || (commit_sql::may_end_transaction(text) && self.writes_after(i, old)));
            if may_commit || (!explicit && !harmless_to_repeat(text)) {
                return true;
            }
        }
        false
    }

    /// True when request `i` is a simple Query of one `COPY … FROM STDIN`
    /// (`text`) whose rows the client has not completed with a CopyDone:
    /// the server is still waiting for them, or the client's CopyFail made
    /// it fail, so the Query has not committed anything. (Parsed: this runs
    /// only when a server is lost.)
    fn copy_not_completed(&self, i: usize, text: Option<&[u8]>) -> bool {
        let completed = |r: &Request| r.tag == frontend::tag::COPY_DONE;
        self.requests[i].tag == frontend::tag::QUERY
            && text.is_some_and(|sql| {
                commit_sql::is_copy(sql)
                    && std::str::from_utf8(sql)
                        .is_ok_and(understudy_rules::lexical::is_copy_from_stdin)
            })
            && !self.requests[i + 1..].iter().any(completed)
    }

    /// True when the extended-protocol batch of request `i` (the messages
    /// between two Syncs) got an error (in `old`, the replies from the lost
    /// server) before which nothing controlled a
    /// transaction: its implicit transaction rolled back, and the rest of
    /// it was skipped.
    fn batch_rolled_back(&self, i: usize, old: &[Reply]) -> bool {
        let is_sync = |r: &Request| r.tag == frontend::tag::SYNC;
        let start = self.requests[..i]
            .iter()
            .rposition(is_sync)
            .map_or(0, |s| s + 1);
        let end = self.requests[i..]
            .iter()
            .position(is_sync)
            .map_or(self.requests.len(), |e| i + e);
        let Some(failed) = (start..end).find(|&j| old.get(j).is_some_and(|o| o.failed)) else {
            return false;
        };
        // What came after the error was skipped; what came before rolled
        // back with it, unless it ended a transaction itself.
        (start..failed).all(|j| match self.requests[j].tag {
            frontend::tag::EXECUTE => self
                .executed_text(j)
                .is_some_and(|text| !commit_sql::controls_transaction(text)),
            frontend::tag::QUERY | frontend::tag::FUNCTION_CALL => false,
            _ => true,
        })
    }

    /// True when a request after index `i` not answered yet may write:
    /// after a ROLLBACK in the middle of a batch, the rest of it runs in an
    /// implicit transaction that commits at its Sync.
    pub(super) fn writes_after(&self, i: usize, old: &[Reply]) -> bool {
        (i + 1..self.requests.len()).any(|j| {
            let request = &self.requests[j];
            let outstanding = old.get(j).is_some_and(|o| !o.done);
            outstanding
                && match request.tag {
                    frontend::tag::QUERY | frontend::tag::EXECUTE => self
                        .statement_text(j)
                        .is_none_or(|text| !harmless_to_repeat(text)),
                    frontend::tag::FUNCTION_CALL => true,
                    _ => false,
                }
        })
    }

    /// True when no request not answered yet can commit on a server in a
    /// failed transaction: the batch in flight starts after the last
    /// answered ReadyForQuery, and each of its statements is refused
    /// (known not to end the transaction), skipped after one that was, or
    /// a lone COMMIT or ROLLBACK — which ends the failed transaction
    /// without committing — with nothing that may write after it.
    pub(super) fn refused_as_failed(&self, old: &[Reply]) -> bool {
        let done = |i: usize| old.get(i).is_some_and(|o| o.done);
        // Anything answered since the last ReadyForQuery ran: the server may
        // have left the failed state.
        let first_open = self
            .requests
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, _)| done(i).then_some(i + 1));
        let first_open = first_open.unwrap_or(0);
        if let Some(last) = first_open.checked_sub(1) {
            if self.requests[last].expect != super::Expect::Ready {
                return false;
            }
        }
        let mut skipping = false;
        for (i, request) in self.requests.iter().enumerate().skip(first_open) {
            if request.injected {
                return false;
            }
            let text = match request.tag {
                frontend::tag::SYNC => {
                    skipping = false;
                    continue;
                }
                _ if skipping => continue,
                frontend::tag::QUERY => self.frame(request).and_then(|f| cstr_at(f, 5)),
                frontend::tag::PARSE => self.frame(request).and_then(|f| {
                    let name = cstr_at(f, 5)?;
                    cstr_at(f, 5 + name.len() + 1)
                }),
                frontend::tag::BIND => self.bound_text(i),
                frontend::tag::EXECUTE => self.executed_text(i),
                // Refused as well; Describe, Close and Flush run no statement.
                frontend::tag::FUNCTION_CALL
                | frontend::tag::DESCRIBE
                | frontend::tag::CLOSE
                | frontend::tag::FLUSH => continue,
                _ => return false,
            };
            let Some(text) = text else {
                if self.runs_unknown_named_statement(i) {
                    skipping = true;
                    continue;
                }
                return false;
            };
            if ends_transaction_alone(text) {
                match request.tag {
                    // Prepared, not run yet.
                    frontend::tag::PARSE | frontend::tag::BIND => continue,
                    // The failed transaction ends, committing nothing; what
                    // follows runs outside it.
                    _ => return !self.writes_after(i, old),
                }
            }
            if !refused_in_failed_transaction(text) {
                return false;
            }
            // A refused Query ends there; a refused extended message skips
            // its batch.
            skipping = request.tag != frontend::tag::QUERY;
        }
        true
    }
}

/// True when running `sql` again outside a transaction changes no data:
/// [`commit_sql::is_harmless_to_repeat`], or several statements that each
/// are (reads and settings, as a pool's reset of its connection; split by
/// PostgreSQL's parser: this runs only when a server is lost, never on the
/// relay's path).
fn harmless_to_repeat(sql: &[u8]) -> bool {
    one_harmless_to_repeat(sql)
        || std::str::from_utf8(sql)
            .ok()
            .and_then(|text| {
                let ranges = understudy_rules::lexical::statements(text)?;
                Some(
                    ranges
                        .into_iter()
                        .all(|range| one_harmless_to_repeat(&sql[range])),
                )
            })
            .unwrap_or(false)
}

/// `commit_sql::is_harmless_to_repeat`, or a `COPY … TO STDOUT` of a table
/// or of a query that names no data write (a read sent to the client, as a
/// `SELECT` is; `COPY (DELETE … RETURNING …) TO STDOUT` writes).
fn one_harmless_to_repeat(sql: &[u8]) -> bool {
    commit_sql::is_harmless_to_repeat(sql)
        || (commit_sql::is_copy(sql)
            && !commit_sql::mentions_data_write(sql)
            && std::str::from_utf8(sql).is_ok_and(understudy_rules::lexical::is_copy_to_stdout))
}

#[cfg(test)]
#[path = "outcome_tests.rs"]
mod tests;
