//! Seeded simulation: 3–4 `ClusterEngine`s around a simulated etcd (revisions, CAS with the
//! lease compare, leases that expire, a watch, outages) and a sync bus for heartbeats, markers
//! and relayed tables, with crashes, restarts and partitions. The bus behaves like hasync: a
//! lost datagram is resent (a random extra delay, order kept per pair), nothing crosses a
//! broken link, and a peer heard again gets the sender's current markers (the resync).
//!
//! Checked at every step: no id is `Owned` by two nodes that are at the same epoch, and every
//! commit is made under a live lease of a registered proposer. Checked after the faults heal:
//! every id is owned by exactly one live member, the one the table names, on one epoch.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use cluster::alloc::{Allocation, NodeId};
use cluster::engine::{
    Action, ClusterEngine, EngineConfig, EtcdRequest, LeaseId, Marker, PlaneState, Revision,
};
use cluster::record::MemberRecord;

const STEP: Duration = Duration::from_millis(10);

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
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

enum WatchEvent {
    Put(NodeId, MemberRecord),
    Delete(NodeId),
    Alloc(Box<Allocation>, Revision),
}

struct Etcd {
    up: bool,
    rev: Revision,
    next_lease: LeaseId,
    leases: BTreeMap<LeaseId, Instant>,
    members: BTreeMap<NodeId, (MemberRecord, LeaseId)>,
    alloc: Option<(Vec<u8>, Revision)>,
    commits: Vec<Allocation>,
}

enum Msg {
    Marker(Marker),
    Relay(Box<Allocation>),
}

struct Node {
    engine: Option<ClusterEngine>,
    plane: [PlaneState; 256],
    watching: bool,
    pending: VecDeque<WatchEvent>,
    reach_etcd: bool,
    /// The node's published markers (its `CLUSTER` records), latest per kind and id.
    markers: BTreeMap<(bool, u8), Marker>,
    /// Per peer: consecutive steps the link was up / down, and whether the peer is heard.
    links: BTreeMap<NodeId, (u32, u32, bool)>,
}

struct Sim {
    now: Instant,
    rng: Rng,
    etcd: Etcd,
    nodes: BTreeMap<NodeId, Node>,
    /// Partition groups: nodes talk only within their group.
    group: BTreeMap<NodeId, u8>,
    bus: Vec<(Instant, NodeId, NodeId, Msg)>,
    last_delivery: BTreeMap<(NodeId, NodeId), Instant>,
    loss: u64,
    max_epoch_seen: u64,
}

fn record(node: NodeId) -> MemberRecord {
    MemberRecord {
        weight: 1,
        sync_addr: format!("10.8.0.{node}:7400").parse().expect("addr"),
        start_epoch_us: 0,
        config_digest: 0,
        macs: Vec::new(),
    }
}

