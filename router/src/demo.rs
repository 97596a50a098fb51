//! `swrouter demo`: a lab of network namespaces with swrouter in the middle of a client, a web
//! server and two WCCP caches (swcache in front of Debian's Squid). It shows, with a live view
//! of the router's status and one-line events: routing while the caches join, the bucket
//! assignment, fetches redirected to each cache, one cache crashing (fast failover, then the
//! designated cache reassigning its buckets) and a summary. Everything is torn down on exit or
//! Ctrl-C.
//!
//! ```text
//! client 10.0.1.2 ── eth0 10.0.1.1 [swrouter, redirect-in 0] eth1 10.0.2.1 ── server 10.0.2.2-200
//!                         eth2 10.0.3.1 ── cache-a 10.0.3.2 (swcache + Squid)
//!                         eth3 10.0.4.1 ── cache-b 10.0.4.2 (swcache + Squid)
//! ```

use crate::status::{Status, WccpCacheStatus, WccpServiceStatus};
use anyhow::{bail, Context, Result};
use netlab::squid::Squid;
use netlab::{Lab, Ns, ProcHandle};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
/// How long the demo waits for the designated cache to assign, and later to reassign.
const ASSIGN_TIMEOUT: Duration = Duration::from_secs(60);
const REASSIGN_TIMEOUT: Duration = Duration::from_secs(75);

/// Set by the Ctrl-C watcher; every wait in the demo checks it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The error that unwinds the demo when Ctrl-C is pressed (the lab is dropped on the way out).
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// The config the demo router runs with.
fn router_conf(socket: &Path) -> String {
    format!(
        "# swrouter demo lab: client, server and two WCCP caches (service 0 redirected in on eth0)\n\
         [router]\nmanagement-socket = \"{}\"\nlog-level = \"info\"\n\n\
         [[interface]]\nname = \"eth0\"\naddress = \"10.0.1.1/24\"\nwccp-redirect-in = [0]\n\n\
         [[interface]]\nname = \"eth1\"\naddress = \"10.0.2.1/24\"\n\n\
         [[interface]]\nname = \"eth2\"\naddress = \"10.0.3.1/24\"\n\n\
         [[interface]]\nname = \"eth3\"\naddress = \"10.0.4.1/24\"\n\n\
         [wccp]\nprobe-interval-ms = 200\n\n[[wccp.service]]\nid = 0\nprobe-port = 3128\n",
        socket.display()
    )
}

fn need(program: &str, package: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
    if !found {
        bail!("the demo needs `{program}` (Debian package {package}); install it with: apt-get install -y {package}");
    }
    Ok(())
}

/// A cache host: swcache joins the router and hands decapsulated packets to the TUN `wccp0`,
/// nftables DNATs them to Squid's intercept port, Squid (`visible_hostname` = `name`, which its
/// `Via:` header shows) fetches from the origin.
struct Cache {
    name: &'static str,
    addr: Ipv4Addr,
    router: Ipv4Addr,
    ns: Ns,
    dir: PathBuf,
    /// Squid, under a service name of its own (it names Squid's shared-memory segments, which
    /// network namespaces do not separate); the guard removes the segments.
    squid: Option<Squid>,
    swcache: Option<ProcHandle>,
}

