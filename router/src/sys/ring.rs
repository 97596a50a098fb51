//! `PACKET_MMAP` sockets: a TPACKET_V2 receive ring and a `sendmmsg` transmit socket.
//!
//! The receive ring is shared memory the kernel fills frame by frame; reading a burst costs no
//! system call, and the kernel hands each frame over as soon as it is written (per-frame status
//! word), so `poll` wakes us for the first frame of a burst. TPACKET_V3 was used before: it
//! packs frames into blocks and hands a partly filled block over only when its retire timer
//! fires (at least 1 ms), which added up to 1 ms per crossing to light traffic.
//!
//! Ring frames are [`FRAME_SIZE`] bytes: every frame up to a ~1.9 KB Ethernet frame fits. A
//! larger one (a GSO super-packet from a veth, a jumbo frame) is truncated in the ring, and with
//! `PACKET_COPY_THRESH` set the kernel also queues the whole frame on the socket's ordinary
//! receive queue and marks the ring slot `TP_STATUS_COPY`; the whole frame is then read with one
//! `recv` (virtio-net header included), in ring order since the kernel queues the copies in the
//! same order as it fills the slots.
//!
//! Transmit goes through `sendmmsg`: one system call for a whole burst, still with the
//! virtio-net header so partial checksums and GSO super-packets leave as the kernel expects.
//!
//! All raw memory access is in this file. The ring layout follows `linux/if_packet.h`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

const TPACKET_V2: libc::c_int = 1;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_COPY_THRESH: libc::c_int = 7;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_FANOUT_HASH: u32 = 0;
/// Frame handed to user space.
const TP_STATUS_USER: u32 = 1;
/// Frame owned by the kernel.
const TP_STATUS_KERNEL: u32 = 0;
/// Frame status bit: the frame was too big for its slot; the whole frame waits on the socket's
/// receive queue.
const TP_STATUS_COPY: u32 = 1 << 1;
/// Frame status bit: the TCP/UDP checksum is still partial.
pub const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;

/// Bytes per ring slot: the 32-byte `tpacket2_hdr`, the `sockaddr_ll`, the virtio-net header
/// and a 1514-byte frame fit with room to spare; bigger frames take the copy path.
pub const FRAME_SIZE: u32 = 2048;

/// Offsets in `struct tpacket2_hdr`.
mod frame {
    pub const STATUS: usize = 0;
    pub const LEN: usize = 4;
    pub const SNAPLEN: usize = 8;
    pub const MAC: usize = 12;
    /// Size of the header fields we read.
    pub const HEADER: usize = 32;
}

/// Geometry of the receive ring.
#[derive(Debug, Clone, Copy)]
pub struct RingGeometry {
    /// Bytes per block (a power of two, multiple of the page size and of [`FRAME_SIZE`]).
    pub block_size: u32,
    /// Number of blocks.
    pub block_count: u32,
}

impl Default for RingGeometry {
    fn default() -> Self {
        // 16 × 256 KiB = 4 MiB per socket = 2048 slots: about 5 ms of a 400 kpps burst.
        RingGeometry {
            block_size: 256 << 10,
            block_count: 16,
        }
    }
}

impl RingGeometry {
    fn frames(&self) -> u32 {
        self.block_size / FRAME_SIZE * self.block_count
    }
}

#[repr(C)]
struct TpacketReq {
    tp_block_size: u32,
    tp_block_nr: u32,
    tp_frame_size: u32,
    tp_frame_nr: u32,
}

fn setopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points at a live T whose exact size we pass.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a non-negative return is a descriptor we own.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr_ll(ifindex: u32, protocol: u16) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = protocol.to_be();
    sa.sll_ifindex = ifindex as i32;
    sa
}

