//! The data plane's view of the VRRP virtual routers (issue 15): which interfaces speak VRRP,
//! and, per virtual router, whether this router is master and so owns the virtual MAC and
//! addresses.
//!
//! Built once at start from `[ha]`; the control plane's driver (`control/vrrp.rs`) flips each
//! virtual router's role with atomic stores as the state machine moves, so a transition costs
//! no snapshot swap and takes effect in the workers' next packet. Both I/O backends receive
//! promiscuously, so the virtual MAC's receive filter is this table: the ethernet stage keeps
//! frames addressed to a master's virtual MAC as it keeps frames to the interface's own.

use super::IfId;
use crate::wire::ethernet::MacAddr;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU8, Ordering};

/// Role bits of a virtual router.
const MASTER: u8 = 1;
/// Master and Accept_Mode: the virtual addresses are the router's own.
const ACCEPTS: u8 = 2;
/// Just handed mastership over (planned switchover): frames still sent to the virtual MAC are
/// routed until the switches have learnt the new master's port (make before break).
const LINGER: u8 = 4;

/// One virtual router as the workers see it.
#[derive(Debug)]
pub struct Group {
    /// The interface it runs on.
    pub iface: IfId,
    /// Its VRID.
    pub vrid: u8,
    /// 00:00:5e:00:01:VRID.
    pub mac: MacAddr,
    /// Its virtual addresses.
    pub vips: Vec<Ipv4Addr>,
    role: AtomicU8,
}

/// What a virtual address is to this router now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VipRole {
    /// Master with Accept_Mode: deliver locally (ping the virtual address).
    Accepted,
    /// Master without Accept_Mode: RFC 5798 §6.4.3 says drop.
    NotAccepted,
}

/// Every virtual router of the configuration.
#[derive(Debug, Default)]
pub struct VrrpPlane {
    groups: Vec<Group>,
    /// Per interface id: at least one virtual router runs there.
    speaks: Vec<bool>,
}

impl VrrpPlane {
    /// The plane for `(interface, vrid, virtual addresses)`, every one in backup.
    pub fn new(groups: impl IntoIterator<Item = (IfId, u8, Vec<Ipv4Addr>)>) -> VrrpPlane {
        let groups: Vec<Group> = groups
            .into_iter()
            .map(|(iface, vrid, vips)| Group {
                iface,
                vrid,
                mac: ::vrrp::wire::virtual_mac(vrid),
                vips,
                role: AtomicU8::new(0),
            })
            .collect();
        let n = groups.iter().map(|g| usize::from(g.iface) + 1).max();
        let mut speaks = vec![false; n.unwrap_or(0)];
        for g in &groups {
            speaks[usize::from(g.iface)] = true;
        }
        VrrpPlane { groups, speaks }
    }

