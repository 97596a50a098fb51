//! Messages: the lossless [`Message`] (header + ordered components) and the typed, owned
//! per-message views [`HereIAm`], [`ISeeYou`], [`RedirectAssign`] and [`RemovalQuery`]
//! (reference §4), which double as builders.

use super::address::AddressTable;
use super::assignment::{
    AlternateAssignment, AlternateAssignmentMap, AssignmentInfo, AssignmentMap,
};
use super::capability::{CapabilitiesInfo, CommandExtension};
use super::codec::{self, Writer};
use super::component::{Component, ComponentType, SecurityInfo};
use super::header::{Header, MessageType, HEADER_LEN, VERSION_2_00};
use super::identity::{
    RouterIdentityInfo, RouterQueryInfo, RouterViewInfo, WebCacheIdentityElement, WebCacheViewInfo,
};
use super::service::ServiceInfo;
use crate::error::Error;

/// A WCCP message, kept losslessly: header type and version, and every component in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Message {
    /// Message type from the header.
    pub kind: MessageType,
    /// Raw header version (0x0200 unless negotiated otherwise).
    pub version: u16,
    /// Components in wire order, duplicates and unknown types included.
    pub components: Vec<Component>,
}

/// A message decoded from a UDP payload under the receiver rule of reference §2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The message (header + Length octets).
    pub message: Message,
    /// Octets after header+Length that were ignored (\[R1\]); non-zero is worth counting.
    pub trailing: usize,
    /// Malformed optional components (or capability elements) that
    /// [`Message::decode_datagram_tolerant`] left out, by type; always empty from the strict
    /// decoders.
    pub skipped: Vec<ComponentType>,
}