fn bind(fd: RawFd, ifindex: u32, protocol: u16) -> io::Result<()> {
    let sa = sockaddr_ll(ifindex, protocol);
    // SAFETY: sa is a valid sockaddr_ll and we pass its size.
    let rc = unsafe {
        libc::bind(
            fd,
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A TPACKET_V2 receive ring bound to one interface.
pub struct RxRing {
    fd: OwnedFd,
    map: *mut u8,
    map_len: usize,
    frames: u32,
    /// Index of the next slot to look at.
    next: u32,
    /// Whole frames that did not fit a slot are read here (virtio-net header first).
    scratch: Vec<u8>,
    /// Whether frames carry a virtio-net header before the MAC header.
    pub vnet: bool,
}

// SAFETY: the mapping is owned by this value alone; moving it to another thread moves the only
// handle to it.
unsafe impl Send for RxRing {}

/// One frame read from the ring.
pub struct RingFrame<'a> {
    /// The Ethernet frame (shorter than `wire_len` only if it was truncated and no whole copy
    /// could be had).
    pub data: &'a [u8],
    /// Length on the wire.
    pub wire_len: u32,
    /// tp_status bits (e.g. [`TP_STATUS_CSUMNOTREADY`]).
    pub status: u32,
    /// The 10-byte virtio-net header before the frame, when the ring carries one.
    pub vnet: Option<&'a [u8]>,
}

impl RxRing {
    /// Opens the ring on `ifindex`, in promiscuous mode, never receiving outgoing frames, and in
    /// fanout group `fanout` if given. `max_frame` is the largest frame (virtio-net header
    /// included) read through the copy path.
    pub fn open(
        ifindex: u32,
        geometry: RingGeometry,
        fanout: Option<u16>,
        max_frame: usize,
    ) -> io::Result<RxRing> {
        let fd = packet_socket()?;
        let raw = fd.as_raw_fd();
        setopt(
            raw,
            libc::SOL_PACKET,
            super::PACKET_IGNORE_OUTGOING,
            &1 as &libc::c_int,
        )?;
        // The virtio-net header tells GSO size and checksum offsets; without it the ring reports
        // only TP_STATUS_CSUMNOTREADY. It must be set before the ring exists.
        let vnet = setopt(
            raw,
            libc::SOL_PACKET,
            super::PACKET_VNET_HDR,
            &1 as &libc::c_int,
        )
        .is_ok();
        setopt(raw, libc::SOL_PACKET, PACKET_VERSION, &TPACKET_V2)?;
        // Frames too big for a slot are also queued whole on the receive queue (TP_STATUS_COPY).
        setopt(
            raw,
            libc::SOL_PACKET,
            PACKET_COPY_THRESH,
            &1 as &libc::c_int,
        )?;
        let req = TpacketReq {
            tp_block_size: geometry.block_size,
            tp_block_nr: geometry.block_count,
            tp_frame_size: FRAME_SIZE,
            tp_frame_nr: geometry.frames(),
        };
        setopt(raw, libc::SOL_PACKET, PACKET_RX_RING, &req)
            .map_err(|e| io::Error::new(e.kind(), format!("PACKET_RX_RING (TPACKET_V2): {e}")))?;
        let map_len = geometry.block_size as usize * geometry.block_count as usize;
        // SAFETY: mapping the ring the kernel just allocated for this socket, shared, for its
        // whole length; the result is checked against MAP_FAILED.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                raw,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ring = RxRing {
            fd,
            map: map.cast(),
            map_len,
            frames: geometry.frames(),
            next: 0,
            scratch: vec![0; max_frame],
            vnet,
        };
        bind(raw, ifindex, libc::ETH_P_ALL as u16)?;
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as i32,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        setopt(raw, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)?;
        if let Some(group) = fanout {
            let arg: u32 = group as u32 | (PACKET_FANOUT_HASH << 16);
            setopt(raw, libc::SOL_PACKET, PACKET_FANOUT, &arg)?;
        }
        // The receive buffer bounds the whole copies of big frames waiting for us.
        let _ = setopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &(8 << 20) as &libc::c_int,
        );
        Ok(ring)
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn slot_ptr(&self, i: u32) -> *mut u8 {
        // SAFETY (for callers): i < frames, so the slot lies inside the mapping (block_size is a
        // multiple of FRAME_SIZE, so slots are contiguous).
        self.map.wrapping_add(i as usize * FRAME_SIZE as usize)
    }

    fn slot_status(&self, i: u32) -> &AtomicU32 {
        // SAFETY: the status word is the first, 16-byte aligned u32 of a slot inside the mapping,
        // shared with the kernel, so it is accessed atomically.
        unsafe { AtomicU32::from_ptr(self.slot_ptr(i).add(frame::STATUS).cast()) }
    }

    /// Calls `f` for up to `max` frames the kernel has handed over, returning each slot to the
    /// kernel after its frame is read; returns how many frames `f` saw.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(RingFrame<'_>)) -> usize {
        let mut seen = 0;
        for _ in 0..max {
            let i = self.next;
            let status = self.slot_status(i).load(Ordering::Acquire);
            if status & TP_STATUS_USER == 0 {
                break;
            }
            let base = self.slot_ptr(i);
            // SAFETY: the kernel handed this slot to us (TP_STATUS_USER, acquire); until we
            // store TP_STATUS_KERNEL it does not write it, so reading it as bytes is sound.
            let slot = unsafe { std::slice::from_raw_parts(base, FRAME_SIZE as usize) };
            let rd = |at: usize| -> u32 {
                slot.get(at..at + 4)
                    .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0)
            };
            let wire_len = rd(frame::LEN);
            let snaplen = rd(frame::SNAPLEN) as usize;
            let mac = slot
                .get(frame::MAC..frame::MAC + 2)
                .map(|b| u16::from_ne_bytes([b[0], b[1]]) as usize)
                .unwrap_or(0);
            let vlen = crate::wire::vnet::LEN;
            if status & TP_STATUS_COPY != 0 {
                // The whole frame is the next datagram on the receive queue.
                if let Some(n) = recv_copy(self.fd.as_raw_fd(), &mut self.scratch) {
                    let (vnet, data) = if self.vnet {
                        (self.scratch.get(..vlen), self.scratch.get(vlen..n))
                    } else {
                        (None, self.scratch.get(..n))
                    };
                    if let Some(data) = data {
                        f(RingFrame {
                            data,
                            wire_len,
                            status,
                            vnet,
                        });
                        seen += 1;
                    }
                }
            } else if mac >= frame::HEADER {
                if let Some(data) = slot.get(mac..mac + snaplen) {
                    let vnet = if self.vnet {
                        slot.get(mac - vlen..mac)
                    } else {
                        None
                    };
                    f(RingFrame {
                        data,
                        wire_len,
                        status,
                        vnet,
                    });
                    seen += 1;
                }
            }
            self.slot_status(i)
                .store(TP_STATUS_KERNEL, Ordering::Release);
            self.next = (i + 1) % self.frames;
        }
        seen
    }
}

