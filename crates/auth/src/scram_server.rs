//! The server side of SCRAM-SHA-256: the proxy verifying a client that answered
//! `AuthenticationSASL` with `SCRAM-SHA-256`.
//!
//! A successful exchange yields the client's `ClientKey` ([`ScramVerified`]), which is
//! what the proxy needs to authenticate to a PostgreSQL server holding the same secret
//! without knowing the password (SCRAM passthrough, see
//! [`ScramCredential::Keys`](crate::ScramCredential::Keys)).
//!
//! A role that does not exist or has no SCRAM secret gets a mock exchange, as in
//! PostgreSQL: a salt derived from the role name, a complete message flow, and
//! [`AuthError::WrongPassword`] at the end. A client cannot tell an unknown role from a
//! wrong password.

use std::fmt;
use std::sync::OnceLock;

use crate::error::AuthError;
use crate::scram_common::{
    b64_decode, b64_decode_key, b64_encode, check_nonce, constant_time_eq, generate_nonce, hmac,
    message_text, random_bytes, sha256, truncate, xor, Attributes, Key, DEFAULT_ITERATIONS,
    MECHANISM, SALT_LEN,
};
use crate::secret::{ScramSecret, Secret};

/// Result of a successful verification.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramVerified {
    /// The server-final-message (`v=<ServerSignature>`) to send in `AuthenticationSASLFinal`.
    pub server_final: Vec<u8>,
    /// The client's `ClientKey` (`ClientProof XOR ClientSignature`), usable as
    /// [`ScramCredential::Keys`](crate::ScramCredential::Keys) towards a server.
    pub client_key: [u8; 32],
}

impl fmt::Debug for ScramVerified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramVerified")
            .field("server_final", &String::from_utf8_lossy(&self.server_final))
            .field("client_key", &"<redacted>")
            .finish()
    }
}

/// One SCRAM-SHA-256 exchange with one client.
pub struct ScramServer {
    secret: ScramSecret,
    /// The role is unknown or has no SCRAM secret: the exchange must fail at the end.
    mock: bool,
    server_nonce: String,
    state: State,
}

enum State {
    AwaitingClientFirst,
    AwaitingClientFinal {
        /// The gs2 header exactly as the client sent it (`n,,` or `y,,`).
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        /// Client nonce followed by server nonce.
        nonce: String,
    },
    Finished,
}

impl ScramServer {
    /// An exchange against `secret`; `None` (unknown role, or a role without a SCRAM
    /// secret) runs a mock exchange that always ends in [`AuthError::WrongPassword`].
    /// When the role name is known, prefer [`ScramServer::mock`] or
    /// [`ScramServer::from_secret`], whose fake salt depends on it like a real one would.
    pub fn new(secret: Option<ScramSecret>) -> Self {
        match secret {
            Some(secret) => Self::with_nonce(secret, false, generate_nonce()),
            None => Self::mock(""),
        }
    }

    /// A mock exchange for `user`, with a fake salt that is the same for every attempt
    /// on this role name during the life of the process.
    pub fn mock(user: &str) -> Self {
        Self::with_nonce(mock_secret(user), true, generate_nonce())
    }

    /// An exchange for a role whose plaintext password is known: derives a secret with
    /// a random salt and [`DEFAULT_ITERATIONS`].
    pub fn from_password(password: &str) -> Self {
        let salt = random_bytes::<SALT_LEN>();
        let secret = ScramSecret::from_password(password, &salt, DEFAULT_ITERATIONS);
        Self::with_nonce(secret, false, generate_nonce())
    }

    /// An exchange for `user` with whatever secret is stored for it: a SCRAM secret or a
    /// plaintext password authenticate, an md5 secret cannot be used for SCRAM and gets
    /// a mock exchange (as in PostgreSQL). A plaintext password is checked against its
    /// remembered verifier ([`ScramSecret::for_known_password`]).
    pub fn from_secret(secret: &Secret, user: &str) -> Self {
        match secret {
            Secret::Scram(secret) => Self::with_nonce(secret.clone(), false, generate_nonce()),
            Secret::Plain(password) => Self::with_nonce(
                ScramSecret::for_known_password(password),
                false,
                generate_nonce(),
            ),
            Secret::Md5(_) => Self::mock(user),
        }
    }

    pub(crate) fn with_nonce(secret: ScramSecret, mock: bool, server_nonce: String) -> Self {
        ScramServer {
            secret,
            mock,
            server_nonce,
            state: State::AwaitingClientFirst,
        }
    }

