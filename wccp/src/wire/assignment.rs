//! Assignment structures: keys, router assignment elements, the hash bucket table, mask/value
//! sets (reference §3.7, §3.9, §3.11, §3.13, §6.2, §7.1, §7.4) and the components built on them.

use core::net::Ipv4Addr;

use super::codec::{self, Fail, PResult, Writer};
use crate::error::Error;

/// Number of hash buckets (reference §3.7).
pub const BUCKETS: usize = 256;
/// Bucket octet value meaning "no cache assigned" (reference §6.2).
pub const BUCKET_UNASSIGNED: u8 = 0xff;
/// Bucket octet flag "use the alternate hash" (reference §6.2).
pub const BUCKET_ALTERNATE: u8 = 0x80;

wire_enum! {
    /// Assignment Type of the Alternate Assignment (map) and extended assignment data
    /// (reference §3.9, §3.11, §3.12).
    pub enum AssignmentType: u16 {
        /// WCCP2_HASH_ASSIGNMENT: Hash Buckets Assignment body.
        Hash = 0 => "hash",
        /// WCCP2_MASK_ASSIGNMENT: Mask/Value Set List body.
        Mask = 1 => "mask",
        /// WCCP2_ALT_MASK_ASSIGNMENT (\[R1\], v2.01): Alternate Mask/Value Set List body.
        AltMask = 2 => "alternate mask",
        /// WCCP2_ASSIGNMENT_WEIGHT_STATUS (\[R1\]; extended assignment data only).
        WeightStatus = 3 => "weight/status",
    }
}

/// Assignment Key element (8 octets, reference §3.13): identifies one assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AssignmentKey {
    /// Designated cache's IP address.
    pub cache_ip: Ipv4Addr,
    /// Key Change Number, incremented by the designated cache per new assignment.
    pub change_number: u32,
}

impl Default for AssignmentKey {
    fn default() -> Self {
        Self::NONE
    }
}

impl AssignmentKey {
    /// The all-zero key a router reports before any assignment.
    pub const NONE: Self = Self {
        cache_ip: Ipv4Addr::UNSPECIFIED,
        change_number: 0,
    };

    /// nom parser.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, cache_ip) = codec::ipv4(i)?;
        let (i, change_number) = codec::u32(i)?;
        Ok((
            i,
            Self {
                cache_ip,
                change_number,
            },
        ))
    }

    /// Appends the 8 octets.
    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.ipv4(self.cache_ip);
        w.u32(self.change_number);
    }
}

/// Router Assignment Element (12 octets, reference §3.13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouterAssignmentElement {
    /// Router ID address.
    pub router_ip: Ipv4Addr,
    /// Last Receive ID that router sent to the designated cache.
    pub receive_id: u32,
    /// Last Member Change Number that router advertised.
    pub change_number: u32,
}

impl RouterAssignmentElement {
    /// Encoded size.
    pub(crate) const LEN: usize = 12;

    /// nom parser.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, router_ip) = codec::ipv4(i)?;
        let (i, receive_id) = codec::u32(i)?;
        let (i, change_number) = codec::u32(i)?;
        Ok((
            i,
            Self {
                router_ip,
                receive_id,
                change_number,
            },
        ))
    }

    /// Appends the 12 octets.
    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.ipv4(self.router_ip);
        w.u32(self.receive_id);
        w.u32(self.change_number);
    }
}

/// What one bucket octet says (reference §6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BucketEntry {
    /// 0xFF: no cache; forward normally.
    Unassigned,
    /// A cache index (low 7 bits) and the A flag (0x80: use the alternate hash).
    Cache {
        /// Cache index into the bucket assignment's cache list.
        index: u8,
        /// A flag: look up the alternate hash bucket instead.
        alternate: bool,
    },
}

impl BucketEntry {
    /// Interprets a bucket octet.
    pub const fn from_octet(b: u8) -> Self {
        if b == BUCKET_UNASSIGNED {
            Self::Unassigned
        } else {
            Self::Cache {
                index: b & !BUCKET_ALTERNATE,
                alternate: b & BUCKET_ALTERNATE != 0,
            }
        }
    }

