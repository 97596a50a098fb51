//! The pipeline on in-memory frames: what leaves on which interface, and the counters.
#![allow(clippy::unwrap_used, missing_docs)]

use router::pipeline::counters::WorkerCounters;
use router::pipeline::drop::DropReason;
use router::pipeline::packet::{Packet, Pool};
use router::pipeline::{Pipeline, StageKind};
use router::tables::cluster::DEDUPE_WINDOW;
use router::tables::neighbours::Neighbours;
use router::tables::routes::RouteTable;
use router::tables::{Iface, Tables};
use router::wire::ethernet::{self, MacAddr};
use router::wire::{arp, ipv4};
use std::sync::Arc;
use std::time::{Duration, Instant};

// The etcd client against real etcd members: a module of this, router's one general test binary.
mod etcd;

const R0: MacAddr = MacAddr([2, 0, 0, 0, 1, 1]);
const R1: MacAddr = MacAddr([2, 0, 0, 0, 2, 1]);
const CLIENT: MacAddr = MacAddr([2, 0, 0, 0, 1, 2]);
const SERVER: MacAddr = MacAddr([2, 0, 0, 0, 2, 2]);

/// Interface `id` named `name` with `mac` and `addr`/24 (pnet, MTU 1500, no WCCP redirects).
fn iface(id: u16, name: &str, mac: MacAddr, addr: [u8; 4]) -> Iface {
    Iface {
        id,
        name: name.into(),
        ifindex: u32::from(id) + 1,
        mac,
        addr: addr.into(),
        prefix_len: 24,
        mtu: 1500,
        backend: conf::IoBackend::Pnet,
        redirect_in: Vec::new(),
        redirect_out: Vec::new(),
        exclude_in: false,
        wccp_caches: true,
    }
}

struct Bench {
    tables: Tables,
    neighbours: Neighbours,
    pipeline: Pipeline,
    pool: Pool,
    counters: Arc<WorkerCounters>,
}

impl Bench {
    fn new() -> Bench {
        let ifaces = vec![
            iface(0, "eth0", R0, [10, 0, 1, 1]),
            iface(1, "eth1", R1, [10, 0, 2, 1]),
        ];
        let routes = RouteTable::build(&ifaces, &[]).unwrap();
        let counters = Arc::new(WorkerCounters::new(Pipeline::stage_count(), 2));
        Bench {
            tables: Tables::new(ifaces, routes),
            neighbours: Neighbours::default(),
            pipeline: Pipeline::new(0, 2, counters.clone()),
            pool: Pool::new(16),
            counters,
        }
    }

    fn run(&mut self, frames: Vec<Vec<u8>>, now: Instant) {
        let mut burst: Vec<Packet> = frames
            .iter()
            .map(|f| {
                let mut p = Packet::from_frame(f);
                p.meta.rx_if = 0;
                p
            })
            .collect();
        let neigh = self.neighbours.load();
        self.pipeline.run(
            &mut burst,
            &self.tables,
            &neigh,
            &self.neighbours,
            &mut self.pool,
            now,
        );
    }

    fn poll(&mut self, now: Instant) {
        let neigh = self.neighbours.load();
        self.pipeline
            .poll(&self.tables, &neigh, &self.neighbours, &mut self.pool, now);
    }

    /// Frames queued for transmit on `ifid`, removed.
    fn take_tx(&mut self, ifid: usize) -> Vec<Vec<u8>> {
        self.pipeline.tx_out[ifid]
            .drain(..)
            .map(|p| p.frame().to_vec())
            .collect()
    }

    fn drops(&self, stage: StageKind, r: DropReason) -> u64 {
        self.counters.stages[stage as usize].drops[r as usize].get()
    }
}

/// Client 10.0.1.2 → `dst`, UDP, TTL `ttl`, sent to the router's eth0 MAC.
fn udp(dst: [u8; 4], ttl: u8) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 28 + 4];
    ethernet::write_header(&mut f, R0, CLIENT, ethernet::ETHERTYPE_IPV4);
    ipv4::Ipv4Repr {
        src: [10, 0, 1, 2].into(),
        dst: dst.into(),
        protocol: 17,
        payload_len: 12,
        ttl,
        ident: 1,
        tos: 0,
        dont_fragment: false,
    }
    .emit(&mut f[14..34]);
    f[34..42].copy_from_slice(&[0x30, 0x39, 0, 9, 0, 12, 0, 0]);
    f
}

#[test]
fn unresolved_next_hop_queues_sends_arp_and_releases_on_answer() {
    let mut b = Bench::new();
    let t0 = Instant::now();
    b.run(vec![udp([10, 0, 2, 2], 64), udp([10, 0, 2, 2], 64)], t0);
    let tx = b.take_tx(1);
    assert_eq!(tx.len(), 1, "one broadcast ARP request, the data waits");
    assert_eq!(ethernet::dst(&tx[0]), MacAddr::BROADCAST);
    let req = arp::ArpRepr::parse(&tx[0][14..]).unwrap();
    assert_eq!(
        (req.operation, req.target_ip, req.sender_ip),
        (arp::OP_REQUEST, [10, 0, 2, 2].into(), [10, 0, 2, 1].into())
    );
    // The answer arrives (possibly on another worker): the table learns, poll releases in order.
    b.neighbours
        .learn(1, [10, 0, 2, 2].into(), SERVER, true, t0);
    b.poll(t0);
    let tx = b.take_tx(1);
    assert_eq!(tx.len(), 2);
    for f in &tx {
        assert_eq!((ethernet::dst(f), ethernet::src(f)), (SERVER, R1));
        assert_eq!(ipv4::ttl(&f[14..]), 63);
        assert_eq!(ipv4::check(&f[14..]), Ok(32));
    }
}

#[test]
fn pending_queue_is_bounded_and_gives_up_with_host_unreachable() {
    let mut b = Bench::new();
    let t0 = Instant::now();
    b.neighbours
        .learn(0, [10, 0, 1, 2].into(), CLIENT, true, t0);
    b.run((0..20).map(|_| udp([10, 0, 2, 9], 64)).collect(), t0);
    assert_eq!(
        b.drops(StageKind::Neighbour, DropReason::NeighbourQueueFull),
        4,
        "16 held, 4 refused"
    );
    assert_eq!(b.take_tx(1).len(), 1);
    // Two more requests one second apart, then the queue is dropped.
    for s in 1..=2 {
        b.poll(t0 + Duration::from_secs(s));
        assert_eq!(b.take_tx(1).len(), 1, "retry {s}");
    }
    b.poll(t0 + Duration::from_secs(3));
    assert_eq!(
        b.drops(StageKind::Neighbour, DropReason::NeighbourUnresolved),
        16
    );
    let back = b.take_tx(0);
    assert_eq!(back.len(), 1, "one host unreachable to the client");
    let l3 = &back[0][14..];
    assert_eq!(
        (ipv4::src(l3), ipv4::dst(l3), l3[20], l3[21]),
        ([10, 0, 1, 1].into(), [10, 0, 1, 2].into(), 3, 1)
    );
    assert!(!b.pipeline.has_pending());
}

#[test]
fn ttl_expiry_and_no_route_send_icmp_back_to_the_source() {
    let mut b = Bench::new();
    let t0 = Instant::now();
    b.neighbours
        .learn(0, [10, 0, 1, 2].into(), CLIENT, true, t0);
    b.run(vec![udp([10, 0, 2, 2], 1), udp([192, 0, 2, 7], 64)], t0);
    let back = b.take_tx(0);
    assert_eq!(back.len(), 2);
    let types: Vec<(u8, u8)> = back.iter().map(|f| (f[34], f[35])).collect();
    assert_eq!(types, vec![(11, 0), (3, 0)]);
    for f in &back {
        assert_eq!(ipv4::check(&f[14..]).map(|_| ()), Ok(()));
        assert_eq!(
            router::wire::checksum::checksum(&f[34..]),
            0,
            "ICMP checksum"
        );
        // The quote starts with the offending IPv4 header.
        assert_eq!(&f[42..44], &[0x45, 0x00]);
    }
    assert_eq!(b.drops(StageKind::Route, DropReason::TtlExpired), 1);
    assert_eq!(b.drops(StageKind::Route, DropReason::NoRoute), 1);
}

#[test]
fn icmp_errors_are_rate_limited() {
    let mut b = Bench::new();
    let t0 = Instant::now();
    b.neighbours
        .learn(0, [10, 0, 1, 2].into(), CLIENT, true, t0);
    b.run((0..200).map(|_| udp([10, 0, 2, 2], 1)).collect(), t0);
    let sent = b.take_tx(0).len() as u64;
    assert_eq!(
        sent,
        router::pipeline::ERROR_LIMITS.per_dst_burst as u64,
        "one source gets its own burst"
    );
    assert_eq!(b.counters.icmp_rate_limited.get(), 200 - sent);
    assert_eq!(b.drops(StageKind::Route, DropReason::TtlExpired), 200);
    // Another source on the same network is not starved by the first one ...
    let other = [10, 0, 1, 3];
    b.neighbours.learn(0, other.into(), CLIENT, true, t0);
    let from_other = |ttl| {
        let mut f = udp([10, 0, 2, 2], ttl);
        f[26..30].copy_from_slice(&other);
        ipv4::fill_checksum(&mut f[14..], 20);
        f
    };
    b.run(vec![from_other(1)], t0);
    assert_eq!(b.take_tx(0).len(), 1);
    // ... and the first gets more as time passes (10 per second).
    let t1 = t0 + Duration::from_millis(200);
    b.run((0..10).map(|_| udp([10, 0, 2, 2], 1)).collect(), t1);
    assert_eq!(b.take_tx(0).len(), 2);
}

/// An ICMP echo request from client 10.0.1.2 to the router's 10.0.1.1.
fn echo_request(seq: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 20 + 8];
    ethernet::write_header(&mut f, R0, CLIENT, ethernet::ETHERTYPE_IPV4);
    ipv4::Ipv4Repr {
        src: [10, 0, 1, 2].into(),
        dst: [10, 0, 1, 1].into(),
        protocol: 1,
        payload_len: 8,
        ttl: 64,
        ident: seq,
        tos: 0,
        dont_fragment: false,
    }
    .emit(&mut f[14..34]);
    f[34] = 8; // echo request
    f[38..40].copy_from_slice(&0x1234u16.to_be_bytes());
    f[40..42].copy_from_slice(&seq.to_be_bytes());
    let c = router::wire::checksum::checksum(&f[34..]);
    f[36..38].copy_from_slice(&c.to_be_bytes());
    f
}

#[test]
fn echo_replies_are_rate_limited_per_source() {
    let mut b = Bench::new();
    let t0 = Instant::now();
    b.neighbours
        .learn(0, [10, 0, 1, 2].into(), CLIENT, true, t0);
    let burst = router::pipeline::ECHO_LIMITS.per_dst_burst as usize;
    b.run((0..burst as u16 + 30).map(echo_request).collect(), t0);
    let replies = b.take_tx(0);
    assert_eq!(replies.len(), burst);
    assert_eq!(replies[0][34], 0, "echo reply");
    assert_eq!(
        b.drops(StageKind::LocalDelivery, DropReason::IcmpEchoRateLimited),
        30
    );
    // A second later the source is answered again.
    b.run(vec![echo_request(1)], t0 + Duration::from_secs(1));
    assert_eq!(b.take_tx(0).len(), 1);
}

#[test]
fn broadcast_and_martians_are_not_forwarded() {
    let mut b = Bench::new();
    let t0 = Instant::now();
    let mut from_loopback = udp([10, 0, 2, 2], 64);
    from_loopback[26] = 127;
    ipv4::fill_checksum(&mut from_loopback[14..], 20);
    b.run(
        vec![
            udp([10, 0, 2, 255], 64),
            udp([255, 255, 255, 255], 64),
            udp([224, 0, 0, 9], 64),
            from_loopback,
        ],
        t0,
    );
    assert!(b.take_tx(1).is_empty());
    assert_eq!(
        b.drops(StageKind::Ipv4Input, DropReason::BroadcastNotForwarded),
        2
    );
    assert_eq!(
        b.drops(StageKind::Ipv4Input, DropReason::MulticastNotForwarded),
        1
    );
    assert_eq!(b.drops(StageKind::Ipv4Input, DropReason::MartianSource), 1);
}

#[test]
fn arp_request_for_us_is_answered_and_the_sender_learnt() {
    let mut b = Bench::new();
    let mut f = vec![0u8; 42];
    ethernet::write_header(&mut f, MacAddr::BROADCAST, CLIENT, ethernet::ETHERTYPE_ARP);
    arp::ArpRepr {
        operation: arp::OP_REQUEST,
        sender_mac: CLIENT,
        sender_ip: [10, 0, 1, 2].into(),
        target_mac: MacAddr::ZERO,
        target_ip: [10, 0, 1, 1].into(),
    }
    .emit(&mut f[14..]);
    let mut other = f.clone();
    other[38..42].copy_from_slice(&[10, 0, 1, 77]);
    b.run(vec![f, other], Instant::now());
    let tx = b.take_tx(0);
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].len(), 60, "padded to the Ethernet minimum");
    let reply = arp::ArpRepr::parse(&tx[0][14..]).unwrap();
    assert_eq!(
        (reply.operation, reply.sender_mac, reply.target_mac),
        (arp::OP_REPLY, R0, CLIENT)
    );
    assert_eq!(
        b.neighbours.load().lookup(0, [10, 0, 1, 2].into()),
        Some(CLIENT)
    );
    assert_eq!(
        b.drops(StageKind::Ethernet, DropReason::ArpOtherTarget),
        0,
        "a refresh from a known neighbour is not a drop"
    );
}

#[test]
fn every_packet_is_accounted_for() {
    // Random frames: in = out + consumed + drops for every stage that is not the last.
    let mut b = Bench::new();
    let t0 = Instant::now();
    b.neighbours
        .learn(1, [10, 0, 2, 2].into(), SERVER, true, t0);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut frames = Vec::new();
    for i in 0..2000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut f = udp([10, 0, 2, 2], 64);
        let n = (seed % 8) as usize;
        for k in 0..n {
            let at = ((seed >> (8 * k)) as usize) % f.len();
            f[at] ^= (seed >> 3) as u8 | 1;
        }
        f.truncate(f.len().saturating_sub(i % 50));
        frames.push(f);
    }
    for chunk in frames.chunks(32) {
        b.run(chunk.to_vec(), t0);
        b.take_tx(0);
        b.take_tx(1);
    }
    for (si, sc) in b.counters.stages.iter().enumerate() {
        let drops: u64 = sc.drops.iter().map(|c| c.get()).sum();
        let accounted = sc.packets_out.get() + sc.consumed.get() + drops;
        assert_eq!(
            sc.packets_in.get(),
            accounted,
            "stage {:?}",
            StageKind::ALL[si]
        );
    }
}

