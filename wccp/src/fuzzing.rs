//! Entry points for the cargo-fuzz targets in `fuzz/` (one per message type, the
//! decode → encode → decode oracle, and an operation-list target that drives a
//! [`RouterEngine`] and a [`CacheEngine`]); `tests/fuzz_corpus.rs` replays the corpus through
//! them. Built only for tests and with the `fuzzing` feature.
//!
//! Each function panics only when an invariant breaks (a decoder panic, a lossy round trip,
//! a view that does not survive rebuilding, an engine invariant); malformed input is simply
//! rejected.

use core::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::cache::{CacheConfig, CacheEngine, CacheServiceConfig};
use crate::engine::{AssignmentMethod, ForwardingMethod};
use crate::router::{RouterEngine, RouterEvent, RouterServiceConfig};
use crate::security::{Password, Security};
use crate::wire::{
    AltMaskValueSet, AlternateAssignment, AssignmentBody, AssignmentData, AssignmentInfo,
    AssignmentKey, AssignmentMethods, CapabilitiesInfo, ForwardingMethods, HashAssignmentData,
    HashBucketsAssignment, HereIAm, ISeeYou, MaskAssignmentData, MaskElement, MaskValueSet,
    Message, MessageType, RedirectAssign, RedirectAssignment, RemovalQuery, ReturnMethods,
    RouterAssignmentElement, RouterIdElement, ServiceFlags, ServiceInfo, ValueElement,
    WebCacheIdentityElement, WebCacheValueElement, WebCacheViewInfo,
};
use crate::Error;

/// HERE_I_AM decoder: forces type 10 into the header, then checks every invariant.
pub fn fuzz_here_i_am(data: &[u8]) {
    typed(data, MessageType::HereIAm, |m| {
        HereIAm::try_from(m).map(HereIAm::into_message)
    });
}

/// I_SEE_YOU decoder: forces type 11 into the header, then checks every invariant.
pub fn fuzz_i_see_you(data: &[u8]) {
    typed(data, MessageType::ISeeYou, |m| {
        ISeeYou::try_from(m).map(ISeeYou::into_message)
    });
}

/// REDIRECT_ASSIGN decoder: forces type 12 into the header, then checks every invariant.
pub fn fuzz_redirect_assign(data: &[u8]) {
    typed(data, MessageType::RedirectAssign, |m| {
        RedirectAssign::try_from(m).map(RedirectAssign::into_message)
    });
}

/// REMOVAL_QUERY decoder: forces type 13 into the header, then checks every invariant.
pub fn fuzz_removal_query(data: &[u8]) {
    typed(data, MessageType::RemovalQuery, |m| {
        RemovalQuery::try_from(m).map(RemovalQuery::into_message)
    });
}

/// The oracle: a strictly decoded message re-encodes to the same octets and decodes again to
/// the same value.
pub fn fuzz_roundtrip(data: &[u8]) {
    let Ok(message) = Message::decode(data) else {
        return;
    };
    let encoded = match message.encode() {
        Ok(e) => e,
        Err(e) => panic!("a decoded message failed to encode: {e}"),
    };
    assert_eq!(encoded, data, "decode → encode is not lossless");
    assert_eq!(
        Message::decode(&encoded).as_ref(),
        Ok(&message),
        "decode → encode → decode differs"
    );
}

/// Shared body of the per-type targets.
fn typed(data: &[u8], kind: MessageType, rebuild: impl Fn(&Message) -> Result<Message, Error>) {
    let mut buf = data.to_vec();
    if let Some(t) = buf.get_mut(..4) {
        t.copy_from_slice(&u32::from(kind).to_be_bytes());
    }
    // Security checks run on raw bytes before decoding; they must not panic either.
    let _ = Security::None.verify(&buf);
    let _ = Security::Md5(Password::new(b"secret")).verify(&buf);

    let Ok(datagram) = Message::decode_datagram(&buf) else {
        return;
    };
    let message = datagram.message;
    assert_eq!(message.kind, kind);
    let wire_len = buf.len() - datagram.trailing;
    fuzz_roundtrip(buf.get(..wire_len).unwrap_or(&buf));

    // The typed view, rebuilt into a message, must survive an encode/decode cycle.
    let Ok(rebuilt) = rebuild(&message) else {
        return;
    };
    let bytes = match rebuilt.encode() {
        Ok(b) => b,
        Err(e) => panic!("a rebuilt {kind} failed to encode: {e}"),
    };
    match Message::decode(&bytes) {
        Ok(again) => assert_eq!(again, rebuilt, "rebuilt {kind} does not round-trip"),
        Err(e) => panic!("a rebuilt {kind} failed to decode: {e}"),
    }
}

