//! The GRE header: RFC 2784 with the Key and Sequence Number extensions of RFC 2890.
//!
//! [`GrePacket`] is a zero-copy view over a GRE header and its payload; [`GreRepr`] is the
//! decoded, validated header. Routing (the R bit of RFC 1701) is not supported: RFC 2784 §2.3
//! makes a packet with it set one to discard.

use crate::checksum;
use crate::error::Error;

/// Length of the mandatory part of a GRE header (flags, version, protocol type).
pub const GRE_BASE_HEADER_LEN: usize = 4;

/// Length of the longest GRE header this crate handles: base + checksum word + key + sequence.
pub const GRE_MAX_HEADER_LEN: usize = 16;

/// Offsets and bit masks of the GRE header, named once (RFC 2784 §2.1, RFC 2890 §2).
mod field {
    /// A byte range within the header.
    pub type Field = core::ops::Range<usize>;

    /// C, reserved0, K, S, and version, as one big-endian 16-bit word.
    pub const FLAGS: Field = 0..2;
    /// Protocol Type: an EtherType naming the payload (RFC 2784 §2.4).
    pub const PROTOCOL: Field = 2..4;
    /// Checksum, present only when C is set (RFC 2784 §2.5).
    pub const CHECKSUM: Field = 4..6;
    /// Reserved1, present (and sent as zero) only when C is set (RFC 2784 §2.6).
    pub const RESERVED1: Field = 6..8;
    /// Where the optional 32-bit words start; their order is checksum word, key, sequence.
    pub const OPTIONAL: usize = 4;
    /// Size of each optional word.
    pub const WORD: usize = 4;

    /// Checksum Present, bit 0 (RFC 2784 §2.2).
    pub const FLAG_C: u16 = 0x8000;
    /// Key Present, bit 2 (RFC 2890 §2).
    pub const FLAG_K: u16 = 0x2000;
    /// Sequence Number Present, bit 3 (RFC 2890 §2).
    pub const FLAG_S: u16 = 0x1000;
    /// Bits 1, 4 and 5: RFC 1701's routing, strict source route and first recursion bit. RFC 2784
    /// §2.3 says a receiver that does not implement RFC 1701 MUST discard a packet with any of
    /// bits 1–5 set; bits 2 and 3 became K and S in RFC 2890, which leaves these three.
    pub const RESERVED_DISCARD: u16 = 0x4c00;
    /// Bits 6–12: sent as zero and, per RFC 2784 §2.3, ignored on receipt.
    pub const RESERVED_IGNORE: u16 = 0x03f8;
    /// Bits 13–15: the version (RFC 2784 §2.3.1).
    pub const VERSION: u16 = 0x0007;
}

/// The GRE Protocol Type field: the EtherType of the payload (RFC 2784 §2.4).
///
/// Unknown values are kept, so a packet carrying something else can still be counted and
/// forwarded or re-encoded unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GreProtocol {
    /// 0x0800: a bare IPv4 packet (plain GRE, also what some caches return).
    Ipv4,
    /// 0x883E: WCCP redirection, a redirect header followed by the original packet (reference §8).
    WccpRedirect,
    /// Any other EtherType, kept as found.
    Unknown(u16),
}

impl From<u16> for GreProtocol {
    fn from(value: u16) -> Self {
        match value {
            0x0800 => GreProtocol::Ipv4,
            0x883e => GreProtocol::WccpRedirect,
            other => GreProtocol::Unknown(other),
        }
    }
}

impl From<GreProtocol> for u16 {
    fn from(value: GreProtocol) -> Self {
        match value {
            GreProtocol::Ipv4 => 0x0800,
            GreProtocol::WccpRedirect => 0x883e,
            GreProtocol::Unknown(other) => other,
        }
    }
}

