//! The configuration data model: one serde struct per TOML section, with the defaults
//! of the config contract, plus the small lookups the proxy makes on it
//! ([`Config::hba_method`], [`Config::user`], the `Duration` helpers).
//!
//! Every key except `[[servers]]` has a default, so an empty section (or a missing one)
//! means "all defaults". Missing servers are reported by validation, not by serde, so the
//! error can say what to write.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Cidr, Secret};

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[proxy]`: the client-facing listener.
    pub proxy: ProxyConfig,
    /// `[admin]`: the HTTP status and metrics endpoint.
    pub admin: AdminConfig,
    /// `[auth]`: how clients authenticate and how the proxy reaches role secrets.
    pub auth: AuthConfig,
    /// `[[users]]`: users the proxy knows itself (all users in userlist mode, extra ones
    /// in passthrough mode).
    pub users: Vec<User>,
    /// `[[servers]]`: the PostgreSQL servers; at least one. Which one is the primary is
    /// found at run time with `pg_is_in_recovery()`.
    pub servers: Vec<Server>,
    /// `[backend]`: connections from the proxy to the servers.
    pub backend: BackendConfig,
    /// `[health]`: how a failed primary is detected and how long sessions wait for a new
    /// one.
    pub health: HealthConfig,
    /// `[journal]`: how much of each session the proxy keeps to move it.
    pub journal: JournalConfig,
    /// `[tls]`: TLS for clients.
    pub tls: TlsConfig,
}

/// `[proxy]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Address clients connect to. Default `127.0.0.1:6543`.
    pub listen: SocketAddr,
    /// Client connections accepted at once; more are refused with `53300
    /// too_many_connections`. Default 1000.
    pub max_client_connections: usize,
    /// A client must finish startup and authentication within this many milliseconds.
    /// Default 10000.
    pub startup_timeout_ms: u64,
    /// Largest protocol message, in bytes, accepted from a client or a server; a longer
    /// one ends the session with `08P01`. Default 1073741824 (1 GiB, PostgreSQL's own
    /// limit for most messages).
    pub max_message_bytes: u64,
    /// Requests a client may pipeline without reading their results; past this the
    /// session ends with `54000` (program limit exceeded). Default 100000.
    pub max_pipelined_requests: usize,
    /// A session idle inside a transaction for this many milliseconds is ended with
    /// `25P03`, and its transaction rolled back, as PostgreSQL's
    /// `idle_in_transaction_session_timeout` does. 0 turns it off. Default 0.
    pub idle_in_transaction_timeout_ms: u64,
    /// On SIGTERM, open transactions may finish for this many milliseconds; then
    /// every remaining session is ended with `57P01`. Default 30000.
    pub shutdown_grace_ms: u64,
    /// Rules file (rewrite, access, masking, maintenance holds; see
    /// `docs/rules.md`). Default empty: no rules, and no statement is parsed.
    pub rules: String,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: loopback(6543),
            max_client_connections: 1000,
            startup_timeout_ms: 10_000,
            max_message_bytes: 1 << 30,
            max_pipelined_requests: 100_000,
            idle_in_transaction_timeout_ms: 0,
            shutdown_grace_ms: 30_000,
            rules: String::new(),
        }
    }
}

impl ProxyConfig {
    /// `startup_timeout_ms` as a `Duration`.
    pub fn startup_timeout(&self) -> Duration {
        Duration::from_millis(self.startup_timeout_ms)
    }

    /// `max_message_bytes` as a length.
    pub fn max_message_len(&self) -> usize {
        usize::try_from(self.max_message_bytes).unwrap_or(usize::MAX)
    }

    /// `idle_in_transaction_timeout_ms` as a `Duration`, `None` when off.
    pub fn idle_in_transaction_timeout(&self) -> Option<Duration> {
        (self.idle_in_transaction_timeout_ms > 0)
            .then(|| Duration::from_millis(self.idle_in_transaction_timeout_ms))
    }

    /// `shutdown_grace_ms` as a `Duration`.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

/// `[tls]`: TLS between clients and the proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM file with the proxy's certificate chain. Empty: clients asking for TLS are
    /// told the proxy has none (`sslmode=prefer` falls back to plaintext). Default empty.
    pub cert_file: String,
    /// PEM file with the private key of `cert_file`. Default empty.
    pub key_file: String,
    /// Refuse clients that do not use TLS (`28000`). Requires `cert_file`. Default false.
    pub require_tls: bool,
}

