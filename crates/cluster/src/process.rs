//! Process facts from `/proc` and signals: whether a pid is alive (zombies count as dead),
//! which processes belong to a data directory (their working directory is inside it, as
//! for every PostgreSQL server process), and the synchronous stop used where no async
//! runtime is available (`Drop`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How often the synchronous waits poll.
const POLL: Duration = Duration::from_millis(10);

/// True when `pid` names a live (non-zombie) process.
pub fn is_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match kill(Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => !is_zombie(pid),
        Err(_) => false,
    }
}

/// True when `/proc` reports `pid` as a zombie (dead, not yet reaped) or dead.
fn is_zombie(pid: i32) -> bool {
    // No /proc entry: the process is gone.
    TaskStat::of(pid).is_none_or(|stat| stat.is_dead())
}

/// True when `pid` is stopped by a signal (SIGSTOP: state `T`) or by a tracer (`t`):
/// alive, but it will not answer anything until it is continued.
pub fn is_stopped(pid: i32) -> bool {
    pid > 0 && TaskStat::of(pid).is_some_and(|stat| matches!(stat.state, 'T' | 't'))
}

/// True when `pid` has begun to exit (the kernel's `PF_EXITING`): killed or ended, it
/// runs none of its own code any more, and is only being torn down. That takes a
/// PostgreSQL process several ms (unmapping the shared memory it touched), during
/// which it is still "alive" for [`is_alive`].
pub fn is_exiting(pid: i32) -> bool {
    TaskStat::of(pid).is_some_and(|stat| stat.is_exiting())
}

/// True when `pid` is alive and has not begun to exit: a process that can still run
/// its own code.
pub fn is_running(pid: i32) -> bool {
    is_alive(pid) && !is_exiting(pid)
}

/// Watches one process through its `/proc/<pid>/stat`, opened once and read again (one
/// `pread`) at each look: cheap enough to look every few ms. The open file stays tied
/// to the process it was opened for: once that process is gone, reads fail, even if
/// its pid is given to another process.
#[derive(Debug)]
pub struct ProcessWatch {
    pid: i32,
    stat: std::fs::File,
}

impl ProcessWatch {
    /// Starts watching `pid`; None when there is no such process.
    pub fn open(pid: i32) -> Option<ProcessWatch> {
        if pid <= 0 {
            return None;
        }
        let stat = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
        Some(ProcessWatch { pid, stat })
    }

    /// The watched pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// True while the process is alive and has not begun to exit (see [`is_running`]).
    pub fn is_running(&self) -> bool {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; TaskStat::PREFIX_LEN];
        let Ok(n) = self.stat.read_at(&mut buf, 0) else {
            return false;
        };
        TaskStat::parse(&buf[..n]).is_some_and(|stat| !stat.is_dead() && !stat.is_exiting())
    }
}

/// CPU time a process has used so far, all threads, in clock ticks (`sysconf(_SC_CLK_TCK)`
/// of them per second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTicks {
    /// User-space time (`utime`).
    pub user: u64,
    /// Kernel time (`stime`).
    pub system: u64,
}

/// The CPU time `pid` has used so far; None when it has no `/proc` entry.
pub fn cpu_ticks(pid: i32) -> Option<CpuTicks> {
    if pid <= 0 {
        return None;
    }
    CpuTicks::parse(&std::fs::read(format!("/proc/{pid}/stat")).ok()?)
}

impl CpuTicks {
    /// `utime` and `stime`: the 12th and 13th fields after the command name.
    fn parse(line: &[u8]) -> Option<CpuTicks> {
        let mut fields = fields_after_name(line)?.skip(11);
        Some(CpuTicks {
            user: fields.next()?.parse().ok()?,
            system: fields.next()?.parse().ok()?,
        })
    }
}

/// The fields of a `/proc/<pid>/stat` line after the command name, from the state on.
/// The name is in parentheses and may contain anything, so fields are counted from the
/// last `)`.
fn fields_after_name(line: &[u8]) -> Option<std::str::SplitAsciiWhitespace<'_>> {
    let after_name = line.iter().rposition(|&b| b == b')')? + 1;
    Some(
        std::str::from_utf8(&line[after_name..])
            .ok()?
            .split_ascii_whitespace(),
    )
}

/// The fields of `/proc/<pid>/stat` this module looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TaskStat {
    /// The one-letter state (`R`, `S`, `D`, `T`, `Z`, ...).
    state: char,
    /// The kernel's task flags (`PF_*`).
    flags: u64,
}

