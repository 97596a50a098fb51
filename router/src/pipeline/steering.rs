//! The steering stage (SPEC.md §3 step 8, §5; issue 7): packets of a service walk its chain of
//! devices, decided per packet by the `steering` crate's compiled tables.
//!
//! For each IPv4 packet the stage reads the key (ingress interface, source MAC, addresses,
//! protocol, ports, TCP flags) and asks [`steering::Tables::decide`]. The decision is applied
//! here, without allocating:
//!
//! - **to a device**: copies first (the IDS sees the frame as received), then TTL (once, on the
//!   step that enters the chain), NAT / port-translation rewrites and DSCP with incremental
//!   checksum updates, then the frame goes to the device's MAC (straight to tx) or address
//!   (through the neighbour stage);
//! - **route**: the end of a routed chain or the way back to the client: rewrites and DSCP as
//!   above, then the route stage (which skips its TTL decrement when the chain already did it);
//! - **deny / unexpected source / no device**: dropped under `steering-acl-deny`,
//!   `steering-unexpected-source`, `steering-no-device`;
//! - **reset**: the segment is answered with a TCP RST from the service address (the client
//!   retries at once on a live device) and dropped under `steering-reset`. Connections whose
//!   SYN this worker steered to a live member during the drain are remembered (the worker's
//!   bounded [`DrainedFlows`]) and follow their SYN instead.
//!
//! Copies take a buffer from the worker's pool; when the pool is empty or the burst already
//! carries [`MAX_COPY_BACKLOG`] emitted packets the copy is dropped and counted
//! (`steering-copy-overflow`), never the main packet.

use super::drop::DropReason;
use super::packet::{flags, Packet};
use super::stage::{StageCx, StageKind, Verdict};
use crate::tables::steer::{PassiveEvent, ServiceDrop, SteeringPlane};
use crate::tables::Iface;
use crate::wire::checksum;
use crate::wire::ethernet::{self, HEADER_LEN};
use crate::wire::ipv4;
use crate::wire::tcp;
use steering::{tcp_flags, Decision, Direction, DrainedFlows, Egress, NextHop, PacketKey, Rewrite};

/// Most packets a burst may have emitted before copies are dropped (the "copy queue").
pub const MAX_COPY_BACKLOG: usize = 48;

/// The stage: tables and health come with the snapshot; the worker keeps only the drain
/// memory of reset pools (bounded, allocated once).
#[derive(Default)]
pub struct SteeringStage {
    /// Connections opened on a live member while their home drains (see
    /// [`steering::DrainedFlows`]); one per worker, as the fanout keeps a flow on one worker.
    drained: DrainedFlows,
    /// The peer's drain-memory connections copied so far (`DrainSync::adopt_since`).
    adopted: u64,
    /// The last HA export request answered.
    exported: u64,
}

impl SteeringStage {
    /// Worker housekeeping, every loop (HA sync of the drain memory): journals changes while
    /// the node is active, answers an export request with the whole memory, and copies the
    /// connections the peer remembered.
    pub fn housekeep(&mut self, plane: &SteeringPlane) {
        let sync = &plane.drain_sync;
        self.drained.set_journaling(sync.syncing());
        let generation = sync.export_generation();
        if generation != self.exported {
            self.exported = generation;
            if sync.syncing() {
                self.drained
                    .for_each_key(|k| sync.publish(steering::DrainChange::Remembered(k)));
            }
        }
        let drained = &mut self.drained;
        self.adopted = sync.adopt_since(self.adopted, |k| drained.adopt(k));
    }

