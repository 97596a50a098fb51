//! The shipped examples under `conf/examples/` all validate, and say what their comments claim.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use conf::{cache, load_file, parse_str, LogLevel, MacAddr, RouterConf};

/// Every file in `conf/examples/`, sorted.
fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("conf/examples/ is readable")
        .map(|e| e.expect("conf/examples/ entry is readable").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// The example called `name`, loaded.
fn example(name: &str) -> RouterConf {
    load_file(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// True for a cache.conf example (its name starts with `cache`); the others are router.conf.
fn is_cache_conf(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("cache"))
}

#[test]
fn every_example_validates_and_round_trips() {
    let files = examples();
    assert!(files.len() >= 2, "examples missing: {files:?}");
    assert!(
        files.iter().any(|p| is_cache_conf(p)),
        "no cache.conf example: {files:?}"
    );
    for path in files {
        if is_cache_conf(&path) {
            let conf = cache::load_file(&path).unwrap_or_else(|e| panic!("{e}"));
            let again =
                cache::parse_str("effective", &conf.to_toml()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(again, conf, "{}", path.display());
            // A cache.conf is not a router.conf: the two schemas do not silently overlap.
            assert!(load_file(&path).is_err(), "{}", path.display());
            continue;
        }
        let conf = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let again = parse_str("effective", &conf.to_toml()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, conf, "{}", path.display());
    }
}

#[test]
fn cache_example_joins_the_wccp_example() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let c = cache::load_file(&dir.join("cache.conf")).unwrap_or_else(|e| panic!("{e}"));
    let r = example("wccp.conf");
    assert_eq!(c.address, Some(Ipv4Addr::new(10, 0, 3, 10)));
    assert_eq!(c.routers, vec![Ipv4Addr::new(10, 0, 3, 1)]);
    assert!(r.interfaces.iter().any(|i| i.address == c.routers[0]));
    assert_eq!(c.bypass, vec!["10.0.2.80/32".parse().unwrap()]);
    // Same services, same passwords, and the dynamic one exactly as the router pins it: both
    // files go through one translation into wccp's ServiceInfo.
    for s in &c.services {
        let id = s.service.service_id;
        let rs = r.wccp.iter().find(|w| w.id == id).unwrap();
        assert_eq!(s.password, rs.password, "service {id}");
        if id != 0 {
            assert_eq!(rs.definition.as_ref(), Some(&s.service), "service {id}");
            let caches = rs.caches.as_ref().unwrap();
            assert!(
                caches.iter().any(|n| n.contains(c.address.unwrap())),
                "in the group list"
            );
        }
    }
    assert_eq!(c.services.len(), 2);
    let engine = c.engine_config().unwrap().unwrap();
    assert_eq!(engine.services.len(), 2);
}

#[test]
fn minimal_example() {
    let c = example("minimal.conf");
    assert_eq!(c.interfaces.len(), 2);
    assert!(c.routes.is_empty());
    // The comment says: router id = the highest interface address.
    assert_eq!(c.router.id, Ipv4Addr::new(10, 0, 2, 1));
    assert_eq!(c.router.workers, 1);
}

#[test]
fn router_example() {
    let c = example("router.conf");
    assert_eq!(c.interfaces.len(), 3);
    assert_eq!(c.router.workers, 2);
    assert_eq!(c.router.log_level, LogLevel::Info);
    assert_eq!(c.router.id, Ipv4Addr::new(192, 168, 100, 2));
    let eth1 = c.interface("eth1").unwrap();
    assert_eq!(eth1.mac, Some(MacAddr([0x02, 0, 0, 0, 0x02, 0x01])));
    assert_eq!(eth1.mtu, 9000);
    let default = c.routes.iter().find(|r| r.prefix.prefix() == 0).unwrap();
    assert_eq!(default.via, Ipv4Addr::new(192, 168, 100, 1));
    assert_eq!(default.interface.as_deref(), Some("eth2"));
    assert_eq!(c.connected_interface(default.via).unwrap().name, "eth2");
    assert!(c.routes.len() >= 3);
}

#[test]
fn readme_example_validates() {
    let readme = include_str!("../../README.md");
    let start = readme.find("```toml\n").expect("README has a toml example") + "```toml\n".len();
    let len = readme[start..].find("```").expect("example is closed");
    let c = parse_str("README.md", &readme[start..start + len]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.router.workers, 2);
}

#[test]
fn readme_wccp_example_parses() {
    let readme = include_str!("../../README.md");
    let block = readme
        .split("```toml\n")
        .skip(1)
        .map(|b| &b[..b.find("```").expect("example is closed")])
        .find(|b| b.contains("gre-mss-clamp"))
        .expect("README has the WCCP example");
    let c = parse_str("README.md", block).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.wccp[0].fail_policy, conf::WccpFailPolicy::ClosedReject);
}

#[test]
fn ha_example_shares_a_gateway_address_on_each_link() {
    let c = example("ha.conf");
    assert_eq!(c.ha.vrrp.len(), 2);
    let office = &c.ha.vrrp[0].config;
    assert_eq!(office.virtual_addrs, vec![Ipv4Addr::new(10, 0, 1, 254)]);
    assert_eq!(office.adver_interval, 10, "100 ms");
    assert!(office.accept_mode && office.preempt);
    assert_eq!(c.ha.vrrp[1].interface, "uplink0");
}
