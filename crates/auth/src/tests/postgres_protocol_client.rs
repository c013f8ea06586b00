//! postgres-protocol's `ScramSha256`, an independent client implementation (the one
//! tokio-postgres uses), against our `ScramServer`.

use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

use crate::scram_common::{hi, sha256};
use crate::secret::client_key;
use crate::{AuthError, ScramSecret, ScramServer, ScramVerified};

fn exchange(
    password: &str,
    channel_binding: ChannelBinding,
    server: &mut ScramServer,
) -> Result<ScramVerified, AuthError> {
    let mut client = ScramSha256::new(password.as_bytes(), channel_binding);
    let server_first = server.client_first("SCRAM-SHA-256", client.message())?;
    client.update(&server_first).unwrap();
    let verified = server.client_final(client.message())?;
    client
        .finish(&verified.server_final)
        .expect("postgres-protocol must accept our server signature");
    Ok(verified)
}

#[test]
fn postgres_protocol_client_authenticates() {
    let secret = ScramSecret::from_password("tiger", b"some salt bytes!", 4096);
    for channel_binding in [ChannelBinding::unrequested(), ChannelBinding::unsupported()] {
        let mut server = ScramServer::new(Some(secret.clone()));
        let verified = exchange("tiger", channel_binding, &mut server).unwrap();
        let expected = client_key(&hi(b"tiger", &secret.salt, secret.iterations));
        assert_eq!(verified.client_key, expected);
        assert_eq!(sha256(&verified.client_key), secret.stored_key);
    }
}

#[test]
fn postgres_protocol_client_with_wrong_password_is_rejected() {
    let secret = ScramSecret::from_password("tiger", b"some salt bytes!", 4096);
    let mut server = ScramServer::new(Some(secret));
    assert_eq!(
        exchange("lion", ChannelBinding::unrequested(), &mut server).unwrap_err(),
        AuthError::WrongPassword
    );
}

#[test]
fn postgres_protocol_client_for_unknown_role_is_rejected() {
    let mut server = ScramServer::mock("ghost");
    assert_eq!(
        exchange("tiger", ChannelBinding::unrequested(), &mut server).unwrap_err(),
        AuthError::WrongPassword
    );
}

#[test]
fn postgres_protocol_channel_binding_request_is_refused_clearly() {
    let client = ScramSha256::new(
        b"tiger",
        ChannelBinding::tls_server_end_point(vec![1, 2, 3]),
    );
    let mut server = ScramServer::mock("ghost");
    let err = server
        .client_first("SCRAM-SHA-256", client.message())
        .unwrap_err();
    assert!(
        matches!(&err, AuthError::Protocol(m) if m.contains("channel binding")),
        "{err}"
    );
    // The client would normally have chosen the -PLUS mechanism, which is not offered.
    let mut server = ScramServer::mock("ghost");
    assert!(matches!(
        server.client_first("SCRAM-SHA-256-PLUS", client.message()),
        Err(AuthError::UnsupportedMechanism(_))
    ));
}
