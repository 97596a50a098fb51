//! A malformed-datagram barrage end to end (issue 13): a rogue host on a second cache-side
//! segment sends thousands of mutants of real swcache messages to swrouter's UDP 2048, half from
//! its own address and half with the joined cache's address spoofed (a raw socket), while an
//! MD5-protected group has that cache joined with all 256 buckets.
//!
//! Afterwards the group's view, Member Change Number, key and the cache's buckets are untouched,
//! the cache still serves, every datagram is accounted for (dropped in the pipeline or by the
//! engine under exactly one reason), and the router's resident memory has not grown.
//!
//! ```text
//! client 10.0.1.2 ── eth0 10.0.1.1 [swrouter] eth1 10.0.2.1 ── server 10.0.2.2
//!                         eth2 10.0.3.1 ── cache 10.0.3.2 (swcache + Squid, password)
//!                         eth3 10.0.4.1 ── rogue 10.0.4.2 (accepts WCCP: redirects nothing)
//! ```
#![allow(clippy::unwrap_used, missing_docs)]

use crate::wccp_variants::WccpLab;
use integration::stage_of;
use integration::wccplab::{cache, router_status, service, wait_for, CacheHost};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use wccp::cache::{CacheConfig, CacheEngine, CacheServiceConfig};
use wccp::router::{RouterEngine, RouterServiceConfig};
use wccp::security::{Password, Security};
use wccp::wire::{Header, MessageType, ServiceInfo};

const PASSWORD: &[u8] = b"s3cret";
const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 1);
const CACHE: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 2);
/// Datagrams in the barrage.
const N: u64 = 5000;
/// Resident memory the router may gain over the barrage.
const RSS_BOUND_KIB: u64 = 2048;
/// Local-delivery drops a datagram to UDP 2048 can meet before the WCCP engine sees it.
const DELIVERY_DROPS: [&str; 7] = [
    "wccp-reverse-path",
    "control-queue-full-known",
    "control-queue-full-others",
    "udp-malformed",
    "udp-bad-checksum",
    "wccp-not-cache-interface",
    "local-fragment",
];
/// Engine counters that annotate a message rather than drop it.
const NOTES: [&str; 2] = ["wccp-trailing-octets", "wccp-skipped-component"];

/// xorshift64*: deterministic mutants on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// What swcache's engine sends while it joins a router with our address and password (signed
/// HERE_I_AMs and REDIRECT_ASSIGNs), produced in process on a virtual clock.
fn seeds() -> Vec<Vec<u8>> {
    let mut now = Instant::now();
    let mut router = RouterEngine::new();
    router
        .add_service(RouterServiceConfig::standard(0).with_password(PASSWORD))
        .unwrap();
    let config = CacheConfig::new(CACHE, vec![ROUTER])
        .with_service(CacheServiceConfig::new(ServiceInfo::standard(0)).with_password(PASSWORD));
    let mut c = CacheEngine::new(now, config).unwrap();
    let end = now + Duration::from_secs(40);
    let (mut sent, mut buf) = (Vec::new(), Vec::new());
    while now < end {
        loop {
            let mut moved = false;
            while let Some(t) = c.poll_transmit(now, &mut buf) {
                sent.push(buf[..t.size].to_vec());
                router.handle_message(now, CACHE, ROUTER, &buf[..t.size]);
                moved = true;
            }
            while let Some(t) = router.poll_transmit(now, &mut buf) {
                c.handle_message(now, ROUTER, &buf[..t.size]);
                moved = true;
            }
            while router.poll_event().is_some() {}
            while c.poll_event().is_some() {}
            if !moved {
                break;
            }
        }
        let next = [router.poll_timeout(), c.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end);
        now = next.max(now + Duration::from_millis(1)).min(end);
        router.handle_timeout(now);
        c.handle_timeout(now);
    }
    sent.retain(|m| {
        matches!(
            Header::peek_type(m),
            Some(MessageType::HereIAm | MessageType::RedirectAssign)
        )
    });
    sent
}

