//! A malformed-datagram barrage (issue 13): thousands of deterministic mutants of real cache
//! messages (the Squid captures and the messages a `CacheEngine` — swcache's engine — sent
//! while joining) hit a router whose MD5-protected group has a joined cache with an installed
//! assignment. Mutants come from a rogue address and with the joined cache's address spoofed:
//! truncations, flipped octets, header and component lengths and counts at their edges,
//! signatures with the wrong password, security stripped, foreign types and versions,
//! trailing junk (which the digest does not cover, so those are replays).
//!
//! Afterwards the membership, the Member Change Number, the key and the installed assignment
//! are untouched, no cache entry was added, and the counters account for every datagram: the
//! engine's rx counters grew by exactly the number sent, and every one of them was dropped
//! under exactly one named reason.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{capture, capture_names};
use wccp::cache::{CacheConfig, CacheEngine, CacheServiceConfig};
use wccp::engine::DropReason;
use wccp::router::{RouterEngine, RouterServiceConfig, ServiceStatus};
use wccp::security::{Password, Security};
use wccp::wire::{Header, MessageType, ServiceInfo};

const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const CACHE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const ROGUE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 66);
/// The password of the Squid `-md5` captures, so that their originals verify here.
const PASSWORD: &[u8] = b"secret";

/// SplitMix64, as in `sim.rs`: deterministic everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// A router with service 0 (MD5) and one joined `CacheEngine` whose assignment is installed;
/// returns them with the virtual time and every datagram the cache sent.
fn joined() -> (RouterEngine, Instant, Vec<Vec<u8>>) {
    #[allow(clippy::disallowed_methods)] // the origin of the virtual clock
    let mut now = Instant::now();
    let mut router = RouterEngine::new();
    router
        .add_service(RouterServiceConfig::standard(0).with_password(PASSWORD))
        .expect("valid config");
    let config = CacheConfig::new(CACHE, vec![ROUTER])
        .with_service(CacheServiceConfig::new(ServiceInfo::standard(0)).with_password(PASSWORD));
    let mut cache = CacheEngine::new(now, config).expect("valid config");
    let mut sent = Vec::new();
    let end = now + Duration::from_secs(60);
    let mut buf = Vec::new();
    while now < end {
        let mut moved = true;
        while moved {
            moved = false;
            while let Some(t) = cache.poll_transmit(now, &mut buf) {
                sent.push(buf[..t.size].to_vec());
                router.handle_message(now, CACHE, ROUTER, &buf[..t.size]);
                moved = true;
            }
            while let Some(t) = router.poll_transmit(now, &mut buf) {
                cache.handle_message(now, ROUTER, &buf[..t.size]);
                moved = true;
            }
            while router.poll_event().is_some() {}
            while cache.poll_event().is_some() {}
        }
        let next = [router.poll_timeout(), cache.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end);
        now = next.max(now + Duration::from_millis(1)).min(end);
        router.handle_timeout(now);
        cache.handle_timeout(now);
    }
    (router, now, sent)
}

/// What must not change.
fn snapshot(router: &RouterEngine) -> (u32, Vec<Ipv4Addr>, ServiceStatus) {
    let (change, members) = router.membership(0).expect("service 0");
    (change, members, router.service(0).expect("service 0"))
}

/// Drops under every name, engine and group, except the two annotations that are not drops.
fn drops(router: &RouterEngine) -> u64 {
    let notes = [
        DropReason::TrailingOctets.as_str(),
        DropReason::SkippedComponent.as_str(),
    ];
    let group = router.service(0).expect("service 0").counters;
    [router.counters(), &group]
        .iter()
        .flat_map(|c| c.drops.iter())
        .filter(|(k, _)| !notes.contains(k))
        .map(|(_, v)| *v)
        .sum()
}

/// Offsets of the components of a message, walking the framing as far as it goes.
fn components(m: &[u8]) -> Vec<usize> {
    let mut out = vec![];
    let mut off = 8;
    while off + 4 <= m.len() {
        out.push(off);
        off += 4 + usize::from(u16::from_be_bytes([m[off + 2], m[off + 3]]));
    }
    out
}