/// Reads fuzz input as a stream of small numbers; returns 0 when exhausted.
struct Ops<'a>(&'a [u8]);

impl Ops<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Router addresses the harness uses (both belong to the one router engine).
const FUZZ_ROUTERS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 1, 1)];
/// Cache addresses; the last one is a real [`CacheEngine`].
const FUZZ_CACHES: [Ipv4Addr; 5] = [
    Ipv4Addr::new(10, 0, 0, 2),
    Ipv4Addr::new(10, 0, 0, 3),
    Ipv4Addr::new(10, 0, 0, 4),
    Ipv4Addr::new(10, 0, 0, 5),
    Ipv4Addr::new(10, 0, 0, 9),
];

/// The harness's two services: standard 0 without security, dynamic 90 with MD5.
fn fuzz_service(i: u8) -> (ServiceInfo, Security) {
    if i % 2 == 0 {
        (ServiceInfo::standard(0), Security::None)
    } else {
        (
            ServiceInfo::dynamic(90, 6, 200, ServiceFlags::SRC_IP_HASH, &[80, 443]),
            Security::Md5(Password::new(b"secret")),
        )
    }
}

/// Operation-list target (quinn `fuzz/streams.rs` style): the input is a list of operations —
/// raw datagrams, well-formed HERE_I_AMs and REDIRECT_ASSIGNs with right or wrong Receive IDs
/// and change numbers, time steps, adjacency changes, reconfigurations, and exchanges with a
/// real [`CacheEngine`] — applied to a [`RouterEngine`]. After every operation: nothing
/// panicked, every datagram the engines send decodes strictly, and every installed
/// assignment has each bucket or mask value on one usable cache or none.
pub fn fuzz_router_ops(data: &[u8]) {
    run_router_ops(data);
}

/// What an operation list reached (for tests of the harness itself).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpsSummary {
    /// Operations applied.
    pub steps: usize,
    /// Non-empty assignments the router announced.
    pub assignments: usize,
    /// Most usable caches seen in service 0.
    pub max_usable: usize,
}

