//! The VRRPv3 advertisement for IPv4 (RFC 5798 §5, RFC 9568 §5) and the packets around it: the
//! IPv4 datagram, the Ethernet frame and the gratuitous ARP a new master sends.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! |                       IPv4 Address(es)                        |
//! ```

use std::net::Ipv4Addr;

use netwire::checksum;
use netwire::ipv4::{self, Ipv4Packet};
use netwire::MacAddr;

/// IP protocol number of VRRP (RFC 5798 §5.1.1.4).
pub const PROTOCOL: u8 = 112;
/// The only version this crate speaks.
pub const VERSION: u8 = 3;
/// The only packet type: ADVERTISEMENT (RFC 5798 §5.2.2).
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Octets before the address list.
pub const HEADER_LEN: usize = 8;
/// The IP TTL senders use and receivers require (RFC 5798 §5.1.1.3, §7.1).
pub const TTL: u8 = 255;
/// The destination of every IPv4 advertisement (RFC 5798 §5.1.1.2).
pub const MULTICAST_ADDR: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The Ethernet group address of 224.0.0.18 (RFC 1112 §6.4 mapping).
pub const MULTICAST_MAC: MacAddr = MacAddr([0x01, 0x00, 0x5e, 0x00, 0x00, 0x12]);
/// Largest Max Adver Int: the field has 12 bits of centiseconds (40.95 s).
pub const MAX_ADVER_INT: u16 = 0x0fff;
/// Most addresses one advertisement can carry (the count is one octet).
pub const MAX_ADDRS: usize = 255;
/// IP TOS of advertisements: DSCP CS6 (network control), as keepalived sends them.
pub const TOS: u8 = 0xc0;
/// Length of an Ethernet frame carrying a gratuitous ARP (no padding).
pub const ARP_FRAME_LEN: usize = 42;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_ARP: u16 = 0x0806;
const ETH_HEADER_LEN: usize = 14;

/// The virtual router MAC address 00-00-5E-00-01-{VRID} (RFC 5798 §7.3).
pub fn virtual_mac(vrid: u8) -> MacAddr {
    MacAddr([0x00, 0x00, 0x5e, 0x00, 0x01, vrid])
}

/// Which checksum an advertisement carries.
///
/// RFC 5798 §5.2.8 (and RFC 9568) cover the IPv4 pseudo-header; some peers (older keepalived
/// with `vrrp_checksum_compat`-style behaviour, some vendors) sum the VRRP message alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ChecksumMode {
    /// The RFC's: pseudo-header (source, destination, protocol 112, VRRP length) + message.
    #[default]
    PseudoHeader,
    /// The VRRPv2-style sum over the VRRP message only.
    NoPseudoHeader,
}

impl ChecksumMode {
    /// Short name for logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PseudoHeader => "pseudo-header",
            Self::NoPseudoHeader => "no-pseudo-header",
        }
    }
}

/// Why an advertisement (or the packet around it) was dropped on receipt; each variant is one
/// drop counter ([`RxErrors`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The Ethernet frame is not IPv4 (VLAN tags are the caller's to strip).
    #[error("ethertype {0:#06x} is not IPv4")]
    NotIpv4(u16),
    /// The IPv4 header is malformed (netwire's checked view refused it).
    #[error("bad IPv4 header: {0}")]
    BadIpv4Header(netwire::Error),
    /// The IPv4 header checksum does not verify.
    #[error("bad IPv4 header checksum")]
    BadIpv4Checksum,
    /// A fragment: advertisements are never fragmented, so this is not one.
    #[error("IPv4 fragment")]
    Fragment,
    /// The IP protocol is not 112.
    #[error("IP protocol {0} is not VRRP (112)")]
    NotVrrp(u8),
    /// The IP TTL is not 255, so the sender is off-link (RFC 5798 §7.1).
    #[error("IP TTL {0}, VRRP requires 255")]
    BadTtl(u8),
    /// The message ends before its header or its address list does.
    #[error("truncated: {need} octets needed, {have} present")]
    Truncated {
        /// Octets the header and the announced addresses need.
        need: usize,
        /// Octets present.
        have: usize,
    },
    /// The version nibble is not 3 (VRRPv2 and others are not spoken here).
    #[error("VRRP version {0}, expected 3")]
    BadVersion(u8),
    /// The type nibble is not 1 (ADVERTISEMENT).
    #[error("VRRP type {0}, expected 1 (advertisement)")]
    BadType(u8),
    /// The count is zero: an advertisement names at least one address.
    #[error("advertisement with no addresses")]
    NoAddresses,
    /// Octets follow the announced address list.
    #[error("{count} addresses announced but {len} octets of VRRP message")]
    LengthMismatch {
        /// Count IPvX Addr.
        count: u8,
        /// Length of the VRRP message.
        len: usize,
    },
    /// Max Adver Int is 0, which would make a backup take over at once.
    #[error("Max Adver Int is 0")]
    ZeroInterval,
    /// Neither the RFC checksum nor the compatible one verifies.
    #[error("bad VRRP checksum")]
    BadChecksum,
}

