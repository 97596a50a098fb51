//! Device health as HA state-sync records (issue 15, seed 004): what the active node tells its
//! standby about each pool member, so a new active neither sends to a member the old one knew
//! was dead nor checks every member again from scratch.
//!
//! A record's **key** is the device's name (what both nodes configure; indices are per
//! configuration), after a format version octet. Its **value** is the device's phase, its
//! health as the data plane sees it and, while it drains, the time left of the reset window.
//! A record of another version or length, or with an unknown phase or health, is refused
//! (never a panic).

use crate::health::{DeviceHealth, DevicePhase};
use std::time::Duration;

/// The format version this crate writes and reads (first octet of key and value).
pub const VERSION: u8 = 1;
/// Octets of an encoded value.
pub const VALUE_LEN: usize = 7;
/// Longest device name a key carries.
pub const MAX_NAME: usize = 255;

/// One device's health, as synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DeviceSync {
    /// Its place in the health state machine.
    pub phase: DevicePhase,
    /// Its health as the data plane sees it.
    pub health: DeviceHealth,
    /// Time left of its reset window (only while draining; whole milliseconds).
    pub drain_left: Duration,
}

/// Why a record did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncError {
    /// Not a length this version writes.
    Length,
    /// Another format version.
    Version(u8),
    /// An unknown phase.
    Phase(u8),
    /// An unknown health, or a drain time on a device that is not draining.
    Health(u8),
    /// The name is not UTF-8.
    Name,
}

impl SyncError {
    /// The name it is counted under.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncError::Length => "steering-sync-length",
            SyncError::Version(_) => "steering-sync-version",
            SyncError::Phase(_) => "steering-sync-phase",
            SyncError::Health(_) => "steering-sync-health",
            SyncError::Name => "steering-sync-name",
        }
    }
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::Length => write!(f, "wrong length"),
            SyncError::Version(v) => write!(f, "format version {v} (this node reads {VERSION})"),
            SyncError::Phase(p) => write!(f, "unknown phase {p}"),
            SyncError::Health(h) => write!(f, "impossible health {h}"),
            SyncError::Name => write!(f, "device name is not UTF-8"),
        }
    }
}

impl std::error::Error for SyncError {}

/// Encodes a device's key: version, then its name (at most [`MAX_NAME`] octets; longer names
/// are cut, which the configuration never allows).
pub fn encode_key(name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len().min(MAX_NAME));
    k.push(VERSION);
    k.extend(name.as_bytes().iter().take(MAX_NAME));
    k
}

/// Decodes a device's key into its name.
pub fn decode_key(b: &[u8]) -> Result<&str, SyncError> {
    let (&v, name) = b.split_first().ok_or(SyncError::Length)?;
    if v != VERSION {
        return Err(SyncError::Version(v));
    }
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(SyncError::Length);
    }
    std::str::from_utf8(name).map_err(|_| SyncError::Name)
}

fn phase_byte(p: DevicePhase) -> u8 {
    match p {
        DevicePhase::Up => 0,
        DevicePhase::Down => 1,
        DevicePhase::Recovered => 2,
    }
}

fn health_byte(h: DeviceHealth) -> u8 {
    match h {
        DeviceHealth::InService => 0,
        DeviceHealth::Draining => 1,
        DeviceHealth::OutOfService => 2,
    }
}

/// Encodes a device's value: version, phase, health, drain time left in ms (u32, big-endian).
pub fn encode_value(s: &DeviceSync) -> [u8; VALUE_LEN] {
    let mut b = [0u8; VALUE_LEN];
    b[0] = VERSION;
    b[1] = phase_byte(s.phase);
    b[2] = health_byte(s.health);
    if s.health == DeviceHealth::Draining {
        let ms = u32::try_from(s.drain_left.as_millis()).unwrap_or(u32::MAX);
        b[3..7].copy_from_slice(&ms.to_be_bytes());
    }
    b
}

/// Decodes a device's value; refuses unknown phases and healths, and a drain time on a device
/// that is not draining.
pub fn decode_value(b: &[u8]) -> Result<DeviceSync, SyncError> {
    let b: &[u8; VALUE_LEN] = b.try_into().map_err(|_| SyncError::Length)?;
    if b[0] != VERSION {
        return Err(SyncError::Version(b[0]));
    }
    let phase = match b[1] {
        0 => DevicePhase::Up,
        1 => DevicePhase::Down,
        2 => DevicePhase::Recovered,
        p => return Err(SyncError::Phase(p)),
    };
    let health = match b[2] {
        0 => DeviceHealth::InService,
        1 => DeviceHealth::Draining,
        2 => DeviceHealth::OutOfService,
        h => return Err(SyncError::Health(h)),
    };
    let ms = u32::from_be_bytes([b[3], b[4], b[5], b[6]]);
    if ms != 0 && health != DeviceHealth::Draining {
        return Err(SyncError::Health(b[2]));
    }
    Ok(DeviceSync {
        phase,
        health,
        drain_left: Duration::from_millis(ms.into()),
    })
}

/// Octets of an encoded drain-memory key.
pub const DRAIN_KEY_LEN: usize = 9;

/// Encodes a drain-memory connection (`DrainedFlows` key: a stateless hash of the flow and its
/// dead home, the same on both nodes of one configuration) as a record key: version, key
/// (big-endian). Its record has no value beyond the version octet ([`DRAIN_VALUE`]).
pub fn encode_drain_key(key: u64) -> [u8; DRAIN_KEY_LEN] {
    let mut b = [0u8; DRAIN_KEY_LEN];
    b[0] = VERSION;
    b[1..].copy_from_slice(&key.to_be_bytes());
    b
}

/// The value of a drain-memory record.
pub const DRAIN_VALUE: [u8; 1] = [VERSION];

/// Decodes a drain-memory record key.
pub fn decode_drain_key(b: &[u8]) -> Result<u64, SyncError> {
    let b: &[u8; DRAIN_KEY_LEN] = b.try_into().map_err(|_| SyncError::Length)?;
    if b[0] != VERSION {
        return Err(SyncError::Version(b[0]));
    }
    let mut k = [0u8; 8];
    k.copy_from_slice(&b[1..]);
    Ok(u64::from_be_bytes(k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_round_trips_and_garbage_is_refused() {
        let s = DeviceSync {
            phase: DevicePhase::Down,
            health: DeviceHealth::Draining,
            drain_left: Duration::from_millis(1500),
        };
        assert_eq!(decode_value(&encode_value(&s)), Ok(s));
        assert_eq!(decode_key(&encode_key("web1")), Ok("web1"));
        assert_eq!(decode_key(&[VERSION]), Err(SyncError::Length));
        assert_eq!(decode_key(&[2, b'a']), Err(SyncError::Version(2)));
        assert_eq!(decode_key(&[VERSION, 0xff]), Err(SyncError::Name));
        let mut v = encode_value(&s);
        v[1] = 3;
        assert_eq!(decode_value(&v), Err(SyncError::Phase(3)));
        let mut v = encode_value(&s);
        v[2] = 2;
        assert_eq!(
            decode_value(&v),
            Err(SyncError::Health(2)),
            "drain time while out"
        );
        assert_eq!(decode_value(&v[..6]), Err(SyncError::Length));
        let k = encode_drain_key(0xdead_beef_0000_0001);
        assert_eq!(decode_drain_key(&k), Ok(0xdead_beef_0000_0001));
        assert_eq!(decode_drain_key(&k[..8]), Err(SyncError::Length));
    }
}
