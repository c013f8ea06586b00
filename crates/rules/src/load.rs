//! Loading a rules file: TOML → [`RulesFile`] with the key path of any
//! error tracked → validation → [`RuleSet`]. Errors name the key
//! (`rule[1].mask.method`) and the line.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Location, RulesError};
use crate::mask::MaskMethod;
use crate::model::{MaskMethodSpec, RuleSpec, RulesFile};
use crate::names::{ColumnPattern, NamePattern, TablePattern};
use crate::rewrite::parameter_count;
use crate::rules::{
    Action, AllowRule, ClientFilter, DenyRule, MaskRule, RewriteRule, Rule, RuleSet,
};

impl RuleSet {
    /// Reads and validates the rules file at `path`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<RuleSet, RulesError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|error| RulesError::Read {
            path: path.to_owned(),
            error,
        })?;
        RuleSet::from_toml_str(&text)
    }

    /// Parses and validates rules given as TOML text.
    pub fn from_toml_str(text: &str) -> Result<RuleSet, RulesError> {
        if let Err(err) = text.parse::<toml::Table>() {
            return Err(RulesError::Syntax {
                message: err.to_string().trim_end().to_owned(),
            });
        }
        let file: RulesFile = serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|err| {
                let key = err.path().to_string();
                let inner = err.into_inner();
                RulesError::Key {
                    key: if key == "." {
                        "(top level)".into()
                    } else {
                        key
                    },
                    message: inner.message().trim_end().to_owned(),
                    location: inner.span().map(|s| location(text, s.start)),
                }
            })?;
        let starts = rule_lines(text);
        let mut rules = Vec::with_capacity(file.rule.len());
        for (i, spec) in file.rule.into_iter().enumerate() {
            let at = starts.get(i).copied();
            rules.push(Arc::new(compile(i, spec, at)?));
        }
        for (i, rule) in rules.iter().enumerate() {
            if rules[..i].iter().any(|r| r.name == rule.name) {
                return Err(RulesError::Invalid {
                    key: format!("rule[{i}].name"),
                    message: format!("another rule is already named \"{}\"", rule.name),
                    location: starts.get(i).copied(),
                });
            }
        }
        Ok(RuleSet {
            rules,
            hold_timeout: Duration::from_millis(file.hold_timeout_ms),
            ..RuleSet::default()
        })
    }
}

