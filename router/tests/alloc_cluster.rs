//! The cluster stage allocates nothing per packet: after a warm-up, bursts of frames to the
//! cluster MAC whose ids are owned, foreign and moving (held, then run again or handed to
//! another node) perform zero heap allocations (the hold queue is preallocated).
#![allow(clippy::unwrap_used, missing_docs)]

use cluster::PlaneState;
use router::pipeline::counters::WorkerCounters;
use router::pipeline::packet::Pool;
use router::pipeline::Pipeline;
use router::tables::cluster::ClusterPlane;
use router::tables::neighbours::Neighbours;
use router::tables::routes::RouteTable;
use router::tables::{Iface, Tables};
use router::wire::ethernet::{self, MacAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

mod common;
use common::counting_alloc::{arm, assert_counter_works, ALLOCS};

const CONF: &str = r#"
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
hold-limit = 64
[[cluster.interface]]
name = "eth0"
addresses = ["10.0.1.254"]
"#;

fn iface(id: u16) -> Iface {
    Iface {
        id,
        name: format!("eth{id}"),
        ifindex: u32::from(id) + 1,
        mac: MacAddr([2, 0, 0, 0, id as u8 + 1, 1]),
        addr: [10, 0, id as u8 + 1, 1].into(),
        prefix_len: 24,
        mtu: 1500,
        backend: conf::IoBackend::Pnet,
        redirect_in: Vec::new(),
        redirect_out: Vec::new(),
        exclude_in: false,
        wccp_caches: false,
    }
}

#[test]
fn distributing_holding_and_handing_off_allocate_nothing() {
    let ifaces = vec![iface(0), iface(1)];
    let routes = RouteTable::build(&ifaces, &[]).unwrap();
    let mut tables = Tables::new(ifaces, routes);
    let c = conf::parse_str("t.conf", CONF).unwrap().cluster.unwrap();
    let plane = Arc::new(ClusterPlane::new(&c, &tables.ifaces, None).unwrap());
    plane.set_hash_key(3).unwrap();
    tables.cluster = Some(plane.clone());
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
    pipeline.reserve_cluster_hold(plane.hold_limit());
    let mut pool = Pool::new(256);
    let frames: Vec<Vec<u8>> = (0..32u16)
        .map(|i| {
            let mut f = vec![0u8; 60];
            ethernet::write_header(
                &mut f,
                plane.mac(),
                MacAddr([2, 0, 0, 0, 1, 2]),
                ethernet::ETHERTYPE_IPV4,
            );
            router::wire::ipv4::Ipv4Repr {
                src: [10, 0, 1, 2].into(),
                dst: [10, 0, 2, 2].into(),
                protocol: 17,
                payload_len: 26,
                ttl: 64,
                ident: 7,
                tos: 0,
                dont_fragment: false,
            }
            .emit(&mut f[14..34]);
            f[34..36].copy_from_slice(&(40000 + i).to_be_bytes());
            f[36..38].copy_from_slice(&9u16.to_be_bytes());
            f[38..40].copy_from_slice(&26u16.to_be_bytes());
            f
        })
        .collect();
    let handed_to = [("eth0".to_string(), MacAddr([2, 0, 0, 0xb, 0, 1]))];
    let mut burst = Vec::with_capacity(64);
    let mut take_back = true;
    let mut run = |count: bool| {
        // Ids: a third owned, a third foreign, a third moving (held).
        for id in 0..=255u8 {
            plane.set_state(
                id,
                match id % 3 {
                    0 => PlaneState::Owned,
                    1 => PlaneState::Foreign,
                    _ => PlaneState::Releasing,
                },
            );
        }
        arm(count);
        for f in &frames {
            let mut p = pool.get_with(f);
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
        // The moves end: taken back one round, handed off the next.
        for id in (0..=255u8).filter(|i| i % 3 == 2) {
            if take_back {
                plane.set_state(id, PlaneState::Owned);
            } else {
                plane.hand_off(id, &handed_to);
            }
        }
        pipeline.poll(&tables, &neigh, &neighbours, &mut pool, Instant::now());
        for q in pipeline.tx_out.iter_mut() {
            for p in q.drain(..) {
                pool.put(p);
            }
        }
        arm(false);
        take_back = !take_back;
    };
    run(false); // warm-up: vectors reach their working capacity
    run(false);
    ALLOCS.store(0, Ordering::Relaxed);
    for _ in 0..100 {
        run(true);
    }
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        0,
        "heap allocations during 100 bursts of 32 packets to the cluster MAC"
    );
    assert_counter_works();
    let c = &counters.cluster;
    assert!(c.owned.get() > 0 && c.foreign.get() > 0, "{c:?}");
    assert!(c.released.get() > 0 && c.handed.get() > 0, "{c:?}");
    assert_eq!(c.held.get(), c.released.get() + c.handed.get());
}
