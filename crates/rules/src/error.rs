//! Why a rules file was rejected: every error names the line and the key at fault.

use std::path::PathBuf;

/// Where in the rules file an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line number, from 1.
    pub line: usize,
    /// Column number (in characters), from 1.
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

fn at(location: &Option<Location>) -> String {
    location.map(|l| format!(" (at {l})")).unwrap_or_default()
}

/// A rules file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read.
    #[error("cannot read rules file {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The text is not TOML (the message carries the TOML parser's line and caret).
    #[error("rules file is not valid TOML: {message}")]
    Syntax {
        /// The TOML parser's message.
        message: String,
    },
    /// A key is unknown, missing or of the wrong type.
    #[error("{key}: {message}{}", at(location))]
    Key {
        /// The full key path, e.g. `rule[1].mask.method`.
        key: String,
        /// What is wrong.
        message: String,
        /// Where it is.
        location: Option<Location>,
    },
    /// A rule is well-formed TOML but makes no sense.
    #[error("{key}: {message}{}", at(location))]
    Invalid {
        /// The full key path.
        key: String,
        /// What is wrong and what to write instead.
        message: String,
        /// Where the rule starts.
        location: Option<Location>,
    },
}
