//! Crate tests for `vrrp`: one test per RFC rule (`rfc`), wire-format property tests (`props`),
//! keepalived captures and tshark decoding (`vectors`), a seeded simulation of routers on a
//! lossy link (`sim`) and the fuzz corpus replay (`fuzz_corpus`).
#![allow(clippy::unwrap_used, missing_docs)]

mod fuzz_corpus;
mod props;
mod rfc;
mod sim;
mod vectors;
