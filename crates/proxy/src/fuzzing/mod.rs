//! Bodies of the proxy's fuzz targets in `fuzz/`, shared with the corpus
//! replay in `tests/fuzz_corpus.rs` so that `cargo test` runs every
//! committed input through the same checks. Each function takes arbitrary
//! bytes and panics when an invariant does not hold.
//!
//! - [`startup_auth`]: the startup packet and the client authentication.
//! - [`journal`]: the relay's view of a session — client requests and
//!   server replies followed by the [`Journal`](crate::journal::Journal).
//!
//! Not part of the public API.

mod journal;
mod startup_auth;

pub use journal::journal;
pub use startup_auth::{startup_auth, PASSWORD};