/// Generates first-occurrence accessors on `Message`.
macro_rules! accessors {
    ($( $(#[$m:meta])* $name:ident => $variant:ident($ty:ty); )*) => {
        $(
            $(#[$m])*
            pub fn $name(&self) -> Option<&$ty> {
                self.components.iter().find_map(|c| match c {
                    Component::$variant(v) => Some(v),
                    _ => None,
                })
            }
        )*
    };
}

impl Message {
    /// A v2.00 message of type `kind` with the given components.
    pub fn new(kind: MessageType, components: Vec<Component>) -> Self {
        Self {
            kind,
            version: VERSION_2_00,
            components,
        }
    }

    /// Strict decode: `buf` must be exactly one message (no octets after header+Length).
    pub fn decode(buf: &[u8]) -> Result<Self, Error> {
        let d = Self::decode_datagram(buf)?;
        if d.trailing != 0 {
            return Err(Error::TrailingBytes {
                at: buf.len() - d.trailing,
                len: d.trailing,
            });
        }
        Ok(d.message)
    }

    /// Receiver decode of a UDP payload: octets after header+Length are ignored and counted
    /// (\[R1\], reference §2); everything inside the message is strict.
    pub fn decode_datagram(buf: &[u8]) -> Result<Datagram, Error> {
        Self::decode_with(buf, false)
    }

    /// Like [`Self::decode_datagram`], but a malformed component that the message type does
    /// not need is left out (and listed in [`Datagram::skipped`]) instead of failing the
    /// whole message; see [`skippable`] for which. The component framing (§3) must still be
    /// sound, since it is what locates the next component. Not lossless: receivers use it,
    /// and the MD5 check still covers the datagram as received.
    pub fn decode_datagram_tolerant(buf: &[u8]) -> Result<Datagram, Error> {
        Self::decode_with(buf, true)
    }

    /// The one decode loop behind the strict and the tolerant receiver decodes.
    fn decode_with(buf: &[u8], tolerant: bool) -> Result<Datagram, Error> {
        let (after_header, header) = codec::finish(buf, Header::parse(buf))?;
        let length = usize::from(header.length);
        let Some(body) = after_header.get(..length) else {
            return Err(Error::Truncated {
                need: length,
                have: after_header.len(),
                at: HEADER_LEN,
            });
        };
        let mut components = Vec::new();
        let mut skipped = Vec::new();
        let mut rest = body;
        while !rest.is_empty() {
            let (next, (raw_kind, length, part)) = codec::finish(buf, Component::frame(rest))?;
            match Component::parse_body(rest, raw_kind, length, part) {
                Ok(component) => components.push(component),
                Err(e) if tolerant => {
                    let kind = ComponentType::from(raw_kind);
                    let salvaged = (kind == ComponentType::CapabilityInfo)
                        .then(|| CapabilitiesInfo::parse_tolerant(part))
                        .flatten();
                    if let Some(caps) = salvaged {
                        components.push(Component::Capabilities(caps));
                    } else if !skippable(header.kind, kind) {
                        return Err(codec::error_at(buf, e));
                    }
                    skipped.push(kind);
                }
                Err(e) => return Err(codec::error_at(buf, e)),
            }
            rest = next;
        }
        let message = Self {
            kind: header.kind,
            version: header.version,
            components,
        };
        Ok(Datagram {
            message,
            trailing: after_header.len() - length,
            skipped,
        })
    }

    /// Encodes the message (header Length computed) into a new buffer.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Appends the encoded message to `out`; returns the number of octets written.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<usize, Error> {
        let start = out.len();
        let mut w = Writer::new(out);
        w.u32(self.kind.into());
        w.u16(self.version);
        let result = w.u16_length("message", |w| {
            self.components.iter().try_for_each(|c| c.write(w))
        });
        if let Err(e) = result {
            out.truncate(start);
            return Err(e);
        }
        Ok(out.len() - start)
    }

    /// The first component of type `kind`.
    pub fn component(&self, kind: ComponentType) -> Option<&Component> {
        self.components.iter().find(|c| c.kind() == kind)
    }

    accessors! {
        /// First Security Info.
        security => Security(SecurityInfo);
        /// First Service Info.
        service_info => Service(ServiceInfo);
        /// First Router Identity Info.
        router_identity => RouterIdentity(RouterIdentityInfo);
        /// First Web-Cache Identity Info (its element).
        web_cache_identity => WebCacheIdentity(WebCacheIdentityElement);
        /// First Router View Info.
        router_view => RouterView(RouterViewInfo);
        /// First Web-Cache View Info.
        web_cache_view => WebCacheView(WebCacheViewInfo);
        /// First Assignment Info (hash).
        assignment_info => AssignmentInfo(AssignmentInfo);
        /// First Router Query Info.
        router_query => RouterQuery(RouterQueryInfo);
        /// First Capabilities Info.
        capabilities => Capabilities(CapabilitiesInfo);
        /// First Alternate Assignment.
        alternate_assignment => AlternateAssignment(AlternateAssignment);
        /// First Assignment Map.
        assignment_map => AssignmentMap(AssignmentMap);
        /// First Command Extension.
        command_extension => CommandExtension(CommandExtension);
        /// First Alternate Assignment Map.
        alternate_assignment_map => AlternateAssignmentMap(AlternateAssignmentMap);
        /// First Address Table.
        address_table => AddressTable(AddressTable);
    }

    /// Replaces the first Security Info with `security`, or inserts it first if there is none.
    pub fn set_security(&mut self, security: SecurityInfo) {
        match self
            .components
            .iter_mut()
            .find(|c| matches!(c, Component::Security(_)))
        {
            Some(slot) => *slot = Component::Security(security),
            None => self.components.insert(0, Component::Security(security)),
        }
    }

    /// Checks the header type (views call this first).
    fn expect_kind(&self, expected: MessageType) -> Result<(), Error> {
        if self.kind == expected {
            Ok(())
        } else {
            Err(Error::WrongMessageType {
                expected,
                found: self.kind,
            })
        }
    }

    /// A mandatory component (reference §4), or `MissingComponent`.
    fn require<'m, T>(
        &self,
        found: Option<&'m T>,
        component: ComponentType,
    ) -> Result<&'m T, Error> {
        found.ok_or(Error::MissingComponent {
            message: self.kind,
            component,
        })
    }
}

