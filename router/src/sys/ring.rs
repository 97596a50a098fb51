//! `PACKET_MMAP` sockets: a TPACKET_V3 receive ring and a `sendmmsg` transmit socket.
//!
//! The receive ring is shared memory the kernel fills with whole blocks of frames; reading a
//! burst costs no system call at all, and one `poll` wakes us per block instead of per frame.
//! Transmit goes through `sendmmsg`: one system call for a whole burst, still with the
//! virtio-net header so partial checksums and GSO super-packets leave as the kernel expects.
//!
//! All raw memory access is in this file. The ring layout follows `linux/if_packet.h`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

const TPACKET_V3: libc::c_int = 2;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_FANOUT: libc::c_int = 18;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_FANOUT_HASH: u32 = 0;
/// Block handed to user space.
const TP_STATUS_USER: u32 = 1;
/// Block owned by the kernel.
const TP_STATUS_KERNEL: u32 = 0;
/// Frame status bit: the TCP/UDP checksum is still partial.
pub const TP_STATUS_CSUMNOTREADY: u32 = 1 << 3;

/// Offsets in `struct tpacket_block_desc` (version, offset_to_priv, then tpacket_hdr_v1).
mod block {
    pub const STATUS: usize = 8;
    pub const NUM_PKTS: usize = 12;
    pub const FIRST_PKT: usize = 16;
}
/// Offsets in `struct tpacket3_hdr`.
mod frame {
    pub const NEXT_OFFSET: usize = 0;
    pub const SNAPLEN: usize = 12;
    pub const LEN: usize = 16;
    pub const STATUS: usize = 20;
    pub const MAC: usize = 24;
}

/// Geometry of the receive ring.
#[derive(Debug, Clone, Copy)]
pub struct RingGeometry {
    /// Bytes per block (a power of two, multiple of the page size; holds a 64 KiB GSO frame).
    pub block_size: u32,
    /// Number of blocks.
    pub block_count: u32,
    /// Milliseconds after which the kernel hands over a partly filled block.
    pub retire_ms: u32,
}

impl Default for RingGeometry {
    fn default() -> Self {
        // 16 × 256 KiB = 4 MiB per socket: room for ~60k small frames of burst, and any GSO frame.
        RingGeometry {
            block_size: 256 << 10,
            block_count: 16,
            retire_ms: 1,
        }
    }
}

#[repr(C)]
struct TpacketReq3 {
    tp_block_size: u32,
    tp_block_nr: u32,
    tp_frame_size: u32,
    tp_frame_nr: u32,
    tp_retire_blk_tov: u32,
    tp_sizeof_priv: u32,
    tp_feature_req_word: u32,
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

/// A TPACKET_V3 receive ring bound to one interface.
pub struct RxRing {
    fd: OwnedFd,
    map: *mut u8,
    map_len: usize,
    geometry: RingGeometry,
    /// Index of the next block to look at.
    next_block: u32,
    /// Whether frames carry a virtio-net header before the MAC header.
    pub vnet: bool,
}

// SAFETY: the mapping is owned by this value alone; moving it to another thread moves the only
// handle to it.
unsafe impl Send for RxRing {}

/// One frame read from the ring.
pub struct RingFrame<'a> {
    /// The Ethernet frame (may be shorter than `wire_len` only if the ring truncated it).
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
    /// fanout group `fanout` if given.
    pub fn open(ifindex: u32, geometry: RingGeometry, fanout: Option<u16>) -> io::Result<RxRing> {
        let fd = packet_socket()?;
        let raw = fd.as_raw_fd();
        setopt(
            raw,
            libc::SOL_PACKET,
            super::PACKET_IGNORE_OUTGOING,
            &1 as &libc::c_int,
        )?;
        // The virtio-net header tells GSO size and checksum offsets; older kernels refuse it with
        // TPACKET_V3, and then the ring reports only TP_STATUS_CSUMNOTREADY.
        let vnet = setopt(
            raw,
            libc::SOL_PACKET,
            super::PACKET_VNET_HDR,
            &1 as &libc::c_int,
        )
        .is_ok();
        setopt(raw, libc::SOL_PACKET, PACKET_VERSION, &TPACKET_V3)?;
        let frame_size = 2048u32;
        let req = TpacketReq3 {
            tp_block_size: geometry.block_size,
            tp_block_nr: geometry.block_count,
            tp_frame_size: frame_size,
            tp_frame_nr: geometry.block_size / frame_size * geometry.block_count,
            tp_retire_blk_tov: geometry.retire_ms,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setopt(raw, libc::SOL_PACKET, PACKET_RX_RING, &req)
            .map_err(|e| io::Error::new(e.kind(), format!("PACKET_RX_RING (TPACKET_V3): {e}")))?;
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
            geometry,
            next_block: 0,
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

    fn block_ptr(&self, i: u32) -> *mut u8 {
        // SAFETY (for callers): i < block_count, so the offset stays inside the mapping.
        self.map
            .wrapping_add(i as usize * self.geometry.block_size as usize)
    }

    fn block_status(&self, i: u32) -> &AtomicU32 {
        // SAFETY: the status word is a 4-byte aligned u32 inside the mapping (blocks are page
        // aligned), shared with the kernel, so it is accessed atomically.
        unsafe { AtomicU32::from_ptr(self.block_ptr(i).add(block::STATUS).cast()) }
    }

    /// Calls `f` for every frame of every block the kernel has handed over, up to `max_blocks`
    /// blocks, and returns each block to the kernel after its frames are read.
    pub fn drain(&mut self, max_blocks: u32, mut f: impl FnMut(RingFrame<'_>)) -> usize {
        let mut frames = 0;
        for _ in 0..max_blocks {
            let i = self.next_block;
            let status = self.block_status(i);
            if status.load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                break;
            }
            let base = self.block_ptr(i);
            let bs = self.geometry.block_size as usize;
            // SAFETY: the kernel handed this block to us (TP_STATUS_USER, acquire); until we
            // store TP_STATUS_KERNEL it does not write it, so reading it as a byte slice is sound.
            let blk = unsafe { std::slice::from_raw_parts(base, bs) };
            let rd = |at: usize| -> u32 {
                blk.get(at..at + 4)
                    .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(0)
            };
            let num = rd(block::NUM_PKTS);
            let mut off = rd(block::FIRST_PKT) as usize;
            for _ in 0..num {
                if off + 32 > bs {
                    break;
                }
                let next = rd(off + frame::NEXT_OFFSET) as usize;
                let snaplen = rd(off + frame::SNAPLEN) as usize;
                let wire_len = rd(off + frame::LEN);
                let fstatus = rd(off + frame::STATUS);
                let mac = blk
                    .get(off + frame::MAC..off + frame::MAC + 2)
                    .map(|b| u16::from_ne_bytes([b[0], b[1]]) as usize)
                    .unwrap_or(0);
                let start = off + mac;
                if let Some(data) = blk.get(start..start + snaplen) {
                    let vnet = if self.vnet {
                        start
                            .checked_sub(crate::wire::vnet::LEN)
                            .and_then(|v| blk.get(v..start))
                    } else {
                        None
                    };
                    f(RingFrame {
                        data,
                        wire_len,
                        status: fstatus,
                        vnet,
                    });
                    frames += 1;
                }
                if next == 0 {
                    break;
                }
                off += next;
            }
            status.store(TP_STATUS_KERNEL, Ordering::Release);
            self.next_block = (i + 1) % self.geometry.block_count;
        }
        frames
    }
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
