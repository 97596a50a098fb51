//! Fuzzing oracles, shared by the cargo-fuzz target `hasync_handle` in `../fuzz` and by a stable
//! test that replays its corpus. Built only for tests and with the `fuzzing` feature.
//!
//! The input is a list of steps (`len u8, mode u8, bytes`): raw bytes as a received datagram,
//! bytes sealed with the right key (so hostile but authentic headers and payloads reach the
//! stream logic past the HMAC), bytes through the stream deframer, a record published by the
//! legitimate peer, or time passing with both ends exchanging what they send. After every step
//! the replica's running digests must equal digests recomputed from its contents. Any panic is a
//! finding.

use std::time::{Duration, Instant};

use crate::endpoint::{Config, Endpoint, Reject};
use crate::record::{RecordRef, TableId};
use crate::replica::{Digests, Replica};
use crate::wire::{parse_body, Auth, Header, Kind, FLAG_ACK};
use crate::Deframer;

/// The key both fuzzed endpoints share.
pub const FUZZ_KEY: &[u8] = b"hasync-fuzzing-key-0123456789abc";

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..) {
        let n = s.len().min(8);
        a[..n].copy_from_slice(&s[..n]);
    }
    u64::from_be_bytes(a)
}

fn recomputed(r: &Replica) -> Digests {
    let mut d = Digests::default();
    for t in r.tables() {
        for (k, v) in r.iter(t) {
            d.add(t, k, v);
        }
    }
    d
}

/// Runs the steps in `data` against an endpoint and its legitimate peer.
pub fn fuzz_handle(data: &[u8]) {
    let start = Instant::now();
    let (Ok(mut local), Ok(mut peer)) = (
        Endpoint::new(Config::new(2, 1, 50, FUZZ_KEY), start),
        Endpoint::new(Config::new(1, 2, 40, FUZZ_KEY), start),
    ) else {
        panic!("fuzzing configs are valid");
    };
    let auth = Auth::new(FUZZ_KEY, 16);
    let mut deframer = Deframer::new(local.config().max_message);
    let mut now = start;
    let mut buf = Vec::new();
    let mut rest = data;
    while let [len, mode, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (bytes, next) = tail.split_at(n);
        rest = next;
        match mode % 5 {
            0 => {
                let _ = local.handle(bytes, now);
            }
            1 => {
                // Authentic: header fields from the input, sealed with the shared key.
                let Some(kind) = Kind::from_wire(1 + bytes.first().copied().unwrap_or(0) % 9)
                else {
                    continue;
                };
                let h = Header {
                    kind,
                    flags: bytes.get(1).copied().unwrap_or(0) & FLAG_ACK,
                    tag_len: 16,
                    sender: 1,
                    epoch: 40 + u64_at(bytes, 2) % 3,
                    packet: u64_at(bytes, 3) % 4096,
                    floor: u64_at(bytes, 4) % 64,
                    next_seq: u64_at(bytes, 5) % 128,
                    peer_epoch: if bytes.get(6).copied().unwrap_or(0) & 1 == 1 {
                        50
                    } else {
                        0
                    },
                    ack: u64_at(bytes, 7) % 128,
                };
                let payload = bytes.get(15..).unwrap_or(&[]);
                auth.seal(&h, payload, &mut buf);
                let r = local.handle(&buf, now);
                assert_ne!(
                    r,
                    Err(Reject::Forged),
                    "a correctly sealed message was refused"
                );
                if parse_body(kind, payload).is_err() {
                    assert!(r.is_err(), "an unparsable payload was accepted");
                }
            }
            2 => {
                deframer.push(bytes);
                while let Some(Ok(frame)) = deframer.next_frame() {
                    let _ = local.handle(frame, now);
                }
            }
            3 => {
                let table = TableId(bytes.first().copied().unwrap_or(0) % 4);
                let (key, value) = bytes
                    .get(1..)
                    .unwrap_or(&[])
                    .split_at(n.saturating_sub(1) / 2);
                let rec = if value.first().is_some_and(|b| b & 1 == 1) {
                    RecordRef::delete(table, key)
                } else {
                    RecordRef::upsert(table, key, value)
                };
                let _ = peer.publish(rec);
            }
            _ => {
                now += Duration::from_millis(u64::from(bytes.first().copied().unwrap_or(1)));
                peer.on_tick(now);
                local.on_tick(now);
                for _ in 0..64 {
                    let mut moved = false;
                    if peer.poll_transmit(now, &mut buf) {
                        let _ = local.handle(&buf, now);
                        moved = true;
                    }
                    if local.poll_transmit(now, &mut buf) {
                        let _ = peer.handle(&buf, now);
                        moved = true;
                    }
                    while let Some(ev) = peer.poll_event() {
                        if let crate::Event::SnapshotNeeded { .. } = ev {
                            peer.start_resync(Vec::new(), now);
                        }
                    }
                    if !moved {
                        break;
                    }
                }
            }
        }
        while local.poll_event().is_some() {}
        assert_eq!(
            local.replica().digests(),
            recomputed(local.replica()),
            "running digests drifted from the replica's contents"
        );
    }
}
