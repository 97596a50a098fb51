//! The IPv4 header (RFC 791) as a checked view over bytes.

use crate::{be16, checksum, patch_region, put16, Error, Result};
use std::net::Ipv4Addr;

/// Protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// Protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// Protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// Protocol number of GRE.
pub const PROTO_GRE: u8 = 47;

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

/// Byte offsets of the header fields.
mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LENGTH: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLAGS_FRAG: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;

    pub const FLAG_DF: u16 = 0x4000;
    pub const FLAG_MF: u16 = 0x2000;
    pub const FRAG_OFFSET: u16 = 0x1fff;
}

/// A view over an IPv4 header and the rest of its datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short or inconsistent one.
    pub const fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks version 4, an IHL of at least 5 within the buffer, and a total length between the
    /// header length and the buffer length (bytes past it are link-layer padding).
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated {
                need: HEADER_LEN,
                have: len,
            });
        }
        if self.version() != 4 {
            return Err(Error::BadVersion(self.version()));
        }
        let hlen = self.header_len();
        if hlen < HEADER_LEN || hlen > len {
            return Err(Error::BadHeaderLen(hlen));
        }
        let total = self.total_len();
        if total < hlen || total > len {
            return Err(Error::BadLength(total));
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The version nibble.
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in octets (IHL × 4); 0 for an empty buffer.
    pub fn header_len(&self) -> usize {
        // Callers size buffers from this before any check, so an empty one must not panic.
        self.buffer
            .as_ref()
            .first()
            .map_or(0, |b| usize::from(b & 0x0f) * 4)
    }

    /// The DSCP/ECN octet.
    pub fn tos(&self) -> u8 {
        self.buffer.as_ref()[field::TOS]
    }

    /// Total length of the datagram, header included.
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), field::LENGTH))
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::IDENT)
    }

    /// The Don't Fragment flag.
    pub fn dont_frag(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLAGS_FRAG) & field::FLAG_DF != 0
    }

    /// The More Fragments flag.
    pub fn more_frags(&self) -> bool {
        be16(self.buffer.as_ref(), field::FLAGS_FRAG) & field::FLAG_MF != 0
    }

    /// Fragment offset in octets (the field counts 8-octet units).
    pub fn frag_offset(&self) -> u16 {
        (be16(self.buffer.as_ref(), field::FLAGS_FRAG) & field::FRAG_OFFSET) << 3
    }

    /// True for any fragment, first or later (MF set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[field::TTL]
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        addr_at(self.buffer.as_ref(), field::SRC)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        addr_at(self.buffer.as_ref(), field::DST)
    }

    /// The options, between the fixed header and the payload.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// True when the header checksum verifies.
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(&self.buffer.as_ref()[..self.header_len()]) == 0
    }

    /// The payload: from the end of the header to the total length, without link padding.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.total_len()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the version nibble.
    pub fn set_version(&mut self, version: u8) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        *b = (version << 4) | (*b & 0x0f);
    }

    /// Sets the header length in octets (a multiple of 4, 20 to 60).
    pub fn set_header_len(&mut self, len: usize) {
        let b = &mut self.buffer.as_mut()[field::VER_IHL];
        // Masked to the nibble, so the cast loses nothing a valid length has.
        *b = (*b & 0xf0) | ((len / 4) as u8 & 0x0f);
    }

    /// Sets the DSCP/ECN octet.
    pub fn set_tos(&mut self, tos: u8) {
        self.buffer.as_mut()[field::TOS] = tos;
    }

    /// Sets the total length.
    pub fn set_total_len(&mut self, len: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, len);
    }

    /// Sets the identification.
    pub fn set_ident(&mut self, ident: u16) {
        put16(self.buffer.as_mut(), field::IDENT, ident);
    }

    /// Clears the three flag bits (reserved, DF, MF), keeping the fragment offset.
    pub fn clear_flags(&mut self) {
        let b = self.buffer.as_mut();
        let word = be16(b, field::FLAGS_FRAG) & field::FRAG_OFFSET;
        put16(b, field::FLAGS_FRAG, word);
    }

    /// Sets or clears Don't Fragment.
    pub fn set_dont_frag(&mut self, value: bool) {
        self.set_flag(field::FLAG_DF, value);
    }

    /// Sets or clears More Fragments.
    pub fn set_more_frags(&mut self, value: bool) {
        self.set_flag(field::FLAG_MF, value);
    }

    /// Sets the fragment offset in octets (a multiple of 8).
    pub fn set_frag_offset(&mut self, offset: u16) {
        let b = self.buffer.as_mut();
        let word = be16(b, field::FLAGS_FRAG) & !field::FRAG_OFFSET;
        put16(b, field::FLAGS_FRAG, word | (offset >> 3));
    }

    fn set_flag(&mut self, flag: u16, value: bool) {
        let b = self.buffer.as_mut();
        let word = be16(b, field::FLAGS_FRAG) & !flag;
        put16(b, field::FLAGS_FRAG, word | if value { flag } else { 0 });
    }

    /// Sets the time to live.
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[field::TTL] = ttl;
    }

    /// Sets the protocol.
    pub fn set_protocol(&mut self, protocol: u8) {
        self.buffer.as_mut()[field::PROTOCOL] = protocol;
    }

    /// Sets the header checksum field.
    pub fn set_checksum(&mut self, check: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, check);
    }

    /// Sets the source address, leaving the checksum alone.
    pub fn set_src_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SRC..field::SRC + 4].copy_from_slice(&addr.octets());
    }

    /// Sets the destination address, leaving the checksum alone.
    pub fn set_dst_addr(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::DST..field::DST + 4].copy_from_slice(&addr.octets());
    }

    /// Rewrites the source address and patches the header checksum (RFC 1624); returns the old
    /// address, which the caller needs to patch a TCP or UDP checksum with
    /// [`checksum::update32`].
    pub fn replace_src_addr(&mut self, addr: Ipv4Addr) -> Ipv4Addr {
        let old = self.src_addr();
        patch_region(
            self.buffer.as_mut(),
            field::CHECKSUM,
            field::SRC,
            &addr.octets(),
        );
        old
    }

    /// Rewrites the destination address and patches the header checksum; returns the old one.
    pub fn replace_dst_addr(&mut self, addr: Ipv4Addr) -> Ipv4Addr {
        let old = self.dst_addr();
        patch_region(
            self.buffer.as_mut(),
            field::CHECKSUM,
            field::DST,
            &addr.octets(),
        );
        old
    }

    /// Computes the header checksum and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hlen = self.header_len();
        let check = checksum::checksum(&self.buffer.as_ref()[..hlen]);
        self.set_checksum(check);
    }

    /// The payload, mutable: from the end of the header to the total length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (hlen, total) = (self.header_len(), self.total_len());
        &mut self.buffer.as_mut()[hlen..total]
    }
}

