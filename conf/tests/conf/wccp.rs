//! The WCCP keys of router.conf: interface redirect in/out/exclude, `[wccp]` options, pinned
//! dynamic definitions and redirect lists; effective config round trip and error positions.

use conf::{parse_str, WccpAclAction, WccpProbe};
use wccp::wire::{ServiceFlags, ServiceInfo, ServiceType};

const BASE: &str = r#"[[interface]]
name = "eth0"
address = "10.0.1.1/24"
wccp-redirect-in = [0, 61]

[[interface]]
name = "eth1"
address = "10.0.2.1/24"
wccp-redirect-out = [61]
wccp-exclude-in = true

[wccp]
probe-interval-ms = 200
flow-affinity-max-flows = 1024

[[wccp.service]]
id = 0
probe-port = 3128

[[wccp.service.redirect-list]]
action = "deny"
destination = "10.0.2.9"

[[wccp.service.redirect-list]]
action = "permit"
protocol = "tcp"
source = "10.0.1.0/24"
destination-port = "80-90"

[[wccp.service]]
id = 61
protocol = "udp"
priority = 10
ports = [53, 5353]
port-type = "source"
hash = ["src-ip", "src-port"]
alternate-hash = ["dst-ip"]

# The caches' own segment (the two above redirect, so they take no WCCP).
[[interface]]
name = "eth2"
address = "10.0.3.1/24"
"#;

#[test]
fn full_wccp_config_parses_and_round_trips() {
    let c = parse_str("w.conf", BASE).unwrap();
    assert_eq!(c.interfaces[0].wccp_redirect_in, vec![0, 61]);
    assert_eq!(c.interfaces[1].wccp_redirect_out, vec![61]);
    assert!(c.interfaces[1].wccp_exclude_in && !c.interfaces[0].wccp_exclude_in);
    assert_eq!(c.wccp_options.probe_interval_ms, 200);
    assert_eq!(c.wccp_options.probe_misses, 3, "default");
    assert!(c.wccp_options.fast_failover && c.wccp_options.flow_affinity);
    assert_eq!(c.wccp_options.affinity_max_flows, 1024);
    let s0 = &c.wccp[0];
    assert_eq!(
        s0.probe,
        WccpProbe::Direct { port: 3128 },
        "probe-port alone means the direct probe, as before `probe` existed"
    );
    assert_eq!(s0.redirect_list.len(), 2);
    assert_eq!(s0.redirect_list[0].action, WccpAclAction::Deny);
    assert_eq!(s0.redirect_list[1].destination_port, Some((80, 90)));
    let (a, b, srv) = (
        "10.0.1.7".parse().unwrap(),
        "10.0.3.3".parse().unwrap(),
        "10.0.2.9".parse().unwrap(),
    );
    assert!(s0.permits(6, a, b, 40000, 80));
    assert!(!s0.permits(6, a, srv, 40000, 80), "deny rule first");
    assert!(!s0.permits(6, b, a, 40000, 80), "implicit deny");
    let d = c.wccp[1].definition.as_ref().unwrap();
    assert_eq!(d.service_type, ServiceType::Dynamic);
    assert_eq!((d.service_id, d.protocol, d.priority), (61, 17, 10));
    assert_eq!(d.port_list(), &[53, 5353]);
    assert_eq!(
        d.flags,
        ServiceFlags::PORTS_SOURCE
            | ServiceFlags::PORTS_DEFINED
            | ServiceFlags::SRC_IP_HASH
            | ServiceFlags::SRC_PORT_HASH
            | ServiceFlags::DST_IP_ALT_HASH
    );
    // The router engine gets exactly this definition pinned, and the file's methods as bits.
    let e = c.wccp[1].engine_config();
    assert_eq!(e.definition.as_ref(), Some(d));
    assert_eq!(e.service_id, 61);
    let e0 = c.wccp[0].engine_config();
    assert_eq!(e0.service_type, ServiceType::Standard);
    assert_eq!(e0.definition, None);
    assert_eq!(
        ServiceInfo::standard(0).effective_flags(),
        ServiceFlags::DST_IP_HASH
    );
    assert_eq!(c.wccp[1].probe, WccpProbe::Redirect, "default");
    let again = parse_str("w.conf", &c.to_toml()).unwrap();
    assert_eq!(again, c, "effective config:\n{}", c.to_toml());
}

