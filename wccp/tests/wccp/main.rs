//! The WCCP crate's tests: capture vectors, Squid replays, simulation, properties, fuzz corpus.
//!
//! One test binary with a module per file: each binary of its own was another link of the
//! workspace in CI's release build.

mod assign_props;
mod barrage;
mod common;
mod fuzz_corpus;
mod router_squid;
mod router_sync;
mod sim;
mod vectors;
mod wire_props;