fn config(node: NodeId) -> EngineConfig {
    let mut c = EngineConfig::new(node, record(node));
    c.lease_ttl = Duration::from_secs(2);
    c.release_wait = Duration::from_millis(500);
    c.took_wait = Duration::from_millis(300);
    c.retry = Duration::from_millis(500);
    c
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim {
            now: Instant::now(),
            rng: Rng(seed),
            etcd: Etcd {
                up: true,
                rev: 1,
                next_lease: 100,
                leases: BTreeMap::new(),
                members: BTreeMap::new(),
                alloc: None,
                commits: Vec::new(),
            },
            nodes: BTreeMap::new(),
            group: BTreeMap::new(),
            bus: Vec::new(),
            last_delivery: BTreeMap::new(),
            loss: 5,
            max_epoch_seen: 0,
        }
    }

    fn start(&mut self, node: NodeId) {
        let mut e = ClusterEngine::new(config(node), self.now);
        e.start(self.now);
        self.nodes.insert(
            node,
            Node {
                engine: Some(e),
                plane: [PlaneState::Foreign; 256],
                watching: false,
                pending: VecDeque::new(),
                reach_etcd: true,
                markers: BTreeMap::new(),
                links: BTreeMap::new(),
            },
        );
        self.group.insert(node, 0);
        self.drive(node);
    }

    /// etcd back after an outage: like a new leader, it gives every lease a fresh TTL.
    fn etcd_set_up(&mut self, up: bool) {
        if up && !self.etcd.up {
            let until = self.now + config(0).lease_ttl;
            for e in self.etcd.leases.values_mut() {
                *e = until;
            }
        }
        self.etcd.up = up;
    }

    fn crash(&mut self, node: NodeId) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.engine = None;
            n.watching = false;
            n.pending.clear();
            n.plane = [PlaneState::Foreign; 256];
        }
    }

    fn alive(&self, node: NodeId) -> bool {
        self.nodes.get(&node).is_some_and(|n| n.engine.is_some())
    }

    fn linked(&self, a: NodeId, b: NodeId) -> bool {
        self.alive(a) && self.alive(b) && self.group.get(&a) == self.group.get(&b)
    }

    fn etcd_ok(&self, node: NodeId) -> bool {
        self.etcd.up && self.nodes.get(&node).is_some_and(|n| n.reach_etcd)
    }

    fn broadcast(&mut self, from: NodeId, msg: impl Fn() -> Msg) {
        let peers: Vec<NodeId> = self.nodes.keys().copied().filter(|p| *p != from).collect();
        for to in peers {
            let mut delay = STEP * (1 + self.rng.below(3) as u32);
            if self.rng.chance(self.loss) {
                // Lost and resent after hasync's NACK/resend round.
                delay += STEP * 10;
            }
            let last = self
                .last_delivery
                .get(&(from, to))
                .copied()
                .unwrap_or(self.now);
            let at = (self.now + delay).max(last);
            self.last_delivery.insert((from, to), at);
            self.bus.push((at, from, to, msg()));
        }
    }

    fn notify(&mut self, ev: impl Fn() -> WatchEvent) {
        for n in self.nodes.values_mut() {
            if n.watching && n.engine.is_some() {
                n.pending.push_back(ev());
            }
        }
    }

    /// Carries out `node`'s queued actions until there are none.
    fn drive(&mut self, node: NodeId) {
        loop {
            let Some(engine) = self.nodes.get_mut(&node).and_then(|n| n.engine.as_mut()) else {
                return;
            };
            let actions = engine.take_actions();
            if actions.is_empty() {
                return;
            }
            for a in actions {
                self.act(node, a);
            }
        }
    }

    fn engine(&mut self, node: NodeId) -> &mut ClusterEngine {
        self.nodes
            .get_mut(&node)
            .and_then(|n| n.engine.as_mut())
            .expect("live node")
    }

    fn lease_alive(&self, lease: LeaseId) -> bool {
        self.etcd.leases.contains_key(&lease)
    }

    fn act(&mut self, node: NodeId, a: Action) {
        let now = self.now;
        match a {
            Action::Etcd(req) => {
                if !self.etcd_ok(node) {
                    self.engine(node).on_etcd_timeout(now);
                    return;
                }
                self.etcd_request(node, req);
            }
            Action::Plane { id, state } => {
                self.nodes.get_mut(&node).expect("node").plane[usize::from(id)] = state;
            }
            Action::Fence => {
                self.nodes.get_mut(&node).expect("node").plane = [PlaneState::Foreign; 256];
            }
            Action::Release { id, epoch } => {
                let mk = Marker::Release { id, epoch };
                self.nodes
                    .get_mut(&node)
                    .expect("node")
                    .markers
                    .insert((false, id), mk);
                self.broadcast(node, || Msg::Marker(Marker::Release { id, epoch }));
            }
            Action::Took { id, epoch } => {
                let mk = Marker::Took { id, epoch };
                self.nodes
                    .get_mut(&node)
                    .expect("node")
                    .markers
                    .insert((true, id), mk);
                self.broadcast(node, || Msg::Marker(Marker::Took { id, epoch }));
            }
            Action::Relay(table) => self.broadcast(node, || Msg::Relay(table.clone())),
            Action::Adopt { .. } | Action::Handed { .. } => {}
        }
    }

    fn etcd_request(&mut self, node: NodeId, req: EtcdRequest) {
        let now = self.now;
        match req {
            EtcdRequest::Grant { ttl } => {
                let lease = self.etcd.next_lease;
                self.etcd.next_lease += 1;
                self.etcd.leases.insert(lease, now + ttl);
                self.engine(node).on_lease_granted(lease, now);
            }
            EtcdRequest::Register { lease, record } => {
                if !self.lease_alive(lease) {
                    self.engine(node).on_lease_gone(now);
                    return;
                }
                let held = self
                    .etcd
                    .members
                    .get(&node)
                    .is_some_and(|(_, l)| *l != lease);
                if held {
                    self.engine(node).on_registered(false, now);
                    return;
                }
                let rec = MemberRecord::decode(&record).expect("record");
                self.etcd.rev += 1;
                self.etcd.members.insert(node, (rec.clone(), lease));
                self.notify(|| WatchEvent::Put(node, rec.clone()));
                self.engine(node).on_registered(true, now);
            }
            EtcdRequest::LoadAndWatch => {
                let n = self.nodes.get_mut(&node).expect("node");
                n.watching = true;
                n.pending.clear();
                for (m, (r, _)) in self.etcd.members.clone() {
                    n.pending.push_back(WatchEvent::Put(m, r));
                }
                if let Some((v, rev)) = self.etcd.alloc.clone() {
                    let a = Allocation::decode(&v).expect("stored table");
                    n.pending.push_back(WatchEvent::Alloc(Box::new(a), rev));
                }
            }
            EtcdRequest::Keepalive { lease } => {
                let ttl = config(node).lease_ttl;
                if let Some(exp) = self.etcd.leases.get_mut(&lease) {
                    *exp = now + ttl;
                    self.engine(node).on_keepalive_ok(now);
                } else {
                    self.engine(node).on_lease_gone(now);
                }
            }
            EtcdRequest::Cas {
                expect_mod_revision,
                lease,
                value,
            } => {
                let cur_rev = self.etcd.alloc.as_ref().map_or(0, |(_, r)| *r);
                let lease_ok = self.lease_alive(lease)
                    && self
                        .etcd
                        .members
                        .get(&node)
                        .is_some_and(|(_, l)| *l == lease);
                if cur_rev == expect_mod_revision && lease_ok {
                    let table = Allocation::decode(&value).expect("proposed table");
                    // Commit invariants: a live lease (checked above, against etcd's truth),
                    // the next epoch, owners among the table's members.
                    assert!(self.alive(node), "a dead node committed");
                    assert!(table.epoch > self.max_epoch_seen, "epoch went back");
                    for o in table.owners.iter().flatten() {
                        assert!(table.has_member(*o));
                    }
                    self.max_epoch_seen = table.epoch;
                    self.etcd.rev += 1;
                    let rev = self.etcd.rev;
                    self.etcd.alloc = Some((value, rev));
                    self.etcd.commits.push(table.clone());
                    self.notify(|| WatchEvent::Alloc(Box::new(table.clone()), rev));
                    self.engine(node).on_cas_committed(rev, now);
                } else {
                    let cur = self
                        .etcd
                        .alloc
                        .as_ref()
                        .map(|(v, r)| (Allocation::decode(v).expect("stored"), *r));
                    self.engine(node).on_cas_failed(cur, now);
                }
            }
        }
    }

    fn step(&mut self) {
        self.now += STEP;
        let now = self.now;
        // etcd: lease expiry (frozen while etcd is down).
        if self.etcd.up {
            let expired: Vec<LeaseId> = self
                .etcd
                .leases
                .iter()
                .filter(|(_, e)| **e <= now)
                .map(|(l, _)| *l)
                .collect();
            for l in expired {
                self.etcd.leases.remove(&l);
                let gone: Vec<NodeId> = self
                    .etcd
                    .members
                    .iter()
                    .filter(|(_, (_, ml))| *ml == l)
                    .map(|(n, _)| *n)
                    .collect();
                for n in gone {
                    self.etcd.members.remove(&n);
                    self.etcd.rev += 1;
                    self.notify(|| WatchEvent::Delete(n));
                }
            }
        }
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        // Heartbeats: heard after 3 steps up, lost after 10 steps down.
        for &a in &ids {
            if !self.alive(a) {
                continue;
            }
            for &b in &ids {
                if a == b {
                    continue;
                }
                let up = self.linked(a, b);
                let n = self.nodes.get_mut(&a).expect("node");
                let l = n.links.entry(b).or_insert((0, 0, false));
                if up {
                    l.0 += 1;
                    l.1 = 0;
                } else {
                    l.1 += 1;
                    l.0 = 0;
                }
                let (heard_now, lost_now) = (up && l.0 >= 3 && !l.2, !up && l.1 >= 10 && l.2);
                if heard_now {
                    l.2 = true;
                    self.engine(a).on_peer_heard(b, now);
                    // The resync: b's current records reach a.
                    let mks: Vec<Marker> = self.nodes[&b].markers.values().copied().collect();
                    for mk in mks {
                        self.engine(a).on_marker(b, mk, now);
                    }
                } else if lost_now {
                    l.2 = false;
                    self.engine(a).on_peer_lost(b, now);
                }
            }
        }
        // Sync bus.
        let mut due = Vec::new();
        let mut keep = Vec::new();
        for m in std::mem::take(&mut self.bus) {
            if m.0 <= now {
                due.push(m);
            } else {
                keep.push(m);
            }
        }
        self.bus = keep;
        for (_, from, to, msg) in due {
            if !self.linked(from, to) {
                continue;
            }
            match msg {
                Msg::Marker(mk) => self.engine(to).on_marker(from, mk, now),
                Msg::Relay(t) => self.engine(to).on_relayed(from, *t, now),
            }
        }
        // Watch deliveries.
        for &n in &ids {
            if !self.alive(n) || !self.etcd_ok(n) {
                continue;
            }
            let evs: Vec<WatchEvent> = self
                .nodes
                .get_mut(&n)
                .expect("node")
                .pending
                .drain(..)
                .collect();
            for ev in evs {
                match ev {
                    WatchEvent::Put(m, r) => self.engine(n).on_member_put(m, r, now),
                    WatchEvent::Delete(m) => self.engine(n).on_member_delete(m, now),
                    WatchEvent::Alloc(a, rev) => self.engine(n).on_alloc(*a, rev, now),
                }
                self.drive(n);
            }
        }
        for &n in &ids {
            if self.alive(n) {
                self.engine(n).tick(now);
            }
        }
        for &n in &ids {
            self.drive(n);
        }
        self.check_step();
    }

    /// No id owned by two nodes at the same epoch.
    fn check_step(&self) {
        for id in 0..256 {
            let mut owners: BTreeMap<u64, NodeId> = BTreeMap::new();
            for (n, node) in &self.nodes {
                let Some(e) = node.engine.as_ref() else {
                    continue;
                };
                if node.plane[id] == PlaneState::Owned {
                    assert_eq!(e.plane(id as u8), PlaneState::Owned);
                    let epoch = e.allocation().epoch;
                    if let Some(other) = owners.insert(epoch, *n) {
                        panic!("id {id} owned by {other} and {n} at epoch {epoch}");
                    }
                }
            }
        }
    }

    fn run(&mut self, d: Duration) {
        let steps = d.as_millis() / STEP.as_millis();
        for _ in 0..steps {
            self.step();
        }
    }

    /// After the faults heal: one epoch everywhere, every id owned by exactly one live member,
    /// the one the table names, and the members are the live nodes.
    fn check_settled(&self) -> Allocation {
        let live: Vec<NodeId> = self
            .nodes
            .keys()
            .copied()
            .filter(|n| self.alive(*n))
            .collect();
        let table = self.nodes[&live[0]]
            .engine
            .as_ref()
            .expect("live")
            .allocation()
            .clone();
        let mut members: Vec<NodeId> = table.members.iter().map(|m| m.node).collect();
        members.sort_unstable();
        assert_eq!(members, live, "members after healing: {table:?}");
        for n in &live {
            let e = self.nodes[n].engine.as_ref().expect("live");
            assert_eq!(e.allocation(), &table, "node {n} on another table");
            let s = e.status();
            assert!(
                s.releasing.is_empty() && s.awaiting.is_empty(),
                "{n}: {s:?}"
            );
        }
        for id in 0..256 {
            let owners: Vec<NodeId> = live
                .iter()
                .copied()
                .filter(|n| self.nodes[n].plane[id] == PlaneState::Owned)
                .collect();
            assert_eq!(owners.len(), 1, "id {id} owners {owners:?}");
            assert_eq!(table.owners[id], Some(owners[0]), "id {id}");
        }
        table
    }
}

