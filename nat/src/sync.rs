//! Sessions as HA state-sync records (issue 15, seed 004): what the active node tells its
//! standby about each session so the standby can translate it after a takeover.
//!
//! A session's **key** is its identity on the node: (protocol, inside address, inside port,
//! remote address, remote port), the inside lookup key. Its **value** is what the standby needs
//! to continue it: the pool address and outside port (the mapping; the outside port also names
//! the VID the standby's line interface dispatches by) and the TCP state (it picks the timeout
//! once the standby becomes active). Mappings are not records of their own: a mapping exists
//! while one of its sessions does, on both nodes.
//!
//! Both start with a format version octet, so a later format can be told apart; a record of
//! another version, length or with impossible fields is refused (never a panic).
//!
//! **ESP sessions** ([`crate::esp`]) have records of their own, in the same table if the caller
//! likes: the key has the same [`KEY_LEN`] and layout up to the protocol octet, so the receiver
//! dispatches on that octet ([`key_proto`]): [`SessionKey::decode`] refuses protocol 50 and
//! [`EspKey::decode`] refuses every other, so the two formats cannot be confused.
//!
//! ```text
//! ESP key   (14): version 1 | proto 50 | inside addr (4) | remote addr (4) | out SPI (4, != 0)
//! ESP value (10): version 1 | 0 (reserved) | pool addr (4) | in SPI (4, 0 = not learnt yet)
//! ```
//!
//! The ESP value is [`ESP_VALUE_LEN`] octets, not [`VALUE_LEN`]: SPIs are 32 bits. Times are not
//! carried; [`crate::esp::EspTable::install`] starts them at the receiver's `now`.

use crate::esp::{EspKey, EspSession, PROTO_ESP};
use crate::session::{tcp_state, SessionInfo};
use netwire::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use std::net::Ipv4Addr;
use std::num::NonZeroU32;

/// The format version this crate writes and reads (first octet of key and value).
pub const VERSION: u8 = 1;
/// Octets of an encoded key.
pub const KEY_LEN: usize = 14;
/// Octets of an encoded value.
pub const VALUE_LEN: usize = 8;
/// Octets of an encoded ESP value.
pub const ESP_VALUE_LEN: usize = 10;

/// Every TCP state bit a session can hold.
const TCP_BITS: u8 = tcp_state::SYN_OUT
    | tcp_state::SYN_IN
    | tcp_state::FIN_OUT
    | tcp_state::FIN_IN
    | tcp_state::RST;

/// A session's identity: the key of its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// IP protocol (TCP, UDP or ICMP).
    pub proto: u8,
    /// Inside address.
    pub inside_addr: Ipv4Addr,
    /// Inside port or ICMP identifier.
    pub inside_port: u16,
    /// Remote address.
    pub remote_addr: Ipv4Addr,
    /// Remote port (0 for ICMP).
    pub remote_port: u16,
}

impl SessionKey {
    /// The key of session `s`.
    pub fn of(s: &SessionInfo) -> SessionKey {
        SessionKey {
            proto: s.proto,
            inside_addr: s.inside_addr,
            inside_port: s.inside_port,
            remote_addr: s.remote_addr,
            remote_port: s.remote_port,
        }
    }

    /// Encodes as: version, protocol, inside address, inside port, remote address, remote port
    /// (big-endian).
    pub fn encode(&self) -> [u8; KEY_LEN] {
        let mut b = [0u8; KEY_LEN];
        b[0] = VERSION;
        b[1] = self.proto;
        b[2..6].copy_from_slice(&self.inside_addr.octets());
        b[6..8].copy_from_slice(&self.inside_port.to_be_bytes());
        b[8..12].copy_from_slice(&self.remote_addr.octets());
        b[12..14].copy_from_slice(&self.remote_port.to_be_bytes());
        b
    }

    /// Decodes a key; refuses another version or length and protocols NAT does not translate.
    pub fn decode(b: &[u8]) -> Result<SessionKey, SyncError> {
        let b: &[u8; KEY_LEN] = b.try_into().map_err(|_| SyncError::Length)?;
        if b[0] != VERSION {
            return Err(SyncError::Version(b[0]));
        }
        if !matches!(b[1], PROTO_TCP | PROTO_UDP | PROTO_ICMP) {
            return Err(SyncError::Protocol(b[1]));
        }
        Ok(SessionKey {
            proto: b[1],
            inside_addr: Ipv4Addr::new(b[2], b[3], b[4], b[5]),
            inside_port: u16::from_be_bytes([b[6], b[7]]),
            remote_addr: Ipv4Addr::new(b[8], b[9], b[10], b[11]),
            remote_port: u16::from_be_bytes([b[12], b[13]]),
        })
    }
}

