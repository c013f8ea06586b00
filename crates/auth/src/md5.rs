//! PostgreSQL's md5 password method: the stored `md5…` secret and the salted response
//! a client sends for `AuthenticationMD5Password`. Both sides can be computed from the
//! stored secret alone, so the proxy never needs the plaintext password.

use ::md5::{Digest, Md5};

use crate::scram_common::constant_time_eq;
use crate::secret::Secret;

/// The stored md5 secret of `user`: `"md5" + hex(md5(password + user))`.
pub fn md5_secret(user: &str, password: &str) -> String {
    let mut hasher = Md5::new();
    hasher.update(password.as_bytes());
    hasher.update(user.as_bytes());
    format!("md5{}", hex(&hasher.finalize()))
}

/// The response to `AuthenticationMD5Password` with `salt`:
/// `"md5" + hex(md5(hex_part + salt))`, where `hex_part` is `secret_md5` without its
/// `md5` prefix (a string without the prefix is taken as the hex part itself).
pub fn md5_response(secret_md5: &str, salt: [u8; 4]) -> String {
    let hex_part = secret_md5.strip_prefix("md5").unwrap_or(secret_md5);
    let mut hasher = Md5::new();
    hasher.update(hex_part.as_bytes());
    hasher.update(salt);
    format!("md5{}", hex(&hasher.finalize()))
}

/// Whether `response` is the correct md5 response of `user` for `salt`. Plaintext and
/// md5 secrets can be checked; a SCRAM secret cannot and never matches. The comparison
/// takes the same time wherever the response differs.
pub fn md5_verify(secret: &Secret, user: &str, salt: [u8; 4], response: &str) -> bool {
    let expected = match secret {
        Secret::Plain(password) => md5_response(&md5_secret(user, password), salt),
        Secret::Md5(secret) => md5_response(secret, salt),
        Secret::Scram(_) => return false,
    };
    constant_time_eq(expected.as_bytes(), response.as_bytes())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}
