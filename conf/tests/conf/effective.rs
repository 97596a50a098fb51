//! `RouterConf::to_toml` (the effective config), `load_file`'s own errors, and the serde shape.

use std::path::{Path, PathBuf};

use conf::{load_file, parse_str, RouterConf};
use wccp::engine::{AssignmentMethod, ForwardingMethod, ReturnMethod};

/// A config that uses every key.
const FULL: &str = r#"
[router]
workers = 3
management-group = "swrouter"
log-level = "debug"
metrics-listen = "127.0.0.1:9469"

[[interface]]
name = "eth0"
address = "10.0.1.1/24"
mac = "02-00-00-00-00-01"

[[interface]]
name = "eth1"
address = "10.0.2.1/24"
mtu = 9000

[[route]]
prefix = "0.0.0.0/0"
via = "10.0.1.254"
interface = "eth0"

[[route]]
prefix = "10.9.0.0/16"
via = "10.0.2.9"
"#;

/// The exact effective form of `FULL`.
const FULL_EFFECTIVE: &str = r#"# swrouter effective configuration (defaults filled in)

[router]
id = "10.0.2.1"
workers = 3
management-socket = "/run/swrouter/swrouter.sock"
management-group = "swrouter"
log-level = "debug"
io-backend = "mmap"
metrics-listen = "127.0.0.1:9469"

[[interface]]
name = "eth0"
address = "10.0.1.1/24"
mac = "02:00:00:00:00:01"
mtu = 1500
io-backend = "mmap"

[[interface]]
name = "eth1"
address = "10.0.2.1/24"
mtu = 9000
io-backend = "mmap"

[[route]]
prefix = "0.0.0.0/0"
via = "10.0.1.254"
interface = "eth0"

[[route]]
prefix = "10.9.0.0/16"
via = "10.0.2.9"
"#;

#[test]
fn effective_config_has_every_default() {
    let c = parse_str("full.conf", FULL).unwrap();
    assert_eq!(c.to_toml(), FULL_EFFECTIVE);
}

#[test]
fn effective_config_round_trips() {
    let c = parse_str("full.conf", FULL).unwrap();
    let again = parse_str("effective", &c.to_toml()).unwrap();
    assert_eq!(again, c);
    // And it is a fixed point: printing the re-parsed config gives the same text.
    assert_eq!(again.to_toml(), c.to_toml());
}

#[test]
fn effective_config_escapes_strings() {
    // Linux allows quotes and backslashes in interface names; the output must stay valid TOML.
    let text = r#"
[router]
management-socket = "/run/sw \"router\"\\x.sock"
[[interface]]
name = "a\"b\\c"
address = "10.0.1.1/24"
"#;
    let c = parse_str("q.conf", text).unwrap();
    assert_eq!(c.interfaces[0].name, "a\"b\\c");
    assert_eq!(parse_str("effective", &c.to_toml()).unwrap(), c);
}

#[test]
fn serde_shape_matches_the_file_format() {
    // Serializing the public types with serde gives the same schema the parser reads.
    let c = parse_str("full.conf", FULL).unwrap();
    let via_serde = toml::to_string(&c).unwrap();
    assert_eq!(parse_str("serde", &via_serde).unwrap(), c);
    let json: serde_json::Value = serde_json::to_value(&c).unwrap();
    assert_eq!(json["router"]["log-level"], "debug");
    assert_eq!(json["interface"][0]["address"], "10.0.1.1/24");
    assert_eq!(json["interface"][0]["mac"], "02:00:00:00:00:01");
    assert_eq!(json["route"][1]["prefix"], "10.9.0.0/16");
    assert!(json["route"][0].get("line").is_none());
}

#[test]
fn unreadable_file() {
    let path = Path::new("/nonexistent/swrouter/router.conf");
    let e = load_file(path).unwrap_err();
    assert_eq!(
        (e.file.as_str(), e.line, e.col),
        ("/nonexistent/swrouter/router.conf", 0, 0)
    );
    assert!(e.msg.starts_with("cannot read: "), "{}", e.msg);
    // No `:0:0`, and what to do about it.
    let text = e.to_string();
    assert!(
        text.starts_with("/nonexistent/swrouter/router.conf: cannot read: "),
        "{text}"
    );
    assert!(text.contains("; check the path"), "{text}");
    let dir = load_file(&std::env::temp_dir()).unwrap_err().to_string();
    assert!(
        dir.ends_with("; give the config file, not its directory"),
        "{dir}"
    );
}

