//! Property tests: round trips of both reprs, decapsulate ∘ encapsulate = identity on the inner
//! packet, and no panic on arbitrary bytes.

use gre::{
    decapsulate, encapsulate_in_place, encapsulate_into, encapsulated_header_len, GrePacket,
    GreProtocol, GreRepr, WccpRedirectHeader, WccpRedirectRepr,
};
use proptest::prelude::*;

/// Any protocol, biased towards the two this crate names; built through `From<u16>` so
/// `Unknown` never holds a named value.
fn protocol() -> impl Strategy<Value = GreProtocol> {
    prop_oneof![
        Just(GreProtocol::WccpRedirect),
        Just(GreProtocol::Ipv4),
        any::<u16>().prop_map(GreProtocol::from),
    ]
}

fn gre_repr() -> impl Strategy<Value = GreRepr> {
    (
        protocol(),
        any::<bool>(),
        any::<Option<u32>>(),
        any::<Option<u32>>(),
    )
        .prop_map(|(protocol, checksum, key, sequence)| GreRepr {
            protocol,
            checksum,
            key,
            sequence,
        })
}

/// Any redirect repr; `unknown_flags` only ever holds bits outside D, A and U.
fn redirect_repr() -> impl Strategy<Value = WccpRedirectRepr> {
    (any::<[bool; 3]>(), any::<[u8; 3]>(), any::<u8>()).prop_map(
        |([d, a, u], [svc, alt, pri], unk)| WccpRedirectRepr {
            dynamic: d,
            alternate_used: a,
            unavailable: u,
            service_id: svc,
            alternate_bucket: alt,
            primary_bucket: pri,
            unknown_flags: unk & 0xf8,
        },
    )
}

