//! What PostgreSQL's own lexer says about a query string, for callers that
//! must know its shape without parsing it: how many statements it holds and
//! whether it refers to parameters (`$1`); and, through the raw parser,
//! where each statement of a valid string is. The proxy uses this to decide
//! whether a simple Query can run through the extended protocol unchanged.
//!
//! The lexer is PostgreSQL's (through `pg_query`), so quotes, dollar quotes,
//! escape strings, nested comments and identifiers are split exactly as the
//! server splits them — with `standard_conforming_strings` on, which the
//! caller must check.

use pg_query::protobuf::Token;

/// The lexical shape of a query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Statements in the string; empty ones (`;;`) and comments do not count.
    pub statements: usize,
    /// A `$n` parameter reference appears.
    pub has_parameters: bool,
}

/// The shape of `sql`, or `None` when the lexer rejects it (an unterminated
/// quote or comment, a NUL byte).
pub fn shape(sql: &str) -> Option<Shape> {
    if let Some(shape) = plain_shape(sql) {
        return Some(shape);
    }
    let scanned = pg_query::scan(sql).ok()?;
    let mut shape = Shape {
        statements: 0,
        has_parameters: false,
    };
    let mut in_statement = false;
    for token in &scanned.tokens {
        match Token::try_from(token.token) {
            Ok(Token::SqlComment | Token::CComment) => continue,
            Ok(Token::Ascii59) => {
                in_statement = false;
                continue;
            }
            Ok(Token::Param) => shape.has_parameters = true,
            _ => {}
        }
        if !in_statement {
            shape.statements += 1;
            in_statement = true;
        }
    }
    Some(shape)
}

/// The shape of a string with nothing in it the lexer must be asked about —
/// no quote, dollar sign, comment, backslash or NUL — so that every `;` ends
/// a statement and no `$n` can appear; `None` for any other string. Most
/// application statements look like this, and the proxy asks for the shape
/// of every autocommit write sent as a simple Query: scanning those with
/// `pg_query` would cost a call into C and a protobuf decode each.
fn plain_shape(sql: &str) -> Option<Shape> {
    let lexer_needed = sql
        .bytes()
        .any(|b| matches!(b, b'\'' | b'"' | b'$' | b'\\' | 0))
        || sql.contains("--")
        || sql.contains("/*");
    if lexer_needed {
        return None;
    }
    // PostgreSQL's whitespace; anything else is a token.
    let blank = |part: &&str| {
        part.bytes()
            .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c'))
    };
    Some(Shape {
        statements: sql.split(';').filter(|part| !blank(part)).count(),
        has_parameters: false,
    })
}

/// The byte range of each statement of `sql` (from just after the previous
/// `;`, comments included, to its last token), or `None` when the string does not parse — the
/// server would then refuse the whole string before running any of it.
pub fn statements(sql: &str) -> Option<Vec<std::ops::Range<usize>>> {
    let split = pg_query::split_with_parser(sql).ok()?;
    let base = sql.as_ptr() as usize;
    Some(
        split
            .iter()
            .map(|statement| {
                let start = statement.as_ptr() as usize - base;
                start..start + statement.len()
            })
            .collect(),
    )
}

/// True when `sql` is exactly one `COPY … FROM STDIN` (the client sends the
/// rows), as PostgreSQL's parser reads it: not `COPY … TO`, nor a `COPY`
/// from a server file or program, nor a string it would refuse.
pub fn is_copy_from_stdin(sql: &str) -> bool {
    copy_with_the_client(sql) == Some(true)
}

/// True when `sql` is exactly one `COPY … TO STDOUT` (the server sends the
/// rows to the client), as PostgreSQL's parser reads it: not a `COPY` to a
/// server file or program, nor one from anywhere. Its source (a table, or a
/// query that may still write: `COPY (DELETE … RETURNING …) TO STDOUT`) is
/// the caller's to judge.
pub fn is_copy_to_stdout(sql: &str) -> bool {
    copy_with_the_client(sql) == Some(false)
}

