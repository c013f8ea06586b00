//! [`BenchError`]: everything that stops `understudy bench`, phrased for the user.

use std::path::PathBuf;

use understudy_cluster::ClusterError;

/// Why the benchmark could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A flag has a value the benchmark cannot use.
    #[error("invalid --{flag}: {reason}")]
    InvalidArgument {
        /// The flag, without dashes.
        flag: &'static str,
        /// What is wrong and what to use instead.
        reason: String,
    },

    /// A program the benchmark drives is not installed.
    #[error("{program} not found ({searched}): install it with `apt-get install -y {package}`")]
    ToolMissing {
        /// The program.
        program: &'static str,
        /// Where it was looked for.
        searched: String,
        /// The Debian package that provides it.
        package: &'static str,
    },

    /// The embedded primary + standby failed.
    #[error("{0}")]
    Cluster(#[from] ClusterError),

    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path or program.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A child process (understudy or PgBouncer) exited before it was ready.
    #[error("{what} exited ({status}) before accepting connections; see {log}:\n{log_tail}")]
    ChildExited {
        /// The process, e.g. "understudy (pid 123)".
        what: String,
        /// Its exit status.
        status: String,
        /// The file holding its output.
        log: PathBuf,
        /// The last lines of that file.
        log_tail: String,
    },

    /// A child process did not become ready in time.
    #[error(
        "{what} did not accept connections within {secs} s ({last_error}); see {log}:\n{log_tail}"
    )]
    NotReady {
        /// The process.
        what: String,
        /// The deadline in seconds.
        secs: u64,
        /// The last connection error seen.
        last_error: String,
        /// The file holding its output.
        log: PathBuf,
        /// The last lines of that file.
        log_tail: String,
    },

    /// A pgbench invocation failed or did not finish.
    #[error("pgbench {what} against {target} failed ({status}):\n{stderr_tail}")]
    Pgbench {
        /// What pgbench was doing, e.g. "select_only run".
        what: String,
        /// The target, e.g. "understudy (127.0.0.1:6543)".
        target: String,
        /// Its exit status, or why it was stopped.
        status: String,
        /// The last lines of its standard error.
        stderr_tail: String,
    },

    /// pgbench finished but its output could not be read.
    #[error("cannot read the output of pgbench {what} against {target}: {reason}\n{output}")]
    PgbenchOutput {
        /// What pgbench was doing.
        what: String,
        /// The target.
        target: String,
        /// What is missing or malformed.
        reason: String,
        /// The output in question.
        output: String,
    },

    /// SIGINT or SIGTERM arrived; everything started has been stopped.
    #[error("interrupted; the servers and proxies started for the benchmark were stopped")]
    Interrupted,
}

impl BenchError {
    /// Wraps an I/O error with a description of the operation.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
        let context = context.into();
        move |source| BenchError::Io { context, source }
    }
}
