//! HA state sync of a RouterEngine's service groups (issue 15): an engine that served a real
//! Squid (the captures in `shared/testdata/squid/`) exports its groups, a fresh engine imports
//! them, and Squid's next HERE_I_AM from the capture is answered by the new engine exactly as
//! the old one would have answered it: same Router ID, the next Receive ID, the same change
//! number, view and assignment, and no cache or assignment events.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::common::{capture, Packet};
use wccp::router::{RouterEngine, RouterEvent, RouterServiceConfig, SyncKey};
use wccp::wire::{Header, ISeeYou, Message, MessageType};

const SQUID: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// The address the caches talk to: on an HA pair, the VRRP virtual address.
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// What one sync record may hold at most (hasync's default message).
const MAX_LEN: usize = 1400;

#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

/// Squid's datagrams to the router in `name`, each with the time the replay gives it (one
/// HERE_I_AM every 10 s, a REDIRECT_ASSIGN 5 s after the message before it).
fn timed(name: &str, base: Instant) -> Vec<(Instant, Packet)> {
    let mut now = base;
    capture(name)
        .into_iter()
        .filter(|p| p.src == SQUID && p.dst == ROUTER)
        .enumerate()
        .map(|(i, p)| {
            now = match Header::peek_type(&p.payload) {
                Some(MessageType::RedirectAssign) => now + Duration::from_secs(5),
                _ => base + Duration::from_secs(10 * i as u64),
            };
            (now, p)
        })
        .collect()
}

/// Feeds one datagram; returns the engine's I_SEE_YOUs (bytes) and events.
fn feed(e: &mut RouterEngine, now: Instant, p: &Packet) -> (Vec<Vec<u8>>, Vec<RouterEvent>) {
    e.handle_timeout(now);
    e.handle_message(now, p.src, p.dst, &p.payload);
    let mut out = vec![];
    let mut buf = vec![];
    while let Some(t) = e.poll_transmit(now, &mut buf) {
        out.push(buf[..t.size].to_vec());
    }
    (out, std::iter::from_fn(|| e.poll_event()).collect())
}

/// Copies every group of `from` into `to` through sync records (as the standby applies them).
fn sync(from: &RouterEngine, to: &mut RouterEngine, now: Instant) -> usize {
    let mut n = 0;
    for id in from.service_ids().collect::<Vec<_>>() {
        let x = from.export_service(id, MAX_LEN).expect("configured");
        assert_eq!(x.omitted, 0);
        for r in &x.records {
            assert!(r.value.len() <= MAX_LEN);
            to.import_sync(now, &r.key, Some(&r.value))
                .expect("our own records import");
            n += 1;
        }
    }
    n
}

