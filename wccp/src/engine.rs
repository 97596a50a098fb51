//! What the two engines ([`crate::router::RouterEngine`], [`crate::cache::CacheEngine`]) share:
//! the outgoing datagram ([`Transmit`]) and its queue, the negotiated methods, protocol counters
//! and the named drop reasons (ARCHITECTURE §5: every drop has a name and a counter).

use core::net::Ipv4Addr;
use std::collections::{BTreeMap, VecDeque};

use crate::wire::{AssignmentMethods, ForwardingMethods, MessageType, ReturnMethods};

/// UDP port of WCCP at both ends (reference §1; not IANA-assigned).
pub const WCCP_PORT: u16 = 2048;

/// Default bound of an engine's transmit queue; beyond it the oldest datagram is dropped and
/// counted (`wccp-tx-queue-full`) instead of growing without limit when the driver stalls.
pub const TX_QUEUE_LIMIT: usize = 1024;

/// One datagram to send: UDP from `src`:2048 to `dst`:2048; the payload is `buf[..size]` of
/// the buffer passed to `poll_transmit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Transmit {
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Local source address (a router answers from the address the cache talked to, §3.3);
    /// `UNSPECIFIED` lets the driver pick.
    pub src: Ipv4Addr,
    /// Octets written to the caller's buffer.
    pub size: usize,
}

/// A queued outgoing datagram (already encoded and signed).
#[derive(Debug, Clone)]
struct Outgoing {
    dst: Ipv4Addr,
    src: Ipv4Addr,
    bytes: Vec<u8>,
}

/// Bounded FIFO of encoded datagrams, drained by `poll_transmit`.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    queue: VecDeque<Outgoing>,
    limit: usize,
}

impl Default for Outbox {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
            limit: TX_QUEUE_LIMIT,
        }
    }
}

impl Outbox {
    /// Queues a datagram; returns false when the oldest one had to be dropped to make room.
    pub(crate) fn push(&mut self, dst: Ipv4Addr, src: Ipv4Addr, bytes: Vec<u8>) -> bool {
        let mut kept_all = true;
        while self.queue.len() >= self.limit.max(1) {
            self.queue.pop_front();
            kept_all = false;
        }
        self.queue.push_back(Outgoing { dst, src, bytes });
        kept_all
    }

    /// Moves the oldest datagram into `buf` (cleared first).
    pub(crate) fn pop(&mut self, buf: &mut Vec<u8>) -> Option<Transmit> {
        let out = self.queue.pop_front()?;
        buf.clear();
        buf.extend_from_slice(&out.bytes);
        Some(Transmit {
            dst: out.dst,
            src: out.src,
            size: out.bytes.len(),
        })
    }
}

/// Forwarding method negotiated for one cache (reference §3.10, §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ForwardingMethod {
    /// GRE encapsulation with the WCCP redirect header.
    Gre,
    /// Layer 2: rewrite the destination MAC (cache must be directly attached).
    L2,
}

/// Packet return method negotiated for one cache (reference §3.10, §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReturnMethod {
    /// GRE back to the router.
    Gre,
    /// Layer 2 back to the router's MAC.
    L2,
}

/// Assignment method of a service group (reference §3.10, §6, §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AssignmentMethod {
    /// 256 hash buckets.
    Hash,
    /// Mask/value sets.
    Mask,
}

impl ForwardingMethod {
    /// Both methods, in the order a router offers them by default.
    pub const ALL: [Self; 2] = [Self::Gre, Self::L2];

    /// Its name in configuration files and on command lines (`gre`, `l2`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Gre => "gre",
            Self::L2 => "l2",
        }
    }

    /// The method called `name` ([`Self::as_str`]), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Its capability bit.
    pub const fn bits(self) -> ForwardingMethods {
        match self {
            Self::Gre => ForwardingMethods::GRE,
            Self::L2 => ForwardingMethods::L2,
        }
    }

    /// The method of a single-bit choice (`None` for zero, several or unknown bits).
    pub fn from_choice(bits: ForwardingMethods) -> Option<Self> {
        match bits {
            ForwardingMethods::GRE => Some(Self::Gre),
            ForwardingMethods::L2 => Some(Self::L2),
            _ => None,
        }
    }
}

impl ReturnMethod {
    /// Both methods, in the order a router offers them by default.
    pub const ALL: [Self; 2] = [Self::Gre, Self::L2];

