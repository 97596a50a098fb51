//! A worker's session table: endpoint-independent mappings, per-remote sessions, TCP state for
//! timeouts, port allocation from the worker's VID block, and expiry on a timer wheel.
//!
//! **Mappings (RFC 4787 REQ-1, RFC 5382 REQ-1).** An inside endpoint (protocol, address, port or
//! ICMP identifier) has one mapping to (pool address, outside port), shared by every session of
//! that endpoint whatever the remote: endpoint-independent mapping. The pool address is chosen
//! by a hash of the inside address, so all of a host's mappings use the same one ("paired"
//! pooling, RFC 4787 REQ-2).
//!
//! **Sessions and filtering (RFC 4787 REQ-8, RFC 5382 REQ-3).** A session is a mapping plus one
//! remote endpoint. Inbound packets are looked up by (protocol, pool address, outside port,
//! remote address, remote port): only a remote the inside endpoint has sent to gets in
//! (address-and-port-dependent filtering); one that hits a mapping but no session is counted as
//! `filtered`.
//!
//! **Ports.** New mappings take their outside port from the worker's home VID block: a random
//! start, then linear probing. A full block is reported as exhaustion (the worker answers ICMP
//! administratively prohibited). ICMP identifiers share the scheme, per protocol.
//!
//! **Time.** `now` is whole seconds on the caller's monotonic clock (the router passes seconds
//! since it started). A packet only stores `now` in its session; [`SessionTable::expire`] walks a
//! 1024-slot wheel of one-second slots, re-filing a session whose deadline moved and removing one
//! whose deadline passed. It does at most `budget` units of work per call and resumes where it
//! stopped, so expiry is at most a second late plus whatever the budget defers. Deadlines further
//! than the wheel holds are filed at its far end and re-filed when reached.
//!
//! **Memory.** Sessions and mappings live in slabs sized at construction, and the four hash maps
//! reserve twice the session capacity, so lookups and updates never allocate and inserts do not in
//! practice (std's map only reallocates when tombstones and entries exceed its reserve; removal
//! of tombstones by an in-place rehash does not allocate). Established flows never insert.

use crate::cluster;
use crate::hash::{MixState, SplitMix64};
use crate::vid::{Geometry, Vid};
use netwire::ipv4::{PROTO_TCP, PROTO_UDP};
use netwire::tcp::flags;
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// Slots of the expiry wheel (one second each).
const WHEEL: u32 = 1024;
/// End of a list.
const NIL: u32 = u32::MAX;

/// TCP state bits a session keeps (enough to pick a timeout, RFC 5382 §5).
pub mod tcp_state {
    /// SYN seen from the inside.
    pub const SYN_OUT: u8 = 0x01;
    /// SYN seen from the outside (the SYN-ACK).
    pub const SYN_IN: u8 = 0x02;
    /// FIN seen from the inside.
    pub const FIN_OUT: u8 = 0x04;
    /// FIN seen from the outside.
    pub const FIN_IN: u8 = 0x08;
    /// RST seen either way.
    pub const RST: u8 = 0x10;
}

/// Which way a packet crosses the NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Inside to outside.
    Out,
    /// Outside to inside.
    In,
}

/// The timeout a session is under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TimeoutClass {
    /// TCP with SYN seen both ways and not closing.
    TcpEstablished = 0,
    /// TCP half-open, closing (FIN both ways) or reset.
    TcpTransitory = 1,
    /// UDP.
    Udp = 2,
    /// ICMP query.
    Icmp = 3,
}

impl TimeoutClass {
    /// The class of a session of `proto` in TCP state `tcp`.
    pub fn of(proto: u8, tcp: u8) -> TimeoutClass {
        use tcp_state::*;
        match proto {
            PROTO_TCP => {
                if tcp & RST != 0 || tcp & (FIN_OUT | FIN_IN) == FIN_OUT | FIN_IN {
                    TimeoutClass::TcpTransitory
                } else if tcp & (SYN_OUT | SYN_IN) == SYN_OUT | SYN_IN {
                    TimeoutClass::TcpEstablished
                } else {
                    TimeoutClass::TcpTransitory
                }
            }
            PROTO_UDP => TimeoutClass::Udp,
            _ => TimeoutClass::Icmp,
        }
    }
}

/// The TCP state after a segment with `tcp_flags` went `way`.
pub fn tcp_next(state: u8, tcp_flags: u8, way: Way) -> u8 {
    use tcp_state::*;
    let mut s = state;
    if tcp_flags & flags::RST != 0 {
        return s | RST;
    }
    if tcp_flags & flags::SYN != 0 {
        let closed = s & RST != 0 || s & (FIN_OUT | FIN_IN) == FIN_OUT | FIN_IN;
        if way == Way::Out && tcp_flags & flags::ACK == 0 && closed {
            // The client reuses the 4-tuple (a new connection after TIME_WAIT): start over.
            s = 0;
        }
        s |= if way == Way::Out { SYN_OUT } else { SYN_IN };
    }
    if tcp_flags & flags::FIN != 0 {
        s |= if way == Way::Out { FIN_OUT } else { FIN_IN };
    }
    s
}

/// An inside endpoint: the key of an endpoint-independent mapping and of the flow table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// IP protocol.
    pub proto: u8,
    /// Inside address.
    pub addr: Ipv4Addr,
    /// Inside port, or ICMP identifier.
    pub port: u16,
}

impl Endpoint {
    /// The packed key.
    #[inline]
    pub fn key(&self) -> u64 {
        key3(self.proto, u32::from(self.addr), self.port)
    }
}

/// Everything about one session: what a mirror record carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    /// IP protocol.
    pub proto: u8,
    /// TCP state bits ([`tcp_state`]); 0 for UDP and ICMP.
    pub tcp: u8,
    /// Inside address.
    pub inside_addr: Ipv4Addr,
    /// Inside port or ICMP identifier.
    pub inside_port: u16,
    /// Pool address.
    pub pool_addr: Ipv4Addr,
    /// Outside port or ICMP identifier.
    pub outside_port: u16,
    /// Remote address.
    pub remote_addr: Ipv4Addr,
    /// Remote port (0 for ICMP).
    pub remote_port: u16,
}

