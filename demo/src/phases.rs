//! The demo's five phases and what they do in the lab: build it, start the caches, download,
//! fetch through the caches, crash one, wait for the router to notice and the designated cache
//! to reassign, sum up.

use crate::view::{bucket, cache, owners, service, short_ranges};
use crate::{router_conf, Cache, Demo, Interrupted, ASSIGN_TIMEOUT, INTERRUPTED, REASSIGN_TIMEOUT};
use anyhow::{bail, Context, Result};
use netlab::Lab;
use router::status::Status;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

impl Demo {
    /// Builds the namespaces and starts swrouter, the web server and ping (caches not yet).
    pub(crate) fn build(exe: &Path, swcache: &Path) -> Result<Demo> {
        let mut lab = Lab::new("demo")?;
        let cli = lab.add_ns("cli")?;
        let rtr = lab.add_ns("rtr")?;
        let srv = lab.add_ns("srv")?;
        lab.link(&cli, "eth0", &rtr, "eth0")?;
        lab.link(&rtr, "eth1", &srv, "eth0")?;
        cli.add_addr("eth0", "10.0.1.2/24")?;
        cli.add_route("default", "10.0.1.1")?;
        let caches = vec![
            Cache::new(&mut lab, &rtr, "eth2", "ca", 3)?,
            Cache::new(&mut lab, &rtr, "eth3", "cb", 4)?,
        ];
        // The server answers on 10.0.2.2-200: service 0 hashes the destination address, so
        // fetches to different addresses land in different buckets.
        let dir = lab.dir().to_path_buf();
        let batch: String = (2..=200)
            .map(|h| format!("address add 10.0.2.{h}/24 dev eth0\n"))
            .collect();
        std::fs::write(dir.join("srv-addrs"), batch)?;
        srv.run_ok("ip", &["-batch", &dir.join("srv-addrs").to_string_lossy()])?;
        srv.add_route("default", "10.0.2.1")?;
        let www = dir.join("www");
        std::fs::create_dir_all(&www)?;
        // 2 MiB of varied bytes so the download is a real multi-segment TCP transfer.
        let blob: Vec<u8> = (0..2u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(www.join("blob"), &blob)?;
        std::fs::write(
            www.join("page"),
            "hello from the origin server\n".repeat(40),
        )?;

        println!(
            "swrouter demo: lab {} ({})",
            lab.prefix(),
            lab.namespaces()
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("  client 10.0.1.2 --eth0-- [swrouter, WCCP service 0 redirected in on eth0] --eth1-- server 10.0.2.2-200");
        println!("                             eth2 -- cache-a 10.0.3.2   eth3 -- cache-b 10.0.4.2  (swcache + Squid)\n");
        let socket = dir.join("swrouter.sock");
        let conf = dir.join("router.conf");
        std::fs::write(&conf, router_conf(&socket))?;
        let router = lab.spawn(
            &rtr,
            &exe.to_string_lossy(),
            &["-c", &conf.to_string_lossy()],
        )?;
        let www_s = www.to_string_lossy().to_string();
        lab.spawn(
            &srv,
            "python3",
            &["-m", "http.server", "80", "--directory", &www_s],
        )?;
        let ping = lab.spawn(&cli, "ping", &["-i", "0.5", "-W", "1", "10.0.2.2"])?;
        Ok(Demo {
            lab,
            cli,
            socket,
            router,
            ping,
            caches,
            swcache: swcache.to_string_lossy().to_string(),
            start: Instant::now(),
            tty: std::io::IsTerminal::is_terminal(&std::io::stdout()),
            view: String::new(),
            note: String::new(),
            events: Vec::new(),
            last_view: None,
            seen: BTreeMap::new(),
            served: BTreeMap::new(),
            failed: 0,
            dsts: Vec::new(),
            next: 0,
        })
    }

    /// The five phases.
    pub(crate) fn play(&mut self, seconds: u64) -> Result<()> {
        self.phase(1, "routing (ping + download) while the caches join");
        let up = Instant::now();
        while router::control::request(&self.socket, router::control::REQ_STATUS).is_err() {
            if up.elapsed() > Duration::from_secs(10) {
                bail!("swrouter did not come up within 10 s");
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                return Err(Interrupted.into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        for i in 0..self.caches.len() {
            self.caches[i].start(&mut self.lab, &self.swcache)?;
        }
        self.event("started swcache + Squid on cache-a 10.0.3.2 and cache-b 10.0.4.2".into());
        self.download()?;
        self.wait_for(Duration::from_secs(30), "both caches to join", None, |s| {
            service(s).is_some_and(|v| v.caches.len() == 2 && v.caches.iter().all(|c| c.usable))
        })?
        .context("the caches did not join within 30 s")?;
        self.event("both caches joined and are usable; no buckets assigned yet, so traffic still goes direct".into());

        self.phase(2, "WCCP: the designated cache assigns the 256 buckets");
        let s = self
            .wait_for(ASSIGN_TIMEOUT, "both caches to get buckets", None, |s| {
                let held: Vec<usize> = service(s)
                    .map(|v| v.caches.iter().map(|c| c.buckets).collect())
                    .unwrap_or_default();
                held.len() == 2 && held.iter().all(|&b| b > 0) && held.iter().sum::<usize>() == 256
            })?
            .context("the caches did not share the 256 buckets within 60 s")?;
        if let Some(svc) = service(&s) {
            let designated = svc.designated_cache.as_deref().unwrap_or("-");
            self.event(format!(
                "assignment: designated cache {} ({}), {}",
                designated,
                self.name_of(designated),
                svc.caches
                    .iter()
                    .map(|c| format!(
                        "{} {} buckets ({})",
                        self.name_of(&c.address),
                        c.buckets,
                        short_ranges(&c.bucket_ranges)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let t = Instant::now();
        while !self.caches.iter().all(Cache::squid_ready) {
            if t.elapsed() > Duration::from_secs(20) {
                bail!("Squid did not start within 20 s");
            }
            self.pause(Duration::from_millis(100))?;
        }
        // Rotate over destinations alternating between the caches' buckets, so that both
        // caches visibly serve fetches even in a short run.
        let owners = owners(&s);
        let mut per: [Vec<Ipv4Addr>; 2] = Default::default();
        for h in 2..=200 {
            let dst = Ipv4Addr::new(10, 0, 2, h);
            match owners[bucket(dst)].as_deref() {
                Some("10.0.3.2") => per[0].push(dst),
                Some("10.0.4.2") => per[1].push(dst),
                _ => {}
            }
        }
        self.dsts = per[0]
            .iter()
            .zip(&per[1])
            .flat_map(|(a, b)| [*a, *b])
            .collect();
        if self.dsts.is_empty() {
            // One cache's buckets hold none of the server's addresses: rotate over them all.
            self.dsts = (2..=200).map(|h| Ipv4Addr::new(10, 0, 2, h)).collect();
        }

        self.phase(
            3,
            &format!("{seconds} s of fetches from rotating destinations, redirected to the caches"),
        );
        let t = Instant::now();
        let mut n = 0;
        while t.elapsed() < Duration::from_secs(seconds) || n < 4 {
            self.fetch()?;
            n += 1;
            self.pause(Duration::from_millis(500))?;
        }
        self.event(format!(
            "before the crash: {n} fetches, cache-a served {}, cache-b served {}, direct {}, failed {}",
            self.count("cache-a"),
            self.count("cache-b"),
            self.count("direct"),
            self.failed
        ));

        self.phase(4, "cache-b crashes (Squid SIGKILLed, swcache stopped)");
        let killed = Instant::now();
        self.caches[1].crash(&mut self.lab);
        self.event("cache-b killed".into());
        let down = self
            .wait_for(Duration::from_secs(5), "the probe to notice", None, |s| {
                cache(s, "10.0.4.2").is_some_and(|c| c.probe == "down")
            })?
            .is_some();
        let detect = killed.elapsed();
        if !down {
            bail!("fast failover did not notice cache-b within 5 s");
        }
        self.event(format!(
            "fast failover: swrouter's probe marked cache-b down after {:.2} s; its flows now go direct to the origin",
            detect.as_secs_f64()
        ));
        let s = self
            .wait_for(
                REASSIGN_TIMEOUT,
                "the designated cache to reassign cache-b's buckets",
                Some(Duration::from_secs(1)),
                |s| cache(s, "10.0.3.2").is_some_and(|c| c.buckets == 256),
            )?
            .context("cache-a did not take over all 256 buckets within 75 s")?;
        let reassigned = killed.elapsed();
        self.event(format!(
            "reassigned {:.1} s after the crash: cache-a holds all 256 buckets ({})",
            reassigned.as_secs_f64(),
            cache(&s, "10.0.3.2").map_or("", |c| c.bucket_ranges.as_str())
        ));
        for _ in 0..4 {
            self.fetch()?;
            self.pause(Duration::from_millis(300))?;
        }
        self.refresh(true);

        self.phase(5, "summary");
        let total: u32 = self.served.values().sum::<u32>() + self.failed;
        let pings = self
            .lab
            .logs(&self.ping)
            .lines()
            .filter(|l| l.contains("bytes from 10.0.2.2"))
            .count();
        let verdict = if self.failed == 0 {
            "all fetches succeeded".to_string()
        } else {
            format!("{} FAILED", self.failed)
        };
        println!(
            "\nsummary: {total} fetches, {verdict}; served by cache-a {}, cache-b {}, direct {}; \
             fast failover noticed the crash in {:.2} s; buckets reassigned after {:.1} s; {pings} ping replies",
            self.count("cache-a"),
            self.count("cache-b"),
            self.count("direct"),
            detect.as_secs_f64(),
            reassigned.as_secs_f64()
        );
        let _ = self.lab.stop(&self.router, Duration::from_secs(5));
        if self.failed > 0 || pings == 0 {
            bail!("{} fetches failed, {pings} ping replies", self.failed);
        }
        Ok(())
    }

    pub(crate) fn count(&self, by: &str) -> u32 {
        self.served.get(by).copied().unwrap_or(0)
    }

    fn phase(&mut self, n: u32, title: &str) {
        self.event(format!("==== phase {n}/5: {title} ===="));
    }

    /// Prints (or, on a terminal, queues under the live view) a one-line event.
    pub(crate) fn event(&mut self, msg: String) {
        let line = format!("[{:6.1}s] {msg}", self.start.elapsed().as_secs_f64());
        if self.tty {
            self.events.push(line);
            self.draw();
        } else {
            println!("{line}");
        }
    }

    pub(crate) fn status(&self) -> Option<Status> {
        let reply = router::control::request(&self.socket, router::control::REQ_STATUS).ok()?;
        serde_json::from_str(&reply).ok()
    }

    /// Sleeps `d` while keeping the view fresh; fails with [`Interrupted`] on Ctrl-C.
    pub(crate) fn pause(&mut self, d: Duration) -> Result<()> {
        let end = Instant::now() + d;
        loop {
            if INTERRUPTED.load(Ordering::SeqCst) {
                return Err(Interrupted.into());
            }
            self.refresh(false);
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }

    /// Polls the router's status until `done` holds (its status) or `timeout` passes (None),
    /// with a countdown under the view and, with `fetch_every`, fetches meanwhile.
    fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        fetch_every: Option<Duration>,
        done: impl Fn(&Status) -> bool,
    ) -> Result<Option<Status>> {
        let start = Instant::now();
        let mut last_fetch = Instant::now();
        let result = loop {
            if let Some(s) = self.status() {
                self.watch(&s);
                if done(&s) {
                    break Some(s);
                }
            }
            let elapsed = start.elapsed();
            if elapsed >= timeout {
                break None;
            }
            let left = (timeout - elapsed).as_secs() + 1;
            self.note = format!("waiting for {what}: {left:>2} s left");
            if fetch_every.is_some_and(|e| last_fetch.elapsed() >= e) {
                self.fetch()?;
                last_fetch = Instant::now();
            }
            self.pause(Duration::from_millis(50))?;
        };
        self.note.clear();
        Ok(result)
    }

    /// Reports changes of each cache's state (joined, usable, designated, buckets, probe).
    pub(crate) fn watch(&mut self, s: &Status) {
        let caches: Vec<(&'static str, String)> = self
            .caches
            .iter()
            .map(|c| {
                let state = match cache(s, &c.addr.to_string()) {
                    None => "not in the router's view".to_string(),
                    Some(v) => format!(
                        "{}{}, probe {}, {} buckets",
                        v.phase,
                        if v.designated { " (designated)" } else { "" },
                        v.probe,
                        v.buckets
                    ),
                };
                (c.name, state)
            })
            .collect();
        for (name, state) in caches {
            if self.seen.get(name) != Some(&state) {
                let first = !self.seen.contains_key(name);
                self.seen.insert(name, state.clone());
                if !(first && state == "not in the router's view") {
                    self.event(format!("{name}: {state}"));
                }
            }
        }
    }

    /// Phase 1's check that plain routing works: a 2 MiB download from the server.
    fn download(&mut self) -> Result<()> {
        let t = Instant::now();
        loop {
            let out = self.cli.run(
                "curl",
                &[
                    "-sS",
                    "-m",
                    "10",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code} %{size_download} bytes in %{time_total} s",
                    "http://10.0.2.2/blob",
                ],
            )?;
            let w = String::from_utf8_lossy(&out.stdout).to_string();
            if out.status.success() && w.starts_with("200 2097152 ") {
                self.event(format!(
                    "routing: downloaded 2 MiB from 10.0.2.2 through swrouter: HTTP {w}"
                ));
                return Ok(());
            }
            if t.elapsed() > Duration::from_secs(15) {
                bail!(
                    "the download through swrouter failed: {w} {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            self.pause(Duration::from_millis(500))?;
        }
    }

    /// Fetches a page from the next destination and reports who served it (Squid's `Via:`).
    fn fetch(&mut self) -> Result<()> {
        let dst = self.dsts[self.next % self.dsts.len()];
        self.next += 1;
        let b = bucket(dst);
        let holder = self
            .status()
            .and_then(|s| owners(&s)[b].clone())
            .map_or("nobody", |a| self.name_of(&a));
        let url = format!("http://{dst}/page");
        let out = self.cli.run(
            "curl",
            &["-sS", "-m", "10", "-D", "-", "-o", "/dev/null", &url],
        )?;
        if INTERRUPTED.load(Ordering::SeqCst) {
            // Ctrl-C reached curl too: not a failed fetch.
            return Err(Interrupted.into());
        }
        let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        let via = text.lines().find(|l| l.starts_with("via:"));
        let by = match via {
            Some(v) if v.contains("cache-a") => "cache-a",
            Some(v) if v.contains("cache-b") => "cache-b",
            Some(_) => "another proxy",
            None => "direct",
        };
        let ok = out.status.success() && text.starts_with("http/1.") && text.contains(" 200 ");
        let line = if ok {
            *self.served.entry(by).or_insert(0) += 1;
            match via {
                Some(v) => format!("served by {by} ({})", v.trim()),
                None => "served direct by the origin (no Via)".into(),
            }
        } else {
            self.failed += 1;
            format!(
                "FAILED: {}",
                String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .replace('\n', " ")
            )
        };
        self.event(format!(
            "fetch {url:<22} bucket {b:>3} held by {holder}: {line}"
        ));
        Ok(())
    }

    pub(crate) fn name_of(&self, addr: &str) -> &'static str {
        self.caches
            .iter()
            .find(|c| c.addr.to_string() == addr)
            .map_or("?", |c| c.name)
    }

    /// swrouter's and the caches' logs, for an error report.
    pub(crate) fn logs(&self) -> String {
        let mut s = format!("swrouter log:\n{}", self.lab.logs(&self.router));
        for c in &self.caches {
            let log = std::fs::read_to_string(c.dir.join("cache.log")).unwrap_or_default();
            s.push_str(&format!("\n{} squid cache.log:\n{log}", c.name));
        }
        s
    }
}