/// A file in the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(tag: &str, bytes: &[u8]) -> Self {
        let path =
            std::env::temp_dir().join(format!("conf-test-{}-{tag}.conf", std::process::id()));
        std::fs::write(&path, bytes).expect("temp dir is writable");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn file_errors_carry_the_path() {
    let f = TempFile::new("bad", b"[router]\nworkers = 0\n");
    let e = load_file(&f.0).unwrap_err();
    assert_eq!(e.file, f.0.display().to_string());
    assert_eq!((e.line, e.col), (2, 11));
}

#[test]
fn non_utf8_file() {
    let f = TempFile::new("latin1", b"[router]\n# r\xe9glage\n");
    let e = load_file(&f.0).unwrap_err();
    assert_eq!(
        (e.line, e.col, e.msg.as_str()),
        (2, 4, "file is not valid UTF-8 text")
    );
}

#[test]
fn load_file_equals_parse_str() {
    let f = TempFile::new("full", FULL.as_bytes());
    let a: RouterConf = load_file(&f.0).unwrap();
    assert_eq!(a, parse_str("x", FULL).unwrap());
}

#[test]
fn io_backend_defaults_to_the_router_one_and_can_be_set_per_interface() {
    let text = "[router]\nio-backend = \"mmap\"\n\n[[interface]]\nname = \"eth0\"\naddress = \"10.0.1.1/24\"\n\n[[interface]]\nname = \"eth1\"\naddress = \"10.0.2.1/24\"\nio-backend = \"pnet\"\n";
    let c = parse_str("b.conf", text).unwrap();
    assert_eq!(c.router.io_backend, conf::IoBackend::Mmap);
    assert_eq!(c.interfaces[0].io_backend, conf::IoBackend::Mmap);
    assert_eq!(c.interfaces[1].io_backend, conf::IoBackend::Pnet);
    assert_eq!(parse_str("b.conf", &c.to_toml()).unwrap(), c);
    let e = parse_str("b.conf", &text.replace("\"pnet\"", "\"xdp\"")).unwrap_err();
    assert_eq!((e.line, e.col), (11, 14));
    assert_eq!(
        e.msg,
        "unknown io-backend `xdp`; expected one of: pnet, mmap"
    );
}

#[test]
fn wccp_services_parse_with_defaults_and_round_trip() {
    let text = "[[interface]]\nname = \"eth0\"\naddress = \"10.0.1.1/24\"\n\n[[wccp.service]]\nid = 0\n\n[[wccp.service]]\nid = 90\npassword = \"abcdefgh\"\nforwarding = [\"gre\"]\nreturn = [\"gre\"]\nassignment = [\"hash\"]\ncaches = [\"10.0.1.5\", \"10.0.1.6\"]\n";
    let c = parse_str("w.conf", text).unwrap();
    assert_eq!(c.wccp.len(), 2);
    let s0 = &c.wccp[0];
    assert!(s0.is_standard() && s0.password.is_none() && s0.caches.is_none());
    assert_eq!(s0.forwarding, ForwardingMethod::ALL);
    assert_eq!(s0.packet_return, ReturnMethod::ALL);
    assert_eq!(s0.assignment, AssignmentMethod::ALL);
    let s90 = &c.wccp[1];
    assert_eq!((s90.id, s90.password.as_deref()), (90, Some("abcdefgh")));
    assert_eq!(s90.caches.as_ref().unwrap().len(), 2);
    assert_eq!(parse_str("w.conf", &c.to_toml()).unwrap(), c);
    for (bad, line, col, msg) in [
        ("id = 300", 6, 6, "WCCP service id 300 is not supported"),
        (
            "id = 0\npassword = \"toolongpw\"",
            7,
            12,
            "WCCP password must be 1..=8 bytes",
        ),
        (
            "id = 0\nforwarding = [\"ip\"]",
            7,
            14,
            "unknown forwarding method `ip`",
        ),
        (
            "id = 0\ncaches = [\"10.0.1\"]",
            7,
            11,
            "`10.0.1` in `caches` is not an IPv4 address or prefix",
        ),
        (
            "id = 0\n\n[[wccp.service]]\nid = 0",
            9,
            6,
            "WCCP service 0 is already defined at line 5",
        ),
    ] {
        let t = format!("[[interface]]\nname = \"eth0\"\naddress = \"10.0.1.1/24\"\n\n[[wccp.service]]\n{bad}\n");
        let e = parse_str("w.conf", &t).unwrap_err();
        assert_eq!((e.line, e.col), (line, col), "{bad}: {e}");
        assert!(e.msg.starts_with(msg), "{bad}: {e}");
    }
}
