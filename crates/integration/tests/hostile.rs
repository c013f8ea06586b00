//! Hostile clients against a running `understudy run` process in front of a
//! real PostgreSQL. One proxy process serves the whole suite: it is never
//! restarted (same pid, alive at the end), its resident memory after the
//! suite is within 20% of before, no session was moved (no hostile input
//! passed for a lost server) and only the good session is left; during
//! every case a well-behaved tokio-postgres session keeps getting correct
//! results.
//!
//! Expected outcomes ("closed" = the connection ends; FATAL errors are
//! followed by the close):
//!
//! | case                                     | understudy answers                 | PostgreSQL 15 answers                      |
//! |------------------------------------------|------------------------------------|--------------------------------------------|
//! | random bytes as the first packet         | FATAL 08P01, closed                | closed, nothing sent (logs 08P01)          |
//! | random bytes after login: unknown type   | FATAL 08P01, closed                | FATAL 08P01, closed                        |
//! | … a known type, length over its limit    | FATAL 08P01, closed                | closed, nothing sent (logs 08P01)          |
//! | … a known type, length within it         | waits for the rest                 | same                                       |
//! | startup length 2^31-1                    | FATAL 08P01, closed                | closed, nothing sent (logs 08P01)          |
//! | message length 2^31-1 after login        | FATAL 08P01, closed                | closed, nothing sent (logs 08P01)          |
//! | startup length below 8 (here 3)          | FATAL 08P01, closed                | closed, nothing sent (logs 08P01)          |
//! | message length below 4 after login       | FATAL 08P01, closed                | closed, nothing sent (logs 08P01)          |
//! | Sync of 20 000 bytes (limit 10 000)      | FATAL 08P01, closed                | closed, nothing sent (logs 08P01)          |
//! | password message of 2^30 bytes           | FATAL 08P01 at once, closed        | FATAL 28P01, closed                        |
//! | truncated startup packet, then silence   | FATAL 08P01 after startup_timeout  | closed after authentication_timeout (60 s) |
//! | truncated Query after login, silence     | waits; the rest of it is answered  | same                                       |
//! | unknown message type before auth         | FATAL 08P01, closed                | FATAL 08P01, closed                        |
//! | unknown message type after login         | FATAL 08P01, closed                | FATAL 08P01, closed (same message)         |
//! | … its header only, announcing 1000 bytes | FATAL 08P01 at once, closed        | same                                       |
//! | startup packet with 10 000 parameters    | FATAL 08P01, closed                | closed, nothing sent (logs 08P01)          |
//! | CancelRequest with a random key          | closed, nothing cancelled          | same                                       |
//! | 2000 connections opened and closed       | no descriptor or session left over | —                                          |
//! | client stops reading a large result      | backpressure, RSS flat             | server waits in ClientWrite                |
//! | SQL in `user`                            | FATAL 28P01                        | FATAL 28P01                                |
//! | SQL in `database`                        | FATAL 3D000 (the server's)         | FATAL 3D000                                |
//! | SQL in `application_name`                | accepted, stored verbatim          | same                                       |
//! | SQL in `options`                         | FATAL 42601 (the server's)         | FATAL 42601                                |
//!
//! Where understudy answers and PostgreSQL does not, PostgreSQL reports the
//! violation only in its log (COMMERROR) and closes; understudy also tells
//! the client why. On an oversized authentication message PostgreSQL fails
//! the authentication (28P01); understudy names the protocol violation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use futures_util::stream::{self, StreamExt};
use rand::{Rng, RngCore};
use tokio_postgres::{Client, SimpleQueryMessage};
use understudy_integration::run_process::{servers_config, RunProcess};
use understudy_integration::understudy_testkit::{wait_until, TestCluster, PASSWORD, SUPERUSER};
use understudy_integration::{connect_with, data_row_text, sqlstate, RawConn};
use understudy_protocol::backend::{tag, Authentication, ErrorFields};
use understudy_protocol::frontend::encode_query;
use understudy_protocol::startup::CancelRequest;
use understudy_protocol::{FrameWriter, PROTOCOL_VERSION_3_0};

