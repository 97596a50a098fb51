//! Raw ESP (IP protocol 50, RFC 4303; IPsec without NAT-T) through the NAT, keyed by the
//! Security Parameter Index (issue 16, seed 003 claim 7).
//!
//! ESP has no ports, so the port-based mappings of [`crate::session`] cannot find the inside host
//! of an inbound ESP packet. What names an SA on the wire is its SPI: each direction of an IPsec
//! SA pair has its own, chosen by that direction's *receiver*. For inside host I, pool address P
//! and remote R:
//!
//! - `out_spi`, on I→R packets, was chosen by R; the NAT sees it on the first outbound packet.
//! - `in_spi`, on R→P packets, was chosen by I inside the encrypted IKE exchange; the NAT cannot
//!   read it there and learns it from the first inbound packet.
//!
//! # Keys
//!
//! [`EspTable`] holds one session per (I, R, `out_spi`) with three maps:
//!
//! | map | key | value |
//! |---|---|---|
//! | outbound | (I, R, `out_spi`) | the session |
//! | inbound | (P, R, `in_spi`), once learnt | the session |
//! | pending | (P, R) | the unlearnt session the next unknown inbound SPI from R to P is bound to |
//!
//! An outbound packet of a session whose `in_spi` is not learnt makes it the pending session of
//! (P, R). An inbound packet whose (P, R, SPI) is unknown is bound to the pending session, which
//! learns the SPI and stops being pending; with nothing pending it is dropped (counted as
//! `no_session`: filtering, like address-and-port-dependent filtering for TCP/UDP). When two
//! inside hosts negotiate with the same remote through the same pool address at once, the one
//! that sent last gets the next unknown inbound SPI (`pending_replaced` counts each time an
//! unlearnt session loses the pending slot; its next outbound packet claims it back). This is
//! the rule Cisco IOS calls "ESP SPI matching": IKE sends the responder's first ESP packet after
//! the initiator's, so in practice the binding is right; a wrong guess costs an SA the peers
//! will re-key.
//!
//! **SPI collisions.** Two inside hosts may choose the same `in_spi` for SAs with the same remote
//! through the same pool address; on the wire those packets are indistinguishable. The session
//! that learnt the SPI first keeps it until it expires; the other learns nothing from those
//! packets (they go to the first host, which drops them: ESP integrity fails). A synced session
//! ([`EspTable::install`]) whose learnt SPI is already held by another session is installed
//! unlearnt (counted in `spi_conflicts`) so neither session's state is corrupted.
//!
//! # Shared, not per worker
//!
//! ESP sessions do not use VIDs, the flow table or the switch processor: there is no port to
//! carry a VID, and ESP is rare enough that one table shared by all workers (the router shards
//! it behind a few mutexes keyed by the remote address) costs less than a dispatch scheme. This
//! module is a plain data structure; the caller supplies P for I with
//! [`crate::config::Config::pool_addr_for`], the same paired-pool choice the session table makes
//! for I's TCP, UDP and ICMP mappings (RFC 4787 REQ-2).
//!
//! # Time, memory, expiry
//!
//! `now` is whole seconds on the caller's clock. Sessions live in a slab of the capacity given
//! at construction and the maps reserve twice that, so the per-packet path never allocates;
//! creation beyond the capacity is refused ([`EspDrop::Full`]). [`EspTable::expire`] visits at
//! most `budget` slab slots per call, resuming where it stopped; a session idle for `timeout_s`
//! is removed from all three maps within one sweep of the slab.
//!
//! # Packets, records, clusters
//!
//! [`parse`] checks an IPv4 packet is a non-fragment ESP packet with the 8-octet ESP header and
//! a non-zero SPI (RFC 4303 reserves 0); [`rewrite`] changes the source (outbound) or destination
//! (inbound) address and patches the IP header checksum incrementally (RFC 1624). ESP has no
//! checksum over a pseudo-header, so nothing else changes. Sessions travel as HA and cluster
//! records with [`crate::sync::encode_esp`]; the cluster id of an ESP session is
//! [`crate::cluster::esp_id`] of R, the address both directions share.
//!
//! # Limits
//!
//! - An SA whose first packet comes from the outside (R→P before any I→R packet of the pair) is
//!   dropped until the inside host sends.
//! - Fragments are dropped (as for the rest of the NAT).
//! - A session's pool address is fixed at creation; a pool change applies to new SAs.

