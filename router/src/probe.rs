//! The router's one TCP prober: handshake probes from the router's own addresses, used by WCCP
//! fast failover (SPEC.md §4) and by steering health checks (issue 7).
//!
//! swrouter has no kernel socket on its interfaces, so a probe is a SYN built here and sent by
//! the control plane through the outbox (worker 0 routes and ARP-resolves it like any of the
//! router's packets, woken at once through an eventfd); the answer comes back through
//! ipv4-input to a [`PROBE_PORTS`] port and reaches [`Prober::on_segment`] through one bounded
//! queue.
//!
//! Every probe takes the next port of the range and a fresh, unpredictable initial sequence
//! number, so two probes of one target never share a 4-tuple. Reusing one (as the steering
//! checks once did) leaves the target holding a half-open connection, which answers the next
//! SYN only with a challenge ACK that Linux rate-limits to one per 500 ms
//! (`net.ipv4.tcp_invalid_ratelimit`): probes more often than that went unanswered in turns and
//! healthy devices were taken down together (issue 20).
//!
//! An answer counts only when it matches an outstanding probe exactly: from the probed address
//! and port, to the address and port the probe came from, a SYN-ACK acknowledging our sequence
//! number (accepted; closed at once with a RST so the target keeps no half-open connection), or
//! a RST whose acknowledgment is our sequence number plus one (refused: RFC 9293 §3.10.7.1,
//! the only acceptable reset in SYN-SENT). Anything else is ignored and counted.
//!
//! The prober does no I/O: it takes the time and returns the packets to send. [`Rounds`] adds
//! WCCP's periodic rounds with miss counting on top; steering's sans-IO `HealthMonitor` keeps
//! its own schedule and takes the outcomes directly.

use crate::wire::ipv4::{self, Ipv4Repr};
use netwire::tcp::{flags, TcpPacket, TcpRepr};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The router's TCP probe ports: the source ports of every health-check handshake; TCP to
/// them goes to the prober.
pub const PROBE_PORTS: std::ops::RangeInclusive<u16> = PROBE_PORT_FIRST..=PROBE_PORT_LAST;
const PROBE_PORT_FIRST: u16 = 60000;
const PROBE_PORT_LAST: u16 = 61999;

/// The probe ports in use (a probe in flight or lingering), written by the prober and read by
/// the workers: a segment to any other probe port is dropped in the data plane, so a flood on
/// the probe range cannot fill the prober's queue and make every target look dead.
#[derive(Debug)]
pub struct OpenPorts {
    bits: [AtomicU64; PROBE_PORT_WORDS],
}

/// 64-bit words of the [`OpenPorts`] bitmap.
const PROBE_PORT_WORDS: usize = (PROBE_PORT_LAST - PROBE_PORT_FIRST) as usize / 64 + 1;

