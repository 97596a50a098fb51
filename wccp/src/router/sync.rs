//! A service group's durable state as HA sync records (issue 15): what a standby router needs
//! to answer the caches' next HERE_I_AM exactly as the active would have, so that a takeover
//! costs them no re-registration and no reassignment.
//!
//! A group becomes one *group record* (Receive ID sequence, Member Change Number, definition,
//! method, fixed timers, the accepted assignment), split into parts when it is longer than
//! a sync record may be, and one *cache record* per cache that echoed a Receive ID (the
//! Receive IDs last sent to it, its phase and methods, weight, status, the routers it
//! reports, its timers, how it talks). Keys: `[b'G', service, part]` and
//! `[b'C', service, a, b, c, d]`. Every value starts with [`SYNC_FORMAT`]; decoding checks
//! every length and never panics.
//!
//! The installed assignment and the Router View are not carried: they are compiled from the
//! accepted assignment and the usable caches, as on the active. Caches draining after a
//! SHUTDOWN (two minutes at most) and caches that never echoed are not carried either.

use core::net::Ipv4Addr;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::group::{Accepted, AcceptedBody, CacheEntry, CachePhase, CacheTimer, Group, GroupTimer};
use crate::engine::{AssignmentMethod, DropReason, ForwardingMethod, Methods, ReturnMethod};
use crate::timer::TimerConfig;
use crate::wire::codec::{self, Writer};
use crate::wire::{AltMaskValueSet, AssignmentKey, MaskValueSet, ServiceInfo, BUCKETS};

/// First byte of every value: the encoding's version.
pub const SYNC_FORMAT: u8 = 1;
/// First key byte of a group record (part).
pub const KEY_GROUP: u8 = b'G';
/// First key byte of a cache record.
pub const KEY_CACHE: u8 = b'C';
/// Bytes before a group part's payload: format, part, parts, digest.
const PART_HEADER: usize = 7;
/// Parts a group record may have at most (a mask assignment of 256 values is ~5 parts).
const MAX_PARTS: u8 = 16;

/// One sync record: a key and its value (for the router's `hasync::Record`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRecord {
    /// What the value is about (service and part, or service and cache).
    pub key: Vec<u8>,
    /// The state, versioned.
    pub value: Vec<u8>,
}

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    /// The key is not a WCCP group or cache key.
    #[error("not a WCCP sync key")]
    BadKey,
    /// The value's format version is not [`SYNC_FORMAT`].
    #[error("WCCP sync format {0} is not supported")]
    Version(u8),
    /// The value is truncated or inconsistent.
    #[error("malformed WCCP sync value")]
    Malformed,
    /// The service is not configured here.
    #[error("WCCP service {0} is not configured on this router")]
    UnknownService(u8),
    /// The group already tracks as many caches as it may.
    #[error("the WCCP service group tracks as many caches as it may")]
    Full,
}

impl SyncError {
    /// Stable kebab-case name for counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::BadKey => "wccp-sync-bad-key",
            Self::Version(_) => "wccp-sync-version",
            Self::Malformed => "wccp-sync-malformed",
            Self::UnknownService(_) => "wccp-sync-unknown-service",
            Self::Full => "wccp-sync-full",
        }
    }
}

/// What a key names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncKey {
    /// Part `part` of service `service`'s group record.
    Group {
        /// Service ID.
        service: u8,
        /// Part index.
        part: u8,
    },
    /// The record of cache `cache` in service `service`.
    Cache {
        /// Service ID.
        service: u8,
        /// Cache address.
        cache: Ipv4Addr,
    },
}

impl SyncKey {
    /// Parses a key.
    pub fn parse(key: &[u8]) -> Result<Self, SyncError> {
        match key {
            [KEY_GROUP, service, part] => Ok(Self::Group {
                service: *service,
                part: *part,
            }),
            [KEY_CACHE, service, a, b, c, d] => Ok(Self::Cache {
                service: *service,
                cache: Ipv4Addr::new(*a, *b, *c, *d),
            }),
            _ => Err(SyncError::BadKey),
        }
    }

    /// The key's bytes.
    pub fn to_bytes(self) -> Vec<u8> {
        match self {
            Self::Group { service, part } => vec![KEY_GROUP, service, part],
            Self::Cache { service, cache } => {
                let o = cache.octets();
                vec![KEY_CACHE, service, o[0], o[1], o[2], o[3]]
            }
        }
    }

    /// The service the key belongs to.
    pub fn service(self) -> u8 {
        match self {
            Self::Group { service, .. } | Self::Cache { service, .. } => service,
        }
    }
}

