//! What a statement does, read from PostgreSQL's own parse tree
//! (`pg_query`): its kind, the tables it reads and writes, the columns and
//! functions it references, whether it has a WHERE clause, its COPY
//! direction, and for every output column where the value comes from.
//!
//! The typed tree is read for the top level (statement kind, target list,
//! FROM clause, COPY); references anywhere in the statement (subqueries,
//! CTEs, expressions) are collected by walking the whole tree in its serde
//! form, so no node type is missed.

use std::sync::OnceLock;

use pg_query::protobuf::{self, node::Node as N};
use serde_json::Value;

use crate::names::TableName;

/// A statement text that does not parse.
#[derive(Debug, Clone, thiserror::Error)]
#[error("statement does not parse: {0}")]
pub struct ParseFailure(pub String);

/// The analysis of one statement text (which may hold several statements).
#[derive(Debug)]
pub struct Analysis {
    /// The statements, in order.
    pub statements: Vec<Statement>,
    /// The parse tree, for structural rewrites.
    pub(crate) tree: protobuf::ParseResult,
    /// The text analysed.
    pub(crate) text: String,
    fingerprint: OnceLock<Option<u64>>,
}

/// The broad kind of a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SELECT, VALUES, TABLE.
    Select,
    /// INSERT.
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
    /// MERGE.
    Merge,
    /// COPY.
    Copy,
    /// Schema changes, TRUNCATE, GRANT, …
    Ddl,
    /// Transaction control, SET, SHOW, PREPARE, EXECUTE, FETCH, …
    Utility,
}

/// COPY's direction and target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyInfo {
    /// `COPY … FROM` (true) or `COPY … TO` (false).
    pub from: bool,
    /// The data goes through the client connection (STDIN/STDOUT).
    pub client_side: bool,
    /// The table, unless it is `COPY (query)`.
    pub table: Option<TableName>,
    /// The column list given, if any.
    pub columns: Vec<String>,
    /// The format is binary.
    pub binary: bool,
    /// The format is CSV.
    pub csv: bool,
    /// CSV with a header line.
    pub header: bool,
    /// Options that change how values are written (DELIMITER, NULL,
    /// QUOTE, ESCAPE, FORCE_QUOTE, …).
    pub custom_layout: bool,
}

/// A column reference anywhere in a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnUse {
    /// The relation qualifier, if written (`t` in `t.c`).
    pub qualifier: Option<String>,
    /// The column; `None` for `*`.
    pub column: Option<String>,
}

/// Where a FROM item's columns come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A table; `renamed` when its alias renames the columns.
    Table {
        /// The table.
        table: TableName,
        /// The name the statement uses for it (alias or table name).
        visible: String,
        /// The alias lists new column names.
        renamed: bool,
    },
    /// A subquery, function, CTE or anything else whose columns the parser
    /// cannot tie to a table column.
    Opaque {
        /// Its alias, if any.
        visible: Option<String>,
    },
}

/// Where one output column of a result comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A plain column reference.
    Column {
        /// The column name.
        column: String,
        /// Tables it may belong to (several when unqualified in a join).
        tables: Vec<TableName>,
        /// It may instead come from a source the parser cannot see into
        /// (a subquery, a function, a renamed alias), or be a whole-row
        /// reference to such a source.
        opaque: bool,
    },
    /// `*` or `t.*`: fields named after the columns of these tables.
    Star {
        /// The tables expanded.
        tables: Vec<TableName>,
        /// Part of the expansion comes from an opaque source.
        opaque: bool,
    },
    /// A computed value.
    Expression,
}

/// The rows a statement returns, as far as the parser can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outputs {
    /// It returns no rows.
    None,
    /// One entry per target, in order.
    Targets(Vec<Output>),
    /// It may return rows whose origin the parser cannot tell
    /// (set operations, EXPLAIN, FETCH, EXECUTE, …).
    Unknown,
}

