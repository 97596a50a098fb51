//! `[steering]`: parsing into the steering model, defaults, round trip, and every error with
//! its position.

use std::net::Ipv4Addr;
use std::time::Duration;

use conf::parse_str;
use steering::{DeviceMode, HopTarget, OnFailure, PortRange, Restore, ServiceKey};

/// Three interfaces and two devices; 21 lines, so text appended starts on line 22.
const BASE: &str = r#"[[interface]]
name = "eth0"
address = "10.0.1.1/24"
[[interface]]
name = "eth1"
address = "10.0.2.1/24"
[[interface]]
name = "eth2"
address = "10.0.3.1/24"
[[steering.device]]
name = "fw"
mode = "transparent"
interfaces = ["eth1", "eth2"]
mac = "02:00:00:00:f0:00"
out-mac = "02:00:00:00:f0:01"
[[steering.device]]
name = "srv"
mode = "nat"
interfaces = ["eth2"]
address = "10.0.3.10"
# end of base
"#;

fn with(tail: &str) -> String {
    format!("{BASE}{tail}")
}

#[track_caller]
fn rejects(text: &str, line: usize, col: usize, msg_part: &str) {
    let e = parse_str("s.conf", text).expect_err("config should be rejected");
    assert!(
        e.msg.contains(msg_part),
        "message {:?} lacks {msg_part:?}",
        e.msg
    );
    assert_eq!((e.line, e.col), (line, col), "{e}");
}

const WEB: &str = r#"[[steering.service]]
name = "web"
address = "10.0.9.80"
port = 80
ingress = ["eth0"]
chain = [{ device = "fw" }, { device = "srv" }]
"#;

#[test]
fn parses_into_the_model_with_defaults_and_round_trips() {
    let c = parse_str("s.conf", &with(WEB)).unwrap_or_else(|e| panic!("{e}"));
    let d = &c.steering.definitions;
    assert_eq!(d.devices.len(), 2);
    assert_eq!(d.devices[0].mode, DeviceMode::Transparent);
    assert_eq!(d.devices[0].interfaces, vec![1, 2]);
    assert_eq!(d.devices[1].addr, Some(Ipv4Addr::new(10, 0, 3, 10)));
    let s = &d.services[0];
    assert_eq!(
        s.key,
        ServiceKey::Address {
            addr: Ipv4Addr::new(10, 0, 9, 80),
            proto: 6,
            ports: PortRange::single(80)
        }
    );
    assert_eq!(s.ingress, vec![0]);
    assert_eq!(s.chain[0].target, HopTarget::Device("fw".into()));
    let again = parse_str("e.conf", &c.to_toml()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, c);
}

#[test]
fn no_steering_section_is_empty() {
    let c = parse_str(
        "s.conf",
        "[[interface]]\nname = \"a\"\naddress = \"10.0.0.1/24\"\n",
    )
    .unwrap();
    assert!(c.steering.is_empty());
}

