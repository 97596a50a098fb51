//! Every error `conf` reports, with its exact line, column and message, plus the defaults.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use conf::{parse_str, LogLevel, MacAddr};

/// Two interfaces; lines 1–7, so text appended starts on line 8.
const TWO: &str = r#"[[interface]]
name = "eth0"
address = "10.0.1.1/24"

[[interface]]
name = "eth1"
address = "10.0.2.1/24"
"#;

/// The error for `text` as (line, col, msg), after checking the Display form agrees.
fn err(text: &str) -> (usize, usize, String) {
    let e = parse_str("t.conf", text).expect_err("config should be rejected");
    assert_eq!(e.file, "t.conf");
    assert_eq!(
        e.to_string(),
        format!("t.conf:{}:{}: {}", e.line, e.col, e.msg)
    );
    assert!(!e.msg.contains('\n'), "multi-line message: {:?}", e.msg);
    (e.line, e.col, e.msg)
}

/// `TWO` followed by `tail`.
fn two(tail: &str) -> String {
    format!("{TWO}{tail}")
}

/// Asserts `text` is rejected at `line:col` with exactly `msg`.
#[track_caller]
fn rejects(text: &str, line: usize, col: usize, msg: &str) {
    assert_eq!(err(text), (line, col, msg.to_string()), "for:\n{text}");
}

// ---------------------------------------------------------------------------------------------
// Defaults

#[test]
fn defaults_fill_everything_in() {
    let c = parse_str("t.conf", TWO).unwrap();
    assert_eq!(
        c.router.id,
        Ipv4Addr::new(10, 0, 2, 1),
        "highest interface address"
    );
    assert_eq!(c.router.workers, 1);
    assert_eq!(
        c.router.management_socket,
        PathBuf::from("/run/swrouter/swrouter.sock")
    );
    assert_eq!(
        c.router.management_group, None,
        "root and our own user only"
    );
    assert_eq!(c.router.log_level, LogLevel::Info);
    assert_eq!(c.interfaces.len(), 2);
    let i = &c.interfaces[0];
    assert_eq!(i.name, "eth0");
    assert_eq!(i.address, Ipv4Addr::new(10, 0, 1, 1));
    assert_eq!(i.network, "10.0.1.1/24".parse().unwrap());
    assert_eq!(i.mac, None);
    assert_eq!(i.mtu, 1500);
    assert!(c.routes.is_empty());
}

#[test]
fn empty_router_section_is_all_defaults() {
    let a = parse_str("t.conf", &format!("[router]\n\n{TWO}")).unwrap();
    let b = parse_str("t.conf", TWO).unwrap();
    assert_eq!(a, b);
}

#[test]
fn highest_address_is_compared_numerically() {
    // 9.x < 10.x numerically although "9" > "1" as text.
    let c = parse_str(
        "t.conf",
        "[[interface]]\nname = \"a\"\naddress = \"10.0.0.1/24\"\n[[interface]]\nname = \"b\"\naddress = \"9.0.0.1/24\"\n",
    )
    .unwrap();
    assert_eq!(c.router.id, Ipv4Addr::new(10, 0, 0, 1));
}

#[test]
fn every_key_is_read() {
    let c = parse_str(
        "t.conf",
        &format!(
            "[router]\nid = \"10.0.1.1\"\nworkers = 64\nmanagement-socket = \"/tmp/s.sock\"\nmanagement-group = \"adm\"\nlog-level = \"trace\"\nmetrics-listen = \"0.0.0.0:9100\"\n\n{TWO}\
             mac = \"02-00-00-00-00-09\"\nmtu = 9000\n\n[[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"10.0.2.254\"\ninterface = \"eth1\"\n"
        ),
    )
    .unwrap();
    assert_eq!(c.router.id, Ipv4Addr::new(10, 0, 1, 1));
    assert_eq!(c.router.workers, 64);
    assert_eq!(c.router.management_socket, PathBuf::from("/tmp/s.sock"));
    assert_eq!(c.router.management_group.as_deref(), Some("adm"));
    assert_eq!(c.router.log_level, LogLevel::Trace);
    assert_eq!(
        c.router.metrics_listen,
        Some("0.0.0.0:9100".parse().unwrap())
    );
    assert_eq!(c.interfaces[1].mac, Some(MacAddr([2, 0, 0, 0, 0, 9])));
    assert_eq!(c.interfaces[1].mtu, 9000);
    let r = &c.routes[0];
    assert_eq!(r.prefix, "0.0.0.0/0".parse().unwrap());
    assert_eq!(r.via, Ipv4Addr::new(10, 0, 2, 254));
    assert_eq!(r.interface.as_deref(), Some("eth1"));
    assert_eq!(r.line, 19);
}

