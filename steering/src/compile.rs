//! Compiling [`Definitions`] into [`Tables`].
//!
//! `compile` is pure and fast (one pass over services, a few hash inserts per hop), so the
//! router can build new tables on every reload and swap them in atomically; a rejected config
//! leaves the running tables untouched. Every error names the service, device or pool it is
//! about ([`CompileError::subject`]) so the conf layer can attach file:line:col.
//!
//! What one service compiles to (W1:P1 on i0, chain `fw` (fw0 on i1, fw1 on i2) → `ids`
//! (copy, i3) → `srv` (loopback on i2), as in Figure 7B):
//!
//! | table | key | value |
//! |---|---|---|
//! | ports | fwd W1 tcp P1; rev W1 tcp P1 | slot(group) |
//! | ports | rev S1 tcp TP1 (if `srv` were NAT + TP1) | slot(group, restore W1/P1, device) |
//! | ranges | fwd/rev W1 tcp, sorted | dynamic ranges → slot(group, dynamic) |
//! | legs (shared) | (i1, FW0ₘ), (i2, FW1ₘ), (i3, IDSₘ), (i2, SRVₘ) | device, side |
//! | arena span | fwd, on i0 | F0: to fw (ACL first) |
//! | arena span | fwd, from pool fw's out side | F1: to srv, copy to ids |
//! | arena span | rev, from pool srv | R1: to fw's second side, copy to ids (restore) |
//! | arena span | rev, from pool fw's in side | R0: route toward the client |
//! | arena span | fwd/rev, from pool ids | F1/R1 without copies (an IDS answering) |
//! | arena span | fwd on i2, rev on i1, rev on i2 | unexpected source |
//!
//! Services sharing a key (W1/tcp/P1 on different ingress interfaces) share the group and
//! must not share devices; a device may appear once per chain. Both make every returning
//! frame's position unambiguous, which compile checks.

use crate::decide::NextHop;
use crate::hash::{bucket_hash, hrw_score, name_seed, FastMap};
use crate::model::AclAction;
use crate::model::{Definitions, DeviceMode, HopTarget, OnFailure, ServiceDef, ServiceKey};
use crate::tables::{
    addr_bit, leg_key, port_key, pos_key, range_key, sub_key, DeviceRt, GroupRt, Leg, Member,
    PoolRt, PosVal, RangeItem, Role, ServiceRt, Slot, StepRt, Tables, Target, MAX_COPIES,
    MAX_POOLS, MAX_POOL_MEMBERS, SIDE_IN, SIDE_OUT,
};
use crate::tables::{
    role_of_key, PortIndex, PosEntry, HOME_BUCKETS_LOG2, HOME_TABLE_MIN_MEMBERS, NET,
};
use crate::types::{Direction, IfId, MacAddr, PortRange};
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

/// Why a set of definitions cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CompileError {
    /// An item has an empty name.
    #[error("a {kind} has an empty name")]
    EmptyName {
        /// "device", "pool" or "service".
        kind: &'static str,
    },
    /// Two items of one kind share a name.
    #[error("{kind} `{name}` is defined twice")]
    DuplicateName {
        /// "device", "pool" or "service".
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// A device lists no interface.
    #[error("device `{device}` lists no interface")]
    NoInterface {
        /// The device.
        device: String,
    },
    /// A transparent device does not have exactly two interfaces.
    #[error("transparent device `{device}` needs two interfaces (one per side), it has {count}")]
    TransparentInterfaces {
        /// The device.
        device: String,
        /// How many it has.
        count: usize,
    },
    /// A device addressed by MAC has none.
    #[error("{mode} device `{device}` is addressed by MAC but has none")]
    MissingMac {
        /// The device.
        device: String,
        /// Its mode.
        mode: &'static str,
    },
    /// A NAT device has no real address to rewrite to.
    #[error("NAT device `{device}` needs its real address")]
    NatWithoutAddress {
        /// The device.
        device: String,
    },
    /// A router-mode device has neither MAC nor address.
    #[error("router device `{device}` needs a MAC or an address to send to")]
    NoNextHop {
        /// The device.
        device: String,
    },
    /// A pool has no members.
    #[error("pool `{pool}` has no members")]
    EmptyPool {
        /// The pool.
        pool: String,
    },
    /// A pool has more members than one packet may hash over.
    #[error("pool `{pool}` has {count} members, at most {max} are allowed")]
    PoolTooLarge {
        /// The pool.
        pool: String,
        /// Its member count.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A pool names a device that does not exist.
    #[error("pool `{pool}` names unknown device `{device}`")]
    UnknownMember {
        /// The pool.
        pool: String,
        /// The missing device.
        device: String,
    },
    /// A pool lists a device twice (or as member and alternate).
    #[error("pool `{pool}` lists device `{device}` twice")]
    DuplicateMember {
        /// The pool.
        pool: String,
        /// The device.
        device: String,
    },
    /// A pool mixes device modes.
    #[error("pool `{pool}` mixes modes: `{device}` is {mode}, the first member {expected}")]
    MixedModes {
        /// The pool.
        pool: String,
        /// The odd device.
        device: String,
        /// Its mode.
        mode: &'static str,
        /// The first member's mode.
        expected: &'static str,
    },
    /// A health-check parameter is out of range.
    #[error("pool `{pool}`: {reason}")]
    InvalidHealthCheck {
        /// The pool.
        pool: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An actively checked pool has a member without an address to probe.
    #[error("pool `{pool}` probes device `{device}`, which has no address")]
    ProbeWithoutAddress {
        /// The pool.
        pool: String,
        /// The device.
        device: String,
    },
    /// A device is in two pools whose health checks differ (health is per device).
    #[error("device `{device}` is in pools `{pool}` and `{other}` with different health checks")]
    ConflictingHealth {
        /// The device.
        device: String,
        /// The later pool.
        pool: String,
        /// The earlier pool.
        other: String,
    },
    /// A service lists no ingress interface.
    #[error("service `{service}` has no ingress interface")]
    NoIngress {
        /// The service.
        service: String,
    },
    /// A service chain has no main (non-copy) hop.
    #[error("service `{service}` has no main hop in its chain")]
    EmptyChain {
        /// The service.
        service: String,
    },
    /// A chain names an unknown pool or device.
    #[error("service `{service}`, hop {hop}: unknown {kind} `{name}`")]
    UnknownTarget {
        /// The service.
        service: String,
        /// Hop position (0-based, copies counted).
        hop: usize,
        /// "pool" or "device".
        kind: &'static str,
        /// The missing name.
        name: String,
    },
    /// A device that ends chains (loopback, alias, NAT, router) is not the last main hop.
    #[error(
        "service `{service}`, hop {hop}: {mode} `{name}` ends a chain but is not its last hop"
    )]
    TerminalNotLast {
        /// The service.
        service: String,
        /// Hop position.
        hop: usize,
        /// Pool or device name.
        name: String,
        /// Its mode.
        mode: &'static str,
    },
    /// Too many copy hops attach to one step.
    #[error("service `{service}` has {count} copy hops before one main hop, at most {max}")]
    TooManyCopies {
        /// The service.
        service: String,
        /// How many.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A port range has `lo > hi`.
    #[error("service `{service}`: port range {lo}-{hi} is empty")]
    InvalidRange {
        /// The service.
        service: String,
        /// First port.
        lo: u16,
        /// Last port.
        hi: u16,
    },
    /// DSCP above 63.
    #[error("service `{service}`: DSCP {dscp} is above 63")]
    InvalidDscp {
        /// The service.
        service: String,
        /// The value.
        dscp: u8,
    },
    /// A feature that does not apply to this kind of service.
    #[error("service `{service}`: {what}")]
    Unsupported {
        /// The service.
        service: String,
        /// What and why.
        what: &'static str,
    },
    /// Two services share a key on an ingress interface.
    #[error("services `{service}` and `{other}` have the same key on interface {iface}")]
    DuplicateKey {
        /// The later service.
        service: String,
        /// The earlier service.
        other: String,
        /// The shared ingress interface.
        iface: IfId,
    },
    /// Ports (service ports, dynamic ranges, translated ports) of one address overlap.
    #[error("services `{service}` and `{other}` both claim port {port} of {addr}")]
    PortOverlap {
        /// One service.
        service: String,
        /// The other (may be the same service, e.g. a dynamic range over its own port).
        other: String,
        /// The address.
        addr: Ipv4Addr,
        /// The first shared port.
        port: u16,
    },
    /// Frames coming back for one address and port would continue two different ways (two
    /// services of one key share a device, or a device appears twice in a chain).
    #[error(
        "services `{service}` and `{other}` both expect frames from {from} for the same \
         address and port; the next hop would be ambiguous"
    )]
    AmbiguousReturn {
        /// The later service.
        service: String,
        /// The earlier service (may be the same: a device used twice in one chain).
        other: String,
        /// Where the frames come from: "device `x`", "pool `p`" or "interface 3".
        from: String,
    },
    /// Two devices share a MAC on one interface, so their frames cannot be told apart.
    #[error("devices `{device}` and `{other}` share MAC {mac} on interface {iface}")]
    SharedMac {
        /// The later device.
        device: String,
        /// The earlier device.
        other: String,
        /// The MAC.
        mac: MacAddr,
        /// The interface.
        iface: IfId,
    },
    /// Two routed chains share an address and port: replies from the network are ambiguous.
    #[error(
        "services `{service}` and `{other}` both end in routing for the same key; replies \
         from the network would be ambiguous"
    )]
    AmbiguousReverse {
        /// The later service.
        service: String,
        /// The earlier service.
        other: String,
    },
    /// More items than the tables can index.
    #[error("too many {what}")]
    TooLarge {
        /// What overflowed.
        what: &'static str,
    },
}

