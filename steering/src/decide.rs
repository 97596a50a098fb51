//! The per-packet steering decision.
//!
//! [`Tables::decide`] looks a packet up in at most a handful of hash probes, picks pool members
//! by rendezvous hash and device health, and returns a [`Decision`] by value: no allocation,
//! no state, no panics. The walk in both directions:
//!
//! - **Forward** (destination = service W1:P1, or a port of its dynamic ranges): a frame from
//!   the client side (any MAC on an ingress interface) goes to main hop 0; a frame coming back
//!   from hop k's device (its second interface and MAC) goes to hop k+1; after the last
//!   transparent hop of a routed chain it is routed normally (`Egress::Route`).
//! - **Reverse** (source = W1:P1, the NAT device's real address, or TP1): a frame from the end
//!   device (or, for a routed chain, from anywhere that is not a device) goes to the last
//!   transparent hop's second side; a frame back from hop k's first side goes to hop k-1; past
//!   hop 0 it is routed toward the client (`Egress::Route`), with NAT and port translation
//!   undone on the first reverse step. This is the seed's Figure 7B read bottom-up.
//!
//! Chain ends are always explicit `Forward` actions with `Egress::Route`, never `NotSteered`,
//! so the router counts them per service and applies their rewrite, DSCP and copies.

use crate::drain::DrainedFlows;
use crate::hash::{client_hash, flow_hash, hrw_score};
use crate::health::PoolState;
use crate::model::{AclAction, DeviceMode, Policy};
use crate::tables::{direction_part, NET};
use crate::tables::{leg_key, port_key, range_key, role32, sub_key, PoolRt, PosVal, Role, Slot};
use crate::tables::{ServiceRt, MAX_COPIES};
use crate::tables::{Tables, Target, HOME_BUCKETS_LOG2, SIDE_IN, SIDE_OUT};

use crate::types::{mask, proto, tcp_flags, DeviceIdx, Direction, IfId, MacAddr, ServiceIdx};
use std::net::Ipv4Addr;

/// The fields of a received frame the decision reads (the router fills it from its headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketKey {
    /// Interface the frame arrived on.
    pub in_if: IfId,
    /// Ethernet source MAC.
    pub src_mac: MacAddr,
    /// IPv4 source.
    pub src: Ipv4Addr,
    /// IPv4 destination.
    pub dst: Ipv4Addr,
    /// IP protocol.
    pub proto: u8,
    /// L4 source port (0 for port-less protocols and non-first fragments).
    pub sport: u16,
    /// L4 destination port (0 likewise).
    pub dport: u16,
    /// TCP flags octet (0 for other protocols).
    pub tcp_flags: u8,
}

impl PacketKey {
    /// The key as the packet will look after `rw` (what the next device sees).
    pub fn rewritten(&self, rw: &Rewrite) -> PacketKey {
        PacketKey {
            src: rw.src_addr.unwrap_or(self.src),
            dst: rw.dst_addr.unwrap_or(self.dst),
            sport: rw.src_port.unwrap_or(self.sport),
            dport: rw.dst_port.unwrap_or(self.dport),
            ..*self
        }
    }

    /// True for a TCP SYN without ACK (a connection attempt).
    pub fn is_syn(&self) -> bool {
        self.proto == proto::TCP
            && self.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN
    }
}

/// Where the router sends a frame at layer 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// Straight to this MAC (transparent, loopback, alias; NAT and router when configured).
    Mac(MacAddr),
    /// To this address's MAC, resolved by the router's ARP on the egress interface.
    Addr(Ipv4Addr),
}

/// Where a steered frame leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Egress {
    /// To a chain device.
    Device {
        /// The device (for counters).
        device: DeviceIdx,
        /// Egress interface.
        iface: IfId,
        /// Destination at layer 2.
        next: NextHop,
        /// The device's mode (the seed's "destination system type").
        mode: DeviceMode,
    },
    /// Route normally by destination: the end of a routed chain, or back toward the client.
    Route,
}

