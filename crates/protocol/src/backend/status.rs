//! Small server messages that describe the session: BackendKeyData,
//! ParameterStatus, ReadyForQuery, NotificationResponse and
//! NegotiateProtocolVersion.

use bytes::BytesMut;

use super::tag;
use crate::reader::BodyReader;
use crate::{FrameWriter, ProtocolError};

/// BackendKeyData: the key a client needs to cancel its queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendKeyData {
    /// Backend process id.
    pub process_id: i32,
    /// Secret key.
    pub secret_key: i32,
}

impl BackendKeyData {
    /// Parses the body of a `K` message.
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = BodyReader::new(body, "BackendKeyData");
        let process_id = r.i32("process id")?;
        let secret_key = r.i32("secret key")?;
        r.finish()?;
        Ok(BackendKeyData {
            process_id,
            secret_key,
        })
    }

    /// Appends the encoded message to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut w = FrameWriter::tagged(out, tag::BACKEND_KEY_DATA);
        w.i32(self.process_id).i32(self.secret_key);
        w.finish();
    }
}

/// ParameterStatus: a run-time parameter's current value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParameterStatus {
    /// Parameter name, e.g. `TimeZone`.
    pub name: String,
    /// Its value.
    pub value: String,
}

impl ParameterStatus {
    /// Parses the body of an `S` message.
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = BodyReader::new(body, "ParameterStatus");
        let name = r.cstr("name")?.to_owned();
        let value = r.cstr("value")?.to_owned();
        r.finish()?;
        Ok(ParameterStatus { name, value })
    }

    /// Appends the encoded message to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut w = FrameWriter::tagged(out, tag::PARAMETER_STATUS);
        w.cstr(&self.name).cstr(&self.value);
        w.finish();
    }
}

/// The transaction status carried by ReadyForQuery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionStatus {
    /// `I`: not in a transaction block.
    Idle,
    /// `T`: in a transaction block.
    InTransaction,
    /// `E`: in a failed transaction block (queries rejected until its end).
    Failed,
}

impl TransactionStatus {
    /// The status byte.
    pub fn as_byte(self) -> u8 {
        match self {
            TransactionStatus::Idle => b'I',
            TransactionStatus::InTransaction => b'T',
            TransactionStatus::Failed => b'E',
        }
    }
}

/// ReadyForQuery: the server waits for the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyForQuery {
    /// Transaction status.
    pub status: TransactionStatus,
}

impl ReadyForQuery {
    /// Parses the body of a `Z` message.
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = BodyReader::new(body, "ReadyForQuery");
        let status = match r.u8("transaction status")? {
            b'I' => TransactionStatus::Idle,
            b'T' => TransactionStatus::InTransaction,
            b'E' => TransactionStatus::Failed,
            _ => {
                return Err(ProtocolError::malformed(
                    "ReadyForQuery",
                    "unknown transaction status",
                ))
            }
        };
        r.finish()?;
        Ok(ReadyForQuery { status })
    }

    /// Appends the encoded message to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut w = FrameWriter::tagged(out, tag::READY_FOR_QUERY);
        w.u8(self.status.as_byte());
        w.finish();
    }
}

/// NotificationResponse: a NOTIFY delivered to a listening session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationResponse {
    /// Process id of the notifying backend.
    pub process_id: i32,
    /// Channel name.
    pub channel: String,
    /// Payload.
    pub payload: String,
}

impl NotificationResponse {
    /// Parses the body of an `A` message.
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = BodyReader::new(body, "NotificationResponse");
        let process_id = r.i32("process id")?;
        let channel = r.cstr("channel")?.to_owned();
        let payload = r.cstr("payload")?.to_owned();
        r.finish()?;
        Ok(NotificationResponse {
            process_id,
            channel,
            payload,
        })
    }

    /// Appends the encoded message to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut w = FrameWriter::tagged(out, tag::NOTIFICATION_RESPONSE);
        w.i32(self.process_id)
            .cstr(&self.channel)
            .cstr(&self.payload);
        w.finish();
    }
}

/// NegotiateProtocolVersion: the newest minor version supported and the
/// protocol options (`_pq_.…`) that were not recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiateProtocolVersion {
    /// The newest protocol version supported (major and minor, as PostgreSQL
    /// sends it: `196608` for 3.0).
    pub newest_version: i32,
    /// Unrecognised protocol options.
    pub unrecognized: Vec<String>,
}

impl NegotiateProtocolVersion {
    /// Appends the encoded message to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut w = FrameWriter::tagged(out, tag::NEGOTIATE_PROTOCOL_VERSION);
        w.i32(self.newest_version)
            .i32(self.unrecognized.len() as i32);
        for option in &self.unrecognized {
            w.cstr(option);
        }
        w.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Frame;

    fn body_of(encode: impl FnOnce(&mut BytesMut)) -> Frame {
        let mut out = BytesMut::new();
        encode(&mut out);
        Frame::decode(&mut out, 1 << 16).unwrap().unwrap()
    }

    #[test]
    fn round_trips() {
        let key = BackendKeyData {
            process_id: 1234,
            secret_key: -99,
        };
        assert_eq!(
            BackendKeyData::parse(&body_of(|o| key.encode(o)).body).unwrap(),
            key
        );
        let ps = ParameterStatus {
            name: "TimeZone".into(),
            value: "Europe/Paris".into(),
        };
        assert_eq!(
            ParameterStatus::parse(&body_of(|o| ps.encode(o)).body).unwrap(),
            ps
        );
        for status in [
            TransactionStatus::Idle,
            TransactionStatus::InTransaction,
            TransactionStatus::Failed,
        ] {
            let rfq = ReadyForQuery { status };
            assert_eq!(
                ReadyForQuery::parse(&body_of(|o| rfq.encode(o)).body).unwrap(),
                rfq
            );
        }
        let n = NotificationResponse {
            process_id: 7,
            channel: "jobs".into(),
            payload: "{}".into(),
        };
        assert_eq!(
            NotificationResponse::parse(&body_of(|o| n.encode(o)).body).unwrap(),
            n
        );
    }

    #[test]
    fn unknown_transaction_status_is_malformed() {
        assert!(ReadyForQuery::parse(b"X").is_err());
        assert!(ReadyForQuery::parse(b"").is_err());
    }
}
