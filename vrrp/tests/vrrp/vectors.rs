//! Real keepalived v2.2.7 captures (`tests/data/`, see its README): the parser accepts them and
//! says which checksum they use, and the builders reproduce them byte for byte. Then frames
//! this crate builds are decoded by tshark, which must report no malformed packet and no expert
//! error or warning.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use netwire::MacAddr;
use vrrp::wire::{self, ChecksumMode};
use vrrp::{Action, Config, VirtualRouter};

/// The frames of a classic little-endian pcap file (what tcpdump -w writes).
fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &data[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "little-endian microsecond pcap"
    );
    assert_eq!(
        u32::from_le_bytes(data[20..24].try_into().unwrap()),
        1,
        "Ethernet"
    );
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let caplen = u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        frames.push(data[at + 16..at + 16 + caplen].to_vec());
        at += 16 + caplen;
    }
    assert_eq!(at, data.len(), "trailing bytes in {}", path.display());
    frames
}

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]);
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, frame) in frames.iter().enumerate() {
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(frame);
    }
    std::fs::write(path, out).unwrap();
}

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

const KEEPALIVED_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0xaa, 0x01]);
const KEEPALIVED_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const VIPS: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 100), Ipv4Addr::new(192, 0, 2, 101)];

/// Checks one capture; returns the (priority, interval) of each advert in order.
fn check_capture(name: &str) -> Vec<(u8, u16)> {
    let mut adverts = Vec::new();
    let mut arps = Vec::new();
    for frame in read_pcap(&data(name)) {
        if frame[12..14] == [0x08, 0x06] {
            arps.push(frame);
            continue;
        }
        let rx = wire::parse_frame(&frame)
            .unwrap_or_else(|e| panic!("{name}: keepalived advert refused: {e}"));
        // keepalived 2.2.7 uses the RFC 5798 pseudo-header checksum for IPv4 multicast.
        assert_eq!(rx.checksum, ChecksumMode::PseudoHeader, "{name}");
        assert_eq!((rx.src, rx.dst), (KEEPALIVED_IP, wire::MULTICAST_ADDR));
        assert_eq!(rx.advert.vrid(), 51);
        assert_eq!(rx.advert.addrs(), &VIPS);
        // Same parameters, same bytes (identification taken from the capture).
        let ident = u16::from_be_bytes([frame[18], frame[19]]);
        let ours = wire::build_frame(
            &rx.advert,
            KEEPALIVED_MAC,
            KEEPALIVED_IP,
            ident,
            ChecksumMode::PseudoHeader,
        );
        assert_eq!(ours, frame, "{name}: our advert differs from keepalived's");
        adverts.push((rx.advert.priority(), rx.advert.max_adver_int()));
    }
    let expected: Vec<_> = VIPS
        .iter()
        .map(|&vip| wire::gratuitous_arp(KEEPALIVED_MAC, vip))
        .collect();
    assert_eq!(arps, expected, "{name}: gratuitous ARPs differ");
    adverts
}

#[test]
fn keepalived_default_interval_capture() {
    let adverts = check_capture("keepalived-default.pcap");
    assert_eq!(adverts, vec![(100, 100), (100, 100), (0, 100)]);
}

#[test]
fn keepalived_10ms_capture() {
    let adverts = check_capture("keepalived-fast.pcap");
    assert_eq!(
        adverts,
        vec![(200, 10), (200, 10), (200, 10), (200, 10), (0, 10)]
    );
}

#[test]
fn keepalived_adverts_drive_a_backup() {
    // A priority-100 backup for the same VRID follows keepalived's priority-200 master, learns
    // its 10 ms interval and takes over Skew_Time after its priority-0 advert.
    let t0 = Instant::now();
    let cfg = Config::new(51, Ipv4Addr::new(192, 0, 2, 2), VIPS.to_vec());
    let mut vr = VirtualRouter::new(cfg, t0).unwrap();
    vr.startup(t0);
    let mut now = t0;
    let mut last = Vec::new();
    for frame in read_pcap(&data("keepalived-fast.pcap")) {
        if let Ok(rx) = wire::parse_frame(&frame) {
            now += Duration::from_millis(100);
            last = vr.on_received(&rx, now);
        }
    }
    assert!(last.is_empty());
    assert_eq!(vr.master_adver_interval(), 10);
    assert_eq!(vr.counters().priority_zero_received, 1);
    assert_eq!(vr.next_deadline(), Some(now + vr.skew_time()));
}

/// Frames a VirtualRouter emits: owner start-up (advert, gratuitous ARPs), periodic adverts at
/// 10 ms, the priority-0 advert at shutdown.
fn emitted_frames() -> Vec<Vec<u8>> {
    let t0 = Instant::now();
    let mut cfg = Config::new(51, KEEPALIVED_IP, VIPS.to_vec());
    cfg.priority = 255;
    cfg.adver_interval = 1;
    let mut vr = VirtualRouter::new(cfg, t0).unwrap();
    let mut actions = vr.startup(t0);
    for _ in 0..3 {
        let due = vr.next_deadline().unwrap();
        actions.extend(vr.on_timer(due));
    }
    actions.extend(vr.shutdown(t0 + Duration::from_secs(1)));
    let mut frames = Vec::new();
    for action in actions {
        match action {
            Action::SendAdvert { frame, .. } => frames.push(frame),
            Action::SendGratuitousArp { frames: arps, .. } => frames.extend(arps),
            _ => {}
        }
    }
    frames
}

#[test]
fn tshark_decodes_our_frames_cleanly() {
    if Command::new("tshark").arg("--version").output().is_err() {
        println!("tshark is not installed: skipping the tshark decode check");
        return;
    }
    let frames = emitted_frames();
    let path = std::env::temp_dir().join(format!("vrrp-tshark-{}.pcap", std::process::id()));
    write_pcap(&path, &frames);
    let out = Command::new("tshark")
        .args(["-n", "-V", "-o", "vrrp.v3_checksum_as_in_v2:FALSE", "-r"])
        .arg(&path)
        .output();
    let _ = std::fs::remove_file(&path);
    let out = out.unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for bad in [
        "Malformed",
        "Expert Info (Error",
        "Expert Info (Warning",
        "[Checksum Status: Bad]",
    ] {
        assert!(!text.contains(bad), "tshark reports `{bad}`:\n{text}");
    }
    let good = text.matches("[Checksum Status: Good]").count();
    let adverts = text.matches("Virtual Router Redundancy Protocol").count();
    assert_eq!(adverts, 5, "{text}");
    assert_eq!(good, adverts, "every VRRP checksum verifies:\n{text}");
    assert_eq!(text.matches("Is gratuitous: True").count(), 2, "{text}");
    assert!(text.contains("Source: 00:00:5e:00:01:33"), "{text}");
}
