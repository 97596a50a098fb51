//! The cluster driver (`[cluster]`, issue 16, seed 003): runs [`ClusterEngine`] on the control
//! loop against etcd ([`EtcdClient`]) and the other nodes ([`SyncMesh`]), and carries out its
//! actions on the data plane ([`ClusterPlane`]) and the NAT ([`NatRuntime`]).
//!
//! - **etcd.** Every request the engine asks for runs as a task; its result comes back on
//!   [`ClusterDriver::results`] and goes to the matching `on_*` of the engine. A request that
//!   times out (the client's own timeout) is "etcd unreachable" for the engine: it keeps its
//!   ids and proposes nothing. The cluster's keys are `/swrouter/<name>/members/<node-id>`
//!   (each under its node's lease) and `/swrouter/<name>/alloc` (the epoch table), watched as
//!   one prefix.
//! - **Sync.** The mesh carries every node's NAT sessions (the common table: our copy of each
//!   peer's) and the `CLUSTER` table: handover markers `release/<id>` and `took/<id>` (8-byte
//!   epoch) and the relayed id table `alloc`. Peer changes of other tables are only held in
//!   the mesh's replicas until an id is adopted.
//! - **Handover.** Actions run in order, but an id's actions wait while its NAT work is under
//!   way: `Release` waits until every worker has published its last records of the id and
//!   dropped its sessions (a [`NatBarrier`]) before the release marker goes out, and `Adopt`
//!   waits until the adopted sessions are installed before the id becomes `Owned`.
//!   `Plane{Foreign}` immediately followed by `Handed` for the same id is one hand-off (a
//!   `set_state(Foreign)` alone would drop the held frames).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::engine::{Marker, Revision};
use cluster::{Action, Allocation, ClusterEngine, EtcdRequest, Id, MemberRecord, PlaneState};
use hasync::{Record, TableId};
use nat::cluster::IdSet;
use serde::Serialize;
use tokio::sync::mpsc;

use super::etcd::{Cas, CasOutcome, EtcdClient, EtcdError, EventKind, WatchMessage};
use super::mesh::{MeshEvent, SyncMesh};
use crate::natd::{NatBarrier, NatRuntime};
use crate::tables::cluster::ClusterPlane;

/// An etcd result for the engine.
#[derive(Debug)]
pub enum EtcdResult {
    /// `lease/grant`.
    Granted(Result<i64, EtcdError>),
    /// The member key's create-if-absent txn: created or not.
    Registered(Result<bool, EtcdError>),
    /// The prefix range of `LoadAndWatch`: members, the table, and the revision to watch from.
    Loaded(Result<super::etcd::RangeResult, EtcdError>),
    /// `lease/keepalive`: the TTL left, `None` when the lease is gone.
    Keepalive(Result<Option<i64>, EtcdError>),
    /// The table's CAS.
    Cas(Result<CasOutcome, EtcdError>),
    /// A message of the prefix watch.
    Watch(WatchMessage),
    /// The prefix range of the join check: the `config` record and the members.
    ConfigRead(Result<super::etcd::RangeResult, EtcdError>),
    /// The `config` record's create or replace txn.
    ConfigWritten(Result<CasOutcome, EtcdError>),
}

/// Where the node is with the cluster's `config` record, before and after it joins.
#[derive(Debug, Clone, PartialEq, Eq)]
enum JoinState {
    /// Reading the record (and the members); the engine has not started.
    Checking,
    /// Creating (expected revision 0) or replacing the record.
    Writing(i64),
    /// Registered members run the recorded, different configuration: out, checked again.
    Refused(String),
    /// Joined: the engine runs.
    Joined,
}

/// How long a `config` record that no registered member runs must stay so before a node with
/// another configuration replaces it: longer than a lease, so the node that just created it
/// has registered (its member record then shows it runs the record).
const STALE_CONFIG_WAIT: Duration = Duration::from_secs(4);
/// How often a refused or failed join check is repeated.
const CONFIG_RECHECK: Duration = Duration::from_secs(1);

/// The cluster's `config` record and this node's standing with it (`swrouter cluster status`).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct ConfigStatus {
    /// `checking`, `writing`, `refused` or `joined`.
    pub state: String,
    /// This node's config digest (hex).
    pub digest: String,
    /// The digest the cluster's record names (hex), once read.
    pub cluster_digest: Option<String>,
    /// The node that wrote the record.
    pub written_by: Option<u32>,
    /// Why the node stays out, while refused.
    pub reason: Option<String>,
    /// Join checks made (reads of the record).
    pub checks: u64,
    /// Records this node created or replaced.
    pub written: u64,
}

/// Handover work waiting on the NAT workers.
#[derive(Debug)]
enum Pending {
    /// Workers publish and drop the id's sessions; then the release marker.
    Release { epoch: u64, done: Arc<NatBarrier> },
    /// Workers install the adopted sessions; then the id's later actions.
    Adopt {
        done: Arc<NatBarrier>,
        records: Vec<Record>,
    },
}

/// Counters of the driver.
#[derive(Debug, Default, Clone, Copy, Serialize, serde::Deserialize)]
pub struct DriverCounters {
    /// etcd requests started.
    pub etcd_requests: u64,
    /// Of which failed (unreachable, or an error answer).
    pub etcd_failures: u64,
    /// Markers published (release, took).
    pub markers_sent: u64,
    /// Markers and relayed tables received.
    pub markers_received: u64,
    /// Sessions adopted from the common table.
    pub sessions_adopted: u64,
    /// Sessions removed from the workers on releases and fences.
    pub sessions_released: u64,
    /// Peer records that did not decode (markers, tables, sessions).
    pub undecodable: u64,
    /// Adoptions the NAT could not take (its switch processor's queue was full).
    pub adoptions_failed: u64,
    /// Peers in sync whose config digest differs from ours (not counted heard).
    pub config_mismatches: u64,
    /// WCCP flows (flow affinity) adopted from the common table.
    pub flows_adopted: u64,
    /// Times the cluster's `config` record changed to another configuration while this node
    /// was a member (an operator's edit, or a node that replaced it).
    #[serde(default)]
    pub config_record_changes: u64,
}

/// The cluster driver.
pub struct ClusterDriver {
    engine: ClusterEngine,
    etcd: EtcdClient,
    mesh: SyncMesh,
    plane: Arc<ClusterPlane>,
    nat: Option<Arc<NatRuntime>>,
    port_min: u16,
    prefix: Vec<u8>,
    results_tx: mpsc::UnboundedSender<EtcdResult>,
    watch: Option<tokio::task::JoinHandle<()>>,
    /// Actions waiting behind an id's NAT work, per id, in order.
    deferred: BTreeMap<Id, VecDeque<Action>>,
    pending: BTreeMap<Id, Pending>,
    /// Sessions adopted per id, republished as ours on `Took`.
    adopted: BTreeMap<Id, Vec<Record>>,
    counters: DriverCounters,
    /// This node's [`config_digest`].
    config_digest: u64,
    /// The last epoch logged.
    logged_epoch: u64,
    /// WCCP flow affinity's adopted table (with `[[wccp]]`).
    affinity: Option<Arc<crate::tables::affinity::AffinitySync>>,
    /// The steering drain memory's sync state.
    drain: Option<Arc<crate::tables::steer::DrainSync>>,
    /// Standing with the cluster's `config` record.
    join: JoinState,
    /// When the next join check is due (not joined).
    join_check_at: Option<Instant>,
    /// The record last read or watched, with its mod revision.
    config_record: Option<(cluster::ConfigRecord, i64)>,
    /// A record no member runs: its mod revision and since when this node sees it so.
    stale_config: Option<(i64, Instant)>,
    /// Join checks made.
    config_checks: u64,
    /// Records this node wrote.
    config_written: u64,
}

