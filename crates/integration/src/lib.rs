//! Shared set-up of the integration tests: a real PostgreSQL cluster
//! (from `understudy-testkit`) with an understudy proxy in front of it, run
//! in the test's own runtime, and helpers to run the same client code
//! directly and through the proxy.
//!
//! # Layout
//! - [`Harness`]: cluster + proxy, connection helpers.
//! - [`Target`]: direct to PostgreSQL, or through understudy.
//! - [`connect_with`], [`sqlstate`], [`render`]: client helpers shared by the scenarios.
//! - [`RawConn`]: a bare protocol connection, for tests that look at the
//!   messages themselves (startup, BackendKeyData, CancelRequest).
//! - [`application`]: applications on other languages' drivers, run
//!   through a failover or a switchover.
//! - The scenarios are in `tests/`, one file each.

pub mod application;
pub mod certs;
pub mod run_process;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};
use understudy_auth::{ScramClient, ScramCredential};
use understudy_config::{Config, Secret, Server};
use understudy_protocol::backend::{tag, Authentication, BackendKeyData, ErrorFields};
use understudy_protocol::frontend::{
    encode_parse, encode_sasl_response, encode_sync, SaslInitialResponse,
};
use understudy_protocol::startup::StartupMessage;
use understudy_protocol::{Frame, DEFAULT_MAX_MESSAGE_LEN};
use understudy_proxy::{topology, BackendAddr, ProxyHandle, Topology, TopologyTx};
use understudy_testkit::{TestCluster, PASSWORD, SUPERUSER};

pub use understudy_testkit;

/// Where a client connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Straight to the primary.
    Direct,
    /// Through the proxy.
    Proxy,
}

/// Both targets, for tests that compare them.
pub const BOTH: [Target; 2] = [Target::Direct, Target::Proxy];

/// A running cluster with a proxy in front of its primary.
pub struct Harness {
    /// The PostgreSQL servers.
    pub cluster: TestCluster,
    /// The proxy.
    pub proxy: ProxyHandle,
    /// The configuration the proxy runs with.
    pub config: Arc<Config>,
    /// Publishes the primary to the proxy.
    pub topology: TopologyTx,
}

impl Harness {
    /// A primary with a proxy in passthrough mode.
    pub async fn start() -> Harness {
        Harness::start_with(0, |_| {}).await
    }

    /// A primary and `standbys` standbys, with a proxy whose configuration
    /// `customize` may change (listen address and servers are set already).
    pub async fn start_with(standbys: usize, customize: impl FnOnce(&mut Config)) -> Harness {
        capture_proxy_log();
        let cluster = TestCluster::start_with_standbys(standbys).await;
        let mut config = Config::default_for_embedded();
        config.proxy.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        config.auth.auth_user = SUPERUSER.to_owned();
        config.auth.auth_password = Secret::new(PASSWORD);
        config.servers = cluster
            .nodes()
            .iter()
            .map(|node| Server {
                name: node.name().to_owned(),
                host: Ipv4Addr::LOCALHOST.to_string(),
                port: node.port(),
                patroni: None,
            })
            .collect();
        customize(&mut config);
        let config = Arc::new(config);
        let (topology, rx) = topology::channel(Topology {
            draining: false,
            lossless: false,
            successor: None,
            primary: Some(BackendAddr {
                name: cluster.primary().name().to_owned(),
                host: Ipv4Addr::LOCALHOST.to_string(),
                port: cluster.primary().port(),
            }),
        });
        let proxy = understudy_proxy::start(Arc::clone(&config), rx)
            .await
            .expect("proxy starts");
        Harness {
            cluster,
            proxy,
            config,
            topology,
        }
    }

    /// Port of `target`.
    pub fn port(&self, target: Target) -> u16 {
        match target {
            Target::Direct => self.cluster.primary().port(),
            Target::Proxy => self.proxy.local_addr().port(),
        }
    }

