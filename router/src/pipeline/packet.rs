//! Packet buffers, their metadata, and the per-worker buffer pool.

use crate::tables::IfId;
use crate::wire::checksum;
use crate::wire::vnet::{self, VnetHdr};
use std::net::Ipv4Addr;

/// Bytes kept free before the Ethernet header so encapsulation (and the vnet header on transmit)
/// can prepend without moving the packet.
pub const HEADROOM: usize = 128;
/// Initial buffer capacity; buffers grow (once) for GSO super-packets and keep their size.
pub const INITIAL_CAPACITY: usize = HEADROOM + 2048;

/// Packet flags (Click annotations / VPP buffer flags).
pub mod flags {
    /// Originated by the router itself (no TTL decrement, source is ours).
    pub const LOCAL: u8 = 0x01;
    /// Returned by a cache: never redirect again.
    pub const RETURNED: u8 = 0x02;
    /// Selected for the packet trace.
    pub const TRACED: u8 = 0x04;
    /// Steered: the chain already decremented the TTL (the route stage must not again).
    pub const TTL_DONE: u8 = 0x08;
    /// NAT: handed to the worker that owns its session (by the line interface or the switch
    /// processor); translate here, never dispatch again. `PacketMeta::nat_vid` says for which VID.
    pub const NAT_HANDED: u8 = 0x10;
    /// NAT: a set-up request the switch processor assigned to this worker.
    pub const NAT_SETUP: u8 = 0x20;
    /// NAT: translated outbound to a pool address; dispatched again as inbound (hairpinning).
    pub const NAT_HAIRPIN: u8 = 0x40;
}

/// Sentinel for "no egress interface chosen yet".
pub const NO_IF: IfId = IfId::MAX;

/// What the stages learn about a packet as it moves through the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct PacketMeta {
    /// Interface it arrived on (or, for local packets, the one that caused it).
    pub rx_if: IfId,
    /// Egress interface chosen by route.
    pub tx_if: IfId,
    /// Next hop chosen by route.
    pub next_hop: Ipv4Addr,
    /// `flags::*`.
    pub flags: u8,
    /// Index of the next stage to run.
    pub stage: u8,
    /// Times the packet re-entered the pipeline (loop guard).
    pub passes: u8,
    /// Checksum/GSO state from the kernel (see `wire::vnet`).
    pub offload: VnetHdr,
    /// NAT: the VID a handed-over packet belongs to (with `flags::NAT_HANDED`).
    pub nat_vid: u16,
    /// Trace: the packet's number (with `flags::TRACED`).
    pub trace_id: u32,
    /// Trace: trips recorded so far (a queued or handed-off packet runs again later).
    pub trace_part: u8,
    /// Cluster: the packet's distribution id, when it came to the cluster MAC and has one
    /// (held frames and the trace read it).
    pub cluster_id: Option<u8>,
}

impl Default for PacketMeta {
    fn default() -> Self {
        PacketMeta {
            rx_if: NO_IF,
            tx_if: NO_IF,
            next_hop: Ipv4Addr::UNSPECIFIED,
            flags: 0,
            stage: 0,
            passes: 0,
            offload: VnetHdr::default(),
            nat_vid: 0,
            trace_id: 0,
            trace_part: 0,
            cluster_id: None,
        }
    }
}

/// One frame in a buffer with headroom: `buf[start..]` is the Ethernet frame.
#[derive(Debug)]
pub struct Packet {
    buf: Vec<u8>,
    start: usize,
    /// Metadata.
    pub meta: PacketMeta,
}

impl Packet {
    /// A packet holding a copy of `frame` (used by tests and benches; the worker uses the pool).
    pub fn from_frame(frame: &[u8]) -> Packet {
        let mut p = Packet {
            buf: Vec::with_capacity(HEADROOM + frame.len()),
            start: HEADROOM,
            meta: PacketMeta::default(),
        };
        p.buf.resize(HEADROOM, 0);
        p.buf.extend_from_slice(frame);
        p
    }

