//! `EmbeddedCluster` (the cluster of `understudy up`) against real PostgreSQL: first run,
//! the directory lock, shutdown, reuse of data, rebuilding a lost standby, and data
//! placement when the PostgreSQL user cannot reach the directory.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use understudy_cluster::process::{is_alive, is_stopped, processes_in_dir};
use understudy_cluster::{ClusterError, EmbeddedCluster, NodeStatus, Role};

const DEADLINE: Duration = Duration::from_secs(30);

/// A working directory the PostgreSQL user can traverse (like a normal project dir).
fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// Every pid of the cluster: postmasters and the processes running in the data dirs.
fn cluster_pids(cluster: &EmbeddedCluster) -> Vec<i32> {
    let mut pids = Vec::new();
    for node in [&cluster.primary, &cluster.standby] {
        pids.extend(node.postmaster_pid());
        pids.extend(node.processes());
    }
    pids
}

async fn wait_for_row(cluster: &EmbeddedCluster, sql: &str) -> bool {
    let standby = cluster
        .standby
        .connect(&cluster.creds, "postgres")
        .await
        .expect("connect to standby");
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = standby.query_opt(sql, &[]).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The page size of both nodes' shared memory is known, and the advice to reserve
/// huge pages is given exactly when a node is in 4 kB pages, with the number both
/// nodes need. Without huge pages reserved in the kernel (the usual test machine),
/// both must be in 4 kB pages.
async fn check_huge_pages_report(cluster: &EmbeddedCluster, status: &[NodeStatus]) {
    let in_huge: Vec<bool> = status
        .iter()
        .map(|n| n.huge_pages.expect("page size of a running node"))
        .collect();
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("meminfo");
    let reserved = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Total:"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("HugePages_Total");
    if reserved == 0 {
        assert_eq!(in_huge, [false, false]);
    }
    let advice = cluster.huge_pages_advice().await;
    if in_huge.iter().all(|huge| *huge) {
        assert_eq!(advice, None);
        return;
    }
    let mut needed = 0;
    for node in [&cluster.primary, &cluster.standby] {
        let client = node
            .connect(&cluster.creds, "postgres")
            .await
            .expect("connect");
        let row = client
            .query_one("SHOW shared_memory_size_in_huge_pages", &[])
            .await
            .expect("show");
        needed += row.get::<_, String>(0).parse::<u64>().expect("a number");
    }
    let advice = advice.expect("advice for 4 kB pages");
    assert!(
        advice.contains(&format!("vm.nr_hugepages={needed}")),
        "{advice}"
    );
}

#[tokio::test]
async fn first_up_runs_a_streaming_pair_and_shutdown_stops_it() {
    let dir = open_dir();
    let work = dir.path().join("project").join(".understudy");
    let cluster = EmbeddedCluster::up(&work).await.expect("up");
    assert_eq!(cluster.data_root(), work.join("data"));

    let creds_meta = std::fs::metadata(work.join("credentials.toml")).expect("credentials");
    assert_eq!(creds_meta.mode() & 0o777, 0o600);
    assert_eq!(creds_meta.uid(), nix::unistd::Uid::effective().as_raw());
    assert_eq!(cluster.creds.superuser, "postgres");
    assert!(cluster.creds.password.len() >= 24);

    let status = cluster.status().await;
    assert_eq!(status.len(), 2);
    assert_eq!(
        (status[0].name.as_str(), status[0].role),
        ("node1", Role::Primary)
    );
    assert_eq!(
        (status[1].name.as_str(), status[1].role),
        ("node2", Role::Standby)
    );
    let state = std::fs::read_to_string(work.join("state.toml")).expect("state.toml");
    assert!(state.contains("primary = \"node1\""), "{state}");
    for node in &status {
        let pid = node.pid.expect("postmaster pid");
        assert!(is_alive(pid));
        assert_ne!(node.port, 0);
    }
    assert!(status[1].lag_bytes.is_some(), "standby lag measured");
    assert_eq!(status[0].lag_bytes, None);
    check_huge_pages_report(&cluster, &status).await;

    let primary = cluster
        .primary
        .connect(&cluster.creds, "postgres")
        .await
        .expect("connect");
    primary
        .batch_execute("CREATE TABLE replicated (v int); INSERT INTO replicated VALUES (1)")
        .await
        .expect("write");
    assert!(
        wait_for_row(&cluster, "SELECT v FROM replicated").await,
        "replicated"
    );

    let pids = cluster_pids(&cluster);
    assert!(pids.len() >= 4, "{pids:?}");
    let data_dirs = [
        cluster.primary.data_dir().to_path_buf(),
        cluster.standby.data_dir().to_path_buf(),
    ];
    cluster.shutdown().await.expect("shutdown");
    let alive: Vec<i32> = pids.into_iter().filter(|pid| is_alive(*pid)).collect();
    assert!(alive.is_empty(), "alive after shutdown: {alive:?}");
    for data_dir in &data_dirs {
        assert!(
            processes_in_dir(data_dir).is_empty(),
            "nothing runs in {}",
            data_dir.display()
        );
    }
}

#[tokio::test]
async fn second_up_fails_at_once_while_the_first_holds_the_lock() {
    let dir = open_dir();
    let work = dir.path().join(".understudy");
    let cluster = EmbeddedCluster::up(&work).await.expect("up");
    let before = snapshot(&work);
    let pids = cluster_pids(&cluster);

    let started = Instant::now();
    let err = EmbeddedCluster::up(&work)
        .await
        .expect_err("second up refused");
    assert!(started.elapsed() < Duration::from_secs(5), "fails at once");
    match &err {
        ClusterError::Locked { pid, .. } => assert_eq!(*pid, Some(std::process::id() as i32)),
        other => panic!("expected Locked, got {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("another understudy is running on"),
        "{message}"
    );
    assert!(
        message.contains(&format!("(pid {})", std::process::id())),
        "{message}"
    );

    assert_eq!(snapshot(&work), before, "the refused up touched nothing");
    assert!(
        pids.iter().all(|pid| is_alive(*pid)),
        "the first cluster still runs"
    );
    assert_eq!(cluster.status().await[0].role, Role::Primary);
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn up_after_shutdown_reuses_the_data() {
    let dir = open_dir();
    let work = dir.path().join(".understudy");
    let cluster = EmbeddedCluster::up(&work).await.expect("first up");
    let creds = cluster.creds.clone();
    cluster
        .primary
        .connect(&creds, "postgres")
        .await
        .expect("connect")
        .batch_execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
        .await
        .expect("write");
    cluster.shutdown().await.expect("shutdown");

    let cluster = EmbeddedCluster::up(&work).await.expect("second up");
    assert_eq!(cluster.creds, creds, "credentials reused");
    let v: String = cluster
        .primary
        .connect(&creds, "postgres")
        .await
        .expect("connect")
        .query_one("SELECT v FROM kept", &[])
        .await
        .expect("table survives a restart")
        .get(0);
    assert_eq!(v, "still here");
    assert!(
        wait_for_row(&cluster, "SELECT v FROM kept").await,
        "standby has it too"
    );
    let status = cluster.status().await;
    assert_eq!(status[1].role, Role::Standby);
    cluster.shutdown().await.expect("shutdown");
}

/// A postmaster left stopped (SIGSTOP) is not adopted as running: starting its node
/// fails at once, saying how to resume it, instead of waiting out the start timeout.
#[tokio::test]
async fn starting_a_node_whose_postmaster_is_stopped_fails_at_once_saying_so() {
    let dir = open_dir();
    let work = dir.path().join(".understudy");
    let mut cluster = EmbeddedCluster::up(&work).await.expect("up");
    let pid = cluster.primary.postmaster_pid().expect("postmaster");
    cluster.primary.kill(Signal::SIGSTOP).expect("SIGSTOP");
    let stopping = Instant::now();
    while !is_stopped(pid) {
        assert!(
            stopping.elapsed() < Duration::from_secs(10),
            "never stopped"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let started = Instant::now();
    let err = cluster
        .primary
        .start()
        .await
        .expect_err("a stopped postmaster cannot be started");
    let elapsed = started.elapsed();
    cluster.primary.kill(Signal::SIGCONT).expect("SIGCONT");
    let text = err.to_string();
    assert!(text.contains("stopped"), "{text}");
    assert!(text.contains(&format!("kill -CONT {pid}")), "{text}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn lost_standby_is_rebuilt() {
    let dir = open_dir();
    let work = dir.path().join(".understudy");
    let cluster = EmbeddedCluster::up(&work).await.expect("first up");
    let standby_dir = cluster.standby.data_dir().to_path_buf();
    cluster
        .primary
        .connect(&cluster.creds, "postgres")
        .await
        .expect("connect")
        .batch_execute("CREATE TABLE before_loss (v int)")
        .await
        .expect("write");
    cluster.shutdown().await.expect("shutdown");
    std::fs::remove_dir_all(&standby_dir).expect("lose the standby");

    let cluster = EmbeddedCluster::up(&work)
        .await
        .expect("up rebuilds the standby");
    let status = cluster.status().await;
    assert_eq!(status[1].role, Role::Standby);
    assert!(wait_for_row(&cluster, "SELECT count(*) FROM before_loss").await);
    cluster
        .primary
        .connect(&cluster.creds, "postgres")
        .await
        .expect("connect")
        .batch_execute("CREATE TABLE after_rebuild (v int)")
        .await
        .expect("write");
    assert!(
        wait_for_row(&cluster, "SELECT count(*) FROM after_rebuild").await,
        "streams again"
    );
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn unreachable_dir_keeps_data_in_var_tmp_without_touching_permissions() {
    if !nix::unistd::Uid::effective().is_root() {
        // Only root hands PostgreSQL to another user; otherwise every owned dir is reachable.
        return;
    }
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let work = dir.path().join(".understudy");
    let cluster = EmbeddedCluster::up(&work).await.expect("up");
    let data_root = cluster.data_root().to_path_buf();
    let _cleanup = RemoveOnDrop(data_root.clone());
    assert!(data_root.starts_with("/var/tmp"), "{}", data_root.display());
    assert!(data_root
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("understudy-"));
    let state = std::fs::read_to_string(work.join("state.toml")).expect("state.toml");
    assert!(state.contains(&data_root.display().to_string()), "{state}");
    assert_eq!(
        std::fs::metadata(dir.path()).unwrap().mode() & 0o777,
        0o700,
        "permissions untouched"
    );
    assert_eq!(
        std::fs::metadata(dir.path()).unwrap().uid(),
        0,
        "owner untouched"
    );

    let status = cluster.status().await;
    assert_eq!(
        (status[0].role, status[1].role),
        (Role::Primary, Role::Standby)
    );
    cluster
        .primary
        .connect(&cluster.creds, "postgres")
        .await
        .expect("connect")
        .batch_execute("CREATE TABLE elsewhere (v int)")
        .await
        .expect("write");
    cluster.shutdown().await.expect("shutdown");

    let cluster = EmbeddedCluster::up(&work).await.expect("second up");
    assert_eq!(cluster.data_root(), data_root, "location from state.toml");
    cluster
        .primary
        .connect(&cluster.creds, "postgres")
        .await
        .expect("connect")
        .query_one("SELECT count(*) FROM elsewhere", &[])
        .await
        .expect("data reused");
    cluster.shutdown().await.expect("shutdown");
}

/// File names, sizes and modification times under `dir` (data excluded).
fn snapshot(dir: &Path) -> Vec<(PathBuf, u64, i64, i64)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let m = std::fs::metadata(&p).expect("stat");
            (p, m.len(), m.mtime(), m.mtime_nsec())
        })
        .collect();
    out.sort();
    out
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
