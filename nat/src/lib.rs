//! NAT44 core (placeholder doc, completed below).
#![forbid(unsafe_code)]

pub mod config;
pub mod dispatch;
pub mod hash;
pub mod mirror;
pub mod session;
pub mod switch;
pub mod translate;
pub mod vid;
pub mod worker;
