//! Identity and view components and their elements (reference §3.3–§3.6, §3.8, §3.12, §3.13).

use core::net::Ipv4Addr;

use super::assignment::{AltMaskValueSet, AssignmentKey, AssignmentType, MaskValueSet};
use super::codec::{self, PResult, Writer};
use crate::error::Error;
use crate::hash::BucketBitmap;

/// Router ID element (8 octets, reference §3.13): router address and a Receive ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouterIdElement {
    /// Router ID address.
    pub router_ip: Ipv4Addr,
    /// Receive ID (never 0 from a router; Squid echoes 0 before the first reply, §5).
    pub receive_id: u32,
}

impl RouterIdElement {
    /// Encoded size.
    pub(crate) const LEN: usize = 8;

    /// nom parser.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, router_ip) = codec::ipv4(i)?;
        let (i, receive_id) = codec::u32(i)?;
        Ok((
            i,
            Self {
                router_ip,
                receive_id,
            },
        ))
    }

    /// Appends the 8 octets.
    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.ipv4(self.router_ip);
        w.u32(self.receive_id);
    }
}

wire_bits! {
    /// Web-Cache Identity Element flags (reference §3.12, wire practice: U is 0x0001).
    ///
    /// The assignment-type bits 0x0006 are *not* stored here: they are implied by
    /// [`WebCacheIdentityElement::data`], cleared on decode and filled in on encode.
    pub struct IdentityFlags(u16) {
        /// U: no current assignment, the data is historical.
        const HISTORICAL = 0x0001;
        /// Mask of the two assignment-type bits (never set in a stored value).
        const TYPE_MASK = 0x0006;
        /// V (\[R1\] §3.4): the header version is the cache's minimum.
        const VERSION_IS_MINIMUM = 0x0008;
    }
}

/// Hash assignment data (36 octets, reference §3.12): 256-bit bucket bitmap, weight, status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct HashAssignmentData {
    /// Buckets this cache holds (bit order: see [`crate::hash::BitOrder`], §6.3).
    pub buckets: BucketBitmap,
    /// Assignment Weight (opaque to routers; Squid: `wccp2_weight`, default 10000).
    pub weight: u16,
    /// Assignment Status (opaque to routers).
    pub status: u16,
}

impl HashAssignmentData {
    /// nom parser.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, bitmap) = codec::array::<32>(i)?;
        let (i, weight) = codec::u16(i)?;
        let (i, status) = codec::u16(i)?;
        Ok((
            i,
            Self {
                buckets: BucketBitmap(bitmap),
                weight,
                status,
            },
        ))
    }

    /// Appends the 36 octets.
    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.bytes(&self.buckets.0);
        w.u16(self.weight);
        w.u16(self.status);
    }
}

/// Mask assignment data (reference §3.12): Mask/Value Set List, weight, status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MaskAssignmentData {
    /// Mask/value sets (Squid: one set, mask 0x1741 on one field, no values).
    pub sets: Vec<MaskValueSet>,
    /// Assignment Weight.
    pub weight: u16,
    /// Assignment Status.
    pub status: u16,
}

impl MaskAssignmentData {
    /// nom parser.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, sets) = MaskValueSet::parse_list(i)?;
        let (i, weight) = codec::u16(i)?;
        let (i, status) = codec::u16(i)?;
        Ok((
            i,
            Self {
                sets,
                weight,
                status,
            },
        ))
    }

    /// Appends the encoding.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        MaskValueSet::write_list(&self.sets, w)?;
        w.u16(self.weight);
        w.u16(self.status);
        Ok(())
    }
}

/// Alternate mask assignment data (\[R1\] §6.8): Alternate Mask/Value Set List, weight, status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AltMaskAssignmentData {
    /// Alternate mask/value sets.
    pub sets: Vec<AltMaskValueSet>,
    /// Assignment Weight.
    pub weight: u16,
    /// Assignment Status.
    pub status: u16,
}

impl AltMaskAssignmentData {
    /// nom parser.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, sets) = AltMaskValueSet::parse_list(i)?;
        let (i, weight) = codec::u16(i)?;
        let (i, status) = codec::u16(i)?;
        Ok((
            i,
            Self {
                sets,
                weight,
                status,
            },
        ))
    }

    /// Appends the encoding.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        AltMaskValueSet::write_list(&self.sets, w)?;
        w.u16(self.weight);
        w.u16(self.status);
        Ok(())
    }
}

