//! Test vectors from `shared/testdata/tshark/gre-wccp-synthetic.pcap`.
//!
//! Origin: synthetic, written with scapy 2.5.0 and dissected with tshark 4.0.17 (see that
//! folder's README.md); NOT captured from a real router or cache. Three Ethernet frames, each
//! Ethernet (14) + outer IPv4 10.99.0.1 → 10.99.0.2 proto 47 (20) + GRE ...:
//!
//! | frame | GRE proto | redirect header | inner |
//! |---|---|---|---|
//! | 1 | 0x883E | `00 00 00 2a` | TCP SYN 10.99.1.2:40000 → 10.99.2.2:80 |
//! | 2 | 0x883E | `c0 5a 11 2a` | same |
//! | 3 | 0x0800 | none | same |
//!
//! Each frame is decoded, its values compared with what tshark printed, and its GRE (+ redirect)
//! header re-encoded and compared byte for byte.

use std::path::{Path, PathBuf};

use gre::{
    decapsulate, encapsulate_in_place, encapsulate_into, GrePacket, GreProtocol, GreRepr,
    WccpRedirectHeader, WccpRedirectRepr,
};

const ETHERNET_LEN: usize = 14;
const OUTER_IPV4_LEN: usize = 20;

/// Inner packet common to all three frames: IPv4 + TCP SYN 10.99.1.2:40000 → 10.99.2.2:80.
const INNER: [u8; 40] = [
    0x45, 0x00, 0x00, 0x28, // IPv4, IHL 5, DSCP 0, total length 40
    0x00, 0x01, 0x00, 0x00, // id 1, no fragmentation
    0x40, 0x06, 0x63, 0x06, // TTL 64, protocol TCP, header checksum 0x6306
    0x0a, 0x63, 0x01, 0x02, // src 10.99.1.2
    0x0a, 0x63, 0x02, 0x02, // dst 10.99.2.2
    0x9c, 0x40, 0x00, 0x50, // src port 40000, dst port 80
    0x00, 0x00, 0x00, 0x00, // seq 0
    0x00, 0x00, 0x00, 0x00, // ack 0
    0x50, 0x02, 0x20, 0x00, // data offset 5, flags SYN, window 8192
    0xdb, 0x88, 0x00, 0x00, // TCP checksum 0xdb88, urgent pointer 0
];

fn pcap_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/testdata/tshark/gre-wccp-synthetic.pcap")
}

/// Reads a classic pcap file (either byte order, micro- or nanosecond magic) into its frames.
fn read_pcap(bytes: &[u8]) -> Vec<Vec<u8>> {
    let magic = u32::from_le_bytes(bytes[0..4].try_into().expect("a 4-octet slice"));
    let little = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        other => panic!("not a classic pcap file: magic {other:08x}"),
    };
    let u32_at = |at: usize| {
        let b: [u8; 4] = bytes[at..at + 4].try_into().expect("a 4-octet slice");
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    };
    // Global header: magic, version 2.4, thiszone, sigfigs, snaplen, linktype (1 = Ethernet).
    assert_eq!(u32_at(20), 1, "link type must be Ethernet");
    let mut frames = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        // Record header: ts_sec, ts_frac, incl_len, orig_len.
        let incl_len = u32_at(at + 8) as usize;
        assert_eq!(
            incl_len,
            u32_at(at + 12) as usize,
            "frame was truncated by the snaplen"
        );
        at += 16;
        frames.push(bytes[at..at + incl_len].to_vec());
        at += incl_len;
    }
    frames
}

/// Strips Ethernet and the outer IPv4 header, checking they are what the README says.
fn gre_bytes(frame: &[u8]) -> &[u8] {
    assert_eq!(&frame[12..14], &[0x08, 0x00], "EtherType IPv4");
    let ip = &frame[ETHERNET_LEN..];
    assert_eq!(ip[0], 0x45, "outer IPv4 without options");
    assert_eq!(ip[9], 47, "outer protocol GRE");
    assert_eq!(&ip[12..16], &[10, 99, 0, 1], "outer source: the router");
    assert_eq!(&ip[16..20], &[10, 99, 0, 2], "outer destination: the cache");
    let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    // Hand over exactly the outer IPv4 payload, as the router must.
    &ip[OUTER_IPV4_LEN..total_len]
}

fn frames() -> Vec<Vec<u8>> {
    let path = pcap_path();
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let frames = read_pcap(&bytes);
    assert_eq!(frames.len(), 3);
    frames
}

