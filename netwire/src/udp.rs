//! The UDP header (RFC 768).

use crate::ipv4::PROTO_UDP;
use crate::{be16, checksum, put16, Error, Result};
use std::net::Ipv4Addr;

/// Length of the header.
pub const HEADER_LEN: usize = 8;

/// Byte offsets of the header fields.
mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A view over a UDP header and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short or inconsistent one.
    pub const fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the header is present and the length field lies between 8 and the buffer length.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated {
                need: HEADER_LEN,
                have: len,
            });
        }
        let field_len = usize::from(self.len());
        if field_len < HEADER_LEN || field_len > len {
            return Err(Error::BadLength(field_len));
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Length field: header and payload.
    #[allow(clippy::len_without_is_empty)] // a header field, not a container's size
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    /// Checksum field; 0 means the sender computed none.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The payload, up to the length field (octets past it are not part of the datagram).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..usize::from(self.len())]
    }

    /// True when the checksum verifies over the pseudo header and the datagram, or is absent.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0 || checksum::fold(self.sum(src, dst)) == 0xffff
    }

    /// The one's-complement sum of the pseudo header and the datagram.
    fn sum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> u64 {
        let len = self.len();
        let ph = checksum::pseudo_header(src.octets(), dst.octets(), PROTO_UDP, len);
        checksum::sum(ph, &self.buffer.as_ref()[..usize::from(len)])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    /// Sets the length field.
    pub fn set_len(&mut self, len: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, check: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, check);
    }

    /// The payload, mutable, up to the length field.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        &mut self.buffer.as_mut()[HEADER_LEN..len]
    }

    /// Computes the checksum over the pseudo header and the datagram, and stores it.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let check = !checksum::fold(self.sum(src, dst));
        // A computed zero goes out as all ones, since zero on the wire means "no checksum".
        self.set_checksum(if check == 0 { 0xffff } else { check });
    }
}

/// A decoded UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Octets of payload after the header.
    pub payload_len: usize,
}