/// A bounds-checked reader (never panics).
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SyncError> {
        if self.0.len() < n {
            return Err(SyncError::Malformed);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, SyncError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, SyncError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, SyncError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, SyncError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn ipv4(&mut self) -> Result<Ipv4Addr, SyncError> {
        Ok(Ipv4Addr::from(self.u32()?))
    }
    fn end(&self) -> Result<(), SyncError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(SyncError::Malformed)
        }
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn put_ip(out: &mut Vec<u8>, v: Ipv4Addr) {
    out.extend_from_slice(&v.octets());
}

/// Writes a list of at most 255 items, or fails (the caller skips the record).
fn put_count(out: &mut Vec<u8>, n: usize) -> Option<()> {
    out.push(u8::try_from(n).ok()?);
    Some(())
}

fn put_timers(out: &mut Vec<u8>, t: &TimerConfig) {
    put_u32(
        out,
        u32::try_from(t.transmit_t.as_millis()).unwrap_or(u32::MAX),
    );
    out.push(u8::try_from(t.timeout_scale).unwrap_or(u8::MAX));
    out.push(u8::try_from(t.ra_timer_scale).unwrap_or(u8::MAX));
}

fn get_timers(r: &mut Reader<'_>) -> Result<TimerConfig, SyncError> {
    let t = TimerConfig {
        transmit_t: Duration::from_millis(r.u32()?.into()),
        timeout_scale: r.u8()?.into(),
        ra_timer_scale: r.u8()?.into(),
    };
    // Only values an engine could have negotiated: every deadline stays far from overflow.
    t.validate().map_err(|_| SyncError::Malformed)?;
    Ok(t)
}

/// A wire structure written with the WCCP codec behind a u16 length.
fn put_wire(out: &mut Vec<u8>, f: impl FnOnce(&mut Writer<'_>) -> Option<()>) -> Option<()> {
    let mut buf = Vec::new();
    f(&mut Writer::new(&mut buf))?;
    put_u16(out, u16::try_from(buf.len()).ok()?);
    out.extend_from_slice(&buf);
    Some(())
}

fn get_wire<'a, O>(
    r: &mut Reader<'a>,
    parse: impl FnMut(&'a [u8]) -> codec::PResult<'a, O>,
) -> Result<O, SyncError> {
    let n = r.u16()?;
    let bytes = r.take(n.into())?;
    codec::exact(bytes, parse).map_err(|_| SyncError::Malformed)
}

/// The group-wide part of a service group's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupState {
    pub(crate) change_number: u32,
    pub(crate) receive_counter: u64,
    pub(crate) receive_last: u32,
    pub(crate) definition: Option<ServiceInfo>,
    pub(crate) method: Option<AssignmentMethod>,
    pub(crate) fixed_timers: Option<TimerConfig>,
    /// No valid REDIRECT_ASSIGN since the change number last moved (the flush timer runs).
    pub(crate) awaiting_assignment: bool,
    pub(crate) accepted: Option<Accepted>,
}

const F_DEFINITION: u8 = 1;
const F_METHOD_MASK: u8 = 2;
const F_METHOD_HASH: u8 = 4;
const F_TIMERS: u8 = 8;
const F_AWAITING: u8 = 16;
const F_ACCEPTED: u8 = 32;

const BODY_HASH: u8 = 1;
const BODY_MASK: u8 = 2;
const BODY_ALT_MASK: u8 = 3;

impl GroupState {
    pub(crate) fn of(g: &Group) -> Self {
        let (receive_counter, receive_last) = g.receive_ids.state();
        Self {
            change_number: g.change_number,
            receive_counter,
            receive_last,
            definition: g.definition.clone(),
            method: g.method,
            fixed_timers: g.fixed_timers,
            awaiting_assignment: g.timers.get(GroupTimer::Flush).is_some(),
            accepted: g.accepted.clone(),
        }
    }

    /// The payload (before splitting into parts); `None` if a list is too long to carry.
    pub(crate) fn encode(&self) -> Option<Vec<u8>> {
        let mut out = Vec::with_capacity(512);
        put_u32(&mut out, self.change_number);
        out.extend_from_slice(&self.receive_counter.to_be_bytes());
        put_u32(&mut out, self.receive_last);
        let mut flags = 0;
        if self.definition.is_some() {
            flags |= F_DEFINITION;
        }
        match self.method {
            Some(AssignmentMethod::Mask) => flags |= F_METHOD_MASK,
            Some(AssignmentMethod::Hash) => flags |= F_METHOD_HASH,
            None => {}
        }
        if self.fixed_timers.is_some() {
            flags |= F_TIMERS;
        }
        if self.awaiting_assignment {
            flags |= F_AWAITING;
        }
        if self.accepted.is_some() {
            flags |= F_ACCEPTED;
        }
        out.push(flags);
        if let Some(d) = &self.definition {
            put_wire(&mut out, |w| {
                d.write(w);
                Some(())
            })?;
        }
        if let Some(t) = &self.fixed_timers {
            put_timers(&mut out, t);
        }
        if let Some(a) = &self.accepted {
            put_ip(&mut out, a.key.cache_ip);
            put_u32(&mut out, a.key.change_number);
            put_u32(&mut out, a.change_number);
            match &a.body {
                AcceptedBody::Hash { caches, buckets } => {
                    out.push(BODY_HASH);
                    put_count(&mut out, caches.len())?;
                    for c in caches {
                        put_ip(&mut out, *c);
                    }
                    out.extend_from_slice(&buckets[..]);
                }
                AcceptedBody::Mask(sets) => {
                    out.push(BODY_MASK);
                    put_wire(&mut out, |w| MaskValueSet::write_list(sets, w).ok())?;
                }
                AcceptedBody::AltMask(sets) => {
                    out.push(BODY_ALT_MASK);
                    put_wire(&mut out, |w| AltMaskValueSet::write_list(sets, w).ok())?;
                }
            }
        }
        Some(out)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, SyncError> {
        let mut r = Reader(bytes);
        let change_number = r.u32()?;
        let receive_counter = r.u64()?;
        let receive_last = r.u32()?;
        let flags = r.u8()?;
        if flags
            & !(F_DEFINITION | F_METHOD_MASK | F_METHOD_HASH | F_TIMERS | F_AWAITING | F_ACCEPTED)
            != 0
        {
            return Err(SyncError::Malformed);
        }
        let definition = if flags & F_DEFINITION != 0 {
            Some(get_wire(&mut r, ServiceInfo::parse)?)
        } else {
            None
        };
        let method = match (flags & F_METHOD_MASK != 0, flags & F_METHOD_HASH != 0) {
            (false, false) => None,
            (true, false) => Some(AssignmentMethod::Mask),
            (false, true) => Some(AssignmentMethod::Hash),
            (true, true) => return Err(SyncError::Malformed),
        };
        let fixed_timers = if flags & F_TIMERS != 0 {
            Some(get_timers(&mut r)?)
        } else {
            None
        };
        let accepted = if flags & F_ACCEPTED != 0 {
            let key = AssignmentKey {
                cache_ip: r.ipv4()?,
                change_number: r.u32()?,
            };
            let change_number = r.u32()?;
            let body = match r.u8()? {
                BODY_HASH => {
                    let n = r.u8()?;
                    let caches = (0..n).map(|_| r.ipv4()).collect::<Result<Vec<_>, _>>()?;
                    let mut buckets = Box::new([0u8; BUCKETS]);
                    buckets.copy_from_slice(r.take(BUCKETS)?);
                    AcceptedBody::Hash { caches, buckets }
                }
                BODY_MASK => AcceptedBody::Mask(get_wire(&mut r, MaskValueSet::parse_list)?),
                BODY_ALT_MASK => {
                    AcceptedBody::AltMask(get_wire(&mut r, AltMaskValueSet::parse_list)?)
                }
                _ => return Err(SyncError::Malformed),
            };
            Some(Accepted {
                key,
                change_number,
                body,
            })
        } else {
            None
        };
        r.end()?;
        Ok(Self {
            change_number,
            receive_counter,
            receive_last,
            definition,
            method,
            fixed_timers,
            awaiting_assignment: flags & F_AWAITING != 0,
            accepted,
        })
    }

    /// The payload as values of at most `max_len` bytes each (keys `[G, service, part]`).
    pub(crate) fn parts(payload: &[u8], max_len: usize) -> Option<Vec<Vec<u8>>> {
        let chunk = max_len.checked_sub(PART_HEADER).filter(|c| *c > 0)?;
        let chunks: Vec<&[u8]> = if payload.is_empty() {
            vec![&[][..]]
        } else {
            payload.chunks(chunk).collect()
        };
        let n = u8::try_from(chunks.len())
            .ok()
            .filter(|n| *n <= MAX_PARTS)?;
        let digest = digest(payload);
        Some(
            chunks
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let mut v = Vec::with_capacity(PART_HEADER + c.len());
                    v.push(SYNC_FORMAT);
                    v.push(u8::try_from(i).unwrap_or(0));
                    v.push(n);
                    v.extend_from_slice(&digest);
                    v.extend_from_slice(c);
                    v
                })
                .collect(),
        )
    }
}