impl ParseError {
    /// Number of variants (size of [`RxErrors`]).
    pub const COUNT: usize = 13;
    /// Counter names, in [`ParseError::index`] order.
    pub const NAMES: [&'static str; Self::COUNT] = [
        "not-ipv4",
        "bad-ipv4-header",
        "bad-ipv4-checksum",
        "fragment",
        "not-vrrp",
        "bad-ttl",
        "truncated",
        "bad-version",
        "bad-type",
        "no-addresses",
        "length-mismatch",
        "zero-interval",
        "bad-checksum",
    ];

    /// Index of this error's counter.
    pub fn index(&self) -> usize {
        match self {
            Self::NotIpv4(_) => 0,
            Self::BadIpv4Header(_) => 1,
            Self::BadIpv4Checksum => 2,
            Self::Fragment => 3,
            Self::NotVrrp(_) => 4,
            Self::BadTtl(_) => 5,
            Self::Truncated { .. } => 6,
            Self::BadVersion(_) => 7,
            Self::BadType(_) => 8,
            Self::NoAddresses => 9,
            Self::LengthMismatch { .. } => 10,
            Self::ZeroInterval => 11,
            Self::BadChecksum => 12,
        }
    }

    /// The counter name of this error.
    pub fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

/// Receive-side drop counters, one per [`ParseError`] variant (an interface's, since the VRID
/// is not known until the message parses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RxErrors([u64; ParseError::COUNT]);

impl RxErrors {
    /// Counts one drop.
    pub fn count(&mut self, error: &ParseError) {
        self.0[error.index()] += 1;
    }

    /// The count of drops with this error's variant.
    pub fn get(&self, error: &ParseError) -> u64 {
        self.0[error.index()]
    }

    /// (name, count) for every reason, zeros included.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ParseError::NAMES
            .iter()
            .copied()
            .zip(self.0.iter().copied())
    }

    /// All drops.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// Why an [`Advert`] cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AdvertError {
    /// The address list is empty or longer than 255.
    #[error("{0} addresses: an advertisement carries 1 to 255")]
    AddressCount(usize),
    /// Max Adver Int outside 1..=4095 centiseconds.
    #[error("advertisement interval {0} cs is outside 1..=4095")]
    Interval(u16),
}

/// A decoded VRRPv3 IPv4 advertisement: only values that fit the wire (checked by
/// [`Advert::new`]), so emitting cannot fail.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Advert {
    vrid: u8,
    priority: u8,
    max_adver_int: u16,
    addrs: Vec<Ipv4Addr>,
}

impl Advert {
    /// An advertisement; `max_adver_int` in centiseconds (1..=4095), 1 to 255 addresses.
    pub fn new(
        vrid: u8,
        priority: u8,
        max_adver_int: u16,
        addrs: Vec<Ipv4Addr>,
    ) -> Result<Self, AdvertError> {
        if addrs.is_empty() || addrs.len() > MAX_ADDRS {
            return Err(AdvertError::AddressCount(addrs.len()));
        }
        if max_adver_int == 0 || max_adver_int > MAX_ADVER_INT {
            return Err(AdvertError::Interval(max_adver_int));
        }
        Ok(Self {
            vrid,
            priority,
            max_adver_int,
            addrs,
        })
    }

