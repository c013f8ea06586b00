//! Which operating-system user runs PostgreSQL, and how commands and files are handed to
//! it. PostgreSQL refuses to run as root: under root the `postgres` system user runs it;
//! under any other user, that user does.

use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid, User};

use crate::error::{ClusterError, Result};

/// The system user that runs PostgreSQL when understudy itself runs as root.
pub const DEFAULT_PG_USER: &str = "postgres";

/// Environment variables of libpq and the server that must not leak into the programs
/// understudy runs: every option is passed explicitly.
const SCRUBBED_ENV: [&str; 12] = [
    "PGDATA",
    "PGHOST",
    "PGHOSTADDR",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGDATABASE",
    "PGOPTIONS",
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSSLMODE",
];

/// The user PostgreSQL programs run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    name: String,
    uid: Uid,
    gid: Gid,
    home: PathBuf,
    /// True when commands must switch to `uid`/`gid` (the current user is root).
    switch: bool,
}

impl RunAs {
    /// The current user when it is not root; the `postgres` system user when it is.
    pub fn detect() -> Result<RunAs> {
        if Uid::effective().is_root() {
            RunAs::user(DEFAULT_PG_USER)
        } else {
            RunAs::current()
        }
    }

    /// The current (effective) user; no switching.
    pub fn current() -> Result<RunAs> {
        let uid = Uid::effective();
        let user = User::from_uid(uid).map_err(ClusterError::sys(format!(
            "looking up the current user (uid {uid})"
        )))?;
        let (name, home) = match user {
            Some(user) => (user.name, user.dir),
            None => (uid.to_string(), PathBuf::from("/")),
        };
        Ok(RunAs {
            name,
            uid,
            gid: Gid::effective(),
            home,
            switch: false,
        })
    }

    /// The named system user. Switching users requires running as root.
    pub fn user(name: &str) -> Result<RunAs> {
        let user = User::from_name(name)
            .map_err(ClusterError::sys(format!(
                "looking up the system user {name}"
            )))?
            .ok_or_else(|| ClusterError::UserNotFound {
                user: name.to_string(),
            })?;
        let switch = user.uid != Uid::effective();
        Ok(RunAs {
            name: user.name,
            uid: user.uid,
            gid: user.gid,
            home: user.dir,
            switch,
        })
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The user's id.
    pub fn uid(&self) -> u32 {
        self.uid.as_raw()
    }

    /// The user's primary group id.
    pub fn gid(&self) -> u32 {
        self.gid.as_raw()
    }

    /// True when commands run as a user other than the current one.
    pub fn switches_user(&self) -> bool {
        self.switch
    }

    /// Prepares `cmd` to run as this user: uid/gid (when switching), `HOME`, `USER`,
    /// `LOGNAME`, a working directory every user can enter, and no stray libpq variables.
    pub fn apply(&self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        if self.switch {
            // std drops supplementary groups (setgroups(0)) when root sets a uid.
            cmd.uid(self.uid.as_raw()).gid(self.gid.as_raw());
        }
        cmd.env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .current_dir("/");
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
    }

    /// A `tokio` command for `program`, prepared with [`RunAs::apply`].
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
        let mut cmd = std::process::Command::new(program);
        self.apply(&mut cmd);
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(false);
        cmd
    }

    /// Gives `path` to this user (no-op when not switching users).
    pub fn chown(&self, path: &Path) -> Result<()> {
        if !self.switch {
            return Ok(());
        }
        std::os::unix::fs::chown(path, Some(self.uid.as_raw()), Some(self.gid.as_raw())).map_err(
            ClusterError::io(format!("giving {} to user {}", path.display(), self.name)),
        )
    }

    /// Creates `path` (and missing parents) as a directory with `mode`, owned by this user.
    /// Parents that had to be created keep the current user as owner.
    pub fn create_dir(&self, path: &Path, mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(path).map_err(ClusterError::io(format!(
            "creating directory {}",
            path.display()
        )))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(
            ClusterError::io(format!("setting permissions of {}", path.display())),
        )?;
        self.chown(path)
    }

    /// Writes `contents` to `path` with `mode`, owned by this user (readable by it only
    /// when `mode` is 0600). An existing file is replaced.
    pub fn write_file(&self, path: &Path, contents: &[u8], mode: u32) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let context = || format!("writing {}", path.display());
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .map_err(ClusterError::io(context()))?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(ClusterError::io(context()))?;
        self.chown(path)?;
        file.write_all(contents)
            .map_err(ClusterError::io(context()))?;
        file.sync_all().map_err(ClusterError::io(context()))
    }

    /// True when this user can traverse every directory on the way to `path` and `path`
    /// itself (search permission from the owner, group or other bits).
    pub fn can_traverse(&self, path: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        if self.uid.is_root() {
            return true;
        }
        let groups = self.groups();
        path.ancestors().all(|dir| {
            let Ok(meta) = std::fs::metadata(dir) else {
                return false;
            };
            let mode = meta.mode();
            if meta.uid() == self.uid.as_raw() {
                mode & 0o100 != 0
            } else if groups.contains(&meta.gid()) {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            }
        })
    }

    /// The user's primary and supplementary groups.
    fn groups(&self) -> Vec<u32> {
        let fallback = vec![self.gid.as_raw()];
        let Ok(name) = std::ffi::CString::new(self.name.clone()) else {
            return fallback;
        };
        match nix::unistd::getgrouplist(&name, self.gid) {
            Ok(groups) => groups.into_iter().map(Gid::as_raw).collect(),
            Err(_) => fallback,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_never_picks_root() {
        let run_as = RunAs::detect().expect("a user to run PostgreSQL");
        assert_ne!(run_as.uid(), 0);
        assert_eq!(run_as.switches_user(), Uid::effective().is_root());
    }

    #[test]
    fn traverse_follows_permission_bits() {
        use std::os::unix::fs::PermissionsExt;
        let run_as = RunAs::detect().expect("a user to run PostgreSQL");
        assert!(run_as.can_traverse(Path::new("/tmp")));
        if run_as.switches_user() {
            let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
            let inner = dir.path().join("inner");
            std::fs::create_dir(&inner).expect("mkdir");
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
                .expect("chmod");
            assert!(!run_as.can_traverse(&inner), "0700 root dir blocks");
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
                .expect("chmod");
            assert!(run_as.can_traverse(&inner), "o+x opens the way");
        }
    }
}
