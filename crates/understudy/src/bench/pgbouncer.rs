//! PgBouncer for the comparison: its configuration (session pooling in front of the
//! primary, SCRAM with the superuser's password from an auth file, loopback TCP only) and
//! the process, run in the foreground as the PostgreSQL user because PgBouncer refuses to
//! run as root.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use understudy_cluster::{free_port, Credentials, RunAs};

use super::child::ChildGuard;
use super::error::BenchError;

/// How long PgBouncer may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the PgBouncer configuration is made of.
#[derive(Debug, Clone)]
pub struct PgBouncerConfig {
    /// Port PgBouncer listens on (127.0.0.1).
    pub listen_port: u16,
    /// Port of the primary (127.0.0.1).
    pub server_port: u16,
    /// pgbench clients; the pool and the connection limit are sized for them.
    pub clients: u32,
    /// The auth file.
    pub auth_file: PathBuf,
    /// The log file.
    pub log_file: PathBuf,
    /// The pid file.
    pub pid_file: PathBuf,
}

/// Renders `pgbouncer.ini`.
pub fn render_ini(config: &PgBouncerConfig) -> String {
    format!(
        "; Written by `understudy bench`.\n\
         [databases]\n\
         * = host=127.0.0.1 port={server_port}\n\
         \n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {listen_port}\n\
         unix_socket_dir =\n\
         pool_mode = session\n\
         auth_type = scram-sha-256\n\
         auth_file = {auth_file}\n\
         max_client_conn = {max_client_conn}\n\
         default_pool_size = {pool_size}\n\
         logfile = {log_file}\n\
         pidfile = {pid_file}\n",
        server_port = config.server_port,
        listen_port = config.listen_port,
        auth_file = config.auth_file.display(),
        max_client_conn = config.clients.saturating_add(10),
        pool_size = config.clients.saturating_add(2),
        log_file = config.log_file.display(),
        pid_file = config.pid_file.display(),
    )
}

/// Renders the auth file: one `"user" "password"` line (a plaintext password, which
/// PgBouncer uses for SCRAM towards the client and the server alike).
pub fn render_auth_file(creds: &Credentials) -> String {
    format!(
        "\"{}\" \"{}\"\n",
        creds.superuser.replace('"', "\"\""),
        creds.password.replace('"', "\"\"")
    )
}

/// A running PgBouncer.
#[derive(Debug)]
pub struct PgBouncer {
    guard: ChildGuard,
    port: u16,
}

impl PgBouncer {
    /// Writes the configuration under `dir` (created, owned by `run_as`) and starts
    /// `program` as `run_as` in front of the primary on `server_port`; returns once it
    /// accepts a connection as `creds`.
    pub async fn start(
        program: &Path,
        dir: &Path,
        run_as: &RunAs,
        server_port: u16,
        creds: &Credentials,
        clients: u32,
    ) -> Result<PgBouncer, BenchError> {
        run_as.create_dir(dir, 0o700)?;
        let config = PgBouncerConfig {
            listen_port: free_port()?,
            server_port,
            clients,
            auth_file: dir.join("userlist.txt"),
            log_file: dir.join("pgbouncer.log"),
            pid_file: dir.join("pgbouncer.pid"),
        };
        let ini = dir.join("pgbouncer.ini");
        run_as.write_file(&config.auth_file, render_auth_file(creds).as_bytes(), 0o600)?;
        run_as.write_file(&ini, render_ini(&config).as_bytes(), 0o600)?;

        // Errors before the log file is open (bad settings) go to standard error.
        let stderr_path = dir.join("pgbouncer.stderr");
        let stderr = std::fs::File::create(&stderr_path).map_err(BenchError::io(format!(
            "creating {}",
            stderr_path.display()
        )))?;
        let mut cmd = run_as.command(program);
        cmd.arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let child = cmd
            .spawn()
            .map_err(BenchError::io(format!("starting {}", program.display())))?;
        let mut guard = ChildGuard::new("pgbouncer", child, &stderr_path);
        tracing::info!(
            child = guard.what(),
            port = config.listen_port,
            "PgBouncer started"
        );
        guard
            .wait_until_accepting(config.listen_port, creds, READY_TIMEOUT)
            .await?;
        Ok(PgBouncer {
            guard,
            port: config.listen_port,
        })
    }

    /// The pid of the process, for its CPU time.
    pub fn pid(&self) -> Option<u32> {
        self.guard.pid()
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops PgBouncer (SIGTERM: immediate shutdown) and waits for it to exit.
    pub async fn stop(self) {
        self.guard.stop().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_pools_sessions_in_front_of_the_primary() {
        let ini = render_ini(&PgBouncerConfig {
            listen_port: 7001,
            server_port: 7002,
            clients: 8,
            auth_file: PathBuf::from("/tmp/b/userlist.txt"),
            log_file: PathBuf::from("/tmp/b/pgbouncer.log"),
            pid_file: PathBuf::from("/tmp/b/pgbouncer.pid"),
        });
        for line in [
            "* = host=127.0.0.1 port=7002",
            "listen_addr = 127.0.0.1",
            "listen_port = 7001",
            "unix_socket_dir =",
            "pool_mode = session",
            "auth_type = scram-sha-256",
            "auth_file = /tmp/b/userlist.txt",
            "max_client_conn = 18",
            "default_pool_size = 10",
            "logfile = /tmp/b/pgbouncer.log",
            "pidfile = /tmp/b/pgbouncer.pid",
        ] {
            assert!(ini.lines().any(|l| l == line), "missing {line:?} in\n{ini}");
        }
    }

    #[test]
    fn auth_file_doubles_quotes() {
        let creds = Credentials {
            superuser: "understudy".into(),
            password: "pa\"ss".into(),
        };
        assert_eq!(render_auth_file(&creds), "\"understudy\" \"pa\"\"ss\"\n");
    }
}
