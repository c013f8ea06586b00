//! Semantic validation: the checks serde cannot make (at least one server, unique
//! names, usable ports and timeouts, a failure timeout longer than the probe interval,
//! a token on a non-loopback admin endpoint, users for userlist mode, well-formed
//! secrets). The first problem found is returned.

use std::collections::HashSet;
use std::net::SocketAddr;

use crate::{AuthMode, Config, ConfigError, DEFAULT_AUTH_QUERY};

type Checked = Result<(), ConfigError>;

impl Config {
    /// Checks that the configuration is usable; the error names the key at fault.
    pub fn validate(&self) -> Checked {
        self.check_servers()?;
        self.check_listeners()?;
        self.check_auth()?;
        self.check_users()?;
        positive(
            "proxy.max_client_connections",
            self.proxy.max_client_connections as u64,
        )?;
        positive("proxy.startup_timeout_ms", self.proxy.startup_timeout_ms)?;
        positive("proxy.max_message_bytes", self.proxy.max_message_bytes)?;
        positive(
            "proxy.max_pipelined_requests",
            self.proxy.max_pipelined_requests as u64,
        )?;
        self.check_tls()?;
        positive(
            "backend.connect_timeout_ms",
            self.backend.connect_timeout_ms,
        )?;
        self.check_health()?;
        positive(
            "journal.max_transaction_bytes",
            self.journal.max_transaction_bytes,
        )?;
        positive(
            "journal.max_session_state_bytes",
            self.journal.max_session_state_bytes,
        )?;
        positive(
            "journal.max_commit_log_entries",
            self.journal.max_commit_log_entries,
        )?;
        positive("journal.max_total_bytes", self.journal.max_total_bytes)?;
        Ok(())
    }

    fn check_tls(&self) -> Checked {
        let tls = &self.tls;
        if tls.cert_file.is_empty() != tls.key_file.is_empty() {
            let (missing, given) = if tls.cert_file.is_empty() {
                ("tls.cert_file", "tls.key_file")
            } else {
                ("tls.key_file", "tls.cert_file")
            };
            return Err(ConfigError::invalid(
                missing,
                format!("must be set together with {given}: give both PEM files, or neither"),
            ));
        }
        if tls.require_tls && !tls.enabled() {
            return Err(ConfigError::invalid(
                "tls.require_tls",
                "needs a certificate: set tls.cert_file and tls.key_file (PEM files), or \
                 set require_tls = false",
            ));
        }
        Ok(())
    }

    fn check_health(&self) -> Checked {
        let health = &self.health;
        positive("health.probe_interval_ms", health.probe_interval_ms)?;
        positive("health.probe_timeout_ms", health.probe_timeout_ms)?;
        positive("health.failure_timeout_ms", health.failure_timeout_ms)?;
        positive("health.hold_timeout_ms", health.hold_timeout_ms)?;
        if health.failure_timeout_ms <= health.probe_interval_ms {
            return Err(ConfigError::invalid(
                "health.failure_timeout_ms",
                format!(
                    "must be larger than health.probe_interval_ms ({} ms), got {} ms: a \
                     healthy primary would be declared failed between two probes; raise \
                     failure_timeout_ms or lower probe_interval_ms",
                    health.probe_interval_ms, health.failure_timeout_ms
                ),
            ));
        }
        Ok(())
    }