#[test]
fn a_squid_sees_no_change_when_another_engine_takes_over() {
    for (name, config, adjacent) in [
        (
            "s76-squid64-hash-gre-std0",
            RouterServiceConfig::standard(0),
            false,
        ),
        (
            "s76-squid64-hash-gre-dyn90",
            RouterServiceConfig::dynamic(90),
            false,
        ),
        (
            "s76-squid64-mask-l2-dyn90-md5",
            RouterServiceConfig::dynamic(90).with_password(b"abcdefgh"),
            true,
        ),
    ] {
        let base = t0();
        let msgs = timed(name, base);
        let (last_at, last) = msgs.last().cloned().expect("a capture");
        assert_eq!(
            Header::peek_type(&last.payload),
            Some(MessageType::HereIAm),
            "{name}"
        );
        let mut active = RouterEngine::new();
        active.add_service(config.clone()).unwrap();
        active.set_l2_adjacent(base, SQUID, adjacent);
        for (now, p) in &msgs[..msgs.len() - 1] {
            feed(&mut active, *now, p);
        }
        let before = active.services().remove(0);
        assert!(!before.assignment.is_empty(), "{name}: Squid assigned");

        // The standby imports shortly after; it is a fresh engine (no adjacency of its own).
        let mut standby = RouterEngine::new();
        standby.add_service(config).unwrap();
        let imported_at = last_at - Duration::from_secs(3);
        assert!(sync(&active, &mut standby, imported_at) >= 2, "{name}");
        let ev: Vec<RouterEvent> = std::iter::from_fn(|| standby.poll_event()).collect();
        assert!(
            ev.iter()
                .all(|e| matches!(e, RouterEvent::AssignmentChanged { .. })),
            "{name}: no cache events on import: {ev:?}"
        );
        standby.check_invariants().unwrap();
        let id = before.service_id;
        assert_eq!(standby.assignment(id), active.assignment(id), "{name}");
        assert_eq!(
            standby.export_service(id, MAX_LEN),
            active.export_service(id, MAX_LEN),
            "{name}: the import holds everything exported"
        );
        let after_import = standby.service(id).unwrap();
        assert_eq!(
            after_import.member_change_number,
            before.member_change_number
        );
        assert_eq!(after_import.key, before.key);

        // Squid's next HERE_I_AM echoes the active's last Receive ID: both answer it alike.
        standby.resume(imported_at);
        let (want, want_ev) = feed(&mut active.clone(), last_at, &last);
        let (got, got_ev) = feed(&mut standby, last_at, &last);
        assert_eq!(got.len(), 1, "{name}");
        assert_eq!(got, want, "{name}: byte for byte the active's answer");
        assert!(
            got_ev.is_empty() && want_ev.is_empty(),
            "{name}: {got_ev:?}"
        );
        let isy = ISeeYou::try_from(&Message::decode(&got[0]).unwrap()).unwrap();
        assert_eq!(isy.identity.router.router_ip, ROUTER);
        assert_eq!(
            isy.identity.router.receive_id,
            before.receive_id + 1,
            "{name}: the sequence goes on"
        );
        assert_eq!(isy.view.member_change_number, before.member_change_number);
        assert_eq!(isy.view.key, before.key);
        let s = standby.service(id).unwrap();
        let c = s.cache(SQUID).unwrap();
        assert!(c.usable && c.receive_id_echoed, "{name}");
        assert_eq!(
            s.counters.total_drops(),
            0,
            "{name}: the echo was recognised"
        );
        assert_eq!(standby.assignment(id), active.assignment(id));
    }
}

/// Imported caches are live from the import: they expire 30 s after it without a HERE_I_AM,
/// not 30 s after the active last heard them; the change number then moves as usual.
#[test]
fn imported_caches_expire_from_the_import_time() {
    let base = t0();
    let msgs = timed("s76-squid64-hash-gre-std0", base);
    let mut active = RouterEngine::new();
    active
        .add_service(RouterServiceConfig::standard(0))
        .unwrap();
    for (now, p) in &msgs {
        feed(&mut active, *now, p);
    }
    let heard = msgs.last().unwrap().0;
    let mut standby = RouterEngine::new();
    standby
        .add_service(RouterServiceConfig::standard(0))
        .unwrap();
    let import = heard + Duration::from_secs(20);
    sync(&active, &mut standby, import);
    while standby.poll_event().is_some() {}
    standby.handle_timeout(heard + Duration::from_secs(31));
    assert_eq!(
        standby.membership(0).unwrap().1,
        vec![SQUID],
        "still usable"
    );
    standby.handle_timeout(import + Duration::from_secs(31));
    assert!(standby.membership(0).unwrap().1.is_empty(), "expired");
    assert!(std::iter::from_fn(|| standby.poll_event())
        .any(|e| matches!(e, RouterEvent::CacheLost { cache, .. } if cache == SQUID)));
}

/// The active's deletes reach the standby: a cache's removes it, the group's first part's
/// empties the group.
#[test]
fn deletes_remove_caches_and_groups() {
    let base = t0();
    let mut active = RouterEngine::new();
    active
        .add_service(RouterServiceConfig::standard(0))
        .unwrap();
    for (now, p) in &timed("s76-squid64-hash-gre-std0", base) {
        feed(&mut active, *now, p);
    }
    let mut standby = RouterEngine::new();
    standby
        .add_service(RouterServiceConfig::standard(0))
        .unwrap();
    sync(&active, &mut standby, base);
    assert!(!standby.assignment(0).unwrap().is_empty());
    let cache = SyncKey::Cache {
        service: 0,
        cache: SQUID,
    }
    .to_bytes();
    standby.import_sync(base, &cache, None).unwrap();
    assert!(standby.membership(0).unwrap().1.is_empty());
    assert!(standby.assignment(0).unwrap().is_empty());
    standby.check_invariants().unwrap();
    sync(&active, &mut standby, base);
    let group = SyncKey::Group {
        service: 0,
        part: 0,
    }
    .to_bytes();
    standby.import_sync(base, &group, None).unwrap();
    assert!(standby.export_service(0, MAX_LEN).unwrap().records.len() == 1);
    assert!(standby.assignment(0).unwrap().is_empty());
    // Not configured here: refused, nothing changes.
    let other = SyncKey::Group {
        service: 7,
        part: 0,
    }
    .to_bytes();
    assert!(standby.import_sync(base, &other, Some(&[1, 0, 1])).is_err());
}

