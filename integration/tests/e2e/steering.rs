//! Service-chain steering end to end (issue 7): a transparent firewall (a Linux bridge with an
//! nftables drop rule), an IDS capturing copies, a loopback-mode web server holding the service
//! address on `lo`, and a NAT-mode server listening on a translated port.
//!
//! ```text
//!                          ┌── fwa 10.0.2.1 ══ lega ┐
//! client 10.0.1.2/.3 ── eth0 [swrouter]          br0 (fw ns: bridge + nft)
//!                          ├── fwb 10.0.3.1 ══ legb ┘
//!                          ├── s1 10.0.4.1 ── web1 10.0.4.2 (10.0.9.80 on lo, :80 :81 :9999)
//!                          ├── s2 10.0.5.1 ── nat1 10.0.5.2 (:8080, :20005)
//!                          └── ids 10.0.6.1 ── ids (tcpdump, no address)
//! ```
//!
//! The firewall is addressed by the router's own fwb MAC: the bridge forwards the unchanged
//! frame to its other port, where the router receives it from its own fwa MAC (`out-mac`).
#![allow(clippy::unwrap_used, missing_docs)]

use integration::wccplab::unix_ms_now;
use integration::{binary, io_backend, require_root};
use netlab::{Lab, Ns, ProcHandle};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Topo {
    lab: Lab,
    cli: Ns,
    rtr: Ns,
    fw: Ns,
    web1: Ns,
    nat1: Ns,
    ids: Ns,
    socket: PathBuf,
    conf: PathBuf,
}

fn topo(tag: &str) -> Topo {
    require_root();
    let mut lab = Lab::new(tag).unwrap();
    let cli = lab.add_ns("cli").unwrap();
    let rtr = lab.add_ns("rtr").unwrap();
    let fw = lab.add_ns("fw").unwrap();
    let web1 = lab.add_ns("web1").unwrap();
    let nat1 = lab.add_ns("nat1").unwrap();
    let ids = lab.add_ns("ids").unwrap();
    lab.link(&cli, "eth0", &rtr, "eth0").unwrap();
    lab.link(&rtr, "fwa", &fw, "lega").unwrap();
    lab.link(&rtr, "fwb", &fw, "legb").unwrap();
    lab.link(&rtr, "s1", &web1, "eth0").unwrap();
    lab.link(&rtr, "s2", &nat1, "eth0").unwrap();
    lab.link(&rtr, "ids", &ids, "eth0").unwrap();
    cli.add_addr("eth0", "10.0.1.2/24").unwrap();
    cli.add_addr("eth0", "10.0.1.3/24").unwrap();
    cli.add_route("default", "10.0.1.1").unwrap();
    let dir = lab.dir().to_path_buf();
    bridge_firewall(
        &fw,
        &dir.join("fw.nft"),
        "ip daddr 10.0.9.80 tcp dport 9999 counter drop\n\
         ip daddr 10.0.9.80 tcp dport 80 counter\n\
         ip saddr 10.0.9.80 tcp sport 80 counter\n\
         ip daddr 10.0.9.80 tcp dport 81 counter\n\
         ip daddr 10.0.9.80 udp dport 5000 counter\n",
    );
    // The loopback-mode server holds the service address on lo.
    web1.add_addr("eth0", "10.0.4.2/24").unwrap();
    web1.add_addr("lo", "10.0.9.80/32").unwrap();
    // As any direct-server-return server: ARP from the link's own address, never for the
    // service address (otherwise its ARP requests carry 10.0.9.80 and the router refuses them).
    for (k, v) in [
        ("net.ipv4.conf.all.arp_announce", "2"),
        ("net.ipv4.conf.eth0.arp_announce", "2"),
        ("net.ipv4.conf.all.arp_ignore", "1"),
    ] {
        web1.sysctl(k, v).unwrap();
    }
    web1.add_route("default", "10.0.4.1").unwrap();
    nat1.add_addr("eth0", "10.0.5.2/24").unwrap();
    nat1.add_route("default", "10.0.5.1").unwrap();
    ids.ip(&["link", "set", "eth0", "up"]).unwrap();
    let socket = dir.join("swrouter.sock");
    let conf = dir.join("router.conf");
    Topo {
        lab,
        cli,
        rtr,
        fw,
        web1,
        nat1,
        ids,
        socket,
        conf,
    }
}

/// A transparent firewall in `ns`: a bridge of its legs `lega` and `legb` (no address) with one
/// nftables bridge-forward rule per line of `rules`.
fn bridge_firewall(ns: &Ns, nft_file: &Path, rules: &str) {
    ns.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
    for l in ["lega", "legb"] {
        ns.ip(&["link", "set", "dev", l, "master", "br0"]).unwrap();
        ns.ip(&["link", "set", "dev", l, "up"]).unwrap();
    }
    ns.ip(&["link", "set", "br0", "up"]).unwrap();
    let mut nft = "add table bridge fwt\n\
                   add chain bridge fwt pass { type filter hook forward priority 0; }\n"
        .to_string();
    for r in rules.lines().map(str::trim).filter(|r| !r.is_empty()) {
        nft.push_str(&format!("add rule bridge fwt pass {r}\n"));
    }
    std::fs::write(nft_file, nft).unwrap();
    ns.run_ok("nft", &["-f", &nft_file.to_string_lossy()])
        .unwrap();
}

