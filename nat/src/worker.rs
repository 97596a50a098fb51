//! One worker's NAT (the seed's "processor"): its session table, the VIDs it owns, its mirror
//! queue and its shadow of the sessions it backs up. The router calls [`NatWorker::outbound`] and
//! [`NatWorker::inbound`] per packet, [`NatWorker::poll_expired`] per burst, and moves mirror
//! batches between workers.

use crate::config::{Config, IfaceId};
use crate::dispatch::is_setup;
use crate::mirror::{MirrorOut, Record, RecordKind, Shadow, Wire};
use crate::session::{
    key5, Binding, Change, Endpoint, Expired, Miss, SessionInfo, SessionTable, TableParams,
};
use crate::sync::SyncEvent;
use crate::translate::{self, Kind, L4Csum, Side, Skip};
use crate::vid::{Geometry, Vid, WorkerId};
use netwire::ipv4::PROTO_TCP;

/// What the router does with a packet after the worker saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Translated: route and send it.
    Forward,
    /// Translated, and addressed to a pool address: dispatch it again as an inbound packet
    /// (hairpinning, RFC 4787 REQ-9, RFC 5382 REQ-8); its source is already the sender's
    /// outside address.
    Hairpin,
    /// No outside port left: drop it and answer ICMP destination unreachable, code 13
    /// (communication administratively prohibited), to the sender. The packet is untouched, so
    /// the router's own ICMP error path can quote it.
    Prohibited,
    /// Dropped, for a reason.
    Drop(NatDrop),
}

/// Why a worker dropped a packet; the discriminant indexes [`WorkerCounters::drops`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NatDrop {
    /// Truncated or inconsistent headers.
    Malformed,
    /// A fragment.
    Fragment,
    /// A protocol or message NAT does not translate.
    Unsupported,
    /// The source matches no rule for this interface.
    NoRule,
    /// Inside TCP without SYN and without a session.
    NonSyn,
    /// Inbound from a remote the mapping has no session with (APDF).
    Filtered,
    /// Inbound to no mapping, or an ICMP error about no session.
    NoSession,
    /// The packet's VID is not this worker's.
    Misdelivered,
    /// The session table is full.
    TableFull,
    /// The node is the HA standby: it translates the sessions its peer synced but creates
    /// none (both nodes share the pool; the active one allocates).
    Standby,
}

impl NatDrop {
    /// Every reason, in counter order.
    pub const ALL: [NatDrop; 10] = [
        NatDrop::Malformed,
        NatDrop::Fragment,
        NatDrop::Unsupported,
        NatDrop::NoRule,
        NatDrop::NonSyn,
        NatDrop::Filtered,
        NatDrop::NoSession,
        NatDrop::Misdelivered,
        NatDrop::TableFull,
        NatDrop::Standby,
    ];

    /// The stable counter name.
    pub fn as_str(self) -> &'static str {
        match self {
            NatDrop::Malformed => "nat-malformed",
            NatDrop::Fragment => "nat-fragment",
            NatDrop::Unsupported => "nat-unsupported",
            NatDrop::NoRule => "nat-no-rule",
            NatDrop::NonSyn => "nat-non-syn",
            NatDrop::Filtered => "nat-filtered",
            NatDrop::NoSession => "nat-no-session",
            NatDrop::Misdelivered => "nat-misdelivered",
            NatDrop::TableFull => "nat-table-full",
            NatDrop::Standby => "nat-standby",
        }
    }
}

/// Something the switch processor must hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerEvent {
    /// The endpoint's mapping is gone: remove it from the flow table.
    FlowGone(Endpoint),
    /// The endpoint got a new mapping outside a set-up request (its old one expired while a
    /// packet was on its way): point the flow table at `vid`.
    FlowMoved(Endpoint, Vid),
    /// The last session of an adopted (or extra) VID is gone: release the VID.
    VidDrained(Vid),
    /// Every block this worker allocates from is full for some new mapping: it asks for one
    /// more VID ([`NatWorker::handle_extra`] answers). Raised at most once a second.
    NeedVid,
}

/// A worker's counters (the router adds them to `swrouter status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerCounters {
    /// Packets translated inside → outside.
    pub out_translated: u64,
    /// Packets translated outside → inside.
    pub in_translated: u64,
    /// Hairpinned packets.
    pub hairpin: u64,
    /// ICMP errors translated (both ways).
    pub icmp_errors: u64,
    /// New sessions refused for want of a port (ICMP prohibited answered).
    pub exhausted: u64,
    /// Drops by reason, indexed by [`NatDrop`] (names from [`NatDrop::as_str`]).
    pub drops: [u64; NatDrop::ALL.len()],
    /// Packets that arrived here but whose VID this worker does not own (must stay 0).
    pub misdelivered: u64,
}

