//! Rules applied to statements, from the TOML text to the decision.

use std::sync::Arc;

use crate::*;

fn client(user: &str) -> ClientInfo {
    ClientInfo {
        user: user.into(),
        database: "app".into(),
        application_name: Some("psql".into()),
        address: "127.0.0.1".parse().unwrap(),
    }
}

fn rules(toml: &str, user: &str) -> SessionRules {
    Arc::new(RuleSet::from_toml_str(toml).unwrap()).for_client(&client(user))
}

const EXAMPLE: &str = include_str!("../../../examples/rules.toml");

fn masked(checked: &Checked, names: &[&str]) -> Vec<bool> {
    checked.masks[0]
        .fields(names)
        .iter()
        .map(Option::is_some)
        .collect()
}

#[test]
fn the_example_masks_card_numbers_however_they_are_selected() {
    let r = rules(EXAMPLE, "app");
    let c = r.check("SELECT id, card_number FROM t");
    assert_eq!(masked(&c, &["id", "card_number"]), [false, true]);
    let c = r.check("SELECT card_number AS x FROM t");
    assert_eq!(masked(&c, &["x"]), [true]);
    let c = r.check("SELECT upper(card_number) FROM t");
    assert_eq!(masked(&c, &["upper"]), [true]);
    let c = r.check("SELECT * FROM t");
    assert_eq!(
        masked(&c, &["id", "card_number", "holder"]),
        [false, true, false]
    );
    let c = r.check("SELECT x FROM (SELECT card_number AS x FROM t) s");
    assert_eq!(masked(&c, &["x"]), [true]);
    let c = r.check("SELECT id FROM t");
    assert!(!c.masks_anything());
    assert!(c.denial.is_none());
}

#[test]
fn the_example_denies_salaries_to_reporting_only() {
    let c = rules(EXAMPLE, "reporting").check("SELECT * FROM salaries");
    let denial = c.denial.unwrap();
    assert!(
        denial.message().contains("salaries"),
        "{}",
        denial.message()
    );
    assert!(rules(EXAMPLE, "app")
        .check("SELECT * FROM salaries")
        .denial
        .is_none());
    assert!(rules(EXAMPLE, "reporting")
        .check("SELECT 1 FROM t WHERE id IN (SELECT id FROM public.salaries)")
        .denial
        .is_some());
}

#[test]
fn unprovable_outputs_can_be_refused() {
    let r = rules(
        r#"
[[rule]]
name = "ssn"
mask = { columns = ["ssn"], method = "redact", unprovable = "deny" }
"#,
        "app",
    );
    assert_eq!(
        r.check("SELECT lower(ssn) FROM people")
            .denial
            .unwrap()
            .rule,
        "ssn"
    );
    assert!(r.check("SELECT ssn FROM people").denial.is_none());
    assert!(r.check("SELECT lower(name) FROM people").denial.is_none());
}

#[test]
fn statement_kinds_functions_and_columns_are_denied() {
    let r = rules(
        r#"
[[rule]]
name = "safety"
deny = { statements = ["ddl", "delete_without_where", "update_without_where", "copy"], functions = ["pg_sleep"], columns = ["people.ssn"] }
"#,
        "app",
    );
    for sql in [
        "DROP TABLE x",
        "DELETE FROM x",
        "UPDATE x SET a = 1",
        "COPY x TO STDOUT",
        "SELECT pg_sleep(1)",
        "SELECT ssn FROM people",
        "SELECT * FROM people",
        "COPY people (ssn) TO STDOUT",
        "COPY people FROM STDIN",
    ] {
        assert!(r.check(sql).denial.is_some(), "{sql} should be denied");
    }
    for sql in [
        "DELETE FROM x WHERE id = 1",
        "SELECT name FROM people",
        "SELECT ssn FROM other",
    ] {
        assert!(r.check(sql).denial.is_none(), "{sql} should pass");
    }
}

#[test]
fn allow_lists_refuse_everything_else() {
    let r = rules(
        r#"
[[rule]]
name = "readonly"
clients = { users = ["bi"] }
allow = { tables = ["facts"], statements = ["select", "utility"] }
"#,
        "bi",
    );
    assert!(r.check("SELECT * FROM facts").denial.is_none());
    assert!(r.check("BEGIN").denial.is_none());
    assert!(r.check("SELECT * FROM dims").denial.is_some());
    assert!(r.check("INSERT INTO facts VALUES (1)").denial.is_some());
}

