//! The management socket: who may connect, and serving each client in its own task.
//!
//! A client sends one request line and gets one reply line. The control loop owns the router's
//! state, so a client's task only reads the line (bounded in size and time), hands it to the
//! control loop over a bounded channel with a oneshot for the answer, and writes the answer back
//! (bounded in time). A client that connects and says nothing, or never reads its reply, costs
//! its own task a timeout; the control loop's WCCP timers, probe rounds and health ticks never
//! wait on it.
//!
//! Access is checked twice. The socket file is born mode 0600 (0660 and the group with
//! `management-group`), so the kernel refuses other users at connect; and every accepted
//! connection's peer is checked by its kernel credentials (SO_PEERCRED for uid and primary group,
//! SO_PEERGROUPS for supplementary groups, both taken at connect), so a socket file whose mode
//! someone loosened still serves only root, the router's own user and the group.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

/// Longest request line in bytes, newline excluded (real requests are a few dozen bytes).
pub const MAX_REQUEST_BYTES: usize = 4096;
/// Clients served at the same time; more are refused with a "busy" reply.
pub const MAX_CLIENTS: usize = 16;
/// How long a client has, from connecting, to send its request line.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take its reply.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The limits a server runs with; [`Limits::default`] is the production set, tests shrink it.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest request line, newline excluded.
    pub max_line: usize,
    /// Clients served at once.
    pub max_clients: usize,
    /// Time to send the request line.
    pub read_timeout: Duration,
    /// Time to take the reply.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_line: MAX_REQUEST_BYTES,
            max_clients: MAX_CLIENTS,
            read_timeout: READ_TIMEOUT,
            write_timeout: WRITE_TIMEOUT,
        }
    }
}

/// A request line for the control loop and the way back to its client.
#[derive(Debug)]
pub struct Request {
    /// The line as the client sent it, newline removed.
    pub line: String,
    /// Where the control loop puts its one-line answer.
    pub reply: oneshot::Sender<String>,
}

/// The reply the server gives on its own (refusals, bad or late requests), one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Why the request was not served.
    pub error: String,
}

/// `ErrorReply` as the line that goes on the wire (without the newline).
fn error_line(msg: &str) -> String {
    // A struct of one String always serializes; the fallback keeps the contract anyway.
    serde_json::to_string(&ErrorReply {
        error: msg.to_string(),
    })
    .unwrap_or_else(|_| "{\"error\":\"request refused\"}".to_string())
}

/// The kernel's credentials of a connecting process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Effective user id.
    pub uid: u32,
    /// Effective (primary) group id.
    pub gid: u32,
    /// Supplementary group ids (empty when the kernel could not say).
    pub groups: Vec<u32>,
    /// Process id, for the log.
    pub pid: Option<i32>,
}

impl Peer {
    /// The credentials of the process at the other end of `stream`.
    pub fn of(stream: &UnixStream) -> std::io::Result<Peer> {
        let cred = stream.peer_cred()?;
        // Without SO_PEERGROUPS only the primary group counts; that refuses, never admits, more.
        let groups = crate::sys::peer_groups(stream.as_raw_fd()).unwrap_or_default();
        Ok(Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            groups,
            pid: cred.pid(),
        })
    }
}

/// Who may use the management socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access {
    /// The router's effective uid.
    pub own_uid: u32,
    /// The `management-group`, resolved.
    pub group: Option<u32>,
}

/// Why a peer was let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// uid 0.
    Root,
    /// The router's own user.
    SameUser,
    /// A member of the management group (primary or supplementary).
    Group,
}

impl Access {
    /// Root, the router's own user and members of the management group are let in; `None`
    /// refuses the peer.
    pub fn check(&self, peer: &Peer) -> Option<Admit> {
        if peer.uid == 0 {
            Some(Admit::Root)
        } else if peer.uid == self.own_uid {
            Some(Admit::SameUser)
        } else if self
            .group
            .is_some_and(|g| peer.gid == g || peer.groups.contains(&g))
        {
            Some(Admit::Group)
        } else {
            None
        }
    }

    /// The refusal a peer gets, naming who would be let in.
    fn refusal(&self, peer: &Peer) -> String {
        let group = match self.group {
            Some(g) => format!(" or members of group {g} (management-group)"),
            None => String::new(),
        };
        format!(
            "permission denied: uid {} may not use this management socket; it serves root, uid {}{group}",
            peer.uid, self.own_uid
        )
    }
}

