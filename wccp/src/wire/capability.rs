//! Capabilities Info (type 8, reference §3.10) and Command Extension (type 15, §3.11):
//! both are sequences of `u16 type, u16 length, value` elements.

use core::net::Ipv4Addr;

use super::codec::{self, Fail, PResult, Writer};
use crate::error::Error;

wire_enum! {
    /// Capability element type (reference §3.10, \[R1\] §6.11).
    pub enum CapabilityType: u16 {
        /// WCCP2_FORWARDING_METHOD.
        ForwardingMethod = 1 => "forwarding method",
        /// WCCP2_ASSIGNMENT_METHOD.
        AssignmentMethod = 2 => "assignment method",
        /// WCCP2_PACKET_RETURN_METHOD.
        PacketReturnMethod = 3 => "packet return method",
        /// WCCP2_TRANSMIT_T (\[R1\]).
        TransmitT = 4 => "TRANSMIT_T",
        /// WCCP2_TIMER_SCALE (\[R1\]).
        TimerScale = 5 => "TIMER_SCALE",
    }
}

wire_bits! {
    /// Forwarding method bits (reference §3.10): a set from a router, one bit from a cache.
    pub struct ForwardingMethods(u32) {
        /// WCCP2_FORWARDING_METHOD_GRE.
        const GRE = 0x0000_0001;
        /// WCCP2_FORWARDING_METHOD_L2.
        const L2 = 0x0000_0002;
    }
}

wire_bits! {
    /// Assignment method bits (reference §3.10).
    pub struct AssignmentMethods(u32) {
        /// WCCP2_ASSIGNMENT_METHOD_HASH.
        const HASH = 0x0000_0001;
        /// WCCP2_ASSIGNMENT_METHOD_MASK.
        const MASK = 0x0000_0002;
    }
}

wire_bits! {
    /// Packet return method bits (reference §3.10).
    pub struct ReturnMethods(u32) {
        /// WCCP2_PACKET_RETURN_METHOD_GRE.
        const GRE = 0x0000_0001;
        /// WCCP2_PACKET_RETURN_METHOD_L2.
        const L2 = 0x0000_0002;
    }
}

/// One capability element.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Capability {
    /// Forwarding methods (u32 bitmask).
    ForwardingMethod(ForwardingMethods),
    /// Assignment methods (u32 bitmask).
    AssignmentMethod(AssignmentMethods),
    /// Packet return methods (u32 bitmask).
    PacketReturnMethod(ReturnMethods),
    /// TRANSMIT_T in ms: `upper == 0` means the single value `lower`, else a range.
    TransmitT {
        /// Upper limit, or 0 for a single value.
        upper: u16,
        /// Lower limit, or the single value.
        lower: u16,
    },
    /// TIMEOUT_SCALE and RA_TIMER_SCALE: `(0, v, 0, w)` = single values, else ranges.
    TimerScale {
        /// TIMEOUT_SCALE upper limit (0 for a single value).
        timeout_upper: u8,
        /// TIMEOUT_SCALE lower limit or value.
        timeout_lower: u8,
        /// RA_TIMER_SCALE upper limit (0 for a single value).
        ra_upper: u8,
        /// RA_TIMER_SCALE lower limit or value.
        ra_lower: u8,
    },
    /// Any other type, kept raw (receivers ignore it, §3.10; never holds types 1–5).
    Unknown {
        /// Raw type.
        kind: u16,
        /// Value octets.
        value: Vec<u8>,
    },
}

impl Capability {
    /// Element type.
    pub fn kind(&self) -> CapabilityType {
        match self {
            Self::ForwardingMethod(_) => CapabilityType::ForwardingMethod,
            Self::AssignmentMethod(_) => CapabilityType::AssignmentMethod,
            Self::PacketReturnMethod(_) => CapabilityType::PacketReturnMethod,
            Self::TransmitT { .. } => CapabilityType::TransmitT,
            Self::TimerScale { .. } => CapabilityType::TimerScale,
            Self::Unknown { kind, .. } => CapabilityType::from(*kind),
        }
    }

