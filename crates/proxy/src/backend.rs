//! Opening a backend connection for a client: TCP connect, StartupMessage
//! with the client's parameters, authentication as the client's role, and
//! the server's greeting (ParameterStatus, BackendKeyData, ReadyForQuery).

use std::time::Duration;

use bytes::BytesMut;
use tokio::net::TcpStream;
use understudy_auth::{md5_response, md5_secret, ScramClient, ScramCredential};
use understudy_protocol::backend::{
    sqlstate, tag, Authentication, BackendKeyData, ErrorFields, ParameterStatus, Severity,
};
use understudy_protocol::frontend::{encode_password, encode_sasl_response, SaslInitialResponse};
use understudy_protocol::startup::StartupMessage;

use crate::conn::FramedConn;
use crate::error::{SessionError, Side};
use crate::offload::off_runtime;
use crate::stream::Stream;
use crate::tls::ServerTls;
use crate::topology::BackendAddr;

/// What the proxy can prove to a server on the client's behalf.
#[derive(Clone)]
pub enum BackendCredential {
    /// Nothing: the server must trust the connection.
    None,
    /// The role's password in clear text (from the proxy's user list).
    Password(String),
    /// SCRAM keys recovered from the client's own SCRAM proof; they log in
    /// to any server that holds the same SCRAM secret.
    ScramKeys {
        /// ClientKey of the role.
        client_key: [u8; 32],
        /// ServerKey of the role, to verify the server.
        server_key: [u8; 32],
    },
    /// The role's stored md5 secret (`md5…`): enough to answer an md5
    /// challenge.
    Md5Secret(String),
}

/// An authenticated backend connection, ready for queries.
pub struct BackendConn {
    /// The connection, with anything already read after ReadyForQuery.
    pub conn: FramedConn<Stream>,
    /// The server it is connected to.
    pub addr: BackendAddr,
    /// The server's own cancel key for this backend.
    pub key: BackendKeyData,
    /// ParameterStatus and NoticeResponse messages of the greeting, encoded,
    /// to pass on to the client.
    pub greeting: BytesMut,
}

impl BackendConn {
    /// The server parameters its greeting reported (`client_encoding`,
    /// `standard_conforming_strings`, …).
    pub fn greeting_parameters(&self) -> std::collections::HashMap<String, String> {
        let mut parameters = std::collections::HashMap::new();
        let mut rest = &self.greeting[..];
        while let Ok(Some((message, total))) =
            understudy_protocol::Frame::peek_header(rest, usize::MAX)
        {
            let Some(frame) = rest.get(..total) else {
                break;
            };
            if message == tag::PARAMETER_STATUS {
                if let Ok(p) = ParameterStatus::parse(&frame[5..]) {
                    parameters.insert(p.name, p.value);
                }
            }
            rest = &rest[total..];
        }
        parameters
    }

    /// Ends the backend as a client would: Terminate, then the socket is
    /// closed (the server then logs nothing, as for any client that leaves).
    pub async fn close(mut self) {
        understudy_protocol::frontend::encode_terminate(self.conn.out());
        let _ = self.conn.flush().await;
    }
}

/// Connects to `addr` and starts a session as `user` with the client's
/// startup parameters.
pub async fn connect(
    addr: &BackendAddr,
    params: &[(String, String)],
    credential: &BackendCredential,
    tls: &ServerTls,
    connect_timeout: Duration,
    max_message_len: usize,
) -> Result<BackendConn, SessionError> {
    let stream = tokio::time::timeout(
        connect_timeout,
        TcpStream::connect((addr.host.as_str(), addr.port)),
    )
    .await
    .map_err(|_| SessionError::Timeout("connecting to the server"))?
    .map_err(SessionError::server_io)?;
    stream.set_nodelay(true).map_err(SessionError::server_io)?;
    let stream = tokio::time::timeout(connect_timeout, tls.negotiate(stream, &addr.host))
        .await
        .map_err(|_| SessionError::Timeout("negotiating TLS with the server"))??;
    let mut conn = FramedConn::new(stream, Side::Server, max_message_len);

    StartupMessage::new(params.to_vec()).encode(conn.out());
    conn.flush().await?;
    let user = params
        .iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    tokio::time::timeout(connect_timeout, authenticate(&mut conn, user, credential))
        .await
        .map_err(|_| SessionError::Timeout("authenticating to the server"))??;

    let mut greeting = BytesMut::new();
    let mut key = None;
    loop {
        let frame = conn.read_frame().await?;
        match frame.tag {
            tag::READY_FOR_QUERY => break,
            tag::BACKEND_KEY_DATA => {
                key = Some(BackendKeyData::parse(&frame.body).map_err(|source| {
                    SessionError::Protocol {
                        side: Side::Server,
                        source,
                    }
                })?)
            }
            tag::ERROR_RESPONSE => return Err(server_refused(&frame.body)),
            _ => frame.encode(&mut greeting),
        }
    }
    let key = key.unwrap_or(BackendKeyData {
        process_id: 0,
        secret_key: 0,
    });
    Ok(BackendConn {
        conn,
        addr: addr.clone(),
        key,
        greeting,
    })
}