impl TlsConfig {
    /// A certificate is configured.
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }
}

/// How the proxy uses TLS towards the servers, with libpq's `sslmode` meanings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BackendTlsMode {
    /// Never.
    #[serde(rename = "disable")]
    Disable,
    /// When the server offers it, without checking its certificate.
    #[default]
    #[serde(rename = "prefer")]
    Prefer,
    /// Always, without checking the certificate; a server without TLS is an error.
    #[serde(rename = "require")]
    Require,
    /// Always, with the certificate checked against `tls_ca_file` (or the system's
    /// roots) and the server's host name.
    #[serde(rename = "verify-full")]
    VerifyFull,
}

impl BackendTlsMode {
    /// Every mode as written in the config.
    pub const NAMES: &'static [&'static str] = &["disable", "prefer", "require", "verify-full"];

    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendTlsMode::Disable => "disable",
            BackendTlsMode::Prefer => "prefer",
            BackendTlsMode::Require => "require",
            BackendTlsMode::VerifyFull => "verify-full",
        }
    }
}

impl FromStr for BackendTlsMode {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BackendTlsMode::NAMES
            .iter()
            .position(|name| *name == s)
            .map(|i| {
                [
                    BackendTlsMode::Disable,
                    BackendTlsMode::Prefer,
                    BackendTlsMode::Require,
                    BackendTlsMode::VerifyFull,
                ][i]
            })
            .ok_or_else(|| UnknownName {
                given: s.to_owned(),
                expected: BackendTlsMode::NAMES,
            })
    }
}

/// `[admin]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the HTTP endpoint serving `GET /status` (JSON) and `GET /metrics`
    /// (Prometheus). Default `127.0.0.1:6544`.
    pub listen: SocketAddr,
    /// Bearer token required by the endpoint; must be non-empty when `listen` is not a
    /// loopback address. Default empty (no token).
    pub token: Secret,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: loopback(6544),
            token: Secret::default(),
        }
    }
}

/// The default `auth_query`: the role's secret, if the role may log in and has not
/// expired.
pub const DEFAULT_AUTH_QUERY: &str = "SELECT rolpassword FROM pg_catalog.pg_authid \
     WHERE rolname = $1 AND rolcanlogin \
     AND (rolvaliduntil IS NULL OR rolvaliduntil > now())";

/// `[auth]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Where role secrets come from. Default `passthrough`.
    pub mode: AuthMode,
    /// Client authentication method when no `[[auth.hba]]` rule matches. Default
    /// `scram-sha-256`.
    pub method: AuthMethod,
    /// Role the proxy uses for its own control connections (secret lookup, health
    /// checks). Default `postgres`.
    pub auth_user: String,
    /// Password of `auth_user`; plaintext, or set through `UNDERSTUDY_AUTH_AUTH_PASSWORD`.
    /// Default empty.
    pub auth_password: Secret,
    /// Query run as `auth_user` in passthrough mode to fetch a role's secret; `$1` is
    /// the role name and the query returns one text column. Default: see
    /// [`DEFAULT_AUTH_QUERY`].
    pub auth_query: String,
    /// `[[auth.hba]]`: per-user/database/address method rules; the first match wins.
    /// Default none.
    pub hba: Vec<HbaRule>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Passthrough,
            method: AuthMethod::ScramSha256,
            auth_user: "postgres".to_owned(),
            auth_password: Secret::default(),
            auth_query: DEFAULT_AUTH_QUERY.to_owned(),
            hba: Vec::new(),
        }
    }
}

/// `[[auth.hba]]`: a client matches when every key that is set matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HbaRule {
    /// Role name the client logs in as; unset matches every user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Database the client asks for; unset matches every database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Network the client's address must be in; unset matches every address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Cidr>,
    /// Authentication method for matching clients. Required.
    pub method: AuthMethod,
}

