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
    let _ = writeln!(
        o,
        "  {:<10} {:>4} {:<10} {:<15} {:>4} {:>8} {:<18} last transition",
        "interface", "vrid", "state", "master", "prio", "interval", "virtual addresses"
    );
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
}