    /// The virtual routers, in configuration order.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// Sets virtual router `index`'s role: master (owns the virtual MAC and answers ARP), and
    /// whether it accepts traffic to the virtual addresses. Becoming master ends a linger;
    /// becoming backup keeps one, so a switchover can start its linger before it gives up
    /// mastership and no frame to the virtual MAC finds the door shut in between.
    pub fn set_role(&self, index: usize, master: bool, accepts: bool) {
        if let Some(g) = self.groups.get(index) {
            let bits = if master { MASTER } else { 0 } | if accepts { ACCEPTS } else { 0 };
            if master {
                g.role.store(bits, Ordering::Release);
            } else {
                // The closure never fails: `fetch_update` only retries a raced store.
                let _ = g
                    .role
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |old| {
                        Some(bits | (old & LINGER))
                    });
            }
        }
    }

    /// After a planned switchover: keep routing frames to the virtual MAC (`on`) without
    /// owning the addresses (no ARP answers, no local delivery), or stop.
    pub fn set_linger(&self, index: usize, on: bool) {
        if let Some(g) = self.groups.get(index) {
            if on {
                g.role.fetch_or(LINGER, Ordering::AcqRel);
            } else {
                g.role.fetch_and(!LINGER, Ordering::AcqRel);
            }
        }
    }

    /// True when a virtual router runs on `iface` (its advertisements are taken in there).
    #[inline]
    pub fn speaks_on(&self, iface: IfId) -> bool {
        self.speaks
            .get(usize::from(iface))
            .copied()
            .unwrap_or(false)
    }

    fn masters(&self) -> impl Iterator<Item = (&Group, u8)> {
        self.groups.iter().filter_map(|g| {
            let r = g.role.load(Ordering::Acquire);
            (r & MASTER != 0).then_some((g, r))
        })
    }

    /// True when `mac` is the virtual MAC of a virtual router that is master on `iface`.
    /// Also while lingering after a planned switchover.
    pub fn takes_mac(&self, iface: IfId, mac: MacAddr) -> bool {
        self.groups.iter().any(|g| {
            g.iface == iface
                && g.mac == mac
                && g.role.load(Ordering::Acquire) & (MASTER | LINGER) != 0
        })
    }

    /// The virtual MAC to answer ARP for `addr` on `iface` with: a master's virtual address.
    pub fn arp_mac(&self, iface: IfId, addr: Ipv4Addr) -> Option<MacAddr> {
        self.masters()
            .find(|(g, _)| g.iface == iface && g.vips.contains(&addr))
            .map(|(g, _)| g.mac)
    }

    /// What `addr` is to a datagram addressed to it: `None` unless this router is master for
    /// it (a backup forwards it like any address, towards the master).
    pub fn vip_role(&self, addr: Ipv4Addr) -> Option<VipRole> {
        self.masters()
            .find(|(g, _)| g.vips.contains(&addr))
            .map(|(_, r)| {
                if r & ACCEPTS != 0 {
                    VipRole::Accepted
                } else {
                    VipRole::NotAccepted
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lingering_backup_routes_the_virtual_mac_but_owns_nothing() {
        let vip = Ipv4Addr::new(10, 0, 1, 254);
        let p = VrrpPlane::new([(1, 51, vec![vip])]);
        let mac = ::vrrp::wire::virtual_mac(51);
        p.set_role(0, true, true);
        p.set_role(0, false, false);
        p.set_linger(0, true);
        assert!(p.takes_mac(1, mac));
        assert_eq!(p.arp_mac(1, vip), None);
        assert_eq!(p.vip_role(vip), None);
        p.set_linger(0, false);
        assert!(!p.takes_mac(1, mac));
        // Becoming master again ends a linger.
        p.set_linger(0, true);
        p.set_role(0, true, false);
        p.set_role(0, false, false);
        assert!(!p.takes_mac(1, mac));
    }

    #[test]
    fn a_linger_started_before_giving_up_mastership_leaves_no_gap() {
        // `swrouter ha switchover` lingers first, then becomes backup: the virtual MAC must be
        // taken at every instant (a frame in between was lost on a loaded machine).
        let vip = Ipv4Addr::new(10, 0, 1, 254);
        let p = VrrpPlane::new([(1, 51, vec![vip])]);
        let mac = ::vrrp::wire::virtual_mac(51);
        p.set_role(0, true, true);
        p.set_linger(0, true);
        assert!(p.takes_mac(1, mac));
        p.set_role(0, false, false);
        assert!(p.takes_mac(1, mac), "becoming backup ended the linger");
        assert_eq!(p.arp_mac(1, vip), None);
        assert_eq!(p.vip_role(vip), None);
    }

    #[test]
    fn only_a_master_owns_the_virtual_mac_and_addresses() {
        let vip = Ipv4Addr::new(10, 0, 1, 254);
        let p = VrrpPlane::new([
            (1, 51, vec![vip]),
            (1, 52, vec![Ipv4Addr::new(10, 0, 1, 253)]),
        ]);
        let mac = ::vrrp::wire::virtual_mac(51);
        assert!(p.speaks_on(1) && !p.speaks_on(0) && !p.speaks_on(7));
        assert!(!p.takes_mac(1, mac));
        assert_eq!(p.arp_mac(1, vip), None);
        assert_eq!(p.vip_role(vip), None);
        p.set_role(0, true, false);
        assert!(p.takes_mac(1, mac) && !p.takes_mac(0, mac));
        assert!(!p.takes_mac(1, ::vrrp::wire::virtual_mac(52)));
        assert_eq!(p.arp_mac(1, vip), Some(mac));
        assert_eq!(p.arp_mac(0, vip), None, "another link");
        assert_eq!(p.vip_role(vip), Some(VipRole::NotAccepted));
        p.set_role(0, true, true);
        assert_eq!(p.vip_role(vip), Some(VipRole::Accepted));
        p.set_role(0, false, false);
        assert!(!p.takes_mac(1, mac));
        assert_eq!(p.vip_role(vip), None);
    }
}