/// The router config: `fw` is the firewall device definition (swapped by the reload test).
fn router_conf(t: &Topo) -> String {
    let fwa = t.rtr.mac("fwa").unwrap();
    let fwb = t.rtr.mac("fwb").unwrap();
    let web1 = t.web1.mac("eth0").unwrap();
    let ids = t.ids.mac("eth0").unwrap();
    format!(
        r#"[router]
management-socket = "{sock}"
log-level = "debug"
io-backend = "{backend}"

[[interface]]
name = "eth0"
address = "10.0.1.1/24"
[[interface]]
name = "fwa"
address = "10.0.2.1/24"
[[interface]]
name = "fwb"
address = "10.0.3.1/24"
[[interface]]
name = "s1"
address = "10.0.4.1/24"
[[interface]]
name = "s2"
address = "10.0.5.1/24"
[[interface]]
name = "ids"
address = "10.0.6.1/24"

[[steering.device]]
name = "fw"
mode = "transparent"
interfaces = ["fwa", "fwb"]
mac = "{fwb}"
out-mac = "{fwa}"

[[steering.device]]
name = "ids"
mode = "transparent"
interfaces = ["ids", "ids"]
mac = "{ids}"

[[steering.device]]
name = "web1"
mode = "loopback"
interfaces = ["s1"]
mac = "{web1}"
address = "10.0.4.2"

[[steering.device]]
name = "nat1"
mode = "nat"
interfaces = ["s2"]
address = "10.0.5.2"

[[steering.service]]
name = "web"
address = "10.0.9.80"
port = 80
ingress = ["eth0"]
chain = [{{ device = "fw" }}, {{ device = "ids", copy = true }}, {{ device = "web1" }}]

[[steering.service]]
name = "blocked"
address = "10.0.9.80"
port = 9999
ingress = ["eth0"]
chain = [{{ device = "fw" }}, {{ device = "web1" }}]

[[steering.service]]
name = "direct"
address = "10.0.9.80"
port = 81
ingress = ["eth0"]
chain = [{{ device = "web1" }}]

[[steering.service]]
name = "app"
address = "10.0.9.81"
port = 8000
ingress = ["eth0"]
chain = [{{ device = "nat1" }}]
translate-port = 8080
dynamic-ports = ["20000-20010"]
acl = [{{ action = "deny", source = "10.0.1.3/32" }}]
"#,
        sock = t.socket.display(),
        backend = io_backend(),
    )
}

fn start_router(t: &mut Topo) -> ProcHandle {
    let conf = router_conf(t);
    start_router_with(t, &conf)
}

