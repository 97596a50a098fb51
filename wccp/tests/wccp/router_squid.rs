//! RouterEngine against real Squid messages: the HERE_I_AMs and REDIRECT_ASSIGNs of the captures
//! in `shared/testdata/squid/` (see its README) are fed to the engine in capture order, one
//! HERE_I_AM every 10 s and a REDIRECT_ASSIGN 5 s after the HERE_I_AM before it (Squid 7.6
//! sends it 15 s after the first accepted I_SEE_YOU). The responder's I_SEE_YOUs are ignored;
//! the engine answers instead.
//!
//! Squid 7.6 echoes the Receive IDs 1, 2, 3… that the responder sent; the engine also counts
//! from 1, so the echoes line up and Squid's REDIRECT_ASSIGN (Receive ID 2, change 1) is valid
//! for the engine too. Debian's Squid 5.7 rejects per-draft I_SEE_YOUs and keeps echoing 0.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::common::{capture, Packet};
use wccp::engine::{AssignmentMethod, DropReason, ForwardingMethod, Methods, ReturnMethod};
use wccp::router::{CachePhase, RouterEngine, RouterEvent, RouterServiceConfig, ServiceStatus};
use wccp::security::{Password, Security};
use wccp::wire::{AssignmentKey, Header, ISeeYou, Message, MessageType, ServiceFlags, ServiceInfo};

const SQUID: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const ROUTER2: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

/// What the engine answered.
struct Replay {
    engine: RouterEngine,
    replies: Vec<(Ipv4Addr, Ipv4Addr, ISeeYou)>,
    events: Vec<RouterEvent>,
}

/// Feeds every datagram Squid sent in `name` to `engine` (routed by destination for
/// multi-router captures: only those to `router`).
fn replay(name: &str, engine: RouterEngine, router: Ipv4Addr) -> Replay {
    replay_with(name, engine, router, &|p| p.to_vec())
}

/// [`replay`] with every datagram passed through `mangle` first.
fn replay_with(
    name: &str,
    mut engine: RouterEngine,
    router: Ipv4Addr,
    mangle: &dyn Fn(&[u8]) -> Vec<u8>,
) -> Replay {
    let base = t0();
    let mut now = base;
    let mut replies = vec![];
    let mut events = vec![];
    let squid: Vec<Packet> = capture(name)
        .into_iter()
        .filter(|p| p.src == SQUID && p.dst == router)
        .collect();
    assert!(!squid.is_empty(), "{name}");
    for (i, p) in squid.iter().enumerate() {
        now = match Header::peek_type(&p.payload) {
            Some(MessageType::RedirectAssign) => now + Duration::from_secs(5),
            _ => base + Duration::from_secs(10 * i as u64),
        };
        engine.handle_timeout(now);
        engine.handle_message(now, p.src, p.dst, &mangle(&p.payload));
        let mut buf = vec![];
        while let Some(t) = engine.poll_transmit(now, &mut buf) {
            let m = Message::decode(&buf[..t.size]).expect("the engine's own message decodes");
            replies.push((t.src, t.dst, ISeeYou::try_from(&m).expect("an I_SEE_YOU")));
        }
        events.extend(std::iter::from_fn(|| engine.poll_event()));
        if let Err(e) = engine.check_invariants() {
            panic!("{name}: {e}");
        }
    }
    Replay {
        engine,
        replies,
        events,
    }
}

fn engine(config: RouterServiceConfig) -> RouterEngine {
    let mut e = RouterEngine::new();
    e.add_service(config).expect("valid config");
    e
}

fn only_service(r: &Replay) -> ServiceStatus {
    let all = r.engine.services();
    assert_eq!(all.len(), 1);
    all.into_iter().next().expect("one service")
}

