use super::*;

fn one(sql: &str) -> Statement {
    let mut a = Analysis::of(sql).unwrap();
    assert_eq!(a.statements.len(), 1);
    a.statements.remove(0)
}

#[test]
fn kinds_tables_and_where() {
    let s = one("DELETE FROM accounts");
    assert_eq!(s.kind, Kind::Delete);
    assert!(!s.has_where);
    assert_eq!(s.written, vec![TableName::new("", "accounts")]);
    let s = one("UPDATE hr.salaries SET amount = 1 WHERE id = 2");
    assert_eq!(s.kind, Kind::Update);
    assert!(s.has_where);
    assert_eq!(s.tables, vec![TableName::new("hr", "salaries")]);
    assert_eq!(one("DROP TABLE t").kind, Kind::Ddl);
    assert_eq!(one("DROP TABLE t").tables, vec![TableName::new("", "t")]);
    assert_eq!(one("BEGIN").kind, Kind::Utility);
}

#[test]
fn ctes_are_not_tables_and_subqueries_are_followed() {
    let s = one(
        "WITH x AS (SELECT * FROM a) SELECT * FROM x JOIN b ON true WHERE 1 IN (SELECT 1 FROM c)",
    );
    let mut names: Vec<&str> = s.tables.iter().map(|t| t.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "b", "c"]);
}

#[test]
fn outputs_tell_plain_columns_from_expressions() {
    let s = one("SELECT card_number, c.name AS x, upper(card_number), * FROM cards c");
    let Outputs::Targets(t) = s.outputs else {
        panic!()
    };
    let cards = vec![TableName::new("", "cards")];
    assert_eq!(
        t[0],
        Output::Column {
            column: "card_number".into(),
            tables: cards.clone(),
            opaque: false
        }
    );
    assert_eq!(
        t[1],
        Output::Column {
            column: "name".into(),
            tables: cards.clone(),
            opaque: false
        }
    );
    assert_eq!(t[2], Output::Expression);
    assert_eq!(
        t[3],
        Output::Star {
            tables: cards,
            opaque: false
        }
    );
    assert!(!s.hidden_rows);
}

#[test]
fn subqueries_renamed_aliases_and_whole_rows_are_opaque() {
    let s = one("SELECT x FROM (SELECT card_number AS x FROM cards) s");
    let Outputs::Targets(t) = s.outputs else {
        panic!()
    };
    assert!(matches!(&t[0], Output::Column { opaque: true, .. }));
    let s = one("SELECT n FROM cards AS c(n)");
    let Outputs::Targets(t) = s.outputs else {
        panic!()
    };
    assert!(matches!(&t[0], Output::Column { opaque: true, .. }));
    let s = one("SELECT row_to_json(c) FROM cards c");
    assert!(s.hidden_rows);
    let s = one("SELECT (SELECT array_agg(x.*) FROM cards x)");
    assert!(s.hidden_rows);
}

#[test]
fn copy_direction_and_columns() {
    let s = one("COPY cards (id, card_number) TO STDOUT WITH (FORMAT csv)");
    let c = s.copy.unwrap();
    assert!(!c.from && c.client_side && c.csv && !c.binary);
    assert_eq!(c.columns, vec!["id", "card_number"]);
    assert_eq!(c.table, Some(TableName::new("", "cards")));
    let s = one("COPY cards FROM STDIN");
    assert!(s.copy.unwrap().from);
    assert_eq!(s.written, vec![TableName::new("", "cards")]);
}

#[test]
fn functions_and_returning() {
    let s = one("SELECT pg_catalog.pg_sleep(1), now()");
    assert!(s.functions.contains(&"pg_catalog.pg_sleep".to_owned()));
    assert!(s.functions.contains(&"now".to_owned()));
    let s = one("UPDATE cards SET x = 1 WHERE id = 1 RETURNING card_number");
    assert!(matches!(s.outputs, Outputs::Targets(ref t) if t.len() == 1));
}

#[test]
fn a_statement_that_does_not_parse_is_an_error() {
    assert!(Analysis::of("SELEC 1").is_err());
}
