//! Test vectors: every WCCP datagram in `shared/testdata/squid/` (see its README for origin:
//! Squid 5.7 and 7.6 as the cache, a throw-away Python responder as the "router"), checked
//! against the tshark decodes (`.txt`) next to the captures, and re-encoded byte for byte.

use std::net::Ipv4Addr;

use crate::common::{capture, capture_names, unpad_squid64, Packet};
use wccp::hash::BucketBitmap;
use wccp::mask::value_for_vsn;
use wccp::security::{Password, Security};
use wccp::wire::{
    AssignmentBody, AssignmentData, AssignmentKey, AssignmentMethods, CapabilitiesInfo,
    ComponentType, ForwardingMethods, Header, HereIAm, ISeeYou, IdentityFlags, MaskElement,
    Message, MessageType, RedirectAssign, RedirectAssignment, ReturnMethods,
    RouterAssignmentElement, RouterIdElement, SecurityInfo, SecurityOption, ServiceFlags,
    ServiceInfo, ServiceType, VERSION_2_00,
};
use wccp::{Error, LengthProblem};

/// Squid's address (namespace wccpA).
const SQUID: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// The responder / first router.
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// The second router of the two-router capture.
const ROUTER2: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 3);
/// The fictitious second cache of `s76-squid64-hash-gre-std0-2caches`.
const EXTRA_CACHE: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 5);
/// Squid's mask: 0x1741 on the destination address (reference §7.3).
const SQUID_MASK: MaskElement = MaskElement {
    src_ip: 0,
    dst_ip: 0x1741,
    src_port: 0,
    dst_port: 0,
};

/// I_SEE_YOUs in the responder's "squid64" layout (4 zero octets after every component):
/// everything the responder sent except in the `-spec-` captures.
fn is_squid64_isy(name: &str, p: &Packet) -> bool {
    p.src == ROUTER && !name.contains("-spec-")
}

fn md5(secret: &str) -> Security {
    Security::Md5(Password::new(secret.as_bytes()))
}

/// Decodes, checks the lossless re-encoding, and returns the message.
fn decode(name: &str, p: &Packet) -> Message {
    let m = Message::decode(&p.payload).unwrap_or_else(|e| panic!("{name} frame {}: {e}", p.frame));
    assert_eq!(
        m.encode().expect("a decoded message encodes"),
        p.payload,
        "{name} frame {}: re-encoding differs",
        p.frame
    );
    m
}

/// The HERE_I_AMs Squid sent in capture `name`, as typed views.
fn here_i_ams(name: &str) -> Vec<(Packet, HereIAm)> {
    capture(name)
        .into_iter()
        .filter(|p| p.src == SQUID && Header::peek_type(&p.payload) == Some(MessageType::HereIAm))
        .map(|p| {
            let m = decode(name, &p);
            let h = HereIAm::try_from(&m).expect("a complete HERE_I_AM");
            (p, h)
        })
        .collect()
}

/// The REDIRECT_ASSIGNs Squid 7.6 sent in capture `name`.
fn redirect_assigns(name: &str) -> Vec<(Packet, RedirectAssign)> {
    capture(name)
        .into_iter()
        .filter(|p| Header::peek_type(&p.payload) == Some(MessageType::RedirectAssign))
        .map(|p| {
            let m = decode(name, &p);
            let r = RedirectAssign::try_from(&m).expect("a complete REDIRECT_ASSIGN");
            (p, r)
        })
        .collect()
}

fn hash_data(h: &HereIAm) -> (BucketBitmap, u16, u16) {
    match &h.identity.data {
        AssignmentData::Hash(d) => (d.buckets, d.weight, d.status),
        other => panic!("expected hash data, got {other:?}"),
    }
}

fn squid_view(h: &HereIAm, routers: &[Ipv4Addr]) {
    assert_eq!(
        h.view.change_number, 1,
        "Squid sends a constant change number 1"
    );
    let ids: Vec<RouterIdElement> = routers
        .iter()
        .map(|r| RouterIdElement {
            router_ip: *r,
            receive_id: 0,
        })
        .collect();
    assert_eq!(h.view.routers, ids);
    assert!(h.view.caches.is_empty());
}

