//! Fuzz target `gre_decode`: arbitrary bytes as a GRE packet (the outer IPv4 payload) through
//! `gre::decapsulate`, with the decode→encode→decode oracle of `gre::fuzzing::fuzz_decode`.
//! Seed corpus: `corpus/gre_decode/` (the GRE parts of the synthetic tshark capture, plus
//! checksum/key/sequence and cache-return variants).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    gre::fuzzing::fuzz_decode(data);
});
