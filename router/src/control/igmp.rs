//! The router as an IGMP host member (RFC 2236, RFC 3376 §5) of the WCCP multicast service
//! groups, on every interface with `wccp-caches`: unsolicited reports when it joins (sent twice,
//! 1 s apart), reports answering general and group-specific queries after a random delay within
//! the query's Max Resp Time, and leaves when a group is dropped or the router stops.
//!
//! Reports follow the querier (RFC 3376 §7.2.1): IGMPv3 by default, IGMPv2 (or v1) for 260 s
//! (the Older Version Querier Present Timeout with the default robustness, query interval and
//! response time) after a v2 (or v1) query on that interface. Time is passed in; the driver
//! sends the packets it returns through the outbox's L2 entry (multicast MAC, no ARP).

use crate::tables::IfId;
use crate::wire::igmp::{self, GroupRecord, IgmpRepr, IgmpVersion, ALL_ROUTERS, ALL_V3_ROUTERS};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// How long an older querier's version rules an interface (RFC 3376 §8.12: 2 × 125 s + 10 s).
pub const OLDER_QUERIER_TIMEOUT: Duration = Duration::from_secs(260);
/// Gap before the repeated unsolicited report (RFC 3376 §8.11: up to 1 s).
pub const UNSOLICITED_REPEAT: Duration = Duration::from_secs(1);

/// One IGMP packet to send: an IPv4 packet out of `tx_if` to the multicast `dst`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgmpOut {
    /// Interface.
    pub tx_if: IfId,
    /// Destination group (its MAC is derived from it).
    pub dst: Ipv4Addr,
    /// The IPv4 packet, header (TTL 1, Router Alert) included.
    pub packet: Vec<u8>,
}

/// What the host counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IgmpCounters {
    /// Queries received, by version.
    pub queries_v1: u64,
    /// IGMPv2 queries.
    pub queries_v2: u64,
    /// IGMPv3 queries.
    pub queries_v3: u64,
    /// Reports sent (unsolicited and answers).
    pub reports_sent: u64,
    /// Leaves sent.
    pub leaves_sent: u64,
    /// IGMP messages that did not decode or whose checksum failed.
    pub malformed: u64,
    /// Other IGMP (other hosts' reports, queries about groups not joined).
    pub ignored: u64,
}

/// One joined interface.
#[derive(Debug, Clone)]
struct Link {
    /// Our address there (source of what we send).
    addr: Ipv4Addr,
    /// An older querier's version and until when it rules.
    older: Option<(IgmpVersion, Instant)>,
}

/// The host side of IGMP for a set of groups on a set of interfaces.
#[derive(Debug, Default)]
pub struct IgmpHost {
    links: BTreeMap<IfId, Link>,
    groups: BTreeSet<Ipv4Addr>,
    /// Reports due: (interface, group) — `None` for a v3 report of every group.
    pending: BTreeMap<(IfId, Option<Ipv4Addr>), Instant>,
    rng: u64,
    ident: u16,
    /// Counters.
    pub counters: IgmpCounters,
}