    /// Connection settings for `target` as `user`.
    pub fn pg_config(&self, target: Target, user: &str, password: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port(target))
            .user(user)
            .password(password)
            .dbname("postgres");
        config
    }

    /// A libpq connection string for `target` as the superuser.
    pub fn conninfo(&self, target: Target) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} password={PASSWORD} dbname=postgres",
            self.port(target)
        )
    }

    /// Connects to `target` as the superuser.
    pub async fn connect(&self, target: Target) -> Client {
        self.connect_as(target, SUPERUSER, PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("connecting to {target:?}: {e}"))
    }

    /// Connects to `target` as `user`; the connection runs in a spawned task.
    pub async fn connect_as(
        &self,
        target: Target,
        user: &str,
        password: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        connect_with(&self.pg_config(target, user, password)).await
    }
}

/// Connects with `config`; the connection runs in a spawned task.
pub async fn connect_with(
    config: &tokio_postgres::Config,
) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    let _task: JoinHandle<()> = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The SQLSTATE of a failed call, or `"none"` when the error carries none
/// (an I/O error, a closed connection).
pub fn sqlstate(error: &tokio_postgres::Error) -> String {
    error
        .code()
        .map_or_else(|| "none".to_owned(), |c| c.code().to_owned())
}

/// Renders every row of a simple-protocol result as text, for comparisons.
pub fn render(messages: &[tokio_postgres::SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => (0..row.len())
                .map(|i| row.get(i).unwrap_or("NULL").to_owned())
                .collect::<Vec<_>>()
                .join("|"),
            tokio_postgres::SimpleQueryMessage::CommandComplete(n) => format!("complete {n}"),
            _ => "other".to_owned(),
        })
        .collect()
}

/// How long a [`RawConn`] waits for the peer before the test fails.
const RAW_TIMEOUT: Duration = Duration::from_secs(10);

/// The number in the environment variable `name`, 0 when it is not set:
/// the model tests draw their default sequences with 0, others with it.
pub fn seed_from_env(name: &str) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {value:?}")),
        Err(_) => 0,
    }
}