    /// The wire octet (index ≥ 0x80 is masked to 7 bits).
    pub const fn to_octet(self) -> u8 {
        match self {
            Self::Unassigned => BUCKET_UNASSIGNED,
            Self::Cache { index, alternate } => {
                (index & !BUCKET_ALTERNATE) | if alternate { BUCKET_ALTERNATE } else { 0 }
            }
        }
    }
}

/// Hash Buckets Assignment (reference §3.7, \[R1\] §6.5): cache list and the 256-bucket table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HashBucketsAssignment {
    /// Caches; the position is the cache index used in the buckets (0..31).
    pub caches: Vec<Ipv4Addr>,
    /// One octet per bucket (format §6.2): index, 0x80 = alternate, 0xFF = unassigned.
    pub buckets: Box<[u8; BUCKETS]>,
}

impl HashBucketsAssignment {
    /// An assignment with every bucket unassigned.
    pub fn unassigned(caches: Vec<Ipv4Addr>) -> Self {
        Self {
            caches,
            buckets: Box::new([BUCKET_UNASSIGNED; BUCKETS]),
        }
    }

    /// Interprets bucket `n`.
    pub fn bucket(&self, n: u8) -> BucketEntry {
        BucketEntry::from_octet(self.buckets[usize::from(n)])
    }

    /// The cache address bucket `n` points at (primary lookup only; `None` if unassigned or
    /// the index is outside the cache list).
    pub fn cache_for_bucket(&self, n: u8) -> Option<Ipv4Addr> {
        match self.bucket(n) {
            BucketEntry::Unassigned => None,
            BucketEntry::Cache { index, .. } => self.caches.get(usize::from(index)).copied(),
        }
    }

    /// Buckets per cache index (same length as `caches`); out-of-range indexes are not counted.
    pub fn bucket_counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.caches.len()];
        for b in self.buckets.iter() {
            if let BucketEntry::Cache { index, .. } = BucketEntry::from_octet(*b) {
                if let Some(c) = counts.get_mut(usize::from(index)) {
                    *c += 1;
                }
            }
        }
        counts
    }

    /// Number of buckets pointing at no listed cache (0xFF or an index past the list).
    pub fn unassigned_count(&self) -> usize {
        BUCKETS - self.bucket_counts().iter().sum::<usize>()
    }

    /// nom parser.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, caches) = codec::counted("hash assignment cache", 4, codec::ipv4)(i)?;
        let (i, buckets) = codec::array::<BUCKETS>(i)?;
        Ok((
            i,
            Self {
                caches,
                buckets: Box::new(buckets),
            },
        ))
    }

    /// Appends the encoding.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.count("hash assignment cache list", self.caches.len())?;
        for c in &self.caches {
            w.ipv4(*c);
        }
        w.bytes(&self.buckets[..]);
        Ok(())
    }
}

/// Mask Element (12 octets, reference §7.1): which bits of each field to match; 0 = don't care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MaskElement {
    /// Source IP mask.
    pub src_ip: u32,
    /// Destination IP mask.
    pub dst_ip: u32,
    /// Source port mask.
    pub src_port: u16,
    /// Destination port mask.
    pub dst_port: u16,
}

impl MaskElement {
    /// nom parser.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, src_ip) = codec::u32(i)?;
        let (i, dst_ip) = codec::u32(i)?;
        let (i, src_port) = codec::u16(i)?;
        let (i, dst_port) = codec::u16(i)?;
        Ok((
            i,
            Self {
                src_ip,
                dst_ip,
                src_port,
                dst_port,
            },
        ))
    }

    /// Appends the 12 octets.
    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.u32(self.src_ip);
        w.u32(self.dst_ip);
        w.u16(self.src_port);
        w.u16(self.dst_port);
    }

    /// Total number of mask bits (reference §7.3: values per set = 2^bits).
    pub fn bit_count(&self) -> u32 {
        self.src_ip.count_ones()
            + self.dst_ip.count_ones()
            + u32::from(self.src_port).count_ones()
            + u32::from(self.dst_port).count_ones()
    }
}

/// Value Element (16 octets, reference §7.1): masked field values and the cache they go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ValueElement {
    /// Masked source IP value.
    pub src_ip: u32,
    /// Masked destination IP value.
    pub dst_ip: u32,
    /// Masked source port value.
    pub src_port: u16,
    /// Masked destination port value.
    pub dst_port: u16,
    /// Cache that receives matching packets.
    pub cache_ip: Ipv4Addr,
}

