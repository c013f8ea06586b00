//! The embedded cluster behind `understudy up`: two nodes, `node1` and `node2`, one the
//! primary and the other its asynchronous streaming standby (replication slot
//! `understudy_standby` on the primary), created on the first run and reused on later
//! runs, under a working directory locked for the life of the process. Which node is the
//! primary is recorded in `state.toml`, so that the roles survive a failover and a
//! restart; the orchestrator swaps them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::binaries::PgBinaries;
use crate::error::{ClusterError, Result};
use crate::node::shared_memory::SharedMemoryPages;
use crate::node::{Credentials, Node, NodeSpec, StopMode};
use crate::process;
use crate::run_as::RunAs;
use crate::status::{self, NodeStatus};
use crate::workdir::{self, DirLock, State};

/// Default working directory of `understudy up`.
pub const DEFAULT_DIR: &str = ".understudy";
/// Replication slot of the standby on the primary.
pub const STANDBY_SLOT: &str = "understudy_standby";
/// The names of the two nodes (and of their data directories under the data root).
pub const NODE_NAMES: [&str; 2] = ["node1", "node2"];
/// How long a status query may wait for a node.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);
/// How long `Drop` waits for a fast shutdown before killing.
const DROP_GRACE: Duration = Duration::from_secs(30);

/// A running primary + standby pair owned by this process.
#[derive(Debug)]
pub struct EmbeddedCluster {
    /// The node that currently accepts writes.
    pub primary: Node,
    /// The node that currently streams from it.
    pub standby: Node,
    /// The superuser of both nodes.
    pub creds: Credentials,
    dir: PathBuf,
    data_root: PathBuf,
    socket_dir: PathBuf,
    stopped: bool,
    _lock: DirLock,
}

/// Stops the given data directories on drop unless disarmed: a failed `up` leaves
/// nothing running.
struct StartGuard {
    dirs: Vec<PathBuf>,
}

impl Drop for StartGuard {
    fn drop(&mut self) {
        for dir in &self.dirs {
            process::stop_dir_blocking(dir, StopMode::Fast.signal(), DROP_GRACE);
        }
    }
}