/// A bare protocol connection: the test writes bytes and reads whole
/// messages. Every read fails the test after 10 s instead of hanging.
pub struct RawConn {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawConn {
    /// Opens a TCP connection to `port` on 127.0.0.1.
    pub async fn connect(port: u16) -> RawConn {
        let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .unwrap_or_else(|e| panic!("connecting to port {port}: {e}"));
        RawConn {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Writes `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("writing to the peer");
    }

    /// Writes `bytes`, returning the error instead of failing the test: for
    /// peers that may close the connection before reading everything.
    pub async fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Closes the writing half: the peer reads end of stream.
    pub async fn shutdown_write(&mut self) {
        self.stream
            .shutdown()
            .await
            .expect("closing the writing half");
    }

    /// Sends a StartupMessage with protocol `version` (major << 16 | minor).
    pub async fn send_startup(&mut self, version: i32, params: &[(&str, &str)]) {
        let mut out = BytesMut::new();
        StartupMessage {
            version,
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
        .encode(&mut out);
        self.send(&out).await;
    }

    /// Reads one byte (the answer to SSLRequest or GSSENCRequest).
    pub async fn read_byte(&mut self) -> u8 {
        if self.buf.is_empty() && !self.fill().await {
            panic!("the peer closed the connection instead of answering");
        }
        let b = self.buf[0];
        let _ = self.buf.split_to(1);
        b
    }

    /// Reads one tagged message; `None` when the peer closed the connection
    /// at a message boundary.
    pub async fn read_frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) =
                Frame::decode(&mut self.buf, DEFAULT_MAX_MESSAGE_LEN).expect("a valid message")
            {
                return Some(frame);
            }
            if !self.fill().await {
                assert!(
                    self.buf.is_empty(),
                    "the peer closed the connection in the middle of a message"
                );
                return None;
            }
        }
    }

    /// Reads one tagged message; `Err` with the bytes left over when the
    /// peer closed the connection, at a message boundary (none left) or in
    /// the middle of a message (the part of it that came).
    pub async fn read_frame_or_close(&mut self) -> Result<Frame, Vec<u8>> {
        loop {
            if let Some(frame) =
                Frame::decode(&mut self.buf, DEFAULT_MAX_MESSAGE_LEN).expect("a valid message")
            {
                return Ok(frame);
            }
            if !self.fill().await {
                return Err(self.buf.split().to_vec());
            }
        }
    }

    /// Reads one message and fails the test when it is not a `tag` message.
    pub async fn expect_frame(&mut self, tag: u8) -> Frame {
        let frame = self
            .read_frame()
            .await
            .unwrap_or_else(|| panic!("connection closed; expected a {:?} message", tag as char));
        if frame.tag != tag {
            panic!(
                "expected a {:?} message, got {:?}: {}",
                tag as char,
                frame.tag as char,
                describe(&frame)
            );
        }
        frame
    }

    /// Reads messages of the types `tags`, in that order, and fails the test
    /// at the first other one.
    pub async fn expect_frames(&mut self, tags: &[u8]) {
        for &tag in tags {
            self.expect_frame(tag).await;
        }
    }

    /// Reads one message, which must be an ErrorResponse, and returns its fields.
    pub async fn expect_error(&mut self) -> ErrorFields {
        let frame = self.expect_frame(tag::ERROR_RESPONSE).await;
        ErrorFields::parse(&frame.body).expect("a valid ErrorResponse")
    }

    /// True when the peer has closed the connection and sent nothing more.
    pub async fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill().await
    }

    /// Every byte the peer sends until it closes the connection.
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        while self.fill().await {}
        self.buf.split().to_vec()
    }

    /// Logs in as `user` with SCRAM-SHA-256 (protocol 3.0, database
    /// `postgres`) and reads up to ReadyForQuery; returns the BackendKeyData.
    pub async fn login(port: u16, user: &str, password: &str) -> (RawConn, BackendKeyData) {
        let mut conn = RawConn::connect(port).await;
        conn.send_startup(
            understudy_protocol::PROTOCOL_VERSION_3_0,
            &[("user", user), ("database", "postgres")],
        )
        .await;
        let frames = conn.finish_login(password).await;
        let key = frames
            .iter()
            .find(|f| f.tag == tag::BACKEND_KEY_DATA)
            .map(|f| BackendKeyData::parse(&f.body).expect("a valid BackendKeyData"))
            .expect("a BackendKeyData before ReadyForQuery");
        (conn, key)
    }

    /// After a StartupMessage: answers SCRAM-SHA-256 with `password` and
    /// reads up to ReadyForQuery. Returns every message received, in order.
    pub async fn finish_login(&mut self, password: &str) -> Vec<Frame> {
        let mut scram: Option<ScramClient> = None;
        let mut frames = Vec::new();
        loop {
            let frame = self.read_frame().await.expect("the startup to go on");
            let mut out = BytesMut::new();
            match frame.tag {
                tag::AUTHENTICATION => {
                    match Authentication::parse(&frame.body).expect("a valid request") {
                        Authentication::Sasl { .. } => {
                            let client =
                                ScramClient::new(ScramCredential::Password(password.to_owned()));
                            SaslInitialResponse {
                                mechanism: "SCRAM-SHA-256".to_owned(),
                                data: client.client_first(),
                            }
                            .encode(&mut out);
                            scram = Some(client);
                        }
                        Authentication::SaslContinue { data } => {
                            let reply = scram
                                .as_mut()
                                .expect("SASL started")
                                .server_first(&data)
                                .expect("server-first");
                            encode_sasl_response(&reply, &mut out);
                        }
                        Authentication::SaslFinal { data } => {
                            scram
                                .as_mut()
                                .expect("SASL started")
                                .server_final(&data)
                                .expect("the server proves it knows the secret");
                        }
                        Authentication::Ok => {}
                        other => panic!("unexpected authentication request {other:?}"),
                    }
                }
                tag::ERROR_RESPONSE => panic!("login refused: {}", describe(&frame)),
                _ => {}
            }
            let done = frame.tag == tag::READY_FOR_QUERY;
            frames.push(frame);
            if done {
                return frames;
            }
            if !out.is_empty() {
                self.send(&out).await;
            }
        }
    }

    /// After an extended batch failed: sends the Sync the server skips to,
    /// with a Parse of `sql` as statement `name` and its own Sync right
    /// behind it (as a driver does once it reads the error), and reads both
    /// answers.
    pub async fn sync_and_prepare(&mut self, name: &str, sql: &str) {
        let mut out = BytesMut::new();
        encode_sync(&mut out);
        encode_parse(name, sql, &mut out);
        encode_sync(&mut out);
        self.send(&out).await;
        self.expect_frame(tag::READY_FOR_QUERY).await;
        self.expect_frame(tag::PARSE_COMPLETE).await;
        self.expect_frame(tag::READY_FOR_QUERY).await;
    }

    /// Sends a simple query and returns every message up to and including
    /// ReadyForQuery.
    pub async fn simple_query(&mut self, sql: &str) -> Vec<Frame> {
        self.simple_query_bytes(sql.as_bytes()).await
    }

    /// Sends a simple query of `sql` in the session's client encoding and
    /// returns every message up to and including ReadyForQuery.
    pub async fn simple_query_bytes(&mut self, sql: &[u8]) -> Vec<Frame> {
        let mut out = BytesMut::new();
        let mut w = understudy_protocol::FrameWriter::tagged(&mut out, b'Q');
        w.bytes(sql).u8(0);
        w.finish();
        self.send(&out).await;
        let mut frames = Vec::new();
        loop {
            let frame = self.read_frame().await.expect("an answer to the query");
            let done = frame.tag == tag::READY_FOR_QUERY;
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    /// True when the session's backend has a prepared statement `name`
    /// (asked with a simple query on this connection).
    pub async fn has_prepared_statement(&mut self, name: &str) -> bool {
        let frames = self
            .simple_query(&format!(
                "select count(*) from pg_prepared_statements where name = {}",
                understudy_testkit::quote_literal(name)
            ))
            .await;
        let row = frames
            .iter()
            .find(|f| f.tag == tag::DATA_ROW)
            .expect("a row");
        data_row_text(&row.body, 0).as_deref() != Some("0")
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self) -> bool {
        self.buf.reserve(8 * 1024);
        match tokio::time::timeout(RAW_TIMEOUT, self.stream.read_buf(&mut self.buf)).await {
            Ok(Ok(n)) => n > 0,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => false,
            Ok(Err(e)) => panic!("reading from the peer: {e}"),
            Err(_) => panic!("the peer sent nothing for {RAW_TIMEOUT:?}"),
        }
    }
}

/// Appends a Bind of `statement` to `portal` with `params` in text format
/// and text results.
pub fn encode_bind_text(portal: &str, statement: &str, params: &[&str], out: &mut BytesMut) {
    let mut w =
        understudy_protocol::FrameWriter::tagged(out, understudy_protocol::frontend::tag::BIND);
    w.cstr(portal).cstr(statement).i16(0);
    w.i16(params.len() as i16);
    for param in params {
        w.i32(param.len() as i32).bytes(param.as_bytes());
    }
    w.i16(0);
    w.finish();
}

/// A message, readable in a failure message.
pub fn describe(frame: &Frame) -> String {
    match frame.tag {
        tag::ERROR_RESPONSE | tag::NOTICE_RESPONSE => match ErrorFields::parse(&frame.body) {
            Ok(fields) => fields.to_string(),
            Err(e) => format!("malformed: {e}"),
        },
        t => format!("{:?} message of {} bytes", t as char, frame.body.len()),
    }
}

/// The text value of column `column` of a DataRow body (`None` for NULL).
pub fn data_row_text(body: &[u8], column: usize) -> Option<String> {
    let mut r = understudy_protocol::reader::BodyReader::new(body, "DataRow");
    let count = r.i16("column count").expect("a valid DataRow");
    assert!(column < count as usize, "DataRow has {count} columns");
    for i in 0..=column {
        let len = r.i32("value length").expect("a valid DataRow");
        if len < 0 {
            if i == column {
                return None;
            }
            continue;
        }
        let value = r.bytes(len as usize, "value").expect("a valid DataRow");
        if i == column {
            return Some(String::from_utf8(value.to_vec()).expect("a text value"));
        }
    }
    unreachable!("the loop returns at the column")
}

/// How long failover steps of the tests may take.
pub const FAILOVER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

impl Harness {
    /// Kills the primary's postmaster (`kill -9`), promotes the first
    /// standby and points the proxy at it.
    pub async fn fail_over(&mut self) {
        self.cluster
            .primary()
            .kill(nix::sys::signal::Signal::SIGKILL)
            .expect("kill the primary");
        self.promote_standby().await;
    }

    /// After the primary was killed: waits until none of its processes is
    /// left, promotes the first standby and points the proxy at it.
    pub async fn promote_standby(&mut self) {
        let primary = self.cluster.primary().clone();
        let gone = understudy_testkit::wait_until(FAILOVER_DEADLINE, || {
            let primary = primary.clone();
            async move { primary.processes().is_empty() }
        })
        .await;
        assert!(gone, "the old primary's processes are gone");
        self.cluster
            .standby_mut(0)
            .promote()
            .await
            .expect("promote");
        let standby = self.cluster.standby(0);
        self.topology.send_replace(Topology {
            draining: false,
            lossless: false,
            successor: None,
            primary: Some(BackendAddr {
                name: standby.name().to_owned(),
                host: Ipv4Addr::LOCALHOST.to_string(),
                port: standby.port(),
            }),
        });
    }

    /// A planned switchover to the first standby, done by hand the way the
    /// orchestrator does it: the standby is published as the successor while
    /// the primary drains (sessions park at their next transaction boundary
    /// and open their next backends on the standby), the standby catches up,
    /// the primary is shut down cleanly, the standby promoted and published.
    pub async fn switch_over(&mut self) {
        let addr = |node: &understudy_testkit::understudy_cluster::Node| BackendAddr {
            name: node.name().to_owned(),
            host: Ipv4Addr::LOCALHOST.to_string(),
            port: node.port(),
        };
        self.topology.send_replace(Topology {
            draining: true,
            lossless: false,
            successor: Some(addr(self.cluster.standby(0))),
            primary: Some(addr(self.cluster.primary())),
        });
        tokio::time::timeout(FAILOVER_DEADLINE, self.proxy.drain_handle().wait_parked())
            .await
            .expect("sessions parked");
        self.wait_replicated().await;
        self.cluster
            .primary_mut()
            .stop(understudy_testkit::understudy_cluster::StopMode::Fast)
            .await
            .expect("stop the primary");
        self.cluster
            .standby_mut(0)
            .promote()
            .await
            .expect("promote");
        self.topology.send_replace(Topology {
            draining: false,
            lossless: true,
            successor: None,
            primary: Some(addr(self.cluster.standby(0))),
        });
    }

    /// The `id`s in `table` on the first standby (the new primary after a
    /// failover), in order.
    pub async fn ids_on_new_primary(&self, table: &str) -> Vec<i32> {
        self.cluster
            .connect_to(1)
            .await
            .query(&format!("select id from {table} order by id"), &[])
            .await
            .expect("read the new primary")
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Makes the first standby synchronous, with `synchronous_commit` at
    /// `level` (`on`: a COMMIT waits until the standby has flushed it;
    /// `remote_apply`: until it has applied it).
    pub async fn make_standby_synchronous(&self, level: &str) {
        let admin = self.cluster.connect().await;
        for sql in [
            "alter system set synchronous_standby_names = '*'".to_owned(),
            format!("alter system set synchronous_commit = '{level}'"),
            "select pg_reload_conf()".to_owned(),
        ] {
            admin
                .batch_execute(&sql)
                .await
                .expect("configure the primary");
        }
        let ready = understudy_testkit::wait_until(FAILOVER_DEADLINE, || {
            let admin = &admin;
            async move {
                admin
                    .query_one(
                        "select count(*) from pg_stat_replication where sync_state = 'sync'",
                        &[],
                    )
                    .await
                    .map(|r| r.get::<_, i64>(0) == 1)
                    .unwrap_or(false)
            }
        })
        .await;
        assert!(ready, "the standby is synchronous");
    }

    /// Waits until a backend of the primary waits for synchronous
    /// replication (its commit is written, not yet acknowledged); returns
    /// its pid.
    pub async fn commit_waiting_for_the_standby(&self) -> i32 {
        let admin = self.cluster.connect().await;
        let waiting = "select pid from pg_stat_activity where wait_event = 'SyncRep'";
        let admin = &admin;
        let found = understudy_testkit::wait_until(FAILOVER_DEADLINE, || async move {
            admin
                .query(waiting, &[])
                .await
                .is_ok_and(|rows| rows.len() == 1)
        })
        .await;
        assert!(found, "a commit waits for the standby");
        admin
            .query_one(waiting, &[])
            .await
            .expect("the waiting backend")
            .get(0)
    }

    /// Freezes the primary's WAL sender (SIGSTOP): what commits from now on
    /// never leaves the primary. Returns its pid, for the test to kill it
    /// with the primary.
    pub async fn freeze_wal_sender(&self) -> i32 {
        let sender: i32 = self
            .cluster
            .connect()
            .await
            .query_one("select pid from pg_stat_replication", &[])
            .await
            .expect("the primary has a WAL sender")
            .get(0);
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(sender),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .expect("freeze the WAL sender");
        sender
    }

    /// Waits until the first standby has replayed everything the primary
    /// wrote so far.
    pub async fn wait_replicated(&self) {
        let primary = self.cluster.connect().await;
        let standby = self.cluster.connect_to(1).await;
        // WAL written by transactions still open is not flushed, nor sent,
        // until the WAL writer gets to it (seconds, when it hibernates); a
        // commit that took a transaction id flushes everything before it.
        primary
            .batch_execute("select pg_catalog.txid_current()")
            .await
            .expect("flush the WAL");
        let lsn: String = primary
            .query_one("select pg_current_wal_flush_lsn()::text", &[])
            .await
            .expect("read the WAL position")
            .get(0);
        let caught_up = understudy_testkit::wait_until(FAILOVER_DEADLINE, || {
            let standby = &standby;
            let lsn = lsn.clone();
            async move {
                standby
                    .query_one(
                        "select pg_last_wal_replay_lsn() >= $1::text::pg_lsn",
                        &[&lsn],
                    )
                    .await
                    .map(|row| row.get::<_, bool>(0))
                    .unwrap_or(false)
            }
        })
        .await;
        assert!(caught_up, "the standby caught up");
    }
}

/// The `understudy` binary built in the same target directory as the
/// running test (`cargo build -p understudy` builds it; `scripts/test` does).
pub fn understudy_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/understudy
    let bin = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .join("understudy");
    assert!(
        bin.is_file(),
        "{} does not exist: build it first with `cargo build -p understudy`",
        bin.display()
    );
    bin
}

/// A free TCP port on 127.0.0.1, distinct from every port this test
/// process picked before (see `understudy_cluster::free_port`).
pub fn free_port() -> u16 {
    understudy_testkit::understudy_cluster::free_port().expect("a free port")
}

/// Sends the log (the proxy's `info` lines and every crate's warnings, or
/// what `RUST_LOG` asks for) to the test's captured output: a failing test
/// shows what the proxy said, a passing one prints nothing. The tokio
/// runtime of a test inherits its capture, so each test gets its own
/// proxy's lines.
fn capture_proxy_log() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,understudy_proxy=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}