/// The item an error is about, for the conf layer to find its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject<'a> {
    /// A service by name.
    Service(&'a str),
    /// A device by name.
    Device(&'a str),
    /// A pool by name.
    Pool(&'a str),
    /// Nothing specific.
    None,
}

impl CompileError {
    /// The item the error is about.
    pub fn subject(&self) -> Subject<'_> {
        use CompileError as E;
        match self {
            E::NoInterface { device }
            | E::TransparentInterfaces { device, .. }
            | E::MissingMac { device, .. }
            | E::NatWithoutAddress { device }
            | E::NoNextHop { device }
            | E::ConflictingHealth { device, .. }
            | E::SharedMac { device, .. } => Subject::Device(device),
            E::EmptyPool { pool }
            | E::PoolTooLarge { pool, .. }
            | E::UnknownMember { pool, .. }
            | E::DuplicateMember { pool, .. }
            | E::MixedModes { pool, .. }
            | E::InvalidHealthCheck { pool, .. }
            | E::ProbeWithoutAddress { pool, .. } => Subject::Pool(pool),
            E::NoIngress { service }
            | E::EmptyChain { service }
            | E::UnknownTarget { service, .. }
            | E::TerminalNotLast { service, .. }
            | E::TooManyCopies { service, .. }
            | E::InvalidRange { service, .. }
            | E::InvalidDscp { service, .. }
            | E::Unsupported { service, .. }
            | E::DuplicateKey { service, .. }
            | E::PortOverlap { service, .. }
            | E::AmbiguousReturn { service, .. }
            | E::AmbiguousReverse { service, .. } => Subject::Service(service),
            E::DuplicateName { kind, name } => match *kind {
                "device" => Subject::Device(name),
                "pool" => Subject::Pool(name),
                _ => Subject::Service(name),
            },
            E::EmptyName { .. } | E::TooLarge { .. } => Subject::None,
        }
    }
}

/// Compiles definitions into lookup tables (pure; no I/O).
pub fn compile(defs: &Definitions) -> Result<Tables, CompileError> {
    let mut b = Builder::new(defs);
    b.devices()?;
    b.pools()?;
    for (i, s) in defs.services.iter().enumerate() {
        b.service(i, s)?;
    }
    b.finish()
}

/// A `usize` position as a table index.
fn idx(i: usize, what: &'static str) -> Result<u32, CompileError> {
    u32::try_from(i).map_err(|_| CompileError::TooLarge { what })
}

/// What a clashing position key was for, to word the error.
#[derive(Debug, Clone, Copy)]
enum Clash {
    /// A client ingress interface.
    Ingress(IfId),
    /// Frames from a pool.
    Pool(u32),
    /// Frames from MAC-less devices on an interface.
    Iface(IfId),
}

/// Builder state; the tables fill in as services are read.
struct Builder<'a> {
    defs: &'a Definitions,
    t: Tables,
    /// Exact ports (clash detection); laid out into `Tables::port_index` at the end.
    ports: FastMap<u64, Slot>,
    dev_by_name: HashMap<&'a str, u32>,
    pool_by_name: HashMap<&'a str, u32>,
    svc_names: HashSet<&'a str>,
    /// Device → its implicit single-member pool.
    implicit: HashMap<u32, u32>,
    /// Device → the pool its health settings came from.
    health_from: Vec<Option<u32>>,
    /// Device → the pools it is in (member or alternate).
    dev_pool_lists: Vec<Vec<u32>>,
    endpoint_by_key: FastMap<(u32, u8, u16, u16), u32>,
    endpoint_owner: Vec<u32>,
    sub_by_key: FastMap<u64, u32>,
    sub_owner: Vec<u32>,
    /// Groups with more than one service: the services after the first.
    group_more: FastMap<(bool, u32), Vec<u32>>,
    step_by: FastMap<StepRt, u32>,
    range_lists: FastMap<u64, Vec<RangeItem>>,
    scratch: Vec<u32>,
    /// Positions by `pos_key` while compiling (clash detection); `finish` lays them out as
    /// per-group spans of the arena.
    positions: FastMap<u64, PosVal>,
    endpoints: Vec<GroupRt>,
    sub_groups: Vec<GroupRt>,
}

impl<'a> Builder<'a> {
    fn new(defs: &'a Definitions) -> Self {
        let mut t = Tables::default();
        let n = defs.services.len();
        t.services.reserve(n);
        t.service_names.reserve(n);
        Builder {
            defs,
            t,
            ports: FastMap::with_capacity_and_hasher(n * 2, Default::default()),
            dev_by_name: HashMap::with_capacity(defs.devices.len()),
            pool_by_name: HashMap::with_capacity(defs.pools.len()),
            svc_names: HashSet::with_capacity(n),
            implicit: HashMap::new(),
            health_from: vec![None; defs.devices.len()],
            dev_pool_lists: vec![Vec::new(); defs.devices.len()],
            endpoint_by_key: FastMap::default(),
            endpoint_owner: Vec::with_capacity(n),
            sub_by_key: FastMap::default(),
            sub_owner: Vec::new(),
            group_more: FastMap::default(),
            step_by: FastMap::default(),
            range_lists: FastMap::default(),
            scratch: Vec::new(),
            positions: FastMap::with_capacity_and_hasher(n * 10, Default::default()),
            endpoints: Vec::with_capacity(n),
            sub_groups: Vec::new(),
        }
    }

    fn dev_name(&self, d: u32) -> String {
        self.t
            .device_names
            .get(d as usize)
            .cloned()
            .unwrap_or_default()
    }

    fn svc_name(&self, s: u32) -> String {
        self.t
            .service_names
            .get(s as usize)
            .cloned()
            .unwrap_or_default()
    }

