//! [`ClusterEngine`]: one node's membership, proposer, fencing and per-id handover state
//! machine (design note §3, §5). Sans-IO: the router's driver feeds it etcd results and watch
//! events, sync-channel peer events and markers, and time; it answers with [`Action`]s.
//!
//! # Rules
//!
//! - **Registration.** Grant a lease (`lease_ttl`), create `members/<me>` under it if absent
//!   (someone else holding our node id is refused and retried), then load and watch the prefix.
//!   Keepalive every `lease_ttl / 3`.
//! - **Desired table.** [`alloc::compute`] over the members registered in etcd that this node
//!   *hears* on the sync channel (itself included): a member never heard (a wrong key) gets no
//!   ids; a member whose heartbeat is lost is dropped although its lease is alive.
//! - **Quorum.** A node proposes only while it hears a strict majority of the members
//!   registered in etcd (itself included), so an isolated node cannot remove the others. A
//!   member whose lease expired is gone from etcd and no longer counts. A removal of a member
//!   that is still registered waits `removal_grace`, so that all the heartbeat losses of an
//!   isolation are seen before anything is proposed.
//! - **Proposer.** The lowest heard node id proposes at once; the others only when no new epoch
//!   came within `rank × propose_step`. The proposal is one CAS: `alloc` mod revision equal to
//!   the one the table was computed from, and `members/<me>` still under our lease (an expired
//!   proposer cannot commit). On failure etcd returns the winner's table in the same round trip.
//! - **etcd unreachable** (a request timed out): keep the current ids and forward, propose
//!   nothing, count `realloc_refused` with the reason. A newer table relayed by a peer is still
//!   followed.
//! - **Fencing.** A lease that is gone (keepalive without TTL) or no contact with etcd nor any
//!   peer for longer than `lease_ttl` (in a cluster of more than one) drops every id at once
//!   ([`Action::Fence`]), then re-registers.
//! - **Handover** of id X from old owner A to new owner B when an epoch is applied:
//!   A: `Owned → Releasing` (holds X's packets), [`Action::Release`] (flush X's entries, drop
//!   them from the node-specific table, publish `release/X = epoch` after them). B: stays
//!   `Foreign` until A's release marker, then [`Action::Adopt`] (common → node-specific),
//!   `Owned`, [`Action::Took`] (`took/X = epoch`). A on B's took: [`Action::Handed`] (forward
//!   the held frames to B, publish deletes), `Foreign`. B adopts without waiting when A is not
//!   a member of the new epoch (unplanned: A died), or after `release_wait` (A presumed dead).
//!   An id that comes back to a node still releasing it is re-adopted from its own records.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::alloc::{self, Allocation, Member, NodeId};
use crate::id::{Id, IDS};
use crate::record::MemberRecord;

/// An etcd lease id (etcd's int64).
pub type LeaseId = i64;

/// A key's `mod_revision` in etcd; 0 compares equal to a key that does not exist.
pub type Revision = i64;

/// The per-id state the data plane reads (one relaxed load per packet in the router).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlaneState {
    /// Another node handles the id: drop its packets (counted `cluster-foreign`).
    Foreign,
    /// This node handles the id.
    Owned,
    /// Moving away: hold its packets until the new owner took it.
    Releasing,
}

/// A request for the driver to send to etcd; its result comes back through the matching
/// `on_*` method, and a timeout through [`ClusterEngine::on_etcd_timeout`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdRequest {
    /// `lease/grant` with this TTL → [`ClusterEngine::on_lease_granted`].
    Grant {
        /// The TTL (whole seconds, at least 2: etcd's minimum with default timing).
        ttl: Duration,
    },
    /// A txn creating `members/<me>` = `record` under `lease` if absent →
    /// [`ClusterEngine::on_registered`].
    Register {
        /// The lease to attach.
        lease: LeaseId,
        /// The member record ([`MemberRecord::encode`]).
        record: String,
    },
    /// Range the cluster prefix (members, alloc), feed every member and the table, then watch
    /// from the range's revision + 1 (re-range after a compaction).
    LoadAndWatch,
    /// `lease/keepalive` → [`ClusterEngine::on_keepalive_ok`] or
    /// [`ClusterEngine::on_lease_gone`].
    Keepalive {
        /// The lease.
        lease: LeaseId,
    },
    /// The CAS txn: compare `alloc` MOD == `expect_mod_revision` and `members/<me>` LEASE ==
    /// `lease`; success: put `alloc` = `value`; failure: range `alloc` →
    /// [`ClusterEngine::on_cas_committed`] or [`ClusterEngine::on_cas_failed`].
    Cas {
        /// The `alloc` mod revision the table was computed from (0: absent).
        expect_mod_revision: Revision,
        /// This node's lease (the fencing compare).
        lease: LeaseId,
        /// The encoded table ([`Allocation::encode`]).
        value: Vec<u8>,
    },
}

