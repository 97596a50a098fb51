//! Issue 17 item 3: TRANSMIT_T and timer scales (\[R1\] capabilities 4 and 5) negotiated between
//! the router engine and caches that ask for them.

use core::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;
use crate::cache::{CacheConfig, CacheEngine, CacheServiceConfig};
use crate::engine::DropReason;
use crate::security::Security;
use crate::timer::TimerConfig;
use crate::wire::{
    AssignmentData, AssignmentMethods, CapabilitiesInfo, Capability, ForwardingMethods,
    HashAssignmentData, HereIAm, ISeeYou, Message, ReturnMethods, RouterIdElement, ServiceInfo,
    WebCacheIdentityElement, WebCacheViewInfo,
};

const R: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const C2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const C3: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn ms(base: Instant, n: u64) -> Instant {
    base + Duration::from_millis(n)
}

fn fast(transmit_ms: u64, timeout_scale: u32, ra_timer_scale: u32) -> TimerConfig {
    TimerConfig {
        transmit_t: Duration::from_millis(transmit_ms),
        timeout_scale,
        ra_timer_scale,
    }
}

/// GRE/hash/GRE plus `timers` (raw elements, possibly malformed choices).
fn caps(timers: &[Capability]) -> CapabilitiesInfo {
    let mut c = CapabilitiesInfo::methods(
        ForwardingMethods::GRE,
        AssignmentMethods::HASH,
        ReturnMethods::GRE,
    );
    c.elements.extend(timers.iter().cloned());
    c
}

fn hia(cache: Ipv4Addr, echo: Option<u32>, caps: CapabilitiesInfo) -> Vec<u8> {
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
    let data = AssignmentData::Hash(HashAssignmentData {
        weight: 10000,
        ..HashAssignmentData::default()
    });
    let mut h = HereIAm::new(
        ServiceInfo::standard(0),
        WebCacheIdentityElement::new(cache, data),
        view,
    );
    h.capabilities = Some(caps);
    Security::None.encode(&h.into_message()).unwrap()
}

/// The I_SEE_YOUs queued for `to`.
fn replies(e: &mut RouterEngine, now: Instant, to: Ipv4Addr) -> Vec<ISeeYou> {
    let mut out = vec![];
    let mut buf = vec![];
    while let Some(t) = e.poll_transmit(now, &mut buf) {
        let m = Message::decode(&buf[..t.size]).unwrap();
        if t.dst == to {
            if let Ok(i) = ISeeYou::try_from(&m) {
                out.push(i);
            }
        }
    }
    out
}

/// Two HERE_I_AMs from `cache` with `caps` (the second echoing); the last I_SEE_YOU.
fn join(e: &mut RouterEngine, now: Instant, cache: Ipv4Addr, c: &CapabilitiesInfo) -> ISeeYou {
    e.handle_message(now, cache, R, &hia(cache, None, c.clone()));
    let id = replies(e, now, cache)[0].identity.router.receive_id;
    e.handle_message(now, cache, R, &hia(cache, Some(id), c.clone()));
    replies(e, now, cache).pop().unwrap()
}

fn router(fast_timers: bool) -> RouterEngine {
    let mut e = RouterEngine::new();
    e.add_service(RouterServiceConfig {
        fast_timers,
        ..RouterServiceConfig::standard(0)
    })
    .unwrap();
    e
}

fn phase(e: &RouterEngine, cache: Ipv4Addr) -> CachePhase {
    e.service(0).unwrap().cache(cache).unwrap().phase
}

/// Runs a router and swcache engines in lockstep (1 ms resolution, `step_ms` apart) from
/// `from` to `to` ms; caches in `dead` neither send nor receive.
fn run(
    router: &mut RouterEngine,
    caches: &mut [(Ipv4Addr, CacheEngine)],
    base: Instant,
    (from, to, step_ms): (u64, u64, u64),
    dead: &[Ipv4Addr],
) {
    let mut buf = vec![];
    let mut tick = from;
    while tick <= to {
        let now = ms(base, tick);
        if router.poll_timeout().is_some_and(|t| t <= now) {
            router.handle_timeout(now);
        }
        for (addr, c) in caches.iter_mut() {
            if dead.contains(addr) {
                continue;
            }
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
            while let Some(t) = c.poll_transmit(now, &mut buf) {
                let data = buf[..t.size].to_vec();
                router.handle_message(now, *addr, t.dst, &data);
            }
            while c.poll_event().is_some() {}
        }
        while let Some(t) = router.poll_transmit(now, &mut buf) {
            let data = buf[..t.size].to_vec();
            if let Some((_, c)) = caches
                .iter_mut()
                .find(|(a, _)| *a == t.dst && !dead.contains(a))
            {
                c.handle_message(now, R, &data);
            }
        }
        while router.poll_event().is_some() {}
        router.check_invariants().unwrap();
        tick += step_ms;
    }
}

