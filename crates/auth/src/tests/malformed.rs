//! Malformed, out-of-order and random input to both sides: always an error, never a
//! panic.

use std::sync::OnceLock;

use rand::Rng;

use crate::{AuthError, ScramClient, ScramCredential, ScramSecret, ScramServer};

const CLIENT_NONCE: &str = "clientNONCE";
const SERVER_NONCE: &str = "serverNONCE";
const CLIENT_FIRST: &str = "n,,n=,r=clientNONCE";

/// Derived once: `Hi()` with 4096 iterations is the slow part of every exchange.
fn secret() -> ScramSecret {
    static SECRET: OnceLock<ScramSecret> = OnceLock::new();
    SECRET
        .get_or_init(|| ScramSecret::from_password("pw", b"salt-salt-salt!!", 4096))
        .clone()
}

fn server() -> ScramServer {
    ScramServer::with_nonce(secret(), false, SERVER_NONCE.into())
}

/// A server that has answered `CLIENT_FIRST`.
fn server_after_first() -> ScramServer {
    let mut server = server();
    server
        .client_first("SCRAM-SHA-256", CLIENT_FIRST.as_bytes())
        .unwrap();
    server
}

/// Passthrough keys of `secret()`, so that no `Hi()` runs in the loops below.
fn keys() -> ScramCredential {
    static CLIENT_KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let client_key = *CLIENT_KEY.get_or_init(|| {
        crate::secret::client_key(&crate::scram_common::hi(b"pw", b"salt-salt-salt!!", 4096))
    });
    ScramCredential::passthrough(client_key, &secret())
}

fn client() -> ScramClient {
    ScramClient::with_nonce(keys(), "", CLIENT_NONCE.into())
}

/// The messages of one valid exchange between `client()` and `server()`.
fn valid_exchange() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut server = server();
    let mut client = client();
    let server_first = server
        .client_first("SCRAM-SHA-256", &client.client_first())
        .unwrap();
    let client_final = client.server_first(&server_first).unwrap();
    let server_final = server.client_final(&client_final).unwrap().server_final;
    (server_first, client_final, server_final)
}

fn assert_protocol(result: Result<impl std::fmt::Debug, AuthError>, needle: &str, input: &str) {
    match result {
        Err(AuthError::Protocol(message)) => assert!(
            message.contains(needle),
            "{input:?}: error {message:?} does not mention {needle:?}"
        ),
        other => {
            panic!("{input:?}: expected a protocol error mentioning {needle:?}, got {other:?}")
        }
    }
}

#[test]
fn server_rejects_malformed_client_first() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "empty"),
        (b"\xff\xfe", "UTF-8"),
        (b"garbage", "gs2 header"),
        (b"n,", "gs2 header"),
        (b"x,,n=,r=abc", "channel binding flag"),
        (b"p=tls-server-end-point,,n=,r=abc", "channel binding"),
        (b"n,a=bob,n=,r=abc", "authorization identity"),
        (b"n,,", "attribute"),
        (b"n,,r=abc", "user name n="),
        (b"n,,n=", "r= is missing"),
        (b"n,,n=,", "attribute"),
        (b"n,,m=ext,n=,r=abc", "mandatory extension"),
        (b"n,,n=,r=", "nonce r= is empty"),
        (b"n,,n=,r=ab\x01c", "printable"),
        (b"n,,n=,r=ab\xc3\xa9", "printable"),
        (b"n,,n=,x=1,r=abc", "expected attribute r="),
        (b"n,,n=,r=abc,", "attribute"),
        (b"n,,n=,r=abc,1=2", "attribute"),
    ];
    for (input, needle) in cases {
        let shown = String::from_utf8_lossy(input);
        assert_protocol(
            server().client_first("SCRAM-SHA-256", input),
            needle,
            &shown,
        );
    }
    for mechanism in ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1", ""] {
        assert!(matches!(
            server().client_first(mechanism, CLIENT_FIRST.as_bytes()),
            Err(AuthError::UnsupportedMechanism(_))
        ));
    }
    // Extensions after the nonce are allowed and ignored.
    server()
        .client_first("SCRAM-SHA-256", b"y,,n=someone,r=abc,x=ext")
        .unwrap();
}

