//! The packet trace (`swrouter trace add N [filter]`, like VPP's `trace add`): the next N
//! received packets that match the filter are marked `TRACED` at the start of the pipeline,
//! and the runner records, for each, every stage it crossed with that stage's verdict, plus the
//! WCCP stage's decision (services tried, redirect-list rule, bucket or mask value, cache,
//! method, affinity, or the named reason it was not redirected).
//!
//! Cost when nothing is armed: one relaxed atomic load per burst ([`Tracer::is_armed`]) and a
//! flag test per packet (a packet marked earlier may still be in flight: queued for ARP or
//! handed to another NAT worker). Only marked packets take the recording path.
//!
//! Records are kept per worker, at most [`RECORDS_PER_WORKER`] each (the oldest go first,
//! counted in `discarded`), and merged in time order by `swrouter trace show`.

pub mod filter;

use super::packet::Packet;
use super::stage::{StageKind, Verdict};
use crate::tables::Tables;
pub use filter::{FilterError, TraceFilter};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Records each worker keeps; the oldest are discarded beyond this.
pub const RECORDS_PER_WORKER: usize = 1000;
/// Most packets one `trace add` may mark.
pub const MAX_TRACE_COUNT: u32 = 1000;

/// The trace state the control plane and the workers share.
#[derive(Debug)]
pub struct Tracer {
    /// True while packets remain to be marked: the per-burst check.
    armed: AtomicBool,
    /// Packets still to be marked.
    remaining: AtomicU64,
    /// The filter in force (read by a worker once per burst while armed).
    filter: Mutex<Arc<TraceFilter>>,
    /// The filter as the operator wrote it, and the count asked for.
    asked: Mutex<(String, u32)>,
    /// Packet numbers handed out (the number of the last marked packet).
    marked: AtomicU64,
    /// Records dropped because a worker's buffer was full.
    discarded: AtomicU64,
    /// One buffer per worker.
    buffers: Vec<Mutex<VecDeque<TraceRecord>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A worker that panicked while holding a buffer left whole records in it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Tracer {
    /// A disarmed tracer for `workers` workers.
    pub fn new(workers: usize) -> Tracer {
        Tracer {
            armed: AtomicBool::new(false),
            remaining: AtomicU64::new(0),
            filter: Mutex::new(Arc::new(TraceFilter::default())),
            asked: Mutex::new((String::new(), 0)),
            marked: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            buffers: (0..workers.max(1))
                .map(|_| Mutex::new(VecDeque::new()))
                .collect(),
        }
    }

    /// Marks the next `count` received packets that match `filter` (replacing a trace still
    /// armed; records already captured stay until [`Tracer::clear`]).
    pub fn arm(&self, count: u32, filter: TraceFilter, text: &str) {
        *lock(&self.filter) = Arc::new(filter);
        *lock(&self.asked) = (text.to_string(), count);
        self.remaining.store(u64::from(count), Ordering::Relaxed);
        self.armed.store(count > 0, Ordering::Release);
    }

    /// Disarms and forgets every record.
    pub fn clear(&self) {
        self.armed.store(false, Ordering::Relaxed);
        self.remaining.store(0, Ordering::Relaxed);
        *lock(&self.asked) = (String::new(), 0);
        self.discarded.store(0, Ordering::Relaxed);
        for b in &self.buffers {
            lock(b).clear();
        }
    }

    /// The per-burst check: false (the common case) costs one relaxed load.
    #[inline(always)]
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed)
    }

    /// The filter in force.
    pub fn filter(&self) -> Arc<TraceFilter> {
        lock(&self.filter).clone()
    }

    /// Takes one of the remaining marks; its packet number, or None when none are left.
    pub fn claim(&self) -> Option<u64> {
        let taken = self
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1));
        match taken {
            Ok(left) => {
                if left == 1 {
                    self.armed.store(false, Ordering::Relaxed);
                }
                Some(self.marked.fetch_add(1, Ordering::Relaxed) + 1)
            }
            Err(_) => {
                self.armed.store(false, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps a finished record in `worker`'s buffer.
    pub fn deposit(&self, worker: usize, rec: TraceRecord) {
        let Some(b) = self.buffers.get(worker).or(self.buffers.last()) else {
            return;
        };
        let mut b = lock(b);
        if b.len() >= RECORDS_PER_WORKER {
            b.pop_front();
            self.discarded.fetch_add(1, Ordering::Relaxed);
        }
        b.push_back(rec);
    }

    /// Whether a trace is armed and how far it got, for `swrouter status`.
    pub fn status(&self) -> TraceStatus {
        let (filter, count) = lock(&self.asked).clone();
        TraceStatus {
            armed: self.is_armed(),
            filter,
            count,
            remaining: self.remaining.load(Ordering::Relaxed),
            captured: self.buffers.iter().map(|b| lock(b).len() as u64).sum(),
            discarded: self.discarded.load(Ordering::Relaxed),
            per_worker_limit: RECORDS_PER_WORKER as u64,
        }
    }

    /// Every worker's records, merged in time order, with the status.
    pub fn show(&self) -> TraceShow {
        let mut records: Vec<TraceRecord> = self
            .buffers
            .iter()
            .flat_map(|b| lock(b).iter().cloned().collect::<Vec<_>>())
            .collect();
        records.sort_by_key(|r| (r.time_unix_us, r.packet, r.part));
        TraceShow {
            status: self.status(),
            records,
        }
    }
}

/// The trace's state in `swrouter status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceStatus {
    /// Packets are still being marked.
    pub armed: bool,
    /// The filter of the last `trace add` ("" for every packet).
    pub filter: String,
    /// The count the last `trace add` asked for.
    pub count: u32,
    /// Packets still to be marked.
    pub remaining: u64,
    /// Records held (all workers).
    pub captured: u64,
    /// Records dropped because a worker's buffer was full.
    pub discarded: u64,
    /// Records each worker keeps at most.
    pub per_worker_limit: u64,
}

/// The answer to `trace show`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TraceShow {
    /// Armed, counts, bound.
    pub status: TraceStatus,
    /// The records, oldest first.
    pub records: Vec<TraceRecord>,
}