fn swcache(base: Instant, addr: Ipv4Addr, timers: TimerConfig) -> (Ipv4Addr, CacheEngine) {
    let config = CacheConfig {
        timers,
        ..CacheConfig::new(addr, vec![R])
            .with_service(CacheServiceConfig::new(ServiceInfo::standard(0)))
    };
    (addr, CacheEngine::new(base, config).unwrap())
}

/// A cache asking for 500 ms / 1 / 1 gets them: the router's removal timers follow them (a
/// silent cache is queried after 1.25 s and gone after 1.5 s, not 25 s and 30 s), the group
/// shows them, and the assignment arrives after 1.5 × 500 ms rather than 15 s.
#[test]
fn fast_timers_are_negotiated_and_scale_removal() {
    let base = t0();
    let mut r = router(true);
    let t = fast(500, 1, 1);
    let mut caches = vec![swcache(base, C2, t)];
    run(&mut r, &mut caches, base, (0, 3000, 10), &[]);
    let s = r.service(0).unwrap();
    let c = s.cache(C2).unwrap();
    assert!(c.usable, "{c:?}");
    assert_eq!(c.timers, t);
    assert_eq!((s.timers, s.timers_fixed), (t, true));
    assert_eq!(c.buckets, 256, "assigned within 3 s");
    let cs = caches[0].1.service(0).unwrap();
    assert_eq!(cs.routers[0].timers, Some(t));
    assert_eq!(cs.timers, t);
    // HERE_I_AMs every 500 ms keep it: the removal query is never due.
    assert_eq!(s.counters.tx.removal_query, 0, "{:?}", s.counters);
    let last_heard = c.last_seen;
    assert!(c.expires_at.unwrap() <= last_heard + Duration::from_millis(1500));
    // The cache dies: queried after 1.25 s, removed after 1.5 s of silence.
    run(&mut r, &mut caches, base, (3010, 6000, 10), &[C2]);
    let s = r.service(0).unwrap();
    assert!(s.cache(C2).is_none(), "removed");
    assert_eq!(s.counters.drops_for("wccp-cache-expired"), 1);
    assert!(s.counters.tx.removal_query >= 1);
    assert!(!s.timers_fixed, "the group emptied: timers are free again");
    assert_eq!(s.timers, TimerConfig::default());
}

/// The same cache against a router with fast timers off: offered only the defaults, it
/// takes them and joins; the router keeps the reference timers.
#[test]
fn with_fast_timers_off_a_cache_falls_back_to_the_defaults() {
    let base = t0();
    let mut r = router(false);
    let mut caches = vec![swcache(base, C2, fast(500, 1, 1))];
    run(&mut r, &mut caches, base, (0, 2000, 10), &[]);
    let s = r.service(0).unwrap();
    let c = s.cache(C2).unwrap();
    assert!(c.usable, "{c:?}");
    assert_eq!(c.timers, TimerConfig::default());
    assert_eq!(s.timers, TimerConfig::default());
    let cs = caches[0].1.service(0).unwrap();
    assert_eq!(cs.routers[0].timers, Some(TimerConfig::default()));
    assert_eq!(cs.timers, TimerConfig::default());
    // A cache that insists is not usable.
    let insist = caps(&fast(500, 1, 1).capabilities());
    join(&mut r, base, C3, &insist);
    assert_eq!(
        phase(&r, C3),
        CachePhase::Unusable(DropReason::TimersUnsupported)
    );
}

