//! Settings changed by calling `set_config(name, value, is_local)` instead
//! of `SET`: common for row-level security (`set_config('app.tenant_id',
//! …, false)`), and invisible in the CommandComplete tag (`SELECT 1`). A
//! statement that does nothing but call it (`SELECT set_config(…)[,
//! set_config(…)]`) is counted as a session command, so the session state
//! keeps it and a new backend runs it again; one that mixes the call with
//! other work cannot be run again on its own and makes the session not
//! movable, as a `SET` mixed with other work does. A call made inside a
//! function is not seen. And the other way round: a `SET LOCAL`, tagged
//! `SET` like any other, ends with its transaction and is counted as work,
//! so that a Query that sets a local timeout beside its statements does not
//! count as mixing settings with work.

use super::lexer::{tokens, Token};
use super::Reply;

/// Re-counts the commands of a finished request whose text is `sql`: its
/// `SELECT set_config(…)` statements become session commands; a statement
/// that calls `set_config` among other work marks the request as mixing
/// settings with work.
pub fn count_as_settings(sql: &[u8], reply: &mut Reply) {
    if reply.failed {
        return;
    }
    let tokens = tokens(sql);
    let mut only_calls = 0;
    let mut set_local = 0;
    let mut mixed = false;
    for statement in tokens.split(|t| *t == Token::Semicolon) {
        if let [first, second, ..] = statement {
            if is_word(first, b"SET") && is_word(second, b"LOCAL") {
                set_local += 1;
                continue;
            }
        }
        if !statement.iter().any(|t| is_word(t, b"set_config")) {
            continue;
        }
        match only_calls_set_config(statement) {
            Some(Scope::Session) => only_calls += 1,
            // Undone when its transaction ends: nothing to keep.
            Some(Scope::Transaction) => {}
            None => mixed = true,
        }
    }
    // A SET LOCAL is tagged SET, but ends with its transaction: work, not
    // a setting to keep.
    let local = set_local.min(reply.session_commands);
    reply.session_commands -= local;
    reply.other_commands += local;
    let moved = only_calls.min(reply.other_commands);
    reply.other_commands -= moved;
    reply.session_commands += moved;
    if mixed && reply.other_commands > 0 {
        reply.session_commands += 1;
    }
}

/// What a statement that only calls `set_config` changes.
pub(super) enum Scope {
    /// At least one call may change the session (`is_local` not the literal
    /// `true`).
    Session,
    /// Every call is `is_local => true`: the transaction only.
    Transaction,
}

/// For `SELECT [pg_catalog.]set_config(…) [[AS] alias] [, …]` and nothing
/// else, with no query in the arguments: what it changes. None for any
/// other statement. Calls of `current_setting(…)` may stand beside them:
/// reading a setting as it is changed is harmless to run again (asyncpg
/// turns `jit` off around its catalog lookups with `SELECT
/// current_setting('jit') AS cur, set_config('jit', 'off', false) AS new`).
pub(super) fn only_calls_set_config(statement: &[Token<'_>]) -> Option<Scope> {
    let (first, mut rest) = statement.split_first()?;
    if !is_word(first, b"SELECT") {
        return None;
    }
    let mut scope = Scope::Transaction;
    loop {
        if let [schema, Token::Dot, tail @ ..] = rest {
            if !is_word(schema, b"pg_catalog") {
                return None;
            }
            rest = tail;
        }
        let [name, Token::Open, tail @ ..] = rest else {
            return None;
        };
        let sets = is_word(name, b"set_config");
        if !sets && !is_word(name, b"current_setting") {
            return None;
        }
        let close = matching_close(tail)?;
        let arguments = &tail[..close];
        if arguments.iter().any(|t| is_word(t, b"SELECT")) {
            return None;
        }
        if sets && !matches!(arguments, [.., Token::Comma, last] if is_word(last, b"true")) {
            scope = Scope::Session;
        }
        rest = &tail[close + 1..];
        if rest.first().is_some_and(|t| is_word(t, b"AS")) {
            rest = &rest[1..];
        }
        if let [Token::Word(_) | Token::Quoted(_), tail @ ..] = rest {
            rest = tail;
        }
        match rest {
            [] => return Some(scope),
            [Token::Comma, tail @ ..] => rest = tail,
            _ => return None,
        }
    }
}

/// Index of the `)` closing the parenthesis just before `tokens`.
fn matching_close(tokens: &[Token<'_>]) -> Option<usize> {
    let mut depth = 1usize;
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Open => depth += 1,
            Token::Close => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

fn is_word(token: &Token<'_>, keyword: &[u8]) -> bool {
    matches!(token, Token::Word(w) if w.eq_ignore_ascii_case(keyword))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counted(sql: &str, other_commands: u32) -> (u32, u32) {
        let mut reply = Reply::default();
        reply.other_commands = other_commands;
        count_as_settings(sql.as_bytes(), &mut reply);
        (reply.session_commands, reply.other_commands)
    }

    #[test]
    fn a_statement_that_only_calls_set_config_is_a_setting() {
        for sql in [
            "select set_config('app.tenant', '42', false)",
            "SELECT pg_catalog.set_config('app.tenant', $1, false) AS tenant",
            "select set_config('a.b', 'x', false), set_config('a.c', lower('Y'), false)",
            "select set_config('search_path', 'app, public', false);",
            "SELECT current_setting('jit') AS cur, set_config('jit', 'off', false) AS new",
        ] {
            assert_eq!(counted(sql, 1), (1, 0), "{sql}");
        }
        assert_eq!(
            counted(
                "select set_config('a.b', '1', false); select set_config('a.c', '2', false)",
                2
            ),
            (2, 0)
        );
    }

    #[test]
    fn set_config_beside_other_work_marks_the_statement_mixed() {
        for sql in [
            "select set_config('a.b', '1', false), count(*) from t",
            "select set_config('a.b', (select max(x)::text from t), false)",
            "update t set x = 1 where set_config('a.b', '1', false) is not null",
            "select current_setting('a.b'), set_config('a.b', '1', false), x from t",
        ] {
            let (session, other) = counted(sql, 1);
            assert!(session > 0 && other > 0, "{sql}");
        }
        assert_eq!(
            counted("select set_config('a.b', '1', false); select 1", 2),
            (1, 1),
            "a Query with a setting and a read mixes them"
        );
    }

    #[test]
    fn set_local_is_work_not_a_setting() {
        let mut reply = Reply::default();
        reply.session_commands = 2;
        reply.other_commands = 1;
        count_as_settings(
            b"set local statement_timeout = 5; set search_path = a; select 1",
            &mut reply,
        );
        assert_eq!((reply.session_commands, reply.other_commands), (1, 2));
    }

    #[test]
    fn a_transaction_local_set_config_is_no_setting() {
        assert_eq!(counted("select set_config('a.b', '1', true)", 1), (0, 1));
        assert_eq!(
            counted(
                "select set_config('a.b', '1', true), set_config('a.c', '1', false)",
                1
            ),
            (1, 0)
        );
        assert_eq!(counted("select set_config('a.b', '1', $3)", 1), (1, 0));
    }

    #[test]
    fn other_statements_are_left_alone() {
        assert_eq!(counted("select 'set_config(x)'", 1), (0, 1));
        assert_eq!(counted("select current_setting('a.b')", 1), (0, 1));
        let mut failed = Reply::default();
        failed.failed = true;
        count_as_settings(b"select set_config('a.b', '1', false)", &mut failed);
        assert_eq!(failed.session_commands, 0);
    }
}