/// Extended assignment data (\[R1\] §6.10): `u16 type, u16 length, data`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ExtendedAssignmentData {
    /// WCCP2_HASH_ASSIGNMENT.
    Hash(HashAssignmentData),
    /// WCCP2_MASK_ASSIGNMENT.
    Mask(MaskAssignmentData),
    /// WCCP2_ALT_MASK_ASSIGNMENT.
    AltMask(AltMaskAssignmentData),
    /// WCCP2_ASSIGNMENT_WEIGHT_STATUS.
    WeightStatus {
        /// Assignment Weight.
        weight: u16,
        /// Assignment Status.
        status: u16,
    },
    /// Any other type, kept raw (never holds types 0–3).
    Unknown {
        /// Raw type.
        kind: u16,
        /// Data octets.
        data: Vec<u8>,
    },
}

impl ExtendedAssignmentData {
    /// nom parser: type, length, then exactly `length` octets of data.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (rest, kind) = codec::u16(i)?;
        let (rest, length) = codec::u16(rest)?;
        let (rest, data) = codec::take(usize::from(length))(rest)?;
        let value = match AssignmentType::from(kind) {
            AssignmentType::Hash => Self::Hash(codec::exact(data, HashAssignmentData::parse)?),
            AssignmentType::Mask => Self::Mask(codec::exact(data, MaskAssignmentData::parse)?),
            AssignmentType::AltMask => {
                Self::AltMask(codec::exact(data, AltMaskAssignmentData::parse)?)
            }
            AssignmentType::WeightStatus => {
                let (weight, status) = codec::exact(data, |d| {
                    let (d, weight) = codec::u16(d)?;
                    let (d, status) = codec::u16(d)?;
                    Ok((d, (weight, status)))
                })?;
                Self::WeightStatus { weight, status }
            }
            AssignmentType::Unknown(_) => Self::Unknown {
                kind,
                data: data.to_vec(),
            },
        };
        Ok((rest, value))
    }

    /// The type field.
    pub fn kind(&self) -> AssignmentType {
        match self {
            Self::Hash(_) => AssignmentType::Hash,
            Self::Mask(_) => AssignmentType::Mask,
            Self::AltMask(_) => AssignmentType::AltMask,
            Self::WeightStatus { .. } => AssignmentType::WeightStatus,
            Self::Unknown { kind, .. } => AssignmentType::from(*kind),
        }
    }

    /// Appends type, length and data.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.u16(self.kind().into());
        w.u16_length("extended assignment data", |w| match self {
            Self::Hash(h) => {
                h.write(w);
                Ok(())
            }
            Self::Mask(m) => m.write(w),
            Self::AltMask(m) => m.write(w),
            Self::WeightStatus { weight, status } => {
                w.u16(*weight);
                w.u16(*status);
                Ok(())
            }
            Self::Unknown { data, .. } => {
                w.bytes(data);
                Ok(())
            }
        })?;
        Ok(())
    }
}

/// Assignment data of a Web-Cache Identity Element, selected by the flags' type bits (§3.12).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AssignmentData {
    /// Type 0: hash data (bitmap, weight, status); element total 44 octets.
    Hash(HashAssignmentData),
    /// Type 1: mask data.
    Mask(MaskAssignmentData),
    /// Type 2 (\[R1\]): no data follows (never send this to Squid, §9).
    None,
    /// Type 3 (\[R1\]): extended data.
    Extended(ExtendedAssignmentData),
}

impl AssignmentData {
    /// The two flag bits (already shifted into place, 0x0000..0x0006) for this data.
    pub const fn type_bits(&self) -> u16 {
        match self {
            Self::Hash(_) => 0x0000,
            Self::Mask(_) => 0x0002,
            Self::None => 0x0004,
            Self::Extended(_) => 0x0006,
        }
    }

    /// Weight and status, when the data carries them.
    pub fn weight_status(&self) -> Option<(u16, u16)> {
        match self {
            Self::Hash(h) | Self::Extended(ExtendedAssignmentData::Hash(h)) => {
                Some((h.weight, h.status))
            }
            Self::Mask(m) | Self::Extended(ExtendedAssignmentData::Mask(m)) => {
                Some((m.weight, m.status))
            }
            Self::Extended(ExtendedAssignmentData::AltMask(m)) => Some((m.weight, m.status)),
            Self::Extended(ExtendedAssignmentData::WeightStatus { weight, status }) => {
                Some((*weight, *status))
            }
            Self::None | Self::Extended(ExtendedAssignmentData::Unknown { .. }) => None,
        }
    }
}

/// Web-Cache Identity Element (reference §3.12).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebCacheIdentityElement {
    /// Cache IP address.
    pub cache_ip: Ipv4Addr,
    /// Hash Revision (\[W\]) / Reserved (\[R1\]); always 0 in practice, kept as read.
    pub hash_revision: u16,
    /// U, V and reserved bits (type bits come from `data`).
    pub flags: IdentityFlags,
    /// Assignment data.
    pub data: AssignmentData,
}

impl WebCacheIdentityElement {
    /// Smallest encoding (type 2, no data): address + revision + flags.
    pub(crate) const MIN_LEN: usize = 8;