impl ValueElement {
    /// nom parser.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, src_ip) = codec::u32(i)?;
        let (i, dst_ip) = codec::u32(i)?;
        let (i, src_port) = codec::u16(i)?;
        let (i, dst_port) = codec::u16(i)?;
        let (i, cache_ip) = codec::ipv4(i)?;
        Ok((
            i,
            Self {
                src_ip,
                dst_ip,
                src_port,
                dst_port,
                cache_ip,
            },
        ))
    }

    /// Appends the 16 octets.
    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.u32(self.src_ip);
        w.u32(self.dst_ip);
        w.u16(self.src_port);
        w.u16(self.dst_port);
        w.ipv4(self.cache_ip);
    }
}

/// Mask/Value Set Element (reference §7.1): one mask and its value elements.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct MaskValueSet {
    /// The mask applied to packets.
    pub mask: MaskElement,
    /// Values compared, in order, with the masked fields.
    pub values: Vec<ValueElement>,
}

impl MaskValueSet {
    /// nom parser for one set.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, mask) = MaskElement::parse(i)?;
        let (i, values) = codec::counted("mask value element", 16, ValueElement::parse)(i)?;
        Ok((i, Self { mask, values }))
    }

    /// nom parser for a Mask/Value Set List (u32 count + sets).
    pub(crate) fn parse_list(i: &[u8]) -> PResult<'_, Vec<Self>> {
        codec::counted("mask/value set", 16, Self::parse)(i)
    }

    /// Appends one set.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        self.mask.write(w);
        w.count("mask value element list", self.values.len())?;
        for v in &self.values {
            v.write(w);
        }
        Ok(())
    }

    /// Appends a Mask/Value Set List.
    pub(crate) fn write_list(sets: &[Self], w: &mut Writer<'_>) -> Result<(), Error> {
        w.count("mask/value set list", sets.len())?;
        sets.iter().try_for_each(|s| s.write(w))
    }
}

/// Web-Cache Value Element (\[R1\] §6.19): a cache and the Value Sequence Numbers it owns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WebCacheValueElement {
    /// The cache.
    pub cache_ip: Ipv4Addr,
    /// Value Sequence Numbers (reference §7.4) assigned to it.
    pub vsns: Vec<u32>,
}

impl WebCacheValueElement {
    /// nom parser.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, cache_ip) = codec::ipv4(i)?;
        let (i, vsns) = codec::counted("value sequence number", 4, codec::u32)(i)?;
        Ok((i, Self { cache_ip, vsns }))
    }

    /// Appends the element.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.ipv4(self.cache_ip);
        w.count("value sequence number list", self.vsns.len())?;
        for v in &self.vsns {
            w.u32(*v);
        }
        Ok(())
    }
}

/// Alternate Mask/Value Set Element (\[R1\] §6.18, reference §7.4).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AltMaskValueSet {
    /// The mask applied to packets.
    pub mask: MaskElement,
    /// Caches and their VSNs.
    pub caches: Vec<WebCacheValueElement>,
}

impl AltMaskValueSet {
    /// nom parser for one set.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, mask) = MaskElement::parse(i)?;
        let (i, caches) =
            codec::counted("web-cache value element", 8, WebCacheValueElement::parse)(i)?;
        Ok((i, Self { mask, caches }))
    }

    /// nom parser for an Alternate Mask/Value Set List.
    pub(crate) fn parse_list(i: &[u8]) -> PResult<'_, Vec<Self>> {
        codec::counted("alternate mask/value set", 16, Self::parse)(i)
    }

    /// Appends one set.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        self.mask.write(w);
        w.count("web-cache value element list", self.caches.len())?;
        self.caches.iter().try_for_each(|c| c.write(w))
    }

    /// Appends an Alternate Mask/Value Set List.
    pub(crate) fn write_list(sets: &[Self], w: &mut Writer<'_>) -> Result<(), Error> {
        w.count("alternate mask/value set list", sets.len())?;
        sets.iter().try_for_each(|s| s.write(w))
    }
}