fn counts(t: &Allocation) -> Vec<usize> {
    t.members.iter().map(|m| t.count(m.node)).collect()
}

#[test]
fn three_nodes_form_86_85_85() {
    let mut s = Sim::new(1);
    for n in [1, 2, 3] {
        s.start(n);
    }
    s.run(Duration::from_secs(2));
    let t = s.check_settled();
    assert_eq!(counts(&t), vec![86, 85, 85]);
}

#[test]
fn a_joining_node_takes_only_its_quota() {
    let mut s = Sim::new(2);
    s.loss = 0;
    for n in [1, 2, 3] {
        s.start(n);
    }
    s.run(Duration::from_secs(2));
    let before = s.check_settled();
    s.start(4);
    s.run(Duration::from_secs(2));
    let after = s.check_settled();
    let moved: Vec<usize> = (0..256)
        .filter(|i| before.owners[*i] != after.owners[*i])
        .collect();
    assert_eq!(moved.len(), 64);
    assert!(moved.iter().all(|i| after.owners[*i] == Some(4)));
    assert_eq!(counts(&after), vec![64, 64, 64, 64]);
    // Planned: every gained id came with the old owner's release marker, none by timeout.
    let st = s.nodes[&4].engine.as_ref().expect("live").status();
    assert_eq!(st.release_timeouts, 0);
    assert_eq!(st.owned.len(), 64);
}