impl HbaRule {
    /// True when this rule applies to the client.
    pub fn matches(&self, user: &str, database: &str, addr: IpAddr) -> bool {
        let user_ok = match &self.user {
            Some(u) => u == user,
            None => true,
        };
        let database_ok = match &self.database {
            Some(d) => d == database,
            None => true,
        };
        let address_ok = match &self.address {
            Some(net) => net.contains(addr),
            None => true,
        };
        user_ok && database_ok && address_ok
    }
}

/// `[[users]]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Role name. Required.
    pub name: String,
    /// Plaintext password, a `SCRAM-SHA-256$…` verifier or an `md5…` hash (as stored in
    /// `pg_authid.rolpassword`). Default empty (only usable with `trust`).
    #[serde(default)]
    pub password: Secret,
}

/// `[[servers]]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// Name used in logs, `/status` and metrics; unique. Required.
    pub name: String,
    /// Host name or IP address. Required.
    pub host: String,
    /// TCP port. Default 5432.
    #[serde(default = "default_pg_port")]
    pub port: u16,
    /// Base URL of the server's Patroni REST API (`http://host:8008`). When set,
    /// `understudy run` takes the server as primary only while Patroni's
    /// `GET /primary` answers 200 (the node holds the leader lock), instead of
    /// trusting `pg_is_in_recovery()` alone. Default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patroni: Option<String>,
}

fn default_pg_port() -> u16 {
    5432
}

/// `[backend]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    /// Limit in milliseconds for connecting to a server (TCP connect, startup and
    /// authentication), and for forwarding a cancel request until the server
    /// closes the cancel connection. Default 5000.
    pub connect_timeout_ms: u64,
    /// TLS towards the servers: `disable`, `prefer`, `require` or `verify-full`, as
    /// libpq's `sslmode`. Default `prefer`.
    pub tls_mode: BackendTlsMode,
    /// PEM file with the certificate authorities `verify-full` trusts; empty means the
    /// system's roots. Default empty.
    pub tls_ca_file: String,
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig {
            connect_timeout_ms: 5_000,
            tls_mode: BackendTlsMode::Prefer,
            tls_ca_file: String::new(),
        }
    }
}

impl BackendConfig {
    /// `connect_timeout_ms` as a `Duration`.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// `[journal]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Bytes of client messages kept for a session's open transaction (or the
    /// requests in flight). Past this the session cannot be moved until the
    /// transaction ends; a failover meanwhile gives it a clear error.
    /// Default 16777216 (16 MiB).
    pub max_transaction_bytes: u64,
    /// Bytes of session state kept (settings, listens, prepared statements).
    /// Past this the session cannot be moved. Default 4194304 (4 MiB).
    pub max_session_state_bytes: u64,
    /// Committed transactions kept, proxy-wide, until the standbys have them;
    /// past this the oldest are dropped (and counted in `/metrics`).
    /// Default 50000.
    pub max_commit_log_entries: u64,
    /// Keep a commit ledger (schema `understudy`, created on first use in each
    /// database clients use) so that a COMMIT in flight during a failover is
    /// resolved exactly once. Without it such a COMMIT gets `08007`
    /// (transaction resolution unknown). Default true.
    pub ledger: bool,
    /// Bytes of journals kept by all sessions together; a session that would go past
    /// it cannot be moved until its transaction ends, as with the per-session limits.
    /// Default 1073741824 (1 GiB).
    pub max_total_bytes: u64,
    /// A committed transaction too large for the journal cannot be applied
    /// again from the commit log: its COMMIT is acknowledged only once the
    /// standbys have flushed it, waiting at most this many milliseconds (then
    /// it is acknowledged anyway, and counted). 0 acknowledges at once.
    /// Default 5000.
    pub large_commit_wait_ms: u64,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            max_transaction_bytes: 16 << 20,
            max_session_state_bytes: 4 << 20,
            max_commit_log_entries: 50_000,
            ledger: true,
            max_total_bytes: 1 << 30,
            large_commit_wait_ms: 5_000,
        }
    }
}

impl JournalConfig {
    /// `large_commit_wait_ms` as a `Duration`; `None` when 0.
    pub fn large_commit_wait(&self) -> Option<Duration> {
        (self.large_commit_wait_ms > 0).then(|| Duration::from_millis(self.large_commit_wait_ms))
    }
}

