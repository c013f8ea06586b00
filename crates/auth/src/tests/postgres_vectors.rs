//! Secrets produced by PostgreSQL 15.18 (`CREATE ROLE v LOGIN PASSWORD 'secret'`, then
//! `SELECT rolpassword FROM pg_authid`, with the default `password_encryption` and with
//! `password_encryption = 'md5'`).

use crate::{md5_response, md5_secret, md5_verify, ScramSecret, Secret};

const PG_SCRAM_V: &str = "SCRAM-SHA-256$4096:6QA6GQqGrzi0d7GIU8c99g==$ma6a+eR+89T1LCMnL2Q/XgBkIRgO4r0FB9yt64eyjZw=:X6AGoxGtD/WCyYpM2gyhSXFLFp/vimqKnB1bEZEa8w8=";
const PG_MD5_V: &str = "md56205c4318d68f6ea40b0a5e362010a9b";
/// Role `v5`, same password: the md5 secret is salted with the role name.
const PG_MD5_V5: &str = "md5f1ca0bd29fe314fd92694fd0f653d097";

#[test]
fn postgres_scram_secret_parses_and_is_reproduced_from_the_password() {
    let Secret::Scram(parsed) = Secret::parse(PG_SCRAM_V).unwrap() else {
        panic!("PostgreSQL's SCRAM secret was not recognized as SCRAM");
    };
    assert_eq!(parsed.iterations, 4096);
    assert_eq!(parsed.salt.len(), 16);
    assert_eq!(parsed.to_postgres_string(), PG_SCRAM_V);

    let derived = ScramSecret::from_password("secret", &parsed.salt, parsed.iterations);
    assert_eq!(derived, parsed);
    assert_eq!(derived.to_postgres_string(), PG_SCRAM_V);
}

#[test]
fn postgres_md5_secret_matches_and_parses() {
    assert_eq!(md5_secret("v", "secret"), PG_MD5_V);
    assert_eq!(md5_secret("v5", "secret"), PG_MD5_V5);
    assert_eq!(
        Secret::parse(PG_MD5_V).unwrap(),
        Secret::Md5(PG_MD5_V.into())
    );
}

#[test]
fn md5_response_matches_postgres_protocol_and_verifies() {
    let salt = [0x01, 0xfe, 0x7f, 0x80];
    let expected = postgres_protocol::authentication::md5_hash(b"v", b"secret", salt);
    assert_eq!(md5_response(PG_MD5_V, salt), expected);

    let md5 = Secret::parse(PG_MD5_V).unwrap();
    let plain = Secret::parse("secret").unwrap();
    assert!(md5_verify(&md5, "v", salt, &expected));
    assert!(md5_verify(&plain, "v", salt, &expected));
    // Another salt, another user or another password must not verify.
    assert!(!md5_verify(&md5, "v", [0, 0, 0, 0], &expected));
    assert!(!md5_verify(&plain, "v5", salt, &expected));
    assert!(!md5_verify(
        &Secret::Plain("Secret".into()),
        "v",
        salt,
        &expected
    ));
    assert!(!md5_verify(&md5, "v", salt, ""));
    // A SCRAM secret cannot check an md5 response.
    assert!(!md5_verify(
        &Secret::parse(PG_SCRAM_V).unwrap(),
        "v",
        salt,
        &expected
    ));
}

#[test]
fn secret_parse_classifies_like_postgres_and_rejects_damaged_scram() {
    assert_eq!(
        Secret::parse("md5NOTHEX").unwrap(),
        Secret::Plain("md5NOTHEX".into())
    );
    // PostgreSQL only takes lowercase hex as md5.
    let upper = PG_MD5_V.to_uppercase().replacen("MD5", "md5", 1);
    assert_eq!(Secret::parse(&upper).unwrap(), Secret::Plain(upper.clone()));
    assert_eq!(Secret::parse("").unwrap(), Secret::Plain(String::new()));

    for damaged in [
        "SCRAM-SHA-256$",
        "SCRAM-SHA-256$4096:6QA6GQqGrzi0d7GIU8c99g==",
        "SCRAM-SHA-256$0:6QA6GQqGrzi0d7GIU8c99g==$ma6a+eR+89T1LCMnL2Q/XgBkIRgO4r0FB9yt64eyjZw=:X6AGoxGtD/WCyYpM2gyhSXFLFp/vimqKnB1bEZEa8w8=",
        "SCRAM-SHA-256$x:6QA6GQqGrzi0d7GIU8c99g==$ma6a+eR+89T1LCMnL2Q/XgBkIRgO4r0FB9yt64eyjZw=:X6AGoxGtD/WCyYpM2gyhSXFLFp/vimqKnB1bEZEa8w8=",
        "SCRAM-SHA-256$4096:!!$ma6a+eR+89T1LCMnL2Q/XgBkIRgO4r0FB9yt64eyjZw=:X6AGoxGtD/WCyYpM2gyhSXFLFp/vimqKnB1bEZEa8w8=",
        "SCRAM-SHA-256$4096:$ma6a+eR+89T1LCMnL2Q/XgBkIRgO4r0FB9yt64eyjZw=:X6AGoxGtD/WCyYpM2gyhSXFLFp/vimqKnB1bEZEa8w8=",
        "SCRAM-SHA-256$4096:6QA6GQqGrzi0d7GIU8c99g==$ma6a:X6AGoxGtD/WCyYpM2gyhSXFLFp/vimqKnB1bEZEa8w8=",
        "SCRAM-SHA-256$4096:6QA6GQqGrzi0d7GIU8c99g==$ma6a+eR+89T1LCMnL2Q/XgBkIRgO4r0FB9yt64eyjZw=",
    ] {
        let err = Secret::parse(damaged).unwrap_err();
        assert!(
            matches!(err, crate::AuthError::InvalidSecret(_)),
            "{damaged}: {err}"
        );
    }
}

#[test]
fn secret_debug_output_redacts_passwords_and_keys() {
    let text = format!(
        "{:?} {:?} {:?}",
        Secret::parse(PG_SCRAM_V).unwrap(),
        Secret::parse(PG_MD5_V).unwrap(),
        Secret::parse("hunter2").unwrap()
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(!text.contains("6205c431"), "{text}");
    assert!(!text.contains("ma6a+eR"), "{text}");
    assert!(!text.contains("X6AGoxG"), "{text}");
}
