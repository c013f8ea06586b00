//! Environment overrides: `UNDERSTUDY_<SECTION>_<KEY>=value` sets the scalar key `KEY`
//! of `[SECTION]` (section names have no underscore, so the first `_` after the prefix
//! splits section from key: `UNDERSTUDY_AUTH_AUTH_PASSWORD` is `auth.auth_password`).
//!
//! Every `UNDERSTUDY_*` variable must be either an override or one of
//! [`NON_CONFIG_VARS`]; anything else is an error, so that a misspelt override does not
//! silently leave the default in place.

use std::net::SocketAddr;
use std::str::FromStr;

use crate::{AuthMethod, AuthMode, Config, ConfigError, Secret};

/// The prefix of every variable understudy reads.
pub const ENV_PREFIX: &str = "UNDERSTUDY_";

/// `UNDERSTUDY_*` variables that other parts of understudy read and that are not
/// configuration overrides; they are ignored here.
pub const NON_CONFIG_VARS: &[&str] = &[
    "UNDERSTUDY_PG_BIN",
    "UNDERSTUDY_LOG",
    "UNDERSTUDY_CONFIG",
    "UNDERSTUDY_DIR",
];

/// The keys that can be overridden from the environment, by section.
pub const ENV_KEYS: &[(&str, &[&str])] = &[
    (
        "proxy",
        &[
            "listen",
            "max_client_connections",
            "startup_timeout_ms",
            "max_message_bytes",
            "max_pipelined_requests",
            "idle_in_transaction_timeout_ms",
            "shutdown_grace_ms",
            "rules",
        ],
    ),
    ("admin", &["listen", "token"]),
    (
        "auth",
        &["mode", "method", "auth_user", "auth_password", "auth_query"],
    ),
    (
        "backend",
        &["connect_timeout_ms", "tls_mode", "tls_ca_file"],
    ),
    (
        "health",
        &[
            "probe_interval_ms",
            "probe_timeout_ms",
            "failure_timeout_ms",
            "hold_timeout_ms",
        ],
    ),
    (
        "journal",
        &[
            "max_transaction_bytes",
            "max_session_state_bytes",
            "max_commit_log_entries",
            "ledger",
            "max_total_bytes",
            "large_commit_wait_ms",
        ],
    ),
    ("tls", &["cert_file", "key_file", "require_tls"]),
];

/// Keys that hold lists of tables, which only the file can set.
const LIST_KEYS: &[&str] = &["users", "servers", "auth.hba"];

/// The environment variable that overrides `section.key`.
pub fn env_var_name(section: &str, key: &str) -> String {
    format!("{ENV_PREFIX}{section}_{key}").to_ascii_uppercase()
}

impl Config {
    /// Applies the `UNDERSTUDY_*` overrides among `vars` (in name order, so the first
    /// error reported does not depend on the order of the environment). Variables
    /// without the prefix are ignored. Does not validate the result.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let mut ours: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        ours.sort();
        for (var, value) in &ours {
            self.apply_var(var, value)?;
        }
        Ok(())
    }

    fn apply_var(&mut self, var: &str, value: &str) -> Result<(), ConfigError> {
        if NON_CONFIG_VARS.contains(&var) {
            return Ok(());
        }
        let rest = &var[ENV_PREFIX.len()..];
        let well_formed = rest
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
        let split = rest.split_once('_').filter(|_| well_formed);
        let Some((section, key)) = split else {
            return Err(unknown_var(var));
        };
        let section = section.to_ascii_lowercase();
        let key = key.to_ascii_lowercase();
        let full_key = format!("{section}.{key}");

        if LIST_KEYS.contains(&section.as_str()) || LIST_KEYS.contains(&full_key.as_str()) {
            let list = if section == "auth" {
                &full_key
            } else {
                &section
            };
            return Err(ConfigError::UnknownEnv {
                var: var.to_owned(),
                message: format!(
                    "{list} is a list of tables and cannot be set from the environment; \
                     write [[{list}]] entries in the config file"
                ),
            });
        }
        let Some((_, keys)) = ENV_KEYS.iter().find(|(s, _)| *s == section) else {
            return Err(unknown_var(var));
        };
        if !keys.contains(&key.as_str()) {
            let valid: Vec<String> = keys.iter().map(|k| env_var_name(&section, k)).collect();
            return Err(ConfigError::UnknownEnv {
                var: var.to_owned(),
                message: format!(
                    "[{section}] has no key {key:?}; the variables for [{section}] are {}",
                    valid.join(", ")
                ),
            });
        }
        set(self, &full_key, value).map_err(|message| ConfigError::EnvValue {
            var: var.to_owned(),
            key: full_key,
            message,
        })
    }
}