    fn check_servers(&self) -> Checked {
        if self.servers.is_empty() {
            return Err(ConfigError::invalid(
                "servers",
                "at least one [[servers]] entry is required; add for example\n  \
                 [[servers]]\n  name = \"pg1\"\n  host = \"127.0.0.1\"\n  port = 5432",
            ));
        }
        let mut names = HashSet::new();
        for (i, server) in self.servers.iter().enumerate() {
            if server.name.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("servers[{i}].name"),
                    "must not be empty; give each server a unique name such as \"pg1\"",
                ));
            }
            if !names.insert(server.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("servers[{i}].name"),
                    format!(
                        "duplicate server name {:?}; each [[servers]] entry needs a unique name",
                        server.name
                    ),
                ));
            }
            if server.host.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("servers[{i}].host"),
                    "must not be empty; give the server's host name or IP address",
                ));
            }
            if let Some(url) = &server.patroni {
                if let Err(problem) = crate::patroni_endpoint(url) {
                    return Err(ConfigError::invalid(
                        format!("servers[{i}].patroni"),
                        problem,
                    ));
                }
            }
            if server.port == 0 {
                return Err(ConfigError::invalid(
                    format!("servers[{i}].port"),
                    "port 0 is not a valid server port; use the port PostgreSQL listens on \
                     (usually 5432)",
                ));
            }
        }
        Ok(())
    }

    fn check_listeners(&self) -> Checked {
        listen_port("proxy.listen", self.proxy.listen)?;
        listen_port("admin.listen", self.admin.listen)?;
        if self.admin.listen == self.proxy.listen {
            return Err(ConfigError::invalid(
                "admin.listen",
                format!(
                    "{} is also proxy.listen; give the admin endpoint its own port",
                    self.admin.listen
                ),
            ));
        }
        if !self.admin.listen.ip().is_loopback() && self.admin.token.expose().trim().is_empty() {
            return Err(ConfigError::invalid(
                "admin.token",
                format!(
                    "must be set because admin.listen ({}) is not a loopback address; set \
                     admin.token (or UNDERSTUDY_ADMIN_TOKEN), or listen on 127.0.0.1",
                    self.admin.listen
                ),
            ));
        }
        Ok(())
    }

    fn check_auth(&self) -> Checked {
        let auth = &self.auth;
        match auth.mode {
            AuthMode::Passthrough => {
                if auth.auth_user.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        "auth.auth_user",
                        "must not be empty in passthrough mode: it is the role that looks up \
                         client secrets; set it (default \"postgres\") or use mode = \"userlist\"",
                    ));
                }
                if !auth.auth_query.contains("$1") {
                    return Err(ConfigError::invalid(
                        "auth.auth_query",
                        format!(
                            "must take the role name as $1 and return its secret; the \
                             default is {DEFAULT_AUTH_QUERY:?}"
                        ),
                    ));
                }
            }
            AuthMode::Userlist => {
                if self.users.is_empty() {
                    return Err(ConfigError::invalid(
                        "users",
                        "auth.mode = \"userlist\" needs at least one [[users]] entry (name and \
                         password); add one or use mode = \"passthrough\"",
                    ));
                }
            }
        }
        for (i, rule) in auth.hba.iter().enumerate() {
            for (field, value) in [("user", &rule.user), ("database", &rule.database)] {
                if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                    return Err(ConfigError::invalid(
                        format!("auth.hba[{i}].{field}"),
                        format!("must not be empty; leave {field} out to match every {field}"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_users(&self) -> Checked {
        let mut names = HashSet::new();
        for (i, user) in self.users.iter().enumerate() {
            if user.name.trim().is_empty() {
                return Err(ConfigError::invalid(
                    format!("users[{i}].name"),
                    "must not be empty; give the role name the client logs in as",
                ));
            }
            if !names.insert(user.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("users[{i}].name"),
                    format!(
                        "duplicate user {:?}; each [[users]] entry needs a unique name",
                        user.name
                    ),
                ));
            }
            let password = user.password.expose();
            if password.starts_with("SCRAM-SHA-256$") && !is_scram_verifier(password) {
                return Err(ConfigError::invalid(
                    format!("users[{i}].password"),
                    "starts with SCRAM-SHA-256$ but is not a SCRAM verifier; copy it whole \
                     from pg_authid.rolpassword (SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:\
                     <ServerKey>) or give the plaintext password",
                ));
            }
        }
        Ok(())
    }
}

fn listen_port(key: &str, addr: SocketAddr) -> Checked {
    if addr.port() == 0 {
        return Err(ConfigError::invalid(
            key,
            format!(
                "port 0 is not allowed: clients need a known port; use an address like \
                 \"{}:6543\"",
                addr.ip()
            ),
        ));
    }
    Ok(())
}

fn positive(key: &str, value: u64) -> Checked {
    if value == 0 {
        return Err(ConfigError::invalid(
            key,
            "must be a positive integer, got 0",
        ));
    }
    Ok(())
}

/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, checked for shape only
/// (the auth layer decodes it).
fn is_scram_verifier(secret: &str) -> bool {
    let Some(rest) = secret.strip_prefix("SCRAM-SHA-256$") else {
        return false;
    };
    let Some((iterations_salt, keys)) = rest.split_once('$') else {
        return false;
    };
    let Some((iterations, salt)) = iterations_salt.split_once(':') else {
        return false;
    };
    let Some((stored_key, server_key)) = keys.split_once(':') else {
        return false;
    };
    iterations.parse::<u32>().is_ok_and(|n| n > 0)
        && !salt.is_empty()
        && !stored_key.is_empty()
        && !server_key.is_empty()
}