/// What the server counts, for `swrouter status`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Clients being served now.
    active: AtomicU64,
    /// Requests answered by the control loop and written back.
    served: AtomicU64,
    /// Connections refused because `max_clients` were being served.
    refused_busy: AtomicU64,
    /// Connections refused by the peer check.
    refused_peer: AtomicU64,
    /// Request lines too long or not UTF-8.
    bad_requests: AtomicU64,
    /// Clients that sent no line in time or did not take their reply in time.
    timed_out: AtomicU64,
}

impl Counters {
    /// A snapshot for the status document.
    pub fn status(&self, limits: &Limits) -> crate::status::ManagementStatus {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        crate::status::ManagementStatus {
            clients: get(&self.active),
            max_clients: limits.max_clients as u64,
            served: get(&self.served),
            refused_busy: get(&self.refused_busy),
            refused_peer: get(&self.refused_peer),
            bad_requests: get(&self.bad_requests),
            timed_out: get(&self.timed_out),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// The management socket file; removed when this is dropped.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
}

impl SocketFile {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Creates the management socket at `path`: mode 0600, or 0660 with group `group`.
///
/// A socket left behind by a crashed router (nobody answers on it) is replaced; a live one, or
/// anything at `path` that is not a socket, is an error.
pub fn bind(
    path: &Path,
    group: Option<u32>,
) -> Result<(SocketFile, std::os::unix::net::UnixListener)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!(
                "management socket path {} exists and is not a socket; remove it or choose another management-socket",
                path.display()
            );
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "management socket {} is in use by another running swrouter",
                path.display()
            );
        }
        let _ = std::fs::remove_file(path);
    }
    // bind(2) creates the file with mode 0777 & !umask: under umask 0177 it is born 0600, so
    // no other user can connect in the moment before a chmod could run.
    let listener = crate::sys::with_umask(0o177, || std::os::unix::net::UnixListener::bind(path))
        .with_context(|| format!("binding management socket {}", path.display()))?;
    let file = SocketFile {
        path: path.to_path_buf(),
    };
    if let Some(gid) = group {
        // Group first: until the chmod the file stays 0600, never open to the wrong group.
        std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("giving {} to group {gid}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .with_context(|| format!("chmod 0660 {}", path.display()))?;
    }
    Ok((file, listener))
}

/// Lets one warning a second through; the rest go to debug, so a client looping on refused
/// connections cannot flood the log.
#[derive(Debug, Default)]
struct LogGate {
    last: Option<Instant>,
}

impl LogGate {
    fn open(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return false;
        }
        self.last = Some(now);
        true
    }
}

/// Accepts clients forever: checks each peer, refuses beyond `limits.max_clients`, and serves
/// the rest in their own tasks, which pass requests to the control loop through `requests`.
pub async fn serve(
    listener: UnixListener,
    access: Access,
    limits: Limits,
    requests: mpsc::Sender<Request>,
    counters: Arc<Counters>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_clients));
    let mut gate = LogGate::default();
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // EMFILE and friends persist: pause rather than spin on them.
                if gate.open(Instant::now()) {
                    tracing::warn!(error = %e, "management accept failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = match Peer::of(&stream) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(error = %e, "management client without credentials");
                continue;
            }
        };
        if access.check(&peer).is_none() {
            bump(&counters.refused_peer);
            if gate.open(Instant::now()) {
                tracing::warn!(uid = peer.uid, gid = peer.gid, pid = ?peer.pid, "management client refused: not root, not our user, not in the management group");
            } else {
                tracing::debug!(uid = peer.uid, gid = peer.gid, pid = ?peer.pid, "management client refused");
            }
            refuse(stream, &access.refusal(&peer));
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            bump(&counters.refused_busy);
            if gate.open(Instant::now()) {
                tracing::warn!(uid = peer.uid, pid = ?peer.pid, max = limits.max_clients, "management client refused: too many clients");
            }
            refuse(
                stream,
                &format!(
                    "busy: {} management clients are being served; try again",
                    limits.max_clients
                ),
            );
            continue;
        };
        let active = Active::new(counters.clone(), slot);
        tokio::spawn(client(stream, limits, requests.clone(), active));
    }
}

/// A client slot in use: counted in `active` until dropped.
struct Active {
    counters: Arc<Counters>,
    _slot: OwnedSemaphorePermit,
}

