//! Server-side objects that tie a session to its backend: temporary tables
//! (and views, sequences, functions in `pg_temp`), `WITH HOLD` cursors and
//! session-level advisory locks. They live only in the backend that made
//! them, and a new backend cannot be given them again (a temporary table's
//! rows, a cursor's position, a lock another session may take meanwhile).
//! While a session holds one, it is not moved: a failover ends it with a
//! clear error instead of letting it go on without them.
//!
//! Found from the text of each statement the session ran, when its unit
//! ends. Reading them is cheap on purpose, since every finished statement passes `lexer::worth_reading` and only the rare ones that
//! mention a keyword are read further (by `lexer`). What the text cannot tell is
//! decided so that a session is kept rather than moved without its objects:
//! every call of a locking function counts as a lock taken (a
//! `pg_try_advisory_lock` that got nothing included), an unlock counts only
//! when its statement succeeded, and objects are released only when the
//! statement and its transaction succeeded.

use std::collections::BTreeSet;

use super::lexer::{qualified_name, tokens, Token};
use super::NotReplayable;

/// The objects a session holds that only its current backend has.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pins {
    /// Temporary relations and functions, by name.
    temporary: BTreeSet<Vec<u8>>,
    /// Open `WITH HOLD` cursors, by name.
    hold_cursors: BTreeSet<Vec<u8>>,
    /// Session-level advisory locks taken and not known to be released.
    advisory_locks: u32,
}

/// How a statement ended, as far as the pins care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The statement (or its Query) got an error.
    pub failed: bool,
    /// Its transaction committed (or it ran outside one and succeeded).
    pub committed: bool,
}

impl Pins {
    /// Why the session cannot be moved while it holds what it holds.
    pub fn reason(&self) -> Option<NotReplayable> {
        let name = |set: &BTreeSet<Vec<u8>>| {
            set.iter()
                .next()
                .map(|n| String::from_utf8_lossy(n).into_owned())
        };
        if let Some(table) = name(&self.temporary) {
            Some(NotReplayable::TemporaryObject(table))
        } else if let Some(cursor) = name(&self.hold_cursors) {
            Some(NotReplayable::HoldCursor(cursor))
        } else if self.advisory_locks > 0 {
            Some(NotReplayable::AdvisoryLock)
        } else {
            None
        }
    }

    /// True when the session holds nothing of the kind.
    pub fn is_empty(&self) -> bool {
        self.reason().is_none()
    }

    /// Applies what `sql` (one Query's text, or one executed statement's)
    /// did, given how it ended.
    pub fn apply(&mut self, sql: &[u8], outcome: Outcome) {
        let tokens = tokens(sql);
        for statement in tokens.split(|t| *t == Token::Semicolon) {
            self.statement(statement, outcome);
        }
    }