use crate::cluster::{self, IdSet};
use crate::hash::MixState;
use crate::translate::{Side, Skip};
use netwire::ipv4::Ipv4Packet;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::num::NonZeroU32;

/// IP protocol number of ESP.
pub const PROTO_ESP: u8 = 50;
/// Octets of the ESP header the NAT reads: SPI and sequence number.
pub const ESP_HEADER_LEN: usize = 8;

/// The fields of an ESP packet the NAT looks up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspPacket {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Security Parameter Index (never 0 on the wire).
    pub spi: NonZeroU32,
    /// Sequence number.
    pub seq: u32,
}

/// Parses the IPv4 packet at the start of `pkt` as ESP: [`Skip::Fragment`] for any fragment,
/// [`Skip::Unsupported`] for another protocol, [`Skip::Malformed`] for a bad IPv4 header, fewer
/// than [`ESP_HEADER_LEN`] octets of payload or SPI 0.
pub fn parse(pkt: &[u8]) -> Result<EspPacket, Skip> {
    let ip = Ipv4Packet::new_checked(pkt).map_err(|_| Skip::Malformed)?;
    if ip.is_fragment() {
        return Err(Skip::Fragment);
    }
    if ip.protocol() != PROTO_ESP {
        return Err(Skip::Unsupported);
    }
    let Some(&[a, b, c, d, e, f, g, h]) = ip.payload().get(..ESP_HEADER_LEN) else {
        return Err(Skip::Malformed);
    };
    let spi = NonZeroU32::new(u32::from_be_bytes([a, b, c, d])).ok_or(Skip::Malformed)?;
    Ok(EspPacket {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        spi,
        seq: u32::from_be_bytes([e, f, g, h]),
    })
}

/// Rewrites the source (outbound) or destination (inbound) address of the IPv4 packet at the
/// start of `pkt` to `addr`, patching the header checksum incrementally; returns the old address.
/// A packet without a valid IPv4 header is left untouched ([`Skip::Malformed`]).
pub fn rewrite(pkt: &mut [u8], side: Side, addr: Ipv4Addr) -> Result<Ipv4Addr, Skip> {
    let mut ip = Ipv4Packet::new_checked(pkt).map_err(|_| Skip::Malformed)?;
    Ok(match side {
        Side::Src => ip.replace_src_addr(addr),
        Side::Dst => ip.replace_dst_addr(addr),
    })
}

/// An ESP session's identity: the key of its record and of the outbound map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EspKey {
    /// Inside address.
    pub inside: Ipv4Addr,
    /// Remote address.
    pub remote: Ipv4Addr,
    /// SPI of inside → remote packets (chosen by the remote).
    pub out_spi: NonZeroU32,
}

/// One ESP SA pair through the NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspSession {
    /// Inside address.
    pub inside: Ipv4Addr,
    /// Pool address written as the source of outbound packets.
    pub pool: Ipv4Addr,
    /// Remote address.
    pub remote: Ipv4Addr,
    /// SPI of inside → remote packets (chosen by the remote).
    pub out_spi: NonZeroU32,
    /// SPI of remote → pool packets (chosen by the inside host), once learnt.
    pub in_spi: Option<NonZeroU32>,
    /// When a packet last refreshed it (caller's seconds).
    pub last_seen: u32,
    /// When it was created (or installed) here.
    pub created: u32,
}

impl EspSession {
    /// Its identity.
    pub fn key(&self) -> EspKey {
        EspKey {
            inside: self.inside,
            remote: self.remote,
            out_spi: self.out_spi,
        }
    }
}

/// Why an ESP packet was not translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EspDrop {
    /// A new session was refused: the table is at capacity.
    Full,
    /// Inbound with an unknown SPI and no session pending for (pool, remote).
    NoSession,
}

impl EspDrop {
    /// The stable counter name.
    pub fn as_str(self) -> &'static str {
        match self {
            EspDrop::Full => "nat-esp-full",
            EspDrop::NoSession => "nat-esp-no-session",
        }
    }
}