#[test]
fn route_line_is_its_table_header() {
    let c = parse_str(
        "t.conf",
        &two("\n# comment\n[[route]]\nprefix = \"10.9.0.0/16\"\nvia = \"10.0.1.9\"\n\n[[route]]\nvia = \"10.0.1.9\"\nprefix = \"10.8.0.0/16\"\n"),
    )
    .unwrap();
    assert_eq!(
        c.routes.iter().map(|r| r.line).collect::<Vec<_>>(),
        [10, 14]
    );
}

#[test]
fn inline_tables_work_too() {
    let c = parse_str(
        "t.conf",
        "interface = [{ name = \"eth0\", address = \"10.0.1.1/24\" }]\nroute = [{ prefix = \"0.0.0.0/0\", via = \"10.0.1.2\" }]\n",
    )
    .unwrap();
    assert_eq!(c.routes[0].line, 2);
}

#[test]
fn point_to_point_and_host_prefixes_are_fine() {
    let c = parse_str(
        "t.conf",
        "[[interface]]\nname = \"p2p\"\naddress = \"10.0.0.0/31\"\n[[interface]]\nname = \"lo1\"\naddress = \"10.0.9.9/32\"\n\
         [[route]]\nprefix = \"0.0.0.0/0\"\nvia = \"10.0.0.1\"\n",
    )
    .unwrap();
    assert_eq!(c.interfaces[0].address, Ipv4Addr::new(10, 0, 0, 0));
}

#[test]
fn route_equality_ignores_the_line() {
    let a = parse_str(
        "t.conf",
        &two("[[route]]\nprefix = \"10.9.0.0/16\"\nvia = \"10.0.1.9\"\n"),
    )
    .unwrap();
    let b = parse_str(
        "t.conf",
        &two("\n\n\n[[route]]\nprefix = \"10.9.0.0/16\"\nvia = \"10.0.1.9\"\n"),
    )
    .unwrap();
    assert_ne!(a.routes[0].line, b.routes[0].line);
    assert_eq!(a, b);
}

// ---------------------------------------------------------------------------------------------
// Syntax and schema

#[test]
fn syntax_error_position_and_one_line_message() {
    rejects(
        "[router]\nworkers = = 2\n",
        2,
        11,
        "invalid string: expected `\"`, `'`",
    );
    rejects(
        "[[interface]]\nname = \"eth0\naddress = \"10.0.1.1/24\"\n",
        2,
        13,
        "invalid basic string",
    );
    // toml's two-line message is joined into one.
    rejects(
        "[router]\n[router]\n",
        2,
        1,
        "invalid table header: duplicate key `router` in document root",
    );
    rejects(
        "[router]\nworkers = 1\nworkers = 2\n",
        3,
        1,
        "duplicate key `workers` in table `router`",
    );
    // Some toml errors come without a message; ours always has one.
    rejects("0=", 1, 3, "invalid TOML syntax");
}

