//! swcache `--bypass`: redirected packets for a bypassed destination are not proxied but
//! returned to swrouter by the negotiated return method; swrouter forwards them to the origin.
//!
//! ```text
//! client 10.0.1.2 ── eth0 10.0.1.1 [swrouter, wccp-redirect-in = [0]] eth1 10.0.2.1 ── server 10.0.2.2, 10.0.2.3
//!                                            eth2 10.0.3.1
//!                                              │
//!          cache 10.0.3.2 (swcache --bypass 10.0.2.3/32 + wccp0 TUN + nft dnat → Squid :3129)
//! ```
//!
//! 10.0.2.2 is served by Squid (Via: names it); 10.0.2.3 is redirected to the cache, returned
//! by swcache and reaches the origin directly (no Via:).
//!
//! Both tests also check swrouter's side: the returned packets are counted per service and per
//! cache. The GRE test runs the cache on 10.0.3.0/24 on purpose: its third octet is odd, which
//! once made swrouter rebuild a multicast-looking destination MAC for decapsulated returns.
#![allow(clippy::unwrap_used, missing_docs)]

use integration::wccplab::{cache, router_status, service, tshark_clean, via, wait_for, CacheHost};
use integration::{binary, io_backend, require_root};
use netlab::Lab;
use std::time::Duration;

/// The lab of this module, running: swrouter (GRE or L2 return), the origin, a capture of the
/// cache link, and the cache host (swcache + Squid) with `swcache_args` added.
struct BypassLab {
    lab: Lab,
    cli: netlab::Ns,
    rtr: netlab::Ns,
    srv: netlab::Ns,
    cns: netlab::Ns,
    socket: std::path::PathBuf,
    router: netlab::ProcHandle,
    web: netlab::ProcHandle,
    dump: netlab::ProcHandle,
    pcap: std::path::PathBuf,
    host: CacheHost,
}

/// Builds and starts [`BypassLab`]: return method `method` on both ends, the cache link on
/// 10.0.`net`.0/24, `eth1_extra` appended to router.conf's eth1 section, the origin on
/// 10.0.2.2, 10.0.2.3 and 10.0.2.9; `{dir}` in `swcache_args` becomes the lab's directory.
fn bypass_lab(
    tag: &str,
    method: &str,
    net: u8,
    eth1_extra: &str,
    swcache_args: &[&str],
) -> BypassLab {
    let (rtr_addr, cache_addr) = (format!("10.0.{net}.1"), format!("10.0.{net}.2"));
    require_root();
    let mut lab = Lab::new(tag).unwrap();
    let cli = lab.add_ns("cli").unwrap();
    let rtr = lab.add_ns("rtr").unwrap();
    let srv = lab.add_ns("srv").unwrap();
    let cns = lab.add_ns("c0").unwrap();
    lab.link(&cli, "eth0", &rtr, "eth0").unwrap();
    lab.link(&rtr, "eth1", &srv, "eth0").unwrap();
    lab.link(&rtr, "eth2", &cns, "eth0").unwrap();
    cli.add_addr("eth0", "10.0.1.2/24").unwrap();
    cli.add_route("default", "10.0.1.1").unwrap();
    for a in ["10.0.2.2/24", "10.0.2.3/24", "10.0.2.9/24"] {
        srv.add_addr("eth0", a).unwrap();
    }
    srv.add_route("default", "10.0.2.1").unwrap();
    cns.add_addr("eth0", &format!("{cache_addr}/24")).unwrap();
    cns.add_route("default", &rtr_addr).unwrap();

    let dir = lab.dir().to_path_buf();
    let socket = dir.join("swrouter.sock");
    let conf = format!(
        "[router]\nmanagement-socket = \"{}\"\nlog-level = \"debug\"\nio-backend = \"{}\"\n\n\
         [[interface]]\nname = \"eth0\"\naddress = \"10.0.1.1/24\"\nwccp-redirect-in = [0]\n\n\
         [[interface]]\nname = \"eth1\"\naddress = \"10.0.2.1/24\"\n{eth1_extra}\n\
         [[interface]]\nname = \"eth2\"\naddress = \"{rtr_addr}/24\"\n\n\
         [[wccp.service]]\nid = 0\nreturn = [\"{method}\"]\n",
        socket.display(),
        io_backend()
    );
    let conf_path = dir.join("router.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let router = lab
        .spawn(
            &rtr,
            &binary("swrouter").to_string_lossy(),
            &["-c", &conf_path.to_string_lossy()],
        )
        .unwrap();
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("file"), "origin content\n".repeat(20)).unwrap();
    let web = lab
        .spawn(
            &srv,
            "python3",
            &[
                "-m",
                "http.server",
                "80",
                "--directory",
                &www.to_string_lossy(),
            ],
        )
        .unwrap();

    // Everything on the cache link: WCCP, GRE both ways, and (L2 return) the returned frames.
    let pcap = dir.join("cache-link.pcap");
    let dump = lab
        .spawn(
            &cns,
            "tcpdump",
            &["-i", "eth0", "-U", "-w", &pcap.to_string_lossy()],
        )
        .unwrap();

    let mut host = CacheHost::new(
        &lab,
        &cns,
        "cache-bp",
        cache_addr.parse().unwrap(),
        rtr_addr.parse().unwrap(),
    )
    .unwrap();
    let dir_s = dir.to_string_lossy().to_string();
    host.swcache_args = ["--return", method]
        .iter()
        .chain(swcache_args)
        .map(|s| s.replace("{dir}", &dir_s))
        .collect();
    host.start(&mut lab).unwrap();
    BypassLab {
        lab,
        cli,
        rtr,
        srv,
        cns,
        socket,
        router,
        web,
        dump,
        pcap,
        host,
    }
}

