//! Deterministic replay of the committed fuzz corpus (`fuzz/corpus/<target>/`: seeds and
//! every input that once crashed a target) through the same harness functions the fuzz
//! targets run, so a fixed crash stays fixed without a fuzzing toolchain.

#[path = "../fuzz/src/lib.rs"]
mod harness;

use std::path::{Path, PathBuf};

use sluice::store::Store;

/// Every file of one target's corpus, sorted by name.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus folder {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).expect("read corpus file");
            (path, bytes)
        })
        .collect()
}

fn name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn frame_decoder_corpus_replays() {
    let files = corpus("frame_decoder");
    assert!(files.len() >= 10, "seed corpus present");
    let mut decoded = 0;
    for (path, bytes) in &files {
        let n = harness::frame_decoder(bytes);
        if name(path) == "seed-client-frames" {
            // Hello, Subscribe, Write, Fetch, Unsubscribe decode as client frames (other
            // frame types may accept some of the same bytes too).
            assert!(n >= 5, "{n} messages decoded from the client frames seed");
        }
        decoded += n;
    }
    assert!(decoded >= 20, "seeds decode into messages ({decoded})");
}

#[test]
fn handshake_corpus_replays() {
    let env = harness::SessionEnv::new();
    let files = corpus("handshake");
    assert!(files.len() >= 9, "seed corpus present");
    for (path, bytes) in &files {
        let handled = harness::handshake(&env, bytes);
        match name(path).as_str() {
            "seed-old-protocol" | "seed-no-hello" => {
                assert_eq!(handled, 0, "{} must be refused", path.display())
            }
            "seed-full-session" => assert_eq!(handled, 4),
            _ => {}
        }
    }
    // The seeds commit writes: the store is no longer empty.
    assert!(env.store.head() > sluice::ids::SyncId::ZERO);
}

#[test]
fn query_corpus_replays() {
    let oracle = harness::Oracle::new();
    let files = corpus("query");
    assert!(files.len() >= 20, "seed corpus present");
    let mut compiled = 0;
    for (path, bytes) in &files {
        let ok = harness::query(&oracle, bytes);
        match name(path).as_str() {
            "seed-eq-and-ne" | "seed-in-param" | "seed-like" => {
                assert!(ok, "{} compiles", path.display())
            }
            "seed-unknown-column" | "seed-join" | "seed-delete" => {
                assert!(!ok, "{} is refused", path.display())
            }
            _ => {}
        }
        compiled += usize::from(ok);
    }
    assert!(compiled >= 15, "most seeds compile ({compiled})");
}

#[test]
fn rules_corpus_replays() {
    let schema = harness::schema();
    let files = corpus("rules");
    assert!(files.len() >= 3, "seed corpus present");
    let mut parsed = 0;
    for (path, bytes) in &files {
        let Ok(text) = std::str::from_utf8(bytes) else {
            continue;
        };
        // Never a panic; the seeds that are whole rules files parse.
        let result = sluice::auth::Rules::parse(&schema, path, text);
        if name(path) == "seed-access" {
            assert!(result.is_ok(), "{}: {:?}", path.display(), result.err());
        }
        parsed += usize::from(result.is_ok());
    }
    assert!(parsed >= 1, "seeds parse ({parsed})");
}
