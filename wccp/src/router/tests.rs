//! RouterEngine unit tests on synthetic messages (the Squid captures are replayed in
//! `tests/router_squid.rs`).

use core::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;
use crate::assign::{
    assign_hash, assign_mask, default_mask, BucketOwners, ValueOwners, WeightedCache,
};
use crate::engine::{AssignmentMethod, ForwardingMethod, ReturnMethod};
use crate::hash::FlowKey;
use crate::security::{Password, Security};
use crate::wire::{
    AlternateAssignment, AssignmentBody, AssignmentData, AssignmentInfo, AssignmentKey,
    AssignmentMethods, CapabilitiesInfo, Command, CommandExtension, ForwardingMethods,
    HashAssignmentData, HereIAm, ISeeYou, IdentityFlags, MaskAssignmentData, RedirectAssign,
    RedirectAssignment, RemovalQuery, ReturnMethods, RouterAssignmentElement, RouterIdElement,
    ServiceFlags, ServiceInfo, WebCacheIdentityElement, WebCacheViewInfo,
};

const R: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const C2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const C3: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

/// An arbitrary base instant: the engines never read the clock, tests need one origin.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn secs(base: Instant, s: u64) -> Instant {
    base + Duration::from_secs(s)
}

fn gre_hash() -> CapabilitiesInfo {
    CapabilitiesInfo::methods(
        ForwardingMethods::GRE,
        AssignmentMethods::HASH,
        ReturnMethods::GRE,
    )
}

/// A HERE_I_AM from `cache` echoing `echo` for router R.
fn hia(
    service: ServiceInfo,
    cache: Ipv4Addr,
    echo: Option<u32>,
    caps: Option<CapabilitiesInfo>,
    mask: bool,
) -> HereIAm {
    let data = if mask {
        AssignmentData::Mask(MaskAssignmentData {
            sets: vec![],
            weight: 0,
            status: 0,
        })
    } else {
        AssignmentData::Hash(HashAssignmentData {
            weight: 10000,
            ..HashAssignmentData::default()
        })
    };
    let view = WebCacheViewInfo {
        change_number: 1,
        routers: echo
            .map(|receive_id| RouterIdElement {
                router_ip: R,
                receive_id,
            })
            .into_iter()
            .collect(),
        caches: vec![],
    };
    let mut h = HereIAm::new(service, WebCacheIdentityElement::new(cache, data), view);
    h.capabilities = caps;
    h
}

fn bytes(security: &Security, m: crate::wire::Message) -> Vec<u8> {
    security.encode(&m).unwrap()
}

/// Every queued datagram.
fn drain(e: &mut RouterEngine, now: Instant) -> Vec<(Transmit, Vec<u8>)> {
    let mut out = vec![];
    let mut buf = vec![0xa5; 3];
    while let Some(t) = e.poll_transmit(now, &mut buf) {
        out.push((t, buf[..t.size].to_vec()));
    }
    out
}

fn events(e: &mut RouterEngine) -> Vec<RouterEvent> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

fn isy(b: &[u8]) -> ISeeYou {
    ISeeYou::try_from(&crate::wire::Message::decode(b).unwrap()).unwrap()
}

/// Joins `cache` (two HERE_I_AMs) and returns the last I_SEE_YOU.
fn join(
    e: &mut RouterEngine,
    now: Instant,
    svc: ServiceInfo,
    cache: Ipv4Addr,
    sec: &Security,
) -> ISeeYou {
    let first = hia(svc.clone(), cache, None, Some(gre_hash()), false);
    e.handle_message(now, cache, R, &bytes(sec, first.into_message()));
    let out = drain(e, now);
    let id = isy(&out[0].1).identity.router.receive_id;
    let second = hia(svc, cache, Some(id), Some(gre_hash()), false);
    e.handle_message(now, cache, R, &bytes(sec, second.into_message()));
    let out = drain(e, now);
    isy(&out[0].1)
}

fn engine(config: RouterServiceConfig) -> RouterEngine {
    let mut e = RouterEngine::new();
    e.add_service(config).unwrap();
    e
}

#[test]
fn two_way_handshake_makes_a_cache_usable() {
    let base = t0();
    let mut e = engine(RouterServiceConfig::standard(0));
    let sec = Security::None;
    e.handle_message(
        base,
        C2,
        R,
        &bytes(
            &sec,
            hia(ServiceInfo::standard(0), C2, None, Some(gre_hash()), false).into_message(),
        ),
    );
    let out = drain(&mut e, base);
    assert_eq!(out.len(), 1);
    let (t, b) = &out[0];
    assert_eq!((t.dst, t.src), (C2, R));
    let reply = isy(b);
    // §3.3: router ID = the address the cache talked to, Receive ID never 0, unicast.
    assert_eq!(
        reply.identity.router,
        RouterIdElement {
            router_ip: R,
            receive_id: 1
        }
    );
    assert_eq!(reply.identity.sent_to, R);
    assert_eq!(reply.identity.received_from, vec![C2]);
    // Not usable yet: the view is empty, change number 0.
    assert!(reply.view.caches.is_empty());
    assert_eq!(reply.view.member_change_number, 0);
    assert_eq!(
        reply.capabilities.unwrap(),
        CapabilitiesInfo::methods(
            ForwardingMethods::GRE,
            AssignmentMethods::HASH | AssignmentMethods::MASK,
            ReturnMethods::GRE
        ),
        "L2 is not offered to a cache that is not adjacent"
    );
    let s = e.service(0).unwrap();
    assert_eq!(s.caches[0].phase, CachePhase::Joining);
    assert!(!s.caches[0].receive_id_echoed);
    assert!(events(&mut e).is_empty());

    // Echo Receive ID 1: usable.
    e.handle_message(
        base,
        C2,
        R,
        &bytes(
            &sec,
            hia(
                ServiceInfo::standard(0),
                C2,
                Some(1),
                Some(gre_hash()),
                false,
            )
            .into_message(),
        ),
    );
    let reply = isy(&drain(&mut e, base)[0].1);
    assert_eq!(reply.identity.router.receive_id, 2);
    assert_eq!(reply.view.member_change_number, 1);
    assert_eq!(reply.view.routers, vec![R]);
    assert_eq!(reply.view.caches.len(), 1);
    let el = &reply.view.caches[0];
    assert_eq!(el.cache_ip, C2);
    assert!(el.is_historical(), "no assignment yet");
    assert_eq!(el.data.weight_status(), Some((10000, 0)));
    assert_eq!(
        reply.capabilities.unwrap().assignment(),
        Some(AssignmentMethods::HASH),
        "the first cache fixes the group's method"
    );
    let methods = Methods::default();
    let ev = events(&mut e);
    assert_eq!(
        ev[0],
        RouterEvent::CacheUsable {
            service: 0,
            cache: C2,
            methods
        }
    );
    // The (still empty) assignment now lists C2 as a member: its packets are never redirected.
    let RouterEvent::AssignmentChanged { assignment, .. } = &ev[1] else {
        panic!("{ev:?}")
    };
    assert!(assignment.is_empty() && assignment.is_member(C2));
    assert_eq!(ev.len(), 2);
    let s = e.service(0).unwrap();
    assert_eq!(s.usable_caches(), vec![C2]);
    assert_eq!(s.assignment_method, Some(AssignmentMethod::Hash));
    assert_eq!(s.counters.rx.here_i_am, 2);
    assert_eq!(s.counters.tx.i_see_you, 2);
    assert_eq!(s.counters.rejects(DropReason::ReceiveIdMismatch), 1);
    assert_eq!(s.router_ids, vec![R]);
    e.check_invariants().unwrap();
}

#[test]
fn a_cache_that_never_echoes_stays_joining() {
    let base = t0();
    let mut e = engine(RouterServiceConfig::standard(0));
    for i in 0..5u64 {
        let now = secs(base, 10 * i);
        // Squid 5.7 cannot parse I_SEE_YOUs and keeps echoing 0.
        e.handle_message(
            now,
            C2,
            R,
            &bytes(
                &Security::None,
                hia(ServiceInfo::standard(0), C2, Some(0), None, false).into_message(),
            ),
        );
        let out = drain(&mut e, now);
        assert_eq!(isy(&out[0].1).identity.router.receive_id, i as u32 + 1);
    }
    let s = e.service(0).unwrap();
    assert_eq!(s.caches[0].phase, CachePhase::Joining);
    assert!(s.usable_caches().is_empty());
    assert_eq!(s.counters.rejects(DropReason::ReceiveIdMismatch), 5);
    assert_eq!(s.member_change_number, 0);
}

