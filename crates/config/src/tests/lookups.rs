//! `hba_method` and `user` lookups.

use std::net::IpAddr;

use super::MINIMAL;
use crate::{AuthMethod, Config};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const RULES: &str = r#"
[auth]
method = "scram-sha-256"

[[auth.hba]]
user = "alice"
database = "app"
method = "trust"

[[auth.hba]]
address = "10.0.0.0/8"
method = "md5"

[[auth.hba]]
user = "alice"
method = "md5"

[[auth.hba]]
database = "app"
address = "127.0.0.0/8"
method = "trust"
"#;

fn config() -> Config {
    Config::from_toml_str(&format!("{RULES}{MINIMAL}")).unwrap()
}

#[test]
fn first_matching_rule_wins() {
    let config = config();
    // Rules 0, 2 and 3 all match; the first decides.
    assert_eq!(
        config.hba_method("alice", "app", ip("127.0.0.1")),
        AuthMethod::Trust
    );
    // Rule 0 needs database app; rules 1 (10/8) and 2 (alice) both match: 1 is first.
    assert_eq!(
        config.hba_method("alice", "other", ip("10.1.2.3")),
        AuthMethod::Md5
    );
    // Only rule 2 matches.
    assert_eq!(
        config.hba_method("alice", "other", ip("127.0.0.1")),
        AuthMethod::Md5
    );
    // Only rule 3 matches.
    assert_eq!(
        config.hba_method("bob", "app", ip("127.0.0.1")),
        AuthMethod::Trust
    );
    // Rule 3 needs a loopback address.
    assert_eq!(
        config.hba_method("bob", "app", ip("192.168.0.1")),
        AuthMethod::ScramSha256
    );
}

#[test]
fn without_a_match_the_default_method_applies() {
    let config = config();
    assert_eq!(
        config.hba_method("bob", "other", ip("127.0.0.1")),
        AuthMethod::ScramSha256
    );
    let plain = Config::from_toml_str(&format!("[auth]\nmethod = \"md5\"\n{MINIMAL}")).unwrap();
    assert_eq!(
        plain.hba_method("anyone", "any", ip("::1")),
        AuthMethod::Md5
    );
}

#[test]
fn ipv4_rules_match_ipv4_mapped_clients() {
    let config = config();
    assert_eq!(
        config.hba_method("bob", "x", ip("::ffff:10.9.9.9")),
        AuthMethod::Md5
    );
}

#[test]
fn user_lookup_by_name() {
    let text = format!(
        "[[users]]\nname = \"app\"\npassword = \"a\"\n[[users]]\nname = \"ops\"\n{MINIMAL}"
    );
    let config = Config::from_toml_str(&text).unwrap();
    assert_eq!(config.user("ops").map(|u| u.name.as_str()), Some("ops"));
    assert!(config.user("ops").unwrap().password.is_empty());
    assert_eq!(config.user("app").unwrap().password.expose(), "a");
    assert!(config.user("APP").is_none());
    assert!(config.user("nobody").is_none());
}
