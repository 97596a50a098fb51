//! Fuzz target `wccp_router_engine`: the input is an operation list (raw datagrams, well-formed
//! HERE_I_AMs and REDIRECT_ASSIGNs with right or wrong Receive IDs and change numbers, time
//! steps, L2-adjacency changes, reconfigurations, exchanges with a real CacheEngine) applied
//! to a `wccp::router::RouterEngine`; after every operation the engines must not have
//! panicked, every datagram they send must decode, and every installed assignment must keep
//! each bucket or mask value on one usable cache or none (`wccp::fuzzing::fuzz_router_ops`).
//! Seed corpus: `corpus/wccp_router_engine/` (scripted joins and assignments).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wccp::fuzzing::fuzz_router_ops(data);
});
