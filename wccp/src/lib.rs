//! WCCPv2 protocol core (SPEC.md §4, issue 3): wire format, MD5 security, hashing and
//! assignment, and the router and cache engines as sans-IO state machines.
//!
//! Contract: no I/O, no clock reads (time is passed in), no threads, no panic on any input.
//! The contents arrive with the WCCP protocol-core issue; until then this is an empty library.
#![forbid(unsafe_code)]
