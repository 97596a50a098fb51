//! The `steering` part of `swrouter status`: per-service and per-device packets, bytes and
//! drops by reason, and each device's health, read from the steering plane in force.

use crate::tables::steer::{SteeringPlane, Traffic, SERVICE_DROPS};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// Steering counters and health.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SteeringStatus {
    /// One entry per service, in config order.
    pub services: Vec<SteeringServiceStatus>,
    /// One entry per device, in config order.
    pub devices: Vec<SteeringDeviceStatus>,
    /// Passive-check evidence (SYNs, handshake answers) lost to a full queue.
    #[serde(default)]
    pub passive_lost: u64,
    /// Connections opened during a reset pool's drain window forgotten for newer ones.
    #[serde(default)]
    pub drain_evicted: u64,
    /// Frames back from a device of the tables the last reload replaced, finished by those
    /// tables during the reload's grace (they were inside the device at the swap).
    #[serde(default)]
    pub reload_grace_packets: u64,
    /// Their bytes.
    #[serde(default)]
    pub reload_grace_bytes: u64,
    /// HA state sync of device health (issue 15), when `[ha.sync]` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha_sync: Option<SteeringSyncStatus>,
}

/// Device health's part of the HA state sync.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SteeringSyncStatus {
    /// "active" (checks devices, publishes their health) or "standby" (takes the peer's).
    pub role: String,
    /// Device records published.
    pub published: u64,
    /// Deletes published (devices removed by a reload).
    pub deleted: u64,
    /// Full re-exports (takeovers, feed overflows).
    pub exports: u64,
    /// The peer's records applied.
    pub applied: u64,
    /// The peer's records refused (undecodable, unknown device, or received while active).
    pub refused: u64,
    /// Drain-memory records published (connections remembered and forgotten, re-exports).
    #[serde(default)]
    pub drain_published: u64,
    /// The peer's drain-memory records applied.
    #[serde(default)]
    pub drain_applied: u64,
    /// The peer's drain-memory records refused.
    #[serde(default)]
    pub drain_refused: u64,
}

/// One service's counters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SteeringServiceStatus {
    /// Service name.
    pub name: String,
    /// Client → service packets steered.
    pub forward_packets: u64,
    /// Client → service bytes.
    pub forward_bytes: u64,
    /// Service → client packets steered.
    pub reverse_packets: u64,
    /// Service → client bytes.
    pub reverse_bytes: u64,
    /// Drops by reason (`steering-acl-deny`, ...), zero ones included.
    pub drops: BTreeMap<String, u64>,
    /// The service's ACL rules in order, with what each decided.
    #[serde(default)]
    pub acl: Vec<SteeringAclStatus>,
}

/// One ACL rule and the packets it decided (permitted or denied, by its action).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SteeringAclStatus {
    /// The rule as written: action, source prefix and the optional protocol and ports.
    pub rule: String,
    /// `permit` or `deny`.
    pub action: String,
    /// The client address when the rule names one client (a /32 source).
    pub client: Option<String>,
    /// Packets the rule decided.
    pub packets: u64,
    /// Bytes of those packets.
    pub bytes: u64,
}

/// An ACL rule as the operator wrote it.
fn describe(r: &steering::AclRule) -> String {
    let mut s = format!("{} src {}", r.action.as_str(), r.src);
    if let Some(p) = r.proto {
        let _ = write!(
            s,
            " protocol {}",
            match p {
                6 => "tcp".to_string(),
                17 => "udp".to_string(),
                n => n.to_string(),
            }
        );
    }
    if let Some(p) = r.src_ports {
        let _ = write!(s, " source-ports {p}");
    }
    if let Some(p) = r.dst_ports {
        let _ = write!(s, " ports {p}");
    }
    s
}

/// One device's counters and health.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SteeringDeviceStatus {
    /// Device name.
    pub name: String,
    /// Mode (transparent, loopback, alias, nat, router).
    pub mode: String,
    /// Health as the data plane sees it: in-service, draining, out-of-service.
    pub health: String,
    /// Frames sent to it on the main path.
    pub packets: u64,
    /// Bytes sent to it on the main path.
    pub bytes: u64,
    /// Copies sent to it.
    pub copies: u64,
    /// Bytes of copies sent to it.
    pub copy_bytes: u64,
    /// Copies for it lost to a full copy queue.
    pub copy_drops: u64,
    /// Probe answers that accepted the handshake.
    #[serde(default)]
    pub probe_ok: u64,
    /// Probe answers that refused it (RST).
    #[serde(default)]
    pub probe_refused: u64,
    /// Times the health checks took it out of service.
    #[serde(default)]
    pub downs: u64,
    /// When it last went out of or back into service (Unix time in ms; 0: never).
    #[serde(default)]
    pub changed_unix_ms: u64,
}

fn read(t: &Traffic) -> (u64, u64) {
    (
        t.packets.load(Ordering::Relaxed),
        t.bytes.load(Ordering::Relaxed),
    )
}

