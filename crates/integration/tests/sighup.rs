//! SIGHUP on a running `understudy run` puts a changed rules file in force
//! for the sessions already open (the certificate's reload on the same
//! signal is tested in `tls.rs`).

use understudy_integration::sqlstate;
use understudy_integration::understudy_testkit::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_rules_file_of_a_running_proxy() {
    use understudy_integration::run_process::{servers_config, RunProcess};
    let cluster = understudy_integration::understudy_testkit::TestCluster::start().await;
    cluster
        .connect()
        .await
        .batch_execute("create table salaries (amount int)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    let deny = |table: &str| {
        format!("[[rule]]\nname = \"no {table}\"\ndeny = {{ tables = [\"{table}\"] }}\n")
    };
    std::fs::write(&rules, deny("salaries")).unwrap();
    let run = RunProcess::start(
        &format!(
            "[proxy]\nrules = \"{}\"\n{}",
            rules.display(),
            servers_config(&cluster)
        ),
        "info",
    )
    .await;
    let config = format!(
        "host=127.0.0.1 port={} user={} password={} dbname=postgres",
        run.proxy_port,
        understudy_integration::understudy_testkit::SUPERUSER,
        understudy_integration::understudy_testkit::PASSWORD
    );
    let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let denied = client
        .simple_query("select * from salaries")
        .await
        .expect_err("the rule denies salaries");
    assert_eq!(sqlstate(&denied), "42501");

    std::fs::write(&rules, deny("bonuses")).unwrap();
    run.signal(nix::sys::signal::Signal::SIGHUP);
    let reloaded = wait_until(std::time::Duration::from_secs(10), || async {
        client.simple_query("select * from salaries").await.is_ok()
    })
    .await;
    assert!(
        reloaded,
        "SIGHUP put the new rules in force: {}",
        run.output()
    );
    assert!(run.output().contains("rules reloaded"), "{}", run.output());
}
