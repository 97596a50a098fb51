//! Zero-copy wire views of the IPv4, ICMP, UDP and TCP headers that swrouter parses and builds,
//! the IGMP a host member speaks, and the Internet checksum they share.
//!
//! The router, the GRE crate and the steering crate all build and take apart these headers; this
//! crate is the one place their layout, their checksums and their corner cases live.
//!
//! # Contract
//!
//! - **Sans-IO.** No sockets, no clock, no threads, no `unsafe`: bytes in, values out.
//! - **No panic on any input through a checked constructor.** `new_checked` validates every
//!   length the accessors rely on, so each accessor of a checked view stays in bounds. As in
//!   smoltcp, `new_unchecked` views, setters that change a length field and `Repr::emit` trust
//!   the caller's buffer, and index without checking.
//! - **Views and reprs.** `XxxPacket<T: AsRef<[u8]>>` reads fields in place (and writes them when
//!   `T: AsMut<[u8]>`); `XxxRepr` is the decoded header, with `parse` from a view and `emit` into
//!   one.
//! - **Checksums are the caller's call.** `Repr::parse` does not verify them, because offloaded
//!   packets carry partial checksums; each view has `verify_checksum` (or `verify`).
#![forbid(unsafe_code)]

pub mod checksum;
pub mod ethernet;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod icmp;
pub mod igmp;
pub mod ipv4;
pub mod tcp;
pub mod udp;

pub use ethernet::MacAddr;
pub use icmp::{Icmpv4Packet, Icmpv4Repr};
pub use ipv4::Ipv4Packet;
pub use tcp::{TcpPacket, TcpRepr};
pub use udp::{UdpPacket, UdpRepr};

/// Why a buffer could not be taken as a header, or a header not decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The buffer ends before the header (or a region it announces) does.
    #[error("truncated: {need} octets needed, {have} present")]
    Truncated {
        /// Octets the header or region needs.
        need: usize,
        /// Octets the buffer holds.
        have: usize,
    },
    /// The IPv4 version nibble is not 4.
    #[error("IP version {0}, not 4")]
    BadVersion(u8),
    /// A header-length field (IPv4 IHL, TCP data offset) is below the minimum or past the buffer.
    #[error("header length {0} is below the minimum or past the buffer")]
    BadHeaderLen(usize),
    /// A total-length field (IPv4 total length, UDP length) is below the header or past the buffer.
    #[error("length field {0} is below the header length or past the buffer")]
    BadLength(usize),
    /// An ICMP error quotes a packet of a protocol without ports.
    #[error("the quoted packet is protocol {0}, which has no ports")]
    NoPorts(u8),
    /// The ICMP type and code are not ones this operation understands.
    #[error("ICMP type {msg_type} code {code} not understood here")]
    Unrecognized {
        /// The ICMP type.
        msg_type: u8,
        /// The ICMP code.
        code: u8,
    },
}

/// The result of decoding a header.
pub type Result<T> = core::result::Result<T, Error>;

/// Reads a big-endian u16 at `at`; the caller has checked the length.
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads a big-endian u32 at `at`; the caller has checked the length.
#[inline]
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Writes a big-endian u16 at `at`; the caller has checked the length.
#[inline]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Writes a big-endian u32 at `at`; the caller has checked the length.
#[inline]
pub(crate) fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Overwrites `b[at..at + new.len()]` with `new` and patches the checksum stored at `check_at`
/// (RFC 1624), widening the region to 16-bit word boundaries so a field at an odd offset (an MSS
/// option after a single NOP) is summed as the words it actually straddles.
pub(crate) fn patch_region(b: &mut [u8], check_at: usize, at: usize, new: &[u8]) {
    let start = at & !1;
    let end = (at + new.len() + 1) & !1;
    let mut old_words = [0u8; 8];
    let mut new_words = [0u8; 8];
    let n = end - start;
    // A region ending at an odd buffer end sums its last octet against an implicit zero pad, as
    // the full checksum does; the arrays start zeroed for that. Patched fields are at most 4
    // octets, so the widened region fits in 8.
    let real = end.min(b.len());
    old_words[..real - start].copy_from_slice(&b[start..real]);
    b[at..at + new.len()].copy_from_slice(new);
    new_words[..real - start].copy_from_slice(&b[start..real]);
    let check = checksum::update_bytes(be16(b, check_at), &old_words[..n], &new_words[..n]);
    put16(b, check_at, check);
}
