//! The wccp-redirect stage (SPEC.md §4, reference §8): traffic of a WCCP service group that
//! arrives on an interface with redirect-in, or would leave through one with redirect-out, goes
//! to the cache the group's assignment names — GRE-encapsulated with the WCCP redirect header,
//! or with only its destination MAC rewritten (L2) — instead of being routed.
//!
//! Never redirected: packets a cache returned (GRE return, checked and stripped by
//! local-delivery, see [`decapsulate_return`], and marked RETURNED; L2 return, recognised here
//! by the cache's MAC), packets the router made (LOCAL),
//! packets arriving on an exclude-in interface, and packets sourced from any cache of any group.
//! Services are tried by priority; a service's redirect list may deny a packet (the next service
//! is tried). A flow whose bucket (or mask value) is unassigned, or whose cache fast failover
//! has taken out, is routed normally, dropped or dropped with a RST / ICMP prohibited, as the
//! service's `fail-policy` says. With GRE forwarding, SYNs and the SYN-ACKs answering them get
//! their MSS clamped to fit the cache link, and a packet with DF too big for it once
//! encapsulated is answered with fragmentation needed. With flow affinity, a TCP flow keeps the cache (or the
//! normal path) it started on when its bucket moves. Later IP fragments of a datagram follow
//! its first fragment (module `fragments`).
//!
//! Counters: per service and cache in the plane (redirected, returned, bypassed, unassigned,
//! denied, affinity-kept, fragments redirected and unmatched, packets and bytes); in the stage
//! counters, redirected packets count
//! as consumed here (they continue at route or neighbour as the outer packet). A TCP GSO
//! super-packet (a local stack's TSO burst over veth) is segmented in software before GRE
//! encapsulation; with L2 forwarding it keeps its offload state and the kernel segments it on
//! transmit. Other GSO kinds (UDP) are not redirected and pass on.

use super::affinity::{AffinityTable, FlowId, FlowTarget};
use super::drop::DropReason;
use super::fragments::{FragDecision, FragKey, FragTable};
use super::icmp::send_error;
use super::packet::{flags, Packet};
use super::stage::{StageCx, StageKind, Verdict};
use super::trace::{Affinity, WccpReason, WccpTrace};
use crate::tables::wccp::{ServicePlane, WccpPlane};
use crate::tables::{IfId, Iface};
use crate::wire::ethernet::{self, HEADER_LEN};
use crate::wire::icmp as icmpw;
use crate::wire::ipv4::{self, Ipv4Repr};
use crate::wire::tcp::{self, flags as tcp_flags};
use conf::{GreMssClamp, WccpFailPolicy};
use gre::{GreRepr, WccpRedirectRepr};
use std::net::Ipv4Addr;
use std::time::Instant;
use wccp::assign::Redirect;
use wccp::engine::{ForwardingMethod, ReturnMethod};
use wccp::hash::FlowKey;

/// Bytes GRE forwarding adds in front of the inner IPv4 packet: outer IPv4 + GRE + redirect.
const GRE_OVERHEAD: usize = ipv4::MIN_HEADER_LEN + gre::WCCP_GRE_OVERHEAD;

/// The stage; its state is this worker's flow-affinity table.
#[derive(Default)]
pub struct WccpRedirectStage {
    affinity: Option<AffinityTable>,
    last_sweep: Option<Instant>,
    /// The last HA export request this worker answered (`AffinitySync::export_generation`).
    exported: u64,
    /// Segments of a GSO super-packet being redirected (reused, so no allocation per burst).
    segments: Vec<Packet>,
    /// First fragments' decisions, allocated when the first fragment comes.
    fragments: Option<FragTable>,
}

/// The fields of a packet the redirect decision reads.
struct Fields {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    sport: u16,
    dport: u16,
    tcp_flags: u8,
    len: usize,
}

/// The WCCP decision of the traced packet being run, started on first use.
#[cold]
fn why<'c>(cx: &'c mut StageCx<'_>) -> &'c mut WccpTrace {
    cx.trace.wccp.get_or_insert_with(WccpTrace::default)
}

/// Notes why a traced packet was not redirected.
macro_rules! not_redirected {
    ($trace:ident, $cx:ident, $reason:expr) => {
        if $trace {
            why($cx).not_redirected($reason);
        }
    };
}

impl WccpRedirectStage {
    /// Redirects one packet or passes it on; a `TRACED` packet's decision is noted for the
    /// packet trace (a separate instance, so untraced packets run no trace code).
    #[inline(always)]
    pub fn process(&mut self, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
        if pkt.meta.flags & flags::TRACED != 0 {
            self.process_traced(pkt, cx)
        } else {
            self.decide::<false>(pkt, cx)
        }
    }

    /// [`Self::process`] for a traced packet.
    #[cold]
    #[inline(never)]
    fn process_traced(&mut self, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
        self.decide::<true>(pkt, cx)
    }

