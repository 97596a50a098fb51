//! A deterministic simulation: N workers, random flows sending both ways, workers killed and
//! restarted at random. Asserts that no session is lost (every live flow keeps its outside
//! endpoint and its replies still reach the inside host), that no packet reaches a worker that
//! does not own its VID, and that the switch processor sees set-up requests only.

use crate::lab::{config, Lab};
use nat::dispatch::Dispatch;
use nat::hash::SplitMix64;
use nat::translate::{build, parse};
use netwire::tcp::flags;
use std::net::Ipv4Addr;

struct Flow {
    tcp: bool,
    inside: (Ipv4Addr, u16),
    remote: (Ipv4Addr, u16),
    outside: (Ipv4Addr, u16),
    /// When a packet last refreshed the session.
    last: u32,
}

fn run(seed: u64, workers: u16, steps: usize) -> (usize, usize, usize) {
    run_with(seed, config(workers), steps, 1).0
}

/// Runs the simulation on `cfg`; returns (kills, restarts, handbacks) and the extra VIDs Only one in `kill_one_in` kill draws kills a worker.
fn run_with(
    seed: u64,
    cfg: nat::config::Config,
    steps: usize,
    kill_one_in: u64,
) -> ((usize, usize, usize), usize) {
    let workers = cfg.workers;
    let mut rng = SplitMix64::new(seed);
    let mut lab = Lab::new(cfg);
    let mut flows: Vec<Flow> = Vec::new();
    let (mut kills, mut restarts, mut packets, mut expired) = (0, 0, 0u64, 0);
    for step in 0..steps {
        match rng.below(100) {
            // A new flow.
            0..=14 => {
                let tcp = rng.below(2) == 0;
                let inside = (
                    Ipv4Addr::new(10, 0, rng.below(4) as u8, 1 + rng.below(50) as u8),
                    1024 + rng.below(60000) as u16,
                );
                let remote = (Ipv4Addr::new(198, 51, 100, 1 + rng.below(20) as u8), 443);
                let mut p = if tcp {
                    build::tcp(inside, remote, flags::SYN, 0)
                } else {
                    build::udp(inside, remote, 16, false)
                };
                let o = lab.send_out(&mut p);
                packets += 1;
                if !o.forwarded() {
                    // A TCP flow reusing an endpoint that has a UDP twin is fine; only a
                    // duplicate 5-tuple is skipped.
                    continue;
                }
                let f = parse(&p).unwrap();
                if flows
                    .iter()
                    .any(|x| x.tcp == tcp && x.inside == inside && x.remote == remote)
                {
                    continue;
                }
                if tcp {
                    let mut sa = build::tcp(remote, (f.src, f.sport), flags::SYN | flags::ACK, 0);
                    assert!(
                        lab.send_in(&mut sa).forwarded(),
                        "seed {seed} step {step}: SYN-ACK"
                    );
                }
                flows.push(Flow {
                    tcp,
                    inside,
                    remote,
                    outside: (f.src, f.sport),
                    last: lab.now,
                });
            }
            // Kill a worker, if another survives to take over.
            15..=17 => {
                let live: Vec<u16> = (0..workers)
                    .filter(|&w| lab.workers[usize::from(w)].is_some())
                    .collect();
                if live.len() >= 2 && rng.below(kill_one_in) == 0 {
                    let w = live[rng.below(live.len() as u64) as usize];
                    lab.kill(w);
                    kills += 1;
                }
            }
            // Restart a dead worker.
            18..=22 => {
                let dead: Vec<u16> = (0..workers)
                    .filter(|&w| lab.workers[usize::from(w)].is_none())
                    .collect();
                if !dead.is_empty() {
                    lab.start(dead[rng.below(dead.len() as u64) as usize]);
                    restarts += 1;
                }
            }
            // Time passes; flows idle past their timeout leave the oracle (they may expire).
            23..=25 => {
                lab.advance(1 + rng.below(60) as u32);
                let now = lab.now;
                let t = lab.cfg.timeouts;
                let before = flows.len();
                flows.retain(|f| now < f.last + if f.tcp { t.tcp_established } else { t.udp });
                expired += before - flows.len();
            }
            // Traffic on an existing flow, either way.
            _ => {
                if flows.is_empty() {
                    continue;
                }
                let i = rng.below(flows.len() as u64) as usize;
                flows[i].last = lab.now;
                let f = &flows[i];
                packets += 1;
                if rng.below(2) == 0 {
                    let mut p = if f.tcp {
                        build::tcp(f.inside, f.remote, flags::ACK, 8)
                    } else {
                        build::udp(f.inside, f.remote, 8, false)
                    };
                    let o = lab.send_out(&mut p);
                    assert!(
                        matches!(o.dispatch, Dispatch::ToWorker { .. }),
                        "seed {seed} step {step}: {o:?}"
                    );
                    assert!(
                        o.forwarded(),
                        "seed {seed} step {step}: session lost outbound {o:?}"
                    );
                    let g = parse(&p).unwrap();
                    assert_eq!(
                        (g.src, g.sport),
                        f.outside,
                        "seed {seed} step {step}: mapping changed"
                    );
                } else {
                    let mut p = if f.tcp {
                        build::tcp(f.remote, f.outside, flags::ACK, 8)
                    } else {
                        build::udp(f.remote, f.outside, 8, false)
                    };
                    let o = lab.send_in(&mut p);
                    assert!(
                        o.forwarded(),
                        "seed {seed} step {step}: session lost inbound {o:?}"
                    );
                    let g = parse(&p).unwrap();
                    assert_eq!((g.dst, g.dport), f.inside, "seed {seed} step {step}");
                }
            }
        }
        assert_eq!(lab.misdelivered(), 0, "seed {seed} step {step}");
        assert_eq!(lab.lost_vids, 0, "seed {seed} step {step}");
    }
    assert_eq!(lab.sp.counters.not_setup, 0);
    // Something actually happened.
    assert!(
        (kill_one_in > 1 || kills > 0 && restarts > 0) && packets > 100,
        "seed {seed}: {kills} kills, {restarts} restarts"
    );
    let overflow: u64 = lab
        .workers
        .iter()
        .flatten()
        .map(|w| w.mirror_overflow())
        .sum();
    assert_eq!(overflow, 0);
    let adopted: u64 = lab
        .workers
        .iter()
        .flatten()
        .map(|w| w.table().counters.adopted)
        .sum();
    let exhausted: u64 = lab
        .workers
        .iter()
        .flatten()
        .map(|w| w.counters.exhausted)
        .sum();
    let gone: u64 = lab
        .workers
        .iter()
        .flatten()
        .map(|w| w.table().counters.expired)
        .sum();
    eprintln!("seed {seed}: {workers} workers, {} flows live, {expired} idled out ({gone} sessions expired on live workers), {packets} packets, {kills} kills, {restarts} restarts, {} handbacks, {} extra VIDs ({exhausted} set-ups found no port), {adopted} sessions adopted by live workers", flows.len(), lab.handbacks, lab.extra_vids);
    ((kills, restarts, lab.handbacks), lab.extra_vids)
}

#[test]
fn full_blocks_get_extra_vids_without_losing_sessions() {
    // Small blocks (16 ports per VID on each of 2 pool addresses): workers fill their
    // home blocks and ask for extra VIDs; in half the runs they also die (rarely) and restart
    // while they hold them. Every session keeps reaching one worker and nothing is lost.
    let (mut extra, mut kills) = (0, 0);
    for seed in 0..8 {
        let workers = 2 + (seed % 2) as u16;
        let mut cfg = config(workers);
        cfg.port_min = 1024;
        cfg.port_max = 1024 + 32 * workers - 1;
        let kill_one_in = if seed < 4 { u64::MAX } else { 25 };
        let ((k, _, _), e) = run_with(100 + seed, cfg, 1500, kill_one_in);
        extra += e;
        kills += k;
    }
    assert!(extra > 0, "no worker ever asked for an extra VID");
    assert!(kills > 0, "no worker died while holding extra VIDs");
}

#[test]
fn workers_die_and_restart_without_losing_sessions() {
    let mut handbacks = 0;
    for seed in 0..12 {
        handbacks += run(seed, 2 + (seed % 4) as u16, 2000).2;
    }
    assert!(handbacks > 0, "the runs never ran out of free VIDs");
}
