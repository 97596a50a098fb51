//! End to end: source NAT with VID dispatch (issue 14) on the release `swrouter`, 2 workers.
//!
//! client (10.0.1.2) — (eth0 10.0.1.1) swrouter (eth1 192.0.2.1, NAT outside) — (192.0.2.254)
//! mid, a Linux router with no route back to 10.0.1.0/24 — (198.51.100.1) … server
//! (198.51.100.2). Only translated traffic can come back; the server sees the pool address.
#![allow(clippy::unwrap_used, missing_docs)]

use integration::{binary, io_backend, require_root, stage_of};
use netlab::{Lab, Ns, ProcHandle};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const CLIENT: &str = "10.0.1.2";
const POOL: &str = "192.0.2.1";
const MID_IN: &str = "192.0.2.254";
const SERVER: &str = "198.51.100.2";

struct NatLab {
    lab: Lab,
    cli: Ns,
    rtr: Ns,
    srv: Ns,
    conf_path: PathBuf,
    socket: PathBuf,
    router: Option<ProcHandle>,
}

impl NatLab {
    /// Builds the topology and writes the config; `nat` is the `[nat]` section's keys.
    fn new(tag: &str, workers: usize, nat: &str) -> NatLab {
        require_root();
        let mut lab = Lab::new(tag).unwrap();
        let cli = lab.add_ns("cli").unwrap();
        let rtr = lab.add_ns("rtr").unwrap();
        let mid = lab.add_ns("mid").unwrap();
        let srv = lab.add_ns("srv").unwrap();
        lab.link(&cli, "eth0", &rtr, "eth0").unwrap();
        lab.link(&rtr, "eth1", &mid, "eth0").unwrap();
        lab.link(&mid, "eth1", &srv, "eth0").unwrap();
        cli.add_addr("eth0", "10.0.1.2/24").unwrap();
        cli.add_route("default", "10.0.1.1").unwrap();
        mid.add_addr("eth0", "192.0.2.254/24").unwrap();
        mid.add_addr("eth1", "198.51.100.1/24").unwrap();
        mid.sysctl("net.ipv4.ip_forward", "1").unwrap();
        srv.add_addr("eth0", "198.51.100.2/24").unwrap();
        srv.add_route("default", "198.51.100.1").unwrap();
        let socket = lab.dir().join("swrouter.sock");
        let conf_path = lab.dir().join("router.conf");
        let conf = format!(
            "[router]\nworkers = {workers}\nmanagement-socket = \"{}\"\nlog-level = \"debug\"\nio-backend = \"{}\"\n\n[[interface]]\nname = \"eth0\"\naddress = \"10.0.1.1/24\"\n\n[[interface]]\nname = \"eth1\"\naddress = \"192.0.2.1/24\"\n\n[[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"{MID_IN}\"\n\n[nat]\n{nat}\n\n[[nat.rule]]\ninside = [\"10.0.1.0/24\"]\noutside = \"eth1\"\n",
            socket.display(),
            io_backend()
        );
        std::fs::write(&conf_path, conf).unwrap();
        NatLab {
            lab,
            cli,
            rtr,
            srv,
            conf_path,
            socket,
            router: None,
        }
    }