/// Squid 5.7 (Debian 12): HERE_I_AMs without any answer, and with per-draft I_SEE_YOUs it
/// cannot parse. It always echoes Receive ID 0: answered every time, never usable.
#[test]
fn squid_5_7_never_echoes_and_stays_unusable() {
    for (name, config) in [
        ("hia-hash-gre-std0", RouterServiceConfig::standard(0)),
        (
            "hia-hash-gre-std0-md5",
            RouterServiceConfig::standard(0).with_password(b"secret"),
        ),
        ("isy-spec-hash-gre-std0", RouterServiceConfig::standard(0)),
        ("hia-hash-gre-dyn90", RouterServiceConfig::dynamic(90)),
        (
            "hia-mask-l2-dyn90-md5",
            RouterServiceConfig::dynamic(90).with_password(b"abcdefgh"),
        ),
    ] {
        let r = replay(name, engine(config), ROUTER);
        let s = only_service(&r);
        let hias = s.counters.rx.here_i_am;
        assert!(hias >= 3, "{name}");
        assert_eq!(
            r.replies.len() as u64,
            hias,
            "{name}: one I_SEE_YOU per HERE_I_AM"
        );
        for (i, (src, dst, isy)) in r.replies.iter().enumerate() {
            assert_eq!((*src, *dst), (ROUTER, SQUID));
            assert_eq!(isy.identity.router.router_ip, ROUTER);
            assert_eq!(isy.identity.router.receive_id, i as u32 + 1);
            assert_eq!(isy.identity.received_from, vec![SQUID]);
            assert!(
                isy.view.caches.is_empty(),
                "{name}: never in the Router View"
            );
        }
        let c = s.cache(SQUID).unwrap();
        assert_eq!(c.phase, CachePhase::Joining, "{name}");
        assert!(!c.usable && !c.receive_id_echoed, "{name}");
        assert_eq!(
            s.counters.rejects(DropReason::ReceiveIdMismatch),
            hias,
            "{name}"
        );
        assert_eq!(
            s.counters.total_drops(),
            hias,
            "{name}: nothing else rejected"
        );
        // At most the (empty) assignment's learnt definition changed.
        assert!(
            r.events.iter().all(|e| matches!(
                e,
                RouterEvent::AssignmentChanged { assignment, .. } if assignment.is_empty()
            )),
            "{name}: {:?}",
            r.events
        );
    }
}

/// Squid 5.7 announces dynamic service 90 but never echoes a Receive ID: every reply carries
/// its definition, yet the group does not learn it (issue 13 item 4: only a cache that
/// completed the handshake defines the service). Squid 7.6 completes it and defines it.
#[test]
fn dynamic_definition_is_learnt_from_squid() {
    let r = replay(
        "hia-hash-gre-dyn90",
        engine(RouterServiceConfig::dynamic(90)),
        ROUTER,
    );
    let def = ServiceInfo::dynamic(
        90,
        6,
        240,
        ServiceFlags::SRC_IP_HASH | ServiceFlags::SRC_PORT_HASH,
        &[80, 443],
    );
    assert_eq!(only_service(&r).definition, None);
    assert!(r.replies.iter().all(|(_, _, isy)| isy.service == def));
    let r = replay(
        "s76-squid64-hash-gre-dyn90",
        engine(RouterServiceConfig::dynamic(90)),
        ROUTER,
    );
    let learnt = only_service(&r).definition.expect("learnt after the echo");
    assert_eq!(learnt.service_id, 90);
    assert!(r.replies.iter().all(|(_, _, isy)| isy.service == learnt));
    // A router configured with another password drops everything.
    let r = replay(
        "hia-mask-l2-dyn90-md5",
        engine(RouterServiceConfig::dynamic(90).with_password(b"secret")),
        ROUTER,
    );
    assert!(r.replies.is_empty());
    assert_eq!(only_service(&r).counters.drops_for("wccp-md5-mismatch"), 3);
}

/// Two routers, two services (standard 0 and dynamic 91), L2 forwarding: each router answers
/// the HERE_I_AMs sent to it, from its own address.
#[test]
fn two_routers_two_services() {
    for router in [ROUTER, ROUTER2] {
        let mut e = RouterEngine::new();
        e.add_service(RouterServiceConfig::standard(0)).unwrap();
        e.add_service(RouterServiceConfig::dynamic(91)).unwrap();
        let r = replay("hia-hash-l2-std0-dyn91-2rtr", e, router);
        assert_eq!(r.replies.len(), 6);
        for (src, dst, isy) in &r.replies {
            assert_eq!((*src, *dst), (router, SQUID));
            assert_eq!(isy.identity.router.router_ip, router);
        }
        let services = r.engine.services();
        assert_eq!(services.len(), 2);
        for s in services {
            assert_eq!(s.router_ids, vec![router]);
            assert_eq!(s.counters.rx.here_i_am, 3);
        }
    }
}

