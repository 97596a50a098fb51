//! Keyed state records: what the channel carries, opaque to this crate.
//!
//! The router encodes its own types (NAT sessions, WCCP group state, ...) into a key and a value;
//! this crate only orders, delivers and mirrors them. Wire form of one record:
//!
//! ```text
//! table u8 | op u8 | key_len u16 | value_len u16 | key | value      (big-endian lengths)
//! ```
//!
//! A delete carries no value (`value_len` 0).

use thiserror::Error;

/// Longest key a record may have: keys are identities (a 5-tuple, a group id), not payloads.
pub const MAX_KEY_LEN: usize = 512;

/// Bytes before a record's key.
pub const RECORD_HEADER_LEN: usize = 6;

/// Which of the router's tables a record belongs to. A newtype over the wire byte, so a newer
/// sender's table reaches an older receiver's replica instead of being refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableId(pub u8);

impl TableId {
    /// Configuration generation (and whatever the router needs to check it runs the same config).
    pub const CONFIG: TableId = TableId(1);
    /// ARP neighbour bindings.
    pub const NEIGHBOUR: TableId = TableId(2);
    /// WCCP per service group: views, Receive IDs, change numbers, assignment key and table.
    pub const WCCP_GROUP: TableId = TableId(3);
    /// WCCP cache probe (fast failover) state.
    pub const WCCP_PROBE: TableId = TableId(4);
    /// NAT44 sessions.
    pub const NAT_SESSION: TableId = TableId(5);
    /// Flow affinity (flow → cache or chain member).
    pub const AFFINITY: TableId = TableId(6);
    /// Steering pool member health.
    pub const STEERING_HEALTH: TableId = TableId(7);
    /// Steering drain memory (members being drained and their flows).
    pub const STEERING_DRAIN: TableId = TableId(8);
    /// Router cluster (issue 16): handover markers (`release/<id>`, `took/<id>`) and the
    /// relayed id table (`alloc`).
    pub const CLUSTER: TableId = TableId(9);

    /// A short name for status output; unknown tables are shown by number.
    pub fn name(self) -> &'static str {
        match self {
            TableId::CONFIG => "config",
            TableId::NEIGHBOUR => "neighbour",
            TableId::WCCP_GROUP => "wccp-group",
            TableId::WCCP_PROBE => "wccp-probe",
            TableId::NAT_SESSION => "nat-session",
            TableId::AFFINITY => "affinity",
            TableId::STEERING_HEALTH => "steering-health",
            TableId::STEERING_DRAIN => "steering-drain",
            TableId::CLUSTER => "cluster",
            _ => "other",
        }
    }
}

/// What a record does to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Insert or replace the key's value.
    Upsert,
    /// Remove the key (no-op if absent).
    Delete,
}

impl Op {
    fn to_wire(self) -> u8 {
        match self {
            Op::Upsert => 1,
            Op::Delete => 2,
        }
    }
    fn from_wire(b: u8) -> Option<Op> {
        match b {
            1 => Some(Op::Upsert),
            2 => Some(Op::Delete),
            _ => None,
        }
    }
}

/// A borrowed record: what `publish` takes and what decoding yields, without copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The table.
    pub table: TableId,
    /// Upsert or delete.
    pub op: Op,
    /// The key (at most [`MAX_KEY_LEN`] bytes).
    pub key: &'a [u8],
    /// The value (empty for a delete).
    pub value: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// An upsert of `key` to `value`.
    pub fn upsert(table: TableId, key: &'a [u8], value: &'a [u8]) -> RecordRef<'a> {
        RecordRef {
            table,
            op: Op::Upsert,
            key,
            value,
        }
    }

    /// A delete of `key`.
    pub fn delete(table: TableId, key: &'a [u8]) -> RecordRef<'a> {
        RecordRef {
            table,
            op: Op::Delete,
            key,
            value: &[],
        }
    }

    /// Bytes this record takes on the wire.
    pub fn wire_len(&self) -> usize {
        RECORD_HEADER_LEN + self.key.len() + self.value.len()
    }

    /// An owned copy.
    pub fn to_owned(&self) -> Record {
        Record {
            table: self.table,
            op: self.op,
            key: self.key.to_vec(),
            value: self.value.to_vec(),
        }
    }

    /// Checks the limits that hold whatever the message size.
    pub fn check(&self) -> Result<(), RecordError> {
        if self.key.len() > MAX_KEY_LEN {
            return Err(RecordError::KeyTooLong(self.key.len()));
        }
        if self.op == Op::Delete && !self.value.is_empty() {
            return Err(RecordError::DeleteWithValue);
        }
        if self.value.len() > usize::from(u16::MAX) {
            return Err(RecordError::TooLarge {
                len: self.wire_len(),
                max: usize::from(u16::MAX),
            });
        }
        Ok(())
    }

    /// Appends the wire form to `out` (the caller has checked the limits).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.table.0);
        out.push(self.op.to_wire());
        out.extend_from_slice(&(self.key.len() as u16).to_be_bytes());
        out.extend_from_slice(&(self.value.len() as u16).to_be_bytes());
        out.extend_from_slice(self.key);
        out.extend_from_slice(self.value);
    }

    /// Decodes one record at the start of `buf`; returns it and the bytes it took.
    pub(crate) fn decode(buf: &'a [u8]) -> Option<(RecordRef<'a>, usize)> {
        let head = buf.get(..RECORD_HEADER_LEN)?;
        let table = TableId(head[0]);
        let op = Op::from_wire(head[1])?;
        let key_len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let value_len = usize::from(u16::from_be_bytes([head[4], head[5]]));
        if key_len > MAX_KEY_LEN || (op == Op::Delete && value_len != 0) {
            return None;
        }
        let end = RECORD_HEADER_LEN + key_len + value_len;
        let body = buf.get(RECORD_HEADER_LEN..end)?;
        let (key, value) = body.split_at(key_len);
        Some((
            RecordRef {
                table,
                op,
                key,
                value,
            },
            end,
        ))
    }
}

