//! TCP handshake probes from the router's own addresses (fast failover, SPEC.md §4).
//!
//! swrouter has no kernel socket on its interfaces, so a probe is a SYN the prober builds and
//! the control plane sends through the pipeline (routed and ARP-resolved like any of the
//! router's packets); the answer comes back through ipv4-input to a [`PROBE_PORTS`] port. A
//! SYN-ACK that acknowledges our SYN is a success and is closed at once with a RST (we keep no
//! connection); a RST or silence until the next probe is a miss. `misses` misses in a row take a
//! target down, one success brings it back. A target that has never answered is never taken
//! down (it "stops answering" only after it answered once): a wrong probe port must not send a
//! healthy cache's traffic around it; status shows it as unanswered instead.
//!
//! The prober itself does no I/O: [`Prober::tick`] and [`Prober::on_segment`] take the time and
//! return the packets to send, so it is tested without sockets.

use crate::local::{TcpSegment, PROBE_PORTS, TCP_HEADER_LEN};
use crate::wire::checksum;
use crate::wire::ipv4::{self, Ipv4Repr};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// What is probed: a TCP port of a host, from one of our addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeTarget {
    /// Our address (the source of the SYN).
    pub local: Ipv4Addr,
    /// The probed host and port.
    pub remote: SocketAddrV4,
}

/// A target's health as the prober sees it.
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

#[derive(Debug)]
struct State {
    health: ProbeHealth,
    /// The unanswered probe: (our port, our sequence number, when sent).
    outstanding: Option<(u16, u32, Instant)>,
}

/// A change a probe answer or a miss caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeChange {
    /// The target stopped answering.
    Down(ProbeTarget),
    /// The target answers again.
    Up(ProbeTarget),
}

/// Probes a set of targets.
#[derive(Debug)]
pub struct Prober {
    targets: BTreeMap<ProbeTarget, State>,
    misses: u32,
    next_port: u16,
    isn: u32,
}