/// A zero-copy view over a GRE header followed by its payload.
///
/// The buffer must end where the outer IP datagram ends: the payload is everything after the
/// header, and the checksum (when present) covers all of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GrePacket<T> {
    /// Wraps a buffer without checking its length; accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        GrePacket { buffer }
    }

    /// Wraps a buffer after checking it is long enough for the header its flags announce.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the base header and every optional word the flags announce.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < GRE_BASE_HEADER_LEN {
            return Err(Error::Truncated {
                need: GRE_BASE_HEADER_LEN,
                have: len,
                at: 0,
            });
        }
        let header_len = self.header_len();
        if len < header_len {
            return Err(Error::Truncated {
                need: header_len - field::OPTIONAL,
                have: len - field::OPTIONAL,
                at: field::OPTIONAL,
            });
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The first 16-bit word: flags, reserved0 and version, as on the wire.
    pub fn flags(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::FLAGS];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Whether the C bit announces a checksum word (RFC 2784 §2.2).
    pub fn checksum_present(&self) -> bool {
        self.flags() & field::FLAG_C != 0
    }

    /// Whether the K bit announces a key (RFC 2890 §2.1).
    pub fn key_present(&self) -> bool {
        self.flags() & field::FLAG_K != 0
    }

    /// Whether the S bit announces a sequence number (RFC 2890 §2.2).
    pub fn sequence_present(&self) -> bool {
        self.flags() & field::FLAG_S != 0
    }

    /// The reserved0 bits (1 and 4–12) as they sit in the flags word.
    pub fn reserved0(&self) -> u16 {
        self.flags() & (field::RESERVED_DISCARD | field::RESERVED_IGNORE)
    }

    /// The Version field (RFC 2784 §2.3.1); 0 for RFC 2784 GRE.
    pub fn version(&self) -> u8 {
        // Masked to three bits, so the cast loses nothing.
        (self.flags() & field::VERSION) as u8
    }

    /// The Protocol Type field (RFC 2784 §2.4).
    pub fn protocol(&self) -> GreProtocol {
        let b = &self.buffer.as_ref()[field::PROTOCOL];
        GreProtocol::from(u16::from_be_bytes([b[0], b[1]]))
    }

    /// The Checksum field, if C is set.
    pub fn checksum(&self) -> Option<u16> {
        self.checksum_present()
            .then(|| self.read_u16(field::CHECKSUM.start))
    }

    /// The Reserved1 field, if C is set (RFC 2784 §2.6: sent as zero, not checked on receipt).
    pub fn reserved1(&self) -> Option<u16> {
        self.checksum_present()
            .then(|| self.read_u16(field::RESERVED1.start))
    }

    /// The Key field, if K is set (RFC 2890 §2.1).
    pub fn key(&self) -> Option<u32> {
        self.key_present().then(|| self.read_u32(self.key_offset()))
    }

    /// The Sequence Number field, if S is set (RFC 2890 §2.2).
    pub fn sequence(&self) -> Option<u32> {
        self.sequence_present()
            .then(|| self.read_u32(self.sequence_offset()))
    }

    /// Length of the header the flags announce: 4 plus 4 for each of C, K and S.
    pub fn header_len(&self) -> usize {
        let flags = self.flags();
        let words = [field::FLAG_C, field::FLAG_K, field::FLAG_S]
            .iter()
            .filter(|&&bit| flags & bit != 0)
            .count();
        GRE_BASE_HEADER_LEN + words * field::WORD
    }

    /// The payload: everything after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }

    /// The checksum the packet should carry: RFC 1071 over header and payload, with the
    /// Checksum field taken as zero (RFC 2784 §2.5). Meaningful only when C is set.
    pub fn expected_checksum(&self) -> u16 {
        let data = self.buffer.as_ref();
        // Skip the checksum field itself; it starts at an even offset, so the words that follow
        // keep their alignment.
        let acc = checksum::sum(0, &data[..field::CHECKSUM.start]);
        let acc = checksum::sum(acc, &data[field::CHECKSUM.end..]);
        !checksum::fold(acc)
    }

    /// Whether the checksum is correct; `true` when C is clear (there is nothing to check).
    ///
    /// This is the RFC 1071 receiver check (everything, checksum included, sums to 0xFFFF), so it
    /// accepts both one's-complement zeros (0x0000 and 0xFFFF) a sender may have written.
    pub fn verify_checksum(&self) -> bool {
        !self.checksum_present() || checksum::fold(checksum::sum(0, self.buffer.as_ref())) == 0xffff
    }

    /// Offset of the Key field: after the checksum word when C is set.
    fn key_offset(&self) -> usize {
        field::OPTIONAL + usize::from(self.checksum_present()) * field::WORD
    }

    /// Offset of the Sequence Number field: after the checksum word and the key, when present.
    fn sequence_offset(&self) -> usize {
        self.key_offset() + usize::from(self.key_present()) * field::WORD
    }

    fn read_u16(&self, at: usize) -> u16 {
        let b = &self.buffer.as_ref()[at..at + 2];
        u16::from_be_bytes([b[0], b[1]])
    }

    fn read_u32(&self, at: usize) -> u32 {
        let b = &self.buffer.as_ref()[at..at + 4];
        u32::from_be_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GrePacket<T> {
    /// Sets the whole first word: flags, reserved0 and version.
    pub fn set_flags(&mut self, value: u16) {
        self.buffer.as_mut()[field::FLAGS].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets or clears the C bit; this moves the key and sequence fields.
    pub fn set_checksum_present(&mut self, present: bool) {
        self.set_flag_bit(field::FLAG_C, present);
    }

    /// Sets or clears the K bit; this moves the sequence field.
    pub fn set_key_present(&mut self, present: bool) {
        self.set_flag_bit(field::FLAG_K, present);
    }

    /// Sets or clears the S bit.
    pub fn set_sequence_present(&mut self, present: bool) {
        self.set_flag_bit(field::FLAG_S, present);
    }

    /// Sets the Version field (only its low three bits are used).
    pub fn set_version(&mut self, version: u8) {
        let flags = (self.flags() & !field::VERSION) | (u16::from(version) & field::VERSION);
        self.set_flags(flags);
    }

    /// Sets the Protocol Type field.
    pub fn set_protocol(&mut self, protocol: GreProtocol) {
        self.buffer.as_mut()[field::PROTOCOL].copy_from_slice(&u16::from(protocol).to_be_bytes());
    }

    /// Writes the Checksum field; set C first. See also [`GrePacket::fill_checksum`].
    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    /// Writes the Reserved1 field; set C first.
    pub fn set_reserved1(&mut self, value: u16) {
        self.buffer.as_mut()[field::RESERVED1].copy_from_slice(&value.to_be_bytes());
    }

    /// Writes the Key field where the current flags put it; set C and K first.
    pub fn set_key(&mut self, key: u32) {
        let at = self.key_offset();
        self.buffer.as_mut()[at..at + field::WORD].copy_from_slice(&key.to_be_bytes());
    }

    /// Writes the Sequence Number field where the current flags put it; set C, K and S first.
    pub fn set_sequence(&mut self, sequence: u32) {
        let at = self.sequence_offset();
        self.buffer.as_mut()[at..at + field::WORD].copy_from_slice(&sequence.to_be_bytes());
    }

    /// The payload, writable: everything after the header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        &mut self.buffer.as_mut()[at..]
    }

    /// Computes and stores the checksum once header and payload are final; no-op when C is clear
    /// (the field does not exist then, and writing it would clobber the payload).
    pub fn fill_checksum(&mut self) {
        if self.checksum_present() {
            let value = self.expected_checksum();
            self.set_checksum(value);
        }
    }

    fn set_flag_bit(&mut self, bit: u16, on: bool) {
        let flags = if on {
            self.flags() | bit
        } else {
            self.flags() & !bit
        };
        self.set_flags(flags);
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for GrePacket<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A decoded, validated GRE header (version 0).
///
/// The checksum itself is not stored: it is a function of the bytes, verified by
/// [`GreRepr::parse`] and written by [`GrePacket::fill_checksum`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GreRepr {
    /// What the payload is.
    pub protocol: GreProtocol,
    /// Whether the header carries a checksum (C bit).
    pub checksum: bool,
    /// The RFC 2890 key, if present.
    pub key: Option<u32>,
    /// The RFC 2890 sequence number, if present.
    pub sequence: Option<u32>,
}

impl GreRepr {
    /// Plain WCCP redirection GRE, `00 00 88 3E`: no checksum, key or sequence (reference §8).
    pub const WCCP: GreRepr = GreRepr {
        protocol: GreProtocol::WccpRedirect,
        checksum: false,
        key: None,
        sequence: None,
    };

    /// Decodes and validates a GRE header.
    ///
    /// Rejects, in this order: a short buffer, a version other than 0, any of flag bits 1, 4, 5
    /// (RFC 2784 §2.3), and a wrong checksum when C is set. Bits 6–12 and Reserved1 are ignored,
    /// as RFC 2784 §2.3 and §2.6 require.
    pub fn parse<T: AsRef<[u8]>>(packet: &GrePacket<T>) -> Result<GreRepr, Error> {
        packet.check_len()?;
        let version = packet.version();
        if version != 0 {
            return Err(Error::UnsupportedVersion(version));
        }
        let reserved = packet.flags() & field::RESERVED_DISCARD;
        if reserved != 0 {
            return Err(Error::ReservedBitsSet(reserved));
        }
        if let Some(found) = packet.checksum() {
            if !packet.verify_checksum() {
                return Err(Error::ChecksumMismatch {
                    expected: packet.expected_checksum(),
                    found,
                });
            }
        }
        Ok(GreRepr {
            protocol: packet.protocol(),
            checksum: packet.checksum_present(),
            key: packet.key(),
            sequence: packet.sequence(),
        })
    }

    /// Length of the header this repr emits: 4 plus 4 for each of checksum, key and sequence.
    pub const fn buffer_len(&self) -> usize {
        let words =
            self.checksum as usize + self.key.is_some() as usize + self.sequence.is_some() as usize;
        GRE_BASE_HEADER_LEN + words * 4
    }

    /// Writes the header into the front of `packet`, whose buffer must hold `buffer_len()` octets.
    ///
    /// When `checksum` is set the Checksum and Reserved1 fields are written as zero; call
    /// [`GrePacket::fill_checksum`] once the payload is in place (the checksum covers it).
    /// [`crate::encapsulate_in_place`] does both steps.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut GrePacket<T>) {
        let mut flags = 0;
        if self.checksum {
            flags |= field::FLAG_C;
        }
        if self.key.is_some() {
            flags |= field::FLAG_K;
        }
        if self.sequence.is_some() {
            flags |= field::FLAG_S;
        }
        // Version 0 and all reserved0 bits zero, as RFC 2784 §2.3 requires of senders.
        packet.set_flags(flags);
        packet.set_protocol(self.protocol);
        if self.checksum {
            packet.set_checksum(0);
            packet.set_reserved1(0);
        }
        if let Some(key) = self.key {
            packet.set_key(key);
        }
        if let Some(sequence) = self.sequence {
            packet.set_sequence(sequence);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain WCCP GRE header, as in the synthetic capture's frames 1 and 2.
    const PLAIN: [u8; 4] = [
        0x00, 0x00, // flags: C=0 K=0 S=0, reserved0 0, version 0
        0x88, 0x3e, // protocol type 0x883E (WCCP redirection)
    ];

    /// All three optional words, payload `de ad`, checksum precomputed by hand.
    const ALL: [u8; 18] = [
        0xb0, 0x00, // flags: C=1 (0x8000), K=1 (0x2000), S=1 (0x1000), version 0
        0x08, 0x00, // protocol type 0x0800 (IPv4)
        0x65, 0x44, // checksum (see `all_checksum_by_hand`)
        0x00, 0x00, // reserved1
        0x01, 0x02, 0x03, 0x04, // key 0x01020304
        0x00, 0x00, 0x00, 0x07, // sequence 7
        0xde, 0xad, // payload
    ];

    /// Key only: flags 0x2000, protocol 0x883E, key 0xcafebabe, no payload.
    const KEY_ONLY: [u8; 8] = [
        0x20, 0x00, // flags: K=1
        0x88, 0x3e, // protocol type 0x883E
        0xca, 0xfe, 0xba, 0xbe, // key
    ];

    /// Sequence only: flags 0x1000, protocol 0x0800, sequence 0xffffffff.
    const SEQ_ONLY: [u8; 8] = [
        0x10, 0x00, // flags: S=1
        0x08, 0x00, // protocol type 0x0800
        0xff, 0xff, 0xff, 0xff, // sequence
    ];

    /// Checksum only, protocol 0x883E, payload is the redirect header `00 00 00 2a`.
    const CSUM_ONLY: [u8; 12] = [
        0x80, 0x00, // flags: C=1
        0x88, 0x3e, // protocol type 0x883E
        0xf7,
        0x96, // checksum: 0x8000 + 0x883e + 0x002a = 0x10868 → 0x0869 → !0x0869 = 0xf796
        0x00, 0x00, // reserved1
        0x00, 0x00, 0x00, 0x2a, // payload
    ];

    fn repr(protocol: u16, checksum: bool, key: Option<u32>, sequence: Option<u32>) -> GreRepr {
        GreRepr {
            protocol: GreProtocol::from(protocol),
            checksum,
            key,
            sequence,
        }
    }

    /// Every vector with its expected repr and header length.
    fn vectors() -> Vec<(&'static [u8], GreRepr, usize)> {
        vec![
            (&PLAIN[..], repr(0x883e, false, None, None), 4),
            (&ALL[..], repr(0x0800, true, Some(0x0102_0304), Some(7)), 16),
            (
                &KEY_ONLY[..],
                repr(0x883e, false, Some(0xcafe_babe), None),
                8,
            ),
            (
                &SEQ_ONLY[..],
                repr(0x0800, false, None, Some(0xffff_ffff)),
                8,
            ),
            (&CSUM_ONLY[..], repr(0x883e, true, None, None), 8),
        ]
    }

    #[test]
    fn all_checksum_by_hand() {
        // Words, checksum taken as 0: b000 0800 0000 0000 0102 0304 0000 0007 dead
        // = 0x19aba → end-around carry → 0x9abb → complement → 0x6544.
        let sum: u32 = 0xb000 + 0x0800 + 0x0102 + 0x0304 + 0x0007 + 0xdead;
        assert_eq!(sum, 0x19aba);
        assert_eq!(
            GrePacket::new_unchecked(&ALL[..]).expected_checksum(),
            0x6544
        );
    }

    #[test]
    fn accessors_plain() {
        let p = GrePacket::new_checked(&PLAIN[..]).unwrap();
        assert_eq!(p.flags(), 0x0000);
        assert!(!p.checksum_present() && !p.key_present() && !p.sequence_present());
        assert_eq!(p.version(), 0);
        assert_eq!(p.protocol(), GreProtocol::WccpRedirect);
        assert_eq!(
            (p.checksum(), p.reserved1(), p.key(), p.sequence()),
            (None, None, None, None)
        );
        assert_eq!(p.header_len(), 4);
        assert!(p.payload().is_empty());
        assert!(p.verify_checksum());
    }

    #[test]
    fn accessors_all() {
        let p = GrePacket::new_checked(&ALL[..]).unwrap();
        assert_eq!(p.flags(), 0xb000);
        assert_eq!(p.protocol(), GreProtocol::Ipv4);
        assert_eq!(p.checksum(), Some(0x6544));
        assert_eq!(p.reserved1(), Some(0));
        assert_eq!(p.key(), Some(0x0102_0304));
        assert_eq!(p.sequence(), Some(7));
        assert_eq!(p.header_len(), 16);
        assert_eq!(p.payload(), &[0xde, 0xad]);
        assert!(p.verify_checksum());
    }

    #[test]
    fn parse_and_emit_every_flag_combination() {
        for (bytes, expected, header_len) in vectors() {
            let p = GrePacket::new_checked(bytes).unwrap();
            assert_eq!(GreRepr::parse(&p), Ok(expected), "{bytes:02x?}");
            assert_eq!(expected.buffer_len(), header_len);

            // Emit into a poisoned buffer: header first, then payload, then the checksum.
            let mut buf = vec![0xa5; bytes.len()];
            let mut out = GrePacket::new_unchecked(&mut buf[..]);
            expected.emit(&mut out);
            out.payload_mut().copy_from_slice(&bytes[header_len..]);
            out.fill_checksum();
            assert_eq!(buf, bytes, "{expected:?}");
        }
    }

    #[test]
    fn every_strict_prefix_fails() {
        for (bytes, _, header_len) in vectors() {
            for cut in 0..header_len {
                let err = GrePacket::new_checked(&bytes[..cut]).unwrap_err();
                assert!(matches!(err, Error::Truncated { .. }), "{cut}: {err}");
                assert!(GreRepr::parse(&GrePacket::new_unchecked(&bytes[..cut])).is_err());
            }
        }
        assert_eq!(
            GrePacket::new_checked(&ALL[..7]).unwrap_err(),
            Error::Truncated {
                need: 12,
                have: 3,
                at: 4
            }
        );
        assert_eq!(
            GrePacket::new_checked(&PLAIN[..1]).unwrap_err(),
            Error::Truncated {
                need: 4,
                have: 1,
                at: 0
            }
        );
    }

    #[test]
    fn checksum_prefixes_fail_the_checksum() {
        // Cutting payload off a checksummed packet keeps the header valid but breaks the sum.
        let err = GreRepr::parse(&GrePacket::new_checked(&ALL[..17]).unwrap()).unwrap_err();
        assert!(
            matches!(err, Error::ChecksumMismatch { found: 0x6544, .. }),
            "{err}"
        );
    }

    #[test]
    fn checksum_mismatch_reports_both_values() {
        let mut bytes = CSUM_ONLY;
        bytes[11] = 0x2b; // payload changed, checksum left alone
        let err = GreRepr::parse(&GrePacket::new_checked(&bytes[..]).unwrap()).unwrap_err();
        assert_eq!(
            err,
            Error::ChecksumMismatch {
                expected: 0xf795,
                found: 0xf796
            }
        );
        let mut p = GrePacket::new_checked(&mut bytes[..]).unwrap();
        assert!(!p.verify_checksum());
        p.fill_checksum();
        assert!(p.verify_checksum());
        assert_eq!(p.checksum(), Some(0xf795));
    }

    #[test]
    fn checksum_negative_zero_accepted() {
        // Header whose words sum to 0xffff: the stored checksum may be 0x0000 or 0xffff.
        // 0x8000 + 0x7fff = 0xffff.
        let mut bytes = [0x80, 0x00, 0x7f, 0xff, 0x00, 0x00, 0x00, 0x00];
        let p = GrePacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.expected_checksum(), 0x0000);
        assert!(p.verify_checksum());
        bytes[4] = 0xff;
        bytes[5] = 0xff;
        assert!(GrePacket::new_checked(&bytes[..])
            .unwrap()
            .verify_checksum());
    }

    #[test]
    fn fill_checksum_without_c_is_a_no_op() {
        let mut bytes = [0x00, 0x00, 0x08, 0x00, 0x12, 0x34];
        GrePacket::new_unchecked(&mut bytes[..]).fill_checksum();
        assert_eq!(bytes, [0x00, 0x00, 0x08, 0x00, 0x12, 0x34]);
    }

    #[test]
    fn version_other_than_zero_is_rejected() {
        // Version 1 is PPTP's enhanced GRE (RFC 2637): K set, protocol 0x880B.
        let bytes = [0x20, 0x01, 0x88, 0x0b, 0x00, 0x00, 0x00, 0x00];
        let p = GrePacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.version(), 1);
        assert_eq!(GreRepr::parse(&p), Err(Error::UnsupportedVersion(1)));
        let bytes = [0x00, 0x07, 0x08, 0x00];
        assert_eq!(
            GreRepr::parse(&GrePacket::new_unchecked(&bytes[..])),
            Err(Error::UnsupportedVersion(7))
        );
    }

    #[test]
    fn reserved_bits_1_4_5_are_rejected() {
        for (flags, reserved) in [
            (0x4000, 0x4000),
            (0x0800, 0x0800),
            (0x0400, 0x0400),
            (0x7c00, 0x4c00),
        ] {
            let mut bytes = [0x00, 0x00, 0x08, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
            GrePacket::new_unchecked(&mut bytes[..]).set_flags(flags);
            let p = GrePacket::new_unchecked(&bytes[..]);
            assert_eq!(
                GreRepr::parse(&p),
                Err(Error::ReservedBitsSet(reserved)),
                "{flags:04x}"
            );
        }
    }

    #[test]
    fn reserved_bits_6_to_12_are_ignored() {
        let bytes = [
            0x03, 0xf8, // flags: every bit of 6–12 set, version 0
            0x08, 0x00, // protocol type 0x0800
        ];
        let p = GrePacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.reserved0(), 0x03f8);
        assert_eq!(GreRepr::parse(&p), Ok(repr(0x0800, false, None, None)));
    }

    #[test]
    fn unknown_protocol_is_kept() {
        let bytes = [
            0x00, 0x00, // flags
            0x86, 0xdd, // protocol type 0x86DD (IPv6), not one this crate names
        ];
        let r = GreRepr::parse(&GrePacket::new_checked(&bytes[..]).unwrap()).unwrap();
        assert_eq!(r.protocol, GreProtocol::Unknown(0x86dd));
        let mut buf = vec![0xa5; 4];
        r.emit(&mut GrePacket::new_unchecked(&mut buf[..]));
        assert_eq!(buf, bytes);
    }

    #[test]
    fn protocol_conversions() {
        for value in [0x0800u16, 0x883e, 0x86dd, 0x0000, 0xffff] {
            assert_eq!(u16::from(GreProtocol::from(value)), value);
        }
        assert_eq!(GreProtocol::from(0x883e), GreProtocol::WccpRedirect);
    }

    #[test]
    fn setters_move_optional_fields() {
        let mut buf = vec![0xa5; 16];
        let mut p = GrePacket::new_unchecked(&mut buf[..]);
        p.set_flags(0);
        p.set_checksum_present(true);
        p.set_key_present(true);
        p.set_sequence_present(true);
        p.set_protocol(GreProtocol::Unknown(0x1234));
        p.set_checksum(0x1111);
        p.set_reserved1(0x2222);
        p.set_key(0x3333_3333);
        p.set_sequence(0x4444_4444);
        p.set_version(0);
        assert_eq!(
            buf,
            [
                0xb0, 0x00, 0x12, 0x34, 0x11, 0x11, 0x22, 0x22, 0x33, 0x33, 0x33, 0x33, 0x44, 0x44,
                0x44, 0x44
            ]
        );
        let mut p = GrePacket::new_unchecked(&mut buf[..]);
        p.set_checksum_present(false);
        p.set_version(2);
        assert_eq!(p.version(), 2);
        // Without C the key is read from offset 4.
        assert_eq!(p.key(), Some(0x1111_2222));
        assert_eq!(p.sequence(), Some(0x3333_3333));
        assert_eq!(p.header_len(), 12);
    }

    #[test]
    fn wccp_constant_is_plain_header() {
        let mut buf = vec![0xa5; 4];
        GreRepr::WCCP.emit(&mut GrePacket::new_unchecked(&mut buf[..]));
        assert_eq!(buf, PLAIN);
        assert_eq!(GreRepr::WCCP.buffer_len(), GRE_BASE_HEADER_LEN);
    }
}