    /// nom parser for one element.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (rest, kind) = codec::u16(i)?;
        let (rest, length) = codec::u16(rest)?;
        let (rest, value) = codec::take(usize::from(length))(rest)?;
        let kind_enum = CapabilityType::from(kind);
        if let CapabilityType::Unknown(_) = kind_enum {
            return Ok((
                rest,
                Self::Unknown {
                    kind,
                    value: value.to_vec(),
                },
            ));
        }
        // Every defined capability value is 4 octets (§3.10).
        let Ok(raw) = <[u8; 4]>::try_from(value) else {
            return codec::fail(
                i,
                Error::BadLength {
                    what: "capability element",
                    length: usize::from(length),
                    expected: 4,
                    at: 0,
                },
            );
        };
        let word = u32::from_be_bytes(raw);
        let cap = match kind_enum {
            CapabilityType::ForwardingMethod => Self::ForwardingMethod(ForwardingMethods(word)),
            CapabilityType::AssignmentMethod => Self::AssignmentMethod(AssignmentMethods(word)),
            CapabilityType::PacketReturnMethod => Self::PacketReturnMethod(ReturnMethods(word)),
            CapabilityType::TransmitT => Self::TransmitT {
                upper: u16::from_be_bytes([raw[0], raw[1]]),
                lower: u16::from_be_bytes([raw[2], raw[3]]),
            },
            CapabilityType::TimerScale | CapabilityType::Unknown(_) => Self::TimerScale {
                timeout_upper: raw[0],
                timeout_lower: raw[1],
                ra_upper: raw[2],
                ra_lower: raw[3],
            },
        };
        Ok((rest, cap))
    }

    /// Appends the element.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.u16(self.kind().into());
        w.u16_length("capability element", |w| {
            match self {
                Self::ForwardingMethod(m) => w.u32(m.bits()),
                Self::AssignmentMethod(m) => w.u32(m.bits()),
                Self::PacketReturnMethod(m) => w.u32(m.bits()),
                Self::TransmitT { upper, lower } => {
                    w.u16(*upper);
                    w.u16(*lower);
                }
                Self::TimerScale {
                    timeout_upper,
                    timeout_lower,
                    ra_upper,
                    ra_lower,
                } => {
                    w.bytes(&[*timeout_upper, *timeout_lower, *ra_upper, *ra_lower]);
                }
                Self::Unknown { value, .. } => w.bytes(value),
            }
            Ok(())
        })?;
        Ok(())
    }
}

/// Capabilities Info component (type 8): a router's supported set or a cache's choices.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct CapabilitiesInfo {
    /// Elements in wire order.
    pub elements: Vec<Capability>,
}

impl CapabilitiesInfo {
    /// The three method elements, as Squid sends them (types 1–3, §3.10).
    pub fn methods(
        forwarding: ForwardingMethods,
        assignment: AssignmentMethods,
        packet_return: ReturnMethods,
    ) -> Self {
        Self {
            elements: vec![
                Capability::ForwardingMethod(forwarding),
                Capability::AssignmentMethod(assignment),
                Capability::PacketReturnMethod(packet_return),
            ],
        }
    }

    /// First forwarding-method element, if any (absent = GRE, §3.10).
    pub fn forwarding(&self) -> Option<ForwardingMethods> {
        self.elements.iter().find_map(|c| match c {
            Capability::ForwardingMethod(m) => Some(*m),
            _ => None,
        })
    }

    /// First assignment-method element, if any (absent = hash).
    pub fn assignment(&self) -> Option<AssignmentMethods> {
        self.elements.iter().find_map(|c| match c {
            Capability::AssignmentMethod(m) => Some(*m),
            _ => None,
        })
    }

    /// First packet-return-method element, if any (absent = GRE).
    pub fn packet_return(&self) -> Option<ReturnMethods> {
        self.elements.iter().find_map(|c| match c {
            Capability::PacketReturnMethod(m) => Some(*m),
            _ => None,
        })
    }