impl std::fmt::Debug for ClusterDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterDriver")
            .field("me", &self.engine.me())
            .finish_non_exhaustive()
    }
}

/// How long one etcd request may take in all before etcd counts as unreachable (a request
/// to a cluster without quorum hangs for seconds).
pub const ETCD_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The etcd key prefix of cluster `name`.
pub fn key_prefix(name: &str) -> Vec<u8> {
    format!("/swrouter/{name}/").into_bytes()
}

/// The distribution-id hash key, derived from the cluster's shared key (every node has it, no
/// outsider does, so nobody outside can aim traffic at one node's ids).
pub fn hash_key(cluster_key: &[u8]) -> u64 {
    let mut words: Vec<u64> = nat::cluster::byte_words(cluster_key).collect();
    words.push(cluster_key.len() as u64);
    // The domain ("swrouter") keeps this hash apart from the ids' uses of the same function.
    nat::cluster::hash64(0x7377_726f_7574_6572, &words)
}

/// The digest of the configuration every member must share: the id geometry and the NAT's
/// rules and pools (a node that translates differently would make sessions the others cannot
/// adopt). Members are shown with theirs; a member with another digest is never counted heard.
pub fn config_digest(c: &conf::ClusterConf, nat: Option<&nat::config::Config>) -> u64 {
    let text = format!(
        "ids=256;mac={:?};ifaces={:?};nat={:?}",
        c.cluster_mac,
        c.interfaces,
        nat.map(|n| (&n.rules, n.port_min, n.port_max, n.workers, n.timeouts))
    );
    let words: Vec<u64> = nat::cluster::byte_words(text.as_bytes()).collect();
    nat::cluster::hash64(0x00d1_6e57, &words)
}

/// What a node starts its driver with besides its `[cluster]` section.
pub struct DriverStart {
    /// The cluster key (read from `key-file`).
    pub key: Vec<u8>,
    /// The feed the node's owners publish into.
    pub feed: crate::statesync::SyncFeed,
    /// The data plane.
    pub plane: Arc<ClusterPlane>,
    /// The NAT, if any.
    pub nat: Option<Arc<NatRuntime>>,
    /// The node's interface MACs by name (its member record: a handing-off node sends held
    /// frames there).
    pub macs: Vec<(String, netwire::MacAddr)>,
    /// [`config_digest`] of this node.
    pub config_digest: u64,
}

impl ClusterDriver {
    /// The driver `[cluster]` describes: binds the sync socket and makes the etcd client; the
    /// engine starts with [`Self::start`].
    pub fn from_conf(
        c: &conf::ClusterConf,
        start: DriverStart,
        now: Instant,
    ) -> anyhow::Result<(ClusterDriver, mpsc::UnboundedReceiver<EtcdResult>)> {
        let mesh = SyncMesh::bind(
            c.node_id,
            c.sync_local,
            start.key,
            super::mesh::MeshTiming {
                heartbeat: c.heartbeat,
                peer_timeout: c.peer_timeout,
            },
            start.feed,
        )?;
        let record = MemberRecord {
            weight: u16::try_from(c.weight).unwrap_or(u16::MAX),
            sync_addr: mesh.local(),
            start_epoch_us: mesh.epoch(),
            config_digest: start.config_digest,
            macs: start.macs,
        };
        let mut ecfg = cluster::EngineConfig::new(c.node_id, record);
        ecfg.lease_ttl = Duration::from_secs(u64::from(c.lease_ttl_s));
        ecfg.took_wait = c.handover_timeout;
        // Losses of one isolation arrive within about one heartbeat of each other.
        ecfg.removal_grace = c.heartbeat * 3;
        let engine = ClusterEngine::new(ecfg, now);
        let etcd = EtcdClient::new(
            c.etcd.iter().map(|a| format!("http://{a}")).collect(),
            ETCD_REQUEST_TIMEOUT,
        )
        .map_err(|e| anyhow::anyhow!("[cluster] etcd: {e}"))?;
        let (mut driver, rx) =
            ClusterDriver::new(engine, etcd, mesh, start.plane, start.nat, &c.name);
        driver.config_digest = start.config_digest;
        Ok((driver, rx))
    }

    /// A driver for node `engine` with its etcd client, mesh and data plane.
    pub fn new(
        engine: ClusterEngine,
        etcd: EtcdClient,
        mesh: SyncMesh,
        plane: Arc<ClusterPlane>,
        nat: Option<Arc<NatRuntime>>,
        name: &str,
    ) -> (ClusterDriver, mpsc::UnboundedReceiver<EtcdResult>) {
        let (results_tx, rx) = mpsc::unbounded_channel();
        let port_min = nat.as_ref().map(|n| n.cfg.port_min).unwrap_or(1024);
        (
            ClusterDriver {
                engine,
                etcd,
                mesh,
                plane,
                nat,
                port_min,
                prefix: key_prefix(name),
                results_tx,
                watch: None,
                deferred: BTreeMap::new(),
                pending: BTreeMap::new(),
                adopted: BTreeMap::new(),
                counters: DriverCounters::default(),
                config_digest: 0,
                logged_epoch: 0,
                affinity: None,
                drain: None,
                join: JoinState::Checking,
                join_check_at: None,
                config_record: None,
                stale_config: None,
                config_checks: 0,
                config_written: 0,
            },
            rx,
        )
    }

    /// The other state owners whose entries move with the ids: WCCP flow affinity (adopted
    /// per id) and the steering drain memory (kept from every node, see
    /// [`crate::tables::steer::DrainSync::apply_from_cluster`]).
    pub fn set_state_owners(
        &mut self,
        affinity: Option<Arc<crate::tables::affinity::AffinitySync>>,
        drain: Option<Arc<crate::tables::steer::DrainSync>>,
    ) {
        self.affinity = affinity;
        self.drain = drain;
    }

    /// The mesh (its socket for the control loop's receive arm).
    pub fn mesh(&self) -> &SyncMesh {
        &self.mesh
    }

    /// The engine.
    pub fn engine(&self) -> &ClusterEngine {
        &self.engine
    }

    /// The driver's counters.
    pub fn counters(&self) -> DriverCounters {
        self.counters
    }

    /// The member `node` runs our configuration (its record's digest is ours).
    fn same_config(&self, node: u32) -> bool {
        self.engine
            .member(node)
            .is_some_and(|m| m.config_digest == self.config_digest)
    }

    /// Starts: checks the cluster's `config` record; the engine (lease, registration, load
    /// and watch) starts once the node may join ([`cluster::config_gate`]).
    pub fn start(&mut self, _now: Instant) {
        self.join = JoinState::Checking;
        self.check_config();
    }

