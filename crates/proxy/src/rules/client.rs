//! Rules applied to what a client sends: Query and Parse messages are
//! checked; a rewritten statement replaces the text, a refused one is
//! replaced by a statement that makes the server raise `42501` with the
//! rule's message. The server raising it keeps ordering, pipelining,
//! transactions (the error aborts them as PostgreSQL's own would) and
//! failover replay exactly as for any other statement.
//!
//! A refused Parse keeps the client's statement name and parameter types
//! and is replaced by one that fails at parse time on an unknown column
//! named after the refusal; the relay rewrites that `42703` error into the
//! refusal (see [`Refusals`]).

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use understudy_protocol::frontend::{self, encode_query};

use understudy_rules::{CopyColumns, CopyMask, MaskMethod};

use super::results::{CopyColumnsResolved, CopyPlan};
use super::SessionRulesState;
use crate::metrics::{self, ProxyMetrics};

/// What the rules do with a client message.
pub enum ClientAction {
    /// Send this whole message instead.
    Replace(BytesMut),
    /// Stop reading the client before this message until the session's
    /// wait is over (a held table, a lookup); the message is then scanned
    /// again.
    Wait,
}

/// A cursor over a message body.
pub(crate) struct Body<'a>(pub &'a [u8]);

impl<'a> Body<'a> {
    pub(crate) fn cstr(&mut self) -> Option<&'a [u8]> {
        let end = self.0.iter().position(|&b| b == 0)?;
        let (s, rest) = self.0.split_at(end);
        self.0 = &rest[1..];
        Some(s)
    }
    pub(crate) fn i16(&mut self) -> Option<i16> {
        let b = self.0.get(..2)?;
        self.0 = &self.0[2..];
        Some(i16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn i32(&mut self) -> Option<i32> {
        let b = self.0.get(..4)?;
        self.0 = &self.0[4..];
        Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let b = self.0.get(..n)?;
        self.0 = &self.0[n..];
        Some(b)
    }
}

/// `DO` block raising SQLSTATE `code` with `message`.
pub fn raising_statement(code: &str, message: &str) -> String {
    let quoted = message.replace('\'', "''").replace('$', "");
    format!(
        "DO $understudy$BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = '{quoted}'; END$understudy$"
    )
}

/// `42601` syntax_error.
const SYNTAX_ERROR: &str = "42601";
/// `42501` insufficient_privilege.
const INSUFFICIENT_PRIVILEGE: &str = "42501";
/// `55P03` lock_not_available: a held table was not released in time.
const LOCK_NOT_AVAILABLE: &str = "55P03";

fn encode_parse(name: &[u8], sql: &str, types: &[i32], out: &mut BytesMut) {
    let len = 4 + name.len() + 1 + sql.len() + 1 + 2 + 4 * types.len();
    out.put_u8(frontend::tag::PARSE);
    out.put_i32(len as i32);
    out.put_slice(name);
    out.put_u8(0);
    out.put_slice(sql.as_bytes());
    out.put_u8(0);
    out.put_i16(types.len() as i16);
    for t in types {
        out.put_i32(*t);
    }
}

/// A Query or a Parse: the statement and how to rebuild the message.
struct StatementMessage<'a> {
    /// `Some(name)` for a Parse.
    parse: Option<&'a [u8]>,
    text: &'a str,
    types: Vec<i32>,
}

impl StatementMessage<'_> {
    fn with_text(&self, text: &str) -> BytesMut {
        let mut out = BytesMut::new();
        match self.parse {
            Some(name) => encode_parse(name, text, &self.types, &mut out),
            None => encode_query(text, &mut out),
        }
        out
    }

    /// A Query replaced by one that makes the server raise `code`.
    fn raising(&self, code: &str, message: &str) -> BytesMut {
        self.with_text(&raising_statement(code, message))
    }
}

/// Prefix of the column a refused Parse names: the server's "column does
/// not exist" error for it is what the client gets, rewritten.
const REFUSAL_MARKER: &str = "understudy-refusal-";
/// Distinct refusal messages a session keeps.
const MAX_REFUSALS: usize = 1024;

