//! WCCP variants end to end, each through swrouter with swcache and Debian's Squid where a
//! cache serves: mask assignment with L2 forwarding (and a rogue swcache on the client side
//! that never joins; the default probe over L2 fails a crashed proxy or broken interception
//! over within 1 s); MD5 with a good and a bad password;
//! redirect-out on the server-side interface together with a redirect-list deny.
//!
//! ```text
//! client 10.0.1.2 ── eth0 10.0.1.1 [swrouter] eth1 10.0.2.1 ── server 10.0.2.2, 10.0.2.3
//!                         eth2 10.0.3.1 ── cache 10.0.3.2 (swcache + Squid)
//!                         eth3 10.0.4.1 ── cache 10.0.4.2 (second cache, MD5 test only)
//! ```
#![allow(clippy::unwrap_used, missing_docs)]

use integration::wccplab::{
    bucket_of, bucket_owners, cache, router_status, service, via, wait_for, CacheHost,
};
use integration::{binary, io_backend, require_root};
use netlab::{Lab, Ns, ProcHandle};
use std::path::PathBuf;
use std::time::Duration;

/// Client, router, server and one or two cache namespaces, swrouter running (also used by
/// `wccp_barrage`).
pub(crate) struct WccpLab {
    pub(crate) lab: Lab,
    pub(crate) cli: Ns,
    pub(crate) caches: Vec<Ns>,
    pub(crate) socket: PathBuf,
    pub(crate) conf: PathBuf,
    pub(crate) router: ProcHandle,
    pub(crate) web: ProcHandle,
}

