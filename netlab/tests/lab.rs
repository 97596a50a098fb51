//! Integration tests for netlab. They need root (CAP_NET_ADMIN) and iproute2
//! and `ping` (iputils-ping); without them they fail loudly rather than skip.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns; a failed unwrap is a test failure

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use netlab::{sweep_stale, Lab, LabError, Ns};

fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("Uid: line in /proc/self/status");
    assert_eq!(
        euid, "0",
        "netlab tests need root (CAP_NET_ADMIN) to create network namespaces; run them as root"
    );
}

fn require_ping() {
    let ok = Command::new("ping")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "these tests need `ping` (Debian: apt-get install -y iputils-ping)"
    );
}

/// Names from a raw `ip netns list`, independent of netlab's own parser.
fn netns_list() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn exists(name: &str) -> bool {
    netns_list().iter().any(|n| n == name)
}

fn ping(from: &Ns, to: &str) -> bool {
    from.run("ping", &["-c1", "-W1", to])
        .unwrap()
        .status
        .success()
}

/// Two namespaces joined by one veth, 10.231.<net>.1/24 ↔ .2/24.
fn pair(lab: &mut Lab, net: u8) -> (Ns, Ns) {
    let a = lab.add_ns("a").unwrap();
    let b = lab.add_ns("b").unwrap();
    lab.link(&a, "veth-a", &b, "veth-b").unwrap();
    a.add_addr("veth-a", &format!("10.231.{net}.1/24")).unwrap();
    b.add_addr("veth-b", &format!("10.231.{net}.2/24")).unwrap();
    (a, b)
}

/// Gone, or at worst a zombie waiting for an init that does not reap.
fn gone_or_zombie(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string();
            state == "Z" || state == "X"
        }
    }
}

#[test]
fn ping_across_veth_and_cleanup_on_drop() {
    require_root();
    require_ping();
    let mut lab = Lab::new("ping").unwrap();
    assert!(lab.prefix().starts_with("swping-"), "{}", lab.prefix());
    let (a, b) = pair(&mut lab, 1);
    assert_eq!(a.name, format!("{}-a", lab.prefix()));
    assert!(a.name.len() < 32);
    assert!(exists(&a.name) && exists(&b.name));
    assert!(lab.dir().is_dir());

    assert!(ping(&a, "10.231.1.2"), "a cannot ping b");
    assert!(ping(&b, "10.231.1.1"), "b cannot ping a");

    // Both ends are up, lo is up, and the MACs look like MACs.
    let mac = a.mac("veth-a").unwrap();
    assert_eq!(mac.len(), 17, "{mac}");
    assert_eq!(mac.matches(':').count(), 5, "{mac}");
    assert_ne!(mac, b.mac("veth-b").unwrap());
    assert!(a.ip(&["link", "show", "lo"]).unwrap().contains("UP"));
    assert!(ping(&a, "127.0.0.1"));

    // No interface leaked into the root namespace.
    let root_links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let root_links = String::from_utf8(root_links.stdout).unwrap();
    assert!(!root_links.contains("veth-a") && !root_links.contains("veth-b"));

    let dir = lab.dir().to_path_buf();
    let names = [a.name.clone(), b.name.clone()];
    drop(lab);
    for n in &names {
        assert!(!exists(n), "{n} still exists after drop");
    }
    if std::env::var("NETLAB_KEEP").as_deref() != Ok("1") {
        assert!(!dir.exists(), "{} still exists after drop", dir.display());
    }
}

#[test]
fn panic_in_closure_still_tears_down() {
    require_root();
    let names = std::sync::Mutex::new(Vec::new());
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut lab = Lab::new("panic").unwrap();
        let a = lab.add_ns("a").unwrap();
        let b = lab.add_ns("b").unwrap();
        lab.link(&a, "p0", &b, "p1").unwrap();
        let h = lab.spawn(&a, "sleep", &["1000"]).unwrap();
        names
            .lock()
            .unwrap()
            .extend([a.name.clone(), b.name.clone()]);
        names.lock().unwrap().push(h.pid.to_string());
        assert!(exists(&a.name));
        panic!("deliberate panic inside the lab closure");
    }));
    assert!(r.is_err(), "the closure should have panicked");
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 3);
    assert!(!exists(&names[0]), "{} survived the panic", names[0]);
    assert!(!exists(&names[1]), "{} survived the panic", names[1]);
    assert!(!Path::new(&format!("/proc/{}", names[2])).exists());
}