#[test]
fn server_rejects_malformed_client_final() {
    let (_, client_final, _) = valid_exchange();
    let valid = String::from_utf8(client_final).unwrap();
    let proof = valid.rsplit_once(",p=").unwrap().1.to_owned();
    let nonce = format!("{CLIENT_NONCE}{SERVER_NONCE}");
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "empty"),
        ("garbage".into(), "p= is missing"),
        (format!("c=biws,r={nonce}"), "p= is missing"),
        (format!("r={nonce},p={proof}"), "expected attribute c="),
        (format!("c=biws,p={proof}"), "r= is missing"),
        (
            format!("c=eSws,r={nonce},p={proof}"),
            "does not match the gs2 header",
        ),
        (format!("c=!!!,r={nonce},p={proof}"), "base64"),
        (
            format!("c=biws,r={CLIENT_NONCE},p={proof}"),
            "nonce r= is not",
        ),
        (format!("c=biws,r={nonce}x,p={proof}"), "nonce r= is not"),
        (format!("c=biws,r={nonce},p=***"), "base64"),
        (format!("c=biws,r={nonce},p=AAAA"), "32 bytes"),
        (format!("c=biws,r={nonce},p={proof},x=1"), "last"),
        (format!("c=biws,r={nonce},,p={proof}"), "attribute"),
    ];
    for (input, needle) in cases {
        assert_protocol(
            server_after_first().client_final(input.as_bytes()),
            needle,
            &input,
        );
    }
    // Extensions before the proof are allowed, but they are part of the signed message,
    // so adding one to a valid message invalidates its proof.
    assert_eq!(
        server_after_first()
            .client_final(format!("c=biws,r={nonce},x=1,p={proof}").as_bytes())
            .unwrap_err(),
        AuthError::WrongPassword
    );
    // The unmodified message is accepted, so the rejections above are about the changes.
    server_after_first().client_final(valid.as_bytes()).unwrap();
}

#[test]
fn server_rejects_messages_out_of_order() {
    let (_, client_final, _) = valid_exchange();
    assert_protocol(
        server().client_final(&client_final),
        "before",
        "final first",
    );

    let mut server = server_after_first();
    assert_protocol(
        server.client_first("SCRAM-SHA-256", CLIENT_FIRST.as_bytes()),
        "twice",
        "first twice",
    );

    let mut server = server_after_first();
    server.client_final(&client_final).unwrap();
    assert_protocol(server.client_final(&client_final), "after", "final twice");

    // A failed step ends the exchange: no second guess with the same nonce.
    let mut server = server_after_first();
    assert!(server.client_final(b"garbage").is_err());
    assert_protocol(server.client_final(&client_final), "after", "retry");
}

#[test]
fn client_rejects_malformed_server_first() {
    let salt = "c2FsdC1zYWx0LXNhbHQhIQ==";
    let nonce = format!("{CLIENT_NONCE}{SERVER_NONCE}");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "empty"),
        (b"\xff".to_vec(), "UTF-8"),
        (b"garbage".to_vec(), "attribute"),
        (format!("s={salt},i=4096").into_bytes(), "expected nonce r="),
        (
            format!("m=x,r={nonce},s={salt},i=4096").into_bytes(),
            "mandatory extension",
        ),
        (
            format!("r=other{SERVER_NONCE},s={salt},i=4096").into_bytes(),
            "client nonce",
        ),
        (
            format!("r={CLIENT_NONCE},s={salt},i=4096").into_bytes(),
            "client nonce",
        ),
        (
            format!("r={nonce}\u{7f},s={salt},i=4096").into_bytes(),
            "printable",
        ),
        (format!("r={nonce}").into_bytes(), "s= is missing"),
        (
            format!("r={nonce},i=4096,s={salt}").into_bytes(),
            "expected attribute s=",
        ),
        (format!("r={nonce},s=%%%,i=4096").into_bytes(), "base64"),
        (
            format!("r={nonce},s=,i=4096").into_bytes(),
            "salt s= is empty",
        ),
        (format!("r={nonce},s={salt}").into_bytes(), "i= is missing"),
        (
            format!("r={nonce},s={salt},i=").into_bytes(),
            "iteration count",
        ),
        (
            format!("r={nonce},s={salt},i=0").into_bytes(),
            "iteration count",
        ),
        (
            format!("r={nonce},s={salt},i=-1").into_bytes(),
            "iteration count",
        ),
        (
            format!("r={nonce},s={salt},i=abc").into_bytes(),
            "iteration count",
        ),
        (
            format!("r={nonce},s={salt},i=1000001").into_bytes(),
            "iteration count",
        ),
        (
            format!("r={nonce},s={salt},i=4294967296").into_bytes(),
            "iteration count",
        ),
        (
            format!("r={nonce},s={salt},i=4096,").into_bytes(),
            "attribute",
        ),
    ];
    for (input, needle) in cases {
        let shown = String::from_utf8_lossy(&input).into_owned();
        assert_protocol(client().server_first(&input), needle, &shown);
    }
    // The upper bound itself is accepted.
    client()
        .server_first(format!("r={nonce},s={salt},i=1000000,x=ext").as_bytes())
        .unwrap();
}

