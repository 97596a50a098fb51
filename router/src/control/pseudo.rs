//! The pseudo-standby (issue 15, seed 004 Figs. 5–6D): a second swrouter process on the same
//! node, kept warm by local sync from the node's process over a Unix stream socket
//! (`[ha.sync] local-socket`), ready to replace it when it dies.
//!
//! - **Role by discovery.** A process that finds a live listener on `local-socket` at start is
//!   the pseudo-standby ([`run_standby`]): it takes over nothing (no interfaces, workers, VRRP
//!   or UDP sync), holds what the node's process sends in its endpoint's replica, and answers
//!   `status` and `ha status` on the management socket's path with [`STANDBY_SUFFIX`] appended.
//!   Otherwise it is the node's process and listens on `local-socket` ([`LocalLink`]).
//! - **Ids.** Both processes share `node-id`; the pseudo-standby's endpoint id is `node-id`
//!   with the top bit set ([`conf::PSEUDO_STANDBY_ID_BIT`]), the node's process keeps `node-id`.
//! - **What it carries.** Every record the node publishes (its own state, the same tables as
//!   toward the peer node) and the peer node's state the node holds, under the table id with
//!   [`PEER_TABLE_BIT`] set, so that a promoted twin also has what a standby node needs.
//! - **Promotion.** When the stream ends or the heartbeat is lost and the node's management
//!   socket no longer answers (the process died), the pseudo-standby returns its replica
//!   ([`Outcome::Promote`]) and runs the normal start with it: the replica's records go to
//!   their owners through the peer-change path and the node's own records are republished as
//!   its own. A hung process (heartbeat lost, socket still answering) is reported, not
//!   replaced: two processes must never own the interfaces.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use hasync::{Deframer, Endpoint, Event, Record, RecordRef, Replica, TableId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::ha_status::{HaStatus, PseudoStandbyStatus, SyncStatus, SyncTableStatus};

/// Set in the table id of a record that carries the peer node's state (held by the node's
/// process) rather than the node's own.
pub const PEER_TABLE_BIT: u8 = 0x80;
/// Appended to the management socket's path for the pseudo-standby's own socket.
pub const STANDBY_SUFFIX: &str = ".standby";
/// Bytes of stream a pseudo-standby may be behind before the node drops its connection (it
/// reconnects and is resynced).
const MAX_PENDING_WRITES: usize = 1024;
/// How long the pseudo-standby waits before reconnecting to a node process that is alive but
/// closed the stream (e.g. it already serves another pseudo-standby).
const RECONNECT_DELAY: Duration = Duration::from_millis(500);
/// A write to the node's process that takes longer than this ends the stream.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The table id carrying the peer node's records of `t`.
pub fn peer_table(t: TableId) -> TableId {
    TableId(t.0 | PEER_TABLE_BIT)
}

/// Whether `t` carries the peer node's state, and the table it stands for.
pub fn split_table(t: TableId) -> (bool, TableId) {
    (t.0 & PEER_TABLE_BIT != 0, TableId(t.0 & !PEER_TABLE_BIT))
}

/// The pseudo-standby's endpoint id.
pub fn standby_id(node_id: u32) -> u32 {
    node_id | conf::PSEUDO_STANDBY_ID_BIT
}

/// The pseudo-standby's management socket: the configured path with [`STANDBY_SUFFIX`].
pub fn standby_socket(management: &Path) -> PathBuf {
    let mut s = management.as_os_str().to_os_string();
    s.push(STANDBY_SUFFIX);
    PathBuf::from(s)
}

/// A growing epoch per run (microseconds since the UNIX epoch).
fn epoch_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
        .max(1)
}