impl SessionInfo {
    /// The inside endpoint.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            proto: self.proto,
            addr: self.inside_addr,
            port: self.inside_port,
        }
    }

    /// The outside lookup key.
    pub fn outside_key(&self) -> u128 {
        key5(
            self.proto,
            u32::from(self.pool_addr),
            self.outside_port,
            u32::from(self.remote_addr),
            self.remote_port,
        )
    }
}

/// What a packet did to its session, for the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing the backup needs.
    None,
    /// A new session.
    Created,
    /// A TCP state change.
    State,
}

/// A successful lookup: the address and port to write, and the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// Outbound: the pool address; inbound: the inside address.
    pub addr: Ipv4Addr,
    /// Outbound: the outside port; inbound: the inside port.
    pub port: u16,
    /// The session's slot (for [`SessionTable::info`]).
    pub session: u32,
    /// What changed.
    pub change: Change,
    /// True when this packet created the endpoint's mapping (the flow table needs it).
    pub new_mapping: bool,
}

/// Why a lookup found nothing to translate with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    /// Outbound without a session, and the packet may not create one.
    NoSession,
    /// Inbound to a mapping from a remote it has no session with (APDF).
    Filtered,
    /// Inbound to no mapping at all.
    NoMapping,
    /// No free outside port in the home block.
    Exhausted,
    /// The session slab is full.
    TableFull,
    /// The worker has no home VID to allocate from.
    NoVid,
}

/// A session the wheel removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    /// The session.
    pub info: SessionInfo,
    /// True when it was its mapping's last session, so the mapping went too.
    pub mapping_gone: bool,
    /// True when it was the last session of its VID in this table.
    pub vid_empty: bool,
}

/// Table counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableCounters {
    /// Sessions created (adoptions not included).
    pub created: u64,
    /// Sessions expired.
    pub expired: u64,
    /// New mappings that found no free port.
    pub exhausted: u64,
    /// Inbound packets filtered (mapping without this remote).
    pub filtered: u64,
    /// Inbound packets to no mapping.
    pub no_mapping: u64,
    /// Sessions refused because the slab was full.
    pub table_full: u64,
    /// Sessions adopted from a backup shadow.
    pub adopted: u64,
}

#[derive(Debug, Clone, Copy)]
struct Session {
    inside_addr: u32,
    remote_addr: u32,
    inside_port: u16,
    remote_port: u16,
    mapping: u32,
    last_seen: u32,
    due: u32,
    next: u32,
    prev: u32,
    proto: u8,
    tcp: u8,
    live: bool,
    linked: bool,
}

#[derive(Debug, Clone, Copy)]
struct Mapping {
    inside_addr: u32,
    pool_addr: u32,
    inside_port: u16,
    outside_port: u16,
    proto: u8,
    sessions: u32,
}

/// Packs a 5-tuple (protocol, local address and port, remote address and port).
#[inline]
pub fn key5(proto: u8, a: u32, ap: u16, b: u32, bp: u16) -> u128 {
    (u128::from(proto) << 96)
        | (u128::from(a) << 64)
        | (u128::from(ap) << 48)
        | (u128::from(b) << 16)
        | u128::from(bp)
}

/// Packs an endpoint (protocol, address, port).
#[inline]
pub fn key3(proto: u8, a: u32, p: u16) -> u64 {
    (u64::from(proto) << 48) | (u64::from(a) << 16) | u64::from(p)
}

/// Sizes of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableParams {
    /// Session capacity.
    pub capacity: u32,
    /// Timeouts in seconds by [`TimeoutClass`].
    pub timeouts: [u32; 4],
    /// The VID geometry.
    pub geometry: Geometry,
    /// Hash and port-probe key.
    pub seed: u64,
    /// Ports never allocated.
    pub reserved: crate::config::ReservedPorts,
}

/// One worker's sessions.
#[derive(Debug)]
pub struct SessionTable {
    p: TableParams,
    /// The VIDs new mappings allocate from, in order: the home first, then extra VIDs.
    alloc: Vec<Vid>,
    /// Per (protocol, pool address): one bit per port of the range, set when the port is
    /// mapped or reserved, so finding a free port (or knowing there is none) costs a scan of
    /// words, not a hash lookup per port.
    used_ports: HashMap<u64, Box<[u64]>, MixState>,
    sessions: Vec<Session>,
    free_sessions: Vec<u32>,
    mappings: Vec<Mapping>,
    free_mappings: Vec<u32>,
    by_inside: HashMap<u128, u32, MixState>,
    by_outside: HashMap<u128, u32, MixState>,
    map_by_endpoint: HashMap<u64, u32, MixState>,
    map_by_outside: HashMap<u64, u32, MixState>,
    per_vid: Vec<u32>,
    wheel: Vec<u32>,
    cursor: u32,
    live: u32,
    rng: SplitMix64,
    /// Counters.
    pub counters: TableCounters,
}

impl SessionTable {
    /// An empty table with everything preallocated; `now` starts the wheel.
    pub fn new(p: TableParams, now: u32) -> SessionTable {
        let cap = p.capacity as usize;
        let map = |n: usize| HashMap::with_capacity_and_hasher(n, MixState::new(p.seed));
        SessionTable {
            alloc: Vec::new(),
            used_ports: HashMap::with_hasher(MixState::new(p.seed)),
            sessions: Vec::with_capacity(cap),
            free_sessions: Vec::with_capacity(cap),
            mappings: Vec::with_capacity(cap),
            free_mappings: Vec::with_capacity(cap),
            by_inside: map(cap * 2),
            by_outside: map(cap * 2),
            map_by_endpoint: HashMap::with_capacity_and_hasher(cap * 2, MixState::new(p.seed)),
            map_by_outside: HashMap::with_capacity_and_hasher(cap * 2, MixState::new(p.seed)),
            per_vid: vec![0; usize::from(p.geometry.vids)],
            wheel: vec![NIL; WHEEL as usize],
            cursor: now,
            live: 0,
            rng: SplitMix64::new(p.seed ^ 0x6e61_7434_3400),
            counters: TableCounters::default(),
            p,
        }
    }

