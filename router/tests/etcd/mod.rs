//! `control::etcd::EtcdClient` against real etcd members (Debian's etcd 3.4) that netlab starts
//! on the loopback of a lab namespace; the client runs on a thread inside that namespace.
//! Needs root (namespaces) and /usr/bin/etcd (scripts/setup-debian.sh), as CI has.

use netlab::etcd::EtcdCluster;
use netlab::{Lab, Ns};
use router::control::etcd::{
    Cas, CasOutcome, EtcdClient, EtcdError, EventKind, WatchEvent, WatchMessage, GRPC_NOT_FOUND,
};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const TIMEOUT: Duration = Duration::from_secs(1);

struct EtcdLab {
    lab: Lab,
    ns: Ns,
    cluster: EtcdCluster,
}

/// A lab with `n` etcd members on 127.0.0.1..n of one namespace, all healthy.
fn etcd_lab(tag: &str, n: u8) -> EtcdLab {
    if let Err(e) = netlab::etcd::require_etcd() {
        panic!("{e}");
    }
    let mut lab = Lab::new(tag).unwrap_or_else(|e| panic!("{e}"));
    let ns = lab.add_ns("etcd").unwrap();
    let at: Vec<_> = (1..=n)
        .map(|i| (ns.clone(), Ipv4Addr::new(127, 0, 0, i)))
        .collect();
    let cluster = EtcdCluster::start_healthy(&mut lab, &at, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e}"));
    EtcdLab { lab, ns, cluster }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn client(endpoints: Vec<String>) -> EtcdClient {
    EtcdClient::new(endpoints, TIMEOUT).unwrap()
}

/// Reads watch messages until `n` events have arrived (5 s at most); the Reconnecting
/// messages seen on the way are counted.
async fn events(watch: &mut router::control::etcd::Watch, n: usize) -> (Vec<WatchEvent>, usize) {
    let mut got = Vec::new();
    let mut reconnects = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while got.len() < n {
        match tokio::time::timeout_at(deadline, watch.next()).await {
            Ok(Some(WatchMessage::Events { events, .. })) => got.extend(events),
            Ok(Some(WatchMessage::Reconnecting { .. })) => reconnects += 1,
            Ok(other) => panic!("unexpected {other:?} after {got:?}"),
            Err(_) => panic!("only {} of {n} events within 5 s: {got:?}", got.len()),
        }
    }
    (got, reconnects)
}

fn summary(events: &[WatchEvent]) -> Vec<(EventKind, String, String, Option<String>)> {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    events
        .iter()
        .map(|e| {
            (
                e.kind,
                s(&e.kv.key),
                s(&e.kv.value),
                e.prev_kv.as_ref().map(|p| s(&p.value)),
            )
        })
        .collect()
}

#[test]
fn etcd_kv_put_range_prefix_delete_and_cas() {
    let l = etcd_lab("etckv", 1);
    let endpoints = l.cluster.endpoints();
    l.ns.within(|| {
        runtime().block_on(async {
            let c = client(endpoints);
            let r1 = c.put(b"/t/a", b"1", None).await.unwrap();
            let r2 = c.put(b"/t/b", b"2", None).await.unwrap();
            c.put(b"/u/c", b"3", None).await.unwrap();
            assert!(r2 > r1);

            let a = c.range(b"/t/a").await.unwrap();
            assert_eq!(a.kvs.len(), 1);
            let kv = &a.kvs[0];
            assert_eq!(
                (kv.key.as_slice(), kv.value.as_slice()),
                (&b"/t/a"[..], &b"1"[..])
            );
            assert_eq!(
                (kv.create_revision, kv.mod_revision, kv.version, kv.lease),
                (r1, r1, 1, 0)
            );
            assert!(a.revision >= r2);
            assert!(c.range(b"/t/missing").await.unwrap().kvs.is_empty());

            let keys = |r: router::control::etcd::RangeResult| {
                r.kvs.into_iter().map(|k| k.key).collect::<Vec<_>>()
            };
            assert_eq!(
                keys(c.range_prefix(b"/t/").await.unwrap()),
                vec![b"/t/a".to_vec(), b"/t/b".to_vec()]
            );
            assert_eq!(
                c.range_prefix(b"").await.unwrap().kvs.len(),
                3,
                "empty prefix: every key"
            );

            assert_eq!(c.delete(b"/t/a").await.unwrap().deleted, 1);
            assert_eq!(c.delete(b"/t/a").await.unwrap().deleted, 0);
            assert_eq!(
                keys(c.range_prefix(b"/t/").await.unwrap()),
                vec![b"/t/b".to_vec()]
            );

            // Create-if-absent, then a stale CAS gets the winner's value back.
            let create = Cas {
                key: b"/t/alloc",
                expect_mod_revision: 0,
                value: b"epoch1",
                lease: None,
                fence: None,
            };
            let CasOutcome::Succeeded { revision: e1 } = c.txn_cas(create).await.unwrap() else {
                panic!("create-if-absent of a new key must succeed");
            };
            let CasOutcome::Failed {
                current: Some(cur),
                fence_holder: None,
                ..
            } = c
                .txn_cas(Cas {
                    value: b"other",
                    ..create
                })
                .await
                .unwrap()
            else {
                panic!("create-if-absent of an existing key must fail");
            };
            assert_eq!(
                (cur.value.as_slice(), cur.mod_revision),
                (&b"epoch1"[..], e1)
            );
            let next = Cas {
                expect_mod_revision: e1,
                value: b"epoch2",
                ..create
            };
            let CasOutcome::Succeeded { revision: e2 } = c.txn_cas(next).await.unwrap() else {
                panic!("CAS on the current mod_revision must succeed");
            };
            let stale = Cas {
                expect_mod_revision: e1,
                value: b"epoch2-late",
                ..create
            };
            let CasOutcome::Failed {
                current: Some(cur), ..
            } = c.txn_cas(stale).await.unwrap()
            else {
                panic!("CAS on a stale mod_revision must fail");
            };
            assert_eq!(
                (cur.value.as_slice(), cur.mod_revision),
                (&b"epoch2"[..], e2)
            );

            // The fence: the member key must still hold our lease.
            let lease = c.lease_grant(30).await.unwrap();
            c.put(b"/t/members/1", b"me", Some(lease.id)).await.unwrap();
            let fenced = Cas {
                expect_mod_revision: e2,
                value: b"epoch3",
                fence: Some((b"/t/members/1", lease.id)),
                ..create
            };
            assert!(matches!(
                c.txn_cas(fenced).await.unwrap(),
                CasOutcome::Succeeded { .. }
            ));
            let other = c.lease_grant(30).await.unwrap();
            let cur = c.range(b"/t/alloc").await.unwrap().kvs[0].mod_revision;
            let wrong = Cas {
                expect_mod_revision: cur,
                fence: Some((b"/t/members/1", other.id)),
                ..fenced
            };
            let CasOutcome::Failed {
                current: Some(cur_kv),
                fence_holder: Some(holder),
                ..
            } = c.txn_cas(wrong).await.unwrap()
            else {
                panic!("a CAS fenced by a lease the member key does not hold must fail");
            };
            assert_eq!(
                (cur_kv.value.as_slice(), holder.lease),
                (&b"epoch3"[..], lease.id)
            );

            // etcd's refusals come back as Status with the gRPC code.
            match c.put(b"/t/x", b"y", Some(other.id + 12345)).await {
                Err(EtcdError::Status {
                    http: 404,
                    code: GRPC_NOT_FOUND,
                    message,
                    ..
                }) => {
                    assert!(message.contains("lease not found"), "{message}")
                }
                other => panic!("put with an unknown lease: {other:?}"),
            }
            assert!(c.range(b"/t/x").await.unwrap().kvs.is_empty());
            let s = c.stats();
            assert_eq!(
                (
                    s.status_errors,
                    s.unreachable,
                    s.protocol_errors,
                    s.failovers
                ),
                (1, 0, 0, 0)
            );
            assert_eq!(s.round_trips, s.requests);
            assert_eq!(
                s.connects, 1,
                "sequential requests share one keep-alive connection, also after an error status"
            );
        })
    })
    .unwrap();
}

#[test]
fn etcd_lease_keepalive_expiry_and_revoke() {
    let l = etcd_lab("etclse", 1);
    let endpoints = l.cluster.endpoints();
    l.ns.within(|| {
        runtime().block_on(async {
            let c = client(endpoints);
            // etcd raises a TTL below its minimum (1.5 election timeouts: 2 s by default).
            let short = c.lease_grant(1).await.unwrap();
            assert_eq!(short.ttl, 2);
            assert_eq!(c.lease_keepalive(short.id).await.unwrap(), Some(2));
            c.put(b"/l/member", b"x", Some(short.id)).await.unwrap();
            assert_eq!(c.range(b"/l/member").await.unwrap().kvs[0].lease, short.id);

            // Revoke deletes the lease's keys at once; a second revoke finds nothing.
            let long = c.lease_grant(60).await.unwrap();
            c.put(b"/l/other", b"y", Some(long.id)).await.unwrap();
            assert!(c.lease_revoke(long.id).await.unwrap());
            assert!(c.range(b"/l/other").await.unwrap().kvs.is_empty());
            assert!(!c.lease_revoke(long.id).await.unwrap());
            assert_eq!(c.lease_keepalive(long.id).await.unwrap(), None);

            // No more keepalives: the key goes with the lease, and keepalive says "gone".
            let since = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if c.range(b"/l/member").await.unwrap().kvs.is_empty() {
                    break;
                }
                assert!(
                    since.elapsed() < Duration::from_secs(5),
                    "the leased key outlived its 2 s lease"
                );
            }
            assert!(
                since.elapsed() > Duration::from_millis(1000),
                "gone after {:?}",
                since.elapsed()
            );
            assert_eq!(c.lease_keepalive(short.id).await.unwrap(), None);
        })
    })
    .unwrap();
}

