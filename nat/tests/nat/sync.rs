//! HA sync records (`nat::sync`): any bytes decode to a record or an error, never a panic, and
//! every session round-trips.

use nat::session::{tcp_state, SessionInfo};
use nat::sync::{decode, encode, SessionKey, SessionValue, KEY_LEN, VALUE_LEN, VERSION};
use netwire::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use proptest::prelude::*;
use std::net::Ipv4Addr;

fn session() -> impl Strategy<Value = SessionInfo> {
    (
        prop_oneof![Just(PROTO_TCP), Just(PROTO_UDP), Just(PROTO_ICMP)],
        0u8..0x20,
        any::<[u8; 4]>(),
        any::<u16>(),
        any::<[u8; 4]>(),
        any::<u16>(),
        any::<[u8; 4]>(),
        any::<u16>(),
    )
        .prop_map(|(proto, tcp, ia, ip, pa, op, ra, rp)| SessionInfo {
            proto,
            tcp: if proto == PROTO_TCP { tcp & 0x1f } else { 0 },
            inside_addr: Ipv4Addr::from(ia),
            inside_port: ip,
            pool_addr: Ipv4Addr::from(pa),
            outside_port: op,
            remote_addr: Ipv4Addr::from(ra),
            remote_port: rp,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(
        key in proptest::collection::vec(any::<u8>(), 0..32),
        value in proptest::collection::vec(any::<u8>(), 0..32),
        versioned in any::<bool>(),
    ) {
        // Half the cases carry the right version and lengths so the field checks are reached.
        let (mut key, mut value) = (key, value);
        if versioned {
            key.resize(KEY_LEN, 0);
            value.resize(VALUE_LEN, 0);
            key[0] = VERSION;
            value[0] = VERSION;
        }
        if let Ok(s) = decode(&key, &value) {
            // What decodes re-encodes to the same bytes.
            let (k, v) = encode(&s);
            prop_assert_eq!(&k[..], &key[..]);
            prop_assert_eq!(&v[..], &value[..]);
        }
        let _ = SessionKey::decode(&key);
        let _ = SessionValue::decode(&value);
    }

    #[test]
    fn sessions_round_trip(s in session()) {
        let (k, v) = encode(&s);
        prop_assert_eq!(decode(&k, &v), Ok(s));
        prop_assert_eq!(SessionKey::decode(&k), Ok(SessionKey::of(&s)));
        prop_assert!(s.tcp & !(tcp_state::RST * 2 - 1) == 0);
    }
}