/// The address at `at`: one bounds check for its 4 octets.
fn addr_at(b: &[u8], at: usize) -> Ipv4Addr {
    let a = &b[at..at + 4];
    Ipv4Addr::new(a[0], a[1], a[2], a[3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 10.0.0.1 → 10.0.0.2, UDP, ident 0x1c46, DF, TTL 64, carrying the datagram of
    /// `udp::tests::PACKET`.
    pub(crate) static PACKET: [u8; 32] = [
        0x45, 0x00, 0x00, 0x20, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x11, 0x0a, 0x85, 0x0a, 0x00, 0x00,
        0x01, 0x0a, 0x00, 0x00, 0x02, 0x9c, 0x40, 0x08, 0x00, 0x00, 0x0c, 0x6c, 0xbf, 0x77, 0x63,
        0x63, 0x70,
    ];

    fn packet() -> Ipv4Packet<&'static [u8]> {
        Ipv4Packet::new_unchecked(&PACKET[..])
    }

    #[test]
    fn checked_accepts_the_sample() {
        assert!(Ipv4Packet::new_checked(&PACKET[..]).is_ok());
    }

    #[test]
    fn version_and_header_len() {
        assert_eq!(packet().version(), 4);
        assert_eq!(packet().header_len(), 20);
        assert!(packet().options().is_empty());
    }

    #[test]
    fn total_len_and_ident() {
        assert_eq!(packet().total_len(), 32);
        assert_eq!(packet().ident(), 0x1c46);
        assert_eq!(packet().tos(), 0);
    }

    #[test]
    fn fragment_fields() {
        assert!(packet().dont_frag());
        assert!(!packet().more_frags());
        assert_eq!(packet().frag_offset(), 0);
        assert!(!packet().is_fragment());
    }

    #[test]
    fn ttl_protocol_checksum() {
        assert_eq!(packet().ttl(), 64);
        assert_eq!(packet().protocol(), PROTO_UDP);
        assert_eq!(packet().checksum(), 0x0a85);
        assert!(packet().verify_checksum());
    }

    #[test]
    fn addresses() {
        assert_eq!(packet().src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(packet().dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn payload_stops_at_total_len() {
        let mut padded = PACKET.to_vec();
        padded.extend_from_slice(&[0; 14]);
        let p = Ipv4Packet::new_checked(&padded[..]);
        assert_eq!(p.map(|p| p.payload().to_vec()), Ok(PACKET[20..].to_vec()));
    }

    #[test]
    fn header_len_of_empty_is_zero() {
        assert_eq!(Ipv4Packet::new_unchecked(&[][..]).header_len(), 0);
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 32];
        let mut p = Ipv4Packet::new_unchecked(&mut bytes[..]);
        p.set_version(4);
        p.set_header_len(20);
        p.set_tos(0);
        p.set_total_len(32);
        p.set_ident(0x1c46);
        p.clear_flags();
        p.set_dont_frag(true);
        p.set_more_frags(false);
        p.set_frag_offset(0);
        p.set_ttl(64);
        p.set_protocol(PROTO_UDP);
        p.set_src_addr(Ipv4Addr::new(10, 0, 0, 1));
        p.set_dst_addr(Ipv4Addr::new(10, 0, 0, 2));
        p.payload_mut().copy_from_slice(&PACKET[20..]);
        p.fill_checksum();
        assert_eq!(bytes, PACKET);
    }

    #[test]
    fn fragment_setters() {
        let mut bytes = PACKET;
        let mut p = Ipv4Packet::new_unchecked(&mut bytes[..]);
        p.set_more_frags(true);
        p.set_frag_offset(1480);
        assert!(p.dont_frag() && p.more_frags() && p.is_fragment());
        assert_eq!(p.frag_offset(), 1480);
        p.set_dont_frag(false);
        assert!(!p.dont_frag() && p.more_frags());
    }

    #[test]
    fn rejections() {
        let check = |b: &[u8]| Ipv4Packet::new_checked(b).map(|_| ());
        assert_eq!(
            check(&PACKET[..19]),
            Err(Error::Truncated { need: 20, have: 19 })
        );
        let mut b = PACKET;
        b[0] = 0x65;
        assert_eq!(check(&b), Err(Error::BadVersion(6)));
        b[0] = 0x44;
        assert_eq!(check(&b), Err(Error::BadHeaderLen(16)));
        b[0] = 0x49;
        assert_eq!(check(&b), Err(Error::BadHeaderLen(36)));
        b[0] = 0x45;
        b[3] = 19;
        assert_eq!(check(&b), Err(Error::BadLength(19)));
        b[3] = 33;
        assert_eq!(check(&b), Err(Error::BadLength(33)));
        for n in 0..PACKET.len() {
            assert!(check(&PACKET[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn replace_addresses_patches_the_checksum() {
        let mut bytes = PACKET;
        let mut p = Ipv4Packet::new_unchecked(&mut bytes[..]);
        assert_eq!(
            p.replace_src_addr(Ipv4Addr::new(192, 0, 2, 7)),
            Ipv4Addr::new(10, 0, 0, 1)
        );
        assert_eq!(
            p.replace_dst_addr(Ipv4Addr::new(198, 51, 100, 9)),
            Ipv4Addr::new(10, 0, 0, 2)
        );
        assert!(p.verify_checksum());
        assert_eq!(p.src_addr(), Ipv4Addr::new(192, 0, 2, 7));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(198, 51, 100, 9));
    }

    proptest! {
        #[test]
        fn checked_never_panics(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Ipv4Packet::new_checked(&data[..]) {
                let _ = (p.version(), p.tos(), p.ident(), p.dont_frag(), p.more_frags(), p.frag_offset());
                let _ = (p.ttl(), p.protocol(), p.checksum(), p.src_addr(), p.dst_addr());
                let _ = (p.options(), p.payload(), p.verify_checksum());
            }
        }

        #[test]
        fn replace_addr_equals_recompute(mut h in proptest::array::uniform20(any::<u8>()), src in any::<u32>(), dst in any::<u32>()) {
            h[0] = 0x45;
            let mut p = Ipv4Packet::new_unchecked(&mut h[..]);
            p.fill_checksum();
            p.replace_src_addr(src.into());
            p.replace_dst_addr(dst.into());
            let inc = p.checksum();
            p.fill_checksum();
            prop_assert_eq!(inc, p.checksum());
        }
    }
}
