//! Recognising a statement that commits the current transaction (`COMMIT`,
//! `END`, with optional `WORK`/`TRANSACTION` and `AND NO CHAIN`), from its
//! SQL text. A small tokenizer — whitespace, `--` and nested `/* */`
//! comments, keywords, one optional `;` — because the proxy checks this on
//! the hot path of every transaction's end and needs no full parse for it.
//! Beside it, the quick classifications of statement text the journal and
//! the relay need: reads, data writes, DDL that runs in a transaction
//! block, transaction control, COPY, CALL and DO — words outside quotes,
//! dollar-quoted literals and comments.

use crate::journal::lexer::dollar_quoted_len;

/// True when `sql` is exactly one transaction commit.
pub fn is_commit(sql: &[u8]) -> bool {
    is_transaction_end(sql, &[b"COMMIT", b"END"])
}

/// True when `sql` is exactly one commit that chains a new transaction:
/// `COMMIT AND CHAIN` or `END AND CHAIN` (with optional `WORK` or
/// `TRANSACTION`).
pub fn is_commit_and_chain(sql: &[u8]) -> bool {
    transaction_end_tail(
        sql,
        &[b"COMMIT", b"END"],
        |tail| matches!(tail, [and, chain] if and.eq_ignore_ascii_case(b"AND") && chain.eq_ignore_ascii_case(b"CHAIN")),
    )
}

/// True when `sql` is exactly one commit, chaining a new transaction or not.
pub fn commits(sql: &[u8]) -> bool {
    is_commit(sql) || is_commit_and_chain(sql)
}

/// True when `sql` is exactly one statement that ends the transaction
/// without chaining a new one: `COMMIT`, `END`, `ROLLBACK` or `ABORT`
/// (not `ROLLBACK TO SAVEPOINT`). In a failed transaction each rolls it
/// back.
pub fn ends_transaction_alone(sql: &[u8]) -> bool {
    is_transaction_end(sql, &[b"COMMIT", b"END", b"ROLLBACK", b"ABORT"])
}

/// True when `sql` is one of `keywords`, optionally followed by `WORK` or
/// `TRANSACTION` and by `AND NO CHAIN`.
fn is_transaction_end(sql: &[u8], keywords: &[&[u8]]) -> bool {
    transaction_end_tail(sql, keywords, |tail| match tail {
        [] => true,
        [and, no, chain] => {
            and.eq_ignore_ascii_case(b"AND")
                && no.eq_ignore_ascii_case(b"NO")
                && chain.eq_ignore_ascii_case(b"CHAIN")
        }
        _ => false,
    })
}

/// True when `sql` is one of `keywords`, optionally followed by `WORK` or
/// `TRANSACTION`, and the words after those pass `tail`.
fn transaction_end_tail(sql: &[u8], keywords: &[&[u8]], tail: impl Fn(&[&[u8]]) -> bool) -> bool {
    // Asked of every statement: most start with another word, told without
    // collecting the words.
    if leading_word(sql).is_some_and(|first| !is_one_of(first, keywords)) {
        return false;
    }
    let Some(words) = words(sql) else {
        return false;
    };
    let mut rest: &[&[u8]] = &words;
    match rest.first() {
        Some(first) if is_one_of(first, keywords) => rest = &rest[1..],
        _ => return false,
    }
    if rest
        .first()
        .is_some_and(|w| is_one_of(w, &[b"WORK", b"TRANSACTION"]))
    {
        rest = &rest[1..];
    }
    tail(rest)
}

/// The first word of `sql` as [`words`] would find it, when nothing but
/// whitespace comes before it; `None` when a comment or anything else does.
fn leading_word(sql: &[u8]) -> Option<&[u8]> {
    let start = sql
        .iter()
        .position(|&c| !(c.is_ascii_whitespace() || c == 0))?;
    let rest = &sql[start..];
    if !rest[0].is_ascii_alphabetic() {
        return None;
    }
    let len = rest
        .iter()
        .position(|&c| !(c.is_ascii_alphabetic() || c == b'_'))
        .unwrap_or(rest.len());
    Some(&rest[..len])
}

