//! The 8-octet message header (reference §2).

use super::codec::{self, PResult};
use crate::error::Error;

/// Octets in the message header; the header's Length counts the octets after it.
pub const HEADER_LEN: usize = 8;
/// Version 2.00, the only version Squid and ATS speak (reference §2).
pub const VERSION_2_00: u16 = 0x0200;
/// Version 2.01 (\[R1\]: u8 major 2, u8 minor 1), needed for the Address Table and alt-mask.
pub const VERSION_2_01: u16 = 0x0201;

/// Field offsets inside the header (smoltcp style: named once).
mod field {
    /// u32 message type.
    pub(super) const TYPE: core::ops::Range<usize> = 0..4;
    /// u16 version.
    pub(super) const VERSION: core::ops::Range<usize> = 4..6;
}

wire_enum! {
    /// Message type (reference §2; WCCPv1 used 7/8/9, which this crate does not decode).
    pub enum MessageType: u32 {
        /// WCCP2_HERE_I_AM: cache → router, periodic.
        HereIAm = 10 => "HERE_I_AM",
        /// WCCP2_I_SEE_YOU: router → cache, the reply.
        ISeeYou = 11 => "I_SEE_YOU",
        /// WCCP2_REDIRECT_ASSIGN: designated cache → routers.
        RedirectAssign = 12 => "REDIRECT_ASSIGN",
        /// WCCP2_REMOVAL_QUERY: router → silent cache.
        RemovalQuery = 13 => "REMOVAL_QUERY",
    }
}

/// The decoded header: type, version, and Length (octets after the header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type.
    pub kind: MessageType,
    /// Raw version (0x0200 or 0x0201; any 0x02xx is accepted per \[R1\]).
    pub version: u16,
    /// Octets after this header (the sum of all components).
    pub length: u16,
}

impl Header {
    /// Decodes a header from the start of `buf`, checking only the major version.
    pub fn decode(buf: &[u8]) -> Result<Self, Error> {
        codec::finish(buf, Self::parse(buf)).map(|(_, h)| h)
    }

    /// nom parser for the header.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (rest, kind) = codec::u32(i)?;
        let (rest, version) = codec::u16(rest)?;
        let (rest, length) = codec::u16(rest)?;
        // Reference §2: ignore a wrong *major* version; [R1] keeps going on an unknown minor.
        if version >> 8 != VERSION_2_00 >> 8 {
            return codec::fail(i, Error::UnsupportedVersion(version));
        }
        Ok((
            rest,
            Self {
                kind: MessageType::from(kind),
                version,
                length,
            },
        ))
    }

    /// The 8 header octets.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[..4].copy_from_slice(&u32::from(self.kind).to_be_bytes());
        out[4..6].copy_from_slice(&self.version.to_be_bytes());
        out[6..].copy_from_slice(&self.length.to_be_bytes());
        out
    }

    /// Reads the message type of a datagram without validating anything else.
    pub fn peek_type(buf: &[u8]) -> Option<MessageType> {
        let raw: [u8; 4] = buf.get(field::TYPE)?.try_into().ok()?;
        Some(MessageType::from(u32::from_be_bytes(raw)))
    }

    /// Reads the version field of a datagram without validating anything else.
    pub fn peek_version(buf: &[u8]) -> Option<u16> {
        let raw: [u8; 2] = buf.get(field::VERSION)?.try_into().ok()?;
        Some(u16::from_be_bytes(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_here_i_am_header() {
        // Squid HERE_I_AM, hash, MD5 (reference §10): type 10, v2.00, Length 152.
        let buf = [0x00, 0x00, 0x00, 0x0a, 0x02, 0x00, 0x00, 0x98];
        let h = Header::decode(&buf).unwrap();
        assert_eq!(
            h,
            Header {
                kind: MessageType::HereIAm,
                version: VERSION_2_00,
                length: 152
            }
        );
        assert_eq!(h.to_bytes(), buf);
    }

    #[test]
    fn rejects_other_major_versions_and_keeps_unknown_types() {
        let v1 = [0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x04];
        assert_eq!(Header::decode(&v1), Err(Error::UnsupportedVersion(0x0000)));
        let odd = [0x00, 0x00, 0x00, 0x2a, 0x02, 0x07, 0x00, 0x00];
        let h = Header::decode(&odd).unwrap();
        assert_eq!(h.kind, MessageType::Unknown(42));
        assert_eq!(h.version, 0x0207);
        assert_eq!(Header::peek_type(&odd), Some(MessageType::Unknown(42)));
        assert_eq!(Header::peek_version(&odd[..5]), None);
    }

    #[test]
    fn every_prefix_fails_cleanly() {
        let buf = [0x00, 0x00, 0x00, 0x0b, 0x02, 0x01, 0x00, 0x00];
        for n in 0..buf.len() {
            assert!(matches!(
                Header::decode(&buf[..n]),
                Err(Error::Truncated { .. })
            ));
        }
    }
}