#[test]
fn packets_larger_than_the_mtu_are_fragmented_unless_df_is_set() {
    let mut b = Bench::new();
    b.tables.ifaces[1].mtu = 576;
    let t0 = Instant::now();
    b.neighbours
        .learn(1, [10, 0, 2, 2].into(), SERVER, true, t0);
    b.neighbours
        .learn(0, [10, 0, 1, 2].into(), CLIENT, true, t0);
    // 1500-byte UDP datagram without DF, payload bytes numbered.
    let payload_len = 1500 - 28;
    let mut f = vec![0u8; 14 + 1500];
    ethernet::write_header(&mut f, R0, CLIENT, ethernet::ETHERTYPE_IPV4);
    ipv4::Ipv4Repr {
        src: [10, 0, 1, 2].into(),
        dst: [10, 0, 2, 2].into(),
        protocol: 17,
        payload_len: payload_len + 8,
        ttl: 64,
        ident: 0x4242,
        tos: 0,
        dont_fragment: false,
    }
    .emit(&mut f[14..34]);
    for (i, b) in f[34..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let original_l4 = f[34..].to_vec();
    let mut with_df = f.clone();
    with_df[14 + 6] = 0x40;
    ipv4::fill_checksum(&mut with_df[14..], 20);
    b.run(vec![f, with_df], t0);
    let frags = b.take_tx(1);
    assert_eq!(frags.len(), 3, "1480 payload bytes in 552-byte pieces");
    let mut joined = Vec::new();
    for (k, fr) in frags.iter().enumerate() {
        let l3 = &fr[14..];
        assert!(l3.len() <= 576);
        assert_eq!(ipv4::check(l3).map(|_| ()), Ok(()));
        assert_eq!(
            u16::from_be_bytes([l3[4], l3[5]]),
            0x4242,
            "same identification"
        );
        assert_eq!(ipv4::ttl(l3), 63);
        let word = ipv4::flags_frag(l3);
        assert_eq!(
            word & 0x1fff,
            (joined.len() / 8) as u16,
            "offset of fragment {k}"
        );
        assert_eq!(word & ipv4::FLAG_MF != 0, k < 2);
        joined.extend_from_slice(&l3[20..]);
    }
    assert_eq!(joined, original_l4, "reassembly gives back the datagram");
    // With DF: fragmentation needed back to the sender with the next-hop MTU.
    let back = b.take_tx(0);
    assert_eq!(back.len(), 1);
    assert_eq!((back[0][34], back[0][35]), (3, 4));
    assert_eq!(u16::from_be_bytes([back[0][40], back[0][41]]), 576);
    assert_eq!(b.drops(StageKind::Route, DropReason::MtuExceeded), 1);
}

/// Client 10.0.1.2:2048 → `dst`:`port`, UDP with a valid checksum and `payload`.
fn udp_to(dst: [u8; 4], port: u16, payload: &[u8]) -> Vec<u8> {
    let d = router::outbox::OutDatagram {
        src: std::net::SocketAddrV4::new([10, 0, 1, 2].into(), 2048),
        dst: std::net::SocketAddrV4::new(dst.into(), port),
        payload: payload.to_vec(),
    };
    let mut pool = Pool::new(1);
    let p = router::outbox::build_udp(&mut pool, &d);
    let mut f = p.frame().to_vec();
    ethernet::write_header(&mut f, R0, CLIENT, ethernet::ETHERTYPE_IPV4);
    f
}

#[test]
fn udp_to_a_bound_port_reaches_the_control_plane_and_others_get_port_unreachable() {
    let mut b = Bench::new();
    let mut rx = b.tables.local.bind(2048, 4);
    let t0 = Instant::now();
    b.neighbours
        .learn(0, [10, 0, 1, 2].into(), CLIENT, true, t0);
    let good = udp_to([10, 0, 2, 1], 2048, b"here-i-am");
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let closed = udp_to([10, 0, 1, 1], 9999, b"x");
    b.run(vec![good, bad, closed], t0);
    let d = rx.try_recv().unwrap();
    assert_eq!(d.payload, b"here-i-am");
    assert_eq!(
        (d.src.to_string(), d.dst.to_string(), d.rx_if),
        ("10.0.1.2:2048".to_string(), "10.0.2.1:2048".to_string(), 0)
    );
    assert!(
        rx.try_recv().is_err(),
        "the corrupted datagram is not delivered"
    );
    assert_eq!(
        b.drops(StageKind::LocalDelivery, DropReason::UdpBadChecksum),
        1
    );
    assert_eq!(
        b.drops(StageKind::LocalDelivery, DropReason::LocalPortUnreachable),
        1
    );
    let back = b.take_tx(0);
    assert_eq!(back.len(), 1);
    assert_eq!((back[0][34], back[0][35]), (3, 3), "port unreachable");
    // A full queue drops and counts.
    b.run(
        (0..6)
            .map(|_| udp_to([10, 0, 1, 1], 2048, b"flood"))
            .collect(),
        t0,
    );
    assert_eq!(
        b.drops(StageKind::LocalDelivery, DropReason::ControlQueueFullOthers),
        2
    );
    // A member cache has its own queue: the strangers' flood does not keep it out, and it is
    // served first.
    b.tables.wccp = Arc::new(wccp_plane_at(
        wccp::engine::ForwardingMethod::Gre,
        [10, 0, 1, 2],
    ));
    b.run(vec![udp_to([10, 0, 1, 1], 2048, b"member")], t0);
    assert_eq!(rx.try_recv().unwrap().payload, b"member");
    assert_eq!(rx.try_recv().unwrap().payload, b"flood");
    // A source the router reaches through another interface is spoofed: dropped.
    let mut spoofed = udp_to([10, 0, 1, 1], 2048, b"spoofed");
    spoofed[26..30].copy_from_slice(&[10, 0, 2, 9]);
    spoofed[40..42].copy_from_slice(&[0, 0]);
    ipv4::fill_checksum(&mut spoofed[14..], 20);
    b.run(vec![spoofed], t0);
    assert_eq!(
        b.drops(StageKind::LocalDelivery, DropReason::WccpReversePath),
        1
    );
    // An interface without `wccp-caches` takes no WCCP at all.
    b.tables.ifaces[0].wccp_caches = false;
    b.run(vec![udp_to([10, 0, 1, 1], 2048, b"rogue")], t0);
    assert_eq!(
        b.drops(StageKind::LocalDelivery, DropReason::WccpNotCacheInterface),
        1
    );
    while let Ok(d) = rx.try_recv() {
        assert!(d.payload != b"rogue" && d.payload != b"spoofed");
    }
}

/// Client 10.0.1.2:3128 → 10.0.1.1:`port`, a SYN-ACK with a valid checksum.
fn syn_ack_to(port: u16) -> Vec<u8> {
    syn_ack([10, 0, 1, 2], [10, 0, 1, 1], 3128, port)
}

/// A SYN-ACK `src`:`sport` → `dst`:`dport` with valid checksums, sent to the router's eth0 MAC.
fn syn_ack(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let tcp = netwire::tcp::TcpRepr {
        flags: netwire::tcp::flags::SYN | netwire::tcp::flags::ACK,
        ..netwire::tcp::TcpRepr::syn(sport, dport, 1, 1024)
    };
    let mut l4 = vec![0u8; tcp.buffer_len()];
    tcp.emit(
        &mut netwire::tcp::TcpPacket::new_unchecked(&mut l4[..]),
        src.into(),
        dst.into(),
    );
    let mut f = vec![0u8; 14 + 20];
    ethernet::write_header(&mut f, R0, CLIENT, ethernet::ETHERTYPE_IPV4);
    ipv4::Ipv4Repr {
        src: src.into(),
        dst: dst.into(),
        protocol: 6,
        payload_len: l4.len(),
        ttl: 64,
        ident: 1,
        tos: 0,
        dont_fragment: true,
    }
    .emit(&mut f[14..34]);
    f.extend_from_slice(&l4);
    f
}

#[test]
fn only_probe_ports_in_use_reach_the_prober() {
    let mut b = Bench::new();
    let open = Arc::new(router::probe::OpenPorts::default());
    let mut prober = router::probe::Prober::with_open_ports(7, open.clone());
    let mut rx = b.tables.local.bind_probes(4, open);
    let t0 = Instant::now();
    let target = router::probe::ProbeTarget {
        local: [10, 0, 1, 1].into(),
        remote: "10.0.1.2:3128".parse().unwrap(),
        via: None,
    };
    let syn = prober.probe(t0, target, router::probe::ProbeOwner::Wccp);
    let port = u16::from_be_bytes([syn[20], syn[21]]);
    let closed = if port == 60000 { 60001 } else { 60000 };
    // A flood on the rest of the range never reaches the queue.
    b.run((0..10).map(|_| syn_ack_to(closed)).collect(), t0);
    assert_eq!(
        b.drops(StageKind::LocalDelivery, DropReason::ProbePortClosed),
        10
    );
    assert!(rx.try_recv().is_err());
    b.run(vec![syn_ack_to(port)], t0);
    assert_eq!(rx.try_recv().unwrap().dst.port(), port);
}

#[test]
fn datagrams_the_control_plane_sends_are_routed_and_checksummed() {
    let mut b = Bench::new();
    let t0 = Instant::now();
    b.neighbours
        .learn(0, [10, 0, 1, 2].into(), CLIENT, true, t0);
    let d = router::outbox::OutDatagram {
        src: std::net::SocketAddrV4::new([10, 0, 1, 1].into(), 2048),
        dst: std::net::SocketAddrV4::new([10, 0, 1, 2].into(), 2048),
        payload: b"i-see-you".to_vec(),
    };
    let p = router::outbox::build_udp(&mut b.pool, &d);
    let neigh = b.neighbours.load();
    b.pipeline.run(
        &mut vec![p],
        &b.tables,
        &neigh,
        &b.neighbours,
        &mut b.pool,
        t0,
    );
    let tx = b.take_tx(0);
    assert_eq!(tx.len(), 1);
    let f = &tx[0];
    assert_eq!((ethernet::dst(f), ethernet::src(f)), (CLIENT, R0));
    let l3 = &f[14..];
    assert_eq!(ipv4::check(l3).map(|_| ()), Ok(()));
    assert_eq!(ipv4::ttl(l3), 64, "our own datagrams are not decremented");
    let udp_len = u16::from_be_bytes([l3[24], l3[25]]) as usize;
    let udp = &l3[20..20 + udp_len];
    let acc = router::wire::checksum::sum(
        router::wire::checksum::pseudo_header([10, 0, 1, 1], [10, 0, 1, 2], 17, udp_len as u16),
        udp,
    );
    assert_eq!(
        router::wire::checksum::fold(acc),
        0xffff,
        "UDP checksum verifies"
    );
    assert_eq!(&udp[8..], b"i-see-you");
}

/// A standard-service (TCP 80) hash assignment with every bucket on the cache 10.0.2.9, which
/// talks to the router's 10.0.2.1, with `forwarding`.
fn wccp_plane(forwarding: wccp::engine::ForwardingMethod) -> router::tables::WccpPlane {
    wccp_plane_at(forwarding, [10, 0, 2, 9])
}

/// Like [`wccp_plane`], with the cache at `cache`.
fn wccp_plane_at(
    forwarding: wccp::engine::ForwardingMethod,
    cache: [u8; 4],
) -> router::tables::WccpPlane {
    use wccp::assign::{Assignment, CacheTarget};
    let target = CacheTarget {
        address: cache.into(),
        router_id: [10, 0, 2, 1].into(),
        forwarding,
        packet_return: wccp::engine::ReturnMethod::Gre,
    };
    let (a, dropped) = Assignment::hash(
        wccp::wire::ServiceInfo::standard(0),
        wccp::wire::AssignmentKey::NONE,
        &[Some(target)],
        &[0u8; 256],
    );
    assert_eq!(dropped, 0);
    let a = a.with_members([std::net::Ipv4Addr::from(cache)]);
    router::tables::WccpPlane::from_assignments([(0u8, std::sync::Arc::new(a))])
}

/// Client 10.0.1.2:40000 → 10.0.2.80:`dport` TCP SYN.
fn tcp_syn(dport: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 40];
    ethernet::write_header(&mut f, R0, CLIENT, ethernet::ETHERTYPE_IPV4);
    ipv4::Ipv4Repr {
        src: [10, 0, 1, 2].into(),
        dst: [10, 0, 2, 80].into(),
        protocol: 6,
        payload_len: 20,
        ttl: 64,
        ident: 9,
        tos: 0,
        dont_fragment: true,
    }
    .emit(&mut f[14..34]);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[46] = 0x50; // data offset 5
    f[47] = 0x02; // SYN
    f
}

#[test]
fn wccp_traffic_is_gre_redirected_to_its_cache_and_other_traffic_is_routed() {
    let mut b = Bench::new();
    b.tables.ifaces[0].redirect_in = vec![0];
    b.tables.wccp = std::sync::Arc::new(wccp_plane(wccp::engine::ForwardingMethod::Gre));
    let t0 = Instant::now();
    b.neighbours.learn(
        1,
        [10, 0, 2, 9].into(),
        MacAddr([2, 0, 0, 0, 2, 9]),
        true,
        t0,
    );
    b.neighbours
        .learn(1, [10, 0, 2, 80].into(), SERVER, true, t0);
    let web = tcp_syn(80);
    b.run(vec![web.clone(), tcp_syn(443)], t0);
    let tx = b.take_tx(1);
    assert_eq!(tx.len(), 2);
    // 1: the port-80 SYN, encapsulated toward the cache.
    let f = &tx[0];
    assert_eq!(ethernet::dst(f), MacAddr([2, 0, 0, 0, 2, 9]));
    let outer = &f[14..];
    assert_eq!(ipv4::check(outer).map(|_| ()), Ok(()));
    assert_eq!(
        (ipv4::src(outer), ipv4::dst(outer), ipv4::protocol(outer)),
        ([10, 0, 2, 1].into(), [10, 0, 2, 9].into(), 47)
    );
    assert_eq!(
        &outer[20..24],
        &[0x00, 0x00, 0x88, 0x3e],
        "GRE, WCCP protocol type"
    );
    assert_eq!(
        outer[24], 0x00,
        "standard service: no D flag; primary bucket used: no A flag"
    );
    assert_eq!(outer[25], 0, "service 0");
    assert_eq!(
        &outer[28..],
        &web[14..],
        "the inner packet is the original, untouched"
    );
    // 2: port 443 is no part of service 0: routed to the server.
    assert_eq!(ethernet::dst(&tx[1]), SERVER);
    assert_eq!(ipv4::ttl(&tx[1][14..]), 63);
}