/// A process answers on `path`.
fn answers(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

/// Every entry of `replica` as upserts.
pub fn replica_records(replica: &Replica) -> Vec<Record> {
    let mut out = Vec::with_capacity(replica.total());
    for t in replica.tables().collect::<Vec<_>>() {
        for (k, v) in replica.iter(t) {
            out.push(Record::upsert(t, k, v));
        }
    }
    out
}

/// A bulk resync for the pseudo-standby: the node's own state, then the peer node's under
/// [`PEER_TABLE_BIT`].
fn snapshot(published: &Replica, peer: &Replica) -> Vec<Record> {
    let mut out = replica_records(published);
    for mut r in replica_records(peer) {
        r.table = peer_table(r.table);
        out.push(r);
    }
    out
}

/// Per-table counts and digests of a pseudo-standby's replica: the node's own tables as
/// `published`, the peer node's as `peer` (the same columns as the node's process shows).
pub fn split_digests(replica: &Replica) -> std::collections::BTreeMap<String, SyncTableStatus> {
    let mut tables = std::collections::BTreeMap::<String, SyncTableStatus>::new();
    for (id, d) in replica.digests().0 {
        let (peer, t) = split_table(id);
        let e = tables.entry(t.name().to_string()).or_default();
        if peer {
            // Entry hashes include the table id: digest them under the peer's own table so
            // the value equals the node process's `peer_digest`.
            let d = hasync::Digests::of(replica.iter(id).map(|(k, v)| (t, k, v)));
            let d = d.0.get(&t).copied().unwrap_or_default();
            e.peer = d.count;
            e.peer_digest = format!("{:016x}", d.digest);
        } else {
            e.published = d.count;
            e.published_digest = format!("{:016x}", d.digest);
        }
    }
    tables
}

/// What happens on the local socket, for the control loop.
#[derive(Debug)]
pub enum LocalEvent {
    /// A process connected.
    Connected(u64, tokio::net::UnixStream),
    /// Bytes from connection `id`.
    Data(u64, Vec<u8>),
    /// Connection `id` ended.
    Closed(u64),
}

/// One connected pseudo-standby.
struct Conn {
    id: u64,
    endpoint: Endpoint,
    deframer: Deframer,
    writes: mpsc::Sender<Vec<u8>>,
    reader: tokio::task::JoinHandle<()>,
    since: Instant,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // The writer ends with its channel; the reader is stopped here.
        self.reader.abort();
    }
}

/// Counters of the local socket.
#[derive(Debug, Default, Clone)]
struct LinkCounters {
    accepted: u64,
    refused_busy: u64,
    dropped_slow: u64,
    dropped_framing: u64,
}

/// The node process's side of the local sync: the listener and at most one pseudo-standby.
pub struct LocalLink {
    path: PathBuf,
    _file: super::mgmt::SocketFile,
    node_id: u32,
    key: Vec<u8>,
    events_tx: mpsc::Sender<LocalEvent>,
    events_rx: Option<mpsc::Receiver<LocalEvent>>,
    accept: tokio::task::JoinHandle<()>,
    conn: Option<Conn>,
    counters: LinkCounters,
    out: Vec<u8>,
}

impl Drop for LocalLink {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl std::fmt::Debug for LocalLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalLink")
            .field("path", &self.path)
            .field("connected", &self.conn.is_some())
            .finish_non_exhaustive()
    }
}

/// The bound local socket, made before the interfaces are taken over.
pub type LocalListener = (super::mgmt::SocketFile, std::os::unix::net::UnixListener);

/// Binds `local-socket` (mode 0600; a stale file is removed only when nothing answers).
pub fn bind_local(path: &Path) -> Result<LocalListener> {
    super::mgmt::bind(path, None)
        .with_context(|| format!("[ha.sync] local-socket {}", path.display()))
}

impl LocalLink {
    /// Serves the bound socket from the control loop's runtime.
    pub fn new(listener: LocalListener, node_id: u32, key: Vec<u8>) -> Result<LocalLink> {
        let (file, listener) = listener;
        let path = file.path().to_path_buf();
        listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let (events_tx, events_rx) = mpsc::channel(256);
        let accept = tokio::spawn(accept_loop(listener, events_tx.clone()));
        tracing::info!(socket = %path.display(), "HA local sync: listening for a pseudo-standby");
        Ok(LocalLink {
            path,
            _file: file,
            node_id,
            key,
            events_tx,
            events_rx: Some(events_rx),
            accept,
            conn: None,
            counters: LinkCounters::default(),
            out: Vec::new(),
        })
    }