/// One packet's trip through one worker's pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// The packet's number, in marking order (1 = the first packet of the trace).
    pub packet: u64,
    /// 1 for the trip from reception; 2, 3, ... when the packet ran again later (released
    /// from the ARP queue, or run by the worker a NAT hand-off sent it to).
    pub part: u32,
    /// The worker that ran it.
    pub worker: usize,
    /// The interface it was received on.
    pub interface: String,
    /// When the trip started, Unix time in microseconds.
    pub time_unix_us: u64,
    /// The packet as it entered (addresses, ports, flags, length).
    pub summary: String,
    /// The stages it crossed, in order.
    pub stages: Vec<StageStep>,
}

/// One stage a traced packet crossed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageStep {
    /// The stage's status name.
    pub stage: String,
    /// `pass`, `transmit`, `jump`, `consume`, `queue`, `hand-off` or `drop`.
    pub verdict: String,
    /// The drop reason, the jump's target, the egress interface and next hop, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The packet after this stage, when the stage rewrote it (NAT, GRE encapsulation,
    /// steering rewrites).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrote: Option<String>,
    /// The WCCP redirect decision (the wccp-redirect stage only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wccp: Option<WccpTrace>,
}

/// Why the wccp-redirect stage did not redirect a packet (or one service did not take it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WccpReason {
    /// The router made it (GRE outer packets, probes, control traffic).
    RouterOriginated,
    /// A cache returned it (GRE or L2 return): never redirected again.
    ReturnedByCache,
    /// It comes from a cache of a service group (the cache's own fetches).
    FromCache,
    /// It arrived on a `wccp-exclude-in` interface.
    ExcludedInterface,
    /// Neither its receiving interface redirects in, nor its egress redirects out, for any
    /// service (or for this one).
    NotRedirectedHere,
    /// The service does not intercept its protocol and ports.
    NotIntercepted,
    /// The service's redirect list denied it.
    Denied,
    /// No cache holds its bucket or mask value.
    Unassigned,
    /// Fast failover took its cache out (probes unanswered).
    CacheProbedDown,
    /// GRE with DF: too big for the cache link once encapsulated (fragmentation needed sent).
    MtuExceeded,
    /// A non-first fragment whose first fragment was not seen.
    FragmentUnmatched,
    /// A non-first fragment that follows its first fragment's decision (normal path).
    FragmentFollowsFirst,
    /// A GSO super-packet that is not TCP over IPv4 (cannot be segmented for GRE).
    GsoNotTcp,
}

