//! The compiled tables: flat vectors and integer-keyed hash maps, built once by
//! [`crate::compile()`] and only read afterwards.
//!
//! A lookup has three small steps, after the seed's sequence tables (Figures 5D, 7B, 9B), whose
//! rows are keyed by received interface, source MAC, destination address and service port:
//!
//! 1. **Port map** (`port_index`, `ranges`): (direction, address, protocol, port) → [`Slot`]. Forward
//!    uses the destination (W1:P1); reverse uses the source, which is W1:P1, or the NAT
//!    device's real address, or the translated port TP1. The slot names the *group* (every
//!    service sharing W1/proto/P1, which differ only in ingress interfaces) and what the
//!    reverse direction must restore.
//! 2. **Legs** (`legs`): (ingress interface, source MAC) → the device and side the frame comes
//!    from (the seed's "fourth method: trace MAC address"). One entry per device side, shared
//!    by all services, so it stays in cache.
//! 3. **Positions** (`spans`, `arena`): the group's span of the arena lists its few roles,
//!    each → step and service. A role is "came back from pool P's in/out side" (the leg's
//!    device is in P), "arrived on interface I from a MAC no leg knows" (the seed's "fifth
//!    method": a client ingress, a device without a known MAC, or an unexpected source), or
//!    "from the network" (replies past a routed chain end). Keying by pool rather than by
//!    device keeps a service at a handful of 12-byte entries, side by side, so a packet scans
//!    one or two cache lines instead of probing a large hash table.
//!
//! Steps are interned: services with the same chain shape share step records, so the
//! per-service data a packet touches is one port-map entry and one arena span.

use crate::decide::NextHop;
use crate::hash::FastMap;
use crate::model::{AclAction, AclRule, ActiveCheck, DeviceMode, PassiveCheck, Policy, Restore};
use crate::types::{DeviceIdx, Direction, IfId, MacAddr, PoolIdx, ServiceIdx};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Most copies (promiscuous devices) attached to one step.
pub const MAX_COPIES: usize = 4;
/// Most members (alternate excluded) in one pool; bounds the per-packet hashing work.
pub const MAX_POOL_MEMBERS: usize = 64;
/// Pool indices must fit the position key's role field.
pub(crate) const MAX_POOLS: usize = 1 << 27;

/// A device as the data plane needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeviceRt {
    pub mode: DeviceMode,
    /// Where forward frames (and copies) go.
    pub in_if: IfId,
    pub in_next: NextHop,
    /// Where reverse frames go (a transparent device's second side; same as `in_*` otherwise).
    pub out_if: IfId,
    pub out_next: NextHop,
    /// Real address (NAT rewrite, probes).
    pub addr: Option<Ipv4Addr>,
    /// Rendezvous seed from the name.
    pub seed: u64,
    /// The pools it belongs to: `dev_pools[pools_start..pools_start + pools_len]`.
    pub pools_start: u32,
    pub pools_len: u32,
}

/// Side bits of a leg: the device's first side (where forward frames are sent to it) and its
/// second side (where a transparent device returns forward frames).
pub(crate) const SIDE_IN: u8 = 1;
pub(crate) const SIDE_OUT: u8 = 2;

/// A device side as seen from the wire: which device, which side(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Leg {
    pub device: u32,
    pub sides: u8,
}

/// A pool member as selection reads it: its seed and device, side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Member {
    pub seed: u64,
    pub device: u32,
}

/// A pool as the data plane needs it; members are `member_devs[start..start + len]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolRt {
    pub start: u32,
    pub len: u32,
    pub alternate: Option<u32>,
    pub policy: Policy,
    /// `OnFailure::Reset`: answer a dead member's flows with RST while it drains.
    pub reset: bool,
    pub mode: DeviceMode,
    /// Where the pool's home table starts in `Tables::homes`, when it has one (pools of
    /// [`HOME_TABLE_MIN_MEMBERS`] or more members).
    pub homes: Option<u32>,
}

