//! The TCP header (RFC 9293) and the one option the router touches, the MSS.

use crate::ipv4::PROTO_TCP;
use crate::{be16, be32, checksum, patch_region, put16, put32, Error, Result};
use std::net::Ipv4Addr;

/// The flag bits of the 14th header octet.
pub mod flags {
    /// FIN: no more data from the sender.
    pub const FIN: u8 = 0x01;
    /// SYN: synchronise sequence numbers; with ACK clear, a new connection attempt.
    pub const SYN: u8 = 0x02;
    /// RST: reset the connection; never answered with another RST.
    pub const RST: u8 = 0x04;
    /// PSH: push buffered data to the application.
    pub const PSH: u8 = 0x08;
    /// ACK: the acknowledgment number is valid.
    pub const ACK: u8 = 0x10;
    /// URG: the urgent pointer is valid.
    pub const URG: u8 = 0x20;
    /// ECE: ECN echo (RFC 3168).
    pub const ECE: u8 = 0x40;
    /// CWR: congestion window reduced (RFC 3168).
    pub const CWR: u8 = 0x80;
}

/// Length of a header without options.
pub const HEADER_LEN: usize = 20;

/// Byte offsets of the header fields and option kinds.
mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const DATA_OFF: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;

    pub const OPT_END: u8 = 0;
    pub const OPT_NOP: u8 = 1;
    pub const OPT_MSS: u8 = 2;
    pub const OPT_MSS_LEN: usize = 4;
}

/// A view over a TCP header and its payload; the buffer is the whole segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short or inconsistent one.
    pub const fn new_unchecked(buffer: T) -> Self {
        TcpPacket { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the fixed header is present and the data offset is at least 5 and within the buffer.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated {
                need: HEADER_LEN,
                have: len,
            });
        }
        let hlen = self.header_len();
        if hlen < HEADER_LEN || hlen > len {
            return Err(Error::BadHeaderLen(hlen));
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

    /// Sequence number.
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }

    /// Acknowledgment number.
    pub fn ack_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::ACK)
    }

    /// Header length in octets (data offset × 4); 0 for a buffer too short to hold the field.
    pub fn header_len(&self) -> usize {
        self.buffer
            .as_ref()
            .get(field::DATA_OFF)
            .map_or(0, |b| usize::from(b >> 4) * 4)
    }

    /// The flags octet (see [`flags`]).
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The FIN flag.
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }

    /// The SYN flag.
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }

    /// The RST flag.
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }

    /// The PSH flag.
    pub fn psh(&self) -> bool {
        self.flags() & flags::PSH != 0
    }

    /// The ACK flag.
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }

    /// Window size, unscaled.
    pub fn window_len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::WINDOW)
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// Urgent pointer.
    pub fn urgent_at(&self) -> u16 {
        be16(self.buffer.as_ref(), field::URGENT)
    }

    /// The options, between the fixed header and the payload.
    pub fn options(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..self.header_len()]
    }

    /// The payload: everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// Sequence space the segment takes: its payload plus one each for SYN and FIN.
    pub fn segment_len(&self) -> usize {
        self.payload().len() + usize::from(self.syn()) + usize::from(self.fin())
    }

    /// The MSS option's value, if the options carry a well-formed one before any malformed one.
    pub fn mss_option(&self) -> Option<u16> {
        self.mss_at().map(|at| be16(self.buffer.as_ref(), at))
    }

    /// Offset in the buffer of the MSS option's value.
    fn mss_at(&self) -> Option<usize> {
        let opts = self.options();
        let mut i = 0;
        while let Some(&kind) = opts.get(i) {
            match kind {
                field::OPT_END => return None,
                field::OPT_NOP => i += 1,
                _ => {
                    // A length below 2 would never advance; past the end it would overrun.
                    let len = usize::from(*opts.get(i + 1)?);
                    if len < 2 || i + len > opts.len() {
                        return None;
                    }
                    if kind == field::OPT_MSS && len == field::OPT_MSS_LEN {
                        return Some(HEADER_LEN + i + 2);
                    }
                    i += len;
                }
            }
        }
        None
    }

    /// True when the checksum verifies over the pseudo header and the whole buffer.
    pub fn verify_checksum(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let b = self.buffer.as_ref();
        checksum::fold(checksum::sum(pseudo_header(src, dst, b.len()), b)) == 0xffff
    }
}

