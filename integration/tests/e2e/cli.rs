//! The command line without a running router: `swrouter check`, `swcache --check`, errors, help.
#![allow(clippy::unwrap_used, missing_docs)]

use integration::{binary, workspace_root};
use std::process::Command;

#[test]
fn check_prints_the_effective_config_of_every_example() {
    let dir = workspace_root().join("conf/examples");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        // cache*.conf are swcache's files, not router.conf (see the next test).
        let cache = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("cache"));
        if p.extension().is_some_and(|x| x == "conf") && !cache {
            let out = Command::new(binary("swrouter"))
                .args(["check", "-c"])
                .arg(&p)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("[router]")
                    && text.contains("workers")
                    && text.contains("[[interface]]"),
                "{text}"
            );
            seen += 1;
        }
    }
    assert!(seen >= 2, "examples found: {seen}");
}

#[test]
fn swcache_check_prints_the_effective_cache_conf_and_flags_override_it() {
    let example = workspace_root().join("conf/examples/cache.conf");
    let check = |extra: &[&str]| {
        let out = Command::new(binary("swcache"))
            .arg("-c")
            .arg(&example)
            .arg("--check")
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let text = check(&[]);
    assert!(
        text.starts_with("# swcache effective configuration"),
        "{text}"
    );
    assert!(text.contains("address = \"10.0.3.10\""), "{text}");
    assert!(text.contains("routers = [\"10.0.3.1\"]"), "{text}");
    assert!(text.contains("id = 90"), "{text}");
    let text = check(&["--router", "10.0.3.9", "--weight", "5"]);
    assert!(text.contains("routers = [\"10.0.3.9\"]"), "{text}");
    assert!(text.contains("weight = 5\n"), "{text}");

    // A bad file stops swcache with its position, before anything is set up.
    let dir = std::env::temp_dir().join(format!("swcache-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("cache.conf");
    std::fs::write(&bad, "[wccp]\nrouters = [\"10.0.3.1\", \"10.0.3\"]\n").unwrap();
    let out = Command::new(binary("swcache"))
        .arg("-c")
        .arg(&bad)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "swcache: {}:2:24: `10.0.3` in `routers` is not an IPv4 address",
            bad.display()
        )
    );
}

#[test]
fn check_rejects_a_bad_file_with_its_position() {
    let dir = std::env::temp_dir().join(format!("swrouter-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.conf");
    std::fs::write(&p, "[router]\nworkers = 1\n\n[[interface]]\nname = \"eth0\"\naddress = \"10.0.1.1/24\"\n\n[[route]]\nprefix = \"10.9.0.0/16\"\nvia = \"10.7.7.7\"\n").unwrap();
    let out = Command::new(binary("swrouter"))
        .args(["check", "-c"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.conf:10:7"),
        "position of the via value expected: {err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn status_without_a_router_says_so() {
    let out = Command::new(binary("swrouter"))
        .args(["status", "-s", "/nonexistent/swrouter.sock"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is swrouter running?"));
}