impl Active {
    fn new(counters: Arc<Counters>, slot: OwnedSemaphorePermit) -> Active {
        counters.active.fetch_add(1, Ordering::Relaxed);
        Active {
            counters,
            _slot: slot,
        }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.counters.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Answers a refused connection with one error line, without waiting, and closes it.
fn refuse(stream: UnixStream, msg: &str) {
    use std::io::{Read, Write};
    // As a plain socket (still non-blocking) the write is tried at once; tokio's `try_write`
    // would give up on a stream the reactor has not yet seen writable.
    let Ok(mut s) = stream.into_std() else {
        return;
    };
    // A fresh connection's send buffer is empty, so the short line goes out whole.
    let _ = s.write_all(format!("{}\n", error_line(msg)).as_bytes());
    // Take in whatever the client already sent: closing with unread data would make its next
    // read fail with ECONNRESET rather than see the end of our reply.
    let mut sink = [0u8; 1024];
    let _ = s.read(&mut sink);
}

/// Serves one client: its request line, the control loop's answer, the reply.
async fn client(
    mut stream: UnixStream,
    limits: Limits,
    requests: mpsc::Sender<Request>,
    active: Active,
) {
    // Dropped on every way out, which frees the client's slot.
    let counters = &active.counters;
    let (rd, mut wr) = stream.split();
    let mut rd = BufReader::new(rd);
    let read = tokio::time::timeout(
        limits.read_timeout,
        read_request_line(&mut rd, limits.max_line),
    )
    .await;
    let reply = match read {
        Ok(Ok(line)) => {
            let (tx, rx) = oneshot::channel();
            // Both fail only when the control loop is gone (the router is stopping).
            if requests.send(Request { line, reply: tx }).await.is_err() {
                return;
            }
            let Ok(reply) = rx.await else {
                return;
            };
            reply
        }
        Ok(Err(LineError::Closed)) => return,
        Ok(Err(LineError::Io(e))) => {
            tracing::debug!(error = %e, "management client read failed");
            return;
        }
        Ok(Err(e)) => {
            bump(&counters.bad_requests);
            tracing::debug!(error = %e, "management request rejected");
            write_reply(&mut wr, &error_line(&e.to_string()), &limits, counters).await;
            return;
        }
        Err(_) => {
            bump(&counters.timed_out);
            tracing::debug!("management client sent no request in time");
            let msg = format!(
                "no request line within {} s; closing",
                limits.read_timeout.as_secs_f32()
            );
            write_reply(&mut wr, &error_line(&msg), &limits, counters).await;
            return;
        }
    };
    if write_reply(&mut wr, &reply, &limits, counters).await {
        bump(&counters.served);
    }
}

/// Writes `line` and a newline and closes our side, within the write timeout; true when the
/// client got all of it.
async fn write_reply<W: AsyncWriteExt + Unpin>(
    wr: &mut W,
    line: &str,
    limits: &Limits,
    counters: &Counters,
) -> bool {
    let write = async {
        wr.write_all(line.as_bytes()).await?;
        wr.write_all(b"\n").await?;
        wr.shutdown().await
    };
    match tokio::time::timeout(limits.write_timeout, write).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "management reply failed");
            false
        }
        Err(_) => {
            bump(&counters.timed_out);
            tracing::debug!("management client did not take its reply in time");
            false
        }
    }
}

/// Why no request line came.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// More than the limit arrived without a newline.
    #[error("request line longer than {limit} bytes")]
    TooLong {
        /// The limit, newline excluded.
        limit: usize,
    },
    /// The line is not UTF-8.
    #[error("request line is not UTF-8")]
    NotUtf8,
    /// The client closed before sending anything.
    #[error("connection closed before a request")]
    Closed,
    /// Reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads one line of at most `limit` bytes (newline excluded) and never buffers more than