    /// Virtual Rtr ID (VRID).
    pub fn vrid(&self) -> u8 {
        self.vrid
    }

    /// The sender's priority: 255 address owner, 0 the master is leaving.
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// Max Adver Int in centiseconds.
    pub fn max_adver_int(&self) -> u16 {
        self.max_adver_int
    }

    /// The virtual addresses, in wire order.
    pub fn addrs(&self) -> &[Ipv4Addr] {
        &self.addrs
    }

    /// The same advertisement with another priority (priority 0 on shutdown).
    pub fn with_priority(&self, priority: u8) -> Self {
        Self {
            priority,
            ..self.clone()
        }
    }

    /// Length of the VRRP message.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + 4 * self.addrs.len()
    }

    /// Decodes and validates a VRRP message (the IPv4 payload) received from `src` to `dst`
    /// with IP TTL `ttl`, in the order of RFC 5798 §7.1; reports which checksum matched.
    pub fn parse(
        msg: &[u8],
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ttl: u8,
    ) -> Result<(Self, ChecksumMode), ParseError> {
        if ttl != TTL {
            return Err(ParseError::BadTtl(ttl));
        }
        if msg.len() < HEADER_LEN {
            return Err(ParseError::Truncated {
                need: HEADER_LEN,
                have: msg.len(),
            });
        }
        let (version, kind) = (msg[0] >> 4, msg[0] & 0x0f);
        if version != VERSION {
            return Err(ParseError::BadVersion(version));
        }
        if kind != TYPE_ADVERTISEMENT {
            return Err(ParseError::BadType(kind));
        }
        let count = msg[3];
        if count == 0 {
            return Err(ParseError::NoAddresses);
        }
        let need = HEADER_LEN + 4 * usize::from(count);
        if msg.len() < need {
            return Err(ParseError::Truncated {
                need,
                have: msg.len(),
            });
        }
        if msg.len() > need {
            return Err(ParseError::LengthMismatch {
                count,
                len: msg.len(),
            });
        }
        let mode = verify_checksum(msg, src, dst).ok_or(ParseError::BadChecksum)?;
        // The top four bits are reserved: zero on transmit, ignored on receipt (§5.2.6).
        let max_adver_int = u16::from_be_bytes([msg[4], msg[5]]) & MAX_ADVER_INT;
        if max_adver_int == 0 {
            return Err(ParseError::ZeroInterval);
        }
        let addrs = msg[HEADER_LEN..]
            .chunks_exact(4)
            .map(|a| Ipv4Addr::new(a[0], a[1], a[2], a[3]))
            .collect();
        Ok((
            Self {
                vrid: msg[1],
                priority: msg[2],
                max_adver_int,
                addrs,
            },
            mode,
        ))
    }

    /// Writes the VRRP message into the front of `buf` (at least [`Advert::buffer_len`]
    /// octets) with the checksum `mode` asks for; returns the length written.
    pub fn emit(&self, buf: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, mode: ChecksumMode) -> usize {
        let len = self.buffer_len();
        let msg = &mut buf[..len];
        msg[0] = (VERSION << 4) | TYPE_ADVERTISEMENT;
        msg[1] = self.vrid;
        msg[2] = self.priority;
        // Advert::new bounds the list to 255.
        msg[3] = self.addrs.len() as u8;
        msg[4..6].copy_from_slice(&self.max_adver_int.to_be_bytes());
        msg[6..8].fill(0);
        for (slot, addr) in msg[HEADER_LEN..].chunks_exact_mut(4).zip(&self.addrs) {
            slot.copy_from_slice(&addr.octets());
        }
        let acc = match mode {
            ChecksumMode::PseudoHeader => pseudo_header(src, dst, len),
            ChecksumMode::NoPseudoHeader => 0,
        };
        let check = !checksum::fold(checksum::sum(acc, msg));
        msg[6..8].copy_from_slice(&check.to_be_bytes());
        len
    }

    /// The VRRP message as a new vector.
    pub fn to_bytes(&self, src: Ipv4Addr, dst: Ipv4Addr, mode: ChecksumMode) -> Vec<u8> {
        let mut out = vec![0; self.buffer_len()];
        self.emit(&mut out, src, dst, mode);
        out
    }
}