    /// Its name in configuration files and on command lines (`gre`, `l2`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Gre => "gre",
            Self::L2 => "l2",
        }
    }

    /// The method called `name` ([`Self::as_str`]), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Its capability bit.
    pub const fn bits(self) -> ReturnMethods {
        match self {
            Self::Gre => ReturnMethods::GRE,
            Self::L2 => ReturnMethods::L2,
        }
    }

    /// The method of a single-bit choice (`None` for zero, several or unknown bits).
    pub fn from_choice(bits: ReturnMethods) -> Option<Self> {
        match bits {
            ReturnMethods::GRE => Some(Self::Gre),
            ReturnMethods::L2 => Some(Self::L2),
            _ => None,
        }
    }
}

impl AssignmentMethod {
    /// Both methods, in the order a router offers them by default.
    pub const ALL: [Self; 2] = [Self::Hash, Self::Mask];

    /// Its name in configuration files and on command lines (`hash`, `mask`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Hash => "hash",
            Self::Mask => "mask",
        }
    }

    /// The method called `name` ([`Self::as_str`]), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }

    /// Its capability bit.
    pub const fn bits(self) -> AssignmentMethods {
        match self {
            Self::Hash => AssignmentMethods::HASH,
            Self::Mask => AssignmentMethods::MASK,
        }
    }

    /// The method of a single-bit choice (`None` for zero, several or unknown bits).
    pub fn from_choice(bits: AssignmentMethods) -> Option<Self> {
        match bits {
            AssignmentMethods::HASH => Some(Self::Hash),
            AssignmentMethods::MASK => Some(Self::Mask),
            _ => None,
        }
    }
}

/// The three choices a cache makes per router (reference §3.10; absent = GRE / hash / GRE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Methods {
    /// Forwarding method.
    pub forwarding: ForwardingMethod,
    /// Packet return method.
    pub packet_return: ReturnMethod,
    /// Assignment method.
    pub assignment: AssignmentMethod,
}

impl Default for Methods {
    /// The defaults that apply when a Capabilities Info component or element is absent.
    fn default() -> Self {
        Self {
            forwarding: ForwardingMethod::Gre,
            packet_return: ReturnMethod::Gre,
            assignment: AssignmentMethod::Hash,
        }
    }
}

/// Messages counted per type, in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageCounts {
    /// HERE_I_AM (10).
    pub here_i_am: u64,
    /// I_SEE_YOU (11).
    pub i_see_you: u64,
    /// REDIRECT_ASSIGN (12).
    pub redirect_assign: u64,
    /// REMOVAL_QUERY (13).
    pub removal_query: u64,
    /// Any other type (and datagrams whose type could not be read).
    pub other: u64,
}

impl MessageCounts {
    /// Counts one message of `kind`.
    pub(crate) fn bump(&mut self, kind: MessageType) {
        let slot = match kind {
            MessageType::HereIAm => &mut self.here_i_am,
            MessageType::ISeeYou => &mut self.i_see_you,
            MessageType::RedirectAssign => &mut self.redirect_assign,
            MessageType::RemovalQuery => &mut self.removal_query,
            MessageType::Unknown(_) => &mut self.other,
        };
        *slot = slot.saturating_add(1);
    }

    /// The count for `kind`.
    pub fn get(&self, kind: MessageType) -> u64 {
        match kind {
            MessageType::HereIAm => self.here_i_am,
            MessageType::ISeeYou => self.i_see_you,
            MessageType::RedirectAssign => self.redirect_assign,
            MessageType::RemovalQuery => self.removal_query,
            MessageType::Unknown(_) => self.other,
        }
    }

    /// Sum over all types.
    pub fn total(&self) -> u64 {
        self.here_i_am
            .saturating_add(self.i_see_you)
            .saturating_add(self.redirect_assign)
            .saturating_add(self.removal_query)
            .saturating_add(self.other)
    }
}

/// Protocol counters: messages in and out per type, drops and rejects by reason name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Datagrams received (every datagram handed to `handle_message`, by header type).
    pub rx: MessageCounts,
    /// Datagrams queued for sending, by type.
    pub tx: MessageCounts,
    /// Dropped or rejected messages and other protocol anomalies, by stable kebab-case name
    /// ([`DropReason::as_str`] or [`crate::Error::as_str`] for decode errors).
    pub drops: BTreeMap<&'static str, u64>,
}

impl Counters {
    /// Counts one occurrence of `reason`.
    pub(crate) fn count(&mut self, reason: &'static str) {
        let c = self.drops.entry(reason).or_insert(0);
        *c = c.saturating_add(1);
    }

    /// Counts one drop of a named reason.
    pub(crate) fn reject(&mut self, reason: DropReason) {
        self.count(reason.as_str());
    }

