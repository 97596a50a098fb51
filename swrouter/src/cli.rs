//! The command line's definition (clap): the `swrouter` binary parses it, and `docgen` turns
//! the same definition into the man pages and shell completions the Debian package ships.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Config file read when `-c` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/swrouter/router.conf";

/// The top-level help of both binaries: the first line names the binary and says what it is.
pub const HELP_TEMPLATE: &str =
    "{name}: {about-with-newline}\n{usage-heading} {usage}\n\n{all-args}{after-help}";

/// swrouter: a userspace IPv4 router with WCCPv2 cache redirection.
#[derive(Parser, Debug)]
#[command(
    name = "swrouter",
    version,
    about = "a userspace IPv4 router with WCCPv2 cache redirection and service-chain steering",
    long_about = "a userspace IPv4 router with WCCPv2 cache redirection and service-chain \
steering.\n\nWithout a command it runs the router: it takes over the interfaces named in its \
config file (default /etc/swrouter/router.conf) and is their IP stack until SIGINT or SIGTERM; \
SIGHUP re-reads the file. The other commands check a config file or talk to a running router \
over its management socket (default /run/swrouter/swrouter.sock).",
    after_help = "Config file keys: /usr/share/doc/swrouter/README.conf.md (conf/README.md in the \
source). Examples: /usr/share/doc/swrouter/examples/.",
    help_template = HELP_TEMPLATE,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Config file to run with [default: /etc/swrouter/router.conf].
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// What to do instead of running the router.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `--log-format`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// swrouter's commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate a config file and print the effective config (defaults filled in).
    Check {
        /// Config file to check.
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
        /// Time between two frames of `--watch`, in milliseconds (100 to 60000).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60000), requires = "watch")]
        interval_ms: u64,
        /// Stop after this many frames of `--watch` (default: until Ctrl-C).
        #[arg(long, requires = "watch")]
        count: Option<u64>,
        /// Which router to ask.
        #[command(flatten)]
        target: Target,
    },
    /// Ask the running router to re-read its config file, like SIGHUP; prints what it did.
    Reload {
        /// Which router to ask.
        #[command(flatten)]
        target: Target,
    },
    /// Service-chain steering commands.
    Steering {
        /// The steering command.
        #[command(subcommand)]
        action: SteeringCommand,
    },
    /// NAT commands: list the sessions.
    Nat {
        /// The NAT command.
        #[command(subcommand)]
        action: NatCommand,
    },
    /// Packet trace: record what the pipeline did with the next received packets (like VPP's
    /// `trace add`).
    Trace {
        /// The trace command.
        #[command(subcommand)]
        action: TraceCommand,
    },
    /// High availability (VRRPv3): the virtual routers' state, and planned switchover.
    Ha {
        /// The HA command.
        #[command(subcommand)]
        action: HaCommand,
    },
    /// Router cluster (`[cluster]`): membership, the id table, etcd and the sync mesh.
    Cluster {
        /// The cluster command.
        #[command(subcommand)]
        action: ClusterCommand,
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
#[derive(Subcommand, Debug)]
pub enum SteeringCommand {
    /// Put a recovered device back in service (pools with `restore = "manual"`).
    Restore {
        /// The device name, as in `[[steering.device]]`.
        device: String,
        /// Which router to ask.
        #[command(flatten)]
        target: Target,
    },
}

/// `swrouter ha ...`.
#[derive(Subcommand, Debug)]
pub enum HaCommand {
    /// Show each VRRP virtual router: state, current master, priority, advertisement
    /// interval, counters, and the last transition with its cause.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Which router to ask.
        #[command(flatten)]
        target: Target,
    },
    /// Planned switchover: every virtual router this router is master of (or only those on
    /// INTERFACE) sends priority 0 and becomes backup, so a backup takes over at once; this
    /// router does not preempt back until it is master again or restarts.
    Switchover {
        /// Only the virtual routers on this interface.
        interface: Option<String>,
        /// Which router to ask.
        #[command(flatten)]
        target: Target,
    },
}

/// `swrouter cluster ...`.
#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show this node's view of the cluster: the epoch and who owns each id, the members
    /// (heard, ids), etcd (reachable, lease, reallocations refused), the sync mesh per peer,
    /// and frames to the cluster MAC by fate.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Which router to ask.
        #[command(flatten)]
        target: Target,
    },
}

/// `swrouter trace ...`.
#[derive(Subcommand, Debug)]
pub enum TraceCommand {
    /// Mark the next N received packets that match FILTER; each is recorded through every
    /// stage it crosses.
    #[command(
        after_help = "FILTER is a small tcpdump subset, terms joined with `and`, each optionally preceded by `not`:
  [src|dst] [host] ADDRESS    [src|dst] net ADDRESS/LEN    [src|dst] port N
  tcp | udp | icmp | gre | proto N    interface NAME (receiving interface)

Examples:
  swrouter trace add 10
  swrouter trace add 10 tcp and port 80
  swrouter trace add 5 src 10.0.1.2 and dst net 10.0.2.0/24 and interface eth0

A new `trace add` replaces an armed one; records stay until `trace clear`. Each worker keeps its newest 1000 records."
    )]
    Add {
        /// How many packets to mark (1 to 1000).
        count: u32,
        /// Which packets: a filter expression (default: every received packet).
        #[arg(trailing_var_arg = true, value_name = "FILTER")]
        filter: Vec<String>,
        /// Which router to ask.
        #[command(flatten)]
        target: Target,
    },
    /// Print the traced packets, oldest first: per packet the stages it crossed and each
    /// stage's verdict, and the WCCP redirect decision (services tried, redirect-list rule,
    /// bucket or mask value, cache, method, affinity, or why it was not redirected).
    Show {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Which router to ask.
        #[command(flatten)]
        target: Target,
    },
    /// Disarm the trace and forget its records.
    Clear {
        /// Which router to ask.
        #[command(flatten)]
        target: Target,
    },
}

/// `swrouter nat ...`.
#[derive(Subcommand, Debug)]
pub enum NatCommand {
    /// List the NAT sessions (like `conntrack -L`): protocol, TCP state, inside, outside and
    /// remote endpoints, idle time, worker and VID.
    Sessions {
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
        /// Which router to ask.
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
        /// Which router to ask.
        #[command(flatten)]
        target: Target,
    },
}

/// Which running router to talk to: `--socket`, else the `management-socket` of `--config`,
/// else that of /etc/swrouter/router.conf if it exists, else the default socket.
#[derive(clap::Args, Debug)]
pub struct Target {
    /// Management socket of the router [default: the config's management-socket,
    /// /run/swrouter/swrouter.sock].
    #[arg(short = 's', long = "socket", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Read the management socket path from this config file [default:
    /// /etc/swrouter/router.conf if it exists].
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_help_names_swrouter_and_what_it_does() {
        let help = Cli::command().render_help().to_string();
        assert!(
            help.starts_with("swrouter: a userspace IPv4 router with WCCPv2"),
            "{help}"
        );
        assert!(help.contains("Usage: swrouter"), "{help}");
        assert_eq!(
            DEFAULT_CONFIG, "/etc/swrouter/router.conf",
            "the help text and the package's conffile name this path"
        );
        assert_eq!(
            conf::DEFAULT_MANAGEMENT_SOCKET,
            "/run/swrouter/swrouter.sock",
            "the help text and the unit's RuntimeDirectory name this path"
        );
    }
}