/// Buckets of a pool's home table (by the top bits of the flow hash); fixed, so a reload that
/// adds or removes a member moves only the buckets that member wins or loses.
pub(crate) const HOME_BUCKETS_LOG2: u32 = 12;
/// Pools this large get a home table; smaller ones compute the rendezvous scores directly
/// (as cheap as the table for two members, and no 4 KiB table per tiny pool).
pub(crate) const HOME_TABLE_MIN_MEMBERS: usize = 3;

/// What a port-map hit means, packed in 16 bytes so it sits in the map entry itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Slot {
    /// Endpoint group.
    pub group: u32,
    restore_addr: u32,
    device: u32,
    restore_port: u16,
    flags: u8,
}

const HAS_ADDR: u8 = 1;
const HAS_PORT: u8 = 2;
const DYNAMIC: u8 = 4;

impl Slot {
    /// A slot of `group`: the reverse address and port to restore, whether the port was in a
    /// dynamic range (never translated), and the NAT device the key's address belongs to.
    pub fn new(
        group: u32,
        restore_addr: Option<Ipv4Addr>,
        restore_port: Option<u16>,
        dynamic: bool,
        device: Option<u32>,
    ) -> Slot {
        let mut flags = 0;
        if restore_addr.is_some() {
            flags |= HAS_ADDR;
        }
        if restore_port.is_some() {
            flags |= HAS_PORT;
        }
        if dynamic {
            flags |= DYNAMIC;
        }
        Slot {
            group,
            restore_addr: restore_addr.map_or(0, u32::from),
            device: device.unwrap_or(u32::MAX),
            restore_port: restore_port.unwrap_or(0),
            flags,
        }
    }

    /// Reverse: the service address to write as source (the packet came from a NAT device).
    #[inline]
    pub fn restore_addr(&self) -> Option<Ipv4Addr> {
        (self.flags & HAS_ADDR != 0).then(|| Ipv4Addr::from(self.restore_addr))
    }

    /// Reverse: the service port to write as source (the packet came from TP1).
    #[inline]
    pub fn restore_port(&self) -> Option<u16> {
        (self.flags & HAS_PORT != 0).then_some(self.restore_port)
    }

    /// The port was in a dynamic range.
    #[inline]
    pub fn dynamic(&self) -> bool {
        self.flags & DYNAMIC != 0
    }

    /// Reverse from a NAT device: which one (NAT servers without a configured MAC cannot be
    /// told apart by their frames, but by their address).
    #[inline]
    pub fn device(&self) -> Option<u32> {
        (self.device != u32::MAX).then_some(self.device)
    }
}

/// One sorted, non-overlapping port range of a range list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RangeItem {
    pub lo: u16,
    pub hi: u16,
    pub slot: Slot,
}

/// What a step sends the frame to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    /// Route normally (past the last transparent hop, or toward the client).
    Route,
    /// A member of this pool.
    Pool(u32),
}

/// One step of a chain in one direction (a row of the seed's sequence table). Interned:
/// services with equal chains share it, so it carries no service index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct StepRt {
    pub dir: Direction,
    pub target: Target,
    pub copies: [u32; MAX_COPIES],
    pub n_copies: u8,
    /// Check the service ACL first (the client's entry step of a service with rules).
    pub acl: bool,
    /// Forward: rewrite the destination port to TP1 (last step, non-dynamic ports).
    pub translate: Option<u16>,
    /// The frame enters the chain here (from the client, or from the server side).
    pub entering: bool,
    /// DSCP the service writes.
    pub dscp: Option<u8>,
}

/// A position value: a step of a service, or "unexpected source" for a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PosVal {
    step: u32,
    service: u32,
}

impl PosVal {
    /// Run `step` for `service`.
    pub fn step(step: u32, service: u32) -> PosVal {
        debug_assert!(step != u32::MAX);
        PosVal { step, service }
    }