impl EmbeddedCluster {
    /// Brings the cluster of `dir` up (creating `dir` if needed): takes the directory
    /// lock, then initializes or reuses the primary and the standby and starts both on
    /// free loopback ports. Fails at once, touching nothing, when another process holds
    /// the lock.
    pub async fn up(dir: &Path) -> Result<EmbeddedCluster> {
        std::fs::create_dir_all(dir).map_err(ClusterError::io(format!(
            "creating directory {}",
            dir.display()
        )))?;
        let dir = std::fs::canonicalize(dir)
            .map_err(ClusterError::io(format!("resolving {}", dir.display())))?;
        let lock = workdir::lock(&dir)?;
        let bins = PgBinaries::locate()?;
        let run_as = RunAs::detect()?;

        let state = match workdir::read_state(&dir)? {
            Some(state) => state,
            None => {
                let state = State {
                    data_root: workdir::default_data_root(&dir, &run_as),
                    primary: Some(NODE_NAMES[0].to_string()),
                };
                workdir::write_state(&dir, &state)?;
                state
            }
        };
        let data_root = state.data_root.clone();
        workdir::ensure_private_dir(&data_root, &run_as, 0o700)?;
        tracing::info!(dir = %dir.display(), data = %data_root.display(), "PostgreSQL data location");
        let socket_dir = workdir::socket_dir(&dir);
        workdir::ensure_private_dir(&socket_dir, &run_as, 0o755)?;

        let spec = |name: &str| {
            NodeSpec::new(
                name,
                data_root.join(name),
                0,
                &socket_dir,
                dir.join("log").join(format!("{name}.log")),
            )
        };
        let (primary_name, standby_name) = roles(&dir, &state)?;
        let primary_spec = spec(primary_name);
        let standby_spec = spec(standby_name);
        if state.primary.as_deref() != Some(primary_name) {
            workdir::write_state(
                &dir,
                &State {
                    primary: Some(primary_name.to_string()),
                    ..state.clone()
                },
            )?;
        }
        let mut guard = StartGuard {
            dirs: vec![primary_spec.data_dir.clone(), standby_spec.data_dir.clone()],
        };
        // With the lock held, any server still running on these directories was left by
        // an understudy that died: stop it so that this run's settings apply.
        let dirs = guard.dirs.clone();
        tokio::task::spawn_blocking(move || {
            for dir in dirs {
                if process::live_postmaster_pid(&dir).is_some() {
                    tracing::warn!(data = %dir.display(), "stopping a server left by an earlier run");
                }
                process::stop_dir_blocking(&dir, StopMode::Fast.signal(), DROP_GRACE);
            }
        })
        .await
        .map_err(|e| ClusterError::Inconsistent(format!("stopping leftover servers: {e}")))?;

        let existing = workdir::read_credentials(&dir)?;
        let primary_exists = primary_spec.data_dir.join("PG_VERSION").is_file();
        let creds = match existing {
            Some(creds) => creds,
            None if primary_exists => {
                return Err(ClusterError::Inconsistent(format!(
                    "{} is missing but {} holds data created with it: restore the file, or \
                     remove {} to start over",
                    workdir::credentials_path(&dir).display(),
                    primary_spec.data_dir.display(),
                    data_root.display()
                )))
            }
            None => workdir::create_credentials(&dir)?,
        };

        let mut primary = if primary_exists {
            Node::open(&bins, &run_as, primary_spec, &creds)?
        } else {
            if standby_spec.data_dir.join("PG_VERSION").is_file() {
                return Err(ClusterError::Inconsistent(format!(
                    "{} has no data but {} does: remove {} to start over",
                    primary_spec.data_dir.display(),
                    standby_spec.data_dir.display(),
                    data_root.display()
                )));
            }
            remove_dir(&primary_spec.data_dir)?;
            tracing::info!("initializing the primary");
            Node::init_primary(&bins, &run_as, primary_spec, &creds).await?
        };
        primary.start_on_free_port().await?;
        let standby = start_standby(&bins, &run_as, &primary, standby_spec, &creds).await?;

        guard.dirs.clear();
        Ok(EmbeddedCluster {
            primary,
            standby,
            creds,
            dir,
            data_root,
            socket_dir,
            stopped: false,
            _lock: lock,
        })
    }

    /// Stops both nodes (fast mode: clients disconnected, checkpoint) and waits until no
    /// process of their data directories is left; then releases the directory lock.
    pub async fn shutdown(mut self) -> Result<()> {
        let primary = self.primary.stop(StopMode::Fast).await;
        let standby = self.standby.stop(StopMode::Fast).await;
        self.stopped = true;
        remove_socket_dir(&self.socket_dir, primary.is_ok() && standby.is_ok());
        primary.and(standby)
    }

    /// Role, port, pid and lag of both nodes, the primary first; a node that does not
    /// answer is `down`.
    pub async fn status(&self) -> Vec<NodeStatus> {
        status::collect(&[&self.primary, &self.standby], &self.creds, STATUS_TIMEOUT).await
    }

    /// When a running node's shared memory is in 4 kB pages: what that costs and how to
    /// reserve huge pages for both nodes (see [`crate::node::shared_memory`]). None when
    /// both are in huge pages, or when it cannot be told.
    pub async fn huge_pages_advice(&self) -> Option<String> {
        let nodes = [&self.primary, &self.standby];
        let in_base_pages: Vec<&str> = nodes
            .iter()
            .filter(|node| node.shared_memory_pages() == Some(SharedMemoryPages::Base))
            .map(|node| node.name())
            .collect();
        if in_base_pages.is_empty() {
            return None;
        }
        // How many both need: asked only now, so a start in huge pages connects to neither.
        let mut needed = Some(0u64);
        for node in nodes {
            let node_needs = match node
                .connect_within(&self.creds, "postgres", STATUS_TIMEOUT)
                .await
            {
                Ok(client) => status::huge_pages_needed(&client).await,
                Err(_) => None,
            };
            needed = needed.zip(node_needs).map(|(sum, n)| sum + n);
        }
        let reserve = match needed {
            Some(n) => format!(
                "reserve {n} huge pages for the two nodes (`sysctl -w vm.nr_hugepages={n}`, \
                 more if other programs use them) and restart `understudy up`"
            ),
            None => "reserve huge pages for the two nodes (vm.nr_hugepages; each node's \
                     shared_memory_size_in_huge_pages tells how many) and restart `understudy up`"
                .to_string(),
        };
        Some(format!(
            "the shared memory of {} is in 4 kB pages: each connection's end then costs \
             PostgreSQL several ms of CPU, which a switchover pays for every open connection \
             while clients wait; {reserve} (PostgreSQL uses them by itself, huge_pages = try)",
            in_base_pages.join(" and ")
        ))
    }

