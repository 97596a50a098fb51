//! Scenario tests: whole chains walked packet by packet in both directions, as the router would
//! walk them, with the seed's figures as the model (Figure 7B for the firewall/IDS/server
//! chain, 5H–5J for NAT, 8 for port translation, 9B for dynamic ranges, 15B–15C for pools).

use std::net::Ipv4Addr;
use steering::*;

const I_CLIENT: IfId = 0;
const I_FW0: IfId = 1;
const I_SERVERS: IfId = 2;
const I_IDS: IfId = 3;
const I_GW: IfId = 4;

const W1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const W2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const U1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const S1: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 11);
const S2: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 12);

const UPSTREAM: MacAddr = MacAddr([0x02, 0, 0, 0, 0x00, 0x01]);
const FW0: MacAddr = MacAddr([0x02, 0, 0, 0, 0xf0, 0x00]);
const FW1: MacAddr = MacAddr([0x02, 0, 0, 0, 0xf0, 0x01]);
const IDS: MacAddr = MacAddr([0x02, 0, 0, 0, 0x1d, 0x50]);
const SRV: MacAddr = MacAddr([0x02, 0, 0, 0, 0x5e, 0x01]);
const SRV2: MacAddr = MacAddr([0x02, 0, 0, 0, 0x5e, 0x02]);
const ROGUE: MacAddr = MacAddr([0x02, 0xba, 0xd0, 0, 0, 0x01]);

