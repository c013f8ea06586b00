//! The understudy proxy: applications connect to it as if it were
//! PostgreSQL, and it relays their sessions to the current primary.
//!
//! Each client connection is one tokio task ([`session`]) that owns the
//! client socket and its backend connection. Sessions share only the
//! topology (where the primary is), the cancel map and the counters.
//!
//! # Layout
//! - [`listener`]: accepts clients, applies the connection limit, spawns sessions.
//! - [`session`]: startup, authentication, opening the backend, then the relay.
//! - [`client_auth`]: SCRAM-SHA-256 / md5 / trust towards clients.
//! - [`secrets`]: role secrets from `[[users]]` or from the server (passthrough).
//! - `offload`: login steps that cost CPU (SCRAM key derivation), run off the runtime thread.
//! - [`backend`]: opening and authenticating a backend connection.
//! - [`relay`]: the byte relay between client and backend (the hot path).
//! - [`journal`]: what a session did, to rebuild it on another server.
//! - [`failover`]: moving a session whose backend was lost.
//! - [`cancel`]: proxy cancel keys → backend cancel keys.
//! - [`commit_log`]: committed transactions the standby may not have yet.
//! - [`ledger`]: the commit ledger that resolves a COMMIT lost in a failover.
//! - [`commit_sql`]: recognising a COMMIT statement.
//! - [`drain`]: parking sessions for a planned switchover.
//! - [`rules`]: the rules file in force; rewriting, refusing and masking on the wire.
//! - [`control`]: the proxy's own connections to servers.
//! - [`conn`]: a buffered socket for message-by-message exchanges.
//! - [`stream`]: a client or server connection, plaintext or TLS.
//! - [`tls`]: the proxy's certificate for clients, TLS towards servers.
//! - [`topology`]: the current primary, as a `watch` channel.
//! - [`metrics`]: counters for `/metrics`.
//! - [`wake_gate`]: a future polled only when its own waker fired (the session's
//!   watch branches beside the relay), and the gate the relay reads sockets through.
//! - [`writing_functions`]: per database, the functions a `SELECT` may write
//!   through, so that an autocommit `SELECT` calling one is stamped.
//! - `fuzzing` (hidden): the checks of the fuzz targets (startup and authentication, journal) and their corpus replay.
//! - [`error`]: [`SessionError`](error::SessionError) and the [`Side`](error::Side) it came from.

pub mod backend;
pub mod cancel;
pub mod client_auth;
pub mod commit_log;
pub mod commit_sql;
pub mod conn;
pub mod control;
pub mod drain;
pub mod error;
pub mod failover;
#[doc(hidden)]
pub mod fuzzing;
pub mod journal;
pub mod ledger;
pub mod listener;
pub mod metrics;
mod offload;
pub mod park;
pub mod relay;
pub mod rules;
pub mod secrets;
pub mod session;
pub mod stream;
pub mod tls;
pub mod topology;
pub mod wake_gate;
pub mod writing_functions;

pub use listener::{bind, start, start_on, ProxyHandle, ShutdownReport, StartError};
pub use topology::{BackendAddr, Topology, TopologyRx, TopologyTx};
