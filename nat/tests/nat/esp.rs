//! Raw ESP through the NAT (`nat::esp`): packets translated both ways by SPI, the pending rule
//! with several inside hosts, filtering, capacity and expiry, the paired pool shared with TCP,
//! and properties (any bytes, any record, any sequence of operations).

use nat::config::{Config, Prefix, Rule};
use nat::esp::{self, EspDrop, EspKey, EspSession, EspTable, PROTO_ESP};
use nat::sync::{decode_esp, decode_esp_delete, encode_esp, EspSyncEvent, ESP_VALUE_LEN, KEY_LEN};
use nat::translate::{build, verify_all, L4Csum, Side, Skip};
use nat::worker::{NatWorker, Verdict};
use netwire::tcp::flags;
use proptest::prelude::*;
use std::net::Ipv4Addr;
use std::num::NonZeroU32;

const I1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const I2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const P: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const R: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn spi(x: u32) -> NonZeroU32 {
    NonZeroU32::new(x).unwrap()
}

/// An ESP packet with `spi` and `seq`, 48 octets of opaque payload.
fn esp_pkt(src: Ipv4Addr, dst: Ipv4Addr, spi: u32, seq: u32) -> Vec<u8> {
    let mut l4 = vec![0u8; 8 + 48];
    l4[..4].copy_from_slice(&spi.to_be_bytes());
    l4[4..8].copy_from_slice(&seq.to_be_bytes());
    for (i, x) in l4[8..].iter_mut().enumerate() {
        *x = (i * 13) as u8;
    }
    build::ipv4(src, dst, PROTO_ESP, 64, &l4)
}

/// What the router does with an inside ESP packet: parse, look up, rewrite the source.
fn send_out(t: &mut EspTable, pkt: &mut [u8], now: u32) -> Result<(), EspDrop> {
    let p = esp::parse(pkt).unwrap();
    let o = t.outbound(p.src, P, p.dst, p.spi, now)?;
    esp::rewrite(pkt, Side::Src, o.pool).unwrap();
    Ok(())
}

/// What the router does with an outside ESP packet to a pool address.
fn send_in(t: &mut EspTable, pkt: &mut [u8], now: u32) -> Result<Ipv4Addr, EspDrop> {
    let p = esp::parse(pkt).unwrap();
    let i = t.inbound(p.dst, p.src, p.spi, now)?;
    esp::rewrite(pkt, Side::Dst, i.inside).unwrap();
    Ok(i.inside)
}

#[test]
fn outbound_then_inbound_learns_the_spi_and_translates_both_ways() {
    let mut t = EspTable::new(16, 7);
    let orig = esp_pkt(I1, R, 0xaaaa_0001, 1);
    let mut out = orig.clone();
    send_out(&mut t, &mut out, 1).unwrap();
    assert!(verify_all(&out), "IP header checksum after SNAT");
    let p = esp::parse(&out).unwrap();
    assert_eq!((p.src, p.dst, p.spi.get(), p.seq), (P, R, 0xaaaa_0001, 1));
    assert_eq!(out[20..], orig[20..], "the ESP payload is not touched");
    // The remote answers on the SA the inside host chose.
    let orig_in = esp_pkt(R, P, 0xbbbb_0001, 1);
    let mut back = orig_in.clone();
    assert_eq!(send_in(&mut t, &mut back, 2), Ok(I1));
    assert!(verify_all(&back), "IP header checksum after DNAT");
    assert_eq!(esp::parse(&back).unwrap().dst, I1);
    assert_eq!(back[20..], orig_in[20..]);
    // Established: both ways again, by SPI.
    for now in 3..6 {
        let mut o = esp_pkt(I1, R, 0xaaaa_0001, now);
        send_out(&mut t, &mut o, now).unwrap();
        let mut b = esp_pkt(R, P, 0xbbbb_0001, now);
        assert_eq!(send_in(&mut t, &mut b, now), Ok(I1));
    }
    let s = t
        .get(&EspKey {
            inside: I1,
            remote: R,
            out_spi: spi(0xaaaa_0001),
        })
        .unwrap();
    assert_eq!(
        (s.pool, s.in_spi, s.created, s.last_seen),
        (P, Some(spi(0xbbbb_0001)), 1, 5)
    );
    assert_eq!((t.counters.created, t.counters.learnt), (1, 1));
}

