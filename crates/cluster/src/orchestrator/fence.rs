//! Fencing a failed primary before its standby is promoted: SIGKILL to every process
//! whose working directory is the old primary's data directory — the postmaster and its
//! backends, including backends orphaned by a postmaster that already died (they can
//! still commit) and processes frozen with SIGSTOP (SIGKILL ends them too; SIGCONT is sent
//! after it for good measure) — until a scan finds no process it has not sent SIGKILL.
//!
//! It does not wait for them to be gone. A process with SIGKILL queued never runs its
//! own code again: the kernel ends it before it could return to user space, so it can
//! neither commit nor answer anyone. What is left is the kernel unmapping its memory,
//! several ms of CPU per backend (the shared buffers, see
//! `crate::node::shared_memory`), which the promotion need not wait for. Whoever uses
//! the data directory next (the rebuild, by starting or recloning the node) waits until
//! no process of it is left.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::process;

/// Pause before sending SIGKILL again to a process that refused it.
const RETRY: Duration = Duration::from_millis(5);

/// What fencing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fenced {
    /// Distinct processes that were sent SIGKILL.
    pub killed: Vec<i32>,
}

/// Sends SIGKILL to every process of `data_dir` until none appears that was not sent it
/// (a postmaster killed while forking may leave a child). Fails when processes keep
/// appearing for `wait`; the caller must then not promote anything.
pub(super) async fn fence(data_dir: &Path, wait: Duration) -> Result<Fenced, String> {
    let dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || fence_blocking(&dir, wait))
        .await
        .map_err(|e| format!("fencing task failed: {e}"))?
}

fn fence_blocking(dir: &Path, wait: Duration) -> Result<Fenced, String> {
    let deadline = Instant::now() + wait;
    let mut killed: Vec<i32> = Vec::new();
    loop {
        // The postmaster first, so that it cannot start new children meanwhile.
        let mut pids: Vec<i32> = process::live_postmaster_pid(dir).into_iter().collect();
        pids.extend(process::processes_in_dir(dir));
        let mut seen = HashSet::new();
        pids.retain(|pid| seen.insert(*pid) && !killed.contains(pid) && process::is_alive(*pid));
        if pids.is_empty() {
            return Ok(Fenced { killed });
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "processes {pids:?} of {} could not be sent SIGKILL, or keep appearing, \
                 after {} ms",
                dir.display(),
                wait.as_millis()
            ));
        }
        let mut refused = false;
        for pid in pids {
            match process::signal(pid, Signal::SIGKILL) {
                Ok(()) => {
                    let _ = process::signal(pid, Signal::SIGCONT);
                    killed.push(pid);
                }
                // Not sent (no permission): it may still run, so it is not fenced;
                // tried again until the deadline.
                Err(_) => refused = true,
            }
        }
        if refused {
            std::thread::sleep(RETRY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn kills_running_and_stopped_processes_of_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut children: Vec<std::process::Child> = (0..2)
            .map(|_| {
                std::process::Command::new("sleep")
                    .arg("60")
                    .current_dir(dir.path())
                    .spawn()
                    .expect("spawn sleep")
            })
            .collect();
        let stopped = children[1].id() as i32;
        process::signal(stopped, Signal::SIGSTOP).expect("SIGSTOP");
        let fenced = fence(dir.path(), Duration::from_secs(10))
            .await
            .expect("fenced");
        let mut killed = fenced.killed.clone();
        killed.sort();
        let mut expected: Vec<i32> = children.iter().map(|c| c.id() as i32).collect();
        expected.sort();
        assert_eq!(killed, expected);
        for child in &mut children {
            let status = child.wait().expect("wait");
            assert!(!status.success(), "killed, not exited");
        }
        assert!(process::processes_in_dir(dir.path()).is_empty());
    }
}