    /// The redirect decision; with `TRACE`, each step of it is noted in `cx.trace`.
    fn decide<const TRACE: bool>(&mut self, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
        let plane = &*cx.tables.wccp;
        if pkt.meta.flags & flags::LOCAL != 0 || plane.services.is_empty() {
            not_redirected!(TRACE, cx, WccpReason::RouterOriginated);
            return Verdict::Continue;
        }
        // A cache's SYN-ACK to a redirected client comes back by the normal path (or a GRE or
        // L2 return): it carries the MSS the client will send to the cache with, through GRE.
        if is_syn_ack(pkt) {
            clamp_syn_ack(pkt, cx);
        }
        let plane = &*cx.tables.wccp;
        if pkt.meta.flags & flags::RETURNED != 0 {
            not_redirected!(TRACE, cx, WccpReason::ReturnedByCache);
            return Verdict::Continue;
        }
        // L2 returns come back on whatever interface the cache sits on, redirecting or not.
        if l2_returned(pkt, plane, cx) {
            pkt.meta.flags |= flags::RETURNED;
            not_redirected!(TRACE, cx, WccpReason::ReturnedByCache);
            return Verdict::Continue;
        }
        let Some(iface) = cx.tables.ifaces.get(pkt.meta.rx_if as usize) else {
            not_redirected!(TRACE, cx, WccpReason::NotRedirectedHere);
            return Verdict::Continue;
        };
        if iface.exclude_in {
            not_redirected!(TRACE, cx, WccpReason::ExcludedInterface);
            return Verdict::Continue;
        }
        let any_out = cx.tables.ifaces.iter().any(|i| !i.redirect_out.is_empty());
        if iface.redirect_in.is_empty() && !any_out {
            not_redirected!(TRACE, cx, WccpReason::NotRedirectedHere);
            return Verdict::Continue;
        }
        let frame = pkt.frame();
        let l3 = &frame[HEADER_LEN..];
        // A later fragment carries no ports: it follows its first fragment's decision.
        let later = ipv4::is_later_fragment(l3);
        let hlen = ipv4::header_len(l3);
        let proto = ipv4::protocol(l3);
        let (sport, dport) = match proto {
            ipv4::PROTO_TCP | ipv4::PROTO_UDP if !later => {
                ipv4::ports(&l3[hlen..]).unwrap_or((0, 0))
            }
            _ => (0, 0),
        };
        let f = Fields {
            src: ipv4::src(l3),
            dst: ipv4::dst(l3),
            proto,
            sport,
            dport,
            tcp_flags: if proto == ipv4::PROTO_TCP && !later {
                l3.get(hlen + 13).copied().unwrap_or(0)
            } else {
                0
            },
            len: l3.len(),
        };
        let frag =
            ipv4::is_fragment(l3).then(|| FragKey::new(f.src, f.dst, proto, ipv4::ident(l3)));
        // A cache's own traffic (its fetches toward origin servers) is never redirected.
        if plane.is_member(f.src) {
            not_redirected!(TRACE, cx, WccpReason::FromCache);
            return Verdict::Continue;
        }
        // Redirect-out applies to the interface the packet would be routed out of.
        let out_if = if any_out {
            cx.tables.routes.lookup(f.dst).map(|r| r.out_if)
        } else {
            None
        };
        if let (true, Some(key)) = (later, frag) {
            let seen = TRACE
                && self
                    .fragments
                    .as_ref()
                    .and_then(|t| t.lookup(&key, cx.now))
                    .is_some();
            let v = self.later_fragment(key, pkt, &f, iface, out_if, cx);
            if TRACE {
                let w = why(cx);
                match v {
                    Verdict::Jump(_) => w.redirected = true,
                    _ if seen => w.not_redirected(WccpReason::FragmentFollowsFirst),
                    _ => w.not_redirected(WccpReason::FragmentUnmatched),
                }
            }
            return v;
        }
        let out_redirects = |id: u8| {
            out_if
                .and_then(|o| cx.tables.ifaces.get(o as usize))
                .is_some_and(|o| o.redirect_out.contains(&id))
        };
        for svc in &plane.services {
            if !(iface.redirect_in.contains(&svc.id) || out_redirects(svc.id))
                || !svc.assignment.intercepts(f.proto, f.sport, f.dport)
            {
                if TRACE {
                    let here = iface.redirect_in.contains(&svc.id) || out_redirects(svc.id);
                    let outcome = if here {
                        WccpReason::NotIntercepted
                    } else {
                        WccpReason::NotRedirectedHere
                    };
                    why(cx).tried(svc.id, outcome.as_str(), None);
                }
                continue;
            }
            if !conf::acl_permits(&svc.redirect_list, f.proto, f.src, f.dst, f.sport, f.dport) {
                svc.counters.denied.add(f.len);
                if TRACE {
                    let rule = acl_rule(svc, &f);
                    why(cx).tried(svc.id, WccpReason::Denied.as_str(), rule);
                }
                continue;
            }
            let key = FlowKey::new(f.src, f.dst, f.sport, f.dport);
            let bucket = svc.assignment.redirect(&key);
            let known = if TRACE {
                self.known_flow(svc, plane, &f, cx.now)
            } else {
                Affinity::Off
            };
            let chosen = self.with_affinity(svc, plane, bucket, &f, cx.now);
            let Some(r) = chosen else {
                svc.counters.unassigned.add(f.len);
                if TRACE {
                    let w = why(cx);
                    w.tried(svc.id, WccpReason::Unassigned.as_str(), acl_rule(svc, &f));
                    w.not_redirected(WccpReason::Unassigned);
                    trace_position(w, svc, &key, None);
                    w.fail_policy = Some(svc.fail_policy.as_str().to_string());
                }
                return self.no_cache(svc, pkt, frag, f.len, cx);
            };
            let ci = usize::from(r.cache_index);
            if svc.is_failed(ci) {
                svc.counters.bypassed.add(f.len);
                if let Some(c) = svc.cache_counters.get(ci) {
                    c.bypassed.add(f.len);
                }
                if TRACE {
                    let w = why(cx);
                    w.tried(
                        svc.id,
                        WccpReason::CacheProbedDown.as_str(),
                        acl_rule(svc, &f),
                    );
                    w.not_redirected(WccpReason::CacheProbedDown);
                    trace_position(w, svc, &key, Some(&r));
                    w.cache = Some(r.target.address);
                    w.fail_policy = Some(svc.fail_policy.as_str().to_string());
                }
                return self.no_cache(svc, pkt, frag, f.len, cx);
            }
            if TRACE {
                let w = why(cx);
                w.tried(svc.id, "redirected", acl_rule(svc, &f));
                w.redirected = true;
                w.service = Some(svc.id);
                w.cache = Some(r.target.address);
                w.method = Some(
                    match r.target.forwarding {
                        ForwardingMethod::Gre => "gre",
                        ForwardingMethod::L2 => "l2",
                    }
                    .to_string(),
                );
                trace_position(w, svc, &key, Some(&r));
                w.affinity = Some(match known {
                    Affinity::Hit
                        if chosen.map(|c| c.target.address) != bucket.map(|b| b.target.address) =>
                    {
                        Affinity::HitKept
                    }
                    other => other,
                });
            }
            let dynamic = svc.assignment.service().service_type == wccp::wire::ServiceType::Dynamic;
            let count = |len: usize| {
                svc.counters.redirected.add(len);
                if let Some(c) = svc.cache_counters.get(ci) {
                    c.redirected.add(len);
                }
            };
            if r.target.forwarding == ForwardingMethod::Gre && pkt.meta.offload.is_gso() {
                // The kernel cannot segment inside our GRE on transmit: segment here (each
                // segment gets its whole checksum), then encapsulate every segment.
                let segs = &mut self.segments;
                if !super::gso::segment_tcpv4(pkt, cx.pool, |s| segs.push(s)) {
                    not_redirected!(TRACE, cx, WccpReason::GsoNotTcp);
                    return Verdict::Continue; // not TCPv4 GSO: forwarded normally
                }
                let mtu = cache_mtu(cx, r.target.address);
                for mut seg in self.segments.drain(..) {
                    let len = seg.len() - HEADER_LEN;
                    if !fits_gre(&seg, svc, mtu, cx) {
                        cx.pool.put(seg);
                        continue;
                    }
                    if let Verdict::Jump(to) = encapsulate(&mut seg, svc.id, dynamic, &r) {
                        count(len);
                        cx.emit(seg, to);
                    } else {
                        cx.pool.put(seg);
                    }
                }
                return Verdict::Consumed;
            }
            if r.target.forwarding == ForwardingMethod::Gre {
                let mtu = cache_mtu(cx, r.target.address);
                if f.proto == ipv4::PROTO_TCP && f.tcp_flags & tcp_flags::SYN != 0 {
                    clamp_mss(pkt, svc, mtu);
                }
                if !fits_gre(pkt, svc, mtu, cx) {
                    not_redirected!(TRACE, cx, WccpReason::MtuExceeded);
                    return Verdict::Drop(DropReason::MtuExceeded);
                }
            }
            count(f.len);
            let redirect = FragDecision::Redirect {
                service: svc.id,
                redirect: r,
            };
            self.remember(frag, redirect, cx.now);
            return match r.target.forwarding {
                ForwardingMethod::Gre => encapsulate(pkt, svc.id, dynamic, &r),
                // A GSO super-packet keeps its offload state: the kernel segments it on transmit.
                ForwardingMethod::L2 => l2_forward(pkt, &r, cx),
            };
        }
        self.remember(frag, FragDecision::Normal, cx.now);
        if TRACE {
            let w = why(cx);
            let any = |o: WccpReason| w.tried.iter().any(|t| t.outcome == o.as_str());
            let reason = if any(WccpReason::Denied) {
                WccpReason::Denied
            } else if any(WccpReason::NotIntercepted) {
                WccpReason::NotIntercepted
            } else {
                WccpReason::NotRedirectedHere
            };
            w.not_redirected(reason);
        }
        Verdict::Continue
    }

