//! Ethernet II frames.

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

/// The workspace's one MAC address type.
pub use netwire::ethernet::MacAddr;

/// Destination MAC of a frame (zero if the frame is shorter than [`HEADER_LEN`]).
pub fn dst(frame: &[u8]) -> MacAddr {
    MacAddr::from_slice(frame, field::DST.start).unwrap_or_default()
}

/// Source MAC of a frame (zero if the frame is shorter than [`HEADER_LEN`]).
pub fn src(frame: &[u8]) -> MacAddr {
    MacAddr::from_slice(frame, field::SRC.start).unwrap_or_default()
}

/// EtherType of a frame that is at least [`HEADER_LEN`] long.
pub fn ethertype(frame: &[u8]) -> u16 {
    super::be16(frame, field::ETHERTYPE.start)
}

/// Writes an Ethernet II header into the first 14 bytes of `frame`.
pub fn write_header(frame: &mut [u8], dst: MacAddr, src: MacAddr, ethertype: u16) {
    frame[field::DST].copy_from_slice(&dst.0);
    frame[field::SRC].copy_from_slice(&src.0);
    super::put16(frame, field::ETHERTYPE.start, ethertype);
}