#[test]
fn unknown_services_bad_passwords_and_junk_are_counted() {
    let base = t0();
    let mut e = engine(RouterServiceConfig::standard(0).with_password(b"secret"));
    let good = Security::Md5(Password::new(b"secret"));
    let bad = Security::Md5(Password::new(b"wrong"));
    let m = hia(ServiceInfo::standard(0), C2, None, None, false).into_message();
    e.handle_message(base, C2, R, &bytes(&bad, m.clone()));
    e.handle_message(base, C2, R, &bytes(&Security::None, m.clone()));
    let other = hia(ServiceInfo::standard(1), C2, None, None, false).into_message();
    e.handle_message(base, C2, R, &bytes(&good, other));
    e.handle_message(base, C2, R, &[0, 0, 0, 10, 2, 0, 0, 4, 1]);
    e.handle_message(base, C2, R, &[0, 0]);
    let isy_bytes = {
        let mut b = bytes(&good, m.clone());
        b[3] = 11;
        b
    };
    e.handle_message(base, C2, R, &isy_bytes);
    let dynamic = hia(
        ServiceInfo::dynamic(0, 6, 0, ServiceFlags::empty(), &[]),
        C2,
        None,
        None,
        false,
    );
    e.handle_message(base, C2, R, &bytes(&good, dynamic.into_message()));
    e.handle_message(base, C2, Ipv4Addr::new(224, 0, 0, 9), &bytes(&good, m));
    assert!(drain(&mut e, base).is_empty());
    let s = e.service(0).unwrap();
    assert!(s.caches.is_empty());
    assert_eq!(s.counters.drops_for("wccp-md5-mismatch"), 1);
    assert_eq!(s.counters.drops_for("wccp-security-mismatch"), 1);
    assert_eq!(s.counters.rejects(DropReason::ServiceTypeMismatch), 1);
    let c = e.counters();
    assert_eq!(c.rejects(DropReason::UnconfiguredService), 1);
    assert_eq!(c.drops_for("wccp-truncated"), 2);
    assert_eq!(c.rejects(DropReason::UnexpectedType), 1);
    assert_eq!(c.rejects(DropReason::MulticastUnsupported), 1);
    assert_eq!(c.rx.total(), 8);
}

#[test]
fn capabilities_and_l2_adjacency() {
    let base = t0();
    let mut e = engine(RouterServiceConfig::standard(0));
    let l2 = CapabilitiesInfo::methods(
        ForwardingMethods::L2,
        AssignmentMethods::HASH,
        ReturnMethods::GRE,
    );
    let send = |e: &mut RouterEngine, echo: Option<u32>, caps: &CapabilitiesInfo| {
        e.handle_message(
            base,
            C2,
            R,
            &bytes(
                &Security::None,
                hia(
                    ServiceInfo::standard(0),
                    C2,
                    echo,
                    Some(caps.clone()),
                    false,
                )
                .into_message(),
            ),
        );
        isy(&drain(e, base)[0].1)
    };
    let r = send(&mut e, None, &l2);
    let r = send(&mut e, Some(r.identity.router.receive_id), &l2);
    assert_eq!(
        e.service(0).unwrap().caches[0].phase,
        CachePhase::Unusable(DropReason::CapabilityUnsupported)
    );
    // Adjacent now: L2 is offered and accepted.
    e.set_l2_adjacent(base, C2, true);
    let r = send(&mut e, Some(r.identity.router.receive_id), &l2);
    assert_eq!(
        e.service(0).unwrap().caches[0]
            .methods
            .map(|m| m.forwarding),
        Some(ForwardingMethod::L2)
    );
    assert_eq!(
        r.capabilities.unwrap().forwarding(),
        Some(ForwardingMethods::GRE | ForwardingMethods::L2)
    );
    let _ = events(&mut e);
    // Not adjacent any more: unusable at once.
    e.set_l2_adjacent(base, C2, false);
    assert_eq!(
        events(&mut e)[0],
        RouterEvent::CacheLost {
            service: 0,
            cache: C2
        }
    );
    // Several bits are not a choice.
    let both = CapabilitiesInfo::methods(
        ForwardingMethods::GRE | ForwardingMethods::L2,
        AssignmentMethods::HASH,
        ReturnMethods::GRE,
    );
    let r = send(&mut e, Some(r.identity.router.receive_id), &both);
    assert!(e.service(0).unwrap().usable_caches().is_empty());
    // No Capabilities Info at all = GRE/hash/GRE, which is offered.
    e.handle_message(
        base,
        C2,
        R,
        &bytes(
            &Security::None,
            hia(
                ServiceInfo::standard(0),
                C2,
                Some(r.identity.router.receive_id),
                None,
                false,
            )
            .into_message(),
        ),
    );
    assert_eq!(e.service(0).unwrap().usable_caches(), vec![C2]);
}

#[test]
fn dynamic_definition_is_learnt_and_conflicts_rejected() {
    let base = t0();
    let mut e = engine(RouterServiceConfig::dynamic(90));
    let def = ServiceInfo::dynamic(90, 6, 240, ServiceFlags::SRC_IP_HASH, &[80, 443]);
    join(&mut e, base, def.clone(), C2, &Security::None);
    assert_eq!(e.service(90).unwrap().definition, Some(def.clone()));
    let other = ServiceInfo::dynamic(90, 6, 240, ServiceFlags::DST_IP_HASH, &[80]);
    e.handle_message(
        base,
        C3,
        R,
        &bytes(
            &Security::None,
            hia(other.clone(), C3, None, None, false).into_message(),
        ),
    );
    assert!(drain(&mut e, base).is_empty());
    let s = e.service(90).unwrap();
    assert_eq!(s.counters.rejects(DropReason::ServiceConflict), 1);
    assert!(s.cache(C3).is_none());
    // The I_SEE_YOU carries the learnt definition.
    let r = join(
        &mut e,
        base,
        def,
        Ipv4Addr::new(10, 0, 0, 4),
        &Security::None,
    );
    assert_eq!(
        r.service.flags,
        ServiceFlags::SRC_IP_HASH | ServiceFlags::PORTS_DEFINED
    );
    // Everyone leaves: the definition is forgotten, and the other one can be learnt.
    e.handle_timeout(secs(base, 31));
    assert_eq!(e.service(90).unwrap().definition, None);
    join(&mut e, secs(base, 32), other.clone(), C3, &Security::None);
    assert_eq!(e.service(90).unwrap().definition, Some(other));
}

/// Item 4 of issue 13: a stray HERE_I_AM with a wrong definition does not fix the group's
/// definition; the first cache that completes the handshake does.
#[test]
fn a_stray_here_i_am_does_not_fix_the_dynamic_definition() {
    let base = t0();
    let mut e = engine(RouterServiceConfig::dynamic(90));
    let wrong = ServiceInfo::dynamic(90, 17, 1, ServiceFlags::DST_IP_HASH, &[53]);
    let right = ServiceInfo::dynamic(90, 6, 240, ServiceFlags::SRC_IP_HASH, &[80, 443]);
    let stray = Ipv4Addr::new(10, 0, 0, 9);
    e.handle_message(
        base,
        stray,
        R,
        &bytes(
            &Security::None,
            hia(wrong.clone(), stray, None, None, false).into_message(),
        ),
    );
    // Answered (with its own definition, so a real cache could go on), but nothing learnt.
    assert_eq!(isy(&drain(&mut e, base)[0].1).service, wrong);
    assert_eq!(e.service(90).unwrap().definition, None);
    join(&mut e, secs(base, 1), right.clone(), C2, &Security::None);
    let s = e.service(90).unwrap();
    assert_eq!(s.definition, Some(right.clone()));
    assert_eq!(s.usable_caches(), vec![C2]);
    // The stray's next HERE_I_AM now conflicts.
    e.handle_message(
        secs(base, 2),
        stray,
        R,
        &bytes(
            &Security::None,
            hia(wrong, stray, None, None, false).into_message(),
        ),
    );
    assert!(drain(&mut e, secs(base, 2)).is_empty());
    let s = e.service(90).unwrap();
    assert_eq!(s.counters.rejects(DropReason::ServiceConflict), 1);
    assert_eq!(s.definition, Some(right));
}

/// A HERE_I_AM from `cache` echoing `echo` and carrying a SHUTDOWN of `target`.
fn shutdown_hia(cache: Ipv4Addr, echo: u32, target: Ipv4Addr) -> Vec<u8> {
    let mut h = hia(
        ServiceInfo::standard(0),
        cache,
        Some(echo),
        Some(gre_hash()),
        false,
    );
    h.command = Some(CommandExtension {
        commands: vec![Command::Shutdown(target)],
    });
    bytes(&Security::None, h.into_message())
}

/// Item 6 of issue 13: a cache's SHUTDOWN is acknowledged with SHUTDOWN_RESPONSE and takes
/// it out at once (new change number, CacheLost, new assignment), not after 30 s.
#[test]
fn shutdown_takes_the_cache_out_at_once() {
    let base = t0();
    let mut e = engine(RouterServiceConfig::standard(0));
    join(&mut e, base, ServiceInfo::standard(0), C2, &Security::None);
    join(&mut e, base, ServiceInfo::standard(0), C3, &Security::None);
    let _ = events(&mut e);
    let (before, members) = e.membership(0).unwrap();
    assert_eq!(members, vec![C2, C3]);
    let echo = e.cache(0, C2).unwrap().last_receive_id_sent.unwrap();

    // A SHUTDOWN naming another cache, or with a stale echo, is ignored.
    e.handle_message(secs(base, 1), C2, R, &shutdown_hia(C2, echo, C3));
    let echo = isy(&drain(&mut e, secs(base, 1))[0].1)
        .identity
        .router
        .receive_id;
    e.handle_message(secs(base, 1), C2, R, &shutdown_hia(C2, echo ^ 1, C2));
    let out = drain(&mut e, secs(base, 1));
    assert_eq!(isy(&out[0].1).command, None);
    assert_eq!(e.membership(0).unwrap(), (before, vec![C2, C3]));
    let echo = isy(&out[0].1).identity.router.receive_id;

    e.handle_message(secs(base, 2), C2, R, &shutdown_hia(C2, echo, C2));
    let out = drain(&mut e, secs(base, 2));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0.dst, out[0].0.src), (C2, R));
    // The reply parses as an I_SEE_YOU whose Command Extension is SHUTDOWN_RESPONSE(C2).
    let msg = crate::wire::Message::decode(&out[0].1).unwrap();
    let ack = msg.command_extension().expect("a Command Extension");
    assert_eq!(ack.commands, vec![Command::ShutdownResponse(C2)]);
    assert_eq!(
        ack.commands[0].kind(),
        crate::wire::CommandType::ShutdownResponse
    );
    let reply = ISeeYou::try_from(&msg).unwrap();
    assert!(reply.view.caches.iter().all(|c| c.cache_ip != C2));
    let (after, members) = e.membership(0).unwrap();
    assert_ne!(after, before);
    assert_eq!(reply.view.member_change_number, after);
    assert_eq!(members, vec![C3]);
    assert!(e.cache(0, C2).is_none());
    assert!(events(&mut e).contains(&RouterEvent::CacheLost {
        service: 0,
        cache: C2
    }));
    e.check_invariants().unwrap();
}

