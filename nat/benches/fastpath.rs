//! The NAT fast path (issue 14 target: at most 60 ns per packet at one worker): an established
//! flow's packet translated in place, lookup included, outbound (SNAT) and inbound (DNAT), with
//! 10,000 established sessions in the table. Each iteration first restores the packet from a
//! template (a 74-octet copy, measured alone as `copy-only` so it can be subtracted).
//! `nat-esp` does the same for raw ESP by SPI (`nat::esp`, 10,000 learnt SAs): parse, table
//! lookup and address rewrite, without the lock the router puts around the shared table.

// criterion_group!/criterion_main! generate undocumented functions.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use nat::config::{Config, Prefix, Rule};
use nat::translate::{build, parse, L4Csum};
use nat::worker::{NatWorker, Verdict};
use netwire::tcp::flags;
use std::hint::black_box;
use std::net::Ipv4Addr;

const SESSIONS: u16 = 10_000;

fn bench(c: &mut Criterion) {
    let pool = Ipv4Addr::new(192, 0, 2, 1);
    let cfg = Config {
        rules: vec![Rule {
            inside: vec![Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 8)],
            outside: 1,
            pool: vec![pool],
        }],
        workers: 1,
        max_sessions: 65536,
        ..Config::default()
    };
    let mut w = NatWorker::new(0, &cfg, 5, 0);
    w.handle_grant(0);
    let remote = (Ipv4Addr::new(198, 51, 100, 1), 443);
    let mut last = None;
    for i in 0..SESSIONS {
        let inside = (Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8), 40000);
        let mut syn = build::tcp(inside, remote, flags::SYN, 0);
        assert_eq!(
            w.outbound(&mut syn, L4Csum::Full, 1, 0, true, 0),
            Verdict::Forward
        );
        let f = parse(&syn).unwrap();
        let mut sa = build::tcp(remote, (f.src, f.sport), flags::SYN | flags::ACK, 0);
        assert_eq!(w.inbound(&mut sa, L4Csum::Full, 0), Verdict::Forward);
        last = Some((inside, (f.src, f.sport)));
    }
    let (inside, outside) = last.unwrap();
    let out = build::tcp(inside, remote, flags::ACK, 20);
    let back = build::tcp(remote, outside, flags::ACK, 20);
    let mut buf = out.clone();

    let mut g = c.benchmark_group("nat-fastpath");
    g.bench_function("copy-only", |b| {
        b.iter(|| {
            buf.copy_from_slice(black_box(&out));
            black_box(&mut buf);
        })
    });
    g.bench_function("outbound-established", |b| {
        b.iter(|| {
            buf.copy_from_slice(black_box(&out));
            black_box(w.outbound(&mut buf, L4Csum::Full, 1, 0, false, 1))
        })
    });
    g.bench_function("inbound-established", |b| {
        b.iter(|| {
            buf.copy_from_slice(black_box(&back));
            black_box(w.inbound(&mut buf, L4Csum::Full, 1))
        })
    });
    g.finish();
}

fn bench_esp(c: &mut Criterion) {
    use nat::esp::{self, EspTable, PROTO_ESP};
    use nat::translate::Side;
    use std::num::NonZeroU32;
    let (pool, remote) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 1));
    let spi = |n: u32| NonZeroU32::new(n).unwrap();
    let mut t = EspTable::new(65536, 5);
    for n in 1..=u32::from(SESSIONS) {
        let inside = Ipv4Addr::from(0x0a00_0000 + n);
        t.outbound(inside, pool, remote, spi(n), 0).unwrap();
        t.inbound(pool, remote, spi(0x10_0000 + n), 0).unwrap();
    }
    let pkt = |src, dst, spi: u32| {
        let mut l4 = [0u8; 8 + 32];
        l4[..4].copy_from_slice(&spi.to_be_bytes());
        build::ipv4(src, dst, PROTO_ESP, 64, &l4)
    };
    let n = u32::from(SESSIONS);
    let out = pkt(Ipv4Addr::from(0x0a00_0000 + n), remote, n);
    let back = pkt(remote, pool, 0x10_0000 + n);
    let mut buf = out.clone();
    let mut g = c.benchmark_group("nat-esp");
    g.bench_function("outbound-learnt", |b| {
        b.iter(|| {
            buf.copy_from_slice(black_box(&out));
            let p = esp::parse(&buf).unwrap();
            let o = t.outbound(p.src, pool, p.dst, p.spi, 1).unwrap();
            black_box(esp::rewrite(&mut buf, Side::Src, o.pool))
        })
    });
    g.bench_function("inbound-learnt", |b| {
        b.iter(|| {
            buf.copy_from_slice(black_box(&back));
            let p = esp::parse(&buf).unwrap();
            let i = t.inbound(p.dst, p.src, p.spi, 1).unwrap();
            black_box(esp::rewrite(&mut buf, Side::Dst, i.inside))
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_esp);
criterion_main!(benches);
