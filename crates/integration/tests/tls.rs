//! TLS on both sides of the proxy, with psql and tokio-postgres as clients:
//! `tls.require_tls` refuses plaintext clients, `sslmode=verify-full`
//! checks the proxy's certificate, SIGHUP swaps the certificate while
//! sessions stay open, and `backend.tls_mode` encrypts (or refuses) the
//! connections to the servers.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Command;
use understudy_config::{BackendConfig, BackendTlsMode};
use understudy_integration::certs::Certs;
use understudy_integration::run_process::{servers_config, RunProcess};
use understudy_integration::{Harness, Target};
use understudy_proxy::tls::control::MakeControlTls;
use understudy_proxy::tls::ServerTls;
use understudy_testkit::{wait_until, TestCluster, PASSWORD, SUPERUSER};

const PSQL: &str = "/usr/bin/psql";

struct Psql {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `sql` with psql on `conninfo`.
async fn psql(conninfo: &str, sql: &str) -> Psql {
    let out = Command::new(PSQL)
        .args(["-X", "-At", "-d", conninfo, "-c", sql])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run psql");
    Psql {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn conninfo(host: &str, port: u16, tls: &str) -> String {
    format!(
        "host={host} port={port} user={SUPERUSER} password={PASSWORD} dbname=postgres \
         connect_timeout=10 {tls}"
    )
}

fn verify_full(host: &str, port: u16, ca: &Path) -> String {
    conninfo(
        host,
        port,
        &format!("sslmode=verify-full sslrootcert={}", ca.display()),
    )
}

fn tls_config(certs: &Certs, require: bool) -> String {
    format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nrequire_tls = {require}\n\
         [backend]\ntls_mode = \"disable\"\n",
        certs.cert.display(),
        certs.key.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_tls_refuses_plaintext_and_verify_full_checks_the_certificate() {
    let cluster = TestCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path(), "proxy");
    let stranger = Certs::make(dir.path(), "stranger");
    let run = RunProcess::start(
        &format!("{}{}", servers_config(&cluster), tls_config(&certs, true)),
        "info",
    )
    .await;
    let port = run.proxy_port;

    let plain = psql(&conninfo("127.0.0.1", port, "sslmode=disable"), "select 1").await;
    assert!(!plain.ok, "a plaintext client is refused");
    assert!(
        plain
            .stderr
            .contains("understudy accepts only encrypted connections"),
        "{}",
        plain.stderr
    );

    for host in ["localhost", "127.0.0.1"] {
        let verified = psql(&verify_full(host, port, &certs.ca), "\\conninfo").await;
        assert!(verified.ok, "verify-full to {host}: {}", verified.stderr);
        assert!(
            verified.stdout.contains("SSL connection"),
            "{}",
            verified.stdout
        );
    }
    let required = psql(
        &conninfo("127.0.0.1", port, "sslmode=require"),
        "select 41 + 1",
    )
    .await;
    assert!(required.ok, "sslmode=require: {}", required.stderr);
    assert_eq!(required.stdout.trim(), "42");

    let wrong_root = psql(&verify_full("localhost", port, &stranger.ca), "select 1").await;
    assert!(
        !wrong_root.ok,
        "a certificate from another authority is not trusted"
    );
    assert!(
        wrong_root.stderr.contains("certificate verify failed"),
        "{}",
        wrong_root.stderr
    );
}

/// A tokio-postgres session over TLS that trusts `ca`.
async fn tls_session(port: u16, ca: &Path) -> tokio_postgres::Client {
    let tls = ServerTls::new(&BackendConfig {
        tls_mode: BackendTlsMode::VerifyFull,
        tls_ca_file: ca.display().to_string(),
        ..BackendConfig::default()
    })
    .expect("client TLS settings");
    let connector = tls.connector().expect("a connector").clone();
    let mut pg = tokio_postgres::Config::new();
    pg.host("localhost")
        .port(port)
        .user(SUPERUSER)
        .password(PASSWORD)
        .dbname("postgres")
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let (client, connection) = pg
        .connect(MakeControlTls(connector))
        .await
        .expect("TLS session through the proxy");
    tokio::spawn(connection);
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_while_open_tls_sessions_continue() {
    let cluster = TestCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let first = Certs::make(dir.path(), "first");
    let second = Certs::make(dir.path(), "second");
    let run = RunProcess::start(
        &format!("{}{}", servers_config(&cluster), tls_config(&first, false)),
        "info",
    )
    .await;
    let port = run.proxy_port;
    let open = tls_session(port, &first.ca).await;
    let row = open.query_one("select 1::int", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);

    second.install_over(&first);
    run.signal(Signal::SIGHUP);
    let renewed = wait_until(Duration::from_secs(10), || async {
        psql(&verify_full("localhost", port, &second.ca), "select 1")
            .await
            .ok
    })
    .await;
    assert!(
        renewed,
        "after SIGHUP the proxy shows the new certificate: {}",
        run.output()
    );
    let old = psql(&verify_full("localhost", port, &first.ca), "select 1").await;
    assert!(!old.ok, "the old certificate is no longer served");

    let row = open.query_one("select 2::int", &[]).await.unwrap();
    assert_eq!(
        row.get::<_, i32>(0),
        2,
        "the session opened before the reload goes on"
    );
    assert!(
        run.output().contains("TLS certificate reloaded"),
        "{}",
        run.output()
    );
}

/// Turns on TLS in `cluster`'s primary with `certs`.
async fn enable_server_tls(cluster: &TestCluster, certs: &Certs) {
    let node = cluster.primary();
    let run_as = cluster.run_as();
    let cert = node.data_dir().join("server.crt");
    let key = node.data_dir().join("server.key");
    std::fs::copy(&certs.cert, &cert).unwrap();
    std::fs::copy(&certs.key, &key).unwrap();
    for file in [&cert, &key] {
        nix::unistd::chown(
            file,
            Some(nix::unistd::Uid::from_raw(run_as.uid())),
            Some(nix::unistd::Gid::from_raw(run_as.gid())),
        )
        .unwrap();
    }
    let admin = cluster.connect().await;
    admin
        .batch_execute("alter system set ssl = on")
        .await
        .unwrap();
    admin
        .batch_execute("select pg_reload_conf()")
        .await
        .unwrap();
    let port = node.port();
    let on = wait_until(Duration::from_secs(10), || async {
        psql(&conninfo("127.0.0.1", port, "sslmode=require"), "select 1")
            .await
            .ok
    })
    .await;
    assert!(on, "the server accepts TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_mode_encrypts_server_connections_or_refuses_a_plaintext_server() {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(dir.path(), "server");
    let ca = certs.ca.display().to_string();
    let harness = Harness::start_with(0, |config| {
        config.backend.tls_mode = BackendTlsMode::VerifyFull;
        config.backend.tls_ca_file = ca;
    })
    .await;

    let refused = harness
        .pg_config(Target::Proxy, SUPERUSER, PASSWORD)
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("a server without TLS is refused under verify-full");
    let message = refused
        .as_db_error()
        .map(|e| e.message().to_owned())
        .unwrap_or_else(|| refused.to_string());
    assert!(
        message.contains("backend.tls_mode = verify-full") && message.contains("TLS"),
        "the error names the setting: {message}"
    );

    enable_server_tls(&harness.cluster, &certs).await;
    let client = harness.connect(Target::Proxy).await;
    let row = client
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(
        row.get::<_, bool>(0),
        "the proxy's backend connection is encrypted"
    );
}
