//! Access rules: which statements a `deny` or `allow` rule refuses.

use crate::analysis::{Kind, Statement};
use crate::model::StatementClass;
use crate::rules::{AllowRule, DenyRule};

/// The classes a statement belongs to.
pub fn classes(s: &Statement) -> Vec<StatementClass> {
    let mut out = match s.kind {
        Kind::Select => vec![StatementClass::Select],
        Kind::Insert => vec![StatementClass::Insert],
        Kind::Update if s.has_where => vec![StatementClass::Update],
        Kind::Update => vec![StatementClass::Update, StatementClass::UpdateWithoutWhere],
        Kind::Delete if s.has_where => vec![StatementClass::Delete],
        Kind::Delete => vec![StatementClass::Delete, StatementClass::DeleteWithoutWhere],
        Kind::Merge => vec![StatementClass::Merge],
        Kind::Copy => {
            let from = s.copy.as_ref().is_some_and(|c| c.from);
            vec![
                StatementClass::Copy,
                if from {
                    StatementClass::CopyFrom
                } else {
                    StatementClass::CopyTo
                },
            ]
        }
        Kind::Ddl => vec![StatementClass::Ddl],
        Kind::Utility => vec![StatementClass::Utility],
    };
    if !s.functions.is_empty() {
        out.push(StatementClass::Functions);
    }
    out
}

fn class_name(c: StatementClass) -> &'static str {
    match c {
        StatementClass::Select => "SELECT",
        StatementClass::Insert => "INSERT",
        StatementClass::Update => "UPDATE",
        StatementClass::Delete => "DELETE",
        StatementClass::Merge => "MERGE",
        StatementClass::Ddl => "DDL",
        StatementClass::DeleteWithoutWhere => "DELETE without WHERE",
        StatementClass::UpdateWithoutWhere => "UPDATE without WHERE",
        StatementClass::Copy => "COPY",
        StatementClass::CopyTo => "COPY TO",
        StatementClass::CopyFrom => "COPY FROM",
        StatementClass::Functions => "function calls",
        StatementClass::Utility => "utility statements",
    }
}

fn function_matches(listed: &str, called: &str) -> bool {
    listed == called || (!listed.contains('.') && called.rsplit('.').next() == Some(listed))
}

/// Why `rule` refuses `s`, if it does.
pub fn denied_by(rule: &DenyRule, s: &Statement) -> Option<String> {
    if let Some(t) = s
        .tables
        .iter()
        .find(|t| rule.tables.iter().any(|p| p.matches(t)))
    {
        return Some(format!("access to table {t}"));
    }
    for pattern in &rule.columns {
        let in_scope = match &pattern.table {
            Some(table) => s.tables.iter().any(|t| table.matches(t)),
            None => !s.tables.is_empty(),
        };
        if !in_scope {
            continue;
        }
        for use_ in &s.columns {
            match &use_.column {
                Some(c) if pattern.column.matches(c) => {
                    return Some(format!("access to column {pattern}"))
                }
                // `*` may include the column.
                None => return Some(format!("access to column {pattern} (through *)")),
                _ => {}
            }
        }
    }
    let mine = classes(s);
    if let Some(c) = rule.statements.iter().find(|c| mine.contains(c)) {
        return Some(class_name(*c).to_owned());
    }
    if let Some(f) = s
        .functions
        .iter()
        .find(|f| rule.functions.iter().any(|l| function_matches(l, f)))
    {
        return Some(format!("call of function {f}"));
    }
    None
}

/// Why `rule` refuses `s`, if it does.
pub fn not_allowed_by(rule: &AllowRule, s: &Statement) -> Option<String> {
    if let Some(allowed) = &rule.tables {
        if let Some(t) = s
            .tables
            .iter()
            .find(|t| !allowed.iter().any(|p| p.matches(t)))
        {
            return Some(format!("access to table {t}"));
        }
    }
    if let Some(allowed) = &rule.statements {
        let primary = classes(s)[0];
        if !allowed.contains(&primary) {
            return Some(class_name(primary).to_owned());
        }
    }
    None
}
