//! VRRPv3 for IPv4 (RFC 5798, obsoleted by RFC 9568 with the same wire format and state
//! machine): the sans-IO protocol core the router runs on each data interface (issue 15, seed
//! 004: high availability).
//!
//! # Contract
//!
//! - **Sans-IO.** No sockets, threads, clocks or `unsafe`: time is a value (`now: Instant` on
//!   the caller's monotonic clock, centisecond intervals kept as `Duration`s), received packets
//!   are byte slices, and everything to do is returned as [`Action`]s (frames to send, the
//!   virtual MAC to install or remove, transitions) for the router to carry out in order.
//! - **No panic on any input.** [`wire::parse_frame`], [`wire::parse_ipv4`] and
//!   [`wire::Advert::parse`] check every length before reading; each way a packet can fail is
//!   one [`ParseError`] variant with its own counter ([`wire::RxErrors`], per interface).
//!   Advertisements that parse but must not be acted on are counted per virtual router
//!   ([`machine::Drops`]).
//! - **Timers.** A virtual router has one deadline at a time ([`VirtualRouter::next_deadline`]:
//!   Master_Down_Timer in Backup, Adver_Timer in Master); the caller calls
//!   [`VirtualRouter::on_timer`] when it passes.
//!
//! # Using it
//!
//! ```text
//! let mut vr = VirtualRouter::new(cfg, now)?;     // Initialize
//! act(vr.startup(now));                            // owner → Master, others → Backup
//! loop {
//!     frame received on the interface (IP proto 112):
//!         match wire::parse_frame(frame) { Ok(rx) => act(vr_for(rx.advert.vrid()).on_received(&rx, now)),
//!                                          Err(e) => rx_errors.count(&e) }
//!     vr.next_deadline() reached: act(vr.on_timer(now))
//!     `swrouter ha switchover`:   act(vr.switchover(now))
//! }
//! act(vr.shutdown(now));                           // master sends priority 0
//! ```
//!
//! # Behaviour
//!
//! - Wire format (§5.2): version 3, type 1, 12-bit Max Adver Int in centiseconds (10 ms to
//!   40.95 s), reserved bits zero on send and ignored on receipt. Received adverts must have
//!   IP TTL 255, version 3, type 1, the exact length their count announces, a non-zero
//!   interval and a valid checksum. The checksum covers the IPv4 pseudo-header (RFC 5798
//!   §5.2.8); the pseudo-header-less sum that some peers send is accepted too and reported
//!   ([`ChecksumMode`]), and can be chosen for sending ([`Config::checksum`]).
//! - Packets (§5.1, §7.3): IPv4 TOS CS6, TTL 255, protocol 112, to 224.0.0.18 from the
//!   interface's primary address; Ethernet from the virtual MAC 00:00:5e:00:01:VRID to
//!   01:00:5e:00:00:12; a gratuitous ARP per virtual address on becoming master.
//! - State machine (§6.4): Skew_Time = ((256 − Priority) × Master_Adver_Interval) / 256,
//!   Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time, with Master_Adver_Interval
//!   learnt from the master's adverts. Priority 255 (address owner) becomes master at start-up
//!   and discards adverts; priority 0 from a leaving master makes backups take over after
//!   Skew_Time; a master yields to a higher priority, or an equal one from a higher primary
//!   address; Preempt_Mode (with an optional delay after start-up) and Accept_Mode
//!   ([`VirtualRouter::accepts_virtual_traffic`]).
//! - Operations: [`VirtualRouter::switchover`] hands mastership away (priority 0, no preempting
//!   back until this router is master again or restarts); [`VirtualRouter::set_priority`]
//!   changes the priority at run time.
//!
//! # Limits
//!
//! - IPv4 only (no IPv6 / Neighbor Advertisements), multicast only (no unicast peers).
//! - VRRPv2 (RFC 3768) adverts are dropped as [`ParseError::BadVersion`].
//! - The address-list check of §7.1 is always on; the owner's list is accepted with a counter.
#![forbid(unsafe_code)]

pub mod config;
pub mod machine;
pub mod wire;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;

pub use config::{Config, ConfigError};
pub use machine::{Action, BackupCause, Counters, Drops, MasterCause, State, VirtualRouter};
pub use wire::{Advert, ChecksumMode, ParseError, Received};