#[test]
fn two_labs_with_the_same_tag_coexist() {
    require_root();
    require_ping();
    let mut one = Lab::new("dup").unwrap();
    let mut two = Lab::new("dup").unwrap();
    assert_ne!(one.prefix(), two.prefix());
    // Same short names, same interface names, same addresses: all isolated.
    let (a1, _b1) = pair(&mut one, 2);
    let (a2, _b2) = pair(&mut two, 2);
    assert_ne!(a1.name, a2.name);
    assert!(exists(&a1.name) && exists(&a2.name));
    assert!(ping(&a1, "10.231.2.2"));
    assert!(ping(&a2, "10.231.2.2"));
    drop(one);
    assert!(!exists(&a1.name));
    assert!(
        exists(&a2.name),
        "dropping one lab must not touch the other"
    );
    assert!(ping(&a2, "10.231.2.2"));
}

#[test]
fn spawned_processes_are_killed_on_drop() {
    require_root();
    let mut lab = Lab::new("kill").unwrap();
    let ns = lab.add_ns("x").unwrap();
    let h = lab.spawn(&ns, "sleep", &["1000"]).unwrap();
    // A grandchild in the same process group must die too.
    let sh = lab
        .spawn(&ns, "sh", &["-c", "sleep 1000 & echo $!; wait"])
        .unwrap();
    let proc_dir = format!("/proc/{}", h.pid);
    assert!(Path::new(&proc_dir).exists());
    assert!(lab.try_wait(&h).unwrap().is_none(), "sleep exited early");
    // The process really runs inside the namespace (once `ip netns exec` has exec'd it).
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{}/comm", h.pid)).unwrap() != "sleep\n" {
        assert!(Instant::now() < deadline, "sleep was never exec'd");
        std::thread::sleep(Duration::from_millis(10));
    }
    let netns_of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let ns_ino = std::fs::metadata(format!("/run/netns/{}", ns.name))
        .unwrap()
        .ino();
    assert_eq!(netns_of(h.pid).to_string_lossy(), format!("net:[{ns_ino}]"));
    assert_ne!(netns_of(h.pid), netns_of(std::process::id()));

    assert!(lab.wait_for_log(&sh, "\n", Duration::from_secs(5)));
    let grandchild: u32 = lab.logs(&sh).trim().parse().unwrap();
    assert!(Path::new(&format!("/proc/{grandchild}")).exists());

    let t0 = Instant::now();
    drop(lab);
    // sleep dies on SIGTERM: no need to wait for the 2 s SIGKILL escalation.
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(
        !Path::new(&proc_dir).exists(),
        "sleep (pid {}) survived",
        h.pid
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    while !gone_or_zombie(grandchild) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        gone_or_zombie(grandchild),
        "grandchild {grandchild} survived"
    );
}

#[test]
fn stop_escalates_to_sigkill() {
    require_root();
    let mut lab = Lab::new("stop").unwrap();
    let ns = lab.add_ns("x").unwrap();
    let polite = lab.spawn(&ns, "sleep", &["1000"]).unwrap();
    let status = lab.stop(&polite, Duration::from_secs(5)).unwrap();
    assert_eq!(status.signal(), Some(SIGTERM));
    // Stopping again returns the stored status.
    assert_eq!(
        lab.stop(&polite, Duration::ZERO).unwrap().signal(),
        Some(SIGTERM)
    );

    // SIG_IGN is inherited across exec, so the whole group ignores SIGTERM.
    let stubborn = lab
        .spawn(&ns, "sh", &["-c", "trap '' TERM; echo ready; sleep 1000"])
        .unwrap();
    assert!(lab.wait_for_log(&stubborn, "ready", Duration::from_secs(5)));
    let t0 = Instant::now();
    let status = lab.stop(&stubborn, Duration::from_millis(300)).unwrap();
    assert_eq!(status.signal(), Some(9));
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert!(t0.elapsed() < Duration::from_secs(3));
}

const SIGTERM: i32 = 15;

