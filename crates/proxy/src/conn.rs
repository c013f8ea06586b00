//! A socket with read and write buffers, used while the proxy itself talks to
//! a peer message by message: the startup and authentication of a client,
//! and of a backend connection. Once a session relays, the buffers move to
//! the relay so no byte already read is lost.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use understudy_protocol::startup::{decode_startup, StartupPacket};
use understudy_protocol::Frame;

use crate::error::{SessionError, Side};

/// A buffered, message-oriented connection to one peer.
pub struct FramedConn<S> {
    /// The socket.
    pub stream: S,
    /// Bytes read and not consumed yet.
    pub rbuf: BytesMut,
    /// Messages queued by [`FramedConn::out`] until [`FramedConn::flush`].
    pub wbuf: BytesMut,
    side: Side,
    max_len: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FramedConn<S> {
    /// Wraps a socket to `side`; messages longer than `max_len` are refused.
    pub fn new(stream: S, side: Side, max_len: usize) -> Self {
        FramedConn {
            stream,
            rbuf: BytesMut::with_capacity(8 * 1024),
            wbuf: BytesMut::with_capacity(1024),
            side,
            max_len,
        }
    }

    /// The output buffer, to encode messages into.
    pub fn out(&mut self) -> &mut BytesMut {
        &mut self.wbuf
    }

    /// Writes every queued message.
    pub async fn flush(&mut self) -> Result<(), SessionError> {
        if !self.wbuf.is_empty() {
            let side = self.side;
            let io = |source| SessionError::Io { side, source };
            self.stream.write_all(&self.wbuf).await.map_err(io)?;
            self.stream.flush().await.map_err(io)?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Reads until one tagged message is complete.
    pub async fn read_frame(&mut self) -> Result<Frame, SessionError> {
        loop {
            let decoded = Frame::decode(&mut self.rbuf, self.max_len).map_err(|source| {
                SessionError::Protocol {
                    side: self.side,
                    source,
                }
            })?;
            if let Some(frame) = decoded {
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// Reads until the untagged first packet of a connection is complete.
    pub async fn read_startup(&mut self) -> Result<StartupPacket, SessionError> {
        loop {
            let decoded =
                decode_startup(&mut self.rbuf).map_err(|source| SessionError::Protocol {
                    side: self.side,
                    source,
                })?;
            if let Some(packet) = decoded {
                return Ok(packet);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), SessionError> {
        self.rbuf.reserve(4096);
        let n = self
            .stream
            .read_buf(&mut self.rbuf)
            .await
            .map_err(|source| SessionError::Io {
                side: self.side,
                source,
            })?;
        if n == 0 {
            return Err(SessionError::Closed(self.side));
        }
        Ok(())
    }
}