/// An owned record: what a resync snapshot is made of.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Record {
    /// The table.
    pub table: TableId,
    /// Upsert or delete.
    pub op: Op,
    /// The key.
    pub key: Vec<u8>,
    /// The value (empty for a delete).
    pub value: Vec<u8>,
}

impl Record {
    /// An upsert of `key` to `value`.
    pub fn upsert(table: TableId, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Record {
        Record {
            table,
            op: Op::Upsert,
            key: key.into(),
            value: value.into(),
        }
    }

    /// A delete of `key`.
    pub fn delete(table: TableId, key: impl Into<Vec<u8>>) -> Record {
        Record {
            table,
            op: Op::Delete,
            key: key.into(),
            value: Vec::new(),
        }
    }

    /// The borrowed form.
    pub fn as_ref(&self) -> RecordRef<'_> {
        RecordRef {
            table: self.table,
            op: self.op,
            key: &self.key,
            value: &self.value,
        }
    }
}

/// Why a record cannot be published.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    /// The key is longer than [`MAX_KEY_LEN`].
    #[error("record key is {0} bytes, the limit is {MAX_KEY_LEN}")]
    KeyTooLong(usize),
    /// A delete must not carry a value.
    #[error("a delete record carries a value")]
    DeleteWithValue,
    /// The record does not fit in one message of the configured size.
    #[error("record takes {len} bytes, one message holds at most {max}: split the value")]
    TooLarge {
        /// Its wire length.
        len: usize,
        /// The most a message can hold.
        max: usize,
    },
}

/// The records of a validated Data or ResyncChunk payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Records<'a> {
    count: u16,
    bytes: &'a [u8],
}

impl<'a> Records<'a> {
    /// Validates `count` records filling `bytes` exactly.
    pub(crate) fn parse(count: u16, bytes: &'a [u8]) -> Option<Records<'a>> {
        let mut at = 0;
        for _ in 0..count {
            let (_, n) = RecordRef::decode(bytes.get(at..)?)?;
            at += n;
        }
        (at == bytes.len()).then_some(Records { count, bytes })
    }

    /// How many records.
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The records in order.
    pub fn iter(&self) -> RecordIter<'a> {
        RecordIter {
            left: self.count,
            bytes: self.bytes,
        }
    }
}

impl<'a> IntoIterator for Records<'a> {
    type Item = RecordRef<'a>;
    type IntoIter = RecordIter<'a>;
    fn into_iter(self) -> RecordIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Records`].
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    left: u16,
    bytes: &'a [u8],
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = RecordRef<'a>;
    fn next(&mut self) -> Option<RecordRef<'a>> {
        if self.left == 0 {
            return None;
        }
        // Validated by `Records::parse`, so this cannot fail; stop cleanly if it ever did.
        let (rec, n) = RecordRef::decode(self.bytes)?;
        self.bytes = &self.bytes[n..];
        self.left -= 1;
        Some(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode() {
        let mut out = Vec::new();
        let a = RecordRef::upsert(TableId::NAT_SESSION, b"k1", b"value");
        let b = RecordRef::delete(TableId::AFFINITY, b"k2");
        a.encode(&mut out);
        b.encode(&mut out);
        assert_eq!(out.len(), a.wire_len() + b.wire_len());
        let recs = Records::parse(2, &out).unwrap();
        assert_eq!(recs.iter().collect::<Vec<_>>(), vec![a, b]);
        // Count mismatch or trailing bytes are refused.
        assert!(Records::parse(1, &out).is_none());
        assert!(Records::parse(3, &out).is_none());
    }

    #[test]
    fn delete_with_value_refused() {
        let mut out = vec![1, 2, 0, 1, 0, 1, b'k', b'v'];
        assert!(Records::parse(1, &out).is_none());
        out[1] = 1;
        assert!(Records::parse(1, &out).is_some());
        assert_eq!(
            RecordRef {
                table: TableId(1),
                op: Op::Delete,
                key: b"k",
                value: b"v"
            }
            .check(),
            Err(RecordError::DeleteWithValue)
        );
    }
}