    /// Validates devices, builds their data-plane view and their legs.
    fn devices(&mut self) -> Result<(), CompileError> {
        use CompileError as E;
        for d in &self.defs.devices {
            let i = idx(self.t.devices.len(), "devices")?;
            if d.name.is_empty() {
                return Err(E::EmptyName { kind: "device" });
            }
            if self.dev_by_name.insert(&d.name, i).is_some() {
                return Err(E::DuplicateName {
                    kind: "device",
                    name: d.name.clone(),
                });
            }
            let device = || d.name.clone();
            let first = *d
                .interfaces
                .first()
                .ok_or_else(|| E::NoInterface { device: device() })?;
            let missing_mac = || E::MissingMac {
                device: device(),
                mode: d.mode.as_str(),
            };
            let mut legs: Vec<(IfId, MacAddr, u8)> = Vec::with_capacity(2);
            let (in_next, out_if, out_next) = match d.mode {
                DeviceMode::Transparent => {
                    let (Some(&second), 2) = (d.interfaces.get(1), d.interfaces.len()) else {
                        return Err(E::TransparentInterfaces {
                            device: device(),
                            count: d.interfaces.len(),
                        });
                    };
                    let mac = d.mac.ok_or_else(missing_mac)?;
                    let out = d.out_mac.unwrap_or(mac);
                    legs.push((first, mac, SIDE_IN));
                    legs.push((second, out, SIDE_OUT));
                    (NextHop::Mac(mac), second, NextHop::Mac(out))
                }
                DeviceMode::Loopback | DeviceMode::Alias => {
                    let mac = d.mac.ok_or_else(missing_mac)?;
                    (NextHop::Mac(mac), first, NextHop::Mac(mac))
                }
                DeviceMode::Nat => {
                    let addr = d
                        .addr
                        .ok_or_else(|| E::NatWithoutAddress { device: device() })?;
                    let next = d.mac.map_or(NextHop::Addr(addr), NextHop::Mac);
                    (next, first, next)
                }
                DeviceMode::Router => {
                    let next = match (d.mac, d.addr) {
                        (Some(m), _) => NextHop::Mac(m),
                        (None, Some(a)) => NextHop::Addr(a),
                        (None, None) => return Err(E::NoNextHop { device: device() }),
                    };
                    (next, first, next)
                }
            };
            if d.mode != DeviceMode::Transparent {
                if let Some(mac) = d.mac {
                    // End devices answer on any of their interfaces.
                    legs.extend(d.interfaces.iter().map(|&i| (i, mac, SIDE_IN)));
                }
            }
            for (iface, mac, side) in legs {
                let key = leg_key(iface, mac);
                match self.t.legs.get_mut(&key) {
                    None => {
                        self.t.legs.insert(
                            key,
                            Leg {
                                device: i,
                                sides: side,
                            },
                        );
                    }
                    Some(l) if l.device == i => l.sides |= side,
                    Some(l) => {
                        let other = l.device;
                        return Err(E::SharedMac {
                            device: device(),
                            other: self.dev_name(other),
                            mac,
                            iface,
                        });
                    }
                }
            }
            self.t.devices.push(DeviceRt {
                mode: d.mode,
                in_if: first,
                in_next,
                out_if,
                out_next,
                addr: d.addr,
                seed: name_seed(&d.name),
                pools_start: 0,
                pools_len: 0,
            });
            self.t.device_names.push(d.name.clone());
            self.t.health.push(Default::default());
        }
        Ok(())
    }

    /// Validates explicit pools and merges their health settings into their devices.
    fn pools(&mut self) -> Result<(), CompileError> {
        use CompileError as E;
        if self.defs.pools.len() >= MAX_POOLS {
            return Err(E::TooLarge { what: "pools" });
        }
        for p in &self.defs.pools {
            let pi = idx(self.t.pools.len(), "pools")?;
            if p.name.is_empty() {
                return Err(E::EmptyName { kind: "pool" });
            }
            if self.pool_by_name.insert(&p.name, pi).is_some() {
                return Err(E::DuplicateName {
                    kind: "pool",
                    name: p.name.clone(),
                });
            }
            let pool = || p.name.clone();
            if p.members.is_empty() {
                return Err(E::EmptyPool { pool: pool() });
            }
            if p.members.len() > MAX_POOL_MEMBERS {
                return Err(E::PoolTooLarge {
                    pool: pool(),
                    count: p.members.len(),
                    max: MAX_POOL_MEMBERS,
                });
            }
            let start = self.t.member_devs.len();
            let mut devs: Vec<u32> = Vec::with_capacity(p.members.len() + 1);
            for m in p.members.iter().chain(p.alternate.iter()) {
                let d = *self
                    .dev_by_name
                    .get(m.as_str())
                    .ok_or_else(|| E::UnknownMember {
                        pool: pool(),
                        device: m.clone(),
                    })?;
                if devs.contains(&d) {
                    return Err(E::DuplicateMember {
                        pool: pool(),
                        device: m.clone(),
                    });
                }
                devs.push(d);
            }
            let mode_of = |d: u32| self.t.devices.get(d as usize).map(|x| x.mode);
            let first_mode = devs.first().and_then(|&d| mode_of(d));
            for &d in &devs {
                if mode_of(d) != first_mode {
                    return Err(E::MixedModes {
                        pool: pool(),
                        device: self.dev_name(d),
                        mode: mode_of(d).map_or("?", DeviceMode::as_str),
                        expected: first_mode.map_or("?", DeviceMode::as_str),
                    });
                }
            }
            self.check_health(p, &devs)?;
            let alternate = p.alternate.as_ref().and_then(|_| devs.last().copied());
            let n_members = p.members.len();
            self.t
                .member_devs
                .extend(devs.iter().take(n_members).copied());
            self.t.pools.push(PoolRt {
                start: idx(start, "pool members")?,
                len: idx(n_members, "pool members")?,
                alternate,
                policy: p.policy,
                reset: matches!(p.on_failure, OnFailure::Reset { .. }),
                mode: first_mode.unwrap_or(DeviceMode::Transparent),
                homes: None,
            });
            self.t.pool_names.push(p.name.clone());
            for &d in &devs {
                if let Some(v) = self.dev_pool_lists.get_mut(d as usize) {
                    v.push(pi);
                }
                self.merge_health(pi, p, d)?;
            }
        }
        Ok(())
    }

    /// Health-check parameter ranges and probe addresses.
    fn check_health(&self, p: &crate::model::PoolDef, devs: &[u32]) -> Result<(), CompileError> {
        let bad = |reason| {
            Err(CompileError::InvalidHealthCheck {
                pool: p.name.clone(),
                reason,
            })
        };
        if let Some(a) = &p.active {
            if a.rise == 0 || a.fall == 0 {
                return bad("health check rise and fall must be at least 1");
            }
            if a.interval.is_zero() || a.timeout.is_zero() {
                return bad("health check interval and timeout must be positive");
            }
            for &d in devs {
                if self
                    .t
                    .devices
                    .get(d as usize)
                    .and_then(|x| x.addr)
                    .is_none()
                {
                    return Err(CompileError::ProbeWithoutAddress {
                        pool: p.name.clone(),
                        device: self.dev_name(d),
                    });
                }
            }
        }
        if let Some(ps) = &p.passive {
            if ps.syn_threshold == 0 {
                return bad("passive check syn_threshold must be at least 1");
            }
            if ps.window.is_zero() {
                return bad("passive check window must be positive");
            }
        }
        Ok(())
    }

    /// Health is per device: a device in two checked pools must be checked alike.
    fn merge_health(
        &mut self,
        pi: u32,
        p: &crate::model::PoolDef,
        d: u32,
    ) -> Result<(), CompileError> {
        let Some(h) = self.t.health.get_mut(d as usize) else {
            return Ok(());
        };
        if let OnFailure::Reset { window } = p.on_failure {
            h.drain = h.drain.max(window);
        }
        if p.active.is_none() && p.passive.is_none() {
            return Ok(());
        }
        match self.health_from.get(d as usize).copied().flatten() {
            Some(other) => {
                if (h.active, h.passive, h.restore) != (p.active, p.passive, p.restore) {
                    return Err(CompileError::ConflictingHealth {
                        device: self.dev_name(d),
                        pool: p.name.clone(),
                        other: self
                            .t
                            .pool_names
                            .get(other as usize)
                            .cloned()
                            .unwrap_or_default(),
                    });
                }
            }
            None => {
                h.active = p.active;
                h.passive = p.passive;
                h.restore = p.restore;
                if let Some(slot) = self.health_from.get_mut(d as usize) {
                    *slot = Some(pi);
                }
            }
        }
        Ok(())
    }

