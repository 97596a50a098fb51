//! `swcache`: the WCCPv2 cache agent (SPEC.md §4, "what swcache must do as a cache").
//!
//! One tokio current-thread loop drives the sans-IO [`CacheEngine`] over a UDP socket bound to
//! `address:2048` (HERE_I_AM, election, REDIRECT_ASSIGN all happen inside the engine; the loop
//! feeds it datagrams and deadlines and sends what it polls), and terminates WCCP GRE in
//! userspace: a raw IP socket for protocol 47 receives the redirected datagrams, the outer IPv4,
//! GRE and redirect headers are stripped and the inner packet is written to a TUN device, where
//! a local transparent proxy intercepts it (reference §8). `--gre-only` runs just the GRE part,
//! for a cache that speaks WCCP itself. A Unix status socket answers `status` with JSON.
//!
//! `--bypass PREFIX` returns redirected packets for those destinations to the router that
//! redirected them instead of proxying them (reference §8, packet return), by the return method
//! negotiated with that router for the service (GRE when there is no engine, `--gre-only`):
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

use crate::sys;
use anyhow::{bail, Context, Result};
use clap::Parser;
use conf::Ipv4Network;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UdpSocket, UnixListener};
use tokio::sync::{mpsc, oneshot};
use wccp::cache::{CacheConfig, CacheEngine, CacheEvent, CacheServiceConfig};
use wccp::engine::{AssignmentMethod, ForwardingMethod, ReturnMethod};
use wccp::wire::{ServiceFlags, ServiceInfo};

use wccp::engine::WCCP_PORT;

/// IP protocol number of GRE.
const IPPROTO_GRE: libc::c_int = 47;
/// How often the GRE counters are logged when they changed.
const COUNTER_LOG_EVERY: Duration = Duration::from_secs(10);

/// swcache: a WCCPv2 cache agent that joins routers and terminates their GRE into a TUN device.
#[derive(Parser, Debug, Clone)]
#[command(version, about)]
pub struct Args {
    /// This cache's address (Web-Cache Identity; WCCP is sent from address:2048).
    #[arg(long, value_name = "IPV4", required_unless_present = "gre_only")]
    pub address: Option<Ipv4Addr>,
    /// A router to join (repeatable).
    #[arg(
        long = "router",
        value_name = "IPV4",
        required_unless_present = "gre_only"
    )]
    pub routers: Vec<Ipv4Addr>,
    /// A service group: `0` (standard web-cache) or `ID:tcp|udp:PORT[,PORT…][:FIELD+…]`
    /// (dynamic, destination ports, hashed on the FIELDs — src-ip, dst-ip, src-port, dst-port —
    /// by default on the destination address). Repeatable.
    #[arg(long = "service", value_name = "SPEC", default_value = "0")]
    pub services: Vec<ServiceSpec>,
    /// MD5 password shared with the routers (all services).
    #[arg(long)]
    pub password: Option<String>,
    /// Assignment weight.
    #[arg(long, default_value_t = 10000)]
    pub weight: u16,
    /// Forwarding method offered (`gre` or `l2`; repeatable, most preferred first).
    #[arg(long = "forwarding", value_name = "METHOD", default_value = "gre")]
    pub forwarding: Vec<Method>,
    /// Packet return method offered (`gre` or `l2`; repeatable, most preferred first).
    #[arg(long = "return", value_name = "METHOD", default_value = "gre")]
    pub packet_return: Vec<Method>,
    /// Assignment method offered (`hash` or `mask`; repeatable, most preferred first).
    #[arg(long = "assignment", value_name = "METHOD", default_value = "hash")]
    pub assignment: Vec<Assignment>,
    /// TUN device the decapsulated packets are written to.
    #[arg(long, default_value = "wccp0")]
    pub tun: String,
    /// Only terminate GRE (for a cache that speaks WCCP itself); no WCCP engine.
    #[arg(long)]
    pub gre_only: bool,
    /// Unix socket answering `status` with JSON.
    #[arg(long = "socket", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Log level (overridden by RUST_LOG).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Destination prefix (`A.B.C.D/LEN`) whose redirected packets are not proxied but returned
    /// to the router that redirected them, by the return method negotiated with it (repeatable).
    #[arg(long = "bypass", value_name = "PREFIX", value_parser = parse_prefix)]
    pub bypass: Vec<Ipv4Network>,
}

