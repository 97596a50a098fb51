//! Packet return (reference §8): redirected packets for a `--bypass` destination are not proxied
//! but handed back to the router that redirected them, by the return method negotiated with that
//! router for the service (GRE when there is no engine, `--gre-only`):
//! - GRE: outer IPv4 cache → router (the redirected GRE's outer source), GRE 0x883E, the redirect
//!   header it arrived with, the inner packet unchanged; sent on an `IPPROTO_RAW` socket (a
//!   return too big for the link goes to the protocol-47 socket, which lets the kernel fragment).
//! - L2: the inner packet unchanged, sent on the `IPPROTO_RAW` socket toward its destination;
//!   the kernel frames it to the next hop's MAC, so it is only sent when `/proc/net/route` (main
//!   table, re-read every 10 s) says the next hop for that destination is the router (the usual
//!   cache setup: default route through the router); otherwise `l2-router-not-next-hop` is
//!   counted. Policy routing beyond the main table is not looked at.
//!
//!
//! With `--return-rewrite PREFIX=ADDRESS` (seed 001, claims 37-38) a redirected packet for a
//! destination in PREFIX is returned too, its destination rewritten to ADDRESS (an alternate
//! origin, say) with the IPv4 and TCP/UDP checksums updated incrementally (RFC 1624; a zero
//! UDP checksum stays zero; later fragments carry no L4 header); the router forwards it to the
//! new destination once, never redirecting a returned packet again. With `--return-copy` every
//! returned packet (as returned, after any rewrite) is also copied to a pcap file or a TAP
//! device (module `copy`).
//!
//! Counters: `bypass.bypassed.{gre,l2,rewritten,copied}` and `bypass.errors` in the status
//! JSON and the logs.

use crate::copy::CopySink;
use crate::decap::Redirected;
use crate::routes::{next_hop, read_routes, KernelRoute};
use crate::sys;
use anyhow::{Context, Result};
use conf::cache::ReturnRewrite;
use conf::Ipv4Network;
use netwire::ipv4::{self, Ipv4Packet};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use wccp::cache::CacheEngine;
use wccp::engine::ReturnMethod;

/// What the bypass counted.
#[derive(Debug, Default, Clone)]
pub struct BypassCounters {
    /// Inner packets returned to their router by GRE.
    pub gre: u64,
    /// Inner packets returned to their router at layer 2.
    pub l2: u64,
    /// Returned packets whose destination was rewritten (`--return-rewrite`).
    pub rewritten: u64,
    /// Returned packets copied to the `--return-copy` sink.
    pub copied: u64,
    /// Bypassed packets that could not be returned, by reason.
    pub errors: BTreeMap<&'static str, u64>,
}

impl BypassCounters {
    fn error(&mut self, reason: &'static str) {
        *self.errors.entry(reason).or_insert(0) += 1;
    }

    /// Sum of all errors.
    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// The bypassed prefixes and what returning a packet needs: the send socket, the negotiated
/// return methods and the kernel's routes.
#[derive(Debug)]
pub struct Bypass {
    /// `--bypass` prefixes.
    prefixes: Vec<Ipv4Network>,
    /// `--return-rewrite` entries, first match first.
    rewrites: Vec<ReturnRewrite>,
    /// `--return-copy` sink.
    copy: Option<CopySink>,
    /// The rewritten inner packet being returned.
    rewrite_buf: Vec<u8>,
    /// Negotiated return method per (service, router address or router ID), refreshed after
    /// every engine step; `None` without an engine (`--gre-only`), where GRE applies.
    returns: Option<BTreeMap<(u8, Ipv4Addr), ReturnMethod>>,
    /// `IPPROTO_RAW` send socket for returns (only with prefixes to bypass).
    raw_out: Option<OwnedFd>,
    /// The kernel's IPv4 routes, refreshed periodically (the L2 next-hop check).
    routes: Vec<KernelRoute>,
    /// IPv4 identification of the GRE returns.
    ident: u16,
    out_buf: Vec<u8>,
    /// What was returned and what failed.
    pub counters: BypassCounters,
}

impl Bypass {
    /// A bypass of `prefixes`; with any, opens the send socket and reads the routes. `engine`
    /// says whether return methods are negotiated here (false in `--gre-only` mode).
    pub fn new(prefixes: Vec<Ipv4Network>, engine: bool) -> Result<Bypass> {
        let mut b = Bypass {
            prefixes,
            rewrites: Vec::new(),
            copy: None,
            rewrite_buf: Vec::new(),
            returns: engine.then(BTreeMap::new),
            raw_out: None,
            routes: Vec::new(),
            ident: 0,
            out_buf: Vec::new(),
            counters: BypassCounters::default(),
        };
        if !b.prefixes.is_empty() {
            // IPPROTO_RAW implies IP_HDRINCL: returns are sent with the headers written here.
            b.raw_out = Some(
                sys::open_raw_ip_socket(libc::IPPROTO_RAW)
                    .context("opening the raw send socket")?,
            );
            b.routes = read_routes();
            tracing::info!(bypass = ?b.prefixes.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "bypassed destinations are returned to the router");
        }
        Ok(b)
    }

