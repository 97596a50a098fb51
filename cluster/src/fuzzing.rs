//! Fuzzing oracles, shared by the cargo-fuzz target in `../fuzz` and by a stable `#[test]` that
//! replays the corpus. Built only for tests and with the `fuzzing` feature. Any panic is a
//! finding.

use crate::alloc::Allocation;
use crate::id::{packet_id, IdConfig, Prefix};
use crate::record::MemberRecord;
use core::net::Ipv4Addr;

/// `data` as a stored allocation table (what decodes must re-encode to the same bytes), as a
/// member record (what decodes must re-decode from its encoding to the same value), and as an
/// IPv4 packet through the id function on both NAT sides.
pub fn fuzz_codec(data: &[u8]) {
    if let Ok(a) = Allocation::decode(data) {
        let again = a.encode();
        assert_eq!(again, data, "allocation re-encodes differently");
        assert!(a.owners.iter().flatten().all(|n| a.has_member(*n)));
    }
    if let Ok(text) = core::str::from_utf8(data) {
        if let Ok(r) = MemberRecord::decode(text) {
            assert_eq!(MemberRecord::decode(&r.encode()).as_ref(), Ok(&r));
        }
    }
    let cfg = IdConfig {
        key: 0x5eed,
        port_min: 1024,
        port_max: 65535,
        pool: vec![Ipv4Addr::new(10, 0, 2, 254)],
        inside: vec![Prefix {
            addr: Ipv4Addr::new(10, 0, 1, 0),
            len: 24,
        }],
    };
    let _ = packet_id(&cfg, data, false);
    let _ = packet_id(&cfg, data, true);
}
