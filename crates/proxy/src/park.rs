//! A session parked for a switchover: it waits at a transaction boundary
//! until the switchover ends, and meanwhile opens its next backend on the
//! server the topology names as the successor. That server is still a
//! standby, which accepts connections; its sessions become read-write when
//! it is promoted. When it is published as the primary, the session moves
//! onto the backend already open instead of connecting and authenticating
//! while its client waits. Nothing is sent on that backend before the move
//! (which re-applies commits and restores the session state first).

use std::future::Future;
use std::pin::Pin;

use crate::backend::BackendConn;
use crate::drain::Drain;
use crate::error::SessionError;
use crate::topology::{BackendAddr, TopologyRx};

/// A backend being opened on the successor.
pub type Opening<'a> = Pin<Box<dyn Future<Output = Result<BackendConn, SessionError>> + Send + 'a>>;

/// What a parked session does next.
pub enum Parked<'a> {
    /// The switchover did not happen; go on with the same backend.
    Resume,
    /// A new primary is published; move there, onto the successor's backend
    /// when one was opened.
    Move(Option<Successor<'a>>),
}

/// The backend a parked session opened (or is opening) on the successor.
pub struct Successor<'a> {
    addr: BackendAddr,
    state: State<'a>,
}

enum State<'a> {
    Opening(Opening<'a>),
    Open(Box<BackendConn>),
    Failed,
}

impl Successor<'_> {
    /// The backend, when it was opened on `primary` (waiting for it if it is
    /// still being opened); None when it is for another server or failed.
    pub async fn into_backend_for(self, primary: &BackendAddr) -> Option<BackendConn> {
        if !same_server(&self.addr, primary) {
            self.close().await;
            return None;
        }
        let opened = match self.state {
            State::Opening(opening) => opening.await,
            State::Open(backend) => return Some(*backend),
            State::Failed => return None,
        };
        opened
            .inspect_err(|e| {
                tracing::debug!(server = %self.addr, error = %e, "no backend opened in advance")
            })
            .ok()
    }

    /// Ends a backend opened in advance and not used. One still being opened
    /// is dropped: its server logs a connection that ended during startup.
    async fn close(self) {
        if let State::Open(backend) = self.state {
            backend.close().await;
        }
    }
}

/// Waits, parked at a transaction boundary, until the switchover ends;
/// `open` starts opening a backend on a server (called at most once, for
/// the successor).
pub async fn park<'a>(
    topology: &mut TopologyRx,
    current: &BackendAddr,
    drain: &Drain,
    open: impl Fn(BackendAddr) -> Opening<'a>,
) -> Parked<'a> {
    let _parked = drain.park();
    let mut successor: Option<Successor<'a>> = None;
    loop {
        {
            let now = topology.borrow_and_update();
            if successor.is_none() {
                if let Some(next) = now.successor.as_ref().filter(|n| !same_server(n, current)) {
                    successor = Some(Successor {
                        addr: next.clone(),
                        state: State::Opening(open(next.clone())),
                    });
                }
            }
            match &now.primary {
                Some(primary) if !same_server(primary, current) => return Parked::Move(successor),
                Some(_) if !now.draining => break,
                _ => {}
            }
        }
        let opened = tokio::select! {
            changed = topology.changed() => {
                if changed.is_err() {
                    break;
                }
                None
            }
            opened = opening(&mut successor) => Some(opened),
        };
        if let (Some(opened), Some(successor)) = (opened, successor.as_mut()) {
            successor.state = match opened {
                Ok(backend) => State::Open(Box::new(backend)),
                Err(e) => {
                    tracing::debug!(server = %successor.addr, error = %e, "cannot open a backend in advance");
                    State::Failed
                }
            };
        }
    }
    // The switchover did not happen: the successor's backend is not needed.
    if let Some(successor) = successor {
        successor.close().await;
    }
    Parked::Resume
}

/// Drives the opening of the successor's backend; pending forever when
/// there is none under way.
async fn opening(successor: &mut Option<Successor<'_>>) -> Result<BackendConn, SessionError> {
    match successor {
        Some(Successor {
            state: State::Opening(opening),
            ..
        }) => opening.as_mut().await,
        _ => std::future::pending().await,
    }
}

fn same_server(a: &BackendAddr, b: &BackendAddr) -> bool {
    a.host == b.host && a.port == b.port
}