impl Prober {
    /// A prober that takes a target down after `misses` misses in a row.
    pub fn new(misses: u32, seed: u32) -> Prober {
        Prober {
            targets: BTreeMap::new(),
            misses: misses.max(1),
            next_port: *PROBE_PORTS.start(),
            isn: seed | 1,
        }
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

    /// One probe round: forgets targets not in `wanted` (new ones start up), counts the
    /// unanswered probe of each target as a miss, and builds a fresh SYN for each.
    pub fn tick(
        &mut self,
        now: Instant,
        wanted: impl IntoIterator<Item = ProbeTarget>,
        changes: &mut Vec<ProbeChange>,
    ) -> Vec<Vec<u8>> {
        let wanted: Vec<ProbeTarget> = wanted.into_iter().collect();
        self.targets.retain(|t, _| wanted.contains(t));
        let mut out = Vec::with_capacity(wanted.len());
        for t in wanted {
            let port = self.next_port;
            self.next_port = if port >= *PROBE_PORTS.end() {
                *PROBE_PORTS.start()
            } else {
                port + 1
            };
            // A fresh, hard-to-guess-enough sequence number per probe (no security role: the
            // answer must also match our port and address).
            self.isn = self.isn.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let seq = self.isn;
            let misses = self.misses;
            let st = self.targets.entry(t).or_insert(State {
                health: ProbeHealth {
                    up: true,
                    misses: 0,
                    sent: 0,
                    answered: 0,
                    last_rtt: None,
                    downs: 0,
                },
                outstanding: None,
            });
            if st.outstanding.take().is_some() {
                miss(st, t, misses, changes);
            }
            st.outstanding = Some((port, seq, now));
            st.health.sent += 1;
            out.push(segment(t.local, port, t.remote, seq, 0, SYN));
        }
        out
    }

    /// A segment to a probe port: returns the RST that closes an accepted handshake.
    pub fn on_segment(
        &mut self,
        seg: &TcpSegment,
        now: Instant,
        changes: &mut Vec<ProbeChange>,
    ) -> Option<Vec<u8>> {
        let misses = self.misses;
        let (t, st) = self.targets.iter_mut().find(|(t, s)| {
            t.local == *seg.dst.ip()
                && t.remote == seg.src
                && s.outstanding.is_some_and(|(p, _, _)| p == seg.dst.port())
        })?;
        let (port, seq, sent) = st.outstanding?;
        if seg.flags & RST != 0 {
            // Refused: the host is there but nothing listens.
            st.outstanding = None;
            miss(st, *t, misses, changes);
            return None;
        }
        if seg.flags & (SYN | ACK) != SYN | ACK || seg.ack != seq.wrapping_add(1) {
            return None;
        }
        st.outstanding = None;
        st.health.answered += 1;
        st.health.misses = 0;
        st.health.last_rtt = Some(now.saturating_duration_since(sent));
        if !st.health.up {
            st.health.up = true;
            changes.push(ProbeChange::Up(*t));
        }
        Some(segment(t.local, port, t.remote, seg.ack, 0, RST))
    }
}

fn miss(st: &mut State, t: ProbeTarget, misses: u32, changes: &mut Vec<ProbeChange>) {
    st.health.misses = st.health.misses.saturating_add(1);
    if st.health.up && st.health.answered > 0 && st.health.misses >= misses {
        st.health.up = false;
        st.health.downs += 1;
        changes.push(ProbeChange::Down(t));
    }
}

/// An IPv4 + TCP segment without options or payload.
pub fn segment(
    src: Ipv4Addr,
    sport: u16,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
) -> Vec<u8> {
    let mut p = vec![0u8; ipv4::MIN_HEADER_LEN + TCP_HEADER_LEN];
    Ipv4Repr {
        src,
        dst: *dst.ip(),
        protocol: ipv4::PROTO_TCP,
        payload_len: TCP_HEADER_LEN,
        ttl: 64,
        ident: crate::pipeline::next_ident(),
        tos: 0,
        dont_fragment: true,
    }
    .emit(&mut p[..ipv4::MIN_HEADER_LEN]);
    let t = &mut p[ipv4::MIN_HEADER_LEN..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dst.port().to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[8..12].copy_from_slice(&ack.to_be_bytes());
    t[12] = (TCP_HEADER_LEN as u8 / 4) << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&1024u16.to_be_bytes());
    let acc = checksum::sum(
        checksum::pseudo_header(
            src.octets(),
            dst.ip().octets(),
            ipv4::PROTO_TCP,
            TCP_HEADER_LEN as u16,
        ),
        t,
    );
    let c = !checksum::fold(acc);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> ProbeTarget {
        ProbeTarget {
            local: [10, 0, 3, 1].into(),
            remote: SocketAddrV4::new([10, 0, 3, 2].into(), 3128),
        }
    }

    fn syn_of(p: &[u8]) -> (u16, u32) {
        let t = &p[20..];
        assert_eq!(t[13], SYN);
        let acc = checksum::sum(
            checksum::pseudo_header([10, 0, 3, 1], [10, 0, 3, 2], 6, 20),
            t,
        );
        assert_eq!(checksum::fold(acc), 0xffff, "TCP checksum");
        (
            u16::from_be_bytes([t[0], t[1]]),
            u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        )
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
    fn handshake_keeps_up_and_is_reset() {
        let t0 = Instant::now();
        let mut p = Prober::new(3, 42);
        let mut ch = Vec::new();
        let out = p.tick(t0, [target()], &mut ch);
        let (port, seq) = syn_of(&out[0]);
        assert!(PROBE_PORTS.contains(&port));
        // A SYN-ACK acknowledging something else is ignored.
        assert!(p
            .on_segment(&answer(port, seq, SYN | ACK), t0, &mut ch)
            .is_none());
        let rst = p
            .on_segment(
                &answer(port, seq.wrapping_add(1), SYN | ACK),
                t0 + Duration::from_millis(2),
                &mut ch,
            )
            .expect("RST");
        assert_eq!(rst[20 + 13], RST);
        assert_eq!(&rst[20 + 4..20 + 8], &seq.wrapping_add(1).to_be_bytes());
        let h = p.get(&target()).unwrap();
        assert!(h.up && h.answered == 1 && h.last_rtt == Some(Duration::from_millis(2)));
        assert!(ch.is_empty());
    }

    #[test]
    fn misses_take_down_and_one_answer_brings_back() {
        let t0 = Instant::now();
        let mut p = Prober::new(3, 7);
        let mut ch = Vec::new();
        // Never answered: misses do not take it down.
        for _ in 0..5 {
            p.tick(t0, [target()], &mut ch);
        }
        assert!(p.is_up(&target()) && ch.is_empty());
        assert_eq!(p.get(&target()).unwrap().state(), "unanswered");
        let out = p.tick(t0, [target()], &mut ch);
        let (port, seq) = syn_of(&out[0]);
        p.on_segment(&answer(port, seq.wrapping_add(1), SYN | ACK), t0, &mut ch);
        assert_eq!(p.get(&target()).unwrap().state(), "up");
        p.tick(t0, [target()], &mut ch);
        p.tick(t0, [target()], &mut ch);
        p.tick(t0, [target()], &mut ch);
        assert!(p.is_up(&target()) && ch.is_empty(), "two misses so far");
        let out = p.tick(t0, [target()], &mut ch);
        assert_eq!(ch, vec![ProbeChange::Down(target())]);
        assert!(!p.is_up(&target()));
        let (port, seq) = syn_of(&out[0]);
        ch.clear();
        p.on_segment(&answer(port, seq.wrapping_add(1), SYN | ACK), t0, &mut ch);
        assert_eq!(ch, vec![ProbeChange::Up(target())]);
        // A RST (nothing listens) counts as a miss at once.
        let out = p.tick(t0, [target()], &mut ch);
        let (port, _) = syn_of(&out[0]);
        assert!(p
            .on_segment(&answer(port, 0, RST | ACK), t0, &mut ch)
            .is_none());
        assert_eq!(p.get(&target()).unwrap().misses, 1);
        // Targets no longer wanted are forgotten.
        assert!(p.tick(t0, [], &mut ch).is_empty());
        assert!(p.get(&target()).is_none());
    }
}
