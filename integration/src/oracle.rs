//! An oracle for WCCP hash redirection that shares no code with the router or the `wccp`
//! crate: it reads the REDIRECT_ASSIGNs and GRE packets a capture holds, decodes the Assignment
//! Info with its own parser, computes buckets with its own hash (the octet-XOR wording of
//! reference §6.1), and says which cache each GRE packet should have gone to.
//!
//! Written from the reference only (§2 header, §3 framing, §3.7 Assignment Info, §3.9
//! Alternate Assignment, §6.1–6.2 buckets, §8 GRE + redirect header), so that a bug shared by the
//! router and the `wccp` crate cannot make the check pass.

use anyhow::{bail, ensure, Context, Result};
use std::net::Ipv4Addr;

/// One IPv4 packet of a capture, with its capture time in microseconds since the epoch.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Capture time (µs since the Unix epoch).
    pub ts_us: u64,
    /// The IPv4 packet (header included), cut to its total length.
    pub ip: Vec<u8>,
}

/// The IPv4 packets of a classic pcap file (tcpdump `-w`, Ethernet link type).
pub fn read_pcap(data: &[u8]) -> Result<Vec<Captured>> {
    ensure!(data.len() >= 24, "not a pcap file");
    let magic = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let (le, nanos) = match magic {
        0xa1b2_c3d4 => (true, false),
        0xa1b2_3c4d => (true, true),
        0xd4c3_b2a1 => (false, false),
        0x4d3c_b2a1 => (false, true),
        m => bail!("not a classic pcap file (magic {m:#x})"),
    };
    let u32_at = |at: usize| -> u32 {
        let b = [data[at], data[at + 1], data[at + 2], data[at + 3]];
        if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    let link = u32_at(20);
    ensure!(link == 1, "link type {link}, expected Ethernet");
    let mut out = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let (sec, frac, incl) = (
            u64::from(u32_at(off)),
            u64::from(u32_at(off + 4)),
            u32_at(off + 8) as usize,
        );
        let frame = data
            .get(off + 16..off + 16 + incl)
            .context("truncated pcap record")?;
        off += 16 + incl;
        let ts_us = sec * 1_000_000 + if nanos { frac / 1000 } else { frac };
        if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
            continue;
        }
        let ip = &frame[14..];
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]])).min(ip.len());
        out.push(Captured {
            ts_us,
            ip: ip[..total].to_vec(),
        });
    }
    Ok(out)
}

fn addr(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

fn be16(b: &[u8], at: usize) -> Result<usize> {
    let s = b.get(at..at + 2).context("short field")?;
    Ok(usize::from(u16::from_be_bytes([s[0], s[1]])))
}

fn be32(b: &[u8], at: usize) -> Result<usize> {
    let s = b.get(at..at + 4).context("short field")?;
    Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize)
}

/// A hash assignment as a REDIRECT_ASSIGN carried it: the cache list and the 256 bucket octets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashAssignment {
    /// When it was captured (µs since the epoch).
    pub ts_us: u64,
    /// The designated cache that sent it (the UDP source).
    pub from: Ipv4Addr,
    /// Caches by index (position in the Hash Buckets Assignment).
    pub caches: Vec<Ipv4Addr>,
    /// One octet per bucket (reference §6.2).
    pub buckets: Vec<u8>,
}

impl HashAssignment {
    /// The cache a packet whose hash key is the destination address `dst` (standard service 0)
    /// goes to, or `None` when its bucket is unassigned (forwarded normally).
    pub fn cache_for_dst(&self, dst: Ipv4Addr) -> Result<Option<Ipv4Addr>> {
        // Reference §6.1, [R1] wording: the XOR of all octets of the selected fields.
        let bucket = dst.octets().iter().fold(0u8, |a, b| a ^ b);
        match self.buckets[usize::from(bucket)] {
            0xff => Ok(None),
            b if b & 0x80 != 0 => bail!("bucket {bucket} uses the alternate hash ({b:#04x})"),
            b => self
                .caches
                .get(usize::from(b))
                .copied()
                .map(Some)
                .with_context(|| {
                    format!(
                        "bucket {bucket} names cache index {b} of {}",
                        self.caches.len()
                    )
                }),
        }
    }
}

