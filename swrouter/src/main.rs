//! The `swrouter` command line: runs the router (the `router` crate), checks a config (`conf`),
//! talks to a running router over its management socket, and starts the demo lab (`demo`).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use router::control;
use std::path::{Path, PathBuf};

/// Default config file.
const DEFAULT_CONFIG: &str = "/etc/swrouter/router.conf";

/// swrouter: a userspace IPv4 router with WCCPv2 cache redirection.
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Config file to run with.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and print the effective config (defaults filled in).
    Check {
        /// Config file.
        #[arg(short = 'c', long = "config", value_name = "FILE")]
        config: PathBuf,
    },
    /// Show the running router's interfaces, routes, ARP table and counters.
    Status {
        /// Print JSON instead of tables.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Live view: rates (packets/s, bits/s) per interface, WCCP service and cache, and
        /// steering service and device, redrawn every interval until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// Time between two frames of `--watch`, in milliseconds.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60000), requires = "watch")]
        interval_ms: u64,
        /// Stop after this many frames of `--watch` (default: until Ctrl-C).
        #[arg(long, requires = "watch")]
        count: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Ask the running router to re-read its config file (routes), like SIGHUP.
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// Service-chain steering commands.
    Steering {
        #[command(subcommand)]
        action: SteeringCommand,
    },
    /// NAT commands.
    Nat {
        #[command(subcommand)]
        action: NatCommand,
    },
    /// Build a lab of network namespaces (client, server, two WCCP caches), run the router in it
    /// and show traffic redirected to the caches, one cache crashing and the traffic moving.
    Demo {
        /// Length of the steady-traffic phase (fetches through both caches), in seconds.
        #[arg(long, default_value_t = 12)]
        seconds: u64,
    },
}

/// `swrouter steering ...`.
#[derive(Subcommand)]
enum SteeringCommand {
    /// Put a recovered device back in service (pools with `restore = "manual"`).
    Restore {
        /// The device name, as in `[[steering.device]]`.
        device: String,
        #[command(flatten)]
        target: Target,
    },
}

/// `swrouter nat ...`.
#[derive(Subcommand)]
enum NatCommand {
    /// List the NAT sessions (like `conntrack -L`): protocol, TCP state, inside, outside and
    /// remote endpoints, idle time, worker and VID.
    Sessions {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Test hook: make a worker panic or stall (the router must run with SWROUTER_TEST_HOOKS=1).
    #[command(hide = true)]
    KillWorker {
        /// The worker.
        worker: u16,
        /// Stall (stop looping) instead of panicking.
        #[arg(long)]
        stall: bool,
        #[command(flatten)]
        target: Target,
    },
}

/// Which running router to talk to.
#[derive(clap::Args)]
struct Target {
    /// Management socket of the router.
    #[arg(short = 's', long = "socket", value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Read the management socket path from this config file.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl Target {
    fn socket(&self) -> Result<PathBuf> {
        if let Some(s) = &self.socket {
            return Ok(s.clone());
        }
        let path = self
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        if self.config.is_none() && !path.exists() {
            return Ok(PathBuf::from("/run/swrouter/swrouter.sock"));
        }
        let conf = conf::load_file(&path)?;
        Ok(conf.router.management_socket)
    }
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
            let path = cli.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
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
            &target.socket()?,
            std::time::Duration::from_millis(interval_ms),
            count,
        ),
        Some(Command::Status { json, target, .. }) => {
            let reply = control::request(&target.socket()?, control::REQ_STATUS)?;
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
            let reply = control::request(&target.socket()?, control::REQ_RELOAD)?;
            let r: control::ReloadReply = serde_json::from_str(&reply)?;
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
            let reply = control::request(&target.socket()?, &req)?;
            let r: control::ReloadReply = serde_json::from_str(&reply)?;
            println!("{}", r.message);
            if !r.ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Some(Command::Nat {
            action: NatCommand::Sessions { json, target },
        }) => {
            let reply = control::request(&target.socket()?, control::REQ_NAT_SESSIONS)?;
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
            let reply = control::request(&target.socket()?, &req)?;
            let r: control::ReloadReply = serde_json::from_str(&reply)?;
            println!("{}", r.message);
            if !r.ok {
                std::process::exit(1);
            }
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

fn check(path: &Path) -> Result<()> {
    let conf = conf::load_file(path)?;
    println!(
        "# {}: valid; effective configuration follows",
        path.display()
    );
    print!("{}", conf.to_toml());
    Ok(())
}
