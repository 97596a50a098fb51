//! Properties of the id function, the port rule and the table codec.

use core::net::Ipv4Addr;

use cluster::alloc::{compute, Allocation, Member};
use cluster::id::{id_of_port, packet_id, port_for_id, IdConfig, Prefix};
use proptest::prelude::*;

const POOL: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 254);

fn cfg(key: u64, port_min: u16) -> IdConfig {
    IdConfig {
        key,
        port_min,
        port_max: 65535,
        pool: vec![POOL],
        inside: vec![Prefix {
            addr: Ipv4Addr::new(10, 0, 1, 0),
            len: 24,
        }],
    }
}

/// An IPv4 packet (checksums are not looked at by the id function).
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    let total = (20 + l4.len()) as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p.extend_from_slice(l4);
    p
}

/// TCP (20-octet header) or UDP (8 octets) with these ports.
pub fn l4(proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut h = vec![0u8; if proto == 6 { 20 } else { 8 }];
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        h[12] = 5 << 4;
    } else {
        h[4..6].copy_from_slice(&8u16.to_be_bytes());
    }
    h
}

fn echo(reply: bool, ident: u16) -> Vec<u8> {
    let mut h = vec![0u8; 8];
    h[0] = if reply { 0 } else { 8 };
    h[4..6].copy_from_slice(&ident.to_be_bytes());
    h
}

/// An ICMP error (port unreachable) quoting `quoted`'s header and first 8 octets.
fn icmp_error(quoted: &[u8]) -> Vec<u8> {
    let mut h = vec![3u8, 3, 0, 0, 0, 0, 0, 0];
    h.extend_from_slice(&quoted[..28]);
    h
}