/// Parses a WCCP REDIRECT_ASSIGN (UDP payload) carrying a hash assignment; `None` for any other
/// message (other types, mask assignments).
pub fn parse_redirect_assign(msg: &[u8]) -> Result<Option<(Vec<Ipv4Addr>, Vec<u8>)>> {
    if be32(msg, 0)? != 12 {
        return Ok(None);
    }
    let end = 8 + be16(msg, 6)?;
    ensure!(end <= msg.len(), "message Length {end} past the datagram");
    let mut off = 8;
    while off + 4 <= end {
        let (kind, len) = (be16(msg, off)?, be16(msg, off + 2)?);
        let body = msg
            .get(off + 4..off + 4 + len)
            .context("component past the end")?;
        off += 4 + len;
        let hash_part = match kind {
            // Assignment Info: key (8), router count and 12-octet elements, then the buckets.
            6 => {
                let routers = be32(body, 8)?;
                body.get(12 + 12 * routers..).context("short router list")?
            }
            // Alternate Assignment: type, length, key, routers, then the body by type.
            13 => {
                if be16(body, 0)? != 0 {
                    return Ok(None);
                }
                let routers = be32(body, 12)?;
                body.get(16 + 12 * routers..).context("short router list")?
            }
            _ => continue,
        };
        let n = be32(hash_part, 0)?;
        ensure!(n <= 32, "{n} caches");
        let list = hash_part.get(4..4 + 4 * n).context("short cache list")?;
        let caches = list.chunks(4).map(addr).collect();
        let buckets = hash_part
            .get(4 + 4 * n..4 + 4 * n + 256)
            .context("short bucket table")?
            .to_vec();
        return Ok(Some((caches, buckets)));
    }
    bail!("a REDIRECT_ASSIGN without an assignment")
}

/// Every hash REDIRECT_ASSIGN (UDP to port 2048) in `packets`.
pub fn redirect_assigns(packets: &[Captured]) -> Result<Vec<HashAssignment>> {
    let mut out = Vec::new();
    for p in packets {
        let ip = &p.ip;
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[9] != 17 || ip.len() < ihl + 8 || be16(ip, ihl + 2)? != 2048 {
            continue;
        }
        if let Some((caches, buckets)) = parse_redirect_assign(&ip[ihl + 8..])? {
            out.push(HashAssignment {
                ts_us: p.ts_us,
                from: addr(&ip[12..]),
                caches,
                buckets,
            });
        }
    }
    out.sort_by_key(|a| a.ts_us);
    Ok(out)
}

/// A redirected packet: GRE from `outer_src` to `outer_dst` carrying an IPv4 packet to
/// `inner_dst` (with or without the 4-octet WCCP redirect header, §8).
#[derive(Debug, Clone, Copy)]
pub struct GrePacket {
    /// Capture time (µs since the epoch).
    pub ts_us: u64,
    /// Outer source (the router).
    pub outer_src: Ipv4Addr,
    /// Outer destination (the cache).
    pub outer_dst: Ipv4Addr,
    /// Inner destination address.
    pub inner_dst: Ipv4Addr,
}

/// The GRE packets of `packets` (IP protocol 47) whose payload is IPv4.
pub fn gre_packets(packets: &[Captured]) -> Result<Vec<GrePacket>> {
    let mut out = Vec::new();
    for p in packets {
        let ip = &p.ip;
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if ip[9] != 47 {
            continue;
        }
        let gre = ip.get(ihl..).context("short GRE packet")?;
        let flags = be16(gre, 0)?;
        let proto = be16(gre, 2)?;
        // Optional fields: checksum+reserved (C), key (K), sequence (S), RFC 2784/2890.
        let mut at = 4;
        for bit in [0x8000, 0x2000, 0x1000] {
            if flags & bit != 0 {
                at += 4;
            }
        }
        let inner_at = match proto {
            0x883e => at + 4,
            0x0800 => at,
            _ => continue,
        };
        let inner = gre.get(inner_at..).context("short GRE payload")?;
        ensure!(
            inner.len() >= 20 && inner[0] >> 4 == 4,
            "GRE payload is not IPv4"
        );
        out.push(GrePacket {
            ts_us: p.ts_us,
            outer_src: addr(&ip[12..]),
            outer_dst: addr(&ip[16..]),
            inner_dst: addr(&inner[16..]),
        });
    }
    Ok(out)
}

