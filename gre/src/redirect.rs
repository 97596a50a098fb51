//! The 4-octet WCCPv2 redirect header that follows a GRE header of protocol 0x883E
//! (draft-wilson-wrec-wccp-v2 GRE packet redirection, as summarised in reference §8).
//!
//! # Flag bit positions
//!
//! The drafts draw the flags as `|D|A|(U)|reserved|` at the top of the word, which reads as
//! D = 0x80, A = 0x40, U = 0x20. We use the low bits instead, D = 0x01, A = 0x02, U = 0x04, because
//! that is what Wireshark decodes and what the reference recommends, and because of how receivers
//! find the header at all: Linux (`ip_gre`), the BSDs and tcpdump take a 0x883E payload whose first
//! nibble is 4 for a bare IPv4 packet (no redirect header). Under the 0x80/0x40 reading an
//! "alternate bucket used" header alone would be 0x40 and be mistaken for IPv4; with the low-bit
//! encoding the first nibble of a header we emit is 0 unless unknown high bits are set.
//!
//! Bits outside D, A and U are kept as found ([`WccpRedirectRepr::unknown_flags`]), so a header
//! written with the drafts' high-bit drawing (like frame 2 of the synthetic capture, `0xC0`) decodes
//! as "D and A not set" exactly as Wireshark shows it, and still re-encodes byte for byte.

use crate::error::Error;

/// Length of the redirect header.
pub const REDIRECT_HEADER_LEN: usize = 4;

/// Offsets of the redirect header's octets, named once (reference §8 table).
mod field {
    /// Flags: D, A, U and reserved bits.
    pub const FLAGS: usize = 0;
    /// Service ID of the service group that redirected the packet.
    pub const SERVICE_ID: usize = 1;
    /// Alternate bucket index (hash assignment only).
    pub const ALTERNATE_BUCKET: usize = 2;
    /// Primary bucket index (hash assignment only).
    pub const PRIMARY_BUCKET: usize = 3;
}

/// Bits of the flags octet (low-bit encoding, see the module docs).
pub mod flag {
    /// D: the service is a dynamic one (service id 51–255 style), not a well-known one.
    pub const DYNAMIC: u8 = 0x01;
    /// A: the packet went to the alternate bucket's cache, not the primary one.
    pub const ALTERNATE_USED: u8 = 0x02;
    /// U (draft-mclaggan-wccp-v2rev1): the header's contents are unavailable (e.g. a GRE return).
    pub const UNAVAILABLE: u8 = 0x04;
    /// Every bit this crate gives a meaning to; the rest are kept as unknown.
    pub const KNOWN: u8 = DYNAMIC | ALTERNATE_USED | UNAVAILABLE;
}

/// Whether a 0x883E GRE payload starting with `first_octet` carries a redirect header.
///
/// Linux's rule (`ip_gre`, also the BSDs, tcpdump and Wireshark): if the first nibble is 4 the
/// payload is a bare IPv4 packet, as sent by caches that return GRE without a redirect header;
/// otherwise a 4-octet redirect header comes first.
pub const fn is_redirect_header_present(first_octet: u8) -> bool {
    first_octet >> 4 != 4
}

