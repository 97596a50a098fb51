//! The command line without a running router: `swrouter check`, errors, help.
#![allow(clippy::unwrap_used, missing_docs)]

use integration::{binary, workspace_root};
use std::process::Command;

#[test]
fn check_prints_the_effective_config_of_every_example() {
    let dir = workspace_root().join("conf/examples");
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        // cache*.conf are swcache's files, not router.conf.
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
