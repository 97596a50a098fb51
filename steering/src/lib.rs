//! Service-chain steering (seed 002, SPEC.md §5): service chains compiled to lookup tables, the
//! per-packet steering decision, and device pools with health checks and failover.
//!
//! # Contract
//!
//! - **Sans-IO.** No sockets, files, threads or clocks: the router hands in packet keys and,
//!   for health, `now: Instant`; `clippy.toml` forbids `Instant::now`, `SystemTime::now` and
//!   `thread::spawn` here. The router performs probes, sends RSTs and copies, and resolves
//!   addresses.
//! - **Never panics on any input.** [`compile()`] rejects bad definitions with a typed
//!   [`CompileError`] naming the service, device or pool; [`Tables::decide`] answers every
//!   [`PacketKey`] and tolerates a [`PoolState`] from another reload.
//! - **Stateless per packet.** As the seed's packeting engine (Figure 18: "TCP and IP
//!   stateless"), a decision depends only on the packet key, the tables and device health;
//!   both directions of a flow pick the same devices by a symmetric rendezvous hash, and no
//!   flow table exists. `decide` allocates nothing. The one exception is bounded and
//!   caller-owned: [`DrainedFlows`] remembers connections opened while a reset pool drains a
//!   dead device (so they are not reset with that device's established flows).
//! - **Pure, fast compile.** [`compile()`] builds fresh [`Tables`] from [`Definitions`]; the
//!   router swaps them in atomically on reload (a rejected config keeps the old tables).
//!
//! # Map
//!
//! - [`model`]: definitions the conf layer builds (devices, pools, services, ACLs).
//! - [`compile()`](compile::compile) and [`CompileError`]: definitions → tables.
//! - [`Tables`]: the compiled layout: a port map (address, protocol, port → service group),
//!   legs (interface, source MAC → device side) and per-group position spans (role → step).
//! - [`decide`]: [`PacketKey`] → [`Decision`] ([`Action`], [`Egress`], [`Rewrite`], copies).
//! - [`health`]: [`PoolState`] (data-plane view) and [`HealthMonitor`] (probes, passive
//!   SYN tracking, rise/fall, failover and restore events).
//!
//! # Terms from the seed
//!
//! Service address W1 and service port P1 (Figures 5–6), the sequence table keyed by received
//! interface and source MAC (Figure 7B), destination system types (transparent, loopback,
//! alias, NAT, router), the packet distributor's copies to promiscuous devices (Figures 7, 11),
//! port translation P1 ↔ TP1 (Figure 8), dynamic port ranges owned by a service port
//! (Figure 9B), per-service ACLs keyed by interface and service address (Figure 18), pools with
//! an alternate device (Figures 15B–15C).
#![forbid(unsafe_code)]

pub mod compile;
pub mod decide;
mod drain;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod hash;
pub mod health;
pub mod model;
pub mod sync;
mod tables;
mod types;

pub use compile::{compile, CompileError, Subject};
pub use decide::{Action, Copies, CopyTarget, Decision, Egress, NextHop, PacketKey, Rewrite};
pub use drain::{DrainChange, DrainedFlows, JOURNAL_MAX};
pub use hash::{FastHasher, FastMap};
pub use health::{
    DeviceHealth, DevicePhase, HealthEvent, HealthMonitor, PoolState, ProbeRequest,
    MAX_TRACKED_SYNS,
};
pub use model::{
    AclAction, AclRule, ActiveCheck, Definitions, DeviceDef, DeviceMode, HopDef, HopTarget,
    OnFailure, PassiveCheck, Policy, PoolDef, Restore, ServiceDef, ServiceKey,
};
pub use tables::{Tables, MAX_COPIES, MAX_POOL_MEMBERS};
pub use types::{
    proto, tcp_flags, DeviceIdx, Direction, IfId, MacAddr, PoolIdx, PortRange, Prefix, ServiceIdx,
};
