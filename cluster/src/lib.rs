//! The router cluster's sans-IO core (issue 16, seed 003, claims 1–9): N swrouter nodes share
//! one segment, every node receives every frame (a shared cluster MAC), and each of 256
//! distribution ids is handled by exactly one node at a time.
//!
//! # Contract
//!
//! - **Sans-IO.** No sockets, threads, clocks or `unsafe`: packets are byte slices, time is a
//!   value (`now: Instant` on the caller's monotonic clock), etcd results and sync-channel
//!   events are method calls, and everything to do comes back as [`engine::Action`]s for the
//!   router's driver to carry out in order.
//! - **No panic on any input.** [`id::packet_id`] reads through netwire's checked views and
//!   [`alloc::Allocation::decode`] checks every length and index.
//!
//! # Modules
//!
//! - [`id`]: a packet's distribution id (both directions of a flow and both sides of the NAT
//!   agree) and the NAT port rule (`(port − port_min) & 0xff` is the id).
//! - [`alloc`]: the epoch-numbered id → owner table, its etcd/sync codec, its computation with
//!   WCCP's minimal-movement quota rule, and the per-node difference between epochs.
//! - [`record`]: a member's etcd record (weight, sync address, interface MACs) and the
//!   cluster's `config` record with the join rule ([`record::config_gate`]).
//! - [`engine`]: [`engine::ClusterEngine`], membership, proposer, CAS, fencing and the
//!   per-id handover (hold, release, adopt, took, forward).
//!
//! # Tables (claims 1, 3–6)
//!
//! The node-specific table is the router's data-plane state (NAT sessions, flow table); the
//! common table is the set of hasync replicas of the peers' published entries. Every entry's
//! id is computable from the entry (for a NAT session, [`id::id_of_port`] of its outside port),
//! so [`engine::Action::Adopt`] and [`engine::Action::Release`] select entries by id.
#![forbid(unsafe_code)]

pub mod alloc;
pub mod engine;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod id;
pub mod record;

pub use alloc::{compute, diff, Allocation, Member, Moves, NodeId};
pub use engine::{Action, ClusterEngine, EngineConfig, EtcdRequest, PlaneState, Status};
pub use id::{packet_id, Id, IdConfig, Prefix};
pub use record::{config_gate, ConfigGate, ConfigRecord, MemberRecord};
