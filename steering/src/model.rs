//! The definitions the router's config layer builds: devices, pools, services, ACL rules.
//!
//! These mirror the seed's provisioning-engine "service definition" (Figure 10): a service
//! address and port name an ordered sequence of devices, each with its "destination system
//! type" (transparent, loopback, alias, NAT, router; Figures 5–7). Everything refers to other
//! items by *name*, as the config does; [`crate::compile()`] resolves the names and reports
//! problems with the offending name so the conf layer can point at its file:line:col.

use crate::types::{IfId, MacAddr, PortRange, Prefix};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Everything `compile` needs: the whole steering part of one config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Definitions {
    /// Devices; a device's position here is its [`crate::DeviceIdx`].
    pub devices: Vec<DeviceDef>,
    /// Pools of like devices; a pool's position here is its [`crate::PoolIdx`].
    pub pools: Vec<PoolDef>,
    /// Services; a service's position here is its [`crate::ServiceIdx`].
    pub services: Vec<ServiceDef>,
}

/// How the router addresses a device and what the device does with the frame (the seed's
/// "destination system type", Figures 5B–5J and 7B).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceMode {
    /// Bump in the wire: reached on its first interface by MAC, returns the frame unchanged on
    /// its second (a firewall's fw0/fw1 in Figure 7). Only transparent devices may sit before
    /// the last hop of a chain.
    Transparent,
    /// Accepts the service address on a loopback interface: addressed by MAC, IP untouched,
    /// answers with the service address as source (Figures 5B–5D).
    Loopback,
    /// Holds the service address as an alias (non-ARP): handled exactly like loopback
    /// (Figures 5E–5G, "box 538 could read loopback or alias").
    Alias,
    /// Only knows its real address: the router rewrites the destination to it and restores the
    /// service address as source on the way back (Figures 5H–5J).
    Nat,
    /// A next hop toward a network ("ROUTER / DEFAULT ROUTE" rows of Figure 7B): packet
    /// unchanged, sent to the device's MAC or address.
    Router,
}

impl DeviceMode {
    /// Stable lower-case name (status output, errors).
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceMode::Transparent => "transparent",
            DeviceMode::Loopback => "loopback",
            DeviceMode::Alias => "alias",
            DeviceMode::Nat => "nat",
            DeviceMode::Router => "router",
        }
    }

    /// True for modes that end a chain (everything but transparent).
    pub fn is_terminal(self) -> bool {
        self != DeviceMode::Transparent
    }
}

/// One device the router steers frames to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceDef {
    /// Unique device name (errors and events name it).
    pub name: String,
    /// Mode (see [`DeviceMode`]).
    pub mode: DeviceMode,
    /// Interfaces it is reached on. Transparent: exactly two, `[a, b]`, where `a` faces the
    /// client side (forward frames leave on `a` and come back on `b`; the reverse walks `b` →
    /// `a`); `a == b` is a one-armed device (the VPN of Figure 7). Other modes: frames leave on
    /// the first; return frames are accepted on any of them.
    pub interfaces: Vec<IfId>,
    /// MAC on its first interface (required for transparent, loopback and alias).
    pub mac: Option<MacAddr>,
    /// Transparent only: the source MAC of frames it returns on its second interface (FW1ₘ of
    /// Figure 7B); defaults to `mac`. Ignored for other modes.
    pub out_mac: Option<MacAddr>,
    /// Real address: required for NAT; the next hop for router mode when no MAC is given; the
    /// target of active health probes.
    pub addr: Option<Ipv4Addr>,
}

impl DeviceDef {
    /// A transparent device on `[a, b]` with MAC `mac` on `a` and `out_mac` on `b`.
    pub fn transparent(name: &str, ifaces: [IfId; 2], mac: MacAddr, out_mac: MacAddr) -> Self {
        DeviceDef {
            name: name.to_string(),
            mode: DeviceMode::Transparent,
            interfaces: ifaces.to_vec(),
            mac: Some(mac),
            out_mac: Some(out_mac),
            addr: None,
        }
    }

    /// A loopback-mode server on `iface` with MAC `mac`.
    pub fn loopback(name: &str, iface: IfId, mac: MacAddr) -> Self {
        DeviceDef {
            name: name.to_string(),
            mode: DeviceMode::Loopback,
            interfaces: vec![iface],
            mac: Some(mac),
            out_mac: None,
            addr: None,
        }
    }

