//! The files understudy writes into and next to a data directory: its own settings file
//! (`understudy.conf`, included from `postgresql.conf`), `pg_hba.conf`, the standby's
//! `primary_conninfo`, short-lived secret files for `initdb`/`pg_basebackup`, and reading
//! the tail of a log for error messages.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{ClusterError, Result};
use crate::run_as::RunAs;

/// The settings file understudy owns inside every data directory.
pub const SETTINGS_FILE: &str = "understudy.conf";

/// The line appended to `postgresql.conf` so that [`SETTINGS_FILE`] is read.
const INCLUDE_LINE: &str = "include_if_exists = 'understudy.conf'";

/// How a client connecting over TCP (and the local socket) proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostAuth {
    /// SCRAM-SHA-256 only: roles with md5 secrets cannot log in.
    #[default]
    ScramSha256,
    /// `md5` in `pg_hba.conf`: md5 for roles with md5 secrets, SCRAM for the others.
    Md5,
}

impl HostAuth {
    /// The method name in `pg_hba.conf`.
    pub fn as_str(self) -> &'static str {
        match self {
            HostAuth::ScramSha256 => "scram-sha-256",
            HostAuth::Md5 => "md5",
        }
    }
}

/// Values of [`SETTINGS_FILE`] that change from node to node and from start to start.
pub struct Settings<'a> {
    /// TCP port.
    pub port: u16,
    /// Directory of the Unix-domain socket.
    pub socket_dir: &'a Path,
    /// `fsync` (off only for throw-away test clusters).
    pub fsync: bool,
}

/// Renders [`SETTINGS_FILE`].
pub fn render_settings(settings: &Settings<'_>) -> String {
    let fsync = if settings.fsync { "on" } else { "off" };
    format!(
        "# Written by understudy before every start; edits are overwritten.\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = {socket_dir}\n\
         wal_level = replica\n\
         max_wal_senders = 10\n\
         max_replication_slots = 10\n\
         hot_standby = on\n\
         wal_log_hints = on\n\
         max_connections = 300\n\
         fsync = {fsync}\n\
         logging_collector = off\n\
         log_destination = 'stderr'\n\
         log_line_prefix = '%m [%p] %q%u@%d '\n",
        port = settings.port,
        socket_dir = conf_quote(&settings.socket_dir.to_string_lossy()),
    )
}

/// Renders `pg_hba.conf`: password authentication only, loopback only.
pub fn render_hba(method: HostAuth) -> String {
    let method = method.as_str();
    format!(
        "# Written by understudy: loopback only, password authentication.\n\
         local all all {method}\n\
         host all all 127.0.0.1/32 {method}\n\
         host replication all 127.0.0.1/32 {method}\n"
    )
}

/// Makes `postgresql.conf` of `data_dir` include [`SETTINGS_FILE`] (once).
pub fn include_settings(run_as: &RunAs, data_dir: &Path) -> Result<()> {
    let path = data_dir.join("postgresql.conf");
    let mut text = std::fs::read_to_string(&path)
        .map_err(ClusterError::io(format!("reading {}", path.display())))?;
    if text.lines().any(|line| line.trim() == INCLUDE_LINE) {
        return Ok(());
    }
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# Settings managed by understudy.\n");
    text.push_str(INCLUDE_LINE);
    text.push('\n');
    run_as.write_file(&path, text.as_bytes(), 0o600)
}

/// Points a standby at its primary: replaces `primary_conninfo` and `primary_slot_name`
/// in `postgresql.auto.conf` (read after every other settings file).
pub fn write_primary_conninfo(
    run_as: &RunAs,
    data_dir: &Path,
    conninfo: &str,
    slot: &str,
) -> Result<()> {
    let path = data_dir.join("postgresql.auto.conf");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(ClusterError::io(format!("reading {}", path.display()))(e)),
    };
    let mut out: String = text
        .lines()
        .filter(|line| {
            let key = line.trim_start();
            !(key.starts_with("primary_conninfo") || key.starts_with("primary_slot_name"))
        })
        .flat_map(|line| [line, "\n"])
        .collect();
    out.push_str(&format!("primary_conninfo = {}\n", conf_quote(conninfo)));
    out.push_str(&format!("primary_slot_name = {}\n", conf_quote(slot)));
    run_as.write_file(&path, out.as_bytes(), 0o600)
}