/// A handover marker a peer published in its ordered sync stream (`CLUSTER` table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Marker {
    /// `release/<id> = epoch`: the sender flushed the id's entries (all before this marker in
    /// its stream) and no longer handles it.
    Release {
        /// The id.
        id: Id,
        /// The epoch in which the sender lost it.
        epoch: u64,
    },
    /// `took/<id> = epoch`: the sender adopted the id and handles it.
    Took {
        /// The id.
        id: Id,
        /// The epoch in which the sender took it.
        epoch: u64,
    },
}

/// Something for the driver to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this request to etcd.
    Etcd(EtcdRequest),
    /// Set the data plane's state of `id`.
    Plane {
        /// The id.
        id: Id,
        /// Its new state.
        state: PlaneState,
    },
    /// Publish the last state of `id`'s entries, remove them from the node-specific table
    /// (the NAT workers' `drop_id`), then publish the `release/<id> = epoch` marker. Packets of
    /// the id stay held if its plane state is `Releasing`.
    Release {
        /// The id.
        id: Id,
        /// The epoch in which this node lost it.
        epoch: u64,
    },
    /// Move `id`'s entries from the common table into the node-specific table: from the
    /// replica of `from` (this node's own published records when `from` is this node), or, if
    /// that holds none or `from` is `None`, from any peer replica that holds entries of `id`.
    Adopt {
        /// The id.
        id: Id,
        /// The node believed to hold its entries.
        from: Option<NodeId>,
    },
    /// Publish the adopted entries as this node's own, then the `took/<id> = epoch` marker.
    Took {
        /// The id.
        id: Id,
        /// The epoch of the adoption.
        epoch: u64,
    },
    /// The new owner took `id`: forward the frames held for it to `to` (its MAC on the arrival
    /// interface; `to` is this node when the id came back: run them locally), then publish
    /// deletes of this node's records of `id`.
    Handed {
        /// The id.
        id: Id,
        /// Where the held frames go.
        to: NodeId,
    },
    /// Publish the table this node just committed in its sync stream, for peers cut from etcd
    /// (boxed: a table is 2 KiB, the other actions a few words).
    Relay(Box<Allocation>),
    /// Drop every id at once: plane all `Foreign`, node-specific entries and held frames gone
    /// (the records stay published for whoever adopts the ids).
    Fence,
}

/// The engine's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// This node's id.
    pub me: NodeId,
    /// This node's member record (its weight is the share weight).
    pub record: MemberRecord,
    /// The etcd lease TTL (≥ 2 s; keepalive every third of it).
    pub lease_ttl: Duration,
    /// Backoff per rank before a node that is not the lowest proposes.
    pub propose_step: Duration,
    /// How long a new owner waits for the old owner's release marker before adopting anyway.
    pub release_wait: Duration,
    /// After this long without the new owner's took marker, the move is reported as stalled
    /// (the node keeps holding; the next epoch decides).
    pub took_wait: Duration,
    /// How often a refused registration (node id held by another lease) or a lost lease
    /// request is retried.
    pub retry: Duration,
    /// How long a removal on heartbeat loss waits before it is proposed, so that the losses of
    /// an isolation (all peers within one heartbeat interval) are seen together.
    pub removal_grace: Duration,
}

impl EngineConfig {
    /// Defaults of the design note: lease 3 s, rank step 50 ms, release wait 1 s, took wait
    /// 500 ms, retry 1 s, removal grace 60 ms (three 20 ms heartbeats).
    pub fn new(me: NodeId, record: MemberRecord) -> EngineConfig {
        EngineConfig {
            me,
            record,
            lease_ttl: Duration::from_secs(3),
            propose_step: Duration::from_millis(50),
            release_wait: Duration::from_secs(1),
            took_wait: Duration::from_millis(500),
            retry: Duration::from_secs(1),
            removal_grace: Duration::from_millis(60),
        }
    }
}

/// Where the node is with its lease and member record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// No lease; a grant is due or in flight.
    NoLease,
    /// Lease granted; the member record's txn is in flight.
    Registering(LeaseId),
    /// Registered under this lease.
    Registered(LeaseId),
    /// `members/<me>` exists under another lease: another process claims our node id.
    Conflict(LeaseId),
}

