//! WCCP redirection end to end through real Squid: swcache joins swrouter for service 0 and
//! terminates the router's GRE into a TUN device, where nftables hands the client's HTTP to
//! Debian's Squid as an intercepting proxy; the reply carries Squid's `Via:` header.
//!
//! ```text
//! client 10.0.1.2 ── eth0 10.0.1.1 [swrouter, wccp-redirect-in = [0]] eth1 10.0.2.1 ── server 10.0.2.2
//!                                            eth2 10.0.3.1
//!                                              │
//!                         cache 10.0.3.2 (swcache + wccp0 TUN + nft dnat → Squid :3129)
//! ```
#![allow(clippy::unwrap_used, missing_docs)]

use integration::{binary, io_backend, require_root, stage_of};
use netlab::squid::Squid;
use netlab::{Lab, ProcHandle};
use std::path::Path;
use std::time::{Duration, Instant};

fn squid_conf(run: &Path) -> String {
    format!(
        "pid_filename {run}/squid.pid\ncache_log {run}/cache.log\naccess_log {run}/access.log\ncache_store_log none\ncoredump_dir {run}\ncache_mem 8 MB\nshutdown_lifetime 1 seconds\nhttp_port 10.0.3.2:3128\nhttp_port 3129 intercept\nacl lab src 10.0.0.0/16\nhttp_access allow lab\nhttp_access deny all\ndebug_options ALL,1\n",
        run = run.display()
    )
}

fn router_conf(socket: &Path) -> String {
    format!(
        "[router]\nmanagement-socket = \"{}\"\nlog-level = \"debug\"\nio-backend = \"{}\"\n\n\
         [[interface]]\nname = \"eth0\"\naddress = \"10.0.1.1/24\"\nwccp-redirect-in = [0]\n\n\
         [[interface]]\nname = \"eth1\"\naddress = \"10.0.2.1/24\"\n\n\
         [[interface]]\nname = \"eth2\"\naddress = \"10.0.3.1/24\"\n\n\
         [[wccp.service]]\nid = 0\n",
        socket.display(),
        io_backend()
    )
}

/// `swrouter status --json`, parsed (None while it does not answer).
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

/// Everything the processes logged, for a failure message.
fn logs(lab: &Lab, procs: &[(&str, &ProcHandle)], run: &Path) -> String {
    let mut s = String::new();
    for (name, h) in procs {
        s.push_str(&format!("\n===== {name} =====\n{}", lab.logs(h)));
    }
    for f in ["cache.log", "access.log"] {
        let text = std::fs::read_to_string(run.join(f)).unwrap_or_default();
        s.push_str(&format!("\n===== squid {f} =====\n{text}"));
    }
    s
}

