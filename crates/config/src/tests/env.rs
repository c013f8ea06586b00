//! `UNDERSTUDY_<SECTION>_<KEY>` overrides.

use super::MINIMAL;
use crate::{env_var_name, AuthMethod, AuthMode, Config, ConfigError, ENV_KEYS};

fn base() -> Config {
    Config::from_toml_str(MINIMAL).unwrap()
}

fn apply(config: &mut Config, pairs: &[(&str, &str)]) -> Result<(), ConfigError> {
    config.apply_env(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

fn apply_err(pairs: &[(&str, &str)]) -> ConfigError {
    let mut config = base();
    match apply(&mut config, pairs) {
        Ok(()) => panic!("accepted {pairs:?}"),
        Err(e) => e,
    }
}

#[test]
fn overrides_of_every_type_apply() {
    let mut config = base();
    apply(
        &mut config,
        &[
            ("UNDERSTUDY_PROXY_LISTEN", "127.0.0.1:7000"),
            ("UNDERSTUDY_PROXY_MAX_CLIENT_CONNECTIONS", "7"),
            ("UNDERSTUDY_PROXY_STARTUP_TIMEOUT_MS", " 1500 "),
            ("UNDERSTUDY_ADMIN_LISTEN", "[::1]:7001"),
            ("UNDERSTUDY_ADMIN_TOKEN", "tok"),
            ("UNDERSTUDY_AUTH_MODE", "userlist"),
            ("UNDERSTUDY_AUTH_METHOD", "trust"),
            ("UNDERSTUDY_AUTH_AUTH_USER", "ctl"),
            ("UNDERSTUDY_AUTH_AUTH_PASSWORD", "pw with spaces "),
            ("UNDERSTUDY_AUTH_AUTH_QUERY", "SELECT p FROM t WHERE u = $1"),
            ("UNDERSTUDY_BACKEND_CONNECT_TIMEOUT_MS", "250"),
            ("UNDERSTUDY_HEALTH_PROBE_INTERVAL_MS", "20"),
            ("UNDERSTUDY_HEALTH_PROBE_TIMEOUT_MS", "60"),
            ("UNDERSTUDY_HEALTH_FAILURE_TIMEOUT_MS", "150"),
            ("UNDERSTUDY_HEALTH_HOLD_TIMEOUT_MS", "5000"),
        ],
    )
    .unwrap();
    assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:7000");
    assert_eq!(config.proxy.max_client_connections, 7);
    assert_eq!(config.proxy.startup_timeout_ms, 1500);
    assert_eq!(config.admin.listen.to_string(), "[::1]:7001");
    assert_eq!(config.admin.token.expose(), "tok");
    assert_eq!(config.auth.mode, AuthMode::Userlist);
    assert_eq!(config.auth.method, AuthMethod::Trust);
    assert_eq!(config.auth.auth_user, "ctl");
    assert_eq!(config.auth.auth_password.expose(), "pw with spaces ");
    assert_eq!(config.auth.auth_query, "SELECT p FROM t WHERE u = $1");
    assert_eq!(config.backend.connect_timeout_ms, 250);
    assert_eq!(config.health.probe_interval_ms, 20);
    assert_eq!(config.health.probe_timeout_ms, 60);
    assert_eq!(config.health.failure_timeout_ms, 150);
    assert_eq!(config.health.hold_timeout_ms, 5000);
}

#[test]
fn overrides_replace_file_values() {
    let mut config =
        Config::from_toml_str(&format!("[auth]\nmethod = \"md5\"\n{MINIMAL}")).unwrap();
    apply(&mut config, &[("UNDERSTUDY_AUTH_METHOD", "scram-sha-256")]).unwrap();
    assert_eq!(config.auth.method, AuthMethod::ScramSha256);
}

#[test]
fn every_listed_key_can_be_overridden() {
    for (section, keys) in ENV_KEYS {
        for key in *keys {
            let value = match (*section, *key) {
                (_, "listen") => "127.0.0.1:7777",
                ("auth", "mode") => "userlist",
                ("auth", "method") => "md5",
                ("journal", "ledger") => "false",
                ("backend", "tls_mode") => "require",
                ("tls", "require_tls") => "true",
                (_, k) if k.ends_with("_ms") || k.starts_with("max_") => "42",
                _ => "some text",
            };
            let mut config = base();
            let var = env_var_name(section, key);
            apply(&mut config, &[(&var, value)]).unwrap_or_else(|e| panic!("{var}: {e}"));
            assert_ne!(config, base(), "{var} changed nothing");
        }
    }
}

#[test]
fn bad_values_name_key_and_variable() {
    let cases = [
        (
            "UNDERSTUDY_PROXY_LISTEN",
            "6543",
            "proxy.listen",
            "127.0.0.1:6543",
        ),
        ("UNDERSTUDY_ADMIN_LISTEN", "", "admin.listen", "got \"\""),
        (
            "UNDERSTUDY_PROXY_STARTUP_TIMEOUT_MS",
            "0",
            "proxy.startup_timeout_ms",
            "positive",
        ),
        (
            "UNDERSTUDY_BACKEND_CONNECT_TIMEOUT_MS",
            "-5",
            "backend.connect_timeout_ms",
            "\"-5\"",
        ),
        (
            "UNDERSTUDY_AUTH_MODE",
            "pool",
            "auth.mode",
            "\"passthrough\", \"userlist\"",
        ),
        (
            "UNDERSTUDY_AUTH_METHOD",
            "SCRAM",
            "auth.method",
            "\"scram-sha-256\", \"md5\"",
        ),
    ];
    for (var, value, key, part) in cases {
        let e = apply_err(&[(var, value)]);
        let message = e.to_string();
        assert!(matches!(e, ConfigError::EnvValue { .. }), "{message}");
        assert_eq!(e.key(), Some(key), "{message}");
        assert!(message.starts_with(&format!("{key}: ")), "{message}");
        assert!(message.ends_with(&format!("(from {var})")), "{message}");
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
}

#[test]
fn unknown_key_in_a_section_lists_the_valid_variables() {
    let e = apply_err(&[("UNDERSTUDY_PROXY_LISTEN_ADDR", "127.0.0.1:1")]);
    let message = e.to_string();
    assert!(matches!(e, ConfigError::UnknownEnv { .. }), "{message}");
    assert!(
        message.starts_with("UNDERSTUDY_PROXY_LISTEN_ADDR: "),
        "{message}"
    );
    assert!(
        message.contains("UNDERSTUDY_PROXY_LISTEN, UNDERSTUDY_PROXY_MAX_CLIENT_CONNECTIONS"),
        "{message}"
    );
}

#[test]
fn unknown_variables_are_errors() {
    for var in [
        "UNDERSTUDY_PROXYLISTEN",
        "UNDERSTUDY_LISTEN_PORT",
        "UNDERSTUDY_proxy_listen",
        "UNDERSTUDY_",
    ] {
        let e = apply_err(&[(var, "x")]);
        let message = e.to_string();
        assert!(message.starts_with(&format!("{var}: ")), "{message}");
        assert!(message.contains("UNDERSTUDY_<SECTION>_<KEY>"), "{message}");
    }
}

#[test]
fn list_sections_cannot_come_from_the_environment() {
    for (var, list) in [
        ("UNDERSTUDY_SERVERS_HOST", "[[servers]]"),
        ("UNDERSTUDY_USERS_NAME", "[[users]]"),
        ("UNDERSTUDY_AUTH_HBA", "[[auth.hba]]"),
    ] {
        let message = apply_err(&[(var, "x")]).to_string();
        assert!(message.starts_with(var), "{message}");
        assert!(message.contains(list), "{message}");
    }
}

#[test]
fn non_config_variables_are_ignored() {
    let mut config = base();
    apply(
        &mut config,
        &[
            ("UNDERSTUDY_PG_BIN", "/usr/lib/postgresql/15/bin"),
            ("UNDERSTUDY_LOG", "debug"),
            ("UNDERSTUDY_CONFIG", "/etc/understudy.toml"),
            ("UNDERSTUDY_DIR", "/var/tmp/u"),
            ("PATH", "/usr/bin"),
            ("PROXY_LISTEN", "nonsense"),
        ],
    )
    .unwrap();
    assert_eq!(config, base());
}

#[test]
fn first_error_does_not_depend_on_environment_order() {
    let a = ("UNDERSTUDY_AUTH_MODE", "x");
    let b = ("UNDERSTUDY_PROXY_LISTEN", "y");
    let e1 = apply_err(&[a, b]).to_string();
    let e2 = apply_err(&[b, a]).to_string();
    assert_eq!(e1, e2);
    assert!(e1.starts_with("auth.mode"), "{e1}");
}
