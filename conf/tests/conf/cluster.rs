//! `[cluster]` (issue 16): defaults, every key read and round-tripped, and errors with their
//! positions.

use std::time::Duration;

use conf::parse_str;

/// Two interfaces; 6 lines, so text appended starts on line 7.
const BASE: &str = r#"[[interface]]
name = "in0"
address = "10.0.1.2/24"
[[interface]]
name = "out0"
address = "192.0.2.2/24"
"#;

/// The smallest cluster section (lines 7..=12; its interface table on lines 14..=16).
const MIN: &str = "[cluster]\nname = \"edge\"\nnode-id = 1\netcd = [\"http://10.8.0.100:2379\"]\nsync-local = \"10.8.0.1:7788\"\nkey-file = \"/etc/swrouter/cluster.key\"\n\n[[cluster.interface]]\nname = \"in0\"\naddresses = [\"10.0.1.254\"]\n";

fn with(tail: &str) -> String {
    format!("{BASE}{tail}")
}

#[track_caller]
fn rejects(text: &str, line: usize, col: usize, msg_part: &str) {
    let e = parse_str("c.conf", text).expect_err("config should be rejected");
    assert!(
        e.msg.contains(msg_part),
        "message {:?} lacks {msg_part:?}",
        e.msg
    );
    assert_eq!((e.line, e.col), (line, col), "{e}");
}

#[test]
fn a_minimal_cluster_gets_the_defaults() {
    let c = parse_str("c.conf", &with(MIN)).unwrap();
    let k = c.cluster.as_ref().expect("cluster");
    assert_eq!((k.name.as_str(), k.node_id, k.weight), ("edge", 1, 1));
    assert_eq!(k.etcd, vec!["10.8.0.100:2379".parse().unwrap()]);
    assert_eq!(k.heartbeat, conf::DEFAULT_HEARTBEAT);
    assert_eq!(k.peer_timeout, conf::DEFAULT_PEER_TIMEOUT);
    assert_eq!(k.lease_ttl_s, conf::DEFAULT_LEASE_TTL_S);
    assert_eq!(k.hold_limit, conf::DEFAULT_HOLD_LIMIT);
    assert_eq!(k.handover_timeout, conf::DEFAULT_HANDOVER_TIMEOUT);
    // Locally administered multicast, the same on every node of the cluster.
    assert_eq!(k.cluster_mac[..4], [0x03, 0x00, 0x5e, 0xc1]);
    let other = parse_str("c.conf", &with(&MIN.replace("node-id = 1", "node-id = 2"))).unwrap();
    assert_eq!(other.cluster.unwrap().cluster_mac, k.cluster_mac);
    assert_eq!(k.interfaces[0].name, "in0");
    assert_eq!(
        k.interfaces[0].addresses,
        vec!["10.0.1.254".parse::<std::net::Ipv4Addr>().unwrap()]
    );
    assert!(parse_str("c.conf", BASE).unwrap().cluster.is_none());
}

#[test]
fn every_key_is_read_and_round_trips() {
    let text = with(
        "[cluster]\nname = \"dc1-edge\"\nnode-id = 7\nweight = 3\netcd = [\"http://10.8.0.1:2379\", \"http://10.8.0.2:2379/\"]\nsync-local = \"10.8.0.7:7788\"\nkey-file = \"k\"\ncluster-mac = \"03:00:5e:c1:00:09\"\nheartbeat-ms = 10\npeer-timeout-ms = 50\nlease-ttl-s = 5\nhold-limit = 64\nhandover-timeout-ms = 250\n\n[[cluster.interface]]\nname = \"in0\"\naddresses = [\"10.0.1.254\"]\n\n[[cluster.interface]]\nname = \"out0\"\naddresses = [\"192.0.2.254\", \"192.0.2.253\"]\n",
    );
    let c = parse_str("c.conf", &text).unwrap();
    let k = c.cluster.as_ref().unwrap();
    assert_eq!(
        (k.node_id, k.weight, k.lease_ttl_s, k.hold_limit),
        (7, 3, 5, 64)
    );
    assert_eq!(k.etcd.len(), 2);
    assert_eq!(k.cluster_mac, [3, 0, 0x5e, 0xc1, 0, 9]);
    assert_eq!(
        (k.heartbeat, k.peer_timeout, k.handover_timeout),
        (
            Duration::from_millis(10),
            Duration::from_millis(50),
            Duration::from_millis(250)
        )
    );
    assert_eq!(k.interfaces[1].addresses.len(), 2);
    let again = parse_str("effective", &c.to_toml()).unwrap();
    assert_eq!(again, c);
}

