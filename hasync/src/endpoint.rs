//! One end of a sync channel: a reliable, authenticated, replay-protected stream of records to
//! the peer, and the replica of the peer's stream. See the crate documentation for the rules.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::record::{Record, RecordError, RecordRef, Records, TableId};
use crate::replay::{ReplayError, ReplayWindow};
use crate::replica::Replica;
use crate::wire::{
    encode_body, parse_body, parse_frame, push_nack_range, Auth, Body, Header, Kind, FLAG_ACK,
    HEADER_LEN, MAX_TAG_LEN, MIN_TAG_LEN, NACK_RANGE_LEN,
};

/// Default largest message: a 1500-byte MTU less the IPv4 and UDP headers.
pub const DEFAULT_MAX_MESSAGE: usize = 1472;
/// Smallest configurable message size.
pub const MIN_MAX_MESSAGE: usize = 256;
/// Shortest shared key accepted.
pub const MIN_KEY_LEN: usize = 16;
/// Bytes a Data payload spends before its records (sequence, count).
const DATA_PREFIX: usize = 10;
/// Bytes a ResyncChunk payload spends before its records (sequence, id, progress, count).
const CHUNK_PREFIX: usize = 22;

/// Settings of one endpoint.
#[derive(Clone)]
pub struct Config {
    /// This endpoint's id (the router's node id; a pseudo-standby uses its own).
    pub local_id: u32,
    /// The only sender accepted.
    pub peer_id: u32,
    /// This run's epoch: nonzero, and larger after every restart (e.g. UNIX time in
    /// microseconds at start), so the peer recognises a restart and refuses older runs' packets.
    pub epoch: u64,
    /// The shared HMAC-SHA256 key (at least 16 bytes; 32 random bytes recommended).
    pub key: Vec<u8>,
    /// Tag length in bytes, 16..=32 (both ends must agree).
    pub tag_len: usize,
    /// Largest message in bytes, header and tag included (256..=65535).
    pub max_message: usize,
    /// Sequenced messages kept for resending; a full queue starts over with a bulk resync.
    pub resend_queue: usize,
    /// Oldest unacknowledged message allowed before the peer counts as too far behind.
    pub max_lag: Duration,
    /// How far ahead of the next expected sequence out-of-order messages are buffered.
    pub reorder_window: u64,
    /// Anti-replay window in packets (rounded up to a multiple of 64).
    pub replay_window: usize,
    /// Acknowledge after this many in-order messages ...
    pub ack_every: u32,
    /// ... or this long after the first unacknowledged one.
    pub ack_delay: Duration,
    /// Repeat a NACK for gaps still open after this long.
    pub nack_retry: Duration,
    /// Ignore a NACK for a message resent less than this long ago (the resend is on its way;
    /// must stay below `nack_retry`).
    pub resend_holdoff: Duration,
    /// Heartbeat when nothing else was sent for this long and nothing is unacknowledged.
    pub heartbeat_interval: Duration,
    /// Heartbeat this soon while messages are unacknowledged (detects a lost tail).
    pub tail_probe: Duration,
    /// The peer counts as lost after this long without a valid message.
    pub peer_timeout: Duration,
    /// Resync chunks in flight (unacknowledged) at most: the bulk transfer yields to live data.
    pub resync_window: u64,
    /// Repeat a resync request after this long without a ResyncBegin.
    pub resync_retry: Duration,
    /// Ask the peer for a bulk resync on join, on its restart and after lost messages.
    pub request_resync: bool,
    /// Log every change to the replica for [`Endpoint::poll_change`] (a router that applies
    /// the peer's state as it arrives); off, the replica is only read on demand.
    pub report_changes: bool,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Config")
            .field("local_id", &self.local_id)
            .field("peer_id", &self.peer_id)
            .field("epoch", &self.epoch)
            .field("tag_len", &self.tag_len)
            .field("max_message", &self.max_message)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Defaults for a UDP link on a 1500-byte MTU.
    pub fn new(local_id: u32, peer_id: u32, epoch: u64, key: impl Into<Vec<u8>>) -> Config {
        Config {
            local_id,
            peer_id,
            epoch,
            key: key.into(),
            tag_len: 16,
            max_message: DEFAULT_MAX_MESSAGE,
            resend_queue: 4096,
            max_lag: Duration::from_secs(10),
            reorder_window: 4096,
            replay_window: 1024,
            ack_every: 16,
            ack_delay: Duration::from_millis(10),
            nack_retry: Duration::from_millis(50),
            resend_holdoff: Duration::from_millis(10),
            heartbeat_interval: Duration::from_millis(250),
            tail_probe: Duration::from_millis(50),
            peer_timeout: Duration::from_secs(3),
            resync_window: 64,
            resync_retry: Duration::from_millis(500),
            request_resync: true,
            report_changes: false,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.key.len() < MIN_KEY_LEN {
            return Err(ConfigError::KeyTooShort(self.key.len()));
        }
        if !(MIN_TAG_LEN..=MAX_TAG_LEN).contains(&self.tag_len) {
            return Err(ConfigError::TagLen(self.tag_len));
        }
        if !(MIN_MAX_MESSAGE..=usize::from(u16::MAX)).contains(&self.max_message) {
            return Err(ConfigError::MaxMessage(self.max_message));
        }
        if self.local_id == self.peer_id {
            return Err(ConfigError::SameId(self.local_id));
        }
        if self.epoch == 0 {
            return Err(ConfigError::ZeroEpoch);
        }
        if self.resend_queue == 0 || self.reorder_window == 0 || self.resync_window == 0 {
            return Err(ConfigError::ZeroWindow);
        }
        // Bounded so deadline arithmetic on `Instant` cannot overflow.
        let limit = Duration::from_secs(86_400);
        for (name, d) in [
            ("max-lag", self.max_lag),
            ("ack-delay", self.ack_delay),
            ("nack-retry", self.nack_retry),
            ("resend-holdoff", self.resend_holdoff),
            ("heartbeat-interval", self.heartbeat_interval),
            ("tail-probe", self.tail_probe),
            ("peer-timeout", self.peer_timeout),
            ("resync-retry", self.resync_retry),
        ] {
            if (d.is_zero() && name != "resend-holdoff") || d > limit {
                return Err(ConfigError::Duration(name));
            }
        }
        Ok(())
    }

    fn max_payload(&self) -> usize {
        self.max_message - HEADER_LEN - self.tag_len
    }

    /// The longest record (wire length) that fits in one message.
    pub fn max_record_len(&self) -> usize {
        self.max_payload() - CHUNK_PREFIX.max(DATA_PREFIX)
    }
}

/// Settings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The key is too short to be a secret.
    #[error("sync key is {0} bytes, at least {MIN_KEY_LEN} are needed (use 32 random bytes)")]
    KeyTooShort(usize),
    /// Tag length outside 16..=32.
    #[error("sync tag length {0} is outside {MIN_TAG_LEN}..={MAX_TAG_LEN}")]
    TagLen(usize),
    /// Message size out of range.
    #[error("sync message size {0} is outside {MIN_MAX_MESSAGE}..=65535")]
    MaxMessage(usize),
    /// Both ends have the same id: reflected packets could not be told apart.
    #[error("sync local id and peer id are both {0}; they must differ")]
    SameId(u32),
    /// Epoch 0 is reserved for "no epoch".
    #[error("sync epoch must be nonzero")]
    ZeroEpoch,
    /// A queue or window of size 0.
    #[error("sync resend queue, reorder window and resync window must be nonzero")]
    ZeroWindow,
    /// A timer of zero or more than a day.
    #[error("sync {0} must be between 1 ns and 24 h (resend-holdoff may be 0)")]
    Duration(&'static str),
}

/// Why a received message was refused (each is counted in [`RejectCounters`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Reject {
    /// Not a well-formed message.
    #[error("malformed sync message")]
    Malformed,
    /// The tag does not verify: wrong key or altered in transit.
    #[error("sync message failed authentication")]
    Forged,
    /// Its packet number was accepted before.
    #[error("replayed sync message")]
    Replayed,
    /// Its packet number is below the anti-replay window.
    #[error("sync message too old for the replay window")]
    TooOld,
    /// From an earlier run of the peer.
    #[error("sync message from an earlier epoch of the peer")]
    StaleEpoch,
    /// From a sender other than the configured peer (or reflected back to us).
    #[error("sync message from an unexpected sender")]
    WrongSender,
}

