//! systemd's readiness protocol end to end: swrouter started with `NOTIFY_SOCKET` (as the
//! packaged `Type=notify` unit starts it) says READY=1 only once its interfaces are up and it
//! answers, RELOADING=1 then READY=1 around a SIGHUP reload, and STOPPING=1 on SIGTERM.
//!
//! ```text
//! cli 10.0.1.2 ── eth0 swrouter eth1 ── srv 10.0.2.2      NOTIFY_SOCKET = lab dir/notify.sock
//! ```
#![allow(clippy::unwrap_used, missing_docs)]

use integration::{binary, RouterLab};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The next notification, or a panic naming what was awaited.
fn next(sock: &UnixDatagram, awaiting: &str, lab: &RouterLab) -> String {
    let mut buf = [0u8; 1024];
    match sock.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!(
            "no {awaiting} from swrouter ({e}); log:\n{}",
            lab.router_log()
        ),
    }
}

#[test]
fn ready_after_the_interfaces_reloading_around_sighup_stopping_on_sigterm() {
    let mut lab = RouterLab::new("sdn", "", "").unwrap();
    let path = lab.lab.dir().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let exe = binary("swrouter");
    let h = lab
        .lab
        .spawn(
            &lab.rtr,
            "env",
            &[
                &format!("NOTIFY_SOCKET={}", path.display()),
                &exe.to_string_lossy(),
                "-c",
                &lab.conf_path.to_string_lossy(),
            ],
        )
        .unwrap();
    let pid = h.pid.to_string();
    lab.router = Some(h);

    let ready = next(&sock, "READY=1", &lab);
    assert_eq!(
        ready, "READY=1\nSTATUS=routing on 2 interfaces with 1 workers",
        "first notification"
    );
    // Ready means ready: the management socket answers and the router answers ping at once.
    let status = lab.status().unwrap();
    assert_eq!(status["interfaces"].as_array().map(Vec::len), Some(2));
    let (replies, out) = RouterLab::ping(&lab.cli, "10.0.1.1", 1, &[]).unwrap();
    assert_eq!(replies, 1, "{out}");

    // SIGHUP, as the unit's ExecReload sends it: RELOADING=1, then READY=1 with the outcome.
    lab.rtr.run_ok("kill", &["-HUP", &pid]).unwrap();
    assert_eq!(next(&sock, "RELOADING=1", &lab), "RELOADING=1");
    let again = next(&sock, "READY=1 after the reload", &lab);
    assert!(
        again.starts_with("READY=1\nSTATUS=reloaded: 0 static routes"),
        "{again}"
    );

    // A rejected file still ends the reload with READY=1 (the old configuration runs on).
    std::fs::write(&lab.conf_path, "[router]\nworkers = 0\n").unwrap();
    lab.rtr.run_ok("kill", &["-HUP", &pid]).unwrap();
    assert_eq!(next(&sock, "RELOADING=1", &lab), "RELOADING=1");
    let kept = next(&sock, "READY=1 after the rejected reload", &lab);
    assert!(
        kept.starts_with("READY=1\nSTATUS=rejected, running config kept:"),
        "{kept}"
    );

    let h = lab.router.take().unwrap();
    lab.lab.stop(&h, Duration::from_secs(10)).unwrap();
    assert_eq!(next(&sock, "STOPPING=1", &lab), "STOPPING=1");
}