/// The status of `plane`, or `None` when nothing is steered.
pub fn collect(plane: &SteeringPlane) -> Option<SteeringStatus> {
    let tables = plane.tables.as_ref()?;
    let health = plane.health.load();
    let services = plane
        .services
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (fp, fb) = read(&c.forward);
            let (rp, rb) = read(&c.reverse);
            SteeringServiceStatus {
                name: tables
                    .service_name(steering::ServiceIdx(i as u32))
                    .unwrap_or("?")
                    .to_string(),
                forward_packets: fp,
                forward_bytes: fb,
                reverse_packets: rp,
                reverse_bytes: rb,
                drops: SERVICE_DROPS
                    .iter()
                    .zip(&c.drops)
                    .map(|(n, v)| (n.to_string(), v.load(Ordering::Relaxed)))
                    .collect(),
                acl: tables
                    .service_acl(steering::ServiceIdx(i as u32))
                    .map(|(idx, r)| {
                        let (packets, bytes) = plane.acl.get(idx as usize).map_or((0, 0), read);
                        SteeringAclStatus {
                            rule: describe(r),
                            action: r.action.as_str().to_string(),
                            client: (r.src.len() == 32).then(|| r.src.addr().to_string()),
                            packets,
                            bytes,
                        }
                    })
                    .collect(),
            }
        })
        .collect();
    let devices = plane
        .devices
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let d = steering::DeviceIdx(i as u32);
            let (p, b) = read(&c.sent);
            let (cp, cb) = read(&c.copies);
            SteeringDeviceStatus {
                name: tables.device_name(d).unwrap_or("?").to_string(),
                mode: tables
                    .device_mode(d)
                    .map_or("?", |m| m.as_str())
                    .to_string(),
                health: match health.device(d) {
                    steering::DeviceHealth::InService => "in-service",
                    steering::DeviceHealth::Draining => "draining",
                    steering::DeviceHealth::OutOfService => "out-of-service",
                }
                .to_string(),
                packets: p,
                bytes: b,
                copies: cp,
                copy_bytes: cb,
                copy_drops: c.copy_drops.load(Ordering::Relaxed),
                probe_ok: c.probe_ok.load(Ordering::Relaxed),
                probe_refused: c.probe_refused.load(Ordering::Relaxed),
                downs: c.downs.load(Ordering::Relaxed),
                changed_unix_ms: c.changed_unix_ms.load(Ordering::Relaxed),
            }
        })
        .collect();
    Some(SteeringStatus {
        services,
        devices,
        passive_lost: plane.passive_lost.load(Ordering::Relaxed),
        drain_evicted: plane.drain_evicted.load(Ordering::Relaxed),
        reload_grace_packets: plane.retired_forwarded.packets.load(Ordering::Relaxed),
        reload_grace_bytes: plane.retired_forwarded.bytes.load(Ordering::Relaxed),
        ha_sync: None,
    })
}

/// Appends the steering tables to the terminal rendering.
pub fn render(o: &mut String, s: &SteeringStatus) {
    let _ = writeln!(
        o,
        "\nSteering services\n  {:<20} {:>10} {:>12} {:>10} {:>12}  DROPS",
        "SERVICE", "FWD-PKTS", "FWD-BYTES", "REV-PKTS", "REV-BYTES"
    );
    for v in &s.services {
        let drops: Vec<String> = v
            .drops
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let _ = writeln!(
            o,
            "  {:<20} {:>10} {:>12} {:>10} {:>12}  {}",
            v.name,
            v.forward_packets,
            v.forward_bytes,
            v.reverse_packets,
            v.reverse_bytes,
            if drops.is_empty() {
                "-".to_string()
            } else {
                drops.join(" ")
            }
        );
        for a in &v.acl {
            let _ = writeln!(
                o,
                "    acl {:<40} {:>10} pkts {:>12} bytes",
                a.rule, a.packets, a.bytes
            );
        }
    }
    if s.reload_grace_packets > 0 {
        let _ = writeln!(
            o,
            "  finished by the replaced tables after the last reload: {} pkts {} bytes",
            s.reload_grace_packets, s.reload_grace_bytes
        );
    }
    let _ = writeln!(
        o,
        "Steering devices\n  {:<20} {:<12} {:<15} {:>10} {:>12} {:>8} {:>10} {:>9} {:>9} {:>6}",
        "DEVICE",
        "MODE",
        "HEALTH",
        "PACKETS",
        "BYTES",
        "COPIES",
        "COPY-DROPS",
        "PROBE-OK",
        "REFUSED",
        "DOWNS"
    );
    for d in &s.devices {
        let _ = writeln!(
            o,
            "  {:<20} {:<12} {:<15} {:>10} {:>12} {:>8} {:>10} {:>9} {:>9} {:>6}",
            d.name,
            d.mode,
            d.health,
            d.packets,
            d.bytes,
            d.copies,
            d.copy_drops,
            d.probe_ok,
            d.probe_refused,
            d.downs
        );
    }
    if let Some(h) = &s.ha_sync {
        let _ = writeln!(
            o,
            "Steering HA sync: {}  published {} deleted {} exports {}  applied {} refused {}  drain memory: published {} applied {} refused {}",
            h.role, h.published, h.deleted, h.exports, h.applied, h.refused, h.drain_published, h.drain_applied, h.drain_refused
        );
    }
}
