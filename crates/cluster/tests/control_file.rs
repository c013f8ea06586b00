//! The control file read directly (`Node::read_control_file`, which a switchover
//! polls while the old primary shuts down) agrees with `pg_controldata`: "in
//! production" while the server runs, and "shut down" with the same checkpoint
//! after a clean stop.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use understudy_cluster::node::StopMode;
use understudy_cluster::EmbeddedCluster;

/// `DBState` of a running primary.
const IN_PRODUCTION: u32 = 6;

#[tokio::test]
async fn the_control_file_read_directly_agrees_with_pg_controldata() {
    let dir = tempfile::tempdir_in("/tmp").expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut cluster = EmbeddedCluster::up(&dir.path().join(".understudy"))
        .await
        .expect("up");

    let running = cluster
        .primary
        .read_control_file()
        .expect("the control file of a running primary is readable");
    assert_eq!(running.state, IN_PRODUCTION);
    assert_eq!(running.shutdown_checkpoint(), None);

    cluster
        .primary
        .stop_promptly(StopMode::Fast, Duration::from_secs(30))
        .await
        .expect("clean stop");
    let read = cluster
        .primary
        .read_control_file()
        .expect("the control file of a stopped primary is readable");
    let reported = cluster
        .primary
        .control_data()
        .await
        .expect("pg_controldata");
    assert_eq!(reported.state, "shut down");
    assert_eq!(read.shutdown_checkpoint(), Some(reported.checkpoint_lsn));
    cluster.shutdown().await.expect("shutdown");
}