/// One statement.
#[derive(Debug, Clone)]
pub struct Statement {
    /// Its kind.
    pub kind: Kind,
    /// Tables it touches (read or written); CTE names excluded.
    pub tables: Vec<TableName>,
    /// Tables it writes.
    pub written: Vec<TableName>,
    /// UPDATE/DELETE with a WHERE clause.
    pub has_where: bool,
    /// A top-level SELECT with a LIMIT.
    pub has_limit: bool,
    /// COPY details.
    pub copy: Option<CopyInfo>,
    /// Functions called (`name` or `schema.name`).
    pub functions: Vec<String>,
    /// Every column reference.
    pub columns: Vec<ColumnUse>,
    /// A `*` or a whole-row reference other than a top-level `*` target:
    /// it may carry any column somewhere the parser cannot follow.
    pub hidden_rows: bool,
    /// The rows it returns.
    pub outputs: Outputs,
    /// Rows it computes and stores where the proxy cannot mask them (a
    /// cursor, a table, a view): INSERT … SELECT, CREATE TABLE … AS,
    /// SELECT … INTO, CREATE VIEW, DECLARE CURSOR.
    pub derived: Option<Outputs>,
}

impl Analysis {
    /// Parses and analyses `text`.
    pub fn of(text: &str) -> Result<Analysis, ParseFailure> {
        // pg_query's summary of the tree asserts node shapes the grammar
        // guarantees; a statement that broke one must not end the session.
        let parsed = std::panic::catch_unwind(|| pg_query::parse(text))
            .map_err(|_| ParseFailure("the parser failed on this statement".into()))?
            .map_err(|e| ParseFailure(e.to_string()))?;
        let tree = parsed.protobuf;
        let mut statements = Vec::with_capacity(tree.stmts.len());
        for raw in &tree.stmts {
            let Some(node) = raw.stmt.as_ref().and_then(|s| s.node.as_ref()) else {
                continue;
            };
            statements.push(Statement::of(node));
        }
        Ok(Analysis {
            statements,
            tree,
            text: text.to_owned(),
            fingerprint: OnceLock::new(),
        })
    }

    /// The statement's fingerprint: equal for statements of the same shape
    /// whatever their constants.
    pub fn fingerprint(&self) -> Option<u64> {
        *self
            .fingerprint
            .get_or_init(|| pg_query::fingerprint(&self.text).ok().map(|f| f.value))
    }

    /// Every table touched by any of the statements.
    pub fn tables(&self) -> impl Iterator<Item = &TableName> {
        self.statements.iter().flat_map(|s| s.tables.iter())
    }
}

/// Facts collected by walking a whole subtree.
#[derive(Default)]
struct Walk {
    tables: Vec<(TableName, Option<String>)>,
    ctes: Vec<String>,
    functions: Vec<String>,
    columns: Vec<ColumnUse>,
}

impl Walk {
    fn of(node: &N) -> Walk {
        let mut walk = Walk::default();
        if let Ok(value) = serde_json::to_value(node) {
            walk.visit(&value);
        }
        walk
    }

    fn visit(&mut self, value: &Value) {
        match value {
            Value::Object(map) => {
                if map.contains_key("relname") && map.contains_key("relpersistence") {
                    let text = |k: &str| map.get(k).and_then(Value::as_str).unwrap_or_default();
                    let alias = map
                        .get("alias")
                        .and_then(|a| a.get("aliasname"))
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    self.tables
                        .push((TableName::new(text("schemaname"), text("relname")), alias));
                }
                if let Some(cte) = map.get("CommonTableExpr") {
                    if let Some(name) = cte.get("ctename").and_then(Value::as_str) {
                        self.ctes.push(name.to_owned());
                    }
                }
                if let Some(call) = map.get("FuncCall") {
                    let name: Vec<&str> = strings(call.get("funcname"));
                    self.functions.push(name.join("."));
                }
                if let Some(cref) = map.get("ColumnRef") {
                    self.columns.push(column_use(cref.get("fields")));
                }
                for child in map.values() {
                    self.visit(child);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| self.visit(v)),
            _ => {}
        }
    }
}

/// The `sval`s of a list of `String` nodes.
fn strings(list: Option<&Value>) -> Vec<&str> {
    list.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|n| n.get("node")?.get("String")?.get("sval")?.as_str())
                .collect()
        })
        .unwrap_or_default()
}