fn tcp(in_if: IfId, mac: MacAddr, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> PacketKey {
    PacketKey {
        in_if,
        src_mac: mac,
        src: src.0,
        dst: dst.0,
        proto: proto::TCP,
        sport: src.1,
        dport: dst.1,
        tcp_flags: tcp_flags::ACK,
    }
}

fn syn(k: PacketKey) -> PacketKey {
    PacketKey {
        tcp_flags: tcp_flags::SYN,
        ..k
    }
}

fn forward(d: Decision) -> Action {
    match d {
        Decision::Forward(a) => a,
        other => panic!("expected Forward, got {other:?}"),
    }
}

fn to_device(t: &Tables, a: &Action) -> (String, IfId, NextHop, DeviceMode) {
    match a.egress {
        Egress::Device {
            device,
            iface,
            next,
            mode,
        } => (
            t.device_name(device)
                .expect("device of the tables")
                .to_string(),
            iface,
            next,
            mode,
        ),
        Egress::Route => panic!("expected a device, got Route: {a:?}"),
    }
}

fn name(t: &Tables, d: Option<DeviceIdx>) -> Option<&str> {
    d.and_then(|d| t.device_name(d))
}

fn web_key(addr: Ipv4Addr, port: u16) -> ServiceKey {
    ServiceKey::Address {
        addr,
        proto: proto::TCP,
        ports: PortRange::single(port),
    }
}

/// Figure 7B, reduced: firewall (fw0 on i1, fw1 on i2) → IDS copy (i3) → loopback server (i2).
fn figure7() -> Definitions {
    Definitions {
        devices: vec![
            DeviceDef::transparent("fw", [I_FW0, I_SERVERS], FW0, FW1),
            DeviceDef::loopback("ids", I_IDS, IDS),
            DeviceDef::loopback("srv", I_SERVERS, SRV),
            DeviceDef::nat("nat1", I_SERVERS, S1),
            DeviceDef::nat("nat2", I_SERVERS, S2),
            DeviceDef::loopback("mail", I_SERVERS, SRV2),
        ],
        pools: vec![],
        services: vec![ServiceDef::new(
            "web",
            web_key(W1, 80),
            &[I_CLIENT],
            vec![
                HopDef::device("fw"),
                HopDef::device("ids").as_copy(),
                HopDef::device("srv"),
            ],
        )],
    }
}

#[test]
fn firewall_ids_copy_loopback_server_and_back() {
    let t = compile(&figure7()).unwrap();
    let h = PoolState::all_in_service(&t);
    let web = t.service_index("web").unwrap();

    // 1. Client → W1:80 arrives from the upstream router: to the firewall's outside, by MAC.
    let a = forward(t.decide(&syn(tcp(I_CLIENT, UPSTREAM, (U1, 40000), (W1, 80))), &h));
    assert_eq!(a.service, web);
    assert_eq!(a.direction, Direction::Forward);
    assert!(a.entering, "TTL is decremented once, here");
    assert_eq!(
        to_device(&t, &a),
        (
            "fw".into(),
            I_FW0,
            NextHop::Mac(FW0),
            DeviceMode::Transparent
        )
    );
    assert!(a.copies.is_empty() && a.rewrite.is_empty());
    assert_eq!(a.from, None);

    // 2. Back from fw1: to the server by MAC, unchanged, with a copy to the IDS.
    let a = forward(t.decide(&syn(tcp(I_SERVERS, FW1, (U1, 40000), (W1, 80))), &h));
    assert_eq!(
        to_device(&t, &a),
        (
            "srv".into(),
            I_SERVERS,
            NextHop::Mac(SRV),
            DeviceMode::Loopback
        )
    );
    assert_eq!(name(&t, a.from), Some("fw"));
    assert!(!a.entering && a.rewrite.is_empty());
    let copies: Vec<_> = a.copy_targets(&t).collect();
    assert_eq!(copies.len(), 1);
    assert_eq!(name(&t, Some(copies[0].device)), Some("ids"));
    assert_eq!(
        (copies[0].iface, copies[0].next),
        (I_IDS, NextHop::Mac(IDS))
    );

    // 3. The server answers as W1:80: back to the firewall's inside, copy to the IDS again.
    let a = forward(t.decide(&tcp(I_SERVERS, SRV, (W1, 80), (U1, 40000)), &h));
    assert_eq!(a.direction, Direction::Reverse);
    assert!(a.entering);
    assert_eq!(
        to_device(&t, &a),
        (
            "fw".into(),
            I_SERVERS,
            NextHop::Mac(FW1),
            DeviceMode::Transparent
        )
    );
    assert_eq!(name(&t, a.from), Some("srv"));
    assert_eq!(a.copies.len(), 1);

    // 4. Back from fw0: routed toward the client.
    let a = forward(t.decide(&tcp(I_FW0, FW0, (W1, 80), (U1, 40000)), &h));
    assert_eq!(a.egress, Egress::Route);
    assert_eq!(a.direction, Direction::Reverse);
    assert_eq!(name(&t, a.from), Some("fw"));
    assert!(a.copies.is_empty() && !a.entering);

    // The IDS raising an alert toward the service: on to the server, not copied again.
    let a = forward(t.decide(&tcp(I_IDS, IDS, (U1, 40000), (W1, 80)), &h));
    assert_eq!(to_device(&t, &a).0, "srv");
    assert!(a.copies.is_empty());
    assert_eq!(name(&t, a.from), Some("ids"));
}

#[test]
fn unexpected_source_mac_is_flagged() {
    let t = compile(&figure7()).unwrap();
    let h = PoolState::all_in_service(&t);
    let web = t.service_index("web").unwrap();
    let unexpected = Decision::UnexpectedSource { service: web };
    // Forward frame claiming to come back through the firewall (fw1's interface), wrong MAC.
    assert_eq!(
        t.decide(&tcp(I_SERVERS, ROGUE, (U1, 40000), (W1, 80)), &h),
        unexpected
    );
    // A "server reply" from another host on the server segment.
    assert_eq!(
        t.decide(&tcp(I_SERVERS, ROGUE, (W1, 80), (U1, 40000)), &h),
        unexpected
    );
    // A reply claiming to come out of the firewall's outside, wrong MAC.
    assert_eq!(
        t.decide(&tcp(I_FW0, ROGUE, (W1, 80), (U1, 40000)), &h),
        unexpected
    );
    // The firewall's MAC on the wrong side is not the firewall either.
    assert_eq!(
        t.decide(&tcp(I_SERVERS, FW0, (U1, 40000), (W1, 80)), &h),
        unexpected
    );
    // Traffic for W1:80 on an interface that is neither ingress nor a device's: not ours.
    assert_eq!(
        t.decide(&tcp(7, ROGUE, (U1, 40000), (W1, 80)), &h),
        Decision::NotSteered
    );
}

#[test]
fn nat_server_rewrites_both_ways() {
    let mut d = figure7();
    d.services[0].chain = vec![HopDef::device("fw"), HopDef::device("nat1")];
    let t = compile(&d).unwrap();
    let h = PoolState::all_in_service(&t);
    let k = tcp(I_SERVERS, FW1, (U1, 40000), (W1, 80));
    let a = forward(t.decide(&k, &h));
    // Figure 5I step 2: destination becomes the server's real address, sent by ARP on i2.
    assert_eq!(
        to_device(&t, &a),
        ("nat1".into(), I_SERVERS, NextHop::Addr(S1), DeviceMode::Nat)
    );
    assert_eq!(a.rewrite.dst_addr, Some(S1));
    assert_eq!(a.rewrite.dst_port, None);
    let at_server = k.rewritten(&a.rewrite);
    assert_eq!((at_server.dst, at_server.dport), (S1, 80));

    // Step 3: the server answers from S1 (its MAC is not known: any MAC on its interface).
    let reply = tcp(I_SERVERS, SRV2, (S1, 80), (U1, 40000));
    let b = forward(t.decide(&reply, &h));
    assert_eq!(b.direction, Direction::Reverse);
    assert_eq!(b.rewrite.src_addr, Some(W1), "reverse NAT restores W1");
    assert_eq!(to_device(&t, &b).0, "fw");
    assert_eq!(name(&t, b.from), Some("nat1"));
    let restored = reply.rewritten(&b.rewrite);
    assert_eq!((restored.src, restored.sport), (W1, 80));

    // Past the firewall the reply carries W1 and walks on without further rewrites.
    let c = forward(t.decide(&tcp(I_FW0, FW0, (W1, 80), (U1, 40000)), &h));
    assert_eq!(c.egress, Egress::Route);
    assert!(c.rewrite.is_empty());
}

#[test]
fn port_translation_p1_to_tp1_and_back() {
    // Figure 8: the client uses P1 = 20, the server listens on TP1 = 2020; only the last step
    // translates, so the firewall sees P1 in both directions.
    let mut d = figure7();
    d.services[0].key = web_key(W1, 20);
    d.services[0].translate_port = Some(2020);
    let t = compile(&d).unwrap();
    let h = PoolState::all_in_service(&t);

    let a = forward(t.decide(&tcp(I_CLIENT, UPSTREAM, (U1, 40000), (W1, 20)), &h));
    assert!(a.rewrite.is_empty(), "the firewall sees P1");
    let a = forward(t.decide(&tcp(I_SERVERS, FW1, (U1, 40000), (W1, 20)), &h));
    assert_eq!(to_device(&t, &a).0, "srv");
    assert_eq!(a.rewrite.dst_port, Some(2020));
    assert_eq!(a.rewrite.dst_addr, None, "loopback server keeps W1");

    let b = forward(t.decide(&tcp(I_SERVERS, SRV, (W1, 2020), (U1, 40000)), &h));
    assert_eq!(b.rewrite.src_port, Some(20));
    assert_eq!(b.rewrite.src_addr, None);
    assert_eq!(to_device(&t, &b).0, "fw");

    // NAT and translation together: S1:2020 comes back as W1:20.
    d.services[0].chain = vec![HopDef::device("nat1")];
    let t = compile(&d).unwrap();
    let a = forward(t.decide(&tcp(I_CLIENT, UPSTREAM, (U1, 40000), (W1, 20)), &h));
    assert_eq!(
        (a.rewrite.dst_addr, a.rewrite.dst_port),
        (Some(S1), Some(2020))
    );
    let b = forward(t.decide(&tcp(I_SERVERS, SRV, (S1, 2020), (U1, 40000)), &h));
    assert_eq!(
        (b.rewrite.src_addr, b.rewrite.src_port),
        (Some(W1), Some(20))
    );
    assert_eq!(b.egress, Egress::Route);
}

#[test]
fn dynamic_range_port_follows_the_chain_untranslated() {
    // Figure 9B: W1:21 owns 1025-1125; a negotiated data port walks the same chain.
    let mut d = figure7();
    d.services[0].key = web_key(W1, 21);
    d.services[0].chain = vec![HopDef::device("fw"), HopDef::device("nat1")];
    d.services[0].translate_port = Some(2121);
    d.services[0].dynamic_ranges = vec![PortRange::new(1025, 1125)];
    let t = compile(&d).unwrap();
    let h = PoolState::all_in_service(&t);

    for port in [1025, 1100, 1125] {
        let a = forward(t.decide(&tcp(I_CLIENT, UPSTREAM, (U1, 40001), (W1, port)), &h));
        assert_eq!(to_device(&t, &a).0, "fw", "port {port}");
        let a = forward(t.decide(&tcp(I_SERVERS, FW1, (U1, 40001), (W1, port)), &h));
        assert_eq!(to_device(&t, &a).0, "nat1");
        assert_eq!(a.rewrite.dst_addr, Some(S1));
        assert_eq!(a.rewrite.dst_port, None, "dynamic ports are not translated");
        let b = forward(t.decide(&tcp(I_SERVERS, SRV, (S1, port), (U1, 40001)), &h));
        assert_eq!((b.rewrite.src_addr, b.rewrite.src_port), (Some(W1), None));
        assert_eq!(to_device(&t, &b).0, "fw");
    }
    // The control port is still translated; ports outside the range are not ours.
    let a = forward(t.decide(&tcp(I_SERVERS, FW1, (U1, 40001), (W1, 21)), &h));
    assert_eq!(a.rewrite.dst_port, Some(2121));
    for port in [1024, 1126, 2121] {
        assert_eq!(
            t.decide(&tcp(I_CLIENT, UPSTREAM, (U1, 40001), (W1, port)), &h),
            Decision::NotSteered,
            "port {port}"
        );
    }
}

#[test]
fn two_services_on_one_address_take_different_chains() {
    // Figure 6: W1:80 → fw → srv, W1:25 → mail directly.
    let mut d = figure7();
    d.services.push(ServiceDef::new(
        "mail",
        web_key(W1, 25),
        &[I_CLIENT],
        vec![HopDef::device("mail")],
    ));
    let t = compile(&d).unwrap();
    let h = PoolState::all_in_service(&t);
    let a = forward(t.decide(&tcp(I_CLIENT, UPSTREAM, (U1, 1), (W1, 80)), &h));
    assert_eq!(to_device(&t, &a).0, "fw");
    assert_eq!(t.service_name(a.service), Some("web"));
    let b = forward(t.decide(&tcp(I_CLIENT, UPSTREAM, (U1, 1), (W1, 25)), &h));
    assert_eq!(to_device(&t, &b).0, "mail");
    assert_eq!(t.service_name(b.service), Some("mail"));
    // Mail's reply goes straight back toward the client.
    let c = forward(t.decide(&tcp(I_SERVERS, SRV2, (W1, 25), (U1, 1)), &h));
    assert_eq!((c.egress, c.service), (Egress::Route, b.service));
}

#[test]
fn acl_deny_and_permit_before_the_chain() {
    let mut d = figure7();
    let mut deny_smtp_net = AclRule::new(
        AclAction::Deny,
        Prefix::new(Ipv4Addr::new(203, 0, 113, 0), 24).unwrap(),
    );
    deny_smtp_net.proto = Some(proto::TCP);
    d.services[0].acl = vec![
        AclRule::new(AclAction::Permit, Prefix::new(U1, 32).unwrap()),
        deny_smtp_net,
    ];
    d.services[0].acl_default = AclAction::Permit;
    let t = compile(&d).unwrap();
    let h = PoolState::all_in_service(&t);
    let web = t.service_index("web").unwrap();
    let neighbour = Ipv4Addr::new(203, 0, 113, 8);
    assert!(matches!(
        t.decide(&tcp(I_CLIENT, UPSTREAM, (U1, 1), (W1, 80)), &h),
        Decision::Forward(_)
    ));
    assert_eq!(
        t.decide(&tcp(I_CLIENT, UPSTREAM, (neighbour, 1), (W1, 80)), &h),
        Decision::Deny {
            service: web,
            rule: Some(1)
        }
    );
    let elsewhere = Ipv4Addr::new(192, 0, 2, 1);
    assert!(matches!(
        t.decide(&tcp(I_CLIENT, UPSTREAM, (elsewhere, 1), (W1, 80)), &h),
        Decision::Forward(_)
    ));
    // Enforced at the entry only: frames coming back from the firewall are not re-checked.
    assert!(matches!(
        t.decide(&tcp(I_SERVERS, FW1, (neighbour, 1), (W1, 80)), &h),
        Decision::Forward(_)
    ));
}

/// A pool of `n` loopback servers `s0..` (optionally with alternate `alt`) behind W1:80.
fn server_pool(n: usize, alternate: bool, on_failure: OnFailure) -> Definitions {
    let mut devices: Vec<DeviceDef> = (0..n)
        .map(|i| {
            DeviceDef::loopback(
                &format!("s{i}"),
                I_SERVERS,
                MacAddr([2, 0, 0, 1, 0, i as u8]),
            )
        })
        .collect();
    devices.push(DeviceDef::loopback(
        "alt",
        I_SERVERS,
        MacAddr([2, 0, 0, 2, 0, 0]),
    ));
    let members: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
    let members: Vec<&str> = members.iter().map(String::as_str).collect();
    let mut pool = PoolDef::new("web", &members);
    pool.alternate = alternate.then(|| "alt".to_string());
    pool.on_failure = on_failure;
    Definitions {
        devices,
        pools: vec![pool],
        services: vec![ServiceDef::new(
            "web",
            web_key(W1, 80),
            &[I_CLIENT],
            vec![HopDef::pool("web")],
        )],
    }
}

fn client(i: u32) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::from(0x0a00_0000 + i * 7919),
        1024 + (i % 50_000) as u16,
    )
}