#[test]
fn caches_are_never_redirected_and_their_gre_returns_are_forwarded_once() {
    let mut b = Bench::new();
    b.tables.ifaces[0].redirect_in = vec![0];
    b.tables.ifaces[1].redirect_in = vec![0];
    b.tables.wccp = std::sync::Arc::new(wccp_plane(wccp::engine::ForwardingMethod::Gre));
    let t0 = Instant::now();
    b.neighbours
        .learn(1, [10, 0, 2, 80].into(), SERVER, true, t0);
    b.neighbours.learn(
        1,
        [10, 0, 2, 9].into(),
        MacAddr([2, 0, 0, 0, 2, 9]),
        true,
        t0,
    );
    // The cache returns (bypasses) the client's SYN: GRE from 10.0.2.9 to 10.0.2.1 on eth1.
    let inner = tcp_syn(80)[14..].to_vec();
    let mut f = vec![0u8; 14 + 20 + 8];
    ethernet::write_header(
        &mut f,
        R1,
        MacAddr([2, 0, 0, 0, 2, 9]),
        ethernet::ETHERTYPE_IPV4,
    );
    ipv4::Ipv4Repr {
        src: [10, 0, 2, 9].into(),
        dst: [10, 0, 2, 1].into(),
        protocol: 47,
        payload_len: 8 + inner.len(),
        ttl: 64,
        ident: 1,
        tos: 0,
        dont_fragment: false,
    }
    .emit(&mut f[14..34]);
    f[34..42].copy_from_slice(&[0x00, 0x00, 0x88, 0x3e, 0x00, 0x00, 0x00, 0x00]);
    f.extend_from_slice(&inner);
    let mut from_stranger = f.clone();
    from_stranger[14 + 15] = 77; // source 10.0.2.77: not a cache
    ipv4::fill_checksum(&mut from_stranger[14..], 20);
    // The cache's own port-80 fetch toward the origin server.
    let mut own = tcp_syn(80);
    ethernet::write_header(
        &mut own,
        R1,
        MacAddr([2, 0, 0, 0, 2, 9]),
        ethernet::ETHERTYPE_IPV4,
    );
    own[26..30].copy_from_slice(&[10, 0, 2, 9]);
    ipv4::fill_checksum(&mut own[14..], 20);
    let mut burst: Vec<Packet> = [f, from_stranger]
        .iter()
        .map(|x| {
            let mut p = Packet::from_frame(x);
            p.meta.rx_if = 1;
            p
        })
        .collect();
    let mut o = Packet::from_frame(&own);
    o.meta.rx_if = 1;
    burst.push(o);
    let neigh = b.neighbours.load();
    b.pipeline.run(
        &mut burst,
        &b.tables,
        &neigh,
        &b.neighbours,
        &mut b.pool,
        t0,
    );
    let tx = b.take_tx(1);
    assert_eq!(
        tx.len(),
        2,
        "the returned SYN and the cache's own fetch, both to the server"
    );
    for f in &tx {
        assert_eq!(ethernet::dst(f), SERVER, "forwarded, not redirected again");
        assert_eq!(ipv4::protocol(&f[14..]), 6);
    }
    assert!(
        tx.iter().any(|f| f[14 + 12..14 + 20] == inner[12..20]),
        "the returned packet keeps the client's addresses"
    );
    assert_eq!(
        b.drops(StageKind::LocalDelivery, DropReason::WccpReturnNotMember),
        1
    );
    let svc = &b.tables.wccp.services[0];
    assert_eq!(svc.counters.returned.get(), (1, inner.len() as u64));
    assert_eq!(svc.cache_counters[0].returned.get().0, 1);
    assert_eq!(svc.counters.redirected.get().0, 0);
}

#[test]
fn l2_forwarding_rewrites_only_the_destination_mac() {
    let mut b = Bench::new();
    b.tables.ifaces[0].redirect_in = vec![0];
    b.tables.wccp = std::sync::Arc::new(wccp_plane(wccp::engine::ForwardingMethod::L2));
    let t0 = Instant::now();
    b.neighbours.learn(
        1,
        [10, 0, 2, 9].into(),
        MacAddr([2, 0, 0, 0, 2, 9]),
        true,
        t0,
    );
    let web = tcp_syn(80);
    b.run(vec![web.clone()], t0);
    let tx = b.take_tx(1);
    assert_eq!(tx.len(), 1);
    assert_eq!(
        (ethernet::dst(&tx[0]), ethernet::src(&tx[0])),
        (MacAddr([2, 0, 0, 0, 2, 9]), R1)
    );
    assert_eq!(&tx[0][14..web.len()], &web[14..], "IP packet unchanged");
}

/// A redirect probe (issue 19) over L2: the outbox hands the pipeline the SYN to 192.0.2.1:80
/// for the cache's MAC; it leaves unchanged to that MAC without being redirected or counted as
/// client traffic, and the cache's answer as 192.0.2.1 (not the cache's own address) reaches
/// the prober.
#[test]
fn redirect_probes_go_to_the_caches_mac_and_their_answer_from_the_origin_reaches_the_prober() {
    let mut b = Bench::new();
    b.tables.ifaces[0].redirect_in = vec![0];
    b.tables.ifaces[1].redirect_in = vec![0];
    b.tables.wccp = std::sync::Arc::new(wccp_plane(wccp::engine::ForwardingMethod::L2));
    let t0 = Instant::now();
    let cache_mac = MacAddr([2, 0, 0, 0, 2, 9]);
    b.neighbours
        .learn(1, [10, 0, 2, 9].into(), cache_mac, true, t0);
    let open = Arc::new(router::probe::OpenPorts::default());
    let mut prober = router::probe::Prober::with_open_ports(5, open.clone());
    let mut rx = b.tables.local.bind_probes(4, open);
    let target = router::probe::ProbeTarget {
        local: [10, 0, 2, 1].into(),
        remote: std::net::SocketAddrV4::new(router::probe::REDIRECT_PROBE_ORIGIN, 80),
        via: Some(router::probe::ProbeVia {
            cache: [10, 0, 2, 9].into(),
            service: 0,
        }),
    };
    let syn = prober.probe(t0, target, router::probe::ProbeOwner::Wccp);
    let (tx, orx) = router::outbox::outbox(4).unwrap();
    assert!(tx.send_l2(1, [10, 0, 2, 9].into(), syn.clone()));
    let mut burst = Vec::new();
    orx.drain_into(&mut b.pool, &mut burst);
    let neigh = b.neighbours.load();
    b.pipeline.run(
        &mut burst,
        &b.tables,
        &neigh,
        &b.neighbours,
        &mut b.pool,
        t0,
    );
    let out = b.take_tx(1);
    assert_eq!(out.len(), 1, "the probe left on the cache's interface");
    assert_eq!(
        (ethernet::dst(&out[0]), ethernet::src(&out[0])),
        (cache_mac, R1)
    );
    assert_eq!(
        &out[0][14..14 + syn.len()],
        &syn[..],
        "the IP packet is sent as built"
    );
    let svc = &b.tables.wccp.services[0];
    assert_eq!(
        svc.counters.redirected.get().0,
        0,
        "a probe is not client traffic"
    );
    // The cache's proxy answers as the origin, to the router's address on its segment.
    let port = u16::from_be_bytes([syn[20], syn[21]]);
    let answer = syn_ack(
        router::probe::REDIRECT_PROBE_ORIGIN.octets(),
        [10, 0, 2, 1],
        80,
        port,
    );
    b.run(vec![answer], t0);
    let seg = rx.try_recv().unwrap();
    assert_eq!(seg.src, target.remote);
    assert_eq!(seg.dst.port(), port);
}

const CACHE_A: [u8; 4] = [10, 0, 2, 9];
const CACHE_B: [u8; 4] = [10, 0, 2, 10];
const MAC_A: MacAddr = MacAddr([2, 0, 0, 0, 2, 9]);
const MAC_B: MacAddr = MacAddr([2, 0, 0, 0, 2, 10]);

/// Service 0 over caches A and B (GRE forwarding; A returns at layer 2 when `a_l2_return`),
/// every bucket owned by cache index `owner`, with a redirect list, failed caches and flow
/// affinity as given; counters and affinity statistics are the ones passed in.
struct PlaneSpec {
    owner: u8,
    acl: Vec<conf::WccpAclRule>,
    failed: [bool; 2],
    a_l2_return: bool,
    counters: Arc<router::tables::wccp::ServiceCounters>,
    stats: Arc<router::tables::wccp::AffinityStats>,
    sync: Arc<router::tables::affinity::AffinitySync>,
    fail_policy: conf::WccpFailPolicy,
    gre_mss_clamp: conf::GreMssClamp,
}

impl PlaneSpec {
    fn new() -> PlaneSpec {
        PlaneSpec {
            owner: 0,
            acl: Vec::new(),
            failed: [false; 2],
            a_l2_return: false,
            counters: Default::default(),
            stats: Default::default(),
            sync: Default::default(),
            fail_policy: Default::default(),
            gre_mss_clamp: Default::default(),
        }
    }

    fn build(&self) -> Arc<router::tables::WccpPlane> {
        use router::tables::wccp::{AffinityConf, ServicePlane};
        use wccp::assign::{Assignment, CacheTarget};
        use wccp::engine::{ForwardingMethod, ReturnMethod};
        let target = |a: [u8; 4], l2: bool| CacheTarget {
            address: a.into(),
            router_id: [10, 0, 2, 1].into(),
            forwarding: ForwardingMethod::Gre,
            packet_return: if l2 {
                ReturnMethod::L2
            } else {
                ReturnMethod::Gre
            },
        };
        let (a, _) = Assignment::hash(
            wccp::wire::ServiceInfo::standard(0),
            wccp::wire::AssignmentKey::NONE,
            &[
                Some(target(CACHE_A, self.a_l2_return)),
                Some(target(CACHE_B, false)),
            ],
            &[self.owner; 256],
        );
        let a = Arc::new(a.with_members([CACHE_A.into(), CACHE_B.into()]));
        let svc = ServicePlane {
            id: 0,
            cache_counters: a.caches().iter().map(|_| Default::default()).collect(),
            assignment: a,
            redirect_list: Arc::from(self.acl.clone()),
            failed: self.failed.to_vec(),
            counters: self.counters.clone(),
            fail_policy: self.fail_policy,
            gre_mss_clamp: self.gre_mss_clamp,
        };
        let affinity = AffinityConf {
            enabled: true,
            flows_per_worker: 1024,
            idle_secs: 60,
        };
        let mut plane = router::tables::WccpPlane::new([svc], affinity, self.stats.clone());
        plane.affinity_sync = self.sync.clone();
        Arc::new(plane)
    }
}

/// A bench with service 0 redirected in on eth0 and every neighbour known.
fn wccp_bench(spec: &PlaneSpec) -> (Bench, Instant) {
    let mut b = Bench::new();
    b.tables.ifaces[0].redirect_in = vec![0];
    b.tables.wccp = spec.build();
    let t0 = Instant::now();
    b.neighbours.learn(1, CACHE_A.into(), MAC_A, true, t0);
    b.neighbours.learn(1, CACHE_B.into(), MAC_B, true, t0);
    b.neighbours
        .learn(1, [10, 0, 2, 80].into(), SERVER, true, t0);
    (b, t0)
}

/// Where each transmitted frame on eth1 went: the cache MAC or the server's.
fn destinations(b: &mut Bench) -> Vec<MacAddr> {
    b.take_tx(1).iter().map(|f| ethernet::dst(f)).collect()
}

/// `tcp_syn(80)` with other TCP flags.
fn tcp_with_flags(flags: u8) -> Vec<u8> {
    let mut f = tcp_syn(80);
    f[47] = flags;
    f
}

#[test]
fn redirect_list_deny_forwards_normally_and_counts() {
    let mut spec = PlaneSpec::new();
    spec.acl = vec![conf::WccpAclRule {
        action: conf::WccpAclAction::Deny,
        protocol: Some(6),
        source: None,
        destination: Some("10.0.2.80/32".parse().unwrap()),
        source_port: None,
        destination_port: None,
    }];
    let (mut b, t0) = wccp_bench(&spec);
    b.run(vec![tcp_syn(80)], t0);
    assert_eq!(destinations(&mut b), vec![SERVER]);
    assert_eq!(spec.counters.denied.get().0, 1);
    assert_eq!(spec.counters.redirected.get().0, 0);
    // A list that does not match the packet denies it too (implicit deny) ...
    spec.acl[0].destination = Some("10.9.0.0/16".parse().unwrap());
    b.tables.wccp = spec.build();
    b.run(vec![tcp_syn(80)], t0);
    assert_eq!(destinations(&mut b), vec![SERVER]);
    // ... unless it permits.
    spec.acl[0].action = conf::WccpAclAction::Permit;
    spec.acl[0].destination = None;
    b.tables.wccp = spec.build();
    b.run(vec![tcp_syn(80)], t0);
    assert_eq!(destinations(&mut b), vec![MAC_A]);
    assert_eq!(spec.counters.denied.get().0, 2);
    assert_eq!(spec.counters.redirected.get().0, 1);
}

#[test]
fn exclude_in_and_redirect_out_choose_by_interface() {
    let spec = PlaneSpec::new();
    let (mut b, t0) = wccp_bench(&spec);
    b.tables.ifaces[0].exclude_in = true;
    b.run(vec![tcp_syn(80)], t0);
    assert_eq!(destinations(&mut b), vec![SERVER], "excluded");
    // Redirect out on eth1 (toward the server) and nothing in on eth0.
    b.tables.ifaces[0].exclude_in = false;
    b.tables.ifaces[0].redirect_in.clear();
    b.run(vec![tcp_syn(80)], t0);
    assert_eq!(destinations(&mut b), vec![SERVER], "no redirect configured");
    b.tables.ifaces[1].redirect_out = vec![0];
    b.run(vec![tcp_syn(80)], t0);
    assert_eq!(
        destinations(&mut b),
        vec![MAC_A],
        "redirected on the way out"
    );
    // Traffic routed out of eth0 is not redirected by eth1's redirect-out.
    let mut back = tcp_syn(80);
    back[30..34].copy_from_slice(&[10, 0, 1, 2]);
    back[26..30].copy_from_slice(&[10, 0, 2, 80]);
    ipv4::fill_checksum(&mut back[14..], 20);
    b.neighbours
        .learn(0, [10, 0, 1, 2].into(), CLIENT, true, t0);
    b.run(vec![back], t0);
    assert_eq!(b.take_tx(0).len(), 1, "routed to the client");
}

#[test]
fn failed_caches_are_bypassed_and_counted() {
    let mut spec = PlaneSpec::new();
    spec.failed = [true, false];
    let (mut b, t0) = wccp_bench(&spec);
    b.run(vec![tcp_syn(80)], t0);
    assert_eq!(destinations(&mut b), vec![SERVER]);
    assert_eq!(spec.counters.bypassed.get().0, 1);
    let plane = b.tables.wccp.clone();
    assert_eq!(plane.services[0].cache_counters[0].bypassed.get().0, 1);
}

