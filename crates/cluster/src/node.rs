//! One PostgreSQL instance: creating it (`initdb` for a primary, `pg_basebackup` with a
//! replication slot for a standby), starting and stopping it as the PostgreSQL user,
//! signalling its postmaster, promoting it, connecting to it over loopback TCP, and
//! making a former primary follow its successor (`rejoin`), reading its control file
//! (`control_file`), and telling whether its shared memory is in huge pages
//! (`shared_memory`).

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::binaries::PgBinaries;
use crate::error::{ClusterError, Result};
use crate::files::{self, SecretFile, Settings};
use crate::process;
use crate::run_as::RunAs;

mod connect;
pub mod control_file;
mod ops;
mod rejoin;
pub mod shared_memory;
mod spec;

pub use rejoin::ControlData;
pub use spec::{free_port, Credentials, NodeSpec, StopMode};

/// How long a start may take before it is declared failed.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `pg_ctl stop` may take before the postmaster is killed.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one connection attempt (connect + authentication) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One PostgreSQL instance. A `Node` is a description plus operations: dropping it does
/// not stop the server (see [`crate::process::stop_dir_blocking`] for that).
#[derive(Debug, Clone)]
pub struct Node {
    spec: NodeSpec,
    bins: PgBinaries,
    run_as: RunAs,
    creds: Credentials,
    start_timeout: Duration,
}

impl Node {
    /// Creates a new primary with `initdb` (checksums, SCRAM, UTF8, C locale) and writes
    /// its settings and `pg_hba.conf`. The node is not started.
    pub async fn init_primary(
        bins: &PgBinaries,
        run_as: &RunAs,
        spec: NodeSpec,
        creds: &Credentials,
    ) -> Result<Node> {
        let node = Node::prepare(bins, run_as, spec, creds)?;
        let pwfile = SecretFile::create(
            run_as,
            node.spec
                .socket_dir
                .join(format!(".pwfile-{}", node.spec.name)),
            &format!("{}\n", creds.password),
        )?;
        let mut args: Vec<OsString> = vec![
            "-D".into(),
            node.spec.data_dir.clone().into(),
            "-U".into(),
            creds.superuser.clone().into(),
            pwfile_arg(pwfile.path()),
            "-A".into(),
            "scram-sha-256".into(),
            "--encoding=UTF8".into(),
            "--locale=C".into(),
            "--data-checksums".into(),
        ];
        if !node.spec.fsync {
            args.push("--no-sync".into());
        }
        node.run_logged(
            bins.initdb(),
            &args,
            &[],
            "initdb",
            Duration::from_secs(300),
        )
        .await?;
        drop(pwfile);
        node.write_static_config()?;
        Ok(node)
    }