#[test]
fn client_filters_select_the_rules() {
    let set = Arc::new(
        RuleSet::from_toml_str(
            r#"
[[rule]]
name = "local psql"
clients = { application_names = ["psql"], addresses = ["10.0.0.0/8"], databases = ["app"] }
deny = { tables = ["t"] }
"#,
        )
        .unwrap(),
    );
    assert!(set.for_client(&client("x")).is_empty());
    let mut c = client("x");
    c.address = "10.1.2.3".parse().unwrap();
    assert!(!set.for_client(&c).is_empty());
    c.application_name = None;
    assert!(set.for_client(&c).is_empty());
}

#[test]
fn rewrites_apply_in_order() {
    let r = rules(
        r#"
[[rule]]
name = "move"
rewrite = { rename_table = { from = "old_events", to = "events" } }
[[rule]]
name = "cap"
rewrite = { limit = { table = "events", rows = 10 } }
[[rule]]
name = "lookup"
rewrite = { query = "SELECT name FROM users WHERE id = 1", replacement = "SELECT name FROM users_v2 WHERE id = $1" }
"#,
        "app",
    );
    let c = r.check("SELECT * FROM old_events");
    assert_eq!(
        c.rewritten.as_deref(),
        Some("SELECT * FROM events LIMIT 10")
    );
    let c = r.check("SELECT name FROM users WHERE id = 77");
    assert_eq!(
        c.rewritten.as_deref(),
        Some("SELECT name FROM users_v2 WHERE id = 77")
    );
    assert!(r.check("SELECT 1").rewritten.is_none());
}

#[test]
fn load_errors_name_the_key_and_line() {
    let err = RuleSet::from_toml_str(
        "[[rule]]\nname = \"x\"\nmask = { columns = [\"a\"], method = \"blur\" }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("rule[0].mask.method"), "{err}");
    assert!(err.contains("line 3"), "{err}");
    let err =
        RuleSet::from_toml_str("[[rule]]\nname = \"x\"\ndeny = { tables = [\"t\"] }\ncolour = 1\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("colour"), "{err}");
    let err = RuleSet::from_toml_str("[[rule]]\nname = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("exactly one"), "{err}");
    assert!(err.contains("line 1"), "{err}");
    let err = RuleSet::from_toml_str(
        "[[rule]]\nname = \"x\"\nrewrite = { query = \"SELECT 1\", replacement = \"SELECT $2\" }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("$2"), "{err}");
}

#[test]
fn no_rules_means_no_parse() {
    let set = Arc::new(RuleSet::default());
    let r = set.for_client(&client("x"));
    assert!(r.check("SELECT card_number FROM t").masks.is_empty());
    assert!(set.cache.is_empty());
}

#[test]
fn masked_values_cannot_be_stored_where_they_would_be_read_unmasked() {
    let r = rules(EXAMPLE, "app");
    for sql in [
        "CREATE TABLE x AS SELECT card_number AS y FROM t",
        "SELECT card_number AS y INTO x FROM t",
        "INSERT INTO x (y) SELECT card_number FROM t",
        "CREATE VIEW v AS SELECT upper(card_number) AS y FROM t",
        "DECLARE c CURSOR FOR SELECT card_number AS y FROM t",
    ] {
        let c = r.check(sql);
        assert_eq!(
            c.denial.map(|d| d.rule).as_deref(),
            Some("mask card numbers"),
            "{sql} should be refused"
        );
    }
    for sql in [
        "INSERT INTO x (y) SELECT holder FROM t",
        "INSERT INTO x VALUES (1)",
        "DECLARE c CURSOR FOR SELECT holder FROM t",
    ] {
        assert!(r.check(sql).denial.is_none(), "{sql} should pass");
    }
}

#[test]
fn statements_that_do_not_parse_are_refused_only_under_access_or_mask_rules() {
    let c = rules(EXAMPLE, "app").check("SELEC card_number FROM t");
    let message = c.unparsable.unwrap();
    assert!(message.contains("syntax error"), "{message}");
    let rewrite_only = rules(
        "[[rule]]\nname = \"r\"\nrewrite = { limit = { table = \"t\", rows = 1 } }\n",
        "app",
    );
    assert!(rewrite_only.check("SELEC 1").unparsable.is_none());
}

#[test]
fn copy_reads_its_listed_columns_or_all_of_them() {
    let r = rules(
        "[[rule]]\nname = \"ssn\"\ndeny = { columns = [\"people.ssn\"] }\n",
        "app",
    );
    assert!(r.check("COPY people (ssn) TO STDOUT").denial.is_some());
    assert!(r.check("COPY people TO STDOUT").denial.is_some());
    assert!(r.check("COPY people (name) TO STDOUT").denial.is_none());
}
