//! Deterministic simulation of an active and a standby over a lossy, duplicating, reordering
//! link (seeded), with 10,000 mixed upserts and deletes: the standby's replica must end equal
//! to the active's state, digest for digest.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hasync::{
    frame_into, Config, Deframer, Digests, Endpoint, Event, Record, RecordRef, Reject, TableId,
};

const KEY: &[u8] = b"sync-key-for-the-simulation-0001";
const TABLES: [TableId; 3] = [TableId::NAT_SESSION, TableId::AFFINITY, TableId::WCCP_GROUP];

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True with probability `p` (in percent).
    fn pct(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

#[derive(Clone, Copy)]
struct LinkCfg {
    loss: u64,
    dup: u64,
    jitter_ms: u64,
}

/// One direction: messages in flight with their delivery time.
struct Link {
    cfg: LinkCfg,
    in_flight: Vec<(u64, u64, Vec<u8>)>,
    order: u64,
}

impl Link {
    fn new(cfg: LinkCfg) -> Link {
        Link {
            cfg,
            in_flight: Vec::new(),
            order: 0,
        }
    }

    fn send(&mut self, rng: &mut Rng, now_ms: u64, msg: &[u8]) {
        if rng.pct(self.cfg.loss) {
            return;
        }
        let copies = if rng.pct(self.cfg.dup) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = 1 + rng.below(self.cfg.jitter_ms + 1);
            self.order += 1;
            self.in_flight
                .push((now_ms + delay, self.order, msg.to_vec()));
        }
    }

    fn due(&mut self, now_ms: u64) -> Vec<Vec<u8>> {
        let mut due: Vec<_> = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].0 <= now_ms {
                due.push(self.in_flight.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by_key(|&(t, o, _)| (t, o));
        due.into_iter().map(|(_, _, m)| m).collect()
    }
}

/// The active's own state (what the router holds), and what it publishes.
#[derive(Default, Clone)]
struct State(HashMap<(TableId, Vec<u8>), Vec<u8>>);

impl State {
    fn digests(&self) -> Digests {
        Digests::of(
            self.0
                .iter()
                .map(|((t, k), v)| (*t, k.as_slice(), v.as_slice())),
        )
    }
    fn snapshot(&self) -> Vec<Record> {
        self.0
            .iter()
            .map(|((t, k), v)| Record::upsert(*t, k.clone(), v.clone()))
            .collect()
    }
    /// One random operation, applied here and published on every endpoint in `to`.
    fn random_op(&mut self, rng: &mut Rng, to: &mut [&mut Endpoint]) {
        let table = TABLES[rng.below(3) as usize];
        let key = (rng.below(4000) as u32).to_be_bytes().to_vec();
        if rng.pct(30) {
            self.0.remove(&(table, key.clone()));
            for ep in to.iter_mut() {
                ep.publish(RecordRef::delete(table, &key)).unwrap();
            }
        } else {
            let len = 8 + rng.below(60) as usize;
            let value: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            for ep in to.iter_mut() {
                ep.publish(RecordRef::upsert(table, &key, &value)).unwrap();
            }
            self.0.insert((table, key), value);
        }
    }
}

fn endpoint(local: u32, peer: u32, epoch: u64, now: Instant) -> Endpoint {
    Endpoint::new(Config::new(local, peer, epoch, KEY), now).unwrap()
}

/// Ticks an endpoint if due and sends what it has.
fn service(ep: &mut Endpoint, link: &mut Link, rng: &mut Rng, now: Instant, now_ms: u64) {
    if ep.next_deadline().is_some_and(|d| d <= now) {
        ep.on_tick(now);
    }
    let mut buf = Vec::new();
    while ep.poll_transmit(now, &mut buf) {
        link.send(rng, now_ms, &buf);
    }
}

struct Outcome {
    active: hasync::Status,
    standby: hasync::Status,
    max_progress_sent: u64,
    max_progress_received: u64,
}

/// Runs `ops` operations on the active (in bursts), with the standby joining after `join_after`
/// operations; returns once the standby's replica equals the state (or panics at the limit).
fn run(seed: u64, link: LinkCfg, ops: usize, join_after: usize) -> Outcome {
    let mut rng = Rng(seed);
    let start = Instant::now();
    let mut a = endpoint(1, 2, 1000, start);
    let mut b: Option<Endpoint> = None;
    let mut ab = Link::new(link);
    let mut ba = Link::new(link);
    let mut state = State::default();
    let (mut done, mut max_sent, mut max_received) = (0, 0, 0);
    for ms in 0..300_000u64 {
        let now = start + Duration::from_millis(ms);
        if done < ops {
            for _ in 0..1 + rng.below(8) {
                if done < ops {
                    state.random_op(&mut rng, &mut [&mut a]);
                    done += 1;
                }
            }
        }
        if b.is_none() && done >= join_after {
            b = Some(endpoint(2, 1, 2000, now));
        }
        for m in ba.due(ms) {
            let _ = a.handle(&m, now);
        }
        if let Some(b) = b.as_mut() {
            for m in ab.due(ms) {
                let _ = b.handle(&m, now);
            }
        } else {
            ab.due(ms);
        }
        while let Some(ev) = a.poll_event() {
            if let Event::SnapshotNeeded { .. } = ev {
                a.start_resync(state.snapshot(), now);
            }
        }
        service(&mut a, &mut ab, &mut rng, now, ms);
        if let Some(b) = b.as_mut() {
            while b.poll_event().is_some() {}
            service(b, &mut ba, &mut rng, now, ms);
            let (sa, sb) = (a.status(), b.status());
            if let Some(p) = sa.resync_sending {
                max_sent = max_sent.max(p.done);
                assert!(p.done <= p.total);
            }
            if let Some(p) = sb.resync_receiving {
                max_received = max_received.max(p.done);
            }
            if done == ops
                && b.in_sync()
                && sa.unacked == 0
                && b.replica().digests() == state.digests()
            {
                return Outcome {
                    active: sa,
                    standby: sb,
                    max_progress_sent: max_sent,
                    max_progress_received: max_received,
                };
            }
        }
    }
    let b = b.unwrap();
    panic!(
        "no convergence: active {:#?}\nstandby {:#?}",
        a.status(),
        b.status()
    );
}

#[test]
fn converges_under_5_percent_loss() {
    let out = run(
        1,
        LinkCfg {
            loss: 5,
            dup: 0,
            jitter_ms: 0,
        },
        10_000,
        0,
    );
    assert!(
        out.active.counters.resends > 0,
        "loss must have caused resends"
    );
    assert!(out.standby.counters.nacks_sent > 0);
    assert_eq!(out.standby.rejects.total(), 0);
}

#[test]
fn converges_under_20_percent_loss_duplication_reordering_and_late_join() {
    let out = run(
        2,
        LinkCfg {
            loss: 20,
            dup: 5,
            jitter_ms: 15,
        },
        10_000,
        4_000,
    );
    assert!(out.active.counters.resends > 0);
    assert!(out.standby.counters.duplicates > 0 || out.standby.rejects.replayed > 0);
    // The standby joined mid-stream: it got a bulk resync, with progress visible on both sides.
    assert!(out.standby.counters.resyncs_completed >= 1);
    assert!(out.max_progress_sent > 0 && out.max_progress_received > 0);
    // Only network duplicates were refused, as replays; nothing forged.
    assert_eq!(out.standby.rejects.forged, 0);
    assert_eq!(out.standby.rejects.malformed, 0);
}

#[test]
fn converges_for_several_seeds() {
    for seed in 10..14 {
        run(
            seed,
            LinkCfg {
                loss: 10,
                dup: 2,
                jitter_ms: 5,
            },
            2_000,
            (seed as usize % 3) * 500,
        );
    }
}

/// Forged (flipped bit, wrong key) and replayed messages injected into the active→standby link
/// are refused and counted exactly, and the replica still converges.
#[test]
fn forged_and_replayed_messages_are_rejected_and_counted() {
    let mut rng = Rng(77);
    let start = Instant::now();
    let mut a = endpoint(1, 2, 1000, start);
    let mut b = endpoint(2, 1, 2000, start);
    let mut forger = Endpoint::new(Config::new(1, 2, 5000, [9u8; 32]), start).unwrap();
    let cfg = LinkCfg {
        loss: 5,
        dup: 0,
        jitter_ms: 0,
    };
    let (mut ab, mut ba) = (Link::new(cfg), Link::new(cfg));
    let mut state = State::default();
    let (mut done, mut forged, mut replays) = (0, 0u64, 0u64);
    let mut converged = false;
    let mut accepted: Vec<Vec<u8>> = Vec::new();
    for ms in 0..60_000u64 {
        let now = start + Duration::from_millis(ms);
        for _ in 0..4 {
            if done < 3000 {
                state.random_op(&mut rng, &mut [&mut a]);
                done += 1;
            }
        }
        for m in ba.due(ms) {
            let _ = a.handle(&m, now);
        }
        for m in ab.due(ms) {
            if b.handle(&m, now).is_ok() && accepted.len() < 5000 {
                accepted.push(m);
            }
        }
        // The attacker: every 2 ms one injection of a message the standby already accepted
        // (a captured message the link lost would rightly be accepted on its first arrival).
        if ms % 2 == 1 && !accepted.is_empty() {
            let pick = accepted[rng.below(accepted.len() as u64) as usize].clone();
            match (ms / 2) % 3 {
                0 => {
                    let mut bad = pick;
                    let i = rng.below(bad.len() as u64) as usize;
                    bad[i.max(8)] ^= 1 << rng.below(8); // past magic/version/kind/flags/taglen
                    assert!(matches!(
                        b.handle(&bad, now),
                        Err(Reject::Forged) | Err(Reject::WrongSender) | Err(Reject::Malformed)
                    ));
                    forged += 1;
                }
                1 => {
                    let r = b.handle(&pick, now);
                    assert!(
                        matches!(r, Err(Reject::Replayed) | Err(Reject::TooOld)),
                        "{r:?}"
                    );
                    replays += 1;
                }
                _ => {
                    forger
                        .publish(RecordRef::upsert(TABLES[0], b"evil", b"x"))
                        .unwrap();
                    let mut buf = Vec::new();
                    while forger.poll_transmit(now, &mut buf) {
                        assert_eq!(b.handle(&buf, now), Err(Reject::Forged));
                        forged += 1;
                    }
                }
            }
        }
        while let Some(ev) = a.poll_event() {
            if let Event::SnapshotNeeded { .. } = ev {
                a.start_resync(state.snapshot(), now);
            }
        }
        while b.poll_event().is_some() {}
        service(&mut a, &mut ab, &mut rng, now, ms);
        service(&mut b, &mut ba, &mut rng, now, ms);
        if done == 3000 && b.in_sync() && b.replica().digests() == state.digests() {
            converged = true;
            break;
        }
    }
    assert!(converged, "{:#?}", b.status());
    let r = b.status().rejects;
    assert!(forged >= 100 && replays >= 100, "{forged} {replays}");
    assert_eq!(r.replayed + r.too_old, replays);
    assert_eq!(r.forged + r.wrong_sender + r.malformed, forged);
    assert_eq!(r.stale_epoch, 0);
    assert_eq!(b.replica().get(TABLES[0], b"evil"), None);
}

/// The active restarts (new epoch, different state): the standby refuses the old run's late
/// messages as stale, resyncs, and ends exact, stale entries swept.
#[test]
fn sender_restart_resyncs_to_the_new_state() {
    let mut rng = Rng(5);
    let start = Instant::now();
    let cfg = LinkCfg {
        loss: 5,
        dup: 0,
        jitter_ms: 30,
    };
    let (mut ab, mut ba) = (Link::new(cfg), Link::new(cfg));
    let mut a = endpoint(1, 2, 1000, start);
    let mut b = endpoint(2, 1, 2000, start);
    let mut state = State::default();
    let mut restarted = false;
    let mut stale_seen = false;
    for ms in 0..120_000u64 {
        let now = start + Duration::from_millis(ms);
        if ms < 1000 {
            for _ in 0..3 {
                state.random_op(&mut rng, &mut [&mut a]);
            }
        }
        if ms == 1000 {
            // Restart: a new process with a larger epoch and a state that lost some entries
            // and changed others.
            a = endpoint(1, 2, 1001, now);
            restarted = true;
            let keys: Vec<_> = state.0.keys().cloned().collect();
            for (i, k) in keys.into_iter().enumerate() {
                if i % 3 == 0 {
                    state.0.remove(&k);
                } else if i % 3 == 1 {
                    state.0.insert(k, b"after restart".to_vec());
                }
            }
        }
        if (1000..1500).contains(&ms) {
            state.random_op(&mut rng, &mut [&mut a]);
        }
        for m in ba.due(ms) {
            let _ = a.handle(&m, now);
        }
        for m in ab.due(ms) {
            if b.handle(&m, now) == Err(Reject::StaleEpoch) {
                stale_seen = true;
            }
        }
        while let Some(ev) = a.poll_event() {
            if let Event::SnapshotNeeded { .. } = ev {
                a.start_resync(state.snapshot(), now);
            }
        }
        while b.poll_event().is_some() {}
        service(&mut a, &mut ab, &mut rng, now, ms);
        service(&mut b, &mut ba, &mut rng, now, ms);
        if ms > 1500
            && restarted
            && b.in_sync()
            && b.status().peer_epoch == Some(1001)
            && b.replica().digests() == state.digests()
        {
            assert!(
                stale_seen,
                "late messages of the old run should have been refused"
            );
            assert!(b.status().counters.resyncs_completed >= 2);
            return;
        }
    }
    panic!("no convergence after restart: {:#?}", b.status());
}

/// Over a stream (the pseudo-standby's Unix socket): length-prefixed frames cut at random
/// boundaries reach the same result.
#[test]
fn stream_transport_with_deframer() {
    let mut rng = Rng(9);
    let start = Instant::now();
    let mut a = endpoint(1, 2, 1000, start);
    let mut b = endpoint(2, 1, 2000, start);
    let (mut da, mut db) = (Deframer::new(65535), Deframer::new(65535));
    let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
    let mut state = State::default();
    for _ in 0..500 {
        state.random_op(&mut rng, &mut [&mut a]);
    }
    let mut buf = Vec::new();
    for ms in 0..10_000u64 {
        let now = start + Duration::from_millis(ms);
        if ms < 200 {
            for _ in 0..10 {
                state.random_op(&mut rng, &mut [&mut a]);
            }
        }
        // Deliver a random prefix of each byte stream.
        for (bytes, de, ep) in [(&mut to_b, &mut db, &mut b), (&mut to_a, &mut da, &mut a)] {
            let n = (rng.below(3000) as usize).min(bytes.len());
            de.push(&bytes[..n]);
            bytes.drain(..n);
            while let Some(f) = de.next_frame() {
                ep.handle(f.unwrap(), now).unwrap();
            }
        }
        while let Some(ev) = a.poll_event() {
            if let Event::SnapshotNeeded { .. } = ev {
                a.start_resync(state.snapshot(), now);
            }
        }
        a.on_tick(now);
        b.on_tick(now);
        while a.poll_transmit(now, &mut buf) {
            frame_into(&buf, &mut to_b);
        }
        while b.poll_transmit(now, &mut buf) {
            frame_into(&buf, &mut to_a);
        }
        if ms > 200 && b.in_sync() && b.replica().digests() == state.digests() {
            assert_eq!(b.status().counters.nacks_sent, 0, "a stream loses nothing");
            return;
        }
    }
    panic!("no convergence over the stream: {:#?}", b.status());
}