#[test]
fn two_hosts_to_one_remote_each_get_the_spi_that_follows_their_packet() {
    let mut t = EspTable::new(16, 7);
    // Both hosts start an SA with R at once: I1 sends, then I2 sends.
    send_out(&mut t, &mut esp_pkt(I1, R, 0x1001, 1), 1).unwrap();
    send_out(&mut t, &mut esp_pkt(I2, R, 0x2001, 1), 1).unwrap();
    assert_eq!(t.counters.pending_replaced, 1, "I2 displaced unlearnt I1");
    // R's first answer follows I2's packet: it is I2's.
    assert_eq!(send_in(&mut t, &mut esp_pkt(R, P, 0x2002, 1), 2), Ok(I2));
    // I1's answer arrives with nothing pending: dropped, untouched.
    let orig = esp_pkt(R, P, 0x1002, 1);
    let mut b = orig.clone();
    assert_eq!(send_in(&mut t, &mut b, 2), Err(EspDrop::NoSession));
    assert_eq!(b, orig);
    // I1 sends again and re-claims the pending slot; R's next packet for I1 is bound to it.
    send_out(&mut t, &mut esp_pkt(I1, R, 0x1001, 2), 3).unwrap();
    assert_eq!(
        t.counters.pending_replaced, 1,
        "nothing unlearnt was displaced"
    );
    assert_eq!(send_in(&mut t, &mut esp_pkt(R, P, 0x1002, 2), 3), Ok(I1));
    // Learnt sessions no longer compete: any interleaving goes by SPI.
    for now in 4..8 {
        send_out(&mut t, &mut esp_pkt(I2, R, 0x2001, now), now).unwrap();
        send_out(&mut t, &mut esp_pkt(I1, R, 0x1001, now), now).unwrap();
        assert_eq!(
            send_in(&mut t, &mut esp_pkt(R, P, 0x2002, now), now),
            Ok(I2)
        );
        assert_eq!(
            send_in(&mut t, &mut esp_pkt(R, P, 0x1002, now), now),
            Ok(I1)
        );
    }
    // I1 re-keys while I2 also starts a new SA: I1 last, so I1 gets the next unknown SPI...
    send_out(&mut t, &mut esp_pkt(I2, R, 0x2003, 1), 8).unwrap();
    send_out(&mut t, &mut esp_pkt(I1, R, 0x1003, 1), 8).unwrap();
    assert_eq!(send_in(&mut t, &mut esp_pkt(R, P, 0x1004, 1), 9), Ok(I1));
    // ...and I2, sending again, the one after.
    send_out(&mut t, &mut esp_pkt(I2, R, 0x2003, 2), 9).unwrap();
    assert_eq!(send_in(&mut t, &mut esp_pkt(R, P, 0x2004, 1), 9), Ok(I2));
    let c = t.counters;
    assert_eq!(
        (c.created, c.learnt, c.pending_replaced, c.no_session),
        (4, 4, 2, 1)
    );
}

#[test]
fn an_unknown_spi_with_nothing_pending_is_filtered_and_untouched() {
    let mut t = EspTable::new(4, 7);
    let orig = esp_pkt(R, P, 0x55, 1);
    let mut b = orig.clone();
    assert_eq!(send_in(&mut t, &mut b, 0), Err(EspDrop::NoSession));
    assert_eq!(b, orig);
    // A pending session for another remote or pool address does not take it.
    send_out(
        &mut t,
        &mut esp_pkt(I1, Ipv4Addr::new(203, 0, 113, 1), 0x66, 1),
        0,
    )
    .unwrap();
    assert_eq!(send_in(&mut t, &mut b, 0), Err(EspDrop::NoSession));
    assert_eq!(
        t.inbound(Ipv4Addr::new(192, 0, 2, 2), R, spi(0x55), 0),
        Err(EspDrop::NoSession)
    );
    assert_eq!(t.counters.no_session, 3);
    assert_eq!(t.counters.in_packets, 0);
    assert_eq!(t.len(), 1);
}

#[test]
fn a_full_table_refuses_new_sessions_until_expiry_frees_one() {
    let mut t = EspTable::new(3, 7);
    for n in 1..=3u32 {
        t.outbound(I1, P, R, spi(n), 10).unwrap();
    }
    assert_eq!(t.outbound(I2, P, R, spi(9), 10), Err(EspDrop::Full));
    assert_eq!(t.counters.full, 1);
    // Existing sessions still pass.
    assert!(t.outbound(I1, P, R, spi(2), 100).is_ok());
    let mut gone = Vec::new();
    // Not yet idle for 100 s.
    assert_eq!(t.expire(109, 100, 64, &mut gone), 3);
    assert!(gone.is_empty());
    assert_eq!(t.expire(110, 100, 64, &mut gone), 3);
    assert_eq!(
        gone.iter().map(|s| s.out_spi.get()).collect::<Vec<_>>(),
        [1, 3]
    );
    assert_eq!(t.counters.expired, 2);
    assert!(t.outbound(I2, P, R, spi(9), 110).is_ok());
    assert!(t.outbound(I2, P, R, spi(10), 110).is_ok());
    assert_eq!(t.outbound(I2, P, R, spi(11), 110), Err(EspDrop::Full));
    assert_eq!(t.counters.full, 2);
}

