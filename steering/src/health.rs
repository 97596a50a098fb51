//! Device health: the read-mostly [`PoolState`] the data plane consults, and the
//! [`HealthMonitor`] state machine that maintains it.
//!
//! The monitor follows the quinn-proto shape (ARCHITECTURE.md §2): inputs are `handle_*(now,
//! …)`, outputs are `poll_*`, and it never reads a clock or touches a socket. The router's
//! driver, after every input:
//!
//! 1. drains [`HealthMonitor::poll_probe`] and performs each TCP handshake (the seed's
//!    "simulation packet … to initiate a socket handshake only", Figure 15B), reporting back
//!    through [`HealthMonitor::handle_probe_result`] (a probe not answered within its timeout
//!    counts as failed at the next `handle_timeout`);
//! 2. drains [`HealthMonitor::poll_event`] (log lines, status, notifications);
//! 3. when [`HealthMonitor::generation`] changed, publishes a clone of
//!    [`HealthMonitor::state`] to the workers (arc-swap);
//! 4. sleeps until [`HealthMonitor::poll_timeout`] and calls `handle_timeout`.
//!
//! Health is per device (a device in several pools has one state); a down device leaves the
//! data plane at once, when its `fall`-th probe fails, i.e. within one probe period of the
//! detection. The phases:
//!
//! ```text
//!  Up ── fall failed probes, or passive evidence + 1 failed probe ──▶ Down
//!  Down ── rise good probes ──▶ Up                  (restore = auto)
//!  Down ── rise good probes ──▶ Recovered ── restore() ──▶ Up   (restore = manual)
//!  Down, passive check only ── one window ──▶ Up    (auto; there is no probe to wait for)
//! ```
//!
//! On entering Down the data plane sees `Draining` for the reset window of reset pools (the
//! client's next segment of a dead device's flow gets a RST, new SYNs go elsewhere), then
//! `OutOfService` (flows move). Devices start Up, so traffic flows before the first probe.

use crate::hash::FastMap;
use crate::model::Restore;
use crate::tables::{DeviceHealthCfg, Tables};
use crate::types::{DeviceIdx, PoolIdx};
use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Most (device, client) pairs the passive check tracks at once; beyond it new pairs are not
/// tracked (the check degrades, memory stays bounded).
pub const MAX_TRACKED_SYNS: usize = 65_536;

/// A device's health as the data plane sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DeviceHealth {
    /// Carries flows.
    #[default]
    InService,
    /// Just failed, in a reset pool: its flows' next segments are answered with RST.
    Draining,
    /// Carries no flows; they moved to the alternate or another member.
    OutOfService,
}

/// The shared, read-mostly health view `Tables::decide` reads.
///
/// Indices beyond its length (tables and state from different reloads) read as in service,
/// so a mismatch never panics and never blackholes traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolState {
    devices: Vec<DeviceHealth>,
    alternate_active: Vec<bool>,
}

impl PoolState {
    /// Every device of `tables` in service.
    pub fn all_in_service(tables: &Tables) -> Self {
        PoolState {
            devices: vec![DeviceHealth::InService; tables.device_count()],
            alternate_active: vec![false; tables.pool_count()],
        }
    }

    /// The health of a device.
    #[inline]
    pub fn device(&self, d: DeviceIdx) -> DeviceHealth {
        self.devices.get(d.index()).copied().unwrap_or_default()
    }

    /// True when the device carries flows.
    #[inline]
    pub fn in_service(&self, d: DeviceIdx) -> bool {
        self.device(d) == DeviceHealth::InService
    }

    /// True when the device just failed and its flows are being reset.
    #[inline]
    pub fn is_draining(&self, d: DeviceIdx) -> bool {
        self.device(d) == DeviceHealth::Draining
    }

    /// True when the pool's alternate is carrying the flows of a failed member.
    pub fn alternate_active(&self, p: PoolIdx) -> bool {
        self.alternate_active
            .get(p.index())
            .copied()
            .unwrap_or(false)
    }

    /// Sets a device's health directly (tests, operator overrides; the monitor is the usual
    /// writer).
    pub fn set_device(&mut self, d: DeviceIdx, h: DeviceHealth) {
        if let Some(x) = self.devices.get_mut(d.index()) {
            *x = h;
        }
    }
}