    /// Whether flow affinity knows this flow (for the trace; looked up before the decision
    /// changes the table).
    #[cold]
    fn known_flow(
        &mut self,
        svc: &ServicePlane,
        plane: &WccpPlane,
        f: &Fields,
        now: Instant,
    ) -> Affinity {
        if !plane.affinity.enabled || f.proto != ipv4::PROTO_TCP {
            return Affinity::Off;
        }
        let flow = FlowId::new(svc.id, f.src, f.dst, f.sport, f.dport);
        match self.affinity.as_mut().and_then(|t| t.lookup(&flow, now)) {
            Some(_) => Affinity::Hit,
            None => Affinity::Miss,
        }
    }

    /// A packet of `svc` that no cache can take (its bucket is unassigned, the group has no
    /// cache, or fast failover took the bucket's cache out), as the service's `fail-policy`
    /// says: forwarded normally (open), dropped (closed-drop), or dropped and answered with a
    /// TCP RST or an ICMP administratively prohibited (closed-reject).
    fn no_cache(
        &mut self,
        svc: &ServicePlane,
        pkt: &Packet,
        frag: Option<FragKey>,
        len: usize,
        cx: &mut StageCx<'_>,
    ) -> Verdict {
        let c = &svc.counters;
        match svc.fail_policy {
            WccpFailPolicy::Open => {
                c.fail_open_forwarded.add(len);
                self.remember(frag, FragDecision::Normal, cx.now);
                Verdict::Continue
            }
            WccpFailPolicy::ClosedDrop => {
                c.fail_closed_dropped.add(len);
                self.remember(frag, FragDecision::Dropped { service: svc.id }, cx.now);
                Verdict::Drop(DropReason::WccpFailClosed)
            }
            WccpFailPolicy::ClosedReject => {
                c.fail_closed_rejected.add(len);
                self.remember(frag, FragDecision::Dropped { service: svc.id }, cx.now);
                reject(pkt, cx);
                Verdict::Drop(DropReason::WccpFailClosed)
            }
        }
    }

