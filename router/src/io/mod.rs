//! I/O backends: how frames get from an interface into a worker and back out.
//!
//! Two backends, chosen per interface in the config (`io-backend`):
//! - `pnet` (portable; what an interface falls back to when its ring cannot be set up): pnet's datalink channel over an `AF_PACKET` socket that swrouter
//!   opens itself (see [`crate::sys::open_packet_socket`]) so it can ask the kernel for what pnet
//!   cannot: never loop transmitted frames back as input (`PACKET_IGNORE_OUTGOING`), and the
//!   checksum/GSO state of each frame (`PACKET_VNET_HDR`, see [`crate::wire::vnet`]). One system
//!   call per frame each way.
//! - `mmap` (the default): a TPACKET_V2 receive ring (no system call per frame, frames handed over one by
//!   one so light traffic is not held back) and `sendmmsg` bursts on transmit (one system call
//!   per burst), see [`crate::sys::ring`].
//!
//! Both hand the pipeline the same [`Packet`]s with the same offload metadata.

use crate::pipeline::counters::PortCounters;
use crate::pipeline::packet::{Packet, Pool};
use crate::sys::ring::{RingGeometry, RxRing, TxSocket, TP_STATUS_CSUMNOTREADY, TX_BATCH};
use crate::tables::{IfId, Iface};
use crate::wire::vnet::{self, VnetHdr};
use pnet_datalink::{
    Channel, DataLinkReceiver, DataLinkSender, FanoutOption, FanoutType, NetworkInterface,
};
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::time::Duration;

pub use conf::IoBackend;

/// Largest frame we accept from the kernel: a 64 KiB GSO super-packet plus headers.
const READ_BUFFER: usize = vnet::LEN + 65_536 + 64;

/// Most frames taken from an mmap ring per wake-up: one `poll` per this many frames under
/// load, and still well inside the worker's buffer pool.
const RING_BURST: usize = 256;

enum Kind {
    Pnet {
        rx: Box<dyn DataLinkReceiver>,
        tx: Box<dyn DataLinkSender>,
        fd: RawFd,
    },
    Mmap {
        ring: RxRing,
        tx: TxSocket,
    },
}

/// One worker's socket(s) on one interface.
pub struct Port {
    /// Our interface id.
    pub if_id: IfId,
    kind: Kind,
}

