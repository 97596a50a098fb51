//! `swcache`: the WCCPv2 cache agent (SPEC.md §4, "what swcache must do as a cache").
//!
//! One tokio current-thread loop drives the sans-IO [`wccp::cache::CacheEngine`] over a UDP
//! socket bound to `address:2048` (HERE_I_AM, election, REDIRECT_ASSIGN all happen inside the
//! engine; the loop feeds it datagrams and deadlines and sends what it polls), and terminates
//! WCCP GRE in userspace: a raw IP socket for protocol 47 receives the redirected datagrams, the
//! outer IPv4, GRE and redirect headers are stripped and the inner packet is written to a TUN
//! device, where a local transparent proxy intercepts it (reference §8). `--gre-only` runs just
//! the GRE part, for a cache that speaks WCCP itself. A Unix status socket answers `status` with
//! JSON.
//!
//! `--bypass PREFIX` returns redirected packets for those destinations to the router that
//! redirected them instead of proxying them (reference §8, packet return), by the return method
//! negotiated with that router for the service (GRE when there is no engine, `--gre-only`); see
//! [`bypass`].
//!
//! One module per job:
//! - [`cli`]: the command-line flags and how they override `cache.conf` (read by `conf::cache`);
//! - [`decap`]: taking a redirected datagram apart (outer IPv4, GRE, redirect header);
//! - [`bypass`]: returning bypassed packets to their router by GRE or at layer 2, rewritten
//!   to another destination where `--return-rewrite` says so;
//! - [`copy`]: copies of the returned packets for an analyser (pcap file or TAP device);
//! - [`routes`]: the kernel's main routing table, read for the L2 return's next-hop check;
//! - [`status`]: the status socket and the JSON it answers;
//! - [`tun`]: the TUN device the inner packets are written to;
//! - [`sys`]: the few system calls beyond tokio (TUN, raw sockets, interface flags);
//! - [`agent`]: the loop that ties them together.

pub mod agent;
pub mod bypass;
pub mod cli;
pub mod copy;
pub mod decap;
pub mod routes;
pub mod status;
pub mod sys;
pub mod tun;

pub use agent::run;
pub use cli::{Args, Settings};