/// The first four bytes of the payload's MD5: ties a group record's parts together.
fn digest(payload: &[u8]) -> [u8; 4] {
    let d = md5::compute(payload).0;
    [d[0], d[1], d[2], d[3]]
}

/// One part of a group record, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) parts: u8,
    pub(crate) digest: [u8; 4],
    pub(crate) bytes: Vec<u8>,
}

impl Part {
    pub(crate) fn decode(part: u8, value: &[u8]) -> Result<Self, SyncError> {
        let mut r = Reader(value);
        match r.u8()? {
            SYNC_FORMAT => {}
            v => return Err(SyncError::Version(v)),
        }
        let index = r.u8()?;
        let parts = r.u8()?;
        if index != part || parts == 0 || parts > MAX_PARTS || index >= parts {
            return Err(SyncError::Malformed);
        }
        let d = r.take(4)?;
        Ok(Self {
            parts,
            digest: [d[0], d[1], d[2], d[3]],
            bytes: r.0.to_vec(),
        })
    }

    /// The payload when every part of one version is there (and its digest checks).
    pub(crate) fn assemble(parts: &BTreeMap<u8, Part>) -> Option<Vec<u8>> {
        let first = parts.get(&0)?;
        let mut out = Vec::new();
        for i in 0..first.parts {
            let p = parts.get(&i)?;
            if p.parts != first.parts || p.digest != first.digest {
                return None;
            }
            out.extend_from_slice(&p.bytes);
        }
        (digest(&out) == first.digest).then_some(out)
    }
}

