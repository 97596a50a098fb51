//! L2–L4 wire formats the pipeline reads and writes: Ethernet, ARP, IPv4 (the forwarding path's
//! fast header checks), the virtio-net header of packet sockets, and, from the `netwire` crate
//! the whole workspace shares, the Internet checksum and checked views of TCP, UDP and ICMP.
//!
//! Contract: every accessor is bounds-checked by a `check_*` function or a checked view first;
//! nothing here panics on any input. Offsets are named once in each module's `field` block.

pub mod arp;
pub mod ethernet;
pub mod ipv4;
pub mod vnet;

pub use netwire::{checksum, icmp, igmp, tcp, udp};

/// Reads a big-endian u16 at `at`; the caller has checked the length.
#[inline]
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Writes a big-endian u16 at `at`; the caller has checked the length.
#[inline]
pub(crate) fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}
