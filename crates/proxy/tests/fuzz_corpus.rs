//! Replays the committed fuzz corpus of the proxy's targets
//! (`fuzz/corpus/{startup_auth,journal}`) through the same checks the
//! targets run: startup packet decoding and client authentication, and the
//! session journal fed by a client and a server stream.

use std::path::PathBuf;

use understudy_proxy::fuzzing::{journal, startup_auth};

/// Runs `check` on every file of `fuzz/corpus/<target>`.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "{} holds no inputs", dir.display());
    for path in paths {
        let input = std::fs::read(&path).expect("a corpus file");
        let outcome = std::panic::catch_unwind(|| check(&input));
        assert!(
            outcome.is_ok(),
            "corpus input {} fails its checks",
            path.display()
        );
    }
}

#[test]
fn startup_auth_corpus_passes_the_checks() {
    replay("startup_auth", startup_auth);
}

#[test]
fn journal_corpus_passes_the_checks() {
    replay("journal", journal);
}
