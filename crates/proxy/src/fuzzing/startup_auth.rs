//! The `startup_auth` target: arbitrary bytes as the first bytes a
//! client sends, run through the startup packet decoder and then through
//! [`client_auth::authenticate`] on an in-memory socket, on a
//! current-thread tokio runtime.
//!
//! It panics when an invariant does not hold:
//! - a startup packet that decodes re-encodes to exactly its bytes;
//! - authentication never succeeds without the password (only `trust` lets
//!   a client in here; the md5 salt and SCRAM nonce are random);
//! - everything the proxy writes is well-formed protocol, and a refused
//!   client gets a FATAL `28P01` or `08P01` error as its last message.

use std::sync::OnceLock;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use understudy_auth::{md5_secret, ScramSecret, Secret};
use understudy_config::AuthMethod;
use understudy_protocol::backend::{sqlstate, tag, Authentication, ErrorFields};
use understudy_protocol::frontend::AUTH_MESSAGE_LIMIT;
use understudy_protocol::startup::{decode_startup, StartupPacket};
use understudy_protocol::Frame;

use crate::backend::BackendCredential;
use crate::client_auth;
use crate::conn::FramedConn;
use crate::error::{SessionError, Side};

/// The password of every role the target knows.
pub const PASSWORD: &str = "fuzz-password";

/// How a role is authenticated, chosen by its name so the corpus can reach
/// each path: `trust…`, `md5…`, `plain…` (plaintext secret, SCRAM), `ghost…`
/// (unknown role: mock SCRAM exchange); any other name has a SCRAM secret.
fn method_and_secret(user: &str) -> (AuthMethod, Option<Secret>) {
    if user.starts_with("trust") {
        (AuthMethod::Trust, None)
    } else if user.starts_with("md5") {
        (
            AuthMethod::Md5,
            Some(Secret::Md5(md5_secret(user, PASSWORD))),
        )
    } else if user.starts_with("plain") {
        (
            AuthMethod::ScramSha256,
            Some(Secret::Plain(PASSWORD.into())),
        )
    } else if user.starts_with("ghost") {
        (AuthMethod::ScramSha256, None)
    } else {
        (AuthMethod::ScramSha256, Some(Secret::Scram(scram_secret())))
    }
}

/// One SCRAM secret for the whole process: deriving it costs 4096 rounds.
fn scram_secret() -> ScramSecret {
    static SECRET: OnceLock<ScramSecret> = OnceLock::new();
    SECRET
        .get_or_init(|| ScramSecret::from_password(PASSWORD, b"fuzz-salt-16byte", 4096))
        .clone()
}

/// Runs the startup and authentication of one client that sends `data`
/// and then closes its side of the connection.
pub fn startup_auth(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let startup = loop {
        let before = buf.clone();
        match decode_startup(&mut buf) {
            Ok(Some(StartupPacket::Startup(message))) => {
                let original = &before[..before.len() - buf.len()];
                let mut encoded = BytesMut::new();
                message.encode(&mut encoded);
                assert_eq!(
                    &encoded[..],
                    original,
                    "a startup packet re-encodes to its bytes"
                );
                break message;
            }
            Ok(Some(StartupPacket::Cancel(request))) => {
                let original = &before[..before.len() - buf.len()];
                let mut encoded = BytesMut::new();
                request.encode(&mut encoded);
                assert_eq!(
                    &encoded[..],
                    original,
                    "a cancel request re-encodes to its bytes"
                );
                return;
            }
            // The proxy answers `N` and reads the next packet.
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return,
        }
    };
    let Some(user) = startup.param("user").filter(|u| !u.is_empty()) else {
        return;
    };
    let (method, secret) = method_and_secret(user);
    runtime().block_on(authenticate(buf, method, user, secret));
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

async fn authenticate(rest: BytesMut, method: AuthMethod, user: &str, secret: Option<Secret>) {
    let (proxy_side, mut client_side) = tokio::io::duplex(64 * 1024);
    let mut client = FramedConn::new(proxy_side, Side::Client, AUTH_MESSAGE_LIMIT);
    // What the client sent after its startup packet is already read, as in
    // a session; then the client sends nothing more.
    client.rbuf = rest;
    client_side
        .shutdown()
        .await
        .expect("closing an in-memory socket");
    let (outcome, written) = tokio::join!(
        async {
            let outcome = client_auth::authenticate(&mut client, method, user, secret).await;
            let flushed = client.flush().await;
            drop(client);
            (outcome, flushed)
        },
        async {
            let mut written = Vec::new();
            client_side
                .read_to_end(&mut written)
                .await
                .expect("reading an in-memory socket");
            written
        }
    );
    let (outcome, flushed) = outcome;
    if outcome.is_ok() {
        assert_eq!(
            method,
            AuthMethod::Trust,
            "only trust admits a client without its password"
        );
    }
    check_written(&written, &outcome);
    if outcome.is_ok() {
        flushed.expect("flushing to a client that reads");
    }
}

/// Everything the proxy wrote decodes, and a refusal ends with its error.
fn check_written(written: &[u8], outcome: &Result<BackendCredential, SessionError>) {
    let mut buf = BytesMut::from(written);
    let mut last = None;
    while let Some(frame) =
        Frame::decode(&mut buf, usize::MAX >> 1).expect("the proxy writes valid frames")
    {
        match frame.tag {
            tag::AUTHENTICATION => {
                Authentication::parse(&frame.body).expect("a valid authentication request");
            }
            tag::ERROR_RESPONSE => {
                let fields = ErrorFields::parse(&frame.body).expect("a valid ErrorResponse");
                assert!(
                    fields.is_fatal(),
                    "authentication errors are FATAL: {fields}"
                );
                assert!(
                    fields.code == sqlstate::INVALID_PASSWORD
                        || fields.code == sqlstate::PROTOCOL_VIOLATION,
                    "unexpected error {fields}"
                );
            }
            other => panic!(
                "unexpected message {:?} during authentication",
                other as char
            ),
        }
        last = Some(frame.tag);
    }
    assert!(buf.is_empty(), "the proxy writes whole frames");
    if let Err(SessionError::AuthFailed { .. }) = outcome {
        assert_eq!(
            last,
            Some(tag::ERROR_RESPONSE),
            "a refused client is told why"
        );
    }
}
