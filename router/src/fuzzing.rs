//! Entry point for the `router_pipeline` fuzz target (`../fuzz`) and its corpus replay test:
//! arbitrary frames on arbitrary interfaces through the whole pipeline, against a realistic
//! table snapshot — a WCCP service 0 whose buckets are split over two caches (GRE and L2), a
//! steering service with a transparent device and a NAT device in its chain, a static route —
//! with the neighbours of every next hop known and a few unknown, so that ARP resolution and
//! its pending queue are in play. eth2 is also a router cluster's shared segment: templates 1
//! and 7 arriving there are sent to the cluster MAC, whose ids are a third each owned, foreign
//! and moving (held); at the end some moving ones are handed off, some taken back, and the
//! node is fenced, so every held packet leaves the hold queue.
//!
//! Nothing may panic, and the counters must account for every packet exactly once: the rx stage
//! saw every frame fed, and every stage's packets in equal its packets out plus those it
//! consumed plus those it dropped.
//!
//! The input is a list of records `iface, template, offset, n, n octets`: the template is a
//! well-formed frame of one of the paths above (or none: the octets are the frame), and the
//! octets are XORed into it from `offset` on, after which the IPv4 header checksum is fixed
//! unless bit 0x40 of the template octet asks to keep it as mutated (so that mutants get past
//! ipv4-input); a template octet with the top bit set also ends the burst and moves the clock
//! by its low six bits in milliseconds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pipeline::counters::WorkerCounters;
use crate::pipeline::packet::{Packet, Pool};
use crate::pipeline::{Pipeline, StageKind};
use crate::tables::neighbours::Neighbours;
use crate::tables::routes::RouteTable;
use crate::tables::steer::SteeringPlane;
use crate::tables::wccp::WccpPlane;
use crate::tables::{Iface, Tables};
use crate::wire::ethernet::{self, MacAddr};
use crate::wire::ipv4;

const STEERING: &str = r#"
[[interface]]
name = "eth0"
address = "10.0.1.1/24"
[[interface]]
name = "eth1"
address = "10.0.2.1/24"
[[interface]]
name = "eth2"
address = "10.0.3.1/24"
[[steering.device]]
name = "ids"
mode = "transparent"
interfaces = ["eth1", "eth1"]
mac = "02:00:00:00:02:99"
[[steering.device]]
name = "srv"
mode = "nat"
interfaces = ["eth1"]
address = "10.0.2.2"
[[steering.service]]
name = "svc"
address = "10.0.9.80"
protocol = "udp"
port = 5000
ingress = ["eth0"]
chain = [{ device = "ids", copy = true }, { device = "srv" }]
translate-port = 6000
dscp = 46
"#;

/// The cluster on eth2 (the rest of the file's interfaces, for the names).
const CLUSTER: &str = r#"
[[interface]]
name = "eth0"
address = "10.0.1.1/24"
[[interface]]
name = "eth1"
address = "10.0.2.1/24"
[[interface]]
name = "eth2"
address = "10.0.3.1/24"
[cluster]
name = "fuzz"
node-id = 1
etcd = ["http://10.8.0.100:2379"]
sync-local = "10.8.0.1:7788"
key-file = "/dev/null"
cluster-mac = "03:00:5e:c1:00:01"
hold-limit = 8
[[cluster.interface]]
name = "eth2"
addresses = ["10.0.3.254"]
"#;

const CLIENT: MacAddr = MacAddr([2, 0, 0, 0, 1, 2]);
const CACHE_GRE: [u8; 4] = [10, 0, 3, 2];
const CACHE_L2: [u8; 4] = [10, 0, 3, 3];

fn mac_of(iface: u16) -> MacAddr {
    MacAddr([2, 0, 0, 0, iface as u8 + 1, 1])
}

