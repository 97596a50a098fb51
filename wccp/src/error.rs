//! The crate's one error type: every decode, validation, security and encode failure.
//!
//! Variants carry the numbers a log line or a drop counter needs (ARCHITECTURE §5): the offset in
//! the message (`at`, counted from the first octet of the WCCP header), the length or count that
//! was read, and what was expected. Display messages read as sentences.

use crate::wire::{ComponentType, MessageType, SecurityOption};

/// Everything that can go wrong in this crate; offsets count from the first octet of the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input ended before a field or structure was complete.
    #[error(
        "the message is truncated: {need} octets are needed at offset {at} but only {have} remain"
    )]
    Truncated {
        /// Octets the field or structure needs.
        need: usize,
        /// Octets that were left.
        have: usize,
        /// Offset where the field or structure starts.
        at: usize,
    },
    /// The header's major version is not 2 (reference §2: ignore wrong major versions).
    #[error("the message has version {0:#06x}, but only major version 2 (0x02xx) is understood")]
    UnsupportedVersion(u16),
    /// A component's Length field is unusable (reference §3: multiple of 4, within the message,
    /// and the size its type requires).
    #[error("the {component} component at offset {at} has length {length}, which {problem}")]
    BadComponentLength {
        /// Type of the offending component.
        component: ComponentType,
        /// Its Length field (octets after the 4-octet component header).
        length: u16,
        /// Offset of the component header.
        at: usize,
        /// What is wrong with the length.
        problem: LengthProblem,
    },
    /// A length field inside a component disagrees with the space it describes.
    #[error("the {what} at offset {at} has length {length}, but {expected} was expected")]
    BadLength {
        /// Which structure carries the length field.
        what: &'static str,
        /// The length that was read.
        length: usize,
        /// The length the surrounding structure implies.
        expected: usize,
        /// Offset of the length field's structure.
        at: usize,
    },
    /// Octets were left inside a structure after its last field (rustls rule: reject leftovers).
    #[error("{len} unexpected trailing octets at offset {at}")]
    TrailingBytes {
        /// Offset of the first unexpected octet.
        at: usize,
        /// How many octets were left.
        len: usize,
    },
    /// A count field promises more elements than the remaining octets can hold.
    #[error("the {what} count at offset {at} is {count}, more than the remaining octets can hold")]
    CountTooLarge {
        /// Which list the count belongs to.
        what: &'static str,
        /// The count that was read.
        count: u32,
        /// Offset of the count field.
        at: usize,
    },
    /// A typed view was asked of a message of another type.
    #[error("expected a {expected} message but got a {found} message")]
    WrongMessageType {
        /// The type the caller asked for.
        expected: MessageType,
        /// The type in the header.
        found: MessageType,
    },
    /// A mandatory component (reference §4) is absent.
    #[error("the {message} message has no {component} component, which is mandatory")]
    MissingComponent {
        /// The message type.
        message: MessageType,
        /// The missing component.
        component: ComponentType,
    },
    /// The message's security option differs from the configured one (reference §3.1: discard).
    #[error("the message uses security option {found} but {expected} is configured")]
    SecurityMismatch {
        /// The locally configured option.
        expected: SecurityOption,
        /// The option in the message.
        found: SecurityOption,
    },
    /// The MD5 digest in the message does not match the one computed with the local password.
    #[error("the MD5 digest does not match: wrong password or altered message")]
    Md5Mismatch,
    /// Encoding failed: the value's fields contradict each other (e.g. an address table entry
    /// whose size differs from the table's address length).
    #[error("cannot encode the {what}: its fields are inconsistent")]
    Inconsistent {
        /// The structure that could not be encoded.
        what: &'static str,
    },
    /// Encoding failed: a structure would not fit its u16 length field or u32 count.
    #[error("cannot encode the {what}: {len} does not fit its length or count field")]
    TooLong {
        /// The structure that overflowed.
        what: &'static str,
        /// The size or count it would have.
        len: usize,
    },
}

/// Why a component's Length field was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LengthProblem {
    /// Reference §3: every component length is a multiple of 4.
    NotMultipleOfFour,
    /// The component runs past the end of the message Length (strict; see `wire` docs).
    PastEnd {
        /// Octets that were left after the component header.
        available: usize,
    },
    /// The component type has a fixed size (or a minimum) that this length violates.
    WrongSize {
        /// The allowed size(s), as text.
        expected: &'static str,
    },
}

impl core::fmt::Display for LengthProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotMultipleOfFour => f.write_str("is not a multiple of 4"),
            Self::PastEnd { available } => {
                write!(
                    f,
                    "runs past the end of the message ({available} octets remain)"
                )
            }
            Self::WrongSize { expected } => {
                write!(f, "its type does not allow (expected {expected})")
            }
        }
    }
}

impl Error {
    /// A stable kebab-case name for counters and drop reasons (ARCHITECTURE §5).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "wccp-truncated",
            Self::UnsupportedVersion(_) => "wccp-unsupported-version",
            Self::BadComponentLength { .. } => "wccp-bad-component-length",
            Self::BadLength { .. } => "wccp-bad-length",
            Self::TrailingBytes { .. } => "wccp-trailing-bytes",
            Self::CountTooLarge { .. } => "wccp-count-too-large",
            Self::WrongMessageType { .. } => "wccp-wrong-message-type",
            Self::MissingComponent { .. } => "wccp-missing-component",
            Self::SecurityMismatch { .. } => "wccp-security-mismatch",
            Self::Md5Mismatch => "wccp-md5-mismatch",
            Self::Inconsistent { .. } => "wccp-inconsistent",
            Self::TooLong { .. } => "wccp-too-long",
        }
    }

    /// Replaces the offset of an error produced on a sub-slice (crate-internal plumbing).
    pub(crate) fn located(mut self, offset: usize) -> Self {
        match &mut self {
            Self::Truncated { at, .. }
            | Self::BadComponentLength { at, .. }
            | Self::BadLength { at, .. }
            | Self::TrailingBytes { at, .. }
            | Self::CountTooLarge { at, .. } => *at = offset,
            Self::UnsupportedVersion(_)
            | Self::WrongMessageType { .. }
            | Self::MissingComponent { .. }
            | Self::SecurityMismatch { .. }
            | Self::Md5Mismatch
            | Self::Inconsistent { .. }
            | Self::TooLong { .. } => {}
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_reads_as_a_sentence() {
        let e = Error::BadComponentLength {
            component: ComponentType::SecurityInfo,
            length: 0,
            at: 16,
            problem: LengthProblem::WrongSize {
                expected: "4 or 20",
            },
        };
        assert_eq!(
            e.to_string(),
            "the Security Info component at offset 16 has length 0, which its type does not \
             allow (expected 4 or 20)"
        );
        let e = Error::Truncated {
            need: 4,
            have: 1,
            at: 8,
        };
        assert_eq!(
            e.to_string(),
            "the message is truncated: 4 octets are needed at offset 8 but only 1 remain"
        );
    }

    #[test]
    fn stable_names() {
        assert_eq!(Error::Md5Mismatch.as_str(), "wccp-md5-mismatch");
        assert_eq!(
            Error::UnsupportedVersion(0x0100).as_str(),
            "wccp-unsupported-version"
        );
    }

    #[test]
    fn located_rewrites_offsets_only() {
        let e = Error::TrailingBytes { at: 0, len: 3 }.located(40);
        assert_eq!(e, Error::TrailingBytes { at: 40, len: 3 });
        assert_eq!(Error::Md5Mismatch.located(7), Error::Md5Mismatch);
    }
}