impl WorkerCounters {
    fn drop(&mut self, d: NatDrop) -> Verdict {
        self.drops[d as usize] += 1;
        if d == NatDrop::Misdelivered {
            self.misdelivered += 1;
        }
        Verdict::Drop(d)
    }
}

/// One worker.
#[derive(Debug)]
pub struct NatWorker {
    id: WorkerId,
    cfg: Config,
    geometry: Geometry,
    table: SessionTable,
    home: Option<Vid>,
    /// Bit per VID: owned (home or adopted).
    owned: Vec<bool>,
    mirror: MirrorOut,
    shadow: Shadow,
    expired: Vec<Expired>,
    events: Vec<WorkerEvent>,
    scratch: Vec<SessionInfo>,
    /// A set-up found every allocating block full since the last [`WorkerEvent::NeedVid`].
    need_vid: bool,
    /// When the last [`WorkerEvent::NeedVid`] was raised (seconds).
    asked_vid_at: Option<u32>,
    /// The node is HA active (or has no HA): it creates sessions and expires them.
    active: bool,
    /// Session changes are recorded for the HA peer ([`NatWorker::poll_sync`]).
    sync_on: bool,
    sync: Vec<SyncEvent>,
    /// Counters.
    pub counters: WorkerCounters,
}

impl NatWorker {
    /// A worker for a validated `cfg`, with hash/port key `seed`, starting at `now` seconds.
    pub fn new(id: WorkerId, cfg: &Config, seed: u64, now: u32) -> NatWorker {
        let geometry = Geometry::new(cfg.port_min, cfg.port_max, cfg.workers);
        let t = cfg.timeouts;
        let cap = cfg.max_sessions as usize;
        NatWorker {
            id,
            table: SessionTable::new(
                TableParams {
                    capacity: cfg.max_sessions,
                    timeouts: [t.tcp_established, t.tcp_transitory, t.udp, t.icmp],
                    geometry,
                    seed: seed ^ u64::from(id).wrapping_mul(0x9e37_79b9),
                    reserved: cfg.reserved,
                },
                now,
            ),
            cfg: cfg.clone(),
            geometry,
            home: None,
            owned: vec![false; usize::from(geometry.vids)],
            mirror: MirrorOut::new(cfg.mirror_queue as usize),
            shadow: Shadow::new(cap, seed.rotate_left(17)),
            expired: Vec::with_capacity(1024),
            events: Vec::with_capacity(1024),
            scratch: Vec::new(),
            need_vid: false,
            asked_vid_at: None,
            active: true,
            sync_on: false,
            sync: Vec::new(),
            counters: WorkerCounters::default(),
        }
    }

    /// This worker's id.
    pub fn id(&self) -> WorkerId {
        self.id
    }

    /// Sets the home VID the switch processor granted (claim 10).
    pub fn handle_grant(&mut self, vid: Vid) {
        self.home = Some(vid);
        self.table.set_home(Some(vid));
        if let Some(o) = self.owned.get_mut(usize::from(vid)) {
            *o = true;
        }
    }

    /// The switch processor granted an extra VID after [`WorkerEvent::NeedVid`]: new mappings
    /// allocate from it once the earlier blocks are full. It is released like an adopted VID
    /// when its last session has gone.
    pub fn handle_extra(&mut self, vid: Vid) {
        if let Some(o) = self.owned.get_mut(usize::from(vid)) {
            *o = true;
        }
        self.table.add_alloc(vid);
    }

    /// The VIDs new mappings allocate from, home first.
    pub fn allocating(&self) -> &[Vid] {
        self.table.allocating()
    }

    /// The home VID the switch processor granted, if any.
    pub fn home(&self) -> Option<Vid> {
        self.home
    }

    /// True when this worker owns `vid`.
    #[inline]
    pub fn owns(&self, vid: Vid) -> bool {
        self.owned.get(usize::from(vid)).copied().unwrap_or(false)
    }

    /// The session table (for status and tests).
    pub fn table(&self) -> &SessionTable {
        &self.table
    }

    /// The shadow (for status and tests).
    pub fn shadow(&self) -> &Shadow {
        &self.shadow
    }

    /// The mirror queue's overflow counter.
    pub fn mirror_overflow(&self) -> u64 {
        self.mirror.overflow
    }

