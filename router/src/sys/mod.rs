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

/// SOL_SOCKET option: the supplementary groups of a Unix socket's peer, as the kernel recorded
/// them at connect (Linux ≥ 4.13). libc does not export it; 59 is the asm-generic value that
/// these architectures use.
#[cfg(any(
    target_arch = "x86",
    target_arch = "x86_64",
    target_arch = "arm",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "loongarch64"
))]
const SO_PEERGROUPS: libc::c_int = 59;

/// The supplementary group ids of the process at the other end of a connected Unix socket,
/// taken when it connected (the companion of SO_PEERCRED, which gives only the primary group).
#[cfg(any(
    target_arch = "x86",
    target_arch = "x86_64",
    target_arch = "arm",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "loongarch64"
))]
pub fn peer_groups(fd: RawFd) -> io::Result<Vec<u32>> {
    /// NGROUPS_MAX on Linux: no process has more.
    const MAX_GROUPS: usize = 65536;
    let size = std::mem::size_of::<libc::gid_t>();
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut len = (groups.len() * size) as libc::socklen_t;
        // SAFETY: `groups` is a live buffer of exactly `len` bytes; the kernel writes at most
        // `len` bytes into it and the needed length into `len`, which is a live socklen_t.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc == 0 {
            groups.truncate(len as usize / size);
            return Ok(groups);
        }
        let err = io::Error::last_os_error();
        // ERANGE: the buffer was short and `len` now holds the size needed.
        let need = len as usize / size;
        if err.raw_os_error() != Some(libc::ERANGE) || need <= groups.len() || need > MAX_GROUPS {
            return Err(err);
        }
        groups.resize(need, 0);
    }
}

/// Where SO_PEERGROUPS has another number, only the primary group (SO_PEERCRED) is known.
#[cfg(not(any(
    target_arch = "x86",
    target_arch = "x86_64",
    target_arch = "arm",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "loongarch64"
)))]
pub fn peer_groups(_fd: RawFd) -> io::Result<Vec<u32>> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "SO_PEERGROUPS is not wired up for this architecture",
    ))
}

/// The id of group `name` in the host's group database (files, LDAP… as nsswitch.conf says),
/// or `None` when there is no such group.
pub fn group_id(name: &str) -> io::Result<Option<u32>> {
    /// A group entry with this many bytes of names and members is beyond any sane database.
    const MAX_BUF: usize = 1 << 20;
    let cname = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "group name contains NUL"))?;
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: `group` is a plain C struct for which all-zero bytes are a valid value.
        let mut group: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is to a live local (the name is NUL-terminated, the buffer's
        // length is passed with it); getgrnam_r fills `group` with pointers into `buf` only and
        // sets `found` to `&group` or null. We read `gr_gid` alone, before `buf` changes.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut group,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < MAX_BUF {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        return Ok((!found.is_null()).then_some(group.gr_gid));
    }
}

/// Runs `f` with the process umask set to `mask` and puts the previous umask back.
///
/// The umask is per process: files other threads create meanwhile get it too, so call this
/// while nothing else creates files (the router binds its sockets before starting workers).
pub fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
    /// Two overlapping calls would restore each other's masks in the wrong order.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: umask(2) takes no pointers and cannot fail.
    let old = unsafe { libc::umask(mask as libc::mode_t) };
    let out = f();
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn group_id_resolves_names() {
        assert_eq!(group_id("root").unwrap(), Some(0));
        assert_eq!(group_id("no-such-group-swrouter").unwrap(), None);
        assert!(group_id("a\0b").is_err());
    }

    #[test]
    fn peer_groups_are_our_own_supplementary_groups() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut got = peer_groups(a.as_raw_fd()).unwrap();
        got.sort_unstable();
        // The same process is at both ends: its groups as /proc lists them.
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
        let mut want: Vec<u32> = line["Groups:".len()..]
            .split_whitespace()
            .map(|g| g.parse().unwrap())
            .collect();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn umask_applies_inside_and_is_restored() {
        use std::os::unix::fs::PermissionsExt;
        let umask = || {
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            status
                .lines()
                .find(|l| l.starts_with("Umask:"))
                .unwrap()
                .to_string()
        };
        let before = umask();
        let path = std::env::temp_dir().join(format!("sys-umask-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        with_umask(0o177, || std::fs::write(&path, b"x")).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        let _ = std::fs::remove_file(&path);
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(umask(), before);
    }
}
