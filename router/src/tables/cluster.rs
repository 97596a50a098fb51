//! The data plane's view of the router cluster (issue 16, seed 003; design note §4–5): the
//! cluster MAC and addresses it receives and answers ARP for, which interfaces are shared
//! segments, the distribution-id function's parameters, and, per id, whether this node handles
//! it (`Owned`), drops it (`Foreign`) or holds its packets while it moves away (`Releasing`).
//!
//! Built once at start from `[cluster]` (and `[nat]`, whose pool, inside prefixes and port range
//! the id function needs) and held in `Tables`; the control plane's cluster driver changes the
//! per-id states, the hand-off MACs and the epoch with atomic stores, so an id moves without a
//! snapshot swap and the workers see it at their next packet (one relaxed load per packet).
//!
//! # The driver's API
//!
//! - [`ClusterPlane::set_hash_key`] once, before any id becomes `Owned` (the key is the
//!   cluster's, from its etcd `config` record; until it is set every frame to the cluster MAC
//!   is dropped as foreign, which is right for a node that has not joined yet).
//! - [`ClusterPlane::set_state`] for `Action::Plane { id, state }`.
//! - [`ClusterPlane::hand_off`] for `Action::Handed { id, to }` with `to` another node: the
//!   new owner's interface MACs (its member record's `macs`). It sets the id `Foreign` itself,
//!   *after* storing the MACs. The engine emits `Plane { id, Foreign }` right before `Handed`:
//!   skip that `set_state` (or call `hand_off` first), because a worker that sees the id
//!   `Foreign` with no hand-off MAC drops its held frames (the fence rule). With `to` this
//!   node (the id came back) nothing is needed: the preceding `Plane { id, Owned }` makes the
//!   workers run the held frames themselves.
//! - [`ClusterPlane::fence`] for `Action::Fence`: every id `Foreign`, held frames dropped.
//! - [`ClusterPlane::set_epoch`] when an epoch is applied (status only).

use super::{IfId, Iface};
use crate::wire::ethernet::MacAddr;
use ::cluster::{Id, IdConfig, PlaneState, Prefix};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Number of distribution ids.
const IDS: usize = ::cluster::id::IDS;
/// "Not a cluster interface" in [`ClusterPlane::slot`].
const NO_SLOT: u8 = u8::MAX;
/// Set in a hand-off word that holds a MAC (the low 48 bits).
const MAC_SET: u64 = 1 << 48;

const FOREIGN: u8 = 0;
const OWNED: u8 = 1;
const RELEASING: u8 = 2;

fn encode(s: PlaneState) -> u8 {
    match s {
        PlaneState::Foreign => FOREIGN,
        PlaneState::Owned => OWNED,
        PlaneState::Releasing => RELEASING,
    }
}

/// One shared segment: its interface and the addresses the cluster answers for there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterIface {
    /// The interface's id.
    pub id: IfId,
    /// Its name (member records name the new owner's MACs by interface name).
    pub name: String,
    /// The cluster addresses on it (the hosts' gateway, NAT pool addresses).
    pub addresses: Vec<Ipv4Addr>,
}

/// Why the plane could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[cluster]: {0}")]
pub struct PlaneError(String);

/// The cluster as the workers see it.
#[derive(Debug)]
pub struct ClusterPlane {
    mac: MacAddr,
    hold_limit: usize,
    ifaces: Vec<ClusterIface>,
    /// Per interface id: its index in `ifaces`, or [`NO_SLOT`].
    slot: Vec<u8>,
    /// Every cluster address (all interfaces), for ipv4-input and the cluster stage.
    addresses: Vec<Ipv4Addr>,
    /// Per interface id: a NAT outside interface (the id rule for inbound NAT).
    nat_outside: Vec<bool>,
    /// The id function's parameters without the key.
    id_base: IdConfig,
    /// The id function's parameters with the cluster's key, once the driver set it.
    id_cfg: OnceLock<IdConfig>,
    state: [AtomicU8; IDS],
    /// Per cluster interface (index as in `ifaces`), per id: `MAC_SET | mac` of the node the
    /// id was handed to, or 0.
    handoff: Vec<[AtomicU64; IDS]>,
    epoch: AtomicU64,
    fences: AtomicU64,
    /// Handover de-duplication (see [`ClusterPlane::is_duplicate`]): the time base of the
    /// windows, per id the end of its window (ms after `base`, 0: none), the latest end of
    /// any, and the fingerprints of frames handled in a window, direct-mapped.
    base: Instant,
    dedupe_until: [AtomicU64; IDS],
    dedupe_any_until: AtomicU64,
    recent: Box<[AtomicU64]>,
}

