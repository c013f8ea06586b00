//! What a server in a failed transaction refuses. Until the client ends the
//! transaction (or rolls back to a savepoint), PostgreSQL answers every
//! statement with `25P02` and, in the extended protocol, skips the rest of
//! the batch up to its Sync: such requests, in flight when a server is
//! lost, cannot have committed anything, whatever the statements they
//! would otherwise have run.

use understudy_protocol::frontend;

use super::{cstr_at, Journal, Reply};
use crate::commit_sql::{ends_transaction_alone, refused_in_failed_transaction};

impl Journal {
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
