//! Rewriting statements: the fingerprint lookup (a statement of a known
//! shape becomes a replacement that takes over its constants and
//! parameters) and structural changes on the parse tree (renaming a table,
//! adding a LIMIT), deparsed back to SQL.

use pg_query::protobuf::{self, node::Node as N, Token};
use pg_query::NodeMut;
use serde_json::Value;

use crate::analysis::{Analysis, Kind, Outputs};
use crate::names::TablePattern;

/// The text of every constant and parameter of `text`, in order.
fn parameter_texts(text: &str) -> Result<Vec<&str>, String> {
    let parsed = pg_query::parse(text).map_err(|e| e.to_string())?;
    let tree = serde_json::to_value(&parsed.protobuf).map_err(|e| e.to_string())?;
    let mut locations = Vec::new();
    collect_locations(&tree, &mut locations);
    locations.sort_unstable();
    locations.dedup();
    let tokens = pg_query::scan(text).map_err(|e| e.to_string())?.tokens;
    let mut texts = Vec::with_capacity(locations.len());
    for location in locations {
        let end = tokens
            .iter()
            .find(|t| t.start >= location && is_constant(t.token))
            .map(|t| t.end)
            .ok_or_else(|| format!("no constant at offset {location}"))?;
        let (Ok(start), Ok(end)) = (usize::try_from(location), usize::try_from(end)) else {
            return Err("bad token offsets".into());
        };
        texts.push(text.get(start..end).ok_or("bad token offsets")?);
    }
    Ok(texts)
}

fn is_constant(token: i32) -> bool {
    [
        Token::Iconst,
        Token::Fconst,
        Token::Sconst,
        Token::Usconst,
        Token::Bconst,
        Token::Xconst,
        Token::Param,
    ]
    .iter()
    .any(|&t| t as i32 == token)
}