#[test]
fn wccp_errors_point_at_the_value() {
    for (from, to, line, col, msg) in [
        (
            "destination = \"10.0.2.9\"",
            "destination = \"10.0.2.9/24\"",
            22,
            15,
            "`10.0.2.9/24` in `destination` has host bits set; did you mean 10.0.2.0/24?",
        ),
        (
            "action = \"deny\"",
            "action = \"drop\"",
            21,
            10,
            "unknown action `drop`; expected permit or deny",
        ),
        (
            "destination-port = \"80-90\"",
            "destination-port = \"90-80\"",
            28,
            20,
            "`destination-port` must be a port (80) or a range (\"8000-8080\") within 0..=65535",
        ),
        (
            "wccp-redirect-out = [61]",
            "wccp-redirect-out = [62]",
            9,
            21,
            "interface `eth1` redirects WCCP service 62 out, which no [[wccp.service]] defines",
        ),
        (
            "probe-interval-ms = 200",
            "probe-interval-ms = 5",
            13,
            21,
            "probe-interval-ms = 5 is out of range; expected 50..=10000 (default 250)",
        ),
        (
            "port-type = \"source\"",
            "port-type = \"both\"",
            35,
            13,
            "unknown port-type `both`; expected destination or source",
        ),
        (
            "ports = [53, 5353]",
            "ports = [1, 2, 3, 4, 5, 6, 7, 8, 9]",
            34,
            9,
            "a WCCP service carries at most 8 ports; this list has 9",
        ),
        (
            "probe-port = 3128",
            "probe-port = 3128\nprotocol = \"tcp\"",
            19,
            12,
            "the standard service 0 is TCP port 80 by definition; protocol, priority, ports, port-type and hash apply to dynamic services (1..=255) only",
        ),
        (
            "action = \"permit\"",
            "action = \"permit\"\nsrc = \"10.0.0.0/8\"",
            26,
            1,
            "unknown key `src` in [[wccp.service.redirect-list]]; expected one of: action, protocol, source, destination, source-port, destination-port",
        ),
    ] {
        assert!(BASE.contains(from), "{from}");
        let text = BASE.replacen(from, to, 1);
        let e = parse_str("w.conf", &text).expect_err(to);
        assert_eq!((e.line, e.col, e.msg.as_str()), (line, col, msg), "{to}");
    }
}

#[test]
fn probe_modes_default_to_redirect_and_keep_probe_port_compatible() {
    let svc = |keys: &str| {
        format!(
            "[[interface]]\nname = \"eth0\"\naddress = \"10.0.3.1/24\"\n\n[[wccp.service]]\nid = 0\n{keys}"
        )
    };
    for (keys, want) in [
        ("", WccpProbe::Redirect),
        ("probe = \"redirect\"\n", WccpProbe::Redirect),
        ("probe = \"off\"\n", WccpProbe::Off),
        ("probe = \"direct\"\n", WccpProbe::Direct { port: 80 }),
        (
            "probe = \"direct\"\nprobe-port = 3128\n",
            WccpProbe::Direct { port: 3128 },
        ),
        ("probe-port = 8080\n", WccpProbe::Direct { port: 8080 }),
    ] {
        let c = parse_str("p.conf", &svc(keys)).unwrap_or_else(|e| panic!("{keys}: {e}"));
        assert_eq!(c.wccp[0].probe, want, "{keys}");
        // The effective config names the mode and says the same again.
        let text = c.to_toml();
        assert!(
            text.contains(&format!("probe = \"{}\"", want.as_str())),
            "{text}"
        );
        assert_eq!(parse_str("again.conf", &text).unwrap(), c, "{text}");
    }
    for (keys, line, col, msg) in [
        (
            "probe = \"tcp\"\n",
            7,
            9,
            "unknown probe `tcp`; expected redirect, direct or off",
        ),
        (
            "probe = \"redirect\"\nprobe-port = 3128\n",
            8,
            14,
            "probe-port applies only to probe = \"direct\" (this service has probe = \"redirect\", which probes the service's own port through the redirection path)",
        ),
        (
            "probe = \"off\"\nprobe-port = 3128\n",
            8,
            14,
            "probe-port applies only to probe = \"direct\" (this service has probe = \"off\")",
        ),
    ] {
        let e = parse_str("p.conf", &svc(keys)).expect_err(keys);
        assert_eq!((e.line, e.col, e.msg.as_str()), (line, col, msg), "{keys}");
    }
}