/// Refusals of Parse messages, by number: a refused Parse is replaced by
/// one that fails at parse time (`SELECT "understudy-refusal-<n>"`), so
/// the server's own error flow (skip to Sync, pipelining, replay after a
/// failover) applies, and its `42703` error is rewritten into the refusal.
#[derive(Debug, Default)]
pub struct Refusals(Vec<(String, String)>);

impl Refusals {
    /// The number of the refusal (`code`, `message`); `None` when the
    /// session has too many distinct ones.
    fn number(&mut self, code: &str, message: &str) -> Option<usize> {
        if let Some(i) = self.0.iter().position(|(c, m)| c == code && m == message) {
            return Some(i);
        }
        if self.0.len() >= MAX_REFUSALS {
            return None;
        }
        self.0.push((code.to_owned(), message.to_owned()));
        Some(self.0.len() - 1)
    }

    /// The refusal an ErrorResponse of the server stands for, if any:
    /// `(code, message)`.
    pub fn of_error(&self, code: &str, message: &str) -> Option<(&str, &str)> {
        let rest = match code {
            UNDEFINED_COLUMN => message.strip_prefix("column \"")?,
            INVALID_SQL_STATEMENT_NAME => message.strip_prefix("prepared statement \"")?,
            _ => return None,
        };
        let rest = rest.strip_prefix(REFUSAL_MARKER)?;
        let n: usize = rest.strip_suffix("\" does not exist")?.parse().ok()?;
        self.0.get(n).map(|(c, m)| (c.as_str(), m.as_str()))
    }
}

/// `42703` undefined_column.
const UNDEFINED_COLUMN: &str = "42703";
/// `26000` invalid_sql_statement_name: a Bind of a statement that does not
/// exist (how a refused Bind fails).
const INVALID_SQL_STATEMENT_NAME: &str = "26000";

/// A Bind (`body` without header) of statement `statement` instead of the
/// one it names, everything else unchanged.
fn rebind(body: &[u8], statement: &str) -> Option<BytesMut> {
    let mut b = Body(body);
    let portal = b.cstr()?;
    b.cstr()?;
    let rest = b.0;
    let mut out = BytesMut::with_capacity(body.len() + statement.len() + 5);
    out.put_u8(frontend::tag::BIND);
    out.put_i32(0);
    out.put_slice(portal);
    out.put_u8(0);
    out.put_slice(statement.as_bytes());
    out.put_u8(0);
    out.put_slice(rest);
    let len = i32::try_from(out.len() - 1).ok()?;
    out[1..5].copy_from_slice(&len.to_be_bytes());
    Some(out)
}

impl SessionRulesState {
    /// Holds, rewrites, refuses and tracks one statement.
    fn statement(
        &mut self,
        m: StatementMessage<'_>,
        metrics: &ProxyMetrics,
    ) -> Option<ClientAction> {
        self.refresh();
        if let Some(held) = self.held_now() {
            if let Some(analysis) = self.session.set().analyse(m.text) {
                let tables: Vec<understudy_rules::TableName> = analysis.tables().cloned().collect();
                if held.holding(&tables).is_some() {
                    if let Some(message) = self.refused_after_wait.take() {
                        self.record(&m, Vec::new());
                        return Some(ClientAction::Replace(self.refusing(
                            &m,
                            LOCK_NOT_AVAILABLE,
                            &message,
                        )));
                    }
                    let timeout = self.session.set().hold_timeout;
                    self.waiting = Some(Box::pin(super::holds::wait_released(
                        self.held.clone(),
                        tables,
                        timeout,
                        Arc::clone(&self.metrics),
                    )));
                    return Some(ClientAction::Wait);
                }
            }
        }
        self.refused_after_wait = None;
        let checked = self.session.check(m.text);
        if let Some(message) = &checked.unparsable {
            self.record(&m, Vec::new());
            return Some(ClientAction::Replace(self.refusing(
                &m,
                SYNTAX_ERROR,
                message,
            )));
        }
        if let Some(denial) = &checked.denial {
            metrics::denied(metrics, &denial.rule);
            self.record(&m, Vec::new());
            return Some(ClientAction::Replace(self.refusing(
                &m,
                INSUFFICIENT_PRIVILEGE,
                &denial.message(),
            )));
        }
        let copy = match checked.copy {
            Some(copy) => match self.resolve_copy(copy) {
                Some(plan) => Some(plan),
                None => return Some(ClientAction::Wait),
            },
            None => None,
        };
        self.record_with_copy(&m, checked.masks, copy);
        let new = checked.rewritten?;
        Some(ClientAction::Replace(m.with_text(&new)))
    }