/// What the standby needs to continue a session: the value of its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionValue {
    /// Pool address of the mapping.
    pub pool_addr: Ipv4Addr,
    /// Outside port (or ICMP identifier) of the mapping; its VID on the standby follows.
    pub outside_port: u16,
    /// TCP state bits ([`tcp_state`]); 0 for UDP and ICMP.
    pub tcp: u8,
}

impl SessionValue {
    /// The value of session `s`.
    pub fn of(s: &SessionInfo) -> SessionValue {
        SessionValue {
            pool_addr: s.pool_addr,
            outside_port: s.outside_port,
            tcp: s.tcp,
        }
    }

    /// Encodes as: version, TCP state, pool address, outside port (big-endian).
    pub fn encode(&self) -> [u8; VALUE_LEN] {
        let mut b = [0u8; VALUE_LEN];
        b[0] = VERSION;
        b[1] = self.tcp;
        b[2..6].copy_from_slice(&self.pool_addr.octets());
        b[6..8].copy_from_slice(&self.outside_port.to_be_bytes());
        b
    }

    /// Decodes a value; refuses another version or length and unknown TCP state bits.
    pub fn decode(b: &[u8]) -> Result<SessionValue, SyncError> {
        let b: &[u8; VALUE_LEN] = b.try_into().map_err(|_| SyncError::Length)?;
        if b[0] != VERSION {
            return Err(SyncError::Version(b[0]));
        }
        if b[1] & !TCP_BITS != 0 {
            return Err(SyncError::TcpState(b[1]));
        }
        Ok(SessionValue {
            tcp: b[1],
            pool_addr: Ipv4Addr::new(b[2], b[3], b[4], b[5]),
            outside_port: u16::from_be_bytes([b[6], b[7]]),
        })
    }
}

/// Encodes session `s` as a (key, value) pair.
pub fn encode(s: &SessionInfo) -> ([u8; KEY_LEN], [u8; VALUE_LEN]) {
    (SessionKey::of(s).encode(), SessionValue::of(s).encode())
}

/// Decodes an upserted session from its key and value. A TCP state on a non-TCP session is
/// refused.
pub fn decode(key: &[u8], value: &[u8]) -> Result<SessionInfo, SyncError> {
    let k = SessionKey::decode(key)?;
    let v = SessionValue::decode(value)?;
    if k.proto != PROTO_TCP && v.tcp != 0 {
        return Err(SyncError::TcpState(v.tcp));
    }
    Ok(SessionInfo {
        proto: k.proto,
        tcp: v.tcp,
        inside_addr: k.inside_addr,
        inside_port: k.inside_port,
        pool_addr: v.pool_addr,
        outside_port: v.outside_port,
        remote_addr: k.remote_addr,
        remote_port: k.remote_port,
    })
}

/// A change of one session for the HA peer: what [`crate::worker::NatWorker`] records while
/// syncing, and what the standby applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncEvent {
    /// Created, or its TCP state changed (or a full re-export).
    Upsert(SessionInfo),
    /// Removed (expired). Only the key fields matter.
    Delete(SessionInfo),
}

/// Decodes a delete's key into a [`SyncEvent::Delete`] (the value fields zero).
pub fn decode_delete(key: &[u8]) -> Result<SyncEvent, SyncError> {
    let k = SessionKey::decode(key)?;
    Ok(SyncEvent::Delete(SessionInfo {
        proto: k.proto,
        tcp: 0,
        inside_addr: k.inside_addr,
        inside_port: k.inside_port,
        pool_addr: Ipv4Addr::UNSPECIFIED,
        outside_port: 0,
        remote_addr: k.remote_addr,
        remote_port: k.remote_port,
    }))
}

/// The protocol octet of a record key of this version and length, to pick its decoder
/// ([`decode`] for TCP/UDP/ICMP, [`decode_esp`] for ESP).
pub fn key_proto(key: &[u8]) -> Option<u8> {
    match key {
        [VERSION, proto, ..] if key.len() == KEY_LEN => Some(*proto),
        _ => None,
    }
}

impl EspKey {
    /// Encodes as: version, 50, inside address, remote address, out SPI (big-endian).
    pub fn encode(&self) -> [u8; KEY_LEN] {
        let mut b = [0u8; KEY_LEN];
        b[0] = VERSION;
        b[1] = PROTO_ESP;
        b[2..6].copy_from_slice(&self.inside.octets());
        b[6..10].copy_from_slice(&self.remote.octets());
        b[10..14].copy_from_slice(&self.out_spi.get().to_be_bytes());
        b
    }