fn device_of(t: &Tables, h: &PoolState, i: u32) -> Option<DeviceIdx> {
    match t.decide(&tcp(I_CLIENT, UPSTREAM, client(i), (W1, 80)), h) {
        Decision::Forward(a) => a.device(),
        _ => None,
    }
}

#[test]
fn pool_failover_move_goes_to_the_alternate() {
    let t = compile(&server_pool(3, true, OnFailure::Move)).unwrap();
    let mut h = PoolState::all_in_service(&t);
    let s0 = t.device_index("s0").unwrap();
    let alt = t.device_index("alt").unwrap();
    let before: Vec<_> = (0..3000).map(|i| device_of(&t, &h, i).unwrap()).collect();
    assert!(
        !before.contains(&alt),
        "the alternate idles while all members live"
    );
    h.set_device(s0, DeviceHealth::OutOfService);
    for (i, &was) in before.iter().enumerate() {
        let now = device_of(&t, &h, i as u32).unwrap();
        if was == s0 {
            assert_eq!(
                now, alt,
                "flow {i} of the dead member moves to the alternate"
            );
        } else {
            assert_eq!(now, was, "flow {i} keeps its device");
        }
    }
    // Alternate dead too: the dead member's flows spread over the live members.
    h.set_device(alt, DeviceHealth::OutOfService);
    for (i, &was) in before.iter().enumerate() {
        let now = device_of(&t, &h, i as u32).unwrap();
        assert_ne!(now, s0);
        assert_ne!(now, alt);
        if was != s0 {
            assert_eq!(now, was);
        }
    }
    // Nothing alive: the router drops with steering-no-device.
    for d in t.pool_members(PoolIdx(0)).collect::<Vec<_>>() {
        h.set_device(d, DeviceHealth::OutOfService);
    }
    assert_eq!(
        t.decide(&tcp(I_CLIENT, UPSTREAM, client(1), (W1, 80)), &h),
        Decision::Unavailable {
            service: ServiceIdx(0)
        }
    );
}

