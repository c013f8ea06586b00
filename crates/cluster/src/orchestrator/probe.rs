//! Health checks: the probe of the primary (its postmaster process, and `SELECT 1` on a
//! kept connection, every `probe_interval` and at once when that connection is lost or
//! the postmaster begins to exit, looked at every 5 ms), the
//! rule that declares it failed (postmaster
//! gone: at once; no successful probe for `failure_timeout`: connection refused, query
//! timed out, postmaster stopped), and the check that a standby can be promoted.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::Client;
use understudy_config::HealthConfig;

use super::events::millis;
use super::view::ClusterView;
use crate::node::{Credentials, Node};
use crate::process;
use crate::status::{self, Role};

/// How often the primary's postmaster is looked at between probes (one read of its
/// `/proc/<pid>/stat`).
const EXIT_POLL: Duration = Duration::from_millis(5);
/// Pause before the next probe after a failed one (when shorter than the interval).
const UNHEALTHY_RETRY: Duration = Duration::from_millis(10);

/// How the primary is watched (the `[health]` section of the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// Time between two probes. Default 100 ms.
    pub probe_interval: Duration,
    /// Limit for one probe (connecting, or answering `SELECT 1`). Default 250 ms.
    pub probe_timeout: Duration,
    /// The primary is declared failed when no probe has succeeded for this long.
    /// Default 400 ms.
    pub failure_timeout: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings::from(&HealthConfig::default())
    }
}

impl From<&HealthConfig> for HealthSettings {
    fn from(config: &HealthConfig) -> Self {
        HealthSettings {
            probe_interval: config.probe_interval(),
            probe_timeout: config.probe_timeout(),
            failure_timeout: config.failure_timeout(),
        }
    }
}

/// The outcome of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The postmaster runs and `SELECT 1` was answered in time.
    Healthy,
    /// No answer this time (refused, timed out, postmaster stopped).
    Unhealthy(String),
    /// The postmaster has exited: the node is dead.
    Gone(String),
}

/// Why and when the primary was declared failed.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    /// What the last probe saw.
    pub reason: String,
    /// The last successful probe (or the start of probing).
    pub last_ok: Instant,
    /// When the failure was declared.
    pub declared: Instant,
    /// The postmaster has exited (as opposed to not answering).
    pub gone: bool,
}

/// Probes one node, keeping its connection between probes.
pub(super) struct Probe {
    node: Node,
    creds: Credentials,
    client: Option<Client>,
    /// The task running `client`'s connection: it ends when the connection is lost,
    /// which is when the next probe should run (a killed postmaster's backends exit at
    /// once, closing the kept connection before the next tick).
    connection: Option<JoinHandle<()>>,
    pid: Option<i32>,
    /// The postmaster `pid`, watched between probes for its exit. None when its
    /// `/proc/<pid>/stat` cannot be opened (`/proc` mounted with `hidepid`, for one):
    /// the exit is then noticed by the probes, whose `kill(pid, 0)` needs no access.
    watch: Option<process::ProcessWatch>,
}

impl Probe {
    /// A probe of `node`; connects at the first check.
    pub(super) fn new(node: Node, creds: Credentials) -> Probe {
        Probe {
            node,
            creds,
            client: None,
            connection: None,
            pid: None,
            watch: None,
        }
    }

    /// One probe, bounded by `limit`: the postmaster must be alive and not stopped, and
    /// `SELECT 1` must be answered. A dead postmaster's orphaned backends may still
    /// answer on a kept connection, which is why the process is checked first.
    pub(super) async fn check(&mut self, limit: Duration) -> Verdict {
        let running = |pid: &i32| process::is_running(*pid);
        let watched = self.watch.as_ref().filter(|watch| watch.is_running());
        let alive = watched.map(process::ProcessWatch::pid);
        let Some(pid) = alive.or_else(|| self.node.postmaster_pid().filter(running)) else {
            let detail = match self.pid {
                Some(pid) => format!("the postmaster (pid {pid}) has exited"),
                None => "no postmaster is running".to_string(),
            };
            return Verdict::Gone(detail);
        };
        self.pid = Some(pid);
        if self.watch.as_ref().map(process::ProcessWatch::pid) != Some(pid) {
            self.watch = process::ProcessWatch::open(pid);
        }
        if process::is_stopped(pid) {
            return Verdict::Unhealthy(format!("the postmaster (pid {pid}) is stopped"));
        }
        match tokio::time::timeout(limit, self.select_one(limit)).await {
            Ok(Ok(())) => Verdict::Healthy,
            Ok(Err(reason)) => {
                self.client = None;
                self.connection = None;
                Verdict::Unhealthy(reason)
            }
            Err(_) => {
                self.client = None;
                self.connection = None;
                Verdict::Unhealthy(format!("no answer within {} ms", millis(limit)))
            }
        }
    }

