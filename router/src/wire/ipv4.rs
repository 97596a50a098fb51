//! IPv4 headers (RFC 791) as a checked view over bytes.

use super::checksum;
use super::{be16, put16};
use std::net::Ipv4Addr;

/// Byte offsets of the IPv4 header.
pub mod field {
    /// Version (high nibble) and IHL (low nibble).
    pub const VER_IHL: usize = 0;
    /// DSCP/ECN.
    pub const TOS: usize = 1;
    /// Total length.
    pub const LENGTH: usize = 2;
    /// Identification.
    pub const IDENT: usize = 4;
    /// Flags and fragment offset.
    pub const FLAGS_FRAG: usize = 6;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol.
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: usize = 10;
    /// Source address.
    pub const SRC: usize = 12;
    /// Destination address.
    pub const DST: usize = 16;
}

/// Minimum header length.
pub const MIN_HEADER_LEN: usize = 20;
/// Protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// Protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// Protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// Protocol number of GRE.
pub const PROTO_GRE: u8 = 47;
/// Protocol number of IGMP.
pub const PROTO_IGMP: u8 = netwire::igmp::PROTO_IGMP;
/// The Don't Fragment flag in the flags/offset word.
pub const FLAG_DF: u16 = 0x4000;
/// The More Fragments flag in the flags/offset word.
pub const FLAG_MF: u16 = 0x2000;

/// Why an IPv4 header was rejected; each maps to one drop reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Error {
    /// Fewer than 20 bytes.
    Truncated,
    /// Version is not 4.
    BadVersion(u8),
    /// IHL below 5 or beyond the available bytes.
    BadHeaderLength(u8),
    /// Total length below the header length or beyond the frame.
    BadTotalLength(u16),
    /// Header checksum does not verify.
    BadChecksum,
}

/// Validates the header at the start of `p` (version, IHL, total length, checksum).
///
/// Returns the total length from the header; bytes beyond it (Ethernet padding) are not part of
/// the packet.
#[inline]
pub fn check(p: &[u8]) -> Result<usize, Ipv4Error> {
    // The fixed 20 bytes as an array: one length test, no per-field bounds checks.
    let Some(h) = p.first_chunk::<MIN_HEADER_LEN>() else {
        return Err(Ipv4Error::Truncated);
    };
    let version = h[field::VER_IHL] >> 4;
    if version != 4 {
        return Err(Ipv4Error::BadVersion(version));
    }
    let ihl = h[field::VER_IHL] & 0x0f;
    let hlen = ihl as usize * 4;
    if ihl < 5 || hlen > p.len() {
        return Err(Ipv4Error::BadHeaderLength(ihl));
    }
    let total = u16::from_be_bytes([h[field::LENGTH], h[field::LENGTH + 1]]);
    if (total as usize) < hlen || total as usize > p.len() {
        return Err(Ipv4Error::BadTotalLength(total));
    }
    let valid = if hlen == MIN_HEADER_LEN {
        header_sum_20(h) == 0xffff
    } else {
        p.get(..hlen)
            .is_some_and(|header| checksum::checksum(header) == 0)
    };
    if !valid {
        return Err(Ipv4Error::BadChecksum);
    }
    Ok(total as usize)
}

/// The folded one's-complement sum of a 20-byte header (0xffff when its checksum is right):
/// five 32-bit words, unrolled, since nearly every datagram has no options.
#[inline(always)]
fn header_sum_20(h: &[u8; MIN_HEADER_LEN]) -> u16 {
    let w = |i: usize| u64::from(u32::from_be_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]));
    checksum::fold(w(0) + w(4) + w(8) + w(12) + w(16))
}

/// Header length in bytes of a checked header.
pub fn header_len(p: &[u8]) -> usize {
    // An empty slice reads as IHL 0 rather than panicking (callers check first anyway).
    p.first().map_or(0, |b| (b & 0x0f) as usize * 4)
}

/// Total length field.
pub fn total_len(p: &[u8]) -> usize {
    be16(p, field::LENGTH) as usize
}

/// Source address.
#[inline]
pub fn src(p: &[u8]) -> Ipv4Addr {
    addr_at(p, field::SRC)
}

