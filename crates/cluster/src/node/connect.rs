//! Connecting to a node over loopback TCP as a given role.

use std::time::Duration;

use super::{Credentials, Node, CONNECT_TIMEOUT};
use crate::error::{ClusterError, Result};
use crate::files;

impl Node {
    /// A libpq connection string for `creds` to database `postgres` over TCP.
    pub fn conn_string(&self, creds: &Credentials) -> String {
        format!(
            "host=127.0.0.1 port={} user={} password={} dbname=postgres",
            self.spec.port,
            files::conninfo_quote(&creds.superuser),
            files::conninfo_quote(&creds.password)
        )
    }

    /// Connects as `creds` to database `db` over TCP; the connection runs on a spawned
    /// task. Bounded by [`CONNECT_TIMEOUT`].
    pub async fn connect(&self, creds: &Credentials, db: &str) -> Result<tokio_postgres::Client> {
        self.connect_within(creds, db, CONNECT_TIMEOUT).await
    }

    /// [`Node::connect`] with an explicit bound on connect + authentication.
    pub async fn connect_within(
        &self,
        creds: &Credentials,
        db: &str,
        timeout: Duration,
    ) -> Result<tokio_postgres::Client> {
        Ok(self.connect_watched(creds, db, timeout).await?.0)
    }

    /// [`Node::connect_within`], also returning the task that runs the connection: it
    /// ends when the connection does (for example when the server process exits), so a
    /// caller can await it to learn of a lost server at once.
    pub async fn connect_watched(
        &self,
        creds: &Credentials,
        db: &str,
        timeout: Duration,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.spec.port)
            .user(&creds.superuser)
            .password(&creds.password)
            .dbname(db)
            .application_name("understudy")
            .connect_timeout(timeout);
        let context = format!(
            "connecting to node {} (127.0.0.1:{}) as {}",
            self.spec.name, self.spec.port, creds.superuser
        );
        let connected = tokio::time::timeout(timeout, config.connect(tokio_postgres::NoTls)).await;
        let (client, connection) = match connected {
            Ok(result) => result.map_err(ClusterError::sql(context))?,
            Err(_) => {
                return Err(ClusterError::Timeout {
                    context,
                    ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
                })
            }
        };
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok((client, task))
    }
}
