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
//! Counters: `bypass.bypassed.{gre,l2}` and `bypass.errors` in the status JSON and the logs.

use crate::decap::Redirected;
use crate::routes::{next_hop, read_routes, KernelRoute};
use crate::sys;
use anyhow::{Context, Result};
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

    /// The bypassed prefixes.
    pub fn prefixes(&self) -> &[Ipv4Network] {
        &self.prefixes
    }

    /// Whether the redirected packet is for a bypassed prefix.
    pub fn matches(&self, r: &Redirected<'_>) -> bool {
        !self.prefixes.is_empty() && {
            let dst = r.inner_dst();
            self.prefixes.iter().any(|p| p.contains(dst))
        }
    }

    /// Re-reads the kernel's routes (only needed with prefixes to bypass).
    pub fn refresh_routes(&mut self) {
        if !self.prefixes.is_empty() {
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
        let redirect = r.redirect.unwrap_or_default();
        match self.return_method(redirect.service_id, r.router) {
            None => self.counters.error("no-negotiated-method"),
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
                        return;
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
                    Ok(_) => self.counters.gre += 1,
                    Err(e) => {
                        tracing::debug!(error = %e, router = %r.router, "GRE return failed");
                        self.counters.error("gre-send-failed");
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
                    return;
                }
                match sys::send_raw_ipv4(out, r.inner, dst) {
                    Ok(_) => self.counters.l2 += 1,
                    Err(e) => {
                        tracing::debug!(error = %e, %dst, "L2 return failed");
                        self.counters.error("l2-send-failed");
                    }
                }
            }
        }
    }
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
