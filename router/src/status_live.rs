//! The live view of `swrouter status --watch`: two status snapshots taken `secs` apart turned
//! into rates (packets/s and bits/s per interface, per WCCP service and cache, per steering
//! service and device), drawn in at most 80 columns. Pure: the command line fetches the
//! snapshots and clears the screen.

use crate::status::{Status, TrafficCount};
use std::fmt::Write as _;

/// Widest line the view draws.
pub const WIDTH: usize = 80;

/// Rate of a counter that went from `before` to `now` over `secs` (0 when it went back: the
/// router restarted).
fn rate(before: u64, now: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    now.saturating_sub(before) as f64 / secs
}

/// A rate with a metric prefix, at most 6 characters ("999.9k", "12.3M").
fn si(v: f64) -> String {
    let (v, unit) = match v {
        v if v >= 1e9 => (v / 1e9, "G"),
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    if unit.is_empty() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}{unit}")
    }
}

/// "packets/s bits/s" of a traffic counter.
fn traffic(before: Option<&TrafficCount>, now: &TrafficCount, secs: f64) -> (String, String) {
    let zero = TrafficCount::default();
    let b = before.unwrap_or(&zero);
    (
        si(rate(b.packets, now.packets, secs)),
        si(rate(b.bytes, now.bytes, secs) * 8.0),
    )
}

/// Cuts `line` to [`WIDTH`] characters.
fn fit(mut line: String) -> String {
    if line.chars().count() > WIDTH {
        line = line.chars().take(WIDTH - 1).collect::<String>() + "~";
    }
    line
}

