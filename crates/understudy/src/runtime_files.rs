//! `DIR/instance.json`: written by a running `understudy up` so that
//! `understudy status --dir DIR` finds its admin endpoint. Removed on a clean
//! exit; a stale file is harmless (status then reports that nothing answers).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What `status` needs to reach an instance.
#[derive(Debug, Serialize, Deserialize)]
pub struct Instance {
    /// Process id of the instance.
    pub pid: u32,
    /// Client address of the proxy.
    pub proxy: SocketAddr,
    /// Address of the admin endpoint.
    pub admin: SocketAddr,
}

/// Path of the instance file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join("instance.json")
}

/// Writes the instance file.
pub fn write(dir: &Path, instance: &Instance) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(instance).map_err(std::io::Error::other)?;
    std::fs::write(path(dir), json)
}

/// Reads the instance file, if any.
pub fn read(dir: &Path) -> std::io::Result<Instance> {
    let text = std::fs::read_to_string(path(dir))?;
    serde_json::from_str(&text).map_err(std::io::Error::other)
}

/// Removes the instance file.
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_file(path(dir));
}