#[test]
fn pool_failover_reset_answers_established_flows_with_rst() {
    let window = std::time::Duration::from_secs(5);
    let t = compile(&server_pool(3, true, OnFailure::Reset { window })).unwrap();
    let mut h = PoolState::all_in_service(&t);
    let s0 = t.device_index("s0").unwrap();
    let alt = t.device_index("alt").unwrap();
    let on_s0 = (0..1000)
        .find(|&i| device_of(&t, &h, i) == Some(s0))
        .unwrap();
    let k = tcp(I_CLIENT, UPSTREAM, client(on_s0), (W1, 80));

    h.set_device(s0, DeviceHealth::Draining);
    assert_eq!(
        t.decide(&k, &h),
        Decision::Reset {
            service: ServiceIdx(0),
            device: s0
        }
    );
    // The client's new connection attempt is placed on a live device; an RST is never
    // answered with an RST; the server side is never reset.
    assert_eq!(forward(t.decide(&syn(k), &h)).device(), Some(alt));
    let rst = PacketKey {
        tcp_flags: tcp_flags::RST,
        ..k
    };
    assert_eq!(forward(t.decide(&rst, &h)).device(), Some(alt));
    // UDP flows just move.
    let udp = PacketKey {
        proto: proto::UDP,
        ..k
    };
    assert_eq!(
        t.decide(&udp, &h),
        Decision::NotSteered,
        "service is TCP only"
    );
    // After the reset window the dead member's flows move like in a move pool.
    h.set_device(s0, DeviceHealth::OutOfService);
    assert_eq!(forward(t.decide(&k, &h)).device(), Some(alt));

    // A move pool never resets.
    let t = compile(&server_pool(3, true, OnFailure::Move)).unwrap();
    let mut h = PoolState::all_in_service(&t);
    h.set_device(s0, DeviceHealth::Draining);
    assert_eq!(forward(t.decide(&k, &h)).device(), Some(alt));
}