/// The proxy's startup timeout in this suite: short, but long enough for a
/// SCRAM login of a debug build on a busy machine.
const STARTUP_TIMEOUT: Duration = Duration::from_millis(3000);
/// How long any expected event may take.
const DEADLINE: Duration = Duration::from_secs(30);
/// Rows of the table the injection attempts try to drop.
const VICTIM_ROWS: i64 = 3;
/// An injection payload.
const DROP_VICTIM: &str = "x'; DROP TABLE victim; --";

/// Starts the suite's `understudy run` in front of `cluster`'s primary,
/// with a short startup timeout.
async fn start_proxy(cluster: &TestCluster) -> RunProcess {
    let config = format!(
        "[proxy]\nstartup_timeout_ms = {timeout}\n{servers}",
        timeout = STARTUP_TIMEOUT.as_millis(),
        servers = servers_config(cluster),
    );
    RunProcess::start(&config, "info").await
}

fn pg_config(port: u16, user: &str, password: &str, database: &str) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(user)
        .password(password)
        .dbname(database)
        .connect_timeout(DEADLINE);
    config
}

/// Everything the cases share.
struct Suite {
    cluster: TestCluster,
    proxy: RunProcess,
    /// The well-behaved session, through the proxy.
    good: Client,
    /// A direct connection for observing the server.
    observer: Client,
}

impl Suite {
    fn pg_port(&self) -> u16 {
        self.cluster.primary().port()
    }

    /// One query of the good session, with a result that depends on `n`.
    async fn good_query(&self, n: i64) {
        let row = self
            .good
            .query_one("select $1::int8 * 2, (select count(*) from victim)", &[&n])
            .await
            .expect("the good session keeps working");
        assert_eq!(
            row.get::<_, i64>(0),
            n * 2,
            "the good session gets its own result"
        );
        assert_eq!(row.get::<_, i64>(1), VICTIM_ROWS);
    }

    /// Runs `case` while the good session runs queries, until the case is
    /// over and one more query succeeded.
    async fn alongside_good_session(&self, case: impl std::future::Future<Output = ()>) {
        let done = AtomicBool::new(false);
        let case = async {
            case.await;
            done.store(true, Ordering::SeqCst);
        };
        let good = async {
            let mut n = 0i64;
            loop {
                let finished = done.load(Ordering::SeqCst);
                self.good_query(n).await;
                n += 1;
                if finished {
                    return n;
                }
                tokio::task::yield_now().await;
            }
        };
        let ((), queries) = tokio::join!(case, good);
        assert!(queries >= 1);
    }

    async fn login(&self, port: u16) -> RawConn {
        RawConn::login(port, SUPERUSER, PASSWORD).await.0
    }
}

/// The error of a connection attempt that must fail.
async fn refusal(config: &tokio_postgres::Config) -> tokio_postgres::Error {
    match connect_with(config).await {
        Ok(_) => panic!("the connection was accepted"),
        Err(e) => e,
    }
}

/// Reads a FATAL ErrorResponse with `code`, then the end of the connection.
async fn expect_fatal_then_close(conn: &mut RawConn, code: &str) -> ErrorFields {
    let fields = conn.expect_error().await;
    assert_eq!(fields.code, code, "error {fields}");
    assert!(fields.is_fatal(), "error {fields} is FATAL");
    assert!(conn.closed().await, "the connection closes after {fields}");
    fields
}

/// Reads to the end of the connection and fails if anything was sent.
async fn expect_silent_close(conn: &mut RawConn) {
    let rest = conn.read_to_end().await;
    assert!(
        rest.is_empty(),
        "expected a silent close, got {} bytes",
        rest.len()
    );
}

fn tagged(tag_byte: u8, body: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    let mut w = FrameWriter::tagged(&mut out, tag_byte);
    w.bytes(body);
    w.finish();
    out
}

