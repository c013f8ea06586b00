//! Tagged frames: one type byte, a big-endian `i32` length that counts itself
//! but not the type byte, then the body.
//!
//! [`Frame::decode`] is incremental: it returns `Ok(None)` until a whole frame
//! is buffered, then splits it off the buffer without copying the body.
//! [`FrameWriter`] builds outgoing frames and back-patches the length, so no
//! caller ever computes a length by hand.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::ProtocolError;

/// Size of a frame header: type byte + length.
pub const HEADER_LEN: usize = 5;

/// One complete tagged message, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message type byte, e.g. `b'Q'`.
    pub tag: u8,
    /// The message body, without type byte and length.
    pub body: Bytes,
}

impl Frame {
    /// Reads the header at the start of `buf`, if complete: the tag and the
    /// total size of the frame in bytes (header included).
    ///
    /// Checks the length against `max_len` before anything is buffered, so
    /// a hostile length prefix can never make the caller reserve memory.
    pub fn peek_header(buf: &[u8], max_len: usize) -> Result<Option<(u8, usize)>, ProtocolError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let tag = buf[0];
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        if len < 4 {
            return Err(ProtocolError::LengthTooSmall {
                tag: tag as char,
                len: len.into(),
            });
        }
        let len = len as usize;
        if len > max_len {
            return Err(ProtocolError::MessageTooLarge {
                tag: tag as char,
                len,
                max: max_len,
            });
        }
        Ok(Some((tag, len + 1)))
    }

    /// Splits one complete frame off the front of `buf`, or returns `Ok(None)`
    /// when more bytes are needed. The body shares `buf`'s allocation.
    pub fn decode(buf: &mut BytesMut, max_len: usize) -> Result<Option<Frame>, ProtocolError> {
        let Some((tag, total)) = Self::peek_header(buf, max_len)? else {
            return Ok(None);
        };
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let mut frame = buf.split_to(total);
        frame.advance(HEADER_LEN);
        Ok(Some(Frame {
            tag,
            body: frame.freeze(),
        }))
    }

    /// Appends this frame, header included, to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        out.reserve(HEADER_LEN + self.body.len());
        out.put_u8(self.tag);
        out.put_i32((self.body.len() + 4) as i32);
        out.put_slice(&self.body);
    }
}

/// Builds one outgoing message in place at the end of a buffer.
///
/// ```
/// use bytes::BytesMut;
/// use understudy_protocol::FrameWriter;
/// let mut out = BytesMut::new();
/// let mut w = FrameWriter::tagged(&mut out, b'Z');
/// w.u8(b'I');
/// w.finish();
/// assert_eq!(&out[..], b"Z\0\0\0\x05I");
/// ```
pub struct FrameWriter<'a> {
    out: &'a mut BytesMut,
    /// Offset of the length field in `out`.
    len_at: usize,
}

impl<'a> FrameWriter<'a> {
    /// Starts a message with a type byte.
    pub fn tagged(out: &'a mut BytesMut, tag: u8) -> Self {
        out.put_u8(tag);
        Self::untagged(out)
    }

    /// Starts a message without a type byte (startup-phase packets).
    pub fn untagged(out: &'a mut BytesMut) -> Self {
        let len_at = out.len();
        out.put_i32(0);
        FrameWriter { out, len_at }
    }

    /// Appends one byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.out.put_u8(v);
        self
    }

    /// Appends a big-endian `i16`.
    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.out.put_i16(v);
        self
    }

    /// Appends a big-endian `i32`.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.out.put_i32(v);
        self
    }

    /// Appends a NUL-terminated string. An interior NUL would end the string
    /// early on the wire, so the string is cut at the first NUL.
    pub fn cstr(&mut self, s: &str) -> &mut Self {
        let bytes = s.as_bytes();
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        self.out.put_slice(&bytes[..end]);
        self.out.put_u8(0);
        self
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.out.put_slice(b);
        self
    }

    /// Writes the length field. Dropping the writer without calling this
    /// leaves a zero length, so always finish.
    pub fn finish(self) {
        let len = (self.out.len() - self.len_at) as i32;
        self.out[self.len_at..self.len_at + 4].copy_from_slice(&len.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_waits_for_a_complete_frame_then_splits_it() {
        let mut buf = BytesMut::from(&b"Q\0\0\0\x0dselect 1\0X"[..]);
        let frame = Frame::decode(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(frame.tag, b'Q');
        assert_eq!(&frame.body[..], b"select 1\0");
        assert_eq!(&buf[..], b"X");
        assert_eq!(Frame::decode(&mut buf, 1024).unwrap(), None);
        buf.extend_from_slice(b"\0\0\0");
        assert_eq!(Frame::decode(&mut buf, 1024).unwrap(), None);
        buf.extend_from_slice(b"\x04");
        let frame = Frame::decode(&mut buf, 1024).unwrap().unwrap();
        assert_eq!((frame.tag, frame.body.len()), (b'X', 0));
        assert!(buf.is_empty());
    }

    #[test]
    fn lengths_below_four_are_rejected() {
        for len in [-1i32, 0, 3, i32::MIN] {
            let mut buf = BytesMut::new();
            buf.put_u8(b'Q');
            buf.put_i32(len);
            assert!(matches!(
                Frame::decode(&mut buf, 1024),
                Err(ProtocolError::LengthTooSmall { .. })
            ));
        }
    }

    #[test]
    fn oversized_lengths_are_rejected_before_buffering() {
        let mut buf = BytesMut::new();
        buf.put_u8(b'd');
        buf.put_i32(i32::MAX);
        let err = Frame::decode(&mut buf, 1 << 20).unwrap_err();
        assert!(matches!(err, ProtocolError::MessageTooLarge { .. }));
        assert!(buf.capacity() < 1 << 20);
    }

    #[test]
    fn writer_back_patches_the_length() {
        let mut out = BytesMut::new();
        let mut w = FrameWriter::tagged(&mut out, b'S');
        w.cstr("TimeZone").cstr("UTC");
        w.finish();
        let frame = Frame::decode(&mut out, 1024).unwrap().unwrap();
        assert_eq!(&frame.body[..], b"TimeZone\0UTC\0");
    }

    #[test]
    fn cstr_cuts_at_an_interior_nul() {
        let mut out = BytesMut::new();
        let mut w = FrameWriter::untagged(&mut out);
        w.cstr("a\0b");
        w.finish();
        assert_eq!(&out[..], b"\0\0\0\x06a\0");
    }
}