/// Splits `sql` into words, skipping whitespace and comments; `None` for
/// anything but letters, whitespace, comments and one final semicolon.
fn words(sql: &[u8]) -> Option<Vec<&[u8]>> {
    let mut words = Vec::new();
    let mut i = 0;
    let mut ended = false;
    while i < sql.len() {
        let c = sql[i];
        if c.is_ascii_whitespace() || c == 0 {
            i += 1;
        } else if sql[i..].starts_with(b"--") {
            while i < sql.len() && sql[i] != b'\n' {
                i += 1;
            }
        } else if sql[i..].starts_with(b"/*") {
            i += crate::journal::lexer::block_comment_len(&sql[i..])?;
        } else if c == b';' {
            if ended {
                return None;
            }
            ended = true;
            i += 1;
        } else if c.is_ascii_alphabetic() && !ended {
            let start = i;
            while i < sql.len() && (sql[i].is_ascii_alphabetic() || sql[i] == b'_') {
                i += 1;
            }
            words.push(&sql[start..i]);
        } else {
            return None;
        }
    }
    Some(words)
}

#[cfg(test)]
#[path = "commit_sql_tests.rs"]
mod tests;

/// True when `sql` has a `COMMIT`, `END`, `ROLLBACK` or `ABORT` keyword
/// anywhere (outside quotes and comments): a statement list that may end
/// a transaction and so commit, either at that COMMIT or in the implicit
/// transaction the statements after a ROLLBACK run in.
pub fn mentions_transaction_end(sql: &[u8]) -> bool {
    loose_words(sql).any(|w| is_one_of(w, &[b"COMMIT", b"END", b"ROLLBACK", b"ABORT"]))
}

/// True when `sql` surely only reads: one statement whose first keyword is
/// `SELECT`, `SHOW`, `VALUES` or `TABLE`, with no `INTO` (which would create
/// a table). Anything else — several statements, `WITH` (which may modify
/// data), DDL, DML — may write. Functions with side effects called from a
/// `SELECT` cannot be seen here; their replay is caught by the digest check
/// when the client already received their result.
pub fn is_read_only(sql: &[u8]) -> bool {
    let mut words = loose_words(sql);
    words
        .next()
        .is_some_and(|first| is_one_of(first, &[b"SELECT", b"SHOW", b"VALUES", b"TABLE"]))
        && !words.any(|w| w.eq_ignore_ascii_case(b"INTO"))
        && !has_second_statement(sql)
}

/// True when running `sql` again outside a transaction changes no data: a
/// read, or one statement that starts a transaction, rolls one back,
/// changes session settings, closes cursors, or maintains what the data is
/// stored in without changing it (`VACUUM`, `ANALYZE`, `REINDEX`,
/// `CLUSTER`, `CHECKPOINT`: run again after a failover, they do their work
/// again on the new primary).
pub fn is_harmless_to_repeat(sql: &[u8]) -> bool {
    const HARMLESS_FIRST: &[&[u8]] = &[
        b"BEGIN",
        b"CLOSE",
        b"START",
        b"SET",
        b"RESET",
        b"LISTEN",
        b"UNLISTEN",
        b"DEALLOCATE",
        b"DISCARD",
        b"ROLLBACK",
        b"ABORT",
        b"VACUUM",
        b"ANALYZE",
        b"ANALYSE",
        b"REINDEX",
        b"CLUSTER",
        b"CHECKPOINT",
    ];
    if is_read_only(sql) {
        return true;
    }
    loose_words(sql)
        .next()
        .is_some_and(|first| is_one_of(first, HARMLESS_FIRST))
        && !has_second_statement(sql)
}

/// True when `sql` is a statement that writes data and runs the same in the
/// simple and the extended protocol: `INSERT`, `UPDATE`, `DELETE`, `MERGE`,
/// `TRUNCATE`, `SELECT … INTO`, or a `WITH` that holds one of the first four.
/// DDL, `CALL`, `VACUUM` and other utility statements are not (some cannot
/// run inside a transaction block or a pipeline, and `CALL` may commit).
pub fn is_data_write(sql: &[u8]) -> bool {
    let mut words = loose_words(sql);
    let Some(first) = words.next() else {
        return false;
    };
    let is = |w: &[u8], of: &[&[u8]]| of.iter().any(|k| w.eq_ignore_ascii_case(k));
    const DML: &[&[u8]] = &[b"INSERT", b"UPDATE", b"DELETE", b"MERGE"];
    if is(first, DML) || is(first, &[b"TRUNCATE"]) {
        return true;
    }
    if is(first, &[b"WITH"]) {
        return words.any(|w| is(w, DML));
    }
    is(first, &[b"SELECT"]) && words.any(|w| is(w, &[b"INTO"]))
}

