//! Control connections: the proxy's own connections to a server, as
//! `auth.auth_user`, for secret lookups, the commit ledger, WAL position
//! samples and health probes. Plain tokio-postgres clients, encrypted as
//! `backend.tls_mode` says; the connection task is spawned and ends with
//! the client.

use std::time::Duration;

use tokio_postgres::config::SslMode;
use understudy_config::{BackendTlsMode, Config};

use crate::tls::control::MakeControlTls;
use crate::tls::ServerTls;

/// Opens a control connection to `host:port`, database `database`, naming
/// itself `application` in `pg_stat_activity`.
pub async fn connect(
    config: &Config,
    host: &str,
    port: u16,
    database: &str,
    application: &str,
    timeout: Duration,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let auth = &config.auth;
    let mut pg = tokio_postgres::Config::new();
    pg.host(host)
        .port(port)
        .user(&auth.auth_user)
        .password(auth.auth_password.expose())
        .dbname(database)
        .application_name(application)
        .connect_timeout(timeout);
    let tls = match ServerTls::new(&config.backend) {
        Ok(tls) => tls,
        Err(e) => {
            // Validated at start-up; a CA file that vanished since is
            // reported and the connection goes without TLS only if allowed.
            tracing::warn!(error = %e, "backend TLS settings unusable for a control connection");
            ServerTls::disabled()
        }
    };
    pg.ssl_mode(match config.backend.tls_mode {
        BackendTlsMode::Disable => SslMode::Disable,
        BackendTlsMode::Prefer => SslMode::Prefer,
        BackendTlsMode::Require | BackendTlsMode::VerifyFull => SslMode::Require,
    });
    let client = match tls.connector() {
        Some(connector) => {
            let (client, connection) = pg.connect(MakeControlTls(connector.clone())).await?;
            spawn_connection(connection);
            client
        }
        None => {
            let (client, connection) = pg.connect(tokio_postgres::NoTls).await?;
            spawn_connection(connection);
            client
        }
    };
    Ok(client)
}

/// A control connection error with its causes (tokio-postgres shows only
/// the outermost one), and what to change when TLS is the problem.
pub fn describe_error(error: &tokio_postgres::Error, config: &Config) -> String {
    let mut text = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    let mode = config.backend.tls_mode;
    if mode != BackendTlsMode::Disable && text.contains("TLS") {
        text.push_str(&format!(
            " (backend.tls_mode = {}: turn ssl on in the server, or change backend.tls_mode)",
            mode.as_str()
        ));
    }
    text
}

fn spawn_connection<F>(connection: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "control connection ended");
        }
    });
}