    /// Remembers what became of a first fragment (`frag` is `None` for whole datagrams).
    fn remember(&mut self, frag: Option<FragKey>, decision: FragDecision, now: Instant) {
        if let Some(key) = frag {
            self.fragments
                .get_or_insert_with(|| FragTable::new(now))
                .insert(key, decision, now);
        }
    }

    /// A non-first fragment goes where its datagram's first fragment went, by the same method,
    /// while that cache is still in the service and not failed; without a remembered first
    /// fragment it is forwarded normally and counted as unmatched (module `fragments`).
    fn later_fragment(
        &mut self,
        key: FragKey,
        pkt: &mut Packet,
        f: &Fields,
        iface: &Iface,
        out_if: Option<IfId>,
        cx: &mut StageCx<'_>,
    ) -> Verdict {
        let plane = &*cx.tables.wccp;
        let known = self.fragments.as_ref().and_then(|t| t.lookup(&key, cx.now));
        let (service, r) = match known {
            Some(FragDecision::Redirect { service, redirect }) => (service, redirect),
            Some(FragDecision::Normal) => return Verdict::Continue,
            Some(FragDecision::Dropped { service }) => {
                if let Some(svc) = plane.services.iter().find(|s| s.id == service) {
                    svc.counters.fail_closed_dropped.add(f.len);
                }
                return Verdict::Drop(DropReason::WccpFailClosed);
            }
            None => {
                let redirects_here = |id: u8| {
                    iface.redirect_in.contains(&id)
                        || out_if
                            .and_then(|o| cx.tables.ifaces.get(o as usize))
                            .is_some_and(|o| o.redirect_out.contains(&id))
                };
                if let Some(svc) = plane
                    .services
                    .iter()
                    .find(|s| redirects_here(s.id) && s.assignment.intercepts_protocol(f.proto))
                {
                    svc.counters.fragments_unmatched.add(f.len);
                }
                return Verdict::Continue;
            }
        };
        let Some(svc) = plane.services.iter().find(|s| s.id == service) else {
            return Verdict::Continue;
        };
        let Some(ci) = svc.cache_index(r.target.address) else {
            return Verdict::Continue;
        };
        if svc.is_failed(ci) {
            svc.counters.bypassed.add(f.len);
            if let Some(c) = svc.cache_counters.get(ci) {
                c.bypassed.add(f.len);
            }
            // A later fragment gets no answer of its own (RFC 1812 §4.3.2.7): closed drops it.
            if svc.fail_policy == WccpFailPolicy::Open {
                svc.counters.fail_open_forwarded.add(f.len);
                return Verdict::Continue;
            }
            svc.counters.fail_closed_dropped.add(f.len);
            return Verdict::Drop(DropReason::WccpFailClosed);
        }
        if r.target.forwarding == ForwardingMethod::Gre {
            let mtu = cache_mtu(cx, r.target.address);
            if !fits_gre(pkt, svc, mtu, cx) {
                return Verdict::Drop(DropReason::MtuExceeded);
            }
        }
        svc.counters.redirected.add(f.len);
        svc.counters.fragments_redirected.add(f.len);
        if let Some(c) = svc.cache_counters.get(ci) {
            c.redirected.add(f.len);
        }
        let r = Redirect {
            cache_index: u8::try_from(ci).unwrap_or(r.cache_index),
            ..r
        };
        match r.target.forwarding {
            ForwardingMethod::Gre => {
                let dynamic =
                    svc.assignment.service().service_type == wccp::wire::ServiceType::Dynamic;
                encapsulate(pkt, svc.id, dynamic, &r)
            }
            ForwardingMethod::L2 => l2_forward(pkt, &r, cx),
        }
    }