/// An outbound packet's translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspOut {
    /// The pool address to write as the source.
    pub pool: Ipv4Addr,
    /// The session when it was just created: publish it to the HA peer / cluster
    /// ([`crate::sync::encode_esp`]).
    pub sync: Option<EspSession>,
}

/// An inbound packet's translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspIn {
    /// The inside address to write as the destination.
    pub inside: Ipv4Addr,
    /// The session when it just learnt its inbound SPI: publish it.
    pub sync: Option<EspSession>,
}

/// An ESP table's counters (the router sums its shards' with [`EspCounters::add`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EspCounters {
    /// Outbound packets given a pool address.
    pub out_packets: u64,
    /// Inbound packets given an inside address.
    pub in_packets: u64,
    /// Sessions created by outbound packets.
    pub created: u64,
    /// Inbound SPIs learnt by a pending session.
    pub learnt: u64,
    /// Times an unlearnt session lost the pending slot of its (pool, remote) to another.
    pub pending_replaced: u64,
    /// Inbound packets dropped: unknown SPI and nothing pending (filtered).
    pub no_session: u64,
    /// New sessions refused at capacity (outbound packets and installs).
    pub full: u64,
    /// Sessions removed by [`EspTable::expire`].
    pub expired: u64,
    /// Installed sessions whose learnt inbound SPI another session already held (installed
    /// unlearnt).
    pub spi_conflicts: u64,
    /// Sessions installed from sync records.
    pub installed: u64,
    /// Sessions removed by a sync delete or a cluster hand-over.
    pub removed: u64,
}

impl EspCounters {
    /// Adds `o` field by field.
    pub fn add(&mut self, o: &EspCounters) {
        self.out_packets += o.out_packets;
        self.in_packets += o.in_packets;
        self.created += o.created;
        self.learnt += o.learnt;
        self.pending_replaced += o.pending_replaced;
        self.no_session += o.no_session;
        self.full += o.full;
        self.expired += o.expired;
        self.spi_conflicts += o.spi_conflicts;
        self.installed += o.installed;
        self.removed += o.removed;
    }
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    s: EspSession,
    live: bool,
}

/// (address, remote, SPI) packed for the outbound and inbound maps.
#[inline]
fn spi_key(a: Ipv4Addr, remote: Ipv4Addr, spi: NonZeroU32) -> u128 {
    (u128::from(u32::from(a)) << 64) | (u128::from(u32::from(remote)) << 32) | u128::from(spi.get())
}

/// (pool, remote) packed for the pending map.
#[inline]
fn pair_key(pool: Ipv4Addr, remote: Ipv4Addr) -> u64 {
    (u64::from(u32::from(pool)) << 32) | u64::from(u32::from(remote))
}

/// ESP sessions keyed by SPI (see the module doc).
#[derive(Debug)]
pub struct EspTable {
    cap: usize,
    slots: Vec<Slot>,
    free: Vec<u32>,
    by_out: HashMap<u128, u32, MixState>,
    by_in: HashMap<u128, u32, MixState>,
    pending: HashMap<u64, u32, MixState>,
    live: usize,
    cursor: usize,
    /// Counters.
    pub counters: EspCounters,
}