/// Rejected messages by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RejectCounters {
    /// [`Reject::Malformed`].
    pub malformed: u64,
    /// [`Reject::Forged`].
    pub forged: u64,
    /// [`Reject::Replayed`].
    pub replayed: u64,
    /// [`Reject::TooOld`].
    pub too_old: u64,
    /// [`Reject::StaleEpoch`].
    pub stale_epoch: u64,
    /// [`Reject::WrongSender`].
    pub wrong_sender: u64,
}

impl RejectCounters {
    fn count(&mut self, r: Reject) {
        let c = match r {
            Reject::Malformed => &mut self.malformed,
            Reject::Forged => &mut self.forged,
            Reject::Replayed => &mut self.replayed,
            Reject::TooOld => &mut self.too_old,
            Reject::StaleEpoch => &mut self.stale_epoch,
            Reject::WrongSender => &mut self.wrong_sender,
        };
        *c += 1;
    }

    /// All rejects.
    pub fn total(&self) -> u64 {
        self.malformed
            + self.forged
            + self.replayed
            + self.too_old
            + self.stale_epoch
            + self.wrong_sender
    }
}

/// Traffic and reliability counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Messages handed out by `poll_transmit`.
    pub messages_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Messages accepted.
    pub messages_received: u64,
    /// Their bytes.
    pub bytes_received: u64,
    /// Records accepted by `publish`.
    pub records_published: u64,
    /// Sequenced messages sent again (NACKed).
    pub resends: u64,
    /// Ack-only messages sent.
    pub acks_sent: u64,
    /// Ack-only messages received.
    pub acks_received: u64,
    /// NACKs sent.
    pub nacks_sent: u64,
    /// NACKs received.
    pub nacks_received: u64,
    /// Heartbeats (and hellos) sent.
    pub heartbeats_sent: u64,
    /// Live records applied to the replica.
    pub records_applied: u64,
    /// Sequenced messages received again (already applied or buffered).
    pub duplicates: u64,
    /// Sequenced messages too far ahead to buffer (they are NACKed later).
    pub beyond_window: u64,
    /// Times the peer's floor passed our position: messages lost for good, resync needed.
    pub stream_jumps: u64,
    /// Times our resend queue was dropped (full, or the peer too far behind).
    pub queue_overflows: u64,
    /// Resync requests sent.
    pub resync_requests_sent: u64,
    /// Bulk resyncs we sent to the end.
    pub resyncs_sent: u64,
    /// Bulk resyncs we received to the end (the replica was exact at that point).
    pub resyncs_completed: u64,
    /// Snapshot records skipped because a live update of the same key came first.
    pub resync_superseded: u64,
    /// Snapshot records skipped because they cannot fit in a message.
    pub resync_oversize: u64,
}

/// Progress of a bulk resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResyncProgress {
    /// The resync's id.
    pub id: u32,
    /// Records sent (sender) or received (receiver).
    pub done: u64,
    /// Records in the snapshot.
    pub total: u64,
}

/// Everything the router shows about the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Our id.
    pub local_id: u32,
    /// Our epoch.
    pub epoch: u64,
    /// The peer's id.
    pub peer_id: u32,
    /// The peer's epoch, once heard.
    pub peer_epoch: Option<u64>,
    /// A valid message arrived within the peer timeout.
    pub peer_alive: bool,
    /// Time since the last valid message.
    pub peer_last_heard: Option<Duration>,
    /// The replica is exact up to the last applied message (a resync completed and nothing was
    /// lost since).
    pub in_sync: bool,
    /// Sequenced messages sent and not acknowledged.
    pub unacked: u64,
    /// Their bytes (message bodies).
    pub unacked_bytes: u64,
    /// Age of the oldest of them.
    pub oldest_unacked: Option<Duration>,
    /// Our next sequence number.
    pub next_seq: u64,
    /// Next sequence expected from the peer.
    pub expected: Option<u64>,
    /// Out-of-order messages buffered.
    pub reorder_buffered: usize,
    /// Messages known missing (between the expected one and the peer's last sent).
    pub missing: u64,
    /// A resync we are sending.
    pub resync_sending: Option<ResyncProgress>,
    /// A resync we are receiving.
    pub resync_receiving: Option<ResyncProgress>,
    /// We are waiting for the peer to begin a resync.
    pub resync_wanted: bool,
    /// Entries in the replica.
    pub replica_entries: usize,
    /// Counters.
    pub counters: Counters,
    /// Rejects by reason.
    pub rejects: RejectCounters,
}

/// Why the sender needs a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotReason {
    /// The peer asked (joined, restarted, or lost messages).
    PeerRequest,
    /// Our resend queue was full: the peer cannot be brought up to date message by message.
    Overflow,
    /// The peer has acknowledged nothing for longer than `max_lag`.
    Lag,
}

/// Things the router acts on, from [`Endpoint::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The peer was heard; `new_epoch` when it is its first message or the peer restarted.
    PeerUp {
        /// The peer's epoch.
        epoch: u64,
        /// First contact or a restart (a resync is requested).
        new_epoch: bool,
    },
    /// Nothing valid from the peer for `peer_timeout`.
    PeerLost,
    /// Call [`Endpoint::start_resync`] with a snapshot of the local state.
    SnapshotNeeded {
        /// Why.
        reason: SnapshotReason,
    },
    /// The peer began sending us a snapshot.
    ResyncStarted {
        /// Its id.
        id: u32,
        /// Records announced.
        total: u64,
    },
    /// The snapshot is complete: the replica equals the peer's state.
    ResyncCompleted {
        /// Its id.
        id: u32,
        /// Snapshot records received.
        records: u64,
        /// Stale entries swept.
        removed: u64,
    },
    /// Messages from the peer were lost for good; the replica is inexact until a resync.
    OutOfSync,
}

struct Slot {
    kind: Kind,
    body: Vec<u8>,
    first_sent: Option<Instant>,
    last_sent: Option<Instant>,
    resend_queued: bool,
}

struct ResyncTx {
    id: u32,
    source: Box<dyn Iterator<Item = Record> + Send>,
    total: u64,
    sent: u64,
    carry: Option<Record>,
}

/// Our outgoing stream.
struct TxStream {
    /// Sequence of `queue[0]`: the floor.
    base: u64,
    queue: VecDeque<Slot>,
    next_unsent: u64,
    resend: VecDeque<u64>,
    pending: Vec<u8>,
    pending_count: u16,
    resync: Option<ResyncTx>,
    last_begin: Option<u64>,
    snapshot_pending: bool,
    resync_ids: u32,
    free: Vec<Vec<u8>>,
}