    fn statement(&mut self, tokens: &[Token<'_>], outcome: Outcome) {
        let kept = !outcome.failed && outcome.committed;
        self.advisory(tokens, outcome.failed);
        let word = |i: usize| match tokens.get(i) {
            Some(Token::Word(w)) => Some(*w),
            _ => None,
        };
        let is =
            |i: usize, keyword: &[u8]| word(i).is_some_and(|w| w.eq_ignore_ascii_case(keyword));
        let Some(first) = word(0) else {
            return;
        };
        if first.eq_ignore_ascii_case(b"DISCARD") && !outcome.failed {
            if is(1, b"ALL") {
                *self = Pins::default();
            } else if is(1, b"TEMP") || is(1, b"TEMPORARY") {
                self.temporary.clear();
            }
        } else if first.eq_ignore_ascii_case(b"CREATE") && kept {
            if let Some(name) = created_temporary(tokens) {
                self.temporary.insert(name);
            }
        } else if (first.eq_ignore_ascii_case(b"SELECT") || first.eq_ignore_ascii_case(b"WITH"))
            && kept
        {
            if let Some(name) = selected_into_temporary(tokens) {
                self.temporary.insert(name);
            }
        } else if first.eq_ignore_ascii_case(b"DROP") && kept {
            for name in dropped(tokens) {
                self.temporary.remove(&name);
            }
        } else if first.eq_ignore_ascii_case(b"DECLARE") && kept {
            if let Some(name) = declared_with_hold(tokens) {
                self.hold_cursors.insert(name);
            }
        } else if first.eq_ignore_ascii_case(b"CLOSE") && kept {
            if is(1, b"ALL") {
                self.hold_cursors.clear();
            } else if let Some((_, name)) = qualified_name(&tokens[1..]) {
                self.hold_cursors.remove(&name);
            }
        }
    }

    /// Counts the advisory-lock functions `tokens` call.
    fn advisory(&mut self, tokens: &[Token<'_>], failed: bool) {
        for token in tokens {
            let Token::Word(word) = token else {
                continue;
            };
            if word.len() < 16 || !word[..3].eq_ignore_ascii_case(b"pg_") {
                continue;
            }
            let is = |name: &[u8]| word.eq_ignore_ascii_case(name);
            if is(b"pg_advisory_lock")
                || is(b"pg_advisory_lock_shared")
                || is(b"pg_try_advisory_lock")
                || is(b"pg_try_advisory_lock_shared")
            {
                self.advisory_locks = self.advisory_locks.saturating_add(1);
            } else if failed {
                continue;
            } else if is(b"pg_advisory_unlock") || is(b"pg_advisory_unlock_shared") {
                self.advisory_locks = self.advisory_locks.saturating_sub(1);
            } else if is(b"pg_advisory_unlock_all") {
                self.advisory_locks = 0;
            }
        }
    }
}

/// `CREATE [OR REPLACE] [GLOBAL | LOCAL] {TEMP | TEMPORARY} [UNLOGGED]
/// [RECURSIVE] {TABLE | VIEW | SEQUENCE} [IF NOT EXISTS] name`, not `ON
/// COMMIT DROP`; or any `CREATE` of an object named `pg_temp.name`.
fn created_temporary(tokens: &[Token<'_>]) -> Option<Vec<u8>> {
    let mut temporary = false;
    let mut i = 1;
    while let Some(Token::Word(w)) = tokens.get(i) {
        if w.eq_ignore_ascii_case(b"TEMP") || w.eq_ignore_ascii_case(b"TEMPORARY") {
            temporary = true;
        } else if !is_any(
            w,
            &[
                b"OR",
                b"REPLACE",
                b"GLOBAL",
                b"LOCAL",
                b"UNLOGGED",
                b"RECURSIVE",
            ],
        ) {
            break;
        }
        i += 1;
    }
    let Some(Token::Word(object)) = tokens.get(i) else {
        return None;
    };
    let mut rest = &tokens[i + 1..];
    if is_any(object, &[b"TABLE", b"VIEW", b"SEQUENCE"]) {
        rest = skip_if_exists(rest, b"NOT");
    } else if !is_any(object, &[b"FUNCTION", b"PROCEDURE", b"TYPE", b"DOMAIN"]) {
        return None;
    }
    let (schema, name) = qualified_name(rest)?;
    let in_pg_temp = schema.as_deref() == Some(b"pg_temp".as_slice());
    let dropped_at_commit = windows_match(tokens, &[b"ON", b"COMMIT", b"DROP"]);
    ((temporary || in_pg_temp) && !dropped_at_commit).then_some(name)
}

/// `SELECT … INTO {TEMP | TEMPORARY} [TABLE] name` (or `INTO [TABLE]
/// pg_temp.name`).
fn selected_into_temporary(tokens: &[Token<'_>]) -> Option<Vec<u8>> {
    let into = tokens
        .iter()
        .position(|t| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case(b"INTO")))?;
    let mut rest = &tokens[into + 1..];
    let mut temporary = false;
    if let Some(Token::Word(w)) = rest.first() {
        if w.eq_ignore_ascii_case(b"TEMP") || w.eq_ignore_ascii_case(b"TEMPORARY") {
            temporary = true;
            rest = &rest[1..];
        } else if w.eq_ignore_ascii_case(b"UNLOGGED") {
            return None;
        }
    }
    if matches!(rest.first(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(b"TABLE")) {
        rest = &rest[1..];
    }
    let (schema, name) = qualified_name(rest)?;
    (temporary || schema.as_deref() == Some(b"pg_temp".as_slice())).then_some(name)
}

/// The names `DROP {TABLE | VIEW | SEQUENCE | TYPE | DOMAIN} [IF EXISTS] a,
/// b` drops that may be temporary (unqualified or in `pg_temp`).
fn dropped(tokens: &[Token<'_>]) -> Vec<Vec<u8>> {
    // Functions are left out: their argument lists hold commas and type names.
    let Some(Token::Word(object)) = tokens.get(1) else {
        return Vec::new();
    };
    if !is_any(
        object,
        &[b"TABLE", b"VIEW", b"SEQUENCE", b"TYPE", b"DOMAIN"],
    ) {
        return Vec::new();
    }
    let mut rest = skip_if_exists(&tokens[2..], b"");
    let mut names = Vec::new();
    while let Some((schema, name)) = qualified_name(rest) {
        if schema.is_none() || schema.as_deref() == Some(b"pg_temp".as_slice()) {
            names.push(name);
        }
        let Some(comma) = rest.iter().position(|t| *t == Token::Comma) else {
            break;
        };
        rest = &rest[comma + 1..];
    }
    names
}

/// `DECLARE name … CURSOR WITH HOLD FOR …`: the cursor's name.
fn declared_with_hold(tokens: &[Token<'_>]) -> Option<Vec<u8>> {
    let (_, name) = qualified_name(&tokens[1..])?;
    let options = tokens
        .iter()
        .position(|t| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case(b"FOR")))
        .map_or(tokens, |end| &tokens[..end]);
    windows_match(options, &[b"WITH", b"HOLD"]).then_some(name)
}

/// `[IF EXISTS]` (or `[IF NOT EXISTS]` with `not` = `NOT`) skipped.
fn skip_if_exists<'t, 'a>(tokens: &'t [Token<'a>], not: &[u8]) -> &'t [Token<'a>] {
    let words: &[&[u8]] = if not.is_empty() {
        &[b"IF", b"EXISTS"]
    } else {
        &[b"IF", not, b"EXISTS"]
    };
    if windows_match(&tokens[..words.len().min(tokens.len())], words) {
        &tokens[words.len()..]
    } else {
        tokens
    }
}

/// True when the words `keywords` follow each other somewhere in `tokens`.
fn windows_match(tokens: &[Token<'_>], keywords: &[&[u8]]) -> bool {
    tokens.windows(keywords.len()).any(|window| {
        window
            .iter()
            .zip(keywords)
            .all(|(t, k)| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case(k)))
    })
}

fn is_any(word: &[u8], keywords: &[&[u8]]) -> bool {
    keywords.iter().any(|k| word.eq_ignore_ascii_case(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Outcome = Outcome {
        failed: false,
        committed: true,
    };
    const FAILED: Outcome = Outcome {
        failed: true,
        committed: false,
    };
    const ROLLED_BACK: Outcome = Outcome {
        failed: false,
        committed: false,
    };

    fn after(statements: &[(&str, Outcome)]) -> Pins {
        let mut pins = Pins::default();
        for (sql, outcome) in statements {
            pins.apply(sql.as_bytes(), *outcome);
        }
        pins
    }

    #[test]
    fn temporary_tables_pin_the_session_until_dropped_or_discarded() {
        for sql in [
            "create temp table t (id int)",
            "CREATE GLOBAL TEMPORARY TABLE IF NOT EXISTS t (id int)",
            "create temporary view t as select 1",
            "create table pg_temp.t (id int)",
            "create temp table t as select 1",
            "select 1 as x into temp table t",
            "select 1 as x into temporary t",
            "create temp sequence t",
            "Create Temp Table \"t\" (id int)",
        ] {
            let pins = after(&[(sql, OK)]);
            assert_eq!(
                pins.reason(),
                Some(NotReplayable::TemporaryObject("t".into())),
                "{sql}"
            );
            for release in [
                "drop table t",
                "DROP TABLE IF EXISTS other, T",
                "discard temp",
                "discard all",
            ] {
                let pins = after(&[(sql, OK), (release, OK)]);
                assert!(pins.is_empty(), "{sql} then {release}: {pins:?}");
            }
            let kept = after(&[(sql, OK), ("drop table t", ROLLED_BACK)]);
            assert!(!kept.is_empty(), "a rolled-back DROP releases nothing");
        }
    }

    #[test]
    fn temporary_tables_that_did_not_outlive_their_transaction_pin_nothing() {
        for (sql, outcome) in [
            ("create temp table t (id int) on commit drop", OK),
            ("create temp table t (id int)", ROLLED_BACK),
            ("create temp table t (id int)", FAILED),
            ("create table t (id int)", OK),
            ("create table public.t (id int)", OK),
            ("select 'create temp table t (id int)'", OK),
            ("select $$create temp table t$$", OK),
            ("select 1 -- create temp table t", OK),
            ("insert into t select 1", OK),
            ("select * from temp_readings", OK),
        ] {
            assert!(after(&[(sql, outcome)]).is_empty(), "{sql}");
        }
    }

    #[test]
    fn hold_cursors_pin_the_session_until_closed() {
        let declare = "DECLARE c CURSOR WITH HOLD FOR SELECT 1";
        assert_eq!(
            after(&[(declare, OK)]).reason(),
            Some(NotReplayable::HoldCursor("c".into()))
        );
        assert!(after(&[(declare, OK), ("close c", OK)]).is_empty());
        assert!(after(&[(declare, OK), ("CLOSE ALL", OK)]).is_empty());
        assert!(!after(&[(declare, OK), ("close d", OK)]).is_empty());
        assert!(after(&[("declare c cursor for select 1", OK)]).is_empty());
        assert!(after(&[("declare c cursor without hold for select 1", OK)]).is_empty());
        assert!(after(&[("declare c cursor for select 'with hold'", OK)]).is_empty());
        assert!(after(&[(declare, ROLLED_BACK)]).is_empty());
    }

    #[test]
    fn advisory_locks_are_counted_and_kept_when_in_doubt() {
        let lock = "select pg_advisory_lock(1)";
        let unlock = "SELECT pg_catalog.PG_ADVISORY_UNLOCK(1)";
        assert_eq!(
            after(&[(lock, OK)]).reason(),
            Some(NotReplayable::AdvisoryLock)
        );
        assert!(after(&[(lock, OK), (unlock, OK)]).is_empty());
        assert!(!after(&[(lock, OK), (lock, OK), (unlock, OK)]).is_empty());
        assert!(!after(&[(lock, OK), (unlock, FAILED)]).is_empty());
        // Session-level locks outlive a rollback, and a failed call may have
        // taken its lock before the error.
        assert!(!after(&[(lock, ROLLED_BACK)]).is_empty());
        assert!(!after(&[(lock, FAILED)]).is_empty());
        assert!(!after(&[("select pg_try_advisory_lock_shared(7)", OK)]).is_empty());
        assert!(after(&[
            ("select pg_advisory_lock(1), pg_advisory_lock(2)", OK),
            ("select pg_advisory_unlock_all()", OK)
        ])
        .is_empty());
        assert!(after(&[(lock, OK), ("discard all", OK)]).is_empty());
        assert!(after(&[("select pg_advisory_xact_lock(1)", OK)]).is_empty());
        assert!(after(&[("select pg_advisory_unlock(1)", OK)]).is_empty());
    }

    #[test]
    fn each_statement_of_a_query_counts() {
        let pins = after(&[(
            "create temp table a (x int); create temp table b (x int); drop table a",
            OK,
        )]);
        assert_eq!(
            pins.reason(),
            Some(NotReplayable::TemporaryObject("b".into()))
        );
    }

    #[test]
    fn the_lexer_survives_unterminated_text() {
        for sql in [
            "'",
            "\"",
            "$a$",
            "/* ",
            "e'\\",
            "create temp table \"",
            "drop table",
        ] {
            let _ = after(&[(sql, OK)]);
        }
    }
}
