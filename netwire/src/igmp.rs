//! IGMP for a host member (RFC 1112, RFC 2236, RFC 3376): the queries a host must answer and
//! the reports and leaves it sends, and the IPv4 packet around them (TTL 1, Router Alert).
//!
//! The version of a query follows from its length and Max Resp field (RFC 3376 §7.1): 8 octets
//! with Max Resp 0 is IGMPv1, 8 octets otherwise IGMPv2, 12 or more IGMPv3; other lengths of
//! type 0x11 are ignored. A report is parsed too (so tests and captures can be read back).

use crate::checksum::checksum;
use crate::{be16, be32, Error, Result};
use core::net::Ipv4Addr;

/// IP protocol number of IGMP.
pub const PROTO_IGMP: u8 = 2;
/// Membership Query (all versions).
pub const MEMBERSHIP_QUERY: u8 = 0x11;
/// IGMPv1 Membership Report.
pub const V1_REPORT: u8 = 0x12;
/// IGMPv2 Membership Report.
pub const V2_REPORT: u8 = 0x16;
/// IGMPv2 Leave Group.
pub const V2_LEAVE: u8 = 0x17;
/// IGMPv3 Membership Report.
pub const V3_REPORT: u8 = 0x22;
/// All systems on this subnet: where general queries go.
pub const ALL_SYSTEMS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 1);
/// All routers: where IGMPv2 leaves go.
pub const ALL_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 2);
/// All IGMPv3-capable routers: where IGMPv3 reports go.
pub const ALL_V3_ROUTERS: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 22);

/// IGMPv3 group record types (RFC 3376 §4.2.12) a host sends for an any-source membership.
pub mod record {
    /// Current-state: exclude no sources (member).
    pub const MODE_IS_EXCLUDE: u8 = 2;
    /// State change: joined (exclude no sources).
    pub const CHANGE_TO_EXCLUDE: u8 = 4;
    /// State change: left (include no sources).
    pub const CHANGE_TO_INCLUDE: u8 = 3;
}

/// The IGMP version a query or report belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IgmpVersion {
    /// RFC 1112.
    V1,
    /// RFC 2236.
    V2,
    /// RFC 3376.
    V3,
}

/// One IGMPv3 group record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// Record type (see [`record`]).
    pub kind: u8,
    /// Multicast address.
    pub group: Ipv4Addr,
    /// Source addresses.
    pub sources: Vec<Ipv4Addr>,
}

/// A decoded IGMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgmpRepr {
    /// Membership Query: general when `group` is unspecified.
    Query {
        /// Version, from the length and Max Resp field.
        version: IgmpVersion,
        /// Maximum response time in tenths of a second (decoded for IGMPv3; 100 = 10 s for
        /// IGMPv1, which has none).
        max_resp_tenths: u32,
        /// The group asked about (unspecified: all groups).
        group: Ipv4Addr,
        /// IGMPv3 sources asked about.
        sources: Vec<Ipv4Addr>,
    },
    /// IGMPv1 or IGMPv2 Membership Report.
    Report {
        /// V1 or V2.
        version: IgmpVersion,
        /// The group reported.
        group: Ipv4Addr,
    },
    /// IGMPv2 Leave Group.
    Leave {
        /// The group left.
        group: Ipv4Addr,
    },
    /// IGMPv3 Membership Report.
    V3Report {
        /// Its group records.
        records: Vec<GroupRecord>,
    },
}

/// IGMPv3's floating-point Max Resp Code (RFC 3376 §4.1.1) in tenths of a second.
pub fn decode_max_resp(code: u8) -> u32 {
    if code < 128 {
        u32::from(code)
    } else {
        let mant = u32::from(code & 0x0f);
        let exp = u32::from((code >> 4) & 0x07);
        (mant | 0x10) << (exp + 3)
    }
}

