//! `swrouter demo` end to end: it builds its lab, shows traffic crossing the router, and leaves
//! no namespace behind.
#![allow(clippy::unwrap_used, missing_docs)]

use integration::{binary, require_root};
use std::process::Command;

#[test]
fn demo_shows_forwarding_and_cleans_up() {
    require_root();
    let before = netlab::list_netns().unwrap();
    let out = Command::new(binary("swrouter"))
        .args(["demo", "--seconds", "4"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("pipeline: rx="),
        "live counters shown: {text}"
    );
    let summary = text.lines().find(|l| l.starts_with("summary:")).unwrap();
    let pings: u32 = summary.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(pings >= 5, "{summary}");
    assert!(!summary.contains(" and 0 complete"), "{summary}");
    let after = netlab::list_netns().unwrap();
    let leaked: Vec<_> = after
        .iter()
        .filter(|n| n.starts_with("swdemo") && !before.contains(n))
        .collect();
    assert!(leaked.is_empty(), "namespaces left behind: {leaked:?}");
}
