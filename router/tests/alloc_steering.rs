//! The steering path allocates nothing per packet: after a warm-up burst, bursts of service
//! packets steered to a NAT device (address and port rewrite, DSCP) with a copy to a
//! promiscuous device each perform zero heap allocations.
#![allow(clippy::unwrap_used, missing_docs)]

use router::pipeline::counters::WorkerCounters;
use router::pipeline::packet::Pool;
use router::pipeline::{Pipeline, StageKind};
use router::tables::neighbours::Neighbours;
use router::tables::routes::RouteTable;
use router::tables::steer::SteeringPlane;
use router::tables::{Iface, Tables};
use router::wire::ethernet::{self, MacAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

mod common;
use common::counting_alloc::{arm, assert_counter_works, ALLOCS};

#[test]
fn steering_a_burst_with_copies_and_nat_allocates_nothing() {
    let iface = |id: u16, last: u8| Iface {
        id,
        name: format!("eth{id}"),
        ifindex: u32::from(id) + 1,
        mac: MacAddr([2, 0, 0, 0, last, 1]),
        addr: [10, 0, last, 1].into(),
        prefix_len: 24,
        mtu: 1500,
        backend: conf::IoBackend::Pnet,
        redirect_in: Vec::new(),
        redirect_out: Vec::new(),
        exclude_in: false,
        wccp_caches: true,
    };
    let ifaces = vec![iface(0, 1), iface(1, 2)];
    let routes = RouteTable::build(&ifaces, &[]).unwrap();
    let mut tables = Tables::new(ifaces, routes);
    let text = r#"
[[interface]]
name = "eth0"
address = "10.0.1.1/24"
[[interface]]
name = "eth1"
address = "10.0.2.1/24"
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
    let conf = conf::parse_str("alloc.conf", text).unwrap();
    tables.steering = Arc::new(SteeringPlane::build(&conf.steering.definitions).unwrap());
    let neighbours = Neighbours::default();
    neighbours.learn(
        1,
        [10, 0, 2, 2].into(),
        MacAddr([2, 0, 0, 0, 2, 2]),
        true,
        Instant::now(),
    );
    let neigh = neighbours.load();
    let counters = Arc::new(WorkerCounters::new(Pipeline::stage_count(), 2));
    let mut pipeline = Pipeline::new(0, 2, counters.clone());
    let mut pool = Pool::new(256);
    let mut frame = vec![0u8; 60];
    ethernet::write_header(
        &mut frame,
        MacAddr([2, 0, 0, 0, 1, 1]),
        MacAddr([2, 0, 0, 0, 1, 2]),
        ethernet::ETHERTYPE_IPV4,
    );
    router::wire::ipv4::Ipv4Repr {
        src: [10, 0, 1, 2].into(),
        dst: [10, 0, 9, 80].into(),
        protocol: 17,
        payload_len: 26,
        ttl: 64,
        ident: 7,
        tos: 0,
        dont_fragment: false,
    }
    .emit(&mut frame[14..34]);
    frame[34..36].copy_from_slice(&40000u16.to_be_bytes());
    frame[36..38].copy_from_slice(&5000u16.to_be_bytes());
    frame[38..40].copy_from_slice(&26u16.to_be_bytes());
    let mut burst = Vec::with_capacity(64);
    let mut sent = Vec::new();
    let mut run = |count: bool, keep: bool| {
        arm(count);
        for _ in 0..32 {
            let mut p = pool.get_with(&frame);
            p.meta.rx_if = 0;
            burst.push(p);
        }
        pipeline.run(
            &mut burst,
            &tables,
            &neigh,
            &neighbours,
            &mut pool,
            Instant::now(),
        );
        arm(false);
        for q in pipeline.tx_out.iter_mut() {
            for p in q.drain(..) {
                if keep {
                    sent.push(p.frame().to_vec());
                }
                pool.put(p);
            }
        }
    };
    run(false, true); // warm-up: vectors reach their working capacity
    ALLOCS.store(0, Ordering::Relaxed);
    for _ in 0..100 {
        run(true, false);
    }
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        0,
        "heap allocations during 100 steered bursts of 32 packets"
    );
    assert_counter_works();
    assert_eq!(
        counters.stages[StageKind::Tx as usize].packets_out.get(),
        101 * 32 * 2,
        "every packet went to the server, and a copy to the IDS"
    );
    // What left in the warm-up burst: 32 copies (unchanged, to the IDS MAC) and 32 packets
    // rewritten toward the server (10.0.2.2:6000, DSCP 46, TTL 63).
    let to_ids: Vec<_> = sent
        .iter()
        .filter(|f| f[..6] == [2, 0, 0, 0, 2, 0x99])
        .collect();
    let to_srv: Vec<_> = sent
        .iter()
        .filter(|f| f[..6] == [2, 0, 0, 0, 2, 2])
        .collect();
    assert_eq!((to_ids.len(), to_srv.len()), (32, 32));
    assert_eq!(&to_ids[0][30..34], &[10, 0, 9, 80]);
    assert_eq!(&to_srv[0][30..34], &[10, 0, 2, 2]);
    assert_eq!(u16::from_be_bytes([to_srv[0][36], to_srv[0][37]]), 6000);
    assert_eq!(to_srv[0][15] >> 2, 46);
    assert_eq!(to_srv[0][22], 63);
    assert_eq!(router::wire::checksum::checksum(&to_srv[0][14..34]), 0);
}
