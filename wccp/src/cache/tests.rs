//! CacheEngine unit tests, against hand-built router messages and a RouterEngine.

use core::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;
use crate::engine::{AssignmentMethod, ForwardingMethod, ReturnMethod};
use crate::router::{RouterEngine, RouterServiceConfig};
use crate::security::Security;
use crate::wire::{
    AssignmentMethods, CapabilitiesInfo, ForwardingMethods, HereIAm, ISeeYou, RedirectAssign,
    RedirectAssignment, RemovalQuery, ReturnMethods, RouterIdElement, RouterIdentityInfo,
    RouterQueryInfo, RouterViewInfo, ServiceInfo,
};

const R1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const R2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
const C2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const C3: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn at(base: Instant, ms: u64) -> Instant {
    base + Duration::from_millis(ms)
}

fn cache(address: Ipv4Addr, routers: &[Ipv4Addr]) -> CacheConfig {
    CacheConfig::new(address, routers.to_vec())
        .with_service(CacheServiceConfig::new(ServiceInfo::standard(0)))
}

fn drain(e: &mut CacheEngine, now: Instant) -> Vec<(Transmit, Message)> {
    let mut out = vec![];
    let mut buf = vec![];
    while let Some(t) = e.poll_transmit(now, &mut buf) {
        out.push((t, Message::decode(&buf[..t.size]).unwrap()));
    }
    out
}

fn events(e: &mut CacheEngine) -> Vec<CacheEvent> {
    std::iter::from_fn(|| e.poll_event()).collect()
}

/// A hand-built I_SEE_YOU from router `r` to `to` listing `caches` as usable.
fn isy(
    r: Ipv4Addr,
    to: Ipv4Addr,
    receive_id: u32,
    change: u32,
    caches: &[Ipv4Addr],
    caps: Option<CapabilitiesInfo>,
) -> Vec<u8> {
    let view = RouterViewInfo {
        member_change_number: change,
        key: crate::wire::AssignmentKey::NONE,
        routers: vec![r],
        caches: caches
            .iter()
            .map(|c| {
                crate::wire::WebCacheIdentityElement::new(
                    *c,
                    crate::wire::AssignmentData::Hash(crate::wire::HashAssignmentData::default()),
                )
            })
            .collect(),
    };
    let identity = RouterIdentityInfo {
        router: RouterIdElement {
            router_ip: r,
            receive_id,
        },
        sent_to: r,
        received_from: vec![to],
    };
    let mut m = ISeeYou::new(ServiceInfo::standard(0), identity, view);
    m.capabilities = caps;
    m.into_message().encode().unwrap()
}

#[test]
fn here_i_am_schedule_and_content() {
    let base = t0();
    let mut e = CacheEngine::new(base, cache(C2, &[R1, R2])).unwrap();
    assert_eq!(e.poll_timeout(), Some(base));
    e.handle_timeout(base);
    let out = drain(&mut e, base);
    assert_eq!(out.len(), 2);
    for ((t, m), r) in out.iter().zip([R1, R2]) {
        assert_eq!((t.src, t.dst), (C2, r));
        let h = HereIAm::try_from(m).unwrap();
        assert_eq!(h.identity.cache_ip, C2);
        assert_eq!(h.identity.data.weight_status(), Some((10000, 0)));
        assert!(
            h.view.routers.is_empty(),
            "[R1]: unheard routers are not listed"
        );
        assert_eq!(
            h.capabilities,
            Some(CapabilitiesInfo::methods(
                ForwardingMethods::GRE,
                AssignmentMethods::HASH,
                ReturnMethods::GRE
            ))
        );
    }
    assert_eq!(e.poll_timeout(), Some(at(base, 10_000)));
    e.handle_timeout(at(base, 9_999));
    assert!(drain(&mut e, base).is_empty());
    e.handle_timeout(at(base, 10_000));
    assert_eq!(drain(&mut e, base).len(), 2);
}

