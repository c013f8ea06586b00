//! Query cancellation across the proxy.
//!
//! A client receives a BackendKeyData whose process id is its real backend's
//! pid (so `pg_backend_pid()` and the driver agree) and whose secret key is
//! the proxy's own. A CancelRequest arrives on a fresh connection; the map
//! finds the session's current backend and the proxy sends the server the
//! real key. When a session moves to another server it updates its entry, so
//! cancel keeps working after a move.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use understudy_protocol::backend::BackendKeyData;
use understudy_protocol::startup::CancelRequest;

use crate::topology::BackendAddr;

/// Where a cancel for one session must go.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    /// The server the session is connected to.
    pub addr: BackendAddr,
    /// The key that server handed out.
    pub key: BackendKeyData,
}

/// Proxy key → current backend, for every live session.
#[derive(Debug, Default)]
pub struct CancelMap {
    entries: Mutex<HashMap<(i32, i32), CancelTarget>>,
}

/// Keeps a session's entry in the map; removes it when dropped.
pub struct CancelRegistration {
    map: Arc<CancelMap>,
    /// The key the client was given.
    pub client_key: BackendKeyData,
}

impl CancelMap {
    /// Registers a session and returns the key to hand its client: the
    /// backend's pid with a fresh random secret, unique in the map.
    pub fn register(self: &Arc<Self>, target: CancelTarget) -> CancelRegistration {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let process_id = target.key.process_id;
        let mut secret_key: i32 = rand::random();
        while entries.contains_key(&(process_id, secret_key)) {
            secret_key = rand::random();
        }
        entries.insert((process_id, secret_key), target);
        CancelRegistration {
            map: Arc::clone(self),
            client_key: BackendKeyData {
                process_id,
                secret_key,
            },
        }
    }

    /// The backend a client key refers to, if any session holds it.
    pub fn lookup(&self, request: &CancelRequest) -> Option<CancelTarget> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(&(request.process_id, request.secret_key))
            .cloned()
    }

    /// Number of registered sessions.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// True when no session is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CancelRegistration {
    /// Points the session's key at a new backend (after a move).
    pub fn retarget(&self, target: CancelTarget) {
        let mut entries = self
            .map
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        entries.insert(
            (self.client_key.process_id, self.client_key.secret_key),
            target,
        );
    }
}

impl Drop for CancelRegistration {
    fn drop(&mut self) {
        let mut entries = self
            .map
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        entries.remove(&(self.client_key.process_id, self.client_key.secret_key));
    }
}

/// Sends `target`'s server a CancelRequest with the real key. Like
/// PostgreSQL, the server answers nothing; it just closes the connection.
pub async fn forward_cancel(target: &CancelTarget, timeout: Duration) -> std::io::Result<()> {
    let send = async {
        let mut stream = TcpStream::connect((target.addr.host.as_str(), target.addr.port)).await?;
        let mut out = BytesMut::new();
        CancelRequest {
            process_id: target.key.process_id,
            secret_key: target.key.secret_key,
        }
        .encode(&mut out);
        stream.write_all(&out).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(timeout, send)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(pid: i32) -> CancelTarget {
        CancelTarget {
            addr: BackendAddr {
                name: "pg".into(),
                host: "127.0.0.1".into(),
                port: 5432,
            },
            key: BackendKeyData {
                process_id: pid,
                secret_key: 1,
            },
        }
    }

    #[test]
    fn keys_keep_the_pid_and_are_removed_on_drop() {
        let map = Arc::new(CancelMap::default());
        let reg = map.register(target(77));
        assert_eq!(reg.client_key.process_id, 77);
        let request = CancelRequest {
            process_id: 77,
            secret_key: reg.client_key.secret_key,
        };
        assert!(map.lookup(&request).is_some());
        let wrong = CancelRequest {
            process_id: 77,
            secret_key: reg.client_key.secret_key.wrapping_add(1),
        };
        assert!(map.lookup(&wrong).is_none());
        drop(reg);
        assert!(map.lookup(&request).is_none());
        assert!(map.is_empty());
    }

    #[test]
    fn retarget_changes_where_a_cancel_goes() {
        let map = Arc::new(CancelMap::default());
        let reg = map.register(target(5));
        reg.retarget(target(6));
        let request = CancelRequest {
            process_id: 5,
            secret_key: reg.client_key.secret_key,
        };
        assert_eq!(map.lookup(&request).unwrap().key.process_id, 6);
    }
}
