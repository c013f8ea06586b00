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

/// True when `server` accepts a new connection and is not in recovery.
pub async fn is_healthy_primary(server: &BackendAddr, config: &Config) -> bool {
    let probe = async {
        let client = crate::control::connect(
            config,
            &server.host,
            server.port,
            "postgres",
            "understudy-probe",
            PROBE_TIMEOUT,
        )
        .await
        .ok()?;
        let row = client
            .query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
            .await
            .ok();
        row.and_then(|r| r.try_get::<_, bool>(0).ok())
    };
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, probe).await,
        Ok(Some(false))
    )
}