/// Item 3 of issue 13: a HERE_I_AM that does not echo the last Receive ID sent is answered
/// but otherwise ignored: no keepalive, no usability, no new timeout.
#[test]
fn a_stale_echo_is_not_a_keepalive() {
    let base = t0();
    let mut e = engine(RouterServiceConfig::standard(0));
    join(&mut e, base, ServiceInfo::standard(0), C2, &Security::None);
    let stale = e.cache(0, C2).unwrap().last_receive_id_sent.unwrap() ^ 0x8000;
    let send = |e: &mut RouterEngine, t: u64, cache: Ipv4Addr, echo: Option<u32>| {
        let h = hia(
            ServiceInfo::standard(0),
            cache,
            echo,
            Some(gre_hash()),
            false,
        );
        e.handle_message(
            secs(base, t),
            cache,
            R,
            &bytes(&Security::None, h.into_message()),
        );
        isy(&drain(e, secs(base, t))[0].1)
    };
    for t in [10, 20] {
        let reply = send(&mut e, t, C2, Some(stale));
        assert!(reply.view.caches.iter().any(|c| c.cache_ip == C2));
    }
    let c = e.cache(0, C2).unwrap();
    assert_eq!(c.last_seen, base, "not refreshed");
    assert_eq!(c.expires_at, Some(secs(base, 30)));
    assert_eq!(
        e.service(0)
            .unwrap()
            .counters
            .rejects(DropReason::ReceiveIdMismatch),
        3,
        "the first join message and both stale echoes"
    );
    // Still dropped 30 s after its last valid HERE_I_AM.
    e.handle_timeout(secs(base, 25));
    let out = drain(&mut e, secs(base, 25));
    assert_eq!(out.len(), 1, "queried at 25 s");
    RemovalQuery::try_from(&crate::wire::Message::decode(&out[0].1).unwrap()).unwrap();
    e.handle_timeout(secs(base, 30));
    assert!(e.cache(0, C2).is_none());
    assert!(e.membership(0).unwrap().1.is_empty());

    // A joining cache echoing a wrong ID never becomes usable, and is forgotten after 30 s.
    let id = send(&mut e, 40, C3, None).identity.router.receive_id;
    for t in [50, 60] {
        let reply = send(&mut e, t, C3, Some(id ^ 0x8000));
        assert!(reply.view.caches.is_empty());
    }
    assert_eq!(e.cache(0, C3).unwrap().phase, CachePhase::Joining);
    e.handle_timeout(secs(base, 70));
    assert!(e.cache(0, C3).is_none());
    e.check_invariants().unwrap();
}

/// Item 3 of issue 13: with a seed, Receive IDs are neither sequential nor shared between
/// caches: one cache's ID (or the next one after it) is no valid echo for another.
#[test]
fn seeded_receive_ids_are_unpredictable() {
    let base = t0();
    let first_ids = |seed| {
        let mut e = RouterEngine::with_seed(seed);
        e.add_service(RouterServiceConfig::standard(0)).unwrap();
        let h = hia(ServiceInfo::standard(0), C2, None, Some(gre_hash()), false);
        e.handle_message(base, C2, R, &bytes(&Security::None, h.into_message()));
        isy(&drain(&mut e, base)[0].1).identity.router.receive_id
    };
    assert_eq!(first_ids(1), first_ids(1), "reproducible from the seed");
    assert_ne!(first_ids(1), first_ids(2));
    assert_ne!(first_ids(1), 1);

    let mut e = RouterEngine::with_seed(0x5eed);
    e.add_service(RouterServiceConfig::standard(0)).unwrap();
    let send = |e: &mut RouterEngine, cache: Ipv4Addr, echo: Option<u32>| {
        let h = hia(
            ServiceInfo::standard(0),
            cache,
            echo,
            Some(gre_hash()),
            false,
        );
        e.handle_message(base, cache, R, &bytes(&Security::None, h.into_message()));
        isy(&drain(e, base)[0].1).identity.router.receive_id
    };
    let c3_first = send(&mut e, C3, None);
    let c2_first = send(&mut e, C2, None);
    // C3 guesses from what C2 was sent: the same value, or the next one.
    for guess in [c2_first, c2_first.wrapping_add(1), c3_first.wrapping_add(1)] {
        let _ = send(&mut e, C3, Some(guess));
        assert_eq!(e.cache(0, C3).unwrap().phase, CachePhase::Joining);
    }
    let c2_second = send(&mut e, C2, Some(c2_first));
    assert!(e.cache(0, C2).unwrap().usable, "the real echo works");
    assert!(![0, 1, c2_first.wrapping_add(1)].contains(&c2_second));
    e.check_invariants().unwrap();
}

#[test]
fn group_list_limits_who_joins() {
    let base = t0();
    let mut e = engine(RouterServiceConfig {
        group_list: Some(vec![C3.into()]),
        ..RouterServiceConfig::standard(0)
    });
    e.handle_message(
        base,
        C2,
        R,
        &bytes(
            &Security::None,
            hia(ServiceInfo::standard(0), C2, None, None, false).into_message(),
        ),
    );
    assert!(drain(&mut e, base).is_empty());
    assert_eq!(
        e.service(0)
            .unwrap()
            .counters
            .rejects(DropReason::NotInGroupList),
        1
    );
    join(&mut e, base, ServiceInfo::standard(0), C3, &Security::None);
    assert_eq!(e.service(0).unwrap().usable_caches(), vec![C3]);
    // Reconfiguring the list away drops the cache.
    e.reconfigure(
        base,
        RouterServiceConfig {
            group_list: Some(vec![]),
            ..RouterServiceConfig::standard(0)
        },
    )
    .unwrap();
    assert!(e.service(0).unwrap().caches.is_empty());
}

/// A hash REDIRECT_ASSIGN from `from` for the caches given, with router element values.
fn hash_ra(
    from: Ipv4Addr,
    caches: &[Ipv4Addr],
    receive_id: u32,
    change: u32,
    key_n: u32,
) -> RedirectAssign {
    let weighted: Vec<WeightedCache> = caches
        .iter()
        .map(|a| WeightedCache {
            address: *a,
            weight: 1,
        })
        .collect();
    let table = assign_hash(&weighted, &BucketOwners::NONE).unwrap();
    RedirectAssign::new(
        ServiceInfo::standard(0),
        RedirectAssignment::Hash(AssignmentInfo {
            key: AssignmentKey {
                cache_ip: from,
                change_number: key_n,
            },
            routers: vec![RouterAssignmentElement {
                router_ip: R,
                receive_id,
                change_number: change,
            }],
            buckets: table,
        }),
    )
}

/// How a Squid-like cache's first REDIRECT_ASSIGN fares.
#[derive(Clone, Copy, PartialEq)]
enum FirstAssign {
    Lost,
    StaleReceiveId,
}

/// Runs a Squid-like cache C2 against a router on a 1 s virtual clock: a HERE_I_AM every
/// 10 s echoing the last Receive ID, and a REDIRECT_ASSIGN 15 s after it sees a new Member
/// Change Number that lists it, never otherwise. Returns (when an assignment was first in
/// force, when the first one was sent), in seconds from the start.
fn squid_like_until_assigned(first: FirstAssign) -> (u64, u64) {
    let base = t0();
    let mut e = engine(RouterServiceConfig::standard(0));
    let sec = Security::None;
    let (mut echo, mut seen, mut due, mut sent) = (None, 0u32, None, vec![]);
    for t in 0..200 {
        let now = secs(base, t);
        e.handle_timeout(now);
        if t % 10 == 0 {
            let h = hia(ServiceInfo::standard(0), C2, echo, Some(gre_hash()), false);
            e.handle_message(now, C2, R, &bytes(&sec, h.into_message()));
            let reply = isy(&drain(&mut e, now)[0].1);
            echo = Some(reply.identity.router.receive_id);
            let n = reply.view.member_change_number;
            let listed = reply.view.caches.iter().any(|c| c.cache_ip == C2);
            assert!(!listed || n != 0, "§5: moved, never to 0");
            if n != seen && listed {
                seen = n;
                due = Some(t + 15);
            }
        }
        if due == Some(t) {
            due = None;
            sent.push(t);
            let rid = echo.unwrap_or(0);
            let ra = match (sent.len(), first) {
                (1, FirstAssign::Lost) => None,
                (1, FirstAssign::StaleReceiveId) => Some(hash_ra(C2, &[C2], rid ^ 1, seen, 1)),
                _ => Some(hash_ra(C2, &[C2], rid, seen, sent.len() as u32)),
            };
            if let Some(ra) = ra {
                e.handle_message(now, C2, R, &bytes(&sec, ra.into_message()));
            }
        }
        let _ = drain(&mut e, now);
        e.check_invariants().unwrap();
        if !e.assignment(0).unwrap().is_empty() {
            assert!(sent.len() >= 2, "the first assignment never counts");
            return (t, sent[0]);
        }
    }
    panic!("no assignment in force after 200 s; sent {sent:?}")
}

