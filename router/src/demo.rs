//! `swrouter demo`: a lab of network namespaces (client, router, server) with swrouter in the
//! middle, real traffic (ping and HTTP downloads with curl from a Python web server), and a live
//! view of the router's counters. Everything is torn down on exit or Ctrl-C.

use anyhow::{bail, Context, Result};
use netlab::{Lab, ProcHandle};
use std::io::Write;
use std::time::{Duration, Instant};

/// The config the demo router runs with.
fn router_conf(socket: &std::path::Path) -> String {
    format!(
        r#"# swrouter demo lab: client 10.0.1.2 — [eth0 10.0.1.1 | swrouter | eth1 10.0.2.1] — server 10.0.2.2
[router]
management-socket = "{}"
log-level = "info"

[[interface]]
name = "eth0"
address = "10.0.1.1/24"

[[interface]]
name = "eth1"
address = "10.0.2.1/24"
"#,
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

/// Runs the demo for `seconds` (or until Ctrl-C).
pub fn run(seconds: u64) -> Result<()> {
    for (p, pkg) in [
        ("ip", "iproute2"),
        ("ping", "iputils-ping"),
        ("curl", "curl"),
        ("python3", "python3"),
    ] {
        need(p, pkg)?;
    }
    let exe = std::env::current_exe().context("locating the swrouter binary")?;
    let mut lab = Lab::new("demo")?;
    let cli = lab.add_ns("cli")?;
    let rtr = lab.add_ns("rtr")?;
    let srv = lab.add_ns("srv")?;
    lab.link(&cli, "eth0", &rtr, "eth0")?;
    lab.link(&rtr, "eth1", &srv, "eth0")?;
    cli.add_addr("eth0", "10.0.1.2/24")?;
    cli.add_route("default", "10.0.1.1")?;
    srv.add_addr("eth0", "10.0.2.2/24")?;
    srv.add_route("default", "10.0.2.1")?;

    let dir = lab.dir().to_path_buf();
    let socket = dir.join("swrouter.sock");
    let conf_path = dir.join("router.conf");
    std::fs::write(&conf_path, router_conf(&socket))?;
    let www = dir.join("www");
    std::fs::create_dir_all(&www)?;
    // 2 MiB of varied bytes so every download is a real multi-segment TCP transfer.
    let blob: Vec<u8> = (0..2u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(www.join("blob"), &blob)?;

    println!(
        "swrouter demo: lab {} (namespaces {}, {}, {})",
        lab.prefix(),
        cli.name,
        rtr.name,
        srv.name
    );
    println!("  client 10.0.1.2 --eth0-- [10.0.1.1 swrouter 10.0.2.1] --eth1-- server 10.0.2.2\n");
    let exe_s = exe.to_string_lossy().to_string();
    let conf_s = conf_path.to_string_lossy().to_string();
    let router = lab.spawn(&rtr, &exe_s, &["-c", &conf_s])?;
    wait_for_socket(&lab, &router, &socket)?;
    let www_s = www.to_string_lossy().to_string();
    let _web = lab.spawn(
        &srv,
        "python3",
        &[
            "-m",
            "http.server",
            "8080",
            "--bind",
            "10.0.2.2",
            "--directory",
            &www_s,
        ],
    )?;
    let ping = lab.spawn(&cli, "ping", &["-i", "0.2", "-W", "1", "10.0.2.2"])?;
    let fetch_loop = "while true; do curl -s -o /dev/null --max-time 5 -w 'download %{http_code} %{size_download} bytes in %{time_total}s\\n' http://10.0.2.2:8080/blob; sleep 0.5; done";
    let curl = lab.spawn(&cli, "sh", &["-c", fetch_loop])?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let interrupted = rt.block_on(async {
        let deadline = tokio::time::sleep(Duration::from_secs(seconds));
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = &mut deadline => return false,
                _ = tokio::signal::ctrl_c() => return true,
                _ = tick.tick() => show(&lab, &socket, &ping, &curl),
            }
        }
    });
    if interrupted {
        println!("\ninterrupted: tearing the lab down");
    }
    let pings = lab
        .logs(&ping)
        .lines()
        .filter(|l| l.contains("bytes from 10.0.2.2"))
        .count();
    let downloads = lab
        .logs(&curl)
        .lines()
        .filter(|l| l.starts_with(&format!("download 200 {}", blob.len())))
        .count();
    let _ = lab.stop(&router, Duration::from_secs(5));
    println!(
        "\nsummary: {pings} ping replies and {downloads} complete 2 MiB downloads through swrouter"
    );
    lab.teardown();
    println!("lab removed");
    if pings == 0 || downloads == 0 {
        bail!(
            "no traffic made it through the router; router log:\n{}",
            lab.logs(&router)
        );
    }
    Ok(())
}

fn wait_for_socket(lab: &Lab, router: &ProcHandle, socket: &std::path::Path) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if socket.exists() && crate::control::request(socket, crate::control::REQ_STATUS).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "swrouter did not come up within 10 s; its log:\n{}",
        lab.logs(router)
    )
}

fn show(lab: &Lab, socket: &std::path::Path, ping: &ProcHandle, curl: &ProcHandle) {
    let Ok(reply) = crate::control::request(socket, crate::control::REQ_STATUS) else {
        println!("(router not answering)");
        return;
    };
    let Ok(s) = serde_json::from_str::<crate::status::Status>(&reply) else {
        return;
    };
    let mut out = String::new();
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        out.push_str("\x1b[2J\x1b[H");
    }
    out.push_str(&format!("swrouter demo — up {}s\n", s.router.uptime_secs));
    for i in &s.interfaces {
        out.push_str(&format!(
            "  {:<5} {:<14} rx {:>7} pkts {:>10} B   tx {:>7} pkts {:>10} B\n",
            i.name, i.address, i.rx_packets, i.rx_bytes, i.tx_packets, i.tx_bytes
        ));
    }
    out.push_str("  pipeline:");
    for st in &s.pipeline {
        out.push_str(&format!(" {}={}", st.stage, st.packets_in));
    }
    out.push('\n');
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
        "  drops: {}\n",
        if drops.is_empty() {
            "none".to_string()
        } else {
            drops.join(" ")
        }
    ));
    for a in &s.arp {
        out.push_str(&format!(
            "  arp {} is-at {} on {}\n",
            a.address, a.mac, a.interface
        ));
    }
    if let Some(l) = lab
        .logs(ping)
        .lines()
        .rev()
        .find(|l| l.contains("bytes from"))
    {
        out.push_str(&format!("  ping: {l}\n"));
    }
    if let Some(l) = lab
        .logs(curl)
        .lines()
        .rev()
        .find(|l| l.starts_with("download"))
    {
        out.push_str(&format!("  curl: {l}\n"));
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
}