    /// Handles `SASLInitialResponse`: the chosen `mechanism` and the client-first-message.
    /// Returns the server-first-message for `AuthenticationSASLContinue`.
    pub fn client_first(&mut self, mechanism: &str, data: &[u8]) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, State::AwaitingClientFirst) {
            return Err(AuthError::protocol(
                "client-first-message received twice in one SCRAM exchange",
            ));
        }
        self.state = State::Finished;
        if mechanism != MECHANISM {
            return Err(AuthError::UnsupportedMechanism(truncate(mechanism)));
        }
        let first = parse_client_first(data)?;
        let nonce = format!("{}{}", first.client_nonce, self.server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            b64_encode(&self.secret.salt),
            self.secret.iterations
        );
        self.state = State::AwaitingClientFinal {
            gs2_header: first.gs2_header.to_owned(),
            client_first_bare: first.bare.to_owned(),
            server_first: server_first.clone(),
            nonce,
        };
        Ok(server_first.into_bytes())
    }

    /// Handles the client-final-message (`SASLResponse`). On success returns the
    /// server-final-message and the client's `ClientKey`.
    pub fn client_final(&mut self, data: &[u8]) -> Result<ScramVerified, AuthError> {
        let State::AwaitingClientFinal {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
        } = std::mem::replace(&mut self.state, State::Finished)
        else {
            return Err(AuthError::protocol(
                "client-final-message received before client-first-message, or after the exchange ended",
            ));
        };
        let text = message_text(data, "client-final-message")?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or_else(|| {
            AuthError::protocol("client-final-message: proof p= is missing or not last")
        })?;
        let mut attributes = Attributes::new("client-final-message", without_proof);
        let channel_binding = b64_decode(attributes.require('c')?, "client-final-message c=")?;
        if channel_binding != gs2_header.as_bytes() {
            return Err(AuthError::protocol(format!(
                "client-final-message: channel binding c= does not match the gs2 header {gs2_header:?} of the client-first-message"
            )));
        }
        if attributes.require('r')? != nonce {
            return Err(AuthError::protocol(
                "client-final-message: nonce r= is not the nonce of the server-first-message",
            ));
        }
        attributes.skip_extensions()?;
        if proof.contains(',') {
            return Err(AuthError::protocol(
                "client-final-message: proof p= must be the last attribute",
            ));
        }
        let proof: Key = b64_decode_key(proof, "client-final-message p=")?;

        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = hmac(&self.secret.stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &client_signature);
        let proof_ok = constant_time_eq(&sha256(&client_key), &self.secret.stored_key);
        if !proof_ok || self.mock {
            return Err(AuthError::WrongPassword);
        }
        let server_signature = hmac(&self.secret.server_key, auth_message.as_bytes());
        Ok(ScramVerified {
            server_final: format!("v={}", b64_encode(&server_signature)).into_bytes(),
            client_key,
        })
    }
}

/// The parts of a client-first-message the exchange needs later.
struct ClientFirst<'a> {
    gs2_header: &'a str,
    bare: &'a str,
    client_nonce: &'a str,
}

fn parse_client_first(data: &[u8]) -> Result<ClientFirst<'_>, AuthError> {
    const MESSAGE: &str = "client-first-message";
    let text = message_text(data, MESSAGE)?;
    let (flag, rest) = text
        .split_once(',')
        .ok_or_else(|| AuthError::protocol(format!("{MESSAGE}: gs2 header is incomplete")))?;
    match flag {
        "n" | "y" => {}
        f if f.starts_with("p=") => {
            return Err(AuthError::protocol(format!(
                "{MESSAGE}: client requires channel binding ({}), but only SCRAM-SHA-256 without channel binding is offered",
                truncate(f)
            )))
        }
        f => {
            return Err(AuthError::protocol(format!(
                "{MESSAGE}: invalid channel binding flag {:?} (expected n, y or p=…)",
                truncate(f)
            )))
        }
    }
    let (authzid, bare) = rest
        .split_once(',')
        .ok_or_else(|| AuthError::protocol(format!("{MESSAGE}: gs2 header is incomplete")))?;
    if !authzid.is_empty() {
        return Err(AuthError::protocol(format!(
            "{MESSAGE}: an authorization identity (a=…) is not supported; name the role in the startup message instead"
        )));
    }
    let gs2_header = &text[..text.len() - bare.len()];

    let mut attributes = Attributes::new(MESSAGE, bare);
    match attributes.next_attribute()? {
        Some(('n', _user)) => {} // PostgreSQL ignores it; the startup message names the role
        Some(('m', _)) => {
            return Err(AuthError::protocol(format!(
                "{MESSAGE}: mandatory extension m= is not supported"
            )))
        }
        Some((name, _)) => {
            return Err(AuthError::protocol(format!(
                "{MESSAGE}: expected user name n= but found {name}="
            )))
        }
        None => {
            return Err(AuthError::protocol(format!(
                "{MESSAGE}: user name n= is missing"
            )))
        }
    }
    let client_nonce = attributes.require('r')?;
    check_nonce(client_nonce, MESSAGE)?;
    attributes.skip_extensions()?;
    Ok(ClientFirst {
        gs2_header,
        bare,
        client_nonce,
    })
}

/// The fake secret of a mock exchange: salt and keys derived from a per-process random
/// key and the role name, so repeated attempts see a stable salt like a real role's.
fn mock_secret(user: &str) -> ScramSecret {
    static MOCK_KEY: OnceLock<Key> = OnceLock::new();
    let key = MOCK_KEY.get_or_init(random_bytes::<32>);
    let salt = hmac(key, format!("salt\0{user}").as_bytes());
    ScramSecret {
        iterations: DEFAULT_ITERATIONS,
        salt: salt[..SALT_LEN].to_vec(),
        stored_key: hmac(key, format!("stored\0{user}").as_bytes()),
        server_key: hmac(key, format!("server\0{user}").as_bytes()),
    }
}