    /// An inside packet routed out of `out_iface`, handed over for `vid` (the flow table's, or
    /// the switch processor's selection when `setup`). Translates it in place.
    pub fn outbound(
        &mut self,
        pkt: &mut [u8],
        csum: L4Csum,
        out_iface: IfaceId,
        vid: Vid,
        setup: bool,
        now: u32,
    ) -> Verdict {
        let f = match translate::parse(pkt) {
            Ok(f) => f,
            Err(e) => return self.counters.drop(skip_drop(e)),
        };
        if !self.owns(vid) {
            return self.counters.drop(NatDrop::Misdelivered);
        }
        let Some(rule) = self.cfg.rule_for(f.src, out_iface) else {
            return self.counters.drop(NatDrop::NoRule);
        };
        match f.kind {
            Kind::Plain | Kind::EchoRequest => {
                let ep = Endpoint {
                    proto: f.proto,
                    addr: f.src,
                    port: f.sport,
                };
                let create = setup || is_setup(f.proto, f.tcp_flags, self.cfg.non_syn);
                let pool = &self.cfg.rules[rule].pool;
                let id = self
                    .cfg
                    .cluster_key
                    .map(|k| crate::cluster::endpoint_id(k, ep.proto, ep.addr, ep.port));
                let r = self.table.outbound_for_id(
                    ep,
                    (f.dst, f.dport),
                    f.tcp_flags,
                    pool,
                    create && self.active,
                    now,
                    id,
                );
                let b = match r {
                    Ok(b) => b,
                    Err(Miss::NoSession) if create && !self.active => {
                        return self.counters.drop(NatDrop::Standby)
                    }
                    Err(m) => return self.miss(m, f.proto),
                };
                translate::rewrite(pkt, &f, Side::Src, b.addr, b.port, csum);
                self.after(&b, ep, vid, setup);
                self.counters.out_translated += 1;
                if self.cfg.is_pool_addr(f.dst) {
                    self.counters.hairpin += 1;
                    Verdict::Hairpin
                } else {
                    Verdict::Forward
                }
            }
            Kind::Error(q) => {
                // An inside host's error about a packet it received from q.dst... q.src.
                let k = key5(
                    q.proto,
                    u32::from(q.dst),
                    q.dport,
                    u32::from(q.src),
                    q.sport,
                );
                let Some(s) = self.table.peek_inside(k) else {
                    return self.counters.drop(NatDrop::NoSession);
                };
                translate::rewrite_error(
                    pkt,
                    &f,
                    Side::Src,
                    s.pool_addr,
                    Side::Dst,
                    s.pool_addr,
                    s.outside_port,
                );
                self.counters.icmp_errors += 1;
                self.counters.out_translated += 1;
                Verdict::Forward
            }
            Kind::EchoReply => self.counters.drop(NatDrop::Unsupported),
        }
    }

    /// A packet that arrived on an outside interface for a pool address (or a hairpinned
    /// one). Translates it in place.
    pub fn inbound(&mut self, pkt: &mut [u8], csum: L4Csum, now: u32) -> Verdict {
        let f = match translate::parse(pkt) {
            Ok(f) => f,
            Err(e) => return self.counters.drop(skip_drop(e)),
        };
        match f.kind {
            Kind::Plain | Kind::EchoReply => {
                if !self
                    .geometry
                    .vid_of_port(f.dport)
                    .is_some_and(|v| self.owns(v))
                {
                    return self.counters.drop(NatDrop::Misdelivered);
                }
                let r = self.table.inbound(
                    f.proto,
                    (f.dst, f.dport),
                    (f.src, f.sport),
                    f.tcp_flags,
                    now,
                );
                let b = match r {
                    Ok(b) => b,
                    Err(m) => return self.miss(m, f.proto),
                };
                translate::rewrite(pkt, &f, Side::Dst, b.addr, b.port, csum);
                if b.change != Change::None {
                    self.mirror_session(RecordKind::State, b.session);
                }
                self.counters.in_translated += 1;
                Verdict::Forward
            }
            Kind::Error(q) => {
                if !self
                    .geometry
                    .vid_of_port(q.sport)
                    .is_some_and(|v| self.owns(v))
                {
                    return self.counters.drop(NatDrop::Misdelivered);
                }
                // The quote is the packet we sent: outside tuple (pool, port) → (remote).
                let k = key5(
                    q.proto,
                    u32::from(q.src),
                    q.sport,
                    u32::from(q.dst),
                    q.dport,
                );
                let Some(s) = self.table.peek_outside(k) else {
                    return self.counters.drop(NatDrop::NoSession);
                };
                translate::rewrite_error(
                    pkt,
                    &f,
                    Side::Dst,
                    s.inside_addr,
                    Side::Src,
                    s.inside_addr,
                    s.inside_port,
                );
                self.counters.icmp_errors += 1;
                self.counters.in_translated += 1;
                Verdict::Forward
            }
            Kind::EchoRequest => self.counters.drop(NatDrop::Unsupported),
        }
    }

