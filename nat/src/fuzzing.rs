//! Fuzz entry points (the `fuzzing` feature; the cargo-fuzz workspace in `../fuzz` calls them).

use crate::esp::{self, EspKey, EspTable};
use crate::sync::{decode_esp, decode_esp_delete, encode_esp, KEY_LEN};
use crate::translate::Side;
use netwire::ipv4::Ipv4Packet;
use std::net::Ipv4Addr;
use std::num::NonZeroU32;

/// Target `nat_esp`: any bytes as an ESP packet, as an ESP sync record and as a workload for an
/// [`EspTable`]; never a panic, and:
/// - a packet that parses keeps parsing after a rewrite; with a valid header checksum it still
///   verifies, and rewriting the source back gives the same bytes (RFC 1624 is exact there; an
///   invalid 0xffff checksum may come back as 0x0000);
/// - a record that decodes encodes to the same bytes;
/// - after any workload every session is found by its identity, a learnt SPI leads to its own
///   session, and removing every session leaves no inbound key behind.
pub fn fuzz_esp(data: &[u8]) {
    if let Ok(p) = esp::parse(data) {
        let mut b = data.to_vec();
        let valid = Ipv4Packet::new_checked(&b[..]).is_ok_and(|ip| ip.verify_checksum());
        let old = esp::rewrite(&mut b, Side::Src, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(old, Ok(p.src), "rewrite returns the parsed source");
        let q = esp::parse(&b).expect("still ESP");
        assert_eq!((q.dst, q.spi, q.seq), (p.dst, p.spi, p.seq));
        if valid {
            let ip = Ipv4Packet::new_checked(&b[..]).expect("still IPv4");
            assert!(ip.verify_checksum(), "incremental checksum");
            esp::rewrite(&mut b, Side::Src, p.src).expect("still IPv4");
            assert_eq!(b, data, "rewrite and back");
        }
    }
    if data.len() >= KEY_LEN {
        let (k, v) = data.split_at(KEY_LEN);
        if let Ok(s) = decode_esp(k, v) {
            let (k2, v2) = encode_esp(&s);
            assert_eq!((&k2[..], &v2[..]), (k, v), "decode → encode");
        }
        let _ = decode_esp_delete(k);
    }
    workload(data);
}

/// Drives a 4-session table with operations read from `data` (two octets each) and checks its
/// maps agree.
fn workload(data: &[u8]) {
    let mut t = EspTable::new(4, 1);
    let host = |x: u8| Ipv4Addr::new(10, 0, 0, 1 + (x & 3));
    let pool = |h: Ipv4Addr| Ipv4Addr::new(192, 0, 2, 1 + h.octets()[3] / 3);
    let remote = |x: u8| Ipv4Addr::new(198, 51, 100, 1 + ((x >> 2) & 1));
    let spi = |x: u8| NonZeroU32::new(1 + u32::from(x >> 3)).expect("non-zero");
    let mut out = Vec::new();
    for (now, op) in (1u32..).zip(data.chunks_exact(2)) {
        let (kind, x) = (op[0] & 3, op[1]);
        let h = host(x);
        match kind {
            0 => {
                let _ = t.outbound(h, pool(h), remote(x), spi(x), now);
            }
            1 => {
                let _ = t.inbound(pool(h), remote(x), spi(x), now);
            }
            2 => {
                t.expire(now, u32::from(op[0] >> 2), usize::from(x & 7), &mut out);
            }
            _ => {
                t.remove(&EspKey {
                    inside: h,
                    remote: remote(x),
                    out_spi: spi(x),
                });
            }
        }
        assert!(t.len() <= t.capacity());
    }
    let all: Vec<_> = t.iter().collect();
    assert_eq!(all.len(), t.len());
    for s in &all {
        assert_eq!(t.get(&s.key()), Some(*s), "found by identity");
        if let Some(i) = s.in_spi {
            let got = t.inbound(s.pool, s.remote, i, u32::MAX).map(|x| x.inside);
            assert_eq!(got, Ok(s.inside), "a learnt SPI leads to its session");
        }
    }
    for s in &all {
        assert!(t.remove(&s.key()).is_some());
    }
    for s in &all {
        if let Some(i) = s.in_spi {
            assert!(t.inbound(s.pool, s.remote, i, 0).is_err(), "no key left");
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_bytes_hold_the_fuzz_oracle(b in prop::collection::vec(any::<u8>(), 0..96)) {
            super::fuzz_esp(&b);
        }

        #[test]
        fn valid_esp_packets_hold_the_fuzz_oracle(
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            head in any::<[u8; 8]>(),
            len in 0usize..40,
        ) {
            let mut l4 = vec![0u8; 8 + len];
            l4[..8].copy_from_slice(&head);
            let pkt = crate::translate::build::ipv4(src.into(), dst.into(), crate::esp::PROTO_ESP, 64, &l4);
            super::fuzz_esp(&pkt);
        }
    }

    #[test]
    fn the_fuzz_corpus_holds_the_oracle() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/nat_esp");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            super::fuzz_esp(&std::fs::read(entry.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n > 0);
    }
}