fn compile(i: usize, spec: RuleSpec, at: Option<Location>) -> Result<Rule, RulesError> {
    let invalid = |key: &str, message: String| RulesError::Invalid {
        key: format!("rule[{i}]{key}"),
        message,
        location: at,
    };
    if spec.name.trim().is_empty() {
        return Err(invalid(".name", "a rule needs a non-empty name".into()));
    }
    let actions = [
        spec.deny.is_some(),
        spec.allow.is_some(),
        spec.mask.is_some(),
        spec.rewrite.is_some(),
    ]
    .iter()
    .filter(|&&a| a)
    .count();
    if actions != 1 {
        return Err(invalid(
            "",
            format!(
                "rule \"{}\" must have exactly one of deny, allow, mask, rewrite (it has {actions})",
                spec.name
            ),
        ));
    }
    let tables = |key: &str, list: &[String]| {
        list.iter()
            .map(|t| {
                TablePattern::parse(t).ok_or_else(|| {
                    invalid(
                        key,
                        format!("\"{t}\" is not a table name (write name or schema.name)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let action = if let Some(deny) = spec.deny {
        let columns = deny
            .columns
            .iter()
            .map(|c| {
                ColumnPattern::parse(c).ok_or_else(|| {
                    invalid(
                        ".deny.columns",
                        format!("\"{c}\" is not a column (write column or table.column)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if deny.tables.is_empty()
            && columns.is_empty()
            && deny.statements.is_empty()
            && deny.functions.is_empty()
        {
            return Err(invalid(
                ".deny",
                "deny needs at least one of tables, columns, statements, functions".into(),
            ));
        }
        Action::Deny(DenyRule {
            tables: tables(".deny.tables", &deny.tables)?,
            columns,
            statements: deny.statements,
            functions: deny.functions,
        })
    } else if let Some(allow) = spec.allow {
        if allow.tables.is_none() && allow.statements.is_none() {
            return Err(invalid(".allow", "allow needs tables or statements".into()));
        }
        Action::Allow(AllowRule {
            tables: allow
                .tables
                .as_deref()
                .map(|t| tables(".allow.tables", t))
                .transpose()?,
            statements: allow.statements,
        })
    } else if let Some(mask) = spec.mask {
        if mask.columns.is_empty() {
            return Err(invalid(
                ".mask.columns",
                "list at least one column name".into(),
            ));
        }
        let columns = mask
            .columns
            .iter()
            .map(|c| {
                NamePattern::parse(c)
                    .ok_or_else(|| invalid(".mask.columns", "a column pattern is empty".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        match (mask.method, mask.keep) {
            (MaskMethodSpec::KeepLast, None) => {
                return Err(invalid(
                    ".mask.keep",
                    "keep_last needs keep = <characters shown>".into(),
                ))
            }
            (MaskMethodSpec::Redact | MaskMethodSpec::Hash, Some(_)) => {
                return Err(invalid(
                    ".mask.keep",
                    "keep only applies to method = \"keep_last\"".into(),
                ))
            }
            _ => {}
        }
        Action::Mask(MaskRule {
            columns,
            tables: tables(".mask.tables", &mask.tables)?,
            method: MaskMethod::of(mask.method, mask.keep),
            unprovable: mask.unprovable,
        })
    } else if let Some(rewrite) = spec.rewrite {
        let given = [
            rewrite.query.is_some() || rewrite.replacement.is_some(),
            rewrite.rename_table.is_some(),
            rewrite.limit.is_some(),
        ]
        .iter()
        .filter(|&&g| g)
        .count();
        if given != 1 {
            return Err(invalid(
                ".rewrite",
                "give exactly one of query + replacement, rename_table, limit".into(),
            ));
        }
        let rule = if let Some(rename) = rewrite.rename_table {
            let from = TablePattern::parse(&rename.from).ok_or_else(|| {
                invalid(
                    ".rewrite.rename_table.from",
                    format!("\"{}\" is not a table name", rename.from),
                )
            })?;
            if rename.to.is_empty() || rename.to.contains('.') {
                return Err(invalid(
                    ".rewrite.rename_table.to",
                    "write the new table name without schema".into(),
                ));
            }
            RewriteRule::RenameTable {
                from,
                to: rename.to,
            }
        } else if let Some(limit) = rewrite.limit {
            let table = TablePattern::parse(&limit.table).ok_or_else(|| {
                invalid(
                    ".rewrite.limit.table",
                    format!("\"{}\" is not a table name", limit.table),
                )
            })?;
            let rows = i32::try_from(limit.rows)
                .map_err(|_| invalid(".rewrite.limit.rows", "at most 2147483647 rows".into()))?;
            RewriteRule::Limit { table, rows }
        } else {
            let (Some(query), Some(replacement)) = (rewrite.query, rewrite.replacement) else {
                return Err(invalid(
                    ".rewrite",
                    "query and replacement go together".into(),
                ));
            };
            let fingerprint = pg_query::fingerprint(&query)
                .map_err(|e| invalid(".rewrite.query", format!("does not parse: {e}")))?
                .value;
            let sample = parameter_count(&query)
                .map_err(|e| invalid(".rewrite.query", format!("does not parse: {e}")))?;
            let wanted = crate::rewrite::highest_parameter(&replacement)
                .map_err(|e| invalid(".rewrite.replacement", format!("does not parse: {e}")))?;
            if wanted > sample {
                return Err(invalid(
                    ".rewrite.replacement",
                    format!(
                        "uses ${wanted} but the query has only {sample} constants and parameters"
                    ),
                ));
            }
            RewriteRule::Fingerprint {
                fingerprint,
                replacement,
            }
        };
        Action::Rewrite(rule)
    } else {
        return Err(invalid("", "no action".into()));
    };
    Ok(Rule {
        name: spec.name,
        clients: ClientFilter {
            users: spec.clients.users,
            databases: spec.clients.databases,
            application_names: spec.clients.application_names,
            addresses: spec.clients.addresses,
        },
        action,
    })
}

/// Where each `[[rule]]` header is.
fn rule_lines(text: &str) -> Vec<Location> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.trim_start().starts_with("[[rule]]"))
        .map(|(i, _)| Location {
            line: i + 1,
            column: 1,
        })
        .collect()
}

/// The line and column of byte `offset` in `text`.
fn location(text: &str, offset: usize) -> Location {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Location {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}