    /// Sets the VID new mappings allocate from first (its home); extra VIDs are dropped.
    pub fn set_home(&mut self, vid: Option<Vid>) {
        self.alloc.clear();
        self.alloc.extend(vid);
    }

    /// Adds an extra VID new mappings allocate from once the earlier ones are full.
    pub fn add_alloc(&mut self, vid: Vid) {
        if !self.alloc.contains(&vid) {
            self.alloc.push(vid);
        }
    }

    /// Stops allocating from `vid` (an extra VID released once drained); the home stays.
    pub fn remove_alloc(&mut self, vid: Vid) {
        if self.alloc.first() != Some(&vid) {
            self.alloc.retain(|&v| v != vid);
        }
    }

    /// The VIDs new mappings allocate from, home first.
    pub fn allocating(&self) -> &[Vid] {
        &self.alloc
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.live as usize
    }

    /// True without sessions.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Live mappings.
    pub fn mappings(&self) -> usize {
        self.map_by_endpoint.len()
    }

    /// Live sessions whose outside port lies in `vid`'s block.
    pub fn sessions_in_vid(&self, vid: Vid) -> u32 {
        self.per_vid.get(usize::from(vid)).copied().unwrap_or(0)
    }

    /// The session in slot `s`.
    pub fn info(&self, s: u32) -> SessionInfo {
        let x = &self.sessions[s as usize];
        let m = &self.mappings[x.mapping as usize];
        SessionInfo {
            proto: x.proto,
            tcp: x.tcp,
            inside_addr: x.inside_addr.into(),
            inside_port: x.inside_port,
            pool_addr: m.pool_addr.into(),
            outside_port: m.outside_port,
            remote_addr: x.remote_addr.into(),
            remote_port: x.remote_port,
        }
    }

    /// The mapping of an inside endpoint: (pool address, outside port).
    pub fn mapping_of(&self, ep: Endpoint) -> Option<(Ipv4Addr, u16)> {
        let &m = self.map_by_endpoint.get(&ep.key())?;
        let m = &self.mappings[m as usize];
        Some((m.pool_addr.into(), m.outside_port))
    }

    /// An outbound packet of `ep` to `remote`: finds its session (refreshing it and its TCP
    /// state) or, when `create`, makes one, reusing the endpoint's mapping (EIM) or allocating
    /// a port on `pool[hash(inside addr)]`.
    #[inline]
    pub fn outbound(
        &mut self,
        ep: Endpoint,
        remote: (Ipv4Addr, u16),
        tcp_flags: u8,
        pool: &[Ipv4Addr],
        create: bool,
        now: u32,
    ) -> Result<Binding, Miss> {
        self.outbound_for_id(ep, remote, tcp_flags, pool, create, now, None)
    }

