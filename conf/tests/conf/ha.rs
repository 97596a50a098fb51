//! `[ha]`: VRRP virtual routers parsed into the vrrp crate's config, defaults, round trip, and
//! errors with their positions.

use std::net::Ipv4Addr;
use std::time::Duration;

use conf::parse_str;
use vrrp::ChecksumMode;

/// Two interfaces; 6 lines, so text appended starts on line 7.
const BASE: &str = r#"[[interface]]
name = "in0"
address = "10.0.1.2/24"
[[interface]]
name = "out0"
address = "192.0.2.2/24"
"#;

fn with(tail: &str) -> String {
    format!("{BASE}{tail}")
}

#[track_caller]
fn rejects(text: &str, line: usize, col: usize, msg_part: &str) {
    let e = parse_str("h.conf", text).expect_err("config should be rejected");
    assert!(
        e.msg.contains(msg_part),
        "message {:?} lacks {msg_part:?}",
        e.msg
    );
    assert_eq!((e.line, e.col), (line, col), "{e}");
}

const ONE: &str =
    "[[ha.vrrp]]\ninterface = \"in0\"\nvrid = 51\nvirtual-addresses = [\"10.0.1.254\"]\n";

#[test]
fn a_virtual_router_gets_the_rfc_defaults_and_the_interface_address() {
    let c = parse_str("h.conf", &with(ONE)).unwrap();
    assert_eq!(c.ha.vrrp.len(), 1);
    let v = &c.ha.vrrp[0];
    assert_eq!(v.interface, "in0");
    let k = &v.config;
    assert_eq!(k.vrid, 51);
    assert_eq!(k.priority, 100);
    assert_eq!(k.primary_addr, Ipv4Addr::new(10, 0, 1, 2));
    assert_eq!(k.virtual_addrs, vec![Ipv4Addr::new(10, 0, 1, 254)]);
    assert_eq!(k.adver_interval, 100, "1 s");
    assert!(k.preempt);
    assert!(!k.accept_mode, "RFC 5798 default");
    assert_eq!(k.checksum, ChecksumMode::PseudoHeader);
    assert_eq!(k.garp_count, conf::DEFAULT_GARP_COUNT);
    assert!(parse_str("h.conf", BASE).unwrap().ha.is_empty());
}

#[test]
fn every_key_is_read_and_round_trips() {
    let text = with(
        "[[ha.vrrp]]\ninterface = \"out0\"\nvrid = 7\npriority = 254\nvirtual-addresses = [\"192.0.2.10\", \"192.0.2.11\"]\nadvert-interval-ms = 10\npreempt = false\npreempt-delay-ms = 1500\naccept-mode = true\nchecksum = \"no-pseudo-header\"\ngarp-count = 5\n\n[[ha.vrrp]]\ninterface = \"in0\"\nvrid = 7\nvirtual-addresses = [\"10.0.1.9\"]\nadvert-interval-cs = 4095\n",
    );
    let c = parse_str("h.conf", &text).unwrap();
    let k = &c.ha.vrrp[0].config;
    assert_eq!(
        (
            k.priority,
            k.adver_interval,
            k.preempt,
            k.accept_mode,
            k.garp_count
        ),
        (254, 1, false, true, 5)
    );
    assert_eq!(k.preempt_delay, Duration::from_millis(1500));
    assert_eq!(k.checksum, ChecksumMode::NoPseudoHeader);
    assert_eq!(c.ha.vrrp[1].config.adver_interval, 4095);
    let again = parse_str("effective", &c.to_toml()).unwrap();
    assert_eq!(again, c);
}