proptest! {
    #[test]
    fn gre_repr_round_trip(repr in gre_repr(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let len = repr.buffer_len();
        let mut buf = vec![0xa5; len + payload.len()];
        let mut packet = GrePacket::new_unchecked(&mut buf[..]);
        repr.emit(&mut packet);
        packet.payload_mut().copy_from_slice(&payload);
        packet.fill_checksum();
        let packet = GrePacket::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(packet.header_len(), len);
        prop_assert_eq!(GreRepr::parse(&packet), Ok(repr));
        prop_assert_eq!(packet.payload(), &payload[..]);
    }

    #[test]
    fn redirect_repr_round_trip(repr in redirect_repr()) {
        let mut buf = [0xa5; 4];
        repr.emit(&mut WccpRedirectHeader::new_unchecked(&mut buf[..]));
        let header = WccpRedirectHeader::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(WccpRedirectRepr::parse(&header), Ok(repr));
    }

    #[test]
    fn redirect_header_bytes_round_trip(bytes in any::<[u8; 4]>()) {
        let repr = WccpRedirectRepr::parse(&WccpRedirectHeader::new_unchecked(&bytes[..])).unwrap();
        let mut buf = [0xa5; 4];
        repr.emit(&mut WccpRedirectHeader::new_unchecked(&mut buf[..]));
        prop_assert_eq!(buf, bytes);
    }

    /// Valid combinations only: the inner packet comes back unchanged, with the same headers.
    #[test]
    fn decap_after_encap_is_identity(
        repr in gre_repr(),
        redirect in proptest::option::of(redirect_repr()),
        mut inner in proptest::collection::vec(any::<u8>(), 0..1600),
        headroom_extra in 0usize..32,
    ) {
        // Make the combination one that `encapsulate_*` accepts (see `arbitrary_encap_*` below
        // for the rest): a redirect header only with 0x883E and never starting with nibble 4,
        // and a bare 0x883E payload only if it is IPv4.
        let mut repr = repr;
        let mut redirect = redirect;
        if let Some(r) = redirect.as_mut() {
            repr.protocol = GreProtocol::WccpRedirect;
            if r.unknown_flags >> 4 == 4 {
                r.unknown_flags = 0;
            }
        } else if repr.protocol == GreProtocol::WccpRedirect {
            if let Some(first) = inner.first_mut() {
                *first = 0x45;
            }
        }

        let header_len = encapsulated_header_len(&repr, redirect.as_ref());
        let inner_start = header_len + headroom_extra;
        let mut buf = vec![0xa5; inner_start + inner.len()];
        buf[inner_start..].copy_from_slice(&inner);
        let start = encapsulate_in_place(&mut buf, inner_start, inner.len(), &repr, redirect.as_ref()).unwrap();
        prop_assert_eq!(start, headroom_extra);
        prop_assert!(buf[..start].iter().all(|&b| b == 0xa5), "wrote outside the headroom");

        let d = decapsulate(&buf[start..]).unwrap();
        prop_assert_eq!(d.gre, repr);
        prop_assert_eq!(d.redirect, redirect);
        prop_assert_eq!(d.inner, &inner[..]);
        prop_assert_eq!(d.inner_offset, header_len);

        let mut out = vec![0u8; header_len + inner.len()];
        let n = encapsulate_into(&mut out, &inner, &repr, redirect.as_ref()).unwrap();
        prop_assert_eq!(&out[..n], &buf[start..]);
    }

    /// Any arguments at all: encapsulation either fails cleanly or decapsulates back exactly.
    #[test]
    fn arbitrary_encap_fails_or_round_trips(
        repr in gre_repr(),
        redirect in proptest::option::of(any::<[u8; 4]>()),
        inner in proptest::collection::vec(any::<u8>(), 0..64),
        buf_len in 0usize..128,
        inner_start in 0usize..128,
    ) {
        let redirect = redirect.map(|b| WccpRedirectRepr::parse(&WccpRedirectHeader::new_unchecked(&b[..])).unwrap());
        let mut buf = vec![0xa5; buf_len];
        let len = inner.len().min(buf_len.saturating_sub(inner_start));
        if inner_start <= buf_len {
            buf[inner_start..inner_start + len].copy_from_slice(&inner[..len]);
        }
        if let Ok(start) = encapsulate_in_place(&mut buf, inner_start, len, &repr, redirect.as_ref()) {
            let d = decapsulate(&buf[start..inner_start + len]).unwrap();
            prop_assert_eq!(d.gre, repr);
            prop_assert_eq!(d.redirect, redirect);
            prop_assert_eq!(d.inner, &inner[..len]);
        }
        let mut out = vec![0u8; buf_len];
        if let Ok(n) = encapsulate_into(&mut out, &inner, &repr, redirect.as_ref()) {
            let d = decapsulate(&out[..n]).unwrap();
            prop_assert_eq!((d.gre, d.redirect, d.inner), (repr, redirect, &inner[..]));
        }
    }

    #[test]
    fn parse_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
        if let Ok(packet) = GrePacket::new_checked(&data[..]) {
            let _ = GreRepr::parse(&packet);
        }
        let _ = GreRepr::parse(&GrePacket::new_unchecked(&data[..]));
        let _ = WccpRedirectRepr::parse(&WccpRedirectHeader::new_unchecked(&data[..]));
        let _ = decapsulate(&data);
    }

    /// Arbitrary bytes behind a plausible GRE first word, so the oracle gets past the flags.
    #[test]
    fn oracle_on_mostly_valid_input(
        flags in prop_oneof![Just(0x0000u16), Just(0x2000), Just(0x1000), Just(0x3000), Just(0x03f8), any::<u16>()],
        protocol in prop_oneof![Just(0x883eu16), Just(0x0800), any::<u16>()],
        rest in proptest::collection::vec(any::<u8>(), 0..48),
    ) {
        let mut data = Vec::with_capacity(4 + rest.len());
        data.extend_from_slice(&flags.to_be_bytes());
        data.extend_from_slice(&protocol.to_be_bytes());
        data.extend_from_slice(&rest);
        gre::fuzzing::fuzz_decode(&data);
    }
}
