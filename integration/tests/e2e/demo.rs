//! `swrouter demo` end to end: it builds its lab (client, router, server, two WCCP caches with
//! swcache + Squid), shows traffic crossing the router, fetches served by both caches, the fast
//! failover and the reassignment after cache-b crashes, a clean summary, and leaves no namespace
//! behind.
#![allow(clippy::unwrap_used, missing_docs)]

use integration::{binary, require_root};
use std::process::Command;

/// The number after `word ` in `line` (`served 4`, `after 0.64 s`).
fn number_after(line: &str, word: &str) -> f64 {
    let rest = &line[line
        .find(word)
        .unwrap_or_else(|| panic!("{word:?} in {line}"))
        + word.len()..];
    let n: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    n.parse()
        .unwrap_or_else(|_| panic!("number after {word:?} in {line}"))
}

#[test]
fn demo_shows_two_caches_failover_and_cleans_up() {
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
    let line = |needle: &str| -> &str {
        text.lines()
            .filter(|l| l.starts_with('[') || l.starts_with("summary:"))
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
    };
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle:?}: {text}"))
    };
    assert!(text.contains("pipeline: rx="), "live view shown: {text}");
    for phase in 1..=5 {
        assert!(
            text.contains(&format!("phase {phase}/5")),
            "phase {phase}: {text}"
        );
    }
    assert!(line("routing: downloaded 2 MiB").contains("HTTP 200"));
    assert!(line("assignment: designated cache 10.0.3.2").contains("cache-b 128 buckets"));

    // Before the crash both caches served fetches, and nothing failed.
    let before_crash = line("before the crash:");
    assert!(
        number_after(before_crash, "cache-a served") >= 1.0,
        "{before_crash}"
    );
    assert!(
        number_after(before_crash, "cache-b served") >= 1.0,
        "{before_crash}"
    );
    assert!(before_crash.ends_with("failed 0"), "{before_crash}");

    // Fast failover noticed the crash quickly; cache-b's flows then went direct and succeeded.
    let failover = line("fast failover:");
    let secs = number_after(failover, "down after");
    assert!(secs > 0.0 && secs < 2.5, "{failover}");
    let (crash, reassigned) = (at("] fast failover:"), at("] reassigned "));
    let during = &text[crash..reassigned];
    assert!(
        during
            .lines()
            .any(|l| l.contains("held by cache-b: served direct by the origin")),
        "flows of cache-b's buckets go direct after the failover: {during}"
    );
    assert!(!text.contains("FAILED"), "{text}");

    // The designated cache reassigned: cache-a holds every bucket and serves every fetch.
    assert!(line("reassigned ").contains("cache-a holds all 256 buckets"));
    let after: Vec<&str> = text[reassigned..]
        .lines()
        .filter(|l| l.contains("] fetch http://"))
        .collect();
    assert!(after.len() >= 4, "{text}");
    for l in after {
        assert!(l.contains("served by cache-a"), "{l}");
    }

    let summary = line("summary:");
    assert!(summary.contains("all fetches succeeded"), "{summary}");
    assert!(!summary.contains(" 0 ping replies"), "{summary}");
    assert!(
        text.contains("lab swdemo-") && text.contains(" removed"),
        "{text}"
    );

    let after = netlab::list_netns().unwrap();
    let leaked: Vec<_> = after
        .iter()
        .filter(|n| n.starts_with("swdemo") && !before.contains(n))
        .collect();
    assert!(leaked.is_empty(), "namespaces left behind: {leaked:?}");
}
