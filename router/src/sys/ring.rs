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
//! same order as it fills the slots. When the receive queue had no room for the copy, the frame
//! is lost: counted (`rx-truncated` in the interface status, [`RxRing::take_lost`]), never
//! handed on truncated. The kernel's own drops (ring full) are PACKET_STATISTICS'
//! `tp_drops`, read as `rx-ring-full`.
//!
//! The geometry is checked before the ring exists ([`check_geometry`]): every invariant the raw
//! slot access relies on, with an error that names the broken rule.
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

/// Frame alignment the kernel requires (`TPACKET_ALIGNMENT`).
const TPACKET_ALIGNMENT: u32 = 16;

/// Most bytes in front of the frame data in a slot: the kernel puts the network header at
/// `TPACKET_ALIGN(TPACKET2_HDRLEN + 16)` = 80 (`tpacket2_hdr`, `sockaddr_ll`, room for the MAC
/// header) plus the virtio-net header; counted here without taking the MAC header back out.
const SLOT_OVERHEAD: u32 = 80 + crate::wire::vnet::LEN as u32;

/// The longest frame a slot must hold whole: a 1500-byte MTU Ethernet frame with a VLAN tag.
const MIN_SNAPLEN: u32 = 1518;

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

/// Why a ring geometry is refused (every invariant the ring's raw memory access relies on).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GeometryError {
    /// No blocks, or empty blocks.
    #[error("the ring needs at least one block of at least one page (block size {block_size}, {block_count} blocks)")]
    Empty {
        /// Bytes per block.
        block_size: u32,
        /// Blocks.
        block_count: u32,
    },
    /// The kernel maps blocks page by page.
    #[error("block size {block_size} is not a multiple of the page size {page_size}")]
    BlockNotPageMultiple {
        /// Bytes per block.
        block_size: u32,
        /// The system's page size.
        page_size: usize,
    },
    /// Frames must start TPACKET_ALIGNMENT-aligned.
    #[error("frame size {0} is not a multiple of TPACKET_ALIGNMENT (16)")]
    FrameMisaligned(u32),
    /// A slot must hold its headers and a whole MTU-sized frame.
    #[error("frame size {frame_size} cannot hold the {overhead}-byte slot header and a {snaplen}-byte frame")]
    FrameTooSmall {
        /// Bytes per frame slot.
        frame_size: u32,
        /// Header bytes in front of the data.
        overhead: u32,
        /// Frame bytes a slot must hold.
        snaplen: u32,
    },
    /// Frames may not straddle blocks: the block is a whole number of frames.
    #[error("block size {block_size} is not a multiple of the frame size {frame_size}")]
    BlockNotFrameMultiple {
        /// Bytes per block.
        block_size: u32,
        /// Bytes per frame slot.
        frame_size: u32,
    },
    /// The frame count or the mapping length overflows.
    #[error("{block_count} blocks of {block_size} bytes are too large a ring")]
    TooLarge {
        /// Bytes per block.
        block_size: u32,
        /// Blocks.
        block_count: u32,
    },
}

/// A checked ring layout: what the raw memory access in [`RxRing`] may rely on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    /// Bytes per frame slot.
    pub frame_size: u32,
    /// Frame slots per block.
    pub frames_per_block: u32,
    /// Frame slots in the ring: blocks × frames per block.
    pub frames: u32,
    /// Bytes mapped: blocks × block size = frames × frame size.
    pub map_len: usize,
}

impl RingLayout {
    /// The byte offset of slot `i` in the mapping, if the whole slot lies inside it.
    #[inline]
    pub fn slot_offset(&self, i: u32) -> Option<usize> {
        if i >= self.frames {
            return None;
        }
        let at = (i as usize).checked_mul(self.frame_size as usize)?;
        (at.checked_add(self.frame_size as usize)? <= self.map_len).then_some(at)
    }
}

/// Checks `geometry` with `frame_size` slots against the page size and the kernel's rules
/// (`packet_set_ring`): blocks a non-zero multiple of the page, frames 16-byte aligned and big
/// enough for their headers and a `snaplen` frame, whole frames per block, and sizes that fit.
pub fn check_geometry(
    geometry: RingGeometry,
    frame_size: u32,
    page_size: usize,
    snaplen: u32,
) -> Result<RingLayout, GeometryError> {
    let RingGeometry {
        block_size,
        block_count,
    } = geometry;
    if block_size == 0 || block_count == 0 {
        return Err(GeometryError::Empty {
            block_size,
            block_count,
        });
    }
    if page_size == 0 || !(block_size as usize).is_multiple_of(page_size) {
        return Err(GeometryError::BlockNotPageMultiple {
            block_size,
            page_size,
        });
    }
    if frame_size == 0 || !frame_size.is_multiple_of(TPACKET_ALIGNMENT) {
        return Err(GeometryError::FrameMisaligned(frame_size));
    }
    if frame_size < SLOT_OVERHEAD.saturating_add(snaplen) {
        return Err(GeometryError::FrameTooSmall {
            frame_size,
            overhead: SLOT_OVERHEAD,
            snaplen,
        });
    }
    if !block_size.is_multiple_of(frame_size) {
        return Err(GeometryError::BlockNotFrameMultiple {
            block_size,
            frame_size,
        });
    }
    let frames_per_block = block_size / frame_size;
    let too_large = GeometryError::TooLarge {
        block_size,
        block_count,
    };
    let frames = frames_per_block
        .checked_mul(block_count)
        .ok_or(too_large.clone())?;
    let map_len = (block_size as usize)
        .checked_mul(block_count as usize)
        .ok_or(too_large.clone())?;
    // The kernel indexes slots with an int and maps at most isize::MAX bytes.
    if frames > i32::MAX as u32 || map_len > isize::MAX as usize {
        return Err(too_large);
    }
    debug_assert_eq!(frames as usize * frame_size as usize, map_len);
    Ok(RingLayout {
        frame_size,
        frames_per_block,
        frames,
        map_len,
    })
}

