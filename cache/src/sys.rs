//! The kernel interfaces swcache needs beyond tokio: the TUN device, raw IP sockets and an
//! interface's up flag.
//!
//! This is the only module of swcache with `unsafe`. Every block calls one libc function with
//! arguments built right next to it; the SAFETY comments say why each call is sound.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An `ifreq` naming `ifname`, everything else zero.
fn ifreq(ifname: &str) -> io::Result<libc::ifreq> {
    let cname = CString::new(ifname)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name contains NUL"))?;
    let bytes = cname.as_bytes_with_nul();
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
    Ok(req)
}

/// Opens (creating if needed) the TUN device `name` (IFF_TUN | IFF_NO_PI: every read and write
/// is one bare IP packet), non-blocking; returns its descriptor and the name the kernel gave it.
pub fn open_tun(name: &str) -> io::Result<(OwnedFd, String)> {
    open_tun_device(name, libc::IFF_TUN)
}

/// Opens (creating if needed) the TAP device `name` (IFF_TAP | IFF_NO_PI: every write is one
/// Ethernet frame), non-blocking; returns its descriptor and the name the kernel gave it.
pub fn open_tap(name: &str) -> io::Result<(OwnedFd, String)> {
    open_tun_device(name, libc::IFF_TAP)
}

fn open_tun_device(name: &str, kind: libc::c_int) -> io::Result<(OwnedFd, String)> {
    let path = CString::new("/dev/net/tun")
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // SAFETY: path is a live NUL-terminated string; a non-negative return is a descriptor we own.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(err.kind(), format!("/dev/net/tun: {err}")));
    }
    // SAFETY: fd was just returned by open(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_flags = (kind | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one ifreq, which is live for the duration of the call.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETIFF as _,
            &mut req as *mut libc::ifreq,
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return Err(io::Error::new(
            err.kind(),
            format!("TUNSETIFF {name}: {err}"),
        ));
    }
    let actual: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok((fd, String::from_utf8_lossy(&actual).into_owned()))
}

/// Sets IFF_UP on `ifname`, keeping its other flags.
pub fn set_link_up(ifname: &str) -> io::Result<()> {
    // SAFETY: socket(2) takes no pointers; a non-negative return is a descriptor we own.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let ioctl = |request: libc::c_ulong, req: &mut libc::ifreq| {
        // SAFETY: req is a valid ifreq that outlives the call; SIOCGIFFLAGS and SIOCSIFFLAGS
        // read or write one ifreq and nothing beyond it.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request as _, req as *mut libc::ifreq) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            return Err(io::Error::new(err.kind(), format!("{ifname}: {err}")));
        }
        Ok(())
    };
    let mut req = ifreq(ifname)?;
    ioctl(libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the ifru_flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ioctl(libc::SIOCSIFFLAGS, &mut req)
}

/// Opens a non-blocking `AF_INET` raw socket for IP protocol `protocol` (47 for GRE): every
/// datagram of that protocol addressed to this host is read whole, outer IPv4 header included.
pub fn open_raw_ip_socket(protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a non-negative return is a fresh descriptor we own.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            protocol,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Registers an owned descriptor (as a `File`) with the current tokio reactor, read interest only.
/// Must be called inside a tokio runtime.
pub fn async_file(file: std::fs::File) -> io::Result<tokio::io::unix::AsyncFd<std::fs::File>> {
    // SAFETY: the File owns its descriptor, which stays open and unchanged until the AsyncFd
    // (which takes the File by value) is dropped or gives it back; File::as_raw_fd always
    // returns that same descriptor.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(file, tokio::io::Interest::READABLE) }
        .map_err(|e| io::Error::other(e.to_string()))
}

/// Sends one whole IPv4 datagram (header included) on a raw socket opened for `IPPROTO_RAW`,
/// which implies `IP_HDRINCL`: the kernel routes it toward `dst` and sends the bytes as given
/// (it fills in the header checksum, and the identification when it is 0).
pub fn send_raw_ipv4(fd: RawFd, packet: &[u8], dst: std::net::Ipv4Addr) -> io::Result<usize> {
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `packet` is a live slice and its length is passed with it; `addr` is a fully
    // initialised sockaddr_in on our stack and its exact size is passed; sendto(2) only reads
    // both during the call and keeps no pointer.
    let n = unsafe {
        libc::sendto(
            fd,
            packet.as_ptr().cast(),
            packet.len(),
            0,
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