/// Runs the scenario with return method `method` (`gre` or `l2`) on both ends, the cache link
/// on 10.0.`net`.0/24.
fn bypass_returns_by(tag: &str, method: &str, net: u8) {
    let (rtr_addr, cache_addr) = (format!("10.0.{net}.1"), format!("10.0.{net}.2"));
    let BypassLab {
        mut lab,
        cli,
        rtr,
        srv,
        cns,
        socket,
        router,
        web,
        dump,
        pcap,
        mut host,
    } = bypass_lab(tag, method, net, "", &["--bypass", "10.0.2.3/32"]);
    let body = "origin content\n".repeat(20);
    let logs = |lab: &Lab, host: &CacheHost| {
        format!(
            "\n===== swrouter =====\n{}\n===== web =====\n{}{}",
            lab.logs(&router),
            lab.logs(&web),
            host.logs(lab)
        )
    };

    // The cache owns every bucket and the router uses the requested return method.
    let s = wait_for(Duration::from_secs(45), Duration::from_millis(500), || {
        router_status(&socket).filter(|s| {
            cache(s, 0, &cache_addr).is_some_and(|c| c["buckets"].as_u64() == Some(256))
        })
    })
    .unwrap_or_else(|| panic!("the cache was not assigned{}", logs(&lab, &host)));
    let c = cache(&s, 0, &cache_addr).unwrap();
    assert!(
        c["methods"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("/{method}")),
        "{c}"
    );
    host.wait_squid(Duration::from_secs(15)).unwrap();
    // The origin answers on both addresses.
    for a in ["10.0.2.2", "10.0.2.3"] {
        wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
            srv.run(
                "curl",
                &["-sS", "-o", "/dev/null", &format!("http://{a}/file")],
            )
            .ok()
            .filter(|o| o.status.success())
        })
        .unwrap_or_else(|| panic!("the origin does not answer on {a}"));
    }

    let fetch = |url: &str| {
        let out = cli
            .run("curl", &["-sS", "-m", "10", "-D", "-", url])
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };

    // Proxied: Squid's Via.
    let (ok, text) = fetch("http://10.0.2.2/file");
    assert!(ok && text.contains(&body), "{text}{}", logs(&lab, &host));
    assert!(
        via(&text).is_some_and(|v| v.contains("cache-bp")),
        "10.0.2.2 should be served by Squid:\n{text}{}",
        logs(&lab, &host)
    );

    // Bypassed: redirected to the cache, returned, served by the origin itself.
    let (ok, text) = fetch("http://10.0.2.3/file");
    let cs = host.swcache_status().unwrap();
    let s = router_status(&socket).unwrap();
    let detail = format!(
        "\ncurl:\n{text}\nswcache status: {cs}\nswrouter wccp: {}\nswrouter pipeline: {}{}",
        s["wccp"],
        s["pipeline"],
        logs(&lab, &host)
    );
    assert!(ok && text.contains(&body), "bypassed fetch failed{detail}");
    assert_eq!(
        via(&text),
        None,
        "the bypassed fetch went through Squid{detail}"
    );
    let bypassed = cs["bypass"]["bypassed"][method].as_u64().unwrap_or(0);
    assert!(bypassed > 0, "swcache returned nothing by {method}{detail}");
    let other = if method == "gre" { "l2" } else { "gre" };
    assert_eq!(cs["bypass"]["bypassed"][other], 0, "{detail}");
    assert_eq!(
        cs["bypass"]["errors"],
        serde_json::json!({}),
        "return errors{detail}"
    );
    // Squid never saw the bypassed destination.
    let access = std::fs::read_to_string(host.run.join("access.log")).unwrap_or_default();
    assert!(!access.contains("10.0.2.3"), "{access}");

    host.stop(&mut lab);
    std::thread::sleep(Duration::from_millis(500));
    let _ = lab.stop(&dump, Duration::from_secs(5));
    // The returns on the wire are well formed and go from the cache to the router: GRE
    // cache → router around the client's packet, or (L2) the client's packet itself in a
    // frame from the cache's MAC to the router's.
    tshark_clean(&cns, &pcap).unwrap();
    let filter = if method == "gre" {
        format!("ip.src == {cache_addr} && ip.dst == {rtr_addr} && gre.proto == 0x883e && ip.dst == 10.0.2.3")
    } else {
        "ip.src == 10.0.1.2 && ip.dst == 10.0.2.3 && !gre && tcp.flags.syn == 1".to_string()
    };
    let out = cns
        .run(
            "tshark",
            &[
                "-r",
                &pcap.to_string_lossy(),
                "-T",
                "fields",
                "-e",
                "eth.src",
                "-e",
                "eth.dst",
                "-Y",
                &filter,
            ],
        )
        .unwrap();
    let frames = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        !frames.trim().is_empty(),
        "no {method} return to 10.0.2.3 in the capture{detail}"
    );
    if method == "l2" {
        let (cache_mac, rtr_mac) = (mac_of(&cns, "eth0"), mac_of(&rtr, "eth2"));
        assert!(
            frames.lines().all(|l| l == format!("{cache_mac}\t{rtr_mac}")),
            "L2 returns must go from the cache's MAC {cache_mac} to the router's {rtr_mac}:\n{frames}"
        );
    }
    let svc_returned = service(&s, 0).unwrap()["traffic"]["returned"]["packets"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        svc_returned > 0,
        "swrouter counted no returned packets{detail}"
    );
    let cache_returned = cache(&s, 0, &cache_addr).unwrap()["returned"]["packets"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        cache_returned > 0,
        "no returned packets for the cache{detail}"
    );
}

