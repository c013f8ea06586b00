//! Unit tests of the config crate: defaults and the example file here, errors, env
//! overrides and lookups in their own files.

mod env;
mod errors;
mod lookups;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{AuthMethod, AuthMode, Config, Server, DEFAULT_AUTH_QUERY};

/// The smallest valid config: one server.
pub(super) const MINIMAL: &str = "[[servers]]\nname = \"pg1\"\nhost = \"127.0.0.1\"\n";

pub(super) fn example_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/understudy.toml")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn pg1() -> Server {
    Server {
        name: "pg1".to_owned(),
        host: "127.0.0.1".to_owned(),
        port: 5432,
        patroni: None,
    }
}

#[test]
fn defaults_match_the_contract() {
    let config = Config::from_toml_str(MINIMAL).unwrap();
    assert_eq!(config.proxy.listen, addr("127.0.0.1:6543"));
    assert_eq!(config.proxy.max_client_connections, 1000);
    assert_eq!(config.proxy.startup_timeout_ms, 10_000);
    assert_eq!(config.proxy.startup_timeout(), Duration::from_secs(10));
    assert_eq!(config.admin.listen, addr("127.0.0.1:6544"));
    assert!(config.admin.token.is_empty());
    assert_eq!(config.auth.mode, AuthMode::Passthrough);
    assert_eq!(config.auth.method, AuthMethod::ScramSha256);
    assert_eq!(config.auth.auth_user, "postgres");
    assert!(config.auth.auth_password.is_empty());
    assert_eq!(config.auth.auth_query, DEFAULT_AUTH_QUERY);
    assert!(config.auth.hba.is_empty());
    assert!(config.users.is_empty());
    assert_eq!(config.servers, vec![pg1()]);
    assert_eq!(config.backend.connect_timeout_ms, 5000);
    assert_eq!(config.backend.connect_timeout(), Duration::from_secs(5));
    assert_eq!(config.health.probe_interval_ms, 100);
    assert_eq!(config.health.probe_interval(), Duration::from_millis(100));
    assert_eq!(config.health.probe_timeout_ms, 250);
    assert_eq!(config.health.probe_timeout(), Duration::from_millis(250));
    assert_eq!(config.health.failure_timeout_ms, 400);
    assert_eq!(config.health.failure_timeout(), Duration::from_millis(400));
    assert_eq!(config.health.hold_timeout_ms, 30_000);
    assert_eq!(config.health.hold_timeout(), Duration::from_secs(30));

    let mut expected = Config::default_for_embedded();
    expected.servers.push(pg1());
    assert_eq!(config, expected);
}

#[test]
fn default_auth_query_is_the_contract_query() {
    assert_eq!(
        DEFAULT_AUTH_QUERY,
        "SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1 AND rolcanlogin \
         AND (rolvaliduntil IS NULL OR rolvaliduntil > now())"
    );
}

#[test]
fn empty_sections_mean_defaults() {
    let text = format!("[proxy]\n[admin]\n[auth]\n[backend]\n[health]\n{MINIMAL}");
    let config = Config::from_toml_str(&text).unwrap();
    let mut expected = Config::default();
    expected.servers.push(pg1());
    assert_eq!(config, expected);
}

#[test]
fn example_file_loads_and_sets_every_default() {
    let config = Config::load(example_path(), std::iter::empty()).unwrap();
    let mut expected = Config::default();
    expected.servers.push(pg1());
    assert_eq!(config, expected);
}

/// The `[[auth.hba]]` and `[[users]]` examples are commented out in the example file;
/// uncommented they must still be valid.
#[test]
fn example_file_commented_entries_are_valid() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if rest.starts_with("[[") || rest.contains(" = \"") => rest,
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    let config = Config::from_toml_str(&uncommented).unwrap();
    assert_eq!(config.auth.hba.len(), 1);
    let rule = &config.auth.hba[0];
    assert_eq!(rule.user.as_deref(), Some("alice"));
    assert_eq!(rule.database.as_deref(), Some("app"));
    assert_eq!(
        rule.address.map(|c| c.to_string()).as_deref(),
        Some("127.0.0.0/8")
    );
    assert_eq!(rule.method, AuthMethod::Trust);
    assert_eq!(config.users.len(), 1);
    assert_eq!(config.users[0].password.expose(), "secret");
}