/// A cache's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheState {
    pub(crate) router_id: Ipv4Addr,
    pub(crate) sent_ids: BTreeMap<Ipv4Addr, u32>,
    pub(crate) phase: CachePhase,
    pub(crate) weight: u16,
    pub(crate) status: u16,
    pub(crate) reported_routers: Vec<Ipv4Addr>,
    pub(crate) timer_config: TimerConfig,
    pub(crate) asked_timers: bool,
    pub(crate) multicast: Option<Ipv4Addr>,
    pub(crate) adjacent: bool,
}

const C_ASKED: u8 = 1;
const C_MULTICAST: u8 = 2;
const C_ADJACENT: u8 = 4;

const P_USABLE: u8 = 1;
const P_CAPABILITY: u8 = 2;
const P_TOO_MANY: u8 = 3;
const P_TIMERS: u8 = 4;

impl CacheState {
    pub(crate) fn of(e: &CacheEntry, adjacent: bool) -> Self {
        Self {
            router_id: e.router_id,
            sent_ids: e.sent_ids.clone(),
            phase: e.phase,
            weight: e.weight,
            status: e.status,
            reported_routers: e.reported_routers.iter().copied().collect(),
            timer_config: e.timer_config,
            asked_timers: e.asked_timers,
            multicast: e.multicast,
            adjacent,
        }
    }

    /// The value (with the format byte); `None` if a list is too long to carry.
    pub(crate) fn encode(&self) -> Option<Vec<u8>> {
        let mut out = vec![SYNC_FORMAT];
        put_ip(&mut out, self.router_id);
        put_count(&mut out, self.sent_ids.len())?;
        for (a, id) in &self.sent_ids {
            put_ip(&mut out, *a);
            put_u32(&mut out, *id);
        }
        let mut flags = 0;
        if self.asked_timers {
            flags |= C_ASKED;
        }
        if self.multicast.is_some() {
            flags |= C_MULTICAST;
        }
        if self.adjacent {
            flags |= C_ADJACENT;
        }
        out.push(flags);
        if let Some(m) = self.multicast {
            put_ip(&mut out, m);
        }
        match self.phase {
            CachePhase::Usable(m) => {
                out.push(P_USABLE);
                out.push(match m.forwarding {
                    ForwardingMethod::Gre => 0,
                    ForwardingMethod::L2 => 1,
                });
                out.push(match m.packet_return {
                    ReturnMethod::Gre => 0,
                    ReturnMethod::L2 => 1,
                });
                out.push(match m.assignment {
                    AssignmentMethod::Hash => 0,
                    AssignmentMethod::Mask => 1,
                });
            }
            CachePhase::Unusable(DropReason::TooManyCaches) => out.push(P_TOO_MANY),
            CachePhase::Unusable(DropReason::TimersUnsupported) => out.push(P_TIMERS),
            // Joining caches are not exported; any other reason is a capability problem.
            CachePhase::Unusable(_) | CachePhase::Joining => out.push(P_CAPABILITY),
        }
        put_u16(&mut out, self.weight);
        put_u16(&mut out, self.status);
        put_count(&mut out, self.reported_routers.len())?;
        for r in &self.reported_routers {
            put_ip(&mut out, *r);
        }
        put_timers(&mut out, &self.timer_config);
        Some(out)
    }

