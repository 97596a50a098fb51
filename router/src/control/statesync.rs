//! The HA state-sync driver (`[ha.sync]`, issue 15, seed 004): one `hasync::Endpoint` toward
//! the peer node over a kernel UDP socket on a link swrouter does not own.
//!
//! - **Sending**: state owners publish into the [`SyncFeed`]; the driver drains it into the
//!   endpoint and into `published`, its copy of everything this node holds as its own, from
//!   which a bulk resync is cut whenever the peer asks. A feed overflow (records lost) clears
//!   that copy, asks every owner for a full re-export and resyncs the peer after it.
//! - **Receiving**: the endpoint's replica is the peer's state; every change to it comes out of
//!   [`SyncDriver::on_datagram`] for the control loop to hand to the table's owner. Tables no
//!   owner applies stay in the replica only (counted as `held`).
//! - **Role**: the node is *active* while it is master of at least one virtual router,
//!   *standby* otherwise; the control loop reports every change ([`SyncDriver::set_role`]).
//!
//! The driver also owns two small tables itself: the node record (software version, config
//! generation) and the neighbour table (ARP bindings, so a new active does not have to ARP
//! for every host before it forwards).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use hasync::{Endpoint, Event, Op, Record, RecordRef, Replica, TableId};

use crate::ha_status::{SwitchoverStatus, SyncStatus, SyncTableStatus};
use crate::statesync::SyncFeed;
use crate::tables::neighbours::Neighbours;
use crate::tables::Iface;
use crate::wire::ethernet::MacAddr;

/// The node record's key in `TableId::CONFIG`.
const NODE_KEY: &[u8] = b"node";
/// How long after a full re-export the peer is resynced (owners on other threads publish
/// asynchronously; this lets their records reach the copy first).
const REEXPORT_SETTLE: Duration = Duration::from_millis(300);
/// Largest sync datagram read (the receive buffer's size).
pub const MAX_DATAGRAM: usize = 65_536;

/// This node's role in the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Master of at least one virtual router: it owns the state and publishes it.
    Active,
    /// Master of none: it holds the peer's state, ready to take over.
    Standby,
}

impl Role {
    /// The role's name in status and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }
}

/// Counters the driver keeps beside the endpoint's.
#[derive(Debug, Default, Clone)]
struct DriverCounters {
    /// Datagrams from an address other than the configured peer.
    wrong_source: u64,
    /// Datagrams the socket refused to send.
    send_errors: u64,
    /// Records too large for one message (not sent).
    too_large: u64,
    /// Feed overflows that forced a full re-export.
    reexports: u64,
    /// Peer changes handed to an owner, by table.
    applied: BTreeMap<TableId, u64>,
    /// Peer changes no owner applies (kept in the replica only), by table.
    held: BTreeMap<TableId, u64>,
}

/// The last role change.
#[derive(Debug, Clone)]
struct Switchover {
    at: Instant,
    wall: SystemTime,
    to: Role,
    cause: String,
}

/// One peer node's sync channel.
pub struct SyncDriver {
    socket: std::sync::Arc<tokio::net::UdpSocket>,
    local: SocketAddrV4,
    peer: SocketAddrV4,
    endpoint: Endpoint,
    feed: SyncFeed,
    published: Replica,
    role: Role,
    last_switchover: Option<Switchover>,
    counters: DriverCounters,
    /// A re-export is under way: resync the peer at this time.
    resync_at: Option<Instant>,
    /// The neighbour table's generation last published.
    neighbour_generation: u64,
    /// The peer's node record, as text.
    peer_node: Option<String>,
    out: Vec<u8>,
    drained: Vec<Record>,
    /// The local sync to this node's pseudo-standby (`local-socket`).
    local_link: Option<super::pseudo::LocalLink>,
}

impl std::fmt::Debug for SyncDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncDriver")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Reads the shared key: at least `hasync::endpoint::MIN_KEY_LEN` bytes (a trailing newline is
/// not part of it), and not readable by group or others.
pub fn read_key(path: &Path) -> Result<Vec<u8>> {
    read_key_of("[ha.sync]", path)
}

