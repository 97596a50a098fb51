//! Stream framing for a Unix stream socket (the pseudo-standby on the same node): each message
//! goes behind a 2-byte big-endian length, and [`Deframer`] cuts a byte stream back into
//! messages whatever the chunk boundaries.

use thiserror::Error;

/// Bytes of the length prefix.
pub const PREFIX_LEN: usize = 2;

/// A stream that cannot be cut into messages: the connection must be reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DeframeError {
    /// A length prefix of 0 or above the configured maximum.
    #[error("stream frame of {len} bytes, allowed 1..={max}")]
    BadLength {
        /// The declared length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// An earlier frame was bad; nothing after it can be trusted.
    #[error("stream framing was lost earlier; reset the connection")]
    Broken,
}

/// Writes `msg` with its length prefix to `out` (appending).
pub fn frame_into(msg: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    out.extend_from_slice(msg);
}

/// Reassembles length-prefixed messages from stream chunks.
#[derive(Debug, Clone)]
pub struct Deframer {
    buf: Vec<u8>,
    start: usize,
    max: usize,
    broken: bool,
}

impl Deframer {
    /// A deframer accepting messages of at most `max` bytes (at most 65535).
    pub fn new(max: usize) -> Deframer {
        Deframer {
            buf: Vec::new(),
            start: 0,
            max: max.min(usize::from(u16::MAX)),
            broken: false,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 4096 && self.start * 2 > self.buf.len() {
            // Drop consumed bytes once they dominate, so the buffer stays bounded.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete message, if there is one. After an error the stream is unusable and
    /// every later call returns the same error.
    pub fn next_frame(&mut self) -> Option<Result<&[u8], DeframeError>> {
        if self.broken {
            return Some(Err(DeframeError::Broken));
        }
        let rest = &self.buf[self.start..];
        let prefix = rest.get(..PREFIX_LEN)?;
        let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
        if len == 0 || len > self.max {
            self.broken = true;
            return Some(Err(DeframeError::BadLength { len, max: self.max }));
        }
        if rest.len() < PREFIX_LEN + len {
            return None;
        }
        let at = self.start + PREFIX_LEN;
        self.start = at + len;
        Some(Ok(&self.buf[at..at + len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_split() {
        let msgs: Vec<Vec<u8>> = (1..20u8).map(|n| vec![n; usize::from(n) * 7]).collect();
        let mut stream = Vec::new();
        for m in &msgs {
            frame_into(m, &mut stream);
        }
        for step in [1, 2, 3, 7, 64, 1000] {
            let mut d = Deframer::new(1500);
            let mut got = Vec::new();
            for chunk in stream.chunks(step) {
                d.push(chunk);
                while let Some(f) = d.next_frame() {
                    got.push(f.unwrap().to_vec());
                }
            }
            assert_eq!(got, msgs, "step {step}");
            assert_eq!(d.buffered(), 0);
        }
    }

    #[test]
    fn bad_length_sticks() {
        let mut d = Deframer::new(100);
        d.push(&[0, 101]);
        assert!(matches!(d.next_frame(), Some(Err(_))));
        d.push(&[0, 1, 5]);
        assert!(matches!(d.next_frame(), Some(Err(_))));
        let mut d = Deframer::new(100);
        d.push(&[0, 0]);
        assert!(matches!(d.next_frame(), Some(Err(_))));
    }
}