    /// The redirect decision after flow affinity: a known TCP flow keeps the cache (or normal
    /// forwarding) it started on while that cache is still in the group and not failed; new
    /// flows, and flows whose cache left, take the bucket's and are remembered.
    fn with_affinity(
        &mut self,
        svc: &ServicePlane,
        plane: &WccpPlane,
        bucket: Option<Redirect>,
        f: &Fields,
        now: Instant,
    ) -> Option<Redirect> {
        if !plane.affinity.enabled || f.proto != ipv4::PROTO_TCP {
            return bucket;
        }
        let stats = &plane.affinity_stats;
        let sync = &*plane.affinity_sync;
        let want = plane.affinity.flows_per_worker as usize;
        let table = match &mut self.affinity {
            Some(t) if t.capacity() >= want && t.idle_secs() == plane.affinity.idle_secs => t,
            slot => {
                // First use or a new size: allocated once here, never per packet.
                if let Some(old) = slot.as_mut() {
                    old.clear(stats, |f| sync.publish_delete(f));
                }
                slot.insert(AffinityTable::new(
                    plane.affinity.flows_per_worker,
                    plane.affinity.idle_secs,
                    now,
                ))
            }
        };
        if self
            .last_sweep
            .is_none_or(|t| now.saturating_duration_since(t).as_secs() >= 1)
        {
            self.last_sweep = Some(now);
            table.sweep(now, stats, |f| sync.publish_delete(f));
        }
        let flow = FlowId::new(svc.id, f.src, f.dst, f.sport, f.dport);
        if f.tcp_flags & tcp_flags::RST != 0 {
            let mine = table.lookup(&flow, now);
            let known = mine.or_else(|| sync.take(&flow));
            if table.remove(&flow, stats) || (mine.is_none() && known.is_some()) {
                sync.publish_delete(&flow);
            }
            return resolve(svc, known, bucket);
        }
        let opening = f.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN;
        if !opening {
            // A flow under way that this worker does not know may be one the HA peer
            // remembered before a takeover: it is this worker's from now on.
            let known = table.lookup(&flow, now).or_else(|| {
                let adopted = sync.take(&flow)?;
                remember(table, sync, flow, adopted, now, stats);
                Some(adopted)
            });
            if let Some(known) = known {
                let chosen = resolve(svc, Some(known), bucket);
                if chosen.map(|r| r.target.address) != bucket.map(|r| r.target.address) {
                    svc.counters.affinity_kept.add(f.len);
                }
                return chosen;
            }
        }
        // Only a flow whose SYN the router saw is remembered: a flood of crafted mid-flow
        // segments must not be able to fill the table and push real flows out.
        if !opening {
            return bucket;
        }
        let target = match bucket {
            Some(r) => FlowTarget::Cache(r.target.address),
            None => FlowTarget::Normal,
        };
        remember(table, sync, flow, target, now, stats);
        bucket
    }

    /// Worker housekeeping, every loop: answers an HA export request with the whole table,
    /// and sweeps expired flows (and tells the peer) even while no TCP segment comes.
    pub fn housekeep(&mut self, plane: &WccpPlane, now: Instant) {
        let sync = &*plane.affinity_sync;
        let generation = sync.export_generation();
        if generation != self.exported {
            self.exported = generation;
            if let Some(t) = &self.affinity {
                t.for_each_live(now, |f, target| sync.publish_upsert(f, target));
            }
        }
        if let Some(t) = self.affinity.as_mut() {
            if self
                .last_sweep
                .is_none_or(|t| now.saturating_duration_since(t).as_secs() >= 1)
            {
                self.last_sweep = Some(now);
                t.sweep(now, &plane.affinity_stats, |f| sync.publish_delete(f));
            }
        }
    }
}

/// Remembers `flow` in this worker's table and tells the HA peer what changed (nothing for a
/// SYN retransmission; a delete for a flow whose slot it took).
fn remember(
    table: &mut AffinityTable,
    sync: &crate::tables::affinity::AffinitySync,
    flow: FlowId,
    target: FlowTarget,
    now: Instant,
    stats: &crate::tables::wccp::AffinityStats,
) {
    let ins = table.insert(flow, target, now, stats);
    if let Some(old) = ins.displaced {
        sync.publish_delete(&old);
    }
    if ins.changed {
        sync.publish_upsert(&flow, target);
    }
}

/// True (and counted) when the frame is one a cache returned at layer 2: it comes from the
/// MAC of an L2-return cache and is not the cache's own traffic.
fn l2_returned(pkt: &Packet, plane: &WccpPlane, cx: &StageCx<'_>) -> bool {
    if plane.l2_returners.is_empty() {
        return false;
    }
    let frame = pkt.frame();
    let l3 = &frame[HEADER_LEN..];
    if plane.is_member(ipv4::src(l3)) {
        return false;
    }
    let src_mac = ethernet::src(frame);
    let Some(&(si, ci, _)) = plane
        .l2_returners
        .iter()
        .find(|(_, _, addr)| cx.neigh.lookup(pkt.meta.rx_if, *addr) == Some(src_mac))
    else {
        return false;
    };
    if let Some(s) = plane.services.get(si) {
        s.counters.returned.add(l3.len());
        if let Some(c) = s.cache_counters.get(ci) {
            c.returned.add(l3.len());
        }
    }
    true
}

/// The redirect for a remembered target, if that cache is still usable; else the bucket's.
fn resolve(
    svc: &ServicePlane,
    known: Option<FlowTarget>,
    bucket: Option<Redirect>,
) -> Option<Redirect> {
    match known {
        Some(FlowTarget::Normal) => None,
        Some(FlowTarget::Cache(addr)) => match svc.cache_index(addr) {
            Some(ci) if !svc.is_failed(ci) => {
                let target = *svc.assignment.caches().get(ci)?;
                Some(Redirect {
                    target,
                    cache_index: ci as u8,
                    primary_bucket: bucket.map(|b| b.primary_bucket).unwrap_or(0),
                    alternate_bucket: bucket.and_then(|b| b.alternate_bucket),
                })
            }
            _ => bucket,
        },
        None => bucket,
    }
}

