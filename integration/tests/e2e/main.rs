//! The end-to-end tests: the release binaries in real network namespaces with real peers.
//!
//! One test binary with a module per file: each binary of its own was another link of the
//! workspace in CI's release build.

mod cli;
mod cluster;
mod demo;
mod forwarding;
mod ha_nat;
mod ha_pseudo;
mod ha_sync;
mod ha_vrrp;
mod ha_wccp;
mod management;
mod metrics;
mod nat;
mod overload;
mod sd_notify;
mod steering;
mod swcache_bypass;
mod trace;
mod wccp_barrage;
mod wccp_fail_mtu;
mod wccp_multi;
mod wccp_multicast;
mod wccp_redirect;
mod wccp_squid;
mod wccp_two_caches;
mod wccp_variants;