impl WccpReason {
    /// The kebab-case name (as in the JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            WccpReason::RouterOriginated => "router-originated",
            WccpReason::ReturnedByCache => "returned-by-cache",
            WccpReason::FromCache => "from-cache",
            WccpReason::ExcludedInterface => "excluded-interface",
            WccpReason::NotRedirectedHere => "not-redirected-here",
            WccpReason::NotIntercepted => "not-intercepted",
            WccpReason::Denied => "denied",
            WccpReason::Unassigned => "unassigned",
            WccpReason::CacheProbedDown => "cache-probed-down",
            WccpReason::MtuExceeded => "mtu-exceeded",
            WccpReason::FragmentUnmatched => "fragment-unmatched",
            WccpReason::FragmentFollowsFirst => "fragment-follows-first",
            WccpReason::GsoNotTcp => "gso-not-tcp",
        }
    }
}

/// What flow affinity did for a redirected TCP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Affinity {
    /// Off, or not TCP.
    Off,
    /// The flow was not in the table (a SYN is remembered now).
    Miss,
    /// The flow was known and stays where its bucket points.
    Hit,
    /// The flow was known and kept on its cache although its bucket moved.
    HitKept,
}

/// One service the wccp-redirect stage tried, in priority order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTry {
    /// Service id.
    pub service: u8,
    /// `redirected`, or why this service did not take the packet.
    pub outcome: String,
    /// The redirect-list rule that decided (1-based), when the list has rules; none with a
    /// `denied` outcome means no rule matched (the implicit deny).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<usize>,
}

/// The wccp-redirect stage's decision about one traced packet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WccpTrace {
    /// The services tried, in priority order.
    pub tried: Vec<ServiceTry>,
    /// True when the packet went to a cache.
    pub redirected: bool,
    /// Why it was not redirected (kebab-case [`WccpReason`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<WccpReason>,
    /// The service that redirected it (or whose fail policy handled it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<u8>,
    /// The cache it went to (or would have, when probed down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Ipv4Addr>,
    /// Forwarding method: `gre` or `l2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Primary hash bucket (hash assignment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<u8>,
    /// Alternate bucket, when the alternate hash decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternate_bucket: Option<u8>,
    /// The masked fields (mask assignment): `src-ip/dst-ip/src-port/dst-port` in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask_value: Option<String>,
    /// Flow affinity's part.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// The fail policy applied when no cache could take it (`open`, `closed-drop`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_policy: Option<String>,
}

impl WccpTrace {
    /// Adds a service's outcome to the list tried.
    pub fn tried(&mut self, service: u8, outcome: &str, rule: Option<usize>) {
        self.tried.push(ServiceTry {
            service,
            outcome: outcome.to_string(),
            rule,
        });
    }

    /// Ends the decision with a reason for not redirecting.
    pub fn not_redirected(&mut self, reason: WccpReason) {
        self.redirected = false;
        self.reason = Some(reason);
    }
}

/// What stages write about a traced packet for the runner to attach to their step.
#[derive(Debug, Default)]
pub struct StageNotes {
    /// The wccp-redirect stage's decision.
    pub wccp: Option<WccpTrace>,
}

/// A worker's recording state: the record of the packet being run.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    /// The record of the traced packet now running.
    pub current: Option<TraceRecord>,
    /// The packet summary before the stage now running (to see rewrites).
    pub before: String,
}

/// Unix time now, in microseconds.
pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl TraceRecord {
    /// A record for `pkt` starting now on `worker`.
    pub fn start(packet: u64, part: u32, worker: usize, pkt: &Packet, tables: &Tables) -> Self {
        TraceRecord {
            packet,
            part,
            worker,
            interface: tables
                .ifaces
                .get(usize::from(pkt.meta.rx_if))
                .map_or_else(|| "-".to_string(), |i| i.name.clone()),
            time_unix_us: unix_us(),
            summary: summarize(pkt.frame()),
            stages: Vec::new(),
        }
    }
}

