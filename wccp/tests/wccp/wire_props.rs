//! Property tests: every message type and every component round-trips (structured value →
//! encode → decode == value), arbitrary and mutated bytes never panic a decoder, and the
//! fuzzing oracles hold on them.

use std::net::Ipv4Addr;

use proptest::collection::vec;
use proptest::prelude::*;
use wccp::fuzzing;
use wccp::security::{Password, Security};
use wccp::wire::{
    AddressFamily, AddressTable, AltMaskAssignmentData, AltMaskValueSet, AlternateAssignment,
    AlternateAssignmentMap, AssignmentBody, AssignmentData, AssignmentInfo, AssignmentKey,
    AssignmentMap, AssignmentMethods, CapabilitiesInfo, Capability, Command, CommandExtension,
    Component, ExtendedAssignmentData, ForwardingMethods, HashAssignmentData,
    HashBucketsAssignment, HereIAm, ISeeYou, IdentityFlags, MaskAssignmentData, MaskElement,
    MaskValueSet, Message, MessageType, RedirectAssign, RedirectAssignment, RemovalQuery,
    ReturnMethods, RouterAssignmentElement, RouterIdElement, RouterIdentityInfo, RouterQueryInfo,
    RouterViewInfo, SecurityInfo, ServiceFlags, ServiceInfo, ServiceType, ValueElement,
    WebCacheIdentityElement, WebCacheValueElement, WebCacheViewInfo,
};

fn ip() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

/// Octets whose length is a multiple of 4 (keeps the enclosing component aligned).
fn words(max_words: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<[u8; 4]>(), 0..=max_words).prop_map(|w| w.concat())
}

fn version() -> impl Strategy<Value = u16> {
    (0x0200u16..=0x02ff).boxed()
}

fn security() -> impl Strategy<Value = SecurityInfo> {
    prop_oneof![
        Just(SecurityInfo::None),
        any::<[u8; 16]>().prop_map(|digest| SecurityInfo::Md5 { digest }),
        (2u32.., words(4)).prop_map(|(option, data)| SecurityInfo::Unknown { option, data }),
    ]
}

fn service() -> impl Strategy<Value = ServiceInfo> {
    (
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<u32>(),
        any::<[u16; 8]>(),
    )
        .prop_map(
            |(t, service_id, priority, protocol, flags, ports)| ServiceInfo {
                service_type: ServiceType::from(t),
                service_id,
                priority,
                protocol,
                flags: ServiceFlags(flags),
                ports,
            },
        )
}

fn router_id() -> impl Strategy<Value = RouterIdElement> {
    (ip(), any::<u32>()).prop_map(|(router_ip, receive_id)| RouterIdElement {
        router_ip,
        receive_id,
    })
}

fn key() -> impl Strategy<Value = AssignmentKey> {
    (ip(), any::<u32>()).prop_map(|(cache_ip, change_number)| AssignmentKey {
        cache_ip,
        change_number,
    })
}

fn mask_element() -> impl Strategy<Value = MaskElement> {
    (any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>()).prop_map(
        |(src_ip, dst_ip, src_port, dst_port)| MaskElement {
            src_ip,
            dst_ip,
            src_port,
            dst_port,
        },
    )
}

fn mask_sets() -> impl Strategy<Value = Vec<MaskValueSet>> {
    let value = (any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>(), ip()).prop_map(
        |(src_ip, dst_ip, src_port, dst_port, cache_ip)| ValueElement {
            src_ip,
            dst_ip,
            src_port,
            dst_port,
            cache_ip,
        },
    );
    vec(
        (mask_element(), vec(value, 0..4)).prop_map(|(mask, values)| MaskValueSet { mask, values }),
        0..3,
    )
}

fn alt_mask_sets() -> impl Strategy<Value = Vec<AltMaskValueSet>> {
    let cache = (ip(), vec(any::<u32>(), 0..4))
        .prop_map(|(cache_ip, vsns)| WebCacheValueElement { cache_ip, vsns });
    vec(
        (mask_element(), vec(cache, 0..3))
            .prop_map(|(mask, caches)| AltMaskValueSet { mask, caches }),
        0..3,
    )
}