    async fn select_one(&mut self, limit: Duration) -> Result<(), String> {
        let client = match self.client.take().filter(|c| !c.is_closed()) {
            Some(client) => client,
            None => {
                let (client, connection) = self
                    .node
                    .connect_watched(&self.creds, "postgres", limit)
                    .await
                    .map_err(|e| e.to_string())?;
                self.connection = Some(connection);
                client
            }
        };
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| format!("SELECT 1 failed: {e}"))?;
        self.client = Some(client);
        Ok(())
    }

    /// Probes every `probe_interval` until the node is declared failed, or until the
    /// published view changes (then None: the caller looks at the new view).
    pub(super) async fn until_failure(
        &mut self,
        settings: &HealthSettings,
        view: &watch::Receiver<ClusterView>,
    ) -> Option<Failure> {
        let mut last_ok = Instant::now();
        let mut next = Instant::now();
        loop {
            if view.has_changed().unwrap_or(true) {
                return None;
            }
            let deadline = last_ok + settings.failure_timeout;
            let limit = settings
                .probe_timeout
                .min(deadline.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1));
            let mut interval = settings.probe_interval;
            match self.check(limit).await {
                Verdict::Healthy => last_ok = Instant::now(),
                Verdict::Gone(reason) => {
                    return Some(Failure {
                        reason,
                        last_ok,
                        declared: Instant::now(),
                        gone: true,
                    })
                }
                Verdict::Unhealthy(reason) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Some(Failure {
                            reason: format!(
                                "no successful probe for {} ms (last: {reason})",
                                millis(now - last_ok)
                            ),
                            last_ok,
                            declared: now,
                            gone: false,
                        });
                    }
                    tracing::debug!(node = %self.node.name(), %reason, "probe failed");
                    // Look again soon: a postmaster that was just killed may still be
                    // exiting when its lost connection is noticed.
                    interval = interval.min(UNHEALTHY_RETRY);
                }
            }
            let now = Instant::now();
            next = (next + interval).max(now);
            let wake = next.min(last_ok + settings.failure_timeout);
            let exit = exited(self.watch.as_ref());
            match self.connection.as_mut() {
                Some(connection) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(wake) => {}
                        () = exit => {}
                        _ = connection => {
                            // Lost: probe now (and reconnect).
                            self.connection = None;
                            self.client = None;
                        }
                    }
                }
                None => {
                    tokio::select! {
                        () = tokio::time::sleep_until(wake) => {}
                        () = exit => {}
                    }
                }
            }
        }
    }
}

/// Resolves once the watched postmaster has begun to exit (never without one), looked
/// at every [`EXIT_POLL`]. Its backends close the probe's connection only once the
/// kernel has torn them down, tens of ms after a `kill -9` of the postmaster when
/// several exit at once; the postmaster's own exit shows at once.
async fn exited(watch: Option<&process::ProcessWatch>) {
    let Some(watch) = watch else {
        return std::future::pending().await;
    };
    while watch.is_running() {
        tokio::time::sleep(EXIT_POLL).await;
    }
}

/// Whether `node` can be promoted: its postmaster runs and is not stopped, and it
/// answers within `limit` as a server in recovery. Returns the connection that asked
/// (to promote it on); the error says why not.
pub(super) async fn standby_ready(
    node: &Node,
    creds: &Credentials,
    limit: Duration,
) -> Result<Client, String> {
    let Some(pid) = node.postmaster_pid() else {
        return Err(format!("node {} is not running", node.name()));
    };
    if process::is_stopped(pid) {
        return Err(format!(
            "the postmaster of node {} (pid {pid}) is stopped",
            node.name()
        ));
    }
    let role = async {
        let client = node
            .connect_within(creds, "postgres", limit)
            .await
            .map_err(|e| e.to_string())?;
        let role = status::node_role(&client)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((role, client))
    };
    match tokio::time::timeout(limit, role).await {
        Ok(Ok((Role::Standby, client))) => Ok(client),
        Ok(Ok((role, _))) => Err(format!(
            "node {} is not in recovery (it reports itself {role})",
            node.name()
        )),
        Ok(Err(reason)) => Err(reason),
        Err(_) => Err(format!(
            "node {} did not answer within {} ms",
            node.name(),
            millis(limit)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_configuration() {
        let settings = HealthSettings::default();
        assert_eq!(settings.probe_interval, Duration::from_millis(100));
        assert_eq!(settings.probe_timeout, Duration::from_millis(250));
        assert_eq!(settings.failure_timeout, Duration::from_millis(400));
    }
}