/// `limit + 1` bytes. A last line without a newline counts when the client then closes.
pub async fn read_request_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> Result<String, LineError> {
    let mut buf = Vec::with_capacity(limit.min(256));
    (&mut *r)
        .take(limit as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > limit {
        return Err(LineError::TooLong { limit });
    } else if buf.is_empty() {
        return Err(LineError::Closed);
    }
    String::from_utf8(buf).map_err(|_| LineError::NotUtf8)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::{BufRead, Write};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn line(input: &[u8], limit: usize) -> Result<String, LineError> {
        rt().block_on(async {
            let mut r = input;
            read_request_line(&mut r, limit).await
        })
    }

    #[test]
    fn line_reader_takes_one_line_up_to_the_limit() {
        assert_eq!(line(b"status\n", 8).unwrap(), "status");
        assert_eq!(line(b"status\nreload\n", 8).unwrap(), "status");
        assert_eq!(
            line(b"12345678\n", 8).unwrap(),
            "12345678",
            "exactly the limit"
        );
        assert_eq!(
            line(b"status", 8).unwrap(),
            "status",
            "closed after the line"
        );
        assert_eq!(line(b"\n", 8).unwrap(), "");
    }

    #[test]
    fn line_reader_refuses_long_empty_and_binary_input() {
        assert!(matches!(
            line(b"123456789\n", 8),
            Err(LineError::TooLong { limit: 8 })
        ));
        assert!(matches!(
            line(&[b'a'; 100_000], 4096),
            Err(LineError::TooLong { limit: 4096 })
        ));
        assert!(matches!(line(b"", 8), Err(LineError::Closed)));
        assert!(matches!(line(b"\xff\xfe\n", 8), Err(LineError::NotUtf8)));
    }

    #[test]
    fn line_reader_buffers_no_more_than_the_limit() {
        rt().block_on(async {
            let (mut tx, rx) = tokio::io::duplex(64 * 1024);
            tx.write_all(&[b'x'; 50_000]).await.unwrap();
            let mut rx = BufReader::with_capacity(16, rx);
            let e = read_request_line(&mut rx, 100).await.unwrap_err();
            assert!(matches!(e, LineError::TooLong { limit: 100 }));
            // The rest is still unread in the pipe: the reader stopped at limit + 1 bytes.
            let mut rest = Vec::new();
            drop(tx);
            rx.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest.len(), 50_000 - 101);
        });
    }

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid,
            groups: groups.to_vec(),
            pid: Some(4242),
        }
    }

    #[test]
    fn peer_policy_without_a_group() {
        let a = Access {
            own_uid: 0,
            group: None,
        };
        assert_eq!(a.check(&peer(0, 0, &[])), Some(Admit::Root));
        assert_eq!(a.check(&peer(1000, 1000, &[0, 4, 27])), None);
        assert_eq!(a.check(&peer(65534, 65534, &[])), None);
        let ours = Access {
            own_uid: 998,
            group: None,
        };
        assert_eq!(ours.check(&peer(998, 998, &[])), Some(Admit::SameUser));
        assert_eq!(ours.check(&peer(0, 0, &[])), Some(Admit::Root));
        assert_eq!(
            ours.check(&peer(999, 998, &[])),
            None,
            "same group is not enough"
        );
    }

    #[test]
    fn peer_policy_with_a_group() {
        let a = Access {
            own_uid: 0,
            group: Some(120),
        };
        assert_eq!(
            a.check(&peer(1000, 120, &[])),
            Some(Admit::Group),
            "primary"
        );
        assert_eq!(
            a.check(&peer(1000, 1000, &[27, 120])),
            Some(Admit::Group),
            "supplementary"
        );
        assert_eq!(a.check(&peer(1000, 1000, &[27, 121])), None);
        assert_eq!(a.check(&peer(0, 0, &[])), Some(Admit::Root));
        let msg = a.refusal(&peer(1000, 1000, &[]));
        assert!(
            msg.contains("uid 1000") && msg.contains("group 120"),
            "{msg}"
        );
    }

    #[test]
    fn log_gate_lets_one_a_second_through() {
        let mut g = LogGate::default();
        let t = Instant::now();
        assert!(g.open(t));
        assert!(!g.open(t + Duration::from_millis(500)));
        assert!(g.open(t + Duration::from_millis(1000)));
    }

    /// A temp dir for one test's socket, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("mgmt-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            Dir(d)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn socket_is_born_private_and_replaces_only_dead_sockets() {
        let dir = Dir::new("bind");
        let path = dir.0.join("sub").join("m.sock");
        let (file, listener) = bind(&path, None).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        // A second router on the same path is refused while the first listens.
        let e = bind(&path, None).unwrap_err();
        assert!(e.to_string().contains("in use"), "{e}");
        // A crashed router leaves the file; the next one replaces it.
        drop(listener);
        std::mem::forget(file);
        let (file, _listener) = bind(&path, None).unwrap();
        drop(file);
        assert!(!path.exists(), "removed with its SocketFile");
        // Something that is not a socket is never removed.
        std::fs::write(&path, b"precious").unwrap();
        let e = bind(&path, None).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }

    #[test]
    fn socket_with_a_group_is_0660_and_that_group() {
        use std::os::unix::fs::MetadataExt;
        let dir = Dir::new("group");
        let path = dir.0.join("m.sock");
        // Our own group, as our new files get it: any user may give a file to it.
        let own_gid = {
            std::fs::create_dir_all(&dir.0).unwrap();
            let probe = dir.0.join("probe");
            std::fs::write(&probe, b"").unwrap();
            std::fs::metadata(&probe).unwrap().gid()
        };
        let (_file, _listener) = bind(&path, Some(own_gid)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o660);
        assert_eq!(meta.gid(), own_gid);
    }

    /// A server on a temp socket whose "control loop" answers every line with `ok LINE`.
    struct Server {
        path: PathBuf,
        counters: Arc<Counters>,
        limits: Limits,
        _dir: Dir,
        _thread: std::thread::JoinHandle<()>,
    }

    impl Server {
        fn start(tag: &str, limits: Limits) -> Server {
            let dir = Dir::new(tag);
            let path = dir.0.join("m.sock");
            let (file, listener) = bind(&path, None).unwrap();
            listener.set_nonblocking(true).unwrap();
            let counters = Arc::new(Counters::default());
            let c = counters.clone();
            let thread = std::thread::spawn(move || {
                let _file = file;
                rt().block_on(async move {
                    let listener = UnixListener::from_std(listener).unwrap();
                    let (tx, mut rx) = mpsc::channel::<Request>(limits.max_clients);
                    let access = Access {
                        own_uid: crate::sys::euid(),
                        group: None,
                    };
                    tokio::spawn(serve(listener, access, limits, tx, c));
                    while let Some(r) = rx.recv().await {
                        let _ = r.reply.send(format!("ok {}", r.line));
                    }
                });
            });
            let start = Instant::now();
            while std::os::unix::net::UnixStream::connect(&path).is_err() {
                assert!(start.elapsed() < Duration::from_secs(5), "server up");
                std::thread::sleep(Duration::from_millis(10));
            }
            Server {
                path,
                counters,
                limits,
                _dir: dir,
                _thread: thread,
            }
        }

        fn ask(&self, req: &[u8]) -> String {
            let mut s = std::os::unix::net::UnixStream::connect(&self.path).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(req);
            let mut line = String::new();
            let _ = std::io::BufReader::new(s).read_line(&mut line);
            line
        }

        fn wait_active(&self, n: u64) {
            let start = Instant::now();
            while self.counters.status(&self.limits).clients != n {
                assert!(start.elapsed() < Duration::from_secs(5), "{n} clients");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    #[test]
    fn idle_clients_do_not_hold_up_others() {
        let limits = Limits {
            read_timeout: Duration::from_millis(800),
            ..Limits::default()
        };
        let srv = Server::start("idle", limits);
        let idle: Vec<_> = (0..3)
            .map(|_| std::os::unix::net::UnixStream::connect(&srv.path).unwrap())
            .collect();
        srv.wait_active(3);
        let t = Instant::now();
        assert_eq!(srv.ask(b"status\n"), "ok status\n");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        // The idle ones are told why and closed after the read timeout.
        for s in idle {
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut line = String::new();
            std::io::BufReader::new(s).read_line(&mut line).unwrap();
            let e: ErrorReply = serde_json::from_str(&line).unwrap();
            assert!(e.error.contains("no request line within 0.8 s"), "{line}");
        }
        // Each task frees its slot just after the client has read the last byte.
        srv.wait_active(0);
        let st = srv.counters.status(&srv.limits);
        assert_eq!((st.timed_out, st.served), (3, 1));
    }

    #[test]
    fn long_lines_get_an_error_and_busy_servers_say_so() {
        let limits = Limits {
            max_line: 16,
            max_clients: 2,
            read_timeout: Duration::from_secs(3),
            ..Limits::default()
        };
        let srv = Server::start("busy", limits);
        let reply = srv.ask(&[b'x'; 100]);
        let e: ErrorReply = serde_json::from_str(&reply).unwrap();
        assert_eq!(e.error, "request line longer than 16 bytes");
        let _held: Vec<_> = (0..2)
            .map(|_| std::os::unix::net::UnixStream::connect(&srv.path).unwrap())
            .collect();
        srv.wait_active(2);
        let reply = srv.ask(b"status\n");
        let e: ErrorReply = serde_json::from_str(&reply).unwrap();
        assert!(e.error.starts_with("busy: 2 management clients"), "{reply}");
        let st = srv.counters.status(&srv.limits);
        assert_eq!((st.bad_requests, st.refused_busy), (1, 1));
    }
}