#[test]
fn unknown_keys_name_the_section() {
    rejects(
        "[router]\nworkerz = 2\n",
        2,
        1,
        "unknown key `workerz` in [router]; expected one of: id, workers, management-socket, management-group, log-level, io-backend, metrics-listen; did you mean `workers`?",
    );
    rejects(
        "[router]\nlog_level = \"info\"\n",
        2,
        1,
        "unknown key `log_level` in [router]; expected one of: id, workers, management-socket, management-group, log-level, io-backend, metrics-listen; did you mean `log-level`?",
    );
    rejects(
        &two("gateway = \"10.0.2.254\"\n"),
        8,
        1,
        "unknown key `gateway` in [[interface]]; expected one of: name, address, mac, mtu, io-backend, wccp-redirect-in, wccp-redirect-out, wccp-exclude-in, wccp-caches",
    );
    rejects(
        &two("[[route]]\nprefix = \"0.0.0.0/0\"\nnexthop = \"10.0.1.2\"\n"),
        10,
        1,
        "unknown key `nexthop` in [[route]]; expected one of: prefix, via, interface",
    );
    rejects(
        "[[interfaces]]\nname = \"eth0\"\n",
        1,
        3,
        "unknown section `interfaces`; expected one of: [router], [[interface]], [[route]], [wccp], [steering], [nat], [ha]; did you mean [[interface]]?",
    );
    rejects(
        "workers = 2\n",
        1,
        1,
        "unknown section `workers`; expected one of: [router], [[interface]], [[route]], [wccp], [steering], [nat], [ha]",
    );
}

#[test]
fn missing_required_keys() {
    rejects(
        "[[interface]]\nname = \"eth0\"\n",
        1,
        1,
        "missing key `address` in [[interface]]; every interface needs `name` and `address`",
    );
    rejects(
        &two("\n[[route]]\nprefix = \"0.0.0.0/0\"\n"),
        9,
        1,
        "missing key `via` in [[route]]; every route needs `prefix` and `via`",
    );
}

#[test]
fn wrong_value_types() {
    rejects(
        "[router]\nworkers = \"2\"\n",
        2,
        11,
        "invalid type: string \"2\", expected an integer",
    );
    rejects(
        &two("mtu = 1500.0\n"),
        8,
        7,
        "invalid type: floating point `1500.0`, expected an integer",
    );
    rejects(
        &two("mac = 2\n"),
        8,
        7,
        "invalid type: integer `2`, expected a string",
    );
    rejects(
        "router = 1\n",
        1,
        10,
        "invalid type: integer `1`, expected a [router] table",
    );
    rejects(
        "interface = 1\n",
        1,
        13,
        "invalid type: integer `1`, expected a sequence",
    );
}

// ---------------------------------------------------------------------------------------------
// [router]

#[test]
fn no_interfaces() {
    let msg = "no interfaces configured; add at least one [[interface]] table with `name` and `address`, e.g. name = \"eth0\", address = \"10.0.1.1/24\"";
    rejects("", 1, 1, msg);
    rejects("[router]\nworkers = 2\n", 1, 1, msg);
    rejects("interface = []\n", 1, 1, msg);
}

#[test]
fn workers_out_of_range() {
    rejects(
        &format!("[router]\nworkers = 0\n{TWO}"),
        2,
        11,
        "workers = 0 is out of range; expected 1..=64 pipeline threads",
    );
    rejects(
        &format!("[router]\nworkers = 65\n{TWO}"),
        2,
        11,
        "workers = 65 is out of range; expected 1..=64 pipeline threads",
    );
    rejects(
        &format!("[router]\nworkers = -1\n{TWO}"),
        2,
        11,
        "workers = -1 is out of range; expected 1..=64 pipeline threads",
    );
}

#[test]
fn router_id_must_be_ours() {
    rejects(
        &format!("[router]\nid = \"10.0.3.1\"\n{TWO}"),
        2,
        6,
        "router id 10.0.3.1 is not an address of this router; use one of 10.0.1.1 (eth0), 10.0.2.1 (eth1), or omit `id` to use the highest",
    );
    rejects(
        &format!("[router]\nid = \"10.0.1.1/24\"\n{TWO}"),
        2,
        6,
        "invalid router id `10.0.1.1/24`: expected one of this router's interface addresses, e.g. \"10.0.1.1\"",
    );
}

#[test]
fn log_level_must_be_known() {
    rejects(
        &format!("[router]\nlog-level = \"verbose\"\n{TWO}"),
        2,
        13,
        "unknown log level `verbose`; expected one of: error, warn, info, debug, trace",
    );
}