    /// Mirrors what a packet did and reports a new mapping whose VID is not the one the flow
    /// table holds for the endpoint (`handed`): made outside a set-up, or in an extra VID.
    fn after(&mut self, b: &Binding, ep: Endpoint, handed: Vid, setup: bool) {
        match b.change {
            Change::None => {}
            Change::Created => self.mirror_session(RecordKind::Created, b.session),
            Change::State => self.mirror_session(RecordKind::State, b.session),
        }
        if b.new_mapping {
            if let Some(v) = self.geometry.vid_of_port(b.port) {
                if !setup || v != handed {
                    self.events.push(WorkerEvent::FlowMoved(ep, v));
                }
            }
        }
    }

    fn mirror_session(&mut self, kind: RecordKind, s: u32) {
        let info = self.table.info(s);
        self.mirror.push(Record { kind, info });
        if self.sync_on {
            self.sync.push(SyncEvent::Upsert(info));
        }
    }

    fn miss(&mut self, m: Miss, proto: u8) -> Verdict {
        match m {
            Miss::Exhausted | Miss::NoVid => {
                self.counters.exhausted += 1;
                self.need_vid = true;
                Verdict::Prohibited
            }
            Miss::TableFull => self.counters.drop(NatDrop::TableFull),
            Miss::Filtered => self.counters.drop(NatDrop::Filtered),
            Miss::NoMapping => self.counters.drop(NatDrop::NoSession),
            Miss::NoSession if proto == PROTO_TCP => self.counters.drop(NatDrop::NonSyn),
            Miss::NoSession => self.counters.drop(NatDrop::NoSession),
        }
    }

    /// Expires sessions idle past their timeout (at most `budget` units of work), mirrors the
    /// removals, and appends what the switch processor must hear to `out`, with any events
    /// packets raised since the last call.
    pub fn poll_expired(&mut self, now: u32, budget: usize, out: &mut Vec<WorkerEvent>) -> usize {
        // Taken out and put back so the loop can use `self`; the buffer keeps its capacity.
        let mut expired = std::mem::take(&mut self.expired);
        // A standby keeps its peer's sessions until the peer deletes them.
        let budget = if self.active { budget } else { 0 };
        let work = self.table.expire(now, budget, &mut expired);
        for e in expired.drain(..) {
            if self.sync_on {
                self.sync.push(SyncEvent::Delete(e.info));
            }
            self.removed(&e, out);
        }
        self.expired = expired;
        if self.need_vid
            && self
                .asked_vid_at
                .map_or(true, |t| now >= t.saturating_add(1))
        {
            self.need_vid = false;
            self.asked_vid_at = Some(now);
            out.push(WorkerEvent::NeedVid);
        }
        out.append(&mut self.events);
        work
    }

    /// Mirrors a removed session and reports what the switch processor must hear.
    fn removed(&mut self, e: &Expired, out: &mut Vec<WorkerEvent>) {
        self.mirror.push(Record {
            kind: RecordKind::Removed,
            info: e.info,
        });
        if e.mapping_gone {
            out.push(WorkerEvent::FlowGone(e.info.endpoint()));
            // A port came free: an older "blocks full" is stale.
            self.need_vid = false;
        }
        if e.vid_empty {
            if let Some(v) = self.geometry.vid_of_port(e.info.outside_port) {
                if Some(v) != self.home && self.owns(v) {
                    self.owned[usize::from(v)] = false;
                    self.table.remove_alloc(v);
                    out.push(WorkerEvent::VidDrained(v));
                }
            }
        }
    }

    /// Removes every session whose outside port carries an id of `ids` (a router cluster moved
    /// those ids to another node, which adopts them from the records this node published):
    /// nothing is recorded for the sync, so the published records stay until the new owner
    /// took them; what the switch processor must hear goes to `out`. Returns how many went.
    pub fn drop_ids(&mut self, ids: &crate::cluster::IdSet, out: &mut Vec<WorkerEvent>) -> usize {
        let mut gone = std::mem::take(&mut self.expired);
        self.table.drop_ids(ids, &mut gone);
        let n = gone.len();
        for e in gone.drain(..) {
            self.removed(&e, out);
        }
        self.expired = gone;
        n
    }

