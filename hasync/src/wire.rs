//! Message framing and authentication.
//!
//! ```text
//! off len field
//!  0   4  magic "SWHA"
//!  4   1  version (1)
//!  5   1  kind (Kind)
//!  6   1  flags: bit 0 = the ack fields are valid; other bits must be 0
//!  7   1  tag length (16..=32; must equal the receiver's configured length)
//!  8   4  sender id
//! 12   8  epoch: chosen by the sender at start, larger after every restart
//! 20   8  packet number: fresh for every message sent, resends included (anti-replay)
//! 28   8  floor: lowest sequence number the sender can still resend
//! 36   8  next sequence: every sequenced message below it has been sent
//! 44   8  peer epoch: the epoch of the peer's stream that `ack` refers to
//! 52   8  ack: cumulative, the next sequence number expected from the peer
//! 60   2  payload length
//! 62      payload (by kind)
//!  …      tag: HMAC-SHA256 over everything before it, truncated to the tag length
//! ```
//!
//! All integers are big-endian. Sequenced kinds (Data, ResyncBegin/Chunk/End) start their payload
//! with their 8-byte sequence number.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::record::Records;

/// "SWHA".
pub const MAGIC: [u8; 4] = *b"SWHA";
/// The one version this crate speaks.
pub const VERSION: u8 = 1;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 62;
/// Shortest tag accepted (HMAC-SHA256-128, as RFC 4868 truncates it).
pub const MIN_TAG_LEN: usize = 16;
/// Longest tag (the whole HMAC-SHA256).
pub const MAX_TAG_LEN: usize = 32;
/// Header flag: `peer_epoch` and `ack` are valid.
pub const FLAG_ACK: u8 = 1;
/// Bytes of one NACK range.
pub const NACK_RANGE_LEN: usize = 16;

/// Message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Sent at start: "I am here with this epoch; answer at once".
    Hello = 1,
    /// Liveness and stream position (tail-loss detection); answered with an ack.
    Heartbeat = 2,
    /// Header only: the ack fields.
    Ack = 3,
    /// Gap ranges the receiver is missing.
    Nack = 4,
    /// Sequenced: live records.
    Data = 5,
    /// The receiver wants the whole state.
    ResyncRequest = 6,
    /// Sequenced: a bulk resync starts (its id and record total).
    ResyncBegin = 7,
    /// Sequenced: snapshot records with progress.
    ResyncChunk = 8,
    /// Sequenced: the snapshot is complete.
    ResyncEnd = 9,
}

impl Kind {
    /// Parses the wire byte.
    pub fn from_wire(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Heartbeat,
            3 => Kind::Ack,
            4 => Kind::Nack,
            5 => Kind::Data,
            6 => Kind::ResyncRequest,
            7 => Kind::ResyncBegin,
            8 => Kind::ResyncChunk,
            9 => Kind::ResyncEnd,
            _ => return None,
        })
    }

    /// True for the kinds delivered reliably and in order.
    pub fn is_sequenced(self) -> bool {
        matches!(
            self,
            Kind::Data | Kind::ResyncBegin | Kind::ResyncChunk | Kind::ResyncEnd
        )
    }
}

/// The fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message type.
    pub kind: Kind,
    /// Flags ([`FLAG_ACK`]).
    pub flags: u8,
    /// Tag length in bytes.
    pub tag_len: u8,
    /// Sender id.
    pub sender: u32,
    /// Sender's epoch.
    pub epoch: u64,
    /// Packet number (anti-replay).
    pub packet: u64,
    /// Lowest sequence the sender can still resend.
    pub floor: u64,
    /// Next sequence the sender will assign.
    pub next_seq: u64,
    /// Epoch of the peer stream `ack` refers to.
    pub peer_epoch: u64,
    /// Cumulative ack: next sequence expected from the peer.
    pub ack: u64,
}

impl Header {
    fn write(&self, payload_len: u16, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.kind as u8);
        out.push(self.flags);
        out.push(self.tag_len);
        out.extend_from_slice(&self.sender.to_be_bytes());
        for v in [
            self.epoch,
            self.packet,
            self.floor,
            self.next_seq,
            self.peer_epoch,
            self.ack,
        ] {
            out.extend_from_slice(&v.to_be_bytes());
        }
        out.extend_from_slice(&payload_len.to_be_bytes());
    }
}

