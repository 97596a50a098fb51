//! Shared helpers for the end-to-end tests in `tests/`: where the built binaries are, and the
//! standard three-namespace lab (client — swrouter — server) the forwarding tests use.
//!
//! The tests drive the release binaries exactly as an operator would (`swrouter -c FILE`,
//! `swrouter status --json`), inside network namespaces that [`netlab::Lab`] creates with unique
//! names and always removes.

use anyhow::{bail, Context, Result};
use netlab::{Lab, Ns, ProcHandle};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Fails with a clear message unless we run as root (namespaces need CAP_NET_ADMIN).
pub fn require_root() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("");
    assert_eq!(euid, "0", "these end-to-end tests build network namespaces and must run as root (CI runs them as root)");
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Path of a built binary: `$SWROUTER_BIN_DIR/name`, else target/release, else target/debug.
pub fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("SWROUTER_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    for profile in ["release", "debug"] {
        let p = target.join(profile).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "binary {name} not found under {}; build it first with `cargo build --release --bins`",
        target.display()
    );
}

/// The I/O backend the end-to-end tests run swrouter with: `$SWROUTER_TEST_IO_BACKEND`, else
/// `pnet`. CI runs the suite once per backend.
pub fn io_backend() -> String {
    std::env::var("SWROUTER_TEST_IO_BACKEND").unwrap_or_else(|_| "pnet".to_string())
}

pub mod oracle;
pub mod wccplab;

/// Addresses of the standard lab.
pub mod addr {
    /// Client.
    pub const CLIENT: &str = "10.0.1.2";
    /// Router, client side.
    pub const ROUTER_CLIENT_SIDE: &str = "10.0.1.1";
    /// Router, server side.
    pub const ROUTER_SERVER_SIDE: &str = "10.0.2.1";
    /// Server.
    pub const SERVER: &str = "10.0.2.2";
}

/// client (eth0 10.0.1.2) — (eth0 10.0.1.1) swrouter (eth1 10.0.2.1) — server (eth0 10.0.2.2).
pub struct RouterLab {
    /// The namespaces and processes (dropped last).
    pub lab: Lab,
    /// Client namespace.
    pub cli: Ns,
    /// Router namespace.
    pub rtr: Ns,
    /// Server namespace.
    pub srv: Ns,
    /// The running router.
    pub router: Option<ProcHandle>,
    /// Its config file.
    pub conf_path: PathBuf,
    /// Its management socket.
    pub socket: PathBuf,
}

impl RouterLab {
    /// Builds the topology; `extra` is appended to the router config (e.g. `[[route]]` tables),
    /// `router_section` goes inside `[router]`.
    pub fn new(tag: &str, router_section: &str, extra: &str) -> Result<RouterLab> {
        Self::new_opts(tag, router_section, "", extra)
    }

    /// Like [`RouterLab::new`], with `eth1_opts` added to the router's eth1 `[[interface]]`.
    pub fn new_opts(
        tag: &str,
        router_section: &str,
        eth1_opts: &str,
        extra: &str,
    ) -> Result<RouterLab> {
        require_root();
        let mut lab = Lab::new(tag)?;
        let cli = lab.add_ns("cli")?;
        let rtr = lab.add_ns("rtr")?;
        let srv = lab.add_ns("srv")?;
        lab.link(&cli, "eth0", &rtr, "eth0")?;
        lab.link(&rtr, "eth1", &srv, "eth0")?;
        cli.add_addr("eth0", "10.0.1.2/24")?;
        cli.add_route("default", addr::ROUTER_CLIENT_SIDE)?;
        srv.add_addr("eth0", "10.0.2.2/24")?;
        srv.add_route("default", addr::ROUTER_SERVER_SIDE)?;
        let socket = lab.dir().join("swrouter.sock");
        let conf_path = lab.dir().join("router.conf");
        let conf = format!(
            "[router]\nmanagement-socket = \"{}\"\nlog-level = \"debug\"\nio-backend = \"{}\"\n{router_section}\n\n[[interface]]\nname = \"eth0\"\naddress = \"10.0.1.1/24\"\n\n[[interface]]\nname = \"eth1\"\naddress = \"10.0.2.1/24\"\n{eth1_opts}\n\n{extra}\n",
            socket.display(),
            io_backend()
        );
        std::fs::write(&conf_path, conf)?;
        Ok(RouterLab {
            lab,
            cli,
            rtr,
            srv,
            router: None,
            conf_path,
            socket,
        })
    }

