//! Mirroring sessions to the backup worker (seed claims 7–9, 13): compact records, a bounded
//! outgoing queue, and the backup's shadow table.
//!
//! The owner of a VID records every session it creates, every TCP state change and every removal
//! as a 24-octet [`Record`] in its [`MirrorOut`] queue; the router moves the queued records in
//! batches (once per burst) to the backup of the record's VID, which applies them to its
//! [`Shadow`]. Packets that only refresh a session are not mirrored: on takeover the shadow
//! sessions start a fresh idle timer, so a session lives at most one timeout longer than it
//! would have.
//!
//! The queue is bounded: when the backup falls behind, further records are dropped and counted
//! (`overflow`), and the sessions they described would be lost on a failover. Records still in
//! the queue when the owner dies are lost the same way; the router flushes after every burst,
//! so that window is one burst.

use crate::hash::MixState;
use crate::session::SessionInfo;
use crate::vid::{Geometry, Vid};
use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

/// Octets of an encoded record.
pub const RECORD_LEN: usize = 24;

/// An encoded record, as it travels between workers.
pub type Wire = [u8; RECORD_LEN];

/// What happened to a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// Created (or sent in a snapshot).
    Created = 1,
    /// Its TCP state changed.
    State = 2,
    /// Removed (expired).
    Removed = 3,
}

/// One mirrored event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The event.
    pub kind: RecordKind,
    /// The session after it.
    pub info: SessionInfo,
}

impl Record {
    /// Encodes as: kind, protocol, TCP state, 0, inside address, inside port, outside port, pool
    /// address, remote address, remote port, two zero octets (all big-endian).
    pub fn encode(&self) -> Wire {
        let i = &self.info;
        let mut b = [0u8; RECORD_LEN];
        b[0] = self.kind as u8;
        b[1] = i.proto;
        b[2] = i.tcp;
        b[4..8].copy_from_slice(&i.inside_addr.octets());
        b[8..10].copy_from_slice(&i.inside_port.to_be_bytes());
        b[10..12].copy_from_slice(&i.outside_port.to_be_bytes());
        b[12..16].copy_from_slice(&i.pool_addr.octets());
        b[16..20].copy_from_slice(&i.remote_addr.octets());
        b[20..22].copy_from_slice(&i.remote_port.to_be_bytes());
        b
    }

    /// Decodes a record; `None` for an unknown kind or non-zero padding.
    pub fn decode(b: &Wire) -> Option<Record> {
        let kind = match b[0] {
            1 => RecordKind::Created,
            2 => RecordKind::State,
            3 => RecordKind::Removed,
            _ => return None,
        };
        if b[3] != 0 || b[22] != 0 || b[23] != 0 {
            return None;
        }
        let a = |at: usize| Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]);
        let p = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
        Some(Record {
            kind,
            info: SessionInfo {
                proto: b[1],
                tcp: b[2],
                inside_addr: a(4),
                inside_port: p(8),
                outside_port: p(10),
                pool_addr: a(12),
                remote_addr: a(16),
                remote_port: p(20),
            },
        })
    }
}

/// The owner's bounded queue of records not yet sent.
#[derive(Debug)]
pub struct MirrorOut {
    queue: VecDeque<Wire>,
    cap: usize,
    /// Records dropped because the queue was full.
    pub overflow: u64,
    /// Records queued.
    pub queued: u64,
}

impl MirrorOut {
    /// A queue of `cap` records, preallocated.
    pub fn new(cap: usize) -> MirrorOut {
        MirrorOut {
            queue: VecDeque::with_capacity(cap),
            cap,
            overflow: 0,
            queued: 0,
        }
    }

    /// Queues a record; false (and counted) when full.
    #[inline]
    pub fn push(&mut self, r: Record) -> bool {
        if self.queue.len() >= self.cap {
            self.overflow += 1;
            return false;
        }
        self.queue.push_back(r.encode());
        self.queued += 1;
        true
    }

    /// Moves up to `max` records into `out` (one batch); returns how many.
    pub fn poll_batch(&mut self, out: &mut Vec<Wire>, max: usize) -> usize {
        let n = self.queue.len().min(max);
        out.extend(self.queue.drain(..n));
        n
    }

