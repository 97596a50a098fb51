//! The cluster's state-sync mesh (issue 16, seed 003 claims 1, 4, 5): one `hasync::Endpoint`
//! per other node, all behind one kernel UDP socket, so each node holds a copy of every other
//! node's entries (the *common table*) and sends its own to all of them.
//!
//! `hasync` is a two-party channel by design (one peer per endpoint, with its own sequence
//! numbers, acks, replay window and resync), so N nodes are a full mesh of N−1 endpoints per
//! node. Datagrams are told apart by their source address; one from an address that is not a
//! member is counted `wrong-source` and dropped unread. Every endpoint checks the HMAC under
//! the one cluster key, so a node with another key is heard by nobody: each of its datagrams is
//! counted `forged` by the endpoint of its address.
//!
//! - **Sending**: owners publish into the [`SyncFeed`]; [`SyncMesh::pump_feed`] drains it once
//!   into `published` (what this node owns: what a new or restarted peer gets as its bulk
//!   resync) and into every peer's endpoint.
//! - **Receiving**: each endpoint's replica is that peer's state; every change comes out of
//!   [`SyncMesh::on_datagram`] as a [`MeshEvent::Change`] tagged with its node id.
//! - **Membership**: [`SyncMesh::set_peers`] follows the member list (from etcd); a new peer
//!   gets an endpoint (which asks for the peer's state and sends ours), a removed one is
//!   dropped with its replica.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use hasync::{Endpoint, Event, Record, Replica};
use serde::Serialize;

use crate::statesync::SyncFeed;

/// Timing of every endpoint of the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshTiming {
    /// Heartbeat when nothing else was sent.
    pub heartbeat: Duration,
    /// A peer unheard this long is lost.
    pub peer_timeout: Duration,
}

/// What the mesh reports to the control loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshEvent {
    /// The node was heard (first contact, or again after it was lost, or after its restart).
    PeerUp {
        /// Its node id.
        node: u32,
        /// First contact with this run of the node (its state is being resynced).
        restarted: bool,
    },
    /// Nothing valid from the node for the peer timeout.
    PeerLost {
        /// Its node id.
        node: u32,
    },
    /// Our copy of the node's state became exact (its bulk resync arrived).
    PeerInSync {
        /// Its node id.
        node: u32,
    },
    /// A change to our copy of the node's state, in the order the node published it.
    Change {
        /// Its node id.
        node: u32,
        /// The record.
        record: Record,
    },
}

/// One other node.
struct MeshPeer {
    addr: SocketAddrV4,
    endpoint: Endpoint,
    alive: bool,
    in_sync: bool,
}

/// Counters the mesh keeps beside its endpoints'.
#[derive(Debug, Default, Clone, Copy, Serialize, serde::Deserialize)]
pub struct MeshCounters {
    /// Datagrams from an address that is no member's.
    pub wrong_source: u64,
    /// Datagrams the socket refused to send.
    pub send_errors: u64,
    /// Records refused by the endpoints (too large for one message).
    pub too_large: u64,
}

/// One peer in `swrouter cluster status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct MeshPeerStatus {
    /// Its node id.
    pub node: u32,
    /// Its sync address.
    pub addr: String,
    /// Heard within the peer timeout.
    pub alive: bool,
    /// Seconds since it was last heard.
    pub last_heard_secs: Option<f64>,
    /// Our copy of its state is exact.
    pub in_sync: bool,
    /// Its entries we hold.
    pub entries: usize,
    /// Messages to it not yet acknowledged.
    pub lag_messages: u64,
    /// Age of the oldest unacknowledged message.
    pub lag_secs: f64,
    /// Messages sent to and received from it.
    pub messages: (u64, u64),
    /// Messages from its address refused because the tag did not verify (another key).
    pub forged: u64,
    /// Other refused messages (replayed, too old, stale epoch, wrong sender, malformed).
    pub rejected_other: u64,
}

/// How long a departed node's copy is kept at least (its ids are normally adopted within a
/// lease of its departure).
pub const DEPARTED_KEEP: Duration = Duration::from_secs(30);

/// The cluster's full mesh of sync endpoints.
pub struct SyncMesh {
    socket: Arc<tokio::net::UdpSocket>,
    local: SocketAddrV4,
    node_id: u32,
    key: Vec<u8>,
    epoch: u64,
    timing: MeshTiming,
    peers: BTreeMap<u32, MeshPeer>,
    /// Peers no longer members (their lease expired), kept with their replicas until their
    /// ids have been adopted: in a cluster without a majority to remove a dead node on its
    /// heartbeat, its member record goes first and the reallocation follows.
    departed: BTreeMap<u32, (MeshPeer, Instant)>,
    feed: SyncFeed,
    published: Replica,
    counters: MeshCounters,
    out: Vec<u8>,
    drained: Vec<Record>,
}