/// Whether a malformed component of type `kind` may be left out of a message of type
/// `message` by [`Message::decode_datagram_tolerant`] (reference §4 composition).
///
/// Never: the mandatory components (dropping the message as before), Capabilities Info in the
/// messages that carry it (absent means GRE/hash/GRE, §3.10, so skipping a garbled choice
/// would silently pick methods; its malformed TRANSMIT_T/TIMER_SCALE elements are skipped
/// instead), the Assignment Maps of an I_SEE_YOU (a mask-mode cache's assignment), and every
/// component of message types outside §4. Skipped: Command Extension (a lost SHUTDOWN is
/// resent or times out), Address Table (v2.01, ignored by these v2.00 engines) and components
/// that do not belong in the message at all.
pub fn skippable(message: MessageType, kind: ComponentType) -> bool {
    use ComponentType as C;
    let needed = match message {
        MessageType::HereIAm => &[C::WcIdInfo, C::WcViewInfo, C::CapabilityInfo][..],
        MessageType::ISeeYou => &[
            C::RouterIdInfo,
            C::RtrViewInfo,
            C::CapabilityInfo,
            C::AssignMap,
            C::AltAssignmentMap,
        ][..],
        MessageType::RedirectAssign => &[C::RedirectAssignment, C::AltAssignment][..],
        MessageType::RemovalQuery => &[C::QueryInfo][..],
        MessageType::Unknown(_) => return false,
    };
    !matches!(kind, C::SecurityInfo | C::ServiceInfo) && !needed.contains(&kind)
}

/// Pushes optional trailing components in order.
fn push_optional(
    components: &mut Vec<Component>,
    items: impl IntoIterator<Item = Option<Component>>,
) {
    components.extend(items.into_iter().flatten());
}

/// HERE_I_AM (type 10, cache → router; reference §4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HereIAm {
    /// Header version.
    pub version: u16,
    /// Security Info (for MD5, the digest as received; [`crate::security`] fills it in).
    pub security: SecurityInfo,
    /// Service Info.
    pub service: ServiceInfo,
    /// The cache's identity element.
    pub identity: WebCacheIdentityElement,
    /// The cache's view of the group.
    pub view: WebCacheViewInfo,
    /// The cache's capability choices (absent = GRE/hash/GRE).
    pub capabilities: Option<CapabilitiesInfo>,
    /// Commands (e.g. SHUTDOWN).
    pub command: Option<CommandExtension>,
    /// \[R1\] Address Table.
    pub address_table: Option<AddressTable>,
}

impl TryFrom<&Message> for HereIAm {
    type Error = Error;

    fn try_from(m: &Message) -> Result<Self, Error> {
        m.expect_kind(MessageType::HereIAm)?;
        Ok(Self {
            version: m.version,
            security: m
                .require(m.security(), ComponentType::SecurityInfo)?
                .clone(),
            service: m
                .require(m.service_info(), ComponentType::ServiceInfo)?
                .clone(),
            identity: m
                .require(m.web_cache_identity(), ComponentType::WcIdInfo)?
                .clone(),
            view: m
                .require(m.web_cache_view(), ComponentType::WcViewInfo)?
                .clone(),
            capabilities: m.capabilities().cloned(),
            command: m.command_extension().cloned(),
            address_table: m.address_table().cloned(),
        })
    }
}

impl HereIAm {
    /// A v2.00 HERE_I_AM without security (set it with [`crate::security::Security::encode`])
    /// or optional components.
    pub fn new(
        service: ServiceInfo,
        identity: WebCacheIdentityElement,
        view: WebCacheViewInfo,
    ) -> Self {
        Self {
            version: VERSION_2_00,
            security: SecurityInfo::None,
            service,
            identity,
            view,
            capabilities: None,
            command: None,
            address_table: None,
        }
    }