    /// The interface carries this service's returning frames, but the MAC is none of its
    /// devices'.
    pub fn unexpected(service: u32) -> PosVal {
        PosVal {
            step: u32::MAX,
            service,
        }
    }

    /// The step, or `None` for "unexpected".
    #[inline]
    pub fn get_step(self) -> Option<u32> {
        (self.step != u32::MAX).then_some(self.step)
    }

    /// The service.
    #[inline]
    pub fn service(self) -> u32 {
        self.service
    }
}

/// One entry of a group's span in the position arena: a role (direction, and "from pool P's
/// side" or "on interface I" or "from the network") and what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PosEntry {
    pub role: u32,
    pub val: PosVal,
}

/// Per-group compile data: the reverse entry for frames from the network past a routed
/// chain end (it becomes the group's [`NET`] role).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct GroupRt {
    pub rev_default: Option<PosVal>,
}

/// Per-service data the data plane reads only for services with ACL rules.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServiceRt {
    pub acl_start: u32,
    pub acl_len: u32,
    pub acl_default: AclAction,
}

/// Health settings of a device, merged from the pools it is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct DeviceHealthCfg {
    pub active: Option<ActiveCheck>,
    pub passive: Option<PassiveCheck>,
    pub restore: Restore,
    /// `OnFailure::Reset` window of its pools (zero: none).
    pub drain: Duration,
}

/// Compiled steering tables: build with [`crate::compile()`], query with [`Tables::decide`].
///
/// Immutable after compile; the router shares one snapshot between workers and swaps in a new
/// one on reload. A lookup reads the port map (forward by destination, reverse by source),
/// the legs (which device side sent the frame) and the group's position span; steps, pools and
/// devices are small shared records.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    /// Bitmap prefilter over every address in `port_index` and `ranges` (both directions): most
    /// packets are not steered, and one bit test spares them the port-map misses.
    pub(crate) addr_bits: Vec<u64>,
    /// log2 of the bitmap's size in bits.
    pub(crate) addr_bits_log2: u32,
    /// Exact ports: (direction, address, protocol, port) → slot and the group's arena span.
    pub(crate) port_index: PortIndex,
    pub(crate) ranges: FastMap<u64, (u32, u32)>,
    pub(crate) range_items: Vec<RangeItem>,
    pub(crate) legs: FastMap<u64, Leg>,
    /// Per interface: true when some device side lives there (else the leg lookup is skipped).
    pub(crate) leg_ifaces: Vec<bool>,
    /// Per endpoint group: its span `(start, len)` of `arena`.
    pub(crate) spans: Vec<(u32, u32)>,
    /// Per subscriber group: its span of `arena`.
    pub(crate) sub_spans: Vec<(u32, u32)>,
    /// Position entries, grouped: a group's few roles sit side by side, so a packet reads one
    /// or two cache lines instead of probing a large hash table.
    pub(crate) arena: Vec<PosEntry>,
    pub(crate) sub_index: FastMap<u64, u32>,
    /// Prefix lengths present among subscriber services, longest first.
    pub(crate) sub_lens: Vec<u8>,
    pub(crate) steps: Vec<StepRt>,
    pub(crate) services: Vec<ServiceRt>,
    pub(crate) acl: Vec<AclRule>,
    pub(crate) pools: Vec<PoolRt>,
    pub(crate) member_devs: Vec<u32>,
    /// Members with their rendezvous seeds, parallel to `member_devs` (what selection reads).
    pub(crate) member_slots: Vec<Member>,
    /// Home tables of the larger pools, `2^HOME_BUCKETS_LOG2` member positions each: the
    /// rendezvous winner of each bucket, precomputed, so picking a flow's home is one load
    /// instead of a score per member.
    pub(crate) homes: Vec<u8>,
    pub(crate) devices: Vec<DeviceRt>,
    pub(crate) dev_pools: Vec<u32>,
    pub(crate) health: Vec<DeviceHealthCfg>,
    pub(crate) service_names: Vec<String>,
    pub(crate) device_names: Vec<String>,
    pub(crate) pool_names: Vec<String>,
}

