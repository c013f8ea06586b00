//! A bounds-checked cursor over a message body. Every read returns a
//! [`ProtocolError`] naming the message when the body is too short, so
//! parsers never index out of bounds.

use crate::ProtocolError;

/// Reads fields from the body of one message.
pub struct BodyReader<'a> {
    buf: &'a [u8],
    message: &'static str,
}

impl<'a> BodyReader<'a> {
    /// `message` names the message in errors, e.g. `"BackendKeyData"`.
    pub fn new(buf: &'a [u8], message: &'static str) -> Self {
        BodyReader { buf, message }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Reads one byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, ProtocolError> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or(ProtocolError::malformed(self.message, what))?;
        self.buf = rest;
        Ok(b)
    }

    /// Reads a big-endian `i16`.
    pub fn i16(&mut self, what: &'static str) -> Result<i16, ProtocolError> {
        let b = self.bytes(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    /// Reads a big-endian `i32`.
    pub fn i32(&mut self, what: &'static str) -> Result<i32, ProtocolError> {
        let b = self.bytes(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Reads exactly `n` bytes.
    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtocolError> {
        if self.buf.len() < n {
            return Err(ProtocolError::malformed(self.message, what));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// Reads a NUL-terminated byte string, without the NUL.
    pub fn cstr_bytes(&mut self, what: &'static str) -> Result<&'a [u8], ProtocolError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or(ProtocolError::malformed(self.message, what))?;
        let s = &self.buf[..end];
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    /// Reads a NUL-terminated UTF-8 string.
    pub fn cstr(&mut self, what: &'static str) -> Result<&'a str, ProtocolError> {
        let bytes = self.cstr_bytes(what)?;
        std::str::from_utf8(bytes).map_err(|_| ProtocolError::NotUtf8 {
            message: self.message,
            field: what,
        })
    }

    /// Fails unless every byte was read.
    pub fn finish(self) -> Result<(), ProtocolError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ProtocolError::TrailingBytes {
                message: self.message,
                extra: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_bodies_are_errors_not_panics() {
        let mut r = BodyReader::new(b"\x01\x02", "Test");
        assert!(r.i32("value").is_err());
        let mut r = BodyReader::new(b"abc", "Test");
        assert!(r.cstr("name").is_err());
    }

    #[test]
    fn finish_rejects_trailing_bytes() {
        let mut r = BodyReader::new(b"ab\0x", "Test");
        assert_eq!(r.cstr("name").unwrap(), "ab");
        assert!(matches!(
            r.finish(),
            Err(ProtocolError::TrailingBytes { extra: 1, .. })
        ));
    }
}