#[test]
fn a_crashed_node_is_removed_by_the_majority_and_its_ids_adopted() {
    let mut s = Sim::new(3);
    for n in [1, 2, 3] {
        s.start(n);
    }
    s.run(Duration::from_secs(2));
    let before = s.check_settled();
    s.crash(3);
    // Removal on heartbeat loss: well before the 2 s lease expiry.
    s.run(Duration::from_millis(400));
    let after = s.check_settled();
    for i in 0..256 {
        if before.owners[i] != Some(3) {
            assert_eq!(before.owners[i], after.owners[i], "id {i} moved");
        }
    }
    assert_eq!(counts(&after), vec![128, 128]);
}

#[test]
fn an_isolated_node_cannot_remove_the_others() {
    let mut s = Sim::new(4);
    for n in [1, 2, 3] {
        s.start(n);
    }
    s.run(Duration::from_secs(2));
    let before = s.check_settled();
    // Node 1 (the proposer) loses its peers but still reaches etcd.
    s.group.insert(1, 1);
    s.run(Duration::from_millis(500));
    // The majority (2, 3) removed node 1; node 1 could not remove them.
    let t = s.nodes[&2]
        .engine
        .as_ref()
        .expect("live")
        .allocation()
        .clone();
    assert!(!t.has_member(1), "{t:?}");
    assert!(t.has_member(2) && t.has_member(3));
    assert!(s
        .etcd
        .commits
        .iter()
        .all(|c| c.committed_by != 1 || c.epoch <= before.epoch));
    let st = s.nodes[&1].engine.as_ref().expect("live").status();
    assert!(st.owned.is_empty(), "{st:?}");
    // Alone, it hears no majority: it proposes nothing and does not call itself proposer.
    assert!(!st.proposer, "{st:?}");
    let st2 = s.nodes[&2].engine.as_ref().expect("live").status();
    assert!(st2.proposer, "node 2 leads the majority: {st2:?}");
    s.group.insert(1, 0);
    s.run(Duration::from_secs(2));
    let healed = s.check_settled();
    assert_eq!(counts(&healed), vec![86, 85, 85]);
}

