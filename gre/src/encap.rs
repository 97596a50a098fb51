//! Encapsulation and decapsulation of WCCP GRE on byte buffers, without copying the inner packet
//! (or copying it once, for [`encapsulate_into`]).
//!
//! The outer IPv4 header (protocol 47, router → cache) is not written or read here: the router
//! reserves room for it in front of the GRE header and fills it in, and on receipt hands
//! [`decapsulate`] exactly the outer datagram's payload.

use crate::error::Error;
use crate::packet::{GrePacket, GreProtocol, GreRepr, GRE_BASE_HEADER_LEN};
use crate::redirect::{
    is_redirect_header_present, WccpRedirectHeader, WccpRedirectRepr, REDIRECT_HEADER_LEN,
};

/// Octets WCCP GRE redirection adds in front of the original packet, not counting the outer
/// IPv4 header: the plain 4-octet GRE header plus the 4-octet redirect header (reference §8).
pub const WCCP_GRE_OVERHEAD: usize = GRE_BASE_HEADER_LEN + REDIRECT_HEADER_LEN;

/// A decoded GRE packet: its headers and the inner packet, borrowed from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapsulated<'a> {
    /// The GRE header.
    pub gre: GreRepr,
    /// The redirect header, if the payload had one (protocol 0x883E, first nibble not 4).
    pub redirect: Option<WccpRedirectRepr>,
    /// The inner (original) packet: a sub-slice of the input, not a copy.
    pub inner: &'a [u8],
    /// Where `inner` starts in the input, i.e. the length of the GRE (+ redirect) headers.
    pub inner_offset: usize,
}

/// Length of the headers [`encapsulate_in_place`] writes for `repr` and `redirect`.
pub const fn encapsulated_header_len(repr: &GreRepr, redirect: Option<&WccpRedirectRepr>) -> usize {
    repr.buffer_len()
        + if redirect.is_some() {
            REDIRECT_HEADER_LEN
        } else {
            0
        }
}

/// Decodes a GRE packet (the outer IPv4 payload, exactly) into its headers and inner packet.
///
/// For protocol 0x883E the redirect header is taken to be present unless the payload's first
/// nibble is 4 ([`is_redirect_header_present`]), so a cache that returns GRE without the
/// redirect header still decapsulates; an empty 0x883E payload has no redirect header.
/// Errors carry offsets from the start of `gre_bytes`.
pub fn decapsulate(gre_bytes: &[u8]) -> Result<Decapsulated<'_>, Error> {
    let packet = GrePacket::new_checked(gre_bytes)?;
    let gre = GreRepr::parse(&packet)?;
    let header_len = packet.header_len();
    // new_checked guaranteed header_len <= len, so this cannot fail; `get` keeps it panic-free.
    let payload = gre_bytes.get(header_len..).unwrap_or_default();

    let has_redirect = gre.protocol == GreProtocol::WccpRedirect
        && payload
            .first()
            .is_some_and(|&b| is_redirect_header_present(b));
    if !has_redirect {
        return Ok(Decapsulated {
            gre,
            redirect: None,
            inner: payload,
            inner_offset: header_len,
        });
    }

    let header = WccpRedirectHeader::new_checked(payload).map_err(|e| rebase(e, header_len))?;
    let redirect = WccpRedirectRepr::parse(&header).map_err(|e| rebase(e, header_len))?;
    // new_checked guaranteed the 4 octets; slice `payload` (not the view) to keep its lifetime.
    let inner = payload.get(REDIRECT_HEADER_LEN..).unwrap_or_default();
    Ok(Decapsulated {
        gre,
        redirect: Some(redirect),
        inner,
        inner_offset: header_len + REDIRECT_HEADER_LEN,
    })
}