/// The live view of `now` against `before` (taken `secs` earlier); without `before` (the first
/// frame) every rate is 0.
pub fn render(before: Option<&Status>, now: &Status, secs: f64) -> String {
    let secs = if before.is_some() { secs } else { 0.0 };
    let mut lines = Vec::new();
    let r = &now.router;
    lines.push(format!(
        "swrouter {}  pid {}  up {}s  workers {}  {}  reloads {}",
        r.id, r.pid, r.uptime_secs, r.workers, r.backend, r.reloads
    ));
    lines.push(String::new());
    lines.push(format!(
        "{:<12} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6}",
        "INTERFACE", "RX pps", "RX bps", "TX pps", "TX bps", "ERR/s", "FULL/s", "IO"
    ));
    for i in &now.interfaces {
        let b = before.and_then(|b| b.interfaces.iter().find(|x| x.name == i.name));
        let g = |f: fn(&crate::status::InterfaceStatus) -> u64| rate(b.map_or(0, f), f(i), secs);
        lines.push(format!(
            "{:<12} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>6}",
            i.name,
            si(g(|x| x.rx_packets)),
            si(g(|x| x.rx_bytes) * 8.0),
            si(g(|x| x.tx_packets)),
            si(g(|x| x.tx_bytes) * 8.0),
            si(g(|x| x.rx_errors + x.tx_errors)),
            si(g(|x| x.rx_ring_full)),
            i.backend
        ));
    }
    let drops = |s: &Status| -> u64 { s.pipeline.iter().flat_map(|p| p.drops.values()).sum() };
    lines.push(format!(
        "pipeline drops/s {}",
        si(rate(before.map_or(0, drops), drops(now), secs))
    ));
    if let Some(w) = &now.wccp {
        let bw = before.and_then(|b| b.wccp.as_ref());
        lines.push(String::new());
        lines.push(format!(
            "{:<22} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}",
            "WCCP SERVICE / CACHE", "RED pps", "RED bps", "RET pps", "BYP pps", "bkts", "probe"
        ));
        for s in &w.services {
            let bs = bw.and_then(|b| b.services.iter().find(|x| x.id == s.id));
            let (rp, rb) = traffic(
                bs.map(|b| &b.traffic.redirected),
                &s.traffic.redirected,
                secs,
            );
            let (tp, _) = traffic(bs.map(|b| &b.traffic.returned), &s.traffic.returned, secs);
            let (bp, _) = traffic(bs.map(|b| &b.traffic.bypassed), &s.traffic.bypassed, secs);
            lines.push(format!(
                "{:<22} {rp:>7} {rb:>7} {tp:>7} {bp:>7} {:>7} {:>7}",
                format!("service {} ({})", s.id, s.kind),
                s.caches.iter().map(|c| c.buckets).sum::<usize>(),
                ""
            ));
            for c in &s.caches {
                let bc = bs.and_then(|b| b.caches.iter().find(|x| x.address == c.address));
                let (rp, rb) = traffic(bc.map(|b| &b.redirected), &c.redirected, secs);
                let (tp, _) = traffic(bc.map(|b| &b.returned), &c.returned, secs);
                let (bp, _) = traffic(bc.map(|b| &b.bypassed), &c.bypassed, secs);
                let phase = if c.usable { "" } else { " (joining)" };
                lines.push(format!(
                    "{:<22} {rp:>7} {rb:>7} {tp:>7} {bp:>7} {:>7} {:>7}",
                    format!("  {}{phase}", c.address),
                    c.buckets,
                    c.probe
                ));
            }
        }
    }
    if let Some(st) = &now.steering {
        let bst = before.and_then(|b| b.steering.as_ref());
        lines.push(String::new());
        lines.push(format!(
            "{:<22} {:>7} {:>7} {:>7} {:>7} {:>9}",
            "STEERING", "FWD pps", "FWD bps", "REV pps", "REV bps", "health"
        ));
        for s in &st.services {
            let b = bst.and_then(|b| b.services.iter().find(|x| x.name == s.name));
            let g = |p: fn(&crate::steering_status::SteeringServiceStatus) -> u64| {
                rate(b.map_or(0, p), p(s), secs)
            };
            lines.push(format!(
                "{:<22} {:>7} {:>7} {:>7} {:>7} {:>9}",
                format!("service {}", s.name),
                si(g(|x| x.forward_packets)),
                si(g(|x| x.forward_bytes) * 8.0),
                si(g(|x| x.reverse_packets)),
                si(g(|x| x.reverse_bytes) * 8.0),
                ""
            ));
        }
        for d in &st.devices {
            let b = bst.and_then(|b| b.devices.iter().find(|x| x.name == d.name));
            lines.push(format!(
                "{:<22} {:>7} {:>7} {:>7} {:>7} {:>9}",
                format!("  {}", d.name),
                si(rate(b.map_or(0, |x| x.packets), d.packets, secs)),
                si(rate(b.map_or(0, |x| x.bytes), d.bytes, secs) * 8.0),
                "",
                "",
                d.health
            ));
        }
    }
    let mut out = String::new();
    for l in lines {
        let _ = writeln!(out, "{}", fit(l));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn status(rx: u64, bytes: u64) -> Status {
        let mut s: Status = serde_json::from_value(serde_json::json!({
            "router": {"id": "10.0.2.1", "pid": 7, "uptime_secs": 3, "workers": 2,
                       "config": "/etc/swrouter/router.conf", "reloads": 0, "backend": "mmap"},
            "interfaces": [], "routes": [], "arp": [], "pipeline": [], "workers": [],
            "neighbour_stats": {"learned": 0, "changed": 0, "expired": 0, "table_full": 0}
        }))
        .unwrap();
        s.interfaces.push(
            serde_json::from_value(serde_json::json!({
                "name": "a-very-long-interface-name-indeed", "address": "10.0.1.1/24",
                "mac": "02:00:00:00:01:01", "mtu": 1500, "ifindex": 2,
                "rx_packets": rx, "rx_bytes": bytes, "rx_errors": 0, "rx_ring_full": 0,
                "backend": "mmap", "tx_packets": 0, "tx_bytes": 0, "tx_errors": 0
            }))
            .unwrap(),
        );
        s
    }

    #[test]
    fn rates_are_deltas_over_the_interval_and_lines_fit_80_columns() {
        let a = status(1_000, 1_000_000);
        let b = status(3_000, 3_500_000);
        let view = render(Some(&a), &b, 2.0);
        // 2000 packets and 2.5 MB in 2 s: 1000 pps, 10 Mbit/s.
        let line = view.lines().find(|l| l.starts_with("a-very")).unwrap();
        assert!(line.contains("1.0k") && line.contains("10.0M"), "{line}");
        assert!(view.lines().all(|l| l.chars().count() <= WIDTH), "{view}");
        // The first frame has no rates; a counter that went back (a restart) reads 0, never a
        // negative or wrapped rate.
        let rx_pps = |view: &str| -> String {
            let line = view.lines().find(|l| l.starts_with("a-very")).unwrap();
            line.split_whitespace().nth(1).unwrap().to_string()
        };
        assert_eq!(rx_pps(&view), "1.0k");
        assert_eq!(rx_pps(&render(None, &b, 1.0)), "0");
        assert_eq!(rx_pps(&render(Some(&b), &a, 1.0)), "0");
    }

    #[test]
    fn metric_prefixes() {
        assert_eq!(si(0.0), "0");
        assert_eq!(si(999.0), "999");
        assert_eq!(si(1_500.0), "1.5k");
        assert_eq!(si(2_000_000.0), "2.0M");
        assert_eq!(si(3.2e9), "3.2G");
    }
}
