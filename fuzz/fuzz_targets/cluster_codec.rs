//! Fuzz target `cluster_codec`: arbitrary bytes through the cluster's allocation-table decoder
//! (what decodes must re-encode to the same bytes), the member-record decoder and the
//! distribution-id function, with the oracle of `cluster::fuzzing::fuzz_codec`.
//! Seed corpus: `corpus/cluster_codec/` (tables, a member record, packets).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cluster::fuzzing::fuzz_codec(data);
});