/// A TCP relay the test can cut (connections closed, new ones refused) and restore.
struct Relay {
    listen: SocketAddr,
    to: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    async fn start(listen: SocketAddr, to: SocketAddr) -> Relay {
        let mut r = Relay {
            listen,
            to,
            task: None,
        };
        r.restore().await;
        r
    }

    async fn restore(&mut self) {
        let listener = TcpListener::bind(self.listen).await.unwrap();
        let to = self.to;
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                conns.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    /// Aborting the task drops the listener and the JoinSet, which aborts every relayed
    /// connection: both sockets close.
    async fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }
}

#[test]
fn etcd_watch_sees_puts_and_deletes_in_order_and_resumes_after_a_drop() {
    let l = etcd_lab("etcwat", 1);
    let endpoints = l.cluster.endpoints();
    l.ns.within(|| {
        runtime().block_on(async {
            let direct = client(endpoints);
            let relay_addr: SocketAddr = "127.0.0.9:2379".parse().unwrap();
            let mut relay = Relay::start(relay_addr, "127.0.0.1:2379".parse().unwrap()).await;
            let via_relay = client(vec![format!("http://{relay_addr}")]);

            direct.put(b"/w/old", b"0", None).await.unwrap();
            let start = direct.range_prefix(b"/w/").await.unwrap().revision;
            let mut watch = via_relay.watch_prefix(b"/w/", start + 1);
            direct.put(b"/w/a", b"1", None).await.unwrap();
            direct.put(b"/w/b", b"2", None).await.unwrap();
            direct.put(b"/elsewhere", b"x", None).await.unwrap();
            direct.put(b"/w/a", b"3", None).await.unwrap();
            direct.delete(b"/w/b").await.unwrap();
            let (got, reconnects) = events(&mut watch, 4).await;
            use EventKind::{Delete, Put};
            let s = |x: &str| x.to_string();
            assert_eq!(
                summary(&got),
                vec![
                    (Put, s("/w/a"), s("1"), None),
                    (Put, s("/w/b"), s("2"), None),
                    (Put, s("/w/a"), s("3"), Some(s("1"))),
                    (Delete, s("/w/b"), s(""), Some(s("2"))),
                ]
            );
            assert_eq!(reconnects, 0);
            let last = got[3].kv.mod_revision;

            // The watch's connection drops; what changes meanwhile arrives after it resumes,
            // once and in order.
            relay.cut().await;
            direct.put(b"/w/c", b"4", None).await.unwrap();
            direct.delete(b"/w/a").await.unwrap();
            match tokio::time::timeout(Duration::from_secs(2), watch.next()).await {
                Ok(Some(WatchMessage::Reconnecting { resume_from, .. })) => {
                    assert_eq!(resume_from, last + 1)
                }
                other => panic!("expected Reconnecting after the cut, got {other:?}"),
            }
            relay.restore().await;
            let (got, _) = events(&mut watch, 2).await;
            assert_eq!(
                summary(&got),
                vec![
                    (Put, s("/w/c"), s("4"), None),
                    (Delete, s("/w/a"), s(""), Some(s("3")))
                ]
            );
            let stats = via_relay.stats();
            assert!(
                stats.watch_reconnects >= 1 && stats.watch_events == 6,
                "{stats:?}"
            );

            // Compacted past the resume point: reported, and the watch ends.
            let now = direct.put(b"/w/d", b"5", None).await.unwrap();
            let compact = serde_json::json!({ "revision": now.to_string(), "physical": true });
            compact_via_http(compact).await;
            let mut old = direct.watch_prefix(b"/w/", start + 1);
            match tokio::time::timeout(Duration::from_secs(2), old.next()).await {
                Ok(Some(WatchMessage::Compacted { compact_revision })) => {
                    assert_eq!(compact_revision, now)
                }
                other => panic!("expected Compacted, got {other:?}"),
            }
            assert!(old.next().await.is_none());
        })
    })
    .unwrap();
}

