//! End to end, issue 15 (HA, "caches never notice" a switchover): two swrouter nodes share
//! virtual gateways with VRRP on the client, server and caches segments and run `[ha.sync]` on a
//! direct kernel link. swcache (with Squid behind it) registers with the caches-side virtual
//! address, which is also the Router ID and the GRE endpoint; the caches' virtual router has no
//! accept-mode (WCCP and GRE to it are taken all the same). A client downloads a file through
//! the cache; the active is killed with SIGKILL mid-download. The download completes byte for
//! byte through the cache, and swcache never notices: the same change number and assignment key,
//! no router down or up, no new assignment, its router stays alive. The download's flow, which
//! r1's flow affinity remembered, is adopted by r2 before the kill and claimed by its segments
//! after it.
//!
//! ```text
//! client 10.0.1.10 ─[lan]─ r1 .2 / r2 .3 (VIP .254) ─[wan]─ server 10.0.2.10
//!                           │ eth2 [cch] 10.0.3.2/.3 (VIP 10.0.3.254, no accept-mode)
//!                           │                    └── cache 10.0.3.10 (swcache + Squid)
//!                           └ eth3 10.9.0.1 ── 10.9.0.2 eth3: [ha.sync]
//! ```
#![allow(clippy::unwrap_used, missing_docs)]

use super::ha_sync::{key_file, sync_section};
use super::ha_vrrp::{ha, start, wait_state, Node, PAIR_INTERVAL};
use integration::wccplab::{router_status, service, wait_for, CacheHost};
use integration::{io_backend, require_root};
use netlab::{Lab, Ns};
use std::time::{Duration, Instant};

/// Node `me`'s configuration (interfaces, WCCP, three virtual routers, sync).
fn node_conf(lab: &Lab, ns: &Ns, me: u32, priority: u8, key: &std::path::Path) -> Node {
    let h = me + 1;
    let socket = lab.dir().join(format!("r{me}.sock"));
    let conf = lab.dir().join(format!("r{me}.conf"));
    let ms = PAIR_INTERVAL.as_millis();
    let mut text = format!(
        "[router]\nmanagement-socket = \"{}\"\nlog-level = \"debug\"\nio-backend = \"{}\"\n\n\
         [[interface]]\nname = \"eth0\"\naddress = \"10.0.1.{h}/24\"\nwccp-redirect-in = [0]\n\n\
         [[interface]]\nname = \"eth1\"\naddress = \"10.0.2.{h}/24\"\n\n\
         [[interface]]\nname = \"eth2\"\naddress = \"10.0.3.{h}/24\"\nwccp-caches = true\n\n\
         [[wccp.service]]\nid = 0\n",
        socket.display(),
        io_backend()
    );
    for (vrid, i, vip, accept) in [
        (51, "eth0", "10.0.1.254", true),
        (52, "eth1", "10.0.2.254", true),
        (53, "eth2", "10.0.3.254", false),
    ] {
        text.push_str(&format!(
            "\n[[ha.vrrp]]\ninterface = \"{i}\"\nvrid = {vrid}\npriority = {priority}\nvirtual-addresses = [\"{vip}\"]\nadvert-interval-ms = {ms}\naccept-mode = {accept}\n"
        ));
    }
    text.push_str(&sync_section(me, key));
    std::fs::write(&conf, text).unwrap();
    Node {
        ns: ns.clone(),
        conf,
        socket,
        proc: None,
    }
}

/// swcache's service 0 as its status shows it.
fn cache_service(c: &CacheHost) -> serde_json::Value {
    c.swcache_status()
        .ok()
        .and_then(|s| s["services"].as_array().and_then(|a| a.first().cloned()))
        .unwrap_or_default()
}

/// The WCCP part of a node's status.
fn wccp_of(n: &Node) -> serde_json::Value {
    router_status(&n.socket)
        .map(|s| s["wccp"].clone())
        .unwrap_or_default()
}

