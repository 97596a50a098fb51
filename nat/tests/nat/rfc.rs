//! RFC 4787 / 5382 / 5508 behaviours, end to end through the lab.

use crate::lab::{config, Lab, POOL, POOL2};
use nat::dispatch::{Dispatch, DispatchDrop};
use nat::translate::{build, parse, verify_all, Kind};
use nat::worker::{NatDrop, Verdict};
use netwire::icmp;
use netwire::tcp::flags;
use std::net::Ipv4Addr;

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const R1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const R2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const R3: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 3);
const HOP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 254);

/// Source address and port (or echo identifier) of a translated packet.
fn src_of(pkt: &[u8]) -> (Ipv4Addr, u16) {
    let f = parse(pkt).unwrap();
    (f.src, f.sport)
}

fn dst_of(pkt: &[u8]) -> (Ipv4Addr, u16) {
    let f = parse(pkt).unwrap();
    (f.dst, f.dport)
}

#[test]
fn eim_two_remotes_see_one_outside_port() {
    let mut lab = Lab::new(config(2));
    let mut p1 = build::udp((A, 5000), (R1, 3478), 10, false);
    let mut p2 = build::udp((A, 5000), (R2, 3478), 10, false);
    assert!(lab.send_out(&mut p1).forwarded());
    assert!(lab.send_out(&mut p2).forwarded());
    let (o1, o2) = (src_of(&p1), src_of(&p2));
    assert_eq!(o1, o2, "RFC 4787 REQ-1: endpoint-independent mapping");
    assert!(o1.0 == POOL || o1.0 == POOL2);
    assert!(verify_all(&p1) && verify_all(&p2));
    // The second flow went straight to the mapping's worker, not to the switch processor.
    assert_eq!(lab.sp.counters.setups, 1);
    // Paired pooling: another port of the same host uses the same pool address.
    let mut p3 = build::tcp((A, 6000), (R1, 80), flags::SYN, 0);
    assert!(lab.send_out(&mut p3).forwarded());
    assert_eq!(src_of(&p3).0, o1.0, "RFC 4787 REQ-2: paired pooling");
}

#[test]
fn apdf_filters_an_unsolicited_remote() {
    let mut lab = Lab::new(config(2));
    let mut p = build::udp((A, 5000), (R1, 3478), 10, false);
    lab.send_out(&mut p);
    let (pool, port) = src_of(&p);
    // The remote it sent to gets in, translated back to the inside endpoint.
    let mut reply = build::udp((R1, 3478), (pool, port), 10, false);
    let o = lab.send_in(&mut reply);
    assert!(o.forwarded());
    assert_eq!(dst_of(&reply), (A, 5000));
    assert!(verify_all(&reply));
    // A third remote, and the same remote from another port, are filtered (RFC 4787 REQ-8).
    for from in [(R3, 3478), (R1, 3479)] {
        let mut x = build::udp(from, (pool, port), 10, false);
        let o = lab.send_in(&mut x);
        assert_eq!(o.verdict, Some(Verdict::Drop(NatDrop::Filtered)));
    }
    let w = o.worker.unwrap();
    assert_eq!(lab.worker(w).table().counters.filtered, 2);
}