    /// The decision of the tables in force, keeping the drain memory and its counters.
    #[inline]
    fn decide(
        &mut self,
        plane: &SteeringPlane,
        tables: &steering::Tables,
        key: &PacketKey,
    ) -> Decision {
        let health = plane.health.load();
        let evicted = self.drained.evictions();
        let decision = tables.decide_remembering(key, &health, &mut self.drained);
        if self.drained.evictions() != evicted {
            plane
                .drain_evicted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if self.drained.has_journal() {
            let sync = &plane.drain_sync;
            self.drained.drain_journal(|c| sync.publish(c));
        }
        decision
    }

    /// Steers one packet or passes it on.
    pub fn process(&mut self, pkt: &mut Packet, cx: &mut StageCx<'_>) -> Verdict {
        let plane: &SteeringPlane = &cx.tables.steering;
        if plane.tables.is_none() && plane.retired.is_none() {
            return Verdict::Continue;
        }
        if pkt.meta.flags & flags::LOCAL != 0 {
            return Verdict::Continue;
        }
        let Some(key) = packet_key(pkt) else {
            return Verdict::Continue;
        };
        let decision = match plane.tables.as_ref() {
            Some(tables) => self.decide(plane, tables, &key),
            None => Decision::NotSteered,
        };
        // A frame the new tables do not place may be coming back from a device of the tables
        // a reload just replaced: it finishes the old chain, counted apart (the counters are
        // the new tables', indexed by their services and devices).
        let (decision, tables, current) = match (decision, plane.tables.as_ref()) {
            (Decision::NotSteered | Decision::UnexpectedSource { .. }, _)
                if plane.retired.is_some() =>
            {
                match retired_action(plane, &key, cx.now) {
                    Some((a, old)) => {
                        plane.retired_forwarded.count(pkt.len());
                        (Decision::Forward(a), old, false)
                    }
                    None => match plane.tables.as_ref() {
                        Some(t) => (decision, t, true),
                        None => return Verdict::Continue,
                    },
                }
            }
            (d, Some(t)) => (d, t, true),
            (_, None) => return Verdict::Continue,
        };
        let action = match decision {
            Decision::NotSteered => return Verdict::Continue,
            Decision::Forward(a) => a,
            Decision::Deny { service, rule } => {
                plane.service_drop(service, ServiceDrop::AclDeny);
                plane.acl_hit(rule, pkt.len());
                return Verdict::Drop(DropReason::SteeringAclDeny);
            }
            Decision::UnexpectedSource { service } => {
                plane.service_drop(service, ServiceDrop::UnexpectedSource);
                return Verdict::Drop(DropReason::SteeringUnexpectedSource);
            }
            Decision::Unavailable { service } => {
                plane.service_drop(service, ServiceDrop::NoDevice);
                return Verdict::Drop(DropReason::SteeringNoDevice);
            }
            Decision::Reset { service, .. } => {
                plane.service_drop(service, ServiceDrop::Reset);
                send_reset(pkt, &key, cx);
                return Verdict::Drop(DropReason::SteeringReset);
            }
        };
        let len = pkt.len();
        // The plane's per-service, per-device and per-rule counters, for the new tables only.
        let counted = current.then_some(plane);
        if let Some(plane) = counted {
            plane.acl_hit(action.acl_rule, len);
            if key.proto == ipv4::PROTO_TCP && key.tcp_flags & tcp_flags::SYN != 0 {
                passive_evidence(plane, tables, &action, &key);
            }
            if let Some(c) = plane.services.get(action.service.index()) {
                match action.direction {
                    Direction::Forward => c.forward.count(len),
                    Direction::Reverse => c.reverse.count(len),
                }
            }
        }
        // Copies leave before any rewrite: the promiscuous device sees what the router received.
        if !action.copies.is_empty() {
            for t in action.copy_targets(tables) {
                let dev = counted.and_then(|p| p.devices.get(t.device.index()));
                let Some(out) = cx.tables.ifaces.get(t.iface as usize) else {
                    continue;
                };
                if cx.emitted.len() >= MAX_COPY_BACKLOG || cx.pool.available() == 0 {
                    if let Some(plane) = counted {
                        plane.service_drop(action.service, ServiceDrop::CopyOverflow);
                    }
                    if let Some(d) = dev {
                        d.copy_drops
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    if let Some(sc) = cx.counters.stages.get(StageKind::Steering as usize) {
                        sc.drops[DropReason::SteeringCopyOverflow as usize].inc();
                    }
                    continue;
                }
                let mut copy = cx.pool.get_with(pkt.frame());
                copy.meta.rx_if = pkt.meta.rx_if;
                copy.meta.offload = pkt.meta.offload;
                copy.meta.flags = pkt.meta.flags;
                copy.meta.passes = pkt.meta.passes;
                if let Some(d) = dev {
                    d.copies.count(len);
                }
                let at = address(&mut copy, out, t.next);
                cx.emit(copy, at);
            }
        }
        if action.entering {
            let l3 = &pkt.frame()[HEADER_LEN..];
            if ipv4::ttl(l3) <= 1 {
                super::icmp::send_error(
                    pkt,
                    crate::wire::icmp::TIME_EXCEEDED,
                    crate::wire::icmp::CODE_TTL_EXCEEDED,
                    0,
                    cx,
                );
                return Verdict::Drop(DropReason::TtlExpired);
            }
            ipv4::decrement_ttl(&mut pkt.frame_mut()[HEADER_LEN..]);
        }
        // Either this step or an earlier one of the chain took the TTL decrement.
        pkt.meta.flags |= flags::TTL_DONE;
        rewrite(pkt, &action.rewrite, action.dscp);
        match action.egress {
            Egress::Route => Verdict::Continue,
            Egress::Device {
                device,
                iface,
                next,
                ..
            } => {
                let Some(out) = cx.tables.ifaces.get(iface as usize) else {
                    return Verdict::Drop(DropReason::TxError);
                };
                if let Some(d) = counted.and_then(|p| p.devices.get(device.index())) {
                    d.sent.count(len);
                }
                Verdict::Jump(address(pkt, out, next))
            }
        }
    }
}

/// The rest of the replaced tables' chain for a frame they place as coming back from one of
/// their devices, while the reload's grace lasts (see [`crate::tables::steer::RetiredSteering`]).
#[cold]
fn retired_action<'p>(
    plane: &'p SteeringPlane,
    key: &PacketKey,
    now: std::time::Instant,
) -> Option<(steering::Action, &'p steering::Tables)> {
    let old = plane.retired.as_ref().filter(|r| now < r.until)?;
    match old.tables.decide(key, &old.health) {
        Decision::Forward(a) if a.from.is_some() => Some((a, &old.tables)),
        _ => None,
    }
}

/// The decision's view of the packet (the earlier stages validated the IPv4 header).
fn packet_key(pkt: &Packet) -> Option<PacketKey> {
    let f = pkt.frame();
    let l3 = f.get(HEADER_LEN..)?;
    let hlen = ipv4::header_len(l3);
    let proto = ipv4::protocol(l3);
    let (mut sport, mut dport, mut tcp_flags) = (0, 0, 0);
    if !ipv4::is_later_fragment(l3) {
        let l4 = l3.get(hlen..)?;
        if matches!(proto, ipv4::PROTO_TCP | ipv4::PROTO_UDP) {
            (sport, dport) = ipv4::ports(l4).unwrap_or((0, 0));
        }
        if proto == ipv4::PROTO_TCP {
            tcp_flags = l4.get(13).copied().unwrap_or(0);
        }
    }
    Some(PacketKey {
        in_if: pkt.meta.rx_if,
        src_mac: ethernet::src(f),
        src: ipv4::src(l3),
        dst: ipv4::dst(l3),
        proto,
        sport,
        dport,
        tcp_flags,
    })
}

/// Addresses `pkt` to a device on `out`: by MAC straight to tx, by address through the
/// neighbour stage (ARP). Returns the stage to continue at.
fn address(pkt: &mut Packet, out: &Iface, next: NextHop) -> StageKind {
    pkt.meta.tx_if = out.id;
    match next {
        NextHop::Mac(m) => {
            let f = pkt.frame_mut();
            f[ethernet::field::DST].copy_from_slice(&m.0);
            f[ethernet::field::SRC].copy_from_slice(&out.mac.0);
            StageKind::Tx
        }
        NextHop::Addr(a) => {
            pkt.meta.next_hop = a;
            StageKind::Neighbour
        }
    }
}

/// Offset of the TCP or UDP checksum field in the L4 header.
fn l4_csum_at(proto: u8) -> Option<usize> {
    match proto {
        ipv4::PROTO_TCP => Some(16),
        ipv4::PROTO_UDP => Some(6),
        _ => None,
    }
}

/// Applies NAT / port-translation rewrites and DSCP, patching checksums incrementally
/// (RFC 1624). With a partial checksum (offload) the L4 field holds the pseudo-header sum, so
/// only address changes touch it; port changes are summed later by whoever completes it.
fn rewrite(pkt: &mut Packet, rw: &Rewrite, dscp: Option<u8>) {
    if rw.is_empty() && dscp.is_none() {
        return;
    }
    let partial = pkt.meta.offload.needs_csum();
    let f = pkt.frame_mut();
    let Some(l3) = f.get_mut(HEADER_LEN..) else {
        return;
    };
    let hlen = ipv4::header_len(l3);
    let proto = ipv4::protocol(l3);
    let first = !ipv4::is_later_fragment(l3);
    let mut ip_csum = u16::from_be_bytes([l3[10], l3[11]]);
    if let Some(d) = dscp {
        let old = u16::from_be_bytes([l3[0], l3[1]]);
        l3[1] = (d << 2) | (l3[1] & 0x03);
        ip_csum = checksum::update16(ip_csum, old, u16::from_be_bytes([l3[0], l3[1]]));
    }
    // (byte offset in the IP header, new address)
    let addrs = [(12usize, rw.src_addr), (16usize, rw.dst_addr)];
    let csum_at = l4_csum_at(proto).filter(|_| first).map(|o| hlen + o);
    let mut l4_csum =
        csum_at.and_then(|at| l3.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]])));
    // UDP without a checksum stays without one.
    if proto == ipv4::PROTO_UDP && l4_csum == Some(0) && !partial {
        l4_csum = None;
    }
    for (at, new) in addrs {
        let Some(new) = new else { continue };
        let new = new.octets();
        for half in 0..2 {
            let o = at + half * 2;
            let old = u16::from_be_bytes([l3[o], l3[o + 1]]);
            let n = u16::from_be_bytes([new[half * 2], new[half * 2 + 1]]);
            ip_csum = checksum::update16(ip_csum, old, n);
            l4_csum = l4_csum.map(|c| patch(c, old, n, partial));
            l3[o..o + 2].copy_from_slice(&n.to_be_bytes());
        }
    }
    l3[10..12].copy_from_slice(&ip_csum.to_be_bytes());
    if first && matches!(proto, ipv4::PROTO_TCP | ipv4::PROTO_UDP) {
        for (o, new) in [(0usize, rw.src_port), (2usize, rw.dst_port)] {
            let Some(n) = new else { continue };
            let at = hlen + o;
            let Some(b) = l3.get(at..at + 2) else {
                continue;
            };
            let old = u16::from_be_bytes([b[0], b[1]]);
            if !partial {
                l4_csum = l4_csum.map(|c| checksum::update16(c, old, n));
            }
            l3[at..at + 2].copy_from_slice(&n.to_be_bytes());
        }
    }
    if let (Some(at), Some(c)) = (csum_at, l4_csum) {
        if let Some(b) = l3.get_mut(at..at + 2) {
            // A full UDP checksum of zero is sent as all ones (RFC 768).
            let c = if proto == ipv4::PROTO_UDP && c == 0 && !partial {
                0xffff
            } else {
                c
            };
            b.copy_from_slice(&c.to_be_bytes());
        }
    }
}

