//! WCCP over a small-MTU cache link, then every cache killed under each fail policy (issue 17
//! items 1 and 4), in one lab: the policy is changed by reload between the steps.
//!
//! ```text
//! client 10.0.1.2 (MTU 1500) ── eth0 [swrouter] eth1 ── origin 10.0.2.2 (GET files, POST counts)
//!                                  eth2 (MTU 1400) ── cache 10.0.3.2 (swcache + Squid), MTU 1400
//! ```
//!
//! 1. A 20 MiB download and a 4 MiB upload through Squid, byte-checked: the router clamps the
//!    MSS of the redirected SYN and of Squid's SYN-ACK, so the client's segments fit the cache
//!    link inside GRE; tcpdump on the cache link sees no IP fragment, and tshark decodes every
//!    WCCP and GRE packet without error.
//! 2. The cache dies (Squid and swcache): `open` fetches from the origin, `closed-drop` times
//!    out, `closed-reject` is refused at once (a RST from the origin's address).
#![allow(clippy::unwrap_used, missing_docs)]

use crate::wccp_variants::WccpLab;
use integration::binary;
use integration::wccplab::{router_status, service, tshark_clean, wait_for, CacheHost};
use std::time::{Duration, Instant};

/// An origin that serves files for GET and answers a POST with the number of body bytes read.
const ORIGIN: &str = r#"
import http.server, sys, os
class H(http.server.SimpleHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get('Content-Length', '0'))
        got = 0
        while got < n:
            b = self.rfile.read(min(65536, n - got))
            if not b:
                break
            got += len(b)
        body = ('received %d\n' % got).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
os.chdir(sys.argv[1])
http.server.ThreadingHTTPServer(('0.0.0.0', 80), H).serve_forever()
"#;

/// A traffic counter of service 0.
fn counter(socket: &std::path::Path, name: &str) -> u64 {
    router_status(socket)
        .and_then(|s| service(&s, 0).map(|v| v["traffic"][name]["packets"].as_u64()))
        .flatten()
        .unwrap_or(0)
}