impl WccpLab {
    /// The topology with `n_caches` cache namespaces; `ifaces` holds the extra keys of eth0,
    /// eth1 and eth2 (in that order); `wccp` the `[wccp]`… part of the config.
    pub(crate) fn new(tag: &str, n_caches: usize, ifaces: [&str; 3], wccp: &str) -> WccpLab {
        require_root();
        let mut lab = Lab::new(tag).unwrap();
        let cli = lab.add_ns("cli").unwrap();
        let rtr = lab.add_ns("rtr").unwrap();
        let srv = lab.add_ns("srv").unwrap();
        lab.link(&cli, "eth0", &rtr, "eth0").unwrap();
        lab.link(&rtr, "eth1", &srv, "eth0").unwrap();
        cli.add_addr("eth0", "10.0.1.2/24").unwrap();
        cli.add_route("default", "10.0.1.1").unwrap();
        srv.add_addr("eth0", "10.0.2.2/24").unwrap();
        srv.add_addr("eth0", "10.0.2.3/24").unwrap();
        srv.add_route("default", "10.0.2.1").unwrap();
        let mut caches = Vec::new();
        let mut extra = String::new();
        for i in 0..n_caches {
            let ns = lab.add_ns(&format!("c{i}")).unwrap();
            let net = 3 + i;
            lab.link(&rtr, &format!("eth{}", 2 + i), &ns, "eth0")
                .unwrap();
            ns.add_addr("eth0", &format!("10.0.{net}.2/24")).unwrap();
            ns.add_route("default", &format!("10.0.{net}.1")).unwrap();
            let keys = if i == 0 { ifaces[2] } else { "" };
            extra.push_str(&format!(
                "[[interface]]\nname = \"eth{}\"\naddress = \"10.0.{net}.1/24\"\n{keys}\n\n",
                2 + i
            ));
            caches.push(ns);
        }
        let dir = lab.dir().to_path_buf();
        let socket = dir.join("swrouter.sock");
        let conf = format!(
            "[router]\nmanagement-socket = \"{}\"\nlog-level = \"debug\"\nio-backend = \"{}\"\n\n\
             [[interface]]\nname = \"eth0\"\naddress = \"10.0.1.1/24\"\n{}\n\n\
             [[interface]]\nname = \"eth1\"\naddress = \"10.0.2.1/24\"\n{}\n\n{extra}{wccp}",
            socket.display(),
            io_backend(),
            ifaces[0],
            ifaces[1]
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
        WccpLab {
            lab,
            cli,
            caches,
            socket,
            conf: conf_path,
            router,
            web,
        }
    }

    /// curl from the client; (success, response, Via).
    pub(crate) fn fetch(&self, url: &str) -> (bool, String, Option<String>) {
        integration::wccplab::fetch(&self.cli, url)
    }

    pub(crate) fn logs(&self, hosts: &[&CacheHost]) -> String {
        let mut s = format!(
            "\n===== swrouter =====\n{}\n===== web =====\n{}",
            self.lab.logs(&self.router),
            self.lab.logs(&self.web)
        );
        for h in hosts {
            s.push_str(&h.logs(&self.lab));
        }
        s.push_str(&format!(
            "\nstatus: {}",
            router_status(&self.socket)
                .map(|s| s["wccp"].to_string())
                .unwrap_or_default()
        ));
        s
    }

    /// Waits until `addr` holds a share of service 0 in the data plane.
    pub(crate) fn wait_assigned(&self, addr: &str, hosts: &[&CacheHost]) -> serde_json::Value {
        self.wait_assigned_in(0, addr, hosts)
    }

    /// Waits until `addr` holds a share of service `id` in the data plane.
    fn wait_assigned_in(&self, id: u64, addr: &str, hosts: &[&CacheHost]) -> serde_json::Value {
        wait_for(Duration::from_secs(45), Duration::from_millis(500), || {
            router_status(&self.socket).filter(|s| {
                cache(s, id, addr).is_some_and(|c| {
                    c["buckets"].as_u64().unwrap_or(0) + c["mask_values"].as_u64().unwrap_or(0) > 0
                })
            })
        })
        .unwrap_or_else(|| panic!("{addr} got no share within 45 s{}", self.logs(hosts)))
    }
}

#[test]
fn mask_assignment_with_l2_forwarding_reaches_squid() {
    let wccp = "[wccp]\nprobe-interval-ms = 200\n\n[[wccp.service]]\nid = 0\nforwarding = [\"l2\"]\nreturn = [\"gre\"]\nassignment = [\"mask\"]\n";
    let mut l = WccpLab::new("wl2", 1, ["wccp-redirect-in = [0]", "", ""], wccp);
    let ns = l.caches[0].clone();
    // L2: the frames arrive unchanged on the cache's LAN interface.
    let mut host = CacheHost::intercepting_on(
        &l.lab,
        &ns,
        "cache-l2",
        "10.0.3.2".parse().unwrap(),
        "10.0.3.1".parse().unwrap(),
        "eth0",
    )
    .unwrap();
    host.swcache_args = ["--forwarding", "l2", "--assignment", "mask"]
        .map(String::from)
        .to_vec();
    // A rogue cache on the client side (the group has no password and no cache list): eth0
    // redirects, so it takes no WCCP and the rogue never joins (issue 13 item 9).
    let cli = l.cli.clone();
    let rogue_sock = l.lab.dir().join("rogue.sock");
    let rogue = l
        .lab
        .spawn(
            &cli,
            &binary("swcache").to_string_lossy(),
            &[
                "--address",
                "10.0.1.2",
                "--router",
                "10.0.1.1",
                "--service",
                "0",
                "--tun",
                "wccp0",
                "--socket",
                &rogue_sock.to_string_lossy(),
            ],
        )
        .unwrap();
    host.start(&mut l.lab).unwrap();
    let s = l.wait_assigned("10.0.3.2", &[&host]);
    assert!(
        cache(&s, 0, "10.0.1.2").is_none(),
        "the client-side cache joined: {}",
        s["wccp"]
    );
    let refused = &integration::stage_of(&s, "local-delivery").unwrap()["drops"];
    assert!(
        refused["wccp-not-cache-interface"].as_u64().unwrap_or(0) > 0,
        "the rogue's HERE_I_AMs are dropped on arrival: {refused}\n{}",
        l.lab.logs(&rogue)
    );
    let c = cache(&s, 0, "10.0.3.2").unwrap();
    assert_eq!(service(&s, 0).unwrap()["assignment_method"], "mask", "{s}");
    assert!(c["methods"].as_str().unwrap().starts_with("l2/"), "{c}");
    assert!(c["mask_values"].as_u64().unwrap() > 0, "{c}");
    host.wait_squid(Duration::from_secs(15)).unwrap();
    let (ok, text, v) = l.fetch("http://10.0.2.2/file");
    assert!(ok, "{text}{}", l.logs(&[&host]));
    assert!(
        v.is_some_and(|v| v.contains("cache-l2")),
        "served by Squid over L2:\n{text}{}",
        l.logs(&[&host])
    );
    let s = router_status(&l.socket).unwrap();
    let c = cache(&s, 0, "10.0.3.2").unwrap();
    assert!(c["redirected"]["packets"].as_u64().unwrap() > 0, "{c}");
    // L2 redirection encapsulates nothing: the swcache saw no GRE.
    let cs = host.swcache_status().unwrap();
    assert_eq!(cs["gre"]["decapsulated"].as_u64().unwrap_or(0), 0, "{cs}");
    // Issue 19: the default probe reaches Squid over L2 like the clients' traffic does, so a
    // crashed proxy or a removed interception rule is failed over fast, and repaired comes back.
    assert_eq!(service(&s, 0).unwrap()["probe"], "redirect to port 80");
    assert_eq!(c["probe"], "up", "{c}");
    let cli = l.cli.clone();
    let socket = l.socket.clone();
    let summary = integration::wccplab::check_redirect_probe_failover(
        &mut l.lab,
        &mut host,
        &socket,
        0,
        200,
        || {
            let (ok, text, v) = integration::wccplab::fetch(&cli, "http://10.0.2.2/file");
            (ok && v.is_none(), text)
        },
    )
    .unwrap_or_else(|e| panic!("{e:#}{}", l.logs(&[&host])));
    eprintln!("{summary}");
    let cs = host.swcache_status().unwrap();
    assert_eq!(
        cs["gre"]["decapsulated"].as_u64().unwrap_or(0),
        0,
        "the probes went by L2 too: {cs}"
    );
    host.stop(&mut l.lab);
}

#[test]
fn md5_good_password_joins_and_bad_password_is_refused() {
    let wccp = "[[wccp.service]]\nid = 0\npassword = \"s3cret\"\n";
    let mut l = WccpLab::new("wmd5", 2, ["wccp-redirect-in = [0]", "", ""], wccp);
    let (n0, n1) = (l.caches[0].clone(), l.caches[1].clone());
    let mut good = CacheHost::new(
        &l.lab,
        &n0,
        "cache-good",
        "10.0.3.2".parse().unwrap(),
        "10.0.3.1".parse().unwrap(),
    )
    .unwrap();
    good.swcache_args = ["--password", "s3cret"].map(String::from).to_vec();
    let mut bad = CacheHost::new(
        &l.lab,
        &n1,
        "cache-bad",
        "10.0.4.2".parse().unwrap(),
        "10.0.4.1".parse().unwrap(),
    )
    .unwrap();
    bad.swcache_args = ["--password", "wrong"].map(String::from).to_vec();
    good.start(&mut l.lab).unwrap();
    bad.start(&mut l.lab).unwrap();
    let s = l.wait_assigned("10.0.3.2", &[&good, &bad]);
    let svc = service(&s, 0).unwrap();
    assert_eq!(svc["security"], "md5");
    assert!(
        cache(&s, 0, "10.0.4.2").is_none(),
        "the bad password never joins: {svc}"
    );
    assert!(
        svc["drops"]["wccp-md5-mismatch"].as_u64().unwrap_or(0) > 0,
        "bad MD5 counted: {svc}"
    );
    assert_eq!(cache(&s, 0, "10.0.3.2").unwrap()["buckets"], 256);
    good.wait_squid(Duration::from_secs(15)).unwrap();
    let (ok, text, v) = l.fetch("http://10.0.2.2/file");
    assert!(
        ok && v.is_some_and(|v| v.contains("cache-good")),
        "{text}{}",
        l.logs(&[&good, &bad])
    );
    good.stop(&mut l.lab);
    bad.stop(&mut l.lab);
}

#[test]
fn redirect_out_and_redirect_list_deny() {
    // Nothing is redirected in on the client side: eth1 redirects what leaves toward the
    // server, and the redirect list keeps 10.0.2.3 away from the cache.
    let wccp = "[[wccp.service]]\nid = 0\n\n\
                [[wccp.service.redirect-list]]\naction = \"deny\"\ndestination = \"10.0.2.3\"\n\n\
                [[wccp.service.redirect-list]]\naction = \"permit\"\n";
    let mut l = WccpLab::new(
        "wout",
        1,
        ["", "wccp-redirect-out = [0]", "wccp-exclude-in = true"],
        wccp,
    );
    let ns = l.caches[0].clone();
    let mut host = CacheHost::new(
        &l.lab,
        &ns,
        "cache-out",
        "10.0.3.2".parse().unwrap(),
        "10.0.3.1".parse().unwrap(),
    )
    .unwrap();
    host.start(&mut l.lab).unwrap();
    l.wait_assigned("10.0.3.2", &[&host]);
    host.wait_squid(Duration::from_secs(15)).unwrap();
    let (ok, text, v) = l.fetch("http://10.0.2.2/file");
    assert!(
        ok && v.is_some_and(|v| v.contains("cache-out")),
        "redirected out:\n{text}{}",
        l.logs(&[&host])
    );
    let (ok, text, v) = l.fetch("http://10.0.2.3/file");
    assert!(ok, "{text}");
    assert!(
        v.is_none(),
        "denied by the redirect list, fetched directly:\n{text}"
    );
    let s = router_status(&l.socket).unwrap();
    let t = &service(&s, 0).unwrap()["traffic"];
    assert!(t["denied"]["packets"].as_u64().unwrap() > 0, "{t}");
    assert!(t["redirected"]["packets"].as_u64().unwrap() > 0, "{t}");
    // Squid's own fetches leave through eth1 too; had they been redirected back to the cache,
    // the first fetch above would have looped instead of returning the origin's page.

    // Hot reload: drop the deny rule and grow the group list (issue 13 item 16: applied in
    // place); the group keeps its cache and assignment, so redirection never stops.
    let text = std::fs::read_to_string(&l.conf).unwrap();
    let text = text
        .replace(
            "action = \"deny\"\ndestination = \"10.0.2.3\"",
            "action = \"permit\"",
        )
        .replace(
            "id = 0\n",
            "id = 0\ncaches = [\"10.0.3.2\", \"10.0.3.9\"]\n",
        );
    std::fs::write(&l.conf, text).unwrap();
    let out = std::process::Command::new(binary("swrouter"))
        .args(["reload", "-s", &l.socket.to_string_lossy()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let s2 = router_status(&l.socket).unwrap();
    let (before, after) = (
        cache(&s, 0, "10.0.3.2").unwrap(),
        cache(&s2, 0, "10.0.3.2").unwrap(),
    );
    assert_eq!(after["usable"], true, "{after}");
    assert_eq!(after["buckets"], before["buckets"], "assignment kept");
    assert_eq!(
        service(&s2, 0).unwrap()["key"],
        service(&s, 0).unwrap()["key"]
    );
    assert_eq!(s2["router"]["reloads"], 1);
    let (ok, text, v) = l.fetch("http://10.0.2.3/file");
    assert!(
        ok && v.is_some_and(|v| v.contains("cache-out")),
        "redirected after the reload:\n{text}"
    );
    host.stop(&mut l.lab);
}

#[test]
fn source_port_hashing_spreads_one_clients_flows_over_two_caches() {
    // A dynamic service pinned by the router: TCP port 80 hashed on the source port only, so
    // flows from one client to one server spread over the caches by their source port.
    let wccp =
        "[[wccp.service]]\nid = 61\nprotocol = \"tcp\"\nports = [80]\nhash = [\"src-port\"]\n";
    let mut l = WccpLab::new("wsp", 2, ["wccp-redirect-in = [61]", "", ""], wccp);
    let (n0, n1) = (l.caches[0].clone(), l.caches[1].clone());
    let mut a = CacheHost::new(
        &l.lab,
        &n0,
        "cache-a",
        "10.0.3.2".parse().unwrap(),
        "10.0.3.1".parse().unwrap(),
    )
    .unwrap();
    let mut b = CacheHost::new(
        &l.lab,
        &n1,
        "cache-b",
        "10.0.4.2".parse().unwrap(),
        "10.0.4.1".parse().unwrap(),
    )
    .unwrap();
    for h in [&mut a, &mut b] {
        h.service = "61:tcp:80:src-port".into();
        h.start(&mut l.lab).unwrap();
    }
    let s = wait_for(Duration::from_secs(60), Duration::from_millis(500), || {
        router_status(&l.socket).filter(|s| {
            let held = |x| {
                cache(s, 61, x)
                    .and_then(|c| c["buckets"].as_u64())
                    .unwrap_or(0)
            };
            held("10.0.3.2") > 0
                && held("10.0.4.2") > 0
                && held("10.0.3.2") + held("10.0.4.2") == 256
        })
    })
    .unwrap_or_else(|| panic!("the caches did not share service 61{}", l.logs(&[&a, &b])));
    let def = service(&s, 61).unwrap()["definition"]
        .as_str()
        .unwrap()
        .to_string();
    // SRC_PORT_HASH (0x4) | PORTS_DEFINED (0x10), exactly as pinned.
    assert!(def.contains("ServiceFlags(20)"), "{def}");
    a.wait_squid(Duration::from_secs(15)).unwrap();
    b.wait_squid(Duration::from_secs(15)).unwrap();
    let owners = bucket_owners(&s, 61);
    let flags = wccp::wire::ServiceFlags::SRC_PORT_HASH;
    let (cli, srv) = ("10.0.1.2".parse().unwrap(), "10.0.2.2".parse().unwrap());
    let mut served = std::collections::BTreeMap::new();
    for port in (40000u16..).step_by(37).take(12) {
        let want = match owners[bucket_of(flags, cli, srv, port, 80)].map(|o| o.to_string()) {
            Some(o) if o == "10.0.3.2" => "cache-a",
            Some(_) => "cache-b",
            None => panic!("bucket without owner"),
        };
        let out = l
            .cli
            .run(
                "curl",
                &[
                    "-sS",
                    "-m",
                    "10",
                    "-D",
                    "-",
                    "--local-port",
                    &port.to_string(),
                    "http://10.0.2.2/file",
                ],
            )
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let v = via(&text).unwrap_or_default();
        assert!(
            out.status.success() && v.contains(want),
            "source port {port} should land on {want}:\n{text}{}",
            l.logs(&[&a, &b])
        );
        *served.entry(want).or_insert(0) += 1;
    }
    assert_eq!(
        served.len(),
        2,
        "one client's flows spread over both caches: {served:?}"
    );
    a.stop(&mut l.lab);
    b.stop(&mut l.lab);
}
