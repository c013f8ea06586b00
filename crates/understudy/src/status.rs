//! `understudy status`: asks a running instance's admin endpoint for
//! `/status` and prints it (as a table, or the JSON document with `--json`).

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::cli::StatusArgs;
use crate::runtime_files;
use crate::CliError;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Asks the instance named by `args` for a planned switchover and prints
/// its report.
pub async fn switchover(args: StatusArgs) -> Result<(), CliError> {
    let admin = admin_address(&args)?;
    let body = http(&admin, "POST", "/switchover", args.token.as_deref())
        .await
        .map_err(|e| CliError::Other(format!("switchover failed: {e}")))?;
    println!("{body}");
    Ok(())
}

/// `understudy maintenance start <table…>` / `end`: asks the admin
/// endpoint to hold or release tables and prints what is held.
pub async fn maintenance(args: crate::cli::MaintenanceArgs) -> Result<(), CliError> {
    let (target, path) = match &args.action {
        crate::cli::MaintenanceAction::Start { tables, target } => {
            if let Some(bad) = tables.iter().find(|t| {
                t.is_empty()
                    || !t
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
            }) {
                return Err(CliError::Other(format!(
                    "\"{bad}\" is not a table name (write name or schema.name)"
                )));
            }
            (
                target,
                format!("/maintenance/start?tables={}", tables.join(",")),
            )
        }
        crate::cli::MaintenanceAction::End { target } => (target, "/maintenance/end".to_owned()),
    };
    let admin = admin_address(target)?;
    let body = http(&admin, "POST", &path, target.token.as_deref())
        .await
        .map_err(|e| CliError::Other(format!("maintenance failed: {e}")))?;
    print!("{body}");
    if !body.ends_with('\n') {
        println!();
    }
    Ok(())
}

fn admin_address(args: &StatusArgs) -> Result<String, CliError> {
    Ok(match &args.admin {
        Some(admin) => admin.clone(),
        None => runtime_files::read(&args.dir)
            .map(|instance| instance.admin.to_string())
            .map_err(|e| {
                CliError::Other(format!(
                    "no running understudy found in {} ({e}); start one with `understudy up --dir {}` or pass --admin HOST:PORT",
                    args.dir.display(),
                    args.dir.display()
                ))
            })?,
    })
}

/// Prints the status of the instance named by `args`.
pub async fn run(args: StatusArgs) -> Result<(), CliError> {
    let admin = admin_address(&args)?;
    let body = http(&admin, "GET", "/status", args.token.as_deref())
        .await
        .map_err(|e| CliError::Other(format!("cannot reach the admin endpoint at {admin}: {e}")))?;
    if args.json {
        println!("{body}");
        return Ok(());
    }
    let doc: Value = serde_json::from_str(&body).map_err(|e| {
        CliError::Other(format!(
            "the admin endpoint answered something that is not JSON: {e}"
        ))
    })?;
    print_table(&doc);
    Ok(())
}

fn print_table(doc: &Value) {
    println!(
        "{:<10} {:<8} {:>6} {:>8} {:>10} {:>5}  DATA",
        "NODE", "ROLE", "PORT", "PID", "LAG", "HUGE"
    );
    for node in doc["nodes"].as_array().into_iter().flatten() {
        let field = |k: &str| match &node[k] {
            Value::Null => "-".to_owned(),
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        let huge = match &node["huge_pages"] {
            Value::Bool(true) => "yes",
            Value::Bool(false) => "no",
            _ => "-",
        };
        println!(
            "{:<10} {:<8} {:>6} {:>8} {:>10} {:>5}  {}",
            field("name"),
            field("role"),
            field("port"),
            field("pid"),
            field("lag_bytes"),
            huge,
            field("data_dir")
        );
    }
    println!(
        "proxy: port {}, {} session(s)",
        doc["proxy"]["port"], doc["proxy"]["sessions"]
    );
}

/// A minimal HTTP/1.1 request (the admin endpoint closes after one response).
async fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<String> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("malformed HTTP response"))?;
    let status_line = head.lines().next().unwrap_or_default();
    if !status_line.contains(" 200 ") {
        return Err(std::io::Error::other(format!(
            "{status_line}: {}",
            body.trim()
        )));
    }
    Ok(body.to_owned())
}
