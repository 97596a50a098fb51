//! Copies of returned packets (seed 001, claim 39): every packet swcache hands back to a router
//! can also go to a pcap file or a TAP device, where an analyser (tshark, an IDS) reads it.
//!
//! The pcap file is written without a library: its format is 24 octets of file header and 16 of
//! record header per packet (libpcap's classic format, microsecond timestamps, link type 101
//! LINKTYPE_RAW: each record is a bare IPv4 packet), written in one `write` per packet so a
//! reader never sees half a record. On the TAP device each packet goes out as an Ethernet
//! frame between two fixed locally administered addresses.

use crate::sys;
use anyhow::{Context, Result};
use conf::cache::ReturnCopy;
use std::fs::File;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// LINKTYPE_RAW: records are raw IPv4 (or IPv6) packets.
const LINKTYPE_RAW: u32 = 101;
/// Source MAC of the frames written to the TAP device (locally administered).
const TAP_SRC_MAC: [u8; 6] = [0x02, 0x73, 0x77, 0x63, 0x00, 0x01];
/// Destination MAC of the frames written to the TAP device (locally administered).
const TAP_DST_MAC: [u8; 6] = [0x02, 0x73, 0x77, 0x63, 0x00, 0x02];

/// An open copy destination.
#[derive(Debug)]
pub struct CopySink {
    kind: Kind,
    buf: Vec<u8>,
    /// What the sink is, for status and logs (`pcap:FILE`, `tap:NAME`).
    pub name: String,
}

#[derive(Debug)]
enum Kind {
    Pcap(File),
    Tap(File),
}

impl CopySink {
    /// Creates (truncating) the pcap file and writes its header, or creates the TAP device
    /// and brings it up.
    pub fn open(c: &ReturnCopy) -> Result<CopySink> {
        match c {
            ReturnCopy::Pcap(path) => {
                let mut f = File::create(path).with_context(|| {
                    format!(
                        "creating the return-copy file {} (--return-copy, return-copy in cache.conf)",
                        path.display()
                    )
                })?;
                f.write_all(&pcap_file_header())
                    .with_context(|| format!("writing {}", path.display()))?;
                Ok(CopySink {
                    kind: Kind::Pcap(f),
                    buf: Vec::with_capacity(2048),
                    name: c.to_string(),
                })
            }
            ReturnCopy::Tap(name) => {
                let (fd, actual) = sys::open_tap(name).map_err(|e| {
                    anyhow::anyhow!(
                        "creating the return-copy TAP device {name:?} (--return-copy, return-copy in cache.conf): {e}"
                    )
                })?;
                sys::set_link_up(&actual).with_context(|| format!("bringing {actual} up"))?;
                tracing::info!(tap = %actual, "returned packets are copied to the TAP device");
                Ok(CopySink {
                    kind: Kind::Tap(File::from(fd)),
                    buf: Vec::with_capacity(2048),
                    name: format!("tap:{actual}"),
                })
            }
        }
    }

    /// Writes one copy of the IPv4 packet `ip`.
    pub fn write(&mut self, ip: &[u8]) -> std::io::Result<()> {
        self.buf.clear();
        match &mut self.kind {
            Kind::Pcap(f) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                pcap_record(&mut self.buf, now.as_secs(), now.subsec_micros(), ip);
                f.write_all(&self.buf)
            }
            Kind::Tap(f) => {
                self.buf.extend_from_slice(&TAP_DST_MAC);
                self.buf.extend_from_slice(&TAP_SRC_MAC);
                self.buf.extend_from_slice(&0x0800u16.to_be_bytes());
                self.buf.extend_from_slice(ip);
                f.write(&self.buf).map(|_| ())
            }
        }
    }
}

/// The classic pcap file header, native byte order (readers detect it from the magic).
fn pcap_file_header() -> [u8; 24] {
    let mut h = [0u8; 24];
    h[0..4].copy_from_slice(&0xa1b2_c3d4u32.to_ne_bytes());
    h[4..6].copy_from_slice(&2u16.to_ne_bytes());
    h[6..8].copy_from_slice(&4u16.to_ne_bytes());
    // thiszone and sigfigs stay 0.
    h[16..20].copy_from_slice(&65535u32.to_ne_bytes());
    h[20..24].copy_from_slice(&LINKTYPE_RAW.to_ne_bytes());
    h
}

/// Appends one record (header and packet, cut to the 65535-octet snap length) to `out`.
fn pcap_record(out: &mut Vec<u8>, secs: u64, micros: u32, pkt: &[u8]) {
    let caplen = pkt.len().min(65535);
    // pcap's classic format holds seconds in 32 bits (until 2106).
    out.extend_from_slice(&(secs as u32).to_ne_bytes());
    out.extend_from_slice(&micros.to_ne_bytes());
    out.extend_from_slice(&(caplen as u32).to_ne_bytes());
    out.extend_from_slice(&(pkt.len() as u32).to_ne_bytes());
    out.extend_from_slice(pkt.get(..caplen).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pcap_file_and_records_have_the_classic_layout() {
        let h = pcap_file_header();
        assert_eq!(u32::from_ne_bytes(h[0..4].try_into().unwrap()), 0xa1b2_c3d4);
        assert_eq!(u32::from_ne_bytes(h[20..24].try_into().unwrap()), 101);
        let mut r = Vec::new();
        pcap_record(&mut r, 1_700_000_000, 250, &[0x45, 0, 0, 20]);
        assert_eq!(r.len(), 16 + 4);
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 4);
        assert_eq!(u32::from_ne_bytes(r[12..16].try_into().unwrap()), 4);
        assert_eq!(&r[16..], &[0x45, 0, 0, 20]);
    }

    #[test]
    fn a_pcap_copy_is_written_where_asked() {
        let dir = std::env::temp_dir().join(format!("swcache-copy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.pcap");
        let mut s = CopySink::open(&ReturnCopy::Pcap(path.clone())).unwrap();
        s.write(&[
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
        ])
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 24 + 16 + 20);
        std::fs::remove_dir_all(&dir).unwrap();
        // A directory that does not exist is an error naming the flag.
        let e = CopySink::open(&ReturnCopy::Pcap("/nonexistent/dir/r.pcap".into())).unwrap_err();
        assert!(format!("{e:#}").contains("--return-copy"), "{e:#}");
    }
}