    /// How often `reason` (a [`DropReason::as_str`] or [`crate::Error::as_str`] name) occurred.
    pub fn drops_for(&self, reason: &str) -> u64 {
        self.drops.get(reason).copied().unwrap_or(0)
    }

    /// How often a named reason occurred.
    pub fn rejects(&self, reason: DropReason) -> u64 {
        self.drops_for(reason.as_str())
    }

    /// Total drops and rejects.
    pub fn total_drops(&self) -> u64 {
        self.drops.values().fold(0u64, |a, b| a.saturating_add(*b))
    }
}

/// Why an engine dropped or rejected (part of) a message; decode errors are counted under
/// [`crate::Error::as_str`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
#[non_exhaustive]
pub enum DropReason {
    /// A message type this side never receives (e.g. I_SEE_YOU at a router, §1).
    UnexpectedType = 1,
    /// The Service Info names a service that is not configured (\[R1\]: drop).
    UnconfiguredService,
    /// Standard vs dynamic disagrees with the configured service.
    ServiceTypeMismatch,
    /// A dynamic service definition differs from the one learnt or configured (\[R1\] §3.2).
    ServiceConflict,
    /// The cache is not in the service's group list.
    NotInGroupList,
    /// The Web-Cache Identity address differs from the datagram's source.
    IdentityMismatch,
    /// A datagram sent to a multicast or broadcast address that is not the service group's
    /// configured multicast address.
    MulticastUnsupported,
    /// The cache did not echo the Receive ID last sent to it (§5: answered, otherwise ignored).
    ReceiveIdMismatch,
    /// A cache chose no single, supported option for some capability (§5: unusable).
    CapabilityUnsupported,
    /// More than 32 caches want to be usable in one service group (§1).
    TooManyCaches,
    /// A REDIRECT_ASSIGN from an address that is not a usable cache of the group.
    AssignFromUnusableCache,
    /// A REDIRECT_ASSIGN without a Router Assignment Element for this router.
    AssignNotListed,
    /// The Assignment Key does not name the cache that sent the REDIRECT_ASSIGN (§3.13).
    AssignBadKey,
    /// The Router Assignment Element carries another Receive ID than the last one sent (§5).
    AssignStaleReceiveId,
    /// The Router Assignment Element carries an old Member Change Number (§5).
    AssignStaleChangeNumber,
    /// The assignment's method is not the group's (or is not understood).
    AssignWrongMethod,
    /// An assignment refers to a cache that is not usable; those buckets/values were left
    /// unassigned.
    AssignUnknownCache,
    /// The transmit queue overflowed and the oldest datagram was dropped.
    TxQueueFull,
    /// An I_SEE_YOU whose Received-From list does not name this cache (§3.3).
    NotForUs,
    /// A message from a router that is not configured.
    UnknownRouter,
    /// A REMOVAL_QUERY for another cache.
    QueryWrongTarget,
    /// Octets after header+Length were ignored (\[R1\]; peer misbehaviour, not a drop).
    TrailingOctets,
    /// A second cache's REDIRECT_ASSIGN for a Member Change Number another cache already
    /// assigned (caches whose designated-cache elections disagree, e.g. Squid's).
    AssignCompeting,
    /// A malformed optional component (or capability element) was left out and the rest of
    /// the message processed (peer misbehaviour, not a drop; see `wire::skippable`).
    SkippedComponent,
    /// A cache chose TRANSMIT_T or timer scales the router does not accept: out of range,
    /// not single values, non-default ones with `fast_timers` off, or other than the group's
    /// (\[R1\]: the first cache fixes them until the group empties).
    TimersUnsupported,
}

impl DropReason {
    /// Stable kebab-case name for counters and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnexpectedType => "wccp-unexpected-type",
            Self::UnconfiguredService => "wccp-unconfigured-service",
            Self::ServiceTypeMismatch => "wccp-service-type-mismatch",
            Self::ServiceConflict => "wccp-service-conflict",
            Self::NotInGroupList => "wccp-not-in-group-list",
            Self::IdentityMismatch => "wccp-identity-mismatch",
            Self::MulticastUnsupported => "wccp-multicast-unsupported",
            Self::ReceiveIdMismatch => "wccp-receive-id-mismatch",
            Self::CapabilityUnsupported => "wccp-capability-unsupported",
            Self::TooManyCaches => "wccp-too-many-caches",
            Self::AssignFromUnusableCache => "wccp-assign-from-unusable-cache",
            Self::AssignNotListed => "wccp-assign-not-listed",
            Self::AssignBadKey => "wccp-assign-bad-key",
            Self::AssignStaleReceiveId => "wccp-assign-stale-receive-id",
            Self::AssignStaleChangeNumber => "wccp-assign-stale-change-number",
            Self::AssignWrongMethod => "wccp-assign-wrong-method",
            Self::AssignUnknownCache => "wccp-assign-unknown-cache",
            Self::TxQueueFull => "wccp-tx-queue-full",
            Self::NotForUs => "wccp-not-for-us",
            Self::UnknownRouter => "wccp-unknown-router",
            Self::QueryWrongTarget => "wccp-query-wrong-target",
            Self::TrailingOctets => "wccp-trailing-octets",
            Self::AssignCompeting => "wccp-assign-competing",
            Self::SkippedComponent => "wccp-skipped-component",
            Self::TimersUnsupported => "wccp-timers-unsupported",
        }
    }
}