/// When `sql` is exactly one `COPY` whose rows go through the client
/// connection (not a server file or program): whether it is `FROM STDIN`.
fn copy_with_the_client(sql: &str) -> Option<bool> {
    use pg_query::NodeEnum;
    // A statement that breaks one of pg_query's assertions must not end the
    // session (see `analysis`).
    let Ok(Ok(parsed)) = std::panic::catch_unwind(|| pg_query::parse(sql)) else {
        return None;
    };
    match &parsed.protobuf.stmts[..] {
        [only] => match only.stmt.as_ref().and_then(|s| s.node.as_ref()) {
            Some(NodeEnum::CopyStmt(copy)) if !copy.is_program && copy.filename.is_empty() => {
                Some(copy.is_from)
            }
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{is_copy_from_stdin, is_copy_to_stdout, shape, statements, Shape};

    #[test]
    fn statements_are_located_by_the_parser() {
        let sql = "insert into t values (';'); /* x */ update t set a = 1 ;";
        let ranges = statements(sql).expect("parses");
        let texts: Vec<&str> = ranges.iter().map(|r| &sql[r.clone()]).collect();
        assert_eq!(
            texts,
            ["insert into t values (';')", " /* x */ update t set a = 1 "]
        );
        assert_eq!(statements("select 1; insert into"), None);
    }

    fn count(sql: &str) -> usize {
        shape(sql).expect(sql).statements
    }

    #[test]
    fn the_plain_shape_is_what_the_lexer_says() {
        let lexed = |sql: &str| {
            let scanned = pg_query::scan(sql).expect(sql);
            let mut n = 0;
            let mut inside = false;
            for token in &scanned.tokens {
                if pg_query::protobuf::Token::try_from(token.token)
                    == Ok(pg_query::protobuf::Token::Ascii59)
                {
                    inside = false;
                } else if !inside {
                    n += 1;
                    inside = true;
                }
            }
            n
        };
        for sql in [
            "UPDATE pgbench_accounts SET abalance = abalance + -4711 WHERE aid = 42;",
            "insert into t values (1)",
            " ;\t\n; update t set a = 1 ;\r\x0c;",
            "insert into t values (1); insert into t values (2);",
            "select 1 - -1; delete from t",
            "",
        ] {
            let plain = super::plain_shape(sql).expect(sql);
            assert_eq!(plain.statements, lexed(sql), "{sql:?}");
            assert!(!plain.has_parameters);
        }
        for sql in [
            "insert into t values ('a;b')",
            "select \"x;y\"",
            "select $$;$$",
            "insert into t values ($1)",
            "select 1 -- ;",
            "select 1 /* ; */",
            "select E'\\';'",
        ] {
            assert_eq!(super::plain_shape(sql), None, "{sql:?}");
        }
    }

    #[test]
    fn statements_are_counted_as_the_server_splits_them() {
        assert_eq!(count("insert into t values (1)"), 1);
        assert_eq!(count("insert into t values (1);"), 1);
        assert_eq!(count(";; update t set a = 1 ;; -- done"), 1);
        assert_eq!(count("select 1; select 2"), 2);
        assert_eq!(count("select 1 -- don't;\n; select 2"), 2);
        assert_eq!(count("insert into t values ('a;b', $$c;d$$, E'\\';')"), 1);
        assert_eq!(count("/* a; /* nested; */ b; */ delete from t"), 1);
        assert_eq!(count("select \"x;y\" from t"), 1);
        assert_eq!(count("-- only a comment"), 0);
        assert_eq!(count(""), 0);
    }

    #[test]
    fn parameters_are_seen_outside_quotes_only() {
        let with = shape("update t set a = $1").expect("lexes");
        assert_eq!(
            with,
            Shape {
                statements: 1,
                has_parameters: true
            }
        );
        assert!(
            !shape("update t set a = '$1'")
                .expect("lexes")
                .has_parameters
        );
        assert!(
            !shape("update t set a = $tag$ $1 $tag$")
                .expect("lexes")
                .has_parameters
        );
    }

    #[test]
    fn unterminated_text_is_rejected() {
        assert_eq!(shape("insert into t values ('abc"), None);
        assert_eq!(shape("select 1 /* open"), None);
    }

    #[test]
    fn copy_from_stdin_is_told_apart_from_other_copies() {
        for sql in [
            "copy t from stdin",
            "COPY public.t (a, b) FROM STDIN WITH (FORMAT binary);",
            "copy t from stdin where a > 1",
        ] {
            assert!(is_copy_from_stdin(sql), "{sql}");
        }
        for sql in [
            "copy t to stdout",
            "copy (select * from stdin) to stdout",
            "copy t from '/tmp/file'",
            "copy t from program 'cat'",
            "copy t from stdin; select 1",
            "copy t from",
            "insert into t values (1)",
        ] {
            assert!(!is_copy_from_stdin(sql), "{sql}");
        }
    }

    #[test]
    fn copy_to_stdout_is_told_apart_from_other_copies() {
        for sql in [
            "copy t to stdout",
            "COPY (SELECT k, v FROM t ORDER BY k) TO STDOUT WITH (FORMAT csv);",
            "copy (select 1 as to, 'stdout') to stdout",
            "copy (delete from t returning *) to stdout",
        ] {
            assert!(is_copy_to_stdout(sql), "{sql}");
        }
        for sql in [
            "copy t from stdin",
            "copy t to '/tmp/file'",
            "copy (select 'to stdout') to program 'cat'",
            "copy t to stdout; select 1",
            "copy t to",
            "select 1",
        ] {
            assert!(!is_copy_to_stdout(sql), "{sql}");
        }
    }
}