/// True when `sql`, one statement (split by the caller: a function's body
/// may hold semicolons), is DDL PostgreSQL runs inside a
/// transaction block like any other (`CREATE`, `ALTER`, `DROP`, `COMMENT`,
/// `GRANT`, `REVOKE`, `SECURITY LABEL`, `REFRESH`), so that a simple Query
/// of it can go through the extended protocol with the commit stamp behind
/// it and be kept like a data write. Not: a database, tablespace or
/// subscription, `ALTER SYSTEM`, anything `CONCURRENTLY` (some of those
/// PostgreSQL refuses in a transaction block, others commit on their own),
/// nor maintenance that changes no data (`VACUUM`, `CLUSTER`, `REINDEX`).
pub fn is_transactional_ddl(sql: &[u8]) -> bool {
    const OWN_TRANSACTIONS: &[&[u8]] = &[b"DATABASE", b"TABLESPACE", b"SUBSCRIPTION", b"SYSTEM"];
    let mut words = loose_words(sql);
    words
        .next()
        .is_some_and(|first| is_one_of(first, DDL_FIRST))
        && words
            .next()
            .is_some_and(|second| !is_one_of(second, OWN_TRANSACTIONS))
        && !loose_words(sql).any(|w| w.eq_ignore_ascii_case(b"CONCURRENTLY"))
}

/// The first words of the statements [`is_transactional_ddl`] looks at.
const DDL_FIRST: &[&[u8]] = &[
    b"CREATE",
    b"ALTER",
    b"DROP",
    b"COMMENT",
    b"GRANT",
    b"REVOKE",
    b"SECURITY",
    b"REFRESH",
];

/// True when `sql` names a DDL keyword anywhere (outside quotes and
/// comments): a statement list that may hold transactional DDL.
pub fn mentions_ddl(sql: &[u8]) -> bool {
    loose_words(sql).any(|w| is_one_of(w, DDL_FIRST))
}

/// True when `sql` names a data-writing keyword anywhere (outside quotes
/// and comments): a statement list that may hold a data write.
pub fn mentions_data_write(sql: &[u8]) -> bool {
    loose_words(sql).any(|w| {
        [
            &b"INSERT"[..],
            b"UPDATE",
            b"DELETE",
            b"MERGE",
            b"TRUNCATE",
            b"INTO",
        ]
        .iter()
        .any(|k| w.eq_ignore_ascii_case(k))
    })
}

/// True when `sql` may change the characteristics a transaction passes on
/// to the one `COMMIT AND CHAIN` opens (isolation level, read-only,
/// deferrable), or their session defaults: `SET TRANSACTION`, `SET SESSION
/// CHARACTERISTICS`, or any mention of `transaction_isolation`,
/// `transaction_read_only`, `transaction_deferrable` (their `default_`
/// forms included), in a `SET` or a `set_config` call alike.
pub fn changes_transaction_characteristics(sql: &[u8]) -> bool {
    let mentions = |needle: &[u8]| {
        sql.windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
    };
    if [
        &b"transaction_isolation"[..],
        b"transaction_read_only",
        b"transaction_deferrable",
        b"characteristics",
    ]
    .iter()
    .any(|needle| mentions(needle))
    {
        return true;
    }
    let mut after_set = false;
    loose_words(sql).any(|w| {
        let set_transaction = after_set && w.eq_ignore_ascii_case(b"TRANSACTION");
        after_set = w.eq_ignore_ascii_case(b"SET");
        set_transaction
    })
}

/// True when `sql` is one statement that opens a transaction block
/// (`BEGIN …` or `START TRANSACTION …`).
pub fn starts_transaction(sql: &[u8]) -> bool {
    let mut words = loose_words(sql);
    let opens = match words.next() {
        Some(w) if w.eq_ignore_ascii_case(b"BEGIN") => true,
        Some(w) if w.eq_ignore_ascii_case(b"START") => words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case(b"TRANSACTION")),
        _ => false,
    };
    opens && !has_second_statement(sql)
}

/// True when the last statement of `sql` rolls back to a savepoint
/// (`ROLLBACK [WORK | TRANSACTION] TO [SAVEPOINT] name`): its CommandComplete
/// tag is `ROLLBACK`, as for a whole transaction, but the transaction goes
/// on.
pub fn rolls_back_to_savepoint(sql: &[u8]) -> bool {
    let mut text = sql.trim_ascii_end();
    while let Some(rest) = text.strip_suffix(b";") {
        text = rest.trim_ascii_end();
    }
    let last = text
        .iter()
        .rposition(|&c| c == b';')
        .map_or(text, |end| &text[end + 1..]);
    let mut words = loose_words(last);
    if !words
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case(b"ROLLBACK"))
    {
        return false;
    }
    let mut next = words.next();
    if next.is_some_and(|w| is_one_of(w, &[b"WORK", b"TRANSACTION"])) {
        next = words.next();
    }
    next.is_some_and(|w| w.eq_ignore_ascii_case(b"TO"))
}

