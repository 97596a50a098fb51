//! WCCPv2 messages on the wire: header, components, elements, and the four messages.
//!
//! # Contract
//!
//! - **Lossless.** [`Message`] keeps the header version, every component in its original order,
//!   duplicates, and unknown component types as raw octets ([`Component::Unknown`]). For every
//!   input that [`Message::decode`] accepts, [`Message::encode`] returns exactly the same octets.
//!   Protocol code enums end with `Unknown(n)`; an `Unknown` holding a value that has a named
//!   variant is never produced by decoding (build the named variant instead).
//! - **Strict.** Reference §3 framing: a component Length is a multiple of 4 and may not run
//!   past the message Length; fixed-size components must have their size; every count is checked
//!   against the remaining octets before anything is allocated; every structure must consume
//!   exactly its octets ([`TrailingBytes`] otherwise). Errors carry the offset (from the first
//!   header octet) and the offending numbers.
//! - **Datagram vs message** (reference §2). A WCCP message is the 8-octet header plus Length
//!   octets. [`Message::decode`] is strict: the input must be exactly one message, and octets
//!   after header+Length are an error. [`Message::decode_datagram`] applies the receiver rule
//!   of \[R1\] (ignore UDP octets beyond header+Length) and reports how many it ignored;
//!   engines use it and should count non-zero `trailing` as peer misbehaviour.
//!   [`Message::decode_datagram_tolerant`] additionally leaves out malformed components the
//!   message type can do without ([`skippable`]) and lists them; the router engine uses it. MD5
//!   ([`crate::security`]) always covers header+Length only, and encoders never pad.
//! - **Message types.** Any header type with major version 2 is decoded with the same component
//!   framing (`MessageType::Unknown(n)` for types other than 10–13, which engines ignore per
//!   §2); the views check the type. Other major versions fail with
//!   [`Error::UnsupportedVersion`](crate::Error::UnsupportedVersion).
//! - **Order and duplicates.** Decoding accepts components in any order (reference §4); typed
//!   accessors ([`Message::security`], …) and the per-message views ([`HereIAm`], …) take the
//!   first occurrence (\[R1\] §4.1). Views require the mandatory components of §4 and ignore
//!   foreign ones. Builders (`into_message`) emit the draft order.
//! - **Addresses.** Address fields are IPv4 ([`core::net::Ipv4Addr`]). With a v2.01 Address
//!   Table (§3.11) each 4-octet address field holds `0x0000_nnnn`, a 1-based index into the
//!   table; the octets are kept as they are and [`AddressTable::resolve`] maps an index.
//! - **No panics, no I/O.** Every function here returns an [`Error`] for malformed input; the
//!   fuzz targets in `fuzz/` hold the decoders to that.
//!
//! [`Error`]: crate::Error
//! [`TrailingBytes`]: crate::Error::TrailingBytes

/// Declares a protocol code enum with the draft's names, ending in `Unknown(n)`, plus the
/// conversions from and to the raw wire value and a human-readable `Display`.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $repr:ty {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A value this crate does not name; kept so that re-encoding is lossless.
            Unknown($repr),
        }

        impl From<$repr> for $name {
            fn from(v: $repr) -> Self {
                match v {
                    $( $value => Self::$variant, )*
                    other => Self::Unknown(other),
                }
            }
        }

        impl From<$name> for $repr {
            fn from(v: $name) -> $repr {
                match v {
                    $( $name::$variant => $value, )*
                    $name::Unknown(other) => other,
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self {
                    $( Self::$variant => f.write_str($text), )*
                    Self::Unknown(v) => write!(f, "unknown ({v})"),
                }
            }
        }
    };
}

/// Declares a bit-set newtype over a raw integer with named flag constants (unknown bits kept).
macro_rules! wire_bits {
    (
        $(#[$meta:meta])*
        pub struct $name:ident($repr:ty) {
            $( $(#[$cmeta:meta])* const $flag:ident = $value:literal; )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub $repr);

        impl $name {
            $( $(#[$cmeta])* pub const $flag: Self = Self($value); )*

            /// The empty set.
            pub const fn empty() -> Self {
                Self(0)
            }

            /// The raw wire value.
            pub const fn bits(self) -> $repr {
                self.0
            }

            /// True when every bit of `other` is set in `self`.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// True when `self` and `other` share at least one bit.
            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }

            /// Bits in both sets.
            pub const fn intersection(self, other: Self) -> Self {
                Self(self.0 & other.0)
            }

            /// True when no bit is set.
            pub const fn is_empty(self) -> bool {
                self.0 == 0
            }
        }

        impl core::ops::BitOr for $name {
            type Output = Self;
            fn bitor(self, rhs: Self) -> Self {
                Self(self.0 | rhs.0)
            }
        }

        impl core::ops::BitOrAssign for $name {
            fn bitor_assign(&mut self, rhs: Self) {
                self.0 |= rhs.0;
            }
        }

        impl From<$repr> for $name {
            fn from(v: $repr) -> Self {
                Self(v)
            }
        }
    };
}

mod address;
mod assignment;
mod capability;
pub(crate) mod codec;
mod component;
mod header;
mod identity;
mod message;
mod service;

pub use address::{AddressFamily, AddressTable};
pub use assignment::{
    AltMaskValueSet, AlternateAssignment, AlternateAssignmentMap, AssignmentBody, AssignmentInfo,
    AssignmentKey, AssignmentMap, AssignmentType, BucketEntry, HashBucketsAssignment, MaskElement,
    MaskValueSet, RouterAssignmentElement, ValueElement, WebCacheValueElement, BUCKETS,
    BUCKET_ALTERNATE, BUCKET_UNASSIGNED,
};
pub use capability::{
    AssignmentMethods, CapabilitiesInfo, Capability, CapabilityType, Command, CommandExtension,
    CommandType, ForwardingMethods, ReturnMethods,
};
pub use component::{Component, ComponentType, SecurityInfo, SecurityOption};
pub use header::{Header, MessageType, HEADER_LEN, VERSION_2_00, VERSION_2_01};
pub use identity::{
    AltMaskAssignmentData, AssignmentData, ExtendedAssignmentData, HashAssignmentData,
    IdentityFlags, MaskAssignmentData, RouterIdElement, RouterIdentityInfo, RouterQueryInfo,
    RouterViewInfo, WebCacheIdentityElement, WebCacheViewInfo,
};
pub use message::{
    skippable, Datagram, HereIAm, ISeeYou, Message, RedirectAssign, RedirectAssignment,
    RemovalQuery,
};
pub use service::{ServiceFlags, ServiceInfo, ServiceType};
