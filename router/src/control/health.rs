//! Drives the steering health monitor (issue 7): sends its probes through the router's one
//! prober ([`crate::probe`]), feeds it the answers the prober validated and the passive evidence
//! the workers queued, publishes device health to the data plane, and serves `swrouter steering
//! restore DEVICE`.
//!
//! The monitor is the sans-IO `steering::HealthMonitor`; this driver is its I/O. It runs on the
//! control thread, ticking every [`TICK`] for timers; answers are fed as they arrive. A probe
//! leaves through the outbox at once (worker 0 is woken for it) and its answer is handled on
//! arrival, so the probe timeout is spent on the network alone.
//!
//! HA (issue 15): while the node is active the driver publishes each device's phase, health
//! and reset window as `STEERING_HEALTH` records when they change (`steering::sync`); a
//! standby runs no checks and takes the peer's records, so a new active neither sends to a
//! member the old one knew was dead nor starts its checks from scratch.

use crate::outbox::Outbox;
use crate::probe::{unix_ms, ProbeAnswer, ProbeOutcome, ProbeOwner, ProbeTarget, Prober};
use crate::statesync::SyncFeed;
use crate::tables::steer::{PassiveEvent, SteeringPlane};
use conf::RouterConf;
use hasync::{Op, Record, TableId};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use steering::{DeviceIdx, HealthEvent, HealthMonitor};

/// How often the driver runs the monitor's timers and reads probe answers.
pub const TICK: Duration = Duration::from_millis(50);

/// The monitor of the plane in force and what the driver has seen of it.
pub struct HealthDriver {
    plane: Arc<SteeringPlane>,
    monitor: Option<HealthMonitor>,
    /// Source address per device: ours on the device's first interface.
    sources: Vec<Option<Ipv4Addr>>,
    generation: u64,
    /// Probes that could not be queued (outbox full).
    outbox_full: u64,
    /// HA sync (issue 15): where device health is published while active.
    feed: SyncFeed,
    /// Active: checks devices and publishes their health. Standby: runs no checks and takes
    /// the peer's view. Always active without HA.
    ha_active: bool,
    /// What was published per device key: its value with the drain time zeroed (a drain
    /// counting down is not a change).
    synced: BTreeMap<Vec<u8>, Vec<u8>>,
    sync_counters: SyncCounters,
}

/// What the driver counts about HA sync.
#[derive(Debug, Clone, Copy, Default)]
struct SyncCounters {
    published: u64,
    deleted: u64,
    exports: u64,
    applied: u64,
    refused: u64,
}

impl HealthDriver {
    /// A driver for `plane`, built from `conf`; `old` hands over device health (reload).
    pub fn new(plane: Arc<SteeringPlane>, conf: &RouterConf, old: Option<&HealthDriver>) -> Self {
        let now = Instant::now();
        let monitor = plane.tables.as_ref().map(|t| {
            let mut m = HealthMonitor::new(t, now);
            if let Some(o) = old.and_then(|o| o.monitor.as_ref()) {
                m.adopt(o);
            }
            m
        });
        let sources = conf
            .steering
            .definitions
            .devices
            .iter()
            .map(|d| {
                d.interfaces
                    .first()
                    .and_then(|i| conf.interfaces.get(usize::from(*i)))
                    .map(|i| i.address)
            })
            .collect::<Vec<_>>();
        let mut d = HealthDriver {
            plane,
            monitor,
            sources,
            generation: u64::MAX,
            outbox_full: 0,
            feed: old.map(|o| o.feed.clone()).unwrap_or_default(),
            ha_active: old.is_none_or(|o| o.ha_active),
            synced: old.map(|o| o.synced.clone()).unwrap_or_default(),
            sync_counters: old.map(|o| o.sync_counters).unwrap_or_default(),
        };
        d.publish();
        d.publish_sync(false);
        d
    }

    /// Publishes device health into `feed` from now on (`[ha.sync]`).
    pub fn set_sync_feed(&mut self, feed: SyncFeed) {
        self.feed = feed;
    }

    /// One of the peer's `STEERING_DRAIN` records (drain memory), while standby.
    pub fn apply_drain(&self, rec: &Record) -> bool {
        self.plane.drain_sync.apply(rec)
    }