    /// Sets the node's HA role. A standby creates no session (a packet that would need one
    /// is dropped as [`NatDrop::Standby`]) and expires none (its peer's deletes remove them);
    /// becoming active restarts every session's timer from `now`: they are its own now.
    pub fn set_active(&mut self, active: bool, now: u32) {
        if active && !self.active {
            self.table.restart_timers(now);
        }
        self.active = active;
    }

    /// True when the node is HA active (or without HA).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Records session creations, TCP state changes and removals for the HA peer (off by
    /// default; the router turns it on while the node is active and syncs).
    pub fn set_sync(&mut self, on: bool) {
        self.sync_on = on;
        if !on {
            self.sync.clear();
        }
    }

    /// Moves the recorded HA sync events into `out`, oldest first.
    pub fn poll_sync(&mut self, out: &mut Vec<SyncEvent>) {
        out.append(&mut self.sync);
    }

    /// Every live session as an upsert (a full re-export for the HA peer).
    pub fn export(&self, out: &mut Vec<SyncEvent>) {
        let mut all = Vec::new();
        self.table.list(&mut all);
        out.extend(all.into_iter().map(|(s, _)| SyncEvent::Upsert(s)));
    }

    /// Applies a session the HA peer synced: an upsert installs or updates it with its
    /// outside port (this worker owns that port's VID from now on, as it owns an adopted VID:
    /// released once its last session has gone); a delete removes it as expiry would (the
    /// switch processor hears of a mapping or VID that went). False when refused: the port is
    /// outside the range, the table is full, or the endpoint or port is mapped otherwise here.
    pub fn apply_synced(&mut self, ev: &SyncEvent, now: u32) -> bool {
        match ev {
            SyncEvent::Upsert(info) => {
                let Some(v) = self.geometry.vid_of_port(info.outside_port) else {
                    return false;
                };
                let mappings = self.table.mappings();
                if !self.table.upsert_synced(info, now) {
                    return false;
                }
                if let Some(o) = self.owned.get_mut(usize::from(v)) {
                    *o = true;
                }
                self.mirror.push(Record {
                    kind: RecordKind::Created,
                    info: *info,
                });
                if self.table.mappings() > mappings {
                    // After any FlowGone of an earlier mapping of the endpoint this worker
                    // reported: the flow table ends pointing here.
                    self.events.push(WorkerEvent::FlowMoved(info.endpoint(), v));
                }
                true
            }
            SyncEvent::Delete(info) => {
                let k = key5(
                    info.proto,
                    u32::from(info.inside_addr),
                    info.inside_port,
                    u32::from(info.remote_addr),
                    info.remote_port,
                );
                let Some(e) = self.table.remove_inside(k) else {
                    return false;
                };
                let mut events = std::mem::take(&mut self.events);
                self.removed(&e, &mut events);
                self.events = events;
                true
            }
        }
    }

    /// Moves up to `max` mirror records into `out`; the router sends each to the backup of
    /// its VID (`vid_of_record`).
    pub fn poll_mirror(&mut self, out: &mut Vec<Wire>, max: usize) -> usize {
        self.mirror.poll_batch(out, max)
    }

    /// As a backup: applies a batch of another worker's records to the shadow.
    pub fn handle_mirror(&mut self, batch: &[Wire]) {
        self.shadow.apply(batch);
    }

    /// The owner's full state of `vid` as Created records, for a new backup.
    pub fn snapshot(&self, vid: Vid, out: &mut Vec<Wire>) {
        let mut infos = Vec::new();
        self.table.snapshot_vid(vid, &mut infos);
        out.extend(infos.into_iter().map(|info| {
            Record {
                kind: RecordKind::Created,
                info,
            }
            .encode()
        }));
    }

    /// This worker now owns `vid` (its owner failed, claim 14): the shadow sessions of `vid`
    /// become live with their original outside ports. Returns how many.
    pub fn take_over(&mut self, vid: Vid, now: u32) -> usize {
        if let Some(o) = self.owned.get_mut(usize::from(vid)) {
            *o = true;
        }
        self.scratch.clear();
        self.shadow.take_vid(vid, &self.geometry, &mut self.scratch);
        let mut n = 0;
        for s in &self.scratch {
            n += usize::from(self.table.adopt(s, now));
        }
        n
    }

