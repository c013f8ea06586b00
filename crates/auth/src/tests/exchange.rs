//! Complete exchanges between our `ScramClient` and our `ScramServer`, including the
//! passthrough path and the mock exchange for unknown roles.

use super::{attribute, run_exchange};
use crate::scram_common::{hi, sha256};
use crate::secret::client_key;
use crate::{AuthError, ScramClient, ScramCredential, ScramSecret, ScramServer, Secret};

fn password(p: &str) -> ScramCredential {
    ScramCredential::Password(p.into())
}

fn secret(p: &str) -> ScramSecret {
    ScramSecret::from_password(p, b"0123456789abcdef", 4096)
}

#[test]
fn correct_password_authenticates_and_reveals_the_client_key() {
    let secret = secret("correct horse");
    let mut server = ScramServer::new(Some(secret.clone()));
    let mut client = ScramClient::new(password("correct horse"));
    let verified = run_exchange(&mut client, &mut server).unwrap();

    let expected = client_key(&hi(b"correct horse", &secret.salt, secret.iterations));
    assert_eq!(verified.client_key, expected);
    assert_eq!(sha256(&verified.client_key), secret.stored_key);
}

#[test]
fn client_key_passes_through_to_a_server_with_the_same_secret() {
    let secret = secret("s3cret");
    let mut proxy_server = ScramServer::new(Some(secret.clone()));
    let mut app = ScramClient::new(password("s3cret"));
    let verified = run_exchange(&mut app, &mut proxy_server).unwrap();

    // The proxy logs in to the backend twice with the same keys: nonces differ each time.
    for _ in 0..2 {
        let mut backend = ScramServer::new(Some(secret.clone()));
        let mut proxy_client =
            ScramClient::new(ScramCredential::passthrough(verified.client_key, &secret));
        let again = run_exchange(&mut proxy_client, &mut backend).unwrap();
        assert_eq!(again.client_key, verified.client_key);
    }
}

#[test]
fn client_key_does_not_pass_through_to_a_server_with_another_salt() {
    let secret = secret("s3cret");
    let mut proxy_server = ScramServer::new(Some(secret.clone()));
    let verified =
        run_exchange(&mut ScramClient::new(password("s3cret")), &mut proxy_server).unwrap();

    let other = ScramSecret::from_password("s3cret", b"another salt", 4096);
    let mut backend = ScramServer::new(Some(other));
    let mut proxy_client =
        ScramClient::new(ScramCredential::passthrough(verified.client_key, &secret));
    assert_eq!(
        run_exchange(&mut proxy_client, &mut backend).unwrap_err(),
        AuthError::WrongPassword
    );
}

#[test]
fn client_rejects_a_server_that_does_not_know_the_server_key() {
    let secret = secret("s3cret");
    let verified = run_exchange(
        &mut ScramClient::new(password("s3cret")),
        &mut ScramServer::new(Some(secret.clone())),
    )
    .unwrap();
    // A server that learned StoredKey but not ServerKey can check the proof but cannot
    // sign; the client must notice.
    let impostor_secret = ScramSecret {
        server_key: [7; 32],
        ..secret.clone()
    };
    let mut impostor = ScramServer::new(Some(impostor_secret));
    let mut proxy_client =
        ScramClient::new(ScramCredential::passthrough(verified.client_key, &secret));
    assert_eq!(
        run_exchange(&mut proxy_client, &mut impostor).unwrap_err(),
        AuthError::ServerSignatureMismatch
    );
}

#[test]
fn wrong_password_is_rejected() {
    let mut server = ScramServer::new(Some(secret("right")));
    let mut client = ScramClient::new(password("wrong"));
    assert_eq!(
        run_exchange(&mut client, &mut server).unwrap_err(),
        AuthError::WrongPassword
    );
}

#[test]
fn unknown_role_runs_a_full_exchange_then_fails() {
    for mut server in [ScramServer::new(None), ScramServer::mock("nobody")] {
        let mut client = ScramClient::new(password("anything"));
        let server_first = server
            .client_first("SCRAM-SHA-256", &client.client_first())
            .unwrap();
        assert_eq!(attribute(&server_first, 'i'), "4096");
        let client_final = client.server_first(&server_first).unwrap();
        assert_eq!(
            server.client_final(&client_final).unwrap_err(),
            AuthError::WrongPassword
        );
    }
}

#[test]
fn mock_exchange_fails_even_when_the_proof_is_right() {
    // The fake keys of a mock exchange match no password; the mock flag is a second,
    // independent guarantee, checked here with a secret the client does know.
    let mut server = ScramServer::with_nonce(secret("pw"), true, "serverpart".into());
    assert_eq!(
        run_exchange(&mut ScramClient::new(password("pw")), &mut server).unwrap_err(),
        AuthError::WrongPassword
    );
}

#[test]
fn mock_salt_is_stable_per_role_and_differs_between_roles() {
    let salt_of = |mut server: ScramServer| {
        let client = ScramClient::new(password("x"));
        let first = server
            .client_first("SCRAM-SHA-256", &client.client_first())
            .unwrap();
        attribute(&first, 's')
    };
    let nobody = salt_of(ScramServer::mock("nobody"));
    assert_eq!(nobody, salt_of(ScramServer::mock("nobody")));
    assert_ne!(nobody, salt_of(ScramServer::mock("somebody")));
    assert_eq!(base64_len(&nobody), 16);
}

fn base64_len(value: &str) -> usize {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .unwrap()
        .len()
}

#[test]
fn stored_secrets_of_every_kind_drive_the_server() {
    let scram = Secret::Scram(secret("pw"));
    let plain = Secret::Plain("pw".into());
    let md5 = Secret::Md5(crate::md5_secret("alice", "pw"));
    for stored in [&scram, &plain] {
        let mut server = ScramServer::from_secret(stored, "alice");
        run_exchange(&mut ScramClient::new(password("pw")), &mut server).unwrap();
        let mut server = ScramServer::from_secret(stored, "alice");
        assert_eq!(
            run_exchange(&mut ScramClient::new(password("pW")), &mut server).unwrap_err(),
            AuthError::WrongPassword
        );
    }
    // An md5 secret cannot verify SCRAM: even the right password fails, after a full exchange.
    let mut server = ScramServer::from_secret(&md5, "alice");
    assert_eq!(
        run_exchange(&mut ScramClient::new(password("pw")), &mut server).unwrap_err(),
        AuthError::WrongPassword
    );
}

#[test]
fn plaintext_password_server_uses_a_random_salt_and_default_iterations() {
    let salt_of = |mut server: ScramServer| {
        let client = ScramClient::new(password("pw"));
        let first = server
            .client_first("SCRAM-SHA-256", &client.client_first())
            .unwrap();
        assert_eq!(attribute(&first, 'i'), "4096");
        attribute(&first, 's')
    };
    assert_ne!(
        salt_of(ScramServer::from_password("pw")),
        salt_of(ScramServer::from_password("pw"))
    );
}

#[test]
fn client_first_message_has_no_user_name_and_a_fresh_nonce() {
    let a = ScramClient::new(password("pw")).client_first();
    let b = ScramClient::new(password("pw")).client_first();
    assert!(
        a.starts_with(b"n,,n=,r="),
        "{}",
        String::from_utf8_lossy(&a)
    );
    assert_ne!(a, b);
}
