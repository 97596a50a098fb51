//! WCCP with a real peer: Debian's Squid 5.7 joins swrouter as a web cache.
//!
//! Squid 5.7 cannot parse any I_SEE_YOU on 64-bit (its Router View parser reads pointer-sized
//! fields; see ../shared/testdata/squid/README.md), so it never echoes our Receive ID. The
//! router must still accept its real HERE_I_AMs, answer each with a well-formed I_SEE_YOU
//! (checked by tshark), and show it in status as a cache that has not echoed the Receive ID.
#![allow(clippy::unwrap_used, missing_docs)]

use integration::RouterLab;
use netlab::squid::Squid;
use std::time::{Duration, Instant};

fn squid_conf(dir: &std::path::Path) -> String {
    let run = dir.join("squid");
    format!(
        "pid_filename {run}/squid.pid\ncache_log {run}/cache.log\naccess_log {run}/access.log\ncache_store_log none\ncoredump_dir {run}\ncache_mem 8 MB\nshutdown_lifetime 1 seconds\nhttp_port 10.0.2.2:3128\nhttp_port 10.0.2.2:3129 intercept\nacl lab src 10.0.0.0/16\nhttp_access allow lab\nhttp_access deny all\ndebug_options ALL,1 80,3\nwccp2_router 10.0.2.1\nwccp2_forwarding_method gre\nwccp2_return_method gre\nwccp2_assignment_method hash\nwccp2_service standard 0 password=secret\n",
        run = run.display()
    )
}

#[test]
fn debian_squid_joins_and_is_answered_but_never_echoes() {
    let mut l = RouterLab::new(
        "sqd",
        "",
        "[[wccp.service]]\nid = 0\npassword = \"secret\"\n",
    )
    .unwrap();
    l.start().unwrap();
    let dir = l.lab.dir().to_path_buf();
    let run = dir.join("squid");
    std::fs::create_dir_all(&run).unwrap();
    // Squid drops to its own user; let it write its logs and pid file.
    std::process::Command::new("chmod")
        .args(["0777", &run.to_string_lossy(), &dir.to_string_lossy()])
        .status()
        .unwrap();
    let conf = dir.join("squid.conf");
    std::fs::write(&conf, squid_conf(&dir)).unwrap();
    let pcap = dir.join("wccp.pcap");
    let srv = l.srv.clone();
    let pcap_s = pcap.to_string_lossy().to_string();
    let tshark = l
        .lab
        .spawn(
            &srv,
            "tshark",
            &[
                "-i",
                "eth0",
                "-f",
                "udp port 2048",
                "-w",
                &pcap_s,
                "-a",
                "duration:30",
            ],
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let squid_proc = Squid::spawn(&mut l.lab, &srv, &conf).unwrap();
    let squid = squid_proc.handle.clone();

    // Squid sends its first HERE_I_AM about a second after start, then every 10 s.
    let start = Instant::now();
    let mut seen = None;
    while start.elapsed() < Duration::from_secs(25) {
        let s = l.status().unwrap();
        let w = &s["wccp"];
        let here_i_ams = w["received"]["here-i-am"].as_u64().unwrap_or(0);
        if here_i_ams >= 2 {
            seen = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let s = seen.unwrap_or_else(|| {
        panic!(
            "no two HERE_I_AMs from squid within 25 s\nsquid: {}\nrouter: {}",
            l.lab.logs(&squid),
            l.router_log()
        )
    });
    let w = &s["wccp"];
    assert!(
        w["sent"]["i-see-you"].as_u64().unwrap() >= 2,
        "every HERE_I_AM is answered: {w}"
    );
    let svc = &w["services"][0];
    assert_eq!(svc["id"], 0);
    assert_eq!(svc["security"], "md5", "{svc}");
    let cache = svc["caches"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "10.0.2.2")
        .unwrap_or_else(|| panic!("squid not listed: {svc}"));
    assert_eq!(cache["phase"], "joining", "{cache}");
    assert_eq!(cache["receive_id_echoed"], false, "{cache}");
    assert_eq!(cache["usable"], false);
    assert_eq!(cache["l2_adjacent"], true);
    assert!(
        w["drops"]
            .as_object()
            .unwrap()
            .get("md5-mismatch")
            .is_none(),
        "squid's MD5 verifies: {w}"
    );
    let human = l
        .swrouter(&["status", "-s", &l.socket.to_string_lossy()])
        .unwrap();
    assert!(
        human.contains("WCCP service 0") && human.contains("10.0.2.2") && human.contains("joining"),
        "{human}"
    );

    // tshark, an independent decoder, finds nothing malformed in either direction.
    let _ = l.lab.stop(&tshark, Duration::from_secs(5));
    let out = l
        .srv
        .run(
            "tshark",
            &[
                "-r",
                &pcap_s,
                "-Y",
                "wccp",
                "-T",
                "fields",
                "-e",
                "wccp.message",
            ],
        )
        .unwrap();
    let types = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        types.lines().any(|t| t.trim() == "10") && types.lines().any(|t| t.trim() == "11"),
        "HERE_I_AM (10) and I_SEE_YOU (11) on the wire: {types:?}"
    );
    let expert = l
        .srv
        .run("tshark", &["-r", &pcap_s, "-q", "-z", "expert,error"])
        .unwrap();
    let expert = String::from_utf8_lossy(&expert.stdout).to_string();
    assert!(
        !expert.contains("Malformed")
            && !expert.lines().any(|l| l.trim_start().starts_with("Errors")),
        "tshark found errors:\n{expert}"
    );
}