impl EspTable {
    /// An empty table for `capacity` sessions (at most `u32::MAX`), everything preallocated;
    /// `seed` keys the maps' hash.
    pub fn new(capacity: usize, seed: u64) -> EspTable {
        let cap = capacity.min(u32::MAX as usize);
        let map = |n: usize| HashMap::with_capacity_and_hasher(n, MixState::new(seed));
        EspTable {
            cap,
            slots: Vec::with_capacity(cap),
            free: Vec::with_capacity(cap),
            by_out: map(2 * cap),
            by_in: map(2 * cap),
            pending: HashMap::with_capacity_and_hasher(2 * cap, MixState::new(seed ^ 1)),
            live: 0,
            cursor: 0,
            counters: EspCounters::default(),
        }
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True without sessions.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The capacity given at construction.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Slab slots in use or freed; one [`EspTable::expire`] sweep visits this many.
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    /// An outbound packet from `inside` (whose pool address is `pool`) to `remote` with SPI
    /// `out_spi`: finds or creates its session and refreshes it; an unlearnt session becomes the
    /// pending one of (pool, remote). Returns the pool address to write (the session's: fixed at
    /// creation).
    pub fn outbound(
        &mut self,
        inside: Ipv4Addr,
        pool: Ipv4Addr,
        remote: Ipv4Addr,
        out_spi: NonZeroU32,
        now: u32,
    ) -> Result<EspOut, EspDrop> {
        let k = spi_key(inside, remote, out_spi);
        let (i, created) = match self.by_out.get(&k) {
            Some(&i) => (i, false),
            None => {
                if self.live >= self.cap {
                    self.counters.full += 1;
                    return Err(EspDrop::Full);
                }
                let i = self.alloc(EspSession {
                    inside,
                    pool,
                    remote,
                    out_spi,
                    in_spi: None,
                    last_seen: now,
                    created: now,
                });
                self.by_out.insert(k, i);
                self.counters.created += 1;
                (i, true)
            }
        };
        let slot = &mut self.slots[i as usize].s;
        slot.last_seen = now;
        let s = *slot;
        if s.in_spi.is_none() {
            self.claim_pending(i, &s);
        }
        self.counters.out_packets += 1;
        Ok(EspOut {
            pool: s.pool,
            sync: created.then_some(s),
        })
    }

    /// An inbound packet from `remote` to `pool` with SPI `in_spi`: the session that learnt the
    /// SPI, else the pending session of (pool, remote), which learns it. Returns the inside
    /// address to write.
    pub fn inbound(
        &mut self,
        pool: Ipv4Addr,
        remote: Ipv4Addr,
        in_spi: NonZeroU32,
        now: u32,
    ) -> Result<EspIn, EspDrop> {
        let k = spi_key(pool, remote, in_spi);
        if let Some(&i) = self.by_in.get(&k) {
            let s = &mut self.slots[i as usize].s;
            s.last_seen = now;
            self.counters.in_packets += 1;
            return Ok(EspIn {
                inside: s.inside,
                sync: None,
            });
        }
        let Some(i) = self.pending.remove(&pair_key(pool, remote)) else {
            self.counters.no_session += 1;
            return Err(EspDrop::NoSession);
        };
        let slot = &mut self.slots[i as usize].s;
        slot.in_spi = Some(in_spi);
        slot.last_seen = now;
        let s = *slot;
        self.by_in.insert(k, i);
        self.counters.learnt += 1;
        self.counters.in_packets += 1;
        Ok(EspIn {
            inside: s.inside,
            sync: Some(s),
        })
    }

    /// Removes sessions idle for `timeout_s` or more (appending them to `out`), visiting at most
    /// `budget` slab slots from where the previous call stopped. Returns the slots visited.
    pub fn expire(
        &mut self,
        now: u32,
        timeout_s: u32,
        budget: usize,
        out: &mut Vec<EspSession>,
    ) -> usize {
        let n = self.slots.len();
        let mut work = 0;
        while work < budget.min(n) {
            let i = self.cursor % n;
            self.cursor = (i + 1) % n;
            work += 1;
            let x = self.slots[i];
            if x.live && x.s.last_seen.saturating_add(timeout_s) <= now {
                out.push(self.remove_slot(i as u32));
                self.counters.expired += 1;
            }
        }
        work
    }

    /// Adopts a session from a sync record (HA standby, another cluster node), learnt or not;
    /// installing the same record again changes nothing but its idle time. Its times restart at
    /// `now` (another node's clock means nothing here). An unlearnt one becomes the pending
    /// session of its (pool, remote); a learnt one whose inbound SPI another session holds is
    /// installed unlearnt (`spi_conflicts`).
    pub fn install(&mut self, s: &EspSession, now: u32) -> Result<(), EspDrop> {
        let k = spi_key(s.inside, s.remote, s.out_spi);
        let mut created = now;
        if let Some(&i) = self.by_out.get(&k) {
            let old = self.slots[i as usize].s;
            if (old.pool, old.in_spi) == (s.pool, s.in_spi) {
                self.slots[i as usize].s.last_seen = now;
                if old.in_spi.is_none() {
                    self.claim_pending(i, &old);
                }
                return Ok(());
            }
            created = old.created;
            self.remove_slot(i);
        } else if self.live >= self.cap {
            self.counters.full += 1;
            return Err(EspDrop::Full);
        }
        let mut n = EspSession {
            last_seen: now,
            created,
            ..*s
        };
        let mut conflict = false;
        if let Some(spi) = n.in_spi {
            if self.by_in.contains_key(&spi_key(n.pool, n.remote, spi)) {
                self.counters.spi_conflicts += 1;
                n.in_spi = None;
                conflict = true;
            }
        }
        let i = self.alloc(n);
        self.by_out.insert(k, i);
        match n.in_spi {
            Some(spi) => {
                self.by_in.insert(spi_key(n.pool, n.remote, spi), i);
            }
            // A conflicting session is not made pending: an SPI it could learn now would be
            // another SA's. Its own next outbound packet claims the slot.
            None if !conflict => self.claim_pending(i, &n),
            None => {}
        }
        self.counters.installed += 1;
        Ok(())
    }

    /// The session with identity `key`.
    pub fn get(&self, key: &EspKey) -> Option<EspSession> {
        let i = *self
            .by_out
            .get(&spi_key(key.inside, key.remote, key.out_spi))?;
        Some(self.slots[i as usize].s)
    }

    /// Removes the session with identity `key` (a sync delete).
    pub fn remove(&mut self, key: &EspKey) -> Option<EspSession> {
        let i = *self
            .by_out
            .get(&spi_key(key.inside, key.remote, key.out_spi))?;
        self.counters.removed += 1;
        Some(self.remove_slot(i))
    }

    /// Every live session (the status listing, a full HA re-export).
    pub fn iter(&self) -> impl Iterator<Item = EspSession> + '_ {
        self.slots.iter().filter(|x| x.live).map(|x| x.s)
    }

