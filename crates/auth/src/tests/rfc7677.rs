//! The SCRAM-SHA-256 example exchange of RFC 7677, section 3, on both sides.

use crate::{ScramClient, ScramCredential, ScramSecret, ScramServer};

const CLIENT_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
const SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const SERVER_FIRST: &str =
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn rfc_salt() -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
        .unwrap()
}

#[test]
fn client_produces_rfc_proof_and_accepts_rfc_server_signature() {
    let mut client = ScramClient::with_nonce(
        ScramCredential::Password("pencil".into()),
        "user",
        CLIENT_NONCE.into(),
    );
    assert_eq!(client.client_first(), CLIENT_FIRST.as_bytes());
    let client_final = client.server_first(SERVER_FIRST.as_bytes()).unwrap();
    assert_eq!(std::str::from_utf8(&client_final).unwrap(), CLIENT_FINAL);
    client.server_final(SERVER_FINAL.as_bytes()).unwrap();
}

#[test]
fn server_accepts_rfc_proof_and_produces_rfc_server_signature() {
    let secret = ScramSecret::from_password("pencil", &rfc_salt(), 4096);
    let mut server = ScramServer::with_nonce(secret, false, SERVER_NONCE.into());
    let server_first = server
        .client_first("SCRAM-SHA-256", CLIENT_FIRST.as_bytes())
        .unwrap();
    assert_eq!(std::str::from_utf8(&server_first).unwrap(), SERVER_FIRST);
    let verified = server.client_final(CLIENT_FINAL.as_bytes()).unwrap();
    assert_eq!(
        std::str::from_utf8(&verified.server_final).unwrap(),
        SERVER_FINAL
    );
}

#[test]
fn client_key_from_rfc_exchange_authenticates_by_passthrough() {
    let secret = ScramSecret::from_password("pencil", &rfc_salt(), 4096);
    let mut server = ScramServer::with_nonce(secret.clone(), false, SERVER_NONCE.into());
    server
        .client_first("SCRAM-SHA-256", CLIENT_FIRST.as_bytes())
        .unwrap();
    let verified = server.client_final(CLIENT_FINAL.as_bytes()).unwrap();

    let keys = ScramCredential::passthrough(verified.client_key, &secret);
    let mut client = ScramClient::with_nonce(keys, "user", CLIENT_NONCE.into());
    let client_final = client.server_first(SERVER_FIRST.as_bytes()).unwrap();
    assert_eq!(std::str::from_utf8(&client_final).unwrap(), CLIENT_FINAL);
    client.server_final(SERVER_FINAL.as_bytes()).unwrap();
}
