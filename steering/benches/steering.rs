//! Steering benchmarks (issue #7 targets): the data plane's decision
//! (`decide_remembering`, with a worker's drain memory) with 10,000 services under 50 ns per
//! packet, and `compile` of 10,000 services under 50 ms.
//!
//! The service mix: every service W_i:80 (ingress i0) walks a pool of 4 transparent firewalls,
//! copies to an IDS, and ends in a pool of 8 loopback servers; every fourth service instead
//! ends in a pool of 4 NAT servers with its own translated port (NAT reverse keys must be
//! unique per service).

// criterion_group!/criterion_main! generate undocumented functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use std::hint::black_box;
use std::net::Ipv4Addr;
use steering::*;

const SERVICES: u32 = 10_000;
const UPSTREAM: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

fn fw_in(i: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0xf0, 0, i])
}
fn fw_out(i: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0xf1, 0, i])
}
fn srv_mac(i: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0x5e, 0, i])
}
fn service_addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x6440_0000 + i) // 100.64.0.0 + i
}
fn nat_addr(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 9, i + 1)
}

fn definitions(n: u32) -> Definitions {
    let mut devices = Vec::new();
    for i in 0..4 {
        devices.push(DeviceDef::transparent(
            &format!("fw{i}"),
            [1, 2],
            fw_in(i),
            fw_out(i),
        ));
    }
    devices.push(DeviceDef::loopback(
        "ids",
        3,
        MacAddr([2, 0, 0, 0x1d, 0, 0]),
    ));
    for i in 0..8 {
        devices.push(DeviceDef::loopback(&format!("srv{i}"), 2, srv_mac(i)));
    }
    for i in 0..4 {
        devices.push(DeviceDef::nat(&format!("nat{i}"), 2, nat_addr(i)));
    }
    let pools = vec![
        PoolDef::new("fws", &["fw0", "fw1", "fw2", "fw3"]),
        PoolDef::new(
            "srvs",
            &[
                "srv0", "srv1", "srv2", "srv3", "srv4", "srv5", "srv6", "srv7",
            ],
        ),
        PoolDef::new("nats", &["nat0", "nat1", "nat2", "nat3"]),
    ];
    let services = (0..n)
        .map(|i| {
            let nat = i % 4 == 3;
            let mut s = ServiceDef::new(
                &format!("svc{i}"),
                ServiceKey::Address {
                    addr: service_addr(i),
                    proto: proto::TCP,
                    ports: PortRange::single(80),
                },
                &[0],
                vec![
                    HopDef::pool("fws"),
                    HopDef::device("ids").as_copy(),
                    HopDef::pool(if nat { "nats" } else { "srvs" }),
                ],
            );
            if nat {
                s.translate_port = Some(10_000 + i as u16);
            }
            s
        })
        .collect();
    Definitions {
        devices,
        pools,
        services,
    }
}

fn key(in_if: IfId, mac: MacAddr, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> PacketKey {
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

/// A cheap deterministic generator (no rand dependency).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }
}

/// Packets of every step of random flows: client entry, back from the firewall, the server's
/// reply, back from the firewall toward the client.
fn mixed_packets(t: &Tables, h: &PoolState, count: usize) -> Vec<PacketKey> {
    mixed_packets_of(t, h, count, SERVICES)
}

/// As [`mixed_packets`] over the first `services` services.
fn mixed_packets_of(t: &Tables, h: &PoolState, count: usize, services: u32) -> Vec<PacketKey> {
    let mut rng = Lcg(7);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let s = rng.next() % services;
        let w = service_addr(s);
        let client = (
            Ipv4Addr::from(0xcb00_7100 | (rng.next() & 0xff)),
            1024 + (rng.next() % 60_000) as u16,
        );
        let entry = key(0, UPSTREAM, client, (w, 80));
        let Decision::Forward(a) = t.decide(&entry, h) else {
            panic!("bench setup: not steered")
        };
        let Egress::Device {
            next: NextHop::Mac(m),
            ..
        } = a.egress
        else {
            panic!("bench setup: firewall by MAC")
        };
        let fw = m.0[5];
        let back = key(2, fw_out(fw), client, (w, 80));
        let Decision::Forward(b) = t.decide(&back, h) else {
            panic!("bench setup: fw return")
        };
        let reply = match b.egress {
            Egress::Device {
                next: NextHop::Mac(srv),
                ..
            } => key(2, srv, (w, 80), client),
            Egress::Device {
                next: NextHop::Addr(s_addr),
                ..
            } => {
                let tp = b.rewrite.dst_port.unwrap_or(80);
                key(2, UPSTREAM, (s_addr, tp), client)
            }
            Egress::Route => panic!("bench setup: server"),
        };
        let out_fw = key(1, fw_in(fw), (w, 80), client);
        out.extend([entry, back, reply, out_fw]);
    }
    out.truncate(count);
    out
}

/// The same mix with 100 services: everything in cache, the compute floor.
fn bench_decide_small(c: &mut Criterion) {
    let t = compile(&definitions(100)).expect("bench definitions compile");
    let h = PoolState::all_in_service(&t);
    let mixed = mixed_packets_of(&t, &h, 4096, 100);
    let mut g = c.benchmark_group("decide-100-services");
    g.bench_function("mixed-steps", |b| {
        let mut i = 0usize;
        let mut flows = DrainedFlows::default();
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(t.decide_remembering(black_box(&mixed[i]), &h, &mut flows))
        })
    });
    g.finish();
}

fn bench_decide(c: &mut Criterion) {
    let t = compile(&definitions(SERVICES)).expect("bench definitions compile");
    let h = PoolState::all_in_service(&t);
    const N: usize = 4096;
    let mixed = mixed_packets(&t, &h, N);
    let entries: Vec<PacketKey> = mixed.iter().step_by(4).copied().collect();
    let mut rng = Lcg(11);
    let unsteered: Vec<PacketKey> = (0..N)
        .map(|_| {
            let a = Ipv4Addr::from(0xc000_0200 | (rng.next() & 0xffff));
            let b = Ipv4Addr::from(0x0a00_0000 | (rng.next() & 0xffffff));
            key(0, UPSTREAM, (a, 40_000), (b, 443))
        })
        .collect();
    // A dead firewall and server: the failover path.
    let mut degraded = h.clone();
    degraded.set_device(
        t.device_index("fw1").expect("fw1"),
        DeviceHealth::OutOfService,
    );
    degraded.set_device(
        t.device_index("srv3").expect("srv3"),
        DeviceHealth::OutOfService,
    );

    let mut g = c.benchmark_group("decide-10k-services");
    for (name, pkts, health) in [
        ("mixed-steps", &mixed, &h),
        ("client-entry", &entries, &h),
        ("not-steered", &unsteered, &h),
        ("mixed-failover", &mixed, &degraded),
    ] {
        let mask = pkts.len().next_power_of_two() / 2 - 1;
        g.bench_function(name, |b| {
            let mut i = 0usize;
            let mut flows = DrainedFlows::default();
            b.iter(|| {
                i = (i + 1) & mask;
                black_box(t.decide_remembering(black_box(&pkts[i]), health, &mut flows))
            })
        });
    }
    g.finish();
}

fn bench_compile(c: &mut Criterion) {
    let defs = definitions(SERVICES);
    let mut g = c.benchmark_group("compile");
    g.sample_size(10);
    g.bench_function("10k-services", |b| {
        b.iter_batched(
            || (),
            |_| black_box(compile(black_box(&defs)).expect("compile")),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_decide, bench_decide_small, bench_compile);
criterion_main!(benches);