/// [`fuzz_router_ops`], returning what the operations reached.
pub fn run_router_ops(data: &[u8]) -> OpsSummary {
    let mut summary = OpsSummary::default();
    #[allow(clippy::disallowed_methods)] // the harness's clock origin; only offsets matter
    let base = Instant::now();
    let mut now = base;
    let mut ops = Ops(data);
    let mut router = RouterEngine::new();
    for i in 0..2 {
        let (service, security) = fuzz_service(i);
        let config = RouterServiceConfig {
            security,
            ..if i == 0 {
                RouterServiceConfig::standard(service.service_id)
            } else {
                RouterServiceConfig::dynamic(service.service_id)
            }
        };
        if let Err(e) = router.add_service(config) {
            panic!("harness configuration: {e}");
        }
    }
    let cache_addr = FUZZ_CACHES[4];
    let cache_config = CacheConfig {
        forwarding: vec![ForwardingMethod::L2, ForwardingMethod::Gre],
        assignment: vec![AssignmentMethod::Hash, AssignmentMethod::Mask],
        ..CacheConfig::new(cache_addr, FUZZ_ROUTERS.to_vec())
    }
    .with_service(CacheServiceConfig::new(ServiceInfo::standard(0)));
    let mut cache = match CacheEngine::new(now, cache_config) {
        Ok(c) => c,
        Err(e) => panic!("harness configuration: {e}"),
    };
    let mut to_cache: Vec<(Ipv4Addr, Vec<u8>)> = Vec::new();
    let mut to_router: Vec<(Ipv4Addr, Ipv4Addr, Vec<u8>)> = Vec::new();

    let mut steps = 0;
    while !ops.is_empty() && steps < 4096 {
        steps += 1;
        let op = ops.u8();
        let cache_ip = FUZZ_CACHES[usize::from(ops.u8()) % FUZZ_CACHES.len()];
        let local = FUZZ_ROUTERS[usize::from(ops.u8()) % FUZZ_ROUTERS.len()];
        match op % 9 {
            0 => {
                let len = usize::from(ops.u8()) * 4;
                let raw = ops.bytes(len).to_vec();
                router.handle_message(now, cache_ip, local, &raw);
            }
            1 => {
                let hia = fuzz_here_i_am_from(&mut ops, &router, cache_ip, local);
                router.handle_message(now, cache_ip, local, &hia);
            }
            2 => {
                let ra = fuzz_redirect_assign_from(&mut ops, &router, cache_ip);
                router.handle_message(now, cache_ip, local, &ra);
            }
            3 => {
                now += Duration::from_millis(u64::from(ops.u8()) * 250);
                router.handle_timeout(now);
                cache.handle_timeout(now);
            }
            4 => router.set_l2_adjacent(now, cache_ip, ops.u8() % 2 == 0),
            5 => {
                let bits = ops.u8();
                let config = RouterServiceConfig {
                    forwarding: ForwardingMethods(u32::from(bits & 3)),
                    packet_return: ReturnMethods(u32::from((bits >> 2) & 3)),
                    assignment: AssignmentMethods(u32::from((bits >> 4) & 3)),
                    group_list: (bits & 0x40 != 0).then(|| {
                        let pick = ops.u8();
                        FUZZ_CACHES
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| pick & (1 << i) != 0)
                            .map(|(_, a)| (*a).into())
                            .collect()
                    }),
                    ..RouterServiceConfig::standard(0)
                };
                // Invalid configurations are refused and change nothing.
                let _ = router.reconfigure(now, config);
            }
            6 => {
                // Deliver what the engines exchanged so far, in order.
                for (src, bytes) in std::mem::take(&mut to_cache) {
                    cache.handle_message(now, src, &bytes);
                }
                for (src, dst, bytes) in std::mem::take(&mut to_router) {
                    router.handle_message(now, src, dst, &bytes);
                }
            }
            7 => {
                let len = usize::from(ops.u8()) * 4;
                let raw = ops.bytes(len).to_vec();
                cache.handle_message(now, local, &raw);
            }
            _ => {
                // Reflect a router datagram back at it (an I_SEE_YOU is never accepted).
                if let Some((_, bytes)) = to_cache.first() {
                    let bytes = bytes.clone();
                    router.handle_message(now, cache_ip, local, &bytes);
                }
            }
        }
        summary.assignments +=
            check_engines(now, &mut router, &mut cache, &mut to_cache, &mut to_router);
        let usable = router.membership(0).map_or(0, |(_, m)| m.len());
        summary.max_usable = summary.max_usable.max(usable);
    }
    summary.steps = steps;
    summary
}

