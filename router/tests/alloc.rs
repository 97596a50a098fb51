//! The forwarding path allocates nothing per packet: after a warm-up burst, running bursts of
//! frames through the whole pipeline and draining the tx queues performs zero heap allocations.
#![allow(clippy::unwrap_used, missing_docs)]

use router::pipeline::counters::WorkerCounters;
use router::pipeline::packet::Pool;
use router::pipeline::{Pipeline, StageKind};
use router::tables::neighbours::Neighbours;
use router::tables::routes::RouteTable;
use router::tables::{Iface, Tables};
use router::wire::ethernet::{self, MacAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

mod common;
use common::counting_alloc::{arm, assert_counter_works, ALLOCS};

#[test]
fn forwarding_a_burst_allocates_nothing() {
    let ifaces = vec![
        Iface {
            id: 0,
            name: "eth0".into(),
            ifindex: 1,
            mac: MacAddr([2, 0, 0, 0, 1, 1]),
            addr: [10, 0, 1, 1].into(),
            prefix_len: 24,
            mtu: 1500,
            backend: conf::IoBackend::Pnet,
            redirect_in: Vec::new(),
            redirect_out: Vec::new(),
            exclude_in: false,
            wccp_caches: true,
        },
        Iface {
            id: 1,
            name: "eth1".into(),
            ifindex: 2,
            mac: MacAddr([2, 0, 0, 0, 2, 1]),
            addr: [10, 0, 2, 1].into(),
            prefix_len: 24,
            mtu: 1500,
            backend: conf::IoBackend::Pnet,
            redirect_in: Vec::new(),
            redirect_out: Vec::new(),
            exclude_in: false,
            wccp_caches: true,
        },
    ];
    let routes = RouteTable::build(&ifaces, &[]).unwrap();
    let tables = Tables::new(ifaces, routes);
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
        dst: [10, 0, 2, 2].into(),
        protocol: 17,
        payload_len: 26,
        ttl: 64,
        ident: 7,
        tos: 0,
        dont_fragment: false,
    }
    .emit(&mut frame[14..34]);
    let mut burst = Vec::with_capacity(64);
    let mut run = |count: bool| {
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
        for q in pipeline.tx_out.iter_mut() {
            for p in q.drain(..) {
                pool.put(p);
            }
        }
        arm(false);
    };
    run(false); // warm-up: vectors reach their working capacity
    ALLOCS.store(0, Ordering::Relaxed);
    for _ in 0..100 {
        run(true);
    }
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        0,
        "heap allocations during 100 bursts of 32 packets"
    );
    assert_counter_works();
    assert_eq!(
        counters.stages[StageKind::Tx as usize].packets_out.get(),
        101 * 32,
        "every packet was forwarded"
    );
}