/// True when a server in a failed transaction refuses `sql` (with `25P02`):
/// its first statement is not one that may end the transaction or roll back
/// to a savepoint (`COMMIT`, `END`, `ROLLBACK`, `ABORT`, `PREPARE
/// TRANSACTION`). Text that starts with no word is not known to be refused.
pub fn refused_in_failed_transaction(sql: &[u8]) -> bool {
    loose_words(sql).next().is_some_and(|first| {
        first.iter().all(u8::is_ascii_alphabetic)
            && !is_one_of(
                first,
                &[b"COMMIT", b"END", b"ROLLBACK", b"ABORT", b"PREPARE"],
            )
    })
}

/// True when `sql` may end a transaction: it is not known to be refused by
/// a failed one, and it does not only roll back to a savepoint.
pub fn may_end_transaction(sql: &[u8]) -> bool {
    !refused_in_failed_transaction(sql) && !rolls_back_to_savepoint(sql)
}

/// True when `sql` is a COPY statement.
pub fn is_copy(sql: &[u8]) -> bool {
    first_word_is(sql, b"COPY")
}

/// True when `sql` is a `CALL` statement.
pub fn is_call(sql: &[u8]) -> bool {
    first_word_is(sql, b"CALL")
}

/// True when `sql` is a `DO` statement (an anonymous code block).
pub fn is_do(sql: &[u8]) -> bool {
    first_word_is(sql, b"DO")
}

/// True when `sql` is one query a function it calls could write through: a
/// read ([`is_read_only`]) or a statement starting with `WITH` that is
/// not a data write already.
pub fn is_query(sql: &[u8]) -> bool {
    is_read_only(sql)
        || (loose_words(sql)
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case(b"WITH"))
            && !has_second_statement(sql))
}

/// True when `sql` may start, end or mark a transaction (`BEGIN`, `START`,
/// `COMMIT`, `END`, `ROLLBACK`, `ABORT`, `SAVEPOINT`, `RELEASE`,
/// `PREPARE TRANSACTION`), or holds several statements, one of which may.
pub fn controls_transaction(sql: &[u8]) -> bool {
    const CONTROL_FIRST: &[&[u8]] = &[
        b"BEGIN",
        b"START",
        b"COMMIT",
        b"END",
        b"ROLLBACK",
        b"ABORT",
        b"SAVEPOINT",
        b"RELEASE",
    ];
    const CONTROL_ANYWHERE: &[&[u8]] =
        &[b"BEGIN", b"START", b"COMMIT", b"END", b"ROLLBACK", b"ABORT"];
    let mut words = loose_words(sql);
    let Some(first) = words.next() else {
        return false;
    };
    let controls = is_one_of(first, CONTROL_FIRST)
        || (first.eq_ignore_ascii_case(b"PREPARE")
            && words
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case(b"TRANSACTION")));
    controls
        || (has_second_statement(sql) && loose_words(sql).any(|w| is_one_of(w, CONTROL_ANYWHERE)))
}

/// How a statement run outside a transaction block bears on the Sync that
/// ends its batch (see `Journal::batch_may_write`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutocommitKind {
    /// The Sync must never be held: a COPY (it needs the client's data
    /// before it is answered) or a statement that controls the transaction.
    NeverHold,
    /// Running it again changes no data (see [`is_harmless_to_repeat`]).
    Harmless,
    /// It may write data.
    MayWrite,
}

impl AutocommitKind {
    /// Classifies `sql`. The journal keeps the answer with each prepared
    /// statement, so that a batch that executes one pays a lookup, not a scan
    /// of its text.
    pub fn of(sql: &[u8]) -> AutocommitKind {
        if is_copy(sql) || controls_transaction(sql) {
            AutocommitKind::NeverHold
        } else if is_harmless_to_repeat(sql) {
            AutocommitKind::Harmless
        } else {
            AutocommitKind::MayWrite
        }
    }
}

/// True when the first word of `sql` is `keyword` (upper case), in any case.
fn first_word_is(sql: &[u8], keyword: &[u8]) -> bool {
    loose_words(sql)
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case(keyword))
}

/// True when `word` is one of `keywords` (upper case), in any case.
fn is_one_of(word: &[u8], keywords: &[&[u8]]) -> bool {
    keywords.iter().any(|k| word.eq_ignore_ascii_case(k))
}

/// The words of `sql` outside quotes, dollar-quoted literals and comments, found as they are asked
/// for: the checks above run for every transaction and mostly need the
/// first word only, so nothing is collected or allocated.
fn loose_words(sql: &[u8]) -> LooseWords<'_> {
    LooseWords { sql, at: 0 }
}

