//! Replays the cargo-fuzz seed corpora (`fuzz/corpus/wccp_*/`) through the same functions the
//! fuzz targets call, so the corpora are exercised on stable by `cargo test`.

use std::path::Path;

use wccp::fuzzing;

/// Reads every file of `fuzz/corpus/<target>/`, sorted by name.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.file_name()
                    .expect("file name")
                    .to_string_lossy()
                    .into_owned(),
                std::fs::read(&p).expect("corpus file"),
            )
        })
        .collect()
}

/// Runs `f` over the corpus of `target` and returns how many seeds decode strictly.
fn replay(target: &str, min_files: usize, f: fn(&[u8])) -> usize {
    let files = corpus(target);
    assert!(
        files.len() >= min_files,
        "{target}: expected ≥ {min_files} seeds, found {}",
        files.len()
    );
    let mut decodable = 0;
    for (_, data) in &files {
        f(data);
        fuzzing::fuzz_roundtrip(data);
        decodable += usize::from(wccp::wire::Message::decode(data).is_ok());
    }
    decodable
}

#[test]
fn replay_wccp_here_i_am() {
    // Every HERE_I_AM seed is a Squid datagram and must decode.
    let files = corpus("wccp_here_i_am").len();
    assert_eq!(replay("wccp_here_i_am", 7, fuzzing::fuzz_here_i_am), files);
}

#[test]
fn replay_wccp_i_see_you() {
    // Squid64-padded seeds are rejected by design; their `-unpadded` twins and the spec ones
    // decode.
    let decodable = replay("wccp_i_see_you", 10, fuzzing::fuzz_i_see_you);
    let expected = corpus("wccp_i_see_you")
        .iter()
        .filter(|(name, _)| name.ends_with("-unpadded") || name.contains("-spec-"))
        .count();
    assert_eq!(decodable, expected);
}

#[test]
fn replay_wccp_redirect_assign() {
    assert_eq!(
        replay("wccp_redirect_assign", 5, fuzzing::fuzz_redirect_assign),
        5
    );
}

#[test]
fn replay_wccp_removal_query() {
    assert_eq!(
        replay("wccp_removal_query", 2, fuzzing::fuzz_removal_query),
        2
    );
    for (name, data) in corpus("wccp_removal_query") {
        let sec = if name.ends_with("md5") {
            wccp::security::Security::Md5(wccp::security::Password::new(b"secret"))
        } else {
            wccp::security::Security::None
        };
        sec.verify(&data).unwrap();
    }
}

#[test]
fn replay_wccp_roundtrip() {
    replay("wccp_roundtrip", 20, fuzzing::fuzz_roundtrip);
}

#[test]
fn replay_wccp_router_engine() {
    let files = corpus("wccp_router_engine");
    assert!(files.len() >= 4, "{} seeds", files.len());
    let mut assigned = 0;
    for (name, data) in &files {
        let summary = fuzzing::run_router_ops(data);
        assert!(summary.steps > 0, "{name}");
        assigned += usize::from(summary.assignments > 0);
    }
    assert!(
        assigned >= 2,
        "at least two seeds reach an installed assignment"
    );
}
