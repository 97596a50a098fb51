//! The management socket end to end: idle clients do not hold up WCCP or other clients, the
//! socket file is private (or the management group's), and the router checks who connects.
//!
//! ```text
//! swrouter eth0 10.0.3.1 [[wccp.service]] id = 0 ── cache 10.0.3.2 (swcache; tcpdump on udp/2048)
//!    └── management socket: 4 idle clients held open all the time, `swrouter status` each second
//! ```
#![allow(clippy::unwrap_used, missing_docs)]

use integration::wccplab::{cache, router_status, wait_for};
use integration::{binary, io_backend, require_root, RouterLab};
use netlab::Lab;
use std::io::BufRead;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Idle clients kept connected during the window.
const IDLE_CLIENTS: usize = 4;
/// The window watched: longer than swcache's 10 s HERE_I_AM interval, so it holds at least one.
const WINDOW: Duration = Duration::from_secs(12);
/// The latest an I_SEE_YOU may follow its HERE_I_AM.
const ANSWER_WITHIN: f64 = 1.0;

/// Seconds since the epoch, as tshark's `frame.time_epoch` counts them.
fn epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Connects, sends nothing, and reads what the router says when it gives up on us; repeats until
/// `until`, so one idle client is connected all the time. Returns (time held, reply) per round.
fn idle_client(socket: PathBuf, until: Instant) -> Vec<(Duration, String)> {
    let mut rounds = Vec::new();
    while Instant::now() < until {
        let t = Instant::now();
        let s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut line = String::new();
        let _ = std::io::BufReader::new(s).read_line(&mut line);
        rounds.push((t.elapsed(), line));
    }
    rounds
}

/// `swrouter status --json`, timed.
fn timed_status(socket: &Path) -> (Duration, Option<serde_json::Value>) {
    let t = Instant::now();
    let s = router_status(socket);
    (t.elapsed(), s)
}