#[test]
fn management_socket_must_be_usable() {
    rejects(
        &format!("[router]\nmanagement-socket = \"\"\n{TWO}"),
        2,
        21,
        "management-socket must not be empty; the default is \"/run/swrouter/swrouter.sock\"",
    );
    rejects(
        &format!("[router]\nmanagement-socket = \"swrouter.sock\"\n{TWO}"),
        2,
        21,
        "management-socket `swrouter.sock` must be an absolute path, e.g. \"/run/swrouter/swrouter.sock\"",
    );
    let long = format!("/{}", "s".repeat(107));
    rejects(
        &format!("[router]\nmanagement-socket = \"{long}\"\n{TWO}"),
        2,
        21,
        "management-socket path is 108 bytes long; a Unix socket path holds at most 107",
    );
}

#[test]
fn metrics_listen_is_off_by_default_and_must_be_an_ipv4_socket_address() {
    assert_eq!(
        parse_str("t.conf", TWO).unwrap().router.metrics_listen,
        None
    );
    rejects(
        &format!("[router]\nmetrics-listen = \"localhost:9469\"\n{TWO}"),
        2,
        18,
        "metrics-listen `localhost:9469` is not an IPv4 address and port, e.g. \"127.0.0.1:9469\" (leave the key out to serve no metrics)",
    );
    rejects(
        &format!("[router]\nmetrics-listen = \"127.0.0.1\"\n{TWO}"),
        2,
        18,
        "metrics-listen `127.0.0.1` is not an IPv4 address and port, e.g. \"127.0.0.1:9469\" (leave the key out to serve no metrics)",
    );
    rejects(
        &format!("[router]\nmetrics-listen = \"127.0.0.1:0\"\n{TWO}"),
        2,
        18,
        "metrics-listen `127.0.0.1:0` has port 0; name the port Prometheus scrapes, e.g. \"127.0.0.1:9469\"",
    );
    rejects(
        &format!("[router]\nmetrics-listen = 9469\n{TWO}"),
        2,
        18,
        "invalid type: integer `9469`, expected a string",
    );
}

#[test]
fn management_group_must_be_a_group_name() {
    rejects(
        &format!("[router]\nmanagement-group = \"\"\n{TWO}"),
        2,
        20,
        "management-group must not be empty; leave the key out to allow only root and the router's own user",
    );
    rejects(
        &format!("[router]\nmanagement-group = \"wheel:x\"\n{TWO}"),
        2,
        20,
        "management-group `wheel:x` contains ':'; a group name has no whitespace, control characters, `:`, `,` or `/`",
    );
    rejects(
        &format!("[router]\nmanagement-group = \"net ops\"\n{TWO}"),
        2,
        20,
        "management-group `net ops` contains ' '; a group name has no whitespace, control characters, `:`, `,` or `/`",
    );
    rejects(
        &format!("[router]\nmanagement-group = \"-g\"\n{TWO}"),
        2,
        20,
        "management-group `-g` must not start with `-`",
    );
    let long = "g".repeat(33);
    rejects(
        &format!("[router]\nmanagement-group = \"{long}\"\n{TWO}"),
        2,
        20,
        &format!("management-group `{long}` is 33 bytes long; group names hold at most 32"),
    );
    rejects(
        &format!("[router]\nmanagement-group = 7\n{TWO}"),
        2,
        20,
        "invalid type: integer `7`, expected a string",
    );
}

// ---------------------------------------------------------------------------------------------
// [[interface]]

/// One interface with `address`, its value at 3:11.
fn one_addr(address: &str) -> String {
    format!("[[interface]]\nname = \"eth0\"\naddress = \"{address}\"\n")
}

#[test]
fn interface_names_unique() {
    rejects(
        "[[interface]]\nname = \"eth0\"\naddress = \"10.0.1.1/24\"\n\n[[interface]]\nname = \"eth0\"\naddress = \"10.0.2.1/24\"\n",
        6,
        8,
        "duplicate interface name `eth0`; already defined at line 1",
    );
}

