//! WCCP version 2 for a userspace router and cache: the wire format, MD5 security, and the
//! hash and mask assignment functions (reference: `shared/reference/wccp-v2.md`, which cites
//! draft-wilson-wrec-wccp-v2 as \[W\] and draft-mclaggan-wccp-v2rev1 as \[R1\]).
//!
//! # Contract
//!
//! - **Sans-IO.** No sockets, files, threads or clocks: callers hand in byte buffers (and, in
//!   the engines that build on this crate, `now`); `clippy.toml` forbids `Instant::now`,
//!   `SystemTime::now` and `thread::spawn` here.
//! - **Never panics on any input.** Every decoder returns a typed [`Error`] carrying offsets
//!   and values; counts are bounded by the remaining octets before allocating. The fuzz targets
//!   in `fuzz/` (module `fuzzing`) check this and the lossless round trip.
//! - **Lossless.** [`wire::Message::decode`] followed by [`wire::Message::encode`] reproduces
//!   the input byte for byte, including component order and unknown components.
//!
//! # Map
//!
//! - [`wire`]: header, components, elements, the four messages and their builders.
//! - [`security`]: MD5 signing and verification (§3.1).
//! - [`hash`]: bucket index and table lookup (§6.1–6.2), bucket bitmap bit order (§6.3).
//! - [`mask`]: mask/value matching and VSNs (§7.2, §7.4).
//! - [`assign`]: how a designated cache splits buckets and mask values with minimal
//!   movement, and the compiled [`assign::Assignment`] a router's data plane looks up.
//! - [`router`]: [`router::RouterEngine`], the router side of the protocol (§5).
//! - [`cache`]: [`cache::CacheEngine`], the cache side, including designated-cache election.
//! - [`timer`]: protocol timer values (§1) and the engines' deadline tables.
//! - [`engine`]: what both engines share: `Transmit`, negotiated methods, counters, drop
//!   reasons.
//! - [`error`]: the crate's error type.
//!
//! # Engines
//!
//! Both engines follow quinn-proto: inputs `handle_message(now, …)`, `handle_timeout(now)` and
//! configuration commands; outputs drained with `poll_transmit`, `poll_event` and
//! `poll_timeout` after every input. They keep no sockets, read no clock and spawn nothing,
//! so `tests/sim.rs` runs routers and caches on a virtual clock with packet loss.
#![forbid(unsafe_code)]

pub mod assign;
pub mod cache;
pub mod engine;
pub mod error;
pub mod hash;
pub mod mask;
pub mod router;
pub mod security;
pub mod timer;
pub mod wire;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;

pub use error::{Error, LengthProblem};