/// Header rewrites to apply before sending (each with an incremental checksum update).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rewrite {
    /// New destination address (forward to a NAT device).
    pub dst_addr: Option<Ipv4Addr>,
    /// New destination port (forward, port translation P1 → TP1).
    pub dst_port: Option<u16>,
    /// New source address (reverse from a NAT device: its address → W1).
    pub src_addr: Option<Ipv4Addr>,
    /// New source port (reverse, TP1 → P1).
    pub src_port: Option<u16>,
}

impl Rewrite {
    /// True when nothing changes.
    pub fn is_empty(&self) -> bool {
        *self == Rewrite::default()
    }
}

/// A copy of the frame for a promiscuous device (the seed's packet distributor, Figure 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CopyTarget {
    /// The device (for counters).
    pub device: DeviceIdx,
    /// Egress interface.
    pub iface: IfId,
    /// Destination at layer 2.
    pub next: NextHop,
}

/// Up to [`MAX_COPIES`] devices to copy the frame to, inline (no allocation per packet).
///
/// Only the device indices travel in the decision, to keep it small; the router turns them into
/// interfaces and next hops with [`Action::copy_targets`] (copies are the rare case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Copies {
    len: u8,
    devices: [DeviceIdx; MAX_COPIES],
}

impl Copies {
    /// The devices.
    pub fn as_slice(&self) -> &[DeviceIdx] {
        self.devices.get(..self.len as usize).unwrap_or(&[])
    }

    /// Number of copies.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when there is no copy to send.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One copy to `d`, or none.
    #[inline]
    pub fn one(d: Option<DeviceIdx>) -> Copies {
        match d {
            Some(d) => Copies {
                len: 1,
                devices: [d, DeviceIdx(0), DeviceIdx(0), DeviceIdx(0)],
            },
            None => Copies::default(),
        }
    }

    /// Adds a device; returns false when full.
    pub fn push(&mut self, d: DeviceIdx) -> bool {
        match self.devices.get_mut(self.len as usize) {
            Some(slot) => {
                *slot = d;
                self.len += 1;
                true
            }
            None => false,
        }
    }
}

/// What to do with a steered frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Action {
    /// The service (for counters).
    pub service: ServiceIdx,
    /// Which way the frame walks the chain.
    pub direction: Direction,
    /// Where it goes.
    pub egress: Egress,
    /// The device the frame came back from (none: from the client or the network side).
    pub from: Option<DeviceIdx>,
    /// Header rewrites (copies are sent *without* them: the IDS sees the frame as received).
    pub rewrite: Rewrite,
    /// DSCP to write, if the service sets one.
    pub dscp: Option<u8>,
    /// Devices to send copies to in parallel (see [`Action::copy_targets`]).
    pub copies: Copies,
    /// The frame enters the chain here (from the client or the server side): the router
    /// decrements TTL once, on this step only.
    pub entering: bool,
    /// The ACL rule that permitted it (an index for [`Tables::acl_rule`]), for its counters.
    pub acl_rule: Option<u32>,
}

impl Action {
    /// Where to send the copies: each device's first interface and its MAC (or address).
    pub fn copy_targets<'t>(&self, tables: &'t Tables) -> impl Iterator<Item = CopyTarget> + 't {
        let copies = self.copies;
        (0..copies.len()).filter_map(move |i| {
            let device = *copies.as_slice().get(i)?;
            let dev = tables.devices.get(device.index())?;
            Some(CopyTarget {
                device,
                iface: dev.in_if,
                next: dev.in_next,
            })
        })
    }

    /// The device the frame is sent to, if any.
    pub fn device(&self) -> Option<DeviceIdx> {
        match self.egress {
            Egress::Device { device, .. } => Some(device),
            Egress::Route => None,
        }
    }
}

/// The steering decision for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Decision {
    /// Not a service packet: the router routes it normally.
    NotSteered,
    /// The service ACL denies it (drop, reason `steering-acl-deny`).
    Deny {
        /// The service.
        service: ServiceIdx,
        /// The rule that denied it (an index for [`Tables::acl_rule`]); `None`: the default.
        rule: Option<u32>,
    },
    /// Send it as described.
    Forward(Action),
    /// Its device is dead and the pool resets flows: answer the segment with a TCP RST.
    Reset {
        /// The service.
        service: ServiceIdx,
        /// The dead device the flow was on.
        device: DeviceIdx,
    },
    /// It claims to come back from a device of the service but arrived from another MAC
    /// (drop, reason `steering-unexpected-source`).
    UnexpectedSource {
        /// The service.
        service: ServiceIdx,
    },
    /// No live device in the pool of the next hop (drop, reason `steering-no-device`).
    Unavailable {
        /// The service.
        service: ServiceIdx,
    },
}