fn collect_locations(value: &Value, out: &mut Vec<i32>) {
    match value {
        Value::Object(map) => {
            for key in ["AConst", "ParamRef"] {
                if let Some(node) = map.get(key) {
                    let location = node.get("location").and_then(Value::as_i64).unwrap_or(-1);
                    let isnull = node.get("isnull").and_then(Value::as_bool).unwrap_or(false);
                    if location >= 0 && !isnull {
                        out.push(location as i32);
                    }
                }
            }
            map.values().for_each(|v| collect_locations(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_locations(v, out)),
        _ => {}
    }
}

/// How many constants and parameters `text` has (a rewrite's `$n` range).
pub fn parameter_count(text: &str) -> Result<usize, String> {
    parameter_texts(text).map(|t| t.len())
}

/// The highest `$n` in `text` (0 when none).
pub fn highest_parameter(text: &str) -> Result<usize, String> {
    pg_query::parse(text).map_err(|e| e.to_string())?;
    let tokens = pg_query::scan(text).map_err(|e| e.to_string())?.tokens;
    Ok(tokens
        .iter()
        .filter(|t| t.token == Token::Param as i32)
        .filter_map(|t| param_number(text, t))
        .max()
        .unwrap_or(0))
}

fn param_number(text: &str, token: &protobuf::ScanToken) -> Option<usize> {
    text.get(usize::try_from(token.start).ok()? + 1..usize::try_from(token.end).ok()?)?
        .parse()
        .ok()
}

/// `replacement` with each `$n` replaced by the n-th constant or parameter
/// of `original`.
pub fn substitute(original: &str, replacement: &str) -> Result<String, String> {
    let values = parameter_texts(original)?;
    let tokens = pg_query::scan(replacement)
        .map_err(|e| e.to_string())?
        .tokens;
    let mut out = String::with_capacity(replacement.len() + original.len());
    let mut copied = 0;
    for token in tokens.iter().filter(|t| t.token == Token::Param as i32) {
        let n = param_number(replacement, token).ok_or("bad parameter")?;
        let value = values
            .get(n.wrapping_sub(1))
            .ok_or_else(|| format!("${n} has no value in the original statement"))?;
        let start = usize::try_from(token.start).map_err(|e| e.to_string())?;
        out.push_str(replacement.get(copied..start).ok_or("bad token offsets")?);
        out.push_str(value);
        copied = usize::try_from(token.end).map_err(|e| e.to_string())?;
    }
    out.push_str(replacement.get(copied..).ok_or("bad token offsets")?);
    Ok(out)
}

/// `analysis`'s statement with every table `from` renamed `to`; `None` when
/// it does not mention the table.
pub fn rename_table(analysis: &Analysis, from: &TablePattern, to: &str) -> Option<String> {
    if !analysis.tables().any(|t| from.matches(t)) {
        return None;
    }
    let mut tree = analysis.tree.clone();
    let mut changed = false;
    // SAFETY: `tree` is a local value borrowed mutably for the whole loop;
    // the pointers `nodes_mut` returns point into it and only a `String`
    // field is assigned through them — no node is added, moved or removed,
    // so none of the pointers is invalidated while they are used.
    unsafe {
        for (node, _, _) in tree.nodes_mut() {
            if let NodeMut::RangeVar(range) = node {
                if let Some(range) = range.as_mut() {
                    let name = crate::names::TableName::new(&range.schemaname, &range.relname);
                    if from.matches(&name) {
                        range.relname = to.to_owned();
                        changed = true;
                    }
                }
            }
        }
    }
    if !changed {
        return None;
    }
    pg_query::deparse(&tree).ok()
}

/// `analysis`'s statement with `LIMIT rows` added to each top-level SELECT
/// of `table` that has no LIMIT; `None` when there is none.
pub fn add_limit(analysis: &Analysis, table: &TablePattern, rows: i32) -> Option<String> {
    let wanted: Vec<bool> = analysis
        .statements
        .iter()
        .map(|s| {
            s.kind == Kind::Select
                && !s.has_limit
                && matches!(s.outputs, Outputs::Targets(_))
                && s.tables.iter().any(|t| table.matches(t))
        })
        .collect();
    if !wanted.contains(&true) {
        return None;
    }
    let mut tree = analysis.tree.clone();
    let mut raws = tree.stmts.iter_mut();
    for want in &wanted {
        // Statements that failed to give a node were skipped by the analysis.
        let raw = loop {
            let raw = raws.next()?;
            if raw.stmt.as_ref().and_then(|s| s.node.as_ref()).is_some() {
                break raw;
            }
        };
        if !want {
            continue;
        }
        if let Some(N::SelectStmt(select)) = raw.stmt.as_mut().and_then(|s| s.node.as_mut()) {
            select.limit_count = Some(Box::new(protobuf::Node {
                node: Some(N::AConst(protobuf::AConst {
                    isnull: false,
                    location: -1,
                    val: Some(protobuf::a_const::Val::Ival(protobuf::Integer {
                        ival: rows,
                    })),
                })),
            }));
            select.limit_option = protobuf::LimitOption::Count as i32;
        }
    }
    pg_query::deparse(&tree).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_takes_constants_in_order() {
        let out = substitute(
            "SELECT * FROM old_orders WHERE id = 42 AND note = 'x''y'",
            "SELECT * FROM orders WHERE note = $2 AND id = $1",
        )
        .unwrap();
        assert_eq!(out, "SELECT * FROM orders WHERE note = 'x''y' AND id = 42");
    }

    #[test]
    fn substitution_keeps_protocol_parameters_and_negative_numbers() {
        let out = substitute(
            "SELECT * FROM t WHERE a = $1 AND b = -5",
            "SELECT * FROM u WHERE b = $2 AND a = $1",
        )
        .unwrap();
        assert_eq!(out, "SELECT * FROM u WHERE b = -5 AND a = $1");
    }

    #[test]
    fn rename_reaches_subqueries_and_joins() {
        let a = Analysis::of(
            "SELECT * FROM old o JOIN x ON x.id = o.id WHERE o.id IN (SELECT id FROM old)",
        )
        .unwrap();
        let out = rename_table(&a, &TablePattern::parse("old").unwrap(), "new").unwrap();
        assert!(!out.contains("old "), "{out}");
        assert_eq!(out.matches("new").count(), 2, "{out}");
        let other = Analysis::of("SELECT 1 FROM x").unwrap();
        assert!(rename_table(&other, &TablePattern::parse("old").unwrap(), "new").is_none());
    }

    #[test]
    fn limit_is_added_only_to_unbounded_selects_of_the_table() {
        let t = TablePattern::parse("events").unwrap();
        let a = Analysis::of("SELECT * FROM events WHERE kind = 1").unwrap();
        assert_eq!(
            add_limit(&a, &t, 100).unwrap(),
            "SELECT * FROM events WHERE kind = 1 LIMIT 100"
        );
        let bounded = Analysis::of("SELECT * FROM events LIMIT 5").unwrap();
        assert!(add_limit(&bounded, &t, 100).is_none());
        let other = Analysis::of("SELECT * FROM users").unwrap();
        assert!(add_limit(&other, &t, 100).is_none());
    }
}