#[test]
fn idle_management_clients_do_not_delay_i_see_you() {
    require_root();
    let mut lab = Lab::new("mgi").unwrap();
    let rtr = lab.add_ns("rtr").unwrap();
    let cns = lab.add_ns("cache").unwrap();
    lab.link(&rtr, "eth0", &cns, "eth0").unwrap();
    cns.add_addr("eth0", "10.0.3.2/24").unwrap();
    let dir = lab.dir().to_path_buf();
    let socket = dir.join("swrouter.sock");
    let conf = dir.join("router.conf");
    std::fs::write(
        &conf,
        format!(
            "[router]\nmanagement-socket = \"{}\"\nlog-level = \"debug\"\nio-backend = \"{}\"\n\n\
             [[interface]]\nname = \"eth0\"\naddress = \"10.0.3.1/24\"\n\n\
             [[wccp.service]]\nid = 0\n",
            socket.display(),
            io_backend()
        ),
    )
    .unwrap();

    // Every WCCP message on the cache link, timestamped by the kernel.
    let pcap = dir.join("wccp.pcap");
    let dump = lab
        .spawn(
            &cns,
            "tcpdump",
            &[
                "-i",
                "eth0",
                "-n",
                "-U",
                "-w",
                &pcap.to_string_lossy(),
                "udp port 2048",
            ],
        )
        .unwrap();
    assert!(
        lab.wait_for_log(&dump, "listening on", Duration::from_secs(10)),
        "tcpdump did not start: {}",
        lab.logs(&dump)
    );
    let router = lab
        .spawn(
            &rtr,
            &binary("swrouter").to_string_lossy(),
            &["-c", &conf.to_string_lossy()],
        )
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(15), Duration::from_millis(100), || {
            router_status(&socket)
        })
        .is_some(),
        "swrouter did not come up: {}",
        lab.logs(&router)
    );
    let cache_sock = dir.join("swcache.sock");
    let swcache = lab
        .spawn(
            &cns,
            &binary("swcache").to_string_lossy(),
            &[
                "--address",
                "10.0.3.2",
                "--router",
                "10.0.3.1",
                "--service",
                "0",
                "--tun",
                "wccp0",
                "--socket",
                &cache_sock.to_string_lossy(),
                "--log-level",
                "debug",
            ],
        )
        .unwrap();
    let logs = |lab: &Lab| {
        format!(
            "\n===== swrouter =====\n{}\n===== swcache =====\n{}",
            lab.logs(&router),
            lab.logs(&swcache)
        )
    };
    // The cache has joined: the router knows it and has answered it.
    let before = wait_for(Duration::from_secs(20), Duration::from_millis(200), || {
        let s = router_status(&socket)?;
        cache(&s, 0, "10.0.3.2")?;
        (s["wccp"]["sent"]["i-see-you"].as_u64()? >= 1).then_some(s)
    })
    .unwrap_or_else(|| panic!("swcache did not join within 20 s{}", logs(&lab)));

    // The window: IDLE_CLIENTS connections that never send a request are open all the time
    // (each is closed by the router after its 5 s read timeout and reopened at once), while
    // `swrouter status` is asked once a second.
    let window_start = SystemTime::now();
    let until = Instant::now() + WINDOW;
    let idlers: Vec<_> = (0..IDLE_CLIENTS)
        .map(|_| {
            let socket = socket.clone();
            std::thread::spawn(move || idle_client(socket, until))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut answers = Vec::new();
    while Instant::now() < until {
        answers.push(timed_status(&socket));
        std::thread::sleep(Duration::from_secs(1));
    }
    let rounds: Vec<(Duration, String)> =
        idlers.into_iter().flat_map(|h| h.join().unwrap()).collect();
    let window_end = SystemTime::now();
    // Let an answer to a HERE_I_AM at the very end of the window reach the capture.
    std::thread::sleep(Duration::from_millis(1500));
    let after = router_status(&socket).unwrap();
    let _ = lab.stop(&dump, Duration::from_secs(5));

    // `swrouter status` answered at once every time, idle clients or not.
    assert!(answers.len() >= 10, "{} status answers", answers.len());
    for (took, s) in &answers {
        let s = s.as_ref().unwrap_or_else(|| {
            panic!(
                "status failed while idle clients were connected{}",
                logs(&lab)
            )
        });
        assert!(
            *took < Duration::from_secs(2),
            "status took {took:?} with idle clients connected"
        );
        assert!(
            s["management"]["clients"].as_u64().unwrap() >= 1,
            "{}",
            s["management"]
        );
    }
    // The idle clients were held about 5 s each, then told why they were closed.
    let full: Vec<_> = rounds
        .iter()
        .filter(|(held, _)| *held >= Duration::from_millis(4500))
        .collect();
    assert!(full.len() >= IDLE_CLIENTS, "rounds: {rounds:?}");
    for (held, line) in &full {
        assert!(*held < Duration::from_secs(7), "held {held:?}");
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("idle client's reply {line:?}: {e}"));
        assert_eq!(v["error"], "no request line within 5 s; closing", "{line}");
    }
    let m = &after["management"];
    assert!(m["timed_out"].as_u64().unwrap() >= full.len() as u64, "{m}");

    // On the wire: every HERE_I_AM of the window got its I_SEE_YOU within a second.
    let out = cns
        .run(
            "tshark",
            &[
                "-r",
                &pcap.to_string_lossy(),
                "-Y",
                "wccp",
                "-T",
                "fields",
                "-e",
                "frame.time_epoch",
                "-e",
                "ip.src",
                "-e",
                "wccp.message",
            ],
        )
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let msgs: Vec<(f64, String, u32)> = text
        .lines()
        .filter_map(|l| {
            let mut f = l.split('\t');
            Some((
                f.next()?.parse().ok()?,
                f.next()?.to_string(),
                f.next()?.trim().parse().ok()?,
            ))
        })
        .collect();
    let (from, to) = (epoch(window_start), epoch(window_end));
    let here_i_ams: Vec<f64> = msgs
        .iter()
        .filter(|(t, src, ty)| *ty == 10 && src == "10.0.3.2" && (from..=to).contains(t))
        .map(|(t, _, _)| *t)
        .collect();
    assert!(
        !here_i_ams.is_empty(),
        "no HERE_I_AM in the {WINDOW:?} window; capture:\n{text}{}",
        logs(&lab)
    );
    for hia in &here_i_ams {
        let answer = msgs
            .iter()
            .find(|(t, src, ty)| *ty == 11 && src == "10.0.3.1" && t >= hia)
            .map(|(t, _, _)| t - hia);
        match answer {
            Some(d) if d <= ANSWER_WITHIN => {}
            other => panic!(
                "HERE_I_AM at {hia:.3} answered after {other:?} s (want within {ANSWER_WITHIN} s) with {IDLE_CLIENTS} idle management clients; capture:\n{text}{}",
                logs(&lab)
            ),
        }
    }
    // And the router's own count agrees: one I_SEE_YOU per HERE_I_AM.
    let delta = |s: &serde_json::Value, dir: &str, ty: &str| s["wccp"][dir][ty].as_u64().unwrap();
    assert_eq!(
        delta(&after, "received", "here-i-am") - delta(&before, "received", "here-i-am"),
        delta(&after, "sent", "i-see-you") - delta(&before, "sent", "i-see-you"),
        "before: {}\nafter: {}",
        before["wccp"],
        after["wccp"]
    );
}