/// Why bytes are not a message (before authentication).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than the header, or than the lengths it declares, or longer.
    Length,
    /// Wrong magic.
    Magic,
    /// Unknown version.
    Version,
    /// Unknown kind.
    Kind,
    /// Reserved flag bits set.
    Flags,
    /// Tag length outside 16..=32.
    TagLen,
    /// The payload does not match its kind.
    Payload,
}

/// A framed message, header parsed, not yet authenticated.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The header.
    pub header: Header,
    /// Header and payload: what the tag covers.
    pub signed: &'a [u8],
    /// The payload.
    pub payload: &'a [u8],
    /// The tag.
    pub tag: &'a [u8],
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// Splits `buf` (exactly one message) into header, payload and tag.
pub fn parse_frame(buf: &[u8]) -> Result<Frame<'_>, ParseError> {
    let h = buf.get(..HEADER_LEN).ok_or(ParseError::Length)?;
    if h[0..4] != MAGIC {
        return Err(ParseError::Magic);
    }
    if h[4] != VERSION {
        return Err(ParseError::Version);
    }
    let kind = Kind::from_wire(h[5]).ok_or(ParseError::Kind)?;
    let flags = h[6];
    if flags & !FLAG_ACK != 0 {
        return Err(ParseError::Flags);
    }
    let tag_len = h[7];
    if !(MIN_TAG_LEN..=MAX_TAG_LEN).contains(&usize::from(tag_len)) {
        return Err(ParseError::TagLen);
    }
    let payload_len = usize::from(u16::from_be_bytes([h[60], h[61]]));
    let signed_len = HEADER_LEN + payload_len;
    if buf.len() != signed_len + usize::from(tag_len) {
        return Err(ParseError::Length);
    }
    let header = Header {
        kind,
        flags,
        tag_len,
        sender: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
        epoch: be64(h, 12),
        packet: be64(h, 20),
        floor: be64(h, 28),
        next_seq: be64(h, 36),
        peer_epoch: be64(h, 44),
        ack: be64(h, 52),
    };
    Ok(Frame {
        header,
        signed: &buf[..signed_len],
        payload: &buf[HEADER_LEN..signed_len],
        tag: &buf[signed_len..],
    })
}

/// A decoded payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body<'a> {
    /// Hello.
    Hello,
    /// Heartbeat.
    Heartbeat,
    /// Ack (the header's ack fields).
    Ack,
    /// Missing ranges, each `[from, to)`.
    Nack(NackRanges<'a>),
    /// Live records.
    Data {
        /// Sequence number.
        seq: u64,
        /// The records.
        records: Records<'a>,
    },
    /// Please resync; `from_seq` is where the requester's stream position is.
    ResyncRequest {
        /// The requester's next expected sequence: a resync begun at or after it satisfies it.
        from_seq: u64,
    },
    /// A resync starts.
    ResyncBegin {
        /// Sequence number.
        seq: u64,
        /// The resync's id.
        resync_id: u32,
        /// Records the snapshot holds.
        total: u64,
    },
    /// Snapshot records.
    ResyncChunk {
        /// Sequence number.
        seq: u64,
        /// The resync's id.
        resync_id: u32,
        /// Records sent so far, these included (progress).
        sent: u64,
        /// The records.
        records: Records<'a>,
    },
    /// The snapshot is complete.
    ResyncEnd {
        /// Sequence number.
        seq: u64,
        /// The resync's id.
        resync_id: u32,
        /// Records sent in all.
        total: u64,
    },
}

impl Body<'_> {
    /// The sequence number of a sequenced body.
    pub fn seq(&self) -> Option<u64> {
        match *self {
            Body::Data { seq, .. }
            | Body::ResyncBegin { seq, .. }
            | Body::ResyncChunk { seq, .. }
            | Body::ResyncEnd { seq, .. } => Some(seq),
            _ => None,
        }
    }
}

/// NACK ranges, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NackRanges<'a>(&'a [u8]);

