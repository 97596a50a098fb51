//! Replays the cargo-fuzz seed corpus (`fuzz/corpus/cluster_codec/`) through the same oracle
//! as the fuzz target, so a finding stays fixed on stable.

use std::path::PathBuf;

#[test]
fn replay_cluster_codec_corpus() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/cluster_codec");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus dir") {
        let path = entry.expect("entry").path();
        let data = std::fs::read(&path).expect("read");
        cluster::fuzzing::fuzz_codec(&data);
        n += 1;
    }
    assert!(
        n >= 3,
        "expected the seed corpus in {}, found {n} files",
        dir.display()
    );
}
