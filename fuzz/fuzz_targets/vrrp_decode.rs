//! Fuzz target `vrrp_decode`: arbitrary bytes through the VRRPv3 decoders (frame, IPv4 datagram,
//! bare message) with the decode→encode→decode oracle of `vrrp::fuzzing::fuzz_decode`.
//! Seed corpus: `corpus/vrrp_decode/` (keepalived v2.2.7 frames, and mangled variants).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vrrp::fuzzing::fuzz_decode(data);
});
