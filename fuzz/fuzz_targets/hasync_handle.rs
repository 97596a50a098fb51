//! Fuzz target `hasync_handle`: a step list driving a sync endpoint and its peer
//! (`hasync::fuzzing::fuzz_handle`): raw datagrams, messages sealed with the right key (hostile
//! but authentic headers and payloads past the HMAC), stream frames, published records and time
//! passing; the replica's running digests are checked after every step.
//! Seed corpus: `corpus/hasync_handle/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    hasync::fuzzing::fuzz_handle(data);
});