#[test]
fn flow_affinity_keeps_established_flows_on_their_cache() {
    let mut spec = PlaneSpec::new();
    let (mut b, t0) = wccp_bench(&spec);
    b.run(vec![tcp_syn(80)], t0);
    assert_eq!(destinations(&mut b), vec![MAC_A]);
    // Every bucket moves to B: the open flow stays on A, a new flow goes to B.
    spec.owner = 1;
    b.tables.wccp = spec.build();
    b.run(vec![tcp_with_flags(0x10)], t0);
    assert_eq!(destinations(&mut b), vec![MAC_A], "established flow kept");
    assert_eq!(spec.counters.affinity_kept.get().0, 1);
    let mut other = tcp_syn(80);
    other[34..36].copy_from_slice(&40001u16.to_be_bytes());
    b.run(vec![other], t0);
    assert_eq!(
        destinations(&mut b),
        vec![MAC_B],
        "new flow follows the bucket"
    );
    // A RST ends the flow: later packets follow the bucket.
    b.run(vec![tcp_with_flags(0x14)], t0);
    assert_eq!(
        destinations(&mut b),
        vec![MAC_A],
        "the RST itself still goes to A"
    );
    b.run(vec![tcp_with_flags(0x10)], t0);
    assert_eq!(destinations(&mut b), vec![MAC_B]);
    // A failed cache does not hold its flows.
    spec.owner = 0;
    b.tables.wccp = spec.build();
    b.run(vec![tcp_syn(80)], t0);
    assert_eq!(destinations(&mut b), vec![MAC_A]);
    spec.owner = 1;
    spec.failed = [true, false];
    b.tables.wccp = spec.build();
    b.run(vec![tcp_with_flags(0x10)], t0);
    assert_eq!(destinations(&mut b), vec![MAC_B]);
    let remembered = spec
        .stats
        .entries
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(remembered >= 2);
    // Mid-flow segments of flows the router never saw open are not remembered: a flood of
    // crafted ACKs cannot push real flows out of the table.
    for port in 41000..41050u16 {
        let mut stray = tcp_with_flags(0x10);
        stray[34..36].copy_from_slice(&port.to_be_bytes());
        b.run(vec![stray], t0);
        destinations(&mut b);
    }
    assert_eq!(
        spec.stats
            .entries
            .load(std::sync::atomic::Ordering::Relaxed),
        remembered
    );
    assert_eq!(
        spec.stats
            .evicted
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[test]
fn flow_affinity_is_synced_to_the_ha_peer_and_kept_after_a_takeover() {
    use hasync::Op;
    use router::statesync::SyncFeed;
    use router::tables::affinity::{self, AffinitySync, FlowTarget};
    let drain = |feed: &SyncFeed| {
        let mut out = Vec::new();
        feed.drain(&mut out);
        out
    };
    // The active: a new flow is published once; its established segments publish nothing.
    let feed = SyncFeed::new(64);
    let mut spec = PlaneSpec::new();
    spec.sync = Arc::new(AffinitySync::new(feed.clone(), 1024));
    let (mut b, t0) = wccp_bench(&spec);
    b.run(vec![tcp_syn(80), tcp_syn(80)], t0);
    for _ in 0..3 {
        b.run(vec![tcp_with_flags(0x10)], t0);
    }
    assert_eq!(destinations(&mut b).len(), 5);
    let published = drain(&feed);
    assert_eq!(published.len(), 1, "{published:?}");
    let rec = published[0].clone();
    assert_eq!(rec.op, Op::Upsert);
    assert_eq!(
        affinity::decode_value(&rec.value),
        Ok(FlowTarget::Cache(CACHE_A.into()))
    );
    // An export request (a takeover, a feed overflow) is answered on the worker's next loop.
    spec.sync.export_all();
    b.poll(t0);
    assert_eq!(drain(&feed), vec![rec.clone()]);
    // The flow ends: the peer forgets it.
    b.run(vec![tcp_with_flags(0x14)], t0);
    destinations(&mut b);
    let gone = drain(&feed);
    assert_eq!(gone.len(), 1);
    assert_eq!((gone[0].op, &gone[0].key), (Op::Delete, &rec.key));

    // The standby adopts the flow; it takes over, and meanwhile every bucket moved to B. The
    // flow's next segment misses the worker's own table and finds the adopted flow: it stays
    // on A (and its later segments too, from the worker's table); a new flow goes to B.
    let feed2 = SyncFeed::new(64);
    let mut spec2 = PlaneSpec::new();
    spec2.owner = 1;
    spec2.sync = Arc::new(AffinitySync::new(feed2.clone(), 1024));
    spec2.sync.set_active(false, t0);
    assert!(spec2.sync.apply(&rec, t0));
    assert!(drain(&feed2).is_empty(), "a standby publishes nothing");
    spec2.sync.set_active(true, t0);
    let (mut b2, _) = wccp_bench(&spec2);
    b2.run(vec![tcp_with_flags(0x10)], t0);
    b2.run(vec![tcp_with_flags(0x10)], t0);
    assert_eq!(
        destinations(&mut b2),
        vec![MAC_A, MAC_A],
        "kept on its cache"
    );
    let c = &spec2.sync.counters;
    assert_eq!(c.adopted_hits.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(spec2.sync.adopted(), 0, "the worker owns it now");
    assert_eq!(spec2.counters.affinity_kept.get().0, 2);
    let mut other = tcp_with_flags(0x10);
    other[34..36].copy_from_slice(&40001u16.to_be_bytes());
    b2.run(vec![other], t0);
    assert_eq!(destinations(&mut b2), vec![MAC_B]);
}

#[test]
fn l2_returned_frames_are_forwarded_not_redirected_again() {
    let mut spec = PlaneSpec::new();
    spec.a_l2_return = true;
    let (mut b, t0) = wccp_bench(&spec);
    // Cache A sits on eth0 here and hands the client's SYN back from its own MAC.
    b.neighbours.learn(0, CACHE_A.into(), MAC_A, true, t0);
    let mut returned = tcp_syn(80);
    ethernet::write_header(&mut returned, R0, MAC_A, ethernet::ETHERTYPE_IPV4);
    b.run(vec![returned, tcp_syn(80)], t0);
    assert_eq!(destinations(&mut b), vec![SERVER, MAC_A]);
    assert_eq!(spec.counters.returned.get().0, 1);
    assert_eq!(spec.counters.redirected.get().0, 1);
    let plane = b.tables.wccp.clone();
    assert_eq!(plane.services[0].cache_counters[0].returned.get().0, 1);
}

#[test]
fn gso_super_packets_are_segmented_before_gre() {
    let spec = PlaneSpec::new();
    let (mut b, t0) = wccp_bench(&spec);
    // A 4000-byte TCP payload in one super-packet, MSS 1400, checksum left partial.
    let mut f = tcp_with_flags(0x18);
    f.resize(54 + 4000, 0xab);
    let total = (40 + 4000) as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    ipv4::fill_checksum(&mut f[14..], 20);
    let mut p = Packet::from_frame(&f);
    p.meta.rx_if = 0;
    p.meta.offload.gso_type = router::wire::vnet::GSO_TCPV4;
    p.meta.offload.gso_size = 1400;
    let neigh = b.neighbours.load();
    b.pipeline.run(
        &mut vec![p],
        &b.tables,
        &neigh,
        &b.neighbours,
        &mut b.pool,
        t0,
    );
    let tx = b.take_tx(1);
    assert_eq!(tx.len(), 3, "three segments, each in its own GRE packet");
    let mut payload = 0;
    for g in &tx {
        assert_eq!(ethernet::dst(g), MAC_A);
        let outer = &g[14..];
        assert_eq!(ipv4::protocol(outer), 47);
        let inner = &outer[28..];
        assert_eq!(ipv4::check(inner).map(|_| ()), Ok(()));
        assert!(inner.len() <= 20 + 20 + 1400);
        payload += inner.len() - 40;
    }
    assert_eq!(payload, 4000);
    assert_eq!(spec.counters.redirected.get().0, 3);
}

#[test]
fn gre_returns_get_a_clean_ethernet_header_whatever_the_cache_address() {
    // The outer header bytes left in front of the inner packet once looked like a multicast
    // MAC when the cache's third octet was odd, and the return was dropped as a broadcast.
    let mut b = Bench::new();
    b.tables.wccp = std::sync::Arc::new(wccp_plane_at(
        wccp::engine::ForwardingMethod::Gre,
        [10, 0, 3, 9],
    ));
    // The cache's network is reached through eth1 (returns are accepted only from there).
    b.tables.routes = RouteTable::build(
        &b.tables.ifaces,
        &[(
            [10, 0, 3, 0].into(),
            24,
            [10, 0, 2, 254].into(),
            Some("eth1".into()),
        )],
    )
    .unwrap();
    let t0 = Instant::now();
    b.neighbours
        .learn(1, [10, 0, 2, 80].into(), SERVER, true, t0);
    let inner = tcp_syn(80)[14..].to_vec();
    let mut f = vec![0u8; 14 + 20 + 8];
    ethernet::write_header(&mut f, R1, MAC_A, ethernet::ETHERTYPE_IPV4);
    ipv4::Ipv4Repr {
        src: [10, 0, 3, 9].into(),
        dst: [10, 0, 2, 1].into(),
        protocol: 47,
        payload_len: 8 + inner.len(),
        ttl: 64,
        ident: 1,
        tos: 0,
        dont_fragment: false,
    }
    .emit(&mut f[14..34]);
    f[34..42].copy_from_slice(&[0x00, 0x00, 0x88, 0x3e, 0x00, 0x00, 0x00, 0x00]);
    f.extend_from_slice(&inner);
    let mut p = Packet::from_frame(&f);
    p.meta.rx_if = 1;
    let neigh = b.neighbours.load();
    b.pipeline.run(
        &mut vec![p],
        &b.tables,
        &neigh,
        &b.neighbours,
        &mut b.pool,
        t0,
    );
    assert_eq!(destinations(&mut b), vec![SERVER], "returned and forwarded");
    assert_eq!(
        b.drops(StageKind::Ipv4Input, DropReason::BroadcastNotForwarded),
        0
    );
    assert_eq!(b.tables.wccp.services[0].counters.returned.get().0, 1);
}

#[test]
fn l2_returns_are_counted_on_interfaces_without_redirection() {
    let mut spec = PlaneSpec::new();
    spec.a_l2_return = true;
    let (mut b, t0) = wccp_bench(&spec);
    // Cache A sits on eth1, which redirects nothing, and hands the client's SYN back there.
    let mut returned = tcp_syn(80);
    ethernet::write_header(&mut returned, R1, MAC_A, ethernet::ETHERTYPE_IPV4);
    let mut p = Packet::from_frame(&returned);
    p.meta.rx_if = 1;
    // The cache's own fetch from the same MAC is not a return.
    let mut own = tcp_syn(80);
    ethernet::write_header(&mut own, R1, MAC_A, ethernet::ETHERTYPE_IPV4);
    own[26..30].copy_from_slice(&CACHE_A);
    ipv4::fill_checksum(&mut own[14..], 20);
    let mut o = Packet::from_frame(&own);
    o.meta.rx_if = 1;
    let neigh = b.neighbours.load();
    b.pipeline.run(
        &mut vec![p, o],
        &b.tables,
        &neigh,
        &b.neighbours,
        &mut b.pool,
        t0,
    );
    assert_eq!(destinations(&mut b), vec![SERVER, SERVER]);
    assert_eq!(spec.counters.returned.get().0, 1);
}

/// A GRE return of `tcp_syn(80)` from `cache` to the router's 10.0.2.1, as it arrives on
/// interface `rx_if`; with the redirect header naming `service`, or a bare IPv4 payload.
fn gre_return(cache: [u8; 4], service: Option<u8>, rx_if: u16) -> Packet {
    let inner = tcp_syn(80)[14..].to_vec();
    let mut f = vec![0u8; 14 + 20 + 4];
    let router_mac = if rx_if == 0 { R0 } else { R1 };
    ethernet::write_header(&mut f, router_mac, MAC_A, ethernet::ETHERTYPE_IPV4);
    f[34..38].copy_from_slice(&[0x00, 0x00, 0x88, 0x3e]);
    if let Some(id) = service {
        f.extend_from_slice(&[0x00, id, 0x00, 0x00]);
    }
    f.extend_from_slice(&inner);
    let payload_len = f.len() - 34;
    ipv4::Ipv4Repr {
        src: cache.into(),
        dst: [10, 0, 2, 1].into(),
        protocol: 47,
        payload_len,
        ttl: 64,
        ident: 1,
        tos: 0,
        dont_fragment: false,
    }
    .emit(&mut f[14..34]);
    let mut p = Packet::from_frame(&f);
    p.meta.rx_if = rx_if;
    p
}

/// Runs one GRE return through `b` and says where it went: the server, or dropped for `reason`.
fn run_return(b: &mut Bench, p: Packet, t0: Instant) -> Vec<MacAddr> {
    let neigh = b.neighbours.load();
    b.pipeline.run(
        &mut vec![p],
        &b.tables,
        &neigh,
        &b.neighbours,
        &mut b.pool,
        t0,
    );
    let mut out = destinations(b);
    out.extend(b.take_tx(0).iter().map(|f| ethernet::dst(f)));
    out
}

#[test]
fn gre_returns_are_accepted_only_from_gre_return_caches_of_the_named_service_on_their_interface() {
    let mut spec = PlaneSpec::new();
    spec.a_l2_return = true;
    let (mut b, t0) = wccp_bench(&spec);
    let drops = |b: &Bench, r| b.drops(StageKind::LocalDelivery, r);
    // Legitimate: cache B (GRE return) on eth1, through which 10.0.2.10 is reached.
    assert_eq!(
        run_return(&mut b, gre_return(CACHE_B, Some(0), 1), t0),
        vec![SERVER]
    );
    // Without a redirect header too (a bare IPv4 payload, as Linux caches send).
    assert_eq!(
        run_return(&mut b, gre_return(CACHE_B, None, 1), t0),
        vec![SERVER]
    );
    assert_eq!(spec.counters.returned.get().0, 2);
    // An address that is no cache.
    assert!(run_return(&mut b, gre_return([10, 0, 2, 77], Some(0), 1), t0).is_empty());
    assert_eq!(drops(&b, DropReason::WccpReturnNotMember), 1);
    // The redirect header names a service B is not in (none installed with id 5).
    assert!(run_return(&mut b, gre_return(CACHE_B, Some(5), 1), t0).is_empty());
    assert_eq!(drops(&b, DropReason::WccpReturnWrongService), 1);
    // Cache A negotiated L2 return: GRE from it is not a return.
    assert!(run_return(&mut b, gre_return(CACHE_A, Some(0), 1), t0).is_empty());
    assert!(run_return(&mut b, gre_return(CACHE_A, None, 1), t0).is_empty());
    assert_eq!(drops(&b, DropReason::WccpReturnNotGre), 2);
    // B's address arriving on eth0: the router reaches 10.0.2.10 through eth1.
    assert!(run_return(&mut b, gre_return(CACHE_B, Some(0), 0), t0).is_empty());
    assert_eq!(drops(&b, DropReason::WccpReturnWrongInterface), 1);
    assert_eq!(spec.counters.returned.get().0, 2, "only the accepted ones");
}

/// Dynamic service 90 (UDP to port 53, hashed on the source port) over caches A and B with
/// `forwarding`, odd buckets on B.
fn udp_service_plane(forwarding: wccp::engine::ForwardingMethod) -> Arc<router::tables::WccpPlane> {
    use wccp::assign::{Assignment, CacheTarget};
    use wccp::wire::{ServiceFlags, ServiceInfo};
    let target = |a: [u8; 4]| {
        Some(CacheTarget {
            address: a.into(),
            router_id: [10, 0, 2, 1].into(),
            forwarding,
            packet_return: wccp::engine::ReturnMethod::Gre,
        })
    };
    let mut buckets = [0u8; 256];
    for (i, b) in buckets.iter_mut().enumerate() {
        *b = (i % 2) as u8;
    }
    let (a, _) = Assignment::hash(
        ServiceInfo::dynamic(90, 17, 100, ServiceFlags::SRC_PORT_HASH, &[53]),
        wccp::wire::AssignmentKey::NONE,
        &[target(CACHE_A), target(CACHE_B)],
        &buckets,
    );
    let a = a.with_members([CACHE_A.into(), CACHE_B.into()]);
    Arc::new(router::tables::WccpPlane::from_assignments([(
        90u8,
        Arc::new(a),
    )]))
}

/// The three fragments (first, middle, last) of a UDP datagram 10.0.1.2:`sport` →
/// 10.0.2.80:`dport` with IP identification `ident` and a 32-byte payload.
fn udp_fragments(sport: u16, dport: u16, ident: u16) -> [Vec<u8>; 3] {
    let mut datagram = Vec::new();
    datagram.extend_from_slice(&sport.to_be_bytes());
    datagram.extend_from_slice(&dport.to_be_bytes());
    datagram.extend_from_slice(&40u16.to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend((0..32u8).map(|i| i.wrapping_mul(7)));
    // 8-byte units: 0..24 (MF), 24..32 (MF), 32..40.
    let piece = |from: usize, to: usize, more: bool| {
        let body = &datagram[from..to];
        let mut f = vec![0u8; 14 + 20];
        ethernet::write_header(&mut f, R0, CLIENT, ethernet::ETHERTYPE_IPV4);
        ipv4::Ipv4Repr {
            src: [10, 0, 1, 2].into(),
            dst: [10, 0, 2, 80].into(),
            protocol: 17,
            payload_len: body.len(),
            ttl: 64,
            ident,
            tos: 0,
            dont_fragment: false,
        }
        .emit(&mut f[14..34]);
        let word = ((from / 8) as u16) | if more { 0x2000 } else { 0 };
        f[20..22].copy_from_slice(&word.to_be_bytes());
        ipv4::fill_checksum(&mut f[14..], 20);
        f.extend_from_slice(body);
        f
    };
    [
        piece(0, 24, true),
        piece(24, 32, true),
        piece(32, 40, false),
    ]
}

#[test]
fn later_fragments_follow_their_first_fragment_to_the_same_cache() {
    for forwarding in [
        wccp::engine::ForwardingMethod::Gre,
        wccp::engine::ForwardingMethod::L2,
    ] {
        let mut b = Bench::new();
        b.tables.ifaces[0].redirect_in = vec![90];
        b.tables.wccp = udp_service_plane(forwarding);
        let t0 = Instant::now();
        b.neighbours.learn(1, CACHE_A.into(), MAC_A, true, t0);
        b.neighbours.learn(1, CACHE_B.into(), MAC_B, true, t0);
        b.neighbours
            .learn(1, [10, 0, 2, 80].into(), SERVER, true, t0);
        // Source port 5000 (0x1388) hashes to bucket 0x88 ^ 0x13 = 0x9b, odd: cache B; a later
        // fragment's missing ports would hash to bucket 0 (cache A).
        let [first, middle, last] = udp_fragments(5000, 53, 0x4242);
        b.run(vec![first.clone(), middle.clone(), last.clone()], t0);
        let tx = b.take_tx(1);
        assert_eq!(tx.len(), 3, "{forwarding:?}");
        let cache_mac = MAC_B;
        for (sent, got) in [&first, &middle, &last].iter().zip(&tx) {
            assert_eq!(ethernet::dst(got), cache_mac, "{forwarding:?}: same cache");
            match forwarding {
                wccp::engine::ForwardingMethod::Gre => {
                    let outer = &got[14..];
                    assert_eq!(ipv4::protocol(outer), 47);
                    assert_eq!(ipv4::dst(outer), ipv4::dst(&tx[0][14..]));
                    // Same service and bucket in every redirect header.
                    assert_eq!(&outer[24..28], &tx[0][14 + 24..14 + 28]);
                    assert_eq!(outer[25], 90);
                    assert_eq!(&outer[28..], &sent[14..], "the fragment, untouched");
                }
                wccp::engine::ForwardingMethod::L2 => {
                    // Ethernet pads the short frame; the IP packet is unchanged.
                    assert_eq!(&got[14..sent.len()], &sent[14..], "the fragment, untouched");
                }
            }
        }
        let plane = b.tables.wccp.clone();
        let svc = &plane.services[0];
        assert_eq!(svc.counters.redirected.get().0, 3);
        assert_eq!(svc.counters.fragments_redirected.get().0, 2);
        // A datagram the service does not take (port 54): all its pieces are routed, and its
        // later fragments are not "unmatched" (their first fragment's decision is known).
        let [f54, m54, l54] = udp_fragments(5000, 54, 0x4343);
        b.run(vec![f54, m54, l54], t0);
        assert_eq!(destinations(&mut b), vec![SERVER; 3]);
        assert_eq!(svc.counters.fragments_unmatched.get().0, 0);
        // A later fragment whose first fragment never came: routed normally, counted.
        let [_, orphan, _] = udp_fragments(5000, 53, 0x4444);
        b.run(vec![orphan], t0);
        assert_eq!(destinations(&mut b), vec![SERVER]);
        assert_eq!(svc.counters.fragments_unmatched.get().0, 1);
        assert_eq!(svc.counters.fragments_redirected.get().0, 2);
    }
}

/// Replays the `router_pipeline` fuzz seeds (`fuzz/corpus/router_pipeline/`) through
/// `router::fuzzing` (which checks the per-stage accounting), so they run on stable.
#[test]
fn replay_router_pipeline_corpus() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/router_pipeline");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        router::fuzzing::fuzz_pipeline(
            &std::fs::read(entry.unwrap().path()).unwrap(),
            Instant::now(),
        );
        n += 1;
    }
    assert!(n >= 3, "{n} seeds");
}

/// Issue 13 item 6: a cache that left with SHUTDOWN is in the assignment only as a draining
/// target (no buckets): flows already on it stay there, new ones do not go to it.
#[test]
fn flows_stay_on_a_draining_cache_and_new_ones_go_elsewhere() {
    use router::tables::wccp::{AffinityConf, ServicePlane};
    use wccp::assign::{Assignment, CacheTarget};
    use wccp::engine::{ForwardingMethod, ReturnMethod};
    let spec = PlaneSpec::new();
    let (mut b, t0) = wccp_bench(&spec);
    b.run(vec![tcp_syn(80)], t0);
    assert_eq!(destinations(&mut b), vec![MAC_A], "the flow opens on A");
    // What the engine installs after A's SHUTDOWN: A's buckets unassigned, A draining.
    let a_target = CacheTarget {
        address: CACHE_A.into(),
        router_id: [10, 0, 2, 1].into(),
        forwarding: ForwardingMethod::Gre,
        packet_return: ReturnMethod::Gre,
    };
    let (a, _) = Assignment::hash(
        wccp::wire::ServiceInfo::standard(0),
        wccp::wire::AssignmentKey::NONE,
        &[None],
        &[0; 256],
    );
    let a = Arc::new(a.with_members([CACHE_A.into()]).with_draining([a_target]));
    let svc = ServicePlane {
        id: 0,
        cache_counters: a.caches().iter().map(|_| Default::default()).collect(),
        assignment: a,
        redirect_list: Arc::from(Vec::new()),
        failed: vec![false],
        counters: spec.counters.clone(),
        fail_policy: Default::default(),
        gre_mss_clamp: Default::default(),
    };
    let affinity = AffinityConf {
        enabled: true,
        flows_per_worker: 1024,
        idle_secs: 60,
    };
    b.tables.wccp = Arc::new(router::tables::WccpPlane::new(
        [svc],
        affinity,
        spec.stats.clone(),
    ));
    b.run(vec![tcp_with_flags(0x10)], t0);
    assert_eq!(
        destinations(&mut b),
        vec![MAC_A],
        "the open flow drains on A"
    );
    let mut other = tcp_syn(80);
    other[34..36].copy_from_slice(&40001u16.to_be_bytes());
    b.run(vec![other], t0);
    assert_eq!(
        destinations(&mut b),
        vec![SERVER],
        "a new flow is not sent to A"
    );
    assert!(
        b.tables.wccp.is_member(CACHE_A.into()),
        "A's own traffic stays unredirected"
    );
}

/// `tcp_syn(80)` carrying an MSS option of `mss` (checksum filled).
fn tcp_syn_mss(mss: u16) -> Vec<u8> {
    let mut f = vec![0u8; 14 + 44];
    ethernet::write_header(&mut f, R0, CLIENT, ethernet::ETHERTYPE_IPV4);
    ipv4::Ipv4Repr {
        src: [10, 0, 1, 2].into(),
        dst: [10, 0, 2, 80].into(),
        protocol: 6,
        payload_len: 24,
        ttl: 64,
        ident: 9,
        tos: 0,
        dont_fragment: true,
    }
    .emit(&mut f[14..34]);
    f[34..36].copy_from_slice(&40000u16.to_be_bytes());
    f[36..38].copy_from_slice(&80u16.to_be_bytes());
    f[38..42].copy_from_slice(&1000u32.to_be_bytes());
    f[46] = 0x60; // data offset 6
    f[47] = 0x02; // SYN
    f[48..50].copy_from_slice(&65535u16.to_be_bytes());
    f[54..58].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
    fill_tcp_checksum(&mut f);
    f
}

/// Fills the TCP checksum of an Ethernet + IPv4 (20) + TCP frame.
fn fill_tcp_checksum(f: &mut [u8]) {
    let (src, dst) = (ipv4::src(&f[14..]), ipv4::dst(&f[14..]));
    let total = ipv4::total_len(&f[14..]);
    router::wire::tcp::TcpPacket::new_unchecked(&mut f[34..14 + total]).fill_checksum(src, dst);
}

/// The TCP segment of a frame (IPv4 header of 20) and whether its checksum verifies.
fn tcp_of(f: &[u8]) -> (router::wire::tcp::TcpRepr, bool) {
    let l3 = &f[14..];
    let t = router::wire::tcp::TcpPacket::new_checked(&l3[20..ipv4::total_len(l3)]).unwrap();
    (
        router::wire::tcp::TcpRepr::parse(&t).unwrap(),
        t.verify_checksum(ipv4::src(l3), ipv4::dst(l3)),
    )
}

#[test]
fn fail_policy_decides_what_happens_when_no_cache_holds_the_bucket() {
    use conf::WccpFailPolicy as P;
    use router::wire::tcp::flags as tf;
    for policy in [P::Open, P::ClosedDrop, P::ClosedReject] {
        let mut spec = PlaneSpec::new();
        spec.failed = [true, false]; // fast failover took the bucket's cache out
        spec.fail_policy = policy;
        let (mut b, t0) = wccp_bench(&spec);
        b.neighbours
            .learn(0, [10, 0, 1, 2].into(), CLIENT, true, t0);
        let syn = tcp_syn_mss(1460);
        b.run(vec![syn.clone()], t0);
        let (to_server, to_client) = (destinations(&mut b), b.take_tx(0));
        let c = &spec.counters;
        assert_eq!(c.bypassed.get().0, 1, "{policy:?}: the cause is counted");
        let dropped = b.drops(StageKind::WccpRedirect, DropReason::WccpFailClosed);
        match policy {
            P::Open => {
                assert_eq!(to_server, vec![SERVER]);
                assert!(to_client.is_empty());
                assert_eq!(c.fail_open_forwarded.get().0, 1);
                assert_eq!(dropped, 0);
            }
            P::ClosedDrop => {
                assert!(to_server.is_empty() && to_client.is_empty());
                assert_eq!(c.fail_closed_dropped.get().0, 1);
                assert_eq!(dropped, 1);
            }
            P::ClosedReject => {
                assert!(to_server.is_empty());
                assert_eq!(c.fail_closed_rejected.get().0, 1);
                assert_eq!(dropped, 1);
                // RFC 9293 reset generation for a SYN: seq 0, ACK = ISN + 1, RST|ACK, from the
                // address and port the client called.
                assert_eq!(to_client.len(), 1);
                let f = &to_client[0];
                assert_eq!(ethernet::dst(f), CLIENT);
                let l3 = &f[14..];
                assert_eq!(ipv4::check(l3).map(|_| ()), Ok(()));
                assert_eq!(
                    (ipv4::src(l3), ipv4::dst(l3), ipv4::protocol(l3)),
                    ([10, 0, 2, 80].into(), [10, 0, 1, 2].into(), 6)
                );
                let (rst, csum_ok) = tcp_of(f);
                assert!(csum_ok);
                assert_eq!((rst.src_port, rst.dst_port), (80, 40000));
                assert_eq!((rst.seq, rst.ack, rst.flags), (0, 1001, tf::RST | tf::ACK));
                // A mid-flow segment with ACK gets a RST whose sequence is that ACK.
                let mut ack = tcp_syn_mss(1460);
                ack[47] = tf::ACK;
                ack[42..46].copy_from_slice(&777u32.to_be_bytes());
                fill_tcp_checksum(&mut ack);
                b.run(vec![ack], t0 + Duration::from_secs(2));
                let out = b.take_tx(0);
                assert_eq!(out.len(), 1);
                let (rst, _) = tcp_of(&out[0]);
                assert_eq!((rst.seq, rst.flags), (777, tf::RST));
            }
        }
    }
}

#[test]
fn a_closed_service_drops_even_with_no_cache_in_the_group() {
    use router::tables::wccp::{AffinityConf, ServicePlane};
    let counters: Arc<router::tables::wccp::ServiceCounters> = Default::default();
    let plane = |policy| {
        let svc = ServicePlane {
            id: 0,
            assignment: Arc::new(wccp::assign::Assignment::empty(
                wccp::wire::ServiceInfo::standard(0),
            )),
            redirect_list: Arc::from(Vec::new()),
            failed: Vec::new(),
            counters: counters.clone(),
            cache_counters: Vec::new(),
            fail_policy: policy,
            gre_mss_clamp: Default::default(),
        };
        Arc::new(router::tables::WccpPlane::new(
            [svc],
            AffinityConf::default(),
            Default::default(),
        ))
    };
    let mut b = Bench::new();
    b.tables.ifaces[0].redirect_in = vec![0];
    let t0 = Instant::now();
    b.neighbours
        .learn(1, [10, 0, 2, 80].into(), SERVER, true, t0);
    b.tables.wccp = plane(conf::WccpFailPolicy::Open);
    assert!(b.tables.wccp.services.is_empty(), "open: left out");
    b.run(vec![tcp_syn(80)], t0);
    assert_eq!(destinations(&mut b), vec![SERVER]);
    b.tables.wccp = plane(conf::WccpFailPolicy::ClosedDrop);
    b.run(vec![tcp_syn(80), tcp_syn(443)], t0);
    assert_eq!(destinations(&mut b), vec![SERVER], "only port 443 passes");
    assert_eq!(counters.unassigned.get().0, 1);
    assert_eq!(counters.fail_closed_dropped.get().0, 1);
}

#[test]
fn syns_and_syn_acks_of_gre_redirected_flows_have_their_mss_clamped() {
    let spec = PlaneSpec::new();
    let (mut b, t0) = wccp_bench(&spec);
    b.tables.ifaces[1].mtu = 1400;
    b.neighbours
        .learn(0, [10, 0, 1, 2].into(), CLIENT, true, t0);
    b.run(vec![tcp_syn_mss(1460)], t0);
    let tx = b.take_tx(1);
    assert_eq!(tx.len(), 1);
    assert_eq!(ethernet::dst(&tx[0]), MAC_A);
    let inner = &tx[0][28..]; // the inner packet, behind a 14-byte Ethernet header we fake
    let mut inner_frame = tx[0][..14].to_vec();
    inner_frame.extend_from_slice(&inner[14..]);
    let (syn, ok) = tcp_of(&inner_frame);
    assert_eq!(syn.mss, Some(1400 - 20 - 20 - 28));
    assert!(ok, "checksum patched");
    // The cache's SYN-ACK (from the server's address, on the cache side) to the client.
    let mut syn_ack = tcp_syn_mss(1360);
    syn_ack[..14].copy_from_slice(&{
        let mut h = [0u8; 14];
        ethernet::write_header(&mut h, R1, MAC_A, ethernet::ETHERTYPE_IPV4);
        h
    });
    syn_ack[26..30].copy_from_slice(&[10, 0, 2, 80]);
    syn_ack[30..34].copy_from_slice(&[10, 0, 1, 2]);
    syn_ack[34..36].copy_from_slice(&80u16.to_be_bytes());
    syn_ack[36..38].copy_from_slice(&40000u16.to_be_bytes());
    syn_ack[47] = 0x12;
    ipv4::fill_checksum(&mut syn_ack[14..], 20);
    fill_tcp_checksum(&mut syn_ack);
    let mut p = Packet::from_frame(&syn_ack);
    p.meta.rx_if = 1;
    let neigh = b.neighbours.load();
    b.pipeline.run(
        &mut vec![p],
        &b.tables,
        &neigh,
        &b.neighbours,
        &mut b.pool,
        t0,
    );
    let out = b.take_tx(0);
    assert_eq!(out.len(), 1);
    let (sa, ok) = tcp_of(&out[0]);
    assert_eq!(sa.mss, Some(1332));
    assert!(ok);
    assert_eq!(spec.counters.mss_clamped.get().0, 2);
    // Off: nothing is touched.
    let mut spec = PlaneSpec::new();
    spec.gre_mss_clamp = conf::GreMssClamp::Off;
    let (mut b, t0) = wccp_bench(&spec);
    b.tables.ifaces[1].mtu = 1400;
    b.run(vec![tcp_syn_mss(1460)], t0);
    let tx = b.take_tx(1);
    let mut inner_frame = tx[0][..14].to_vec();
    inner_frame.extend_from_slice(&tx[0][42..]);
    assert_eq!(tcp_of(&inner_frame).0.mss, Some(1460));
    assert_eq!(spec.counters.mss_clamped.get().0, 0);
}

#[test]
fn too_big_for_gre_gets_fragmentation_needed_with_df_and_fragments_without() {
    let spec = PlaneSpec::new();
    let (mut b, t0) = wccp_bench(&spec);
    b.tables.ifaces[1].mtu = 1400;
    b.neighbours
        .learn(0, [10, 0, 1, 2].into(), CLIENT, true, t0);
    // A 1400-byte segment: fits the link bare, not with the 28 octets of GRE.
    let big = |df: bool| {
        let mut f = vec![0u8; 14 + 1400];
        ethernet::write_header(&mut f, R0, CLIENT, ethernet::ETHERTYPE_IPV4);
        ipv4::Ipv4Repr {
            src: [10, 0, 1, 2].into(),
            dst: [10, 0, 2, 80].into(),
            protocol: 6,
            payload_len: 1380,
            ttl: 64,
            ident: 9,
            tos: 0,
            dont_fragment: df,
        }
        .emit(&mut f[14..34]);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[46] = 0x50;
        f[47] = 0x10;
        fill_tcp_checksum(&mut f);
        f
    };
    b.run(vec![big(true)], t0);
    assert!(b.take_tx(1).is_empty(), "not sent to the cache");
    let icmp = b.take_tx(0);
    assert_eq!(icmp.len(), 1);
    let l3 = &icmp[0][14..];
    assert_eq!(ipv4::protocol(l3), 1);
    assert_eq!((l3[20], l3[21]), (3, 4), "fragmentation needed");
    assert_eq!(
        u16::from_be_bytes([l3[26], l3[27]]),
        1400 - 28,
        "next-hop MTU"
    );
    assert_eq!(spec.counters.gre_too_big.get().0, 1);
    assert_eq!(spec.counters.redirected.get().0, 0);
    b.run(vec![big(false)], t0);
    let frags = b.take_tx(1);
    assert_eq!(frags.len(), 2, "the outer packet in two fragments");
    assert!(frags.iter().all(|f| f.len() - 14 <= 1400));
    assert_eq!(spec.counters.gre_fragmented.get().0, 1);
    assert_eq!(spec.counters.redirected.get().0, 1);
}

/// A tracer armed for `count` packets matching `filter`, given to the bench's pipeline.
fn trace(b: &mut Bench, count: u32, filter: &str) -> Arc<router::pipeline::trace::Tracer> {
    use router::pipeline::trace::{TraceFilter, Tracer};
    let t = Arc::new(Tracer::new(1));
    let names: Vec<String> = b.tables.ifaces.iter().map(|i| i.name.clone()).collect();
    let f = TraceFilter::parse(filter, |n| {
        names.iter().position(|x| x == n).map(|i| i as u16)
    })
    .unwrap();
    t.arm(count, f, filter);
    b.pipeline.set_tracer(t.clone());
    t
}

/// The one record of a trace, as JSON (what `swrouter trace show --json` prints).
fn only_record(t: &router::pipeline::trace::Tracer) -> serde_json::Value {
    let show = serde_json::to_value(t.show()).unwrap();
    let records = show["records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{show:#}");
    records[0].clone()
}

/// The verdicts of a record's stages, as "stage verdict" strings.
fn stages(rec: &serde_json::Value) -> Vec<String> {
    rec["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["stage"].as_str().unwrap(),
                s["verdict"].as_str().unwrap()
            )
        })
        .collect()
}

