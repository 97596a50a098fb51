//! ns per packet of the forwarding pipeline on in-memory frames (no sockets): a burst of 32
//! 64-byte UDP frames from the client to the server side, copied in as the rx path does, run
//! through every stage, and drained from the tx queues.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use router::pipeline::counters::WorkerCounters;
use router::pipeline::packet::Pool;
use router::pipeline::Pipeline;
use router::tables::neighbours::Neighbours;
use router::tables::routes::RouteTable;
use router::tables::{Iface, Tables};
use router::wire::ethernet::Mac;
use std::sync::Arc;
use std::time::Instant;

fn lab() -> (Tables, Neighbours, Vec<u8>) {
    let ifaces = vec![
        Iface {
            id: 0,
            name: "eth0".into(),
            ifindex: 1,
            mac: Mac([2, 0, 0, 0, 1, 1]),
            addr: [10, 0, 1, 1].into(),
            prefix_len: 24,
            mtu: 1500,
            backend: conf::IoBackend::Pnet,
        },
        Iface {
            id: 1,
            name: "eth1".into(),
            ifindex: 2,
            mac: Mac([2, 0, 0, 0, 2, 1]),
            addr: [10, 0, 2, 1].into(),
            prefix_len: 24,
            mtu: 1500,
            backend: conf::IoBackend::Pnet,
        },
    ];
    let routes = RouteTable::build(
        &ifaces,
        &[([0, 0, 0, 0].into(), 0, [10, 0, 2, 254].into(), None)],
    )
    .unwrap();
    let neighbours = Neighbours::default();
    neighbours.learn(
        1,
        [10, 0, 2, 2].into(),
        Mac([2, 0, 0, 0, 2, 2]),
        true,
        Instant::now(),
    );
    // 64-byte frame: Ethernet 14 + IPv4 20 + UDP 8 + 18 payload (+4 FCS on the wire).
    let mut f = vec![0u8; 60];
    f[..6].copy_from_slice(&[2, 0, 0, 0, 1, 1]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 1, 2]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
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
    f[34..36].copy_from_slice(&4000u16.to_be_bytes());
    f[36..38].copy_from_slice(&9u16.to_be_bytes());
    f[38..40].copy_from_slice(&26u16.to_be_bytes());
    (Tables { ifaces, routes }, neighbours, f)
}

fn forwarding(c: &mut Criterion) {
    let (tables, neighbours, frame) = lab();
    let counters = Arc::new(WorkerCounters::new(Pipeline::stage_count(), 2));
    let mut pipeline = Pipeline::new(0, 2, counters.clone());
    let mut pool = Pool::new(256);
    let mut burst = Vec::with_capacity(32);
    let neigh = neighbours.load();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(32));
    g.bench_function("forward-burst-32x64B", |b| {
        b.iter(|| {
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
        })
    });
    g.finish();
    let tx = counters.stages[router::pipeline::StageKind::Tx as usize]
        .packets_out
        .get();
    assert!(tx > 0, "the bench frames must reach tx");
}

criterion_group!(benches, forwarding);
criterion_main!(benches);