    /// Gives `vid` (adopted, not home) to a restarted worker that got it as its home: its
    /// sessions leave the live table for the shadow (this worker becomes the VID's backup) and
    /// go into `out` as Created records for the new owner, which applies them and takes over.
    pub fn hand_back(&mut self, vid: Vid, out: &mut Vec<Wire>) {
        if let Some(o) = self.owned.get_mut(usize::from(vid)) {
            *o = false;
        }
        self.table.remove_alloc(vid);
        let mut gone = Vec::new();
        self.table.drop_vid(vid, &mut gone);
        for e in gone {
            let r = Record {
                kind: RecordKind::Created,
                info: e.info,
            };
            self.shadow.apply_one(&r);
            out.push(r.encode());
        }
    }

    /// This worker is no longer `vid`'s backup: drops its shadow of it.
    pub fn forget_shadow(&mut self, vid: Vid) {
        self.shadow.forget_vid(vid, &self.geometry);
    }
}

/// The VID a mirror record belongs to (the router routes it to that VID's backup).
pub fn vid_of_record(g: &Geometry, w: &Wire) -> Option<Vid> {
    Record::decode(w).and_then(|r| g.vid_of_port(r.info.outside_port))
}

fn skip_drop(s: Skip) -> NatDrop {
    match s {
        Skip::Malformed => NatDrop::Malformed,
        Skip::Fragment => NatDrop::Fragment,
        Skip::Unsupported => NatDrop::Unsupported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Prefix, Rule};
    use crate::translate::build;
    use std::net::Ipv4Addr;

    fn worker() -> NatWorker {
        let cfg = Config {
            rules: vec![Rule {
                inside: vec![Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 8)],
                outside: 1,
                pool: vec![Ipv4Addr::new(192, 0, 2, 1)],
            }],
            workers: 2,
            max_sessions: 64,
            ..Config::default()
        };
        let mut w = NatWorker::new(0, &cfg, 1, 0);
        w.handle_grant(0);
        w
    }

    #[test]
    fn a_mapping_made_outside_a_setup_moves_the_flow() {
        // The flow table still sent a packet here after its mapping expired: the worker makes
        // a new one and tells the switch processor where the endpoint lives now.
        let mut w = worker();
        let (a, r) = (
            (Ipv4Addr::new(10, 0, 0, 1), 5000),
            (Ipv4Addr::new(198, 51, 100, 1), 53),
        );
        let mut p = build::udp(a, r, 4, false);
        assert_eq!(
            w.outbound(&mut p, L4Csum::Full, 1, 0, false, 0),
            Verdict::Forward
        );
        let mut ev = Vec::new();
        w.poll_expired(0, 10, &mut ev);
        let ep = Endpoint {
            proto: netwire::ipv4::PROTO_UDP,
            addr: a.0,
            port: a.1,
        };
        assert_eq!(ev, vec![WorkerEvent::FlowMoved(ep, 0)]);
        // Expiry reports the mapping gone, and mirrors the removal.
        w.poll_expired(300, 10_000, &mut ev);
        assert_eq!(ev[1], WorkerEvent::FlowGone(ep));
        let mut batch = Vec::new();
        assert_eq!(w.poll_mirror(&mut batch, 10), 2);
        assert_eq!(Record::decode(&batch[1]).unwrap().kind, RecordKind::Removed);
    }

    #[test]
    fn in_a_cluster_the_outside_port_carries_the_inside_endpoint_s_id() {
        let key = 0x5eed_c1a5_7e12_0001;
        let cfg = Config {
            rules: vec![Rule {
                inside: vec![Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 8)],
                outside: 1,
                pool: vec![Ipv4Addr::new(192, 0, 2, 1)],
            }],
            workers: 2,
            max_sessions: 64,
            cluster_key: Some(key),
            ..Config::default()
        };
        let mut w = NatWorker::new(0, &cfg, 1, 0);
        w.handle_grant(0);
        for port in 5000..5020u16 {
            let inside = Ipv4Addr::new(10, 0, 0, 1);
            let mut p = build::udp(
                (inside, port),
                (Ipv4Addr::new(198, 51, 100, 1), 53),
                4,
                false,
            );
            assert_eq!(
                w.outbound(&mut p, L4Csum::Full, 1, 0, true, 0),
                Verdict::Forward
            );
            let f = crate::translate::parse(&p).unwrap();
            assert_eq!(
                crate::cluster::id_of_port(cfg.port_min, f.sport),
                crate::cluster::endpoint_id(key, netwire::ipv4::PROTO_UDP, inside, port),
                "port {}",
                f.sport
            );
        }
    }

    #[test]
    fn misdelivered_packets_are_counted_not_translated() {
        let mut w = worker();
        let p = build::udp(
            (Ipv4Addr::new(10, 0, 0, 1), 5000),
            (Ipv4Addr::new(8, 8, 8, 8), 53),
            4,
            false,
        );
        let mut b = p.clone();
        assert_eq!(
            w.outbound(&mut b, L4Csum::Full, 1, 3, false, 0),
            Verdict::Drop(NatDrop::Misdelivered)
        );
        assert_eq!(b, p);
        let mut r = build::udp(
            (Ipv4Addr::new(8, 8, 8, 8), 53),
            (Ipv4Addr::new(192, 0, 2, 1), 60000),
            4,
            false,
        );
        assert_eq!(
            w.inbound(&mut r, L4Csum::Full, 0),
            Verdict::Drop(NatDrop::Misdelivered)
        );
        assert_eq!(w.counters.misdelivered, 2);
    }

    #[test]
    fn drop_names_follow_counter_order() {
        for (i, d) in NatDrop::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i);
            assert!(d.as_str().starts_with("nat-"));
        }
        let mut c = WorkerCounters::default();
        assert_eq!(
            c.drop(NatDrop::Misdelivered),
            Verdict::Drop(NatDrop::Misdelivered)
        );
        assert_eq!((c.drops[7], c.misdelivered), (1, 1));
    }
}
#[cfg(test)]
mod extra_vid_tests {
    use super::*;
    use crate::config::{Prefix, Rule};
    use crate::translate::build;
    use std::net::Ipv4Addr;