/// Iterator of [`loose_words`].
struct LooseWords<'a> {
    sql: &'a [u8],
    at: usize,
}

impl<'a> Iterator for LooseWords<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let sql = self.sql;
        let mut i = self.at;
        while i < sql.len() {
            let c = sql[i];
            if sql[i..].starts_with(b"--") {
                while i < sql.len() && sql[i] != b'\n' {
                    i += 1;
                }
            } else if sql[i..].starts_with(b"/*") {
                match find(&sql[i + 2..], b"*/") {
                    Some(end) => i += end + 4,
                    None => break,
                }
            } else if c == b'\'' || c == b'"' {
                i += 1;
                while i < sql.len() && sql[i] != c {
                    i += 1;
                }
                i += 1;
            } else if c == b'$' {
                i += dollar_quoted_len(&sql[i..]);
            } else if c.is_ascii_alphabetic() || c == b'_' {
                let start = i;
                while i < sql.len()
                    && (sql[i].is_ascii_alphanumeric() || sql[i] == b'_' || sql[i] == b'$')
                {
                    i += 1;
                }
                self.at = i;
                return Some(&sql[start..i]);
            } else {
                i += 1;
            }
        }
        self.at = sql.len();
        None
    }
}

/// True when a `;` is followed by anything but whitespace (several
/// statements). Quotes and dollar-quoted literals (a function's or a `DO`
/// block's body) are followed; comments are not, so a `;` inside one counts:
/// such a statement is treated as possibly writing, which is safe.
pub fn has_second_statement(sql: &[u8]) -> bool {
    let mut i = 0;
    while i < sql.len() {
        match sql[i] {
            quote @ (b'\'' | b'"') => {
                i += 1;
                while i < sql.len() && sql[i] != quote {
                    i += 1;
                }
                i += 1;
            }
            b'$' => i += dollar_quoted_len(&sql[i..]),
            b';' => {
                return sql[i + 1..]
                    .iter()
                    .any(|b| !b.is_ascii_whitespace() && *b != 0)
            }
            _ => i += 1,
        }
    }
    false
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod read_only_tests {
    use super::is_read_only;

    #[test]
    fn plain_reads_are_read_only() {
        for sql in [
            "select 1",
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            "show search_path;",
            "values (1)",
            "/* x */ select 'a;b'",
        ] {
            assert!(is_read_only(sql.as_bytes()), "{sql:?}");
        }
    }

    #[test]
    fn anything_that_may_write_is_not() {
        for sql in [
            "insert into t values (1)",
            "select * into t2 from t",
            "with x as (delete from t returning *) select * from x",
            "select 1; insert into t values (1)",
            "update t set x = 1",
            "",
        ] {
            assert!(!is_read_only(sql.as_bytes()), "{sql:?}");
        }
    }
}

#[cfg(test)]
mod autocommit_kind_tests {
    use super::AutocommitKind;

    #[test]
    fn copy_and_transaction_control_are_never_held_reads_are_harmless_writes_may_write() {
        for (sql, kind) in [
            ("COPY t FROM STDIN", AutocommitKind::NeverHold),
            ("begin", AutocommitKind::NeverHold),
            ("COMMIT", AutocommitKind::NeverHold),
            ("select 1; commit", AutocommitKind::NeverHold),
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
                AutocommitKind::Harmless,
            ),
            ("SET search_path = app", AutocommitKind::Harmless),
            ("vacuum (analyze) t", AutocommitKind::Harmless),
            ("ANALYZE t", AutocommitKind::Harmless),
            ("reindex table t", AutocommitKind::Harmless),
            ("explain analyze delete from t", AutocommitKind::MayWrite),
            ("UPDATE t SET a = 1", AutocommitKind::MayWrite),
            ("SELECT * INTO t2 FROM t", AutocommitKind::MayWrite),
            (
                "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                AutocommitKind::MayWrite,
            ),
        ] {
            assert_eq!(AutocommitKind::of(sql.as_bytes()), kind, "{sql}");
        }
    }
}

#[cfg(test)]
mod savepoint_tests {
    use super::rolls_back_to_savepoint;

    #[test]
    fn rolling_back_to_a_savepoint_is_told_from_rolling_back() {
        for sql in [
            "rollback to a",
            "ROLLBACK TRANSACTION TO SAVEPOINT a;",
            "insert into t values (1); rollback work to savepoint a ; ",
        ] {
            assert!(rolls_back_to_savepoint(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "rollback",
            "rollback to a; rollback",
            "abort",
            "select 'rollback to a'",
        ] {
            assert!(!rolls_back_to_savepoint(sql.as_bytes()), "{sql}");
        }
    }
}