    /// The Ethernet frame.
    #[inline]
    pub fn frame(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// The Ethernet frame, writable.
    #[inline]
    pub fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..]
    }

    /// Frame length.
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// True when the frame is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Cuts the frame to `len` bytes (drops Ethernet padding).
    pub fn truncate(&mut self, len: usize) {
        self.buf.truncate(self.start + len);
    }

    /// Replaces the frame with `len` zero bytes after the headroom and returns it for writing.
    pub fn reset(&mut self, len: usize) -> &mut [u8] {
        self.start = HEADROOM;
        self.buf.clear();
        self.buf.resize(HEADROOM + len, 0);
        self.meta = PacketMeta::default();
        &mut self.buf[HEADROOM..]
    }

    /// The frame with `extra` bytes of headroom in front, for headers written just before it.
    pub fn with_front(&mut self, extra: usize) -> Option<&mut [u8]> {
        let at = self.start.checked_sub(extra)?;
        Some(&mut self.buf[at..])
    }

    /// Grows the frame by `n` bytes at the front (taken from the headroom) and returns it; the
    /// new bytes hold whatever the headroom held. `None` when the headroom is too small.
    pub fn prepend(&mut self, n: usize) -> Option<&mut [u8]> {
        self.start = self.start.checked_sub(n)?;
        Some(&mut self.buf[self.start..])
    }

    /// Drops the first `n` bytes of the frame (they become headroom).
    pub fn advance(&mut self, n: usize) -> bool {
        if n > self.len() {
            return false;
        }
        self.start += n;
        true
    }

    /// The frame with `extra` bytes of headroom in front, read-only.
    pub fn front(&self, extra: usize) -> Option<&[u8]> {
        let at = self.start.checked_sub(extra)?;
        Some(&self.buf[at..])
    }

    /// Pads the frame with zeros up to `min` bytes.
    pub fn pad_to(&mut self, min: usize) {
        if self.len() < min {
            self.buf.resize(self.start + min, 0);
        }
    }

    /// Completes a partial TCP/UDP checksum in software (the `NEEDS_CSUM` state the kernel leaves
    /// on packets its own stack sent over veth or to an offloading NIC). Needed before a stage
    /// rewrites or encapsulates the packet; plain forwarding hands the state back to the kernel.
    pub fn complete_checksum(&mut self) {
        let o = self.meta.offload;
        if !o.needs_csum() {
            return;
        }
        let start = o.csum_start as usize;
        let at = start + o.csum_offset as usize;
        let frame = self.frame_mut();
        if at + 2 > frame.len() || start > frame.len() {
            return;
        }
        // The field holds the folded pseudo-header sum; summing it with the data and
        // complementing gives the final checksum (what the NIC would do).
        let c = checksum::checksum(&frame[start..]);
        frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
        self.meta.offload.flags &= !vnet::F_NEEDS_CSUM;
        self.meta.offload.flags |= vnet::F_DATA_VALID;
    }
}

/// A worker's free buffers. Packets come from here and go back after transmit or drop, so the
/// steady state allocates nothing per packet.
#[derive(Debug)]
pub struct Pool {
    free: Vec<Vec<u8>>,
    max_free: usize,
}

impl Pool {
    /// A pool pre-filled with `n` buffers.
    pub fn new(n: usize) -> Pool {
        Pool {
            free: (0..n)
                .map(|_| Vec::with_capacity(INITIAL_CAPACITY))
                .collect(),
            max_free: n.max(1) * 2,
        }
    }

    /// An empty packet (frame length 0) with headroom.
    pub fn get(&mut self) -> Packet {
        let mut buf = self
            .free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(INITIAL_CAPACITY));
        // Headroom bytes are always written before they are read (headers are prepended into
        // them), so a reused buffer keeps its old headroom instead of zeroing it per packet.
        if buf.len() >= HEADROOM {
            buf.truncate(HEADROOM);
        } else {
            buf.clear();
            buf.resize(HEADROOM, 0);
        }
        Packet {
            buf,
            start: HEADROOM,
            meta: PacketMeta::default(),
        }
    }

    /// A packet holding a copy of `frame`.
    pub fn get_with(&mut self, frame: &[u8]) -> Packet {
        let mut p = self.get();
        p.buf.extend_from_slice(frame);
        p
    }

    /// Returns a packet's buffer.
    pub fn put(&mut self, p: Packet) {
        if self.free.len() < self.max_free {
            self.free.push(p.buf);
        }
    }

    /// Buffers available.
    pub fn available(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completing_a_partial_udp_checksum() {
        // Ethernet + IPv4 + UDP 10.0.0.1:1000 → 10.0.0.2:2000 with payload "hello", checksum
        // field holding the folded pseudo-header sum as the kernel leaves it.
        let mut f = vec![0u8; 14 + 20 + 8 + 5];
        f[12] = 0x08;
        let ip = &mut f[14..34];
        crate::wire::ipv4::Ipv4Repr {
            src: [10, 0, 0, 1].into(),
            dst: [10, 0, 0, 2].into(),
            protocol: 17,
            payload_len: 13,
            ttl: 64,
            ident: 1,
            tos: 0,
            dont_fragment: false,
        }
        .emit(ip);
        f[34..36].copy_from_slice(&1000u16.to_be_bytes());
        f[36..38].copy_from_slice(&2000u16.to_be_bytes());
        f[38..40].copy_from_slice(&13u16.to_be_bytes());
        f[42..].copy_from_slice(b"hello");
        let pseudo = checksum::fold(checksum::pseudo_header(
            [10, 0, 0, 1],
            [10, 0, 0, 2],
            17,
            13,
        ));
        f[40..42].copy_from_slice(&pseudo.to_be_bytes());
        let mut p = Packet::from_frame(&f);
        p.meta.offload = VnetHdr {
            flags: vnet::F_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..Default::default()
        };
        p.complete_checksum();
        assert!(!p.meta.offload.needs_csum());
        // The receiver's check: pseudo header + UDP segment sums to 0xffff.
        let acc = checksum::sum(
            checksum::pseudo_header([10, 0, 0, 1], [10, 0, 0, 2], 17, 13),
            &p.frame()[34..],
        );
        assert_eq!(checksum::fold(acc), 0xffff);
    }

    #[test]
    fn pool_reuses_buffers() {
        let mut pool = Pool::new(2);
        let a = pool.get_with(&[1, 2, 3]);
        assert_eq!(a.frame(), &[1, 2, 3]);
        assert_eq!(pool.available(), 1);
        pool.put(a);
        assert_eq!(pool.available(), 2);
        let b = pool.get();
        assert!(b.is_empty());
    }
}
