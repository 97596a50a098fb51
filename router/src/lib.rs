//! swrouter: a userspace IPv4 router whose heart is WCCPv2 cache redirection.
//!
//! Layout (SPEC.md §2–3): [`io`] moves frames between interfaces and workers, [`pipeline`] runs
//! them through the stages, [`tables`] holds the read-mostly state the stages consult, [`wire`]
//! holds the L2–L4 formats, [`outbox`] carries what the control plane sends, [`probe`] is the
//! one TCP prober of the health checks (WCCP fast failover, steering health), [`natd`] carries
//! NAT44 and its VID dispatch onto the workers and the switch processor's thread, [`worker`] and
//! [`control`] are the threads and the control plane (which tells systemd through
//! [`sd_notify`] when it is ready), and [`status`] is what `swrouter status` shows
//! ([`metrics`]: the same snapshot for Prometheus). ARCHITECTURE.md at the repository root
//! describes the whole structure.
//!
//! This crate is the router itself and nothing else. Around it, in their own crates: the
//! `swrouter` command line (package `swrouter`: run, check, status, reload, steering, demo),
//! the demo lab behind `swrouter demo` (package `demo`, on netlab), and the cache side, swcache
//! (package `cache`). Configuration comes from `conf`; the protocols from the sans-IO leaves
//! `wccp`, `gre`, `steering` and `netwire`.

pub mod control;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod ha_status;
pub mod io;
pub mod metrics;
pub mod natd;
pub mod outbox;
pub mod pipeline;
pub mod probe;
pub mod sd_notify;
pub mod statesync;
pub mod status;
pub mod status_live;
pub mod steering_status;
pub mod sys;
pub mod tables;
pub mod wire;
pub mod worker;