/// The Max Resp Code for `tenths` (RFC 3376 §4.1.1): exact below 128 and for every value
/// [`decode_max_resp`] yields, else the next larger representable one (capped at 31744).
pub fn encode_max_resp(tenths: u32) -> u8 {
    if tenths < 128 {
        return tenths as u8;
    }
    (128u8..=255)
        .find(|c| decode_max_resp(*c) >= tenths)
        .unwrap_or(255)
}

/// True when the IGMP checksum over `msg` (the whole message) verifies.
pub fn verify_checksum(msg: &[u8]) -> bool {
    checksum(msg) == 0
}

fn addr(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::from(be32(b, at))
}

fn need(b: &[u8], n: usize) -> Result<()> {
    if b.len() < n {
        Err(Error::Truncated {
            need: n,
            have: b.len(),
        })
    } else {
        Ok(())
    }
}

fn sources(b: &[u8], at: usize, n: usize) -> Result<Vec<Ipv4Addr>> {
    need(b, at + 4 * n)?;
    Ok((0..n).map(|i| addr(b, at + 4 * i)).collect())
}

impl IgmpRepr {
    /// Decodes an IGMP message (the IPv4 payload). The checksum is not checked here
    /// ([`verify_checksum`]).
    pub fn parse(b: &[u8]) -> Result<Self> {
        need(b, 8)?;
        let (kind, code) = (b[0], b[1]);
        let group = addr(b, 4);
        match kind {
            MEMBERSHIP_QUERY if b.len() == 8 => Ok(Self::Query {
                version: if code == 0 {
                    IgmpVersion::V1
                } else {
                    IgmpVersion::V2
                },
                max_resp_tenths: if code == 0 { 100 } else { u32::from(code) },
                group,
                sources: Vec::new(),
            }),
            MEMBERSHIP_QUERY if b.len() >= 12 => {
                let n = usize::from(be16(b, 10));
                Ok(Self::Query {
                    version: IgmpVersion::V3,
                    max_resp_tenths: decode_max_resp(code),
                    group,
                    sources: sources(b, 12, n)?,
                })
            }
            MEMBERSHIP_QUERY => Err(Error::BadLength(b.len())),
            V1_REPORT => Ok(Self::Report {
                version: IgmpVersion::V1,
                group,
            }),
            V2_REPORT => Ok(Self::Report {
                version: IgmpVersion::V2,
                group,
            }),
            V2_LEAVE => Ok(Self::Leave { group }),
            V3_REPORT => {
                let n = usize::from(be16(b, 6));
                let mut at = 8;
                let mut records = Vec::new();
                for _ in 0..n {
                    need(b, at + 8)?;
                    let aux_words = usize::from(b[at + 1]);
                    let nsrc = usize::from(be16(b, at + 2));
                    let rec = GroupRecord {
                        kind: b[at],
                        group: addr(b, at + 4),
                        sources: sources(b, at + 8, nsrc)?,
                    };
                    at += 8 + 4 * nsrc + 4 * aux_words;
                    need(b, at)?;
                    records.push(rec);
                }
                Ok(Self::V3Report { records })
            }
            other => Err(Error::Unrecognized {
                msg_type: other,
                code,
            }),
        }
    }

