//! The high-availability state sync channel (issue 15, seed 004): carries the active router's
//! state to its hot standby (another node, over UDP) or its pseudo-standby (another process on
//! the same node, over a Unix socket), reliably, authenticated and replay-protected.
//!
//! # Contract
//!
//! - **Sans-IO.** No sockets, threads or clock reads. The router feeds received messages to
//!   [`Endpoint::handle`], calls [`Endpoint::on_tick`] at [`Endpoint::next_deadline`], sends
//!   whatever [`Endpoint::poll_transmit`] writes (one datagram, or one frame for
//!   [`deframe::frame_into`] on a stream), and acts on [`Endpoint::poll_event`]. Time is the
//!   caller's `Instant`.
//! - **Opaque records.** A [`Record`] is (table, upsert/delete, key bytes, value bytes); the
//!   router encodes its own types (config generation, neighbours, WCCP group state, NAT sessions,
//!   flow affinity, steering health and drain memory: the [`TableId`] constants). Each endpoint
//!   keeps a [`Replica`] of what its peer sent, with per-table [`Digests`] (count and an
//!   order-independent 64-bit sum of entry hashes) so two sides can be compared.
//! - **No panic on any input**: a bad message is refused with a [`Reject`] reason and counted.
//! - **One peer per endpoint.** An active with a hot standby and a pseudo-standby runs two
//!   endpoints and publishes every record to both.
//!
//! # Messages
//!
//! Every message is one datagram (at most [`Config::max_message`], default 1472 bytes: a
//! 1500-byte MTU) with the header of [`wire`], the payload, and an HMAC-SHA256 tag (truncated to
//! 16..=32 bytes) over both. Every header carries the sender's stream position (floor and next
//! sequence) and, piggybacked, the cumulative ack of the peer's stream.
//!
//! | kind | sequenced | payload | purpose |
//! |---|---|---|---|
//! | Hello | no | — | first message of a run; answered at once with a heartbeat |
//! | Heartbeat | no | — | liveness; its position exposes a lost tail; answered with an ack |
//! | Ack | no | — | the header's cumulative ack alone |
//! | Nack | no | ranges `[from, to)` | gaps the receiver misses; the sender resends them |
//! | Data | yes | seq, records | live updates, batched |
//! | ResyncRequest | no | the requester's position | "send me everything" |
//! | ResyncBegin | yes | seq, id, total | a bulk resync starts |
//! | ResyncChunk | yes | seq, id, records sent so far, records | snapshot records |
//! | ResyncEnd | yes | seq, id, total | the snapshot is complete |
//!
//! # Reliability (after conntrackd's FTFW)
//!
//! - Sequenced messages stay in a bounded resend queue until cumulatively acked. The receiver
//!   acks every [`Config::ack_every`] messages or after [`Config::ack_delay`], and answers every
//!   heartbeat; it NACKs new gaps (ranges) as soon as it sees them and all open gaps again
//!   every [`Config::nack_retry`]; NACKed messages are resent under a fresh packet number,
//!   except those (re)sent less than [`Config::resend_holdoff`] ago (that copy is on its way).
//! - A header's `next sequence` counts only messages actually sent, so the peer never NACKs
//!   what is still queued here.
//! - Heartbeats come every [`Config::heartbeat_interval`] when idle and every
//!   [`Config::tail_probe`] while anything is unacked, so a lost tail is NACKed.
//! - The receiver applies sequenced messages strictly in order (buffering up to
//!   [`Config::reorder_window`] ahead), so live updates and resync chunks apply in the order the
//!   sender emitted them.
//! - When the queue is full or the oldest unacked message is older than [`Config::max_lag`], the
//!   sender drops the queue (its floor moves past the dropped messages) and raises
//!   [`Event::SnapshotNeeded`]. A receiver whose position is below the floor jumps to it, marks
//!   itself out of sync ([`Event::OutOfSync`]) and requests a resync.
//!
//! # Replay protection
//!
//! Every message has a fresh packet number (resends included). After the tag verifies, the
//! receiver checks it against a sliding bitmap window per (sender, epoch) (IPsec's anti-replay):
//! seen → [`Reject::Replayed`], below the window → [`Reject::TooOld`]. A smaller epoch than the
//! peer's current one → [`Reject::StaleEpoch`]; a larger one is a restart: the receive stream
//! starts over and a resync is requested. Only the configured peer id is accepted
//! ([`Reject::WrongSender`], which also catches our own messages reflected back). A duplicate
//! made by the network is indistinguishable from a replay and counted as one.
//!
//! # Bulk resync and its ordering rule
//!
//! A receiver requests a resync on first contact, on the peer's restart and after a jump; the
//! request carries its position, and the sender ignores it when a ResyncBegin at or after that
//! position is already in its stream. Otherwise the router gets [`Event::SnapshotNeeded`] and
//! calls [`Endpoint::start_resync`] with its current state; the endpoint sends ResyncBegin at
//! once and chunks as the window allows ([`Config::resync_window`] messages in flight), between
//! live Data messages. Progress (sent/total, received/total) is in [`Status`].
//!
//! **Rule:** the snapshot is the state at ResyncBegin; every record published after it is
//! sequenced after the Begin. The receiver, between Begin and End, remembers the keys that live
//! Data touched and skips snapshot records for those keys (counted as `resync_superseded`), so a
//! snapshot value never regresses a newer live update or resurrects a live delete. Every entry
//! applied from the snapshot or live is marked with the resync's mark; at ResyncEnd unmarked
//! entries (deleted on the sender while the receiver was away) are swept. After ResyncEnd the
//! replica equals the sender's state at that point and [`Endpoint::in_sync`] is true.
//!
//! # Limits
//!
//! - A record must fit in one message ([`Config::max_record_len`]); larger values are refused by
//!   [`Endpoint::publish`] and must be split by the router.
//! - The epoch must grow across restarts (e.g. UNIX time in microseconds at start); a sender whose
//!   clock went back is refused as stale until its epoch passes the old one.
//! - A receiver that restarted accepts the first authentic epoch it hears: a replayed message of
//!   an older run can be accepted until the live peer is heard; then the older run is refused as
//!   stale, the receive stream restarts and the resync repairs the replica (`in_sync` stays
//!   false until then).
//! - During a resync the receiver remembers every key updated live (memory grows with the live
//!   update rate times the resync's duration).
//! - Live records published while no peer is alive are queued until `max_lag` or the queue
//!   bound, then dropped: the peer resyncs when it comes back.
#![forbid(unsafe_code)]

pub mod deframe;
pub mod endpoint;
pub mod record;
pub mod replay;
pub mod replica;
pub mod wire;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;

pub use deframe::{frame_into, DeframeError, Deframer};
pub use endpoint::{
    Config, ConfigError, Counters, Endpoint, Event, Reject, RejectCounters, ResyncProgress,
    SnapshotReason, Status,
};
pub use record::{Op, Record, RecordError, RecordRef, TableId};
pub use replica::{Digests, Replica, TableDigest};
