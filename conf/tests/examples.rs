//! The shipped examples under `conf/examples/` all validate, and say what their comments claim.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use conf::{load_file, parse_str, LogLevel, MacAddr, RouterConf};

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

#[test]
fn every_example_validates_and_round_trips() {
    let files = examples();
    assert!(files.len() >= 2, "examples missing: {files:?}");
    for path in files {
        let conf = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let again = parse_str("effective", &conf.to_toml()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, conf, "{}", path.display());
    }
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
    let readme = include_str!("../README.md");
    let start = readme.find("```toml\n").expect("README has a toml example") + "```toml\n".len();
    let len = readme[start..].find("```").expect("example is closed");
    let c = parse_str("README.md", &readme[start..start + len]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.router.workers, 2);
}
