//! Fuzz target `router_pipeline`: frames (well-formed templates XORed with the input, or raw)
//! on arbitrary interfaces through the whole pipeline against a table snapshot with a WCCP
//! service, a steering chain and a static route; no panic, and the counters account for every
//! packet exactly once (`router::fuzzing::fuzz_pipeline`). Seed corpus:
//! `corpus/router_pipeline/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    router::fuzzing::fuzz_pipeline(data, std::time::Instant::now());
});
