//! The `virtio_net_hdr` that a packet socket with `PACKET_VNET_HDR` puts before every frame.
//!
//! It carries what the kernel knows but a plain packet socket hides: that a TCP/UDP checksum is
//! only partial (`NEEDS_CSUM`, the TP_STATUS_CSUMNOTREADY case of veth and offloading NICs) and that
//! a frame is a GSO/GRO super-packet larger than the MTU. swrouter keeps both facts with the packet
//! and either hands them back to the kernel on transmit (plain forwarding, as the kernel's own
//! forwarding path does) or completes the checksum in software before it rewrites the packet.
//! Fields are in host byte order (the kernel uses `vio_le()`, little-endian on every host we run on).

/// Size of the header (no `num_buffers`).
pub const LEN: usize = 10;
/// Flag: the checksum at `csum_start + csum_offset` still has to be computed.
pub const F_NEEDS_CSUM: u8 = 1;
/// Flag: the checksum was already verified by the device.
pub const F_DATA_VALID: u8 = 2;
/// GSO type: not a super-packet.
pub const GSO_NONE: u8 = 0;
/// GSO type: TCP over IPv4.
pub const GSO_TCPV4: u8 = 1;
/// GSO type: UDP fragmentation offload.
pub const GSO_UDP: u8 = 3;
/// GSO type: TCP over IPv6.
pub const GSO_TCPV6: u8 = 4;
/// GSO type: UDP L4 segmentation.
pub const GSO_UDP_L4: u8 = 5;
/// GSO flag: ECN bits set.
pub const GSO_ECN: u8 = 0x80;

/// The decoded header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// NEEDS_CSUM / DATA_VALID.
    pub flags: u8,
    /// GSO_* type.
    pub gso_type: u8,
    /// Length of the headers before the segmented payload.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Offset from the start of the frame where checksumming starts.
    pub csum_start: u16,
    /// Offset from `csum_start` where the checksum is stored.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header from the first 10 bytes; `None` if shorter.
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        if b.len() < LEN {
            return None;
        }
        let h16 = |at: usize| u16::from_ne_bytes([b[at], b[at + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: h16(2),
            gso_size: h16(4),
            csum_start: h16(6),
            csum_offset: h16(8),
        })
    }

    /// Writes the header into the first 10 bytes of `b`.
    pub fn emit(&self, b: &mut [u8]) {
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }

    /// True when a checksum is still to be completed.
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    /// True for GSO super-packets.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut b = [0xa5u8; LEN];
        h.emit(&mut b);
        assert_eq!(VnetHdr::parse(&b), Some(h));
        assert!(h.needs_csum() && h.is_gso());
        assert_eq!(VnetHdr::parse(&b[..9]), None);
    }
}