    /// The message replaced so that the server raises `code` with
    /// `message`: a DO block for a Query; for a Parse, a statement that
    /// fails at parse time, whose error the relay rewrites (a DO block
    /// would not take the client's parameters).
    fn refusing(&mut self, m: &StatementMessage<'_>, code: &str, message: &str) -> BytesMut {
        match (m.parse, self.refusals.number(code, message)) {
            (Some(_), Some(n)) => m.with_text(&format!("SELECT \"{REFUSAL_MARKER}{n}\"")),
            _ => m.raising(code, message),
        }
    }

    /// Holds a Bind of a prepared statement that touches a held table
    /// (prepared before the hold began), or refuses it when its wait timed
    /// out.
    /// The tables held for maintenance now, `None` when none is. While the
    /// set does not change this costs one atomic load: it is asked for every
    /// Bind.
    fn held_now(&mut self) -> Option<Arc<super::holds::HeldSet>> {
        if self.held.has_changed().unwrap_or(false) {
            self.held_latest = Arc::clone(&self.held.borrow_and_update());
        }
        (!self.held_latest.is_empty()).then(|| Arc::clone(&self.held_latest))
    }

    fn hold_bind(&mut self, statement: &[u8], body: &[u8]) -> Option<ClientAction> {
        let held = self.held_now()?;
        let text = self.prepared.get(statement)?.clone();
        let analysis = self.session.set().analyse(&text)?;
        let tables: Vec<understudy_rules::TableName> = analysis.tables().cloned().collect();
        held.holding(&tables)?;
        if let Some(message) = self.refused_after_wait.take() {
            let n = self.refusals.number(LOCK_NOT_AVAILABLE, &message)?;
            // The server's error skips to Sync: the tracker follows it
            // without an expectation for this Bind.
            let frame = rebind(body, &format!("{REFUSAL_MARKER}{n}"))?;
            return Some(ClientAction::Replace(frame));
        }
        let timeout = self.session.set().hold_timeout;
        self.waiting = Some(Box::pin(super::holds::wait_released(
            self.held.clone(),
            tables,
            timeout,
            Arc::clone(&self.metrics),
        )));
        Some(ClientAction::Wait)
    }

    fn record(&mut self, m: &StatementMessage<'_>, masks: Vec<understudy_rules::ResultMask>) {
        self.record_with_copy(m, masks, None);
    }

    fn record_with_copy(
        &mut self,
        m: &StatementMessage<'_>,
        masks: Vec<understudy_rules::ResultMask>,
        copy: Option<CopyPlan>,
    ) {
        if !self.tracking {
            return;
        }
        match m.parse {
            Some(name) => self.results.parse(name, masks, copy),
            None => self.results.query(masks, copy),
        }
    }

    /// The COPY's masks; `None` when the table's columns must be looked up
    /// first (the session then waits for the lookup).
    fn resolve_copy(&mut self, copy: CopyMask) -> Option<CopyPlan> {
        let all =
            || CopyColumnsResolved::All(self.session.fallback_mask().unwrap_or(MaskMethod::Redact));
        let columns = match copy.columns {
            CopyColumns::Known(known) => CopyColumnsResolved::Known(known),
            CopyColumns::Query(mask) => CopyColumnsResolved::Query(mask),
            CopyColumns::Table(table) => {
                match (self.table_columns.get(&table), &self.column_lookup) {
                    (Some(columns), _) if columns.is_empty() => all(),
                    (Some(columns), _) => {
                        CopyColumnsResolved::Known(self.session.copy_mask(&table, columns))
                    }
                    (None, Some(lookup)) => {
                        let looked_up = lookup(table.clone());
                        self.waiting = Some(Box::pin(async move {
                            super::holds::WaitOutcome::Columns(table, looked_up.await)
                        }));
                        return None;
                    }
                    (None, None) => all(),
                }
            }
        };
        Some(CopyPlan {
            columns,
            format: copy.format,
        })
    }

