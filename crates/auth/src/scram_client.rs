//! The client side of SCRAM-SHA-256: the proxy authenticating to a PostgreSQL server,
//! either with a plaintext password or, in passthrough mode, with the `ClientKey` a
//! client revealed to the proxy's [`ScramServer`](crate::ScramServer) plus the
//! `ServerKey` from the role's stored secret.

use std::fmt;

use crate::error::AuthError;
use crate::scram_common::{
    b64_decode, b64_decode_key, b64_encode, check_nonce, constant_time_eq, generate_nonce, hi,
    hmac, message_text, normalize_password, sha256, xor, Attributes, Key, MAX_ITERATIONS,
};
use crate::secret::{client_key, ScramSecret};

/// The gs2 header this client sends: no channel binding, no authorization identity.
const GS2_HEADER: &str = "n,,";

/// What the proxy knows about the role it authenticates as.
#[derive(Clone, PartialEq, Eq)]
pub enum ScramCredential {
    /// The plaintext password.
    Password(String),
    /// SCRAM passthrough: the `ClientKey` obtained from a verified client and the
    /// `ServerKey` of the role's stored secret. Works against any server whose secret
    /// for the role is that same secret (same salt and iteration count).
    Keys {
        client_key: [u8; 32],
        server_key: [u8; 32],
    },
}

impl ScramCredential {
    /// Passthrough keys from a client's verified `ClientKey` and the role's secret.
    pub fn passthrough(client_key: [u8; 32], secret: &ScramSecret) -> Self {
        ScramCredential::Keys {
            client_key,
            server_key: secret.server_key,
        }
    }
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScramCredential::Password(_) => f.write_str("Password(<redacted>)"),
            ScramCredential::Keys { .. } => f.write_str("Keys(<redacted>)"),
        }
    }
}

/// One SCRAM-SHA-256 exchange with one server.
pub struct ScramClient {
    credential: ScramCredential,
    client_first_bare: String,
    client_nonce: String,
    state: State,
}

enum State {
    AwaitingServerFirst,
    AwaitingServerFinal { server_signature: Key },
    Finished,
}

impl ScramClient {
    /// A new exchange with a fresh random nonce.
    pub fn new(credential: ScramCredential) -> Self {
        // PostgreSQL takes the role from the startup message and ignores n=.
        Self::with_nonce(credential, "", generate_nonce())
    }

    pub(crate) fn with_nonce(credential: ScramCredential, user: &str, nonce: String) -> Self {
        ScramClient {
            credential,
            client_first_bare: format!("n={user},r={nonce}"),
            client_nonce: nonce,
            state: State::AwaitingServerFirst,
        }
    }

    /// The client-first-message (`n,,n=,r=<nonce>`) for `SASLInitialResponse`.
    pub fn client_first(&self) -> Vec<u8> {
        format!("{GS2_HEADER}{}", self.client_first_bare).into_bytes()
    }

    /// Handles the server-first-message (`AuthenticationSASLContinue`) and returns the
    /// client-final-message for `SASLResponse`.
    pub fn server_first(&mut self, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        const MESSAGE: &str = "server-first-message";
        if !matches!(self.state, State::AwaitingServerFirst) {
            return Err(AuthError::protocol(
                "server-first-message received twice in one SCRAM exchange",
            ));
        }
        self.state = State::Finished;
        let text = message_text(data, MESSAGE)?;
        let mut attributes = Attributes::new(MESSAGE, text);
        let nonce = match attributes.next_attribute()? {
            Some(('r', nonce)) => nonce,
            Some(('m', _)) => {
                return Err(AuthError::protocol(format!(
                    "{MESSAGE}: mandatory extension m= is not supported"
                )))
            }
            Some((name, _)) => {
                return Err(AuthError::protocol(format!(
                    "{MESSAGE}: expected nonce r= but found {name}="
                )))
            }
            None => {
                return Err(AuthError::protocol(format!(
                    "{MESSAGE}: nonce r= is missing"
                )))
            }
        };
        check_nonce(nonce, MESSAGE)?;
        if nonce.len() <= self.client_nonce.len() || !nonce.starts_with(&self.client_nonce) {
            return Err(AuthError::protocol(format!(
                "{MESSAGE}: nonce r= must be the client nonce followed by the server's own part"
            )));
        }
        let salt = b64_decode(attributes.require('s')?, "server-first-message s=")?;
        if salt.is_empty() {
            return Err(AuthError::protocol(format!("{MESSAGE}: salt s= is empty")));
        }
        let iterations = attributes.require('i')?;
        let iterations = iterations
            .parse::<u32>()
            .ok()
            .filter(|i| (1..=MAX_ITERATIONS).contains(i))
            .ok_or_else(|| {
                AuthError::protocol(format!(
                    "{MESSAGE}: iteration count i={} is not an integer between 1 and {MAX_ITERATIONS}",
                    crate::scram_common::truncate(iterations)
                ))
            })?;
        attributes.skip_extensions()?;

        let (client_key, server_key) = match &self.credential {
            ScramCredential::Password(password) => {
                crate::key_cache::keys_for(normalize_password(password), &salt, iterations, || {
                    let salted_password = hi(normalize_password(password), &salt, iterations);
                    (
                        client_key(&salted_password),
                        hmac(&salted_password, b"Server Key"),
                    )
                })
            }
            ScramCredential::Keys {
                client_key,
                server_key,
            } => (*client_key, *server_key),
        };
        let without_proof = format!("c={},r={nonce}", b64_encode(GS2_HEADER.as_bytes()));
        let auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let client_signature = hmac(&sha256(&client_key), auth_message.as_bytes());
        let proof = xor(&client_key, &client_signature);
        self.state = State::AwaitingServerFinal {
            server_signature: hmac(&server_key, auth_message.as_bytes()),
        };
        Ok(format!("{without_proof},p={}", b64_encode(&proof)).into_bytes())
    }

    /// Handles the server-final-message (`AuthenticationSASLFinal`): succeeds only when
    /// the server proved it holds the secret. `e=<reason>` becomes
    /// [`AuthError::ServerError`].
    pub fn server_final(&mut self, data: &[u8]) -> Result<(), AuthError> {
        const MESSAGE: &str = "server-final-message";
        let State::AwaitingServerFinal { server_signature } =
            std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(AuthError::protocol(
                "server-final-message received before server-first-message, or after the exchange ended",
            ));
        };
        let text = message_text(data, MESSAGE)?;
        let mut attributes = Attributes::new(MESSAGE, text);
        match attributes.next_attribute()? {
            Some(('e', reason)) => Err(AuthError::ServerError(crate::scram_common::truncate(
                reason,
            ))),
            Some(('v', verifier)) => {
                let verifier = b64_decode_key(verifier, "server-final-message v=")?;
                attributes.skip_extensions()?;
                if constant_time_eq(&verifier, &server_signature) {
                    Ok(())
                } else {
                    Err(AuthError::ServerSignatureMismatch)
                }
            }
            Some((name, _)) => Err(AuthError::protocol(format!(
                "{MESSAGE}: expected verifier v= or error e= but found {name}="
            ))),
            None => Err(AuthError::protocol(format!(
                "{MESSAGE}: verifier v= is missing"
            ))),
        }
    }
}
