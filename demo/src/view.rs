//! What the demo shows: the live view of the router's status (redrawn once a second, on a
//! cleared screen when stdout is a terminal) and the readings it takes from that status
//! (service 0, its caches, who holds each bucket).

use crate::{Demo, CLIENT};
use router::status::{Status, WccpCacheStatus, WccpServiceStatus};
use std::io::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

impl Demo {
    /// Re-reads the router's status once a second (or now, with `force`) and redraws.
    pub(crate) fn refresh(&mut self, force: bool) {
        if !force
            && self
                .last_view
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last_view = Some(Instant::now());
        let status = self.status();
        self.view = match &status {
            Some(s) => self.render(s),
            None => "  (router not answering)\n".into(),
        };
        if let Some(s) = &status {
            self.watch(s);
        }
        if self.tty {
            self.draw();
        } else {
            print!("{}{}", self.view, self.note_line());
            let _ = std::io::stdout().flush();
        }
    }

    /// On a terminal: the view, the countdown and the latest events on a cleared screen.
    pub(crate) fn draw(&self) {
        let mut out = format!("\x1b[2J\x1b[H{}{}\n", self.view, self.note_line());
        for e in &self.events[self.events.len().saturating_sub(18)..] {
            out.push_str(e);
            out.push('\n');
        }
        print!("{out}");
        let _ = std::io::stdout().flush();
    }

    fn note_line(&self) -> String {
        if self.note.is_empty() {
            String::new()
        } else {
            format!("  >> {}\n", self.note)
        }
    }

    fn render(&self, s: &Status) -> String {
        let mut out = format!(
            "---- swrouter demo: router up {}s ----\n",
            s.router.uptime_secs
        );
        for i in &s.interfaces {
            out.push_str(&format!(
                "  {:<5} {:<12} rx {:>7} pkts {:>10} B   tx {:>7} pkts {:>10} B\n",
                i.name, i.address, i.rx_packets, i.rx_bytes, i.tx_packets, i.tx_bytes
            ));
        }
        out.push_str("  pipeline:");
        for st in &s.pipeline {
            out.push_str(&format!(" {}={}", st.stage, st.packets_in));
        }
        let drops: Vec<String> = s
            .pipeline
            .iter()
            .flat_map(|st| {
                st.drops
                    .iter()
                    .map(move |(k, v)| format!("{}:{k}={v}", st.stage))
            })
            .collect();
        out.push_str(&format!(
            "\n  drops: {}\n",
            if drops.is_empty() {
                "none".into()
            } else {
                drops.join(" ")
            }
        ));
        if let Some(svc) = service(s) {
            let t = &svc.traffic;
            out.push_str(&format!(
                "  WCCP service 0: designated {}  redirected {} pkts  bypassed {}  unassigned {}\n",
                svc.designated_cache.as_deref().unwrap_or("-"),
                t.redirected.packets,
                t.bypassed.packets,
                t.unassigned.packets
            ));
            for c in &svc.caches {
                out.push_str(&format!(
                    "    {} {:<9} {:<8} probe {:<5} buckets {:>3} {:<9} redirected {:>5} pkts  returned {:>3}\n",
                    self.name_of(&c.address),
                    c.address,
                    if c.usable { "usable" } else { "unusable" },
                    c.probe,
                    c.buckets,
                    short_ranges(&c.bucket_ranges),
                    c.redirected.packets,
                    c.returned.packets
                ));
            }
        }
        if let Some(l) = self
            .lab
            .logs(&self.ping)
            .lines()
            .rev()
            .find(|l| l.contains("bytes from"))
        {
            out.push_str(&format!("  ping: {l}\n"));
        }
        out.push_str(&format!(
            "  fetches: {}, failed {}\n",
            ["cache-a", "cache-b", "direct"]
                .iter()
                .map(|k| format!("{k} {}", self.count(k)))
                .collect::<Vec<_>>()
                .join(", "),
            self.failed
        ));
        out
    }
}

/// Service 0 in a status.
pub(crate) fn service(s: &Status) -> Option<&WccpServiceStatus> {
    s.wccp.as_ref()?.services.iter().find(|v| v.id == 0)
}

/// Cache `addr` of service 0.
pub(crate) fn cache<'a>(s: &'a Status, addr: &str) -> Option<&'a WccpCacheStatus> {
    service(s)?.caches.iter().find(|c| c.address == addr)
}

/// The address holding each of the 256 buckets, from the caches' `bucket_ranges` ("0-127,200").
pub(crate) fn owners(s: &Status) -> Vec<Option<String>> {
    let mut owners = vec![None; 256];
    for c in service(s).map(|v| v.caches.as_slice()).unwrap_or_default() {
        for r in c.bucket_ranges.split(',').filter(|r| !r.is_empty()) {
            let (lo, hi) = r.split_once('-').unwrap_or((r, r));
            if let (Ok(lo), Ok(hi)) = (lo.trim().parse::<usize>(), hi.trim().parse::<usize>()) {
                for o in owners.iter_mut().take(hi.min(255) + 1).skip(lo) {
                    *o = Some(c.address.clone());
                }
            }
        }
    }
    owners
}

/// Bucket ranges cut to fit a line: the designated cache may interleave the buckets.
pub(crate) fn short_ranges(r: &str) -> String {
    let parts: Vec<&str> = r.split(',').filter(|p| !p.is_empty()).collect();
    if parts.len() <= 3 {
        return r.to_string();
    }
    format!(
        "{},{},{},.. ({} ranges)",
        parts[0],
        parts[1],
        parts[2],
        parts.len()
    )
}

/// The bucket of a client flow to `dst` under service 0 (hashes the destination address).
pub(crate) fn bucket(dst: Ipv4Addr) -> usize {
    let key = wccp::hash::FlowKey::new(CLIENT, dst, 0, 80);
    usize::from(wccp::hash::primary_bucket(
        wccp::wire::ServiceFlags::DST_IP_HASH,
        &key,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ranges_keeps_short_lists_and_cuts_long_ones() {
        assert_eq!(short_ranges("0-127"), "0-127");
        assert_eq!(short_ranges("0-9,20,30-40"), "0-9,20,30-40");
        assert_eq!(short_ranges("0,2,4,6,8"), "0,2,4,.. (5 ranges)");
        assert_eq!(short_ranges(""), "");
    }

    #[test]
    fn bucket_is_the_fold_of_the_destination_address() {
        // Service 0 hashes the destination only: 10 ^ 0 ^ 2 ^ h.
        for h in [2u8, 9, 128, 200] {
            assert_eq!(bucket(Ipv4Addr::new(10, 0, 2, h)), usize::from(8 ^ h));
        }
    }
}
