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

/// Runs `bin args…`; returns (exit code, stdout, stderr).
fn run(bin: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(binary(bin)).args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_help_names_its_binary_and_what_it_does() {
    for (bin, what) in [
        ("swrouter", "a userspace IPv4 router with WCCPv2"),
        ("swcache", "a WCCPv2 cache agent"),
    ] {
        for flag in ["--help", "-h"] {
            let (code, out, _) = run(bin, &[flag]);
            assert_eq!(code, Some(0));
            assert!(
                out.starts_with(&format!("{bin}: {what}")),
                "{bin} {flag}:\n{out}"
            );
            assert!(out.contains(&format!("Usage: {bin} ")), "{out}");
        }
    }
    let (_, out, _) = run("swcache", &["--help"]);
    assert!(!out.contains("swrouter:"), "{out}");
    // Each subcommand says what it does and how it is called.
    for sub in ["check", "status", "reload", "steering", "demo"] {
        let (code, out, _) = run("swrouter", &[sub, "--help"]);
        assert_eq!(code, Some(0));
        assert!(out.contains(&format!("Usage: swrouter {sub}")), "{out}");
        assert!(
            !out.starts_with("Usage"),
            "{sub} --help says nothing first:\n{out}"
        );
    }
}

#[test]
fn errors_name_the_file_or_flag_and_what_to_do() {
    let dir = std::env::temp_dir().join(format!("swrouter-cli-err-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.conf");
    let missing_s = missing.to_string_lossy().into_owned();
    let dir_s = dir.to_string_lossy().into_owned();

    // A config file that is not there: the file, no `:0:0`, and what to do.
    for (bin, args) in [
        ("swrouter", vec!["-c", missing_s.as_str()]),
        ("swrouter", vec!["check", "-c", missing_s.as_str()]),
        ("swcache", vec!["-c", missing_s.as_str()]),
    ] {
        let (code, _, err) = run(bin, &args);
        assert_eq!(code, Some(1), "{bin} {args:?}: {err}");
        assert_eq!(
            err.trim(),
            format!(
                "{bin}: {missing_s}: cannot read: No such file or directory (os error 2); check the path (commented examples are in conf/examples/, installed in /usr/share/doc/swrouter/examples/)"
            )
        );
    }
    // A directory given as the file.
    let (_, _, err) = run("swcache", &["-c", &dir_s, "--check"]);
    assert!(
        err.trim()
            .ends_with("; give the config file, not its directory"),
        "{err}"
    );
    // No router on the socket: which socket, is it running, how to name another.
    let sock = dir.join("none.sock");
    let (code, _, err) = run("swrouter", &["reload", "-s", &sock.to_string_lossy()]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("connecting to {}", sock.display())),
        "{err}"
    );
    assert!(err.contains("is swrouter running?"), "{err}");
    assert!(err.contains("-s PATH or -c FILE"), "{err}");
    // A bad config named for its socket: where, what is wrong, the way around it.
    let bad = dir.join("bad.conf");
    std::fs::write(&bad, "[router]\nworkers = \"two\"\n").unwrap();
    let (_, _, err) = run("swrouter", &["status", "-c", &bad.to_string_lossy()]);
    assert!(
        err.starts_with(&format!(
            "swrouter: reading the management-socket from {} (or name the socket with -s PATH): {}:2:",
            bad.display(),
            bad.display()
        )),
        "{err}"
    );
    // Bad flag values name the flag and the allowed values.
    let (code, _, err) = run("swcache", &["--gre-only", "--weight", "70000"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("'--weight <WEIGHT>'") && err.contains("0..=65535"),
        "{err}"
    );
    let (_, _, err) = run("swcache", &["--gre-only", "--bypass", "10.0.2/8"]);
    assert!(
        err.contains("'--bypass <PREFIX>'") && err.contains("bad IPv4 address"),
        "{err}"
    );
    let (_, _, err) = run("swrouter", &["status", "--watch", "--interval-ms", "5"]);
    assert!(
        err.contains("'--interval-ms <INTERVAL_MS>'") && err.contains("100..=60000"),
        "{err}"
    );
    // A TUN name the kernel cannot take: the flag, the key, and the fix.
    let (code, _, err) = run(
        "swcache",
        &["--gre-only", "--tun", "a-name-far-too-long-for-linux"],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("(--tun, tun in cache.conf)") && err.contains("choose another name"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
