//! Fuzz target `conf_parse`: any text through the router.conf and cache.conf parsers; no
//! panic, and an accepted file must come back unchanged from its effective config
//! (`conf::fuzzing::fuzz_parse`). Seed corpus: `corpus/conf_parse/`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    conf::fuzzing::fuzz_parse(data);
});
