//! The long-running children of the benchmark (understudy, PgBouncer): a guard that stops
//! one by its pid (SIGTERM, then SIGKILL after a grace period) when asked or when dropped,
//! and the wait until a child accepts PostgreSQL connections.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use understudy_cluster::files::log_tail;
use understudy_cluster::{Credentials, Signal};

use super::error::BenchError;

/// How long a child has to exit after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How often readiness and exits are polled.
const POLL: Duration = Duration::from_millis(50);
/// Bound on one connection attempt while waiting for readiness.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Lines of a child's log quoted in errors.
const TAIL_LINES: usize = 20;

/// A child process that is stopped by pid when [`ChildGuard::stop`] is called or the
/// guard is dropped.
#[derive(Debug)]
pub struct ChildGuard {
    what: String,
    log: PathBuf,
    child: Option<tokio::process::Child>,
}

impl ChildGuard {
    /// Takes charge of `child`; `name` and `log` (where its output goes) appear in errors.
    pub fn new(name: &str, child: tokio::process::Child, log: &Path) -> ChildGuard {
        let what = match child.id() {
            Some(pid) => format!("{name} (pid {pid})"),
            None => name.to_string(),
        };
        ChildGuard {
            what,
            log: log.to_path_buf(),
            child: Some(child),
        }
    }

    /// The child's pid, while it has not been waited for.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref()?.id()
    }

    /// The child's name and pid, for messages.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// An error describing that the child has exited, when it has.
    pub fn exited(&mut self) -> Option<BenchError> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        Some(BenchError::ChildExited {
            what: self.what.clone(),
            status: status.to_string(),
            log: self.log.clone(),
            log_tail: log_tail(&self.log, 0, TAIL_LINES),
        })
    }

    /// Polls until the child accepts a PostgreSQL connection on 127.0.0.1:`port` as
    /// `creds` (and answers `SELECT 1`), for at most `limit`.
    pub async fn wait_until_accepting(
        &mut self,
        port: u16,
        creds: &Credentials,
        limit: Duration,
    ) -> Result<(), BenchError> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(err) = self.exited() {
                return Err(err);
            }
            let last_error = match try_query(port, creds).await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(BenchError::NotReady {
                    what: self.what.clone(),
                    secs: limit.as_secs(),
                    last_error,
                    log: self.log.clone(),
                    log_tail: log_tail(&self.log, 0, TAIL_LINES),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stops the child: SIGTERM, then SIGKILL when it is still running after a grace
    /// period. Returns once it has exited.
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = understudy_cluster::process::signal(pid as i32, Signal::SIGTERM);
        }
        if tokio::time::timeout(STOP_GRACE, child.wait())
            .await
            .is_err()
        {
            tracing::warn!(child = %self.what, "still running after SIGTERM; killing it");
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
}

impl Drop for ChildGuard {
    /// Without [`ChildGuard::stop`], the child is stopped here, blocking the thread.
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = understudy_cluster::process::signal(pid as i32, Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while Instant::now() < deadline {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.start_kill();
        let deadline = Instant::now() + Duration::from_secs(2);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Connects to 127.0.0.1:`port` as `creds`, database `postgres`, and runs `SELECT 1`.
async fn try_query(port: u16, creds: &Credentials) -> Result<(), String> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(&creds.superuser)
        .password(&creds.password)
        .dbname("postgres")
        .application_name("understudy-bench")
        .connect_timeout(ATTEMPT_TIMEOUT);
    let attempt = async {
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        let connection = tokio::spawn(connection);
        let result = client
            .simple_query("SELECT 1")
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        drop(client);
        let _ = connection.await;
        result
    };
    match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs())),
    }
}