    /// Builds the message in draft order: Security, Service, Identity, View, then the optional
    /// Capabilities, Command Extension and Address Table.
    pub fn into_message(self) -> Message {
        let mut components = vec![
            Component::Security(self.security),
            Component::Service(self.service),
            Component::WebCacheIdentity(self.identity),
            Component::WebCacheView(self.view),
        ];
        push_optional(
            &mut components,
            [
                self.capabilities.map(Component::Capabilities),
                self.command.map(Component::CommandExtension),
                self.address_table.map(Component::AddressTable),
            ],
        );
        Message {
            kind: MessageType::HereIAm,
            version: self.version,
            components,
        }
    }
}

/// I_SEE_YOU (type 11, router → cache; reference §4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ISeeYou {
    /// Header version.
    pub version: u16,
    /// Security Info.
    pub security: SecurityInfo,
    /// Service Info.
    pub service: ServiceInfo,
    /// Router identity, Sent-To and Received-From list.
    pub identity: RouterIdentityInfo,
    /// The router's view of the group.
    pub view: RouterViewInfo,
    /// Mask-mode Assignment Map.
    pub assignment_map: Option<AssignmentMap>,
    /// \[R1\] Alternate Assignment Map.
    pub alternate_assignment_map: Option<AlternateAssignmentMap>,
    /// The router's supported capabilities.
    pub capabilities: Option<CapabilitiesInfo>,
    /// Commands (e.g. SHUTDOWN_RESPONSE).
    pub command: Option<CommandExtension>,
    /// \[R1\] Address Table.
    pub address_table: Option<AddressTable>,
}

impl TryFrom<&Message> for ISeeYou {
    type Error = Error;

    fn try_from(m: &Message) -> Result<Self, Error> {
        m.expect_kind(MessageType::ISeeYou)?;
        Ok(Self {
            version: m.version,
            security: m
                .require(m.security(), ComponentType::SecurityInfo)?
                .clone(),
            service: m
                .require(m.service_info(), ComponentType::ServiceInfo)?
                .clone(),
            identity: m
                .require(m.router_identity(), ComponentType::RouterIdInfo)?
                .clone(),
            view: m
                .require(m.router_view(), ComponentType::RtrViewInfo)?
                .clone(),
            assignment_map: m.assignment_map().cloned(),
            alternate_assignment_map: m.alternate_assignment_map().cloned(),
            capabilities: m.capabilities().cloned(),
            command: m.command_extension().cloned(),
            address_table: m.address_table().cloned(),
        })
    }
}

impl ISeeYou {
    /// A v2.00 I_SEE_YOU without security or optional components.
    pub fn new(service: ServiceInfo, identity: RouterIdentityInfo, view: RouterViewInfo) -> Self {
        Self {
            version: VERSION_2_00,
            security: SecurityInfo::None,
            service,
            identity,
            view,
            assignment_map: None,
            alternate_assignment_map: None,
            capabilities: None,
            command: None,
            address_table: None,
        }
    }

    /// Builds the message in draft order: Security, Service, Identity, View, then the optional
    /// Assignment Map, Alternate Assignment Map, Capabilities, Command Extension, Address Table.
    pub fn into_message(self) -> Message {
        let mut components = vec![
            Component::Security(self.security),
            Component::Service(self.service),
            Component::RouterIdentity(self.identity),
            Component::RouterView(self.view),
        ];
        push_optional(
            &mut components,
            [
                self.assignment_map.map(Component::AssignmentMap),
                self.alternate_assignment_map
                    .map(Component::AlternateAssignmentMap),
                self.capabilities.map(Component::Capabilities),
                self.command.map(Component::CommandExtension),
                self.address_table.map(Component::AddressTable),
            ],
        );
        Message {
            kind: MessageType::ISeeYou,
            version: self.version,
            components,
        }
    }
}

/// The assignment carried by a REDIRECT_ASSIGN: Assignment Info or Alternate Assignment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RedirectAssignment {
    /// Assignment Info (type 6, hash).
    Hash(AssignmentInfo),
    /// Alternate Assignment (type 13: hash, mask or alternate mask).
    Alternate(AlternateAssignment),
}

