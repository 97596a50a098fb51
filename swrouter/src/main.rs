//! The `swrouter` command line: runs the router (the `router` crate), checks a config (`conf`),
//! talks to a running router over its management socket, and starts the demo lab (`demo`).

use anyhow::{Context, Result};
use clap::Parser;
use router::control;
use std::path::{Path, PathBuf};
use swrouter::cli::{
    Cli, ClusterCommand, Command, HaCommand, LogFormat, NatCommand, SteeringCommand, Target,
    TraceCommand, DEFAULT_CONFIG,
};

/// The management socket `target` names: `--socket`, else the `management-socket` of
/// `--config` (or of the default config file, if there is one), else the default socket.
fn socket_of(target: &Target) -> Result<PathBuf> {
    if let Some(s) = &target.socket {
        return Ok(s.clone());
    }
    let path = target
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    if target.config.is_none() && !path.exists() {
        return Ok(PathBuf::from(conf::DEFAULT_MANAGEMENT_SOCKET));
    }
    let conf = conf::load_file(&path).with_context(|| {
        format!(
            "reading the management-socket from {} (or name the socket with -s PATH)",
            path.display()
        )
    })?;
    Ok(conf.router.management_socket)
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = real_main(cli) {
        eprintln!("swrouter: {e:#}");
        std::process::exit(1);
    }
}

fn real_main(cli: Cli) -> Result<()> {
    match cli.command {
        None => {
            let path = match cli.config {
                Some(p) => p,
                None if !Path::new(DEFAULT_CONFIG).exists() => anyhow::bail!(
                    "no config file: {DEFAULT_CONFIG} does not exist; write one there (commented examples: /usr/share/doc/swrouter/examples/, conf/examples/ in the source) or give yours with -c FILE"
                ),
                None => PathBuf::from(DEFAULT_CONFIG),
            };
            let conf = conf::load_file(&path)?;
            init_logging(&conf.router.log_level.to_string(), cli.log_format);
            control::run(&path, conf)
        }
        Some(Command::Check { config }) => check(&config),
        Some(Command::Status {
            watch: true,
            interval_ms,
            count,
            target,
            ..
        }) => watch(
            &socket_of(&target)?,
            std::time::Duration::from_millis(interval_ms),
            count,
        ),
        Some(Command::Status { json, target, .. }) => {
            let reply = control::request(&socket_of(&target)?, control::REQ_STATUS)?;
            if json {
                print!("{reply}");
            } else {
                let s: router::status::Status = serde_json::from_str(&reply)
                    .context("the router's status answer is not valid JSON")?;
                print!("{}", router::status::render(&s));
            }
            Ok(())
        }
        Some(Command::Reload { target }) => {
            let reply = control::request(&socket_of(&target)?, control::REQ_RELOAD)?;
            let r: control::ReloadReply =
                serde_json::from_str(&reply).context("the router's answer is not valid JSON")?;
            println!("{}", r.message);
            if !r.ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Some(Command::Steering {
            action: SteeringCommand::Restore { device, target },
        }) => {
            let req = format!("{}{device}", control::REQ_STEERING_RESTORE);
            let reply = control::request(&socket_of(&target)?, &req)?;
            let r: control::ReloadReply =
                serde_json::from_str(&reply).context("the router's answer is not valid JSON")?;
            println!("{}", r.message);
            if !r.ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Some(Command::Nat {
            action: NatCommand::Sessions { json, target },
        }) => {
            let reply = control::request(&socket_of(&target)?, control::REQ_NAT_SESSIONS)?;
            match serde_json::from_str::<Vec<router::natd::SessionRow>>(&reply) {
                Ok(rows) if json => println!("{}", serde_json::to_string(&rows)?),
                Ok(rows) => print!("{}", router::natd::render_sessions(&rows)),
                Err(_) => {
                    let r: control::ReloadReply = serde_json::from_str(&reply)
                        .context("the router's answer is not valid JSON")?;
                    anyhow::bail!("{}", r.message);
                }
            }
            Ok(())
        }
        Some(Command::Nat {
            action:
                NatCommand::KillWorker {
                    worker,
                    stall,
                    target,
                },
        }) => {
            let req = format!(
                "{}{worker} {}",
                control::REQ_NAT_KILL,
                if stall { "stall" } else { "panic" }
            );
            let reply = control::request(&socket_of(&target)?, &req)?;
            let r: control::ReloadReply = serde_json::from_str(&reply)?;
            println!("{}", r.message);
            if !r.ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Some(Command::Trace { action }) => trace(action),
        Some(Command::Ha {
            action: HaCommand::Status { json, target },
        }) => {
            let reply = control::request(&socket_of(&target)?, control::REQ_HA_STATUS)?;
            match serde_json::from_str::<router::ha_status::HaStatus>(&reply) {
                Ok(h) if json => println!("{}", serde_json::to_string(&h)?),
                Ok(h) => {
                    let mut o = String::new();
                    router::ha_status::render(&mut o, &h);
                    print!("{}", o.trim_start());
                }
                Err(_) => {
                    let r: control::ReloadReply = serde_json::from_str(&reply)
                        .context("the router's answer is not valid JSON")?;
                    anyhow::bail!("{}", r.message);
                }
            }
            Ok(())
        }
        Some(Command::Cluster {
            action: ClusterCommand::Status { json, target },
        }) => {
            let reply = control::request(&socket_of(&target)?, control::REQ_CLUSTER_STATUS)?;
            match serde_json::from_str::<control::cluster::ClusterStatusReply>(&reply) {
                Ok(c) if json => println!("{}", serde_json::to_string(&c)?),
                Ok(c) => print!("{}", control::cluster::render(&c)),
                Err(_) => {
                    let r: control::ReloadReply = serde_json::from_str(&reply)
                        .context("the router's answer is not valid JSON")?;
                    anyhow::bail!("{}", r.message);
                }
            }
            Ok(())
        }
        Some(Command::Ha {
            action: HaCommand::Switchover { interface, target },
        }) => {
            let req = match interface {
                Some(i) => format!("{} {i}", control::REQ_HA_SWITCHOVER),
                None => control::REQ_HA_SWITCHOVER.to_string(),
            };
            let reply = control::request(&socket_of(&target)?, &req)?;
            let r: control::ReloadReply =
                serde_json::from_str(&reply).context("the router's answer is not valid JSON")?;
            if !r.ok {
                anyhow::bail!("{}", r.message);
            }
            println!("{}", r.message);
            Ok(())
        }
        Some(Command::Demo { seconds }) => {
            init_logging("warn", cli.log_format);
            demo::run(seconds)
        }
    }
}

/// `swrouter status --watch`: a frame of rates every `interval` (the screen cleared first on a
/// terminal; frames separated by a blank line otherwise), until Ctrl-C or `count` frames.
fn watch(socket: &Path, interval: std::time::Duration, count: Option<u64>) -> Result<()> {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stdout().is_terminal();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut tick = tokio::time::interval(interval);
        let mut prev: Option<(router::status::Status, std::time::Instant)> = None;
        let mut shown = 0u64;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = tick.tick() => {}
            }
            let reply = control::request(socket, control::REQ_STATUS)?;
            let s: router::status::Status = serde_json::from_str(&reply)
                .context("the router's status answer is not valid JSON")?;
            let now = std::time::Instant::now();
            let secs = prev
                .as_ref()
                .map_or(0.0, |(_, t)| now.duration_since(*t).as_secs_f64());
            let frame = router::status_live::render(prev.as_ref().map(|(p, _)| p), &s, secs);
            let mut out = std::io::stdout().lock();
            if tty {
                // Home and clear: the frame replaces the previous one.
                write!(out, "\x1b[H\x1b[2J")?;
            } else if shown > 0 {
                writeln!(out)?;
            }
            write!(out, "{frame}")?;
            out.flush()?;
            prev = Some((s, now));
            shown += 1;
            if count.is_some_and(|c| shown >= c) {
                break;
            }
        }
        Ok(())
    })
}