impl Default for OpenPorts {
    fn default() -> Self {
        Self {
            bits: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl OpenPorts {
    /// True when `port` is a probe port with a probe in use.
    #[inline]
    pub fn is_open(&self, port: u16) -> bool {
        Self::slot(port).is_some_and(|(w, b)| self.bits[w].load(Ordering::Relaxed) & b != 0)
    }

    /// Probe ports in use now.
    pub fn count(&self) -> u32 {
        self.bits
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones())
            .sum()
    }

    fn set(&self, port: u16, open: bool) {
        if let Some((w, b)) = Self::slot(port) {
            if open {
                self.bits[w].fetch_or(b, Ordering::Relaxed);
            } else {
                self.bits[w].fetch_and(!b, Ordering::Relaxed);
            }
        }
    }

    fn slot(port: u16) -> Option<(usize, u64)> {
        PROBE_PORTS.contains(&port).then(|| {
            let i = usize::from(port - PROBE_PORTS.start());
            (i / 64, 1u64 << (i % 64))
        })
    }
}

/// How long an answered-or-replaced probe's port still recognises a late SYN-ACK (to close it
/// with a RST) before the port is forgotten.
const LINGER: Duration = Duration::from_secs(5);

/// Window our SYNs advertise.
const WINDOW: u16 = 1024;

/// The inner destination of WCCP's redirect probes (`probe = "redirect"`): 192.0.2.1, in
/// TEST-NET-1 (RFC 5737, documentation only), so it is no real origin a client could talk to.
/// Nothing of a probe's connection is routed toward it: the SYN and the closing RST go through
/// the redirection path to the cache, and the cache's proxy answers as this address.
pub const REDIRECT_PROBE_ORIGIN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// A probe sent through WCCP's redirection path instead of being routed to `remote`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeVia {
    /// The cache the packets are forwarded to (GRE or L2, as the group negotiated).
    pub cache: Ipv4Addr,
    /// The service group whose redirection path is probed.
    pub service: u8,
}

/// What is probed: a TCP port of a host, from one of our addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeTarget {
    /// Our address (the source of the SYN).
    pub local: Ipv4Addr,
    /// The probed host and port (for a redirect probe, the origin the cache answers as).
    pub remote: SocketAddrV4,
    /// Set when the probe's packets go to a WCCP cache the way redirected traffic does; the
    /// caller wraps them ([`SegmentResult::target`] says where a RST goes).
    pub via: Option<ProbeVia>,
}

/// Who asked for a probe: its answer goes back to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeOwner {
    /// WCCP fast failover.
    Wccp,
    /// Steering health check of a device (by its index in the steering tables).
    Steering(u32),
}

/// A TCP segment addressed to one of the router's probe ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSegment {
    /// Sender.
    pub src: SocketAddrV4,
    /// Our address and port.
    pub dst: SocketAddrV4,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// TCP flags.
    pub flags: u8,
}

/// How a target answered a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// SYN-ACK: something listens.
    Accepted {
        /// Time from the SYN to its answer.
        rtt: Duration,
    },
    /// RST: the host is there, nothing listens on the port.
    Refused,
}

/// A validated answer to an outstanding probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// Who asked.
    pub owner: ProbeOwner,
    /// What was probed.
    pub target: ProbeTarget,
    /// How it answered.
    pub outcome: ProbeOutcome,
}

/// What [`Prober::on_segment`] made of a segment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SegmentResult {
    /// The answer, when the segment answered an outstanding probe.
    pub answer: Option<ProbeAnswer>,
    /// A RST to send (closes an accepted handshake, also a late one).
    pub reply: Option<Vec<u8>>,
    /// The probe `reply` belongs to: a redirect probe's RST must take the redirection path.
    pub target: Option<ProbeTarget>,
}

/// The prober's own counters (status).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ProberCounters {
    /// SYNs built.
    pub sent: u64,
    /// Answers that matched an outstanding probe.
    pub answered: u64,
    /// Segments to a probe port that matched nothing (stale, spoofed or out of window).
    pub ignored: u64,
}

#[derive(Debug, Clone, Copy)]
struct Outstanding {
    target: ProbeTarget,
    owner: ProbeOwner,
    seq: u32,
    sent: Instant,
    /// Still waiting for its answer (false once answered or replaced by a newer probe).
    live: bool,
}

/// The probes in flight and the source of ports and sequence numbers.
#[derive(Debug)]
pub struct Prober {
    /// By our source port.
    outstanding: HashMap<u16, Outstanding>,
    /// The live probe of each (owner, target), by port.
    live: HashMap<(ProbeOwner, ProbeTarget), u16>,
    next_port: u16,
    isn: u64,
    counters: ProberCounters,
    /// The keys of `outstanding`, as the data plane sees them.
    open: Arc<OpenPorts>,
}

impl Prober {
    /// A prober whose sequence numbers derive from `seed` (use [`random_seed`]).
    pub fn new(seed: u64) -> Prober {
        Self::with_open_ports(seed, Arc::default())
    }

