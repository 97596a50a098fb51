//! `[nat]`: parsing into the nat crate's config, defaults, round trip, and errors with their
//! positions.

use std::net::Ipv4Addr;

use conf::parse_str;
use nat::config::NonSynPolicy;

/// Two interfaces; 7 lines, so text appended starts on line 8.
const BASE: &str = r#"[router]
workers = 2
[[interface]]
name = "in0"
address = "10.0.1.1/24"
[[interface]]
name = "out0"
"#;

fn with(tail: &str) -> String {
    format!("{BASE}address = \"192.0.2.1/24\"\n{tail}")
}

#[track_caller]
fn rejects(text: &str, line: usize, col: usize, msg_part: &str) {
    let e = parse_str("n.conf", text).expect_err("config should be rejected");
    assert!(
        e.msg.contains(msg_part),
        "message {:?} lacks {msg_part:?}",
        e.msg
    );
    assert_eq!((e.line, e.col), (line, col), "{e}");
}

#[test]
fn a_rule_defaults_to_the_outside_address_and_the_rfc_timeouts() {
    let c = parse_str(
        "n.conf",
        &with("[[nat.rule]]\ninside = [\"10.0.0.0/8\"]\noutside = \"out0\"\n"),
    )
    .unwrap();
    let n = c.nat.config.as_ref().expect("nat on");
    assert_eq!(n.rules.len(), 1);
    assert_eq!(n.rules[0].outside, 1);
    assert_eq!(n.rules[0].pool, vec![Ipv4Addr::new(192, 0, 2, 1)]);
    assert_eq!((n.port_min, n.port_max), (1024, 65535));
    assert_eq!(n.workers, 2, "VID blocks are sized for [router] workers");
    assert_eq!(n.timeouts.tcp_established, 7440);
    assert_eq!(n.timeouts.udp, 300);
    assert_eq!(n.non_syn, NonSynPolicy::Drop);
    let again = parse_str("effective", &c.to_toml()).unwrap();
    assert_eq!(again, c);
    // No section: NAT off.
    assert!(parse_str("n.conf", &with("")).unwrap().nat.is_empty());
}

#[test]
fn every_key_is_read_and_round_trips() {
    let c = parse_str(
        "n.conf",
        &with(
            r#"[nat]
port-range = "20000-29999"
max-sessions = 1000
non-syn = "setup"
mirror-queue = 64
tcp-established-timeout = 3600
tcp-transitory-timeout = 60
udp-timeout = 30
icmp-timeout = 10
[[nat.rule]]
inside = ["10.0.1.0/24", "10.0.7.0/24"]
outside = "out0"
pool = ["192.0.2.10", "198.51.100.7"]
"#,
        ),
    )
    .unwrap();
    let n = c.nat.config.as_ref().unwrap();
    assert_eq!((n.port_min, n.port_max), (20000, 29999));
    assert_eq!((n.max_sessions, n.mirror_queue), (1000, 64));
    assert_eq!(n.non_syn, NonSynPolicy::Setup);
    assert_eq!(
        (
            n.timeouts.tcp_established,
            n.timeouts.tcp_transitory,
            n.timeouts.udp,
            n.timeouts.icmp
        ),
        (3600, 60, 30, 10)
    );
    assert_eq!(n.rules[0].inside.len(), 2);
    assert_eq!(n.rules[0].pool[1], Ipv4Addr::new(198, 51, 100, 7));
    assert_eq!(parse_str("effective", &c.to_toml()).unwrap(), c);
}

#[test]
fn errors_point_at_the_value() {
    let rule = "[[nat.rule]]\ninside = [\"10.0.0.0/8\"]\noutside = \"out0\"\n";
    rejects(
        &with("[[nat.rule]]\ninside = [\"10.0.0.0/8\"]\noutside = \"eth9\"\n"),
        11,
        11,
        "unknown interface `eth9`",
    );
    rejects(
        &with("[[nat.rule]]\ninside = [\"10.0.0.1/8\"]\noutside = \"out0\"\n"),
        10,
        11,
        "host bits set; did you mean 10.0.0.0/8",
    );
    rejects(
        &with("[[nat.rule]]\ninside = []\noutside = \"out0\"\n"),
        10,
        10,
        "at least one inside prefix",
    );
    rejects(
        &with("[[nat.rule]]\ninside = [\"192.0.2.0/25\"]\noutside = \"out0\"\n"),
        10,
        11,
        "lies on the outside interface",
    );
    rejects(
        &with(&format!("{rule}pool = [\"10.0.1.1\"]\n")),
        12,
        9,
        "is interface `in0`'s address",
    );
    rejects(
        &with(&format!("{rule}pool = [\"224.0.0.1\"]\n")),
        12,
        9,
        "not a unicast address",
    );
    rejects(
        &with(&format!(
            "{rule}[[nat.rule]]\ninside = [\"172.16.0.0/12\"]\noutside = \"out0\"\n"
        )),
        14,
        11,
        "already used (line 11)",
    );
    rejects(
        &with(&format!("[nat]\nport-range = \"70-60\"\n{rule}")),
        10,
        14,
        "invalid port-range",
    );
    rejects(
        &with(&format!("[nat]\nport-range = \"1000-1010\"\n{rule}")),
        10,
        14,
        "too small for 2 workers",
    );
    rejects(
        &with(&format!("[nat]\nudp-timeout = 0\n{rule}")),
        10,
        15,
        "udp-timeout = 0 is out of range",
    );
    rejects(
        &with(&format!("[nat]\nnon-syn = \"loose\"\n{rule}")),
        10,
        11,
        "expected one of: drop, setup",
    );
    rejects(
        &with("[nat]\nudp-timeout = 30\n"),
        10,
        15,
        "has no [[nat.rule]]",
    );
    rejects(
        &with(&format!("[nat]\nudp-timout = 30\n{rule}")),
        10,
        1,
        "unknown key `udp-timout` in [nat]",
    );
}
