//! systemd's readiness protocol (`sd_notify(3)`): one datagram per state change to the socket
//! named by `$NOTIFY_SOCKET`, so a `Type=notify` unit counts as started only once the
//! interfaces are ours and the workers run, and `systemctl reload` waits for the reload.
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd, or not as `Type=notify`) every call does
//! nothing. Only std is used: a datagram to a path or to an abstract name (`@…`).

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where state changes go; a no-op when the service manager asked for none.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    addr: Option<SocketAddr>,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` asks for; a value that is not a usable socket address is
    /// logged and ignored (systemd then reports the start as timed out, which names the unit).
    pub fn from_env() -> Notifier {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Notifier::default(),
            Some(v) => Notifier::new(&v.to_string_lossy()).unwrap_or_else(|e| {
                tracing::warn!(notify_socket = ?v, error = %e, "NOTIFY_SOCKET is unusable; systemd will not hear that swrouter is ready");
                Notifier::default()
            }),
        }
    }

    /// A notifier sending to `socket`: an absolute path, or `@name` for Linux's abstract
    /// namespace (the two forms systemd hands out).
    pub fn new(socket: &str) -> io::Result<Notifier> {
        let addr = if let Some(name) = socket.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        } else if socket.starts_with('/') {
            SocketAddr::from_pathname(socket)?
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "expected an absolute path or an @abstract name",
            ));
        };
        Ok(Notifier { addr: Some(addr) })
    }

    /// True when state changes are sent somewhere.
    pub fn is_enabled(&self) -> bool {
        self.addr.is_some()
    }

    /// Sends `state` (newline-separated `KEY=value` assignments) as one datagram.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let Some(addr) = &self.addr else {
            return Ok(());
        };
        // A fresh unbound socket per message: messages are rare (start, reload, stop) and the
        // notifier stays a plain value that any thread can hold.
        let sock = UnixDatagram::unbound()?;
        sock.send_to_addr(state.as_bytes(), addr)?;
        Ok(())
    }

    /// Sends `state`, logging a failure: a lost notification must not stop the router.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.send(state) {
            tracing::warn!(error = %e, state, "could not notify systemd");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("swrouter-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str().unwrap()).unwrap();
        assert!(n.is_enabled());
        n.send("READY=1\nSTATUS=routing").unwrap();
        assert_eq!(recv(&sock), "READY=1\nSTATUS=routing");
        n.notify("STOPPING=1");
        assert_eq!(recv(&sock), "STOPPING=1");
        drop(sock);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("swrouter-notify-test-{}", std::process::id());
        let sock =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let n = Notifier::new(&format!("@{name}")).unwrap();
        n.send("RELOADING=1").unwrap();
        assert_eq!(recv(&sock), "RELOADING=1");
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_bad_values_are_refused() {
        let n = Notifier::default();
        assert!(!n.is_enabled());
        n.send("READY=1").unwrap();
        assert!(Notifier::new("relative/notify.sock").is_err());
        assert!(Notifier::new("").is_err());
        // A path socket nobody listens on is an error for send, only a warning for notify.
        let gone = Notifier::new("/nonexistent/swrouter/notify.sock").unwrap();
        assert!(gone.send("READY=1").is_err());
        gone.notify("READY=1");
    }
}
