//! A small SQL lexer for the few statements the journal reads: words,
//! quoted names and the punctuation that separates statements and names;
//! comments, string literals (`'…'`, `E'…'`) and dollar-quoted literals are
//! skipped. Enough to find what a statement creates or calls without a full
//! parse, which the journal cannot afford on every statement.

/// True when `sql` mentions, at the start of a run of letters (so
/// `pg_advisory_lock` counts), a word the journal acts on: those of
/// [`super::pins`], `set_config` and the `LOCAL` of `SET LOCAL`. A quick
/// scan with no allocation, run on the text of every finished statement;
/// only text it passes is lexed.
pub fn worth_reading(sql: &[u8]) -> bool {
    let mut after_letter = false;
    for (i, &c) in sql.iter().enumerate() {
        let letter = c.is_ascii_alphabetic();
        if letter && !after_letter {
            let word: &[u8] = match c | 0x20 {
                b't' => b"temp",
                b'h' => b"hold",
                b'a' => b"advisory",
                b'c' => b"close",
                b'd' if sql.get(i + 1).is_some_and(|&b| b | 0x20 == b'r') => b"drop",
                b'd' => b"discard",
                b's' => b"set_config",
                b'l' => b"local",
                _ => b"",
            };
            if !word.is_empty()
                && sql
                    .get(i..i + word.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(word))
            {
                return true;
            }
        }
        after_letter = letter;
    }
    false
}

/// A token of SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// A keyword or an unquoted name (letters, digits, `_`, `$`).
    Word(&'a [u8]),
    /// A double-quoted name, between its quotes (`""` left doubled).
    Quoted(&'a [u8]),
    /// `;`
    Semicolon,
    /// `.`
    Dot,
    /// `,`
    Comma,
    /// `(`
    Open,
    /// `)`
    Close,
    /// Anything else: operators, numbers, parentheses, literals.
    Other,
}

impl Token<'_> {
    /// The name this token spells: unquoted names fold to lower case.
    pub fn name(&self) -> Option<Vec<u8>> {
        match self {
            Token::Word(w) => Some(w.to_ascii_lowercase()),
            Token::Quoted(q) => Some(q.to_vec()),
            _ => None,
        }
    }
}

/// `name` or `schema.name` at the start of `tokens`: the schema (if any)
/// and the name, folded as PostgreSQL folds them.
pub fn qualified_name(tokens: &[Token<'_>]) -> Option<(Option<Vec<u8>>, Vec<u8>)> {
    let first = tokens.first()?.name()?;
    match (tokens.get(1), tokens.get(2).and_then(Token::name)) {
        (Some(Token::Dot), Some(second)) => Some((Some(first), second)),
        _ => Some((None, first)),
    }
}

/// Splits `sql` into tokens, skipping whitespace, comments (`--`, nested
/// `/* */`), string literals (`'…'`, `E'…'` with backslash escapes) and
/// dollar-quoted literals.
pub fn tokens(sql: &[u8]) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < sql.len() {
        let c = sql[i];
        let rest = &sql[i..];
        if c.is_ascii_whitespace() || c == 0 {
            i += 1;
        } else if rest.starts_with(b"--") {
            i += rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        } else if rest.starts_with(b"/*") {
            i += block_comment_len(rest).unwrap_or(rest.len());
        } else if c == b'\'' {
            let escapes = i > 0 && sql[i - 1].eq_ignore_ascii_case(&b'e');
            i += quoted_len(rest, b'\'', escapes);
            out.push(Token::Other);
        } else if c == b'"' {
            let len = quoted_len(rest, b'"', false);
            out.push(Token::Quoted(&rest[1..len.saturating_sub(1).max(1)]));
            i += len;
        } else if c == b'$' {
            i += dollar_quoted_len(rest);
            out.push(Token::Other);
        } else if c.is_ascii_alphabetic() || c == b'_' || c >= 0x80 {
            let len = rest
                .iter()
                .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80))
                .unwrap_or(rest.len());
            // `E'…'`: the letter belongs to the literal that follows.
            if !(len == 1 && rest.get(1) == Some(&b'\'')) {
                out.push(Token::Word(&rest[..len]));
            }
            i += len;
        } else {
            out.push(match c {
                b';' => Token::Semicolon,
                b'.' => Token::Dot,
                b',' => Token::Comma,
                b'(' => Token::Open,
                b')' => Token::Close,
                _ => Token::Other,
            });
            i += 1;
        }
    }
    out
}

/// Length of the (nested) block comment at the start of `sql`; None when it
/// is not closed.
pub(crate) fn block_comment_len(sql: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < sql.len() {
        if sql[i..].starts_with(b"/*") {
            depth += 1;
            i += 2;
        } else if sql[i..].starts_with(b"*/") {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// Length of the literal quoted with `quote` at the start of `sql`, the
/// quotes included; a doubled quote stays inside.
fn quoted_len(sql: &[u8], quote: u8, backslash_escapes: bool) -> usize {
    let mut i = 1;
    while i < sql.len() {
        if backslash_escapes && sql[i] == b'\\' {
            i += 2;
        } else if sql[i] == quote {
            if sql.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return i + 1;
            }
        } else {
            i += 1;
        }
    }
    sql.len()
}

/// Length of the dollar-quoted literal at the start of `sql` (`$tag$…$tag$`),
/// or 1 when the `$` starts none (a parameter such as `$1`).
pub(crate) fn dollar_quoted_len(sql: &[u8]) -> usize {
    let tag_len = sql[1..]
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_'))
        .map(|n| n + 1);
    let Some(tag_len) = tag_len.filter(|&n| sql.get(n) == Some(&b'$')) else {
        return 1;
    };
    if sql[1..tag_len].first().is_some_and(u8::is_ascii_digit) {
        return 1;
    }
    let tag = &sql[..=tag_len];
    sql[tag.len()..]
        .windows(tag.len())
        .position(|w| w == tag)
        .map_or(sql.len(), |end| tag.len() + end + tag.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_text_that_mentions_a_keyword_is_worth_reading() {
        assert!(!worth_reading(
            b"SELECT abalance FROM pgbench_accounts WHERE aid = $1"
        ));
        assert!(!worth_reading(b"UPDATE t SET v = v + 1"));
        for sql in [
            "create TEMP table t (id int)",
            "select pg_ADVISORY_lock(1)",
            "declare c cursor with hold for select 1",
            "DISCARD ALL",
            "drop table t",
            "close c",
            "select pg_catalog.SET_CONFIG('a.b', '1', false)",
        ] {
            assert!(worth_reading(sql.as_bytes()), "{sql}");
        }
    }

    #[test]
    fn literals_and_comments_are_skipped() {
        let words: Vec<_> = tokens(b"select 'a;b' /* c; */ -- d;\n, $x$e;$x$, E'\\';', \"f;\"")
            .into_iter()
            .filter(|t| !matches!(t, Token::Other | Token::Comma))
            .collect();
        assert_eq!(words, [Token::Word(b"select"), Token::Quoted(b"f;")]);
    }
}
