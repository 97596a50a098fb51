//! WCCP lab parts: a cache host (swcache + nftables interception + Debian's Squid) and helpers
//! to read swrouter's WCCP status.

use crate::binary;
use anyhow::{bail, Context, Result};
use netlab::squid::Squid;
use netlab::{Lab, Ns, ProcHandle};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A cache host: swcache joins the router and terminates its GRE into the `wccp0` TUN device,
/// nftables hands port-80 traffic from the TUN to Squid's intercept port, and Squid (named
/// `name` in its `Via:` header) fetches from the origin.
pub struct CacheHost {
    /// The namespace.
    pub ns: Ns,
    /// Squid's `visible_hostname`, found in the `Via:` header of replies it served.
    pub name: String,
    /// The cache's address.
    pub addr: Ipv4Addr,
    /// The router address it joins (unspecified: none given, as in multicast mode where
    /// swcache learns the routers).
    pub router: Ipv4Addr,
    /// Squid's run directory (logs, pid).
    pub run: PathBuf,
    /// swcache's status socket.
    pub socket: PathBuf,
    /// Extra swcache arguments (methods, password).
    pub swcache_args: Vec<String>,
    /// The swcache `--service` spec (default `0`).
    pub service: String,
    swcache: Option<ProcHandle>,
    squid: Option<Squid>,
}

impl CacheHost {
    /// Prepares a GRE cache host (nft rule on the TUN, Squid config); nothing runs yet.
    pub fn new(
        lab: &Lab,
        ns: &Ns,
        name: &str,
        addr: Ipv4Addr,
        router: Ipv4Addr,
    ) -> Result<CacheHost> {
        Self::intercepting_on(lab, ns, name, addr, router, "wccp0")
    }

    /// Prepares a cache host whose Squid intercepts port-80 traffic arriving on `iface`
    /// (`wccp0` for GRE forwarding, the LAN interface for L2 forwarding).
    pub fn intercepting_on(
        lab: &Lab,
        ns: &Ns,
        name: &str,
        addr: Ipv4Addr,
        router: Ipv4Addr,
        iface: &str,
    ) -> Result<CacheHost> {
        let dir = lab.dir().join(name);
        let run = dir.join("squid");
        std::fs::create_dir_all(&run)?;
        // Squid drops to its own user; let it write its logs and pid file.
        for d in [lab.dir(), dir.as_path(), run.as_path()] {
            std::process::Command::new("chmod")
                .args(["0777", &d.to_string_lossy()])
                .status()?;
        }
        // The TUN device has no address, so `redirect` (which needs one) would drop: DNAT.
        let nft = format!(
            "add table ip nat\n\
             add chain ip nat prerouting {{ type nat hook prerouting priority -100; }}\n\
             add rule ip nat prerouting iifname \"{iface}\" ip daddr != {addr} tcp dport 80 dnat to {addr}:3129\n"
        );
        let nft_file = dir.join("cache.nft");
        std::fs::write(&nft_file, nft)?;
        ns.run_ok("nft", &["-f", &nft_file.to_string_lossy()])?;
        let conf = format!(
            "pid_filename {run}/squid.pid\ncache_log {run}/cache.log\naccess_log {run}/access.log\n\
             cache_store_log none\ncoredump_dir {run}\ncache_mem 8 MB\nshutdown_lifetime 1 seconds\n\
             visible_hostname {name}\nhttp_port {addr}:3128\nhttp_port 3129 intercept\n\
             acl lab src 10.0.0.0/8\nhttp_access allow lab\nhttp_access deny all\ndebug_options ALL,1\n",
            run = run.display()
        );
        std::fs::write(dir.join("squid.conf"), conf)?;
        Ok(CacheHost {
            ns: ns.clone(),
            name: name.to_string(),
            addr,
            router,
            socket: dir.join("swcache.sock"),
            run,
            swcache_args: Vec::new(),
            service: "0".into(),
            swcache: None,
            squid: None,
        })
    }

    /// Starts Squid and swcache (again, after [`CacheHost::stop`]).
    pub fn start(&mut self, lab: &mut Lab) -> Result<()> {
        let _ = std::fs::remove_file(self.run.join("cache.log"));
        let conf = self.run.parent().unwrap_or(&self.run).join("squid.conf");
        self.squid = Some(Squid::spawn(lab, &self.ns, &conf)?);
        let (addr, router) = (self.addr.to_string(), self.router.to_string());
        let sock = self.socket.to_string_lossy().to_string();
        let mut args = vec!["--address", &addr];
        if !self.router.is_unspecified() {
            args.extend(["--router", router.as_str()]);
        }
        args.extend([
            "--service",
            &self.service,
            "--tun",
            "wccp0",
            "--socket",
            &sock,
            "--log-level",
            "debug",
        ]);
        args.extend(self.swcache_args.iter().map(String::as_str));
        self.swcache = Some(lab.spawn(&self.ns, &binary("swcache").to_string_lossy(), &args)?);
        Ok(())
    }