/// Reads one queued whole frame into `buf`; its length, or None if none is queued or it did
/// not fit.
fn recv_copy(fd: RawFd, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: buf is a live, writable buffer of buf.len() bytes for the duration of the call.
    let n = unsafe {
        libc::recv(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_TRUNC,
        )
    };
    if n < 0 || n as usize > buf.len() {
        return None;
    }
    Some(n as usize)
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region mmap returned; no slice into it outlives `drain`.
        unsafe {
            libc::munmap(self.map.cast(), self.map_len);
        }
    }
}

/// Most frames per `sendmmsg` call.
pub const TX_BATCH: usize = 64;

/// A transmit-only packet socket that sends bursts with `sendmmsg`.
pub struct TxSocket {
    fd: OwnedFd,
    ifindex: u32,
    iov: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_ll>,
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the iovec/mmsghdr vectors hold pointers only during `send_batch`, filled and consumed
// within the call; between calls they are dead values.
unsafe impl Send for TxSocket {}

impl TxSocket {
    /// Opens a socket that sends on `ifindex` with virtio-net headers and bypasses the qdisc.
    pub fn open(ifindex: u32) -> io::Result<TxSocket> {
        let fd = packet_socket()?;
        let raw = fd.as_raw_fd();
        setopt(
            raw,
            libc::SOL_PACKET,
            super::PACKET_VNET_HDR,
            &1 as &libc::c_int,
        )?;
        // No qdisc: the frames go straight to the driver, as a forwarding plane wants.
        let _ = setopt(
            raw,
            libc::SOL_PACKET,
            PACKET_QDISC_BYPASS,
            &1 as &libc::c_int,
        );
        // Protocol 0: this socket never receives anything.
        bind(raw, ifindex, 0)?;
        let _ = setopt(
            raw,
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            &(4 << 20) as &libc::c_int,
        );
        Ok(TxSocket {
            fd,
            ifindex,
            iov: Vec::with_capacity(TX_BATCH),
            addrs: Vec::with_capacity(TX_BATCH),
            msgs: Vec::with_capacity(TX_BATCH),
        })
    }