/// `[health]`
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Milliseconds between two health probes of the primary (`SELECT 1` on a kept
    /// connection, plus a look at its postmaster process). Default 100.
    pub probe_interval_ms: u64,
    /// Limit in milliseconds for one probe (connecting or answering `SELECT 1`).
    /// Default 250.
    pub probe_timeout_ms: u64,
    /// The primary is declared failed when no probe has succeeded for this many
    /// milliseconds (a vanished postmaster is declared failed at once). Must be larger
    /// than `probe_interval_ms`. Default 400.
    pub failure_timeout_ms: u64,
    /// How long, in milliseconds, sessions are held while no primary is reachable
    /// before they get an error. Default 30000.
    pub hold_timeout_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            probe_interval_ms: 100,
            probe_timeout_ms: 250,
            failure_timeout_ms: 400,
            hold_timeout_ms: 30_000,
        }
    }
}

impl HealthConfig {
    /// `probe_interval_ms` as a `Duration`.
    pub fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.probe_interval_ms)
    }

    /// `probe_timeout_ms` as a `Duration`.
    pub fn probe_timeout(&self) -> Duration {
        Duration::from_millis(self.probe_timeout_ms)
    }

    /// `failure_timeout_ms` as a `Duration`.
    pub fn failure_timeout(&self) -> Duration {
        Duration::from_millis(self.failure_timeout_ms)
    }

    /// `hold_timeout_ms` as a `Duration`.
    pub fn hold_timeout(&self) -> Duration {
        Duration::from_millis(self.hold_timeout_ms)
    }
}

/// Where the proxy gets role secrets from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Look the role's secret up on the server with `auth_query` (like PgBouncer's
    /// `auth_query`); `[[users]]` entries take precedence.
    Passthrough,
    /// Only `[[users]]` may log in.
    Userlist,
}

/// A client authentication method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AuthMethod {
    /// SCRAM-SHA-256 (`scram-sha-256`).
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    /// MD5 challenge (`md5`).
    #[serde(rename = "md5")]
    Md5,
    /// No password (`trust`).
    #[serde(rename = "trust")]
    Trust,
}

impl AuthMode {
    /// Every mode as written in the config.
    pub const NAMES: &'static [&'static str] = &["passthrough", "userlist"];

    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Passthrough => "passthrough",
            AuthMode::Userlist => "userlist",
        }
    }
}

impl AuthMethod {
    /// Every method as written in the config.
    pub const NAMES: &'static [&'static str] = &["scram-sha-256", "md5", "trust"];

    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ScramSha256 => "scram-sha-256",
            AuthMethod::Md5 => "md5",
            AuthMethod::Trust => "trust",
        }
    }
}

/// A value that is not one of the allowed names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected one of {}, got {given:?}", quoted(.expected))]
pub struct UnknownName {
    /// The text given.
    pub given: String,
    /// The allowed names.
    pub expected: &'static [&'static str],
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for AuthMode {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "passthrough" => Ok(AuthMode::Passthrough),
            "userlist" => Ok(AuthMode::Userlist),
            _ => Err(UnknownName {
                given: s.to_owned(),
                expected: AuthMode::NAMES,
            }),
        }
    }
}

impl FromStr for AuthMethod {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "scram-sha-256" => Ok(AuthMethod::ScramSha256),
            "md5" => Ok(AuthMethod::Md5),
            "trust" => Ok(AuthMethod::Trust),
            _ => Err(UnknownName {
                given: s.to_owned(),
                expected: AuthMethod::NAMES,
            }),
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for AuthMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

impl Config {
    /// The configuration `understudy up` starts from: every key at its default and no
    /// servers yet; the embedded orchestrator appends the `[[servers]]` it starts before
    /// calling [`Config::validate`].
    pub fn default_for_embedded() -> Config {
        Config::default()
    }

    /// The authentication method for a client: the first `[[auth.hba]]` rule that
    /// matches, else `auth.method`.
    pub fn hba_method(&self, user: &str, database: &str, addr: IpAddr) -> AuthMethod {
        self.auth
            .hba
            .iter()
            .find(|rule| rule.matches(user, database, addr))
            .map_or(self.auth.method, |rule| rule.method)
    }

    /// The `[[users]]` entry named `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
}