    /// True once the node passed the `config` record check and runs the engine.
    pub fn joined(&self) -> bool {
        self.join == JoinState::Joined
    }

    fn check_config(&mut self) {
        self.join_check_at = None;
        self.config_checks += 1;
        self.counters.etcd_requests += 1;
        let etcd = self.etcd.clone();
        let tx = self.results_tx.clone();
        let prefix = self.prefix.clone();
        tokio::spawn(async move {
            let _ = tx.send(EtcdResult::ConfigRead(etcd.range_prefix(&prefix).await));
        });
    }

    fn write_config(&mut self, expect_mod_revision: i64) {
        self.join = JoinState::Writing(expect_mod_revision);
        self.counters.etcd_requests += 1;
        let record = cluster::ConfigRecord {
            digest: self.config_digest,
            ids: cluster::id::IDS as u16,
            by: self.engine.me(),
            since_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
        .encode();
        let etcd = self.etcd.clone();
        let tx = self.results_tx.clone();
        let key = self.config_key();
        tokio::spawn(async move {
            let r = etcd
                .txn_cas(Cas {
                    key: &key,
                    expect_mod_revision,
                    value: record.as_bytes(),
                    lease: None,
                    fence: None,
                })
                .await;
            let _ = tx.send(EtcdResult::ConfigWritten(r));
        });
    }

    fn config_key(&self) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(b"config");
        k
    }

    /// The join check's range: decides with [`cluster::config_gate`].
    fn on_config_read(&mut self, range: &super::etcd::RangeResult, now: Instant) {
        let mut record = None;
        let mut digests = Vec::new();
        for kv in &range.kvs {
            let Some(rest) = kv.key.strip_prefix(self.prefix.as_slice()) else {
                continue;
            };
            let text = std::str::from_utf8(&kv.value).unwrap_or("");
            if rest == b"config" {
                record = Some((cluster::ConfigRecord::decode(text), kv.mod_revision));
            } else if member_id(rest).is_some() {
                if let Ok(m) = MemberRecord::decode(text) {
                    digests.push(m.config_digest);
                }
            }
        }
        self.config_record = record
            .as_ref()
            .and_then(|(r, rev)| r.as_ref().ok().map(|r| (r.clone(), *rev)));
        let gate = cluster::config_gate(
            self.config_digest,
            cluster::id::IDS as u16,
            record.as_ref().map(|(r, _)| r.as_ref().map_err(|_| ())),
            digests,
        );
        let revision = record.as_ref().map_or(0, |(_, rev)| *rev);
        match gate {
            cluster::ConfigGate::Join => self.join_now(now),
            cluster::ConfigGate::Create => self.write_config(0),
            cluster::ConfigGate::Replace => {
                let since = match self.stale_config {
                    Some((rev, since)) if rev == revision => since,
                    _ => {
                        self.stale_config = Some((revision, now));
                        now
                    }
                };
                if now.saturating_duration_since(since) >= STALE_CONFIG_WAIT {
                    tracing::warn!(
                        recorded = ?self.config_record.as_ref().map(|(r, _)| format!("{:016x}", r.digest)),
                        ours = format!("{:016x}", self.config_digest),
                        "cluster: no member runs the configuration the cluster's config record names; replacing it with this node's"
                    );
                    self.write_config(revision);
                } else {
                    self.refuse_join(
                        "the cluster's config record names another configuration; no member runs it any more, so this node replaces it once that has lasted 4 s".to_string(),
                        now,
                    );
                }
            }
            cluster::ConfigGate::Refuse { running } => {
                self.stale_config = None;
                self.refuse_join(
                    format!(
                        "this node's configuration (digest {:016x}) differs from the cluster's (digest {}), which {running} registered member(s) run: restart every node with the same [cluster] and [nat] sections; the cluster takes a new configuration once no member runs the old one",
                        self.config_digest,
                        self.config_record
                            .as_ref()
                            .map_or("unreadable".to_string(), |(r, _)| format!("{:016x}", r.digest))
                    ),
                    now,
                );
            }
        }
    }

    fn refuse_join(&mut self, reason: String, now: Instant) {
        if self.join != JoinState::Refused(reason.clone()) {
            tracing::error!("cluster: not joining: {reason}");
        }
        self.join = JoinState::Refused(reason);
        self.join_check_at = Some(now + CONFIG_RECHECK);
    }

    fn join_now(&mut self, now: Instant) {
        if self.join == JoinState::Joined {
            return;
        }
        tracing::info!(
            digest = format!("{:016x}", self.config_digest),
            "cluster: the cluster's config record matches this node's; joining"
        );
        self.join = JoinState::Joined;
        self.stale_config = None;
        self.engine.start(now);
        self.run_actions();
    }

    /// When [`Self::on_tick`] is due next: the mesh's timers, the engine's step, and a short
    /// poll while NAT work is under way.
    pub fn deadline(&self, now: Instant) -> Instant {
        if self.join != JoinState::Joined {
            return self
                .join_check_at
                .unwrap_or(now + Duration::from_millis(25));
        }
        let engine = now + Duration::from_millis(if self.pending.is_empty() { 25 } else { 2 });
        self.mesh.deadline().map_or(engine, |d| d.min(engine))
    }

    /// Timers: the mesh, the engine, NAT work that finished.
    pub fn on_tick(&mut self, now: Instant) {
        if self.join != JoinState::Joined {
            if self.join_check_at.is_some_and(|t| t <= now) {
                self.check_config();
            }
            return;
        }
        let events = self.mesh.on_tick(now);
        self.on_mesh_events(events, now);
        self.engine.tick(now);
        self.run_actions();
        self.finish_pending(now);
        let table = self.engine.allocation();
        self.mesh
            .prune_departed(now, |n| table.owners.contains(&Some(n)));
        self.pump(now);
    }

    /// Drains the feed into the mesh (after the owners published).
    pub fn pump(&mut self, now: Instant) {
        if self.mesh.pump_feed(now) {
            if let Some(nat) = &self.nat {
                nat.export_all();
            }
        }
    }

    /// A datagram of the mesh.
    pub fn on_datagram(&mut self, data: &[u8], from: std::net::SocketAddr, now: Instant) {
        let events = self.mesh.on_datagram(data, from, now);
        self.on_mesh_events(events, now);
        self.run_actions();
    }

    fn on_mesh_events(&mut self, events: Vec<MeshEvent>, now: Instant) {
        for e in events {
            match e {
                MeshEvent::PeerUp { .. } => {}
                MeshEvent::PeerInSync { node } => {
                    if self.same_config(node) {
                        self.engine.on_peer_heard(node, now)
                    } else {
                        self.counters.config_mismatches += 1;
                        tracing::error!(
                            node,
                            "cluster: member runs another configuration (its config digest differs from ours); it is not counted heard and gets no ids from this node's proposals"
                        );
                    }
                }
                MeshEvent::PeerLost { node } => self.engine.on_peer_lost(node, now),
                MeshEvent::Change { node, record } => {
                    if record.table == TableId::CLUSTER && record.op == hasync::Op::Upsert {
                        self.on_cluster_record(node, &record, now);
                    }
                    if record.table == TableId::STEERING_DRAIN {
                        if let Some(d) = &self.drain {
                            d.apply_from_cluster(&record);
                        }
                    }
                    // Other tables stay in the mesh's replica of `node` (the common table)
                    // until one of their ids is adopted.
                }
            }
        }
    }

