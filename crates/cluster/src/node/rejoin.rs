//! Turning a former primary into a standby of the node that replaced it: `pg_rewind`
//! (which first runs crash recovery in single-user mode when the target was killed), a
//! fresh `pg_basebackup` when rewinding is not possible, the standby configuration
//! (`standby.signal`, `primary_conninfo`, `primary_slot_name`), and reading the control
//! file with `pg_controldata`.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use super::Node;
use crate::error::{ClusterError, Result};
use crate::files::{self, SecretFile};
use crate::status;

/// How long `pg_rewind` (crash recovery included) may take.
const REWIND_TIMEOUT: Duration = Duration::from_secs(600);
/// How long `pg_controldata` may take.
const CONTROLDATA_TIMEOUT: Duration = Duration::from_secs(30);

/// What `pg_controldata` reports about a stopped data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlData {
    /// `Database cluster state`, e.g. `shut down` or `in production`.
    pub state: String,
    /// `Latest checkpoint location` as a byte position: after a clean shutdown, the
    /// shutdown checkpoint, which is the last record the server wrote.
    pub checkpoint_lsn: u64,
}

impl ControlData {
    /// True when the server was shut down cleanly (as a primary or as a standby).
    pub fn is_clean_shutdown(&self) -> bool {
        self.state == "shut down" || self.state == "shut down in recovery"
    }
}

impl Node {
    /// Rewinds this stopped node's data directory to the history of the running
    /// `source` with `pg_rewind`, so that it can follow `source` as a standby. A target
    /// that was not shut down cleanly first goes through crash recovery in single-user
    /// mode (`pg_rewind` does that itself). "No rewind required" is a success.
    pub async fn rewind_from(&self, source: &Node) -> Result<()> {
        if self.postmaster_pid().is_some() {
            return Err(ClusterError::Inconsistent(format!(
                "node {} is running: stop it before rewinding it",
                self.spec.name
            )));
        }
        self.clear_leftovers().await?;
        let passfile = self.passfile_for(source)?;
        let source_server = format!(
            "host=127.0.0.1 port={} user={} dbname=postgres application_name={}",
            source.port(),
            files::conninfo_quote(&self.creds.superuser),
            files::conninfo_quote(&format!("{}-rewind", self.spec.name)),
        );
        let mut target = OsString::from("--target-pgdata=");
        target.push(self.spec.data_dir.as_os_str());
        let args: Vec<OsString> = vec![target, format!("--source-server={source_server}").into()];
        let env = [("PGPASSFILE".into(), passfile.path().as_os_str().to_owned())];
        let rewind = self.bins.program("pg_rewind");
        self.run_logged(rewind, &args, &env, "pg_rewind", REWIND_TIMEOUT)
            .await
    }

    /// Replaces this stopped node's data with a fresh `pg_basebackup` of the running
    /// `source`, (re)creating the replication slot `slot` on `source`. Every process of
    /// the data directory is killed first.
    pub async fn reclone_from(&mut self, source: &Node, slot: &str) -> Result<()> {
        if !self.kill_all().await {
            return Err(ClusterError::Inconsistent(format!(
                "processes of {} survive SIGKILL: cannot replace its data",
                self.spec.data_dir.display()
            )));
        }
        let client = source.connect(&self.creds, "postgres").await?;
        client
            .execute(
                "SELECT pg_catalog.pg_drop_replication_slot(slot_name) \
                 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await
            .map_err(ClusterError::sql(format!(
                "dropping replication slot {slot} on node {}",
                source.name()
            )))?;
        drop(client);
        match std::fs::remove_dir_all(&self.spec.data_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(ClusterError::io(format!(
                    "removing {}",
                    self.spec.data_dir.display()
                ))(e))
            }
            _ => {}
        }
        let mut node = Node::create_standby(
            &self.bins,
            &self.run_as,
            source,
            self.spec.clone(),
            &self.creds,
            slot,
        )
        .await?;
        node.start_timeout = self.start_timeout;
        *self = node;
        Ok(())
    }

