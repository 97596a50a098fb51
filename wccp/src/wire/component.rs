//! Component framing (`u16 type, u16 length, body`; reference §3) and the Security Info
//! component (type 0, §3.1).

use super::address::AddressTable;
use super::assignment::{
    AlternateAssignment, AlternateAssignmentMap, AssignmentInfo, AssignmentMap,
};
use super::capability::{CapabilitiesInfo, CommandExtension};
use super::codec::{self, Fail, PResult, Writer};
use super::identity::{
    RouterIdentityInfo, RouterQueryInfo, RouterViewInfo, WebCacheIdentityElement, WebCacheViewInfo,
};
use super::service::{ServiceInfo, SERVICE_INFO_LEN};
use crate::error::{Error, LengthProblem};

/// Octets of the component header (type + length).
pub(crate) const COMPONENT_HEADER_LEN: usize = 4;

wire_enum! {
    /// Component type (reference §3 table; names from the drafts without the WCCP2_ prefix).
    pub enum ComponentType: u16 {
        /// WCCP2_SECURITY_INFO.
        SecurityInfo = 0 => "Security Info",
        /// WCCP2_SERVICE_INFO.
        ServiceInfo = 1 => "Service Info",
        /// WCCP2_ROUTER_ID_INFO.
        RouterIdInfo = 2 => "Router Identity Info",
        /// WCCP2_WC_ID_INFO.
        WcIdInfo = 3 => "Web-Cache Identity Info",
        /// WCCP2_RTR_VIEW_INFO.
        RtrViewInfo = 4 => "Router View Info",
        /// WCCP2_WC_VIEW_INFO.
        WcViewInfo = 5 => "Web-Cache View Info",
        /// WCCP2_REDIRECT_ASSIGNMENT (Assignment Info, hash).
        RedirectAssignment = 6 => "Assignment Info",
        /// WCCP2_QUERY_INFO.
        QueryInfo = 7 => "Router Query Info",
        /// WCCP2_CAPABILITY_INFO.
        CapabilityInfo = 8 => "Capabilities Info",
        /// WCCP2_ALT_ASSIGNMENT.
        AltAssignment = 13 => "Alternate Assignment",
        /// WCCP2_ASSIGN_MAP.
        AssignMap = 14 => "Assignment Map",
        /// WCCP2_COMMAND_EXTENSION.
        CommandExtension = 15 => "Command Extension",
        /// WCCP2_ALT_ASSIGNMENT_MAP (\[R1\], v2.01).
        AltAssignmentMap = 16 => "Alternate Assignment Map",
        /// WCCP2_ADDRESS_TABLE (\[R1\], v2.01).
        AddressTable = 17 => "Address Table",
    }
}

wire_enum! {
    /// Security option (reference §3.1).
    pub enum SecurityOption: u32 {
        /// WCCP2_NO_SECURITY.
        None = 0 => "none",
        /// WCCP2_MD5_SECURITY.
        Md5 = 1 => "MD5",
    }
}

/// Security Info component (type 0).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SecurityInfo {
    /// Option 0, Length 4.
    None,
    /// Option 1, Length 20: the 16-octet digest ([`crate::security`] computes it).
    Md5 {
        /// MD5 digest as carried in the message.
        digest: [u8; 16],
    },
    /// Any other option, with whatever follows it (never holds options 0 or 1).
    Unknown {
        /// Raw option.
        option: u32,
        /// Octets after the option.
        data: Vec<u8>,
    },
}

impl SecurityInfo {
    /// Offset of the MD5 digest inside the component (after type, length and option).
    pub(crate) const DIGEST_OFFSET: usize = 8;

    /// The option field.
    pub fn option(&self) -> SecurityOption {
        match self {
            Self::None => SecurityOption::None,
            Self::Md5 { .. } => SecurityOption::Md5,
            Self::Unknown { option, .. } => SecurityOption::from(*option),
        }
    }

