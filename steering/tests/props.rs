//! Property tests: compile and decide never panic, whatever the definitions, keys and health;
//! a NAT flow walked forward then backward restores the client's view exactly.

use proptest::prelude::*;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use steering::*;

// ---- small value domains, so that names resolve and keys collide often ----------------------

fn addr() -> impl Strategy<Value = Ipv4Addr> {
    prop_oneof![
        (0u8..4).prop_map(|i| Ipv4Addr::new(198, 51, 100, i)),
        (0u8..4).prop_map(|i| Ipv4Addr::new(10, 0, 0, i)),
        any::<u32>().prop_map(Ipv4Addr::from),
    ]
}

fn mac() -> impl Strategy<Value = MacAddr> {
    prop_oneof![
        (0u8..6).prop_map(|i| MacAddr([2, 0, 0, 0, 0, i])),
        any::<[u8; 6]>().prop_map(MacAddr),
    ]
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![0u16..4, 20u16..24, 79u16..82, 1020u16..1030, any::<u16>()]
}

fn range() -> impl Strategy<Value = PortRange> {
    (port(), port()).prop_map(|(a, b)| PortRange::new(a, b))
}

fn iface() -> impl Strategy<Value = IfId> {
    prop_oneof![0u16..5, any::<u16>()]
}

fn dev_name() -> impl Strategy<Value = String> {
    (0u8..6).prop_map(|i| format!("d{i}"))
}

fn mode() -> impl Strategy<Value = DeviceMode> {
    prop_oneof![
        Just(DeviceMode::Transparent),
        Just(DeviceMode::Loopback),
        Just(DeviceMode::Alias),
        Just(DeviceMode::Nat),
        Just(DeviceMode::Router),
    ]
}

fn device() -> impl Strategy<Value = DeviceDef> {
    (
        dev_name(),
        mode(),
        prop::collection::vec(iface(), 0..3),
        prop::option::of(mac()),
        prop::option::of(mac()),
        prop::option::of(addr()),
    )
        .prop_map(|(name, mode, interfaces, mac, out_mac, addr)| DeviceDef {
            name,
            mode,
            interfaces,
            mac,
            out_mac,
            addr,
        })
}

fn duration() -> impl Strategy<Value = Duration> {
    (0u64..3000).prop_map(Duration::from_millis)
}

fn pool() -> impl Strategy<Value = PoolDef> {
    (
        (0u8..3).prop_map(|i| format!("p{i}")),
        prop::collection::vec(dev_name(), 0..4),
        prop::option::of(dev_name()),
        prop::bool::ANY,
        prop::option::of(duration()),
        prop::bool::ANY,
        prop::option::of((port(), duration(), duration(), 0u32..3, 0u32..3)),
        prop::option::of((0u32..3, duration())),
    )
        .prop_map(
            |(name, members, alternate, client, reset, manual, active, passive)| PoolDef {
                name,
                members,
                alternate,
                policy: if client {
                    Policy::ClientHash
                } else {
                    Policy::FlowHash
                },
                on_failure: reset.map_or(OnFailure::Move, |window| OnFailure::Reset { window }),
                restore: if manual {
                    Restore::Manual
                } else {
                    Restore::Auto
                },
                active: active.map(|(port, interval, timeout, rise, fall)| ActiveCheck {
                    port,
                    interval,
                    timeout,
                    rise,
                    fall,
                }),
                passive: passive.map(|(syn_threshold, window)| PassiveCheck {
                    syn_threshold,
                    window,
                }),
            },
        )
}

fn hop() -> impl Strategy<Value = HopDef> {
    (prop::bool::ANY, (0u8..6), prop::bool::ANY).prop_map(|(is_pool, i, copy)| HopDef {
        target: if is_pool {
            HopTarget::Pool(format!("p{}", i % 4))
        } else {
            HopTarget::Device(format!("d{i}"))
        },
        copy,
    })
}

