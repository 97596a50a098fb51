//! Forwards N bursts of 32 64-byte frames through the in-memory pipeline and exits; used with
//! `valgrind --tool=callgrind` to count instructions per packet (run with two N and take the
//! difference, which cancels start-up): `forward_loop 1000` vs `forward_loop 2000`.
#![allow(clippy::unwrap_used)]

use router::pipeline::counters::WorkerCounters;
use router::pipeline::packet::Pool;
use router::pipeline::Pipeline;
use router::tables::neighbours::Neighbours;
use router::tables::routes::RouteTable;
use router::tables::{Iface, Tables};
use router::wire::ethernet::MacAddr;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let bursts: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let iface = |id: u16, last: u8| Iface {
        id,
        name: format!("eth{id}"),
        ifindex: id as u32 + 1,
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
    let routes = RouteTable::build(
        &ifaces,
        &[([0, 0, 0, 0].into(), 0, [10, 0, 2, 254].into(), None)],
    )
    .unwrap();
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
    let mut frame = vec![0u8; 60];
    frame[..6].copy_from_slice(&[2, 0, 0, 0, 1, 1]);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
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
    let counters = Arc::new(WorkerCounters::new(Pipeline::stage_count(), 2));
    let mut pipeline = Pipeline::new(0, 2, counters);
    let mut pool = Pool::new(256);
    let mut burst = Vec::with_capacity(32);
    let now = Instant::now();
    for _ in 0..bursts {
        for _ in 0..32 {
            let mut p = pool.get_with(&frame);
            p.meta.rx_if = 0;
            burst.push(p);
        }
        pipeline.run(&mut burst, &tables, &neigh, &neighbours, &mut pool, now);
        for q in pipeline.tx_out.iter_mut() {
            for p in q.drain(..) {
                pool.put(p);
            }
        }
    }
}