/// One mutant of `orig`, never equal to it.
fn mutate(rng: &mut Rng, orig: &[u8]) -> Vec<u8> {
    let mut m = orig.to_vec();
    let len16 = |m: &[u8]| u16::try_from(m.len().saturating_sub(8)).unwrap_or(u16::MAX);
    match rng.below(10) {
        // Truncation anywhere, the header included.
        0 => m.truncate(rng.below(orig.len())),
        // A few flipped octets.
        1 => {
            for _ in 0..=rng.below(4) {
                let at = rng.below(m.len());
                m[at] ^= 1 << rng.below(8);
            }
        }
        // Header Length at its edges.
        2 => {
            let l = len16(&m);
            let v = rng.pick(&[
                0,
                4,
                l.wrapping_sub(4),
                l.wrapping_add(4),
                0xfffc,
                0xffff,
                3,
            ]);
            m[6..8].copy_from_slice(&v.to_be_bytes());
        }
        // A component Length at its edges.
        3 => {
            let c = components(&m);
            if let Some(&off) = c.get(rng.below(c.len())) {
                let l = u16::from_be_bytes([m[off + 2], m[off + 3]]);
                let v = rng.pick(&[
                    0,
                    2,
                    4,
                    l.wrapping_add(4),
                    l.wrapping_sub(4),
                    0xfffc,
                    0xffff,
                ]);
                m[off + 2..off + 4].copy_from_slice(&v.to_be_bytes());
            }
        }
        // A word (most counts are u32 at 4-aligned offsets) at count edges.
        4 => {
            let words = (m.len().saturating_sub(8)) / 4;
            let at = 8 + 4 * rng.below(words);
            let v: u32 = rng.pick(&[0, 1, 2, 32, 33, 0xff, 0xffff, 0x7fff_ffff, u32::MAX]);
            if at + 4 <= m.len() {
                m[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
        }
        // Trailing junk: outside header+Length, so the digest still verifies (a replay).
        5 => m.extend((0..=rng.below(64)).map(|_| rng.next() as u8)),
        // Mutated, then signed with the wrong password.
        6 => {
            let at = 8 + rng.below(m.len().saturating_sub(8));
            m[at] ^= 0x5a;
            let _ = Security::Md5(Password::new(b"wrongpw")).sign(&mut m);
        }
        // Security stripped: the Security Info replaced by option 0 (Length 4).
        7 => {
            if m.len() >= 32 && m[8..12] == [0, 0, 0, 0x14] {
                m.splice(12..32, [0, 0, 0, 0]);
                m[11] = 4;
                let l = len16(&m);
                m[6..8].copy_from_slice(&l.to_be_bytes());
            } else {
                m.truncate(m.len() / 2);
            }
        }
        // Foreign or edge message types and versions.
        8 => {
            let t: u32 = rng.pick(&[0, 7, 11, 13, 14, 0x0a00_0000, u32::MAX]);
            m[0..4].copy_from_slice(&t.to_be_bytes());
        }
        _ => {
            let v: u16 = rng.pick(&[0x0100, 0x0201, 0x02ff, 0x0300, 0, 0xffff]);
            m[4..6].copy_from_slice(&v.to_be_bytes());
        }
    }
    if m == orig {
        // The digest: a replay of the original would be a valid message, not a mutant.
        let at = 16.min(m.len().saturating_sub(1));
        m[at] ^= 0xff;
    }
    m
}

#[test]
fn malformed_barrage_leaves_the_group_untouched_and_is_counted() {
    let (mut router, now, swcache_msgs) = joined();
    let (change, members, before) = snapshot(&router);
    assert_eq!(members, vec![CACHE], "the cache joined");
    assert!(!before.assignment.is_empty(), "an assignment is installed");
    let installed = router.assignment(0).expect("service 0");

    // Seeds: what swcache's engine sent, and everything every Squid capture holds.
    let mut seeds = swcache_msgs;
    for name in capture_names() {
        seeds.extend(capture(&name).into_iter().map(|p| p.payload));
    }
    // Cache messages only (the captures also hold the responder's I_SEE_YOUs).
    seeds.retain(|s| {
        matches!(
            Header::peek_type(s),
            Some(MessageType::HereIAm | MessageType::RedirectAssign)
        )
    });
    assert!(seeds.len() > 50, "{}", seeds.len());

    let rx_before = router.counters().rx.total();
    let drops_before = drops(&router);
    let mut rng = Rng(0x13_0e);
    let mut buf = Vec::new();
    let mut answered = 0u64;
    let n = 6000;
    for i in 0..n {
        let seed = &seeds[rng.below(seeds.len())];
        let data = mutate(&mut rng, seed);
        let src = if i % 2 == 0 { ROGUE } else { CACHE };
        router.handle_message(now, src, ROUTER, &data);
        while router.poll_transmit(now, &mut buf).is_some() {
            answered += 1;
        }
        assert!(
            router.poll_event().is_none(),
            "mutant {i} changed something"
        );
        if let Err(e) = router.check_invariants() {
            panic!("mutant {i}: {e}");
        }
    }

    let (change_after, members_after, after) = snapshot(&router);
    assert_eq!(change_after, change, "Member Change Number");
    assert_eq!(members_after, members, "membership");
    assert_eq!(after.key, before.key, "assignment key");
    assert!(
        Arc::ptr_eq(&router.assignment(0).expect("service 0"), &installed),
        "the installed assignment is the same object"
    );
    assert_eq!(
        after.caches.len(),
        before.caches.len(),
        "no cache entry added"
    );
    assert_eq!(after.designated_cache, before.designated_cache);
    assert_eq!(
        router.counters().rx.total() - rx_before,
        n,
        "every datagram received"
    );
    assert_eq!(
        drops(&router) - drops_before,
        n,
        "every datagram dropped under one reason: {:?} / {:?}",
        router.counters().drops,
        after.counters.drops
    );
    // The mutants reached every layer: framing, version, type, security, MD5, and the
    // group's own checks for the replays that verify.
    let all = |name: &str| router.counters().drops_for(name) + after.counters.drops_for(name);
    eprintln!("{:?}\n{:?}", router.counters().drops, after.counters.drops);
    for name in [
        "wccp-truncated",
        "wccp-bad-component-length",
        "wccp-unsupported-version",
        "wccp-unexpected-type",
        "wccp-unconfigured-service",
        "wccp-security-mismatch",
        "wccp-md5-mismatch",
        "wccp-trailing-octets",
        "wccp-receive-id-mismatch",
    ] {
        assert!(all(name) > 0, "no mutant was dropped as {name}");
    }
    // Replays with trailing junk from the spoofed address verify and are answered, like any
    // HERE_I_AM, yet change nothing; nothing else is.
    assert!(answered <= n / 10, "{answered} answers");
}
