//! Overload: a flood far above what the router forwards is shed at the receive ring and counted
//! (`rx-ring-full`), the router keeps answering, and traffic recovers as soon as the flood stops.
#![allow(clippy::unwrap_used, missing_docs)]

use integration::{addr, RouterLab};
use std::time::{Duration, Instant};

#[test]
fn flood_is_dropped_at_the_ring_counted_and_recovery_is_immediate() {
    let mut l = RouterLab::new("ovl", "", "").unwrap();
    l.start().unwrap();
    let rtr_mac = l.rtr.mac("eth0").unwrap();
    let cli_mac = l.cli.mac("eth0").unwrap();
    let hex = |m: &str| {
        m.split(':')
            .map(|b| format!("0x{b}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let cfg = l.lab.dir().join("flood.cfg");
    std::fs::write(
        &cfg,
        format!(
            "{{ {}, {}, c16(0x0800), 0x45, 0x00, c16(46), drnd(2), c16(0), 64, 17, csumip(14, 33), 10, 0, 1, 2, 10, 0, 2, 2, drnd(2), c16(9), c16(26), c16(0), fill(0x5a, 18) }}\n",
            hex(&rtr_mac),
            hex(&cli_mac)
        ),
    )
    .unwrap();
    let (n, out) = RouterLab::ping(&l.cli, addr::SERVER, 1, &[]).unwrap();
    assert_eq!(n, 1, "{out}");
    let cfg_s = cfg.to_string_lossy().to_string();
    let cli = l.cli.clone();
    let flood = l
        .lab
        .spawn(
            &cli,
            "timeout",
            &[
                "--signal=INT",
                "4",
                "trafgen",
                "--dev",
                "eth0",
                "--conf",
                &cfg_s,
                "--cpus",
                "1",
                "--no-sock-mem",
                "--notouch-irq",
            ],
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // The router answers its management socket while it sheds load.
    let during = Instant::now();
    let s = l.status().unwrap();
    assert!(
        during.elapsed() < Duration::from_secs(2),
        "status took {:?} under load",
        during.elapsed()
    );
    let mut done = false;
    for _ in 0..80 {
        if l.lab.try_wait(&flood).unwrap().is_some() {
            done = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(done, "trafgen did not stop");
    let sent = l.lab.logs(&flood);
    // Drops are counted once a second by each worker; wait for the count to show.
    let mut ring_full = 0;
    for _ in 0..30 {
        let s = l.status().unwrap();
        ring_full = s["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["rx_ring_full"].as_u64().unwrap())
            .sum();
        if ring_full > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        ring_full > 0,
        "a flood this size must overflow the ring: {s}\ntrafgen: {sent}"
    );
    // Recovery: the first ping after the flood gets through.
    let start = Instant::now();
    let (n, out) = RouterLab::ping(&l.cli, addr::SERVER, 3, &[]).unwrap();
    assert_eq!(n, 3, "{out}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "recovery took {:?}",
        start.elapsed()
    );
    let eth0 = &l.status().unwrap()["interfaces"][0];
    assert!(
        eth0["rx_packets"].as_u64().unwrap() > 100_000,
        "the router did work through the flood: {eth0}"
    );
}