/// [`read_key`] for the configuration section `section` (named in its errors).
pub fn read_key_of(section: &str, path: &Path) -> Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("{section} key-file {}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "{section} key-file {}: readable by group or others (mode {:o}); `chmod 600` it: the key authenticates the whole router state",
            path.display(),
            mode & 0o777
        );
    }
    let mut key =
        std::fs::read(path).with_context(|| format!("{section} key-file {}", path.display()))?;
    while key.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        key.pop();
    }
    if key.len() < hasync::endpoint::MIN_KEY_LEN {
        bail!(
            "{section} key-file {}: {} bytes; the key needs at least {} (e.g. `openssl rand -hex 32 > {}`)",
            path.display(),
            key.len(),
            hasync::endpoint::MIN_KEY_LEN,
            path.display()
        );
    }
    Ok(key)
}

impl SyncDriver {
    /// Binds the socket and starts the endpoint (its first message is a Hello). Relative key
    /// paths are relative to `config_dir`. `local` is the bound `local-socket`, served for a
    /// pseudo-standby.
    pub fn new(
        conf: &conf::SyncConf,
        config_dir: &Path,
        feed: SyncFeed,
        local: Option<super::pseudo::LocalListener>,
        now: Instant,
    ) -> Result<SyncDriver> {
        let key_path = if conf.key_file.is_absolute() {
            conf.key_file.clone()
        } else {
            config_dir.join(&conf.key_file)
        };
        let key = read_key(&key_path)?;
        // The epoch must grow across restarts: microseconds since the epoch do.
        let epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1)
            .max(1);
        let local_link = match local {
            Some(l) => Some(super::pseudo::LocalLink::new(l, conf.node_id, key.clone())?),
            None => None,
        };
        let mut cfg = hasync::Config::new(conf.node_id, conf.peer_node_id, epoch, key);
        cfg.report_changes = true;
        let endpoint = Endpoint::new(cfg, now).map_err(|e| anyhow::anyhow!("[ha.sync]: {e}"))?;
        let std_socket = std::net::UdpSocket::bind(conf.local).with_context(|| {
            format!(
                "[ha.sync] local = {}: cannot bind (is the address configured on a kernel interface of this host?)",
                conf.local
            )
        })?;
        std_socket.set_nonblocking(true)?;
        let socket = tokio::net::UdpSocket::from_std(std_socket)?;
        tracing::info!(local = %conf.local, peer = %conf.peer, node_id = conf.node_id, "HA sync channel open");
        Ok(SyncDriver {
            socket: std::sync::Arc::new(socket),
            local: conf.local,
            peer: conf.peer,
            endpoint,
            feed,
            published: Replica::new(),
            role: Role::Standby,
            last_switchover: None,
            counters: DriverCounters::default(),
            resync_at: None,
            neighbour_generation: 0,
            peer_node: None,
            out: Vec::new(),
            drained: Vec::new(),
            local_link,
        })
    }

    /// The local socket's events for the control loop (once; `None` without `local-socket`).
    pub fn take_local_events(
        &mut self,
    ) -> Option<tokio::sync::mpsc::Receiver<super::pseudo::LocalEvent>> {
        self.local_link.as_mut().and_then(|l| l.take_events())
    }

    /// An event of the local socket (a pseudo-standby connecting, its bytes, its end).
    pub fn on_local_event(&mut self, ev: super::pseudo::LocalEvent, now: Instant) {
        if let Some(l) = self.local_link.as_mut() {
            l.on_event(ev, now);
        }
    }

    /// The socket, for the control loop's receive arm.
    pub fn socket(&self) -> std::sync::Arc<tokio::net::UdpSocket> {
        self.socket.clone()
    }

    /// The feed owners publish into.
    pub fn feed(&self) -> &SyncFeed {
        &self.feed
    }

    /// Our copy of the peer's state is exact (its bulk resync arrived, nothing lost since).
    pub fn in_sync(&self) -> bool {
        self.endpoint.in_sync()
    }

    /// The peer was heard within its timeout.
    pub fn peer_alive(&self) -> bool {
        self.endpoint.status().peer_alive
    }

    /// This node's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Records a role change; returns true when the role changed.
    pub fn set_role(&mut self, role: Role, cause: &str, now: Instant) -> bool {
        if role == self.role && self.last_switchover.is_some() {
            return false;
        }
        let first = self.last_switchover.is_none();
        self.role = role;
        self.last_switchover = Some(Switchover {
            at: now,
            wall: SystemTime::now(),
            to: role,
            cause: cause.to_string(),
        });
        if first {
            tracing::info!(role = role.as_str(), cause, "HA role");
        } else {
            tracing::warn!(role = role.as_str(), cause, "HA switchover");
        }
        true
    }

    /// Publishes this node's record (software version, configuration generation: reloads
    /// since start).
    pub fn publish_node(&mut self, config_generation: u64) {
        let value = format!(
            "version={} config-generation={}",
            env!("CARGO_PKG_VERSION"),
            config_generation,
        );
        self.feed.publish(Record::upsert(
            TableId::CONFIG,
            NODE_KEY,
            value.into_bytes(),
        ));
    }

    /// Publishes the changes of the neighbour table since the last call (when its generation
    /// moved). `own` are this node's addresses (never published as neighbours).
    pub fn publish_neighbours(&mut self, neighbours: &Neighbours, ifaces: &[Iface]) {
        let generation = neighbours.load().generation;
        if generation == self.neighbour_generation {
            return;
        }
        self.neighbour_generation = generation;
        let mut now_known: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
        for ((ifid, addr), e) in neighbours.entries() {
            let Some(iface) = ifaces.get(ifid as usize) else {
                continue;
            };
            now_known.insert(neighbour_key(&iface.name, addr), e.mac.0.to_vec());
        }
        let old: Vec<(Vec<u8>, Vec<u8>)> = self
            .published
            .iter(TableId::NEIGHBOUR)
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        for (k, v) in &old {
            match now_known.get(k) {
                Some(nv) if nv == v => {
                    now_known.remove(k);
                }
                Some(_) => {}
                None => self
                    .feed
                    .publish(Record::delete(TableId::NEIGHBOUR, k.clone())),
            }
        }
        for (k, v) in now_known {
            self.feed.publish(Record::upsert(TableId::NEIGHBOUR, k, v));
        }
    }

    /// Forgets this node's own copy of `tables` (no deletes are sent): on becoming standby, its
    /// NAT sessions and WCCP groups are the new active's to publish; keeping them here would
    /// resend stale entries in a later resync. Becoming active again, owners re-export.
    pub fn forget_own(&mut self, tables: &[TableId]) {
        for t in tables {
            self.published.clear_table(*t);
        }
    }

    /// Publishes the whole neighbour table again at the next [`Self::publish_neighbours`].
    pub fn republish_all_neighbours(&mut self) {
        self.neighbour_generation = 0;
    }

    /// Drains the feed into the endpoint. Returns true when records were lost to a full feed:
    /// the caller must ask every owner to re-export its state (then the peer is resynced).
    pub fn pump_feed(&mut self, now: Instant) -> bool {
        let overflowed = self.feed.take_overflow();
        let mut drained = std::mem::take(&mut self.drained);
        self.feed.drain(&mut drained);
        if overflowed {
            // What was lost cannot be told apart: start the copy over from the owners.
            self.counters.reexports += 1;
            self.published.clear();
            self.neighbour_generation = 0;
            self.resync_at = Some(now + REEXPORT_SETTLE);
            tracing::warn!(
                dropped = self.feed.counters().dropped,
                "HA sync feed overflowed: re-exporting all state, the peer will be resynced"
            );
        }
        for rec in drained.drain(..) {
            self.published.apply(rec.as_ref());
            if let Some(l) = self.local_link.as_mut() {
                l.publish(rec.as_ref());
            }
            match self.endpoint.publish(rec.as_ref()) {
                Ok(()) => {}
                Err(hasync::RecordError::TooLarge { len, max }) => {
                    self.counters.too_large += 1;
                    tracing::warn!(
                        table = rec.table.name(),
                        len,
                        max,
                        "HA sync record too large to send"
                    );
                }
                Err(e) => {
                    self.counters.too_large += 1;
                    tracing::warn!(table = rec.table.name(), error = %e, "HA sync record refused");
                }
            }
        }
        self.drained = drained;
        overflowed
    }

    /// A datagram from the socket. Returns the peer's state changes for their owners.
    pub fn on_datagram(&mut self, data: &[u8], from: SocketAddr, now: Instant) -> Vec<Record> {
        if from != SocketAddr::V4(self.peer) && from.ip() != std::net::IpAddr::V4(*self.peer.ip()) {
            self.counters.wrong_source += 1;
            return Vec::new();
        }
        if let Err(r) = self.endpoint.handle(data, now) {
            // Counted by the endpoint; the first of each kind is worth a log line.
            let n = self.endpoint.status().rejects.total();
            if n.is_power_of_two() {
                tracing::warn!(from = %from, reason = %r, rejected = n, "HA sync message rejected");
            }
        }
        let mut changes = Vec::new();
        while let Some(rec) = self.endpoint.poll_change() {
            if rec.table == TableId::CONFIG && rec.key == NODE_KEY {
                self.peer_node = match rec.op {
                    Op::Upsert => Some(String::from_utf8_lossy(&rec.value).into_owned()),
                    Op::Delete => None,
                };
            }
            if let Some(l) = self.local_link.as_mut() {
                // The pseudo-standby holds the peer's state too, for when it is promoted.
                l.publish_peer(&rec);
            }
            changes.push(rec);
        }
        changes
    }

    /// Counts a change an owner applied (`applied`) or that only the replica holds.
    pub fn count_change(&mut self, table: TableId, applied: bool) {
        let m = if applied {
            &mut self.counters.applied
        } else {
            &mut self.counters.held
        };
        *m.entry(table).or_default() += 1;
    }

    /// Timers, events and sending; call after anything else and at [`Self::deadline`].
    pub fn on_tick(&mut self, now: Instant) {
        self.endpoint.on_tick(now);
        if self.resync_at.is_some_and(|t| now >= t) {
            self.resync_at = None;
            self.start_resync(now);
            if let Some(l) = self.local_link.as_mut() {
                l.start_resync(now, &self.published, self.endpoint.replica());
            }
        }
        while let Some(ev) = self.endpoint.poll_event() {
            match ev {
                Event::SnapshotNeeded { reason } => {
                    if self.resync_at.is_none() {
                        tracing::info!(
                            ?reason,
                            entries = self.published.total(),
                            "HA sync: bulk resync to the peer"
                        );
                        self.start_resync(now);
                    }
                }
                Event::PeerUp { epoch, new_epoch } => {
                    tracing::info!(peer = %self.peer, epoch, restarted = new_epoch, "HA sync peer up");
                }
                Event::PeerLost => tracing::warn!(peer = %self.peer, "HA sync peer lost"),
                Event::ResyncStarted { id, total } => {
                    tracing::info!(id, total, "HA sync: receiving the peer's state")
                }
                Event::ResyncCompleted {
                    id,
                    records,
                    removed,
                } => {
                    tracing::info!(id, records, removed, "HA sync: peer's state received")
                }
                Event::OutOfSync => {
                    tracing::warn!("HA sync: messages from the peer lost for good; resyncing")
                }
            }
        }
        self.transmit(now);
        if let Some(l) = self.local_link.as_mut() {
            l.on_tick(now, &self.published, self.endpoint.replica());
        }
    }

    fn start_resync(&mut self, now: Instant) {
        self.endpoint.start_resync(snapshot(&self.published), now);
    }

    fn transmit(&mut self, now: Instant) {
        let peer = SocketAddr::V4(self.peer);
        while self.endpoint.poll_transmit(now, &mut self.out) {
            // A datagram the socket cannot take now is lost like one lost on the wire: the
            // channel's acks and NACKs repair it.
            if self.socket.try_send_to(&self.out, peer).is_err() {
                self.counters.send_errors += 1;
            }
        }
    }

    /// When [`Self::on_tick`] is due next.
    pub fn deadline(&self) -> Option<Instant> {
        [
            self.endpoint.next_deadline(),
            self.resync_at,
            self.local_link.as_ref().and_then(|l| l.deadline()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// What `swrouter ha status` shows about the channel.
    pub fn status(&self, now: Instant) -> SyncStatus {
        let s = self.endpoint.status();
        let mut tables: BTreeMap<String, SyncTableStatus> = BTreeMap::new();
        for (id, d) in self.published.digests().0 {
            let t = tables.entry(id.name().to_string()).or_default();
            t.published = d.count;
            t.published_digest = format!("{:016x}", d.digest);
        }
        for (id, d) in self.endpoint.replica().digests().0 {
            let t = tables.entry(id.name().to_string()).or_default();
            t.peer = d.count;
            t.peer_digest = format!("{:016x}", d.digest);
        }
        for (id, n) in &self.counters.applied {
            tables.entry(id.name().to_string()).or_default().applied = *n;
        }
        for (id, n) in &self.counters.held {
            tables.entry(id.name().to_string()).or_default().held = *n;
        }
        let feed = self.feed.counters();
        let c = s.counters;
        let r = s.rejects;
        SyncStatus {
            local: self.local.to_string(),
            peer: self.peer.to_string(),
            node_id: s.local_id,
            peer_node_id: s.peer_id,
            epoch: s.epoch,
            peer_epoch: s.peer_epoch,
            peer_alive: s.peer_alive,
            peer_last_heard_secs: s.peer_last_heard.map(|d| d.as_secs_f64()),
            peer_node: self.peer_node.clone(),
            in_sync: s.in_sync,
            lag_messages: s.unacked,
            lag_bytes: s.unacked_bytes,
            lag_secs: s.oldest_unacked.map(|d| d.as_secs_f64()).unwrap_or(0.0),
            missing: s.missing,
            resync_sending: s.resync_sending.map(|p| (p.done, p.total)),
            resync_receiving: s.resync_receiving.map(|p| (p.done, p.total)),
            resync_wanted: s.resync_wanted,
            messages_sent: c.messages_sent,
            bytes_sent: c.bytes_sent,
            messages_received: c.messages_received,
            bytes_received: c.bytes_received,
            records_published: c.records_published,
            records_applied: c.records_applied,
            resends: c.resends,
            nacks_sent: c.nacks_sent,
            nacks_received: c.nacks_received,
            resyncs_sent: c.resyncs_sent,
            resyncs_completed: c.resyncs_completed,
            queue_overflows: c.queue_overflows,
            stream_jumps: c.stream_jumps,
            rejected: BTreeMap::from([
                ("malformed".to_string(), r.malformed),
                ("forged".to_string(), r.forged),
                ("replayed".to_string(), r.replayed),
                ("too-old".to_string(), r.too_old),
                ("stale-epoch".to_string(), r.stale_epoch),
                ("wrong-sender".to_string(), r.wrong_sender),
                ("wrong-source".to_string(), self.counters.wrong_source),
            ]),
            feed_published: feed.published,
            feed_dropped: feed.dropped,
            reexports: self.counters.reexports,
            send_errors: self.counters.send_errors,
            too_large: self.counters.too_large,
            tables,
            last_switchover: self.last_switchover.as_ref().map(|s| SwitchoverStatus {
                secs_ago: now.saturating_duration_since(s.at).as_secs_f64(),
                unix_secs: s
                    .wall
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
                to: s.to.as_str().to_string(),
                cause: s.cause.clone(),
            }),
            pseudo_standby: self.local_link.as_ref().map(|l| l.status(now)),
        }
    }
}

/// Every entry of `replica` as an upsert: a bulk resync's snapshot.
pub fn snapshot(replica: &Replica) -> Vec<Record> {
    let mut out = Vec::with_capacity(replica.total());
    for table in replica.tables().collect::<Vec<_>>() {
        for (k, v) in replica.iter(table) {
            out.push(Record::upsert(table, k, v));
        }
    }
    out
}

/// A neighbour record's key: the IPv4 address, then the interface's name (interface ids are
/// per process; names are what both nodes configure).
pub fn neighbour_key(iface: &str, addr: Ipv4Addr) -> Vec<u8> {
    let mut k = addr.octets().to_vec();
    k.extend_from_slice(iface.as_bytes());
    k
}

/// Applies one of the peer's neighbour records to the local table: an upsert creates or
/// updates the binding (unless the address is one of ours); deletes are left to the local
/// ageing (a binding in use is re-probed, not dropped on the peer's word). Returns whether
/// the record was used.
pub fn apply_neighbour(
    rec: RecordRef<'_>,
    neighbours: &Neighbours,
    ifaces: &[Iface],
    own: impl Fn(Ipv4Addr) -> bool,
    now: Instant,
) -> bool {
    if rec.op != Op::Upsert || rec.key.len() < 5 || rec.value.len() != 6 {
        return false;
    }
    let addr = Ipv4Addr::new(rec.key[0], rec.key[1], rec.key[2], rec.key[3]);
    let Ok(name) = std::str::from_utf8(&rec.key[4..]) else {
        return false;
    };
    let Some(iface) = ifaces.iter().find(|i| i.name == name) else {
        return false;
    };
    if own(addr) {
        return false;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(rec.value);
    neighbours.learn(iface.id, addr, MacAddr(mac), true, now);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_rules() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("swr-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("k");
        std::fs::write(&p, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key(&p).unwrap(), b"0123456789abcdef0123");
        std::fs::write(&p, "short\n").unwrap();
        let e = read_key(&p).unwrap_err().to_string();
        assert!(e.contains("at least 16"), "{e}");
        let e = read_key(&dir.join("missing")).unwrap_err();
        assert!(format!("{e:#}").contains("missing"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_standby_forgets_its_own_copy_of_the_tables_the_active_now_owns() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("swr-forget-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("k");
        std::fs::write(&key, "0123456789abcdef0123").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let conf = conf::SyncConf {
                local: "127.0.0.1:0".parse().unwrap(),
                peer: "127.0.0.1:9".parse().unwrap(),
                key_file: key.clone(),
                node_id: 1,
                peer_node_id: 2,
                local_socket: None,
            };
            let now = Instant::now();
            let mut d = SyncDriver::new(&conf, &dir, SyncFeed::new(64), None, now).unwrap();
            d.feed()
                .publish(Record::upsert(TableId::NAT_SESSION, vec![1], vec![2]));
            d.feed()
                .publish(Record::upsert(TableId::NEIGHBOUR, vec![3], vec![4]));
            d.pump_feed(now);
            let tables = |d: &SyncDriver| d.status(now).tables;
            assert_eq!(tables(&d)["nat-session"].published, 1);
            d.forget_own(&[TableId::NAT_SESSION, TableId::WCCP_GROUP]);
            let t = tables(&d);
            assert!(!t.contains_key("nat-session"), "{t:?}");
            assert_eq!(t["neighbour"].published, 1);
        });
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn neighbour_records_apply_by_interface_name_and_skip_own_addresses() {
        let n = Neighbours::default();
        let iface = |id: u16, name: &str| Iface {
            id,
            name: name.into(),
            ifindex: id as u32 + 1,
            mac: MacAddr([2, 0, 0, 0, 0, id as u8]),
            addr: Ipv4Addr::new(10, 0, id as u8, 1),
            prefix_len: 24,
            mtu: 1500,
            backend: conf::IoBackend::Pnet,
            redirect_in: Vec::new(),
            redirect_out: Vec::new(),
            exclude_in: false,
            wccp_caches: false,
        };
        let ifaces = vec![iface(0, "out0"), iface(1, "in0")];
        let now = Instant::now();
        let name = ifaces[1].name.clone();
        let a = Ipv4Addr::new(10, 0, 1, 50);
        let key = neighbour_key(&name, a);
        let mac = [2, 0, 0, 0, 0, 7];
        assert!(apply_neighbour(
            RecordRef::upsert(TableId::NEIGHBOUR, &key, &mac),
            &n,
            &ifaces,
            |_| false,
            now
        ));
        assert_eq!(n.load().lookup(ifaces[1].id, a), Some(MacAddr(mac)));
        // Our own address, an unknown interface, a delete: not used.
        assert!(!apply_neighbour(
            RecordRef::upsert(TableId::NEIGHBOUR, &key, &mac),
            &n,
            &ifaces,
            |x| x == a,
            now
        ));
        let other = neighbour_key("nope0", a);
        assert!(!apply_neighbour(
            RecordRef::upsert(TableId::NEIGHBOUR, &other, &mac),
            &n,
            &ifaces,
            |_| false,
            now
        ));
        assert!(!apply_neighbour(
            RecordRef::delete(TableId::NEIGHBOUR, &key),
            &n,
            &ifaces,
            |_| false,
            now
        ));
        assert_eq!(n.load().lookup(ifaces[1].id, a), Some(MacAddr(mac)));
    }
}