impl RedirectAssignment {
    /// The component carrying it.
    fn into_component(self) -> Component {
        match self {
            Self::Hash(a) => Component::AssignmentInfo(a),
            Self::Alternate(a) => Component::AlternateAssignment(a),
        }
    }
}

/// REDIRECT_ASSIGN (type 12, designated cache → routers; reference §4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RedirectAssign {
    /// Header version.
    pub version: u16,
    /// Security Info.
    pub security: SecurityInfo,
    /// Service Info.
    pub service: ServiceInfo,
    /// The assignment (the first of types 6/13 in wire order).
    pub assignment: RedirectAssignment,
    /// \[R1\] Address Table.
    pub address_table: Option<AddressTable>,
}

impl TryFrom<&Message> for RedirectAssign {
    type Error = Error;

    fn try_from(m: &Message) -> Result<Self, Error> {
        m.expect_kind(MessageType::RedirectAssign)?;
        let assignment = m
            .components
            .iter()
            .find_map(|c| match c {
                Component::AssignmentInfo(a) => Some(RedirectAssignment::Hash(a.clone())),
                Component::AlternateAssignment(a) => Some(RedirectAssignment::Alternate(a.clone())),
                _ => None,
            })
            .ok_or(Error::MissingComponent {
                message: m.kind,
                component: ComponentType::RedirectAssignment,
            })?;
        Ok(Self {
            version: m.version,
            security: m
                .require(m.security(), ComponentType::SecurityInfo)?
                .clone(),
            service: m
                .require(m.service_info(), ComponentType::ServiceInfo)?
                .clone(),
            assignment,
            address_table: m.address_table().cloned(),
        })
    }
}

impl RedirectAssign {
    /// A v2.00 REDIRECT_ASSIGN without security or address table.
    pub fn new(service: ServiceInfo, assignment: RedirectAssignment) -> Self {
        Self {
            version: VERSION_2_00,
            security: SecurityInfo::None,
            service,
            assignment,
            address_table: None,
        }
    }

    /// Builds the message in draft order (Security, Service, Assignment, optional Table).
    pub fn into_message(self) -> Message {
        let mut components = vec![
            Component::Security(self.security),
            Component::Service(self.service),
            self.assignment.into_component(),
        ];
        push_optional(
            &mut components,
            [self.address_table.map(Component::AddressTable)],
        );
        Message {
            kind: MessageType::RedirectAssign,
            version: self.version,
            components,
        }
    }
}

/// REMOVAL_QUERY (type 13, router → cache; reference §4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RemovalQuery {
    /// Header version.
    pub version: u16,
    /// Security Info.
    pub security: SecurityInfo,
    /// Service Info.
    pub service: ServiceInfo,
    /// Router Query Info.
    pub query: RouterQueryInfo,
    /// \[R1\] Address Table.
    pub address_table: Option<AddressTable>,
}

impl TryFrom<&Message> for RemovalQuery {
    type Error = Error;

    fn try_from(m: &Message) -> Result<Self, Error> {
        m.expect_kind(MessageType::RemovalQuery)?;
        Ok(Self {
            version: m.version,
            security: m
                .require(m.security(), ComponentType::SecurityInfo)?
                .clone(),
            service: m
                .require(m.service_info(), ComponentType::ServiceInfo)?
                .clone(),
            query: *m.require(m.router_query(), ComponentType::QueryInfo)?,
            address_table: m.address_table().cloned(),
        })
    }
}

impl RemovalQuery {
    /// A v2.00 REMOVAL_QUERY without security or address table.
    pub fn new(service: ServiceInfo, query: RouterQueryInfo) -> Self {
        Self {
            version: VERSION_2_00,
            security: SecurityInfo::None,
            service,
            query,
            address_table: None,
        }
    }