impl Cache {
    /// Creates the namespace `short` linked to the router's `rtr_if` on 10.0.`net`.0/24 and
    /// writes the nft rule and Squid's config; nothing runs yet.
    fn new(lab: &mut Lab, rtr: &Ns, rtr_if: &str, short: &str, net: u8) -> Result<Cache> {
        let name = if net == 3 { "cache-a" } else { "cache-b" };
        let (addr, router) = (Ipv4Addr::new(10, 0, net, 2), Ipv4Addr::new(10, 0, net, 1));
        let ns = lab.add_ns(short)?;
        lab.link(rtr, rtr_if, &ns, "eth0")?;
        ns.add_addr("eth0", &format!("{addr}/24"))?;
        ns.add_route("default", &router.to_string())?;
        let dir = lab.dir().join(name);
        std::fs::create_dir_all(&dir)?;
        // Squid drops to its own user: let it write its logs and pid file.
        for d in [lab.dir(), dir.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777))?;
        }
        // The TUN has no address, so nft's `redirect` (which needs one) would drop: DNAT.
        let nft = format!(
            "add table ip nat\nadd chain ip nat prerouting {{ type nat hook prerouting priority -100; }}\n\
             add rule ip nat prerouting iifname \"wccp0\" ip daddr != {addr} tcp dport 80 dnat to {addr}:3129\n"
        );
        std::fs::write(dir.join("cache.nft"), nft)?;
        ns.run_ok("nft", &["-f", &dir.join("cache.nft").to_string_lossy()])?;
        // Squid's DNS stays inside the namespace: the lab has no route to the host's resolver.
        let squid_conf = format!(
            "pid_filename {d}/squid.pid\ncache_log {d}/cache.log\naccess_log {d}/access.log\n\
             cache_store_log none\ncoredump_dir {d}\ncache_mem 8 MB\nshutdown_lifetime 1 seconds\n\
             visible_hostname {name}\nhttp_port {addr}:3128\nhttp_port 3129 intercept\n\
             acl lab src 10.0.0.0/8\nhttp_access allow lab\nhttp_access deny all\ndns_nameservers 127.0.0.1\n",
            d = dir.display()
        );
        std::fs::write(dir.join("squid.conf"), squid_conf)?;
        Ok(Cache {
            name,
            addr,
            router,
            ns,
            dir,
            squid: None,
            swcache: None,
        })
    }

    fn start(&mut self, lab: &mut Lab, swcache: &str) -> Result<()> {
        self.squid = Some(Squid::spawn(lab, &self.ns, &self.dir.join("squid.conf"))?);
        let (addr, router) = (self.addr.to_string(), self.router.to_string());
        let args = ["--address", &addr, "--router", &router, "--service", "0"];
        self.swcache = Some(lab.spawn(&self.ns, swcache, &args)?);
        Ok(())
    }

    fn squid_ready(&self) -> bool {
        std::fs::read_to_string(self.dir.join("cache.log"))
            .is_ok_and(|l| l.contains("Accepting NAT intercepted"))
    }

    /// A crash: SIGKILL to Squid's process group (its port refuses at once), swcache stopped.
    fn crash(&mut self, lab: &mut Lab) {
        if let Some(squid) = self.squid.take() {
            let _ = squid.crash(lab);
        }
        if let Some(h) = self.swcache.take() {
            let _ = lab.stop(&h, Duration::from_secs(5));
        }
    }
}

/// Runs the demo; `seconds` is the length of the steady-traffic phase.
pub fn run(seconds: u64) -> Result<()> {
    for (p, pkg) in [
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
        ("curl", "curl"),
        ("python3", "python3"),
        ("squid", "squid"),
        ("nft", "nftables"),
    ] {
        need(p, pkg)?;
    }
    let exe = std::env::current_exe().context("locating the swrouter binary")?;
    let swcache = exe.with_file_name("swcache");
    if !swcache.is_file() {
        bail!(
            "the demo needs the swcache binary next to swrouter ({}); build both with: cargo build --release --bins",
            swcache.display()
        );
    }
    // Ctrl-C only sets a flag: the demo unwinds and the lab's Drop tears everything down.
    std::thread::spawn(|| {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
                INTERRUPTED.store(true, Ordering::SeqCst);
            }
        }
    });
    let mut demo = Demo::build(&exe, &swcache)?;
    let result = demo.play(seconds);
    let prefix = demo.lab.prefix().to_string();
    match result {
        Err(e) if e.is::<Interrupted>() => {
            println!("\ninterrupted: tearing the lab down");
            demo.lab.teardown();
            println!("lab {prefix} removed");
            Ok(())
        }
        Err(e) => {
            let logs = demo.logs();
            demo.lab.teardown();
            println!("lab {prefix} removed");
            Err(e.context(logs))
        }
        Ok(()) => {
            demo.lab.teardown();
            println!("lab {prefix} removed");
            Ok(())
        }
    }
}