    /// The single-member pool of a device named directly in a chain.
    fn implicit_pool(&mut self, d: u32) -> Result<u32, CompileError> {
        if let Some(&p) = self.implicit.get(&d) {
            return Ok(p);
        }
        if self.t.pools.len() >= MAX_POOLS {
            return Err(CompileError::TooLarge { what: "pools" });
        }
        let p = idx(self.t.pools.len(), "pools")?;
        let dev = self
            .t
            .devices
            .get(d as usize)
            .ok_or(CompileError::TooLarge { what: "devices" })?;
        self.t.pools.push(PoolRt {
            start: idx(self.t.member_devs.len(), "pool members")?,
            len: 1,
            alternate: None,
            policy: Default::default(),
            reset: false,
            mode: dev.mode,
            homes: None,
        });
        self.t.member_devs.push(d);
        self.t.pool_names.push(self.dev_name(d));
        if let Some(v) = self.dev_pool_lists.get_mut(d as usize) {
            v.push(p);
        }
        self.implicit.insert(d, p);
        Ok(p)
    }

    /// Appends the members and alternate of pool `p` to `out`.
    fn pool_devs_into(&self, p: u32, out: &mut Vec<u32>) {
        if let Some(pool) = self.t.pools.get(p as usize) {
            out.extend_from_slice(self.t.members(pool));
            out.extend(pool.alternate);
        }
    }

    fn pool_mode(&self, p: u32) -> DeviceMode {
        self.t
            .pools
            .get(p as usize)
            .map_or(DeviceMode::Transparent, |p| p.mode)
    }

    /// The pool a chain hop resolves to, for a service already compiled (no side effects).
    fn resolved_pool(&self, hop: &HopTarget) -> Option<u32> {
        match hop {
            HopTarget::Pool(n) => self.pool_by_name.get(n.as_str()).copied(),
            HopTarget::Device(n) => {
                let d = self.dev_by_name.get(n.as_str())?;
                self.implicit.get(d).copied()
            }
        }
    }

    /// Every device (members and alternates) of a compiled service's chain, sorted.
    fn service_devices(&self, svc: u32) -> Vec<u32> {
        let mut v = Vec::new();
        if let Some(def) = self.defs.services.get(svc as usize) {
            for hop in &def.chain {
                if let Some(p) = self.resolved_pool(&hop.target) {
                    self.pool_devs_into(p, &mut v);
                }
            }
        }
        v.sort_unstable();
        v
    }

    fn intern_step(&mut self, st: StepRt) -> Result<u32, CompileError> {
        if let Some(&i) = self.step_by.get(&st) {
            return Ok(i);
        }
        let i = idx(self.t.steps.len(), "steps")?;
        if i == u32::MAX {
            return Err(CompileError::TooLarge { what: "steps" });
        }
        self.t.steps.push(st);
        self.step_by.insert(st, i);
        Ok(i)
    }