    /// The events for the control loop (once).
    pub fn take_events(&mut self) -> Option<mpsc::Receiver<LocalEvent>> {
        self.events_rx.take()
    }

    /// A pseudo-standby is connected.
    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Handles one event of the local socket.
    pub fn on_event(&mut self, ev: LocalEvent, now: Instant) {
        match ev {
            LocalEvent::Connected(id, stream) => {
                if self.conn.is_some() {
                    self.counters.refused_busy += 1;
                    tracing::warn!(
                        "HA local sync: a second pseudo-standby connected; refused (one at a time)"
                    );
                    return;
                }
                let mut cfg = hasync::Config::new(
                    self.node_id,
                    standby_id(self.node_id),
                    epoch_now(),
                    self.key.clone(),
                );
                cfg.report_changes = false;
                let endpoint = match Endpoint::new(cfg, now) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::error!(error = %e, "HA local sync: endpoint refused");
                        return;
                    }
                };
                let (rd, wr) = stream.into_split();
                let (writes, wrx) = mpsc::channel(MAX_PENDING_WRITES);
                tokio::spawn(write_loop(wr, wrx));
                let reader = tokio::spawn(read_loop(id, rd, self.events_tx.clone()));
                self.counters.accepted += 1;
                tracing::info!("HA local sync: pseudo-standby connected");
                self.conn = Some(Conn {
                    id,
                    endpoint,
                    deframer: Deframer::new(usize::from(u16::MAX)),
                    writes,
                    reader,
                    since: now,
                });
            }
            LocalEvent::Data(id, bytes) => {
                let Some(c) = self.conn.as_mut().filter(|c| c.id == id) else {
                    return;
                };
                c.deframer.push(&bytes);
                let mut broken = false;
                while let Some(f) = c.deframer.next_frame() {
                    match f {
                        Ok(msg) => {
                            // Refusals are counted by the endpoint.
                            let _ = c.endpoint.handle(msg, now);
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "HA local sync: framing lost; dropping the pseudo-standby");
                            broken = true;
                            break;
                        }
                    }
                }
                if broken {
                    self.counters.dropped_framing += 1;
                    self.conn = None;
                }
            }
            LocalEvent::Closed(id) => {
                if self.conn.as_ref().is_some_and(|c| c.id == id) {
                    tracing::warn!("HA local sync: pseudo-standby disconnected");
                    self.conn = None;
                }
            }
        }
    }

    /// Sends a record of the node's own state.
    pub fn publish(&mut self, rec: RecordRef<'_>) {
        if let Some(c) = self.conn.as_mut() {
            // Too large is counted where the record is first published (toward the peer).
            let _ = c.endpoint.publish(rec);
        }
    }

    /// Sends a change of the peer node's state the node holds.
    pub fn publish_peer(&mut self, rec: &Record) {
        if let Some(c) = self.conn.as_mut() {
            let r = RecordRef {
                table: peer_table(rec.table),
                op: rec.op,
                key: &rec.key,
                value: &rec.value,
            };
            let _ = c.endpoint.publish(r);
        }
    }

    /// Timers, a requested bulk resync (`published` and the peer node's `peer` state), and
    /// sending.
    pub fn on_tick(&mut self, now: Instant, published: &Replica, peer: &Replica) {
        let Some(c) = self.conn.as_mut() else {
            return;
        };
        c.endpoint.on_tick(now);
        while let Some(ev) = c.endpoint.poll_event() {
            match ev {
                Event::SnapshotNeeded { reason } => {
                    tracing::info!(
                        ?reason,
                        entries = published.total() + peer.total(),
                        "HA local sync: bulk resync to the pseudo-standby"
                    );
                    c.endpoint.start_resync(snapshot(published, peer), now);
                }
                Event::PeerLost => tracing::warn!("HA local sync: pseudo-standby silent"),
                Event::PeerUp { .. } => tracing::info!("HA local sync: pseudo-standby up"),
                _ => {}
            }
        }
        self.out.clear();
        let mut msg = Vec::new();
        while c.endpoint.poll_transmit(now, &mut msg) {
            hasync::frame_into(&msg, &mut self.out);
        }
        if !self.out.is_empty() && c.writes.try_send(std::mem::take(&mut self.out)).is_err() {
            // A stream cannot lose bytes: a pseudo-standby this far behind starts over.
            tracing::warn!("HA local sync: pseudo-standby too slow; dropping it (it reconnects and is resynced)");
            self.counters.dropped_slow += 1;
            self.conn = None;
        }
    }

    /// Resyncs the pseudo-standby (after a full re-export replaced `published`).
    pub fn start_resync(&mut self, now: Instant, published: &Replica, peer: &Replica) {
        if let Some(c) = self.conn.as_mut() {
            c.endpoint.start_resync(snapshot(published, peer), now);
        }
    }

    /// When [`Self::on_tick`] is due next.
    pub fn deadline(&self) -> Option<Instant> {
        self.conn.as_ref().and_then(|c| c.endpoint.next_deadline())
    }

    /// What `ha status` shows about the local socket.
    pub fn status(&self, now: Instant) -> PseudoStandbyStatus {
        let mut s = PseudoStandbyStatus {
            socket: self.path.display().to_string(),
            connected: self.conn.is_some(),
            accepted: self.counters.accepted,
            refused_busy: self.counters.refused_busy,
            dropped_slow: self.counters.dropped_slow,
            dropped_framing: self.counters.dropped_framing,
            ..Default::default()
        };
        if let Some(c) = &self.conn {
            let st = c.endpoint.status();
            s.connected_secs = now.saturating_duration_since(c.since).as_secs_f64();
            s.alive = st.peer_alive;
            s.lag_messages = st.unacked;
            s.resync_sending = st.resync_sending.map(|p| (p.done, p.total));
            s.records_published = st.counters.records_published;
            s.resyncs_sent = st.counters.resyncs_sent;
            s.rejected = st.rejects.total();
        }
        s
    }
}