/// The running lab and what the demo has seen so far.
struct Demo {
    lab: Lab,
    cli: Ns,
    socket: PathBuf,
    router: ProcHandle,
    ping: ProcHandle,
    caches: Vec<Cache>,
    swcache: String,
    start: Instant,
    tty: bool,
    /// The last rendered status block, the line under it, the events so far.
    view: String,
    note: String,
    events: Vec<String>,
    last_view: Option<Instant>,
    /// Per cache: the last state reported as an event.
    seen: BTreeMap<&'static str, String>,
    /// Fetches served, by "cache-a", "cache-b" or "direct"; and failures.
    served: BTreeMap<&'static str, u32>,
    failed: u32,
    /// Destinations the fetches rotate through (alternating between the caches' buckets).
    dsts: Vec<Ipv4Addr>,
    next: usize,
}

impl Demo {
    /// Builds the namespaces and starts swrouter, the web server and ping (caches not yet).
    fn build(exe: &Path, swcache: &Path) -> Result<Demo> {
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
    fn play(&mut self, seconds: u64) -> Result<()> {
        self.phase(1, "routing (ping + download) while the caches join");
        let up = Instant::now();
        while crate::control::request(&self.socket, crate::control::REQ_STATUS).is_err() {
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

    fn count(&self, by: &str) -> u32 {
        self.served.get(by).copied().unwrap_or(0)
    }

    fn phase(&mut self, n: u32, title: &str) {
        self.event(format!("==== phase {n}/5: {title} ===="));
    }

    /// Prints (or, on a terminal, queues under the live view) a one-line event.
    fn event(&mut self, msg: String) {
        let line = format!("[{:6.1}s] {msg}", self.start.elapsed().as_secs_f64());
        if self.tty {
            self.events.push(line);
            self.draw();
        } else {
            println!("{line}");
        }
    }

    fn status(&self) -> Option<Status> {
        let reply = crate::control::request(&self.socket, crate::control::REQ_STATUS).ok()?;
        serde_json::from_str(&reply).ok()
    }

    /// Sleeps `d` while keeping the view fresh; fails with [`Interrupted`] on Ctrl-C.
    fn pause(&mut self, d: Duration) -> Result<()> {
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
    fn watch(&mut self, s: &Status) {
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

    fn name_of(&self, addr: &str) -> &'static str {
        self.caches
            .iter()
            .find(|c| c.addr.to_string() == addr)
            .map_or("?", |c| c.name)
    }

    /// Re-reads the router's status once a second (or now, with `force`) and redraws.
    fn refresh(&mut self, force: bool) {
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
    fn draw(&self) {
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

    /// swrouter's and the caches' logs, for an error report.
    fn logs(&self) -> String {
        let mut s = format!("swrouter log:\n{}", self.lab.logs(&self.router));
        for c in &self.caches {
            let log = std::fs::read_to_string(c.dir.join("cache.log")).unwrap_or_default();
            s.push_str(&format!("\n{} squid cache.log:\n{log}", c.name));
        }
        s
    }
}

/// Service 0 in a status.
fn service(s: &Status) -> Option<&WccpServiceStatus> {
    s.wccp.as_ref()?.services.iter().find(|v| v.id == 0)
}

/// Cache `addr` of service 0.
fn cache<'a>(s: &'a Status, addr: &str) -> Option<&'a WccpCacheStatus> {
    service(s)?.caches.iter().find(|c| c.address == addr)
}

/// The address holding each of the 256 buckets, from the caches' `bucket_ranges` ("0-127,200").
fn owners(s: &Status) -> Vec<Option<String>> {
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
fn short_ranges(r: &str) -> String {
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
fn bucket(dst: Ipv4Addr) -> usize {
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
