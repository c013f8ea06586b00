//! The proxy under test: this same binary started as a child with `run --config FILE`,
//! in front of the benchmark's primary and standby, with the superuser as `auth_user`
//! (its password passed in the environment, not written to the file). Ready when it has
//! printed its `ready:` line and a connection through it answers.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use understudy_cluster::{free_port, Credentials, EmbeddedCluster};

use super::child::ChildGuard;
use super::error::BenchError;

/// How long understudy may take to print `ready:` and accept a connection.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The environment variable that carries `auth.auth_password`.
const PASSWORD_ENV: &str = "UNDERSTUDY_AUTH_AUTH_PASSWORD";

/// One `[[servers]]` entry.
#[derive(Debug, Clone)]
pub struct ServerEntry {
    /// Name shown in logs and `/status`.
    pub name: String,
    /// Port on 127.0.0.1.
    pub port: u16,
}

/// Renders the configuration file (see docs/config.md).
pub fn render_config(
    proxy_port: u16,
    admin_port: u16,
    auth_user: &str,
    servers: &[ServerEntry],
    rules: Option<&Path>,
) -> String {
    let rules = rules
        .map(|r| format!("rules = {}\n", toml_string(&r.display().to_string())))
        .unwrap_or_default();
    let mut text = format!(
        "# Written by `understudy bench`; auth.auth_password comes from {PASSWORD_ENV}.\n\
         [proxy]\n\
         listen = \"127.0.0.1:{proxy_port}\"\n\
         {rules}\
         \n\
         [admin]\n\
         listen = \"127.0.0.1:{admin_port}\"\n\
         \n\
         [auth]\n\
         auth_user = {auth_user}\n",
        auth_user = toml_string(auth_user),
    );
    for server in servers {
        text.push_str(&format!(
            "\n[[servers]]\nname = {}\nhost = \"127.0.0.1\"\nport = {}\n",
            toml_string(&server.name),
            server.port
        ));
    }
    text
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A running understudy child.
#[derive(Debug)]
pub struct UnderstudyProcess {
    guard: ChildGuard,
    port: u16,
}

impl UnderstudyProcess {
    /// Writes the configuration for `cluster` under `dir` and starts `exe run --config`;
    /// returns once it is ready and a connection through it as the superuser answers.
    pub async fn start(
        exe: &Path,
        dir: &Path,
        cluster: &EmbeddedCluster,
        rules: Option<&Path>,
    ) -> Result<UnderstudyProcess, BenchError> {
        let name = if rules.is_some() {
            "understudy-rules"
        } else {
            "understudy"
        };
        let creds: &Credentials = &cluster.creds;
        let port = free_port()?;
        let admin_port = free_port()?;
        let servers: Vec<ServerEntry> = [&cluster.primary, &cluster.standby]
            .into_iter()
            .map(|node| ServerEntry {
                name: node.name().to_string(),
                port: node.port(),
            })
            .collect();
        let config_path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config_path,
            render_config(port, admin_port, &creds.superuser, &servers, rules),
        )
        .map_err(BenchError::io(format!("writing {}", config_path.display())))?;

        let log = dir.join(format!("{name}.log"));
        let stderr = std::fs::File::create(&log)
            .map_err(BenchError::io(format!("creating {}", log.display())))?;
        let mut cmd = tokio::process::Command::new(exe);
        // Only the file and the password configure the child.
        for (name, _) in std::env::vars_os() {
            let name_text = name.to_string_lossy();
            if name_text.starts_with("UNDERSTUDY_") && name_text != "UNDERSTUDY_LOG" {
                cmd.env_remove(&name);
            }
        }
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .env(PASSWORD_ENV, &creds.password)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(BenchError::io(format!("starting {} run", exe.display())))?;
        let stdout = child.stdout.take();
        let mut guard = ChildGuard::new("understudy", child, &log);
        tracing::info!(child = guard.what(), port, "understudy started");

        let deadline = Instant::now() + READY_TIMEOUT;
        let ready = match stdout {
            Some(stdout) => wait_for_ready_line(stdout, deadline).await,
            None => Err("its standard output is not available".to_string()),
        };
        if let Err(reason) = ready {
            if let Some(err) = guard.exited() {
                return Err(err);
            }
            return Err(BenchError::NotReady {
                what: guard.what().to_string(),
                secs: READY_TIMEOUT.as_secs(),
                last_error: reason,
                log: log.clone(),
                log_tail: understudy_cluster::files::log_tail(&log, 0, 20),
            });
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        guard
            .wait_until_accepting(port, creds, remaining.max(Duration::from_secs(1)))
            .await?;
        Ok(UnderstudyProcess { guard, port })
    }

    /// The pid of the process, for its CPU time.
    pub fn pid(&self) -> Option<u32> {
        self.guard.pid()
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops understudy (SIGTERM) and waits for it to exit.
    pub async fn stop(self) {
        self.guard.stop().await;
    }
}

/// Reads `stdout` until a line starting with `ready:`; the rest of the output is drained
/// in the background so the child never blocks on a full pipe.
async fn wait_for_ready_line(
    stdout: tokio::process::ChildStdout,
    deadline: Instant,
) -> Result<(), String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        let mut tx = Some(tx);
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("ready:") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    let limit = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(limit, rx).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("it closed its standard output without printing `ready:`".into()),
        Err(_) => Err("it printed no `ready:` line".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_accepted_by_the_loader() {
        let text = render_config(
            7001,
            7002,
            "under\"study",
            &[
                ServerEntry {
                    name: "primary".into(),
                    port: 7003,
                },
                ServerEntry {
                    name: "standby".into(),
                    port: 7004,
                },
            ],
            Some(Path::new("/tmp/rules \"x\".toml")),
        );
        let config = understudy_config::Config::from_toml_str(&text).expect("valid config");
        assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:7001");
        assert_eq!(config.admin.listen.to_string(), "127.0.0.1:7002");
        assert_eq!(config.auth.auth_user, "under\"study");
        assert_eq!(config.proxy.rules, "/tmp/rules \"x\".toml");
        let servers: Vec<(String, String, u16)> = config
            .servers
            .iter()
            .map(|s| (s.name.clone(), s.host.clone(), s.port))
            .collect();
        assert_eq!(
            servers,
            vec![
                ("primary".to_string(), "127.0.0.1".to_string(), 7003),
                ("standby".to_string(), "127.0.0.1".to_string(), 7004),
            ]
        );
    }
}