    /// Sends up to [`TX_BATCH`] frames (each prefixed with its virtio-net header) in one call;
    /// returns how many the kernel took.
    pub fn send_batch(&mut self, frames: &[&[u8]]) -> io::Result<usize> {
        let n = frames.len().min(TX_BATCH);
        if n == 0 {
            return Ok(0);
        }
        self.iov.clear();
        self.addrs.clear();
        self.msgs.clear();
        for f in &frames[..n] {
            self.iov.push(libc::iovec {
                iov_base: f.as_ptr() as *mut libc::c_void,
                iov_len: f.len(),
            });
            // The EtherType after the 10-byte vnet header and two MACs tells the kernel the protocol.
            let proto = f
                .get(22..24)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .unwrap_or(0);
            self.addrs.push(sockaddr_ll(self.ifindex, proto));
        }
        for i in 0..n {
            // SAFETY: msghdr/mmsghdr are plain old data; all-zero is a valid starting value.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_ll).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            m.msg_hdr.msg_iov = &mut self.iov[i];
            m.msg_hdr.msg_iovlen = 1;
            self.msgs.push(m);
        }
        // SAFETY: msgs[..n] point into iov/addrs and the caller's frames, all alive for the call.
        let rc = unsafe {
            libc::sendmmsg(
                self.fd.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                n as libc::c_uint,
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as usize)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    /// A frame that fits a slot and one far bigger than a slot (the copy path) both arrive
    /// whole, in order, with their wire length. Uses the loopback device (root only).
    #[test]
    fn small_and_oversized_frames_arrive_whole() {
        if crate::sys::euid() != 0 {
            eprintln!("skipped: opening a packet ring needs root");
            return;
        }
        let lo = crate::sys::link_info("lo").unwrap();
        let mut ring = RxRing::open(lo.ifindex, RingGeometry::default(), None, 70_000).unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rx.local_addr().unwrap().port();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sizes = [100usize, 20_000, 60, 9_000];
        for (i, &n) in sizes.iter().enumerate() {
            let payload: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8).collect();
            tx.send_to(&payload, ("127.0.0.1", port)).unwrap();
        }
        // Ethernet + IPv4 + UDP in front of each payload; only frames to our port count.
        let mut got: Vec<(Vec<u8>, u32)> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while got.len() < sizes.len() && Instant::now() < deadline {
            ring.drain(64, |f| {
                let to_us = f.data.get(12..14) == Some(&[0x08, 0x00])
                    && f.data.get(23) == Some(&17)
                    && f.data.get(36..38) == Some(&port.to_be_bytes());
                if to_us {
                    got.push((f.data.to_vec(), f.wire_len));
                }
            });
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(got.len(), sizes.len(), "frames seen: {}", got.len());
        for (i, ((data, wire_len), &n)) in got.iter().zip(&sizes).enumerate() {
            assert_eq!(data.len(), 42 + n, "frame {i}");
            assert_eq!(*wire_len as usize, 42 + n, "frame {i}");
            let want: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8).collect();
            assert_eq!(&data[42..], &want[..], "frame {i} payload");
        }
    }
}
