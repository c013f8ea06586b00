//! The rules of one session, applied to each statement it sends: rewrite,
//! then access checks, then the masks of its results.

use std::sync::Arc;

use crate::access;
use crate::analysis::Analysis;
use crate::names::TableName;
use crate::results::{result_mask, ResultMask};
use crate::rewrite;
use crate::rules::{Action, MaskRule, RewriteRule, Rule, RuleSet};

/// The rules that apply to one session.
#[derive(Debug, Clone)]
pub struct SessionRules {
    set: Arc<RuleSet>,
    rules: Vec<Arc<Rule>>,
}

/// A statement refused by a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// The rule's name.
    pub rule: String,
    /// What was refused.
    pub reason: String,
}

impl Denial {
    /// The error message the client gets.
    pub fn message(&self) -> String {
        format!(
            "permission denied by understudy rule \"{}\": {}",
            self.rule, self.reason
        )
    }
}

/// What the rules decided for one statement text.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    /// The text to send instead, if rewritten.
    pub rewritten: Option<String>,
    /// The refusal, if refused.
    pub denial: Option<Denial>,
    /// The masks of each statement's result, in order (empty: none).
    pub masks: Vec<ResultMask>,
    /// Tables the statement (as sent) touches.
    pub tables: Vec<TableName>,
    /// How the data of a `COPY … TO STDOUT` is masked.
    pub copy: Option<CopyMask>,
    /// The statement does not parse and access or mask rules apply: it is
    /// refused with this syntax error.
    pub unparsable: Option<String>,
}

/// How the rows of a `COPY … TO STDOUT` are masked.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyMask {
    /// Which columns.
    pub columns: CopyColumns,
    /// The data format.
    pub format: CopyFormat,
}

/// The columns of a COPY, as far as the statement tells.
#[derive(Debug, Clone, PartialEq)]
pub enum CopyColumns {
    /// The mask of each column, in order.
    Known(Vec<Option<crate::MaskMethod>>),
    /// `COPY table TO` without a column list: the masks depend on the
    /// table's columns, which the caller looks up ([`SessionRules::copy_mask`]).
    Table(TableName),
    /// `COPY (query) TO`: like the query's result, without field names.
    Query(ResultMask),
}

/// COPY data formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// Tab-separated text with backslash escapes.
    Text,
    /// CSV; `header`: the first line is column names.
    Csv {
        /// The first line is a header.
        header: bool,
    },
    /// PostgreSQL's binary COPY format.
    Binary,
}

impl Checked {
    /// True when results need masking.
    pub fn masks_anything(&self) -> bool {
        self.masks.iter().any(|m| !m.is_nothing())
    }
}

impl SessionRules {
    pub(crate) fn new(set: Arc<RuleSet>, rules: Vec<Arc<Rule>>) -> Self {
        SessionRules { set, rules }
    }

    /// True when no rule applies to the session.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule set these rules come from.
    pub fn set(&self) -> &Arc<RuleSet> {
        &self.set
    }

    /// The method of the first mask rule: used for values that must be
    /// masked when the proxy cannot tell which column they are.
    pub fn fallback_mask(&self) -> Option<crate::MaskMethod> {
        self.rules.iter().find_map(|r| match &r.action {
            Action::Mask(m) => Some(m.method),
            _ => None,
        })
    }

    /// True when some access or mask rule applies (statements that cannot
    /// be parsed are then refused).
    fn guards(&self) -> bool {
        self.rules
            .iter()
            .any(|r| !matches!(r.action, Action::Rewrite(_)))
    }

    /// True when some rule masks results.
    pub fn masks(&self) -> bool {
        self.rules
            .iter()
            .any(|r| matches!(r.action, Action::Mask(_)))
    }