impl UdpRepr {
    /// Decodes the header of a datagram; the checksum is not verified (see the crate docs).
    pub fn parse<T: AsRef<[u8]>>(packet: &UdpPacket<T>) -> Result<Self> {
        packet.check_len()?;
        Ok(UdpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: packet.payload().len(),
        })
    }

    /// Length of the header.
    pub fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Length of the whole datagram.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header, then the checksum over the datagram, whose payload is already in place.
    ///
    /// # Panics
    ///
    /// If the buffer is shorter than [`buffer_len`](Self::buffer_len).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut UdpPacket<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        // IPv4 bounds a datagram to 16 bits of length.
        packet.set_len(self.buffer_len() as u16);
        packet.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// 10.0.0.1:40000 → 10.0.0.2:2048, payload "wccp".
    static PACKET: [u8; 12] = [
        0x9c, 0x40, 0x08, 0x00, 0x00, 0x0c, 0x6c, 0xbf, 0x77, 0x63, 0x63, 0x70,
    ];

    fn packet() -> UdpPacket<&'static [u8]> {
        UdpPacket::new_unchecked(&PACKET[..])
    }

    #[test]
    fn checked_accepts_the_sample() {
        assert!(UdpPacket::new_checked(&PACKET[..]).is_ok());
    }

    #[test]
    fn ports() {
        assert_eq!(packet().src_port(), 40000);
        assert_eq!(packet().dst_port(), 2048);
    }

    #[test]
    fn len_field() {
        assert_eq!(packet().len(), 12);
    }

    #[test]
    fn checksum_field() {
        assert_eq!(packet().checksum(), 0x6cbf);
        assert!(packet().verify_checksum(SRC, DST));
        assert!(!packet().verify_checksum(DST, DST));
    }

    #[test]
    fn payload_stops_at_len() {
        assert_eq!(packet().payload(), b"wccp");
        let mut longer = PACKET.to_vec();
        longer.extend_from_slice(&[0, 0]);
        let p = UdpPacket::new_checked(&longer[..]);
        assert_eq!(p.map(|p| p.payload().to_vec()), Ok(b"wccp".to_vec()));
    }

    #[test]
    fn zero_checksum_means_none() {
        let mut b = PACKET;
        b[6..8].copy_from_slice(&[0, 0]);
        assert!(UdpPacket::new_unchecked(&b[..]).verify_checksum(SRC, DST));
    }

    #[test]
    fn computed_zero_goes_out_as_ones() {
        // A payload word equal to the checksum of the rest brings the sum to all ones, so the
        // computed checksum is 0.
        let mut b = [0u8; 10];
        let mut p = UdpPacket::new_unchecked(&mut b[..]);
        p.set_len(10);
        p.fill_checksum(SRC, DST);
        let rest = p.checksum();
        p.payload_mut().copy_from_slice(&rest.to_be_bytes());
        p.fill_checksum(SRC, DST);
        assert_eq!(p.checksum(), 0xffff);
        assert!(p.verify_checksum(SRC, DST));
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 12];
        let mut p = UdpPacket::new_unchecked(&mut bytes[..]);
        p.set_src_port(40000);
        p.set_dst_port(2048);
        p.set_len(12);
        p.payload_mut().copy_from_slice(b"wccp");
        p.fill_checksum(SRC, DST);
        assert_eq!(bytes, PACKET);
    }

    #[test]
    fn repr_parse_and_emit() {
        let repr = UdpRepr {
            src_port: 40000,
            dst_port: 2048,
            payload_len: 4,
        };
        assert_eq!(UdpRepr::parse(&packet()), Ok(repr));
        let mut bytes = [0xa5u8; 12];
        bytes[8..].copy_from_slice(b"wccp");
        repr.emit(&mut UdpPacket::new_unchecked(&mut bytes[..]), SRC, DST);
        assert_eq!(bytes, PACKET);
    }

    #[test]
    fn rejections() {
        let check = |b: &[u8]| UdpPacket::new_checked(b).map(|_| ());
        assert_eq!(
            check(&PACKET[..7]),
            Err(Error::Truncated { need: 8, have: 7 })
        );
        let mut b = PACKET;
        b[5] = 7;
        assert_eq!(check(&b), Err(Error::BadLength(7)));
        b[5] = 13;
        assert_eq!(check(&b), Err(Error::BadLength(13)));
        for n in 0..PACKET.len() {
            assert!(check(&PACKET[..n]).is_err(), "prefix {n}");
        }
    }

    proptest! {
        #[test]
        fn repr_round_trip(src_port in any::<u16>(), dst_port in any::<u16>(), payload in proptest::collection::vec(any::<u8>(), 0..64)) {
            let repr = UdpRepr { src_port, dst_port, payload_len: payload.len() };
            let mut b = vec![0u8; repr.buffer_len()];
            b[HEADER_LEN..].copy_from_slice(&payload);
            repr.emit(&mut UdpPacket::new_unchecked(&mut b[..]), SRC, DST);
            let p = UdpPacket::new_checked(&b[..]);
            prop_assert!(p.is_ok());
            if let Ok(p) = p {
                prop_assert!(p.checksum() != 0);
                prop_assert!(p.verify_checksum(SRC, DST));
                prop_assert_eq!(UdpRepr::parse(&p), Ok(repr));
            }
        }

        #[test]
        fn checked_never_panics(data in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = UdpPacket::new_checked(&data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.len(), p.checksum(), p.payload());
                let _ = (p.verify_checksum(SRC, DST), UdpRepr::parse(&p));
            }
        }

        /// NAT: a port and an address patched incrementally equal a full recomputation.
        #[test]
        fn incremental_updates_equal_recompute(payload in proptest::collection::vec(any::<u8>(), 0..64), port in any::<u16>(), dst in any::<u32>()) {
            let repr = UdpRepr { src_port: 1, dst_port: 2, payload_len: payload.len() };
            let mut b = vec![0u8; repr.buffer_len()];
            b[HEADER_LEN..].copy_from_slice(&payload);
            let mut p = UdpPacket::new_unchecked(&mut b[..]);
            repr.emit(&mut p, SRC, DST);
            let check = checksum::update16(p.checksum(), p.dst_port(), port);
            p.set_dst_port(port);
            let dst = Ipv4Addr::from(dst);
            let check = checksum::update32(check, DST.into(), dst.into());
            // The same zero rule as on emit.
            p.set_checksum(if check == 0 { 0xffff } else { check });
            let patched = p.checksum();
            p.fill_checksum(SRC, dst);
            prop_assert_eq!(patched, p.checksum());
        }
    }
}
