//! Drives the steering health monitor (issue 7): turns its probe requests into SYNs the workers
//! send, feeds it the probe answers the workers recorded, publishes device health to the data
//! plane, and serves `swrouter steering restore DEVICE`.
//!
//! The monitor is the sans-IO `steering::HealthMonitor`; this driver is its I/O. It runs on the
//! control thread, ticking every [`TICK`]: failover happens within one probe period after
//! detection plus one tick.

use crate::tables::steer::{PassiveEvent, ProbeOut, SteeringPlane, PROBE_PORT_BASE};
use conf::RouterConf;
use std::net::Ipv4Addr;
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
    /// (ok, refused) answers already fed to the monitor, per device.
    seen: Vec<(u64, u64)>,
    generation: u64,
    seq: u32,
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
        let seen = plane
            .devices
            .iter()
            .map(|c| {
                (
                    c.probe_ok.load(Ordering::Relaxed),
                    c.probe_refused.load(Ordering::Relaxed),
                )
            })
            .collect();
        let mut d = HealthDriver {
            plane,
            monitor,
            sources,
            seen,
            generation: u64::MAX,
            seq: 0x5157_0000,
        };
        d.publish();
        d
    }

    /// Runs timers, feeds answers, queues probes, publishes health.
    pub fn tick(&mut self) {
        let Some(m) = self.monitor.as_mut() else {
            return;
        };
        let now = Instant::now();
        for (i, c) in self.plane.devices.iter().enumerate() {
            let ok = c.probe_ok.load(Ordering::Relaxed);
            let refused = c.probe_refused.load(Ordering::Relaxed);
            let Some(seen) = self.seen.get_mut(i) else {
                continue;
            };
            let dev = DeviceIdx(i as u32);
            if ok > seen.0 {
                m.handle_probe_result(now, dev, true);
            } else if refused > seen.1 {
                m.handle_probe_result(now, dev, false);
            }
            *seen = (ok, refused);
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
        let mut probes = Vec::new();
        while let Some(p) = m.poll_probe() {
            let Some(src) = self.sources.get(p.device.index()).copied().flatten() else {
                continue;
            };
            let Ok(idx) = u16::try_from(p.device.0) else {
                continue;
            };
            self.seq = self.seq.wrapping_add(0x0001_0001);
            probes.push(ProbeOut {
                src,
                dst: p.addr,
                sport: PROBE_PORT_BASE.saturating_add(idx),
                dport: p.port,
                seq: self.seq,
            });
        }
        if !probes.is_empty() {
            if let Ok(mut q) = self.plane.probes.lock() {
                // Bounded: a worker that stopped polling must not let the queue grow.
                if q.len() < 4096 {
                    q.extend(probes);
                }
            }
        }
        while let Some(e) = m.poll_event() {
            let tables = self.plane.tables.as_ref();
            let name = |d: DeviceIdx| tables.and_then(|t| t.device_name(d)).unwrap_or("?");
            match e {
                HealthEvent::DeviceDown { device } => {
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
                    tracing::info!(device = name(device), "steering device back in service")
                }
            }
        }
        self.publish();
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
