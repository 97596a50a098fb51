//! The only `unsafe` in netlab: three thin libc calls.
#![allow(unsafe_code)]

/// Effective user id of this process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid() takes no arguments, cannot fail and touches no memory we own.
    unsafe { libc::geteuid() }
}

/// Sends `sig` to every process in process group `pgid` (`kill(-pgid, sig)`).
/// Returns false if the group no longer exists (ESRCH) or on any other error.
pub(crate) fn kill_group(pgid: u32, sig: i32) -> bool {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return false;
    };
    if pgid <= 1 {
        // Never signal "every process" (-1) or our own group (0) by accident.
        return false;
    }
    // SAFETY: kill() only takes integers; a negative pid addresses the process group.
    // The caller guarantees the group leader has not been reaped yet, so the
    // group id cannot have been recycled by an unrelated process group.
    unsafe { libc::kill(-pgid, sig) == 0 }
}

/// Moves the calling thread into the network namespace open as `fd` (`setns(fd, CLONE_NEWNET)`).
pub(crate) fn setns_net(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: setns() only takes integers; the fd is borrowed, so it stays open for the call.
    // It changes the namespace of this thread alone (sockets it creates from now on).
    let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// SIGTERM.
pub(crate) const SIGTERM: i32 = libc::SIGTERM;
/// SIGKILL.
pub(crate) const SIGKILL: i32 = libc::SIGKILL;