    /// Publishes each device whose phase or health changed since the last publication (all
    /// of them with `force`), and deletes devices no longer configured: only while active.
    fn publish_sync(&mut self, force: bool) {
        if !self.feed.enabled() || !self.ha_active {
            return;
        }
        let (Some(m), Some(t)) = (self.monitor.as_ref(), self.plane.tables.as_ref()) else {
            return;
        };
        let now = Instant::now();
        let mut seen = BTreeMap::new();
        for i in 0..t.device_count() {
            let d = DeviceIdx(i as u32);
            let (Some(name), Some(s)) = (t.device_name(d), m.export(d, now)) else {
                continue;
            };
            let key = steering::sync::encode_key(name);
            let value = steering::sync::encode_value(&s).to_vec();
            let same = steering::sync::encode_value(&steering::sync::DeviceSync {
                drain_left: Duration::ZERO,
                ..s
            })
            .to_vec();
            if force || self.synced.get(&key) != Some(&same) {
                self.feed
                    .publish(Record::upsert(TableId::STEERING_HEALTH, key.clone(), value));
                self.sync_counters.published += 1;
            }
            seen.insert(key, same);
        }
        for k in self.synced.keys().filter(|k| !seen.contains_key(*k)) {
            self.feed
                .publish(Record::delete(TableId::STEERING_HEALTH, k.clone()));
            self.sync_counters.deleted += 1;
        }
        self.synced = seen;
    }

    /// Re-publishes every device's health (on taking over, or after a feed overflow).
    pub fn export_all(&mut self) {
        if !self.feed.enabled() || !self.ha_active {
            return;
        }
        self.sync_counters.exports += 1;
        self.publish_sync(true);
        self.plane.drain_sync.export_all();
    }

    /// One of the peer's `STEERING_HEALTH` records, taken while standby: the device's phase,
    /// health and reset window are the active's from now on. True when applied; an active
    /// node refuses them (its own checks are live), as it does undecodable records and
    /// devices it does not have.
    pub fn apply_synced(&mut self, rec: &Record, now: Instant) -> bool {
        let ok = self.try_apply(rec, now);
        if ok {
            self.sync_counters.applied += 1;
        } else {
            self.sync_counters.refused += 1;
        }
        ok
    }

    fn try_apply(&mut self, rec: &Record, now: Instant) -> bool {
        if rec.table != TableId::STEERING_HEALTH || self.ha_active {
            return false;
        }
        if rec.op == Op::Delete {
            // The peer no longer has the device: ours keeps the state it has.
            return steering::sync::decode_key(&rec.key).is_ok();
        }
        let (Some(t), Some(m)) = (self.plane.tables.as_ref(), self.monitor.as_mut()) else {
            return false;
        };
        let Ok(name) = steering::sync::decode_key(&rec.key) else {
            return false;
        };
        let (Some(d), Ok(s)) = (
            t.device_index(name),
            steering::sync::decode_value(&rec.value),
        ) else {
            return false;
        };
        let before = m.state().device(d);
        m.import(d, s, now);
        if before != s.health {
            if let Some(c) = self.plane.devices.get(d.index()) {
                if s.health != steering::DeviceHealth::InService {
                    c.downs.fetch_add(1, Ordering::Relaxed);
                }
                c.changed_unix_ms.store(unix_ms(), Ordering::Relaxed);
            }
            tracing::info!(device = name, health = ?s.health, phase = ?s.phase, "steering device health from the HA peer");
        }
        self.publish();
        true
    }

    /// The node's HA role changed. Becoming active: checks start again from the health the
    /// peer published (every active check is due now; the caller then calls
    /// [`Self::export_all`]). Becoming standby: no checks until the next takeover.
    pub fn set_ha_active(&mut self, active: bool, now: Instant) {
        // Workers journal and publish their drain memory only while active.
        self.plane.drain_sync.set_active(active);
        if active == self.ha_active {
            return;
        }
        self.ha_active = active;
        self.synced.clear();
        if active {
            if let Some(m) = self.monitor.as_mut() {
                m.resume(now);
            }
            tracing::info!("steering: active; health checks run from the synced device health");
        } else {
            tracing::info!("steering: standby; device health follows the peer");
        }
    }

    /// HA sync counters for status, when `[ha.sync]` is on.
    pub fn sync_status(&self) -> Option<crate::steering_status::SteeringSyncStatus> {
        self.feed
            .enabled()
            .then(|| crate::steering_status::SteeringSyncStatus {
                role: if self.ha_active { "active" } else { "standby" }.to_string(),
                published: self.sync_counters.published,
                deleted: self.sync_counters.deleted,
                exports: self.sync_counters.exports,
                applied: self.sync_counters.applied,
                refused: self.sync_counters.refused,
                drain_published: self.plane.drain_sync.published.load(Ordering::Relaxed),
                drain_applied: self.plane.drain_sync.applied.load(Ordering::Relaxed),
                drain_refused: self.plane.drain_sync.refused.load(Ordering::Relaxed),
            })
    }