/// The IPv4 pseudo-header sum for a VRRP message of `len` octets.
fn pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> u64 {
    // len <= 8 + 4 * 255: fits u16.
    checksum::pseudo_header(src.octets(), dst.octets(), PROTOCOL, len as u16)
}

/// Which checksum `msg` verifies under, the RFC's first.
fn verify_checksum(msg: &[u8], src: Ipv4Addr, dst: Ipv4Addr) -> Option<ChecksumMode> {
    let plain = checksum::sum(0, msg);
    if checksum::fold(plain + pseudo_header(src, dst, msg.len())) == 0xffff {
        Some(ChecksumMode::PseudoHeader)
    } else if checksum::fold(plain) == 0xffff {
        Some(ChecksumMode::NoPseudoHeader)
    } else {
        None
    }
}

/// A received advertisement with what the IP header said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// IP source: the sender's primary address (the tie-breaker).
    pub src: Ipv4Addr,
    /// IP destination (224.0.0.18 for conforming senders).
    pub dst: Ipv4Addr,
    /// The advertisement.
    pub advert: Advert,
    /// Which checksum it verified under.
    pub checksum: ChecksumMode,
}

/// Parses an IPv4 datagram carrying an advertisement: header checks (checksum, no fragment,
/// protocol 112), then [`Advert::parse`] with the datagram's TTL.
pub fn parse_ipv4(packet: &[u8]) -> Result<Received, ParseError> {
    let ip = Ipv4Packet::new_checked(packet).map_err(ParseError::BadIpv4Header)?;
    if !ip.verify_checksum() {
        return Err(ParseError::BadIpv4Checksum);
    }
    if ip.is_fragment() {
        return Err(ParseError::Fragment);
    }
    if ip.protocol() != PROTOCOL {
        return Err(ParseError::NotVrrp(ip.protocol()));
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let (advert, checksum) = Advert::parse(ip.payload(), src, dst, ip.ttl())?;
    Ok(Received {
        src,
        dst,
        advert,
        checksum,
    })
}

/// Parses an untagged Ethernet frame carrying an advertisement.
pub fn parse_frame(frame: &[u8]) -> Result<Received, ParseError> {
    if frame.len() < ETH_HEADER_LEN {
        return Err(ParseError::BadIpv4Header(netwire::Error::Truncated {
            need: ETH_HEADER_LEN,
            have: frame.len(),
        }));
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    if ethertype != ETHERTYPE_IPV4 {
        return Err(ParseError::NotIpv4(ethertype));
    }
    parse_ipv4(&frame[ETH_HEADER_LEN..])
}

/// The IPv4 datagram of an advertisement from `src` (the interface's primary address): TOS
/// CS6, identification `ident`, no flags, TTL 255, protocol 112, to 224.0.0.18.
pub fn build_ipv4(advert: &Advert, src: Ipv4Addr, ident: u16, mode: ChecksumMode) -> Vec<u8> {
    let total = ipv4::HEADER_LEN + advert.buffer_len();
    let mut buf = vec![0u8; total];
    let mut ip = Ipv4Packet::new_unchecked(&mut buf[..]);
    ip.set_version(4);
    ip.set_header_len(ipv4::HEADER_LEN);
    ip.set_tos(TOS);
    // At most 20 + 8 + 1020 octets.
    ip.set_total_len(total as u16);
    ip.set_ident(ident);
    ip.clear_flags();
    ip.set_ttl(TTL);
    ip.set_protocol(PROTOCOL);
    ip.set_src_addr(src);
    ip.set_dst_addr(MULTICAST_ADDR);
    ip.fill_checksum();
    advert.emit(&mut buf[ipv4::HEADER_LEN..], src, MULTICAST_ADDR, mode);
    buf
}

/// The Ethernet frame of an advertisement: to 01:00:5e:00:00:12 from `src_mac` (the virtual
/// MAC, RFC 5798 §7.3, unless a peer that does not use it is being imitated).
pub fn build_frame(
    advert: &Advert,
    src_mac: MacAddr,
    src: Ipv4Addr,
    ident: u16,
    mode: ChecksumMode,
) -> Vec<u8> {
    let packet = build_ipv4(advert, src, ident, mode);
    let mut frame = Vec::with_capacity(ETH_HEADER_LEN + packet.len());
    ethernet_header(&mut frame, MULTICAST_MAC, src_mac, ETHERTYPE_IPV4);
    frame.extend_from_slice(&packet);
    frame
}

/// A gratuitous ARP request for `addr` from `mac` (RFC 5798 §6.4.1 and §8.1.2), broadcast, as
/// keepalived sends it: sender and target address both `addr`, target hardware all ones.
pub fn gratuitous_arp(mac: MacAddr, addr: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ARP_FRAME_LEN);
    ethernet_header(&mut frame, MacAddr::BROADCAST, mac, ETHERTYPE_ARP);
    frame.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01]);
    frame.extend_from_slice(&mac.0);
    frame.extend_from_slice(&addr.octets());
    frame.extend_from_slice(&MacAddr::BROADCAST.0);
    frame.extend_from_slice(&addr.octets());
    frame
}