impl TxStream {
    fn next_seq(&self) -> u64 {
        self.base + self.queue.len() as u64
    }

    fn buffer(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_default()
    }

    fn recycle(&mut self, mut b: Vec<u8>) {
        if self.free.len() < 256 {
            b.clear();
            self.free.push(b);
        }
    }

    /// Drops every unacknowledged message: the floor moves to the next sequence.
    fn drop_unacked(&mut self) {
        while let Some(slot) = self.queue.pop_front() {
            self.base += 1;
            self.recycle(slot.body);
        }
        self.next_unsent = self.base;
        self.resend.clear();
    }
}

struct ResyncRx {
    id: u32,
    total: u64,
    received: u64,
    mark: u32,
    /// Keys updated live since the Begin: their snapshot records are older and skipped.
    live: HashMap<TableId, HashSet<Vec<u8>>>,
}

/// The peer's stream as we receive it.
struct RxStream {
    epoch: u64,
    replay: ReplayWindow,
    expected: u64,
    /// One past the highest sequence the peer is known to have sent.
    peer_next: u64,
    reorder: BTreeMap<u64, (Kind, Vec<u8>)>,
    resync: Option<ResyncRx>,
    in_sync: bool,
    want_resync: bool,
    last_request: Option<Instant>,
    ack_owed: u32,
    ack_since: Option<Instant>,
    ack_now: bool,
    nacked_upto: u64,
    last_nack: Option<Instant>,
}

impl RxStream {
    fn missing(&self) -> u64 {
        (self.peer_next.saturating_sub(self.expected)).saturating_sub(self.reorder.len() as u64)
    }
}