/// The wccp-redirect step's decision.
fn wccp_step(rec: &serde_json::Value) -> serde_json::Value {
    rec["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"] == "wccp-redirect")
        .unwrap_or_else(|| panic!("no wccp-redirect step: {rec:#}"))["wccp"]
        .clone()
}

#[test]
fn a_traced_redirect_names_its_service_cache_method_and_bucket() {
    let spec = PlaneSpec::new();
    let (mut b, t0) = wccp_bench(&spec);
    let t = trace(&mut b, 5, "tcp and port 80");
    // The UDP packet does not match the filter: it is not traced.
    b.run(vec![udp([10, 0, 2, 80], 64), tcp_syn(80)], t0);
    assert_eq!(destinations(&mut b), vec![SERVER, MAC_A]);
    let rec = only_record(&t);
    assert_eq!(rec["packet"], 1);
    assert_eq!(rec["interface"], "eth0");
    assert_eq!(
        rec["summary"],
        "TCP 10.0.1.2:40000 > 10.0.2.80:80 [S] len 40"
    );
    assert_eq!(
        stages(&rec),
        [
            "rx pass",
            "ethernet pass",
            "ipv4-input pass",
            "wccp-redirect jump",
            "route pass",
            "neighbour pass",
            "tx transmit"
        ]
    );
    let w = wccp_step(&rec);
    assert_eq!(w["redirected"], true, "{w:#}");
    assert_eq!(w["service"], 0);
    assert_eq!(w["cache"], "10.0.2.9");
    assert_eq!(w["method"], "gre");
    assert_eq!(w["affinity"], "miss", "a new flow");
    assert!(w["bucket"].as_u64().is_some(), "{w:#}");
    assert_eq!(w["tried"][0]["outcome"], "redirected");
    // The step that encapsulated shows the GRE packet; tx names the cache as next hop.
    let step = &rec["stages"][3];
    assert_eq!(step["detail"], "to route");
    let now = step["rewrote"].as_str().unwrap();
    assert!(
        now.starts_with("GRE 10.0.2.1 > 10.0.2.9 WCCP service 0 bucket "),
        "{now}"
    );
    assert_eq!(rec["stages"][6]["detail"], "on eth1 via 10.0.2.9");
    // The text rendering says the same.
    let text = router::pipeline::trace::render(&t.show());
    assert!(
        text.contains("redirected: service 0 to cache 10.0.2.9 by gre, bucket "),
        "{text}"
    );
}

