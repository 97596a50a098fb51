//! The one error type of this crate: every decode or encode failure, with the offending numbers.

/// Why a GRE or redirect header could not be decoded, or a packet could not be encapsulated.
///
/// Each variant carries the values a drop counter or a log line needs; the router maps each
/// variant to exactly one drop reason (ARCHITECTURE §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer ends before a field does.
    #[error("the packet is truncated at offset {at}: the next field needs {need} octets but only {have} remain")]
    Truncated {
        /// Octets the field needs, counted from `at`.
        need: usize,
        /// Octets actually available from `at`.
        have: usize,
        /// Offset of the field, from the start of the buffer handed to the decoder.
        at: usize,
    },

    /// The GRE Version field is not 0 (RFC 2784 §2.3.1; version 1 is PPTP's enhanced GRE).
    #[error("the GRE version is {0}, but only version 0 is supported")]
    UnsupportedVersion(u8),

    /// One of GRE flag bits 1, 4 or 5 is set; RFC 2784 §2.3 says to discard such a packet.
    #[error("the GRE header sets reserved flag bits 0x{0:04x}, so the packet is discarded (RFC 2784 §2.3)")]
    ReservedBitsSet(u16),

    /// The GRE checksum (RFC 2784 §2.5) does not match the header and payload.
    #[error(
        "the GRE checksum is 0x{found:04x}, but the header and payload sum to 0x{expected:04x}"
    )]
    ChecksumMismatch {
        /// Checksum computed over the header (checksum field taken as zero) and payload.
        expected: u16,
        /// Checksum found in the packet.
        found: u16,
    },

    /// There is not enough room in front of the inner packet for the GRE (+ redirect) header.
    #[error("the headroom is too small: the headers need {need} octets but only {have} are free")]
    HeadroomTooSmall {
        /// Octets of header to write.
        need: usize,
        /// Octets free in front of the inner packet.
        have: usize,
    },

    /// The output buffer cannot hold the headers plus the inner packet.
    #[error("the output buffer is too small: the packet needs {need} octets but only {have} fit")]
    BufferTooSmall {
        /// Octets of the whole encapsulated packet.
        need: usize,
        /// Length of the output buffer.
        have: usize,
    },

    /// The inner packet's range does not lie inside the buffer.
    #[error("the inner packet at offset {start} with length {len} does not fit in a buffer of {buf_len} octets")]
    InnerOutOfBounds {
        /// Offset of the inner packet.
        start: usize,
        /// Length of the inner packet.
        len: usize,
        /// Length of the whole buffer.
        buf_len: usize,
    },

    /// A redirect header was requested with a GRE protocol other than 0x883E.
    #[error("a WCCP redirect header may only follow GRE protocol 0x883e, not 0x{0:04x}")]
    RedirectWithoutWccpProtocol(u16),

    /// The redirect flags octet starts with nibble 4, which receivers take for an IPv4 header.
    #[error("the redirect header flags 0x{0:02x} start with nibble 4, so receivers would read the header as an IPv4 packet")]
    RedirectFlagsLookLikeIpv4(u8),

    /// A 0x883E payload without a redirect header must be an IPv4 packet, but this one is not.
    #[error("a GRE 0x883e payload without a redirect header must start with IPv4 nibble 4, but its first octet is 0x{0:02x}")]
    BareInnerNotIpv4(u8),
}