#[test]
fn first_i_see_you_is_echoed_at_once() {
    let base = t0();
    let mut e = CacheEngine::new(base, cache(C2, &[R1])).unwrap();
    e.handle_timeout(base);
    let _ = drain(&mut e, base);
    e.handle_message(base, R1, &isy(R1, C2, 7, 0, &[], None));
    let out = drain(&mut e, base);
    assert_eq!(out.len(), 1);
    let h = HereIAm::try_from(&out[0].1).unwrap();
    assert_eq!(
        h.view.routers,
        vec![RouterIdElement {
            router_ip: R1,
            receive_id: 7
        }]
    );
    assert!(events(&mut e).is_empty(), "not yet usable at the router");
    // Listed in the next one: usable there, designated (the only cache), RA in 15 s.
    e.handle_message(at(base, 10), R1, &isy(R1, C2, 8, 1, &[C2], None));
    assert!(
        drain(&mut e, base).is_empty(),
        "later I_SEE_YOUs wait for the period"
    );
    assert_eq!(
        events(&mut e),
        vec![
            CacheEvent::RouterUp {
                service: 0,
                router: R1,
                methods: Methods::default()
            },
            CacheEvent::DesignatedChanged {
                service: 0,
                designated: true
            },
        ]
    );
    let s = e.service(0).unwrap();
    assert!(s.designated);
    assert_eq!(s.assign_at, Some(at(base, 15_010)));
    assert_eq!(s.caches, vec![C2]);
    let r = s.router(R1).unwrap();
    assert!(r.alive && r.usable_here);
    assert_eq!(r.receive_id, 8);
    assert!(s.view_change_number >= 2);
    // 15 s later: REDIRECT_ASSIGN with the router's Receive ID and change number.
    e.handle_timeout(at(base, 15_010));
    let out = drain(&mut e, base);
    let ra = out
        .iter()
        .find_map(|(_, m)| RedirectAssign::try_from(m).ok())
        .unwrap();
    let RedirectAssignment::Hash(info) = ra.assignment else {
        panic!()
    };
    assert_eq!(
        info.key,
        crate::wire::AssignmentKey {
            cache_ip: C2,
            change_number: 1
        }
    );
    assert_eq!(info.routers[0].receive_id, 8);
    assert_eq!(info.routers[0].change_number, 1);
    assert_eq!(info.buckets.bucket_counts(), vec![256]);
    // The router keeps echoing no key: resent after 10 s, then every 10 s.
    e.handle_message(at(base, 20_000), R1, &isy(R1, C2, 9, 1, &[C2], None));
    e.handle_timeout(at(base, 25_010));
    let resent: Vec<_> = drain(&mut e, base)
        .into_iter()
        .filter_map(|(_, m)| RedirectAssign::try_from(&m).ok())
        .collect();
    assert_eq!(resent.len(), 1);
    let RedirectAssignment::Hash(again) = &resent[0].assignment else {
        panic!()
    };
    assert_eq!(again.key.change_number, 1, "same assignment");
    assert_eq!(again.routers[0].receive_id, 9, "fresh Receive ID");
    assert_eq!(
        e.service(0)
            .unwrap()
            .counters
            .drops_for("wccp-assignment-resent"),
        1
    );
}

#[test]
fn capability_choice_follows_preferences() {
    let base = t0();
    let mut config = cache(C2, &[R1]);
    config.forwarding = vec![ForwardingMethod::L2, ForwardingMethod::Gre];
    config.assignment = vec![AssignmentMethod::Mask, AssignmentMethod::Hash];
    let mut e = CacheEngine::new(base, config).unwrap();
    let offer = CapabilitiesInfo::methods(
        ForwardingMethods::GRE | ForwardingMethods::L2,
        AssignmentMethods::HASH,
        ReturnMethods::GRE | ReturnMethods::L2,
    );
    e.handle_message(base, R1, &isy(R1, C2, 1, 0, &[], Some(offer)));
    let h = HereIAm::try_from(&drain(&mut e, base)[0].1).unwrap();
    assert_eq!(
        h.capabilities,
        Some(CapabilitiesInfo::methods(
            ForwardingMethods::L2,
            AssignmentMethods::HASH,
            ReturnMethods::GRE
        ))
    );
    let m = e.service(0).unwrap().router(R1).unwrap().methods.unwrap();
    assert_eq!(
        (m.forwarding, m.packet_return, m.assignment),
        (
            ForwardingMethod::L2,
            ReturnMethod::Gre,
            AssignmentMethod::Hash
        )
    );
    // A router offering only L2 return to a GRE-only cache: incompatible.
    let mut e = CacheEngine::new(base, cache(C2, &[R1])).unwrap();
    let l2 = CapabilitiesInfo::methods(
        ForwardingMethods::GRE,
        AssignmentMethods::HASH,
        ReturnMethods::L2,
    );
    e.handle_message(base, R1, &isy(R1, C2, 1, 0, &[], Some(l2)));
    assert_eq!(
        events(&mut e),
        vec![CacheEvent::Incompatible {
            service: 0,
            router: R1
        }]
    );
    assert!(e.service(0).unwrap().router(R1).unwrap().incompatible);
}