    /// Builds the message in draft order (Security, Service, Query, optional Table).
    pub fn into_message(self) -> Message {
        let mut components = vec![
            Component::Security(self.security),
            Component::Service(self.service),
            Component::RouterQuery(self.query),
        ];
        push_optional(
            &mut components,
            [self.address_table.map(Component::AddressTable)],
        );
        Message {
            kind: MessageType::RemovalQuery,
            version: self.version,
            components,
        }
    }
}

#[cfg(test)]
mod tests {
    use core::net::Ipv4Addr;

    use super::*;
    use crate::error::LengthProblem;
    use crate::wire::identity::RouterIdElement;

    fn query() -> RemovalQuery {
        RemovalQuery {
            version: VERSION_2_00,
            security: SecurityInfo::None,
            service: ServiceInfo::standard(0),
            query: RouterQueryInfo {
                router: RouterIdElement {
                    router_ip: Ipv4Addr::new(10, 0, 0, 1),
                    receive_id: 7,
                },
                sent_to: Ipv4Addr::new(10, 0, 0, 1),
                target: Ipv4Addr::new(10, 0, 0, 2),
            },
            address_table: None,
        }
    }

    /// REMOVAL_QUERY built by hand from reference §3.8 (router 10.0.0.1, Receive ID 7).
    const QUERY_BYTES: [u8; 64] = [
        0x00, 0x00, 0x00, 0x0d, 0x02, 0x00, 0x00, 0x38, // header: type 13, v2.00, Length 56
        0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, // Security Info: none
        0x00, 0x01, 0x00, 0x18, 0x00, 0x00, 0x00, 0x00, // Service Info: standard 0
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //   flags 0, ports 0..3
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, //   ports 4..7
        0x00, 0x00, 0x00, 0x00, //
        0x00, 0x07, 0x00, 0x10, 0x0a, 0x00, 0x00, 0x01, // Router Query Info: router 10.0.0.1
        0x00, 0x00, 0x00, 0x07, 0x0a, 0x00, 0x00, 0x01, //   receive id 7, sent to 10.0.0.1
        0x0a, 0x00, 0x00, 0x02, //                           target 10.0.0.2
    ];

    #[test]
    fn removal_query_builds_and_parses() {
        let bytes = query().into_message().encode().unwrap();
        assert_eq!(bytes, QUERY_BYTES);
        let m = Message::decode(&bytes).unwrap();
        assert_eq!(RemovalQuery::try_from(&m).unwrap(), query());
        assert_eq!(
            HereIAm::try_from(&m),
            Err(Error::WrongMessageType {
                expected: MessageType::HereIAm,
                found: MessageType::RemovalQuery
            })
        );
    }

    #[test]
    fn every_prefix_fails_and_trailing_bytes_are_reported() {
        for n in 0..QUERY_BYTES.len() {
            assert!(Message::decode(&QUERY_BYTES[..n]).is_err(), "prefix {n}");
        }
        let mut padded = QUERY_BYTES.to_vec();
        padded.extend_from_slice(&[0xa5; 3]);
        assert_eq!(
            Message::decode(&padded),
            Err(Error::TrailingBytes { at: 64, len: 3 })
        );
        let d = Message::decode_datagram(&padded).unwrap();
        assert_eq!(d.trailing, 3);
        assert_eq!(d.message.encode().unwrap(), QUERY_BYTES);
    }

    #[test]
    fn missing_mandatory_component() {
        let mut m = query().into_message();
        m.components
            .retain(|c| c.kind() != ComponentType::QueryInfo);
        assert_eq!(
            RemovalQuery::try_from(&m),
            Err(Error::MissingComponent {
                message: MessageType::RemovalQuery,
                component: ComponentType::QueryInfo
            })
        );
    }

    #[test]
    fn component_running_past_the_message_length() {
        let mut bytes = QUERY_BYTES.to_vec();
        bytes[7] = 0x34; // Length 52: the query component now overhangs by 4.
        bytes.truncate(60);
        assert_eq!(
            Message::decode(&bytes),
            Err(Error::BadComponentLength {
                component: ComponentType::QueryInfo,
                length: 16,
                at: 44,
                problem: LengthProblem::PastEnd { available: 12 },
            })
        );
    }