/// The table snapshot (built per input, so that no state leaks between inputs).
fn tables() -> Tables {
    let iface = |id: u16| Iface {
        id,
        name: format!("eth{id}"),
        ifindex: u32::from(id) + 1,
        mac: mac_of(id),
        addr: [10, 0, id as u8 + 1, 1].into(),
        prefix_len: 24,
        mtu: 1500,
        backend: conf::IoBackend::Pnet,
        redirect_in: if id == 0 { vec![0] } else { Vec::new() },
        redirect_out: Vec::new(),
        exclude_in: false,
        // Every interface takes WCCP, so fuzzed control datagrams reach the queues too.
        wccp_caches: true,
    };
    let ifaces = vec![iface(0), iface(1), iface(2)];
    let statics = [([192, 0, 2, 0].into(), 24, [10, 0, 2, 254].into(), None)];
    let routes = RouteTable::build(&ifaces, &statics).expect("the fixture's routes are valid");
    let mut t = Tables::new(ifaces, routes);
    if let Ok(c) = conf::parse_str("fuzz.conf", STEERING) {
        if let Ok(plane) = SteeringPlane::build(&c.steering.definitions) {
            t.steering = Arc::new(plane);
        }
    }
    t.wccp = Arc::new(wccp_plane());
    // VRID 51 on eth0 is master (Accept_Mode); VRID 52 on eth1 has just handed over and
    // lingers.
    let vrrp = crate::tables::vrrp::VrrpPlane::new([
        (0, 51, vec![VIP.into()]),
        (1, 52, vec![[10, 0, 2, 253].into()]),
    ]);
    vrrp.set_role(0, true, true);
    vrrp.set_linger(1, true);
    t.vrrp = Some(Arc::new(vrrp));
    if let Some(c) = conf::parse_str("fuzz.conf", CLUSTER)
        .ok()
        .and_then(|c| c.cluster)
    {
        if let Ok(plane) = crate::tables::cluster::ClusterPlane::new(&c, &t.ifaces, None) {
            let _ = plane.set_hash_key(7);
            for id in 0..=255u8 {
                plane.set_state(
                    id,
                    match id % 3 {
                        0 => ::cluster::PlaneState::Owned,
                        1 => ::cluster::PlaneState::Releasing,
                        _ => ::cluster::PlaneState::Foreign,
                    },
                );
            }
            t.cluster = Some(Arc::new(plane));
        }
    }
    t
}

/// VRID 51's virtual address.
const VIP: [u8; 4] = [10, 0, 1, 254];

/// Service 0: even buckets on a GRE cache, odd ones on an L2 cache, bucket 7 unassigned.
fn wccp_plane() -> WccpPlane {
    use wccp::assign::{Assignment, CacheTarget};
    use wccp::engine::{ForwardingMethod, ReturnMethod};
    let target = |a: [u8; 4], forwarding| CacheTarget {
        address: a.into(),
        router_id: [10, 0, 3, 1].into(),
        forwarding,
        packet_return: ReturnMethod::Gre,
    };
    let mut buckets = [0u8; 256];
    for (i, b) in buckets.iter_mut().enumerate() {
        *b = (i % 2) as u8;
    }
    buckets[7] = wccp::wire::BUCKET_UNASSIGNED;
    let (a, _) = Assignment::hash(
        wccp::wire::ServiceInfo::standard(0),
        wccp::wire::AssignmentKey::NONE,
        &[
            Some(target(CACHE_GRE, ForwardingMethod::Gre)),
            Some(target(CACHE_L2, ForwardingMethod::L2)),
        ],
        &buckets,
    );
    let a = a.with_members([CACHE_GRE.into(), CACHE_L2.into()]);
    WccpPlane::from_assignments([(0u8, Arc::new(a))])
}

/// An IPv4 frame from `src_mac` to the router's `iface`, `payload` after a 20-octet header.
fn ip_frame(iface: u16, src: [u8; 4], dst: [u8; 4], protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 34];
    ethernet::write_header(&mut f, mac_of(iface), CLIENT, ethernet::ETHERTYPE_IPV4);
    ipv4::Ipv4Repr {
        src: src.into(),
        dst: dst.into(),
        protocol,
        payload_len: payload.len(),
        ttl: 64,
        ident: 1,
        tos: 0,
        dont_fragment: false,
    }
    .emit(&mut f[14..34]);
    f.extend_from_slice(payload);
    f
}

