//! Functions a `SELECT` may write through ([`WritingFunctions`]): per
//! database, the names of the volatile functions outside `pg_catalog` (and
//! of the large-object writers inside it), read from `pg_proc` in the
//! background, so that an autocommit `SELECT` calling one is stamped and kept
//! in the commit log like the write it may be (docs/decisions/0017).
//!
//! A `SELECT` is otherwise a read: no stamp, not kept. The volatility of
//! what it calls cannot be seen in its text, and a list of builtins would
//! make every read calling an extension's function pay for a stamp. A
//! stamp costs little when the call wrote nothing (`stamp_written` records
//! no token without a transaction id, and such a unit is not kept).
//!
//! Names are matched as PostgreSQL folds them: an unquoted name in lower
//! case, a quoted one as written; overloads and schemas are not told apart,
//! so a read calling a stable function that shares its name with a volatile
//! one is stamped too. A function created or altered through the proxy
//! counts at once (its name, as a writing one, until the catalog is read
//! again, which that also starts); one created elsewhere is known at the next
//! reading ([`REFRESH_EVERY`]).

use std::collections::HashSet;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use crate::commit_sql::AutocommitKind;
use crate::journal::lexer::{qualified_name, tokens, Token};

/// How often each database's names are read again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// The names of the functions that may write, in one database.
pub const QUERY: &str = "
SELECT DISTINCT p.proname::text
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE p.provolatile = 'v' AND p.prokind = 'f'
  AND p.prorettype <> 'pg_catalog.trigger'::pg_catalog.regtype
  AND p.prorettype <> 'pg_catalog.event_trigger'::pg_catalog.regtype
  AND (n.nspname NOT IN ('pg_catalog', 'information_schema', 'understudy')
       OR (n.nspname = 'pg_catalog' AND p.proname IN ('lo_create', 'lo_creat', 'lo_import',
           'lo_unlink', 'lowrite', 'lo_put', 'lo_from_bytea', 'lo_truncate', 'lo_truncate64')))
";

/// The functions of one database that may write, as last read.
#[derive(Default)]
pub struct WritingFunctions {
    names: RwLock<HashSet<Vec<u8>>>,
    /// Wakes the refresh before its time: a session created or altered a
    /// function or an extension.
    changed: tokio::sync::Notify,
}

impl WritingFunctions {
    /// Replaces the names with those just read.
    pub fn replace(&self, names: HashSet<Vec<u8>>) {
        *self.names.write().unwrap_or_else(PoisonError::into_inner) = names;
    }

    /// A statement (`sql`, when its text is known) created or altered
    /// functions or an extension: the functions it names count as writing
    /// ones at once, until the catalog, read again now, tells what they are.
    pub fn defined_by(&self, sql: Option<&[u8]>) {
        if let Some(sql) = sql {
            let named = function_names(sql);
            if !named.is_empty() {
                let mut names = self.names.write().unwrap_or_else(PoisonError::into_inner);
                names.extend(named);
            }
        }
        self.changed.notify_one();
    }

    /// Waits until [`WritingFunctions::defined_by`] asks for a new reading.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// True when `sql` calls one of the functions: a name (last part of a
    /// qualified one) followed by `(`.
    pub fn called_by(&self, sql: &[u8]) -> bool {
        let names = self.names.read().unwrap_or_else(PoisonError::into_inner);
        if names.is_empty() || !sql.contains(&b'(') {
            return false;
        }
        let tokens = tokens(sql);
        tokens.windows(2).any(|pair| match pair {
            [Token::Word(word), Token::Open] => names.contains(&word.to_ascii_lowercase()),
            [Token::Quoted(name), Token::Open] => names.contains(*name),
            _ => false,
        })
    }
}

/// True for the CommandComplete tags of statements that create or alter
/// functions or extensions.
pub fn defines_functions(command_tag: &[u8]) -> bool {
    matches!(
        command_tag,
        b"CREATE FUNCTION" | b"ALTER FUNCTION" | b"CREATE EXTENSION" | b"ALTER EXTENSION"
    )
}

/// The names following `FUNCTION` in `sql` (the last part of a qualified
/// one), folded as PostgreSQL folds them.
fn function_names(sql: &[u8]) -> Vec<Vec<u8>> {
    let tokens = tokens(sql);
    tokens
        .iter()
        .enumerate()
        .filter(|(_, token)| matches!(token, Token::Word(w) if w.eq_ignore_ascii_case(b"FUNCTION")))
        .filter_map(|(i, _)| qualified_name(&tokens[i + 1..]).map(|(_, name)| name))
        .collect()
}

/// [`AutocommitKind::of`], with a statement that would be harmless to repeat
/// but calls one of `functions` counted as one that may write.
pub fn autocommit_kind(sql: &[u8], functions: Option<&WritingFunctions>) -> AutocommitKind {
    match AutocommitKind::of(sql) {
        AutocommitKind::Harmless if functions.is_some_and(|f| f.called_by(sql)) => {
            AutocommitKind::MayWrite
        }
        kind => kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(names: &[&str]) -> WritingFunctions {
        let functions = WritingFunctions::default();
        functions.replace(names.iter().map(|n| n.as_bytes().to_vec()).collect());
        functions
    }

    #[test]
    fn a_call_of_a_named_function_is_found_however_it_is_written() {
        let functions = with(&["add_row", "MixedCase"]);
        for sql in [
            "select add_row(1)",
            "SELECT ADD_ROW (1)",
            "select public.add_row(1)",
            "select * from add_row(1)",
            "select x, \"MixedCase\"(2) from t",
            "select 1 where exists (select add_row /* call */ (3))",
        ] {
            assert!(functions.called_by(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn functions_a_statement_defines_count_at_once() {
        let functions = with(&[]);
        functions.defined_by(Some(
            b"CREATE OR REPLACE FUNCTION app.\"NewOne\"(i int) RETURNS int LANGUAGE sql AS $$ SELECT 1 $$;
              create function second() returns int language sql as 'select fake_function(1)'",
        ));
        assert!(functions.called_by(b"select app.\"NewOne\"(1)"));
        assert!(functions.called_by(b"select second()"));
        assert!(
            !functions.called_by(b"select fake_function(1)"),
            "not in a literal"
        );
        assert!(defines_functions(b"CREATE FUNCTION"));
        assert!(!defines_functions(b"CREATE TABLE"));
    }

    #[test]
    fn names_that_are_not_calls_are_not_found() {
        let functions = with(&["add_row", "MixedCase"]);
        for sql in [
            "select add_row from t",
            "select 'add_row(1)'",
            "select 1 -- add_row(1)",
            "select mixedcase(1)",
            "select add_rows(1)",
            "select $$add_row(1)$$",
        ] {
            assert!(!functions.called_by(sql.as_bytes()), "{sql}");
        }
        assert!(!WritingFunctions::default().called_by(b"select add_row(1)"));
    }
}
