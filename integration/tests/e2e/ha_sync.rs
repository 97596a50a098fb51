//! End to end, issue 15 (HA state sync): two swrouter nodes share virtual gateways with VRRP
//! (the pair of `ha_vrrp`) and run `[ha.sync]` over a third, direct link that the kernel keeps.
//!
//! - The standby holds the active's state: the neighbour bindings the active learnt reach the
//!   standby (same per-table digests on both sides), the node record arrives, roles follow VRRP.
//! - Messages that are not the peer's are refused and counted: a captured sync datagram sent
//!   again (replayed), the same with a flipped byte (forged: the HMAC fails), a datagram from
//!   another address (wrong source); the channel stays in sync.
#![allow(clippy::unwrap_used, missing_docs)]

use super::ha_vrrp::{
    ha, pair_router_ns, pair_segments, pair_vrrp, start, wait_state, write_conf, Node,
    PAIR_INTERVAL,
};
use integration::require_root;
use integration::wccplab::wait_for;
use netlab::{Lab, Ns};
use std::path::PathBuf;
use std::time::Duration;

/// The sync port of both nodes.
const SYNC_PORT: u16 = 7420;

/// Writes a 0600 key file.
pub(crate) fn key_file(lab: &Lab, name: &str, key: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = lab.dir().join(name);
    std::fs::write(&p, format!("{key}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// `[ha.sync]` for node `me` (1 or 2) of the pair.
pub(crate) fn sync_section(me: u32, key: &std::path::Path) -> String {
    let peer = 3 - me;
    format!(
        "\n[ha.sync]\nlocal = \"10.9.0.{me}:{SYNC_PORT}\"\npeer = \"10.9.0.{peer}:{SYNC_PORT}\"\nkey-file = \"{}\"\nnode-id = {me}\npeer-node-id = {peer}\n",
        key.display()
    )
}

/// The sync pair: client — [lan] — r1, r2 — [wan] — server, r1.eth2 — r2.eth2 for sync.
pub(crate) struct SyncLab {
    pub(crate) lab: Lab,
    pub(crate) cli: Ns,
    pub(crate) nodes: Vec<Node>,
}

/// Builds the sync pair; `extra(node)` is appended to node 1's or 2's config. r1 (priority
/// 200) is started first and is master; r2 is backup.
pub(crate) fn sync_lab(tag: &str, extra: impl Fn(u32) -> String) -> SyncLab {
    sync_lab_at(tag, PAIR_INTERVAL, extra)
}

/// [`sync_lab`] with VRRP advertisements every `interval`.
pub(crate) fn sync_lab_at(tag: &str, interval: Duration, extra: impl Fn(u32) -> String) -> SyncLab {
    sync_lab_full(tag, interval, &[KEY, KEY], extra, |_, _| {})
}

/// [`sync_lab`] with `prepare(lab, server namespace)` run before the nodes start.
pub(crate) fn sync_lab_prepared(
    tag: &str,
    extra: impl Fn(u32) -> String,
    prepare: impl FnOnce(&mut Lab, &Ns),
) -> SyncLab {
    sync_lab_full(tag, PAIR_INTERVAL, &[KEY, KEY], extra, prepare)
}

/// The shared key of the pair.
const KEY: &str = "5f0e4c1d9a8b7c6d5e4f30211a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d";

/// [`sync_lab_at`] with each node's own key file contents.
fn sync_lab_full(
    tag: &str,
    interval: Duration,
    keys: &[&str; 2],
    extra: impl Fn(u32) -> String,
    prepare: impl FnOnce(&mut Lab, &Ns),
) -> SyncLab {
    require_root();
    let mut lab = Lab::new(tag).unwrap();
    let (br, cli, srv) = pair_segments(&mut lab);
    prepare(&mut lab, &srv);
    let key_files = [
        key_file(&lab, "r1.key", keys[0]),
        key_file(&lab, "r2.key", keys[1]),
    ];
    let r1 = pair_router_ns(&mut lab, &br, "r1");
    let r2 = pair_router_ns(&mut lab, &br, "r2");
    lab.link(&r1, "eth2", &r2, "eth2").unwrap();
    r1.add_addr("eth2", "10.9.0.1/24").unwrap();
    r2.add_addr("eth2", "10.9.0.2/24").unwrap();
    let mut nodes = Vec::new();
    for (me, ns, prio) in [(1u32, r1, 200u8), (2, r2, 100)] {
        let name = format!("r{me}");
        let lan = format!("10.0.1.{}/24", me + 1);
        let wan = format!("10.0.2.{}/24", me + 1);
        let mut tail = pair_vrrp(prio, interval.as_millis() as u32);
        tail.push_str(&sync_section(me, &key_files[me as usize - 1]));
        tail.push_str(&extra(me));
        let (conf, socket) = write_conf(&lab, &name, &[("eth0", &lan), ("eth1", &wan)], &tail);
        nodes.push(Node {
            ns,
            conf,
            socket,
            proc: None,
        });
    }
    let mut l = SyncLab { lab, cli, nodes };
    start(&mut l.lab, &mut l.nodes[0]);
    assert!(
        wait_state(&l.nodes[0], &[51, 52], "master", Duration::from_secs(3)).is_some(),
        "r1 never became master: {:?}",
        ha(&l.nodes[0])
    );
    start(&mut l.lab, &mut l.nodes[1]);
    assert!(
        wait_state(&l.nodes[1], &[51, 52], "backup", Duration::from_secs(3)).is_some(),
        "r2 never became backup: {:?}",
        ha(&l.nodes[1])
    );
    l
}

/// The sync section of a node's HA status.
pub(crate) fn sync_of(n: &Node) -> serde_json::Value {
    ha(n).map(|h| h["sync"].clone()).unwrap_or_default()
}

/// Waits until `standby` holds exactly what `active` publishes in `table` (same count and
/// digest, at least `min` entries) and is in sync; returns both sync statuses then.
pub(crate) fn wait_converged(
    active: &Node,
    standby: &Node,
    table: &str,
    min: u64,
    timeout: Duration,
) -> Option<(serde_json::Value, serde_json::Value)> {
    wait_for(timeout, Duration::from_millis(50), || {
        let a = sync_of(active);
        let s = sync_of(standby);
        let ours = &a["tables"][table];
        let theirs = &s["tables"][table];
        let same = ours["published"].as_u64()? >= min
            && ours["published"] == theirs["peer"]
            && ours["published_digest"] == theirs["peer_digest"];
        (same && s["in_sync"] == true && s["peer_alive"] == true).then_some((a, s))
    })
}

/// The UDP payloads of a pcap file's IPv4 packets.
fn udp_payloads(pcap: &[u8]) -> Vec<Vec<u8>> {
    integration::oracle::read_pcap(pcap)
        .unwrap()
        .into_iter()
        .filter(|c| c.ip.len() >= 28 && c.ip[9] == 17)
        .map(|c| c.ip[usize::from(c.ip[0] & 0x0f) * 4 + 8..].to_vec())
        .collect()
}

/// Sends `payload` from `from` (any port) to r2's sync port, inside `ns`.
fn send_udp(ns: &Ns, from: &str, payload: &[u8]) {
    let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{from}',0))\ns.sendto(bytes.fromhex('{hex}'),('10.9.0.2',{SYNC_PORT}))\n"
    );
    ns.run_ok("python3", &["-c", &script]).unwrap();
}

#[test]
fn the_standby_holds_the_active_state_and_refuses_what_is_not_the_peer() {
    let mut l = sync_lab("hsync", |_| String::new());
    // Traffic through the virtual gateways: r1 learns the client and the server.
    l.cli
        .run_ok("ping", &["-c", "3", "-i", "0.2", "-W", "1", "10.0.2.10"])
        .unwrap();
    let (a, s) = wait_converged(
        &l.nodes[0],
        &l.nodes[1],
        "neighbour",
        2,
        Duration::from_secs(5),
    )
    .unwrap_or_else(|| {
        panic!(
            "r2 never held r1's neighbour table: r1 {} r2 {}",
            sync_of(&l.nodes[0]),
            sync_of(&l.nodes[1])
        )
    });
    eprintln!("r1 sync: {a}\nr2 sync: {s}");
    let h1 = ha(&l.nodes[0]).unwrap();
    let h2 = ha(&l.nodes[1]).unwrap();
    assert_eq!(h1["role"], "active", "{h1}");
    assert_eq!(h2["role"], "standby", "{h2}");
    assert!(
        s["peer_node"]
            .as_str()
            .is_some_and(|n| n.starts_with("version=")),
        "r2 has r1's node record: {s}"
    );
    assert!(
        s["tables"]["neighbour"]["applied"].as_u64().unwrap() >= 2,
        "{s}"
    );
    // The standby learnt the bindings from the sync, not by ARP: it never forwarded.
    let st2 = l.nodes[1].ns.run_ok(
        &integration::binary("swrouter").to_string_lossy(),
        &[
            "status",
            "--json",
            "-s",
            &l.nodes[1].socket.to_string_lossy(),
        ],
    );
    let st2: serde_json::Value = serde_json::from_str(&st2.unwrap()).unwrap();
    let neigh = st2["arp"].to_string();
    assert!(
        neigh.contains("10.0.1.10") && neigh.contains("10.0.2.10"),
        "r2's neighbour table has the client and the server: {neigh}"
    );

    // A real sync datagram of r1, captured on r2's side.
    let pcap = l.lab.dir().join("sync.pcap");
    l.nodes[1]
        .ns
        .run_ok(
            "timeout",
            &[
                "5",
                "tcpdump",
                "-i",
                "eth2",
                "-c",
                "3",
                "-w",
                &pcap.to_string_lossy(),
                "udp and src host 10.9.0.1",
            ],
        )
        .unwrap();
    let payloads = udp_payloads(&std::fs::read(&pcap).unwrap());
    assert!(!payloads.is_empty(), "no sync datagram captured");
    let before = sync_of(&l.nodes[1])["rejected"].clone();
    let msg = &payloads[0];
    send_udp(&l.nodes[0].ns, "10.9.0.1", msg);
    let mut forged = msg.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x5a;
    send_udp(&l.nodes[0].ns, "10.9.0.1", &forged);
    l.nodes[0].ns.add_addr("eth2", "10.9.0.3/24").unwrap();
    send_udp(&l.nodes[0].ns, "10.9.0.3", msg);
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
    let after = wait_for(Duration::from_secs(3), Duration::from_millis(50), || {
        let r = sync_of(&l.nodes[1])["rejected"].clone();
        (n(&r, "forged") > n(&before, "forged")
            && n(&r, "replayed") + n(&r, "too-old")
                > n(&before, "replayed") + n(&before, "too-old")
            && n(&r, "wrong-source") > n(&before, "wrong-source"))
        .then_some(r)
    })
    .unwrap_or_else(|| {
        panic!(
            "rejects not counted: before {before} after {}",
            sync_of(&l.nodes[1])
        )
    });
    eprintln!("r2 rejected: {after}");
    // Nothing of that disturbed the channel.
    std::thread::sleep(Duration::from_millis(500));
    let s = sync_of(&l.nodes[1]);
    assert!(s["in_sync"] == true && s["peer_alive"] == true, "{s}");
    let text = l.nodes[1]
        .ns
        .run_ok(
            &integration::binary("swrouter").to_string_lossy(),
            &["ha", "status", "-s", &l.nodes[1].socket.to_string_lossy()],
        )
        .unwrap();
    assert!(
        text.contains("role: standby") && text.contains("in sync") && text.contains("forged=1"),
        "{text}"
    );
    for node in &mut l.nodes {
        if let Some(p) = node.proc.take() {
            l.lab.stop(&p, Duration::from_secs(3)).unwrap();
        }
    }
}

/// NAT on both nodes: the client's network leaves through eth1 as 192.0.2.1 (a pool the
/// server side routes to the virtual gateway).
fn nat_section(_: u32) -> String {
    "\n[nat]\n\n[[nat.rule]]\ninside = [\"10.0.1.0/24\"]\noutside = \"eth1\"\npool = [\"192.0.2.1\"]\n"
        .to_string()
}

/// 5 % random loss of the sync link's datagrams, both ways (each node drops 5 % of what it
/// receives on the sync port).
fn lossy_sync_link(l: &SyncLab) {
    for n in &l.nodes {
        let port = SYNC_PORT.to_string();
        n.ns.run_ok("nft", &["add", "table", "inet", "hsloss"])
            .unwrap();
        n.ns.run_ok(
            "nft",
            &["add chain inet hsloss input { type filter hook input priority 0; }"],
        )
        .unwrap();
        n.ns.run_ok(
            "nft",
            &[
                "add", "rule", "inet", "hsloss", "input", "udp", "dport", &port, "numgen",
                "random", "mod", "100", "<", "5", "counter", "drop",
            ],
        )
        .unwrap();
    }
}

#[test]
fn ten_thousand_sessions_converge_under_five_percent_loss() {
    // 100 ms adverts: this test is about the sync channel; on a loaded machine 20 ms adverts
    // of an active busy with 10,000 set-ups came late enough for the standby to take over.
    let mut l = sync_lab_at("hsloss", Duration::from_millis(100), nat_section);
    lossy_sync_link(&l);
    // 10,000 UDP flows from distinct source ports: 10,000 NAT sessions on the active.
    // Twice: a datagram lost before its session existed (a full queue on a loaded machine)
    // gets its session on the second pass; the first pass's sessions are only refreshed.
    let script = "import socket,time\nfor n in range(2):\n    for p in range(20000, 30000):\n        s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n        s.bind(('10.0.1.10',p))\n        s.sendto(b'x',('10.0.2.10',9))\n        s.close()\n    time.sleep(0.5)\n";
    l.cli.run_ok("python3", &["-c", script]).unwrap();
    let converged = wait_converged(
        &l.nodes[0],
        &l.nodes[1],
        "nat-session",
        10_000,
        Duration::from_secs(30),
    );
    let (a, s) = converged.unwrap_or_else(|| {
        panic!(
            "the standby never held the active's 10,000 sessions: r1 {} r2 {}",
            sync_of(&l.nodes[0]),
            sync_of(&l.nodes[1])
        )
    });
    eprintln!(
        "r1: {} sessions published, resends {}, nacks received {}; r2: {} held, nacks sent {}",
        a["tables"]["nat-session"]["published"],
        a["resends"],
        a["nacks_received"],
        s["tables"]["nat-session"]["peer"],
        s["nacks_sent"]
    );
    assert_eq!(
        a["tables"]["nat-session"]["published"].as_u64(),
        Some(10_000),
        "{a}"
    );
    // The loss was real and repaired: something was NACKed and resent.
    assert!(
        a["resends"].as_u64().unwrap() > 0 && s["nacks_sent"].as_u64().unwrap() > 0,
        "no loss repaired? r1 {a} r2 {s}"
    );
    // The standby applied them to its own NAT (not only held them).
    assert!(
        s["tables"]["nat-session"]["applied"].as_u64().unwrap() >= 10_000,
        "{s}"
    );
    for node in &mut l.nodes {
        if let Some(p) = node.proc.take() {
            l.lab.stop(&p, Duration::from_secs(3)).unwrap();
        }
    }
}

/// A 1,000 packets/s UDP stream from the client to the server through the virtual gateways
/// for `secs` seconds while `during` runs (1 s in); returns (sent, received).
fn stream_through(l: &mut SyncLab, secs: u32, during: impl FnOnce(&mut SyncLab)) -> (u64, u64) {
    let srv = l
        .lab
        .namespaces()
        .iter()
        .find(|n| n.name.ends_with("srv"))
        .unwrap()
        .clone();
    let total = secs * 1000;
    let rx = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('10.0.2.10',5001))\ns.settimeout(0.5)\nseen=set()\nend=time.time()+{}\nwhile time.time()<end:\n    try:\n        d,_=s.recvfrom(64)\n        seen.add(int(d))\n    except socket.timeout:\n        pass\nprint('received', len(seen), flush=True)\nprint('missing', sorted(set(range(max(seen)+1))-seen)[:20] if seen else [], flush=True)\n",
        secs + 3
    );
    let receiver = l.lab.spawn(&srv, "python3", &["-c", &rx]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let tx = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nt0=time.time()\nfor i in range({total}):\n    d=t0+i/1000.0-time.time()\n    if d>0: time.sleep(d)\n    s.sendto(str(i).encode(),('10.0.2.10',5001))\nprint('sent', {total}, flush=True)\n"
    );
    let cli = l.cli.clone();
    let sender = l.lab.spawn(&cli, "python3", &["-c", &tx]).unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    during(l);
    for h in [&sender, &receiver] {
        let done = wait_for(
            Duration::from_secs(u64::from(secs) + 8),
            Duration::from_millis(50),
            || l.lab.try_wait(h).unwrap(),
        );
        assert!(done.is_some(), "stream did not finish: {}", l.lab.logs(h));
    }
    let count = |log: &str, word: &str| {
        log.lines()
            .find_map(|x| x.strip_prefix(word))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no `{word}` in {log}"))
    };
    if let Some(m) = l
        .lab
        .logs(&receiver)
        .lines()
        .find(|x| x.starts_with("missing"))
    {
        eprintln!("stream: {m}");
    }
    (
        count(&l.lab.logs(&sender), "sent "),
        count(&l.lab.logs(&receiver), "received "),
    )
}