    pub(crate) fn decode(value: &[u8]) -> Result<Self, SyncError> {
        let mut r = Reader(value);
        match r.u8()? {
            SYNC_FORMAT => {}
            v => return Err(SyncError::Version(v)),
        }
        let router_id = r.ipv4()?;
        let n = r.u8()?;
        let mut sent_ids = BTreeMap::new();
        for _ in 0..n {
            let a = r.ipv4()?;
            if sent_ids.insert(a, r.u32()?).is_some() {
                return Err(SyncError::Malformed);
            }
        }
        let flags = r.u8()?;
        if flags & !(C_ASKED | C_MULTICAST | C_ADJACENT) != 0 {
            return Err(SyncError::Malformed);
        }
        let multicast = if flags & C_MULTICAST != 0 {
            Some(r.ipv4()?)
        } else {
            None
        };
        let phase = match r.u8()? {
            P_USABLE => {
                let forwarding = match r.u8()? {
                    0 => ForwardingMethod::Gre,
                    1 => ForwardingMethod::L2,
                    _ => return Err(SyncError::Malformed),
                };
                let packet_return = match r.u8()? {
                    0 => ReturnMethod::Gre,
                    1 => ReturnMethod::L2,
                    _ => return Err(SyncError::Malformed),
                };
                let assignment = match r.u8()? {
                    0 => AssignmentMethod::Hash,
                    1 => AssignmentMethod::Mask,
                    _ => return Err(SyncError::Malformed),
                };
                CachePhase::Usable(Methods {
                    forwarding,
                    packet_return,
                    assignment,
                })
            }
            P_CAPABILITY => CachePhase::Unusable(DropReason::CapabilityUnsupported),
            P_TOO_MANY => CachePhase::Unusable(DropReason::TooManyCaches),
            P_TIMERS => CachePhase::Unusable(DropReason::TimersUnsupported),
            _ => return Err(SyncError::Malformed),
        };
        let weight = r.u16()?;
        let status = r.u16()?;
        let n = r.u8()?;
        let mut reported_routers = (0..n).map(|_| r.ipv4()).collect::<Result<Vec<_>, _>>()?;
        // Canonical: sorted and unique, as the engine keeps them.
        let len = reported_routers.len();
        reported_routers.sort();
        reported_routers.dedup();
        if reported_routers.len() != len {
            return Err(SyncError::Malformed);
        }
        let timer_config = get_timers(&mut r)?;
        r.end()?;
        Ok(Self {
            router_id,
            sent_ids,
            phase,
            weight,
            status,
            reported_routers,
            timer_config,
            asked_timers: flags & C_ASKED != 0,
            multicast,
            adjacent: flags & C_ADJACENT != 0,
        })
    }

    /// The engine's entry, its liveness timers running from `now`.
    pub(crate) fn entry(&self, now: Instant) -> CacheEntry {
        let mut e = CacheEntry::new(now, self.router_id);
        e.sent_ids = self.sent_ids.clone();
        e.echoed = true;
        e.answered = true;
        e.phase = self.phase;
        e.weight = self.weight;
        e.status = self.status;
        e.reported_routers = self.reported_routers.iter().copied().collect();
        e.timer_config = self.timer_config;
        e.asked_timers = self.asked_timers;
        e.multicast = self.multicast;
        restart_cache_timers(&mut e, now);
        e
    }
}

/// A cache's removal query and expiry counted from `now` (import, takeover).
pub(crate) fn restart_cache_timers(e: &mut CacheEntry, now: Instant) {
    e.last_seen = now;
    e.queries_sent = 0;
    let t = e.timer_config;
    if e.echoed {
        e.timers
            .set(CacheTimer::RemovalQuery, now + t.removal_query());
    }
    e.timers.set(CacheTimer::Expire, now + t.member_dead());
}

/// What [`super::RouterEngine::export_service`] produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncExport {
    /// The group record's parts, then one record per cache that echoed a Receive ID.
    pub records: Vec<SyncRecord>,
    /// Caches left out because their record would not fit (hundreds of reported routers).
    pub omitted: usize,
}