#[test]
fn hairpinning_reaches_the_other_inside_host() {
    let mut lab = Lab::new(config(3));
    // B learns its outside mapping by talking to R1; so does A.
    let mut b1 = build::udp((B, 7000), (R1, 3478), 4, false);
    lab.send_out(&mut b1);
    let b_out = src_of(&b1);
    let mut a1 = build::udp((A, 6000), (R1, 3478), 4, false);
    lab.send_out(&mut a1);
    let a_out = src_of(&a1);
    // A sends to B's outside mapping: B never sent to A's mapping, so APDF filters it.
    let mut a2 = build::udp((A, 6000), b_out, 4, false);
    let o = lab.send_out(&mut a2);
    assert_eq!(o.verdict, Some(Verdict::Drop(NatDrop::Filtered)));
    // B sends to A's outside mapping: hairpinned to A, with B's outside address as source
    // (RFC 4787 REQ-9, RFC 5382 REQ-8).
    let mut b2 = build::udp((B, 7000), a_out, 4, false);
    let o = lab.send_out(&mut b2);
    assert_eq!(o.verdict, Some(Verdict::Forward));
    assert_eq!(dst_of(&b2), (A, 6000));
    assert_eq!(src_of(&b2), b_out);
    assert!(verify_all(&b2));
    // Now A's packets to B get through too.
    let mut a3 = build::udp((A, 6000), b_out, 4, false);
    assert!(lab.send_out(&mut a3).forwarded());
    assert_eq!((src_of(&a3), dst_of(&a3)), (a_out, (B, 7000)));
    let hairpins: u64 = lab
        .workers
        .iter()
        .flatten()
        .map(|w| w.counters.hairpin)
        .sum();
    assert_eq!(hairpins, 3);
}

#[test]
fn icmp_error_with_embedded_tcp_is_translated_back() {
    let mut lab = Lab::new(config(2));
    let mut syn = build::tcp((A, 40000), (R1, 443), flags::SYN, 0);
    lab.send_out(&mut syn);
    let (pool, port) = src_of(&syn);
    let mut synack = build::tcp((R1, 443), (pool, port), flags::SYN | flags::ACK, 0);
    assert!(lab.send_in(&mut synack).forwarded());
    // A 1400-octet segment with DF hits a 1300-MTU link: the hop quotes the whole header.
    let mut data = build::tcp((A, 40000), (R1, 443), flags::ACK, 1360);
    assert!(lab.send_out(&mut data).forwarded());
    let mut err = build::error(
        HOP,
        pool,
        icmp::DEST_UNREACHABLE,
        icmp::CODE_FRAG_NEEDED,
        1300,
        &data,
        548,
    );
    let o = lab.send_in(&mut err);
    assert_eq!(o.verdict, Some(Verdict::Forward));
    assert!(
        verify_all(&err),
        "outer IP, ICMP and quoted IP checksums verify"
    );
    let f = parse(&err).unwrap();
    let Kind::Error(q) = f.kind else {
        panic!("not an error")
    };
    assert_eq!((f.src, f.dst), (HOP, A));
    assert_eq!((q.src, q.sport, q.dst, q.dport), (A, 40000, R1, 443));
    // The quoted TCP checksum was patched too: the quote, re-truncated to its own header and
    // completed with the original payload, is the packet A sent.
    let orig = build::tcp((A, 40000), (R1, 443), flags::ACK, 1360);
    assert_eq!(&err[28 + 20..28 + 40], &orig[20..40]);
    assert_eq!(
        netwire::Icmpv4Packet::new_unchecked(&err[20..]).next_hop_mtu(),
        1300
    );
}

#[test]
fn traceroute_time_exceeded_through_nat() {
    let mut lab = Lab::new(config(2));
    // UDP traceroute: probes to 33434.. with TTL 1 beyond the NAT.
    for (i, dport) in (33434..33437).enumerate() {
        let mut probe = build::udp((A, 50000), (R1, dport), 32, false);
        assert!(lab.send_out(&mut probe).forwarded());
        let mut te = build::error(
            HOP,
            src_of(&probe).0,
            icmp::TIME_EXCEEDED,
            0,
            0,
            &probe,
            probe.len(),
        );
        let o = lab.send_in(&mut te);
        assert_eq!(o.verdict, Some(Verdict::Forward), "probe {i}");
        assert!(verify_all(&te));
        assert_eq!(
            &te[28..],
            &build::udp((A, 50000), (R1, dport), 32, false)[..]
        );
    }
    // ICMP traceroute (echo with small TTL): the identifier comes back too.
    let mut ping = build::echo(A, R1, true, 0x4242, 1);
    assert!(lab.send_out(&mut ping).forwarded());
    let mut te = build::error(
        HOP,
        src_of(&ping).0,
        icmp::TIME_EXCEEDED,
        0,
        0,
        &ping,
        ping.len(),
    );
    assert!(lab.send_in(&mut te).forwarded());
    assert_eq!(&te[28..], &build::echo(A, R1, true, 0x4242, 1)[..]);
    let errors: u64 = lab
        .workers
        .iter()
        .flatten()
        .map(|w| w.counters.icmp_errors)
        .sum();
    assert_eq!(errors, 4);
}

