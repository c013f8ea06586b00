//! Replays the committed fuzz corpus of the `startup_auth` target
//! (`fuzz/corpus/startup_auth`) through the same checks the target runs:
//! startup packet decoding and the client authentication exchange.

use std::path::PathBuf;

use understudy_proxy::fuzzing::startup_auth;

#[test]
fn startup_auth_corpus_passes_the_checks() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/startup_auth");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "{} holds no inputs", dir.display());
    for path in paths {
        let input = std::fs::read(&path).expect("a corpus file");
        let outcome = std::panic::catch_unwind(|| startup_auth(&input));
        assert!(
            outcome.is_ok(),
            "corpus input {} fails its checks",
            path.display()
        );
    }
}
