//! netlab: throw-away network-namespace + veth topologies for swrouter's
//! integration tests, benchmarks and the `swrouter demo` command.
//!
//! # Contract
//!
//! * A [`Lab`] owns every namespace it creates ([`Lab::add_ns`]) and every
//!   process it starts ([`Lab::spawn`]). [`Lab::teardown`] — called by `Drop`,
//!   so also while a test panics and unwinds — first kills the processes
//!   (SIGTERM to each process group, SIGKILL after 2 s, then reaps them), then
//!   runs `ip netns del` for each namespace (which destroys the veths inside),
//!   then removes the lab's temp dir (kept if `NETLAB_KEEP=1`). Teardown is
//!   idempotent, never panics and reports failures on stderr; call it from a
//!   Ctrl-C handler when the process would otherwise exit without dropping.
//! * Names never clash, in one process or across processes: each lab has a
//!   prefix `sw<tag>-<pid>-<n>` (tag sanitised to at most 6 of `[a-z0-9]`,
//!   `n` a per-process counter) and namespace `short` is created as
//!   `<prefix>-<short>`, at most 31 characters. Interfaces are created
//!   directly inside the namespaces; no name ever appears in the root
//!   namespace. A crashed run's leftovers are removed by [`sweep_stale`]
//!   (the creating pid is encoded in the name), and a new lab deletes
//!   leftovers of an earlier process that had the same pid.
//! * Everything goes through the `ip` command (iproute2); `Lab::new` fails
//!   with [`LabError::NotRoot`] unless the effective uid is 0 and with
//!   [`LabError::IpMissing`] if `ip` cannot be run.
//! * A spawned process is its own process-group leader (so its own children
//!   are killed with it) and has stdin from `/dev/null` and stdout+stderr
//!   appended to one file in [`Lab::dir`], readable with [`Lab::logs`]. When
//!   a lab is torn down while its thread panics, each process's log tail is
//!   printed on stderr.

#![deny(unsafe_code)]

pub mod etcd;
pub mod squid;
mod sys;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest namespace name netlab creates.
pub const MAX_NS_NAME: usize = 31;
/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;
/// Longest sanitised tag kept in a lab prefix.
pub const MAX_TAG: usize = 6;
/// How long teardown waits after SIGTERM before sending SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(2);

/// Per-process lab counter, part of every prefix.
static NEXT_LAB: AtomicU32 = AtomicU32::new(0);
/// Serialises `ip netns add/del` within this process (iproute2's first-use
/// mount setup of /run/netns is racy).
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// Everything that can go wrong in netlab; messages name the failing command.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The effective uid is not 0.
    #[error("netlab needs root (CAP_NET_ADMIN) to create network namespaces; run as root (effective uid is {euid})")]
    NotRoot {
        /// The effective uid found.
        euid: u32,
    },
    /// `ip` (iproute2) could not be run.
    #[error("netlab needs the `ip` command (iproute2) but could not run it: {0}")]
    IpMissing(#[source] io::Error),
    /// A namespace, interface, tag or sysctl name is not acceptable.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidName {
        /// What kind of name it is.
        what: &'static str,
        /// The name given.
        name: String,
        /// Why it was refused.
        reason: String,
    },
    /// A command could not be started at all.
    #[error("could not start `{cmd}`: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A command ran but did not exit 0.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: ExitStatus,
        /// Its standard error, trimmed.
        stderr: String,
        /// Its standard output.
        stdout: String,
    },
    /// A command succeeded but printed something netlab could not parse.
    #[error("unexpected output from `{cmd}`: {output:?}")]
    Unexpected {
        /// The command line.
        cmd: String,
        /// What it printed.
        output: String,
    },
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What netlab was doing.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A program the lab needs is not installed.
    #[error("{program} is not installed: {hint}")]
    NotInstalled {
        /// The program's path.
        program: String,
        /// How to install it.
        hint: String,
    },
    /// Something the lab started did not become ready in time.
    #[error("{what} not ready after {waited:?}: {detail}")]
    NotReady {
        /// What was waited for.
        what: String,
        /// How long.
        waited: Duration,
        /// The last answer or error seen, and where the logs are.
        detail: String,
    },
    /// The [`ProcHandle`] was not returned by this lab's [`Lab::spawn`].
    #[error("process handle (pid {pid}) does not belong to this lab")]
    UnknownProcess {
        /// The handle's pid.
        pid: u32,
    },
}