/// How long after gaining an id this node remembers the frames of it it handled, to drop the
/// old owner's hand-over copies of them: the old owner hands over when the took marker reaches
/// it, one sync hop after the gain.
pub const DEDUPE_WINDOW: Duration = Duration::from_millis(250);
/// Fingerprints remembered (direct-mapped; a frame whose slot was reused since is let
/// through, a duplicate at worst).
pub const DEDUPE_SLOTS: usize = 8192;

impl ClusterPlane {
    /// The plane for `conf` over `ifaces`, with the NAT's pool, inside prefixes and port range
    /// when `nat` is configured (else every packet takes the routed rules); every id `Foreign`.
    pub fn new(
        conf: &conf::ClusterConf,
        ifaces: &[Iface],
        nat: Option<&nat::config::Config>,
    ) -> Result<ClusterPlane, PlaneError> {
        let n = ifaces.iter().map(|i| usize::from(i.id) + 1).max();
        let mut slot = vec![NO_SLOT; n.unwrap_or(0)];
        let mut cifaces = Vec::new();
        for c in &conf.interfaces {
            let Some(i) = ifaces.iter().find(|i| i.name == c.name) else {
                return Err(PlaneError(format!(
                    "interface `{}` is not one of the router's interfaces",
                    c.name
                )));
            };
            let k = u8::try_from(cifaces.len())
                .ok()
                .filter(|k| *k != NO_SLOT)
                .ok_or_else(|| PlaneError("too many cluster interfaces".into()))?;
            slot[usize::from(i.id)] = k;
            cifaces.push(ClusterIface {
                id: i.id,
                name: c.name.clone(),
                addresses: c.addresses.clone(),
            });
        }
        let mut nat_outside = vec![false; slot.len()];
        let id_base = match nat {
            Some(cfg) => {
                for r in &cfg.rules {
                    if let Some(o) = nat_outside.get_mut(r.outside as usize) {
                        *o = true;
                    }
                }
                let mut pool: Vec<Ipv4Addr> = cfg
                    .rules
                    .iter()
                    .flat_map(|r| r.pool.iter().copied())
                    .collect();
                pool.sort_unstable();
                pool.dedup();
                IdConfig {
                    key: 0,
                    port_min: cfg.port_min,
                    port_max: cfg.port_max,
                    pool,
                    inside: cfg
                        .rules
                        .iter()
                        .flat_map(|r| &r.inside)
                        .map(|p| Prefix {
                            addr: p.addr,
                            len: p.len,
                        })
                        .collect(),
                }
            }
            None => IdConfig::routed(0),
        };
        let addresses = cifaces
            .iter()
            .flat_map(|c| c.addresses.iter().copied())
            .collect();
        let handoff = cifaces
            .iter()
            .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
            .collect();
        Ok(ClusterPlane {
            mac: MacAddr(conf.cluster_mac),
            hold_limit: usize::try_from(conf.hold_limit).unwrap_or(usize::MAX),
            ifaces: cifaces,
            slot,
            addresses,
            nat_outside,
            id_base,
            id_cfg: OnceLock::new(),
            state: std::array::from_fn(|_| AtomicU8::new(FOREIGN)),
            handoff,
            epoch: AtomicU64::new(0),
            fences: AtomicU64::new(0),
            base: Instant::now(),
            dedupe_until: std::array::from_fn(|_| AtomicU64::new(0)),
            dedupe_any_until: AtomicU64::new(0),
            recent: (0..DEDUPE_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    // ----- the driver's setters -----

    /// Sets the id hash's key (the cluster's, from etcd's `config` record). Once: a second
    /// call with another key is refused with the key in force (the hash must never change
    /// under a running node).
    pub fn set_hash_key(&self, key: u64) -> Result<(), u64> {
        let cfg = self.id_cfg.get_or_init(|| IdConfig {
            key,
            ..self.id_base.clone()
        });
        if cfg.key == key {
            Ok(())
        } else {
            Err(cfg.key)
        }
    }

    /// Sets `id`'s state (`Action::Plane`). `Owned` and `Releasing` forget an earlier
    /// hand-off; `Foreign` keeps it, so held frames of the id go to its hand-off MAC if
    /// [`ClusterPlane::hand_off`] gave one and are dropped otherwise (module docs: call
    /// `hand_off` instead for the `Plane { Foreign }` that precedes `Handed`).
    pub fn set_state(&self, id: Id, state: PlaneState) {
        let i = usize::from(id);
        if state != PlaneState::Foreign {
            for h in &self.handoff {
                h[i].store(0, Ordering::Release);
            }
        }
        let was = self.state[i].swap(encode(state), Ordering::AcqRel);
        if state == PlaneState::Owned && was == FOREIGN {
            // Gained from another node: its hand-over copies of frames this node also handles
            // from now on are dropped for a while.
            let until = self.ms(Instant::now() + DEDUPE_WINDOW);
            self.dedupe_until[i].store(until, Ordering::Release);
            self.dedupe_any_until.fetch_max(until, Ordering::AcqRel);
        }
    }

    /// `id` was handed to another node (`Action::Handed`): its frames held here go to that
    /// node's MAC on the interface they arrived on (`macs`: its member record's interface
    /// MACs by name; an interface it has no MAC for drops them), and the id becomes `Foreign`.
    pub fn hand_off(&self, id: Id, macs: &[(String, MacAddr)]) {
        let i = usize::from(id);
        for (c, h) in self.ifaces.iter().zip(&self.handoff) {
            let word = macs
                .iter()
                .find(|(n, _)| *n == c.name)
                .map_or(0, |(_, m)| MAC_SET | mac_word(*m));
            h[i].store(word, Ordering::Release);
        }
        self.state[i].store(FOREIGN, Ordering::Release);
    }

    /// Drops every id at once (`Action::Fence`): all `Foreign`, no hand-offs, so the workers
    /// drop what they hold.
    pub fn fence(&self) {
        for h in &self.handoff {
            for w in h.iter() {
                w.store(0, Ordering::Release);
            }
        }
        for s in &self.state {
            s.store(FOREIGN, Ordering::Release);
        }
        self.fences.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the epoch in force (status).
    pub fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Relaxed);
    }

    // ----- what the workers read -----

    /// `id`'s state.
    #[inline]
    pub fn state(&self, id: Id) -> PlaneState {
        match self.state[usize::from(id)].load(Ordering::Acquire) {
            OWNED => PlaneState::Owned,
            RELEASING => PlaneState::Releasing,
            _ => PlaneState::Foreign,
        }
    }

    /// Milliseconds of `t` after the plane's time base (at least 1: 0 means "no window").
    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_millis() as u64 + 1
    }

    /// True while some id is in its de-duplication window (one relaxed load per packet when
    /// none is).
    #[inline]
    pub fn dedupe_active(&self, now: Instant) -> bool {
        let any = self.dedupe_any_until.load(Ordering::Relaxed);
        if any == 0 {
            return false;
        }
        if self.ms(now) < any {
            return true;
        }
        // Every window is over: back to the one-load check (a window opened meanwhile moved
        // the value on, and stays).
        let _ =
            self.dedupe_any_until
                .compare_exchange(any, 0, Ordering::Relaxed, Ordering::Relaxed);
        false
    }

    fn in_window(&self, id: Id, now: Instant) -> bool {
        self.ms(now) < self.dedupe_until[usize::from(id)].load(Ordering::Acquire)
    }

    /// A frame of `id` this node handled from the cluster MAC: remembered while the id is in
    /// its window.
    pub fn note_handled(&self, id: Id, fingerprint: u64, now: Instant) {
        if self.in_window(id, now) {
            let slot = (fingerprint as usize) % self.recent.len();
            self.recent[slot].store(fingerprint, Ordering::Relaxed);
        }
    }

    /// True when a frame of `id` sent to this node's own MAC is the old owner's hand-over copy
    /// of a frame this node already handled: every node receives every frame to the cluster
    /// MAC, so the frames the old owner held after this node took the id over reached both.
    pub fn is_duplicate(&self, id: Id, fingerprint: u64, now: Instant) -> bool {
        self.in_window(id, now)
            && self.recent[(fingerprint as usize) % self.recent.len()].load(Ordering::Relaxed)
                == fingerprint
    }

    /// The MAC `id`'s held frames that arrived on `iface` go to, if it was handed over.
    pub fn handoff_mac(&self, iface: IfId, id: Id) -> Option<MacAddr> {
        let k = *self.slot.get(usize::from(iface))?;
        let w = self.handoff.get(usize::from(k))?[usize::from(id)].load(Ordering::Acquire);
        (w & MAC_SET != 0).then(|| {
            let b = w.to_be_bytes();
            MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
        })
    }

    /// The shared MAC every node receives on the cluster interfaces.
    #[inline]
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// Packets each worker holds for moving ids at most (`hold-limit`).
    pub fn hold_limit(&self) -> usize {
        self.hold_limit
    }

    /// True when `iface` is a shared segment.
    #[inline]
    pub fn is_cluster_iface(&self, iface: IfId) -> bool {
        self.slot
            .get(usize::from(iface))
            .is_some_and(|k| *k != NO_SLOT)
    }

    /// True when frames to `dst` arriving on `iface` are the cluster's (the receive filter).
    #[inline]
    pub fn takes_mac(&self, iface: IfId, dst: MacAddr) -> bool {
        dst == self.mac && self.is_cluster_iface(iface)
    }

    /// True when `addr` is a cluster address on `iface` (answered in ARP with the cluster MAC).
    pub fn is_address_on(&self, iface: IfId, addr: Ipv4Addr) -> bool {
        self.slot
            .get(usize::from(iface))
            .and_then(|k| self.ifaces.get(usize::from(*k)))
            .is_some_and(|c| c.addresses.contains(&addr))
    }

    /// True when `addr` is a cluster address on any interface (local to the id's owner).
    #[inline]
    pub fn is_address(&self, addr: Ipv4Addr) -> bool {
        self.addresses.contains(&addr)
    }

    /// True when `iface` is a NAT outside interface (the id rule for inbound NAT).
    #[inline]
    pub fn is_nat_outside(&self, iface: IfId) -> bool {
        self.nat_outside
            .get(usize::from(iface))
            .copied()
            .unwrap_or(false)
    }

    /// The id function's parameters, once the key is set.
    #[inline]
    pub fn id_config(&self) -> Option<&IdConfig> {
        self.id_cfg.get()
    }

    /// The shared segments.
    pub fn interfaces(&self) -> &[ClusterIface] {
        &self.ifaces
    }

    /// What `swrouter status` shows of the plane, with the workers' counters summed.
    pub fn status<'a>(
        &self,
        workers: impl IntoIterator<Item = &'a crate::pipeline::counters::ClusterCounters>,
    ) -> ClusterStatus {
        let mut s = ClusterStatus {
            cluster_mac: self.mac.to_string(),
            epoch: self.epoch.load(Ordering::Relaxed),
            hash_key_set: self.id_cfg.get().is_some(),
            fences: self.fences.load(Ordering::Relaxed),
            interfaces: self
                .ifaces
                .iter()
                .map(|c| ClusterIfaceStatus {
                    name: c.name.clone(),
                    addresses: c.addresses.iter().map(|a| a.to_string()).collect(),
                })
                .collect(),
            ..Default::default()
        };
        for st in &self.state {
            match st.load(Ordering::Relaxed) {
                OWNED => s.ids_owned += 1,
                RELEASING => s.ids_releasing += 1,
                _ => s.ids_foreign += 1,
            }
        }
        for w in workers {
            s.frames.owned += w.owned.get();
            s.frames.foreign += w.foreign.get();
            s.frames.held += w.held.get();
            s.frames.released += w.released.get();
            s.frames.handed += w.handed.get();
            s.frames.hold_full += w.hold_full.get();
            s.frames.hold_dropped += w.hold_dropped.get();
            s.frames.not_distributed += w.not_distributed.get();
            s.frames.duplicates += w.duplicates.get();
        }
        s
    }
}

fn mac_word(m: MacAddr) -> u64 {
    let mut b = [0u8; 8];
    b[2..].copy_from_slice(&m.0);
    u64::from_be_bytes(b)
}

/// The cluster section of `swrouter status`: the data plane's side.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The shared MAC.
    pub cluster_mac: String,
    /// The epoch in force (0 before the first).
    pub epoch: u64,
    /// The cluster's hash key is known (the node joined).
    pub hash_key_set: bool,
    /// Ids this node handles.
    pub ids_owned: u32,
    /// Ids moving away (their packets held).
    pub ids_releasing: u32,
    /// Ids other nodes handle.
    pub ids_foreign: u32,
    /// Times every id was dropped at once.
    pub fences: u64,
    /// The shared segments and their cluster addresses.
    pub interfaces: Vec<ClusterIfaceStatus>,
    /// Frames to the cluster MAC, by fate, summed over workers.
    pub frames: ClusterFrames,
}