fn hash_buckets() -> impl Strategy<Value = HashBucketsAssignment> {
    (vec(ip(), 0..4), vec(any::<u8>(), 256)).prop_map(|(caches, b)| HashBucketsAssignment {
        caches,
        buckets: Box::new(b.try_into().expect("256 octets")),
    })
}

fn hash_data() -> impl Strategy<Value = HashAssignmentData> {
    (any::<[u8; 32]>(), any::<u16>(), any::<u16>()).prop_map(|(b, weight, status)| {
        HashAssignmentData {
            buckets: wccp::hash::BucketBitmap(b),
            weight,
            status,
        }
    })
}

fn mask_data() -> impl Strategy<Value = MaskAssignmentData> {
    (mask_sets(), any::<u16>(), any::<u16>()).prop_map(|(sets, weight, status)| {
        MaskAssignmentData {
            sets,
            weight,
            status,
        }
    })
}

fn assignment_data() -> impl Strategy<Value = AssignmentData> {
    let extended = prop_oneof![
        hash_data().prop_map(ExtendedAssignmentData::Hash),
        mask_data().prop_map(ExtendedAssignmentData::Mask),
        (alt_mask_sets(), any::<u16>(), any::<u16>()).prop_map(|(sets, weight, status)| {
            ExtendedAssignmentData::AltMask(AltMaskAssignmentData {
                sets,
                weight,
                status,
            })
        }),
        (any::<u16>(), any::<u16>())
            .prop_map(|(weight, status)| ExtendedAssignmentData::WeightStatus { weight, status }),
        (4u16.., words(3)).prop_map(|(kind, data)| ExtendedAssignmentData::Unknown { kind, data }),
    ];
    prop_oneof![
        hash_data().prop_map(AssignmentData::Hash),
        mask_data().prop_map(AssignmentData::Mask),
        Just(AssignmentData::None),
        extended.prop_map(AssignmentData::Extended),
    ]
}

fn identity() -> impl Strategy<Value = WebCacheIdentityElement> {
    (ip(), any::<u16>(), any::<u16>(), assignment_data()).prop_map(
        |(cache_ip, rev, flags, data)| {
            WebCacheIdentityElement {
                cache_ip,
                hash_revision: rev,
                // Type bits are implied by `data` (see IdentityFlags).
                flags: IdentityFlags(flags & !IdentityFlags::TYPE_MASK.bits()),
                data,
            }
        },
    )
}

fn capabilities() -> impl Strategy<Value = CapabilitiesInfo> {
    let cap = prop_oneof![
        any::<u32>().prop_map(|m| Capability::ForwardingMethod(ForwardingMethods(m))),
        any::<u32>().prop_map(|m| Capability::AssignmentMethod(AssignmentMethods(m))),
        any::<u32>().prop_map(|m| Capability::PacketReturnMethod(ReturnMethods(m))),
        (any::<u16>(), any::<u16>())
            .prop_map(|(upper, lower)| Capability::TransmitT { upper, lower }),
        any::<[u8; 4]>().prop_map(|b| Capability::TimerScale {
            timeout_upper: b[0],
            timeout_lower: b[1],
            ra_upper: b[2],
            ra_lower: b[3],
        }),
        (
            any::<u16>().prop_filter("unknown", |k| !(1..=5).contains(k)),
            words(2)
        )
            .prop_map(|(kind, value)| Capability::Unknown { kind, value }),
    ];
    vec(cap, 0..6).prop_map(|elements| CapabilitiesInfo { elements })
}

fn command() -> impl Strategy<Value = CommandExtension> {
    let cmd = prop_oneof![
        ip().prop_map(Command::Shutdown),
        ip().prop_map(Command::ShutdownResponse),
        (3u16.., words(2)).prop_map(|(kind, data)| Command::Unknown { kind, data }),
    ];
    vec(cmd, 0..3).prop_map(|commands| CommandExtension { commands })
}

fn address_table() -> impl Strategy<Value = AddressTable> {
    (any::<u16>(), 1u16..=4).prop_flat_map(|(family, words_per)| {
        let len = usize::from(words_per) * 4;
        vec(vec(any::<u8>(), len), 0..3).prop_map(move |addresses| AddressTable {
            family: AddressFamily::from(family),
            address_length: words_per * 4,
            addresses,
        })
    })
}