/// Parses a `--bypass` prefix (`A.B.C.D/LEN`, or a bare address for /32); host bits are
/// cleared, so `10.0.2.77/24` means `10.0.2.0/24`.
pub fn parse_prefix(s: &str) -> Result<Ipv4Network, String> {
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    let addr: Ipv4Addr = a
        .parse()
        .map_err(|_| format!("prefix {s:?}: bad IPv4 address"))?;
    let len: u8 = l
        .parse()
        .ok()
        .filter(|&l| l <= 32)
        .ok_or_else(|| format!("prefix {s:?}: the length must be 0–32"))?;
    Ipv4Network::new(addr, len)
        .and_then(|n| Ipv4Network::new(n.network(), len))
        .map_err(|e| format!("prefix {s:?}: {e}"))
}

/// A forwarding or return method on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// GRE with the WCCP redirect header.
    Gre,
    /// Layer 2.
    L2,
}

/// An assignment method on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Assignment {
    /// 256 hash buckets.
    Hash,
    /// Mask/value sets.
    Mask,
}

/// One `--service` argument, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec(pub ServiceInfo);

impl std::str::FromStr for ServiceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(':');
        let id: u8 = parts
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|_| format!("service {s:?}: the ID must be 0–255"))?;
        let Some(proto) = parts.next() else {
            if id == 0 {
                return Ok(ServiceSpec(ServiceInfo::standard(0)));
            }
            return Err(format!(
                "service {id}: a dynamic service needs ID:tcp|udp:PORT[,PORT…]"
            ));
        };
        if id == 0 {
            return Err("service 0 is the standard web-cache service: give just 0".into());
        }
        let protocol = match proto {
            "tcp" => 6,
            "udp" => 17,
            other => return Err(format!("service {id}: unknown protocol {other:?}")),
        };
        let ports = parts
            .next()
            .ok_or_else(|| format!("service {id}: missing port list"))?
            .split(',')
            .map(|p| p.parse::<u16>().map_err(|_| format!("bad port {p:?}")))
            .collect::<Result<Vec<_>, _>>()?;
        if ports.is_empty() || ports.len() > 8 || ports.contains(&0) {
            return Err(format!("service {id}: 1 to 8 non-zero ports"));
        }
        // Optional hash fields, `+`-separated; the default hashes the destination address.
        let mut flags = ServiceFlags::empty();
        if let Some(fields) = parts.next() {
            for f in fields.split('+') {
                flags |= match f {
                    "src-ip" => ServiceFlags::SRC_IP_HASH,
                    "dst-ip" => ServiceFlags::DST_IP_HASH,
                    "src-port" => ServiceFlags::SRC_PORT_HASH,
                    "dst-port" => ServiceFlags::DST_PORT_HASH,
                    other => {
                        return Err(format!(
                            "service {id}: unknown hash field {other:?}; expected src-ip, dst-ip, src-port, dst-port joined by +"
                        ))
                    }
                };
            }
        } else {
            flags = ServiceFlags::DST_IP_HASH;
        }
        if parts.next().is_some() {
            return Err(format!("service {s:?}: too many fields"));
        }
        Ok(ServiceSpec(ServiceInfo::dynamic(
            id, protocol, 0, flags, &ports,
        )))
    }
}

impl Args {
    /// The engine configuration these flags describe (`None` in `--gre-only` mode).
    pub fn cache_config(&self) -> Result<Option<CacheConfig>> {
        if self.gre_only {
            return Ok(None);
        }
        let address = self.address.context("--address is required")?;
        if self.routers.is_empty() {
            bail!("at least one --router is required");
        }
        let mut c = CacheConfig::new(address, self.routers.clone());
        c.weight = self.weight;
        c.forwarding = self
            .forwarding
            .iter()
            .map(|m| match m {
                Method::Gre => ForwardingMethod::Gre,
                Method::L2 => ForwardingMethod::L2,
            })
            .collect();
        c.packet_return = self
            .packet_return
            .iter()
            .map(|m| match m {
                Method::Gre => ReturnMethod::Gre,
                Method::L2 => ReturnMethod::L2,
            })
            .collect();
        c.assignment = self
            .assignment
            .iter()
            .map(|m| match m {
                Assignment::Hash => AssignmentMethod::Hash,
                Assignment::Mask => AssignmentMethod::Mask,
            })
            .collect();
        for s in &self.services {
            let mut sc = CacheServiceConfig::new(s.0.clone());
            if let Some(p) = &self.password {
                sc = sc.with_password(p.as_bytes());
            }
            c = c.with_service(sc);
        }
        c.validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        Ok(Some(c))
    }
}

