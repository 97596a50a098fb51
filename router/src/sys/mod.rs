//! The kernel interfaces swrouter needs beyond pnet: packet-socket options, interface ioctls, poll.
//!
//! This is the only module of the router with `unsafe`. Every block calls one libc function with
//! arguments built right next to it; the SAFETY comments say why each call is sound.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// SOL_PACKET option: do not receive frames that this host transmits (Linux ≥ 4.20).
pub(crate) const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// SOL_PACKET option: prefix every frame with a `virtio_net_hdr` carrying checksum/GSO state.
pub(crate) const PACKET_VNET_HDR: libc::c_int = 15;
/// Receive buffer asked for each packet socket; bursts wait here instead of being dropped.
const RCVBUF_BYTES: libc::c_int = 8 << 20;

/// Opens an `AF_PACKET` raw socket that receives nothing until it is bound to an interface.
///
/// Protocol 0 on creation means the socket sees no traffic at all before pnet binds it with
/// `ETH_P_ALL` to one interface, so no frame of another interface ever slips in.
pub fn open_packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a non-negative return is a fresh descriptor we own.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    set_int_opt(fd.as_raw_fd(), libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, 1).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("PACKET_IGNORE_OUTGOING (needs Linux 4.20 or later): {e}"),
        )
    })?;
    set_int_opt(fd.as_raw_fd(), libc::SOL_PACKET, PACKET_VNET_HDR, 1)
        .map_err(|e| io::Error::new(e.kind(), format!("PACKET_VNET_HDR: {e}")))?;
    // SO_RCVBUFFORCE needs CAP_NET_ADMIN, which we have when we can open packet sockets at all;
    // fall back to the capped SO_RCVBUF if a sandbox says otherwise.
    if set_int_opt(
        fd.as_raw_fd(),
        libc::SOL_SOCKET,
        libc::SO_RCVBUFFORCE,
        RCVBUF_BYTES,
    )
    .is_err()
    {
        set_int_opt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            RCVBUF_BYTES,
        )?;
    }
    Ok(fd)
}

/// Sets one integer socket option.
fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value points at a live c_int whose size we pass alongside.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until one of `fds` is readable or `timeout_ms` passes; fills `ready` with one flag per fd.
pub fn poll_readable(
    fds: &[RawFd],
    timeout_ms: i32,
    pollfds: &mut Vec<libc::pollfd>,
) -> io::Result<usize> {
    pollfds.clear();
    pollfds.extend(fds.iter().map(|&fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }));
    // SAFETY: pollfds is a live, correctly sized array of pollfd for the duration of the call.
    let rc = unsafe {
        libc::poll(
            pollfds.as_mut_ptr(),
            pollfds.len() as libc::nfds_t,
            timeout_ms,
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(err);
    }
    Ok(rc as usize)
}

/// Frames the kernel dropped on a packet socket because its buffer or ring was full, since the
/// last call (PACKET_STATISTICS resets on read). Works for plain and ring sockets: the first
/// two counters are laid out alike.
pub fn take_socket_drops(fd: RawFd) -> u64 {
    let mut st = [0u32; 3];
    let mut len = std::mem::size_of_val(&st) as libc::socklen_t;
    // SAFETY: st and len are live; the kernel writes at most `len` bytes.
    let rc = unsafe { libc::getsockopt(fd, libc::SOL_PACKET, 6, st.as_mut_ptr().cast(), &mut len) };
    if rc < 0 {
        return 0;
    }
    st[1] as u64
}

