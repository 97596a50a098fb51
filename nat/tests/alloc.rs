//! Established flows allocate nothing: after set-up, translating packets both ways, running
//! expiry and draining the mirror queue perform zero heap allocations on the worker's thread.
//! Its own binary, because it installs a counting global allocator.
#![allow(clippy::unwrap_used, missing_docs)]

use nat::config::{Config, Prefix, Rule};
use nat::translate::{build, L4Csum};
use nat::worker::{NatWorker, Verdict};
use netwire::tcp::flags;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

struct CountingAlloc;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    // Const-initialised without a destructor: reading it never allocates.
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call goes to the system allocator unchanged; this only counts.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

#[test]
fn established_flows_allocate_nothing() {
    // The counter is live: one armed allocation counts.
    ARMED.with(|a| a.set(true));
    drop(std::hint::black_box(Box::new([0u8; 64])));
    ARMED.with(|a| a.set(false));
    assert_eq!(ALLOCS.swap(0, Ordering::Relaxed), 1);

    let pool = Ipv4Addr::new(192, 0, 2, 1);
    let cfg = Config {
        rules: vec![Rule {
            inside: vec![Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 8)],
            outside: 1,
            pool: vec![pool],
        }],
        workers: 2,
        max_sessions: 1024,
        ..Config::default()
    };
    let mut w = NatWorker::new(0, &cfg, 5, 0);
    w.handle_grant(0);
    let remote = (Ipv4Addr::new(198, 51, 100, 1), 443);
    let mut flows = Vec::new();
    for i in 0..100u16 {
        let inside = (Ipv4Addr::new(10, 0, 0, 1 + (i % 7) as u8), 30000 + i);
        let mut syn = build::tcp(inside, remote, flags::SYN, 0);
        assert_eq!(
            w.outbound(&mut syn, L4Csum::Full, 1, 0, true, 0),
            Verdict::Forward
        );
        let f = nat::translate::parse(&syn).unwrap();
        let mut sa = build::tcp(remote, (f.src, f.sport), flags::SYN | flags::ACK, 0);
        assert_eq!(w.inbound(&mut sa, L4Csum::Full, 0), Verdict::Forward);
        let out = build::tcp(inside, remote, flags::ACK, 100);
        let back = build::tcp(remote, (f.src, f.sport), flags::ACK, 100);
        flows.push((out, back));
    }
    let mut udp = build::udp((Ipv4Addr::new(10, 0, 0, 9), 5353), remote, 40, false);
    w.outbound(&mut udp, L4Csum::Full, 1, 0, true, 0);
    let udp_out = build::udp((Ipv4Addr::new(10, 0, 0, 9), 5353), remote, 40, false);
    let (mut events, mut batch) = (Vec::with_capacity(64), Vec::with_capacity(4096));
    w.poll_mirror(&mut batch, usize::MAX);
    batch.clear();
    let mut buf = vec![0u8; 2048];

    ARMED.with(|a| a.set(true));
    // Past 1024 s, so the wheel re-files every session at least once.
    for now in 1..1100u32 {
        for (out, back) in &flows {
            let b = &mut buf[..out.len()];
            b.copy_from_slice(out);
            assert_eq!(
                w.outbound(b, L4Csum::Full, 1, 0, false, now),
                Verdict::Forward
            );
            let b = &mut buf[..back.len()];
            b.copy_from_slice(back);
            assert_eq!(w.inbound(b, L4Csum::Full, now), Verdict::Forward);
        }
        let b = &mut buf[..udp_out.len()];
        b.copy_from_slice(&udp_out);
        w.outbound(b, L4Csum::Full, 1, 0, false, now);
        w.poll_expired(now, 256, &mut events);
        w.poll_mirror(&mut batch, usize::MAX);
        batch.clear();
    }
    ARMED.with(|a| a.set(false));
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        0,
        "allocations on established flows"
    );
    assert_eq!(w.counters.out_translated, 100 + 1 + 1099 * 101);

    // ESP by SPI: learnt SAs both ways, plus one new SA a second while old ones expire.
    let mut t = nat::esp::EspTable::new(64, 5);
    let spi = |n: u32| std::num::NonZeroU32::new(n).unwrap();
    let esp = |src, dst, spi: u32| {
        let mut l4 = [0u8; 40];
        l4[..4].copy_from_slice(&spi.to_be_bytes());
        build::ipv4(src, dst, nat::esp::PROTO_ESP, 64, &l4)
    };
    let (inside, r) = (Ipv4Addr::new(10, 0, 0, 3), remote.0);
    let mut sas = Vec::new();
    for n in 1..=8u32 {
        t.outbound(inside, pool, r, spi(n), 0).unwrap();
        t.inbound(pool, r, spi(1000 + n), 0).unwrap();
        sas.push((esp(inside, r, n), esp(r, pool, 1000 + n)));
    }
    let mut gone = Vec::with_capacity(64);
    ARMED.with(|a| a.set(true));
    for now in 1..3000u32 {
        for (out, back) in &sas {
            let b = &mut buf[..out.len()];
            b.copy_from_slice(out);
            let p = nat::esp::parse(b).unwrap();
            let o = t.outbound(p.src, pool, p.dst, p.spi, now).unwrap();
            nat::esp::rewrite(b, nat::translate::Side::Src, o.pool).unwrap();
            let b = &mut buf[..back.len()];
            b.copy_from_slice(back);
            let p = nat::esp::parse(b).unwrap();
            let i = t.inbound(p.dst, p.src, p.spi, now).unwrap();
            nat::esp::rewrite(b, nat::translate::Side::Dst, i.inside).unwrap();
        }
        t.outbound(inside, pool, r, spi(10_000 + now), now).unwrap();
        t.inbound(pool, r, spi(20_000 + now), now).unwrap();
        t.expire(now, 30, 8, &mut gone);
        gone.clear();
    }
    ARMED.with(|a| a.set(false));
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        0,
        "allocations on ESP sessions"
    );
    assert!(t.counters.expired > 2900, "{:?}", t.counters);
}