#[test]
fn caches_join_only_on_interfaces_marked_for_them() {
    let c = parse_str("w.conf", BASE).unwrap();
    // Interfaces that redirect take no WCCP by default; the others do.
    let marked: Vec<bool> = c.interfaces.iter().map(|i| i.wccp_caches).collect();
    assert_eq!(marked, vec![false, false, true]);
    // Explicit values win either way and survive the effective config.
    let text = BASE
        .replacen(
            "wccp-redirect-in = [0, 61]",
            "wccp-redirect-in = [0, 61]\nwccp-caches = true",
            1,
        )
        .replacen(
            "address = \"10.0.3.1/24\"",
            "address = \"10.0.3.1/24\"\nwccp-caches = false",
            1,
        );
    let c = parse_str("w.conf", &text).unwrap();
    let marked: Vec<bool> = c.interfaces.iter().map(|i| i.wccp_caches).collect();
    assert_eq!(marked, vec![true, false, false]);
    let again = parse_str("again.conf", &c.to_toml()).unwrap();
    let marked: Vec<bool> = again.interfaces.iter().map(|i| i.wccp_caches).collect();
    assert_eq!(marked, vec![true, false, false]);
    // WCCP with nowhere for caches to join is a configuration error, at the first service.
    let text = BASE.replacen(
        "address = \"10.0.3.1/24\"",
        "address = \"10.0.3.1/24\"\nwccp-caches = false",
        1,
    );
    let e = parse_str("w.conf", &text).unwrap_err();
    assert_eq!(e.line, 16, "{e}");
    assert!(e.msg.starts_with("no interface accepts WCCP caches"), "{e}");
}

#[test]
fn the_group_list_takes_prefixes() {
    let text = BASE.replacen(
        "probe-port = 3128",
        "probe-port = 3128\ncaches = [\"10.0.3.0/28\", \"10.0.4.7\", \"10.0.4.7/32\"]",
        1,
    );
    let c = parse_str("w.conf", &text).unwrap();
    let list: Vec<String> = c.wccp[0]
        .caches
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        list,
        vec!["10.0.3.0/28", "10.0.4.7/32"],
        "duplicates dropped"
    );
    let engine = c.wccp[0].engine_config();
    let admitted = |a: [u8; 4]| {
        engine
            .group_list
            .as_ref()
            .unwrap()
            .iter()
            .any(|p| p.contains(a.into()))
    };
    assert!(admitted([10, 0, 3, 15]) && admitted([10, 0, 4, 7]));
    assert!(!admitted([10, 0, 3, 16]) && !admitted([10, 0, 4, 8]));
    let again = parse_str("again.conf", &c.to_toml()).unwrap();
    assert_eq!(again.wccp[0].caches, c.wccp[0].caches);
    let bad = BASE.replacen(
        "probe-port = 3128",
        "probe-port = 3128\ncaches = [\"10.0.3.1/28\"]",
        1,
    );
    let e = parse_str("w.conf", &bad).unwrap_err();
    assert_eq!((e.line, e.col), (19, 11), "{e}");
    assert!(e.msg.contains("host bits set"), "{e}");
}

#[test]
fn service_ids_1_to_50_are_dynamic_services() {
    // IOS accepts the ids the draft reserves for well-known services as dynamic ones.
    for id in [1u8, 7, 50] {
        let text = BASE.replace("id = 61", &format!("id = {id}")).replace(
            "wccp-redirect-out = [61]",
            &format!("wccp-redirect-out = [{id}]"),
        );
        let text = text.replace(
            "wccp-redirect-in = [0, 61]",
            &format!("wccp-redirect-in = [0, {id}]"),
        );
        let c = parse_str("w.conf", &text).unwrap_or_else(|e| panic!("id {id}: {e}"));
        let s = &c.wccp[1];
        assert_eq!(s.id, id);
        assert!(!s.is_standard());
        let d = s.definition.as_ref().expect("pinned definition");
        assert_eq!((d.service_type, d.service_id), (ServiceType::Dynamic, id));
        assert_eq!(parse_str("w.conf", &c.to_toml()).unwrap(), c);
    }
    let text = BASE.replace("id = 61", "id = 256");
    let e = parse_str("w.conf", &text).unwrap_err();
    assert_eq!(
        e.msg,
        "WCCP service id 256 is not supported; use 0 (the standard web-cache service) or a dynamic service 1..=255"
    );
}