/// Writes the GRE (+ redirect) header into the headroom just before the inner packet at
/// `buf[inner_start..inner_start + inner_len]`, and returns where the GRE header starts.
///
/// The inner packet is not moved. The GRE packet is `buf[returned..inner_start + inner_len]`;
/// the router then writes the outer IPv4 header in front of it. When `repr.checksum` is set the
/// checksum is computed over the finished packet.
///
/// Fails, without writing anything, if the range is outside `buf`, if a redirect header is asked
/// for with a protocol other than 0x883E, if the result would not decapsulate to the same thing
/// (redirect flags with first nibble 4, or a 0x883E payload without redirect header that is not
/// IPv4), or if the headroom is too small.
pub fn encapsulate_in_place(
    buf: &mut [u8],
    inner_start: usize,
    inner_len: usize,
    repr: &GreRepr,
    redirect: Option<&WccpRedirectRepr>,
) -> Result<usize, Error> {
    let out_of_bounds = Error::InnerOutOfBounds {
        start: inner_start,
        len: inner_len,
        buf_len: buf.len(),
    };
    let inner_end = inner_start
        .checked_add(inner_len)
        .filter(|&end| end <= buf.len())
        .ok_or(out_of_bounds)?;
    let inner_first = if inner_len > 0 {
        buf.get(inner_start).copied()
    } else {
        None
    };
    check_consistent(repr, redirect, inner_first)?;

    let need = encapsulated_header_len(repr, redirect);
    let start = inner_start
        .checked_sub(need)
        .ok_or(Error::HeadroomTooSmall {
            need,
            have: inner_start,
        })?;

    // start <= inner_end <= buf.len() was established above, so the range is in bounds; `get_mut`
    // keeps the no-panic promise without an unchecked index.
    let region = buf.get_mut(start..inner_end).ok_or(out_of_bounds)?;
    let mut packet = GrePacket::new_unchecked(region);
    repr.emit(&mut packet);
    if let Some(redirect) = redirect {
        // The payload is at least REDIRECT_HEADER_LEN long: `need` reserved room for it.
        redirect.emit(&mut WccpRedirectHeader::new_unchecked(packet.payload_mut()));
    }
    // Last, because the checksum covers the redirect header and the inner packet too.
    packet.fill_checksum();
    Ok(start)
}

/// Writes the GRE (+ redirect) header and a copy of `inner` to the front of `out`, and returns
/// the number of octets written (the GRE packet is `out[..n]`).
///
/// Same checks as [`encapsulate_in_place`]; fails with [`Error::BufferTooSmall`] if `out` cannot
/// hold headers plus `inner`.
pub fn encapsulate_into(
    out: &mut [u8],
    inner: &[u8],
    repr: &GreRepr,
    redirect: Option<&WccpRedirectRepr>,
) -> Result<usize, Error> {
    // Check consistency before the size, so the error names the real problem first.
    check_consistent(repr, redirect, inner.first().copied())?;
    let header_len = encapsulated_header_len(repr, redirect);
    let need = header_len + inner.len();
    let have = out.len();
    let region = out
        .get_mut(..need)
        .ok_or(Error::BufferTooSmall { need, have })?;
    region[header_len..].copy_from_slice(inner);
    encapsulate_in_place(region, header_len, inner.len(), repr, redirect)?;
    Ok(need)
}