/// Destination address.
#[inline]
pub fn dst(p: &[u8]) -> Ipv4Addr {
    addr_at(p, field::DST)
}

/// The address at `at` (panics past the end, like indexing): one bounds check for 4 bytes.
#[inline(always)]
fn addr_at(p: &[u8], at: usize) -> Ipv4Addr {
    let b = &p[at..at + 4];
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// Protocol field.
pub fn protocol(p: &[u8]) -> u8 {
    p[field::PROTOCOL]
}

/// Identification field.
pub fn ident(p: &[u8]) -> u16 {
    be16(p, field::IDENT)
}

/// Time to live.
pub fn ttl(p: &[u8]) -> u8 {
    p[field::TTL]
}

/// Flags and fragment offset word.
pub fn flags_frag(p: &[u8]) -> u16 {
    be16(p, field::FLAGS_FRAG)
}

/// True when this is a fragment other than the first (offset ≠ 0).
pub fn is_later_fragment(p: &[u8]) -> bool {
    flags_frag(p) & 0x1fff != 0
}

/// True when the packet is any fragment (MF set or offset ≠ 0).
pub fn is_fragment(p: &[u8]) -> bool {
    flags_frag(p) & (FLAG_MF | 0x1fff) != 0
}

/// Decrements TTL by one and patches the checksum incrementally (RFC 1624); TTL must be ≥ 1.
#[inline]
pub fn decrement_ttl(p: &mut [u8]) {
    p[field::TTL] -= 1;
    // RFC 1624 eqn. 3 with m' = m - 0x0100 (TTL is the high byte of its word): ~m + m' is
    // the constant 0xfeff in one's complement, so HC' = ~(~HC + 0xfeff), one fold.
    let sum = u32::from(!be16(p, field::CHECKSUM)) + 0xfeff;
    let sum = (sum & 0xffff) + (sum >> 16);
    put16(p, field::CHECKSUM, !(sum as u16));
}

/// Recomputes the header checksum of a header of `hlen` bytes.
pub fn fill_checksum(p: &mut [u8], hlen: usize) {
    put16(p, field::CHECKSUM, 0);
    let c = checksum::checksum(&p[..hlen]);
    put16(p, field::CHECKSUM, c);
}

/// Fields of a header without options that swrouter originates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Protocol.
    pub protocol: u8,
    /// Payload length (total length minus 20).
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
    /// Identification.
    pub ident: u16,
    /// DSCP/ECN byte.
    pub tos: u8,
    /// Set the Don't Fragment flag.
    pub dont_fragment: bool,
}

impl Ipv4Repr {
    /// Writes a 20-byte header with a valid checksum into `p`.
    pub fn emit(&self, p: &mut [u8]) {
        p[field::VER_IHL] = 0x45;
        p[field::TOS] = self.tos;
        put16(p, field::LENGTH, (MIN_HEADER_LEN + self.payload_len) as u16);
        put16(p, field::IDENT, self.ident);
        put16(
            p,
            field::FLAGS_FRAG,
            if self.dont_fragment { FLAG_DF } else { 0 },
        );
        p[field::TTL] = self.ttl;
        p[field::PROTOCOL] = self.protocol;
        p[field::SRC..field::SRC + 4].copy_from_slice(&self.src.octets());
        p[field::DST..field::DST + 4].copy_from_slice(&self.dst.octets());
        fill_checksum(p, MIN_HEADER_LEN);
    }
}

/// Identification for datagrams the router originates (one counter per process).
pub fn next_ident() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static IDENT: AtomicU16 = AtomicU16::new(1);
    IDENT.fetch_add(1, Ordering::Relaxed)
}

/// Source and destination ports of a TCP or UDP header at `l4`, if present.
pub fn ports(l4: &[u8]) -> Option<(u16, u16)> {
    if l4.len() < 4 {
        return None;
    }
    Some((be16(l4, 0), be16(l4, 2)))
}

/// Addresses that must never appear as a source (RFC 1812 §5.3.7 martians).
pub fn is_martian_source(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 0 || o[0] == 127 || o[0] >= 224
}