#[test]
fn icmp_echo_identifier_is_translated() {
    let mut lab = Lab::new(config(2));
    let mut ping = build::echo(A, R1, true, 1, 7);
    lab.send_out(&mut ping);
    let (pool, id) = src_of(&ping);
    assert!(verify_all(&ping));
    assert!(
        id >= 1024,
        "the identifier is an outside port of the worker's block"
    );
    let mut pong = build::echo(R1, pool, false, id, 7);
    assert!(lab.send_in(&mut pong).forwarded());
    assert_eq!(pong, build::echo(R1, A, false, 1, 7));
}

#[test]
fn port_exhaustion_drops_counts_and_prohibits() {
    let mut cfg = config(1);
    (cfg.port_min, cfg.port_max) = (2000, 2063); // 2 blocks of 32
    cfg.rules[0].pool.truncate(1);
    let mut lab = Lab::new(cfg);
    for port in 0..32 {
        let mut p = build::udp((A, 10000 + port), (R1, 53), 4, false);
        assert!(lab.send_out(&mut p).forwarded());
    }
    let mut p = build::udp((A, 20000), (R1, 53), 4, false);
    let o = lab.send_out(&mut p);
    assert_eq!(o.verdict, Some(Verdict::Prohibited));
    assert_eq!(lab.worker(0).counters.exhausted, 1);
    assert_eq!(lab.worker(0).table().counters.exhausted, 1);
    // The refused endpoint left no flow-table entry behind.
    assert_eq!(lab.sp.flows().len(), 32);
}

#[test]
fn tcp_timeouts_follow_the_state() {
    let mut lab = Lab::new(config(1));
    let mut syn = build::tcp((A, 40000), (R1, 80), flags::SYN, 0);
    lab.send_out(&mut syn);
    let out = src_of(&syn);
    let mut synack = build::tcp((R1, 80), out, flags::SYN | flags::ACK, 0);
    lab.send_in(&mut synack);
    // Established: 7440 s (RFC 5382 REQ-5).
    lab.advance(7439);
    assert_eq!(lab.worker(0).table().len(), 1);
    let mut fin = build::tcp((A, 40000), (R1, 80), flags::FIN | flags::ACK, 0);
    assert!(lab.send_out(&mut fin).forwarded());
    let mut fin2 = build::tcp((R1, 80), out, flags::FIN | flags::ACK, 0);
    assert!(lab.send_in(&mut fin2).forwarded());
    // Closing: transitory 240 s.
    lab.advance(239);
    assert_eq!(lab.worker(0).table().len(), 1);
    lab.advance(1);
    assert_eq!(lab.worker(0).table().len(), 0);
    assert!(
        lab.sp.flows().is_empty(),
        "the flow table entry went with the mapping"
    );
    // A late segment is no set-up: dropped at the line interface.
    let mut late = build::tcp((A, 40000), (R1, 80), flags::ACK, 0);
    assert_eq!(
        lab.send_out(&mut late).dispatch,
        Dispatch::Drop(DispatchDrop::NonSyn)
    );
}