/// Squid 7.6, hash, GRE: joins (echo 1 → usable), and its REDIRECT_ASSIGN (key 10.99.0.2/1,
/// Receive ID 2, change 1, all 256 buckets → Squid) is accepted and installed.
#[test]
fn squid_7_6_joins_and_its_hash_assignment_is_installed() {
    for (name, config, weight) in [
        (
            "s76-squid64-hash-gre-std0",
            RouterServiceConfig::standard(0),
            10000,
        ),
        (
            "s76-squid64-hash-gre-dyn90",
            RouterServiceConfig::dynamic(90),
            5000,
        ),
    ] {
        let r = replay(name, engine(config), ROUTER);
        let s = only_service(&r);
        let c = s.cache(SQUID).unwrap();
        assert!(c.usable && c.receive_id_echoed, "{name}");
        assert_eq!(c.methods, Some(Methods::default()));
        assert_eq!(c.weight, weight);
        assert_eq!(s.member_change_number, 1);
        assert_eq!(
            s.key,
            AssignmentKey {
                cache_ip: SQUID,
                change_number: 1
            }
        );
        assert!(c.designated);
        assert_eq!(c.buckets, 256);
        assert_eq!(s.counters.rx.redirect_assign, 1);
        assert_eq!(
            s.counters.rejects(DropReason::ReceiveIdMismatch),
            1,
            "only the first"
        );
        let installed = r
            .events
            .iter()
            .rev()
            .filter_map(|e| match e {
                RouterEvent::AssignmentChanged { assignment, .. } if !assignment.is_empty() => {
                    Some(assignment.clone())
                }
                _ => None,
            })
            .next()
            .expect("an assignment was installed");
        assert_eq!(installed.share_counts(), vec![(SQUID, 256)]);
        assert_eq!(installed.caches()[0].forwarding, ForwardingMethod::Gre);
        // After the assignment the Router View echoes the key and reports all 256 buckets.
        let (_, _, last) = r.replies.last().unwrap();
        assert_eq!(last.view.key, s.key);
        assert_eq!(last.view.caches.len(), 1);
        assert!(!last.view.caches[0].is_historical());
    }
}

/// The 2-cache REDIRECT_ASSIGN lists a cache the engine never saw (the responder invented
/// 10.99.0.5): its 86 buckets stay unassigned and the anomaly is counted.
#[test]
fn squid_7_6_assignment_with_an_unknown_cache() {
    let r = replay(
        "s76-squid64-hash-gre-std0-2caches",
        engine(RouterServiceConfig::standard(0)),
        ROUTER,
    );
    let s = only_service(&r);
    assert_eq!(s.assignment.share_counts(), vec![(SQUID, 170)]);
    assert_eq!(s.assignment.bucket_owners().unassigned(), 86);
    assert_eq!(s.counters.rejects(DropReason::AssignUnknownCache), 1);
}

/// Squid 7.6, mask, L2/L2 (standard 0, and dynamic 90 with MD5): with the cache marked
/// L2-adjacent it chooses L2/mask/L2 and its Alternate Assignment (64 values) is installed.
#[test]
fn squid_7_6_mask_l2_assignment_is_installed() {
    for (name, config) in [
        ("s76-squid64-mask-l2-std0", RouterServiceConfig::standard(0)),
        (
            "s76-squid64-mask-l2-dyn90-md5",
            RouterServiceConfig::dynamic(90).with_password(b"abcdefgh"),
        ),
    ] {
        let mut e = engine(config);
        e.set_l2_adjacent(t0(), SQUID, true);
        let r = replay(name, e, ROUTER);
        let s = only_service(&r);
        let c = s.cache(SQUID).unwrap();
        assert_eq!(
            c.methods,
            Some(Methods {
                forwarding: ForwardingMethod::L2,
                packet_return: ReturnMethod::L2,
                assignment: AssignmentMethod::Mask
            }),
            "{name}"
        );
        assert_eq!(c.mask_values, 64, "{name}");
        assert!(s.assignment.is_mask());
        let (_, _, last) = r.replies.last().unwrap();
        assert_eq!(
            last.assignment_map.as_ref().map(|m| m.sets[0].values.len()),
            Some(64)
        );
    }
    // Not adjacent: L2 is not offered, Squid's L2 choice is refused, nothing is installed.
    let r = replay(
        "s76-squid64-mask-l2-std0",
        engine(RouterServiceConfig::standard(0)),
        ROUTER,
    );
    let s = only_service(&r);
    assert_eq!(
        s.cache(SQUID).unwrap().phase,
        CachePhase::Unusable(DropReason::CapabilityUnsupported)
    );
    assert_eq!(s.counters.rejects(DropReason::AssignFromUnusableCache), 1);
    assert!(s.assignment.is_empty());
}

/// Appends `extra` to the body of the first component of type `kind` of a HERE_I_AM (or, with
/// `kind` = `None`, appends `extra` as components of its own), fixes the lengths, and signs it
/// with `password` if one is given. Other messages pass unchanged.
fn grow_hia(msg: &[u8], kind: Option<u16>, extra: &[u8], password: Option<&[u8]>) -> Vec<u8> {
    if Header::peek_type(msg) != Some(MessageType::HereIAm) {
        return msg.to_vec();
    }
    let be16 = |b: &[u8], at: usize| usize::from(u16::from_be_bytes([b[at], b[at + 1]]));
    let mut out = msg.to_vec();
    let at = match kind {
        None => out.len(),
        Some(kind) => {
            let mut off = 8;
            loop {
                let len = be16(&out, off + 2);
                if be16(&out, off) == usize::from(kind) {
                    let new_len = u16::try_from(len + extra.len()).expect("fits");
                    out[off + 2..off + 4].copy_from_slice(&new_len.to_be_bytes());
                    break off + 4 + len;
                }
                off += 4 + len;
            }
        }
    };
    out.splice(at..at, extra.iter().copied());
    let total = u16::try_from(be16(&out, 6) + extra.len()).expect("fits");
    out[6..8].copy_from_slice(&total.to_be_bytes());
    if let Some(pw) = password {
        Security::Md5(Password::new(pw))
            .sign(&mut out)
            .expect("has a digest field");
    }
    out
}

