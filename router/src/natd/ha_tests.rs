//! HA state sync of NAT sessions through real runtimes (issue 15): sessions made on one
//! `NatRuntime` with a live feed, the feed's records applied to a second one (another worker
//! count), and the second translating the same flows to the same outside endpoints.

use super::*;
use crate::pipeline::packet::flags;
use crate::pipeline::StageKind;
use nat::config::{Prefix, Rule};
use nat::translate::build;
use netwire::tcp::flags as tcp;

const OUTSIDE_IF: u16 = 1;
const POOL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const REMOTE: (Ipv4Addr, u16) = (Ipv4Addr::new(198, 51, 100, 7), 443);

fn config(workers: u16) -> Config {
    Config {
        rules: vec![Rule {
            inside: vec![Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 8)],
            outside: u32::from(OUTSIDE_IF),
            pool: vec![POOL],
        }],
        workers,
        max_sessions: 1024,
        ..Config::default()
    }
}

/// One node: a runtime, its switch processor thread and its workers, looped by the test.
struct Node {
    rt: Arc<NatRuntime>,
    workers: Vec<WorkerNat>,
    stop: Arc<AtomicBool>,
    sp: Option<std::thread::JoinHandle<()>>,
    /// Packets a worker translated (after any handoff).
    done: Vec<Packet>,
    /// Drops seen, by reason name.
    drops: Vec<&'static str>,
}