impl Port {
    /// Opens `backend` on `iface`; with `fanout`, joins the interface's fanout group so the
    /// kernel spreads flows over the workers (PACKET_FANOUT_HASH keeps a flow on one worker, in
    /// order).
    pub fn open(iface: &Iface, backend: IoBackend, fanout: Option<u16>) -> io::Result<Port> {
        let kind = match backend {
            IoBackend::Pnet => open_pnet(iface, fanout)?,
            IoBackend::Mmap => {
                let ring =
                    RxRing::open(iface.ifindex, RingGeometry::default(), fanout, READ_BUFFER)?;
                if !ring.vnet {
                    tracing::info!(interface = %iface.name, "this kernel gives no virtio-net header with the packet ring; partial checksums are taken from the ring's CSUMNOTREADY flag");
                }
                Kind::Mmap {
                    ring,
                    tx: TxSocket::open(iface.ifindex)?,
                }
            }
        };
        Ok(Port {
            if_id: iface.id,
            kind,
        })
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> RawFd {
        match &self.kind {
            Kind::Pnet { fd, .. } => *fd,
            Kind::Mmap { ring, .. } => ring.fd(),
        }
    }

    /// Reads up to about `max` frames without blocking into `out`.
    pub fn recv_burst(
        &mut self,
        pool: &mut Pool,
        out: &mut Vec<Packet>,
        max: usize,
        counters: &PortCounters,
    ) {
        let if_id = self.if_id;
        match &mut self.kind {
            Kind::Pnet { rx, .. } => recv_pnet(rx.as_mut(), if_id, pool, out, max, counters),
            Kind::Mmap { ring, .. } => {
                // More than `max`: the ring hands frames over one by one, so a larger burst
                // only saves `poll` calls under load and never waits for anything.
                ring.drain(max.max(RING_BURST), |f| {
                    counters.rx_packets.inc();
                    counters.rx_bytes.add(f.data.len() as u64);
                    let mut p = pool.get_with(f.data);
                    p.meta.rx_if = if_id;
                    p.meta.offload = match f.vnet.and_then(VnetHdr::parse) {
                        Some(h) => h,
                        None if f.status & TP_STATUS_CSUMNOTREADY != 0 => partial_csum(p.frame()),
                        None => VnetHdr::default(),
                    };
                    out.push(p);
                });
                // Truncated in the ring with no whole copy (receive buffer full): lost.
                counters.rx_truncated.add(ring.take_lost());
            }
        }
    }

    /// Sends every packet in `queue` (emptying it) and returns the buffers to `pool`; returns how
    /// many the kernel refused.
    pub fn send_all(
        &mut self,
        queue: &mut Vec<Packet>,
        pool: &mut Pool,
        counters: &PortCounters,
    ) -> u64 {
        let mut failed = 0;
        for p in queue.iter_mut() {
            if !write_vnet(p) {
                failed += 1;
            }
        }
        match &mut self.kind {
            Kind::Pnet { tx, .. } => {
                for p in queue.iter_mut() {
                    let len = p.len();
                    let ok = p
                        .with_front(vnet::LEN)
                        .is_some_and(|buf| matches!(tx.send_to(buf, None), Some(Ok(()))));
                    count_tx(counters, ok, len, &mut failed);
                }
            }
            Kind::Mmap { tx, .. } => {
                // Every packet has headroom (HEADROOM > vnet::LEN), so frames[i] is chunk[i].
                let mut frames: [&[u8]; TX_BATCH] = [&[]; TX_BATCH];
                for chunk in queue.chunks(TX_BATCH) {
                    for (slot, p) in frames.iter_mut().zip(chunk) {
                        *slot = p.front(vnet::LEN).unwrap_or(&[]);
                    }
                    let sent = tx.send_batch(&frames[..chunk.len()]).unwrap_or(0);
                    for (i, p) in chunk.iter().enumerate() {
                        count_tx(counters, i < sent, p.len(), &mut failed);
                    }
                }
            }
        }
        for p in queue.drain(..) {
            pool.put(p);
        }
        failed
    }

    /// Frames the kernel dropped on this socket since the last call (buffer or ring full).
    pub fn take_drops(&self) -> u64 {
        crate::sys::take_socket_drops(self.fd())
    }
}

fn count_tx(counters: &PortCounters, ok: bool, len: usize, failed: &mut u64) {
    if ok {
        counters.tx_packets.inc();
        counters.tx_bytes.add(len as u64);
    } else {
        counters.tx_errors.inc();
        *failed += 1;
    }
}

/// Writes the virtio-net header in front of the frame: NEEDS_CSUM and GSO state go back to the
/// kernel so it finishes partial checksums and segments super-packets on the way out, as its own
/// forwarding path would (DATA_VALID means nothing on transmit).
fn write_vnet(p: &mut Packet) -> bool {
    let o = p.meta.offload;
    let hdr = VnetHdr {
        flags: o.flags & vnet::F_NEEDS_CSUM,
        ..o
    };
    match p.with_front(vnet::LEN) {
        Some(buf) => {
            hdr.emit(buf);
            true
        }
        None => false,
    }
}

/// Offload state for a frame the ring marked CSUMNOTREADY without a virtio-net header: the
/// checksum of a TCP or UDP segment right after the IPv4 header.
fn partial_csum(frame: &[u8]) -> VnetHdr {
    let Some(&ver_ihl) = frame.get(14) else {
        return VnetHdr::default();
    };
    let start = 14 + (ver_ihl & 0x0f) as usize * 4;
    let offset = match frame.get(14 + 9) {
        Some(6) => 16,
        Some(17) => 6,
        _ => return VnetHdr::default(),
    };
    VnetHdr {
        flags: vnet::F_NEEDS_CSUM,
        csum_start: start as u16,
        csum_offset: offset,
        ..Default::default()
    }
}

fn open_pnet(iface: &Iface, fanout: Option<u16>) -> io::Result<Kind> {
    let sock = crate::sys::open_packet_socket()?;
    let fd = sock.as_raw_fd();
    let ni = NetworkInterface {
        name: iface.name.clone(),
        description: String::new(),
        index: iface.ifindex,
        mac: None,
        ips: Vec::new(),
        flags: 0,
    };
    let config = pnet_datalink::Config {
        read_buffer_size: READ_BUFFER,
        write_buffer_size: 2048,
        read_timeout: Some(Duration::ZERO),
        write_timeout: Some(Duration::from_millis(50)),
        linux_fanout: fanout.map(|group_id| FanoutOption {
            group_id,
            fanout_type: FanoutType::HASH,
            defrag: false,
            rollover: false,
        }),
        promiscuous: true,
        socket_fd: Some(sock.into_raw_fd()),
        ..Default::default()
    };
    match pnet_datalink::channel(&ni, config)? {
        Channel::Ethernet(tx, rx) => Ok(Kind::Pnet { rx, tx, fd }),
        _ => Err(io::Error::other("pnet returned a non-Ethernet channel")),
    }
}

fn recv_pnet(
    rx: &mut dyn DataLinkReceiver,
    if_id: IfId,
    pool: &mut Pool,
    out: &mut Vec<Packet>,
    max: usize,
    counters: &PortCounters,
) {
    for _ in 0..max {
        match rx.next() {
            Ok(buf) => {
                let Some(hdr) = VnetHdr::parse(buf) else {
                    counters.rx_errors.inc();
                    continue;
                };
                let frame = &buf[vnet::LEN..];
                counters.rx_packets.inc();
                counters.rx_bytes.add(frame.len() as u64);
                let mut p = pool.get_with(frame);
                p.meta.rx_if = if_id;
                p.meta.offload = hdr;
                out.push(p);
            }
            Err(e)
                if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock =>
            {
                break
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                counters.rx_errors.inc();
                break;
            }
        }
    }
}