/// The pseudo header sum for a segment of `len` octets (IPv4 limits it to 16 bits).
fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> u64 {
    checksum::pseudo_header(src.octets(), dst.octets(), PROTO_TCP, len as u16)
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Sets the source port.
    pub fn set_src_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    /// Sets the destination port.
    pub fn set_dst_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    /// Sets the sequence number.
    pub fn set_seq_number(&mut self, seq: u32) {
        put32(self.buffer.as_mut(), field::SEQ, seq);
    }

    /// Sets the acknowledgment number.
    pub fn set_ack_number(&mut self, ack: u32) {
        put32(self.buffer.as_mut(), field::ACK, ack);
    }

    /// Sets the header length in octets (a multiple of 4, 20 to 60); the four reserved bits that
    /// share its octet go out as zero.
    pub fn set_header_len(&mut self, len: usize) {
        // Masked to the nibble, so the cast loses nothing a valid length has.
        self.buffer.as_mut()[field::DATA_OFF] = ((len / 4) as u8 & 0x0f) << 4;
    }

    /// Sets the flags octet.
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the window size.
    pub fn set_window_len(&mut self, window: u16) {
        put16(self.buffer.as_mut(), field::WINDOW, window);
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, check: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, check);
    }

    /// Sets the urgent pointer.
    pub fn set_urgent_at(&mut self, at: u16) {
        put16(self.buffer.as_mut(), field::URGENT, at);
    }

    /// The options, mutable.
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hlen = self.header_len();
        &mut self.buffer.as_mut()[HEADER_LEN..hlen]
    }

    /// The payload, mutable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hlen = self.header_len();
        &mut self.buffer.as_mut()[hlen..]
    }

    /// Rewrites the value of an existing MSS option and patches the checksum (RFC 1624); false
    /// when there is none. The checksum must be a full one, not an offload partial sum.
    pub fn set_mss_option(&mut self, mss: u16) -> bool {
        let Some(at) = self.mss_at() else {
            return false;
        };
        patch_region(
            self.buffer.as_mut(),
            field::CHECKSUM,
            at,
            &mss.to_be_bytes(),
        );
        true
    }

    /// Lowers an MSS option above `max` to `max` (MSS clamping on a tunnel or small-MTU path);
    /// true when it changed the segment.
    pub fn clamp_mss(&mut self, max: u16) -> bool {
        match self.mss_option() {
            Some(mss) if mss > max => self.set_mss_option(max),
            _ => false,
        }
    }

    /// Computes the checksum over the pseudo header and the whole buffer, and stores it.
    pub fn fill_checksum(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let check = !checksum::fold(checksum::sum(pseudo_header(src, dst, b.len()), b));
        self.set_checksum(check);
    }
}

/// A decoded TCP header: the fields swrouter reads or writes, options reduced to the MSS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// The flags octet (see [`flags`]).
    pub flags: u8,
    /// Window size, unscaled.
    pub window: u16,
    /// The MSS option, if any.
    pub mss: Option<u16>,
    /// Octets of payload after the header.
    pub payload_len: usize,
}

impl TcpRepr {
    /// A bare SYN, without options, as a health probe sends it.
    pub fn syn(src_port: u16, dst_port: u16, seq: u32, window: u16) -> Self {
        TcpRepr {
            src_port,
            dst_port,
            seq,
            ack: 0,
            flags: flags::SYN,
            window,
            mss: None,
            payload_len: 0,
        }
    }

