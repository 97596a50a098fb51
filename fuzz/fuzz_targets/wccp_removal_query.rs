//! Fuzz target `wccp_removal_query`: arbitrary bytes as a WCCPv2 REMOVAL_QUERY (the header type is forced) through
//! `wccp::wire::Message::decode_datagram`, the typed view and MD5 verification, with the
//! lossless decode→encode→decode oracle (`wccp::fuzzing::fuzz_removal_query`).
//! Seed corpus: `corpus/wccp_removal_query/` (datagrams from the Squid captures in shared/testdata/squid).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wccp::fuzzing::fuzz_removal_query(data);
});