/// Advertisement interval of the switchover-loss tests: Master_Down_Interval 36 ms at
/// priority 100.
const FAST_INTERVAL: Duration = Duration::from_millis(10);

#[test]
fn a_killed_active_loses_under_50_ms_of_a_1000_pps_stream() {
    let mut l = sync_lab_at("hskill", FAST_INTERVAL, |_| String::new());
    let (sent, got) = stream_through(&mut l, 3, |l| {
        let r1 = l.nodes[0].proc.take().unwrap();
        l.lab.kill(&r1).unwrap();
    });
    let lost = sent - got;
    eprintln!("kill -9 of the active: {lost} of {sent} packets lost (1 packet = 1 ms)");
    assert!(
        lost <= 50,
        "{lost} packets lost: more than 50 ms of the stream"
    );
    let h2 = ha(&l.nodes[1]).unwrap();
    assert_eq!(h2["role"], "active", "{h2}");
    assert!(
        h2["sync"]["last_switchover"]["cause"]
            .as_str()
            .is_some_and(|c| c.contains("master-down")),
        "{h2}"
    );
    if let Some(p) = l.nodes[1].proc.take() {
        l.lab.stop(&p, Duration::from_secs(3)).unwrap();
    }
}

#[test]
fn a_planned_switchover_loses_nothing() {
    // 20 ms adverts: the loss does not depend on the interval (make before break), and a
    // loaded machine delays 10 ms adverts past a 36 ms Master_Down_Interval now and then.
    let mut l = sync_lab("hsplan", |_| String::new());
    let (sent, got) = stream_through(&mut l, 3, |l| {
        let out = l.nodes[0]
            .ns
            .run_ok(
                &integration::binary("swrouter").to_string_lossy(),
                &[
                    "ha",
                    "switchover",
                    "-s",
                    &l.nodes[0].socket.to_string_lossy(),
                ],
            )
            .unwrap();
        eprintln!("switchover: {out}");
    });
    let lost = sent - got;
    eprintln!("planned switchover: {lost} of {sent} packets lost");
    if lost > 0 {
        eprintln!("{}", l.lab.logs(l.nodes[1].proc.as_ref().unwrap()));
    }
    let h2 = ha(&l.nodes[1]).unwrap();
    assert_eq!(h2["role"], "active", "{h2}");
    assert_eq!(lost, 0, "a planned switchover lost {lost} packets");
    for node in &mut l.nodes {
        if let Some(p) = node.proc.take() {
            l.lab.stop(&p, Duration::from_secs(3)).unwrap();
        }
    }
}

