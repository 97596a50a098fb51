//! Ethernet II frames.

use std::fmt;

/// Byte offsets of the Ethernet II header.
pub mod field {
    /// Destination MAC.
    pub const DST: std::ops::Range<usize> = 0..6;
    /// Source MAC.
    pub const SRC: std::ops::Range<usize> = 6..12;
    /// EtherType.
    pub const ETHERTYPE: std::ops::Range<usize> = 12..14;
}

/// Length of an untagged Ethernet II header.
pub const HEADER_LEN: usize = 14;
/// Minimum frame length without FCS; shorter frames are padded on transmit.
pub const MIN_FRAME_LEN: usize = 60;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;

/// A 48-bit MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Mac = Mac([0xff; 6]);
    /// 00:00:00:00:00:00.
    pub const ZERO: Mac = Mac([0; 6]);

    /// True for group (multicast and broadcast) addresses.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// Reads a MAC from six bytes at `at`; the caller has checked the length.
    pub fn read(b: &[u8], at: usize) -> Mac {
        let mut m = [0u8; 6];
        m.copy_from_slice(&b[at..at + 6]);
        Mac(m)
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Destination MAC of a frame that is at least [`HEADER_LEN`] long.
pub fn dst(frame: &[u8]) -> Mac {
    Mac::read(frame, field::DST.start)
}

/// Source MAC of a frame that is at least [`HEADER_LEN`] long.
pub fn src(frame: &[u8]) -> Mac {
    Mac::read(frame, field::SRC.start)
}

/// EtherType of a frame that is at least [`HEADER_LEN`] long.
pub fn ethertype(frame: &[u8]) -> u16 {
    super::be16(frame, field::ETHERTYPE.start)
}

/// Writes an Ethernet II header into the first 14 bytes of `frame`.
pub fn write_header(frame: &mut [u8], dst: Mac, src: Mac, ethertype: u16) {
    frame[field::DST].copy_from_slice(&dst.0);
    frame[field::SRC].copy_from_slice(&src.0);
    super::put16(frame, field::ETHERTYPE.start, ethertype);
}
