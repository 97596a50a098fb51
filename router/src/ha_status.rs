//! The HA part of `swrouter status` (and `swrouter ha status`): each VRRP virtual router's
//! state, the master it sees, its timers and counters, and its last transition with the cause.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// High availability: the VRRP virtual routers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HaStatus {
    /// One per `[[ha.vrrp]]`, in configuration order.
    pub vrrp: Vec<VrrpStatus>,
    /// Per interface speaking VRRP: advertisements dropped before a virtual router saw them.
    pub interfaces: Vec<VrrpIfaceStatus>,
    /// Advertisements and gratuitous ARPs lost because the control plane's outbox was full.
    pub outbox_full: u64,
    /// This node's role in the pair: `active` (master of at least one virtual router) or
    /// `standby`.
    #[serde(default)]
    pub role: String,
    /// The state-sync channel (`[ha.sync]`), when configured.
    #[serde(default)]
    pub sync: Option<SyncStatus>,
}

/// The state-sync channel to the peer node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// Our sync address.
    pub local: String,
    /// The peer's.
    pub peer: String,
    /// Our node id.
    pub node_id: u32,
    /// The peer's node id.
    pub peer_node_id: u32,
    /// Our epoch (start time in µs).
    pub epoch: u64,
    /// The peer's epoch, once heard.
    pub peer_epoch: Option<u64>,
    /// A valid message arrived within the peer timeout.
    pub peer_alive: bool,
    /// Seconds since the last valid message.
    pub peer_last_heard_secs: Option<f64>,
    /// The peer's node record (version, configuration generation and hash).
    pub peer_node: Option<String>,
    /// Our copy of the peer's state is exact (a resync completed and nothing was lost since).
    pub in_sync: bool,
    /// Lag toward the peer: messages sent and not acknowledged.
    pub lag_messages: u64,
    /// Lag toward the peer: bytes of the unacknowledged messages.
    #[serde(default)]
    pub lag_bytes: u64,
    /// Lag toward the peer: age of the oldest unacknowledged message, seconds.
    pub lag_secs: f64,
    /// Messages from the peer known missing (NACKed).
    pub missing: u64,
    /// A bulk resync we are sending: (records sent, total).
    pub resync_sending: Option<(u64, u64)>,
    /// A bulk resync we are receiving: (records received, total).
    pub resync_receiving: Option<(u64, u64)>,
    /// We asked the peer for a resync and wait for it.
    pub resync_wanted: bool,
    /// Messages sent.
    pub messages_sent: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Messages accepted.
    pub messages_received: u64,
    /// Bytes accepted.
    pub bytes_received: u64,
    /// Records published to the peer.
    pub records_published: u64,
    /// Live records of the peer applied to our copy.
    pub records_applied: u64,
    /// Messages sent again after a NACK.
    pub resends: u64,
    /// NACKs sent.
    pub nacks_sent: u64,
    /// NACKs received.
    pub nacks_received: u64,
    /// Bulk resyncs sent to the end.
    pub resyncs_sent: u64,
    /// Bulk resyncs received to the end.
    pub resyncs_completed: u64,
    /// Times our resend queue was dropped (peer too far behind): each ends in a resync.
    pub queue_overflows: u64,
    /// Times messages from the peer were lost for good: each ends in a resync.
    pub stream_jumps: u64,
    /// Messages refused, by reason (forged: failed the HMAC; replayed; too-old; stale-epoch;
    /// wrong-sender; malformed; wrong-source: not from the peer's address).
    pub rejected: BTreeMap<String, u64>,
    /// Records state owners published into the feed.
    pub feed_published: u64,
    /// Records lost to a full feed (each overflow re-exports everything).
    pub feed_dropped: u64,
    /// Full re-exports after a feed overflow.
    pub reexports: u64,
    /// Datagrams the socket refused to send (repaired by NACKs).
    pub send_errors: u64,
    /// Records too large for one message (not sent).
    pub too_large: u64,
    /// Per table: what we publish and what we hold of the peer's.
    pub tables: BTreeMap<String, SyncTableStatus>,
    /// The last role change of this node.
    pub last_switchover: Option<SwitchoverStatus>,
    /// The local sync to this node's pseudo-standby process (`local-socket`), when set.
    #[serde(default)]
    pub pseudo_standby: Option<PseudoStandbyStatus>,
}

/// The node process's side of the local sync to its pseudo-standby.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PseudoStandbyStatus {
    /// The Unix socket (`local-socket`).
    pub socket: String,
    /// A pseudo-standby is connected.
    pub connected: bool,
    /// Seconds since it connected.
    pub connected_secs: f64,
    /// It answered within the heartbeat timeout.
    pub alive: bool,
    /// Messages sent to it and not acknowledged.
    pub lag_messages: u64,
    /// A bulk resync to it: (records sent, total).
    pub resync_sending: Option<(u64, u64)>,
    /// Records sent to the connected one.
    pub records_published: u64,
    /// Bulk resyncs sent to the connected one.
    pub resyncs_sent: u64,
    /// Messages from it refused (all reasons).
    pub rejected: u64,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Connections refused because one was already connected.
    pub refused_busy: u64,
    /// Connections dropped because it fell too far behind.
    pub dropped_slow: u64,
    /// Connections dropped because the stream's framing broke.
    pub dropped_framing: u64,
}

