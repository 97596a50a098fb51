//! The steering plane: compiled service-chain tables, device health as the data plane sees it,
//! and the per-service and per-device counters (issue 7, SPEC.md §5).
//!
//! One plane is built per config (start and every reload) and travels in the [`super::Tables`]
//! snapshot, so a reload swaps services, devices and counters atomically with the routes: a
//! packet is steered entirely by the old tables or entirely by the new ones. Health is an
//! `ArcSwap` inside the plane because the health monitor changes it between reloads.

use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Service drop reasons counted per service, in this order.
pub const SERVICE_DROPS: [&str; 5] = [
    "steering-acl-deny",
    "steering-unexpected-source",
    "steering-no-device",
    "steering-reset",
    "steering-copy-overflow",
];

/// Index into a service's drop counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum ServiceDrop {
    /// Denied by the service ACL.
    AclDeny,
    /// Frame from an unexpected source MAC.
    UnexpectedSource,
    /// No live device.
    NoDevice,
    /// Answered with a RST (dead device, `reset` pool).
    Reset,
    /// A copy was lost to a full copy queue.
    CopyOverflow,
}

/// Counters shared by all workers (relaxed `fetch_add`; a handful per steered packet).
#[derive(Debug, Default)]
pub struct Traffic {
    /// Packets.
    pub packets: AtomicU64,
    /// Bytes (Ethernet frames).
    pub bytes: AtomicU64,
}

impl Traffic {
    /// Counts one frame of `len` bytes.
    #[inline]
    pub fn count(&self, len: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
    }
}

/// One service's counters.
#[derive(Debug, Default)]
pub struct ServiceCounters {
    /// Client → service packets steered.
    pub forward: Traffic,
    /// Service → client packets steered.
    pub reverse: Traffic,
    /// Drops by [`ServiceDrop`].
    pub drops: [AtomicU64; 5],
}

/// One device's counters.
#[derive(Debug, Default)]
pub struct DeviceCounters {
    /// Frames sent to the device on the main path.
    pub sent: Traffic,
    /// Copies sent to the device (promiscuous hops).
    pub copies: Traffic,
    /// Copies for it lost to a full copy queue.
    pub copy_drops: AtomicU64,
    /// Probe answers that accepted the handshake (SYN-ACK), counted by the health driver.
    pub probe_ok: AtomicU64,
    /// Probe answers that refused it (RST), counted by the health driver.
    pub probe_refused: AtomicU64,
    /// Times the health checks took the device out of service.
    pub downs: AtomicU64,
    /// When the device last changed between in and out of service (Unix time, ms; 0: never).
    pub changed_unix_ms: AtomicU64,
}

/// Compiled tables, health and counters of one config.
#[derive(Debug)]
pub struct SteeringPlane {
    /// The compiled tables; `None` when the config steers nothing (the stage then passes all).
    pub tables: Option<steering::Tables>,
    /// Device health the decision reads; replaced by the health monitor.
    pub health: ArcSwap<steering::PoolState>,
    /// Per-service counters, by `ServiceIdx`.
    pub services: Vec<ServiceCounters>,
    /// Per-device counters, by `DeviceIdx`.
    pub devices: Vec<DeviceCounters>,
    /// Per ACL rule (all services' rules, by the index `steering::Tables::acl_rule` takes):
    /// packets the rule decided, permitted or denied by its action. A rule naming one client
    /// (a /32 source) is that client's counter.
    pub acl: Vec<Traffic>,
    /// Passive-check evidence from the workers (SYNs sent to a device, SYN-ACKs back from it),
    /// drained by the health driver every tick. Bounded and lock-free; when full, evidence is
    /// dropped and counted in `passive_lost` (the check then sees fewer SYNs, never a stall).
    pub passive: crossbeam_queue::ArrayQueue<PassiveEvent>,
    /// Passive evidence lost to a full queue.
    pub passive_lost: AtomicU64,
    /// Connections opened during a reset pool's drain window that a worker's drain memory
    /// had to forget for newer ones (their next segment is reset).
    pub drain_evicted: AtomicU64,
}

/// Capacity of the passive-evidence queue: many ticks' worth of new TCP flows.
pub const PASSIVE_QUEUE: usize = 4096;

/// One piece of passive-check evidence about a device of a pool with `passive-syns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassiveEvent {
    /// A client's SYN was sent to the device.
    Syn {
        /// The device.
        device: steering::DeviceIdx,
        /// The client.
        client: std::net::Ipv4Addr,
    },
    /// The device answered a client's handshake (SYN-ACK on its way back).
    Answered {
        /// The device.
        device: steering::DeviceIdx,
        /// The client.
        client: std::net::Ipv4Addr,
    },
}

impl Default for SteeringPlane {
    fn default() -> Self {
        SteeringPlane {
            tables: None,
            health: ArcSwap::from_pointee(steering::PoolState::default()),
            services: Vec::new(),
            devices: Vec::new(),
            acl: Vec::new(),
            passive: crossbeam_queue::ArrayQueue::new(1),
            passive_lost: AtomicU64::new(0),
            drain_evicted: AtomicU64::new(0),
        }
    }
}

impl SteeringPlane {
    /// Compiles `defs` into a plane with every device in service.
    pub fn build(defs: &steering::Definitions) -> Result<SteeringPlane, steering::CompileError> {
        if defs.services.is_empty() && defs.devices.is_empty() {
            return Ok(SteeringPlane::default());
        }
        let tables = steering::compile(defs)?;
        let health = steering::PoolState::all_in_service(&tables);
        Ok(SteeringPlane {
            services: (0..tables.service_count())
                .map(|_| Default::default())
                .collect(),
            devices: (0..tables.device_count())
                .map(|_| Default::default())
                .collect(),
            acl: (0..tables.acl_rule_count())
                .map(|_| Default::default())
                .collect(),
            health: ArcSwap::from_pointee(health),
            tables: Some(tables),
            passive: crossbeam_queue::ArrayQueue::new(PASSIVE_QUEUE),
            passive_lost: AtomicU64::new(0),
            drain_evicted: AtomicU64::new(0),
        })
    }

    /// Counts a frame of `len` bytes against the ACL rule that decided it, if a rule did.
    #[inline]
    pub fn acl_hit(&self, rule: Option<u32>, len: usize) {
        if let Some(c) = rule.and_then(|r| self.acl.get(r as usize)) {
            c.count(len);
        }
    }

    /// Hands passive-check evidence to the health driver (dropped and counted when full).
    #[inline]
    pub fn passive_evidence(&self, e: PassiveEvent) {
        if self.passive.push(e).is_err() {
            self.passive_lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a service drop.
    #[inline]
    pub fn service_drop(&self, s: steering::ServiceIdx, why: ServiceDrop) {
        if let Some(c) = self
            .services
            .get(s.index())
            .and_then(|c| c.drops.get(why as usize))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A shared plane.
pub type SharedSteering = Arc<SteeringPlane>;