/// A header announcing a `len`-byte message (length field included).
fn header(tag_byte: Option<u8>, len: i32) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(tag_byte);
    out.put_i32(len);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_never_harm_the_proxy_or_other_sessions() {
    let cluster = TestCluster::start().await;
    let observer = cluster.connect().await;
    observer
        .batch_execute(
            "create table victim (id int primary key); insert into victim values (1), (2), (3)",
        )
        .await
        .expect("create the victim table");
    let proxy = start_proxy(&cluster).await;
    let good = connect_with(&pg_config(
        proxy.proxy_port,
        SUPERUSER,
        PASSWORD,
        "postgres",
    ))
    .await
    .expect("the good session connects through the proxy");
    let mut suite = Suite {
        cluster,
        proxy,
        good,
        observer,
    };
    // Warm up: a few sessions, so the baseline includes what every session
    // allocates once (the secret lookup's control connection, the ledger).
    for n in 0..3 {
        let mut conn = suite.login(suite.proxy.proxy_port).await;
        conn.simple_query("select 1").await;
        suite.good_query(n).await;
    }
    let pid = suite.proxy.pid();
    let rss_before = suite.proxy.rss_kib();

    random_bytes_as_the_first_packet(&suite).await;
    random_bytes_after_login(&suite).await;
    length_prefix_of_2_pow_31_minus_1(&suite).await;
    length_below_the_minimum(&suite).await;
    length_over_the_server_limit_of_its_type(&suite).await;
    huge_password_message_during_authentication(&suite).await;
    truncated_startup_then_silence(&suite).await;
    truncated_query_then_silence(&suite).await;
    unknown_message_type_before_authentication(&suite).await;
    unknown_message_type_after_authentication(&suite).await;
    startup_packet_with_ten_thousand_parameters(&suite).await;
    cancel_request_with_a_random_key(&suite).await;
    thousands_of_connections_opened_and_closed(&suite).await;
    client_that_stops_reading_a_large_result(&suite).await;
    sql_injection_in_startup_parameters(&suite).await;

    assert!(
        suite.proxy.alive(),
        "the proxy exited: {}",
        suite.proxy.output()
    );
    assert_eq!(suite.proxy.pid(), pid, "the proxy was never restarted");
    suite.good_query(-1).await;
    // No hostile input passed for a lost server, and only the good session
    // is left.
    assert_eq!(
        suite.proxy.metric("understudy_sessions_moved_total").await,
        0
    );
    let only_the_good_one = wait_until(DEADLINE, || async {
        suite.proxy.metric("understudy_client_connections").await == 1
            && suite.proxy.metric("understudy_sessions").await == 1
    })
    .await;
    assert!(only_the_good_one, "every hostile connection is gone");
    let rss_after = suite.proxy.rss_kib();
    let limit = rss_before + rss_before / 5;
    assert!(
        rss_after <= limit,
        "proxy RSS grew from {rss_before} KiB to {rss_after} KiB (limit {limit} KiB)"
    );
    eprintln!("proxy RSS before the suite {rss_before} KiB, after {rss_after} KiB");
}

/// Random bytes whose first four, read as a startup packet length, are not
/// a plausible one (a plausible one makes it a startup packet, see the
/// other cases).
async fn random_bytes_as_the_first_packet(s: &Suite) {
    s.alongside_good_session(async {
        let mut rng = rand::thread_rng();
        for _ in 0..20 {
            let mut bytes = vec![0u8; 1024];
            loop {
                rng.fill_bytes(&mut bytes);
                let len = i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                if !(8..=10_000).contains(&len) {
                    break;
                }
            }
            let mut proxy = RawConn::connect(s.proxy.proxy_port).await;
            let _ = proxy.try_send(&bytes).await;
            let fields = expect_fatal_then_close(&mut proxy, "08P01").await;
            assert!(fields.message.contains("startup packet length"), "{fields}");

            let mut direct = RawConn::connect(s.pg_port()).await;
            let _ = direct.try_send(&bytes).await;
            expect_silent_close(&mut direct).await;
        }
    })
    .await;
}

/// PostgreSQL's limit for the length field of a client message of type
/// `tag` (`SocketBackend` in postgres.c), `None` for an unknown type.
fn postgres_length_limit(tag: u8) -> Option<i64> {
    match tag {
        b'Q' | b'F' | b'B' | b'P' | b'd' => Some(0x3fff_fffe),
        b'X' | b'C' | b'D' | b'E' | b'H' | b'S' | b'c' | b'f' => Some(10_000),
        _ => None,
    }
}