#[test]
fn errors_point_at_the_value() {
    rejects(
        &with(
            "[[ha.vrrp]]\ninterface = \"eth9\"\nvrid = 1\nvirtual-addresses = [\"10.0.1.254\"]\n",
        ),
        8,
        13,
        "unknown interface `eth9`; configured interfaces: in0, out0",
    );
    rejects(
        &with(&format!(
            "{ONE}[[ha.vrrp]]\ninterface = \"in0\"\nvrid = 51\nvirtual-addresses = [\"10.0.1.253\"]\n"
        )),
        13,
        8,
        "vrid 51 is already used on interface `in0` (line 9)",
    );
    rejects(
        &with("[[ha.vrrp]]\ninterface = \"in0\"\nvrid = 1\nvirtual-addresses = [\"192.0.2.9\"]\n"),
        10,
        22,
        "outside interface `in0`'s network 10.0.1.0/24",
    );
    rejects(
        &with("[[ha.vrrp]]\ninterface = \"in0\"\nvrid = 1\nvirtual-addresses = [\"10.0.1.2\"]\n"),
        10,
        22,
        "own address",
    );
    rejects(
        &with("[[ha.vrrp]]\ninterface = \"in0\"\nvrid = 1\nvirtual-addresses = [\"10.0.1.255\"]\n"),
        10,
        22,
        "broadcast",
    );
    rejects(
        &with("[[ha.vrrp]]\ninterface = \"in0\"\nvrid = 1\nvirtual-addresses = []\n"),
        10,
        21,
        "0 virtual addresses",
    );
    rejects(
        &with(&format!("{ONE}advert-interval-ms = 15\n")),
        11,
        22,
        "not a whole number of centiseconds",
    );
    rejects(
        &with(&format!("{ONE}advert-interval-ms = 5\n")),
        11,
        22,
        "expected 10..=40950",
    );
    rejects(
        &with(&format!("{ONE}advert-interval-cs = 4096\n")),
        11,
        22,
        "expected 1..=4095",
    );
    rejects(
        &with(&format!(
            "{ONE}advert-interval-ms = 100\nadvert-interval-cs = 10\n"
        )),
        12,
        22,
        "give the advertisement interval once",
    );
    rejects(
        &with(&format!("{ONE}priority = 255\n")),
        11,
        12,
        "address owner",
    );
    rejects(
        &with(&format!("{ONE}priority = 0\n")),
        11,
        12,
        "expected 1..=254",
    );
    rejects(
        &with(&format!("{ONE}checksum = \"compat\"\n")),
        11,
        12,
        "expected one of: pseudo-header, no-pseudo-header",
    );
    rejects(
        &with(&format!("{ONE}vird = 3\n")),
        11,
        1,
        "unknown key `vird` in [[ha.vrrp]]",
    );
    rejects(
        &with(&format!(
            "{ONE}[[ha.vrrp]]\ninterface = \"in0\"\nvrid = 52\nvirtual-addresses = [\"10.0.1.254\"]\n"
        )),
        14,
        22,
        "already one of vrid 51's",
    );
    rejects(&with("[ha]\n"), 7, 1, "[ha] has no [[ha.vrrp]]");
}

#[test]
fn the_same_vrid_may_serve_two_links() {
    let c = parse_str(
        "h.conf",
        &with(&format!(
            "{ONE}[[ha.vrrp]]\ninterface = \"out0\"\nvrid = 51\nvirtual-addresses = [\"192.0.2.254\"]\n"
        )),
    )
    .unwrap();
    assert_eq!(c.ha.vrrp.len(), 2);
}

/// WCCP caches on a VRRP link; `id` lines are inserted at line 2.
fn wccp_on_vrrp(id: &str) -> String {
    format!(
        "[router]\n{id}\n[[interface]]\nname = \"cache0\"\naddress = \"10.0.3.2/24\"\nwccp-caches = true\n[[interface]]\nname = \"client0\"\naddress = \"10.0.1.2/24\"\nwccp-caches = false\n[[wccp.service]]\nid = 0\n[[ha.vrrp]]\ninterface = \"client0\"\nvrid = 51\nvirtual-addresses = [\"10.0.1.254\"]\n[[ha.vrrp]]\ninterface = \"cache0\"\nvrid = 53\nvirtual-addresses = [\"10.0.3.254\"]\n"
    )
}

/// Issue 15: with VRRP on the caches' interface the WCCP Router ID is its virtual address
/// (derived when `id` is omitted), so that a takeover keeps the Router ID caches know; an
/// explicit `id` elsewhere is refused with the address to use.
#[test]
fn the_router_id_is_the_caches_side_virtual_address() {
    let derived = parse_str("h.conf", &wccp_on_vrrp("")).unwrap();
    assert_eq!(derived.router.id, Ipv4Addr::new(10, 0, 3, 254));
    // client0 takes caches too when not marked (it redirects nothing), and its virtual router
    // comes first: the interface marked for caches still decides.
    let by_default = wccp_on_vrrp("").replace("wccp-caches = false\n", "");
    assert_eq!(
        parse_str("h.conf", &by_default).unwrap().router.id,
        Ipv4Addr::new(10, 0, 3, 254)
    );
    let explicit = parse_str("h.conf", &wccp_on_vrrp("id = \"10.0.3.254\"")).unwrap();
    assert_eq!(explicit.router.id, Ipv4Addr::new(10, 0, 3, 254));
    for wrong in ["10.0.3.2", "10.0.1.254"] {
        rejects(
            &wccp_on_vrrp(&format!("id = \"{wrong}\"")),
            2,
            6,
            "use one of 10.0.3.254 ([[ha.vrrp]] vrid 53 on cache0)",
        );
    }
    // Without WCCP the id may be an interface or a virtual address, as before.
    let text = format!("[router]\nid = \"10.0.1.254\"\n{BASE}{ONE}");
    assert_eq!(
        parse_str("h.conf", &text).unwrap().router.id,
        Ipv4Addr::new(10, 0, 1, 254)
    );
    assert_eq!(
        parse_str("h.conf", &with(ONE)).unwrap().router.id,
        Ipv4Addr::new(192, 0, 2, 2),
        "the highest interface address"
    );
}