impl Group {
    /// The group's records, each value at most `max_len` bytes.
    pub(crate) fn export(
        &self,
        adjacent: &std::collections::BTreeSet<Ipv4Addr>,
        max_len: usize,
    ) -> SyncExport {
        let service = self.id();
        let mut out = SyncExport::default();
        match GroupState::of(self)
            .encode()
            .and_then(|p| GroupState::parts(&p, max_len))
        {
            Some(parts) => {
                for (i, value) in parts.into_iter().enumerate() {
                    let part = u8::try_from(i).unwrap_or(u8::MAX);
                    out.records.push(SyncRecord {
                        key: SyncKey::Group { service, part }.to_bytes(),
                        value,
                    });
                }
            }
            None => out.omitted += 1,
        }
        for (a, e) in self.caches.iter().filter(|(_, e)| e.echoed) {
            match CacheState::of(e, adjacent.contains(a))
                .encode()
                .filter(|v| v.len() <= max_len)
            {
                Some(value) => out.records.push(SyncRecord {
                    key: SyncKey::Cache { service, cache: *a }.to_bytes(),
                    value,
                }),
                None => out.omitted += 1,
            }
        }
        out
    }

    /// Takes a peer's group-wide state; its liveness timers run from `now`.
    pub(crate) fn import_state(
        &mut self,
        now: Instant,
        s: GroupState,
        io: &mut super::group::Io<'_>,
    ) {
        self.change_number = s.change_number;
        self.changed_at = Some(now);
        self.receive_ids
            .set_state(s.receive_counter, s.receive_last);
        self.definition = s.definition.or_else(|| self.config.fixed_definition());
        self.method = s.method;
        self.fixed_timers = s.fixed_timers;
        self.accepted = s.accepted;
        if s.awaiting_assignment {
            self.timers.set(
                GroupTimer::Flush,
                now + self.group_timers().assignment_flush(),
            );
        } else {
            self.timers.stop(GroupTimer::Flush);
        }
        self.settle(now, io);
    }

    /// Takes (or, with `None`, forgets) a peer's cache.
    pub(crate) fn import_cache(
        &mut self,
        now: Instant,
        cache: Ipv4Addr,
        state: Option<CacheState>,
        io: &mut super::group::Io<'_>,
    ) -> Result<(), SyncError> {
        match state {
            None => {
                self.caches.remove(&cache);
            }
            Some(mut c) => {
                if !self.caches.contains_key(&cache)
                    && self.caches.len() >= super::group::MAX_TRACKED
                {
                    return Err(SyncError::Full);
                }
                let usable_others = self
                    .caches
                    .iter()
                    .filter(|(a, e)| **a != cache && e.phase.is_usable())
                    .count();
                if c.phase.is_usable() && usable_others >= crate::assign::MAX_CACHES {
                    c.phase = CachePhase::Unusable(DropReason::TooManyCaches);
                }
                if c.adjacent {
                    if io.adjacent.len() < super::MAX_ADJACENT || io.adjacent.contains(&cache) {
                        io.adjacent.insert(cache);
                    }
                } else {
                    io.adjacent.remove(&cache);
                }
                self.caches.insert(cache, c.entry(now));
            }
        }
        self.settle(now, io);
        Ok(())
    }

    /// Membership, Router View and assignment recomputed from imported state, without moving
    /// the change number (the peer's is in force) and without cache events.
    fn settle(&mut self, now: Instant, io: &mut super::group::Io<'_>) {
        self.members = self
            .caches
            .iter()
            .filter(|(_, e)| e.phase.is_usable())
            .map(|(a, _)| *a)
            .collect();
        self.view_routers = self
            .members
            .iter()
            .filter_map(|a| self.caches.get(a))
            .flat_map(|e| e.reported_routers.iter().copied())
            .collect();
        self.draining.retain(|a, _| !self.members.contains(a));
        if self.caches.values().any(|e| e.multicast.is_some()) {
            let at = now + self.multicast_interval();
            self.timers.set_if_idle(GroupTimer::MulticastISeeYou, at);
        }
        self.recompile(io);
    }

    /// Forgets every cache and the assignment (the peer removed the group).
    pub(crate) fn import_reset(&mut self, now: Instant, io: &mut super::group::Io<'_>) {
        self.caches.clear();
        self.accepted = None;
        self.method = None;
        self.fixed_timers = None;
        self.definition = self.config.fixed_definition();
        self.timers = Default::default();
        self.settle(now, io);
    }