fn caps(f: ForwardingMethods, a: AssignmentMethods, r: ReturnMethods) -> Option<CapabilitiesInfo> {
    Some(CapabilitiesInfo::methods(f, a, r))
}

/// Every datagram of every capture: decodes strictly and re-encodes byte for byte, except the
/// squid64 I_SEE_YOUs (checked below).
#[test]
fn every_capture_datagram_round_trips() {
    let names = capture_names();
    assert_eq!(names.len(), 23, "captures: {names:?}");
    let (mut total, mut decoded) = (0, 0);
    for name in &names {
        for p in capture(name) {
            total += 1;
            if is_squid64_isy(name, &p) {
                continue;
            }
            let m = decode(name, &p);
            let d = Message::decode_datagram(&p.payload).unwrap();
            assert_eq!(d.trailing, 0, "Squid never pads the datagram");
            assert_eq!(d.message, m);
            assert_eq!(m.version, VERSION_2_00);
            decoded += 1;
        }
    }
    assert_eq!((total, decoded), (159, 106));
}

/// The responder's squid64 I_SEE_YOUs carry 4 zero octets after each component. Right after
/// the Security Info (offset 16, or 32 with MD5) they read as a Security Info of length 0.
#[test]
fn squid64_i_see_yous_are_rejected_with_a_precise_error() {
    let mut rejected = 0;
    for name in capture_names() {
        for p in capture(&name)
            .into_iter()
            .filter(|p| is_squid64_isy(&name, p))
        {
            assert_eq!(Header::peek_type(&p.payload), Some(MessageType::ISeeYou));
            let at = if name.contains("md5") || name == "probe-badpw" {
                32
            } else {
                16
            };
            let err = Message::decode(&p.payload).unwrap_err();
            assert_eq!(
                err,
                Error::BadComponentLength {
                    component: ComponentType::SecurityInfo,
                    length: 0,
                    at,
                    problem: LengthProblem::WrongSize {
                        expected: "4 or 20"
                    },
                },
                "{name} frame {}",
                p.frame
            );
            assert!(err
                .to_string()
                .contains(&format!("at offset {at} has length 0")));
            // With the padding removed, the content is a well-formed I_SEE_YOU.
            let unpadded = unpad_squid64(&p.payload);
            let m = Message::decode(&unpadded).unwrap();
            assert_eq!(m.encode().unwrap(), unpadded);
            let isy = ISeeYou::try_from(&m).unwrap();
            assert_eq!(isy.identity.router.router_ip, ROUTER);
            assert_eq!(isy.identity.sent_to, ROUTER);
            assert_eq!(isy.identity.received_from, vec![SQUID]);
            assert_eq!(isy.view.routers, vec![ROUTER]);
            assert_eq!(isy.view.caches[0].cache_ip, SQUID);
            rejected += 1;
        }
    }
    assert_eq!(rejected, 53);
}

/// isy-spec / s76-spec: per-draft I_SEE_YOUs decode cleanly (Receive IDs 1, 2, …).
#[test]
fn spec_layout_i_see_yous_decode_cleanly() {
    for name in ["isy-spec-hash-gre-std0", "s76-spec-hash-gre-std0"] {
        let isys: Vec<ISeeYou> = capture(name)
            .into_iter()
            .filter(|p| p.src == ROUTER)
            .map(|p| ISeeYou::try_from(&decode(name, &p)).unwrap())
            .collect();
        assert_eq!(isys.len(), if name.starts_with("isy") { 5 } else { 4 });
        for (n, isy) in isys.iter().enumerate() {
            assert_eq!(isy.security, SecurityInfo::None);
            assert_eq!(isy.service, ServiceInfo::standard(0));
            assert_eq!(
                isy.identity.router,
                RouterIdElement {
                    router_ip: ROUTER,
                    receive_id: n as u32 + 1
                }
            );
            assert_eq!(isy.identity.sent_to, ROUTER);
            assert_eq!(isy.identity.received_from, vec![SQUID]);
            assert_eq!(isy.view.member_change_number, 1);
            assert_eq!(isy.view.key, AssignmentKey::NONE);
            assert_eq!(isy.view.routers, vec![ROUTER]);
            assert_eq!(isy.view.caches.len(), 1);
            let cache = &isy.view.caches[0];
            assert_eq!(cache.cache_ip, SQUID);
            assert_eq!(cache.data.weight_status(), Some((10000, 0)));
            // The responder advertises every method (3 = GRE|L2, hash|mask).
            assert_eq!(
                isy.capabilities,
                caps(
                    ForwardingMethods::GRE | ForwardingMethods::L2,
                    AssignmentMethods::HASH | AssignmentMethods::MASK,
                    ReturnMethods::GRE | ReturnMethods::L2
                )
            );
            assert!(isy.assignment_map.is_none());
        }
    }
}

