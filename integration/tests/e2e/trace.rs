//! The packet trace (issue 17 item 5) on a live WCCP redirect: swcache joins swrouter for
//! service 0; `swrouter trace add` arms a trace for the client's HTTP, and `trace show --json`
//! shows the redirect decision (service, cache, GRE, the bucket the reference's hash names)
//! for the client's SYNs, while a ping and a UDP datagram that do not match are not traced.
//!
//! ```text
//! client 10.0.1.2 ── eth0 10.0.1.1 [swrouter, wccp-redirect-in = [0]] eth1 10.0.2.1 ── server 10.0.2.2
//!                                            eth2 10.0.3.1
//!                                              │
//!                                     cache 10.0.3.2 (swcache, GRE into wccp0)
//! ```
#![allow(clippy::unwrap_used, missing_docs)]

use integration::wccplab::{bucket_of, cache, router_status, wait_for};
use integration::{binary, io_backend, require_root};
use netlab::Lab;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

/// Runs `swrouter ARGS` against the router's socket (the socket option goes first: a trace
/// filter takes every word after the count).
fn swrouter(socket: &Path, args: &[&str]) -> Output {
    let (cmd, rest) = args.split_at(args.len().min(2));
    std::process::Command::new(binary("swrouter"))
        .args(cmd)
        .args(["-s", &socket.to_string_lossy()])
        .args(rest)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_trace_shows_the_redirect_decision_and_skips_flows_it_does_not_match() {
    require_root();
    let mut lab = Lab::new("trc").unwrap();
    let cli = lab.add_ns("cli").unwrap();
    let rtr = lab.add_ns("rtr").unwrap();
    let srv = lab.add_ns("srv").unwrap();
    let cns = lab.add_ns("cache").unwrap();
    lab.link(&cli, "eth0", &rtr, "eth0").unwrap();
    lab.link(&rtr, "eth1", &srv, "eth0").unwrap();
    lab.link(&rtr, "eth2", &cns, "eth0").unwrap();
    cli.add_addr("eth0", "10.0.1.2/24").unwrap();
    cli.add_route("default", "10.0.1.1").unwrap();
    srv.add_addr("eth0", "10.0.2.2/24").unwrap();
    srv.add_route("default", "10.0.2.1").unwrap();
    cns.add_addr("eth0", "10.0.3.2/24").unwrap();
    cns.add_route("default", "10.0.3.1").unwrap();
    let dir = lab.dir().to_path_buf();
    let socket = dir.join("swrouter.sock");
    let conf = dir.join("router.conf");
    std::fs::write(
        &conf,
        format!(
            "[router]\nmanagement-socket = \"{}\"\nio-backend = \"{}\"\n\n\
             [[interface]]\nname = \"eth0\"\naddress = \"10.0.1.1/24\"\nwccp-redirect-in = [0]\n\n\
             [[interface]]\nname = \"eth1\"\naddress = \"10.0.2.1/24\"\n\n\
             [[interface]]\nname = \"eth2\"\naddress = \"10.0.3.1/24\"\n\n\
             [[wccp.service]]\nid = 0\n",
            socket.display(),
            io_backend()
        ),
    )
    .unwrap();
    let router = lab
        .spawn(
            &rtr,
            &binary("swrouter").to_string_lossy(),
            &["-c", &conf.to_string_lossy()],
        )
        .unwrap();
    let cache_sock = dir.join("swcache.sock");
    let swcache = lab
        .spawn(
            &cns,
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
            ],
        )
        .unwrap();
    let logs = |lab: &Lab| {
        format!(
            "\n===== swrouter =====\n{}\n===== swcache =====\n{}",
            lab.logs(&router),
            lab.logs(&swcache)
        )
    };
    // The router answers before the cache joins: arm errors and status come first.
    wait_for(Duration::from_secs(15), Duration::from_millis(100), || {
        router_status(&socket)
    })
    .unwrap_or_else(|| panic!("swrouter did not answer{}", logs(&lab)));
    let bad = swrouter(&socket, &["trace", "add", "3", "tcp", "and", "prot", "80"]);
    assert!(!bad.status.success(), "{}", text(&bad));
    assert!(
        text(&bad).contains("filter column 9: unknown test `prot`"),
        "{}",
        text(&bad)
    );
    // Assignment: HERE_I_AM, I_SEE_YOU, then REDIRECT_ASSIGN 15 s after the last change.
    wait_for(Duration::from_secs(45), Duration::from_millis(500), || {
        let s = router_status(&socket)?;
        let c = cache(&s, 0, "10.0.3.2")?;
        (c["usable"] == true && c["buckets"] == 256).then_some(())
    })
    .unwrap_or_else(|| panic!("swcache got no assignment within 45 s{}", logs(&lab)));

    let armed = swrouter(
        &socket,
        &["trace", "add", "3", "tcp", "and", "dst", "port", "80"],
    );
    assert!(armed.status.success(), "{}", text(&armed));
    let s = router_status(&socket).unwrap();
    assert_eq!(s["trace"]["armed"], true, "{}", s["trace"]);
    assert_eq!(s["trace"]["remaining"], 3);
    assert_eq!(s["trace"]["filter"], "tcp and dst port 80");
    // Traffic the filter does not match: a ping (answered) and a UDP datagram.
    let ping = cli
        .run("ping", &["-c", "2", "-i", "0.2", "-W", "2", "10.0.2.2"])
        .unwrap();
    assert!(ping.status.success(), "{}{}", text(&ping), logs(&lab));
    cli.run("bash", &["-c", "echo not-traced > /dev/udp/10.0.2.2/9999"])
        .unwrap();
    // The client's HTTP: its SYN is redirected to the cache (which has no proxy here, so the
    // connection times out; the SYN and its retransmission are traced).
    let _ = cli.run("curl", &["-sS", "-m", "2", "http://10.0.2.2/"]);
    let show = swrouter(&socket, &["trace", "show", "--json"]);
    assert!(show.status.success(), "{}", text(&show));
    let v: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    let records = v["records"].as_array().unwrap();
    assert!(!records.is_empty(), "nothing traced: {v:#}{}", logs(&lab));
    let bucket = bucket_of(
        wccp::wire::ServiceFlags::DST_IP_HASH,
        [10, 0, 1, 2].into(),
        [10, 0, 2, 2].into(),
        0,
        80,
    );
    for r in records {
        let summary = r["summary"].as_str().unwrap();
        assert!(
            summary.starts_with("TCP 10.0.1.2:") && summary.contains(" > 10.0.2.2:80 [S]"),
            "only the client's SYNs match the filter: {v:#}"
        );
        assert_eq!(r["interface"], "eth0");
        let w = r["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["stage"] == "wccp-redirect")
            .unwrap_or_else(|| panic!("no wccp-redirect step: {r:#}"))["wccp"]
            .clone();
        assert_eq!(w["redirected"], true, "{r:#}");
        assert_eq!(w["service"], 0);
        assert_eq!(w["cache"], "10.0.3.2");
        assert_eq!(w["method"], "gre");
        assert_eq!(
            w["bucket"], bucket,
            "the reference's hash of 10.0.2.2: {r:#}"
        );
        let last = r["stages"].as_array().unwrap().last().unwrap();
        assert_eq!(
            (&last["stage"], &last["verdict"], &last["detail"]),
            (
                &"tx".into(),
                &"transmit".into(),
                &"on eth2 via 10.0.3.2".into()
            ),
            "{r:#}"
        );
    }
    // The text form and status say the same.
    let t = text(&swrouter(&socket, &["trace", "show"]));
    assert!(
        t.contains("redirected: service 0 to cache 10.0.3.2 by gre"),
        "{t}"
    );
    let st = text(&swrouter(&socket, &["status"]));
    assert!(st.contains("trace: "), "{st}");
    let s = router_status(&socket).unwrap();
    assert_eq!(s["trace"]["captured"], records.len() as u64);
    // Clear: disarmed, records gone.
    let cleared = swrouter(&socket, &["trace", "clear"]);
    assert!(cleared.status.success(), "{}", text(&cleared));
    let s = router_status(&socket).unwrap();
    assert_eq!(
        (&s["trace"]["armed"], &s["trace"]["captured"]),
        (&false.into(), &0.into())
    );
    let _ = lab.stop(&swcache, Duration::from_secs(5));
}