/// One entry of [`PortIndex`]: a port-map key, its slot and its group's span of the arena, in
/// half a cache line, so an exact-port hit costs one line for all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(32))]
pub(crate) struct PortEntry {
    pub key: u64,
    pub span_start: u32,
    pub span_len: u32,
    pub slot: Slot,
}

/// The port map as the data plane reads it: open addressing, linear probing, at most half
/// full, entries aligned to half a cache line. A std `HashMap` reads a control group and then
/// the bucket, two misses per lookup on a large table; this reads one line.
#[derive(Debug, Clone, Default)]
pub(crate) struct PortIndex {
    entries: Vec<PortEntry>,
    /// `entries.len() - 1` (a power of two), or 0 when empty.
    mask: usize,
}

/// No port key has all low 8 bits set (the direction is one bit of them): the empty marker.
const EMPTY_KEY: u64 = u64::MAX;

impl PortIndex {
    /// Builds the index of `ports`, each with the part of its group's span (from `spans`)
    /// that holds the roles of the key's direction.
    pub fn build(
        ports: &FastMap<u64, Slot>,
        spans: &[(u32, u32)],
        arena: &[PosEntry],
    ) -> PortIndex {
        if ports.is_empty() {
            return PortIndex::default();
        }
        let cap = (ports.len() * 2).next_power_of_two().max(8);
        let empty = PortEntry {
            key: EMPTY_KEY,
            span_start: 0,
            span_len: 0,
            slot: Slot::new(0, None, None, false, None),
        };
        let mut entries = vec![empty; cap];
        let mask = cap - 1;
        // Sorted keys keep the layout deterministic.
        let mut keys: Vec<(&u64, &Slot)> = ports.iter().collect();
        keys.sort_unstable_by_key(|e| *e.0);
        for (&key, &slot) in keys {
            let span = spans.get(slot.group as usize).copied().unwrap_or((0, 0));
            let (span_start, span_len) = direction_part(arena, span, port_key_dir(key));
            let mut i = Self::home(key, mask);
            while entries.get(i).is_some_and(|e| e.key != EMPTY_KEY) {
                i = (i + 1) & mask;
            }
            if let Some(e) = entries.get_mut(i) {
                *e = PortEntry {
                    key,
                    span_start,
                    span_len,
                    slot,
                };
            }
        }
        PortIndex { entries, mask }
    }

    #[inline(always)]
    fn home(key: u64, mask: usize) -> usize {
        (crate::hash::mix(key) >> 32) as usize & mask
    }

    /// The entry of `key`, if any.
    #[inline(always)]
    pub fn get(&self, key: u64) -> Option<&PortEntry> {
        let mut i = Self::home(key, self.mask);
        // At most half full: a probe ends at an empty entry within a few steps.
        for _ in 0..self.entries.len() {
            let e = self.entries.get(i)?;
            if e.key == key {
                return Some(e);
            }
            if e.key == EMPTY_KEY {
                return None;
            }
            i = (i + 1) & self.mask;
        }
        None
    }
}

/// The part of a group's arena span holding the roles of one direction: a group's entries are
/// laid out forward roles first (the direction is the top bit of a role).
#[inline]
pub(crate) fn direction_part(arena: &[PosEntry], span: (u32, u32), dir: Direction) -> (u32, u32) {
    let (start, len) = span;
    let entries = arena
        .get(start as usize..start as usize + len as usize)
        .unwrap_or(&[]);
    let forward = entries.partition_point(|e| e.role >> 31 == 0) as u32;
    match dir {
        Direction::Forward => (start, forward),
        Direction::Reverse => (start + forward, len - forward),
    }
}

// ---- key packing ----------------------------------------------------------------------------

#[inline(always)]
fn dir_bit(dir: Direction) -> u64 {
    match dir {
        Direction::Forward => 0,
        Direction::Reverse => 1,
    }
}