#[test]
fn removal_query_is_answered_three_times() {
    let base = t0();
    let mut e = CacheEngine::new(base, cache(C2, &[R1])).unwrap();
    let q = |target| {
        let query = RouterQueryInfo {
            router: RouterIdElement {
                router_ip: R1,
                receive_id: 4,
            },
            sent_to: R1,
            target,
        };
        RemovalQuery::new(ServiceInfo::standard(0), query)
            .into_message()
            .encode()
            .unwrap()
    };
    e.handle_message(base, R1, &q(C3));
    assert_eq!(
        e.service(0)
            .unwrap()
            .counters
            .rejects(DropReason::QueryWrongTarget),
        1
    );
    e.handle_message(base, R1, &q(C2));
    let mut sent = vec![];
    for ms in [0, 1000, 2000, 3000] {
        e.handle_timeout(at(base, ms));
        sent.extend(drain(&mut e, base).into_iter().map(|(t, _)| (ms, t.dst)));
    }
    // One at once, then 1 s and 2 s later (plus the periodic one at 0).
    assert_eq!(sent, vec![(0, R1), (0, R1), (1000, R1), (2000, R1)]);
}

#[test]
fn foreign_and_unknown_messages_are_dropped() {
    let base = t0();
    let mut e = CacheEngine::new(base, cache(C2, &[R1])).unwrap();
    e.handle_message(base, R1, &isy(R1, C3, 1, 0, &[], None));
    e.handle_message(base, R2, &{
        let mut m = isy(R2, C2, 1, 0, &[], None);
        // sent_to must not name a configured router either
        m.truncate(m.len());
        m
    });
    e.handle_message(base, R1, &[0, 0, 0, 10, 2, 0, 0, 0]);
    e.handle_message(base, R1, &[1]);
    let s = e.service(0).unwrap();
    assert_eq!(s.counters.rejects(DropReason::NotForUs), 1);
    assert_eq!(s.counters.rejects(DropReason::UnknownRouter), 1);
    assert_eq!(e.counters().rejects(DropReason::UnexpectedType), 1);
    assert_eq!(e.counters().drops_for("wccp-truncated"), 1);
    assert!(!e.service(0).unwrap().router(R1).unwrap().alive);
}

#[test]
fn routers_are_forgotten_after_30_s() {
    let base = t0();
    let mut e = CacheEngine::new(base, cache(C2, &[R1])).unwrap();
    e.handle_message(base, R1, &isy(R1, C2, 1, 1, &[C2], None));
    let _ = events(&mut e);
    e.handle_timeout(at(base, 30_000));
    let ev = events(&mut e);
    assert!(
        ev.contains(&CacheEvent::RouterDown {
            service: 0,
            router: R1
        }),
        "{ev:?}"
    );
    assert!(ev.contains(&CacheEvent::DesignatedChanged {
        service: 0,
        designated: false
    }));
    assert!(!e.service(0).unwrap().router(R1).unwrap().alive);
}

/// Shuttles datagrams between one router engine and caches until quiet (no loss).
fn pump(now: Instant, router: &mut RouterEngine, caches: &mut [&mut CacheEngine]) {
    let mut buf = vec![];
    loop {
        let mut moved = false;
        for c in caches.iter_mut() {
            while let Some(t) = c.poll_transmit(now, &mut buf) {
                router.handle_message(now, t.src, t.dst, &buf[..t.size]);
                moved = true;
            }
        }
        while let Some(t) = router.poll_transmit(now, &mut buf) {
            if let Some(c) = caches.iter_mut().find(|c| c.config().address == t.dst) {
                c.handle_message(now, t.src, &buf[..t.size]);
            }
            moved = true;
        }
        if !moved {
            break;
        }
    }
}

#[test]
fn with_a_router_engine_the_lowest_cache_assigns() {
    let base = t0();
    let mut router = RouterEngine::new();
    router
        .add_service(RouterServiceConfig::standard(0).with_password(b"pw"))
        .unwrap();
    let with_pw = |c: CacheConfig| CacheConfig {
        services: vec![CacheServiceConfig::new(ServiceInfo::standard(0)).with_password(b"pw")],
        ..c
    };
    let mut a = CacheEngine::new(base, with_pw(cache(C3, &[R1]))).unwrap();
    let mut b = CacheEngine::new(base, with_pw(cache(C2, &[R1]))).unwrap();
    let mut now = base;
    for _ in 0..40 {
        router.handle_timeout(now);
        a.handle_timeout(now);
        b.handle_timeout(now);
        pump(now, &mut router, &mut [&mut a, &mut b]);
        now += Duration::from_secs(1);
    }
    let s = router.service(0).unwrap();
    assert_eq!(s.usable_caches(), vec![C2, C3]);
    assert_eq!(s.designated_cache, Some(C2));
    assert_eq!(s.assignment.share_counts(), vec![(C2, 128), (C3, 128)]);
    assert!(b.service(0).unwrap().designated);
    assert!(!a.service(0).unwrap().designated);
    assert_eq!(a.service(0).unwrap().designated_cache, Some(C2));
    assert_eq!(
        b.service(0).unwrap().router(R1).unwrap().key,
        s.key,
        "key echoed"
    );
    assert_eq!(Security::None.option(), crate::wire::SecurityOption::None);
}