#[test]
fn interface_name_rules() {
    let rule = "Linux interface names are 1 to 15 bytes without '/', ':', whitespace or control characters";
    let name = |n: &str| format!("[[interface]]\nname = \"{n}\"\naddress = \"10.0.1.1/24\"\n");
    rejects(
        &name(""),
        2,
        8,
        &format!("interface name must not be empty; {rule}"),
    );
    rejects(
        &name("enp0s31f6-uplink"),
        2,
        8,
        &format!("interface name `enp0s31f6-uplink` is 16 bytes long; {rule}"),
    );
    rejects(
        &name("eth0:1"),
        2,
        8,
        &format!("interface name \"eth0:1\" contains ':'; {rule}"),
    );
    rejects(
        &name("br/0"),
        2,
        8,
        &format!("interface name \"br/0\" contains '/'; {rule}"),
    );
    rejects(
        &name("eth 0"),
        2,
        8,
        &format!("interface name \"eth 0\" contains ' '; {rule}"),
    );
    rejects(
        &name(".."),
        2,
        8,
        &format!("interface name `..` is not allowed by Linux; {rule}"),
    );
}

#[test]
fn interface_addresses_unique() {
    rejects(
        &two("\n[[interface]]\nname = \"eth2\"\naddress = \"10.0.1.1/24\"\n"),
        11,
        11,
        "address 10.0.1.1 is already used by interface `eth0` (line 1); each interface needs its own address",
    );
}

#[test]
fn interface_prefixes_disjoint() {
    rejects(
        &two("\n[[interface]]\nname = \"eth2\"\naddress = \"10.0.0.1/16\"\n"),
        11,
        11,
        "prefix 10.0.0.0/16 of interface `eth2` overlaps 10.0.1.0/24 of interface `eth0` (line 1); connected networks must not overlap",
    );
    rejects(
        &two("\n[[interface]]\nname = \"eth2\"\naddress = \"10.0.2.9/30\"\n"),
        11,
        11,
        "prefix 10.0.2.8/30 of interface `eth2` overlaps 10.0.2.0/24 of interface `eth1` (line 5); connected networks must not overlap",
    );
}

#[test]
fn interface_address_must_be_a_host() {
    let tail = "; use a unicast host address with its prefix length, e.g. \"10.0.1.1/24\"";
    for (addr, why) in [
        (
            "10.0.1.0/24",
            "10.0.1.0 is the network address of 10.0.1.0/24",
        ),
        (
            "10.0.1.255/24",
            "10.0.1.255 is the broadcast address of 10.0.1.0/24",
        ),
        (
            "10.0.1.3/30",
            "10.0.1.3 is the broadcast address of 10.0.1.0/30",
        ),
        (
            "0.0.0.0/8",
            "0.0.0.0 is in 0.0.0.0/8 (\"this network\"), which no host may use",
        ),
        ("127.0.0.1/8", "127.0.0.1 is a loopback address"),
        ("224.0.0.5/24", "224.0.0.5 is a multicast address"),
        (
            "255.255.255.255/32",
            "255.255.255.255 is the limited broadcast address",
        ),
        (
            "240.0.0.1/24",
            "240.0.0.1 is in the reserved range 240.0.0.0/4",
        ),
        (
            "10.0.1.1/0",
            "10.0.1.1 has prefix length 0, which would make every destination connected",
        ),
    ] {
        rejects(
            &one_addr(addr),
            3,
            11,
            &format!("interface address {why}{tail}"),
        );
    }
}

#[test]
fn interface_address_syntax() {
    rejects(
        &one_addr("10.0.1.1"),
        3,
        11,
        "address `10.0.1.1` needs a prefix length: write ADDRESS/LENGTH, e.g. \"10.0.1.1/24\"",
    );
    for bad in ["10.0.1/24", "10.0.1.1/33", "10.0.1.1/255.255.255.0", "eth0"] {
        rejects(
            &one_addr(bad),
            3,
            11,
            &format!("invalid address `{bad}`: expected an IPv4 address with prefix length, e.g. \"10.0.1.1/24\""),
        );
    }
}

#[test]
fn interface_mac_must_be_unicast() {
    let tail = "; an interface MAC must be unicast, e.g. a locally administered 02:00:00:00:00:01";
    for (mac, why) in [
        (
            "ff:ff:ff:ff:ff:ff",
            "mac ff:ff:ff:ff:ff:ff is the broadcast address",
        ),
        (
            "01:00:5e:00:00:01",
            "mac 01:00:5e:00:00:01 is a multicast address (lowest bit of the first octet set)",
        ),
        ("00-00-00-00-00-00", "mac 00:00:00:00:00:00 is all zeros"),
    ] {
        rejects(
            &two(&format!("mac = \"{mac}\"\n")),
            8,
            7,
            &format!("{why}{tail}"),
        );
    }
    rejects(
        &two("mac = \"02:00:00:00:01\"\n"),
        8,
        7,
        "invalid MAC address `02:00:00:00:01`: expected six two-digit hex octets separated by ':' or '-', e.g. 02:00:00:00:00:01",
    );
}

