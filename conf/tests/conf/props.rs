//! Property tests: `parse_str` (router.conf) and `cache::parse_str` (cache.conf) never panic,
//! and whatever they accept survives `to_toml`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use conf::parse_str;
use proptest::prelude::*;

/// The richer shipped example, the seed for mutations.
const EXAMPLE: &str = include_str!("../../examples/router.conf");
/// The shipped cache.conf example, the seed for cache.conf mutations.
const CACHE_EXAMPLE: &str = include_str!("../../examples/cache.conf");

/// Pieces of TOML and of our values, spliced in by the mutator to reach deep code paths.
const SNIPPETS: &[&str] = &[
    "[router]\n",
    "[[interface]]\n",
    "[[route]]\n",
    "\n",
    "=",
    "\"",
    "'",
    "[",
    "]",
    "{",
    "}",
    ",",
    "#",
    "/",
    ":",
    ".",
    "0",
    "1",
    "32",
    "255",
    "-1",
    "é",
    "\r\n",
    "name = \"eth0\"\n",
    "address = \"10.0.1.1/24\"\n",
    "via = \"10.0.1.1\"\n",
    "prefix = \"0.0.0.0/0\"\n",
    "interface = \"eth9\"\n",
    "mtu = 70000\n",
    "workers = 0\n",
    "id = \"10.0.1.1\"\n",
    "mac = \"ff:ff:ff:ff:ff:ff\"\n",
    "log-level = \"x\"\n",
    "[cache]\n",
    "[wccp]\n",
    "[[wccp.service]]\n",
    "routers = [\"10.0.3.1\"]\n",
    "bypass = [\"10.0.2.7/24\"]\n",
    "weight = 70000\n",
    "ports = [0]\n",
    "hash = [\"src-ip\"]\n",
    "protocol = \"udp\"\n",
    "\"\"\"",
    "\\u00e9",
    "1e3",
    "true",
];

/// One edit to the example text.
#[derive(Debug, Clone)]
enum Edit {
    /// Remove `len` bytes at a position (a fraction of the length).
    Delete(f64, usize),
    /// Insert one of the snippets.
    Insert(f64, usize),
    /// Overwrite one byte.
    Replace(f64, u8),
    /// Copy a line to another place.
    DupLine(f64, f64),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0.0..1.0f64, 1..20usize).prop_map(|(p, n)| Edit::Delete(p, n)),
        (0.0..1.0f64, 0..SNIPPETS.len()).prop_map(|(p, i)| Edit::Insert(p, i)),
        (0.0..1.0f64, any::<u8>()).prop_map(|(p, b)| Edit::Replace(p, b)),
        (0.0..1.0f64, 0.0..1.0f64).prop_map(|(a, b)| Edit::DupLine(a, b)),
    ]
}