/// Random bytes after login. PostgreSQL's rules decide the outcome from the
/// first five: an unknown type ends the session at once with 08P01; so does
/// a length outside the type's limit (PostgreSQL itself closes silently);
/// any other length announces more than was sent, and nothing is answered.
async fn random_bytes_after_login(s: &Suite) {
    s.alongside_good_session(async {
        let mut rng = rand::thread_rng();
        for _ in 0..30 {
            let mut bytes = vec![0u8; 64];
            let (tag, len) = loop {
                rng.fill_bytes(&mut bytes);
                let len = i32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
                // A complete random message would be a case of its own.
                if !(4..64).contains(&len) {
                    break (bytes[0], i64::from(len));
                }
            };
            for port in [s.proxy.proxy_port, s.pg_port()] {
                let mut conn = s.login(port).await;
                let _ = conn.try_send(&bytes).await;
                match postgres_length_limit(tag) {
                    None => {
                        let fields = expect_fatal_then_close(&mut conn, "08P01").await;
                        let expected = format!("invalid frontend message type {tag}");
                        assert!(fields.message.contains(&expected), "{fields}");
                    }
                    Some(limit) if len < 4 || len > limit => {
                        if port == s.proxy.proxy_port {
                            expect_fatal_then_close(&mut conn, "08P01").await;
                        } else {
                            expect_silent_close(&mut conn).await;
                        }
                    }
                    Some(_) => {
                        let answer =
                            tokio::time::timeout(Duration::from_millis(500), conn.read_frame())
                                .await;
                        assert!(answer.is_err(), "nothing is answered to part of a message");
                    }
                }
            }
        }
    })
    .await;
}

async fn length_prefix_of_2_pow_31_minus_1(s: &Suite) {
    s.alongside_good_session(async {
        // As the length of a startup packet.
        let mut packet = header(None, i32::MAX);
        packet.extend_from_slice(&PROTOCOL_VERSION_3_0.to_be_bytes());
        let mut proxy = RawConn::connect(s.proxy.proxy_port).await;
        proxy.send(&packet).await;
        expect_fatal_then_close(&mut proxy, "08P01").await;
        let mut direct = RawConn::connect(s.pg_port()).await;
        direct.send(&packet).await;
        expect_silent_close(&mut direct).await;

        // As the length of a Query after login.
        let mut message = header(Some(b'Q'), i32::MAX);
        message.extend_from_slice(b"select 1");
        let mut proxy = s.login(s.proxy.proxy_port).await;
        proxy.send(&message).await;
        let fields = expect_fatal_then_close(&mut proxy, "08P01").await;
        assert!(fields.message.contains("exceeds the limit"), "{fields}");
        let mut direct = s.login(s.pg_port()).await;
        direct.send(&message).await;
        expect_silent_close(&mut direct).await;
    })
    .await;
}

async fn length_below_the_minimum(s: &Suite) {
    s.alongside_good_session(async {
        let mut proxy = RawConn::connect(s.proxy.proxy_port).await;
        proxy.send(&header(None, 3)).await;
        expect_fatal_then_close(&mut proxy, "08P01").await;
        let mut direct = RawConn::connect(s.pg_port()).await;
        direct.send(&header(None, 3)).await;
        expect_silent_close(&mut direct).await;

        for len in [3, 0, -1] {
            let mut proxy = s.login(s.proxy.proxy_port).await;
            proxy.send(&header(Some(b'Q'), len)).await;
            let fields = expect_fatal_then_close(&mut proxy, "08P01").await;
            assert!(fields.message.contains("at least 4"), "{fields}");
        }
        let mut direct = s.login(s.pg_port()).await;
        direct.send(&header(Some(b'Q'), 3)).await;
        expect_silent_close(&mut direct).await;
    })
    .await;
}

/// A Sync of 20 000 bytes: within the proxy's message limit, over
/// PostgreSQL's 10 000-byte limit for Sync, on which the server closes the
/// connection without a word. The proxy refuses it itself rather than take
/// the closed backend for a lost server.
async fn length_over_the_server_limit_of_its_type(s: &Suite) {
    s.alongside_good_session(async {
        let sync = tagged(b'S', &[0u8; 19_996]);
        let mut proxy = s.login(s.proxy.proxy_port).await;
        let _ = proxy.try_send(&sync).await;
        let fields = expect_fatal_then_close(&mut proxy, "08P01").await;
        assert!(
            fields.message.contains("exceeds the limit of 10000"),
            "{fields}"
        );
        let mut direct = s.login(s.pg_port()).await;
        let _ = direct.try_send(&sync).await;
        expect_silent_close(&mut direct).await;
    })
    .await;
}

