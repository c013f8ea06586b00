//! The rules file as written: serde structs, one per table of the TOML file.
//! Unknown keys are errors (`deny_unknown_fields`); `load` turns these
//! structs into the compiled [`crate::RuleSet`].

use serde::Deserialize;
use understudy_config::Cidr;

/// The whole rules file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// How long a request touching a held table waits for `maintenance end`
    /// before it gets an error, in milliseconds.
    #[serde(default = "default_hold_timeout_ms")]
    pub hold_timeout_ms: u64,
    /// The rules, in the order they are applied.
    #[serde(default)]
    pub rule: Vec<RuleSpec>,
}

fn default_hold_timeout_ms() -> u64 {
    30_000
}

/// One `[[rule]]`: a name, which clients it applies to, and one action.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Named in denials, logs and metrics.
    pub name: String,
    /// Limits the rule to some clients (all clients when absent).
    #[serde(default)]
    pub clients: ClientSpec,
    /// Statements refused.
    pub deny: Option<DenySpec>,
    /// Statements allowed (anything else is refused).
    pub allow: Option<AllowSpec>,
    /// Values masked in results.
    pub mask: Option<MaskSpec>,
    /// Statements rewritten before they reach the server.
    pub rewrite: Option<RewriteSpec>,
}

/// Which clients a rule applies to; every list that is given must match.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    /// Role names.
    #[serde(default)]
    pub users: Vec<String>,
    /// Database names.
    #[serde(default)]
    pub databases: Vec<String>,
    /// `application_name` values given at connection time.
    #[serde(default)]
    pub application_names: Vec<String>,
    /// Client networks, e.g. `127.0.0.0/8`.
    #[serde(default)]
    pub addresses: Vec<Cidr>,
}

/// What a `deny` rule refuses.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenySpec {
    /// Tables (`name` or `schema.name`) that may not be touched.
    #[serde(default)]
    pub tables: Vec<String>,
    /// Columns (`column` or `table.column`) that may not be referenced.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Kinds of statements refused.
    #[serde(default)]
    pub statements: Vec<StatementClass>,
    /// Functions that may not be called (`name` or `schema.name`).
    #[serde(default)]
    pub functions: Vec<String>,
}

/// What an `allow` rule lets through; any other table or kind is refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowSpec {
    /// The only tables that may be touched (when given).
    pub tables: Option<Vec<String>>,
    /// The only kinds of statements allowed (when given).
    pub statements: Option<Vec<StatementClass>>,
}

/// Kinds of statements an access rule names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementClass {
    /// SELECT (and VALUES, TABLE).
    Select,
    /// INSERT.
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
    /// MERGE.
    Merge,
    /// CREATE, ALTER, DROP, TRUNCATE, GRANT, …
    Ddl,
    /// DELETE without a WHERE clause.
    DeleteWithoutWhere,
    /// UPDATE without a WHERE clause.
    UpdateWithoutWhere,
    /// Any COPY.
    Copy,
    /// COPY … TO (reading data out).
    CopyTo,
    /// COPY … FROM (loading data in).
    CopyFrom,
    /// Any statement that calls a function (built-ins included).
    Functions,
    /// Transaction control, SET, SHOW and the other utility statements.
    Utility,
}

/// How a `mask` rule hides values.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskSpec {
    /// Column-name patterns; `*` matches any run of characters.
    pub columns: Vec<String>,
    /// Only columns of these tables (all tables when empty).
    #[serde(default)]
    pub tables: Vec<String>,
    /// How values are hidden.
    pub method: MaskMethodSpec,
    /// For `keep_last`: how many trailing characters stay visible.
    pub keep: Option<usize>,
    /// What happens when the parser cannot prove which column an output is
    /// while the statement references a masked column.
    #[serde(default)]
    pub unprovable: Unprovable,
}

/// The masking methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskMethodSpec {
    /// Every character but the last `keep` becomes `*`.
    KeepLast,
    /// The value becomes `********`.
    Redact,
    /// The value becomes the hex SHA-256 of its text.
    Hash,
}

/// Policy for outputs whose column the parser cannot prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unprovable {
    /// Mask the output as if it were the masked column.
    #[default]
    Mask,
    /// Refuse the statement.
    Deny,
}

/// What a `rewrite` rule changes; exactly one of its keys is given.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteSpec {
    /// A sample of the statement to replace: statements with the same
    /// fingerprint (same shape, any constants) are replaced.
    pub query: Option<String>,
    /// The replacement; `$1`, `$2`… stand for the original's constants and
    /// parameters, in the order they appear.
    pub replacement: Option<String>,
    /// Rename a table in every statement.
    pub rename_table: Option<RenameSpec>,
    /// Add a LIMIT to SELECTs of a table that have none.
    pub limit: Option<LimitSpec>,
}

/// `rename_table = { from = "old", to = "new" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenameSpec {
    /// The table name clients use.
    pub from: String,
    /// The table the server has.
    pub to: String,
}

/// `limit = { table = "events", rows = 1000 }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSpec {
    /// The table whose unbounded SELECTs get a LIMIT.
    pub table: String,
    /// The LIMIT added.
    pub rows: u64,
}
