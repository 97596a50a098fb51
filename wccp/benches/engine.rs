//! Criterion benches of the control plane and the per-packet lookup: parse + verify a Squid
//! HERE_I_AM, build an I_SEE_YOU, a RouterEngine HERE_I_AM → I_SEE_YOU round trip, the
//! bucket index and assignment lookups, and full hash assignments for 32 caches.
// criterion_group!/criterion_main! generate undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use wccp::assign::{
    assign_hash, assign_mask, default_mask, Assignment, BucketOwners, CacheTarget, ValueOwners,
    WeightedCache,
};
use wccp::engine::{ForwardingMethod, ReturnMethod};
use wccp::hash::{primary_bucket, BitOrder, BucketBitmap, FlowKey};
use wccp::router::{RouterEngine, RouterServiceConfig};
use wccp::security::{Password, Security};
use wccp::wire::{
    AssignmentData, AssignmentKey, AssignmentMethods, CapabilitiesInfo, ForwardingMethods,
    HashAssignmentData, HereIAm, ISeeYou, Message, ReturnMethods, RouterIdElement,
    RouterIdentityInfo, RouterViewInfo, ServiceFlags, ServiceInfo, WebCacheIdentityElement,
    WebCacheViewInfo,
};

const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

/// A seed datagram from `fuzz/corpus/<target>/<name>`.
fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn caches(n: u8) -> Vec<WeightedCache> {
    (0..n)
        .map(|i| WeightedCache {
            address: Ipv4Addr::new(10, 1, 0, 10 + i),
            weight: 10000,
        })
        .collect()
}

fn target(address: Ipv4Addr) -> Option<CacheTarget> {
    Some(CacheTarget {
        address,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        forwarding: ForwardingMethod::Gre,
        packet_return: ReturnMethod::Gre,
    })
}