/// One shared segment in status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIfaceStatus {
    /// Interface name.
    pub name: String,
    /// Its cluster addresses.
    pub addresses: Vec<String>,
}

/// Frames to the cluster MAC by fate (the cluster stage's counters).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterFrames {
    /// Of an id this node owns: handled.
    pub owned: u64,
    /// Of an id another node owns: dropped (`cluster-foreign`).
    pub foreign: u64,
    /// Of a moving id: held.
    pub held: u64,
    /// Held, then run here (the id stayed or came back).
    pub released: u64,
    /// Held, then forwarded to the id's new owner.
    pub handed: u64,
    /// Of a moving id with the hold queue full: dropped (`cluster-hold-full`).
    pub hold_full: u64,
    /// Held, then dropped: the id went foreign without a hand-off (fence,
    /// `cluster-hold-dropped`).
    pub hold_dropped: u64,
    /// With no id (unparseable): handled here as without a cluster.
    pub not_distributed: u64,
    /// Handed over by a just-gained id's old owner but already handled here from the cluster
    /// MAC: dropped (`cluster-duplicate`).
    #[serde(default)]
    pub duplicates: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn iface(id: IfId, name: &str, last: u8) -> Iface {
        Iface {
            id,
            name: name.into(),
            ifindex: u32::from(id) + 1,
            mac: MacAddr([2, 0, 0, 0, last, 1]),
            addr: Ipv4Addr::new(10, 0, last, 1),
            prefix_len: 24,
            mtu: 1500,
            backend: conf::IoBackend::Pnet,
            redirect_in: Vec::new(),
            redirect_out: Vec::new(),
            exclude_in: false,
            wccp_caches: false,
        }
    }

    fn conf() -> conf::ClusterConf {
        let text = r#"
[router]
workers = 1
[[interface]]
name = "eth0"
address = "10.0.1.1/24"
[[interface]]
name = "eth1"
address = "10.0.2.1/24"
[[interface]]
name = "eth2"
address = "10.0.3.1/24"
[cluster]
name = "edge"
node-id = 1
etcd = ["http://10.8.0.100:2379"]
sync-local = "10.8.0.1:7788"
key-file = "/etc/swrouter/cluster.key"
cluster-mac = "03:00:5e:c1:00:01"
hold-limit = 7
[[cluster.interface]]
name = "eth0"
addresses = ["10.0.1.254"]
[[cluster.interface]]
name = "eth2"
addresses = ["10.0.3.254"]
"#;
        conf::parse_str("t.conf", text).unwrap().cluster.unwrap()
    }

    fn plane() -> ClusterPlane {
        let ifaces = vec![
            iface(0, "eth0", 1),
            iface(1, "eth1", 2),
            iface(2, "eth2", 3),
        ];
        ClusterPlane::new(&conf(), &ifaces, None).unwrap()
    }

    #[test]
    fn built_from_conf_all_foreign_and_filters_by_interface() {
        let p = plane();
        let cmac = MacAddr([3, 0, 0x5e, 0xc1, 0, 1]);
        assert_eq!(p.mac(), cmac);
        assert_eq!(p.hold_limit(), 7);
        assert!((0..=255u8).all(|i| p.state(i) == PlaneState::Foreign));
        assert!(p.takes_mac(0, cmac) && p.takes_mac(2, cmac));
        assert!(!p.takes_mac(1, cmac), "eth1 is no shared segment");
        assert!(!p.takes_mac(0, MacAddr([3, 0, 0x5e, 0xc1, 0, 2])));
        assert!(!p.takes_mac(9, cmac), "unknown interface id");
        assert!(p.is_address_on(0, Ipv4Addr::new(10, 0, 1, 254)));
        assert!(
            !p.is_address_on(2, Ipv4Addr::new(10, 0, 1, 254)),
            "other link"
        );
        assert!(p.is_address(Ipv4Addr::new(10, 0, 3, 254)));
        assert!(!p.is_address(Ipv4Addr::new(10, 0, 1, 1)));
        assert!(p.id_config().is_none(), "no key until the driver sets it");
        assert_eq!(p.id_config().map(|c| c.pool.len()), None);
    }

    #[test]
    fn the_key_is_set_once() {
        let p = plane();
        assert_eq!(p.set_hash_key(42), Ok(()));
        assert_eq!(p.set_hash_key(42), Ok(()));
        assert_eq!(p.set_hash_key(43), Err(42));
        let c = p.id_config().unwrap();
        assert_eq!((c.key, c.port_min, c.pool.len()), (42, 1024, 0));
    }

    #[test]
    fn states_hand_offs_per_interface_and_fence() {
        let p = plane();
        let b0 = MacAddr([2, 0, 0, 0xb, 0, 1]);
        let b2 = MacAddr([2, 0, 0, 0xb, 0, 3]);
        p.set_state(5, PlaneState::Owned);
        p.set_state(6, PlaneState::Releasing);
        assert_eq!(p.state(5), PlaneState::Owned);
        assert_eq!(p.state(6), PlaneState::Releasing);
        assert_eq!(p.handoff_mac(0, 6), None);
        p.hand_off(6, &[("eth0".into(), b0), ("eth2".into(), b2)]);
        assert_eq!(p.state(6), PlaneState::Foreign);
        assert_eq!(p.handoff_mac(0, 6), Some(b0));
        assert_eq!(p.handoff_mac(2, 6), Some(b2));
        assert_eq!(p.handoff_mac(1, 6), None, "not a cluster interface");
        assert_eq!(p.handoff_mac(0, 5), None, "another id");
        // A set_state(Foreign) keeps the hand-off; the id coming back forgets it.
        p.set_state(6, PlaneState::Foreign);
        assert_eq!(p.handoff_mac(0, 6), Some(b0));
        p.set_state(6, PlaneState::Releasing);
        assert_eq!(p.handoff_mac(0, 6), None);
        // A hand-off to a node without a MAC on eth2: frames from there have nowhere to go.
        p.hand_off(7, &[("eth0".into(), b0)]);
        assert_eq!(p.handoff_mac(2, 7), None);
        p.set_epoch(9);
        p.fence();
        assert!((0..=255u8).all(|i| p.state(i) == PlaneState::Foreign));
        assert_eq!(p.handoff_mac(0, 6), None);
        assert_eq!(p.handoff_mac(0, 7), None);
        let s = p.status(std::iter::empty());
        assert_eq!(
            (s.epoch, s.fences, s.ids_foreign, s.ids_owned),
            (9, 1, 256, 0)
        );
        assert_eq!(s.interfaces.len(), 2);
    }

    #[test]
    fn nat_gives_the_id_function_its_pool_inside_and_ports() {
        let ifaces = vec![
            iface(0, "eth0", 1),
            iface(1, "eth1", 2),
            iface(2, "eth2", 3),
        ];
        let nat = nat::config::Config {
            rules: vec![nat::config::Rule {
                inside: vec![nat::config::Prefix::new(Ipv4Addr::new(10, 0, 1, 0), 24)],
                outside: 2,
                pool: vec![Ipv4Addr::new(10, 0, 3, 254)],
            }],
            port_min: 4096,
            ..nat::config::Config::default()
        };
        let p = ClusterPlane::new(&conf(), &ifaces, Some(&nat)).unwrap();
        assert!(p.is_nat_outside(2) && !p.is_nat_outside(0));
        p.set_hash_key(1).unwrap();
        let c = p.id_config().unwrap();
        assert_eq!(c.port_min, 4096);
        assert_eq!(c.pool, vec![Ipv4Addr::new(10, 0, 3, 254)]);
        assert_eq!(c.inside.len(), 1);
    }
}