#[test]
fn switch_processor_sees_only_setups() {
    let mut lab = Lab::new(config(4));
    for i in 0..50u16 {
        let mut syn = build::tcp((A, 1000 + i), (R1, 80), flags::SYN, 0);
        lab.send_out(&mut syn);
        let out = src_of(&syn);
        for _ in 0..3 {
            let mut d = build::tcp((A, 1000 + i), (R1, 80), flags::ACK, 10);
            assert!(matches!(
                lab.send_out(&mut d).dispatch,
                Dispatch::ToWorker { .. }
            ));
            let mut r = build::tcp((R1, 80), out, flags::ACK, 10);
            assert!(lab.send_in(&mut r).forwarded());
        }
    }
    assert_eq!(lab.sp.counters.setups, 50);
    assert_eq!(lab.sp.counters.not_setup, 0);
    assert_eq!(lab.misdelivered(), 0);
    // Least load spread the set-ups over the four workers.
    for w in 0..4 {
        assert!(lab.worker(w).table().len() >= 12, "worker {w}");
    }
}

#[test]
fn failover_keeps_sessions_and_a_restarted_worker_rejoins() {
    let mut lab = Lab::new(config(3));
    let mut outs = Vec::new();
    for i in 0..30u16 {
        let mut p = build::udp((A, 3000 + i), (R1, 53), 4, false);
        let o = lab.send_out(&mut p);
        outs.push((o.worker.unwrap(), src_of(&p)));
    }
    let victim = outs[0].0;
    let home = lab.sp.vids().home(victim).unwrap();
    let backup = lab.sp.vids().entry(home).unwrap().backup.unwrap();
    lab.kill(victim);
    // The victim's VID moved to its backup in one step, with every session.
    assert_eq!(lab.sp.vids().entry(home).unwrap().owner, Some(backup));
    for (i, &(_, out)) in outs.iter().enumerate() {
        let mut reply = build::udp((R1, 53), out, 4, false);
        let o = lab.send_in(&mut reply);
        assert!(o.forwarded(), "session {i} lost");
        assert_ne!(o.worker, Some(victim));
        let mut again = build::udp((A, 3000 + i as u16), (R1, 53), 4, false);
        assert!(lab.send_out(&mut again).forwarded());
        assert_eq!(src_of(&again), out, "outside port kept");
    }
    // The restarted worker asks again, gets a fresh VID, and backs up its old one (now
    // adopted by the survivor): a second failure, of that survivor, loses nothing either.
    lab.start(victim);
    let fresh = lab.sp.vids().home(victim).unwrap();
    assert_ne!(fresh, home);
    assert_eq!(lab.sp.vids().entry(home).unwrap().backup, Some(victim));
    lab.kill(backup);
    for &(_, out) in &outs {
        let mut reply = build::udp((R1, 53), out, 4, false);
        assert!(lab.send_in(&mut reply).forwarded());
    }
    assert_eq!(lab.misdelivered(), 0);
}

#[test]
fn an_inside_hosts_icmp_error_leaves_with_the_outside_address() {
    let mut lab = Lab::new(config(2));
    let mut p = build::udp((A, 5000), (R1, 53), 4, false);
    lab.send_out(&mut p);
    let out = src_of(&p);
    // R1's datagram comes in; A answers port unreachable quoting what it received.
    let mut d = build::udp((R1, 53), out, 12, false);
    assert!(lab.send_in(&mut d).forwarded());
    let mut err = build::error(
        A,
        R1,
        icmp::DEST_UNREACHABLE,
        icmp::CODE_PORT_UNREACHABLE,
        0,
        &d,
        d.len(),
    );
    let o = lab.send_out(&mut err);
    assert_eq!(o.verdict, Some(Verdict::Forward), "{o:?}");
    assert!(verify_all(&err));
    let f = parse(&err).unwrap();
    assert_eq!(
        f.src, out.0,
        "RFC 5508 REQ-3: the outer source is translated"
    );
    // R1 sees its own datagram quoted, as it sent it.
    assert_eq!(&err[28..], &build::udp((R1, 53), out, 12, false)[..]);
}
