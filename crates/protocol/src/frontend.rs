//! Messages sent by clients (frontends): their type bytes, and the
//! authentication responses the proxy reads from clients and writes to
//! servers. Everything else a client sends is relayed as bytes.

use bytes::BytesMut;

use crate::reader::BodyReader;
use crate::{FrameWriter, ProtocolError};

/// Type bytes of frontend messages. The same byte means different things in
/// the other direction (`D` is Describe here, DataRow from a server).
pub mod tag {
    /// Bind.
    pub const BIND: u8 = b'B';
    /// Close a prepared statement or portal.
    pub const CLOSE: u8 = b'C';
    /// CopyData.
    pub const COPY_DATA: u8 = b'd';
    /// CopyDone.
    pub const COPY_DONE: u8 = b'c';
    /// CopyFail.
    pub const COPY_FAIL: u8 = b'f';
    /// Describe.
    pub const DESCRIBE: u8 = b'D';
    /// Execute.
    pub const EXECUTE: u8 = b'E';
    /// Flush.
    pub const FLUSH: u8 = b'H';
    /// FunctionCall.
    pub const FUNCTION_CALL: u8 = b'F';
    /// Parse.
    pub const PARSE: u8 = b'P';
    /// PasswordMessage, SASLInitialResponse and SASLResponse share this byte.
    pub const PASSWORD: u8 = b'p';
    /// Simple query.
    pub const QUERY: u8 = b'Q';
    /// Sync.
    pub const SYNC: u8 = b'S';
    /// Terminate.
    pub const TERMINATE: u8 = b'X';
}

/// PostgreSQL's limit for the length field of small client messages
/// (`PQ_SMALL_MESSAGE_LIMIT`).
pub const SMALL_MESSAGE_LIMIT: usize = 10_000;

/// PostgreSQL's limit for the length field of the client messages that may
/// be large (`PQ_LARGE_MESSAGE_LIMIT`, `MaxAllocSize - 1`).
pub const LARGE_MESSAGE_LIMIT: usize = 0x3fff_fffe;

/// PostgreSQL's limit for the length field of a password or SASL message
/// during authentication (`PG_MAX_AUTH_TOKEN_LENGTH`).
pub const AUTH_MESSAGE_LIMIT: usize = 65_535;

/// The largest length field PostgreSQL accepts for a client message of type
/// `tag` once a session runs, or `None` for a type it does not know (it
/// ends the session with `08P01` on those as soon as it reads the type
/// byte). A longer message makes the server close the connection without an
/// error message, so the proxy must refuse it first: it would look like a
/// lost server.
pub fn server_length_limit(tag: u8) -> Option<usize> {
    match tag {
        tag::QUERY | tag::FUNCTION_CALL | tag::BIND | tag::PARSE | tag::COPY_DATA => {
            Some(LARGE_MESSAGE_LIMIT)
        }
        tag::TERMINATE
        | tag::CLOSE
        | tag::DESCRIBE
        | tag::EXECUTE
        | tag::FLUSH
        | tag::SYNC
        | tag::COPY_DONE
        | tag::COPY_FAIL => Some(SMALL_MESSAGE_LIMIT),
        _ => None,
    }
}

/// Checks the header of a client message as PostgreSQL does once a
/// session runs: the type must exist and the length field (`total - 1`,
/// `total` counting the whole frame) must be within the type's limit.
pub fn check_header(tag: u8, total: usize) -> Result<(), ProtocolError> {
    let limit = server_length_limit(tag).ok_or(ProtocolError::UnknownFrontendType { tag })?;
    let len = total.saturating_sub(1);
    if len > limit {
        return Err(ProtocolError::MessageTooLarge {
            tag: tag as char,
            len,
            max: limit,
        });
    }
    Ok(())
}

/// A framing error of a client message, as PostgreSQL reports it: it reads
/// the type byte before the length, so a bad length on an unknown type is
/// an unknown type.
pub fn type_first(error: ProtocolError) -> ProtocolError {
    match error {
        ProtocolError::LengthTooSmall { tag, .. } | ProtocolError::MessageTooLarge { tag, .. }
            if server_length_limit(tag as u8).is_none() =>
        {
            ProtocolError::UnknownFrontendType { tag: tag as u8 }
        }
        error => error,
    }
}

/// SASLInitialResponse: the mechanism chosen and the client-first-message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslInitialResponse {
    /// E.g. `SCRAM-SHA-256`.
    pub mechanism: String,
    /// Mechanism data; empty when the client sent length -1.
    pub data: Vec<u8>,
}

impl SaslInitialResponse {
    /// Parses the body of a `p` message sent in answer to AuthenticationSASL.
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = BodyReader::new(body, "SASLInitialResponse");
        let mechanism = r.cstr("mechanism name")?.to_owned();
        let len = r.i32("data length")?;
        let data = if len < 0 {
            Vec::new()
        } else {
            r.bytes(len as usize, "data")?.to_vec()
        };
        r.finish()?;
        Ok(SaslInitialResponse { mechanism, data })
    }

    /// Appends the encoded message to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut w = FrameWriter::tagged(out, tag::PASSWORD);
        w.cstr(&self.mechanism)
            .i32(self.data.len() as i32)
            .bytes(&self.data);
        w.finish();
    }
}

/// Appends a SASLResponse (`p` carrying raw mechanism data) to `out`.
pub fn encode_sasl_response(data: &[u8], out: &mut BytesMut) {
    let mut w = FrameWriter::tagged(out, tag::PASSWORD);
    w.bytes(data);
    w.finish();
}

