//! Property tests of the wire format: round trips under both checksums, and no panic on any
//! bytes through every decoder (the fuzz oracle included).

use std::net::Ipv4Addr;

use proptest::prelude::*;
use vrrp::wire::{self, Advert, ChecksumMode, TTL};

fn advert() -> impl Strategy<Value = Advert> {
    (
        any::<u8>(),
        any::<u8>(),
        1u16..=4095,
        prop::collection::vec(any::<u32>().prop_map(Ipv4Addr::from), 1..=255),
    )
        .prop_map(|(vrid, priority, interval, addrs)| {
            Advert::new(vrid, priority, interval, addrs).unwrap()
        })
}

fn mode() -> impl Strategy<Value = ChecksumMode> {
    prop_oneof![
        Just(ChecksumMode::PseudoHeader),
        Just(ChecksumMode::NoPseudoHeader)
    ]
}

proptest! {
    #[test]
    fn message_round_trips(a in advert(), m in mode(), src in any::<u32>().prop_map(Ipv4Addr::from)) {
        let bytes = a.to_bytes(src, wire::MULTICAST_ADDR, m);
        prop_assert_eq!(bytes.len(), a.buffer_len());
        let (back, seen) = Advert::parse(&bytes, src, wire::MULTICAST_ADDR, TTL).unwrap();
        prop_assert_eq!(&back, &a);
        // Both sums verify only when the pseudo-header sums to zero, then the RFC's is reported.
        prop_assert!(seen == m || seen == ChecksumMode::PseudoHeader);
    }

    #[test]
    fn frame_round_trips(a in advert(), m in mode(), ident in any::<u16>(), vrid in any::<u8>()) {
        let src = Ipv4Addr::new(198, 51, 100, 7);
        let frame = wire::build_frame(&a, wire::virtual_mac(vrid), src, ident, m);
        let rx = wire::parse_frame(&frame).unwrap();
        prop_assert_eq!((rx.src, rx.dst), (src, wire::MULTICAST_ADDR));
        prop_assert_eq!(&rx.advert, &a);
        vrrp::fuzzing::fuzz_decode(&frame);
    }

    #[test]
    fn any_bit_flip_is_caught(a in advert(), bit in 0usize..96) {
        let src = Ipv4Addr::new(198, 51, 100, 7);
        let mut bytes = a.to_bytes(src, wire::MULTICAST_ADDR, ChecksumMode::PseudoHeader);
        bytes[bit / 8] ^= 1 << (bit % 8);
        // A one-bit error always changes the one's-complement sum, reserved bits included.
        let parsed = Advert::parse(&bytes, src, wire::MULTICAST_ADDR, TTL);
        prop_assert!(parsed.is_err(), "flip of bit {} accepted: {:?}", bit, parsed);
    }

    #[test]
    fn no_panic_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..128)) {
        let _ = wire::parse_frame(&data);
        let _ = wire::parse_ipv4(&data);
        let _ = Advert::parse(&data, Ipv4Addr::LOCALHOST, wire::MULTICAST_ADDR, TTL);
        vrrp::fuzzing::fuzz_decode(&data);
    }

    #[test]
    fn no_panic_on_arbitrary_vrrp_headers(
        first in any::<[u8; 8]>(),
        rest in prop::collection::vec(any::<u8>(), 0..40),
        ttl in any::<u8>(),
    ) {
        // Mostly-valid prefixes reach the deeper checks more often than random bytes do.
        let mut msg = first.to_vec();
        msg[0] = 0x31;
        msg.extend_from_slice(&rest);
        let _ = Advert::parse(&msg, Ipv4Addr::LOCALHOST, wire::MULTICAST_ADDR, ttl);
        vrrp::fuzzing::fuzz_decode(&msg);
    }

    #[test]
    fn no_panic_driving_the_state_machine(ops in prop::collection::vec(any::<u8>(), 0..256)) {
        vrrp::fuzzing::fuzz_machine(&ops);
    }
}