/// A password message announcing 2^30 bytes while authenticating: refused
/// at once, nothing reserved for it.
async fn huge_password_message_during_authentication(s: &Suite) {
    s.alongside_good_session(async {
        let mut codes = Vec::new();
        for port in [s.proxy.proxy_port, s.pg_port()] {
            let mut conn = RawConn::connect(port).await;
            conn.send_startup(
                PROTOCOL_VERSION_3_0,
                &[("user", SUPERUSER), ("database", "postgres")],
            )
            .await;
            conn.expect_frame(tag::AUTHENTICATION).await;
            let mut message = header(Some(b'p'), 1 << 30);
            message.extend_from_slice(b"SCRAM-SHA-256\0");
            conn.send(&message).await;
            let fields = conn.expect_error().await;
            assert!(fields.is_fatal() && conn.closed().await, "{fields}");
            if port == s.proxy.proxy_port {
                assert!(
                    fields.message.contains("exceeds the limit of 65535"),
                    "{fields}"
                );
            }
            codes.push(fields.code);
        }
        assert_eq!(codes, ["08P01", "28P01"], "understudy, then PostgreSQL");
    })
    .await;
}

/// A startup packet cut short, then nothing: the proxy drops the client
/// after its startup timeout (PostgreSQL after authentication_timeout).
async fn truncated_startup_then_silence(s: &Suite) {
    s.alongside_good_session(async {
        let mut packet = BytesMut::new();
        understudy_protocol::startup::StartupMessage::new(vec![(
            "user".to_owned(),
            SUPERUSER.to_owned(),
        )])
        .encode(&mut packet);
        // The proxy's timer starts when it accepts, which may be before
        // this task sees its connect finish: time from before the connect.
        let started = Instant::now();
        let mut proxy = RawConn::connect(s.proxy.proxy_port).await;
        proxy.send(&packet[..packet.len() / 2]).await;
        let fields = expect_fatal_then_close(&mut proxy, "08P01").await;
        let elapsed = started.elapsed();
        assert!(fields.message.contains("did not finish"), "{fields}");
        assert!(
            elapsed >= STARTUP_TIMEOUT && elapsed < STARTUP_TIMEOUT * 3,
            "dropped after {elapsed:?}, configured {STARTUP_TIMEOUT:?}"
        );

        // Silence after the startup packet, while authenticating.
        let started = Instant::now();
        let mut proxy = RawConn::connect(s.proxy.proxy_port).await;
        proxy.send(&packet).await;
        let request = proxy.expect_frame(tag::AUTHENTICATION).await;
        assert!(matches!(
            Authentication::parse(&request.body),
            Ok(Authentication::Sasl { .. })
        ));
        expect_fatal_then_close(&mut proxy, "08P01").await;
        assert!(started.elapsed() >= STARTUP_TIMEOUT);
    })
    .await;
}

/// After login, a Query cut short and silence: the session waits (the
/// startup timeout no longer applies), and answers once the rest arrives.
async fn truncated_query_then_silence(s: &Suite) {
    s.alongside_good_session(async {
        let mut proxy = s.login(s.proxy.proxy_port).await;
        let mut query = BytesMut::new();
        encode_query("select 40 + 2", &mut query);
        proxy.send(&query[..7]).await;
        let quiet =
            tokio::time::timeout(STARTUP_TIMEOUT + Duration::from_secs(1), proxy.read_frame())
                .await;
        assert!(quiet.is_err(), "nothing is answered to half a message");
        proxy.send(&query[7..]).await;
        let mut rows = Vec::new();
        loop {
            let frame = proxy.read_frame().await.expect("the answer to the query");
            match frame.tag {
                tag::DATA_ROW => rows.push(data_row_text(&frame.body, 0)),
                tag::READY_FOR_QUERY => break,
                tag::ERROR_RESPONSE => {
                    panic!("query failed: {:?}", ErrorFields::parse(&frame.body))
                }
                _ => {}
            }
        }
        assert_eq!(rows, [Some("42".to_owned())]);
    })
    .await;
}

async fn unknown_message_type_before_authentication(s: &Suite) {
    s.alongside_good_session(async {
        for port in [s.proxy.proxy_port, s.pg_port()] {
            let mut conn = RawConn::connect(port).await;
            conn.send_startup(
                PROTOCOL_VERSION_3_0,
                &[("user", SUPERUSER), ("database", "postgres")],
            )
            .await;
            conn.expect_frame(tag::AUTHENTICATION).await;
            conn.send(&tagged(b'@', b"hello")).await;
            expect_fatal_then_close(&mut conn, "08P01").await;
        }
    })
    .await;
}