/// `swrouter trace add|show|clear`.
fn trace(action: TraceCommand) -> Result<()> {
    let simple = |target: &Target, req: &str| -> Result<()> {
        let reply = control::request(&socket_of(target)?, req)?;
        let r: control::ReloadReply =
            serde_json::from_str(&reply).context("the router's answer is not valid JSON")?;
        if !r.ok {
            anyhow::bail!("{}", r.message);
        }
        println!("{}", r.message);
        Ok(())
    };
    match action {
        TraceCommand::Add {
            count,
            filter,
            target,
        } => {
            let req = format!("{} {count} {}", control::REQ_TRACE_ADD, filter.join(" "));
            simple(&target, req.trim_end())
        }
        TraceCommand::Clear { target } => simple(&target, control::REQ_TRACE_CLEAR),
        TraceCommand::Show { json, target } => {
            let reply = control::request(&socket_of(&target)?, control::REQ_TRACE_SHOW)?;
            let show: router::pipeline::trace::TraceShow = match serde_json::from_str(&reply) {
                Ok(s) => s,
                Err(_) => {
                    let r: control::ReloadReply = serde_json::from_str(&reply)
                        .context("the router's answer is not valid JSON")?;
                    anyhow::bail!("{}", r.message);
                }
            };
            if json {
                println!("{}", serde_json::to_string(&show)?);
            } else {
                print!("{}", router::pipeline::trace::render(&show));
            }
            Ok(())
        }
    }
}

fn check(path: &Path) -> Result<()> {
    let conf = conf::load_file(path)?;
    println!(
        "# {}: valid; effective configuration follows",
        path.display()
    );
    print!("{}", conf.to_toml());
    Ok(())
}