fn service_key() -> impl Strategy<Value = ServiceKey> {
    prop_oneof![
        3 => (addr(), prop_oneof![Just(6u8), Just(17u8)], range()).prop_map(|(addr, proto, ports)| {
            ServiceKey::Address { addr, proto, ports }
        }),
        1 => (addr(), 0u8..=32, prop::option::of(Just(6u8))).prop_map(|(a, len, proto)| {
            ServiceKey::Subscriber {
                prefix: Prefix::new(a, len).unwrap_or(Prefix::ANY),
                proto,
            }
        }),
    ]
}

fn acl_rule() -> impl Strategy<Value = AclRule> {
    (
        prop::bool::ANY,
        addr(),
        0u8..=32,
        prop::option::of(Just(6u8)),
        prop::option::of(range()),
        prop::option::of(range()),
    )
        .prop_map(|(permit, a, len, proto, src_ports, dst_ports)| AclRule {
            action: if permit {
                AclAction::Permit
            } else {
                AclAction::Deny
            },
            src: Prefix::new(a, len).unwrap_or(Prefix::ANY),
            proto,
            src_ports,
            dst_ports,
        })
}

fn service() -> impl Strategy<Value = ServiceDef> {
    (
        (0u8..4).prop_map(|i| format!("s{i}")),
        service_key(),
        prop::collection::vec(iface(), 0..3),
        prop::collection::vec(hop(), 0..5),
        prop::option::of(port()),
        prop::collection::vec(range(), 0..2),
        prop::option::of(0u8..70),
        prop::collection::vec(acl_rule(), 0..3),
    )
        .prop_map(
            |(name, key, ingress, chain, translate_port, dynamic_ranges, dscp, acl)| ServiceDef {
                name,
                key,
                ingress,
                chain,
                translate_port,
                dynamic_ranges,
                dscp,
                acl,
                acl_default: AclAction::Permit,
            },
        )
}

fn definitions() -> impl Strategy<Value = Definitions> {
    (
        prop::collection::vec(device(), 0..6),
        prop::collection::vec(pool(), 0..3),
        prop::collection::vec(service(), 0..4),
    )
        .prop_map(|(devices, pools, services)| Definitions {
            devices,
            pools,
            services,
        })
}

fn packet() -> impl Strategy<Value = PacketKey> {
    (
        iface(),
        mac(),
        addr(),
        addr(),
        prop_oneof![Just(6u8), Just(17u8), any::<u8>()],
        port(),
        port(),
        any::<u8>(),
    )
        .prop_map(
            |(in_if, src_mac, src, dst, proto, sport, dport, tcp_flags)| PacketKey {
                in_if,
                src_mac,
                src,
                dst,
                proto,
                sport,
                dport,
                tcp_flags,
            },
        )
}

/// A health-monitor input.
#[derive(Debug, Clone)]
enum Op {
    Timeout(u64),
    Probe(u32, bool),
    Syn(u32, Ipv4Addr),
    Return(u32, Ipv4Addr),
    Restore(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u64..2000).prop_map(Op::Timeout),
        (0u32..8, prop::bool::ANY).prop_map(|(d, ok)| Op::Probe(d, ok)),
        (0u32..8, addr()).prop_map(|(d, a)| Op::Syn(d, a)),
        (0u32..8, addr()).prop_map(|(d, a)| Op::Return(d, a)),
        (0u32..8).prop_map(Op::Restore),
    ]
}

#[allow(clippy::disallowed_methods)] // an arbitrary origin; everything after it is virtual time
fn origin() -> Instant {
    Instant::now()
}