/// Port-map key: address, port, protocol, direction.
#[inline(always)]
pub(crate) fn port_key(dir: Direction, addr: Ipv4Addr, proto: u8, port: u16) -> u64 {
    (u64::from(u32::from(addr)) << 32)
        | (u64::from(port) << 16)
        | (u64::from(proto) << 8)
        | dir_bit(dir)
}

/// The direction a port key was packed with.
#[inline(always)]
pub(crate) fn port_key_dir(key: u64) -> Direction {
    if key & 1 == 0 {
        Direction::Forward
    } else {
        Direction::Reverse
    }
}

/// Range-map key: as the port key without the port.
#[inline(always)]
pub(crate) fn range_key(dir: Direction, addr: Ipv4Addr, proto: u8) -> u64 {
    port_key(dir, addr, proto, 0)
}

/// Subscriber-index key: masked address, prefix length, protocol (`None` → 0x100).
#[inline(always)]
pub(crate) fn sub_key(masked: u32, len: u8, proto: Option<u8>) -> u64 {
    let p = proto.map_or(0x100, u64::from);
    (u64::from(masked) << 32) | (u64::from(len) << 16) | p
}

/// Leg key: interface and MAC.
#[inline(always)]
pub(crate) fn leg_key(iface: IfId, mac: MacAddr) -> u64 {
    (u64::from(iface) << 48) | mac.to_u64()
}

/// What a position key's role names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The frame came from a member of this pool, on the given side.
    Pool(u32, u8),
    /// The frame arrived on this interface from a MAC no leg knows.
    Iface(IfId),
}

/// Position key while compiling (clash detection): group (bits 32..), subscriber bit,
/// direction, role; [`role_of_key`] keeps the last three for the arena.
#[inline(always)]
pub(crate) fn pos_key(group: u32, sub: bool, dir: Direction, role: Role) -> u64 {
    let role = match role {
        Role::Pool(p, side) => (u64::from(p) << 1) | u64::from(side == SIDE_OUT),
        Role::Iface(i) => (1 << 28) | u64::from(i),
    };
    (u64::from(group) << 32) | (u64::from(sub) << 31) | (dir_bit(dir) << 30) | role
}

/// The prefilter bit of an address.
#[inline(always)]
pub(crate) fn addr_bit(addr: Ipv4Addr, log2: u32) -> usize {
    let h = u64::from(u32::from(addr)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> (64 - log2.clamp(6, 63))) as usize
}

/// The arena role of a position key: direction (bit 31), interface kind (bit 30), pool side
/// or interface (low bits).
#[inline(always)]
pub(crate) fn role_of_key(key: u64) -> u32 {
    let dir = ((key >> 30) & 1) as u32;
    let kind = ((key >> 28) & 1) as u32;
    (dir << 31) | (kind << 30) | (key & 0x0fff_ffff) as u32
}

/// The arena role of `(dir, role)`.
#[inline(always)]
pub(crate) fn role32(dir: Direction, role: Role) -> u32 {
    role_of_key(pos_key(0, false, dir, role))
}

/// The reverse role "from the network" of routed chains (no interface or pool encodes to it).
pub(crate) const NET: u32 = (1 << 31) | (1 << 30) | 0x0fff_ffff;

impl Tables {
    /// True when `addr` may be in the port map (false: certainly not).
    #[inline(always)]
    pub(crate) fn may_have_addr(&self, addr: Ipv4Addr) -> bool {
        let b = addr_bit(addr, self.addr_bits_log2);
        self.addr_bits
            .get(b / 64)
            .is_some_and(|w| w & (1 << (b % 64)) != 0)
    }

    /// True when a device side lives on `iface`.
    #[inline(always)]
    pub(crate) fn iface_has_legs(&self, iface: IfId) -> bool {
        self.leg_ifaces
            .get(iface as usize)
            .copied()
            .unwrap_or(false)
    }