/// Compacts the store with a hand-made request (the client has no compaction call: the router
/// never compacts; etcd's own auto-compaction does).
async fn compact_via_http(body: serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect("127.0.0.1:2379").await.unwrap();
    let body = body.to_string();
    let req = format!(
        "POST /v3/kv/compaction HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
}

#[test]
fn etcd_cluster_survives_a_killed_leader_and_reports_unreachable_in_time() {
    let mut l = etcd_lab("etccl", 3);
    let ns = l.ns.clone();
    ns.within(|| {
        runtime().block_on(async {
            // The leader first, so that killing it is what the client must get past.
            let leader = l.cluster.leader().expect("a healthy cluster has a leader");
            let mut endpoints = l.cluster.endpoints();
            endpoints.rotate_left(leader);
            let c = client(endpoints);
            let before = c.put(b"/k/x", b"0", None).await.unwrap();
            let mut watch = c.watch_prefix(b"/k/", before + 1);

            l.cluster.kill(&mut l.lab, leader).unwrap();
            let killed = Instant::now();
            let mut attempts = 0;
            loop {
                attempts += 1;
                match c.put(b"/k/x", b"1", None).await {
                    Ok(_) => break,
                    Err(e) => assert!(
                        killed.elapsed() < Duration::from_secs(3),
                        "no write within 3 s of killing the leader (attempt {attempts}): {e}"
                    ),
                }
            }
            let took = killed.elapsed();
            eprintln!(
                "write after killing the leader: {took:?}, {attempts} attempt(s), {:?}",
                c.stats()
            );
            // Typically 1.0 s: the first try waits on a follower while the members elect a new
            // leader (500 ms election timeout) and runs into the 1 s timeout; the retry goes
            // through at once. The loop above allows 3 s for a loaded CI machine.
            assert!(c.stats().failovers >= 1);
            let (got, _) = events(&mut watch, 1).await;
            assert_eq!(
                summary(&got)[0].2,
                "1",
                "the watch follows onto a living member"
            );
            drop(watch);

            // Two of three gone: the last member has no quorum and would answer after 6 s.
            let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
            l.cluster.kill(&mut l.lab, others[0]).unwrap();
            let t = Instant::now();
            let e = c.put(b"/k/x", b"2", None).await.unwrap_err();
            assert!(e.is_unreachable(), "{e}");
            assert!(
                t.elapsed() < TIMEOUT + Duration::from_millis(300),
                "{:?}: {e}",
                t.elapsed()
            );

            // All gone: refused everywhere, at once.
            l.cluster.kill(&mut l.lab, others[1]).unwrap();
            let t = Instant::now();
            let e = c.range(b"/k/x").await.unwrap_err();
            assert!(e.is_unreachable(), "{e}");
            assert!(t.elapsed() < TIMEOUT, "{:?}", t.elapsed());
            eprintln!("all members down: {e} after {:?}", t.elapsed());
        })
    })
    .unwrap();
}