/// The typed body selected by an Assignment Type (reference §3.9, §3.11).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AssignmentBody {
    /// Hash Buckets Assignment.
    Hash(HashBucketsAssignment),
    /// Mask/Value Set List.
    Mask(Vec<MaskValueSet>),
    /// Alternate Mask/Value Set List (\[R1\], v2.01).
    AltMask(Vec<AltMaskValueSet>),
    /// Any other type, kept raw (never holds type 0, 1 or 2).
    Unknown {
        /// Raw assignment type.
        kind: u16,
        /// Body octets.
        data: Vec<u8>,
    },
}

impl AssignmentBody {
    /// The Assignment Type written before this body.
    pub fn kind(&self) -> AssignmentType {
        match self {
            Self::Hash(_) => AssignmentType::Hash,
            Self::Mask(_) => AssignmentType::Mask,
            Self::AltMask(_) => AssignmentType::AltMask,
            Self::Unknown { kind, .. } => AssignmentType::from(*kind),
        }
    }

    /// Decodes a body of type `kind` that must fill `i` exactly.
    pub(crate) fn parse_exact(kind: u16, i: &[u8]) -> Result<Self, nom::Err<Fail<'_>>> {
        Ok(match AssignmentType::from(kind) {
            AssignmentType::Hash => Self::Hash(codec::exact(i, HashBucketsAssignment::parse)?),
            AssignmentType::Mask => Self::Mask(codec::exact(i, MaskValueSet::parse_list)?),
            AssignmentType::AltMask => Self::AltMask(codec::exact(i, AltMaskValueSet::parse_list)?),
            AssignmentType::WeightStatus | AssignmentType::Unknown(_) => Self::Unknown {
                kind,
                data: i.to_vec(),
            },
        })
    }

    /// Appends the body (without type/length).
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        match self {
            Self::Hash(h) => h.write(w),
            Self::Mask(sets) => MaskValueSet::write_list(sets, w),
            Self::AltMask(sets) => AltMaskValueSet::write_list(sets, w),
            Self::Unknown { data, .. } => {
                w.bytes(data);
                Ok(())
            }
        }
    }
}

/// Reads a router assignment element list (u32 count + 12-octet elements).
fn parse_routers(i: &[u8]) -> PResult<'_, Vec<RouterAssignmentElement>> {
    codec::counted(
        "router assignment element",
        RouterAssignmentElement::LEN,
        RouterAssignmentElement::parse,
    )(i)
}

/// Appends a router assignment element list.
fn write_routers(routers: &[RouterAssignmentElement], w: &mut Writer<'_>) -> Result<(), Error> {
    w.count("router assignment element list", routers.len())?;
    routers.iter().for_each(|r| r.write(w));
    Ok(())
}

/// Assignment Info component (type 6, hash only; reference §3.7).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssignmentInfo {
    /// Key the routers echo back in their Router View.
    pub key: AssignmentKey,
    /// One element per router the assignment is meant for.
    pub routers: Vec<RouterAssignmentElement>,
    /// Cache list and bucket table.
    pub buckets: HashBucketsAssignment,
}

impl AssignmentInfo {
    /// nom parser for the component body.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, key) = AssignmentKey::parse(i)?;
        let (i, routers) = parse_routers(i)?;
        let (i, buckets) = HashBucketsAssignment::parse(i)?;
        Ok((
            i,
            Self {
                key,
                routers,
                buckets,
            },
        ))
    }

    /// Appends the component body.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        self.key.write(w);
        write_routers(&self.routers, w)?;
        self.buckets.write(w)
    }
}

/// Reads the `u16 type, u16 length` sub-header of (alternate) assignments and checks that the
/// length is exactly what is left (Squid, ATS and Wireshark agree, reference §3.9).
fn parse_typed_sub_header<'a>(what: &'static str, i: &'a [u8]) -> PResult<'a, u16> {
    let (rest, kind) = codec::u16(i)?;
    let (rest, length) = codec::u16(rest)?;
    if usize::from(length) != rest.len() {
        return codec::fail(
            i,
            Error::BadLength {
                what,
                length: usize::from(length),
                expected: rest.len(),
                at: 0,
            },
        );
    }
    Ok((rest, kind))
}