/// Rejects header combinations that [`decapsulate`] would not read back as written.
fn check_consistent(
    repr: &GreRepr,
    redirect: Option<&WccpRedirectRepr>,
    inner_first: Option<u8>,
) -> Result<(), Error> {
    match redirect {
        Some(_) if repr.protocol != GreProtocol::WccpRedirect => {
            Err(Error::RedirectWithoutWccpProtocol(u16::from(repr.protocol)))
        }
        Some(r) if !is_redirect_header_present(r.flags_octet()) => {
            Err(Error::RedirectFlagsLookLikeIpv4(r.flags_octet()))
        }
        None if repr.protocol == GreProtocol::WccpRedirect => match inner_first {
            Some(b) if is_redirect_header_present(b) => Err(Error::BareInnerNotIpv4(b)),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Moves a `Truncated` error's offset from a sub-buffer's frame to the whole packet's.
fn rebase(error: Error, offset: usize) -> Error {
    match error {
        Error::Truncated { need, have, at } => Error::Truncated {
            need,
            have,
            at: at + offset,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inner packet of the synthetic capture: IPv4 + TCP SYN 10.99.1.2:40000 → 10.99.2.2:80.
    const INNER: [u8; 40] = [
        0x45, 0x00, 0x00, 0x28, // IPv4, IHL 5, DSCP 0, total length 40
        0x00, 0x01, 0x00, 0x00, // id 1, no fragmentation
        0x40, 0x06, 0x63, 0x06, // TTL 64, TCP, header checksum 0x6306
        0x0a, 0x63, 0x01, 0x02, // src 10.99.1.2
        0x0a, 0x63, 0x02, 0x02, // dst 10.99.2.2
        0x9c, 0x40, 0x00, 0x50, // src port 40000, dst port 80
        0x00, 0x00, 0x00, 0x00, // seq 0
        0x00, 0x00, 0x00, 0x00, // ack 0
        0x50, 0x02, 0x20, 0x00, // data offset 5, SYN, window 8192
        0xdb, 0x88, 0x00, 0x00, // TCP checksum 0xdb88, urgent pointer 0
    ];

    /// GRE + redirect headers of synthetic frame 1.
    const FRAME1_HEADERS: [u8; 8] = [
        0x00, 0x00, // GRE flags: none, version 0
        0x88, 0x3e, // protocol type 0x883E
        0x00, // redirect flags: none
        0x00, // service id 0
        0x00, // alternate bucket 0
        0x2a, // primary bucket 42
    ];

    fn frame1() -> Vec<u8> {
        [&FRAME1_HEADERS[..], &INNER[..]].concat()
    }

    fn frame1_redirect() -> WccpRedirectRepr {
        WccpRedirectRepr {
            primary_bucket: 42,
            ..Default::default()
        }
    }

    #[test]
    fn overhead_constant() {
        assert_eq!(WCCP_GRE_OVERHEAD, 8);
        assert_eq!(
            encapsulated_header_len(&GreRepr::WCCP, Some(&frame1_redirect())),
            8
        );
        assert_eq!(encapsulated_header_len(&GreRepr::WCCP, None), 4);
    }

    #[test]
    fn decapsulate_frame1() {
        let bytes = frame1();
        let d = decapsulate(&bytes).unwrap();
        assert_eq!(d.gre, GreRepr::WCCP);
        assert_eq!(d.redirect, Some(frame1_redirect()));
        assert_eq!(d.inner, &INNER[..]);
        assert_eq!(d.inner_offset, 8);
        // Zero copy: the inner slice points into the input.
        assert!(core::ptr::eq(d.inner.as_ptr(), bytes[8..].as_ptr()));
    }

    #[test]
    fn decapsulate_bare_ipv4_in_wccp_gre() {
        // A cache returning GRE 0x883E without redirect header: first nibble 4.
        let bytes = [&[0x00, 0x00, 0x88, 0x3e][..], &INNER[..]].concat();
        let d = decapsulate(&bytes).unwrap();
        assert_eq!(d.redirect, None);
        assert_eq!(d.inner, &INNER[..]);
        assert_eq!(d.inner_offset, 4);
    }

    #[test]
    fn decapsulate_plain_ipv4_gre() {
        let bytes = [&[0x00, 0x00, 0x08, 0x00][..], &INNER[..]].concat();
        let d = decapsulate(&bytes).unwrap();
        assert_eq!(d.gre.protocol, GreProtocol::Ipv4);
        assert_eq!(d.redirect, None);
        assert_eq!(d.inner, &INNER[..]);
    }

    #[test]
    fn decapsulate_empty_wccp_payload() {
        let d = decapsulate(&[0x00, 0x00, 0x88, 0x3e]).unwrap();
        assert_eq!((d.redirect, d.inner, d.inner_offset), (None, &[][..], 4));
    }

    #[test]
    fn every_strict_prefix_of_the_headers_fails() {
        let bytes = frame1();
        // Prefixes of 0..4 octets cut the GRE header; 5..8 cut the redirect header. (Longer
        // prefixes cut the inner packet, which is not this crate's to check.)
        for cut in 0..FRAME1_HEADERS.len() {
            let err = decapsulate(&bytes[..cut]);
            if cut == 4 {
                // An empty 0x883E payload is legal: no redirect header, empty inner packet.
                assert!(err.is_ok());
                continue;
            }
            let err = err.unwrap_err();
            let at = if cut < 4 { 0 } else { 4 };
            assert_eq!(
                err,
                Error::Truncated {
                    need: 4,
                    have: cut - at,
                    at
                },
                "{cut}"
            );
        }
    }

    #[test]
    fn encapsulate_in_place_writes_only_headroom() {
        let headroom = 20 + WCCP_GRE_OVERHEAD; // room for the router's outer IPv4 header too
        let mut buf = vec![0xa5; headroom + INNER.len()];
        buf[headroom..].copy_from_slice(&INNER);
        let start = encapsulate_in_place(
            &mut buf,
            headroom,
            INNER.len(),
            &GreRepr::WCCP,
            Some(&frame1_redirect()),
        )
        .unwrap();
        assert_eq!(start, 20);
        assert_eq!(&buf[..20], &[0xa5; 20][..], "outer header room untouched");
        assert_eq!(&buf[20..], &frame1()[..]);
    }

    #[test]
    fn encapsulate_into_matches_frame1() {
        let mut out = vec![0xa5; 100];
        let n =
            encapsulate_into(&mut out, &INNER, &GreRepr::WCCP, Some(&frame1_redirect())).unwrap();
        assert_eq!(n, 48);
        assert_eq!(&out[..n], &frame1()[..]);
        assert_eq!(&out[n..], &[0xa5; 52][..]);
    }

    #[test]
    fn encapsulate_with_checksum_key_sequence() {
        let repr = GreRepr {
            protocol: GreProtocol::WccpRedirect,
            checksum: true,
            key: Some(0xdead_beef),
            sequence: Some(1),
        };
        let redirect = WccpRedirectRepr {
            dynamic: true,
            service_id: 90,
            ..Default::default()
        };
        let mut out = vec![0xa5; 100];
        let n = encapsulate_into(&mut out, &INNER, &repr, Some(&redirect)).unwrap();
        assert_eq!(n, 16 + 4 + 40);
        assert!(GrePacket::new_checked(&out[..n]).unwrap().verify_checksum());
        let d = decapsulate(&out[..n]).unwrap();
        assert_eq!(
            (d.gre, d.redirect, d.inner),
            (repr, Some(redirect), &INNER[..])
        );
        // Corrupt one inner octet: the checksum catches it.
        out[n - 1] ^= 0x01;
        assert!(matches!(
            decapsulate(&out[..n]),
            Err(Error::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn headroom_too_small() {
        let mut buf = vec![0xa5; 7 + INNER.len()];
        buf[7..].copy_from_slice(&INNER);
        let before = buf.clone();
        let err = encapsulate_in_place(
            &mut buf,
            7,
            INNER.len(),
            &GreRepr::WCCP,
            Some(&frame1_redirect()),
        );
        assert_eq!(err, Err(Error::HeadroomTooSmall { need: 8, have: 7 }));
        assert_eq!(buf, before, "nothing written on error");
    }

    #[test]
    fn inner_out_of_bounds() {
        let mut buf = vec![0u8; 10];
        for (start, len) in [(8, 3), (11, 0), (usize::MAX, 2)] {
            assert_eq!(
                encapsulate_in_place(&mut buf, start, len, &GreRepr::WCCP, None),
                Err(Error::InnerOutOfBounds {
                    start,
                    len,
                    buf_len: 10
                })
            );
        }
    }

    #[test]
    fn output_too_small() {
        let mut out = vec![0u8; 47];
        assert_eq!(
            encapsulate_into(&mut out, &INNER, &GreRepr::WCCP, Some(&frame1_redirect())),
            Err(Error::BufferTooSmall { need: 48, have: 47 })
        );
    }

    #[test]
    fn redirect_needs_wccp_protocol() {
        let repr = GreRepr {
            protocol: GreProtocol::Ipv4,
            ..GreRepr::WCCP
        };
        let mut out = vec![0u8; 100];
        assert_eq!(
            encapsulate_into(&mut out, &INNER, &repr, Some(&frame1_redirect())),
            Err(Error::RedirectWithoutWccpProtocol(0x0800))
        );
    }

    #[test]
    fn redirect_flags_must_not_look_like_ipv4() {
        let redirect = WccpRedirectRepr {
            unknown_flags: 0x40,
            ..Default::default()
        };
        let mut out = vec![0u8; 100];
        assert_eq!(
            encapsulate_into(&mut out, &INNER, &GreRepr::WCCP, Some(&redirect)),
            Err(Error::RedirectFlagsLookLikeIpv4(0x40))
        );
    }

    #[test]
    fn bare_wccp_payload_must_be_ipv4() {
        let mut out = vec![0u8; 100];
        let ipv6ish = [0x60, 0x00, 0x00, 0x00];
        assert_eq!(
            encapsulate_into(&mut out, &ipv6ish, &GreRepr::WCCP, None),
            Err(Error::BareInnerNotIpv4(0x60))
        );
        // IPv4 inner and an empty inner are fine without a redirect header.
        assert_eq!(
            encapsulate_into(&mut out, &INNER, &GreRepr::WCCP, None),
            Ok(44)
        );
        assert_eq!(encapsulate_into(&mut out, &[], &GreRepr::WCCP, None), Ok(4));
    }

    #[test]
    fn errors_read_as_sentences() {
        let e = Error::Truncated {
            need: 4,
            have: 1,
            at: 4,
        };
        assert_eq!(
            e.to_string(),
            "the packet is truncated at offset 4: the next field needs 4 octets but only 1 remain"
        );
        assert_eq!(
            Error::HeadroomTooSmall { need: 8, have: 7 }.to_string(),
            "the headroom is too small: the headers need 8 octets but only 7 are free"
        );
    }
}
