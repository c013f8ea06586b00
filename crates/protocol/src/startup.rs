//! The first packet of a connection, which has no type byte: a
//! StartupMessage, an SSLRequest, a GSSENCRequest or a CancelRequest. They
//! are told apart by the 32-bit code after the length.

use bytes::{Buf, BytesMut};

use crate::reader::BodyReader;
use crate::{FrameWriter, ProtocolError, PROTOCOL_VERSION_3_0};

/// Request code of an SSLRequest.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// Request code of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// Request code of a CancelRequest.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;

/// PostgreSQL's own limit for a startup packet (`MAX_STARTUP_PACKET_LENGTH`).
pub const MAX_STARTUP_PACKET_LEN: usize = 10_000;

/// A decoded first packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartupPacket {
    /// A request to start a session.
    Startup(StartupMessage),
    /// The client asks for TLS; the answer is a single byte `S` or `N`.
    SslRequest,
    /// The client asks for GSSAPI encryption; the answer is `G` or `N`.
    GssEncRequest,
    /// Cancel the query running on another connection.
    Cancel(CancelRequest),
}

/// StartupMessage: protocol version and `name=value` parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    /// Major version in the high 16 bits, minor in the low 16 bits.
    pub version: i32,
    /// Parameters in the order the client sent them (`user`, `database`,
    /// `options`, `application_name`, GUCs, `_pq_.` protocol options, …).
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    /// A protocol 3.0 startup message with the given parameters.
    pub fn new(params: Vec<(String, String)>) -> Self {
        StartupMessage {
            version: PROTOCOL_VERSION_3_0,
            params,
        }
    }

    /// Major protocol version.
    pub fn major(&self) -> u16 {
        (self.version >> 16) as u16
    }

    /// Minor protocol version.
    pub fn minor(&self) -> u16 {
        (self.version & 0xffff) as u16
    }

    /// The value of a parameter, if sent.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Appends the encoded packet to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut w = FrameWriter::untagged(out);
        w.i32(self.version);
        for (k, v) in &self.params {
            w.cstr(k).cstr(v);
        }
        w.u8(0);
        w.finish();
    }
}

/// CancelRequest: the key a server handed out in BackendKeyData.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelRequest {
    /// Process id from BackendKeyData.
    pub process_id: i32,
    /// Secret key from BackendKeyData.
    pub secret_key: i32,
}

impl CancelRequest {
    /// Appends the encoded packet to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut w = FrameWriter::untagged(out);
        w.i32(CANCEL_REQUEST_CODE)
            .i32(self.process_id)
            .i32(self.secret_key);
        w.finish();
    }
}

/// Splits the first packet off `buf`, or returns `Ok(None)` until it is
/// complete. Lengths outside `8..=MAX_STARTUP_PACKET_LEN` are rejected before
/// anything is buffered.
pub fn decode_startup(buf: &mut BytesMut) -> Result<Option<StartupPacket>, ProtocolError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if len < 8 || len as usize > MAX_STARTUP_PACKET_LEN {
        return Err(ProtocolError::BadStartupLength {
            len: len.into(),
            max: MAX_STARTUP_PACKET_LEN,
        });
    }
    let len = len as usize;
    if buf.len() < len {
        return Ok(None);
    }
    let mut packet = buf.split_to(len);
    packet.advance(4);
    parse_body(&packet).map(Some)
}

fn parse_body(body: &[u8]) -> Result<StartupPacket, ProtocolError> {
    let mut r = BodyReader::new(body, "startup packet");
    let code = r.i32("protocol version")?;
    match code {
        SSL_REQUEST_CODE => {
            r.finish()?;
            Ok(StartupPacket::SslRequest)
        }
        GSSENC_REQUEST_CODE => {
            r.finish()?;
            Ok(StartupPacket::GssEncRequest)
        }
        CANCEL_REQUEST_CODE => {
            let process_id = r.i32("process id")?;
            let secret_key = r.i32("secret key")?;
            r.finish()?;
            Ok(StartupPacket::Cancel(CancelRequest {
                process_id,
                secret_key,
            }))
        }
        version => {
            let mut params = Vec::new();
            loop {
                let name = r.cstr("parameter name")?;
                if name.is_empty() {
                    break;
                }
                let value = r.cstr("parameter value")?;
                params.push((name.to_owned(), value.to_owned()));
            }
            r.finish()?;
            Ok(StartupPacket::Startup(StartupMessage { version, params }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_message_round_trips() {
        let msg = StartupMessage::new(vec![
            ("user".into(), "alice".into()),
            ("database".into(), "app".into()),
        ]);
        let mut buf = BytesMut::new();
        msg.encode(&mut buf);
        let decoded = decode_startup(&mut buf).unwrap().unwrap();
        assert_eq!(decoded, StartupPacket::Startup(msg));
        assert!(buf.is_empty());
    }

    #[test]
    fn ssl_and_cancel_requests_are_recognised() {
        let mut buf = BytesMut::from(&b"\0\0\0\x08\x04\xd2\x16\x2f"[..]);
        assert_eq!(
            decode_startup(&mut buf).unwrap(),
            Some(StartupPacket::SslRequest)
        );
        let cancel = CancelRequest {
            process_id: 42,
            secret_key: -7,
        };
        cancel.encode(&mut buf);
        assert_eq!(
            decode_startup(&mut buf).unwrap(),
            Some(StartupPacket::Cancel(cancel))
        );
    }

    #[test]
    fn hostile_lengths_are_rejected() {
        for len in [0i32, 7, 10_001, i32::MAX, -1] {
            let mut buf = BytesMut::from(&len.to_be_bytes()[..]);
            assert!(decode_startup(&mut buf).is_err(), "length {len}");
        }
    }

    #[test]
    fn unterminated_parameters_are_malformed() {
        let mut buf = BytesMut::from(&b"\0\0\0\x0c\0\x03\0\0user"[..]);
        assert!(decode_startup(&mut buf).is_err());
    }

    #[test]
    fn partial_packets_wait() {
        let mut buf = BytesMut::from(&b"\0\0\0\x08\x04"[..]);
        assert_eq!(decode_startup(&mut buf).unwrap(), None);
    }
}