/// What GRE termination counted.
#[derive(Debug, Default, Clone)]
pub struct GreCounters {
    /// Inner packets written to the TUN device.
    pub decapsulated: u64,
    /// Octets of those inner packets.
    pub bytes: u64,
    /// Datagrams not delivered, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Inner packets returned to their router by GRE (`--bypass`).
    pub bypassed_gre: u64,
    /// Inner packets returned to their router at layer 2 (`--bypass`).
    pub bypassed_l2: u64,
    /// Bypassed packets that could not be returned, by reason.
    pub bypass_errors: BTreeMap<&'static str, u64>,
}

impl GreCounters {
    fn drop(&mut self, reason: &'static str) {
        *self.dropped.entry(reason).or_insert(0) += 1;
    }

    fn bypass_error(&mut self, reason: &'static str) {
        *self.bypass_errors.entry(reason).or_insert(0) += 1;
    }

    /// Sum of all drops.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.values().sum()
    }

    /// Sum of all bypass errors.
    pub fn bypass_errors_total(&self) -> u64 {
        self.bypass_errors.values().sum()
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
    /// The inner (original) IPv4 packet.
    pub inner: &'a [u8],
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
    if ihl < 20 || pkt.len() < ihl {
        return Err("outer-truncated");
    }
    let total = pkt
        .get(2..4)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        .ok_or("outer-truncated")?;
    if pkt.get(9) != Some(&(IPPROTO_GRE as u8)) {
        return Err("outer-not-gre");
    }
    let addr = |at: usize| {
        pkt.get(at..at + 4)
            .map(|d| Ipv4Addr::new(d[0], d[1], d[2], d[3]))
            .ok_or("outer-truncated")
    };
    let (router, dst) = (addr(12)?, addr(16)?);
    if local.is_some_and(|l| l != dst) {
        return Err("not-for-us");
    }
    // The kernel hands raw sockets the datagram with the total length as sent.
    let end = if total >= ihl && total <= pkt.len() {
        total
    } else {
        pkt.len()
    };
    let gre_bytes = pkt.get(ihl..end).ok_or("outer-truncated")?;
    let d = gre::decapsulate(gre_bytes).map_err(|_| "gre-malformed")?;
    let inner = d.inner;
    if inner.len() < 20 || inner.first().map(|b| b >> 4) != Some(4) {
        return Err("inner-not-ipv4");
    }
    Ok(Redirected {
        router,
        local: dst,
        redirect: d.redirect,
        inner,
    })
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
    const OUTER: usize = crate::wire::ipv4::MIN_HEADER_LEN;
    let body = out.get_mut(OUTER..).ok_or(gre::Error::BufferTooSmall {
        need: OUTER,
        have: 0,
    })?;
    let n = gre::encapsulate_into(body, inner, &gre::GreRepr::WCCP, Some(redirect))?;
    let outer = crate::wire::ipv4::Ipv4Repr {
        src: cache,
        dst: router,
        protocol: IPPROTO_GRE as u8,
        payload_len: n,
        ttl: 64,
        ident,
        tos: 0,
        dont_fragment: false,
    };
    if OUTER + n > usize::from(u16::MAX) {
        return Err(gre::Error::BufferTooSmall {
            need: OUTER + n,
            have: usize::from(u16::MAX),
        });
    }
    // `body` held n octets after OUTER, so the header's 20 octets are in bounds.
    let header = out.get_mut(..OUTER).ok_or(gre::Error::BufferTooSmall {
        need: OUTER,
        have: 0,
    })?;
    outer.emit(header);
    Ok(OUTER + n)
}

/// One IPv4 route of the kernel's main table (`/proc/net/route`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelRoute {
    /// Destination prefix.
    pub dst: Ipv4Network,
    /// Gateway, when the route is through one (RTF_GATEWAY).
    pub gateway: Option<Ipv4Addr>,
    /// Metric (lower wins between equal prefixes).
    pub metric: u32,
}

