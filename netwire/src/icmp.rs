//! ICMP for IPv4 (RFC 792): echo, and the error messages that quote an invoking packet.

use crate::ipv4::{PROTO_TCP, PROTO_UDP};
use crate::{be16, be32, checksum, put16, put32, Error, Result};
use std::net::Ipv4Addr;

/// Type: echo reply.
pub const ECHO_REPLY: u8 = 0;
/// Type: destination unreachable.
pub const DEST_UNREACHABLE: u8 = 3;
/// Type: source quench (deprecated, RFC 6633), still an error that quotes its invoking packet.
pub const SOURCE_QUENCH: u8 = 4;
/// Type: redirect.
pub const REDIRECT: u8 = 5;
/// Type: echo request.
pub const ECHO_REQUEST: u8 = 8;
/// Type: time exceeded.
pub const TIME_EXCEEDED: u8 = 11;
/// Type: parameter problem.
pub const PARAMETER_PROBLEM: u8 = 12;

/// Unreachable code: network unreachable.
pub const CODE_NET_UNREACHABLE: u8 = 0;
/// Unreachable code: host unreachable.
pub const CODE_HOST_UNREACHABLE: u8 = 1;
/// Unreachable code: protocol unreachable.
pub const CODE_PROTOCOL_UNREACHABLE: u8 = 2;
/// Unreachable code: port unreachable.
pub const CODE_PORT_UNREACHABLE: u8 = 3;
/// Unreachable code: fragmentation needed and DF set; the next-hop MTU is in the header.
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Time exceeded code: TTL exceeded in transit.
pub const CODE_TTL_EXCEEDED: u8 = 0;

/// Length of the header (type, code, checksum, rest-of-header word).
pub const HEADER_LEN: usize = 8;

/// Octets of the invoking packet's payload an error quotes at least (RFC 792: 64 bits).
pub const INVOKING_PAYLOAD_LEN: usize = 8;

/// True for ICMP types that are errors (no ICMP error is ever sent about one of these).
///
/// Unknown types count as errors, the safe side for that rule (RFC 1812 §4.3.2.7).
pub fn is_error(msg_type: u8) -> bool {
    !matches!(
        msg_type,
        ECHO_REPLY | ECHO_REQUEST | 13 | 14 | 15 | 16 | 17 | 18
    )
}

/// True for the error types whose data is the invoking packet's header and first octets.
fn quotes_invoking(msg_type: u8) -> bool {
    matches!(
        msg_type,
        DEST_UNREACHABLE | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAMETER_PROBLEM
    )
}

/// Byte offsets of the header fields, and of the invoking IPv4 header's within the data.
mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQ: usize = 6;
    pub const POINTER: usize = 4;
    pub const MTU: usize = 6;

    pub const INNER_PROTOCOL: usize = 9;
    pub const INNER_SRC: usize = 12;
    pub const INNER_DST: usize = 16;
}

