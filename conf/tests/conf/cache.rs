//! cache.conf (swcache's file): a complete file, the defaults, the effective config round trip,
//! and every error with its exact line, column and message.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use conf::cache::{load_file, parse_str, CacheConf, CacheServiceConf};
use conf::LogLevel;
use wccp::engine::{AssignmentMethod, ForwardingMethod, ReturnMethod};
use wccp::wire::{ServiceFlags, ServiceInfo, ServiceType};

/// A file that uses every key.
const FULL: &str = r#"[cache]
address = "10.0.3.2"
gre-only = false
tun = "wccp1"
socket = "/run/swcache/a.sock"
log-level = "debug"
bypass = ["10.0.2.3", "192.0.2.0/24"]
return-rewrite = ["10.0.2.4=10.0.2.9", "198.51.100.0/24=10.0.2.8"]
return-copy = "pcap:/var/tmp/returns.pcap"

[wccp]
routers = ["10.0.3.1", "10.0.4.1"]
weight = 500
forwarding = ["l2", "gre"]
return = ["l2"]
assignment = ["mask", "hash"]
transmit-timer-ms = 500
timeout-scale = 2
ra-timer-scale = 3

[[wccp.service]]
id = 0
password = "secret"

[[wccp.service]]
id = 61
password = "other"
protocol = "udp"
priority = 10
ports = [53, 5353]
port-type = "source"
hash = ["src-port", "src-ip"]
alternate-hash = ["dst-ip"]
"#;

#[test]
fn full_file_parses() {
    let c = parse_str("cache.conf", FULL).unwrap();
    assert_eq!(c.address, Some(Ipv4Addr::new(10, 0, 3, 2)));
    assert!(!c.gre_only);
    assert_eq!(c.tun, "wccp1");
    assert_eq!(c.socket, Some(PathBuf::from("/run/swcache/a.sock")));
    assert_eq!(c.log_level, LogLevel::Debug);
    assert_eq!(
        c.bypass,
        vec![
            "10.0.2.3/32".parse().unwrap(),
            "192.0.2.0/24".parse().unwrap()
        ]
    );
    assert_eq!(
        c.routers,
        vec![Ipv4Addr::new(10, 0, 3, 1), Ipv4Addr::new(10, 0, 4, 1)]
    );
    assert_eq!(c.weight, 500);
    assert_eq!(
        c.forwarding,
        ForwardingMethod::ALL
            .iter()
            .rev()
            .copied()
            .collect::<Vec<_>>()
    );
    assert_eq!(c.packet_return, vec![ReturnMethod::L2]);
    assert_eq!(
        c.assignment,
        vec![AssignmentMethod::Mask, AssignmentMethod::Hash]
    );
    assert_eq!(c.services.len(), 2);
    assert_eq!(
        c.services[0],
        CacheServiceConf {
            service: ServiceInfo::standard(0),
            password: Some("secret".into()),
        }
    );
    let d = &c.services[1].service;
    assert_eq!(d.service_type, ServiceType::Dynamic);
    assert_eq!((d.service_id, d.protocol, d.priority), (61, 17, 10));
    assert_eq!(d.port_list(), &[53, 5353]);
    assert_eq!(
        d.flags,
        ServiceFlags::PORTS_DEFINED
            | ServiceFlags::PORTS_SOURCE
            | ServiceFlags::SRC_IP_HASH
            | ServiceFlags::SRC_PORT_HASH
            | ServiceFlags::DST_IP_ALT_HASH
    );
    // The engine gets all of it.
    let e = c.engine_config().unwrap().unwrap();
    assert_eq!(e.address, Ipv4Addr::new(10, 0, 3, 2));
    assert_eq!(e.routers, c.routers);
    assert_eq!(e.weight, 500);
    assert_eq!(e.forwarding, c.forwarding);
    assert_eq!(e.packet_return, c.packet_return);
    assert_eq!(e.assignment, c.assignment);
    assert_eq!(
        e.timers,
        wccp::timer::TimerConfig {
            transmit_t: std::time::Duration::from_millis(500),
            timeout_scale: 2,
            ra_timer_scale: 3,
        }
    );
    assert_eq!(e.services[1].service, *d);
}