/// What the monitor tells the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthEvent {
    /// The device failed its checks and left service.
    DeviceDown {
        /// The device.
        device: DeviceIdx,
    },
    /// The device passed `rise` checks (back in service unless its pool restores manually).
    DeviceUp {
        /// The device.
        device: DeviceIdx,
    },
    /// A member failed and the pool's alternate took its flows (Figure 15C).
    FailedOver {
        /// The pool.
        pool: PoolIdx,
        /// The failed member.
        device: DeviceIdx,
        /// The alternate now serving.
        alternate: DeviceIdx,
    },
    /// The device is back in service in this pool.
    Restored {
        /// The pool.
        pool: PoolIdx,
        /// The device.
        device: DeviceIdx,
    },
}

/// A TCP handshake the router must attempt and report on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProbeRequest {
    /// The device probed.
    pub device: DeviceIdx,
    /// Its address.
    pub addr: Ipv4Addr,
    /// The TCP port.
    pub port: u16,
    /// How long the handshake may take.
    pub timeout: Duration,
}

/// A device's place in the health state machine (status output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DevicePhase {
    /// In service.
    #[default]
    Up,
    /// Failed; probing until it passes `rise` checks.
    Down,
    /// Healthy again, waiting for the operator's `restore` (manual pools).
    Recovered,
}

#[derive(Debug, Clone)]
struct Dev {
    name: String,
    cfg: DeviceHealthCfg,
    addr: Option<Ipv4Addr>,
    phase: DevicePhase,
    ok_run: u32,
    fail_run: u32,
    next_probe: Option<Instant>,
    probe_deadline: Option<Instant>,
    /// Passive evidence: the next failed probe takes it down regardless of `fall`.
    suspect: bool,
    drain_until: Option<Instant>,
    /// Passive-only devices in auto pools are retried after one window.
    retry_at: Option<Instant>,
}