#[test]
fn expiry_is_bounded_by_its_budget_and_resumes_where_it_stopped() {
    let mut t = EspTable::new(100, 7);
    let r = |n: u32| Ipv4Addr::from(0xc633_6400 + n);
    for n in 0..100u32 {
        t.outbound(I1, P, r(n), spi(n + 1), 0).unwrap();
        t.inbound(P, r(n), spi(1000 + n), 0).unwrap();
    }
    let mut gone = Vec::new();
    let mut calls = 0;
    while !t.is_empty() {
        let before = gone.len();
        let work = t.expire(300, 300, 16, &mut gone);
        assert!(work <= 16);
        assert!(gone.len() - before <= 16);
        calls += 1;
        assert!(calls <= 7, "one sweep of 100 slots in 16-slot steps");
    }
    assert_eq!(calls, 7);
    assert_eq!(gone.len(), 100);
    // Every map was cleaned: no SPI of the expired sessions resolves, the slots are reused.
    for n in 0..100u32 {
        assert_eq!(
            t.inbound(P, r(n), spi(1000 + n), 301),
            Err(EspDrop::NoSession)
        );
    }
    t.outbound(I2, P, r(0), spi(1), 301).unwrap();
    assert_eq!(t.slots(), 100);
    assert_eq!(t.inbound(P, r(0), spi(7), 301).map(|i| i.inside), Ok(I2));
}

#[test]
fn the_esp_pool_address_is_the_one_the_host_s_tcp_mappings_use() {
    let pool: Vec<Ipv4Addr> = (1..=5).map(|n| Ipv4Addr::new(192, 0, 2, n)).collect();
    let cfg = Config {
        rules: vec![Rule {
            inside: vec![Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 8)],
            outside: 1,
            pool: pool.clone(),
        }],
        workers: 1,
        ..Config::default()
    };
    let mut w = NatWorker::new(0, &cfg, 3, 0);
    w.handle_grant(0);
    let mut used = std::collections::HashSet::new();
    for h in 1..=40u8 {
        let inside = Ipv4Addr::new(10, 0, h, 2 * h);
        let mut syn = build::tcp((inside, 40000), (R, 443), flags::SYN, 0);
        assert_eq!(
            w.outbound(&mut syn, L4Csum::Full, 1, 0, true, 0),
            Verdict::Forward
        );
        let src = nat::translate::parse(&syn).unwrap().src;
        assert_eq!(cfg.pool_addr_for(inside, 1), Some(src), "{inside}");
        used.insert(src);
    }
    assert!(used.len() > 1, "the test spreads over the pool");
    assert_eq!(cfg.pool_addr_for(Ipv4Addr::new(172, 16, 0, 1), 1), None);
    assert_eq!(cfg.pool_addr_for(I1, 2), None);
}

fn session() -> impl Strategy<Value = EspSession> {
    (
        any::<[u8; 4]>(),
        1u32..,
        any::<[u8; 4]>(),
        1u32..,
        any::<u32>(),
    )
        .prop_map(|(i, pool, r, out, inn)| EspSession {
            inside: Ipv4Addr::from(i),
            pool: Ipv4Addr::from(pool),
            remote: Ipv4Addr::from(r),
            out_spi: spi(out),
            in_spi: NonZeroU32::new(inn),
            last_seen: 0,
            created: 0,
        })
}

/// One step of a random workload over 3 hosts, 2 remotes, 2 pool addresses and a few SPIs.
#[derive(Debug, Clone)]
enum Op {
    Out(u8, u8, u8),
    In(u8, u8, u8),
    Expire(u8),
    Install(u8, u8, u8, u8),
    Remove(u8, u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..3, 0u8..2, 1u8..4).prop_map(|(h, r, s)| Op::Out(h, r, s)),
        4 => (0u8..2, 0u8..2, 1u8..6).prop_map(|(p, r, s)| Op::In(p, r, s)),
        1 => (1u8..8).prop_map(Op::Expire),
        1 => (0u8..3, 0u8..2, 1u8..4, 0u8..6).prop_map(|(h, r, s, i)| Op::Install(h, r, s, i)),
        1 => (0u8..3, 0u8..2, 1u8..4).prop_map(|(h, r, s)| Op::Remove(h, r, s)),
    ]
}

