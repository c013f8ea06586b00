//! The rules engine of understudy: rules that rewrite, refuse, hold and mask
//! what clients send and receive, decided on PostgreSQL's own parse tree
//! (`pg_query`) — never on regular expressions over SQL text.
//!
//! Everything here is pure (no I/O besides reading the rules file) and is
//! tested without a server; the proxy applies the decisions on the wire.
//!
//! # Layout
//! - [`model`]: the rules file as written (TOML, unknown keys refused).
//! - `load`: reading and validating a rules file into a [`RuleSet`].
//! - [`rules`]: the compiled rules and the client filter.
//! - [`names`]: table names, column names and `*` patterns.
//! - [`analysis`]: what a statement does, from its parse tree.
//! - [`lexical`]: how many statements a query string holds, from the lexer.
//! - [`cache`]: analyses cached by statement text.
//! - [`rewrite`]: fingerprint replacements and parse-tree rewrites.
//! - [`access`]: what `deny` and `allow` rules refuse.
//! - [`results`]: which result fields are masked.
//! - [`mask`]: masking one value, text or binary.
//! - [`session`]: the rules of one session applied to a statement.
//! - [`error`]: the load errors, [`RulesError`].

pub mod access;
pub mod analysis;
pub mod cache;
pub mod error;
pub mod lexical;
mod load;
pub mod mask;
pub mod model;
pub mod names;
pub mod results;
pub mod rewrite;
pub mod rules;
pub mod session;

pub use analysis::{Analysis, CopyInfo, Kind, Output, Outputs, Statement};
pub use error::{Location, RulesError};
pub use mask::MaskMethod;
pub use names::TableName;
pub use results::ResultMask;
pub use rules::{ClientInfo, RuleSet};
pub use session::{Checked, CopyColumns, CopyFormat, CopyMask, Denial, SessionRules};

#[cfg(test)]
mod tests;