/// A fixed, feature-rich table for the "decide never panics" property.
fn rich_tables() -> Tables {
    let m = |i: u8| MacAddr([2, 0, 0, 0, 0, i]);
    let w = Ipv4Addr::new(198, 51, 100, 1);
    let mut fw_pool = PoolDef::new("p0", &["d0", "d1"]);
    fw_pool.on_failure = OnFailure::Reset {
        window: Duration::from_secs(1),
    };
    let mut nat = PoolDef::new("p1", &["d3", "d4"]);
    nat.policy = Policy::ClientHash;
    nat.alternate = Some("d5".into());
    let mut web = ServiceDef::new(
        "s0",
        ServiceKey::Address {
            addr: w,
            proto: 6,
            ports: PortRange::single(80),
        },
        &[0],
        vec![
            HopDef::pool("p0"),
            HopDef::device("d2").as_copy(),
            HopDef::pool("p1"),
        ],
    );
    web.translate_port = Some(8080);
    web.dynamic_ranges = vec![PortRange::new(1020, 1025)];
    web.acl = vec![AclRule::new(
        AclAction::Deny,
        Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 30).expect("valid prefix"),
    )];
    let sub = ServiceDef::new(
        "s1",
        ServiceKey::Subscriber {
            prefix: Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 24).expect("valid prefix"),
            proto: None,
        },
        &[1],
        vec![HopDef::device("d6")],
    );
    let d = Definitions {
        devices: vec![
            DeviceDef::transparent("d0", [1, 2], m(0), m(1)),
            DeviceDef::transparent("d1", [1, 2], m(2), m(3)),
            DeviceDef::loopback("d2", 3, m(4)),
            DeviceDef::nat("d3", 2, Ipv4Addr::new(10, 0, 0, 3)),
            DeviceDef::nat("d4", 2, Ipv4Addr::new(10, 0, 0, 2)).with_mac(m(5)),
            DeviceDef::nat("d5", 2, Ipv4Addr::new(10, 0, 0, 1)),
            DeviceDef::router("d6", 4, Ipv4Addr::new(10, 0, 0, 4)),
        ],
        pools: vec![fw_pool, nat],
        services: vec![web, sub],
    };
    compile(&d).expect("the rich table compiles")
}

fn health() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..3, 0..10)
}

fn pool_state(t: &Tables, v: &[u8]) -> PoolState {
    let mut s = PoolState::all_in_service(t);
    for (i, &h) in v.iter().enumerate() {
        let h = match h {
            0 => DeviceHealth::InService,
            1 => DeviceHealth::Draining,
            _ => DeviceHealth::OutOfService,
        };
        s.set_device(DeviceIdx(i as u32), h);
    }
    s
}

/// A roster of valid devices: d0..d3 transparent, d4/d5 loopback, d6/d7 NAT, d8 router,
/// d9 alias; MACs and addresses drawn from the same small sets the packets use.
fn roster() -> Vec<DeviceDef> {
    let m = |i: u8| MacAddr([2, 0, 0, 0, 0, i]);
    let a = |i: u8| Ipv4Addr::new(10, 0, 0, i);
    let mut v = Vec::new();
    for i in 0..4u8 {
        v.push(
            DeviceDef::transparent(
                &format!("d{i}"),
                [u16::from(i % 3), u16::from(i % 3) + 1],
                m(i),
                m(i + 10),
            )
            .with_addr(a(i)),
        );
    }
    v.push(DeviceDef::loopback("d4", 2, m(4)).with_addr(a(4)));
    v.push(DeviceDef::loopback("d5", 3, m(5)).with_addr(a(5)));
    v.push(DeviceDef::nat("d6", 2, a(6)));
    v.push(DeviceDef::nat("d7", 3, a(7)).with_mac(m(7)));
    v.push(DeviceDef::router("d8", 4, a(8)));
    let mut alias = DeviceDef::loopback("d9", 4, m(9)).with_addr(a(9));
    alias.mode = DeviceMode::Alias;
    v.push(alias);
    v
}