    #[test]
    fn a_full_block_asks_for_an_extra_vid_and_allocates_from_it() {
        let cfg = Config {
            rules: vec![Rule {
                inside: vec![Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 8)],
                outside: 1,
                pool: vec![Ipv4Addr::new(192, 0, 2, 1)],
            }],
            workers: 1,
            max_sessions: 64,
            port_min: 1024,
            port_max: 1024 + 7,
            ..Config::default()
        };
        let mut w = NatWorker::new(0, &cfg, 1, 0);
        let g = Geometry::new(cfg.port_min, cfg.port_max, 1);
        assert_eq!((g.vids, g.block_len()), (2, 4));
        w.handle_grant(0);
        let remote = (Ipv4Addr::new(198, 51, 100, 1), 53);
        let send = |w: &mut NatWorker, port: u16| {
            let mut p = build::udp((Ipv4Addr::new(10, 0, 0, 1), port), remote, 4, false);
            let v = w.outbound(&mut p, L4Csum::Full, 1, 0, true, 0);
            (v, translate::parse(&p).unwrap().sport)
        };
        for port in 0..4 {
            let (v, out) = send(&mut w, 5000 + port);
            assert_eq!(v, Verdict::Forward);
            assert!((1024..1028).contains(&out));
        }
        // The home block is full: refused, and the worker asks for more (once).
        assert_eq!(send(&mut w, 6000).0, Verdict::Prohibited);
        assert_eq!(send(&mut w, 6001).0, Verdict::Prohibited);
        let mut ev = Vec::new();
        w.poll_expired(0, 100, &mut ev);
        assert_eq!(ev, vec![WorkerEvent::NeedVid]);
        ev.clear();
        w.poll_expired(0, 100, &mut ev);
        assert!(ev.is_empty());
        // With the extra VID the next set-up gets a port there, and the flow table hears of it.
        w.handle_extra(1);
        let (v, out) = send(&mut w, 6002);
        assert_eq!(v, Verdict::Forward);
        assert!((1028..1032).contains(&out));
        w.poll_expired(0, 100, &mut ev);
        assert_eq!(
            ev,
            vec![WorkerEvent::FlowMoved(
                Endpoint {
                    proto: netwire::ipv4::PROTO_UDP,
                    addr: Ipv4Addr::new(10, 0, 0, 1),
                    port: 6002
                },
                1
            )]
        );
        assert_eq!(w.allocating(), &[0, 1]);
        // Once its last session has gone the extra VID is released and no longer allocated.
        ev.clear();
        w.poll_expired(1000, 10_000, &mut ev);
        assert!(ev.contains(&WorkerEvent::VidDrained(1)));
        assert!(!ev.contains(&WorkerEvent::VidDrained(0)));
        assert_eq!(w.allocating(), &[0]);
    }
}

#[cfg(test)]
mod ha_sync_tests {
    use super::*;
    use crate::config::{Prefix, Rule};
    use crate::translate::build;
    use netwire::tcp::flags;
    use std::net::Ipv4Addr;