    /// Starts swrouter in the router namespace and waits until it answers on its socket.
    pub fn start(&mut self) -> Result<()> {
        let exe = binary("swrouter");
        let h = self.lab.spawn(
            &self.rtr,
            &exe.to_string_lossy(),
            &["-c", &self.conf_path.to_string_lossy()],
        )?;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if self.socket.exists()
                && self
                    .swrouter(&["status", "--json", "-s", &self.socket.to_string_lossy()])
                    .is_ok()
            {
                self.router = Some(h);
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("swrouter did not come up; log:\n{}", self.lab.logs(&h))
    }

    /// Runs the swrouter binary (outside any namespace; the socket is a file) and returns stdout.
    pub fn swrouter(&self, args: &[&str]) -> Result<String> {
        let out = std::process::Command::new(binary("swrouter"))
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "swrouter {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `swrouter status --json`, parsed.
    pub fn status(&self) -> Result<serde_json::Value> {
        let s = self.swrouter(&["status", "--json", "-s", &self.socket.to_string_lossy()])?;
        serde_json::from_str(&s).context("status --json is not JSON")
    }

    /// Drop counter `reason` of `stage` (0 when absent).
    pub fn drops(&self, stage: &str, reason: &str) -> Result<u64> {
        let s = self.status()?;
        Ok(stage_of(&s, stage)?["drops"][reason].as_u64().unwrap_or(0))
    }

    /// The router's log so far.
    pub fn router_log(&self) -> String {
        self.router
            .as_ref()
            .map(|h| self.lab.logs(h))
            .unwrap_or_default()
    }

    /// Pings `dst` from `ns` `count` times; returns (replies, full output).
    pub fn ping(ns: &Ns, dst: &str, count: u32, extra: &[&str]) -> Result<(usize, String)> {
        let c = count.to_string();
        let mut args = vec!["-c", c.as_str(), "-i", "0.2", "-W", "2"];
        args.extend_from_slice(extra);
        args.push(dst);
        let out = ns.run("ping", &args)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let replies = text
            .lines()
            .filter(|l| l.contains(&format!("bytes from {dst}")))
            .count();
        Ok((replies, text))
    }
}

/// The pipeline entry of `stage` in a status document.
pub fn stage_of<'a>(status: &'a serde_json::Value, stage: &str) -> Result<&'a serde_json::Value> {
    status["pipeline"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["stage"] == stage))
        .with_context(|| format!("no stage {stage} in status"))
}

/// Sends raw Ethernet frames (hex strings) out of `ifname` inside `ns`, with Python's AF_PACKET.
pub fn inject_frames(ns: &Ns, ifname: &str, frames_hex: &[String]) -> Result<()> {
    let list = frames_hex
        .iter()
        .map(|f| format!("'{f}'"))
        .collect::<Vec<_>>()
        .join(",");
    let script = format!("import socket\ns=socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\ns.bind(('{ifname}',0))\nfor f in [{list}]:\n    s.send(bytes.fromhex(f))\n");
    ns.run_ok("python3", &["-c", &script])?;
    Ok(())
}

/// A remote IPsec peer in Python (raw ESP, IP protocol 50, no kernel IPsec): answers every ESP
/// packet with one of its own SPI (0x2000 + the sender's SPI − 0x1000), the same sequence
/// number and payload, and logs `src spi seq` per packet (after `ready`).
pub const ESP_PEER: &str = r#"
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
print('ready', flush=True)
while True:
    d, (src, _) = s.recvfrom(4096)
    esp = d[(d[0] & 15) * 4:]
    spi, seq = struct.unpack('!II', esp[:8])
    print('%s %#x %d' % (src, spi, seq), flush=True)
    s.sendto(struct.pack('!II', 0x2000 + spi - 0x1000, seq) + esp[8:], (src, 0))
"#;

/// An inside host's ESP receiver in Python: logs `spi seq` of every ESP packet to its address
/// (argv[1]), after `ready`.
pub const ESP_SINK: &str = r#"
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
s.bind((sys.argv[1], 0))
print('ready', flush=True)
while True:
    d, _ = s.recvfrom(4096)
    esp = d[(d[0] & 15) * 4:]
    print('%#x %d' % struct.unpack('!II', esp[:8]), flush=True)
"#;

/// Sends one raw ESP packet with `spi` and `seq` from `src` (an address of `ns`) to `dst`.
pub fn send_esp(ns: &Ns, src: &str, dst: &str, spi: u32, seq: u32) -> Result<()> {
    let script = format!(
        "import socket,struct\ns=socket.socket(socket.AF_INET,socket.SOCK_RAW,50)\ns.bind(({src:?},0))\ns.sendto(struct.pack('!II',{spi},{seq})+b'esp',({dst:?},0))\n"
    );
    let out = ns.run("python3", &["-c", &script])?;
    anyhow::ensure!(out.status.success(), "sending ESP: {:?}", out);
    Ok(())
}