fn unknown_var(var: &str) -> ConfigError {
    let sections: Vec<String> = ENV_KEYS
        .iter()
        .map(|(s, _)| s.to_ascii_uppercase())
        .collect();
    ConfigError::UnknownEnv {
        var: var.to_owned(),
        message: format!(
            "not a configuration variable; overrides are named UNDERSTUDY_<SECTION>_<KEY> in \
             upper case with SECTION one of {} (see docs/config.md), and the other variables \
             understudy reads are {}",
            sections.join(", "),
            NON_CONFIG_VARS.join(", ")
        ),
    }
}

/// Sets `key` (one of [`ENV_KEYS`]) from its text form; the error says what was
/// expected and what was given.
fn set(config: &mut Config, key: &str, value: &str) -> Result<(), String> {
    match key {
        "proxy.listen" => config.proxy.listen = address(value)?,
        "proxy.max_client_connections" => config.proxy.max_client_connections = positive(value)?,
        "proxy.startup_timeout_ms" => config.proxy.startup_timeout_ms = positive(value)?,
        "proxy.max_message_bytes" => config.proxy.max_message_bytes = positive(value)?,
        "proxy.max_pipelined_requests" => config.proxy.max_pipelined_requests = positive(value)?,
        "proxy.idle_in_transaction_timeout_ms" => {
            config.proxy.idle_in_transaction_timeout_ms = non_negative(value)?
        }
        "proxy.shutdown_grace_ms" => config.proxy.shutdown_grace_ms = non_negative(value)?,
        "proxy.rules" => config.proxy.rules = value.to_owned(),
        "admin.listen" => config.admin.listen = address(value)?,
        "admin.token" => config.admin.token = Secret::new(value),
        "auth.mode" => config.auth.mode = name::<AuthMode>(value)?,
        "auth.method" => config.auth.method = name::<AuthMethod>(value)?,
        "auth.auth_user" => config.auth.auth_user = value.to_owned(),
        "auth.auth_password" => config.auth.auth_password = Secret::new(value),
        "auth.auth_query" => config.auth.auth_query = value.to_owned(),
        "backend.connect_timeout_ms" => config.backend.connect_timeout_ms = positive(value)?,
        "backend.tls_mode" => config.backend.tls_mode = name(value)?,
        "backend.tls_ca_file" => config.backend.tls_ca_file = value.to_owned(),
        "health.probe_interval_ms" => config.health.probe_interval_ms = positive(value)?,
        "health.probe_timeout_ms" => config.health.probe_timeout_ms = positive(value)?,
        "health.failure_timeout_ms" => config.health.failure_timeout_ms = positive(value)?,
        "health.hold_timeout_ms" => config.health.hold_timeout_ms = positive(value)?,
        "journal.max_transaction_bytes" => config.journal.max_transaction_bytes = positive(value)?,
        "journal.max_session_state_bytes" => {
            config.journal.max_session_state_bytes = positive(value)?
        }
        "journal.max_commit_log_entries" => {
            config.journal.max_commit_log_entries = positive(value)?
        }
        "journal.ledger" => config.journal.ledger = boolean(value)?,
        "journal.max_total_bytes" => config.journal.max_total_bytes = positive(value)?,
        "journal.large_commit_wait_ms" => {
            config.journal.large_commit_wait_ms = non_negative(value)?
        }
        "tls.cert_file" => config.tls.cert_file = value.to_owned(),
        "tls.key_file" => config.tls.key_file = value.to_owned(),
        "tls.require_tls" => config.tls.require_tls = boolean(value)?,
        _ => return Err(format!("{key} cannot be set from the environment")),
    }
    Ok(())
}

fn boolean(value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("expected true or false, got {other:?}")),
    }
}

fn address(value: &str) -> Result<SocketAddr, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("expected an address like \"127.0.0.1:6543\", got {value:?}"))
}

fn positive<T: FromStr + PartialEq + Default>(value: &str) -> Result<T, String> {
    match value.trim().parse::<T>() {
        Ok(n) if n != T::default() => Ok(n),
        _ => Err(format!("expected a positive integer, got {value:?}")),
    }
}

fn non_negative(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("expected a non-negative integer, got {value:?}"))
}

fn name<T: FromStr<Err = crate::UnknownName>>(value: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|e: crate::UnknownName| e.to_string())
}