fn host(h: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 1 + h)
}
fn remote(r: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 51, 100, 1 + r)
}
/// Hosts 0 and 1 share pool address 0 (they compete for pending slots); host 2 has its own.
fn pool_of(h: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 1 + h / 2)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any bytes: parse and rewrite return an error or a result, never panic; a parsed packet
    /// rewritten both ways keeps a valid header checksum when it had one.
    #[test]
    fn any_bytes_never_panic_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..80), force in any::<bool>()) {
        let mut b = bytes;
        if force && b.len() > 9 {
            b[0] = 0x45;
            b[9] = PROTO_ESP;
        }
        let parsed = esp::parse(&b);
        if let Err(e) = parsed {
            prop_assert!(matches!(e, Skip::Malformed | Skip::Fragment | Skip::Unsupported));
        }
        let before = b.clone();
        match esp::rewrite(&mut b, Side::Dst, P) {
            Ok(old) => prop_assert!(parsed.is_err() || parsed.unwrap().dst == old),
            Err(_) => {
                prop_assert_eq!(&b, &before);
                prop_assert!(parsed.is_err());
            }
        }
        let _ = decode_esp(&before[..before.len().min(KEY_LEN)], &before[before.len().min(KEY_LEN)..]);
        let _ = decode_esp_delete(&before);
    }

    /// Every session round-trips through its record (times are the receiver's).
    #[test]
    fn esp_records_round_trip(s in session()) {
        let (k, v) = encode_esp(&s);
        prop_assert_eq!(k.len(), KEY_LEN);
        prop_assert_eq!(v.len(), ESP_VALUE_LEN);
        prop_assert_eq!(decode_esp(&k, &v), Ok(s));
        prop_assert_eq!(decode_esp_delete(&k), Ok(EspSyncEvent::Delete(s.key())));
        prop_assert!(nat::sync::decode(&k, &v).is_err());
    }

    /// Any sequence of packets, expiry, installs and removals keeps the table consistent: every
    /// session is found by its identity, a learnt SPI leads to its own session, capacity holds,
    /// and removing everything leaves no key behind.
    #[test]
    fn any_workload_keeps_the_three_maps_consistent(ops in proptest::collection::vec(op(), 1..80), cap in 1usize..6) {
        let mut t = EspTable::new(cap, 5);
        let mut now = 0u32;
        let mut out = Vec::new();
        for o in ops {
            now += 1;
            match o {
                Op::Out(h, r, s) => {
                    let res = t.outbound(host(h), pool_of(h), remote(r), spi(u32::from(s)), now);
                    prop_assert!(res.is_ok() || t.len() == cap);
                    if let Ok(x) = res {
                        prop_assert_eq!(x.pool, pool_of(h));
                    }
                }
                Op::In(p, r, s) => {
                    let pool = Ipv4Addr::new(192, 0, 2, 1 + p);
                    if let Ok(x) = t.inbound(pool, remote(r), spi(100 + u32::from(s)), now) {
                        prop_assert_eq!(pool_of(x.inside.octets()[3] - 1), pool);
                    }
                }
                Op::Expire(b) => {
                    t.expire(now, 5, usize::from(b), &mut out);
                }
                Op::Install(h, r, s, i) => {
                    let x = EspSession {
                        inside: host(h),
                        pool: pool_of(h),
                        remote: remote(r),
                        out_spi: spi(u32::from(s)),
                        in_spi: NonZeroU32::new(u32::from(i)).map(|n| spi(100 + n.get())),
                        last_seen: 0,
                        created: 0,
                    };
                    let _ = t.install(&x, now);
                }
                Op::Remove(h, r, s) => {
                    t.remove(&EspKey { inside: host(h), remote: remote(r), out_spi: spi(u32::from(s)) });
                }
            }
            prop_assert!(t.len() <= cap);
            let all: Vec<EspSession> = t.iter().collect();
            prop_assert_eq!(all.len(), t.len());
            for s in &all {
                prop_assert_eq!(t.get(&s.key()), Some(*s));
            }
        }
        // Every learnt SPI leads to its own session (two sessions never share one).
        let all: Vec<EspSession> = t.iter().collect();
        for s in &all {
            if let Some(i) = s.in_spi {
                prop_assert_eq!(t.inbound(s.pool, s.remote, i, now).map(|x| x.inside), Ok(s.inside));
            }
        }
        for s in &all {
            prop_assert!(t.remove(&s.key()).is_some());
        }
        prop_assert!(t.is_empty());
        for p in 0..2u8 {
            for r in 0..2u8 {
                for s in 1..6u32 {
                    prop_assert_eq!(
                        t.inbound(Ipv4Addr::new(192, 0, 2, 1 + p), remote(r), spi(100 + s), now),
                        Err(EspDrop::NoSession)
                    );
                }
            }
        }
    }
}