#[test]
fn fail_policy_and_gre_mss_clamp_parse_default_and_round_trip() {
    use conf::{GreMssClamp, WccpFailPolicy};
    let c = parse_str("w.conf", BASE).unwrap();
    assert_eq!(c.wccp[0].fail_policy, WccpFailPolicy::Open, "default");
    assert_eq!(c.wccp[0].gre_mss_clamp, GreMssClamp::Auto, "default");
    assert_eq!(GreMssClamp::Auto.for_mtu(1400), Some(1332));
    assert_eq!(GreMssClamp::Auto.for_mtu(1500), Some(1432));
    assert_eq!(GreMssClamp::Off.for_mtu(1400), None);
    for (policy, clamp, want_p, want_c) in [
        (
            "closed-drop",
            "\"off\"",
            WccpFailPolicy::ClosedDrop,
            GreMssClamp::Off,
        ),
        (
            "closed-reject",
            "1300",
            WccpFailPolicy::ClosedReject,
            GreMssClamp::Fixed(1300),
        ),
        ("open", "\"auto\"", WccpFailPolicy::Open, GreMssClamp::Auto),
    ] {
        // Service 61 is pinned, so a closed policy is allowed there too.
        let text = BASE.replacen(
            "probe-port = 3128",
            &format!("probe-port = 3128\nfail-policy = \"{policy}\"\ngre-mss-clamp = {clamp}"),
            1,
        );
        let text = text.replacen(
            "alternate-hash = [\"dst-ip\"]",
            &format!("alternate-hash = [\"dst-ip\"]\nfail-policy = \"{policy}\""),
            1,
        );
        let c = parse_str("w.conf", &text).unwrap();
        assert_eq!(
            (c.wccp[0].fail_policy, c.wccp[0].gre_mss_clamp),
            (want_p, want_c)
        );
        assert_eq!(c.wccp[1].fail_policy, want_p);
        let again = parse_str("w.conf", &c.to_toml()).unwrap();
        assert_eq!(again, c, "effective config:\n{}", c.to_toml());
    }
    for (to, line, col, msg) in [
        (
            "fail-policy = \"closed\"",
            19,
            15,
            "unknown fail-policy `closed`; expected open, closed-drop or closed-reject",
        ),
        (
            "gre-mss-clamp = 100",
            19,
            17,
            "`gre-mss-clamp` must be \"auto\", \"off\" or an MSS 536..=8932",
        ),
    ] {
        let text = BASE.replacen("probe-port = 3128", &format!("probe-port = 3128\n{to}"), 1);
        let e = parse_str("w.conf", &text).expect_err(to);
        assert_eq!((e.line, e.col, e.msg.as_str()), (line, col, msg), "{to}");
    }
    // A learnt dynamic service cannot be closed: with no cache its definition is unknown.
    let text = BASE
        .replacen("protocol = \"udp\"\n", "", 1)
        .replacen("priority = 10\n", "", 1)
        .replacen("ports = [53, 5353]\n", "", 1)
        .replacen("port-type = \"source\"\n", "", 1)
        .replacen("hash = [\"src-ip\", \"src-port\"]\n", "", 1)
        .replacen(
            "alternate-hash = [\"dst-ip\"]",
            "fail-policy = \"closed-drop\"",
            1,
        );
    let e = parse_str("w.conf", &text).unwrap_err();
    assert!(
        e.msg.contains("needs the definition of service 61 pinned"),
        "{}",
        e.msg
    );
}

#[test]
fn fast_timers_default_on_parse_and_reach_the_engine() {
    let c = parse_str("w.conf", BASE).unwrap();
    assert!(c.wccp[0].fast_timers, "default");
    assert!(c.wccp[0].engine_config().fast_timers);
    let text = BASE.replace(
        "probe-port = 3128",
        "probe-port = 3128\nfast-timers = false",
    );
    let c = parse_str("w.conf", &text).unwrap();
    assert!(!c.wccp[0].fast_timers);
    assert!(!c.wccp[0].engine_config().fast_timers);
    assert!(c.to_toml().contains("fast-timers = false"));
    assert_eq!(parse_str("w.conf", &c.to_toml()).unwrap(), c);
    let bad = BASE.replace("probe-port = 3128", "probe-port = 3128\nfast-timers = 1");
    let e = parse_str("w.conf", &bad).unwrap_err();
    assert_eq!((e.line, e.col), (19, 15), "{e}");
}

#[test]
fn multicast_group_is_validated_reaches_the_engine_and_round_trips() {
    let text = BASE.replace(
        "id = 0\nprobe-port = 3128",
        "id = 0\nprobe-port = 3128\nmulticast-group = \"239.255.0.1\"",
    );
    let c = parse_str("w.conf", &text).unwrap();
    let g: std::net::Ipv4Addr = "239.255.0.1".parse().unwrap();
    assert_eq!(c.wccp[0].multicast_group, Some(g));
    assert_eq!(c.wccp[0].engine_config().multicast_group, Some(g));
    assert_eq!(c.wccp[1].multicast_group, None);
    assert!(c.to_toml().contains("multicast-group = \"239.255.0.1\""));
    assert_eq!(parse_str("w.conf", &c.to_toml()).unwrap(), c);
    for (bad, says) in [
        ("224.0.0.9", "outside 224.0.0.0/24, the link-local"),
        ("10.0.3.9", "must be a multicast address (224.0.0.0/4)"),
        ("239.1", "is not an IPv4 address"),
    ] {
        let text = BASE.replace(
            "id = 0\nprobe-port = 3128",
            &format!("id = 0\nprobe-port = 3128\nmulticast-group = \"{bad}\""),
        );
        let e = parse_str("w.conf", &text).unwrap_err().to_string();
        assert!(e.contains(says) && e.contains("w.conf:19:19:"), "{e}");
    }
}
