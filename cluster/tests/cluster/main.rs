//! The cluster crate's tests: id and codec properties, the seeded simulation of nodes around a
//! simulated etcd, and the fuzz corpus replay.

mod fuzz_corpus;
mod props;
mod sim;
