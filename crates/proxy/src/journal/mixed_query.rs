//! A simple Query that changed session settings beside other work (asyncpg's
//! pool runs `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET
//! ALL;` each time it takes a connection back): running it again on a new
//! backend would do the other work twice, so only its settings are kept —
//! the statements a new backend must run again, taken out of the Query in
//! their order. The text is split by PostgreSQL's parser; this runs only for
//! such a Query, never for plain work.

use bytes::{BufMut, BytesMut};

use super::lexer::{tokens, Token};
use super::set_config::{only_calls_set_config, Scope};

/// For the text of a Query whose reply counted `session_commands` settings
/// among other commands: a Query of only its settings statements, or None
/// when they cannot be told apart from the rest with certainty (the text
/// does not parse, or the statements found are not as many as the server's
/// settings commands).
pub fn settings_only(sql: &[u8], session_commands: u32) -> Option<BytesMut> {
    let text = std::str::from_utf8(sql).ok()?;
    let mut kept: Vec<&[u8]> = Vec::new();
    for range in understudy_rules::lexical::statements(text)? {
        let statement = &sql[range];
        if is_setting(&tokens(statement)) {
            kept.push(statement);
        }
    }
    if kept.len() != session_commands as usize || kept.is_empty() {
        return None;
    }
    let body_len: usize = kept.iter().map(|s| s.len() + 1).sum::<usize>() + 1;
    let mut frame = BytesMut::with_capacity(5 + body_len);
    frame.put_u8(understudy_protocol::frontend::tag::QUERY);
    frame.put_u32((4 + body_len) as u32);
    for statement in kept {
        frame.put_slice(statement);
        frame.put_u8(b';');
    }
    frame.put_u8(0);
    Some(frame)
}

/// A statement the journal counts as a session command: `SET` (not `SET
/// LOCAL`, which ends with its transaction), `RESET`, `LISTEN`, `UNLISTEN`,
/// `PREPARE`, `DEALLOCATE`, or a `SELECT` that only calls `set_config(…,
/// false)`.
fn is_setting(statement: &[Token<'_>]) -> bool {
    let word = |i: usize, keyword: &[u8]| matches!(statement.get(i), Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword));
    if word(0, b"SET") {
        return !word(1, b"LOCAL");
    }
    [
        b"RESET" as &[u8],
        b"LISTEN",
        b"UNLISTEN",
        b"PREPARE",
        b"DEALLOCATE",
    ]
    .iter()
    .any(|keyword| word(0, keyword))
        || matches!(only_calls_set_config(statement), Some(Scope::Session))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(sql: &str, session_commands: u32) -> Option<String> {
        settings_only(sql.as_bytes(), session_commands)
            .map(|frame| String::from_utf8_lossy(&frame[5..frame.len() - 1]).into_owned())
    }

    #[test]
    fn asyncpgs_reset_keeps_its_settings() {
        assert_eq!(
            settings(
                "SELECT pg_advisory_unlock_all();\nCLOSE ALL;\nUNLISTEN *;\nRESET ALL;",
                2
            )
            .as_deref(),
            Some("\nUNLISTEN *;\nRESET ALL;")
        );
    }

    #[test]
    fn work_between_settings_is_left_out_in_order() {
        assert_eq!(
            settings(
                "set search_path = a; insert into t values (';'); \
                 set local statement_timeout = 1; select set_config('app.x', '1', false); \
                 -- last\n listen c",
                3
            )
            .as_deref(),
            Some(
                "set search_path = a; select set_config('app.x', '1', false); -- last\n listen c;"
            )
        );
    }

    #[test]
    fn settings_the_server_did_not_count_leave_the_query_mixed() {
        // set_config beside other work in one statement: counted one more
        // session command than there are settings statements.
        assert_eq!(
            settings(
                "select set_config('a.b', '1', false), count(*) from t; set x = 1",
                2
            ),
            None
        );
        assert_eq!(settings("select 1; update t set a = 1", 1), None);
        assert_eq!(settings("select 1; set x = 1; select (", 1), None);
    }
}