/// Item 1 of issue 13: the first REDIRECT_ASSIGN of a Squid-like cache is lost. At the flush
/// time the router moves the change number, the cache assigns again, and redirection starts
/// within one flush period of the flush.
#[test]
fn a_lost_assignment_is_replaced_after_the_flush_time() {
    let flush = crate::timer::TimerConfig::default()
        .assignment_flush()
        .as_secs();
    let (installed, first) = squid_like_until_assigned(FirstAssign::Lost);
    // The cache became usable at 10 s, which started the flush timer.
    assert_eq!(first, 10 + 15);
    assert!(installed > 10 + flush, "before the flush: {installed}");
    assert!(installed <= 10 + 2 * flush, "{installed}");
}

/// Item 1 of issue 13: a rejected REDIRECT_ASSIGN (stale Receive ID) with nothing in force
/// moves the change number at once, so the cache assigns again well before the flush time.
#[test]
fn a_rejected_assignment_is_replaced_before_the_flush_time() {
    let flush = crate::timer::TimerConfig::default()
        .assignment_flush()
        .as_secs();
    let (installed, first) = squid_like_until_assigned(FirstAssign::StaleReceiveId);
    assert_eq!(first, 10 + 15);
    assert!(installed < 10 + flush, "{installed}");
}

#[test]
fn redirect_assign_is_validated_and_installed() {
    let base = t0();
    let mut e = engine(RouterServiceConfig::standard(0));
    let sec = Security::None;
    join(&mut e, base, ServiceInfo::standard(0), C2, &sec);
    let r = join(&mut e, base, ServiceInfo::standard(0), C3, &sec);
    assert_eq!(r.view.member_change_number, 2);
    let _ = events(&mut e);
    let s = e.service(0).unwrap();
    let rid = s.cache(C2).unwrap().last_receive_id_sent.unwrap();
    let send = |e: &mut RouterEngine, from, ra: RedirectAssign| {
        e.handle_message(base, from, R, &bytes(&sec, ra.into_message()))
    };
    send(&mut e, C2, hash_ra(C2, &[C2, C3], rid + 1, 2, 1));
    send(&mut e, C2, hash_ra(C2, &[C2, C3], rid, 1, 1));
    let mut unlisted = hash_ra(C2, &[C2, C3], rid, 2, 1);
    if let RedirectAssignment::Hash(a) = &mut unlisted.assignment {
        a.routers[0].router_ip = Ipv4Addr::new(10, 0, 0, 99);
    }
    send(&mut e, C2, unlisted);
    send(
        &mut e,
        Ipv4Addr::new(10, 0, 0, 7),
        hash_ra(Ipv4Addr::new(10, 0, 0, 7), &[C2, C3], rid, 2, 1),
    );
    // From C3 but keyed with C2's address.
    send(&mut e, C3, hash_ra(C2, &[C2, C3], rid, 2, 1));
    let mask_sets = assign_mask(
        &[WeightedCache {
            address: C2,
            weight: 1,
        }],
        &default_mask(&ServiceInfo::standard(0)),
        7,
        &ValueOwners::default(),
    )
    .unwrap();
    let mask_ra = RedirectAssign::new(
        ServiceInfo::standard(0),
        RedirectAssignment::Alternate(AlternateAssignment {
            key: AssignmentKey {
                cache_ip: C2,
                change_number: 1,
            },
            routers: vec![RouterAssignmentElement {
                router_ip: R,
                receive_id: rid,
                change_number: 2,
            }],
            body: AssignmentBody::Mask(mask_sets),
        }),
    );
    send(&mut e, C2, mask_ra);
    assert!(events(&mut e).is_empty(), "nothing installed yet");
    let s = e.service(0).unwrap();
    assert_eq!(s.counters.rejects(DropReason::AssignStaleReceiveId), 1);
    assert_eq!(s.counters.rejects(DropReason::AssignStaleChangeNumber), 1);
    assert_eq!(s.counters.rejects(DropReason::AssignNotListed), 1);
    assert_eq!(s.counters.rejects(DropReason::AssignFromUnusableCache), 1);
    assert_eq!(s.counters.rejects(DropReason::AssignWrongMethod), 1);
    assert_eq!(s.counters.rejects(DropReason::AssignBadKey), 1);
    assert!(s.flush_deadline.is_some());

    // The valid one (and a cache list with one unknown cache, which is left unassigned).
    let stranger = Ipv4Addr::new(10, 0, 0, 9);
    send(&mut e, C2, hash_ra(C2, &[C2, C3, stranger], rid, 2, 7));
    let ev = events(&mut e);
    let [RouterEvent::AssignmentChanged {
        service: 0,
        assignment,
    }] = &ev[..]
    else {
        panic!("{ev:?}")
    };
    assignment.check_invariants().unwrap();
    assert_eq!(
        assignment.key(),
        AssignmentKey {
            cache_ip: C2,
            change_number: 7
        }
    );
    assert_eq!(assignment.share_counts(), vec![(C2, 86), (C3, 85)]);
    assert_eq!(assignment.bucket_owners().unassigned(), 85);
    let s = e.service(0).unwrap();
    assert_eq!(s.counters.rejects(DropReason::AssignUnknownCache), 1);
    assert_eq!(s.designated_cache, Some(C2));
    assert!(s.cache(C2).unwrap().designated);
    assert_eq!(s.cache(C3).unwrap().buckets, 85);
    assert_eq!(s.flush_deadline, None);
    // Lookup: §6.1 vector, dst 192.0.2.10 → bucket 200 → 200 mod 3 = 2 → the stranger (none).
    let flow = FlowKey::new(
        Ipv4Addr::new(10, 1, 1, 1),
        Ipv4Addr::new(192, 0, 2, 10),
        40000,
        80,
    );
    assert_eq!(assignment.lookup(&flow), None);
    let flow = FlowKey::new(
        Ipv4Addr::new(10, 1, 1, 1),
        Ipv4Addr::new(192, 0, 2, 11),
        40000,
        80,
    );
    assert_eq!(
        assignment.lookup(&flow).map(|t| t.address),
        Some(C2),
        "bucket 201 → index 0"
    );

    // The key is echoed and each cache's buckets are reported (MSB-first, U clear).
    e.handle_message(
        base,
        C3,
        R,
        &bytes(
            &sec,
            hia(
                ServiceInfo::standard(0),
                C3,
                Some(rid + 1),
                Some(gre_hash()),
                false,
            )
            .into_message(),
        ),
    );
    let r = isy(&drain(&mut e, base)[0].1);
    assert_eq!(
        r.view.key,
        AssignmentKey {
            cache_ip: C2,
            change_number: 7
        }
    );
    let el = r.view.caches.iter().find(|c| c.cache_ip == C3).unwrap();
    assert_eq!(el.flags, IdentityFlags::empty());
    let AssignmentData::Hash(h) = &el.data else {
        panic!()
    };
    assert_eq!(h.buckets.count(), 85);
    assert!(h.buckets.contains(1, crate::hash::BitOrder::MsbFirst));
    e.check_invariants().unwrap();
}