/// One end of the channel. Drive it with [`handle`](Endpoint::handle) (received messages),
/// [`on_tick`](Endpoint::on_tick) at [`next_deadline`](Endpoint::next_deadline), and drain
/// [`poll_transmit`](Endpoint::poll_transmit) and [`poll_event`](Endpoint::poll_event) after
/// each.
pub struct Endpoint {
    cfg: Config,
    auth: Auth,
    now: Instant,
    next_packet: u64,
    tx: TxStream,
    rx: Option<RxStream>,
    replica: Replica,
    events: VecDeque<Event>,
    stats: Counters,
    rejects: RejectCounters,
    hello_due: bool,
    heartbeat_now: bool,
    last_tx: Option<Instant>,
    peer_last_rx: Option<Instant>,
    peer_alive: bool,
    body: Vec<u8>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A new endpoint; its first message is a Hello.
    pub fn new(cfg: Config, now: Instant) -> Result<Endpoint, ConfigError> {
        cfg.validate()?;
        let mut replica = Replica::new();
        replica.log_changes(cfg.report_changes);
        Ok(Endpoint {
            auth: Auth::new(&cfg.key, cfg.tag_len),
            cfg,
            now,
            next_packet: 1,
            tx: TxStream {
                base: 0,
                queue: VecDeque::new(),
                next_unsent: 0,
                resend: VecDeque::new(),
                pending: Vec::new(),
                pending_count: 0,
                resync: None,
                last_begin: None,
                snapshot_pending: false,
                resync_ids: 0,
                free: Vec::new(),
            },
            rx: None,
            replica,
            events: VecDeque::new(),
            stats: Counters::default(),
            rejects: RejectCounters::default(),
            hello_due: true,
            heartbeat_now: false,
            last_tx: None,
            peer_last_rx: None,
            peer_alive: false,
            body: Vec::new(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The mirror of the peer's state.
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// True when the replica is exact (see [`Status::in_sync`]).
    pub fn in_sync(&self) -> bool {
        self.rx.as_ref().is_some_and(|rx| rx.in_sync)
    }

    /// The next event for the router.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The oldest change to the replica not yet taken, with [`Config::report_changes`]: what
    /// the router applies to its standby copy of the peer's state (a resync's sweep comes out
    /// as deletes). Take them after every [`Self::handle`].
    pub fn poll_change(&mut self) -> Option<Record> {
        self.replica.take_change()
    }

    // ---- sending records ----

    /// Queues one live record for the peer. Records are batched into Data messages; a message
    /// is closed when full or at the next `poll_transmit`/`flush`.
    pub fn publish(&mut self, rec: RecordRef<'_>) -> Result<(), RecordError> {
        rec.check()?;
        let max = self.cfg.max_record_len();
        if rec.wire_len() > max {
            return Err(RecordError::TooLarge {
                len: rec.wire_len(),
                max,
            });
        }
        if self.tx.pending_count > 0
            && (self.tx.pending.len() + rec.wire_len() > self.cfg.max_payload()
                || self.tx.pending_count == u16::MAX)
        {
            self.flush();
        }
        if self.tx.pending_count == 0 {
            let mut b = self.tx.buffer();
            b.extend_from_slice(&[0; DATA_PREFIX]);
            self.tx.pending = b;
        }
        rec.encode(&mut self.tx.pending);
        self.tx.pending_count += 1;
        self.stats.records_published += 1;
        Ok(())
    }

    /// Closes the Data message under construction, so it is sent at the next `poll_transmit`.
    pub fn flush(&mut self) {
        if self.tx.pending_count == 0 {
            return;
        }
        let count = self.tx.pending_count;
        let mut body = std::mem::take(&mut self.tx.pending);
        body[8..10].copy_from_slice(&count.to_be_bytes());
        self.tx.pending_count = 0;
        self.push_sequenced(Kind::Data, body);
    }

    /// Starts a bulk resync from `snapshot` (the local state now; records published after this
    /// call supersede it on the receiver). Aborts a resync in progress.
    pub fn start_resync<I>(&mut self, snapshot: I, now: Instant)
    where
        I: IntoIterator<Item = Record>,
        I::IntoIter: ExactSizeIterator + Send + 'static,
    {
        self.now = now;
        let source = snapshot.into_iter();
        let total = source.len() as u64;
        self.flush();
        self.tx.resync = None;
        self.tx.snapshot_pending = false;
        if self.tx.queue.len() >= self.cfg.resend_queue {
            // The snapshot supersedes everything unacknowledged.
            self.tx.drop_unacked();
            self.stats.queue_overflows += 1;
        }
        self.tx.resync_ids = self.tx.resync_ids.wrapping_add(1);
        let id = self.tx.resync_ids;
        let mut body = self.tx.buffer();
        body.extend_from_slice(&[0; 8]);
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&total.to_be_bytes());
        let seq = self.push_sequenced(Kind::ResyncBegin, body);
        self.tx.last_begin = Some(seq);
        self.tx.resync = Some(ResyncTx {
            id,
            source: Box::new(source),
            total,
            sent: 0,
            carry: None,
        });
    }

    /// Appends a sequenced message (its first 8 bytes are filled with the sequence).
    fn push_sequenced(&mut self, kind: Kind, mut body: Vec<u8>) -> u64 {
        if self.tx.queue.len() >= self.cfg.resend_queue {
            self.overflow(SnapshotReason::Overflow);
        }
        let seq = self.tx.next_seq();
        body[..8].copy_from_slice(&seq.to_be_bytes());
        self.tx.queue.push_back(Slot {
            kind,
            body,
            first_sent: None,
            last_sent: None,
            resend_queued: false,
        });
        seq
    }

    /// The peer cannot be caught up message by message: drop the queue (the floor tells the peer)
    /// and ask the router for a snapshot if the peer is there to take it.
    fn overflow(&mut self, reason: SnapshotReason) {
        self.tx.drop_unacked();
        self.tx.resync = None;
        self.stats.queue_overflows += 1;
        if self.peer_alive && !self.tx.snapshot_pending {
            self.tx.snapshot_pending = true;
            self.events.push_back(Event::SnapshotNeeded { reason });
        }
    }

    /// Builds the next resync message into the queue; false when there is none.
    fn produce_resync(&mut self) -> bool {
        let Some(mut rs) = self.tx.resync.take() else {
            return false;
        };
        let max_payload = self.cfg.max_payload();
        let max_record = self.cfg.max_record_len();
        let mut body = self.tx.buffer();
        body.extend_from_slice(&[0; CHUNK_PREFIX]);
        let mut count: u16 = 0;
        let mut exhausted = false;
        while count < u16::MAX {
            let Some(rec) = rs.carry.take().or_else(|| rs.source.next()) else {
                exhausted = true;
                break;
            };
            let r = rec.as_ref();
            if r.check().is_err() || r.wire_len() > max_record {
                self.stats.resync_oversize += 1;
                continue;
            }
            if body.len() + r.wire_len() > max_payload {
                rs.carry = Some(rec);
                break;
            }
            r.encode(&mut body);
            count += 1;
        }
        if count > 0 {
            rs.sent += u64::from(count);
            body[8..12].copy_from_slice(&rs.id.to_be_bytes());
            body[12..20].copy_from_slice(&rs.sent.to_be_bytes());
            body[20..22].copy_from_slice(&count.to_be_bytes());
            let id = rs.id;
            self.tx.resync = Some(rs);
            self.push_sequenced(Kind::ResyncChunk, body);
            // An overflow while pushing aborted this resync; keep it aborted.
            if self.tx.resync.as_ref().is_some_and(|r| r.id != id) {
                self.tx.resync = None;
            }
            return true;
        }
        debug_assert!(exhausted || rs.carry.is_some());
        body.truncate(8);
        body.extend_from_slice(&rs.id.to_be_bytes());
        body.extend_from_slice(&rs.sent.to_be_bytes());
        self.stats.resyncs_sent += 1;
        self.push_sequenced(Kind::ResyncEnd, body);
        true
    }

    // ---- receiving ----

    /// Handles one received message (a datagram, or a frame from [`crate::Deframer`]).
    /// A refused message changes nothing but its reject counter.
    pub fn handle(&mut self, msg: &[u8], now: Instant) -> Result<(), Reject> {
        self.now = now;
        match self.handle_inner(msg, now) {
            Ok(()) => {
                self.stats.messages_received += 1;
                self.stats.bytes_received += msg.len() as u64;
                Ok(())
            }
            Err(r) => {
                self.rejects.count(r);
                Err(r)
            }
        }
    }

    fn handle_inner(&mut self, msg: &[u8], now: Instant) -> Result<(), Reject> {
        let frame = parse_frame(msg).map_err(|_| Reject::Malformed)?;
        let h = frame.header;
        if usize::from(h.tag_len) != self.auth.tag_len() {
            return Err(Reject::Malformed);
        }
        if h.sender != self.cfg.peer_id {
            return Err(Reject::WrongSender);
        }
        if !self.auth.verify(&frame) {
            return Err(Reject::Forged);
        }
        let new_epoch = match &self.rx {
            Some(rx) if h.epoch < rx.epoch => return Err(Reject::StaleEpoch),
            Some(rx) => h.epoch > rx.epoch,
            None => true,
        };
        let body = parse_body(h.kind, frame.payload).map_err(|_| Reject::Malformed)?;
        if h.epoch == 0
            || h.floor > h.next_seq
            || body.seq().is_some_and(|s| s >= h.next_seq || s < h.floor)
            || (h.flags & FLAG_ACK == 0 && (h.ack != 0 || h.peer_epoch != 0))
        {
            return Err(Reject::Malformed);
        }
        if new_epoch {
            self.new_peer_stream(&h, now);
        }
        let Some(rx) = self.rx.as_mut() else {
            return Err(Reject::Malformed);
        };
        rx.replay.accept(h.packet).map_err(|e| match e {
            ReplayError::Replayed => Reject::Replayed,
            ReplayError::TooOld => Reject::TooOld,
        })?;

        // Accepted: authentic, fresh, well-formed.
        self.peer_last_rx = Some(now);
        if !self.peer_alive {
            self.peer_alive = true;
            if !new_epoch {
                self.events.push_back(Event::PeerUp {
                    epoch: h.epoch,
                    new_epoch: false,
                });
            }
        }
        if h.flags & FLAG_ACK != 0 && h.peer_epoch == self.cfg.epoch {
            self.on_ack(h.ack);
        }
        self.on_position(h.floor, h.next_seq, now);
        match body {
            Body::Hello => self.heartbeat_now = true,
            Body::Heartbeat => {
                if let Some(rx) = self.rx.as_mut() {
                    rx.ack_now = true;
                }
            }
            Body::Ack => self.stats.acks_received += 1,
            Body::Nack(ranges) => {
                self.stats.nacks_received += 1;
                for (from, to) in ranges.iter() {
                    self.on_nack(from, to, now);
                }
            }
            Body::ResyncRequest { from_seq } => self.on_resync_request(from_seq),
            Body::Data { seq, .. }
            | Body::ResyncBegin { seq, .. }
            | Body::ResyncChunk { seq, .. }
            | Body::ResyncEnd { seq, .. } => {
                self.on_sequenced(seq, h.kind, body, frame.payload, now)
            }
        }
        Ok(())
    }

    fn new_peer_stream(&mut self, h: &Header, now: Instant) {
        let restarted = self.rx.is_some();
        let (in_sync_before, resync_before) = self
            .rx
            .as_ref()
            .map_or((false, false), |rx| (rx.in_sync, rx.resync.is_some()));
        self.rx = Some(RxStream {
            epoch: h.epoch,
            replay: ReplayWindow::new(self.cfg.replay_window),
            expected: h.floor,
            peer_next: h.floor,
            reorder: BTreeMap::new(),
            resync: None,
            in_sync: false,
            want_resync: self.cfg.request_resync,
            last_request: None,
            ack_owed: 0,
            ack_since: None,
            ack_now: true,
            nacked_upto: h.floor,
            last_nack: None,
        });
        // A restarted peer starts its request ids and streams afresh.
        self.tx.snapshot_pending = false;
        self.tx.last_begin = None;
        self.peer_alive = true;
        self.peer_last_rx = Some(now);
        self.heartbeat_now = true;
        if restarted && (in_sync_before || resync_before) {
            self.events.push_back(Event::OutOfSync);
        }
        self.events.push_back(Event::PeerUp {
            epoch: h.epoch,
            new_epoch: true,
        });
    }

    fn on_ack(&mut self, ack: u64) {
        if ack > self.tx.next_unsent {
            return; // Acknowledges what we never sent: ignore.
        }
        while self.tx.base < ack {
            let Some(slot) = self.tx.queue.pop_front() else {
                break;
            };
            self.tx.base += 1;
            self.tx.recycle(slot.body);
        }
    }

    fn on_nack(&mut self, from: u64, to: u64, now: Instant) {
        if from < self.tx.base {
            // Asks for what we no longer have: our floor (sent at once) tells the peer.
            self.heartbeat_now = true;
        }
        let lo = from.max(self.tx.base);
        let hi = to.min(self.tx.next_unsent);
        for seq in lo..hi {
            let slot = &mut self.tx.queue[(seq - self.tx.base) as usize];
            let recent = slot
                .last_sent
                .is_some_and(|t| now < t + self.cfg.resend_holdoff);
            if !slot.resend_queued && !recent {
                slot.resend_queued = true;
                self.tx.resend.push_back(seq);
            }
        }
    }

    fn on_resync_request(&mut self, from_seq: u64) {
        if self.tx.last_begin.is_some_and(|b| b >= from_seq) {
            return; // A resync the peer has not reached yet already answers it.
        }
        if !self.tx.snapshot_pending {
            self.tx.snapshot_pending = true;
            self.events.push_back(Event::SnapshotNeeded {
                reason: SnapshotReason::PeerRequest,
            });
        }
    }

    /// The peer's stream position from any message's header.
    fn on_position(&mut self, floor: u64, next_seq: u64, now: Instant) {
        let Some(rx) = self.rx.as_mut() else { return };
        rx.peer_next = rx.peer_next.max(next_seq);
        if floor > rx.expected {
            // Messages below the floor will never come: skip them and resync.
            rx.reorder = rx.reorder.split_off(&floor);
            rx.expected = floor;
            rx.nacked_upto = rx.nacked_upto.max(floor);
            self.stats.stream_jumps += 1;
            if rx.in_sync || rx.resync.is_some() {
                self.events.push_back(Event::OutOfSync);
            }
            rx.in_sync = false;
            rx.resync = None;
            rx.want_resync = self.cfg.request_resync;
            rx.last_request = None;
            self.drain_reorder(now);
        }
    }

    fn on_sequenced(&mut self, seq: u64, kind: Kind, body: Body<'_>, payload: &[u8], now: Instant) {
        let Some(rx) = self.rx.as_mut() else { return };
        if seq < rx.expected {
            self.stats.duplicates += 1;
            rx.ack_now = true; // Our ack was probably lost.
            return;
        }
        if seq > rx.expected {
            if seq - rx.expected >= self.cfg.reorder_window {
                self.stats.beyond_window += 1;
            } else {
                match rx.reorder.entry(seq) {
                    std::collections::btree_map::Entry::Occupied(_) => self.stats.duplicates += 1,
                    std::collections::btree_map::Entry::Vacant(v) => {
                        v.insert((kind, payload.to_vec()));
                    }
                }
            }
            return;
        }
        self.apply(body);
        self.advance(now);
        self.drain_reorder(now);
    }

    fn advance(&mut self, now: Instant) {
        if let Some(rx) = self.rx.as_mut() {
            rx.expected += 1;
            rx.ack_owed += 1;
            rx.ack_since.get_or_insert(now);
        }
    }

    fn drain_reorder(&mut self, now: Instant) {
        loop {
            let Some(rx) = self.rx.as_mut() else { return };
            let Some((kind, payload)) = rx.reorder.remove(&rx.expected) else {
                return;
            };
            // Validated when it arrived.
            if let Ok(body) = parse_body(kind, &payload) {
                self.apply(body);
            }
            self.advance(now);
        }
    }

    /// Applies one in-order sequenced message to the replica.
    fn apply(&mut self, body: Body<'_>) {
        let Some(rx) = self.rx.as_mut() else { return };
        match body {
            Body::Data { records, .. } => {
                for r in records.iter() {
                    if let Some(rs) = rx.resync.as_mut() {
                        rs.live.entry(r.table).or_default().insert(r.key.to_vec());
                        self.replica.apply_marked(r, rs.mark);
                    } else {
                        self.replica.apply(r);
                    }
                    self.stats.records_applied += 1;
                }
            }
            Body::ResyncBegin {
                resync_id, total, ..
            } => {
                rx.resync = Some(ResyncRx {
                    id: resync_id,
                    total,
                    received: 0,
                    mark: self.replica.next_mark(),
                    live: HashMap::new(),
                });
                rx.want_resync = false;
                self.events.push_back(Event::ResyncStarted {
                    id: resync_id,
                    total,
                });
            }
            Body::ResyncChunk {
                resync_id, records, ..
            } => {
                let Some(rs) = rx.resync.as_mut().filter(|rs| rs.id == resync_id) else {
                    return;
                };
                apply_chunk(&mut self.replica, rs, records, &mut self.stats);
            }
            Body::ResyncEnd { resync_id, .. } => {
                let Some(rs) = rx.resync.take_if_id(resync_id) else {
                    return;
                };
                let removed = self.replica.sweep(rs.mark);
                rx.in_sync = true;
                self.stats.resyncs_completed += 1;
                self.events.push_back(Event::ResyncCompleted {
                    id: rs.id,
                    records: rs.received,
                    removed,
                });
            }
            Body::Hello
            | Body::Heartbeat
            | Body::Ack
            | Body::Nack(_)
            | Body::ResyncRequest { .. } => {}
        }
    }

    // ---- timers and output ----

    /// Handles timers: peer loss and a peer too far behind. Call at [`Self::next_deadline`].
    pub fn on_tick(&mut self, now: Instant) {
        self.now = now;
        if self.peer_alive
            && self
                .peer_last_rx
                .is_some_and(|t| now >= t + self.cfg.peer_timeout)
        {
            self.peer_alive = false;
            self.events.push_back(Event::PeerLost);
        }
        if self
            .tx
            .queue
            .front()
            .and_then(|s| s.first_sent)
            .is_some_and(|t| now >= t + self.cfg.max_lag)
        {
            self.overflow(SnapshotReason::Lag);
        }
    }

    fn heartbeat_at(&self) -> Instant {
        if self.heartbeat_now {
            return self.now;
        }
        let interval = if self.tx.queue.is_empty() {
            self.cfg.heartbeat_interval
        } else {
            self.cfg.tail_probe
        };
        self.last_tx.map_or(self.now, |t| t + interval)
    }

    fn ack_at(&self) -> Option<Instant> {
        let rx = self.rx.as_ref()?;
        if rx.ack_now || rx.ack_owed >= self.cfg.ack_every {
            return Some(self.now);
        }
        rx.ack_since.map(|t| t + self.cfg.ack_delay)
    }

    fn nack_at(&self) -> Option<Instant> {
        let rx = self.rx.as_ref()?;
        if rx.missing() == 0 {
            return None;
        }
        if rx.peer_next > rx.nacked_upto {
            return Some(self.now);
        }
        Some(rx.last_nack.map_or(self.now, |t| t + self.cfg.nack_retry))
    }

    fn request_at(&self) -> Option<Instant> {
        let rx = self.rx.as_ref()?;
        if !rx.want_resync {
            return None;
        }
        Some(
            rx.last_request
                .map_or(self.now, |t| t + self.cfg.resync_retry),
        )
    }

    fn can_produce_resync(&self) -> bool {
        self.tx.resync.is_some()
            && self.tx.next_unsent == self.tx.next_seq()
            && (self.tx.queue.len() as u64) < self.cfg.resync_window
    }

    /// When to call [`Self::on_tick`] and [`Self::poll_transmit`] next (now if output is
    /// waiting).
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.tx.pending_count > 0
            || self.hello_due
            || !self.tx.resend.is_empty()
            || self.tx.next_unsent < self.tx.next_seq()
            || self.can_produce_resync()
        {
            return Some(self.now);
        }
        let mut at = self.heartbeat_at();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                at = at.min(t);
            }
        };
        consider(self.ack_at());
        consider(self.nack_at());
        consider(self.request_at());
        if self.peer_alive {
            consider(self.peer_last_rx.map(|t| t + self.cfg.peer_timeout));
        }
        consider(
            self.tx
                .queue
                .front()
                .and_then(|s| s.first_sent)
                .map(|t| t + self.cfg.max_lag),
        );
        Some(at)
    }

