//! `R` messages: the authentication requests of a server.

use bytes::BytesMut;

use super::tag;
use crate::reader::BodyReader;
use crate::{FrameWriter, ProtocolError};

/// One authentication request or result.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Authentication {
    /// Authentication succeeded.
    Ok,
    /// Send the password in clear text.
    CleartextPassword,
    /// Send `md5(md5(password + user) + salt)`.
    Md5Password {
        /// Four random bytes.
        salt: [u8; 4],
    },
    /// Start a SASL exchange with one of these mechanisms.
    Sasl {
        /// Mechanism names, e.g. `SCRAM-SHA-256`.
        mechanisms: Vec<String>,
    },
    /// A SASL challenge.
    SaslContinue {
        /// Mechanism data.
        data: Vec<u8>,
    },
    /// The SASL outcome.
    SaslFinal {
        /// Mechanism data.
        data: Vec<u8>,
    },
    /// A method the proxy does not implement (Kerberos, GSS, SSPI).
    Unsupported {
        /// The request code.
        code: i32,
    },
}

impl Authentication {
    /// Parses the body of an `R` message.
    pub fn parse(body: &[u8]) -> Result<Self, ProtocolError> {
        let mut r = BodyReader::new(body, "Authentication");
        let code = r.i32("request code")?;
        let msg = match code {
            0 => Authentication::Ok,
            3 => Authentication::CleartextPassword,
            5 => {
                let salt = r.bytes(4, "md5 salt")?;
                Authentication::Md5Password {
                    salt: [salt[0], salt[1], salt[2], salt[3]],
                }
            }
            10 => {
                let mut mechanisms = Vec::new();
                loop {
                    let name = r.cstr("mechanism name")?;
                    if name.is_empty() {
                        break;
                    }
                    mechanisms.push(name.to_owned());
                }
                Authentication::Sasl { mechanisms }
            }
            11 => Authentication::SaslContinue {
                data: r.remaining().to_vec(),
            },
            12 => Authentication::SaslFinal {
                data: r.remaining().to_vec(),
            },
            code => return Ok(Authentication::Unsupported { code }),
        };
        match msg {
            Authentication::SaslContinue { .. } | Authentication::SaslFinal { .. } => Ok(msg),
            _ => r.finish().map(|()| msg),
        }
    }

    /// Appends the encoded message to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut w = FrameWriter::tagged(out, tag::AUTHENTICATION);
        match self {
            Authentication::Ok => {
                w.i32(0);
            }
            Authentication::CleartextPassword => {
                w.i32(3);
            }
            Authentication::Md5Password { salt } => {
                w.i32(5).bytes(salt);
            }
            Authentication::Sasl { mechanisms } => {
                w.i32(10);
                for m in mechanisms {
                    w.cstr(m);
                }
                w.u8(0);
            }
            Authentication::SaslContinue { data } => {
                w.i32(11).bytes(data);
            }
            Authentication::SaslFinal { data } => {
                w.i32(12).bytes(data);
            }
            Authentication::Unsupported { code } => {
                w.i32(*code);
            }
        }
        w.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Frame;

    #[test]
    fn every_variant_round_trips() {
        let all = [
            Authentication::Ok,
            Authentication::CleartextPassword,
            Authentication::Md5Password { salt: [1, 2, 3, 4] },
            Authentication::Sasl {
                mechanisms: vec!["SCRAM-SHA-256".into(), "SCRAM-SHA-256-PLUS".into()],
            },
            Authentication::SaslContinue {
                data: b"r=abc,s=xyz,i=4096".to_vec(),
            },
            Authentication::SaslFinal {
                data: b"v=sig".to_vec(),
            },
        ];
        for msg in all {
            let mut out = BytesMut::new();
            msg.encode(&mut out);
            let frame = Frame::decode(&mut out, 1024).unwrap().unwrap();
            assert_eq!(frame.tag, tag::AUTHENTICATION);
            assert_eq!(Authentication::parse(&frame.body).unwrap(), msg);
        }
    }

    #[test]
    fn truncated_md5_salt_is_malformed() {
        assert!(Authentication::parse(&[0, 0, 0, 5, 1, 2]).is_err());
    }
}