#[derive(Debug, Clone)]
struct PoolInfo {
    members: Vec<u32>,
    alternate: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
struct SynTrack {
    count: u32,
    first: Instant,
}

/// Active and passive health checking of every device, as a sans-IO state machine.
#[derive(Debug, Clone)]
pub struct HealthMonitor {
    devs: Vec<Dev>,
    pools: Vec<PoolInfo>,
    dev_pools: Vec<Vec<u32>>,
    state: PoolState,
    generation: u64,
    events: VecDeque<HealthEvent>,
    probes: VecDeque<ProbeRequest>,
    syns: FastMap<(u32, u32), SynTrack>,
    syn_gc: Option<Instant>,
}

impl HealthMonitor {
    /// A monitor for the devices of `tables`, all in service; first probes are due at `now`.
    pub fn new(tables: &Tables, now: Instant) -> Self {
        let devs = tables
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let cfg = tables.health.get(i).copied().unwrap_or_default();
                Dev {
                    name: tables.device_names.get(i).cloned().unwrap_or_default(),
                    cfg,
                    addr: d.addr,
                    phase: DevicePhase::Up,
                    ok_run: 0,
                    fail_run: 0,
                    next_probe: cfg.active.map(|_| now),
                    probe_deadline: None,
                    suspect: false,
                    drain_until: None,
                    retry_at: None,
                }
            })
            .collect::<Vec<_>>();
        let mut dev_pools = vec![Vec::new(); devs.len()];
        let pools = tables
            .pools
            .iter()
            .enumerate()
            .map(|(pi, p)| {
                let members = tables.members(p).to_vec();
                for &d in members.iter().chain(p.alternate.iter()) {
                    if let Some(v) = dev_pools.get_mut(d as usize) {
                        v.push(pi as u32);
                    }
                }
                PoolInfo {
                    members,
                    alternate: p.alternate,
                }
            })
            .collect();
        HealthMonitor {
            devs,
            pools,
            dev_pools,
            state: PoolState::all_in_service(tables),
            generation: 0,
            events: VecDeque::new(),
            probes: VecDeque::new(),
            syns: FastMap::default(),
            syn_gc: None,
        }
    }

    /// Carries device health over from the monitor of the previous config, by device name, so
    /// a reload neither resurrects a dead device nor forgets a recovering one.
    pub fn adopt(&mut self, old: &HealthMonitor) {
        let by_name: HashMap<&str, usize> = old
            .devs
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.as_str(), i))
            .collect();
        for (i, dev) in self.devs.iter_mut().enumerate() {
            if dev.cfg.active.is_none() && dev.cfg.passive.is_none() {
                continue;
            }
            let Some(&oi) = by_name.get(dev.name.as_str()) else {
                continue;
            };
            let Some(o) = old.devs.get(oi) else { continue };
            dev.phase = o.phase;
            dev.ok_run = o.ok_run;
            dev.fail_run = o.fail_run;
            dev.drain_until = o.drain_until;
            dev.retry_at = o.retry_at;
            self.state
                .set_device(DeviceIdx(i as u32), old.state.device(DeviceIdx(oi as u32)));
        }
        self.recompute_alternates();
        self.generation += 1;
    }

    /// The health view to publish to the data plane.
    pub fn state(&self) -> &PoolState {
        &self.state
    }

    /// Increments whenever [`Self::state`] changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// A device's phase (status output).
    pub fn phase(&self, d: DeviceIdx) -> Option<DevicePhase> {
        self.devs.get(d.index()).map(|x| x.phase)
    }

    /// A device's health as the HA peer needs it (`sync`): phase, data-plane health and the
    /// time left of its reset window at `now`.
    pub fn export(&self, d: DeviceIdx, now: Instant) -> Option<crate::sync::DeviceSync> {
        let dev = self.devs.get(d.index())?;
        let health = self.state.device(d);
        Some(crate::sync::DeviceSync {
            phase: dev.phase,
            health,
            drain_left: match (health, dev.drain_until) {
                (DeviceHealth::Draining, Some(t)) => t.saturating_duration_since(now),
                _ => Duration::ZERO,
            },
        })
    }

    /// The HA peer's view of a device (this node is its standby): taken as is, with the reset
    /// window ending `drain_left` after `now`. No probe is outstanding afterwards; probing
    /// starts again at [`Self::resume`].
    pub fn import(&mut self, d: DeviceIdx, s: crate::sync::DeviceSync, now: Instant) {
        let Some(dev) = self.devs.get_mut(d.index()) else {
            return;
        };
        dev.phase = s.phase;
        dev.ok_run = 0;
        dev.fail_run = 0;
        dev.suspect = false;
        dev.probe_deadline = None;
        dev.drain_until = (s.health == DeviceHealth::Draining).then(|| now + s.drain_left);
        dev.retry_at = match (s.phase, dev.cfg.active, dev.cfg.restore, dev.cfg.passive) {
            (DevicePhase::Down, None, Restore::Auto, Some(p)) => Some(now + p.window),
            _ => None,
        };
        self.state.set_device(d, s.health);
        self.recompute_alternates();
        self.generation += 1;
    }

    /// Probing starts again at `now` (this node took over from its HA peer, whose view of the
    /// devices it imported): every active check is due, none is outstanding.
    pub fn resume(&mut self, now: Instant) {
        for dev in &mut self.devs {
            dev.probe_deadline = None;
            dev.next_probe = dev.cfg.active.map(|_| now);
        }
    }

    /// The result of a probe from [`Self::poll_probe`]; results with no probe outstanding
    /// (late, after the timeout already counted) are ignored.
    pub fn handle_probe_result(&mut self, now: Instant, device: DeviceIdx, ok: bool) {
        let d = device.0;
        let Some(dev) = self.devs.get_mut(d as usize) else {
            return;
        };
        if dev.probe_deadline.take().is_none() {
            return;
        }
        if ok {
            self.success(d);
        } else {
            self.failure(now, d);
        }
    }

    /// The router forwarded a SYN from `client` to `device` (passive check).
    pub fn handle_syn(&mut self, now: Instant, device: DeviceIdx, client: Ipv4Addr) {
        let d = device.0;
        let Some(dev) = self.devs.get(d as usize) else {
            return;
        };
        let Some(passive) = dev.cfg.passive else {
            return;
        };
        if dev.phase != DevicePhase::Up {
            return;
        }
        let key = (d, u32::from(client));
        if !self.syns.contains_key(&key) && self.syns.len() >= MAX_TRACKED_SYNS {
            return;
        }
        let t = self.syns.entry(key).or_insert(SynTrack {
            count: 0,
            first: now,
        });
        if now.saturating_duration_since(t.first) >= passive.window {
            *t = SynTrack {
                count: 0,
                first: now,
            };
        }
        t.count += 1;
        if self.syn_gc.is_none() {
            self.syn_gc = Some(now + passive.window);
        }
        if t.count >= passive.syn_threshold {
            self.syns.remove(&key);
            self.suspicious(now, d);
        }
    }

    /// The device sent return traffic toward `client`: it is answering.
    pub fn handle_return_traffic(&mut self, _now: Instant, device: DeviceIdx, client: Ipv4Addr) {
        if !self.syns.is_empty() {
            self.syns.remove(&(device.0, u32::from(client)));
        }
    }

    /// Fires due timers: probe timeouts, new probes, reset windows, passive retries.
    pub fn handle_timeout(&mut self, now: Instant) {
        for d in 0..self.devs.len() as u32 {
            let Some(dev) = self.devs.get_mut(d as usize) else {
                continue;
            };
            if dev.probe_deadline.is_some_and(|t| t <= now) {
                dev.probe_deadline = None;
                self.failure(now, d);
            }
            let Some(dev) = self.devs.get_mut(d as usize) else {
                continue;
            };
            if dev.drain_until.is_some_and(|t| t <= now) {
                dev.drain_until = None;
                if self.state.is_draining(DeviceIdx(d)) {
                    self.state
                        .set_device(DeviceIdx(d), DeviceHealth::OutOfService);
                    self.generation += 1;
                }
            }
            let Some(dev) = self.devs.get_mut(d as usize) else {
                continue;
            };
            if dev.retry_at.is_some_and(|t| t <= now) {
                dev.retry_at = None;
                if dev.phase == DevicePhase::Down {
                    self.events.push_back(HealthEvent::DeviceUp {
                        device: DeviceIdx(d),
                    });
                    self.put_in_service(d);
                }
            }
            let Some(dev) = self.devs.get_mut(d as usize) else {
                continue;
            };
            if let (Some(active), Some(addr)) = (dev.cfg.active, dev.addr) {
                if let Some(due) = dev
                    .next_probe
                    .filter(|t| *t <= now && dev.probe_deadline.is_none())
                {
                    dev.probe_deadline = Some(now + active.timeout);
                    // The configured rate: an interval after this probe was due, not after the
                    // (coarse, possibly late) call that sends it; after a stall longer than an
                    // interval, one interval from now (no burst of catch-up probes).
                    let next = due + active.interval;
                    dev.next_probe = Some(if next > now {
                        next
                    } else {
                        now + active.interval
                    });
                    self.probes.push_back(ProbeRequest {
                        device: DeviceIdx(d),
                        addr,
                        port: active.port,
                        timeout: active.timeout,
                    });
                }
            }
        }
        if self.syn_gc.is_some_and(|t| t <= now) {
            let devs = &self.devs;
            self.syns.retain(|&(d, _), t| {
                devs.get(d as usize)
                    .and_then(|x| x.cfg.passive)
                    .is_some_and(|p| now.saturating_duration_since(t.first) < p.window)
            });
            self.syn_gc = self
                .syns
                .keys()
                .filter_map(|&(d, _)| self.devs.get(d as usize)?.cfg.passive)
                .map(|p| p.window)
                .min()
                .map(|w| now + w);
        }
    }

    /// The earliest time `handle_timeout` has work, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = self.syn_gc;
        let mut take = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for dev in &self.devs {
            take(dev.probe_deadline);
            if dev.probe_deadline.is_none() {
                take(dev.next_probe);
            }
            take(dev.drain_until);
            take(dev.retry_at);
        }
        next
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<HealthEvent> {
        self.events.pop_front()
    }

    /// The next probe to perform, oldest first.
    pub fn poll_probe(&mut self) -> Option<ProbeRequest> {
        self.probes.pop_front()
    }

    /// Operator command: put a recovered device back in service (manual pools). A device
    /// without active checks is restored from any down phase (nothing else can vouch for it).
    /// Returns true when the device went back in service.
    pub fn restore(&mut self, device: DeviceIdx) -> bool {
        let d = device.0;
        let Some(dev) = self.devs.get(d as usize) else {
            return false;
        };
        let ok = match dev.phase {
            DevicePhase::Up => false,
            DevicePhase::Recovered => true,
            DevicePhase::Down => dev.cfg.active.is_none(),
        };
        if ok {
            self.put_in_service(d);
        }
        ok
    }

    /// A good probe: counts toward `rise`, clears suspicion.
    fn success(&mut self, d: u32) {
        let Some(dev) = self.devs.get_mut(d as usize) else {
            return;
        };
        dev.fail_run = 0;
        dev.ok_run = dev.ok_run.saturating_add(1);
        dev.suspect = false;
        let rise = dev.cfg.active.map_or(1, |a| a.rise);
        if dev.phase == DevicePhase::Down && dev.ok_run >= rise {
            self.events.push_back(HealthEvent::DeviceUp {
                device: DeviceIdx(d),
            });
            if dev.cfg.restore == Restore::Auto {
                self.put_in_service(d);
            } else {
                dev.phase = DevicePhase::Recovered;
            }
        }
    }

    /// A failed or timed-out probe: counts toward `fall` (one is enough while suspect).
    fn failure(&mut self, now: Instant, d: u32) {
        let Some(dev) = self.devs.get_mut(d as usize) else {
            return;
        };
        dev.ok_run = 0;
        dev.fail_run = dev.fail_run.saturating_add(1);
        let fall = dev.cfg.active.map_or(1, |a| a.fall);
        let suspect = std::mem::take(&mut dev.suspect);
        match dev.phase {
            DevicePhase::Up if dev.fail_run >= fall || suspect => self.go_down(now, d),
            DevicePhase::Recovered => {
                dev.phase = DevicePhase::Down;
                self.events.push_back(HealthEvent::DeviceDown {
                    device: DeviceIdx(d),
                });
            }
            _ => {}
        }
    }

    /// Passive evidence: probe now if there is an active check, else take the device down.
    fn suspicious(&mut self, now: Instant, d: u32) {
        let Some(dev) = self.devs.get_mut(d as usize) else {
            return;
        };
        if dev.cfg.active.is_some() {
            dev.suspect = true;
            if dev.probe_deadline.is_none() {
                dev.next_probe = Some(now);
            }
        } else {
            self.go_down(now, d);
        }
    }

    /// Leaves service: the data plane stops choosing the device from the next snapshot on.
    fn go_down(&mut self, now: Instant, d: u32) {
        let Some(dev) = self.devs.get_mut(d as usize) else {
            return;
        };
        dev.phase = DevicePhase::Down;
        dev.ok_run = 0;
        dev.fail_run = 0;
        dev.suspect = false;
        let health = if dev.cfg.drain.is_zero() {
            DeviceHealth::OutOfService
        } else {
            dev.drain_until = Some(now + dev.cfg.drain);
            DeviceHealth::Draining
        };
        if dev.cfg.active.is_none() && dev.cfg.restore == Restore::Auto {
            dev.retry_at = dev.cfg.passive.map(|p| now + p.window);
        }
        let device = DeviceIdx(d);
        self.state.set_device(device, health);
        self.events.push_back(HealthEvent::DeviceDown { device });
        for &p in self
            .dev_pools
            .get(d as usize)
            .map_or(&[][..], |v| v.as_slice())
        {
            let Some(pool) = self.pools.get(p as usize) else {
                continue;
            };
            if let Some(a) = pool.alternate {
                if a != d && pool.members.contains(&d) && self.state.in_service(DeviceIdx(a)) {
                    self.events.push_back(HealthEvent::FailedOver {
                        pool: PoolIdx(p),
                        device,
                        alternate: DeviceIdx(a),
                    });
                }
            }
        }
        self.recompute_alternates();
        self.generation += 1;
    }

    /// Back in service: its flows (by rendezvous hash) come back to it.
    fn put_in_service(&mut self, d: u32) {
        let Some(dev) = self.devs.get_mut(d as usize) else {
            return;
        };
        dev.phase = DevicePhase::Up;
        dev.ok_run = 0;
        dev.fail_run = 0;
        dev.drain_until = None;
        dev.retry_at = None;
        let device = DeviceIdx(d);
        self.state.set_device(device, DeviceHealth::InService);
        for &p in self
            .dev_pools
            .get(d as usize)
            .map_or(&[][..], |v| v.as_slice())
        {
            self.events.push_back(HealthEvent::Restored {
                pool: PoolIdx(p),
                device,
            });
        }
        self.recompute_alternates();
        self.generation += 1;
    }

    /// "Alternate active" per pool, for status: some member is out and the alternate is in.
    fn recompute_alternates(&mut self) {
        let state = &self.state;
        let flags: Vec<bool> = self
            .pools
            .iter()
            .map(|p| {
                p.alternate.is_some_and(|a| state.in_service(DeviceIdx(a)))
                    && p.members.iter().any(|&m| !state.in_service(DeviceIdx(m)))
            })
            .collect();
        self.state.alternate_active = flags;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::compile;
    use crate::model::*;
    use crate::types::{proto, MacAddr, PortRange};

    fn defs(restore: Restore, passive: Option<PassiveCheck>, active: bool) -> Definitions {
        let dev = |n: &str, b: u8| {
            DeviceDef::loopback(n, 1, MacAddr([2, 0, 0, 0, 0, b]))
                .with_addr(Ipv4Addr::new(10, 0, 0, b))
        };
        let mut pool = PoolDef::new("web", &["a", "b"]);
        pool.alternate = Some("c".into());
        pool.restore = restore;
        pool.passive = passive;
        pool.active = active.then_some(ActiveCheck {
            port: 80,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(300),
            rise: 2,
            fall: 3,
        });
        Definitions {
            devices: vec![dev("a", 1), dev("b", 2), dev("c", 3)],
            pools: vec![pool],
            services: vec![ServiceDef::new(
                "s",
                ServiceKey::Address {
                    addr: Ipv4Addr::new(198, 51, 100, 1),
                    proto: proto::TCP,
                    ports: PortRange::single(80),
                },
                &[0],
                vec![HopDef::pool("web")],
            )],
        }
    }

    /// An arbitrary clock origin; everything after it is virtual time.
    #[allow(clippy::disallowed_methods)]
    fn origin() -> Instant {
        Instant::now()
    }

    fn drain_events(m: &mut HealthMonitor) -> Vec<HealthEvent> {
        std::iter::from_fn(|| m.poll_event()).collect()
    }

    /// Runs probes for device `a` (index 0) answering `ok`, one interval at a time.
    fn probe_round(m: &mut HealthMonitor, now: &mut Instant, ok_a: bool) {
        m.handle_timeout(*now);
        while let Some(p) = m.poll_probe() {
            let ok = if p.device == DeviceIdx(0) { ok_a } else { true };
            m.handle_probe_result(*now, p.device, ok);
        }
        *now += Duration::from_secs(1);
    }

    #[test]
    fn probes_keep_their_interval_when_the_caller_ticks_late() {
        let t = compile(&defs(Restore::Auto, None, true)).unwrap();
        let t0 = origin();
        let mut m = HealthMonitor::new(&t, t0);
        // A caller that looks every 300 ms (a 1 s interval is then always seen late): over
        // 30 s each device is probed once per interval, not once per 1.2 s.
        let mut sent = 0;
        let mut now = t0;
        while now < t0 + Duration::from_secs(30) {
            m.handle_timeout(now);
            while let Some(p) = m.poll_probe() {
                if p.device == DeviceIdx(0) {
                    sent += 1;
                }
                m.handle_probe_result(now, p.device, true);
            }
            now += Duration::from_millis(300);
        }
        assert_eq!(sent, 30, "probes of device a in 30 s at a 1 s interval");
        // After a stall of many intervals, one probe, then the interval again (no burst).
        now += Duration::from_secs(10);
        m.handle_timeout(now);
        let burst = std::iter::from_fn(|| m.poll_probe())
            .filter(|p| p.device == DeviceIdx(0))
            .count();
        assert_eq!(burst, 1);
        m.handle_probe_result(now, DeviceIdx(0), true);
        m.handle_timeout(now + Duration::from_millis(999));
        assert!(std::iter::from_fn(|| m.poll_probe()).all(|p| p.device != DeviceIdx(0)));
    }

    #[test]
    fn fall_then_rise_with_failover_events() {
        let t = compile(&defs(Restore::Auto, None, true)).unwrap();
        let t0 = origin();
        let mut m = HealthMonitor::new(&t, t0);
        assert_eq!(m.poll_timeout(), Some(t0));
        let mut now = t0;
        probe_round(&mut m, &mut now, true);
        assert!(drain_events(&mut m).is_empty());
        probe_round(&mut m, &mut now, false);
        probe_round(&mut m, &mut now, false);
        assert!(m.state().in_service(DeviceIdx(0)), "fall is 3");
        let g = m.generation();
        probe_round(&mut m, &mut now, false);
        assert!(!m.state().in_service(DeviceIdx(0)));
        assert!(m.generation() > g);
        assert!(m.state().alternate_active(PoolIdx(0)));
        assert_eq!(
            drain_events(&mut m),
            vec![
                HealthEvent::DeviceDown {
                    device: DeviceIdx(0)
                },
                HealthEvent::FailedOver {
                    pool: PoolIdx(0),
                    device: DeviceIdx(0),
                    alternate: DeviceIdx(2)
                }
            ]
        );
        probe_round(&mut m, &mut now, true);
        assert!(!m.state().in_service(DeviceIdx(0)), "rise is 2");
        probe_round(&mut m, &mut now, true);
        assert!(m.state().in_service(DeviceIdx(0)));
        assert!(!m.state().alternate_active(PoolIdx(0)));
        let ev = drain_events(&mut m);
        assert_eq!(
            ev[0],
            HealthEvent::DeviceUp {
                device: DeviceIdx(0)
            }
        );
        assert!(ev.contains(&HealthEvent::Restored {
            pool: PoolIdx(0),
            device: DeviceIdx(0)
        }));
    }

    #[test]
    fn unanswered_probe_times_out_as_failure() {
        let t = compile(&defs(Restore::Auto, None, true)).unwrap();
        let t0 = origin();
        let mut m = HealthMonitor::new(&t, t0);
        let mut now = t0;
        for _ in 0..3 {
            m.handle_timeout(now);
            // The router never answers device a's probes.
            while let Some(p) = m.poll_probe() {
                if p.device != DeviceIdx(0) {
                    m.handle_probe_result(now, p.device, true);
                }
            }
            let deadline = m.poll_timeout().unwrap();
            assert!(deadline <= now + Duration::from_millis(300));
            now += Duration::from_millis(300);
            m.handle_timeout(now);
            now += Duration::from_millis(700);
        }
        assert!(!m.state().in_service(DeviceIdx(0)));
        // A late answer for a timed-out probe is ignored.
        m.handle_probe_result(now, DeviceIdx(0), true);
        assert_eq!(m.phase(DeviceIdx(0)), Some(DevicePhase::Down));
    }

    #[test]
    fn manual_restore_waits_for_the_operator() {
        let t = compile(&defs(Restore::Manual, None, true)).unwrap();
        let mut now = origin();
        let mut m = HealthMonitor::new(&t, now);
        for _ in 0..3 {
            probe_round(&mut m, &mut now, false);
        }
        assert!(!m.restore(DeviceIdx(0)), "not healthy yet");
        for _ in 0..3 {
            probe_round(&mut m, &mut now, true);
        }
        assert_eq!(m.phase(DeviceIdx(0)), Some(DevicePhase::Recovered));
        assert!(!m.state().in_service(DeviceIdx(0)));
        assert!(m.restore(DeviceIdx(0)));
        assert!(m.state().in_service(DeviceIdx(0)));
        assert!(!m.restore(DeviceIdx(0)), "already up");
        assert!(!m.restore(DeviceIdx(99)));
    }

    #[test]
    fn passive_syns_trigger_an_immediate_probe() {
        let passive = PassiveCheck {
            syn_threshold: 3,
            window: Duration::from_secs(5),
        };
        let t = compile(&defs(Restore::Auto, Some(passive), true)).unwrap();
        let mut now = origin();
        let mut m = HealthMonitor::new(&t, now);
        probe_round(&mut m, &mut now, true);
        // Mid-interval: the next regular probe is a while away.
        m.handle_timeout(now);
        while let Some(p) = m.poll_probe() {
            m.handle_probe_result(now, p.device, true);
        }
        now += Duration::from_millis(100);
        let client = Ipv4Addr::new(203, 0, 113, 9);
        // Return traffic in between resets the count.
        m.handle_syn(now, DeviceIdx(0), client);
        m.handle_syn(now, DeviceIdx(0), client);
        m.handle_return_traffic(now, DeviceIdx(0), client);
        m.handle_syn(now, DeviceIdx(0), client);
        m.handle_syn(now, DeviceIdx(0), client);
        assert!(m.poll_timeout().unwrap() > now);
        m.handle_syn(now, DeviceIdx(0), client);
        // Suspect: a probe is due now, and one failure is enough.
        assert_eq!(m.poll_timeout(), Some(now));
        m.handle_timeout(now);
        let p = m.poll_probe().unwrap();
        assert_eq!(p.device, DeviceIdx(0));
        assert_eq!(p.addr, Ipv4Addr::new(10, 0, 0, 1));
        m.handle_probe_result(now, DeviceIdx(0), false);
        assert!(!m.state().in_service(DeviceIdx(0)));
    }

    #[test]
    fn passive_only_goes_down_and_retries_after_a_window() {
        let passive = PassiveCheck {
            syn_threshold: 2,
            window: Duration::from_secs(5),
        };
        let t = compile(&defs(Restore::Auto, Some(passive), false)).unwrap();
        let now = origin();
        let mut m = HealthMonitor::new(&t, now);
        assert_eq!(m.poll_timeout(), None);
        let client = Ipv4Addr::new(203, 0, 113, 9);
        m.handle_syn(now, DeviceIdx(1), client);
        // Old SYNs outside the window do not count.
        let later = now + Duration::from_secs(6);
        m.handle_syn(later, DeviceIdx(1), client);
        assert!(m.state().in_service(DeviceIdx(1)));
        m.handle_syn(later, DeviceIdx(1), client);
        assert!(!m.state().in_service(DeviceIdx(1)));
        let retry = later + Duration::from_secs(5);
        assert!(m.poll_timeout().unwrap() <= retry);
        m.handle_timeout(retry);
        assert!(m.state().in_service(DeviceIdx(1)));
    }

    #[test]
    fn reset_pool_drains_then_goes_out_of_service() {
        let mut d = defs(Restore::Auto, None, true);
        d.pools[0].on_failure = OnFailure::Reset {
            window: Duration::from_secs(10),
        };
        let t = compile(&d).unwrap();
        let mut now = origin();
        let mut m = HealthMonitor::new(&t, now);
        for _ in 0..3 {
            probe_round(&mut m, &mut now, false);
        }
        assert!(m.state().is_draining(DeviceIdx(0)));
        now += Duration::from_secs(10);
        m.handle_timeout(now);
        assert_eq!(m.state().device(DeviceIdx(0)), DeviceHealth::OutOfService);
    }

    #[test]
    fn adopt_keeps_state_across_reload() {
        let t = compile(&defs(Restore::Manual, None, true)).unwrap();
        let mut now = origin();
        let mut old = HealthMonitor::new(&t, now);
        for _ in 0..3 {
            probe_round(&mut old, &mut now, false);
        }
        // The new config lists the devices in another order.
        let mut d = defs(Restore::Manual, None, true);
        d.devices.reverse();
        let t2 = compile(&d).unwrap();
        let mut m = HealthMonitor::new(&t2, now);
        m.adopt(&old);
        let a = t2.device_index("a").unwrap();
        assert!(!m.state().in_service(a));
        assert_eq!(m.phase(a), Some(DevicePhase::Down));
        assert!(m.state().in_service(t2.device_index("b").unwrap()));
    }

    #[test]
    fn unknown_devices_are_ignored() {
        let t = compile(&defs(Restore::Auto, None, true)).unwrap();
        let now = origin();
        let mut m = HealthMonitor::new(&t, now);
        m.handle_probe_result(now, DeviceIdx(77), false);
        m.handle_syn(now, DeviceIdx(77), Ipv4Addr::LOCALHOST);
        m.handle_return_traffic(now, DeviceIdx(77), Ipv4Addr::LOCALHOST);
        assert_eq!(m.phase(DeviceIdx(77)), None);
        let s = PoolState::default();
        assert!(s.in_service(DeviceIdx(5)));
        assert!(!s.alternate_active(PoolIdx(5)));
    }
}