/// A zero-copy view over a redirect header followed by the original packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WccpRedirectHeader<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> WccpRedirectHeader<T> {
    /// Wraps a buffer without checking its length; accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        WccpRedirectHeader { buffer }
    }

    /// Wraps a buffer after checking it holds the 4-octet header.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let header = Self::new_unchecked(buffer);
        header.check_len()?;
        Ok(header)
    }

    /// Checks that the buffer holds the 4-octet header.
    pub fn check_len(&self) -> Result<(), Error> {
        let have = self.buffer.as_ref().len();
        if have < REDIRECT_HEADER_LEN {
            return Err(Error::Truncated {
                need: REDIRECT_HEADER_LEN,
                have,
                at: 0,
            });
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The raw flags octet, unknown bits included.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// D: the service is dynamic.
    pub fn dynamic(&self) -> bool {
        self.flags() & flag::DYNAMIC != 0
    }

    /// A: the alternate bucket was used.
    pub fn alternate_used(&self) -> bool {
        self.flags() & flag::ALTERNATE_USED != 0
    }

    /// U: the header's contents are unavailable.
    pub fn unavailable(&self) -> bool {
        self.flags() & flag::UNAVAILABLE != 0
    }

    /// The flag bits this crate gives no meaning to, in place.
    pub fn unknown_flags(&self) -> u8 {
        self.flags() & !flag::KNOWN
    }

    /// The Service ID.
    pub fn service_id(&self) -> u8 {
        self.buffer.as_ref()[field::SERVICE_ID]
    }

    /// The alternate bucket index.
    pub fn alternate_bucket(&self) -> u8 {
        self.buffer.as_ref()[field::ALTERNATE_BUCKET]
    }

    /// The primary bucket index.
    pub fn primary_bucket(&self) -> u8 {
        self.buffer.as_ref()[field::PRIMARY_BUCKET]
    }

    /// The original packet after the header.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[REDIRECT_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> WccpRedirectHeader<T> {
    /// Sets the raw flags octet.
    pub fn set_flags(&mut self, value: u8) {
        self.buffer.as_mut()[field::FLAGS] = value;
    }

    /// Sets the Service ID.
    pub fn set_service_id(&mut self, value: u8) {
        self.buffer.as_mut()[field::SERVICE_ID] = value;
    }

    /// Sets the alternate bucket index.
    pub fn set_alternate_bucket(&mut self, value: u8) {
        self.buffer.as_mut()[field::ALTERNATE_BUCKET] = value;
    }

    /// Sets the primary bucket index.
    pub fn set_primary_bucket(&mut self, value: u8) {
        self.buffer.as_mut()[field::PRIMARY_BUCKET] = value;
    }

    /// The original packet after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[REDIRECT_HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for WccpRedirectHeader<T> {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref()
    }
}

/// A decoded redirect header. `Default` is well-known service 0, primary bucket 0, no flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct WccpRedirectRepr {
    /// D: the service is dynamic.
    pub dynamic: bool,
    /// A: the alternate bucket was used.
    pub alternate_used: bool,
    /// U (draft-mclaggan-wccp-v2rev1): the header's contents are unavailable.
    pub unavailable: bool,
    /// Service ID of the redirecting service group.
    pub service_id: u8,
    /// Alternate bucket index (0 for mask assignment, and when the primary bucket was used).
    pub alternate_bucket: u8,
    /// Primary bucket index (0 for mask assignment).
    pub primary_bucket: u8,
    /// Flag bits outside D, A and U, in place (0x08–0x80); kept so re-encoding is lossless.
    /// Bits inside [`flag::KNOWN`] are ignored here.
    pub unknown_flags: u8,
}

impl WccpRedirectRepr {
    /// Decodes a redirect header; fails only if the buffer is shorter than 4 octets.
    pub fn parse<T: AsRef<[u8]>>(header: &WccpRedirectHeader<T>) -> Result<Self, Error> {
        header.check_len()?;
        Ok(WccpRedirectRepr {
            dynamic: header.dynamic(),
            alternate_used: header.alternate_used(),
            unavailable: header.unavailable(),
            service_id: header.service_id(),
            alternate_bucket: header.alternate_bucket(),
            primary_bucket: header.primary_bucket(),
            unknown_flags: header.unknown_flags(),
        })
    }

    /// Length of the header this repr emits (always 4).
    pub const fn buffer_len(&self) -> usize {
        REDIRECT_HEADER_LEN
    }

    /// The flags octet this repr emits: D, A, U in the low bits plus the unknown bits.
    pub const fn flags_octet(&self) -> u8 {
        let mut flags = self.unknown_flags & !flag::KNOWN;
        if self.dynamic {
            flags |= flag::DYNAMIC;
        }
        if self.alternate_used {
            flags |= flag::ALTERNATE_USED;
        }
        if self.unavailable {
            flags |= flag::UNAVAILABLE;
        }
        flags
    }