#[test]
fn full_config_parses_every_key() {
    let text = r#"
[proxy]
listen = "127.0.0.1:7000"
max_client_connections = 5
startup_timeout_ms = 250

[admin]
listen = "0.0.0.0:7001"
token = "admintoken"

[auth]
mode = "userlist"
method = "md5"
auth_user = "control"
auth_password = "controlpw"
auth_query = "SELECT passwd FROM my_users WHERE name = $1"

[[auth.hba]]
address = "::1/128"
method = "trust"

[[users]]
name = "app"
password = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy"

[[servers]]
name = "a"
host = "127.0.0.1"
port = 5433

[[servers]]
name = "b"
host = "localhost"
port = 5434

[backend]
connect_timeout_ms = 100

[health]
probe_interval_ms = 50
probe_timeout_ms = 75
failure_timeout_ms = 200
hold_timeout_ms = 9000
"#;
    let config = Config::from_toml_str(text).unwrap();
    assert_eq!(config.proxy.listen, addr("127.0.0.1:7000"));
    assert_eq!(config.proxy.max_client_connections, 5);
    assert_eq!(config.proxy.startup_timeout(), Duration::from_millis(250));
    assert_eq!(config.admin.listen, addr("0.0.0.0:7001"));
    assert_eq!(config.admin.token.expose(), "admintoken");
    assert_eq!(config.auth.mode, AuthMode::Userlist);
    assert_eq!(config.auth.method, AuthMethod::Md5);
    assert_eq!(config.auth.auth_user, "control");
    assert_eq!(config.auth.auth_password.expose(), "controlpw");
    assert_eq!(
        config.auth.auth_query,
        "SELECT passwd FROM my_users WHERE name = $1"
    );
    assert_eq!(config.auth.hba.len(), 1);
    assert_eq!(config.servers.len(), 2);
    assert_eq!(config.servers[1].host, "localhost");
    assert_eq!(config.servers[1].port, 5434);
    assert_eq!(config.backend.connect_timeout(), Duration::from_millis(100));
    assert_eq!(config.health.probe_interval(), Duration::from_millis(50));
    assert_eq!(config.health.probe_timeout(), Duration::from_millis(75));
    assert_eq!(config.health.failure_timeout(), Duration::from_millis(200));
    assert_eq!(config.health.hold_timeout(), Duration::from_secs(9));
}

#[test]
fn debug_and_serialized_config_hide_secrets() {
    let text = format!(
        "[admin]\ntoken = \"tok-3141\"\n[auth]\nauth_password = \"ctl-2718\"\n\
         [[users]]\nname = \"app\"\npassword = \"usr-1618\"\n{MINIMAL}"
    );
    let config = Config::from_toml_str(&text).unwrap();
    assert_eq!(config.user("app").unwrap().password.expose(), "usr-1618");
    let debug = format!("{config:?}");
    let pretty = format!("{config:#?}");
    let serialized = toml::to_string(&config).unwrap();
    for shown in [&debug, &pretty, &serialized] {
        for secret in ["tok-3141", "ctl-2718", "usr-1618"] {
            assert!(!shown.contains(secret), "{secret} leaked in:\n{shown}");
        }
        assert!(shown.contains("********"), "{shown}");
    }
    assert!(debug.contains("auth_user: \"postgres\""), "{debug}");
}

#[test]
fn serialized_config_without_secrets_parses_back() {
    let text = format!("[[auth.hba]]\naddress = \"10.0.0.0/8\"\nmethod = \"md5\"\n{MINIMAL}");
    let config = Config::from_toml_str(&text).unwrap();
    let serialized = toml::to_string(&config).unwrap();
    assert_eq!(Config::from_toml_str(&serialized).unwrap(), config);
}
