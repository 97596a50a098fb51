//! ns per `encapsulate_in_place` and per `decapsulate` for 64- and 1500-octet inner packets,
//! with the plain WCCP GRE + redirect header the router sends (reference §8).

// `criterion_group!`/`criterion_main!` generate public items without docs.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gre::{decapsulate, encapsulate_in_place, GreRepr, WccpRedirectRepr, WCCP_GRE_OVERHEAD};

/// Room for Ethernet + outer IPv4 in front of the GRE header, as the router reserves it.
const OUTER_HEADROOM: usize = 14 + 20;

fn inner_packet(len: usize) -> Vec<u8> {
    // An IPv4-looking packet: the content does not matter to GRE, only its length.
    let mut inner: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    inner[0] = 0x45;
    inner
}

fn bench(c: &mut Criterion) {
    let redirect = WccpRedirectRepr {
        service_id: 0,
        primary_bucket: 42,
        ..Default::default()
    };
    let mut group = c.benchmark_group("gre");
    for len in [64usize, 1500] {
        group.throughput(Throughput::Elements(1));
        let inner = inner_packet(len);
        let inner_start = OUTER_HEADROOM + WCCP_GRE_OVERHEAD;
        let mut buf = vec![0u8; inner_start + len];
        buf[inner_start..].copy_from_slice(&inner);

        group.bench_with_input(
            BenchmarkId::new("encapsulate_in_place", len),
            &len,
            |b, &len| {
                b.iter(|| {
                    encapsulate_in_place(
                        black_box(&mut buf),
                        inner_start,
                        len,
                        &GreRepr::WCCP,
                        Some(black_box(&redirect)),
                    )
                })
            },
        );

        // Encapsulate once more so the decapsulate bench sees a finished packet even when run alone.
        let start =
            encapsulate_in_place(&mut buf, inner_start, len, &GreRepr::WCCP, Some(&redirect))
                .expect("the headroom was sized for the WCCP overhead");
        group.bench_with_input(BenchmarkId::new("decapsulate", len), &len, |b, _| {
            b.iter(|| decapsulate(black_box(&buf[start..])).map(|d| d.inner.len()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