    /// Exchanges the roles of the two nodes (after a promotion of the standby).
    pub(crate) fn swap_roles(&mut self) {
        std::mem::swap(&mut self.primary, &mut self.standby);
    }

    /// Records the current primary in `state.toml`, so that a later `up` starts it as
    /// the primary.
    pub(crate) fn record_primary(&self) -> Result<()> {
        workdir::write_state(
            &self.dir,
            &State {
                data_root: self.data_root.clone(),
                primary: Some(self.primary.name().to_string()),
            },
        )
    }

    /// The (canonical) working directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory of the nodes' Unix-domain sockets.
    pub fn socket_dir(&self) -> &Path {
        &self.socket_dir
    }

    /// The directory holding the nodes' data directories.
    pub fn data_root(&self) -> &Path {
        &self.data_root
    }
}

impl Drop for EmbeddedCluster {
    /// Without [`EmbeddedCluster::shutdown`], the nodes are stopped here by signal
    /// (fast shutdown, SIGKILL after a grace period) before the lock is released.
    fn drop(&mut self) {
        if !self.stopped {
            let mut all_stopped = true;
            for node in [&self.primary, &self.standby] {
                all_stopped &= process::stop_dir_blocking(
                    node.data_dir(),
                    StopMode::Fast.signal(),
                    DROP_GRACE,
                );
            }
            remove_socket_dir(&self.socket_dir, all_stopped);
        }
    }
}

/// Removes the nodes' socket directory once their servers are down. A
/// server that was killed (`kill -9`) leaves its socket and lock file
/// behind; with every server of the cluster stopped they are stale and go
/// too. Otherwise only an empty directory is removed.
fn remove_socket_dir(socket_dir: &Path, all_stopped: bool) {
    if all_stopped {
        let _ = std::fs::remove_dir_all(socket_dir);
    } else {
        let _ = std::fs::remove_dir(socket_dir);
    }
}

/// Which node starts as the primary and which as the standby: the one `state.toml`
/// names, unless that one is set up as a standby and the other holds a primary's data
/// (a failover ended before `state.toml` was written).
fn roles(dir: &Path, state: &State) -> Result<(&'static str, &'static str)> {
    let [first, second] = NODE_NAMES;
    let named = state.primary.as_deref().unwrap_or(first);
    let (primary, standby) = if named == first {
        (first, second)
    } else if named == second {
        (second, first)
    } else {
        return Err(ClusterError::InvalidFile {
            path: dir.join("state.toml"),
            message: format!("primary = {named:?} names no node; it must be one of {NODE_NAMES:?}"),
        });
    };
    let data = |name: &str| state.data_root.join(name);
    let is_standby = |name: &str| data(name).join("standby.signal").is_file();
    let has_data = |name: &str| data(name).join("PG_VERSION").is_file();
    if is_standby(primary) && has_data(standby) && !is_standby(standby) {
        tracing::warn!(
            recorded = primary,
            primary = standby,
            "state.toml names a standby as the primary; starting the other node as the primary"
        );
        return Ok((standby, primary));
    }
    if is_standby(primary) {
        return Err(ClusterError::Inconsistent(format!(
            "{} is set up as a standby, and {} holds no primary to follow: remove \
             standby.signal from the data directory that should be the primary",
            data(primary).display(),
            data(standby).display()
        )));
    }
    Ok((primary, standby))
}