#[test]
fn traced_packets_name_why_they_were_not_redirected() {
    let deny = conf::WccpAclRule {
        action: conf::WccpAclAction::Deny,
        protocol: Some(6),
        source: None,
        destination: Some("10.0.2.80/32".parse().unwrap()),
        source_port: None,
        destination_port: None,
    };
    let permit_other = conf::WccpAclRule {
        action: conf::WccpAclAction::Permit,
        protocol: Some(17),
        ..deny.clone()
    };
    // Denied by the redirect list's rule 2.
    let mut spec = PlaneSpec::new();
    spec.acl = vec![permit_other, deny];
    let (mut b, t0) = wccp_bench(&spec);
    let t = trace(&mut b, 1, "");
    b.run(vec![tcp_syn(80)], t0);
    let w = wccp_step(&only_record(&t));
    assert_eq!(
        (&w["redirected"], &w["reason"]),
        (&false.into(), &"denied".into()),
        "{w:#}"
    );
    assert_eq!(w["tried"][0]["outcome"], "denied");
    assert_eq!(w["tried"][0]["rule"], 2);
    // Unassigned: no cache holds the bucket; forwarded normally (fail-policy open).
    let mut spec = PlaneSpec::new();
    spec.owner = 0xff;
    let (mut b, t0) = wccp_bench(&spec);
    let t = trace(&mut b, 1, "");
    b.run(vec![tcp_syn(80)], t0);
    assert_eq!(destinations(&mut b), vec![SERVER]);
    let w = wccp_step(&only_record(&t));
    assert_eq!(w["reason"], "unassigned", "{w:#}");
    assert_eq!(w["fail_policy"], "open");
    assert!(
        w["bucket"].as_u64().is_some(),
        "the bucket nobody holds: {w:#}"
    );
    // Cache probed down: fast failover took cache A out.
    let mut spec = PlaneSpec::new();
    spec.failed = [true, false];
    let (mut b, t0) = wccp_bench(&spec);
    let t = trace(&mut b, 1, "");
    b.run(vec![tcp_syn(80)], t0);
    let w = wccp_step(&only_record(&t));
    assert_eq!(w["reason"], "cache-probed-down", "{w:#}");
    assert_eq!(w["cache"], "10.0.2.9");
    // Excluded interface.
    let spec = PlaneSpec::new();
    let (mut b, t0) = wccp_bench(&spec);
    b.tables.ifaces[0].exclude_in = true;
    let t = trace(&mut b, 1, "interface eth0");
    b.run(vec![tcp_syn(80)], t0);
    let rec = only_record(&t);
    let w = wccp_step(&rec);
    assert_eq!(w["reason"], "excluded-interface", "{w:#}");
    assert_eq!(
        stages(&rec).last().unwrap(),
        "tx transmit",
        "routed normally"
    );
    // Not intercepted: port 443 is no part of service 0.
    let (mut b, t0) = wccp_bench(&spec);
    let t = trace(&mut b, 1, "");
    b.run(vec![tcp_syn(443)], t0);
    let w = wccp_step(&only_record(&t));
    assert_eq!(w["reason"], "not-intercepted", "{w:#}");
    assert_eq!(w["tried"][0]["outcome"], "not-intercepted");
}

#[test]
fn a_trace_marks_only_its_count_and_a_queued_packet_is_recorded_again_on_release() {
    let mut b = Bench::new();
    let t = trace(&mut b, 1, "udp and dst 10.0.2.2");
    let t0 = Instant::now();
    // Two matching packets: only the first is marked. The next hop is unknown: queued.
    b.run(vec![udp([10, 0, 2, 2], 64), udp([10, 0, 2, 2], 64)], t0);
    assert!(!t.status().armed, "the count is used up");
    let rec = only_record(&t);
    assert_eq!(stages(&rec).last().unwrap(), "neighbour queue");
    b.neighbours
        .learn(1, [10, 0, 2, 2].into(), SERVER, true, t0);
    b.poll(t0);
    assert_eq!(b.take_tx(1).len(), 3, "the ARP request and both packets");
    let show = t.show();
    assert_eq!(show.records.len(), 2, "{show:#?}");
    let again = &show.records[1];
    assert_eq!((again.packet, again.part), (1, 2));
    assert_eq!(again.stages.last().unwrap().verdict, "transmit");
    assert_eq!(show.status.captured, 2);
    // Disarmed: nothing more is recorded.
    b.run(vec![udp([10, 0, 2, 2], 64)], t0);
    assert_eq!(t.show().records.len(), 2);
    t.clear();
    assert_eq!(t.status().captured, 0);
}

/// An ARP request from the client for `target` on eth0.
fn arp_request(target: [u8; 4]) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    ethernet::write_header(&mut f, MacAddr::BROADCAST, CLIENT, ethernet::ETHERTYPE_ARP);
    arp::ArpRepr {
        operation: arp::OP_REQUEST,
        sender_mac: CLIENT,
        sender_ip: [10, 0, 1, 2].into(),
        target_mac: MacAddr::ZERO,
        target_ip: target.into(),
    }
    .emit(&mut f[14..]);
    f
}

/// A VRRP advertisement frame from a peer 10.0.1.3 on eth0 (VRID 51, priority 100).
fn vrrp_advert(ttl: u8) -> Vec<u8> {
    let advert = vrrp::Advert::new(51, 100, 100, vec![[10, 0, 1, 254].into()]).unwrap();
    let mut f = vrrp::wire::build_frame(
        &advert,
        vrrp::wire::virtual_mac(51),
        [10, 0, 1, 3].into(),
        1,
        vrrp::ChecksumMode::PseudoHeader,
    );
    f[14 + 8] = ttl;
    ipv4::fill_checksum(&mut f[14..], 20);
    f
}

#[test]
fn vrrp_master_owns_the_virtual_mac_and_addresses_and_a_backup_does_not() {
    let mut b = Bench::new();
    let t0 = Instant::now();
    b.neighbours
        .learn(0, [10, 0, 1, 2].into(), CLIENT, true, t0);
    b.neighbours
        .learn(1, [10, 0, 2, 2].into(), SERVER, true, t0);
    let vmac = vrrp::wire::virtual_mac(51);
    let plane = Arc::new(router::tables::vrrp::VrrpPlane::new([(
        0,
        51,
        vec![[10, 0, 1, 254].into()],
    )]));
    b.tables.vrrp = Some(plane.clone());
    let mut adverts = b.tables.local.bind_vrrp(8);
    // To the server through the virtual MAC; echo to the virtual address.
    let mut via_vmac = udp([10, 0, 2, 2], 64);
    via_vmac[..6].copy_from_slice(&vmac.0);
    let mut echo_vip = echo_request(7);
    echo_vip[..6].copy_from_slice(&vmac.0);
    echo_vip[30..34].copy_from_slice(&[10, 0, 1, 254]);
    ipv4::fill_checksum(&mut echo_vip[14..], 20);
    let frames = || {
        vec![
            arp_request([10, 0, 1, 254]),
            via_vmac.clone(),
            echo_vip.clone(),
            vrrp_advert(255),
            vrrp_advert(64),
        ]
    };

    // Backup: nothing answered for the VIP, nothing taken for the vMAC; adverts still arrive.
    b.run(frames(), t0);
    assert!(b.take_tx(0).is_empty(), "no ARP answer, no echo reply");
    assert!(b.take_tx(1).is_empty(), "frames to the vMAC are not routed");
    assert_eq!(b.drops(StageKind::Ethernet, DropReason::L2OtherHost), 2);
    let d = adverts.try_recv().unwrap();
    assert_eq!(d.rx_if, 0);
    assert_eq!(vrrp::wire::parse_ipv4(&d.packet).unwrap().advert.vrid(), 51);
    // The TTL check is the VRRP driver's (one counter per reason there).
    assert_eq!(
        vrrp::wire::parse_ipv4(&adverts.try_recv().unwrap().packet),
        Err(vrrp::ParseError::BadTtl(64))
    );

    // Master without Accept_Mode: ARP answered with the vMAC, frames to it routed, the VIP
    // itself not accepted (RFC 5798 §6.4.3).
    plane.set_role(0, true, false);
    b.run(frames(), t0);
    let to_client = b.take_tx(0);
    assert_eq!(to_client.len(), 1, "only the ARP reply");
    let reply = arp::ArpRepr::parse(&to_client[0][14..]).unwrap();
    assert_eq!(
        (reply.operation, reply.sender_mac, reply.sender_ip),
        (arp::OP_REPLY, vmac, [10, 0, 1, 254].into())
    );
    assert_eq!(ethernet::src(&to_client[0]), vmac);
    let routed = b.take_tx(1);
    assert_eq!(routed.len(), 1, "routed like a frame to our own MAC");
    assert_eq!(ethernet::dst(&routed[0]), SERVER);
    assert_eq!(
        b.drops(StageKind::Ipv4Input, DropReason::VrrpNotAccepted),
        1
    );

    // Accept_Mode: the VIP answers pings.
    plane.set_role(0, true, true);
    b.run(vec![echo_vip.clone()], t0 + Duration::from_secs(1));
    let back = b.take_tx(0);
    assert_eq!(back.len(), 1);
    assert_eq!(back[0][34], 0, "echo reply");
    assert_eq!(
        ipv4::src(&back[0][14..]),
        std::net::Ipv4Addr::new(10, 0, 1, 254)
    );
}