/// A group record longer than one sync record goes in parts that each fit.
#[test]
fn a_long_group_record_is_split_and_reassembled() {
    let base = t0();
    let mut active = RouterEngine::new();
    active
        .add_service(RouterServiceConfig::standard(0))
        .unwrap();
    for (now, p) in &timed("s76-squid64-hash-gre-std0", base) {
        feed(&mut active, *now, p);
    }
    let x = active.export_service(0, 120).unwrap();
    let parts = x.records.iter().filter(|r| r.key[0] == b'G').count();
    assert!(parts > 2, "{parts}");
    assert!(x.records.iter().all(|r| r.value.len() <= 120));
    let mut standby = RouterEngine::new();
    standby
        .add_service(RouterServiceConfig::standard(0))
        .unwrap();
    // Any order: the group applies once every part is in.
    for r in x.records.iter().rev() {
        standby.import_sync(base, &r.key, Some(&r.value)).unwrap();
    }
    assert_eq!(standby.assignment(0), active.assignment(0));
    assert_eq!(standby.membership(0), active.membership(0));
}

fn engine_with_squid() -> RouterEngine {
    let base = t0();
    let mut e = RouterEngine::new();
    e.add_service(RouterServiceConfig::standard(0))
        .expect("valid config");
    for (now, p) in &timed("s76-squid64-hash-gre-std0", base) {
        feed(&mut e, *now, p);
    }
    e
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..8),
        (0u8..4).prop_map(|p| vec![b'G', 0, p]),
        any::<[u8; 4]>().prop_map(|a| vec![b'C', 0, a[0], a[1], a[2], a[3]]),
        Just(vec![b'C', 0, 10, 99, 0, 2]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any bytes: refused or applied, never a panic, and the engine's invariants hold.
    #[test]
    fn import_of_arbitrary_bytes_never_panics(
        k in key(),
        v in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..600)),
        version_one in any::<bool>(),
    ) {
        let mut e = engine_with_squid();
        let mut v = v;
        if let (Some(v), true) = (v.as_mut(), version_one) {
            if let Some(b) = v.first_mut() {
                *b = 1;
            }
        }
        let _ = e.import_sync(t0(), &k, v.as_deref());
        e.handle_timeout(t0() + Duration::from_secs(100));
        prop_assert!(e.check_invariants().is_ok());
        let _ = wccp::router::reencode(&k, v.as_deref().unwrap_or_default());
    }

    /// Whatever decodes re-encodes canonically: decoding the re-encoding gives it back.
    #[test]
    fn decodable_values_round_trip(k in key(), v in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(once) = wccp::router::reencode(&k, &v) {
            prop_assert_eq!(wccp::router::reencode(&k, &once), Ok(once.clone()));
        }
    }

    /// An engine's own records, with one byte flipped, are refused or taken; either way the
    /// engine stays consistent.
    #[test]
    fn mutated_records_keep_the_engine_consistent(at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let src = engine_with_squid();
        let x = src.export_service(0, MAX_LEN).unwrap();
        let mut e = RouterEngine::new();
        e.add_service(RouterServiceConfig::standard(0)).unwrap();
        for r in &x.records {
            let mut v = r.value.clone();
            let i = at.index(v.len());
            v[i] ^= 1 << bit;
            let _ = e.import_sync(t0(), &r.key, Some(&v));
            prop_assert!(e.check_invariants().is_ok());
        }
    }
}