/// Destinations a router never forwards: this-network, loopback, class E and limited broadcast.
pub fn is_martian_destination(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 0 || o[0] == 127 || o[0] >= 240
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ICMP echo request 10.0.1.2 → 10.0.2.2, TTL 64, checksum valid.
    fn sample() -> Vec<u8> {
        let mut p = vec![0u8; 28];
        Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 1, 2),
            dst: Ipv4Addr::new(10, 0, 2, 2),
            protocol: PROTO_ICMP,
            payload_len: 8,
            ttl: 64,
            ident: 0x1234,
            tos: 0,
            dont_fragment: true,
        }
        .emit(&mut p);
        p
    }

    #[test]
    fn emitted_header_checks() {
        let p = sample();
        assert_eq!(check(&p), Ok(28));
        assert_eq!(&p[..4], &[0x45, 0x00, 0x00, 0x1c]);
        assert_eq!(src(&p), Ipv4Addr::new(10, 0, 1, 2));
        assert_eq!(flags_frag(&p), FLAG_DF);
    }

    #[test]
    fn header_len_of_an_empty_slice_is_zero() {
        assert_eq!(header_len(&[]), 0);
        assert_eq!(header_len(&[0x46]), 24);
    }

    #[test]
    fn each_defect_has_its_error() {
        let good = sample();
        let mut p = good.clone();
        p[0] = 0x65;
        assert_eq!(check(&p), Err(Ipv4Error::BadVersion(6)));
        let mut p = good.clone();
        p[0] = 0x44;
        assert_eq!(check(&p), Err(Ipv4Error::BadHeaderLength(4)));
        let mut p = good.clone();
        p[0] = 0x4f;
        assert_eq!(check(&p), Err(Ipv4Error::BadHeaderLength(15)));
        let mut p = good.clone();
        p[3] = 200;
        assert_eq!(check(&p), Err(Ipv4Error::BadTotalLength(200)));
        let mut p = good.clone();
        p[3] = 10;
        assert_eq!(check(&p), Err(Ipv4Error::BadTotalLength(10)));
        let mut p = good;
        p[10] ^= 0xff;
        assert_eq!(check(&p), Err(Ipv4Error::BadChecksum));
    }

    #[test]
    fn every_prefix_fails() {
        let p = sample();
        for n in 0..p.len() {
            assert!(check(&p[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn ttl_decrement_keeps_checksum_valid() {
        let mut p = sample();
        decrement_ttl(&mut p);
        assert_eq!(ttl(&p), 63);
        assert_eq!(check(&p), Ok(28));
    }

    #[test]
    fn martians() {
        assert!(is_martian_source(Ipv4Addr::new(127, 0, 0, 1)));
        assert!(is_martian_source(Ipv4Addr::new(0, 1, 2, 3)));
        assert!(is_martian_source(Ipv4Addr::new(224, 0, 0, 5)));
        assert!(!is_martian_source(Ipv4Addr::new(10, 0, 0, 1)));
        assert!(is_martian_destination(Ipv4Addr::BROADCAST));
        assert!(!is_martian_destination(Ipv4Addr::new(192, 0, 2, 1)));
    }

    proptest::proptest! {
        #[test]
        fn check_never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let _ = check(&data);
        }

        /// The unrolled 20-byte checksum test agrees with the generic sum on any header.
        #[test]
        fn fast_header_checksum_agrees(mut h in proptest::array::uniform20(proptest::num::u8::ANY), fix in proptest::bool::ANY) {
            if fix {
                fill_checksum(&mut h, MIN_HEADER_LEN);
            }
            proptest::prop_assert_eq!(header_sum_20(&h) == 0xffff, checksum::checksum(&h) == 0);
        }

        /// The constant-folded TTL update gives the same header as a full recomputation, for
        /// every TTL and header.
        #[test]
        fn ttl_decrement_matches_recompute(mut h in proptest::array::uniform20(proptest::num::u8::ANY), ttl_value in 1u8..=255) {
            h[field::TTL] = ttl_value;
            fill_checksum(&mut h, MIN_HEADER_LEN);
            let mut fast = h;
            decrement_ttl(&mut fast);
            let mut slow = h;
            slow[field::TTL] -= 1;
            fill_checksum(&mut slow, MIN_HEADER_LEN);
            proptest::prop_assert_eq!(fast, slow);
            proptest::prop_assert_eq!(checksum::checksum(&fast), 0);
        }
    }
}