/// A whole message of an unknown type, and the header alone of one that
/// announces 1000 bytes: PostgreSQL refuses both on the type byte.
async fn unknown_message_type_after_authentication(s: &Suite) {
    s.alongside_good_session(async {
        let mut header_only = header(Some(b'@'), 1000);
        header_only.extend_from_slice(b"hello");
        for message in [&tagged(b'@', b"hello")[..], &header_only[..]] {
            for port in [s.proxy.proxy_port, s.pg_port()] {
                let mut conn = s.login(port).await;
                conn.send(message).await;
                let fields = expect_fatal_then_close(&mut conn, "08P01").await;
                assert!(
                    fields.message.contains("invalid frontend message type 64"),
                    "{fields}"
                );
            }
        }
    })
    .await;
}

async fn startup_packet_with_ten_thousand_parameters(s: &Suite) {
    s.alongside_good_session(async {
        let mut params = vec![("user".to_owned(), SUPERUSER.to_owned())];
        params.extend((0..10_000).map(|i| (format!("p{i}"), "v".to_owned())));
        let mut packet = BytesMut::new();
        understudy_protocol::startup::StartupMessage::new(params).encode(&mut packet);
        let mut proxy = RawConn::connect(s.proxy.proxy_port).await;
        let _ = proxy.try_send(&packet).await;
        let fields = expect_fatal_then_close(&mut proxy, "08P01").await;
        assert!(fields.message.contains("startup packet length"), "{fields}");
        let mut direct = RawConn::connect(s.pg_port()).await;
        let _ = direct.try_send(&packet).await;
        expect_silent_close(&mut direct).await;
    })
    .await;
}

/// Cancel requests with random keys while the good session sleeps: the
/// connections are closed without an answer and the sleep ends normally.
async fn cancel_request_with_a_random_key(s: &Suite) {
    let good_pid: i32 = s
        .good
        .query_one("select pg_backend_pid()", &[])
        .await
        .expect("the good session's pid")
        .get(0);
    let sleeper = async {
        let started = Instant::now();
        let rows = s
            .good
            .simple_query("select pg_sleep(1.5), 'slept'")
            .await
            .expect("pg_sleep is not cancelled");
        assert!(started.elapsed() >= Duration::from_millis(1500));
        rows
    };
    let canceller = async {
        let sleeping = wait_until(DEADLINE, || async {
            s.observer
                .query_one(
                    "select count(*) from pg_stat_activity \
                     where pid = $1 and state = 'active' and query like '%pg_sleep%'",
                    &[&good_pid],
                )
                .await
                .expect("pg_stat_activity")
                .get::<_, i64>(0)
                == 1
        })
        .await;
        assert!(sleeping, "the good session runs its pg_sleep");
        let mut rng = rand::thread_rng();
        for _ in 0..50 {
            let mut out = BytesMut::new();
            CancelRequest {
                process_id: rng.gen(),
                secret_key: rng.gen(),
            }
            .encode(&mut out);
            // Also the good session's backend pid, with a wrong key.
            let mut guess = BytesMut::new();
            CancelRequest {
                process_id: good_pid,
                secret_key: rng.gen(),
            }
            .encode(&mut guess);
            for packet in [out, guess] {
                let mut conn = RawConn::connect(s.proxy.proxy_port).await;
                conn.send(&packet).await;
                expect_silent_close(&mut conn).await;
            }
        }
    };
    let (rows, ()) = tokio::join!(sleeper, canceller);
    let values: Vec<String> = rows
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(1).map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(values, ["slept"]);
    s.good_query(7).await;
}