#[test]
fn silent_caches_are_queried_then_removed_and_purged() {
    let base = t0();
    let mut e = engine(RouterServiceConfig::standard(0));
    let sec = Security::None;
    join(&mut e, base, ServiceInfo::standard(0), C2, &sec);
    join(&mut e, base, ServiceInfo::standard(0), C3, &sec);
    let rid = e
        .service(0)
        .unwrap()
        .cache(C2)
        .unwrap()
        .last_receive_id_sent
        .unwrap();
    e.handle_message(
        base,
        C2,
        R,
        &bytes(&sec, hash_ra(C2, &[C2, C3], rid, 2, 1).into_message()),
    );
    let _ = events(&mut e);
    // C2 keeps talking, C3 goes silent.
    let mut echo = rid;
    for t in [10, 20] {
        e.handle_message(
            secs(base, t),
            C2,
            R,
            &bytes(
                &sec,
                hia(
                    ServiceInfo::standard(0),
                    C2,
                    Some(echo),
                    Some(gre_hash()),
                    false,
                )
                .into_message(),
            ),
        );
        echo = isy(&drain(&mut e, secs(base, t))[0].1)
            .identity
            .router
            .receive_id;
    }
    assert_eq!(e.poll_timeout(), Some(secs(base, 25)));
    e.handle_timeout(secs(base, 25));
    let out = drain(&mut e, secs(base, 25));
    assert_eq!(out.len(), 1);
    assert_eq!((out[0].0.dst, out[0].0.src), (C3, R));
    let q = RemovalQuery::try_from(&crate::wire::Message::decode(&out[0].1).unwrap()).unwrap();
    assert_eq!(q.query.target, C3);
    assert_eq!(q.query.router.router_ip, R);
    assert_eq!(
        q.query.router.receive_id,
        e.service(0)
            .unwrap()
            .cache(C3)
            .unwrap()
            .last_receive_id_sent
            .unwrap()
    );
    assert_eq!(e.service(0).unwrap().cache(C3).unwrap().queries_sent, 1);
    assert_eq!(e.poll_timeout(), Some(secs(base, 30)));
    e.handle_timeout(secs(base, 30));
    let ev = events(&mut e);
    assert_eq!(
        ev[0],
        RouterEvent::CacheLost {
            service: 0,
            cache: C3
        }
    );
    let RouterEvent::AssignmentChanged { assignment, .. } = &ev[1] else {
        panic!("{ev:?}")
    };
    // C3's buckets are purged at once (unassigned until the next REDIRECT_ASSIGN).
    assert_eq!(assignment.share_counts(), vec![(C2, 128)]);
    assert!(!assignment.is_member(C3));
    let s = e.service(0).unwrap();
    assert_eq!(s.member_change_number, 3);
    assert!(s.cache(C3).is_none());
    // No valid REDIRECT_ASSIGN within 50 s of that change: flushed.
    assert_eq!(s.flush_deadline, Some(secs(base, 80)));
    for t in (30..80).step_by(10) {
        let now = secs(base, t);
        e.handle_message(
            now,
            C2,
            R,
            &bytes(
                &sec,
                hia(
                    ServiceInfo::standard(0),
                    C2,
                    Some(echo),
                    Some(gre_hash()),
                    false,
                )
                .into_message(),
            ),
        );
        echo = isy(&drain(&mut e, now)[0].1).identity.router.receive_id;
        e.handle_timeout(now);
    }
    e.handle_timeout(secs(base, 80));
    let ev = events(&mut e);
    let [RouterEvent::AssignmentChanged { assignment, .. }] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert!(assignment.is_empty());
    let s = e.service(0).unwrap();
    assert_eq!(s.key, AssignmentKey::NONE);
    // C2 is still usable: the number moves so that it assigns again (issue 13 item 1).
    assert_eq!(s.member_change_number, 4);
    assert_eq!(s.flush_deadline, Some(secs(base, 130)));
    e.check_invariants().unwrap();
}

#[test]
fn mask_groups_report_squid_compatible_elements_and_the_map() {
    let base = t0();
    let mut e = engine(RouterServiceConfig::standard(0));
    e.set_l2_adjacent(base, C2, true);
    let caps = CapabilitiesInfo::methods(
        ForwardingMethods::L2,
        AssignmentMethods::MASK,
        ReturnMethods::L2,
    );
    let sec = Security::None;
    e.handle_message(
        base,
        C2,
        R,
        &bytes(
            &sec,
            hia(ServiceInfo::standard(0), C2, None, Some(caps.clone()), true).into_message(),
        ),
    );
    let id = isy(&drain(&mut e, base)[0].1).identity.router.receive_id;
    e.handle_message(
        base,
        C2,
        R,
        &bytes(
            &sec,
            hia(
                ServiceInfo::standard(0),
                C2,
                Some(id),
                Some(caps.clone()),
                true,
            )
            .into_message(),
        ),
    );
    let id = isy(&drain(&mut e, base)[0].1).identity.router.receive_id;
    let sets = assign_mask(
        &[WeightedCache {
            address: C2,
            weight: 0,
        }],
        &default_mask(&ServiceInfo::standard(0)),
        7,
        &ValueOwners::default(),
    )
    .unwrap();
    let ra = RedirectAssign::new(
        ServiceInfo::standard(0),
        RedirectAssignment::Alternate(AlternateAssignment {
            key: AssignmentKey {
                cache_ip: C2,
                change_number: 1,
            },
            routers: vec![RouterAssignmentElement {
                router_ip: R,
                receive_id: id,
                change_number: 1,
            }],
            body: AssignmentBody::Mask(sets.clone()),
        }),
    );
    e.handle_message(base, C2, R, &bytes(&sec, ra.into_message()));
    let a = e.assignment(0).unwrap();
    assert_eq!(a.share_counts(), vec![(C2, 64)]);
    assert_eq!(a.caches()[0].forwarding, ForwardingMethod::L2);
    assert_eq!(a.caches()[0].packet_return, ReturnMethod::L2);
    e.handle_message(
        base,
        C2,
        R,
        &bytes(
            &sec,
            hia(ServiceInfo::standard(0), C2, Some(id), Some(caps), true).into_message(),
        ),
    );
    let r = isy(&drain(&mut e, base)[0].1);
    assert_eq!(r.assignment_map.unwrap().sets, sets);
    let el = &r.view.caches[0];
    // Squid skips 16 octets unless the word after the address is 0x00000003 (§9).
    assert_eq!(el.wire_flags(), 0x0002);
    assert!(matches!(&el.data, AssignmentData::Mask(m) if m.sets.is_empty()));
    assert_eq!(e.service(0).unwrap().cache(C2).unwrap().mask_values, 64);
}

#[test]
fn at_most_32_caches_are_usable() {
    let base = t0();
    let mut e = engine(RouterServiceConfig::standard(0));
    for i in 0..33u8 {
        // One every 2 s: the 33rd first contact from one /24 at once would exceed the
        // network's I_SEE_YOU burst (issue 13 item 10).
        join(
            &mut e,
            secs(base, 2 * u64::from(i)),
            ServiceInfo::standard(0),
            Ipv4Addr::new(10, 1, 0, i),
            &Security::None,
        );
    }
    let s = e.service(0).unwrap();
    assert_eq!(s.usable_caches().len(), 32);
    assert_eq!(
        s.cache(Ipv4Addr::new(10, 1, 0, 32)).unwrap().phase,
        CachePhase::Unusable(DropReason::TooManyCaches)
    );
    e.check_invariants().unwrap();
}

#[test]
fn commands() {
    let base = t0();
    let mut e = RouterEngine::new();
    e.add_service(RouterServiceConfig::standard(0)).unwrap();
    assert_eq!(
        e.add_service(RouterServiceConfig::standard(0)),
        Err(ConfigError::DuplicateService(0))
    );
    assert_eq!(
        e.reconfigure(base, RouterServiceConfig::standard(5)),
        Err(ConfigError::UnknownService(5))
    );
    join(&mut e, base, ServiceInfo::standard(0), C2, &Security::None);
    // Reconfiguring away GRE makes the GRE cache unusable.
    e.reconfigure(
        base,
        RouterServiceConfig {
            forwarding: ForwardingMethods::L2,
            ..RouterServiceConfig::standard(0)
        },
    )
    .unwrap();
    assert!(e.service(0).unwrap().usable_caches().is_empty());
    let _ = events(&mut e);
    e.remove_service(0).unwrap();
    assert!(
        matches!(&events(&mut e)[..], [RouterEvent::AssignmentChanged { service: 0, assignment }] if assignment.is_empty())
    );
    assert_eq!(e.remove_service(0), Err(ConfigError::UnknownService(0)));
    assert_eq!(e.service_ids().count(), 0);
    assert_eq!(e.poll_timeout(), None);
}

/// Issue 13 item 16: a reload that grows the cache list or changes the password keeps the
/// members, the change number and the installed assignment; the next messages must be
/// signed with the new password.
#[test]
fn reconfigure_in_place_keeps_members_and_assignment() {
    let base = t0();
    let mut e = engine(RouterServiceConfig {
        group_list: Some(vec![C2.into(), C3.into()]),
        ..RouterServiceConfig::standard(0)
    });
    let sec = Security::None;
    join(&mut e, base, ServiceInfo::standard(0), C2, &sec);
    join(&mut e, base, ServiceInfo::standard(0), C3, &sec);
    let rid = e
        .service(0)
        .unwrap()
        .cache(C2)
        .unwrap()
        .last_receive_id_sent;
    e.handle_message(
        base,
        C2,
        R,
        &bytes(
            &sec,
            hash_ra(C2, &[C2, C3], rid.unwrap(), 2, 1).into_message(),
        ),
    );
    let before = e.service(0).unwrap();
    assert!(!before.assignment.is_empty());
    let _ = events(&mut e);

    let grown = RouterServiceConfig {
        group_list: Some(vec![
            C2.into(),
            C3.into(),
            Ipv4Addr::new(10, 0, 0, 4).into(),
        ]),
        ..RouterServiceConfig::standard(0)
    };
    e.reconfigure(secs(base, 1), grown.clone()).unwrap();
    let after = e.service(0).unwrap();
    assert!(
        events(&mut e).is_empty(),
        "nothing lost, nothing reinstalled"
    );
    assert_eq!(after.usable_caches(), vec![C2, C3]);
    assert_eq!(after.member_change_number, before.member_change_number);
    assert_eq!(after.assignment, before.assignment);

    // A new password: the caches' next HERE_I_AMs, signed with it, are accepted as keepalives.
    let new_sec = Security::Md5(Password::new(b"n3w"));
    e.reconfigure(secs(base, 2), grown.with_password(b"n3w"))
        .unwrap();
    let old_signed = hia(ServiceInfo::standard(0), C2, rid, Some(gre_hash()), false);
    e.handle_message(
        secs(base, 3),
        C2,
        R,
        &bytes(&sec, old_signed.into_message()),
    );
    assert!(drain(&mut e, secs(base, 3)).is_empty(), "unsigned: dropped");
    let rid = e
        .service(0)
        .unwrap()
        .cache(C2)
        .unwrap()
        .last_receive_id_sent;
    let signed = hia(ServiceInfo::standard(0), C2, rid, Some(gre_hash()), false);
    e.handle_message(
        secs(base, 4),
        C2,
        R,
        &bytes(&new_sec, signed.into_message()),
    );
    let out = drain(&mut e, secs(base, 4));
    assert_eq!(out.len(), 1);
    new_sec.verify(&out[0].1).unwrap();
    let s = e.service(0).unwrap();
    assert_eq!(s.cache(C2).unwrap().last_seen, secs(base, 4));
    assert_eq!(s.usable_caches(), vec![C2, C3]);
    assert_eq!(s.assignment, before.assignment);
    assert!(events(&mut e).is_empty());
    e.check_invariants().unwrap();
}