/// One member as `swrouter cluster status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// Node id.
    pub node: NodeId,
    /// Weight from its record.
    pub weight: u16,
    /// Heard on the sync channel (always true for this node).
    pub heard: bool,
    /// A member of the current epoch.
    pub in_epoch: bool,
    /// Ids it owns in the current epoch.
    pub ids: usize,
}

/// The last reallocation as this node saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Realloc {
    /// The epoch.
    pub epoch: u64,
    /// Ids this node gained.
    pub gained: usize,
    /// Ids this node lost.
    pub lost: usize,
    /// When this node applied it.
    pub applied: Instant,
    /// When the last of its moves finished here (all gained ids owned, all lost ids handed).
    pub finished: Option<Instant>,
    /// CAS round trips this node spent on it (0 unless it proposed).
    pub cas_round_trips: u32,
}

/// A status snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub me: NodeId,
    /// Current epoch.
    pub epoch: u64,
    /// Who committed it.
    pub committed_by: NodeId,
    /// Ids this node handles.
    pub owned: Vec<Id>,
    /// Ids this node is handing over (holding their packets).
    pub releasing: Vec<Id>,
    /// Ids this node waits to take (old owner's release marker not yet seen).
    pub awaiting: Vec<Id>,
    /// When this node last committed a table.
    pub last_commit: Option<Instant>,
    /// When the current epoch was applied.
    pub epoch_applied: Option<Instant>,
    /// etcd answered the last request.
    pub etcd_reachable: bool,
    /// Since when it has not.
    pub etcd_unreachable_since: Option<Instant>,
    /// Lease and member record state.
    pub registration: Registration,
    /// Dropped every id and not yet re-registered.
    pub fenced: bool,
    /// Times fenced.
    pub fences: u64,
    /// Reallocations this node wanted but could not propose.
    pub realloc_refused: u64,
    /// Why the last one was refused (cleared when the table matches the membership again).
    pub refuse_reason: Option<String>,
    /// This node is the proposer (lowest heard id in the desired membership).
    pub proposer: bool,
    /// The members registered in etcd, and this node.
    pub members: Vec<MemberStatus>,
    /// CAS requests sent, committed and lost to another proposer.
    pub cas_sent: u64,
    /// CAS requests that committed.
    pub cas_committed: u64,
    /// CAS requests that lost.
    pub cas_lost: u64,
    /// Keepalives sent.
    pub keepalives: u64,
    /// Gained ids adopted without the old owner's release marker after `release_wait`.
    pub release_timeouts: u64,
    /// Lost ids whose new owner's took marker did not come within `took_wait`.
    pub took_timeouts: u64,
    /// The last reallocation.
    pub last_realloc: Option<Realloc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Foreign,
    Owned,
    /// `after`: the last epoch in which this node owned the id; a took marker of a later
    /// epoch from `to` ends the hold (this node may have skipped epochs).
    Releasing {
        to: Option<NodeId>,
        after: u64,
        since: Instant,
        stalled: bool,
    },
    /// `after`: the last epoch in which `from` owned the id as far as this node knows; a
    /// release marker of a later epoch from `from` lets this node adopt.
    Awaiting {
        from: NodeId,
        after: u64,
        since: Instant,
    },
}

/// One node's cluster state machine (module docs).
#[derive(Debug)]
pub struct ClusterEngine {
    cfg: EngineConfig,
    reg: Registration,
    request_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    loaded: bool,
    members: BTreeMap<NodeId, MemberRecord>,
    heard: BTreeSet<NodeId>,
    current: Allocation,
    alloc_rev: Revision,
    slots: [Slot; IDS],
    holder: [Option<NodeId>; IDS],
    release_seen: BTreeMap<(NodeId, Id), u64>,
    took_seen: [Option<(NodeId, u64)>; IDS],
    cas_in_flight: Option<Allocation>,
    desired_since: Option<Instant>,
    refused_for: Option<Allocation>,
    etcd_ok: bool,
    etcd_down_since: Option<Instant>,
    last_contact: Instant,
    fenced: bool,
    actions: VecDeque<Action>,
    // Counters and status.
    last_commit: Option<Instant>,
    epoch_applied: Option<Instant>,
    fences: u64,
    realloc_refused: u64,
    refuse_reason: Option<String>,
    cas_sent: u64,
    cas_committed: u64,
    cas_lost: u64,
    keepalives: u64,
    release_timeouts: u64,
    took_timeouts: u64,
    cas_since_epoch: u32,
    last_realloc: Option<Realloc>,
}