    /// First TRANSMIT_T element as `(upper, lower)`, if any (absent = (0, 10000)).
    pub fn transmit_t(&self) -> Option<(u16, u16)> {
        self.elements.iter().find_map(|c| match c {
            Capability::TransmitT { upper, lower } => Some((*upper, *lower)),
            _ => None,
        })
    }

    /// First TIMER_SCALE element as its four octets, if any (absent = (0, 1, 0, 1)).
    pub fn timer_scale(&self) -> Option<[u8; 4]> {
        self.elements.iter().find_map(|c| match c {
            Capability::TimerScale {
                timeout_upper,
                timeout_lower,
                ra_upper,
                ra_lower,
            } => Some([*timeout_upper, *timeout_lower, *ra_upper, *ra_lower]),
            _ => None,
        })
    }

    /// Decodes the component body (elements until the end, which must be hit exactly).
    pub(crate) fn parse_exact(mut i: &[u8]) -> Result<Self, nom::Err<Fail<'_>>> {
        let mut elements = Vec::new();
        while !i.is_empty() {
            let (rest, c) = Capability::parse(i)?;
            elements.push(c);
            i = rest;
        }
        Ok(Self { elements })
    }

    /// Tolerant decode of a body that [`Self::parse_exact`] rejected: elements of the types
    /// that carry no method choice (TRANSMIT_T, TIMER_SCALE) that are malformed are left out.
    /// `None` when the element framing itself is broken or a method
    /// element (types 1–3) is malformed: an absent method means the default (§3.10), so
    /// guessing past a garbled one could pick a method the sender did not choose.
    pub(crate) fn parse_tolerant(mut i: &[u8]) -> Option<Self> {
        let mut elements = Vec::new();
        while !i.is_empty() {
            let (rest, kind) = codec::u16(i).ok()?;
            let (rest, length) = codec::u16(rest).ok()?;
            let (rest, _) = codec::take(usize::from(length))(rest).ok()?;
            let element = &i[..i.len() - rest.len()];
            match Capability::parse(element) {
                Ok((_, c)) => elements.push(c),
                Err(_) => match CapabilityType::from(kind) {
                    CapabilityType::TransmitT | CapabilityType::TimerScale => {}
                    _ => return None,
                },
            }
            i = rest;
        }
        Some(Self { elements })
    }

    /// Appends the component body.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        self.elements.iter().try_for_each(|c| c.write(w))
    }
}

wire_enum! {
    /// Command Extension element type (\[R1\] §6.12).
    pub enum CommandType: u16 {
        /// WCCP2_COMMAND_TYPE_SHUTDOWN: cache → routers.
        Shutdown = 1 => "SHUTDOWN",
        /// WCCP2_COMMAND_TYPE_SHUTDOWN_RESPONSE: router → cache.
        ShutdownResponse = 2 => "SHUTDOWN_RESPONSE",
    }
}

/// One command element.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Command {
    /// The cache at this address is shutting down.
    Shutdown(Ipv4Addr),
    /// The router acknowledges the shutdown of the cache at this address.
    ShutdownResponse(Ipv4Addr),
    /// Any other command, kept raw (ignored by receivers; never holds types 1–2).
    Unknown {
        /// Raw command type.
        kind: u16,
        /// Command data.
        data: Vec<u8>,
    },
}

impl Command {
    /// Element type.
    pub fn kind(&self) -> CommandType {
        match self {
            Self::Shutdown(_) => CommandType::Shutdown,
            Self::ShutdownResponse(_) => CommandType::ShutdownResponse,
            Self::Unknown { kind, .. } => CommandType::from(*kind),
        }
    }