    /// An element with revision 0 and no flags.
    pub fn new(cache_ip: Ipv4Addr, data: AssignmentData) -> Self {
        Self {
            cache_ip,
            hash_revision: 0,
            flags: IdentityFlags::empty(),
            data,
        }
    }

    /// U flag: the data is historical (no current assignment).
    pub fn is_historical(&self) -> bool {
        self.flags.contains(IdentityFlags::HISTORICAL)
    }

    /// The flags word as written on the wire (type bits included).
    pub fn wire_flags(&self) -> u16 {
        (self.flags.bits() & !IdentityFlags::TYPE_MASK.bits()) | self.data.type_bits()
    }

    /// nom parser.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, cache_ip) = codec::ipv4(i)?;
        let (i, hash_revision) = codec::u16(i)?;
        let (i, flags) = codec::u16(i)?;
        let (i, data) = match (flags & IdentityFlags::TYPE_MASK.bits()) >> 1 {
            0 => {
                let (i, h) = HashAssignmentData::parse(i)?;
                (i, AssignmentData::Hash(h))
            }
            1 => {
                let (i, m) = MaskAssignmentData::parse(i)?;
                (i, AssignmentData::Mask(m))
            }
            2 => (i, AssignmentData::None),
            _ => {
                let (i, e) = ExtendedAssignmentData::parse(i)?;
                (i, AssignmentData::Extended(e))
            }
        };
        let flags = IdentityFlags(flags & !IdentityFlags::TYPE_MASK.bits());
        Ok((
            i,
            Self {
                cache_ip,
                hash_revision,
                flags,
                data,
            },
        ))
    }

    /// Appends the element.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.ipv4(self.cache_ip);
        w.u16(self.hash_revision);
        w.u16(self.wire_flags());
        match &self.data {
            AssignmentData::Hash(h) => {
                h.write(w);
                Ok(())
            }
            AssignmentData::Mask(m) => m.write(w),
            AssignmentData::None => Ok(()),
            AssignmentData::Extended(e) => e.write(w),
        }
    }
}

/// Router Identity Info component (type 2, reference §3.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouterIdentityInfo {
    /// The router's ID and its current Receive ID.
    pub router: RouterIdElement,
    /// Address the cache sent its HERE_I_AM to (the group address when multicasting).
    pub sent_to: Ipv4Addr,
    /// Caches this I_SEE_YOU is meant for (a cache not listed drops it).
    pub received_from: Vec<Ipv4Addr>,
}

impl RouterIdentityInfo {
    /// nom parser for the component body.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, router) = RouterIdElement::parse(i)?;
        let (i, sent_to) = codec::ipv4(i)?;
        let (i, received_from) = codec::counted("received-from address", 4, codec::ipv4)(i)?;
        Ok((
            i,
            Self {
                router,
                sent_to,
                received_from,
            },
        ))
    }

    /// Appends the component body.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        self.router.write(w);
        w.ipv4(self.sent_to);
        w.count("received-from list", self.received_from.len())?;
        self.received_from.iter().for_each(|a| w.ipv4(*a));
        Ok(())
    }
}

/// Router View Info component (type 4, reference §3.5).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouterViewInfo {
    /// Member Change Number (incremented when the usable-cache set or router list changes).
    pub member_change_number: u32,
    /// Key of the last valid REDIRECT_ASSIGN (zero before any).
    pub key: AssignmentKey,
    /// Routers reported by caches in their Web-Cache Views.
    pub routers: Vec<Ipv4Addr>,
    /// Identity elements of the usable caches.
    pub caches: Vec<WebCacheIdentityElement>,
}

impl RouterViewInfo {
    /// nom parser for the component body.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, member_change_number) = codec::u32(i)?;
        let (i, key) = AssignmentKey::parse(i)?;
        let (i, routers) = codec::counted("router view router", 4, codec::ipv4)(i)?;
        let (i, caches) = codec::counted(
            "router view web-cache",
            WebCacheIdentityElement::MIN_LEN,
            WebCacheIdentityElement::parse,
        )(i)?;
        Ok((
            i,
            Self {
                member_change_number,
                key,
                routers,
                caches,
            },
        ))
    }

    /// Appends the component body.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.u32(self.member_change_number);
        self.key.write(w);
        w.count("router view router list", self.routers.len())?;
        self.routers.iter().for_each(|r| w.ipv4(*r));
        w.count("router view web-cache list", self.caches.len())?;
        self.caches.iter().try_for_each(|c| c.write(w))
    }
}

/// Web-Cache View Info component (type 5, reference §3.6).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebCacheViewInfo {
    /// Change Number (Squid sends a constant 1).
    pub change_number: u32,
    /// Routers with the last Receive ID received from each.
    pub routers: Vec<RouterIdElement>,
    /// Cache addresses learnt from I_SEE_YOUs.
    pub caches: Vec<Ipv4Addr>,
}

