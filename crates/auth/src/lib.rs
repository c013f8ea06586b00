//! Authentication primitives for a PostgreSQL proxy, without any I/O.
//!
//! The proxy authenticates its clients itself ([`ScramServer`], [`md5_verify`]) and
//! authenticates to PostgreSQL servers on their behalf ([`ScramClient`],
//! [`md5_response`]). With SCRAM passthrough the proxy never needs a client's password:
//! the `ClientKey` a client reveals while proving itself ([`ScramVerified::client_key`])
//! plus the `ServerKey` of the stored secret ([`ScramCredential::Keys`]) is enough to
//! log in to any server that stores the same secret.
//!
//! The caller moves bytes between these state machines and the wire protocol; every
//! malformed input is an [`AuthError`], never a panic.
//!
//! # Layout
//!
//! - [`error`] — [`AuthError`], the one error type of this crate.
//! - [`secret`] — stored secrets ([`Secret`], [`ScramSecret`]): parsing, derivation from
//!   a password, PostgreSQL's text form.
//! - `scram_common` — `H`, `HMAC`, `Hi`, nonces, password normalization and the SCRAM
//!   attribute parser shared by both sides.
//! - [`scram_server`] — [`ScramServer`]: verifies a client, including the mock exchange
//!   for unknown roles.
//! - [`scram_client`] — [`ScramClient`]: authenticates to a server with a password or
//!   with passthrough keys.
//! - `key_cache` — the keys [`ScramClient`] derives from a password, remembered per
//!   password, salt and iteration count (a failover reconnects every session at once).
//! - [`md5`] — the md5 method: stored secret, salted response, verification.

pub mod error;
mod key_cache;
pub mod md5;
pub mod scram_client;
mod scram_common;
pub mod scram_server;
pub mod secret;

#[cfg(test)]
mod tests;

pub use crate::md5::{md5_response, md5_secret, md5_verify};
pub use error::AuthError;
pub use scram_client::{ScramClient, ScramCredential};
pub use scram_common::{DEFAULT_ITERATIONS, MAX_ITERATIONS, MECHANISM};
pub use scram_server::{ScramServer, ScramVerified};
pub use secret::{ScramSecret, Secret};
