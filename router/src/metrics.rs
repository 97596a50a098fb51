//! What `GET /metrics` shows: the `swrouter status` snapshot as Prometheus metric families,
//! encoded in the Prometheus text format (0.0.4) by the `prometheus` crate.
//!
//! This is the router's collector: at scrape time it turns one [`Status`] (the very document
//! `swrouter status` prints, built from the workers' shared counters and the drivers' state)
//! into metric families. The packet path keeps no second set of counters for it, so metrics
//! cost nothing until someone scrapes.
//!
//! Names follow Prometheus conventions: `swrouter_` prefix, counters end in `_total`, sizes in
//! bytes and times in seconds. A family appears once it has a sample: a drop reason, for one,
//! shows up with its first drop (as in `swrouter status`). States (probe, device health) are
//! one series per state with 1 on the current one.

use crate::status::{Status, TrafficCount};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use std::collections::HashMap;

/// The `Content-Type` of the text format the families are encoded in.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Families being built, in the order their first sample came.
#[derive(Default)]
struct Families {
    list: Vec<MetricFamily>,
    index: HashMap<&'static str, usize>,
}

impl Families {
    /// Adds one sample to family `name`, creating the family on its first sample.
    fn add(
        &mut self,
        name: &'static str,
        help: &str,
        kind: MetricType,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let i = *self.index.entry(name).or_insert_with(|| {
            let mut f = MetricFamily::default();
            f.set_name(name.to_string());
            f.set_help(help.to_string());
            f.set_field_type(kind);
            self.list.push(f);
            self.list.len() - 1
        });
        let mut m = Metric::from_label(
            labels
                .iter()
                .map(|(k, v)| {
                    let mut p = LabelPair::default();
                    p.set_name(k.to_string());
                    p.set_value(v.to_string());
                    p
                })
                .collect(),
        );
        match kind {
            MetricType::COUNTER => {
                let mut c = Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            _ => {
                let mut g = Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        self.list[i].mut_metric().push(m);
    }

    /// A counter sample.
    fn counter(&mut self, name: &'static str, help: &str, labels: &[(&str, &str)], v: u64) {
        self.add(name, help, MetricType::COUNTER, labels, v as f64);
    }

    /// A gauge sample.
    fn gauge(&mut self, name: &'static str, help: &str, labels: &[(&str, &str)], v: f64) {
        self.add(name, help, MetricType::GAUGE, labels, v);
    }

    /// A packets and a bytes counter.
    fn traffic(
        &mut self,
        (packets, bytes): (&'static str, &'static str),
        what: &str,
        labels: &[(&str, &str)],
        t: &TrafficCount,
    ) {
        self.counter(packets, &format!("Packets {what}."), labels, t.packets);
        self.counter(
            bytes,
            &format!("Bytes (IPv4 lengths) {what}."),
            labels,
            t.bytes,
        );
    }

    /// One series per state, 1 on `current`.
    fn state(
        &mut self,
        name: &'static str,
        help: &str,
        labels: &[(&str, &str)],
        states: &[&str],
        current: &str,
    ) {
        for s in states {
            let mut l = labels.to_vec();
            l.push(("state", s));
            self.gauge(name, help, &l, f64::from(u8::from(*s == current)));
        }
    }
}

fn flag(b: bool) -> f64 {
    f64::from(u8::from(b))
}

/// The metric families of one status snapshot: this is the collector a scrape runs.
pub fn families(s: &Status) -> Vec<MetricFamily> {
    let mut f = Families::default();
    router(&mut f, s);
    interfaces(&mut f, s);
    pipeline(&mut f, s);
    if let Some(w) = &s.wccp {
        wccp(&mut f, w);
    }
    if let Some(st) = &s.steering {
        steering(&mut f, st);
    }
    if let Some(n) = &s.nat {
        nat(&mut f, n);
    }
    if let Some(h) = &s.ha {
        ha(&mut f, h);
    }
    if let Some(c) = &s.cluster {
        cluster_plane(&mut f, c);
    }
    if let Some(n) = &s.cluster_node {
        cluster_node(&mut f, n);
    }
    control(&mut f, s);
    f.list
}

/// HA: per VRRP virtual router (state, priority, intervals, counters) and per interface.
fn ha(f: &mut Families, h: &crate::ha_status::HaStatus) {
    for v in &h.vrrp {
        let vrid = v.vrid.to_string();
        let l: &[(&str, &str)] = &[("interface", &v.interface), ("vrid", &vrid)];
        f.state(
            "swrouter_vrrp_state",
            "VRRP state of the virtual router (1 on the current one).",
            l,
            &["initialize", "backup", "master"],
            &v.state,
        );
        f.gauge(
            "swrouter_vrrp_priority",
            "VRRP priority of this router.",
            l,
            f64::from(v.priority),
        );
        f.gauge(
            "swrouter_vrrp_advert_interval_seconds",
            "VRRP Advertisement_Interval of this router.",
            l,
            f64::from(v.advert_interval_ms) / 1000.0,
        );
        f.gauge(
            "swrouter_vrrp_master_down_interval_seconds",
            "VRRP Master_Down_Interval (from the master's advertised interval).",
            l,
            f64::from(v.master_down_interval_ms) / 1000.0,
        );
        f.counter(
            "swrouter_vrrp_adverts_sent_total",
            "VRRP advertisements sent, priority 0 included.",
            l,
            v.adverts_sent,
        );
        f.counter(
            "swrouter_vrrp_adverts_received_total",
            "VRRP advertisements received and acted on.",
            l,
            v.adverts_received,
        );
        f.counter(
            "swrouter_vrrp_priority_zero_sent_total",
            "VRRP priority-0 advertisements sent (clean stop, switchover).",
            l,
            v.priority_zero_sent,
        );
        f.counter(
            "swrouter_vrrp_priority_zero_received_total",
            "VRRP priority-0 advertisements received (a master leaving).",
            l,
            v.priority_zero_received,
        );
        for (to, n) in [("master", v.became_master), ("backup", v.became_backup)] {
            let mut lt = l.to_vec();
            lt.push(("to", to));
            f.counter(
                "swrouter_vrrp_transitions_total",
                "VRRP transitions, by the state entered.",
                &lt,
                n,
            );
        }
        for (reason, n) in &v.drops {
            let mut lr = l.to_vec();
            lr.push(("reason", reason));
            f.counter(
                "swrouter_vrrp_adverts_dropped_total",
                "VRRP advertisements the state machine did not act on, by reason.",
                &lr,
                *n,
            );
        }
    }
    for i in &h.interfaces {
        for (reason, n) in &i.rx_errors {
            f.counter(
                "swrouter_vrrp_rx_errors_total",
                "VRRP advertisements failing a check of RFC 5798 section 7.1, by reason.",
                &[("interface", &i.interface), ("reason", reason)],
                *n,
            );
        }
        f.counter(
            "swrouter_vrrp_unknown_vrid_total",
            "VRRP advertisements for a VRID not configured on the interface.",
            &[("interface", &i.interface)],
            i.unknown_vrid,
        );
    }
    f.counter(
        "swrouter_vrrp_outbox_full_total",
        "VRRP frames lost because the control plane's outbox was full.",
        &[],
        h.outbox_full,
    );
    if !h.role.is_empty() {
        f.state(
            "swrouter_ha_role",
            "This node's role in the HA pair (1 on the current one).",
            &[],
            &["active", "standby", "pseudo-standby"],
            &h.role,
        );
    }
    if let Some(s) = &h.sync {
        ha_sync(f, s);
    }
}

/// The HA state-sync channel.
fn ha_sync(f: &mut Families, s: &crate::ha_status::SyncStatus) {
    let b = |v: bool| if v { 1.0 } else { 0.0 };
    f.gauge(
        "swrouter_ha_sync_peer_alive",
        "1 while a valid sync message arrived within the peer timeout.",
        &[],
        b(s.peer_alive),
    );
    f.gauge(
        "swrouter_ha_sync_in_sync",
        "1 while our copy of the peer's state is exact.",
        &[],
        b(s.in_sync),
    );
    f.gauge(
        "swrouter_ha_sync_lag_messages",
        "Sync messages sent to the peer and not yet acknowledged.",
        &[],
        s.lag_messages as f64,
    );
    f.gauge(
        "swrouter_ha_sync_lag_bytes",
        "Bytes of the sync messages sent to the peer and not yet acknowledged.",
        &[],
        s.lag_bytes as f64,
    );
    f.gauge(
        "swrouter_ha_sync_lag_seconds",
        "Age of the oldest unacknowledged sync message.",
        &[],
        s.lag_secs,
    );
    for (dir, msgs, bytes) in [
        ("sent", s.messages_sent, s.bytes_sent),
        ("received", s.messages_received, s.bytes_received),
    ] {
        f.counter(
            "swrouter_ha_sync_messages_total",
            "Sync messages, by direction (received: accepted only).",
            &[("direction", dir)],
            msgs,
        );
        f.counter(
            "swrouter_ha_sync_bytes_total",
            "Sync bytes, by direction (received: accepted only).",
            &[("direction", dir)],
            bytes,
        );
    }
    for (what, n) in [
        ("published", s.records_published),
        ("applied", s.records_applied),
    ] {
        f.counter(
            "swrouter_ha_sync_records_total",
            "Sync records published to the peer and received from it (live).",
            &[("what", what)],
            n,
        );
    }
    f.counter(
        "swrouter_ha_sync_resends_total",
        "Sync messages sent again after a NACK.",
        &[],
        s.resends,
    );
    f.counter(
        "swrouter_ha_sync_resyncs_total",
        "Bulk resyncs, by direction, completed.",
        &[("direction", "sent")],
        s.resyncs_sent,
    );
    f.counter(
        "swrouter_ha_sync_resyncs_total",
        "Bulk resyncs, by direction, completed.",
        &[("direction", "received")],
        s.resyncs_completed,
    );
    for (reason, n) in &s.rejected {
        f.counter(
            "swrouter_ha_sync_rejected_total",
            "Sync messages refused, by reason (forged, replayed, too-old, stale-epoch, wrong-sender, malformed, wrong-source).",
            &[("reason", reason)],
            *n,
        );
    }
    f.counter(
        "swrouter_ha_sync_feed_dropped_total",
        "Sync records lost to a full feed (each overflow re-exports all state).",
        &[],
        s.feed_dropped,
    );
    if let Some(p) = &s.pseudo_standby {
        pseudo_standby(f, p);
    }
    for (table, t) in &s.tables {
        for (side, n) in [("ours", t.published), ("peer", t.peer)] {
            f.gauge(
                "swrouter_ha_sync_entries",
                "Sync table entries: ours (published) and the peer's (held).",
                &[("table", table), ("side", side)],
                n as f64,
            );
        }
    }
}

/// The local sync to this node's pseudo-standby (`local-socket`).
fn pseudo_standby(f: &mut Families, p: &crate::ha_status::PseudoStandbyStatus) {
    let b = |v: bool| if v { 1.0 } else { 0.0 };
    f.gauge(
        "swrouter_ha_pseudo_standby_connected",
        "1 while a pseudo-standby process is connected to the local socket.",
        &[],
        b(p.connected),
    );
    f.gauge(
        "swrouter_ha_pseudo_standby_alive",
        "1 while the connected pseudo-standby answered within the heartbeat timeout.",
        &[],
        b(p.alive),
    );
    f.gauge(
        "swrouter_ha_pseudo_standby_lag_messages",
        "Messages sent to the pseudo-standby and not yet acknowledged.",
        &[],
        p.lag_messages as f64,
    );
    for (what, n) in [
        ("accepted", p.accepted),
        ("refused-busy", p.refused_busy),
        ("dropped-slow", p.dropped_slow),
        ("dropped-framing", p.dropped_framing),
    ] {
        f.counter(
            "swrouter_ha_pseudo_standby_connections_total",
            "Pseudo-standby connections: accepted, refused (one at a time), dropped (too slow, broken framing).",
            &[("what", what)],
            n,
        );
    }
}

/// Cluster: the epoch, ids by state, and frames to the cluster MAC by fate.
fn cluster_plane(f: &mut Families, c: &crate::tables::cluster::ClusterStatus) {
    f.gauge(
        "swrouter_cluster_epoch",
        "The cluster's id table epoch in force on this node (0 before the first).",
        &[],
        c.epoch as f64,
    );
    f.gauge(
        "swrouter_cluster_joined",
        "1 once the node knows the cluster's hash key.",
        &[],
        flag(c.hash_key_set),
    );
    for (state, n) in [
        ("owned", c.ids_owned),
        ("releasing", c.ids_releasing),
        ("foreign", c.ids_foreign),
    ] {
        f.gauge(
            "swrouter_cluster_ids",
            "Distribution ids by this node's state for them.",
            &[("state", state)],
            f64::from(n),
        );
    }
    f.counter(
        "swrouter_cluster_fences_total",
        "Times this node dropped every id at once.",
        &[],
        c.fences,
    );
    let fr = &c.frames;
    for (fate, v) in [
        ("owned", fr.owned),
        ("foreign", fr.foreign),
        ("held", fr.held),
        ("released", fr.released),
        ("handed", fr.handed),
        ("hold-full", fr.hold_full),
        ("hold-dropped", fr.hold_dropped),
        ("not-distributed", fr.not_distributed),
        ("duplicate", fr.duplicates),
    ] {
        f.counter(
            "swrouter_cluster_frames_total",
            "Frames to the cluster MAC by fate (held ones later also count as released, handed or hold-dropped).",
            &[("fate", fate)],
            v,
        );
    }
}

/// Cluster: membership, etcd and the handover, as the driver sees them.
fn cluster_node(f: &mut Families, n: &crate::control::cluster::ClusterNodeStatus) {
    f.gauge(
        "swrouter_cluster_config_joined",
        "1 when this node runs the configuration the cluster's config record names and joined; 0 while it checks or is refused.",
        &[],
        if n.config.state == "joined" { 1.0 } else { 0.0 },
    );
    f.gauge(
        "swrouter_cluster_members",
        "Members registered in etcd (this node included).",
        &[],
        n.members.len() as f64,
    );
    f.gauge(
        "swrouter_cluster_members_heard",
        "Members heard on the sync channel (this node included).",
        &[],
        n.members.iter().filter(|m| m.heard).count() as f64,
    );
    f.gauge(
        "swrouter_cluster_etcd_reachable",
        "1 while etcd answers this node's requests.",
        &[],
        flag(n.etcd_reachable),
    );
    f.gauge(
        "swrouter_cluster_proposer",
        "1 while this node proposes the id tables.",
        &[],
        flag(n.proposer),
    );
    for (name, help, v) in [
        (
            "swrouter_cluster_realloc_refused_total",
            "Reallocations this node wanted but could not propose (etcd unreachable, no majority heard).",
            n.realloc_refused,
        ),
        (
            "swrouter_cluster_cas_total",
            "Id table compare-and-swaps this node sent to etcd.",
            n.cas_sent,
        ),
        (
            "swrouter_cluster_cas_committed_total",
            "Of those, committed.",
            n.cas_committed,
        ),
        (
            "swrouter_cluster_etcd_requests_total",
            "etcd requests this node made.",
            n.etcd.requests,
        ),
        (
            "swrouter_cluster_etcd_failures_total",
            "etcd requests that failed (unreachable or an error answer).",
            n.driver.etcd_failures,
        ),
        (
            "swrouter_cluster_sessions_adopted_total",
            "NAT sessions taken from other nodes' copies when ids moved here.",
            n.driver.sessions_adopted,
        ),
        (
            "swrouter_cluster_sessions_released_total",
            "NAT sessions dropped from the workers when ids moved away.",
            n.driver.sessions_released,
        ),
        (
            "swrouter_cluster_release_timeouts_total",
            "Gained ids adopted without the old owner's release marker.",
            n.release_timeouts,
        ),
    ] {
        f.counter(name, help, &[], v);
    }
}

/// NAT: per worker (sessions, translations, handoffs) and the switch processor.
fn nat(f: &mut Families, n: &crate::natd::NatStatus) {
    for (i, w) in n.workers.iter().enumerate() {
        let id = i.to_string();
        let l: &[(&str, &str)] = &[("worker", &id)];
        f.gauge(
            "swrouter_nat_sessions",
            "NAT sessions in the worker's table.",
            l,
            w.sessions as f64,
        );
        f.gauge(
            "swrouter_nat_shadow_sessions",
            "Sessions the worker mirrors as another worker's backup.",
            l,
            w.shadow as f64,
        );
        for (name, help, v) in [
            (
                "swrouter_nat_sessions_created_total",
                "NAT sessions created.",
                w.created,
            ),
            (
                "swrouter_nat_sessions_expired_total",
                "NAT sessions expired.",
                w.expired,
            ),
            (
                "swrouter_nat_sessions_adopted_total",
                "Sessions taken over from a failed worker.",
                w.adopted,
            ),
            (
                "swrouter_nat_translated_out_packets_total",
                "Packets translated inside to outside.",
                w.out_translated,
            ),
            (
                "swrouter_nat_translated_in_packets_total",
                "Packets translated outside to inside.",
                w.in_translated,
            ),
            (
                "swrouter_nat_icmp_errors_total",
                "ICMP errors translated with their quoted header.",
                w.icmp_errors,
            ),
            (
                "swrouter_nat_hairpin_packets_total",
                "Hairpinned packets.",
                w.hairpin,
            ),
            (
                "swrouter_nat_port_exhausted_total",
                "New flows refused for want of an outside port.",
                w.port_exhausted,
            ),
            (
                "swrouter_nat_misdelivered_packets_total",
                "Packets that reached a worker not owning their VID (must stay 0).",
                w.misdelivered,
            ),
            (
                "swrouter_nat_handed_off_packets_total",
                "Packets handed to the worker owning their session.",
                w.handed_off,
            ),
            (
                "swrouter_nat_handed_in_packets_total",
                "Packets other workers handed to this one.",
                w.handed_in,
            ),
            (
                "swrouter_nat_setup_requests_total",
                "Set-up requests sent to the switch processor.",
                w.setup_requests,
            ),
            (
                "swrouter_nat_mirror_overflow_total",
                "Mirror records no backup queue had room for.",
                w.mirror_overflow,
            ),
        ] {
            f.counter(name, help, l, v);
        }
    }
    let s = &n.switch;
    for (name, help, v) in [
        (
            "swrouter_nat_switch_setups_total",
            "Set-up requests the switch processor assigned to a worker.",
            s.setups,
        ),
        (
            "swrouter_nat_switch_not_setup_total",
            "Packets handed to the switch processor that were not set-ups (must stay 0).",
            s.not_setup,
        ),
        (
            "swrouter_nat_switch_failovers_total",
            "Workers failed over to their backups.",
            s.failovers,
        ),
        (
            "swrouter_nat_switch_restarts_total",
            "Workers restarted with a new VID.",
            s.restarts,
        ),
        (
            "swrouter_nat_switch_extra_vids_total",
            "Extra VIDs granted to workers whose port blocks were full.",
            s.extra_vids,
        ),
        (
            "swrouter_nat_switch_extra_vids_refused_total",
            "Requests for an extra VID refused (no VID could be spared).",
            s.extra_refused,
        ),
        (
            "swrouter_nat_switch_lost_vids_total",
            "VIDs lost with their sessions.",
            s.lost_vids,
        ),
    ] {
        f.counter(name, help, &[], v);
    }
    let e = &n.esp;
    f.gauge(
        "swrouter_nat_esp_sessions",
        "Raw ESP sessions (keyed by SPI) held.",
        &[],
        e.sessions as f64,
    );
    for (dir, v) in [("out", e.out_packets), ("in", e.in_packets)] {
        f.counter(
            "swrouter_nat_esp_packets_total",
            "Raw ESP packets translated, by direction.",
            &[("direction", dir)],
            v,
        );
    }
    for (name, help, v) in [
        (
            "swrouter_nat_esp_created_total",
            "ESP sessions created by an inside host's packet.",
            e.created,
        ),
        (
            "swrouter_nat_esp_learnt_total",
            "Inbound ESP SPIs learnt (bound to the remote's pending session).",
            e.learnt,
        ),
        (
            "swrouter_nat_esp_pending_replaced_total",
            "Unlearnt ESP sessions that lost their remote's pending slot to a newer one.",
            e.pending_replaced,
        ),
        (
            "swrouter_nat_esp_no_session_total",
            "Inbound ESP packets with an unknown SPI and nothing pending (dropped).",
            e.no_session,
        ),
        (
            "swrouter_nat_esp_full_total",
            "New ESP sessions refused for a full table (dropped).",
            e.full,
        ),
        (
            "swrouter_nat_esp_expired_total",
            "ESP sessions expired.",
            e.expired,
        ),
    ] {
        f.counter(name, help, &[], v);
    }
    let h = &n.ha;
    for (name, help, v) in [
        (
            "swrouter_nat_ha_published_total",
            "NAT session records published for the HA peer on a change.",
            h.published,
        ),
        (
            "swrouter_nat_ha_exported_total",
            "NAT session records published for the HA peer by full re-exports.",
            h.exported,
        ),
        (
            "swrouter_nat_ha_synced_in_total",
            "NAT session records of the HA peer received.",
            h.synced_in,
        ),
        (
            "swrouter_nat_ha_applied_total",
            "NAT session records of the HA peer applied.",
            h.applied,
        ),
        (
            "swrouter_nat_ha_refused_total",
            "NAT session records of the HA peer refused (port out of range, table full, conflict, unknown session).",
            h.refused,
        ),
        (
            "swrouter_nat_ha_undecodable_total",
            "NAT session records of the HA peer that did not decode.",
            h.undecodable,
        ),
        (
            "swrouter_nat_ha_standby_drops_total",
            "Packets dropped because they needed a new NAT session on the HA standby.",
            h.standby_drops,
        ),
    ] {
        f.counter(name, help, &[], v);
    }
    f.gauge(
        "swrouter_nat_ha_active",
        "1 when the node's NAT is HA active (creates sessions); 0 on the standby.",
        &[],
        flag(h.active),
    );
    for (i, up) in s.operational.iter().enumerate() {
        let id = i.to_string();
        f.gauge(
            "swrouter_nat_worker_operational",
            "1 when the worker is operational for NAT.",
            &[("worker", &id)],
            flag(*up),
        );
    }
}

/// The snapshot in the Prometheus text format.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    // Fails only for a family without samples or name, which `Families` never builds; a scrape
    // then still gets what was encoded before it.
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families(s), &mut out) {
        tracing::warn!(error = %e, "encoding metrics failed");
    }
    out
}

fn router(f: &mut Families, s: &Status) {
    let r = &s.router;
    f.gauge(
        "swrouter_info",
        "The router: its id, I/O backends and version (always 1).",
        &[
            ("router_id", &r.id),
            ("backend", &r.backend),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1.0,
    );
    f.gauge(
        "swrouter_uptime_seconds",
        "Seconds since the router started.",
        &[],
        r.uptime_secs as f64,
    );
    f.gauge(
        "swrouter_workers",
        "Pipeline worker threads.",
        &[],
        r.workers as f64,
    );
    f.counter(
        "swrouter_config_reloads_total",
        "Successful configuration reloads.",
        &[],
        r.reloads,
    );
}

fn interfaces(f: &mut Families, s: &Status) {
    for i in &s.interfaces {
        let l: &[(&str, &str)] = &[("interface", &i.name)];
        f.gauge(
            "swrouter_interface_info",
            "An interface the router owns: its address, MAC and I/O backend (always 1).",
            &[
                ("interface", &i.name),
                ("address", &i.address),
                ("mac", &i.mac),
                ("backend", &i.backend),
            ],
            1.0,
        );
        f.gauge(
            "swrouter_interface_mtu_bytes",
            "Largest IPv4 packet sent on the interface.",
            l,
            f64::from(i.mtu),
        );
        for (name, help, v) in [
            (
                "swrouter_interface_receive_packets_total",
                "Frames received.",
                i.rx_packets,
            ),
            (
                "swrouter_interface_receive_bytes_total",
                "Bytes received.",
                i.rx_bytes,
            ),
            (
                "swrouter_interface_receive_errors_total",
                "Receive errors.",
                i.rx_errors,
            ),
            (
                "swrouter_interface_receive_ring_full_total",
                "Frames the kernel dropped before the router could read them (receive ring full).",
                i.rx_ring_full,
            ),
            (
                "swrouter_interface_receive_truncated_total",
                "Frames the mmap ring handed over too big for their slot (lost).",
                i.rx_truncated,
            ),
            (
                "swrouter_interface_transmit_packets_total",
                "Frames sent.",
                i.tx_packets,
            ),
            (
                "swrouter_interface_transmit_bytes_total",
                "Bytes sent.",
                i.tx_bytes,
            ),
            (
                "swrouter_interface_transmit_errors_total",
                "Send errors.",
                i.tx_errors,
            ),
        ] {
            f.counter(name, help, l, v);
        }
    }
}

fn pipeline(f: &mut Families, s: &Status) {
    for st in &s.pipeline {
        let l: &[(&str, &str)] = &[("stage", &st.stage)];
        f.counter(
            "swrouter_stage_input_packets_total",
            "Packets that entered the pipeline stage.",
            l,
            st.packets_in,
        );
        f.counter(
            "swrouter_stage_output_packets_total",
            "Packets the stage passed on.",
            l,
            st.out,
        );
        f.counter(
            "swrouter_stage_consumed_packets_total",
            "Packets the stage consumed on purpose (delivered to the router, answered, queued).",
            l,
            st.consumed,
        );
        for (reason, n) in &st.drops {
            f.counter(
                "swrouter_stage_dropped_packets_total",
                "Packets the stage dropped, by reason (a reason appears with its first drop).",
                &[("stage", &st.stage), ("reason", reason)],
                *n,
            );
        }
    }
    for w in &s.workers {
        let id = w.id.to_string();
        let l: &[(&str, &str)] = &[("worker", &id)];
        f.counter(
            "swrouter_worker_receive_packets_total",
            "Frames the worker received.",
            l,
            w.rx_packets,
        );
        f.counter(
            "swrouter_worker_transmit_packets_total",
            "Frames the worker sent.",
            l,
            w.tx_packets,
        );
        f.counter(
            "swrouter_worker_bursts_total",
            "Receive bursts the worker ran through the pipeline.",
            l,
            w.bursts,
        );
        f.counter(
            "swrouter_worker_icmp_rate_limited_total",
            "ICMP errors the worker suppressed by the rate limit.",
            l,
            w.icmp_rate_limited,
        );
    }
    let mut routes: std::collections::BTreeMap<&str, u64> = Default::default();
    for r in &s.routes {
        *routes.entry(r.kind.as_str()).or_default() += 1;
    }
    for (kind, n) in routes {
        f.gauge(
            "swrouter_routes",
            "Installed routes, by kind (connected, static).",
            &[("kind", kind)],
            n as f64,
        );
    }
    f.gauge(
        "swrouter_neighbours",
        "Bindings in the ARP table.",
        &[],
        s.arp.len() as f64,
    );
    let n = &s.neighbour_stats;
    for (name, help, v) in [
        (
            "swrouter_neighbour_learned_total",
            "ARP bindings learnt.",
            n.learned,
        ),
        (
            "swrouter_neighbour_changed_total",
            "ARP bindings whose MAC changed.",
            n.changed,
        ),
        (
            "swrouter_neighbour_expired_total",
            "ARP bindings expired.",
            n.expired,
        ),
        (
            "swrouter_neighbour_table_full_total",
            "ARP bindings refused for a full table.",
            n.table_full,
        ),
    ] {
        f.counter(name, help, &[], v);
    }
}

fn wccp(f: &mut Families, w: &crate::status::WccpStatus) {
    for (t, n) in &w.received {
        f.counter(
            "swrouter_wccp_messages_received_total",
            "WCCP messages received, by type.",
            &[("type", t)],
            *n,
        );
    }
    for (t, n) in &w.sent {
        f.counter(
            "swrouter_wccp_messages_sent_total",
            "WCCP messages sent, by type.",
            &[("type", t)],
            *n,
        );
    }
    for (r, n) in &w.drops {
        f.counter(
            "swrouter_wccp_messages_dropped_total",
            "WCCP messages dropped or rejected, by reason.",
            &[("reason", r)],
            *n,
        );
    }
    f.counter(
        "swrouter_wccp_outbox_full_total",
        "WCCP datagrams the outbox refused (control plane faster than worker 0).",
        &[],
        w.outbox_full,
    );
    if let Some(h) = &w.ha_sync {
        f.gauge(
            "swrouter_wccp_sync_active",
            "WCCP HA sync: 1 while this node is active (answers caches), 0 while standby.",
            &[],
            if h.role == "active" { 1.0 } else { 0.0 },
        );
        for (op, n) in [("upsert", h.published), ("delete", h.deleted)] {
            f.counter(
                "swrouter_wccp_sync_published_total",
                "WCCP HA sync records published, by operation.",
                &[("op", op)],
                n,
            );
        }
        f.counter(
            "swrouter_wccp_sync_exports_total",
            "WCCP HA sync full re-exports (takeover, feed overflow).",
            &[],
            h.exports,
        );
        f.counter(
            "swrouter_wccp_sync_omitted_total",
            "WCCP HA sync records left out because they would not fit.",
            &[],
            h.omitted,
        );
        f.counter(
            "swrouter_wccp_sync_applied_total",
            "WCCP HA sync records of the peer applied.",
            &[],
            h.applied,
        );
        for (r, n) in &h.refused {
            f.counter(
                "swrouter_wccp_sync_refused_total",
                "WCCP HA sync records of the peer refused, by reason.",
                &[("reason", r)],
                *n,
            );
        }
        f.counter(
            "swrouter_wccp_sync_standby_ignored_total",
            "WCCP datagrams not answered while standby.",
            &[],
            h.standby_ignored,
        );
    }
    if let Some(ff) = &w.fast_failover {
        f.gauge(
            "swrouter_wccp_probe_interval_seconds",
            "Fast failover: time between probes of one cache.",
            &[],
            f64::from(ff.probe_interval_ms) / 1000.0,
        );
        f.gauge(
            "swrouter_wccp_probe_misses",
            "Fast failover: misses in a row that take a cache out.",
            &[],
            f64::from(ff.probe_misses),
        );
    }
    if let Some(a) = &w.flow_affinity {
        f.gauge(
            "swrouter_wccp_affinity_flows",
            "Flows the flow-affinity table remembers now.",
            &[],
            a.flows as f64,
        );
        f.gauge(
            "swrouter_wccp_affinity_flows_max",
            "Flow-affinity table capacity over all workers.",
            &[],
            a.capacity as f64,
        );
        f.counter(
            "swrouter_wccp_affinity_evicted_total",
            "Flows forgotten early because their slot set was full.",
            &[],
            a.evicted,
        );
        if let Some(h) = &a.ha_sync {
            f.counter(
                "swrouter_wccp_affinity_sync_published_total",
                "Flow-affinity records published to the HA peer while active (new flows, re-exports).",
                &[],
                h.published,
            );
            f.counter(
                "swrouter_wccp_affinity_sync_deleted_total",
                "Flow-affinity deletes published to the HA peer (flows ended, expired, evicted).",
                &[],
                h.deleted,
            );
            f.gauge(
                "swrouter_wccp_affinity_adopted_flows",
                "The HA peer's flows held now, waiting for a segment of theirs.",
                &[],
                h.adopted as f64,
            );
            f.counter(
                "swrouter_wccp_affinity_adopted_applied_total",
                "The HA peer's flow-affinity records applied.",
                &[],
                h.applied,
            );
            f.counter(
                "swrouter_wccp_affinity_adopted_refused_total",
                "The HA peer's flow-affinity records refused (undecodable, received while active, or the adopted table full).",
                &[],
                h.refused,
            );
            f.counter(
                "swrouter_wccp_affinity_adopted_hits_total",
                "Segments whose flow a worker found among the HA peer's adopted flows.",
                &[],
                h.adopted_hits,
            );
            f.counter(
                "swrouter_wccp_affinity_adopted_expired_total",
                "Adopted flows no segment claimed within the idle timeout of a takeover.",
                &[],
                h.expired,
            );
        }
    }
    for svc in &w.services {
        let id = svc.id.to_string();
        let l: &[(&str, &str)] = &[("service", &id)];
        f.gauge(
            "swrouter_wccp_service_info",
            "A WCCP service group: kind, security, assignment method, designated cache (always 1).",
            &[
                ("service", &id),
                ("kind", &svc.kind),
                ("security", &svc.security),
                ("assignment", svc.assignment_method.as_deref().unwrap_or("")),
                (
                    "designated_cache",
                    svc.designated_cache.as_deref().unwrap_or(""),
                ),
            ],
            1.0,
        );
        f.gauge(
            "swrouter_wccp_service_caches",
            "Caches heard from in the service group.",
            l,
            svc.caches.len() as f64,
        );
        f.gauge(
            "swrouter_wccp_service_usable_caches",
            "Caches in the Router View and assignable.",
            l,
            svc.caches.iter().filter(|c| c.usable).count() as f64,
        );
        f.gauge(
            "swrouter_wccp_service_transmit_seconds",
            "The service group's TRANSMIT_T (HERE_I_AM period): fixed by its first usable cache, else the default.",
            l,
            svc.timers.transmit_ms as f64 / 1000.0,
        );
        f.gauge(
            "swrouter_wccp_service_removal_seconds",
            "Silence after which the service group removes a cache on the group's timers.",
            l,
            svc.timers.remove_after_ms as f64 / 1000.0,
        );
        f.gauge(
            "swrouter_wccp_service_change_number",
            "The service group's Member Change Number.",
            l,
            f64::from(svc.change_number),
        );
        f.counter(
            "swrouter_wccp_service_messages_received_total",
            "WCCP messages received for the service group.",
            l,
            svc.messages_in,
        );
        for (r, n) in &svc.drops {
            f.counter(
                "swrouter_wccp_service_messages_dropped_total",
                "WCCP messages of the service group dropped, by reason.",
                &[("service", &id), ("reason", r)],
                *n,
            );
        }
        let t = &svc.traffic;
        f.traffic(
            (
                "swrouter_wccp_redirected_packets_total",
                "swrouter_wccp_redirected_bytes_total",
            ),
            "redirected to the service group's caches",
            l,
            &t.redirected,
        );
        f.traffic(
            (
                "swrouter_wccp_returned_packets_total",
                "swrouter_wccp_returned_bytes_total",
            ),
            "returned by the caches and forwarded",
            l,
            &t.returned,
        );
        f.traffic(
            (
                "swrouter_wccp_bypassed_packets_total",
                "swrouter_wccp_bypassed_bytes_total",
            ),
            "forwarded normally because fast failover took their cache out",
            l,
            &t.bypassed,
        );
        f.traffic(
            (
                "swrouter_wccp_unassigned_packets_total",
                "swrouter_wccp_unassigned_bytes_total",
            ),
            "forwarded normally: no cache holds their bucket or mask value",
            l,
            &t.unassigned,
        );
        f.traffic(
            (
                "swrouter_wccp_denied_packets_total",
                "swrouter_wccp_denied_bytes_total",
            ),
            "forwarded normally: the redirect list denied them",
            l,
            &t.denied,
        );
        f.traffic(
            (
                "swrouter_wccp_affinity_kept_packets_total",
                "swrouter_wccp_affinity_kept_bytes_total",
            ),
            "kept on the cache their TCP flow started on (flow affinity)",
            l,
            &t.affinity_kept,
        );
        f.traffic(
            (
                "swrouter_wccp_fragments_redirected_packets_total",
                "swrouter_wccp_fragments_redirected_bytes_total",
            ),
            "of non-first IP fragments sent where their first fragment went (part of redirected)",
            l,
            &t.fragments_redirected,
        );
        f.traffic(
            (
                "swrouter_wccp_fragments_unmatched_packets_total",
                "swrouter_wccp_fragments_unmatched_bytes_total",
            ),
            "of non-first IP fragments whose first fragment was not seen (forwarded normally)",
            l,
            &t.fragments_unmatched,
        );
        for (names, what, v) in [
            (
                ("swrouter_wccp_fail_open_forwarded_packets_total", "swrouter_wccp_fail_open_forwarded_bytes_total"),
                "no cache could take (unassigned or bypassed): forwarded normally (fail-policy open)",
                &t.fail_open_forwarded,
            ),
            (
                ("swrouter_wccp_fail_closed_dropped_packets_total", "swrouter_wccp_fail_closed_dropped_bytes_total"),
                "no cache could take: dropped (fail-policy closed-drop, later fragments of closed-reject)",
                &t.fail_closed_dropped,
            ),
            (
                ("swrouter_wccp_fail_closed_rejected_packets_total", "swrouter_wccp_fail_closed_rejected_bytes_total"),
                "no cache could take: dropped and answered with a TCP RST or ICMP prohibited (fail-policy closed-reject)",
                &t.fail_closed_rejected,
            ),
            (
                ("swrouter_wccp_mss_clamped_packets_total", "swrouter_wccp_mss_clamped_bytes_total"),
                "GRE-redirected SYNs and their SYN-ACKs whose MSS option was lowered (gre-mss-clamp)",
                &t.mss_clamped,
            ),
            (
                ("swrouter_wccp_gre_fragmented_packets_total", "swrouter_wccp_gre_fragmented_bytes_total"),
                "GRE-redirected without DF and too big once encapsulated: sent in IP fragments",
                &t.gre_fragmented,
            ),
            (
                ("swrouter_wccp_gre_too_big_packets_total", "swrouter_wccp_gre_too_big_bytes_total"),
                "GRE-redirected with DF and too big once encapsulated: dropped, fragmentation needed sent",
                &t.gre_too_big,
            ),
        ] {
            f.traffic(names, what, l, v);
        }
        for c in &svc.caches {
            let l: &[(&str, &str)] = &[("service", &id), ("cache", &c.address)];
            f.gauge(
                "swrouter_wccp_cache_info",
                "A cache of a service group: phase and negotiated methods (always 1).",
                &[
                    ("service", &id),
                    ("cache", &c.address),
                    ("phase", &c.phase),
                    ("methods", c.methods.as_deref().unwrap_or("")),
                ],
                1.0,
            );
            f.gauge(
                "swrouter_wccp_cache_usable",
                "1 when the cache is in the Router View and assignable.",
                l,
                flag(c.usable),
            );
            f.gauge(
                "swrouter_wccp_cache_designated",
                "1 for the designated cache of the service group.",
                l,
                flag(c.designated),
            );
            f.gauge(
                "swrouter_wccp_cache_weight",
                "The weight the cache announced.",
                l,
                f64::from(c.weight),
            );
            f.gauge(
                "swrouter_wccp_cache_buckets",
                "Hash buckets the cache holds in the data plane.",
                l,
                c.buckets as f64,
            );
            f.gauge(
                "swrouter_wccp_cache_mask_values",
                "Mask values the cache holds in the data plane.",
                l,
                c.mask_values as f64,
            );
            f.gauge(
                "swrouter_wccp_cache_here_i_am_age_seconds",
                "Seconds since the cache's last HERE_I_AM.",
                l,
                c.last_seen_secs as f64,
            );
            f.traffic(
                (
                    "swrouter_wccp_cache_redirected_packets_total",
                    "swrouter_wccp_cache_redirected_bytes_total",
                ),
                "redirected to the cache",
                l,
                &c.redirected,
            );
            f.traffic(
                (
                    "swrouter_wccp_cache_returned_packets_total",
                    "swrouter_wccp_cache_returned_bytes_total",
                ),
                "returned by the cache",
                l,
                &c.returned,
            );
            f.traffic(
                (
                    "swrouter_wccp_cache_bypassed_packets_total",
                    "swrouter_wccp_cache_bypassed_bytes_total",
                ),
                "meant for the cache while fast failover had taken it out",
                l,
                &c.bypassed,
            );
            if c.probe != "-" {
                f.state(
                    "swrouter_wccp_cache_probe_state",
                    "Fast-failover probe state of the cache: 1 on the current one (unanswered: never answered, so never failed over).",
                    l,
                    &["up", "down", "unanswered"],
                    &c.probe,
                );
            }
            if let Some(rtt) = c.probe_rtt_us {
                f.gauge(
                    "swrouter_wccp_cache_probe_rtt_seconds",
                    "Round-trip time of the cache's last successful probe.",
                    l,
                    rtt as f64 / 1e6,
                );
            }
            f.counter(
                "swrouter_wccp_cache_failovers_total",
                "Times fast failover took the cache out.",
                l,
                c.failovers,
            );
            if c.probe_changed_unix_ms != 0 {
                f.gauge(
                    "swrouter_wccp_cache_probe_changed_timestamp_seconds",
                    "When fast failover last took the cache out or put it back (Unix time).",
                    l,
                    c.probe_changed_unix_ms as f64 / 1000.0,
                );
            }
        }
    }
}

fn steering(f: &mut Families, st: &crate::steering_status::SteeringStatus) {
    for svc in &st.services {
        let l: &[(&str, &str)] = &[("service", &svc.name)];
        for (name, help, v) in [
            (
                "swrouter_steering_forward_packets_total",
                "Client to service packets steered.",
                svc.forward_packets,
            ),
            (
                "swrouter_steering_forward_bytes_total",
                "Client to service bytes steered.",
                svc.forward_bytes,
            ),
            (
                "swrouter_steering_reverse_packets_total",
                "Service to client packets steered.",
                svc.reverse_packets,
            ),
            (
                "swrouter_steering_reverse_bytes_total",
                "Service to client bytes steered.",
                svc.reverse_bytes,
            ),
        ] {
            f.counter(name, help, l, v);
        }
        for (r, n) in &svc.drops {
            f.counter(
                "swrouter_steering_dropped_packets_total",
                "Packets of the steering service dropped, by reason.",
                &[("service", &svc.name), ("reason", r)],
                *n,
            );
        }
        for a in &svc.acl {
            let l: &[(&str, &str)] = &[
                ("service", &svc.name),
                ("rule", &a.rule),
                ("action", &a.action),
            ];
            f.counter(
                "swrouter_steering_acl_packets_total",
                "Packets an ACL rule of the steering service decided.",
                l,
                a.packets,
            );
            f.counter(
                "swrouter_steering_acl_bytes_total",
                "Bytes of the packets an ACL rule decided.",
                l,
                a.bytes,
            );
        }
    }
    for d in &st.devices {
        let l: &[(&str, &str)] = &[("device", &d.name)];
        f.gauge(
            "swrouter_steering_device_info",
            "A steering device and its mode (always 1).",
            &[("device", &d.name), ("mode", &d.mode)],
            1.0,
        );
        f.state(
            "swrouter_steering_device_health",
            "Health of the device as the data plane sees it: 1 on the current state.",
            l,
            &["in-service", "draining", "out-of-service"],
            &d.health,
        );
        for (name, help, v) in [
            (
                "swrouter_steering_device_packets_total",
                "Frames sent to the device on the main path.",
                d.packets,
            ),
            (
                "swrouter_steering_device_bytes_total",
                "Bytes sent to the device on the main path.",
                d.bytes,
            ),
            (
                "swrouter_steering_device_copies_total",
                "Copies sent to the device.",
                d.copies,
            ),
            (
                "swrouter_steering_device_copy_bytes_total",
                "Bytes of the copies sent to the device.",
                d.copy_bytes,
            ),
            (
                "swrouter_steering_device_copies_dropped_total",
                "Copies for the device lost to a full copy queue.",
                d.copy_drops,
            ),
            (
                "swrouter_steering_device_downs_total",
                "Times the health checks took the device out of service.",
                d.downs,
            ),
        ] {
            f.counter(name, help, l, v);
        }
        for (result, v) in [("accepted", d.probe_ok), ("refused", d.probe_refused)] {
            f.counter(
                "swrouter_steering_device_probe_answers_total",
                "Health-check probe answers from the device, by result.",
                &[("device", &d.name), ("result", result)],
                v,
            );
        }
        if d.changed_unix_ms != 0 {
            f.gauge(
                "swrouter_steering_device_health_changed_timestamp_seconds",
                "When the device last went out of or back into service (Unix time).",
                l,
                d.changed_unix_ms as f64 / 1000.0,
            );
        }
    }
    f.counter(
        "swrouter_steering_passive_lost_total",
        "Passive-check evidence (SYNs, handshake answers) lost to a full queue.",
        &[],
        st.passive_lost,
    );
    f.counter(
        "swrouter_steering_drain_evicted_total",
        "Connections opened in a reset pool's drain window forgotten for newer ones.",
        &[],
        st.drain_evicted,
    );
    f.counter(
        "swrouter_steering_reload_grace_packets_total",
        "Frames back from a device of the steering tables the last reload replaced, finished by those tables during the grace.",
        &[],
        st.reload_grace_packets,
    );
    if let Some(h) = &st.ha_sync {
        f.counter(
            "swrouter_steering_sync_published_total",
            "Steering device health records published to the HA peer while active.",
            &[],
            h.published,
        );
        f.counter(
            "swrouter_steering_sync_applied_total",
            "The HA peer's steering device health records applied while standby.",
            &[],
            h.applied,
        );
        f.counter(
            "swrouter_steering_sync_refused_total",
            "The HA peer's steering device health records refused (undecodable, unknown device, or received while active).",
            &[],
            h.refused,
        );
        f.counter(
            "swrouter_steering_sync_drain_published_total",
            "Steering drain-memory records published to the HA peer while active.",
            &[],
            h.drain_published,
        );
        f.counter(
            "swrouter_steering_sync_drain_applied_total",
            "The HA peer's steering drain-memory records applied while standby.",
            &[],
            h.drain_applied,
        );
    }
}

fn control(f: &mut Families, s: &Status) {
    if let Some(t) = &s.trace {
        f.gauge(
            "swrouter_trace_armed",
            "1 while the packet trace still marks packets (swrouter trace add).",
            &[],
            if t.armed { 1.0 } else { 0.0 },
        );
        f.gauge(
            "swrouter_trace_records",
            "Packet-trace records held (all workers).",
            &[],
            t.captured as f64,
        );
    }
    if let Some(p) = &s.probes {
        for (name, help, v) in [
            (
                "swrouter_probes_sent_total",
                "Health probes (TCP SYNs) sent.",
                p.sent,
            ),
            (
                "swrouter_probes_answered_total",
                "Answers that matched a probe (accepted or refused).",
                p.answered,
            ),
            (
                "swrouter_probes_ignored_total",
                "Segments to a probe port that matched no probe.",
                p.ignored,
            ),
            (
                "swrouter_probes_steering_outbox_full_total",
                "Steering probes lost to a full outbox.",
                p.steering_outbox_full,
            ),
        ] {
            f.counter(name, help, &[], v);
        }
    }
    if let Some(m) = &s.management {
        f.gauge(
            "swrouter_management_clients",
            "Management socket clients being served now.",
            &[],
            m.clients as f64,
        );
        f.counter(
            "swrouter_management_requests_total",
            "Management requests answered.",
            &[],
            m.served,
        );
        for (reason, v) in [
            ("busy", m.refused_busy),
            ("peer", m.refused_peer),
            ("bad-request", m.bad_requests),
            ("timeout", m.timed_out),
        ] {
            f.counter(
                "swrouter_management_unserved_total",
                "Management clients not served, by reason.",
                &[("reason", reason)],
                v,
            );
        }
    }
    if let Some(m) = &s.metrics {
        f.counter(
            "swrouter_metrics_scrapes_total",
            "Scrapes of /metrics answered.",
            &[],
            m.served,
        );
        for (reason, v) in [
            ("busy", m.refused_busy),
            ("bad-request", m.bad_requests),
            ("not-found", m.not_found),
            ("timeout", m.timed_out),
        ] {
            f.counter(
                "swrouter_metrics_unserved_total",
                "HTTP requests to the metrics listener not answered with metrics, by reason.",
                &[("reason", reason)],
                v,
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn traffic(p: u64) -> serde_json::Value {
        json!({"packets": p, "bytes": p * 100})
    }

    fn wccp() -> serde_json::Value {
        json!({
            "services": [{
                "id": 0, "kind": "standard", "security": "md5", "definition": null,
                "router_ids": ["10.0.2.1"], "receive_id": 4, "change_number": 2,
                "key": "10.0.2.10/1", "designated_cache": "10.0.2.10",
                "assignment_method": "hash",
                "caches": [{
                    "address": "10.0.2.10", "phase": "usable", "usable": true,
                    "designated": true, "receive_id_echoed": true,
                    "methods": "gre/gre/hash", "weight": 0, "buckets": 256,
                    "bucket_ranges": "0-255", "mask_values": 0, "last_seen_secs": 4,
                    "l2_adjacent": true, "redirected": traffic(7), "returned": traffic(1),
                    "bypassed": traffic(0), "probe": "up", "probe_rtt_us": 250,
                    "failovers": 0, "probe_changed_unix_ms": 0
                }],
                "messages_in": 9, "drops": {},
                "traffic": {"redirected": traffic(7), "returned": traffic(1),
                            "bypassed": traffic(0), "unassigned": traffic(2),
                            "denied": traffic(0), "affinity_kept": traffic(0)},
                "redirect_list_rules": 0, "probe_port": 3128
            }],
            "received": {"HERE_I_AM": 9}, "sent": {"I_SEE_YOU": 9},
            "drops": {"bad-md5": 1}, "outbox_full": 0,
            "fast_failover": {"probe_interval_ms": 500, "probe_misses": 3},
            "flow_affinity": null
        })
    }

    fn steering() -> serde_json::Value {
        json!({
            "services": [{"name": "web", "forward_packets": 5, "forward_bytes": 500,
                          "reverse_packets": 4, "reverse_bytes": 400,
                          "drops": {"steering-acl-deny": 0},
                          "acl": [{"rule": "permit src 10.0.1.0/24", "action": "permit",
                                   "client": null, "packets": 5, "bytes": 500}]}],
            "devices": [{"name": "fw \"1\"", "mode": "transparent", "health": "draining",
                         "packets": 5, "bytes": 500, "copies": 0, "copy_bytes": 0,
                         "copy_drops": 0, "probe_ok": 3, "probe_refused": 1, "downs": 1,
                         "changed_unix_ms": 1700000000000u64}],
            "passive_lost": 0, "drain_evicted": 0
        })
    }

    /// A made-up snapshot with one of everything: an interface, a stage with a drop, a
    /// worker, a WCCP service with a cache, a steering service and device.
    pub(crate) fn sample() -> Status {
        serde_json::from_value(json!({
            "router": {"id": "10.0.2.1", "pid": 7, "uptime_secs": 30, "workers": 1,
                       "config": "/etc/swrouter/router.conf", "reloads": 2, "backend": "mmap"},
            "interfaces": [{
                "name": "eth0", "address": "10.0.1.1/24", "mac": "02:00:00:00:01:01",
                "mtu": 1500, "ifindex": 2, "rx_packets": 11, "rx_bytes": 1100, "rx_errors": 1,
                "rx_ring_full": 3, "rx_truncated": 0, "backend": "mmap", "tx_packets": 12,
                "tx_bytes": 1200, "tx_errors": 0
            }],
            "routes": [
                {"prefix": "10.0.1.0/24", "via": null, "interface": "eth0", "kind": "connected"},
                {"prefix": "0.0.0.0/0", "via": "10.0.1.254", "interface": "eth0", "kind": "static"}
            ],
            "arp": [],
            "pipeline": [{"stage": "ipv4-input", "in": 10, "out": 8, "consumed": 1,
                          "drops": {"ipv4-bad-checksum": 1}}],
            "workers": [{"id": 0, "rx_packets": 11, "tx_packets": 12, "bursts": 5,
                         "icmp_rate_limited": 0}],
            "neighbour_stats": {"learned": 1, "changed": 0, "expired": 0, "table_full": 0},
            "wccp": wccp(),
            "steering": steering(),
            "management": {"clients": 1, "max_clients": 16, "served": 3, "refused_busy": 0,
                           "refused_peer": 0, "bad_requests": 0, "timed_out": 0},
            "probes": {"sent": 6, "answered": 6, "ignored": 0, "steering_outbox_full": 0},
            "metrics": {"listen": "127.0.0.1:9469", "served": 2, "refused_busy": 0,
                        "bad_requests": 0, "not_found": 1, "timed_out": 0},
            "trace": {"armed": true, "filter": "tcp", "count": 5, "remaining": 2,
                      "captured": 3, "discarded": 0, "per_worker_limit": 1000},
            "cluster": serde_json::to_value(crate::tables::cluster::ClusterStatus {
                cluster_mac: "03:00:5e:c1:00:01".into(),
                epoch: 4,
                hash_key_set: true,
                ids_owned: 85,
                ids_releasing: 1,
                ids_foreign: 170,
                fences: 0,
                interfaces: Vec::new(),
                frames: crate::tables::cluster::ClusterFrames {
                    owned: 30,
                    foreign: 61,
                    held: 2,
                    handed: 2,
                    ..Default::default()
                },
            })
            .unwrap(),
            "nat": serde_json::to_value(crate::natd::NatStatus {
                pool: vec![std::net::Ipv4Addr::new(192, 0, 2, 1)],
                ports: "1024-65535".into(),
                block_len: 8192,
                workers: vec![crate::natd::WorkerStats {
                    sessions: 4,
                    created: 9,
                    out_translated: 17,
                    ..Default::default()
                }],
                switch: crate::natd::SwitchStats {
                    setups: 9,
                    operational: vec![true],
                    ..Default::default()
                },
                ha: crate::natd::NatHaStatus {
                    active: false,
                    sync: true,
                    applied: 12,
                    standby_drops: 3,
                    ..Default::default()
                },
                esp: crate::natd::esp::EspStatus {
                    sessions: 2,
                    in_packets: 40,
                    out_packets: 41,
                    learnt: 2,
                    no_session: 1,
                    ..Default::default()
                },
            })
            .unwrap()
        }))
        .unwrap()
    }

    /// The sample line of `name` with exactly `labels`, and its value.
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn the_status_text_has_a_cluster_section() {
        let text = crate::status::render(&sample());
        assert!(
            text.contains("cluster: MAC 03:00:5e:c1:00:01  epoch 4  key set  ids owned 85 releasing 1 foreign 170"),
            "{text}"
        );
        assert!(text.contains("owned 30  foreign 61  held 2 (released 0 handed 2 dropped 0)"));
    }

    #[test]
    fn every_part_of_the_snapshot_becomes_a_typed_family() {
        let fams = families(&sample());
        let kind = |n: &str| {
            fams.iter()
                .find(|f| f.name() == n)
                .map(|f| f.get_field_type())
                .unwrap_or_else(|| panic!("no family {n}"))
        };
        // Conventions: counters and only counters end in _total; every family has help.
        for f in &fams {
            assert!(f.name().starts_with("swrouter_"), "{}", f.name());
            assert_eq!(
                f.name().ends_with("_total"),
                f.get_field_type() == MetricType::COUNTER,
                "{}",
                f.name()
            );
            assert!(!f.help().is_empty(), "{}", f.name());
        }
        assert_eq!(
            kind("swrouter_wccp_redirected_packets_total"),
            MetricType::COUNTER
        );
        assert_eq!(kind("swrouter_wccp_cache_buckets"), MetricType::GAUGE);
        assert_eq!(kind("swrouter_interface_mtu_bytes"), MetricType::GAUGE);

        let text = render(&sample());
        for (series, v) in [
            ("swrouter_interface_receive_packets_total{interface=\"eth0\"}", 11.0),
            ("swrouter_interface_receive_bytes_total{interface=\"eth0\"}", 1100.0),
            ("swrouter_interface_receive_errors_total{interface=\"eth0\"}", 1.0),
            ("swrouter_interface_receive_ring_full_total{interface=\"eth0\"}", 3.0),
            ("swrouter_interface_transmit_packets_total{interface=\"eth0\"}", 12.0),
            ("swrouter_stage_input_packets_total{stage=\"ipv4-input\"}", 10.0),
            ("swrouter_stage_output_packets_total{stage=\"ipv4-input\"}", 8.0),
            ("swrouter_stage_consumed_packets_total{stage=\"ipv4-input\"}", 1.0),
            (
                "swrouter_stage_dropped_packets_total{stage=\"ipv4-input\",reason=\"ipv4-bad-checksum\"}",
                1.0,
            ),
            ("swrouter_worker_bursts_total{worker=\"0\"}", 5.0),
            ("swrouter_routes{kind=\"static\"}", 1.0),
            ("swrouter_config_reloads_total", 2.0),
            ("swrouter_wccp_redirected_packets_total{service=\"0\"}", 7.0),
            ("swrouter_wccp_redirected_bytes_total{service=\"0\"}", 700.0),
            ("swrouter_wccp_unassigned_packets_total{service=\"0\"}", 2.0),
            ("swrouter_wccp_affinity_kept_packets_total{service=\"0\"}", 0.0),
            (
                "swrouter_wccp_cache_redirected_packets_total{service=\"0\",cache=\"10.0.2.10\"}",
                7.0,
            ),
            (
                "swrouter_wccp_cache_buckets{service=\"0\",cache=\"10.0.2.10\"}",
                256.0,
            ),
            (
                "swrouter_wccp_cache_probe_state{service=\"0\",cache=\"10.0.2.10\",state=\"up\"}",
                1.0,
            ),
            (
                "swrouter_wccp_cache_probe_state{service=\"0\",cache=\"10.0.2.10\",state=\"down\"}",
                0.0,
            ),
            (
                "swrouter_wccp_cache_probe_rtt_seconds{service=\"0\",cache=\"10.0.2.10\"}",
                0.00025,
            ),
            ("swrouter_wccp_messages_dropped_total{reason=\"bad-md5\"}", 1.0),
            ("swrouter_wccp_probe_interval_seconds", 0.5),
            ("swrouter_steering_forward_packets_total{service=\"web\"}", 5.0),
            ("swrouter_nat_sessions{worker=\"0\"}", 4.0),
            ("swrouter_nat_translated_out_packets_total{worker=\"0\"}", 17.0),
            ("swrouter_nat_switch_setups_total", 9.0),
            ("swrouter_nat_worker_operational{worker=\"0\"}", 1.0),
            ("swrouter_nat_ha_applied_total", 12.0),
            ("swrouter_nat_ha_standby_drops_total", 3.0),
            ("swrouter_nat_ha_active", 0.0),
            ("swrouter_nat_esp_sessions", 2.0),
            ("swrouter_nat_esp_packets_total{direction=\"in\"}", 40.0),
            ("swrouter_nat_esp_packets_total{direction=\"out\"}", 41.0),
            ("swrouter_nat_esp_learnt_total", 2.0),
            ("swrouter_nat_esp_no_session_total", 1.0),
            ("swrouter_cluster_epoch", 4.0),
            ("swrouter_cluster_joined", 1.0),
            ("swrouter_cluster_ids{state=\"owned\"}", 85.0),
            ("swrouter_cluster_ids{state=\"foreign\"}", 170.0),
            ("swrouter_cluster_frames_total{fate=\"foreign\"}", 61.0),
            ("swrouter_cluster_frames_total{fate=\"handed\"}", 2.0),
            ("swrouter_cluster_frames_total{fate=\"hold-full\"}", 0.0),
            (
                "swrouter_steering_dropped_packets_total{service=\"web\",reason=\"steering-acl-deny\"}",
                0.0,
            ),
            // Label values are escaped by the encoder.
            (
                "swrouter_steering_device_health{device=\"fw \\\"1\\\"\",state=\"draining\"}",
                1.0,
            ),
            (
                "swrouter_steering_device_probe_answers_total{device=\"fw \\\"1\\\"\",result=\"refused\"}",
                1.0,
            ),
            (
                "swrouter_steering_device_health_changed_timestamp_seconds{device=\"fw \\\"1\\\"\"}",
                1.7e9,
            ),
            ("swrouter_probes_sent_total", 6.0),
            ("swrouter_trace_armed", 1.0),
            ("swrouter_trace_records", 3.0),
            ("swrouter_metrics_scrapes_total", 2.0),
            ("swrouter_metrics_unserved_total{reason=\"not-found\"}", 1.0),
        ] {
            assert_eq!(value(&text, series), Some(v), "{series} in\n{text}");
        }
        assert!(text.contains("# TYPE swrouter_wccp_redirected_packets_total counter\n"));
        assert!(text.contains("# TYPE swrouter_wccp_cache_buckets gauge\n"));
        assert!(text.contains("swrouter_info{router_id=\"10.0.2.1\",backend=\"mmap\",version=\""));
        // Parts the snapshot lacks (no flow affinity) give no families.
        assert!(!text.contains("swrouter_wccp_affinity_flows"));
    }

    #[test]
    fn vrrp_virtual_routers_become_labelled_series() {
        let mut s = sample();
        s.ha = Some(crate::ha_status::HaStatus {
            vrrp: vec![crate::ha_status::VrrpStatus {
                interface: "eth0".into(),
                vrid: 51,
                state: "master".into(),
                priority: 200,
                advert_interval_ms: 20,
                adverts_sent: 9,
                became_master: 1,
                drops: [("lower-priority".to_string(), 2)].into(),
                ..Default::default()
            }],
            interfaces: vec![crate::ha_status::VrrpIfaceStatus {
                interface: "eth0".into(),
                rx_errors: [("bad-ttl".to_string(), 3)].into(),
                unknown_vrid: 1,
            }],
            outbox_full: 0,
            ..Default::default()
        });
        let text = render(&s);
        let l = r#"interface="eth0",vrid="51""#;
        for series in [
            format!("swrouter_vrrp_state{{{l},state=\"master\"}} 1"),
            format!("swrouter_vrrp_state{{{l},state=\"backup\"}} 0"),
            format!("swrouter_vrrp_priority{{{l}}} 200"),
            format!("swrouter_vrrp_advert_interval_seconds{{{l}}} 0.02"),
            format!("swrouter_vrrp_adverts_sent_total{{{l}}} 9"),
            format!("swrouter_vrrp_transitions_total{{{l},to=\"master\"}} 1"),
            format!("swrouter_vrrp_adverts_dropped_total{{{l},reason=\"lower-priority\"}} 2"),
            r#"swrouter_vrrp_rx_errors_total{interface="eth0",reason="bad-ttl"} 3"#.to_string(),
            r#"swrouter_vrrp_unknown_vrid_total{interface="eth0"} 1"#.to_string(),
        ] {
            assert!(text.contains(&series), "{series} missing:\n{text}");
        }
    }

    #[test]
    fn the_sync_channel_becomes_series() {
        let mut s = sample();
        s.ha = Some(crate::ha_status::HaStatus {
            role: "standby".into(),
            sync: Some(crate::ha_status::SyncStatus {
                peer_alive: true,
                lag_messages: 3,
                messages_sent: 10,
                rejected: [("forged".to_string(), 2)].into(),
                pseudo_standby: Some(crate::ha_status::PseudoStandbyStatus {
                    connected: true,
                    accepted: 2,
                    ..Default::default()
                }),
                tables: [(
                    "nat-session".to_string(),
                    crate::ha_status::SyncTableStatus {
                        peer: 7,
                        ..Default::default()
                    },
                )]
                .into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let text = render(&s);
        for series in [
            r#"swrouter_ha_role{state="standby"} 1"#,
            "swrouter_ha_sync_peer_alive 1",
            "swrouter_ha_sync_in_sync 0",
            "swrouter_ha_sync_lag_messages 3",
            r#"swrouter_ha_sync_messages_total{direction="sent"} 10"#,
            r#"swrouter_ha_sync_rejected_total{reason="forged"} 2"#,
            r#"swrouter_ha_sync_entries{table="nat-session",side="peer"} 7"#,
            "swrouter_ha_pseudo_standby_connected 1",
            r#"swrouter_ha_pseudo_standby_connections_total{what="accepted"} 2"#,
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
    }

    #[test]
    fn a_bare_router_still_renders() {
        let mut s = sample();
        s.wccp = None;
        s.steering = None;
        s.management = None;
        s.probes = None;
        s.metrics = None;
        s.pipeline.clear();
        let text = render(&s);
        assert!(text.contains("swrouter_uptime_seconds 30\n"), "{text}");
        assert!(!text.contains("swrouter_wccp"), "{text}");
    }

    /// Debian's prometheus package ships promtool; where it is installed, the text must pass
    /// its lint (the e2e test runs it on a real scrape too).
    #[test]
    fn promtool_accepts_the_text_when_installed() {
        use std::io::Write;
        let Ok(mut child) = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("promtool not installed (scripts/setup-debian.sh installs it): skipped");
            return;
        };
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(render(&sample()).as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