    /// Compiles one service: validation, steps, positions and port keys.
    fn service(&mut self, si: usize, s: &'a ServiceDef) -> Result<(), CompileError> {
        use CompileError as E;
        let svc = idx(si, "services")?;
        if s.name.is_empty() {
            return Err(E::EmptyName { kind: "service" });
        }
        if !self.svc_names.insert(&s.name) {
            return Err(E::DuplicateName {
                kind: "service",
                name: s.name.clone(),
            });
        }
        let service = || s.name.clone();
        if s.ingress.is_empty() {
            return Err(E::NoIngress { service: service() });
        }
        if let Some(dscp) = s.dscp.filter(|&d| d > 63) {
            return Err(E::InvalidDscp {
                service: service(),
                dscp,
            });
        }
        let check_range = |r: &PortRange| {
            if r.lo > r.hi {
                Err(E::InvalidRange {
                    service: service(),
                    lo: r.lo,
                    hi: r.hi,
                })
            } else {
                Ok(())
            }
        };
        for r in &s.acl {
            for pr in r.src_ports.iter().chain(r.dst_ports.iter()) {
                check_range(pr)?;
            }
        }
        for r in &s.dynamic_ranges {
            check_range(r)?;
        }

        // The chain: main hops, and the copies in the gap before each (gap n: after the last).
        let mut main: Vec<(u32, usize)> = Vec::with_capacity(s.chain.len());
        let mut gaps: Vec<Vec<u32>> = vec![Vec::new()];
        for (h, hop) in s.chain.iter().enumerate() {
            let p = match &hop.target {
                HopTarget::Pool(n) => {
                    *self
                        .pool_by_name
                        .get(n.as_str())
                        .ok_or_else(|| E::UnknownTarget {
                            service: service(),
                            hop: h,
                            kind: "pool",
                            name: n.clone(),
                        })?
                }
                HopTarget::Device(n) => {
                    let d = *self
                        .dev_by_name
                        .get(n.as_str())
                        .ok_or_else(|| E::UnknownTarget {
                            service: service(),
                            hop: h,
                            kind: "device",
                            name: n.clone(),
                        })?;
                    self.implicit_pool(d)?
                }
            };
            if hop.copy {
                if let Some(g) = gaps.last_mut() {
                    g.push(p);
                }
            } else {
                main.push((p, h));
                gaps.push(Vec::new());
            }
        }
        let n = main.len();
        let Some(&(last_pool, _)) = main.last() else {
            return Err(E::EmptyChain { service: service() });
        };
        for &(p, h) in main.iter().take(n - 1) {
            let mode = self.pool_mode(p);
            if mode.is_terminal() {
                return Err(E::TerminalNotLast {
                    service: service(),
                    hop: h,
                    name: self
                        .t
                        .pool_names
                        .get(p as usize)
                        .cloned()
                        .unwrap_or_default(),
                    mode: mode.as_str(),
                });
            }
        }
        let last_mode = self.pool_mode(last_pool);
        let terminal = last_mode.is_terminal();
        if terminal {
            // Copies listed after the end device travel with the frame to it (and back).
            let tail = gaps.pop().unwrap_or_default();
            if let Some(g) = gaps.last_mut() {
                g.extend(tail);
            }
            gaps.push(Vec::new());
        }
        for g in &gaps {
            if g.len() > MAX_COPIES {
                return Err(E::TooManyCopies {
                    service: service(),
                    count: g.len(),
                    max: MAX_COPIES,
                });
            }
        }

        // A device may appear once per chain: its frames must say where they are.
        let mut devs = std::mem::take(&mut self.scratch);
        devs.clear();
        for &p in main.iter().map(|(p, _)| p).chain(gaps.iter().flatten()) {
            self.pool_devs_into(p, &mut devs);
        }
        devs.sort_unstable();
        if let Some(w) = devs.windows(2).find(|w| w[0] == w[1]) {
            return Err(E::AmbiguousReturn {
                service: service(),
                other: service(),
                from: format!("device `{}`", self.dev_name(w[0])),
            });
        }

        // The key and the features that depend on it.
        let (group, sub) = match s.key {
            ServiceKey::Address { addr, proto, ports } => {
                check_range(&ports)?;
                if s.translate_port.is_some() && !ports.is_single() {
                    return Err(E::Unsupported {
                        service: service(),
                        what: "port translation needs a single service port, not a range",
                    });
                }
                let k = (u32::from(addr), proto, ports.lo, ports.hi);
                let g = match self.endpoint_by_key.get(&k) {
                    Some(&g) => {
                        self.group_more.entry((false, g)).or_default().push(svc);
                        g
                    }
                    None => {
                        let g = idx(self.endpoints.len(), "endpoints")?;
                        self.endpoints.push(GroupRt::default());
                        self.endpoint_owner.push(svc);
                        self.endpoint_by_key.insert(k, g);
                        g
                    }
                };
                (g, false)
            }
            ServiceKey::Subscriber { prefix, proto } => {
                if s.translate_port.is_some() || !s.dynamic_ranges.is_empty() {
                    return Err(E::Unsupported {
                        service: service(),
                        what: "port translation and dynamic ranges need a service port",
                    });
                }
                if last_mode == DeviceMode::Nat {
                    return Err(E::Unsupported {
                        service: service(),
                        what:
                            "a subscriber chain cannot end in a NAT device (no address to restore)",
                    });
                }
                let k = sub_key(u32::from(prefix.addr()), prefix.len(), proto);
                let g = match self.sub_by_key.get(&k) {
                    Some(&g) => {
                        self.group_more.entry((true, g)).or_default().push(svc);
                        g
                    }
                    None => {
                        let g = idx(self.sub_groups.len(), "subscriber groups")?;
                        self.sub_groups.push(GroupRt::default());
                        self.sub_owner.push(svc);
                        self.sub_by_key.insert(k, g);
                        self.t.sub_index.insert(k, g);
                        if !self.t.sub_lens.contains(&prefix.len()) {
                            self.t.sub_lens.push(prefix.len());
                        }
                        g
                    }
                };
                (g, true)
            }
        };

        // Same key on a shared ingress interface: a duplicate service.
        for &iface in &s.ingress {
            let key = pos_key(group, sub, Direction::Forward, Role::Iface(iface));
            if let Some(v) = self.positions.get(&key).filter(|v| v.get_step().is_some()) {
                return Err(E::DuplicateKey {
                    service: service(),
                    other: self.svc_name(v.service()),
                    iface,
                });
            }
        }
        // Services sharing a key (they differ by ingress) must not share devices: a frame back
        // from a shared device could belong to either.
        if let Some(more) = self.group_more.get(&(sub, group)) {
            let owners = if sub {
                &self.sub_owner
            } else {
                &self.endpoint_owner
            };
            let earlier: Vec<u32> = owners
                .get(group as usize)
                .into_iter()
                .copied()
                .chain(more.iter().copied().filter(|&o| o != svc))
                .collect();
            for e in earlier {
                let theirs = self.service_devices(e);
                if let Some(&d) = devs.iter().find(|d| theirs.binary_search(d).is_ok()) {
                    return Err(E::AmbiguousReturn {
                        service: service(),
                        other: self.svc_name(e),
                        from: format!("device `{}`", self.dev_name(d)),
                    });
                }
            }
        }
        self.scratch = devs;

        // Per-service data.
        let acl_start = idx(self.t.acl.len(), "ACL rules")?;
        self.t.acl.extend_from_slice(&s.acl);
        self.t.services.push(ServiceRt {
            acl_start,
            acl_len: idx(s.acl.len(), "ACL rules")?,
            acl_default: s.acl_default,
        });
        self.t.service_names.push(s.name.clone());
        let has_acl = !s.acl.is_empty() || s.acl_default == AclAction::Deny;

        // Steps: forward F(0..=last), reverse R(0..=last). `last` is the end device's hop, or,
        // for a routed chain, the "route normally" step after the last transparent hop.
        // F(k) sends to main hop k (copies of gap k alongside); R(k) is taken by a frame back
        // from hop k and sends it to hop k-1's second side (R(0): route toward the client),
        // with the copies of the same gap: the seed's Figure 7B read top-down, then
        // bottom-up. Only F(0) checks the ACL; only the last forward step translates.
        let last = if terminal { n - 1 } else { n };
        let mk = |dir, target, copies: &[u32], acl, translate, entering| {
            let mut c = [0u32; MAX_COPIES];
            for (slot, &p) in c.iter_mut().zip(copies) {
                *slot = p;
            }
            StepRt {
                dir,
                target,
                copies: c,
                n_copies: copies.len().min(MAX_COPIES) as u8,
                acl,
                translate,
                entering,
                dscp: s.dscp,
            }
        };
        let main_target = |k: usize| main.get(k).map_or(Target::Route, |&(p, _)| Target::Pool(p));
        let gap = |k: usize| gaps.get(k).map_or(&[][..], |g| g.as_slice());
        let mut f = Vec::with_capacity(last + 1);
        let mut r = Vec::with_capacity(last + 1);
        for k in 0..=last {
            let translate = if k == last { s.translate_port } else { None };
            let fwd = mk(
                Direction::Forward,
                main_target(k),
                gap(k),
                k == 0 && has_acl,
                translate,
                k == 0,
            );
            f.push(self.intern_step(fwd)?);
            let target = if k == 0 {
                Target::Route
            } else {
                main_target(k - 1)
            };
            let rev = mk(Direction::Reverse, target, gap(k), false, None, k == last);
            r.push(self.intern_step(rev)?);
        }
        let at = |v: &[u32], k: usize| PosVal::step(v.get(k).copied().unwrap_or(0), svc);

        // Positions: client ingress (any MAC on an ingress interface is a client).
        for &iface in &s.ingress {
            let key = pos_key(group, sub, Direction::Forward, Role::Iface(iface));
            self.put_real(key, at(&f, 0), svc, Clash::Ingress(iface))?;
        }
        // Transparent hops: forward frames come back on the second side, reverse ones on the
        // first; any other MAC there is an unexpected source.
        let mut ifs: Vec<IfId> = Vec::new();
        for (k, &(p, _)) in main.iter().enumerate() {
            if self.pool_mode(p) != DeviceMode::Transparent {
                continue;
            }
            let fkey = pos_key(group, sub, Direction::Forward, Role::Pool(p, SIDE_OUT));
            self.put_real(fkey, at(&f, k + 1), svc, Clash::Pool(p))?;
            let rkey = pos_key(group, sub, Direction::Reverse, Role::Pool(p, SIDE_IN));
            self.put_real(rkey, at(&r, k), svc, Clash::Pool(p))?;
            let mut members = std::mem::take(&mut self.scratch);
            members.clear();
            self.pool_devs_into(p, &mut members);
            for &d in &members {
                let Some(dev) = self.t.devices.get(d as usize).copied() else {
                    continue;
                };
                self.put_unexpected(
                    pos_key(group, sub, Direction::Forward, Role::Iface(dev.out_if)),
                    svc,
                );
                if terminal {
                    ifs.push(dev.in_if);
                }
            }
            self.scratch = members;
        }
        // The end device answers on any of its interfaces; without a MAC it is known by its
        // interface only (a NAT member is then named by its address's slot).
        if terminal {
            let rkey = pos_key(
                group,
                sub,
                Direction::Reverse,
                Role::Pool(last_pool, SIDE_IN),
            );
            self.put_real(rkey, at(&r, n - 1), svc, Clash::Pool(last_pool))?;
            let mut members = std::mem::take(&mut self.scratch);
            members.clear();
            self.pool_devs_into(last_pool, &mut members);
            for &d in &members {
                let Some(def) = self.defs.devices.get(d as usize) else {
                    continue;
                };
                for &iface in &def.interfaces {
                    if def.mac.is_none() {
                        let key = pos_key(group, sub, Direction::Reverse, Role::Iface(iface));
                        self.put_real(key, at(&r, n - 1), svc, Clash::Iface(iface))?;
                    } else {
                        ifs.push(iface);
                    }
                }
            }
            self.scratch = members;
            for iface in ifs {
                self.put_unexpected(
                    pos_key(group, sub, Direction::Reverse, Role::Iface(iface)),
                    svc,
                );
            }
        } else {
            let groups = if sub {
                &mut self.sub_groups
            } else {
                &mut self.endpoints
            };
            if let Some(g) = groups.get_mut(group as usize) {
                if let Some(other) = g.rev_default {
                    let other = other.service();
                    return Err(E::AmbiguousReverse {
                        service: service(),
                        other: self.svc_name(other),
                    });
                }
                g.rev_default = Some(at(&r, n));
            }
        }
        // Frames from copy devices (an IDS answering, Figure 7: "sends such packets … to
        // application server") continue like the frame they copied, without copying again.
        for k in 0..=last {
            let copies = gap(k);
            if copies.is_empty() {
                continue;
            }
            let plain = |v: &[u32], this: &Self| {
                let mut st = this
                    .t
                    .steps
                    .get(v.get(k).copied().unwrap_or(0) as usize)
                    .copied()?;
                st.n_copies = 0;
                st.copies = [0; MAX_COPIES];
                st.acl = false;
                st.entering = false;
                Some(st)
            };
            let (Some(fs), Some(rs)) = (plain(&f, self), plain(&r, self)) else {
                continue;
            };
            let fs = self.intern_step(fs)?;
            let rs = self.intern_step(rs)?;
            for &c in copies {
                let fkey = pos_key(group, sub, Direction::Forward, Role::Pool(c, SIDE_IN));
                self.put_real(fkey, PosVal::step(fs, svc), svc, Clash::Pool(c))?;
                let rkey = pos_key(group, sub, Direction::Reverse, Role::Pool(c, SIDE_IN));
                self.put_real(rkey, PosVal::step(rs, svc), svc, Clash::Pool(c))?;
            }
        }

        // Port keys (address services).
        if let ServiceKey::Address { addr, proto, ports } = s.key {
            let plain = Slot::new(group, None, None, false, None);
            let dynamic = Slot::new(group, None, None, true, None);
            for dir in [Direction::Forward, Direction::Reverse] {
                self.put_ports(dir, addr, proto, ports, plain, svc)?;
                for rg in &s.dynamic_ranges {
                    self.put_range(dir, addr, proto, *rg, dynamic);
                }
            }
            // What the end device's replies carry as source: its own address (NAT) or W1, and
            // TP1 when translated; those keys restore W1:P1. The NAT member is part of its
            // slot (its address tells it apart).
            let mut forms: Vec<(Ipv4Addr, Option<Ipv4Addr>, Option<u32>)> = Vec::new();
            if terminal && last_mode == DeviceMode::Nat {
                let mut members = std::mem::take(&mut self.scratch);
                members.clear();
                self.pool_devs_into(last_pool, &mut members);
                for &d in &members {
                    if let Some(a) = self.t.devices.get(d as usize).and_then(|x| x.addr) {
                        forms.push((a, (a != addr).then_some(addr), (a != addr).then_some(d)));
                    }
                }
                self.scratch = members;
            } else {
                forms.push((addr, None, None));
            }
            for (a, restore_addr, device) in forms {
                let (rports, restore_port) = match s.translate_port {
                    Some(tp) => (PortRange::single(tp), (tp != ports.lo).then_some(ports.lo)),
                    None => (ports, None),
                };
                let sl = Slot::new(group, restore_addr, restore_port, false, device);
                self.put_ports(Direction::Reverse, a, proto, rports, sl, svc)?;
                let dl = Slot::new(group, restore_addr, None, true, device);
                for rg in &s.dynamic_ranges {
                    self.put_range(Direction::Reverse, a, proto, *rg, dl);
                }
            }
        }
        Ok(())
    }

