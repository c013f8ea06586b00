//! Which output fields of a result are masked: the statement's outputs
//! (from the parse tree) combined with the fields of the server's
//! RowDescription.
//!
//! A plain column is masked when it matches a mask rule. `*` expands to
//! fields named after the columns, so those are matched by name. An output
//! the parser cannot tie to a column (an expression, a column of a
//! subquery, a whole-row reference) is "unprovable": when the statement
//! references a masked column anywhere (or a `*` the parser cannot follow),
//! the rule's `unprovable` policy decides — mask it, or refuse the statement.

use crate::analysis::{Output, Outputs, Statement};
use crate::mask::MaskMethod;
use crate::model::Unprovable;
use crate::rules::MaskRule;

/// How one target of the statement is masked.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetMask {
    /// Shown as is.
    Keep,
    /// Masked.
    Mask(MaskMethod),
    /// A `*`: its fields are masked by name; `all` masks every one of them.
    ByName {
        /// Name patterns and methods.
        names: Vec<(crate::names::NamePattern, MaskMethod)>,
        /// Every field is masked with this method.
        all: Option<MaskMethod>,
    },
}

/// How the rows of one statement's result are masked.
#[derive(Debug, Clone, PartialEq)]
pub enum ResultMask {
    /// Nothing is masked.
    Nothing,
    /// One entry per target.
    Targets(Vec<TargetMask>),
    /// The outputs are unknown: fields are masked by name, or all of them.
    Unknown {
        /// Name patterns and methods.
        names: Vec<(crate::names::NamePattern, MaskMethod)>,
        /// Every field is masked with this method.
        all: Option<MaskMethod>,
    },
}

/// A statement refused because a masked column could be unmasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnprovableDenial {
    /// The mask rule's name.
    pub rule: String,
}

fn sensitive(rule: &MaskRule, s: &Statement) -> bool {
    let touches = rule.tables.is_empty()
        || s.tables
            .iter()
            .any(|t| rule.tables.iter().any(|p| p.matches(t)));
    touches
        && (s.hidden_rows
            || s.columns.iter().any(|c| {
                c.column
                    .as_deref()
                    .is_some_and(|c| rule.columns.iter().any(|p| p.matches(c)))
            }))
}

fn table_scope(rule: &MaskRule, tables: &[crate::names::TableName], opaque: bool) -> bool {
    rule.tables.is_empty()
        || tables
            .iter()
            .any(|t| rule.tables.iter().any(|p| p.matches(t)))
        || (tables.is_empty() && opaque)
}

/// The masks of `s`'s result under `rules` (named), or the rule that
/// refuses it.
pub fn result_mask(
    rules: &[(&str, &MaskRule)],
    s: &Statement,
) -> Result<ResultMask, UnprovableDenial> {
    if rules.is_empty() {
        return Ok(ResultMask::Nothing);
    }
    let unprovable = |masks: &mut Option<MaskMethod>| -> Result<(), UnprovableDenial> {
        for (name, rule) in rules {
            if sensitive(rule, s) {
                if rule.unprovable == Unprovable::Deny {
                    return Err(UnprovableDenial {
                        rule: (*name).to_owned(),
                    });
                }
                *masks = Some(rule.method);
                return Ok(());
            }
        }
        Ok(())
    };
    let by_name = |tables: &[crate::names::TableName], opaque: bool| {
        rules
            .iter()
            .filter(|(_, r)| table_scope(r, tables, opaque))
            .flat_map(|(_, r)| r.columns.iter().map(|c| (c.clone(), r.method)))
            .collect::<Vec<_>>()
    };
    match &s.outputs {
        Outputs::None => Ok(ResultMask::Nothing),
        Outputs::Unknown => {
            let mut all = None;
            unprovable(&mut all)?;
            Ok(ResultMask::Unknown {
                names: by_name(&[], true),
                all,
            })
        }
        Outputs::Targets(targets) => {
            let mut out = Vec::with_capacity(targets.len());
            for target in targets {
                out.push(match target {
                    Output::Column {
                        column,
                        tables,
                        opaque,
                    } => {
                        let direct = rules.iter().find(|(_, r)| {
                            r.columns.iter().any(|p| p.matches(column))
                                && table_scope(r, tables, *opaque)
                        });
                        match direct {
                            Some((_, r)) => TargetMask::Mask(r.method),
                            None if *opaque => {
                                let mut m = None;
                                unprovable(&mut m)?;
                                m.map_or(TargetMask::Keep, TargetMask::Mask)
                            }
                            None => TargetMask::Keep,
                        }
                    }
                    Output::Star { tables, opaque } => {
                        let mut all = None;
                        if *opaque {
                            unprovable(&mut all)?;
                        }
                        let names = by_name(tables, *opaque);
                        if names.is_empty() && all.is_none() {
                            TargetMask::Keep
                        } else {
                            TargetMask::ByName { names, all }
                        }
                    }
                    Output::Expression => {
                        let mut m = None;
                        unprovable(&mut m)?;
                        m.map_or(TargetMask::Keep, TargetMask::Mask)
                    }
                });
            }
            if out.iter().all(|t| *t == TargetMask::Keep) {
                Ok(ResultMask::Nothing)
            } else {
                Ok(ResultMask::Targets(out))
            }
        }
    }
}

