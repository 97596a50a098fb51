//! Fuzzing oracles, shared by the cargo-fuzz targets in `../fuzz` and by a stable `#[test]` that
//! replays the corpus. Built only for tests and with the `fuzzing` feature.
//!
//! The oracle (rustls-style): decode; if that succeeds, encode what was decoded, decode again and
//! require the same values; and require the encoding to reproduce the input byte for byte except
//! in the fields the RFCs tell receivers to ignore. Any panic here is a finding.

use crate::encap::{decapsulate, encapsulate_in_place, encapsulate_into, encapsulated_header_len};
use crate::packet::{GrePacket, GreRepr};
use crate::redirect::{WccpRedirectHeader, WccpRedirectRepr, REDIRECT_HEADER_LEN};

/// GRE flag bits 6–12, which RFC 2784 §2.3 says receivers ignore (so re-encoding zeroes them).
const IGNORED_FLAG_BITS: u16 = 0x03f8;

/// Decodes `data` as a GRE packet; if it decodes, checks the decode→encode→decode oracle.
pub fn fuzz_decode(data: &[u8]) {
    // The views and reprs on their own must not panic on anything either.
    if let Ok(packet) = GrePacket::new_checked(data) {
        let _ = GreRepr::parse(&packet);
        let _ = (
            packet.verify_checksum(),
            packet.payload().len(),
            packet.reserved1(),
        );
    }
    redirect_oracle(data);

    let Ok(first) = decapsulate(data) else { return };

    // Encode what was decoded, once by copying and once in place; both must agree.
    let header_len = encapsulated_header_len(&first.gre, first.redirect.as_ref());
    assert_eq!(
        header_len, first.inner_offset,
        "header length differs from the decoded one"
    );
    let mut out = vec![0u8; header_len + first.inner.len()];
    let n = match encapsulate_into(&mut out, first.inner, &first.gre, first.redirect.as_ref()) {
        Ok(n) => n,
        Err(e) => panic!("re-encoding a decoded packet failed: {e}"),
    };
    assert_eq!(n, data.len(), "re-encoding changed the length");

    let mut in_place = vec![0u8; header_len];
    in_place.extend_from_slice(first.inner);
    match encapsulate_in_place(
        &mut in_place,
        header_len,
        first.inner.len(),
        &first.gre,
        first.redirect.as_ref(),
    ) {
        Ok(0) => {}
        other => panic!("in-place re-encoding returned {other:?}, expected Ok(0)"),
    }
    assert_eq!(in_place, out, "in-place and copying encapsulation differ");

    // Decode the encoding: same values.
    let second = match decapsulate(&out) {
        Ok(second) => second,
        Err(e) => panic!("re-decoding a re-encoded packet failed: {e}"),
    };
    assert_eq!(first, second, "decode(encode(decode(x))) != decode(x)");

    assert_canonical_bytes(data, &out, first.gre.checksum);
}

/// Requires `out` to equal `data` except where RFC 2784 lets the input differ harmlessly.
fn assert_canonical_bytes(data: &[u8], out: &[u8], checksum: bool) {
    let mask = |bytes: &[u8]| {
        let mut masked = bytes.to_vec();
        // Ignored flag bits (RFC 2784 §2.3).
        let [hi, lo] = IGNORED_FLAG_BITS.to_be_bytes();
        masked[0] &= !hi;
        masked[1] &= !lo;
        if checksum {
            // The checksum (both one's-complement zeros verify, RFC 1071) and Reserved1 (not
            // checked on receipt, RFC 2784 §2.6). decapsulate already verified the checksum.
            masked[4..8].fill(0);
        }
        masked
    };
    assert_eq!(
        mask(data),
        mask(out),
        "re-encoding differs outside the ignored fields"
    );
}

/// A redirect header alone is lossless: parse then emit must give back its 4 octets.
fn redirect_oracle(data: &[u8]) {
    let Ok(header) = WccpRedirectHeader::new_checked(data) else {
        return;
    };
    let Ok(repr) = WccpRedirectRepr::parse(&header) else {
        panic!("a checked redirect header failed to parse")
    };
    let mut out = [0u8; REDIRECT_HEADER_LEN];
    repr.emit(&mut WccpRedirectHeader::new_unchecked(&mut out[..]));
    assert_eq!(
        &out[..],
        &data[..REDIRECT_HEADER_LEN],
        "redirect header did not re-encode"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oracle_accepts_valid_and_invalid_inputs() {
        let inputs: [&[u8]; 8] = [
            &[],
            &[0x00],
            &[0x00, 0x00, 0x88, 0x3e, 0x00, 0x00, 0x00, 0x2a, 0x45, 0x00],
            &[0x00, 0x00, 0x88, 0x3e, 0xc0, 0x5a, 0x11, 0x2a],
            &[0x00, 0x00, 0x88, 0x3e, 0x45],
            &[0x03, 0xf8, 0x08, 0x00, 0x01],
            &[
                0xb0, 0x00, 0x08, 0x00, 0x65, 0x44, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00,
                0x00, 0x07, 0xde, 0xad,
            ],
            &[0x80, 0x00, 0x7f, 0xff, 0xff, 0xff, 0x12, 0x34],
        ];
        for input in inputs {
            fuzz_decode(input);
        }
    }
}