/// Quotes a value for a PostgreSQL settings file.
pub fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// Quotes a value for a libpq connection string.
pub fn conninfo_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Escapes a field of a `.pgpass` line.
pub fn pgpass_escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace(':', "\\:")
}

/// A file holding a secret for one command, readable by the PostgreSQL user only, removed
/// when dropped.
pub struct SecretFile {
    path: PathBuf,
}

impl SecretFile {
    /// Writes `contents` to `path` with mode 0600, owned by `run_as`.
    pub fn create(run_as: &RunAs, path: PathBuf, contents: &str) -> Result<SecretFile> {
        run_as.write_file(&path, contents.as_bytes(), 0o600)?;
        Ok(SecretFile { path })
    }

    /// Where the secret is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The current length of `log` (0 when missing), to read what a command adds after it.
pub fn log_len(log: &Path) -> u64 {
    std::fs::metadata(log).map(|m| m.len()).unwrap_or(0)
}

/// The last `lines` lines written to `log` at or after byte `since`; the last lines of the
/// whole file when nothing was written since.
pub fn log_tail(log: &Path, since: u64, lines: usize) -> String {
    let read_from = |offset: u64| -> Option<String> {
        let mut file = std::fs::File::open(log).ok()?;
        let len = file.metadata().ok()?.len();
        // Read at most the last 64 KiB: enough for any useful tail.
        let start = offset.max(len.saturating_sub(64 * 1024));
        file.seek(SeekFrom::Start(start)).ok()?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf).into_owned())
    };
    let text = match read_from(since) {
        Some(text) if !text.trim().is_empty() => text,
        _ => read_from(0).unwrap_or_default(),
    };
    let all: Vec<&str> = text.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    if tail.is_empty() {
        "(log is empty)".to_string()
    } else {
        tail.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(conf_quote("a'b\\c"), "'a''b\\\\c'");
        assert_eq!(conninfo_quote("p'w\\"), "'p\\'w\\\\'");
        assert_eq!(pgpass_escape("a:b\\"), "a\\:b\\\\");
    }

    #[test]
    fn settings_name_port_and_socket_dir() {
        let text = render_settings(&Settings {
            port: 6000,
            socket_dir: Path::new("/tmp/s'ock"),
            fsync: false,
        });
        assert!(text.contains("port = 6000\n"));
        assert!(text.contains("unix_socket_directories = '/tmp/s''ock'\n"));
        assert!(text.contains("fsync = off\n"));
        assert!(text.contains("wal_level = replica\n"));
    }

    #[test]
    fn conninfo_rewrite_replaces_previous_values() {
        let run_as = RunAs::current().expect("current user");
        let dir = tempfile::tempdir().expect("tempdir");
        let auto = dir.path().join("postgresql.auto.conf");
        std::fs::write(
            &auto,
            "# keep\nprimary_conninfo = 'port=1'\nwork_mem = '8MB'\n",
        )
        .expect("write");
        write_primary_conninfo(&run_as, dir.path(), "port=2", "slot_a").expect("rewrite");
        write_primary_conninfo(&run_as, dir.path(), "port=3", "slot_b").expect("rewrite");
        let text = std::fs::read_to_string(&auto).expect("read");
        assert_eq!(
            text,
            "# keep\nwork_mem = '8MB'\nprimary_conninfo = 'port=3'\nprimary_slot_name = 'slot_b'\n"
        );
    }

    #[test]
    fn log_tail_prefers_new_output() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("x.log");
        std::fs::write(&log, "old 1\nold 2\n").expect("write");
        let since = log_len(&log);
        assert_eq!(log_tail(&log, since, 5), "old 1\nold 2");
        std::fs::write(&log, "old 1\nold 2\nnew 1\nnew 2\nnew 3\n").expect("write");
        assert_eq!(log_tail(&log, since, 2), "new 2\nnew 3");
        assert_eq!(
            log_tail(&dir.path().join("missing"), 0, 2),
            "(log is empty)"
        );
    }
}