#[test]
fn client_http_is_redirected_through_swcache_to_squid() {
    require_root();
    let mut lab = Lab::new("wrd").unwrap();
    let cli = lab.add_ns("cli").unwrap();
    let rtr = lab.add_ns("rtr").unwrap();
    let srv = lab.add_ns("srv").unwrap();
    let cache = lab.add_ns("cache").unwrap();
    lab.link(&cli, "eth0", &rtr, "eth0").unwrap();
    lab.link(&rtr, "eth1", &srv, "eth0").unwrap();
    lab.link(&rtr, "eth2", &cache, "eth0").unwrap();
    cli.add_addr("eth0", "10.0.1.2/24").unwrap();
    cli.add_route("default", "10.0.1.1").unwrap();
    srv.add_addr("eth0", "10.0.2.2/24").unwrap();
    srv.add_route("default", "10.0.2.1").unwrap();
    cache.add_addr("eth0", "10.0.3.2/24").unwrap();
    cache.add_route("default", "10.0.3.1").unwrap();

    let dir = lab.dir().to_path_buf();
    let socket = dir.join("swrouter.sock");
    let conf = dir.join("router.conf");
    std::fs::write(&conf, router_conf(&socket)).unwrap();
    let router = lab
        .spawn(
            &rtr,
            &binary("swrouter").to_string_lossy(),
            &["-c", &conf.to_string_lossy()],
        )
        .unwrap();

    // The origin server and the file it serves.
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let body = "hello through the cache\n".repeat(40);
    std::fs::write(www.join("file"), &body).unwrap();
    // GET serves files; POST answers with the number of body bytes it read (uploads cross
    // the router as GSO super-packets, which the redirect path must segment).
    let server_py = r#"import http.server, sys
class H(http.server.SimpleHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get('Content-Length', '0'))
        data = self.rfile.read(n)
        body = ('received %d\n' % len(data)).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
d = sys.argv[1]
http.server.ThreadingHTTPServer(('10.0.2.2', 80), lambda *a: H(*a, directory=d)).serve_forever()
"#;
    let web = lab
        .spawn(&srv, "python3", &["-c", server_py, &www.to_string_lossy()])
        .unwrap();

    // The cache: swcache, the interception rule, Squid.
    let cache_sock = dir.join("swcache.sock");
    let swcache = lab
        .spawn(
            &cache,
            &binary("swcache").to_string_lossy(),
            &[
                "--address",
                "10.0.3.2",
                "--router",
                "10.0.3.1",
                "--service",
                "0",
                "--tun",
                "wccp0",
                "--socket",
                &cache_sock.to_string_lossy(),
                "--log-level",
                "debug",
            ],
        )
        .unwrap();
    // The TUN device has no address, so `redirect` (which needs one) would drop: DNAT instead.
    let nft = "add table ip nat\n\
               add chain ip nat prerouting { type nat hook prerouting priority -100; }\n\
               add rule ip nat prerouting iifname \"wccp0\" tcp dport 80 dnat to 10.0.3.2:3129\n";
    let nft_file = dir.join("cache.nft");
    std::fs::write(&nft_file, nft).unwrap();
    cache
        .run_ok("nft", &["-f", &nft_file.to_string_lossy()])
        .unwrap();
    let run = dir.join("squid");
    std::fs::create_dir_all(&run).unwrap();
    // Squid drops to its own user; let it write its logs and pid file.
    std::process::Command::new("chmod")
        .args(["0777", &run.to_string_lossy(), &dir.to_string_lossy()])
        .status()
        .unwrap();
    let squid_conf_path = dir.join("squid.conf");
    std::fs::write(&squid_conf_path, squid_conf(&run)).unwrap();
    let squid_proc = Squid::spawn(&mut lab, &cache, &squid_conf_path).unwrap();
    let squid = squid_proc.handle.clone();
    let all = |lab: &Lab| {
        logs(
            lab,
            &[
                ("swrouter", &router),
                ("swcache", &swcache),
                ("squid", &squid),
                ("http.server", &web),
            ],
            &run,
        )
    };

    // HERE_I_AM at 0 s, I_SEE_YOU, the echo, then REDIRECT_ASSIGN 15 s after the last change.
    let start = Instant::now();
    let mut ready = None;
    while start.elapsed() < Duration::from_secs(45) {
        if let Some(s) = status(&socket) {
            let cache_entry = s["wccp"]["services"]
                .as_array()
                .and_then(|a| a.iter().find(|v| v["id"] == 0))
                .and_then(|svc| svc["caches"].as_array())
                .and_then(|c| c.iter().find(|c| c["address"] == "10.0.3.2").cloned());
            if let Some(c) = cache_entry {
                if c["usable"] == true && c["designated"] == true && c["buckets"] == 256 {
                    ready = Some(s);
                    break;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let s = ready.unwrap_or_else(|| {
        panic!(
            "swcache did not become usable and designated with 256 buckets within 45 s\nstatus: {}\n{}",
            status(&socket).map(|s| s["wccp"].to_string()).unwrap_or_default(),
            all(&lab)
        )
    });
    assert_eq!(s["wccp"]["services"][0]["designated_cache"], "10.0.3.2");

    // Squid listens once it has logged "Accepting NAT intercepted HTTP".
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(15) {
        let log = std::fs::read_to_string(run.join("cache.log")).unwrap_or_default();
        if log.contains("Accepting NAT intercepted") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // So is the web server.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let ok = srv
            .run("curl", &["-sS", "-o", "/dev/null", "http://10.0.2.2/file"])
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let redirect_before = stage_of(&status(&socket).unwrap(), "wccp-redirect").unwrap()["consumed"]
        .as_u64()
        .unwrap_or(0);
    let out = cli
        .run(
            "curl",
            &["-sS", "-m", "15", "-D", "-", "http://10.0.2.2/file"],
        )
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let cache_status = std::process::Command::new("python3")
        .args([
            "-c",
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\ns.sendall(b'status\\n')\nprint(s.makefile().readline())",
            &cache_sock.to_string_lossy(),
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let final_status = status(&socket).unwrap();
    let fail = |what: &str| -> String {
        format!(
            "{what}\ncurl:\n{text}\nswcache status: {cache_status}\nswrouter pipeline: {}\nwccp: {}\n{}",
            final_status["pipeline"], final_status["wccp"], all(&lab)
        )
    };
    assert!(out.status.success(), "{}", fail("curl failed"));
    assert!(text.contains(&body), "{}", fail("the file did not arrive"));
    let via = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("via:"))
        .unwrap_or_else(|| {
            panic!(
                "{}",
                fail("no Via: header: the reply did not come from Squid")
            )
        });
    assert!(
        via.to_ascii_lowercase().contains("squid"),
        "{}",
        fail(&format!("Via: does not name Squid: {via}"))
    );
    let redirected = stage_of(&final_status, "wccp-redirect").unwrap()["consumed"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        redirected > redirect_before,
        "{}",
        fail("the wccp-redirect stage counted nothing")
    );
    // swcache decapsulated what the router redirected.
    let cs: serde_json::Value = serde_json::from_str(cache_status.trim())
        .unwrap_or_else(|e| panic!("{}", fail(&format!("swcache status is not JSON: {e}"))));
    assert!(
        cs["gre"]["decapsulated"].as_u64().unwrap_or(0) > 0,
        "{}",
        fail("swcache decapsulated nothing")
    );
    assert_eq!(cs["services"][0]["designated"], true, "{cs}");
    // The default fast-failover probe (no probe-port in the config) reaches Squid through the
    // same GRE tunnel and interception as the client and is answered (issue 19).
    assert!(
        integration::wccplab::wait_probe_state(
            &socket,
            0,
            "10.0.3.2",
            "up",
            Duration::from_secs(5)
        )
        .is_some(),
        "{}",
        fail("the default probe never found the cache up")
    );
    let access = std::fs::read_to_string(run.join("access.log")).unwrap_or_default();
    assert!(
        access.contains("http://10.0.2.2/file"),
        "{}",
        fail("Squid's access.log does not show the request")
    );
    // A 1 MiB upload through the cache: the client's TSO bursts reach swrouter as GSO
    // super-packets and must arrive at Squid (and the origin) whole.
    let upload = dir.join("upload.bin");
    std::fs::write(&upload, vec![0x5au8; 1 << 20]).unwrap();
    let out = cli
        .run(
            "curl",
            &[
                "-sS",
                "-m",
                "20",
                "-D",
                "-",
                "--data-binary",
                &format!("@{}", upload.display()),
                "http://10.0.2.2/upload",
            ],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && text.contains("received 1048576"),
        "{}",
        fail(&format!("upload through the cache failed:\n{text}"))
    );
    assert!(
        text.to_ascii_lowercase().contains("via:"),
        "{}",
        fail("the upload did not go through Squid")
    );
    let _ = lab.stop(&swcache, Duration::from_secs(5));
    let _ = lab.stop(&squid, Duration::from_secs(5));
}