impl Node {
    fn new(workers: u16, feed: SyncFeed) -> Node {
        let rt = Arc::new(NatRuntime::new(config(workers), feed).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let sp = start(rt.clone(), stop.clone()).unwrap();
        let workers = (0..workers)
            .map(|w| WorkerNat::new(w, rt.clone(), 7 + u64::from(w)))
            .collect();
        let mut n = Node {
            rt,
            workers,
            stop,
            sp: Some(sp),
            done: Vec::new(),
            drops: Vec::new(),
        };
        n.pump();
        n
    }

    /// Loops every worker until nothing moves for a while (the switch processor runs on its
    /// own thread).
    fn pump(&mut self) {
        let mut idle = 0;
        while idle < 20 {
            let mut moved = false;
            for w in 0..self.workers.len() {
                let now = Instant::now();
                self.workers[w].begin_loop(now);
                let mut got = Vec::new();
                self.workers[w].take_handoffs(&mut got, HANDOFF_BATCH);
                moved |= !got.is_empty();
                for mut p in got {
                    let step = if p.meta.stage == StageKind::NatIn as u8 {
                        self.workers[w].inbound(&mut p, false)
                    } else {
                        let out_if = p.meta.tx_if;
                        self.workers[w].outbound(&mut p, out_if)
                    };
                    self.finish(w, p, step);
                }
                self.workers[w].end_loop(now);
            }
            idle = if moved { 0 } else { idle + 1 };
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn finish(&mut self, w: usize, mut p: Packet, step: Step) {
        match step {
            Step::Continue => {
                p.meta.flags &= !(flags::NAT_HANDED | flags::NAT_SETUP);
                self.done.push(p);
            }
            Step::HandedOff => {
                if let Err((_, r)) = self.workers[w].push_handoff(p) {
                    self.drops.push(r.as_str());
                }
            }
            Step::Drop(r) => self.drops.push(r.as_str()),
            other => panic!("unexpected step {other:?}"),
        }
    }

    /// Sends an inside packet out of the outside interface through worker 0; the translated
    /// packet's L3 bytes, if any.
    fn out(&mut self, l3: &[u8]) -> Option<Vec<u8>> {
        self.send(l3, false)
    }

    /// Sends an outside packet to a pool address in through worker 0.
    fn inb(&mut self, l3: &[u8]) -> Option<Vec<u8>> {
        self.send(l3, true)
    }

    fn send(&mut self, l3: &[u8], inbound: bool) -> Option<Vec<u8>> {
        let mut frame = vec![0u8; HEADER_LEN];
        frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        frame.extend_from_slice(l3);
        let mut p = Packet::from_frame(&frame);
        p.meta.tx_if = OUTSIDE_IF;
        self.workers[0].begin_loop(Instant::now());
        let step = if inbound {
            self.workers[0].inbound(&mut p, false)
        } else {
            self.workers[0].outbound(&mut p, OUTSIDE_IF)
        };
        self.finish(0, p, step);
        self.workers[0].end_loop(Instant::now());
        self.pump();
        self.done.pop().map(|p| p.frame()[HEADER_LEN..].to_vec())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.sp.take() {
            let _ = h.join();
        }
    }
}

use crate::wire::ethernet::HEADER_LEN;

fn src(l3: &[u8]) -> (Ipv4Addr, u16) {
    let f = nat::translate::parse(l3).unwrap();
    (f.src, f.sport)
}

fn dst(l3: &[u8]) -> (Ipv4Addr, u16) {
    let f = nat::translate::parse(l3).unwrap();
    (f.dst, f.dport)
}

/// Inside endpoints of the test's flows: TCP and UDP from a few hosts.
fn flows() -> Vec<(bool, (Ipv4Addr, u16))> {
    (0..12u8)
        .map(|i| {
            (
                i % 2 == 0,
                (Ipv4Addr::new(10, 0, 0, 1 + i % 3), 40000 + u16::from(i)),
            )
        })
        .collect()
}

fn first(tcp_flow: bool, inside: (Ipv4Addr, u16)) -> Vec<u8> {
    if tcp_flow {
        build::tcp(inside, REMOTE, tcp::SYN, 0)
    } else {
        build::udp(inside, REMOTE, 8, false)
    }
}

fn reply(tcp_flow: bool, outside: (Ipv4Addr, u16), fl: u8) -> Vec<u8> {
    if tcp_flow {
        build::tcp(REMOTE, outside, fl, 0)
    } else {
        build::udp(REMOTE, outside, 8, false)
    }
}

/// Makes the flows on `a` (SYN, SYN-ACK for TCP), returns their outside endpoints, in order.
fn open_flows(a: &mut Node) -> Vec<(Ipv4Addr, u16)> {
    let mut outs = Vec::new();
    for (t, inside) in flows() {
        let sent = a.out(&first(t, inside)).expect("translated on the active");
        let o = src(&sent);
        assert_eq!(o.0, POOL);
        let back = a.inb(&reply(t, o, tcp::SYN | tcp::ACK)).expect("reply in");
        assert_eq!(dst(&back), inside);
        outs.push(o);
    }
    outs
}

fn drain(feed: &SyncFeed) -> Vec<hasync::Record> {
    let mut recs = Vec::new();
    feed.drain(&mut recs);
    recs
}

/// Applies `recs` to `b` and loops it until all are applied (or refused).
fn apply(b: &mut Node, recs: &[hasync::Record]) {
    let before = b.rt.ha_status();
    for r in recs {
        b.rt.apply_synced(r);
    }
    let want = before.applied + before.refused + before.undecodable + recs.len() as u64;
    for _ in 0..200 {
        b.pump();
        let h = b.rt.ha_status();
        if h.applied + h.refused + h.undecodable >= want {
            return;
        }
    }
    panic!("records not applied: {:?}", b.rt.ha_status());
}

fn takeover_with(workers_b: u16) {
    let feed = SyncFeed::new(4096);
    let mut a = Node::new(2, feed.clone());
    let outs = open_flows(&mut a);
    let recs = drain(&feed);
    // One upsert per session, then one per TCP state change (the SYN-ACK); nothing else.
    let n = flows().len();
    let tcp_flows = flows().iter().filter(|f| f.0).count();
    assert_eq!(recs.len(), n + tcp_flows, "{recs:?}");
    assert!(recs.iter().all(|r| r.table == hasync::TableId::NAT_SESSION));
    assert_eq!(a.rt.ha_status().published, recs.len() as u64);
    // Established traffic publishes nothing.
    for ((t, inside), _) in flows().into_iter().zip(&outs) {
        let p = if t {
            build::tcp(inside, REMOTE, tcp::ACK, 10)
        } else {
            build::udp(inside, REMOTE, 10, false)
        };
        a.out(&p).expect("established");
    }
    assert!(drain(&feed).is_empty(), "the fast path published");

    let feed_b = SyncFeed::new(4096);
    let mut b = Node::new(workers_b, feed_b.clone());
    b.rt.set_active(false);
    b.pump();
    apply(&mut b, &recs);
    let h = b.rt.ha_status();
    assert_eq!(
        (h.applied, h.refused, h.undecodable),
        (recs.len() as u64, 0, 0)
    );
    assert!(drain(&feed_b).is_empty(), "a standby publishes nothing");

    // The standby translates the synced flows both ways with the active's mappings.
    for ((t, inside), &o) in flows().into_iter().zip(&outs) {
        let p = if t {
            build::tcp(inside, REMOTE, tcp::ACK, 10)
        } else {
            build::udp(inside, REMOTE, 10, false)
        };
        let sent = b.out(&p).expect("the standby translates a synced flow");
        assert_eq!(src(&sent), o, "same mapping");
        let back = b.inb(&reply(t, o, tcp::ACK)).expect("reply in");
        assert_eq!(dst(&back), inside);
    }
    // But creates nothing: both nodes share the pool.
    let fresh = build::tcp((Ipv4Addr::new(10, 0, 0, 9), 5555), REMOTE, tcp::SYN, 0);
    assert!(b.out(&fresh).is_none());
    assert!(b.drops.contains(&"nat-standby"), "{:?}", b.drops);
    assert_eq!(b.rt.ha_status().standby_drops, 1);
    assert!(b.drops.iter().all(|d| *d == "nat-standby"), "{:?}", b.drops);
    let misdelivered: u64 = b.rt.worker_stats().iter().map(|s| s.misdelivered).sum();
    assert_eq!(misdelivered, 0);

    // Takeover: the sessions are its own, new flows are made, and an export publishes them all.
    b.rt.set_active(true);
    b.rt.export_all();
    b.pump();
    let exported = drain(&feed_b);
    assert_eq!(exported.len(), n);
    assert_eq!(b.rt.ha_status().exported, n as u64);
    let sent = b.out(&fresh).expect("active: a new flow");
    assert_ne!(
        outs.iter().find(|&&o| o == src(&sent)),
        Some(&src(&sent)),
        "no collision"
    );
    assert_eq!(drain(&feed_b).len(), 1, "the new session is published");

    // A delete of the peer: refused while active (a restarted peer's resync sweeps every
    // session this node adopted from it), applied while standby.
    let (t, inside) = flows()[1];
    assert!(!t);
    let key = nat::sync::SessionKey {
        proto: netwire::ipv4::PROTO_UDP,
        inside_addr: inside.0,
        inside_port: inside.1,
        remote_addr: REMOTE.0,
        remote_port: REMOTE.1,
    };
    let delete = [hasync::Record::delete(
        hasync::TableId::NAT_SESSION,
        key.encode().to_vec(),
    )];
    let refused = b.rt.ha_status().refused;
    apply(&mut b, &delete);
    assert!(
        b.inb(&reply(false, outs[1], 0)).is_some(),
        "kept while active"
    );
    assert_eq!(b.rt.ha_status().refused, refused + 1);
    b.rt.set_active(false);
    apply(&mut b, &delete);
    assert!(b.inb(&reply(false, outs[1], 0)).is_none());
    b.rt.set_active(true);
    // And garbage is counted, not applied.
    apply(
        &mut b,
        &[hasync::Record::upsert(
            hasync::TableId::NAT_SESSION,
            vec![9; 14],
            vec![1; 8],
        )],
    );
    assert_eq!(b.rt.ha_status().undecodable, 1);
    let mut table = String::new();
    render(&mut table, &b.rt.status());
    assert!(table.contains("HA: role active  sync on"), "{table}");
}

#[test]
fn synced_sessions_translate_the_same_on_the_standby() {
    takeover_with(2);
}

#[test]
fn synced_sessions_are_placed_by_the_standbys_own_vid_table() {
    // Three workers cut the port range into other blocks than the active's two.
    takeover_with(3);
    takeover_with(1);
}

#[test]
fn without_ha_nothing_is_published_and_sessions_are_made() {
    let mut a = Node::new(2, SyncFeed::disabled());
    assert!(a.rt.is_active());
    open_flows(&mut a);
    assert_eq!(
        a.rt.ha_status(),
        NatHaStatus {
            active: true,
            ..Default::default()
        }
    );
}