fn l4(sport: u16, dport: u16, tcp: bool) -> Vec<u8> {
    let mut p = vec![0u8; if tcp { 20 } else { 8 }];
    p[0..2].copy_from_slice(&sport.to_be_bytes());
    p[2..4].copy_from_slice(&dport.to_be_bytes());
    if tcp {
        p[12] = 0x50;
        p[13] = 0x02;
    } else {
        p[4..6].copy_from_slice(&8u16.to_be_bytes());
    }
    p
}

/// The well-formed frame a template names.
fn template(kind: u8, iface: u16) -> Vec<u8> {
    let client = [10, 0, 1, 2];
    let mut f = match kind % 10 {
        // TCP SYN to a server: WCCP service 0 redirects it (GRE or L2 by bucket).
        1 => ip_frame(iface, client, [10, 0, 2, 80], 6, &l4(40000, 80, true)),
        // UDP to the steering service.
        2 => ip_frame(iface, client, [10, 0, 9, 80], 17, &l4(40000, 5000, false)),
        // A GRE return from the GRE cache with the WCCP redirect header.
        3 => {
            let inner = ip_frame(iface, client, [10, 0, 2, 80], 6, &l4(40000, 80, true));
            let mut gre = vec![0, 0, 0x88, 0x3e, 0, 0, 0, 0];
            gre.extend_from_slice(&inner[14..]);
            ip_frame(iface, CACHE_GRE, [10, 0, 3, 1], 47, &gre)
        }
        // WCCP control traffic to the router.
        4 => ip_frame(iface, CACHE_GRE, [10, 0, 3, 1], 17, &l4(2048, 2048, false)),
        // An ARP request for the router's address.
        5 => {
            let mut f = vec![0u8; 42];
            ethernet::write_header(&mut f, MacAddr([0xff; 6]), CLIENT, 0x0806);
            f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            f[22..28].copy_from_slice(&CLIENT.0);
            f[28..32].copy_from_slice(&[10, 0, iface as u8 + 1, 2]);
            f[38..42].copy_from_slice(&[10, 0, iface as u8 + 1, 1]);
            f
        }
        // An echo request to the router.
        6 => ip_frame(
            iface,
            client,
            [10, 0, 1, 1],
            1,
            &[8, 0, 0xf7, 0xff, 0, 0, 0, 0],
        ),
        // UDP over the static route, and to an unresolved neighbour on eth1.
        7 => ip_frame(iface, client, [192, 0, 2, 9], 17, &l4(1, 53, false)),
        // A VRRPv3 advertisement for VRID 51 (to the VRRP group, TTL 255).
        8 => {
            let advert = [0x31, 51, 100, 1, 0, 2, 0, 0, 10, 0, 1, 254];
            let mut f = ip_frame(iface, [10, 0, 1, 3], [224, 0, 0, 18], 112, &advert);
            f[0..6].copy_from_slice(&::vrrp::wire::MULTICAST_MAC.0);
            f[22] = 255;
            ipv4::fill_checksum(&mut f[14..], 20);
            f
        }
        // An echo request to VRID 51's virtual address, sent to its virtual MAC.
        9 => {
            let mut f = ip_frame(iface, client, VIP, 1, &[8, 0, 0xf7, 0xff, 0, 0, 0, 0]);
            f[0..6].copy_from_slice(&::vrrp::wire::virtual_mac(51).0);
            f
        }
        _ => Vec::new(),
    };
    // On the cluster's segment, routed traffic comes to the cluster MAC.
    if iface == 2 && matches!(kind % 10, 1 | 7) {
        if let Some(d) = f.get_mut(0..6) {
            d.copy_from_slice(&[3, 0, 0x5e, 0xc1, 0, 1]);
        }
    }
    f
}

