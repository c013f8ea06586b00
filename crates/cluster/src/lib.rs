//! Management of real PostgreSQL nodes: finding the server programs, running them as an
//! unprivileged user, creating a primary (`initdb`) and streaming standbys
//! (`pg_basebackup` with a replication slot), starting, stopping, signalling and
//! promoting them, asking them for their role and replication lag, the embedded
//! primary + standby cluster behind `understudy up`, and its orchestrator (failure
//! detection, fencing, promotion, rebuilding the standby, switchover).
//!
//! # Layout
//!
//! - [`binaries`] — locating `initdb`, `postgres`, `pg_ctl`, `pg_basebackup`
//!   (`UNDERSTUDY_PG_BIN` or the newest `/usr/lib/postgresql/<N>/bin`).
//! - [`run_as`] — the user PostgreSQL runs as (the `postgres` system user under root),
//!   switching commands to it and giving it files.
//! - [`files`] — the settings, `pg_hba.conf`, `primary_conninfo` and secret files written
//!   for a node; log tails for error messages.
//! - [`process`] — liveness of pids, the processes of a data directory, and stopping by
//!   signal without an async runtime.
//! - [`node`] — one PostgreSQL instance and its lifecycle.
//! - [`status`] — role, WAL positions and replication lag of running nodes.
//! - [`workdir`] — the locked working directory of `understudy up`: credentials, state,
//!   data and socket locations.
//! - [`embedded`] — the primary + standby pair of `understudy up`.
//! - [`orchestrator`] — watching the primary, failover, switchover and rebuilds; the
//!   published [`ClusterView`].
//! - [`error`] — [`ClusterError`].

pub mod binaries;
pub mod embedded;
pub mod error;
pub mod files;
pub mod node;
pub mod orchestrator;
pub mod process;
pub mod run_as;
pub mod status;
pub mod workdir;

pub use binaries::PgBinaries;
pub use embedded::EmbeddedCluster;
pub use error::{ClusterError, Result};
pub use files::HostAuth;
pub use nix::sys::signal::Signal;
pub use node::{free_port, ControlData, Credentials, Node, NodeSpec, StopMode};
pub use orchestrator::{
    ClusterView, Endpoint, FailoverEvent, HealthSettings, Orchestrator, OrchestratorHandle,
    OrchestratorMetrics, Phase, Redundancy, Roles, Step, SwitchoverReport,
};
pub use run_as::RunAs;
pub use status::{node_role, replication_lag_bytes, NodeStatus, Role};