    /// Decodes an ESP key; refuses another version, length or protocol and SPI 0.
    pub fn decode(b: &[u8]) -> Result<EspKey, SyncError> {
        let b: &[u8; KEY_LEN] = b.try_into().map_err(|_| SyncError::Length)?;
        if b[0] != VERSION {
            return Err(SyncError::Version(b[0]));
        }
        if b[1] != PROTO_ESP {
            return Err(SyncError::Protocol(b[1]));
        }
        let out_spi = NonZeroU32::new(u32::from_be_bytes([b[10], b[11], b[12], b[13]]))
            .ok_or(SyncError::Spi)?;
        Ok(EspKey {
            inside: Ipv4Addr::new(b[2], b[3], b[4], b[5]),
            remote: Ipv4Addr::new(b[6], b[7], b[8], b[9]),
            out_spi,
        })
    }
}

/// Encodes ESP session `s` as a (key, value) pair.
pub fn encode_esp(s: &EspSession) -> ([u8; KEY_LEN], [u8; ESP_VALUE_LEN]) {
    let mut v = [0u8; ESP_VALUE_LEN];
    v[0] = VERSION;
    v[2..6].copy_from_slice(&s.pool.octets());
    v[6..10].copy_from_slice(&s.in_spi.map_or(0, NonZeroU32::get).to_be_bytes());
    (s.key().encode(), v)
}

/// Decodes an upserted ESP session (its times 0: [`crate::esp::EspTable::install`] sets them).
/// Refuses another version or length, a non-zero reserved octet and an unspecified pool address.
pub fn decode_esp(key: &[u8], value: &[u8]) -> Result<EspSession, SyncError> {
    let k = EspKey::decode(key)?;
    let v: &[u8; ESP_VALUE_LEN] = value.try_into().map_err(|_| SyncError::Length)?;
    if v[0] != VERSION {
        return Err(SyncError::Version(v[0]));
    }
    if v[1] != 0 {
        return Err(SyncError::Reserved(v[1]));
    }
    let pool = Ipv4Addr::new(v[2], v[3], v[4], v[5]);
    if pool.is_unspecified() {
        return Err(SyncError::Address);
    }
    Ok(EspSession {
        inside: k.inside,
        pool,
        remote: k.remote,
        out_spi: k.out_spi,
        in_spi: NonZeroU32::new(u32::from_be_bytes([v[6], v[7], v[8], v[9]])),
        last_seen: 0,
        created: 0,
    })
}

/// A change of one ESP session for the HA peer or the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EspSyncEvent {
    /// Created, or learnt its inbound SPI (or a full re-export).
    Upsert(EspSession),
    /// Removed (expired).
    Delete(EspKey),
}

/// Decodes an ESP delete's key into an [`EspSyncEvent::Delete`].
pub fn decode_esp_delete(key: &[u8]) -> Result<EspSyncEvent, SyncError> {
    EspKey::decode(key).map(EspSyncEvent::Delete)
}

/// Why a record did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncError {
    /// Not the length of this version's key or value.
    Length,
    /// Another format version.
    Version(u8),
    /// A protocol NAT does not translate.
    Protocol(u8),
    /// Unknown TCP state bits, or TCP state on a UDP/ICMP session.
    TcpState(u8),
    /// An ESP key with SPI 0 (reserved, RFC 4303).
    Spi,
    /// A reserved octet that is not 0.
    Reserved(u8),
    /// An unspecified pool address.
    Address,
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::Length => write!(f, "wrong length"),
            SyncError::Version(v) => write!(f, "format version {v} (this node reads {VERSION})"),
            SyncError::Protocol(p) => write!(f, "protocol {p} is not translated"),
            SyncError::TcpState(t) => write!(f, "impossible TCP state {t:#04x}"),
            SyncError::Spi => write!(f, "ESP SPI 0"),
            SyncError::Reserved(r) => write!(f, "reserved octet {r:#04x} is not 0"),
            SyncError::Address => write!(f, "unspecified pool address"),
        }
    }
}