#[test]
fn interface_mtu_range() {
    rejects(
        &two("mtu = 575\n"),
        8,
        7,
        "mtu = 575 is out of range; expected 576..=9000 bytes (default 1500)",
    );
    rejects(
        &two("mtu = 9001\n"),
        8,
        7,
        "mtu = 9001 is out of range; expected 576..=9000 bytes (default 1500)",
    );
    rejects(
        &two("mtu = 70000\n"),
        8,
        7,
        "mtu = 70000 is out of range; expected 576..=9000 bytes (default 1500)",
    );
    assert_eq!(
        parse_str("t", &two("mtu = 576\n")).unwrap().interfaces[1].mtu,
        576
    );
}

// ---------------------------------------------------------------------------------------------
// [[route]]

/// A route after `TWO`; `[[route]]` is line 8, `prefix` 9, `via` 10, `interface` 11.
fn route(prefix: &str, via: &str, interface: Option<&str>) -> String {
    let mut s = two(&format!(
        "[[route]]\nprefix = \"{prefix}\"\nvia = \"{via}\"\n"
    ));
    if let Some(i) = interface {
        s.push_str(&format!("interface = \"{i}\"\n"));
    }
    s
}

#[test]
fn default_route_allowed() {
    let c = parse_str("t.conf", &route("0.0.0.0/0", "10.0.1.254", None)).unwrap();
    assert_eq!(c.routes[0].prefix.prefix(), 0);
    assert_eq!(c.routes[0].line, 8);
}

#[test]
fn route_interface_must_exist() {
    rejects(
        &route("10.9.0.0/16", "10.0.1.9", Some("eth9")),
        11,
        13,
        "unknown interface `eth9`; the configured interfaces are: eth0, eth1",
    );
}

#[test]
fn route_via_must_be_connected() {
    rejects(
        &route("10.9.0.0/16", "10.0.3.1", None),
        10,
        7,
        "next hop 10.0.3.1 is not on a connected network; `via` must be inside one of: 10.0.1.0/24 (eth0), 10.0.2.0/24 (eth1)",
    );
}

#[test]
fn route_via_must_be_on_the_named_interface() {
    rejects(
        &route("10.9.0.0/16", "10.0.2.9", Some("eth0")),
        10,
        7,
        "next hop 10.0.2.9 is not inside 10.0.1.0/24 of interface `eth0` (it is on `eth1`); fix `via` or `interface`",
    );
    rejects(
        &route("10.9.0.0/16", "10.0.3.9", Some("eth0")),
        10,
        7,
        "next hop 10.0.3.9 is not inside 10.0.1.0/24 of interface `eth0`; `via` must be a neighbour on that network",
    );
    assert!(parse_str("t", &route("10.9.0.0/16", "10.0.1.9", Some("eth0"))).is_ok());
}

#[test]
fn route_via_must_not_be_ours() {
    rejects(
        &route("10.9.0.0/16", "10.0.2.1", None),
        10,
        7,
        "next hop 10.0.2.1 is this router's own address on `eth1`; `via` must be a neighbour's address",
    );
}

#[test]
fn route_via_must_be_a_neighbour_address() {
    rejects(
        &route("10.9.0.0/16", "10.0.1.255", None),
        10,
        7,
        "next hop 10.0.1.255 is the broadcast address of 10.0.1.0/24 (eth0); `via` must be a neighbour's address",
    );
    rejects(
        &route("10.9.0.0/16", "10.0.2.0", None),
        10,
        7,
        "next hop 10.0.2.0 is the network address of 10.0.2.0/24 (eth1); `via` must be a neighbour's address",
    );
}

