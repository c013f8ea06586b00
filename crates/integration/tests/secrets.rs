//! Secrets stay secret: with logging at debug level, after good and bad
//! logins, neither the log of `understudy run` nor its `/status` and
//! `/metrics` show a password or the admin token; the admin endpoint
//! refuses requests without the token.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::NoTls;
use understudy_integration::run_process::{servers_config, RunProcess};
use understudy_integration::sqlstate;
use understudy_testkit::{TestCluster, PASSWORD};

const APP_PASSWORD: &str = "app-Secret-4f9d1c";
const LISTED_PASSWORD: &str = "listed-Secret-8a2e7b";
const WRONG_PASSWORD: &str = "wrong-Guess-31a6e0";
const TOKEN: &str = "admin-Token-55e1d9";

async fn login(port: u16, user: &str, password: &str) -> Result<(), tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname("postgres")
        .connect(NoTls)
        .await?;
    tokio::spawn(connection);
    client.simple_query("select 1").await.map(|_| ())
}

/// `GET path` on the admin endpoint; returns the status line and body.
async fn get(port: u16, path: &str, token: Option<&str>) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.lines().next().unwrap_or_default().to_owned();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_and_the_admin_token_never_show_in_logs_or_status() {
    let cluster = TestCluster::start().await;
    cluster
        .create_role("app", APP_PASSWORD, "scram-sha-256")
        .await;
    cluster
        .create_role("listed", LISTED_PASSWORD, "scram-sha-256")
        .await;
    let config = format!(
        "{}[admin]\ntoken = \"{TOKEN}\"\n[[users]]\nname = \"listed\"\npassword = \"{LISTED_PASSWORD}\"\n",
        servers_config(&cluster)
    );
    let run = RunProcess::start(&config, "debug").await;
    let port = run.proxy_port;

    login(port, "app", APP_PASSWORD).await.expect("app logs in");
    login(port, "listed", LISTED_PASSWORD)
        .await
        .expect("listed logs in");
    let refused = login(port, "app", WRONG_PASSWORD)
        .await
        .expect_err("a wrong password is refused");
    assert_eq!(sqlstate(&refused), "28P01");

    let (status, _) = get(run.admin_port, "/status", None).await;
    assert!(status.contains("401"), "no token: {status}");
    let (status, _) = get(run.admin_port, "/status", Some("not-the-token")).await;
    assert!(status.contains("401"), "wrong token: {status}");
    let (status, status_body) = get(run.admin_port, "/status", Some(TOKEN)).await;
    assert!(status.contains("200"), "{status}");
    let (status, metrics_body) = get(run.admin_port, "/metrics", Some(TOKEN)).await;
    assert!(status.contains("200"), "{status}");
    assert!(
        metrics_body.contains("understudy_auth_failures_total 1"),
        "{metrics_body}"
    );

    let output = run.output();
    assert!(
        output.contains("DEBUG"),
        "the log is at debug level: {output}"
    );
    for secret in [
        APP_PASSWORD,
        LISTED_PASSWORD,
        WRONG_PASSWORD,
        TOKEN,
        PASSWORD,
    ] {
        for (what, text) in [
            ("log", &output),
            ("/status", &status_body),
            ("/metrics", &metrics_body),
        ] {
            assert!(
                !text.contains(secret),
                "{what} shows the secret {secret:?}: {text}"
            );
        }
    }
}