    /// Decodes the body; `header` is the component start, for errors.
    fn parse_exact<'a>(header: &'a [u8], body: &'a [u8]) -> Result<Self, nom::Err<Fail<'a>>> {
        let wrong = |expected| {
            nom::Err::Failure(Fail {
                at: header,
                error: Error::BadComponentLength {
                    component: ComponentType::SecurityInfo,
                    length: u16::try_from(body.len()).unwrap_or(u16::MAX),
                    at: 0,
                    problem: LengthProblem::WrongSize { expected },
                },
            })
        };
        // A body without even the option word is a length problem of the component itself.
        let Ok((rest, option)) = codec::u32(body) else {
            return Err(wrong("4 or 20"));
        };
        match SecurityOption::from(option) {
            SecurityOption::None if rest.is_empty() => Ok(Self::None),
            SecurityOption::None => Err(wrong("4 for option 0")),
            SecurityOption::Md5 => match <[u8; 16]>::try_from(rest) {
                Ok(digest) => Ok(Self::Md5 { digest }),
                Err(_) => Err(wrong("20 for option 1 (MD5)")),
            },
            SecurityOption::Unknown(_) => Ok(Self::Unknown {
                option,
                data: rest.to_vec(),
            }),
        }
    }

    /// Appends the body.
    fn write(&self, w: &mut Writer<'_>) {
        w.u32(self.option().into());
        match self {
            Self::None => {}
            Self::Md5 { digest } => w.bytes(digest),
            Self::Unknown { data, .. } => w.bytes(data),
        }
    }
}

/// One component, typed; unknown types are kept raw so that re-encoding is lossless.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Component {
    /// Type 0, all messages.
    Security(SecurityInfo),
    /// Type 1, all messages.
    Service(ServiceInfo),
    /// Type 2, I_SEE_YOU.
    RouterIdentity(RouterIdentityInfo),
    /// Type 3, HERE_I_AM: one Web-Cache Identity Element.
    WebCacheIdentity(WebCacheIdentityElement),
    /// Type 4, I_SEE_YOU.
    RouterView(RouterViewInfo),
    /// Type 5, HERE_I_AM.
    WebCacheView(WebCacheViewInfo),
    /// Type 6, REDIRECT_ASSIGN (hash).
    AssignmentInfo(AssignmentInfo),
    /// Type 7, REMOVAL_QUERY.
    RouterQuery(RouterQueryInfo),
    /// Type 8, HERE_I_AM and I_SEE_YOU.
    Capabilities(CapabilitiesInfo),
    /// Type 13, REDIRECT_ASSIGN.
    AlternateAssignment(AlternateAssignment),
    /// Type 14, I_SEE_YOU (mask).
    AssignmentMap(AssignmentMap),
    /// Type 15, HERE_I_AM and I_SEE_YOU.
    CommandExtension(CommandExtension),
    /// Type 16, I_SEE_YOU (\[R1\], v2.01).
    AlternateAssignmentMap(AlternateAssignmentMap),
    /// Type 17, any message (\[R1\], v2.01).
    AddressTable(AddressTable),
    /// Any other type: the raw body (a multiple of 4 octets; never a known type).
    Unknown {
        /// Raw component type.
        kind: u16,
        /// Body octets after the 4-octet component header.
        body: Vec<u8>,
    },
}

impl Component {
    /// The component type.
    pub fn kind(&self) -> ComponentType {
        match self {
            Self::Security(_) => ComponentType::SecurityInfo,
            Self::Service(_) => ComponentType::ServiceInfo,
            Self::RouterIdentity(_) => ComponentType::RouterIdInfo,
            Self::WebCacheIdentity(_) => ComponentType::WcIdInfo,
            Self::RouterView(_) => ComponentType::RtrViewInfo,
            Self::WebCacheView(_) => ComponentType::WcViewInfo,
            Self::AssignmentInfo(_) => ComponentType::RedirectAssignment,
            Self::RouterQuery(_) => ComponentType::QueryInfo,
            Self::Capabilities(_) => ComponentType::CapabilityInfo,
            Self::AlternateAssignment(_) => ComponentType::AltAssignment,
            Self::AssignmentMap(_) => ComponentType::AssignMap,
            Self::CommandExtension(_) => ComponentType::CommandExtension,
            Self::AlternateAssignmentMap(_) => ComponentType::AltAssignmentMap,
            Self::AddressTable(_) => ComponentType::AddressTable,
            Self::Unknown { kind, .. } => ComponentType::from(*kind),
        }
    }

    /// Decodes exactly one component (header and body) occupying all of `buf`.
    pub fn decode(buf: &[u8]) -> Result<Self, Error> {
        let r = codec::exact(buf, Self::parse).map(|c| (&buf[buf.len()..], c));
        codec::finish(buf, r).map(|(_, c)| c)
    }

