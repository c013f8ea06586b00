//! `Secret`: a string that never shows up in logs, `Debug` output or serialized config.
//!
//! Passwords and tokens live in the config next to harmless settings, and the whole
//! `Config` gets printed (`{:?}` in logs, JSON on the admin endpoint). Wrapping the
//! sensitive values keeps them out of all of that; code that needs the value asks for it
//! explicitly with [`Secret::expose`].

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// What a non-empty secret prints as.
pub const REDACTED: &str = "********";

/// A password or token. `Debug`, `Display` and `Serialize` print `********` (or `""`
/// when the secret is empty, which reveals nothing and tells that it is unset).
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Call this only where the value is used, never to log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn shown(&self) -> &'static str {
        if self.0.is_empty() {
            ""
        } else {
            REDACTED
        }
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.shown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_display_and_serialize_hide_the_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "\"********\"");
        assert_eq!(secret.to_string(), "********");
        let toml = toml::Value::try_from(&secret).unwrap();
        assert_eq!(toml.as_str(), Some("********"));
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn empty_secret_shows_as_empty() {
        let secret = Secret::default();
        assert!(secret.is_empty());
        assert_eq!(format!("{secret:?}"), "\"\"");
        assert_eq!(secret.to_string(), "");
    }
}
