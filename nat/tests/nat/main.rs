//! Crate tests for `nat`: RFC behaviours end to end through dispatch, the switch processor and
//! the workers (`rfc`), property tests (`props`), and a deterministic simulation of workers
//! failing and restarting (`sim`). `esp` covers raw ESP by SPI. `lab` wires the pieces the way the router will.
#![allow(clippy::unwrap_used, missing_docs)]

mod esp;
mod lab;
mod props;
mod rfc;
mod sim;
mod sync;
