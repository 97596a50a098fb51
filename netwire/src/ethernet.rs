//! The Ethernet MAC address: the one type the router, the steering tables and the config share.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet MAC address; Display `02:00:00:00:00:01`, parsed with ':' or '-'
/// separators.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address `{0}`: expected six two-digit hex octets separated by ':' or '-', e.g. 02:00:00:00:00:01")]
pub struct ParseMacError(pub String);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00.
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The Ethernet address of an IPv4 multicast group (RFC 1112 §6.4): 01:00:5e and the
    /// group's low 23 bits.
    pub fn ipv4_multicast(group: core::net::Ipv4Addr) -> MacAddr {
        let o = group.octets();
        MacAddr([0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]])
    }

    /// The address in the six octets at `at` of `b`, if they are there.
    #[inline]
    pub fn from_slice(b: &[u8], at: usize) -> Option<MacAddr> {
        let six = b.get(at..at.checked_add(6)?)?;
        let mut m = [0u8; 6];
        m.copy_from_slice(six);
        Some(MacAddr(m))
    }

    /// True for group addresses (I/G bit, the lowest bit of the first octet), broadcast
    /// included.
    #[inline]
    pub fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// True for ff:ff:ff:ff:ff:ff.
    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }

    /// True for 00:00:00:00:00:00.
    pub fn is_zero(self) -> bool {
        self == Self::ZERO
    }

    /// True when the address can be an interface's own (not multicast, not all zeros).
    pub fn is_unicast(self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }

    /// The 48 bits as the low bits of a `u64` (table keys).
    #[inline]
    pub fn to_u64(self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> Self {
        MacAddr(octets)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl FromStr for MacAddr {
    type Err = ParseMacError;

    /// Six groups of exactly two hex digits, all separated by ':' or all by '-'.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseMacError(s.to_string());
        // One separator throughout: "02:00-00:..." is more likely a typo than intent.
        let sep = if s.contains(':') { ':' } else { '-' };
        let mut octets = [0u8; 6];
        let mut parts = s.split(sep);
        for octet in &mut octets {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *octet = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(octets))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parse_display_round_trip() {
        let m: MacAddr = "02:00:00:00:00:0a".parse().unwrap();
        assert_eq!(m, MacAddr([2, 0, 0, 0, 0, 10]));
        assert_eq!(m.to_string(), "02:00:00:00:00:0a");
        assert_eq!("02-00-00-00-00-0A".parse::<MacAddr>().unwrap(), m);
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "02:00-00:00:00:00",
            "2:00:00:00:00:00",
            "0g:00:00:00:00:00",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn classes_and_slices() {
        assert!(MacAddr::BROADCAST.is_multicast() && MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr([1, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert_eq!(
            MacAddr::ipv4_multicast(core::net::Ipv4Addr::new(239, 129, 2, 3)),
            MacAddr([1, 0, 0x5e, 1, 2, 3])
        );
        assert!(MacAddr::ZERO.is_zero() && !MacAddr::ZERO.is_unicast());
        assert!(MacAddr([2, 0, 0, 0, 0, 1]).is_unicast());
        assert_eq!(MacAddr([0, 0, 0, 0, 1, 2]).to_u64(), 0x0102);
        let b = [9, 1, 2, 3, 4, 5, 6];
        assert_eq!(
            MacAddr::from_slice(&b, 1),
            Some(MacAddr([1, 2, 3, 4, 5, 6]))
        );
        assert_eq!(MacAddr::from_slice(&b, 2), None);
        assert_eq!(MacAddr::from_slice(&b, usize::MAX), None);
    }
}
