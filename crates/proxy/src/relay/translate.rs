//! Running a client's simple Query through the extended protocol, so that
//! its end — a Sync, the proxy's own — can wait for the replies and carry
//! the commit stamp (docs/decisions/0007). The server runs the statements
//! the same way and sends the same replies but for the acknowledgements the
//! simple protocol does not have (ParseComplete, BindComplete, NoData),
//! which the relay takes out.
//!
//! Translated: a Query of data writes, reads and DDL that runs inside a
//! transaction block (`commit_sql::is_transactional_ddl`) outside a
//! transaction block (one implicit transaction, as PostgreSQL runs a
//! multi-statement Query), `BEGIN; …; COMMIT` (its COMMIT goes with the
//! stamp once the rest is answered), a lone `CALL` of a procedure known not
//! to end transactions inside it (`writing_functions`), a lone `DO` block
//! naming no `COMMIT`, `ROLLBACK` or `CALL`, and a lone `COPY …
//! FROM STDIN` (the stamp and the Sync follow the client's CopyDone).
//! Anything else — other DDL, another `CALL`, another `COPY`, a transaction
//! control statement elsewhere, `$n` references, a session whose text
//! PostgreSQL's lexer would not read as the server does — is sent as it is.
//!
//! Each statement is parsed on its own, so for a Query of several the text
//! before a statement is replaced by as many spaces as it has characters:
//! error positions then count from the start of the client's string, as
//! they do for a simple Query.
//!
//! The client's text is read in its own encoding: UTF-8, or one of
//! PostgreSQL's single-byte encodings (LATIN1, WIN1252, KOI8R, …), whose
//! bytes above 127 are letters the lexer reads as it reads any letter, so
//! they are read as `x` — the statements split and classify the same, and
//! each byte is one character. The statements sent are the client's own
//! bytes. Other encodings (SQL_ASCII, which converts nothing, and the
//! multi-byte ones) are sent as they are.

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::BytesMut;
use understudy_protocol::frontend::{
    encode_bind, encode_describe_portal, encode_execute, encode_flush, encode_parse_bytes,
};

use crate::commit_sql;
use crate::journal::Journal;
use crate::writing_functions::{self, WritingFunctions};

/// Largest statement text, padding included, sent for a Query of several
/// statements; longer Queries are sent as they are.
const MAX_TRANSLATED_BYTES: usize = 1 << 20;

/// A simple Query, as the extended protocol runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// Statements sent at once, each through the unnamed statement and
    /// portal (which a simple Query drops anyway), in the client's encoding.
    pub statements: Vec<Vec<u8>>,
    /// The COMMIT ending a `BEGIN; …; COMMIT` Query: sent behind the stamp
    /// once the other statements are answered.
    pub commit: Option<Vec<u8>>,
    /// A `COPY … FROM STDIN`: the client's rows follow the statement, and
    /// its CopyDone, not the end of the Query, is where the stamp and the
    /// proxy's Sync go.
    pub copy_in: bool,
}

/// Bytes the extended-protocol messages around one statement take beside its
/// text: Parse, Bind, Describe and Execute of the unnamed statement and portal.
const STATEMENT_FRAMING: usize = 48;
/// Room for what follows a translation's statements in the batch: a Flush, a
/// commit stamp and the proxy's Sync.
const BATCH_TAIL: usize = 256;

impl Translation {
    /// About the bytes the batch carrying this translation takes, so that it
    /// is written into one allocation rather than grown message by message.
    pub fn encoded_len(&self) -> usize {
        self.statements
            .iter()
            .chain(&self.commit)
            .map(|sql| sql.len() + STATEMENT_FRAMING)
            .sum::<usize>()
            + BATCH_TAIL
    }
}

