//! Unit tests of `commit_sql`: commits, transaction control, data writes,
//! DDL, second statements and changes of transaction characteristics.

use super::{commits, is_commit, is_commit_and_chain};

#[test]
fn transaction_control_is_recognised() {
    use super::controls_transaction;
    for sql in [
        "BEGIN",
        "start transaction isolation level serializable",
        "commit",
        "/* x */ rollback to savepoint a",
        "savepoint a",
        "release a",
        "prepare transaction 'x'",
        "insert into t values (1); commit",
    ] {
        assert!(controls_transaction(sql.as_bytes()), "{sql}");
    }
    for sql in [
        "insert into t values (1)",
        "update t set note = 'begin'",
        "prepare q as select 1",
        "select 'commit'",
        "do $$ begin insert into t values (1); end $$",
        "create function f() returns int language plpgsql as $f$ begin return 1; end $f$",
    ] {
        assert!(!controls_transaction(sql.as_bytes()), "{sql}");
    }
}

#[test]
fn a_second_statement_is_found_outside_quotes_only() {
    use super::has_second_statement;
    for sql in [
        "select 1; select 2",
        "insert into t values ($1); select 1",
        "do $$ begin end $$; commit",
    ] {
        assert!(has_second_statement(sql.as_bytes()), "{sql}");
    }
    for sql in [
        "select 1;",
        "select ';x'",
        "select \";x\" from t",
        "do $$ begin perform 1; end $$",
        "select $q$ a; b $q$",
        "select $$ unclosed; more",
    ] {
        assert!(!has_second_statement(sql.as_bytes()), "{sql}");
    }
}

#[test]
fn changes_of_transaction_characteristics_are_recognised() {
    use super::changes_transaction_characteristics as changes;
    for sql in [
        "set transaction isolation level serializable",
        "SET TRANSACTION READ ONLY",
        "set session characteristics as transaction read only",
        "set default_transaction_isolation = 'serializable'",
        "SET LOCAL transaction_read_only = on",
        "select set_config('transaction_isolation', 'repeatable read', true)",
        "reset default_transaction_deferrable",
    ] {
        assert!(changes(sql.as_bytes()), "{sql}");
    }
    for sql in [
        "insert into t values (1)",
        "set search_path = app",
        "begin isolation level serializable",
        "commit and chain",
        "start transaction",
    ] {
        assert!(!changes(sql.as_bytes()), "{sql}");
    }
}

#[test]
fn ddl_that_runs_in_a_transaction_block_is_recognised() {
    use super::is_transactional_ddl;
    for sql in [
        "create table u (id int)",
        "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$",
        "/* migration 7 */ alter table t add column note text",
        "drop index if exists t_idx",
        "create unique index t_idx on t (id)",
        "comment on table t is 'create database'",
        "grant select on t to app",
        "refresh materialized view totals",
        "security label on table t is 'x'",
    ] {
        assert!(is_transactional_ddl(sql.as_bytes()), "{sql}");
    }
    for sql in [
        "create database app",
        "DROP TABLESPACE fast",
        "alter system set work_mem = '8MB'",
        "alter database app set timezone = 'UTC'",
        "create subscription s connection 'x' publication p",
        "create index concurrently t_idx on t (id)",
        "drop index concurrently t_idx",
        "refresh materialized view concurrently totals",
        "vacuum t",
        "reindex table t",
        "insert into t values (1)",
        "create",
    ] {
        assert!(!is_transactional_ddl(sql.as_bytes()), "{sql}");
    }
}

#[test]
fn data_writes_are_recognised() {
    use super::is_data_write;
    for sql in [
        "insert into t values (1)",
        " /* app */ UPDATE t SET a = 1",
        "delete from t",
        "merge into t using s on true when matched then delete",
        "truncate t",
        "with x as (delete from t returning *) select * from x",
        "select * into t2 from t",
    ] {
        assert!(is_data_write(sql.as_bytes()), "{sql}");
    }
    for sql in [
        "select 1",
        "with x as (select 1) select * from x",
        "create table t (a int)",
        "vacuum t",
        "call p()",
        "copy t from stdin",
        "",
    ] {
        assert!(!is_data_write(sql.as_bytes()), "{sql}");
    }
}

#[test]
fn transaction_starts_are_recognised() {
    use super::starts_transaction;
    for sql in [
        "begin",
        "BEGIN ISOLATION LEVEL SERIALIZABLE",
        "start transaction read only",
    ] {
        assert!(starts_transaction(sql.as_bytes()), "{sql}");
    }
    for sql in ["begin; commit", "commit", "start", "select 'begin'"] {
        assert!(!starts_transaction(sql.as_bytes()), "{sql}");
    }
}

#[test]
fn commits_are_recognised() {
    for sql in [
        "COMMIT",
        "commit;",
        "END;",
        "end transaction",
        "  Commit Work ; ",
        "/* app */ COMMIT -- done\n",
        "commit and no chain",
        "END;\0",
        "\0\n\tcOmMiT",
        "/* a /* nested */ comment */ commit",
    ] {
        assert!(is_commit(sql.as_bytes()), "{sql:?}");
    }
}

#[test]
fn commits_that_chain_are_recognised_apart() {
    for sql in [
        "commit and chain",
        "END WORK AND CHAIN;",
        "/* app */ Commit Transaction And Chain",
    ] {
        assert!(is_commit_and_chain(sql.as_bytes()), "{sql:?}");
        assert!(commits(sql.as_bytes()), "{sql:?}");
        assert!(!is_commit(sql.as_bytes()), "{sql:?}");
    }
    for sql in [
        "commit",
        "commit and no chain",
        "rollback and chain",
        "commit and chain; select 1",
        "commit chain",
    ] {
        assert!(!is_commit_and_chain(sql.as_bytes()), "{sql:?}");
    }
}

#[test]
fn other_statements_are_not_commits() {
    for sql in [
        "COMMIT PREPARED 'x'",
        "commit and chain",
        "rollback",
        "select 1; commit",
        "commit; commit",
        "commitx",
        "commit_x",
        "  update t set commit = 1",
        "END IF",
        "/* unterminated COMMIT",
        "",
    ] {
        assert!(!is_commit(sql.as_bytes()), "{sql:?}");
    }
}
