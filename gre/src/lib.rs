//! GRE (RFC 2784 with the RFC 2890 Key and Sequence Number extensions) and the WCCPv2 redirect
//! header, as used on the router → cache data path.
//!
//! # Contract
//!
//! - **Sans-IO.** No sockets, no files, no clock, no threads. The caller hands in byte buffers and
//!   gets back values or errors; what to do with a packet is the router's business.
//! - **No panic on any input.** [`GrePacket::new_checked`], [`GreRepr::parse`],
//!   [`WccpRedirectHeader::new_checked`], [`decapsulate`], [`encapsulate_in_place`] and
//!   [`encapsulate_into`] return a typed [`Error`] for every malformed or inconsistent input.
//!   As in smoltcp, a view built with `new_unchecked` and a `Repr::emit` trust the caller to supply
//!   a buffer of at least the header length (`buffer_len()`); they index without checking and
//!   will panic otherwise, so outside hot paths that already know the length, use the checked forms.
//! - **Zero copy.** [`GrePacket`] and [`WccpRedirectHeader`] are views over a borrowed buffer;
//!   [`decapsulate`] returns the inner packet as a sub-slice of its input, and
//!   [`encapsulate_in_place`] writes the headers into headroom in front of the inner packet, so
//!   the inner packet is never copied. [`encapsulate_into`] copies it exactly once.
//! - **Not the outer IPv4 header.** WCCPv2 GRE redirection is outer IPv4 (protocol 47) + GRE +
//!   redirect header + original packet (reference §8). This crate handles GRE and the redirect
//!   header only; the router writes (and on receipt strips and validates) the outer IPv4 header,
//!   and must hand [`decapsulate`] exactly the IPv4 payload, because the GRE checksum (when
//!   present) covers everything up to the end of the outer datagram.
//! - **Lossless.** Unknown GRE protocol types are kept as [`GreProtocol::Unknown`]; unknown
//!   redirect-header flag bits are kept in [`WccpRedirectRepr::unknown_flags`], so re-encoding a
//!   decoded header reproduces its bytes.
//!
//! # Layout on the wire
//!
//! ```text
//!  GRE (RFC 2784 §2.1, RFC 2890 §2)          WCCPv2 redirect header (reference §8)
//!  +-+-+-+-+---------+-----+---------------+  +--------+--------+--------+--------+
//!  |C| |K|S| Rsvd0   | Ver | Protocol Type |  | flags  | svc id |  alt   |primary |
//!  +-+-+-+-+---------+-----+---------------+  +--------+--------+--------+--------+
//!  | Checksum (if C) | Reserved1 (if C)    |    D = 0x01, A = 0x02, U = 0x04
//!  | Key (if K)                            |
//!  | Sequence Number (if S)                |
//!  +---------------------------------------+
//! ```
#![forbid(unsafe_code)]

/// The Internet checksum (RFC 1071) the optional GRE checksum uses (RFC 2784 §2.5): the
/// workspace's one implementation, from `netwire`.
pub use netwire::checksum;
pub mod encap;
pub mod error;
pub mod packet;
pub mod redirect;

#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;

pub use encap::{
    decapsulate, encapsulate_in_place, encapsulate_into, encapsulated_header_len, Decapsulated,
    WCCP_GRE_OVERHEAD,
};
pub use error::Error;
pub use packet::{GrePacket, GreProtocol, GreRepr, GRE_BASE_HEADER_LEN, GRE_MAX_HEADER_LEN};
pub use redirect::{
    is_redirect_header_present, WccpRedirectHeader, WccpRedirectRepr, REDIRECT_HEADER_LEN,
};
