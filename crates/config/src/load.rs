//! Loading: read the file, parse the TOML, apply `UNDERSTUDY_*` overrides, validate.
//!
//! Parsing happens twice over the same text: once into a plain TOML table, so syntax
//! errors keep the TOML parser's own message (line, column and a caret under the
//! offending text), then into [`Config`] with the key path tracked, so that unknown
//! keys, missing keys and values of the wrong type are reported under their full name
//! (`auth.hba[0].method`).

use std::fs;
use std::path::Path;

use crate::error::Location;
use crate::{Config, ConfigError};

impl Config {
    /// Reads `path`, applies the process's `UNDERSTUDY_*` environment variables and
    /// validates the result. This is what `understudy run --config FILE` uses.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        Config::load(path, process_env())
    }

    /// Like [`Config::from_file`], with the environment given as `vars` instead of read
    /// from the process.
    pub fn load(
        path: impl AsRef<Path>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        let mut config = Config::parse_toml(&text)?;
        config.apply_env(vars)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates a configuration; the environment is not consulted.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config = Config::parse_toml(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a configuration without validating it (so it may, for example, have no
    /// servers yet); the environment is not consulted.
    pub fn parse_toml(text: &str) -> Result<Config, ConfigError> {
        if let Err(err) = text.parse::<toml::Table>() {
            return Err(ConfigError::Syntax {
                message: err.to_string().trim_end().to_owned(),
            });
        }
        serde_path_to_error::deserialize(toml::Deserializer::new(text))
            .map_err(|err| structure_error(text, err))
    }
}

/// The process environment as strings. Variables whose name is not UTF-8 cannot be
/// overrides and are skipped; values that are not UTF-8 are converted lossily, so a
/// broken value is still reported against its variable.
fn process_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(name, value)| {
        let name = name.into_string().ok()?;
        Some((name, value.to_string_lossy().into_owned()))
    })
}

/// Turns a deserialization error into the `ConfigError` naming the key at fault.
fn structure_error(text: &str, err: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    let path = err.path().to_string();
    let path = if path == "." { String::new() } else { path };
    let inner = err.into_inner();
    let location = inner.span().map(|span| location(text, span.start));
    let message = inner.message().trim_end().to_owned();

    if let Some(rest) = message.strip_prefix("unknown field ") {
        let field = backticked(rest).unwrap_or_default();
        let (section, key) = split_key(&path, &field);
        let valid = match rest.split_once(", expected ") {
            Some((_, expected)) => expected
                .trim_start_matches("one of ")
                .replace('`', "")
                .to_owned(),
            None => "none".to_owned(),
        };
        return ConfigError::UnknownKey {
            section,
            key,
            valid,
            location,
        };
    }
    if let Some(rest) = message.strip_prefix("missing field ") {
        let field = backticked(rest).unwrap_or_default();
        let (_, key) = split_key(&path, &field);
        return ConfigError::MissingKey { key, location };
    }
    let message = plain_types(&message);
    let message = if path.ends_with("listen") {
        format!("{message}; write an address like \"127.0.0.1:6543\"")
    } else {
        message
    };
    ConfigError::WrongType {
        key: if path.is_empty() {
            "(top level)".to_owned()
        } else {
            path
        },
        message,
        location,
    }
}

/// serde's messages with Rust type names replaced by what a config author writes.
fn plain_types(message: &str) -> String {
    message
        .replace("expected usize", "expected a positive integer")
        .replace("expected u64", "expected a positive integer")
        .replace("expected u16", "expected a port number from 1 to 65535")
        .replace("expected a sequence", "expected a list of tables")
}

/// `(section, full key)` for `field` reported at `path`; the path may or may not
/// already end with the field.
fn split_key(path: &str, field: &str) -> (String, String) {
    if path == field {
        return (String::new(), field.to_owned());
    }
    if let Some(section) = path.strip_suffix(&format!(".{field}")) {
        return (section.to_owned(), path.to_owned());
    }
    if path.is_empty() {
        (String::new(), field.to_owned())
    } else {
        (path.to_owned(), format!("{path}.{field}"))
    }
}

/// The text between the first pair of backticks.
fn backticked(text: &str) -> Option<String> {
    let start = text.find('`')? + 1;
    let len = text[start..].find('`')?;
    Some(text[start..start + len].to_owned())
}

/// The line and column of byte `offset` in `text`.
fn location(text: &str, offset: usize) -> Location {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Location {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    }
}