/// Runs `swrouter ARGS` as uid 65534 with `gid` and supplementary `groups` (none when empty).
fn as_nobody(gid: u32, groups: &[u32], args: &[&str]) -> std::process::Output {
    let regid = format!("--regid={gid}");
    let groups_arg = if groups.is_empty() {
        "--clear-groups".to_string()
    } else {
        format!(
            "--groups={}",
            groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        )
    };
    let exe = binary("swrouter");
    let mut argv = vec!["--reuid=65534", regid.as_str(), groups_arg.as_str(), "--"];
    let exe_s = exe.to_string_lossy().to_string();
    argv.push(&exe_s);
    argv.extend_from_slice(args);
    std::process::Command::new("setpriv")
        .args(&argv)
        .output()
        .unwrap()
}

/// stdout and stderr of a command, for messages.
fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `text` without terminal colour sequences (ESC [ … m), which the router's log carries.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The group with gid 65534 (`nogroup` on Debian, `nobody` elsewhere).
fn gid_65534_name() -> String {
    let out = std::process::Command::new("getent")
        .args(["group", "65534"])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let name = line.split(':').next().unwrap_or("").trim().to_string();
    assert!(!name.is_empty(), "no group 65534 on this host");
    name
}

#[test]
fn management_socket_is_private_and_refuses_other_users() {
    let mut l = RouterLab::new("mgp", "", "").unwrap();
    l.start().unwrap();
    let sock = l.socket.to_string_lossy().to_string();
    let meta = std::fs::metadata(&l.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "socket mode");
    assert_eq!(meta.uid(), 0);

    // The file mode keeps nobody out...
    let o = as_nobody(65534, &[], &["status", "--json", "-s", &sock]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Permission denied"), "{}", text(&o));

    // ...and so does the router itself when someone loosens the mode.
    std::fs::set_permissions(&l.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = as_nobody(65534, &[], &["status", "--json", "-s", &sock]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("swrouter refused the request: permission denied: uid 65534 may not use this management socket"),
        "{}",
        text(&o)
    );
    let log = strip_ansi(&l.router_log());
    assert!(
        log.contains("management client refused") && log.contains("uid=65534"),
        "{log}"
    );
    // Root still gets answers, and the refusal is counted.
    let s = l.status().unwrap();
    assert_eq!(s["management"]["refused_peer"], 1, "{}", s["management"]);
}

#[test]
fn management_group_members_may_use_the_socket() {
    let group = gid_65534_name();
    let mut l = RouterLab::new("mgg", &format!("management-group = \"{group}\""), "").unwrap();
    l.start().unwrap();
    let sock = l.socket.to_string_lossy().to_string();
    let meta = std::fs::metadata(&l.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "socket mode");
    assert_eq!(meta.gid(), 65534);
    let status = ["status", "--json", "-s", sock.as_str()];

    // A member by its primary group, and one by a supplementary group.
    for (gid, groups) in [(65534, vec![]), (1, vec![65534])] {
        let o = as_nobody(gid, &groups, &status);
        assert!(
            o.status.success(),
            "gid {gid} groups {groups:?}: {}",
            text(&o)
        );
        let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(s["router"]["pid"].as_u64().is_some());
    }
    // Not a member: the file mode refuses, and with a loosened mode the router does.
    let o = as_nobody(1, &[], &status);
    assert!(text(&o).contains("Permission denied"), "{}", text(&o));
    std::fs::set_permissions(&l.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = as_nobody(1, &[], &status);
    assert!(
        text(&o).contains("uid 65534 may not use this management socket"),
        "{}",
        text(&o)
    );
    let s = l.status().unwrap();
    assert_eq!(s["management"]["refused_peer"], 1, "{}", s["management"]);
}