    /// [`SessionTable::outbound`] in a cluster: a new mapping's outside port carries
    /// distribution id `id` ([`crate::cluster`]); an existing mapping of the endpoint already
    /// does, since the id is a function of the endpoint.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn outbound_for_id(
        &mut self,
        ep: Endpoint,
        remote: (Ipv4Addr, u16),
        tcp_flags: u8,
        pool: &[Ipv4Addr],
        create: bool,
        now: u32,
        id: Option<u8>,
    ) -> Result<Binding, Miss> {
        let (ra, rp) = (u32::from(remote.0), remote.1);
        let ia = u32::from(ep.addr);
        let k = key5(ep.proto, ia, ep.port, ra, rp);
        if let Some(&s) = self.by_inside.get(&k) {
            let change = self.touch(s, tcp_flags, Way::Out, now);
            let m = &self.mappings[self.sessions[s as usize].mapping as usize];
            return Ok(Binding {
                addr: m.pool_addr.into(),
                port: m.outside_port,
                session: s,
                change,
                new_mapping: false,
            });
        }
        if !create {
            return Err(Miss::NoSession);
        }
        if self.live >= self.p.capacity {
            self.counters.table_full += 1;
            return Err(Miss::TableFull);
        }
        let (m, new_mapping) = match self.map_by_endpoint.get(&ep.key()) {
            Some(&m) => (m, false),
            None => {
                let pool_addr = pick_pool(pool, ia).ok_or(Miss::NoMapping)?;
                let port = self.alloc_port(ep.proto, pool_addr, id)?;
                (self.new_mapping(ep, pool_addr, port), true)
            }
        };
        let tcp = if ep.proto == PROTO_TCP {
            tcp_next(0, tcp_flags, Way::Out)
        } else {
            0
        };
        let s = self.new_session(m, ia, ep.port, ra, rp, ep.proto, tcp, now);
        self.counters.created += 1;
        let mm = &self.mappings[m as usize];
        Ok(Binding {
            addr: mm.pool_addr.into(),
            port: mm.outside_port,
            session: s,
            change: Change::Created,
            new_mapping,
        })
    }

    /// An inbound packet to (pool address, outside port) from `remote`: the inside endpoint to
    /// write, if the remote has a session with the mapping (APDF).
    #[inline]
    pub fn inbound(
        &mut self,
        proto: u8,
        outside: (Ipv4Addr, u16),
        remote: (Ipv4Addr, u16),
        tcp_flags: u8,
        now: u32,
    ) -> Result<Binding, Miss> {
        let k = key5(
            proto,
            u32::from(outside.0),
            outside.1,
            u32::from(remote.0),
            remote.1,
        );
        let Some(&s) = self.by_outside.get(&k) else {
            return Err(self.inbound_miss(proto, outside));
        };
        let change = self.touch(s, tcp_flags, Way::In, now);
        let x = &self.sessions[s as usize];
        Ok(Binding {
            addr: x.inside_addr.into(),
            port: x.inside_port,
            session: s,
            change,
            new_mapping: false,
        })
    }

    /// Counts and names an inbound miss.
    fn inbound_miss(&mut self, proto: u8, outside: (Ipv4Addr, u16)) -> Miss {
        if self
            .map_by_outside
            .contains_key(&key3(proto, u32::from(outside.0), outside.1))
        {
            self.counters.filtered += 1;
            Miss::Filtered
        } else {
            self.counters.no_mapping += 1;
            Miss::NoMapping
        }
    }

    /// The session with outside key `k` (an ICMP error's quoted packet), without refreshing it.
    pub fn peek_outside(&self, k: u128) -> Option<SessionInfo> {
        self.by_outside.get(&k).map(|&s| self.info(s))
    }

    /// The session with inside key `k`, without refreshing it.
    pub fn peek_inside(&self, k: u128) -> Option<SessionInfo> {
        self.by_inside.get(&k).map(|&s| self.info(s))
    }

    /// Refreshes session `s` and applies a TCP segment's flags; re-files it on the wheel when
    /// its timeout class changed (a shorter timeout must not wait for the old deadline).
    #[inline]
    fn touch(&mut self, s: u32, tcp_flags: u8, way: Way, now: u32) -> Change {
        let x = &mut self.sessions[s as usize];
        x.last_seen = now;
        if x.proto != PROTO_TCP || tcp_flags & (flags::SYN | flags::FIN | flags::RST) == 0 {
            return Change::None;
        }
        let old = x.tcp;
        let new = tcp_next(old, tcp_flags, way);
        if new == old {
            return Change::None;
        }
        x.tcp = new;
        if TimeoutClass::of(PROTO_TCP, old) != TimeoutClass::of(PROTO_TCP, new) {
            self.unlink(s);
            self.schedule(s);
        }
        Change::State
    }

    /// Installs a session from a mirror record (takeover): same mapping, same outside port,
    /// timer restarted at `now`. False when the slab is full or the endpoint already maps to a
    /// different outside address (which a correct mirror never produces).
    pub fn adopt(&mut self, info: &SessionInfo, now: u32) -> bool {
        let ok = self.install(info, now);
        if ok {
            self.counters.adopted += 1;
        }
        ok
    }

    /// Installs or updates a session the HA peer synced (the standby's copy): same mapping,
    /// same outside port, its TCP state; the timer starts at `now` for a new one. False when
    /// the slab is full, or the endpoint or the outside port is already mapped otherwise here.
    pub fn upsert_synced(&mut self, info: &SessionInfo, now: u32) -> bool {
        self.install(info, now)
    }

    /// Removes the session with inside key `k` (the HA peer deleted it), as expiry would.
    pub fn remove_inside(&mut self, k: u128) -> Option<Expired> {
        let s = *self.by_inside.get(&k)?;
        Some(self.remove(s))
    }

    /// Restarts every session's idle timer from `now` (the node became active: synced
    /// sessions become its own and time out by its own clock from here).
    pub fn restart_timers(&mut self, now: u32) {
        self.wheel.iter_mut().for_each(|h| *h = NIL);
        self.cursor = now;
        for i in 0..self.sessions.len() {
            let x = &mut self.sessions[i];
            (x.prev, x.next, x.linked) = (NIL, NIL, false);
            if x.live {
                x.last_seen = now;
                self.schedule(i as u32);
            }
        }
    }

    fn install(&mut self, info: &SessionInfo, now: u32) -> bool {
        let ep = info.endpoint();
        let (ia, ra) = (u32::from(info.inside_addr), u32::from(info.remote_addr));
        let k = key5(info.proto, ia, info.inside_port, ra, info.remote_port);
        if let Some(&s) = self.by_inside.get(&k) {
            let mm = &self.mappings[self.sessions[s as usize].mapping as usize];
            if (mm.pool_addr, mm.outside_port) != (u32::from(info.pool_addr), info.outside_port) {
                return false;
            }
            let x = &mut self.sessions[s as usize];
            let old = x.tcp;
            x.tcp = info.tcp;
            if x.linked && TimeoutClass::of(x.proto, old) != TimeoutClass::of(x.proto, info.tcp) {
                self.unlink(s);
                self.schedule(s);
            }
            return true;
        }
        if self.live >= self.p.capacity {
            self.counters.table_full += 1;
            return false;
        }
        let m = match self.map_by_endpoint.get(&ep.key()) {
            Some(&m) => {
                let mm = &self.mappings[m as usize];
                if (mm.pool_addr, mm.outside_port) != (u32::from(info.pool_addr), info.outside_port)
                {
                    return false;
                }
                m
            }
            None => {
                let out = key3(info.proto, u32::from(info.pool_addr), info.outside_port);
                if self.map_by_outside.contains_key(&out) {
                    // Another endpoint holds this outside port here.
                    return false;
                }
                self.new_mapping(ep, u32::from(info.pool_addr), info.outside_port)
            }
        };
        self.new_session(
            m,
            ia,
            info.inside_port,
            ra,
            info.remote_port,
            info.proto,
            info.tcp,
            now,
        );
        true
    }

    /// Appends every live session with the time a packet last refreshed it (for listings).
    pub fn list(&self, out: &mut Vec<(SessionInfo, u32)>) {
        for (i, x) in self.sessions.iter().enumerate() {
            if x.live {
                out.push((self.info(i as u32), x.last_seen));
            }
        }
    }

    /// Appends every session whose outside port is in `vid`'s block (a snapshot for a new
    /// backup).
    pub fn snapshot_vid(&self, vid: Vid, out: &mut Vec<SessionInfo>) {
        for (i, x) in self.sessions.iter().enumerate() {
            if !x.live {
                continue;
            }
            let port = self.mappings[x.mapping as usize].outside_port;
            if self.p.geometry.vid_of_port(port) == Some(vid) {
                out.push(self.info(i as u32));
            }
        }
    }

    /// Appends every session whose outside port carries an id of `ids` (what a cluster node
    /// hands over when those ids move).
    pub fn snapshot_ids(&self, ids: &cluster::IdSet, out: &mut Vec<SessionInfo>) {
        let port_min = self.p.geometry.port_min;
        for (i, x) in self.sessions.iter().enumerate() {
            if x.live
                && ids.contains(cluster::id_of_port(
                    port_min,
                    self.mappings[x.mapping as usize].outside_port,
                ))
            {
                out.push(self.info(i as u32));
            }
        }
    }

    /// Removes every session whose outside port carries an id of `ids` (the ids moved to
    /// another cluster node), appending them to `out`.
    pub fn drop_ids(&mut self, ids: &cluster::IdSet, out: &mut Vec<Expired>) {
        let port_min = self.p.geometry.port_min;
        for i in 0..self.sessions.len() {
            let x = self.sessions[i];
            if x.live
                && ids.contains(cluster::id_of_port(
                    port_min,
                    self.mappings[x.mapping as usize].outside_port,
                ))
            {
                out.push(self.remove(i as u32));
            }
        }
    }

    /// Removes every session of `vid` (the VID was lost), appending them to `out`.
    pub fn drop_vid(&mut self, vid: Vid, out: &mut Vec<Expired>) {
        for i in 0..self.sessions.len() {
            let x = self.sessions[i];
            if x.live
                && self
                    .p
                    .geometry
                    .vid_of_port(self.mappings[x.mapping as usize].outside_port)
                    == Some(vid)
            {
                out.push(self.remove(i as u32));
            }
        }
    }

    /// Advances the wheel to `now`: removes sessions whose idle timeout passed, appending them
    /// to `out`, with at most `budget` units of work (a slot visited or a session examined).
    /// Returns the work done; a caller that got `budget` back should call again soon.
    pub fn expire(&mut self, now: u32, budget: usize, out: &mut Vec<Expired>) -> usize {
        if self.live == 0 {
            self.cursor = self.cursor.max(now);
            return 0;
        }
        let mut work = 0;
        while self.cursor <= now && work < budget {
            work += 1;
            let s = self.wheel[(self.cursor % WHEEL) as usize];
            if s == NIL {
                self.cursor += 1;
                continue;
            }
            self.unlink(s);
            if self.deadline(s) <= now {
                out.push(self.remove(s));
                self.counters.expired += 1;
            } else {
                self.schedule(s);
            }
        }
        work
    }

    /// When session `s` times out.
    fn deadline(&self, s: u32) -> u32 {
        let x = &self.sessions[s as usize];
        let class = TimeoutClass::of(x.proto, x.tcp) as usize;
        x.last_seen.saturating_add(self.p.timeouts[class])
    }

    /// Files `s` in the wheel slot of its deadline, clamped to what the wheel can hold.
    fn schedule(&mut self, s: u32) {
        let due = self.deadline(s).clamp(
            self.cursor.saturating_add(1),
            self.cursor.saturating_add(WHEEL - 1),
        );
        let slot = (due % WHEEL) as usize;
        let head = self.wheel[slot];
        {
            let x = &mut self.sessions[s as usize];
            x.due = due;
            x.prev = NIL;
            x.next = head;
            x.linked = true;
        }
        if head != NIL {
            self.sessions[head as usize].prev = s;
        }
        self.wheel[slot] = s;
    }

    /// Takes `s` out of its wheel slot.
    fn unlink(&mut self, s: u32) {
        let Session {
            prev, next, due, ..
        } = self.sessions[s as usize];
        if prev == NIL {
            self.wheel[(due % WHEEL) as usize] = next;
        } else {
            self.sessions[prev as usize].next = next;
        }
        if next != NIL {
            self.sessions[next as usize].prev = prev;
        }
        let x = &mut self.sessions[s as usize];
        (x.prev, x.next, x.linked) = (NIL, NIL, false);
    }

    fn new_mapping(&mut self, ep: Endpoint, pool_addr: u32, port: u16) -> u32 {
        let m = Mapping {
            inside_addr: u32::from(ep.addr),
            pool_addr,
            inside_port: ep.port,
            outside_port: port,
            proto: ep.proto,
            sessions: 0,
        };
        let i = match self.free_mappings.pop() {
            Some(i) => {
                self.mappings[i as usize] = m;
                i
            }
            None => {
                self.mappings.push(m);
                (self.mappings.len() - 1) as u32
            }
        };
        self.map_by_endpoint.insert(ep.key(), i);
        self.map_by_outside
            .insert(key3(ep.proto, pool_addr, port), i);
        self.mark_port(ep.proto, pool_addr, port, true);
        i
    }

    /// Sets or clears `port`'s bit in the (proto, pool) bitmap, creating the bitmap (with the
    /// reserved ports set) on first use. Ports outside the range have no bit.
    fn mark_port(&mut self, proto: u8, pool: u32, port: u16, used: bool) {
        let g = self.p.geometry;
        let Some(bit) = port
            .checked_sub(g.port_min)
            .filter(|_| port <= g.port_max)
            .map(u32::from)
        else {
            return;
        };
        let reserved = self.p.reserved;
        let bits = self
            .used_ports
            .entry(key3(proto, pool, 0))
            .or_insert_with(|| new_port_bitmap(&g, proto, &reserved));
        let (w, b) = ((bit / 64) as usize, bit % 64);
        if used {
            bits[w] |= 1 << b;
        } else {
            bits[w] &= !(1 << b);
        }
    }

    #[allow(clippy::too_many_arguments)] // the session's fields, written once
    fn new_session(
        &mut self,
        m: u32,
        ia: u32,
        ip: u16,
        ra: u32,
        rp: u16,
        proto: u8,
        tcp: u8,
        now: u32,
    ) -> u32 {
        let x = Session {
            inside_addr: ia,
            remote_addr: ra,
            inside_port: ip,
            remote_port: rp,
            mapping: m,
            last_seen: now,
            due: 0,
            next: NIL,
            prev: NIL,
            proto,
            tcp,
            live: true,
            linked: false,
        };
        let s = match self.free_sessions.pop() {
            Some(s) => {
                self.sessions[s as usize] = x;
                s
            }
            None => {
                self.sessions.push(x);
                (self.sessions.len() - 1) as u32
            }
        };
        let mm = &mut self.mappings[m as usize];
        mm.sessions += 1;
        let (pool, oport) = (mm.pool_addr, mm.outside_port);
        self.by_inside.insert(key5(proto, ia, ip, ra, rp), s);
        self.by_outside.insert(key5(proto, pool, oport, ra, rp), s);
        if let Some(v) = self.p.geometry.vid_of_port(oport) {
            self.per_vid[usize::from(v)] += 1;
        }
        self.live += 1;
        self.schedule(s);
        s
    }

    /// Removes session `s` (from the wheel too, unless the wheel walk already took it off) and
    /// its mapping if it was the last.
    fn remove(&mut self, s: u32) -> Expired {
        let info = self.info(s);
        if self.sessions[s as usize].linked {
            self.unlink(s);
        }
        let x = &mut self.sessions[s as usize];
        x.live = false;
        let m = x.mapping;
        let (ia, ra) = (u32::from(info.inside_addr), u32::from(info.remote_addr));
        let (pool, oport) = (u32::from(info.pool_addr), info.outside_port);
        self.by_inside.remove(&key5(
            info.proto,
            ia,
            info.inside_port,
            ra,
            info.remote_port,
        ));
        self.by_outside
            .remove(&key5(info.proto, pool, oport, ra, info.remote_port));
        self.free_sessions.push(s);
        self.live -= 1;
        let mut vid_empty = false;
        if let Some(v) = self.p.geometry.vid_of_port(oport) {
            let n = &mut self.per_vid[usize::from(v)];
            *n -= 1;
            vid_empty = *n == 0;
        }
        let mm = &mut self.mappings[m as usize];
        mm.sessions -= 1;
        let mapping_gone = mm.sessions == 0;
        if mapping_gone {
            let ep = key3(mm.proto, mm.inside_addr, mm.inside_port);
            let out = key3(mm.proto, mm.pool_addr, mm.outside_port);
            let (proto, pool, port) = (mm.proto, mm.pool_addr, mm.outside_port);
            self.map_by_endpoint.remove(&ep);
            self.map_by_outside.remove(&out);
            self.free_mappings.push(m);
            self.mark_port(proto, pool, port, false);
        }
        Expired {
            info,
            mapping_gone,
            vid_empty,
        }
    }

    /// A free outside port for `proto` on `pool` in the allocating VIDs, home first: in each
    /// block, the first free port at or after a random start, wrapping around; with `id`, only
    /// the block's ports of that distribution id (every 256th from the block's start + id).
    fn alloc_port(&mut self, proto: u8, pool: u32, id: Option<u8>) -> Result<u16, Miss> {
        if self.alloc.is_empty() {
            return Err(Miss::NoVid);
        }
        let g = self.p.geometry;
        let reserved = self.p.reserved;
        let bits = self
            .used_ports
            .entry(key3(proto, pool, 0))
            .or_insert_with(|| new_port_bitmap(&g, proto, &reserved));
        for &vid in &self.alloc {
            let len = g.len_of(vid);
            if len == 0 {
                continue;
            }
            let lo = u32::from(g.block_start(vid) - g.port_min);
            let hi = lo + len;
            if let Some(id) = id {
                // Blocks start at multiples of 256 (cluster::check_geometry), so these are
                // exactly the block's ports of `id`.
                let first = lo + u32::from(id);
                if first >= hi {
                    continue;
                }
                let n = (hi - first).div_ceil(cluster::IDS as u32);
                let k0 = self.rng.below(u64::from(n)) as u32;
                let free = (0..n)
                    .map(|k| first + ((k0 + k) % n) * cluster::IDS as u32)
                    .find(|&bit| bits[(bit / 64) as usize] & (1 << (bit % 64)) == 0);
                if let Some(bit) = free {
                    // bit < port_max - port_min + 1, so the port fits a u16.
                    return Ok((u32::from(g.port_min) + bit) as u16);
                }
                continue;
            }
            let start = lo + self.rng.below(u64::from(len)) as u32;
            if let Some(bit) = first_zero(bits, start, hi).or_else(|| first_zero(bits, lo, start)) {
                // bit < port_max - port_min + 1, so the port fits a u16.
                return Ok((u32::from(g.port_min) + bit) as u16);
            }
        }
        self.counters.exhausted += 1;
        Err(Miss::Exhausted)
    }
}