/// A port-map or subscriber hit, with the canonical flow ends for hashing.
#[derive(Debug, Clone, Copy)]
struct Hit {
    /// The part of the group's arena span with the roles of the hit's direction.
    span: (u32, u32),
    dir: Direction,
    slot: Slot,
    client: Ipv4Addr,
    client_port: u16,
    service: Ipv4Addr,
    service_port: u16,
}

/// Pool selection result.
enum Pick {
    /// The flow's home, in service.
    Device(u32),
    /// The flow's home is not in service.
    Dead(u32),
    /// The pool has no members.
    None,
}

impl Pick {
    /// The flow's home `d`, judged by its health.
    #[inline(always)]
    fn of(d: u32, health: &PoolState) -> Pick {
        if health.in_service(DeviceIdx(d)) {
            Pick::Device(d)
        } else {
            Pick::Dead(d)
        }
    }
}

/// The drain-memory key of a flow on its dead home.
#[inline]
fn drained_key(flow: u64, home: u32) -> u64 {
    flow ^ u64::from(home).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

impl Tables {
    /// Decides what to do with `pkt` given the devices' health.
    ///
    /// Order: forward by destination, reverse by source, then subscriber services; the first
    /// lookup that places the frame in a chain wins.
    ///
    /// Without a drain memory, a reset pool also resets new connections opened during its
    /// drain window; the data plane uses [`Tables::decide_remembering`].
    pub fn decide(&self, pkt: &PacketKey, health: &PoolState) -> Decision {
        self.decide_with(pkt, health, None)
    }

    /// [`Tables::decide`], remembering in `flows` the connections opened on a live member
    /// while their home drains in a reset pool, so that only established flows are reset.
    pub fn decide_remembering(
        &self,
        pkt: &PacketKey,
        health: &PoolState,
        flows: &mut DrainedFlows,
    ) -> Decision {
        self.decide_with(pkt, health, Some(flows))
    }

    #[inline(always)]
    fn decide_with(
        &self,
        pkt: &PacketKey,
        health: &PoolState,
        flows: Option<&mut DrainedFlows>,
    ) -> Decision {
        match self.find(pkt) {
            Some((hit, v, from)) => self.run(v, from, &hit, pkt, health, flows),
            None => self.decide_rest(pkt, health, flows),
        }
    }

    /// Address services: forward by destination, else reverse by source; the hit and the
    /// position in the chain, with the device the frame came from.
    #[inline(always)]
    fn find(&self, pkt: &PacketKey) -> Option<(Hit, PosVal, Option<u32>)> {
        if let Some(hit) = self.hit_forward(pkt) {
            if let Some((v, from)) = self.locate(&hit, pkt) {
                return Some((hit, v, from));
            }
        }
        let hit = self.hit_reverse(pkt)?;
        let (v, from) = self.locate(&hit, pkt)?;
        Some((hit, v, from))
    }

    /// What is left after the address services: subscriber services, else not steered.
    #[inline]
    fn decide_rest(
        &self,
        pkt: &PacketKey,
        health: &PoolState,
        flows: Option<&mut DrainedFlows>,
    ) -> Decision {
        if self.sub_lens.is_empty() {
            return Decision::NotSteered;
        }
        self.decide_subscriber(pkt, health, flows)
            .unwrap_or(Decision::NotSteered)
    }

    /// Forward lookup: the destination is a service address and port.
    #[inline(always)]
    fn hit_forward(&self, pkt: &PacketKey) -> Option<Hit> {
        let (slot, span) = self.lookup_port(Direction::Forward, pkt.dst, pkt.proto, pkt.dport)?;
        Some(Hit {
            span,
            dir: Direction::Forward,
            slot,
            client: pkt.src,
            client_port: pkt.sport,
            service: pkt.dst,
            service_port: pkt.dport,
        })
    }

    /// Reverse lookup: the source is a service (or NAT device) address and port.
    #[inline(always)]
    fn hit_reverse(&self, pkt: &PacketKey) -> Option<Hit> {
        let (slot, span) = self.lookup_port(Direction::Reverse, pkt.src, pkt.proto, pkt.sport)?;
        Some(Hit {
            span,
            dir: Direction::Reverse,
            slot,
            client: pkt.dst,
            client_port: pkt.dport,
            service: slot.restore_addr().unwrap_or(pkt.src),
            service_port: slot.restore_port().unwrap_or(pkt.sport),
        })
    }

    /// Subscriber services: forward by source prefix, reverse by destination prefix, longest
    /// prefix first.
    #[inline(never)]
    fn decide_subscriber(
        &self,
        pkt: &PacketKey,
        health: &PoolState,
        mut flows: Option<&mut DrainedFlows>,
    ) -> Option<Decision> {
        for (dir, client, cport, remote, rport) in [
            (Direction::Forward, pkt.src, pkt.sport, pkt.dst, pkt.dport),
            (Direction::Reverse, pkt.dst, pkt.dport, pkt.src, pkt.sport),
        ] {
            let c = u32::from(client);
            for &len in &self.sub_lens {
                let masked = c & mask(len);
                for p in [Some(pkt.proto), None] {
                    let Some(&group) = self.sub_index.get(&sub_key(masked, len, p)) else {
                        continue;
                    };
                    let Some(&span) = self.sub_spans.get(group as usize) else {
                        continue;
                    };
                    let span = direction_part(&self.arena, span, dir);
                    let hit = Hit {
                        span,
                        dir,
                        slot: Slot::new(group, None, None, false, None),
                        client,
                        client_port: cport,
                        service: remote,
                        service_port: rport,
                    };
                    if let Some(d) = self.walk(&hit, pkt, health, flows.as_deref_mut()) {
                        return Some(d);
                    }
                }
            }
        }
        None
    }

    /// Port map: exact ports first, then the sorted range list of the address; the slot and
    /// its group's span of the arena.
    #[inline(always)]
    fn lookup_port(
        &self,
        dir: Direction,
        addr: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> Option<(Slot, (u32, u32))> {
        if !self.may_have_addr(addr) {
            return None;
        }
        if let Some(e) = self.port_index.get(port_key(dir, addr, proto, port)) {
            return Some((e.slot, (e.span_start, e.span_len)));
        }
        self.lookup_range(dir, addr, proto, port)
    }

    /// The range list of the address (ports of dynamic ranges).
    #[inline(never)]
    fn lookup_range(
        &self,
        dir: Direction,
        addr: Ipv4Addr,
        proto: u8,
        port: u16,
    ) -> Option<(Slot, (u32, u32))> {
        if self.ranges.is_empty() {
            return None;
        }
        let &(start, len) = self.ranges.get(&range_key(dir, addr, proto))?;
        let items = self
            .range_items
            .get(start as usize..(start as usize + len as usize))?;
        let i = items.partition_point(|r| r.lo <= port).checked_sub(1)?;
        let r = items.get(i)?;
        if port > r.hi {
            return None;
        }
        let span = *self.spans.get(r.slot.group as usize)?;
        Some((r.slot, direction_part(&self.arena, span, dir)))
    }

    /// Where in the chain the frame is: back from a known device side (legs, then the pools
    /// that device is in), else by interface (ingress, MAC-less device, unexpected source),
    /// else (reverse) the group's network-side entry. Also returns the device it came from.
    #[inline(always)]
    fn locate(&self, hit: &Hit, pkt: &PacketKey) -> Option<(PosVal, Option<u32>)> {
        let (start, len) = hit.span;
        let entries = self
            .arena
            .get(start as usize..start as usize + len as usize)
            .unwrap_or(&[]);
        let find = |role: u32| entries.iter().find(|e| e.role == role).map(|e| e.val);
        let leg = if self.iface_has_legs(pkt.in_if) {
            self.legs.get(&leg_key(pkt.in_if, pkt.src_mac))
        } else {
            None
        };
        if let Some(leg) = leg {
            let dev = self.devices.get(leg.device as usize)?;
            let start = dev.pools_start as usize;
            let pools = self
                .dev_pools
                .get(start..start + dev.pools_len as usize)
                .unwrap_or(&[]);
            for &p in pools {
                for side in [SIDE_OUT, SIDE_IN] {
                    if leg.sides & side == 0 {
                        continue;
                    }
                    if let Some(v) = find(role32(hit.dir, Role::Pool(p, side))) {
                        return Some((v, Some(leg.device)));
                    }
                }
            }
        }
        if let Some(v) = find(role32(hit.dir, Role::Iface(pkt.in_if))) {
            return Some((v, hit.slot.device()));
        }
        if hit.dir == Direction::Reverse {
            return find(NET).map(|v| (v, None));
        }
        None
    }

    /// Locates the frame in its chain and runs the step there.
    fn walk(
        &self,
        hit: &Hit,
        pkt: &PacketKey,
        health: &PoolState,
        flows: Option<&mut DrainedFlows>,
    ) -> Option<Decision> {
        let (v, from) = self.locate(hit, pkt)?;
        Some(self.run(v, from, hit, pkt, health, flows))
    }

    /// A position value: "unexpected source", or a step to run.
    #[inline(always)]
    fn run(
        &self,
        v: PosVal,
        from: Option<u32>,
        hit: &Hit,
        pkt: &PacketKey,
        health: &PoolState,
        flows: Option<&mut DrainedFlows>,
    ) -> Decision {
        let service = ServiceIdx(v.service());
        match v.get_step() {
            None => Decision::UnexpectedSource { service },
            // Missing records cannot happen in compiled tables; answer "not steered".
            Some(step) => self
                .run_step(step, service, from, hit, pkt, health, flows)
                .unwrap_or(Decision::NotSteered),
        }
    }

    /// Runs one step: ACL, member selection, rewrites, copies.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn run_step(
        &self,
        step: u32,
        service: ServiceIdx,
        from: Option<u32>,
        hit: &Hit,
        pkt: &PacketKey,
        health: &PoolState,
        flows: Option<&mut DrainedFlows>,
    ) -> Option<Decision> {
        let st = self.steps.get(step as usize)?;
        let mut acl_rule = None;
        if st.acl {
            let svc = self.services.get(service.index())?;
            let (permit, rule) = self.acl_match(svc, pkt);
            if !permit {
                return Some(Decision::Deny { service, rule });
            }
            acl_rule = rule;
        }
        // Every pool of the step (main and copies) hashes the same flow: compute it once.
        let flow = flow_hash(
            u32::from(hit.client),
            hit.client_port,
            u32::from(hit.service),
            hit.service_port,
            pkt.proto,
        );
        let mut rewrite = Rewrite::default();
        let egress = match st.target {
            Target::Route => Egress::Route,
            Target::Pool(p) => {
                let pool = self.pools.get(p as usize)?;
                let h = match pool.policy {
                    Policy::FlowHash => flow,
                    Policy::ClientHash => client_hash(u32::from(hit.client)),
                };
                let d = match self.pick(pool, h, health) {
                    Pick::Device(d) => d,
                    Pick::Dead(home) => {
                        match self.dead_home(pool, home, h, flow, hit, pkt, health, flows) {
                            Ok(Some(d)) => d,
                            Ok(None) => return Some(Decision::Unavailable { service }),
                            Err(()) => {
                                return Some(Decision::Reset {
                                    service,
                                    device: DeviceIdx(home),
                                })
                            }
                        }
                    }
                    Pick::None => return Some(Decision::Unavailable { service }),
                };
                let dev = self.devices.get(d as usize)?;
                let (iface, next) = match hit.dir {
                    Direction::Forward => (dev.in_if, dev.in_next),
                    Direction::Reverse => (dev.out_if, dev.out_next),
                };
                if hit.dir == Direction::Forward && dev.mode == DeviceMode::Nat {
                    rewrite.dst_addr = dev.addr;
                }
                Egress::Device {
                    device: DeviceIdx(d),
                    iface,
                    next,
                    mode: dev.mode,
                }
            }
        };
        match hit.dir {
            Direction::Forward => {
                if !hit.slot.dynamic() {
                    rewrite.dst_port = st.translate.filter(|&p| p != pkt.dport);
                }
            }
            Direction::Reverse => {
                rewrite.src_addr = hit.slot.restore_addr();
                rewrite.src_port = hit.slot.restore_port();
            }
        }
        // Built in registers for the common counts: a copy array filled element by element
        // and then read whole stalls on store forwarding.
        let copy = |c: u32| self.copy_device(c, flow, hit.client, health);
        let copies = match st.n_copies {
            0 => Copies::default(),
            1 => Copies::one(st.copies.first().and_then(|&c| copy(c))),
            n => {
                let mut copies = Copies::default();
                let n = (n as usize).min(MAX_COPIES);
                for &c in st.copies.get(..n).unwrap_or(&[]) {
                    if let Some(d) = copy(c) {
                        copies.push(d);
                    }
                }
                copies
            }
        };
        Some(Decision::Forward(Action {
            service,
            direction: st.dir,
            egress,
            from: from.map(DeviceIdx),
            rewrite,
            dscp: st.dscp,
            copies,
            entering: st.entering,
            acl_rule,
        }))
    }

    /// Rendezvous selection: the flow's *home* is the highest-scoring member over all members,
    /// dead or alive, so a flow keeps its device while that device lives and only a dead
    /// member's flows go elsewhere ([`Tables::failover`]). Pools of three or more members
    /// read the winner of the flow's bucket (top 12 bits of its hash) from the pool's home
    /// table, precomputed by the same rendezvous at compile time.
    #[inline(always)]
    fn pick(&self, pool: &PoolRt, h: u64, health: &PoolState) -> Pick {
        let members = self.member_slots(pool);
        if let Some(start) = pool.homes {
            // The precomputed rendezvous winner of the flow's bucket.
            let bucket = (h >> (64 - HOME_BUCKETS_LOG2)) as usize;
            let home = self
                .homes
                .get(start as usize + bucket)
                .and_then(|&i| members.get(usize::from(i)));
            if let Some(m) = home {
                return Pick::of(m.device, health);
            }
        }
        let Some(first) = members.first() else {
            return Pick::None;
        };
        let mut home = first.device;
        let rest = members.get(1..).unwrap_or(&[]);
        // A one-device pool (an IDS, a single server) has nothing to score.
        if !rest.is_empty() {
            let mut best = hrw_score(h, first.seed);
            for m in rest {
                let s = hrw_score(h, m.seed);
                if s > best {
                    home = m.device;
                    best = s;
                }
            }
        }
        Pick::of(home, health)
    }

    /// The device of copy pool `c` for this flow (its live home, else its failover).
    #[inline(always)]
    fn copy_device(
        &self,
        c: u32,
        flow: u64,
        client: Ipv4Addr,
        health: &PoolState,
    ) -> Option<DeviceIdx> {
        let pool = self.pools.get(c as usize)?;
        let h = match pool.policy {
            Policy::FlowHash => flow,
            Policy::ClientHash => client_hash(u32::from(client)),
        };
        match self.pick(pool, h, health) {
            Pick::Device(d) => Some(DeviceIdx(d)),
            Pick::Dead(_) => self.failover(pool, h, health).map(DeviceIdx),
            Pick::None => None,
        }
    }

    /// Where a dead member's flows go: the alternate (the seed's Figure 15C "replace the
    /// device's address with the address of the alternate device"), else their best live
    /// member.
    #[inline(never)]
    fn failover(&self, pool: &PoolRt, h: u64, health: &PoolState) -> Option<u32> {
        if let Some(alt) = pool.alternate {
            if health.in_service(DeviceIdx(alt)) {
                return Some(alt);
            }
        }
        let mut live = None;
        let mut live_best = 0u64;
        for m in self.member_slots(pool) {
            if !health.in_service(DeviceIdx(m.device)) {
                continue;
            }
            let s = hrw_score(h, m.seed);
            if live.is_none() || s > live_best {
                live = Some(m.device);
                live_best = s;
            }
        }
        live
    }

    /// A client segment whose home is dead: in a reset pool, while the home drains, a segment
    /// of an established flow is answered with a RST (`None`); a SYN opens its flow on the
    /// failover device and is remembered in `flows`, so the rest of that connection follows
    /// it. Otherwise the flow fails over.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn dead_home(
        &self,
        pool: &PoolRt,
        home: u32,
        h: u64,
        flow: u64,
        hit: &Hit,
        pkt: &PacketKey,
        health: &PoolState,
        flows: Option<&mut DrainedFlows>,
    ) -> Result<Option<u32>, ()> {
        if hit.dir == Direction::Forward
            && pool.reset
            && pkt.proto == proto::TCP
            && pkt.tcp_flags & tcp_flags::RST == 0
            && health.is_draining(DeviceIdx(home))
        {
            let key = drained_key(flow, home);
            if pkt.is_syn() {
                if let Some(f) = flows {
                    f.remember(key);
                }
            } else if !flows.is_some_and(|f| f.contains(key)) {
                return Err(());
            }
        }
        Ok(self.failover(pool, h, health))
    }

    /// The service ACL, first match wins (only the service's own rules are read: the seed's
    /// "ACL search keys based upon interface and service IP address", Figure 18): whether it
    /// permits, and the index of the rule that decided (`None`: the service's default).
    fn acl_match(&self, svc: &ServiceRt, pkt: &PacketKey) -> (bool, Option<u32>) {
        let start = svc.acl_start as usize;
        let rules = self
            .acl
            .get(start..start + svc.acl_len as usize)
            .unwrap_or(&[]);
        for (i, r) in rules.iter().enumerate() {
            if r.src.contains(pkt.src)
                && any_or(r.proto, |p| p == pkt.proto)
                && any_or(r.src_ports, |p| p.contains(pkt.sport))
                && any_or(r.dst_ports, |p| p.contains(pkt.dport))
            {
                return (r.action == AclAction::Permit, Some((start + i) as u32));
            }
        }
        (svc.acl_default == AclAction::Permit, None)
    }
}

