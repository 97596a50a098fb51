//! End to end, issue 15 (HA state sync): two swrouter nodes share virtual gateways with VRRP
//! (the pair of `ha_vrrp`) and run `[ha.sync]` over a third, direct link that the kernel keeps.
//!
//! - The standby holds the active's state: the neighbour bindings the active learnt reach the
//!   standby (same per-table digests on both sides), the node record arrives, roles follow VRRP.
//! - Messages that are not the peer's are refused and counted: a captured sync datagram sent
//!   again (replayed), the same with a flipped byte (forged: the HMAC fails), a datagram from
//!   another address (wrong source); the channel stays in sync.
#![allow(clippy::unwrap_used, missing_docs)]

use super::ha_vrrp::{ha, pair_vrrp, start, wait_state, write_conf, Node, PAIR_INTERVAL};
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
    require_root();
    let mut lab = Lab::new(tag).unwrap();
    let br = lab.add_ns("br").unwrap();
    let cli = lab.add_ns("cli").unwrap();
    let srv = lab.add_ns("srv").unwrap();
    for b in ["lan", "wan"] {
        br.ip(&["link", "add", b, "type", "bridge"]).unwrap();
        br.ip(&["link", "set", b, "up"]).unwrap();
    }
    lab.link(&cli, "eth0", &br, "c0").unwrap();
    lab.link(&srv, "eth0", &br, "s0").unwrap();
    br.ip(&["link", "set", "c0", "master", "lan"]).unwrap();
    br.ip(&["link", "set", "s0", "master", "wan"]).unwrap();
    cli.add_addr("eth0", "10.0.1.10/24").unwrap();
    cli.add_route("default", "10.0.1.254").unwrap();
    srv.add_addr("eth0", "10.0.2.10/24").unwrap();
    srv.add_route("default", "10.0.2.254").unwrap();
    let key = key_file(
        &lab,
        "ha.key",
        "5f0e4c1d9a8b7c6d5e4f30211a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d",
    );
    let r1 = lab.add_ns("r1").unwrap();
    let r2 = lab.add_ns("r2").unwrap();
    lab.link(&r1, "eth2", &r2, "eth2").unwrap();
    r1.add_addr("eth2", "10.9.0.1/24").unwrap();
    r2.add_addr("eth2", "10.9.0.2/24").unwrap();
    let mut nodes = Vec::new();
    for (me, ns, prio) in [(1u32, r1, 200u8), (2, r2, 100)] {
        let name = format!("r{me}");
        lab.link(&ns, "eth0", &br, &format!("{name}l")).unwrap();
        lab.link(&ns, "eth1", &br, &format!("{name}w")).unwrap();
        br.ip(&["link", "set", &format!("{name}l"), "master", "lan"])
            .unwrap();
        br.ip(&["link", "set", &format!("{name}w"), "master", "wan"])
            .unwrap();
        let lan = format!("10.0.1.{}/24", me + 1);
        let wan = format!("10.0.2.{}/24", me + 1);
        let mut tail = pair_vrrp(prio, PAIR_INTERVAL.as_millis() as u32);
        tail.push_str(&sync_section(me, &key));
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

/// The UDP payloads of the IPv4/UDP frames of a pcap file (Ethernet link type).
fn udp_payloads(pcap: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        let frame = &pcap[at + 16..(at + 16 + caplen).min(pcap.len())];
        at += 16 + caplen;
        if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] || frame[23] != 17 {
            continue;
        }
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        let udp = &frame[14 + ihl..];
        if udp.len() >= 8 {
            out.push(udp[8..].to_vec());
        }
    }
    out
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
