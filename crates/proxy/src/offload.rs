//! Login steps that cost CPU rather than I/O, run on tokio's blocking pool.
//!
//! Deriving SCRAM keys from a plaintext password is `Hi()`: 4096 HMACs, a
//! millisecond or more. The proxy relays every session on one runtime thread
//! (see `main.rs` of the binary), and its health probes of the servers run
//! there too: a derivation made on it stalls all of them, and a storm of
//! logins stalls them for as long as the storm lasts. Each step here runs on
//! a thread of the blocking pool instead, while the runtime thread goes on.

use crate::error::SessionError;

/// Runs `work` on the blocking pool and returns what it returned; `what`
/// names the step in the error, should the pool not run it to the end (the
/// runtime shutting down).
pub(crate) async fn off_runtime<T, F>(what: &'static str, work: F) -> Result<T, SessionError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SessionError::Offloaded {
            what,
            reason: e.to_string(),
        })
}
