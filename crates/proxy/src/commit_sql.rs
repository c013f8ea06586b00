//! Recognising a statement that commits the current transaction (`COMMIT`,
//! `END`, with optional `WORK`/`TRANSACTION` and `AND NO CHAIN`), from its
//! SQL text. A small tokenizer — whitespace, `--` and nested `/* */`
//! comments, keywords, one optional `;` — because the proxy checks this on
//! the hot path of every transaction's end and needs no full parse for it.

/// True when `sql` is exactly one transaction commit.
pub fn is_commit(sql: &[u8]) -> bool {
    let words = match words(sql) {
        Some(words) => words,
        None => return false,
    };
    let upper: Vec<String> = words
        .iter()
        .map(|w| String::from_utf8_lossy(w).to_ascii_uppercase())
        .collect();
    let mut rest: &[String] = &upper;
    match rest.first().map(String::as_str) {
        Some("COMMIT") | Some("END") => rest = &rest[1..],
        _ => return false,
    }
    if matches!(
        rest.first().map(String::as_str),
        Some("WORK") | Some("TRANSACTION")
    ) {
        rest = &rest[1..];
    }
    match rest {
        [] => true,
        [and, no, chain] => and == "AND" && no == "NO" && chain == "CHAIN",
        _ => false,
    }
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
            let mut depth = 0usize;
            while i < sql.len() {
                if sql[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if sql[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            if depth != 0 {
                return None;
            }
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
mod tests {
    use super::is_commit;

    #[test]
    fn commits_are_recognised() {
        for sql in [
            "COMMIT",
            "commit;",
            "END;",
            "end transaction",
            "  Commit Work ; ",
            "/* app */ COMMIT -- done\n",
            "commit and no chain",
            "END;\0",
        ] {
            assert!(is_commit(sql.as_bytes()), "{sql:?}");
        }
    }

    #[test]
    fn other_statements_are_not_commits() {
        for sql in [
            "COMMIT PREPARED 'x'",
            "commit and chain",
            "rollback",
            "select 1; commit",
            "commit; commit",
            "commitx",
            "END IF",
            "/* unterminated COMMIT",
            "",
        ] {
            assert!(!is_commit(sql.as_bytes()), "{sql:?}");
        }
    }
}
