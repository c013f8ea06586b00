//! Which SQL text a request of the unit runs: a Query's own, or for an
//! Execute the statement of the latest Bind of its portal (parsed in the
//! unit or prepared by the session earlier); and, at a unit's end, the statements
//! whose text the journal reads ([`super::pins`], [`super::set_config`]); the
//! functions a `SELECT` may write through.

use std::sync::Arc;

use understudy_protocol::frontend;

use super::{cstr_at, lexer, pins, Journal};
use crate::commit_sql::AutocommitKind;
use crate::writing_functions::{self, WritingFunctions};

/// The statement an Execute runs.
enum Executed<'a> {
    /// Parsed in the open unit: its SQL text.
    ParsedInUnit(&'a [u8]),
    /// A statement the session prepared earlier: its name.
    Prepared(&'a [u8]),
}

impl Journal {
    /// Counts statements calling one of `functions` as writes.
    pub fn set_writing_functions(&mut self, functions: Option<Arc<WritingFunctions>>) {
        self.writing_functions = functions;
    }

    /// The database's functions a `SELECT` may write through, if known.
    pub fn writing_functions(&self) -> Option<&WritingFunctions> {
        self.writing_functions.as_deref()
    }

    /// Tells the database's functions about the ones the first `end`
    /// requests created or altered, so that a `SELECT` calling one right
    /// after counts as a write before the next reading of the catalog.
    pub(super) fn note_defined_functions(&self, end: usize) {
        let Some(functions) = self.writing_functions.as_deref() else {
            return;
        };
        for (i, request) in self.requests[..end].iter().enumerate() {
            if request.reply.defined_functions {
                functions.defined_by(self.statement_text(i));
            }
        }
    }

    /// The SQL text request `i` ran: a Query's, or an Execute's statement.
    pub(super) fn statement_text(&self, i: usize) -> Option<&[u8]> {
        let request = &self.requests[i];
        match request.tag {
            frontend::tag::QUERY => self.frame(request).and_then(|f| cstr_at(f, 5)),
            frontend::tag::EXECUTE => self.executed_text(i),
            _ => None,
        }
    }

    /// The SQL text run by the Execute at index `i`: the statement of the
    /// latest Bind before it, from a Parse in the unit or the session.
    pub(super) fn executed_text(&self, i: usize) -> Option<&[u8]> {
        match self.executed_statement(i)? {
            Executed::ParsedInUnit(text) => Some(text),
            Executed::Prepared(name) => self.session.prepared_text(name),
        }
    }

    /// How the Execute at index `i` bears on an autocommit batch: worked out
    /// from the text of a statement parsed in the unit, looked up for one
    /// the session prepared earlier.
    pub(super) fn executed_kind(&self, i: usize) -> Option<AutocommitKind> {
        match self.executed_statement(i)? {
            Executed::ParsedInUnit(text) => Some(writing_functions::autocommit_kind(
                text,
                self.writing_functions.as_deref(),
            )),
            Executed::Prepared(name) => self.session.prepared_kind(name),
        }
    }

    /// The statement the Execute at index `i` runs: that of the latest Bind
    /// of its portal before it.
    fn executed_statement(&self, i: usize) -> Option<Executed<'_>> {
        self.bound_statement(self.bind_of(i)?)
    }

    /// Index of the latest Bind of the portal the Execute at index `i` runs.
    fn bind_of(&self, i: usize) -> Option<usize> {
        let portal = cstr_at(self.frame(&self.requests[i])?, 5)?;
        self.requests[..i].iter().rposition(|r| {
            r.tag == frontend::tag::BIND
                && self.frame(r).and_then(|f| cstr_at(f, 5)) == Some(portal)
        })
    }

    /// True when the Bind or Execute at index `i` runs a named statement the
    /// session never prepared through the protocol: one that does not
    /// exist (the Bind fails), or one made by SQL `PREPARE`, which cannot
    /// hold a statement that ends a transaction.
    pub(super) fn runs_unknown_named_statement(&self, i: usize) -> bool {
        let bind = match self.requests[i].tag {
            frontend::tag::BIND => Some(i),
            frontend::tag::EXECUTE => self.bind_of(i),
            _ => None,
        };
        match bind.and_then(|b| self.bound_statement(b)) {
            Some(Executed::Prepared(name)) => {
                !name.is_empty() && self.session.prepared_text(name).is_none()
            }
            _ => false,
        }
    }

    /// The SQL text the Bind at index `i` binds, when known.
    pub(super) fn bound_text(&self, i: usize) -> Option<&[u8]> {
        match self.bound_statement(i)? {
            Executed::ParsedInUnit(text) => Some(text),
            Executed::Prepared(name) => self.session.prepared_text(name),
        }
    }

    /// The statement the Bind at index `i` binds: the latest Parse of its
    /// name before it, or one the session prepared earlier.
    fn bound_statement(&self, i: usize) -> Option<Executed<'_>> {
        let body = self.frame(&self.requests[i])?.get(5..)?;
        let portal_end = body.iter().position(|&b| b == 0)?;
        let statement = cstr_at(body, portal_end + 1)?;
        let parsed = self.requests[..i].iter().rev().find_map(|r| {
            let frame = self.frame(r)?;
            (r.tag == frontend::tag::PARSE && cstr_at(frame, 5)? == statement).then_some(frame)
        });
        match parsed {
            Some(frame) => cstr_at(frame, 5 + statement.len() + 1).map(Executed::ParsedInUnit),
            None => Some(Executed::Prepared(statement)),
        }
    }

    /// The statements among the first `end` requests whose text mentions a
    /// keyword of [`pins`] or [`set_config`] (`lexer::worth_reading`):
    /// their index, text and how they ended (`committed` tells whether their
    /// transaction did). One pass:
    /// each Execute finds its statement through the Bind before it, and a
    /// statement prepared in an earlier unit is checked by the flag kept
    /// with it, so a unit that mentions no such object allocates nothing.
    pub(super) fn statements_worth_reading(
        &self,
        end: usize,
        committed: bool,
    ) -> Vec<(usize, Vec<u8>, pins::Outcome)> {
        let mut found = Vec::new();
        let mut unnamed_statement: Option<&[u8]> = None;
        let mut named_statements: Vec<(&[u8], &[u8])> = Vec::new();
        let mut unnamed_portal: Option<&[u8]> = None;
        let mut named_portals: Vec<(&[u8], Option<&[u8]>)> = Vec::new();
        for (i, request) in self.requests[..end].iter().enumerate() {
            if request.injected {
                continue;
            }
            let Some(frame) = self.frame(request) else {
                continue;
            };
            let outcome = pins::Outcome {
                failed: request.reply.failed,
                committed,
            };
            match request.tag {
                frontend::tag::QUERY => {
                    if let Some(text) = cstr_at(frame, 5).filter(|t| lexer::worth_reading(t)) {
                        found.push((i, text.to_vec(), outcome));
                    }
                }
                frontend::tag::PARSE => {
                    let Some(name) = cstr_at(frame, 5) else {
                        continue;
                    };
                    let text =
                        cstr_at(frame, 5 + name.len() + 1).filter(|t| lexer::worth_reading(t));
                    if name.is_empty() {
                        unnamed_statement = text;
                    } else if let Some(text) = text {
                        named_statements.push((name, text));
                    }
                }
                frontend::tag::BIND => {
                    let Some(portal) = cstr_at(frame, 5) else {
                        continue;
                    };
                    let statement = cstr_at(frame, 5 + portal.len() + 1).unwrap_or_default();
                    let text = if statement.is_empty() {
                        unnamed_statement
                    } else {
                        named_statements
                            .iter()
                            .rev()
                            .find(|(name, _)| *name == statement)
                            .map(|(_, text)| *text)
                            .or_else(|| self.session.prepared_text_worth_reading(statement))
                    };
                    if portal.is_empty() {
                        unnamed_portal = text;
                    } else {
                        named_portals.push((portal, text));
                    }
                }
                frontend::tag::EXECUTE => {
                    let Some(portal) = cstr_at(frame, 5) else {
                        continue;
                    };
                    let text = if portal.is_empty() {
                        unnamed_portal
                    } else {
                        named_portals
                            .iter()
                            .rev()
                            .find(|(name, _)| *name == portal)
                            .and_then(|(_, text)| *text)
                    };
                    // Skipped after an earlier error: it never ran.
                    let ran = request.reply.bytes > 0;
                    if let Some(text) = text.filter(|_| ran) {
                        found.push((i, text.to_vec(), outcome));
                    }
                }
                _ => {}
            }
        }
        found
    }
}
