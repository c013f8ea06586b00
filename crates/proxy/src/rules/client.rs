//! Rules applied to what a client sends: Query and Parse messages are
//! checked; a rewritten statement replaces the text, a refused one is
//! replaced by a statement that makes the server raise `42501` with the
//! rule's message. The server raising it keeps ordering, pipelining,
//! transactions (the error aborts them as PostgreSQL's own would) and
//! failover replay exactly as for any other statement.
//!
//! A refused Parse keeps the client's statement name and parameter types;
//! parameters the client left untyped are declared `text` so that the
//! client's Bind still matches.

use bytes::{BufMut, BytesMut};
use understudy_protocol::frontend::{self, encode_query};

use super::SessionRulesState;
use crate::metrics::{self, ProxyMetrics};

/// A client message replaced by the rules.
pub struct Replacement {
    /// The whole message to send instead.
    pub frame: BytesMut,
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

/// `DO` block raising `insufficient_privilege` with `message`.
pub fn raising_statement(message: &str) -> String {
    let quoted = message.replace('\'', "''").replace('$', "");
    format!(
        "DO $understudy$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = '{quoted}'; END$understudy$"
    )
}

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

/// OID of `text`.
const TEXT_OID: i32 = 25;

impl SessionRulesState {
    /// Follows a whole client message (`frame`, header included) and
    /// returns its replacement, if the rules change it.
    pub fn client_message(
        &mut self,
        tag: u8,
        frame: &[u8],
        metrics: &ProxyMetrics,
    ) -> Option<Replacement> {
        let body = frame.get(5..)?;
        match tag {
            frontend::tag::QUERY => {
                self.refresh();
                let text = std::str::from_utf8(Body(body).cstr()?).ok()?;
                let checked = self.session.check(text);
                if let Some(denial) = &checked.denial {
                    metrics::denied(metrics, &denial.rule);
                    self.results.query(Vec::new());
                    let mut out = BytesMut::new();
                    encode_query(&raising_statement(&denial.message()), &mut out);
                    return Some(Replacement { frame: out });
                }
                self.results.query(checked.masks);
                let new = checked.rewritten?;
                let mut out = BytesMut::new();
                encode_query(&new, &mut out);
                Some(Replacement { frame: out })
            }
            frontend::tag::PARSE => {
                self.refresh();
                let mut b = Body(body);
                let name = b.cstr()?;
                let text = std::str::from_utf8(b.cstr()?).ok()?;
                let n = b.i16()?;
                let mut types = Vec::with_capacity(usize::try_from(n).ok()?);
                for _ in 0..n {
                    types.push(b.i32()?);
                }
                let checked = self.session.check(text);
                if let Some(denial) = &checked.denial {
                    metrics::denied(metrics, &denial.rule);
                    self.results.parse(name, Vec::new());
                    let wanted = understudy_rules::rewrite::highest_parameter(text).unwrap_or(0);
                    if types.len() < wanted {
                        types.resize(wanted, 0);
                    }
                    for t in &mut types {
                        if *t == 0 {
                            *t = TEXT_OID;
                        }
                    }
                    let mut out = BytesMut::new();
                    encode_parse(
                        name,
                        &raising_statement(&denial.message()),
                        &types,
                        &mut out,
                    );
                    return Some(Replacement { frame: out });
                }
                self.results.parse(name, checked.masks);
                let new = checked.rewritten?;
                let mut out = BytesMut::new();
                encode_parse(name, &new, &types, &mut out);
                Some(Replacement { frame: out })
            }
            frontend::tag::BIND => {
                let mut b = Body(body);
                let portal = b.cstr()?;
                let statement = b.cstr()?;
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
                self.results.query(Vec::new());
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
        let sql = raising_statement("rule \"x\": it's $$ denied");
        assert!(sql.contains("'rule \"x\": it''s  denied'"), "{sql}");
        understudy_rules::Analysis::of(&sql).unwrap();
    }
}
