//! The admin endpoint: a small HTTP/1.1 server with `GET /status` (JSON:
//! nodes, proxy, sessions) and `GET /metrics` (Prometheus text). It listens
//! on loopback by default; when a token is configured every request must
//! carry `Authorization: Bearer <token>`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;
use understudy_proxy::metrics::ProxyMetrics;

/// One database node as `/status` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeReport {
    /// Node name.
    pub name: String,
    /// `primary`, `standby`, or `down`.
    pub role: String,
    /// TCP port.
    pub port: u16,
    /// Postmaster pid, when the node runs on this machine.
    pub pid: Option<i32>,
    /// Data directory, when the node runs on this machine.
    pub data_dir: Option<String>,
    /// Bytes of WAL the node is behind the primary (standbys).
    pub lag_bytes: Option<u64>,
    /// Whether its shared memory is in huge pages, when the node runs on this machine.
    pub huge_pages: Option<bool>,
}

/// Produces the node list of `/status`.
pub type NodesFn =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<NodeReport>> + Send>> + Send + Sync>;

/// What the admin endpoint reports on.
pub struct AdminState {
    /// The proxy's client port.
    pub proxy_port: u16,
    /// The proxy's counters.
    pub metrics: Arc<ProxyMetrics>,
    /// Node reports.
    pub nodes: NodesFn,
    /// Required bearer token; empty means none.
    pub token: String,
    /// More of the Prometheus text (the orchestrator's counters).
    pub extra_metrics: Option<ExtraMetricsFn>,
    /// The failover section of `/status` (orchestrator phase and events).
    pub failover: Option<FailoverFn>,
    /// Starts a planned switchover (`POST /switchover`).
    pub switchover: Option<SwitchoverFn>,
    /// The proxy's rules (`POST /rules/reload`).
    pub rules: Arc<understudy_proxy::rules::Rules>,
    /// Tables held for maintenance (`POST /maintenance/start?tables=a,b`,
    /// `POST /maintenance/end`).
    pub holds: Arc<understudy_proxy::rules::holds::Holds>,
}

/// Appends Prometheus text.
pub type ExtraMetricsFn = Arc<dyn Fn(&mut String) + Send + Sync>;
/// Produces the failover section of `/status`.
pub type FailoverFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;
/// Runs a switchover and returns its report.
pub type SwitchoverFn = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send>>
        + Send
        + Sync,
>;

#[derive(Serialize)]
struct StatusDoc {
    nodes: Vec<NodeReport>,
    proxy: ProxyDoc,
    #[serde(skip_serializing_if = "Option::is_none")]
    failover: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct ProxyDoc {
    port: u16,
    sessions: u64,
}

/// Binds `addr` and serves requests until [`AdminServer::close`] (or the end of the
/// process).
pub async fn serve(addr: SocketAddr, state: Arc<AdminState>) -> std::io::Result<AdminServer> {
    serve_on(TcpListener::bind(addr).await?, state)
}

/// Serves requests on a listener bound beforehand (see `understudy up`, which
/// claims its ports before creating the servers).
pub fn serve_on(listener: TcpListener, state: Arc<AdminState>) -> std::io::Result<AdminServer> {
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = service_fn(move |req| handle(req, Arc::clone(&state)));
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "admin connection ended");
                }
            });
        }
    });
    Ok(AdminServer { addr: local, task })
}

