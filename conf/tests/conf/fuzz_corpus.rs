//! Replays the `conf_parse` fuzz seeds (`fuzz/corpus/conf_parse/`) through `conf::fuzzing`, so
//! the corpus runs on stable with `cargo test`.

use std::path::Path;

#[test]
fn replay_conf_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/conf_parse");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("directory entry").path();
        conf::fuzzing::fuzz_parse(&std::fs::read(&path).expect("seed"));
        n += 1;
    }
    assert!(n >= 3, "{n} seeds in {}", dir.display());
}
