//! Cluster distribution ids carried in outside ports (issue 16, seed 003 claims 10 and 12).
//!
//! A router cluster gives each of 256 distribution ids to one node at a time, and every node
//! sees every frame of the shared segments. For a translated flow the id must be the same in
//! both directions and on both sides of the NAT, and it must be recoverable from the session
//! alone so a node that takes an id over can pick that id's sessions out of its copy of the
//! others'. The id of a NAT flow is therefore a function of its inside endpoint (the mapping is
//! shared by every session of that endpoint: endpoint-independent mapping), and the NAT picks
//! outside ports whose offset from `port_min` is that id modulo 256: a packet from the outside
//! names its id in its destination port, without a lookup.
//!
//! VID blocks are `2^shift` ports from `port_min`; with `shift >= 8` ([`check_geometry`]) a
//! port's id is the low byte of its offset inside its block and its VID the high bits, so the
//! two schemes nest: each worker's block holds `block_len / 256` ports of every id.

use crate::vid::Geometry;
use std::net::Ipv4Addr;

/// Distribution ids of a cluster.
pub const IDS: usize = 256;

/// Domain tag of [`endpoint_id`] (the cluster crate's pair hashes use others), so an endpoint
/// and a pair never hash to related values.
const TAG_ENDPOINT: u64 = 1 << 8;
/// Domain tag of [`esp_id`] (the cluster crate's pair hashes use 2 and 3).
const TAG_ESP: u64 = 4 << 8;

use crate::hash::mix;

/// The cluster's one keyed hash over packed words, all 64 bits (also the cluster's hash key
/// derivation, config digest and frame fingerprints).
#[inline]
pub fn hash64(key: u64, words: &[u64]) -> u64 {
    let mut h = mix(key);
    for w in words {
        h = mix(h ^ *w);
    }
    h
}

/// `H_k` over packed words: a distribution id is the top 8 bits of [`hash64`] (the best
/// mixed).
#[inline]
pub fn hash_words(key: u64, words: &[u64]) -> u8 {
    (hash64(key, words) >> 56) as u8
}

/// `bytes` packed into little-endian words (the last one zero-padded), for [`hash64`].
pub fn byte_words(bytes: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bytes.chunks(8).map(|c| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(w)
    })
}

/// An endpoint packed in one word (address, port).
#[inline]
pub fn endpoint_word(addr: Ipv4Addr, port: u16) -> u64 {
    (u64::from(u32::from(addr)) << 16) | u64::from(port)
}

/// The distribution id of an inside endpoint: every session of one inside endpoint shares one
/// NAT mapping (endpoint-independent mapping), so the id depends on nothing else, and the
/// mapping's outside port carries it ([`id_of_port`]).
#[inline]
pub fn endpoint_id(key: u64, proto: u8, addr: Ipv4Addr, port: u16) -> u8 {
    hash_words(
        key,
        &[TAG_ENDPOINT | u64::from(proto), endpoint_word(addr, port)],
    )
}

/// The distribution id of an ESP session ([`crate::esp`]): ESP has no port to carry an id, and
/// both directions of an SA pair share only the remote address (the destination of inside →
/// remote packets, the source of remote → pool packets), so the id is a keyed hash of it alone
/// and one node owns every ESP session with that remote.
#[inline]
pub fn esp_id(key: u64, remote: Ipv4Addr) -> u8 {
    hash_words(
        key,
        &[
            TAG_ESP | u64::from(crate::esp::PROTO_ESP),
            u64::from(u32::from(remote)),
        ],
    )
}

/// The distribution id an outside port (or ICMP identifier) carries.
#[inline]
pub fn id_of_port(port_min: u16, port: u16) -> u8 {
    (port.wrapping_sub(port_min) & 0xff) as u8
}

/// Checks that `g` (for `workers` workers) gives every block at least one port of each id;
/// the error says why and what to change.
pub fn check_geometry(g: &Geometry, workers: u16) -> Result<(), String> {
    if g.shift >= 8 {
        return Ok(());
    }
    let ports = u32::from(g.port_max) - u32::from(g.port_min) + 1;
    let need = IDS as u32 * crate::vid::SPARE_FACTOR * u32::from(workers.max(1));
    Err(format!(
        "a cluster needs NAT port blocks of at least {IDS} ports (one port of each distribution id per block): \
         the port range {}-{} ({ports} ports) over {workers} worker(s) x {} blocks gives blocks of {}; \
         it needs at least {IDS} x {} x {workers} = {need} ports: widen the port range or use fewer workers \
         (at most {} with this range)",
        g.port_min,
        g.port_max,
        crate::vid::SPARE_FACTOR,
        g.block_len(),
        crate::vid::SPARE_FACTOR,
        ports / (IDS as u32 * crate::vid::SPARE_FACTOR),
    ))
}