/// The step a stage's verdict makes, with what the packet's metadata says about it.
pub fn step(
    kind: StageKind,
    verdict: &Verdict,
    pkt: &Packet,
    tables: &Tables,
    notes: &mut StageNotes,
) -> StageStep {
    let ifname = |id: u16| {
        tables
            .ifaces
            .get(usize::from(id))
            .map_or_else(|| format!("#{id}"), |i| i.name.clone())
    };
    let next_hop = || {
        let mut s = format!("on {}", ifname(pkt.meta.tx_if));
        if pkt.meta.next_hop != Ipv4Addr::UNSPECIFIED {
            let _ = write!(s, " via {}", pkt.meta.next_hop);
        }
        s
    };
    let cluster = kind == StageKind::Cluster;
    let (v, mut detail) = match verdict {
        Verdict::Continue => ("pass", None),
        Verdict::Consumed => ("consume", None),
        Verdict::Queued if cluster => (
            "queue",
            Some("held: its id is moving to another node".to_string()),
        ),
        Verdict::Queued => ("queue", Some(format!("waiting for ARP, {}", next_hop()))),
        Verdict::Transmit => ("transmit", Some(next_hop())),
        Verdict::Jump(to) => ("jump", Some(format!("to {}", to.as_str()))),
        Verdict::HandOff => (
            "hand-off",
            Some("to the NAT worker that owns the session (or the switch processor)".into()),
        ),
        Verdict::Drop(r) => ("drop", Some(r.as_str().to_string())),
    };
    // The cluster stage names the packet's distribution id (none: not distributed).
    if let (true, Some(id)) = (cluster, pkt.meta.cluster_id) {
        detail = Some(match detail {
            Some(d) => format!("{d} (id {id})"),
            None => format!("id {id}"),
        });
    }
    StageStep {
        stage: kind.as_str().to_string(),
        verdict: v.to_string(),
        detail,
        rewrote: None,
        wccp: notes.wccp.take(),
    }
}

/// A short tcpdump-like summary of an Ethernet frame: protocol, addresses, ports, TCP flags,
/// IPv4 length; for WCCP GRE, the outer addresses and the inner packet.
pub fn summarize(frame: &[u8]) -> String {
    match frame.get(12..14) {
        Some([0x08, 0x00]) => frame
            .get(14..)
            .map_or_else(|| "IPv4 (truncated)".into(), summarize_ip),
        Some([0x08, 0x06]) => {
            let op = frame.get(20..22).map(|b| u16::from_be_bytes([b[0], b[1]]));
            let ip = |at: usize| {
                frame
                    .get(at..at + 4)
                    .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            };
            match (op, ip(28), ip(38)) {
                (Some(1), Some(s), Some(t)) => format!("ARP who-has {t} tell {s}"),
                (Some(2), Some(s), _) => format!("ARP reply {s} is-at"),
                _ => "ARP".into(),
            }
        }
        Some(&[a, b]) => format!("ethertype 0x{:04x}", u16::from_be_bytes([a, b])),
        _ => "runt frame".into(),
    }
}

/// [`summarize`] from the IPv4 header on.
fn summarize_ip(l3: &[u8]) -> String {
    let (Some(&vihl), Some(&proto)) = (l3.first(), l3.get(9)) else {
        return "IPv4 (truncated)".into();
    };
    let hlen = usize::from(vihl & 0x0f) * 4;
    let addr = |at: usize| {
        l3.get(at..at + 4)
            .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    };
    let (Some(src), Some(dst)) = (addr(12), addr(16)) else {
        return "IPv4 (truncated)".into();
    };
    if vihl >> 4 != 4 || hlen < 20 || l3.len() < hlen {
        return format!("IPv4 {src} > {dst} (bad header)");
    }
    let len = l3.len();
    let frag = l3
        .get(6..8)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) & 0x1fff);
    let l4 = &l3[hlen..];
    let ports = || {
        l4.get(0..4).map(|b| {
            (
                u16::from_be_bytes([b[0], b[1]]),
                u16::from_be_bytes([b[2], b[3]]),
            )
        })
    };
    match proto {
        6 | 17 if frag == 0 => {
            let name = if proto == 6 { "TCP" } else { "UDP" };
            let Some((sp, dp)) = ports() else {
                return format!("{name} {src} > {dst} (truncated) len {len}");
            };
            let flags = if proto == 6 {
                l4.get(13)
                    .map_or(String::new(), |&f| format!(" [{}]", tcp_flags(f)))
            } else {
                String::new()
            };
            format!("{name} {src}:{sp} > {dst}:{dp}{flags} len {len}")
        }
        1 if frag == 0 => {
            let (t, c) = (l4.first().copied(), l4.get(1).copied());
            match (t, c) {
                (Some(8), _) => format!("ICMP {src} > {dst} echo request len {len}"),
                (Some(0), _) => format!("ICMP {src} > {dst} echo reply len {len}"),
                (Some(t), Some(c)) => format!("ICMP {src} > {dst} type {t} code {c} len {len}"),
                _ => format!("ICMP {src} > {dst} len {len}"),
            }
        }
        47 if frag == 0 => match gre::decapsulate(l4) {
            Ok(d) => match d.redirect {
                Some(r) => format!(
                    "GRE {src} > {dst} WCCP service {} bucket {}{} [{}]",
                    r.service_id,
                    r.primary_bucket,
                    if r.alternate_used {
                        format!(" alternate {}", r.alternate_bucket)
                    } else {
                        String::new()
                    },
                    summarize_ip(d.inner)
                ),
                None => format!("GRE {src} > {dst} [{}]", summarize_ip(d.inner)),
            },
            Err(_) => format!("GRE {src} > {dst} len {len}"),
        },
        p => {
            let f = if frag != 0 {
                format!(" fragment offset {}", usize::from(frag) * 8)
            } else {
                String::new()
            };
            format!("IPv4 proto {p} {src} > {dst}{f} len {len}")
        }
    }
}