impl TaskStat {
    /// Bytes of `/proc/<pid>/stat` that always hold the flags: the pid, a command name of
    /// at most 15 bytes in parentheses, and six numbers before them.
    const PREFIX_LEN: usize = 256;

    /// The fields of `pid` (one `open` and one `read`), or None when it has no entry.
    fn of(pid: i32) -> Option<TaskStat> {
        use std::io::Read;
        if pid <= 0 {
            return None;
        }
        let mut file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
        let mut buf = [0u8; Self::PREFIX_LEN];
        let n = file.read(&mut buf).ok()?;
        Self::parse(&buf[..n])
    }

    /// Parses the start of a `stat` line: `pid (comm) state ppid pgrp session tty_nr
    /// tpgid flags ...`.
    fn parse(line: &[u8]) -> Option<TaskStat> {
        let mut fields = fields_after_name(line)?;
        let state = fields.next()?.chars().next()?;
        let flags = fields.nth(5)?.parse().ok()?;
        Some(TaskStat { state, flags })
    }

    /// Dead, or a zombie (dead and not yet reaped).
    fn is_dead(self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }

    /// `PF_EXITING`: the process has begun to exit.
    fn is_exiting(self) -> bool {
        /// `PF_EXITING` of the kernel's task flags.
        const PF_EXITING: u64 = 0x4;
        self.flags & PF_EXITING != 0
    }
}

/// The pid in the first line of `data_dir/postmaster.pid`, whether alive or not.
pub fn recorded_postmaster_pid(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// The port recorded in `data_dir/postmaster.pid` (its fourth line).
pub fn recorded_port(data_dir: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().nth(3)?.trim().parse().ok()
}

/// The live postmaster of `data_dir`, if any: the recorded pid must be alive and run in
/// `data_dir` (a recycled pid of an unrelated process does not count).
pub fn live_postmaster_pid(data_dir: &Path) -> Option<i32> {
    let pid = recorded_postmaster_pid(data_dir)?;
    let dir = std::fs::canonicalize(data_dir).ok()?;
    (is_alive(pid) && runs_in(pid, &dir)).then_some(pid)
}

/// True when the working directory of `pid` is `dir` or inside it (`dir` canonical).
fn runs_in(pid: i32, dir: &Path) -> bool {
    std::fs::read_link(format!("/proc/{pid}/cwd"))
        .map(|cwd: PathBuf| cwd.starts_with(dir))
        .unwrap_or(false)
}

/// Every live process whose working directory is `dir` or inside it. PostgreSQL server
/// processes (postmaster, backends, walsender, …) all run in their data directory, so
/// this finds them, including backends orphaned by a killed postmaster.
pub fn processes_in_dir(dir: &Path) -> Vec<i32> {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| runs_in(*pid, &dir))
        .collect()
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: i32, signal: Signal) -> nix::Result<()> {
    match kill(Pid::from_raw(pid), signal) {
        Err(nix::errno::Errno::ESRCH) => Ok(()),
        other => other,
    }
}

/// Stops every process of `data_dir` without an async runtime: `first` to the postmaster
/// (SIGTERM smart, SIGINT fast, SIGQUIT immediate shutdown), then after `grace` SIGKILL to
/// the postmaster and every process still running in the directory, waiting (bounded)
/// until they are gone. Returns true when nothing of `data_dir` is left running.
pub fn stop_dir_blocking(data_dir: &Path, first: Signal, grace: Duration) -> bool {
    if let Some(pid) = live_postmaster_pid(data_dir) {
        let _ = signal(pid, first);
        let deadline = Instant::now() + grace;
        while is_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
    }
    kill_dir_blocking(data_dir, Duration::from_secs(10))
}