/// Feeds the records of `data` to a fresh pipeline and checks the accounting.
pub fn fuzz_pipeline(data: &[u8], t0: Instant) {
    let mut tables = tables();
    // Advertisements queue here (bounded; a full queue is a counted drop), as for the driver.
    let _vrrp_rx = tables.local.bind_vrrp(16);
    let neighbours = Neighbours::default();
    for (ifid, ip, mac) in [
        (1, [10, 0, 2, 2], [2, 0, 0, 0, 2, 2]),
        (1, [10, 0, 2, 80], [2, 0, 0, 0, 2, 80]),
        (1, [10, 0, 2, 254], [2, 0, 0, 0, 2, 0xfe]),
        (2, CACHE_GRE, [2, 0, 0, 0, 3, 2]),
        (2, CACHE_L2, [2, 0, 0, 0, 3, 3]),
        (0, [10, 0, 1, 2], [2, 0, 0, 0, 1, 2]),
    ] {
        neighbours.learn(ifid, ip.into(), MacAddr(mac), true, t0);
    }
    let n_ifaces = tables.ifaces.len();
    let counters = Arc::new(WorkerCounters::new(Pipeline::stage_count(), n_ifaces));
    let mut pipeline = Pipeline::new(0, n_ifaces, counters.clone());
    let mut pool = Pool::new(64);
    let mut now = t0;
    let mut burst: Vec<Packet> = Vec::new();
    let mut fed = 0u64;
    let flush = |burst: &mut Vec<Packet>, pipeline: &mut Pipeline, pool: &mut Pool, now| {
        let neigh = neighbours.load();
        pipeline.run(burst, &tables, &neigh, &neighbours, pool, now);
        pipeline.poll(&tables, &neigh, &neighbours, pool, now);
        for q in pipeline.tx_out.iter_mut() {
            for p in q.drain(..) {
                pool.put(p);
            }
        }
    };
    let mut rest = data;
    while let [iface, kind, offset, n, tail @ ..] = rest {
        let take = usize::from(*n).min(tail.len());
        let (octets, next) = tail.split_at(take);
        rest = next;
        let iface = u16::from(*iface) % n_ifaces as u16;
        let mut frame = template(*kind, iface);
        if frame.is_empty() {
            frame = octets.to_vec();
        } else {
            for (i, o) in octets.iter().enumerate() {
                if let Some(b) = frame.get_mut(usize::from(*offset) + i) {
                    *b ^= o;
                }
            }
            let ihl = frame.get(14).map_or(0, |v| usize::from(v & 0x0f) * 4);
            if kind & 0x40 == 0 && frame[12..14] == [8, 0] && ihl >= 20 && frame.len() >= 14 + ihl {
                ipv4::fill_checksum(&mut frame[14..], ihl);
            }
        }
        let mut p = pool.get_with(&frame);
        p.meta.rx_if = iface;
        burst.push(p);
        fed += 1;
        if kind & 0x80 != 0 || burst.len() == 32 {
            flush(&mut burst, &mut pipeline, &mut pool, now);
            now += Duration::from_millis(u64::from(kind & 0x3f));
        }
    }
    flush(&mut burst, &mut pipeline, &mut pool, now);
    // Moving ids end: some handed off, some taken back, and a fence drops the rest.
    if let Some(plane) = tables.cluster.clone() {
        for id in (0..=255u8).filter(|i| i % 3 == 1) {
            match id % 4 {
                0 => plane.hand_off(id, &[("eth2".into(), MacAddr([2, 0, 0, 0xb, 0, 3]))]),
                1 => plane.set_state(id, ::cluster::PlaneState::Owned),
                _ => {}
            }
        }
        flush(&mut burst, &mut pipeline, &mut pool, now);
        plane.fence();
    }
    // Pending next hops give up after a while: release or drop everything still queued.
    for _ in 0..4 {
        now += Duration::from_secs(2);
        flush(&mut burst, &mut pipeline, &mut pool, now);
    }

    let rx = &counters.stages[StageKind::ALL[0] as usize];
    assert_eq!(rx.packets_in.get(), fed, "the rx stage saw every frame");
    for (si, sc) in counters.stages.iter().enumerate() {
        let drops: u64 = sc.drops.iter().map(|c| c.get()).sum();
        let accounted = sc.packets_out.get() + sc.consumed.get() + drops;
        assert_eq!(
            sc.packets_in.get(),
            accounted,
            "stage {:?}: in = out + consumed + dropped",
            StageKind::ALL[si]
        );
    }
}