    /// Number of services (the length of the router's per-service counter array).
    pub fn service_count(&self) -> usize {
        self.services.len()
    }

    /// Number of devices (the length of the per-device counter array).
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Number of ACL rules of all services (the length of the per-rule counter array).
    pub fn acl_rule_count(&self) -> usize {
        self.acl.len()
    }

    /// ACL rule `i` (as [`crate::Decision::Deny`] and [`crate::Action`] name them).
    pub fn acl_rule(&self, i: u32) -> Option<&AclRule> {
        self.acl.get(i as usize)
    }

    /// A service's ACL rules in order, with their indices.
    pub fn service_acl(&self, s: ServiceIdx) -> impl Iterator<Item = (u32, &AclRule)> + '_ {
        let (start, len) = self
            .services
            .get(s.index())
            .map_or((0, 0), |r| (r.acl_start as usize, r.acl_len as usize));
        self.acl
            .get(start..start + len)
            .unwrap_or(&[])
            .iter()
            .enumerate()
            .map(move |(i, r)| ((start + i) as u32, r))
    }

    /// True when a pool the device is in has a passive check (`passive-syns`): the data plane
    /// reports its SYNs and handshake answers to the health monitor.
    pub fn passive_checked(&self, d: DeviceIdx) -> bool {
        self.health
            .get(d.index())
            .is_some_and(|h| h.passive.is_some())
    }

    /// Number of pools, implicit single-device pools included.
    pub fn pool_count(&self) -> usize {
        self.pools.len()
    }

    /// The name of a service.
    pub fn service_name(&self, s: ServiceIdx) -> Option<&str> {
        self.service_names.get(s.index()).map(String::as_str)
    }

    /// The name of a device.
    pub fn device_name(&self, d: DeviceIdx) -> Option<&str> {
        self.device_names.get(d.index()).map(String::as_str)
    }

    /// The name of a pool (an implicit pool has its device's name).
    pub fn pool_name(&self, p: PoolIdx) -> Option<&str> {
        self.pool_names.get(p.index()).map(String::as_str)
    }

    /// The device of that name (control plane: linear search).
    pub fn device_index(&self, name: &str) -> Option<DeviceIdx> {
        self.device_names
            .iter()
            .position(|n| n == name)
            .map(|i| DeviceIdx(i as u32))
    }

    /// The service of that name (control plane: linear search).
    pub fn service_index(&self, name: &str) -> Option<ServiceIdx> {
        self.service_names
            .iter()
            .position(|n| n == name)
            .map(|i| ServiceIdx(i as u32))
    }

    /// The mode of a device.
    pub fn device_mode(&self, d: DeviceIdx) -> Option<DeviceMode> {
        self.devices.get(d.index()).map(|x| x.mode)
    }

    /// The members of a pool (alternate excluded), in definition order.
    pub fn pool_members(&self, p: PoolIdx) -> impl Iterator<Item = DeviceIdx> + '_ {
        let r = self
            .pools
            .get(p.index())
            .map_or(0..0, |p| p.start as usize..(p.start + p.len) as usize);
        self.member_devs
            .get(r)
            .unwrap_or(&[])
            .iter()
            .map(|&d| DeviceIdx(d))
    }

    /// The alternate of a pool, if it has one.
    pub fn pool_alternate(&self, p: PoolIdx) -> Option<DeviceIdx> {
        self.pools
            .get(p.index())
            .and_then(|p| p.alternate)
            .map(DeviceIdx)
    }

    /// The members of a pool as a slice of raw device indices.
    #[inline]
    pub(crate) fn members(&self, p: &PoolRt) -> &[u32] {
        self.member_devs
            .get(p.start as usize..(p.start + p.len) as usize)
            .unwrap_or(&[])
    }

    /// The members with their seeds, in member order.
    #[inline(always)]
    pub(crate) fn member_slots(&self, p: &PoolRt) -> &[Member] {
        self.member_slots
            .get(p.start as usize..(p.start + p.len) as usize)
            .unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_keys_separate_roles_direction_and_kind() {
        let k = |sub, dir, role| pos_key(7, sub, dir, role);
        let all = [
            k(false, Direction::Forward, Role::Pool(3, SIDE_IN)),
            k(false, Direction::Forward, Role::Pool(3, SIDE_OUT)),
            k(false, Direction::Forward, Role::Iface(3)),
            k(false, Direction::Reverse, Role::Pool(3, SIDE_IN)),
            k(false, Direction::Reverse, Role::Iface(3)),
            k(true, Direction::Forward, Role::Pool(3, SIDE_IN)),
            k(false, Direction::Forward, Role::Pool(4, SIDE_IN)),
            pos_key(8, false, Direction::Forward, Role::Pool(3, SIDE_IN)),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        let last = (MAX_POOLS - 1) as u32;
        assert_ne!(
            pos_key(0, false, Direction::Forward, Role::Pool(last, SIDE_OUT)),
            pos_key(0, false, Direction::Forward, Role::Iface(u16::MAX))
        );
    }

    #[test]
    fn port_keys_separate_fields() {
        let a = Ipv4Addr::new(10, 0, 0, 1);
        let k = port_key(Direction::Forward, a, 6, 80);
        assert_ne!(k, port_key(Direction::Reverse, a, 6, 80));
        assert_ne!(k, port_key(Direction::Forward, a, 17, 80));
        assert_ne!(k, port_key(Direction::Forward, a, 6, 81));
        assert_ne!(sub_key(1, 8, None), sub_key(1, 8, Some(0)));
        assert_ne!(leg_key(1, MacAddr([0; 6])), leg_key(2, MacAddr([0; 6])));
    }

    #[test]
    fn arena_roles_are_distinct() {
        let roles = [
            role32(Direction::Forward, Role::Pool(3, SIDE_IN)),
            role32(Direction::Forward, Role::Pool(3, SIDE_OUT)),
            role32(Direction::Reverse, Role::Pool(3, SIDE_IN)),
            role32(Direction::Forward, Role::Iface(3)),
            role32(Direction::Reverse, Role::Iface(3)),
            role32(Direction::Reverse, Role::Iface(u16::MAX)),
            role32(
                Direction::Reverse,
                Role::Pool((MAX_POOLS - 1) as u32, SIDE_OUT),
            ),
            NET,
        ];
        for (i, a) in roles.iter().enumerate() {
            for b in &roles[i + 1..] {
                assert_ne!(a, b);
            }
        }
        let k = pos_key(77, true, Direction::Reverse, Role::Iface(9));
        assert_eq!(role_of_key(k), role32(Direction::Reverse, Role::Iface(9)));
    }

    #[test]
    fn slot_and_posval_pack_losslessly() {
        let s = Slot::new(9, Some(Ipv4Addr::UNSPECIFIED), Some(0), true, Some(3));
        assert_eq!(s.restore_addr(), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(s.restore_port(), Some(0));
        assert!(s.dynamic());
        assert_eq!(s.device(), Some(3));
        let n = Slot::new(9, None, None, false, None);
        assert_eq!(
            (n.restore_addr(), n.restore_port(), n.dynamic(), n.device()),
            (None, None, false, None)
        );
        assert_ne!(s, n);
        assert_eq!(std::mem::size_of::<Slot>(), 16);
        let p = PosVal::step(5, 7);
        assert_eq!((p.get_step(), p.service()), (Some(5), 7));
        let u = PosVal::unexpected(7);
        assert_eq!((u.get_step(), u.service()), (None, 7));
    }

    #[test]
    fn empty_tables_answer_accessors() {
        let t = Tables::default();
        assert_eq!(t.service_count(), 0);
        assert_eq!(t.service_name(ServiceIdx(3)), None);
        assert_eq!(t.pool_members(PoolIdx(1)).count(), 0);
        assert_eq!(t.device_index("x"), None);
    }
}
