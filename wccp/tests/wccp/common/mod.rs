//! Test helpers: a tiny capture reader for the Squid test vectors (no pcap crate) and the
//! "squid64" de-padding used to look inside the throw-away responder's I_SEE_YOUs.
//!
//! The captures in `shared/testdata/squid/` are written by dumpcap, i.e. **pcapng** (Section
//! Header, Interface Description and Enhanced Packet blocks); classic pcap is read as well.
//! Frames are Ethernet / IPv4 / UDP; the payload is cut to the UDP length.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// One UDP datagram from a capture.
#[derive(Debug, Clone)]
pub struct Packet {
    /// 1-based frame number (as tshark numbers them in the `.txt` decodes).
    pub frame: usize,
    /// IPv4 source.
    pub src: Ipv4Addr,
    /// IPv4 destination.
    pub dst: Ipv4Addr,
    /// UDP payload.
    pub payload: Vec<u8>,
}

/// The Squid captures directory.
pub fn squid_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/squid/")
}

/// Every `.pcap` file in the captures directory, sorted by name (without extension).
pub fn capture_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(squid_dir())
        .expect("captures directory")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".pcap").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// The UDP datagrams of capture `name` (file `<name>.pcap`).
pub fn capture(name: &str) -> Vec<Packet> {
    let data = std::fs::read(squid_dir().join(format!("{name}.pcap"))).expect("capture file");
    frames(&data)
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            udp(i + 1, &f).unwrap_or_else(|| panic!("{name} frame {}: not IPv4/UDP", i + 1))
        })
        .collect()
}

fn u16_at(b: &[u8], at: usize, le: bool) -> u16 {
    let raw = [b[at], b[at + 1]];
    if le {
        u16::from_le_bytes(raw)
    } else {
        u16::from_be_bytes(raw)
    }
}

fn u32_at(b: &[u8], at: usize, le: bool) -> u32 {
    let raw = [b[at], b[at + 1], b[at + 2], b[at + 3]];
    if le {
        u32::from_le_bytes(raw)
    } else {
        u32::from_be_bytes(raw)
    }
}

/// Link-layer frames of a pcapng or classic pcap file.
pub fn frames(data: &[u8]) -> Vec<Vec<u8>> {
    let magic = u32_at(data, 0, true);
    let mut out = vec![];
    if magic == 0x0a0d_0d0a {
        // pcapng: blocks of (type, total length, body, total length).
        let mut le = true;
        let mut off = 0;
        while off + 12 <= data.len() {
            if u32_at(data, off, true) == 0x0a0d_0d0a {
                le = u32_at(data, off + 8, true) == 0x1a2b_3c4d;
            }
            let kind = u32_at(data, off, le);
            let len = u32_at(data, off + 4, le) as usize;
            assert!(
                len >= 12 && off + len <= data.len(),
                "bad pcapng block at {off}"
            );
            if kind == 6 {
                // Enhanced Packet Block: iface, ts hi, ts lo, captured len, original len, data.
                let caplen = u32_at(data, off + 20, le) as usize;
                out.push(data[off + 28..off + 28 + caplen].to_vec());
            }
            off += len;
        }
    } else {
        // Classic pcap: 24-octet global header, then (ts, ts, incl_len, orig_len, data).
        let le = match magic {
            0xa1b2_c3d4 | 0xa1b2_3c4d => true,
            0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
            other => panic!("not a capture file (magic {other:#x})"),
        };
        let mut off = 24;
        while off + 16 <= data.len() {
            let incl = u32_at(data, off + 8, le) as usize;
            out.push(data[off + 16..off + 16 + incl].to_vec());
            off += 16 + incl;
        }
    }
    out
}

/// Ethernet / IPv4 / UDP → packet.
fn udp(frame: usize, f: &[u8]) -> Option<Packet> {
    if f.len() < 14 || u16_at(f, 12, false) != 0x0800 {
        return None;
    }
    let ip = &f[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[9] != 17 {
        return None;
    }
    let total = usize::from(u16_at(ip, 2, false));
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let udp = &ip[ihl..total];
    let ulen = usize::from(u16_at(udp, 4, false));
    Some(Packet {
        frame,
        src,
        dst,
        payload: udp[8..ulen].to_vec(),
    })
}

/// Undoes the responder's "squid64" layout: drops the 4 zero octets after every component
/// and after every capability element, and fixes the lengths. Test-only, trusts its input.
pub fn unpad_squid64(msg: &[u8]) -> Vec<u8> {
    let mut body = vec![];
    let mut off = 8;
    let end = 8 + usize::from(u16_at(msg, 6, false));
    while off < end {
        let kind = u16_at(msg, off, false);
        let len = usize::from(u16_at(msg, off + 2, false));
        let mut comp = msg[off + 4..off + 4 + len].to_vec();
        if kind == 8 {
            let mut elems = vec![];
            let mut e = 0;
            while e < comp.len() {
                let elen = usize::from(u16_at(&comp, e + 2, false));
                elems.extend_from_slice(&comp[e..e + 4 + elen]);
                e += 4 + elen + 4;
            }
            comp = elems;
        }
        body.extend_from_slice(&kind.to_be_bytes());
        body.extend_from_slice(&(comp.len() as u16).to_be_bytes());
        body.extend_from_slice(&comp);
        off += 4 + len + 4;
    }
    let mut out = msg[..6].to_vec();
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}