    /// The service that first defined a slot's group (for error messages).
    fn slot_owner(&self, slot: &Slot) -> String {
        let svc = self
            .endpoint_owner
            .get(slot.group as usize)
            .copied()
            .unwrap_or(0);
        self.svc_name(svc)
    }

    /// A single port as an exact key, a range into the address's range list.
    fn put_ports(
        &mut self,
        dir: Direction,
        addr: Ipv4Addr,
        proto: u8,
        ports: PortRange,
        slot: Slot,
        svc: u32,
    ) -> Result<(), CompileError> {
        if !ports.is_single() {
            self.put_range(dir, addr, proto, ports, slot);
            return Ok(());
        }
        let key = port_key(dir, addr, proto, ports.lo);
        match self.ports.get(&key) {
            None => {
                self.ports.insert(key, slot);
                Ok(())
            }
            Some(s) if *s == slot => Ok(()),
            Some(s) => Err(CompileError::PortOverlap {
                service: self.svc_name(svc),
                other: self.slot_owner(s),
                addr,
                port: ports.lo,
            }),
        }
    }

    fn put_range(&mut self, dir: Direction, addr: Ipv4Addr, proto: u8, r: PortRange, slot: Slot) {
        self.range_lists
            .entry(range_key(dir, addr, proto))
            .or_default()
            .push(RangeItem {
                lo: r.lo,
                hi: r.hi,
                slot,
            });
    }

    /// Inserts a real position; a clash with another real one is a config error.
    fn put_real(
        &mut self,
        key: u64,
        val: PosVal,
        svc: u32,
        clash: Clash,
    ) -> Result<(), CompileError> {
        match self.positions.get(&key).copied() {
            None => {
                self.positions.insert(key, val);
                Ok(())
            }
            Some(v) if v.get_step().is_none() => {
                self.positions.insert(key, val);
                Ok(())
            }
            Some(v) if v == val => Ok(()),
            Some(v) => {
                let (service, other) = (self.svc_name(svc), self.svc_name(v.service()));
                Err(match clash {
                    Clash::Ingress(iface) => CompileError::DuplicateKey {
                        service,
                        other,
                        iface,
                    },
                    Clash::Pool(p) => CompileError::AmbiguousReturn {
                        service,
                        other,
                        from: format!(
                            "pool `{}`",
                            self.t.pool_names.get(p as usize).map_or("", String::as_str)
                        ),
                    },
                    Clash::Iface(i) => CompileError::AmbiguousReturn {
                        service,
                        other,
                        from: format!("MAC-less devices on interface {i}"),
                    },
                })
            }
        }
    }

    /// Marks an interface as carrying returning frames; real positions take precedence.
    fn put_unexpected(&mut self, key: u64, svc: u32) {
        self.positions.entry(key).or_insert(PosVal::unexpected(svc));
    }

    /// Lays positions out as one arena span per group (counting sort by group).
    fn layout_positions(&mut self) -> Result<(), CompileError> {
        let n_end = self.endpoints.len();
        let n_groups = n_end + self.sub_groups.len();
        let group_of = |key: u64| {
            let g = (key >> 32) as usize;
            if key & (1 << 31) != 0 {
                n_end + g
            } else {
                g
            }
        };
        let mut counts = vec![0u32; n_groups + 1];
        for &k in self.positions.keys() {
            if let Some(c) = counts.get_mut(group_of(k)) {
                *c += 1;
            }
        }
        for (g, rt) in self
            .endpoints
            .iter()
            .chain(self.sub_groups.iter())
            .enumerate()
        {
            if rt.rev_default.is_some() {
                if let Some(c) = counts.get_mut(g) {
                    *c += 1;
                }
            }
        }
        let mut spans = Vec::with_capacity(n_groups);
        let mut next = Vec::with_capacity(n_groups);
        let mut at = 0u32;
        for &c in counts.iter().take(n_groups) {
            spans.push((at, c));
            next.push(at);
            at = at
                .checked_add(c)
                .ok_or(CompileError::TooLarge { what: "positions" })?;
        }
        let empty = PosEntry {
            role: 0,
            val: PosVal::unexpected(0),
        };
        let mut arena = vec![empty; at as usize];
        let mut place = |g: usize, e: PosEntry| {
            if let Some(n) = next.get_mut(g) {
                if let Some(slot) = arena.get_mut(*n as usize) {
                    *slot = e;
                }
                *n += 1;
            }
        };
        // Sorted keys keep the layout deterministic.
        let mut keys: Vec<(u64, PosVal)> = self.positions.iter().map(|(&k, &v)| (k, v)).collect();
        keys.sort_unstable_by_key(|e| e.0);
        for (k, val) in keys {
            place(
                group_of(k),
                PosEntry {
                    role: role_of_key(k),
                    val,
                },
            );
        }
        for (g, rt) in self
            .endpoints
            .iter()
            .chain(self.sub_groups.iter())
            .enumerate()
        {
            if let Some(val) = rt.rev_default {
                place(g, PosEntry { role: NET, val });
            }
        }
        self.t.sub_spans = spans.split_off(n_end);
        self.t.spans = spans;
        self.t.arena = arena;
        Ok(())
    }