/// Issue 15: caches register with a VRRP virtual address. A master without Accept_Mode still
/// takes WCCP (UDP 2048) and GRE returns addressed to it, as an address owner would; other
/// traffic to the virtual address stays refused, and a backup takes none of it.
#[test]
fn a_vrrp_master_takes_wccp_and_gre_to_the_virtual_address_without_accept_mode() {
    let mut b = Bench::new();
    let mut rx = b.tables.local.bind(2048, 4);
    let t0 = Instant::now();
    b.neighbours
        .learn(0, [10, 0, 1, 2].into(), CLIENT, true, t0);
    let vip = [10, 0, 1, 254];
    let vmac = vrrp::wire::virtual_mac(51);
    let plane = Arc::new(router::tables::vrrp::VrrpPlane::new([(
        0,
        51,
        vec![vip.into()],
    )]));
    b.tables.vrrp = Some(plane.clone());
    let to_vmac = |mut f: Vec<u8>| {
        f[..6].copy_from_slice(&vmac.0);
        f
    };
    let hia = to_vmac(udp_to(vip, 2048, b"here-i-am"));
    let other = to_vmac(udp_to(vip, 9999, b"x"));
    let mut gre = gre_return([10, 0, 1, 2], Some(0), 0).frame().to_vec();
    gre[..6].copy_from_slice(&vmac.0);
    gre[30..34].copy_from_slice(&vip);
    ipv4::fill_checksum(&mut gre[14..], 20);

    plane.set_role(0, true, false);
    b.run(vec![hia.clone(), other.clone(), gre.clone()], t0);
    let d = rx.try_recv().unwrap();
    assert_eq!(d.payload, b"here-i-am");
    assert_eq!(d.dst.to_string(), "10.0.1.254:2048");
    assert_eq!(
        b.drops(StageKind::Ipv4Input, DropReason::VrrpNotAccepted),
        1,
        "only the datagram to another port"
    );
    // The GRE return reached local delivery (no cache is a member in this bench).
    assert_eq!(
        b.drops(StageKind::LocalDelivery, DropReason::WccpReturnNotMember),
        1
    );

    // A backup does not own the virtual address: nothing of it is taken.
    plane.set_role(0, false, false);
    b.run(vec![hia], t0);
    assert!(rx.try_recv().is_err());
}

// ----- router cluster (issue 16): the cluster stage, its receive filter and ARP -----

const CMAC: MacAddr = MacAddr([3, 0, 0x5e, 0xc1, 0, 1]);
/// The MAC of the node an id is handed to.
const NEW_OWNER: MacAddr = MacAddr([2, 0, 0, 0xb, 0, 1]);

/// `[cluster]` with `eth0` (gateway 10.0.1.254) and the given other segments.
fn cluster_conf(extra: &str, hold_limit: u32) -> conf::ClusterConf {
    let text = format!(
        r#"
[[interface]]
name = "eth0"
address = "10.0.1.1/24"
[[interface]]
name = "eth1"
address = "10.0.2.1/24"
[cluster]
name = "edge"
node-id = 1
etcd = ["http://10.8.0.100:2379"]
sync-local = "10.8.0.1:7788"
key-file = "/etc/swrouter/cluster.key"
cluster-mac = "03:00:5e:c1:00:01"
hold-limit = {hold_limit}
[[cluster.interface]]
name = "eth0"
addresses = ["10.0.1.254"]
{extra}
"#
    );
    conf::parse_str("t.conf", &text).unwrap().cluster.unwrap()
}

/// A bench whose router is a cluster node (eth0 shared), its neighbours known, key set.
fn cluster_bench(hold_limit: u32) -> (Bench, Arc<router::tables::cluster::ClusterPlane>, Instant) {
    cluster_bench_with(cluster_conf("", hold_limit), None)
}

fn cluster_bench_with(
    c: conf::ClusterConf,
    nat: Option<&nat::config::Config>,
) -> (Bench, Arc<router::tables::cluster::ClusterPlane>, Instant) {
    let mut b = Bench::new();
    let plane =
        Arc::new(router::tables::cluster::ClusterPlane::new(&c, &b.tables.ifaces, nat).unwrap());
    plane.set_hash_key(0x5eed).unwrap();
    b.tables.cluster = Some(plane.clone());
    b.pipeline.reserve_cluster_hold(plane.hold_limit());
    let t0 = Instant::now();
    b.neighbours
        .learn(0, [10, 0, 1, 2].into(), CLIENT, true, t0);
    b.neighbours
        .learn(1, [10, 0, 2, 2].into(), SERVER, true, t0);
    (b, plane, t0)
}

/// Client → 10.0.2.2 UDP from source port `sport`, sent to the cluster MAC.
fn to_cluster(sport: u16) -> Vec<u8> {
    let mut f = udp([10, 0, 2, 2], 64);
    f[0..6].copy_from_slice(&CMAC.0);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f
}

fn id_of(plane: &router::tables::cluster::ClusterPlane, f: &[u8], outside: bool) -> u8 {
    cluster::packet_id(plane.id_config().unwrap(), &f[14..], outside).unwrap()
}

/// Two flows (source ports) with different ids.
fn two_flows(plane: &router::tables::cluster::ClusterPlane) -> ((u16, u8), (u16, u8)) {
    let a = (40000, id_of(plane, &to_cluster(40000), false));
    let b = (40001..)
        .map(|p| (p, id_of(plane, &to_cluster(p), false)))
        .find(|(_, id)| *id != a.1)
        .unwrap();
    (a, b)
}

fn assert_accounted(b: &Bench) {
    for (si, sc) in b.counters.stages.iter().enumerate() {
        let drops: u64 = sc.drops.iter().map(|c| c.get()).sum();
        assert_eq!(
            sc.packets_in.get(),
            sc.packets_out.get() + sc.consumed.get() + drops,
            "stage {:?}",
            StageKind::ALL[si]
        );
    }
}

#[test]
fn frames_to_the_cluster_mac_pass_only_on_their_ids_owner() {
    use cluster::PlaneState;
    let (mut b, plane, t0) = cluster_bench(16);
    let ((pa, a), (pb, idb)) = two_flows(&plane);
    // Every id starts foreign: dropped, counted, nothing sent.
    b.run(vec![to_cluster(pa)], t0);
    assert!(b.take_tx(1).is_empty());
    assert_eq!(b.drops(StageKind::Cluster, DropReason::ClusterForeign), 1);
    assert_eq!(b.counters.cluster.foreign.get(), 1);
    // Owned: routed as ever, out with our own MAC.
    plane.set_state(a, PlaneState::Owned);
    b.run(vec![to_cluster(pa), to_cluster(pb)], t0);
    let tx = b.take_tx(1);
    assert_eq!(tx.len(), 1, "only the owned id's flow");
    assert_eq!((ethernet::dst(&tx[0]), ethernet::src(&tx[0])), (SERVER, R1));
    assert_eq!(&tx[0][34..36], &pa.to_be_bytes());
    assert_eq!(b.counters.cluster.owned.get(), 1);
    assert_eq!(b.drops(StageKind::Cluster, DropReason::ClusterForeign), 2);
    // A frame to the node's own MAC is not distributed, whatever its id's owner (another
    // node's hand-off, or a host that uses this node's address).
    assert_eq!(plane.state(idb), PlaneState::Foreign);
    let mut own = to_cluster(pb);
    own[0..6].copy_from_slice(&R0.0);
    b.run(vec![own], t0);
    assert_eq!(b.take_tx(1).len(), 1);
    assert_eq!(b.counters.cluster.foreign.get(), 2);
    // The cluster MAC is taken only on a shared segment: on eth1 it is another host's.
    let mut p = Packet::from_frame(&to_cluster(pa));
    p.meta.rx_if = 1;
    let neigh = b.neighbours.load();
    b.pipeline.run(
        &mut vec![p],
        &b.tables,
        &neigh,
        &b.neighbours,
        &mut b.pool,
        t0,
    );
    assert_eq!(b.drops(StageKind::Ethernet, DropReason::L2Multicast), 1);
    assert_accounted(&b);
}

#[test]
fn held_frames_run_when_their_id_becomes_owned_and_go_to_the_new_owner_when_handed_off() {
    use cluster::PlaneState;
    let (mut b, plane, t0) = cluster_bench(16);
    let ((pa, a), (pb, idb)) = two_flows(&plane);
    plane.set_state(a, PlaneState::Releasing);
    plane.set_state(idb, PlaneState::Releasing);
    b.run(vec![to_cluster(pa), to_cluster(pb), to_cluster(pa)], t0);
    assert!(
        b.take_tx(0).is_empty() && b.take_tx(1).is_empty(),
        "all held"
    );
    assert_eq!(b.counters.cluster.held.get(), 3);
    assert!(b.pipeline.has_pending(), "the worker polls soon");
    // a comes back: its held frames run at the next burst, before that burst's own frames.
    plane.set_state(a, PlaneState::Owned);
    let mut later = to_cluster(pa);
    later[42] = 0xee;
    b.run(vec![later], t0);
    let tx = b.take_tx(1);
    assert_eq!(tx.len(), 3);
    assert!(tx[..2].iter().all(|f| f.len() > 42 && f[42] == 0));
    assert_eq!(tx[2][42], 0xee, "the newer frame after the held ones");
    assert_eq!(b.counters.cluster.released.get(), 2);
    // b is handed to another node: its held frame leaves on the interface it came in on, to
    // the new owner's MAC, from ours, untouched otherwise (the new owner routes it).
    plane.hand_off(idb, &[("eth0".to_string(), NEW_OWNER)]);
    b.poll(t0);
    let tx = b.take_tx(0);
    assert_eq!(tx.len(), 1);
    assert_eq!(
        (ethernet::dst(&tx[0]), ethernet::src(&tx[0])),
        (NEW_OWNER, R0)
    );
    let orig = to_cluster(pb);
    assert_eq!(
        &tx[0][12..orig.len()],
        &orig[12..],
        "same datagram, TTL not spent"
    );
    assert_eq!(b.counters.cluster.handed.get(), 1);
    assert!(!b.pipeline.has_pending());
    // Later frames of the handed id are foreign here.
    b.run(vec![to_cluster(pb)], t0);
    assert!(b.take_tx(0).is_empty() && b.take_tx(1).is_empty());
    assert_eq!(b.drops(StageKind::Cluster, DropReason::ClusterForeign), 1);
    assert_accounted(&b);
}

#[test]
fn a_gained_ids_handed_over_copies_of_frames_already_handled_here_are_dropped() {
    use cluster::PlaneState;
    let (mut b, plane, _) = cluster_bench(16);
    let ((pa, a), (_, idb)) = two_flows(&plane);
    // `a` is gained from another node (Foreign → Owned opens its window); `idb` was ours.
    plane.set_state(idb, PlaneState::Owned);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(1));
    plane.set_state(a, PlaneState::Owned);
    let seen = to_cluster(pa);
    b.run(vec![seen.clone()], t0);
    assert_eq!(b.take_tx(1).len(), 1, "handled here from the cluster MAC");
    // The old owner held the same frame and hands it over to our own MAC: a duplicate.
    let mut copy = seen.clone();
    ethernet::write_header(&mut copy, R0, NEW_OWNER, ethernet::ETHERTYPE_IPV4);
    // The old owner completed a partial checksum before handing it over: still the same frame.
    copy[40] ^= 0x5a;
    let mut other = to_cluster(pa);
    other[42] = 0xee;
    ethernet::write_header(&mut other, R0, NEW_OWNER, ethernet::ETHERTYPE_IPV4);
    b.run(vec![copy.clone(), other], t0);
    let tx = b.take_tx(1);
    assert_eq!(
        tx.len(),
        1,
        "the copy dropped, a frame only the old owner saw forwarded"
    );
    assert_eq!(tx[0][42], 0xee);
    assert_eq!(b.drops(StageKind::Cluster, DropReason::ClusterDuplicate), 1);
    assert_eq!(b.counters.cluster.duplicates.get(), 1);
    // After the window the same bytes pass (a host may send them again).
    b.run(vec![copy], t0 + DEDUPE_WINDOW + Duration::from_millis(10));
    assert_eq!(b.take_tx(1).len(), 1);
    assert_eq!(b.drops(StageKind::Cluster, DropReason::ClusterDuplicate), 1);
    assert_accounted(&b);
}

#[test]
fn a_handed_off_frame_leaves_with_its_partial_checksum_completed() {
    use cluster::PlaneState;
    use router::wire::vnet;
    let (mut b, plane, t0) = cluster_bench(16);
    let ((pa, a), _) = two_flows(&plane);
    plane.set_state(a, PlaneState::Releasing);
    // As a veth peer's stack sends it: the UDP checksum field holds the pseudo-header sum.
    let mut f = to_cluster(pa);
    let pseudo = netwire::checksum::fold(netwire::checksum::pseudo_header(
        [10, 0, 1, 2],
        [10, 0, 2, 2],
        17,
        12,
    ));
    f[40..42].copy_from_slice(&pseudo.to_be_bytes());
    let mut p = Packet::from_frame(&f);
    p.meta.rx_if = 0;
    p.meta.offload = vnet::VnetHdr {
        flags: vnet::F_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        ..Default::default()
    };
    let neigh = b.neighbours.load();
    b.pipeline.run(
        &mut vec![p],
        &b.tables,
        &neigh,
        &b.neighbours,
        &mut b.pool,
        t0,
    );
    plane.hand_off(a, &[("eth0".to_string(), NEW_OWNER)]);
    b.poll(t0);
    let tx = b.take_tx(0);
    assert_eq!(tx.len(), 1);
    // The receiver's check: pseudo header + UDP segment sums to 0xffff.
    let acc = netwire::checksum::sum(
        netwire::checksum::pseudo_header([10, 0, 1, 2], [10, 0, 2, 2], 17, 12),
        &tx[0][34..46],
    );
    assert_eq!(
        netwire::checksum::fold(acc),
        0xffff,
        "complete checksum on the wire"
    );
}