/// A view over an ICMP message; the buffer is the whole message (the IPv4 payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on a short one.
    pub const fn new_unchecked(buffer: T) -> Self {
        Icmpv4Packet { buffer }
    }

    /// Wraps a buffer after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the 8-octet header is present.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::Truncated {
                need: HEADER_LEN,
                have: len,
            });
        }
        Ok(())
    }

    /// Returns the underlying buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The rest-of-header word, whose meaning depends on the type.
    pub fn rest_of_header(&self) -> u32 {
        be32(self.buffer.as_ref(), field::REST)
    }

    /// Echo identifier.
    pub fn echo_ident(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_IDENT)
    }

    /// Echo sequence number.
    pub fn echo_seq(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ECHO_SEQ)
    }

    /// Next-hop MTU of a "fragmentation needed" (RFC 1191); 0 from routers that predate it.
    pub fn next_hop_mtu(&self) -> u16 {
        be16(self.buffer.as_ref(), field::MTU)
    }

    /// Parameter problem pointer: the octet of the invoking header at fault.
    pub fn pointer(&self) -> u8 {
        self.buffer.as_ref()[field::POINTER]
    }

    /// The data after the header.
    pub fn data(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }

    /// True when the checksum over the whole message verifies.
    pub fn verify(&self) -> bool {
        checksum::checksum(self.buffer.as_ref()) == 0
    }

    /// The invoking packet an error quotes: its IPv4 header and at least 8 further octets.
    ///
    /// Fails for a type that quotes nothing, or when the quote is too short or not IPv4. Its
    /// total length is the original datagram's, so it is usually no valid `Ipv4Packet`.
    pub fn invoking(&self) -> Result<&[u8]> {
        self.check_invoking()?;
        Ok(self.data())
    }

    /// Checks what [`invoking`](Self::invoking) promises; returns the inner header length.
    fn check_invoking(&self) -> Result<usize> {
        if !quotes_invoking(self.msg_type()) {
            return Err(Error::Unrecognized {
                msg_type: self.msg_type(),
                code: self.code(),
            });
        }
        let data = self.data();
        let min = crate::ipv4::HEADER_LEN + INVOKING_PAYLOAD_LEN;
        if data.len() < min {
            return Err(Error::Truncated {
                need: min,
                have: data.len(),
            });
        }
        if data[0] >> 4 != 4 {
            return Err(Error::BadVersion(data[0] >> 4));
        }
        let hlen = usize::from(data[0] & 0x0f) * 4;
        if hlen < crate::ipv4::HEADER_LEN {
            return Err(Error::BadHeaderLen(hlen));
        }
        if data.len() < hlen + INVOKING_PAYLOAD_LEN {
            return Err(Error::Truncated {
                need: hlen + INVOKING_PAYLOAD_LEN,
                have: data.len(),
            });
        }
        Ok(hlen)
    }

    /// Protocol of the invoking packet.
    pub fn invoking_protocol(&self) -> Result<u8> {
        Ok(self.invoking()?[field::INNER_PROTOCOL])
    }

    /// Source address of the invoking packet: the address the error is about, usually ours.
    pub fn invoking_src_addr(&self) -> Result<Ipv4Addr> {
        let b = self.invoking()?;
        Ok(addr_at(b, field::INNER_SRC))
    }

    /// Destination address of the invoking packet.
    pub fn invoking_dst_addr(&self) -> Result<Ipv4Addr> {
        let b = self.invoking()?;
        Ok(addr_at(b, field::INNER_DST))
    }

    /// Source and destination ports of an invoking TCP or UDP packet.
    pub fn invoking_ports(&self) -> Result<(u16, u16)> {
        let hlen = self.check_invoking()?;
        let data = self.data();
        let protocol = data[field::INNER_PROTOCOL];
        if !matches!(protocol, PROTO_TCP | PROTO_UDP) {
            return Err(Error::NoPorts(protocol));
        }
        Ok((be16(data, hlen), be16(data, hlen + 2)))
    }
}

/// The address at `at`: one bounds check for its 4 octets.
fn addr_at(b: &[u8], at: usize) -> Ipv4Addr {
    let a = &b[at..at + 4];
    Ipv4Addr::new(a[0], a[1], a[2], a[3])
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Sets the message type.
    pub fn set_msg_type(&mut self, msg_type: u8) {
        self.buffer.as_mut()[field::TYPE] = msg_type;
    }

    /// Sets the message code.
    pub fn set_code(&mut self, code: u8) {
        self.buffer.as_mut()[field::CODE] = code;
    }

    /// Sets the checksum field.
    pub fn set_checksum(&mut self, check: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, check);
    }

    /// Sets the rest-of-header word.
    pub fn set_rest_of_header(&mut self, rest: u32) {
        put32(self.buffer.as_mut(), field::REST, rest);
    }

    /// Sets the echo identifier.
    pub fn set_echo_ident(&mut self, ident: u16) {
        put16(self.buffer.as_mut(), field::ECHO_IDENT, ident);
    }

    /// Sets the echo sequence number.
    pub fn set_echo_seq(&mut self, seq: u16) {
        put16(self.buffer.as_mut(), field::ECHO_SEQ, seq);
    }

    /// Sets the next-hop MTU of a "fragmentation needed".
    pub fn set_next_hop_mtu(&mut self, mtu: u16) {
        put16(self.buffer.as_mut(), field::MTU, mtu);
    }

    /// Sets the parameter problem pointer.
    pub fn set_pointer(&mut self, pointer: u8) {
        self.buffer.as_mut()[field::POINTER] = pointer;
    }

    /// The data after the header, mutable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }

    /// The invoking packet, mutable (to translate its addresses and ports); checked as
    /// [`invoking`](Self::invoking) is.
    pub fn invoking_mut(&mut self) -> Result<&mut [u8]> {
        self.check_invoking()?;
        Ok(self.data_mut())
    }

    /// Computes the checksum over the whole message and stores it.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let check = checksum::checksum(self.buffer.as_ref());
        self.set_checksum(check);
    }
}