/// A HERE_I_AM from `cache` (hash, GRE) echoing `echo`, without security.
fn hia(cache: Ipv4Addr, echo: Option<u32>) -> Vec<u8> {
    let view = WebCacheViewInfo {
        change_number: 1,
        routers: echo
            .map(|receive_id| RouterIdElement {
                router_ip: ROUTER,
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
    h.capabilities = Some(CapabilitiesInfo::methods(
        ForwardingMethods::GRE,
        AssignmentMethods::HASH,
        ReturnMethods::GRE,
    ));
    h.into_message().encode().expect("encodes")
}

fn control(c: &mut Criterion) {
    // Squid 5.7, hash, GRE, MD5 `secret` (reference §10 layout), 160 octets.
    let squid = seed("wccp_here_i_am", "hia-hash-gre-std0-md5-f1");
    let sec = Security::Md5(Password::new(b"secret"));
    c.bench_function("parse+verify HERE_I_AM (Squid, MD5, 160 B)", |b| {
        b.iter(|| {
            let data = black_box(&squid);
            sec.verify(data).expect("verifies");
            let m = Message::decode_datagram(data).expect("decodes").message;
            HereIAm::try_from(&m).expect("a HERE_I_AM")
        })
    });

    // What the router sends a cache: 3 usable caches in the Router View, capabilities, MD5.
    let elements: Vec<WebCacheIdentityElement> = caches(3)
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let buckets = BucketBitmap::from_buckets(
                (0..=255u8).filter(|b| usize::from(*b) % 3 == i),
                BitOrder::MsbFirst,
            );
            WebCacheIdentityElement::new(
                c.address,
                AssignmentData::Hash(HashAssignmentData {
                    buckets,
                    weight: c.weight,
                    status: 0,
                }),
            )
        })
        .collect();
    c.bench_function("build+sign I_SEE_YOU (3 caches, MD5)", |b| {
        b.iter(|| {
            let identity = RouterIdentityInfo {
                router: RouterIdElement {
                    router_ip: ROUTER,
                    receive_id: 42,
                },
                sent_to: ROUTER,
                received_from: vec![Ipv4Addr::new(10, 1, 0, 10)],
            };
            let view = RouterViewInfo {
                member_change_number: 3,
                key: AssignmentKey {
                    cache_ip: Ipv4Addr::new(10, 1, 0, 10),
                    change_number: 1,
                },
                routers: vec![ROUTER],
                caches: black_box(&elements).clone(),
            };
            let mut isy = ISeeYou::new(ServiceInfo::standard(0), identity, view);
            isy.capabilities = Some(CapabilitiesInfo::methods(
                ForwardingMethods::GRE,
                AssignmentMethods::HASH,
                ReturnMethods::GRE,
            ));
            sec.encode(&isy.into_message()).expect("encodes")
        })
    });

    // The engine end to end: a usable cache's HERE_I_AM (correct echo) in, I_SEE_YOU out.
    #[allow(clippy::disallowed_methods)] // benches need a clock origin
    let now = Instant::now();
    let mut engine = RouterEngine::new();
    engine
        .add_service(RouterServiceConfig::standard(0))
        .expect("config");
    let mut buf = Vec::new();
    let mut last_id = 0;
    for c in caches(3) {
        for echo in [None, Some(last_id)] {
            engine.handle_message(now, c.address, ROUTER, &hia(c.address, echo));
            while let Some(t) = engine.poll_transmit(now, &mut buf) {
                let m = Message::decode(&buf[..t.size]).expect("decodes");
                last_id = ISeeYou::try_from(&m)
                    .expect("isy")
                    .identity
                    .router
                    .receive_id;
            }
        }
    }
    let me = caches(1)[0].address;
    let sentinel = 0xdead_beef_u32;
    let mut template = hia(me, Some(sentinel));
    let at = template
        .windows(4)
        .position(|w| w == sentinel.to_be_bytes())
        .expect("the echo field");
    // The reply's Receive ID sits at a fixed offset without security: header 8, Security
    // Info 8, Service Info 28, Router Identity header 4, router IP 4.
    const RECEIVE_ID_AT: usize = 52;
    let mut echo = engine
        .service(0)
        .and_then(|s| s.cache(me).and_then(|c| c.last_receive_id_sent))
        .unwrap_or(0);
    c.bench_function("RouterEngine HERE_I_AM -> I_SEE_YOU (3 caches)", |b| {
        b.iter(|| {
            template[at..at + 4].copy_from_slice(&echo.to_be_bytes());
            engine.handle_message(now, me, ROUTER, black_box(&template));
            let t = engine.poll_transmit(now, &mut buf).expect("a reply");
            while engine.poll_event().is_some() {}
            let id: [u8; 4] = buf[RECEIVE_ID_AT..RECEIVE_ID_AT + 4].try_into().expect("4");
            echo = u32::from_be_bytes(id);
            t.size
        })
    });
    assert!(engine
        .service(0)
        .is_some_and(|s| s.cache(me).is_some_and(|c| c.receive_id_echoed)));
}

fn lookup(c: &mut Criterion) {
    let flow = FlowKey::new(
        Ipv4Addr::new(172, 16, 5, 4),
        Ipv4Addr::new(93, 184, 216, 34),
        33000,
        80,
    );
    c.bench_function("bucket index (src+dst IP and ports)", |b| {
        b.iter(|| primary_bucket(black_box(ServiceFlags(0x000f)), black_box(&flow)))
    });
    let table = assign_hash(&caches(32), &BucketOwners::NONE).expect("assigns");
    let targets: Vec<Option<CacheTarget>> = table.caches.iter().map(|a| target(*a)).collect();
    let (hash, _) = Assignment::hash(
        ServiceInfo::standard(0),
        AssignmentKey::NONE,
        &targets,
        &table.buckets,
    );
    c.bench_function("Assignment::lookup hash (32 caches)", |b| {
        b.iter(|| black_box(&hash).lookup(black_box(&flow)))
    });
    let mask = default_mask(&ServiceInfo::standard(0));
    let sets = assign_mask(&caches(32), &mask, 7, &ValueOwners::default()).expect("assigns");
    let (masked, _) =
        Assignment::mask(ServiceInfo::standard(0), AssignmentKey::NONE, &sets, target);
    c.bench_function("Assignment::lookup mask (0x1741, 64 values)", |b| {
        b.iter(|| black_box(&masked).lookup(black_box(&flow)))
    });
}

fn assignment(c: &mut Criterion) {
    let all = caches(32);
    c.bench_function("assign_hash 32 caches (fresh)", |b| {
        b.iter(|| assign_hash(black_box(&all), &BucketOwners::NONE))
    });
    let before = BucketOwners::from_table(&assign_hash(&all, &BucketOwners::NONE).expect("ok"));
    let fewer = &all[1..];
    c.bench_function("assign_hash 32 -> 31 caches (rebalance)", |b| {
        b.iter(|| assign_hash(black_box(fewer), black_box(&before)))
    });
}

criterion_group!(benches, control, lookup, assignment);
criterion_main!(benches);
