//! Small value types shared by the model, the tables and the decision.
//!
//! [`MacAddr`] is the workspace's one MAC type (from `netwire`); interfaces are the router's
//! `IfId` (`u16`).

use std::fmt;
use std::net::Ipv4Addr;

/// Index of a router interface (the router's `IfId`; the conf layer maps names to it).
pub type IfId = u16;

/// An Ethernet MAC address (the workspace's one type).
pub use netwire::ethernet::MacAddr;

/// An IPv4 prefix (address and length 0..=32); the address is kept masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: Ipv4Addr,
    len: u8,
}

impl Prefix {
    /// The prefix `addr/len` with host bits cleared, or `None` when `len > 32`.
    pub fn new(addr: Ipv4Addr, len: u8) -> Option<Prefix> {
        (len <= 32).then(|| Prefix {
            addr: Ipv4Addr::from(u32::from(addr) & mask(len)),
            len,
        })
    }

    /// 0.0.0.0/0, which contains every address.
    pub const ANY: Prefix = Prefix {
        addr: Ipv4Addr::UNSPECIFIED,
        len: 0,
    };

    /// The network address.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for the zero-length prefix (0.0.0.0/0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when `a` lies inside the prefix.
    #[inline]
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        u32::from(a) & mask(self.len) == u32::from(self.addr)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The netmask of a prefix length (lengths above 32 count as 32).
#[inline]
pub(crate) fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// An inclusive range of L4 ports; a single port is `lo == hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port of the range.
    pub lo: u16,
    /// Last port of the range (inclusive).
    pub hi: u16,
}

impl PortRange {
    /// The range holding one port.
    pub const fn single(port: u16) -> PortRange {
        PortRange { lo: port, hi: port }
    }

    /// The range `lo..=hi` (validity, `lo <= hi`, is checked by `compile`).
    pub const fn new(lo: u16, hi: u16) -> PortRange {
        PortRange { lo, hi }
    }

    /// Every port.
    pub const ANY: PortRange = PortRange {
        lo: 0,
        hi: u16::MAX,
    };

    /// True when `p` lies in the range.
    #[inline]
    pub fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }

    /// True when the range is one port.
    pub fn is_single(&self) -> bool {
        self.lo == self.hi
    }

    /// True when the two ranges share a port.
    pub fn overlaps(&self, o: &PortRange) -> bool {
        self.lo <= o.hi && o.lo <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_single() {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// IP protocol numbers the crate gives meaning to.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP (the only protocol with SYN/RST handling).
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
}

/// TCP flag bits as they appear in the header's flags octet (the workspace's one definition).
pub use netwire::tcp::flags as tcp_flags;

macro_rules! index_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub u32);

        impl $name {
            /// The index as a `usize`, for the caller's counter arrays.
            #[inline]
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}

index_type!(
    /// Index of a service in the compiled tables (its position in `Definitions::services`).
    ServiceIdx
);
index_type!(
    /// Index of a device in the compiled tables (its position in `Definitions::devices`).
    DeviceIdx
);
index_type!(
    /// Index of a pool: explicit pools first (their `Definitions::pools` position), then one
    /// implicit single-member pool per device named directly in a chain.
    PoolIdx
);

/// Which way a packet walks its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client → service: the chain hop by hop from the first device.
    Forward,
    /// Service (or the network past the chain) → client: the chain in reverse.
    Reverse,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_masks_host_bits_and_contains() {
        let p = Prefix::new(Ipv4Addr::new(10, 1, 2, 3), 16).unwrap();
        assert_eq!(p.addr(), Ipv4Addr::new(10, 1, 0, 0));
        assert!(p.contains(Ipv4Addr::new(10, 1, 255, 1)));
        assert!(!p.contains(Ipv4Addr::new(10, 2, 0, 1)));
        assert!(Prefix::ANY.contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert!(Prefix::new(Ipv4Addr::LOCALHOST, 33).is_none());
        let host = Prefix::new(Ipv4Addr::new(1, 2, 3, 4), 32).unwrap();
        assert!(host.contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert!(!host.contains(Ipv4Addr::new(1, 2, 3, 5)));
        assert_eq!(host.to_string(), "1.2.3.4/32");
    }

    #[test]
    fn port_ranges() {
        let r = PortRange::new(1025, 1125);
        assert!(r.contains(1025) && r.contains(1125) && !r.contains(1126));
        assert!(r.overlaps(&PortRange::new(1125, 1300)));
        assert!(!r.overlaps(&PortRange::new(1126, 1300)));
        assert_eq!(PortRange::single(80).to_string(), "80");
        assert_eq!(r.to_string(), "1025-1125");
    }

    #[test]
    fn mac_display_and_packing() {
        let m = MacAddr([0x02, 0, 0, 0, 0xab, 0x01]);
        assert_eq!(m.to_string(), "02:00:00:00:ab:01");
        assert_eq!(m.to_u64(), 0x0200_0000_ab01);
    }
}