    /// Records waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// A backup's copies of other workers' sessions, keyed by their outside tuple.
#[derive(Debug)]
pub struct Shadow {
    sessions: HashMap<u128, SessionInfo, MixState>,
    /// Records that did not decode.
    pub bad_records: u64,
}

impl Shadow {
    /// An empty shadow with room for `cap` sessions, hashing with `seed` (deterministic, unlike
    /// std's randomly keyed default).
    pub fn new(cap: usize, seed: u64) -> Shadow {
        Shadow {
            sessions: HashMap::with_capacity_and_hasher(cap, MixState::new(seed)),
            bad_records: 0,
        }
    }

    /// Applies a batch of records in order.
    pub fn apply(&mut self, batch: &[Wire]) {
        for w in batch {
            match Record::decode(w) {
                Some(r) => self.apply_one(&r),
                None => self.bad_records += 1,
            }
        }
    }

    /// Applies one record.
    pub fn apply_one(&mut self, r: &Record) {
        let k = r.info.outside_key();
        match r.kind {
            RecordKind::Created | RecordKind::State => {
                self.sessions.insert(k, r.info);
            }
            RecordKind::Removed => {
                self.sessions.remove(&k);
            }
        }
    }

    /// Removes and returns (into `out`) every shadow session of `vid`, for a takeover.
    pub fn take_vid(&mut self, vid: Vid, g: &Geometry, out: &mut Vec<SessionInfo>) {
        self.sessions.retain(|_, s| {
            if g.vid_of_port(s.outside_port) == Some(vid) {
                out.push(*s);
                false
            } else {
                true
            }
        });
    }

    /// Forgets every shadow session of `vid` (this worker is no longer its backup).
    pub fn forget_vid(&mut self, vid: Vid, g: &Geometry) {
        self.sessions
            .retain(|_, s| g.vid_of_port(s.outside_port) != Some(vid));
    }

    /// Shadow sessions held.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(port: u16) -> SessionInfo {
        SessionInfo {
            proto: 6,
            tcp: 3,
            inside_addr: Ipv4Addr::new(10, 0, 0, 1),
            inside_port: 40000,
            pool_addr: Ipv4Addr::new(192, 0, 2, 1),
            outside_port: port,
            remote_addr: Ipv4Addr::new(198, 51, 100, 1),
            remote_port: 443,
        }
    }

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let r = Record {
            kind: RecordKind::State,
            info: info(5000),
        };
        let w = r.encode();
        assert_eq!(Record::decode(&w), Some(r));
        let mut bad = w;
        bad[0] = 9;
        assert_eq!(Record::decode(&bad), None);
        let mut bad = w;
        bad[23] = 1;
        assert_eq!(Record::decode(&bad), None);
    }

    #[test]
    fn bounded_queue_counts_overflow() {
        let mut q = MirrorOut::new(2);
        for p in 0..3 {
            q.push(Record {
                kind: RecordKind::Created,
                info: info(p),
            });
        }
        assert_eq!((q.len(), q.overflow), (2, 1));
        let mut out = Vec::new();
        assert_eq!(q.poll_batch(&mut out, 1), 1);
        assert_eq!(q.poll_batch(&mut out, 10), 1);
        assert!(q.is_empty());
    }

    #[test]
    fn shadow_follows_records_and_hands_over_by_vid() {
        let g = Geometry::new(1024, 65535, 2);
        let mut s = Shadow::new(16, 3);
        let a = info(1024 + 10); // VID 0
        let b = info(1024 + 8192 + 10); // VID 1
        let rec = |kind, info| Record { kind, info }.encode();
        s.apply(&[
            rec(RecordKind::Created, a),
            rec(RecordKind::Created, b),
            rec(RecordKind::Removed, b),
            rec(RecordKind::Created, b),
            [0; RECORD_LEN],
        ]);
        assert_eq!((s.len(), s.bad_records), (2, 1));
        let mut out = Vec::new();
        s.take_vid(0, &g, &mut out);
        assert_eq!(out, vec![a]);
        s.forget_vid(1, &g);
        assert!(s.is_empty());
    }
}
