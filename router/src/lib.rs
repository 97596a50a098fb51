//! swrouter: a userspace IPv4 router whose heart is WCCPv2 cache redirection.
//!
//! Layout (SPEC.md §2–3): [`io`] moves frames between interfaces and workers, [`pipeline`] runs
//! them through the stages, [`tables`] holds the read-mostly state the stages consult, [`wire`]
//! holds the L2–L4 formats, [`outbox`] carries what the control plane sends, [`probe`] is the
//! one TCP prober of the health checks, [`worker`] and [`control`] are the threads and the
//! control plane, [`status`] is what `swrouter status` shows, and [`demo`] is the
//! self-contained lab. ARCHITECTURE.md at the repository root describes the whole structure.

pub mod cache_agent;
pub mod control;
pub mod demo;
pub mod io;
pub mod outbox;
pub mod pipeline;
pub mod probe;
pub mod status;
pub mod steering_status;
pub mod sys;
pub mod tables;
pub mod wire;
pub mod worker;