/// `[ha.sync]` after ONE: its keys start on line 12.
const SYNC: &str = "[ha.sync]\nlocal = \"10.9.0.1:7420\"\npeer = \"10.9.0.2:7420\"\nkey-file = \"/etc/swrouter/ha.key\"\nnode-id = 1\npeer-node-id = 2\n";

#[test]
fn the_sync_channel_is_read_and_round_trips() {
    let c = parse_str("h.conf", &with(&format!("{ONE}{SYNC}"))).unwrap();
    let s = c.ha.sync.as_ref().expect("sync");
    assert_eq!(s.local, "10.9.0.1:7420".parse().unwrap());
    assert_eq!(s.peer, "10.9.0.2:7420".parse().unwrap());
    assert_eq!(s.key_file, std::path::Path::new("/etc/swrouter/ha.key"));
    assert_eq!((s.node_id, s.peer_node_id), (1, 2));
    let again = parse_str("e.conf", &c.to_toml()).unwrap();
    assert_eq!(again.ha, c.ha);
    assert!(parse_str("h.conf", &with(ONE)).unwrap().ha.sync.is_none());
}

#[test]
fn sync_errors_point_at_the_value() {
    let sync = |local: &str, peer: &str, ids: (&str, &str)| {
        with(&format!(
            "{ONE}[ha.sync]\nlocal = \"{local}\"\npeer = \"{peer}\"\nkey-file = \"k\"\nnode-id = {}\npeer-node-id = {}\n",
            ids.0, ids.1
        ))
    };
    rejects(
        &sync("10.9.0.1", "10.9.0.2:7420", ("1", "2")),
        12,
        9,
        "not an IPv4 address with a port",
    );
    rejects(
        &sync("10.9.0.1:0", "10.9.0.2:7420", ("1", "2")),
        12,
        9,
        "port other than 0",
    );
    rejects(
        &sync("10.9.0.1:7420", "10.9.0.1:7420", ("1", "2")),
        13,
        8,
        "same as local",
    );
    rejects(
        &sync("10.0.1.2:7420", "10.9.0.2:7420", ("1", "2")),
        12,
        9,
        "which swrouter owns",
    );
    rejects(
        &sync("10.9.0.1:7420", "10.9.0.2:7420", ("1", "1")),
        16,
        16,
        "this node's own node-id",
    );
    rejects(
        &sync("10.9.0.1:7420", "10.9.0.2:7420", ("0", "2")),
        15,
        11,
        "node-id = 0 is out of range",
    );
    rejects(
        &with(&format!("{ONE}{SYNC}peer-id = 3\n")),
        17,
        1,
        "unknown key `peer-id` in [ha.sync]",
    );
    rejects(
        &with(&format!("{ONE}[ha.sync]\nlocal = \"10.9.0.1:7420\"\n")),
        11,
        1,
        "peer",
    );
}

#[test]
fn the_pseudo_standby_socket_is_read_checked_and_round_trips() {
    let c = parse_str(
        "h.conf",
        &with(&format!(
            "{ONE}{SYNC}local-socket = \"/run/swrouter/ha.sock\"\n"
        )),
    )
    .unwrap();
    let s = c.ha.sync.as_ref().expect("sync");
    assert_eq!(
        s.local_socket.as_deref(),
        Some(std::path::Path::new("/run/swrouter/ha.sock"))
    );
    let again = parse_str("e.conf", &c.to_toml()).unwrap();
    assert_eq!(again.ha, c.ha);
    assert!(parse_str("h.conf", &with(&format!("{ONE}{SYNC}")))
        .unwrap()
        .ha
        .sync
        .unwrap()
        .local_socket
        .is_none());
    rejects(
        &with(&format!("{ONE}{SYNC}local-socket = \"ha.sock\"\n")),
        17,
        16,
        "not an absolute file path",
    );
    rejects(
        &with(&format!(
            "{ONE}[ha.sync]\nlocal = \"10.9.0.1:7420\"\npeer = \"10.9.0.2:7420\"\nkey-file = \"k\"\nnode-id = 2147483648\npeer-node-id = 2\nlocal-socket = \"/run/ha.sock\"\n"
        )),
        15,
        11,
        "top bit set",
    );
}
