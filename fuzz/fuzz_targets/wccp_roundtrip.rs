//! Fuzz target `wccp_roundtrip`: any message type; whatever `wccp::wire::Message::decode`
//! accepts must re-encode to the same octets and decode to the same value
//! (`wccp::fuzzing::fuzz_roundtrip`).
//! Seed corpus: `corpus/wccp_roundtrip/` (every datagram type from the Squid captures).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wccp::fuzzing::fuzz_roundtrip(data);
});