/// Alternate Assignment component (type 13; reference §3.9).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AlternateAssignment {
    /// Key the routers echo back.
    pub key: AssignmentKey,
    /// One element per router.
    pub routers: Vec<RouterAssignmentElement>,
    /// Hash table, mask/value sets or alternate mask/value sets.
    pub body: AssignmentBody,
}

impl AlternateAssignment {
    /// Decodes the component body, which must be consumed exactly.
    pub(crate) fn parse_exact(i: &[u8]) -> Result<Self, nom::Err<Fail<'_>>> {
        let (rest, kind) = parse_typed_sub_header("Alternate Assignment's assignment length", i)?;
        let (rest, key) = AssignmentKey::parse(rest)?;
        let (rest, routers) = parse_routers(rest)?;
        let body = AssignmentBody::parse_exact(kind, rest)?;
        Ok(Self { key, routers, body })
    }

    /// Appends the component body.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.u16(self.body.kind().into());
        w.u16_length("alternate assignment", |w| {
            self.key.write(w);
            write_routers(&self.routers, w)?;
            self.body.write(w)
        })?;
        Ok(())
    }
}

/// Assignment Map component (type 14; reference §3.11): mask/value sets in an I_SEE_YOU.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AssignmentMap {
    /// The router's current mask/value sets.
    pub sets: Vec<MaskValueSet>,
}

impl AssignmentMap {
    /// nom parser for the component body.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, sets) = MaskValueSet::parse_list(i)?;
        Ok((i, Self { sets }))
    }

    /// Appends the component body.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        MaskValueSet::write_list(&self.sets, w)
    }
}

/// Alternate Assignment Map component (type 16, \[R1\] v2.01; reference §3.11).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AlternateAssignmentMap {
    /// The router's current assignment (no key, no router list).
    pub body: AssignmentBody,
}

impl AlternateAssignmentMap {
    /// Decodes the component body, which must be consumed exactly.
    pub(crate) fn parse_exact(i: &[u8]) -> Result<Self, nom::Err<Fail<'_>>> {
        let (rest, kind) =
            parse_typed_sub_header("Alternate Assignment Map's assignment length", i)?;
        Ok(Self {
            body: AssignmentBody::parse_exact(kind, rest)?,
        })
    }

    /// Appends the component body.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.u16(self.body.kind().into());
        w.u16_length("alternate assignment map", |w| self.body.write(w))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_octets() {
        assert_eq!(BucketEntry::from_octet(0xff), BucketEntry::Unassigned);
        assert_eq!(
            BucketEntry::from_octet(0x81),
            BucketEntry::Cache {
                index: 1,
                alternate: true
            }
        );
        assert_eq!(
            BucketEntry::from_octet(0x05),
            BucketEntry::Cache {
                index: 5,
                alternate: false
            }
        );
        for b in 0..=255u8 {
            assert_eq!(BucketEntry::from_octet(b).to_octet(), b);
        }
    }

    #[test]
    fn counts_per_cache() {
        let mut h = HashBucketsAssignment::unassigned(vec![
            Ipv4Addr::new(10, 0, 0, 2),
            Ipv4Addr::new(10, 0, 0, 3),
        ]);
        for (n, b) in h.buckets.iter_mut().enumerate() {
            *b = if n < 200 {
                (n % 2) as u8
            } else if n < 250 {
                0x81
            } else {
                0xff
            };
        }
        assert_eq!(h.bucket_counts(), vec![100, 150]);
        assert_eq!(h.unassigned_count(), 6);
        assert_eq!(h.cache_for_bucket(3), Some(Ipv4Addr::new(10, 0, 0, 3)));
        assert_eq!(h.cache_for_bucket(255), None);
    }

    #[test]
    fn alternate_assignment_length_must_match() {
        // type 1 (mask), assignment length 99 but 20 octets follow.
        let mut buf = vec![0x00, 0x01, 0x00, 0x63];
        buf.extend_from_slice(&[0u8; 20]);
        let err = AlternateAssignment::parse_exact(&buf)
            .map_err(|e| codec::finish::<()>(&buf, Err(e)).unwrap_err())
            .unwrap_err();
        assert_eq!(
            err,
            Error::BadLength {
                what: "Alternate Assignment's assignment length",
                length: 99,
                expected: 20,
                at: 0
            }
        );
    }
}