/// Where each component of `m` starts, following the Length fields while they fit.
fn component_offsets(m: &[u8]) -> Vec<usize> {
    let (mut at, mut out) = (8, Vec::new());
    while at + 4 <= m.len() {
        out.push(at);
        at += 4 + usize::from(u16::from_be_bytes([m[at + 2], m[at + 3]]));
    }
    out
}

/// One malformed variant of `seed` (never the seed itself).
fn mutant(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut m = seed.to_vec();
    match rng.below(9) {
        0 => m.truncate(rng.below(seed.len())),
        1 => {
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(m.len());
                m[at] ^= 1 << rng.below(8);
            }
        }
        // The header's Length at its edges.
        2 => {
            let body = (m.len() - 8) as u16;
            let v = rng.pick(&[0u16, 1, body - 4, body + 4, 0xfffc, 0xffff]);
            m[6..8].copy_from_slice(&v.to_be_bytes());
        }
        // A component's Length at its edges.
        3 => {
            let offs = component_offsets(&m);
            let at = offs[rng.below(offs.len())];
            let v = rng.pick(&[0u16, 2, 4, 0x7fff, 0xfffc, 0xffff]);
            m[at + 2..at + 4].copy_from_slice(&v.to_be_bytes());
        }
        // A word at count edges (counts are 32-bit and 4-aligned).
        4 => {
            let at = 8 + 4 * rng.below((m.len() - 8) / 4);
            let v = rng.pick(&[0u32, 1, 0xff, 0xffff, 0x8000_0000, u32::MAX]);
            m[at..at + 4].copy_from_slice(&v.to_be_bytes());
        }
        // Trailing junk: outside the Length, so the digest still verifies (a replay).
        5 => m.extend((0..1 + rng.below(48)).map(|_| rng.next() as u8)),
        // Changed, then signed with another password.
        6 => {
            let at = 32 + rng.below(m.len() - 32);
            m[at] ^= 0xa5;
            let _ = Security::Md5(Password::new(b"guessed")).sign(&mut m);
        }
        // Unsigned: the Security Info component says "none".
        7 => m[12..16].copy_from_slice(&0u32.to_be_bytes()),
        // Foreign types and versions.
        _ => {
            if rng.below(2) == 0 {
                let t = rng.pick(&[0u32, 11, 13, 99, u32::MAX]);
                m[0..4].copy_from_slice(&t.to_be_bytes());
            } else {
                let v = rng.pick(&[0u16, 0x0100, 0x0201, 0x0300, 0xffff]);
                m[4..6].copy_from_slice(&v.to_be_bytes());
            }
        }
    }
    if m == seed {
        m[20] ^= 0xff; // inside the MD5 digest
    }
    m
}

/// Sends the records of `file` (1 octet spoof flag, 2 octets length, the payload) from the
/// rogue: plain ones from a UDP socket on port 2048, spoofed ones as whole IPv4 packets from a
/// raw socket, with the joined cache's source address. Paced so no veth or ring queue overflows.
const SENDER: &str = r#"
import socket, struct, sys, time
data = open(sys.argv[1], 'rb').read()
src, spoof, dst = sys.argv[2], sys.argv[3], sys.argv[4]
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((src, 2048))
r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
s4, d4 = socket.inet_aton(spoof), socket.inet_aton(dst)
def csum(b):
    if len(b) % 2:
        b += b'\0'
    t = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while t >> 16:
        t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
at, n = 0, 0
while at < len(data):
    flag, ln = data[at], struct.unpack('!H', data[at + 1:at + 3])[0]
    p = data[at + 3:at + 3 + ln]
    at += 3 + ln
    if flag:
        ul = 8 + len(p)
        c = csum(s4 + d4 + struct.pack('!BBH', 0, 17, ul) + struct.pack('!HHHH', 2048, 2048, ul, 0) + p) or 0xffff
        udp = struct.pack('!HHHH', 2048, 2048, ul, c) + p
        ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + ul, 0, 0, 64, 17, 0, s4, d4)
        r.sendto(ip + udp, (dst, 0))
    else:
        u.sendto(p, (dst, 2048))
    n += 1
    if n % 50 == 0:
        time.sleep(0.003)
print(n)
"#;

fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The router's resident set in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// The counters the accounting needs, from one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    /// Datagrams the WCCP engine received (all types).
    rx: u64,
    /// Engine and group drops, the annotations left out.
    drops: u64,
    /// Pipeline drops a datagram to UDP 2048 can meet before the engine.
    pipeline: u64,
    /// Frames the kernel dropped before the router could read them, on the rogue's interface.
    ring_full: u64,
    /// Datagrams the router sent.
    tx: u64,
}

fn tally(s: &Value) -> Tally {
    let w = &s["wccp"];
    let sum = |m: &Value| -> u64 {
        m.as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| !NOTES.contains(&k.as_str()))
                    .map(|(_, v)| num(v))
                    .sum()
            })
            .unwrap_or(0)
    };
    let local = &stage_of(s, "local-delivery").unwrap()["drops"];
    let ipv4 = &stage_of(s, "ipv4-input").unwrap()["drops"];
    let eth3 = s["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "eth3")
        .unwrap();
    Tally {
        rx: w["received"].as_object().unwrap().values().map(num).sum(),
        drops: sum(&w["drops"]) + sum(&service(s, 0).unwrap()["drops"]),
        pipeline: DELIVERY_DROPS.iter().map(|r| num(&local[r])).sum::<u64>()
            + ipv4
                .as_object()
                .map(|o| o.values().map(num).sum())
                .unwrap_or(0),
        ring_full: num(&eth3["rx_ring_full"]),
        tx: w["sent"].as_object().unwrap().values().map(num).sum(),
    }
}

