//! Keeps the session state from growing with every repeated setting. An
//! application that sets the same parameter on each request (a row-level
//! security tenant with `set_config('app.tenant', $1, false)`, an
//! `application_name`), or a pool that resets each connection it takes back
//! (`UNLISTEN *; RESET ALL`), would otherwise add a script per request until
//! the state passed its limit and the session could no longer move — and
//! every move would replay them all.
//!
//! Each script is classified by what it does ([`Effect`]); a new script
//! drops the earlier entries it makes void ([`verdict`]): a setting drops
//! the latest earlier setting of the same parameter, a reset drops the
//! settings (and, with `UNLISTEN *`, the listens) before it, and an
//! identical earlier reset; a `DEALLOCATE` drops the statement it
//! deallocates (a protocol one, or a SQL `PREPARE`) and is then not kept
//! itself. A named prepared statement was parsed under the settings of its
//! time, so a setting that can change how a statement parses
//! (`search_path`, `TimeZone`, …: anything but custom `a.b` parameters and
//! a few known others) is never dropped from before one that is still kept;
//! nothing is dropped from before a script the journal cannot classify.

use super::lexer::{tokens, Token};
use super::set_config::{only_calls_set_config, Scope};

/// What a settings script does to the session, as far as compaction needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Sets or resets one parameter and nothing else.
    Setting {
        /// Lower-cased name.
        name: Vec<u8>,
        /// The parameter may change how a later statement parses.
        parse_sensitive: bool,
    },
    /// `RESET ALL` and/or `UNLISTEN *`, and nothing else.
    Reset {
        /// `RESET ALL`: every parameter back to its default.
        settings: bool,
        /// `UNLISTEN *`: no channel listened to.
        listens: bool,
    },
    /// `LISTEN` or `UNLISTEN` of named channels only, several of them.
    Listen,
    /// `LISTEN name` or `UNLISTEN name` alone (lower-cased name).
    Channel(Vec<u8>),
    /// `PREPARE name …` alone.
    Prepare(Vec<u8>),
    /// `DEALLOCATE [PREPARE] name` alone; `None` for `DEALLOCATE ALL`.
    Deallocate(Option<Vec<u8>>),
    /// Anything else (several settings, `PREPARE`, a form not read here).
    Other,
}

/// Parameters, besides custom ones (`a.b`), that do not change how a
/// statement parses: dropping an old value of one never changes what a
/// named prepared statement restored after it means.
const PARSE_NEUTRAL: &[&[u8]] = &[
    b"application_name",
    b"statement_timeout",
    b"lock_timeout",
    b"idle_in_transaction_session_timeout",
    b"idle_session_timeout",
    b"jit",
    b"work_mem",
    b"synchronous_commit",
    b"client_min_messages",
];

/// An entry of the session state, as compaction sees it.
pub enum Kept<'a> {
    /// A named protocol prepared statement.
    Prepared(&'a [u8]),
    /// A settings script.
    Script(&'a Effect),
}

/// What a new script does to the entries kept before it.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Indexes of the earlier entries it makes void, in increasing order.
    pub void: Vec<usize>,
    /// The new script must be kept.
    pub keep_new: bool,
}

