//! Running a client's simple Query through the extended protocol, so that
//! its end — a Sync, the proxy's own — can wait for the replies and carry
//! the commit stamp (docs/decisions/0007). The server runs the statements
//! the same way and sends the same replies but for the acknowledgements the
//! simple protocol does not have (ParseComplete, BindComplete, NoData),
//! which the relay takes out.
//!
//! Translated: a Query of data writes and reads outside a transaction block
//! (one implicit transaction, as PostgreSQL runs a multi-statement Query),
//! `BEGIN; …; COMMIT` (its COMMIT goes with the stamp once the rest is
//! answered), and a lone `COPY … FROM STDIN` (the stamp and the Sync follow
//! the client's CopyDone). Anything else — DDL, `CALL`, another `COPY`, a transaction control
//! statement elsewhere, `$n` references, a session whose text PostgreSQL's
//! lexer would not read as the server does — is sent as it is.
//!
//! Each statement is parsed on its own, so for a Query of several the text
//! before a statement is replaced by as many spaces as it has characters:
//! error positions then count from the start of the client's string, as
//! they do for a simple Query.

use std::collections::HashMap;

use bytes::BytesMut;
use understudy_protocol::frontend::{
    encode_bind, encode_describe_portal, encode_execute, encode_flush, encode_parse,
};

use crate::commit_sql;
use crate::journal::Journal;

/// Largest statement text, padding included, sent for a Query of several
/// statements; longer Queries are sent as they are.
const MAX_TRANSLATED_BYTES: usize = 1 << 20;

/// A simple Query, as the extended protocol runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// Statements sent at once, each through the unnamed statement and
    /// portal (which a simple Query drops anyway).
    pub statements: Vec<String>,
    /// The COMMIT ending a `BEGIN; …; COMMIT` Query: sent behind the stamp
    /// once the other statements are answered.
    pub commit: Option<String>,
    /// A `COPY … FROM STDIN`: the client's rows follow the statement, and
    /// its CopyDone, not the end of the Query, is where the stamp and the
    /// proxy's Sync go.
    pub copy_in: bool,
}

/// How the client's simple Query (its body, NUL included) runs through the
/// extended protocol, or `None` when it must be sent as it is.
pub fn translation(body: &[u8], parameters: &HashMap<String, String>) -> Option<Translation> {
    let sql = body.strip_suffix(&[0])?;
    // Cheap checks first: most Queries are reads or single statements.
    let copy = commit_sql::is_copy(sql);
    let single_write = commit_sql::is_data_write(sql);
    let several_with_a_write =
        commit_sql::has_second_statement(sql) && commit_sql::mentions_data_write(sql);
    if !copy && !single_write && !several_with_a_write {
        return None;
    }
    let is = |name: &str, value: &str| parameters.get(name).is_some_and(|v| v == value);
    if !is("client_encoding", "UTF8") || !is("standard_conforming_strings", "on") {
        return None;
    }
    let text = std::str::from_utf8(sql).ok()?;
    if copy {
        // Parsed whole: a COPY is rare and carries its rows, and `COPY … TO`,
        // `COPY (query) TO` and a COPY from a server file look alike to the
        // cheap checks. A `$n` would be refused differently.
        let plain = !understudy_rules::lexical::shape(text)?.has_parameters;
        return (plain && understudy_rules::lexical::is_copy_from_stdin(text)).then(|| {
            Translation {
                statements: vec![text.to_owned()],
                commit: None,
                copy_in: true,
            }
        });
    }
    let shape = understudy_rules::lexical::shape(text)?;
    if shape.has_parameters || shape.statements == 0 {
        return None;
    }
    if shape.statements == 1 {
        return single_write.then(|| Translation {
            statements: vec![text.to_owned()],
            commit: None,
            copy_in: false,
        });
    }
    if text.len().saturating_mul(shape.statements) > MAX_TRANSLATED_BYTES {
        return None;
    }
    let ranges = understudy_rules::lexical::statements(text)?;
    let statements: Vec<&str> = ranges.iter().map(|r| &text[r.clone()]).collect();
    let (first, last) = (statements.first()?, statements.last()?);
    let block =
        commit_sql::starts_transaction(first.as_bytes()) && commit_sql::is_commit(last.as_bytes());
    let work = if block {
        &statements[1..statements.len() - 1]
    } else {
        &statements[..]
    };
    let plain = |s: &&str| {
        commit_sql::is_data_write(s.as_bytes()) || commit_sql::is_read_only(s.as_bytes())
    };
    let writes = work.iter().any(|s| commit_sql::is_data_write(s.as_bytes()));
    if !writes || !work.iter().all(plain) {
        return None;
    }
    let padded = |i: usize| {
        let before = text[..ranges[i].start].chars().count();
        let mut statement = " ".repeat(before);
        statement.push_str(statements[i]);
        statement
    };
    let sent = if block {
        statements.len() - 1
    } else {
        statements.len()
    };
    Some(Translation {
        statements: (0..sent).map(padded).collect(),
        commit: block.then(|| padded(statements.len() - 1)),
        copy_in: false,
    })
}