fn column_use(fields: Option<&Value>) -> ColumnUse {
    let items = fields
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<Option<String>> = items
        .iter()
        .map(|n| {
            n.get("node")
                .and_then(|n| n.get("String"))
                .and_then(|s| s.get("sval"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect();
    let column = names.last().cloned().flatten();
    let qualifier = (names.len() >= 2)
        .then(|| names[names.len() - 2].clone())
        .flatten();
    ColumnUse { qualifier, column }
}

fn node_strings(list: &[protobuf::Node]) -> Vec<String> {
    list.iter()
        .filter_map(|n| match &n.node {
            Some(N::String(s)) => Some(s.sval.clone()),
            _ => None,
        })
        .collect()
}

impl Statement {
    fn of(node: &N) -> Statement {
        let walk = Walk::of(node);
        let tables: Vec<TableName> = dedup(
            walk.tables
                .iter()
                .filter(|(t, _)| !(t.schema.is_none() && walk.ctes.contains(&t.name)))
                .map(|(t, _)| t.clone()),
        );
        let mut statement = Statement {
            kind: Kind::Utility,
            tables,
            written: Vec::new(),
            has_where: false,
            has_limit: false,
            copy: None,
            functions: dedup(walk.functions.iter().cloned()),
            columns: walk.columns.clone(),
            hidden_rows: false,
            outputs: Outputs::None,
            derived: None,
        };
        let relation = |r: &Option<protobuf::RangeVar>| {
            r.iter()
                .map(|r| TableName::new(&r.schemaname, &r.relname))
                .collect::<Vec<_>>()
        };
        let mut top_level_stars = 0;
        match node {
            N::SelectStmt(s) => {
                statement.kind = Kind::Select;
                statement.has_limit = s.limit_count.is_some();
                if s.into_clause.is_some() {
                    statement.kind = Kind::Ddl;
                    statement.derived = Some(select_outputs(s, &walk.ctes, &mut top_level_stars));
                } else {
                    statement.outputs = select_outputs(s, &walk.ctes, &mut top_level_stars);
                }
            }
            N::InsertStmt(s) => {
                statement.kind = Kind::Insert;
                statement.written = relation(&s.relation);
                statement.derived = s
                    .select_stmt
                    .as_ref()
                    .and_then(|q| q.node.as_ref())
                    .map(|q| query_outputs(q, &walk.ctes, &mut top_level_stars));
                statement.outputs = returning(
                    &s.returning_list,
                    &s.relation,
                    &[],
                    &walk.ctes,
                    &mut top_level_stars,
                );
            }
            N::UpdateStmt(s) => {
                statement.kind = Kind::Update;
                statement.written = relation(&s.relation);
                statement.has_where = s.where_clause.is_some();
                statement.outputs = returning(
                    &s.returning_list,
                    &s.relation,
                    &s.from_clause,
                    &walk.ctes,
                    &mut top_level_stars,
                );
            }
            N::DeleteStmt(s) => {
                statement.kind = Kind::Delete;
                statement.written = relation(&s.relation);
                statement.has_where = s.where_clause.is_some();
                statement.outputs = returning(
                    &s.returning_list,
                    &s.relation,
                    &s.using_clause,
                    &walk.ctes,
                    &mut top_level_stars,
                );
            }
            N::MergeStmt(s) => {
                statement.kind = Kind::Merge;
                statement.written = relation(&s.relation);
                statement.outputs = if s.returning_list.is_empty() {
                    Outputs::None
                } else {
                    Outputs::Unknown
                };
            }
            N::CopyStmt(s) => {
                statement.kind = Kind::Copy;
                let table = s
                    .relation
                    .as_ref()
                    .map(|r| TableName::new(&r.schemaname, &r.relname));
                if s.is_from {
                    statement.written = table.iter().cloned().collect();
                }
                let option = |name: &str| {
                    s.options.iter().find_map(|o| match &o.node {
                        Some(N::DefElem(d)) if d.defname == name => Some(
                            d.arg
                                .as_ref()
                                .and_then(|a| a.node.as_ref())
                                .map(|a| match a {
                                    N::String(s) => s.sval.clone(),
                                    _ => String::new(),
                                })
                                .unwrap_or_default(),
                        ),
                        _ => None,
                    })
                };
                // The columns COPY reads or writes: those listed, or all of
                // them (like a `*`).
                if s.relation.is_some() {
                    let listed = node_strings(&s.attlist);
                    if listed.is_empty() {
                        statement.columns.push(ColumnUse {
                            qualifier: None,
                            column: None,
                        });
                    }
                    statement
                        .columns
                        .extend(listed.into_iter().map(|c| ColumnUse {
                            qualifier: None,
                            column: Some(c),
                        }));
                }
                let format = option("format").unwrap_or_default();
                let header =
                    option("header").is_some_and(|h| !matches!(h.as_str(), "false" | "off" | "0"));
                let custom_layout = s.options.iter().any(|o| {
                    matches!(&o.node, Some(N::DefElem(d)) if !matches!(d.defname.as_str(), "format" | "header" | "freeze" | "encoding"))
                });
                statement.copy = Some(CopyInfo {
                    from: s.is_from,
                    client_side: s.filename.is_empty() && !s.is_program,
                    table,
                    columns: node_strings(&s.attlist),
                    binary: format == "binary",
                    csv: format == "csv",
                    header,
                    custom_layout,
                });
                if let Some(N::SelectStmt(q)) = s.query.as_ref().and_then(|q| q.node.as_ref()) {
                    statement.outputs = select_outputs(q, &walk.ctes, &mut top_level_stars);
                }
            }
            N::DeclareCursorStmt(d) => {
                statement.derived = d
                    .query
                    .as_ref()
                    .and_then(|q| q.node.as_ref())
                    .map(|q| query_outputs(q, &walk.ctes, &mut top_level_stars));
            }
            N::ExplainStmt(_) | N::FetchStmt(_) | N::ExecuteStmt(_) | N::CallStmt(_) => {
                statement.outputs = Outputs::Unknown;
            }
            N::CreateStmt(_)
            | N::CreateTableAsStmt(_)
            | N::AlterTableStmt(_)
            | N::DropStmt(_)
            | N::TruncateStmt(_)
            | N::IndexStmt(_)
            | N::RenameStmt(_)
            | N::GrantStmt(_)
            | N::GrantRoleStmt(_)
            | N::CreateFunctionStmt(_)
            | N::AlterFunctionStmt(_)
            | N::CreateSchemaStmt(_)
            | N::ViewStmt(_)
            | N::CreateSeqStmt(_)
            | N::AlterSeqStmt(_)
            | N::CreateTrigStmt(_)
            | N::RuleStmt(_)
            | N::CommentStmt(_)
            | N::CreateExtensionStmt(_)
            | N::AlterOwnerStmt(_)
            | N::AlterObjectSchemaStmt(_)
            | N::CreateDomainStmt(_)
            | N::CompositeTypeStmt(_)
            | N::CreateEnumStmt(_)
            | N::DefineStmt(_)
            | N::CreatedbStmt(_)
            | N::DropdbStmt(_)
            | N::CreateRoleStmt(_)
            | N::AlterRoleStmt(_)
            | N::DropRoleStmt(_)
            | N::CreatePolicyStmt(_)
            | N::DoStmt(_) => {
                statement.kind = Kind::Ddl;
                statement.written = statement.tables.clone();
                if let N::DropStmt(d) = node {
                    if d.remove_type == protobuf::ObjectType::ObjectTable as i32 {
                        for object in &d.objects {
                            if let Some(N::List(list)) = &object.node {
                                let parts = node_strings(&list.items);
                                let table = match parts.as_slice() {
                                    [name] => TableName::new("", name),
                                    [.., schema, name] => TableName::new(schema, name),
                                    [] => continue,
                                };
                                statement.tables.push(table.clone());
                                statement.written.push(table);
                            }
                        }
                    }
                }
                if let N::TruncateStmt(t) = node {
                    statement.written = statement.tables.clone();
                    let _ = t;
                }
            }
            _ => {}
        }
        let stored = match node {
            N::CreateTableAsStmt(c) => c.query.as_ref(),
            N::ViewStmt(v) => v.query.as_ref(),
            _ => None,
        };
        if let Some(q) = stored.and_then(|q| q.node.as_ref()) {
            statement.derived = Some(query_outputs(q, &walk.ctes, &mut top_level_stars));
        }
        let names: Vec<&str> = walk
            .tables
            .iter()
            .flat_map(|(t, alias)| [Some(t.name.as_str()), alias.as_deref()])
            .flatten()
            .chain(walk.ctes.iter().map(String::as_str))
            .collect();
        let stars = walk.columns.iter().filter(|c| c.column.is_none()).count();
        let whole_rows = walk.columns.iter().any(|c| {
            c.qualifier.is_none() && c.column.as_deref().is_some_and(|c| names.contains(&c))
        });
        statement.hidden_rows = stars > top_level_stars || whole_rows;
        statement
    }
}

fn dedup<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// The FROM items of a clause, flattened through joins.
fn sources(from: &[protobuf::Node], ctes: &[String], out: &mut Vec<Source>) {
    for item in from {
        source(item.node.as_ref(), ctes, out);
    }
}

fn source(node: Option<&N>, ctes: &[String], out: &mut Vec<Source>) {
    match node {
        Some(N::RangeVar(r)) => {
            let visible = r
                .alias
                .as_ref()
                .map_or_else(|| r.relname.clone(), |a| a.aliasname.clone());
            if r.schemaname.is_empty() && ctes.contains(&r.relname) {
                out.push(Source::Opaque {
                    visible: Some(visible),
                });
            } else {
                out.push(Source::Table {
                    table: TableName::new(&r.schemaname, &r.relname),
                    visible,
                    renamed: r.alias.as_ref().is_some_and(|a| !a.colnames.is_empty()),
                });
            }
        }
        Some(N::JoinExpr(j)) => {
            source(j.larg.as_ref().and_then(|n| n.node.as_ref()), ctes, out);
            source(j.rarg.as_ref().and_then(|n| n.node.as_ref()), ctes, out);
            if let Some(alias) = &j.alias {
                out.push(Source::Opaque {
                    visible: Some(alias.aliasname.clone()),
                });
            }
        }
        Some(N::RangeSubselect(s)) => out.push(Source::Opaque {
            visible: s.alias.as_ref().map(|a| a.aliasname.clone()),
        }),
        Some(N::RangeFunction(f)) => out.push(Source::Opaque {
            visible: f.alias.as_ref().map(|a| a.aliasname.clone()),
        }),
        _ => out.push(Source::Opaque { visible: None }),
    }
}

/// The outputs of a query node (a SELECT, or anything else: unknown).
fn query_outputs(node: &N, ctes: &[String], stars: &mut usize) -> Outputs {
    match node {
        N::SelectStmt(s) => select_outputs(s, ctes, stars),
        _ => Outputs::Unknown,
    }
}

fn select_outputs(s: &protobuf::SelectStmt, ctes: &[String], stars: &mut usize) -> Outputs {
    if !s.values_lists.is_empty() {
        // VALUES: every output is an expression.
        let width = match s.values_lists.first().and_then(|l| l.node.as_ref()) {
            Some(N::List(list)) => list.items.len(),
            _ => 0,
        };
        return Outputs::Targets(vec![Output::Expression; width]).unknown_if_empty();
    }
    if s.op != protobuf::SetOperation::SetopNone as i32 {
        return Outputs::Unknown;
    }
    let mut scope = Vec::new();
    sources(&s.from_clause, ctes, &mut scope);
    Outputs::Targets(targets(&s.target_list, &scope, stars))
}

impl Outputs {
    fn unknown_if_empty(self) -> Outputs {
        match self {
            Outputs::Targets(t) if t.is_empty() => Outputs::Unknown,
            other => other,
        }
    }
}

fn returning(
    list: &[protobuf::Node],
    relation: &Option<protobuf::RangeVar>,
    from: &[protobuf::Node],
    ctes: &[String],
    stars: &mut usize,
) -> Outputs {
    if list.is_empty() {
        return Outputs::None;
    }
    let mut scope = Vec::new();
    if let Some(r) = relation {
        source(Some(&N::RangeVar(r.clone())), ctes, &mut scope);
    }
    sources(from, ctes, &mut scope);
    Outputs::Targets(targets(list, &scope, stars))
}

fn targets(list: &[protobuf::Node], scope: &[Source], stars: &mut usize) -> Vec<Output> {
    list.iter()
        .map(|item| {
            let Some(N::ResTarget(target)) = &item.node else {
                return Output::Expression;
            };
            match target.val.as_ref().and_then(|v| v.node.as_ref()) {
                Some(N::ColumnRef(c)) => {
                    let output = column_output(c, scope);
                    if matches!(output, Output::Star { .. }) {
                        *stars += 1;
                    }
                    output
                }
                _ => Output::Expression,
            }
        })
        .collect()
}

fn column_output(c: &protobuf::ColumnRef, scope: &[Source]) -> Output {
    let fields: Vec<Option<&str>> = c
        .fields
        .iter()
        .map(|f| match &f.node {
            Some(N::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect();
    let named = |q: &str| -> Vec<&Source> {
        scope
            .iter()
            .filter(|s| match s {
                Source::Table { visible, .. } => visible == q,
                Source::Opaque { visible } => visible.as_deref() == Some(q),
            })
            .collect()
    };
    let plain_tables = |sources: &mut dyn Iterator<Item = &Source>| {
        let mut tables = Vec::new();
        let mut opaque = false;
        for s in sources {
            match s {
                Source::Table { table, renamed, .. } => {
                    tables.push(table.clone());
                    opaque |= *renamed;
                }
                Source::Opaque { .. } => opaque = true,
            }
        }
        (tables, opaque)
    };
    match fields.as_slice() {
        [None] => {
            let (tables, opaque) = plain_tables(&mut scope.iter());
            Output::Star { tables, opaque }
        }
        [.., Some(q), None] => {
            let matching = named(q);
            if matching.is_empty() {
                return Output::Star {
                    tables: Vec::new(),
                    opaque: true,
                };
            }
            let (tables, opaque) = plain_tables(&mut matching.into_iter());
            Output::Star { tables, opaque }
        }
        [Some(column)] => {
            let (tables, mut opaque) = plain_tables(&mut scope.iter());
            // `SELECT t FROM t` is a whole-row reference.
            opaque |= !named(column).is_empty();
            Output::Column {
                column: (*column).to_owned(),
                tables,
                opaque,
            }
        }
        [.., Some(q), Some(column)] => {
            let matching = named(q);
            if matching.is_empty() {
                return Output::Column {
                    column: (*column).to_owned(),
                    tables: Vec::new(),
                    opaque: true,
                };
            }
            let (tables, opaque) = plain_tables(&mut matching.into_iter());
            Output::Column {
                column: (*column).to_owned(),
                tables,
                opaque,
            }
        }
        _ => Output::Expression,
    }
}

#[cfg(test)]
mod tests;