/// Issue 13 item 11: the receiving link marks a cache L2-adjacent only through a HERE_I_AM
/// that was authenticated and admitted; unauthenticated, spoofed or refused datagrams add
/// nothing, and an accepted one from off link takes the adjacency away.
#[test]
fn only_accepted_here_i_ams_record_l2_adjacency() {
    let base = t0();
    let mut e = engine(
        RouterServiceConfig {
            group_list: Some(vec![C2.into(), C3.into()]),
            ..RouterServiceConfig::standard(0)
        }
        .with_password(b"pw"),
    );
    let good = Security::Md5(Password::new(b"pw"));
    let bad = Security::Md5(Password::new(b"wrong"));
    let l2 = CapabilitiesInfo::methods(
        ForwardingMethods::L2,
        AssignmentMethods::HASH,
        ReturnMethods::L2,
    );
    let h = |cache, sec: &Security| {
        bytes(
            sec,
            hia(
                ServiceInfo::standard(0),
                cache,
                None,
                Some(l2.clone()),
                false,
            )
            .into_message(),
        )
    };
    let stranger = Ipv4Addr::new(10, 0, 0, 77);
    // Wrong password, an identity that is not the source, a cache outside the group list,
    // junk: none of them is adjacent afterwards.
    e.handle_message_on_link(base, C2, R, true, &h(C2, &bad));
    e.handle_message_on_link(base, C3, R, true, &h(C2, &good));
    e.handle_message_on_link(base, stranger, R, true, &h(stranger, &good));
    e.handle_message_on_link(base, C3, R, true, &[0, 0, 0, 10, 0]);
    assert!(drain(&mut e, base).is_empty());
    assert!(e.service(0).unwrap().caches.is_empty());
    assert!(e.adjacent.is_empty(), "{:?}", e.adjacent);

    // The real cache's authenticated HERE_I_AM: adjacent, and L2 is offered at once.
    e.handle_message_on_link(base, C2, R, true, &h(C2, &good));
    let out = drain(&mut e, base);
    let reply = isy(&out[0].1);
    assert_eq!(
        reply.capabilities.unwrap().forwarding(),
        Some(ForwardingMethods::GRE | ForwardingMethods::L2)
    );
    assert!(e.cache(0, C2).unwrap().l2_adjacent);
    // A spoofed one claiming C2 from off link (wrong password) cannot take it away…
    e.handle_message_on_link(secs(base, 1), C2, R, false, &h(C2, &bad));
    assert!(e.cache(0, C2).unwrap().l2_adjacent);
    // …an authenticated one can.
    e.handle_message_on_link(secs(base, 2), C2, R, false, &h(C2, &good));
    assert!(!e.cache(0, C2).unwrap().l2_adjacent);
    // A full set forgets caches no group tracks before it records a new one.
    for i in 0..MAX_ADJACENT as u32 {
        e.set_l2_adjacent(base, Ipv4Addr::from(0x0b00_0000 + i), true);
    }
    e.set_l2_adjacent(base, Ipv4Addr::new(12, 0, 0, 1), true);
    assert_eq!(e.counters().drops_for("wccp-adjacency-full"), 1);
    e.handle_message_on_link(secs(base, 3), C2, R, true, &h(C2, &good));
    assert_eq!(e.adjacent.iter().copied().collect::<Vec<_>>(), vec![C2]);
    e.check_invariants().unwrap();
}

/// Issue 13 item 10: 5000 spoofed HERE_I_AMs from 16 networks over 20 s. A real cache that
/// starts in the middle and echoes 10 s later, like Squid, still joins; the I_SEE_YOUs sent
/// to the spoofed sources stay within the group's budget, and the Joining caches tracked
/// within their bounds.
#[test]
fn a_here_i_am_flood_neither_blocks_a_real_cache_nor_gets_answered() {
    let base = t0();
    let mut e = engine(RouterServiceConfig::standard(0));
    let sec = Security::None;
    let spoofed = |i: u32| Ipv4Addr::new(10, 66, (i % 16) as u8, (i / 16 % 250 + 1) as u8);
    let (mut flood_answers, mut echo, mut sent) = (0u64, None, 0u32);
    for step in 0..200u32 {
        let now = base + Duration::from_millis(100 * u64::from(step));
        e.handle_timeout(now);
        for i in step * 25..(step + 1) * 25 {
            let src = spoofed(i);
            let h = hia(ServiceInfo::standard(0), src, None, Some(gre_hash()), false);
            e.handle_message(now, src, R, &bytes(&sec, h.into_message()));
        }
        // The real cache: first contact at 5 s, its echo at 15 s.
        if step == 50 || step == 150 {
            let h = hia(ServiceInfo::standard(0), C2, echo, Some(gre_hash()), false);
            e.handle_message(now, C2, R, &bytes(&sec, h.into_message()));
        }
        for (t, b) in drain(&mut e, now) {
            if t.dst == C2 {
                echo = Some(isy(&b).identity.router.receive_id);
                sent += 1;
            } else {
                flood_answers += 1;
            }
        }
        e.check_invariants().unwrap();
        let s = e.service(0).unwrap();
        let joining = s.caches.iter().filter(|c| !c.receive_id_echoed).count();
        assert!(joining <= MAX_JOINING, "{joining}");
    }
    assert_eq!(sent, 2, "both of the real cache's HERE_I_AMs answered");
    let s = e.service(0).unwrap();
    assert_eq!(s.usable_caches(), vec![C2]);
    assert!(events(&mut e).contains(&RouterEvent::CacheUsable {
        service: 0,
        cache: C2,
        methods: Methods::default(),
    }));
    // 20 s of budget: the burst and one every UNECHOED_EVERY.
    let budget = u64::from(UNECHOED_BURST) + 20_000 / UNECHOED_EVERY.as_millis() as u64;
    assert!(flood_answers <= budget, "{flood_answers} > {budget}");
    assert!(flood_answers > 0);
    assert!(s.counters.drops_for("wccp-i-see-you-rate-limited") >= 5000 - budget);
    assert!(s.counters.drops_for("wccp-joining-evicted") > 0);
    assert_eq!(s.counters.rejects(DropReason::TooManyCaches), 0);
}

/// Issue 13 item 10: one network's flood only displaces that network's own Joining caches,
/// the unanswered first, and never an echoed cache.
#[test]
fn joining_slots_are_per_network_and_spare_echoed_caches() {
    let base = t0();
    let mut e = engine(RouterServiceConfig::standard(0));
    let sec = Security::None;
    join(&mut e, base, ServiceInfo::standard(0), C2, &sec);
    for i in 0..200u8 {
        let src = Ipv4Addr::new(10, 0, 0, 10 + i % 240);
        let h = hia(ServiceInfo::standard(0), src, None, Some(gre_hash()), false);
        e.handle_message(secs(base, 1), src, R, &bytes(&sec, h.into_message()));
    }
    let other = Ipv4Addr::new(10, 0, 7, 2);
    let h = hia(
        ServiceInfo::standard(0),
        other,
        None,
        Some(gre_hash()),
        false,
    );
    e.handle_message(secs(base, 1), other, R, &bytes(&sec, h.into_message()));
    let s = e.service(0).unwrap();
    let in_net = |n: u8| {
        s.caches
            .iter()
            .filter(|c| c.address.octets()[2] == n && !c.receive_id_echoed)
            .count()
    };
    assert_eq!(in_net(0), JOINING_PER_NET);
    assert_eq!(in_net(7), 1);
    assert_eq!(s.usable_caches(), vec![C2], "the echoed cache stays");
    e.check_invariants().unwrap();
}

