//! Where role secrets come from: the proxy's own `[[users]]` list, or, in
//! passthrough mode, the server itself (like PgBouncer's `auth_query`), read
//! over a control connection as `auth.auth_user`.

use std::sync::Arc;

use tokio::sync::Mutex;
use understudy_auth::Secret;
use understudy_config::{AuthMode, Config};
use understudy_protocol::backend::{sqlstate, ErrorFields, Severity};

use crate::error::SessionError;
use crate::topology::{self, BackendAddr, TopologyRx};

/// Looks up the secret of a role.
pub struct SecretStore {
    config: Arc<Config>,
    topology: TopologyRx,
    control: Mutex<Option<Control>>,
}

/// The control connection used for lookups, with its prepared query.
struct Control {
    addr: BackendAddr,
    client: tokio_postgres::Client,
    query: tokio_postgres::Statement,
}

impl SecretStore {
    /// A store that reads `config` and connects to the primary of `topology`.
    pub fn new(config: Arc<Config>, topology: TopologyRx) -> Self {
        SecretStore {
            config,
            topology,
            control: Mutex::new(None),
        }
    }

    /// The role's secret, or `None` when the role does not exist, may not
    /// log in, or has no password.
    pub async fn lookup(&self, user: &str) -> Result<Option<Secret>, SessionError> {
        if let Some(entry) = self.config.user(user) {
            return Ok(parse(entry.password.expose(), user));
        }
        if self.config.auth.mode != AuthMode::Passthrough {
            return Ok(None);
        }
        let row = self.query(user).await.map_err(|e| {
            SessionError::Refused(ErrorFields::new(
                Severity::Fatal,
                sqlstate::CANNOT_CONNECT_NOW,
                format!("understudy could not look up role \"{user}\" on the server: {e}"),
            ).with_hint("Check auth.auth_user and auth.auth_password in the understudy configuration, and that the primary is up."))
        })?;
        Ok(row.and_then(|secret| parse(&secret, user)))
    }

    async fn query(&self, user: &str) -> Result<Option<String>, String> {
        let mut control = self.control.lock().await;
        let mut topology = self.topology.clone();
        let timeout = self.config.backend.connect_timeout();
        let primary = topology::wait_for_primary(&mut topology, timeout)
            .await
            .ok_or_else(|| "no primary server is available".to_owned())?;
        let stale = match control.as_ref() {
            Some(c) => c.addr != primary || c.client.is_closed(),
            None => true,
        };
        if stale {
            *control = Some(self.connect(&primary).await?);
        }
        let Some(c) = control.as_ref() else {
            return Err("no control connection".to_owned());
        };
        match c.client.query_opt(&c.query, &[&user]).await {
            Ok(row) => Ok(row.and_then(|r| r.try_get::<_, Option<String>>(0).ok().flatten())),
            Err(e) => {
                *control = None;
                Err(e.to_string())
            }
        }
    }

    async fn connect(&self, addr: &BackendAddr) -> Result<Control, String> {
        let auth = &self.config.auth;
        let timeout = self.config.backend.connect_timeout();
        let client = crate::control::connect(
            &self.config,
            &addr.host,
            addr.port,
            "postgres",
            "understudy-auth",
            timeout,
        )
        .await
        .map_err(|e| {
            format!(
                "cannot connect to {addr} as \"{}\": {}",
                auth.auth_user,
                crate::control::describe_error(&e, &self.config)
            )
        })?;
        let query = client
            .prepare(&auth.auth_query)
            .await
            .map_err(|e| format!("auth.auth_query is invalid: {e}"))?;
        Ok(Control {
            addr: addr.clone(),
            client,
            query,
        })
    }
}

fn parse(stored: &str, user: &str) -> Option<Secret> {
    if stored.is_empty() {
        return None;
    }
    match Secret::parse(stored) {
        Ok(secret) => Some(secret),
        Err(e) => {
            tracing::warn!(user, error = %e, "stored secret of the role is malformed; treating the role as having no password");
            None
        }
    }
}
