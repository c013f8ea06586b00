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
            return Checked::default();
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
            for statement in &analysis.statements {
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