    /// Adds the `--return-rewrite` entries (their destinations are returned, rewritten);
    /// opens the send socket if the bypass had none.
    pub fn with_rewrites(mut self, rewrites: Vec<ReturnRewrite>) -> Result<Bypass> {
        if !rewrites.is_empty() && self.raw_out.is_none() {
            self.raw_out = Some(
                sys::open_raw_ip_socket(libc::IPPROTO_RAW)
                    .context("opening the raw send socket")?,
            );
            self.routes = read_routes();
        }
        if !rewrites.is_empty() {
            tracing::info!(rewrite = ?rewrites.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                "rewritten destinations are returned to the router");
        }
        self.rewrites = rewrites;
        Ok(self)
    }

    /// Copies every returned packet to `copy`.
    pub fn with_copy(mut self, copy: Option<CopySink>) -> Bypass {
        self.copy = copy;
        self
    }

    /// The bypassed prefixes.
    pub fn prefixes(&self) -> &[Ipv4Network] {
        &self.prefixes
    }

    /// The rewrite entries.
    pub fn rewrites(&self) -> &[ReturnRewrite] {
        &self.rewrites
    }

    /// The copy sink's name (`pcap:FILE`, `tap:NAME`), if any.
    pub fn copy_name(&self) -> Option<&str> {
        self.copy.as_ref().map(|c| c.name.as_str())
    }

    /// Whether the redirected packet is returned: its destination is in a bypassed or a
    /// rewritten prefix.
    pub fn matches(&self, r: &Redirected<'_>) -> bool {
        (!self.prefixes.is_empty() || !self.rewrites.is_empty()) && {
            let dst = r.inner_dst();
            self.prefixes.iter().any(|p| p.contains(dst))
                || self.rewrites.iter().any(|w| w.prefix.contains(dst))
        }
    }

    /// Re-reads the kernel's routes (only needed with packets to return).
    pub fn refresh_routes(&mut self) {
        if self.raw_out.is_some() {
            self.routes = read_routes();
        }
    }

    /// Re-reads the return method negotiated with each router.
    pub fn refresh_returns(&mut self, engine: &CacheEngine) {
        let Some(returns) = self.returns.as_mut() else {
            return;
        };
        returns.clear();
        for s in engine.services() {
            for r in &s.routers {
                let Some(m) = r.methods else { continue };
                let id = s.service.service_id;
                returns.insert((id, r.address), m.packet_return);
                // The router may source its GRE from its Router ID rather than the joined address.
                if let Some(rid) = r.router_id {
                    returns.entry((id, rid)).or_insert(m.packet_return);
                }
            }
        }
    }

    /// The return method for packets `router` redirected for `service`. Without an engine
    /// (`--gre-only`) nothing was negotiated here, so the protocol's default, GRE, applies.
    fn return_method(&self, service: u8, router: Ipv4Addr) -> Option<ReturnMethod> {
        match &self.returns {
            None => Some(ReturnMethod::Gre),
            Some(r) => r.get(&(service, router)).copied(),
        }
    }

