//! Replays the committed fuzz corpus (`fuzz/corpus/{frontend,backend}`)
//! through the same checks the fuzz targets run, so every input the fuzzer
//! kept, crashes it found included, stays covered by `cargo test`.

use std::path::PathBuf;

use understudy_protocol::fuzzing::{backend_stream, frontend_stream};

/// Every file of `fuzz/corpus/<target>`, with its name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut inputs: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let bytes = std::fs::read(&path).expect("a corpus file");
            (path.display().to_string(), bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} holds no inputs", dir.display());
    inputs
}

fn replay(target: &str, check: fn(&[u8])) {
    for (name, input) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| check(&input));
        assert!(outcome.is_ok(), "corpus input {name} fails its checks");
    }
}

#[test]
fn frontend_corpus_passes_the_parser_checks() {
    replay("frontend", frontend_stream);
}

#[test]
fn backend_corpus_passes_the_parser_checks() {
    replay("backend", backend_stream);
}
