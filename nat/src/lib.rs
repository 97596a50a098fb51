//! NAT44 with VID dispatch (issue 14, seed 000): the sans-IO core the router wires into its
//! workers.
//!
//! # Contract
//!
//! - **Sans-IO.** No sockets, threads, clocks or `unsafe`: packets are byte slices translated in
//!   place, time is a value (`now`, whole seconds on the caller's monotonic clock), and every
//!   state change that another party must hear about is returned (worker events, VID changes,
//!   mirror records) for the router to carry.
//! - **No panic on any input.** Every packet goes through [`translate::parse`] (netwire's checked
//!   views) before a field is read or written; malformed packets are counted and dropped.
//! - **Fast path.** An established flow's packet costs one parse, one hash lookup and an
//!   incremental checksum patch, with no allocation (tested by a counting allocator in
//!   `tests/alloc.rs`; benched in `benches/fastpath.rs`).
//!
//! # The seed, mapped onto the router
//!
//! | seed (claims) | here |
//! |---|---|
//! | processors | workers: [`worker::NatWorker`], one per router worker thread |
//! | virtual identifier (1, 4) | a block of outside ports on every pool address ([`vid::Geometry`]) |
//! | switch processor + VID manager (1, 4, 5, 7, 10) | [`switch::SwitchProcessor`]: [`vid::VidManager`] and the flow table it installs |
//! | set-up request / reply (1, 11) | the first inside packet of a flow; the selected worker translates it with a source port in its VID's block |
//! | line interface (2, 5, 6, 12, 14) | [`dispatch::dispatch`]: outside packets go to the VID in their destination port, inside packets through the flow table |
//! | backup processor (7–9, 13, 14) | each VID's backup worker, fed by [`mirror`] records; [`vid::VidManager::worker_failed`] moves VIDs in one step |
//! | query VID at initialisation (10, 15) | [`vid::VidManager::request_vid`], also on restart: a fresh VID (or, with none free, one a survivor adopted, handed back), and backup duty for the VIDs the failure left adopted |
//! | entries keyed by more than the 5-tuple where the protocol needs it (seed 003, 7) | raw ESP sessions keyed by SPI in one [`esp::EspTable`] shared by the workers, outside VIDs and the flow table |
//!
//! The switch processor sees set-up requests only (`SwitchCounters::not_setup` proves it stays
//! 0); every other packet reaches its worker straight from the line interface, and a worker
//! counts packets whose VID it does not own (`WorkerCounters::misdelivered`, must stay 0).
//!
//! # Behaviour (RFC 4787, RFC 5382, RFC 5508)
//!
//! - Endpoint-independent mapping, paired pooling; address-and-port-dependent filtering
//!   ([`session`]).
//! - UDP, TCP and ICMP echo; ICMP errors (destination unreachable including fragmentation
//!   needed, time exceeded, parameter problem, source quench) translated with their quoted
//!   packet, so traceroute and path-MTU discovery work through the NAT ([`translate`]).
//! - Raw ESP (IP protocol 50, IPsec without NAT-T; IKE and NAT-T pass as UDP): sessions keyed
//!   by SPI ([`esp`]): outbound by (inside, remote, outbound SPI), inbound by (pool, remote,
//!   inbound SPI), the inbound SPI learnt from the first unknown one after the host's outbound
//!   packet ("ESP SPI matching" when several hosts negotiate with one remote at once). The pool
//!   address is the host's paired-pool one ([`config::Config::pool_addr_for`]); the cluster id
//!   is the remote's ([`cluster::esp_id`]); sessions sync as records of their own
//!   ([`sync::encode_esp`]).
//! - Hairpinning: a translated packet addressed to a pool address comes back as
//!   [`worker::Verdict::Hairpin`] and is dispatched again as an inbound packet.
//! - Port exhaustion: the new flow is dropped, counted, and [`worker::Verdict::Prohibited`]
//!   asks the router to answer ICMP destination unreachable code 13.
//! - Router clusters (issue 16): [`cluster`] keeps a flow's distribution id in its outside
//!   port, [`session::SessionTable::outbound_for_id`] allocates such ports and
//!   [`session::SessionTable::drop_ids`] / [`session::SessionTable::snapshot_ids`] hand ids over.
//! - Timeouts ([`config::Timeouts`]): TCP established 7440 s, TCP transitory 240 s, UDP 300 s,
//!   ICMP 60 s (VPP's defaults, the RFC minimums).
//!
//! # Limits
//!
//! - Fragments are dropped and counted (no virtual reassembly yet).
//! - ICMP queries other than echo, and protocols other than TCP/UDP/ICMP and ESP, are not
//!   translated.
//! - ESP: an SA pair whose first packet comes from the outside is dropped until the inside host
//!   sends; two inside hosts that choose the same inbound SPI with one remote through one pool
//!   address cannot be told apart (the first to learn it keeps it, [`esp`]).
//! - Mirroring is asynchronous: sessions created in the last unsent batch, or refused by a full
//!   mirror queue (counted), are lost if their worker dies; a VID whose owner and backup fail
//!   together loses its sessions ([`vid::VidChange::Lost`]).
//! - Taken-over sessions restart their idle timer (refreshes are not mirrored).
//! - Blocks are a power of two, so up to one block of the port range can go unused
//!   ([`vid::Geometry`]).
#![forbid(unsafe_code)]

pub mod cluster;
pub mod config;
pub mod dispatch;
pub mod esp;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod hash;
pub mod mirror;
pub mod session;
pub mod switch;
pub mod sync;
pub mod translate;
pub mod vid;
pub mod worker;