/// hia-hash-gre-std0: hash, GRE/GRE, standard service 0, no security; 144-octet payloads.
#[test]
fn hia_hash_gre_std0() {
    let hias = here_i_ams("hia-hash-gre-std0");
    assert_eq!(hias.len(), 3);
    for (p, h) in &hias {
        assert_eq!((p.dst, p.payload.len()), (ROUTER, 144));
        assert_eq!(h.security, SecurityInfo::None);
        assert_eq!(h.service, ServiceInfo::standard(0));
        assert_eq!(h.identity.cache_ip, SQUID);
        assert_eq!(h.identity.hash_revision, 0);
        assert_eq!(h.identity.flags, IdentityFlags::empty());
        assert_eq!(h.identity.wire_flags(), 0x0000);
        assert_eq!(hash_data(h), (BucketBitmap::EMPTY, 10000, 0));
        squid_view(h, &[ROUTER]);
        assert_eq!(
            h.capabilities,
            caps(
                ForwardingMethods::GRE,
                AssignmentMethods::HASH,
                ReturnMethods::GRE
            )
        );
        assert!(h.command.is_none() && h.address_table.is_none());
        Security::None.verify(&p.payload).unwrap();
    }
}

/// hia-hash-gre-std0-md5: as above with `password=secret`; 160-octet payloads.
#[test]
fn hia_hash_gre_std0_md5() {
    let hias = here_i_ams("hia-hash-gre-std0-md5");
    assert_eq!(hias.len(), 3);
    for (p, h) in &hias {
        assert_eq!(p.payload.len(), 160);
        assert_eq!(h.security.option(), SecurityOption::Md5);
        assert_eq!(h.service, ServiceInfo::standard(0));
        assert_eq!(hash_data(h), (BucketBitmap::EMPTY, 10000, 0));
        squid_view(h, &[ROUTER]);
        md5("secret").verify(&p.payload).unwrap();
        assert_eq!(md5("secreT").verify(&p.payload), Err(Error::Md5Mismatch));
        assert_eq!(
            Security::None.verify(&p.payload),
            Err(Error::SecurityMismatch {
                expected: SecurityOption::None,
                found: SecurityOption::Md5
            })
        );
        // Re-signing the decoded message reproduces Squid's datagram.
        let m = Message::decode(&p.payload).unwrap();
        assert_eq!(md5("secret").encode(&m).unwrap(), p.payload);
    }
}

/// hia-mask-l2-std0(-md5): mask, L2/L2; Squid's mask identity element (§9).
#[test]
fn hia_mask_l2_std0() {
    for (name, len) in [("hia-mask-l2-std0", 132), ("hia-mask-l2-std0-md5", 148)] {
        let hias = here_i_ams(name);
        assert_eq!(hias.len(), 3);
        for (p, h) in &hias {
            assert_eq!(p.payload.len(), len);
            assert_eq!(h.service, ServiceInfo::standard(0));
            assert_eq!(h.identity.wire_flags(), 0x0002);
            let AssignmentData::Mask(m) = &h.identity.data else {
                panic!("{:?}", h.identity)
            };
            assert_eq!(m.sets.len(), 1);
            assert_eq!(m.sets[0].mask, SQUID_MASK);
            assert!(m.sets[0].values.is_empty());
            assert_eq!((m.weight, m.status), (0, 0));
            squid_view(h, &[ROUTER]);
            assert_eq!(
                h.capabilities,
                caps(
                    ForwardingMethods::L2,
                    AssignmentMethods::MASK,
                    ReturnMethods::L2
                )
            );
            if name.ends_with("md5") {
                md5("secret").verify(&p.payload).unwrap();
                assert_eq!(md5("abcdefgh").verify(&p.payload), Err(Error::Md5Mismatch));
            } else {
                Security::None.verify(&p.payload).unwrap();
            }
        }
    }
}

