//! The hot path: relaying bytes between a client and its backend.
//!
//! One future drives both directions of a session. Each direction is a
//! [`Pipe`]: bytes are read into a buffer, the [`Scanner`] finds frame
//! boundaries and shows the session the few messages it follows
//! (`ReadyForQuery`, `Terminate`, …), and the scanned bytes are written to
//! the other side unchanged, without being copied. A direction reads again
//! only once its previous bytes are written, which bounds memory per session
//! and passes backpressure through, while the other direction keeps moving.
//!
//! The loop is written as a hand-made `poll` function rather than
//! `tokio::select!` over read/write futures: it needs no split of the
//! sockets, builds no futures per message, and costs the same syscalls as a
//! bare byte copy (read, write, nothing else) — on a small machine the cost
//! of a proxy is exactly its wake-ups and syscalls per message.

use std::future::poll_fn;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;
use understudy_protocol::backend;
use understudy_protocol::frontend;
use understudy_protocol::scan::{Piece, Scanner};

use crate::error::{SessionError, Side};
use crate::journal::{server_message_needed_whole, Journal, Limits};
use crate::metrics::{self, ProxyMetrics};

/// Free space kept available for each read.
const READ_RESERVE: usize = 16 * 1024;

/// One direction of a session: the bytes read from one side and not yet
/// written to the other.
pub struct Pipe {
    /// Bytes read and not yet scanned completely (a partial frame).
    buf: BytesMut,
    /// Scanned bytes being written to the other side.
    out: Bytes,
    /// The writer has bytes that may still sit in a write buffer.
    needs_flush: bool,
    /// Nothing more is read from this side (the client sent Terminate).
    done_reading: bool,
    scanner: Scanner,
}

impl Pipe {
    /// A pipe that starts with bytes already read during startup.
    pub fn new(already_read: BytesMut, max_message_len: usize) -> Self {
        Pipe {
            buf: already_read,
            out: Bytes::new(),
            needs_flush: false,
            done_reading: false,
            scanner: Scanner::new(max_message_len),
        }
    }
}

/// What the relay tracks about the session while it runs.
pub struct RelayState {
    /// The session journal, which also knows the transaction status.
    pub journal: Journal,
    /// The client sent Terminate.
    pub client_terminated: bool,
}

impl RelayState {
    /// State of a session that just opened.
    pub fn new(limits: Limits) -> Self {
        RelayState {
            journal: Journal::new(limits),
            client_terminated: false,
        }
    }
}

/// Why the relay stopped.
#[derive(Debug)]
pub enum RelayEnd {
    /// The client sent Terminate, and it was passed on to the server.
    ClientTerminated,
    /// A side closed its socket or failed.
    Failed(SessionError),
}

/// Relays between `client` and `server` until one of them ends the session.
pub async fn relay<C, S>(
    client: &mut C,
    server: &mut S,
    to_server: &mut Pipe,
    to_client: &mut Pipe,
    state: &mut RelayState,
    metrics: &ProxyMetrics,
) -> RelayEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    poll_fn(|cx| {
        let from_server = pump(cx, server, client, to_client, Side::Server, |pipe, n| {
            metrics::add(&metrics.server_bytes_in, n as u64);
            scan_server(pipe, state, metrics)
        });
        if let Poll::Ready(end) = from_server {
            return Poll::Ready(end);
        }
        let from_client = pump(cx, client, server, to_server, Side::Client, |pipe, n| {
            metrics::add(&metrics.client_bytes_in, n as u64);
            scan_client(pipe, state, metrics)
        });
        if let Poll::Ready(end) = from_client {
            return Poll::Ready(end);
        }
        if to_server.done_reading && to_server.out.is_empty() && !to_server.needs_flush {
            return Poll::Ready(RelayEnd::ClientTerminated);
        }
        Poll::Pending
    })
    .await
}