impl ClusterEngine {
    /// A node that has not started: no lease, no ids, epoch 0.
    pub fn new(cfg: EngineConfig, now: Instant) -> ClusterEngine {
        ClusterEngine {
            cfg,
            reg: Registration::NoLease,
            request_at: None,
            keepalive_at: None,
            loaded: false,
            members: BTreeMap::new(),
            heard: BTreeSet::new(),
            current: Allocation::empty(),
            alloc_rev: 0,
            slots: [Slot::Foreign; IDS],
            holder: [None; IDS],
            release_seen: BTreeMap::new(),
            took_seen: [None; IDS],
            cas_in_flight: None,
            desired_since: None,
            refused_for: None,
            etcd_ok: true,
            etcd_down_since: None,
            last_contact: now,
            fenced: false,
            actions: VecDeque::new(),
            last_commit: None,
            epoch_applied: None,
            fences: 0,
            realloc_refused: 0,
            refuse_reason: None,
            cas_sent: 0,
            cas_committed: 0,
            cas_lost: 0,
            keepalives: 0,
            release_timeouts: 0,
            took_timeouts: 0,
            cas_since_epoch: 0,
            last_realloc: None,
        }
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.cfg.me
    }

    /// The current epoch's table.
    pub fn allocation(&self) -> &Allocation {
        &self.current
    }

    /// The data plane's state of `id`.
    pub fn plane(&self, id: Id) -> PlaneState {
        match self.slots[usize::from(id)] {
            Slot::Owned => PlaneState::Owned,
            Slot::Releasing { .. } => PlaneState::Releasing,
            Slot::Foreign | Slot::Awaiting { .. } => PlaneState::Foreign,
        }
    }

    /// The member record of `node` as last seen in etcd (for its sync address and MACs).
    pub fn member(&self, node: NodeId) -> Option<&MemberRecord> {
        self.members.get(&node)
    }

    /// The members registered in etcd (this node included once registered), by node id.
    pub fn members(&self) -> impl Iterator<Item = (NodeId, &MemberRecord)> {
        self.members.iter().map(|(n, r)| (*n, r))
    }

    /// The actions queued since the last call, in order.
    pub fn take_actions(&mut self) -> Vec<Action> {
        self.actions.drain(..).collect()
    }

    /// Starts: asks for a lease.
    pub fn start(&mut self, now: Instant) {
        self.request_lease(now);
    }