#[test]
fn etcd_down_keeps_ids_and_refuses_reallocation() {
    let mut s = Sim::new(5);
    for n in [1, 2, 3] {
        s.start(n);
    }
    s.run(Duration::from_secs(2));
    let before = s.check_settled();
    s.etcd_set_up(false);
    s.run(Duration::from_millis(800));
    s.crash(3);
    s.run(Duration::from_secs(1));
    for n in [1, 2] {
        let e = s.nodes[&n].engine.as_ref().expect("live");
        assert_eq!(e.allocation(), &before, "node {n} moved without etcd");
        assert_eq!(e.status().owned, before.ids_of(n));
    }
    let st = s.nodes[&1].engine.as_ref().expect("live").status();
    assert!(st.realloc_refused >= 1, "{st:?}");
    assert!(!st.etcd_reachable);
    assert!(
        st.refuse_reason
            .as_deref()
            .is_some_and(|r| r.contains("etcd unreachable")),
        "{st:?}"
    );
    s.etcd_set_up(true);
    s.run(Duration::from_secs(2));
    let after = s.check_settled();
    assert_eq!(counts(&after), vec![128, 128]);
}

#[test]
fn lease_loss_fences_the_node() {
    let mut s = Sim::new(6);
    for n in [1, 2, 3] {
        s.start(n);
    }
    s.run(Duration::from_secs(2));
    s.check_settled();
    // Node 2's lease disappears at etcd (as if it expired during a stall).
    let lease = s.etcd.members[&2].1;
    let now = s.now;
    s.etcd.leases.insert(lease, now);
    s.run(Duration::from_secs(1));
    let st = s.nodes[&2].engine.as_ref().expect("live").status();
    assert!(st.fences >= 1, "{st:?}");
    s.run(Duration::from_secs(2));
    let t = s.check_settled();
    assert_eq!(counts(&t), vec![86, 85, 85]);
}