/// Writes `conf` and starts swrouter with it; waits until it answers status.
fn start_router_with(t: &mut Topo, conf: &str) -> ProcHandle {
    std::fs::write(&t.conf, conf).unwrap();
    let h = t
        .lab
        .spawn(
            &t.rtr,
            &binary("swrouter").to_string_lossy(),
            &["-c", &t.conf.to_string_lossy()],
        )
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if status(&t.socket).is_some() {
            return h;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("swrouter did not come up:\n{}", t.lab.logs(&h));
}

fn status(socket: &Path) -> Option<serde_json::Value> {
    let out = std::process::Command::new(binary("swrouter"))
        .args(["status", "--json", "-s", &socket.to_string_lossy()])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Starts an HTTP server in `ns` and waits until it listens.
fn http(lab: &mut Lab, ns: &Ns, port: u16, bind: &str, dir: &Path) -> ProcHandle {
    let p = port.to_string();
    let h = lab
        .spawn(
            ns,
            "python3",
            &[
                "-u",
                "-m",
                "http.server",
                &p,
                "--bind",
                bind,
                "--directory",
                &dir.to_string_lossy(),
            ],
        )
        .unwrap();
    assert!(
        lab.wait_for_log(&h, "Serving HTTP", Duration::from_secs(15)),
        "http server on :{port} did not start: {}",
        lab.logs(&h)
    );
    h
}

/// `curl` from the client; Some(body) on success.
fn curl(cli: &Ns, url: &str, from: &str, timeout_s: u32) -> Option<String> {
    let t = timeout_s.to_string();
    let out = cli
        .run("curl", &["-sS", "--max-time", &t, "--interface", from, url])
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits until `url` answers (servers starting, ARP settling).
fn wait_http(cli: &Ns, url: &str) -> Option<String> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        if let Some(b) = curl(cli, url, "10.0.1.2", 2) {
            return Some(b);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    None
}

/// Packets counted by the bridge nftables rule whose text contains `needle`.
fn fw_counter(fw: &Ns, needle: &str) -> u64 {
    let out = fw
        .run_ok("nft", &["list", "chain", "bridge", "fwt", "pass"])
        .unwrap();
    for line in out.lines().filter(|l| l.contains(needle)) {
        let mut it = line.split_whitespace();
        while let Some(w) = it.next() {
            if w == "packets" {
                return it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            }
        }
    }
    panic!("no counter rule with {needle:?} in:\n{out}");
}

fn service<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["steering"]["services"]
        .as_array()
        .and_then(|a| a.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no service {name} in {}", s["steering"]))
}

fn device<'a>(s: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    s["steering"]["devices"]
        .as_array()
        .and_then(|a| a.iter().find(|v| v["name"] == name))
        .unwrap_or_else(|| panic!("no device {name} in {}", s["steering"]))
}

/// Ethernet (to `dst_mac`, from 02:00:00:00:66:66) + IPv4 10.0.1.2 → 10.0.9.80 + TCP
/// 40000 → 80 (ACK), as hex.
fn spoofed_frame(dst_mac: &str) -> String {
    let mut ip = vec![
        0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 1, 2, 10, 0, 9, 80,
    ];
    let mut sum: u32 = ip
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x10;
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    format!("{dst_mac}0200000066660800{}{}", hex(&ip), hex(&tcp))
}

#[test]
fn chain_firewall_ids_loopback_nat_translation_ranges_acl() {
    let mut t = topo("str");
    let www = t.lab.dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "steered web\n".repeat(20)).unwrap();
    let lab = &mut t.lab;
    let _w80 = http(lab, &t.web1, 80, "0.0.0.0", &www);
    let _w81 = http(lab, &t.web1, 81, "0.0.0.0", &www);
    let _w9999 = http(lab, &t.web1, 9999, "0.0.0.0", &www);
    let _n8080 = http(lab, &t.nat1, 8080, "10.0.5.2", &www);
    let _n20005 = http(lab, &t.nat1, 20005, "10.0.5.2", &www);
    let tcpdump = lab
        .spawn(&t.ids, "tcpdump", &["-i", "eth0", "-n", "-l", "-U", "ip"])
        .unwrap();
    assert!(
        lab.wait_for_log(&tcpdump, "listening on", Duration::from_secs(10)),
        "tcpdump did not start: {}",
        lab.logs(&tcpdump)
    );
    let router = start_router(&mut t);
    let logs = |t: &Topo| {
        let s = status(&t.socket).unwrap_or_default();
        format!(
            "steering: {}\npipeline: {}\nrouter log:\n{}",
            s["steering"],
            s["pipeline"],
            t.lab.logs(&router)
        )
    };

    // 1. The web service: through the firewall to the loopback server, and back.
    let body = wait_http(&t.cli, "http://10.0.9.80/")
        .unwrap_or_else(|| panic!("web service never answered\n{}", logs(&t)));
    assert!(body.starts_with("steered web"), "{body}");
    let fwd80 = fw_counter(&t.fw, "tcp dport 80 ");
    let rev80 = fw_counter(&t.fw, "tcp sport 80 ");
    assert!(fwd80 > 0, "the request did not cross the firewall");
    assert!(rev80 > 0, "the reply did not cross the firewall");

    // 2. The firewall's drop rule is honoured: the server listens on 9999, yet nothing answers.
    assert!(curl(&t.cli, "http://10.0.9.80:9999/", "10.0.1.2", 3).is_none());
    assert!(
        fw_counter(&t.fw, "dport 9999") > 0,
        "the firewall saw no :9999"
    );

    // 3. Same address, another port, another chain: :81 goes straight to the server.
    assert!(curl(&t.cli, "http://10.0.9.80:81/", "10.0.1.2", 5).is_some());
    assert_eq!(
        fw_counter(&t.fw, "tcp dport 81 "),
        0,
        ":81 crossed the firewall"
    );

    // 4. NAT with port translation 8000 → 8080 both ways; a dynamic port follows untranslated.
    assert!(
        curl(&t.cli, "http://10.0.9.81:8000/", "10.0.1.2", 5).is_some(),
        "translated port\n{}",
        logs(&t)
    );
    assert!(
        curl(&t.cli, "http://10.0.9.81:20005/", "10.0.1.2", 5).is_some(),
        "dynamic port"
    );

    // 5. ACL per service: 10.0.1.3 is denied on `app` but welcome on `web`.
    assert!(curl(&t.cli, "http://10.0.9.81:8000/", "10.0.1.3", 3).is_none());
    assert!(curl(&t.cli, "http://10.0.9.80/", "10.0.1.3", 5).is_some());

    // 6. A frame that claims to come back from the firewall (on fwb, for the web service) but
    //    from a MAC the firewall does not have is dropped and counted.
    let fwb_mac = t.rtr.mac("fwb").unwrap().replace(':', "");
    let spoofed = spoofed_frame(&fwb_mac);
    integration::inject_frames(&t.fw, "legb", &[spoofed.clone(), spoofed]).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let s = status(&t.socket).unwrap();
    assert_eq!(
        service(&s, "web")["drops"]["steering-unexpected-source"],
        2,
        "{}",
        s["steering"]
    );
    assert_eq!(
        integration::stage_of(&s, "steering").unwrap()["drops"]["steering-unexpected-source"],
        2
    );
    let web = service(&s, "web");
    assert!(web["forward_packets"].as_u64().unwrap() > 0);
    assert!(web["reverse_packets"].as_u64().unwrap() > 0);
    assert!(
        service(&s, "app")["drops"]["steering-acl-deny"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(service(&s, "app")["forward_packets"].as_u64().unwrap() > 0);
    // The deny rule names one client: its counter is that client's, and equals the drops.
    let acl = &service(&s, "app")["acl"];
    assert_eq!(acl.as_array().map(Vec::len), Some(1), "{acl}");
    assert_eq!(acl[0]["client"], "10.0.1.3", "{acl}");
    assert_eq!(acl[0]["action"], "deny", "{acl}");
    assert_eq!(
        acl[0]["packets"],
        service(&s, "app")["drops"]["steering-acl-deny"],
        "{acl}"
    );
    assert!(acl[0]["bytes"].as_u64().unwrap() >= 54, "{acl}");
    assert_eq!(service(&s, "web")["acl"], serde_json::json!([]));
    assert!(device(&s, "nat1")["packets"].as_u64().unwrap() > 0);
    let copies = device(&s, "ids")["copies"].as_u64().unwrap();
    assert!(copies > 0);

    // 7. The IDS got copies of the web service in both directions, and nothing else.
    std::thread::sleep(Duration::from_millis(500));
    let cap = t.lab.logs(&tcpdump);
    let pkts: Vec<&str> = cap.lines().filter(|l| l.contains(" IP ")).collect();
    assert!(!pkts.is_empty(), "IDS saw nothing:\n{cap}");
    for l in &pkts {
        assert!(
            l.contains("> 10.0.9.80.80:") || l.contains("IP 10.0.9.80.80 >"),
            "IDS saw a packet of another service: {l}"
        );
    }
    assert!(pkts.iter().any(|l| l.contains("> 10.0.9.80.80:")));
    assert!(pkts.iter().any(|l| l.contains("IP 10.0.9.80.80 >")));
    assert_eq!(pkts.len() as u64, copies, "copies counted vs captured");

    let text = std::process::Command::new(binary("swrouter"))
        .args(["status", "-s", &t.socket.to_string_lossy()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("Steering services") && text.contains("web1"),
        "{text}"
    );
}

/// The reload test's config: a UDP stream service through firewall `via` to the loopback server;
/// `extra` is appended (a bad service for the rejected reload).
fn stream_conf(t: &Topo, via: &str, extra: &str) -> String {
    format!(
        r#"[router]
management-socket = "{sock}"
log-level = "debug"
io-backend = "{backend}"

[[interface]]
name = "eth0"
address = "10.0.1.1/24"
[[interface]]
name = "fwa"
address = "10.0.2.1/24"
[[interface]]
name = "fwb"
address = "10.0.3.1/24"
[[interface]]
name = "s1"
address = "10.0.4.1/24"
[[interface]]
name = "fwc"
address = "10.0.7.1/24"
[[interface]]
name = "fwd"
address = "10.0.8.1/24"

[[steering.device]]
name = "fw"
mode = "transparent"
interfaces = ["fwa", "fwb"]
mac = "{fwb}"
out-mac = "{fwa}"

[[steering.device]]
name = "fw2"
mode = "transparent"
interfaces = ["fwc", "fwd"]
mac = "{fwd}"
out-mac = "{fwc}"

[[steering.device]]
name = "web1"
mode = "loopback"
interfaces = ["s1"]
mac = "{web1}"

[[steering.service]]
name = "stream"
address = "10.0.9.80"
protocol = "udp"
port = 5000
ingress = ["eth0"]
chain = [{{ device = "{via}" }}, {{ device = "web1" }}]
{extra}"#,
        sock = t.socket.display(),
        backend = io_backend(),
        fwa = t.rtr.mac("fwa").unwrap(),
        fwb = t.rtr.mac("fwb").unwrap(),
        fwc = t.rtr.mac("fwc").unwrap(),
        fwd = t.rtr.mac("fwd").unwrap(),
        web1 = t.web1.mac("eth0").unwrap(),
        extra = extra,
    )
}

/// Runs `swrouter reload`; (success, output).
fn reload(socket: &Path) -> (bool, String) {
    let out = std::process::Command::new(binary("swrouter"))
        .args(["reload", "-s", &socket.to_string_lossy()])
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Prints every datagram received on UDP 5000 (its "seq N" payload), one a line.
const RECEIVER: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.bind(('0.0.0.0', 5000))
print('ready', flush=True)
while True:
    d, _ = s.recvfrom(100)
    print(d.decode(), flush=True)
"#;

/// Sends argv[1] sequence-numbered datagrams to the service, one a millisecond.
const SENDER: &str = r#"
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(int(sys.argv[1])):
    s.sendto(b'seq %d' % i, ('10.0.9.80', 5000))
    time.sleep(0.001)
print('done', flush=True)
"#;

#[test]
fn reload_swaps_the_firewall_without_loss_and_bad_reload_keeps_tables() {
    let mut t = topo("srl");
    let fw2 = t.lab.add_ns("fw2").unwrap();
    t.lab.link(&t.rtr, "fwc", &fw2, "lega").unwrap();
    t.lab.link(&t.rtr, "fwd", &fw2, "legb").unwrap();
    let dir = t.lab.dir().to_path_buf();
    bridge_firewall(
        &fw2,
        &dir.join("fw2.nft"),
        "ip daddr 10.0.9.80 udp dport 5000 counter\n",
    );
    std::fs::write(&t.conf, stream_conf(&t, "fw", "")).unwrap();
    let router = t
        .lab
        .spawn(
            &t.rtr,
            &binary("swrouter").to_string_lossy(),
            &["-c", &t.conf.to_string_lossy()],
        )
        .unwrap();
    let start = Instant::now();
    while status(&t.socket).is_none() {
        assert!(start.elapsed() < Duration::from_secs(15), "no router");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rx = t
        .lab
        .spawn(&t.web1, "python3", &["-u", "-c", RECEIVER])
        .unwrap();
    assert!(t.lab.wait_for_log(&rx, "ready", Duration::from_secs(10)));
    const N: usize = 3000;
    let n = N.to_string();
    let tx = t
        .lab
        .spawn(&t.cli, "python3", &["-u", "-c", SENDER, &n])
        .unwrap();

    // Swap the firewall while the stream runs.
    std::thread::sleep(Duration::from_millis(1000));
    std::fs::write(&t.conf, stream_conf(&t, "fw2", "")).unwrap();
    let (ok, msg) = reload(&t.socket);
    assert!(ok, "good reload refused: {msg}\n{}", t.lab.logs(&router));
    assert!(msg.contains("steering tables replaced"), "{msg}");

    // A bad config (dynamic range over the stream's port) is refused with its position, and
    // the running tables stay (the stream keeps flowing through fw2).
    std::thread::sleep(Duration::from_millis(500));
    let bad_extra = "\n[[steering.service]]\nname = \"bad\"\naddress = \"10.0.9.80\"\nprotocol = \"udp\"\nport = 6000\ningress = [\"eth0\"]\nchain = [{ device = \"web1\" }]\ndynamic-ports = [\"4990-5010\"]\n";
    let bad = stream_conf(&t, "fw", bad_extra);
    let line = bad
        .lines()
        .position(|l| l.starts_with("dynamic-ports"))
        .unwrap()
        + 1;
    std::fs::write(&t.conf, &bad).unwrap();
    let (ok, msg) = reload(&t.socket);
    assert!(!ok, "bad reload accepted: {msg}");
    let want = format!("router.conf:{line}:18: dynamic port range 4990-5010 of service `bad` overlaps service port 5000 of service `stream`");
    assert!(msg.contains(&want), "{msg}\nwanted {want}");

    assert!(
        t.lab.wait_for_log(&tx, "done", Duration::from_secs(30)),
        "sender did not finish"
    );
    std::thread::sleep(Duration::from_millis(1000));
    let got: std::collections::BTreeSet<usize> = t
        .lab
        .logs(&rx)
        .lines()
        .filter_map(|l| l.strip_prefix("seq ")?.trim().parse().ok())
        .collect();
    let missing: Vec<usize> = (0..N).filter(|i| !got.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{} of {N} datagrams lost across the reload, first {:?}\nstatus: {}",
        missing.len(),
        &missing[..missing.len().min(10)],
        status(&t.socket).unwrap_or_default()["steering"]
    );
    let before = fw_counter(&t.fw, "udp dport 5000");
    let after = fw_counter(&fw2, "udp dport 5000");
    assert!(before > 0 && after > 0, "fw {before}, fw2 {after}");
    assert_eq!(
        before + after,
        N as u64,
        "each datagram crossed exactly one firewall"
    );
}

/// The failover test's config: web1 in a pool with web2 as its alternate, probed every 400 ms.
/// The alternate server: namespace `web2` on the router's `s3` (10.0.10.2, holding the service
/// address on `lo`, loopback mode) serving "server two"; returns it and the directory whose
/// page says "server one", for web1.
fn second_server(t: &mut Topo) -> (Ns, std::path::PathBuf) {
    let web2 = t.lab.add_ns("web2").unwrap();
    t.lab.link(&t.rtr, "s3", &web2, "eth0").unwrap();
    web2.add_addr("eth0", "10.0.10.2/24").unwrap();
    web2.add_addr("lo", "10.0.9.80/32").unwrap();
    web2.add_route("default", "10.0.10.1").unwrap();
    for (k, v) in [
        ("net.ipv4.conf.all.arp_announce", "2"),
        ("net.ipv4.conf.eth0.arp_announce", "2"),
        ("net.ipv4.conf.all.arp_ignore", "1"),
    ] {
        web2.sysctl(k, v).unwrap();
    }
    let dir = t.lab.dir().to_path_buf();
    let (one, two) = (dir.join("one"), dir.join("two"));
    for (d, body) in [(&one, "server one\n"), (&two, "server two\n")] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("index.html"), body).unwrap();
    }
    let _ = http(&mut t.lab, &web2, 80, "0.0.0.0", &two);
    (web2, one)
}

fn failover_conf(t: &Topo, web2: &Ns) -> String {
    format!(
        r#"[router]
management-socket = "{sock}"
log-level = "debug"
io-backend = "{backend}"

[[interface]]
name = "eth0"
address = "10.0.1.1/24"
[[interface]]
name = "s1"
address = "10.0.4.1/24"
[[interface]]
name = "s3"
address = "10.0.10.1/24"

[[steering.device]]
name = "web1"
mode = "loopback"
interfaces = ["s1"]
mac = "{web1}"
address = "10.0.4.2"

[[steering.device]]
name = "web2"
mode = "loopback"
interfaces = ["s3"]
mac = "{web2}"
address = "10.0.10.2"

[[steering.pool]]
name = "web"
members = ["web1"]
alternate = "web2"
restore = "manual"
probe-port = 80
probe-interval-ms = 400
probe-timeout-ms = 300
rise = 2
fall = 2

[[steering.service]]
name = "web"
address = "10.0.9.80"
port = 80
ingress = ["eth0"]
chain = [{{ pool = "web" }}]
"#,
        sock = t.socket.display(),
        backend = io_backend(),
        web1 = t.web1.mac("eth0").unwrap(),
        web2 = web2.mac("eth0").unwrap(),
    )
}

/// `curl` that retries refused connections (a dead server's RST) for a few seconds.
fn curl_retrying(cli: &Ns, url: &str) -> Option<String> {
    let out = cli
        .run(
            "curl",
            &[
                "-sS",
                "--max-time",
                "8",
                "--retry",
                "6",
                "--retry-connrefused",
                "--retry-delay",
                "1",
                url,
            ],
        )
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn device_health(socket: &Path, name: &str) -> String {
    let s = status(socket).unwrap_or_default();
    device(&s, name)["health"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn failover_to_the_alternate_while_curl_keeps_succeeding_and_manual_restore() {
    let mut t = topo("sfo");
    let (web2, one) = second_server(&mut t);
    let w1 = http(&mut t.lab, &t.web1, 80, "0.0.0.0", &one);
    let conf = failover_conf(&t, &web2).replace(
        "probe-interval-ms = 400\nprobe-timeout-ms = 300",
        "probe-interval-ms = 250\nprobe-timeout-ms = 200",
    );
    assert!(conf.contains("probe-interval-ms = 250"));
    let router = start_router_with(&mut t, &conf);
    let body = wait_http(&t.cli, "http://10.0.9.80/")
        .unwrap_or_else(|| panic!("no answer\n{}", t.lab.logs(&router)));
    assert_eq!(body, "server one\n");
    // Probes pass: web1 stays in service.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(device_health(&t.socket, "web1"), "in-service");

    // Kill the primary (SIGKILL; the clock starts at the kill): it leaves service within
    // fall × interval + timeout = 2 × 250 + 200 = 700 ms by the router's own transition time
    // (`changed_unix_ms`), plus one 50 ms health tick; the 1 s bound leaves the rest as margin
    // for netns scheduling. A poller reads that time from the status while curl keeps
    // succeeding throughout (retrying the refused connection meanwhile).
    let killed_ms = unix_ms_now();
    t.lab.kill(&w1).unwrap();
    let socket = t.socket.clone();
    let poller = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            let s = status(&socket).unwrap_or_default();
            if device(&s, "web1")["health"] == "out-of-service" {
                return device(&s, "web1")["changed_unix_ms"].as_u64();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    });
    let mut bodies = Vec::new();
    let curling = Instant::now();
    while curling.elapsed() < Duration::from_secs(3) {
        let b = curl_retrying(&t.cli, "http://10.0.9.80/")
            .unwrap_or_else(|| panic!("curl failed during failover\n{}", t.lab.logs(&router)));
        bodies.push(b);
        std::thread::sleep(Duration::from_millis(200));
    }
    let down_ms = poller.join().unwrap().unwrap_or_else(|| {
        panic!(
            "web1 never left service\n{}",
            status(&t.socket).unwrap_or_default()["steering"]
        )
    });
    let took = down_ms.saturating_sub(killed_ms);
    eprintln!("web1 out of service {took} ms after the kill");
    assert!(
        took <= 1000,
        "detection took {took} ms from the kill (bound 1000 ms)"
    );
    assert_eq!(bodies.last().map(String::as_str), Some("server two\n"));

    // web1 recovers, but the pool restores by hand: traffic stays on web2 until the command.
    let _w1b = http(&mut t.lab, &t.web1, 80, "0.0.0.0", &one);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(device_health(&t.socket, "web1"), "out-of-service");
    assert_eq!(
        curl_retrying(&t.cli, "http://10.0.9.80/").as_deref(),
        Some("server two\n")
    );
    // The command succeeds once web1 has passed `rise` probes again (the restarted server may
    // take a moment to listen); until then it is refused.
    let asked = Instant::now();
    loop {
        let out = std::process::Command::new(binary("swrouter"))
            .args([
                "steering",
                "restore",
                "web1",
                "-s",
                &t.socket.to_string_lossy(),
            ])
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            asked.elapsed() < Duration::from_secs(10),
            "restore refused: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(device_health(&t.socket, "web1"), "in-service");
    assert_eq!(
        curl_retrying(&t.cli, "http://10.0.9.80/").as_deref(),
        Some("server one\n")
    );
}

/// Passive check only (no probe): the primary silently drops SYNs (nft), the client's SYN and
/// its retransmissions reach it through the router, and after `passive-syns` of them within the
/// window the router takes it out of service; the client's next retransmission goes to the
/// alternate and curl succeeds there. While the primary answered, its SYN-ACKs cleared the count.
#[test]
fn passive_check_fails_over_a_server_that_stops_answering() {
    let mut t = topo("spa");
    let (web2, one) = second_server(&mut t);
    let _w1 = http(&mut t.lab, &t.web1, 80, "0.0.0.0", &one);
    let dir = t.lab.dir().to_path_buf();
    let active =
        "probe-port = 80\nprobe-interval-ms = 400\nprobe-timeout-ms = 300\nrise = 2\nfall = 2\n";
    assert!(failover_conf(&t, &web2).contains(active));
    let conf =
        failover_conf(&t, &web2).replace(active, "passive-syns = 2\npassive-window-ms = 2500\n");
    let router = start_router_with(&mut t, &conf);
    // Healthy: every fetch is answered by web1 (and its SYN-ACKs clear the SYN count).
    for _ in 0..3 {
        let body = wait_http(&t.cli, "http://10.0.9.80/")
            .unwrap_or_else(|| panic!("no answer\n{}", t.lab.logs(&router)));
        assert_eq!(body, "server one\n");
    }
    assert_eq!(device_health(&t.socket, "web1"), "in-service");

    // web1 goes silent: SYNs to port 80 vanish, no RST.
    let nft = dir.join("silent.nft");
    std::fs::write(
        &nft,
        "add table inet silent\n\
         add chain inet silent input { type filter hook input priority -10; }\n\
         add rule inet silent input tcp dport 80 tcp flags syn drop\n",
    )
    .unwrap();
    t.web1
        .run_ok("nft", &["-f", &nft.to_string_lossy()])
        .unwrap();
    let silenced = Instant::now();
    let body = curl_retrying(&t.cli, "http://10.0.9.80/").unwrap_or_else(|| {
        panic!(
            "curl failed after web1 went silent\n{}\n{}",
            status(&t.socket).unwrap_or_default()["steering"],
            t.lab.logs(&router)
        )
    });
    let took = silenced.elapsed();
    eprintln!("passive failover: curl answered by the alternate {took:?} after web1 went silent");
    assert_eq!(body, "server two\n", "the alternate answered");
    assert_eq!(device_health(&t.socket, "web1"), "out-of-service");
    // Two SYNs (the first and its retransmission a second later) take web1 out; the next
    // retransmission goes to web2: two to three seconds (2.05 s measured), under curl's patience.
    assert!(took < Duration::from_secs(7), "failover took {took:?}");
    let s = status(&t.socket).unwrap();
    assert_eq!(s["steering"]["passive_lost"], 0, "{}", s["steering"]);
}

/// A line-echo server on port 80 (a long-lived TCP service for the reset test).
const ECHO_SERVER: &str = r#"
import socket, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 80)); srv.listen(16); print("listening", flush=True)
def serve(c):
    with c:
        while True:
            d = c.recv(100)
            if not d: return
            c.sendall(d)
while True:
    c, _ = srv.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Keeps one connection to the service, echoing a line every 100 ms once `go` exists, and
/// prints how the connection ended and when (seconds after `go`).
const ECHO_CLIENT: &str = r#"
import os, socket, sys, time
go = sys.argv[1]
s = socket.create_connection(("10.0.9.80", 80), timeout=5)
s.sendall(b"ping\n"); assert s.recv(100) == b"ping\n"
print("connected", flush=True)
while not os.path.exists(go): time.sleep(0.02)
t0 = time.time()
try:
    while time.time() - t0 < 15:
        s.sendall(b"ping\n")
        s.recv(100)
        time.sleep(0.1)
    print("still-open", flush=True)
except ConnectionResetError:
    print("reset %.2f" % (time.time() - t0), flush=True)
except socket.timeout:
    print("timeout %.2f" % (time.time() - t0), flush=True)
"#;

/// `on-failure = "reset"`: when the primary stops answering (its probes fail), the client's
/// next segment of a flow that was on it is answered by the router with a TCP RST at once (the
/// silenced server cannot send one), instead of the flow hanging; new connections go to the
/// alternate, also during the reset window.
#[test]
fn reset_pool_answers_a_dead_devices_flow_with_rst() {
    let mut t = topo("srs");
    let (web2, _one) = second_server(&mut t);
    let echo = t
        .lab
        .spawn(&t.web1, "python3", &["-u", "-c", ECHO_SERVER])
        .unwrap();
    assert!(t
        .lab
        .wait_for_log(&echo, "listening", Duration::from_secs(10)));
    let move_pool = "restore = \"manual\"\n";
    let conf = failover_conf(&t, &web2);
    assert!(conf.contains(move_pool));
    let conf = conf.replace(
        move_pool,
        "restore = \"manual\"\non-failure = \"reset\"\nreset-window-ms = 6000\n",
    );
    let router = start_router_with(&mut t, &conf);
    let go = t.lab.dir().join("go");
    let client = t
        .lab
        .spawn(
            &t.cli,
            "python3",
            &["-u", "-c", ECHO_CLIENT, &go.to_string_lossy()],
        )
        .unwrap();
    assert!(
        t.lab
            .wait_for_log(&client, "connected", Duration::from_secs(10)),
        "client did not connect\n{}\n{}",
        t.lab.logs(&client),
        t.lab.logs(&router)
    );
    assert_eq!(device_health(&t.socket, "web1"), "in-service");

    // web1 goes silent: everything to port 80 vanishes (no RST from it), so its probes fail.
    let nft = t.lab.dir().join("silent.nft");
    std::fs::write(
        &nft,
        "add table inet silent\n\
         add chain inet silent input { type filter hook input priority -10; }\n\
         add rule inet silent input tcp dport 80 drop\n",
    )
    .unwrap();
    t.web1
        .run_ok("nft", &["-f", &nft.to_string_lossy()])
        .unwrap();
    std::fs::write(&go, "").unwrap();
    let ended = Instant::now();
    while !t.lab.logs(&client).contains("reset")
        && !t.lab.logs(&client).contains("timeout")
        && ended.elapsed() < Duration::from_secs(20)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = t.lab.logs(&client);
    let line = log
        .lines()
        .find(|l| l.starts_with("reset ") || l.starts_with("timeout ") || l == &"still-open")
        .unwrap_or_else(|| panic!("client: {log}\n{}", t.lab.logs(&router)));
    let secs: f64 = line
        .strip_prefix("reset ")
        .unwrap_or_else(|| {
            panic!(
                "the flow was not reset: {line}\n{}",
                status(&t.socket).unwrap_or_default()["steering"]
            )
        })
        .parse()
        .unwrap();
    eprintln!("reset pool: the client's flow was reset {secs:.2} s after web1 went silent");
    // Detection (2 failed probes, 400 ms apart, 300 ms timeout: ~1.5 s), then the client's next
    // retransmission, whose backoff doubles (0.2, 0.6, 1.4, 3.0 s…): 1.7–3.4 s measured.
    assert!(secs < 6.0, "reset after {secs} s");
    let s = status(&t.socket).unwrap();
    let resets = service(&s, "web")["drops"]["steering-reset"]
        .as_u64()
        .unwrap_or(0);
    assert!(resets > 0, "{}", s["steering"]);
    // Within the window a new connection works: its SYN goes to the alternate and the router
    // remembers it, so its later segments (which still hash to the dead web1) follow it
    // instead of being reset.
    assert_eq!(device_health(&t.socket, "web1"), "draining");
    assert_eq!(
        curl(&t.cli, "http://10.0.9.80/", "10.0.1.2", 3).as_deref(),
        Some("server two\n"),
        "a new connection during the reset window failed\n{}",
        status(&t.socket).unwrap_or_default()["steering"]
    );
    assert_eq!(
        device_health(&t.socket, "web1"),
        "draining",
        "the window ended before the check"
    );
    // After the reset window the dead device's flows move like in a move pool.
    let drained = Instant::now();
    while device_health(&t.socket, "web1") == "draining" {
        assert!(
            drained.elapsed() < Duration::from_secs(9),
            "web1 still draining 9 s after the reset (window 6 s)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(device_health(&t.socket, "web1"), "out-of-service");
    assert_eq!(
        curl_retrying(&t.cli, "http://10.0.9.80/").as_deref(),
        Some("server two\n")
    );
}

/// Issue 20: a pool of two healthy servers probed every 250 ms. A quiet period with no client
/// traffic takes nothing out of service (probes once went unanswered in turns and both devices
/// went down together); then a killed server alone goes down within fall × interval + timeout,
/// measured by the router's own transition time, and fetches succeed on the other member at once.
#[test]
fn idle_pool_stays_in_service_and_only_a_killed_member_goes_down() {
    let mut t = topo("sid");
    let (web2, one) = second_server(&mut t);
    let w1 = http(&mut t.lab, &t.web1, 80, "0.0.0.0", &one);
    let (interval_ms, timeout_ms, fall) = (250u64, 200u64, 2u64);
    let conf = failover_conf(&t, &web2)
        .replace(
            "members = [\"web1\"]\nalternate = \"web2\"\nrestore = \"manual\"",
            "members = [\"web1\", \"web2\"]\npolicy = \"flow-hash\"\non-failure = \"move\"",
        )
        .replace(
            "probe-interval-ms = 400\nprobe-timeout-ms = 300",
            &format!("probe-interval-ms = {interval_ms}\nprobe-timeout-ms = {timeout_ms}"),
        );
    assert!(conf.contains("on-failure = \"move\""), "{conf}");
    let router = start_router_with(&mut t, &conf);
    wait_http(&t.cli, "http://10.0.9.80/")
        .unwrap_or_else(|| panic!("no answer\n{}", t.lab.logs(&router)));
    let mut bodies = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let b = curl(&t.cli, "http://10.0.9.80/", "10.0.1.2", 3)
            .unwrap_or_else(|| panic!("fetch failed\n{}", t.lab.logs(&router)));
        bodies.insert(b);
    }
    assert_eq!(bodies.len(), 2, "flows reached both members: {bodies:?}");

    // Fifteen quiet seconds: probes only.
    std::thread::sleep(Duration::from_secs(15));
    let s = status(&t.socket).unwrap();
    for name in ["web1", "web2"] {
        let d = device(&s, name);
        assert_eq!(d["health"], "in-service", "{d}");
        assert_eq!(d["downs"], 0, "{name} went down while idle: {d}");
        assert!(
            d["probe_ok"].as_u64().unwrap() >= 15_000 / interval_ms - 5,
            "{name} probes were not answered: {d}"
        );
        assert_eq!(d["probe_refused"], 0, "{d}");
    }
    let probes = &s["probes"];
    assert!(
        probes["answered"].as_u64().unwrap() >= 2 * (15_000 / interval_ms - 5),
        "{probes}"
    );
    assert!(
        probes["sent"].as_u64() >= probes["answered"].as_u64(),
        "{probes}"
    );
    assert_eq!(probes["steering_outbox_full"], 0, "{probes}");
    assert!(
        !t.lab.logs(&router).contains("steering device down"),
        "{}",
        t.lab.logs(&router)
    );
    for _ in 0..20 {
        assert!(
            curl(&t.cli, "http://10.0.9.80/", "10.0.1.2", 3).is_some(),
            "a fetch after the quiet period failed\n{}",
            t.lab.logs(&router)
        );
    }

    // web1 dies: it alone goes down, within fall × interval + timeout of the kill (plus one
    // 50 ms health tick, the driver's timer resolution).
    let killed_ms = unix_ms_now();
    t.lab.kill(&w1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let down_ms = loop {
        let s = status(&t.socket).unwrap();
        if device(&s, "web1")["health"] == "out-of-service" {
            break device(&s, "web1")["changed_unix_ms"].as_u64().unwrap();
        }
        assert!(Instant::now() < deadline, "web1 never left service: {s}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = down_ms.saturating_sub(killed_ms);
    let bound = fall * interval_ms + timeout_ms + 50;
    eprintln!("web1 out of service {took} ms after the kill (bound {bound} ms)");
    // The stated bound is 1 s from the death; this configuration's own bound is tighter.
    assert!(bound <= 1000);
    assert!(took <= bound, "detection took {took} ms (bound {bound} ms)");
    for _ in 0..10 {
        assert_eq!(
            curl(&t.cli, "http://10.0.9.80/", "10.0.1.2", 3).as_deref(),
            Some("server two\n"),
            "a fetch right after web1 went down failed\n{}",
            t.lab.logs(&router)
        );
    }
    let s = status(&t.socket).unwrap();
    assert_eq!(device(&s, "web2")["downs"], 0, "{}", device(&s, "web2"));
    assert_eq!(device(&s, "web2")["health"], "in-service");
    assert_eq!(device(&s, "web1")["downs"], 1, "{}", device(&s, "web1"));
}