/// Parses a PasswordMessage body: one NUL-terminated string (cleartext
/// password or `md5…` response).
pub fn parse_password(body: &[u8]) -> Result<&str, ProtocolError> {
    let mut r = BodyReader::new(body, "PasswordMessage");
    let password = r.cstr("password")?;
    r.finish()?;
    Ok(password)
}

/// Appends a PasswordMessage to `out`.
pub fn encode_password(password: &str, out: &mut BytesMut) {
    let mut w = FrameWriter::tagged(out, tag::PASSWORD);
    w.cstr(password);
    w.finish();
}

/// Appends a Terminate message to `out`.
pub fn encode_terminate(out: &mut BytesMut) {
    FrameWriter::tagged(out, tag::TERMINATE).finish();
}

/// Appends a simple Query message to `out`.
pub fn encode_query(sql: &str, out: &mut BytesMut) {
    let mut w = FrameWriter::tagged(out, tag::QUERY);
    w.cstr(sql);
    w.finish();
}

/// Appends a Parse message naming `statement`, without parameter types.
pub fn encode_parse(statement: &str, sql: &str, out: &mut BytesMut) {
    encode_parse_bytes(statement, sql.as_bytes(), out);
}

/// Appends a Parse of `sql` given as bytes in the client's encoding (cut at
/// a NUL, as the server reads it) as `statement`, with no parameter types.
pub fn encode_parse_bytes(statement: &str, sql: &[u8], out: &mut BytesMut) {
    let end = sql.iter().position(|&b| b == 0).unwrap_or(sql.len());
    let mut w = FrameWriter::tagged(out, tag::PARSE);
    w.cstr(statement);
    w.bytes(&sql[..end]).u8(0);
    w.i16(0);
    w.finish();
}

/// Appends a Bind of `statement` to `portal`, without parameters and with
/// text results.
pub fn encode_bind(portal: &str, statement: &str, out: &mut BytesMut) {
    let mut w = FrameWriter::tagged(out, tag::BIND);
    w.cstr(portal);
    w.cstr(statement);
    w.i16(0);
    w.i16(0);
    w.i16(0);
    w.finish();
}

/// Appends an Execute of `portal` for all its rows.
pub fn encode_execute(portal: &str, out: &mut BytesMut) {
    let mut w = FrameWriter::tagged(out, tag::EXECUTE);
    w.cstr(portal);
    w.i32(0);
    w.finish();
}

/// Appends a Describe of `portal` (its RowDescription, or NoData).
pub fn encode_describe_portal(portal: &str, out: &mut BytesMut) {
    let mut w = FrameWriter::tagged(out, tag::DESCRIBE);
    w.u8(b'P');
    w.cstr(portal);
    w.finish();
}

/// Appends a Sync message.
pub fn encode_sync(out: &mut BytesMut) {
    FrameWriter::tagged(out, tag::SYNC).finish();
}

/// Appends a Close of the prepared statement `statement`.
pub fn encode_close_statement(statement: &str, out: &mut BytesMut) {
    let mut w = FrameWriter::tagged(out, tag::CLOSE);
    w.u8(b'S');
    w.cstr(statement);
    w.finish();
}

/// Appends a Flush message.
pub fn encode_flush(out: &mut BytesMut) {
    FrameWriter::tagged(out, tag::FLUSH).finish();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Frame;

    #[test]
    fn sasl_initial_response_round_trips() {
        let msg = SaslInitialResponse {
            mechanism: "SCRAM-SHA-256".into(),
            data: b"n,,n=,r=abc".to_vec(),
        };
        let mut out = BytesMut::new();
        msg.encode(&mut out);
        let frame = Frame::decode(&mut out, 1024).unwrap().unwrap();
        assert_eq!(SaslInitialResponse::parse(&frame.body).unwrap(), msg);
    }

    #[test]
    fn sasl_initial_response_with_a_lying_length_is_malformed() {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&100i32.to_be_bytes());
        body.extend_from_slice(b"short");
        assert!(SaslInitialResponse::parse(&body).is_err());
    }

    #[test]
    fn length_limits_are_postgresql_ones() {
        assert_eq!(server_length_limit(b'S'), Some(10_000));
        assert_eq!(server_length_limit(b'Q'), Some(0x3fff_fffe));
        assert_eq!(server_length_limit(b'p'), None);
        assert_eq!(server_length_limit(b'@'), None);
        assert!(check_header(b'S', 10_001).is_ok());
        assert!(matches!(
            check_header(b'S', 10_002),
            Err(ProtocolError::MessageTooLarge { max: 10_000, .. })
        ));
        assert_eq!(
            check_header(b'@', 5).unwrap_err().to_string(),
            "invalid frontend message type 64"
        );
    }

    #[test]
    fn a_bad_length_on_an_unknown_type_is_an_unknown_type() {
        let bad_length = |tag: u8| ProtocolError::LengthTooSmall {
            tag: tag as char,
            len: 1,
        };
        assert_eq!(
            type_first(bad_length(0xc7)),
            ProtocolError::UnknownFrontendType { tag: 0xc7 }
        );
        assert_eq!(type_first(bad_length(b'Q')), bad_length(b'Q'));
    }

    #[test]
    fn password_message_needs_its_terminator() {
        assert_eq!(parse_password(b"secret\0").unwrap(), "secret");
        assert!(parse_password(b"secret").is_err());
    }
}