/// Applies `edits` to `text` byte-wise; invalid UTF-8 is replaced, as a file reader would not.
fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut b = text.as_bytes().to_vec();
    let at = |len: usize, p: f64| ((len as f64) * p) as usize;
    for e in edits {
        match *e {
            Edit::Delete(p, n) => {
                let i = at(b.len(), p).min(b.len());
                let j = (i + n).min(b.len());
                b.drain(i..j);
            }
            Edit::Insert(p, s) => {
                let i = at(b.len(), p).min(b.len());
                b.splice(i..i, SNIPPETS[s].bytes());
            }
            Edit::Replace(p, v) => {
                if !b.is_empty() {
                    let i = at(b.len(), p).min(b.len() - 1);
                    b[i] = v;
                }
            }
            Edit::DupLine(from, to) => {
                let lines: Vec<&[u8]> = b.split_inclusive(|c| *c == b'\n').collect();
                if !lines.is_empty() {
                    let line = lines[at(lines.len(), from).min(lines.len() - 1)].to_vec();
                    let mut out: Vec<u8> = Vec::new();
                    let k = at(lines.len(), to).min(lines.len());
                    for (n, l) in lines.iter().enumerate() {
                        if n == k {
                            out.extend_from_slice(&line);
                        }
                        out.extend_from_slice(l);
                    }
                    b = out;
                }
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// Whatever is accepted must print as TOML that parses back to the same config.
fn check(text: &str) -> Result<(), TestCaseError> {
    match parse_str("p.conf", text) {
        Ok(c) => {
            let again = parse_str("effective", &c.to_toml());
            prop_assert_eq!(again.as_ref(), Ok(&c), "effective:\n{}", c.to_toml());
        }
        Err(e) => {
            prop_assert!(!e.msg.is_empty() && !e.msg.contains('\n'), "{e}");
            // A position is always inside the text: a line that exists, a column on it.
            let lines: Vec<&str> = text.split('\n').collect();
            prop_assert!(e.line >= 1 && e.line <= lines.len(), "{e}");
            prop_assert!(
                e.col >= 1 && e.col <= lines[e.line - 1].chars().count() + 1,
                "{e}"
            );
        }
    }
    Ok(())
}

/// The same for cache.conf.
fn check_cache(text: &str) -> Result<(), TestCaseError> {
    match conf::cache::parse_str("c.conf", text) {
        Ok(c) => {
            let again = conf::cache::parse_str("effective", &c.to_toml());
            prop_assert_eq!(again.as_ref(), Ok(&c), "effective:\n{}", c.to_toml());
        }
        Err(e) => {
            prop_assert!(!e.msg.is_empty() && !e.msg.contains('\n'), "{e}");
            let lines: Vec<&str> = text.split('\n').collect();
            prop_assert!(e.line >= 1 && e.line <= lines.len(), "{e}");
            prop_assert!(
                e.col >= 1 && e.col <= lines[e.line - 1].chars().count() + 1,
                "{e}"
            );
        }
    }
    Ok(())
}

/// A valid config built from random choices, as TOML text.
fn valid_config() -> impl Strategy<Value = String> {
    let iface = (
        16u8..=30,
        any::<u32>(),
        proptest::option::of(any::<[u8; 6]>()),
        proptest::option::of(576u16..=9000),
    );
    let route = (
        0usize..8,
        0u8..=32,
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
    );
    (
        proptest::collection::vec(iface, 1..5),
        proptest::collection::vec(route, 0..6),
        proptest::option::of(1usize..=64),
        any::<bool>(),
        proptest::option::of(0usize..5),
    )
        .prop_map(|(ifaces, routes, workers, crlf, id)| {
            let mut t = String::from("[router]\n");
            if let Some(w) = workers {
                let _ = writeln!(t, "workers = {w}");
            }
            // Interface k lives in 10.k.0.0/16, so prefixes of length 16.. never overlap.
            let mut nets = Vec::new();
            for (k, (len, host, mac, mtu)) in ifaces.iter().enumerate() {
                let base = u32::from(Ipv4Addr::new(10, k as u8, 0, 0));
                let size = 1u32 << (32 - len);
                let net = base | ((host % (1 << (*len - 16))) << (32 - len));
                let addr = Ipv4Addr::from(net + 1 + host % (size - 2));
                nets.push((net, size, addr, *len));
                let _ = write!(
                    t,
                    "\n[[interface]]\nname = \"if{k}\"\naddress = \"{addr}/{len}\"\n"
                );
                if let Some(mut m) = *mac {
                    m[0] = (m[0] & 0xfe) | 0x02;
                    let _ = writeln!(t, "mac = \"{}\"", conf::MacAddr(m));
                }
                if let Some(mtu) = mtu {
                    let _ = writeln!(t, "mtu = {mtu}");
                }
            }
            if let Some(i) = id {
                let (_, _, addr, _) = nets[i % nets.len()];
                t = t.replacen("[router]\n", &format!("[router]\nid = \"{addr}\"\n"), 1);
            }
            let mut seen = Vec::new();
            for (k, len, dst, hop, named) in routes {
                let (net, size, addr, _) = nets[k % nets.len()];
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                let prefix = (Ipv4Addr::from(dst & mask), len);
                let via = Ipv4Addr::from(net + 1 + hop % (size - 2));
                // Skip what validation rightly rejects: our own address as next hop, a repeated
                // prefix, or a route for a connected network.
                let connected = nets.iter().any(|n| (Ipv4Addr::from(n.0), n.3) == prefix);
                if via == addr || seen.contains(&prefix) || connected {
                    continue;
                }
                seen.push(prefix);
                let _ = write!(
                    t,
                    "\n[[route]]\nprefix = \"{}/{}\"\nvia = \"{via}\"\n",
                    prefix.0, prefix.1
                );
                if named {
                    let _ = writeln!(t, "interface = \"if{}\"", k % nets.len());
                }
            }
            if crlf {
                t = t.replace('\n', "\r\n");
            }
            t
        })
}

proptest! {
    // 512 cases by default; PROPTEST_CASES=N in the environment runs a longer soak.
    #![proptest_config(ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() { ProptestConfig::default().cases } else { 512 },
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        check(&s)?;
    }

    #[test]
    fn toml_like_strings_never_panic(s in "[\\[\\]a-z=\"0-9./:# \n-]{0,200}") {
        check(&s)?;
    }

    #[test]
    fn mutated_example_never_panics(edits in proptest::collection::vec(edit(), 1..8)) {
        check(&mutate(EXAMPLE, &edits))?;
    }

    #[test]
    fn arbitrary_strings_never_panic_as_cache_conf(s in any::<String>()) {
        check_cache(&s)?;
    }

    #[test]
    fn mutated_cache_example_never_panics(edits in proptest::collection::vec(edit(), 1..8)) {
        check_cache(&mutate(CACHE_EXAMPLE, &edits))?;
    }

    #[test]
    fn generated_configs_are_valid_and_round_trip(text in valid_config()) {
        let c = parse_str("gen.conf", &text);
        prop_assert!(c.is_ok(), "{}\n{}", c.unwrap_err(), text);
        check(&text)?;
    }
}