    /// Returns a redirected packet to the router it came from, by the negotiated method.
    /// `gre_fd` is the protocol-47 socket, used when a GRE return is too big to send whole.
    pub fn return_packet(&mut self, r: &Redirected<'_>, gre_fd: RawFd) {
        let Some(out) = self.raw_out.as_ref().map(|f| f.as_raw_fd()) else {
            self.counters.error("no-send-socket");
            return;
        };
        let rewrite = {
            let dst = r.inner_dst();
            self.rewrites
                .iter()
                .find(|w| w.prefix.contains(dst))
                .map(|w| w.to)
        };
        let mut buf = std::mem::take(&mut self.rewrite_buf);
        let inner = match rewrite {
            None => r.inner,
            Some(to) => {
                if rewrite_destination(r.inner, to, &mut buf).is_none() {
                    self.rewrite_buf = buf;
                    self.counters.error("rewrite-malformed");
                    return;
                }
                &buf[..]
            }
        };
        let r = Redirected { inner, ..*r };
        if self.send_return(&r, out, gre_fd) {
            if rewrite.is_some() {
                self.counters.rewritten += 1;
            }
            if let Some(c) = self.copy.as_mut() {
                match c.write(r.inner) {
                    Ok(()) => self.counters.copied += 1,
                    Err(e) => {
                        tracing::debug!(error = %e, sink = %c.name, "return copy failed");
                        self.counters.error("copy-failed");
                    }
                }
            }
        }
        self.rewrite_buf = buf;
    }

    /// Sends one return by the negotiated method; true when it went out.
    fn send_return(&mut self, r: &Redirected<'_>, out: RawFd, gre_fd: RawFd) -> bool {
        let redirect = r.redirect.unwrap_or_default();
        match self.return_method(redirect.service_id, r.router) {
            None => {
                self.counters.error("no-negotiated-method");
                false
            }
            Some(ReturnMethod::Gre) => {
                self.ident = self.ident.wrapping_add(1);
                self.out_buf.resize(65536, 0);
                let n = match gre_return_packet(
                    &mut self.out_buf,
                    r.local,
                    r.router,
                    &redirect,
                    r.inner,
                    self.ident,
                ) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::debug!(error = %e, "GRE return encapsulation failed");
                        self.counters.error("gre-encapsulation-failed");
                        return false;
                    }
                };
                let pkt = self.out_buf.get(..n).unwrap_or_default();
                let sent = match sys::send_raw_ipv4(out, pkt, r.router) {
                    // IP_HDRINCL datagrams are never fragmented by the kernel; hand the GRE
                    // payload to the protocol-47 socket, which builds the outer header itself
                    // and fragments it.
                    Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                        let gre_payload = pkt.get(ipv4::HEADER_LEN..).unwrap_or_default();
                        sys::send_raw_ipv4(gre_fd, gre_payload, r.router)
                    }
                    other => other,
                };
                match sent {
                    Ok(_) => {
                        self.counters.gre += 1;
                        true
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, router = %r.router, "GRE return failed");
                        self.counters.error("gre-send-failed");
                        false
                    }
                }
            }
            Some(ReturnMethod::L2) => {
                // The inner packet goes out unchanged through the kernel's routing, which
                // frames it to the next hop's MAC: that is the router's MAC only when the
                // route to the destination goes through the router, so check that first.
                let dst = r.inner_dst();
                if next_hop(&self.routes, dst) != Some(r.router) {
                    self.counters.error("l2-router-not-next-hop");
                    return false;
                }
                match sys::send_raw_ipv4(out, r.inner, dst) {
                    Ok(_) => {
                        self.counters.l2 += 1;
                        true
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, %dst, "L2 return failed");
                        self.counters.error("l2-send-failed");
                        false
                    }
                }
            }
        }
    }
}