    /// An answer the prober validated for one of this driver's probes.
    pub fn on_probe_answer(&mut self, a: &ProbeAnswer) {
        let ProbeOwner::Steering(d) = a.owner else {
            return;
        };
        if !self.ha_active {
            // A probe sent before the node became standby: the peer's view rules now.
            return;
        }
        let Some(m) = self.monitor.as_mut() else {
            return;
        };
        let ok = matches!(a.outcome, ProbeOutcome::Accepted { .. });
        if let Some(c) = self.plane.devices.get(d as usize) {
            let n = if ok { &c.probe_ok } else { &c.probe_refused };
            n.fetch_add(1, Ordering::Relaxed);
        }
        m.handle_probe_result(Instant::now(), DeviceIdx(d), ok);
        self.events();
        self.publish();
        self.publish_sync(false);
    }

    /// Runs timers, feeds passive evidence, sends due probes, publishes health.
    pub fn tick(&mut self, prober: &mut Prober, outbox: &Outbox) {
        let Some(m) = self.monitor.as_mut() else {
            return;
        };
        let now = Instant::now();
        if !self.ha_active {
            // The standby checks nothing (the active's view arrives by sync); evidence the
            // workers queued is stale by the takeover.
            while self.plane.passive.pop().is_some() {}
            return;
        }
        // Passive evidence the workers saw since the last tick (bounded by the queue).
        while let Some(e) = self.plane.passive.pop() {
            match e {
                PassiveEvent::Syn { device, client } => m.handle_syn(now, device, client),
                PassiveEvent::Answered { device, client } => {
                    m.handle_return_traffic(now, device, client)
                }
            }
        }
        m.handle_timeout(now);
        while let Some(p) = m.poll_probe() {
            let Some(src) = self.sources.get(p.device.index()).copied().flatten() else {
                continue;
            };
            let target = ProbeTarget {
                local: src,
                remote: SocketAddrV4::new(p.addr, p.port),
                via: None,
            };
            let syn = prober.probe(now, target, ProbeOwner::Steering(p.device.0));
            if !outbox.send_ipv4(syn) {
                // The monitor counts it as unanswered at its timeout.
                self.outbox_full += 1;
            }
        }
        self.events();
        self.publish();
        self.publish_sync(false);
    }

    /// Logs the monitor's events and records when devices leave and re-enter service.
    fn events(&mut self) {
        let Some(m) = self.monitor.as_mut() else {
            return;
        };
        while let Some(e) = m.poll_event() {
            let tables = self.plane.tables.as_ref();
            let name = |d: DeviceIdx| tables.and_then(|t| t.device_name(d)).unwrap_or("?");
            match e {
                HealthEvent::DeviceDown { device } => {
                    if let Some(c) = self.plane.devices.get(device.index()) {
                        c.downs.fetch_add(1, Ordering::Relaxed);
                        c.changed_unix_ms.store(unix_ms(), Ordering::Relaxed);
                    }
                    tracing::warn!(device = name(device), "steering device down")
                }
                HealthEvent::DeviceUp { device } => {
                    tracing::info!(
                        device = name(device),
                        "steering device passes its checks again"
                    )
                }
                HealthEvent::FailedOver {
                    device, alternate, ..
                } => tracing::warn!(
                    device = name(device),
                    alternate = name(alternate),
                    "steering failover to the alternate"
                ),
                HealthEvent::Restored { device, .. } => {
                    if let Some(c) = self.plane.devices.get(device.index()) {
                        c.changed_unix_ms.store(unix_ms(), Ordering::Relaxed);
                    }
                    tracing::info!(device = name(device), "steering device back in service")
                }
            }
        }
    }

    /// Probes that could not be queued because the outbox was full.
    pub fn outbox_full(&self) -> u64 {
        self.outbox_full
    }

    /// Operator command: put `name` back in service. Err explains why not.
    pub fn restore(&mut self, name: &str) -> Result<String, String> {
        let tables = self
            .plane
            .tables
            .as_ref()
            .ok_or_else(|| "no steering configured".to_string())?;
        let dev = tables
            .device_index(name)
            .ok_or_else(|| format!("no steering device `{name}`"))?;
        let m = self
            .monitor
            .as_mut()
            .ok_or_else(|| "no steering configured".to_string())?;
        let done = m.restore(dev);
        self.events();
        self.publish();
        self.publish_sync(false);
        if done {
            Ok(format!("device `{name}` restored to service"))
        } else {
            Err(format!(
                "device `{name}` was not restored (it is in service, or still failing its checks)"
            ))
        }
    }

    /// Device phase names for status ("up", "down", "recovered").
    pub fn phase(&self, d: DeviceIdx) -> Option<&'static str> {
        self.monitor.as_ref()?.phase(d).map(|p| match p {
            steering::DevicePhase::Up => "up",
            steering::DevicePhase::Down => "down",
            steering::DevicePhase::Recovered => "recovered",
        })
    }

    /// Stores the monitor's health in the plane when it changed.
    fn publish(&mut self) {
        let Some(m) = self.monitor.as_ref() else {
            return;
        };
        if m.generation() != self.generation {
            self.generation = m.generation();
            self.plane.health.store(Arc::new(m.state().clone()));
        }
    }
}