/// One 16-bit change in an L4 checksum field: a complemented checksum, or (offload) the plain
/// pseudo-header sum.
fn patch(c: u16, old: u16, new: u16, partial: bool) -> u16 {
    if partial {
        !checksum::update16(!c, old, new)
    } else {
        checksum::update16(c, old, new)
    }
}

/// Reports a handshake packet of a passively checked device: a client's SYN going to it, or
/// its SYN-ACK coming back (the device answers).
fn passive_evidence(
    plane: &SteeringPlane,
    tables: &steering::Tables,
    action: &steering::Action,
    key: &steering::PacketKey,
) {
    let answered = key.tcp_flags & tcp_flags::ACK != 0;
    let event = match (action.direction, answered) {
        (Direction::Forward, false) => action.device().map(|device| PassiveEvent::Syn {
            device,
            client: key.src,
        }),
        (Direction::Reverse, true) => action.from.map(|device| PassiveEvent::Answered {
            device,
            client: key.dst,
        }),
        _ => None,
    };
    if let Some(e) = event {
        let device = match e {
            PassiveEvent::Syn { device, .. } | PassiveEvent::Answered { device, .. } => device,
        };
        if tables.passive_checked(device) {
            plane.passive_evidence(e);
        }
    }
}

/// Answers a TCP segment with a RST from the side it was sent to (RFC 9293 reset generation).
fn send_reset(pkt: &Packet, key: &PacketKey, cx: &mut StageCx<'_>) {
    if key.proto != ipv4::PROTO_TCP {
        return;
    }
    let Some(l3) = pkt.frame().get(HEADER_LEN..) else {
        return;
    };
    let hlen = ipv4::header_len(l3);
    let total = ipv4::total_len(l3).min(l3.len());
    let Some(seg) = l3
        .get(hlen..total)
        .and_then(|t| tcp::TcpPacket::new_checked(t).ok())
        .and_then(|t| tcp::TcpRepr::parse(&t).ok())
    else {
        return;
    };
    let Some(rst) = tcp::TcpRepr::rst_for(&seg) else {
        return;
    };
    if cx.pool.available() == 0 {
        return;
    }
    super::icmp::send_rst(pkt.meta.rx_if, key.dst, key.src, &rst, cx);
}

