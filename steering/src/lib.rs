//! Service-chain steering (seed 002, SPEC.md §5).
//!
//! Contract: this crate is sans-IO. It compiles service chains (services, pools, devices and their
//! modes) into lookup tables keyed by (ingress interface, source MAC, service address, service port)
//! and answers the per-packet steering decision from those tables. It performs no I/O, reads no
//! clock (time is passed in), spawns no threads, and never panics on any input.
//!
//! Nothing is implemented yet: the steering issue fills this crate in. It is an empty library on
//! purpose so that the workspace layout of SPEC.md §2 is in place.
#![forbid(unsafe_code)]