#[test]
fn errors_point_at_the_value() {
    rejects(
        &with(&MIN.replace("\"edge\"", "\"edge/1\"")),
        8,
        8,
        "letters, digits",
    );
    rejects(
        &with(&MIN.replace("node-id = 1", "node-id = 0")),
        9,
        11,
        "out of range",
    );
    rejects(
        &with(&MIN.replace("http://10.8.0.100:2379", "https://10.8.0.100:2379")),
        10,
        9,
        "no TLS",
    );
    rejects(
        &with(&MIN.replace("http://10.8.0.100:2379", "http://etcd:2379")),
        10,
        9,
        "expected http://IPv4-address:port",
    );
    rejects(
        &with(&MIN.replace("10.8.0.1:7788", "10.0.1.2:7788")),
        11,
        14,
        "which swrouter owns",
    );
    rejects(
        &with(&MIN.replace("10.8.0.1:7788", "10.8.0.1")),
        11,
        14,
        "with a port",
    );
    rejects(
        &with(&MIN.replace("key-file", "cluster-mac = \"02:00:5e:c1:00:01\"\nkey-file")),
        12,
        15,
        "must be a multicast MAC",
    );
    rejects(
        &with(&MIN.replace("key-file", "peer-timeout-ms = 40\nkey-file")),
        12,
        19,
        "under three heartbeats",
    );
    rejects(
        &with(&MIN.replace("key-file", "lease-ttl-s = 1\nkey-file")),
        12,
        15,
        "expected 2..=3600",
    );
    rejects(
        &with(&MIN.replace("name = \"in0\"", "name = \"eth9\"")),
        15,
        8,
        "unknown interface `eth9`",
    );
    rejects(
        &with(&MIN.replace("10.0.1.254", "10.0.1.2")),
        16,
        14,
        "no interface has",
    );
    rejects(
        &with(
            &MIN.replace("weight", "wieght")
                .replace("node-id = 1", "node-id = 1\nwieght = 2"),
        ),
        10,
        1,
        "did you mean `weight`",
    );
    let no_iface = MIN
        .split("\n[[cluster.interface]]")
        .next()
        .unwrap()
        .to_string();
    rejects(&with(&no_iface), 8, 8, "has no [[cluster.interface]]");
}

#[test]
fn a_cluster_excludes_ha_and_needs_nat_blocks_of_256_ports() {
    let ha =
        "[[ha.vrrp]]\ninterface = \"in0\"\nvrid = 51\nvirtual-addresses = [\"10.0.1.254\"]\n\n";
    rejects(&with(&format!("{ha}{MIN}")), 13, 8, "exclude each other");
    let nat = |range: &str| {
        format!("[router]\nworkers = 2\n\n{BASE}\n[nat]\nport-range = \"{range}\"\n\n[[nat.rule]]\ninside = [\"10.0.1.0/24\"]\noutside = \"out0\"\npool = [\"192.0.2.9\"]\n\n{MIN}")
    };
    assert!(parse_str("c.conf", &nat("1024-65535")).is_ok());
    rejects(&nat("40000-40999"), 11, 1, "gives blocks of 128");
}

#[test]
fn the_readme_example_parses() {
    let readme = include_str!("../../README.md");
    let block = readme
        .split("```toml\n")
        .skip(1)
        .map(|b| &b[..b.find("```").expect("example is closed")])
        .find(|b| b.starts_with("[cluster]"))
        .expect("README has the cluster example");
    let ifaces = "[[interface]]\nname = \"eth0\"\naddress = \"10.0.1.1/24\"\n[[interface]]\nname = \"eth1\"\naddress = \"10.0.2.1/24\"\n";
    let c = parse_str("README.md", &format!("{ifaces}{block}")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.cluster.unwrap().interfaces.len(), 2);
}
