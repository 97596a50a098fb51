//! Shared tables: interfaces, routes and neighbours.
//!
//! Workers read them as snapshots (`arc-swap`) once per burst and never wait on a lock on the
//! forwarding path; the control plane (reload) and ARP learning publish new snapshots.

pub mod affinity;
pub mod cluster;
pub mod local;
pub mod neighbours;
pub mod routes;
pub mod steer;
pub mod vrrp;
pub mod wccp;

pub use self::wccp::WccpPlane;

use crate::wire::ethernet::MacAddr;
use routes::RouteTable;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Index of an interface in [`Tables::ifaces`]; also the port index in every worker.
pub type IfId = u16;

/// One interface swrouter owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    /// Our index.
    pub id: IfId,
    /// Linux name.
    pub name: String,
    /// Kernel interface index.
    pub ifindex: u32,
    /// MAC we use as source and answer ARP with.
    pub mac: MacAddr,
    /// Our address on it.
    pub addr: Ipv4Addr,
    /// Connected prefix length.
    pub prefix_len: u8,
    /// MTU (largest IPv4 packet sent without fragmentation).
    pub mtu: u16,
    /// How frames move in and out of it.
    pub backend: conf::IoBackend,
    /// WCCP service groups whose traffic is redirected as it arrives here (redirect in).
    pub redirect_in: Vec<u8>,
    /// WCCP service groups whose traffic leaving through here is redirected (redirect out).
    pub redirect_out: Vec<u8>,
    /// Traffic arriving here is never redirected (exclude in).
    pub exclude_in: bool,
    /// WCCP caches may join through here: WCCP datagrams arriving elsewhere are dropped.
    pub wccp_caches: bool,
}

impl Iface {
    /// Network mask as a u32.
    pub fn mask(&self) -> u32 {
        prefix_mask(self.prefix_len)
    }

    /// True when `a` lies in the connected prefix.
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & self.mask() == u32::from(self.addr) & self.mask()
    }

    /// Directed broadcast address of the connected prefix (none for /31 and /32).
    pub fn broadcast(&self) -> Option<Ipv4Addr> {
        (self.prefix_len < 31).then(|| Ipv4Addr::from(u32::from(self.addr) | !self.mask()))
    }
}

/// The mask of a prefix length (0..=32).
pub fn prefix_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len.min(32) as u32)
    }
}

/// Everything the forwarding path reads, swapped as one snapshot on reload.
#[derive(Debug, Clone)]
pub struct Tables {
    /// Interfaces, indexed by [`IfId`].
    pub ifaces: Vec<Iface>,
    /// The routing table (connected + static).
    pub routes: RouteTable,
    /// What the router itself listens to: the local-delivery stage's handlers.
    pub local: local::LocalPorts,
    /// The WCCP assignments in force.
    pub wccp: Arc<WccpPlane>,
    /// The service-chain steering tables, health and counters in force.
    pub steering: Arc<steer::SteeringPlane>,
    /// NAT: outside interfaces, pool addresses and the runtime (none when NAT is off).
    pub nat: Option<Arc<crate::natd::NatPlane>>,
    /// VRRP: the virtual routers and their roles (none when `[ha]` is absent).
    pub vrrp: Option<Arc<vrrp::VrrpPlane>>,
    /// The router cluster: shared MAC and addresses, per-id ownership (none without
    /// `[cluster]`).
    pub cluster: Option<Arc<cluster::ClusterPlane>>,
}

/// What an address is to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrClass {
    /// One of our interface addresses.
    Local,
    /// The limited broadcast or a connected prefix's directed broadcast.
    Broadcast,
    /// Anything else.
    Other,
}

impl Tables {
    /// Tables with no control-plane ports bound.
    pub fn new(ifaces: Vec<Iface>, routes: RouteTable) -> Tables {
        Tables {
            ifaces,
            routes,
            local: Default::default(),
            wccp: Default::default(),
            steering: Default::default(),
            nat: None,
            vrrp: None,
            cluster: None,
        }
    }

    /// Classifies `a`: one of our addresses, a broadcast, or anything else.
    #[inline]
    pub fn classify(&self, a: Ipv4Addr) -> AddrClass {
        self.classify_pair(a, a).0
    }

    /// Classifies a datagram's source and destination in one pass over our addresses.
    #[inline]
    pub fn classify_pair(&self, src: Ipv4Addr, dst: Ipv4Addr) -> (AddrClass, AddrClass) {
        let one = |a: u32| {
            if !self.routes.may_be_own(a) {
                return AddrClass::Other;
            }
            if a == u32::MAX {
                return AddrClass::Broadcast;
            }
            for &(addr, bcast) in self.routes.own_addresses() {
                if a == addr {
                    return AddrClass::Local;
                }
                if a == bcast {
                    return AddrClass::Broadcast;
                }
            }
            AddrClass::Other
        };
        (one(u32::from(src)), one(u32::from(dst)))
    }
}