impl<'a> NackRanges<'a> {
    /// The ranges `[from, to)` in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        self.0
            .chunks_exact(NACK_RANGE_LEN)
            .map(|c| (be64(c, 0), be64(c, 8)))
    }
}

/// Decodes a payload of `kind`; the whole payload must be used.
pub fn parse_body(kind: Kind, p: &[u8]) -> Result<Body<'_>, ParseError> {
    let bad = ParseError::Payload;
    let u32_at = |at: usize| -> Result<u32, ParseError> {
        let b = p.get(at..at + 4).ok_or(bad)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| -> Result<u64, ParseError> {
        p.get(at..at + 8).ok_or(bad)?;
        Ok(be64(p, at))
    };
    let exact = |n: usize| if p.len() == n { Ok(()) } else { Err(bad) };
    let records_at = |at: usize| -> Result<Records<'_>, ParseError> {
        let c = p.get(at..at + 2).ok_or(bad)?;
        Records::parse(u16::from_be_bytes([c[0], c[1]]), &p[at + 2..]).ok_or(bad)
    };
    Ok(match kind {
        Kind::Hello => exact(0).map(|_| Body::Hello)?,
        Kind::Heartbeat => exact(0).map(|_| Body::Heartbeat)?,
        Kind::Ack => exact(0).map(|_| Body::Ack)?,
        Kind::Nack => {
            if p.is_empty() || p.len() % NACK_RANGE_LEN != 0 {
                return Err(bad);
            }
            let ranges = NackRanges(p);
            if ranges.iter().any(|(from, to)| from >= to) {
                return Err(bad);
            }
            Body::Nack(ranges)
        }
        Kind::Data => Body::Data {
            seq: u64_at(0)?,
            records: records_at(8)?,
        },
        Kind::ResyncRequest => {
            exact(8)?;
            Body::ResyncRequest {
                from_seq: u64_at(0)?,
            }
        }
        Kind::ResyncBegin | Kind::ResyncEnd => {
            exact(20)?;
            let (seq, resync_id, total) = (u64_at(0)?, u32_at(8)?, u64_at(12)?);
            if kind == Kind::ResyncBegin {
                Body::ResyncBegin {
                    seq,
                    resync_id,
                    total,
                }
            } else {
                Body::ResyncEnd {
                    seq,
                    resync_id,
                    total,
                }
            }
        }
        Kind::ResyncChunk => Body::ResyncChunk {
            seq: u64_at(0)?,
            resync_id: u32_at(8)?,
            sent: u64_at(12)?,
            records: records_at(20)?,
        },
    })
}

/// Appends the payload of a body to `out` (its inverse is [`parse_body`]).
pub fn encode_body(body: &Body<'_>, out: &mut Vec<u8>) {
    match *body {
        Body::Hello | Body::Heartbeat | Body::Ack => {}
        Body::Nack(r) => out.extend_from_slice(r.0),
        Body::Data { seq, records } => {
            out.extend_from_slice(&seq.to_be_bytes());
            push_records(records, out);
        }
        Body::ResyncRequest { from_seq } => out.extend_from_slice(&from_seq.to_be_bytes()),
        Body::ResyncBegin {
            seq,
            resync_id,
            total,
        }
        | Body::ResyncEnd {
            seq,
            resync_id,
            total,
        } => {
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&resync_id.to_be_bytes());
            out.extend_from_slice(&total.to_be_bytes());
        }
        Body::ResyncChunk {
            seq,
            resync_id,
            sent,
            records,
        } => {
            out.extend_from_slice(&seq.to_be_bytes());
            out.extend_from_slice(&resync_id.to_be_bytes());
            out.extend_from_slice(&sent.to_be_bytes());
            push_records(records, out);
        }
    }
}

fn push_records(records: Records<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    for r in records.iter() {
        r.encode(out);
    }
}

/// Appends NACK range `[from, to)` to a NACK payload under construction.
pub fn push_nack_range(from: u64, to: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(&from.to_be_bytes());
    out.extend_from_slice(&to.to_be_bytes());
}

