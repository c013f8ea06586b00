//! Finding the programs the benchmark drives, before anything is started: `pgbench`
//! (next to the PostgreSQL server programs, or on `PATH`) and `pgbouncer` (on `PATH` or
//! in `/usr/sbin`), with their versions for the report.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use understudy_cluster::PgBinaries;

use super::error::BenchError;

/// Where Debian installs PgBouncer (not on a non-root user's `PATH`).
const PGBOUNCER_SBIN: &str = "/usr/sbin/pgbouncer";

/// The located programs.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `pgbench`.
    pub pgbench: PathBuf,
    /// Its version, e.g. "15.18 (Debian 15.18-0+deb12u1)".
    pub pgbench_version: String,
    /// `pgbouncer`.
    pub pgbouncer: PathBuf,
    /// Its version, e.g. "1.18.0".
    pub pgbouncer_version: String,
}

/// Finds both programs and asks them for their versions.
pub async fn locate() -> Result<Tools, BenchError> {
    let pgbench = find_pgbench()?;
    let pgbouncer = find_pgbouncer()?;
    let pgbench_version = version(&pgbench, "pgbench (PostgreSQL)").await?;
    let pgbouncer_version = version(&pgbouncer, "PgBouncer").await?;
    Ok(Tools {
        pgbench,
        pgbench_version,
        pgbouncer,
        pgbouncer_version,
    })
}

fn find_pgbench() -> Result<PathBuf, BenchError> {
    let bundled = PgBinaries::locate()
        .ok()
        .map(|bins| bins.program("pgbench"));
    if let Some(path) = bundled.as_deref().filter(|path| is_executable(path)) {
        return Ok(path.to_path_buf());
    }
    if let Some(path) = find_on_path("pgbench") {
        return Ok(path);
    }
    let searched = match bundled {
        Some(path) => format!("looked at {} and on PATH", path.display()),
        None => "looked in the PostgreSQL bin directory and on PATH".to_string(),
    };
    Err(BenchError::ToolMissing {
        program: "pgbench",
        searched,
        package: "postgresql-15",
    })
}

fn find_pgbouncer() -> Result<PathBuf, BenchError> {
    if let Some(path) = find_on_path("pgbouncer") {
        return Ok(path);
    }
    let sbin = Path::new(PGBOUNCER_SBIN);
    if is_executable(sbin) {
        return Ok(sbin.to_path_buf());
    }
    Err(BenchError::ToolMissing {
        program: "pgbouncer",
        searched: format!("looked on PATH and at {PGBOUNCER_SBIN}"),
        package: "pgbouncer",
    })
}

/// The first executable file called `name` in a `PATH` directory.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The first line of `program --version`, without `prefix` when it starts with it.
async fn version(program: &Path, prefix: &str) -> Result<String, BenchError> {
    let output = tokio::process::Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(BenchError::io(format!(
            "running {} --version",
            program.display()
        )))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(parse_version(&text, prefix))
}

/// The first non-empty line of `text`, without `prefix`; "unknown" when there is none.
fn parse_version(text: &str, prefix: &str) -> String {
    let line = text.lines().map(str::trim).find(|line| !line.is_empty());
    match line {
        Some(line) => line.strip_prefix(prefix).unwrap_or(line).trim().to_string(),
        None => "unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_lose_the_program_name() {
        assert_eq!(
            parse_version(
                "pgbench (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n",
                "pgbench (PostgreSQL)"
            ),
            "15.18 (Debian 15.18-0+deb12u1)"
        );
        assert_eq!(
            parse_version(
                "PgBouncer 1.18.0\nlibevent 2.1.12-stable\nadns: c-ares 1.18.1\n",
                "PgBouncer"
            ),
            "1.18.0"
        );
        assert_eq!(parse_version("", "PgBouncer"), "unknown");
    }

    #[test]
    fn missing_pgbouncer_says_how_to_install_it() {
        let err = BenchError::ToolMissing {
            program: "pgbouncer",
            searched: format!("looked on PATH and at {PGBOUNCER_SBIN}"),
            package: "pgbouncer",
        };
        assert!(err
            .to_string()
            .starts_with("pgbouncer not found (looked on PATH and at /usr/sbin/pgbouncer)"));
        assert!(err
            .to_string()
            .ends_with("install it with `apt-get install -y pgbouncer`"));
    }
}
