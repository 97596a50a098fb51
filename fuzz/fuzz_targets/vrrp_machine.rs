//! Fuzz target `vrrp_machine`: a VirtualRouter driven by the operation list in the input, its
//! invariants checked after each operation (`vrrp::fuzzing::fuzz_machine`).
//! Seed corpus: `corpus/vrrp_machine/` (take-over, preemption, switchover, owner).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vrrp::fuzzing::fuzz_machine(data);
});
