//! Control connections: the proxy's own connections to a server, as
//! `auth.auth_user`, for secret lookups, the commit ledger, WAL position
//! samples and health probes. Plain tokio-postgres clients; the connection
//! task is spawned and ends with the client.

use std::time::Duration;

use understudy_config::Config;

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
    let (client, connection) = pg.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "control connection ended");
        }
    });
    Ok(client)
}