#[test]
fn route_via_syntax() {
    rejects(
        &route("10.9.0.0/16", "10.0.1.9/24", None),
        10,
        7,
        "next hop `10.0.1.9/24` is a prefix; `via` takes a plain address, e.g. \"10.0.1.254\"",
    );
    rejects(
        &route("10.9.0.0/16", "gw", None),
        10,
        7,
        "invalid next hop `gw`: expected an IPv4 address, e.g. \"10.0.1.254\"",
    );
}

#[test]
fn route_prefixes_unique() {
    rejects(
        &two("[[route]]\nprefix = \"10.9.0.0/16\"\nvia = \"10.0.1.9\"\n\n[[route]]\nprefix = \"10.9.0.0/16\"\nvia = \"10.0.2.9\"\n"),
        13,
        10,
        "duplicate route for 10.9.0.0/16: already defined by the [[route]] at line 8; keep one next hop per prefix",
    );
    // Same network, different length: two distinct routes.
    assert!(parse_str(
        "t",
        &two("[[route]]\nprefix = \"10.9.0.0/16\"\nvia = \"10.0.1.9\"\n[[route]]\nprefix = \"10.9.0.0/17\"\nvia = \"10.0.1.9\"\n"),
    )
    .is_ok());
}

#[test]
fn route_prefix_not_connected() {
    rejects(
        &route("10.0.2.0/24", "10.0.1.9", None),
        9,
        10,
        "route prefix 10.0.2.0/24 is the connected network of interface `eth1`; connected networks are routed without a [[route]]",
    );
    // A more specific prefix inside a connected network is a real route.
    assert!(parse_str("t", &route("10.0.2.128/25", "10.0.1.9", None)).is_ok());
}

#[test]
fn route_prefix_host_bits() {
    rejects(
        &route("10.9.1.0/16", "10.0.1.9", None),
        9,
        10,
        "route prefix 10.9.1.0/16 has host bits set; did you mean 10.9.0.0/16?",
    );
    rejects(
        &route("10.0.0.1/0", "10.0.1.9", None),
        9,
        10,
        "route prefix 10.0.0.1/0 has host bits set; did you mean 0.0.0.0/0?",
    );
}

#[test]
fn route_prefix_syntax() {
    rejects(
        &route("10.9.0.1", "10.0.1.9", None),
        9,
        10,
        "route prefix `10.9.0.1` needs a length: write NETWORK/LENGTH, e.g. \"10.9.0.0/16\" (\"10.9.0.1/32\" for a host route)",
    );
    rejects(
        &route("default", "10.0.1.9", None),
        9,
        10,
        "invalid route prefix `default`: expected NETWORK/LENGTH, e.g. \"10.9.0.0/16\", or \"0.0.0.0/0\" for the default route",
    );
}

// ---------------------------------------------------------------------------------------------
// Positions in awkward text

#[test]
fn columns_count_characters_not_bytes() {
    // "é" is two bytes but one column: the syntax error after it is at column 12, not 13.
    rejects(
        "[[interface]]\nname = \"é\" x\n",
        2,
        12,
        "expected newline, `#`",
    );
    // The same for a meaning error: `1` is the 59th character and the 60th byte.
    rejects(
        "interface = [{ name = \"é\", address = \"10.0.1.1/24\", mtu = 1 }]\n",
        1,
        59,
        "mtu = 1 is out of range; expected 576..=9000 bytes (default 1500)",
    );
}

#[test]
fn crlf_files() {
    let text = TWO.replace('\n', "\r\n") + "mtu = 1\r\n";
    rejects(
        &text,
        8,
        7,
        "mtu = 1 is out of range; expected 576..=9000 bytes (default 1500)",
    );
}

#[test]
fn thousands_of_routes() {
    let mut text = TWO.to_string();
    for n in 0..5000u32 {
        let [_, _, a, b] = n.to_be_bytes();
        text.push_str(&format!(
            "[[route]]\nprefix = \"172.{a}.{b}.0/24\"\nvia = \"10.0.1.9\"\n"
        ));
    }
    let c = parse_str("big.conf", &text).unwrap();
    assert_eq!(c.routes.len(), 5000);
    assert_eq!(c.routes[4999].line, 8 + 3 * 4999);
}
