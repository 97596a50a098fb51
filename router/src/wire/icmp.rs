//! ICMP (RFC 792) messages that the router answers or originates.

use super::checksum;
use super::put16;

/// Type: echo reply.
pub const ECHO_REPLY: u8 = 0;
/// Type: destination unreachable.
pub const DEST_UNREACHABLE: u8 = 3;
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
/// Unreachable code: fragmentation needed and DF set.
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Time exceeded code: TTL exceeded in transit.
pub const CODE_TTL_EXCEEDED: u8 = 0;

/// Length of the ICMP header (type, code, checksum, rest-of-header word).
pub const HEADER_LEN: usize = 8;

/// True for ICMP types that are errors (no ICMP error is ever sent about one of these).
pub fn is_error(icmp_type: u8) -> bool {
    !matches!(
        icmp_type,
        ECHO_REPLY | ECHO_REQUEST | 13 | 14 | 15 | 16 | 17 | 18
    )
}

/// True when the ICMP message checksum verifies.
pub fn verify(msg: &[u8]) -> bool {
    msg.len() >= HEADER_LEN && checksum::checksum(msg) == 0
}

/// Writes type, code and rest-of-header, then the checksum over the whole message.
pub fn finish(msg: &mut [u8], icmp_type: u8, code: u8, rest: u32) {
    msg[0] = icmp_type;
    msg[1] = code;
    put16(msg, 2, 0);
    msg[4..8].copy_from_slice(&rest.to_be_bytes());
    let c = checksum::checksum(msg);
    put16(msg, 2, c);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_makes_a_verifiable_message() {
        let mut m = vec![0xa5u8; 8 + 20];
        finish(&mut m, TIME_EXCEEDED, CODE_TTL_EXCEEDED, 0);
        assert!(verify(&m));
        assert_eq!(m[0], 11);
        m[9] ^= 1;
        assert!(!verify(&m));
    }

    #[test]
    fn errors_are_recognised() {
        assert!(is_error(DEST_UNREACHABLE));
        assert!(is_error(TIME_EXCEEDED));
        assert!(!is_error(ECHO_REQUEST));
    }
}