    fn start(&mut self) {
        let exe = binary("swrouter");
        let h = self
            .lab
            .spawn(
                &self.rtr,
                "env",
                &[
                    "SWROUTER_TEST_HOOKS=1",
                    &exe.to_string_lossy(),
                    "-c",
                    &self.conf_path.to_string_lossy(),
                ],
            )
            .unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(15) {
            if self.socket.exists() && self.status_opt().is_some() {
                self.router = Some(h);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("swrouter did not come up:\n{}", self.lab.logs(&h));
    }

    fn swrouter(&self, args: &[&str]) -> (bool, String) {
        let mut a: Vec<&str> = args.to_vec();
        let s = self.socket.to_string_lossy().to_string();
        a.extend_from_slice(&["-s", &s]);
        let out = std::process::Command::new(binary("swrouter"))
            .args(&a)
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

    fn status_opt(&self) -> Option<serde_json::Value> {
        let (ok, out) = self.swrouter(&["status", "--json"]);
        ok.then(|| serde_json::from_str(&out).ok()).flatten()
    }

    fn status(&self) -> serde_json::Value {
        self.status_opt().expect("status")
    }

    fn log(&self) -> String {
        self.router
            .as_ref()
            .map(|h| self.lab.logs(h))
            .unwrap_or_default()
    }

    fn sessions(&self) -> Vec<serde_json::Value> {
        let (ok, out) = self.swrouter(&["nat", "sessions", "--json"]);
        assert!(ok, "nat sessions: {out}");
        serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
    }

    /// Serves `files` (name, bytes) over HTTP on the server, port 8080; returns its log path.
    fn web(&mut self, files: &[(&str, &[u8])]) -> PathBuf {
        let www = self.lab.dir().join("www");
        std::fs::create_dir_all(&www).unwrap();
        for (n, b) in files {
            std::fs::write(www.join(n), b).unwrap();
        }
        let www_s = www.to_string_lossy().to_string();
        let srv = self.srv.clone();
        // http.server's listen backlog is 5: 200 parallel connections would mostly wait in
        // SYN retransmission; a threading server with a real backlog instead.
        let script = format!(
            "import http.server,functools\nclass S(http.server.ThreadingHTTPServer):\n    request_queue_size=1024\n    daemon_threads=True\nh=functools.partial(http.server.SimpleHTTPRequestHandler,directory={www_s:?})\nS(({SERVER:?},8080),h).serve_forever()\n"
        );
        let h = self.lab.spawn(&srv, "python3", &["-c", &script]).unwrap();
        let log = self.lab.log_path(&h).unwrap().to_path_buf();
        // Until the server answers (through the NAT).
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            let out = self
                .cli
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
                .unwrap();
            if out.status.success() {
                return log;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "web server not reachable through NAT; router log:\n{}",
            self.log()
        );
    }

    /// Downloads `n` copies of /name in parallel (one curl, `--parallel`), `extra` curl flags;
    /// returns the files' contents.
    fn parallel_downloads(&self, name: &str, n: usize, extra: &[&str]) -> Vec<Vec<u8>> {
        let dir = self.lab.dir().join(format!("got-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut args: Vec<String> = vec![
            "-sS".into(),
            "--fail".into(),
            "--max-time".into(),
            "60".into(),
            "--parallel".into(),
            "--parallel-max".into(),
            n.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        for i in 0..n {
            args.push("-o".into());
            args.push(dir.join(format!("{i}")).to_string_lossy().into_owned());
            args.push(format!("http://{SERVER}:8080/{name}?copy={i}"));
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.cli.run("curl", &a).unwrap();
        assert!(
            out.status.success(),
            "curl failed: {}\nrouter status:\n{}\nrouter log tail:\n{}\nserver TCP:\n{}\nclient TCP:\n{}",
            tail(&String::from_utf8_lossy(&out.stderr), 12),
            self.swrouter(&["status"]).1,
            tail(&self.log(), 40),
            self.srv.run_ok("nstat", &["-az", "TcpExtListen*", "TcpRetransSegs", "TcpInErrs", "TcpInCsumErrors", "TcpExtTCPTimeouts"]).unwrap_or_default(),
            self.cli.run_ok("nstat", &["-az", "TcpRetransSegs", "TcpInErrs", "TcpInCsumErrors", "TcpExtTCPTimeouts"]).unwrap_or_default(),
        );
        (0..n)
            .map(|i| std::fs::read(dir.join(format!("{i}"))).unwrap_or_default())
            .collect()
    }
}

impl Drop for NatLab {
    fn drop(&mut self) {
        self.router.take();
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn blob(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect()
}

/// A UDP echo server on the server, port 7, answering each datagram with "echo:" + it.
fn udp_echo(l: &mut NatLab) {
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{SERVER}',7))\nwhile True:\n    d,a=s.recvfrom(2048)\n    s.sendto(b'echo:'+d+b' from '+a[0].encode(),a)\n"
    );
    let srv = l.srv.clone();
    l.lab.spawn(&srv, "python3", &["-c", &script]).unwrap();
}

/// From the client: one UDP request per source port in `ports` (connected sockets); returns
/// per port the answer or the error.
fn udp_requests(l: &NatLab, ports: std::ops::Range<u16>) -> Vec<Result<String, String>> {
    let script = format!(
        "import socket,sys\nfor p in range({},{}):\n    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n    s.bind(('{CLIENT}',p))\n    s.connect(('{SERVER}',7))\n    s.settimeout(2)\n    ok=None\n    for t in range(3):\n        try:\n            s.send(b'hi %d'%p)\n            ok='OK '+s.recv(2048).decode()\n            break\n        except OSError as e:\n            ok='ERR %s'%(e.errno,)\n            if e.errno is not None: break\n    print(ok, flush=True)\n",
        ports.start, ports.end
    );
    let out = l.cli.run("python3", &["-c", &script]).unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|x| match x.strip_prefix("OK ") {
            Some(a) => Ok(a.to_string()),
            None => Err(x.to_string()),
        })
        .collect()
}

fn nat_status(s: &serde_json::Value) -> &serde_json::Value {
    &s["nat"]
}

fn sum_workers(s: &serde_json::Value, key: &str) -> u64 {
    nat_status(s)["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w[key].as_u64().unwrap())
        .sum()
}

/// Waits until statistics (published every 100 ms) settle.
fn settle() {
    std::thread::sleep(Duration::from_millis(400));
}

#[test]
fn nat_translates_tcp_udp_ping_and_traceroute_and_reload_keeps_sessions() {
    let mut l = NatLab::new("nat", 2, "");
    l.start();
    // Ping through the NAT (ICMP echo identifiers translated).
    let out = l
        .cli
        .run("ping", &["-c", "3", "-i", "0.2", "-W", "2", SERVER])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        text.matches(&format!("bytes from {SERVER}")).count(),
        3,
        "{text}\n{}",
        tail(&l.log(), 30)
    );
    // The router itself still answers on its outside (pool) address.
    let out = l.srv.run("ping", &["-c", "1", "-W", "2", POOL]).unwrap();
    assert!(
        out.status.success(),
        "ping to the pool address from outside"
    );

    // 200 parallel TCP downloads, byte-compared.
    let data = blob(64 << 10, 7);
    let weblog = l.web(&[("blob", &data)]);
    let got = l.parallel_downloads("blob", 200, &[]);
    let bad = got.iter().filter(|g| **g != data).count();
    assert_eq!(bad, 0, "{bad} of 200 downloads differ");
    // The server saw only the pool address.
    let served = std::fs::read_to_string(&weblog).unwrap();
    assert!(served.contains(POOL), "server log: {}", tail(&served, 5));
    assert!(
        !served.contains(CLIENT),
        "the inside address leaked: {}",
        tail(&served, 5)
    );

    // UDP request/response; the server sees the pool address.
    udp_echo(&mut l);
    std::thread::sleep(Duration::from_millis(300));
    let answers = udp_requests(&l, 40000..40005);
    assert_eq!(answers.len(), 5);
    for a in &answers {
        let a = a
            .as_ref()
            .unwrap_or_else(|e| panic!("UDP: {e}\n{}", tail(&l.log(), 30)));
        assert!(a.ends_with(&format!("from {POOL}")), "{a}");
    }

    // Traceroute through the NAT shows the hops: the router, mid, the server (ICMP time
    // exceeded from mid is translated back with its quoted header).
    let out = l
        .cli
        .run(
            "traceroute",
            &["-n", "-q", "1", "-w", "2", "-m", "5", SERVER],
        )
        .unwrap();
    let tr = String::from_utf8_lossy(&out.stdout).to_string();
    let hops: Vec<&str> = tr.lines().skip(1).collect();
    assert!(hops.len() >= 3, "{tr}");
    assert!(hops[0].contains("10.0.1.1"), "{tr}");
    assert!(hops[1].contains(MID_IN), "{tr}");
    assert!(hops[2].contains(SERVER), "{tr}");

    settle();
    let s = l.status();
    let n = nat_status(&s);
    assert_eq!(sum_workers(&s, "misdelivered"), 0, "{n}");
    let setups = n["switch"]["setups"].as_u64().unwrap();
    let requested = sum_workers(&s, "setup_requests");
    assert_eq!(n["switch"]["not_setup"].as_u64().unwrap(), 0, "{n}");
    // Every set-up request the workers sent was a set-up the switch processor handled
    // (retransmitted SYNs counted apart).
    assert_eq!(
        setups + n["switch"]["already_installed"].as_u64().unwrap(),
        requested,
        "{n}"
    );
    // 200 TCP + 5 UDP + ping + traceroute probes at least; both workers got sessions.
    assert!(setups >= 206, "{n}");
    for w in n["workers"].as_array().unwrap() {
        assert!(w["created"].as_u64().unwrap() > 20, "{n}");
        assert!(w["home_vid"].is_u64(), "{n}");
    }
    assert!(
        sum_workers(&s, "icmp_errors") >= 1,
        "traceroute's errors: {n}"
    );
    // The pipeline counted no NAT drop of a legitimate packet.
    for (stage, reason) in [
        ("nat-out", "nat-misdelivered"),
        ("nat-in", "nat-misdelivered"),
    ] {
        assert_eq!(
            stage_of(&s, stage).unwrap()["drops"][reason]
                .as_u64()
                .unwrap_or(0),
            0
        );
    }

    // Sessions listing.
    let rows = l.sessions();
    assert!(rows.len() >= 200, "{}", rows.len());
    let udp = rows
        .iter()
        .find(|r| r["proto"] == "udp" && r["inside"] == format!("{CLIENT}:40000"))
        .expect("UDP session listed");
    assert!(udp["outside"].as_str().unwrap().starts_with(POOL), "{udp}");
    assert_eq!(udp["remote"], format!("{SERVER}:7"));
    let (ok, text) = l.swrouter(&["nat", "sessions"]);
    assert!(
        ok && text.contains("sessions") && text.contains("inside 10.0.1.2:40000"),
        "{text}"
    );
    let (ok, text) = l.swrouter(&["status"]);
    assert!(
        ok && text.contains("NAT  pool 192.0.2.1") && text.contains("switch processor: setups"),
        "{text}"
    );

    // A reload that changes an unrelated route keeps every session, and the UDP flows keep
    // their outside ports.
    let before: Vec<String> = rows
        .iter()
        .filter(|r| r["proto"] == "udp")
        .map(|r| format!("{} {}", r["inside"], r["outside"]))
        .collect();
    let mut conf = std::fs::read_to_string(&l.conf_path).unwrap();
    conf.push_str("\n[[route]]\nprefix = \"203.0.113.0/24\"\nvia = \"192.0.2.254\"\n");
    std::fs::write(&l.conf_path, conf).unwrap();
    let (ok, text) = l.swrouter(&["reload"]);
    assert!(ok, "reload: {text}");
    let after = l.sessions();
    assert!(
        after.len() >= rows.len() - 5,
        "{} → {}",
        rows.len(),
        after.len()
    );
    for a in udp_requests(&l, 40000..40005) {
        assert!(a.is_ok(), "{a:?}");
    }
    let after_udp: Vec<String> = l
        .sessions()
        .iter()
        .filter(|r| r["proto"] == "udp")
        .map(|r| format!("{} {}", r["inside"], r["outside"]))
        .collect();
    for b in &before {
        assert!(after_udp.contains(b), "mapping {b} changed: {after_udp:?}");
    }
    // Changing [nat] itself is refused and the running config stays.
    let conf = std::fs::read_to_string(&l.conf_path)
        .unwrap()
        .replace("[nat]\n", "[nat]\nudp-timeout = 30\n");
    std::fs::write(&l.conf_path, conf).unwrap();
    let (ok, text) = l.swrouter(&["reload"]);
    assert!(
        !ok && text.contains("[nat] changes need a restart"),
        "{text}"
    );
}

#[test]
fn port_exhaustion_is_counted_and_answered_with_admin_prohibited() {
    // One worker, 32 ports: two VIDs of 16. The home block holds 16 mappings; the set-up that
    // finds it full is refused, the worker asks for the free VID and allocates from it, and
    // once both blocks are full every further flow is refused.
    let mut l = NatLab::new("natx", 1, "port-range = \"40000-40031\"\nudp-timeout = 2");
    l.start();
    udp_echo(&mut l);
    std::thread::sleep(Duration::from_millis(500));
    let answers = udp_requests(&l, 41000..41040);
    let ok = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(ok, 32, "{answers:?}\n{}", tail(&l.log(), 20));
    assert!(answers[..16].iter().all(|a| a.is_ok()), "{answers:?}");
    // The refusal that asked for the second block (one, or a few if the grant is slow), the
    // second block's 16, then refusals only: 32 answered and 8 refused whatever the timing.
    assert!(answers[16].is_err() && answers[39].is_err(), "{answers:?}");
    // The others got ICMP administratively prohibited: EHOSTUNREACH (113) on Linux.
    for a in answers.iter().filter(|a| a.is_err()) {
        assert_eq!(a.as_ref().unwrap_err(), "ERR 113", "{answers:?}");
    }
    settle();
    let s = l.status();
    assert_eq!(sum_workers(&s, "port_exhausted"), 8, "{}", nat_status(&s));
    assert_eq!(
        stage_of(&s, "nat-out").unwrap()["drops"]["nat-port-exhausted"]
            .as_u64()
            .unwrap(),
        8
    );
    assert_eq!(sum_workers(&s, "extra_vids"), 1, "{}", nat_status(&s));
    assert_eq!(nat_status(&s)["switch"]["extra_vids"], 1);
    let outside: Vec<u64> = l
        .sessions()
        .iter()
        .map(|x| {
            x["outside"]
                .as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(outside.len(), 32);
    assert!(
        outside.iter().all(|p| (40000..40032).contains(p)),
        "{outside:?}"
    );
    // A quiet period with no traffic at all: the idle sessions expire (2 s UDP timeout), their
    // ports come back and the extra VID is released; 16 new flows are answered again.
    std::thread::sleep(Duration::from_secs(4));
    assert!(l.sessions().is_empty(), "{:?}", l.sessions());
    settle();
    let s = l.status();
    assert_eq!(sum_workers(&s, "expired"), 32);
    assert_eq!(sum_workers(&s, "extra_vids"), 0, "{}", nat_status(&s));
    let again = udp_requests(&l, 42000..42016);
    assert!(again.iter().all(|a| a.is_ok()), "{again:?}");
}

#[test]
fn killing_a_worker_mid_transfer_loses_no_session() {
    worker_dies_mid_transfer("natk", false);
}

#[test]
fn a_stalled_worker_is_failed_over_by_the_watchdog_without_losing_a_session() {
    // The worker stops looping (no heartbeat); only the switch processor's watchdog notices.
    worker_dies_mid_transfer("nats", true);
}

/// 16 NAT downloads; one worker panics (or stalls) mid-transfer; none breaks, its VID moves to
/// the survivor, and it comes back with a VID of its own.
fn worker_dies_mid_transfer(prefix: &str, stall: bool) {
    let mut l = NatLab::new(prefix, 2, "");
    l.start();
    let data = blob(6 << 20, 3);
    l.web(&[("big", &data)]);
    settle();
    let before = l.status();
    let victim = 1u64;
    let victim_vid = nat_status(&before)["workers"][victim as usize]["home_vid"]
        .as_u64()
        .unwrap();
    // 16 downloads of 6 MiB at 2 MiB/s each: about 3 s; the worker dies after 1 s.
    let killer = {
        let sock = l.socket.to_string_lossy().to_string();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1000));
            let mut args = vec!["nat".to_string(), "kill-worker".into(), victim.to_string()];
            if stall {
                args.push("--stall".into());
            }
            args.extend(["-s".to_string(), sock]);
            let out = std::process::Command::new(binary("swrouter"))
                .args(&args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).to_string()
        })
    };
    let got = l.parallel_downloads("big", 16, &["--limit-rate", "2M"]);
    let said = killer.join().unwrap();
    let want = if stall {
        "stall requested"
    } else {
        "panic requested"
    };
    assert!(said.contains(want), "{said}");
    if stall {
        // The watchdog's heartbeat check failed it over, not the worker itself.
        assert!(l.log().contains("stalled"), "{}", tail(&l.log(), 40));
    }
    let bad = got.iter().filter(|g| **g != data).count();
    assert_eq!(
        bad,
        0,
        "{bad} of 16 transfers broke\n{}",
        tail(&l.log(), 40)
    );
    settle();
    let s = l.status();
    let n = nat_status(&s);
    assert!(n["switch"]["failovers"].as_u64().unwrap() >= 1, "{n}");
    assert_eq!(n["switch"]["lost_vids"].as_u64().unwrap(), 0, "{n}");
    assert!(
        sum_workers(&s, "adopted") >= 1,
        "the survivor adopted sessions: {n}"
    );
    // The victim's VID is now the survivor's.
    let row = n["switch"]["vids"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["vid"].as_u64() == Some(victim_vid))
        .unwrap_or_else(|| panic!("vid {victim_vid}: {n}"));
    assert_eq!(row["owner"].as_u64(), Some(0), "{n}");
    assert_eq!(sum_workers(&s, "misdelivered"), 0, "{n}");
    // The victim came back with a VID of its own and backs worker 0 up.
    let t = Instant::now();
    loop {
        let s = l.status();
        let n = nat_status(&s);
        let back = n["switch"]["restarts"].as_u64().unwrap() >= 1
            && n["switch"]["operational"][victim as usize] == true;
        if back {
            assert!(n["workers"][victim as usize]["home_vid"].is_u64(), "{n}");
            let backs_up =
                n["switch"]["vids"].as_array().unwrap().iter().any(|v| {
                    v["owner"].as_u64() == Some(0) && v["backup"].as_u64() == Some(victim)
                });
            assert!(backs_up, "{n}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no restart: {n}\n{}",
            tail(&l.log(), 30)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // And new sessions still work on both.
    let got = l.parallel_downloads("big", 4, &[]);
    assert!(got.iter().all(|g| *g == data));
    assert!(
        l.log().contains("NAT: worker failed"),
        "{}",
        tail(&l.log(), 30)
    );
}

/// Two inside hosts (argv[1], argv[2]) take turns: each sends ESP with its own SPI (0x1000,
/// 0x1001) to the peer and waits for the answer on a socket bound to its own address;
/// prints `host reply-spi seq from` per answer.
const ESP_HOSTS: &str = r#"
import socket, struct, sys
n = int(sys.argv[3])
hosts = []
for i, a in enumerate(sys.argv[1:3]):
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
    s.bind((a, 0))
    s.settimeout(1.0)
    hosts.append((a, s, 0x1000 + i))
for seq in range(n):
    for a, s, spi in hosts:
        s.sendto(struct.pack('!II', spi, seq) + b'esp payload %d' % seq, ('198.51.100.2', 0))
        try:
            d, (src, _) = s.recvfrom(4096)
            esp = d[(d[0] & 15) * 4:]
            rspi, rseq = struct.unpack('!II', esp[:8])
            print('%s %#x %d %s' % (a, rspi, rseq, src), flush=True)
        except socket.timeout:
            print('%s timeout %d' % (a, seq), flush=True)
"#;

#[test]
fn esp_is_translated_by_spi_and_two_hosts_behind_one_pool_address_get_their_own_answers() {
    let mut l = NatLab::new("natesp", 2, "");
    l.cli.add_addr("eth0", "10.0.1.3/24").unwrap();
    l.start();
    let srv = l.srv.clone();
    let peer = l
        .lab
        .spawn(&srv, "python3", &["-u", "-c", integration::ESP_PEER])
        .unwrap();
    assert!(l.lab.wait_for_log(&peer, "ready", Duration::from_secs(10)));
    const N: usize = 20;
    let out = l
        .cli
        .run(
            "python3",
            &["-u", "-c", ESP_HOSTS, CLIENT, "10.0.1.3", &N.to_string()],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    // Each host got every answer, with the SPI the peer chose for it, from the peer.
    for (host, spi) in [(CLIENT, "0x2000"), ("10.0.1.3", "0x2001")] {
        for seq in 0..N {
            let want = format!("{host} {spi} {seq} {SERVER}");
            assert!(
                text.lines().any(|x| x == want),
                "missing `{want}`\nhosts:\n{text}\npeer:\n{}\nrouter status:\n{}\nlog:\n{}",
                l.lab.logs(&peer),
                l.swrouter(&["status"]).1,
                tail(&l.log(), 30)
            );
        }
    }
    assert!(!text.contains("timeout"), "{text}");
    // The peer saw both hosts as the pool address, each with its own SPI.
    let seen = l.lab.logs(&peer);
    assert_eq!(
        seen.lines()
            .filter(|x| x.starts_with(&format!("{POOL} 0x1000 ")))
            .count(),
        N,
        "{seen}"
    );
    assert_eq!(
        seen.lines()
            .filter(|x| x.starts_with(&format!("{POOL} 0x1001 ")))
            .count(),
        N,
        "{seen}"
    );
    assert!(
        seen.lines().all(|x| x.starts_with(POOL) || x == "ready"),
        "an untranslated source reached the peer:\n{seen}"
    );
    // Two ESP sessions, their inbound SPIs learnt.
    let esp: Vec<serde_json::Value> = l
        .sessions()
        .into_iter()
        .filter(|r| r["proto"] == "esp")
        .collect();
    assert_eq!(esp.len(), 2, "{esp:?}");
    for (host, out_spi, in_spi) in [(CLIENT, 0x1000, 0x2000), ("10.0.1.3", 0x1001, 0x2001)] {
        let r = esp
            .iter()
            .find(|r| r["inside"] == host)
            .unwrap_or_else(|| panic!("no ESP session of {host}: {esp:?}"));
        assert_eq!(r["outside"], POOL, "{r}");
        assert_eq!(r["remote"], SERVER, "{r}");
        assert_eq!(r["spi_out"], out_spi, "{r}");
        assert_eq!(r["spi_in"], in_spi, "{r}");
    }
    // An ESP packet from the peer with an SPI nobody negotiated, and nothing pending, is
    // dropped and counted (filtering).
    let stray = format!(
        "import socket,struct\ns=socket.socket(socket.AF_INET,socket.SOCK_RAW,50)\ns.sendto(struct.pack('!II',0x9999,1)+b'stray',('{POOL}',0))\n"
    );
    assert!(l
        .srv
        .run("python3", &["-c", &stray])
        .unwrap()
        .status
        .success());
    settle();
    let s = l.status();
    let esp_status = &nat_status(&s)["esp"];
    assert_eq!(esp_status["sessions"], 2, "{esp_status}");
    assert_eq!(esp_status["created"], 2, "{esp_status}");
    assert_eq!(esp_status["learnt"], 2, "{esp_status}");
    assert_eq!(esp_status["no_session"], 1, "{esp_status}");
    assert_eq!(esp_status["out_packets"], 2 * N as u64, "{esp_status}");
    assert_eq!(esp_status["in_packets"], 2 * N as u64, "{esp_status}");
    let nat_in = stage_of(&s, "nat-in").unwrap();
    assert_eq!(nat_in["drops"]["nat-esp-no-session"], 1, "{nat_in}");
    let (ok, text) = l.swrouter(&["nat", "sessions"]);
    assert!(ok && text.contains("spi-in 0x00002001"), "{text}");
}