    fn on_cluster_record(&mut self, node: u32, r: &Record, now: Instant) {
        self.counters.markers_received += 1;
        let key = String::from_utf8_lossy(&r.key);
        let epoch = || {
            <[u8; 8]>::try_from(r.value.as_slice())
                .ok()
                .map(u64::from_be_bytes)
        };
        let id = |s: &str| s.parse::<u8>().ok();
        let marker = if let Some(x) = key.strip_prefix("release/") {
            id(x)
                .zip(epoch())
                .map(|(id, epoch)| Marker::Release { id, epoch })
        } else if let Some(x) = key.strip_prefix("took/") {
            id(x)
                .zip(epoch())
                .map(|(id, epoch)| Marker::Took { id, epoch })
        } else if key == "alloc" {
            match Allocation::decode(&r.value) {
                Ok(t) => self.engine.on_relayed(node, t, now),
                Err(_) => self.counters.undecodable += 1,
            }
            return;
        } else {
            None
        };
        match marker {
            Some(m) => self.engine.on_marker(node, m, now),
            None => self.counters.undecodable += 1,
        }
    }

    /// An etcd result.
    pub fn on_etcd(&mut self, r: EtcdResult, now: Instant) {
        match r {
            EtcdResult::Granted(Ok(lease)) => self.engine.on_lease_granted(lease, now),
            EtcdResult::Registered(Ok(created)) => self.engine.on_registered(created, now),
            EtcdResult::Loaded(Ok(range)) => {
                for kv in &range.kvs {
                    self.on_kv_put(&kv.key, &kv.value, kv.mod_revision, now);
                }
                self.start_watch(range.revision + 1);
            }
            EtcdResult::Keepalive(Ok(Some(_))) => self.engine.on_keepalive_ok(now),
            EtcdResult::Keepalive(Ok(None)) => self.engine.on_lease_gone(now),
            EtcdResult::Cas(Ok(CasOutcome::Succeeded { revision })) => {
                self.engine.on_cas_committed(revision, now)
            }
            EtcdResult::Cas(Ok(CasOutcome::Failed { current, .. })) => {
                let current = current.and_then(|kv| {
                    Allocation::decode(&kv.value)
                        .ok()
                        .map(|t| (t, kv.mod_revision as Revision))
                });
                self.engine.on_cas_failed(current, now)
            }
            EtcdResult::Watch(m) => self.on_watch(m, now),
            EtcdResult::ConfigRead(Ok(range)) => self.on_config_read(&range, now),
            EtcdResult::ConfigWritten(Ok(CasOutcome::Succeeded { .. })) => {
                self.config_written += 1;
                tracing::info!(
                    digest = format!("{:016x}", self.config_digest),
                    replaced = matches!(self.join, JoinState::Writing(r) if r != 0),
                    "cluster: wrote the cluster's config record"
                );
                self.join_now(now);
            }
            // Another node wrote it first: read again.
            EtcdResult::ConfigWritten(Ok(CasOutcome::Failed { .. })) => self.check_config(),
            EtcdResult::ConfigRead(Err(e)) | EtcdResult::ConfigWritten(Err(e)) => {
                self.counters.etcd_failures += 1;
                tracing::warn!(error = %e, "cluster: etcd request of the join check failed; retrying");
                self.join_check_at = Some(now + CONFIG_RECHECK);
                if matches!(self.join, JoinState::Writing(_)) {
                    self.join = JoinState::Checking;
                }
            }
            EtcdResult::Granted(Err(e))
            | EtcdResult::Registered(Err(e))
            | EtcdResult::Loaded(Err(e))
            | EtcdResult::Keepalive(Err(e))
            | EtcdResult::Cas(Err(e)) => {
                self.counters.etcd_failures += 1;
                // An unknown lease is a gone lease; anything else counts as etcd unreachable
                // for now (the engine retries).
                if matches!(&e, EtcdError::Status { code, .. } if *code == super::etcd::GRPC_NOT_FOUND)
                {
                    self.engine.on_lease_gone(now);
                } else {
                    tracing::warn!(error = %e, "cluster: etcd request failed");
                    self.engine.on_etcd_timeout(now);
                }
            }
        }
        self.run_actions();
    }

    fn on_watch(&mut self, m: WatchMessage, now: Instant) {
        match m {
            WatchMessage::Events { events, .. } => {
                for e in events {
                    match e.kind {
                        EventKind::Put => {
                            self.on_kv_put(&e.kv.key, &e.kv.value, e.kv.mod_revision, now)
                        }
                        EventKind::Delete => self.on_kv_delete(&e.kv.key, now),
                    }
                }
            }
            WatchMessage::Reconnecting { error, resume_from } => {
                tracing::warn!(%error, resume_from, "cluster: etcd watch reconnecting");
            }
            WatchMessage::Compacted { compact_revision } => {
                tracing::warn!(
                    compact_revision,
                    "cluster: etcd watch compacted; loading again"
                );
                self.request(EtcdRequest::LoadAndWatch);
            }
        }
    }

    fn on_kv_put(&mut self, key: &[u8], value: &[u8], mod_revision: i64, now: Instant) {
        let me = self.engine.me();
        let Some(rest) = key.strip_prefix(self.prefix.as_slice()) else {
            return;
        };
        if rest == b"config" {
            let text = std::str::from_utf8(value).unwrap_or("");
            match cluster::ConfigRecord::decode(text) {
                Ok(r) => {
                    if self.join == JoinState::Joined && r.digest != self.config_digest {
                        self.counters.config_record_changes += 1;
                        tracing::error!(
                            recorded = format!("{:016x}", r.digest),
                            ours = format!("{:016x}", self.config_digest),
                            by = r.by,
                            "cluster: the cluster's config record now names another configuration; this node keeps its ids (restart it with the cluster's configuration)"
                        );
                    }
                    self.config_record = Some((r, mod_revision));
                }
                Err(e) => {
                    self.counters.undecodable += 1;
                    tracing::warn!(error = %e, "cluster: the config record in etcd does not decode");
                }
            }
        } else if rest == b"alloc" {
            match Allocation::decode(value) {
                Ok(t) => {
                    self.plane.set_epoch(t.epoch);
                    self.engine.on_alloc(t, mod_revision, now)
                }
                Err(e) => {
                    self.counters.undecodable += 1;
                    tracing::warn!(error = %e, "cluster: the id table in etcd does not decode");
                }
            }
        } else if let Some(node) = member_id(rest) {
            match std::str::from_utf8(value)
                .ok()
                .and_then(|s| MemberRecord::decode(s).ok())
            {
                Some(rec) => {
                    let in_sync = node != me && self.mesh.in_sync(node);
                    self.engine.on_member_put(node, rec, now);
                    self.follow_members(now);
                    // A peer restarted with another configuration is no longer heard; one
                    // whose record now matches (and is in sync) is.
                    if in_sync {
                        if self.same_config(node) {
                            self.engine.on_peer_heard(node, now);
                        } else {
                            self.engine.on_peer_lost(node, now);
                        }
                    }
                }
                None => self.counters.undecodable += 1,
            }
        }
    }