/// A decoded ICMP message of a kind swrouter answers or originates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Icmpv4Repr {
    /// Echo request.
    EchoRequest {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
        /// Octets of data after the header.
        data_len: usize,
    },
    /// Echo reply.
    EchoReply {
        /// Identifier.
        ident: u16,
        /// Sequence number.
        seq: u16,
        /// Octets of data after the header.
        data_len: usize,
    },
    /// Destination unreachable.
    DstUnreachable {
        /// One of the `CODE_*` unreachable codes.
        code: u8,
        /// Next-hop MTU, meaningful with [`CODE_FRAG_NEEDED`], otherwise 0.
        mtu: u16,
        /// Octets of the quoted invoking packet.
        data_len: usize,
    },
    /// Time exceeded.
    TimeExceeded {
        /// [`CODE_TTL_EXCEEDED`], or 1 for fragment reassembly.
        code: u8,
        /// Octets of the quoted invoking packet.
        data_len: usize,
    },
    /// Parameter problem.
    ParamProblem {
        /// 0 when the pointer locates the fault.
        code: u8,
        /// The octet of the invoking header at fault.
        pointer: u8,
        /// Octets of the quoted invoking packet.
        data_len: usize,
    },
}

impl Icmpv4Repr {
    /// Decodes a message; the checksum is not verified (use [`Icmpv4Packet::verify`]), nor is
    /// the quoted packet (use [`Icmpv4Packet::invoking`]).
    pub fn parse<T: AsRef<[u8]>>(packet: &Icmpv4Packet<T>) -> Result<Self> {
        packet.check_len()?;
        let data_len = packet.data().len();
        let (msg_type, code) = (packet.msg_type(), packet.code());
        Ok(match (msg_type, code) {
            (ECHO_REQUEST, 0) => Icmpv4Repr::EchoRequest {
                ident: packet.echo_ident(),
                seq: packet.echo_seq(),
                data_len,
            },
            (ECHO_REPLY, 0) => Icmpv4Repr::EchoReply {
                ident: packet.echo_ident(),
                seq: packet.echo_seq(),
                data_len,
            },
            (DEST_UNREACHABLE, code) => Icmpv4Repr::DstUnreachable {
                code,
                mtu: packet.next_hop_mtu(),
                data_len,
            },
            (TIME_EXCEEDED, code) => Icmpv4Repr::TimeExceeded { code, data_len },
            (PARAMETER_PROBLEM, code) => Icmpv4Repr::ParamProblem {
                code,
                pointer: packet.pointer(),
                data_len,
            },
            _ => return Err(Error::Unrecognized { msg_type, code }),
        })
    }

    /// Octets of data after the header.
    pub fn data_len(&self) -> usize {
        match *self {
            Icmpv4Repr::EchoRequest { data_len, .. }
            | Icmpv4Repr::EchoReply { data_len, .. }
            | Icmpv4Repr::DstUnreachable { data_len, .. }
            | Icmpv4Repr::TimeExceeded { data_len, .. }
            | Icmpv4Repr::ParamProblem { data_len, .. } => data_len,
        }
    }