/// One sync table on both sides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncTableStatus {
    /// Entries we publish (our own state).
    pub published: u64,
    /// Order-independent digest of them (equal to the peer's `peer_digest` when in sync).
    pub published_digest: String,
    /// Entries of the peer's state we hold.
    pub peer: u64,
    /// Digest of those.
    pub peer_digest: String,
    /// Changes of the peer's state applied to the owner's standby copy.
    pub applied: u64,
    /// Changes no owner applies here (kept in the copy only).
    pub held: u64,
}

/// A role change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SwitchoverStatus {
    /// Seconds since it happened.
    pub secs_ago: f64,
    /// When, in seconds since the UNIX epoch.
    pub unix_secs: f64,
    /// The role after it.
    pub to: String,
    /// Why (the VRRP transition's cause, e.g. master-down, preempted, switchover).
    pub cause: String,
}

/// One virtual router.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VrrpStatus {
    /// Interface name.
    pub interface: String,
    /// VRID.
    pub vrid: u8,
    /// initialize, backup or master.
    pub state: String,
    /// The current master's primary address (ours when master), when known.
    pub master: Option<String>,
    /// Our priority.
    pub priority: u8,
    /// Our Advertisement_Interval in milliseconds.
    pub advert_interval_ms: u32,
    /// Master_Adver_Interval in milliseconds (learnt from the master while backup).
    pub master_advert_interval_ms: u32,
    /// Master_Down_Interval in milliseconds.
    pub master_down_interval_ms: u32,
    /// The virtual addresses.
    pub virtual_addresses: Vec<String>,
    /// 00:00:5e:00:01:VRID.
    pub virtual_mac: String,
    /// Preempt_Mode.
    pub preempt: bool,
    /// Accept_Mode.
    pub accept_mode: bool,
    /// The checksum sent (pseudo-header or no-pseudo-header; both are accepted).
    pub checksum: String,
    /// Advertisements sent, priority 0 included.
    pub adverts_sent: u64,
    /// Advertisements received and acted on.
    pub adverts_received: u64,
    /// Priority-0 advertisements sent (clean stop, switchover).
    pub priority_zero_sent: u64,
    /// Priority-0 advertisements received (a master leaving).
    pub priority_zero_received: u64,
    /// Transitions to master.
    pub became_master: u64,
    /// Transitions to backup.
    pub became_backup: u64,
    /// Advertisements accepted under the checksum without the pseudo-header.
    pub no_pseudo_header_checksum: u64,
    /// Advertisements dropped by the state machine, by reason (non-zero only).
    pub drops: BTreeMap<String, u64>,
    /// The last transition.
    pub last_transition: Option<TransitionStatus>,
}

/// A state change and why it happened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TransitionStatus {
    /// Seconds since it happened.
    pub secs_ago: f64,
    /// The state before.
    pub from: String,
    /// The state after.
    pub to: String,
    /// Why, e.g. master-down, master-resigned, preempted, higher-priority, switchover.
    pub cause: String,
}

/// Receive-side drops of an interface speaking VRRP.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VrrpIfaceStatus {
    /// Interface name.
    pub interface: String,
    /// Advertisements that failed a check of RFC 5798 §7.1, by reason (non-zero only).
    pub rx_errors: BTreeMap<String, u64>,
    /// Well-formed advertisements for a VRID not configured on this interface.
    pub unknown_vrid: u64,
}

