//! End to end: the release `swrouter` in a namespace between a client and a server.
//!
//! Every test builds its own lab (unique namespace names, torn down on drop, also on panic) and
//! asserts on what arrived where and on the router's own counters.
#![allow(clippy::unwrap_used, missing_docs)]

use integration::{addr, inject_frames, stage_of, RouterLab};
use std::time::Duration;

fn started(tag: &str, router_section: &str, extra: &str) -> RouterLab {
    let mut l = RouterLab::new(tag, router_section, extra).unwrap();
    l.start().unwrap();
    l
}

#[test]
fn ping_crosses_the_router_both_ways_and_the_router_answers_echo() {
    let l = started("ping", "", "");
    let (n, out) = RouterLab::ping(&l.cli, addr::SERVER, 3, &[]).unwrap();
    assert_eq!(
        n,
        3,
        "client → server: {out}\nrouter log:\n{}",
        l.router_log()
    );
    let (n, out) = RouterLab::ping(&l.srv, addr::CLIENT, 3, &[]).unwrap();
    assert_eq!(n, 3, "server → client: {out}");
    // The router's own addresses, including the one on the far side.
    let (n, out) = RouterLab::ping(&l.cli, addr::ROUTER_CLIENT_SIDE, 2, &[]).unwrap();
    assert_eq!(n, 2, "{out}");
    let (n, out) = RouterLab::ping(&l.cli, addr::ROUTER_SERVER_SIDE, 2, &[]).unwrap();
    assert_eq!(n, 2, "{out}");
    // Replies come back with the router's TTL (64), forwarded packets lose one hop.
    let (_, out) = RouterLab::ping(&l.cli, addr::SERVER, 1, &[]).unwrap();
    assert!(
        out.contains("ttl=63"),
        "server replies cross one router hop: {out}"
    );
    let s = l.status().unwrap();
    let route = stage_of(&s, "route").unwrap();
    assert!(
        route["out"].as_u64().unwrap() >= 12,
        "route stage forwarded the pings: {route}"
    );
    let local = stage_of(&s, "local-delivery").unwrap();
    assert!(
        local["consumed"].as_u64().unwrap() >= 4,
        "echo requests to the router were answered: {local}"
    );
}

