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
//! - [`error`]: the crate's error type.
//!
//! The assignment builder, router and cache engines and their timers come later, as modules
//! next to these (`assign`, `router`, `cache`, `timer`).
#![forbid(unsafe_code)]

pub mod error;
pub mod hash;
pub mod mask;
pub mod security;
pub mod wire;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;

pub use error::{Error, LengthProblem};