impl WebCacheViewInfo {
    /// nom parser for the component body.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, change_number) = codec::u32(i)?;
        let (i, routers) = codec::counted(
            "web-cache view router",
            RouterIdElement::LEN,
            RouterIdElement::parse,
        )(i)?;
        let (i, caches) = codec::counted("web-cache view cache", 4, codec::ipv4)(i)?;
        Ok((
            i,
            Self {
                change_number,
                routers,
                caches,
            },
        ))
    }

    /// Appends the component body.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.u32(self.change_number);
        w.count("web-cache view router list", self.routers.len())?;
        self.routers.iter().for_each(|r| r.write(w));
        w.count("web-cache view cache list", self.caches.len())?;
        self.caches.iter().for_each(|c| w.ipv4(*c));
        Ok(())
    }

    /// The Receive ID this cache echoes for `router`, if it lists that router.
    pub fn receive_id_for(&self, router: Ipv4Addr) -> Option<u32> {
        self.routers
            .iter()
            .find(|r| r.router_ip == router)
            .map(|r| r.receive_id)
    }
}

/// Router Query Info component (type 7, Length 16; reference §3.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouterQueryInfo {
    /// Router ID and the Receive ID it expects.
    pub router: RouterIdElement,
    /// Where the cache sent its last HERE_I_AM (the group address when multicasting).
    pub sent_to: Ipv4Addr,
    /// The cache being queried.
    pub target: Ipv4Addr,
}

impl RouterQueryInfo {
    /// Body size.
    pub(crate) const LEN: u16 = 16;

    /// nom parser for the component body.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, router) = RouterIdElement::parse(i)?;
        let (i, sent_to) = codec::ipv4(i)?;
        let (i, target) = codec::ipv4(i)?;
        Ok((
            i,
            Self {
                router,
                sent_to,
                target,
            },
        ))
    }

    /// Appends the component body.
    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        self.router.write(w);
        w.ipv4(self.sent_to);
        w.ipv4(self.target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_element(buf: &[u8]) -> Result<WebCacheIdentityElement, Error> {
        codec::finish(
            buf,
            codec::exact(buf, WebCacheIdentityElement::parse).map(|e| (&buf[..0], e)),
        )
        .map(|(_, e)| e)
    }

    #[test]
    fn squid_mask_identity_element() {
        // hia-mask-l2-std0: 10.99.0.2, rev 0, flags 0x0002 (mask), 1 set, dst mask 0x1741,
        // 0 values, weight 0, status 0.
        let buf = [
            0x0a, 0x63, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x17, 0x41, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00,
        ];
        let e = decode_element(&buf).unwrap();
        assert_eq!(e.cache_ip, Ipv4Addr::new(10, 99, 0, 2));
        assert_eq!(e.flags, IdentityFlags::empty());
        let AssignmentData::Mask(m) = &e.data else {
            panic!("not mask data: {e:?}")
        };
        assert_eq!(m.sets.len(), 1);
        assert_eq!(m.sets[0].mask.dst_ip, 0x1741);
        assert!(m.sets[0].values.is_empty());
        let mut out = vec![];
        e.write(&mut Writer::new(&mut out)).unwrap();
        assert_eq!(out, buf);
    }

    #[test]
    fn no_data_and_extended_elements() {
        // Type 2 (no data) with U: 8 octets only.
        let buf = [0x0a, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x05];
        let e = decode_element(&buf).unwrap();
        assert_eq!(e.data, AssignmentData::None);
        assert!(e.is_historical());
        assert_eq!(e.wire_flags(), 0x0005);
        // Type 3 (extended), weight/status 0x2710/0x0001.
        let buf = [
            0x0a, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x06, 0x00, 0x03, 0x00, 0x04, 0x27, 0x10,
            0x00, 0x01,
        ];
        let e = decode_element(&buf).unwrap();
        assert_eq!(
            e.data,
            AssignmentData::Extended(ExtendedAssignmentData::WeightStatus {
                weight: 10000,
                status: 1
            })
        );
        assert_eq!(e.data.weight_status(), Some((10000, 1)));
        let mut out = vec![];
        e.write(&mut Writer::new(&mut out)).unwrap();
        assert_eq!(out, buf);
        // Extended weight/status with a length of 8: the leftover 4 octets are rejected.
        let bad = [
            0x0a, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x06, 0x00, 0x03, 0x00, 0x08, 0x27, 0x10,
            0x00, 0x01, 0, 0, 0, 0,
        ];
        assert_eq!(
            decode_element(&bad),
            Err(Error::TrailingBytes { at: 16, len: 4 })
        );
    }
}
