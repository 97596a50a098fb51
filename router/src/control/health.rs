//! Drives the steering health monitor (issue 7): sends its probes through the router's one
//! prober ([`crate::probe`]), feeds it the answers the prober validated and the passive evidence
//! the workers queued, publishes device health to the data plane, and serves `swrouter steering
//! restore DEVICE`.
//!
//! The monitor is the sans-IO `steering::HealthMonitor`; this driver is its I/O. It runs on the
//! control thread, ticking every [`TICK`] for timers; answers are fed as they arrive. A probe
//! leaves through the outbox at once (worker 0 is woken for it) and its answer is handled on
//! arrival, so the probe timeout is spent on the network alone.

use crate::outbox::Outbox;
use crate::probe::{unix_ms, ProbeAnswer, ProbeOutcome, ProbeOwner, ProbeTarget, Prober};
use crate::tables::steer::{PassiveEvent, SteeringPlane};
use conf::RouterConf;
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
        };
        d.publish();
        d
    }

    /// An answer the prober validated for one of this driver's probes.
    pub fn on_probe_answer(&mut self, a: &ProbeAnswer) {
        let ProbeOwner::Steering(d) = a.owner else {
            return;
        };
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
    }

    /// Runs timers, feeds passive evidence, sends due probes, publishes health.
    pub fn tick(&mut self, prober: &mut Prober, outbox: &Outbox) {
        let Some(m) = self.monitor.as_mut() else {
            return;
        };
        let now = Instant::now();
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
