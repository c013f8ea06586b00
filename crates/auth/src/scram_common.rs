//! SCRAM-SHA-256 building blocks shared by the server and the client side
//! (RFC 5802 with the SHA-256 parameters of RFC 7677): the `H`, `HMAC` and `Hi`
//! functions, nonces, password normalization, constant-time comparison and the parser
//! for the comma-separated `a=value` attribute lists SCRAM messages are made of.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::AuthError;

/// SASL mechanism name of SCRAM-SHA-256 without channel binding.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// Iteration count used for secrets derived by this crate (PostgreSQL's default).
pub const DEFAULT_ITERATIONS: u32 = 4096;

/// Largest iteration count the client side accepts from a server. `Hi()` costs one HMAC
/// per iteration, so an unbounded count would let a hostile server burn the proxy's CPU.
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// Length of the salt generated for new secrets (PostgreSQL's default).
pub(crate) const SALT_LEN: usize = 16;

/// Random bytes in a nonce before base64 (PostgreSQL uses the same length).
const NONCE_RAW_LEN: usize = 18;

/// A SHA-256 sized key or digest.
pub(crate) type Key = [u8; 32];

/// `H(data)`.
pub(crate) fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

/// `HMAC(key, message)` with SHA-256.
pub(crate) fn hmac(key: &[u8], message: &[u8]) -> Key {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(message);
            mac.finalize().into_bytes().into()
        }
        // HMAC hashes or zero-pads keys of any length, so the constructor cannot fail.
        Err(_) => unreachable!("HMAC-SHA-256 accepts keys of every length"),
    }
}

/// `Hi(password, salt, iterations)`, which is PBKDF2-HMAC-SHA-256 with a 32-byte output.
pub(crate) fn hi(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    pbkdf2::pbkdf2_hmac_array::<Sha256, 32>(password, salt, iterations)
}

/// Byte-wise XOR of two keys.
pub(crate) fn xor(a: &Key, b: &Key) -> Key {
    let mut out = [0u8; 32];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b.iter())) {
        *o = x ^ y;
    }
    out
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

/// The password bytes fed to `Hi()`.
///
/// PostgreSQL runs SASLprep on the password and falls back to the raw bytes when SASLprep
/// rejects it. Passwords are used here exactly as given, which agrees with PostgreSQL for
/// every ASCII password (SASLprep leaves printable ASCII alone and rejects control
/// characters, whose fallback is the raw bytes). A non-ASCII password that SASLprep would
/// rewrite (NFKC forms, non-ASCII spaces, soft hyphens) gives a different secret; such a
/// role should be configured with its `SCRAM-SHA-256$…` secret instead of plaintext.
pub(crate) fn normalize_password(password: &str) -> &[u8] {
    password.as_bytes()
}

/// A fresh random nonce: 18 random bytes in base64, printable and free of commas.
pub(crate) fn generate_nonce() -> String {
    STANDARD.encode(random_bytes::<NONCE_RAW_LEN>())
}

/// `N` bytes from the thread-local cryptographically secure generator.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

pub(crate) fn b64_encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Decodes the base64 value of attribute `what`, naming it in the error.
pub(crate) fn b64_decode(value: &str, what: &str) -> Result<Vec<u8>, AuthError> {
    STANDARD
        .decode(value)
        .map_err(|e| AuthError::protocol(format!("{what} is not valid base64: {e}")))
}

/// Decodes a base64 value that must hold exactly 32 bytes.
pub(crate) fn b64_decode_key(value: &str, what: &str) -> Result<Key, AuthError> {
    let bytes = b64_decode(value, what)?;
    let len = bytes.len();
    bytes
        .try_into()
        .map_err(|_| AuthError::protocol(format!("{what} must be 32 bytes, got {len}")))
}

/// The message as UTF-8 text; SCRAM messages are always text.
pub(crate) fn message_text<'a>(data: &'a [u8], message: &str) -> Result<&'a str, AuthError> {
    if data.is_empty() {
        return Err(AuthError::protocol(format!("{message} is empty")));
    }
    std::str::from_utf8(data)
        .map_err(|_| AuthError::protocol(format!("{message} is not valid UTF-8")))
}

/// Checks that a nonce is non-empty and made of printable ASCII other than `,`
/// (the `printable` production of RFC 5802).
pub(crate) fn check_nonce(nonce: &str, message: &str) -> Result<(), AuthError> {
    if nonce.is_empty() {
        return Err(AuthError::protocol(format!("{message}: nonce r= is empty")));
    }
    if !nonce
        .bytes()
        .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(AuthError::protocol(format!(
            "{message}: nonce r= contains characters outside printable ASCII"
        )));
    }
    Ok(())
}

/// Reads the `a=value` attributes of one SCRAM message in order.
pub(crate) struct Attributes<'a> {
    message: &'static str,
    parts: std::str::Split<'a, char>,
}

impl<'a> Attributes<'a> {
    /// `message` names the SCRAM message in error texts.
    pub(crate) fn new(message: &'static str, text: &'a str) -> Self {
        Attributes {
            message,
            parts: text.split(','),
        }
    }

    /// The next attribute as `(name, value)`, or `None` at the end of the message.
    pub(crate) fn next_attribute(&mut self) -> Result<Option<(char, &'a str)>, AuthError> {
        let Some(part) = self.parts.next() else {
            return Ok(None);
        };
        let mut chars = part.chars();
        match (chars.next(), chars.next()) {
            (Some(name), Some('=')) if name.is_ascii_alphabetic() => Ok(Some((name, &part[2..]))),
            _ => Err(AuthError::protocol(format!(
                "{}: expected an attribute of the form x=value, got {:?}",
                self.message,
                truncate(part)
            ))),
        }
    }

    /// The value of the next attribute, which must be called `name`.
    pub(crate) fn require(&mut self, name: char) -> Result<&'a str, AuthError> {
        match self.next_attribute()? {
            Some((found, value)) if found == name => Ok(value),
            Some((found, _)) => Err(AuthError::protocol(format!(
                "{}: expected attribute {name}= but found {found}=",
                self.message
            ))),
            None => Err(AuthError::protocol(format!(
                "{}: attribute {name}= is missing",
                self.message
            ))),
        }
    }

    /// Skips the optional extensions at the end of a message, checking their form.
    pub(crate) fn skip_extensions(&mut self) -> Result<(), AuthError> {
        while self.next_attribute()?.is_some() {}
        Ok(())
    }
}

/// At most 40 characters of untrusted text, for error messages.
pub(crate) fn truncate(text: &str) -> String {
    text.chars().take(40).collect()
}