/// How the client's simple Query (its body, NUL included) runs through the
/// extended protocol, or `None` when it must be sent as it is. A read that
/// calls one of `functions` counts as a write.
pub fn translation(
    body: &[u8],
    parameters: &HashMap<String, String>,
    functions: Option<&WritingFunctions>,
) -> Option<Translation> {
    let sql = body.strip_suffix(&[0])?;
    let calls_writer = |sql: &[u8]| functions.is_some_and(|f| f.called_by(sql));
    // Cheap checks first: most Queries are reads or single statements.
    let copy = commit_sql::is_copy(sql);
    let single_write = commit_sql::is_data_write(sql)
        || commit_sql::is_transactional_ddl(sql)
        || (commit_sql::is_query(sql) && calls_writer(sql))
        || (commit_sql::is_call(sql) && functions.is_some_and(|f| f.calls_atomic_procedure(sql)))
        || (commit_sql::is_do(sql) && !writing_functions::ends_transactions_inside(sql, functions));
    let several_with_a_write = || {
        commit_sql::has_second_statement(sql)
            && (commit_sql::mentions_data_write(sql)
                || commit_sql::mentions_ddl(sql)
                || calls_writer(sql))
    };
    if !copy && !single_write && !several_with_a_write() {
        return None;
    }
    let is = |name: &str, value: &str| parameters.get(name).is_some_and(|v| v == value);
    if !is("standard_conforming_strings", "on") {
        return None;
    }
    let encoding = parameters.get("client_encoding")?;
    let (text, single_byte): (Cow<'_, str>, bool) = if encoding == "UTF8" {
        (Cow::Borrowed(std::str::from_utf8(sql).ok()?), false)
    } else if is_single_byte(encoding) {
        let ascii = sql
            .iter()
            .map(|&b| if b < 0x80 { b } else { b'x' })
            .collect();
        (Cow::Owned(String::from_utf8(ascii).ok()?), true)
    } else {
        return None;
    };
    let text = &*text;
    if copy {
        // Parsed whole: a COPY is rare and carries its rows, and `COPY … TO`,
        // `COPY (query) TO` and a COPY from a server file look alike to the
        // cheap checks. A `$n` would be refused differently.
        let plain = !understudy_rules::lexical::shape(text)?.has_parameters;
        return (plain && understudy_rules::lexical::is_copy_from_stdin(text)).then(|| {
            Translation {
                statements: vec![sql.to_vec()],
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
            statements: vec![sql.to_vec()],
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
    let writes_data = |s: &[u8]| {
        commit_sql::is_data_write(s)
            || commit_sql::is_transactional_ddl(s)
            || (commit_sql::is_query(s) && calls_writer(s))
    };
    let plain = |s: &&str| writes_data(s.as_bytes()) || commit_sql::is_read_only(s.as_bytes());
    let writes = work.iter().any(|s| writes_data(s.as_bytes()));
    if !writes || !work.iter().all(plain) {
        return None;
    }
    let padded = |i: usize| {
        let start = ranges[i].start;
        let before = if single_byte {
            start
        } else {
            text[..start].chars().count()
        };
        let mut statement = vec![b' '; before];
        statement.extend_from_slice(&sql[ranges[i].clone()]);
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
pub fn encode_statement(sql: &[u8], out: &mut BytesMut, journal: &mut Journal) {
    let mut start = out.len();
    encode_parse_bytes("", sql, out);
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
pub fn encode_statements(statements: &[Vec<u8>], out: &mut BytesMut, journal: &mut Journal) {
    for sql in statements {
        encode_statement(sql, out, journal);
    }
    let start = out.len();
    encode_flush(out);
    journal.injected_request(&out[start..]);
}

/// True for PostgreSQL's single-byte client encodings, as the server names
/// them in `client_encoding`.
fn is_single_byte(encoding: &str) -> bool {
    const SINGLE_BYTE: &[&str] = &[
        "LATIN1",
        "LATIN2",
        "LATIN3",
        "LATIN4",
        "LATIN5",
        "LATIN6",
        "LATIN7",
        "LATIN8",
        "LATIN9",
        "LATIN10",
        "ISO_8859_5",
        "ISO_8859_6",
        "ISO_8859_7",
        "ISO_8859_8",
        "KOI8R",
        "KOI8U",
        "WIN866",
        "WIN874",
        "WIN1250",
        "WIN1251",
        "WIN1252",
        "WIN1253",
        "WIN1254",
        "WIN1255",
        "WIN1256",
        "WIN1257",
        "WIN1258",
    ];
    SINGLE_BYTE.contains(&encoding)
}

#[cfg(test)]
mod tests {
    use super::{translation, Translation};
    use std::collections::HashMap;

    fn session(encoding: &str) -> HashMap<String, String> {
        HashMap::from([
            ("client_encoding".to_owned(), encoding.to_owned()),
            ("standard_conforming_strings".to_owned(), "on".to_owned()),
        ])
    }

    fn of(sql: &str) -> Option<Translation> {
        let mut body = sql.as_bytes().to_vec();
        body.push(0);
        translation(&body, &session("UTF8"), None)
    }

    #[test]
    fn a_read_calling_a_writing_function_and_an_atomic_call_are_translated_as_writes() {
        let functions = crate::writing_functions::WritingFunctions::default();
        let mut routines = crate::writing_functions::Routines::default();
        routines.add(b"add_row".to_vec(), "w");
        routines.add(b"add_two".to_vec(), "a");
        routines.add(b"add_in_steps".to_vec(), "c");
        functions.replace(routines);
        let with = |sql: &str| {
            let mut body = sql.as_bytes().to_vec();
            body.push(0);
            translation(&body, &session("UTF8"), Some(&functions))
        };
        let single = with("select add_row(1)").expect("translated");
        assert_eq!(texts(&single.statements), ["select add_row(1)"]);
        let several = with("select 1; select add_row(2)").expect("translated");
        assert_eq!(several.statements.len(), 2);
        let with_query = with("with r as (select add_row(3)) select * from r");
        assert!(with_query.is_some(), "a WITH query calling it");
        assert_eq!(with("with r as (select 1) select * from r"), None);
        assert_eq!(with("select other(1)"), None);
        assert_eq!(of("select add_row(1)"), None, "unknown without the names");
        let call = with("call add_two()").expect("a CALL that cannot commit inside");
        assert_eq!(texts(&call.statements), ["call add_two()"]);
        assert_eq!(with("call add_in_steps()"), None, "it may commit inside");
        assert_eq!(with("call other()"), None, "not known");
        assert_eq!(with("call add_two(); select 1"), None, "not alone");
    }

    fn texts(statements: &[Vec<u8>]) -> Vec<String> {
        statements
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect()
    }

    #[test]
    fn one_data_write_is_sent_as_it_is() {
        let t = of("insert into t values (1);").expect("translated");
        assert_eq!(texts(&t.statements), ["insert into t values (1);"]);
        assert_eq!(t.commit, None);
    }

    #[test]
    fn several_statements_keep_their_positions() {
        // 27 characters (28 bytes) come before the second statement.
        let t = of("insert into t values ('é'); select 1").expect("translated");
        assert_eq!(
            texts(&t.statements),
            [
                "insert into t values ('é')".to_owned(),
                format!("{}{}", " ".repeat(27), " select 1")
            ]
        );
    }

    #[test]
    fn a_single_byte_encoding_is_read_byte_for_character() {
        // LATIN1: 'é' is the one byte 0xE9, a letter in an identifier too.
        let sql = b"insert into t\xe9 values ('\xe9;'); update t set a = 1 where b = '\xe9'\0";
        let t = translation(sql, &session("LATIN1"), None).expect("translated");
        assert_eq!(t.statements.len(), 2);
        assert_eq!(t.statements[0], b"insert into t\xe9 values ('\xe9;')");
        let mut second = vec![b' '; 29];
        second.extend_from_slice(b" update t set a = 1 where b = '\xe9'");
        assert_eq!(t.statements[1], second, "one space per byte before it");
        assert_eq!(
            translation(
                b"insert into t values ('\xe9')\0",
                &session("SQL_ASCII"),
                None
            ),
            None,
            "SQL_ASCII converts nothing: its bytes are not characters"
        );
        assert_eq!(
            translation(b"insert into t values (1)\0", &session("SJIS"), None),
            None
        );
    }

    #[test]
    fn a_transaction_block_keeps_its_commit_for_the_stamp() {
        let t = of("begin; update t set a = 1; commit;").expect("translated");
        assert_eq!(t.statements.len(), 2);
        let commit = t
            .commit
            .map(|c| String::from_utf8_lossy(&c).trim().to_owned());
        assert_eq!(commit.as_deref(), Some("commit"));
    }

    #[test]
    fn a_copy_from_stdin_waits_for_its_rows() {
        let t = of("copy t (a) from stdin with (format csv)").expect("translated");
        assert_eq!(
            texts(&t.statements),
            ["copy t (a) from stdin with (format csv)"]
        );
        assert!(t.copy_in);
        assert!(!of("insert into t values (1)").expect("translated").copy_in);
    }

    #[test]
    fn ddl_that_runs_in_a_transaction_block_is_translated_as_a_write() {
        let single = of("create table u (a int)").expect("translated");
        assert_eq!(texts(&single.statements), ["create table u (a int)"]);
        let body = "create function f() returns int language plpgsql as $$ begin return 1; end $$";
        assert_eq!(texts(&of(body).expect("translated").statements), [body]);
        let several =
            of("create table u (a int); insert into u values (1); select 1").expect("translated");
        assert_eq!(several.statements.len(), 3);
        let block = of("begin; alter table t add column b int; commit").expect("translated");
        assert_eq!(
            texts(&block.statements),
            ["begin", "       alter table t add column b int"]
        );
        assert!(block.commit.is_some());
        let block = "do $$ begin if true then create table u (a int); end if; end $$";
        assert_eq!(texts(&of(block).expect("translated").statements), [block]);
        assert_eq!(of("do $$ begin commit; end $$"), None, "it commits inside");
    }

    #[test]
    fn everything_else_is_sent_as_it_is() {
        for sql in [
            "select 1",
            "select 1; select 2",
            "create index concurrently i on t (a)",
            "vacuum t; insert into t values (1)",
            "create database d",
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
        let mut off = session("UTF8");
        off.insert("standard_conforming_strings".into(), "off".into());
        assert_eq!(translation(b"insert into t values (1)\0", &off, None), None);
    }
}