/// hia-hash-gre-dyn90: dynamic 90, TCP, priority 240, src_ip_hash + source_port_hash,
/// ports 80/443, weight 5000.
#[test]
fn hia_hash_gre_dyn90() {
    let hias = here_i_ams("hia-hash-gre-dyn90");
    assert_eq!(hias.len(), 3);
    for (_, h) in &hias {
        let s = &h.service;
        assert_eq!(
            (s.service_type, s.service_id, s.priority, s.protocol),
            (ServiceType::Dynamic, 90, 240, 6)
        );
        assert_eq!(s.flags.bits(), 0x0000_0015);
        assert_eq!(s.port_list(), &[80, 443]);
        assert_eq!(
            *s,
            ServiceInfo::dynamic(
                90,
                6,
                240,
                ServiceFlags::SRC_IP_HASH | ServiceFlags::SRC_PORT_HASH,
                &[80, 443]
            )
        );
        assert_eq!(hash_data(h), (BucketBitmap::EMPTY, 5000, 0));
        squid_view(h, &[ROUTER]);
    }
}

/// hia-mask-l2-dyn90-md5: dynamic 90, priority 200, dst_ip_hash + ports_source, ports
/// 80/443/8080, `password=abcdefgh`.
#[test]
fn hia_mask_l2_dyn90_md5() {
    let hias = here_i_ams("hia-mask-l2-dyn90-md5");
    assert_eq!(hias.len(), 3);
    for (p, h) in &hias {
        let s = &h.service;
        assert_eq!(
            (s.service_type, s.service_id, s.priority, s.protocol),
            (ServiceType::Dynamic, 90, 200, 6)
        );
        assert_eq!(s.flags.bits(), 0x0000_0032);
        assert!(s.flags.contains(ServiceFlags::PORTS_SOURCE));
        assert_eq!(s.port_list(), &[80, 443, 8080]);
        let AssignmentData::Mask(m) = &h.identity.data else {
            panic!("{:?}", h.identity)
        };
        assert_eq!(m.sets[0].mask, SQUID_MASK);
        md5("abcdefgh").verify(&p.payload).unwrap();
        assert_eq!(md5("secret").verify(&p.payload), Err(Error::Md5Mismatch));
    }
}

/// hia-hash-l2-std0-dyn91-2rtr: two routers, two services, 12 HERE_I_AMs (2 × 2 × 3).
#[test]
fn hia_hash_l2_two_routers_two_services() {
    let hias = here_i_ams("hia-hash-l2-std0-dyn91-2rtr");
    assert_eq!(hias.len(), 12);
    let dyn91 = ServiceInfo::dynamic(
        91,
        6,
        100,
        ServiceFlags::DST_IP_HASH
            | ServiceFlags::DST_PORT_HASH
            | ServiceFlags::SRC_IP_ALT_HASH
            | ServiceFlags::SRC_PORT_ALT_HASH,
        &[21, 22, 23, 25, 53, 110, 143, 993],
    );
    assert_eq!(dyn91.flags.bits(), 0x0000_051a);
    for (n, (p, h)) in hias.iter().enumerate() {
        // tshark: frames alternate .1/.3, services go 91, 91, 0, 0, 91, 91, …
        assert_eq!(p.dst, if n % 2 == 0 { ROUTER } else { ROUTER2 });
        let expected = if (n / 2) % 2 == 0 {
            &dyn91
        } else {
            &ServiceInfo::standard(0)
        };
        assert_eq!(&h.service, expected, "frame {}", p.frame);
        assert_eq!(p.payload.len(), 152);
        assert_eq!(hash_data(h), (BucketBitmap::EMPTY, 10000, 0));
        squid_view(h, &[ROUTER, ROUTER2]);
        assert_eq!(
            h.capabilities,
            caps(
                ForwardingMethods::L2,
                AssignmentMethods::HASH,
                ReturnMethods::GRE
            )
        );
    }
}

