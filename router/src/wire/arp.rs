//! ARP for IPv4 over Ethernet (RFC 826).

use super::ethernet::MacAddr;
use super::{be16, put16};
use std::net::Ipv4Addr;

/// Byte offsets within the ARP payload (after the Ethernet header).
mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
}

/// Length of an Ethernet/IPv4 ARP payload.
pub const PAYLOAD_LEN: usize = 28;
/// ARP operation: request.
pub const OP_REQUEST: u16 = 1;
/// ARP operation: reply.
pub const OP_REPLY: u16 = 2;

/// Why an ARP payload was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArpError {
    /// Fewer than 28 bytes.
    Truncated,
    /// Not Ethernet/IPv4 (hardware type, protocol type or address lengths differ).
    Unsupported,
}

/// A parsed Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    /// 1 = request, 2 = reply, others kept as received.
    pub operation: u16,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: MacAddr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

impl ArpRepr {
    /// Parses the ARP payload that follows the Ethernet header.
    pub fn parse(p: &[u8]) -> Result<ArpRepr, ArpError> {
        if p.len() < PAYLOAD_LEN {
            return Err(ArpError::Truncated);
        }
        if be16(p, field::HTYPE) != 1
            || be16(p, field::PTYPE) != 0x0800
            || p[field::HLEN] != 6
            || p[field::PLEN] != 4
        {
            return Err(ArpError::Unsupported);
        }
        Ok(ArpRepr {
            operation: be16(p, field::OPER),
            sender_mac: MacAddr::from_slice(p, field::SHA).unwrap_or_default(),
            sender_ip: ip_at(p, field::SPA),
            target_mac: MacAddr::from_slice(p, field::THA).unwrap_or_default(),
            target_ip: ip_at(p, field::TPA),
        })
    }

    /// Writes the 28-byte payload into `p`, which must be at least that long.
    pub fn emit(&self, p: &mut [u8]) {
        put16(p, field::HTYPE, 1);
        put16(p, field::PTYPE, 0x0800);
        p[field::HLEN] = 6;
        p[field::PLEN] = 4;
        put16(p, field::OPER, self.operation);
        p[field::SHA..field::SHA + 6].copy_from_slice(&self.sender_mac.0);
        p[field::SPA..field::SPA + 4].copy_from_slice(&self.sender_ip.octets());
        p[field::THA..field::THA + 6].copy_from_slice(&self.target_mac.0);
        p[field::TPA..field::TPA + 4].copy_from_slice(&self.target_ip.octets());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request from 10.0.0.2 (02:00:00:00:00:02) for 10.0.0.1.
    const REQUEST: [u8; 28] = [
        0x00, 0x01, // htype Ethernet
        0x08, 0x00, // ptype IPv4
        0x06, 0x04, // hlen, plen
        0x00, 0x01, // request
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // sha
        0x0a, 0x00, 0x00, 0x02, // spa
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // tha
        0x0a, 0x00, 0x00, 0x01, // tpa
    ];

    #[test]
    fn parse_and_emit_round_trip() {
        let r = ArpRepr::parse(&REQUEST).unwrap();
        assert_eq!(r.operation, OP_REQUEST);
        assert_eq!(r.sender_ip, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(r.target_ip, Ipv4Addr::new(10, 0, 0, 1));
        let mut out = [0xa5; 28];
        r.emit(&mut out);
        assert_eq!(out, REQUEST);
    }

    #[test]
    fn every_prefix_is_truncated() {
        for n in 0..REQUEST.len() {
            assert_eq!(ArpRepr::parse(&REQUEST[..n]), Err(ArpError::Truncated));
        }
    }

    #[test]
    fn other_hardware_is_unsupported() {
        let mut p = REQUEST;
        p[1] = 6; // IEEE 802
        assert_eq!(ArpRepr::parse(&p), Err(ArpError::Unsupported));
    }
}