#[test]
fn full_file_round_trips_through_the_effective_config() {
    let c = parse_str("cache.conf", FULL).unwrap();
    assert_eq!(
        c.return_rewrite
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>(),
        ["10.0.2.4/32=10.0.2.9", "198.51.100.0/24=10.0.2.8"]
    );
    assert_eq!(
        c.return_copy,
        Some(conf::cache::ReturnCopy::Pcap(
            "/var/tmp/returns.pcap".into()
        ))
    );
    let text = c.to_toml();
    assert!(
        text.starts_with("# swcache effective configuration"),
        "{text}"
    );
    assert_eq!(parse_str("effective", &text).unwrap(), c, "{text}");
}

#[test]
fn an_empty_file_is_the_defaults() {
    let c = parse_str("empty.conf", "").unwrap();
    assert_eq!(c, CacheConf::default());
    assert_eq!(c.tun, "wccp0");
    assert_eq!(c.weight, 10000);
    assert_eq!(c.forwarding, vec![ForwardingMethod::Gre]);
    assert_eq!(c.packet_return, vec![ReturnMethod::Gre]);
    assert_eq!(c.assignment, vec![AssignmentMethod::Hash]);
    assert_eq!(c.services, vec![CacheServiceConf::standard()]);
    assert_eq!(c.log_level, LogLevel::Info);
    assert!(c.address.is_none() && c.routers.is_empty() && c.socket.is_none());
    assert_eq!(parse_str("effective", &c.to_toml()).unwrap(), c);
    // Without an address and a router there is no engine to start (flags may still add them).
    assert!(c.engine_config().is_err());
}

#[test]
fn gre_only_needs_nothing_else() {
    let c = parse_str("g.conf", "[cache]\ngre-only = true\n").unwrap();
    assert!(c.gre_only);
    assert_eq!(c.engine_config(), Ok(None));
}

#[test]
fn duplicates_in_lists_are_dropped() {
    let c = parse_str(
        "d.conf",
        "[cache]\nbypass = [\"10.0.2.3\", \"10.0.2.3/32\"]\n[wccp]\nrouters = [\"10.0.3.1\", \"10.0.3.1\"]\nforwarding = [\"gre\", \"gre\"]\n",
    )
    .unwrap();
    assert_eq!(c.bypass.len(), 1);
    assert_eq!(c.routers.len(), 1);
    assert_eq!(c.forwarding, vec![ForwardingMethod::Gre]);
}