/// TCP flags as tcpdump prints them: S, F, R, P, U, and `.` for ACK.
fn tcp_flags(f: u8) -> String {
    let mut s = String::new();
    for (bit, c) in [
        (0x02, 'S'),
        (0x01, 'F'),
        (0x04, 'R'),
        (0x08, 'P'),
        (0x20, 'U'),
    ] {
        if f & bit != 0 {
            s.push(c);
        }
    }
    if f & 0x10 != 0 {
        s.push('.');
    }
    if s.is_empty() {
        s.push_str("none");
    }
    s
}

/// `trace show` for people: one block per packet.
pub fn render(show: &TraceShow) -> String {
    let mut s = String::new();
    let st = &show.status;
    let _ = writeln!(s, "{}", status_line(st));
    if show.records.is_empty() {
        s.push_str("no packets traced\n");
        return s;
    }
    for r in &show.records {
        let secs = r.time_unix_us / 1_000_000;
        let t = format!(
            "{:02}:{:02}:{:02}.{:06}",
            (secs / 3600) % 24,
            (secs / 60) % 60,
            secs % 60,
            r.time_unix_us % 1_000_000
        );
        let part = if r.part > 1 {
            format!(" (part {}: ran again)", r.part)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "\npacket {}{part}  worker {}  rx {}  {t} UTC\n  {}",
            r.packet, r.worker, r.interface, r.summary
        );
        for st in &r.stages {
            let _ = write!(s, "  {:<15} {}", st.stage, st.verdict);
            if let Some(d) = &st.detail {
                let _ = write!(s, " {d}");
            }
            s.push('\n');
            if let Some(w) = &st.wccp {
                render_wccp(&mut s, w);
            }
            if let Some(n) = &st.rewrote {
                let _ = writeln!(s, "      now: {n}");
            }
        }
    }
    s
}

/// The WCCP decision's lines under its step.
fn render_wccp(s: &mut String, w: &WccpTrace) {
    for t in &w.tried {
        let rule = match (t.rule, t.outcome.as_str()) {
            (Some(r), _) => format!(" (redirect-list rule {r})"),
            (None, "denied") => " (no redirect-list rule matched: implicit deny)".into(),
            _ => String::new(),
        };
        let _ = writeln!(s, "      service {}: {}{rule}", t.service, t.outcome);
    }
    if w.redirected {
        let _ = write!(
            s,
            "      redirected: service {} to cache {} by {}",
            w.service.map_or("-".into(), |v| v.to_string()),
            w.cache.map_or("-".into(), |c| c.to_string()),
            w.method.as_deref().unwrap_or("-")
        );
    } else {
        let _ = write!(
            s,
            "      not redirected: {}",
            w.reason.map_or("-", WccpReason::as_str)
        );
        if let Some(c) = w.cache {
            let _ = write!(s, " (cache {c})");
        }
    }
    if let Some(b) = w.bucket {
        let _ = write!(s, ", bucket {b}");
    }
    if let Some(b) = w.alternate_bucket {
        let _ = write!(s, ", alternate bucket {b}");
    }
    if let Some(m) = &w.mask_value {
        let _ = write!(s, ", mask value {m}");
    }
    if let Some(a) = w.affinity {
        let a = match a {
            Affinity::Off => "off",
            Affinity::Miss => "miss",
            Affinity::Hit => "hit",
            Affinity::HitKept => "hit, kept on its cache",
        };
        let _ = write!(s, ", affinity {a}");
    }
    if let Some(p) = &w.fail_policy {
        let _ = write!(s, ", fail-policy {p}");
    }
    s.push('\n');
}

