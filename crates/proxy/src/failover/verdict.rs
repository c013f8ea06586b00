//! Deciding what a lost backend means. A backend ended on purpose while its
//! server stays up as primary (`pg_terminate_backend`, an idle timeout) ends
//! the client's session, exactly as it would directly. A backend lost
//! because its server went down, crashed or is shutting down is moved.

use std::time::Duration;

use understudy_config::Config;
use understudy_protocol::backend::ErrorFields;

use crate::topology::BackendAddr;

/// How long the health probe of the lost backend's server may take.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1000);

/// What to do with a session whose backend is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the server's error on and end the session.
    End,
    /// Move the session to the current primary.
    Move,
}

/// Decides, given the FATAL error the server sent (if any) before the
/// connection ended.
pub async fn decide(fatal: Option<&ErrorFields>, server: &BackendAddr, config: &Config) -> Verdict {
    let Some(fatal) = fatal else {
        return Verdict::Move;
    };
    match fatal.code.as_str() {
        // admin_shutdown: pg_terminate_backend, or a fast shutdown of the
        // whole server. Only the server's health tells them apart.
        "57P01" => {
            if is_healthy_primary(server, config).await {
                Verdict::End
            } else {
                Verdict::Move
            }
        }
        // crash_shutdown, cannot_connect_now: the server is going down.
        "57P02" | "57P03" => Verdict::Move,
        // Anything else (idle timeouts, protocol violations, …) is about
        // this session, not the server.
        _ => Verdict::End,
    }
}

/// What a probe of the lost backend's server found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    /// It accepts connections and is not in recovery.
    Primary,
    /// It refused the connection, is shutting down or is a standby.
    NotPrimary,
    /// No answer in time: try again.
    Unknown,
}

/// Probes attempted before an unanswered server counts as gone.
const PROBE_ATTEMPTS: usize = 3;

/// True when `server` accepts a new connection and is not in recovery. A
/// server that does not answer in time is asked again: a slow answer from a
/// busy machine must not turn a deliberate termination into a move.
pub async fn is_healthy_primary(server: &BackendAddr, config: &Config) -> bool {
    for _ in 0..PROBE_ATTEMPTS {
        match probe(server, config).await {
            Health::Primary => return true,
            Health::NotPrimary => return false,
            Health::Unknown => continue,
        }
    }
    false
}

async fn probe(server: &BackendAddr, config: &Config) -> Health {
    let attempt = async {
        let client = match crate::control::connect(
            config,
            &server.host,
            server.port,
            "postgres",
            "understudy-probe",
            PROBE_TIMEOUT,
        )
        .await
        {
            Ok(client) => client,
            Err(e) if e.as_db_error().is_some() || is_refused(&e) => return Health::NotPrimary,
            Err(_) => return Health::Unknown,
        };
        match client
            .query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
            .await
            .ok()
            .and_then(|r| r.try_get::<_, bool>(0).ok())
        {
            Some(false) => Health::Primary,
            Some(true) => Health::NotPrimary,
            None => Health::Unknown,
        }
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .unwrap_or(Health::Unknown)
}

/// True when the connection was refused: nothing listens there (any more).
fn is_refused(e: &tokio_postgres::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::ConnectionRefused;
        }
        source = inner.source();
    }
    false
}