/// Parses `/proc/net/route` text (addresses as host-order hex of network-order words); lines
/// that do not parse, and routes that are not up, are skipped.
pub fn parse_proc_route(text: &str) -> Vec<KernelRoute> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    let hex_addr = |h: &str| {
        u32::from_str_radix(h, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let dst = hex_addr(f.get(1)?)?;
            let gw = hex_addr(f.get(2)?)?;
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            let metric = f.get(6)?.parse().ok()?;
            let mask = u32::from(hex_addr(f.get(7)?)?);
            if flags & RTF_UP == 0 || mask.leading_ones() + mask.trailing_zeros() != 32 {
                return None;
            }
            let len = mask.leading_ones() as u8;
            Some(KernelRoute {
                dst: Ipv4Network::new(Ipv4Addr::from(u32::from(dst) & mask), len).ok()?,
                gateway: (flags & RTF_GATEWAY != 0).then_some(gw),
                metric,
            })
        })
        .collect()
}

/// The gateway the kernel would send a packet for `dst` through (longest prefix, then lowest
/// metric), or `None` when the best route is on-link or there is none.
pub fn next_hop(routes: &[KernelRoute], dst: Ipv4Addr) -> Option<Ipv4Addr> {
    routes
        .iter()
        .filter(|r| r.dst.contains(dst))
        .min_by_key(|r| (std::cmp::Reverse(r.dst.prefix()), r.metric))
        .and_then(|r| r.gateway)
}

/// A `status` request from a socket client, answered through the oneshot.
type StatusRequest = oneshot::Sender<String>;

/// The running agent's state: the engine (if any) and the GRE counters.
struct Agent {
    engine: Option<CacheEngine>,
    udp: Option<UdpSocket>,
    buf: Vec<u8>,
    gre: GreCounters,
    tun_name: String,
    address: Option<Ipv4Addr>,
    /// `--bypass` prefixes.
    bypass: Vec<Ipv4Network>,
    /// Negotiated return method per (service, router address or router ID), refreshed after
    /// every engine step.
    returns: BTreeMap<(u8, Ipv4Addr), ReturnMethod>,
    /// `IPPROTO_RAW` send socket for returns (only with `--bypass`).
    raw_out: Option<OwnedFd>,
    /// The kernel's IPv4 routes, refreshed periodically (the L2 next-hop check).
    routes: Vec<KernelRoute>,
    /// IPv4 identification of the GRE returns.
    ident: u16,
    out_buf: Vec<u8>,
}

impl Agent {
    /// Re-reads the return method negotiated with each router.
    fn refresh_returns(&mut self) {
        self.returns.clear();
        let Some(engine) = self.engine.as_ref() else {
            return;
        };
        for s in engine.services() {
            for r in &s.routers {
                let Some(m) = r.methods else { continue };
                let id = s.service.service_id;
                self.returns.insert((id, r.address), m.packet_return);
                // The router may source its GRE from its Router ID rather than the joined address.
                if let Some(rid) = r.router_id {
                    self.returns.entry((id, rid)).or_insert(m.packet_return);
                }
            }
        }
    }

    /// The return method for packets `router` redirected for `service`. Without an engine
    /// (`--gre-only`) nothing was negotiated here, so the protocol's default, GRE, applies.
    fn return_method(&self, service: u8, router: Ipv4Addr) -> Option<ReturnMethod> {
        if self.engine.is_none() {
            return Some(ReturnMethod::Gre);
        }
        self.returns.get(&(service, router)).copied()
    }

    /// Whether the inner packet is for a `--bypass` prefix.
    fn bypasses(&self, inner: &[u8]) -> bool {
        !self.bypass.is_empty()
            && inner
                .get(16..20)
                .map(|d| Ipv4Addr::new(d[0], d[1], d[2], d[3]))
                .is_some_and(|dst| self.bypass.iter().any(|p| p.contains(dst)))
    }