/// Appends one statement through the unnamed statement and portal — Parse,
/// Bind with text results, Describe for its RowDescription, Execute — and
/// journals it as sent in place of the client's Query.
pub fn encode_statement(sql: &str, out: &mut BytesMut, journal: &mut Journal) {
    let mut start = out.len();
    encode_parse("", sql, out);
    journal.translated_request(&out[start..]);
    start = out.len();
    encode_bind("", "", out);
    journal.translated_request(&out[start..]);
    start = out.len();
    encode_describe_portal("", out);
    journal.translated_request(&out[start..]);
    start = out.len();
    encode_execute("", out);
    journal.translated_request(&out[start..]);
}

/// Appends the statements of a translation and a Flush, so the server
/// answers them without ending their transaction.
pub fn encode_statements(statements: &[String], out: &mut BytesMut, journal: &mut Journal) {
    for sql in statements {
        encode_statement(sql, out, journal);
    }
    let start = out.len();
    encode_flush(out);
    journal.injected_request(&out[start..]);
}

#[cfg(test)]
mod tests {
    use super::{translation, Translation};
    use std::collections::HashMap;

    fn utf8_session() -> HashMap<String, String> {
        HashMap::from([
            ("client_encoding".to_owned(), "UTF8".to_owned()),
            ("standard_conforming_strings".to_owned(), "on".to_owned()),
        ])
    }

    fn of(sql: &str) -> Option<Translation> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        translation(&body, &utf8_session())
    }

    #[test]
    fn one_data_write_is_sent_as_it_is() {
        let t = of("insert into t values (1);").expect("translated");
        assert_eq!(t.statements, ["insert into t values (1);"]);
        assert_eq!(t.commit, None);
    }

    #[test]
    fn several_statements_keep_their_positions() {
        // 27 characters (28 bytes) come before the second statement.
        let t = of("insert into t values ('é'); select 1").expect("translated");
        assert_eq!(
            t.statements,
            [
                "insert into t values ('é')",
                &format!("{}{}", " ".repeat(27), " select 1")
            ]
        );
    }

    #[test]
    fn a_transaction_block_keeps_its_commit_for_the_stamp() {
        let t = of("begin; update t set a = 1; commit;").expect("translated");
        assert_eq!(t.statements.len(), 2);
        assert_eq!(t.commit.as_deref().map(str::trim), Some("commit"));
    }

    #[test]
    fn a_copy_from_stdin_waits_for_its_rows() {
        let t = of("copy t (a) from stdin with (format csv)").expect("translated");
        assert_eq!(t.statements, ["copy t (a) from stdin with (format csv)"]);
        assert!(t.copy_in);
        assert!(!of("insert into t values (1)").expect("translated").copy_in);
    }

    #[test]
    fn everything_else_is_sent_as_it_is() {
        for sql in [
            "select 1",
            "select 1; select 2",
            "create table t (a int); insert into t values (1)",
            "insert into t values (1); commit",
            "begin; insert into t values (1)",
            "begin; insert into t values (1); rollback",
            "insert into t values ($1)",
            "insert into t values (1); insert into",
            "call p()",
            "copy t to stdout",
            "copy t from '/tmp/rows'",
            "copy t from stdin; select 1",
            "copy t from stdin where a = $1",
        ] {
            assert_eq!(of(sql), None, "{sql}");
        }
        let mut latin = utf8_session();
        latin.insert("client_encoding".into(), "LATIN1".into());
        assert_eq!(translation(b"insert into t values (1)\0", &latin), None);
    }
}