    /// Writes the next message to send into `out` (cleared first); false when nothing is due.
    /// Call until it returns false.
    pub fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        self.now = now;
        self.flush();
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if self.hello_due {
            self.hello_due = false;
            self.heartbeat_now = false;
            self.stats.heartbeats_sent += 1;
            self.send_control(Kind::Hello, out);
            return true;
        }
        if due(self.nack_at()) && self.send_nack(now, out) {
            return true;
        }
        let request_due = due(self.request_at());
        if let Some(rx) = self.rx.as_mut().filter(|_| request_due) {
            rx.last_request = Some(now);
            let from = rx.expected;
            self.body.clear();
            encode_body(&Body::ResyncRequest { from_seq: from }, &mut self.body);
            self.stats.resync_requests_sent += 1;
            self.send_body(Kind::ResyncRequest, out);
            return true;
        }
        while let Some(seq) = self.tx.resend.pop_front() {
            if seq >= self.tx.base && seq < self.tx.next_unsent {
                let i = (seq - self.tx.base) as usize;
                self.tx.queue[i].resend_queued = false;
                self.stats.resends += 1;
                self.send_slot(i, now, out);
                return true;
            }
        }
        if self.tx.next_unsent >= self.tx.next_seq() && self.can_produce_resync() {
            self.produce_resync();
        }
        if self.tx.next_unsent < self.tx.next_seq() {
            let i = (self.tx.next_unsent - self.tx.base) as usize;
            self.tx.next_unsent += 1;
            self.send_slot(i, now, out);
            return true;
        }
        if due(self.ack_at()) {
            self.stats.acks_sent += 1;
            self.send_control(Kind::Ack, out);
            return true;
        }
        if self.heartbeat_at() <= now {
            self.heartbeat_now = false;
            self.stats.heartbeats_sent += 1;
            self.send_control(Kind::Heartbeat, out);
            return true;
        }
        false
    }

    /// Sends a NACK of the gaps; false (nothing sent) when there is no gap to report.
    fn send_nack(&mut self, now: Instant, out: &mut Vec<u8>) -> bool {
        let max_ranges = (self.cfg.max_payload() / NACK_RANGE_LEN).max(1);
        let nack_retry = self.cfg.nack_retry;
        let Some(rx) = self.rx.as_mut() else {
            return false;
        };
        let limit = rx
            .peer_next
            .min(rx.expected.saturating_add(self.cfg.reorder_window));
        // Prompted by news (a higher sequence) within the retry interval: only the new gaps,
        // the older ones were NACKed moments ago. Otherwise all of them.
        let news_only = rx.last_nack.is_some_and(|t| now < t + nack_retry);
        let mut cursor = if news_only {
            rx.nacked_upto.max(rx.expected)
        } else {
            rx.expected
        };
        self.body.clear();
        let mut ranges = 0;
        for &k in rx.reorder.range(cursor..).map(|(k, _)| k) {
            if ranges == max_ranges || cursor >= limit {
                break;
            }
            if k > cursor {
                push_nack_range(cursor, k.min(limit), &mut self.body);
                ranges += 1;
            }
            cursor = k + 1;
        }
        if ranges < max_ranges && cursor < limit {
            push_nack_range(cursor, limit, &mut self.body);
        }
        rx.nacked_upto = rx.peer_next;
        if !news_only {
            rx.last_nack = Some(now);
        }
        if self.body.is_empty() {
            return false;
        }
        self.stats.nacks_sent += 1;
        self.send_body(Kind::Nack, out);
        true
    }

    fn header(&mut self, kind: Kind) -> Header {
        let packet = self.next_packet;
        self.next_packet += 1;
        let (flags, peer_epoch, ack) = match self.rx.as_mut() {
            Some(rx) => {
                rx.ack_owed = 0;
                rx.ack_since = None;
                rx.ack_now = false;
                (FLAG_ACK, rx.epoch, rx.expected)
            }
            None => (0, 0, 0),
        };
        Header {
            kind,
            flags,
            tag_len: self.auth.tag_len() as u8,
            sender: self.cfg.local_id,
            epoch: self.cfg.epoch,
            packet,
            floor: self.tx.base,
            // What was actually sent: counting queued-but-unsent messages would make the peer
            // NACK messages still on their way.
            next_seq: self.tx.next_unsent,
            peer_epoch,
            ack,
        }
    }

    fn sent(&mut self, out: &[u8]) {
        self.last_tx = Some(self.now);
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += out.len() as u64;
    }

    fn send_control(&mut self, kind: Kind, out: &mut Vec<u8>) {
        let h = self.header(kind);
        self.auth.seal(&h, &[], out);
        self.sent(out);
    }

    fn send_body(&mut self, kind: Kind, out: &mut Vec<u8>) {
        let h = self.header(kind);
        self.auth.seal(&h, &self.body, out);
        self.sent(out);
    }

    fn send_slot(&mut self, i: usize, now: Instant, out: &mut Vec<u8>) {
        let h = self.header(self.tx.queue[i].kind);
        let slot = &mut self.tx.queue[i];
        slot.first_sent.get_or_insert(now);
        slot.last_sent = Some(now);
        self.auth.seal(&h, &slot.body, out);
        self.sent(out);
    }

    /// The status snapshot.
    pub fn status(&self) -> Status {
        let rx = self.rx.as_ref();
        Status {
            local_id: self.cfg.local_id,
            epoch: self.cfg.epoch,
            peer_id: self.cfg.peer_id,
            peer_epoch: rx.map(|rx| rx.epoch),
            peer_alive: self.peer_alive,
            peer_last_heard: self
                .peer_last_rx
                .map(|t| self.now.saturating_duration_since(t)),
            in_sync: self.in_sync(),
            unacked: self.tx.queue.len() as u64,
            unacked_bytes: self.tx.queue.iter().map(|s| s.body.len() as u64).sum(),
            oldest_unacked: self
                .tx
                .queue
                .front()
                .and_then(|s| s.first_sent)
                .map(|t| self.now.saturating_duration_since(t)),
            next_seq: self.tx.next_seq(),
            expected: rx.map(|rx| rx.expected),
            reorder_buffered: rx.map_or(0, |rx| rx.reorder.len()),
            missing: rx.map_or(0, RxStream::missing),
            resync_sending: self.tx.resync.as_ref().map(|r| ResyncProgress {
                id: r.id,
                done: r.sent,
                total: r.total,
            }),
            resync_receiving: rx
                .and_then(|rx| rx.resync.as_ref())
                .map(|r| ResyncProgress {
                    id: r.id,
                    done: r.received,
                    total: r.total,
                }),
            resync_wanted: rx.is_some_and(|rx| rx.want_resync),
            replica_entries: self.replica.total(),
            counters: self.stats,
            rejects: self.rejects,
        }
    }
}