/// Rewrites the fail policy in the config file and reloads it in place.
fn set_policy(l: &WccpLab, from: &str, to: &str) {
    let text = std::fs::read_to_string(&l.conf).unwrap();
    let from = format!("fail-policy = \"{from}\"");
    assert!(text.contains(&from), "{text}");
    std::fs::write(
        &l.conf,
        text.replace(&from, &format!("fail-policy = \"{to}\"")),
    )
    .unwrap();
    let out = std::process::Command::new(binary("swrouter"))
        .args(["reload", "-s", &l.socket.to_string_lossy()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let s = router_status(&l.socket).unwrap();
    assert_eq!(
        service(&s, 0).unwrap()["fail_policy"],
        to,
        "reloaded in place"
    );
}

/// curl of the origin's small file from the client: (exit code, seconds, stderr).
fn try_fetch(l: &WccpLab, max_secs: &str) -> (Option<i32>, f64, String) {
    let t = Instant::now();
    let out = l
        .cli
        .run(
            "curl",
            &[
                "-sS",
                "-m",
                max_secs,
                "-o",
                "/dev/null",
                "http://10.0.2.2/file",
            ],
        )
        .unwrap();
    (
        out.status.code(),
        t.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn gre_mss_clamp_keeps_a_1400_cache_link_unfragmented_and_fail_policies_apply() {
    let wccp = "[wccp]\nprobe-interval-ms = 100\n\n[[wccp.service]]\nid = 0\nprobe-port = 3128\nfail-policy = \"open\"\n";
    let mut l = WccpLab::new(
        "wfmtu",
        1,
        [
            "wccp-redirect-in = [0]",
            "",
            "mtu = 1400\nwccp-exclude-in = true",
        ],
        wccp,
    );
    let ns = l.caches[0].clone();
    ns.ip(&["link", "set", "eth0", "mtu", "1400"]).unwrap();
    // Our own origin in place of the lab's: GET and POST.
    let _ = l.lab.stop(&l.web, Duration::from_secs(5));
    let www = l.lab.dir().join("www");
    let big: Vec<u8> = (0..20u32 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(www.join("big"), &big).unwrap();
    let up = l.lab.dir().join("upload");
    std::fs::write(&up, &big[..4 * 1024 * 1024]).unwrap();
    let script = l.lab.dir().join("origin.py");
    std::fs::write(&script, ORIGIN).unwrap();
    let srv = l
        .lab
        .namespaces()
        .iter()
        .find(|n| n.name.ends_with("srv"))
        .unwrap()
        .clone();
    let origin = l
        .lab
        .spawn(
            &srv,
            "python3",
            &[&script.to_string_lossy(), &www.to_string_lossy()],
        )
        .unwrap();

    let pcap = l.lab.dir().join("cache-link.pcap");
    let dump = l
        .lab
        .spawn(
            &ns,
            "tcpdump",
            &[
                "-i",
                "eth0",
                "-s",
                "256",
                "-U",
                "-w",
                &pcap.to_string_lossy(),
            ],
        )
        .unwrap();
    let mut host = CacheHost::new(
        &l.lab,
        &ns,
        "cache-mtu",
        "10.0.3.2".parse().unwrap(),
        "10.0.3.1".parse().unwrap(),
    )
    .unwrap();
    host.start(&mut l.lab).unwrap();
    l.wait_assigned("10.0.3.2", &[&host]);
    host.wait_squid(Duration::from_secs(15)).unwrap();
    let logs = |l: &WccpLab, host: &CacheHost| {
        format!(
            "{}\n===== origin =====\n{}",
            l.logs(&[host]),
            l.lab.logs(&origin)
        )
    };

    // 1. Download and upload through the cache.
    let got = l.lab.dir().join("got");
    let out = l
        .cli
        .run(
            "curl",
            &[
                "-sS",
                "-m",
                "60",
                "-D",
                "-",
                "-o",
                &got.to_string_lossy(),
                "http://10.0.2.2/big",
            ],
        )
        .unwrap();
    let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        out.status.success() && head.contains("via:") && head.contains("cache-mtu"),
        "download through the cache: {head}{}{}",
        String::from_utf8_lossy(&out.stderr),
        logs(&l, &host)
    );
    assert!(std::fs::read(&got).unwrap() == big, "20 MiB byte for byte");
    let out = l
        .cli
        .run(
            "curl",
            &[
                "-sS",
                "-m",
                "60",
                "-D",
                "-",
                "-H",
                "Expect:",
                "--data-binary",
                &format!("@{}", up.to_string_lossy()),
                "http://10.0.2.2/up",
            ],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        out.status.success() && text.contains("cache-mtu") && text.contains("received 4194304"),
        "upload through the cache: {text}{}{}",
        String::from_utf8_lossy(&out.stderr),
        logs(&l, &host)
    );
    let s = router_status(&l.socket).unwrap();
    let t = &service(&s, 0).unwrap()["traffic"];
    assert!(
        t["mss_clamped"]["packets"].as_u64().unwrap() >= 4,
        "SYNs and SYN-ACKs: {t}"
    );
    assert_eq!(t["gre_fragmented"]["packets"], 0, "{t}");
    assert_eq!(t["gre_too_big"]["packets"], 0, "{t}");
    assert_eq!(service(&s, 0).unwrap()["gre_mss_clamp"], "auto");
    std::thread::sleep(Duration::from_millis(300));
    let _ = l.lab.stop(&dump, Duration::from_secs(5));
    tshark_clean(&ns, &pcap).unwrap();
    let frags = ns
        .run_ok(
            "tshark",
            &[
                "-r",
                &pcap.to_string_lossy(),
                "-Y",
                "ip.flags.mf == 1 || ip.frag_offset > 0",
            ],
        )
        .unwrap();
    assert!(
        frags.trim().is_empty(),
        "IP fragments on the cache link:\n{frags}"
    );
    let gre = ns
        .run_ok(
            "tshark",
            &[
                "-r",
                &pcap.to_string_lossy(),
                "-Y",
                "gre && tcp.len > 1000",
                "-T",
                "fields",
                "-e",
                "ip.len",
            ],
        )
        .unwrap();
    assert!(
        gre.lines().count() > 100
            && gre
                .lines()
                .all(|n| n.split(',').all(|x| x.parse::<u32>().unwrap() <= 1400)),
        "the upload's full-size segments travel in GRE within the link MTU:\n{gre}"
    );

    // 2. The cache dies; fast failover notices within a few probes.
    host.crash(&mut l.lab);
    let before = counter(&l.socket, "fail_open_forwarded");
    let (code, _, err) = try_fetch(&l, "5");
    let ok = wait_for(Duration::from_secs(5), Duration::from_millis(200), || {
        let (code, _, _) = try_fetch(&l, "5");
        (code == Some(0)).then_some(())
    });
    assert!(
        ok.is_some(),
        "open: fetched from the origin (first try {code:?} {err}){}",
        logs(&l, &host)
    );
    assert!(counter(&l.socket, "fail_open_forwarded") > before);

    set_policy(&l, "open", "closed-drop");
    let before = counter(&l.socket, "fail_closed_dropped");
    let (code, secs, err) = try_fetch(&l, "2");
    assert_eq!(
        code,
        Some(28),
        "closed-drop: curl times out ({secs:.2} s): {err}"
    );
    assert!(counter(&l.socket, "fail_closed_dropped") > before);

    set_policy(&l, "closed-drop", "closed-reject");
    let before = counter(&l.socket, "fail_closed_rejected");
    let (code, secs, err) = try_fetch(&l, "5");
    assert_eq!(code, Some(7), "closed-reject: connection refused: {err}");
    assert!(secs < 1.0, "closed-reject fails fast, not in {secs:.2} s");
    assert!(counter(&l.socket, "fail_closed_rejected") > before);
    let text = std::process::Command::new(binary("swrouter"))
        .args(["status", "-s", &l.socket.to_string_lossy()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("no cache: fail-policy closed-reject"),
        "text status:\n{text}"
    );
    let _ = l.lab.stop(&origin, Duration::from_secs(5));
}
