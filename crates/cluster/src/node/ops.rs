//! The mechanics behind [`Node`]'s operations: running a PostgreSQL program as the
//! PostgreSQL user with its output appended to the node's log, clearing what a killed
//! server leaves behind, waiting until a started server accepts connections, and
//! stopping a server by signal with fine-grained polling.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::Node;
use crate::error::{ClusterError, Result};
use crate::files;
use crate::process;

/// Pause between readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);
/// Pause between checks of a stopping postmaster.
const STOP_POLL: Duration = Duration::from_millis(2);
/// Lines of log quoted in errors.
const TAIL_LINES: usize = 20;

impl Node {
    /// Runs `program` as the PostgreSQL user with stdout and stderr appended to the log
    /// file; fails with the new log lines when it exits unsuccessfully or overruns
    /// `timeout` (then it is killed).
    pub(super) async fn run_logged(
        &self,
        program: PathBuf,
        args: &[OsString],
        env: &[(OsString, OsString)],
        what: &str,
        timeout: Duration,
    ) -> Result<()> {
        let log = &self.spec.log_file;
        let since = files::log_len(log);
        let open_log = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(ClusterError::io(format!(
                    "opening log file {}",
                    log.display()
                )))
        };
        let stdout = open_log()?;
        let stderr = open_log()?;
        let mut cmd = self.run_as.command(&program);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k.as_os_str(), v.as_os_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        let label = format!("{what} for node {}", self.spec.name);
        let mut child = cmd.spawn().map_err(ClusterError::io(format!(
            "running {} as user {}",
            program.display(),
            self.run_as.name()
        )))?;
        let status = match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => status.map_err(ClusterError::io(format!("waiting for {label}")))?,
            Err(_) => {
                let _ = child.kill().await;
                return Err(ClusterError::Command {
                    program: label,
                    status: format!("no exit after {} s, killed", timeout.as_secs()),
                    log: log.clone(),
                    log_tail: files::log_tail(log, since, TAIL_LINES),
                });
            }
        };
        if status.success() {
            Ok(())
        } else {
            Err(ClusterError::Command {
                program: label,
                status: status.to_string(),
                log: log.clone(),
                log_tail: files::log_tail(log, since, TAIL_LINES),
            })
        }
    }

    /// Removes what a killed server leaves behind: orphaned backends still running in
    /// the data directory (they hold the shared memory a new postmaster needs), a
    /// `postmaster.pid` naming a dead process, and a dead server's socket lock file.
    pub(super) async fn clear_leftovers(&self) -> Result<()> {
        if !self.kill_all().await {
            return Err(ClusterError::Inconsistent(format!(
                "processes of a previous server of {} survive SIGKILL: cannot start node {}",
                self.spec.data_dir.display(),
                self.spec.name
            )));
        }
        let pid_file = self.spec.data_dir.join("postmaster.pid");
        if process::recorded_postmaster_pid(&self.spec.data_dir).is_some() {
            std::fs::remove_file(&pid_file).map_err(ClusterError::io(format!(
                "removing stale {}",
                pid_file.display()
            )))?;
        }
        let socket = self
            .spec
            .socket_dir
            .join(format!(".s.PGSQL.{}", self.spec.port));
        let lock = self
            .spec
            .socket_dir
            .join(format!(".s.PGSQL.{}.lock", self.spec.port));
        let lock_pid = std::fs::read_to_string(&lock)
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok());
        if let Some(pid) = lock_pid {
            if !process::is_alive(pid) {
                let _ = std::fs::remove_file(&lock);
                let _ = std::fs::remove_file(&socket);
            }
        }
        Ok(())
    }

    /// Stops the server by signalling its postmaster directly (the signal of `mode`) and
    /// polling every few milliseconds until it has exited: what `pg_ctl stop` does,
    /// without its 100 ms polling steps. Past `timeout` every process of the data
    /// directory is killed (then the shutdown was not clean). Returns when none is left.
    pub async fn stop_promptly(&mut self, mode: super::StopMode, timeout: Duration) -> Result<()> {
        if let Some(pid) = self.postmaster_pid() {
            process::signal(pid, mode.signal()).map_err(ClusterError::sys(format!(
                "sending {} to the postmaster (pid {pid}) of node {}",
                mode.signal(),
                self.spec.name
            )))?;
            let deadline = Instant::now() + timeout;
            while process::is_alive(pid) && Instant::now() < deadline {
                tokio::time::sleep(STOP_POLL).await;
            }
            if process::is_alive(pid) {
                tracing::warn!(node = %self.spec.name, "no clean shutdown in time; killing the postmaster");
            }
        }
        if self.kill_all().await {
            Ok(())
        } else {
            Err(ClusterError::Inconsistent(format!(
                "processes of {} are still running after SIGKILL; check them with \
                 `ls -l /proc/*/cwd | grep {}`",
                self.spec.data_dir.display(),
                self.spec.data_dir.display()
            )))
        }
    }

    /// SIGKILLs every process of the data directory and waits until they are gone.
    /// Returns false when some survived.
    pub(super) async fn kill_all(&self) -> bool {
        let dir = self.spec.data_dir.clone();
        tokio::task::spawn_blocking(move || {
            process::kill_dir_blocking(&dir, Duration::from_secs(10))
        })
        .await
        .unwrap_or(false)
    }

    /// Polls a real connection until the server answers `SELECT 1`, the postmaster
    /// dies or is stopped, or the start timeout passes.
    pub(super) async fn wait_ready(&self, log_start: u64) -> Result<()> {
        let deadline = Instant::now() + self.start_timeout;
        loop {
            let last_error = match self.probe().await {
                Ok(()) => return Ok(()),
                Err(err) => err,
            };
            let Some(pid) = self.postmaster_pid() else {
                return Err(self.start_failed("the postmaster exited".into(), log_start));
            };
            if process::is_stopped(pid) {
                return Err(self.postmaster_stopped(pid, log_start));
            }
            if Instant::now() >= deadline {
                return Err(self.start_failed(
                    format!(
                        "not accepting connections after {} s (last error: {last_error})",
                        self.start_timeout.as_secs()
                    ),
                    log_start,
                ));
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    }

    async fn probe(&self) -> Result<()> {
        let client = self
            .connect_within(&self.creds, "postgres", Duration::from_secs(2))
            .await?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(ClusterError::sql(format!(
                "probing node {}",
                self.spec.name
            )))?;
        Ok(())
    }

    pub(super) fn start_failed(&self, reason: String, log_start: u64) -> ClusterError {
        ClusterError::StartFailed {
            node: self.spec.name.clone(),
            reason,
            log: self.spec.log_file.clone(),
            log_tail: files::log_tail(&self.spec.log_file, log_start, TAIL_LINES),
        }
    }

    /// The start failed because the postmaster `pid` is stopped: it would never answer.
    pub(super) fn postmaster_stopped(&self, pid: i32, log_start: u64) -> ClusterError {
        self.start_failed(
            format!(
                "its postmaster (pid {pid}) is running but stopped (SIGSTOP, or a debugger); \
                 resume it with `kill -CONT {pid}`, or stop it, and start again"
            ),
            log_start,
        )
    }

    pub(super) fn not_running(&self) -> ClusterError {
        ClusterError::NotRunning {
            node: self.spec.name.clone(),
            data_dir: self.spec.data_dir.clone(),
        }
    }
}