/// Starts the existing standby when it is sound (a standby whose slot exists on the
/// primary), otherwise rebuilds it from the running primary and starts it.
async fn start_standby(
    bins: &PgBinaries,
    run_as: &RunAs,
    primary: &Node,
    spec: NodeSpec,
    creds: &Credentials,
) -> Result<Node> {
    if let Ok(mut standby) = Node::open(bins, run_as, spec.clone(), creds) {
        let slot = slot_exists(primary, creds).await?;
        if standby.is_standby_configured() && slot {
            standby.set_primary(primary.port(), STANDBY_SLOT)?;
            match standby.start_on_free_port().await {
                Ok(()) => return Ok(standby),
                Err(err) => {
                    tracing::warn!(error = %err, "the standby does not start; rebuilding it")
                }
            }
        } else {
            tracing::warn!(
                standby_signal = standby.is_standby_configured(),
                slot,
                "the standby is no longer a follower of the primary; rebuilding it"
            );
        }
    }
    let dir = spec.data_dir.clone();
    let killed = tokio::task::spawn_blocking(move || {
        process::kill_dir_blocking(&dir, Duration::from_secs(10))
    })
    .await
    .unwrap_or(false);
    if !killed {
        return Err(ClusterError::Inconsistent(format!(
            "processes of {} survive SIGKILL: cannot rebuild the standby",
            spec.data_dir.display()
        )));
    }
    remove_dir(&spec.data_dir)?;
    drop_slot(primary, creds).await?;
    tracing::info!("creating the standby from the primary");
    let mut standby =
        Node::create_standby(bins, run_as, primary, spec, creds, STANDBY_SLOT).await?;
    standby.start_on_free_port().await?;
    Ok(standby)
}

async fn slot_exists(primary: &Node, creds: &Credentials) -> Result<bool> {
    let client = primary.connect(creds, "postgres").await?;
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&STANDBY_SLOT],
        )
        .await
        .map_err(ClusterError::sql(
            "looking up the standby's replication slot",
        ))?;
    Ok(row.get::<_, i64>(0) > 0)
}

async fn drop_slot(primary: &Node, creds: &Credentials) -> Result<()> {
    let client = primary.connect(creds, "postgres").await?;
    client
        .execute(
            "SELECT pg_catalog.pg_drop_replication_slot(slot_name) \
             FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
            &[&STANDBY_SLOT],
        )
        .await
        .map_err(ClusterError::sql(
            "dropping the old standby's replication slot",
        ))?;
    Ok(())
}

fn remove_dir(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(ClusterError::io(format!("removing {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(root: &Path, primary: Option<&str>) -> State {
        State {
            data_root: root.to_path_buf(),
            primary: primary.map(str::to_string),
        }
    }

    fn node(root: &Path, name: &str, standby: bool) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("PG_VERSION"), "15\n").expect("PG_VERSION");
        if standby {
            std::fs::write(dir.join("standby.signal"), "").expect("standby.signal");
        }
    }

    #[test]
    fn roles_follow_state_toml() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        assert_eq!(roles(root, &state(root, None)).unwrap(), ("node1", "node2"));
        node(root, "node1", true);
        node(root, "node2", false);
        assert_eq!(
            roles(root, &state(root, Some("node2"))).unwrap(),
            ("node2", "node1")
        );
    }

    #[test]
    fn a_recorded_primary_that_is_a_standby_yields_to_the_other_node() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        node(root, "node1", true);
        node(root, "node2", false);
        assert_eq!(
            roles(root, &state(root, Some("node1"))).unwrap(),
            ("node2", "node1")
        );
    }

    #[test]
    fn two_standbys_or_an_unknown_node_are_errors() {
        let root = tempfile::tempdir().expect("tempdir");
        let root = root.path();
        node(root, "node1", true);
        node(root, "node2", true);
        let err = roles(root, &state(root, Some("node1"))).unwrap_err();
        assert!(err.to_string().contains("remove standby.signal"), "{err}");
        let err = roles(root, &state(root, Some("node3"))).unwrap_err();
        assert!(matches!(err, ClusterError::InvalidFile { .. }), "{err}");
    }
}