fn valid_pool(name: &'static str, from: &'static [&'static str]) -> impl Strategy<Value = PoolDef> {
    (
        prop::sample::subsequence(from, 1..=from.len()),
        prop::bool::ANY,
        prop::option::of(1u64..3000),
        prop::bool::ANY,
        prop::option::of((1u64..2000, 1u32..3, 1u32..3)),
        prop::option::of((1u32..4, 1u64..5000)),
    )
        .prop_map(
            move |(members, client, reset, manual, active, passive)| PoolDef {
                name: name.to_string(),
                members: members.iter().map(|m| m.to_string()).collect(),
                alternate: None,
                policy: if client {
                    Policy::ClientHash
                } else {
                    Policy::FlowHash
                },
                on_failure: reset.map_or(OnFailure::Move, |ms| OnFailure::Reset {
                    window: Duration::from_millis(ms),
                }),
                restore: if manual {
                    Restore::Manual
                } else {
                    Restore::Auto
                },
                active: active.map(|(ms, rise, fall)| ActiveCheck {
                    port: 80,
                    interval: Duration::from_millis(ms),
                    timeout: Duration::from_millis(ms / 2 + 1),
                    rise,
                    fall,
                }),
                passive: passive.map(|(syn_threshold, ms)| PassiveCheck {
                    syn_threshold,
                    window: Duration::from_millis(ms),
                }),
            },
        )
}

fn valid_service(i: usize) -> impl Strategy<Value = ServiceDef> {
    let mids = prop::collection::vec(
        prop::sample::select(vec![
            HopDef::device("d0"),
            HopDef::device("d1"),
            HopDef::device("d2"),
            HopDef::device("d3"),
            HopDef::pool("p0"),
        ]),
        0..3,
    );
    let end = prop::option::of(prop::sample::select(vec![
        HopDef::device("d4"),
        HopDef::device("d5"),
        HopDef::device("d6"),
        HopDef::device("d7"),
        HopDef::device("d8"),
        HopDef::device("d9"),
        HopDef::pool("p1"),
        HopDef::pool("p2"),
    ]));
    let copies = prop::collection::vec(
        (
            0usize..4,
            prop::sample::select(vec!["d4", "d5", "d9", "d7"]),
        ),
        0..3,
    );
    let key = prop_oneof![
        3 => (
            (0u8..3).prop_map(|i| Ipv4Addr::new(198, 51, 100, i)),
            prop_oneof![Just(21u16), Just(80), Just(443)],
        )
            .prop_map(|(addr, p)| ServiceKey::Address {
                addr,
                proto: 6,
                ports: PortRange::single(p),
            }),
        1 => (2000u16..2010, 0u16..5).prop_map(|(lo, n)| ServiceKey::Address {
            addr: Ipv4Addr::new(198, 51, 100, 3), proto: 6, ports: PortRange::new(lo, lo + n) }),
        1 => (0u8..3, 8u8..=32).prop_map(|(i, len)| ServiceKey::Subscriber {
            prefix: Prefix::new(Ipv4Addr::new(10, 0, i, 0), len).unwrap_or(Prefix::ANY),
            proto: None,
        }),
    ];
    let acl = prop::collection::vec(acl_rule(), 0..3).prop_map(|mut v| {
        for r in &mut v {
            for pr in [&mut r.src_ports, &mut r.dst_ports].into_iter().flatten() {
                *pr = PortRange::new(pr.lo.min(pr.hi), pr.lo.max(pr.hi));
            }
        }
        v
    });
    (
        key,
        prop::collection::vec(0u16..5, 1..3),
        mids,
        end,
        copies,
        prop::option::of(prop_oneof![Just(8080u16), Just(2020u16)]),
        prop::collection::vec(
            (1020u16..1030, 0u16..8).prop_map(|(lo, n)| PortRange::new(lo, lo + n)),
            0..2,
        ),
        acl,
    )
        .prop_map(
            move |(key, ingress, mut mids, end, copies, translate_port, dynamic_ranges, acl)| {
                mids.dedup();
                let mut chain = mids;
                chain.extend(end);
                for (at, dev) in copies {
                    let at = at.min(chain.len());
                    chain.insert(at, HopDef::device(dev).as_copy());
                }
                ServiceDef {
                    name: format!("s{i}"),
                    key,
                    ingress,
                    chain,
                    translate_port,
                    dynamic_ranges,
                    dscp: Some(10),
                    acl,
                    acl_default: AclAction::Permit,
                }
            },
        )
}

fn valid_definitions() -> impl Strategy<Value = Definitions> {
    (
        valid_pool("p0", &["d0", "d1", "d2", "d3"]),
        valid_pool("p1", &["d4", "d5"]),
        valid_pool("p2", &["d6", "d7"]),
        prop::bool::ANY,
        (0usize..5).prop_flat_map(|n| (0..n).map(valid_service).collect::<Vec<_>>()),
    )
        .prop_map(|(p0, p1, mut p2, alt, services)| {
            if alt && p2.members.len() == 1 {
                p2.alternate = Some(if p2.members[0] == "d6" { "d7" } else { "d6" }.to_string());
            }
            Definitions {
                devices: roster(),
                pools: vec![p0, p1, p2],
                services,
            }
        })
}

/// Packets shaped like the roster's traffic: its interfaces, MACs and addresses.
fn roster_packet() -> impl Strategy<Value = PacketKey> {
    (
        0u16..5,
        prop_oneof![
            (0u8..20).prop_map(|i| MacAddr([2, 0, 0, 0, 0, i])),
            any::<[u8; 6]>().prop_map(MacAddr)
        ],
        addr(),
        addr(),
        prop_oneof![Just(6u8), Just(17u8)],
        port(),
        port(),
        any::<u8>(),
    )
        .prop_map(
            |(in_if, src_mac, src, dst, proto, sport, dport, tcp_flags)| PacketKey {
                in_if,
                src_mac,
                src,
                dst,
                proto,
                sport,
                dport,
                tcp_flags,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    /// Arbitrary small definitions: compile returns Ok or a typed error, never panics; when it
    /// compiles, decisions and the health monitor hold up under arbitrary inputs.
    #[test]
    fn compile_never_panics(defs in definitions(), pkts in prop::collection::vec(packet(), 0..16),
                            ops in prop::collection::vec(op(), 0..24), hv in health()) {
        match compile(&defs) {
            Err(e) => {
                // Errors render and name their subject.
                let _ = e.to_string();
                let _ = e.subject();
            }
            Ok(t) => {
                let s = pool_state(&t, &hv);
                for p in &pkts {
                    let _ = t.decide(p, &s);
                }
                let t0 = origin();
                let mut m = HealthMonitor::new(&t, t0);
                let mut now = t0;
                for o in &ops {
                    match *o {
                        Op::Timeout(ms) => {
                            now += Duration::from_millis(ms);
                            m.handle_timeout(now);
                        }
                        Op::Probe(d, ok) => m.handle_probe_result(now, DeviceIdx(d), ok),
                        Op::Syn(d, a) => m.handle_syn(now, DeviceIdx(d), a),
                        Op::Return(d, a) => m.handle_return_traffic(now, DeviceIdx(d), a),
                        Op::Restore(d) => { m.restore(DeviceIdx(d)); }
                    }
                    while m.poll_probe().is_some() {}
                    while m.poll_event().is_some() {}
                    if let Some(t) = m.poll_timeout() {
                        // Timers never lie far in the future of their configured periods.
                        prop_assert!(t <= now + Duration::from_secs(10));
                    }
                    for p in &pkts {
                        let _ = t.decide(p, m.state());
                    }
                }
            }
        }
    }

    /// Arbitrary packets against a feature-rich table and arbitrary health: never panics, and
    /// every Forward names a known service and device.
    #[test]
    fn decide_never_panics(p in packet(), hv in health()) {
        let t = rich_tables();
        let s = pool_state(&t, &hv);
        match t.decide(&p, &s) {
            Decision::Forward(a) => {
                prop_assert!(a.service.index() < t.service_count());
                if let Some(d) = a.device() {
                    prop_assert!(d.index() < t.device_count());
                }
                prop_assert!(a.copies.len() <= MAX_COPIES);
            }
            Decision::Deny { service, .. }
            | Decision::UnexpectedSource { service }
            | Decision::Unavailable { service }
            | Decision::Reset { service, .. } => {
                prop_assert!(service.index() < t.service_count());
            }
            Decision::NotSteered => {}
        }
        // The drain memory only ever turns a reset into a forward, and only after a SYN.
        let mut flows = DrainedFlows::new(16);
        let remembered = t.decide_remembering(&p, &s, &mut flows);
        prop_assert_eq!(remembered, t.decide(&p, &s));
        if p.is_syn() {
            let rest = PacketKey { tcp_flags: tcp_flags::ACK, ..p };
            let plain = t.decide(&rest, &s);
            let after = t.decide_remembering(&rest, &s, &mut flows);
            if !matches!(plain, Decision::Reset { .. }) {
                prop_assert_eq!(after, plain);
            } else {
                // To the failover device, or none is left.
                prop_assert!(
                    matches!(after, Decision::Forward(_) | Decision::Unavailable { .. }),
                    "{:?}",
                    after
                );
            }
        }
        // Tables and state from different configs: no panic either.
        let _ = t.decide(&p, &PoolState::default());
        let _ = Tables::default().decide(&p, &s);
    }

    /// A NAT flow (with or without port translation, through a firewall pool, to a NAT server
    /// pool) walked forward and then back restores exactly the addresses the client used.
    #[test]
    fn nat_forward_then_reverse_restores(
        client in any::<u32>(),
        cport in 1u16..,
        members in 1usize..5,
        translate in prop::option::of(1u16..),
        down in prop::option::of(0usize..5),
    ) {
        let w = Ipv4Addr::new(198, 51, 100, 1);
        let m = |a: u8, i: u8| MacAddr([2, 0, 0, a, 0, i]);
        let mut devices = vec![
            DeviceDef::transparent("fw0", [1, 2], m(1, 0), m(2, 0)),
            DeviceDef::transparent("fw1", [1, 2], m(1, 1), m(2, 1)),
        ];
        let mut names = Vec::new();
        for i in 0..members {
            let n = format!("srv{i}");
            devices.push(DeviceDef::nat(&n, 3, Ipv4Addr::new(10, 9, 0, i as u8 + 1)));
            names.push(n);
        }
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut svc = ServiceDef::new(
            "web",
            ServiceKey::Address { addr: w, proto: proto::TCP, ports: PortRange::single(80) },
            &[0],
            vec![HopDef::pool("fws"), HopDef::pool("srvs")],
        );
        svc.translate_port = translate;
        let t = compile(&Definitions {
            devices,
            pools: vec![PoolDef::new("fws", &["fw0", "fw1"]), PoolDef::new("srvs", &names)],
            services: vec![svc],
        }).unwrap();
        let mut h = PoolState::all_in_service(&t);
        if let Some(i) = down.filter(|&i| i + 1 < members) {
            h.set_device(DeviceIdx(2 + i as u32), DeviceHealth::OutOfService);
        }
        let client = Ipv4Addr::from(client);
        let pkt = PacketKey {
            in_if: 0, src_mac: MacAddr([2, 9, 9, 9, 9, 9]), src: client, dst: w,
            proto: proto::TCP, sport: cport, dport: 80, tcp_flags: tcp_flags::ACK,
        };
        // Forward: client → firewall → NAT server.
        let Decision::Forward(a1) = t.decide(&pkt, &h) else { panic!("not steered") };
        let Egress::Device { device: fw, .. } = a1.egress else { panic!("not to a device") };
        let fw_out = m(2, fw.0 as u8);
        let fw_in = m(1, fw.0 as u8);
        let p2 = PacketKey { in_if: 2, src_mac: fw_out, ..pkt.rewritten(&a1.rewrite) };
        let Decision::Forward(a2) = t.decide(&p2, &h) else { panic!("not steered after fw") };
        let at_server = p2.rewritten(&a2.rewrite);
        let Egress::Device { device: srv, .. } = a2.egress else { panic!("not to the server") };
        prop_assert!(t.device_name(srv).is_some());
        prop_assert_eq!(Some(at_server.dst), a2.rewrite.dst_addr);
        prop_assert_eq!(at_server.dport, translate.unwrap_or(80));
        prop_assert_eq!((at_server.src, at_server.sport), (client, cport));
        // Reverse: the server swaps the ends; back through the same firewall, then routed.
        let reply = PacketKey {
            in_if: 3, src_mac: MacAddr([2, 7, 7, 7, 7, 7]),
            src: at_server.dst, sport: at_server.dport, dst: at_server.src, dport: at_server.sport,
            ..pkt
        };
        let Decision::Forward(b1) = t.decide(&reply, &h) else { panic!("reply not steered") };
        prop_assert_eq!(b1.device(), Some(fw), "the reply crosses the same firewall");
        prop_assert_eq!(b1.from, Some(srv));
        let r2 = PacketKey { in_if: 1, src_mac: fw_in, ..reply.rewritten(&b1.rewrite) };
        let Decision::Forward(b2) = t.decide(&r2, &h) else { panic!("not steered after fw") };
        prop_assert_eq!(b2.egress, Egress::Route);
        let at_client = r2.rewritten(&b2.rewrite);
        prop_assert_eq!((at_client.src, at_client.sport), (w, 80));
        prop_assert_eq!((at_client.dst, at_client.dport), (client, cport));
    }

    /// Mostly valid definitions (most compile): decide, the health monitor and their
    /// interplay under arbitrary packets and operations.
    #[test]
    fn valid_definitions_decide_and_monitor(defs in valid_definitions(),
                                             pkts in prop::collection::vec(roster_packet(), 1..24),
                                             ops in prop::collection::vec(op(), 0..24)) {
        let Ok(t) = compile(&defs) else { return Ok(()) };
        let t0 = origin();
        let mut m = HealthMonitor::new(&t, t0);
        let mut now = t0;
        for o in &ops {
            match *o {
                Op::Timeout(ms) => {
                    now += Duration::from_millis(ms);
                    m.handle_timeout(now);
                }
                Op::Probe(d, ok) => m.handle_probe_result(now, DeviceIdx(d), ok),
                Op::Syn(d, a) => m.handle_syn(now, DeviceIdx(d), a),
                Op::Return(d, a) => m.handle_return_traffic(now, DeviceIdx(d), a),
                Op::Restore(d) => { m.restore(DeviceIdx(d)); }
            }
            while let Some(p) = m.poll_probe() {
                prop_assert!(p.device.index() < t.device_count());
            }
            while m.poll_event().is_some() {}
            for p in &pkts {
                if let Decision::Forward(a) = t.decide(p, m.state()) {
                    // Never steered to a device that is out of service.
                    if let Some(d) = a.device() {
                        prop_assert!(m.state().in_service(d), "{:?} to {:?}", p, d);
                    }
                    for &c in a.copies.as_slice() {
                        prop_assert!(m.state().in_service(c));
                    }
                    prop_assert_eq!(a.copy_targets(&t).count(), a.copies.len());
                }
            }
        }
    }
}

proptest! {
    /// Device health sync records from the network: decoding never panics, and whatever
    /// decodes encodes back to the same octets.
    #[test]
    fn health_sync_records_decode_without_panicking(
        key in proptest::collection::vec(any::<u8>(), 0..40),
        value in proptest::collection::vec(any::<u8>(), 0..12),
    ) {
        if let Ok(name) = sync::decode_key(&key) {
            prop_assert_eq!(sync::encode_key(name), key.clone());
        }
        if let Ok(s) = sync::decode_value(&value) {
            prop_assert_eq!(&sync::encode_value(&s)[..], &value[..]);
        }
        if let Ok(k) = sync::decode_drain_key(&key) {
            prop_assert_eq!(&sync::encode_drain_key(k)[..], &key[..]);
        }
    }
}