    /// The same, publishing the ports it uses in `open` (the bitmap the port table checks).
    pub fn with_open_ports(seed: u64, open: Arc<OpenPorts>) -> Prober {
        Prober {
            outstanding: HashMap::new(),
            live: HashMap::new(),
            next_port: *PROBE_PORTS.start() + (seed % PROBE_PORTS.len() as u64) as u16,
            isn: seed,
            counters: ProberCounters::default(),
            open,
        }
    }

    /// The probe ports in use.
    pub fn open_ports(&self) -> &Arc<OpenPorts> {
        &self.open
    }

    /// The counters.
    pub fn counters(&self) -> ProberCounters {
        self.counters
    }

    /// Builds a SYN probing `target` for `owner`, replacing that owner's previous probe of the
    /// target (a late answer to it is closed but not reported). Returns the IPv4 packet.
    pub fn probe(&mut self, now: Instant, target: ProbeTarget, owner: ProbeOwner) -> Vec<u8> {
        self.expire(now);
        if let Some(old) = self.live.remove(&(owner, target)) {
            if let Some(o) = self.outstanding.get_mut(&old) {
                o.live = false;
                o.sent = now;
            }
        }
        let port = self.take_port();
        let seq = self.next_isn();
        self.open.set(port, true);
        self.outstanding.insert(
            port,
            Outstanding {
                target,
                owner,
                seq,
                sent: now,
                live: true,
            },
        );
        self.live.insert((owner, target), port);
        self.counters.sent += 1;
        segment(
            target.local,
            target.remote,
            TcpRepr::syn(port, target.remote.port(), seq, WINDOW),
        )
    }

    /// Forgets the live probe of (owner, target) without an answer (its timeout passed).
    pub fn cancel(&mut self, owner: ProbeOwner, target: ProbeTarget) {
        if let Some(port) = self.live.remove(&(owner, target)) {
            if let Some(o) = self.outstanding.get_mut(&port) {
                o.live = false;
            }
        }
    }

    /// Forgets every live probe whose owner `gone` picks (its configuration went away): their
    /// answers are closed but no longer reported.
    pub fn forget(&mut self, gone: impl Fn(ProbeOwner) -> bool) {
        self.live.retain(|(o, _), _| !gone(*o));
        for o in self.outstanding.values_mut() {
            if gone(o.owner) {
                o.live = false;
            }
        }
    }

    /// A segment to a probe port: the answer it carries, if it answers a live probe, and the
    /// RST that closes an accepted handshake.
    pub fn on_segment(&mut self, seg: &TcpSegment, now: Instant) -> SegmentResult {
        let port = seg.dst.port();
        let Some(o) = self.outstanding.get(&port).copied() else {
            self.counters.ignored += 1;
            return SegmentResult::default();
        };
        let ours = o.target.local == *seg.dst.ip() && o.target.remote == seg.src;
        let acks_syn = seg.flags & flags::ACK != 0 && seg.ack == o.seq.wrapping_add(1);
        if !ours || !acks_syn {
            self.counters.ignored += 1;
            return SegmentResult::default();
        }
        let outcome = if seg.flags & flags::RST != 0 {
            ProbeOutcome::Refused
        } else if seg.flags & flags::SYN != 0 {
            ProbeOutcome::Accepted {
                rtt: now.saturating_duration_since(o.sent),
            }
        } else {
            self.counters.ignored += 1;
            return SegmentResult::default();
        };
        let reply = matches!(outcome, ProbeOutcome::Accepted { .. }).then(|| {
            let rst = TcpRepr {
                flags: flags::RST,
                ..TcpRepr::syn(port, o.target.remote.port(), seg.ack, 0)
            };
            segment(o.target.local, o.target.remote, rst)
        });
        if !o.live {
            // A replaced or timed-out probe: close it, report nothing.
            self.counters.ignored += 1;
            return SegmentResult {
                answer: None,
                reply,
                target: Some(o.target),
            };
        }
        self.counters.answered += 1;
        if let Some(e) = self.outstanding.get_mut(&port) {
            e.live = false;
            e.sent = now;
        }
        self.live.remove(&(o.owner, o.target));
        SegmentResult {
            answer: Some(ProbeAnswer {
                owner: o.owner,
                target: o.target,
                outcome,
            }),
            reply,
            target: Some(o.target),
        }
    }