    fn on_kv_delete(&mut self, key: &[u8], now: Instant) {
        let Some(rest) = key.strip_prefix(self.prefix.as_slice()) else {
            return;
        };
        if let Some(node) = member_id(rest) {
            self.engine.on_member_delete(node, now);
            self.follow_members(now);
        }
    }

    /// The mesh follows the member list (every member but this node).
    fn follow_members(&mut self, now: Instant) {
        let me = self.engine.me();
        let peers: Vec<(u32, SocketAddrV4)> = self
            .engine
            .members()
            .filter(|(n, _)| *n != me)
            .map(|(n, r)| (n, r.sync_addr))
            .collect();
        if let Err(e) = self.mesh.set_peers(&peers, now) {
            tracing::error!(error = %e, "cluster: sync mesh");
        }
    }

    fn start_watch(&mut self, from: i64) {
        if let Some(t) = self.watch.take() {
            t.abort();
        }
        let mut watch = self.etcd.watch_prefix(&self.prefix, from);
        let tx = self.results_tx.clone();
        self.watch = Some(tokio::spawn(async move {
            while let Some(m) = watch.next().await {
                if tx.send(EtcdResult::Watch(m)).is_err() {
                    break;
                }
            }
        }));
    }

    fn member_key(&self, node: u32) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(format!("members/{node}").as_bytes());
        k
    }

    fn alloc_key(&self) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(b"alloc");
        k
    }

    /// Starts an etcd request as a task; its result comes back on the results channel.
    fn request(&mut self, req: EtcdRequest) {
        self.counters.etcd_requests += 1;
        let etcd = self.etcd.clone();
        let tx = self.results_tx.clone();
        let prefix = self.prefix.clone();
        let member_key = self.member_key(self.engine.me());
        let alloc_key = self.alloc_key();
        tokio::spawn(async move {
            let r = match req {
                EtcdRequest::Grant { ttl } => EtcdResult::Granted(
                    etcd.lease_grant(ttl.as_secs().max(2) as i64)
                        .await
                        .map(|g| g.id),
                ),
                EtcdRequest::Register { lease, record } => EtcdResult::Registered(
                    etcd.txn_cas(Cas {
                        key: &member_key,
                        expect_mod_revision: 0,
                        value: record.as_bytes(),
                        lease: Some(lease),
                        fence: None,
                    })
                    .await
                    .map(|o| matches!(o, CasOutcome::Succeeded { .. })),
                ),
                EtcdRequest::LoadAndWatch => EtcdResult::Loaded(etcd.range_prefix(&prefix).await),
                EtcdRequest::Keepalive { lease } => {
                    EtcdResult::Keepalive(etcd.lease_keepalive(lease).await)
                }
                EtcdRequest::Cas {
                    expect_mod_revision,
                    lease,
                    value,
                } => EtcdResult::Cas(
                    etcd.txn_cas(Cas {
                        key: &alloc_key,
                        expect_mod_revision,
                        value: &value,
                        lease: None,
                        fence: Some((&member_key, lease)),
                    })
                    .await,
                ),
            };
            let _ = tx.send(r);
        });
    }

    /// Carries out the engine's actions, in order, deferring an id's actions behind its NAT
    /// work.
    fn run_actions(&mut self) {
        let table = self.engine.allocation();
        if table.epoch != self.logged_epoch {
            self.logged_epoch = table.epoch;
            let s = self.engine.status();
            tracing::info!(
                epoch = table.epoch,
                committed_by = table.committed_by,
                members = table.members.len(),
                owned = table.count(self.engine.me()),
                gained = s.last_realloc.as_ref().map_or(0, |r| r.gained),
                lost = s.last_realloc.as_ref().map_or(0, |r| r.lost),
                "cluster: id table in force"
            );
        }
        let actions: Vec<Action> = self.engine.take_actions();
        for (i, a) in actions.iter().enumerate() {
            // `Plane{Foreign}` right before `Handed` of the same id is the hand-off itself.
            if let Action::Plane {
                id,
                state: PlaneState::Foreign,
            } = a
            {
                if matches!(actions.get(i + 1), Some(Action::Handed { id: h, .. }) if h == id) {
                    continue;
                }
            }
            self.act(a.clone());
        }
    }

    fn act(&mut self, a: Action) {
        if let Some(id) = action_id(&a) {
            if self.pending.contains_key(&id) {
                self.deferred.entry(id).or_default().push_back(a);
                return;
            }
        }
        match a {
            Action::Etcd(req) => {
                if let EtcdRequest::Cas { value, .. } = &req {
                    if let Ok(t) = Allocation::decode(value) {
                        tracing::info!(
                            epoch = t.epoch,
                            members = ?t.members.iter().map(|m| m.node).collect::<Vec<_>>(),
                            "cluster: proposing an id table"
                        );
                    }
                }
                self.request(req)
            }
            Action::Plane { id, state } => self.plane.set_state(id, state),
            Action::Release { id, epoch } => match &self.nat {
                Some(nat) => {
                    let ids = [id].into_iter().collect::<IdSet>();
                    // ESP sessions are shared by the workers: dropped here, at once (their
                    // records were published when they were created or learnt).
                    if let Some(key) = nat.cfg.cluster_key {
                        self.counters.sessions_released += nat.esp.drop_ids(key, &ids) as u64;
                    }
                    let done = nat.drop_ids(ids);
                    self.pending.insert(id, Pending::Release { epoch, done });
                }
                None => self.publish_marker("release", id, epoch),
            },
            Action::Adopt { id, from } => self.adopt(id, from),
            Action::Took { id, epoch } => {
                for r in self.adopted.remove(&id).unwrap_or_default() {
                    self.mesh.feed().publish(r);
                }
                self.publish_marker("took", id, epoch);
            }
            Action::Handed { id, to } => {
                if to != self.engine.me() {
                    let macs = self
                        .engine
                        .member(to)
                        .map(|m| {
                            m.macs
                                .iter()
                                .map(|(n, mac)| (n.clone(), *mac))
                                .collect::<Vec<_>>()
                        })
                        .unwrap_or_default();
                    self.plane.hand_off(id, &macs);
                }
                self.publish_deletes(id);
            }
            Action::Relay(table) => self.mesh.feed().publish(Record::upsert(
                TableId::CLUSTER,
                b"alloc".to_vec(),
                table.encode(),
            )),
            Action::Fence => {
                self.plane.fence();
                if let Some(nat) = &self.nat {
                    let all: IdSet = (0..=255u8).collect();
                    if let Some(key) = nat.cfg.cluster_key {
                        nat.esp.drop_ids(key, &all);
                    }
                    let done = nat.drop_ids(all);
                    // Nothing waits on a fence: the ids are gone everywhere at once.
                    drop(done);
                }
                self.pending.clear();
                self.deferred.clear();
                self.adopted.clear();
            }
        }
    }

    /// Moves the id's sessions from the common table into the workers.
    fn adopt(&mut self, id: Id, from: Option<u32>) {
        let me = self.engine.me();
        let records = {
            let pick = |r: &hasync::Replica| self.records_of(r, id);
            let mut got = match from {
                Some(n) if n == me => pick(self.mesh.published()),
                Some(n) => self.mesh.replica(n).map(pick).unwrap_or_default(),
                None => Vec::new(),
            };
            if got.is_empty() {
                for n in self.mesh.replica_nodes() {
                    if let Some(r) = self.mesh.replica(n) {
                        got = pick(r);
                        if !got.is_empty() {
                            break;
                        }
                    }
                }
            }
            got
        };
        self.adopt_affinity(id, from);
        self.counters.sessions_adopted += records.len() as u64;
        let nat = match (&self.nat, records.is_empty()) {
            (Some(nat), false) => nat.clone(),
            _ => {
                self.adopted.insert(id, records);
                return;
            }
        };
        // ESP sessions go straight into the shared ESP table; the others to their workers
        // (each decoder refuses the other's records: they differ in the protocol octet).
        let now_s = nat.secs(Instant::now());
        let mut sessions = Vec::new();
        for r in &records {
            if let Ok(s) = nat::sync::decode_esp(&r.key, &r.value) {
                nat.esp.install(&s, now_s);
            } else if let Ok(s) = nat::sync::decode(&r.key, &r.value) {
                sessions.push(s);
            }
        }
        match nat.adopt(sessions) {
            Some(done) => {
                self.pending.insert(id, Pending::Adopt { done, records });
            }
            None => {
                // The switch processor is far behind: nothing placed; the id's packets will
                // make new sessions (counted as a failed adoption).
                tracing::warn!(
                    id,
                    "cluster: NAT switch queue full; sessions of the id not adopted"
                );
                self.counters.adoptions_failed += 1;
                self.adopted.insert(id, records);
            }
        }
    }

    /// Moves the id's WCCP flows from the common table (every peer's copy) into the adopted
    /// table, where the worker that sees a flow next takes it.
    fn adopt_affinity(&mut self, id: Id, from: Option<u32>) {
        let (Some(affinity), Some(idcfg)) = (&self.affinity, self.plane.id_config()) else {
            return;
        };
        let now = Instant::now();
        let me = self.engine.me();
        let mut sources: Vec<&hasync::Replica> = Vec::new();
        if from == Some(me) {
            sources.push(self.mesh.published());
        }
        sources.extend(
            self.mesh
                .replica_nodes()
                .into_iter()
                .filter_map(|n| self.mesh.replica(n)),
        );
        let mut adopted = 0u64;
        for r in sources {
            for rec in affinity_records_of(r, idcfg, id) {
                adopted += u64::from(affinity.adopt_from_cluster(&rec, now));
            }
        }
        self.counters.flows_adopted += adopted;
    }

    /// The `NAT_SESSION` records of `replica` whose outside port carries `id` (ESP sessions:
    /// whose remote's [`nat::cluster::esp_id`] is `id`).
    fn records_of(&self, replica: &hasync::Replica, id: Id) -> Vec<Record> {
        let key = self.nat.as_ref().and_then(|n| n.cfg.cluster_key);
        replica
            .iter(TableId::NAT_SESSION)
            .filter(|(k, v)| {
                if nat::sync::key_proto(k) == Some(nat::esp::PROTO_ESP) {
                    return key.is_some_and(|key| {
                        nat::sync::decode_esp(k, v)
                            .is_ok_and(|s| nat::cluster::esp_id(key, s.remote) == id)
                    });
                }
                nat::sync::decode(k, v)
                    .is_ok_and(|s| nat::cluster::id_of_port(self.port_min, s.outside_port) == id)
            })
            .map(|(k, v)| Record::upsert(TableId::NAT_SESSION, k.to_vec(), v.to_vec()))
            .collect()
    }

    /// Deletes of this node's published records of `id` (the new owner publishes them now).
    fn publish_deletes(&mut self, id: Id) {
        let deletes: Vec<Record> = self
            .records_of(self.mesh.published(), id)
            .into_iter()
            .map(|r| Record::delete(TableId::NAT_SESSION, r.key))
            .collect();
        for r in deletes {
            self.mesh.feed().publish(r);
        }
    }

    fn publish_marker(&mut self, kind: &str, id: Id, epoch: u64) {
        self.counters.markers_sent += 1;
        self.mesh.feed().publish(Record::upsert(
            TableId::CLUSTER,
            format!("{kind}/{id}").into_bytes(),
            epoch.to_be_bytes().to_vec(),
        ));
    }

    /// Finishes the NAT work that completed and runs what waited behind it.
    fn finish_pending(&mut self, now: Instant) {
        let done: Vec<Id> = self
            .pending
            .iter()
            .filter(|(_, p)| match p {
                Pending::Release { done, .. } | Pending::Adopt { done, .. } => done.is_done(),
            })
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            match self.pending.remove(&id) {
                Some(Pending::Release { epoch, done }) => {
                    self.counters.sessions_released +=
                        done.dropped.load(std::sync::atomic::Ordering::Relaxed);
                    // The workers' last records are in the feed: the marker goes after them.
                    self.pump(now);
                    self.publish_marker("release", id, epoch);
                }
                Some(Pending::Adopt { records, .. }) => {
                    self.adopted.insert(id, records);
                }
                None => {}
            }
            let waiting = self.deferred.remove(&id).unwrap_or_default();
            for a in waiting {
                self.act(a);
            }
        }
    }

    /// What `swrouter cluster status` shows.
    pub fn status(&self, now: Instant) -> ClusterNodeStatus {
        let s = self.engine.status();
        let secs_since =
            |t: Option<Instant>| t.map(|t| now.saturating_duration_since(t).as_secs_f64());
        let table = self.engine.allocation();
        ClusterNodeStatus {
            node: self.engine.me(),
            epoch: s.epoch,
            committed_by: s.committed_by,
            owners: table.owners.to_vec(),
            owned: s.owned.len(),
            owned_ids: s.owned.clone(),
            releasing: s.releasing.clone(),
            awaiting: s.awaiting.clone(),
            registration: format!("{:?}", s.registration),
            etcd_reachable: s.etcd_reachable,
            etcd_unreachable_secs: secs_since(s.etcd_unreachable_since),
            fenced: s.fenced,
            fences: s.fences,
            realloc_refused: s.realloc_refused,
            refuse_reason: s.refuse_reason.clone(),
            proposer: s.proposer,
            members: s
                .members
                .iter()
                .map(|m| MemberStatus {
                    node: m.node,
                    weight: m.weight,
                    heard: m.heard,
                    in_epoch: m.in_epoch,
                    ids: m.ids,
                    same_config: m.node == self.engine.me() || self.same_config(m.node),
                })
                .collect(),
            cas_sent: s.cas_sent,
            cas_committed: s.cas_committed,
            cas_lost: s.cas_lost,
            keepalives: s.keepalives,
            release_timeouts: s.release_timeouts,
            took_timeouts: s.took_timeouts,
            last_commit_secs: secs_since(s.last_commit),
            last_realloc: s.last_realloc.as_ref().map(|r| ReallocStatus {
                epoch: r.epoch,
                gained: r.gained,
                lost: r.lost,
                applied_secs: now.saturating_duration_since(r.applied).as_secs_f64(),
                duration_ms: r
                    .finished
                    .map(|f| f.saturating_duration_since(r.applied).as_secs_f64() * 1e3),
                cas_round_trips: r.cas_round_trips,
            }),
            pending_nat_work: self.pending.len(),
            driver: self.counters,
            etcd: self.etcd.stats(),
            mesh: self.mesh.status(),
            config: ConfigStatus {
                state: match &self.join {
                    JoinState::Checking => "checking",
                    JoinState::Writing(_) => "writing",
                    JoinState::Refused(_) => "refused",
                    JoinState::Joined => "joined",
                }
                .to_string(),
                digest: format!("{:016x}", self.config_digest),
                cluster_digest: self
                    .config_record
                    .as_ref()
                    .map(|(r, _)| format!("{:016x}", r.digest)),
                written_by: self.config_record.as_ref().map(|(r, _)| r.by),
                reason: match &self.join {
                    JoinState::Refused(r) => Some(r.clone()),
                    _ => None,
                },
                checks: self.config_checks,
                written: self.config_written,
            },
        }
    }
}