/// The effective user id (0 for root).
pub fn euid() -> u32 {
    // SAFETY: geteuid(2) has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// A datagram socket used only as a handle for interface ioctls.
struct IoctlSocket(OwnedFd);

impl IoctlSocket {
    fn open() -> io::Result<Self> {
        // SAFETY: socket(2) takes no pointers; a non-negative return is a descriptor we own.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket(2).
        Ok(Self(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Runs one `SIOC*IF*` ioctl on a request naming `ifname`; returns the filled request.
    fn ioctl(
        &self,
        request: libc::c_ulong,
        ifname: &str,
        fill: impl FnOnce(&mut libc::ifreq),
    ) -> io::Result<libc::ifreq> {
        let name = CString::new(ifname).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "interface name contains NUL")
        })?;
        let bytes = name.as_bytes_with_nul();
        if bytes.len() > libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {ifname:?} is longer than 15 bytes"),
            ));
        }
        // SAFETY: ifreq is a plain C struct/union for which all-zero bytes are a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
            *dst = src as libc::c_char;
        }
        fill(&mut req);
        // SAFETY: req is a valid ifreq that outlives the call; the request codes used here all
        // read or write an ifreq and nothing beyond it.
        let rc = unsafe {
            libc::ioctl(
                self.0.as_raw_fd(),
                request as _,
                &mut req as *mut libc::ifreq,
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(err.kind(), format!("{ifname}: {err}")));
        }
        Ok(req)
    }
}

/// What the kernel says about one network interface.
#[derive(Clone, Debug)]
pub struct LinkInfo {
    /// Kernel interface index.
    pub ifindex: u32,
    /// Hardware address.
    pub mac: [u8; 6],
    /// Interface flags (IFF_*).
    pub flags: u32,
    /// Device MTU.
    pub mtu: u32,
}

/// Reads index, MAC, flags and MTU of `ifname`.
pub fn link_info(ifname: &str) -> io::Result<LinkInfo> {
    let sock = IoctlSocket::open()?;
    let req = sock.ioctl(libc::SIOCGIFINDEX, ifname, |_| {})?;
    // SAFETY: SIOCGIFINDEX filled the ifru_ifindex member of the union.
    let ifindex = unsafe { req.ifr_ifru.ifru_ifindex } as u32;
    let req = sock.ioctl(libc::SIOCGIFHWADDR, ifname, |_| {})?;
    // SAFETY: SIOCGIFHWADDR filled the ifru_hwaddr member.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    let mut mac = [0u8; 6];
    for (dst, &src) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *dst = src as u8;
    }
    let req = sock.ioctl(libc::SIOCGIFFLAGS, ifname, |_| {})?;
    // SAFETY: SIOCGIFFLAGS filled the ifru_flags member.
    let flags = unsafe { req.ifr_ifru.ifru_flags } as u16 as u32;
    let req = sock.ioctl(libc::SIOCGIFMTU, ifname, |_| {})?;
    // SAFETY: SIOCGIFMTU filled the ifru_mtu member.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu } as u32;
    Ok(LinkInfo {
        ifindex,
        mac,
        flags,
        mtu,
    })
}

/// Sets the interface flags (IFF_UP, IFF_NOARP, …) to exactly `flags`.
pub fn set_link_flags(ifname: &str, flags: u32) -> io::Result<()> {
    let sock = IoctlSocket::open()?;
    sock.ioctl(libc::SIOCSIFFLAGS, ifname, |req| {
        req.ifr_ifru.ifru_flags = flags as u16 as libc::c_short;
    })?;
    Ok(())
}

/// Sets the device MTU.
pub fn set_link_mtu(ifname: &str, mtu: u32) -> io::Result<()> {
    let sock = IoctlSocket::open()?;
    sock.ioctl(libc::SIOCSIFMTU, ifname, |req| {
        req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
    })?;
    Ok(())
}

pub mod ring;

/// A Linux eventfd: lets the control plane wake a worker blocked in `poll`.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A non-blocking eventfd with counter 0.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: eventfd(2) takes no pointers; a non-negative return is a descriptor we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by eventfd(2).
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Makes the fd readable (wakes the poller).
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes the 8 bytes of a live u64, as eventfd requires. A full counter
        // (EAGAIN) already means "readable", so the result needs no handling.
        let _ = unsafe { libc::write(self.0.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter (after the poller has woken up).
    pub fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN (nothing pending) is fine.
        let _ = unsafe { libc::read(self.0.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }

    /// The descriptor to poll.
    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