/// What the barrage must not change: (change number, key, designated cache, members, the
/// cache's buckets and bucket ranges).
fn group_view(s: &Value) -> (Value, Value, Value, Vec<Value>, Value, Value) {
    let svc = service(s, 0).unwrap();
    let c = cache(s, 0, "10.0.3.2").unwrap();
    let members = svc["caches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["address"].clone())
        .collect();
    (
        svc["change_number"].clone(),
        svc["key"].clone(),
        svc["designated_cache"].clone(),
        members,
        c["buckets"].clone(),
        c["bucket_ranges"].clone(),
    )
}

#[test]
fn malformed_barrage_from_a_rogue_changes_nothing_and_is_counted() {
    let wccp = "[[wccp.service]]\nid = 0\npassword = \"s3cret\"\n";
    let mut l = WccpLab::new("wbar", 2, ["wccp-redirect-in = [0]", "", ""], wccp);
    let rogue = l.caches[1].clone();
    let mut good = CacheHost::new(&l.lab, &l.caches[0], "cache-good", CACHE, ROUTER).unwrap();
    good.swcache_args = ["--password", "s3cret"].map(String::from).to_vec();
    good.start(&mut l.lab).unwrap();

    // The mutants, built while the cache joins.
    let seeds = seeds();
    assert!(seeds.len() >= 4, "{} seeds", seeds.len());
    let mut rng = Rng(0x0013_ba77_a6e5);
    let mut file = Vec::new();
    for i in 0..N {
        let seed = &seeds[rng.below(seeds.len())];
        let m = mutant(&mut rng, seed);
        file.push(u8::from(i % 2 == 1));
        file.extend_from_slice(&(m.len() as u16).to_be_bytes());
        file.extend_from_slice(&m);
    }
    let path = l.lab.dir().join("barrage.bin");
    std::fs::write(&path, file).unwrap();

    let before = wait_for(Duration::from_secs(45), Duration::from_millis(250), || {
        router_status(&l.socket).filter(|s| {
            cache(s, 0, "10.0.3.2").is_some_and(|c| c["buckets"] == 256 && c["usable"] == true)
        })
    })
    .unwrap_or_else(|| panic!("the cache did not get all buckets{}", l.logs(&[&good])));
    let pid = l.router.pid;
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap()
            .trim(),
        "swrouter"
    );
    let rss_before = rss_kib(pid);
    let (view, t0) = (group_view(&before), tally(&before));

    let started = Instant::now();
    let out = rogue
        .run_ok(
            "python3",
            &[
                "-c",
                SENDER,
                &path.to_string_lossy(),
                "10.0.4.2",
                "10.0.3.2",
                "10.0.4.1",
            ],
        )
        .unwrap();
    assert_eq!(out.trim(), N.to_string(), "the rogue sent them all");
    // The control plane drains its queues; wait until every datagram is accounted for.
    let accounted = |t: &Tally| {
        (t.drops - t0.drops) + (t.pipeline - t0.pipeline) + (t.ring_full - t0.ring_full)
    };
    let after = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        router_status(&l.socket).filter(|s| accounted(&tally(s)) >= N)
    });
    let window = started.elapsed();
    let after = after.unwrap_or_else(|| router_status(&l.socket).unwrap());
    let rss_after = rss_kib(pid);
    let t1 = tally(&after);
    let report = format!(
        "\nbefore {t0:?}\nafter  {t1:?}\nwindow {window:?}, RSS {rss_before} -> {rss_after} KiB\n\
         engine drops: {}\ngroup drops: {}\nlocal-delivery: {}\nipv4-input: {}\nsent: {}",
        after["wccp"]["drops"],
        service(&after, 0).unwrap()["drops"],
        stage_of(&after, "local-delivery").unwrap()["drops"],
        stage_of(&after, "ipv4-input").unwrap()["drops"],
        after["wccp"]["sent"],
    );
    eprintln!("{report}");

    // Nothing the group shows changed.
    assert_eq!(group_view(&after), view, "the group changed{report}");
    assert_eq!(cache(&after, 0, "10.0.3.2").unwrap()["usable"], true);
    assert!(
        cache(&after, 0, "10.0.4.2").is_none(),
        "the rogue joined{report}"
    );

    // Every datagram is dropped exactly once: in the kernel ring, in the pipeline before the
    // engine, or by the engine under one reason. The cache's own messages in the window are
    // received but not dropped, and (sent at most every 10 s) cannot be lost to a full queue
    // unless the spoofed half filled the members' queue at that instant, which the report shows.
    assert_eq!(accounted(&t1), N, "every datagram dropped once{report}");
    let reached_engine = N - (t1.pipeline - t0.pipeline) - (t1.ring_full - t0.ring_full);
    let cache_msgs = (t1.rx - t0.rx) - reached_engine;
    assert!(
        t1.rx - t0.rx >= reached_engine,
        "the engine received fewer than reached it{report}"
    );
    // The cache's HERE_I_AM every 10 s, and a REDIRECT_ASSIGN after each as designated cache.
    let legit_bound = 2 * (window.as_secs() / 10 + 1) + 2;
    assert!(
        cache_msgs <= legit_bound,
        "{cache_msgs} datagrams beyond the barrage reached the engine (bound {legit_bound}){report}"
    );

    // The rogue's own half reached the group (its address claiming the cache's identity);
    // the half spoofing the member's address arrived on eth3, which is not the way back to
    // 10.0.3.2, and was dropped before the engine (strict reverse path).
    let grew = |reason: &str| {
        num(&service(&after, 0).unwrap()["drops"][reason])
            - num(&service(&before, 0).unwrap()["drops"][reason])
    };
    assert!(grew("wccp-identity-mismatch") > 0, "{report}");
    let rpf = |s: &serde_json::Value| {
        num(&stage_of(s, "local-delivery").unwrap()["drops"]["wccp-reverse-path"])
    };
    assert_eq!(rpf(&after) - rpf(&before), N / 2, "spoofed half{report}");
    assert_eq!(grew("wccp-assign-stale-receive-id"), 0, "{report}");
    // Answers: the rogue's own datagrams are answered only after MD5 and identity checks,
    // which they fail; only the cache's own messages get I_SEE_YOUs.
    assert!(
        t1.tx - t0.tx <= legit_bound,
        "{} datagrams sent{report}",
        t1.tx - t0.tx
    );

    // Memory stays flat.
    assert!(
        rss_after.saturating_sub(rss_before) < RSS_BOUND_KIB,
        "RSS grew from {rss_before} to {rss_after} KiB{report}"
    );

    // The cache still serves.
    good.wait_squid(Duration::from_secs(15)).unwrap();
    let (ok, text, v) = l.fetch("http://10.0.2.2/file");
    assert!(
        ok && v.is_some_and(|v| v.contains("cache-good")),
        "{text}{}",
        l.logs(&[&good])
    );
    good.stop(&mut l.lab);
}