impl IgmpHost {
    /// A host member of nothing; `seed` spreads its response delays.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: seed,
            ..Self::default()
        }
    }

    /// The interfaces joined, with our address on each.
    pub fn interfaces(&self) -> impl Iterator<Item = (IfId, Ipv4Addr)> + '_ {
        self.links.iter().map(|(i, l)| (*i, l.addr))
    }

    /// The groups joined.
    pub fn groups(&self) -> &BTreeSet<Ipv4Addr> {
        &self.groups
    }

    /// The version reports use on `tx_if` now.
    pub fn version(&self, tx_if: IfId, now: Instant) -> IgmpVersion {
        match self.links.get(&tx_if).and_then(|l| l.older) {
            Some((v, until)) if until > now => v,
            _ => IgmpVersion::V3,
        }
    }

    /// Becomes a member of `groups` on `links` (interface, our address there): leaves what is
    /// no longer wanted and reports what is new at once (repeated 1 s later).
    pub fn set(
        &mut self,
        now: Instant,
        links: &[(IfId, Ipv4Addr)],
        groups: &BTreeSet<Ipv4Addr>,
        out: &mut Vec<IgmpOut>,
    ) {
        let wanted: BTreeMap<IfId, Ipv4Addr> = if groups.is_empty() {
            BTreeMap::new()
        } else {
            links.iter().copied().collect()
        };
        // Leave groups gone from links kept, and everything on links gone (or re-addressed).
        let old_links: Vec<(IfId, Ipv4Addr)> = self.interfaces().collect();
        for (i, addr) in old_links {
            let kept = wanted.get(&i) == Some(&addr);
            let gone: Vec<Ipv4Addr> = self
                .groups
                .iter()
                .filter(|g| !kept || !groups.contains(g))
                .copied()
                .collect();
            for g in gone {
                self.leave(now, i, g, out);
            }
            if !kept {
                self.links.remove(&i);
            }
        }
        for (i, addr) in &wanted {
            let new_link = !self.links.contains_key(i);
            self.links.entry(*i).or_insert(Link {
                addr: *addr,
                older: None,
            });
            for g in groups {
                if new_link || !self.groups.contains(g) {
                    self.report(now, *i, Some(*g), true, out);
                    self.pending
                        .insert((*i, Some(*g)), now + UNSOLICITED_REPEAT);
                }
            }
        }
        self.groups = groups.clone();
        let links = &self.links;
        let groups = &self.groups;
        self.pending
            .retain(|(i, g), _| links.contains_key(i) && g.is_none_or(|g| groups.contains(&g)));
    }

    /// Leaves every group on every interface (the router stops).
    pub fn leave_all(&mut self, now: Instant, out: &mut Vec<IgmpOut>) {
        self.set(now, &[], &BTreeSet::new(), out);
    }

    /// An IGMP message (the IPv4 payload) received on `rx_if`.
    pub fn on_message(&mut self, now: Instant, rx_if: IfId, msg: &[u8]) {
        let parsed = igmp::verify_checksum(msg)
            .then(|| IgmpRepr::parse(msg).ok())
            .flatten();
        let Some(repr) = parsed else {
            self.counters.malformed += 1;
            return;
        };
        let IgmpRepr::Query {
            version,
            max_resp_tenths,
            group,
            ..
        } = repr
        else {
            self.counters.ignored += 1;
            return;
        };
        match version {
            IgmpVersion::V1 => self.counters.queries_v1 += 1,
            IgmpVersion::V2 => self.counters.queries_v2 += 1,
            IgmpVersion::V3 => self.counters.queries_v3 += 1,
        }
        let Some(link) = self.links.get_mut(&rx_if) else {
            self.counters.ignored += 1;
            return;
        };
        if version != IgmpVersion::V3 {
            let v = match link.older {
                Some((old, until)) if until > now => old.min(version),
                _ => version,
            };
            link.older = Some((v, now + OLDER_QUERIER_TIMEOUT));
        }
        let general = group.is_unspecified();
        if !general && !self.groups.contains(&group) {
            self.counters.ignored += 1;
            return;
        }
        let max = Duration::from_millis(u64::from(max_resp_tenths.max(1)) * 100);
        let v3 = self.version(rx_if, now) == IgmpVersion::V3;
        let keys: Vec<Option<Ipv4Addr>> = match (general, v3) {
            (true, true) => vec![None],
            (true, false) => self.groups.iter().map(|g| Some(*g)).collect(),
            (false, _) => vec![Some(group)],
        };
        for k in keys {
            let at = now + self.delay(max);
            // RFC 2236 §3: an earlier pending report stands; a later one is brought forward.
            let slot = self.pending.entry((rx_if, k)).or_insert(at);
            *slot = (*slot).min(at);
        }
    }

    /// When [`Self::on_timeout`] must run next.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.values().min().copied()
    }

    /// Sends the reports that are due.
    pub fn on_timeout(&mut self, now: Instant, out: &mut Vec<IgmpOut>) {
        let due: Vec<(IfId, Option<Ipv4Addr>)> = self
            .pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| *k)
            .collect();
        for (i, g) in due {
            self.pending.remove(&(i, g));
            self.report(now, i, g, false, out);
        }
    }

    /// A uniformly spread delay within `max` (splitmix64).
    fn delay(&mut self, max: Duration) -> Duration {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX).max(1);
        Duration::from_millis(z % ms)
    }

    /// A report of `group` (or, v3, of every group) on `tx_if`; `change` marks a join.
    fn report(
        &mut self,
        now: Instant,
        tx_if: IfId,
        group: Option<Ipv4Addr>,
        change: bool,
        out: &mut Vec<IgmpOut>,
    ) {
        let Some(addr) = self.links.get(&tx_if).map(|l| l.addr) else {
            return;
        };
        if group.is_none() && self.version(tx_if, now) != IgmpVersion::V3 {
            // A v3 report of every group, due after the querier turned older: one each.
            for g in self.groups.clone() {
                self.report(now, tx_if, Some(g), change, out);
            }
            return;
        }
        let (dst, repr) = match (self.version(tx_if, now), group) {
            (IgmpVersion::V3, g) => {
                let kind = if change {
                    igmp::record::CHANGE_TO_EXCLUDE
                } else {
                    igmp::record::MODE_IS_EXCLUDE
                };
                let groups: Vec<Ipv4Addr> = match g {
                    Some(g) => vec![g],
                    None => self.groups.iter().copied().collect(),
                };
                let records = groups
                    .into_iter()
                    .map(|group| GroupRecord {
                        kind,
                        group,
                        sources: Vec::new(),
                    })
                    .collect();
                (ALL_V3_ROUTERS, IgmpRepr::V3Report { records })
            }
            (version, Some(g)) => (g, IgmpRepr::Report { version, group: g }),
            (_, None) => return,
        };
        self.emit(tx_if, addr, dst, &repr, out);
        self.counters.reports_sent += 1;
    }

    /// Leaves `group` on `tx_if` (IGMPv1 has no leave).
    fn leave(&mut self, now: Instant, tx_if: IfId, group: Ipv4Addr, out: &mut Vec<IgmpOut>) {
        let Some(addr) = self.links.get(&tx_if).map(|l| l.addr) else {
            return;
        };
        let (dst, repr) = match self.version(tx_if, now) {
            IgmpVersion::V1 => return,
            IgmpVersion::V2 => (ALL_ROUTERS, IgmpRepr::Leave { group }),
            IgmpVersion::V3 => (
                ALL_V3_ROUTERS,
                IgmpRepr::V3Report {
                    records: vec![GroupRecord {
                        kind: igmp::record::CHANGE_TO_INCLUDE,
                        group,
                        sources: Vec::new(),
                    }],
                },
            ),
        };
        self.pending.remove(&(tx_if, Some(group)));
        self.emit(tx_if, addr, dst, &repr, out);
        self.counters.leaves_sent += 1;
    }

    fn emit(
        &mut self,
        tx_if: IfId,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        repr: &IgmpRepr,
        out: &mut Vec<IgmpOut>,
    ) {
        self.ident = self.ident.wrapping_add(1);
        out.push(IgmpOut {
            tx_if,
            dst,
            packet: igmp::ipv4_packet(src, dst, &repr.to_bytes(), self.ident),
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const G: Ipv4Addr = Ipv4Addr::new(239, 1, 2, 3);
    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 3, 1);

    fn decode(o: &IgmpOut) -> IgmpRepr {
        IgmpRepr::parse(&o.packet[24..]).unwrap()
    }

    fn query(version: IgmpVersion, group: Ipv4Addr, tenths: u32) -> Vec<u8> {
        IgmpRepr::Query {
            version,
            max_resp_tenths: tenths,
            group,
            sources: vec![],
        }
        .to_bytes()
    }

    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn joining_reports_twice_and_answers_queries_in_the_queriers_version() {
        let now = t0();
        let mut h = IgmpHost::new(1);
        let mut out = vec![];
        h.set(now, &[(2, A)], &[G].into(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].tx_if, out[0].dst), (2, ALL_V3_ROUTERS));
        assert!(
            matches!(&decode(&out[0]), IgmpRepr::V3Report { records } if records[0].group == G && records[0].kind == igmp::record::CHANGE_TO_EXCLUDE)
        );
        out.clear();
        h.on_timeout(now + UNSOLICITED_REPEAT, &mut out);
        assert_eq!(out.len(), 1, "the repeat");
        assert_eq!(h.deadline(), None);
        // A v2 general query (Max Resp 1 s): a v2 report to the group within 1 s.
        out.clear();
        h.on_message(now, 2, &query(IgmpVersion::V2, Ipv4Addr::UNSPECIFIED, 10));
        let due = h.deadline().unwrap();
        assert!(due <= now + Duration::from_secs(1));
        h.on_timeout(due, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].dst, G);
        assert_eq!(
            decode(&out[0]),
            IgmpRepr::Report {
                version: IgmpVersion::V2,
                group: G
            }
        );
        // The v2 querier rules for 260 s: a leave is a v2 leave to all routers.
        out.clear();
        h.leave_all(now, &mut out);
        assert_eq!(out[0].dst, ALL_ROUTERS);
        assert_eq!(decode(&out[0]), IgmpRepr::Leave { group: G });
        assert_eq!(h.counters.leaves_sent, 1);
        assert_eq!(h.counters.reports_sent, 3);
    }

    #[test]
    fn v3_queries_get_v3_reports_and_other_groups_are_ignored() {
        let now = t0();
        let mut h = IgmpHost::new(7);
        let mut out = vec![];
        h.set(now, &[(1, A)], &[G].into(), &mut out);
        h.on_timeout(now + UNSOLICITED_REPEAT, &mut out);
        out.clear();
        h.on_message(now, 1, &query(IgmpVersion::V3, Ipv4Addr::UNSPECIFIED, 5));
        h.on_message(
            now,
            1,
            &query(IgmpVersion::V2, Ipv4Addr::new(239, 9, 9, 9), 5),
        );
        assert_eq!(h.counters.ignored, 1);
        h.on_message(now, 1, &[0x11, 0, 0]);
        assert_eq!(h.counters.malformed, 1);
        h.on_timeout(now + Duration::from_secs(1), &mut out);
        assert_eq!(out.len(), 1);
        // The v2 query (about another group) made the link v2 before the v3 query's report
        // was due: it goes out in the version in force then.
        assert!(matches!(
            decode(&out[0]),
            IgmpRepr::Report {
                version: IgmpVersion::V2,
                ..
            }
        ));
        // After the older-querier timeout, v3 again.
        assert_eq!(
            h.version(1, now + OLDER_QUERIER_TIMEOUT + Duration::from_secs(1)),
            IgmpVersion::V3
        );
    }

    #[test]
    fn dropping_a_group_leaves_it_and_nothing_is_joined_without_groups() {
        let now = t0();
        let mut h = IgmpHost::new(3);
        let mut out = vec![];
        h.set(now, &[(1, A)], &BTreeSet::new(), &mut out);
        assert!(out.is_empty() && h.interfaces().next().is_none());
        h.set(now, &[(1, A)], &[G].into(), &mut out);
        out.clear();
        h.set(now, &[(1, A)], &BTreeSet::new(), &mut out);
        assert_eq!(out.len(), 1);
        assert!(
            matches!(&decode(&out[0]), IgmpRepr::V3Report { records } if records[0].kind == igmp::record::CHANGE_TO_INCLUDE)
        );
        assert_eq!(h.deadline(), None, "the pending repeat went with it");
    }
}