#[test]
fn tcp_transfer_of_several_megabytes_arrives_intact() {
    let mut l = started("tcp", "", "");
    let www = l.lab.dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let data: Vec<u8> = (0..6u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(www.join("blob"), &data).unwrap();
    let www_s = www.to_string_lossy().to_string();
    let srv = l.srv.clone();
    let _web = l
        .lab
        .spawn(
            &srv,
            "python3",
            &[
                "-m",
                "http.server",
                "8080",
                "--bind",
                addr::SERVER,
                "--directory",
                &www_s,
            ],
        )
        .unwrap();
    let got = l.lab.dir().join("got");
    let got_s = got.to_string_lossy().to_string();
    let mut ok = false;
    for _ in 0..50 {
        let out = l
            .cli
            .run(
                "curl",
                &[
                    "-sS",
                    "--max-time",
                    "30",
                    "-o",
                    &got_s,
                    "http://10.0.2.2:8080/blob",
                ],
            )
            .unwrap();
        if out.status.success() {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200)); // the web server may still be starting
    }
    assert!(ok, "curl never succeeded; router log:\n{}", l.router_log());
    let received = std::fs::read(&got).unwrap();
    assert_eq!(received.len(), data.len());
    assert!(
        received == data,
        "the downloaded bytes differ from the served file"
    );
    let s = l.status().unwrap();
    let eth1 = s["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "eth1")
        .unwrap();
    assert!(
        eth1["rx_bytes"].as_u64().unwrap() > data.len() as u64,
        "the data crossed the router: {eth1}"
    );
    l.router.take();
}

#[test]
fn ttl_one_gets_time_exceeded_from_the_router() {
    let l = started("ttl", "", "");
    let (n, out) = RouterLab::ping(&l.cli, addr::SERVER, 1, &["-t", "1"]).unwrap();
    assert_eq!(n, 0, "{out}");
    assert!(
        out.contains("From 10.0.1.1") && out.contains("Time to live exceeded"),
        "{out}"
    );
    assert!(l.drops("route", "ttl-expired").unwrap() >= 1);
}

#[test]
fn unrouted_prefix_gets_net_unreachable() {
    let l = started("unr", "", "");
    let (n, out) = RouterLab::ping(&l.cli, "10.9.9.9", 1, &[]).unwrap();
    assert_eq!(n, 0, "{out}");
    assert!(
        out.contains("From 10.0.1.1") && out.contains("Destination Net Unreachable"),
        "{out}"
    );
    assert!(l.drops("route", "no-route").unwrap() >= 1);
}

#[test]
fn static_route_reaches_a_network_behind_a_gateway_and_reload_keeps_good_config() {
    // 10.9.0.0/16 lives behind the server (it owns 10.9.9.9 on its loopback).
    let l = started(
        "rte",
        "",
        "[[route]]\nprefix = \"10.9.0.0/16\"\nvia = \"10.0.2.2\"\n",
    );
    l.srv
        .ip(&["addr", "add", "10.9.9.9/32", "dev", "lo"])
        .unwrap();
    let (n, out) = RouterLab::ping(&l.cli, "10.9.9.9", 2, &[]).unwrap();
    assert_eq!(n, 2, "{out}");

    // A broken file is rejected with its position and the routes stay.
    let good = std::fs::read_to_string(&l.conf_path).unwrap();
    std::fs::write(
        &l.conf_path,
        format!("{good}\n[[route]]\nprefix = \"10.8.0.0/16\"\nvia = \"10.7.7.7\"\n"),
    )
    .unwrap();
    let err = l
        .swrouter(&["reload", "-s", &l.socket.to_string_lossy()])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rejected") && err.contains("router.conf:"),
        "{err}"
    );
    let (n, _) = RouterLab::ping(&l.cli, "10.9.9.9", 1, &[]).unwrap();
    assert_eq!(n, 1, "old routes still in force");

    // SIGHUP with a config that drops the route: 10.9/16 becomes unreachable.
    std::fs::write(
        &l.conf_path,
        good.replace("prefix = \"10.9.0.0/16\"", "prefix = \"10.10.0.0/16\""),
    )
    .unwrap();
    let pid = l.router.as_ref().unwrap().pid;
    std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    let mut gone = false;
    for _ in 0..50 {
        let s = l.status().unwrap();
        let routes: Vec<String> = s["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["prefix"].as_str().unwrap().to_string())
            .collect();
        if routes.contains(&"10.10.0.0/16".to_string())
            && !routes.contains(&"10.9.0.0/16".to_string())
        {
            assert_eq!(s["router"]["reloads"], 1);
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(gone, "SIGHUP reload did not install the new routes");
    let (n, out) = RouterLab::ping(&l.cli, "10.9.9.9", 1, &[]).unwrap();
    assert_eq!(n, 0, "{out}");
    assert!(out.contains("Net Unreachable"), "{out}");
}

#[test]
fn arp_entries_and_gratuitous_arp_show_up() {
    let mut l = RouterLab::new("arp", "", "").unwrap();
    // The client accepts gratuitous ARP, so the router's announcement creates an entry there.
    l.cli.sysctl("net.ipv4.conf.eth0.arp_accept", "1").unwrap();
    l.start().unwrap();
    let mut announced = false;
    for _ in 0..30 {
        let neigh = l.cli.ip(&["neigh", "show", "dev", "eth0"]).unwrap();
        if neigh.contains(addr::ROUTER_CLIENT_SIDE) {
            announced = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        announced,
        "no gratuitous ARP from the router reached the client"
    );
    let (n, _) = RouterLab::ping(&l.cli, addr::SERVER, 1, &[]).unwrap();
    assert_eq!(n, 1);
    let s = l.status().unwrap();
    let arp = s["arp"].as_array().unwrap();
    let cli_mac = l.cli.mac("eth0").unwrap();
    let srv_mac = l.srv.mac("eth0").unwrap();
    assert!(
        arp.iter().any(|a| a["address"] == addr::CLIENT
            && a["mac"] == cli_mac.as_str()
            && a["interface"] == "eth0"),
        "{arp:?}"
    );
    assert!(
        arp.iter().any(|a| a["address"] == addr::SERVER
            && a["mac"] == srv_mac.as_str()
            && a["interface"] == "eth1"),
        "{arp:?}"
    );
    // The router answered the client's ARP with the MAC of its interface.
    let rtr_mac = l.rtr.mac("eth0").unwrap();
    let neigh = l
        .cli
        .ip(&["neigh", "show", addr::ROUTER_CLIENT_SIDE, "dev", "eth0"])
        .unwrap();
    assert!(neigh.contains(&rtr_mac), "{neigh}");
}

/// An Ethernet + IPv4 + UDP frame from the client to the server, with a valid header checksum.
fn udp_frame(dst_mac: &str, src_mac: &str) -> Vec<u8> {
    let mac = |s: &str| {
        s.split(':')
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect::<Vec<u8>>()
    };
    let mut f = Vec::new();
    f.extend(mac(dst_mac));
    f.extend(mac(src_mac));
    f.extend([0x08, 0x00]);
    let payload = b"malformed-frame-test";
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0,
        0,
        64,
        17,
        0,
        0,
        10,
        0,
        1,
        2,
        10,
        0,
        2,
        2,
    ];
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend(ip);
    f.extend([
        0x30,
        0x39,
        0x00,
        0x09,
        0x00,
        (8 + payload.len()) as u8,
        0,
        0,
    ]);
    f.extend(payload);
    f
}

fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = b
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn malformed_frames_are_counted_by_reason_and_do_not_disturb_traffic() {
    let l = started("bad", "", "");
    let rtr_mac = l.rtr.mac("eth0").unwrap();
    let cli_mac = l.cli.mac("eth0").unwrap();
    let good = udp_frame(&rtr_mac, &cli_mac);
    let mut bad_csum = good.clone();
    bad_csum[14 + 10] ^= 0x55;
    let mut bad_version = good.clone();
    bad_version[14] = 0x65;
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x43;
    let mut bad_len = good.clone();
    bad_len[14 + 2] = 0x7f; // total length far beyond the frame
    let truncated = good[..14 + 12].to_vec();
    let mut frames = Vec::new();
    for _ in 0..5 {
        for f in [&bad_csum, &bad_version, &bad_ihl, &bad_len, &truncated] {
            frames.push(hex(f));
        }
    }
    // Traffic keeps flowing while the junk arrives.
    let cli = l.cli.clone();
    let pinger = std::thread::spawn(move || RouterLab::ping(&cli, addr::SERVER, 10, &[]).unwrap());
    inject_frames(&l.cli, "eth0", &frames).unwrap();
    let (n, out) = pinger.join().unwrap();
    assert_eq!(n, 10, "pings lost while malformed frames arrived: {out}");
    let s = l.status().unwrap();
    let drops = &stage_of(&s, "ipv4-input").unwrap()["drops"];
    assert_eq!(drops["ipv4-bad-checksum"], 5, "{drops}");
    assert_eq!(drops["ipv4-bad-version"], 5, "{drops}");
    assert_eq!(drops["ipv4-bad-header-length"], 5, "{drops}");
    assert_eq!(drops["ipv4-bad-total-length"], 5, "{drops}");
    assert_eq!(drops["ipv4-truncated"], 5, "{drops}");
    // A well-formed one is forwarded (and the server answers port unreachable to it).
    let before = stage_of(&s, "route").unwrap()["out"].as_u64().unwrap();
    inject_frames(&l.cli, "eth0", &[hex(&good)]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let after = stage_of(&l.status().unwrap(), "route").unwrap()["out"]
        .as_u64()
        .unwrap();
    assert!(after > before, "the valid frame was routed");
}

#[test]
fn two_workers_forward_and_report_per_worker_counters() {
    let mut l = started("wrk", "workers = 2", "");
    let (n, out) = RouterLab::ping(&l.cli, addr::SERVER, 5, &[]).unwrap();
    assert_eq!(n, 5, "{out}");
    let s = l.status().unwrap();
    let workers = s["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    let total: u64 = workers
        .iter()
        .map(|w| w["rx_packets"].as_u64().unwrap())
        .sum();
    assert!(total >= 10, "{workers:?}");
    // Each frame is handled once: fanout does not duplicate (the server sees exactly 5 requests).
    let route_out = stage_of(&s, "route").unwrap()["out"].as_u64().unwrap();
    assert!(
        (10..=14).contains(&route_out),
        "each ping and reply routed once: {route_out}"
    );
    // Clean stop on SIGTERM: the process exits 0 and removes its socket.
    let h = l.router.take().unwrap();
    let status = l.lab.stop(&h, Duration::from_secs(5)).unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(!l.socket.exists(), "socket removed on exit");
}

#[test]
fn human_status_shows_interfaces_routes_and_stages() {
    let l = started("hum", "", "");
    let _ = RouterLab::ping(&l.cli, addr::SERVER, 1, &[]).unwrap();
    let out = l
        .swrouter(&["status", "-s", &l.socket.to_string_lossy()])
        .unwrap();
    for needle in [
        "INTERFACE",
        "eth0",
        "10.0.1.1/24",
        "ROUTE",
        "10.0.2.0/24",
        "connected",
        "NEIGHBOUR",
        "10.0.2.2",
        "STAGE",
        "ipv4-input",
        "neighbour",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(!out.trim_start().starts_with('{'), "tables, not JSON");
    let backend = integration::io_backend();
    assert!(
        out.contains(&format!("backend {backend}")),
        "runs on the backend under test: {out}"
    );
    let s = l.status().unwrap();
    let ifs = s["interfaces"].as_array().unwrap();
    assert!(
        ifs.iter().all(|i| i["backend"] == backend.as_str()),
        "{ifs:?}"
    );
}

#[test]
fn sigint_stops_the_router_cleanly_and_gives_arp_back_to_the_kernel() {
    let mut l = started("int", "", "");
    let flags = |l: &RouterLab| l.rtr.ip(&["link", "show", "eth0"]).unwrap();
    assert!(
        flags(&l).contains("NOARP"),
        "swrouter answers ARP itself while running"
    );
    let h = l.router.take().unwrap();
    std::process::Command::new("kill")
        .args(["-INT", &h.pid.to_string()])
        .status()
        .unwrap();
    let mut exited = None;
    for _ in 0..50 {
        if let Some(st) = l.lab.try_wait(&h).unwrap() {
            exited = Some(st);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = exited.expect("router did not stop on SIGINT");
    assert!(st.success(), "{st:?}\n{}", l.lab.logs(&h));
    assert!(l.lab.logs(&h).contains("SIGINT"), "{}", l.lab.logs(&h));
    assert!(
        !flags(&l).contains("NOARP"),
        "kernel ARP restored: {}",
        flags(&l)
    );
}

#[test]
fn large_datagrams_are_fragmented_toward_a_smaller_mtu_and_df_gets_frag_needed() {
    let mut l = RouterLab::new_opts("frag", "", "mtu = 1280", "").unwrap();
    // The server side link runs at 1280 (both ends of a link agree on the MTU).
    l.srv.ip(&["link", "set", "eth0", "mtu", "1280"]).unwrap();
    l.start().unwrap();
    // 1400 bytes of ICMP payload without DF: fragmented on eth1, reassembled by the server.
    let (n, out) = RouterLab::ping(&l.cli, addr::SERVER, 2, &["-s", "1400", "-M", "dont"]).unwrap();
    assert_eq!(n, 2, "{out}\n{}", l.router_log());
    // With DF the client is told the next-hop MTU.
    let (n, out) = RouterLab::ping(&l.cli, addr::SERVER, 1, &["-s", "1400", "-M", "do"]).unwrap();
    assert_eq!(n, 0, "{out}");
    assert!(
        out.contains("Frag needed") && out.contains("mtu = 1280"),
        "{out}"
    );
    assert!(l.drops("route", "mtu-exceeded").unwrap() >= 1);
}

/// `swrouter status --watch` (issue 18 item 4): frames of rates, not totals, for a running
/// router, within 80 columns; `--count` ends it (Ctrl-C does the same on a terminal).
#[test]
fn status_watch_shows_rates_per_interface() {
    let l = started("watch", "", "");
    let cli = l.cli.clone();
    // About 2.5 s of pings at 50 per second while the view samples every 500 ms.
    let pinger = std::thread::spawn(move || {
        RouterLab::ping(&cli, addr::SERVER, 125, &["-i", "0.02"]).unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    let out = std::process::Command::new(integration::binary("swrouter"))
        .args([
            "status",
            "--watch",
            "--count",
            "4",
            "--interval-ms",
            "500",
            "--socket",
        ])
        .arg(&l.socket)
        .output()
        .unwrap();
    let (n, _) = pinger.join().unwrap();
    assert!(n >= 120, "pings lost: {n}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("INTERFACE").count(), 4, "{text}");
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    // Frames after the first show the pings' rate on the client side: about 50 in and 50
    // replies out per second (each way through eth0), never the running totals.
    let rx_rates: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("eth0"))
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap_or(-1.0))
        .collect();
    assert_eq!(rx_rates.len(), 4, "{text}");
    assert_eq!(rx_rates[0], 0.0, "the first frame has no rates: {text}");
    assert!(
        rx_rates[1..].iter().all(|r| (20.0..=120.0).contains(r)),
        "{rx_rates:?}\n{text}"
    );
}

#[test]
fn status_watch_on_a_terminal_redraws_in_place_and_exits_cleanly_on_ctrl_c() {
    // A pseudo-terminal (util-linux `script`): the view clears the screen before each frame,
    // fits 80 columns, and SIGINT (what Ctrl-C sends) ends it with status 0.
    let l = started("watchtty", "", "");
    let sock = l.socket.to_string_lossy().to_string();
    let cmd = format!(
        "stty cols 80 rows 40; exec {} status --watch --interval-ms 200 --socket {sock}",
        integration::binary("swrouter").display()
    );
    let mut child = std::process::Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script (util-linux) runs");
    std::thread::sleep(Duration::from_millis(1500));
    // The watcher is the process running with our socket in its arguments under `script`.
    let pgrep = std::process::Command::new("pgrep")
        .args([
            "-f",
            &format!("status --watch --interval-ms 200 --socket {sock}"),
        ])
        .output()
        .unwrap();
    let pids: Vec<i32> = String::from_utf8_lossy(&pgrep.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .filter(|&p| p != child.id() as i32)
        .collect();
    assert!(!pids.is_empty(), "the watcher is not running");
    for p in &pids {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &p.to_string()])
            .status();
    }
    let t = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "Ctrl-C did not stop the view"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut text = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(status.success(), "exit {status:?}: {text}");
    let clears = text.matches("\x1b[H\x1b[2J").count();
    assert!(clears >= 3, "{clears} redraws in 1.5 s at 200 ms: {text:?}");
    assert!(text.matches("INTERFACE").count() >= 3, "{text:?}");
    for line in text.split("\x1b[H\x1b[2J").flat_map(|f| f.lines()) {
        let line = line.trim_end_matches('\r');
        assert!(
            line.chars().count() <= 80,
            "wider than 80 columns: {line:?}"
        );
    }
}

/// kill -9 leaves the interfaces taken over (kernel ARP off); the next run finds the state the
/// first one saved and gives that back on its clean stop, not the taken-over state it found.
#[test]
fn a_killed_router_s_interfaces_are_given_back_by_the_next_clean_stop() {
    let mut l = integration::RouterLab::new("fwcrash", "", "").unwrap();
    let noarp = |l: &integration::RouterLab| {
        l.rtr
            .ip(&["link", "show", "eth0"])
            .unwrap()
            .contains("NOARP")
    };
    assert!(!noarp(&l), "the kernel answers ARP before swrouter runs");
    l.start().unwrap();
    assert!(noarp(&l), "swrouter turns kernel ARP off on its interfaces");
    let h = l.router.take().unwrap();
    l.lab.kill(&h).unwrap();
    assert!(
        noarp(&l),
        "a killed swrouter cannot give the interfaces back"
    );
    l.start().unwrap();
    let h = l.router.take().unwrap();
    let log = l.lab.logs(&h);
    l.lab.stop(&h, std::time::Duration::from_secs(5)).unwrap();
    assert!(
        !noarp(&l),
        "the clean stop gave back the original state (kernel ARP on):\n{log}"
    );
}