impl core::fmt::Display for DropReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configuration command was refused; the engine's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `add_service` for a service ID that is already configured.
    #[error("service {0} is already configured")]
    DuplicateService(u8),
    /// `reconfigure` or `remove_service` for a service ID that is not configured.
    #[error("service {0} is not configured")]
    UnknownService(u8),
    /// The configuration contradicts itself.
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
}

/// Increments a Receive ID or change number, skipping 0 on wrap-around (§5: never 0).
pub(crate) fn next_nonzero(n: u32) -> u32 {
    match n.wrapping_add(1) {
        0 => 1,
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_is_bounded_and_fifo() {
        let mut o = Outbox {
            limit: 2,
            ..Outbox::default()
        };
        let a = Ipv4Addr::new(10, 0, 0, 1);
        assert!(o.push(a, a, vec![1]));
        assert!(o.push(a, a, vec![2, 2]));
        assert!(!o.push(a, a, vec![3, 3, 3]));
        assert_eq!(o.queue.len(), 2);
        let mut buf = vec![0xa5; 8];
        let t = o.pop(&mut buf).unwrap();
        assert_eq!((t.size, &buf[..]), (2, &[2, 2][..]));
        assert_eq!(o.pop(&mut buf).unwrap().size, 3);
        assert!(o.pop(&mut buf).is_none());
    }

    #[test]
    fn method_names_round_trip() {
        for m in ForwardingMethod::ALL {
            assert_eq!(ForwardingMethod::from_name(m.as_str()), Some(m));
        }
        for m in ReturnMethod::ALL {
            assert_eq!(ReturnMethod::from_name(m.as_str()), Some(m));
        }
        for m in AssignmentMethod::ALL {
            assert_eq!(AssignmentMethod::from_name(m.as_str()), Some(m));
        }
        assert_eq!(ForwardingMethod::L2.as_str(), "l2");
        assert_eq!(AssignmentMethod::Mask.as_str(), "mask");
        // Names are exact: configuration is case-sensitive, like the rest of the TOML keys.
        assert_eq!(ForwardingMethod::from_name("GRE"), None);
        assert_eq!(ReturnMethod::from_name(""), None);
        assert_eq!(AssignmentMethod::from_name("hash "), None);
    }

    #[test]
    fn single_bit_choices() {
        assert_eq!(
            ForwardingMethod::from_choice(ForwardingMethods::L2),
            Some(ForwardingMethod::L2)
        );
        assert_eq!(
            ForwardingMethod::from_choice(ForwardingMethods::GRE | ForwardingMethods::L2),
            None
        );
        assert_eq!(AssignmentMethod::from_choice(AssignmentMethods(0)), None);
        assert_eq!(
            ReturnMethod::from_choice(ReturnMethod::Gre.bits()),
            Some(ReturnMethod::Gre)
        );
    }

    #[test]
    fn receive_ids_skip_zero() {
        assert_eq!(next_nonzero(0), 1);
        assert_eq!(next_nonzero(u32::MAX), 1);
        assert_eq!(next_nonzero(41), 42);
    }

    #[test]
    fn counters() {
        let mut c = Counters::default();
        c.rx.bump(MessageType::HereIAm);
        c.rx.bump(MessageType::Unknown(3));
        c.reject(DropReason::NotForUs);
        c.count("wccp-md5-mismatch");
        assert_eq!(c.rx.total(), 2);
        assert_eq!(c.rx.get(MessageType::HereIAm), 1);
        assert_eq!(c.rejects(DropReason::NotForUs), 1);
        assert_eq!(c.drops_for("wccp-md5-mismatch"), 1);
        assert_eq!(c.total_drops(), 2);
    }
}