fn assignment_body() -> impl Strategy<Value = AssignmentBody> {
    prop_oneof![
        hash_buckets().prop_map(AssignmentBody::Hash),
        mask_sets().prop_map(AssignmentBody::Mask),
        alt_mask_sets().prop_map(AssignmentBody::AltMask),
        (3u16.., words(3)).prop_map(|(kind, data)| AssignmentBody::Unknown { kind, data }),
    ]
}

fn router_assignments() -> impl Strategy<Value = Vec<RouterAssignmentElement>> {
    vec(
        (ip(), any::<u32>(), any::<u32>()).prop_map(|(router_ip, receive_id, change_number)| {
            RouterAssignmentElement {
                router_ip,
                receive_id,
                change_number,
            }
        }),
        0..3,
    )
}

fn here_i_am() -> impl Strategy<Value = HereIAm> {
    (
        version(),
        security(),
        service(),
        identity(),
        (any::<u32>(), vec(router_id(), 0..4), vec(ip(), 0..4)),
        proptest::option::of(capabilities()),
        proptest::option::of(command()),
        proptest::option::of(address_table()),
    )
        .prop_map(
            |(version, security, service, identity, (change_number, routers, caches), c, k, t)| {
                HereIAm {
                    version,
                    security,
                    service,
                    identity,
                    view: WebCacheViewInfo {
                        change_number,
                        routers,
                        caches,
                    },
                    capabilities: c,
                    command: k,
                    address_table: t,
                }
            },
        )
}

fn i_see_you() -> impl Strategy<Value = ISeeYou> {
    (
        (version(), security(), service()),
        (router_id(), ip(), vec(ip(), 0..4)),
        (any::<u32>(), key(), vec(ip(), 0..4), vec(identity(), 0..3)),
        proptest::option::of(mask_sets().prop_map(|sets| AssignmentMap { sets })),
        proptest::option::of(assignment_body().prop_map(|body| AlternateAssignmentMap { body })),
        proptest::option::of(capabilities()),
        proptest::option::of(command()),
        proptest::option::of(address_table()),
    )
        .prop_map(
            |(
                (version, security, service),
                (router, sent_to, received_from),
                view,
                m,
                am,
                c,
                k,
                t,
            )| {
                ISeeYou {
                    version,
                    security,
                    service,
                    identity: RouterIdentityInfo {
                        router,
                        sent_to,
                        received_from,
                    },
                    view: RouterViewInfo {
                        member_change_number: view.0,
                        key: view.1,
                        routers: view.2,
                        caches: view.3,
                    },
                    assignment_map: m,
                    alternate_assignment_map: am,
                    capabilities: c,
                    command: k,
                    address_table: t,
                }
            },
        )
}

fn redirect_assign() -> impl Strategy<Value = RedirectAssign> {
    let assignment = prop_oneof![
        (key(), router_assignments(), hash_buckets()).prop_map(|(key, routers, buckets)| {
            RedirectAssignment::Hash(AssignmentInfo {
                key,
                routers,
                buckets,
            })
        }),
        (key(), router_assignments(), assignment_body()).prop_map(|(key, routers, body)| {
            RedirectAssignment::Alternate(AlternateAssignment { key, routers, body })
        }),
    ];
    (
        version(),
        security(),
        service(),
        assignment,
        proptest::option::of(address_table()),
    )
        .prop_map(
            |(version, security, service, assignment, address_table)| RedirectAssign {
                version,
                security,
                service,
                assignment,
                address_table,
            },
        )
}

fn removal_query() -> impl Strategy<Value = RemovalQuery> {
    (
        version(),
        security(),
        service(),
        router_id(),
        ip(),
        ip(),
        proptest::option::of(address_table()),
    )
        .prop_map(
            |(version, security, service, router, sent_to, target, address_table)| RemovalQuery {
                version,
                security,
                service,
                query: RouterQueryInfo {
                    router,
                    sent_to,
                    target,
                },
                address_table,
            },
        )
}

/// Any component, including unknown types kept raw.
fn component() -> impl Strategy<Value = Component> {
    prop_oneof![
        security().prop_map(Component::Security),
        service().prop_map(Component::Service),
        identity().prop_map(Component::WebCacheIdentity),
        capabilities().prop_map(Component::Capabilities),
        command().prop_map(Component::CommandExtension),
        address_table().prop_map(Component::AddressTable),
        mask_sets().prop_map(|sets| Component::AssignmentMap(AssignmentMap { sets })),
        (
            any::<u16>().prop_filter("unknown", |k| (9..=12).contains(k) || *k > 17),
            words(4)
        )
            .prop_map(|(kind, body)| Component::Unknown { kind, body }),
    ]
}