/// A network namespace (by name); cheap to clone, does not own the namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ns {
    /// Full namespace name as shown by `ip netns list`.
    pub name: String,
}

/// A process started by [`Lab::spawn`]; the [`Lab`] owns the process itself.
#[derive(Clone, Debug)]
pub struct ProcHandle {
    /// Its pid (also its process-group id) in the root pid namespace.
    pub pid: u32,
    lab: u32,
    idx: usize,
}

/// A spawned process as tracked by its lab.
struct Proc {
    pid: u32,
    cmd: String,
    log: PathBuf,
    /// `Some` until reaped.
    child: Option<Child>,
    /// Set once reaped.
    status: Option<ExitStatus>,
}

/// A topology under construction; owns its namespaces and child processes.
/// `Drop` tears everything down (see the crate docs) and never panics.
pub struct Lab {
    id: u32,
    prefix: String,
    dir: PathBuf,
    keep_dir: bool,
    namespaces: Vec<Ns>,
    procs: Vec<Proc>,
}

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lab")
            .field("prefix", &self.prefix)
            .field("dir", &self.dir)
            .field("namespaces", &self.namespaces)
            .field(
                "pids",
                &self.procs.iter().map(|p| p.pid).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Lab {
    /// Checks for root and `ip`, picks a unique prefix from `tag` and creates the temp dir.
    pub fn new(tag: &str) -> Result<Lab, LabError> {
        let euid = sys::euid();
        if euid != 0 {
            return Err(LabError::NotRoot { euid });
        }
        match Command::new("ip")
            .arg("-V")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(s) if s.success() => {}
            Ok(s) => {
                return Err(LabError::IpMissing(io::Error::other(format!(
                    "`ip -V` exited with {s}"
                ))))
            }
            Err(e) => return Err(LabError::IpMissing(e)),
        }

        let id = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("sw{}-{}-{}", sanitize_tag(tag), std::process::id(), id);

        // Anything already carrying our prefix was left by a dead process
        // that had our pid (our own counter never repeats).
        let stale_start = format!("{prefix}-");
        for name in list_netns()? {
            if name.starts_with(&stale_start) {
                let _ = del_netns(&name);
            }
        }

        let dir = std::env::temp_dir().join(format!("netlab-{prefix}"));
        if dir.exists() {
            let _ = fs::remove_dir_all(&dir);
        }
        fs::create_dir_all(&dir).map_err(|source| LabError::Io {
            context: format!("creating lab dir {}", dir.display()),
            source,
        })?;
        let keep_dir = std::env::var("NETLAB_KEEP").is_ok_and(|v| v == "1");

        Ok(Lab {
            id,
            prefix,
            dir,
            keep_dir,
            namespaces: Vec::new(),
            procs: Vec::new(),
        })
    }

    /// This lab's unique prefix (`sw<tag>-<pid>-<n>`), shared by all its namespaces.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Per-lab temp dir holding process logs (removed on teardown unless `NETLAB_KEEP=1`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Namespaces created by this lab and not yet torn down, in creation order.
    pub fn namespaces(&self) -> &[Ns] {
        &self.namespaces
    }

    /// Creates namespace `<prefix>-<short>` and brings its `lo` up.
    pub fn add_ns(&mut self, short: &str) -> Result<Ns, LabError> {
        let name = format!("{}-{}", self.prefix, short);
        check_short(short, &name)?;
        {
            let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            run_checked("ip", &["netns", "add", &name])?;
        }
        let ns = Ns { name };
        // Track it before anything else can fail, so teardown removes it.
        self.namespaces.push(ns.clone());
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Creates a veth pair with `a_if` inside `a` and `b_if` inside `b` and brings both ends up.
    pub fn link(&mut self, a: &Ns, a_if: &str, b: &Ns, b_if: &str) -> Result<(), LabError> {
        check_ifname(a_if)?;
        check_ifname(b_if)?;
        run_checked(
            "ip",
            &[
                "-n", &a.name, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns",
                &b.name,
            ],
        )?;
        a.ip(&["link", "set", a_if, "up"])?;
        b.ip(&["link", "set", b_if, "up"])?;
        Ok(())
    }

    /// Starts `program args…` inside `ns` (`ip netns exec`), as its own process
    /// group, stdin from /dev/null, stdout+stderr to a log file in [`Lab::dir`].
    pub fn spawn(&mut self, ns: &Ns, program: &str, args: &[&str]) -> Result<ProcHandle, LabError> {
        let idx = self.procs.len();
        fs::create_dir_all(&self.dir).map_err(|source| LabError::Io {
            context: format!("creating lab dir {}", self.dir.display()),
            source,
        })?;
        let log = self.dir.join(format!("{idx:02}-{}.log", log_stem(program)));
        let out = File::create(&log).map_err(|source| LabError::Io {
            context: format!("creating log file {}", log.display()),
            source,
        })?;
        let err = out.try_clone().map_err(|source| LabError::Io {
            context: format!("duplicating log file {}", log.display()),
            source,
        })?;
        let mut cmd = ns.command(program, args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        let cmdline = format!("ip netns exec {} {}", ns.name, show_cmd(program, args));
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            cmd: cmdline.clone(),
            source,
        })?;
        let pid = child.id();
        self.procs.push(Proc {
            pid,
            cmd: cmdline,
            log,
            child: Some(child),
            status: None,
        });
        Ok(ProcHandle {
            pid,
            lab: self.id,
            idx,
        })
    }

    /// Stops a spawned process and its group: SIGTERM, wait up to `timeout`,
    /// then SIGKILL; reaps it and returns its exit status (the stored one if already reaped).
    pub fn stop(&mut self, h: &ProcHandle, timeout: Duration) -> Result<ExitStatus, LabError> {
        let p = self.proc_mut(h)?;
        if let Some(s) = p.status {
            return Ok(s);
        }
        sys::kill_group(p.pid, sys::SIGTERM);
        let deadline = Instant::now() + timeout;
        while !has_exited(p.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        reap(p).ok_or_else(|| LabError::Io {
            context: format!("waiting for `{}` (pid {})", p.cmd, p.pid),
            source: io::Error::other("process could not be reaped"),
        })
    }

    /// Kills a spawned process and its group at once with SIGKILL (a crash: it gets no chance
    /// to clean up), reaps it and returns its exit status (the stored one if already reaped).
    pub fn kill(&mut self, h: &ProcHandle) -> Result<ExitStatus, LabError> {
        let p = self.proc_mut(h)?;
        reap(p).ok_or_else(|| LabError::Io {
            context: format!("waiting for `{}` (pid {})", p.cmd, p.pid),
            source: io::Error::other("process could not be reaped"),
        })
    }

    /// Reaps the process if it has exited on its own; `Ok(None)` while it still runs.
    pub fn try_wait(&mut self, h: &ProcHandle) -> Result<Option<ExitStatus>, LabError> {
        let p = self.proc_mut(h)?;
        if let Some(s) = p.status {
            return Ok(Some(s));
        }
        if !has_exited(p.pid) {
            return Ok(None);
        }
        Ok(reap(p))
    }

    /// Everything the process wrote to stdout and stderr so far (lossy UTF-8; empty if unknown).
    pub fn logs(&self, h: &ProcHandle) -> String {
        match self.log_path(h) {
            Some(path) => fs::read(path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default(),
            None => String::new(),
        }
    }

    /// Path of the process's log file, if the handle belongs to this lab.
    pub fn log_path(&self, h: &ProcHandle) -> Option<&Path> {
        self.proc_ref(h).map(|p| p.log.as_path())
    }

    /// Polls [`Lab::logs`] until it contains `needle`; false after `timeout`.
    pub fn wait_for_log(&self, h: &ProcHandle, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.logs(h).contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills and reaps all processes, deletes all namespaces, removes the temp
    /// dir; idempotent, never panics, reports failures on stderr.
    pub fn teardown(&mut self) {
        let panicking = std::thread::panicking();
        if panicking && self.dir.exists() {
            for p in &self.procs {
                dump_log_tail(p);
            }
        }

        // 1. Processes: TERM every group, wait up to KILL_GRACE, KILL, reap.
        let mut alive: Vec<&mut Proc> = self
            .procs
            .iter_mut()
            .filter(|p| p.child.is_some())
            .collect();
        for p in alive.iter() {
            sys::kill_group(p.pid, sys::SIGTERM);
        }
        let deadline = Instant::now() + KILL_GRACE;
        while alive.iter().any(|p| !has_exited(p.pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        for p in alive.iter_mut() {
            if reap(p).is_none() {
                warn(format_args!("could not reap `{}` (pid {})", p.cmd, p.pid));
            }
        }

        // 2. Namespaces, newest first (deleting one destroys its veths).
        while let Some(ns) = self.namespaces.pop() {
            if let Err(e) = del_netns(&ns.name) {
                warn(format_args!("teardown: {e}"));
            }
        }

        // 3. The temp dir.
        if self.dir.exists() {
            if self.keep_dir {
                warn(format_args!(
                    "NETLAB_KEEP=1: keeping {}",
                    self.dir.display()
                ));
            } else if let Err(e) = fs::remove_dir_all(&self.dir) {
                warn(format_args!(
                    "teardown: removing {}: {e}",
                    self.dir.display()
                ));
            }
        }
    }

    fn proc_ref(&self, h: &ProcHandle) -> Option<&Proc> {
        if h.lab != self.id {
            return None;
        }
        self.procs.get(h.idx).filter(|p| p.pid == h.pid)
    }

    fn proc_mut(&mut self, h: &ProcHandle) -> Result<&mut Proc, LabError> {
        if h.lab != self.id {
            return Err(LabError::UnknownProcess { pid: h.pid });
        }
        self.procs
            .get_mut(h.idx)
            .filter(|p| p.pid == h.pid)
            .ok_or(LabError::UnknownProcess { pid: h.pid })
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // teardown() is written not to panic; this is belt and braces so that a
        // bug there can never turn an unwinding test into an abort.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.teardown()));
        if r.is_err() {
            warn(format_args!("teardown of {} panicked", self.prefix));
        }
    }
}

impl Ns {
    /// A [`Command`] for `ip netns exec NAME program args…`, for callers needing custom stdio.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]).args(args);
        cmd
    }

    /// Runs `f` on a new thread that has entered this namespace and returns its result: sockets
    /// `f` opens (a tokio current-thread runtime built inside it, say) live in the namespace.
    /// A panic in `f` is resumed in the caller.
    pub fn within<R: Send>(&self, f: impl FnOnce() -> R + Send) -> Result<R, LabError> {
        let path = format!("/run/netns/{}", self.name);
        let file = File::open(&path).map_err(|source| LabError::Io {
            context: format!("opening {path}"),
            source,
        })?;
        std::thread::scope(|s| {
            let thread = s.spawn(move || {
                use std::os::fd::AsFd;
                sys::setns_net(file.as_fd()).map_err(|source| LabError::Io {
                    context: format!("entering network namespace {path}"),
                    source,
                })?;
                Ok(f())
            });
            match thread.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Runs `program args…` to completion inside the namespace, output captured.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output, LabError> {
        self.command(program, args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| LabError::Spawn {
                cmd: format!("ip netns exec {} {}", self.name, show_cmd(program, args)),
                source,
            })
    }

    /// Like [`Ns::run`] but fails (with the command line and stderr) unless it exits 0; returns stdout.
    pub fn run_ok(&self, program: &str, args: &[&str]) -> Result<String, LabError> {
        let out = self.run(program, args)?;
        check_output(
            format!("ip netns exec {} {}", self.name, show_cmd(program, args)),
            out,
        )
    }

    /// Runs `ip -n NAME args…`; returns stdout, fails unless it exits 0.
    pub fn ip(&self, args: &[&str]) -> Result<String, LabError> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_checked("ip", &full)
    }

    /// `ip -n NAME addr add CIDR dev IFNAME`.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> Result<(), LabError> {
        self.ip(&["addr", "add", cidr, "dev", ifname]).map(drop)
    }

    /// `ip -n NAME route add PREFIX via VIA` (`prefix` may be `default`).
    pub fn add_route(&self, prefix: &str, via: &str) -> Result<(), LabError> {
        self.ip(&["route", "add", prefix, "via", via]).map(drop)
    }

    /// MAC address of `ifname` as printed by `ip` (lowercase `aa:bb:cc:dd:ee:ff`).
    pub fn mac(&self, ifname: &str) -> Result<String, LabError> {
        let out = self.ip(&["-o", "link", "show", "dev", ifname])?;
        let mut words = out.split_whitespace();
        while let Some(w) = words.next() {
            if w == "link/ether" {
                if let Some(mac) = words.next() {
                    return Ok(mac.to_string());
                }
            }
        }
        Err(LabError::Unexpected {
            cmd: format!("ip -n {} -o link show dev {ifname}", self.name),
            output: out,
        })
    }

    /// Sets sysctl `key` (dotted, e.g. `net.ipv4.ip_forward`, or a slash path
    /// under /proc/sys for names containing dots) to `value` inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<(), LabError> {
        let rel = if key.contains('/') {
            key.trim_start_matches('/').to_string()
        } else {
            key.replace('.', "/")
        };
        if rel.is_empty()
            || rel
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
            || rel.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(LabError::InvalidName {
                what: "sysctl key",
                name: key.to_string(),
                reason: "expected e.g. net.ipv4.ip_forward or net/ipv4/conf/eth0.10/forwarding"
                    .to_string(),
            });
        }
        let path = format!("/proc/sys/{rel}");
        self.run_ok(
            "sh",
            &["-c", "printf '%s\\n' \"$1\" > \"$2\"", "sh", value, &path],
        )
        .map(drop)
    }
}

/// Names of all network namespaces (`ip netns list`, first word of each line).
pub fn list_netns() -> Result<Vec<String>, LabError> {
    let out = run_checked("ip", &["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Deletes leftover namespaces whose name starts with `prefix_glob` (a
/// trailing `*` is ignored), has netlab's `sw<tag>-<pid>-<n>-…` shape, and
/// whose creating pid no longer exists; returns how many were removed.
pub fn sweep_stale(prefix_glob: &str) -> usize {
    let start = prefix_glob.trim_end_matches('*');
    let names = match list_netns() {
        Ok(n) => n,
        Err(e) => {
            warn(format_args!("sweep_stale: {e}"));
            return 0;
        }
    };
    let mut removed = 0;
    for name in names {
        if !name.starts_with(start) {
            continue;
        }
        let Some(pid) = creator_pid(&name) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match del_netns(&name) {
            Ok(()) => removed += 1,
            Err(e) => warn(format_args!("sweep_stale: {e}")),
        }
    }
    removed
}

/// The creating pid encoded in a netlab namespace name, if it has netlab's shape.
fn creator_pid(name: &str) -> Option<u32> {
    let mut parts = name.splitn(4, '-');
    let head = parts.next()?;
    let pid = parts.next()?;
    let counter = parts.next()?;
    let short = parts.next()?;
    let tag_ok = head
        .strip_prefix("sw")
        .is_some_and(|t| t.len() <= MAX_TAG && t.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !tag_ok || short.is_empty() || counter.parse::<u32>().is_err() {
        return None;
    }
    pid.parse::<u32>().ok().filter(|&p| p > 0)
}

fn sanitize_tag(tag: &str) -> String {
    tag.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(MAX_TAG)
        .collect()
}

fn check_short(short: &str, full: &str) -> Result<(), LabError> {
    let bad = |reason: String| LabError::InvalidName {
        what: "namespace short name",
        name: short.to_string(),
        reason,
    };
    if short.is_empty() || short == "." || short == ".." {
        return Err(bad("must be a non-empty name".to_string()));
    }
    if !short
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(bad("only [A-Za-z0-9_.-] allowed".to_string()));
    }
    if full.len() > MAX_NS_NAME {
        return Err(bad(format!(
            "full namespace name {full:?} would exceed {MAX_NS_NAME} characters; use a shorter name"
        )));
    }
    Ok(())
}

fn check_ifname(name: &str) -> Result<(), LabError> {
    let reason = if name.is_empty() || name == "." || name == ".." {
        "must be a non-empty name"
    } else if name.len() > MAX_IFNAME {
        "longer than 15 characters (IFNAMSIZ)"
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        "must not contain '/', ':' or whitespace"
    } else {
        return Ok(());
    };
    Err(LabError::InvalidName {
        what: "interface name",
        name: name.to_string(),
        reason: reason.to_string(),
    })
}

fn log_stem(program: &str) -> String {
    let base = Path::new(program)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(24)
        .collect();
    if stem.is_empty() {
        "proc".to_string()
    } else {
        stem
    }
}

/// Human-readable command line (arguments with spaces or quotes are Debug-quoted).
fn show_cmd(program: &str, args: &[&str]) -> String {
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        if a.is_empty()
            || a.chars()
                .any(|c| c.is_whitespace() || c == '"' || c == '\'')
        {
            s.push_str(&format!("{a:?}"));
        } else {
            s.push_str(a);
        }
    }
    s
}

/// Runs `program args…` in the root namespace; stdout on exit 0, else an error.
fn run_checked(program: &str, args: &[&str]) -> Result<String, LabError> {
    let cmd = show_cmd(program, args);
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    check_output(cmd, out)
}

fn check_output(cmd: String, out: Output) -> Result<String, LabError> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(LabError::CommandFailed {
            cmd,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            stdout,
        })
    }
}

fn del_netns(name: &str) -> Result<(), LabError> {
    let _guard = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    match run_checked("ip", &["netns", "del", name]) {
        Ok(_) => Ok(()),
        Err(_) => {
            // One retry: a just-killed process may still pin a mount briefly.
            std::thread::sleep(Duration::from_millis(100));
            run_checked("ip", &["netns", "del", name]).map(drop)
        }
    }
}

/// True once `pid` is a zombie or gone. It stays a zombie until we reap it,
/// so its process-group id cannot be recycled while we still signal it.
fn has_exited(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // Format: "pid (comm) S ..."; comm may contain spaces and parentheses.
    let state = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .and_then(|rest| rest.split_whitespace().next());
    matches!(state, Some("Z") | Some("X") | None)
}

/// SIGKILLs whatever is left of the process group, then reaps the leader.
fn reap(p: &mut Proc) -> Option<ExitStatus> {
    if let Some(s) = p.status {
        return Some(s);
    }
    let mut child = p.child.take()?;
    // The leader is unreaped, so the group id is still ours to signal.
    sys::kill_group(p.pid, sys::SIGKILL);
    match child.wait() {
        Ok(s) => {
            p.status = Some(s);
            Some(s)
        }
        Err(e) => {
            warn(format_args!("waiting for `{}` (pid {}): {e}", p.cmd, p.pid));
            None
        }
    }
}

fn dump_log_tail(p: &Proc) {
    const TAIL: usize = 8 * 1024;
    let Ok(bytes) = fs::read(&p.log) else {
        return;
    };
    let tail = bytes.get(bytes.len().saturating_sub(TAIL)..).unwrap_or(&[]);
    warn(format_args!(
        "----- log of `{}` (pid {}){} -----\n{}----- end of log -----",
        p.cmd,
        p.pid,
        if bytes.len() > TAIL {
            ", last 8 KiB"
        } else {
            ""
        },
        String::from_utf8_lossy(tail)
    ));
}

/// Writes one line to stderr without ever panicking (unlike `eprintln!`).
fn warn(msg: fmt::Arguments<'_>) {
    let _ = writeln!(io::stderr(), "netlab: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_sanitised_and_short() {
        assert_eq!(sanitize_tag("My-Test_42xyz"), "mytest");
        assert_eq!(sanitize_tag(""), "");
    }

    #[test]
    fn creator_pid_parses_only_netlab_names() {
        assert_eq!(creator_pid("swabc-1234-0-r1"), Some(1234));
        assert_eq!(creator_pid("sw-77-3-client-a"), Some(77));
        assert_eq!(creator_pid("sw-77-3-"), None);
        assert_eq!(creator_pid("swtoolongtag-77-3-a"), None);
        assert_eq!(creator_pid("other-77-3-a"), None);
        assert_eq!(creator_pid("swx-notpid-3-a"), None);
        assert_eq!(creator_pid("swx-12"), None);
    }

    #[test]
    fn names_are_validated() {
        assert!(check_ifname("veth-long-name1").is_ok());
        assert!(check_ifname("veth-long-name12").is_err());
        assert!(check_ifname("a/b").is_err());
        assert!(check_short("r1", "swx-1-0-r1").is_ok());
        assert!(check_short("", "swx-1-0-").is_err());
        assert!(check_short("a b", "swx-1-0-a b").is_err());
        assert!(check_short("r", &"x".repeat(32)).is_err());
    }

    #[test]
    fn command_lines_are_readable() {
        assert_eq!(show_cmd("ip", &["-n", "a b", ""]), "ip -n \"a b\" \"\"");
        assert_eq!(log_stem("/usr/bin/sleep"), "sleep");
        assert_eq!(log_stem("./a.out"), "a_out");
    }
}