#[test]
fn the_hold_queue_is_bounded_and_a_fence_drops_what_it_holds() {
    use cluster::PlaneState;
    let (mut b, plane, t0) = cluster_bench(4);
    let ((pa, a), _) = two_flows(&plane);
    plane.set_state(a, PlaneState::Releasing);
    b.run((0..6).map(|_| to_cluster(pa)).collect(), t0);
    assert_eq!(b.drops(StageKind::Cluster, DropReason::ClusterHoldFull), 2);
    assert_eq!(
        (
            b.counters.cluster.held.get(),
            b.counters.cluster.hold_full.get()
        ),
        (4, 2)
    );
    // Still releasing: kept.
    b.poll(t0);
    assert!(b.pipeline.has_pending());
    plane.fence();
    b.poll(t0);
    assert_eq!(
        b.drops(StageKind::Cluster, DropReason::ClusterHoldDropped),
        4
    );
    assert_eq!(b.counters.cluster.hold_dropped.get(), 4);
    assert!(!b.pipeline.has_pending());
    assert!(b.take_tx(0).is_empty() && b.take_tx(1).is_empty());
    assert_accounted(&b);
}

#[test]
fn arp_for_a_cluster_address_is_answered_with_the_cluster_mac_only_on_a_shared_segment() {
    // eth1 is a shared segment too, with a NAT pool address listed nowhere else.
    let c = cluster_conf(
        "[[cluster.interface]]\nname = \"eth1\"\naddresses = [\"10.0.2.253\"]",
        16,
    );
    let (mut b, _plane, t0) = cluster_bench_with(c, None);
    b.run(vec![arp_request([10, 0, 1, 254])], t0);
    let tx = b.take_tx(0);
    assert_eq!(tx.len(), 1);
    let reply = arp::ArpRepr::parse(&tx[0][14..]).unwrap();
    assert_eq!(
        (reply.operation, reply.sender_mac, reply.sender_ip),
        (arp::OP_REPLY, CMAC, [10, 0, 1, 254].into())
    );
    // From our own MAC: switches never learn the cluster MAC on a port.
    assert_eq!((ethernet::dst(&tx[0]), ethernet::src(&tx[0])), (CLIENT, R0));
    // The router's own address is still answered with its own MAC.
    b.run(vec![arp_request([10, 0, 1, 1])], t0);
    let reply = arp::ArpRepr::parse(&b.take_tx(0)[0][14..]).unwrap();
    assert_eq!(reply.sender_mac, R0);
    // eth1's cluster address asked on eth0: not ours there.
    b.run(vec![arp_request([10, 0, 2, 253])], t0);
    assert!(b.take_tx(0).is_empty());
    // A neighbour claiming a cluster address is not believed.
    let mut claim = arp_request([10, 0, 1, 1]);
    claim[28..32].copy_from_slice(&[10, 0, 1, 254]);
    b.run(vec![claim], t0);
    assert!(b.take_tx(0).is_empty());
    assert_eq!(b.drops(StageKind::Ethernet, DropReason::ArpBadSender), 1);
}

#[test]
fn arp_for_a_nat_pool_address_is_answered_with_the_cluster_mac_on_a_shared_segment() {
    let nat_cfg = nat::config::Config {
        rules: vec![nat::config::Rule {
            inside: vec![nat::config::Prefix::new([10, 0, 1, 0].into(), 24)],
            outside: 0,
            pool: vec![[10, 0, 1, 200].into()],
        }],
        ..nat::config::Config::default()
    };
    for shared in [true, false] {
        let mut c = cluster_conf("", 16);
        if !shared {
            // eth0 is not shared: only eth1 is.
            c.interfaces[0].name = "eth1".into();
            c.interfaces[0].addresses.clear();
        }
        let (mut b, _plane, t0) = cluster_bench_with(c, Some(&nat_cfg));
        let rt = Arc::new(
            router::natd::NatRuntime::new(nat_cfg.clone(), router::statesync::SyncFeed::disabled())
                .unwrap(),
        );
        b.tables.nat = Some(Arc::new(router::natd::NatPlane::new(
            nat_cfg.clone(),
            2,
            rt,
        )));
        b.run(vec![arp_request([10, 0, 1, 200])], t0);
        let tx = b.take_tx(0);
        assert_eq!(tx.len(), 1);
        let reply = arp::ArpRepr::parse(&tx[0][14..]).unwrap();
        assert_eq!(
            reply.sender_mac,
            if shared { CMAC } else { R0 },
            "shared {shared}"
        );
        assert_eq!(ethernet::src(&tx[0]), R0);
    }
}

#[test]
fn a_ping_to_the_cluster_gateway_is_answered_by_its_ids_owner_only() {
    use cluster::PlaneState;
    let (mut b, plane, t0) = cluster_bench(16);
    let mut ping = echo_request(1);
    ping[0..6].copy_from_slice(&CMAC.0);
    ping[30..34].copy_from_slice(&[10, 0, 1, 254]);
    ipv4::fill_checksum(&mut ping[14..], 20);
    let id = id_of(&plane, &ping, false);
    b.run(vec![ping.clone()], t0);
    assert!(b.take_tx(0).is_empty(), "foreign: another node answers");
    plane.set_state(id, PlaneState::Owned);
    b.run(vec![ping], t0);
    let tx = b.take_tx(0);
    assert_eq!(tx.len(), 1);
    let l3 = &tx[0][14..];
    assert_eq!(
        (ipv4::src(l3), ipv4::dst(l3), l3[20]),
        ([10, 0, 1, 254].into(), [10, 0, 1, 2].into(), 0),
        "an echo reply from the gateway address"
    );
    assert_eq!((ethernet::dst(&tx[0]), ethernet::src(&tx[0])), (CLIENT, R0));
}

#[test]
fn both_directions_of_a_natd_flow_have_the_same_id() {
    use cluster::PlaneState;
    // Inside 10.0.1.0/24 behind pool 10.0.2.254 on eth1; both segments shared.
    let nat_cfg = nat::config::Config {
        rules: vec![nat::config::Rule {
            inside: vec![nat::config::Prefix::new([10, 0, 1, 0].into(), 24)],
            outside: 1,
            pool: vec![[10, 0, 2, 254].into()],
        }],
        port_min: 4096,
        ..nat::config::Config::default()
    };
    let c = cluster_conf(
        "[[cluster.interface]]\nname = \"eth1\"\naddresses = [\"10.0.2.254\"]",
        16,
    );
    let (mut b, plane, t0) = cluster_bench_with(c, Some(&nat_cfg));
    // Out: client 10.0.1.2:40000 → 10.0.2.2:9, to the cluster MAC on eth0.
    let out = to_cluster(40000);
    let id = id_of(&plane, &out, false);
    // Back: 10.0.2.2:9 → pool 10.0.2.254 on a port the NAT gives that endpoint (its id), to
    // the cluster MAC on eth1; and one on a port of the next id.
    let back = |port: u16| {
        let mut f = vec![0u8; 14 + 28 + 4];
        ethernet::write_header(&mut f, CMAC, SERVER, ethernet::ETHERTYPE_IPV4);
        ipv4::Ipv4Repr {
            src: [10, 0, 2, 2].into(),
            dst: [10, 0, 2, 254].into(),
            protocol: 17,
            payload_len: 12,
            ttl: 64,
            ident: 2,
            tos: 0,
            dont_fragment: false,
        }
        .emit(&mut f[14..34]);
        f[34..36].copy_from_slice(&9u16.to_be_bytes());
        f[36..38].copy_from_slice(&port.to_be_bytes());
        f[38..40].copy_from_slice(&12u16.to_be_bytes());
        f
    };
    let port = cluster::id::port_for_id(4096, id, 3).unwrap();
    let other = cluster::id::port_for_id(4096, id.wrapping_add(1), 3).unwrap();
    assert_eq!(id_of(&plane, &back(port), true), id);
    plane.set_state(id, PlaneState::Owned);
    let neigh = b.neighbours.load();
    let mut burst: Vec<Packet> = [(out, 0u16), (back(port), 1), (back(other), 1)]
        .iter()
        .map(|(f, rx)| {
            let mut p = Packet::from_frame(f);
            p.meta.rx_if = *rx;
            p
        })
        .collect();
    b.pipeline.run(
        &mut burst,
        &b.tables,
        &neigh,
        &b.neighbours,
        &mut b.pool,
        t0,
    );
    assert_eq!(
        b.counters.cluster.owned.get(),
        2,
        "both directions are this node's"
    );
    assert_eq!(
        b.counters.cluster.foreign.get(),
        1,
        "the other id's port is not"
    );
}

#[test]
fn a_traced_held_packet_names_its_id_and_is_recorded_again_when_handed_off() {
    use cluster::PlaneState;
    let (mut b, plane, t0) = cluster_bench(16);
    let t = trace(&mut b, 1, "udp");
    let ((pa, a), _) = two_flows(&plane);
    plane.set_state(a, PlaneState::Releasing);
    b.run(vec![to_cluster(pa)], t0);
    let rec = only_record(&t);
    assert_eq!(stages(&rec).last().unwrap(), "cluster queue");
    let step = rec["stages"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        step["detail"].as_str().unwrap(),
        format!("held: its id is moving to another node (id {a})")
    );
    plane.hand_off(a, &[("eth0".to_string(), NEW_OWNER)]);
    b.poll(t0);
    assert_eq!(b.take_tx(0).len(), 1);
    let show = t.show();
    assert_eq!(show.records.len(), 2);
    assert_eq!(show.records[1].stages.last().unwrap().verdict, "transmit");
}

/// A steering lab for the reload grace: the client on eth0, firewall `fw` bridging fwa–fwb,
/// its replacement `fw2` bridging fwc–fwd, the loopback-mode server web1 on s1.
fn steering_bench(via: &str) -> (Tables, router::tables::steer::SteeringPlane) {
    let names = ["eth0", "fwa", "fwb", "fwc", "fwd", "s1"];
    let ifaces: Vec<Iface> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let last = i as u8 + 1;
            iface(
                i as u16,
                n,
                MacAddr([2, 0, 0, 0, last, 1]),
                [10, 0, last, 1],
            )
        })
        .collect();
    let mut text = String::new();
    for (i, n) in names.iter().enumerate() {
        text += &format!(
            "[[interface]]\nname = \"{n}\"\naddress = \"10.0.{}.1/24\"\n",
            i + 1
        );
    }
    text += &format!(
        r#"
[[steering.device]]
name = "fw"
mode = "transparent"
interfaces = ["fwa", "fwb"]
mac = "02:00:00:00:03:01"
out-mac = "02:00:00:00:02:01"
[[steering.device]]
name = "fw2"
mode = "transparent"
interfaces = ["fwc", "fwd"]
mac = "02:00:00:00:05:01"
out-mac = "02:00:00:00:04:01"
[[steering.device]]
name = "web1"
mode = "loopback"
interfaces = ["s1"]
mac = "02:00:00:00:06:99"
[[steering.service]]
name = "stream"
address = "10.0.9.80"
protocol = "udp"
port = 5000
ingress = ["eth0"]
chain = [{{ device = "{via}" }}, {{ device = "web1" }}]
"#
    );
    let conf = conf::parse_str("reload.conf", &text).unwrap();
    let routes = RouteTable::build(&ifaces, &[]).unwrap();
    let plane = router::tables::steer::SteeringPlane::build(&conf.steering.definitions).unwrap();
    (Tables::new(ifaces, routes), plane)
}

/// UDP 10.0.1.2:40000 → 10.0.9.80:5000 as it arrives on `rx_if` from `src_mac`.
fn stream_frame(src_mac: MacAddr, dst_mac: MacAddr) -> Vec<u8> {
    let mut f = udp([10, 0, 9, 80], 64);
    ethernet::write_header(&mut f, dst_mac, src_mac, ethernet::ETHERTYPE_IPV4);
    f[34..38].copy_from_slice(&[0x9c, 0x40, 0x13, 0x88]);
    f
}

#[test]
fn frames_inside_a_replaced_device_at_a_reload_finish_the_old_chain_during_the_grace() {
    use router::tables::steer::{RetiredSteering, RELOAD_GRACE};
    let (_, old) = steering_bench("fw");
    let (tables, mut new) = steering_bench("fw2");
    let t0 = Instant::now();
    new.retired = RetiredSteering::of(&old, t0);
    let mut b = Bench::new();
    b.tables = tables;
    b.tables.steering = Arc::new(new);
    b.pipeline = Pipeline::new(0, 6, b.counters.clone());
    let web1 = MacAddr([2, 0, 0, 0, 6, 0x99]);
    let fwa = MacAddr([2, 0, 0, 0, 2, 1]);
    let fwb = MacAddr([2, 0, 0, 0, 3, 1]);
    let fwd = MacAddr([2, 0, 0, 0, 5, 1]);
    let arriving = |src: MacAddr, dst: MacAddr, rx_if: u16| {
        let mut p = Packet::from_frame(&stream_frame(src, dst));
        p.meta.rx_if = rx_if;
        p
    };
    // On fwb, the old firewall's far leg.
    let from_old_fw = || arriving(fwa, fwb, 2);
    let run = |b: &mut Bench, p: Packet, now: Instant| {
        let neigh = b.neighbours.load();
        b.pipeline.run(
            &mut vec![p],
            &b.tables,
            &neigh,
            &b.neighbours,
            &mut b.pool,
            now,
        );
    };

    // A client's frame is decided by the new tables: to fw2.
    run(&mut b, arriving(CLIENT, R0, 0), t0);
    let to_fw2 = b.take_tx(3);
    assert_eq!(to_fw2.len(), 1, "the client's frame enters the new chain");
    assert_eq!(&to_fw2[0][..6], &fwd.0);

    // A frame the old firewall still held walks the rest of the old chain: to web1.
    run(&mut b, from_old_fw(), t0 + Duration::from_millis(5));
    let to_web1 = b.take_tx(5);
    assert_eq!(
        to_web1.len(),
        1,
        "the old firewall's frame reaches the server"
    );
    assert_eq!(&to_web1[0][..6], &web1.0);
    assert_eq!(&to_web1[0][30..34], &[10, 0, 9, 80]);
    let plane = b.tables.steering.clone();
    assert_eq!(
        plane
            .retired_forwarded
            .packets
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    let status = router::steering_status::collect(&plane).unwrap();
    assert_eq!(status.reload_grace_packets, 1);
    assert_eq!(
        status.services[0].forward_packets, 1,
        "the new tables' counters count only their own frames"
    );

    // The new firewall's frames are the new tables' own.
    let from_new_fw = arriving(MacAddr([2, 0, 0, 0, 4, 1]), fwd, 4);
    run(&mut b, from_new_fw, t0 + Duration::from_millis(6));
    assert_eq!(b.take_tx(5).len(), 1);
    assert_eq!(
        router::steering_status::collect(&plane).unwrap().services[0].forward_packets,
        2
    );

    // After the grace the old chain is gone: the frame is not steered (and has no route).
    run(
        &mut b,
        from_old_fw(),
        t0 + RELOAD_GRACE + Duration::from_millis(1),
    );
    assert!(b.take_tx(5).is_empty(), "the old chain outlived its grace");
    assert_eq!(
        plane
            .retired_forwarded
            .packets
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}