/// Issue 13 item 2: with a configured Router ID, a cache talking to two of our addresses (and
/// a second cache on another interface) sees one and the same Router ID; replies still come
/// from the address talked to, which is the "Sent To"; echoes and the REDIRECT_ASSIGN's
/// router element are found by the Router ID, as Squid and swcache send them.
#[test]
fn one_router_id_whichever_address_a_cache_talks_to() {
    let base = t0();
    let id = Ipv4Addr::new(10, 9, 9, 9);
    let r2 = Ipv4Addr::new(10, 0, 1, 1);
    let mut e = RouterEngine::new();
    e.set_router_id(id);
    e.add_service(RouterServiceConfig::standard(0)).unwrap();
    let sec = Security::None;
    let ask = |e: &mut RouterEngine, cache, local, echo: Option<u32>| {
        let mut h = hia(
            ServiceInfo::standard(0),
            cache,
            None,
            Some(gre_hash()),
            false,
        );
        h.view.routers = echo
            .map(|receive_id| RouterIdElement {
                router_ip: id,
                receive_id,
            })
            .into_iter()
            .collect();
        e.handle_message(base, cache, local, &bytes(&sec, h.into_message()));
        let out = drain(e, base);
        assert_eq!((out[0].0.src, out[0].0.dst), (local, cache));
        isy(&out[0].1)
    };
    let a = ask(&mut e, C2, R, None);
    let b = ask(&mut e, C2, r2, None);
    let c = ask(&mut e, Ipv4Addr::new(10, 0, 1, 2), r2, None);
    for (reply, local) in [(&a, R), (&b, r2), (&c, r2)] {
        assert_eq!(reply.identity.router.router_ip, id);
        assert_eq!(reply.identity.sent_to, local);
    }
    // C2 echoes (under the Router ID) what it got through R: usable.
    let d = ask(&mut e, C2, R, Some(a.identity.router.receive_id));
    assert_eq!(d.view.caches.len(), 1, "the echo was accepted");
    assert_eq!(e.service(0).unwrap().router_ids, vec![id]);
    let rid = d.identity.router.receive_id;
    let mut ra = hash_ra(C2, &[C2], rid, d.view.member_change_number, 1);
    if let RedirectAssignment::Hash(info) = &mut ra.assignment {
        info.routers[0].router_ip = id;
    }
    e.handle_message(base, C2, R, &bytes(&sec, ra.into_message()));
    assert_eq!(e.assignment(0).unwrap().share_counts(), vec![(C2, 256)]);
    // The data plane and the prober still use the address the cache talks to.
    assert_eq!(e.assignment(0).unwrap().caches()[0].router_id, R);
    e.check_invariants().unwrap();
}

/// Issue 13 item 5: swcache (the crate's `CacheEngine`) and a scripted Squid-like cache in one
/// group. The Squid-like cache elects the designated cache as Squid does (addresses compared
/// as little-endian host integers) and, worse than Squid, sends its assignment again every
/// 10 s while it thinks it is designated. Returns the router, the distinct assignment keys the
/// router installed (in order) and the time of the last change.
fn mixed_group(sw: Ipv4Addr, squid: Ipv4Addr) -> (RouterEngine, Vec<AssignmentKey>, Duration) {
    use crate::cache::{CacheConfig, CacheEngine, CacheServiceConfig};
    let base = t0();
    let sec = Security::None;
    let mut router = engine(RouterServiceConfig::standard(0));
    let config = CacheConfig::new(sw, vec![R])
        .with_service(CacheServiceConfig::new(ServiceInfo::standard(0)));
    let mut swcache = CacheEngine::new(base, config).unwrap();
    let le = |a: Ipv4Addr| u32::from_le_bytes(a.octets());
    let (mut echo, mut seen, mut due, mut sends) = (None::<u32>, 0u32, None::<u64>, 0u32);
    let mut view: Vec<Ipv4Addr> = vec![];
    let mut keys: Vec<AssignmentKey> = vec![];
    let mut last_change = Duration::ZERO;
    let mut buf = vec![];
    for tick in 0..3000u64 {
        let ms = tick * 100;
        let now = base + Duration::from_millis(ms);
        if router.poll_timeout().is_some_and(|t| t <= now) {
            router.handle_timeout(now);
        }
        if swcache.poll_timeout().is_some_and(|t| t <= now) {
            swcache.handle_timeout(now);
        }
        // The Squid-like cache: a HERE_I_AM every 10 s, an assignment 15 s after a new change
        // number lists it, repeated every 10 s while it elects itself.
        if ms % 10_000 == 0 {
            let h = hia(
                ServiceInfo::standard(0),
                squid,
                echo,
                Some(gre_hash()),
                false,
            );
            router.handle_message(now, squid, R, &bytes(&sec, h.into_message()));
        }
        let s = ms / 1000;
        if ms % 1000 == 0 && due.is_some_and(|d| s >= d) && view.contains(&squid) {
            let me_elected = view.iter().copied().min_by_key(|a| le(*a)) == Some(squid);
            if me_elected {
                sends += 1;
                let ra = hash_ra(squid, &view, echo.unwrap_or(0), seen, sends);
                router.handle_message(now, squid, R, &bytes(&sec, ra.into_message()));
            }
            due = Some(s + 10);
        }
        while let Some(t) = swcache.poll_transmit(now, &mut buf) {
            let data = buf[..t.size].to_vec();
            router.handle_message(now, sw, t.dst, &data);
        }
        while swcache.poll_event().is_some() {}
        for (t, data) in drain(&mut router, now) {
            if t.dst == sw {
                swcache.handle_message(now, R, &data);
            } else if t.dst == squid {
                let reply = isy(&data);
                echo = Some(reply.identity.router.receive_id);
                let n = reply.view.member_change_number;
                view = reply.view.caches.iter().map(|c| c.cache_ip).collect();
                if n != seen && view.contains(&squid) {
                    seen = n;
                    due = Some(s + 15);
                }
            }
        }
        for ev in events(&mut router) {
            if let RouterEvent::AssignmentChanged { assignment, .. } = ev {
                let k = assignment.key();
                if k.cache_ip != Ipv4Addr::UNSPECIFIED
                    && keys.last().map(|l| l.cache_ip) != Some(k.cache_ip)
                {
                    keys.push(k);
                    last_change = Duration::from_millis(ms);
                }
            }
        }
        router.check_invariants().unwrap();
    }
    (router, keys, last_change)
}

/// Elections disagree and both caches assign: the draft's choice (swcache) wins once and
/// keeps the group; the Squid-like cache's repeats are refused, never installed.
#[test]
fn mixed_group_converges_on_the_draft_elected_cache() {
    // Big-endian 10.0.3.2 < 10.0.4.1; little-endian 10.0.4.1 (0x0104000a) < 10.0.3.2.
    let (sw, squid) = (Ipv4Addr::new(10, 0, 3, 2), Ipv4Addr::new(10, 0, 4, 1));
    let (router, keys, last) = mixed_group(sw, squid);
    let owners: Vec<Ipv4Addr> = keys.iter().map(|k| k.cache_ip).collect();
    assert!(owners.last() == Some(&sw), "{owners:?}");
    assert!(owners.len() <= 2, "no flapping: {owners:?}");
    assert!(last < Duration::from_secs(60), "settled at {last:?}");
    let s = router.service(0).unwrap();
    assert_eq!(s.usable_caches().len(), 2);
    assert!(
        s.counters.rejects(DropReason::AssignCompeting) > 10,
        "{:?}",
        s.counters
    );
    let a = router.assignment(0).unwrap();
    assert_eq!(
        a.bucket_owners().counts().len(),
        2,
        "both caches hold buckets"
    );
}

/// Elections disagree and neither cache assigns (each elects the other): swcache steps in
/// after twice the assignment wait, and the group keeps its assignment.
#[test]
fn mixed_group_where_nobody_is_designated_gets_swcache_fallback() {
    let (sw, squid) = (Ipv4Addr::new(10, 0, 4, 1), Ipv4Addr::new(10, 0, 3, 2));
    let (router, keys, last) = mixed_group(sw, squid);
    let owners: Vec<Ipv4Addr> = keys.iter().map(|k| k.cache_ip).collect();
    assert_eq!(owners, vec![sw], "one assignment, from swcache");
    assert!(last < Duration::from_secs(90), "assigned at {last:?}");
    let a = router.assignment(0).unwrap();
    assert_eq!(
        a.bucket_owners().counts().len(),
        2,
        "both caches hold buckets"
    );
    assert_eq!(a.bucket_owners().unassigned(), 0);
}

/// Issue 13 item 6: a cache that leaves with SHUTDOWN loses its buckets at once but stays a
/// target (holding none) for the flows already on it, and a member (its own traffic is not
/// redirected), for `SHUTDOWN_DRAIN`, or until it is usable again.
#[test]
fn a_shut_down_cache_drains_its_flows() {
    let base = t0();
    let sec = Security::None;
    let mut e = engine(RouterServiceConfig::standard(0));
    join(&mut e, base, ServiceInfo::standard(0), C2, &sec);
    join(&mut e, base, ServiceInfo::standard(0), C3, &sec);
    let rid = e.cache(0, C2).unwrap().last_receive_id_sent.unwrap();
    let (n, _) = e.membership(0).unwrap();
    let ra = hash_ra(C2, &[C2, C3], rid, n, 1);
    e.handle_message(base, C2, R, &bytes(&sec, ra.into_message()));
    let a = e.assignment(0).unwrap();
    assert_eq!(a.bucket_owners().counts().len(), 2, "both hold buckets");
    let _ = drain(&mut e, base);
    let echo = e.cache(0, C3).unwrap().last_receive_id_sent.unwrap();
    let t1 = secs(base, 1);
    e.handle_message(t1, C3, R, &shutdown_hia(C3, echo, C3));
    let _ = drain(&mut e, t1);
    let a = e.assignment(0).unwrap();
    let owners = a.bucket_owners().counts();
    assert_eq!(owners.keys().copied().collect::<Vec<_>>(), vec![C2]);
    assert!(a.bucket_owners().unassigned() > 0, "C3's buckets are free");
    let draining = a
        .caches()
        .iter()
        .find(|c| c.address == C3)
        .expect("C3 drains");
    assert_eq!(draining.router_id, R);
    assert!(
        a.members().contains(&C3),
        "its own traffic is not redirected"
    );
    assert_eq!(e.membership(0).unwrap().1, vec![C2], "not in the view");
    e.check_invariants().unwrap();
    // Still there just before the drain ends, gone after.
    let end = t1 + group::SHUTDOWN_DRAIN;
    e.handle_timeout(end - Duration::from_secs(1));
    assert!(e
        .assignment(0)
        .unwrap()
        .caches()
        .iter()
        .any(|c| c.address == C3));
    assert!(e.poll_timeout().is_some_and(|t| t <= end));
    e.handle_timeout(end);
    let a = e.assignment(0).unwrap();
    assert!(a.caches().iter().all(|c| c.address != C3));
    assert!(!a.members().contains(&C3));
    e.check_invariants().unwrap();
}

