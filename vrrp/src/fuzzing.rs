//! Fuzzing oracles, shared by the cargo-fuzz targets in `../fuzz` and by a stable `#[test]` that
//! replays the corpus. Built only for tests and with the `fuzzing` feature. Any panic is a
//! finding.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::machine::{Action, State, VirtualRouter};
use crate::wire::{self, Advert, ChecksumMode};

const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// `data` as an Ethernet frame, an IPv4 datagram and a bare VRRP message; whatever decodes must
/// re-encode to the same bytes (reserved bits aside) and decode to the same values.
pub fn fuzz_decode(data: &[u8]) {
    if let Ok(rx) = wire::parse_frame(data) {
        check_message(&data[14 + ip_header_len(&data[14..])..], &rx);
    }
    if let Ok(rx) = wire::parse_ipv4(data) {
        check_message(&data[ip_header_len(data)..], &rx);
    }
    if let Ok((advert, mode)) = Advert::parse(data, SRC, wire::MULTICAST_ADDR, wire::TTL) {
        let rx = wire::Received {
            src: SRC,
            dst: wire::MULTICAST_ADDR,
            advert,
            checksum: mode,
        };
        check_message(data, &rx);
    }
}

fn ip_header_len(packet: &[u8]) -> usize {
    usize::from(packet[0] & 0x0f) * 4
}

/// `tail` starts with the VRRP message `rx` was decoded from (link padding may follow).
fn check_message(tail: &[u8], rx: &wire::Received) {
    let out = rx.advert.to_bytes(rx.src, rx.dst, rx.checksum);
    let original = &tail[..out.len()];
    let reserved_clear = original[4] & 0xf0 == 0;
    if reserved_clear {
        assert_eq!(original, &out[..], "re-encoding differs");
    } else {
        // The reserved nibble is ignored on receipt and zeroed on send, so only the checksum
        // and that nibble may differ.
        assert_eq!(original[..4], out[..4]);
        assert_eq!(original[4] & 0x0f, out[4]);
        assert_eq!(original[5], out[5]);
        assert_eq!(original[8..], out[8..]);
    }
    match Advert::parse(&out, rx.src, rx.dst, wire::TTL) {
        Ok((again, mode)) => {
            assert_eq!(again, rx.advert, "decode(encode(x)) != x");
            // A message can verify under both sums only if the pseudo-header sums to zero; the
            // RFC's is tried first.
            assert!(mode == rx.checksum || mode == ChecksumMode::PseudoHeader);
        }
        Err(e) => panic!("re-decoding a re-encoded advertisement failed: {e}"),
    }
}

/// Drives one virtual router with operations read from `data` (adverts from two peers with
/// arbitrary priorities and intervals, time steps, timers, shutdown, start-up, switchover,
/// priority changes) and checks its invariants after each.
pub fn fuzz_machine(data: &[u8]) {
    let mut bytes = data.iter().copied();
    let mut next = move || bytes.next();
    let Some(setup) = next() else { return };
    let t0 = Instant::now();
    let vip = Ipv4Addr::new(192, 0, 2, 100);
    let mut cfg = Config::new(7, Ipv4Addr::new(192, 0, 2, 10), vec![vip]);
    cfg.priority = next().unwrap_or(100).max(1);
    cfg.adver_interval = u16::from(next().unwrap_or(10)).max(1);
    cfg.preempt = setup & 1 != 0;
    cfg.accept_mode = setup & 2 != 0;
    cfg.preempt_delay = Duration::from_millis(u64::from(setup >> 4) * 100);
    let Ok(mut vr) = VirtualRouter::new(cfg, t0) else {
        return;
    };
    let mut now = t0;
    let actions = vr.startup(now);
    check(&vr, &actions, now);
    while let Some(op) = next() {
        let arg = next().unwrap_or(0);
        let actions = match op % 8 {
            0 | 1 => {
                let from = Ipv4Addr::new(192, 0, 2, if op & 0x10 != 0 { 5 } else { 20 });
                let addrs = if op & 0x20 != 0 {
                    vec![vip]
                } else {
                    vec![from]
                };
                let interval = u16::from(next().unwrap_or(1)).max(1);
                match Advert::new(if op & 0x40 != 0 { 8 } else { 7 }, arg, interval, addrs) {
                    Ok(advert) => vr.on_advert(&advert, from, now),
                    Err(_) => Vec::new(),
                }
            }
            2 | 3 => {
                now += Duration::from_millis(u64::from(arg) * 10);
                vr.on_timer(now)
            }
            4 => match vr.next_deadline() {
                Some(due) => {
                    now = now.max(due);
                    vr.on_timer(now)
                }
                None => Vec::new(),
            },
            5 => vr.shutdown(now),
            6 => vr.startup(now),
            _ => {
                if arg & 1 == 0 {
                    vr.switchover(now)
                } else {
                    let _ = vr.set_priority(arg);
                    Vec::new()
                }
            }
        };
        check(&vr, &actions, now);
    }
}

fn check(vr: &VirtualRouter, actions: &[Action], now: Instant) {
    match vr.state() {
        State::Initialize => assert_eq!(vr.next_deadline(), None),
        State::Backup | State::Master => {
            let due = vr.next_deadline().expect("a running router has a deadline");
            // The longest timer is Master_Down_Interval at the largest interval.
            assert!(due <= now + Duration::from_secs(4 * 41));
        }
    }
    for action in actions {
        if let Action::SendAdvert { advert, frame } = action {
            let rx = wire::parse_frame(frame).expect("an emitted frame must parse");
            assert_eq!(&rx.advert, advert);
            assert_eq!(rx.src, vr.config().primary_addr);
        }
    }
    let c = vr.counters();
    assert!(c.priority_zero_sent <= c.adverts_sent);
}
