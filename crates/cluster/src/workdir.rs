//! The working directory of `understudy up` (default `./.understudy`): its exclusive
//! lock, `credentials.toml` (the generated superuser password), `state.toml` (where the
//! data lives and which node is the primary), and the choice of the data and socket
//! directories that the PostgreSQL user can reach without changing the permissions of the
//! user's folders.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{ClusterError, Result};
use crate::node::Credentials;
use crate::run_as::RunAs;

/// Name of the superuser of the embedded cluster. Not `understudy`: a role
/// of that name finds the commit ledger's schema first in its default
/// `search_path` (`"$user", public`) and would create its tables there.
pub const SUPERUSER: &str = "postgres";
/// Length of the generated password.
const PASSWORD_LEN: usize = 32;

/// The lock of a working directory, held for the life of the process.
#[derive(Debug)]
pub struct DirLock {
    _lock: Flock<File>,
}

/// Takes the exclusive lock `dir/understudy.lock` without waiting, and writes our pid in
/// it. Fails at once with [`ClusterError::Locked`] when another process holds it.
pub fn lock(dir: &Path) -> Result<DirLock> {
    let path = dir.join("understudy.lock");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .map_err(ClusterError::io(format!(
            "opening lock file {}",
            path.display()
        )))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(ClusterError::Locked {
                dir: dir.to_path_buf(),
                pid: text.trim().parse().ok(),
            });
        }
        Err((_, errno)) => {
            return Err(ClusterError::sys(format!("locking {}", path.display()))(
                errno,
            ))
        }
    };
    let context = || format!("writing pid to {}", path.display());
    lock.set_len(0).map_err(ClusterError::io(context()))?;
    lock.rewind().map_err(ClusterError::io(context()))?;
    writeln!(lock, "{}", std::process::id()).map_err(ClusterError::io(context()))?;
    Ok(DirLock { _lock: lock })
}

/// Path of the credentials file of `dir`.
pub fn credentials_path(dir: &Path) -> PathBuf {
    dir.join("credentials.toml")
}

/// Reads `dir/credentials.toml`, or None when it does not exist.
pub fn read_credentials(dir: &Path) -> Result<Option<Credentials>> {
    let path = credentials_path(dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ClusterError::io(format!("reading {}", path.display()))(e)),
    };
    let creds: Credentials = toml::from_str(&text).map_err(|e| ClusterError::InvalidFile {
        path: path.clone(),
        message: e.message().to_string(),
    })?;
    if creds.superuser.is_empty() || creds.password.is_empty() {
        return Err(ClusterError::InvalidFile {
            path,
            message: "superuser and password must not be empty".into(),
        });
    }
    Ok(Some(creds))
}

/// Generates credentials and writes them to `dir/credentials.toml` (mode 0600, owned by
/// the invoking user).
pub fn create_credentials(dir: &Path) -> Result<Credentials> {
    let password: String = rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(PASSWORD_LEN)
        .map(char::from)
        .collect();
    let creds = Credentials {
        superuser: SUPERUSER.to_string(),
        password,
    };
    let path = credentials_path(dir);
    let body = toml::to_string(&creds).map_err(|e| ClusterError::InvalidFile {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let text = format!(
        "# Superuser of the PostgreSQL cluster run by `understudy up`. Keep this file\n\
         # private; the data directories only accept this password.\n{body}"
    );
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(ClusterError::io(format!("creating {}", path.display())))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(ClusterError::io(format!("writing {}", path.display())))?;
    Ok(creds)
}

/// The contents of `state.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Directory holding the data directories of the nodes (`node1`, `node2`).
    pub data_root: PathBuf,
    /// The node that was the primary last (`node1` when not recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary: Option<String>,
}

/// Reads `dir/state.toml`, or None when it does not exist.
pub fn read_state(dir: &Path) -> Result<Option<State>> {
    let path = dir.join("state.toml");
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text)
            .map(Some)
            .map_err(|e| ClusterError::InvalidFile {
                path,
                message: e.message().to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ClusterError::io(format!("reading {}", path.display()))(e)),
    }
}