    /// Waits until Squid accepts intercepted connections.
    pub fn wait_squid(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            let log = std::fs::read_to_string(self.run.join("cache.log")).unwrap_or_default();
            if log.contains("Accepting NAT intercepted") {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = std::fs::read_to_string(self.run.join("cache.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{}: Squid did not start within {timeout:?}; its cache.log ends:\n{}",
            self.name,
            tail.join("\n")
        )
    }

    /// Kills Squid with SIGKILL (a proxy crash: its port refuses at once), then stops swcache.
    pub fn crash(&mut self, lab: &mut Lab) {
        if let Some(squid) = self.squid.take() {
            let _ = squid.crash(lab);
        }
        self.stop(lab);
    }

    /// Kills only Squid with SIGKILL (the proxy crashes, swcache keeps the cache in its group).
    pub fn crash_proxy(&mut self, lab: &mut Lab) {
        if let Some(squid) = self.squid.take() {
            let _ = squid.crash(lab);
        }
    }

    /// Starts Squid again after [`CacheHost::crash_proxy`]; returns once its intercept port
    /// 3129 listens, with that time in ms since the epoch (polled every 10 ms).
    pub fn restart_proxy(&mut self, lab: &mut Lab, timeout: Duration) -> Result<u64> {
        let _ = std::fs::remove_file(self.run.join("cache.log"));
        let conf = self.run.parent().unwrap_or(&self.run).join("squid.conf");
        self.squid = Some(Squid::spawn(lab, &self.ns, &conf)?);
        let start = Instant::now();
        while start.elapsed() < timeout {
            let out = self.ns.run_ok("ss", &["-Hltn", "sport = :3129"])?;
            if !out.trim().is_empty() {
                return Ok(unix_ms_now());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        bail!(
            "{}: Squid's intercept port did not listen within {timeout:?}",
            self.name
        )
    }

    /// Removes (`false`) or restores (`true`) the interception rule: with it removed, redirected
    /// port-80 traffic no longer reaches Squid although Squid still listens on 3128.
    pub fn set_interception(&self, on: bool) -> Result<()> {
        if on {
            let file = self.run.parent().unwrap_or(&self.run).join("cache.nft");
            self.ns.run_ok("nft", &["-f", &file.to_string_lossy()])?;
        } else {
            self.ns
                .run_ok("nft", &["flush", "chain", "ip", "nat", "prerouting"])?;
        }
        Ok(())
    }

    /// Stops swcache and Squid (the cache "dies").
    pub fn stop(&mut self, lab: &mut Lab) {
        if let Some(h) = self.swcache.take() {
            let _ = lab.stop(&h, Duration::from_secs(5));
        }
        if let Some(squid) = self.squid.take() {
            let _ = squid.stop(lab, Duration::from_secs(5));
        }
    }

    /// swcache's status JSON.
    pub fn swcache_status(&self) -> Result<serde_json::Value> {
        use std::io::{BufRead, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.socket)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(b"status\n")?;
        let mut line = String::new();
        std::io::BufReader::new(s).read_line(&mut line)?;
        serde_json::from_str(&line).context("swcache status is not JSON")
    }

    /// Everything swcache and Squid logged.
    pub fn logs(&self, lab: &Lab) -> String {
        let mut s = String::new();
        let squid = self.squid.as_ref().map(|s| &s.handle);
        for (what, h) in [("swcache", self.swcache.as_ref()), ("squid", squid)] {
            if let Some(h) = h {
                s.push_str(&format!(
                    "\n===== {} {what} =====\n{}",
                    self.name,
                    lab.logs(h)
                ));
            }
        }
        for f in ["cache.log", "access.log"] {
            let text = std::fs::read_to_string(self.run.join(f)).unwrap_or_default();
            s.push_str(&format!("\n===== {} squid {f} =====\n{text}", self.name));
        }
        s
    }
}

/// `swrouter status --json` on `socket`, parsed (None while it does not answer).
pub fn router_status(socket: &Path) -> Option<serde_json::Value> {
    let out = std::process::Command::new(binary("swrouter"))
        .args(["status", "--json", "-s", &socket.to_string_lossy()])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Service `id` in a status.
pub fn service(status: &serde_json::Value, id: u64) -> Option<&serde_json::Value> {
    status["wccp"]["services"]
        .as_array()?
        .iter()
        .find(|s| s["id"] == id)
}

/// Cache `addr` of service `id` in a status.
pub fn cache<'a>(
    status: &'a serde_json::Value,
    id: u64,
    addr: &str,
) -> Option<&'a serde_json::Value> {
    service(status, id)?["caches"]
        .as_array()?
        .iter()
        .find(|c| c["address"] == addr)
}

/// The owner of each of the 256 buckets of service `id`, from the caches' `bucket_ranges`.
pub fn bucket_owners(status: &serde_json::Value, id: u64) -> [Option<Ipv4Addr>; 256] {
    let mut owners = [None; 256];
    let caches = service(status, id)
        .and_then(|s| s["caches"].as_array())
        .cloned()
        .unwrap_or_default();
    for c in caches {
        let Some(addr) = c["address"].as_str().and_then(|a| a.parse().ok()) else {
            continue;
        };
        for range in c["bucket_ranges"]
            .as_str()
            .unwrap_or("")
            .split(',')
            .filter(|r| !r.is_empty())
        {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            if let (Ok(lo), Ok(hi)) = (lo.parse::<usize>(), hi.parse::<usize>()) {
                for o in owners.iter_mut().take(hi.min(255) + 1).skip(lo) {
                    *o = Some(addr);
                }
            }
        }
    }
    owners
}

/// The cache the standard service 0 sends a flow to `dst` to (it hashes the destination
/// address only), by the bucket function of the reference (§7).
pub fn predicted_cache(
    owners: &[Option<Ipv4Addr>; 256],
    src: Ipv4Addr,
    dst: Ipv4Addr,
) -> Option<Ipv4Addr> {
    let key = wccp::hash::FlowKey::new(src, dst, 0, 80);
    let b = wccp::hash::primary_bucket(wccp::wire::ServiceFlags::DST_IP_HASH, &key);
    owners[usize::from(b)]
}

/// The primary bucket of a flow under a service's hash `flags` (reference §7).
pub fn bucket_of(
    flags: wccp::wire::ServiceFlags,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
) -> usize {
    let key = wccp::hash::FlowKey::new(src, dst, sport, dport);
    usize::from(wccp::hash::primary_bucket(flags, &key))
}

/// Polls `f` every `every` until it returns Some or `timeout` passes.
pub fn wait_for<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// The `Via:` header of an HTTP response dump (`curl -D -`), lowercased.
pub fn via(response: &str) -> Option<String> {
    response
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("via:"))
        .map(|l| l.to_ascii_lowercase())
}

/// `curl` of `url` from `ns` with the response headers: (success, headers and body, Via).
pub fn fetch(ns: &Ns, url: &str) -> (bool, String, Option<String>) {
    let Ok(out) = ns.run("curl", &["-sS", "-m", "10", "-D", "-", url]) else {
        return (false, format!("curl {url} could not run"), None);
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v = via(&text);
    (out.status.success(), text, v)
}

/// Runs tshark on `pcap` (in `ns`) and fails if it finds malformed frames or expert errors.
pub fn tshark_clean(ns: &Ns, pcap: &Path) -> Result<()> {
    let p = pcap.to_string_lossy();
    let out = ns.run(
        "tshark",
        &[
            "-r",
            &p,
            "-Y",
            "_ws.malformed || _ws.expert.severity == error",
        ],
    )?;
    let bad = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !bad.is_empty() {
        bail!(
            "tshark finds malformed frames or expert errors in {p}:\n{bad}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Waits until swrouter's status shows the fast-failover probe of cache `addr` in service `id`
/// as `want` ("down", "up") and returns when the router changed it (its
/// `probe_changed_unix_ms`), in ms since the epoch.
pub fn wait_probe_state(
    socket: &Path,
    id: u64,
    addr: &str,
    want: &str,
    timeout: Duration,
) -> Option<u64> {
    wait_for(timeout, Duration::from_millis(20), || {
        let s = router_status(socket)?;
        let c = cache(&s, id, addr)?;
        (c["probe"] == want).then(|| c["probe_changed_unix_ms"].as_u64().unwrap_or(0))
    })
}

/// Issue 19, on one cache whose group uses the default redirect probe (every `interval_ms`,
/// 3 misses): its Squid gets SIGKILL and the router's status shows it down within 1 s of the
/// kill, while `fetch` (a client request to one of its buckets) succeeds directly; Squid
/// restarts and the cache is up again within one probe interval of its port listening; then
/// the interception rule is removed while Squid still listens on 3128 (a direct probe would
/// still be answered) and the cache goes down within 1 s, and comes back when the rule
/// returns. Returns the measured times for the test's output.
pub fn check_redirect_probe_failover(
    lab: &mut Lab,
    host: &mut CacheHost,
    socket: &Path,
    service: u64,
    interval_ms: u64,
    fetch: impl Fn() -> (bool, String),
) -> Result<String> {
    let addr = host.addr.to_string();
    let up = || wait_probe_state(socket, service, &addr, "up", Duration::from_secs(5));
    if up().is_none() {
        bail!("{addr}: the redirect probe never showed the cache up");
    }
    let killed = unix_ms_now();
    host.crash_proxy(lab);
    let down = wait_probe_state(socket, service, &addr, "down", Duration::from_secs(5))
        .with_context(|| format!("{addr}: not down within 5 s of its Squid's SIGKILL"))?;
    let kill_ms = down.saturating_sub(killed);
    if kill_ms > 1000 {
        bail!("{addr}: down {kill_ms} ms after its Squid's SIGKILL (bound 1000 ms)");
    }
    let (ok, text) = fetch();
    if !ok {
        bail!("{addr}: a request to its buckets failed while it was down:\n{text}");
    }
    let listening = host.restart_proxy(lab, Duration::from_secs(20))?;
    let back = up().with_context(|| format!("{addr}: not up after Squid restarted"))?;
    let back_ms = back.saturating_sub(listening);
    if back_ms > interval_ms + 100 {
        bail!("{addr}: up {back_ms} ms after Squid listened again (bound: one probe interval, {interval_ms} ms, + 100 ms)");
    }
    // Squid's own port still accepts: only a probe through the redirection path sees this.
    host.ns
        .run_ok("bash", &["-c", &format!("exec 3<>/dev/tcp/{addr}/3128")])
        .context("Squid's http_port 3128 should still accept")?;
    let broken = unix_ms_now();
    host.set_interception(false)?;
    let down = wait_probe_state(socket, service, &addr, "down", Duration::from_secs(5))
        .with_context(|| format!("{addr}: broken interception not seen within 5 s"))?;
    let broken_ms = down.saturating_sub(broken);
    if broken_ms > 1000 {
        bail!(
            "{addr}: down {broken_ms} ms after its interception rule was removed (bound 1000 ms)"
        );
    }
    host.set_interception(true)?;
    let fixed = unix_ms_now();
    let back2 = up().with_context(|| format!("{addr}: not up after interception returned"))?;
    Ok(format!(
        "{addr}: down {kill_ms} ms after SIGKILL, up {back_ms} ms after Squid listened, down {broken_ms} ms after the nft rule went, up {} ms after it returned",
        back2.saturating_sub(fixed)
    ))
}

/// Milliseconds since the Unix epoch now (the clock the router's log timestamps use).
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The time of the first line of `logs` (swrouter's text log: an RFC 3339 UTC timestamp first,
/// possibly behind ANSI colour codes) that contains every one of `needles`, in ms since the
/// Unix epoch.
pub fn log_line_unix_ms(logs: &str, needles: &[&str]) -> Option<u64> {
    let line = logs
        .lines()
        .map(strip_ansi)
        .find(|l| needles.iter().all(|n| l.contains(n)))?;
    rfc3339_utc_ms(line.split_whitespace().next()?)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC '[' parameters, ended by a letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` → ms since the epoch.
fn rfc3339_utc_ms(t: &str) -> Option<u64> {
    let t = t.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut h = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    // Days from 1970-01-01 to the civil date (proleptic Gregorian, March-based year).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    u64::try_from(secs * 1000 + ms).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn log_timestamps_parse() {
        let logs = "\u{1b}[2m2026-12-05T01:37:44.123456Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m x: cache stopped cache=10.0.4.2\n";
        assert_eq!(
            log_line_unix_ms(logs, &["stopped", "10.0.4.2"]),
            Some(1_796_434_664_123)
        );
        assert_eq!(rfc3339_utc_ms("1970-01-01T00:00:01Z"), Some(1000));
        assert_eq!(
            rfc3339_utc_ms("2000-03-01T00:00:00.5Z"),
            Some(951_868_800_500)
        );
        assert_eq!(log_line_unix_ms(logs, &["nothing"]), None);
    }
}