#[test]
fn commands_and_reconfiguration() {
    let base = t0();
    let mut e = CacheEngine::new(base, cache(C2, &[R1])).unwrap();
    assert_eq!(
        e.add_service(base, CacheServiceConfig::new(ServiceInfo::standard(0))),
        Err(ConfigError::DuplicateService(0))
    );
    let dynamic = ServiceInfo::dynamic(90, 6, 0, crate::wire::ServiceFlags::DST_IP_HASH, &[8080]);
    e.add_service(base, CacheServiceConfig::new(dynamic))
        .unwrap();
    e.handle_timeout(base);
    assert_eq!(drain(&mut e, base).len(), 2, "one HERE_I_AM per service");
    e.handle_message(base, R1, &isy(R1, C2, 1, 1, &[C2], None));
    // A second router, a changed weight: service 0 keeps its state, gains the router.
    let mut config = e.config().clone();
    config.routers.push(R2);
    config.weight = 5000;
    e.reconfigure(base, config).unwrap();
    let s = e.service(0).unwrap();
    assert_eq!(s.routers.len(), 2);
    assert!(s.router(R1).unwrap().alive, "kept");
    e.handle_timeout(at(base, 10_000));
    let out = drain(&mut e, base);
    let to_r2 = out.iter().find(|(t, _)| t.dst == R2).unwrap();
    let h = HereIAm::try_from(&to_r2.1).unwrap();
    assert_eq!(h.identity.data.weight_status(), Some((5000, 0)));
    e.remove_service(90).unwrap();
    assert_eq!(e.remove_service(90), Err(ConfigError::UnknownService(90)));
    assert_eq!(e.services().len(), 1);
    let mut bad = e.config().clone();
    bad.assignment.clear();
    assert!(e.reconfigure(base, bad).is_err());
}

/// Multicast mode end to end against the router engine: the cache knows no router, sends
/// to the group, learns the router from its scheduled I_SEE_YOU, becomes usable and, as
/// designated cache, assigns through the group.
#[test]
fn multicast_mode_learns_the_router_and_assigns_through_the_group() {
    let base = t0();
    let group = Ipv4Addr::new(239, 1, 2, 3);
    let mut cfg = cache(C2, &[]);
    cfg.multicast_group = Some(group);
    let mut c = CacheEngine::new(base, cfg).unwrap();
    let mut r = RouterEngine::new();
    r.add_service(RouterServiceConfig {
        multicast_group: Some(group),
        ..RouterServiceConfig::standard(0)
    })
    .unwrap();
    let mut now = base;
    let mut buf = vec![];
    let mut seen_group_assign = false;
    let mut router_up = false;
    while now < base + Duration::from_secs(80) && r.assignment(0).unwrap().is_empty() {
        c.handle_timeout(now);
        r.handle_timeout(now);
        for _ in 0..4 {
            while let Some(t) = c.poll_transmit(now, &mut buf) {
                assert_eq!(t.dst, group, "everything the cache sends goes to the group");
                let kind = Header::peek_type(&buf[..t.size]).unwrap();
                seen_group_assign |= kind == MessageType::RedirectAssign;
                r.handle_multicast(now, C2, group, R1, true, &buf[..t.size]);
            }
            while let Some(t) = r.poll_transmit(now, &mut buf) {
                c.handle_message(now, t.src, &buf[..t.size]);
            }
        }
        router_up |= events(&mut c)
            .iter()
            .any(|e| matches!(e, CacheEvent::RouterUp { router, .. } if *router == R1));
        now += Duration::from_millis(100);
    }
    assert!(router_up, "the router was learnt and lists the cache");
    assert!(seen_group_assign);
    let s = r.service(0).unwrap();
    assert_eq!(s.cache(C2).unwrap().buckets, 256);
    assert_eq!(s.cache(C2).unwrap().multicast, Some(group));
    assert_eq!(
        c.service(0)
            .unwrap()
            .counters
            .drops_for("wccp-router-learnt"),
        1
    );
    // Well within 2 HERE_I_AM periods + the schedule + the 15 s assignment wait.
    assert!(now < base + Duration::from_secs(45), "{:?}", now - base);
}

#[test]
fn a_multicast_group_must_be_a_usable_group_address() {
    for (g, ok) in [
        ([239, 1, 1, 1], true),
        ([224, 0, 0, 1], false),
        ([10, 0, 0, 9], false),
    ] {
        let mut cfg = cache(C2, &[]);
        cfg.multicast_group = Some(g.into());
        assert_eq!(cfg.validate().is_ok(), ok, "{g:?}");
    }
}