    /// Home tables for pools of [`HOME_TABLE_MIN_MEMBERS`] or more: each bucket's rendezvous
    /// winner among the members; pools with the same members (by seed, in order) share one.
    fn build_home_tables(&mut self) -> Result<(), CompileError> {
        let buckets = 1usize << HOME_BUCKETS_LOG2;
        let mut shared: FastMap<Vec<u64>, u32> = FastMap::default();
        for pi in 0..self.t.pools.len() {
            let Some(pool) = self.t.pools.get(pi).copied() else {
                continue;
            };
            let members = self.t.member_slots(&pool);
            if members.len() < HOME_TABLE_MIN_MEMBERS {
                continue;
            }
            let seeds: Vec<u64> = members.iter().map(|m| m.seed).collect();
            let start = match shared.get(&seeds) {
                Some(&start) => start,
                None => {
                    let start = idx(self.t.homes.len(), "pool home tables")?;
                    for b in 0..buckets {
                        // The bucket's flows share their top hash bits; its own hash stands in
                        // for them in the rendezvous.
                        let h = bucket_hash(b as u64);
                        let mut best = 0u8;
                        let mut best_score = 0u64;
                        for (i, &seed) in seeds.iter().enumerate() {
                            let s = hrw_score(h, seed);
                            if i == 0 || s > best_score {
                                best = i as u8;
                                best_score = s;
                            }
                        }
                        self.t.homes.push(best);
                    }
                    shared.insert(seeds, start);
                    start
                }
            };
            if let Some(p) = self.t.pools.get_mut(pi) {
                p.homes = Some(start);
            }
        }
        Ok(())
    }

    /// Device pool lists, range lists, exact ports against ranges, prefix order.
    fn finish(mut self) -> Result<Tables, CompileError> {
        self.layout_positions()?;
        for &k in self.t.legs.keys() {
            let iface = (k >> 48) as usize;
            if self.t.leg_ifaces.len() <= iface {
                self.t.leg_ifaces.resize(iface + 1, false);
            }
            if let Some(f) = self.t.leg_ifaces.get_mut(iface) {
                *f = true;
            }
        }
        self.t.member_slots = self
            .t
            .member_devs
            .iter()
            .map(|&d| Member {
                seed: self.t.devices.get(d as usize).map_or(0, |x| x.seed),
                device: d,
            })
            .collect();
        self.build_home_tables()?;
        for (d, pools) in self.dev_pool_lists.iter().enumerate() {
            let start = idx(self.t.dev_pools.len(), "device pools")?;
            self.t.dev_pools.extend_from_slice(pools);
            if let Some(dev) = self.t.devices.get_mut(d) {
                dev.pools_start = start;
                dev.pools_len = idx(pools.len(), "device pools")?;
            }
        }
        let mut keys: Vec<u64> = self.range_lists.keys().copied().collect();
        keys.sort_unstable();
        for k in keys {
            let addr = Ipv4Addr::from((k >> 32) as u32);
            let mut v = self.range_lists.remove(&k).unwrap_or_default();
            v.sort_unstable_by_key(|r| (r.lo, r.hi));
            let mut merged: Vec<RangeItem> = Vec::with_capacity(v.len());
            for it in v {
                if let Some(last) = merged.last_mut() {
                    if it.lo <= last.hi {
                        if it.slot != last.slot {
                            return Err(CompileError::PortOverlap {
                                service: self.slot_owner(&it.slot),
                                other: self.slot_owner(&last.slot),
                                addr,
                                port: it.lo,
                            });
                        }
                        last.hi = last.hi.max(it.hi);
                        continue;
                    }
                }
                merged.push(it);
            }
            let start = idx(self.t.range_items.len(), "port ranges")?;
            let len = idx(merged.len(), "port ranges")?;
            self.t.range_items.extend(merged);
            self.t.ranges.insert(k, (start, len));
        }
        // A single port inside another slot's range (a dynamic range over a service port).
        if !self.t.ranges.is_empty() {
            let mut exact: Vec<(u64, Slot)> = self.ports.iter().map(|(&k, &s)| (k, s)).collect();
            exact.sort_unstable_by_key(|e| e.0);
            for (k, s) in exact {
                let port = (k >> 16) as u16;
                let rk = k & !(0xffff << 16);
                let Some(&(start, len)) = self.t.ranges.get(&rk) else {
                    continue;
                };
                let items = self
                    .t
                    .range_items
                    .get(start as usize..(start + len) as usize)
                    .unwrap_or(&[]);
                if let Some(r) = items.iter().find(|r| r.lo <= port && port <= r.hi) {
                    if r.slot != s {
                        return Err(CompileError::PortOverlap {
                            service: self.slot_owner(&s),
                            other: self.slot_owner(&r.slot),
                            addr: Ipv4Addr::from((k >> 32) as u32),
                            port,
                        });
                    }
                }
            }
        }
        self.t.sub_lens.sort_unstable_by(|a, b| b.cmp(a));
        self.t.port_index = PortIndex::build(&self.ports, &self.t.spans, &self.t.arena);
        // The address prefilter: about 8 bits per address, between 2^10 and 2^20 bits, so it
        // stays in L1/L2 and passes about one foreign address in eight.
        let addrs: Vec<Ipv4Addr> = self
            .ports
            .keys()
            .chain(self.t.ranges.keys())
            .map(|&k| Ipv4Addr::from((k >> 32) as u32))
            .collect();
        let log2 = (addrs.len().max(1) * 8)
            .next_power_of_two()
            .trailing_zeros()
            .clamp(10, 20);
        self.t.addr_bits = vec![0u64; (1usize << log2) / 64];
        self.t.addr_bits_log2 = log2;
        for a in addrs {
            let b = addr_bit(a, log2);
            if let Some(w) = self.t.addr_bits.get_mut(b / 64) {
                *w |= 1 << (b % 64);
            }
        }
        Ok(self.t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::types::{proto, MacAddr, Prefix};
    use std::time::Duration;

    const W1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

    fn mac(b: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, b])
    }

    fn addr_key(port: u16) -> ServiceKey {
        ServiceKey::Address {
            addr: W1,
            proto: proto::TCP,
            ports: PortRange::single(port),
        }
    }

    fn base() -> Definitions {
        Definitions {
            devices: vec![
                DeviceDef::transparent("fw", [1, 2], mac(1), mac(2)),
                DeviceDef::loopback("srv", 3, mac(3)),
                DeviceDef::nat("nat", 3, Ipv4Addr::new(10, 0, 0, 5)),
            ],
            pools: vec![],
            services: vec![ServiceDef::new(
                "web",
                addr_key(80),
                &[0],
                vec![HopDef::device("fw"), HopDef::device("srv")],
            )],
        }
    }

    #[test]
    fn base_compiles() {
        let t = compile(&base()).unwrap();
        assert_eq!(t.service_count(), 1);
        assert_eq!(t.device_count(), 3);
        // Two implicit pools, named after their devices.
        assert_eq!(t.pool_count(), 2);
        assert_eq!(t.pool_name(crate::PoolIdx(0)), Some("fw"));
    }

    fn err(d: &Definitions) -> CompileError {
        compile(d).unwrap_err()
    }

    #[test]
    fn unknown_device_or_pool_in_chain() {
        let mut d = base();
        d.services[0].chain.push(HopDef::pool("nope").as_copy());
        let e = err(&d);
        assert!(
            matches!(&e, CompileError::UnknownTarget { kind: "pool", hop: 2, name, .. }
                if name == "nope")
        );
        assert_eq!(e.subject(), Subject::Service("web"));
        let mut d = base();
        d.services[0].chain[0] = HopDef::device("fw9");
        assert!(matches!(
            err(&d),
            CompileError::UnknownTarget { kind: "device", .. }
        ));
    }

    #[test]
    fn device_mode_requirements() {
        let mut d = base();
        d.devices[2].addr = None;
        let e = err(&d);
        assert_eq!(
            e,
            CompileError::NatWithoutAddress {
                device: "nat".into()
            }
        );
        assert_eq!(e.subject(), Subject::Device("nat"));
        let mut d = base();
        d.devices[0].interfaces = vec![1];
        assert!(matches!(
            err(&d),
            CompileError::TransparentInterfaces { count: 1, .. }
        ));
        let mut d = base();
        d.devices[0].mac = None;
        assert!(matches!(
            err(&d),
            CompileError::MissingMac {
                mode: "transparent",
                ..
            }
        ));
        let mut d = base();
        d.devices[1].mac = None;
        assert!(matches!(
            err(&d),
            CompileError::MissingMac {
                mode: "loopback",
                ..
            }
        ));
        let mut d = base();
        d.devices.push(DeviceDef {
            name: "gw".into(),
            mode: DeviceMode::Router,
            interfaces: vec![4],
            mac: None,
            out_mac: None,
            addr: None,
        });
        assert!(matches!(err(&d), CompileError::NoNextHop { .. }));
        let mut d = base();
        d.devices[1].interfaces.clear();
        assert!(matches!(err(&d), CompileError::NoInterface { .. }));
        let mut d = base();
        d.devices.push(DeviceDef::loopback("fw", 1, mac(9)));
        assert!(matches!(
            err(&d),
            CompileError::DuplicateName { kind: "device", .. }
        ));
    }

