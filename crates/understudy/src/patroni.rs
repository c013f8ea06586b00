//! Asking Patroni which server leads. With `servers[].patroni` set,
//! `understudy run` publishes a server as primary only while its Patroni
//! REST API answers `GET /primary` with 200 — Patroni's own health check for
//! load balancers, true only on the node that holds the leader lock and runs
//! as primary. A primary that lost the lock (and is about to be demoted)
//! still says `pg_is_in_recovery() = false`; Patroni already says 503.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::{header, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use understudy_config::patroni_endpoint;

/// True when Patroni at `url` says its node is the running leader, false
/// when it says it is not (503); an error when it cannot be asked.
pub async fn leads(url: &str, limit: Duration) -> Result<bool, String> {
    let (authority, prefix) = patroni_endpoint(url)?;
    let status = tokio::time::timeout(limit, ask(&authority, &format!("{prefix}/primary")))
        .await
        .map_err(|_| {
            format!(
                "Patroni at {url} did not answer within {} ms",
                limit.as_millis()
            )
        })??;
    match status {
        StatusCode::OK => Ok(true),
        StatusCode::SERVICE_UNAVAILABLE => Ok(false),
        other => Err(format!(
            "Patroni at {url} answered GET {prefix}/primary with {other}; expected 200 or 503"
        )),
    }
}

async fn ask(authority: &str, path: &str) -> Result<StatusCode, String> {
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot connect to Patroni at {authority}: {e}"))?;
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with Patroni at {authority} failed: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::get(path)
        .header(header::HOST, authority)
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad Patroni request {path}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("Patroni at {authority} failed to answer: {e}"))?;
    let status = response.status();
    // The body (Patroni's JSON status) is not needed; read it so the
    // connection ends cleanly.
    let _ = response.into_body().collect().await;
    Ok(status)
}