/// True when the field is unset (matches anything) or `f` accepts it (MSRV 1.80 has no
/// `Option::is_none_or`).
#[inline]
fn any_or<T>(o: Option<T>, f: impl FnOnce(T) -> bool) -> bool {
    match o {
        None => true,
        Some(v) => f(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use crate::model::*;
    use crate::types::{PortRange, Prefix};

    const W1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const U1: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
    const SRV_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x51]);
    const UP_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x01]);

    fn key(
        in_if: IfId,
        mac: MacAddr,
        src: Ipv4Addr,
        sport: u16,
        dst: Ipv4Addr,
        dport: u16,
    ) -> PacketKey {
        PacketKey {
            in_if,
            src_mac: mac,
            src,
            dst,
            proto: proto::TCP,
            sport,
            dport,
            tcp_flags: tcp_flags::ACK,
        }
    }

    fn one_server(acl: Vec<AclRule>, default: AclAction) -> Tables {
        let mut s = ServiceDef::new(
            "web",
            ServiceKey::Address {
                addr: W1,
                proto: proto::TCP,
                ports: PortRange::single(80),
            },
            &[0],
            vec![HopDef::device("srv")],
        );
        s.acl = acl;
        s.acl_default = default;
        s.dscp = Some(46);
        compile(&Definitions {
            devices: vec![DeviceDef::loopback("srv", 1, SRV_MAC)],
            pools: vec![],
            services: vec![s],
        })
        .unwrap()
    }

    #[test]
    fn loopback_server_both_directions() {
        let t = one_server(vec![], AclAction::Permit);
        let h = PoolState::all_in_service(&t);
        let Decision::Forward(a) = t.decide(&key(0, UP_MAC, U1, 40000, W1, 80), &h) else {
            panic!("not forwarded");
        };
        assert_eq!(a.direction, Direction::Forward);
        assert!(a.entering && a.rewrite.is_empty() && a.copies.is_empty());
        assert_eq!(a.dscp, Some(46));
        assert_eq!(
            a.egress,
            Egress::Device {
                device: DeviceIdx(0),
                iface: 1,
                next: NextHop::Mac(SRV_MAC),
                mode: DeviceMode::Loopback
            }
        );
        let Decision::Forward(b) = t.decide(&key(1, SRV_MAC, W1, 80, U1, 40000), &h) else {
            panic!("reply not steered");
        };
        assert_eq!(b.direction, Direction::Reverse);
        assert_eq!(b.egress, Egress::Route);
        assert_eq!(b.from, Some(DeviceIdx(0)));
        // Other ports, other addresses, other interfaces: not ours.
        for k in [
            key(0, UP_MAC, U1, 40000, W1, 81),
            key(0, UP_MAC, U1, 40000, Ipv4Addr::new(198, 51, 100, 2), 80),
            key(5, UP_MAC, U1, 40000, W1, 80),
        ] {
            assert_eq!(t.decide(&k, &h), Decision::NotSteered, "{k:?}");
        }
        // A reply from the server's interface with another MAC is spoofed.
        assert_eq!(
            t.decide(&key(1, UP_MAC, W1, 80, U1, 40000), &h),
            Decision::UnexpectedSource {
                service: ServiceIdx(0)
            }
        );
    }

    #[test]
    fn acl_first_match_and_default() {
        let deny_net = Prefix::new(Ipv4Addr::new(203, 0, 113, 0), 24).unwrap();
        let mut permit_one = AclRule::new(AclAction::Permit, Prefix::new(U1, 32).unwrap());
        permit_one.src_ports = Some(PortRange::new(40000, 40010));
        let t = one_server(
            vec![permit_one, AclRule::new(AclAction::Deny, deny_net)],
            AclAction::Permit,
        );
        let h = PoolState::all_in_service(&t);
        assert!(matches!(
            t.decide(&key(0, UP_MAC, U1, 40005, W1, 80), &h),
            Decision::Forward(_)
        ));
        assert_eq!(
            t.decide(&key(0, UP_MAC, U1, 50000, W1, 80), &h),
            Decision::Deny {
                service: ServiceIdx(0),
                rule: Some(1),
            }
        );
        // The permitting rule is named too, for its counters.
        match t.decide(&key(0, UP_MAC, U1, 40005, W1, 80), &h) {
            Decision::Forward(a) => assert_eq!(a.acl_rule, Some(0)),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.acl_rule_count(), 2);
        assert_eq!(t.acl_rule(1).map(|r| r.action), Some(AclAction::Deny));
        let rules: Vec<u32> = t.service_acl(ServiceIdx(0)).map(|(i, _)| i).collect();
        assert_eq!(rules, [0, 1]);
        let other = Ipv4Addr::new(192, 0, 2, 1);
        assert!(matches!(
            t.decide(&key(0, UP_MAC, other, 1, W1, 80), &h),
            Decision::Forward(_)
        ));
        let t = one_server(vec![], AclAction::Deny);
        assert_eq!(
            t.decide(&key(0, UP_MAC, other, 1, W1, 80), &h),
            Decision::Deny {
                service: ServiceIdx(0),
                rule: None,
            }
        );
    }

    #[test]
    fn copies_hold_at_most_their_capacity() {
        let mut c = Copies::default();
        for i in 0..MAX_COPIES {
            assert!(c.push(DeviceIdx(i as u32)));
        }
        assert!(!c.push(DeviceIdx(9)));
        assert_eq!(c.len(), MAX_COPIES);
        assert_eq!(c.as_slice().len(), MAX_COPIES);
    }

    #[test]
    fn rewritten_applies_every_field() {
        let k = key(0, UP_MAC, U1, 1, W1, 80);
        let rw = Rewrite {
            dst_addr: Some(U1),
            dst_port: Some(8080),
            src_addr: Some(W1),
            src_port: Some(443),
        };
        let r = k.rewritten(&rw);
        assert_eq!((r.src, r.sport, r.dst, r.dport), (W1, 443, U1, 8080));
        assert!(!rw.is_empty());
    }

    #[test]
    fn tables_and_health_are_shareable_between_workers() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Tables>();
        shareable::<PoolState>();
        shareable::<crate::HealthMonitor>();
        shareable::<Decision>();
    }

    #[test]
    fn empty_tables_never_steer() {
        let t = Tables::default();
        let h = PoolState::default();
        assert_eq!(
            t.decide(&key(0, UP_MAC, U1, 1, W1, 80), &h),
            Decision::NotSteered
        );
    }
}