/// A set of distribution ids (a bitmap of 256).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IdSet([u64; 4]);

impl IdSet {
    /// The empty set.
    pub const EMPTY: IdSet = IdSet([0; 4]);

    /// Adds `id`.
    #[inline]
    pub fn insert(&mut self, id: u8) {
        self.0[usize::from(id >> 6)] |= 1 << (id & 63);
    }

    /// True when `id` is in the set.
    #[inline]
    pub fn contains(&self, id: u8) -> bool {
        self.0[usize::from(id >> 6)] & (1 << (id & 63)) != 0
    }

    /// How many ids the set holds.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// True without ids.
    pub fn is_empty(&self) -> bool {
        self.0 == [0; 4]
    }
}

impl FromIterator<u8> for IdSet {
    fn from_iter<I: IntoIterator<Item = u8>>(iter: I) -> IdSet {
        let mut s = IdSet::EMPTY;
        for id in iter {
            s.insert(id);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_s_id_is_its_offset_modulo_256() {
        assert_eq!(id_of_port(1024, 1024), 0);
        assert_eq!(id_of_port(1024, 1024 + 255), 255);
        assert_eq!(id_of_port(1024, 1024 + 256 + 7), 7);
        assert_eq!(id_of_port(1000, 65535), ((65535 - 1000) % 256) as u8);
    }

    #[test]
    fn blocks_smaller_than_256_ports_are_refused_with_the_arithmetic() {
        assert!(check_geometry(&Geometry::new(1024, 65535, 2), 2).is_ok());
        assert!(check_geometry(&Geometry::new(1024, 65535, 126), 126).is_ok());
        let e = check_geometry(&Geometry::new(1024, 65535, 127), 127).unwrap_err();
        assert!(
            e.contains("64512 ports") && e.contains("= 65024 ports"),
            "{e}"
        );
        assert!(e.contains("at most 126"), "{e}");
        let e = check_geometry(&Geometry::new(40000, 40999, 2), 2).unwrap_err();
        assert!(
            e.contains("1000 ports") && e.contains("gives blocks of 128"),
            "{e}"
        );
    }

    #[test]
    fn an_esp_session_s_id_is_its_remote_s_under_the_key() {
        let (i, p, r) = (
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::new(198, 51, 100, 7),
        );
        // Outbound I -> R names R as destination, inbound R -> P as source: one id.
        let out = crate::esp::parse(&crate::translate::build::ipv4(
            i,
            r,
            50,
            64,
            &[0, 0, 0, 1, 0, 0, 0, 1],
        ))
        .unwrap();
        let inb = crate::esp::parse(&crate::translate::build::ipv4(
            r,
            p,
            50,
            64,
            &[0, 0, 0, 2, 0, 0, 0, 1],
        ))
        .unwrap();
        assert_eq!(esp_id(7, out.dst), esp_id(7, inb.src));
        // Keyed: some key moves it; and remotes spread over the ids.
        assert!((8..40u64).any(|k| esp_id(k, r) != esp_id(7, r)));
        let ids: IdSet = (0..1024u32)
            .map(|n| esp_id(7, Ipv4Addr::from(0xc633_6400 + n)))
            .collect();
        assert!(ids.len() > 200, "{}", ids.len());
        // Its own domain: not the endpoint hash of the same word.
        assert!((0..64u64).any(|k| esp_id(k, r) != endpoint_id(k, 50, r, 0)));
    }

    #[test]
    fn an_id_set_holds_what_was_inserted() {
        let s: IdSet = [0u8, 63, 64, 255].into_iter().collect();
        assert_eq!(s.len(), 4);
        assert!((0..=255u8).all(|i| s.contains(i) == [0, 63, 64, 255].contains(&i)));
        assert!(IdSet::EMPTY.is_empty() && !s.is_empty());
    }
}
