//! Criterion benches: decode and encode of a Squid HERE_I_AM and REDIRECT_ASSIGN (taken from
//! the captures' fuzz seeds), MD5 verification, and the bucket hash (reference §6.1).
// criterion_group!/criterion_main! generate undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use wccp::hash::{lookup, primary_bucket, FlowKey};
use wccp::security::{Password, Security};
use wccp::wire::{Message, ServiceFlags};

/// A seed datagram from `fuzz/corpus/<target>/<name>`.
fn seed(target: &str, name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn wire(c: &mut Criterion) {
    let hia = seed("wccp_here_i_am", "hia-hash-gre-std0-md5-f1");
    let ra = seed(
        "wccp_redirect_assign",
        "s76-squid64-hash-gre-std0-2caches-f5",
    );
    let hia_msg = Message::decode(&hia).expect("Squid HERE_I_AM decodes");
    let ra_msg = Message::decode(&ra).expect("Squid REDIRECT_ASSIGN decodes");
    c.bench_function("decode HERE_I_AM (160 B)", |b| {
        b.iter(|| Message::decode(black_box(&hia)))
    });
    c.bench_function("encode HERE_I_AM (160 B)", |b| {
        b.iter(|| black_box(&hia_msg).encode())
    });
    c.bench_function("decode REDIRECT_ASSIGN (340 B)", |b| {
        b.iter(|| Message::decode(black_box(&ra)))
    });
    c.bench_function("encode REDIRECT_ASSIGN (340 B)", |b| {
        b.iter(|| black_box(&ra_msg).encode())
    });
    let sec = Security::Md5(Password::new(b"secret"));
    c.bench_function("MD5 verify HERE_I_AM", |b| {
        b.iter(|| sec.verify(black_box(&hia)))
    });
}

fn hash(c: &mut Criterion) {
    let key = FlowKey::new(
        Ipv4Addr::new(172, 16, 5, 4),
        Ipv4Addr::new(93, 184, 216, 34),
        33000,
        80,
    );
    let flags = ServiceFlags(0x0f0f);
    let mut table = [0u8; 256];
    for (n, b) in table.iter_mut().enumerate() {
        *b = if n % 3 == 0 { 0x81 } else { (n % 2) as u8 };
    }
    c.bench_function("primary bucket", |b| {
        b.iter(|| primary_bucket(black_box(flags), black_box(&key)))
    });
    c.bench_function("bucket lookup with alternate", |b| {
        b.iter(|| lookup(black_box(&table), black_box(flags), black_box(&key)))
    });
}

criterion_group!(benches, wire, hash);
criterion_main!(benches);