async fn accept_loop(listener: tokio::net::UnixListener, events: mpsc::Sender<LocalEvent>) {
    let mut next = 0u64;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                next += 1;
                if events
                    .send(LocalEvent::Connected(next, stream))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "HA local sync: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn read_loop(
    id: u64,
    mut rd: tokio::net::unix::OwnedReadHalf,
    events: mpsc::Sender<LocalEvent>,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = events.send(LocalEvent::Closed(id)).await;
                return;
            }
            Ok(n) => {
                if events
                    .send(LocalEvent::Data(id, buf[..n].to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

async fn write_loop(mut wr: tokio::net::unix::OwnedWriteHalf, mut rx: mpsc::Receiver<Vec<u8>>) {
    while let Some(b) = rx.recv().await {
        if wr.write_all(&b).await.is_err() {
            return;
        }
    }
    let _ = wr.shutdown().await;
}

/// How a pseudo-standby's run ended.
#[derive(Debug)]
pub enum Outcome {
    /// SIGTERM or SIGINT: the process stops.
    Stopped,
    /// The node's process died: run the node with these records (the replica: the node's own
    /// tables, and the peer node's under [`PEER_TABLE_BIT`]).
    Promote(Vec<Record>),
}

/// Runs as the pseudo-standby of the node's process reached by `stream` until it dies
/// (promotion) or this process is told to stop.
pub fn run_standby(
    config_path: &Path,
    conf: &conf::RouterConf,
    group: Option<u32>,
    stream: std::os::unix::net::UnixStream,
) -> Result<Outcome> {
    let sc = conf
        .ha
        .sync
        .as_ref()
        .context("the pseudo-standby needs [ha.sync]")?;
    let dir = config_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let key_path = if sc.key_file.is_absolute() {
        sc.key_file.clone()
    } else {
        dir.join(&sc.key_file)
    };
    let key = super::statesync::read_key(&key_path)?;
    let mgmt_path = standby_socket(&conf.router.management_socket);
    let (file, listener) = super::mgmt::bind(&mgmt_path, group)?;
    tracing::info!(
        local_socket = %sc.local_socket.as_deref().unwrap_or(Path::new("")).display(),
        management = %mgmt_path.display(),
        id = standby_id(sc.node_id),
        "a live swrouter answers on local-socket: running as its pseudo-standby (no interfaces, workers, VRRP or peer sync until promoted)"
    );
    let access = super::mgmt::Access {
        own_uid: crate::sys::euid(),
        group,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let standby = Standby {
        config: config_path.display().to_string(),
        router_id: conf.router.id.to_string(),
        node_mgmt: conf.router.management_socket.clone(),
        local_socket: sc.local_socket.clone().unwrap_or_default(),
        node_id: sc.node_id,
        key,
        started: Instant::now(),
    };
    let r = rt.block_on(standby.run(stream, listener, access));
    drop(file);
    r
}

/// The pseudo-standby's fixed facts.
struct Standby {
    config: String,
    router_id: String,
    node_mgmt: PathBuf,
    local_socket: PathBuf,
    node_id: u32,
    key: Vec<u8>,
    started: Instant,
}

/// One connection to the node's process.
struct Link {
    stream: tokio::net::UnixStream,
    endpoint: Endpoint,
    deframer: Deframer,
}

impl Standby {
    fn link(&self, stream: std::os::unix::net::UnixStream) -> Result<Link> {
        stream.set_nonblocking(true)?;
        let stream = tokio::net::UnixStream::from_std(stream)?;
        let cfg = hasync::Config::new(
            standby_id(self.node_id),
            self.node_id,
            epoch_now(),
            self.key.clone(),
        );
        let endpoint =
            Endpoint::new(cfg, Instant::now()).map_err(|e| anyhow::anyhow!("[ha.sync]: {e}"))?;
        Ok(Link {
            stream,
            endpoint,
            deframer: Deframer::new(usize::from(u16::MAX)),
        })
    }

    async fn run(
        self,
        stream: std::os::unix::net::UnixStream,
        listener: std::os::unix::net::UnixListener,
        access: super::mgmt::Access,
    ) -> Result<Outcome> {
        use tokio::signal::unix::{signal, SignalKind};
        listener.set_nonblocking(true)?;
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let limits = super::mgmt::Limits::default();
        let (mgmt_tx, mut mgmt_rx) = mpsc::channel(limits.max_clients);
        let counters = std::sync::Arc::new(super::mgmt::Counters::default());
        let serving = tokio::spawn(super::mgmt::serve(
            listener,
            access,
            limits,
            mgmt_tx,
            counters.clone(),
        ));
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // A reload is for the node's process; without a handler SIGHUP would kill this one.
        let mut hup = signal(SignalKind::hangup())?;
        let mut link = self.link(stream)?;
        let mut buf = vec![0u8; 65_536];
        let mut out = Vec::new();
        let mut msg = Vec::new();
        let outcome = loop {
            let far = tokio::time::Instant::now() + Duration::from_secs(3600);
            let deadline = link
                .endpoint
                .next_deadline()
                .map(tokio::time::Instant::from_std)
                .unwrap_or(far);
            let mut ended = false;
            let mut lost = false;
            tokio::select! {
                r = link.stream.read(&mut buf) => match r {
                    Ok(0) | Err(_) => ended = true,
                    Ok(n) => {
                        link.deframer.push(&buf[..n]);
                        while let Some(f) = link.deframer.next_frame() {
                            match f {
                                Ok(m) => { let _ = link.endpoint.handle(m, Instant::now()); }
                                Err(e) => {
                                    tracing::warn!(error = %e, "pseudo-standby: framing lost on the local stream");
                                    ended = true;
                                    break;
                                }
                            }
                        }
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {}
                Some(req) = mgmt_rx.recv() => {
                    let reply = self.answer(req.line.trim(), &link, &counters, &limits);
                    let _ = req.reply.send(reply);
                }
                _ = term.recv() => { tracing::info!("SIGTERM: stopping the pseudo-standby"); break Outcome::Stopped; }
                _ = int.recv() => { tracing::info!("SIGINT: stopping the pseudo-standby"); break Outcome::Stopped; }
                _ = hup.recv() => tracing::info!("SIGHUP ignored: the pseudo-standby reads its configuration when it is promoted"),
            }
            let now = Instant::now();
            link.endpoint.on_tick(now);
            while let Some(ev) = link.endpoint.poll_event() {
                match ev {
                    Event::PeerLost => lost = true,
                    Event::ResyncCompleted { records, .. } => tracing::info!(
                        records,
                        "pseudo-standby: the node's state received (in sync)"
                    ),
                    Event::PeerUp { .. } => {
                        tracing::info!("pseudo-standby: the node's process is up")
                    }
                    _ => {}
                }
            }
            out.clear();
            while link.endpoint.poll_transmit(now, &mut msg) {
                hasync::frame_into(&msg, &mut out);
            }
            if !out.is_empty() {
                let w = tokio::time::timeout(WRITE_TIMEOUT, link.stream.write_all(&out)).await;
                if !matches!(w, Ok(Ok(()))) {
                    ended = true;
                }
            }
            if !(ended || lost) {
                continue;
            }
            if answers(&self.node_mgmt) {
                if lost && !ended {
                    tracing::warn!(
                        "pseudo-standby: no heartbeat from the node's process, but its management socket answers: not taking over (it may be hung)"
                    );
                    continue;
                }
                // Alive but it closed the stream (busy with another pseudo-standby, or it
                // dropped us): connect again and be resynced.
                tracing::warn!(
                    "pseudo-standby: the node's process closed the local stream; reconnecting"
                );
                tokio::time::sleep(RECONNECT_DELAY).await;
                match std::os::unix::net::UnixStream::connect(&self.local_socket) {
                    Ok(s) => {
                        link = self.link(s)?;
                        continue;
                    }
                    Err(_) if answers(&self.node_mgmt) => {
                        // Its local socket is gone but it runs: keep what we hold and retry.
                        continue;
                    }
                    Err(_) => {}
                }
            }
            let records = replica_records(link.endpoint.replica());
            tracing::warn!(
                in_sync = link.endpoint.in_sync(),
                cause = if ended {
                    "local stream ended"
                } else {
                    "heartbeat lost"
                },
                records = records.len(),
                "pseudo-standby: the node's process is gone: PROMOTING to the node's process"
            );
            break Outcome::Promote(records);
        };
        serving.abort();
        Ok(outcome)
    }

    /// What `ha status` shows on the pseudo-standby.
    fn ha_status(&self, link: &Link) -> HaStatus {
        let st = link.endpoint.status();
        let c = st.counters;
        HaStatus {
            role: "pseudo-standby".to_string(),
            sync: Some(SyncStatus {
                local: self.local_socket.display().to_string(),
                peer: "this node's process".to_string(),
                node_id: st.local_id,
                peer_node_id: st.peer_id,
                epoch: st.epoch,
                peer_epoch: st.peer_epoch,
                peer_alive: st.peer_alive,
                peer_last_heard_secs: st.peer_last_heard.map(|d| d.as_secs_f64()),
                in_sync: st.in_sync,
                missing: st.missing,
                resync_receiving: st.resync_receiving.map(|p| (p.done, p.total)),
                resync_wanted: st.resync_wanted,
                messages_sent: c.messages_sent,
                bytes_sent: c.bytes_sent,
                messages_received: c.messages_received,
                bytes_received: c.bytes_received,
                records_applied: c.records_applied,
                resyncs_completed: c.resyncs_completed,
                stream_jumps: c.stream_jumps,
                rejected: [
                    ("malformed", st.rejects.malformed),
                    ("forged", st.rejects.forged),
                    ("replayed", st.rejects.replayed),
                    ("too-old", st.rejects.too_old),
                    ("stale-epoch", st.rejects.stale_epoch),
                    ("wrong-sender", st.rejects.wrong_sender),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
                tables: split_digests(link.endpoint.replica()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn answer(
        &self,
        line: &str,
        link: &Link,
        counters: &super::mgmt::Counters,
        limits: &super::mgmt::Limits,
    ) -> String {
        let r = match line {
            super::REQ_HA_STATUS => serde_json::to_string(&self.ha_status(link)),
            super::REQ_STATUS => serde_json::to_string(&crate::status::Status {
                router: crate::status::RouterInfo {
                    id: self.router_id.clone(),
                    pid: std::process::id(),
                    uptime_secs: self.started.elapsed().as_secs(),
                    workers: 0,
                    config: self.config.clone(),
                    reloads: 0,
                    backend: "pseudo-standby".to_string(),
                },
                interfaces: Vec::new(),
                routes: Vec::new(),
                arp: Vec::new(),
                pipeline: Vec::new(),
                workers: Vec::new(),
                neighbour_stats: Default::default(),
                wccp: None,
                steering: None,
                management: Some(counters.status(limits)),
                probes: None,
                nat: None,
                metrics: None,
                trace: None,
                ha: Some(self.ha_status(link)),
                cluster: None,
                cluster_node: None,
            }),
            other => serde_json::to_string(&super::ReloadReply {
                ok: false,
                message: format!(
                    "this is the pseudo-standby (it answers `status` and `ha status` only); {other:?} goes to the node's process on {}",
                    self.node_mgmt.display()
                ),
            }),
        };
        r.unwrap_or_else(|e| {
            serde_json::json!({ "error": format!("could not encode the answer: {e}") }).to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_tables_are_apart_from_own_ones_and_map_back() {
        for t in [
            TableId::CONFIG,
            TableId::NEIGHBOUR,
            TableId::NAT_SESSION,
            TableId::WCCP_GROUP,
        ] {
            assert_eq!(split_table(t), (false, t));
            assert_eq!(split_table(peer_table(t)), (true, t));
            assert_ne!(peer_table(t), t);
        }
        assert_eq!(standby_id(1), 0x8000_0001);
        assert_eq!(
            standby_socket(Path::new("/run/swrouter.sock")),
            Path::new("/run/swrouter.sock.standby")
        );
    }

    /// Both ends of a local link in one test: the node's `LocalLink` and a pseudo-standby's
    /// endpoint on the client side of the socket.
    struct Pair {
        link: LocalLink,
        events: mpsc::Receiver<LocalEvent>,
        standby: Endpoint,
        rd: tokio::net::unix::OwnedReadHalf,
        wr: tokio::net::unix::OwnedWriteHalf,
        deframer: Deframer,
    }

    impl Pair {
        /// Runs both ends until `done` holds of the standby (at most 2 s).
        async fn pump(
            &mut self,
            published: &Replica,
            peer: &Replica,
            done: impl Fn(&Endpoint) -> bool,
        ) {
            let mut buf = vec![0u8; 65_536];
            let (mut out, mut msg) = (Vec::new(), Vec::new());
            for _ in 0..400 {
                let now = Instant::now();
                self.link.on_tick(now, published, peer);
                self.standby.on_tick(now);
                out.clear();
                while self.standby.poll_transmit(now, &mut msg) {
                    hasync::frame_into(&msg, &mut out);
                }
                if !out.is_empty() {
                    self.wr.write_all(&out).await.unwrap();
                }
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(5), self.rd.read(&mut buf)).await
                {
                    self.deframer.push(&buf[..n]);
                    while let Some(Ok(f)) = self.deframer.next_frame() {
                        let _ = self.standby.handle(f, Instant::now());
                    }
                }
                while let Ok(ev) = self.events.try_recv() {
                    self.link.on_event(ev, Instant::now());
                }
                if done(&self.standby) {
                    return;
                }
            }
            panic!("never done: {:?}", self.standby.status());
        }
    }

    #[test]
    fn the_node_sends_its_own_and_the_peer_state_to_one_pseudo_standby() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = std::env::temp_dir().join(format!("swr-pseudo-{}", std::process::id()));
            let path = dir.join("local.sock");
            let key = vec![7u8; 32];
            let mut link = LocalLink::new(bind_local(&path).unwrap(), 1, key.clone()).unwrap();
            let mut events = link.take_events().unwrap();
            let client = tokio::net::UnixStream::connect(&path).await.unwrap();
            let ev = events.recv().await.unwrap();
            link.on_event(ev, Instant::now());
            assert!(link.connected());
            // One at a time: a second process is refused, the first stays.
            let _second = tokio::net::UnixStream::connect(&path).await.unwrap();
            let ev = events.recv().await.unwrap();
            link.on_event(ev, Instant::now());
            assert!(link.connected());
            assert_eq!(link.status(Instant::now()).refused_busy, 1);
            let (rd, wr) = client.into_split();
            let standby = Endpoint::new(
                hasync::Config::new(standby_id(1), 1, 5, key),
                Instant::now(),
            )
            .unwrap();
            let mut p = Pair {
                link,
                events,
                standby,
                rd,
                wr,
                deframer: Deframer::new(usize::from(u16::MAX)),
            };
            // The bulk resync: the node's own state and the peer node's, apart.
            let mut published = Replica::new();
            published.apply(RecordRef::upsert(TableId::NEIGHBOUR, b"a", b"1"));
            let mut peer = Replica::new();
            peer.apply(RecordRef::upsert(TableId::NAT_SESSION, b"p", b"9"));
            p.pump(&published, &peer, |s| s.in_sync()).await;
            let t = split_digests(p.standby.replica());
            assert_eq!((t["neighbour"].published, t["neighbour"].peer), (1, 0));
            assert_eq!((t["nat-session"].published, t["nat-session"].peer), (0, 1));
            // Live: what the node publishes and the peer's changes it receives.
            p.link
                .publish(RecordRef::upsert(TableId::NEIGHBOUR, b"b", b"2"));
            p.link
                .publish_peer(&Record::upsert(TableId::NAT_SESSION, b"q", b"8"));
            p.pump(&published, &peer, |s| s.replica().total() == 4)
                .await;
            published.apply(RecordRef::upsert(TableId::NEIGHBOUR, b"b", b"2"));
            peer.apply(RecordRef::upsert(TableId::NAT_SESSION, b"q", b"8"));
            let t = split_digests(p.standby.replica());
            let d = |r: &Replica, id: TableId| format!("{:016x}", r.digests().0[&id].digest);
            assert_eq!(
                t["neighbour"].published_digest,
                d(&published, TableId::NEIGHBOUR)
            );
            assert_eq!(t["nat-session"].peer_digest, d(&peer, TableId::NAT_SESSION));
            drop(p);
            let _ = std::fs::remove_dir_all(&dir);
        });
    }

    #[test]
    fn the_standby_shows_own_and_peer_tables_in_the_node_columns() {
        let mut r = Replica::new();
        r.apply(RecordRef::upsert(TableId::NEIGHBOUR, b"a", b"1"));
        r.apply(RecordRef::upsert(TableId::NEIGHBOUR, b"b", b"2"));
        r.apply(RecordRef::upsert(
            peer_table(TableId::NEIGHBOUR),
            b"c",
            b"3",
        ));
        let t = split_digests(&r);
        let n = &t["neighbour"];
        assert_eq!((n.published, n.peer), (2, 1));
        let mut own = Replica::new();
        own.apply(RecordRef::upsert(TableId::NEIGHBOUR, b"b", b"2"));
        own.apply(RecordRef::upsert(TableId::NEIGHBOUR, b"a", b"1"));
        assert_eq!(
            n.published_digest,
            format!("{:016x}", own.digests().0[&TableId::NEIGHBOUR].digest)
        );
        let mut theirs = Replica::new();
        theirs.apply(RecordRef::upsert(TableId::NEIGHBOUR, b"c", b"3"));
        assert_eq!(
            n.peer_digest,
            format!("{:016x}", theirs.digests().0[&TableId::NEIGHBOUR].digest)
        );
        assert_eq!(replica_records(&r).len(), 3);
    }
}
