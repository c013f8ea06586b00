//! [`RunProcess`]: the `understudy run` binary as a child process, for tests
//! that need what only a process has: signals (SIGTERM, SIGHUP), its log
//! output, its exit status, its memory and descriptors, its metrics.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::{free_port, understudy_binary};

/// How long `understudy run` may take to print its ready line.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// A running `understudy run`; killed when dropped.
pub struct RunProcess {
    child: Child,
    output: Arc<Mutex<String>>,
    /// Port clients connect to.
    pub proxy_port: u16,
    /// Port of the admin endpoint.
    pub admin_port: u16,
    _dir: tempfile::TempDir,
}

impl RunProcess {
    /// Starts `understudy run` with `config` (TOML without `[proxy] listen`
    /// and `[admin] listen`, which are added on free ports), logging at
    /// `log_level`, and waits for its ready line.
    pub async fn start(config: &str, log_level: &str) -> RunProcess {
        let proxy_port = free_port();
        let admin_port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("understudy.toml");
        std::fs::write(&path, config).expect("write the config");
        let mut child = command(&path, proxy_port, admin_port, log_level)
            .spawn()
            .expect("start understudy run");
        let output = Arc::new(Mutex::new(String::new()));
        collect(child.stderr.take().expect("stderr"), Arc::clone(&output));
        let stdout = child.stdout.take().expect("stdout");
        let seen = Arc::clone(&output);
        let ready = tokio::time::timeout(READY_DEADLINE, async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let ready = line.starts_with("ready:");
                push_line(&seen, &line);
                if ready {
                    collect_lines(lines, seen);
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        let run = RunProcess {
            child,
            output,
            proxy_port,
            admin_port,
            _dir: dir,
        };
        assert!(ready, "understudy run did not get ready: {}", run.output());
        run
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.id().expect("the process runs") as i32
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid()), signal).expect("signal understudy run");
    }

    /// Everything the process printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        self.output.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Waits for the process to exit, at most `limit`.
    pub async fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// True while the process has not exited.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("the proxy process is alive");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("a VmRSS line")
    }

    /// Open file descriptors (sockets included).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("the proxy process is alive")
            .count()
    }

    /// The value of metric `name` on the admin endpoint.
    pub async fn metric(&self, name: &str) -> u64 {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.admin_port))
            .await
            .expect("connect to the admin endpoint");
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await
            .expect("send the request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read the response");
        response
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} in {response}"))
    }
}

impl Drop for RunProcess {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

fn command(config: &Path, proxy_port: u16, admin_port: u16, log_level: &str) -> Command {
    let mut command = Command::new(understudy_binary());
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{proxy_port}"))
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{admin_port}"))
        .env("UNDERSTUDY_LOG", log_level)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

fn push_line(output: &Mutex<String>, line: &str) {
    if let Ok(mut output) = output.lock() {
        output.push_str(line);
        output.push('\n');
    }
}

fn collect(stream: impl AsyncRead + Unpin + Send + 'static, output: Arc<Mutex<String>>) {
    collect_lines(BufReader::new(stream).lines(), output);
}

fn collect_lines<R: AsyncRead + Unpin + Send + 'static>(
    mut lines: tokio::io::Lines<BufReader<R>>,
    output: Arc<Mutex<String>>,
) {
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            push_line(&output, &line);
        }
    });
}

/// The `[auth]` and `[[servers]]` of a config for `understudy run` in front
/// of `cluster` (primary first).
pub fn servers_config(cluster: &understudy_testkit::TestCluster) -> String {
    let mut config = format!(
        "[auth]\nauth_user = \"{}\"\nauth_password = \"{}\"\n",
        understudy_testkit::SUPERUSER,
        understudy_testkit::PASSWORD
    );
    for (i, node) in cluster.nodes().iter().enumerate() {
        config.push_str(&format!(
            "[[servers]]\nname = \"n{i}\"\nhost = \"127.0.0.1\"\nport = {}\n",
            node.port()
        ));
    }
    config
}
