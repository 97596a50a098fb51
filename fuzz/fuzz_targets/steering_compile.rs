//! Fuzz target `steering_compile`: steering definitions built from the input go through the
//! compiler, and what compiles decides packets drawn from the rest of the input, with every
//! device in service and with an empty health state; no panic (`steering::fuzzing::fuzz_compile`). Seed corpus:
//! `corpus/steering_compile/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    steering::fuzzing::fuzz_compile(data);
});