/// The system's page size.
fn page_size() -> usize {
    // SAFETY: sysconf(3) takes no pointers.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|n| *n > 0).unwrap_or(4096)
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
    layout: RingLayout,
    /// Frames the ring handed over that could not be read whole (module docs), since the last
    /// [`RxRing::take_lost`].
    lost: u64,
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

/// One frame read from the ring, whole (truncated ones are counted by
/// [`RxRing::take_lost`] instead).
pub struct RingFrame<'a> {
    /// The Ethernet frame.
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
        let layout =
            check_geometry(geometry, FRAME_SIZE, page_size(), MIN_SNAPLEN).map_err(|e| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("packet ring: {e}"))
            })?;
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
            tp_frame_size: layout.frame_size,
            tp_frame_nr: layout.frames,
        };
        setopt(raw, libc::SOL_PACKET, PACKET_RX_RING, &req)
            .map_err(|e| io::Error::new(e.kind(), format!("PACKET_RX_RING (TPACKET_V2): {e}")))?;
        // SAFETY: mapping the ring the kernel just allocated for this socket, shared, for its
        // whole length (checked: blocks × block size); the result is checked against MAP_FAILED.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.map_len,
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
            layout,
            lost: 0,
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

    /// Frames handed over but lost since the last call: truncated in the ring without a whole
    /// copy on the receive queue, or a slot header pointing outside its slot.
    pub fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }

    /// The start of slot `i`, if the whole slot lies inside the mapping.
    fn slot_ptr(&self, i: u32) -> Option<*mut u8> {
        let at = self.layout.slot_offset(i)?;
        debug_assert!(at.is_multiple_of(TPACKET_ALIGNMENT as usize));
        // In bounds (checked just above), so the offset pointer stays inside the mapping.
        Some(self.map.wrapping_add(at))
    }

    fn slot_status(&self, base: *mut u8) -> &AtomicU32 {
        // SAFETY: `base` is a slot start from `slot_ptr` (inside the mapping, 16-byte aligned);
        // the status word is its first u32, shared with the kernel, so accessed atomically.
        unsafe { AtomicU32::from_ptr(base.add(frame::STATUS).cast()) }
    }

    /// Calls `f` for up to `max` frames the kernel has handed over, returning each slot to the
    /// kernel after its frame is read; returns how many frames `f` saw.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(RingFrame<'_>)) -> usize {
        let mut seen = 0;
        for _ in 0..max {
            let i = self.next;
            let Some(base) = self.slot_ptr(i) else {
                // Cannot happen (`next` stays below `frames`); start over rather than read
                // outside the mapping.
                self.next = 0;
                break;
            };
            let status = self.slot_status(base).load(Ordering::Acquire);
            if status & TP_STATUS_USER == 0 {
                break;
            }
            // SAFETY: the kernel handed this slot to us (TP_STATUS_USER, acquire); until we
            // store TP_STATUS_KERNEL it does not write it, so reading it as bytes is sound. The
            // whole slot lies inside the mapping (`slot_ptr`).
            let slot = unsafe { std::slice::from_raw_parts(base, self.layout.frame_size as usize) };
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
            let mut delivered = false;
            if status & TP_STATUS_COPY != 0 {
                // The whole frame is the next datagram on the receive queue (none when the
                // receive buffer was full: the frame is lost).
                if let Some(n) = recv_copy(self.fd.as_raw_fd(), &mut self.scratch) {
                    let (vnet, data) = if self.vnet {
                        (self.scratch.get(..vlen), self.scratch.get(vlen..n))
                    } else {
                        (None, self.scratch.get(..n))
                    };
                    if let Some(data) = data.filter(|d| d.len() >= wire_len as usize) {
                        f(RingFrame {
                            data,
                            wire_len,
                            status,
                            vnet,
                        });
                        seen += 1;
                        delivered = true;
                    }
                }
            } else if mac >= frame::HEADER && snaplen >= wire_len as usize {
                if let Some(data) = slot.get(mac..mac.saturating_add(snaplen)) {
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
                    delivered = true;
                }
            }
            if !delivered {
                self.lost += 1;
            }
            self.slot_status(base)
                .store(TP_STATUS_KERNEL, Ordering::Release);
            self.next = (i + 1) % self.layout.frames;
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
            libc::munmap(self.map.cast(), self.layout.map_len);
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

    #[test]
    fn the_default_geometry_is_valid_and_consistent() {
        let l = check_geometry(RingGeometry::default(), FRAME_SIZE, 4096, MIN_SNAPLEN).unwrap();
        assert_eq!(l.frames_per_block, (256 << 10) / FRAME_SIZE);
        assert_eq!(l.frames, l.frames_per_block * 16);
        assert_eq!(l.map_len, 16 * (256 << 10));
        assert_eq!(l.frames as usize * l.frame_size as usize, l.map_len);
        // Also on 64 KiB pages.
        assert!(check_geometry(RingGeometry::default(), FRAME_SIZE, 65536, MIN_SNAPLEN).is_ok());
    }

    #[test]
    fn broken_geometries_are_refused_with_the_rule_they_break() {
        let g = |block_size, block_count| RingGeometry {
            block_size,
            block_count,
        };
        let check = |geometry, frame| check_geometry(geometry, frame, 4096, MIN_SNAPLEN);
        assert!(matches!(
            check(g(0, 4), 2048),
            Err(GeometryError::Empty { .. })
        ));
        assert!(matches!(
            check(g(8192, 0), 2048),
            Err(GeometryError::Empty { .. })
        ));
        assert!(matches!(
            check(g(6144, 4), 2048),
            Err(GeometryError::BlockNotPageMultiple { .. })
        ));
        assert_eq!(
            check(g(8192, 4), 2056),
            Err(GeometryError::FrameMisaligned(2056))
        );
        assert!(matches!(
            check(g(8192, 4), 1024),
            Err(GeometryError::FrameTooSmall { .. })
        ));
        // 4096 / 1648 is not whole: a frame would straddle two blocks.
        assert!(matches!(
            check(g(4096, 4), 1648),
            Err(GeometryError::BlockNotFrameMultiple { .. })
        ));
        assert!(matches!(
            check(g(1 << 31, 1 << 20), 2048),
            Err(GeometryError::TooLarge { .. })
        ));
        // Errors read as sentences an operator can act on.
        let e = check(g(6144, 4), 2048).unwrap_err().to_string();
        assert!(e.contains("page size 4096"), "{e}");
    }

    #[test]
    fn slot_offsets_are_bounded_by_the_mapping() {
        let l = check_geometry(
            RingGeometry {
                block_size: 8192,
                block_count: 2,
            },
            FRAME_SIZE,
            4096,
            MIN_SNAPLEN,
        )
        .unwrap();
        assert_eq!(l.frames, 8);
        assert_eq!(l.slot_offset(0), Some(0));
        assert_eq!(l.slot_offset(7), Some(7 * 2048));
        assert_eq!(l.slot_offset(8), None);
        assert_eq!(l.slot_offset(u32::MAX), None);
    }

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
        assert_eq!(ring.take_lost(), 0, "whole frames are not lost");
        for (i, ((data, wire_len), &n)) in got.iter().zip(&sizes).enumerate() {
            assert_eq!(data.len(), 42 + n, "frame {i}");
            assert_eq!(*wire_len as usize, 42 + n, "frame {i}");
            let want: Vec<u8> = (0..n).map(|j| (i * 31 + j) as u8).collect();
            assert_eq!(&data[42..], &want[..], "frame {i} payload");
        }
    }

    /// Oversized frames whose whole copy the receive queue has no room for are lost and
    /// counted, not handed on truncated. Uses the loopback device (root only).
    #[test]
    fn oversized_frames_without_room_for_a_copy_are_counted_lost() {
        if crate::sys::euid() != 0 {
            eprintln!("skipped: opening a packet ring needs root");
            return;
        }
        let lo = crate::sys::link_info("lo").unwrap();
        let mut ring = RxRing::open(lo.ifindex, RingGeometry::default(), None, 70_000).unwrap();
        // The smallest receive buffer: room for one queued copy at most.
        setopt(
            ring.fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &1 as &libc::c_int,
        )
        .unwrap();
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = rx.local_addr().unwrap().port();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..4 {
            tx.send_to(&[7u8; 20_000], ("127.0.0.1", port)).unwrap();
        }
        let mut whole = 0;
        let mut lost = 0;
        let deadline = Instant::now() + Duration::from_secs(3);
        while whole + lost < 4 && Instant::now() < deadline {
            ring.drain(64, |f| {
                if f.data.get(36..38) == Some(&port.to_be_bytes()) {
                    assert_eq!(f.data.len(), 20_042, "only whole frames are handed on");
                    whole += 1;
                }
            });
            lost += ring.take_lost();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(lost >= 1, "whole {whole}, lost {lost}");
    }
}
