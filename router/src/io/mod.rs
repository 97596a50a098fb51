//! I/O backends: how frames get from an interface into a worker and back out.
//!
//! The default (and today the only) backend is pnet's datalink channel over an `AF_PACKET`
//! socket that swrouter opens itself (see [`crate::sys::open_packet_socket`]) so it can ask the
//! kernel for what pnet cannot: never loop our own (or anyone's) transmitted frames back as input
//! (`PACKET_IGNORE_OUTGOING`), and tell us the checksum/GSO state of each frame
//! (`PACKET_VNET_HDR`, see [`crate::wire::vnet`]).

use crate::pipeline::counters::PortCounters;
use crate::pipeline::packet::{Packet, Pool};
use crate::tables::{IfId, Iface};
use crate::wire::vnet::{self, VnetHdr};
use pnet_datalink::{
    Channel, DataLinkReceiver, DataLinkSender, FanoutOption, FanoutType, NetworkInterface,
};
use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::time::Duration;

/// Largest frame we accept from the kernel: a 64 KiB GSO super-packet plus headers.
const READ_BUFFER: usize = vnet::LEN + 65_536 + 64;

/// One worker's socket on one interface.
pub struct Port {
    /// Our interface id.
    pub if_id: IfId,
    rx: Box<dyn DataLinkReceiver>,
    tx: Box<dyn DataLinkSender>,
    fd: RawFd,
}

impl Port {
    /// Opens a socket on `iface`; with `fanout`, joins the interface's fanout group so the kernel
    /// spreads flows over the workers (PACKET_FANOUT_HASH keeps a flow on one worker, in order).
    pub fn open(iface: &Iface, fanout: Option<u16>) -> io::Result<Port> {
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
            Channel::Ethernet(tx, rx) => Ok(Port {
                if_id: iface.id,
                rx,
                tx,
                fd,
            }),
            _ => Err(io::Error::other("pnet returned a non-Ethernet channel")),
        }
    }

    /// The descriptor to poll for readability.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Reads up to `max` frames without blocking into `out`.
    pub fn recv_burst(
        &mut self,
        pool: &mut Pool,
        out: &mut Vec<Packet>,
        max: usize,
        counters: &PortCounters,
    ) {
        for _ in 0..max {
            match self.rx.next() {
                Ok(buf) => {
                    let Some(hdr) = VnetHdr::parse(buf) else {
                        counters.rx_errors.inc();
                        continue;
                    };
                    let frame = &buf[vnet::LEN..];
                    counters.rx_packets.inc();
                    counters.rx_bytes.add(frame.len() as u64);
                    let mut p = pool.get_with(frame);
                    p.meta.rx_if = self.if_id;
                    p.meta.offload = hdr;
                    out.push(p);
                }
                Err(e)
                    if e.kind() == io::ErrorKind::TimedOut
                        || e.kind() == io::ErrorKind::WouldBlock =>
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

    /// Sends one frame, prefixed with its vnet header so the kernel finishes any partial checksum
    /// and segments GSO super-packets on the way out, as its own forwarding path would.
    pub fn send(&mut self, pkt: &mut Packet, counters: &PortCounters) -> bool {
        let offload = pkt.meta.offload;
        let len = pkt.len();
        let Some(buf) = pkt.with_front(vnet::LEN) else {
            counters.tx_errors.inc();
            return false;
        };
        // DATA_VALID means nothing on transmit; only NEEDS_CSUM and GSO state go back.
        let tx_hdr = VnetHdr {
            flags: offload.flags & vnet::F_NEEDS_CSUM,
            ..offload
        };
        tx_hdr.emit(buf);
        match self.tx.send_to(buf, None) {
            Some(Ok(())) => {
                counters.tx_packets.inc();
                counters.tx_bytes.add(len as u64);
                true
            }
            _ => {
                counters.tx_errors.inc();
                false
            }
        }
    }
}