/// Copies the IPv4 packet `inner` into `out` with its destination address set to `to`,
/// updating the header checksum and, in a first (or only) fragment, the TCP or UDP checksum
/// (whose pseudo-header holds the destination; a zero UDP checksum means none and stays zero).
/// `None` when the packet is too short for the headers it claims.
pub fn rewrite_destination(inner: &[u8], to: Ipv4Addr, out: &mut Vec<u8>) -> Option<()> {
    use netwire::checksum::update32;
    let ip = Ipv4Packet::new_checked(inner).ok()?;
    let ihl = ip.header_len();
    let old = u32::from(ip.dst_addr());
    let new = u32::from(to);
    let (proto, first) = (ip.protocol(), ip.frag_offset() == 0);
    out.clear();
    out.extend_from_slice(inner);
    out.get_mut(16..20)?.copy_from_slice(&to.octets());
    let hc = u16::from_be_bytes([out[10], out[11]]);
    out[10..12].copy_from_slice(&update32(hc, old, new).to_be_bytes());
    let l4_check = match proto {
        ipv4::PROTO_TCP if first => Some(ihl + 16),
        ipv4::PROTO_UDP if first => Some(ihl + 6),
        _ => None,
    };
    if let Some(at) = l4_check {
        let c = out.get(at..at + 2)?;
        let c = u16::from_be_bytes([c[0], c[1]]);
        if !(proto == ipv4::PROTO_UDP && c == 0) {
            let mut n = update32(c, old, new);
            if proto == ipv4::PROTO_UDP && n == 0 {
                // UDP sends a computed zero as all ones (RFC 768).
                n = 0xffff;
            }
            out[at..at + 2].copy_from_slice(&n.to_be_bytes());
        }
    }
    Some(())
}