#[test]
fn logs_capture_stdout_and_stderr() {
    require_root();
    let mut lab = Lab::new("logs").unwrap();
    let ns = lab.add_ns("x").unwrap();
    let h = lab.spawn(&ns, "echo", &["hello from netlab"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = lab.try_wait(&h).unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "echo did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success());
    assert_eq!(lab.logs(&h), "hello from netlab\n");
    let path = lab.log_path(&h).unwrap();
    assert!(path.starts_with(lab.dir()));

    let both = lab
        .spawn(&ns, "sh", &["-c", "echo to-stdout; echo to-stderr >&2"])
        .unwrap();
    assert!(lab.wait_for_log(&both, "to-stderr", Duration::from_secs(5)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.try_wait(&both).unwrap().is_none() {
        assert!(Instant::now() < deadline, "sh did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(lab.stop(&both, Duration::ZERO).unwrap().success());
    let logs = lab.logs(&both);
    assert!(
        logs.contains("to-stdout") && logs.contains("to-stderr"),
        "{logs}"
    );

    // A handle from another lab is refused.
    let mut other = Lab::new("logs").unwrap();
    let ons = other.add_ns("y").unwrap();
    let oh = other.spawn(&ons, "true", &[]).unwrap();
    assert!(matches!(
        lab.stop(&oh, Duration::ZERO),
        Err(LabError::UnknownProcess { .. })
    ));
    assert_eq!(lab.logs(&oh), "");
}

#[test]
fn ns_helpers_route_and_sysctl() {
    require_root();
    require_ping();
    // a —— r —— b with r forwarding.
    let mut lab = Lab::new("route").unwrap();
    let a = lab.add_ns("a").unwrap();
    let r = lab.add_ns("r").unwrap();
    let b = lab.add_ns("b").unwrap();
    lab.link(&a, "eth0", &r, "ra").unwrap();
    lab.link(&r, "rb", &b, "eth0").unwrap();
    a.add_addr("eth0", "10.231.10.2/24").unwrap();
    r.add_addr("ra", "10.231.10.1/24").unwrap();
    r.add_addr("rb", "10.231.11.1/24").unwrap();
    b.add_addr("eth0", "10.231.11.2/24").unwrap();
    a.add_route("default", "10.231.10.1").unwrap();
    b.add_route("10.231.10.0/24", "10.231.11.1").unwrap();

    r.sysctl("net.ipv4.ip_forward", "0").unwrap();
    assert!(!ping(&a, "10.231.11.2"), "forwarding off, ping must fail");
    r.sysctl("net.ipv4.ip_forward", "1").unwrap();
    assert_eq!(
        r.run_ok("cat", &["/proc/sys/net/ipv4/ip_forward"]).unwrap(),
        "1\n"
    );
    // The sysctl is per namespace.
    assert_eq!(
        a.run_ok("cat", &["/proc/sys/net/ipv4/ip_forward"]).unwrap(),
        "0\n"
    );
    assert!(ping(&a, "10.231.11.2"), "a cannot reach b through r");
    r.sysctl("net/ipv4/conf/ra/rp_filter", "0").unwrap();

    // Errors carry the command line and stderr.
    let err = a
        .run_ok("sh", &["-c", "echo boom >&2; exit 3"])
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("sh -c") && msg.contains("boom"), "{msg}");
    let err = a.add_route("10.99.0.0/16", "192.0.2.1").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("route add 10.99.0.0/16"), "{msg}");
    assert!(a.sysctl("net..bad", "1").is_err());
}

#[test]
fn names_are_validated() {
    require_root();
    let mut lab = Lab::new("names").unwrap();
    assert!(matches!(
        lab.add_ns("this-is-far-too-long-for-a-netns"),
        Err(LabError::InvalidName { .. })
    ));
    assert!(lab.add_ns("a/b").is_err());
    let a = lab.add_ns("a").unwrap();
    let b = lab.add_ns("b").unwrap();
    assert!(matches!(
        lab.link(&a, "sixteen-chars-xx", &b, "ok"),
        Err(LabError::InvalidName { .. })
    ));
    // Same short name twice in one lab: `ip` refuses, with its stderr.
    let err = lab.add_ns("a").unwrap_err().to_string();
    assert!(err.contains("ip netns add"), "{err}");
    assert_eq!(lab.namespaces().len(), 2);
}

#[test]
fn teardown_is_idempotent() {
    require_root();
    let mut lab = Lab::new("idem").unwrap();
    let a = lab.add_ns("a").unwrap();
    let h = lab.spawn(&a, "sleep", &["1000"]).unwrap();
    lab.teardown();
    assert!(!exists(&a.name));
    assert!(!Path::new(&format!("/proc/{}", h.pid)).exists());
    lab.teardown();
    assert!(lab.namespaces().is_empty());
    drop(lab);
}

#[test]
fn sweep_stale_removes_only_dead_creators() {
    require_root();
    // A pid that surely is dead: a child we ran and reaped.
    let mut child = Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    let dead = child.id();
    let stale = format!("swsweep-{dead}-0-x");
    let out = Command::new("ip")
        .args(["netns", "add", &stale])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let mut live = Lab::new("sweep").unwrap();
    let kept = live.add_ns("y").unwrap();

    assert_eq!(sweep_stale("swsweep-*"), 1);
    assert!(!exists(&stale), "stale namespace survived the sweep");
    assert!(exists(&kept.name), "a live lab's namespace was swept");
    assert_eq!(sweep_stale(live.prefix()), 0);
}

#[test]
fn not_root_message_is_clear() {
    let msg = LabError::NotRoot { euid: 1000 }.to_string();
    assert!(msg.starts_with(
        "netlab needs root (CAP_NET_ADMIN) to create network namespaces; run as root"
    ));
}