#[test]
fn reset_pool_lets_connections_opened_during_the_drain_follow_their_syn() {
    let window = std::time::Duration::from_secs(5);
    let t = compile(&server_pool(3, true, OnFailure::Reset { window })).unwrap();
    let mut h = PoolState::all_in_service(&t);
    let s0 = t.device_index("s0").unwrap();
    let alt = t.device_index("alt").unwrap();
    let on_s0: Vec<u32> = (0..1000)
        .filter(|&i| device_of(&t, &h, i) == Some(s0))
        .take(2)
        .collect();
    let old = tcp(I_CLIENT, UPSTREAM, client(on_s0[0]), (W1, 80));
    let new = tcp(I_CLIENT, UPSTREAM, client(on_s0[1]), (W1, 80));
    let mut flows = DrainedFlows::new(64);
    h.set_device(s0, DeviceHealth::Draining);

    // The new connection's SYN goes to the alternate and is remembered; its next segments
    // follow it there. The established flow, never seen opening, is reset.
    let a = forward(t.decide_remembering(&syn(new), &h, &mut flows));
    assert_eq!(a.device(), Some(alt));
    for _ in 0..3 {
        assert_eq!(
            forward(t.decide_remembering(&new, &h, &mut flows)).device(),
            Some(alt)
        );
    }
    let reset = Decision::Reset {
        service: ServiceIdx(0),
        device: s0,
    };
    assert_eq!(t.decide_remembering(&old, &h, &mut flows), reset);
    // Without the memory (plain `decide`) the new connection is reset too.
    assert_eq!(t.decide(&new, &h), reset);
    // Another port of the same client is another flow: one whose home is s0 and whose SYN
    // was not seen is reset.
    let healthy = PoolState::all_in_service(&t);
    let other_port = (1..1000)
        .map(|d| PacketKey {
            sport: new.sport.wrapping_add(d),
            ..new
        })
        .find(|k| forward(t.decide(k, &healthy)).device() == Some(s0))
        .expect("a port of the client whose home is s0");
    assert_eq!(t.decide_remembering(&other_port, &h, &mut flows), reset);
    // The server side is never reset: s0's own reply (it may still answer) is steered back.
    let reply = tcp(
        I_SERVERS,
        MacAddr([2, 0, 0, 1, 0, 0]),
        (W1, 80),
        client(on_s0[0]),
    );
    assert!(matches!(
        t.decide_remembering(&reply, &h, &mut flows),
        Decision::Forward(_)
    ));
    // A SYN while the pool is healthy is not remembered: once s0 drains, that connection's
    // next segment is an established flow of s0 and is reset.
    let mut fresh = DrainedFlows::new(64);
    assert_eq!(
        forward(t.decide_remembering(&syn(old), &healthy, &mut fresh)).device(),
        Some(s0)
    );
    assert_eq!(t.decide_remembering(&old, &h, &mut fresh), reset);
}

#[test]
fn consistent_hash_moves_only_a_removed_members_flows() {
    const FLOWS: u32 = 20_000;
    const N: usize = 5;
    let t = compile(&server_pool(N, false, OnFailure::Move)).unwrap();
    let mut h = PoolState::all_in_service(&t);
    let members: Vec<DeviceIdx> = t.pool_members(PoolIdx(0)).collect();
    let before: Vec<DeviceIdx> = (0..FLOWS).map(|i| device_of(&t, &h, i).unwrap()).collect();

    // Even spread: each member within 20% ± 2.5 points.
    for m in &members {
        let share = before.iter().filter(|&&d| d == *m).count() as f64 / f64::from(FLOWS);
        assert!(
            (0.175..0.225).contains(&share),
            "member {m:?} share {share}"
        );
    }

    let gone = members[2];
    h.set_device(gone, DeviceHealth::OutOfService);
    let after: Vec<DeviceIdx> = (0..FLOWS).map(|i| device_of(&t, &h, i).unwrap()).collect();
    let mut moved = 0u32;
    let mut landed = [0u32; N];
    for (b, a) in before.iter().zip(&after) {
        if b == a {
            continue;
        }
        assert_eq!(*b, gone, "only the removed member's flows move");
        moved += 1;
        landed[members.iter().position(|m| m == a).unwrap()] += 1;
    }
    let expected = before.iter().filter(|&&d| d == gone).count() as u32;
    assert_eq!(moved, expected, "every flow of the removed member moves");
    // Its flows spread over the four survivors (25% ± 5 points each).
    for (i, &n) in landed.iter().enumerate() {
        if members[i] == gone {
            assert_eq!(n, 0);
        } else {
            let share = f64::from(n) / f64::from(moved);
            assert!((0.20..0.30).contains(&share), "survivor {i} got {share}");
        }
    }
    println!(
        "consistent hash: {FLOWS} flows over {N} members, removing one moved {moved} ({:.1}%), \
         all of them its own",
        100.0 * f64::from(moved) / f64::from(FLOWS)
    );

    // Restoring it brings back exactly its flows.
    h.set_device(gone, DeviceHealth::InService);
    let again: Vec<DeviceIdx> = (0..FLOWS).map(|i| device_of(&t, &h, i).unwrap()).collect();
    assert_eq!(again, before);
}

#[test]
fn a_reload_that_adds_a_member_moves_only_the_flows_it_takes() {
    // Pools of 3+ members pick from a precomputed home table: the table of the 5-member pool
    // must keep every flow of the 4-member one except those the new member wins.
    const FLOWS: u32 = 20_000;
    let four = compile(&server_pool(4, false, OnFailure::Move)).unwrap();
    let five = compile(&server_pool(5, false, OnFailure::Move)).unwrap();
    let (h4, h5) = (
        PoolState::all_in_service(&four),
        PoolState::all_in_service(&five),
    );
    let name = |t: &Tables, d: DeviceIdx| t.device_name(d).unwrap_or("?").to_string();
    let mut taken = 0u32;
    for i in 0..FLOWS {
        let before = name(&four, device_of(&four, &h4, i).unwrap());
        let after = name(&five, device_of(&five, &h5, i).unwrap());
        if before != after {
            assert_eq!(after, "s4", "flow {i} moved from {before} to {after}");
            taken += 1;
        }
    }
    // The new member takes about a fifth (20% ± 2.5 points).
    let share = f64::from(taken) / f64::from(FLOWS);
    assert!((0.175..0.225).contains(&share), "new member took {share}");
}

