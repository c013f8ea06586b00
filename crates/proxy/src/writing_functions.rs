//! Functions a `SELECT` may write through and procedures a `CALL` may
//! commit in ([`WritingFunctions`]): per database, the names of the volatile
//! functions outside `pg_catalog` (and of the large-object writers and
//! `setval` inside it) and of the procedures, read from `pg_proc` in the background, so that
//! an autocommit `SELECT` calling one of those functions is stamped and kept
//! in the commit log like the write it may be (docs/decisions/0017), and a
//! `CALL` is stamped only when its procedure cannot end transactions inside
//! it (docs/decisions/0018).
//!
//! A `SELECT` is otherwise a read: no stamp, not kept. The volatility of
//! what it calls cannot be seen in its text, and a list of builtins would
//! make every read calling an extension's function pay for a stamp. A
//! stamp costs little when the call wrote nothing (`stamp_written` records
//! no token without a transaction id, and such a unit is not kept).
//!
//! A procedure called outside a transaction block may `COMMIT` inside: what
//! it committed before its end is on the new primary whatever the stamp,
//! which commits with its last transaction, says. So a `CALL` is stamped
//! only when its procedure is known not to (SQL, or PL/pgSQL whose body
//! names no `COMMIT`, `ROLLBACK` or `CALL`); any other, or one not known,
//! gets `08007` when in flight at a failover, as does a `DO` block whose
//! text names one of those words.
//!
//! Names are matched as PostgreSQL folds them: an unquoted name in lower
//! case, a quoted one as written; overloads and schemas are not told apart,
//! so a read calling a stable function that shares its name with a volatile
//! one is stamped too, and a procedure sharing its name with one that may
//! commit counts as one that may. A function created or altered through the
//! proxy counts at once (its name, as a writing one, until the catalog is
//! read again, which that also starts), as does a procedure (as one that may
//! commit); one created elsewhere is known at the next reading
//! ([`REFRESH_EVERY`]).

use std::collections::{HashMap, HashSet};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use crate::commit_sql::{self, AutocommitKind};
use crate::journal::lexer::{qualified_name, tokens, Token};

/// How often each database's names are read again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// The functions of one database that may write (kind `w`), and its
/// procedures: `a` for one that cannot end a transaction inside it (SQL,
/// or PL/pgSQL whose body names no `COMMIT`, `ROLLBACK` or `CALL`), `c` for
/// any other.
pub const QUERY: &str = r"
SELECT DISTINCT p.proname::text,
       CASE WHEN p.prokind = 'f' THEN 'w'
            WHEN l.lanname = 'sql'
                 OR (l.lanname = 'plpgsql' AND p.prosrc !~* '\m(commit|rollback|call)\M') THEN 'a'
            ELSE 'c' END
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'understudy')
  AND (p.prokind = 'p'
       OR (p.provolatile = 'v' AND p.prokind = 'f'
           AND p.prorettype <> 'pg_catalog.trigger'::pg_catalog.regtype
           AND p.prorettype <> 'pg_catalog.event_trigger'::pg_catalog.regtype))
UNION
SELECT p.proname::text, 'w'
FROM pg_catalog.pg_proc p
WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
  AND p.proname IN ('lo_create', 'lo_creat', 'lo_import', 'lo_unlink', 'lowrite', 'lo_put',
                    'lo_from_bytea', 'lo_truncate', 'lo_truncate64', 'setval')
";

/// What one database's catalog says about the routines statements call.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Routines {
    /// The functions that may write.
    pub writing: HashSet<Vec<u8>>,
    /// The procedures, each with whether one of that name may end a
    /// transaction inside it.
    pub procedures: HashMap<Vec<u8>, bool>,
}

impl Routines {
    /// Adds one row of [`QUERY`]: a name and its kind.
    pub fn add(&mut self, name: Vec<u8>, kind: &str) {
        match kind {
            "w" => {
                self.writing.insert(name);
            }
            kind => *self.procedures.entry(name).or_default() |= kind != "a",
        }
    }
}

