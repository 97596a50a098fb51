//! End to end, issue 15: NAT sessions survive an HA takeover.
//!
//! client — [lan bridge] — r1, r2 — [wan bridge] — server; r1 (priority 200, 2 workers) and r2
//! (priority 100, 1 worker: another VID geometry) share the virtual gateways 10.0.1.254 and
//! 10.0.2.254 (VRRP), run the same `[nat]` with pool 192.0.2.1 (the server routes it to
//! 10.0.2.254), and sync state over a third veth link (`[ha.sync]`, kernel UDP). A TCP download
//! through the NAT keeps going when r1 is killed with SIGKILL: r2 already holds the session with
//! r1's mapping and translates it from the first packet that reaches it.
#![allow(clippy::unwrap_used, missing_docs)]

use integration::wccplab::wait_for;
use integration::{binary, io_backend, require_root};
use netlab::{Lab, Ns, ProcHandle};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

const SERVER: &str = "10.0.2.10";
const POOL: &str = "192.0.2.1";

struct Node {
    ns: Ns,
    conf: PathBuf,
    socket: PathBuf,
    proc: Option<ProcHandle>,
}

fn cli(n: &Node, args: &[&str]) -> Option<serde_json::Value> {
    let mut a: Vec<&str> = args.to_vec();
    let s = n.socket.to_string_lossy().to_string();
    a.extend(["--json", "-s", &s]);
    let out = std::process::Command::new(binary("swrouter"))
        .args(&a)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Every VRRP virtual router of `n` is in `state`.
fn all_in(n: &Node, state: &str) -> bool {
    cli(n, &["ha", "status"]).is_some_and(|h| {
        h["vrrp"]
            .as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|v| v["state"] == state))
    })
}

/// The node's NAT session to the server's web port from inside endpoint `inside` (any
/// established one without): (inside, outside).
fn web_session(n: &Node, inside: Option<&str>) -> Option<(String, String)> {
    let rows = cli(n, &["nat", "sessions"])?;
    rows.as_array()?.iter().find_map(|r| {
        let this = match inside {
            Some(i) => r["inside"] == i,
            None => r["state"] == "established",
        };
        (this && r["proto"] == "tcp" && r["remote"] == format!("{SERVER}:8080")).then(|| {
            (
                r["inside"].as_str().unwrap_or("").to_string(),
                r["outside"].as_str().unwrap_or("").to_string(),
            )
        })
    })
}

fn start(lab: &mut Lab, n: &mut Node) {
    let h = lab
        .spawn(
            &n.ns,
            &binary("swrouter").to_string_lossy(),
            &["-c", &n.conf.to_string_lossy()],
        )
        .unwrap();
    let up = wait_for(Duration::from_secs(15), Duration::from_millis(50), || {
        cli(n, &["ha", "status"])
    });
    assert!(up.is_some(), "swrouter did not come up:\n{}", lab.logs(&h));
    n.proc = Some(h);
}