/// Moves bytes from `from` to `to` until both would block. Returns `Ready`
/// only when the session must end.
fn pump<R, W>(
    cx: &mut Context<'_>,
    from: &mut R,
    to: &mut W,
    pipe: &mut Pipe,
    from_side: Side,
    mut scan: impl FnMut(&mut Pipe, usize) -> Result<(), SessionError>,
) -> Poll<RelayEnd>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let to_side = match from_side {
        Side::Client => Side::Server,
        Side::Server => Side::Client,
    };
    let failed = |side, source| Poll::Ready(RelayEnd::Failed(SessionError::Io { side, source }));
    loop {
        while !pipe.out.is_empty() {
            match Pin::new(&mut *to).poll_write(cx, &pipe.out) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(RelayEnd::Failed(SessionError::Closed(to_side)))
                }
                Poll::Ready(Ok(n)) => pipe.out.advance(n),
                Poll::Ready(Err(e)) => return failed(to_side, e),
                Poll::Pending => return Poll::Pending,
            }
            if pipe.out.is_empty() {
                // Release the shared buffer so the next read can reuse it.
                pipe.out = Bytes::new();
                pipe.needs_flush = true;
            }
        }
        if pipe.needs_flush {
            match Pin::new(&mut *to).poll_flush(cx) {
                Poll::Ready(Ok(())) => pipe.needs_flush = false,
                Poll::Ready(Err(e)) => return failed(to_side, e),
                Poll::Pending => return Poll::Pending,
            }
        }
        if pipe.done_reading {
            return Poll::Pending;
        }
        if pipe.buf.capacity() - pipe.buf.len() < READ_RESERVE / 4 {
            pipe.buf.reserve(READ_RESERVE);
        }
        match poll_read_buf(Pin::new(&mut *from), cx, &mut pipe.buf) {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(RelayEnd::Failed(SessionError::Closed(from_side)))
            }
            Poll::Ready(Ok(n)) => {
                if let Err(e) = scan(pipe, n) {
                    return Poll::Ready(RelayEnd::Failed(e));
                }
            }
            Poll::Ready(Err(e)) => return failed(from_side, e),
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// Scans bytes from the client: journals each message, counts requests
/// and notices Terminate.
fn scan_client(
    pipe: &mut Pipe,
    state: &mut RelayState,
    metrics: &ProxyMetrics,
) -> Result<(), SessionError> {
    let max_kept = state.journal.max_message_len();
    let journal = &mut state.journal;
    let mut terminated = false;
    let scanned = pipe
        .scanner
        .scan(
            &pipe.buf,
            |_, total| total <= max_kept,
            |piece| {
                let Piece::Start {
                    tag, bytes, rest, ..
                } = piece
                else {
                    return ControlFlow::Continue(());
                };
                match tag {
                    frontend::tag::TERMINATE => {
                        terminated = true;
                        return ControlFlow::Break(());
                    }
                    frontend::tag::QUERY | frontend::tag::EXECUTE => {
                        metrics::inc(&metrics.queries_total)
                    }
                    _ => {}
                }
                journal.client_message(tag, (rest == 0).then_some(bytes));
                ControlFlow::Continue(())
            },
        )
        .map_err(|source| SessionError::Protocol {
            side: Side::Client,
            source,
        })?;
    pipe.out = pipe.buf.split_to(scanned.relay_upto).freeze();
    if terminated {
        // Nothing after Terminate is meaningful: stop reading the client.
        state.client_terminated = true;
        pipe.buf.clear();
        pipe.done_reading = true;
    }
    Ok(())
}

/// Scans bytes from the server: follows replies and the transaction status.
fn scan_server(
    pipe: &mut Pipe,
    state: &mut RelayState,
    metrics: &ProxyMetrics,
) -> Result<(), SessionError> {
    let journal = &mut state.journal;
    let scanned = pipe
        .scanner
        .scan(
            &pipe.buf,
            |tag, _| server_message_needed_whole(tag),
            |piece| {
                if let Piece::Start {
                    tag: backend::tag::ERROR_RESPONSE,
                    ..
                } = piece
                {
                    metrics::inc(&metrics.server_errors_total);
                }
                journal.server_piece(piece);
                ControlFlow::Continue(())
            },
        )
        .map_err(|source| SessionError::Protocol {
            side: Side::Server,
            source,
        })?;
    pipe.out = pipe.buf.split_to(scanned.relay_upto).freeze();
    Ok(())
}