/// After a (squid64) I_SEE_YOU, Squid echoes the router's Receive ID in its next HERE_I_AM.
#[test]
fn squid_echoes_the_receive_id() {
    let hias = here_i_ams("s76-squid64-hash-gre-std0");
    let ids: Vec<u32> = hias
        .iter()
        .map(|(_, h)| h.view.routers[0].receive_id)
        .collect();
    assert_eq!(ids, vec![0, 1, 2, 3]);
}

/// s76-squid64-hash-gre-std0: Assignment Info, key 10.99.0.2/1, router 10.99.0.1 (Receive
/// ID 2, change 1), one cache, all 256 buckets → cache 0; 336-octet payload.
#[test]
fn redirect_assign_hash_one_cache() {
    for (name, service) in [
        ("s76-squid64-hash-gre-std0", ServiceInfo::standard(0)),
        (
            "s76-squid64-hash-gre-dyn90",
            ServiceInfo::dynamic(
                90,
                6,
                240,
                ServiceFlags::SRC_IP_HASH | ServiceFlags::SRC_PORT_HASH,
                &[80, 443],
            ),
        ),
    ] {
        let ras = redirect_assigns(name);
        assert_eq!(ras.len(), 1, "{name}");
        let (p, ra) = &ras[0];
        assert_eq!((p.src, p.dst, p.payload.len()), (SQUID, ROUTER, 336));
        assert_eq!(ra.service, service);
        let RedirectAssignment::Hash(a) = &ra.assignment else {
            panic!("{:?}", ra.assignment)
        };
        assert_eq!(
            a.key,
            AssignmentKey {
                cache_ip: SQUID,
                change_number: 1
            }
        );
        assert_eq!(
            a.routers,
            vec![RouterAssignmentElement {
                router_ip: ROUTER,
                receive_id: 2,
                change_number: 1
            }]
        );
        assert_eq!(a.buckets.caches, vec![SQUID]);
        assert!(a.buckets.buckets.iter().all(|b| *b == 0));
        assert_eq!(a.buckets.bucket_counts(), vec![256]);
    }
    assert!(redirect_assigns("s76-spec-hash-gre-std0").is_empty());
}

/// s76-squid64-hash-gre-std0-2caches: 170 × cache 0 (weight 10000), 86 × cache 1 (5000).
#[test]
fn redirect_assign_hash_two_caches() {
    let ras = redirect_assigns("s76-squid64-hash-gre-std0-2caches");
    assert_eq!(ras.len(), 1);
    let (p, ra) = &ras[0];
    assert_eq!(p.payload.len(), 340);
    let RedirectAssignment::Hash(a) = &ra.assignment else {
        panic!("{:?}", ra.assignment)
    };
    assert_eq!(a.buckets.caches, vec![SQUID, EXTRA_CACHE]);
    assert_eq!(a.buckets.bucket_counts(), vec![170, 86]);
    assert_eq!(a.buckets.unassigned_count(), 0);
    assert_eq!(&a.buckets.buckets[..6], &[0, 1, 0, 1, 0, 0]);
    assert_eq!(a.buckets.cache_for_bucket(1), Some(EXTRA_CACHE));
    // The router view Squid answered: both caches, with their weights.
    let isy = capture("s76-squid64-hash-gre-std0-2caches")
        .into_iter()
        .find(|p| p.src == ROUTER)
        .map(|p| ISeeYou::try_from(&Message::decode(&unpad_squid64(&p.payload)).unwrap()).unwrap())
        .unwrap();
    let weights: Vec<_> = isy
        .view
        .caches
        .iter()
        .map(|c| (c.cache_ip, c.data.weight_status()))
        .collect();
    assert_eq!(
        weights,
        vec![(SQUID, Some((10000, 0))), (EXTRA_CACHE, Some((5000, 0)))]
    );
}

