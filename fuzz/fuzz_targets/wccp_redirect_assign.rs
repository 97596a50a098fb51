//! Fuzz target `wccp_redirect_assign`: arbitrary bytes as a WCCPv2 REDIRECT_ASSIGN (the header type is forced) through
//! `wccp::wire::Message::decode_datagram`, the typed view and MD5 verification, with the
//! lossless decode→encode→decode oracle (`wccp::fuzzing::fuzz_redirect_assign`).
//! Seed corpus: `corpus/wccp_redirect_assign/` (datagrams from the Squid captures in shared/testdata/squid).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wccp::fuzzing::fuzz_redirect_assign(data);
});