/// Drains both engines, checks their output, and queues what goes between them; returns the
/// number of non-empty assignments announced.
fn check_engines(
    now: Instant,
    router: &mut RouterEngine,
    cache: &mut CacheEngine,
    to_cache: &mut Vec<(Ipv4Addr, Vec<u8>)>,
    to_router: &mut Vec<(Ipv4Addr, Ipv4Addr, Vec<u8>)>,
) -> usize {
    let mut announced = 0;
    let mut buf = Vec::new();
    while let Some(t) = router.poll_transmit(now, &mut buf) {
        let bytes = buf.get(..t.size).unwrap_or(&[]).to_vec();
        match Message::decode(&bytes) {
            Ok(m) => assert!(
                matches!(m.kind, MessageType::ISeeYou | MessageType::RemovalQuery),
                "a router sent a {}",
                m.kind
            ),
            Err(e) => panic!("the router sent an undecodable datagram: {e}"),
        }
        if t.dst == cache.config().address && to_cache.len() < 64 {
            to_cache.push((t.src, bytes));
        }
    }
    while let Some(t) = cache.poll_transmit(now, &mut buf) {
        let bytes = buf.get(..t.size).unwrap_or(&[]).to_vec();
        if let Err(e) = Message::decode(&bytes) {
            panic!("the cache sent an undecodable datagram: {e}");
        }
        if to_router.len() < 64 {
            to_router.push((t.src, t.dst, bytes));
        }
    }
    while let Some(ev) = router.poll_event() {
        if let RouterEvent::AssignmentChanged { assignment, .. } = ev {
            if let Err(e) = assignment.check_invariants() {
                panic!("an announced assignment is broken: {e}");
            }
            announced += usize::from(!assignment.is_empty());
        }
    }
    while cache.poll_event().is_some() {}
    if let Err(e) = router.check_invariants() {
        panic!("router invariant: {e}");
    }
    announced
}

/// A well-formed HERE_I_AM whose echo, capabilities and data come from the input.
fn fuzz_here_i_am_from(
    ops: &mut Ops<'_>,
    router: &RouterEngine,
    cache: Ipv4Addr,
    local: Ipv4Addr,
) -> Vec<u8> {
    let (service, security) = fuzz_service(ops.u8());
    let mode = ops.u8();
    let last_sent = router
        .cache(service.service_id, cache)
        .and_then(|c| c.last_receive_id_sent);
    let echo = match mode % 4 {
        0 => None,
        1 => Some(ops.u32()),
        _ => Some(last_sent.unwrap_or(0)),
    };
    let caps = ops.u8();
    let mask = caps & 0x80 != 0;
    let data = if mask {
        AssignmentData::Mask(MaskAssignmentData {
            sets: vec![MaskValueSet {
                mask: MaskElement {
                    dst_ip: 0x1741,
                    ..MaskElement::default()
                },
                values: Vec::new(),
            }],
            weight: u16::from(ops.u8()),
            status: 0,
        })
    } else {
        AssignmentData::Hash(HashAssignmentData {
            weight: u16::from(ops.u8()) * 100,
            ..HashAssignmentData::default()
        })
    };
    let view = WebCacheViewInfo {
        change_number: 1,
        routers: echo
            .map(|receive_id| RouterIdElement {
                router_ip: local,
                receive_id,
            })
            .into_iter()
            .collect(),
        caches: Vec::new(),
    };
    let mut hia = HereIAm::new(service, WebCacheIdentityElement::new(cache, data), view);
    if caps & 0x40 == 0 {
        hia.capabilities = Some(CapabilitiesInfo::methods(
            ForwardingMethods(u32::from(caps & 3)),
            AssignmentMethods(u32::from((caps >> 2) & 3)),
            ReturnMethods(u32::from((caps >> 4) & 3)),
        ));
    }
    security.encode(&hia.into_message()).unwrap_or_default()
}