/// Re-encodes `headers` (GRE + optional redirect) around `INNER` both ways and compares bytes.
fn assert_reencodes(gre: &[u8], repr: &GreRepr, redirect: Option<&WccpRedirectRepr>) {
    let mut out = vec![0xa5; gre.len() + 16];
    let n = encapsulate_into(&mut out, &INNER, repr, redirect).expect("encapsulate_into");
    assert_eq!(&out[..n], gre);

    let headroom = 20 + gre.len() - INNER.len();
    let mut buf = vec![0xa5; headroom + INNER.len()];
    buf[headroom..].copy_from_slice(&INNER);
    let start = encapsulate_in_place(&mut buf, headroom, INNER.len(), repr, redirect)
        .expect("encapsulate_in_place");
    assert_eq!(start, 20);
    assert_eq!(&buf[start..], gre);
}

#[test]
fn frame1_well_known_service_primary_bucket_42() {
    let frames = frames();
    let gre = gre_bytes(&frames[0]);
    assert_eq!(
        &gre[..8],
        &[
            0x00, 0x00, // GRE flags: none, version 0
            0x88, 0x3e, // protocol type 0x883E (WCCP)
            0x00, // redirect flags: D=0 (well-known), A=0 (primary), U=0 (valid)
            0x00, // service id 0 (HTTP)
            0x00, // alternate bucket 0
            0x2a, // primary bucket 42
        ]
    );
    let packet = GrePacket::new_checked(gre).unwrap();
    assert_eq!(packet.protocol(), GreProtocol::WccpRedirect);
    assert_eq!(packet.version(), 0);

    let d = decapsulate(gre).unwrap();
    assert_eq!(d.gre, GreRepr::WCCP);
    let redirect = WccpRedirectRepr {
        primary_bucket: 42,
        ..Default::default()
    };
    assert_eq!(d.redirect, Some(redirect));
    assert_eq!(d.inner, &INNER[..]);
    // The inner TCP SYN, as tshark shows it.
    assert_eq!(&d.inner[12..16], &[10, 99, 1, 2]);
    assert_eq!(&d.inner[16..20], &[10, 99, 2, 2]);
    assert_eq!(u16::from_be_bytes([d.inner[20], d.inner[21]]), 40000);
    assert_eq!(u16::from_be_bytes([d.inner[22], d.inner[23]]), 80);
    assert_eq!(d.inner[33] & 0x3f, 0x02, "TCP flags: SYN only");

    assert_reencodes(gre, &d.gre, d.redirect.as_ref());
}

#[test]
fn frame2_high_bits_are_not_d_or_a() {
    let frames = frames();
    let gre = gre_bytes(&frames[1]);
    assert_eq!(
        &gre[..8],
        &[
            0x00, 0x00, // GRE flags: none, version 0
            0x88, 0x3e, // protocol type 0x883E (WCCP)
            0xc0, // redirect flags: 0x80 | 0x40 — D and A in the drafts' drawing, not on the wire
            0x5a, // service id 90
            0x11, // alternate bucket 17
            0x2a, // primary bucket 42
        ]
    );
    // As Wireshark: gre.wccp.dynamic_service == 0, gre.wccp.alternative_bucket_used == 0.
    let header = WccpRedirectHeader::new_checked(&gre[4..]).unwrap();
    assert_eq!(header.flags(), 0xc0);
    assert!(!header.dynamic());
    assert!(!header.alternate_used());
    assert!(!header.unavailable());

    let d = decapsulate(gre).unwrap();
    let expected = WccpRedirectRepr {
        dynamic: false,
        alternate_used: false,
        unavailable: false,
        service_id: 90,
        alternate_bucket: 17,
        primary_bucket: 42,
        unknown_flags: 0xc0,
    };
    assert_eq!(d.redirect, Some(expected));
    assert_eq!(d.inner, &INNER[..]);
    // The unknown bits survive: re-encoding is byte-identical.
    assert_reencodes(gre, &d.gre, d.redirect.as_ref());
}

#[test]
fn frame3_plain_gre_ipv4_no_redirect_header() {
    let frames = frames();
    let gre = gre_bytes(&frames[2]);
    assert_eq!(
        &gre[..4],
        &[
            0x00, 0x00, // GRE flags: none, version 0
            0x08, 0x00, // protocol type 0x0800 (IPv4)
        ]
    );
    let d = decapsulate(gre).unwrap();
    assert_eq!(
        d.gre,
        GreRepr {
            protocol: GreProtocol::Ipv4,
            checksum: false,
            key: None,
            sequence: None
        }
    );
    assert_eq!(d.redirect, None);
    assert_eq!(d.inner_offset, 4);
    assert_eq!(d.inner, &INNER[..]);
    assert_reencodes(gre, &d.gre, None);
}

#[test]
fn every_frame_replays_through_the_fuzz_oracle() {
    for frame in frames() {
        gre::fuzzing::fuzz_decode(gre_bytes(&frame));
    }
}
