//! ns per packet of the forwarding pipeline on in-memory frames (no sockets): bursts of 32
//! 64-byte UDP frames from the client to the server side, through the whole pipeline (copied in
//! as the rx path does and drained from the tx queues), and through each stage on its own.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use router::pipeline::counters::WorkerCounters;
use router::pipeline::packet::{Packet, Pool};
use router::pipeline::{Pipeline, StageKind};
use router::tables::neighbours::Neighbours;
use router::tables::routes::RouteTable;
use router::tables::{Iface, Tables};
use router::wire::ethernet::MacAddr;
use std::sync::Arc;
use std::time::Instant;

const BURST: usize = 32;

fn lab() -> (Tables, Neighbours, Vec<u8>) {
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
        &[
            ([0, 0, 0, 0].into(), 0, [10, 0, 2, 254].into(), None),
            ([192, 168, 0, 0].into(), 16, [10, 0, 2, 253].into(), None),
            ([172, 16, 0, 0].into(), 12, [10, 0, 1, 253].into(), None),
        ],
    )
    .unwrap();
    let neighbours = Neighbours::default();
    neighbours.learn(
        1,
        [10, 0, 2, 2].into(),
        MacAddr([2, 0, 0, 0, 2, 2]),
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
    (Tables::new(ifaces, routes), neighbours, f)
}

fn whole_pipeline(c: &mut Criterion) {
    let (tables, neighbours, frame) = lab();
    let counters = Arc::new(WorkerCounters::new(Pipeline::stage_count(), 2));
    let mut pipeline = Pipeline::new(0, 2, counters.clone());
    let mut pool = Pool::new(256);
    let mut burst = Vec::with_capacity(BURST);
    let neigh = neighbours.load();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(BURST as u64));
    g.bench_function("forward-burst-32x64B", |b| {
        b.iter(|| {
            for _ in 0..BURST {
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
    // The pipeline alone: copying the frames in (the rx backend's work) and draining tx (the
    // tx backend's) happen outside the timed region; `Instant::now` twice per burst of 32 adds
    // about 1 ns per packet.
    g.bench_function("forward-burst-32x64B-pipeline-only", |b| {
        b.iter_custom(|iters| {
            timed_bursts(
                iters,
                &mut pipeline,
                &tables,
                &neigh,
                &neighbours,
                &mut pool,
                &mut burst,
                &frame,
            )
        })
    });
    g.finish();
    // Only when the bench ran (a name filter may skip it): every frame must have left at tx.
    let rx = counters.stages[StageKind::Rx as usize].packets_in.get();
    let tx = counters.stages[StageKind::Tx as usize].packets_out.get();
    assert_eq!(tx, rx, "the bench frames must all reach tx");
}

/// Each stage alone on a burst positioned just before it; `reset` (copying the frame back in,
/// which every per-stage run includes) is measured on its own so it can be subtracted.
fn per_stage(c: &mut Criterion) {
    let (tables, neighbours, frame) = lab();
    let counters = Arc::new(WorkerCounters::new(Pipeline::stage_count(), 2));
    let mut pipeline = Pipeline::new(0, 2, counters);
    let mut pool = Pool::new(256);
    let neigh = neighbours.load();
    let mut burst: Vec<Packet> = (0..BURST).map(|_| Packet::from_frame(&frame)).collect();
    let reset = |burst: &mut [Packet], kind: StageKind| {
        for p in burst.iter_mut() {
            p.frame_mut().copy_from_slice(&frame);
            p.meta.rx_if = 0;
            p.meta.tx_if = 1;
            p.meta.next_hop = [10, 0, 2, 2].into();
            p.meta.stage = kind as u8;
        }
    };
    let mut g = c.benchmark_group("stage");
    g.throughput(Throughput::Elements(BURST as u64));
    g.bench_function("reset-only", |b| {
        b.iter(|| reset(&mut burst, StageKind::Rx))
    });
    for kind in [
        StageKind::Ethernet,
        StageKind::Ipv4Input,
        StageKind::Route,
        StageKind::Neighbour,
        StageKind::Tx,
    ] {
        g.bench_function(kind.as_str(), |b| {
            b.iter(|| {
                reset(&mut burst, kind);
                let n = pipeline.run_single_stage(
                    kind,
                    &mut burst,
                    &tables,
                    &neigh,
                    &neighbours,
                    &mut pool,
                    Instant::now(),
                );
                assert_eq!(n, BURST, "{kind:?} passes every packet on");
            })
        });
    }
    g.finish();
}

/// Times `iters` bursts of `BURST` copies of `frame` through `pipeline` (the pipeline alone:
/// copying in and draining tx happen outside the timed region).
#[allow(clippy::too_many_arguments)]
fn timed_bursts(
    iters: u64,
    pipeline: &mut Pipeline,
    tables: &Tables,
    neigh: &router::tables::neighbours::NeighSnapshot,
    neighbours: &Neighbours,
    pool: &mut Pool,
    burst: &mut Vec<Packet>,
    frame: &[u8],
) -> std::time::Duration {
    let mut timed = std::time::Duration::ZERO;
    for _ in 0..iters {
        for _ in 0..BURST {
            let mut p = pool.get_with(frame);
            p.meta.rx_if = 0;
            burst.push(p);
        }
        let start = Instant::now();
        pipeline.run(burst, tables, neigh, neighbours, pool, start);
        timed += start.elapsed();
        for q in pipeline.tx_out.iter_mut() {
            for p in q.drain(..) {
                pool.put(p);
            }
        }
    }
    timed
}

/// The packet trace's cost on packets it does not record (issue 17 item 5): the pipeline-only
/// forward burst with no tracer at all (the path tests and benches take), with the workers'
/// tracer disarmed (production when nobody traces: one relaxed load per burst), and armed with
/// a filter these UDP frames never match (the filter runs on every received packet).
fn trace_cost(c: &mut Criterion) {
    use router::pipeline::trace::{TraceFilter, Tracer};
    let (tables, neighbours, frame) = lab();
    let neigh = neighbours.load();
    let mut g = c.benchmark_group("trace");
    g.throughput(Throughput::Elements(BURST as u64));
    // (name, filter armed, tracer given to the pipeline)
    let cases = [
        ("no-tracer", None, false),
        ("disarmed", None, true),
        ("armed-not-matching", Some("tcp and port 80"), true),
    ];
    for (name, armed, with_tracer) in cases {
        let counters = Arc::new(WorkerCounters::new(Pipeline::stage_count(), 2));
        let mut pipeline = Pipeline::new(0, 2, counters.clone());
        let tracer = Arc::new(Tracer::new(1));
        if with_tracer {
            pipeline.set_tracer(tracer.clone());
        }
        if let Some(f) = armed {
            tracer.arm(1000, TraceFilter::parse(f, |_| None).unwrap(), f);
        }
        let mut pool = Pool::new(256);
        let mut burst = Vec::with_capacity(BURST);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed_bursts(
                    iters,
                    &mut pipeline,
                    &tables,
                    &neigh,
                    &neighbours,
                    &mut pool,
                    &mut burst,
                    &frame,
                )
            })
        });
        assert_eq!(tracer.status().captured, 0, "{name}: nothing matches");
        assert_eq!(tracer.is_armed(), armed.is_some(), "{name}");
    }
    g.finish();
}