fn ethernet_header(out: &mut Vec<u8>, dst: MacAddr, src: MacAddr, ethertype: u16) {
    out.extend_from_slice(&dst.0);
    out.extend_from_slice(&src.0);
    out.extend_from_slice(&ethertype.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    fn advert() -> Advert {
        Advert::new(
            51,
            100,
            100,
            vec![Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 101)],
        )
        .unwrap()
    }

    #[test]
    fn both_checksums_round_trip_and_are_told_apart() {
        for mode in [ChecksumMode::PseudoHeader, ChecksumMode::NoPseudoHeader] {
            let bytes = advert().to_bytes(SRC, MULTICAST_ADDR, mode);
            let (back, seen) = Advert::parse(&bytes, SRC, MULTICAST_ADDR, TTL).unwrap();
            assert_eq!((back, seen), (advert(), mode));
        }
    }

    #[test]
    fn pseudo_header_checksum_depends_on_addresses() {
        let bytes = advert().to_bytes(SRC, MULTICAST_ADDR, ChecksumMode::PseudoHeader);
        let other = Ipv4Addr::new(192, 0, 2, 9);
        assert_eq!(
            Advert::parse(&bytes, other, MULTICAST_ADDR, TTL),
            Err(ParseError::BadChecksum)
        );
    }

    #[test]
    fn every_error_has_its_own_counter() {
        let mut names = ParseError::NAMES.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ParseError::COUNT);
        let mut rx = RxErrors::default();
        rx.count(&ParseError::BadTtl(64));
        assert_eq!(rx.get(&ParseError::BadTtl(1)), 1);
        assert_eq!(rx.total(), 1);
        assert_eq!(ParseError::BadChecksum.name(), "bad-checksum");
    }

    #[test]
    fn advert_rejects_what_the_wire_cannot_carry() {
        assert_eq!(
            Advert::new(1, 1, 100, vec![]),
            Err(AdvertError::AddressCount(0))
        );
        assert_eq!(
            Advert::new(1, 1, 4096, vec![SRC]),
            Err(AdvertError::Interval(4096))
        );
        assert_eq!(
            Advert::new(1, 1, 0, vec![SRC]),
            Err(AdvertError::Interval(0))
        );
        assert!(Advert::new(1, 1, 4095, vec![SRC; 255]).is_ok());
        assert_eq!(
            Advert::new(1, 1, 1, vec![SRC; 256]),
            Err(AdvertError::AddressCount(256))
        );
    }

    #[test]
    fn virtual_mac_is_the_iana_block() {
        assert_eq!(virtual_mac(0x33).to_string(), "00:00:5e:00:01:33");
    }
}