    /// Applies the rules to a statement text. A text that does not parse is
    /// left alone (the server rejects it with its own error).
    pub fn check(&self, text: &str) -> Checked {
        if self.rules.is_empty() {
            return Checked::default();
        }
        let Some(mut analysis) = self.set.analyse(text) else {
            // What the parser cannot read, the rules cannot check: with
            // access or mask rules it is refused as the syntax error the
            // parser (PostgreSQL's own) reports, never passed unchecked.
            if !self.guards() {
                return Checked::default();
            }
            let message = match crate::Analysis::of(text) {
                Err(e) => e.0,
                Ok(_) => "the statement could not be analysed".into(),
            };
            return Checked {
                unparsable: Some(message),
                ..Checked::default()
            };
        };
        let mut rewritten: Option<String> = None;
        for rule in &self.rules {
            let Action::Rewrite(rewrite) = &rule.action else {
                continue;
            };
            let current = rewritten.as_deref().unwrap_or(text);
            let new = match rewrite {
                RewriteRule::Fingerprint {
                    fingerprint,
                    replacement,
                } if analysis.fingerprint() == Some(*fingerprint) => {
                    rewrite::substitute(current, replacement).ok()
                }
                RewriteRule::Fingerprint { .. } => None,
                RewriteRule::RenameTable { from, to } => rewrite::rename_table(&analysis, from, to),
                RewriteRule::Limit { table, rows } => rewrite::add_limit(&analysis, table, *rows),
            };
            if let Some(new) = new {
                if let Some(next) = self.set.analyse(&new) {
                    analysis = next;
                    rewritten = Some(new);
                }
            }
        }
        let mut checked = Checked {
            tables: analysis.tables().cloned().collect(),
            rewritten,
            ..Checked::default()
        };
        checked.denial = self.denial(&analysis);
        if checked.denial.is_some() {
            return checked;
        }
        let masks: Vec<(&str, &MaskRule)> = self
            .rules
            .iter()
            .filter_map(|r| match &r.action {
                Action::Mask(m) => Some((r.name.as_str(), m)),
                _ => None,
            })
            .collect();
        if !masks.is_empty() {
            if let Some(copy) = analysis
                .statements
                .first()
                .and_then(|s| Some((s, s.copy.as_ref()?)))
                .filter(|(_, c)| c.client_side && !c.from)
            {
                match self.copy_plan(&masks, copy.0, copy.1) {
                    Ok(plan) => checked.copy = plan,
                    Err(denial) => {
                        checked.denial = Some(denial);
                        return checked;
                    }
                }
            }
            for statement in &analysis.statements {
                if let Some(derived) = &statement.derived {
                    let stored = crate::Statement {
                        outputs: derived.clone(),
                        ..statement.clone()
                    };
                    let rule = match result_mask(&masks, &stored) {
                        Ok(mask) if mask.is_nothing() => None,
                        // Unknown outputs only matter when something masked
                        // may be among them.
                        Ok(ResultMask::Unknown { all: None, .. }) => None,
                        Ok(_) => masks.first().map(|(n, _)| (*n).to_owned()),
                        Err(denied) => Some(denied.rule),
                    };
                    if let Some(rule) = rule {
                        checked.denial = Some(Denial {
                            rule,
                            reason: "the statement stores masked column values (in a table, view or cursor) where they could be read unmasked".into(),
                        });
                        checked.masks.clear();
                        return checked;
                    }
                }
                match result_mask(&masks, statement) {
                    Ok(mask) => checked.masks.push(mask),
                    Err(denied) => {
                        checked.denial = Some(Denial {
                            rule: denied.rule,
                            reason:
                                "a result column may carry a masked column the parser cannot follow"
                                    .into(),
                        });
                        checked.masks.clear();
                        return checked;
                    }
                }
            }
        }
        checked
    }

    fn copy_plan(
        &self,
        masks: &[(&str, &MaskRule)],
        statement: &crate::Statement,
        copy: &crate::CopyInfo,
    ) -> Result<Option<CopyMask>, Denial> {
        let format = if copy.binary {
            CopyFormat::Binary
        } else if copy.csv {
            CopyFormat::Csv {
                header: copy.header,
            }
        } else {
            CopyFormat::Text
        };
        let columns = match &copy.table {
            Some(table) if !copy.columns.is_empty() => {
                let known = self.copy_mask(table, &copy.columns);
                if known.iter().all(Option::is_none) {
                    return Ok(None);
                }
                CopyColumns::Known(known)
            }
            Some(table) => {
                let concerned = masks
                    .iter()
                    .any(|(_, m)| m.tables.is_empty() || m.tables.iter().any(|p| p.matches(table)));
                if !concerned {
                    return Ok(None);
                }
                CopyColumns::Table(table.clone())
            }
            None => match result_mask(masks, statement) {
                Ok(mask) if mask.is_nothing() => return Ok(None),
                Ok(mask) => CopyColumns::Query(mask),
                Err(denied) => {
                    return Err(Denial {
                        rule: denied.rule,
                        reason: "a COPY column may carry a masked column the parser cannot follow"
                            .into(),
                    })
                }
            },
        };
        if copy.custom_layout {
            let rule = masks
                .first()
                .map(|(n, _)| (*n).to_owned())
                .unwrap_or_default();
            return Err(Denial {
                rule,
                reason: "COPY of masked data with custom DELIMITER/NULL/QUOTE options; use the default text or CSV layout".into(),
            });
        }
        Ok(Some(CopyMask { columns, format }))
    }

    fn denial(&self, analysis: &Analysis) -> Option<Denial> {
        for rule in &self.rules {
            for statement in &analysis.statements {
                let reason = match &rule.action {
                    Action::Deny(deny) => access::denied_by(deny, statement),
                    Action::Allow(allow) => access::not_allowed_by(allow, statement),
                    _ => None,
                };
                if let Some(reason) = reason {
                    return Some(Denial {
                        rule: rule.name.clone(),
                        reason,
                    });
                }
            }
        }
        None
    }

    /// The masks for the columns of `COPY table TO` given the table's column
    /// names (`columns`) when the statement lists none.
    pub fn copy_mask(
        &self,
        table: &TableName,
        columns: &[String],
    ) -> Vec<Option<crate::MaskMethod>> {
        columns
            .iter()
            .map(|c| {
                self.rules.iter().find_map(|r| match &r.action {
                    Action::Mask(m)
                        if m.columns.iter().any(|p| p.matches(c))
                            && (m.tables.is_empty()
                                || m.tables.iter().any(|p| p.matches(table))) =>
                    {
                        Some(m.method)
                    }
                    _ => None,
                })
            })
            .collect()
    }
}