/// True for a TCP segment with SYN and ACK (a first fragment or a whole datagram).
fn is_syn_ack(pkt: &Packet) -> bool {
    let l3 = &pkt.frame()[HEADER_LEN..];
    if ipv4::protocol(l3) != ipv4::PROTO_TCP || ipv4::is_later_fragment(l3) {
        return false;
    }
    let want = tcp_flags::SYN | tcp_flags::ACK;
    l3.get(ipv4::header_len(l3) + 13)
        .is_some_and(|&fl| fl & (want | tcp_flags::RST) == want)
}

/// Clamps the MSS of a SYN-ACK whose reverse flow (client to server) a service redirects by
/// GRE here: the SYN-ACK announces what the client may send, and the client's segments reach
/// the cache inside GRE. The reverse flow is looked up as the redirect stage would see it:
/// arriving on the interface the SYN-ACK leaves by (redirect-in) or leaving by the one it came
/// in on (redirect-out), intercepted, permitted by the redirect list, its bucket held by a GRE
/// cache.
#[cold]
fn clamp_syn_ack(pkt: &mut Packet, cx: &StageCx<'_>) {
    let plane = &*cx.tables.wccp;
    let l3 = &pkt.frame()[HEADER_LEN..];
    let (src, dst) = (ipv4::src(l3), ipv4::dst(l3));
    let Some((sport, dport)) = ipv4::ports(&l3[ipv4::header_len(l3)..]) else {
        return;
    };
    let rx = cx.tables.ifaces.get(pkt.meta.rx_if as usize);
    let toward_client = cx
        .tables
        .routes
        .lookup(dst)
        .and_then(|r| cx.tables.ifaces.get(r.out_if as usize));
    for svc in &plane.services {
        let here = toward_client.is_some_and(|i| i.redirect_in.contains(&svc.id))
            || rx.is_some_and(|i| i.redirect_out.contains(&svc.id));
        if !here
            || svc.gre_mss_clamp == GreMssClamp::Off
            || !svc.assignment.intercepts(ipv4::PROTO_TCP, dport, sport)
            || !conf::acl_permits(&svc.redirect_list, ipv4::PROTO_TCP, dst, src, dport, sport)
        {
            continue;
        }
        let Some(r) = svc
            .assignment
            .redirect(&FlowKey::new(dst, src, dport, sport))
        else {
            return;
        };
        if r.target.forwarding == ForwardingMethod::Gre {
            let mtu = cache_mtu(cx, r.target.address);
            clamp_mss(pkt, svc, mtu);
        }
        return;
    }
}

/// The MTU of the interface the router reaches `cache` through (1500 without a route: the
/// route stage drops the packet then anyway).
fn cache_mtu(cx: &StageCx<'_>, cache: Ipv4Addr) -> u16 {
    cx.tables
        .routes
        .lookup(cache)
        .and_then(|r| cx.tables.ifaces.get(r.out_if as usize))
        .map_or(1500, |i| i.mtu)
}

/// Lowers the MSS option of a SYN (or SYN-ACK) so that full segments still fit the cache link
/// once encapsulated (`gre-mss-clamp`), with an incremental checksum update (RFC 1624).
fn clamp_mss(pkt: &mut Packet, svc: &ServicePlane, mtu: u16) {
    let Some(max) = svc.gre_mss_clamp.for_mtu(mtu) else {
        return;
    };
    // A partial (offload) checksum would be patched as if it were whole: complete it first.
    pkt.complete_checksum();
    let l3 = &mut pkt.frame_mut()[HEADER_LEN..];
    let hlen = ipv4::header_len(l3);
    let total = ipv4::total_len(l3).min(l3.len());
    let len = l3.len();
    let Some(seg) = l3.get_mut(hlen..total) else {
        return;
    };
    let Ok(mut t) = tcp::TcpPacket::new_checked(seg) else {
        return;
    };
    if t.clamp_mss(max) {
        svc.counters.mss_clamped.add(len);
    }
}

/// Whether `pkt` still fits the cache link (`mtu`) once GRE adds its 28 octets. A packet with
/// DF that does not is answered with ICMP fragmentation needed carrying the MTU the client can
/// use (RFC 1191) and counted as `gre-too-big`: false, the caller drops it. One without DF is
/// counted as `gre-fragmented` (the route stage fragments the outer packet): true.
fn fits_gre(pkt: &Packet, svc: &ServicePlane, mtu: u16, cx: &mut StageCx<'_>) -> bool {
    let l3 = &pkt.frame()[HEADER_LEN..];
    let len = l3.len();
    if len + GRE_OVERHEAD <= usize::from(mtu) {
        return true;
    }
    if ipv4::flags_frag(l3) & ipv4::FLAG_DF == 0 {
        svc.counters.gre_fragmented.add(len);
        return true;
    }
    svc.counters.gre_too_big.add(len);
    let room = u32::from(mtu).saturating_sub(GRE_OVERHEAD as u32);
    send_error(
        pkt,
        icmpw::DEST_UNREACHABLE,
        icmpw::CODE_FRAG_NEEDED,
        room,
        cx,
    );
    false
}

