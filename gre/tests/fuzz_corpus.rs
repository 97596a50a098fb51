//! Replays the cargo-fuzz corpus (`fuzz/corpus/gre_decode/`) through the same oracle the fuzz
//! target runs, so the corpus is exercised on stable by `cargo test`.

use std::path::Path;

#[test]
fn replay_gre_decode_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/gre_decode");
    let mut replayed = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    entries.sort();
    for path in entries {
        let data = std::fs::read(&path).unwrap();
        gre::fuzzing::fuzz_decode(&data);
        replayed += 1;
    }
    assert!(
        replayed >= 3,
        "expected the seed corpus in {}, found {replayed} files",
        dir.display()
    );
}
