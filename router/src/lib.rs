//! swrouter: a userspace IPv4 router whose heart is WCCPv2 cache redirection.
//!
//! Layout (SPEC.md §2–3): [`io`] moves frames between interfaces and workers, [`pipeline`] runs
//! them through the stages, [`tables`] holds the read-mostly state the stages consult, [`wire`]
//! holds the L2–L4 formats, [`local`] carries the control plane's own UDP, [`worker`] and [`control`] are the threads and the control plane,
//! [`status`] is what `swrouter status` shows, and [`demo`] is the self-contained lab.

pub mod control;
pub mod demo;
pub mod io;
pub mod local;
pub mod pipeline;
pub mod probe;
pub mod status;
pub mod steering_status;
pub mod sys;
pub mod tables;
pub mod wire;
pub mod worker;
