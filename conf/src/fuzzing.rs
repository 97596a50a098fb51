//! Entry point for the `conf_parse` fuzz target (`../fuzz`) and its corpus replay test: any
//! text goes through both parsers (router.conf and cache.conf). Neither may panic, and what one
//! accepts must come back unchanged from its own effective configuration (`to_toml`), which is
//! what `swrouter check --effective` prints and operators copy.

/// Parses `data` (when it is UTF-8) as router.conf and as cache.conf and checks the round trip.
pub fn fuzz_parse(data: &[u8]) {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = crate::parse_str("fuzz.conf", text) {
        let effective = c.to_toml();
        match crate::parse_str("effective", &effective) {
            Ok(again) => assert!(again == c, "router.conf round trip differs:\n{effective}"),
            Err(e) => panic!("the effective router.conf does not parse: {e}\n{effective}"),
        }
    }
    if let Ok(c) = crate::cache::parse_str("fuzz.conf", text) {
        let effective = c.to_toml();
        match crate::cache::parse_str("effective", &effective) {
            Ok(again) => assert!(again == c, "cache.conf round trip differs:\n{effective}"),
            Err(e) => panic!("the effective cache.conf does not parse: {e}\n{effective}"),
        }
    }
}
