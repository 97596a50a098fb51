//! End to end, issue 15 (the pseudo-standby, seed 004 Figs. 6A–6D): on node r1 of the sync
//! pair a second swrouter process runs as the pseudo-standby of r1's process, kept warm over
//! `[ha.sync] local-socket`.
//!
//! - Started while r1 runs, it finds r1's process on the local socket and joins as its
//!   pseudo-standby: its own management socket (`<socket>.standby`) shows role
//!   `pseudo-standby` and, once in sync, the same table digests r1 publishes.
//! - kill -9 of r1's process (with the sync link to r2 down, so nothing comes from r2): the
//!   twin takes over (the configured management socket answers, its role follows VRRP) with
//!   r1's state: the same neighbour digest as before the kill, and the same NAT sessions
//!   (`swrouter nat sessions` dumps compared mapping by mapping), and r1's view of a steering
//!   member's health (out of service, though the twin's own checks would pass).
//! - The killed process started again joins as the pseudo-standby of the twin and gets in sync
//!   (the same neighbour and NAT session digests).
#![allow(clippy::unwrap_used, missing_docs)]

use super::ha_sync::{steering_device, steering_section, sync_lab_prepared, sync_of, SyncLab};
use super::ha_vrrp::{ha, start, wait_state, Node};
use integration::wccplab::wait_for;
use std::path::PathBuf;
use std::time::Duration;

/// The pseudo-standby of `n`: the same config, answering on `<socket>.standby`.
fn twin_of(n: &Node) -> Node {
    let mut s = n.socket.clone().into_os_string();
    s.push(".standby");
    Node {
        ns: n.ns.clone(),
        conf: n.conf.clone(),
        socket: PathBuf::from(s),
        proc: None,
    }
}

/// Pool address of the pair's NAT (the server routes it to the wan virtual gateway).
const POOL: &str = "192.0.2.1";

/// NAT on both nodes: inside the lan, out of eth1 from [`POOL`].
fn nat_section() -> String {
    format!("\n[nat]\n\n[[nat.rule]]\ninside = [\"10.0.1.0/24\"]\noutside = \"eth1\"\npool = [\"{POOL}\"]\n")
}

/// The node's NAT mappings, sorted: (proto, inside, outside, remote).
fn nat_dump(n: &Node) -> Vec<(String, String, String, String)> {
    let out = std::process::Command::new(integration::binary("swrouter"))
        .args([
            "nat",
            "sessions",
            "--json",
            "-s",
            &n.socket.to_string_lossy(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let f = |r: &serde_json::Value, k: &str| r[k].as_str().unwrap_or_default().to_string();
    let mut v: Vec<_> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                f(r, "proto"),
                f(r, "inside"),
                f(r, "outside"),
                f(r, "remote"),
            )
        })
        .collect();
    v.sort();
    v
}

/// Waits until the pseudo-standby `twin` is in sync with `node` and holds the same `table`
/// (own and peer's) with at least `min` own entries; returns both sync sections.
fn wait_twin_in_sync(
    node: &Node,
    twin: &Node,
    table: &str,
    min: u64,
) -> Option<(serde_json::Value, serde_json::Value)> {
    wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        let a = sync_of(node);
        let t = sync_of(twin);
        let ours = &a["tables"][table];
        let held = &t["tables"][table];
        let same = ours["published"].as_u64()? >= min
            && ours["published"] == held["published"]
            && ours["published_digest"] == held["published_digest"]
            && ours["peer_digest"] == held["peer_digest"];
        (same && t["in_sync"] == true && a["pseudo_standby"]["connected"] == true).then_some((a, t))
    })
}