/// Random faults from many seeds; the invariants are checked at every step and after healing.
#[test]
fn seeded_random_faults() {
    for seed in 0..12u64 {
        let mut s = Sim::new(0xC1u64 << 32 | seed);
        let n_nodes = 3 + (seed % 2) as NodeId;
        for n in 1..=n_nodes {
            s.start(n);
        }
        s.run(Duration::from_secs(1));
        for _ in 0..6 {
            let victim = 1 + s.rng.below(u64::from(n_nodes)) as NodeId;
            match s.rng.below(5) {
                0 => s.crash(victim),
                1 => {
                    if !s.alive(victim) {
                        s.start(victim);
                    }
                }
                2 => {
                    s.group.insert(victim, 1 + s.rng.below(2) as u8);
                }
                3 => {
                    let up = !s.etcd.up;
                    s.etcd_set_up(up);
                }
                _ => {
                    if let Some(n) = s.nodes.get_mut(&victim) {
                        n.reach_etcd = !n.reach_etcd;
                    }
                }
            }
            let d = 100 + s.rng.below(1500);
            s.run(Duration::from_millis(d));
        }
        // Heal everything; crashed nodes come back.
        s.etcd_set_up(true);
        for n in 1..=n_nodes {
            s.group.insert(n, 0);
            if let Some(node) = s.nodes.get_mut(&n) {
                node.reach_etcd = true;
            }
            if !s.alive(n) {
                s.start(n);
            }
        }
        s.run(Duration::from_secs(6));
        s.check_settled();
    }
}
