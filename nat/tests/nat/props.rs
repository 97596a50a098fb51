//! Property tests: one worker per session, disjoint port blocks, failures that move only the
//! dead worker's VIDs, and translation that round-trips with valid checksums.

use crate::lab::{config, Lab};
use nat::translate::{build, parse, rewrite, rewrite_error, verify_all, L4Csum, Side};
use nat::vid::{Geometry, VidManager, SPARE_FACTOR};
use netwire::icmp;
use netwire::tcp::flags;
use proptest::prelude::*;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// (inside address, inside port, remote address).
type FlowKey = (Ipv4Addr, u16, Ipv4Addr);

fn inside(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 1 + i % 4)
}
fn remote(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 1 + i % 3)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// (a) Every packet of a session, either way, in any interleaving, reaches one worker.
    #[test]
    fn a_session_stays_on_one_worker(
        workers in 1u16..5,
        ops in proptest::collection::vec((any::<u8>(), any::<u8>(), 0u16..4, any::<bool>(), any::<bool>()), 1..120),
    ) {
        let mut lab = Lab::new(config(workers));
        // (inside endpoint, remote) → (worker, outside endpoint)
        let mut seen: HashMap<FlowKey, (u16, (Ipv4Addr, u16))> = HashMap::new();
        for (a, r, port, tcp, inbound) in ops {
            let (ia, ip, ra) = (inside(a), 4000 + port, remote(r));
            if inbound {
                let key = (ia, ip + if tcp { 100 } else { 0 }, ra);
                let Some(&(w, out)) = seen.get(&key) else { continue };
                let mut p = if tcp {
                    build::tcp((ra, 80), out, flags::ACK, 3)
                } else {
                    build::udp((ra, 80), out, 3, false)
                };
                let o = lab.send_in(&mut p);
                prop_assert_eq!(o.worker, Some(w));
                prop_assert!(o.forwarded());
            } else {
                let mut p = if tcp {
                    build::tcp((ia, ip), (ra, 80), flags::SYN, 0)
                } else {
                    build::udp((ia, ip), (ra, 80), 3, false)
                };
                // TCP and UDP share the key space here only by port: keep them apart.
                let key = (ia, ip + if tcp { 100 } else { 0 }, ra);
                if tcp {
                    p = build::tcp((ia, key.1), (ra, 80), flags::SYN, 0);
                }
                let o = lab.send_out(&mut p);
                prop_assert!(o.forwarded());
                let f = parse(&p).unwrap();
                let w = o.worker.unwrap();
                if let Some(&(w0, out0)) = seen.get(&key) {
                    prop_assert_eq!(w, w0);
                    prop_assert_eq!((f.src, f.sport), out0);
                }
                seen.insert(key, (w, (f.src, f.sport)));
            }
        }
        prop_assert_eq!(lab.misdelivered(), 0);
        prop_assert_eq!(lab.sp.counters.not_setup, 0);
    }

    /// (b) Blocks are disjoint, inside the range, at least SPARE_FACTOR per worker, and
    /// vid_of_port inverts the block map.
    #[test]
    fn port_blocks_never_overlap(min in 1u16..60000, len in 0u32..65536, workers in 1u16..64, probe in any::<u16>()) {
        let max = (u32::from(min) + len).min(65535) as u16;
        let ports = u32::from(max) - u32::from(min) + 1;
        prop_assume!(ports >= 32 * u32::from(workers));
        let g = Geometry::new(min, max, workers);
        prop_assert!(u32::from(g.vids) >= SPARE_FACTOR * u32::from(workers));
        let mut last_end = u32::from(min);
        for v in 0..g.vids {
            let start = u32::from(g.block_start(v));
            prop_assert_eq!(start, last_end);
            last_end = start + g.len_of(v);
            prop_assert!(g.len_of(v) >= 1 && g.len_of(v) <= g.block_len());
            prop_assert!(last_end - 1 <= u32::from(max));
            prop_assert_eq!(g.vid_of_port(start as u16), Some(v));
            prop_assert_eq!(g.vid_of_port((last_end - 1) as u16), Some(v));
        }
        match g.vid_of_port(probe) {
            Some(v) => {
                let s = u32::from(g.block_start(v));
                prop_assert!((s..s + g.len_of(v)).contains(&u32::from(probe)));
            }
            None => prop_assert!(u32::from(probe) < u32::from(min) || u32::from(probe) >= last_end),
        }
    }

    /// (c) A failure moves only the dead worker's VIDs (to their backups), and a takeover only
    /// adds the dead worker's sessions to the survivors.
    #[test]
    fn only_a_dead_workers_vids_move(workers in 2u16..6, ops in proptest::collection::vec((0u16..6, any::<bool>()), 1..40)) {
        let mut m = VidManager::new(Geometry::new(1024, 65535, workers), workers);
        for w in 0..workers {
            m.request_vid(w).unwrap();
        }
        for (w, fail) in ops {
            let w = w % workers;
            let before: Vec<_> = (0..m.geometry().vids).map(|v| m.entry(v).unwrap()).collect();
            if fail {
                m.worker_failed(w);
                for (v, e) in before.iter().enumerate() {
                    let now = m.entry(v as u16).unwrap();
                    if e.owner != Some(w) && e.backup != Some(w) {
                        prop_assert_eq!(*e, now, "VID {} did not involve worker {}", v, w);
                    }
                    if e.owner == Some(w) {
                        prop_assert!(now.owner.is_none() || now.owner == e.backup);
                    }
                    prop_assert_ne!(now.owner, Some(w));
                    prop_assert!(now.backup.is_none() || now.backup != now.owner);
                }
            } else if !m.is_operational(w) {
                let _ = m.request_vid(w);
            }
        }
    }

    #[test]
    fn takeover_moves_only_the_dead_workers_sessions(workers in 3u16..6, flows in 1u16..60, victim in 0u16..6) {
        let mut lab = Lab::new(config(workers));
        for i in 0..flows {
            let mut p = build::udp((inside(i as u8), 2000 + i), (remote(i as u8), 53), 2, false);
            lab.send_out(&mut p);
        }
        let victim = victim % workers;
        let before: Vec<usize> = (0..workers).map(|w| lab.worker(w).table().len()).collect();
        lab.kill(victim);
        let total: usize = (0..workers).filter(|&w| w != victim).map(|w| lab.worker(w).table().len()).sum();
        prop_assert_eq!(total, before.iter().sum::<usize>(), "no session lost");
        for w in (0..workers).filter(|&w| w != victim) {
            prop_assert!(lab.worker(w).table().len() >= before[usize::from(w)]);
        }
    }

    /// (d) Translating and translating back restores the bytes, and every checksum verifies
    /// at each step.
    #[test]
    fn translate_round_trips(
        kind in 0u8..4,
        src in any::<u32>(), dst in any::<u32>(), sport in 1u16.., dport in 1u16..,
        new_addr in any::<u32>(), new_port in 1u16..,
        payload in 0usize..64, dst_side in any::<bool>(),
    ) {
        let (s, d) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
        let pkt = match kind {
            0 => build::tcp((s, sport), (d, dport), flags::ACK, payload),
            1 => build::udp((s, sport), (d, dport), payload, false),
            2 => build::udp((s, sport), (d, dport), payload, true),
            _ => build::echo(s, d, true, sport, dport),
        };
        let side = if dst_side && kind < 3 { Side::Dst } else { Side::Src };
        let (old_addr, old_port) = match side {
            Side::Src => (s, sport),
            Side::Dst => (d, dport),
        };
        let mut b = pkt.clone();
        let f = parse(&b).unwrap();
        rewrite(&mut b, &f, side, new_addr.into(), new_port, L4Csum::Full);
        prop_assert!(verify_all(&b));
        let g = parse(&b).unwrap();
        rewrite(&mut b, &g, side, old_addr, old_port, L4Csum::Full);
        prop_assert!(verify_all(&b));
        prop_assert_eq!(b, pkt);
    }

    #[test]
    fn icmp_error_translation_round_trips(
        src in any::<u32>(), dst in any::<u32>(), sport in 1u16.., dport in 1u16..,
        new_addr in any::<u32>(), new_port in 1u16.., quote in 28usize..200, kind in 0u8..3,
    ) {
        let (s, d) = (Ipv4Addr::from(src), Ipv4Addr::from(dst));
        let sent = match kind {
            0 => build::tcp((s, sport), (d, dport), flags::ACK, 100),
            1 => build::udp((s, sport), (d, dport), 100, false),
            _ => build::echo(s, d, true, sport, 1),
        };
        let hop = Ipv4Addr::new(203, 0, 113, 1);
        let err = build::error(hop, s, icmp::DEST_UNREACHABLE, icmp::CODE_FRAG_NEEDED, 1280, &sent, quote);
        prop_assert!(verify_all(&err));
        let mut b = err.clone();
        let f = parse(&b).unwrap();
        let na = Ipv4Addr::from(new_addr);
        rewrite_error(&mut b, &f, Side::Dst, na, Side::Src, na, new_port);
        prop_assert!(verify_all(&b));
        let g = parse(&b).unwrap();
        rewrite_error(&mut b, &g, Side::Dst, s, Side::Src, s, sport);
        prop_assert!(verify_all(&b));
        prop_assert_eq!(b, err);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Malformed input is counted and dropped, never a panic: valid packets (plain and ICMP
    /// errors, to and from established sessions) with random octets overwritten or cut short,
    /// through the line interface and both worker directions.
    #[test]
    fn mangled_packets_never_panic(
        kind in 0u8..6,
        edits in proptest::collection::vec((0usize..120, any::<u8>()), 0..6),
        cut in 0usize..140,
    ) {
        let mut lab = Lab::new(config(2));
        let (a, r) = (inside(0), remote(0));
        let mut syn = build::tcp((a, 4000), (r, 80), flags::SYN, 0);
        lab.send_out(&mut syn);
        let out = { let f = parse(&syn).unwrap(); (f.src, f.sport) };
        let sent = build::tcp(out, (r, 80), flags::ACK, 40);
        let mut pkt = match kind {
            0 => build::tcp((a, 4000), (r, 80), flags::ACK, 20),
            1 => build::tcp((r, 80), out, flags::ACK, 20),
            2 => build::udp((a, 4001), (r, 53), 20, false),
            3 => build::echo(r, out.0, false, out.1, 1),
            4 => build::error(r, out.0, icmp::DEST_UNREACHABLE, icmp::CODE_FRAG_NEEDED, 1280, &sent, 60),
            _ => build::error(a, r, icmp::DEST_UNREACHABLE, 3, 0, &build::udp((r, 53), (a, 4001), 8, false), 36),
        };
        for (at, v) in edits {
            if let Some(b) = pkt.get_mut(at) {
                *b = v;
            }
        }
        pkt.truncate(cut.max(1));
        let mut p2 = pkt.clone();
        lab.send_out(&mut pkt);
        lab.send_in(&mut p2);
        for w in lab.workers.iter_mut().flatten() {
            let mut p3 = p2.clone();
            let _ = w.outbound(&mut p3, L4Csum::Partial, 1, 0, true, 5);
            let _ = w.inbound(&mut p3, L4Csum::Full, 5);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Issue 16: in a cluster every new mapping's outside port carries the id asked for, in
    /// the worker's own block, and no two mappings share a port, for any range that passes
    /// `cluster::check_geometry` and any sequence of ids.
    #[test]
    fn cluster_ports_carry_their_id(
        port_min in 1024u16..20000,
        span in 2048u32..40000,
        workers in 1u16..5,
        ids in proptest::collection::vec(any::<u8>(), 1..200),
    ) {
        use nat::cluster::{check_geometry, id_of_port};
        use nat::session::{Endpoint, SessionTable, TableParams};
        let port_max = (u32::from(port_min) + span).min(65535) as u16;
        let g = Geometry::new(port_min, port_max, workers);
        prop_assume!(check_geometry(&g, workers).is_ok());
        let mut t = SessionTable::new(
            TableParams {
                capacity: 512,
                timeouts: [300; 4],
                geometry: g,
                seed: 7,
                reserved: Default::default(),
            },
            0,
        );
        // Block 0 is always whole: every id has block_len / 256 ports there.
        let home = 0;
        t.set_home(Some(home));
        let per_id = g.block_len() / 256;
        let mut given = [0u32; 256];
        let mut ports = std::collections::HashSet::new();
        for (i, &id) in ids.iter().enumerate() {
            let ep = Endpoint { proto: 17, addr: Ipv4Addr::new(10, 0, 0, 1), port: 1000 + i as u16 };
            match t.outbound_for_id(ep, (remote(0), 53), 0, &[Ipv4Addr::new(192, 0, 2, 1)], true, 0, Some(id)) {
                Ok(b) => {
                    prop_assert_eq!(id_of_port(port_min, b.port), id);
                    prop_assert_eq!(g.vid_of_port(b.port), Some(home));
                    prop_assert!(ports.insert(b.port), "port {} given twice", b.port);
                    given[usize::from(id)] += 1;
                }
                // Only once the block's ports of that id are all taken.
                Err(m) => {
                    prop_assert_eq!(m, nat::session::Miss::Exhausted);
                    prop_assert_eq!(given[usize::from(id)], per_id, "id {} exhausted early", id);
                }
            }
        }
    }
}