#[test]
fn every_error_points_at_its_value() {
    for (text, line, col, msg) in [
        (
            "[cache]\naddress = \"10.0.3\"\n",
            2,
            11,
            "`10.0.3` in `address` is not an IPv4 address",
        ),
        (
            "[cache]\naddress = \"224.0.0.5\"\n",
            2,
            11,
            "`224.0.0.5` in `address` is not a unicast address another host can reach",
        ),
        (
            "[cache]\ntun = \"wccp/0\"\n",
            2,
            7,
            "tun: interface name \"wccp/0\" contains '/'",
        ),
        (
            "[cache]\nsocket = \"swcache.sock\"\n",
            2,
            10,
            "socket `swcache.sock` must be an absolute path, e.g. \"/run/swcache.sock\"",
        ),
        (
            "[cache]\nsocket = \"\"\n",
            2,
            10,
            "socket must not be empty; leave `socket` out for no status socket",
        ),
        (
            "[cache]\nlog-level = \"loud\"\n",
            2,
            13,
            "unknown log level `loud`; expected one of: error, warn, info, debug, trace",
        ),
        (
            "[cache]\ngre-only = \"yes\"\n",
            2,
            12,
            "invalid type: string \"yes\", expected a boolean",
        ),
        (
            "[cache]\nbypass = [\"10.0.2.0/24\", \"10.0.2.77/24\"]\n",
            2,
            26,
            "`10.0.2.77/24` in `bypass` has host bits set; did you mean 10.0.2.0/24?",
        ),
        (
            "[cache]\nbypass = [\"10.0.2.0/33\"]\n",
            2,
            11,
            "`10.0.2.0/33` in `bypass` is not an IPv4 prefix such as 10.0.2.0/24",
        ),
        (
            "[cache]\nbypass = [\"web\"]\n",
            2,
            11,
            "`web` in `bypass` is not an IPv4 address or prefix",
        ),
        (
            "[cache]\ntunn = \"x\"\n",
            2,
            1,
            "unknown key `tunn` in [cache]; expected one of: address, gre-only, tun, socket, log-level, bypass, return-rewrite, return-copy; did you mean `tun`?",
        ),
        (
            "[cahce]\n",
            1,
            2,
            "unknown section `cahce`; expected one of: [cache], [wccp]; did you mean [cache]?",
        ),
        (
            "[wccp]\nrouters = [\"10.0.3.1\", \"0.0.0.0\"]\n",
            2,
            24,
            "`0.0.0.0` in `routers` is not a unicast address another host can reach",
        ),
        (
            "[wccp]\nweight = 65536\n",
            2,
            10,
            "weight = 65536 is out of range; expected 0..=65535 (default 10000)",
        ),
        (
            "[wccp]\nforwarding = [\"gre\", \"ip\"]\n",
            2,
            14,
            "unknown forwarding method `ip`; expected gre and/or l2",
        ),
        (
            "[wccp]\nreturn = []\n",
            2,
            10,
            "`return` needs at least one method (gre and/or l2)",
        ),
        (
            "[wccp]\nassignment = [\"buckets\"]\n",
            2,
            14,
            "unknown assignment method `buckets`; expected hash and/or mask",
        ),
        (
            "[wccp]\nrouter = [\"10.0.3.1\"]\n",
            2,
            1,
            "unknown key `router` in [wccp]; expected one of: routers, multicast-group, weight, forwarding, return, assignment, transmit-timer-ms, timeout-scale, ra-timer-scale, service; did you mean `routers`?",
        ),
        (
            "[[wccp.service]]\nid = 256\n",
            2,
            6,
            "WCCP service id 256 is not supported; use 0 (the standard web-cache service) or a dynamic service 1..=255",
        ),
        (
            "[[wccp.service]]\nid = 0\n\n[[wccp.service]]\nid = 0\n",
            5,
            6,
            "WCCP service 0 is already defined at line 1",
        ),
        (
            "[[wccp.service]]\nid = 0\npassword = \"toolongpw\"\n",
            3,
            12,
            "WCCP password must be 1..=8 bytes",
        ),
        (
            "[[wccp.service]]\nid = 0\nports = [80]\n",
            3,
            9,
            "the standard service 0 is TCP port 80 by definition",
        ),
        (
            "[[wccp.service]]\nid = 90\n",
            2,
            6,
            "dynamic service 90 needs its definition: at least `protocol`",
        ),
        (
            "[[wccp.service]]\nid = 90\nports = [80]\n",
            3,
            9,
            "the definition of service 90 needs `protocol`",
        ),
        (
            "[[wccp.service]]\nid = 90\nprotocol = \"sctp\"\n",
            3,
            12,
            "unknown protocol `sctp`",
        ),
        (
            "[[wccp.service]]\nid = 90\nprotocol = \"tcp\"\nports = [1, 2, 3, 4, 5, 6, 7, 8, 9]\n",
            4,
            9,
            "a WCCP service carries at most 8 ports; this list has 9",
        ),
        (
            "[[wccp.service]]\nid = 90\nprotocol = \"tcp\"\nhash = [\"dst-mac\"]\n",
            4,
            8,
            "unknown hash field `dst-mac`",
        ),
        (
            "[[wccp.service]]\nid = 90\nprotocol = \"tcp\"\nport-type = \"both\"\n",
            4,
            13,
            "unknown port-type `both`",
        ),
        (
            "[[wccp.service]]\nid = 90\nprotocol = \"tcp\"\ncaches = [\"10.0.3.2\"]\n",
            4,
            1,
            "unknown key `caches` in [[wccp.service]]; expected one of: id, password, protocol, priority, ports, port-type, hash, alternate-hash",
        ),
        (
            "[[wccp.service]]\npassword = \"x\"\n",
            1,
            1,
            "missing key `id` in [[wccp.service]]",
        ),
        (
            "[wccp]\ntransmit-timer-ms = 100\n",
            2,
            21,
            "transmit-timer-ms = 100 is out of range; expected 500..=60000 (default 10000",
        ),
        (
            "[wccp]\ntimeout-scale = 0\n",
            2,
            17,
            "timeout-scale = 0 is out of range; expected 1..=5",
        ),
        (
            "[wccp]\nra-timer-scale = 6\n",
            2,
            18,
            "ra-timer-scale = 6 is out of range; expected 1..=5",
        ),
        ("[cache\n", 1, 7, "invalid table header"),
        (
            "[cache]\nreturn-rewrite = [\"10.0.2.3/32\"]\n",
            2,
            19,
            "return-rewrite: `10.0.2.3/32` is not PREFIX=ADDRESS",
        ),
        (
            "[cache]\nreturn-rewrite = [\"10.0.2.3/24=10.0.2.9\"]\n",
            2,
            19,
            "return-rewrite: `10.0.2.3/24=10.0.2.9`: `10.0.2.3/24` has host bits set",
        ),
        (
            "[cache]\nreturn-rewrite = [\"10.0.2.3=10.0.2.9\", \"10.0.2.3/32=10.0.2.8\"]\n",
            2,
            40,
            "return-rewrite: 10.0.2.3/32 is rewritten twice",
        ),
        (
            "[cache]\nreturn-copy = \"file:/x\"\n",
            2,
            15,
            "return-copy: `file:/x` is not pcap:FILE or tap:NAME",
        ),
        (
            "[cache]\nreturn-copy = \"pcap:relative.pcap\"\n",
            2,
            15,
            "return-copy: `pcap:relative.pcap`: the pcap file must be an absolute path",
        ),
    ] {
        let e = parse_str("cache.conf", text).unwrap_err();
        assert_eq!(e.file, "cache.conf", "{text}");
        assert_eq!((e.line, e.col), (line, col), "{text}: {e}");
        assert!(e.msg.starts_with(msg), "{text}: {e}");
        assert_eq!(
            e.to_string(),
            format!("cache.conf:{line}:{col}: {}", e.msg),
            "{text}"
        );
    }
}