    /// Drops finished probes whose linger time passed.
    fn expire(&mut self, now: Instant) {
        let open = &self.open;
        self.outstanding.retain(|port, o| {
            let keep = o.live || now.saturating_duration_since(o.sent) < LINGER;
            if !keep {
                open.set(*port, false);
            }
            keep
        });
    }

    fn take_port(&mut self) -> u16 {
        // Skip ports still in use (at most the number of probes in flight).
        for _ in 0..PROBE_PORTS.len() {
            let port = self.next_port;
            self.next_port = if port >= *PROBE_PORTS.end() {
                *PROBE_PORTS.start()
            } else {
                port + 1
            };
            if !self.outstanding.contains_key(&port) {
                return port;
            }
        }
        // Every port busy: reuse the oldest finished one, else the next in turn.
        let port = self
            .outstanding
            .iter()
            .filter(|(_, o)| !o.live)
            .min_by_key(|(_, o)| o.sent)
            .map(|(p, _)| *p)
            .unwrap_or(self.next_port);
        if let Some(o) = self.outstanding.remove(&port) {
            self.live.remove(&(o.owner, o.target));
        }
        port
    }

    /// The next initial sequence number: splitmix64 over a secret seed, so an off-path host
    /// cannot predict it (a forged answer must guess it to count).
    fn next_isn(&mut self) -> u32 {
        self.isn = self.isn.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.isn;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u32
    }
}

/// Now as Unix time in milliseconds (state-change stamps in status).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A random seed from the kernel (falls back to the clock if /dev/urandom cannot be read).
pub fn random_seed() -> u64 {
    use std::io::Read;
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok()
    {
        return u64::from_ne_bytes(b);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed)
}

/// An IPv4 packet carrying `tcp` (no payload) from `src` to `dst`.
fn segment(src: Ipv4Addr, dst: SocketAddrV4, tcp: TcpRepr) -> Vec<u8> {
    let mut p = vec![0u8; ipv4::MIN_HEADER_LEN + tcp.buffer_len()];
    Ipv4Repr {
        src,
        dst: *dst.ip(),
        protocol: ipv4::PROTO_TCP,
        payload_len: tcp.buffer_len(),
        ttl: 64,
        ident: ipv4::next_ident(),
        tos: 0,
        dont_fragment: true,
    }
    .emit(&mut p[..ipv4::MIN_HEADER_LEN]);
    tcp.emit(
        &mut TcpPacket::new_unchecked(&mut p[ipv4::MIN_HEADER_LEN..]),
        src,
        *dst.ip(),
    );
    p
}

/// A target's health as WCCP fast failover sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeHealth {
    /// Answering (true until `misses` probes in a row fail).
    pub up: bool,
    /// Misses in a row.
    pub misses: u32,
    /// Probes sent.
    pub sent: u64,
    /// Successful handshakes.
    pub answered: u64,
    /// Round-trip time of the last success.
    pub last_rtt: Option<Duration>,
    /// Times the target went down.
    pub downs: u64,
    /// When it last went down or came back, Unix time in milliseconds (0: never).
    pub changed_unix_ms: u64,
}

impl ProbeHealth {
    /// "up", "down", or "unanswered" (never answered a probe, so never taken down).
    pub fn state(&self) -> &'static str {
        match (self.up, self.answered) {
            (false, _) => "down",
            (true, 0) if self.misses > 0 => "unanswered",
            _ => "up",
        }
    }
}

/// A change a probe answer or a miss caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeChange {
    /// The target stopped answering.
    Down(ProbeTarget),
    /// The target answers again.
    Up(ProbeTarget),
}

/// WCCP fast failover's probe rounds: every round probes each wanted target once; a probe still
/// unanswered at the next round, or refused, is a miss; `misses` misses in a row take a target
/// down, one success brings it back. A target that has never answered is never taken down (it
/// "stops answering" only after it answered once): a wrong probe port must not send a healthy
/// cache's traffic around it; status shows it as unanswered instead.
#[derive(Debug)]
pub struct Rounds {
    targets: BTreeMap<ProbeTarget, RoundState>,
    misses: u32,
}

