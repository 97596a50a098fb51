//! Fuzz target `nat_esp`: arbitrary bytes as a raw ESP packet, an ESP sync record and an ESP
//! table workload, with the oracles of `nat::fuzzing::fuzz_esp`.
//! Seed corpus: `corpus/nat_esp/` (outbound and inbound ESP packets, a record, a workload).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nat::fuzzing::fuzz_esp(data);
});
