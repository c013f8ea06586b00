//! Configuration of the understudy proxy: the TOML file given to
//! `understudy run --config FILE`, `UNDERSTUDY_<SECTION>_<KEY>` environment overrides,
//! and validation. The reference of every key is `docs/config.md`; a complete example
//! with all defaults is `examples/understudy.toml`.
//!
//! ```
//! let config = understudy_config::Config::from_toml_str(
//!     "[[servers]]\nname = \"pg1\"\nhost = \"127.0.0.1\"\n",
//! )?;
//! assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:6543");
//! # Ok::<(), understudy_config::ConfigError>(())
//! ```
//!
//! Every error names what is at fault (a key such as `servers[1].name`, an environment
//! variable, or the file) and says what to do; [`ConfigError::exit_code`] is the exit
//! code for the binary.
//!
//! # Layout
//!
//! - `model.rs` — the serde structs, one per section, with the contract's defaults, and
//!   the lookups on them (`hba_method`, `user`, timeouts).
//! - `load.rs` — file → TOML → overrides → validation; maps serde errors to the key path.
//! - `env.rs` — `UNDERSTUDY_*` overrides of scalar keys.
//! - `validate.rs` — semantic checks.
//! - `error.rs` — [`ConfigError`].
//! - `cidr.rs` — [`Cidr`], the networks of `[[auth.hba]]` rules.
//! - `secret.rs` — [`Secret`], passwords and tokens that never print.
//! - `tests/` — unit tests of loading, errors, overrides and lookups; they also load
//!   `examples/understudy.toml`, so the example stays valid.

mod cidr;
mod env;
mod error;
mod load;
mod model;
mod patroni;
mod secret;
mod validate;

pub use cidr::{Cidr, CidrError};
pub use env::{env_var_name, ENV_KEYS, ENV_PREFIX, NON_CONFIG_VARS};
pub use error::{ConfigError, Location};
pub use model::{
    AdminConfig, AuthConfig, AuthMethod, AuthMode, BackendConfig, BackendTlsMode, Config, HbaRule,
    HealthConfig, JournalConfig, ProxyConfig, Server, TlsConfig, UnknownName, User,
    DEFAULT_AUTH_QUERY,
};
pub use patroni::patroni_endpoint;
pub use secret::{Secret, REDACTED};

#[cfg(test)]
mod tests;