/// The Squid-capture seeds of the round-trip fuzz corpus (every message type).
fn capture_seeds() -> Vec<Vec<u8>> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/wccp_roundtrip");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("corpus directory")
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read(p).expect("corpus file"))
        .collect()
}

/// Encodes, decodes strictly, and checks the bytes survive too.
fn round_trip(m: &Message) -> Message {
    let bytes = m.encode().expect("encodable");
    let back = Message::decode(&bytes).expect("decodable");
    assert_eq!(back.encode().expect("re-encodable"), bytes);
    back
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn here_i_am_round_trips(h in here_i_am()) {
        let back = round_trip(&h.clone().into_message());
        prop_assert_eq!(HereIAm::try_from(&back).unwrap(), h);
    }

    #[test]
    fn i_see_you_round_trips(i in i_see_you()) {
        let back = round_trip(&i.clone().into_message());
        prop_assert_eq!(ISeeYou::try_from(&back).unwrap(), i);
    }

    #[test]
    fn redirect_assign_round_trips(r in redirect_assign()) {
        let back = round_trip(&r.clone().into_message());
        prop_assert_eq!(RedirectAssign::try_from(&back).unwrap(), r);
    }

    #[test]
    fn removal_query_round_trips(q in removal_query()) {
        let back = round_trip(&q.clone().into_message());
        prop_assert_eq!(RemovalQuery::try_from(&back).unwrap(), q);
    }

    /// Any list of components, in any order, with duplicates and unknown types.
    #[test]
    fn generic_message_round_trips(
        kind in any::<u32>().prop_map(MessageType::from),
        version in version(),
        components in vec(component(), 0..6),
    ) {
        let m = Message { kind, version, components };
        prop_assert_eq!(round_trip(&m), m);
    }

    /// MD5: a signed message verifies with its password and with no other.
    #[test]
    fn md5_sign_then_verify(q in removal_query(), secret in vec(any::<u8>(), 0..12)) {
        let sec = Security::Md5(Password::new(&secret));
        let bytes = sec.encode(&q.into_message()).unwrap();
        prop_assert!(sec.verify(&bytes).is_ok());
        let mut other = secret.clone();
        other.resize(8, 0);
        other[0] ^= 0x01;
        prop_assert!(Security::Md5(Password::new(&other)).verify(&bytes).is_err());
    }

    /// Decoders never panic on arbitrary input, and the fuzz oracles hold.
    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..400)) {
        let _ = Message::decode(&data);
        let _ = Message::decode_datagram(&data);
        let _ = Component::decode(&data);
        fuzzing::fuzz_here_i_am(&data);
        fuzzing::fuzz_i_see_you(&data);
        fuzzing::fuzz_redirect_assign(&data);
        fuzzing::fuzz_removal_query(&data);
        fuzzing::fuzz_roundtrip(&data);
    }

    /// Mutating a valid message (bytes flipped, lengths changed) never panics either; this
    /// reaches far deeper than random bytes.
    #[test]
    fn mutated_messages_never_panic(
        i in i_see_you(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = i.into_message().encode().unwrap();
        for (at, v) in edits {
            let n = at.index(bytes.len());
            bytes[n] = v;
        }
        let keep = cut.index(bytes.len() + 1);
        for data in [&bytes[..], &bytes[..keep]] {
            fuzzing::fuzz_i_see_you(data);
            fuzzing::fuzz_roundtrip(data);
        }
    }

    /// Mutations of real Squid datagrams (and of the responder's) never panic.
    #[test]
    fn mutated_captures_never_panic(
        seed in prop::sample::select(capture_seeds()),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = seed;
        for (at, v) in edits {
            let n = at.index(bytes.len());
            bytes[n] = v;
        }
        let keep = cut.index(bytes.len() + 1);
        for data in [&bytes[..], &bytes[..keep]] {
            fuzzing::fuzz_here_i_am(data);
            fuzzing::fuzz_i_see_you(data);
            fuzzing::fuzz_redirect_assign(data);
            fuzzing::fuzz_roundtrip(data);
        }
    }
}