/// The routines of one database, as last read.
#[derive(Default)]
pub struct WritingFunctions {
    routines: RwLock<Routines>,
    /// Wakes the refresh before its time: a session created or altered a
    /// function, a procedure or an extension.
    changed: tokio::sync::Notify,
}

impl WritingFunctions {
    /// Replaces the routines with those just read.
    pub fn replace(&self, routines: Routines) {
        *self
            .routines
            .write()
            .unwrap_or_else(PoisonError::into_inner) = routines;
    }

    /// A statement (`sql`, when its text is known) created or altered
    /// routines or an extension: the functions it names count as writing
    /// ones and the procedures as ones that may commit at once, until the
    /// catalog, read again now, tells what they are.
    pub fn defined_by(&self, sql: Option<&[u8]>) {
        if let Some(sql) = sql {
            let functions = names_after(sql, b"FUNCTION");
            let procedures = names_after(sql, b"PROCEDURE");
            if !functions.is_empty() || !procedures.is_empty() {
                let mut routines = self
                    .routines
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                routines.writing.extend(functions);
                routines
                    .procedures
                    .extend(procedures.into_iter().map(|name| (name, true)));
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
        let routines = self.routines.read().unwrap_or_else(PoisonError::into_inner);
        let names = &routines.writing;
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

    /// True when `sql` is a `CALL` of a procedure known not to end a
    /// transaction inside it.
    pub fn calls_atomic_procedure(&self, sql: &[u8]) -> bool {
        let Some(name) = called_procedure(sql) else {
            return false;
        };
        let routines = self.routines.read().unwrap_or_else(PoisonError::into_inner);
        routines.procedures.get(&name) == Some(&false)
    }
}

/// The procedure `sql` calls, when it is a `CALL` (last part of a qualified
/// name, folded).
fn called_procedure(sql: &[u8]) -> Option<Vec<u8>> {
    let tokens = tokens(sql);
    match tokens.split_first() {
        Some((Token::Word(call), rest)) if call.eq_ignore_ascii_case(b"CALL") => {
            qualified_name(rest).map(|(_, name)| name)
        }
        _ => None,
    }
}

/// True when `sql` may commit or roll back inside the statement, run outside
/// a transaction block: a `CALL` of a procedure not known not to (see
/// [`WritingFunctions::calls_atomic_procedure`]), or a `DO` block whose text
/// names `COMMIT`, `ROLLBACK` or `CALL` anywhere, its body included.
pub fn ends_transactions_inside(sql: &[u8], functions: Option<&WritingFunctions>) -> bool {
    if commit_sql::is_call(sql) {
        return !functions.is_some_and(|f| f.calls_atomic_procedure(sql));
    }
    commit_sql::is_do(sql)
        && sql
            .split(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
            .any(|w| {
                [&b"COMMIT"[..], b"ROLLBACK", b"CALL"]
                    .iter()
                    .any(|k| w.eq_ignore_ascii_case(k))
            })
}

/// True for the CommandComplete tags of statements that create or alter
/// functions, procedures or extensions.
pub fn defines_functions(command_tag: &[u8]) -> bool {
    matches!(
        command_tag,
        b"CREATE FUNCTION"
            | b"ALTER FUNCTION"
            | b"CREATE PROCEDURE"
            | b"ALTER PROCEDURE"
            | b"CREATE EXTENSION"
            | b"ALTER EXTENSION"
    )
}

/// The names following `keyword` in `sql` (the last part of a qualified
/// one), folded as PostgreSQL folds them.
fn names_after(sql: &[u8], keyword: &[u8]) -> Vec<Vec<u8>> {
    let tokens = tokens(sql);
    tokens
        .iter()
        .enumerate()
        .filter(|(_, token)| matches!(token, Token::Word(w) if w.eq_ignore_ascii_case(keyword)))
        .filter_map(|(i, _)| qualified_name(&tokens[i + 1..]).map(|(_, name)| name))
        .collect()
}

/// [`AutocommitKind::of`], with a statement that would be harmless to repeat
/// but calls one of `functions` counted as one that may write, and one that
/// may end transactions inside it (a `CALL`, a `DO`) as one whose Sync is
/// never held for a stamp: what it committed before its end, the stamp
/// would not vouch for.
pub fn autocommit_kind(sql: &[u8], functions: Option<&WritingFunctions>) -> AutocommitKind {
    match AutocommitKind::of(sql) {
        AutocommitKind::Harmless if functions.is_some_and(|f| f.called_by(sql)) => {
            AutocommitKind::MayWrite
        }
        AutocommitKind::MayWrite if ends_transactions_inside(sql, functions) => {
            AutocommitKind::NeverHold
        }
        kind => kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(names: &[&str]) -> WritingFunctions {
        let functions = WritingFunctions::default();
        let mut routines = Routines::default();
        for name in names {
            routines.add(name.as_bytes().to_vec(), "w");
        }
        functions.replace(routines);
        functions
    }

    /// Knows procedures `atomic` (cannot commit inside), `commits` and
    /// `both` (one overload of each kind).
    fn with_procedures() -> WritingFunctions {
        let functions = WritingFunctions::default();
        let mut routines = Routines::default();
        for (name, kind) in [
            ("atomic", "a"),
            ("commits", "c"),
            ("both", "a"),
            ("both", "c"),
        ] {
            routines.add(name.as_bytes().to_vec(), kind);
        }
        functions.replace(routines);
        functions
    }

    #[test]
    fn only_a_call_of_a_procedure_known_not_to_commit_is_stamped() {
        let functions = with_procedures();
        let kind = |sql: &str| autocommit_kind(sql.as_bytes(), Some(&functions));
        for sql in [
            "call atomic()",
            "CALL app.Atomic(1, 'x')",
            "/* job */ call \"atomic\"()",
        ] {
            assert_eq!(kind(sql), AutocommitKind::MayWrite, "{sql}");
        }
        for sql in [
            "call commits()",
            "call both()",
            "call unknown()",
            "call \"Atomic\"()",
        ] {
            assert_eq!(kind(sql), AutocommitKind::NeverHold, "{sql}");
        }
        assert_eq!(
            autocommit_kind(b"call atomic()", None),
            AutocommitKind::NeverHold,
            "nothing known without the catalog"
        );
    }

    #[test]
    fn a_do_block_naming_a_transaction_end_is_never_held() {
        let kind = |sql: &str| autocommit_kind(sql.as_bytes(), None);
        for sql in [
            "do $$ begin insert into t values (1); commit; end $$",
            "DO LANGUAGE plpgsql $body$ BEGIN ROLLBACK; END $body$",
            "do 'begin call p(); end'",
        ] {
            assert_eq!(kind(sql), AutocommitKind::NeverHold, "{sql}");
        }
        for sql in [
            "do 'begin insert into t values (1); end'",
            "do $$ begin insert into t values (1); end $$",
            "do $body$ begin perform 1; end $body$",
        ] {
            assert_eq!(kind(sql), AutocommitKind::MayWrite, "{sql}");
        }
        assert_eq!(
            kind("insert into t values ('commit')"),
            AutocommitKind::MayWrite
        );
    }

    #[test]
    fn a_procedure_a_statement_defines_may_commit_until_the_catalog_tells() {
        let functions = with_procedures();
        functions.defined_by(Some(
            b"create or replace procedure app.atomic() language plpgsql as $$ begin commit; end $$",
        ));
        assert!(!functions.calls_atomic_procedure(b"call atomic()"));
        assert!(defines_functions(b"CREATE PROCEDURE"));
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