/// What a router accepts: single values within 500..=60000 ms and scales 1..=5; a range, a
/// zero or anything outside makes the cache unusable (`wccp-timers-unsupported`). A cache
/// that asks is offered the accepted ranges; one that does not (Squid) sees no timer element.
#[test]
fn out_of_range_or_malformed_timer_choices_are_refused() {
    let base = t0();
    let transmit = |upper, lower| Capability::TransmitT { upper, lower };
    let scale = |a, b, c, d| Capability::TimerScale {
        timeout_upper: a,
        timeout_lower: b,
        ra_upper: c,
        ra_lower: d,
    };
    let refused = [
        vec![transmit(0, 499)],
        vec![transmit(0, 60_001)],
        vec![transmit(60_000, 500)],
        vec![transmit(0, 0)],
        vec![transmit(0, 1000), scale(0, 0, 0, 1)],
        vec![transmit(0, 1000), scale(0, 6, 0, 1)],
        vec![transmit(0, 1000), scale(0, 1, 0, 6)],
        vec![transmit(0, 1000), scale(5, 1, 5, 1)],
    ];
    for (i, t) in refused.iter().enumerate() {
        let mut r = router(true);
        let reply = join(&mut r, base, C2, &caps(t));
        assert_eq!(
            phase(&r, C2),
            CachePhase::Unusable(DropReason::TimersUnsupported),
            "case {i}: {t:?}"
        );
        assert_eq!(
            r.service(0)
                .unwrap()
                .counters
                .rejects(DropReason::TimersUnsupported),
            1
        );
        // It asked: told what would do.
        let offered = reply.capabilities.unwrap();
        assert_eq!(offered.transmit_t(), Some((60_000, 500)), "case {i}");
        assert_eq!(offered.timer_scale(), Some([5, 1, 5, 1]));
    }
    for t in [
        vec![transmit(0, 500)],
        vec![transmit(0, 60_000), scale(0, 5, 0, 5)],
        vec![scale(0, 2, 0, 1)],
        vec![transmit(0, 10_000), scale(0, 1, 0, 1)],
    ] {
        let mut r = router(true);
        join(&mut r, base, C2, &caps(&t));
        assert!(phase(&r, C2).is_usable(), "{t:?}");
    }
    // Squid-like: no timer elements asked for, none offered.
    let mut r = router(true);
    let reply = join(&mut r, base, C2, &caps(&[]));
    assert!(phase(&r, C2).is_usable());
    let offered = reply.capabilities.unwrap();
    assert_eq!(offered.elements.len(), 3, "{offered:?}");
}

/// \[R1\]: the first usable cache fixes the group's timers until the group empties. A
/// Squid-like cache (defaults, no timer elements) cannot join a group fixed at 500 ms; it is
/// told the group's values; another swcache configured for other fast timers takes the
/// group's; once the fast cache is gone the Squid-like one joins.
#[test]
fn the_first_cache_fixes_the_group_timers() {
    let base = t0();
    let mut r = router(true);
    let t = fast(500, 1, 1);
    join(&mut r, base, C2, &caps(&t.capabilities()));
    assert!(phase(&r, C2).is_usable());
    assert_eq!(r.service(0).unwrap().timers, t);
    let squid = caps(&[]);
    let reply = join(&mut r, base, C3, &squid);
    assert_eq!(
        phase(&r, C3),
        CachePhase::Unusable(DropReason::TimersUnsupported)
    );
    let offered = reply.capabilities.unwrap();
    assert_eq!(offered.transmit_t(), Some((0, 500)));
    assert_eq!(offered.timer_scale(), Some([0, 1, 0, 1]));
    // An swcache configured for 2 s takes the group's 500 ms from that offer.
    let chosen = fast(2000, 2, 1).choose_from(Some(&offered)).unwrap();
    assert_eq!(chosen, t);
    // C2 goes silent and is removed after 1.5 s; C3 keeps sending every 10 s and joins.
    let id = reply.identity.router.receive_id;
    let later = ms(base, 1600);
    r.handle_timeout(later);
    let _ = replies(&mut r, later, C2);
    assert!(r.service(0).unwrap().cache(C2).is_none());
    r.handle_message(later, C3, R, &hia(C3, Some(id), squid));
    assert!(phase(&r, C3).is_usable());
    assert_eq!(r.service(0).unwrap().timers, TimerConfig::default());
}

/// Turning fast timers off at reload makes a cache on fast timers unusable (it must rejoin
/// with the defaults), like any capability the router stops offering.
#[test]
fn reconfiguring_fast_timers_off_revalidates_the_caches() {
    let base = t0();
    let mut r = router(true);
    join(&mut r, base, C2, &caps(&fast(1000, 3, 1).capabilities()));
    assert!(phase(&r, C2).is_usable());
    r.reconfigure(
        base,
        RouterServiceConfig {
            fast_timers: false,
            ..RouterServiceConfig::standard(0)
        },
    )
    .unwrap();
    assert_eq!(
        phase(&r, C2),
        CachePhase::Unusable(DropReason::TimersUnsupported)
    );
}