    /// Writes the header into the front of `header`, whose buffer must hold 4 octets.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, header: &mut WccpRedirectHeader<T>) {
        header.set_flags(self.flags_octet());
        header.set_service_id(self.service_id);
        header.set_alternate_bucket(self.alternate_bucket);
        header.set_primary_bucket(self.primary_bucket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference §8 example: service 0, alternate used, alternate 36, primary 200.
    const REFERENCE_EXAMPLE: [u8; 4] = [
        0x02, // flags: A (0x02)
        0x00, // service id 0 (HTTP)
        0x24, // alternate bucket 36
        0xc8, // primary bucket 200
    ];

    /// Synthetic capture frame 1: well-known service 0, primary bucket 42.
    const FRAME1: [u8; 4] = [
        0x00, // flags: none
        0x00, // service id 0
        0x00, // alternate bucket 0
        0x2a, // primary bucket 42
    ];

    /// Synthetic capture frame 2: 0xC0 is D and A in the drafts' drawing, neither in ours.
    const FRAME2: [u8; 4] = [
        0xc0, // flags: unknown bits 0x80 | 0x40; D, A, U clear
        0x5a, // service id 90
        0x11, // alternate bucket 17
        0x2a, // primary bucket 42
    ];

    fn check(bytes: [u8; 4], expected: WccpRedirectRepr) {
        let h = WccpRedirectHeader::new_checked(&bytes[..]).unwrap();
        assert_eq!(WccpRedirectRepr::parse(&h), Ok(expected));
        let mut buf = vec![0xa5; 4];
        expected.emit(&mut WccpRedirectHeader::new_unchecked(&mut buf[..]));
        assert_eq!(buf, bytes);
    }

    #[test]
    fn reference_example() {
        check(
            REFERENCE_EXAMPLE,
            WccpRedirectRepr {
                alternate_used: true,
                alternate_bucket: 36,
                primary_bucket: 200,
                ..Default::default()
            },
        );
    }

    #[test]
    fn synthetic_frame1() {
        check(
            FRAME1,
            WccpRedirectRepr {
                primary_bucket: 42,
                ..Default::default()
            },
        );
    }

    #[test]
    fn synthetic_frame2_high_bits_kept_not_read_as_flags() {
        let h = WccpRedirectHeader::new_checked(&FRAME2[..]).unwrap();
        assert!(!h.dynamic() && !h.alternate_used() && !h.unavailable());
        assert_eq!(h.flags(), 0xc0);
        assert_eq!(h.unknown_flags(), 0xc0);
        check(
            FRAME2,
            WccpRedirectRepr {
                service_id: 90,
                alternate_bucket: 17,
                primary_bucket: 42,
                unknown_flags: 0xc0,
                ..Default::default()
            },
        );
    }

    #[test]
    fn each_flag() {
        for (octet, d, a, u) in [
            (0x01, true, false, false),
            (0x02, false, true, false),
            (0x04, false, false, true),
            (0x07, true, true, true),
        ] {
            let bytes = [octet, 0x01, 0x02, 0x03];
            check(
                bytes,
                WccpRedirectRepr {
                    dynamic: d,
                    alternate_used: a,
                    unavailable: u,
                    service_id: 1,
                    alternate_bucket: 2,
                    primary_bucket: 3,
                    unknown_flags: 0,
                },
            );
        }
    }

    #[test]
    fn known_bits_in_unknown_flags_are_ignored() {
        let r = WccpRedirectRepr {
            unknown_flags: 0xff,
            ..Default::default()
        };
        assert_eq!(r.flags_octet(), 0xf8);
    }

    #[test]
    fn every_strict_prefix_fails() {
        for bytes in [REFERENCE_EXAMPLE, FRAME1, FRAME2] {
            for cut in 0..bytes.len() {
                assert_eq!(
                    WccpRedirectHeader::new_checked(&bytes[..cut]).unwrap_err(),
                    Error::Truncated {
                        need: 4,
                        have: cut,
                        at: 0
                    }
                );
                let h = WccpRedirectHeader::new_unchecked(&bytes[..cut]);
                assert!(WccpRedirectRepr::parse(&h).is_err());
            }
        }
    }

    #[test]
    fn payload_follows_header() {
        let bytes = [0x00, 0x00, 0x00, 0x2a, 0x45, 0x00];
        let mut buf = bytes;
        let mut h = WccpRedirectHeader::new_checked(&mut buf[..]).unwrap();
        assert_eq!(h.payload(), &[0x45, 0x00]);
        h.payload_mut()[1] = 0x10;
        assert_eq!(h.into_inner(), &[0x00, 0x00, 0x00, 0x2a, 0x45, 0x10]);
    }

    #[test]
    fn redirect_header_presence_rule() {
        // First nibble 4: a bare IPv4 header (0x45 = version 4, IHL 5).
        assert!(!is_redirect_header_present(0x45));
        assert!(!is_redirect_header_present(0x40));
        assert!(!is_redirect_header_present(0x4f));
        // Anything else: a redirect header. 0x02 (A), 0xc0 (frame 2), 0x60 (IPv6 is not special).
        for octet in [0x00, 0x02, 0x07, 0x3f, 0x50, 0x60, 0xc0, 0xff] {
            assert!(is_redirect_header_present(octet), "{octet:02x}");
        }
    }
}