#[cfg(test)]
use std::net::Ipv4Addr;

/// The IPv4 address at byte `at` of `f` (tests).
#[cfg(test)]
fn addr_of(f: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::vnet::{self, VnetHdr};

    /// Ethernet + IPv4 + TCP 10.0.1.2:40000 → 10.0.9.80:80, full checksums.
    fn tcp_frame() -> Vec<u8> {
        let mut f = vec![0u8; HEADER_LEN + 20 + 20 + 4];
        f[12] = 0x08;
        ipv4::Ipv4Repr {
            src: [10, 0, 1, 2].into(),
            dst: [10, 0, 9, 80].into(),
            protocol: 6,
            payload_len: 24,
            ttl: 64,
            ident: 7,
            tos: 0,
            dont_fragment: true,
        }
        .emit(&mut f[HEADER_LEN..HEADER_LEN + 20]);
        let t = HEADER_LEN + 20;
        f[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
        f[t + 2..t + 4].copy_from_slice(&80u16.to_be_bytes());
        f[t + 12] = 5 << 4;
        f[t + 13] = 0x18;
        f[t + 20..].copy_from_slice(b"data");
        fill_tcp(&mut f);
        f
    }

    fn fill_tcp(f: &mut [u8]) {
        let t = HEADER_LEN + 20;
        f[t + 16..t + 18].copy_from_slice(&[0, 0]);
        let ph = checksum::pseudo_header(
            addr_of(f, HEADER_LEN + 12).octets(),
            addr_of(f, HEADER_LEN + 16).octets(),
            6,
            24,
        );
        let c = !checksum::fold(checksum::sum(ph, &f[t..]));
        f[t + 16..t + 18].copy_from_slice(&c.to_be_bytes());
    }

    fn tcp_ok(f: &[u8]) -> bool {
        let t = HEADER_LEN + 20;
        let ph = checksum::pseudo_header(
            addr_of(f, HEADER_LEN + 12).octets(),
            addr_of(f, HEADER_LEN + 16).octets(),
            6,
            24,
        );
        checksum::fold(checksum::sum(ph, &f[t..])) == 0xffff
    }

    fn ip_ok(f: &[u8]) -> bool {
        checksum::checksum(&f[HEADER_LEN..HEADER_LEN + 20]) == 0
    }

    #[test]
    fn nat_and_port_rewrite_keep_checksums_valid() {
        let mut p = Packet::from_frame(&tcp_frame());
        let rw = Rewrite {
            dst_addr: Some(Ipv4Addr::new(10, 0, 3, 20)),
            dst_port: Some(8080),
            ..Default::default()
        };
        rewrite(&mut p, &rw, Some(46));
        let f = p.frame();
        assert_eq!(addr_of(f, HEADER_LEN + 16), Ipv4Addr::new(10, 0, 3, 20));
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 8080);
        assert_eq!(f[HEADER_LEN + 1] >> 2, 46);
        assert!(ip_ok(f) && tcp_ok(f));
        let back = Rewrite {
            src_addr: Some(Ipv4Addr::new(10, 0, 9, 80)),
            src_port: Some(80),
            ..Default::default()
        };
        let mut q = Packet::from_frame(f);
        rewrite(&mut q, &back, None);
        assert!(ip_ok(q.frame()) && tcp_ok(q.frame()));
    }

    #[test]
    fn partial_checksum_follows_the_address_only() {
        let mut f = tcp_frame();
        // What the kernel leaves with offload: the folded pseudo-header sum, uncomplemented.
        let t = HEADER_LEN + 20;
        let ph = checksum::fold(checksum::pseudo_header(
            [10, 0, 1, 2],
            [10, 0, 9, 80],
            6,
            24,
        ));
        f[t + 16..t + 18].copy_from_slice(&ph.to_be_bytes());
        let mut p = Packet::from_frame(&f);
        p.meta.offload = VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            csum_start: t as u16,
            csum_offset: 16,
            ..Default::default()
        };
        let rw = Rewrite {
            dst_addr: Some(Ipv4Addr::new(10, 0, 3, 20)),
            dst_port: Some(8080),
            ..Default::default()
        };
        rewrite(&mut p, &rw, None);
        p.complete_checksum();
        assert!(ip_ok(p.frame()) && tcp_ok(p.frame()));
    }
}