/// The last cache of a group shutting down keeps its flows too; rejoining ends the drain.
#[test]
fn the_last_cache_drains_and_a_rejoin_ends_the_drain() {
    let base = t0();
    let sec = Security::None;
    let mut e = engine(RouterServiceConfig::standard(0));
    join(&mut e, base, ServiceInfo::standard(0), C2, &sec);
    let rid = e.cache(0, C2).unwrap().last_receive_id_sent.unwrap();
    let (n, _) = e.membership(0).unwrap();
    e.handle_message(
        base,
        C2,
        R,
        &bytes(&sec, hash_ra(C2, &[C2], rid, n, 1).into_message()),
    );
    let _ = drain(&mut e, base);
    let echo = e.cache(0, C2).unwrap().last_receive_id_sent.unwrap();
    e.handle_message(secs(base, 1), C2, R, &shutdown_hia(C2, echo, C2));
    let _ = drain(&mut e, secs(base, 1));
    let a = e.assignment(0).unwrap();
    assert!(!a.is_empty(), "the drain target stays installed");
    assert_eq!(a.bucket_owners().unassigned(), 256);
    assert!(a.caches().iter().any(|c| c.address == C2));
    e.check_invariants().unwrap();
    // It comes back: a member again, no longer draining; the assignment it made (still in
    // force) gives it its buckets back.
    join(&mut e, secs(base, 5), ServiceInfo::standard(0), C2, &sec);
    assert_eq!(e.membership(0).unwrap().1, vec![C2]);
    let a = e.assignment(0).unwrap();
    assert_eq!(a.caches().iter().filter(|c| c.address == C2).count(), 1);
    assert_eq!(a.bucket_owners().unassigned(), 0);
    e.check_invariants().unwrap();
}

const GROUP: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);

fn multicast_engine() -> RouterEngine {
    engine(RouterServiceConfig {
        multicast_group: Some(GROUP),
        ..RouterServiceConfig::standard(0)
    })
}

#[test]
fn a_multicast_here_i_am_is_answered_by_the_scheduled_i_see_you_to_the_group() {
    let base = t0();
    let mut e = multicast_engine();
    let sec = Security::None;
    let first = hia(ServiceInfo::standard(0), C2, None, Some(gre_hash()), false);
    e.handle_multicast(base, C2, GROUP, R, true, &bytes(&sec, first.into_message()));
    // Draft §4.1: no immediate answer, the next scheduled one 9 s ± 10 % later.
    assert!(drain(&mut e, base).is_empty());
    let due = e.poll_timeout().unwrap();
    let gap = due - base;
    assert!(
        (Duration::from_millis(8100)..=Duration::from_millis(9900)).contains(&gap),
        "{gap:?}"
    );
    e.handle_timeout(due);
    let out = drain(&mut e, due);
    assert_eq!(out.len(), 1);
    let (t, b) = &out[0];
    assert_eq!((t.dst, t.src), (GROUP, R));
    let i = isy(b);
    assert_eq!(i.identity.sent_to, GROUP);
    assert_eq!(i.identity.received_from, vec![C2]);
    assert_eq!(i.identity.router.router_ip, R);
    // The cache echoes it (to the group): usable, and shown as learnt by multicast.
    let id = i.identity.router.receive_id;
    let second = hia(
        ServiceInfo::standard(0),
        C2,
        Some(id),
        Some(gre_hash()),
        false,
    );
    e.handle_multicast(due, C2, GROUP, R, true, &bytes(&sec, second.into_message()));
    assert!(drain(&mut e, due).is_empty(), "still no unicast answer");
    let s = e.service(0).unwrap();
    assert_eq!(s.multicast_group, Some(GROUP));
    let c = s.cache(C2).unwrap();
    assert!(c.usable);
    assert_eq!(c.multicast, Some(GROUP));
    // The schedule goes on, jittered, and the next one lists the cache in the Router View.
    let next = e.poll_timeout().unwrap();
    let gap2 = next - due;
    assert!((Duration::from_millis(8100)..=Duration::from_millis(9900)).contains(&gap2));
    e.handle_timeout(next);
    let out = drain(&mut e, next);
    assert_eq!(out.len(), 1);
    let i = isy(&out[0].1);
    assert_eq!(i.view.caches.len(), 1);
    assert_ne!(i.identity.router.receive_id, id);
    // A REMOVAL_QUERY stays unicast, with the group as Sent To.
    let quiet = due + Duration::from_secs(26);
    e.handle_timeout(quiet);
    let q: Vec<_> = drain(&mut e, quiet)
        .into_iter()
        .filter(|(t, _)| t.dst == C2)
        .collect();
    assert_eq!(q.len(), 1);
    let rq = RemovalQuery::try_from(&crate::wire::Message::decode(&q[0].1).unwrap()).unwrap();
    assert_eq!(rq.query.sent_to, GROUP);
}

#[test]
fn unicast_and_multicast_caches_share_a_group_each_answered_its_way() {
    let base = t0();
    let mut e = multicast_engine();
    let sec = Security::None;
    let uni = hia(ServiceInfo::standard(0), C3, None, Some(gre_hash()), false);
    e.handle_message(base, C3, R, &bytes(&sec, uni.into_message()));
    let out = drain(&mut e, base);
    assert_eq!(out.len(), 1, "unicast: answered at once");
    assert_eq!(out[0].0.dst, C3);
    let multi = hia(ServiceInfo::standard(0), C2, None, Some(gre_hash()), false);
    e.handle_multicast(base, C2, GROUP, R, true, &bytes(&sec, multi.into_message()));
    assert!(drain(&mut e, base).is_empty());
    let due = e.poll_timeout().unwrap();
    e.handle_timeout(due);
    let out = drain(&mut e, due);
    assert_eq!(out.len(), 1);
    assert_eq!(
        isy(&out[0].1).identity.received_from,
        vec![C2],
        "only the group's"
    );
    assert_eq!(e.service(0).unwrap().cache(C3).unwrap().multicast, None);
}

#[test]
fn datagrams_to_another_group_or_a_group_not_configured_are_dropped() {
    let base = t0();
    let sec = Security::None;
    let m = || {
        bytes(
            &sec,
            hia(ServiceInfo::standard(0), C2, None, None, false).into_message(),
        )
    };
    // No group configured at all.
    let mut plain = engine(RouterServiceConfig::standard(0));
    plain.handle_multicast(base, C2, GROUP, R, true, &m());
    assert_eq!(
        plain.counters().rejects(DropReason::MulticastUnsupported),
        1
    );
    assert!(plain.service(0).unwrap().caches.is_empty());
    assert_eq!(plain.poll_timeout(), None);
    // Service 0 has GROUP, service 90 another group: service 0's HERE_I_AM to 90's group.
    let mut e = multicast_engine();
    let other = Ipv4Addr::new(239, 9, 9, 9);
    e.add_service(RouterServiceConfig {
        multicast_group: Some(other),
        ..RouterServiceConfig::dynamic(90)
    })
    .unwrap();
    assert_eq!(
        e.multicast_groups().collect::<Vec<_>>(),
        vec![(0, GROUP), (90, other)]
    );
    e.handle_multicast(base, C2, other, R, true, &m());
    assert_eq!(
        e.service(0)
            .unwrap()
            .counters
            .rejects(DropReason::MulticastUnsupported),
        1
    );
    assert!(e.service(0).unwrap().caches.is_empty());
}

#[test]
fn a_redirect_assign_sent_to_the_group_is_accepted() {
    let base = t0();
    let mut e = multicast_engine();
    let sec = Security::None;
    let first = hia(ServiceInfo::standard(0), C2, None, Some(gre_hash()), false);
    e.handle_multicast(base, C2, GROUP, R, true, &bytes(&sec, first.into_message()));
    let due = e.poll_timeout().unwrap();
    e.handle_timeout(due);
    let i = isy(&drain(&mut e, due)[0].1);
    let id = i.identity.router.receive_id;
    let second = hia(
        ServiceInfo::standard(0),
        C2,
        Some(id),
        Some(gre_hash()),
        false,
    );
    e.handle_multicast(due, C2, GROUP, R, true, &bytes(&sec, second.into_message()));
    let change = e.service(0).unwrap().member_change_number;
    let buckets = assign_hash(
        &[WeightedCache {
            address: C2,
            weight: 1,
        }],
        &BucketOwners::NONE,
    )
    .unwrap();
    let ra = RedirectAssign::new(
        ServiceInfo::standard(0),
        RedirectAssignment::Hash(AssignmentInfo {
            key: AssignmentKey {
                cache_ip: C2,
                change_number: 1,
            },
            routers: vec![RouterAssignmentElement {
                router_ip: R,
                receive_id: id,
                change_number: change,
            }],
            buckets,
        }),
    );
    let at = due + Duration::from_secs(15);
    e.handle_multicast(at, C2, GROUP, R, true, &bytes(&sec, ra.into_message()));
    let a = e.assignment(0).unwrap();
    assert!(!a.is_empty());
    assert_eq!(e.service(0).unwrap().cache(C2).unwrap().buckets, 256);
}