/// s76-squid64-mask-l2-*: Alternate Assignment type 1 (mask), one set (dst mask 0x1741),
/// 64 values in ascending (VSN) order, all → 10.99.0.2; 1120 / 1136-octet payloads.
#[test]
fn redirect_assign_mask() {
    for (name, len, id) in [
        ("s76-squid64-mask-l2-std0", 1120, 0),
        ("s76-squid64-mask-l2-dyn90-md5", 1136, 90),
    ] {
        let ras = redirect_assigns(name);
        assert_eq!(ras.len(), 1);
        let (p, ra) = &ras[0];
        assert_eq!(p.payload.len(), len);
        assert_eq!(ra.service.service_id, id);
        let RedirectAssignment::Alternate(a) = &ra.assignment else {
            panic!("{:?}", ra.assignment)
        };
        assert_eq!(
            a.key,
            AssignmentKey {
                cache_ip: SQUID,
                change_number: 1
            }
        );
        assert_eq!(
            a.routers,
            vec![RouterAssignmentElement {
                router_ip: ROUTER,
                receive_id: 2,
                change_number: 1
            }]
        );
        let AssignmentBody::Mask(sets) = &a.body else {
            panic!("{:?}", a.body)
        };
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].mask, SQUID_MASK);
        assert_eq!(sets[0].values.len(), 64);
        for (k, v) in sets[0].values.iter().enumerate() {
            let expected = value_for_vsn(&SQUID_MASK, k as u32);
            assert_eq!(
                (v.src_ip, v.dst_ip, v.src_port, v.dst_port),
                (0, expected.dst_ip, 0, 0)
            );
            assert_eq!(v.cache_ip, SQUID);
        }
        if name.ends_with("md5") {
            md5("abcdefgh").verify(&p.payload).unwrap();
            assert_eq!(md5("secret").verify(&p.payload), Err(Error::Md5Mismatch));
        }
    }
}

/// MD5 on the responder's side: the squid64 I_SEE_YOUs verify on their padded bytes (Squid
/// accepted them), probe-badpw's were signed with another password.
#[test]
fn md5_on_router_messages() {
    for (name, secret) in [
        ("isy-squid64-hash-gre-std0-md5", "secret"),
        ("isy-squid64-mask-l2-dyn90-md5", "abcdefgh"),
        ("s76-squid64-mask-l2-dyn90-md5", "abcdefgh"),
    ] {
        let isys: Vec<Packet> = capture(name)
            .into_iter()
            .filter(|p| p.src == ROUTER)
            .collect();
        assert!(!isys.is_empty());
        for p in isys {
            md5(secret).verify(&p.payload).unwrap();
            assert_eq!(md5("wrongpw").verify(&p.payload), Err(Error::Md5Mismatch));
        }
    }
    for p in capture("probe-badpw") {
        if p.src == ROUTER {
            assert_eq!(md5("secret").verify(&p.payload), Err(Error::Md5Mismatch));
            md5("wrongpw").verify(&p.payload).unwrap();
        } else {
            md5("secret").verify(&p.payload).unwrap();
        }
    }
}

/// probe-capmismatch-l2 / probe-nocaps-*: what the responder offered.
#[test]
fn probe_capabilities() {
    let isy = |name: &str| {
        let p = capture(name).into_iter().find(|p| p.src == ROUTER).unwrap();
        ISeeYou::try_from(&Message::decode(&unpad_squid64(&p.payload)).unwrap()).unwrap()
    };
    assert_eq!(
        isy("probe-capmismatch-l2")
            .capabilities
            .unwrap()
            .forwarding(),
        Some(ForwardingMethods::GRE)
    );
    assert!(isy("probe-nocaps-l2").capabilities.is_none());
    assert!(isy("probe-nocaps-gre").capabilities.is_none());
}

/// rustls rule: every strict prefix of every datagram fails cleanly (an error, no panic),
/// strictly and under the datagram rule, and so does MD5 verification.
#[test]
fn every_strict_prefix_fails_cleanly() {
    let mut checked = 0;
    for name in capture_names() {
        for p in capture(&name) {
            for n in 0..p.payload.len() {
                let prefix = &p.payload[..n];
                assert!(
                    Message::decode(prefix).is_err(),
                    "{name} frame {} prefix {n}",
                    p.frame
                );
                assert!(Message::decode_datagram(prefix).is_err());
                assert!(md5("secret").verify(prefix).is_err());
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 28_824, "sum of all payload lengths");
}
