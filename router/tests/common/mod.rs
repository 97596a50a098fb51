//! Helpers shared by the router's integration-style tests.

pub mod counting_alloc;