    /// A NAT-mode server on `iface` with real address `addr` (MAC resolved by ARP).
    pub fn nat(name: &str, iface: IfId, addr: Ipv4Addr) -> Self {
        DeviceDef {
            name: name.to_string(),
            mode: DeviceMode::Nat,
            interfaces: vec![iface],
            mac: None,
            out_mac: None,
            addr: Some(addr),
        }
    }

    /// A next-hop router on `iface` at `addr`.
    pub fn router(name: &str, iface: IfId, addr: Ipv4Addr) -> Self {
        DeviceDef {
            name: name.to_string(),
            mode: DeviceMode::Router,
            interfaces: vec![iface],
            mac: None,
            out_mac: None,
            addr: Some(addr),
        }
    }

    /// The same device with `mac` set.
    pub fn with_mac(mut self, mac: MacAddr) -> Self {
        self.mac = Some(mac);
        self
    }

    /// The same device with `addr` set.
    pub fn with_addr(mut self, addr: Ipv4Addr) -> Self {
        self.addr = Some(addr);
        self
    }
}

/// How a pool picks a member for a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// Rendezvous hash of the flow (client address and port, service address and port,
    /// protocol): flows spread evenly and keep their device.
    #[default]
    FlowHash,
    /// Rendezvous hash of the client address only: every connection of a client lands on one
    /// device (needed when a control connection negotiates dynamic ports, Figure 9).
    ClientHash,
}

/// What happens to the flows of a member that went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OnFailure {
    /// They move: to the pool's alternate if it is up, else to their next member by hash.
    #[default]
    Move,
    /// For `window` after the failure, the client's next TCP segment of such a flow is answered
    /// with a RST (a new SYN is placed on a live member); after the window they move.
    Reset {
        /// How long after the failure flows of the dead member are reset rather than moved.
        window: Duration,
    },
}

/// How a recovered member comes back into service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Restore {
    /// As soon as it passes `rise` probes (or, passive only, after one passive window).
    #[default]
    Auto,
    /// Only on the operator's command (`HealthMonitor::restore`), as the seed's packeting
    /// engine "incorporates the failed device back … only when directed" (Figure 15B).
    Manual,
}

/// Active health check: a TCP handshake to `port` every `interval` (the seed's "simulation
/// packet … to initiate a socket handshake only", Figure 15B).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActiveCheck {
    /// TCP port probed on the device's address.
    pub port: u16,
    /// Time between probes.
    pub interval: Duration,
    /// How long a probe may take before it counts as failed.
    pub timeout: Duration,
    /// Consecutive successes to come back up.
    pub rise: u32,
    /// Consecutive failures to go down.
    pub fall: u32,
}

/// Passive health check: repeated SYNs from one client with no return traffic (Figure 15A:
/// "several SYN requests in a row from client … the application server has not been
/// responding").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PassiveCheck {
    /// SYNs from one client without return traffic that make the device suspect.
    pub syn_threshold: u32,
    /// Time window in which those SYNs must fall.
    pub window: Duration,
}

/// A pool of like devices (Figure 15B/15C: "pool like devices … redirect packets to an
/// alternate device").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolDef {
    /// Unique pool name.
    pub name: String,
    /// Member device names; all must share one mode.
    pub members: Vec<String>,
    /// Backup device that takes the flows of failed members (`OnFailure::Move`).
    pub alternate: Option<String>,
    /// Member selection.
    pub policy: Policy,
    /// Treatment of a dead member's flows.
    pub on_failure: OnFailure,
    /// How recovered members return.
    pub restore: Restore,
    /// Active check, if any (members need an address).
    pub active: Option<ActiveCheck>,
    /// Passive check, if any.
    pub passive: Option<PassiveCheck>,
}

impl PoolDef {
    /// A pool of `members` with defaults: flow hash, move, auto restore, no checks.
    pub fn new(name: &str, members: &[&str]) -> Self {
        PoolDef {
            name: name.to_string(),
            members: members.iter().map(|m| m.to_string()).collect(),
            alternate: None,
            policy: Policy::default(),
            on_failure: OnFailure::default(),
            restore: Restore::default(),
            active: None,
            passive: None,
        }
    }
}

/// What a chain hop names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HopTarget {
    /// A pool by name.
    Pool(String),
    /// A single device by name.
    Device(String),
}

/// One hop of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopDef {
    /// The pool or device.
    pub target: HopTarget,
    /// A promiscuous device (IDS) that gets a copy in parallel with the next main hop instead
    /// of being a step of the path (the seed's "packet distributor", Figures 7 and 11).
    pub copy: bool,
}

impl HopDef {
    /// A main hop to a device.
    pub fn device(name: &str) -> Self {
        HopDef {
            target: HopTarget::Device(name.to_string()),
            copy: false,
        }
    }