    /// Returns a redirected packet to the router it came from, by the negotiated method.
    /// `gre_fd` is the protocol-47 socket, used when a GRE return is too big to send whole.
    fn return_packet(&mut self, r: &Redirected<'_>, gre_fd: RawFd) {
        let Some(out) = self.raw_out.as_ref().map(|f| f.as_raw_fd()) else {
            self.gre.bypass_error("no-send-socket");
            return;
        };
        let redirect = r.redirect.unwrap_or_default();
        match self.return_method(redirect.service_id, r.router) {
            None => self.gre.bypass_error("no-negotiated-method"),
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
                        self.gre.bypass_error("gre-encapsulation-failed");
                        return;
                    }
                };
                let pkt = self.out_buf.get(..n).unwrap_or_default();
                let sent = match sys::send_raw_ipv4(out, pkt, r.router) {
                    // IP_HDRINCL datagrams are never fragmented by the kernel; hand the GRE
                    // payload to the protocol-47 socket, which builds the outer header itself
                    // and fragments it.
                    Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                        let gre_payload = pkt
                            .get(crate::wire::ipv4::MIN_HEADER_LEN..)
                            .unwrap_or_default();
                        sys::send_raw_ipv4(gre_fd, gre_payload, r.router)
                    }
                    other => other,
                };
                match sent {
                    Ok(_) => self.gre.bypassed_gre += 1,
                    Err(e) => {
                        tracing::debug!(error = %e, router = %r.router, "GRE return failed");
                        self.gre.bypass_error("gre-send-failed");
                    }
                }
            }
            Some(ReturnMethod::L2) => {
                // The inner packet goes out unchanged through the kernel's routing, which
                // frames it to the next hop's MAC: that is the router's MAC only when the
                // route to the destination goes through the router, so check that first.
                let dst = crate::wire::ipv4::dst(r.inner);
                if next_hop(&self.routes, dst) != Some(r.router) {
                    self.gre.bypass_error("l2-router-not-next-hop");
                    return;
                }
                match sys::send_raw_ipv4(out, r.inner, dst) {
                    Ok(_) => self.gre.bypassed_l2 += 1,
                    Err(e) => {
                        tracing::debug!(error = %e, %dst, "L2 return failed");
                        self.gre.bypass_error("l2-send-failed");
                    }
                }
            }
        }
    }

    async fn drain(&mut self, now: Instant) {
        let (Some(engine), Some(udp)) = (self.engine.as_mut(), self.udp.as_ref()) else {
            return;
        };
        while let Some(t) = engine.poll_transmit(now, &mut self.buf) {
            let payload = self.buf.get(..t.size).unwrap_or_default();
            let dst = SocketAddrV4::new(t.dst, WCCP_PORT);
            if let Err(e) = udp.send_to(payload, dst).await {
                tracing::warn!(router = %t.dst, error = %e, "sending a WCCP datagram failed");
            }
        }
        while let Some(ev) = engine.poll_event() {
            match ev {
                CacheEvent::RouterUp {
                    service,
                    router,
                    methods,
                } => tracing::info!(service, %router, ?methods, "router up: this cache is usable"),
                CacheEvent::RouterDown { service, router } => {
                    tracing::warn!(service, %router, "router down")
                }
                CacheEvent::Incompatible { service, router } => {
                    tracing::warn!(service, %router, "router offers no method this cache supports")
                }
                CacheEvent::DesignatedChanged {
                    service,
                    designated,
                } => tracing::info!(service, designated, "designated cache changed"),
                CacheEvent::AssignmentSent { service, key } => {
                    tracing::info!(service, ?key, "assignment sent")
                }
            }
        }
        self.refresh_returns();
    }

    fn status_json(&self) -> serde_json::Value {
        let now = Instant::now();
        let services: Vec<serde_json::Value> = self
            .engine
            .as_ref()
            .map(|e| e.services())
            .unwrap_or_default()
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.service.service_id,
                    "kind": format!("{:?}", s.service.service_type).to_lowercase(),
                    "security": format!("{:?}", s.security).to_lowercase(),
                    "view_change_number": s.view_change_number,
                    "caches": s.caches.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                    "designated_cache": s.designated_cache.map(|c| c.to_string()),
                    "designated": s.designated,
                    "sent_key": s.sent_key.map(|k| format!("{}/{}", k.cache_ip, k.change_number)),
                    "sent_shares": s.sent_shares.iter()
                        .map(|(c, n)| (c.to_string(), *n)).collect::<BTreeMap<_, _>>(),
                    "routers": s.routers.iter().map(|r| serde_json::json!({
                        "address": r.address.to_string(),
                        "alive": r.alive,
                        "router_id": r.router_id.map(|a| a.to_string()),
                        "usable_here": r.usable_here,
                        "incompatible": r.incompatible,
                        "methods": r.methods.map(|m| format!("{:?}/{:?}/{:?}",
                            m.forwarding, m.packet_return, m.assignment).to_lowercase()),
                        "view_caches": r.view_caches.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                        "last_heard_secs": r.last_heard.map(|t| now.saturating_duration_since(t).as_secs()),
                    })).collect::<Vec<_>>(),
                    "drops": s.counters.drops.iter()
                        .map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
                })
            })
            .collect();
        serde_json::json!({
            "address": self.address.map(|a| a.to_string()),
            "gre_only": self.engine.is_none(),
            "tun": self.tun_name,
            "services": services,
            "gre": {
                "decapsulated": self.gre.decapsulated,
                "bytes": self.gre.bytes,
                "dropped": self.gre.dropped,
            },
            "bypass": {
                "prefixes": self.bypass.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
                "bypassed": {
                    "gre": self.gre.bypassed_gre,
                    "l2": self.gre.bypassed_l2,
                },
                "errors": self.gre.bypass_errors,
            },
        })
    }
}