/// Writes `dir/state.toml`.
pub fn write_state(dir: &Path, state: &State) -> Result<()> {
    let path = dir.join("state.toml");
    let body = toml::to_string(state).map_err(|e| ClusterError::InvalidFile {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let text = format!(
        "# Where `understudy up` keeps the data of this directory, and which node is the\n\
         # primary.\n{body}"
    );
    // Written whole to a temporary file and renamed: a crash never leaves half a file.
    let tmp = dir.join("state.toml.tmp");
    let context = || format!("writing {}", path.display());
    let mut file = std::fs::File::create(&tmp).map_err(ClusterError::io(context()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(ClusterError::io(context()))?;
    std::fs::rename(&tmp, &path).map_err(ClusterError::io(context()))
}

/// Where the data of `dir` should live: `dir/data` when the PostgreSQL user can reach
/// `dir`, else `/var/tmp/understudy-<hash of dir>` (e.g. root working under `/root`).
pub fn default_data_root(dir: &Path, run_as: &RunAs) -> PathBuf {
    if run_as.can_traverse(dir) {
        dir.join("data")
    } else {
        PathBuf::from(format!("/var/tmp/understudy-{}", dir_hash(dir)))
    }
}

/// The short socket directory of `dir` (socket paths are limited to 107 bytes).
pub fn socket_dir(dir: &Path) -> PathBuf {
    PathBuf::from(format!("/tmp/understudy-sock-{}", dir_hash(dir)))
}

/// Makes sure `path` is a real directory owned by the PostgreSQL user with `mode`,
/// creating it when missing. Refuses symlinks and directories of other users, which in
/// shared places like /tmp could be planted by someone else.
pub fn ensure_private_dir(path: &Path, run_as: &RunAs, mode: u32) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => run_as.create_dir(path, mode),
        Err(e) => Err(ClusterError::io(format!("inspecting {}", path.display()))(
            e,
        )),
        Ok(meta) if !meta.is_dir() => Err(ClusterError::UnsafePath {
            path: path.to_path_buf(),
            reason: "it exists and is not a directory (or is a symlink): remove it".into(),
        }),
        Ok(meta) if meta.uid() != run_as.uid() => Err(ClusterError::UnsafePath {
            path: path.to_path_buf(),
            reason: format!(
                "it is owned by uid {}, not by {} (uid {}): remove it",
                meta.uid(),
                run_as.name(),
                run_as.uid()
            ),
        }),
        Ok(_) => Ok(()),
    }
}

/// A stable 64-bit FNV-1a hash of the path, as 16 hex digits.
pub fn dir_hash(dir: &Path) -> String {
    let hash = dir
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_distinguishes_paths() {
        assert_eq!(dir_hash(Path::new("")), "cbf29ce484222325");
        assert_ne!(dir_hash(Path::new("/a")), dir_hash(Path::new("/b")));
    }

    #[test]
    fn credentials_are_generated_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read_credentials(dir.path()).expect("read").is_none());
        let created = create_credentials(dir.path()).expect("create");
        assert_eq!(created.superuser, SUPERUSER);
        assert!(created.password.len() >= 24);
        assert!(created.password.chars().all(|c| c.is_ascii_alphanumeric()));
        let meta = std::fs::metadata(credentials_path(dir.path())).expect("stat");
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_eq!(read_credentials(dir.path()).expect("read"), Some(created));
        assert!(create_credentials(dir.path()).is_err(), "never overwrites");
    }

    #[test]
    fn lock_is_exclusive_and_names_the_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = lock(dir.path()).expect("first lock");
        match lock(dir.path()) {
            Err(ClusterError::Locked { pid, .. }) => {
                assert_eq!(pid, Some(std::process::id() as i32))
            }
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(held);
        lock(dir.path()).expect("lock again after release");
    }

    #[test]
    fn state_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(read_state(dir.path()).expect("read").is_none());
        let state = State {
            data_root: PathBuf::from("/var/tmp/understudy-x"),
            primary: None,
        };
        write_state(dir.path(), &state).expect("write");
        assert_eq!(read_state(dir.path()).expect("read"), Some(state.clone()));
        let state = State {
            primary: Some("node2".into()),
            ..state
        };
        write_state(dir.path(), &state).expect("write");
        assert_eq!(read_state(dir.path()).expect("read"), Some(state));
        assert!(!dir.path().join("state.toml.tmp").exists());
    }
}