/// Which of the `earlier` entries the new script of effect `new` makes
/// void, and whether it must be kept itself.
pub fn verdict(new: &Effect, earlier: &[Kept<'_>]) -> Verdict {
    let mut void = Vec::new();
    let mut keep_new = true;
    match new {
        Effect::Setting {
            name,
            parse_sensitive,
        } => {
            // The latest earlier setting of the same parameter, unless
            // something between may depend on it.
            for (i, entry) in earlier.iter().enumerate().rev() {
                match entry {
                    Kept::Script(Effect::Setting { name: n, .. }) if n == name => {
                        void.push(i);
                        break;
                    }
                    Kept::Script(
                        Effect::Setting { .. }
                        | Effect::Listen
                        | Effect::Channel(_)
                        | Effect::Deallocate(_),
                    ) => {}
                    Kept::Prepared(_) | Kept::Script(Effect::Prepare(_)) if !parse_sensitive => {}
                    _ => break,
                }
            }
        }
        Effect::Reset { settings, listens } => {
            // Walking back: what a statement kept after it may have been
            // parsed under stays.
            let mut parsed_after = false;
            for (i, entry) in earlier.iter().enumerate().rev() {
                let dropped = match entry {
                    Kept::Prepared(_) | Kept::Script(Effect::Prepare(_) | Effect::Other) => {
                        parsed_after = true;
                        false
                    }
                    Kept::Script(Effect::Setting {
                        parse_sensitive, ..
                    }) => *settings && !(*parse_sensitive && parsed_after),
                    Kept::Script(Effect::Listen | Effect::Channel(_)) => *listens,
                    Kept::Script(reset @ Effect::Reset { .. }) => *reset == new && !parsed_after,
                    Kept::Script(Effect::Deallocate(_)) => false,
                };
                if dropped {
                    void.push(i);
                }
            }
        }
        Effect::Deallocate(Some(name)) => {
            // The statement it deallocates, unless a script the journal
            // cannot read may use it or deallocate it. Not kept when the
            // state holds no such statement: run again, it would fail.
            keep_new = false;
            for (i, entry) in earlier.iter().enumerate().rev() {
                match entry {
                    Kept::Prepared(n) if *n == name.as_slice() => {}
                    Kept::Script(Effect::Prepare(n)) if n == name => {}
                    Kept::Script(Effect::Other) => {
                        keep_new = true;
                        break;
                    }
                    _ => continue,
                }
                void.push(i);
                break;
            }
        }
        Effect::Deallocate(None) => {
            // Every statement back to the first script the journal cannot
            // read; kept only if there is one, which may have prepared more.
            keep_new = false;
            for (i, entry) in earlier.iter().enumerate().rev() {
                match entry {
                    Kept::Prepared(_)
                    | Kept::Script(Effect::Prepare(_) | Effect::Deallocate(_)) => void.push(i),
                    Kept::Script(Effect::Other) => {
                        keep_new = true;
                        break;
                    }
                    Kept::Script(_) => {}
                }
            }
        }
        Effect::Channel(channel) => {
            // The latest earlier LISTEN or UNLISTEN of the same channel:
            // only the last one counts (UNLISTEN of a channel not listened
            // to is no error).
            for (i, entry) in earlier.iter().enumerate().rev() {
                match entry {
                    Kept::Script(Effect::Channel(c)) if c == channel => {
                        void.push(i);
                        break;
                    }
                    Kept::Prepared(_)
                    | Kept::Script(
                        Effect::Setting { .. }
                        | Effect::Channel(_)
                        | Effect::Prepare(_)
                        | Effect::Deallocate(_),
                    ) => {}
                    Kept::Script(Effect::Listen | Effect::Reset { .. } | Effect::Other) => break,
                }
            }
        }
        Effect::Listen | Effect::Prepare(_) | Effect::Other => {}
    }
    void.reverse();
    Verdict { void, keep_new }
}

/// The effect of a script whose SQL text is `sql` (a Query's text, or the
/// text of the one statement an extended-protocol script runs).
pub fn effect_of(sql: &[u8]) -> Effect {
    let all = tokens(sql);
    let statements: Vec<&[Token<'_>]> = all
        .split(|t| *t == Token::Semicolon)
        .filter(|s| !s.is_empty())
        .collect();
    let mut settings = false;
    let mut listens = false;
    let mut named_listens = false;
    let mut setting = None;
    for statement in &statements {
        match statement_effect(statement, sql) {
            Some(Effect::Reset {
                settings: s,
                listens: l,
            }) => {
                settings |= s;
                listens |= l;
            }
            Some(Effect::Channel(_)) if statements.len() > 1 => named_listens = true,
            Some(
                one @ (Effect::Setting { .. }
                | Effect::Channel(_)
                | Effect::Prepare(_)
                | Effect::Deallocate(_)),
            ) if statements.len() == 1 => setting = Some(one),
            _ => return Effect::Other,
        }
    }
    match (setting, settings || listens, named_listens) {
        (Some(one), _, _) => one,
        (None, true, false) => Effect::Reset { settings, listens },
        (None, false, true) => Effect::Listen,
        _ => Effect::Other,
    }
}

fn statement_effect(statement: &[Token<'_>], sql: &[u8]) -> Option<Effect> {
    let word = |i: usize, keyword: &[u8]| matches!(statement.get(i), Some(Token::Word(w)) if w.eq_ignore_ascii_case(keyword));
    if word(0, b"RESET") && word(1, b"ALL") && statement.len() == 2 {
        return Some(Effect::Reset {
            settings: true,
            listens: false,
        });
    }
    if word(0, b"UNLISTEN") && matches!(statement, [_, Token::Other]) {
        return Some(Effect::Reset {
            settings: false,
            listens: true,
        });
    }
    if (word(0, b"LISTEN") || word(0, b"UNLISTEN")) && statement.len() == 2 {
        return Some(Effect::Channel(statement[1].name()?));
    }
    if word(0, b"PREPARE")
        && statement
            .iter()
            .any(|t| matches!(t, Token::Word(w) if w.eq_ignore_ascii_case(b"AS")))
    {
        return Some(Effect::Prepare(statement.get(1)?.name()?));
    }
    if word(0, b"DEALLOCATE") {
        let name = if word(1, b"PREPARE") { 2 } else { 1 };
        return match statement.get(name..)? {
            [Token::Word(w)] if w.eq_ignore_ascii_case(b"ALL") => Some(Effect::Deallocate(None)),
            [one] => Some(Effect::Deallocate(Some(one.name()?))),
            _ => None,
        };
    }
    if word(0, b"RESET") {
        // `RESET name`; not `RESET SESSION AUTHORIZATION` or `RESET TIME ZONE`.
        return match parameter(statement.get(1..)?)? {
            (name, []) => Some(setting(name)),
            _ => None,
        };
    }
    if word(0, b"SET") && !word(1, b"LOCAL") {
        let start = if word(1, b"SESSION") { 2 } else { 1 };
        let (name, rest) = parameter(statement.get(start..)?)?;
        // `SET name = …` or `SET name TO …`; other forms (`SET ROLE x`,
        // `SET TIME ZONE …`) are not read here.
        return match rest.first() {
            Some(Token::Other) => Some(setting(name)),
            Some(Token::Word(w)) if w.eq_ignore_ascii_case(b"TO") => Some(setting(name)),
            _ => None,
        };
    }
    if let Some(Scope::Session) = only_calls_set_config(statement) {
        if plain_value(statement) {
            return set_config_parameter(sql).map(setting);
        }
    }
    None
}

/// True when the one `set_config` call of `statement` takes a literal or a
/// parameter (`$1`) as its value: a value read from another setting
/// (`current_setting(…)`) depends on what came before.
fn plain_value(statement: &[Token<'_>]) -> bool {
    let Some(open) = statement.iter().position(|t| *t == Token::Open) else {
        return false;
    };
    let Some(close) = statement.iter().position(|t| *t == Token::Close) else {
        return false;
    };
    let arguments: Vec<&[Token<'_>]> = statement[open + 1..close]
        .split(|t| *t == Token::Comma)
        .collect();
    // Literals and `$n` are `Other` tokens only.
    matches!(
        arguments.as_slice(),
        [[Token::Other], value, [Token::Word(_)]]
            if !value.is_empty() && value.iter().all(|t| *t == Token::Other)
    )
}

fn setting(name: Vec<u8>) -> Effect {
    let parse_sensitive = !name.contains(&b'.') && !PARSE_NEUTRAL.contains(&name.as_slice());
    Effect::Setting {
        name,
        parse_sensitive,
    }
}

/// A parameter name at the start of `tokens` (`name` or `a.b`), lower-cased,
/// and the tokens after it.
fn parameter<'t, 'a>(tokens: &'t [Token<'a>]) -> Option<(Vec<u8>, &'t [Token<'a>])> {
    let (first, rest) = tokens.split_first()?;
    let mut name = first.name()?;
    if let [Token::Dot, second, rest @ ..] = rest {
        name.push(b'.');
        name.extend(second.name()?);
        return Some((name, rest));
    }
    Some((name, rest))
}

/// The parameter named by the only `set_config('name', …)` call of `sql`,
/// when the name is a plain string literal.
fn set_config_parameter(sql: &[u8]) -> Option<Vec<u8>> {
    let lower = sql.to_ascii_lowercase();
    let call = lower.windows(10).position(|w| w == b"set_config")?;
    if lower[call + 10..].windows(10).any(|w| w == b"set_config") {
        return None;
    }
    let after = lower[call + 10..].trim_ascii_start().strip_prefix(b"(")?;
    let literal = after.trim_ascii_start().strip_prefix(b"'")?;
    let end = literal.iter().position(|&c| c == b'\'')?;
    Some(literal[..end].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting_of(name: &str, parse_sensitive: bool) -> Effect {
        Effect::Setting {
            name: name.as_bytes().to_vec(),
            parse_sensitive,
        }
    }

    #[test]
    fn one_setting_is_read_in_each_of_its_forms() {
        for (sql, name, sensitive) in [
            ("set search_path = a, b", "search_path", true),
            ("SET SESSION Search_Path TO a", "search_path", true),
            ("set app.tenant = '7';", "app.tenant", false),
            ("reset application_name", "application_name", false),
            (
                "SELECT pg_catalog.set_config('app.tenant', $1, false)",
                "app.tenant",
                false,
            ),
            (
                "select set_config( 'TimeZone', 'UTC', false)",
                "timezone",
                true,
            ),
        ] {
            assert_eq!(
                effect_of(sql.as_bytes()),
                setting_of(name, sensitive),
                "{sql}"
            );
        }
    }

    #[test]
    fn resets_and_listens_are_told_apart() {
        assert_eq!(
            effect_of(b"\nUNLISTEN *;\nRESET ALL;"),
            Effect::Reset {
                settings: true,
                listens: true
            }
        );
        assert_eq!(
            effect_of(b"reset all"),
            Effect::Reset {
                settings: true,
                listens: false
            }
        );
        assert_eq!(effect_of(b"listen a; unlisten \"B\""), Effect::Listen);
        assert_eq!(effect_of(b"LISTEN Jobs"), Effect::Channel(b"jobs".to_vec()));
    }

    #[test]
    fn prepare_and_deallocate_are_read_alone() {
        assert_eq!(
            effect_of(b"PREPARE Q (int) AS select $1"),
            Effect::Prepare(b"q".to_vec())
        );
        assert_eq!(
            effect_of(b"DEALLOCATE pdo_stmt_00000001"),
            Effect::Deallocate(Some(b"pdo_stmt_00000001".to_vec()))
        );
        assert_eq!(
            effect_of(b"deallocate prepare \"S_1\""),
            Effect::Deallocate(Some(b"S_1".to_vec()))
        );
        assert_eq!(effect_of(b"DEALLOCATE ALL"), Effect::Deallocate(None));
    }

    #[test]
    fn a_deallocate_drops_its_statement_unless_an_unread_script_follows_it() {
        let setting = setting_of("app.x", false);
        let other = Effect::Other;
        let prepare = Effect::Prepare(b"p".to_vec());
        let deallocate = Effect::Deallocate(Some(b"p".to_vec()));
        assert_eq!(
            verdict(&deallocate, &[Kept::Prepared(b"p"), Kept::Script(&setting)]),
            Verdict {
                void: vec![0],
                keep_new: false
            }
        );
        assert_eq!(
            verdict(&deallocate, &[Kept::Script(&prepare), Kept::Prepared(b"q")]),
            Verdict {
                void: vec![0],
                keep_new: false
            }
        );
        assert_eq!(
            verdict(&deallocate, &[Kept::Prepared(b"p"), Kept::Script(&other)]),
            Verdict {
                void: vec![],
                keep_new: true
            }
        );
        assert_eq!(
            verdict(
                &Effect::Deallocate(None),
                &[
                    Kept::Prepared(b"a"),
                    Kept::Script(&other),
                    Kept::Script(&prepare),
                    Kept::Script(&setting),
                    Kept::Prepared(b"b"),
                ]
            ),
            Verdict {
                void: vec![2, 4],
                keep_new: true
            }
        );
    }

    #[test]
    fn only_the_last_listen_or_unlisten_of_a_channel_counts() {
        let listen = Effect::Channel(b"c".to_vec());
        let other_channel = Effect::Channel(b"d".to_vec());
        let several = Effect::Listen;
        assert_eq!(
            verdict(
                &listen,
                &[Kept::Script(&listen), Kept::Script(&other_channel)]
            ),
            Verdict {
                void: vec![0],
                keep_new: true
            }
        );
        assert_eq!(
            verdict(&listen, &[Kept::Script(&listen), Kept::Script(&several)]),
            Verdict {
                void: vec![],
                keep_new: true
            }
        );
    }

    #[test]
    fn anything_else_is_other() {
        for sql in [
            "set a.b = 1; set a.c = 2",
            "set local a.b = 1",
            "set role admin",
            "set time zone 'UTC'",
            "prepare p as select 1; set a.b = 1",
            "listen a; reset all",
            "select set_config('a.b', '1', false), set_config('a.c', '1', false)",
            "select set_config('a.b', '1', true)",
            "select set_config('a.b', current_setting('a.c'), false)",
            "deallocate all; set a.b = 1",
            "reset session authorization",
            "reset time zone",
        ] {
            assert_eq!(effect_of(sql.as_bytes()), Effect::Other, "{sql}");
        }
    }
}
