//! Replays the cargo-fuzz seed corpora (`fuzz/corpus/vrrp_decode/`, `fuzz/corpus/vrrp_machine/`)
//! through the same entry points the fuzz targets run, so they are exercised on stable.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    entries.sort();
    for path in &entries {
        run(&std::fs::read(path).unwrap());
    }
    assert!(
        entries.len() >= 3,
        "expected the seed corpus in {}, found {} files",
        dir.display(),
        entries.len()
    );
}

#[test]
fn replay_vrrp_decode_corpus() {
    replay("vrrp_decode", vrrp::fuzzing::fuzz_decode);
}

#[test]
fn replay_vrrp_machine_corpus() {
    replay("vrrp_machine", vrrp::fuzzing::fuzz_machine);
}