/// Builds the GRE return of `inner` (reference §8, packet return): outer IPv4 `cache` →
/// `router`, protocol 47, then GRE protocol 0x883E with the redirect header `redirect` (copied
/// from the one the packet arrived with), then `inner` unchanged. Returns the length written
/// to `out`.
pub fn gre_return_packet(
    out: &mut [u8],
    cache: Ipv4Addr,
    router: Ipv4Addr,
    redirect: &gre::WccpRedirectRepr,
    inner: &[u8],
    ident: u16,
) -> Result<usize, gre::Error> {
    const OUTER: usize = ipv4::HEADER_LEN;
    let body = out.get_mut(OUTER..).ok_or(gre::Error::BufferTooSmall {
        need: OUTER,
        have: 0,
    })?;
    let n = gre::encapsulate_into(body, inner, &gre::GreRepr::WCCP, Some(redirect))?;
    let total = u16::try_from(OUTER + n).map_err(|_| gre::Error::BufferTooSmall {
        need: OUTER + n,
        have: usize::from(u16::MAX),
    })?;
    // `body` held n octets after OUTER, so the header's 20 octets are in bounds.
    let header = out.get_mut(..OUTER).ok_or(gre::Error::BufferTooSmall {
        need: OUTER,
        have: 0,
    })?;
    // Every field is written: the buffer is reused and holds the previous return's bytes.
    let mut ip = Ipv4Packet::new_unchecked(header);
    ip.set_version(4);
    ip.set_header_len(OUTER);
    ip.set_tos(0);
    ip.set_total_len(total);
    ip.set_ident(ident);
    ip.clear_flags();
    ip.set_frag_offset(0);
    ip.set_ttl(64);
    ip.set_protocol(ipv4::PROTO_GRE);
    ip.set_src_addr(cache);
    ip.set_dst_addr(router);
    ip.fill_checksum();
    Ok(OUTER + n)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::decap::parse_redirected;

    #[test]
    fn gre_return_encapsulation_reads_back() {
        let mut inner = vec![0x45, 0, 0, 24, 0, 1, 0, 0, 63, 6, 0, 0];
        inner.extend_from_slice(&[10, 0, 1, 2, 10, 0, 2, 3, 0xde, 0xad, 0xbe, 0xef]);
        let redirect = gre::WccpRedirectRepr {
            dynamic: true,
            alternate_used: true,
            service_id: 90,
            alternate_bucket: 36,
            primary_bucket: 200,
            ..Default::default()
        };
        let (cache, router) = (Ipv4Addr::new(10, 0, 3, 2), Ipv4Addr::new(10, 0, 3, 1));
        // A poisoned buffer: every header field must be written, none left over.
        let mut out = vec![0xa5u8; 2048];
        let n = gre_return_packet(&mut out, cache, router, &redirect, &inner, 7).unwrap();
        let pkt = &out[..n];
        assert_eq!(n, 20 + 8 + inner.len());
        // Outer IPv4: cache → router, protocol 47, consistent length, valid checksum.
        let ip = Ipv4Packet::new_checked(pkt).unwrap();
        assert_eq!(ip.header_len(), 20);
        assert_eq!(ip.src_addr(), cache);
        assert_eq!(ip.dst_addr(), router);
        assert_eq!(ip.protocol(), 47);
        assert_eq!(ip.total_len(), n);
        assert_eq!((ip.ident(), ip.ttl(), ip.tos()), (7, 64, 0));
        assert!(!ip.dont_frag() && !ip.more_frags() && ip.frag_offset() == 0);
        assert!(ip.verify_checksum());
        assert_eq!(netwire::checksum::checksum(&pkt[..20]), 0);
        // GRE 0x883E + the redirect header it arrived with + the inner packet, intact.
        let d = gre::decapsulate(&pkt[20..]).unwrap();
        assert_eq!(d.gre.protocol, gre::GreProtocol::WccpRedirect);
        assert_eq!(u16::from(d.gre.protocol), 0x883e);
        assert_eq!(d.redirect, Some(redirect));
        assert_eq!(d.inner, &inner[..]);
        // And swcache's own parser reads it back the same way.
        let r = parse_redirected(pkt, Some(router)).unwrap();
        assert_eq!((r.router, r.local, r.inner), (cache, router, &inner[..]));
        // Too small a buffer is an error, not a panic.
        assert!(gre_return_packet(&mut [0u8; 30], cache, router, &redirect, &inner, 7).is_err());
        assert!(gre_return_packet(&mut [0u8; 10], cache, router, &redirect, &inner, 7).is_err());
    }

    /// An IPv4 packet `proto` 10.0.1.2:4000 → `dst`:80 with `payload`, every checksum right.
    fn packet(proto: u8, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        use netwire::checksum::{fold, pseudo_header, sum};
        let l4_hdr = if proto == ipv4::PROTO_TCP { 20 } else { 8 };
        let total = 20 + l4_hdr + payload.len();
        let mut p = vec![0u8; total];
        p[..20].copy_from_slice(&[
            0x45, 0, 0, 0, 0, 1, 0, 0, 63, proto, 0, 0, 10, 0, 1, 2, 0, 0, 0, 0,
        ]);
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[16..20].copy_from_slice(&dst.octets());
        let c = netwire::checksum::checksum(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        p[20..22].copy_from_slice(&4000u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        if proto == ipv4::PROTO_TCP {
            p[32] = 0x50;
            p[33] = 0x18;
        } else {
            p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        }
        p[20 + l4_hdr..].copy_from_slice(payload);
        let l4_len = (total - 20) as u16;
        let acc = pseudo_header([10, 0, 1, 2], dst.octets(), proto, l4_len);
        let c = !fold(sum(acc, &p[20..]));
        let at = if proto == ipv4::PROTO_TCP { 36 } else { 26 };
        p[at..at + 2].copy_from_slice(&c.to_be_bytes());
        p
    }

    /// True when the IPv4 header and the TCP/UDP checksum verify.
    fn checksums_verify(p: &[u8]) -> bool {
        use netwire::checksum::{fold, pseudo_header, sum};
        let src: [u8; 4] = p[12..16].try_into().unwrap();
        let dst: [u8; 4] = p[16..20].try_into().unwrap();
        let acc = pseudo_header(src, dst, p[9], (p.len() - 20) as u16);
        netwire::checksum::checksum(&p[..20]) == 0 && fold(sum(acc, &p[20..])) == 0xffff
    }

    #[test]
    fn rewriting_the_destination_keeps_every_checksum_right() {
        let (from, to) = (Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(10, 0, 2, 9));
        for proto in [ipv4::PROTO_TCP, ipv4::PROTO_UDP] {
            for payload in [&b""[..], b"x", b"hello, origin"] {
                let p = packet(proto, from, payload);
                assert!(checksums_verify(&p));
                let mut out = Vec::new();
                rewrite_destination(&p, to, &mut out).unwrap();
                assert_eq!(&out[16..20], &to.octets());
                assert_eq!(out.len(), p.len());
                assert!(checksums_verify(&out), "proto {proto} payload {payload:?}");
            }
        }
        // A UDP datagram without a checksum keeps none.
        let mut p = packet(ipv4::PROTO_UDP, from, b"no sum");
        p[26..28].copy_from_slice(&[0, 0]);
        let mut out = Vec::new();
        rewrite_destination(&p, to, &mut out).unwrap();
        assert_eq!(&out[26..28], &[0, 0]);
        assert_eq!(netwire::checksum::checksum(&out[..20]), 0);
        // A later fragment has no L4 header: only the IPv4 header changes.
        let mut f = packet(ipv4::PROTO_TCP, from, b"0123456789abcdef");
        f[6..8].copy_from_slice(&[0, 3]);
        let c = {
            f[10..12].copy_from_slice(&[0, 0]);
            netwire::checksum::checksum(&f[..20])
        };
        f[10..12].copy_from_slice(&c.to_be_bytes());
        rewrite_destination(&f, to, &mut out).unwrap();
        assert_eq!(&out[20..], &f[20..]);
        assert_eq!(netwire::checksum::checksum(&out[..20]), 0);
        // Truncated input is refused, not a panic.
        assert!(rewrite_destination(&p[..10], to, &mut out).is_none());
        assert!(
            rewrite_destination(&packet(ipv4::PROTO_TCP, from, b"")[..30], to, &mut out).is_none()
        );
    }

    #[test]
    fn bypass_matches_inner_destinations_in_its_prefixes() {
        let mut inner = vec![0x45, 0, 0, 20, 0, 1, 0, 0, 63, 6, 0, 0];
        inner.extend_from_slice(&[10, 0, 1, 2, 10, 0, 2, 3]);
        let r = Redirected {
            router: Ipv4Addr::new(10, 0, 3, 1),
            local: Ipv4Addr::new(10, 0, 3, 2),
            redirect: None,
            inner: &inner,
        };
        // No prefixes: no socket is opened and nothing matches.
        let none = Bypass::new(Vec::new(), true).unwrap();
        assert!(!none.matches(&r));
        let with = |p: &str| Bypass {
            prefixes: vec![p.parse().unwrap()],
            ..Bypass::new(Vec::new(), true).unwrap()
        };
        assert!(with("10.0.2.3/32").matches(&r));
        assert!(with("10.0.2.0/24").matches(&r));
        assert!(!with("10.0.2.4/32").matches(&r));
    }

    #[test]
    fn return_method_is_gre_without_an_engine_and_negotiated_with_one() {
        let router = Ipv4Addr::new(10, 0, 3, 1);
        let gre_only = Bypass::new(Vec::new(), false).unwrap();
        assert_eq!(gre_only.return_method(0, router), Some(ReturnMethod::Gre));
        let mut b = Bypass::new(Vec::new(), true).unwrap();
        assert_eq!(b.return_method(0, router), None, "nothing negotiated yet");
        b.returns = Some(BTreeMap::from([((0, router), ReturnMethod::L2)]));
        assert_eq!(b.return_method(0, router), Some(ReturnMethod::L2));
        assert_eq!(b.return_method(90, router), None);
    }

    #[test]
    fn a_return_without_a_send_socket_is_counted() {
        let mut inner = vec![0x45, 0, 0, 20, 0, 1, 0, 0, 63, 6, 0, 0];
        inner.extend_from_slice(&[10, 0, 1, 2, 10, 0, 2, 3]);
        let r = Redirected {
            router: Ipv4Addr::new(10, 0, 3, 1),
            local: Ipv4Addr::new(10, 0, 3, 2),
            redirect: None,
            inner: &inner,
        };
        let mut b = Bypass::new(Vec::new(), false).unwrap();
        b.return_packet(&r, -1);
        assert_eq!(b.counters.errors.get("no-send-socket"), Some(&1));
        assert_eq!(b.counters.errors_total(), 1);
    }
}