/// SIGKILLs the postmaster and every process running in `data_dir`, then waits up to
/// `wait` until all are gone. Returns true when nothing is left.
pub fn kill_dir_blocking(data_dir: &Path, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        let mut pids = processes_in_dir(data_dir);
        if let Some(pid) = live_postmaster_pid(data_dir) {
            pids.push(pid);
        }
        pids.retain(|pid| is_alive(*pid));
        if pids.is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        for pid in pids {
            let _ = signal(pid, Signal::SIGKILL);
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child running `sleep seconds`, and its pid.
    fn spawn_sleep(seconds: u32) -> (std::process::Child, i32) {
        let child = std::process::Command::new("sleep")
            .arg(seconds.to_string())
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        (child, pid)
    }

    /// Waits until `condition` holds, failing the test after 10 s with "never seen `what`".
    fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(Instant::now() < deadline, "never seen {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn a_killed_child_is_exiting_and_a_running_one_is_not() {
        let (mut child, pid) = spawn_sleep(60);
        assert!(!is_exiting(pid));
        signal(pid, Signal::SIGKILL).expect("SIGKILL");
        // Not reaped yet: a zombie has PF_EXITING set for good.
        wait_until("exiting", || is_exiting(pid));
        child.wait().expect("wait");
        assert!(!is_exiting(pid));
        assert!(!is_exiting(i32::MAX));
    }

    #[test]
    fn a_watched_child_stops_running_when_killed_and_stays_so_once_reaped() {
        let (mut child, pid) = spawn_sleep(60);
        let watch = ProcessWatch::open(pid).expect("watch sleep");
        assert_eq!(watch.pid(), pid);
        assert!(watch.is_running());
        assert!(
            watch.is_running(),
            "a second look reads the same file again"
        );
        signal(pid, Signal::SIGKILL).expect("SIGKILL");
        wait_until("exiting", || !watch.is_running());
        child.wait().expect("wait");
        assert!(!watch.is_running());
        assert!(ProcessWatch::open(pid).is_none());
        assert!(ProcessWatch::open(0).is_none());
    }

    #[test]
    fn stat_lines_are_parsed_from_the_last_parenthesis() {
        let line = b"42 (a) S (b)) T 1 42 42 0 -1 4194372 120 0 0 0 1 2 3 4 20 0";
        let stat = TaskStat::parse(line).expect("parses");
        assert_eq!(stat.state, 'T');
        assert_eq!(stat.flags, 4194372);
        assert!(stat.is_exiting());
        assert!(!stat.is_dead());
        let zombie = TaskStat::parse(b"7 (postgres) Z 1 7 7 0 -1 4227084 0").expect("parses");
        assert!(zombie.is_dead());
        assert_eq!(CpuTicks::parse(line), Some(CpuTicks { user: 1, system: 2 }));
        assert_eq!(
            CpuTicks::parse(b"7 (postgres) S 1 7 7 0 -1 4194560 0 0 0 0 5"),
            None
        );
        assert_eq!(TaskStat::parse(b"7 (postgres"), None);
        assert_eq!(TaskStat::parse(b"7 (postgres) S 1 7"), None);
    }

    #[test]
    fn cpu_ticks_of_a_process_only_grow() {
        let me = std::process::id() as i32;
        let before = cpu_ticks(me).expect("own stat");
        let start = Instant::now();
        let mut spins = 0u64;
        while start.elapsed() < Duration::from_millis(30) {
            spins = spins.wrapping_add(std::hint::black_box(1));
        }
        let after = cpu_ticks(me).expect("own stat");
        assert!(spins > 0);
        assert!(after.user >= before.user && after.system >= before.system);
        assert_eq!(cpu_ticks(i32::MAX), None);
        assert_eq!(cpu_ticks(0), None);
    }

    #[test]
    fn own_process_is_alive_and_bogus_pids_are_not() {
        assert!(is_alive(std::process::id() as i32));
        assert!(!is_alive(0));
        assert!(!is_alive(-1));
        assert!(!is_alive(i32::MAX));
    }

    #[test]
    fn reaped_child_is_dead() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id() as i32;
        child.wait().expect("wait");
        assert!(!is_alive(pid));
    }

    #[test]
    fn zombie_counts_as_dead() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let pid = child.id() as i32;
        wait_until("a zombie", || is_zombie(pid));
        assert!(!is_alive(pid), "an exited, unreaped child is not alive");
        child.wait().expect("wait");
    }

    #[test]
    fn stopped_process_is_alive_but_stopped() {
        let (mut child, pid) = spawn_sleep(30);
        assert!(!is_stopped(pid));
        signal(pid, Signal::SIGSTOP).expect("SIGSTOP");
        wait_until("stopped", || is_stopped(pid));
        assert!(is_stopped(pid), "SIGSTOP shows as stopped");
        assert!(is_alive(pid), "a stopped process is alive");
        signal(pid, Signal::SIGKILL).expect("SIGKILL");
        child.wait().expect("wait");
        assert!(!is_stopped(pid));
    }

    #[test]
    fn finds_processes_by_working_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(dir.path())
            .spawn()
            .expect("spawn sleep");
        let pid = child.id() as i32;
        assert_eq!(processes_in_dir(dir.path()), vec![pid]);
        // The killed child stays a zombie until reaped, which counts as gone.
        assert!(kill_dir_blocking(dir.path(), Duration::from_secs(5)));
        assert!(!is_alive(pid));
        child.wait().expect("wait");
        assert!(processes_in_dir(dir.path()).is_empty());
    }
}
