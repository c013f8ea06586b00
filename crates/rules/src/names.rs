//! Names as rules write them: tables (`name` or `schema.name`), columns
//! (`column` or `table.column`) and column-name patterns with `*`.

/// A table as a statement names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableName {
    /// The schema, when the statement qualified the name.
    pub schema: Option<String>,
    /// The table.
    pub name: String,
}

impl TableName {
    /// A table name from a parse tree's `RangeVar` fields.
    pub fn new(schema: &str, name: &str) -> Self {
        TableName {
            schema: (!schema.is_empty()).then(|| schema.to_owned()),
            name: name.to_owned(),
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A table named in a rule: `name` matches that table in any schema,
/// `schema.name` only in that schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    schema: Option<String>,
    name: String,
}

impl TablePattern {
    /// Parses `name` or `schema.name`; `None` when empty or with more parts.
    pub fn parse(text: &str) -> Option<Self> {
        let parts: Vec<&str> = text.split('.').collect();
        match parts.as_slice() {
            [name] if !name.is_empty() => Some(TablePattern {
                schema: None,
                name: (*name).to_owned(),
            }),
            [schema, name] if !schema.is_empty() && !name.is_empty() => Some(TablePattern {
                schema: Some((*schema).to_owned()),
                name: (*name).to_owned(),
            }),
            _ => None,
        }
    }

    /// True when `table` is this table.
    pub fn matches(&self, table: &TableName) -> bool {
        self.name == table.name
            && match (&self.schema, &table.schema) {
                (None, _) => true,
                (Some(want), Some(have)) => want == have,
                // An unqualified name in a statement may resolve to any
                // schema on the search path: assume it is this one.
                (Some(_), None) => true,
            }
    }

    /// The table name part.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Display for TablePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A column-name pattern: literal characters and `*` (any run of characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePattern(String);

impl NamePattern {
    /// A pattern; `None` when empty.
    pub fn parse(text: &str) -> Option<Self> {
        (!text.is_empty()).then(|| NamePattern(text.to_owned()))
    }

    /// True when `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.as_bytes())
    }
}

impl std::fmt::Display for NamePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `*`-only glob matching, iterative with one backtrack point.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A column named in a rule: `column` (in any table) or `table.column`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPattern {
    /// The table, when given.
    pub table: Option<TablePattern>,
    /// The column name pattern.
    pub column: NamePattern,
}

impl ColumnPattern {
    /// Parses `column`, `table.column` or `schema.table.column`.
    pub fn parse(text: &str) -> Option<Self> {
        let (table, column) = match text.rsplit_once('.') {
            Some((table, column)) => (Some(TablePattern::parse(table)?), column),
            None => (None, text),
        };
        Some(ColumnPattern {
            table,
            column: NamePattern::parse(column)?,
        })
    }
}

impl std::fmt::Display for ColumnPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.table {
            Some(table) => write!(f, "{table}.{}", self.column),
            None => write!(f, "{}", self.column),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_whole_names_only() {
        let p = NamePattern::parse("card_*").unwrap();
        assert!(p.matches("card_number"));
        assert!(p.matches("card_"));
        assert!(!p.matches("credit_card_number"));
        let p = NamePattern::parse("*card*").unwrap();
        assert!(p.matches("credit_card_number"));
        assert!(!NamePattern::parse("ssn").unwrap().matches("ssn2"));
    }

    #[test]
    fn table_patterns_respect_schemas() {
        let any = TablePattern::parse("salaries").unwrap();
        let hr = TablePattern::parse("hr.salaries").unwrap();
        assert!(any.matches(&TableName::new("hr", "salaries")));
        assert!(hr.matches(&TableName::new("hr", "salaries")));
        assert!(!hr.matches(&TableName::new("public", "salaries")));
        assert!(hr.matches(&TableName::new("", "salaries")));
        assert!(TablePattern::parse("a.b.c").is_none());
    }

    #[test]
    fn column_patterns_split_the_table() {
        let c = ColumnPattern::parse("salaries.amount").unwrap();
        assert_eq!(c.table.unwrap().name(), "salaries");
        assert!(c.column.matches("amount"));
        assert!(ColumnPattern::parse("amount").unwrap().table.is_none());
    }
}