#[test]
fn both_directions_pick_the_same_pool_member() {
    // A pool of four firewalls in front of one server: the reply must cross the firewall that
    // saw the request, without any flow state.
    let mut devices = vec![DeviceDef::loopback("srv", I_SERVERS, SRV)];
    let mut names = Vec::new();
    for i in 0..4u8 {
        let n = format!("fw{i}");
        devices.push(DeviceDef::transparent(
            &n,
            [I_FW0, I_SERVERS],
            MacAddr([2, 0, 0, 0xf0, 0, i]),
            MacAddr([2, 0, 0, 0xf1, 0, i]),
        ));
        names.push(n);
    }
    let members: Vec<&str> = names.iter().map(String::as_str).collect();
    let d = Definitions {
        devices,
        pools: vec![PoolDef::new("fws", &members)],
        services: vec![ServiceDef::new(
            "web",
            web_key(W1, 80),
            &[I_CLIENT],
            vec![HopDef::pool("fws"), HopDef::device("srv")],
        )],
    };
    let t = compile(&d).unwrap();
    let h = PoolState::all_in_service(&t);
    let mut used = std::collections::HashSet::new();
    for i in 0..2000 {
        let c = client(i);
        let a = forward(t.decide(&tcp(I_CLIENT, UPSTREAM, c, (W1, 80)), &h));
        let b = forward(t.decide(&tcp(I_SERVERS, SRV, (W1, 80), c), &h));
        assert_eq!(a.device(), b.device(), "flow {i}");
        used.insert(a.device());
        // The firewall's own returns lead on: forward to the server, reverse to the client.
        let (_, _, NextHop::Mac(in_mac), _) = to_device(&t, &a) else {
            unreachable!()
        };
        let mut out_mac = in_mac;
        out_mac.0[3] = 0xf1;
        let f = forward(t.decide(&tcp(I_SERVERS, out_mac, c, (W1, 80)), &h));
        assert_eq!(to_device(&t, &f).0, "srv");
        let r = forward(t.decide(&tcp(I_FW0, in_mac, (W1, 80), c), &h));
        assert_eq!(r.egress, Egress::Route);
        assert_eq!(r.from, a.device());
    }
    assert_eq!(used.len(), 4);
}

#[test]
fn routed_chain_end_bump_in_the_wire() {
    // W2:443 is a real server somewhere past routing; the firewall sits in the path only.
    let mut d = figure7();
    d.services.push(ServiceDef::new(
        "tls",
        web_key(W2, 443),
        &[I_CLIENT],
        vec![HopDef::device("fw"), HopDef::device("ids").as_copy()],
    ));
    let t = compile(&d).unwrap();
    let h = PoolState::all_in_service(&t);
    let a = forward(t.decide(&tcp(I_CLIENT, UPSTREAM, (U1, 5), (W2, 443)), &h));
    assert_eq!(to_device(&t, &a).0, "fw");
    // Past the firewall: routed normally, with the copy (a chain end is still a Forward so the
    // router counts it and sends copies).
    let a = forward(t.decide(&tcp(I_SERVERS, FW1, (U1, 5), (W2, 443)), &h));
    assert_eq!(a.egress, Egress::Route);
    assert_eq!(a.copies.len(), 1);
    // The reply arrives from wherever routing brings it: into the firewall's inside.
    let b = forward(t.decide(&tcp(I_GW, ROGUE, (W2, 443), (U1, 5)), &h));
    assert_eq!(
        to_device(&t, &b),
        (
            "fw".into(),
            I_SERVERS,
            NextHop::Mac(FW1),
            DeviceMode::Transparent
        )
    );
    assert!(b.entering);
    let c = forward(t.decide(&tcp(I_FW0, FW0, (W2, 443), (U1, 5)), &h));
    assert_eq!(c.egress, Egress::Route);
}

#[test]
fn subscriber_service_through_firewall_to_gateway() {
    // Every packet from 10.1.0.0/16 crosses the firewall, then leaves through gateway `gw`
    // (router mode, addressed by ARP); replies walk back.
    let sub_net = Prefix::new(Ipv4Addr::new(10, 1, 0, 0), 16).unwrap();
    let gw = Ipv4Addr::new(192, 0, 2, 254);
    let mut d = figure7();
    d.devices.push(DeviceDef::router("gw", I_GW, gw));
    d.services.push(ServiceDef::new(
        "subscriber-a",
        ServiceKey::Subscriber {
            prefix: sub_net,
            proto: None,
        },
        &[I_CLIENT],
        vec![HopDef::device("fw"), HopDef::device("gw")],
    ));
    let t = compile(&d).unwrap();
    let h = PoolState::all_in_service(&t);
    let host = (Ipv4Addr::new(10, 1, 2, 3), 33000);
    let remote = (Ipv4Addr::new(192, 0, 2, 80), 443);

    let a = forward(t.decide(&tcp(I_CLIENT, UPSTREAM, host, remote), &h));
    assert_eq!(t.service_name(a.service), Some("subscriber-a"));
    assert_eq!(to_device(&t, &a).0, "fw");
    let a = forward(t.decide(&tcp(I_SERVERS, FW1, host, remote), &h));
    assert_eq!(
        to_device(&t, &a),
        ("gw".into(), I_GW, NextHop::Addr(gw), DeviceMode::Router)
    );
    assert!(a.rewrite.is_empty());
    let b = forward(t.decide(&tcp(I_GW, ROGUE, remote, host), &h));
    assert_eq!(b.direction, Direction::Reverse);
    assert_eq!(to_device(&t, &b).0, "fw");
    let c = forward(t.decide(&tcp(I_FW0, FW0, remote, host), &h));
    assert_eq!(c.egress, Egress::Route);
    // Other clients are not subscribers; the W1 service still wins for its own key.
    assert_eq!(
        t.decide(&tcp(I_CLIENT, UPSTREAM, (U1, 1), remote), &h),
        Decision::NotSteered
    );
    let w = forward(t.decide(&tcp(I_CLIENT, UPSTREAM, host, (W1, 80)), &h));
    assert_eq!(t.service_name(w.service), Some("web"));
}