fn addr() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn outside() -> impl Strategy<Value = Ipv4Addr> {
    // Anything but the inside /24 and the pool.
    addr().prop_filter("outside", |a| a.octets()[..3] != [10, 0, 1] && *a != POOL)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn nat_flow_has_one_id_in_both_directions_and_both_sides(
        key in any::<u64>(), port_min in 1024u16..2048, host in 1u8..255, sport in any::<u16>(),
        server in outside(), dport in any::<u16>(), udp in any::<bool>(), k in 0u16..200,
    ) {
        let c = cfg(key, port_min);
        let proto = if udp { 17 } else { 6 };
        let inside = Ipv4Addr::new(10, 0, 1, host);
        // Outbound on the inside interface.
        let out = ipv4(inside, server, proto, &l4(proto, sport, dport));
        let id = packet_id(&c, &out, false).expect("parses");
        // The NAT picks an outside port carrying that id.
        let Some(port) = port_for_id(port_min, id, k) else { return Ok(()); };
        // The reply to the pool address, on the outside interface.
        let back = ipv4(server, POOL, proto, &l4(proto, dport, port));
        prop_assert_eq!(packet_id(&c, &back, true), Some(id));
        // An un-NATed reply (routed, same inside endpoint).
        let routed = ipv4(server, inside, proto, &l4(proto, dport, sport));
        prop_assert_eq!(packet_id(&c, &routed, false), Some(id));
        // An ICMP error from outside about the translated packet.
        let translated = ipv4(POOL, server, proto, &l4(proto, port, dport));
        let err = ipv4(server, POOL, 1, &icmp_error(&translated));
        prop_assert_eq!(packet_id(&c, &err, true), Some(id));
        // An ICMP error from the inside host about the inbound packet after translation.
        let inbound = ipv4(server, inside, proto, &l4(proto, dport, sport));
        let err_in = ipv4(inside, server, 1, &icmp_error(&inbound));
        prop_assert_eq!(packet_id(&c, &err_in, false), Some(id));
    }

    #[test]
    fn nat_echo_has_one_id_on_both_sides(
        key in any::<u64>(), host in 1u8..255, ident in any::<u16>(), server in outside(),
        k in 0u16..200,
    ) {
        let c = cfg(key, 1024);
        let inside = Ipv4Addr::new(10, 0, 1, host);
        let id = packet_id(&c, &ipv4(inside, server, 1, &echo(false, ident)), false).expect("parses");
        let Some(outside_ident) = port_for_id(1024, id, k) else { return Ok(()); };
        prop_assert_eq!(packet_id(&c, &ipv4(server, POOL, 1, &echo(true, outside_ident)), true), Some(id));
        prop_assert_eq!(packet_id(&c, &ipv4(server, inside, 1, &echo(true, ident)), false), Some(id));
    }

    #[test]
    fn routed_flow_has_one_id_both_ways(
        key in any::<u64>(), a in outside(), b in outside(), pa in any::<u16>(), pb in any::<u16>(),
        proto in prop::sample::select(vec![6u8, 17]), frag in any::<bool>(),
    ) {
        let c = cfg(key, 1024);
        let mut fwd = ipv4(a, b, proto, &l4(proto, pa, pb));
        let mut rev = ipv4(b, a, proto, &l4(proto, pb, pa));
        if frag {
            fwd[6] = 0x20; // MF
            rev[7] = 0x10; // an offset
        }
        let id = packet_id(&c, &fwd, false);
        prop_assert!(id.is_some());
        prop_assert_eq!(packet_id(&c, &rev, false), id);
        if !frag {
            // An error about the forward packet, sent back to its source by a router.
            let err = ipv4(Ipv4Addr::new(192, 0, 2, 1), a, 1, &icmp_error(&fwd));
            prop_assert_eq!(packet_id(&c, &err, false), id);
        }
    }

    #[test]
    fn port_and_id_round_trip(port_min in any::<u16>(), id in any::<u8>(), k in any::<u16>()) {
        if let Some(p) = port_for_id(port_min, id, k) {
            prop_assert_eq!(id_of_port(port_min, p), id);
            prop_assert!(p >= port_min);
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..120)) {
        cluster::fuzzing::fuzz_codec(&data);
    }

    #[test]
    fn never_panics_on_mangled_packets(
        sport in any::<u16>(), flips in prop::collection::vec((0usize..60, any::<u8>()), 1..6),
        cut in 0usize..60,
    ) {
        let inner = ipv4(POOL, Ipv4Addr::new(8, 8, 8, 8), 6, &l4(6, sport, 80));
        let mut p = ipv4(Ipv4Addr::new(8, 8, 8, 8), POOL, 1, &icmp_error(&inner));
        for (at, v) in flips {
            if let Some(b) = p.get_mut(at) { *b = v; }
        }
        p.truncate(cut.max(1).min(p.len()));
        cluster::fuzzing::fuzz_codec(&p);
    }

    #[test]
    fn table_codec_round_trips(
        members in prop::collection::vec((1u32..50, 0u16..5), 0..12),
        epoch in any::<u64>(), by in any::<u32>(),
    ) {
        let ms: Vec<Member> = members.iter().map(|(n, w)| Member { node: *n, weight: *w }).collect();
        let mut a = compute(&ms, &Allocation::empty());
        a.epoch = epoch;
        a.committed_by = by;
        let b = a.encode();
        prop_assert_eq!(Allocation::decode(&b), Ok(a));
        for cut in [0, 1, 9, b.len() / 2, b.len() - 1] {
            prop_assert!(Allocation::decode(&b[..cut]).is_err());
        }
    }

    #[test]
    fn allocation_moves_the_minimum(
        n in 1u32..8, joiner in 8u32..12, w in prop::collection::vec(1u16..4, 8),
    ) {
        let ms: Vec<Member> = (1..=n).map(|i| Member { node: i, weight: w[i as usize - 1] }).collect();
        let a = compute(&ms, &Allocation::empty());
        let mut more = ms.clone();
        more.push(Member { node: joiner, weight: 1 });
        let b = compute(&more, &a);
        let moved = (0..256).filter(|i| a.owners[*i] != b.owners[*i]).count();
        prop_assert_eq!(moved, b.count(joiner));
        let c = compute(&ms, &b);
        // Leaving again moves only the joiner's ids.
        for i in 0..256 {
            if b.owners[i] != Some(joiner) {
                prop_assert_eq!(b.owners[i], c.owners[i]);
            }
        }
    }
}
