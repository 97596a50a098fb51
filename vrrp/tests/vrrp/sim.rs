//! A deterministic simulation: 2 or 3 routers for one VRID on a simulated link that loses,
//! duplicates and delays adverts, with random crashes, graceful shutdowns and restarts. After
//! each round of chaos the link stops losing (it still duplicates and jitters) and no router
//! fails; once the convergence time has passed there must be exactly one master at every step,
//! and it must have the highest priority among the running routers.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use vrrp::{wire, Action, Config, State, VirtualRouter};

/// xorshift64*: small, seeded, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

struct Node {
    cfg: Config,
    /// None: crashed (no shutdown, no priority 0).
    vr: Option<VirtualRouter>,
}

impl Node {
    fn running(&self) -> Option<&VirtualRouter> {
        self.vr
            .as_ref()
            .filter(|vr| vr.state() != State::Initialize)
    }
}

/// A frame on the link: (delivery time, sequence, to, frame).
type InFlight = (Duration, u64, usize, Vec<u8>);

struct Sim {
    t0: Instant,
    now: Duration,
    rng: Rng,
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    loss: u64,
    dup: u64,
    max_delay: Duration,
    interval: Duration,
    /// Transitions to master over the whole run, crashed routers' included.
    takeovers: u64,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let interval_cs = [1u16, 5, 10, 100][rng.below(4) as usize];
        let count = 2 + rng.below(2) as usize;
        let t0 = Instant::now();
        let mut started = Vec::new();
        let nodes = (0..count)
            .map(|i| {
                let mut cfg = Config::new(42, Ipv4Addr::new(192, 0, 2, 10 + i as u8), vec![VIP]);
                // Ties happen (the tie-break is exercised), and sometimes one owns the address.
                cfg.priority = [100, 150, 200][rng.below(3) as usize];
                if i == 0 && rng.chance(25) {
                    cfg.priority = 255;
                }
                cfg.adver_interval = interval_cs;
                let mut vr = VirtualRouter::new(cfg.clone(), t0).unwrap();
                started.push(vr.startup(t0));
                Node { cfg, vr: Some(vr) }
            })
            .collect();
        let interval = Duration::from_millis(u64::from(interval_cs) * 10);
        let mut sim = Self {
            t0,
            now: Duration::ZERO,
            rng,
            nodes,
            queue: BinaryHeap::new(),
            seq: 0,
            loss: 0,
            dup: 0,
            max_delay: interval / 5,
            interval,
            takeovers: 0,
        };
        // Owners start as master and advertise at once.
        for (i, actions) in started.into_iter().enumerate() {
            sim.carry(i, actions);
        }
        sim
    }

    fn instant(&self) -> Instant {
        self.t0 + self.now
    }

    /// Puts the frames `from` sent on the link: each copy to each other node may be lost,
    /// duplicated and delayed.
    fn carry(&mut self, from: usize, actions: Vec<Action>) {
        for action in actions {
            if let Action::BecameMaster(_) = action {
                self.takeovers += 1;
            }
            let Action::SendAdvert { frame, .. } = action else {
                continue;
            };
            for to in 0..self.nodes.len() {
                if to == from || self.rng.chance(self.loss) {
                    continue;
                }
                let copies = if self.rng.chance(self.dup) { 2 } else { 1 };
                for _ in 0..copies {
                    let jitter = self.rng.below(self.max_delay.as_micros() as u64 + 1);
                    let at = self.now + Duration::from_micros(jitter);
                    self.seq += 1;
                    self.queue.push(Reverse((at, self.seq, to, frame.clone())));
                }
            }
        }
    }

    /// Runs to `until`; with `check`, asserts at every step that at most one router is master.
    fn run(&mut self, until: Duration, check: bool) {
        loop {
            let t0 = self.t0;
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|n| n.running().and_then(|vr| vr.next_deadline()))
                .map(|d| d - t0)
                .min();
            let next_frame = self.queue.peek().map(|Reverse((at, ..))| *at);
            let next = [next_timer, next_frame].into_iter().flatten().min();
            match next {
                Some(at) if at <= until => self.now = self.now.max(at),
                _ => break,
            }
            let now = self.instant();
            while let Some(Reverse((at, ..))) = self.queue.peek() {
                if *at > self.now {
                    break;
                }
                let Reverse((_, _, to, frame)) = self.queue.pop().unwrap();
                let rx = wire::parse_frame(&frame).unwrap();
                if let Some(vr) = self.nodes[to].vr.as_mut() {
                    let actions = vr.on_received(&rx, now);
                    self.carry(to, actions);
                }
            }
            for i in 0..self.nodes.len() {
                if let Some(vr) = self.nodes[i].vr.as_mut() {
                    let actions = vr.on_timer(now);
                    self.carry(i, actions);
                }
            }
            if check {
                let masters = self.masters();
                assert!(
                    masters.len() <= 1,
                    "{} masters at {:?}: {:?}",
                    masters.len(),
                    self.now,
                    self.describe()
                );
            }
        }
        self.now = until;
    }

    fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].running().map(|vr| vr.state()) == Some(State::Master))
            .collect()
    }

    fn describe(&self) -> Vec<(u8, Option<State>)> {
        self.nodes
            .iter()
            .map(|n| (n.cfg.priority, n.running().map(|vr| vr.state())))
            .collect()
    }

    /// A round of failures on a lossy link.
    fn chaos(&mut self, length: Duration) {
        self.loss = 20;
        self.dup = 10;
        let end = self.now + length;
        while self.now < end {
            let step = self.interval * (1 + self.rng.below(8) as u32);
            self.run((self.now + step).min(end), false);
            let i = self.rng.below(self.nodes.len() as u64) as usize;
            let now = self.instant();
            match self.rng.below(4) {
                0 => self.nodes[i].vr = None,
                1 => {
                    if let Some(vr) = self.nodes[i].vr.as_mut() {
                        let actions = vr.shutdown(now);
                        self.carry(i, actions);
                    }
                }
                2 => self.restart(i),
                _ => {}
            }
        }
    }

    fn restart(&mut self, i: usize) {
        let now = self.instant();
        let node = &mut self.nodes[i];
        let vr = node
            .vr
            .get_or_insert_with(|| VirtualRouter::new(node.cfg.clone(), now).unwrap());
        let actions = vr.startup(now);
        self.carry(i, actions);
    }

    /// Stops losing, brings back some stopped routers (at least one runs), waits the
    /// convergence time, then checks one master of the highest priority for a while.
    fn settle_and_check(&mut self) {
        self.loss = 0;
        for i in 0..self.nodes.len() {
            if self.nodes[i].running().is_none() && self.rng.chance(50) {
                self.restart(i);
            }
        }
        if self.masters().is_empty() && self.nodes.iter().all(|n| n.running().is_none()) {
            self.restart(0);
        }
        // Worst case: a just-restarted highest-priority router waits Master_Down_Interval
        // (< 4 intervals), then the others hear it after at most one delay.
        let convergence = self.interval * 5 + self.max_delay;
        self.run(self.now + convergence, false);
        let window = self.now + self.interval * 20;
        self.run(window, true);
        let masters = self.masters();
        assert_eq!(
            masters.len(),
            1,
            "exactly one master: {:?}",
            self.describe()
        );
        let best = self
            .nodes
            .iter()
            .filter(|n| n.running().is_some())
            .map(|n| n.cfg.priority)
            .max()
            .unwrap();
        assert_eq!(
            self.nodes[masters[0]].cfg.priority,
            best,
            "the highest priority wins: {:?}",
            self.describe()
        );
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(vr) = node.running() {
                if i != masters[0] {
                    assert_eq!(vr.state(), State::Backup);
                }
            }
        }
    }
}

#[test]
fn one_master_of_the_highest_priority_after_failures_on_a_lossy_link() {
    let mut takeovers = 0;
    for seed in 1..=100 {
        let mut sim = Sim::new(seed);
        sim.settle_and_check();
        for _ in 0..4 {
            let length = sim.interval * 40;
            sim.chaos(length);
            sim.settle_and_check();
        }
        takeovers += sim.takeovers;
    }
    // The chaos did make routers take over, many times.
    println!("{takeovers} takeovers");
    assert!(takeovers > 500, "only {takeovers} takeovers");
}