    /// Follows a whole client message (`frame`, header included) and
    /// returns what to do with it, if the rules change it.
    pub fn client_message(
        &mut self,
        tag: u8,
        frame: &[u8],
        metrics: &ProxyMetrics,
    ) -> Option<ClientAction> {
        let body = frame.get(5..)?;
        match tag {
            frontend::tag::QUERY => {
                let text = std::str::from_utf8(Body(body).cstr()?).ok()?;
                self.statement(
                    StatementMessage {
                        parse: None,
                        text,
                        types: Vec::new(),
                    },
                    metrics,
                )
            }
            frontend::tag::PARSE => {
                let mut b = Body(body);
                let name = b.cstr()?;
                let text = std::str::from_utf8(b.cstr()?).ok()?;
                // Kept so that a Bind of it can be held for maintenance.
                self.prepared.insert(name.to_vec(), Arc::from(text));
                let n = b.i16()?;
                let mut types = Vec::with_capacity(usize::try_from(n).ok()?);
                for _ in 0..n {
                    types.push(b.i32()?);
                }
                self.statement(
                    StatementMessage {
                        parse: Some(name),
                        text,
                        types,
                    },
                    metrics,
                )
            }
            frontend::tag::CLOSE if body.first() == Some(&b'S') => {
                if let Some(name) = Body(&body[1..]).cstr() {
                    self.prepared.remove(name);
                }
                if self.tracking {
                    self.results.close();
                }
                None
            }
            frontend::tag::BIND => {
                let mut b = Body(body);
                let portal = b.cstr()?;
                let statement = b.cstr()?;
                if let Some(action) = self.hold_bind(statement, body) {
                    return Some(action);
                }
                if !self.tracking {
                    return None;
                }
                let nf = b.i16()?;
                for _ in 0..nf {
                    b.i16()?;
                }
                let np = b.i16()?;
                for _ in 0..np {
                    let len = b.i32()?;
                    if len > 0 {
                        b.bytes(usize::try_from(len).ok()?)?;
                    }
                }
                let nr = b.i16()?;
                let mut formats = Vec::with_capacity(usize::try_from(nr).ok()?);
                for _ in 0..nr {
                    formats.push(b.i16()?);
                }
                self.results.bind(portal, statement, formats);
                None
            }
            _ if !self.tracking => None,
            frontend::tag::DESCRIBE => {
                let mut b = Body(body);
                let kind = *b.bytes(1)?.first()?;
                let name = b.cstr()?;
                self.results.describe(kind, name);
                None
            }
            frontend::tag::EXECUTE => {
                let portal = Body(body).cstr()?;
                self.results.execute(portal);
                None
            }
            frontend::tag::SYNC => {
                self.results.sync();
                None
            }
            frontend::tag::CLOSE => {
                self.results.close();
                None
            }
            frontend::tag::FUNCTION_CALL => {
                self.results.query(Vec::new(), None);
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raising_statement_quotes_the_message() {
        let sql = raising_statement("42501", "rule \"x\": it's $$ denied");
        assert!(sql.contains("'rule \"x\": it''s  denied'"), "{sql}");
        understudy_rules::Analysis::of(&sql).unwrap();
    }

    #[test]
    fn refusal_errors_are_recognised_only_by_their_marker() {
        let mut refusals = Refusals::default();
        let n = refusals.number("42501", "denied").unwrap();
        assert_eq!(refusals.number("42501", "denied"), Some(n));
        let message = format!("column \"{REFUSAL_MARKER}{n}\" does not exist");
        assert_eq!(
            refusals.of_error("42703", &message),
            Some(("42501", "denied"))
        );
        assert_eq!(refusals.of_error("42P01", &message), None);
        assert_eq!(
            refusals.of_error("42703", "column \"x\" does not exist"),
            None
        );
        let unknown = format!("column \"{REFUSAL_MARKER}99\" does not exist");
        assert_eq!(refusals.of_error("42703", &unknown), None);
        // The stand-in statement parses, and fails only at analysis.
        understudy_rules::Analysis::of(&format!("SELECT \"{REFUSAL_MARKER}{n}\"")).unwrap();
    }
}