/// HMAC-SHA256 with the shared key, keyed once and cloned per message (no allocation).
#[derive(Clone)]
pub struct Auth {
    mac: Hmac<Sha256>,
    tag_len: usize,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("Auth")
            .field("tag_len", &self.tag_len)
            .finish()
    }
}

impl Auth {
    /// Keys the MAC; `tag_len` must be within 16..=32 (checked by the config).
    pub fn new(key: &[u8], tag_len: usize) -> Auth {
        // HMAC takes keys of any length, so this cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        Auth {
            mac,
            tag_len: tag_len.clamp(MIN_TAG_LEN, MAX_TAG_LEN),
        }
    }

    /// The tag length this key signs with.
    pub fn tag_len(&self) -> usize {
        self.tag_len
    }

    /// Appends header, payload and tag to `out` (cleared first).
    pub fn seal(&self, header: &Header, payload: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let mut h = *header;
        h.tag_len = self.tag_len as u8;
        h.write(payload.len() as u16, out);
        out.extend_from_slice(payload);
        let mut mac = self.mac.clone();
        mac.update(out);
        let tag = mac.finalize().into_bytes();
        out.extend_from_slice(&tag[..self.tag_len]);
    }

    /// Constant-time check of a frame's tag.
    pub fn verify(&self, frame: &Frame<'_>) -> bool {
        if frame.tag.len() != self.tag_len {
            return false;
        }
        let mut mac = self.mac.clone();
        mac.update(frame.signed);
        mac.verify_truncated_left(frame.tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: Kind) -> Header {
        Header {
            kind,
            flags: FLAG_ACK,
            tag_len: 16,
            sender: 7,
            epoch: 99,
            packet: 1,
            floor: 2,
            next_seq: 3,
            peer_epoch: 4,
            ack: 5,
        }
    }

    #[test]
    fn seal_parse_verify() {
        let auth = Auth::new(b"0123456789abcdef", 16);
        let mut payload = Vec::new();
        encode_body(
            &Body::ResyncBegin {
                seq: 10,
                resync_id: 2,
                total: 1000,
            },
            &mut payload,
        );
        let mut out = Vec::new();
        auth.seal(&header(Kind::ResyncBegin), &payload, &mut out);
        assert_eq!(out.len(), HEADER_LEN + 20 + 16);
        let f = parse_frame(&out).unwrap();
        assert_eq!(f.header, header(Kind::ResyncBegin));
        assert!(auth.verify(&f));
        assert_eq!(
            parse_body(f.header.kind, f.payload).unwrap(),
            Body::ResyncBegin {
                seq: 10,
                resync_id: 2,
                total: 1000
            }
        );
        // Another key, or one flipped bit anywhere, fails verification.
        assert!(!Auth::new(b"0123456789abcdeX", 16).verify(&f));
        for i in 0..out.len() {
            let mut bad = out.clone();
            bad[i] ^= 0x10;
            if let Ok(f) = parse_frame(&bad) {
                assert!(!auth.verify(&f), "flipped byte {i} still verifies");
            }
        }
    }

    #[test]
    fn rejects_bad_framing() {
        let auth = Auth::new(b"0123456789abcdef", 16);
        let mut out = Vec::new();
        auth.seal(&header(Kind::Ack), &[], &mut out);
        assert!(parse_frame(&out).is_ok());
        assert_eq!(
            parse_frame(&out[..out.len() - 1]).unwrap_err(),
            ParseError::Length
        );
        let mut x = out.clone();
        x.push(0);
        assert_eq!(parse_frame(&x).unwrap_err(), ParseError::Length);
        let mut x = out.clone();
        x[6] = 2;
        assert_eq!(parse_frame(&x).unwrap_err(), ParseError::Flags);
        let mut x = out.clone();
        x[5] = 0;
        assert_eq!(parse_frame(&x).unwrap_err(), ParseError::Kind);
        assert_eq!(parse_body(Kind::Ack, &[0]), Err(ParseError::Payload));
        assert_eq!(parse_body(Kind::Nack, &[]), Err(ParseError::Payload));
        let mut r = Vec::new();
        push_nack_range(5, 5, &mut r);
        assert_eq!(parse_body(Kind::Nack, &r), Err(ParseError::Payload));
    }
}