/// ICMP destination unreachable code 13, communication administratively prohibited (RFC 1812
/// §5.2.7.1): the router refuses by policy. Port or host unreachable would claim something
/// about the destination that is not true; the client fails fast either way.
const CODE_ADMIN_PROHIBITED: u8 = 13;

/// Answers a packet a closed-reject service drops: TCP gets a RST from the destination's
/// address and port (RFC 9293 reset generation: for a SYN sequence 0 and ACK of its sequence +
/// 1), so the client's connect fails at once; anything else ICMP administratively prohibited.
/// Both are rate limited per client, like every error the router sends.
#[cold]
#[inline(never)]
fn reject(pkt: &Packet, cx: &mut StageCx<'_>) {
    let l3 = &pkt.frame()[HEADER_LEN..];
    if ipv4::protocol(l3) != ipv4::PROTO_TCP || ipv4::is_later_fragment(l3) {
        send_error(pkt, icmpw::DEST_UNREACHABLE, CODE_ADMIN_PROHIBITED, 0, cx);
        return;
    }
    let (src, dst) = (ipv4::src(l3), ipv4::dst(l3));
    let hlen = ipv4::header_len(l3);
    let total = ipv4::total_len(l3).min(l3.len());
    let Some(seg) = l3
        .get(hlen..total)
        .and_then(|t| tcp::TcpPacket::new_checked(t).ok())
        .and_then(|t| tcp::TcpRepr::parse(&t).ok())
    else {
        return;
    };
    // A segment that does not checksum may not be the client's: no answer to it.
    if !pkt.meta.offload.needs_csum()
        && !l3
            .get(hlen..total)
            .map(tcp::TcpPacket::new_unchecked)
            .is_some_and(|t| t.verify_checksum(src, dst))
    {
        return;
    }
    let Some(rst) = tcp::TcpRepr::rst_for(&seg) else {
        return;
    };
    if ipv4::is_martian_source(src)
        || cx.tables.classify(src) == crate::tables::AddrClass::Broadcast
    {
        return;
    }
    if !cx.icmp_limits.errors.allow(src, cx.now) {
        cx.counters.icmp_rate_limited.inc();
        return;
    }
    super::icmp::send_rst(pkt.meta.rx_if, dst, src, &rst, cx);
}

/// GRE forwarding (§8): outer IPv4 from the router address the cache talks to, GRE 0x883E, and
/// the redirect header with D=0x01 / A=0x02 in the low bits as Wireshark and Linux read them.
fn encapsulate(pkt: &mut Packet, service: u8, dynamic: bool, r: &Redirect) -> Verdict {
    // The cache receives the inner packet as data: its checksum must be whole now.
    pkt.complete_checksum();
    if pkt.meta.offload.is_gso() {
        return Verdict::Continue;
    }
    let inner_len = pkt.len() - HEADER_LEN;
    let redirect = WccpRedirectRepr {
        dynamic,
        alternate_used: r.alternate_bucket.is_some(),
        unavailable: false,
        service_id: service,
        alternate_bucket: r.alternate_bucket.unwrap_or(0),
        primary_bucket: r.primary_bucket,
        unknown_flags: 0,
    };
    let Some(f) = pkt.prepend(GRE_OVERHEAD) else {
        return Verdict::Continue;
    };
    // The inner packet now starts at HEADER_LEN + GRE_OVERHEAD; the headers go in front of it.
    let gre_at = HEADER_LEN + ipv4::MIN_HEADER_LEN;
    if gre::encapsulate_in_place(
        &mut f[gre_at..],
        gre::WCCP_GRE_OVERHEAD,
        inner_len,
        &GreRepr::WCCP,
        Some(&redirect),
    )
    .is_err()
    {
        return Verdict::Continue;
    }
    Ipv4Repr {
        src: r.target.router_id,
        dst: r.target.address,
        protocol: ipv4::PROTO_GRE,
        payload_len: gre::WCCP_GRE_OVERHEAD + inner_len,
        ttl: 64,
        ident: ipv4::next_ident(),
        tos: 0,
        dont_fragment: false,
    }
    .emit(&mut f[HEADER_LEN..gre_at]);
    f[ethernet::field::ETHERTYPE].copy_from_slice(&ethernet::ETHERTYPE_IPV4.to_be_bytes());
    pkt.meta.offload = Default::default();
    // The outer packet is the router's own: routed to the cache without a TTL decrement.
    pkt.meta.flags |= flags::LOCAL;
    Verdict::Jump(StageKind::Route)
}

/// L2 forwarding (§8): the packet unchanged, sent to the cache's MAC on the shared network.
fn l2_forward(pkt: &mut Packet, r: &Redirect, cx: &mut StageCx<'_>) -> Verdict {
    let Some(out) = cx
        .tables
        .ifaces
        .iter()
        .find(|i| i.contains(r.target.address))
    else {
        return Verdict::Continue;
    };
    pkt.meta.tx_if = out.id;
    pkt.meta.next_hop = r.target.address;
    Verdict::Jump(StageKind::Neighbour)
}