/// Applies snapshot records, skipping keys updated live since the Begin (their snapshot value is
/// older than what the replica holds).
fn apply_chunk(
    replica: &mut Replica,
    rs: &mut ResyncRx,
    records: Records<'_>,
    stats: &mut Counters,
) {
    for r in records.iter() {
        rs.received += 1;
        if rs
            .live
            .get(&r.table)
            .is_some_and(|keys| keys.contains(r.key))
        {
            stats.resync_superseded += 1;
            continue;
        }
        replica.apply_marked(r, rs.mark);
    }
}

trait TakeIfId {
    fn take_if_id(&mut self, id: u32) -> Option<ResyncRx>;
}

impl TakeIfId for Option<ResyncRx> {
    fn take_if_id(&mut self, id: u32) -> Option<ResyncRx> {
        if self.as_ref().is_some_and(|r| r.id == id) {
            self.take()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::Digests;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const T: TableId = TableId::NAT_SESSION;

    fn pair(now: Instant) -> (Endpoint, Endpoint) {
        let a = Endpoint::new(Config::new(1, 2, 100, KEY), now).unwrap();
        let b = Endpoint::new(Config::new(2, 1, 200, KEY), now).unwrap();
        (a, b)
    }

    fn drain(from: &mut Endpoint, now: Instant) -> Vec<Vec<u8>> {
        let mut msgs = Vec::new();
        let mut buf = Vec::new();
        while from.poll_transmit(now, &mut buf) {
            msgs.push(buf.clone());
        }
        msgs
    }

    /// Exchanges messages without loss until both sides are quiet; answers snapshot requests
    /// from `state` on `a`'s side.
    fn pump(a: &mut Endpoint, b: &mut Endpoint, now: Instant, state: &[Record]) {
        for _ in 0..10_000 {
            let to_b = drain(a, now);
            let to_a = drain(b, now);
            for m in &to_b {
                b.handle(m, now).unwrap();
            }
            for m in &to_a {
                a.handle(m, now).unwrap();
            }
            while let Some(ev) = a.poll_event() {
                if let Event::SnapshotNeeded { .. } = ev {
                    a.start_resync(state.to_vec(), now);
                }
            }
            while b.poll_event().is_some() {}
            if to_a.is_empty() && to_b.is_empty() {
                return;
            }
        }
        panic!("no quiescence");
    }

    /// `pump` at steps of 20 ms for `ms` milliseconds, with timers: lets retries happen.
    fn pump_for(a: &mut Endpoint, b: &mut Endpoint, now: Instant, ms: u64, state: &[Record]) {
        for step in 0..=ms / 20 {
            let t = now + Duration::from_millis(step * 20);
            a.on_tick(t);
            b.on_tick(t);
            pump(a, b, t, state);
        }
    }

    fn digests(state: &[Record]) -> Digests {
        Digests::of(
            state
                .iter()
                .map(|r| (r.table, r.key.as_slice(), r.value.as_slice())),
        )
    }

    #[test]
    fn join_resync_then_live() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let state: Vec<Record> = (0..500u32)
            .map(|i| Record::upsert(T, i.to_be_bytes(), vec![i as u8; 40]))
            .collect();
        pump(&mut a, &mut b, now, &state);
        assert!(b.in_sync());
        assert_eq!(b.replica().digests(), digests(&state));
        assert!(
            a.status().counters.resyncs_sent == 1 && b.status().counters.resyncs_completed == 1
        );
        assert_eq!(a.status().unacked, 0);
        a.publish(RecordRef::delete(T, &7u32.to_be_bytes()))
            .unwrap();
        a.publish(RecordRef::upsert(T, b"new", b"v")).unwrap();
        pump(&mut a, &mut b, now, &[]);
        assert_eq!(b.replica().get(T, b"new"), Some(&b"v"[..]));
        assert_eq!(b.replica().get(T, &7u32.to_be_bytes()), None);
        assert_eq!(b.replica().len(T), 500);
    }

    #[test]
    fn changes_are_reported_in_order_when_asked() {
        let now = Instant::now();
        let a_cfg = Config::new(1, 2, 100, KEY);
        let mut b_cfg = Config::new(2, 1, 200, KEY);
        b_cfg.report_changes = true;
        let mut a = Endpoint::new(a_cfg, now).unwrap();
        let mut b = Endpoint::new(b_cfg, now).unwrap();
        let state = vec![Record::upsert(T, *b"s", *b"1")];
        pump(&mut a, &mut b, now, &state);
        a.publish(RecordRef::upsert(T, b"k", b"2")).unwrap();
        a.publish(RecordRef::delete(T, b"s")).unwrap();
        pump(&mut a, &mut b, now, &[]);
        let got: Vec<Record> = std::iter::from_fn(|| b.poll_change()).collect();
        assert_eq!(
            got,
            [
                Record::upsert(T, *b"s", *b"1"),
                Record::upsert(T, *b"k", *b"2"),
                Record::delete(T, *b"s"),
            ]
        );
        assert_eq!(a.poll_change(), None, "a did not ask");
    }

    /// The ordering rule: live updates sequenced after ResyncBegin win over the (older) snapshot
    /// records for the same keys, deletes included; keys the snapshot lacks are swept.
    #[test]
    fn live_updates_during_resync_are_not_regressed() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        pump(&mut a, &mut b, now, &[]);
        // b holds a stale key from before (e.g. the previous run): the resync must sweep it.
        b.replica.apply(RecordRef::upsert(T, b"stale", b"x"));
        let snapshot = vec![
            Record::upsert(T, *b"k1", *b"old"),
            Record::upsert(T, *b"k2", *b"old"),
            Record::upsert(T, *b"k3", *b"same"),
        ];
        a.start_resync(snapshot, now);
        // Published after the Begin, so sequenced before every chunk.
        a.publish(RecordRef::upsert(T, b"k1", b"new")).unwrap();
        a.publish(RecordRef::delete(T, b"k2")).unwrap();
        let msgs = drain(&mut a, now);
        let kinds: Vec<u8> = msgs.iter().map(|m| m[5]).collect();
        assert_eq!(
            kinds,
            [
                Kind::ResyncBegin,
                Kind::Data,
                Kind::ResyncChunk,
                Kind::ResyncEnd
            ]
            .map(|k| k as u8)
        );
        for m in &msgs {
            b.handle(m, now).unwrap();
        }
        assert!(b.in_sync());
        assert_eq!(b.replica().get(T, b"k1"), Some(&b"new"[..]));
        assert_eq!(b.replica().get(T, b"k2"), None);
        assert_eq!(b.replica().get(T, b"k3"), Some(&b"same"[..]));
        assert_eq!(b.replica().get(T, b"stale"), None);
        assert_eq!(b.status().counters.resync_superseded, 2);
        let mut expect = Digests::default();
        expect.add(T, b"k1", b"new");
        expect.add(T, b"k3", b"same");
        assert_eq!(b.replica().digests(), expect);
    }