/// The MAC address of `ifname` in `ns`.
fn mac_of(ns: &netlab::Ns, ifname: &str) -> String {
    let out = ns
        .run("cat", &[&format!("/sys/class/net/{ifname}/address")])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn bypassed_destination_is_returned_by_gre() {
    bypass_returns_by("bpg", "gre", 3);
}

#[test]
fn bypassed_destination_is_returned_at_l2() {
    bypass_returns_by("bpl", "l2", 3);
}

/// Count of frames in `pcap` (read in `ns`) matching the display filter.
fn count(ns: &netlab::Ns, pcap: &std::path::Path, filter: &str) -> usize {
    let out = ns
        .run(
            "tshark",
            &[
                "-r",
                &pcap.to_string_lossy(),
                "-Y",
                filter,
                "-T",
                "fields",
                "-e",
                "frame.number",
            ],
        )
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// tshark with IPv4/TCP checksum validation finds no bad checksum, malformed frame or expert
/// error in `pcap` among the client's packets (a capture on the origin's own veth shows its
/// replies before checksum offload fills them in).
fn checksums_clean(ns: &netlab::Ns, pcap: &std::path::Path) {
    let out = ns
        .run(
            "tshark",
            &[
                "-o",
                "ip.check_checksum:TRUE",
                "-o",
                "tcp.check_checksum:TRUE",
                "-r",
                &pcap.to_string_lossy(),
                "-Y",
                "ip.src == 10.0.1.2 && (_ws.malformed || _ws.expert.severity == error)",
            ],
        )
        .unwrap();
    let bad = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && bad.trim().is_empty(),
        "{}:\n{bad}",
        pcap.display()
    );
}

/// swcache `--return-rewrite 10.0.2.3/32=10.0.2.9 --return-copy ...` (seed 001, claims 37-39):
/// a client's SYNs to 10.0.2.3 are redirected to the cache, returned by `method` addressed to
/// the alternate origin 10.0.2.9 with correct checksums, forwarded by swrouter exactly once
/// (eth1 also redirects outbound: a returned packet is never redirected again), and copied to
/// a pcap file (`copy` = "pcap") or a TAP device ("tap").
fn rewritten_returns(tag: &str, method: &str, copy: &str) {
    let copy_arg = match copy {
        "pcap" => "pcap:{dir}/returns.pcap".to_string(),
        _ => format!("tap:{tag}cp0"),
    };
    let BypassLab {
        mut lab,
        cli,
        srv,
        cns,
        socket,
        router,
        web,
        dump,
        pcap,
        mut host,
        ..
    } = bypass_lab(
        tag,
        method,
        3,
        "wccp-redirect-out = [0]\n",
        &[
            "--return-rewrite",
            "10.0.2.3/32=10.0.2.9",
            "--return-copy",
            &copy_arg,
        ],
    );
    let dir = lab.dir().to_path_buf();
    let logs = |lab: &Lab, host: &CacheHost| {
        format!(
            "\n===== swrouter =====\n{}\n===== web =====\n{}{}",
            lab.logs(&router),
            lab.logs(&web),
            host.logs(lab)
        )
    };
    wait_for(Duration::from_secs(45), Duration::from_millis(500), || {
        router_status(&socket)
            .filter(|s| cache(s, 0, "10.0.3.2").is_some_and(|c| c["buckets"].as_u64() == Some(256)))
    })
    .unwrap_or_else(|| panic!("the cache was not assigned{}", logs(&lab, &host)));
    let srv_pcap = dir.join("server-link.pcap");
    let srv_dump = lab
        .spawn(
            &srv,
            "tcpdump",
            &[
                "-i",
                "eth0",
                "-U",
                "-w",
                &srv_pcap.to_string_lossy(),
                "tcp port 80",
            ],
        )
        .unwrap();
    let tap_pcap = dir.join("tap.pcap");
    let tap_dump = (copy == "tap").then(|| {
        lab.spawn(
            &cns,
            "tcpdump",
            &[
                "-i",
                &format!("{tag}cp0"),
                "-U",
                "-w",
                &tap_pcap.to_string_lossy(),
            ],
        )
        .unwrap()
    });
    std::thread::sleep(Duration::from_millis(800));
    // The client's connection cannot complete (the alternate origin answers from its own
    // address): what matters is where its SYNs go.
    let _ = cli.run("curl", &["-sS", "-m", "3", "http://10.0.2.3/file"]);
    std::thread::sleep(Duration::from_millis(500));
    let cs = host.swcache_status().unwrap();
    let s = router_status(&socket).unwrap();
    host.stop(&mut lab);
    std::thread::sleep(Duration::from_millis(300));
    let _ = lab.stop(&dump, Duration::from_secs(5));
    let _ = lab.stop(&srv_dump, Duration::from_secs(5));
    if let Some(d) = tap_dump {
        let _ = lab.stop(&d, Duration::from_secs(5));
    }
    let detail = format!(
        "\nswcache status: {cs}\nswrouter wccp: {}{}",
        s["wccp"],
        logs(&lab, &host)
    );

    let b = &cs["bypass"];
    let rewritten = b["bypassed"]["rewritten"].as_u64().unwrap();
    assert!(rewritten > 0, "nothing rewritten{detail}");
    assert_eq!(
        b["bypassed"][method].as_u64().unwrap(),
        rewritten,
        "{detail}"
    );
    assert_eq!(
        b["bypassed"]["copied"].as_u64().unwrap(),
        rewritten,
        "{detail}"
    );
    assert_eq!(b["errors"], serde_json::json!({}), "{detail}");
    assert_eq!(
        b["rewrite"],
        serde_json::json!(["10.0.2.3/32=10.0.2.9"]),
        "{detail}"
    );
    let syn = "tcp.flags.syn == 1 && tcp.flags.ack == 0";
    // On the cache link: the SYNs to 10.0.2.3 came in GRE, went back rewritten (GRE or L2),
    // and swrouter never sent a rewritten one to the cache again.
    let redirected = count(
        &cns,
        &pcap,
        &format!("ip.src == 10.0.3.1 && gre && ip.dst == 10.0.2.3 && {syn}"),
    );
    let returned = if method == "gre" {
        count(
            &cns,
            &pcap,
            &format!("ip.src == 10.0.3.2 && gre && ip.dst == 10.0.2.9 && {syn}"),
        )
    } else {
        count(&cns, &pcap, &format!("!gre && ip.dst == 10.0.2.9 && {syn}"))
    };
    let redirected_again = count(
        &cns,
        &pcap,
        &format!("ip.src == 10.0.3.1 && gre && ip.dst == 10.0.2.9 && {syn}"),
    );
    // At the origin: the same SYNs, each once, to the alternate address, none to 10.0.2.3.
    let at_alternate = count(
        &srv,
        &srv_pcap,
        &format!("ip.src == 10.0.1.2 && ip.dst == 10.0.2.9 && {syn}"),
    );
    let at_original = count(&srv, &srv_pcap, "ip.dst == 10.0.2.3");
    assert!(redirected >= 1, "no SYN redirected{detail}");
    assert_eq!(
        (returned, at_alternate, redirected_again, at_original),
        (redirected, redirected, 0, 0),
        "(returned, at the alternate origin, redirected again, at the original) for {redirected} redirected SYNs{detail}"
    );
    assert_eq!(rewritten as usize, redirected, "{detail}");
    checksums_clean(&srv, &srv_pcap);
    tshark_clean(&cns, &pcap).unwrap();
    // The copies: exactly the returned packets, rewritten.
    let copies = if copy == "pcap" {
        dir.join("returns.pcap")
    } else {
        tap_pcap
    };
    let n = count(
        &cns,
        &copies,
        "ip.src == 10.0.1.2 && ip.dst == 10.0.2.9 && tcp.dstport == 80",
    );
    assert_eq!(
        n,
        rewritten as usize,
        "copies in {}{detail}",
        copies.display()
    );
    assert_eq!(count(&cns, &copies, "ip.dst == 10.0.2.3"), 0);
    checksums_clean(&cns, &copies);
    let svc_returned = service(&s, 0).unwrap()["traffic"]["returned"]["packets"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        svc_returned >= rewritten,
        "swrouter counted {svc_returned} returned{detail}"
    );
}

#[test]
fn rewritten_return_by_gre_reaches_the_alternate_origin_once_and_is_copied_to_pcap() {
    rewritten_returns("rwg", "gre", "pcap");
}

#[test]
fn rewritten_return_at_l2_reaches_the_alternate_origin_once_and_is_copied_to_tap() {
    rewritten_returns("rwl", "l2", "tap");
}