#[derive(Debug)]
struct RoundState {
    health: ProbeHealth,
    waiting: bool,
}

impl Rounds {
    /// Rounds that take a target down after `misses` misses in a row.
    pub fn new(misses: u32) -> Rounds {
        Rounds {
            targets: BTreeMap::new(),
            misses: misses.max(1),
        }
    }

    /// Changes the miss threshold (reload), keeping every target's history.
    pub fn set_misses(&mut self, misses: u32) {
        self.misses = misses.max(1);
    }

    /// Health of every target.
    pub fn health(&self) -> impl Iterator<Item = (&ProbeTarget, &ProbeHealth)> {
        self.targets.iter().map(|(t, s)| (t, &s.health))
    }

    /// Health of one target.
    pub fn get(&self, t: &ProbeTarget) -> Option<&ProbeHealth> {
        self.targets.get(t).map(|s| &s.health)
    }

    /// True unless `t` is known and down.
    pub fn is_up(&self, t: &ProbeTarget) -> bool {
        self.get(t).is_none_or(|h| h.up)
    }

    /// One round: forgets targets not in `wanted` (new ones start up), counts each target's
    /// unanswered probe as a miss, and returns a fresh SYN for each, with its target.
    pub fn tick(
        &mut self,
        now: Instant,
        wanted: impl IntoIterator<Item = ProbeTarget>,
        prober: &mut Prober,
        changes: &mut Vec<ProbeChange>,
    ) -> Vec<(ProbeTarget, Vec<u8>)> {
        let wanted: Vec<ProbeTarget> = wanted.into_iter().collect();
        self.targets.retain(|t, _| {
            let keep = wanted.contains(t);
            if !keep {
                prober.cancel(ProbeOwner::Wccp, *t);
            }
            keep
        });
        let misses = self.misses;
        let mut out = Vec::with_capacity(wanted.len());
        for t in wanted {
            let st = self.targets.entry(t).or_insert(RoundState {
                health: ProbeHealth {
                    up: true,
                    misses: 0,
                    sent: 0,
                    answered: 0,
                    last_rtt: None,
                    downs: 0,
                    changed_unix_ms: 0,
                },
                waiting: false,
            });
            if st.waiting {
                miss(st, t, misses, changes);
            }
            st.waiting = true;
            st.health.sent += 1;
            out.push((t, prober.probe(now, t, ProbeOwner::Wccp)));
        }
        out
    }

    /// An answer the prober validated for one of our targets.
    pub fn on_answer(&mut self, a: &ProbeAnswer, changes: &mut Vec<ProbeChange>) {
        let misses = self.misses;
        let Some(st) = self.targets.get_mut(&a.target) else {
            return;
        };
        if !st.waiting {
            return;
        }
        st.waiting = false;
        match a.outcome {
            ProbeOutcome::Refused => miss(st, a.target, misses, changes),
            ProbeOutcome::Accepted { rtt } => {
                st.health.answered += 1;
                st.health.misses = 0;
                st.health.last_rtt = Some(rtt);
                if !st.health.up {
                    st.health.up = true;
                    st.health.changed_unix_ms = unix_ms();
                    changes.push(ProbeChange::Up(a.target));
                }
            }
        }
    }
}

