//! Query cancellation across the proxy.
//!
//! A client receives a BackendKeyData whose process id is its real backend's
//! pid (so `pg_backend_pid()` and the driver agree) and whose secret key is
//! the proxy's own. A CancelRequest arrives on a fresh connection; the map
//! finds the session's current backend and the proxy sends the server the
//! real key. When a session moves to another server it updates its entry, so
//! cancel keeps working after a move.
//!
//! Like PostgreSQL, the proxy closes the client's cancel connection only
//! once the server has closed its own, which the server does after it
//! signalled the backend: a client that waits for that (libpq does) knows
//! the cancel cannot hit its next statement. Meanwhile the session's
//! [`CancelsInFlight`] counts the cancel, so that the relay does not send a
//! commit stamp that a cancel still on its way could hit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// The cancels forwarded for one session that the server has not finished
/// with yet: until it closes the cancel connection, its signal may still
/// reach the backend, whatever the backend runs by then.
#[derive(Debug, Default)]
pub struct CancelsInFlight {
    count: AtomicUsize,
    waker: Mutex<Option<Waker>>,
}

impl CancelsInFlight {
    /// True while a cancel is in flight; the task of `cx` is then woken
    /// when the last one ends.
    pub fn poll_settling(&self, cx: &mut Context<'_>) -> bool {
        if self.count.load(Ordering::SeqCst) == 0 {
            return false;
        }
        *self.waker.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
        // Checked again: the last cancel may have ended before the waker
        // was stored.
        self.count.load(Ordering::SeqCst) > 0
    }

    /// True while a cancel is in flight.
    pub fn has_any(&self) -> bool {
        self.count.load(Ordering::SeqCst) > 0
    }

    /// Counts a cancel until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(Arc::clone(self))
    }
}

/// One cancel in flight; dropping it ends it.
pub struct InFlightGuard(Arc<CancelsInFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            let waker = self
                .0
                .waker
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

/// A session's entry: where its cancels go, and those still in flight.
#[derive(Debug)]
struct Entry {
    target: CancelTarget,
    in_flight: Arc<CancelsInFlight>,
}

/// Proxy key → current backend, for every live session.
#[derive(Debug, Default)]
pub struct CancelMap {
    entries: Mutex<HashMap<(i32, i32), Entry>>,
}

/// Keeps a session's entry in the map; removes it when dropped.
pub struct CancelRegistration {
    map: Arc<CancelMap>,
    /// The key the client was given.
    pub client_key: BackendKeyData,
    /// The session's cancels that the server has not finished with.
    pub in_flight: Arc<CancelsInFlight>,
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
        let in_flight = Arc::new(CancelsInFlight::default());
        entries.insert(
            (process_id, secret_key),
            Entry {
                target,
                in_flight: Arc::clone(&in_flight),
            },
        );
        CancelRegistration {
            map: Arc::clone(self),
            client_key: BackendKeyData {
                process_id,
                secret_key,
            },
            in_flight,
        }
    }

    /// The backend a client key refers to, if any session holds it, with
    /// the cancel counted in flight for that session until the guard is
    /// dropped.
    pub fn lookup(&self, request: &CancelRequest) -> Option<(CancelTarget, InFlightGuard)> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(&(request.process_id, request.secret_key))
            .map(|entry| (entry.target.clone(), entry.in_flight.begin()))
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
            Entry {
                target,
                in_flight: Arc::clone(&self.in_flight),
            },
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

/// Sends `target`'s server a CancelRequest with the real key, and waits
/// until the server closes the connection: it answers nothing, and closes
/// once it has signalled the backend.
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
        stream.shutdown().await?;
        let mut sink = [0u8; 64];
        while stream.read(&mut sink).await? > 0 {}
        Ok(())
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
        assert!(
            !reg.in_flight.has_any(),
            "a looked-up cancel counts only while its guard lives"
        );
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
        assert_eq!(map.lookup(&request).unwrap().0.key.process_id, 6);
    }

    #[test]
    fn a_cancel_in_flight_wakes_the_waiting_session_when_it_ends() {
        use std::sync::atomic::AtomicBool;
        use std::task::Wake;

        struct Flag(AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let map = Arc::new(CancelMap::default());
        let reg = map.register(target(9));
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        assert!(!reg.in_flight.poll_settling(&mut cx), "nothing in flight");
        let request = CancelRequest {
            process_id: 9,
            secret_key: reg.client_key.secret_key,
        };
        let (_, first) = map.lookup(&request).unwrap();
        let (_, second) = map.lookup(&request).unwrap();
        assert!(reg.in_flight.poll_settling(&mut cx));
        drop(first);
        assert!(
            reg.in_flight.poll_settling(&mut cx),
            "one is still in flight"
        );
        assert!(!flag.0.load(Ordering::SeqCst));
        drop(second);
        assert!(
            flag.0.load(Ordering::SeqCst),
            "the last one wakes the session"
        );
        assert!(!reg.in_flight.poll_settling(&mut cx));
    }
}
