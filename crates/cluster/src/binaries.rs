//! Locating the PostgreSQL server programs: `UNDERSTUDY_PG_BIN` when set, otherwise the
//! newest `/usr/lib/postgresql/<N>/bin` that holds every program understudy runs.

use std::path::{Path, PathBuf};

use crate::error::{ClusterError, Result};

/// Environment variable that names the directory of the PostgreSQL server programs.
pub const PG_BIN_ENV: &str = "UNDERSTUDY_PG_BIN";

/// Where Debian and Ubuntu install versioned PostgreSQL server programs.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";

/// The programs a directory must hold to be usable.
const REQUIRED: [&str; 4] = ["initdb", "postgres", "pg_ctl", "pg_basebackup"];

/// A directory holding the PostgreSQL server programs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgBinaries {
    dir: PathBuf,
}

impl PgBinaries {
    /// Finds the programs: `UNDERSTUDY_PG_BIN` if set (and then it must be complete),
    /// else the highest-numbered complete `/usr/lib/postgresql/<N>/bin`.
    pub fn locate() -> Result<PgBinaries> {
        if let Some(dir) = std::env::var_os(PG_BIN_ENV).filter(|v| !v.is_empty()) {
            return PgBinaries::from_dir(PathBuf::from(dir));
        }
        let searched = format!("{DEBIAN_ROOT}/*/bin");
        let entries = match std::fs::read_dir(DEBIAN_ROOT) {
            Ok(entries) => entries,
            Err(_) => return Err(ClusterError::BinariesNotFound { searched }),
        };
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
                Some((version, entry.path().join("bin")))
            })
            .filter(|(_, dir)| missing_program(dir).is_none())
            .collect();
        versions.sort_by_key(|(version, _)| *version);
        match versions.pop() {
            Some((_, dir)) => Ok(PgBinaries { dir }),
            None => Err(ClusterError::BinariesNotFound { searched }),
        }
    }

    /// Uses `dir`, checking that it holds every required program.
    pub fn from_dir(dir: impl Into<PathBuf>) -> Result<PgBinaries> {
        let dir = dir.into();
        match missing_program(&dir) {
            Some(program) => Err(ClusterError::BinaryMissing { dir, program }),
            None => Ok(PgBinaries { dir }),
        }
    }

    /// The directory of the programs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of `initdb`.
    pub fn initdb(&self) -> PathBuf {
        self.dir.join("initdb")
    }

    /// Path of `postgres`.
    pub fn postgres(&self) -> PathBuf {
        self.dir.join("postgres")
    }

    /// Path of `pg_ctl`.
    pub fn pg_ctl(&self) -> PathBuf {
        self.dir.join("pg_ctl")
    }

    /// Path of `pg_basebackup`.
    pub fn pg_basebackup(&self) -> PathBuf {
        self.dir.join("pg_basebackup")
    }

    /// Path of any other program of the same installation (`pg_rewind`, `pgbench`, …).
    pub fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The first required program absent from `dir`, if any.
fn missing_program(dir: &Path) -> Option<&'static str> {
    REQUIRED
        .into_iter()
        .find(|program| !dir.join(program).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_dir_names_the_missing_program() {
        let err = PgBinaries::from_dir("/nonexistent/understudy/bin").unwrap_err();
        assert!(matches!(
            err,
            ClusterError::BinaryMissing {
                program: "initdb",
                ..
            }
        ));
        assert!(err.to_string().contains("UNDERSTUDY_PG_BIN"));
    }

    #[test]
    fn locate_finds_a_complete_directory() {
        let bins = PgBinaries::locate().expect("PostgreSQL server binaries are installed");
        for program in REQUIRED {
            assert!(bins.dir().join(program).is_file(), "{program} present");
        }
    }
}
