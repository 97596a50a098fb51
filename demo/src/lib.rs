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
//!
//! The lab is not part of the router: it needs netlab (namespaces through `ip netns`), Squid,
//! nftables and curl, and reads the router only from outside, through its management socket
//! and `router::status` types, as an operator would. The swrouter binary calls [`run`]. Each
//! cache's swcache runs from a cache.conf the demo writes (`swcache -c`).
//!
//! Modules: `cache` (a cache host: namespace, nft rule, Squid, swcache), `phases` (building the
//! lab and the five phases), `view` (the live view and the readings it takes from the status).

mod cache;
mod phases;
mod view;

use anyhow::{bail, Context, Result};
use cache::Cache;
use netlab::{Lab, Ns, ProcHandle};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
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
         [wccp]\nprobe-interval-ms = 200\n\n[[wccp.service]]\nid = 0\n",
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

/// Runs the demo; `seconds` is the length of the steady-traffic phase. Called by `swrouter demo`:
/// it runs the swrouter binary it is called from, and the swcache binary next to it.
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