impl std::fmt::Debug for SyncMesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncMesh")
            .field("local", &self.local)
            .field("node_id", &self.node_id)
            .field("peers", &self.peers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl SyncMesh {
    /// Binds `local` (a kernel address) for a node `node_id` keyed with `key` (see
    /// [`super::statesync::read_key`]).
    pub fn bind(
        node_id: u32,
        local: SocketAddrV4,
        key: Vec<u8>,
        timing: MeshTiming,
        feed: SyncFeed,
    ) -> Result<SyncMesh> {
        let std_socket = std::net::UdpSocket::bind(local).with_context(|| {
            format!(
                "[cluster] sync-local = {local}: cannot bind (is the address configured on a kernel interface of this host?)"
            )
        })?;
        std_socket.set_nonblocking(true)?;
        // Port 0 binds an ephemeral port: keep the one the kernel chose.
        let local = match std_socket.local_addr()? {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => local,
        };
        let socket = tokio::net::UdpSocket::from_std(std_socket)?;
        // The epoch must grow across restarts: microseconds since the epoch do.
        let epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1)
            .max(1);
        Ok(SyncMesh {
            socket: Arc::new(socket),
            local,
            node_id,
            key,
            epoch,
            timing,
            peers: BTreeMap::new(),
            departed: BTreeMap::new(),
            feed,
            published: Replica::new(),
            counters: MeshCounters::default(),
            out: Vec::new(),
            drained: Vec::new(),
        })
    }

    /// The address bound (with the port the kernel chose for port 0).
    pub fn local(&self) -> SocketAddrV4 {
        self.local
    }

    /// This run's sync epoch (µs at start; peers see a restart as a new epoch).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The socket, for the control loop's receive arm.
    pub fn socket(&self) -> Arc<tokio::net::UdpSocket> {
        self.socket.clone()
    }

    /// The feed owners publish into.
    pub fn feed(&self) -> &SyncFeed {
        &self.feed
    }

    /// What this node publishes as its own.
    pub fn published(&self) -> &Replica {
        &self.published
    }

    /// Our copy of node `node`'s state (also of a departed node, until pruned).
    pub fn replica(&self, node: u32) -> Option<&Replica> {
        self.peers
            .get(&node)
            .or_else(|| self.departed.get(&node).map(|(p, _)| p))
            .map(|p| p.endpoint.replica())
    }

    /// Every node whose state we hold a copy of: the peers, then the departed.
    pub fn replica_nodes(&self) -> Vec<u32> {
        self.peers
            .keys()
            .chain(self.departed.keys())
            .copied()
            .collect()
    }

    /// Forgets departed nodes' copies older than [`DEPARTED_KEEP`] unless `still_needed` (the
    /// node still owns ids in the table in force: a reallocation has yet to adopt them).
    pub fn prune_departed(&mut self, now: Instant, still_needed: impl Fn(u32) -> bool) {
        self.departed.retain(|id, (_, since)| {
            now.saturating_duration_since(*since) < DEPARTED_KEEP || still_needed(*id)
        });
    }

    /// The peers' node ids.
    pub fn peers(&self) -> impl Iterator<Item = u32> + '_ {
        self.peers.keys().copied()
    }

    /// True when `node` is a peer heard within the timeout.
    pub fn alive(&self, node: u32) -> bool {
        self.peers.get(&node).is_some_and(|p| p.alive)
    }

    /// True when `node` is heard and our copy of its state is exact.
    pub fn in_sync(&self, node: u32) -> bool {
        self.peers.get(&node).is_some_and(|p| p.in_sync)
    }

    /// Follows the member list: `(node id, sync address)` of every other node. New members get
    /// an endpoint, members gone lose theirs (and our copy of their state); a member whose
    /// address changed starts over.
    pub fn set_peers(&mut self, members: &[(u32, SocketAddrV4)], now: Instant) -> Result<()> {
        let gone: Vec<u32> = self
            .peers
            .iter()
            .filter(|(id, p)| !members.iter().any(|(m, a)| m == *id && *a == p.addr))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(p) = self.peers.remove(&id) {
                self.departed.insert(id, (p, now));
            }
        }
        for &(id, addr) in members {
            if id == self.node_id || self.peers.contains_key(&id) {
                continue;
            }
            // Back (a restart): its new state replaces what it left.
            self.departed.remove(&id);
            let mut cfg = hasync::Config::new(self.node_id, id, self.epoch, self.key.clone());
            cfg.report_changes = true;
            cfg.heartbeat_interval = self.timing.heartbeat;
            cfg.tail_probe = self.timing.heartbeat.min(cfg.tail_probe);
            cfg.peer_timeout = self.timing.peer_timeout;
            let endpoint =
                Endpoint::new(cfg, now).map_err(|e| anyhow::anyhow!("[cluster] sync: {e}"))?;
            tracing::info!(node = id, %addr, "cluster sync: peer added");
            self.peers.insert(
                id,
                MeshPeer {
                    addr,
                    endpoint,
                    alive: false,
                    in_sync: false,
                },
            );
        }
        Ok(())
    }

    /// Drains the feed into `published` and every endpoint. Returns true when records were
    /// lost to a full feed (the caller must have every owner re-export; each peer is resynced).
    pub fn pump_feed(&mut self, now: Instant) -> bool {
        let overflowed = self.feed.take_overflow();
        let mut drained = std::mem::take(&mut self.drained);
        self.feed.drain(&mut drained);
        if overflowed {
            self.published.clear();
            tracing::warn!("cluster sync feed overflowed: re-exporting all state");
        }
        for rec in drained.drain(..) {
            self.published.apply(rec.as_ref());
            for p in self.peers.values_mut() {
                if p.endpoint.publish(rec.as_ref()).is_err() {
                    self.counters.too_large += 1;
                }
            }
        }
        self.drained = drained;
        if overflowed {
            for id in self.peers.keys().copied().collect::<Vec<_>>() {
                self.resync(id, now);
            }
        }
        overflowed
    }

    /// A datagram from the socket: the changes to our copies, and peer events.
    pub fn on_datagram(&mut self, data: &[u8], from: SocketAddr, now: Instant) -> Vec<MeshEvent> {
        let SocketAddr::V4(from) = from else {
            self.counters.wrong_source += 1;
            return Vec::new();
        };
        let Some((&id, _)) = self.peers.iter().find(|(_, p)| *p.addr.ip() == *from.ip()) else {
            self.counters.wrong_source += 1;
            return Vec::new();
        };
        let peer = self.peers.get_mut(&id).expect("found above");
        if let Err(r) = peer.endpoint.handle(data, now) {
            let n = peer.endpoint.status().rejects.total();
            if n.is_power_of_two() {
                tracing::warn!(node = id, %from, reason = %r, rejected = n, "cluster sync message rejected");
            }
        }
        let mut events = Vec::new();
        self.collect(id, now, &mut events);
        events
    }

    /// Timers and sending; call at [`Self::deadline`] and after anything else.
    pub fn on_tick(&mut self, now: Instant) -> Vec<MeshEvent> {
        let mut events = Vec::new();
        for id in self.peers.keys().copied().collect::<Vec<_>>() {
            if let Some(p) = self.peers.get_mut(&id) {
                p.endpoint.on_tick(now);
            }
            self.collect(id, now, &mut events);
        }
        events
    }

    /// Events, changes and datagrams of peer `id`'s endpoint.
    fn collect(&mut self, id: u32, now: Instant, events: &mut Vec<MeshEvent>) {
        let mut snapshot_needed = false;
        if let Some(p) = self.peers.get_mut(&id) {
            while let Some(ev) = p.endpoint.poll_event() {
                match ev {
                    Event::PeerUp { epoch, new_epoch } => {
                        if !p.alive || new_epoch {
                            tracing::info!(
                                node = id,
                                epoch,
                                restarted = new_epoch,
                                "cluster sync: peer up"
                            );
                            events.push(MeshEvent::PeerUp {
                                node: id,
                                restarted: new_epoch,
                            });
                        }
                        p.alive = true;
                    }
                    Event::PeerLost => {
                        tracing::warn!(node = id, "cluster sync: peer lost");
                        p.alive = false;
                        p.in_sync = false;
                        events.push(MeshEvent::PeerLost { node: id });
                    }
                    Event::SnapshotNeeded { .. } => snapshot_needed = true,
                    Event::ResyncCompleted { records, .. } => {
                        tracing::info!(node = id, records, "cluster sync: peer's state received");
                    }
                    Event::ResyncStarted { .. } | Event::OutOfSync => {}
                }
            }
            while let Some(record) = p.endpoint.poll_change() {
                events.push(MeshEvent::Change { node: id, record });
            }
            // A lost peer's replica may still be complete: it is in sync again only once it
            // is heard again (else its loss would be undone at once).
            if !p.in_sync && p.alive && p.endpoint.in_sync() {
                p.in_sync = true;
                events.push(MeshEvent::PeerInSync { node: id });
            } else if !p.endpoint.in_sync() {
                p.in_sync = false;
            }
        }
        if snapshot_needed {
            self.resync(id, now);
        }
        self.transmit(id, now);
    }

    fn resync(&mut self, id: u32, now: Instant) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        p.endpoint
            .start_resync(super::statesync::snapshot(&self.published), now);
    }

    fn transmit(&mut self, id: u32, now: Instant) {
        let Some(p) = self.peers.get_mut(&id) else {
            return;
        };
        let to = SocketAddr::V4(p.addr);
        while p.endpoint.poll_transmit(now, &mut self.out) {
            // A datagram the socket cannot take now is lost like one lost on the wire: the
            // channel's acks and NACKs repair it.
            if self.socket.try_send_to(&self.out, to).is_err() {
                self.counters.send_errors += 1;
            }
        }
    }

    /// When [`Self::on_tick`] is due next.
    pub fn deadline(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|p| p.endpoint.next_deadline())
            .min()
    }

    /// The mesh's counters.
    pub fn counters(&self) -> MeshCounters {
        self.counters
    }

    /// Every peer, for status.
    pub fn status(&self) -> Vec<MeshPeerStatus> {
        self.peers
            .iter()
            .map(|(&node, p)| {
                let s = p.endpoint.status();
                let r = s.rejects;
                MeshPeerStatus {
                    node,
                    addr: p.addr.to_string(),
                    alive: s.peer_alive,
                    last_heard_secs: s.peer_last_heard.map(|d| d.as_secs_f64()),
                    in_sync: s.in_sync,
                    entries: s.replica_entries,
                    lag_messages: s.unacked,
                    lag_secs: s.oldest_unacked.map(|d| d.as_secs_f64()).unwrap_or(0.0),
                    messages: (s.counters.messages_sent, s.counters.messages_received),
                    forged: r.forged,
                    rejected_other: r.total() - r.forged,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hasync::TableId;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn timing() -> MeshTiming {
        MeshTiming {
            heartbeat: Duration::from_millis(10),
            peer_timeout: Duration::from_millis(150),
        }
    }

    /// Nodes 1..=n on loopback ports, each knowing the others.
    fn mesh(n: u32, keys: &[&[u8]]) -> Vec<SyncMesh> {
        let mut nodes: Vec<SyncMesh> = (1..=n)
            .map(|id| {
                let local: SocketAddrV4 = format!("127.0.0.{id}:0").parse().unwrap();
                let key = keys.get(id as usize - 1).copied().unwrap_or(KEY).to_vec();
                SyncMesh::bind(id, local, key, timing(), SyncFeed::new(1024)).unwrap()
            })
            .collect();
        let members: Vec<(u32, SocketAddrV4)> =
            nodes.iter().map(|m| (m.node_id, m.local)).collect();
        let now = Instant::now();
        for m in &mut nodes {
            m.set_peers(&members, now).unwrap();
        }
        nodes
    }

    /// Runs every node's timers and delivers every datagram, for `for_ms` milliseconds (on
    /// the runtime, whose reactor tells the sockets they are ready).
    async fn run(nodes: &mut [SyncMesh], for_ms: u64) -> Vec<(u32, MeshEvent)> {
        let end = Instant::now() + Duration::from_millis(for_ms);
        let mut events = Vec::new();
        let mut buf = vec![0u8; 65536];
        while Instant::now() < end {
            for m in nodes.iter_mut() {
                let now = Instant::now();
                m.pump_feed(now);
                for e in m.on_tick(now) {
                    events.push((m.node_id, e));
                }
                while let Ok((n, from)) = m.socket.try_recv_from(&mut buf) {
                    for e in m.on_datagram(&buf[..n], from, Instant::now()) {
                        events.push((m.node_id, e));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        events
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn three_nodes_each_hold_the_others_entries() {
        rt().block_on(async {
            let mut nodes = mesh(3, &[]);
            for m in &nodes {
                let v = format!("from {}", m.node_id);
                m.feed().publish(Record::upsert(
                    TableId::NAT_SESSION,
                    vec![m.node_id as u8],
                    v.into_bytes(),
                ));
            }
            let events = run(&mut nodes, 300).await;
            for m in &nodes {
                for other in m.peers().collect::<Vec<_>>() {
                    assert!(
                        m.alive(other) && m.in_sync(other),
                        "{} about {other}",
                        m.node_id
                    );
                    let r = m.replica(other).unwrap();
                    assert_eq!(
                        r.get(TableId::NAT_SESSION, &[other as u8]),
                        Some(format!("from {other}").as_bytes()),
                        "node {} lacks node {other}'s entry",
                        m.node_id
                    );
                    assert_eq!(r.total(), 1, "only the peer's own entries");
                }
            }
            // Every change came out tagged with its publisher.
            let changes: Vec<_> = events
                .iter()
                .filter_map(|(at, e)| match e {
                    MeshEvent::Change { node, record } => Some((*at, *node, record.key.clone())),
                    _ => None,
                })
                .collect();
            assert_eq!(changes.len(), 6, "{changes:?}");
            assert!(changes
                .iter()
                .all(|(at, node, key)| at != node && key == &vec![*node as u8]));
            assert!(events
                .iter()
                .any(|(at, e)| *at == 1 && *e == MeshEvent::PeerInSync { node: 3 }));
        });
    }

    #[test]
    fn a_silent_node_is_lost_and_a_removed_ones_copy_kept_until_pruned() {
        rt().block_on(async {
            let mut nodes = mesh(3, &[]);
            run(&mut nodes, 150).await;
            assert!(nodes[0].alive(3));
            let third = nodes.pop().unwrap();
            let events = run(&mut nodes, 400).await;
            assert!(
                events
                    .iter()
                    .any(|(at, e)| *at == 1 && *e == MeshEvent::PeerLost { node: 3 }),
                "{events:?}"
            );
            assert!(!nodes[0].alive(3) && nodes[0].alive(2));
            // Its replica is still complete, but a lost peer is not in sync again until heard.
            let lost_at = events
                .iter()
                .position(|(at, e)| *at == 1 && *e == MeshEvent::PeerLost { node: 3 })
                .unwrap();
            assert!(
                !events[lost_at..]
                    .iter()
                    .any(|(at, e)| *at == 1 && *e == MeshEvent::PeerInSync { node: 3 }),
                "the loss was undone: {events:?}"
            );
            assert!(!nodes[0].in_sync(3));
            let members = [(1, nodes[0].local), (2, nodes[1].local)];
            nodes[0].set_peers(&members, Instant::now()).unwrap();
            assert_eq!(nodes[0].peers().collect::<Vec<_>>(), vec![2]);
            // Its copy stays until its ids are adopted (they may move after its record went).
            assert!(nodes[0].replica(3).is_some());
            assert_eq!(nodes[0].replica_nodes(), vec![2, 3]);
            let later = Instant::now() + DEPARTED_KEEP;
            nodes[0].prune_departed(later, |n| n == 3);
            assert!(nodes[0].replica(3).is_some(), "still owns ids");
            nodes[0].prune_departed(later, |_| false);
            assert!(nodes[0].replica(3).is_none());
            drop(third);
        });
    }

    #[test]
    fn a_node_with_another_key_is_heard_by_nobody() {
        rt().block_on(async {
            let other: &[u8] = b"another key, also 32 bytes long!";
            let mut nodes = mesh(3, &[KEY, KEY, other]);
            nodes[2]
                .feed()
                .publish(Record::upsert(TableId::NAT_SESSION, vec![9], vec![9]));
            run(&mut nodes, 200).await;
            assert!(nodes[0].alive(2) && !nodes[0].alive(3) && !nodes[2].alive(1));
            assert_eq!(nodes[0].replica(3).unwrap().total(), 0);
            let s = nodes[0].status();
            let about3 = s.iter().find(|p| p.node == 3).unwrap();
            assert!(about3.forged > 0 && about3.messages.1 == 0, "{about3:?}");
        });
    }

    #[test]
    fn datagrams_from_strangers_are_counted_and_dropped() {
        rt().block_on(async {
            let mut nodes = mesh(2, &[]);
            let e =
                nodes[0].on_datagram(b"hello", "127.0.0.9:5000".parse().unwrap(), Instant::now());
            assert!(e.is_empty());
            assert_eq!(nodes[0].counters().wrong_source, 1);
        });
    }
}