/// The answer to `cluster status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ClusterStatusReply {
    /// The driver's view: membership, the epoch table, etcd, the sync mesh.
    pub node: ClusterNodeStatus,
    /// The data plane's: ids by state, frames to the cluster MAC by fate.
    pub plane: crate::tables::cluster::ClusterStatus,
}

/// A member in `swrouter cluster status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct MemberStatus {
    /// Its node id.
    pub node: u32,
    /// Its share weight.
    pub weight: u16,
    /// Heard on the sync channel (in sync, same configuration).
    pub heard: bool,
    /// A member of the epoch in force.
    pub in_epoch: bool,
    /// Ids it owns in the current epoch.
    pub ids: usize,
    /// Its config digest is ours.
    pub same_config: bool,
}

/// The last reallocation this node took part in.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ReallocStatus {
    /// Its epoch.
    pub epoch: u64,
    /// Ids this node gained.
    pub gained: usize,
    /// Ids this node lost.
    pub lost: usize,
    /// Seconds since this node applied it.
    pub applied_secs: f64,
    /// From applying it to the last of its moves done here; `None` while moves are under way.
    pub duration_ms: Option<f64>,
    /// CAS round trips this node spent on it (0 unless it proposed).
    pub cas_round_trips: u32,
}

/// The node's part of `swrouter cluster status`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ClusterNodeStatus {
    /// This node's id.
    pub node: u32,
    /// The epoch of the table in force.
    pub epoch: u64,
    /// Who committed it.
    pub committed_by: u32,
    /// The table in force: the owner of each of the 256 ids.
    pub owners: Vec<Option<u32>>,
    /// Ids this node owns (handles).
    pub owned: usize,
    /// Which.
    pub owned_ids: Vec<u8>,
    /// Ids moving away (held).
    pub releasing: Vec<u8>,
    /// Ids waiting for their old owner's release.
    pub awaiting: Vec<u8>,
    /// Lease and member record state.
    pub registration: String,
    /// etcd answered the last request.
    pub etcd_reachable: bool,
    /// Seconds since etcd last answered, while it does not.
    pub etcd_unreachable_secs: Option<f64>,
    /// The node dropped its ids (lease lost, or isolated).
    pub fenced: bool,
    /// Times fenced.
    pub fences: u64,
    /// Reallocations refused (etcd unreachable, no quorum).
    pub realloc_refused: u64,
    /// Why the last one was refused.
    pub refuse_reason: Option<String>,
    /// This node proposes tables.
    pub proposer: bool,
    /// The members.
    pub members: Vec<MemberStatus>,
    /// Table CASes sent.
    pub cas_sent: u64,
    /// Of which committed.
    pub cas_committed: u64,
    /// Of which lost to another proposer.
    pub cas_lost: u64,
    /// Lease keepalives sent.
    pub keepalives: u64,
    /// Gained ids adopted without the old owner's release marker.
    pub release_timeouts: u64,
    /// Lost ids whose new owner's took marker was late.
    pub took_timeouts: u64,
    /// Seconds since this node last committed a table.
    pub last_commit_secs: Option<f64>,
    /// The last reallocation.
    pub last_realloc: Option<ReallocStatus>,
    /// Ids whose NAT work is under way.
    pub pending_nat_work: usize,
    /// The driver's counters.
    pub driver: DriverCounters,
    /// The etcd client's counters.
    pub etcd: super::etcd::EtcdStats,
    /// The sync mesh, per peer.
    pub mesh: Vec<super::mesh::MeshPeerStatus>,
    /// The cluster's `config` record and this node's standing with it.
    #[serde(default)]
    pub config: ConfigStatus,
}

