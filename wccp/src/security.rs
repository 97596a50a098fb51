//! MD5 message security (reference §3.1; identical in \[W\], \[R1\], Squid and ATS).
//!
//! digest = MD5(password truncated or NUL-padded to 8 octets ‖ the whole message from the
//! first header octet to header+Length, with the 16 digest octets zeroed). Signing writes
//! that digest into the first Security Info component; verifying recomputes and compares.
//! Both work on encoded bytes, so what is signed is exactly what is sent, and verification
//! can run before the (more expensive) full decode.

use crate::error::{Error, LengthProblem};
use crate::wire::codec::{self, PResult};
use crate::wire::{ComponentType, Header, Message, SecurityInfo, SecurityOption, HEADER_LEN};

/// Octets of the MD5 digest.
pub const DIGEST_LEN: usize = 16;

/// A WCCP password: the configured string truncated or NUL-padded to 8 octets.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Password([u8; 8]);

impl Password {
    /// Truncates or pads `secret` to 8 octets (reference §3.1).
    pub fn new(secret: &[u8]) -> Self {
        let mut p = [0u8; 8];
        for (slot, b) in p.iter_mut().zip(secret) {
            *slot = *b;
        }
        Self(p)
    }

    /// The 8 octets fed to MD5.
    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl core::fmt::Debug for Password {
    // Never print the secret into logs.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Password(..)")
    }
}

/// A service group's configured security.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Security {
    /// Option 0: no security.
    #[default]
    None,
    /// Option 1: MD5 with this password.
    Md5(Password),
}

impl Security {
    /// The configured option.
    pub fn option(&self) -> SecurityOption {
        match self {
            Self::None => SecurityOption::None,
            Self::Md5(_) => SecurityOption::Md5,
        }
    }

    /// The Security Info component to put in outgoing messages (MD5: zero digest, filled in
    /// by [`Self::sign`]).
    pub fn component(&self) -> SecurityInfo {
        match self {
            Self::None => SecurityInfo::None,
            Self::Md5(_) => SecurityInfo::Md5 {
                digest: [0; DIGEST_LEN],
            },
        }
    }

    /// Encodes `message` with this security: its first Security Info is replaced (or one is
    /// inserted first), then the message is signed.
    pub fn encode(&self, message: &Message) -> Result<Vec<u8>, Error> {
        let mut m = message.clone();
        m.set_security(self.component());
        let mut out = m.encode()?;
        self.sign(&mut out)?;
        Ok(out)
    }

    /// Signs an encoded message in place (no-op for option 0). The message's own security
    /// option must equal the configured one.
    pub fn sign(&self, message: &mut [u8]) -> Result<(), Error> {
        let (len, found) = locate(message)?;
        self.check_option(found.option)?;
        let Self::Md5(password) = self else {
            return Ok(());
        };
        let Some(digest_at) = found.digest_at else {
            return Ok(());
        };
        let Some(msg) = message.get_mut(..len) else {
            return Err(Error::Truncated {
                need: len,
                have: message.len(),
                at: 0,
            });
        };
        let digest = md5_digest(password, msg, digest_at);
        if let Some(slot) = msg.get_mut(digest_at..digest_at + DIGEST_LEN) {
            slot.copy_from_slice(&digest);
        }
        Ok(())
    }

    /// Verifies a received datagram: the option must match the configured one and, for MD5,
    /// the digest over header+Length (octets after it are not covered, §2) must match.
    pub fn verify(&self, datagram: &[u8]) -> Result<(), Error> {
        let (len, found) = locate(datagram)?;
        self.check_option(found.option)?;
        let (Self::Md5(password), Some(digest_at)) = (self, found.digest_at) else {
            return Ok(());
        };
        let msg = datagram.get(..len).unwrap_or(datagram);
        let expected = md5_digest(password, msg, digest_at);
        let carried = msg.get(digest_at..digest_at + DIGEST_LEN).unwrap_or(&[]);
        // Compare without an early exit (cheap, and avoids a timing oracle on the digest).
        let diff = expected
            .iter()
            .zip(carried)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 && carried.len() == DIGEST_LEN {
            Ok(())
        } else {
            Err(Error::Md5Mismatch)
        }
    }

    /// Reference §3.1: a packet whose option differs from the configured one is discarded.
    fn check_option(&self, found: SecurityOption) -> Result<(), Error> {
        if found == self.option() {
            Ok(())
        } else {
            Err(Error::SecurityMismatch {
                expected: self.option(),
                found,
            })
        }
    }
}

/// MD5 over `password ‖ message` with the 16 octets at `digest_at` taken as zero.
pub fn md5_digest(password: &Password, message: &[u8], digest_at: usize) -> [u8; DIGEST_LEN] {
    let mut ctx = md5::Context::new();
    ctx.consume(password.as_bytes());
    let end = digest_at.saturating_add(DIGEST_LEN).min(message.len());
    let start = digest_at.min(end);
    ctx.consume(message.get(..start).unwrap_or(&[]));
    ctx.consume(&[0u8; DIGEST_LEN][..end - start]);
    ctx.consume(message.get(end..).unwrap_or(&[]));
    ctx.compute().0
}

/// The first Security Info of an encoded message.
struct Found {
    /// Its option.
    option: SecurityOption,
    /// Offset of the MD5 digest, for option 1 with a 16-octet digest.
    digest_at: Option<usize>,
}