    /// The encoded message, checksum included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = match self {
            Self::Query {
                version,
                max_resp_tenths,
                group,
                sources,
            } => {
                let code = match version {
                    IgmpVersion::V1 => 0,
                    IgmpVersion::V2 => u8::try_from(*max_resp_tenths).unwrap_or(u8::MAX).max(1),
                    IgmpVersion::V3 => encode_max_resp(*max_resp_tenths),
                };
                let mut b = vec![MEMBERSHIP_QUERY, code, 0, 0];
                b.extend_from_slice(&group.octets());
                if *version == IgmpVersion::V3 {
                    // S = 0, QRV 2, QQIC 125 s (the RFC 3376 defaults).
                    b.extend_from_slice(&[2, 125]);
                    let n = u16::try_from(sources.len()).unwrap_or(u16::MAX);
                    b.extend_from_slice(&n.to_be_bytes());
                    for s in sources.iter().take(usize::from(n)) {
                        b.extend_from_slice(&s.octets());
                    }
                }
                b
            }
            Self::Report { version, group } => {
                let kind = if *version == IgmpVersion::V1 {
                    V1_REPORT
                } else {
                    V2_REPORT
                };
                let mut b = vec![kind, 0, 0, 0];
                b.extend_from_slice(&group.octets());
                b
            }
            Self::Leave { group } => {
                let mut b = vec![V2_LEAVE, 0, 0, 0];
                b.extend_from_slice(&group.octets());
                b
            }
            Self::V3Report { records } => {
                let n = u16::try_from(records.len()).unwrap_or(u16::MAX);
                let mut b = vec![V3_REPORT, 0, 0, 0, 0, 0];
                b.extend_from_slice(&n.to_be_bytes());
                for r in records.iter().take(usize::from(n)) {
                    let ns = u16::try_from(r.sources.len()).unwrap_or(u16::MAX);
                    b.extend_from_slice(&[r.kind, 0]);
                    b.extend_from_slice(&ns.to_be_bytes());
                    b.extend_from_slice(&r.group.octets());
                    for s in r.sources.iter().take(usize::from(ns)) {
                        b.extend_from_slice(&s.octets());
                    }
                }
                b
            }
        };
        let c = checksum(&b);
        b[2..4].copy_from_slice(&c.to_be_bytes());
        b
    }
}

