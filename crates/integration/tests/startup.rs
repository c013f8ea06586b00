//! The startup phase on a raw socket: SSL and GSSAPI encryption requests,
//! protocol version negotiation, refused startups, and the startup timeout.
//! Where PostgreSQL has an answer of its own, the proxy must give the same.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use understudy_integration::understudy_testkit::{PASSWORD, SUPERUSER};
use understudy_integration::{data_row_text, Harness, RawConn, Target, BOTH};
use understudy_protocol::backend::{tag, Authentication};
use understudy_protocol::reader::BodyReader;
use understudy_protocol::startup::{GSSENC_REQUEST_CODE, SSL_REQUEST_CODE};
use understudy_protocol::PROTOCOL_VERSION_3_0;

fn request(code: i32) -> BytesMut {
    let mut out = BytesMut::new();
    out.extend_from_slice(&8i32.to_be_bytes());
    out.extend_from_slice(&code.to_be_bytes());
    out
}

/// Logs in on `conn` after its encryption request was declined, then runs
/// a query.
async fn login_and_query(conn: &mut RawConn) -> Option<String> {
    conn.send_startup(
        PROTOCOL_VERSION_3_0,
        &[("user", SUPERUSER), ("database", "postgres")],
    )
    .await;
    let frames = conn.finish_login(PASSWORD).await;
    assert!(frames.iter().any(|f| f.tag == tag::BACKEND_KEY_DATA));
    let frames = conn.simple_query("select 'in' || 'side'").await;
    let row = frames.iter().find(|f| f.tag == tag::DATA_ROW)?;
    data_row_text(&row.body, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_request_is_declined_then_startup_works() {
    let h = Harness::start().await;
    for target in BOTH {
        let mut conn = RawConn::connect(h.port(target)).await;
        conn.send(&request(SSL_REQUEST_CODE)).await;
        assert_eq!(conn.read_byte().await, b'N', "{target:?}");
        assert_eq!(
            login_and_query(&mut conn).await.as_deref(),
            Some("inside"),
            "{target:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gssenc_request_is_declined_then_startup_works() {
    // Only the proxy: a server built with GSSAPI may accept ('G').
    let h = Harness::start().await;
    let mut conn = RawConn::connect(h.port(Target::Proxy)).await;
    conn.send(&request(GSSENC_REQUEST_CODE)).await;
    assert_eq!(conn.read_byte().await, b'N');
    // A client may try SSL next, then start.
    conn.send(&request(SSL_REQUEST_CODE)).await;
    assert_eq!(conn.read_byte().await, b'N');
    assert_eq!(login_and_query(&mut conn).await.as_deref(), Some("inside"));
}

/// Newest protocol version and unrecognised options of a NegotiateProtocolVersion.
fn parse_negotiate(body: &[u8]) -> (i32, Vec<String>) {
    let mut r = BodyReader::new(body, "NegotiateProtocolVersion");
    let newest = r.i32("newest version").unwrap();
    let n = r.i32("option count").unwrap();
    let options = (0..n)
        .map(|_| r.cstr("option").unwrap().to_owned())
        .collect();
    r.finish().unwrap();
    (newest, options)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_3_2_with_a_pq_option_gets_negotiate_protocol_version() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let mut conn = RawConn::connect(h.port(target)).await;
        conn.send_startup(
            (3 << 16) | 2,
            &[
                ("user", SUPERUSER),
                ("database", "postgres"),
                ("_pq_.foo", "bar"),
            ],
        )
        .await;
        let frames = conn.finish_login(PASSWORD).await;
        assert_eq!(
            frames[0].tag,
            tag::NEGOTIATE_PROTOCOL_VERSION,
            "{target:?}: first message"
        );
        let negotiated = parse_negotiate(&frames[0].body);
        assert_eq!(
            frames[1].tag,
            tag::AUTHENTICATION,
            "{target:?}: then authentication"
        );
        let auth = Authentication::parse(&frames[1].body).unwrap();
        let frames = conn.simple_query("select current_user").await;
        let row = frames
            .iter()
            .find(|f| f.tag == tag::DATA_ROW)
            .expect("a row");
        outputs.push((negotiated, auth, data_row_text(&row.body, 0)));
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    let (negotiated, auth, user) = &outputs[1];
    // The newest version is sent whole (3.0), as PostgreSQL does and libpq expects.
    assert_eq!(
        negotiated,
        &(PROTOCOL_VERSION_3_0, vec!["_pq_.foo".to_owned()])
    );
    assert!(matches!(auth, Authentication::Sasl { .. }), "{auth:?}");
    assert_eq!(user.as_deref(), Some(SUPERUSER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_2_is_refused_with_feature_not_supported() {
    let h = Harness::start().await;
    let params = [("user", SUPERUSER), ("database", "postgres")];
    let mut conn = RawConn::connect(h.port(Target::Proxy)).await;
    conn.send_startup(2 << 16, &params).await;
    let error = conn.expect_error().await;
    assert!(conn.closed().await, "the connection ends");
    assert_eq!(
        (error.code.as_str(), error.severity.as_str()),
        ("0A000", "FATAL"),
        "{error}"
    );
    // PostgreSQL answers a 2.0 client in the old format ('E', then the text);
    // the message is the same.
    let mut direct = RawConn::connect(h.port(Target::Direct)).await;
    direct.send_startup(2 << 16, &params).await;
    let answer = direct.read_to_end().await;
    assert_eq!(answer.first(), Some(&b'E'));
    let text = String::from_utf8_lossy(&answer[1..]);
    assert!(
        text.contains(&error.message),
        "direct: {text:?}, proxy: {:?}",
        error.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_without_user_is_refused_with_28000() {
    let h = Harness::start().await;
    let mut outputs = Vec::new();
    for target in BOTH {
        let mut conn = RawConn::connect(h.port(target)).await;
        conn.send_startup(PROTOCOL_VERSION_3_0, &[("database", "postgres")])
            .await;
        let error = conn.expect_error().await;
        assert!(conn.closed().await, "{target:?}: the connection ends");
        outputs.push((error.code, error.message));
    }
    assert_eq!(outputs[0], outputs[1], "direct vs proxy");
    assert_eq!(outputs[1].0, "28000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_dropped_after_the_startup_timeout() {
    let h = Harness::start_with(0, |c| c.proxy.startup_timeout_ms = 300).await;
    let started = Instant::now();
    let mut silent = RawConn::connect(h.port(Target::Proxy)).await;
    // A client that stops in the middle of authentication is dropped too.
    let mut stalled = RawConn::connect(h.port(Target::Proxy)).await;
    stalled
        .send_startup(
            PROTOCOL_VERSION_3_0,
            &[("user", SUPERUSER), ("database", "postgres")],
        )
        .await;
    stalled.expect_frame(tag::AUTHENTICATION).await;
    for (name, conn) in [("silent", &mut silent), ("stalled", &mut stalled)] {
        let error = conn.expect_error().await;
        let elapsed = started.elapsed();
        assert!(
            conn.closed().await,
            "{name}: the socket is closed after the error"
        );
        assert_eq!(error.code, "08P01", "{name}: {error}");
        assert!(
            elapsed >= Duration::from_millis(300),
            "{name}: dropped after {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_secs(5),
            "{name}: dropped after {elapsed:?}"
        );
    }
    // A client that completes its startup in time is not affected.
    let (mut conn, _) = RawConn::login(h.port(Target::Proxy), SUPERUSER, PASSWORD).await;
    let frames = conn
        .simple_query("select pg_sleep(0.5), 'still here'")
        .await;
    let row = frames
        .iter()
        .find(|f| f.tag == tag::DATA_ROW)
        .expect("a row");
    assert_eq!(data_row_text(&row.body, 1).as_deref(), Some("still here"));
}