/// Appends the HA section to a `swrouter status` text.
pub fn render(o: &mut String, h: &HaStatus) {
    let _ = writeln!(o, "\nHA (VRRPv3)");
    // A pseudo-standby runs no virtual router.
    if !h.vrrp.is_empty() {
        let _ = writeln!(
            o,
            "  {:<10} {:>4} {:<10} {:<15} {:>4} {:>8} {:<18} last transition",
            "interface", "vrid", "state", "master", "prio", "interval", "virtual addresses"
        );
    }
    for v in &h.vrrp {
        let last = match &v.last_transition {
            Some(t) => format!("{}→{} ({}) {:.1} s ago", t.from, t.to, t.cause, t.secs_ago),
            None => "-".into(),
        };
        let _ = writeln!(
            o,
            "  {:<10} {:>4} {:<10} {:<15} {:>4} {:>6}ms {:<18} {}",
            v.interface,
            v.vrid,
            v.state,
            v.master.as_deref().unwrap_or("-"),
            v.priority,
            v.advert_interval_ms,
            v.virtual_addresses.join(","),
            last
        );
        let drops = v
            .drops
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            o,
            "    adverts sent {} received {}  priority-0 sent {} received {}  became master {} backup {}  no-pseudo-header {}{}{}",
            v.adverts_sent,
            v.adverts_received,
            v.priority_zero_sent,
            v.priority_zero_received,
            v.became_master,
            v.became_backup,
            v.no_pseudo_header_checksum,
            if drops.is_empty() { "" } else { "  dropped: " },
            drops
        );
    }
    for i in &h.interfaces {
        if i.rx_errors.is_empty() && i.unknown_vrid == 0 {
            continue;
        }
        let errs = i
            .rx_errors
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = writeln!(
            o,
            "  {} advertisements dropped: {} unknown-vrid={}",
            i.interface, errs, i.unknown_vrid
        );
    }
    if h.outbox_full > 0 {
        let _ = writeln!(o, "  outbox full: {}", h.outbox_full);
    }
    if !h.role.is_empty() {
        let _ = writeln!(o, "  role: {}", h.role);
    }
    if let Some(s) = &h.sync {
        render_sync(o, s);
    }
}

fn render_pseudo(o: &mut String, p: &PseudoStandbyStatus) {
    let state = if !p.connected {
        "none connected".to_string()
    } else {
        format!(
            "connected {:.1} s, {}",
            p.connected_secs,
            if p.alive { "alive" } else { "SILENT" }
        )
    };
    let resync = match p.resync_sending {
        Some((d, t)) => format!("  resync {d}/{t}"),
        None => String::new(),
    };
    let _ = writeln!(
        o,
        "  pseudo-standby on {}: {}  lag {} messages{}  records sent {} resyncs {} rejected {}  accepted {} refused-busy {} dropped slow {} framing {}",
        p.socket,
        state,
        p.lag_messages,
        resync,
        p.records_published,
        p.resyncs_sent,
        p.rejected,
        p.accepted,
        p.refused_busy,
        p.dropped_slow,
        p.dropped_framing
    );
}

fn render_sync(o: &mut String, s: &SyncStatus) {
    if let Some(p) = &s.pseudo_standby {
        render_pseudo(o, p);
    }
    let heard = match s.peer_last_heard_secs {
        Some(t) => format!("{t:.2} s ago"),
        None => "never".into(),
    };
    let _ = writeln!(
        o,
        "  sync {} → {} (node {} → {}): peer {} (heard {}), {}",
        s.local,
        s.peer,
        s.node_id,
        s.peer_node_id,
        if s.peer_alive { "alive" } else { "DOWN" },
        heard,
        if s.in_sync { "in sync" } else { "NOT in sync" }
    );
    if let Some(n) = &s.peer_node {
        let _ = writeln!(o, "    peer node: {n}");
    }
    let _ = writeln!(
        o,
        "    lag {} messages {} B {:.3} s  missing {}  sent {} msgs {} B  received {} msgs {} B  resends {}  nacks sent {} received {}",
        s.lag_messages,
        s.lag_bytes,
        s.lag_secs,
        s.missing,
        s.messages_sent,
        s.bytes_sent,
        s.messages_received,
        s.bytes_received,
        s.resends,
        s.nacks_sent,
        s.nacks_received
    );
    let progress = |p: Option<(u64, u64)>| match p {
        Some((d, t)) => format!("{d}/{t}"),
        None => "-".into(),
    };
    let _ = writeln!(
        o,
        "    resync sending {} receiving {}{}  completed sent {} received {}  overflows {} jumps {}",
        progress(s.resync_sending),
        progress(s.resync_receiving),
        if s.resync_wanted { " (requested)" } else { "" },
        s.resyncs_sent,
        s.resyncs_completed,
        s.queue_overflows,
        s.stream_jumps
    );
    let rejected: Vec<String> = s
        .rejected
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    let _ = writeln!(
        o,
        "    feed published {} dropped {} re-exports {}  send errors {}  too large {}  rejected: {}",
        s.feed_published,
        s.feed_dropped,
        s.reexports,
        s.send_errors,
        s.too_large,
        if rejected.is_empty() { "none".to_string() } else { rejected.join(" ") }
    );
    let _ = writeln!(
        o,
        "    {:<16} {:>9} {:<16} {:>9} {:<16} {:>9} {:>7}",
        "table", "ours", "digest", "peer's", "digest", "applied", "held"
    );
    for (name, t) in &s.tables {
        let _ = writeln!(
            o,
            "    {:<16} {:>9} {:<16} {:>9} {:<16} {:>9} {:>7}",
            name, t.published, t.published_digest, t.peer, t.peer_digest, t.applied, t.held
        );
    }
    if let Some(sw) = &s.last_switchover {
        let _ = writeln!(
            o,
            "    last role change: → {} ({}) {:.1} s ago",
            sw.to, sw.cause, sw.secs_ago
        );
    }
}