    /// Sets this stopped node up as a standby of the primary on `primary_port` using
    /// `slot`: `standby.signal`, `primary_conninfo`, `primary_slot_name`. Replication
    /// slots the node kept from its time as a primary are removed: on a standby they
    /// would hold WAL back, and after a later promotion they would be stale.
    pub fn configure_standby(&self, primary_port: u16, slot: &str) -> Result<()> {
        let data = &self.spec.data_dir;
        self.run_as
            .write_file(&data.join("standby.signal"), b"", 0o600)?;
        self.set_primary(primary_port, slot)?;
        let slots = data.join("pg_replslot");
        let entries = match std::fs::read_dir(&slots) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ClusterError::io(format!("reading {}", slots.display()))(e)),
        };
        for entry in entries {
            let path = entry
                .map_err(ClusterError::io(format!("reading {}", slots.display())))?
                .path();
            std::fs::remove_dir_all(&path).map_err(ClusterError::io(format!(
                "removing stale slot {}",
                path.display()
            )))?;
        }
        Ok(())
    }

    /// The control file as it is now, read without spawning `pg_controldata` (see
    /// [`super::control_file`]); None when it cannot be read or was caught mid-write.
    pub fn read_control_file(&self) -> Option<super::control_file::ControlFile> {
        super::control_file::read(&self.spec.data_dir)
    }

    /// The control file of this (stopped) node, read with `pg_controldata`.
    pub async fn control_data(&self) -> Result<ControlData> {
        let program = self.bins.program("pg_controldata");
        let mut cmd = self.run_as.command(&program);
        cmd.arg("-D")
            .arg(&self.spec.data_dir)
            .env("LC_ALL", "C")
            .env("LANG", "C")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let label = format!("pg_controldata for node {}", self.spec.name);
        let output = tokio::time::timeout(CONTROLDATA_TIMEOUT, cmd.output())
            .await
            .map_err(|_| ClusterError::Timeout {
                context: label.clone(),
                ms: CONTROLDATA_TIMEOUT.as_millis() as u64,
            })?
            .map_err(ClusterError::io(format!("running {}", program.display())))?;
        let text = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(ClusterError::Inconsistent(format!(
                "{label} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        parse_control_data(&text).ok_or_else(|| {
            ClusterError::Inconsistent(format!(
                "{label} printed no cluster state or checkpoint location:\n{text}"
            ))
        })
    }

    /// A `.pgpass` file, readable by the PostgreSQL user only, for connecting to `source`.
    fn passfile_for(&self, source: &Node) -> Result<SecretFile> {
        SecretFile::create(
            &self.run_as,
            self.spec
                .socket_dir
                .join(format!(".pgpass-{}", self.spec.name)),
            &format!(
                "127.0.0.1:{}:*:{}:{}\n",
                source.port(),
                files::pgpass_escape(&self.creds.superuser),
                files::pgpass_escape(&self.creds.password)
            ),
        )
    }
}

/// Reads the cluster state and the latest checkpoint location from `pg_controldata`
/// output (C locale).
fn parse_control_data(text: &str) -> Option<ControlData> {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    Some(ControlData {
        state: field("Database cluster state")?.to_string(),
        checkpoint_lsn: status::parse_lsn(field("Latest checkpoint location")?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pg_controldata_output() {
        let text = "pg_control version number:            1300\n\
                    Database cluster state:               shut down\n\
                    pg_control last modified:             Mon 01 Jan 2024\n\
                    Latest checkpoint location:           0/3000060\n\
                    Latest checkpoint's REDO location:    0/3000028\n";
        let data = parse_control_data(text).expect("parsed");
        assert_eq!(data.state, "shut down");
        assert_eq!(data.checkpoint_lsn, 0x0300_0060);
        assert!(data.is_clean_shutdown());
        let crashed = text.replace("shut down", "in production");
        assert!(!parse_control_data(&crashed).unwrap().is_clean_shutdown());
        assert_eq!(parse_control_data("garbage"), None);
    }
}