    #[test]
    fn tolerant_decode_skips_only_what_the_message_can_do_without() {
        // QUERY_BYTES plus a Command Extension whose command overruns its 4 octets.
        let mut bytes = QUERY_BYTES.to_vec();
        bytes.extend_from_slice(&[0x00, 0x0f, 0x00, 0x04, 0x00, 0x01, 0x00, 0x08]);
        bytes[7] += 8;
        assert!(Message::decode_datagram(&bytes).is_err(), "strict");
        let d = Message::decode_datagram_tolerant(&bytes).unwrap();
        assert_eq!(d.skipped, vec![ComponentType::CommandExtension]);
        assert_eq!(RemovalQuery::try_from(&d.message).unwrap(), query());
        // The mandatory Router Query Info, garbled (count field past its end is impossible
        // here, so break its fixed size instead): the message still fails.
        let mut bad = QUERY_BYTES.to_vec();
        bad[47] = 0x0c; // Length 12 instead of 16, then 4 octets of an unknown component
        bad.splice(60..60, [0x00, 0x63, 0x00, 0x00]);
        bad.truncate(64);
        assert!(Message::decode_datagram_tolerant(&bad).is_err());
        // Framing errors are never skipped: nothing locates the next component.
        let mut misframed = bytes.clone();
        misframed[67] = 0x06;
        assert!(Message::decode_datagram_tolerant(&misframed).is_err());
    }

    #[test]
    fn skippable_follows_the_composition_table() {
        use ComponentType as C;
        assert!(skippable(MessageType::HereIAm, C::CommandExtension));
        assert!(skippable(MessageType::HereIAm, C::AddressTable));
        assert!(skippable(MessageType::HereIAm, C::AssignMap));
        assert!(!skippable(MessageType::HereIAm, C::CapabilityInfo));
        assert!(!skippable(MessageType::HereIAm, C::WcViewInfo));
        assert!(!skippable(MessageType::RedirectAssign, C::AltAssignment));
        assert!(skippable(MessageType::RedirectAssign, C::CapabilityInfo));
        assert!(!skippable(MessageType::ISeeYou, C::AssignMap));
        assert!(!skippable(MessageType::Unknown(99), C::AddressTable));
        for m in [10u32, 11, 12, 13] {
            assert!(!skippable(MessageType::from(m), C::SecurityInfo));
            assert!(!skippable(MessageType::from(m), C::ServiceInfo));
        }
    }

    #[test]
    fn builders_match_the_struct_literals() {
        let q = query();
        assert_eq!(RemovalQuery::new(q.service.clone(), q.query), q);
    }

    #[test]
    fn oversized_messages_are_refused_by_the_encoder() {
        let view = WebCacheViewInfo {
            change_number: 1,
            routers: vec![],
            caches: vec![Ipv4Addr::new(10, 0, 0, 2); 20_000],
        };
        let hia = HereIAm::new(
            ServiceInfo::standard(0),
            WebCacheIdentityElement::new(
                Ipv4Addr::new(10, 0, 0, 2),
                crate::wire::AssignmentData::None,
            ),
            view,
        );
        let mut out = vec![0xa5];
        let err = hia.into_message().encode_into(&mut out).unwrap_err();
        assert_eq!(
            err,
            Error::TooLong {
                what: "component",
                len: 80_012
            }
        );
        assert_eq!(out, [0xa5], "nothing is left behind on failure");
    }

    #[test]
    fn set_security_replaces_or_inserts() {
        let mut m = Message::new(MessageType::RemovalQuery, vec![]);
        m.set_security(SecurityInfo::None);
        assert_eq!(m.components, vec![Component::Security(SecurityInfo::None)]);
        m.set_security(SecurityInfo::Md5 { digest: [0; 16] });
        assert_eq!(m.components.len(), 1);
        assert_eq!(m.security(), Some(&SecurityInfo::Md5 { digest: [0; 16] }));
    }
}
