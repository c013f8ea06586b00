//! What SCRAM derives from a plaintext password, remembered: the client
//! side's keys per password, salt and iteration count, and the server side's
//! verifier per password.
//!
//! Deriving them is `Hi()`: 4096 HMACs with PostgreSQL's default, a
//! millisecond or more. The proxy opens every backend of a role whose
//! password it knows with the same salt (the server's), and a failover opens
//! one per session at the same moment, on the thread that relays every other
//! session: without the cache, a thousand sessions would stall the proxy for
//! seconds. Entries are keyed by a digest, never by the password itself, and
//! the cache is emptied when it is full (a hostile server that sends a new
//! salt every time costs the derivations it would have cost anyway).
//!
//! Towards clients, a role whose plaintext password the proxy knows gets one
//! verifier per password, with a salt drawn when it is first derived — as
//! PostgreSQL stores one salt per role, set when the password is — instead of
//! a new salt, and a new derivation, at every login.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use crate::scram_common::{random_bytes, sha256, Key, DEFAULT_ITERATIONS, SALT_LEN};
use crate::secret::ScramSecret;

/// Entries kept before the cache is emptied.
const MAX_ENTRIES: usize = 1024;

/// `(ClientKey, ServerKey)`.
pub(crate) type Keys = (Key, Key);

fn cache() -> &'static Mutex<HashMap<Key, Keys>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Keys>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The keys for `password` (normalized), `salt` and `iterations`: remembered,
/// or derived by `derive` and remembered.
pub(crate) fn keys_for(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
    derive: impl FnOnce() -> Keys,
) -> Keys {
    let id = entry_id(password, salt, iterations);
    if let Some(keys) = cache()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&id)
    {
        return *keys;
    }
    // Derived without the lock: other sessions go on meanwhile.
    let keys = derive();
    let mut cache = cache().lock().unwrap_or_else(PoisonError::into_inner);
    if cache.len() >= MAX_ENTRIES {
        cache.clear();
    }
    cache.insert(id, keys);
    keys
}

fn verifiers() -> &'static Mutex<HashMap<Key, ScramSecret>> {
    static VERIFIERS: OnceLock<Mutex<HashMap<Key, ScramSecret>>> = OnceLock::new();
    VERIFIERS.get_or_init(Default::default)
}

/// The verifier remembered for `password`, if it was derived already.
pub(crate) fn remembered_verifier(password: &str) -> Option<ScramSecret> {
    verifiers()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&verifier_id(password))
        .cloned()
}

/// The verifier for `password`: remembered, or derived with a fresh random
/// salt and remembered. Two first logins at once may both derive one; the
/// first remembered is the one both use.
pub(crate) fn verifier(password: &str) -> ScramSecret {
    if let Some(secret) = remembered_verifier(password) {
        return secret;
    }
    let salt = random_bytes::<SALT_LEN>();
    let derived = ScramSecret::from_password(password, &salt, DEFAULT_ITERATIONS);
    let mut verifiers = verifiers().lock().unwrap_or_else(PoisonError::into_inner);
    if verifiers.len() >= MAX_ENTRIES {
        verifiers.clear();
    }
    verifiers
        .entry(verifier_id(password))
        .or_insert(derived)
        .clone()
}

/// The digest naming a password in the verifier cache (the empty salt and
/// iteration count 0 set it apart from any key cache entry).
fn verifier_id(password: &str) -> Key {
    entry_id(password.as_bytes(), b"", 0)
}

/// A digest naming one (password, salt, iterations): each part is length
/// prefixed, so no two different triples share an input.
fn entry_id(password: &[u8], salt: &[u8], iterations: u32) -> Key {
    let mut input = Vec::with_capacity(password.len() + salt.len() + 20);
    for part in [password, salt] {
        input.extend_from_slice(&(part.len() as u64).to_be_bytes());
        input.extend_from_slice(part);
    }
    input.extend_from_slice(&iterations.to_be_bytes());
    sha256(&input)
}

#[cfg(test)]
mod tests {
    use super::{entry_id, keys_for, remembered_verifier, verifier};

    #[test]
    fn keys_are_derived_once_per_password_salt_and_iterations() {
        let mut derivations = 0;
        let mut get = |password: &[u8], salt: &[u8], iterations: u32| {
            keys_for(password, salt, iterations, || {
                derivations += 1;
                ([derivations; 32], [0; 32])
            })
        };
        let first = get(b"cache test pw", b"salt one", 4096);
        assert_eq!(get(b"cache test pw", b"salt one", 4096), first);
        get(b"cache test pw", b"salt two", 4096);
        get(b"cache test pw", b"salt one", 4097);
        get(b"cache test pw2", b"salt one", 4096);
        assert_eq!(derivations, 4, "one derivation per distinct triple");
    }

    #[test]
    fn a_known_password_has_one_verifier_derived_on_first_use() {
        let password = "verifier cache test pw";
        assert!(remembered_verifier(password).is_none());
        let first = verifier(password);
        assert_eq!(remembered_verifier(password).as_ref(), Some(&first));
        assert_eq!(verifier(password), first, "the same salt and keys again");
        assert_ne!(
            verifier("another verifier cache test pw").salt,
            first.salt,
            "each password gets its own random salt"
        );
    }

    #[test]
    fn entry_ids_do_not_run_parts_together() {
        assert_ne!(entry_id(b"ab", b"c", 1), entry_id(b"a", b"bc", 1));
    }
}
