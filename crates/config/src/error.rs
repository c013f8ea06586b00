//! `ConfigError`: everything that can be wrong with a configuration, each naming the
//! key (or file, or environment variable) at fault and what to do about it.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A position in the config file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line number, from 1.
    pub line: usize,
    /// Column number (in characters), from 1.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// Why a configuration was rejected. Every variant's message starts with what is at
/// fault: a key such as `proxy.listen`, an environment variable, or the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error(
        "cannot read config file {}: {error}; check the path passed with --config and \
         that the file is readable",
        path.display()
    )]
    Read {
        /// The path as given.
        path: PathBuf,
        /// The operating system's error.
        error: io::Error,
    },
    /// The file is not valid TOML. The message is the TOML parser's, which gives the
    /// line and column and shows the offending text.
    #[error("config is not valid TOML: {message}")]
    Syntax {
        /// The parser's message, location included.
        message: String,
    },
    /// A key that does not exist in its section.
    #[error(
        "{key}: unknown key {}{}; valid keys: {valid}",
        in_section(section),
        at(location)
    )]
    UnknownKey {
        /// The section the key was found in (`proxy`, `auth.hba[0]`; empty for the top level).
        section: String,
        /// The full key (`proxy.lisen`).
        key: String,
        /// The keys that the section accepts.
        valid: String,
        /// Where the key is in the file.
        location: Option<Location>,
    },
    /// A required key is absent.
    #[error("{key}: required key is missing{}", at(location))]
    MissingKey {
        /// The full key (`servers[0].host`).
        key: String,
        /// Where the enclosing table is in the file.
        location: Option<Location>,
    },
    /// A key has a value of the wrong type or an unparseable value.
    #[error("{key}: {message}{}", at(location))]
    WrongType {
        /// The full key.
        key: String,
        /// What was expected and what was found.
        message: String,
        /// Where the value is in the file.
        location: Option<Location>,
    },
    /// The values parse but do not make sense together (or alone).
    #[error("{key}: {message}")]
    Invalid {
        /// The full key.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// An `UNDERSTUDY_<SECTION>_<KEY>` variable with a value that does not parse.
    #[error("{key}: {message} (from {var})")]
    EnvValue {
        /// The environment variable.
        var: String,
        /// The key it overrides.
        key: String,
        /// What was expected and what was found.
        message: String,
    },
    /// An `UNDERSTUDY_*` variable that is not a configuration override.
    #[error("{var}: {message}")]
    UnknownEnv {
        /// The environment variable.
        var: String,
        /// Why it is not accepted and what the valid names are.
        message: String,
    },
}

fn in_section(section: &str) -> String {
    if section.is_empty() {
        "at the top level".to_owned()
    } else if section.contains('[') {
        format!("in {section}")
    } else {
        format!("in [{section}]")
    }
}

fn at(location: &Option<Location>) -> String {
    match location {
        Some(loc) => format!(" ({loc})"),
        None => String::new(),
    }
}

impl ConfigError {
    /// The process exit code for an invalid configuration.
    pub fn exit_code(&self) -> i32 {
        2
    }

    /// The key at fault (`proxy.listen`, `servers[1].name`), when the error is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. }
            | ConfigError::MissingKey { key, .. }
            | ConfigError::WrongType { key, .. }
            | ConfigError::Invalid { key, .. }
            | ConfigError::EnvValue { key, .. } => Some(key),
            ConfigError::Read { .. }
            | ConfigError::Syntax { .. }
            | ConfigError::UnknownEnv { .. } => None,
        }
    }

    pub(crate) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}