/// The router cluster's per-packet cost (issue 16): the forward burst sent to the cluster MAC
/// with the cluster stage on, when this node owns every id (the stage's id hash and ownership
/// check on top of forwarding) and when it owns none (the frame is received, hashed and dropped
/// as `cluster-foreign`: what every node pays for each frame another node handles, which
/// bounds how far a cluster on one shared segment scales).
fn cluster_cost(c: &mut Criterion) {
    use router::tables::cluster::ClusterPlane;
    let (mut tables, neighbours, mut frame) = lab();
    let neigh = neighbours.load();
    let conf = conf::ClusterConf {
        name: "bench".into(),
        node_id: 1,
        weight: 1,
        etcd: vec!["127.0.0.1:2379".parse().unwrap()],
        sync_local: "127.0.0.1:7788".parse().unwrap(),
        key_file: "/dev/null".into(),
        cluster_mac: [3, 0, 0x5e, 0xc1, 0, 1],
        heartbeat: conf::DEFAULT_HEARTBEAT,
        peer_timeout: conf::DEFAULT_PEER_TIMEOUT,
        lease_ttl_s: conf::DEFAULT_LEASE_TTL_S,
        hold_limit: conf::DEFAULT_HOLD_LIMIT,
        handover_timeout: conf::DEFAULT_HANDOVER_TIMEOUT,
        interfaces: vec![conf::ClusterInterface {
            name: "eth0".into(),
            addresses: vec![[10, 0, 1, 254].into()],
        }],
    };
    let plane = Arc::new(ClusterPlane::new(&conf, &tables.ifaces, None).unwrap());
    plane.set_hash_key(0x0123_4567_89ab_cdef).unwrap();
    frame[..6].copy_from_slice(&conf.cluster_mac);
    tables.cluster = Some(plane.clone());
    let mut g = c.benchmark_group("cluster");
    g.throughput(Throughput::Elements(BURST as u64));
    for (name, state) in [
        ("owned-forward", cluster::PlaneState::Owned),
        ("foreign-drop", cluster::PlaneState::Foreign),
    ] {
        for id in 0..=255u8 {
            plane.set_state(id, state);
        }
        let counters = Arc::new(WorkerCounters::new(Pipeline::stage_count(), 2));
        let mut pipeline = Pipeline::new(0, 2, counters.clone());
        let mut pool = Pool::new(256);
        let mut burst = Vec::with_capacity(BURST);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                timed_bursts(
                    iters,
                    &mut pipeline,
                    &tables,
                    &neigh,
                    &neighbours,
                    &mut pool,
                    &mut burst,
                    &frame,
                )
            })
        });
        // Only when the bench ran: every frame took the path its name says.
        let c = &counters.cluster;
        let (owned, foreign) = (c.owned.get(), c.foreign.get());
        match state {
            cluster::PlaneState::Owned => assert_eq!(foreign, 0, "{name}"),
            _ => assert_eq!(owned, 0, "{name}"),
        }
    }
    g.finish();
}

criterion_group!(benches, whole_pipeline, per_stage, trace_cost, cluster_cost);
criterion_main!(benches);