/// Checks every GRE packet `routers` sent against the assignment the REDIRECT_ASSIGNs in
/// `assigns` put in force (service 0: the bucket of the inner destination). Returns how many
/// packets were checked.
///
/// The assignment in force for a packet is the last REDIRECT_ASSIGN captured before it. Right
/// after a REDIRECT_ASSIGN that changed the buckets (within `settle_us`, the time the router
/// takes to validate and publish it) the previous assignment is accepted too.
pub fn check_gre_against_assignments(
    assigns: &[HashAssignment],
    gre: &[GrePacket],
    routers: &[Ipv4Addr],
    settle_us: u64,
) -> Result<usize> {
    let mut checked = 0;
    // The router's fast-failover probes (inner destination 192.0.2.1, issue 19) go to every
    // cache whatever its buckets: they are no client flow.
    let probe_origin = Ipv4Addr::new(192, 0, 2, 1);
    for g in gre
        .iter()
        .filter(|g| routers.contains(&g.outer_src) && g.inner_dst != probe_origin)
    {
        let upto = assigns.partition_point(|a| a.ts_us <= g.ts_us);
        ensure!(
            upto > 0,
            "GRE to {} (inner {}) at {} before any REDIRECT_ASSIGN",
            g.outer_dst,
            g.inner_dst,
            g.ts_us
        );
        let current = &assigns[upto - 1];
        let mut allowed = vec![current.cache_for_dst(g.inner_dst)?];
        if upto >= 2 && g.ts_us - current.ts_us < settle_us {
            allowed.push(assigns[upto - 2].cache_for_dst(g.inner_dst)?);
        }
        ensure!(
            allowed.contains(&Some(g.outer_dst)),
            "GRE for {} went to {} at {}, but the REDIRECT_ASSIGN from {} at {} gives {:?}",
            g.inner_dst,
            g.outer_dst,
            g.ts_us,
            current.from,
            current.ts_us,
            allowed
        );
        checked += 1;
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hash_matches_the_reference_vector_and_the_parser_reads_assignment_info() {
        // REDIRECT_ASSIGN by hand: Assignment Info with key, one router, two caches; bucket 200
        // (192.0.2.10, reference §6.1 vector) → index 1, everything else index 0.
        let (a, b) = (Ipv4Addr::new(10, 0, 3, 2), Ipv4Addr::new(10, 0, 4, 2));
        let mut body = vec![];
        body.extend_from_slice(&[10, 0, 3, 2, 0, 0, 0, 1]); // key
        body.extend_from_slice(&1u32.to_be_bytes());
        body.extend_from_slice(&[10, 0, 3, 1, 0, 0, 0, 2, 0, 0, 0, 1]);
        body.extend_from_slice(&2u32.to_be_bytes());
        body.extend_from_slice(&a.octets());
        body.extend_from_slice(&b.octets());
        let mut buckets = [0u8; 256];
        buckets[200] = 1;
        body.extend_from_slice(&buckets);
        let mut msg = vec![0, 0, 0, 12, 2, 0];
        let len = 8 + 28 + 4 + body.len();
        msg.extend_from_slice(&(len as u16).to_be_bytes());
        msg.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0]);
        msg.extend_from_slice(&[0, 1, 0, 24]);
        msg.extend_from_slice(&[0; 24]);
        msg.extend_from_slice(&[0, 6]);
        msg.extend_from_slice(&(body.len() as u16).to_be_bytes());
        msg.extend_from_slice(&body);
        let (caches, buckets) = parse_redirect_assign(&msg).unwrap().unwrap();
        assert_eq!(caches, vec![a, b]);
        let asg = HashAssignment {
            ts_us: 0,
            from: a,
            caches,
            buckets,
        };
        assert_eq!(
            asg.cache_for_dst(Ipv4Addr::new(192, 0, 2, 10)).unwrap(),
            Some(b)
        );
        assert_eq!(
            asg.cache_for_dst(Ipv4Addr::new(192, 0, 2, 11)).unwrap(),
            Some(a)
        );
    }
}