    /// Becoming active: every liveness timer counts from `now`.
    pub(crate) fn resume(&mut self, now: Instant) {
        for e in self.caches.values_mut() {
            restart_cache_timers(e, now);
        }
        if self.timers.get(GroupTimer::Flush).is_some() {
            self.changed_at = Some(now);
            self.timers.set(
                GroupTimer::Flush,
                now + self.group_timers().assignment_flush(),
            );
        }
        if self.timers.get(GroupTimer::MulticastISeeYou).is_some() {
            let at = now + self.multicast_interval();
            self.timers.set(GroupTimer::MulticastISeeYou, at);
        }
    }
}

/// Re-encodes a decoded value (tests and fuzzing: decoding then encoding is canonical).
pub fn reencode(key: &[u8], value: &[u8]) -> Result<Vec<u8>, SyncError> {
    match SyncKey::parse(key)? {
        SyncKey::Cache { .. } => CacheState::decode(value)?
            .encode()
            .ok_or(SyncError::Malformed),
        SyncKey::Group { part, .. } => {
            let p = Part::decode(part, value)?;
            if p.parts == 1 {
                // A whole record: its payload must decode too.
                let payload = Part::assemble(&BTreeMap::from([(0, p.clone())]))
                    .ok_or(SyncError::Malformed)?;
                let g = GroupState::decode(&payload)?;
                let again = g.encode().ok_or(SyncError::Malformed)?;
                let mut v = vec![SYNC_FORMAT, 0, 1];
                v.extend_from_slice(&digest(&again));
                v.extend_from_slice(&again);
                return Ok(v);
            }
            let mut v = vec![SYNC_FORMAT, part, p.parts];
            v.extend_from_slice(&p.digest);
            v.extend_from_slice(&p.bytes);
            Ok(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{MaskElement, ValueElement, WebCacheValueElement};
    use proptest::prelude::*;

    fn ip() -> impl Strategy<Value = Ipv4Addr> {
        any::<u32>().prop_map(Ipv4Addr::from)
    }

    fn timers() -> impl Strategy<Value = TimerConfig> {
        (10u64..=600_000, 1u32..=10, 1u32..=10).prop_map(|(ms, a, b)| TimerConfig {
            transmit_t: Duration::from_millis(ms),
            timeout_scale: a,
            ra_timer_scale: b,
        })
    }

    fn mask() -> impl Strategy<Value = MaskElement> {
        (any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>()).prop_map(|(a, b, c, d)| {
            MaskElement {
                src_ip: a,
                dst_ip: b,
                src_port: c,
                dst_port: d,
            }
        })
    }

    fn body() -> impl Strategy<Value = AcceptedBody> {
        prop_oneof![
            (
                proptest::collection::vec(ip(), 0..32),
                proptest::collection::vec(any::<u8>(), BUCKETS)
            )
                .prop_map(|(caches, b)| {
                    let mut buckets = Box::new([0u8; BUCKETS]);
                    buckets.copy_from_slice(&b);
                    AcceptedBody::Hash { caches, buckets }
                }),
            proptest::collection::vec(
                (
                    mask(),
                    proptest::collection::vec(
                        (any::<u32>(), any::<u32>(), any::<u16>(), any::<u16>(), ip()),
                        0..8
                    )
                ),
                0..3
            )
            .prop_map(|sets| AcceptedBody::Mask(
                sets.into_iter()
                    .map(|(mask, v)| MaskValueSet {
                        mask,
                        values: v
                            .into_iter()
                            .map(|(a, b, c, d, e)| ValueElement {
                                src_ip: a,
                                dst_ip: b,
                                src_port: c,
                                dst_port: d,
                                cache_ip: e,
                            })
                            .collect(),
                    })
                    .collect()
            )),
            proptest::collection::vec(
                (
                    mask(),
                    proptest::collection::vec(
                        (ip(), proptest::collection::vec(any::<u32>(), 0..4)),
                        0..4
                    )
                ),
                0..3
            )
            .prop_map(|sets| AcceptedBody::AltMask(
                sets.into_iter()
                    .map(|(mask, c)| AltMaskValueSet {
                        mask,
                        caches: c
                            .into_iter()
                            .map(|(cache_ip, vsns)| WebCacheValueElement { cache_ip, vsns })
                            .collect(),
                    })
                    .collect()
            )),
        ]
    }

    fn group() -> impl Strategy<Value = GroupState> {
        (
            (any::<u32>(), any::<u64>(), any::<u32>()),
            proptest::option::of((1u8..=255, 0u8..=255, prop_oneof![Just(6u8), Just(17u8)])),
            proptest::option::of(prop_oneof![
                Just(AssignmentMethod::Hash),
                Just(AssignmentMethod::Mask)
            ]),
            proptest::option::of(timers()),
            any::<bool>(),
            proptest::option::of((ip(), any::<u32>(), any::<u32>(), body())),
        )
            .prop_map(|((cn, counter, last), def, method, fixed, awaiting, acc)| {
                GroupState {
                    change_number: cn,
                    receive_counter: counter,
                    receive_last: last,
                    definition: def.map(|(id, prio, proto)| {
                        ServiceInfo::dynamic(
                            id,
                            proto,
                            prio,
                            crate::wire::ServiceFlags::DST_IP_HASH
                                | crate::wire::ServiceFlags::PORTS_DEFINED,
                            &[80, 8080],
                        )
                    }),
                    method,
                    fixed_timers: fixed,
                    awaiting_assignment: awaiting,
                    accepted: acc.map(|(c, k, n, body)| Accepted {
                        key: AssignmentKey {
                            cache_ip: c,
                            change_number: k,
                        },
                        change_number: n,
                        body,
                    }),
                }
            })
    }

    fn cache() -> impl Strategy<Value = CacheState> {
        (
            ip(),
            proptest::collection::btree_map(ip(), any::<u32>(), 0..4),
            0u8..=4,
            (any::<u16>(), any::<u16>()),
            proptest::collection::btree_set(ip(), 0..8),
            timers(),
            (any::<bool>(), proptest::option::of(ip()), any::<bool>()),
        )
            .prop_map(|(rid, sent, p, (w, s), routers, t, (asked, mc, adj))| {
                let phase = match p {
                    0 => CachePhase::Usable(Methods::default()),
                    1 => CachePhase::Usable(Methods {
                        forwarding: ForwardingMethod::L2,
                        packet_return: ReturnMethod::L2,
                        assignment: AssignmentMethod::Mask,
                    }),
                    2 => CachePhase::Unusable(DropReason::CapabilityUnsupported),
                    3 => CachePhase::Unusable(DropReason::TooManyCaches),
                    _ => CachePhase::Unusable(DropReason::TimersUnsupported),
                };
                CacheState {
                    router_id: rid,
                    sent_ids: sent,
                    phase,
                    weight: w,
                    status: s,
                    reported_routers: routers.into_iter().collect(),
                    timer_config: t,
                    asked_timers: asked,
                    multicast: mc,
                    adjacent: adj,
                }
            })
    }

    proptest! {
        #[test]
        fn group_state_round_trips_through_parts(g in group(), max in 40usize..1400) {
            let payload = g.encode().unwrap();
            let parts = GroupState::parts(&payload, max);
            prop_assume!(parts.is_some());
            let mut got = BTreeMap::new();
            for (i, v) in parts.unwrap().iter().enumerate() {
                prop_assert!(v.len() <= max);
                let i = u8::try_from(i).unwrap();
                got.insert(i, Part::decode(i, v).unwrap());
            }
            let back = GroupState::decode(&Part::assemble(&got).unwrap()).unwrap();
            prop_assert_eq!(back, g);
        }

        #[test]
        fn cache_state_round_trips(c in cache()) {
            let v = c.encode().unwrap();
            prop_assert_eq!(CacheState::decode(&v).unwrap(), c);
        }
    }

    #[test]
    fn parts_of_another_version_do_not_assemble() {
        let g = GroupState {
            change_number: 7,
            receive_counter: 3,
            receive_last: 3,
            definition: None,
            method: Some(AssignmentMethod::Hash),
            fixed_timers: None,
            awaiting_assignment: false,
            accepted: None,
        };
        let a = GroupState::parts(&g.encode().unwrap(), 20).unwrap();
        let b = GroupState::parts(
            &GroupState {
                change_number: 8,
                ..g.clone()
            }
            .encode()
            .unwrap(),
            20,
        )
        .unwrap();
        assert!(a.len() > 1);
        let mut mixed = BTreeMap::new();
        mixed.insert(0, Part::decode(0, &a[0]).unwrap());
        for (i, v) in b.iter().enumerate().skip(1) {
            let i = u8::try_from(i).unwrap();
            mixed.insert(i, Part::decode(i, v).unwrap());
        }
        assert_eq!(Part::assemble(&mixed), None);
        assert_eq!(
            Part::decode(0, &[2, 0, 1, 0, 0, 0, 0]),
            Err(SyncError::Version(2))
        );
    }
}
