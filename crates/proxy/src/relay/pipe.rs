//! One direction of a session ([`Pipe`]): the bytes read from one side and
//! not yet written to the other; `pump`, which moves them with the same
//! syscalls as a bare byte copy while the relay's scanner looks at every
//! frame on the way; and `take_server_frame`, which takes one message out
//! of the stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;
use understudy_protocol::scan::{Piece, Scanner};

use super::RelayEnd;
use crate::error::{SessionError, Side};
use crate::journal::Journal;
use crate::wake_gate::Gate;

/// Free space kept available for each read.
const READ_RESERVE: usize = 16 * 1024;

/// One direction of a session: the bytes read from one side and not yet
/// written to the other.
pub struct Pipe {
    /// Bytes read and not yet scanned completely (a partial frame).
    pub(super) buf: BytesMut,
    /// Scanned bytes being written to the other side.
    pub(super) out: Bytes,
    /// The writer has bytes that may still sit in a write buffer.
    pub(super) needs_flush: bool,
    /// Nothing more is read from this side (the client sent Terminate).
    pub(super) done_reading: bool,
    /// `buf` holds bytes that were never scanned (read before the relay
    /// started, or from a new backend during a move).
    pub(super) unscanned: bool,
    pub(super) scanner: Scanner,
    /// The read side is polled through this gate: only when its own waker
    /// fired, or it was opened, since its last read found nothing.
    pub(super) read_gate: Gate,
}

impl Pipe {
    /// A pipe that starts with bytes already read during startup.
    pub fn new(already_read: BytesMut, max_message_len: usize) -> Self {
        Pipe {
            buf: already_read,
            out: Bytes::new(),
            needs_flush: false,
            done_reading: false,
            unscanned: true,
            scanner: Scanner::new(max_message_len),
            read_gate: Gate::new(),
        }
    }
}

/// Moves bytes from `from` to `to` until both would block. Returns `Ready`
/// only when the session must end.
pub(super) fn pump<R, W>(
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
        if std::mem::take(&mut pipe.unscanned) && !pipe.buf.is_empty() {
            if let Err(e) = scan(pipe, 0) {
                return Poll::Ready(RelayEnd::Failed(e));
            }
            continue;
        }
        if pipe.buf.capacity() - pipe.buf.len() < READ_RESERVE / 4 {
            pipe.buf.reserve(READ_RESERVE);
        }
        // A read that found nothing registered the gate's waker: until it
        // fires, reading again would find nothing too.
        let Some(waker) = pipe.read_gate.passes(cx) else {
            return Poll::Pending;
        };
        let mut read_cx = Context::from_waker(waker);
        match poll_read_buf(Pin::new(&mut *from), &mut read_cx, &mut pipe.buf) {
            Poll::Ready(Ok(0)) => {
                return Poll::Ready(RelayEnd::Failed(SessionError::Closed(from_side)))
            }
            Poll::Ready(Ok(n)) => {
                // Read on until a read finds nothing and registers the waker.
                pipe.read_gate.open();
                if let Err(e) = scan(pipe, n) {
                    return Poll::Ready(RelayEnd::Failed(e));
                }
            }
            Poll::Ready(Err(e)) => return failed(from_side, e),
            Poll::Pending => return Poll::Pending,
        }
    }
}

/// The bytes a pipe still has to write to the other side, and what it read
/// but did not scan yet (for a session that changes backends).
impl Pipe {
    /// True when what the other side received may end inside a message:
    /// the bytes relayed do, or some are still to be written (they start
    /// wherever a read ended). Anything but the rest of that message would
    /// land inside it.
    pub fn mid_message(&self) -> bool {
        !self.scanner.at_boundary() || !self.out.is_empty()
    }

    /// Writes the pipe's pending output to `to` (used before a move: the
    /// client must receive everything the old server already sent).
    pub async fn drain_to<W: AsyncWrite + Unpin>(&mut self, to: &mut W) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        if !self.out.is_empty() {
            to.write_all(&self.out).await?;
            to.flush().await?;
        }
        self.out = Bytes::new();
        self.needs_flush = false;
        Ok(())
    }

    /// Forgets everything relayed from or to a backend that is gone, and
    /// starts over with `already_read` from the new backend, after `first`
    /// (bytes to write before anything else).
    pub fn restart(&mut self, first: Bytes, already_read: BytesMut) {
        self.out = first;
        self.buf = already_read;
        self.needs_flush = false;
        self.done_reading = false;
        self.unscanned = true;
        self.read_gate.open();
        let max = self.scanner.max_len();
        self.scanner = Scanner::new(max);
    }

    /// Writes `out`, then reads nothing more until [`Self::resume_reading`]: what is
    /// left in `buf` is scanned again then.
    pub fn pause_after(&mut self, out: Bytes) {
        self.out = out;
        self.done_reading = true;
        self.unscanned = true;
    }

    /// Puts `first` in front of what the pipe still has to write (replies
    /// kept from the client and now let go).
    pub(super) fn put_in_front(&mut self, mut first: BytesMut) {
        first.extend_from_slice(&self.out);
        self.out = first.freeze();
    }

    /// Reads and scans again after the session was parked.
    pub fn resume_reading(&mut self) {
        self.done_reading = false;
        self.unscanned = true;
    }

    /// Lets the next read through the gate: the socket may have been
    /// polled with another waker since (outside the relay).
    pub(super) fn open_read_gate(&mut self) {
        self.read_gate.open();
    }

    /// Drops output not yet written (requests to a backend that is gone:
    /// the journal resends them).
    pub fn discard_output(&mut self) {
        self.out = Bytes::new();
        self.needs_flush = false;
    }
}

/// Takes the whole server message of `total` bytes at the front of
/// `pipe.buf` out of the relayed stream: `relayed` (what came before it)
/// goes to `out`, the journal follows the message as the server sent it,
/// and the caller decides what, if anything, the client gets instead.
pub(super) fn take_server_frame(
    pipe: &mut Pipe,
    total: usize,
    relayed: &[u8],
    out: &mut BytesMut,
    journal: &mut Journal,
) -> BytesMut {
    let frame = pipe.buf.split_to(total);
    out.extend_from_slice(relayed);
    journal.server_piece(Piece::Start {
        tag: frame[0],
        total,
        bytes: &frame,
        rest: 0,
    });
    frame
}