    /// nom parser for one element.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (rest, kind) = codec::u16(i)?;
        let (rest, length) = codec::u16(rest)?;
        let (rest, data) = codec::take(usize::from(length))(rest)?;
        let kind_enum = CommandType::from(kind);
        if let CommandType::Unknown(_) = kind_enum {
            return Ok((
                rest,
                Self::Unknown {
                    kind,
                    data: data.to_vec(),
                },
            ));
        }
        let Ok(raw) = <[u8; 4]>::try_from(data) else {
            return codec::fail(
                i,
                Error::BadLength {
                    what: "command element",
                    length: usize::from(length),
                    expected: 4,
                    at: 0,
                },
            );
        };
        let addr = Ipv4Addr::from(raw);
        let cmd = match kind_enum {
            CommandType::Shutdown => Self::Shutdown(addr),
            CommandType::ShutdownResponse | CommandType::Unknown(_) => Self::ShutdownResponse(addr),
        };
        Ok((rest, cmd))
    }

    /// Appends the element.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        w.u16(self.kind().into());
        w.u16_length("command element", |w| {
            match self {
                Self::Shutdown(a) | Self::ShutdownResponse(a) => w.ipv4(*a),
                Self::Unknown { data, .. } => w.bytes(data),
            }
            Ok(())
        })?;
        Ok(())
    }
}

/// Command Extension component (type 15): a list of command elements (\[R1\]; \[W\] shows one).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct CommandExtension {
    /// Commands in wire order.
    pub commands: Vec<Command>,
}

impl CommandExtension {
    /// Decodes the component body (elements until the end, which must be hit exactly).
    pub(crate) fn parse_exact(mut i: &[u8]) -> Result<Self, nom::Err<Fail<'_>>> {
        let mut commands = Vec::new();
        while !i.is_empty() {
            let (rest, c) = Command::parse(i)?;
            commands.push(c);
            i = rest;
        }
        Ok(Self { commands })
    }

    /// Appends the component body.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        self.commands.iter().try_for_each(|c| c.write(w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squid_capabilities() {
        // hia-hash-gre-std0: GRE / hash / GRE.
        let body = [
            0x00, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00,
            0x00, 0x01, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01,
        ];
        let caps = CapabilitiesInfo::parse_exact(&body).unwrap();
        assert_eq!(
            caps,
            CapabilitiesInfo::methods(
                ForwardingMethods::GRE,
                AssignmentMethods::HASH,
                ReturnMethods::GRE
            )
        );
        assert_eq!(caps.transmit_t(), None);
        let mut out = vec![];
        caps.write(&mut Writer::new(&mut out)).unwrap();
        assert_eq!(out, body);
    }

    #[test]
    fn timers_and_unknown_elements() {
        let body = [
            0x00, 0x04, 0x00, 0x04, 0xea, 0x60, 0x01, 0xf4, // TRANSMIT_T 60000..500
            0x00, 0x05, 0x00, 0x04, 0x05, 0x01, 0x05, 0x01, // TIMER_SCALE 5..1 / 5..1
            0x00, 0x00, 0x00, 0x00, // type 0, empty (the squid64 padding)
        ];
        let caps = CapabilitiesInfo::parse_exact(&body).unwrap();
        assert_eq!(caps.transmit_t(), Some((60000, 500)));
        assert_eq!(caps.timer_scale(), Some([5, 1, 5, 1]));
        assert_eq!(
            caps.elements[2],
            Capability::Unknown {
                kind: 0,
                value: vec![]
            }
        );
        let mut out = vec![];
        caps.write(&mut Writer::new(&mut out)).unwrap();
        assert_eq!(out, body);
    }

    #[test]
    fn known_capability_with_wrong_length_is_rejected() {
        let body = [0x00, 0x01, 0x00, 0x08, 0, 0, 0, 1, 0, 0, 0, 2];
        let err = CapabilitiesInfo::parse_exact(&body)
            .map_err(|e| codec::finish::<()>(&body, Err(e)).unwrap_err())
            .unwrap_err();
        assert_eq!(
            err,
            Error::BadLength {
                what: "capability element",
                length: 8,
                expected: 4,
                at: 0
            }
        );
    }

    #[test]
    fn shutdown_command() {
        let body = [0x00, 0x01, 0x00, 0x04, 0x0a, 0x63, 0x00, 0x02];
        let cmd = CommandExtension::parse_exact(&body).unwrap();
        assert_eq!(
            cmd.commands,
            vec![Command::Shutdown(Ipv4Addr::new(10, 99, 0, 2))]
        );
        let mut out = vec![];
        cmd.write(&mut Writer::new(&mut out)).unwrap();
        assert_eq!(out, body);
    }
}
