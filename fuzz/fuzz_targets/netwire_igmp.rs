//! Fuzz target `netwire_igmp`: arbitrary bytes through the IGMP decoder with the
//! decode→encode→decode oracle of `netwire::fuzzing::fuzz_igmp`.
//! Seed corpus: `corpus/netwire_igmp/` (queries of all three versions, reports, a leave).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    netwire::fuzzing::fuzz_igmp(data);
});