    /// Appends the component (header and body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        self.write(&mut Writer::new(out))
    }

    /// nom parser: one framed component.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (rest, (raw_kind, length, body)) = Self::frame(i)?;
        let component = Self::parse_body(i, raw_kind, length, body)?;
        Ok((rest, component))
    }

    /// nom parser: the framing of one component (type, length and body octets, reference §3)
    /// without decoding the body; what follows is the next component.
    pub(crate) fn frame(i: &[u8]) -> PResult<'_, (u16, u16, &[u8])> {
        if i.len() < COMPONENT_HEADER_LEN {
            return codec::truncated(i, COMPONENT_HEADER_LEN);
        }
        let (rest, raw_kind) = codec::u16(i)?;
        let (rest, length) = codec::u16(rest)?;
        let bad = |problem| {
            nom::Err::Failure(Fail {
                at: i,
                error: Error::BadComponentLength {
                    component: ComponentType::from(raw_kind),
                    length,
                    at: 0,
                    problem,
                },
            })
        };
        // Reference §3: Length is a multiple of 4 and locates the next component exactly.
        if length % 4 != 0 {
            return Err(bad(LengthProblem::NotMultipleOfFour));
        }
        if usize::from(length) > rest.len() {
            return Err(bad(LengthProblem::PastEnd {
                available: rest.len(),
            }));
        }
        let (rest, body) = codec::take(usize::from(length))(rest)?;
        Ok((rest, (raw_kind, length, body)))
    }

    /// Decodes the body of a framed component; `i` is the component start, for errors.
    pub(crate) fn parse_body<'a>(
        i: &'a [u8],
        raw_kind: u16,
        length: u16,
        body: &'a [u8],
    ) -> Result<Self, nom::Err<Fail<'a>>> {
        let kind = ComponentType::from(raw_kind);
        let bad = |problem| {
            nom::Err::Failure(Fail {
                at: i,
                error: Error::BadComponentLength {
                    component: kind,
                    length,
                    at: 0,
                    problem,
                },
            })
        };
        let component = match kind {
            ComponentType::SecurityInfo => Self::Security(SecurityInfo::parse_exact(i, body)?),
            ComponentType::ServiceInfo => {
                if length != SERVICE_INFO_LEN {
                    return Err(bad(LengthProblem::WrongSize { expected: "24" }));
                }
                Self::Service(codec::exact(body, ServiceInfo::parse)?)
            }
            ComponentType::RouterIdInfo => {
                Self::RouterIdentity(codec::exact(body, RouterIdentityInfo::parse)?)
            }
            ComponentType::WcIdInfo => {
                Self::WebCacheIdentity(codec::exact(body, WebCacheIdentityElement::parse)?)
            }
            ComponentType::RtrViewInfo => {
                Self::RouterView(codec::exact(body, RouterViewInfo::parse)?)
            }
            ComponentType::WcViewInfo => {
                Self::WebCacheView(codec::exact(body, WebCacheViewInfo::parse)?)
            }
            ComponentType::RedirectAssignment => {
                Self::AssignmentInfo(codec::exact(body, AssignmentInfo::parse)?)
            }
            ComponentType::QueryInfo => {
                if length != RouterQueryInfo::LEN {
                    return Err(bad(LengthProblem::WrongSize { expected: "16" }));
                }
                Self::RouterQuery(codec::exact(body, RouterQueryInfo::parse)?)
            }
            ComponentType::CapabilityInfo => {
                Self::Capabilities(CapabilitiesInfo::parse_exact(body)?)
            }
            ComponentType::AltAssignment => {
                Self::AlternateAssignment(AlternateAssignment::parse_exact(body)?)
            }
            ComponentType::AssignMap => {
                Self::AssignmentMap(codec::exact(body, AssignmentMap::parse)?)
            }
            ComponentType::CommandExtension => {
                Self::CommandExtension(CommandExtension::parse_exact(body)?)
            }
            ComponentType::AltAssignmentMap => {
                Self::AlternateAssignmentMap(AlternateAssignmentMap::parse_exact(body)?)
            }
            ComponentType::AddressTable => Self::AddressTable(AddressTable::parse_exact(body)?),
            ComponentType::Unknown(_) => Self::Unknown {
                kind: raw_kind,
                body: body.to_vec(),
            },
        };
        Ok(component)
    }

    /// Appends the framed component, back-patching its Length.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        let at = w.position();
        let kind = self.kind();
        w.u16(kind.into());
        let len = w.u16_length("component", |w| match self {
            Self::Security(s) => {
                s.write(w);
                Ok(())
            }
            Self::Service(s) => {
                s.write(w);
                Ok(())
            }
            Self::RouterIdentity(r) => r.write(w),
            Self::WebCacheIdentity(e) => e.write(w),
            Self::RouterView(v) => v.write(w),
            Self::WebCacheView(v) => v.write(w),
            Self::AssignmentInfo(a) => a.write(w),
            Self::RouterQuery(q) => {
                q.write(w);
                Ok(())
            }
            Self::Capabilities(c) => c.write(w),
            Self::AlternateAssignment(a) => a.write(w),
            Self::AssignmentMap(m) => m.write(w),
            Self::CommandExtension(c) => c.write(w),
            Self::AlternateAssignmentMap(m) => m.write(w),
            Self::AddressTable(t) => t.write(w),
            Self::Unknown { body, .. } => {
                w.bytes(body);
                Ok(())
            }
        })?;
        // Never emit what we would reject (reference §3: multiple of 4).
        if len % 4 != 0 {
            return Err(Error::BadComponentLength {
                component: kind,
                length: u16::try_from(len).unwrap_or(u16::MAX),
                at,
                problem: LengthProblem::NotMultipleOfFour,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_components() {
        let none = [0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00];
        assert_eq!(
            Component::decode(&none),
            Ok(Component::Security(SecurityInfo::None))
        );
        let mut md5 = vec![0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x01];
        md5.extend_from_slice(&[0xab; 16]);
        let c = Component::decode(&md5).unwrap();
        assert_eq!(
            c,
            Component::Security(SecurityInfo::Md5 { digest: [0xab; 16] })
        );
        let mut out = vec![];
        c.encode(&mut out).unwrap();
        assert_eq!(out, md5);
        // The squid64 padding: a Security Info of length 0 is not a Security Info.
        let empty = [0x00, 0x00, 0x00, 0x00];
        assert_eq!(
            Component::decode(&empty),
            Err(Error::BadComponentLength {
                component: ComponentType::SecurityInfo,
                length: 0,
                at: 0,
                problem: LengthProblem::WrongSize {
                    expected: "4 or 20"
                },
            })
        );
        // Option 0 with a digest attached is the wrong size.
        let mut odd = vec![0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00];
        odd.extend_from_slice(&[0; 16]);
        assert_eq!(
            Component::decode(&odd),
            Err(Error::BadComponentLength {
                component: ComponentType::SecurityInfo,
                length: 20,
                at: 0,
                problem: LengthProblem::WrongSize {
                    expected: "4 for option 0"
                },
            })
        );
    }

    #[test]
    fn framing_errors_name_the_component() {
        let misaligned = [0x00, 0x01, 0x00, 0x17, 0, 0, 0];
        assert_eq!(
            Component::decode(&misaligned),
            Err(Error::BadComponentLength {
                component: ComponentType::ServiceInfo,
                length: 0x17,
                at: 0,
                problem: LengthProblem::NotMultipleOfFour,
            })
        );
        let past_end = [0x00, 0x07, 0x00, 0x10, 0, 0, 0, 0];
        assert_eq!(
            Component::decode(&past_end),
            Err(Error::BadComponentLength {
                component: ComponentType::QueryInfo,
                length: 16,
                at: 0,
                problem: LengthProblem::PastEnd { available: 4 },
            })
        );
    }

    #[test]
    fn unknown_components_are_kept_raw() {
        let buf = [0x00, 0x2a, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef];
        let c = Component::decode(&buf).unwrap();
        assert_eq!(
            c,
            Component::Unknown {
                kind: 42,
                body: vec![0xde, 0xad, 0xbe, 0xef]
            }
        );
        assert_eq!(c.kind(), ComponentType::Unknown(42));
        let mut out = vec![];
        c.encode(&mut out).unwrap();
        assert_eq!(out, buf);
    }

    #[test]
    fn encoder_refuses_unaligned_bodies() {
        let c = Component::Unknown {
            kind: 42,
            body: vec![1, 2, 3],
        };
        assert!(matches!(
            c.encode(&mut vec![]),
            Err(Error::BadComponentLength {
                problem: LengthProblem::NotMultipleOfFour,
                ..
            })
        ));
    }
}