    /// A main hop to a pool.
    pub fn pool(name: &str) -> Self {
        HopDef {
            target: HopTarget::Pool(name.to_string()),
            copy: false,
        }
    }

    /// The same hop as a copy (promiscuous) hop.
    pub fn as_copy(mut self) -> Self {
        self.copy = true;
        self
    }
}

/// What identifies a service's packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceKey {
    /// The seed's service IP address plus service port (or a port range) and protocol.
    Address {
        /// Service address (W1).
        addr: Ipv4Addr,
        /// IP protocol (6 TCP, 17 UDP; port-less protocols use port 0).
        proto: u8,
        /// Service port (P1) or range.
        ports: PortRange,
    },
    /// A subscriber service: every packet from clients in `prefix` (Figure 10's customer
    /// sequences) walks the chain, then is routed normally.
    Subscriber {
        /// Client source prefix.
        prefix: Prefix,
        /// Restrict to one protocol, or `None` for all.
        proto: Option<u8>,
    },
}

/// Permit or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AclAction {
    /// Let the packet into the chain.
    #[default]
    Permit,
    /// Drop it (counted as denied).
    Deny,
}

impl AclAction {
    /// Stable lower-case name (status output).
    pub fn as_str(self) -> &'static str {
        match self {
            AclAction::Permit => "permit",
            AclAction::Deny => "deny",
        }
    }
}

/// One ACL rule of a service; rules are tried in order, the first match decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AclRule {
    /// What a match does.
    pub action: AclAction,
    /// Client source prefix.
    pub src: Prefix,
    /// Protocol, or `None` for any.
    pub proto: Option<u8>,
    /// Client source ports, or `None` for any.
    pub src_ports: Option<PortRange>,
    /// Destination (service) ports, or `None` for any.
    pub dst_ports: Option<PortRange>,
}

impl AclRule {
    /// A rule matching every packet from `src`.
    pub fn new(action: AclAction, src: Prefix) -> Self {
        AclRule {
            action,
            src,
            proto: None,
            src_ports: None,
            dst_ports: None,
        }
    }
}

/// One service: its key, ingress interfaces, chain and per-service treatment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceDef {
    /// Unique service name.
    pub name: String,
    /// What packets belong to it.
    pub key: ServiceKey,
    /// Interfaces client packets arrive on (part of the key, as in the seed's tables).
    pub ingress: Vec<IfId>,
    /// Hops in order; copy hops attach to the main hop after them.
    pub chain: Vec<HopDef>,
    /// Port translation: the end server listens on this port (TP1) instead of the service
    /// port (P1) (Figure 8). Single-port address services only.
    pub translate_port: Option<u16>,
    /// Dynamic port ranges owned by the service port (Figure 9B): packets to a port in a range
    /// follow the same chain, untranslated. Address services only.
    pub dynamic_ranges: Vec<PortRange>,
    /// DSCP (0..=63) written into packets of the service in both directions.
    pub dscp: Option<u8>,
    /// ACL applied to client packets before the chain.
    pub acl: Vec<AclRule>,
    /// What happens to a client packet no rule matched.
    pub acl_default: AclAction,
}

impl ServiceDef {
    /// A service with no translation, ranges, DSCP or ACL.
    pub fn new(name: &str, key: ServiceKey, ingress: &[IfId], chain: Vec<HopDef>) -> Self {
        ServiceDef {
            name: name.to_string(),
            key,
            ingress: ingress.to_vec(),
            chain,
            translate_port: None,
            dynamic_ranges: Vec::new(),
            dscp: None,
            acl: Vec::new(),
            acl_default: AclAction::Permit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_fill_the_fields() {
        let m = MacAddr([2, 0, 0, 0, 0, 1]);
        let d = DeviceDef::transparent("fw", [1, 2], m, m);
        assert_eq!(d.interfaces, vec![1, 2]);
        assert_eq!(d.mode, DeviceMode::Transparent);
        let n = DeviceDef::nat("srv", 3, Ipv4Addr::new(192, 168, 0, 10)).with_mac(m);
        assert_eq!(n.mac, Some(m));
        let h = HopDef::pool("ids").as_copy();
        assert!(h.copy);
        let p = PoolDef::new("web", &["a", "b"]);
        assert_eq!(p.members.len(), 2);
        assert_eq!(p.on_failure, OnFailure::Move);
        assert!(DeviceMode::Nat.is_terminal() && !DeviceMode::Transparent.is_terminal());
        assert_eq!(DeviceMode::Alias.as_str(), "alias");
    }
}