/// A Command Extension whose one command claims 8 data octets but has 0.
const BAD_COMMAND: [u8; 8] = [0x00, 0x0f, 0x00, 0x04, 0x00, 0x01, 0x00, 0x08];
/// An Address Table (v2.01) promising 5 addresses and carrying none.
const BAD_TABLE: [u8; 12] = [0x00, 0x11, 0x00, 0x08, 0x00, 0x01, 0x00, 0x04, 0, 0, 0, 5];
/// A TRANSMIT_T capability element 8 octets long (it must be 4).
const BAD_TRANSMIT_T: [u8; 12] = [0x00, 0x04, 0x00, 0x08, 0, 0, 0x27, 0x10, 0, 0, 0, 0];

/// Issue 13 item 8: HERE_I_AMs with malformed optional parts (a Command Extension, an Address
/// Table, a TRANSMIT_T element inside Capabilities) are still answered and the cache joins as
/// it does unmangled; each skipped part is counted. The MD5 digest covers the mangled octets.
#[test]
fn malformed_optional_components_are_skipped_not_fatal() {
    for (name, config, password, adjacent) in [
        (
            "s76-squid64-hash-gre-std0",
            RouterServiceConfig::standard(0),
            None,
            false,
        ),
        (
            "s76-squid64-mask-l2-dyn90-md5",
            RouterServiceConfig::dynamic(90).with_password(b"abcdefgh"),
            Some(&b"abcdefgh"[..]),
            true,
        ),
    ] {
        let mangle = |p: &[u8]| {
            let p = grow_hia(p, Some(8), &BAD_TRANSMIT_T, None);
            let mut tail = BAD_COMMAND.to_vec();
            tail.extend_from_slice(&BAD_TABLE);
            grow_hia(&p, None, &tail, password)
        };
        let mut e = engine(config.clone());
        e.set_l2_adjacent(t0(), SQUID, adjacent);
        let r = replay_with(name, e, ROUTER, &mangle);
        let s = only_service(&r);
        let hias = s.counters.rx.here_i_am;
        assert!(hias >= 3, "{name}");
        assert_eq!(r.replies.len() as u64, hias, "{name}: every one answered");
        assert_eq!(
            s.counters.rejects(DropReason::SkippedComponent),
            3 * hias,
            "{name}: three parts skipped per HERE_I_AM"
        );
        let c = s.cache(SQUID).unwrap();
        assert!(c.usable && c.receive_id_echoed, "{name}");
        assert!(!s.assignment.is_empty(), "{name}: its assignment followed");

        // The digest still covers the whole datagram: mangled but not re-signed is dropped.
        if password.is_some() {
            let unsigned = |p: &[u8]| grow_hia(p, None, &BAD_COMMAND, None);
            let r = replay_with(name, engine(config), ROUTER, &unsigned);
            let s = only_service(&r);
            assert!(r.replies.is_empty(), "{name}");
            assert_eq!(s.counters.drops_for("wccp-md5-mismatch"), hias, "{name}");
            assert_eq!(s.counters.rejects(DropReason::SkippedComponent), 0);
        }
    }
}

/// A malformed method choice (forwarding element of 8 octets) is not guessed past: the
/// HERE_I_AM is dropped as before, since an absent choice would mean GRE.
#[test]
fn malformed_method_capability_still_drops_the_here_i_am() {
    const BAD_FORWARDING: [u8; 12] = [0x00, 0x01, 0x00, 0x08, 0, 0, 0, 2, 0, 0, 0, 0];
    let mangle = |p: &[u8]| grow_hia(p, Some(8), &BAD_FORWARDING, None);
    let r = replay_with(
        "s76-squid64-hash-gre-std0",
        engine(RouterServiceConfig::standard(0)),
        ROUTER,
        &mangle,
    );
    assert!(r.replies.is_empty());
    let s = only_service(&r);
    assert!(s.cache(SQUID).is_none());
    let hias = capture("s76-squid64-hash-gre-std0")
        .iter()
        .filter(|p| Header::peek_type(&p.payload) == Some(MessageType::HereIAm))
        .count();
    assert_eq!(
        r.engine.counters().drops_for("wccp-bad-length"),
        hias as u64
    );
}