/// What became of a GRE packet addressed to the router.
pub enum ReturnOutcome {
    /// Stripped: the frame now holds the inner packet, marked RETURNED.
    Returned,
    /// The sender is no cache of any group.
    NotMember,
    /// The redirect header names a service the sender is no cache of (or none installed); a
    /// return without redirect header from a cache that is in no assignment.
    WrongService,
    /// The sender's negotiated return method in that service is not GRE.
    NotGre,
    /// It came in on another interface than the one the router reaches the sender through.
    WrongInterface,
    /// Not a WCCP/GRE packet we can read.
    Malformed,
}

/// Strips the GRE (and redirect header) of a packet a cache returned (§8, return): the inner
/// IPv4 packet is forwarded normally and never redirected again.
///
/// A return is accepted only from a cache of the service its redirect header names, whose
/// negotiated return method there is GRE, arriving on the interface the routing table reaches
/// that cache through: anyone else could otherwise launder packets past the redirect (they are
/// never redirected again) by wrapping them in GRE. A return without a redirect header (Linux
/// and some caches send a bare IPv4 payload) is matched against the first service, by
/// priority, in which the sender is a GRE-return cache.
pub fn decapsulate_return(pkt: &mut Packet, hlen: usize, cx: &StageCx<'_>) -> ReturnOutcome {
    let l3 = &pkt.frame()[HEADER_LEN..];
    let src = ipv4::src(l3);
    let plane = &*cx.tables.wccp;
    if !plane.is_member(src) {
        return ReturnOutcome::NotMember;
    }
    let (inner_at, service) = match gre::decapsulate(&l3[hlen..]) {
        Ok(d) if d.inner.first().is_some_and(|b| b >> 4 == 4) => {
            (hlen + d.inner_offset, d.redirect.map(|r| r.service_id))
        }
        _ => return ReturnOutcome::Malformed,
    };
    let gre_return = |s: &ServicePlane, ci: usize| {
        s.assignment
            .caches()
            .get(ci)
            .is_some_and(|c| c.packet_return == ReturnMethod::Gre)
    };
    let found = match service {
        Some(id) => plane
            .services
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| Some((s, s.cache_index(src)?))),
        None => {
            let mut of_sender = plane
                .services
                .iter()
                .filter_map(|s| Some((s, s.cache_index(src)?)));
            let first = of_sender.clone().next();
            of_sender.find(|(s, ci)| gre_return(s, *ci)).or(first)
        }
    };
    let Some((s, ci)) = found else {
        return ReturnOutcome::WrongService;
    };
    if !gre_return(s, ci) {
        return ReturnOutcome::NotGre;
    }
    if cx.tables.routes.lookup(src).map(|r| r.out_if) != Some(pkt.meta.rx_if) {
        return ReturnOutcome::WrongInterface;
    }
    let inner_len = l3.len() - inner_at;
    s.counters.returned.add(inner_len);
    if let Some(c) = s.cache_counters.get(ci) {
        c.returned.add(inner_len);
    }
    // Drop the outer IPv4 and GRE headers and rebuild the Ethernet header in front of the
    // inner packet: the bytes now there are what was left of the outer headers.
    let (dst_mac, src_mac) = (ethernet::dst(pkt.frame()), ethernet::src(pkt.frame()));
    if !pkt.advance(inner_at) {
        return ReturnOutcome::Malformed;
    }
    ethernet::write_header(pkt.frame_mut(), dst_mac, src_mac, ethernet::ETHERTYPE_IPV4);
    pkt.meta.offload = Default::default();
    pkt.meta.flags |= flags::RETURNED;
    ReturnOutcome::Returned
}

/// The redirect-list rule (1-based) that decides for the packet, for the trace; None when the
/// list is empty or no rule matches.
#[cold]
fn acl_rule(svc: &ServicePlane, f: &Fields) -> Option<usize> {
    svc.redirect_list
        .iter()
        .position(|r| r.matches(f.proto, f.src, f.dst, f.sport, f.dport))
        .map(|i| i + 1)
}

/// Where the flow falls in `svc`'s assignment, for the trace: its primary (and alternate)
/// hash bucket, or its masked value in the mask/value set that matched (the first set when
/// none did).
#[cold]
fn trace_position(w: &mut WccpTrace, svc: &ServicePlane, key: &FlowKey, r: Option<&Redirect>) {
    let a = &svc.assignment;
    if a.is_mask() {
        let sets = a.mask_value_sets();
        let masked = sets
            .iter()
            .map(|s| wccp::mask::apply(&s.mask, key))
            .zip(&sets)
            .find(|(m, s)| s.values.iter().any(|v| wccp::mask::value_matches(v, m)))
            .map(|(m, _)| m)
            .or_else(|| sets.first().map(|s| wccp::mask::apply(&s.mask, key)));
        w.mask_value = masked.map(|m| {
            format!(
                "src-ip 0x{:08x} dst-ip 0x{:08x} src-port 0x{:04x} dst-port 0x{:04x}",
                m.src_ip, m.dst_ip, m.src_port, m.dst_port
            )
        });
        return;
    }
    match (r, a.bucket_table()) {
        (Some(r), _) => {
            w.bucket = Some(r.primary_bucket);
            w.alternate_bucket = r.alternate_bucket;
        }
        (None, Some(table)) => {
            let l = wccp::hash::lookup(table, a.service().effective_flags(), key);
            w.bucket = Some(l.primary_bucket);
            w.alternate_bucket = l.alternate_bucket;
        }
        (None, None) => {}
    }
}