#[test]
fn a_takeover_keeps_the_caches_registration_and_the_download_through_it() {
    require_root();
    let mut lab = Lab::new("hwccp").unwrap();
    let br = lab.add_ns("br").unwrap();
    let cli = lab.add_ns("cli").unwrap();
    let srv = lab.add_ns("srv").unwrap();
    let cch = lab.add_ns("cch").unwrap();
    for b in ["lan", "wan", "cch"] {
        br.ip(&["link", "add", b, "type", "bridge"]).unwrap();
        br.ip(&["link", "set", b, "up"]).unwrap();
    }
    for (ns, port, bridge) in [
        (&cli, "c0", "lan"),
        (&srv, "s0", "wan"),
        (&cch, "k0", "cch"),
    ] {
        lab.link(ns, "eth0", &br, port).unwrap();
        br.ip(&["link", "set", port, "master", bridge]).unwrap();
    }
    cli.add_addr("eth0", "10.0.1.10/24").unwrap();
    // A small receive window: the download crosses the network at curl's pace instead of
    // landing in the client's socket buffer at once.
    cli.sysctl("net.ipv4.tcp_rmem", "4096 16384 32768").unwrap();
    cli.add_route("default", "10.0.1.254").unwrap();
    srv.add_addr("eth0", "10.0.2.10/24").unwrap();
    srv.add_route("default", "10.0.2.254").unwrap();
    cch.add_addr("eth0", "10.0.3.10/24").unwrap();
    cch.add_route("default", "10.0.3.254").unwrap();
    let key = key_file(
        &lab,
        "ha.key",
        "0b1c2d3e4f5061728394a5b6c7d8e9f00112233445566778899aabbccddeeff0",
    );
    let r1 = lab.add_ns("r1").unwrap();
    let r2 = lab.add_ns("r2").unwrap();
    lab.link(&r1, "eth3", &r2, "eth3").unwrap();
    r1.add_addr("eth3", "10.9.0.1/24").unwrap();
    r2.add_addr("eth3", "10.9.0.2/24").unwrap();
    for (ns, name) in [(&r1, "r1"), (&r2, "r2")] {
        for (i, bridge) in [("eth0", "lan"), ("eth1", "wan"), ("eth2", "cch")] {
            let port = format!("{name}{}", &i[3..]);
            lab.link(ns, i, &br, &port).unwrap();
            br.ip(&["link", "set", &port, "master", bridge]).unwrap();
        }
    }
    let mut nodes = [
        node_conf(&lab, &r1, 1, 200, &key),
        node_conf(&lab, &r2, 2, 100, &key),
    ];
    let vrids = [51, 52, 53];
    start(&mut lab, &mut nodes[0]);
    assert!(
        wait_state(&nodes[0], &vrids, "master", Duration::from_secs(3)).is_some(),
        "r1 never became master: {:?}",
        ha(&nodes[0])
    );
    start(&mut lab, &mut nodes[1]);
    assert!(
        wait_state(&nodes[1], &vrids, "backup", Duration::from_secs(3)).is_some(),
        "r2 never became backup: {:?}",
        ha(&nodes[1])
    );

    // The origin and a file slow enough to download that the takeover falls inside it.
    let www = lab.dir().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(www.join("big"), &body).unwrap();
    let _web = lab
        .spawn(
            &srv,
            "python3",
            &[
                "-m",
                "http.server",
                "80",
                "--bind",
                "10.0.2.10",
                "--directory",
                &www.to_string_lossy(),
            ],
        )
        .unwrap();

    // The cache registers with the caches' virtual address, on fast timers: a cache that
    // lost its router would notice within 1.5 s.
    let mut cache = CacheHost::new(
        &lab,
        &cch,
        "c1",
        [10, 0, 3, 10].into(),
        [10, 0, 3, 254].into(),
    )
    .unwrap();
    cache.swcache_args = vec!["--transmit-timer-ms".into(), "500".into()];
    cache.start(&mut lab).unwrap();
    cache.wait_squid(Duration::from_secs(20)).unwrap();
    let assigned = wait_for(Duration::from_secs(15), Duration::from_millis(100), || {
        let w = wccp_of(&nodes[0]);
        let s = service(&serde_json::json!({ "wccp": w }), 0)?.clone();
        let key = s["key"].as_str()?.to_string();
        (s["caches"][0]["usable"] == true && !key.contains("0.0.0.0")).then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "the cache never got an assignment at r1: {}\n{}",
            wccp_of(&nodes[0]),
            cache.logs(&lab)
        )
    });
    assert_eq!(
        assigned["router_ids"][0], "10.0.3.254",
        "the Router ID is the virtual address: {assigned}"
    );
    // The standby holds the same group state.
    let synced = wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
        let w = wccp_of(&nodes[1]);
        let s = w["services"][0].clone();
        (s["key"] == assigned["key"] && s["change_number"] == assigned["change_number"])
            .then_some(w)
    })
    .unwrap_or_else(|| panic!("r2 never held r1's WCCP group: {}", wccp_of(&nodes[1])));
    assert_eq!(synced["ha_sync"]["role"], "standby", "{synced}");
    let before = cache_service(&cache);
    eprintln!(
        "r1 WCCP before the takeover: {}\ncache: {before}",
        wccp_of(&nodes[0])
    );
    let cache_log = |lab: &Lab, needle: &str| cache.logs(lab).matches(needle).count();
    let ups = cache_log(&lab, "router up");
    let sent = cache_log(&lab, "assignment sent");
    assert!(ups >= 1 && sent >= 1, "{}", cache.logs(&lab));

    // A download through the cache, slowed so that the takeover happens inside it.
    let out = lab.dir().join("download");
    let headers = lab.dir().join("headers");
    let curl = lab
        .spawn(
            &cli,
            "curl",
            &[
                "-sS",
                "--max-time",
                "30",
                "--limit-rate",
                "300k",
                "-D",
                &headers.to_string_lossy(),
                "-o",
                &out.to_string_lossy(),
                "http://10.0.2.10/big",
            ],
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        lab.try_wait(&curl).unwrap().is_none(),
        "the download ended before the takeover"
    );
    let r1_redirected = wccp_of(&nodes[0])["services"][0]["traffic"]["redirected"]["packets"]
        .as_u64()
        .unwrap_or(0);
    assert!(r1_redirected > 0, "r1 redirected the download's start");
    // Flow affinity (on by default): r1 remembered the download's flow and told r2, which
    // holds it adopted, ready for a takeover.
    let adopted = wait_for(Duration::from_secs(3), Duration::from_millis(50), || {
        let a = wccp_of(&nodes[1])["flow_affinity"]["ha_sync"].clone();
        (a["adopted"].as_u64()? >= 1).then_some(a)
    })
    .unwrap_or_else(|| {
        panic!(
            "r2 never adopted r1's flow: r1 {}\nr2 {}",
            wccp_of(&nodes[0])["flow_affinity"],
            wccp_of(&nodes[1])["flow_affinity"]
        )
    });
    eprintln!("r2 flow affinity before the takeover: {adopted}");
    let active = nodes[0].proc.take().unwrap();
    let killed = Instant::now();
    lab.kill(&active).unwrap();
    assert!(
        wait_state(&nodes[1], &vrids, "master", Duration::from_secs(2)).is_some(),
        "r2 did not take over: {:?}",
        ha(&nodes[1])
    );
    eprintln!("r2 master {:?} after SIGKILL of r1", killed.elapsed());
    let done = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        lab.try_wait(&curl).ok().flatten()
    })
    .expect("curl did not finish");
    assert!(done.success(), "curl failed: {}", lab.logs(&curl));
    let got = std::fs::read(&out).unwrap();
    assert!(
        got == body,
        "the download is not byte-exact ({} of {} bytes)",
        got.len(),
        body.len()
    );
    let h = std::fs::read_to_string(&headers).unwrap();
    assert!(h.contains("c1"), "served through the cache (Via): {h}");

    // Several HERE_I_AM rounds later the cache still sees one router that never left.
    std::thread::sleep(Duration::from_millis(2000));
    let after = cache_service(&cache);
    eprintln!("r2 WCCP after the takeover: {}", wccp_of(&nodes[1]));
    // swcache's own view number follows the Receive IDs it hears: it kept counting, so the
    // I_SEE_YOUs kept coming throughout.
    assert!(
        after["view_change_number"].as_u64() > before["view_change_number"].as_u64(),
        "before {before}\nafter {after}"
    );
    assert_eq!(after["drops"], serde_json::json!({}), "{after}");
    assert_eq!(after["sent_key"], before["sent_key"]);
    assert_eq!(after["routers"][0]["alive"], true, "{after}");
    assert_eq!(after["routers"][0]["router_id"], "10.0.3.254", "{after}");
    let logs = cache.logs(&lab);
    assert_eq!(
        cache_log(&lab, "router up"),
        ups,
        "no re-registration:\n{logs}"
    );
    assert_eq!(
        cache_log(&lab, "assignment sent"),
        sent,
        "no reassignment:\n{logs}"
    );
    assert!(!logs.contains("router down"), "{logs}");
    let w = wccp_of(&nodes[1]);
    assert_eq!(w["ha_sync"]["role"], "active", "{w}");
    assert_eq!(
        w["services"][0]["change_number"], assigned["change_number"],
        "{w}"
    );
    assert_eq!(w["services"][0]["key"], assigned["key"], "{w}");
    assert_eq!(
        w["services"][0]["drops"],
        serde_json::json!({}),
        "the cache's echoes were recognised by the new active: {w}"
    );
    assert!(
        w["services"][0]["traffic"]["redirected"]["packets"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "r2 redirected the rest of the download: {w}"
    );
    // The download's segments found the flow r1 remembered: r2 owns it now.
    let a = &w["flow_affinity"]["ha_sync"];
    assert!(
        a["adopted_hits"].as_u64().unwrap_or(0) >= 1,
        "r2 used the adopted flow: {a}"
    );
    eprintln!("r2 WCCP after the takeover: {w}");
    cache.stop(&mut lab);
    if let Some(p) = nodes[1].proc.take() {
        lab.stop(&p, Duration::from_secs(3)).unwrap();
    }
}