    fn cfg(workers: u16) -> Config {
        Config {
            rules: vec![Rule {
                inside: vec![Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 8)],
                outside: 1,
                pool: vec![Ipv4Addr::new(192, 0, 2, 1)],
            }],
            workers,
            max_sessions: 64,
            ..Config::default()
        }
    }

    const IN: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 0, 0, 1), 40000);
    const REMOTE: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 51, 100, 1), 80);

    #[test]
    fn the_active_records_changes_and_the_standby_translates_them() {
        let mut a = NatWorker::new(0, &cfg(2), 1, 0);
        a.handle_grant(0);
        a.set_sync(true);
        let mut syn = build::tcp(IN, REMOTE, flags::SYN, 4);
        assert_eq!(
            a.outbound(&mut syn, L4Csum::Full, 1, 0, true, 10),
            Verdict::Forward
        );
        let out = translate::parse(&syn).unwrap();
        let mut evs = Vec::new();
        a.poll_sync(&mut evs);
        assert_eq!(evs.len(), 1);
        let SyncEvent::Upsert(info) = evs[0] else {
            panic!("an upsert")
        };
        assert_eq!((info.pool_addr, info.outside_port), (out.src, out.sport));
        // An established packet records nothing.
        let mut again = build::tcp(IN, REMOTE, flags::ACK, 4);
        a.outbound(&mut again, L4Csum::Full, 1, 0, false, 11);
        a.poll_sync(&mut evs);
        assert_eq!(evs.len(), 1);

        // The standby (one worker, another geometry) holds it and translates the reply.
        let mut b = NatWorker::new(0, &cfg(1), 2, 0);
        b.handle_grant(0);
        b.set_active(false, 0);
        for ev in &evs {
            assert!(b.apply_synced(ev, 100));
        }
        let mut reply = build::tcp(REMOTE, (out.src, out.sport), flags::SYN | flags::ACK, 4);
        assert_eq!(b.inbound(&mut reply, L4Csum::Full, 101), Verdict::Forward);
        assert_eq!(translate::parse(&reply).unwrap().dst, IN.0);
        // It creates nothing: a new flow is dropped as standby.
        let mut other = build::tcp((IN.0, 40001), REMOTE, flags::SYN, 4);
        assert_eq!(
            b.outbound(&mut other, L4Csum::Full, 1, 0, true, 101),
            Verdict::Drop(NatDrop::Standby)
        );
        assert_eq!(b.counters.drops[NatDrop::Standby as usize], 1);
        // Nor does it expire the peer's session while standby.
        let mut ev = Vec::new();
        b.poll_expired(100_000, 10_000, &mut ev);
        assert_eq!(b.table().len(), 1);
        // Active, the session is its own with a fresh timer (established by the SYN-ACK the
        // standby translated: 7440 s from now).
        b.set_active(true, 100_000);
        b.poll_expired(100_000 + 7439, 100_000, &mut ev);
        assert_eq!(b.table().len(), 1);
        b.poll_expired(100_000 + 7440, 100_000, &mut ev);
        assert_eq!(b.table().len(), 0);
    }

    #[test]
    fn expiry_records_a_delete_the_standby_applies() {
        let mut a = NatWorker::new(0, &cfg(2), 1, 0);
        a.handle_grant(0);
        a.set_sync(true);
        let mut p = build::udp(IN, REMOTE, 4, false);
        a.outbound(&mut p, L4Csum::Full, 1, 0, true, 0);
        let mut ev = Vec::new();
        a.poll_expired(300, 10_000, &mut ev);
        let mut evs = Vec::new();
        a.poll_sync(&mut evs);
        assert!(matches!(
            evs[..],
            [SyncEvent::Upsert(_), SyncEvent::Delete(_)]
        ));
        let mut b = NatWorker::new(0, &cfg(2), 2, 0);
        b.handle_grant(1);
        b.set_active(false, 0);
        assert!(b.apply_synced(&evs[0], 1));
        assert_eq!(b.table().len(), 1);
        // The delete goes through the key alone, as decoded from a delete record.
        let (k, _) = crate::sync::encode(match &evs[1] {
            SyncEvent::Delete(s) => s,
            _ => unreachable!(),
        });
        let del = crate::sync::decode_delete(&k).unwrap();
        assert!(b.apply_synced(&del, 2));
        assert_eq!(b.table().len(), 0);
        let mut out = Vec::new();
        b.poll_expired(2, 0, &mut out);
        // The mapping went, and the VID it held (not b's home) was released.
        assert!(out.iter().any(|e| matches!(e, WorkerEvent::FlowGone(_))));
        assert!(out.iter().any(|e| matches!(e, WorkerEvent::VidDrained(0))));
        assert!(!b.apply_synced(&del, 3), "an unknown session");
    }
}