/// One line about the trace for `swrouter status` and `trace show`.
pub fn status_line(st: &TraceStatus) -> String {
    let filter = if st.filter.is_empty() {
        "every packet".to_string()
    } else {
        format!("filter `{}`", st.filter)
    };
    let mut s = if st.armed {
        format!(
            "trace: armed, {} of {} packets left to mark ({filter}), {} captured",
            st.remaining, st.count, st.captured
        )
    } else if st.count > 0 {
        format!(
            "trace: done ({} packets asked, {filter}), {} captured",
            st.count, st.captured
        )
    } else {
        format!("trace: off, {} captured", st.captured)
    };
    if st.discarded > 0 {
        let _ = write!(
            s,
            ", {} discarded (each worker keeps {})",
            st.discarded, st.per_worker_limit
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(packet: u64, t: u64) -> TraceRecord {
        TraceRecord {
            packet,
            part: 1,
            worker: 0,
            interface: "eth0".into(),
            time_unix_us: t,
            summary: String::new(),
            stages: Vec::new(),
        }
    }

    #[test]
    fn claims_stop_at_the_count_and_disarm() {
        let t = Tracer::new(2);
        assert!(!t.is_armed());
        assert_eq!(t.claim(), None, "nothing armed");
        t.arm(2, TraceFilter::default(), "");
        assert!(t.is_armed());
        assert_eq!(t.claim(), Some(1));
        assert!(t.is_armed());
        assert_eq!(t.claim(), Some(2));
        assert!(!t.is_armed(), "the last mark disarms");
        assert_eq!(t.claim(), None);
        let st = t.status();
        assert_eq!((st.armed, st.count, st.remaining), (false, 2, 0));
        // A new trace numbers on; clear disarms.
        t.arm(5, TraceFilter::default(), "tcp");
        assert_eq!(t.claim(), Some(3));
        t.clear();
        assert!(!t.is_armed());
        assert_eq!(t.claim(), None);
    }

    #[test]
    fn buffers_are_bounded_per_worker_and_merged_in_time_order() {
        let t = Tracer::new(2);
        t.deposit(1, record(2, 20));
        t.deposit(0, record(1, 10));
        t.deposit(0, record(3, 30));
        let show = t.show();
        assert_eq!(
            show.records.iter().map(|r| r.packet).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        for i in 0..RECORDS_PER_WORKER as u64 + 5 {
            t.deposit(0, record(100 + i, 100 + i));
        }
        let st = t.status();
        assert_eq!(
            st.captured,
            RECORDS_PER_WORKER as u64 + 1,
            "worker 0 full, 1 on worker 1"
        );
        assert_eq!(st.discarded, 7, "the two early ones and five more");
        let show = t.show();
        assert_eq!(show.records[0].packet, 2, "worker 1's record stays");
        assert_eq!(show.records[1].packet, 105, "worker 0's oldest went first");
        assert!(status_line(&st).contains("7 discarded (each worker keeps 1000)"));
        t.clear();
        assert_eq!(t.status().captured, 0);
    }

    #[test]
    fn summaries_read_like_tcpdump_and_never_panic() {
        let mut f = vec![0u8; 14 + 40];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 9] = 6;
        f[26..30].copy_from_slice(&[10, 0, 1, 2]);
        f[30..34].copy_from_slice(&[10, 0, 2, 80]);
        f[34..36].copy_from_slice(&40000u16.to_be_bytes());
        f[36..38].copy_from_slice(&80u16.to_be_bytes());
        f[47] = 0x12;
        assert_eq!(
            summarize(&f),
            "TCP 10.0.1.2:40000 > 10.0.2.80:80 [S.] len 40"
        );
        for n in 0..f.len() {
            let _ = summarize(&f[..n]);
        }
        f[14 + 9] = 17;
        assert_eq!(summarize(&f), "UDP 10.0.1.2:40000 > 10.0.2.80:80 len 40");
    }
}