#[test]
fn health_monitor_drives_failover_in_the_data_plane() {
    use std::time::{Duration, Instant};
    #[allow(clippy::disallowed_methods)] // an arbitrary origin; the rest is virtual time
    let mut now = Instant::now();
    let mut d = server_pool(3, true, OnFailure::Move);
    for (i, dev) in d.devices.iter_mut().enumerate() {
        dev.addr = Some(Ipv4Addr::new(10, 0, 2, 100 + i as u8));
    }
    d.pools[0].active = Some(ActiveCheck {
        port: 80,
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        rise: 2,
        fall: 2,
    });
    let t = compile(&d).unwrap();
    let mut m = HealthMonitor::new(&t, now);
    let s1 = t.device_index("s1").unwrap();
    let alt = t.device_index("alt").unwrap();
    let on_s1 = (0..1000)
        .find(|&i| device_of(&t, m.state(), i) == Some(s1))
        .unwrap();
    let mut published = m.state().clone();
    let mut down_at = None;
    for round in 0..4 {
        m.handle_timeout(now);
        while let Some(p) = m.poll_probe() {
            // s1 stops answering from round 1.
            let ok = !(p.device == s1 && round >= 1);
            m.handle_probe_result(now, p.device, ok);
        }
        while let Some(e) = m.poll_event() {
            if let HealthEvent::FailedOver {
                device, alternate, ..
            } = e
            {
                assert_eq!((device, alternate), (s1, alt));
                down_at = Some(round);
            }
        }
        published = m.state().clone();
        now += Duration::from_secs(1);
    }
    assert_eq!(
        down_at,
        Some(2),
        "fall = 2: down at the second failed probe"
    );
    assert_eq!(device_of(&t, &published, on_s1), Some(alt));
}

#[test]
fn one_armed_transparent_device_both_ways() {
    // Figure 7's VPN: reached and returning on the same interface with the same MAC; the
    // direction tells its two sides apart.
    const VPN: MacAddr = MacAddr([0x02, 0, 0, 0, 0x77, 0x01]);
    let mut d = figure7();
    d.devices.push(DeviceDef::transparent(
        "vpn",
        [I_SERVERS, I_SERVERS],
        VPN,
        VPN,
    ));
    d.services[0].chain = vec![
        HopDef::device("fw"),
        HopDef::device("vpn"),
        HopDef::device("srv"),
    ];
    let t = compile(&d).unwrap();
    let h = PoolState::all_in_service(&t);
    let c = (U1, 41000);
    let a = forward(t.decide(&tcp(I_SERVERS, FW1, c, (W1, 80)), &h));
    assert_eq!(to_device(&t, &a).0, "vpn");
    let a = forward(t.decide(&tcp(I_SERVERS, VPN, c, (W1, 80)), &h));
    assert_eq!(to_device(&t, &a).0, "srv");
    assert_eq!(name(&t, a.from), Some("vpn"));
    let b = forward(t.decide(&tcp(I_SERVERS, SRV, (W1, 80), c), &h));
    assert_eq!(
        to_device(&t, &b),
        (
            "vpn".into(),
            I_SERVERS,
            NextHop::Mac(VPN),
            DeviceMode::Transparent
        )
    );
    let b = forward(t.decide(&tcp(I_SERVERS, VPN, (W1, 80), c), &h));
    assert_eq!(
        to_device(&t, &b),
        (
            "fw".into(),
            I_SERVERS,
            NextHop::Mac(FW1),
            DeviceMode::Transparent
        )
    );
}

#[test]
fn nat_pool_without_macs_names_the_answering_member() {
    let mut d = figure7();
    let mut pool = PoolDef::new("nats", &["nat1", "nat2"]);
    pool.policy = Policy::ClientHash;
    d.pools.push(pool);
    d.services[0].chain = vec![HopDef::pool("nats")];
    let t = compile(&d).unwrap();
    let h = PoolState::all_in_service(&t);
    for (server, name_) in [(S1, "nat1"), (S2, "nat2")] {
        // Any MAC on the servers' segment: the source address says which member answered.
        let b = forward(t.decide(&tcp(I_SERVERS, ROGUE, (server, 80), (U1, 5)), &h));
        assert_eq!(name(&t, b.from), Some(name_));
        assert_eq!(b.rewrite.src_addr, Some(W1));
        assert_eq!(b.egress, Egress::Route);
    }
    // Client hashing: every connection of a client lands on one member.
    let first = forward(t.decide(&tcp(I_CLIENT, UPSTREAM, (U1, 1), (W1, 80)), &h)).device();
    for port in 2..200 {
        let a = forward(t.decide(&tcp(I_CLIENT, UPSTREAM, (U1, port), (W1, 80)), &h));
        assert_eq!(a.device(), first);
    }
}