/// A bitmap of the geometry's ports with the reserved ones set.
fn new_port_bitmap(g: &Geometry, proto: u8, reserved: &crate::config::ReservedPorts) -> Box<[u64]> {
    let n = u32::from(g.port_max) - u32::from(g.port_min) + 1;
    let mut bits = vec![0u64; n.div_ceil(64) as usize].into_boxed_slice();
    for bit in 0..n {
        // port_min + bit <= port_max
        if reserved.contains(proto, (u32::from(g.port_min) + bit) as u16) {
            bits[(bit / 64) as usize] |= 1 << (bit % 64);
        }
    }
    bits
}

/// The first clear bit in `from..to`.
#[inline]
fn first_zero(bits: &[u64], from: u32, to: u32) -> Option<u32> {
    let mut i = from;
    while i < to {
        let w = (i / 64) as usize;
        // Bits below `i` in this word count as used.
        let word = bits[w] | ((1u64 << (i % 64)) - 1);
        if word != u64::MAX {
            let bit = w as u32 * 64 + word.trailing_ones();
            return (bit < to).then_some(bit);
        }
        i = (w as u32 + 1) * 64;
    }
    None
}

/// The pool address of inside host `inside` among a rule's `pool`: the same for all its
/// mappings (paired pooling, RFC 4787 REQ-2) and its ESP sessions ([`crate::esp`]); `None` for
/// an empty pool.
#[inline]
pub fn pool_addr_for(pool: &[Ipv4Addr], inside: Ipv4Addr) -> Option<Ipv4Addr> {
    match pool.len() {
        0 => None,
        1 => Some(pool[0]),
        n => {
            let h =
                (u64::from(u32::from(inside)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize;
            Some(pool[h % n])
        }
    }
}

/// [`pool_addr_for`] on packed addresses.
#[inline]
fn pick_pool(pool: &[Ipv4Addr], inside: u32) -> Option<u32> {
    pool_addr_for(pool, inside.into()).map(u32::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Timeouts;
    use netwire::ipv4::PROTO_ICMP;

    pub(crate) fn params(cap: u32) -> TableParams {
        let t = Timeouts::default();
        TableParams {
            capacity: cap,
            timeouts: [t.tcp_established, t.tcp_transitory, t.udp, t.icmp],
            geometry: Geometry::new(1024, 65535, 2),
            seed: 42,
            reserved: Default::default(),
        }
    }

    const POOL: [Ipv4Addr; 1] = [Ipv4Addr::new(192, 0, 2, 1)];
    const R1: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 51, 100, 1), 53);
    const R2: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 51, 100, 2), 53);

    fn ep(port: u16) -> Endpoint {
        Endpoint {
            proto: PROTO_UDP,
            addr: Ipv4Addr::new(10, 0, 0, 1),
            port,
        }
    }

    fn table() -> SessionTable {
        let mut t = SessionTable::new(params(64), 100);
        t.set_home(Some(2));
        t
    }

    #[test]
    fn endpoint_independent_mapping_and_apdf() {
        let mut t = table();
        let a = t.outbound(ep(5000), R1, 0, &POOL, true, 100).unwrap();
        let b = t.outbound(ep(5000), R2, 0, &POOL, true, 100).unwrap();
        assert_eq!((a.addr, a.port), (b.addr, b.port), "EIM: one mapping");
        assert!(a.new_mapping && !b.new_mapping);
        assert_eq!(t.p.geometry.vid_of_port(a.port), Some(2));
        assert_eq!((t.len(), t.mappings()), (2, 1));
        let back = t.inbound(PROTO_UDP, (a.addr, a.port), R2, 0, 101).unwrap();
        assert_eq!((back.addr, back.port), (Ipv4Addr::new(10, 0, 0, 1), 5000));
        let third = (Ipv4Addr::new(203, 0, 113, 9), 53);
        assert_eq!(
            t.inbound(PROTO_UDP, (a.addr, a.port), third, 0, 101),
            Err(Miss::Filtered)
        );
        assert_eq!(
            t.inbound(PROTO_UDP, (a.addr, a.port ^ 1), R1, 0, 101),
            Err(Miss::NoMapping)
        );
        assert_eq!((t.counters.filtered, t.counters.no_mapping), (1, 1));
    }

    #[test]
    fn in_a_cluster_new_mappings_carry_the_wanted_id_until_the_id_s_ports_run_out() {
        // One block of 1024 ports: 4 ports of each id, then the id is exhausted (others not).
        let mut p = params(64);
        p.geometry = Geometry::new(4096, 4096 + 1023, 1);
        p.geometry.shift = 10;
        p.geometry.vids = 1;
        let mut t = SessionTable::new(p, 100);
        t.set_home(Some(0));
        let mut ports = Vec::new();
        for i in 0..4 {
            let b = t
                .outbound_for_id(ep(7000 + i), R1, 0, &POOL, true, 100, Some(37))
                .unwrap();
            assert_eq!(cluster::id_of_port(4096, b.port), 37, "port {}", b.port);
            ports.push(b.port);
        }
        ports.sort();
        assert_eq!(ports, [4096 + 37, 4096 + 293, 4096 + 549, 4096 + 805]);
        assert_eq!(
            t.outbound_for_id(ep(7100), R1, 0, &POOL, true, 100, Some(37)),
            Err(Miss::Exhausted)
        );
        assert_eq!(t.counters.exhausted, 1);
        // An existing mapping is reused whatever id is asked (the id is the endpoint's).
        let again = t
            .outbound_for_id(ep(7000), R2, 0, &POOL, true, 100, Some(37))
            .unwrap();
        assert!(!again.new_mapping);
        let other = t
            .outbound_for_id(ep(7101), R1, 0, &POOL, true, 100, Some(38))
            .unwrap();
        assert_eq!(cluster::id_of_port(4096, other.port), 38);
    }

    #[test]
    fn a_short_last_block_offers_only_the_ids_it_holds() {
        // Blocks of 256 with a last block of 100 ports: id 150 exists only in the first.
        let mut p = params(64);
        p.geometry = Geometry {
            port_min: 2000,
            shift: 8,
            vids: 2,
            port_max: 2000 + 256 + 99,
        };
        let mut t = SessionTable::new(p, 100);
        t.set_home(Some(1));
        assert_eq!(
            t.outbound_for_id(ep(1), R1, 0, &POOL, true, 100, Some(150)),
            Err(Miss::Exhausted)
        );
        let b = t
            .outbound_for_id(ep(2), R1, 0, &POOL, true, 100, Some(99))
            .unwrap();
        assert_eq!(b.port, 2000 + 256 + 99);
        t.add_alloc(0);
        let b = t
            .outbound_for_id(ep(3), R1, 0, &POOL, true, 100, Some(150))
            .unwrap();
        assert_eq!(b.port, 2000 + 150);
    }

    #[test]
    fn moving_ids_hands_over_exactly_their_sessions() {
        let mut t = table();
        let port_min = t.p.geometry.port_min;
        for i in 0..40u16 {
            t.outbound_for_id(ep(8000 + i), R1, 0, &POOL, true, 100, Some((i % 4) as u8))
                .unwrap();
        }
        let moving: cluster::IdSet = [1u8, 3].into_iter().collect();
        let mut snap = Vec::new();
        t.snapshot_ids(&moving, &mut snap);
        assert_eq!(snap.len(), 20);
        assert!(snap
            .iter()
            .all(|s| moving.contains(cluster::id_of_port(port_min, s.outside_port))));
        let mut gone = Vec::new();
        t.drop_ids(&moving, &mut gone);
        assert_eq!((gone.len(), t.len(), t.mappings()), (20, 20, 20));
        let mut left = Vec::new();
        t.list(&mut left);
        assert!(left
            .iter()
            .all(|(s, _)| !moving.contains(cluster::id_of_port(port_min, s.outside_port))));
        // The freed ports are free again.
        for i in 0..20u16 {
            t.outbound_for_id(ep(9000 + i), R1, 0, &POOL, true, 100, Some(1))
                .unwrap();
        }
    }

    #[test]
    fn reserved_ports_are_never_allocated() {
        // A block of 16 ports with all but two reserved for UDP: only those two are handed out.
        let mut p = params(64);
        p.geometry = Geometry::new(2048, 2048 + 31, 1);
        let start = p.geometry.block_start(0);
        p.reserved.add(PROTO_UDP, start, start + 13);
        let mut t = SessionTable::new(p, 100);
        t.set_home(Some(0));
        let mut got = Vec::new();
        for i in 0..3 {
            match t.outbound(ep(6000 + i), R1, 0, &POOL, true, 100) {
                Ok(b) => got.push(b.port),
                Err(m) => assert_eq!((i, m), (2, Miss::Exhausted)),
            }
        }
        got.sort_unstable();
        assert_eq!(got, vec![start + 14, start + 15]);
    }

    #[test]
    fn expiry_follows_the_last_packet() {
        let mut t = table();
        let mut out = Vec::new();
        t.outbound(ep(1), R1, 0, &POOL, true, 100).unwrap();
        t.outbound(ep(1), R2, 0, &POOL, true, 100).unwrap();
        // R2 stays busy until 350; R1 idles out at 400, R2 at 650.
        t.outbound(ep(1), R2, 0, &POOL, true, 350).unwrap();
        assert_eq!(t.expire(399, 10_000, &mut out), 300);
        assert!(out.is_empty());
        t.expire(400, 10_000, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].info.remote_addr, R1.0);
        assert!(!out[0].mapping_gone);
        t.expire(649, 10_000, &mut out);
        assert_eq!(out.len(), 1);
        t.expire(650, 10_000, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out[1].mapping_gone && out[1].vid_empty);
        assert!(t.is_empty() && t.mappings() == 0);
        assert_eq!(t.counters.expired, 2);
    }

    #[test]
    fn long_timeouts_wrap_the_wheel() {
        let mut t = table();
        let tcp = Endpoint {
            proto: PROTO_TCP,
            ..ep(80)
        };
        t.outbound(tcp, R1, flags::SYN, &POOL, true, 100).unwrap();
        let b = t.outbound(tcp, R1, 0, &POOL, false, 100).unwrap();
        t.inbound(
            PROTO_TCP,
            (b.addr, b.port),
            R1,
            flags::SYN | flags::ACK,
            101,
        )
        .unwrap();
        let mut out = Vec::new();
        t.expire(101 + 7439, 1_000_000, &mut out);
        assert!(out.is_empty(), "established lasts 7440 s");
        t.expire(101 + 7440, 1_000_000, &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn budget_bounds_the_work() {
        let mut t = table();
        for p in 0..20 {
            t.outbound(ep(p), R1, 0, &POOL, true, 100).unwrap();
        }
        let mut out = Vec::new();
        assert_eq!(t.expire(400, 5, &mut out), 5);
        assert!(out.len() < 20);
        while t.expire(400, 5, &mut out) > 0 {}
        assert_eq!(out.len(), 20);
    }

    #[test]
    fn tcp_states_pick_timeouts() {
        use tcp_state::*;
        let s = tcp_next(0, flags::SYN, Way::Out);
        assert_eq!(TimeoutClass::of(PROTO_TCP, s), TimeoutClass::TcpTransitory);
        let s = tcp_next(s, flags::SYN | flags::ACK, Way::In);
        assert_eq!(TimeoutClass::of(PROTO_TCP, s), TimeoutClass::TcpEstablished);
        let s1 = tcp_next(s, flags::FIN | flags::ACK, Way::Out);
        assert_eq!(
            TimeoutClass::of(PROTO_TCP, s1),
            TimeoutClass::TcpEstablished
        );
        let s2 = tcp_next(s1, flags::FIN | flags::ACK, Way::In);
        assert_eq!(s2, SYN_OUT | SYN_IN | FIN_OUT | FIN_IN);
        assert_eq!(TimeoutClass::of(PROTO_TCP, s2), TimeoutClass::TcpTransitory);
        let r = tcp_next(s, flags::RST, Way::In);
        assert_eq!(TimeoutClass::of(PROTO_TCP, r), TimeoutClass::TcpTransitory);
        // A new SYN on a closed 4-tuple starts over.
        assert_eq!(tcp_next(r, flags::SYN, Way::Out), SYN_OUT);
    }

    #[test]
    fn state_change_to_shorter_timeout_reschedules() {
        let mut t = table();
        let tcp = Endpoint {
            proto: PROTO_TCP,
            ..ep(80)
        };
        let b = t.outbound(tcp, R1, flags::SYN, &POOL, true, 100).unwrap();
        t.inbound(
            PROTO_TCP,
            (b.addr, b.port),
            R1,
            flags::SYN | flags::ACK,
            100,
        )
        .unwrap();
        t.outbound(tcp, R1, flags::RST, &POOL, false, 200).unwrap();
        let mut out = Vec::new();
        t.expire(440, 1_000_000, &mut out);
        assert_eq!(out.len(), 1, "reset: transitory 240 s from the RST");
    }

    #[test]
    fn exhaustion_is_reported() {
        let mut p = params(10_000);
        p.geometry = Geometry::new(1024, 1024 + 63, 2); // 4 blocks of 16
        let mut t = SessionTable::new(p, 0);
        t.set_home(Some(1));
        let mut ports = Vec::new();
        for i in 0..16 {
            ports.push(t.outbound(ep(i), R1, 0, &POOL, true, 0).unwrap().port);
        }
        ports.sort_unstable();
        assert_eq!(ports, (1040..1056).collect::<Vec<_>>());
        assert_eq!(
            t.outbound(ep(99), R1, 0, &POOL, true, 0),
            Err(Miss::Exhausted)
        );
        assert_eq!(t.counters.exhausted, 1);
        // Another protocol has its own ports.
        let icmp = Endpoint {
            proto: PROTO_ICMP,
            ..ep(7)
        };
        assert!(t.outbound(icmp, (R1.0, 0), 0, &POOL, true, 0).is_ok());
    }

    #[test]
    fn adopt_keeps_the_outside_port_and_snapshot_lists_it() {
        let mut a = table();
        let b1 = a.outbound(ep(7), R1, 0, &POOL, true, 100).unwrap();
        let mut snap = Vec::new();
        a.snapshot_vid(2, &mut snap);
        assert_eq!(snap.len(), 1);
        let mut b = SessionTable::new(params(64), 100);
        b.set_home(Some(5));
        assert!(b.adopt(&snap[0], 150));
        let r = b
            .inbound(PROTO_UDP, (b1.addr, b1.port), R1, 0, 151)
            .unwrap();
        assert_eq!(r.port, 7);
        assert_eq!(b.sessions_in_vid(2), 1);
        let mut gone = Vec::new();
        b.drop_vid(2, &mut gone);
        assert_eq!(gone.len(), 1);
        assert!(b.is_empty());
        // Removal outside the wheel walk left the wheel consistent.
        assert_eq!(b.expire(10_000, 100_000, &mut gone), 0);
    }
}