#[test]
fn load_file_reports_unreadable_and_non_utf8_files() {
    let e = load_file(std::path::Path::new("/nonexistent/cache.conf")).unwrap_err();
    assert_eq!((e.line, e.col), (0, 0));
    assert!(e.msg.starts_with("cannot read:"), "{e}");
    let path = std::env::temp_dir().join(format!("swcache-conf-{}.conf", std::process::id()));
    std::fs::write(&path, b"[cache]\ntun = \"w\xff\"\n").unwrap();
    let e = load_file(&path).unwrap_err();
    let _ = std::fs::remove_file(&path);
    assert_eq!(
        (e.line, e.col, e.msg.as_str()),
        (2, 9, "file is not valid UTF-8 text")
    );
}

/// The first TOML example after `heading` in `readme`, parsed as a cache.conf.
fn readme_example(readme: &str, heading: &str) -> CacheConf {
    let section = &readme[readme.find(heading).expect("the README has the section")..];
    let start = section
        .find("```toml\n")
        .expect("the section has a toml example")
        + "```toml\n".len();
    let len = section[start..].find("```").expect("example is closed");
    parse_str("README.md", &section[start..start + len]).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn readme_example_validates() {
    let c = readme_example(include_str!("../../README.md"), "## `cache.conf`");
    assert_eq!(c.address, Some(Ipv4Addr::new(10, 0, 3, 2)));
    assert_eq!(c.services[0].password.as_deref(), Some("secret"));
    assert!(c.engine_config().unwrap().is_some());
}

#[test]
fn project_readme_example_validates() {
    let c = readme_example(include_str!("../../../README.md"), "## The swcache agent");
    assert_eq!(c.address, Some(Ipv4Addr::new(10, 0, 3, 2)));
    assert_eq!(c.socket, Some(PathBuf::from("/run/swcache.sock")));
    assert_eq!(c.bypass, vec!["10.0.2.80/32".parse().unwrap()]);
    assert_eq!(c.services[0].password.as_deref(), Some("secret"));
    assert!(c.engine_config().unwrap().is_some());
}

#[test]
fn service_ids_1_to_50_are_dynamic_services() {
    // Like the router (and IOS), swcache takes the draft's reserved ids as dynamic services.
    for id in [1u8, 50] {
        let text = format!("[[wccp.service]]\nid = {id}\nprotocol = \"tcp\"\nports = [8080]\n");
        let c = parse_str("cache.conf", &text).unwrap_or_else(|e| panic!("id {id}: {e}"));
        let s = &c.services[0].service;
        assert_eq!((s.service_type, s.service_id), (ServiceType::Dynamic, id));
        assert_eq!(parse_str("effective", &c.to_toml()).unwrap(), c);
    }
    let spec = conf::cache::parse_service_spec("7:tcp:8080").unwrap();
    assert_eq!(
        (spec.service_type, spec.service_id),
        (ServiceType::Dynamic, 7)
    );
}