    /// The reset that answers `segment` (RFC 9293 §3.10.7.1, RFC 793 "Reset Generation"): from
    /// its destination port back to its source port; `None` for a segment that is itself a RST.
    ///
    /// With ACK set the reset takes that acknowledgment as its sequence number; otherwise it has
    /// sequence 0 and acknowledges everything the segment occupied.
    pub fn rst_for(segment: &TcpRepr) -> Option<Self> {
        if segment.flags & flags::RST != 0 {
            return None;
        }
        let (seq, ack, flags) = if segment.flags & flags::ACK != 0 {
            (segment.ack, 0, flags::RST)
        } else {
            // Sequence space wraps at 2^32, so truncating the length is the arithmetic wanted.
            let end = segment.seq.wrapping_add(segment.segment_len() as u32);
            (0, end, flags::RST | flags::ACK)
        };
        Some(TcpRepr {
            src_port: segment.dst_port,
            dst_port: segment.src_port,
            seq,
            ack,
            flags,
            window: 0,
            mss: None,
            payload_len: 0,
        })
    }

    /// Decodes the header of a segment; checksums are not verified (see the crate docs).
    pub fn parse<T: AsRef<[u8]>>(packet: &TcpPacket<T>) -> Result<Self> {
        packet.check_len()?;
        Ok(TcpRepr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            seq: packet.seq_number(),
            ack: packet.ack_number(),
            flags: packet.flags(),
            window: packet.window_len(),
            mss: packet.mss_option(),
            payload_len: packet.payload().len(),
        })
    }

    /// Header length with the options this repr emits.
    pub fn header_len(&self) -> usize {
        HEADER_LEN
            + if self.mss.is_some() {
                field::OPT_MSS_LEN
            } else {
                0
            }
    }

    /// Length of the whole segment: header and payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len
    }

    /// Sequence space the segment takes: its payload plus one each for SYN and FIN.
    pub fn segment_len(&self) -> usize {
        self.payload_len
            + usize::from(self.flags & flags::SYN != 0)
            + usize::from(self.flags & flags::FIN != 0)
    }

    /// Writes the header and options, then the checksum over the whole buffer, which must be the
    /// segment ([`buffer_len`](Self::buffer_len) octets) with its payload already in place.
    ///
    /// # Panics
    ///
    /// If the buffer is shorter than [`header_len`](Self::header_len).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut TcpPacket<T>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) {
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_seq_number(self.seq);
        packet.set_ack_number(self.ack);
        packet.set_header_len(self.header_len());
        packet.set_flags(self.flags);
        packet.set_window_len(self.window);
        packet.set_urgent_at(0);
        if let Some(mss) = self.mss {
            let [hi, lo] = mss.to_be_bytes();
            packet.options_mut()[..field::OPT_MSS_LEN].copy_from_slice(&[
                field::OPT_MSS,
                field::OPT_MSS_LEN as u8,
                hi,
                lo,
            ]);
        }
        packet.fill_checksum(src, dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);

    /// SYN 192.168.1.10:43210 → 192.168.1.1:80, seq 0x1f2e3d4c, window 64240, MSS 1460.
    static PACKET: [u8; 24] = [
        0xa8, 0xca, 0x00, 0x50, 0x1f, 0x2e, 0x3d, 0x4c, 0x00, 0x00, 0x00, 0x00, 0x60, 0x02, 0xfa,
        0xf0, 0x14, 0x45, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4,
    ];

    fn packet() -> TcpPacket<&'static [u8]> {
        TcpPacket::new_unchecked(&PACKET[..])
    }

    fn repr() -> TcpRepr {
        TcpRepr {
            mss: Some(1460),
            ..TcpRepr::syn(43210, 80, 0x1f2e_3d4c, 64240)
        }
    }

    /// A segment with a full checksum built from `repr` and `payload`.
    fn segment(repr: &TcpRepr, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0xa5; repr.header_len() + payload.len()];
        b[repr.header_len()..].copy_from_slice(payload);
        repr.emit(&mut TcpPacket::new_unchecked(&mut b[..]), SRC, DST);
        b
    }

    #[test]
    fn checked_accepts_the_sample() {
        assert!(TcpPacket::new_checked(&PACKET[..]).is_ok());
    }

    #[test]
    fn ports() {
        assert_eq!(packet().src_port(), 43210);
        assert_eq!(packet().dst_port(), 80);
    }

    #[test]
    fn seq_and_ack() {
        assert_eq!(packet().seq_number(), 0x1f2e_3d4c);
        assert_eq!(packet().ack_number(), 0);
    }

    #[test]
    fn header_len_and_flags() {
        assert_eq!(packet().header_len(), 24);
        assert_eq!(packet().flags(), flags::SYN);
        assert!(packet().syn());
        assert!(!packet().ack() && !packet().rst() && !packet().fin() && !packet().psh());
        assert_eq!(packet().segment_len(), 1);
    }

    #[test]
    fn window_urgent_checksum() {
        assert_eq!(packet().window_len(), 64240);
        assert_eq!(packet().urgent_at(), 0);
        assert_eq!(packet().checksum(), 0x1445);
        assert!(packet().verify_checksum(SRC, DST));
        assert!(!packet().verify_checksum(SRC, Ipv4Addr::new(192, 168, 1, 2)));
    }

    #[test]
    fn options_payload_mss() {
        assert_eq!(packet().options(), &[2, 4, 0x05, 0xb4]);
        assert!(packet().payload().is_empty());
        assert_eq!(packet().mss_option(), Some(1460));
    }

    #[test]
    fn header_len_of_short_buffer_is_zero() {
        assert_eq!(TcpPacket::new_unchecked(&PACKET[..12]).header_len(), 0);
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 24];
        let mut p = TcpPacket::new_unchecked(&mut bytes[..]);
        p.set_src_port(43210);
        p.set_dst_port(80);
        p.set_seq_number(0x1f2e_3d4c);
        p.set_ack_number(0);
        p.set_header_len(24);
        p.set_flags(flags::SYN);
        p.set_window_len(64240);
        p.set_urgent_at(0);
        p.options_mut().copy_from_slice(&[2, 4, 0x05, 0xb4]);
        p.fill_checksum(SRC, DST);
        assert_eq!(bytes, PACKET);
    }

    #[test]
    fn repr_parse_and_emit() {
        assert_eq!(TcpRepr::parse(&packet()), Ok(repr()));
        assert_eq!(segment(&repr(), &[]), PACKET);
    }

    #[test]
    fn syn_matches_the_hand_built_probe() {
        // The header probe.rs and steering.rs build by hand: 20 octets, SYN, window 1024.
        let (src, dst) = (Ipv4Addr::new(10, 0, 3, 1), Ipv4Addr::new(10, 0, 3, 2));
        let mut hand = [0u8; 20];
        hand[0..2].copy_from_slice(&60000u16.to_be_bytes());
        hand[2..4].copy_from_slice(&3128u16.to_be_bytes());
        hand[4..8].copy_from_slice(&77u32.to_be_bytes());
        hand[12] = 5 << 4;
        hand[13] = flags::SYN;
        hand[14..16].copy_from_slice(&1024u16.to_be_bytes());
        let ph = checksum::pseudo_header(src.octets(), dst.octets(), PROTO_TCP, 20);
        let c = !checksum::fold(checksum::sum(ph, &hand));
        hand[16..18].copy_from_slice(&c.to_be_bytes());
        let mut built = [0xa5u8; 20];
        TcpRepr::syn(60000, 3128, 77, 1024).emit(
            &mut TcpPacket::new_unchecked(&mut built[..]),
            src,
            dst,
        );
        assert_eq!(built, hand);
    }

    #[test]
    fn rejections() {
        let check = |b: &[u8]| TcpPacket::new_checked(b).map(|_| ());
        assert_eq!(
            check(&PACKET[..19]),
            Err(Error::Truncated { need: 20, have: 19 })
        );
        let mut b = PACKET;
        b[12] = 0x40;
        assert_eq!(check(&b), Err(Error::BadHeaderLen(16)));
        b[12] = 0x70;
        assert_eq!(check(&b), Err(Error::BadHeaderLen(28)));
        for n in 0..PACKET.len() {
            assert!(check(&PACKET[..n]).is_err(), "prefix {n}");
        }
        assert_eq!(
            TcpRepr::parse(&TcpPacket::new_unchecked(&PACKET[..3])),
            Err(Error::Truncated { need: 20, have: 3 })
        );
    }

    /// A SYN with the option list a Linux client sends: MSS, SACK permitted, timestamps, NOP,
    /// window scale.
    fn linux_syn() -> Vec<u8> {
        let opts = [
            2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0, 1, 2, 3, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let mut b = segment(&TcpRepr::syn(40000, 443, 1, 64240), &[0; 20]);
        let mut p = TcpPacket::new_unchecked(&mut b[..]);
        p.set_header_len(40);
        p.options_mut().copy_from_slice(&opts);
        p.fill_checksum(SRC, DST);
        b
    }

    #[test]
    fn mss_found_among_other_options() {
        let b = linux_syn();
        let p = TcpPacket::new_unchecked(&b[..]);
        assert_eq!(p.mss_option(), Some(1460));
        assert_eq!(TcpRepr::parse(&p).map(|r| r.mss), Ok(Some(1460)));
    }

    #[test]
    fn malformed_options_hide_the_mss() {
        for opts in [
            [1, 1, 0, 0, 2, 4, 5, 0xb4], // END before it
            [1, 8, 0, 0, 2, 4, 5, 0xb4], // NOP then kind 8 with length 0
            [3, 1, 1, 1, 2, 4, 5, 0xb4], // length 1 never advances
            [1, 1, 1, 1, 1, 2, 4, 5],    // runs past the header
        ] {
            let mut b = [0u8; 28];
            b[12] = 7 << 4;
            b[20..].copy_from_slice(&opts);
            let mut p = TcpPacket::new_unchecked(&mut b[..]);
            assert_eq!(p.mss_option(), None, "{opts:?}");
            assert!(!p.clamp_mss(0), "{opts:?}");
        }
    }

    #[test]
    fn clamp_lowers_and_keeps_the_checksum() {
        let mut b = PACKET;
        let mut p = TcpPacket::new_unchecked(&mut b[..]);
        assert!(!p.clamp_mss(1500), "already below");
        assert!(p.clamp_mss(1360));
        assert_eq!(p.mss_option(), Some(1360));
        assert!(p.verify_checksum(SRC, DST));
        assert!(!p.clamp_mss(1360), "no change at the limit");
    }

    #[test]
    fn clamp_at_an_odd_offset() {
        // NOP, MSS, NOP, NOP, NOP: the MSS value starts at octet 23.
        let mut b = segment(&TcpRepr::syn(1, 2, 3, 4), &[]);
        b.extend_from_slice(&[1, 2, 4, 0x23, 0x28, 1, 1, 1]);
        let mut p = TcpPacket::new_unchecked(&mut b[..]);
        p.set_header_len(28);
        p.fill_checksum(SRC, DST);
        assert_eq!(p.mss_option(), Some(9000));
        assert!(p.clamp_mss(1400));
        assert_eq!(p.mss_option(), Some(1400));
        assert!(p.verify_checksum(SRC, DST));
    }

    #[test]
    fn no_mss_option_no_clamp() {
        let mut b = segment(&TcpRepr::syn(1, 2, 3, 4), &[]);
        let mut p = TcpPacket::new_unchecked(&mut b[..]);
        assert!(!p.clamp_mss(536));
        assert!(!p.set_mss_option(536));
    }

    #[test]
    fn rst_answers_an_ack_with_its_ack() {
        let seg = TcpRepr {
            ack: 5000,
            flags: flags::ACK | flags::PSH,
            payload_len: 100,
            ..TcpRepr::syn(40000, 80, 1000, 512)
        };
        let rst = TcpRepr::rst_for(&seg);
        assert_eq!(
            rst,
            Some(TcpRepr {
                src_port: 80,
                dst_port: 40000,
                seq: 5000,
                ack: 0,
                flags: flags::RST,
                window: 0,
                mss: None,
                payload_len: 0,
            })
        );
    }

    #[test]
    fn rst_acknowledges_a_syn_and_its_fin_and_data() {
        let syn = TcpRepr::syn(40000, 80, u32::MAX, 512);
        let rst = TcpRepr::rst_for(&syn);
        assert_eq!(
            rst.map(|r| (r.seq, r.ack, r.flags)),
            Some((0, 0, flags::RST | flags::ACK))
        );
        let fin = TcpRepr {
            flags: flags::FIN,
            payload_len: 10,
            ..syn
        };
        let rst = TcpRepr::rst_for(&fin);
        assert_eq!(rst.map(|r| r.ack), Some(10));
    }

    #[test]
    fn rst_is_never_answered() {
        let rst = TcpRepr {
            flags: flags::RST | flags::ACK,
            ..TcpRepr::syn(1, 2, 3, 4)
        };
        assert_eq!(TcpRepr::rst_for(&rst), None);
    }

    fn any_repr() -> impl Strategy<Value = TcpRepr> {
        (
            any::<(u16, u16, u32, u32, u8, u16)>(),
            proptest::option::of(any::<u16>()),
            0usize..64,
        )
            .prop_map(
                |((src_port, dst_port, seq, ack, flags, window), mss, payload_len)| TcpRepr {
                    src_port,
                    dst_port,
                    seq,
                    ack,
                    flags,
                    window,
                    mss,
                    payload_len,
                },
            )
    }

    proptest! {
        #[test]
        fn repr_round_trip(repr in any_repr(), fill in any::<u8>()) {
            let b = segment(&repr, &vec![fill; repr.payload_len]);
            let p = TcpPacket::new_checked(&b[..]);
            prop_assert!(p.is_ok());
            if let Ok(p) = p {
                prop_assert!(p.verify_checksum(SRC, DST));
                prop_assert_eq!(TcpRepr::parse(&p), Ok(repr));
            }
        }

        #[test]
        fn checked_never_panics(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = TcpPacket::new_checked(&data[..]) {
                let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number(), p.flags());
                let _ = (p.window_len(), p.checksum(), p.urgent_at(), p.options(), p.payload());
                let _ = (p.mss_option(), p.segment_len(), p.verify_checksum(SRC, DST));
                let _ = TcpRepr::parse(&p);
            }
        }

        #[test]
        fn mss_walk_never_panics(opts in proptest::collection::vec(any::<u8>(), 0..40), max in any::<u16>()) {
            let words = opts.len() / 4;
            let mut b = vec![0u8; HEADER_LEN + words * 4];
            b[12] = ((5 + words) as u8) << 4;
            b[HEADER_LEN..].copy_from_slice(&opts[..words * 4]);
            let mut p = TcpPacket::new_unchecked(&mut b[..]);
            p.fill_checksum(SRC, DST);
            let _ = p.clamp_mss(max);
            prop_assert!(p.verify_checksum(SRC, DST));
        }

        /// Port, address and MSS changes patched incrementally give the checksum a full
        /// recomputation gives.
        #[test]
        fn incremental_updates_equal_recompute(
            repr in any_repr(),
            nops in 0usize..4,
            mss in any::<u16>(),
            max in any::<u16>(),
            port in any::<u16>(),
            new_src in any::<u32>(),
        ) {
            let payload: Vec<u8> = (0..repr.payload_len).map(|i| i as u8).collect();
            let mut b = segment(&TcpRepr { mss: None, ..repr }, &[]);
            let mut opts = vec![1u8; nops];
            opts.extend_from_slice(&[2, 4]);
            opts.extend_from_slice(&mss.to_be_bytes());
            opts.resize(8, 0);
            b.extend_from_slice(&opts);
            b.extend_from_slice(&payload);
            let mut p = TcpPacket::new_unchecked(&mut b[..]);
            p.set_header_len(28);
            p.fill_checksum(SRC, DST);

            let old_port = p.src_port();
            p.set_src_port(port);
            let check = checksum::update16(p.checksum(), old_port, port);
            let new_src = Ipv4Addr::from(new_src);
            let check = checksum::update32(check, SRC.into(), new_src.into());
            p.set_checksum(check);
            p.clamp_mss(max);
            prop_assert_eq!(p.mss_option(), Some(mss.min(max)));

            let patched = p.checksum();
            p.fill_checksum(new_src, DST);
            prop_assert_eq!(patched, p.checksum());
        }
    }
}
