//! A storm of logins does not stall the sessions already running.
//!
//! Every login of a role whose plaintext password is in `[[users]]` needs
//! that role's SCRAM verifier (4096 HMACs to derive). The proxy relays every
//! session on one runtime thread (`understudy run` on two CPUs), so a
//! verifier derived per login, on that thread, stops every other session for
//! the length of the storm. It is derived once per password, off the runtime
//! thread.

use std::time::{Duration, Instant};

use tokio_postgres::NoTls;
use understudy_integration::run_process::{servers_config, RunProcess};
use understudy_testkit::TestCluster;

const LISTED_PASSWORD: &str = "listed-Storm-93c1e4";
/// Logins in the storm, all at once.
const STORM: usize = 64;
/// The longest a running session's `SELECT 1` may take during the storm.
/// Every login also forks a PostgreSQL backend and runs the client's side of
/// SCRAM in this test, on the same two CPUs: the bound leaves room for that,
/// not for the storm's derivations run one after the other on the proxy's
/// thread (each takes milliseconds in a debug build).
const MAX_ROUND_TRIP: Duration = Duration::from_millis(250);

async fn connect(port: u16) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("listed")
        .password(LISTED_PASSWORD)
        .dbname("postgres")
        .connect(NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_storm_does_not_stall_running_sessions() {
    let cluster = TestCluster::start().await;
    cluster
        .create_role("listed", LISTED_PASSWORD, "scram-sha-256")
        .await;
    let config = format!(
        "{}[[users]]\nname = \"listed\"\npassword = \"{LISTED_PASSWORD}\"\n",
        servers_config(&cluster)
    );
    let run = RunProcess::start(&config, "info").await;
    let port = run.proxy_port;
    let running = connect(port).await.expect("the running session logs in");

    // The storm's clients derive their SCRAM keys too: on a runtime of their
    // own, so that only the proxy can delay the running session.
    let storm = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime of the storm");
        runtime.block_on(async move {
            let logins = (0..STORM).map(|_| {
                tokio::spawn(async move {
                    let client = connect(port).await?;
                    client.simple_query("select 1").await.map(|_| ())
                })
            });
            let mut failed = Vec::new();
            for login in futures_util::future::join_all(logins).await {
                if let Err(e) = login.expect("login task") {
                    failed.push(e.to_string());
                }
            }
            failed
        })
    });

    let mut slowest = Duration::ZERO;
    let mut round_trips = 0;
    while !storm.is_finished() {
        let start = Instant::now();
        running
            .simple_query("select 1")
            .await
            .expect("the running session answers during the storm");
        slowest = slowest.max(start.elapsed());
        round_trips += 1;
    }
    let failed = storm.join().expect("storm thread");
    assert!(failed.is_empty(), "logins of the storm failed: {failed:?}");
    assert!(round_trips > 1, "the storm ended before it was measured");
    assert!(
        slowest <= MAX_ROUND_TRIP,
        "a running session's SELECT 1 took {slowest:?} during a storm of {STORM} logins \
         ({round_trips} round trips measured)"
    );
}
