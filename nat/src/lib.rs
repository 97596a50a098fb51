//! NAT44 core (placeholder doc, completed below).
#![forbid(unsafe_code)]

pub mod config;
pub mod hash;
pub mod session;
pub mod translate;
pub mod vid;