/// `swrouter cluster status` as text.
pub fn render(c: &ClusterStatusReply) -> String {
    use std::fmt::Write;
    let n = &c.node;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "node {}  epoch {} (committed by {})  ids owned {}  releasing {}  awaiting {}{}{}",
        n.node,
        n.epoch,
        n.committed_by,
        n.owned,
        n.releasing.len(),
        n.awaiting.len(),
        if n.proposer { "  proposer" } else { "" },
        if n.fenced { "  FENCED" } else { "" },
    );
    let _ = writeln!(
        o,
        "etcd: {}  registration {}  keepalives {}  requests {} (round trips {}, failed {})  CAS sent {} committed {} lost {}",
        match (n.etcd_reachable, n.etcd_unreachable_secs) {
            (true, _) => "reachable".to_string(),
            (false, Some(s)) => format!("UNREACHABLE for {s:.1}s"),
            (false, None) => "not reached yet".to_string(),
        },
        n.registration,
        n.keepalives,
        n.etcd.requests,
        n.etcd.round_trips,
        n.driver.etcd_failures,
        n.cas_sent,
        n.cas_committed,
        n.cas_lost
    );
    let _ = writeln!(
        o,
        "config: {}  digest {}  cluster {}{}",
        n.config.state,
        n.config.digest,
        n.config.cluster_digest.as_deref().unwrap_or("-"),
        n.config
            .written_by
            .map_or(String::new(), |b| format!(" (written by node {b})")),
    );
    if let Some(r) = &n.config.reason {
        let _ = writeln!(o, "NOT JOINED: {r}");
    }
    if n.realloc_refused > 0 || n.refuse_reason.is_some() {
        let _ = writeln!(
            o,
            "reallocations refused: {}  {}",
            n.realloc_refused,
            n.refuse_reason
                .as_deref()
                .map_or(String::new(), |r| format!("pending: {r}"))
        );
    }
    if let Some(r) = &n.last_realloc {
        let _ = writeln!(
            o,
            "last reallocation: epoch {}  gained {} lost {}  {} ago  took {}  CAS round trips {}",
            r.epoch,
            r.gained,
            r.lost,
            format_args!("{:.1}s", r.applied_secs),
            r.duration_ms
                .map_or("(moves under way)".to_string(), |d| format!("{d:.1} ms")),
            r.cas_round_trips
        );
    }
    let _ = writeln!(o, "members:");
    for m in &n.members {
        let peer = n.mesh.iter().find(|p| p.node == m.node);
        let _ = writeln!(
            o,
            "  {:>5}  weight {:>4}  ids {:>3}  {}{}{}{}",
            m.node,
            m.weight,
            m.ids,
            if m.node == n.node {
                "this node"
            } else if m.heard {
                "heard"
            } else {
                "NOT HEARD"
            },
            if m.in_epoch {
                ""
            } else {
                "  (not in the epoch)"
            },
            if m.same_config {
                ""
            } else {
                "  CONFIG DIFFERS"
            },
            peer.map_or(String::new(), |p| format!(
                "  sync {} {}  entries {}  lag {}  forged {}",
                p.addr,
                if p.alive { "alive" } else { "lost" },
                p.entries,
                p.lag_messages,
                p.forged
            )),
        );
    }
    let d = &n.driver;
    let _ = writeln!(
        o,
        "handover: markers sent {} received {}  sessions adopted {} released {}  adoptions failed {}  release timeouts {}  took timeouts {}",
        d.markers_sent,
        d.markers_received,
        d.sessions_adopted,
        d.sessions_released,
        d.adoptions_failed,
        n.release_timeouts,
        n.took_timeouts
    );
    crate::status::render_cluster(&mut o, &c.plane);
    o
}