    /// Length of the whole message.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.data_len()
    }

    /// Writes the header, then the checksum over the whole buffer, which must be the message
    /// ([`buffer_len`](Self::buffer_len) octets) with its data already in place.
    ///
    /// # Panics
    ///
    /// If the buffer is shorter than [`HEADER_LEN`].
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Icmpv4Packet<T>) {
        let (msg_type, code, rest) = match *self {
            Icmpv4Repr::EchoRequest { ident, seq, .. } => {
                (ECHO_REQUEST, 0, u32::from(ident) << 16 | u32::from(seq))
            }
            Icmpv4Repr::EchoReply { ident, seq, .. } => {
                (ECHO_REPLY, 0, u32::from(ident) << 16 | u32::from(seq))
            }
            Icmpv4Repr::DstUnreachable { code, mtu, .. } => {
                (DEST_UNREACHABLE, code, u32::from(mtu))
            }
            Icmpv4Repr::TimeExceeded { code, .. } => (TIME_EXCEEDED, code, 0),
            Icmpv4Repr::ParamProblem { code, pointer, .. } => {
                (PARAMETER_PROBLEM, code, u32::from(pointer) << 24)
            }
        };
        packet.set_msg_type(msg_type);
        packet.set_code(code);
        packet.set_rest_of_header(rest);
        packet.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Echo request, ident 0x1234, seq 1, data "abcdefgh".
    static ECHO: [u8; 16] = [
        0x08, 0x00, 0x54, 0x35, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67,
        0x68,
    ];

    /// Port unreachable from 10.0.0.2, quoting the datagram 10.0.0.1:40000 → 10.0.0.2:2048
    /// (its IPv4 header and UDP header).
    static PORT_UNREACHABLE: [u8; 36] = [
        0x03, 0x03, 0xeb, 0xf0, 0x00, 0x00, 0x00, 0x00, 0x45, 0x00, 0x00, 0x20, 0x1c, 0x46, 0x40,
        0x00, 0x40, 0x11, 0x0a, 0x85, 0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02, 0x9c, 0x40,
        0x08, 0x00, 0x00, 0x0c, 0x6c, 0xbf,
    ];

    fn echo() -> Icmpv4Packet<&'static [u8]> {
        Icmpv4Packet::new_unchecked(&ECHO[..])
    }

    fn unreachable() -> Icmpv4Packet<&'static [u8]> {
        Icmpv4Packet::new_unchecked(&PORT_UNREACHABLE[..])
    }

    #[test]
    fn checked_accepts_the_samples() {
        assert!(Icmpv4Packet::new_checked(&ECHO[..]).is_ok());
        assert!(Icmpv4Packet::new_checked(&PORT_UNREACHABLE[..]).is_ok());
    }

    #[test]
    fn echo_type_code_checksum() {
        assert_eq!(echo().msg_type(), ECHO_REQUEST);
        assert_eq!(echo().code(), 0);
        assert_eq!(echo().checksum(), 0x5435);
        assert!(echo().verify());
    }

    #[test]
    fn echo_ident_seq_rest() {
        assert_eq!(echo().echo_ident(), 0x1234);
        assert_eq!(echo().echo_seq(), 1);
        assert_eq!(echo().rest_of_header(), 0x1234_0001);
    }

    #[test]
    fn echo_data() {
        assert_eq!(echo().data(), b"abcdefgh");
        assert_eq!(
            echo().invoking(),
            Err(Error::Unrecognized {
                msg_type: ECHO_REQUEST,
                code: 0
            })
        );
    }

    #[test]
    fn echo_construct() {
        let mut bytes = [0xa5u8; 16];
        let mut p = Icmpv4Packet::new_unchecked(&mut bytes[..]);
        p.set_msg_type(ECHO_REQUEST);
        p.set_code(0);
        p.set_echo_ident(0x1234);
        p.set_echo_seq(1);
        p.data_mut().copy_from_slice(b"abcdefgh");
        p.fill_checksum();
        assert_eq!(bytes, ECHO);
    }

    #[test]
    fn echo_repr() {
        let repr = Icmpv4Repr::EchoRequest {
            ident: 0x1234,
            seq: 1,
            data_len: 8,
        };
        assert_eq!(Icmpv4Repr::parse(&echo()), Ok(repr));
        let mut bytes = [0xa5u8; 16];
        bytes[8..].copy_from_slice(b"abcdefgh");
        repr.emit(&mut Icmpv4Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, ECHO);
    }

    #[test]
    fn unreachable_header() {
        assert_eq!(unreachable().msg_type(), DEST_UNREACHABLE);
        assert_eq!(unreachable().code(), CODE_PORT_UNREACHABLE);
        assert_eq!(unreachable().checksum(), 0xebf0);
        assert_eq!(unreachable().rest_of_header(), 0);
        assert_eq!(unreachable().next_hop_mtu(), 0);
        assert!(unreachable().verify());
    }

    #[test]
    fn unreachable_invoking() {
        assert_eq!(unreachable().invoking(), Ok(&PORT_UNREACHABLE[8..]));
        assert_eq!(unreachable().invoking_protocol(), Ok(PROTO_UDP));
        assert_eq!(
            unreachable().invoking_src_addr(),
            Ok(Ipv4Addr::new(10, 0, 0, 1))
        );
        assert_eq!(
            unreachable().invoking_dst_addr(),
            Ok(Ipv4Addr::new(10, 0, 0, 2))
        );
        assert_eq!(unreachable().invoking_ports(), Ok((40000, 2048)));
    }

    #[test]
    fn unreachable_construct_and_repr() {
        let repr = Icmpv4Repr::DstUnreachable {
            code: CODE_PORT_UNREACHABLE,
            mtu: 0,
            data_len: 28,
        };
        assert_eq!(Icmpv4Repr::parse(&unreachable()), Ok(repr));
        let mut bytes = [0xa5u8; 36];
        bytes[8..].copy_from_slice(&PORT_UNREACHABLE[8..]);
        repr.emit(&mut Icmpv4Packet::new_unchecked(&mut bytes[..]));
        assert_eq!(bytes, PORT_UNREACHABLE);
    }

    #[test]
    fn frag_needed_and_param_problem_fields() {
        let mut bytes = PORT_UNREACHABLE;
        let mut p = Icmpv4Packet::new_unchecked(&mut bytes[..]);
        p.set_code(CODE_FRAG_NEEDED);
        p.set_next_hop_mtu(1400);
        p.fill_checksum();
        assert_eq!(
            Icmpv4Repr::parse(&p),
            Ok(Icmpv4Repr::DstUnreachable {
                code: CODE_FRAG_NEEDED,
                mtu: 1400,
                data_len: 28
            })
        );
        p.set_msg_type(PARAMETER_PROBLEM);
        p.set_code(0);
        p.set_rest_of_header(0);
        p.set_pointer(9);
        assert_eq!(p.pointer(), 9);
        assert_eq!(p.rest_of_header(), 0x0900_0000);
        assert_eq!(p.invoking_protocol(), Ok(PROTO_UDP));
    }

    #[test]
    fn invoking_mut_translates_the_quote() {
        let mut bytes = PORT_UNREACHABLE;
        let mut p = Icmpv4Packet::new_unchecked(&mut bytes[..]);
        if let Ok(inner) = p.invoking_mut() {
            inner[12..16].copy_from_slice(&[192, 0, 2, 1]);
        }
        p.fill_checksum();
        assert_eq!(p.invoking_src_addr(), Ok(Ipv4Addr::new(192, 0, 2, 1)));
        assert!(p.verify());
    }

    #[test]
    fn rejections() {
        assert_eq!(
            Icmpv4Packet::new_checked(&ECHO[..7]).map(|_| ()),
            Err(Error::Truncated { need: 8, have: 7 })
        );
        let quote = |b: &[u8]| Icmpv4Packet::new_unchecked(b).invoking().map(|_| ());
        assert_eq!(
            quote(&PORT_UNREACHABLE[..35]),
            Err(Error::Truncated { need: 28, have: 27 })
        );
        let mut b = PORT_UNREACHABLE;
        b[8] = 0x65;
        assert_eq!(quote(&b), Err(Error::BadVersion(6)));
        b[8] = 0x44;
        assert_eq!(quote(&b), Err(Error::BadHeaderLen(16)));
        b[8] = 0x46;
        assert_eq!(quote(&b), Err(Error::Truncated { need: 32, have: 28 }));
        let mut b = PORT_UNREACHABLE;
        b[17] = 1; // an ICMP packet quoted: no ports
        let p = Icmpv4Packet::new_unchecked(&b[..]);
        assert_eq!(p.invoking_ports(), Err(Error::NoPorts(1)));
        assert_eq!(p.invoking_protocol(), Ok(1));
        let mut b = ECHO;
        b[1] = 1;
        assert_eq!(
            Icmpv4Repr::parse(&Icmpv4Packet::new_unchecked(&b[..])),
            Err(Error::Unrecognized {
                msg_type: ECHO_REQUEST,
                code: 1
            })
        );
        b[0] = 42;
        assert!(Icmpv4Repr::parse(&Icmpv4Packet::new_unchecked(&b[..])).is_err());
        assert!(Icmpv4Repr::parse(&Icmpv4Packet::new_unchecked(&b[..3])).is_err());
    }

    #[test]
    fn errors_are_recognised() {
        assert!(is_error(DEST_UNREACHABLE));
        assert!(is_error(TIME_EXCEEDED));
        assert!(is_error(PARAMETER_PROBLEM));
        assert!(!is_error(ECHO_REQUEST));
        assert!(!is_error(ECHO_REPLY));
    }

    fn any_repr() -> impl Strategy<Value = Icmpv4Repr> {
        let len = 0usize..64;
        prop_oneof![
            (any::<u16>(), any::<u16>(), len.clone()).prop_map(|(ident, seq, data_len)| {
                Icmpv4Repr::EchoRequest {
                    ident,
                    seq,
                    data_len,
                }
            }),
            (any::<u16>(), any::<u16>(), len.clone()).prop_map(|(ident, seq, data_len)| {
                Icmpv4Repr::EchoReply {
                    ident,
                    seq,
                    data_len,
                }
            }),
            (any::<u8>(), any::<u16>(), len.clone()).prop_map(|(code, mtu, data_len)| {
                Icmpv4Repr::DstUnreachable {
                    code,
                    mtu,
                    data_len,
                }
            }),
            (any::<u8>(), len.clone())
                .prop_map(|(code, data_len)| Icmpv4Repr::TimeExceeded { code, data_len }),
            (any::<u8>(), any::<u8>(), len).prop_map(|(code, pointer, data_len)| {
                Icmpv4Repr::ParamProblem {
                    code,
                    pointer,
                    data_len,
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn repr_round_trip(repr in any_repr(), fill in any::<u8>()) {
            let mut b = vec![fill; repr.buffer_len()];
            let mut p = Icmpv4Packet::new_unchecked(&mut b[..]);
            repr.emit(&mut p);
            prop_assert!(p.verify());
            prop_assert_eq!(Icmpv4Repr::parse(&p), Ok(repr));
        }

        #[test]
        fn checked_never_panics(data in proptest::collection::vec(any::<u8>(), 0..80), error in any::<bool>()) {
            let mut data = data;
            if error && data.len() > 8 {
                // Often an error type with a quote that starts like IPv4, to reach the inner checks.
                data[0] = DEST_UNREACHABLE;
                data[8] = 0x40 | (data[8] & 0x0f);
            }
            if let Ok(p) = Icmpv4Packet::new_checked(&data[..]) {
                let _ = (p.msg_type(), p.code(), p.checksum(), p.rest_of_header(), p.echo_ident());
                let _ = (p.echo_seq(), p.next_hop_mtu(), p.pointer(), p.data(), p.verify());
                let _ = (p.invoking(), p.invoking_protocol(), p.invoking_src_addr());
                let _ = (p.invoking_dst_addr(), p.invoking_ports(), Icmpv4Repr::parse(&p));
            }
        }

        /// NAT of an echo: an identifier patched incrementally equals a full recomputation.
        #[test]
        fn ident_update_equals_recompute(data in proptest::collection::vec(any::<u8>(), 0..64), ident in any::<u16>(), new in any::<u16>()) {
            let repr = Icmpv4Repr::EchoRequest { ident, seq: 7, data_len: data.len() };
            let mut b = vec![0u8; repr.buffer_len()];
            b[HEADER_LEN..].copy_from_slice(&data);
            let mut p = Icmpv4Packet::new_unchecked(&mut b[..]);
            repr.emit(&mut p);
            let check = checksum::update16(p.checksum(), ident, new);
            p.set_echo_ident(new);
            p.fill_checksum();
            prop_assert_eq!(check, p.checksum());
        }
    }
}