/// Answers the server's authentication requests until AuthenticationOk.
async fn authenticate(
    conn: &mut FramedConn<Stream>,
    user: &str,
    credential: &BackendCredential,
) -> Result<(), SessionError> {
    let mut scram: Option<ScramClient> = None;
    loop {
        let frame = conn.read_frame().await?;
        match frame.tag {
            tag::AUTHENTICATION => {}
            tag::ERROR_RESPONSE => return Err(server_refused(&frame.body)),
            tag::NEGOTIATE_PROTOCOL_VERSION => continue,
            other => {
                return Err(cannot_login(
                    user,
                    &format!(
                        "the server sent message type {:?} during authentication",
                        other as char
                    ),
                ))
            }
        }
        let request =
            Authentication::parse(&frame.body).map_err(|source| SessionError::Protocol {
                side: Side::Server,
                source,
            })?;
        match request {
            Authentication::Ok => return Ok(()),
            Authentication::CleartextPassword => match credential {
                BackendCredential::Password(password) => encode_password(password, conn.out()),
                _ => return Err(cannot_login(user, "the server asks for a clear-text password, which the proxy does not know for this role")),
            },
            Authentication::Md5Password { salt } => {
                let secret = match credential {
                    BackendCredential::Password(password) => md5_secret(user, password),
                    BackendCredential::Md5Secret(secret) => secret.clone(),
                    _ => return Err(cannot_login(user, "the server asks for md5 authentication, but the role's secret known to the proxy is not an md5 secret")),
                };
                encode_password(&md5_response(&secret, salt), conn.out());
            }
            Authentication::Sasl { mechanisms } => {
                if !mechanisms.iter().any(|m| m == "SCRAM-SHA-256") {
                    return Err(cannot_login(user, "the server offers no SASL mechanism the proxy supports (SCRAM-SHA-256)"));
                }
                let scram_credential = match credential {
                    BackendCredential::Password(password) => ScramCredential::Password(password.clone()),
                    BackendCredential::ScramKeys { client_key, server_key } => ScramCredential::Keys {
                        client_key: *client_key,
                        server_key: *server_key,
                    },
                    _ => return Err(cannot_login(user, "the server asks for SCRAM-SHA-256, and the proxy holds no password or SCRAM keys for this role (the client authenticated with trust or md5)")),
                };
                let client = ScramClient::new(scram_credential);
                SaslInitialResponse {
                    mechanism: "SCRAM-SHA-256".to_owned(),
                    data: client.client_first(),
                }
                .encode(conn.out());
                scram = Some(client);
            }
            Authentication::SaslContinue { data } => {
                let Some(mut client) = scram.take() else {
                    return Err(cannot_login(user, "the server sent a SASL challenge before SASL started"));
                };
                let (client, reply) = if matches!(credential, BackendCredential::Password(_)) {
                    // Derives keys from the password, unless it did for this salt already.
                    off_runtime("deriving SCRAM keys from the role's password", move || {
                        let reply = client.server_first(&data);
                        (client, reply)
                    })
                    .await?
                } else {
                    let reply = client.server_first(&data);
                    (client, reply)
                };
                let reply = reply.map_err(|e| cannot_login(user, &e.to_string()))?;
                scram = Some(client);
                encode_sasl_response(&reply, conn.out());
            }
            Authentication::SaslFinal { data } => {
                let Some(client) = scram.as_mut() else {
                    return Err(cannot_login(user, "the server sent a SASL outcome before SASL started"));
                };
                client
                    .server_final(&data)
                    .map_err(|e| cannot_login(user, &e.to_string()))?;
                continue;
            }
            other => {
                return Err(cannot_login(
                    user,
                    &format!("the server asks for an authentication method the proxy does not support ({other:?})"),
                ))
            }
        }
        conn.flush().await?;
    }
}

fn server_refused(body: &[u8]) -> SessionError {
    match ErrorFields::parse(body) {
        Ok(fields) => SessionError::ServerRefused(fields),
        Err(source) => SessionError::Protocol {
            side: Side::Server,
            source,
        },
    }
}

fn cannot_login(user: &str, why: &str) -> SessionError {
    SessionError::Refused(
        ErrorFields::new(
            Severity::Fatal,
            sqlstate::INVALID_AUTHORIZATION,
            format!("understudy could not log in to the server as \"{user}\": {why}"),
        )
        .with_hint("Give the proxy this role's password in [[users]], or let the client authenticate with scram-sha-256 so the proxy can reuse its proof."),
    )
}
