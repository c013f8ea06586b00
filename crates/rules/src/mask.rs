//! Masking one value.
//!
//! Text format: the method applies to the value's text. Binary format: for
//! text-like types (`text`, `varchar`, `bpchar`, `name`, `unknown`) the
//! binary form is the text itself, so it is masked the same way; a value of
//! any other type in binary format becomes NULL, because a masked text is not
//! a valid binary value of that type and a NULL is always valid.

use sha2::{Digest, Sha256};

use crate::model::MaskMethodSpec;

/// What replaces a masked value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskMethod {
    /// Every character but the last `n` becomes `*`; a value of `n`
    /// characters or fewer is masked entirely.
    KeepLast(usize),
    /// The value becomes `********`.
    Redact,
    /// The value becomes the lowercase hex SHA-256 of its bytes.
    Hash,
}

/// The text of a redacted value.
pub const REDACTED: &[u8] = b"********";

impl MaskMethod {
    pub(crate) fn of(spec: MaskMethodSpec, keep: Option<usize>) -> MaskMethod {
        match spec {
            MaskMethodSpec::KeepLast => MaskMethod::KeepLast(keep.unwrap_or(4)),
            MaskMethodSpec::Redact => MaskMethod::Redact,
            MaskMethodSpec::Hash => MaskMethod::Hash,
        }
    }

    /// The masked form of a value's text.
    pub fn apply(&self, value: &[u8]) -> Vec<u8> {
        match self {
            MaskMethod::KeepLast(n) => {
                let Ok(text) = std::str::from_utf8(value) else {
                    return REDACTED.to_vec();
                };
                let count = text.chars().count();
                if count <= *n {
                    return "*".repeat(count).into_bytes();
                }
                let mut out = "*".repeat(count - n);
                out.extend(text.chars().skip(count - n));
                out.into_bytes()
            }
            MaskMethod::Redact => REDACTED.to_vec(),
            MaskMethod::Hash => {
                let digest = Sha256::digest(value);
                let mut out = Vec::with_capacity(64);
                for byte in digest {
                    out.extend_from_slice(format!("{byte:02x}").as_bytes());
                }
                out
            }
        }
    }

    /// The masked form of a value in `binary` format of type `type_oid`:
    /// `None` means the value becomes NULL.
    pub fn apply_binary(&self, type_oid: u32, value: &[u8]) -> Option<Vec<u8>> {
        is_text_like(type_oid).then(|| self.apply(value))
    }
}

/// Types whose binary form is their text.
pub fn is_text_like(type_oid: u32) -> bool {
    matches!(type_oid, 25 | 1043 | 1042 | 19 | 705)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_last_shows_only_the_tail() {
        let m = MaskMethod::KeepLast(4);
        assert_eq!(m.apply(b"4111111111111111"), b"************1111");
        assert_eq!(m.apply(b"1111"), b"****");
        assert_eq!(m.apply("ñandú-99".as_bytes()), "****ú-99".as_bytes());
    }

    #[test]
    fn redact_and_hash_hide_everything() {
        assert_eq!(MaskMethod::Redact.apply(b"secret"), REDACTED);
        let h = MaskMethod::Hash.apply(b"abc");
        assert_eq!(
            std::str::from_utf8(&h).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn binary_non_text_values_become_null() {
        let m = MaskMethod::KeepLast(4);
        assert_eq!(m.apply_binary(20, &[0, 0, 0, 0, 0, 0, 4, 87]), None);
        assert_eq!(m.apply_binary(25, b"12345").unwrap(), b"*2345");
    }
}
