//! GRE termination: a datagram read from the raw protocol-47 socket, taken apart into the router
//! that sent it, the WCCP redirect header and the inner packet (reference §4.12, §8).
//!
//! The raw socket hands over the whole IP datagram, outer header included, so the outer IPv4
//! header is checked here before GRE and the redirect header are stripped by the `gre` crate.
//! Every way a datagram can fail has a named drop reason, counted in [`GreCounters`].

use netwire::ipv4::{self, Ipv4Packet};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// What GRE termination counted.
#[derive(Debug, Default, Clone)]
pub struct GreCounters {
    /// Inner packets written to the TUN device.
    pub decapsulated: u64,
    /// Octets of those inner packets.
    pub bytes: u64,
    /// Datagrams not delivered, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
}

impl GreCounters {
    /// Counts one datagram dropped for `reason`.
    pub fn drop(&mut self, reason: &'static str) {
        *self.dropped.entry(reason).or_insert(0) += 1;
    }

    /// Sum of all drops.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }
}

/// A redirected datagram read from the raw GRE socket, taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redirected<'a> {
    /// Outer source: the router that redirected it (where a return goes).
    pub router: Ipv4Addr,
    /// Outer destination: this cache.
    pub local: Ipv4Addr,
    /// The WCCP redirect header, if it had one.
    pub redirect: Option<gre::WccpRedirectRepr>,
    /// The inner (original) IPv4 packet, at least a whole IPv4 header long.
    pub inner: &'a [u8],
}

impl Redirected<'_> {
    /// The inner packet's destination address.
    pub fn inner_dst(&self) -> Ipv4Addr {
        // parse_redirected only hands out inner packets of at least 20 octets.
        Ipv4Packet::new_unchecked(self.inner).dst_addr()
    }
}

/// Strips the outer IPv4 header of a datagram read from the raw GRE socket, then GRE and the
/// WCCP redirect header; returns the inner IPv4 packet or the drop reason. When `local` is set
/// the outer destination must be that address.
pub fn decapsulate_datagram(pkt: &[u8], local: Option<Ipv4Addr>) -> Result<&[u8], &'static str> {
    parse_redirected(pkt, local).map(|r| r.inner)
}

/// Like [`decapsulate_datagram`], keeping the outer addresses and the redirect header a
/// return needs.
pub fn parse_redirected(
    pkt: &[u8],
    local: Option<Ipv4Addr>,
) -> Result<Redirected<'_>, &'static str> {
    let first = *pkt.first().ok_or("outer-truncated")?;
    if first >> 4 != 4 {
        return Err("outer-not-ipv4");
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < ipv4::HEADER_LEN || pkt.len() < ihl {
        return Err("outer-truncated");
    }
    // At least a 20-octet header is present, so every fixed-header accessor is in bounds.
    let outer = Ipv4Packet::new_unchecked(pkt);
    if outer.protocol() != ipv4::PROTO_GRE {
        return Err("outer-not-gre");
    }
    let (router, dst) = (outer.src_addr(), outer.dst_addr());
    if local.is_some_and(|l| l != dst) {
        return Err("not-for-us");
    }
    // The kernel hands raw sockets the datagram with the total length as sent; a length that
    // does not fit what arrived is not trusted.
    let total = outer.total_len();
    let end = if total >= ihl && total <= pkt.len() {
        total
    } else {
        pkt.len()
    };
    let gre_bytes = pkt.get(ihl..end).ok_or("outer-truncated")?;
    let d = gre::decapsulate(gre_bytes).map_err(|_| "gre-malformed")?;
    let inner = d.inner;
    if inner.len() < ipv4::HEADER_LEN || inner.first().map(|b| b >> 4) != Some(4) {
        return Err("inner-not-ipv4");
    }
    Ok(Redirected {
        router,
        local: dst,
        redirect: d.redirect,
        inner,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// 10.0.3.1 → 10.0.3.2 GRE (0x883E) with a redirect header (service 0, primary bucket 7),
    /// carrying a bare 20-octet IPv4 header 10.0.1.2 → 10.0.2.2, protocol TCP.
    fn redirected() -> (Vec<u8>, Vec<u8>) {
        let inner: Vec<u8> = {
            let mut p = vec![0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0];
            p.extend_from_slice(&[10, 0, 1, 2, 10, 0, 2, 2]);
            p
        };
        let mut outer = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 47, 0, 0];
        outer.extend_from_slice(&[10, 0, 3, 1, 10, 0, 3, 2]);
        outer.extend_from_slice(&[0, 0, 0x88, 0x3e, 0, 0, 0, 7]);
        outer.extend_from_slice(&inner);
        let len = outer.len() as u16;
        outer[2..4].copy_from_slice(&len.to_be_bytes());
        (outer, inner)
    }

    #[test]
    fn decapsulates_wccp_gre() {
        let (outer, inner) = redirected();
        let me = Ipv4Addr::new(10, 0, 3, 2);
        assert_eq!(decapsulate_datagram(&outer, Some(me)).unwrap(), &inner[..]);
        assert_eq!(
            decapsulate_datagram(&outer, Some(Ipv4Addr::new(10, 0, 3, 9))),
            Err("not-for-us")
        );
        let mut not_gre = outer.clone();
        not_gre[9] = 6;
        assert_eq!(decapsulate_datagram(&not_gre, None), Err("outer-not-gre"));
        assert_eq!(
            decapsulate_datagram(&outer[..26], None),
            Err("gre-malformed")
        );
        let r = parse_redirected(&outer, Some(me)).unwrap();
        assert_eq!(r.router, Ipv4Addr::new(10, 0, 3, 1));
        assert_eq!(r.local, me);
        assert_eq!(
            r.redirect.map(|h| (h.service_id, h.primary_bucket)),
            Some((0, 7))
        );
        assert_eq!(r.inner_dst(), Ipv4Addr::new(10, 0, 2, 2));
    }

    #[test]
    fn every_prefix_is_an_error_not_a_panic() {
        let (outer, _) = redirected();
        for n in 0..outer.len() {
            assert!(parse_redirected(&outer[..n], None).is_err(), "prefix {n}");
        }
        assert_eq!(parse_redirected(&[], None), Err("outer-truncated"));
        assert_eq!(parse_redirected(&[0x60], None), Err("outer-not-ipv4"));
        assert_eq!(parse_redirected(&[0x46; 20], None), Err("outer-truncated"));
    }

    #[test]
    fn a_total_length_past_the_datagram_is_not_trusted() {
        let (mut outer, inner) = redirected();
        outer[2..4].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(decapsulate_datagram(&outer, None).unwrap(), &inner[..]);
    }

    #[test]
    fn counters_sum_their_drops() {
        let mut c = GreCounters::default();
        c.drop("gre-malformed");
        c.drop("gre-malformed");
        c.drop("not-for-us");
        assert_eq!(c.dropped_total(), 3);
        assert_eq!(c.dropped.get("gre-malformed"), Some(&2));
    }
}