/// A well-formed REDIRECT_ASSIGN (hash, mask or alternate mask) whose router element and
/// tables come from the input.
fn fuzz_redirect_assign_from(ops: &mut Ops<'_>, router: &RouterEngine, from: Ipv4Addr) -> Vec<u8> {
    let (service, security) = fuzz_service(ops.u8());
    let cache = router.cache(service.service_id, from);
    let mode = ops.u8();
    let receive_id = match cache.and_then(|c| c.last_receive_id_sent) {
        Some(id) if mode & 1 == 0 => id,
        _ => ops.u32(),
    };
    let change_number = match router.membership(service.service_id) {
        Some((n, _)) if mode & 2 == 0 => n,
        _ => ops.u32(),
    };
    let router_ip = cache.map_or(FUZZ_ROUTERS[0], |c| c.router_id);
    let routers = vec![RouterAssignmentElement {
        router_ip,
        receive_id,
        change_number,
    }];
    let pick = ops.u8();
    let caches: Vec<Ipv4Addr> = FUZZ_CACHES
        .iter()
        .enumerate()
        .filter(|(i, _)| pick & (1 << i) != 0)
        .map(|(_, a)| *a)
        .collect();
    let key = AssignmentKey {
        cache_ip: from,
        change_number: ops.u32(),
    };
    let seed = ops.u8();
    let assignment = match (mode >> 2) % 4 {
        0 => {
            let mut table = HashBucketsAssignment::unassigned(caches);
            for (i, b) in table.buckets.iter_mut().enumerate() {
                // Indexes past the list, the A flag and 0xFF all occur.
                *b = (i as u8)
                    .wrapping_mul(seed | 1)
                    .rotate_left(u32::from(seed % 8));
            }
            RedirectAssignment::Hash(AssignmentInfo {
                key,
                routers,
                buckets: table,
            })
        }
        1 => {
            let mask = MaskElement {
                dst_ip: u32::from(seed) << 4,
                src_port: u16::from(pick),
                ..MaskElement::default()
            };
            let values = (0..u32::from(seed % 32))
                .map(|i| ValueElement {
                    src_ip: 0,
                    dst_ip: (i << 4) & mask.dst_ip,
                    src_port: 0,
                    dst_port: 0,
                    cache_ip: FUZZ_CACHES[i as usize % FUZZ_CACHES.len()],
                })
                .collect();
            RedirectAssignment::Alternate(AlternateAssignment {
                key,
                routers,
                body: AssignmentBody::Mask(vec![MaskValueSet { mask, values }]),
            })
        }
        2 => RedirectAssignment::Alternate(AlternateAssignment {
            key,
            routers,
            body: AssignmentBody::AltMask(vec![AltMaskValueSet {
                mask: MaskElement {
                    dst_ip: u32::from(seed),
                    ..MaskElement::default()
                },
                caches: caches
                    .iter()
                    .map(|c| WebCacheValueElement {
                        cache_ip: *c,
                        vsns: vec![u32::from(seed), u32::from(pick), 0, u32::MAX],
                    })
                    .collect(),
            }]),
        }),
        _ => RedirectAssignment::Alternate(AlternateAssignment {
            key,
            routers,
            body: AssignmentBody::Unknown {
                kind: 7,
                data: vec![0; 4],
            },
        }),
    };
    let msg = RedirectAssign::new(service, assignment).into_message();
    security.encode(&msg).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junk_does_not_panic() {
        for data in [
            &[][..],
            &[0; 3],
            &[0xff; 64],
            &[0, 0, 0, 10, 2, 0, 0, 4, 0, 0, 0, 0],
        ] {
            fuzz_here_i_am(data);
            fuzz_i_see_you(data);
            fuzz_redirect_assign(data);
            fuzz_removal_query(data);
            fuzz_roundtrip(data);
            fuzz_router_ops(data);
        }
    }

    /// A scripted operation list: a cache joins (HERE_I_AM, then the right echo), the real
    /// cache engine talks to the router, a REDIRECT_ASSIGN with the right numbers, time passes.
    #[test]
    fn engine_operations() {
        let mut script = vec![];
        for _ in 0..2 {
            // op 1 (HERE_I_AM), cache 0, router 0, service 0, echo = last sent, caps GRE/hash/GRE.
            script.extend_from_slice(&[1, 0, 0, 0, 2, 0x15, 100]);
        }
        // op 2 (REDIRECT_ASSIGN), cache 0, router 0, service 0, right numbers, hash, caches {0}.
        script.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1]);
        // op 3 (time) 5 s, then op 6 (exchange with the cache engine) twice, 8 times over.
        for _ in 0..8 {
            script.extend_from_slice(&[3, 0, 0, 20, 6, 0, 0, 6, 0, 0]);
        }
        let summary = run_router_ops(&script);
        assert_eq!(summary.steps, 27);
        assert!(summary.assignments >= 1, "{summary:?}");
        // The real cache engine joined too (fast join after its first I_SEE_YOU).
        assert_eq!(summary.max_usable, 2, "{summary:?}");
    }
}
