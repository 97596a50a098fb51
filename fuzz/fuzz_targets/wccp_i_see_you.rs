//! Fuzz target `wccp_i_see_you`: arbitrary bytes as a WCCPv2 I_SEE_YOU (the header type is forced) through
//! `wccp::wire::Message::decode_datagram`, the typed view and MD5 verification, with the
//! lossless decode→encode→decode oracle (`wccp::fuzzing::fuzz_i_see_you`).
//! Seed corpus: `corpus/wccp_i_see_you/` (datagrams from the Squid captures in shared/testdata/squid).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wccp::fuzzing::fuzz_i_see_you(data);
});