impl std::error::Error for SyncError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> SessionInfo {
        SessionInfo {
            proto: PROTO_TCP,
            tcp: tcp_state::SYN_OUT | tcp_state::SYN_IN,
            inside_addr: Ipv4Addr::new(10, 0, 0, 7),
            inside_port: 40001,
            pool_addr: Ipv4Addr::new(192, 0, 2, 1),
            outside_port: 9000,
            remote_addr: Ipv4Addr::new(198, 51, 100, 1),
            remote_port: 443,
        }
    }

    #[test]
    fn a_session_round_trips_and_the_key_is_its_identity() {
        let s = info();
        let (k, v) = encode(&s);
        assert_eq!(decode(&k, &v), Ok(s));
        assert_eq!(k[0], VERSION);
        assert_eq!(v[0], VERSION);
        // The mapping is in the value: another port is the same key.
        let moved = SessionInfo {
            outside_port: 9001,
            ..s
        };
        assert_eq!(encode(&moved).0, k);
        assert_eq!(SessionKey::decode(&k), Ok(SessionKey::of(&s)));
    }

    #[test]
    fn other_versions_lengths_and_impossible_fields_are_refused() {
        let (k, v) = encode(&info());
        let mut k2 = k;
        k2[0] = 2;
        assert_eq!(decode(&k2, &v), Err(SyncError::Version(2)));
        assert_eq!(decode(&k[..13], &v), Err(SyncError::Length));
        assert_eq!(
            decode(&k, &[v.as_slice(), &[0]].concat()),
            Err(SyncError::Length)
        );
        let mut k3 = k;
        k3[1] = 47;
        assert_eq!(decode(&k3, &v), Err(SyncError::Protocol(47)));
        let mut v2 = v;
        v2[1] = 0x40;
        assert_eq!(decode(&k, &v2), Err(SyncError::TcpState(0x40)));
        let mut udp = k;
        udp[1] = PROTO_UDP;
        assert_eq!(decode(&udp, &v), Err(SyncError::TcpState(v[1])));
    }

    fn esp() -> EspSession {
        EspSession {
            inside: Ipv4Addr::new(10, 0, 0, 7),
            pool: Ipv4Addr::new(192, 0, 2, 1),
            remote: Ipv4Addr::new(198, 51, 100, 1),
            out_spi: NonZeroU32::new(0xc001_d00d).unwrap(),
            in_spi: NonZeroU32::new(0x0000_0101),
            last_seen: 0,
            created: 0,
        }
    }

    #[test]
    fn an_esp_session_round_trips_learnt_or_not() {
        for in_spi in [None, NonZeroU32::new(0x101)] {
            let s = EspSession { in_spi, ..esp() };
            let (k, v) = encode_esp(&s);
            assert_eq!(decode_esp(&k, &v), Ok(s));
            assert_eq!(key_proto(&k), Some(PROTO_ESP));
            assert_eq!(decode_esp_delete(&k), Ok(EspSyncEvent::Delete(s.key())));
        }
        assert_eq!(
            encode_esp(&esp()).0,
            [1, 50, 10, 0, 0, 7, 198, 51, 100, 1, 0xc0, 0x01, 0xd0, 0x0d]
        );
        assert_eq!(encode_esp(&esp()).1, [1, 0, 192, 0, 2, 1, 0, 0, 1, 1]);
    }

    #[test]
    fn esp_and_port_records_cannot_be_confused() {
        let (ek, ev) = encode_esp(&esp());
        let (k, v) = encode(&info());
        assert_eq!(SessionKey::decode(&ek), Err(SyncError::Protocol(50)));
        assert_eq!(decode(&ek, &v), Err(SyncError::Protocol(50)));
        assert_eq!(decode_delete(&ek), Err(SyncError::Protocol(50)));
        assert_eq!(EspKey::decode(&k), Err(SyncError::Protocol(PROTO_TCP)));
        assert_eq!(decode_esp(&k, &ev), Err(SyncError::Protocol(PROTO_TCP)));
        assert_eq!(key_proto(&k), Some(PROTO_TCP));
        assert_eq!(key_proto(&k[..13]), None);
    }

    #[test]
    fn impossible_esp_records_are_refused() {
        let (k, v) = encode_esp(&esp());
        let mut k2 = k;
        k2[0] = 2;
        assert_eq!(decode_esp(&k2, &v), Err(SyncError::Version(2)));
        assert_eq!(key_proto(&k2), None);
        let mut v2 = v;
        v2[0] = 0;
        assert_eq!(decode_esp(&k, &v2), Err(SyncError::Version(0)));
        assert_eq!(decode_esp(&k[..13], &v), Err(SyncError::Length));
        assert_eq!(decode_esp(&k, &v[..9]), Err(SyncError::Length));
        assert_eq!(decode_esp(&k, &[0; VALUE_LEN]), Err(SyncError::Length));
        let mut k3 = k;
        k3[10..14].fill(0);
        assert_eq!(decode_esp(&k3, &v), Err(SyncError::Spi));
        assert_eq!(decode_esp_delete(&k3), Err(SyncError::Spi));
        let mut v3 = v;
        v3[1] = 1;
        assert_eq!(decode_esp(&k, &v3), Err(SyncError::Reserved(1)));
        let mut v4 = v;
        v4[2..6].fill(0);
        assert_eq!(decode_esp(&k, &v4), Err(SyncError::Address));
    }
}
