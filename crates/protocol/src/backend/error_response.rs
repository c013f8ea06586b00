//! ErrorResponse and NoticeResponse: a list of typed fields.

use bytes::BytesMut;

use super::tag;
use crate::reader::BodyReader;
use crate::{FrameWriter, ProtocolError};

/// SQLSTATE codes the proxy writes itself.
pub mod sqlstate {
    /// `08006` connection_failure.
    pub const CONNECTION_FAILURE: &str = "08006";
    /// `08P01` protocol_violation.
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    /// `0A000` feature_not_supported.
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// `28000` invalid_authorization_specification.
    pub const INVALID_AUTHORIZATION: &str = "28000";
    /// `28P01` invalid_password.
    pub const INVALID_PASSWORD: &str = "28P01";
    /// `53300` too_many_connections.
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
    /// `57P01` admin_shutdown.
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// `57P03` cannot_connect_now.
    pub const CANNOT_CONNECT_NOW: &str = "57P03";
    /// `08001` sqlclient_unable_to_establish_sqlconnection.
    pub const UNABLE_TO_CONNECT: &str = "08001";
    /// `08007` transaction_resolution_unknown.
    pub const TRANSACTION_RESOLUTION_UNKNOWN: &str = "08007";
    /// `25P02` in_failed_sql_transaction.
    pub const IN_FAILED_TRANSACTION: &str = "25P02";
    /// `25P03` idle_in_transaction_session_timeout.
    pub const IDLE_IN_TRANSACTION_TIMEOUT: &str = "25P03";
    /// `40001` serialization_failure: drivers retry the transaction.
    pub const SERIALIZATION_FAILURE: &str = "40001";
    /// `54000` program_limit_exceeded.
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    /// `XX000` internal_error.
    pub const INTERNAL_ERROR: &str = "XX000";
}

/// Severity of an error or notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Ends the current statement.
    Error,
    /// Ends the session.
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// The fields of an ErrorResponse or NoticeResponse the proxy cares about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorFields {
    /// `V` (non-localized severity), or `S` when `V` is absent.
    pub severity: String,
    /// `C`: SQLSTATE.
    pub code: String,
    /// `M`: primary message.
    pub message: String,
    /// `D`: detail.
    pub detail: Option<String>,
    /// `H`: hint.
    pub hint: Option<String>,
}

impl ErrorFields {
    /// An error the proxy raises itself.
    pub fn new(severity: Severity, code: &str, message: impl Into<String>) -> Self {
        ErrorFields {
            severity: severity.as_str().to_owned(),
            code: code.to_owned(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds a detail.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// True for `FATAL` and `PANIC`.
    pub fn is_fatal(&self) -> bool {
        self.severity == "FATAL" || self.severity == "PANIC"
    }

    /// Parses the body of an `E` or `N` message. Unknown field types are
    /// skipped; invalid UTF-8 is replaced, as messages are for humans.
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = BodyReader::new(body, "ErrorResponse");
        let mut fields = ErrorFields::default();
        let mut localized_severity = String::new();
        loop {
            let kind = r.u8("field type")?;
            if kind == 0 {
                break;
            }
            let value = String::from_utf8_lossy(r.cstr_bytes("field value")?).into_owned();
            match kind {
                b'S' => localized_severity = value,
                b'V' => fields.severity = value,
                b'C' => fields.code = value,
                b'M' => fields.message = value,
                b'D' => fields.detail = Some(value),
                b'H' => fields.hint = Some(value),
                _ => {}
            }
        }
        r.finish()?;
        if fields.severity.is_empty() {
            fields.severity = localized_severity;
        }
        Ok(fields)
    }

    /// Appends an ErrorResponse with these fields to `out`.
    pub fn encode_error(&self, out: &mut BytesMut) {
        self.encode(tag::ERROR_RESPONSE, out);
    }

    /// Appends a NoticeResponse with these fields to `out`.
    pub fn encode_notice(&self, out: &mut BytesMut) {
        self.encode(tag::NOTICE_RESPONSE, out);
    }

    fn encode(&self, tag: u8, out: &mut BytesMut) {
        let mut w = FrameWriter::tagged(out, tag);
        w.u8(b'S').cstr(&self.severity);
        w.u8(b'V').cstr(&self.severity);
        w.u8(b'C').cstr(&self.code);
        w.u8(b'M').cstr(&self.message);
        if let Some(detail) = &self.detail {
            w.u8(b'D').cstr(detail);
        }
        if let Some(hint) = &self.hint {
            w.u8(b'H').cstr(hint);
        }
        w.u8(0);
        w.finish();
    }
}

impl std::fmt::Display for ErrorFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Frame;

    #[test]
    fn round_trips_with_optional_fields() {
        let e = ErrorFields::new(Severity::Fatal, sqlstate::INVALID_PASSWORD, "nope")
            .with_hint("check it")
            .with_detail("more");
        let mut out = BytesMut::new();
        e.encode_error(&mut out);
        let frame = Frame::decode(&mut out, 1024).unwrap().unwrap();
        assert_eq!(frame.tag, b'E');
        let parsed = ErrorFields::parse(&frame.body).unwrap();
        assert_eq!(parsed, e);
        assert!(parsed.is_fatal());
    }

    #[test]
    fn missing_terminator_is_malformed() {
        assert!(ErrorFields::parse(b"SERROR\0CXX000\0").is_err());
        assert!(ErrorFields::parse(b"SERROR").is_err());
    }
}