/// The `AFFINITY` records of `replica` whose flow (client to server, TCP: affinity is
/// remembered from a SYN) has distribution id `id`.
fn affinity_records_of(
    replica: &hasync::Replica,
    idcfg: &cluster::IdConfig,
    id: Id,
) -> Vec<Record> {
    replica
        .iter(TableId::AFFINITY)
        .filter(|(k, _)| {
            crate::tables::affinity::decode_key(k).is_ok_and(|f| {
                cluster::id::flow_id(
                    idcfg,
                    crate::wire::ipv4::PROTO_TCP,
                    (std::net::Ipv4Addr::from(f.src), f.sport),
                    (std::net::Ipv4Addr::from(f.dst), f.dport),
                ) == id
            })
        })
        .map(|(k, v)| Record::upsert(TableId::AFFINITY, k.to_vec(), v.to_vec()))
        .collect()
}

/// The node id of a `members/<id>` key (relative to the prefix).
fn member_id(rest: &[u8]) -> Option<u32> {
    std::str::from_utf8(rest.strip_prefix(b"members/")?)
        .ok()?
        .parse()
        .ok()
}

/// The id an action is about, if any (actions of an id run in order behind its NAT work).
fn action_id(a: &Action) -> Option<Id> {
    match a {
        Action::Plane { id, .. }
        | Action::Release { id, .. }
        | Action::Adopt { id, .. }
        | Action::Took { id, .. }
        | Action::Handed { id, .. } => Some(*id),
        Action::Etcd(_) | Action::Relay(_) | Action::Fence => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_key_depends_on_every_key_byte() {
        let key = b"0123456789abcdef0123456789abcdef".to_vec();
        let k = hash_key(&key);
        for i in 0..key.len() {
            let mut other = key.clone();
            other[i] ^= 1;
            assert_ne!(hash_key(&other), k, "byte {i}");
        }
        assert_eq!(
            hash_key(&key),
            k,
            "deterministic: every node derives the same"
        );
    }

    #[test]
    fn affinity_flows_are_selected_by_their_packets_id() {
        use crate::tables::affinity::{upsert_record, FlowId, FlowTarget};
        use std::net::Ipv4Addr;
        let idcfg = cluster::IdConfig {
            inside: vec![cluster::Prefix {
                addr: Ipv4Addr::new(10, 0, 1, 0),
                len: 24,
            }],
            ..cluster::IdConfig::routed(0x1234_5678_9abc_def0)
        };
        let mut replica = hasync::Replica::new();
        let (client, server) = (Ipv4Addr::new(10, 0, 1, 10), Ipv4Addr::new(192, 0, 2, 80));
        let mut ids = Vec::new();
        for sport in 40000..40064u16 {
            let flow = FlowId::new(0, client, server, sport, 80);
            replica.apply(
                upsert_record(&flow, FlowTarget::Cache(Ipv4Addr::new(10, 0, 3, 2))).as_ref(),
            );
            // The id the cluster stage computes for the flow's first packet.
            let mut pkt = vec![0u8; 40];
            pkt[0] = 0x45;
            pkt[2..4].copy_from_slice(&40u16.to_be_bytes());
            pkt[8] = 64;
            pkt[9] = 6;
            pkt[12..16].copy_from_slice(&client.octets());
            pkt[16..20].copy_from_slice(&server.octets());
            pkt[20..22].copy_from_slice(&sport.to_be_bytes());
            pkt[22..24].copy_from_slice(&80u16.to_be_bytes());
            pkt[32] = 0x50;
            ids.push(cluster::packet_id(&idcfg, &pkt, false).unwrap());
        }
        let id = ids[0];
        let picked = affinity_records_of(&replica, &idcfg, id);
        let expected = ids.iter().filter(|i| **i == id).count();
        assert_eq!(picked.len(), expected);
        assert!(picked.iter().all(|r| r.table == TableId::AFFINITY));
        let other = (0..=255u8).find(|i| !ids.contains(i)).unwrap();
        assert!(affinity_records_of(&replica, &idcfg, other).is_empty());
    }

    #[test]
    fn the_config_digest_tells_nat_pools_apart_over_all_64_bits() {
        let digest = |pool: u8| {
            let text = format!(
                "[[interface]]\nname = \"eth0\"\naddress = \"10.0.1.1/24\"\n\
                 [[interface]]\nname = \"eth1\"\naddress = \"10.0.2.1/24\"\n\
                 [nat]\n[[nat.rule]]\ninside = [\"10.0.1.0/24\"]\noutside = \"eth1\"\npool = [\"10.0.2.{pool}\"]\n\
                 [cluster]\nname = \"edge\"\nnode-id = 1\netcd = [\"http://10.8.0.100:2379\"]\n\
                 sync-local = \"10.8.0.1:7788\"\nkey-file = \"/k\"\n\
                 [[cluster.interface]]\nname = \"eth0\"\naddresses = [\"10.0.1.254\"]\n"
            );
            let conf = conf::parse_str("t.conf", &text).unwrap();
            config_digest(conf.cluster.as_ref().unwrap(), conf.nat.config.as_ref())
        };
        let all: std::collections::BTreeSet<u64> = (100..164).map(digest).collect();
        assert_eq!(all.len(), 64, "every pool its own digest");
        assert_eq!(
            digest(100),
            digest(100),
            "the same configuration, the same digest"
        );
        assert!(
            all.iter().any(|d| (d >> 8) & 0xff_ffff != 0) && all.iter().any(|d| d >> 40 != 0),
            "the digest spreads over all its bits"
        );
    }

    #[test]
    fn member_keys_parse() {
        assert_eq!(member_id(b"members/7"), Some(7));
        assert_eq!(member_id(b"members/x"), None);
        assert_eq!(member_id(b"alloc"), None);
        assert_eq!(key_prefix("edge"), b"/swrouter/edge/".to_vec());
    }
}