#[test]
fn the_pseudo_standby_takes_over_a_killed_process_and_the_process_rejoins_as_one() {
    let local = std::env::temp_dir().join(format!("swr-hpseudo-{}.sock", std::process::id()));
    let line = format!("local-socket = \"{}\"\n", local.display());
    // r1's health checks of the steering member web1 fail (the server drops them) until
    // r1 has taken web1 out of service; then the server answers everyone.
    let mut l: SyncLab = sync_lab_prepared(
        "hpseudo",
        |me| {
            let mut tail = if me == 1 { line.clone() } else { String::new() };
            tail.push_str(&nat_section());
            tail.push_str(&steering_section(me));
            tail
        },
        |lab, srv| {
            lab.spawn(
                srv,
                "python3",
                &["-m", "http.server", "80", "--bind", "10.0.2.10"],
            )
            .unwrap();
            srv.run_ok(
                "nft",
                &["add table ip hpseudo; add chain ip hpseudo in { type filter hook input priority 0; }; add rule ip hpseudo in ip saddr 10.0.2.2 tcp dport 80 drop"],
            )
            .unwrap();
        },
    );
    let srv = l
        .lab
        .namespaces()
        .iter()
        .find(|n| n.name.ends_with("srv"))
        .unwrap()
        .clone();
    srv.ip(&["route", "add", &format!("{POOL}/32"), "via", "10.0.2.254"])
        .unwrap();
    // r1 learns the client and the server, and translates a ping and two UDP flows.
    l.cli
        .run_ok("ping", &["-c", "3", "-i", "0.2", "-W", "1", "10.0.2.10"])
        .unwrap();
    for port in [5301, 5302] {
        l.cli
            .run_ok(
                "python3",
                &[
                    "-c",
                    &format!("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{port}))\ns.sendto(b'x',('10.0.2.10',9))"),
                ],
            )
            .unwrap();
    }
    let down = |n: &super::ha_vrrp::Node| steering_device(n, "web1")["health"] == "out-of-service";
    assert!(
        wait_for(Duration::from_secs(5), Duration::from_millis(50), || down(
            &l.nodes[0]
        )
        .then_some(()))
        .is_some(),
        "r1 never took web1 down: {}",
        steering_device(&l.nodes[0], "web1")
    );
    let sessions = wait_for(Duration::from_secs(3), Duration::from_millis(50), || {
        let d = nat_dump(&l.nodes[0]);
        (d.len() >= 3).then_some(d)
    })
    .unwrap_or_else(|| panic!("r1 made no NAT sessions: {:?}", nat_dump(&l.nodes[0])));
    eprintln!("r1 sessions: {sessions:?}");
    // The twin joins r1's process.
    let mut twin = twin_of(&l.nodes[0]);
    start(&mut l.lab, &mut twin);
    let h = ha(&twin).unwrap();
    assert_eq!(h["role"], "pseudo-standby", "{h}");
    // `swrouter status` answers there too, in JSON and as text.
    let status = |json: bool| {
        let mut args = vec!["status", "-s"];
        let sock = twin.socket.to_string_lossy().to_string();
        args.push(&sock);
        if json {
            args.push("--json");
        }
        let out = std::process::Command::new(integration::binary("swrouter"))
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let js: serde_json::Value = serde_json::from_str(&status(true)).unwrap();
    assert_eq!(js["router"]["backend"], "pseudo-standby", "{js}");
    assert_eq!(js["ha"]["role"], "pseudo-standby", "{js}");
    let text = status(false);
    assert!(text.contains("role: pseudo-standby"), "{text}");
    let (a, t) = wait_twin_in_sync(&l.nodes[0], &twin, "neighbour", 2).unwrap_or_else(|| {
        panic!(
            "the twin never held r1's state: r1 {} twin {}",
            sync_of(&l.nodes[0]),
            sync_of(&twin)
        )
    });
    eprintln!("r1 sync: {a}\ntwin sync: {t}");
    let before = a["tables"]["neighbour"].clone();
    let (a, _) = wait_twin_in_sync(&l.nodes[0], &twin, "nat-session", 3).unwrap_or_else(|| {
        panic!(
            "the twin never held r1's NAT sessions: r1 {} twin {}",
            sync_of(&l.nodes[0]),
            sync_of(&twin)
        )
    });
    let nat_before = a["tables"]["nat-session"].clone();
    // The twin holds r1's steering health too; from now on web1 answers every check.
    wait_twin_in_sync(&l.nodes[0], &twin, "steering-health", 1).unwrap_or_else(|| {
        panic!(
            "the twin never held r1's steering health: twin {}",
            sync_of(&twin)
        )
    });
    srv.run_ok("nft", &["delete table ip hpseudo"]).unwrap();
    assert_eq!(t["node_id"], 0x8000_0001u32, "{t}");
    // The sync link to r2 goes down first: what the promoted twin holds can only come from
    // its own replica (r2 holds r1's neighbours too and would resync them).
    l.nodes[1].ns.ip(&["link", "set", "eth2", "down"]).unwrap();
    // kill -9 r1's process: the twin becomes the node's process.
    let r1 = l.nodes[0].proc.take().unwrap();
    l.lab.kill(&r1).unwrap();
    let promoted = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        let h = ha(&l.nodes[0])?;
        (h["role"] == "active" || h["role"] == "standby").then_some(h)
    })
    .unwrap_or_else(|| {
        panic!(
            "the twin never answered as the node's process:\n{}",
            l.lab.logs(twin.proc.as_ref().unwrap())
        )
    });
    eprintln!("promoted: {promoted}");
    // r1 has priority 200 and preempts: the promoted twin is master again, hence active.
    let h =
        wait_state(&l.nodes[0], &[51, 52], "master", Duration::from_secs(3)).unwrap_or_else(|| {
            panic!(
                "the promoted twin never became master: {:?}",
                ha(&l.nodes[0])
            )
        });
    let h = wait_for(Duration::from_secs(2), Duration::from_millis(20), || {
        let h = ha(&l.nodes[0])?;
        (h["role"] == "active").then_some(h)
    })
    .unwrap_or_else(|| panic!("master but not active: {h}"));
    // It holds and publishes r1's neighbour table, unchanged.
    let after = wait_for(Duration::from_secs(3), Duration::from_millis(50), || {
        let n = sync_of(&l.nodes[0])["tables"]["neighbour"].clone();
        (n["published_digest"] == before["published_digest"]).then_some(n)
    })
    .unwrap_or_else(|| panic!("r1's neighbours lost by the takeover: before {before} now {h}"));
    assert_eq!(after["published"], before["published"]);
    // And translates with r1's NAT mappings, every one of them.
    let kept = wait_for(Duration::from_secs(3), Duration::from_millis(50), || {
        let d = nat_dump(&l.nodes[0]);
        (d == sessions).then_some(d)
    });
    assert!(
        kept.is_some(),
        "the promoted twin's NAT sessions differ:\nbefore {sessions:?}\nnow    {:?}",
        nat_dump(&l.nodes[0])
    );
    // web1 stays out of service on the promoted twin although its own checks now pass
    // (manual restore): it took r1's view instead of starting its checks from scratch.
    let d = wait_for(Duration::from_secs(3), Duration::from_millis(50), || {
        let d = steering_device(&l.nodes[0], "web1");
        (d["probe_ok"].as_u64()? >= 2).then_some(d)
    })
    .unwrap_or_else(|| {
        panic!(
            "the twin's checks of web1 never passed: {}",
            steering_device(&l.nodes[0], "web1")
        )
    });
    assert_eq!(
        d["health"], "out-of-service",
        "the promoted twin forgot r1's view: {d}"
    );
    let s = sync_of(&l.nodes[0]);
    assert_eq!(s["peer_alive"], false, "r2 was unreachable: {s}");
    l.nodes[1].ns.ip(&["link", "set", "eth2", "up"]).unwrap();
    let logs = l.lab.logs(twin.proc.as_ref().unwrap());
    assert!(logs.contains("PROMOTING"), "{logs}");
    // The killed process comes back: it joins the twin as its pseudo-standby.
    twin.socket = l.nodes[0].socket.clone();
    let mut back = twin_of(&l.nodes[0]);
    start(&mut l.lab, &mut back);
    let h = ha(&back).unwrap();
    assert_eq!(h["role"], "pseudo-standby", "{h}");
    let (a, b) = wait_twin_in_sync(&twin, &back, "neighbour", 2).unwrap_or_else(|| {
        panic!(
            "the restarted process never got in sync: node {} it {}",
            sync_of(&twin),
            sync_of(&back)
        )
    });
    assert_eq!(
        b["tables"]["neighbour"]["published_digest"], before["published_digest"],
        "node {a} pseudo-standby {b}"
    );
    let (a, b) = wait_twin_in_sync(&twin, &back, "nat-session", 3).unwrap_or_else(|| {
        panic!(
            "the restarted process never held the NAT sessions: node {} it {}",
            sync_of(&twin),
            sync_of(&back)
        )
    });
    assert_eq!(
        b["tables"]["nat-session"]["published_digest"], nat_before["published_digest"],
        "node {a} pseudo-standby {b}"
    );
    // r2 followed VRRP: backup, standby.
    let h2 = ha(&l.nodes[1]).unwrap();
    assert_eq!(h2["role"], "standby", "{h2}");
    for p in [back.proc.take(), twin.proc.take(), l.nodes[1].proc.take()]
        .into_iter()
        .flatten()
    {
        l.lab.stop(&p, Duration::from_secs(3)).unwrap();
    }
    let _ = std::fs::remove_file(&local);
}