/// 2000 connections: some closed at once, some after half a startup
/// packet, some in the middle of authentication. Afterwards the proxy holds
/// no more descriptors than before.
async fn thousands_of_connections_opened_and_closed(s: &Suite) {
    let fds_before = s.proxy.open_fds();
    s.alongside_good_session(async {
        let mut startup = BytesMut::new();
        understudy_protocol::startup::StartupMessage::new(vec![
            ("user".to_owned(), SUPERUSER.to_owned()),
            ("database".to_owned(), "postgres".to_owned()),
        ])
        .encode(&mut startup);
        let startup = startup.freeze();
        stream::iter(0..2000)
            .for_each_concurrent(32, |i| {
                let startup = startup.clone();
                async move {
                    let mut conn = RawConn::connect(s.proxy.proxy_port).await;
                    match i % 3 {
                        0 => {}
                        1 => {
                            let _ = conn.try_send(&startup[..startup.len() / 2]).await;
                        }
                        _ => {
                            conn.send(&startup).await;
                            conn.expect_frame(tag::AUTHENTICATION).await;
                        }
                    }
                    drop(conn);
                }
            })
            .await;
    })
    .await;
    let released = wait_until(DEADLINE, || async { s.proxy.open_fds() <= fds_before }).await;
    assert!(
        released,
        "the proxy holds {} descriptors, {fds_before} before the case",
        s.proxy.open_fds()
    );
}

/// A client that asks for a large result and stops reading: the server is
/// held in ClientWrite by backpressure and the proxy does not buffer it.
async fn client_that_stops_reading_a_large_result(s: &Suite) {
    let rss_before = s.proxy.rss_kib();
    let (mut stalled, key) = RawConn::login(s.proxy.proxy_port, SUPERUSER, PASSWORD).await;
    let backend_pid = key.process_id;
    let mut query = BytesMut::new();
    // About 1 GB of rows.
    encode_query(
        "select repeat('x', 1000) from generate_series(1, 1000000)",
        &mut query,
    );
    stalled.send(&query).await;
    s.alongside_good_session(async {
        let blocked = wait_until(DEADLINE, || async {
            s.observer
                .query_one(
                    "select count(*) from pg_stat_activity \
                     where pid = $1 and wait_event = 'ClientWrite'",
                    &[&backend_pid],
                )
                .await
                .expect("pg_stat_activity")
                .get::<_, i64>(0)
                == 1
        })
        .await;
        assert!(blocked, "the server waits for the proxy to take its rows");
    })
    .await;
    let rss_blocked = s.proxy.rss_kib();
    assert!(
        rss_blocked < rss_before + 16 * 1024,
        "proxy RSS grew from {rss_before} KiB to {rss_blocked} KiB with a stalled client"
    );
    drop(stalled);
    let gone = wait_until(DEADLINE, || async {
        s.observer
            .query_one(
                "select count(*) from pg_stat_activity where pid = $1",
                &[&backend_pid],
            )
            .await
            .expect("pg_stat_activity")
            .get::<_, i64>(0)
            == 0
    })
    .await;
    assert!(gone, "the stalled client's backend ends with it");
    s.good_query(8).await;
}

/// SQL in the startup parameters the proxy reads (user, database) or passes
/// on (application_name, options): the answers are PostgreSQL's own, and
/// nothing ran.
async fn sql_injection_in_startup_parameters(s: &Suite) {
    s.alongside_good_session(async {
        for port in [s.proxy.proxy_port, s.pg_port()] {
            let refused = refusal(&pg_config(port, DROP_VICTIM, PASSWORD, "postgres")).await;
            assert_eq!(sqlstate(&refused), "28P01", "{refused:?}");
            let message = refused.as_db_error().map(|e| e.message().to_owned());
            assert!(
                message.is_some_and(|m| m.starts_with("password authentication failed")),
                "{refused:?}"
            );

            let refused = refusal(&pg_config(port, SUPERUSER, PASSWORD, DROP_VICTIM)).await;
            assert_eq!(sqlstate(&refused), "3D000", "{refused:?}");

            let mut config = pg_config(port, SUPERUSER, PASSWORD, "postgres");
            config.application_name(DROP_VICTIM);
            let client = connect_with(&config)
                .await
                .expect("any application_name is accepted");
            let name: String = client
                .query_one("select current_setting('application_name')", &[])
                .await
                .expect("read application_name")
                .get(0);
            assert_eq!(name, DROP_VICTIM);

            let mut config = pg_config(port, SUPERUSER, PASSWORD, "postgres");
            config.options(format!("-c application_name={DROP_VICTIM}"));
            let refused = refusal(&config).await;
            assert_eq!(sqlstate(&refused), "42601", "{refused:?}");
        }
        let rows: i64 = s
            .observer
            .query_one("select count(*) from victim", &[])
            .await
            .expect("the victim table still exists")
            .get(0);
        assert_eq!(rows, VICTIM_ROWS);
    })
    .await;
}