/// A steering pool of one member, the server, checked every 200 ms on port 80 and restored
/// only by the operator.
pub(crate) fn steering_section(_: u32) -> String {
    "\n[[steering.device]]\nname = \"web1\"\nmode = \"nat\"\ninterfaces = [\"eth1\"]\naddress = \"10.0.2.10\"\n\n\
     [[steering.pool]]\nname = \"web\"\nmembers = [\"web1\"]\nrestore = \"manual\"\nprobe-port = 80\n\
     probe-interval-ms = 200\nprobe-timeout-ms = 150\nrise = 2\nfall = 2\n\n\
     [[steering.service]]\nname = \"web\"\naddress = \"10.0.9.80\"\nport = 80\ningress = [\"eth0\"]\n\
     chain = [{ pool = \"web\" }]\n"
        .to_string()
}

/// A steering device's health in a node's status.
pub(crate) fn steering_device(n: &Node, name: &str) -> serde_json::Value {
    integration::wccplab::router_status(&n.socket)
        .and_then(|s| {
            s["steering"]["devices"]
                .as_array()?
                .iter()
                .find(|d| d["name"] == name)
                .cloned()
        })
        .unwrap_or_default()
}

/// Issue 15 item 2: the server answers r2's health checks but drops r1's, so only the active
/// r1 finds the member dead. The standby takes r1's view (it checks nothing itself), and after
/// a planned switchover the member is out of service on r2 at once: r2 neither sends to it
/// nor starts its checks from scratch (its own good probes make it "recovered", waiting for
/// the operator, as on r1).
#[test]
fn a_member_the_active_found_dead_is_dead_on_the_new_active_at_once() {
    let mut l = sync_lab_prepared("hsteer", steering_section, |lab, srv| {
        lab.spawn(
            srv,
            "python3",
            &["-m", "http.server", "80", "--bind", "10.0.2.10"],
        )
        .unwrap();
        srv.run_ok(
            "nft",
            &[
                "add table ip hsteer; add chain ip hsteer in { type filter hook input priority 0; }; add rule ip hsteer in ip saddr 10.0.2.2 tcp dport 80 drop",
            ],
        )
        .unwrap();
    });
    let down = |n: &Node| steering_device(n, "web1")["health"] == "out-of-service";
    assert!(
        wait_for(Duration::from_secs(5), Duration::from_millis(50), || down(
            &l.nodes[0]
        )
        .then_some(()))
        .is_some(),
        "r1 never took web1 down: {}",
        steering_device(&l.nodes[0], "web1")
    );
    // r2 (standby) holds r1's view, though the server answers r2.
    assert!(
        wait_for(Duration::from_secs(3), Duration::from_millis(50), || down(
            &l.nodes[1]
        )
        .then_some(()))
        .is_some(),
        "r2 never took r1's view of web1: {} {}",
        steering_device(&l.nodes[1], "web1"),
        integration::wccplab::router_status(&l.nodes[1].socket).unwrap_or_default()["steering"]
    );
    l.nodes[0]
        .ns
        .run_ok(
            &integration::binary("swrouter").to_string_lossy(),
            &[
                "ha",
                "switchover",
                "-s",
                &l.nodes[0].socket.to_string_lossy(),
            ],
        )
        .unwrap();
    assert!(
        wait_state(&l.nodes[1], &[51, 52], "master", Duration::from_secs(2)).is_some(),
        "r2 did not take over: {:?}",
        ha(&l.nodes[1])
    );
    // Taken over: still out at once, and it stays out after r2's own checks pass (manual
    // restore: they make it "recovered", not in service).
    for _ in 0..10 {
        let d = steering_device(&l.nodes[1], "web1");
        assert_eq!(d["health"], "out-of-service", "{d}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // r2's own checks pass (the server answers it): without r1's view it would have sent
    // to web1 all along.
    let d = wait_for(Duration::from_secs(3), Duration::from_millis(50), || {
        let d = steering_device(&l.nodes[1], "web1");
        (d["probe_ok"].as_u64()? >= 2).then_some(d)
    })
    .unwrap_or_else(|| {
        panic!(
            "r2's probes of web1 never passed: {}",
            steering_device(&l.nodes[1], "web1")
        )
    });
    assert_eq!(d["health"], "out-of-service", "{d}");
    let s2 = integration::wccplab::router_status(&l.nodes[1].socket).unwrap();
    let h = &s2["steering"]["ha_sync"];
    assert_eq!(h["role"], "active", "{h}");
    assert!(h["applied"].as_u64().unwrap_or(0) >= 1, "{h}");
    assert!(h["exports"].as_u64().unwrap_or(0) >= 1, "{h}");
    // r1 (standby now) holds r2's view in turn.
    assert!(
        down(&l.nodes[0]),
        "{}",
        steering_device(&l.nodes[0], "web1")
    );
    for node in &mut l.nodes {
        if let Some(p) = node.proc.take() {
            l.lab.stop(&p, Duration::from_secs(3)).unwrap();
        }
    }
}

#[test]
fn a_node_with_the_wrong_key_never_joins_and_a_cut_sync_link_leaves_one_master() {
    let wrong = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let mut l = sync_lab_full(
        "hskey",
        PAIR_INTERVAL,
        &[KEY, wrong],
        |_| String::new(),
        |_, _| {},
    );
    // Every message of r2 fails r1's HMAC check and the other way round: neither hears a peer.
    let n = |v: &serde_json::Value| v["rejected"]["forged"].as_u64().unwrap_or(0);
    let counted = wait_for(Duration::from_secs(3), Duration::from_millis(50), || {
        let (a, b) = (sync_of(&l.nodes[0]), sync_of(&l.nodes[1]));
        (n(&a) > 0 && n(&b) > 0).then_some((a, b))
    });
    let (a, b) = counted.unwrap_or_else(|| {
        panic!(
            "forged messages not counted: r1 {} r2 {}",
            sync_of(&l.nodes[0]),
            sync_of(&l.nodes[1])
        )
    });
    for s in [&a, &b] {
        assert_eq!(s["peer_alive"], false, "{s}");
        assert_eq!(s["messages_received"], 0, "{s}");
        assert!(s["peer_epoch"].is_null(), "{s}");
    }
    // VRRP does not depend on the sync link: with it cut, one master stays.
    for n in &l.nodes {
        n.ns.ip(&["link", "set", "eth2", "down"]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let (h1, h2) = (ha(&l.nodes[0]).unwrap(), ha(&l.nodes[1]).unwrap());
    assert_eq!(
        (h1["role"].as_str(), h2["role"].as_str()),
        (Some("active"), Some("standby")),
        "{h1}\n{h2}"
    );
    for node in &mut l.nodes {
        if let Some(p) = node.proc.take() {
            l.lab.stop(&p, Duration::from_secs(3)).unwrap();
        }
    }
}

#[test]
fn a_cut_sync_link_is_noticed_and_a_restored_one_resyncs() {
    let mut l = sync_lab("hscut", |_| String::new());
    l.cli
        .run_ok("ping", &["-c", "2", "-i", "0.2", "-W", "1", "10.0.2.10"])
        .unwrap();
    assert!(
        wait_converged(
            &l.nodes[0],
            &l.nodes[1],
            "neighbour",
            2,
            Duration::from_secs(5)
        )
        .is_some(),
        "never converged: {}",
        sync_of(&l.nodes[1])
    );
    // Cut: both still see each other's VRRP, so there is one master; the channel reports the
    // peer lost after its 3 s timeout.
    l.nodes[1].ns.ip(&["link", "set", "eth2", "down"]).unwrap();
    let lost = wait_for(Duration::from_secs(6), Duration::from_millis(100), || {
        (sync_of(&l.nodes[0])["peer_alive"] == false).then_some(())
    });
    assert!(lost.is_some(), "r1 never noticed: {}", sync_of(&l.nodes[0]));
    let (h1, h2) = (ha(&l.nodes[0]).unwrap(), ha(&l.nodes[1]).unwrap());
    assert_eq!(
        (h1["role"].as_str(), h2["role"].as_str()),
        (Some("active"), Some("standby")),
        "one master while the sync link is cut: {h1}\n{h2}"
    );
    // While cut, the active learns more (a new neighbour); restored, the standby catches up.
    l.cli.add_addr("eth0", "10.0.1.11/24").unwrap();
    l.cli
        .run_ok(
            "ping",
            &[
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "1",
                "-I",
                "10.0.1.11",
                "10.0.2.10",
            ],
        )
        .unwrap_or_default();
    l.nodes[1].ns.ip(&["link", "set", "eth2", "up"]).unwrap();
    let back = wait_converged(
        &l.nodes[0],
        &l.nodes[1],
        "neighbour",
        3,
        Duration::from_secs(8),
    );
    assert!(
        back.is_some(),
        "no catch-up after the link came back: r1 {} r2 {}",
        sync_of(&l.nodes[0]),
        sync_of(&l.nodes[1])
    );
    for node in &mut l.nodes {
        if let Some(p) = node.proc.take() {
            l.lab.stop(&p, Duration::from_secs(3)).unwrap();
        }
    }
}

/// CPU seconds (user + system) per thread name of process `pid`.
fn thread_cpu(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let tick = 100.0; // USER_HZ on Linux
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // comm is in parentheses and may hold spaces; the fields after it are fixed.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let cpu =
            (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / tick;
        *out.entry(comm).or_default() += cpu;
    }
    out
}

/// The sync figures of issue 15: how fast a burst of new NAT sessions reaches the standby,
/// the lag on the way, and what the sync costs in CPU on both nodes. Not a pass/fail test:
/// `cargo test --release -p integration --test e2e ha_sync::bench -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: run by hand with --ignored --nocapture"]
fn bench_sync_of_a_burst_of_100k_sessions() {
    let pools: Vec<String> = (1..=32).map(|i| format!("\"192.0.2.{i}\"")).collect();
    let nat = format!(
        "\n[nat]\nmax-sessions = 262144\n\n[[nat.rule]]\ninside = [\"10.0.1.0/24\"]\noutside = \"eth1\"\npool = [{}]\n",
        pools.join(", ")
    );
    let mut l = sync_lab("hsbench", |_| nat.clone());
    for i in 0..16 {
        l.cli
            .add_addr("eth0", &format!("10.0.1.{}/24", 100 + i))
            .unwrap();
    }
    let pids: Vec<u32> = l
        .nodes
        .iter()
        .map(|n| n.proc.as_ref().unwrap().pid)
        .collect();
    let cpu0: Vec<_> = pids.iter().map(|p| thread_cpu(*p)).collect();
    // 16 hosts × 6,250 source ports: 100,000 UDP flows, as fast as python sends them.
    let script = "import socket\nfor h in range(16):\n    for p in range(20000, 26250):\n        s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n        s.bind(('10.0.1.%d' % (100+h),p))\n        s.sendto(b'x',('10.0.2.10',9))\n        s.close()\n";
    let t0 = std::time::Instant::now();
    let sender = l
        .lab
        .spawn(&l.cli.clone(), "python3", &["-c", script])
        .unwrap();
    let mut max_lag = (0u64, 0f64);
    let mut sent_at = None;
    let mut converged_at = None;
    let mut published = 0;
    while t0.elapsed() < Duration::from_secs(60) {
        let a = sync_of(&l.nodes[0]);
        let s = sync_of(&l.nodes[1]);
        max_lag.0 = max_lag.0.max(a["lag_messages"].as_u64().unwrap_or(0));
        max_lag.1 = max_lag.1.max(a["lag_secs"].as_f64().unwrap_or(0.0));
        if sent_at.is_none() && l.lab.try_wait(&sender).unwrap().is_some() {
            sent_at = Some(t0.elapsed());
        }
        let ours = &a["tables"]["nat-session"];
        let theirs = &s["tables"]["nat-session"];
        published = ours["published"].as_u64().unwrap_or(0);
        if sent_at.is_some()
            && published > 0
            && ours["published"] == theirs["peer"]
            && ours["published_digest"] == theirs["peer_digest"]
        {
            converged_at = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu1: Vec<_> = pids.iter().map(|p| thread_cpu(*p)).collect();
    let a = sync_of(&l.nodes[0]);
    let delta = |i: usize| -> String {
        cpu1[i]
            .iter()
            .map(|(k, v)| format!("{k} {:.2} s", v - cpu0[i].get(k).copied().unwrap_or(0.0)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    eprintln!(
        "sessions synced: {published}; sender done after {:?}, standby converged after {:?} ({:.0} sessions/s end to end)",
        sent_at,
        converged_at,
        published as f64 / converged_at.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    eprintln!(
        "max lag seen: {} messages, {:.3} s; sync traffic r1→r2: {} messages, {} bytes ({:.1} bytes/session)",
        max_lag.0,
        max_lag.1,
        a["messages_sent"],
        a["bytes_sent"],
        a["bytes_sent"].as_f64().unwrap_or(0.0) / published.max(1) as f64
    );
    eprintln!("CPU during the burst: r1 (active): {}", delta(0));
    eprintln!("CPU during the burst: r2 (standby): {}", delta(1));
    for node in &mut l.nodes {
        if let Some(p) = node.proc.take() {
            l.lab.stop(&p, Duration::from_secs(3)).unwrap();
        }
    }
}