#[test]
fn compile_errors_name_their_subject() {
    // Two devices claiming one MAC on one interface cannot be told apart.
    let mut d = figure7();
    d.devices.push(DeviceDef::loopback("clone", I_SERVERS, SRV));
    let e = compile(&d).unwrap_err();
    assert_eq!(e.subject(), Subject::Device("clone"));
    assert!(e.to_string().contains("share MAC 02:00:00:00:5e:01"), "{e}");
    // The error message reads as a sentence naming the service and the missing name.
    let mut d = figure7();
    d.services[0].chain.push(HopDef::pool("nope"));
    let e = compile(&d).unwrap_err();
    assert_eq!(e.to_string(), "service `web`, hop 3: unknown pool `nope`");
}

/// Replays the `steering_compile` fuzz seeds (`fuzz/corpus/steering_compile/`) through
/// `steering::fuzzing`, so the corpus runs on stable with `cargo test`.
#[test]
fn replay_steering_compile_corpus() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/steering_compile");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("directory entry").path();
        steering::fuzzing::fuzz_compile(&std::fs::read(&path).expect("seed"));
        n += 1;
    }
    assert!(n >= 3, "{n} seeds in {}", dir.display());
}

#[test]
fn a_standby_imports_the_actives_device_health_and_resumes_probing_from_it() {
    use std::time::{Duration, Instant};
    #[allow(clippy::disallowed_methods)] // an arbitrary origin; the rest is virtual time
    let now = Instant::now();
    let mut d = server_pool(3, true, OnFailure::Move);
    for (i, dev) in d.devices.iter_mut().enumerate() {
        dev.addr = Some(Ipv4Addr::new(10, 0, 2, 100 + i as u8));
    }
    d.pools[0].active = Some(ActiveCheck {
        port: 80,
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        rise: 2,
        fall: 3,
    });
    let t = compile(&d).unwrap();
    let s1 = t.device_index("s1").unwrap();
    // The active took s1 down; its record travels through the codec.
    let mut active = HealthMonitor::new(&t, now);
    let mut at = now;
    for _ in 0..3 {
        active.handle_timeout(at);
        while let Some(p) = active.poll_probe() {
            active.handle_probe_result(at, p.device, p.device != s1);
        }
        at += Duration::from_secs(1);
    }
    let now = at;
    assert_eq!(active.phase(s1), Some(DevicePhase::Down));
    let exported = active.export(s1, now).unwrap();
    let value = sync::encode_value(&exported);
    let key = sync::encode_key(t.device_name(s1).unwrap());
    // The standby (devices start up) takes it as is: s1 is out at once, without a probe.
    let mut standby = HealthMonitor::new(&t, now);
    let name = sync::decode_key(&key).unwrap();
    let dev = t.device_index(name).unwrap();
    standby.import(dev, sync::decode_value(&value).unwrap(), now);
    assert_eq!(standby.state().device(s1), active.state().device(s1));
    assert!(!standby.state().in_service(s1));
    assert_eq!(standby.phase(s1), Some(DevicePhase::Down));
    assert!(standby.poll_probe().is_none());
    // Taking over, it probes at once and needs `rise` good probes, not `fall` bad ones.
    standby.resume(now);
    standby.handle_timeout(now);
    let mut probed = Vec::new();
    while let Some(p) = standby.poll_probe() {
        probed.push(p.device);
        standby.handle_probe_result(now, p.device, true);
    }
    assert!(probed.contains(&s1));
    assert!(!standby.state().in_service(s1), "one good probe of rise 2");
}

#[test]
fn a_connection_opened_during_the_drain_on_one_node_is_not_reset_by_the_other() {
    // Two nodes of an HA pair compile the same configuration. The active remembers a
    // connection opened while s0 drains and journals it; the standby adopts the journaled key
    // (it travels as a STEERING_DRAIN record); after a takeover the standby forwards the
    // connection's next segment instead of resetting it.
    let window = std::time::Duration::from_secs(5);
    let defs = server_pool(3, true, OnFailure::Reset { window });
    let (ta, tb) = (compile(&defs).unwrap(), compile(&defs).unwrap());
    let mut h = PoolState::all_in_service(&ta);
    let s0 = ta.device_index("s0").unwrap();
    let alt = ta.device_index("alt").unwrap();
    let i = (0..1000)
        .find(|&i| device_of(&ta, &h, i) == Some(s0))
        .unwrap();
    let conn = tcp(I_CLIENT, UPSTREAM, client(i), (W1, 80));
    h.set_device(s0, DeviceHealth::Draining);
    let mut active = DrainedFlows::new(64);
    active.set_journaling(true);
    assert_eq!(
        forward(ta.decide_remembering(&syn(conn), &h, &mut active)).device(),
        Some(alt)
    );
    let mut records = Vec::new();
    active.drain_journal(|c| {
        if let DrainChange::Remembered(k) = c {
            records.push(sync::encode_drain_key(k));
        }
    });
    assert_eq!(records.len(), 1);
    let mut standby = DrainedFlows::new(64);
    let reset = Decision::Reset {
        service: ServiceIdx(0),
        device: s0,
    };
    assert_eq!(
        tb.decide_remembering(&conn, &h, &mut standby.clone()),
        reset,
        "without the synced memory the connection is reset"
    );
    for r in &records {
        standby.adopt(sync::decode_drain_key(r).unwrap());
    }
    assert_eq!(
        forward(tb.decide_remembering(&conn, &h, &mut standby)).device(),
        Some(alt)
    );
}