fn miss(st: &mut RoundState, t: ProbeTarget, misses: u32, changes: &mut Vec<ProbeChange>) {
    st.health.misses = st.health.misses.saturating_add(1);
    if st.health.up && st.health.answered > 0 && st.health.misses >= misses {
        st.health.up = false;
        st.health.downs += 1;
        st.health.changed_unix_ms = unix_ms();
        changes.push(ProbeChange::Down(t));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn target() -> ProbeTarget {
        ProbeTarget {
            local: [10, 0, 3, 1].into(),
            remote: SocketAddrV4::new([10, 0, 3, 2].into(), 3128),
            via: None,
        }
    }

    /// Port and sequence number of a SYN, checking its checksums.
    fn syn_of(p: &[u8]) -> (u16, u32) {
        let t = TcpPacket::new_checked(&p[20..]).unwrap();
        assert_eq!(t.flags(), flags::SYN);
        assert!(t.verify_checksum([10, 0, 3, 1].into(), [10, 0, 3, 2].into()));
        assert_eq!(netwire::checksum::checksum(&p[..20]), 0, "IPv4 checksum");
        (t.src_port(), t.seq_number())
    }

    fn answer(port: u16, ack: u32, flags: u8) -> TcpSegment {
        TcpSegment {
            src: target().remote,
            dst: SocketAddrV4::new(target().local, port),
            seq: 777,
            ack,
            flags,
        }
    }

    #[test]
    fn every_probe_takes_a_new_port_and_an_unrelated_sequence_number() {
        let now = Instant::now();
        let mut p = Prober::new(1);
        let (mut ports, mut seqs) = (Vec::new(), Vec::new());
        for _ in 0..50 {
            let (port, seq) = syn_of(&p.probe(now, target(), ProbeOwner::Steering(0)));
            assert!(PROBE_PORTS.contains(&port));
            ports.push(port);
            seqs.push(seq);
        }
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 50, "a 4-tuple was reused");
        let steps: Vec<u32> = seqs.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
        assert!(
            steps.windows(2).any(|w| w[0] != w[1]),
            "sequence numbers follow a constant step"
        );
        // Two routers started with different seeds choose different numbers.
        let mut q = Prober::new(2);
        assert_ne!(syn_of(&q.probe(now, target(), ProbeOwner::Wccp)).1, seqs[0]);
    }

    #[test]
    fn only_an_exact_answer_counts_and_a_syn_ack_is_closed_with_a_rst() {
        let t0 = Instant::now();
        let mut p = Prober::new(42);
        let (port, seq) = syn_of(&p.probe(t0, target(), ProbeOwner::Steering(3)));
        let good = answer(port, seq.wrapping_add(1), flags::SYN | flags::ACK);
        // Wrong acknowledgment, bare ACK (a challenge ACK), wrong source port or address,
        // wrong local address, RST without ACK: all ignored.
        let wrong_src_port = TcpSegment {
            src: SocketAddrV4::new(*target().remote.ip(), 80),
            ..good
        };
        let wrong_src = TcpSegment {
            src: SocketAddrV4::new([10, 0, 3, 9].into(), 3128),
            ..good
        };
        let wrong_local = TcpSegment {
            dst: SocketAddrV4::new([10, 0, 4, 1].into(), port),
            ..good
        };
        for bad in [
            answer(port, seq, flags::SYN | flags::ACK),
            answer(port, seq.wrapping_add(1), flags::ACK),
            answer(port, 0, flags::RST),
            wrong_src_port,
            wrong_src,
            wrong_local,
        ] {
            let r = p.on_segment(&bad, t0);
            assert_eq!(r, SegmentResult::default(), "{bad:?}");
        }
        assert_eq!(p.counters().ignored, 6);
        let r = p.on_segment(&good, t0 + Duration::from_millis(2));
        let a = r.answer.unwrap();
        assert_eq!(a.owner, ProbeOwner::Steering(3));
        assert_eq!(
            a.outcome,
            ProbeOutcome::Accepted {
                rtt: Duration::from_millis(2)
            }
        );
        let rst = r.reply.unwrap();
        let t = TcpPacket::new_checked(&rst[20..]).unwrap();
        assert_eq!(t.flags(), flags::RST);
        assert_eq!(t.seq_number(), seq.wrapping_add(1));
        assert_eq!((t.src_port(), t.dst_port()), (port, 3128));
        assert!(t.verify_checksum(target().local, *target().remote.ip()));
        // A retransmitted SYN-ACK is closed again but not reported twice.
        let again = p.on_segment(&good, t0);
        assert!(again.answer.is_none() && again.reply.is_some());
    }

    #[test]
    fn the_data_plane_sees_exactly_the_ports_in_use() {
        let t0 = Instant::now();
        let open = Arc::new(OpenPorts::default());
        let mut p = Prober::with_open_ports(9, open.clone());
        assert_eq!(open.count(), 0);
        let (port, seq) = syn_of(&p.probe(t0, target(), ProbeOwner::Wccp));
        assert!(open.is_open(port));
        assert_eq!(open.count(), 1);
        assert!(!open.is_open(port.wrapping_add(1)) || port == *PROBE_PORTS.end());
        assert!(!open.is_open(80), "outside the range is never open");
        // Answered: the port lingers for late SYN-ACKs, then closes with the next probe.
        let _ = p.on_segment(
            &answer(port, seq.wrapping_add(1), flags::SYN | flags::ACK),
            t0,
        );
        assert!(open.is_open(port));
        let (next, _) = syn_of(&p.probe(t0 + LINGER, target(), ProbeOwner::Wccp));
        assert!(!open.is_open(port), "an expired port is closed");
        assert!(open.is_open(next));
        assert_eq!(open.count(), 1);
        // The bitmap covers the whole range.
        for port in [*PROBE_PORTS.start(), *PROBE_PORTS.end()] {
            open.set(port, true);
            assert!(open.is_open(port));
            open.set(port, false);
            assert!(!open.is_open(port));
        }
    }

    #[test]
    fn a_redirect_probe_is_answered_by_the_origin_and_its_rst_goes_the_same_way() {
        let t0 = Instant::now();
        let via = |cache: [u8; 4]| ProbeTarget {
            local: [10, 0, 3, 1].into(),
            remote: SocketAddrV4::new(REDIRECT_PROBE_ORIGIN, 80),
            via: Some(ProbeVia {
                cache: cache.into(),
                service: 0,
            }),
        };
        let (a, b) = (via([10, 0, 3, 2]), via([10, 0, 3, 3]));
        assert_ne!(
            a, b,
            "two caches probed as one origin are still two targets"
        );
        let mut p = Prober::new(11);
        let syn = p.probe(t0, a, ProbeOwner::Wccp);
        let t = TcpPacket::new_checked(&syn[20..]).unwrap();
        assert_eq!(ipv4::dst(&syn), REDIRECT_PROBE_ORIGIN);
        assert_eq!(t.dst_port(), 80);
        let (port, seq) = (t.src_port(), t.seq_number());
        let _ = p.probe(t0, b, ProbeOwner::Wccp);
        // The cache's own address is not who answers a redirect probe.
        let from_cache = TcpSegment {
            src: SocketAddrV4::new([10, 0, 3, 2].into(), 80),
            dst: SocketAddrV4::new(a.local, port),
            seq: 1,
            ack: seq.wrapping_add(1),
            flags: flags::SYN | flags::ACK,
        };
        assert_eq!(p.on_segment(&from_cache, t0), SegmentResult::default());
        let r = p.on_segment(
            &TcpSegment {
                src: a.remote,
                ..from_cache
            },
            t0,
        );
        assert_eq!(r.answer.as_ref().map(|x| x.target), Some(a));
        assert_eq!(r.target, Some(a), "the RST is wrapped for cache a, not b");
        let rst = r.reply.unwrap();
        assert_eq!(ipv4::dst(&rst), REDIRECT_PROBE_ORIGIN);
    }

    #[test]
    fn a_reset_acknowledging_the_syn_is_a_refusal() {
        let t0 = Instant::now();
        let mut p = Prober::new(5);
        let (port, seq) = syn_of(&p.probe(t0, target(), ProbeOwner::Wccp));
        let r = p.on_segment(
            &answer(port, seq.wrapping_add(1), flags::RST | flags::ACK),
            t0,
        );
        assert_eq!(r.answer.unwrap().outcome, ProbeOutcome::Refused);
        assert!(r.reply.is_none());
    }

    #[test]
    fn a_replaced_probe_is_not_reported_and_ports_are_reclaimed() {
        let t0 = Instant::now();
        let mut p = Prober::new(9);
        let (old_port, old_seq) = syn_of(&p.probe(t0, target(), ProbeOwner::Wccp));
        let (new_port, _) = syn_of(&p.probe(t0, target(), ProbeOwner::Wccp));
        assert_ne!(old_port, new_port);
        let late = p.on_segment(
            &answer(old_port, old_seq.wrapping_add(1), flags::SYN | flags::ACK),
            t0,
        );
        assert!(late.answer.is_none(), "the replaced probe's answer counted");
        assert!(late.reply.is_some(), "the late handshake was left open");
        // Thousands of probes later the map holds only the live probe and lingering ones.
        let mut now = t0;
        for _ in 0..5000 {
            now += Duration::from_millis(10);
            p.probe(now, target(), ProbeOwner::Wccp);
        }
        assert!(p.outstanding.len() <= 501, "{}", p.outstanding.len());
        // A cancelled probe's answer is not reported either.
        let (port, seq) = syn_of(&p.probe(now, target(), ProbeOwner::Steering(1)));
        p.cancel(ProbeOwner::Steering(1), target());
        let r = p.on_segment(
            &answer(port, seq.wrapping_add(1), flags::SYN | flags::ACK),
            now,
        );
        assert!(r.answer.is_none());
    }

    #[test]
    fn rounds_take_down_after_misses_and_one_answer_brings_back() {
        let t0 = Instant::now();
        let mut p = Prober::new(7);
        let mut r = Rounds::new(3);
        let mut ch = Vec::new();
        let round = |r: &mut Rounds, p: &mut Prober, ch: &mut Vec<ProbeChange>| {
            let out = r.tick(t0, [target()], p, ch);
            assert_eq!(out[0].0, target());
            syn_of(&out[0].1)
        };
        // Never answered: misses do not take it down.
        for _ in 0..5 {
            round(&mut r, &mut p, &mut ch);
        }
        assert!(r.is_up(&target()) && ch.is_empty());
        assert_eq!(r.get(&target()).unwrap().state(), "unanswered");
        let (port, seq) = round(&mut r, &mut p, &mut ch);
        let a = p
            .on_segment(
                &answer(port, seq.wrapping_add(1), flags::SYN | flags::ACK),
                t0,
            )
            .answer
            .unwrap();
        r.on_answer(&a, &mut ch);
        assert_eq!(r.get(&target()).unwrap().state(), "up");
        for _ in 0..3 {
            round(&mut r, &mut p, &mut ch);
        }
        assert!(r.is_up(&target()) && ch.is_empty(), "two misses so far");
        let (port, seq) = round(&mut r, &mut p, &mut ch);
        assert_eq!(ch, vec![ProbeChange::Down(target())]);
        assert!(!r.is_up(&target()));
        let down_at = r.get(&target()).unwrap().changed_unix_ms;
        assert!(
            down_at.abs_diff(unix_ms()) < 5_000,
            "stamped when it went down"
        );
        ch.clear();
        let a = p
            .on_segment(
                &answer(port, seq.wrapping_add(1), flags::SYN | flags::ACK),
                t0,
            )
            .answer
            .unwrap();
        r.on_answer(&a, &mut ch);
        assert_eq!(ch, vec![ProbeChange::Up(target())]);
        assert!(r.get(&target()).unwrap().changed_unix_ms >= down_at);
        // A refusal counts as a miss at once.
        let (port, seq) = round(&mut r, &mut p, &mut ch);
        let a = p
            .on_segment(
                &answer(port, seq.wrapping_add(1), flags::RST | flags::ACK),
                t0,
            )
            .answer
            .unwrap();
        r.on_answer(&a, &mut ch);
        assert_eq!(r.get(&target()).unwrap().misses, 1);
        // Targets no longer wanted are forgotten.
        assert!(r.tick(t0, [], &mut p, &mut ch).is_empty());
        assert!(r.get(&target()).is_none());
    }
}