    /// Creates a standby of the running `primary` with `pg_basebackup`, creating the
    /// physical replication slot `slot` on the primary. The node is not started.
    pub async fn create_standby(
        bins: &PgBinaries,
        run_as: &RunAs,
        primary: &Node,
        spec: NodeSpec,
        creds: &Credentials,
        slot: &str,
    ) -> Result<Node> {
        let node = Node::prepare(bins, run_as, spec, creds)?;
        let passfile = SecretFile::create(
            run_as,
            node.spec
                .socket_dir
                .join(format!(".pgpass-{}", node.spec.name)),
            &format!(
                "127.0.0.1:{}:*:{}:{}\n",
                primary.port(),
                files::pgpass_escape(&creds.superuser),
                files::pgpass_escape(&creds.password)
            ),
        )?;
        let mut args: Vec<OsString> = vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            primary.port().to_string().into(),
            "-U".into(),
            creds.superuser.clone().into(),
            "-D".into(),
            node.spec.data_dir.clone().into(),
            "-R".into(),
            "-X".into(),
            "stream".into(),
            "-C".into(),
            "-S".into(),
            slot.into(),
            "--checkpoint=fast".into(),
            "--no-password".into(),
        ];
        if !node.spec.fsync {
            args.push("--no-sync".into());
        }
        let env = [("PGPASSFILE".into(), passfile.path().as_os_str().to_owned())];
        node.run_logged(
            bins.pg_basebackup(),
            &args,
            &env,
            "pg_basebackup",
            Duration::from_secs(600),
        )
        .await?;
        drop(passfile);
        node.write_static_config()?;
        node.set_primary(primary.port(), slot)?;
        Ok(node)
    }

    /// A node for an existing data directory (from an earlier run).
    pub fn open(
        bins: &PgBinaries,
        run_as: &RunAs,
        spec: NodeSpec,
        creds: &Credentials,
    ) -> Result<Node> {
        let node = Node::build(bins, run_as, spec, creds)?;
        if !node.is_initialized() {
            return Err(ClusterError::Inconsistent(format!(
                "{} is not a PostgreSQL data directory (no PG_VERSION or global/pg_control): \
                 create the node instead of opening it",
                node.spec.data_dir.display()
            )));
        }
        Ok(node)
    }

    /// True when the data directory holds an initialized cluster.
    pub fn is_initialized(&self) -> bool {
        let dir = &self.spec.data_dir;
        dir.join("PG_VERSION").is_file() && dir.join("global").join("pg_control").is_file()
    }

    /// True when the data directory is set up as a standby (`standby.signal`).
    pub fn is_standby_configured(&self) -> bool {
        self.spec.data_dir.join("standby.signal").is_file()
    }

    /// Points this standby at a primary listening on `primary_port`, using `slot`. Takes
    /// effect at the next start.
    pub fn set_primary(&self, primary_port: u16, slot: &str) -> Result<()> {
        let conninfo = format!(
            "host=127.0.0.1 port={} user={} password={} application_name={}",
            primary_port,
            files::conninfo_quote(&self.creds.superuser),
            files::conninfo_quote(&self.creds.password),
            files::conninfo_quote(&self.spec.name),
        );
        files::write_primary_conninfo(&self.run_as, &self.spec.data_dir, &conninfo, slot)
    }

    /// Starts the server as the PostgreSQL user on [`Node::port`] and waits until it
    /// accepts a real connection. Leftovers of a killed server (orphaned backends, stale
    /// `postmaster.pid`, stale socket lock) are cleared first. Already running: adopts
    /// the port it listens on and only waits.
    pub async fn start(&mut self) -> Result<()> {
        if self.spec.port == 0 {
            self.spec.port = free_port()?;
        }
        let log_start = files::log_len(&self.spec.log_file);
        let running = self.postmaster_pid();
        if let Some(pid) = running.filter(|pid| process::is_stopped(*pid)) {
            // Adopted as it is, it would never answer: say so instead of waiting.
            return Err(self.postmaster_stopped(pid, log_start));
        }
        let launched = running.is_none();
        if !launched {
            // Already running: talk to it where it listens.
            if let Some(port) = process::recorded_port(&self.spec.data_dir) {
                self.spec.port = port;
            }
        }
        if launched {
            self.clear_leftovers().await?;
            self.write_settings()?;
            let args: Vec<OsString> = vec![
                "start".into(),
                "-D".into(),
                self.spec.data_dir.clone().into(),
                "-w".into(),
                "-t".into(),
                self.start_timeout.as_secs().max(1).to_string().into(),
                "-s".into(),
            ];
            let pg_ctl = self.bins.pg_ctl();
            let started = self
                .run_logged(pg_ctl, &args, &[], "pg_ctl start", self.start_timeout * 2)
                .await;
            if let Err(err) = started {
                self.kill_all().await;
                return Err(match err {
                    ClusterError::Command { status, .. } => {
                        self.start_failed(format!("pg_ctl start failed ({status})"), log_start)
                    }
                    other => other,
                });
            }
        }
        if let Err(reason) = self.wait_ready(log_start).await {
            if launched {
                self.kill_all().await;
            }
            return Err(reason);
        }
        tracing::debug!(node = %self.spec.name, port = self.spec.port, "node started");
        Ok(())
    }

    /// Starts the server on a freshly chosen free port, retrying a few times when the
    /// port was taken between choosing and binding. A server that is already running
    /// keeps its port.
    pub async fn start_on_free_port(&mut self) -> Result<()> {
        if self.postmaster_pid().is_some() {
            return self.start().await;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.spec.port = free_port()?;
            match self.start().await {
                Ok(()) => return Ok(()),
                Err(ClusterError::StartFailed { log_tail, .. })
                    if attempt < 5 && log_tail.contains("could not bind") =>
                {
                    tracing::debug!(node = %self.spec.name, "port taken, retrying on another");
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Stops the server with `pg_ctl stop -m <mode>`; past [`DEFAULT_STOP_TIMEOUT`] the
    /// postmaster and every process of the data directory are killed. Returns when no
    /// process of the data directory is left.
    pub async fn stop(&mut self, mode: StopMode) -> Result<()> {
        if self.postmaster_pid().is_some() {
            let args: Vec<OsString> = vec![
                "stop".into(),
                "-D".into(),
                self.spec.data_dir.clone().into(),
                "-m".into(),
                mode.as_str().into(),
                "-w".into(),
                "-t".into(),
                DEFAULT_STOP_TIMEOUT.as_secs().to_string().into(),
                "-s".into(),
            ];
            let pg_ctl = self.bins.pg_ctl();
            let stopped = self
                .run_logged(
                    pg_ctl,
                    &args,
                    &[],
                    "pg_ctl stop",
                    DEFAULT_STOP_TIMEOUT + Duration::from_secs(5),
                )
                .await;
            if let Err(err) = stopped {
                tracing::warn!(node = %self.spec.name, error = %err, "pg_ctl stop failed; killing the postmaster");
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

    /// Sends `signal` to the postmaster (SIGKILL to simulate a crash, SIGSTOP to freeze).
    pub fn kill(&self, signal: Signal) -> Result<()> {
        let pid = self.postmaster_pid().ok_or_else(|| self.not_running())?;
        process::signal(pid, signal).map_err(ClusterError::sys(format!(
            "sending {signal} to the postmaster (pid {pid}) of node {}",
            self.spec.name
        )))
    }

    /// The postmaster's pid (first line of `postmaster.pid`) when that process is alive.
    pub fn postmaster_pid(&self) -> Option<i32> {
        process::live_postmaster_pid(&self.spec.data_dir)
    }

    /// Whether the running node's shared memory is in huge pages (None when it does
    /// not run, or its postmaster's memory map cannot be read).
    pub fn shared_memory_pages(&self) -> Option<shared_memory::SharedMemoryPages> {
        shared_memory::of_process(self.postmaster_pid()?)
    }

    /// Every live process running in the data directory: the postmaster, its children,
    /// and backends orphaned by a killed postmaster.
    pub fn processes(&self) -> Vec<i32> {
        process::processes_in_dir(&self.spec.data_dir)
    }

    /// Promotes this standby (`pg_ctl promote -w`); returns once it accepts writes.
    pub async fn promote(&mut self) -> Result<()> {
        self.run_promote(true).await
    }

    /// Asks this standby to promote itself (`pg_ctl promote -W`) without waiting for the
    /// end of recovery: pg_ctl checks only every 100 ms, a caller polling the server
    /// itself learns sooner.
    pub async fn request_promotion(&mut self) -> Result<()> {
        self.run_promote(false).await
    }

    async fn run_promote(&mut self, wait: bool) -> Result<()> {
        if self.postmaster_pid().is_none() {
            return Err(self.not_running());
        }
        let args: Vec<OsString> = vec![
            "promote".into(),
            "-D".into(),
            self.spec.data_dir.clone().into(),
            if wait { "-w" } else { "-W" }.into(),
            "-t".into(),
            self.start_timeout.as_secs().max(1).to_string().into(),
            "-s".into(),
        ];
        let pg_ctl = self.bins.pg_ctl();
        self.run_logged(pg_ctl, &args, &[], "pg_ctl promote", self.start_timeout * 2)
            .await
    }

    /// Node name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.spec.port
    }

    /// Changes the port used by the next start.
    pub fn set_port(&mut self, port: u16) {
        self.spec.port = port;
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.spec.data_dir
    }

    /// The Unix-socket directory.
    pub fn socket_dir(&self) -> &Path {
        &self.spec.socket_dir
    }

    /// The log file.
    pub fn log_file(&self) -> &Path {
        &self.spec.log_file
    }

    /// The whole specification.
    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// The credentials the node was created with (used for readiness checks).
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// Changes how long [`Node::start`] and [`Node::promote`] may take.
    pub fn set_start_timeout(&mut self, timeout: Duration) {
        self.start_timeout = timeout;
    }

    fn build(
        bins: &PgBinaries,
        run_as: &RunAs,
        mut spec: NodeSpec,
        creds: &Credentials,
    ) -> Result<Node> {
        for path in [&mut spec.data_dir, &mut spec.socket_dir, &mut spec.log_file] {
            *path = std::path::absolute(&*path)
                .map_err(ClusterError::io(format!("resolving {}", path.display())))?;
        }
        Ok(Node {
            spec,
            bins: bins.clone(),
            run_as: run_as.clone(),
            creds: creds.clone(),
            start_timeout: DEFAULT_START_TIMEOUT,
        })
    }

    /// A node whose empty data directory and socket directory exist, owned by `run_as`.
    fn prepare(
        bins: &PgBinaries,
        run_as: &RunAs,
        spec: NodeSpec,
        creds: &Credentials,
    ) -> Result<Node> {
        let node = Node::build(bins, run_as, spec, creds)?;
        let data_dir = &node.spec.data_dir;
        let not_empty = std::fs::read_dir(data_dir)
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false);
        if not_empty {
            return Err(ClusterError::UnsafePath {
                path: data_dir.clone(),
                reason: "the data directory of a new node must be empty or missing: remove it or choose another".into(),
            });
        }
        run_as.create_dir(data_dir, 0o700)?;
        if !node.spec.socket_dir.is_dir() {
            run_as.create_dir(&node.spec.socket_dir, 0o755)?;
        }
        if let Some(parent) = node.spec.log_file.parent() {
            std::fs::create_dir_all(parent).map_err(ClusterError::io(format!(
                "creating log directory {}",
                parent.display()
            )))?;
        }
        Ok(node)
    }

    fn write_static_config(&self) -> Result<()> {
        let hba = self.spec.data_dir.join("pg_hba.conf");
        self.run_as.write_file(
            &hba,
            files::render_hba(self.spec.host_auth).as_bytes(),
            0o600,
        )?;
        files::include_settings(&self.run_as, &self.spec.data_dir)?;
        self.write_settings()
    }

    fn write_settings(&self) -> Result<()> {
        let text = files::render_settings(&Settings {
            port: self.spec.port,
            socket_dir: &self.spec.socket_dir,
            fsync: self.spec.fsync,
        });
        let path = self.spec.data_dir.join(files::SETTINGS_FILE);
        self.run_as.write_file(&path, text.as_bytes(), 0o600)
    }
}

fn pwfile_arg(path: &Path) -> OsString {
    let mut arg = OsString::from("--pwfile=");
    arg.push(path.as_os_str());
    arg
}
