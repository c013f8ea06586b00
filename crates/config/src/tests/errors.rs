//! Every kind of config error names the key (or file, or variable) at fault.

use super::MINIMAL;
use crate::{Config, ConfigError};

fn err(text: &str) -> ConfigError {
    match Config::from_toml_str(text) {
        Ok(config) => panic!("accepted:\n{text}\nas {config:?}"),
        Err(e) => e,
    }
}

/// Asserts the error is about `key`, that its message starts with the key, and that
/// the message contains every one of `parts`.
fn assert_names(e: &ConfigError, key: &str, parts: &[&str]) {
    let message = e.to_string();
    assert_eq!(e.key(), Some(key), "{message}");
    assert!(message.starts_with(&format!("{key}: ")), "{message}");
    for part in parts {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn unreadable_file_names_the_path_and_the_os_error() {
    let path = std::env::temp_dir().join("understudy-config-test-does-not-exist.toml");
    let e = Config::load(&path, std::iter::empty()).unwrap_err();
    let message = e.to_string();
    assert!(matches!(e, ConfigError::Read { .. }), "{message}");
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains("No such file"), "{message}");
    assert!(message.contains("--config"), "{message}");
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn syntax_error_has_line_and_column() {
    let e = err("[proxy]\nlisten = \"127.0.0.1:6543\"\nmax_client_connections = = 3\n");
    let message = e.to_string();
    assert!(matches!(e, ConfigError::Syntax { .. }), "{message}");
    assert!(message.contains("line 3, column"), "{message}");
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn unknown_key_names_key_section_and_valid_keys() {
    let e = err(&format!("[proxy]\nlisen = \"127.0.0.1:1\"\n{MINIMAL}"));
    assert_names(
        &e,
        "proxy.lisen",
        &[
            "unknown key in [proxy]",
            "valid keys: listen, max_client_connections, startup_timeout_ms",
            "line 2",
        ],
    );
    assert!(matches!(e, ConfigError::UnknownKey { ref section, .. } if section == "proxy"));
}

#[test]
fn unknown_top_level_key_lists_the_sections() {
    let e = err(&format!("[prxy]\n{MINIMAL}"));
    assert_names(
        &e,
        "prxy",
        &[
            "at the top level",
            "proxy, admin, auth, users, servers, backend, health",
        ],
    );
}

#[test]
fn unknown_key_in_a_list_entry_names_the_entry() {
    let e = err(&format!(
        "{MINIMAL}[[servers]]\nname = \"pg2\"\nhost = \"127.0.0.1\"\nprot = 5433\n"
    ));
    assert_names(
        &e,
        "servers[1].prot",
        &["in servers[1]", "name, host, port"],
    );
    let e = err(&format!(
        "[[auth.hba]]\nusr = \"a\"\nmethod = \"trust\"\n{MINIMAL}"
    ));
    assert_names(&e, "auth.hba[0].usr", &["user, database, address, method"]);
}

#[test]
fn wrong_type_names_the_key_and_line() {
    let e = err(&format!(
        "[proxy]\nmax_client_connections = \"abc\"\n{MINIMAL}"
    ));
    assert_names(
        &e,
        "proxy.max_client_connections",
        &[
            "invalid type: string \"abc\", expected a positive integer",
            "line 2",
        ],
    );
    assert!(matches!(e, ConfigError::WrongType { .. }));
    let e = err(&format!("[backend]\nconnect_timeout_ms = -1\n{MINIMAL}"));
    assert_names(&e, "backend.connect_timeout_ms", &["-1"]);
    let e = err("[[servers]]\nname = \"pg1\"\nhost = \"127.0.0.1\"\nport = 70000\n");
    assert_names(
        &e,
        "servers[0].port",
        &["70000", "port number from 1 to 65535"],
    );
    let e = err(&format!("servers = 3\n{}", "[proxy]\n"));
    assert_names(&e, "servers", &["invalid type"]);
}

#[test]
fn bad_listen_address_names_the_key() {
    let e = err(&format!("[admin]\nlisten = \"localhost\"\n{MINIMAL}"));
    assert_names(&e, "admin.listen", &["127.0.0.1:6543", "line 2"]);
}

#[test]
fn missing_required_key_is_named() {
    let e = err("[[servers]]\nname = \"pg1\"\n");
    assert_names(&e, "servers[0].host", &["required key is missing"]);
    let e = err(&format!("[[auth.hba]]\nuser = \"a\"\n{MINIMAL}"));
    assert_names(&e, "auth.hba[0].method", &["required key is missing"]);
}

#[test]
fn no_servers_is_an_error_that_shows_an_entry() {
    let e = err("[proxy]\n");
    assert_names(&e, "servers", &["at least one [[servers]]", "port = 5432"]);
    assert!(matches!(e, ConfigError::Invalid { .. }));
}

#[test]
fn duplicate_server_names_are_rejected() {
    let e = err(&format!("{MINIMAL}{MINIMAL}"));
    assert_names(&e, "servers[1].name", &["duplicate server name \"pg1\""]);
}

#[test]
fn port_zero_is_rejected() {
    let e = err("[[servers]]\nname = \"pg1\"\nhost = \"127.0.0.1\"\nport = 0\n");
    assert_names(&e, "servers[0].port", &["port 0"]);
    let e = err(&format!("[proxy]\nlisten = \"127.0.0.1:0\"\n{MINIMAL}"));
    assert_names(&e, "proxy.listen", &["port 0"]);
}

#[test]
fn non_loopback_admin_needs_a_token() {
    let e = err(&format!("[admin]\nlisten = \"0.0.0.0:6544\"\n{MINIMAL}"));
    assert_names(
        &e,
        "admin.token",
        &[
            "0.0.0.0:6544",
            "not a loopback address",
            "UNDERSTUDY_ADMIN_TOKEN",
        ],
    );
    let ok = format!("[admin]\nlisten = \"0.0.0.0:6544\"\ntoken = \"t\"\n{MINIMAL}");
    Config::from_toml_str(&ok).unwrap();
    let loopback_v6 = format!("[admin]\nlisten = \"[::1]:6544\"\n{MINIMAL}");
    Config::from_toml_str(&loopback_v6).unwrap();
}

#[test]
fn admin_and_proxy_need_different_addresses() {
    let e = err(&format!("[admin]\nlisten = \"127.0.0.1:6543\"\n{MINIMAL}"));
    assert_names(&e, "admin.listen", &["also proxy.listen"]);
}

#[test]
fn userlist_mode_needs_users() {
    let e = err(&format!("[auth]\nmode = \"userlist\"\n{MINIMAL}"));
    assert_names(&e, "users", &["userlist", "at least one [[users]]"]);
    let ok = format!(
        "[auth]\nmode = \"userlist\"\n[[users]]\nname = \"app\"\npassword = \"pw\"\n{MINIMAL}"
    );
    Config::from_toml_str(&ok).unwrap();
}

#[test]
fn unknown_enum_values_list_the_choices() {
    let e = err(&format!("[[auth.hba]]\nmethod = \"password\"\n{MINIMAL}"));
    assert_names(
        &e,
        "auth.hba[0].method",
        &["password", "scram-sha-256", "md5", "trust", "line 2"],
    );
    let e = err(&format!("[auth]\nmode = \"pool\"\n{MINIMAL}"));
    assert_names(&e, "auth.mode", &["pool", "passthrough", "userlist"]);
}

#[test]
fn bad_hba_address_says_what_is_wrong() {
    let e = err(&format!(
        "[[auth.hba]]\naddress = \"127.0.0.1/8\"\nmethod = \"trust\"\n{MINIMAL}"
    ));
    assert_names(&e, "auth.hba[0].address", &["did you mean 127.0.0.0/8?"]);
    let e = err(&format!(
        "[[auth.hba]]\naddress = \"everywhere\"\nmethod = \"trust\"\n{MINIMAL}"
    ));
    assert_names(&e, "auth.hba[0].address", &["not an IP address"]);
}

#[test]
fn empty_hba_match_keys_are_rejected() {
    let e = err(&format!(
        "[[auth.hba]]\nuser = \"\"\nmethod = \"trust\"\n{MINIMAL}"
    ));
    assert_names(&e, "auth.hba[0].user", &["leave user out"]);
}

#[test]
fn zero_limits_are_rejected() {
    for (section, key) in [
        ("proxy", "max_client_connections"),
        ("proxy", "startup_timeout_ms"),
        ("backend", "connect_timeout_ms"),
        ("health", "probe_interval_ms"),
        ("health", "probe_timeout_ms"),
        ("health", "failure_timeout_ms"),
        ("health", "hold_timeout_ms"),
    ] {
        let e = err(&format!("[{section}]\n{key} = 0\n{MINIMAL}"));
        assert_names(&e, &format!("{section}.{key}"), &["positive integer"]);
    }
}

#[test]
fn failure_timeout_must_exceed_the_probe_interval() {
    let e = err(&format!(
        "[health]\nprobe_interval_ms = 500\nfailure_timeout_ms = 500\n{MINIMAL}"
    ));
    assert_names(
        &e,
        "health.failure_timeout_ms",
        &[
            "larger than health.probe_interval_ms (500 ms)",
            "got 500 ms",
        ],
    );
    let e = err(&format!("[health]\nfailure_timeout_ms = 50\n{MINIMAL}"));
    assert_names(&e, "health.failure_timeout_ms", &["(100 ms)"]);
    let e = err(&format!("[health]\nprobe_intervall_ms = 50\n{MINIMAL}"));
    assert_names(
        &e,
        "health.probe_intervall_ms",
        &["in [health]", "probe_interval_ms"],
    );
}

#[test]
fn passthrough_needs_an_auth_user_and_a_query_with_a_parameter() {
    let e = err(&format!("[auth]\nauth_user = \"\"\n{MINIMAL}"));
    assert_names(&e, "auth.auth_user", &["passthrough"]);
    let e = err(&format!("[auth]\nauth_query = \"SELECT 1\"\n{MINIMAL}"));
    assert_names(&e, "auth.auth_query", &["$1"]);
}

#[test]
fn users_need_unique_names_and_whole_scram_verifiers() {
    let e = err(&format!(
        "[[users]]\nname = \"a\"\n[[users]]\nname = \"a\"\n{MINIMAL}"
    ));
    assert_names(&e, "users[1].name", &["duplicate user \"a\""]);
    let e = err(&format!(
        "[[users]]\nname = \"a\"\npassword = \"SCRAM-SHA-256$4096:salt\"\n{MINIMAL}"
    ));
    assert_names(&e, "users[0].password", &["not a SCRAM verifier"]);
    // The message must not echo the secret back.
    assert!(!e.to_string().contains("4096:salt"));
}

#[test]
fn env_value_error_names_key_and_variable() {
    let mut config = Config::from_toml_str(MINIMAL).unwrap();
    let e = config
        .apply_env([(
            "UNDERSTUDY_PROXY_MAX_CLIENT_CONNECTIONS".to_owned(),
            "abc".to_owned(),
        )])
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "proxy.max_client_connections: expected a positive integer, got \"abc\" \
         (from UNDERSTUDY_PROXY_MAX_CLIENT_CONNECTIONS)"
    );
    assert_eq!(e.key(), Some("proxy.max_client_connections"));
    assert_eq!(e.exit_code(), 2);
}

#[test]
fn load_reports_env_errors_and_validates_after_overrides() {
    let path = super::example_path();
    let vars = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let e = Config::load(&path, vars(&[("UNDERSTUDY_AUTH_METHOD", "plain")])).unwrap_err();
    assert!(matches!(e, ConfigError::EnvValue { .. }), "{e}");
    assert!(e.to_string().contains("UNDERSTUDY_AUTH_METHOD"), "{e}");
    let e = Config::load(&path, vars(&[("UNDERSTUDY_ADMIN_LISTEN", "0.0.0.0:6544")])).unwrap_err();
    assert_eq!(e.key(), Some("admin.token"), "{e}");
    let config = Config::load(
        &path,
        vars(&[
            ("UNDERSTUDY_ADMIN_LISTEN", "0.0.0.0:6544"),
            ("UNDERSTUDY_ADMIN_TOKEN", "t0k"),
        ]),
    )
    .unwrap();
    assert_eq!(config.admin.token.expose(), "t0k");
}