    #[test]
    fn duplicate_service_keys() {
        let mut d = base();
        let mut s2 = d.services[0].clone();
        s2.name = "web2".into();
        s2.ingress = vec![5, 0];
        d.services.push(s2.clone());
        assert_eq!(
            err(&d),
            CompileError::DuplicateKey {
                service: "web2".into(),
                other: "web".into(),
                iface: 0
            }
        );
        // Same key on a disjoint ingress with a different end server is fine...
        let mut d = base();
        d.devices.push(DeviceDef::loopback("srv2", 3, mac(4)));
        s2.ingress = vec![5];
        s2.chain = vec![HopDef::device("srv2")];
        d.services.push(s2.clone());
        compile(&d).unwrap();
        // ...but sharing the firewall makes its returning frames ambiguous.
        let mut d = base();
        s2.chain = vec![HopDef::device("fw"), HopDef::device("srv")];
        d.services.push(s2);
        assert!(
            matches!(err(&d), CompileError::AmbiguousReturn { from, .. } if from == "device `fw`")
        );
    }

    #[test]
    fn dynamic_ranges_of_one_address_may_not_overlap() {
        let mut d = base();
        d.services[0].dynamic_ranges = vec![PortRange::new(1025, 1125)];
        let mut s2 = ServiceDef::new("ftp", addr_key(21), &[0], vec![HopDef::device("nat")]);
        s2.dynamic_ranges = vec![PortRange::new(1126, 1300)];
        d.services.push(s2.clone());
        compile(&d).unwrap();
        d.services[1].dynamic_ranges = vec![PortRange::new(1100, 1300)];
        assert!(matches!(
            err(&d),
            CompileError::PortOverlap { addr, port: 1100, .. } if addr == W1
        ));
        // A range covering another service's port.
        let mut d = base();
        s2.dynamic_ranges = vec![PortRange::new(30, 100)];
        d.services.push(s2);
        assert!(matches!(
            err(&d),
            CompileError::PortOverlap { port: 80, .. }
        ));
    }

    #[test]
    fn chain_shape_rules() {
        let mut d = base();
        d.services[0].chain.reverse();
        assert!(matches!(
            err(&d),
            CompileError::TerminalNotLast {
                hop: 0,
                mode: "loopback",
                ..
            }
        ));
        let mut d = base();
        d.services[0].chain = vec![HopDef::device("srv").as_copy()];
        assert!(matches!(err(&d), CompileError::EmptyChain { .. }));
        let mut d = base();
        d.services[0].ingress.clear();
        assert!(matches!(err(&d), CompileError::NoIngress { .. }));
        let mut d = base();
        for i in 0..5 {
            d.devices
                .push(DeviceDef::loopback(&format!("ids{i}"), 4, mac(10 + i)));
            d.services[0]
                .chain
                .insert(1, HopDef::device(&format!("ids{i}")).as_copy());
        }
        assert!(matches!(
            err(&d),
            CompileError::TooManyCopies { count: 5, .. }
        ));
        let mut d = base();
        d.services[0].dscp = Some(64);
        assert!(matches!(
            err(&d),
            CompileError::InvalidDscp { dscp: 64, .. }
        ));
        let mut d = base();
        d.services[0].key = ServiceKey::Address {
            addr: W1,
            proto: 6,
            ports: PortRange::new(90, 80),
        };
        assert!(matches!(
            err(&d),
            CompileError::InvalidRange { lo: 90, hi: 80, .. }
        ));
        let mut d = base();
        d.services[0].key = ServiceKey::Address {
            addr: W1,
            proto: 6,
            ports: PortRange::new(80, 90),
        };
        d.services[0].translate_port = Some(8080);
        assert!(matches!(err(&d), CompileError::Unsupported { .. }));
        let mut d = base();
        d.services[0].key = ServiceKey::Subscriber {
            prefix: Prefix::new(Ipv4Addr::new(10, 1, 0, 0), 16).unwrap(),
            proto: None,
        };
        d.services[0].chain = vec![HopDef::device("nat")];
        assert!(matches!(err(&d), CompileError::Unsupported { .. }));
    }

    #[test]
    fn pool_rules() {
        let mut d = base();
        d.devices.push(DeviceDef::loopback("srv2", 3, mac(4)));
        let mut p = PoolDef::new("web", &["srv", "srv2"]);
        d.pools.push(p.clone());
        d.services[0].chain[1] = HopDef::pool("web");
        compile(&d).unwrap();

        d.pools[0].members.push("nat".into());
        assert!(matches!(
            err(&d),
            CompileError::MixedModes { mode: "nat", .. }
        ));
        d.pools[0] = p.clone();
        d.pools[0].members.push("ghost".into());
        assert!(matches!(err(&d), CompileError::UnknownMember { .. }));
        d.pools[0] = p.clone();
        d.pools[0].alternate = Some("srv".into());
        assert!(matches!(err(&d), CompileError::DuplicateMember { .. }));
        d.pools[0] = p.clone();
        d.pools[0].members.clear();
        assert!(matches!(err(&d), CompileError::EmptyPool { .. }));
        p.active = Some(ActiveCheck {
            port: 80,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
        });
        d.pools[0] = p.clone();
        let e = err(&d);
        assert!(matches!(&e, CompileError::ProbeWithoutAddress { .. }));
        assert_eq!(e.subject(), Subject::Pool("web"));
        d.devices[1].addr = Some(Ipv4Addr::new(10, 0, 0, 3));
        d.devices[3].addr = Some(Ipv4Addr::new(10, 0, 0, 4));
        compile(&d).unwrap();
        d.pools[0].active.as_mut().unwrap().rise = 0;
        assert!(matches!(err(&d), CompileError::InvalidHealthCheck { .. }));
        // Two checked pools sharing a device must agree.
        d.pools[0] = p.clone();
        let mut other = p.clone();
        other.name = "web-b".into();
        other.active.as_mut().unwrap().fall = 9;
        d.pools.push(other);
        assert!(matches!(err(&d), CompileError::ConflictingHealth { .. }));
    }

    #[test]
    fn nat_reverse_keys_must_be_unambiguous() {
        // Two service addresses NATed to one server on the same port cannot be told apart on
        // the way back; distinct translated ports fix it.
        let mut d = base();
        d.services[0].chain = vec![HopDef::device("nat")];
        let mut s2 = d.services[0].clone();
        s2.name = "web-b".into();
        s2.key = ServiceKey::Address {
            addr: Ipv4Addr::new(198, 51, 100, 2),
            proto: proto::TCP,
            ports: PortRange::single(80),
        };
        d.services.push(s2);
        assert!(matches!(
            err(&d),
            CompileError::PortOverlap { port: 80, .. }
        ));
        d.services[0].translate_port = Some(8080);
        d.services[1].translate_port = Some(8081);
        compile(&d).unwrap();
    }

    #[test]
    fn routed_chains_sharing_a_key_are_ambiguous_in_reverse() {
        let mut d = base();
        d.services[0].chain = vec![HopDef::device("fw")];
        let mut s2 = d.services[0].clone();
        s2.name = "web-b".into();
        s2.ingress = vec![7];
        d.devices
            .push(DeviceDef::transparent("fw2", [5, 6], mac(7), mac(8)));
        s2.chain = vec![HopDef::device("fw2")];
        d.services.push(s2);
        assert!(matches!(err(&d), CompileError::AmbiguousReverse { .. }));
    }
}