/// Walks the component framing of an encoded message (header+Length only) to its first
/// Security Info; returns the message length and what was found.
fn locate(buf: &[u8]) -> Result<(usize, Found), Error> {
    let header = Header::decode(buf)?;
    let len = HEADER_LEN + usize::from(header.length);
    let Some(body) = buf.get(HEADER_LEN..len) else {
        return Err(Error::Truncated {
            need: usize::from(header.length),
            have: buf.len().saturating_sub(HEADER_LEN),
            at: HEADER_LEN,
        });
    };
    let mut rest = body;
    while !rest.is_empty() {
        let (next, (kind, option)) = codec::finish(buf, frame(rest))?;
        if kind == u16::from(ComponentType::SecurityInfo) {
            let at = codec::offset(buf, rest);
            let body_len = rest.len() - next.len() - 4;
            let option = SecurityOption::from(option.unwrap_or(0));
            let digest_at = if option != SecurityOption::Md5 {
                None
            } else if body_len == 4 + DIGEST_LEN {
                Some(at + SecurityInfo::DIGEST_OFFSET)
            } else {
                // An MD5 option without exactly its digest is malformed (§3.1: Length 20).
                return Err(Error::BadComponentLength {
                    component: ComponentType::SecurityInfo,
                    length: u16::try_from(body_len).unwrap_or(u16::MAX),
                    at,
                    problem: LengthProblem::WrongSize {
                        expected: "20 for option 1 (MD5)",
                    },
                });
            };
            return Ok((len, Found { option, digest_at }));
        }
        rest = next;
    }
    Err(Error::MissingComponent {
        message: header.kind,
        component: ComponentType::SecurityInfo,
    })
}

/// One component's framing: type and, when the body has one, its first u32 (the option).
fn frame(i: &[u8]) -> PResult<'_, (u16, Option<u32>)> {
    if i.len() < 4 {
        return codec::truncated(i, 4);
    }
    let (rest, kind) = codec::u16(i)?;
    let (rest, length) = codec::u16(rest)?;
    if usize::from(length) > rest.len() || length % 4 != 0 {
        let problem = if length % 4 != 0 {
            LengthProblem::NotMultipleOfFour
        } else {
            LengthProblem::PastEnd {
                available: rest.len(),
            }
        };
        return codec::fail(
            i,
            Error::BadComponentLength {
                component: ComponentType::from(kind),
                length,
                at: 0,
                problem,
            },
        );
    }
    let (rest, body) = codec::take(usize::from(length))(rest)?;
    let option = codec::u32(body).ok().map(|(_, o)| o);
    Ok((rest, (kind, option)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference §10: Squid-style HERE_I_AM, MD5 password `secret`, 160 octets.
    const VECTOR: [u8; 160] = [
        0x00, 0x00, 0x00, 0x0a, 0x02, 0x00, 0x00, 0x98, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00,
        0x01, 0xb4, 0x2f, 0x34, 0xbb, 0x17, 0x36, 0x0c, 0xcb, 0x5b, 0x48, 0x4b, 0x7d, 0x09, 0x87,
        0x74, 0x9e, 0x00, 0x01, 0x00, 0x18, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x03, 0x00, 0x2c, 0x0a, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x27,
        0x10, 0x00, 0x00, 0x00, 0x05, 0x00, 0x14, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01,
        0x0a, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00,
        0x18, 0x00, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01,
    ];

    #[test]
    fn password_is_truncated_and_padded() {
        assert_eq!(Password::new(b"secret").as_bytes(), b"secret\0\0");
        assert_eq!(Password::new(b"abcdefghij").as_bytes(), b"abcdefgh");
        assert_eq!(format!("{:?}", Password::new(b"secret")), "Password(..)");
    }

    #[test]
    fn reference_vector_verifies_and_re_signs() {
        let sec = Security::Md5(Password::new(b"secret"));
        sec.verify(&VECTOR).unwrap();
        assert_eq!(
            Security::Md5(Password::new(b"wrong")).verify(&VECTOR),
            Err(Error::Md5Mismatch)
        );
        assert_eq!(
            Security::None.verify(&VECTOR),
            Err(Error::SecurityMismatch {
                expected: SecurityOption::None,
                found: SecurityOption::Md5
            })
        );
        let mut copy = VECTOR;
        copy[16..32].fill(0);
        sec.sign(&mut copy).unwrap();
        assert_eq!(copy, VECTOR);
        // Through the message layer: decode, re-encode with the configured security.
        let m = Message::decode(&VECTOR).unwrap();
        assert_eq!(sec.encode(&m).unwrap(), VECTOR);
    }

    #[test]
    fn verification_covers_header_plus_length_only() {
        let sec = Security::Md5(Password::new(b"secret"));
        let mut padded = VECTOR.to_vec();
        padded.extend_from_slice(&[0xa5; 4]);
        sec.verify(&padded).unwrap();
        let mut tampered = VECTOR;
        tampered[100] ^= 1;
        assert_eq!(sec.verify(&tampered), Err(Error::Md5Mismatch));
    }

    #[test]
    fn unsigned_vector_variant() {
        // §10: "Same message with no security: Length 136, security component 0000 0004 0".
        let mut plain = VECTOR[..8].to_vec();
        plain[7] = 136;
        plain.extend_from_slice(&[0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00]);
        plain.extend_from_slice(&VECTOR[32..]);
        Security::None.verify(&plain).unwrap();
        let m = Message::decode(&plain).unwrap();
        assert_eq!(Security::None.encode(&m).unwrap(), plain);
        let signed = Security::Md5(Password::new(b"secret")).encode(&m).unwrap();
        assert_eq!(signed, VECTOR);
    }

    #[test]
    fn every_prefix_fails_cleanly() {
        let sec = Security::Md5(Password::new(b"secret"));
        for n in 0..VECTOR.len() {
            assert!(sec.verify(&VECTOR[..n]).is_err(), "prefix {n}");
        }
    }
}