/// The running admin endpoint.
pub struct AdminServer {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Stops accepting connections and frees the port (requests under way are
    /// finished by their own tasks).
    pub async fn close(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<AdminState>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if !state.token.is_empty() {
        let expected = format!("Bearer {}", state.token);
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !same_secret(given, expected.as_bytes()) {
            return Ok(text(
                StatusCode::UNAUTHORIZED,
                "missing or wrong admin token\n".into(),
            ));
        }
    }
    if req.method() == Method::POST && req.uri().path() == "/switchover" {
        return Ok(match &state.switchover {
            Some(run) => match run().await {
                Ok(report) => json(StatusCode::OK, &report),
                Err(e) => text(StatusCode::CONFLICT, format!("{e}\n")),
            },
            None => text(
                StatusCode::NOT_FOUND,
                "switchover is only available with `understudy up`\n".into(),
            ),
        });
    }
    if req.method() == Method::POST {
        if let Some(response) = post_rules(&req, &state) {
            return Ok(response);
        }
    }
    if req.method() != Method::GET {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is supported (and POST /switchover, /rules/reload, /maintenance/start, /maintenance/end)\n".into(),
        ));
    }
    Ok(match req.uri().path() {
        "/status" => {
            let doc = StatusDoc {
                nodes: (state.nodes)().await,
                proxy: ProxyDoc {
                    port: state.proxy_port,
                    sessions: state.metrics.sessions_active(),
                },
                failover: state.failover.as_ref().map(|f| f()),
            };
            match serde_json::to_string_pretty(&doc) {
                Ok(json) => Response::builder()
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(json)))
                    .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, String::new())),
                Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
            }
        }
        "/metrics" => {
            let mut out = String::new();
            state.metrics.render_prometheus(&mut out);
            if let Some(extra) = &state.extra_metrics {
                extra(&mut out);
            }
            for node in (state.nodes)().await {
                let up = u8::from(node.role != "down");
                out.push_str(&format!(
                    "understudy_backend_up{{node=\"{}\",role=\"{}\"}} {up}\n",
                    node.name, node.role
                ));
                if let Some(lag) = node.lag_bytes {
                    out.push_str(&format!(
                        "understudy_backend_lag_bytes{{node=\"{}\"}} {lag}\n",
                        node.name
                    ));
                }
                if let Some(huge) = node.huge_pages {
                    out.push_str(&format!(
                        "understudy_backend_huge_pages{{node=\"{}\"}} {}\n",
                        node.name,
                        u8::from(huge)
                    ));
                }
            }
            text(StatusCode::OK, out)
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /status or /metrics\n".into(),
        ),
    })
}

/// `POST /rules/reload`, `/maintenance/start?tables=a,b`, `/maintenance/end`.
fn post_rules(req: &Request<Incoming>, state: &AdminState) -> Option<Response<Full<Bytes>>> {
    match req.uri().path() {
        "/rules/reload" => Some(match state.rules.reload() {
            Ok(count) => json(StatusCode::OK, &serde_json::json!({ "rules": count })),
            Err(e) => text(StatusCode::UNPROCESSABLE_ENTITY, format!("{e}\n")),
        }),
        "/maintenance/start" => {
            let tables: Vec<String> = req
                .uri()
                .query()
                .unwrap_or_default()
                .split('&')
                .filter_map(|kv| kv.strip_prefix("tables="))
                .flat_map(|v| v.split(','))
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect();
            Some(match state.holds.start(&tables) {
                Ok(held) => json(StatusCode::OK, &serde_json::json!({ "held": held })),
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            })
        }
        "/maintenance/end" => {
            let released = state.holds.current().names();
            state.holds.end();
            Some(json(
                StatusCode::OK,
                &serde_json::json!({ "released": released }),
            ))
        }
        _ => None,
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_string_pretty(value).unwrap_or_default();
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

/// Compares a presented secret with the expected one in time that does not
/// depend on where they differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut difference = given.len() ^ expected.len();
    for (i, e) in expected.iter().enumerate() {
        difference |= usize::from(given.get(i).copied().unwrap_or(0) ^ e);
    }
    difference == 0
}

#[cfg(test)]
mod token_tests {
    use super::same_secret;

    #[test]
    fn only_the_exact_token_matches() {
        assert!(same_secret(b"Bearer abc", b"Bearer abc"));
        assert!(!same_secret(b"Bearer abd", b"Bearer abc"));
        assert!(!same_secret(b"Bearer ab", b"Bearer abc"));
        assert!(!same_secret(b"Bearer abcd", b"Bearer abc"));
        assert!(!same_secret(b"", b"Bearer abc"));
    }
}
