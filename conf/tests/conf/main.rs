//! The config crate's tests: validation, effective config, examples, properties.
//!
//! One test binary with a module per file: each binary of its own was another link of the
//! workspace in CI's release build.

mod cache;
mod cluster;
mod effective;
mod examples;
mod fuzz_corpus;
mod ha;
mod nat;
mod props;
mod steering;
mod validation;
mod wccp;