/// The IPv4 packet a host sends `igmp` in (RFC 2236 §2, RFC 3376 §4): TTL 1, the Router Alert
/// option (RFC 2113), and IGMPv3's TOS 0xc0 (internetwork control).
pub fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, igmp: &[u8], ident: u16) -> Vec<u8> {
    const HLEN: usize = 24;
    let total = HLEN + igmp.len();
    let mut p = vec![0u8; total];
    p[0] = 0x40 | (HLEN / 4) as u8;
    p[1] = if igmp.first() == Some(&V3_REPORT) {
        0xc0
    } else {
        0
    };
    p[2..4].copy_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[8] = 1;
    p[9] = PROTO_IGMP;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    // Router Alert: copied flag + option 20, length 4, value 0 ("examine this packet").
    p[20..24].copy_from_slice(&[0x94, 0x04, 0, 0]);
    let c = checksum(&p[..HLEN]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[HLEN..].copy_from_slice(igmp);
    p
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    const G: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);

    #[test]
    fn query_versions_follow_length_and_max_resp() {
        let v1 = [0x11, 0, 0xee, 0xff, 0, 0, 0, 0];
        assert!(matches!(
            IgmpRepr::parse(&v1).unwrap(),
            IgmpRepr::Query {
                version: IgmpVersion::V1,
                max_resp_tenths: 100,
                ..
            }
        ));
        // A v2 group-specific query, as Linux sends it: Max Resp 1 s.
        let mut v2 = vec![0x11, 10, 0, 0];
        v2.extend_from_slice(&G.octets());
        let c = checksum(&v2);
        v2[2..4].copy_from_slice(&c.to_be_bytes());
        assert!(verify_checksum(&v2));
        assert_eq!(
            IgmpRepr::parse(&v2).unwrap(),
            IgmpRepr::Query {
                version: IgmpVersion::V2,
                max_resp_tenths: 10,
                group: G,
                sources: vec![]
            }
        );
        // A v3 general query with the exponent form: 0x80 → 128 tenths.
        let v3 = [0x11, 0x80, 0, 0, 0, 0, 0, 0, 2, 125, 0, 0];
        assert_eq!(
            IgmpRepr::parse(&v3).unwrap(),
            IgmpRepr::Query {
                version: IgmpVersion::V3,
                max_resp_tenths: 128,
                group: Ipv4Addr::UNSPECIFIED,
                sources: vec![]
            }
        );
        assert_eq!(decode_max_resp(0xff), 31744);
        for code in 0..=255u8 {
            assert_eq!(encode_max_resp(decode_max_resp(code)), code);
        }
        assert!(
            IgmpRepr::parse(&v3[..10]).is_err(),
            "9..=11 octets is no query"
        );
        assert!(IgmpRepr::parse(&v3[..7]).is_err());
        // A v3 query announcing more sources than it carries.
        let short = [0x11, 10, 0, 0, 0, 0, 0, 0, 2, 125, 0, 3, 1, 2, 3, 4];
        assert!(IgmpRepr::parse(&short).is_err());
    }

    #[test]
    fn reports_and_the_ip_packet_around_them() {
        let r = IgmpRepr::Report {
            version: IgmpVersion::V2,
            group: G,
        }
        .to_bytes();
        assert_eq!(r[0], V2_REPORT);
        assert!(verify_checksum(&r));
        let p = ipv4_packet(Ipv4Addr::new(10, 0, 3, 1), G, &r, 7);
        let ip = crate::Ipv4Packet::new_checked(&p[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(
            (ip.ttl(), ip.protocol(), ip.header_len()),
            (1, PROTO_IGMP, 24)
        );
        assert_eq!(ip.options(), &[0x94, 4, 0, 0]);
        assert_eq!(ip.payload(), &r[..]);
        let v3 = IgmpRepr::V3Report {
            records: vec![GroupRecord {
                kind: record::MODE_IS_EXCLUDE,
                group: G,
                sources: vec![],
            }],
        }
        .to_bytes();
        assert_eq!(v3.len(), 16);
        assert_eq!(ipv4_packet(G, ALL_V3_ROUTERS, &v3, 1)[1], 0xc0);
    }

    fn any_addr() -> impl Strategy<Value = Ipv4Addr> {
        any::<u32>().prop_map(Ipv4Addr::from)
    }

    fn any_repr() -> impl Strategy<Value = IgmpRepr> {
        let version = prop_oneof![Just(IgmpVersion::V1), Just(IgmpVersion::V2)];
        let record = (0u8..=6, any_addr(), prop::collection::vec(any_addr(), 0..4)).prop_map(
            |(kind, group, sources)| GroupRecord {
                kind,
                group,
                sources,
            },
        );
        prop_oneof![
            (1u32..=255, any_addr()).prop_map(|(t, group)| IgmpRepr::Query {
                version: IgmpVersion::V2,
                max_resp_tenths: t,
                group,
                sources: vec![]
            }),
            (
                any::<u8>(),
                any_addr(),
                prop::collection::vec(any_addr(), 0..4)
            )
                .prop_map(|(code, group, sources)| IgmpRepr::Query {
                    version: IgmpVersion::V3,
                    max_resp_tenths: decode_max_resp(code),
                    group,
                    sources
                }),
            (version, any_addr()).prop_map(|(version, group)| IgmpRepr::Report { version, group }),
            any_addr().prop_map(|group| IgmpRepr::Leave { group }),
            prop::collection::vec(record, 0..4).prop_map(|records| IgmpRepr::V3Report { records }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(r in any_repr()) {
            let b = r.to_bytes();
            prop_assert!(verify_checksum(&b));
            prop_assert_eq!(IgmpRepr::parse(&b).unwrap(), r);
        }

        #[test]
        fn any_bytes_hold_the_fuzz_oracle(b in prop::collection::vec(any::<u8>(), 0..64)) {
            crate::fuzzing::fuzz_igmp(&b);
        }
    }

    #[test]
    fn the_fuzz_corpus_holds_the_oracle() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/netwire_igmp");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            crate::fuzzing::fuzz_igmp(&std::fs::read(entry.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n > 0);
    }
}
