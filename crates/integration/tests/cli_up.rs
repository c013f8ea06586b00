//! The `understudy` binary end to end: `up` prints a URI that psql and
//! pgbench use, `status` reports live nodes, a second `up` on the same
//! directory is refused, SIGTERM stops everything, `run` rejects an
//! unknown configuration key with exit code 2, and `up --rules` with the
//! shipped example masks, refuses and holds (`understudy maintenance`).
//!
//! The binary is the one built next to this test (`target/<profile>/understudy`):
//! build it first with `cargo build -p understudy` (or `cargo build --bins`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use understudy_integration::understudy_testkit::understudy_cluster::{process, StopMode};
use understudy_integration::understudy_testkit::wait_until;

const PSQL: &str = "/usr/bin/psql";
const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";
/// How long `up` may take to print its URI (initdb, base backup, two starts).
const UP_DEADLINE: Duration = Duration::from_secs(90);

fn binary() -> PathBuf {
    understudy_integration::understudy_binary()
}

fn free_port() -> u16 {
    understudy_integration::free_port()
}

/// True when /proc shows `pid` as a live (not zombie) process.
fn alive(pid: i64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | Some("x"))
        }
        Err(_) => false,
    }
}

/// A working directory under /tmp that the PostgreSQL user can traverse.
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("understudy-cli-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Collects a child's stderr in the background, for failure messages.
fn collect(mut stderr: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

/// A running `understudy up`. Dropping it stops it (SIGTERM, then SIGKILL
/// and a stop of its servers by pid if it does not exit).
struct Up {
    child: Child,
    _stdout: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    dir: PathBuf,
    port: u16,
    uri: String,
}

impl Up {
    /// Starts `understudy up` on `dir` and waits for its `ready:` line.
    async fn start(dir: &Path) -> Up {
        Up::start_with(dir, &[]).await
    }

    /// [`Up::start`] with more arguments for `up`.
    async fn start_with(dir: &Path, extra: &[&str]) -> Up {
        let port = free_port();
        let admin_port = free_port();
        let mut child = up_command(dir, port, admin_port)
            .args(extra)
            .spawn()
            .expect("starting understudy up");
        let stderr = collect(child.stderr.take().unwrap());
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(UP_DEADLINE, async {
            while let Some(line) = stdout.next_line().await.unwrap() {
                if let Some(uri) = line.strip_prefix("ready: ") {
                    return Some(uri.to_owned());
                }
            }
            None
        })
        .await;
        let mut up = Up {
            child,
            _stdout: stdout,
            stderr,
            dir: dir.to_path_buf(),
            port,
            uri: String::new(),
        };
        match ready {
            Ok(Some(uri)) => up.uri = uri,
            Ok(None) => panic!("understudy up ended without `ready:`: {}", up.stderr()),
            Err(_) => panic!("no `ready:` line within {UP_DEADLINE:?}: {}", up.stderr()),
        }
        up
    }

    fn pid(&self) -> i32 {
        self.child.id().expect("the child runs") as i32
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for the process to exit.
    async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "understudy up did not exit within {timeout:?}: {}",
                self.stderr()
            ),
        }
    }

    /// `understudy status --dir … --json`, parsed.
    async fn status(&self) -> Value {
        let out = run(Command::new(binary())
            .args(["status", "--json", "--dir"])
            .arg(&self.dir))
        .await;
        assert!(out.status.success(), "status failed: {}", out.stderr);
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {}", out.stdout))
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let Some(pid) = self.child.id() else {
            return;
        };
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        let _ = self.child.try_wait();
        if let Some(root) = data_root(&self.dir) {
            for node in ["primary", "standby"] {
                process::stop_dir_blocking(
                    &root.join(node),
                    StopMode::Immediate.signal(),
                    Duration::from_secs(5),
                );
            }
        }
    }
}