impl ResultMask {
    /// True when no field is ever masked.
    pub fn is_nothing(&self) -> bool {
        matches!(self, ResultMask::Nothing)
    }

    /// The mask of each field of a RowDescription with these field names.
    /// `None` for the names means the fields are not known: every field
    /// that could be masked is.
    pub fn fields(&self, names: &[&str]) -> Vec<Option<MaskMethod>> {
        let by = |names_rules: &[(crate::names::NamePattern, MaskMethod)],
                  all: Option<MaskMethod>,
                  field: &str| {
            all.or_else(|| {
                names_rules
                    .iter()
                    .find(|(p, _)| p.matches(field))
                    .map(|(_, m)| *m)
            })
        };
        match self {
            ResultMask::Nothing => vec![None; names.len()],
            ResultMask::Unknown { names: rules, all } => {
                names.iter().map(|n| by(rules, *all, n)).collect()
            }
            ResultMask::Targets(targets) => {
                let stars = targets
                    .iter()
                    .filter(|t| matches!(t, TargetMask::ByName { .. }))
                    .count();
                if stars == 0 && names.len() != targets.len() {
                    // The server's result does not line up with the
                    // statement: mask whatever any target masks.
                    let any = targets.iter().find_map(|t| match t {
                        TargetMask::Mask(m) => Some(*m),
                        _ => None,
                    });
                    return vec![any; names.len()];
                }
                let mut union: (
                    Vec<(crate::names::NamePattern, MaskMethod)>,
                    Option<MaskMethod>,
                ) = (Vec::new(), None);
                for t in targets {
                    if let TargetMask::ByName { names, all } = t {
                        union.0.extend(names.iter().cloned());
                        union.1 = union.1.or(*all);
                    }
                }
                let mut out = Vec::with_capacity(names.len());
                let mut field = 0;
                for (i, target) in targets.iter().enumerate() {
                    match target {
                        TargetMask::Keep => {
                            out.push(None);
                            field += 1;
                        }
                        TargetMask::Mask(m) => {
                            out.push(Some(*m));
                            field += 1;
                        }
                        TargetMask::ByName { names: rules, all } => {
                            let take = star_fields_remaining(names.len(), field, targets, i);
                            // With several stars the split between them is
                            // unknown: the last one takes every star field,
                            // matched against the rules of all the stars.
                            let (rules, all) = if stars > 1 {
                                union.clone()
                            } else {
                                (rules.clone(), *all)
                            };
                            for n in names.iter().skip(field).take(take) {
                                out.push(by(&rules, all, n));
                            }
                            field += take;
                        }
                    }
                }
                out.resize(names.len(), None);
                out
            }
        }
    }
}

/// For several stars: the first stars take nothing and the last one takes
/// every field not claimed by a fixed target (name matching makes the split
/// irrelevant as long as every star field is matched).
fn star_fields_remaining(total: usize, field: usize, targets: &[TargetMask], i: usize) -> usize {
    let later_fixed = targets[i + 1..]
        .iter()
        .filter(|t| !matches!(t, TargetMask::ByName { .. }))
        .count();
    let later_stars = targets[i + 1..]
        .iter()
        .any(|t| matches!(t, TargetMask::ByName { .. }));
    if later_stars {
        0
    } else {
        total.saturating_sub(field + later_fixed)
    }
}