#[test]
fn client_rejects_malformed_or_failing_server_final() {
    let (server_first, _, server_final) = valid_exchange();
    let ready = || {
        let mut client = client();
        client.server_first(&server_first).unwrap();
        client
    };
    assert_eq!(
        ready().server_final(b"e=invalid-proof").unwrap_err(),
        AuthError::ServerError("invalid-proof".into())
    );
    let mut wrong = server_final.clone();
    let last = wrong.len() - 2; // before the '=' padding
    wrong[last] = if wrong[last] == b'A' { b'E' } else { b'A' };
    let wrong_result = ready().server_final(&wrong);
    assert!(
        matches!(
            wrong_result,
            Err(AuthError::ServerSignatureMismatch) | Err(AuthError::Protocol(_))
        ),
        "{wrong_result:?}"
    );
    assert_eq!(
        ready()
            .server_final(format!("v={}", "A".repeat(43) + "=").as_bytes())
            .unwrap_err(),
        AuthError::ServerSignatureMismatch
    );
    let cases: &[(&[u8], &str)] = &[
        (b"", "empty"),
        (b"\xc3", "UTF-8"),
        (b"garbage", "attribute"),
        (b"x=1", "expected verifier"),
        (b"v=!!!", "base64"),
        (b"v=AAAA", "32 bytes"),
    ];
    for (input, needle) in cases {
        assert_protocol(
            ready().server_final(input),
            needle,
            &String::from_utf8_lossy(input),
        );
    }
    // Out of order: before server-first, and after the exchange ended.
    assert_protocol(client().server_final(&server_final), "before", "early");
    let mut done = ready();
    done.server_final(&server_final).unwrap();
    assert_protocol(done.server_final(&server_final), "after", "twice");
    assert_protocol(done.server_first(&server_first), "twice", "restart");
}

fn random_bytes(rng: &mut impl Rng) -> Vec<u8> {
    let len = rng.gen_range(0..80);
    let mut bytes = vec![0u8; len];
    if rng.gen_bool(0.5) {
        rng.fill_bytes(&mut bytes);
    } else {
        // Mostly SCRAM-looking characters, to get past the first checks more often.
        const ALPHABET: &[u8] = b"nyprscivem=,abAB+/019";
        for b in &mut bytes {
            *b = ALPHABET[rng.gen_range(0..ALPHABET.len())];
        }
    }
    bytes
}

/// `message` with one byte replaced by a different value.
fn mutate(rng: &mut impl Rng, message: &[u8]) -> Vec<u8> {
    let mut out = message.to_vec();
    let at = rng.gen_range(0..out.len());
    let mut value = rng.gen::<u8>();
    if value == out[at] {
        value = value.wrapping_add(1);
    }
    out[at] = value;
    out
}

#[test]
fn random_input_is_rejected_without_panicking() {
    let mut rng = rand::thread_rng();
    let (server_first, client_final, server_final) = valid_exchange();
    for _ in 0..2000 {
        let garbage = random_bytes(&mut rng);
        assert!(server().client_first("SCRAM-SHA-256", &garbage).is_err());
        assert!(server_after_first().client_final(&garbage).is_err());
        assert!(client().server_first(&garbage).is_err());
        let mut client_ready = client();
        client_ready.server_first(&server_first).unwrap();
        assert!(client_ready.server_final(&garbage).is_err());
    }
    for _ in 0..500 {
        // Every byte of a client-final-message or a server-final-message is checked or
        // signed, so any change must be refused.
        let changed = mutate(&mut rng, &client_final);
        assert!(
            server_after_first().client_final(&changed).is_err(),
            "accepted {}",
            String::from_utf8_lossy(&changed)
        );
        let changed = mutate(&mut rng, &server_final);
        let mut client_ready = client();
        client_ready.server_first(&server_first).unwrap();
        assert!(
            client_ready.server_final(&changed).is_err(),
            "accepted {}",
            String::from_utf8_lossy(&changed)
        );
        // A changed server-first-message may still be well formed; it must not panic.
        let _ = client().server_first(&mutate(&mut rng, &server_first));
        let _ = server().client_first("SCRAM-SHA-256", &mutate(&mut rng, CLIENT_FIRST.as_bytes()));
    }
}