fn up_command(dir: &Path, port: u16, admin_port: u16) -> Command {
    let mut command = Command::new(binary());
    command
        .arg("up")
        .arg("--dir")
        .arg(dir)
        .args([
            "--port",
            &port.to_string(),
            "--admin-port",
            &admin_port.to_string(),
        ])
        .env("UNDERSTUDY_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The `data_root` recorded in `dir/state.toml`.
fn data_root(dir: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(dir.join("state.toml")).ok()?;
    text.lines()
        .find_map(|line| line.trim().strip_prefix("data_root = "))
        .map(|v| PathBuf::from(v.trim_matches('"')))
}

struct Output {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs a command to completion (60 s at most).
async fn run(command: &mut Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{command:?} did not finish within 60 s"))
        .unwrap();
    Output {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

async fn psql_select_1(uri: &str) -> Output {
    run(Command::new(PSQL).args(["-X", "-At", "-d", uri, "-c", "select 1"])).await
}

/// Postmaster pids of the nodes in a status document, by role.
fn node_pids(status: &Value) -> Vec<(String, i64)> {
    status["nodes"]
        .as_array()
        .expect("a nodes array")
        .iter()
        .map(|n| {
            (
                n["role"].as_str().unwrap_or("?").to_owned(),
                n["pid"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_prints_a_uri_that_psql_and_pgbench_use() {
    let dir = open_dir();
    let up = Up::start(dir.path()).await;
    assert!(up.uri.starts_with("postgresql://"), "{}", up.uri);
    assert!(
        up.uri.contains(&format!("@127.0.0.1:{}/", up.port)),
        "{}",
        up.uri
    );
    let out = psql_select_1(&up.uri).await;
    assert!(out.status.success(), "psql: {}", out.stderr);
    assert_eq!(out.stdout.trim(), "1");

    let init = run(Command::new(PGBENCH).args(["-i", "-s", "1", &up.uri])).await;
    assert!(init.status.success(), "pgbench -i: {}", init.stderr);
    for mode in ["extended", "prepared"] {
        let bench =
            run(Command::new(PGBENCH).args(["-M", mode, "-T", "2", "-c", "4", "-j", "2", &up.uri]))
                .await;
        assert!(
            bench.status.success(),
            "pgbench -M {mode} ({}): {} {}",
            bench.status,
            bench.stdout,
            bench.stderr
        );
        assert!(
            bench.stdout.contains("number of failed transactions: 0 "),
            "pgbench -M {mode}: {}",
            bench.stdout
        );
        let processed = bench
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
            .and_then(|v| v.split('/').next())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        assert!(
            processed > 0,
            "pgbench -M {mode} processed nothing: {}",
            bench.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_tls_with_the_certificate_authority_it_made() {
    let dir = open_dir();
    let up = Up::start(dir.path()).await;
    let ca = up.dir.join("tls").join("ca.crt");
    assert!(ca.is_file(), "up wrote {}", ca.display());
    for tls in [
        "sslmode=require".to_owned(),
        format!("sslmode=verify-full&sslrootcert={}", ca.display()),
    ] {
        for host in ["127.0.0.1", "localhost"] {
            let uri = up.uri.replace("@127.0.0.1:", &format!("@{host}:")) + "?" + &tls;
            let out =
                run(Command::new(PSQL).args(["-X", "-At", "-d", &uri, "-c", "\\conninfo"])).await;
            assert!(out.status.success(), "psql {uri}: {}", out.stderr);
            assert!(
                out.stdout.contains("SSL connection"),
                "{uri}: {}",
                out.stdout
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_lists_live_primary_and_standby_and_the_proxy_port() {
    let dir = open_dir();
    let up = Up::start(dir.path()).await;
    let status = up.status().await;
    let mut pids = node_pids(&status);
    pids.sort();
    let roles: Vec<&str> = pids.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, vec!["primary", "standby"], "{status}");
    for (role, pid) in &pids {
        assert!(
            alive(*pid),
            "{role} pid {pid} is not a live process: {status}"
        );
    }
    assert_eq!(
        status["proxy"]["port"].as_u64(),
        Some(u64::from(up.port)),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_on_a_port_in_use_fails_at_once_without_creating_servers() {
    let dir = open_dir();
    for taken in ["proxy", "admin"] {
        let occupant = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
        let occupied = occupant.local_addr().expect("its address").port();
        let (port, admin_port) = match taken {
            "proxy" => (occupied, free_port()),
            _ => (free_port(), occupied),
        };
        let started = Instant::now();
        let out = run(&mut up_command(dir.path(), port, admin_port)).await;
        assert!(
            !out.status.success(),
            "up on a {taken} port in use must fail"
        );
        assert!(
            out.stderr
                .contains(&format!("cannot listen on 127.0.0.1:{occupied}")),
            "the error names the {taken} address: {}",
            out.stderr
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "it fails before creating servers, took {:?}",
            started.elapsed()
        );
        let created: Vec<_> = std::fs::read_dir(dir.path())
            .expect("reading the directory")
            .collect();
        assert!(
            created.is_empty(),
            "nothing was created under {}: {created:?}",
            dir.path().display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_up_on_the_same_dir_fails_without_disturbing_the_first() {
    let dir = open_dir();
    let up = Up::start(dir.path()).await;
    let before = node_pids(&up.status().await);

    let started = Instant::now();
    let second = run(&mut up_command(dir.path(), free_port(), free_port())).await;
    assert!(
        !second.status.success(),
        "the second up must fail: {}",
        second.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it must fail quickly, took {:?}",
        started.elapsed()
    );
    let message = second.stderr.to_lowercase();
    assert!(
        message.contains("lock") || message.contains("another understudy"),
        "the error names the lock or the other instance: {}",
        second.stderr
    );

    // The first instance is untouched.
    assert_eq!(node_pids(&up.status().await), before);
    for (_, pid) in &before {
        assert!(alive(*pid));
    }
    let out = psql_select_1(&up.uri).await;
    assert!(
        out.status.success(),
        "psql after the second up: {}",
        out.stderr
    );
    assert_eq!(out.stdout.trim(), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_up_and_its_postmasters() {
    let dir = open_dir();
    let mut up = Up::start(dir.path()).await;
    let pids = node_pids(&up.status().await);
    assert_eq!(pids.len(), 2);
    for (_, pid) in &pids {
        assert!(alive(*pid));
    }
    let instance_file = dir.path().join("instance.json");
    let instance: Value =
        serde_json::from_str(&std::fs::read_to_string(&instance_file).expect("instance.json"))
            .expect("instance JSON");
    let admin = instance["admin"]
        .as_str()
        .expect("admin address")
        .to_owned();
    kill(Pid::from_raw(up.pid()), Signal::SIGTERM).unwrap();
    // Once the instance file is gone, the admin port is free: a new `up` may start.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while instance_file.exists() {
        assert!(std::time::Instant::now() < deadline, "instance.json stays");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        tokio::net::TcpStream::connect(&admin).await.is_err(),
        "the admin endpoint {admin} still listens after instance.json was removed"
    );
    let status = up.wait(Duration::from_secs(60)).await;
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {}",
        up.stderr()
    );
    for (role, pid) in &pids {
        assert!(!alive(*pid), "{role} postmaster {pid} survived the stop");
    }
    let out = psql_select_1(&up.uri).await;
    assert!(
        !out.status.success(),
        "nothing listens on the proxy port any more"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_works_from_a_0700_directory() {
    let dir = tempfile::Builder::new()
        .prefix("understudy-private-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in("/tmp")
        .unwrap();
    let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "like mktemp -d");
    let root = {
        let mut up = Up::start(dir.path()).await;
        let out = psql_select_1(&up.uri).await;
        assert!(out.status.success(), "psql: {}", out.stderr);
        assert_eq!(out.stdout.trim(), "1");
        kill(Pid::from_raw(up.pid()), Signal::SIGTERM).unwrap();
        assert_eq!(
            up.wait(Duration::from_secs(60)).await.code(),
            Some(0),
            "{}",
            up.stderr()
        );
        data_root(dir.path())
    };
    // The data may live outside the private directory; remove it too.
    if let Some(root) = root {
        if !root.starts_with(dir.path()) {
            let gone = wait_until(Duration::from_secs(10), || async {
                process::processes_in_dir(&root).is_empty()
            })
            .await;
            assert!(gone, "servers of {} still running", root.display());
            std::fs::remove_dir_all(&root).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_an_unknown_config_key_exits_2_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("understudy.toml");
    std::fs::write(
        &config,
        "[proxy]\nlisten = \"127.0.0.1:0\"\nbogus_setting = 1\n\n\
         [[servers]]\nname = \"pg1\"\nhost = \"127.0.0.1\"\nport = 5432\n",
    )
    .unwrap();
    let out = run(Command::new(binary())
        .arg("run")
        .arg("--config")
        .arg(&config))
    .await;
    assert_eq!(out.status.code(), Some(2), "exit code: {}", out.stderr);
    assert!(
        out.stderr.contains("bogus_setting"),
        "stderr names the key: {}",
        out.stderr
    );
}

/// psql with `sql` on `uri`, errors with their SQLSTATE.
async fn psql(uri: &str, sql: &str) -> Output {
    run(Command::new(PSQL).args(["-X", "-At", "-v", "VERBOSITY=verbose", "-d", uri, "-c", sql]))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_the_example_rules_masks_refuses_and_holds() {
    let dir = open_dir();
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/rules.toml");
    let rules = rules.to_str().unwrap();
    let up = Up::start_with(dir.path(), &["--rules", rules]).await;
    let setup = psql(
        &up.uri,
        "CREATE TABLE t (id int, card_number text); \
         INSERT INTO t VALUES (1, '4111111111111111'); \
         CREATE TABLE salaries (amount int); \
         CREATE ROLE reporting LOGIN PASSWORD 'reporting-pw'; \
         GRANT SELECT ON t, salaries TO reporting;",
    )
    .await;
    assert!(setup.status.success(), "{}", setup.stderr);
    for sql in [
        "SELECT card_number FROM t",
        "SELECT card_number AS x FROM t",
        "SELECT upper(card_number) FROM t",
    ] {
        let out = psql(&up.uri, sql).await;
        assert_eq!(
            out.stdout.trim(),
            "************1111",
            "{sql}: {}",
            out.stderr
        );
    }
    let out = psql(&up.uri, "COPY t TO STDOUT").await;
    assert_eq!(out.stdout, "1\t************1111\n", "{}", out.stderr);

    let at = up.uri.find('@').unwrap();
    let reporting = format!("postgresql://reporting:reporting-pw{}", &up.uri[at..]);
    let out = psql(&reporting, "SELECT * FROM salaries").await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("42501"), "{}", out.stderr);
    assert!(
        out.stderr.contains("reporting cannot read salaries"),
        "{}",
        out.stderr
    );

    let maintenance = |args: &[&str]| {
        let mut command = Command::new(binary());
        command
            .arg("maintenance")
            .args(args)
            .arg("--dir")
            .arg(dir.path());
        command
    };
    let out = run(&mut maintenance(&["start", "t"])).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("\"t\""), "{}", out.stdout);
    let out = run(&mut maintenance(&["start", "bad name!"])).await;
    assert!(!out.status.success());
    assert!(out.stderr.contains("not a table name"), "{}", out.stderr);
    let out = run(&mut maintenance(&["end"])).await;
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("released"), "{}", out.stdout);
    let out = psql(&up.uri, "SELECT count(*) FROM t").await;
    assert_eq!(out.stdout.trim(), "1", "{}", out.stderr);
}