fn blob(len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

#[test]
fn a_nat_download_survives_killing_the_active_router() {
    require_root();
    let mut lab = Lab::new("hanat").unwrap();
    let (br, client, srv) = super::ha_vrrp::pair_segments(&mut lab);
    // A small receive buffer, so curl's rate limit paces the transfer from its start.
    client
        .sysctl("net.ipv4.tcp_rmem", "4096 65536 131072")
        .unwrap();
    srv.add_route("192.0.2.0/24", "10.0.2.254").unwrap();

    let key = lab.dir().join("ha.key");
    std::fs::write(
        &key,
        "5f0c1d2e3a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9012a3b4c5d6\n",
    )
    .unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let mut nodes = Vec::new();
    for (name, host, prio, workers) in [("r1", 2, 200, 2), ("r2", 3, 100, 1)] {
        let ns = super::ha_vrrp::pair_router_ns(&mut lab, &br, name);
        let socket = lab.dir().join(format!("{name}.sock"));
        let conf = lab.dir().join(format!("{name}.conf"));
        let vrrp: String = [(51, "eth0", "10.0.1.254"), (52, "eth1", "10.0.2.254")]
            .iter()
            .map(|(vrid, i, vip)| {
                format!(
                    "\n[[ha.vrrp]]\ninterface = \"{i}\"\nvrid = {vrid}\npriority = {prio}\nvirtual-addresses = [\"{vip}\"]\nadvert-interval-ms = 20\naccept-mode = true\n"
                )
            })
            .collect();
        let (me, peer, id, peer_id) = if name == "r1" {
            ("10.9.0.1", "10.9.0.2", 1, 2)
        } else {
            ("10.9.0.2", "10.9.0.1", 2, 1)
        };
        let text = format!(
            "[router]\nworkers = {workers}\nmanagement-socket = \"{}\"\nlog-level = \"debug\"\nio-backend = \"{}\"\n\n[[interface]]\nname = \"eth0\"\naddress = \"10.0.1.{host}/24\"\n\n[[interface]]\nname = \"eth1\"\naddress = \"10.0.2.{host}/24\"\n\n[nat]\n\n[[nat.rule]]\ninside = [\"10.0.1.0/24\"]\noutside = \"eth1\"\npool = [\"{POOL}\"]\n{vrrp}\n[ha.sync]\nlocal = \"{me}:7788\"\npeer = \"{peer}:7788\"\nkey-file = \"{}\"\nnode-id = {id}\npeer-node-id = {peer_id}\n",
            socket.display(),
            io_backend(),
            key.display()
        );
        std::fs::write(&conf, text).unwrap();
        nodes.push(Node {
            ns,
            conf,
            socket,
            proc: None,
        });
    }
    // The sync link: a kernel veth swrouter does not own.
    lab.link(&nodes[0].ns, "hs0", &nodes[1].ns, "hs0").unwrap();
    nodes[0].ns.add_addr("hs0", "10.9.0.1/30").unwrap();
    nodes[1].ns.add_addr("hs0", "10.9.0.2/30").unwrap();

    let (first, rest) = nodes.split_at_mut(1);
    let (r1, r2) = (&mut first[0], &mut rest[0]);
    start(&mut lab, r1);
    assert!(
        wait_for(Duration::from_secs(3), Duration::from_millis(10), || {
            all_in(r1, "master").then_some(())
        })
        .is_some(),
        "r1 never became master"
    );
    start(&mut lab, r2);
    assert!(
        wait_for(Duration::from_secs(3), Duration::from_millis(10), || {
            all_in(r2, "backup").then_some(())
        })
        .is_some(),
        "r2 never became backup"
    );
    let logs = |lab: &Lab, r1: &Node, r2: &Node| {
        [r1, r2]
            .iter()
            .filter_map(|n| n.proc.as_ref())
            .map(|h| lab.logs(h))
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    // The standby's NAT is standby.
    let standby = wait_for(Duration::from_secs(3), Duration::from_millis(20), || {
        let s = cli(r2, &["status"])?;
        (s["nat"]["ha"]["active"] == false && s["nat"]["ha"]["sync"] == true).then_some(s)
    });
    assert!(
        standby.is_some(),
        "r2's NAT is not standby: {:?}",
        cli(r2, &["status"])
    );

    // A web server with a 6 MiB file; a download at 2 MiB/s through the NAT takes about 3 s.
    let body = blob(6 << 20);
    let www = lab.dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("big"), &body).unwrap();
    let script = format!(
        "import http.server,functools\nh=functools.partial(http.server.SimpleHTTPRequestHandler,directory={:?})\nhttp.server.ThreadingHTTPServer(({SERVER:?},8080),h).serve_forever()\n",
        www.to_string_lossy()
    );
    lab.spawn(&srv, "python3", &["-c", &script]).unwrap();
    let reachable = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        client
            .run(
                "curl",
                &[
                    "-sS",
                    "--max-time",
                    "2",
                    "-o",
                    "/dev/null",
                    &format!("http://{SERVER}:8080/"),
                ],
            )
            .ok()
            .filter(|o| o.status.success())
    });
    assert!(
        reachable.is_some(),
        "server not reachable through the NAT:\n{}",
        logs(&lab, r1, r2)
    );

    let got = lab.dir().join("got");
    let dl = lab
        .spawn(
            &client,
            "curl",
            &[
                "-sS",
                "--fail",
                "--max-time",
                "30",
                "--limit-rate",
                "2M",
                "-o",
                &got.to_string_lossy(),
                &format!("http://{SERVER}:8080/big"),
            ],
        )
        .unwrap();
    // The session as r1 made it, and as r2 holds it from the sync.
    let on_r1 = wait_for(Duration::from_secs(3), Duration::from_millis(20), || {
        web_session(r1, None)
    })
    .expect("r1 has the download's session");
    let inside = on_r1.0.clone();
    assert!(on_r1.1.starts_with(&format!("{POOL}:")), "{on_r1:?}");
    let on_r2 = wait_for(Duration::from_secs(3), Duration::from_millis(20), || {
        web_session(r2, Some(&inside)).filter(|s| *s == on_r1)
    });
    assert_eq!(on_r2, Some(on_r1.clone()), "r2's synced session");
    // A raw ESP SA (keyed by SPI): made and learnt on r1, synced to r2.
    let peer = lab
        .spawn(&srv, "python3", &["-u", "-c", integration::ESP_PEER])
        .unwrap();
    assert!(lab.wait_for_log(&peer, "ready", Duration::from_secs(10)));
    let sink = lab
        .spawn(
            &client,
            "python3",
            &["-u", "-c", integration::ESP_SINK, "10.0.1.10"],
        )
        .unwrap();
    assert!(lab.wait_for_log(&sink, "ready", Duration::from_secs(10)));
    integration::send_esp(&client, "10.0.1.10", SERVER, 0x1000, 0).unwrap();
    assert!(
        lab.wait_for_log(&sink, "0x2000 0", Duration::from_secs(5)),
        "no ESP answer through r1: {}",
        lab.logs(&peer)
    );
    let esp_on = |n: &Node| -> Option<serde_json::Value> {
        let rows = cli(n, &["nat", "sessions"])?;
        rows.as_array()?
            .iter()
            .find(|r| r["proto"] == "esp" && r["spi_in"] == 0x2000)
            .cloned()
    };
    assert!(
        wait_for(
            Duration::from_secs(3),
            Duration::from_millis(20),
            || esp_on(r2)
        )
        .is_some(),
        "r2 has no synced ESP session: {:?}",
        cli(r2, &["nat", "sessions"])
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        lab.try_wait(&dl).unwrap().is_none(),
        "the download ended early"
    );

    let h1 = r1.proc.take().unwrap();
    let before = std::fs::metadata(&got).map(|m| m.len()).unwrap_or(0);
    let killed = std::time::Instant::now();
    lab.kill(&h1).unwrap();
    assert!(
        wait_for(Duration::from_secs(2), Duration::from_millis(5), || all_in(
            r2, "master"
        )
        .then_some(()))
        .is_some(),
        "r2 never took over"
    );
    let done = wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        lab.try_wait(&dl).unwrap()
    });
    let status = done.unwrap_or_else(|| panic!("download did not finish:\n{}", logs(&lab, r1, r2)));
    assert!(
        status.success(),
        "the download broke across the takeover: {}\n{}",
        lab.logs(&dl),
        logs(&lab, r1, r2)
    );
    assert!(std::fs::read(&got).unwrap() == body, "the download differs");
    eprintln!(
        "{before} of {} bytes before the kill; finished {:?} after it",
        body.len(),
        killed.elapsed()
    );
    assert!(
        (before as usize) < body.len() / 2,
        "killed too late to matter: {before} bytes were through"
    );
    // The SA goes on through r2: the peer's next packet reaches the host although the host
    // sent nothing since (r2 learnt nothing itself).
    integration::send_esp(&srv, SERVER, POOL, 0x2000, 1).unwrap();
    assert!(
        lab.wait_for_log(&sink, "0x2000 1", Duration::from_secs(5)),
        "the ESP SA did not survive the takeover: {:?}",
        cli(r2, &["status"]).map(|s| s["nat"]["esp"].clone())
    );
    let esp = cli(r2, &["status"]).unwrap()["nat"]["esp"].clone();
    assert_eq!(
        (esp["created"].as_u64(), esp["learnt"].as_u64()),
        (Some(0), Some(0)),
        "{esp}"
    );
    // r2 kept r1's mapping, is active now, and created nothing for it.
    assert_eq!(web_session(r2, Some(&inside)), Some(on_r1.clone()));
    let s = cli(r2, &["status"]).unwrap();
    let ha = &s["nat"]["ha"];
    assert_eq!(ha["active"], true, "{ha}");
    assert!(ha["applied"].as_u64().unwrap() >= 2, "{ha}");
    assert_eq!(ha["undecodable"], 0, "{ha}");
    assert_eq!(ha["refused"], 0, "{ha}");
    let created: u64 = s["nat"]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["created"].as_u64().unwrap())
        .sum();
    assert_eq!(created, 0, "r2 made its own session: {s}");
    let translated: u64 = s["nat"]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["in_translated"].as_u64().unwrap())
        .sum();
    assert!(translated > 100, "r2 carried the rest of the download: {s}");
    let misdelivered: u64 = s["nat"]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["misdelivered"].as_u64().unwrap())
        .sum();
    assert_eq!(misdelivered, 0);

    // r1 comes back: it takes r2's state (its own empty snapshot must not make r2 drop the
    // sessions it adopted from r1's previous run), only then starts VRRP, preempts (priority
    // 200) and owns the mapping: both nodes hold the same session.
    start(&mut lab, r1);
    let back = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        (all_in(r1, "master") && all_in(r2, "backup")).then_some(())
    });
    assert!(
        back.is_some(),
        "r1 did not take over again:
{}",
        logs(&lab, r1, r2)
    );
    let same = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        let (a, b) = (
            web_session(r1, Some(&inside)),
            web_session(r2, Some(&inside)),
        );
        (a.is_some() && a == b).then_some(a)
    });
    assert_eq!(
        same.flatten(),
        Some(on_r1.clone()),
        "the mapping on both nodes after r1's return: r1 {:?} r2 {:?}\n{}",
        web_session(r1, Some(&inside)),
        web_session(r2, Some(&inside)),
        logs(&lab, r1, r2)
    );
    let ha1 = cli(r1, &["ha", "status"]).unwrap();
    assert_eq!(ha1["role"], "active", "{ha1}");
    let log = lab.logs(r1.proc.as_ref().unwrap());
    assert!(
        log.contains("the peer's state is here; the virtual routers start"),
        "r1 synced before it was eligible:\n{log}"
    );
}