/// Creates the TUN device, brings it up and turns reverse-path filtering off for it (the inner
/// packets' sources are reached through the normal interfaces, not the TUN).
fn setup_tun(name: &str) -> Result<(File, String)> {
    let (fd, actual) = sys::open_tun(name).context("creating the TUN device")?;
    let info = sys::link_info(&actual).with_context(|| format!("reading {actual}"))?;
    sys::set_link_flags(&actual, info.flags | libc::IFF_UP as u32)
        .with_context(|| format!("bringing {actual} up"))?;
    for (iface, key) in [
        ("all", "rp_filter"),
        (actual.as_str(), "rp_filter"),
        (actual.as_str(), "accept_local"),
    ] {
        let value = if key == "accept_local" { "1" } else { "0" };
        let path = format!("/proc/sys/net/ipv4/conf/{iface}/{key}");
        if let Err(e) = std::fs::write(&path, value) {
            tracing::warn!(%path, error = %e, "could not set sysctl; inner packets may be dropped");
        }
    }
    tracing::info!(tun = %actual, "TUN device up");
    Ok((File::from(fd), actual))
}

/// Runs the agent until SIGINT or SIGTERM.
pub fn run(args: Args) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(run_async(args))
}

async fn run_async(args: Args) -> Result<()> {
    let config = args.cache_config()?;
    let (tun, tun_name) = setup_tun(&args.tun)?;
    let raw = sys::open_raw_ip_socket(IPPROTO_GRE).context("opening the raw GRE socket")?;
    let raw = sys::async_file(File::from(raw)).context("registering the raw GRE socket")?;

    let mut agent = Agent {
        engine: None,
        udp: None,
        buf: Vec::with_capacity(2048),
        gre: GreCounters::default(),
        tun_name: tun_name.clone(),
        address: args.address,
        bypass: args.bypass.clone(),
        returns: BTreeMap::new(),
        raw_out: None,
        routes: Vec::new(),
        ident: 0,
        out_buf: Vec::new(),
    };
    if !args.bypass.is_empty() {
        // IPPROTO_RAW implies IP_HDRINCL: returns are sent with the headers written here.
        agent.raw_out = Some(
            sys::open_raw_ip_socket(libc::IPPROTO_RAW).context("opening the raw send socket")?,
        );
        agent.routes = read_routes();
        tracing::info!(bypass = ?args.bypass.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "bypassed destinations are returned to the router");
    }
    if let Some(config) = config {
        let address = config.address;
        let udp = UdpSocket::bind(SocketAddrV4::new(address, WCCP_PORT))
            .await
            .with_context(|| format!("binding UDP {address}:{WCCP_PORT}"))?;
        let engine = CacheEngine::new(Instant::now(), config)
            .map_err(|e| anyhow::anyhow!("WCCP engine: {e}"))?;
        tracing::info!(
            %address,
            routers = ?args.routers,
            services = ?args.services.iter().map(|s| s.0.service_id).collect::<Vec<_>>(),
            md5 = args.password.is_some(),
            "WCCP cache engine started"
        );
        agent.engine = Some(engine);
        agent.udp = Some(udp);
        agent.drain(Instant::now()).await;
    } else {
        tracing::info!("GRE-only mode: no WCCP engine");
    }

    let (status_tx, mut status_rx) = mpsc::channel::<StatusRequest>(8);
    if let Some(path) = &args.socket {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .with_context(|| format!("binding status socket {}", path.display()))?;
        tracing::info!(socket = %path.display(), "status socket ready");
        tokio::spawn(serve_status(listener, status_tx));
    }

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut udp_buf = vec![0u8; 65536];
    let mut gre_buf = vec![0u8; 65536];
    let mut tun_w = &tun;
    let mut logged = (0u64, 0u64, 0u64, 0u64);
    let mut log_tick = tokio::time::interval(COUNTER_LOG_EVERY);

    loop {
        let deadline = agent.engine.as_ref().and_then(|e| e.poll_timeout());
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        let recv = async {
            match agent.udp.as_ref() {
                Some(u) => u.recv_from(&mut udp_buf).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = recv => match r {
                Ok((n, std::net::SocketAddr::V4(src))) => {
                    let now = Instant::now();
                    if let (Some(engine), Some(data)) = (agent.engine.as_mut(), udp_buf.get(..n)) {
                        engine.handle_message(now, *src.ip(), data);
                    }
                    agent.drain(now).await;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "WCCP receive failed"),
            },
            () = sleep => {
                let now = Instant::now();
                if let Some(engine) = agent.engine.as_mut() {
                    engine.handle_timeout(now);
                }
                agent.drain(now).await;
            }
            guard = raw.readable() => {
                let mut guard = guard.context("raw GRE socket")?;
                // Drain what is queued, a bounded burst at a time.
                for _ in 0..64 {
                    let n = match guard.try_io(|f| f.get_ref().read(&mut gre_buf)) {
                        Ok(Ok(n)) => n,
                        Ok(Err(e)) => {
                            tracing::warn!(error = %e, "GRE receive failed");
                            break;
                        }
                        Err(_would_block) => break,
                    };
                    let pkt = gre_buf.get(..n).unwrap_or_default();
                    match parse_redirected(pkt, agent.address) {
                        Ok(r) if agent.bypasses(r.inner) => {
                            agent.return_packet(&r, raw.get_ref().as_raw_fd());
                        }
                        Ok(Redirected { inner, .. }) => match tun_w.write(inner) {
                            Ok(_) => {
                                agent.gre.decapsulated += 1;
                                agent.gre.bytes += inner.len() as u64;
                            }
                            Err(e) => {
                                tracing::debug!(error = %e, "TUN write failed");
                                agent.gre.drop("tun-write-failed");
                            }
                        },
                        Err(reason) => agent.gre.drop(reason),
                    }
                }
            }
            Some(reply) = status_rx.recv() => {
                let _ = reply.send(agent.status_json().to_string());
            }
            _ = log_tick.tick() => {
                if !agent.bypass.is_empty() {
                    agent.routes = read_routes();
                }
                let now = (agent.gre.decapsulated, agent.gre.dropped_total(),
                    agent.gre.bypassed_gre + agent.gre.bypassed_l2, agent.gre.bypass_errors_total());
                if now != logged {
                    logged = now;
                    tracing::info!(decapsulated = now.0, bytes = agent.gre.bytes,
                        dropped = ?agent.gre.dropped, bypassed_gre = agent.gre.bypassed_gre,
                        bypassed_l2 = agent.gre.bypassed_l2,
                        bypass_errors = ?agent.gre.bypass_errors, "GRE counters");
                }
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("SIGINT: stopping");
                break;
            }
            _ = sigterm.recv() => {
                tracing::info!("SIGTERM: stopping");
                break;
            }
        }
    }
    tracing::info!(
        decapsulated = agent.gre.decapsulated,
        bytes = agent.gre.bytes,
        dropped = ?agent.gre.dropped,
        bypassed_gre = agent.gre.bypassed_gre,
        bypassed_l2 = agent.gre.bypassed_l2,
        bypass_errors = ?agent.gre.bypass_errors,
        "GRE counters at exit"
    );
    if let Some(path) = &args.socket {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// The kernel's main IPv4 routing table (empty if it cannot be read: L2 returns then fail
/// with `l2-router-not-next-hop`, counted).
fn read_routes() -> Vec<KernelRoute> {
    match std::fs::read_to_string("/proc/net/route") {
        Ok(text) => parse_proc_route(&text),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read /proc/net/route");
            Vec::new()
        }
    }
}

/// Accepts status connections: each sends one line (`status`) and gets one JSON line back.
async fn serve_status(listener: UnixListener, tx: mpsc::Sender<StatusRequest>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let (rd, mut wr) = stream.into_split();
            let mut line = String::new();
            let mut rd = BufReader::new(rd);
            let read = tokio::time::timeout(Duration::from_secs(2), rd.read_line(&mut line)).await;
            if !matches!(read, Ok(Ok(_))) {
                return;
            }
            let answer = if line.trim() == "status" {
                let (otx, orx) = oneshot::channel();
                if tx.send(otx).await.is_err() {
                    return;
                }
                orx.await.unwrap_or_default()
            } else {
                serde_json::json!({"error": format!("unknown request {:?}", line.trim())})
                    .to_string()
            };
            let _ = wr.write_all(answer.as_bytes()).await;
            let _ = wr.write_all(b"\n").await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_specs() {
        assert_eq!(
            "0".parse::<ServiceSpec>().unwrap().0,
            ServiceInfo::standard(0)
        );
        let d = "90:tcp:80,8080".parse::<ServiceSpec>().unwrap().0;
        assert_eq!(d.service_id, 90);
        assert_eq!(d.protocol, 6);
        assert_eq!(d.port_list(), &[80, 8080]);
        assert!("90".parse::<ServiceSpec>().is_err());
        assert!("0:tcp:80".parse::<ServiceSpec>().is_err());
        assert!("90:icmp:1".parse::<ServiceSpec>().is_err());
        assert_eq!(
            d.flags,
            ServiceFlags::DST_IP_HASH | ServiceFlags::PORTS_DEFINED
        );
        let h = "61:tcp:8080:src-ip+src-port"
            .parse::<ServiceSpec>()
            .unwrap()
            .0;
        assert_eq!(
            h.flags,
            ServiceFlags::SRC_IP_HASH | ServiceFlags::SRC_PORT_HASH | ServiceFlags::PORTS_DEFINED
        );
        assert!("61:tcp:8080:nope".parse::<ServiceSpec>().is_err());
        assert!("61:tcp:8080:src-ip:x".parse::<ServiceSpec>().is_err());
    }

    #[test]
    fn decapsulates_wccp_gre() {
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
    }

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
        let mut out = vec![0u8; 2048];
        let n = gre_return_packet(&mut out, cache, router, &redirect, &inner, 7).unwrap();
        let pkt = &out[..n];
        assert_eq!(n, 20 + 8 + inner.len());
        // Outer IPv4: cache → router, protocol 47, consistent length, valid checksum.
        assert_eq!(crate::wire::ipv4::check(pkt).unwrap(), n);
        assert_eq!(crate::wire::ipv4::header_len(pkt), 20);
        assert_eq!(crate::wire::ipv4::src(pkt), cache);
        assert_eq!(crate::wire::ipv4::dst(pkt), router);
        assert_eq!(crate::wire::ipv4::protocol(pkt), 47);
        assert_eq!(crate::wire::ipv4::total_len(pkt), n);
        assert_eq!(crate::wire::checksum::checksum(&pkt[..20]), 0);
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
    fn prefixes_and_routes() {
        let p = parse_prefix("10.0.2.3/32").unwrap();
        assert!(p.contains(Ipv4Addr::new(10, 0, 2, 3)));
        assert!(!p.contains(Ipv4Addr::new(10, 0, 2, 2)));
        let p = parse_prefix("10.0.2.77/24").unwrap();
        assert_eq!(p.to_string(), "10.0.2.0/24");
        assert!(p.contains(Ipv4Addr::new(10, 0, 2, 200)));
        let all = parse_prefix("0.0.0.0/0").unwrap();
        assert!(all.contains(Ipv4Addr::new(192, 0, 2, 1)));
        assert!(parse_prefix("10.0.2.3/33").is_err());
        assert!(parse_prefix("10.0.2/8").is_err());
        assert_eq!(parse_prefix("10.0.2.3").unwrap().prefix(), 32);

        // A cache with a default route through 10.0.3.1 and 10.0.3.0/24 on-link.
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t0103000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t0003000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            garbage line\n";
        let routes = parse_proc_route(text);
        assert_eq!(routes.len(), 2);
        let router = Ipv4Addr::new(10, 0, 3, 1);
        assert_eq!(next_hop(&routes, Ipv4Addr::new(10, 0, 2, 3)), Some(router));
        assert_eq!(next_hop(&routes, Ipv4Addr::new(10, 0, 3, 9)), None);
        assert_eq!(next_hop(&[], Ipv4Addr::new(10, 0, 2, 3)), None);
    }
}
