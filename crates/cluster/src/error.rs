//! The error type of the cluster layer: everything that can go wrong while locating
//! PostgreSQL binaries, preparing directories, running `initdb`/`pg_ctl`/`pg_basebackup`
//! and talking SQL to the nodes. Every message says what is wrong and what to do.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;

/// Errors of PostgreSQL node management and of the embedded orchestrator.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No directory with the PostgreSQL server programs was found.
    #[error(
        "PostgreSQL server binaries not found in {searched}: install the Debian package \
         postgresql-15 (apt-get install postgresql-15) or set UNDERSTUDY_PG_BIN to the \
         directory that holds initdb, postgres, pg_ctl and pg_basebackup"
    )]
    BinariesNotFound {
        /// Where the search looked.
        searched: String,
    },

    /// `UNDERSTUDY_PG_BIN` (or an explicit directory) lacks a required program.
    #[error(
        "{program} not found in {dir}: point UNDERSTUDY_PG_BIN at the directory of the \
         PostgreSQL server binaries (e.g. /usr/lib/postgresql/15/bin)"
    )]
    BinaryMissing {
        /// The directory searched.
        dir: PathBuf,
        /// The missing program.
        program: &'static str,
    },

    /// Running as root and the unprivileged user for PostgreSQL does not exist.
    #[error(
        "running as root, and PostgreSQL refuses to run as root, but the system user \
         `{user}` does not exist: install postgresql-15 (which creates it) or run \
         understudy as an unprivileged user"
    )]
    UserNotFound {
        /// The user looked up.
        user: String,
    },

    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A system call through `nix` failed.
    #[error("{context}: {source}")]
    Sys {
        /// What was being done.
        context: String,
        /// The errno.
        #[source]
        source: nix::errno::Errno,
    },

    /// A PostgreSQL program exited unsuccessfully.
    #[error("{program} failed ({status}); see {log}:\n{log_tail}")]
    Command {
        /// The program and its role, e.g. "initdb for node primary".
        program: String,
        /// Its exit status.
        status: String,
        /// The log file that holds its output.
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },

    /// A node did not come up (or died while starting).
    #[error("node {node} did not start: {reason}; see {log}:\n{log_tail}")]
    StartFailed {
        /// Node name.
        node: String,
        /// Why the start is considered failed.
        reason: String,
        /// Its log file.
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },

    /// An operation needs a running postmaster and there is none.
    #[error("node {node} is not running (no live postmaster for {data_dir}): start it first")]
    NotRunning {
        /// Node name.
        node: String,
        /// Its data directory.
        data_dir: PathBuf,
    },

    /// A SQL statement on a node failed.
    #[error("{context}: {source}")]
    Sql {
        /// What was being done, naming the node.
        context: String,
        /// The driver error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// A SQL connection attempt did not finish in time.
    #[error("{context}: timed out after {ms} ms; check that the node is running")]
    Timeout {
        /// What was being done.
        context: String,
        /// The deadline in milliseconds.
        ms: u64,
    },

    /// Another process holds the directory lock of `understudy up`.
    #[error(
        "another understudy is running on {dir}{}: stop it first or use a different --dir",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The pid written in the lock file, if readable.
        pid: Option<i32>,
    },

    /// A file written by understudy could not be understood.
    #[error("{path} is invalid ({message}): fix it or remove it")]
    InvalidFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// A path is not safe to use (wrong owner, symlink, …) or otherwise unusable.
    #[error("cannot use {path}: {reason}")]
    UnsafePath {
        /// The path.
        path: PathBuf,
        /// Why, and what to do.
        reason: String,
    },

    /// Existing data cannot be reused as is.
    #[error("{0}")]
    Inconsistent(String),

    /// A switchover was asked for while the cluster cannot do one safely.
    #[error(
        "switchover refused: {reason}; wait until `understudy status` shows the standby \
         streaming and no failover in progress, then retry"
    )]
    NotReady {
        /// Why the cluster is not ready.
        reason: String,
    },

    /// A switchover started but could not complete; the old primary serves again.
    #[error("switchover aborted, {primary} is still the primary: {reason}")]
    SwitchoverAborted {
        /// The node that stays primary.
        primary: String,
        /// What went wrong.
        reason: String,
    },

    /// The orchestrator was shut down; its cluster is no longer running.
    #[error("the cluster has been shut down; start it again with `understudy up`")]
    ShutDown,
}

impl ClusterError {
    /// Wraps an I/O error with a description of the operation.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
        let context = context.into();
        move |source| ClusterError::Io { context, source }
    }

    /// Wraps an errno with a description of the operation.
    pub fn sys(context: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> ClusterError {
        let context = context.into();
        move |source| ClusterError::Sys { context, source }
    }

    /// Wraps a driver error with a description of the operation.
    pub fn sql(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> ClusterError {
        let context = context.into();
        move |source| ClusterError::Sql { context, source }
    }
}
