//! Fuzz target `wccp_here_i_am`: arbitrary bytes as a WCCPv2 HERE_I_AM (the header type is forced) through
//! `wccp::wire::Message::decode_datagram`, the typed view and MD5 verification, with the
//! lossless decode→encode→decode oracle (`wccp::fuzzing::fuzz_here_i_am`).
//! Seed corpus: `corpus/wccp_here_i_am/` (datagrams from the Squid captures in shared/testdata/squid).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wccp::fuzzing::fuzz_here_i_am(data);
});