#[test]
fn pools_checks_and_defaults() {
    let c = parse_str(
        "s.conf",
        &with(
            r#"[[steering.pool]]
name = "p"
members = ["srv"]
on-failure = "reset"
restore = "manual"
probe-port = 80
passive-syns = 3
[[steering.service]]
name = "web"
address = "10.0.9.80"
protocol = "udp"
port = "5000-5010"
ingress = ["eth0"]
chain = [{ pool = "p" }]
dscp = 46
acl-default = "deny"
acl = [{ action = "permit", source = "10.0.1.0/24", protocol = "udp", ports = 5000 }]
"#,
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let p = &c.steering.definitions.pools[0];
    assert_eq!(
        p.on_failure,
        OnFailure::Reset {
            window: Duration::from_millis(30_000)
        }
    );
    assert_eq!(p.restore, Restore::Manual);
    let a = p.active.unwrap();
    assert_eq!((a.port, a.rise, a.fall), (80, 2, 3));
    assert_eq!(a.interval, Duration::from_secs(1));
    assert_eq!(p.passive.unwrap().syn_threshold, 3);
    let s = &c.steering.definitions.services[0];
    assert_eq!(s.dscp, Some(46));
    assert_eq!(s.acl.len(), 1);
    assert_eq!(parse_str("e.conf", &c.to_toml()).unwrap(), c);
}

#[test]
fn chain_naming_an_unknown_device_is_rejected_at_the_name() {
    rejects(
        &with(&WEB.replace("{ device = \"srv\" }", "{ device = \"nope\" }")),
        27,
        40,
        "chain names unknown device `nope`",
    );
}

#[test]
fn chain_naming_an_unknown_pool_is_rejected() {
    rejects(
        &with(&WEB.replace("{ device = \"srv\" }", "{ pool = \"nope\" }")),
        27,
        38,
        "unknown pool `nope`",
    );
}

#[test]
fn device_on_an_unknown_interface() {
    rejects(
        &with("[[steering.device]]\nname = \"x\"\nmode = \"nat\"\ninterfaces = [\"eth9\"]\naddress = \"10.0.3.9\"\n"),
        25,
        15,
        "unknown interface `eth9`",
    );
}

#[test]
fn overlapping_dynamic_ranges_of_two_service_ports_of_one_address() {
    let text = with(
        r#"[[steering.service]]
name = "a"
address = "10.0.9.80"
port = 21
ingress = ["eth0"]
chain = [{ device = "srv" }]
dynamic-ports = ["20000-20099"]
[[steering.service]]
name = "b"
address = "10.0.9.80"
port = 2121
ingress = ["eth0"]
chain = [{ device = "fw" }, { device = "srv" }]
dynamic-ports = [19000, "20050-20200"]
"#,
    );
    rejects(
        &text,
        35,
        25,
        "dynamic port range 20050-20200 of service `b` overlaps dynamic port range 20000-20099 of service `a` (line 23)",
    );
}

#[test]
fn dynamic_range_over_its_own_port() {
    rejects(
        &with(&format!("{WEB}dynamic-ports = [\"70-90\"]\n")),
        28,
        18,
        "overlaps its own service port 80",
    );
}

#[test]
fn field_errors_point_at_the_value() {
    rejects(
        &with(&WEB.replace("port = 80", "port = 70000")),
        25,
        8,
        "70000 is not a port",
    );
    rejects(
        &with(&WEB.replace("port = 80", "port = \"90-80\"")),
        25,
        8,
        "is empty",
    );
    rejects(
        &with(&format!("{WEB}dscp = 64\n")),
        28,
        8,
        "dscp = 64 is out of range",
    );
    rejects(
        &BASE.replace("mode = \"nat\"", "mode = \"natt\""),
        18,
        8,
        "unknown device mode `natt`",
    );
    rejects(
        &BASE.replace(
            "out-mac = \"02:00:00:00:f0:01\"",
            "out-mac = \"ff:ff:ff:ff:ff:ff\"",
        ),
        15,
        11,
        "must be a unicast address",
    );
    rejects(
        &with(&format!("{WEB}acl = [{{ action = \"drop\" }}]\n")),
        28,
        19,
        "unknown ACL action `drop`",
    );
    rejects(
        &with(&format!("{WEB}colour = 1\n")),
        28,
        1,
        "unknown key `colour` in [[steering.service]]",
    );
}

#[test]
fn duplicate_names_and_compile_errors_point_at_the_name() {
    rejects(
        &with("[[steering.device]]\nname = \"fw\"\nmode = \"nat\"\ninterfaces = [\"eth2\"]\naddress = \"10.0.3.9\"\n"),
        23,
        8,
        "device `fw` is already defined (line 11)",
    );
    // A NAT device before the last hop: caught by steering::compile, placed at the service.
    rejects(
        &with(&WEB.replace(
            "[{ device = \"fw\" }, { device = \"srv\" }]",
            "[{ device = \"srv\" }, { device = \"fw\" }]",
        )),
        23,
        8,
        "ends a chain but is not its last hop",
    );
}