    #[test]
    fn lost_message_is_nacked_and_resent() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        pump(&mut a, &mut b, now, &[]);
        for i in 0..3u8 {
            a.publish(RecordRef::upsert(T, &[i], &[i])).unwrap();
            a.flush();
        }
        let msgs = drain(&mut a, now);
        assert_eq!(msgs.len(), 3);
        b.handle(&msgs[0], now).unwrap();
        b.handle(&msgs[2], now).unwrap(); // msgs[1] lost
        assert_eq!(b.replica().len(T), 1);
        assert_eq!(b.status().missing, 1);
        let back = drain(&mut b, now);
        assert_eq!(back[0][5], Kind::Nack as u8);
        // A NACK within the holdoff of the first send is ignored (that copy may be on its way).
        a.handle(&back[0], now).unwrap();
        assert!(drain(&mut a, now).is_empty());
        let later = now + Duration::from_millis(60);
        a.handle(&back[0], later).unwrap_err(); // and the same NACK again is a replay
        let back = drain(&mut b, later);
        assert_eq!(back[0][5], Kind::Nack as u8, "re-NACKed after nack_retry");
        for m in &back {
            a.handle(m, later).unwrap();
        }
        let resent = drain(&mut a, later);
        assert_eq!(a.status().counters.resends, 1);
        for m in &resent {
            b.handle(m, now).unwrap();
        }
        assert_eq!(b.replica().len(T), 3);
        // The cumulative ack goes out after ack_delay.
        pump(&mut a, &mut b, now + Duration::from_millis(20), &[]);
        assert_eq!(a.status().unacked, 0);
    }

    #[test]
    fn lost_tail_found_by_heartbeat() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        pump(&mut a, &mut b, now, &[]);
        a.publish(RecordRef::upsert(T, b"tail", b"1")).unwrap();
        let lost = drain(&mut a, now);
        assert_eq!(lost.len(), 1);
        // Nothing more is sent until the tail probe.
        let probe_at = a.next_deadline().unwrap();
        assert_eq!(probe_at, now + a.config().tail_probe);
        a.on_tick(probe_at);
        let hb = drain(&mut a, probe_at);
        assert_eq!(hb.len(), 1);
        assert_eq!(hb[0][5], Kind::Heartbeat as u8);
        b.handle(&hb[0], probe_at).unwrap();
        pump(&mut a, &mut b, probe_at, &[]);
        assert_eq!(b.replica().get(T, b"tail"), Some(&b"1"[..]));
    }

    #[test]
    fn rejects_are_counted_and_change_nothing() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        pump(&mut a, &mut b, now, &[]);
        a.publish(RecordRef::upsert(T, b"k", b"v")).unwrap();
        let msg = drain(&mut a, now).remove(0);
        b.handle(&msg, now).unwrap();
        let before = b.replica().digests();
        assert_eq!(b.handle(&msg, now), Err(Reject::Replayed));
        let mut flipped = msg.clone();
        let n = flipped.len();
        flipped[n - 30] ^= 1;
        assert_eq!(b.handle(&flipped, now), Err(Reject::Forged));
        // Another key.
        let mut forger = Endpoint::new(Config::new(1, 2, 100, [7u8; 32]), now).unwrap();
        forger.publish(RecordRef::upsert(T, b"k", b"evil")).unwrap();
        for m in drain(&mut forger, now) {
            assert_eq!(b.handle(&m, now), Err(Reject::Forged));
        }
        // A sender that is not the peer, and our own message reflected.
        let mut other = Endpoint::new(Config::new(3, 2, 100, KEY), now).unwrap();
        let m = drain(&mut other, now).remove(0);
        assert_eq!(b.handle(&m, now), Err(Reject::WrongSender));
        let mine = drain(&mut b, now + Duration::from_secs(1));
        assert_eq!(b.handle(&mine[0], now), Err(Reject::WrongSender));
        assert_eq!(b.handle(&[1, 2, 3], now), Err(Reject::Malformed));
        let r = b.status().rejects;
        assert_eq!(
            (r.replayed, r.forged, r.wrong_sender, r.malformed),
            (1, 3, 2, 1)
        );
        assert_eq!(b.replica().digests(), before);
        assert_eq!(b.replica().get(T, b"k"), Some(&b"v"[..]));
    }

    #[test]
    fn restart_stale_epoch_and_resync() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let old_state = vec![Record::upsert(T, *b"gone", *b"1")];
        pump(&mut a, &mut b, now, &old_state);
        a.publish(RecordRef::upsert(T, b"x", b"1")).unwrap();
        let old_msg = drain(&mut a, now).remove(0);
        // a restarts with a new epoch and different state.
        let mut a2 = Endpoint::new(Config::new(1, 2, 101, KEY), now).unwrap();
        let new_state = vec![Record::upsert(T, *b"fresh", *b"2")];
        pump(&mut a2, &mut b, now, &new_state);
        assert!(b.in_sync());
        assert_eq!(b.replica().digests(), digests(&new_state));
        assert_eq!(b.handle(&old_msg, now), Err(Reject::StaleEpoch));
        assert_eq!(b.status().peer_epoch, Some(101));
    }

    /// The standby restarts (new epoch, empty replica): the active answers its resync request
    /// although it already served the previous run's.
    #[test]
    fn standby_restart_gets_a_fresh_resync() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let state: Vec<Record> = (0..50u8).map(|i| Record::upsert(T, [i], [i])).collect();
        pump(&mut a, &mut b, now, &state);
        assert!(b.in_sync());
        let mut b2 = Endpoint::new(Config::new(2, 1, 201, KEY), now).unwrap();
        pump_for(&mut a, &mut b2, now, 200, &state);
        assert!(b2.in_sync(), "{:#?}\n{:#?}", a.status(), b2.status());
        assert_eq!(b2.replica().digests(), digests(&state));
        assert_eq!(a.status().counters.resyncs_sent, 2);
    }

    #[test]
    fn overflow_falls_back_to_resync() {
        let now = Instant::now();
        let mut cfg_a = Config::new(1, 2, 100, KEY);
        cfg_a.resend_queue = 8;
        let mut a = Endpoint::new(cfg_a, now).unwrap();
        let mut b = Endpoint::new(Config::new(2, 1, 200, KEY), now).unwrap();
        pump(&mut a, &mut b, now, &[]);
        let mut state = Vec::new();
        // b hears nothing for a while: 20 messages, the queue holds 8.
        for i in 0..20u8 {
            a.publish(RecordRef::upsert(T, &[i], &[i])).unwrap();
            a.flush();
            state.push(Record::upsert(T, [i], [i]));
            drain(&mut a, now);
        }
        assert_eq!(
            a.poll_event(),
            Some(Event::SnapshotNeeded {
                reason: SnapshotReason::Overflow
            })
        );
        assert!(a.status().counters.queue_overflows >= 1);
        a.start_resync(state.clone(), now);
        pump(&mut a, &mut b, now, &state);
        assert!(b.in_sync());
        assert_eq!(b.replica().digests(), digests(&state));
        assert!(b.status().counters.stream_jumps >= 1);
    }

    #[test]
    fn config_validation() {
        let ok = Config::new(1, 2, 1, KEY);
        assert!(ok.validate().is_ok());
        let mut c = ok.clone();
        c.key = b"short".to_vec();
        assert_eq!(c.validate(), Err(ConfigError::KeyTooShort(5)));
        let mut c = ok.clone();
        c.tag_len = 8;
        assert_eq!(c.validate(), Err(ConfigError::TagLen(8)));
        let mut c = ok.clone();
        c.peer_id = 1;
        assert_eq!(c.validate(), Err(ConfigError::SameId(1)));
        let mut c = ok.clone();
        c.max_message = 100;
        assert!(c.validate().is_err());
        let mut c = ok.clone();
        c.peer_timeout = Duration::MAX;
        assert_eq!(c.validate(), Err(ConfigError::Duration("peer-timeout")));
        assert!(
            !format!("{ok:?}").contains("0123"),
            "Debug must not print the key"
        );
    }
}