    fn push(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    fn etcd(&mut self, r: EtcdRequest) {
        self.push(Action::Etcd(r));
    }

    fn request_lease(&mut self, now: Instant) {
        self.reg = Registration::NoLease;
        self.request_at = Some(now);
        self.etcd(EtcdRequest::Grant {
            ttl: self.cfg.lease_ttl,
        });
    }

    fn etcd_answered(&mut self, now: Instant) {
        self.etcd_ok = true;
        self.etcd_down_since = None;
        self.last_contact = now;
    }

    // ----- etcd results -----

    /// The lease grant answered with `lease`.
    pub fn on_lease_granted(&mut self, lease: LeaseId, now: Instant) {
        self.etcd_answered(now);
        if self.reg != Registration::NoLease {
            return;
        }
        self.reg = Registration::Registering(lease);
        self.request_at = Some(now);
        self.keepalive_at = Some(now);
        let record = self.cfg.record.encode();
        self.etcd(EtcdRequest::Register { lease, record });
    }

    /// The member record's txn answered: `created` false means `members/<me>` exists under
    /// another lease (another process has our node id).
    pub fn on_registered(&mut self, created: bool, now: Instant) {
        self.etcd_answered(now);
        let Registration::Registering(lease) = self.reg else {
            return;
        };
        self.request_at = None;
        if !created {
            self.reg = Registration::Conflict(lease);
            self.request_at = Some(now);
            self.refuse(format!(
                "node id {} is registered by another process (members/{} under another lease)",
                self.cfg.me, self.cfg.me
            ));
            return;
        }
        self.reg = Registration::Registered(lease);
        if !self.loaded {
            self.loaded = true;
            self.etcd(EtcdRequest::LoadAndWatch);
        }
        if self.fenced {
            self.fenced = false;
            // Ids the table still gives us come back from our own published records.
            for i in 0..IDS {
                if self.current.owners[i] == Some(self.cfg.me) && self.slots[i] == Slot::Foreign {
                    let hint = self.holder[i].or(Some(self.cfg.me));
                    self.adopt(i as Id, hint, now);
                }
            }
        }
        self.evaluate(now);
    }

    /// A keepalive answered with a TTL.
    pub fn on_keepalive_ok(&mut self, now: Instant) {
        self.etcd_answered(now);
    }

    /// A keepalive answered without a TTL: the lease is gone. Fence, then register anew.
    pub fn on_lease_gone(&mut self, now: Instant) {
        self.etcd_answered(now);
        self.fence();
        self.request_lease(now);
    }

    /// A request timed out or the connection failed: etcd is unreachable. Requests in flight
    /// are forgotten (a CAS that did commit arrives through the watch).
    pub fn on_etcd_timeout(&mut self, now: Instant) {
        if self.etcd_ok {
            self.etcd_down_since = Some(now);
        }
        self.etcd_ok = false;
        self.cas_in_flight = None;
        if let Registration::Registering(_) = self.reg {
            self.reg = Registration::NoLease;
        }
        self.request_at = None;
    }

    /// A member record was put (range or watch).
    pub fn on_member_put(&mut self, node: NodeId, record: MemberRecord, now: Instant) {
        self.etcd_answered(now);
        self.members.insert(node, record);
        self.evaluate(now);
    }

    /// A member record was deleted (its lease expired or it left).
    pub fn on_member_delete(&mut self, node: NodeId, now: Instant) {
        self.etcd_answered(now);
        self.members.remove(&node);
        if node == self.cfg.me {
            // Our record is gone: our lease expired, whatever the keepalives said.
            if let Registration::Registered(_) = self.reg {
                self.fence();
                self.request_lease(now);
            }
        }
        self.evaluate(now);
    }

    /// The `alloc` key's value and mod revision (range or watch).
    pub fn on_alloc(&mut self, table: Allocation, mod_revision: Revision, now: Instant) {
        self.etcd_answered(now);
        if table.epoch > self.current.epoch {
            self.alloc_rev = mod_revision;
            self.apply(table, now);
        } else if table.epoch == self.current.epoch {
            self.alloc_rev = mod_revision;
        }
        self.evaluate(now);
    }

    /// Our CAS committed at `mod_revision`.
    pub fn on_cas_committed(&mut self, mod_revision: Revision, now: Instant) {
        self.etcd_answered(now);
        let Some(table) = self.cas_in_flight.take() else {
            return;
        };
        self.cas_committed += 1;
        self.last_commit = Some(now);
        if table.epoch > self.current.epoch {
            self.alloc_rev = mod_revision;
            self.push(Action::Relay(Box::new(table.clone())));
            self.apply(table, now);
        }
        self.evaluate(now);
    }

    /// Our CAS failed; etcd returned the current table (`None`: no `alloc` key).
    pub fn on_cas_failed(&mut self, current: Option<(Allocation, Revision)>, now: Instant) {
        self.etcd_answered(now);
        self.cas_in_flight = None;
        self.cas_lost += 1;
        if let Some((table, rev)) = current {
            if table.epoch > self.current.epoch {
                self.alloc_rev = rev;
                self.apply(table, now);
            } else if table.epoch == self.current.epoch {
                self.alloc_rev = rev;
            }
        }
        self.evaluate(now);
    }

    // ----- sync channel -----

    /// `node`'s sync endpoint is up and its first resync complete.
    pub fn on_peer_heard(&mut self, node: NodeId, now: Instant) {
        self.last_contact = now;
        if node != self.cfg.me && self.heard.insert(node) {
            self.evaluate(now);
        }
    }

    /// `node`'s heartbeat was lost.
    pub fn on_peer_lost(&mut self, node: NodeId, now: Instant) {
        if self.heard.remove(&node) {
            self.evaluate(now);
        }
    }

    /// A handover marker from `from`, in its stream order.
    pub fn on_marker(&mut self, from: NodeId, marker: Marker, now: Instant) {
        self.last_contact = now;
        match marker {
            Marker::Release { id, epoch } => {
                let seen = self.release_seen.entry((from, id)).or_insert(0);
                *seen = (*seen).max(epoch);
                let i = usize::from(id);
                if let Slot::Awaiting { from: f, after, .. } = self.slots[i] {
                    if f == from && epoch > after {
                        let hint = self.holder[i].or(Some(from));
                        self.adopt(id, hint, now);
                        self.check_finished(now);
                    }
                }
            }
            Marker::Took { id, epoch } => {
                let i = usize::from(id);
                if self.took_seen[i].map_or(true, |(_, e)| epoch >= e) {
                    self.took_seen[i] = Some((from, epoch));
                    self.holder[i] = Some(from);
                }
                self.check_took(id);
                self.check_finished(now);
            }
        }
    }

    /// A table relayed by `from` in its sync stream (followed when newer: a node cut from etcd
    /// still follows the cluster).
    pub fn on_relayed(&mut self, from: NodeId, table: Allocation, now: Instant) {
        self.last_contact = now;
        let _ = from;
        if table.epoch > self.current.epoch {
            self.apply(table, now);
            self.evaluate(now);
        }
    }

    // ----- time -----

    /// Timers: keepalives, retries, handover timeouts, isolation fencing, deferred proposals.
    /// Call it at least every `propose_step`.
    pub fn tick(&mut self, now: Instant) {
        let ka = self.cfg.lease_ttl / 3;
        match self.reg {
            Registration::Registered(lease) => {
                if self.keepalive_at.map_or(true, |t| now >= t + ka) {
                    self.keepalive_at = Some(now);
                    self.keepalives += 1;
                    self.etcd(EtcdRequest::Keepalive { lease });
                }
            }
            Registration::NoLease => {
                if self.request_at.map_or(true, |t| now >= t + self.cfg.retry) {
                    self.request_lease(now);
                }
            }
            Registration::Conflict(lease) => {
                if self.request_at.is_some_and(|t| now >= t + self.cfg.retry) {
                    self.reg = Registration::Registering(lease);
                    self.request_at = Some(now);
                    let record = self.cfg.record.encode();
                    self.etcd(EtcdRequest::Register { lease, record });
                }
            }
            Registration::Registering(_) => {
                if self.request_at.is_some_and(|t| now >= t + self.cfg.retry) {
                    self.request_lease(now);
                }
            }
        }
        for i in 0..IDS {
            match self.slots[i] {
                Slot::Awaiting { since, .. } if now >= since + self.cfg.release_wait => {
                    self.release_timeouts += 1;
                    let hint = self.holder[i];
                    self.adopt(i as Id, hint, now);
                }
                Slot::Releasing {
                    to,
                    after,
                    since,
                    stalled: false,
                } if now >= since + self.cfg.took_wait => {
                    self.took_timeouts += 1;
                    self.slots[i] = Slot::Releasing {
                        to,
                        after,
                        since,
                        stalled: true,
                    };
                }
                _ => {}
            }
        }
        self.check_finished(now);
        let alone = self.current.members.iter().all(|m| m.node == self.cfg.me);
        if !self.etcd_ok
            && self.heard.is_empty()
            && !alone
            && !self.fenced
            && now >= self.last_contact + self.cfg.lease_ttl
        {
            // Neither etcd nor any peer for a lease TTL: we have almost certainly been removed.
            self.fence();
            self.reg = Registration::NoLease;
        }
        self.evaluate(now);
    }

    // ----- the proposer -----

    fn desired(&self) -> Option<Allocation> {
        let me = self.cfg.me;
        if !self.members.contains_key(&me) {
            return None;
        }
        let live: Vec<Member> = self
            .members
            .iter()
            .filter(|(n, _)| **n == me || self.heard.contains(n))
            .map(|(n, r)| Member {
                node: *n,
                weight: r.weight,
            })
            .collect();
        Some(alloc::compute(&live, &self.current))
    }

    fn refuse(&mut self, reason: String) {
        self.refuse_reason = Some(reason);
    }

    /// Proposes the desired table if this node may and should (module docs).
    fn evaluate(&mut self, now: Instant) {
        let Registration::Registered(lease) = self.reg else {
            return;
        };
        if self.fenced || self.cas_in_flight.is_some() {
            return;
        }
        let Some(mut want) = self.desired() else {
            return;
        };
        if want.same_assignment(&self.current) {
            self.desired_since = None;
            self.refused_for = None;
            self.refuse_reason = None;
            return;
        }
        let since = *self.desired_since.get_or_insert(now);
        let me = self.cfg.me;
        let (heard, registered) = self.quorum_counts();
        if 2 * heard <= registered {
            self.refuse_once(
                &want,
                format!(
                    "no majority: this node hears {heard} of the {registered} registered members"
                ),
            );
            return;
        }
        let removes_registered = self
            .current
            .members
            .iter()
            .any(|m| self.members.contains_key(&m.node) && !want.has_member(m.node));
        if removes_registered && now < since + self.cfg.removal_grace {
            return;
        }
        let rank = want.members.iter().position(|m| m.node == me).unwrap_or(0);
        if now < since + self.cfg.propose_step * u32::try_from(rank).unwrap_or(u32::MAX) {
            return;
        }
        if !self.etcd_ok {
            let down = self.etcd_down_since.map_or(0, |t| (now - t).as_millis());
            self.refuse_once(
                &want,
                format!("etcd unreachable for {down} ms: reallocation pending"),
            );
            return;
        }
        want.committed_by = me;
        self.cas_sent += 1;
        self.cas_since_epoch += 1;
        self.etcd(EtcdRequest::Cas {
            expect_mod_revision: self.alloc_rev,
            lease,
            value: want.encode(),
        });
        self.cas_in_flight = Some(want);
    }

    fn refuse_once(&mut self, want: &Allocation, reason: String) {
        if !self
            .refused_for
            .as_ref()
            .is_some_and(|r| r.same_assignment(want))
        {
            self.realloc_refused += 1;
            self.refused_for = Some(want.clone());
        }
        self.refuse(reason);
    }

    /// (members heard, members registered): quorum is over the registered members (lease
    /// alive), this node included.
    fn quorum_counts(&self) -> (usize, usize) {
        let me = self.cfg.me;
        let heard = self
            .members
            .keys()
            .filter(|n| **n == me || self.heard.contains(n))
            .count();
        (heard, self.members.len())
    }

    /// Whether this node is the proposer: the lowest id of the desired membership, while it
    /// hears a strict majority (an isolated node proposes nothing, so it is not shown as one).
    fn is_proposer(&self) -> bool {
        let (heard, registered) = self.quorum_counts();
        2 * heard > registered
            && self
                .desired()
                .and_then(|d| d.members.first().map(|m| m.node))
                .is_some_and(|n| n == self.cfg.me)
    }

    // ----- handover -----

    fn fence(&mut self) {
        self.fences += 1;
        self.fenced = true;
        for s in self.slots.iter_mut() {
            *s = Slot::Foreign;
        }
        self.push(Action::Fence);
    }

    fn set_plane(&mut self, id: Id, state: PlaneState) {
        self.push(Action::Plane { id, state });
    }

    fn adopt(&mut self, id: Id, from: Option<NodeId>, now: Instant) {
        let i = usize::from(id);
        let _ = now;
        self.push(Action::Adopt { id, from });
        self.slots[i] = Slot::Owned;
        self.set_plane(id, PlaneState::Owned);
        self.holder[i] = Some(self.cfg.me);
        let epoch = self.current.epoch;
        self.push(Action::Took { id, epoch });
    }

    /// A releasing id whose new owner's took marker is already here is handed over.
    fn check_took(&mut self, id: Id) {
        let i = usize::from(id);
        if let Slot::Releasing {
            to: Some(to),
            after,
            ..
        } = self.slots[i]
        {
            if self.took_seen[i].is_some_and(|(n, e)| n == to && e > after) {
                self.slots[i] = Slot::Foreign;
                self.set_plane(id, PlaneState::Foreign);
                self.push(Action::Handed { id, to });
            }
        }
    }

    fn check_finished(&mut self, now: Instant) {
        let busy = self
            .slots
            .iter()
            .any(|s| matches!(s, Slot::Releasing { .. } | Slot::Awaiting { .. }));
        if let Some(r) = self.last_realloc.as_mut() {
            if r.finished.is_none() && !busy {
                r.finished = Some(now);
            }
        }
    }

    /// Applies a newer table: per-id transitions of the module docs.
    fn apply(&mut self, next: Allocation, now: Instant) {
        let me = self.cfg.me;
        let old = std::mem::replace(&mut self.current, next);
        let epoch = self.current.epoch;
        self.desired_since = None;
        self.epoch_applied = Some(now);
        let moves = alloc::diff(&old, &self.current, me);
        self.last_realloc = Some(Realloc {
            epoch,
            gained: moves.gained.len(),
            lost: moves.lost.len(),
            applied: now,
            finished: None,
            cas_round_trips: std::mem::take(&mut self.cas_since_epoch),
        });
        for i in 0..IDS {
            let id = i as Id;
            let (o, n) = (old.owners[i], self.current.owners[i]);
            if self.holder[i].is_none() {
                self.holder[i] = o;
            }
            if self.fenced {
                if o == Some(me) && n != Some(me) {
                    self.push(Action::Release { id, epoch });
                }
                continue;
            }
            if n == Some(me) {
                match self.slots[i] {
                    Slot::Owned => {}
                    // Still ours in the new epoch: keep waiting for the same release marker.
                    Slot::Awaiting { .. } if o == Some(me) => {}
                    Slot::Releasing { .. } => {
                        // It came back before the new owner took it: our records are intact.
                        self.push(Action::Adopt { id, from: Some(me) });
                        self.slots[i] = Slot::Owned;
                        self.set_plane(id, PlaneState::Owned);
                        self.holder[i] = Some(me);
                        self.push(Action::Handed { id, to: me });
                        self.push(Action::Took { id, epoch });
                    }
                    Slot::Foreign | Slot::Awaiting { .. } => match o {
                        Some(prev) if prev != me && self.current.has_member(prev) => {
                            self.slots[i] = Slot::Awaiting {
                                from: prev,
                                after: old.epoch,
                                since: now,
                            };
                            if self
                                .release_seen
                                .get(&(prev, id))
                                .is_some_and(|e| *e > old.epoch)
                            {
                                let hint = self.holder[i].or(Some(prev));
                                self.adopt(id, hint, now);
                            }
                        }
                        // Unplanned (the old owner left the membership) or a fresh id.
                        _ => {
                            let hint = self.holder[i];
                            self.adopt(id, hint, now);
                        }
                    },
                }
            } else {
                match self.slots[i] {
                    Slot::Releasing { to, .. } if to == n => {
                        // Same new owner as before: its took marker (of the earlier epoch)
                        // still ends the hold.
                    }
                    Slot::Owned | Slot::Releasing { .. } => {
                        if n.is_some() {
                            let (since, after) = match self.slots[i] {
                                Slot::Releasing { since, after, .. } => (since, after),
                                _ => (now, old.epoch),
                            };
                            if self.slots[i] == Slot::Owned {
                                self.set_plane(id, PlaneState::Releasing);
                            }
                            self.slots[i] = Slot::Releasing {
                                to: n,
                                after,
                                since,
                                stalled: false,
                            };
                            self.push(Action::Release { id, epoch });
                            self.check_took(id);
                        } else {
                            // Nobody owns it any more (no members): drop it.
                            self.slots[i] = Slot::Foreign;
                            self.set_plane(id, PlaneState::Foreign);
                            self.push(Action::Release { id, epoch });
                        }
                    }
                    Slot::Awaiting { .. } => {
                        // We never took it; say so, so the next owner does not wait on us.
                        self.slots[i] = Slot::Foreign;
                        self.push(Action::Release { id, epoch });
                    }
                    Slot::Foreign => {
                        if o == Some(me) {
                            self.push(Action::Release { id, epoch });
                        }
                    }
                }
            }
        }
        self.check_finished(now);
    }

    // ----- status -----

    /// A snapshot for `swrouter cluster status`.
    pub fn status(&self) -> Status {
        let ids = |f: fn(&Slot) -> bool| -> Vec<Id> {
            (0..IDS)
                .filter(|i| f(&self.slots[*i]))
                .map(|i| i as Id)
                .collect()
        };
        let me = self.cfg.me;
        let mut nodes: BTreeSet<NodeId> = self.members.keys().copied().collect();
        nodes.insert(me);
        let members = nodes
            .into_iter()
            .map(|n| MemberStatus {
                node: n,
                weight: self
                    .members
                    .get(&n)
                    .map_or(if n == me { self.cfg.record.weight } else { 0 }, |r| {
                        r.weight
                    }),
                heard: n == me || self.heard.contains(&n),
                in_epoch: self.current.has_member(n),
                ids: self.current.count(n),
            })
            .collect();
        Status {
            me,
            epoch: self.current.epoch,
            committed_by: self.current.committed_by,
            owned: ids(|s| *s == Slot::Owned),
            releasing: ids(|s| matches!(s, Slot::Releasing { .. })),
            awaiting: ids(|s| matches!(s, Slot::Awaiting { .. })),
            last_commit: self.last_commit,
            epoch_applied: self.epoch_applied,
            etcd_reachable: self.etcd_ok,
            etcd_unreachable_since: self.etcd_down_since,
            registration: self.reg,
            fenced: self.fenced,
            fences: self.fences,
            realloc_refused: self.realloc_refused,
            refuse_reason: self.refuse_reason.clone(),
            proposer: self.is_proposer(),
            members,
            cas_sent: self.cas_sent,
            cas_committed: self.cas_committed,
            cas_lost: self.cas_lost,
            keepalives: self.keepalives,
            release_timeouts: self.release_timeouts,
            took_timeouts: self.took_timeouts,
            last_realloc: self.last_realloc.clone(),
        }
    }
}