    /// Appends every session whose cluster id ([`cluster::esp_id`] of its remote under `key`)
    /// is in `ids` (what a node hands over when those ids move).
    pub fn snapshot_ids(&self, key: u64, ids: &IdSet, out: &mut Vec<EspSession>) {
        out.extend(
            self.iter()
                .filter(|s| ids.contains(cluster::esp_id(key, s.remote))),
        );
    }

    /// Removes every session whose cluster id is in `ids` (they moved to another node),
    /// appending them to `out`.
    pub fn drop_ids(&mut self, key: u64, ids: &IdSet, out: &mut Vec<EspSession>) {
        for i in 0..self.slots.len() {
            let x = self.slots[i];
            if x.live && ids.contains(cluster::esp_id(key, x.s.remote)) {
                out.push(self.remove_slot(i as u32));
                self.counters.removed += 1;
            }
        }
    }

    /// Makes unlearnt session `i` the pending one of its (pool, remote).
    #[inline]
    fn claim_pending(&mut self, i: u32, s: &EspSession) {
        if let Some(j) = self.pending.insert(pair_key(s.pool, s.remote), i) {
            if j != i {
                self.counters.pending_replaced += 1;
            }
        }
    }

    /// A slot for `s` (the caller checked the capacity).
    fn alloc(&mut self, s: EspSession) -> u32 {
        self.live += 1;
        let slot = Slot { s, live: true };
        match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// Frees slot `i` and every map entry pointing at it.
    fn remove_slot(&mut self, i: u32) -> EspSession {
        let s = self.slots[i as usize].s;
        self.slots[i as usize].live = false;
        self.by_out.remove(&spi_key(s.inside, s.remote, s.out_spi));
        if let Some(spi) = s.in_spi {
            let k = spi_key(s.pool, s.remote, spi);
            if self.by_in.get(&k) == Some(&i) {
                self.by_in.remove(&k);
            }
        }
        let pk = pair_key(s.pool, s.remote);
        if self.pending.get(&pk) == Some(&i) {
            self.pending.remove(&pk);
        }
        self.free.push(i);
        self.live -= 1;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::translate::build;

    const I1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const I2: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const P: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const R: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

    fn spi(x: u32) -> NonZeroU32 {
        NonZeroU32::new(x).unwrap()
    }

    /// An ESP packet with `spi`, sequence 1 and 32 octets of "ciphertext".
    fn esp(src: Ipv4Addr, dst: Ipv4Addr, spi: u32) -> Vec<u8> {
        let mut l4 = vec![0u8; ESP_HEADER_LEN + 32];
        l4[..4].copy_from_slice(&spi.to_be_bytes());
        l4[4..8].copy_from_slice(&1u32.to_be_bytes());
        build::ipv4(src, dst, PROTO_ESP, 64, &l4)
    }

    #[test]
    fn parse_reads_spi_and_refuses_what_it_cannot_translate() {
        let p = parse(&esp(I1, R, 0x1234_5678)).unwrap();
        assert_eq!((p.src, p.dst, p.spi.get(), p.seq), (I1, R, 0x1234_5678, 1));
        assert_eq!(parse(&esp(I1, R, 0)), Err(Skip::Malformed));
        let short = build::ipv4(I1, R, PROTO_ESP, 64, &[0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(parse(&short), Err(Skip::Malformed));
        let mut frag = esp(I1, R, 9);
        frag[6] = 0x20; // MF
        assert_eq!(parse(&frag), Err(Skip::Fragment));
        let gre = build::ipv4(I1, R, 47, 64, &[0; 8]);
        assert_eq!(parse(&gre), Err(Skip::Unsupported));
        let pkt = esp(I1, R, 9);
        for n in 0..28 {
            assert!(parse(&pkt[..n]).is_err(), "prefix {n}");
        }
        let mut b = pkt[..10].to_vec();
        assert_eq!(rewrite(&mut b, Side::Src, P), Err(Skip::Malformed));
        assert_eq!(b, pkt[..10]);
    }

    #[test]
    fn rewrite_patches_only_the_address_and_the_ip_checksum() {
        let pkt = esp(I1, R, 0xabcd);
        let mut b = pkt.clone();
        assert_eq!(rewrite(&mut b, Side::Src, P), Ok(I1));
        assert!(Ipv4Packet::new_checked(&b[..]).unwrap().verify_checksum());
        assert_eq!(parse(&b).unwrap().src, P);
        assert_eq!(b[20..], pkt[20..]);
        assert_eq!(rewrite(&mut b, Side::Src, I1), Ok(P));
        assert_eq!(b, pkt);
    }

    #[test]
    fn the_first_unknown_inbound_spi_is_learnt_by_the_pending_session() {
        let mut t = EspTable::new(8, 1);
        let o = t.outbound(I1, P, R, spi(0x100), 5).unwrap();
        assert_eq!(o.pool, P);
        assert_eq!(o.sync.map(|s| s.in_spi), Some(None));
        let again = t.outbound(I1, P, R, spi(0x100), 6).unwrap();
        assert_eq!(again.sync, None);
        let i = t.inbound(P, R, spi(0x200), 7).unwrap();
        assert_eq!(i.inside, I1);
        assert_eq!(i.sync.unwrap().in_spi, Some(spi(0x200)));
        assert_eq!(t.inbound(P, R, spi(0x200), 8).unwrap().sync, None);
        // Learnt: another unknown SPI is not bound to it.
        assert_eq!(t.inbound(P, R, spi(0x300), 8), Err(EspDrop::NoSession));
        let c = t.counters;
        assert_eq!((c.created, c.learnt, c.no_session), (1, 1, 1));
        assert_eq!((c.out_packets, c.in_packets), (2, 2));
    }

    #[test]
    fn a_removed_session_leaves_no_key_behind() {
        let mut t = EspTable::new(4, 1);
        t.outbound(I1, P, R, spi(1), 0).unwrap();
        t.inbound(P, R, spi(2), 0).unwrap();
        t.outbound(I2, P, R, spi(3), 0).unwrap();
        let key = EspKey {
            inside: I1,
            remote: R,
            out_spi: spi(1),
        };
        assert_eq!(t.remove(&key).map(|s| s.in_spi), Some(Some(spi(2))));
        assert_eq!(t.get(&key), None);
        assert_eq!(t.inbound(P, R, spi(2), 0).unwrap().inside, I2);
        t.remove(&EspKey {
            inside: I2,
            remote: R,
            out_spi: spi(3),
        });
        assert!(t.is_empty());
        assert_eq!(t.inbound(P, R, spi(2), 0), Err(EspDrop::NoSession));
        assert_eq!(t.inbound(P, R, spi(9), 0), Err(EspDrop::NoSession));
    }

    #[test]
    fn an_installed_spi_already_held_is_installed_unlearnt() {
        let mut t = EspTable::new(4, 1);
        t.outbound(I1, P, R, spi(1), 0).unwrap();
        t.inbound(P, R, spi(0x77), 0).unwrap();
        let other = EspSession {
            inside: I2,
            pool: P,
            remote: R,
            out_spi: spi(2),
            in_spi: Some(spi(0x77)),
            last_seen: 0,
            created: 0,
        };
        assert_eq!(t.install(&other, 3), Ok(()));
        assert_eq!(t.counters.spi_conflicts, 1);
        // The holder keeps the SPI; the newcomer is unlearnt and not pending.
        assert_eq!(t.inbound(P, R, spi(0x77), 4).unwrap().inside, I1);
        assert_eq!(t.get(&other.key()).unwrap().in_spi, None);
        assert_eq!(t.inbound(P, R, spi(0x78), 4), Err(EspDrop::NoSession));
        // Its own outbound packet claims the pending slot; it learns its next SPI.
        t.outbound(I2, P, R, spi(2), 5).unwrap();
        assert_eq!(t.inbound(P, R, spi(0x78), 5).unwrap().inside, I2);
        // Removing the newcomer does not take the holder's inbound key with it.
        t.remove(&other.key());
        assert_eq!(t.inbound(P, R, spi(0x77), 6).unwrap().inside, I1);
    }

    #[test]
    fn install_is_idempotent_and_follows_the_record() {
        let mut t = EspTable::new(2, 1);
        let mut s = EspSession {
            inside: I1,
            pool: P,
            remote: R,
            out_spi: spi(1),
            in_spi: None,
            last_seen: 0,
            created: 0,
        };
        t.install(&s, 10).unwrap();
        t.install(&s, 11).unwrap();
        assert_eq!(t.len(), 1);
        let got = t.get(&s.key()).unwrap();
        assert_eq!((got.created, got.last_seen), (10, 11));
        // Unlearnt: pending, so the standby learns the SPI after a takeover.
        s.in_spi = Some(spi(5));
        t.install(&s, 12).unwrap();
        t.install(&s, 12).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t.get(&s.key()).unwrap().created, 10);
        assert_eq!(t.inbound(P, R, spi(5), 13).unwrap().inside, I1);
        assert_eq!(t.inbound(P, R, spi(6), 13), Err(EspDrop::NoSession));
        assert_eq!(t.counters.spi_conflicts, 0);
        // A re-keyed record moves the inbound key.
        s.in_spi = Some(spi(6));
        t.install(&s, 14).unwrap();
        assert_eq!(t.inbound(P, R, spi(5), 14), Err(EspDrop::NoSession));
        assert_eq!(t.inbound(P, R, spi(6), 14).unwrap().inside, I1);
        // Capacity holds for installs.
        for n in 2..4 {
            let x = EspSession {
                out_spi: spi(n),
                ..s
            };
            let r = t.install(&x, 15);
            assert_eq!(r.is_ok(), n == 2, "{n}");
        }
        assert_eq!(t.counters.full, 1);
    }

    #[test]
    fn ids_select_sessions_by_remote() {
        let mut t = EspTable::new(8, 1);
        let r2 = Ipv4Addr::new(203, 0, 113, 9);
        t.outbound(I1, P, R, spi(1), 0).unwrap();
        t.outbound(I2, P, R, spi(2), 0).unwrap();
        t.outbound(I1, P, r2, spi(3), 0).unwrap();
        let key = 42;
        let ids: IdSet = [cluster::esp_id(key, R)].into_iter().collect();
        let mut snap = Vec::new();
        t.snapshot_ids(key, &ids, &mut snap);
        let mut dropped = Vec::new();
        t.drop_ids(key, &ids, &mut dropped);
        assert_eq!(snap, dropped);
        let want = if cluster::esp_id(key, r2) == cluster::esp_id(key, R) {
            3
        } else {
            2
        };
        assert_eq!(dropped.len(), want);
        assert_eq!(t.len(), 3 - want);
        assert_eq!(t.counters.removed, want as u64);
    }
}
