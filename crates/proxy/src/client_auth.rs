//! Authenticating a client, as PostgreSQL would: SCRAM-SHA-256, md5 or
//! trust, chosen per user/database/address by the configuration. The result
//! is what the proxy may then prove to the server on the client's behalf.

use tokio::io::{AsyncRead, AsyncWrite};
use understudy_auth::{md5_verify, ScramSecret, ScramServer, Secret};
use understudy_config::AuthMethod;
use understudy_protocol::backend::{sqlstate, Authentication, ErrorFields, Severity};
use understudy_protocol::frontend::{self, parse_password, SaslInitialResponse};
use understudy_protocol::ProtocolError;

use crate::backend::BackendCredential;
use crate::conn::FramedConn;
use crate::error::{SessionError, Side};
use crate::offload::off_runtime;

const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Runs the authentication exchange with the client. On failure the client
/// has been sent PostgreSQL's own `28P01` error.
pub async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut FramedConn<S>,
    method: AuthMethod,
    user: &str,
    secret: Option<Secret>,
) -> Result<BackendCredential, SessionError> {
    match (method, secret) {
        (AuthMethod::Trust, secret) => Ok(credential_without_proof(secret)),
        (AuthMethod::Md5, Some(secret @ (Secret::Md5(_) | Secret::Plain(_)))) => {
            md5(client, user, secret).await
        }
        // As in PostgreSQL, `md5` lets a role with a SCRAM secret use SCRAM.
        (_, secret) => scram(client, user, secret).await,
    }
}

fn credential_without_proof(secret: Option<Secret>) -> BackendCredential {
    match secret {
        Some(Secret::Plain(password)) => BackendCredential::Password(password),
        Some(Secret::Md5(hash)) => BackendCredential::Md5Secret(hash),
        _ => BackendCredential::None,
    }
}

async fn md5<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut FramedConn<S>,
    user: &str,
    secret: Secret,
) -> Result<BackendCredential, SessionError> {
    let salt: [u8; 4] = rand::random();
    Authentication::Md5Password { salt }.encode(client.out());
    client.flush().await?;
    let frame = expect_password(client).await?;
    let response = parse_password(&frame).map_err(client_protocol)?;
    if !md5_verify(&secret, user, salt, response) {
        return Err(reject(client, user, "md5 response does not match").await);
    }
    Ok(credential_without_proof(Some(secret)))
}

async fn scram<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut FramedConn<S>,
    user: &str,
    secret: Option<Secret>,
) -> Result<BackendCredential, SessionError> {
    let mut server = match &secret {
        Some(Secret::Plain(password)) => {
            let verifier = match ScramSecret::remembered_for(password) {
                Some(verifier) => verifier,
                None => {
                    let password = password.clone();
                    off_runtime(
                        "deriving the SCRAM verifier of a [[users]] password",
                        move || ScramSecret::for_known_password(&password),
                    )
                    .await?
                }
            };
            ScramServer::new(Some(verifier))
        }
        Some(secret) => ScramServer::from_secret(secret, user),
        None => ScramServer::mock(user),
    };
    Authentication::Sasl {
        mechanisms: vec![SCRAM_SHA_256.to_owned()],
    }
    .encode(client.out());
    client.flush().await?;

    let initial = expect_password(client).await?;
    let initial = SaslInitialResponse::parse(&initial).map_err(client_protocol)?;
    let server_first = match server.client_first(&initial.mechanism, &initial.data) {
        Ok(data) => data,
        Err(e) => return Err(reject_protocol(client, user, &e.to_string()).await),
    };
    Authentication::SaslContinue { data: server_first }.encode(client.out());
    client.flush().await?;

    let response = expect_password(client).await?;
    let verified = match server.client_final(&response) {
        Ok(verified) => verified,
        Err(understudy_auth::AuthError::WrongPassword) => {
            return Err(reject(client, user, "SCRAM proof does not match").await)
        }
        Err(e) => return Err(reject_protocol(client, user, &e.to_string()).await),
    };
    Authentication::SaslFinal {
        data: verified.server_final,
    }
    .encode(client.out());
    Ok(match secret {
        Some(Secret::Plain(password)) => BackendCredential::Password(password),
        Some(Secret::Scram(secret)) => BackendCredential::ScramKeys {
            client_key: verified.client_key,
            server_key: secret.server_key,
        },
        _ => BackendCredential::None,
    })
}

/// Reads the client's next message, which must be a password-type (`p`)
/// message; returns its body.
async fn expect_password<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut FramedConn<S>,
) -> Result<bytes::Bytes, SessionError> {
    let frame = client.read_frame().await?;
    if frame.tag != frontend::tag::PASSWORD {
        return Err(client_protocol(ProtocolError::Unexpected {
            tag: frame.tag as char,
            expected: "a password message",
        }));
    }
    Ok(frame.body)
}

fn client_protocol(source: ProtocolError) -> SessionError {
    SessionError::Protocol {
        side: Side::Client,
        source,
    }
}

/// Sends PostgreSQL's error for a failed password check.
async fn reject<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut FramedConn<S>,
    user: &str,
    reason: &str,
) -> SessionError {
    let fields = ErrorFields::new(
        Severity::Fatal,
        sqlstate::INVALID_PASSWORD,
        format!("password authentication failed for user \"{user}\""),
    );
    fields.encode_error(client.out());
    let _ = client.flush().await;
    SessionError::AuthFailed {
        user: user.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Sends an error for a malformed authentication exchange.
async fn reject_protocol<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut FramedConn<S>,
    user: &str,
    reason: &str,
) -> SessionError {
    let fields = ErrorFields::new(
        Severity::Fatal,
        sqlstate::PROTOCOL_VIOLATION,
        format!("invalid SCRAM exchange for user \"{user}\": {reason}"),
    );
    fields.encode_error(client.out());
    let _ = client.flush().await;
    SessionError::AuthFailed {
        user: user.to_owned(),
        reason: reason.to_owned(),
    }
}
