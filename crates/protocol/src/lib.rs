//! PostgreSQL frontend/backend protocol v3: framing, and typed parsing of the
//! messages understudy has to look at or write itself.
//!
//! The proxy relays almost every message as opaque bytes. This crate gives it
//! the cheap tools to do that safely (frame boundaries, tags, length checks)
//! and typed views of the few messages it acts on (startup, authentication,
//! `BackendKeyData`, `ParameterStatus`, `ReadyForQuery`, `ErrorResponse`, …).
//! Everything here is pure: no I/O, no allocation beyond what a message needs,
//! and every parser returns an error instead of panicking on malformed input.
//!
//! # Layout
//! - [`frame`]: tagged frames (`tag + length + body`) — incremental decoding
//!   from a `BytesMut` and a writer that back-patches the length.
//! - [`reader`]: a bounds-checked cursor over a message body.
//! - [`startup`]: the untagged first packet of a connection (StartupMessage,
//!   SSLRequest, GSSENCRequest, CancelRequest).
//! - [`frontend`]: tags of client messages and the authentication responses.
//! - [`backend`]: tags of server messages and typed views of the ones the
//!   proxy reads or writes.
//! - [`scan`]: a streaming scanner that finds frame boundaries in relayed
//!   bytes without copying them.
//! - [`error`]: the [`ProtocolError`] type.
//! - `fuzzing` (hidden): the checks the fuzz targets and the corpus replay run.

pub mod backend;
pub mod error;
pub mod frame;
pub mod frontend;
#[doc(hidden)]
pub mod fuzzing;
pub mod reader;
pub mod scan;
pub mod startup;

pub use error::ProtocolError;
pub use frame::{Frame, FrameWriter};

/// The protocol version understudy speaks with both clients and servers: 3.0.
pub const PROTOCOL_VERSION_3_0: i32 = 196_608;

/// Default upper bound for one message, in bytes. PostgreSQL itself accepts
/// up to 1 GiB for some messages; the proxy only buffers whole messages it
/// needs to read, and relays larger ones without buffering them.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 1 << 30;
