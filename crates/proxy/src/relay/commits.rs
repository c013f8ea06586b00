//! Which of the client's prepared statements are COMMITs, so that a COMMIT
//! sent through the extended protocol gets its ledger stamp too.

use std::collections::HashSet;

use understudy_protocol::frontend;

use crate::commit_sql::commits;

/// Which of the client's prepared statements are COMMITs, to recognise a
/// COMMIT sent through the extended protocol.
#[derive(Default)]
pub struct CommitStatements {
    named: HashSet<Vec<u8>>,
    unnamed: bool,
}

impl CommitStatements {
    /// Follows Parse messages, and tells whether a client message starts the
    /// execution of a COMMIT: a Query, a Parse of the unnamed statement, or
    /// a Bind of a named statement.
    pub(super) fn starts_commit(&mut self, tag: u8, body: &[u8]) -> bool {
        let mut fields = body.split(|&b| b == 0);
        match tag {
            frontend::tag::QUERY => commits(fields.next().unwrap_or_default()),
            frontend::tag::PARSE => {
                let name = fields.next().unwrap_or_default();
                let commit = commits(fields.next().unwrap_or_default());
                if name.is_empty() {
                    self.unnamed = commit;
                    commit
                } else {
                    if commit {
                        self.named.insert(name.to_vec());
                    } else {
                        self.named.remove(name);
                    }
                    false
                }
            }
            // Most sessions prepare no COMMIT: their Binds need no lookup.
            frontend::tag::BIND if self.named.is_empty() => false,
            frontend::tag::BIND => {
                let _portal = fields.next();
                let statement = fields.next().unwrap_or_default();
                !statement.is_empty() && self.named.contains(statement)
            }
            _ => false,
        }
    }
}
