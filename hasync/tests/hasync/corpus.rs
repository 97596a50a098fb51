//! Replays the cargo-fuzz corpus (`fuzz/corpus/hasync_handle/`) through the oracle the fuzz
//! target runs, so the corpus is exercised on stable by `cargo test`.

use std::path::Path;

#[test]
fn replay_hasync_handle_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/hasync_handle");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    entries.sort();
    for path in &entries {
        hasync::fuzzing::fuzz_handle(&std::fs::read(path).unwrap());
    }
    assert!(
        entries.len() >= 3,
        "expected the seed corpus in {}, found {} files",
        dir.display(),
        entries.len()
    );
}

/// Writes the seed corpus (run once with `--ignored` when the input format changes).
#[test]
#[ignore]
fn write_seed_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/hasync_handle");
    std::fs::create_dir_all(&dir).unwrap();
    let step = |mode: u8, bytes: &[u8]| {
        let mut v = vec![bytes.len() as u8, mode];
        v.extend_from_slice(bytes);
        v
    };
    // A real Hello from the legitimate peer, as raw bytes.
    let now = std::time::Instant::now();
    let mut peer = hasync::Endpoint::new(
        hasync::Config::new(1, 2, 40, hasync::fuzzing::FUZZ_KEY),
        now,
    )
    .unwrap();
    let mut hello = Vec::new();
    peer.poll_transmit(now, &mut hello);
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("raw-hello", step(0, &hello)),
        (
            "publish-and-exchange",
            [
                step(3, b"\x01key-value"),
                step(4, &[5]),
                step(4, &[50]),
                step(3, b"\x02kk\x01"),
                step(4, &[60]),
            ]
            .concat(),
        ),
        ("sealed-data", {
            let mut b = vec![4, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            b.extend_from_slice(&0u64.to_be_bytes());
            b.extend_from_slice(&1u16.to_be_bytes());
            b.extend_from_slice(&[5, 1, 0, 1, 0, 1, b'k', b'v']);
            step(1, &b)
        }),
        ("stream-frames", step(2, &[0, 3, 1, 2, 3, 0, 0])),
        (
            "sealed-nack",
            step(
                1,
                &[
                    3, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0,
                    0, 0, 0, 0, 0, 9,
                ],
            ),
        ),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
