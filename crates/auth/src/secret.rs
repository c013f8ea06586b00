//! Password secrets as PostgreSQL stores them in `pg_authid.rolpassword` (and as users
//! write them in the proxy configuration): SCRAM-SHA-256 verifiers, `md5…` hashes and
//! plaintext passwords.

use std::fmt;

use crate::error::AuthError;
use crate::scram_common::{b64_encode, hi, hmac, normalize_password, sha256, Key};

const SCRAM_PREFIX: &str = "SCRAM-SHA-256$";

/// A stored password secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A SCRAM-SHA-256 verifier; supports SCRAM and nothing else.
    Scram(ScramSecret),
    /// `"md5"` followed by 32 lowercase hex digits of `md5(password + user)`; supports md5
    /// authentication only.
    Md5(String),
    /// A plaintext password; supports every method.
    Plain(String),
}

impl Secret {
    /// Classifies a stored secret the way PostgreSQL does: `SCRAM-SHA-256$…` is a SCRAM
    /// verifier, `md5` + 32 lowercase hex digits is an md5 hash, anything else is a
    /// plaintext password.
    ///
    /// Unlike PostgreSQL, which silently treats a malformed SCRAM string as a plaintext
    /// password, a string that starts with `SCRAM-SHA-256$` but does not parse is an
    /// error: it is almost certainly a damaged secret, not someone's password.
    pub fn parse(s: &str) -> Result<Secret, AuthError> {
        if s.starts_with(SCRAM_PREFIX) {
            return ScramSecret::parse(s).map(Secret::Scram);
        }
        if is_md5_secret(s) {
            return Ok(Secret::Md5(s.to_owned()));
        }
        Ok(Secret::Plain(s.to_owned()))
    }
}

/// Whether `s` has the form PostgreSQL accepts as an md5 secret.
pub(crate) fn is_md5_secret(s: &str) -> bool {
    s.len() == 35
        && s.starts_with("md5")
        && s.bytes()
            .skip(3)
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Scram(secret) => f.debug_tuple("Scram").field(secret).finish(),
            Secret::Md5(_) => f.write_str("Md5(<redacted>)"),
            Secret::Plain(_) => f.write_str("Plain(<redacted>)"),
        }
    }
}

/// A SCRAM-SHA-256 verifier: what a server needs to check a client's proof and to prove
/// itself, without knowing the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramSecret {
    /// The `Hi()` iteration count.
    pub iterations: u32,
    /// The salt (raw bytes, not base64).
    pub salt: Vec<u8>,
    /// `H(ClientKey)`.
    pub stored_key: [u8; 32],
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: [u8; 32],
}

impl ScramSecret {
    /// Derives the verifier for `password`, as PostgreSQL does for
    /// `password_encryption = 'scram-sha-256'`. An iteration count of 0 behaves like 1.
    pub fn from_password(password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted_password = hi(normalize_password(password), salt, iterations);
        let client_key = client_key(&salted_password);
        ScramSecret {
            iterations,
            salt: salt.to_vec(),
            stored_key: sha256(&client_key),
            server_key: hmac(&salted_password, b"Server Key"),
        }
    }

    /// The verifier a role whose plaintext password the proxy knows is checked
    /// against: derived once per password, with a salt drawn then, and
    /// remembered (PostgreSQL too keeps one salt per role). The first call
    /// for a password costs a derivation (4096 HMACs): callers on an async
    /// runtime should make it off the runtime's threads unless
    /// [`ScramSecret::remembered_for`] has it.
    pub fn for_known_password(password: &str) -> Self {
        crate::key_cache::verifier(password)
    }

    /// The verifier [`ScramSecret::for_known_password`] derived for
    /// `password`, if it did already; never derives.
    pub fn remembered_for(password: &str) -> Option<Self> {
        crate::key_cache::remembered_verifier(password)
    }

    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (base64 parts).
    pub fn parse(s: &str) -> Result<ScramSecret, AuthError> {
        let invalid = |what: &str| AuthError::InvalidSecret(what.to_owned());
        let rest = s
            .strip_prefix(SCRAM_PREFIX)
            .ok_or_else(|| invalid("it does not start with SCRAM-SHA-256$"))?;
        let (params, keys) = rest
            .split_once('$')
            .ok_or_else(|| invalid("the '$' between parameters and keys is missing"))?;
        let (iterations, salt) = params
            .split_once(':')
            .ok_or_else(|| invalid("the ':' between iteration count and salt is missing"))?;
        let (stored_key, server_key) = keys
            .split_once(':')
            .ok_or_else(|| invalid("the ':' between StoredKey and ServerKey is missing"))?;
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|&i| i > 0)
            .ok_or_else(|| invalid("the iteration count is not a positive integer"))?;
        let salt = decode(salt, "salt")?;
        if salt.is_empty() {
            return Err(invalid("the salt is empty"));
        }
        Ok(ScramSecret {
            iterations,
            salt,
            stored_key: decode_key(stored_key, "StoredKey")?,
            server_key: decode_key(server_key, "ServerKey")?,
        })
    }

    /// The secret in the form PostgreSQL stores in `pg_authid.rolpassword`.
    pub fn to_postgres_string(&self) -> String {
        format!(
            "{SCRAM_PREFIX}{}:{}${}:{}",
            self.iterations,
            b64_encode(&self.salt),
            b64_encode(&self.stored_key),
            b64_encode(&self.server_key)
        )
    }
}

impl fmt::Debug for ScramSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramSecret")
            .field("iterations", &self.iterations)
            .field("salt", &b64_encode(&self.salt))
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

/// `HMAC(SaltedPassword, "Client Key")`.
pub(crate) fn client_key(salted_password: &Key) -> Key {
    hmac(salted_password, b"Client Key")
}

fn decode(value: &str, what: &str) -> Result<Vec<u8>, AuthError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .map_err(|e| AuthError::InvalidSecret(format!("the {what} is not valid base64 ({e})")))
}

fn decode_key(value: &str, what: &str) -> Result<Key, AuthError> {
    let bytes = decode(value, what)?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| AuthError::InvalidSecret(format!("the {what} is {len} bytes, not 32")))
}
