//! The command line: every flag, and how the flags override `cache.conf`.
//!
//! Every setting has one default, in `conf::cache::CacheConf::default()`; a flag is an `Option`
//! (or a list that is empty when not given), so "given on the command line" is visible and the
//! merge in [`Args::settings`] is key by key: the file (or the defaults) first, then each flag
//! that was given.

use anyhow::Result;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Parser;
use conf::cache::{CacheConf, CacheServiceConf, ReturnCopy, ReturnRewrite};
use conf::{Ipv4Network, LogLevel};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use wccp::engine::{AssignmentMethod, ForwardingMethod, ReturnMethod};
use wccp::wire::ServiceInfo;

/// swcache: a WCCPv2 cache agent that joins routers and terminates their GRE into a TUN device.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "swcache",
    version,
    about = "a WCCPv2 cache agent: joins routers, terminates their GRE into a TUN device for a local transparent proxy, returns bypassed packets",
    long_about = "a WCCPv2 cache agent: joins routers over WCCP (UDP 2048), elects the designated \
cache and assigns the buckets, terminates the routers' GRE into a TUN device where a local \
transparent proxy (Squid) intercepts the packets, and returns bypassed packets to the router.\n\n\
Settings come from flags, from a cache.conf given with -c, or both (flags override the file key \
by key). It runs until SIGINT or SIGTERM.",
    after_help = "cache.conf keys: /usr/share/doc/swrouter/README.conf.md (conf/README.md in the \
source); example: /usr/share/doc/swrouter/examples/cache.conf.",
    help_template = "{name}: {about-with-newline}\n{usage-heading} {usage}\n\n{all-args}{after-help}"
)]
pub struct Args {
    /// Configuration file (cache.conf); flags given as well override its keys.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Validate the configuration (file and flags), print the effective configuration and exit.
    #[arg(long)]
    pub check: bool,
    /// This cache's address (Web-Cache Identity; WCCP is sent from address:2048).
    #[arg(long, value_name = "IPV4", required_unless_present_any = ["gre_only", "config"])]
    pub address: Option<Ipv4Addr>,
    /// A router to join (repeatable).
    #[arg(
        long = "router",
        value_name = "IPV4",
        required_unless_present_any = ["gre_only", "config", "multicast_group"]
    )]
    pub routers: Vec<Ipv4Addr>,
    /// Multicast mode: send HERE_I_AM and REDIRECT_ASSIGN to this service-group address
    /// (TTL 15) instead of to each router, and learn the routers from their I_SEE_YOUs to it.
    #[arg(long = "multicast-group", value_name = "IPV4")]
    pub multicast_group: Option<Ipv4Addr>,
    /// A service group: `0` (standard web-cache) or `ID:tcp|udp:PORT[,PORT…][:FIELD+…]`
    /// (dynamic, destination ports, hashed on the FIELDs — src-ip, dst-ip, src-port, dst-port —
    /// by default on the destination address). Repeatable; default 0.
    #[arg(long = "service", value_name = "SPEC", value_parser = conf::cache::parse_service_spec)]
    pub services: Vec<ServiceInfo>,
    /// MD5 password shared with the routers (all services).
    #[arg(long)]
    pub password: Option<String>,
    /// Assignment weight (default 10000).
    #[arg(long)]
    pub weight: Option<u16>,
    /// Forwarding method offered (`gre` or `l2`; repeatable, most preferred first; default gre).
    #[arg(long = "forwarding", value_name = "METHOD", value_parser = forwarding_method())]
    pub forwarding: Vec<ForwardingMethod>,
    /// Packet return method offered (`gre` or `l2`; repeatable, most preferred first; default
    /// gre).
    #[arg(long = "return", value_name = "METHOD", value_parser = return_method())]
    pub packet_return: Vec<ReturnMethod>,
    /// Assignment method offered (`hash` or `mask`; repeatable, most preferred first; default
    /// hash).
    #[arg(long = "assignment", value_name = "METHOD", value_parser = assignment_method())]
    pub assignment: Vec<AssignmentMethod>,
    /// TRANSMIT_T asked of the routers in ms (500..=60000; default 10000, not negotiated):
    /// HERE_I_AMs this often, and routers remove a silent cache after 3 × this × the
    /// timeout scale. A router that does not take it offers the default, which is then used.
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u16).range(500..=60000))]
    pub transmit_timer_ms: Option<u16>,
    /// TIMEOUT_SCALE asked of the routers (1..=5; default 1): removal after 3 × scale ×
    /// TRANSMIT_T of silence.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub timeout_scale: Option<u8>,
    /// RA_TIMER_SCALE asked of the routers (1..=5; default 1): the designated cache assigns
    /// 1.5 × scale × TRANSMIT_T after a membership change.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=5))]
    pub ra_timer_scale: Option<u8>,
    /// TUN device the decapsulated packets are written to (default wccp0).
    #[arg(long)]
    pub tun: Option<String>,
    /// Only terminate GRE (for a cache that speaks WCCP itself); no WCCP engine.
    #[arg(long)]
    pub gre_only: bool,
    /// Unix socket answering `status` with JSON.
    #[arg(long = "socket", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Log level or tracing directives (default info; overridden by RUST_LOG).
    #[arg(long)]
    pub log_level: Option<String>,
    /// Destination prefix (`A.B.C.D/LEN`) whose redirected packets are not proxied but returned
    /// to the router that redirected them, by the return method negotiated with it (repeatable).
    #[arg(long = "bypass", value_name = "PREFIX", value_parser = parse_prefix)]
    pub bypass: Vec<Ipv4Network>,
    /// Return redirected packets for PREFIX to the router with their destination rewritten to
    /// ADDRESS, e.g. an alternate origin: `10.0.2.3/32=10.0.2.9` (repeatable; first match wins).
    #[arg(long = "return-rewrite", value_name = "PREFIX=ADDRESS", value_parser = |s: &str| s.parse::<ReturnRewrite>())]
    pub return_rewrite: Vec<ReturnRewrite>,
    /// Copy every returned packet to a pcap file (`pcap:/abs/file.pcap`, raw IPv4) or a TAP
    /// device (`tap:NAME`, created) for an analyser.
    #[arg(long = "return-copy", value_name = "pcap:FILE|tap:NAME", value_parser = |s: &str| s.parse::<ReturnCopy>())]
    pub return_copy: Option<ReturnCopy>,
}

/// What swcache runs with: the file (or the defaults) with the flags applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Every setting the file can hold.
    pub conf: CacheConf,
    /// The tracing filter: `--log-level` as given (it may hold directives), else the level.
    pub log_filter: String,
}

impl Args {
    /// Loads `--config` (if given) and applies every flag given on top of it. A file error is
    /// `file:line:col: message`.
    pub fn settings(&self) -> Result<Settings> {
        let conf = match &self.config {
            Some(path) => conf::cache::load_file(path)?,
            None => CacheConf::default(),
        };
        Ok(self.apply(conf))
    }

    /// `conf` with every flag that was given applied: a flag replaces its key (a repeatable
    /// flag, the whole list); `--password` applies to every service, `--gre-only` turns that
    /// mode on.
    pub fn apply(&self, mut conf: CacheConf) -> Settings {
        if let Some(a) = self.address {
            conf.address = Some(a);
        }
        if !self.routers.is_empty() {
            conf.routers.clone_from(&self.routers);
        }
        if let Some(g) = self.multicast_group {
            conf.multicast_group = Some(g);
        }
        if !self.services.is_empty() {
            conf.services = self
                .services
                .iter()
                .map(|s| CacheServiceConf {
                    service: s.clone(),
                    password: None,
                })
                .collect();
        }
        if let Some(p) = &self.password {
            for s in &mut conf.services {
                s.password = Some(p.clone());
            }
        }
        if let Some(w) = self.weight {
            conf.weight = w;
        }
        if !self.forwarding.is_empty() {
            conf.forwarding.clone_from(&self.forwarding);
        }
        if !self.packet_return.is_empty() {
            conf.packet_return.clone_from(&self.packet_return);
        }
        if !self.assignment.is_empty() {
            conf.assignment.clone_from(&self.assignment);
        }
        if let Some(t) = self.transmit_timer_ms {
            conf.transmit_timer_ms = t;
        }
        if let Some(s) = self.timeout_scale {
            conf.timeout_scale = s;
        }
        if let Some(s) = self.ra_timer_scale {
            conf.ra_timer_scale = s;
        }
        if let Some(t) = &self.tun {
            conf.tun.clone_from(t);
        }
        conf.gre_only |= self.gre_only;
        if let Some(s) = &self.socket {
            conf.socket = Some(s.clone());
        }
        if !self.bypass.is_empty() {
            conf.bypass.clone_from(&self.bypass);
        }
        if !self.return_rewrite.is_empty() {
            conf.return_rewrite.clone_from(&self.return_rewrite);
        }
        if let Some(c) = &self.return_copy {
            conf.return_copy = Some(c.clone());
        }
        // A plain level also becomes the effective config's; directives only reach the filter.
        let log_filter = match &self.log_level {
            Some(l) => {
                if let Ok(level) = l.parse::<LogLevel>() {
                    conf.log_level = level;
                }
                l.clone()
            }
            None => conf.log_level.as_str().to_string(),
        };
        Settings { conf, log_filter }
    }
}

/// `--forwarding`: one of wccp's method names.
fn forwarding_method() -> impl TypedValueParser<Value = ForwardingMethod> {
    // The possible values are exactly the names, so the lookup always finds one.
    PossibleValuesParser::new(ForwardingMethod::ALL.map(ForwardingMethod::as_str))
        .map(|s| ForwardingMethod::from_name(&s).unwrap_or(ForwardingMethod::Gre))
}

/// `--return`: one of wccp's method names.
fn return_method() -> impl TypedValueParser<Value = ReturnMethod> {
    PossibleValuesParser::new(ReturnMethod::ALL.map(ReturnMethod::as_str))
        .map(|s| ReturnMethod::from_name(&s).unwrap_or(ReturnMethod::Gre))
}

/// `--assignment`: one of wccp's method names.
fn assignment_method() -> impl TypedValueParser<Value = AssignmentMethod> {
    PossibleValuesParser::new(AssignmentMethod::ALL.map(AssignmentMethod::as_str))
        .map(|s| AssignmentMethod::from_name(&s).unwrap_or(AssignmentMethod::Hash))
}

/// Parses a `--bypass` prefix (`A.B.C.D/LEN`, or a bare address for /32); host bits are
/// cleared, so `10.0.2.77/24` means `10.0.2.0/24`.
pub fn parse_prefix(s: &str) -> Result<Ipv4Network, String> {
    let (a, l) = s.split_once('/').unwrap_or((s, "32"));
    let addr: Ipv4Addr = a
        .parse()
        .map_err(|_| format!("prefix {s:?}: bad IPv4 address"))?;
    let len: u8 = l
        .parse()
        .ok()
        .filter(|&l| l <= 32)
        .ok_or_else(|| format!("prefix {s:?}: the length must be 0–32"))?;
    Ipv4Network::new(addr, len)
        .and_then(|n| Ipv4Network::new(n.network(), len))
        .map_err(|e| format!("prefix {s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::CommandFactory;
    use wccp::wire::ServiceFlags;

    fn args(flags: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("swcache").chain(flags.iter().copied())).unwrap()
    }

    #[test]
    fn the_command_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn the_help_names_swcache_and_what_it_does() {
        let help = Args::command().render_help().to_string();
        assert!(help.starts_with("swcache: a WCCPv2 cache agent"), "{help}");
        assert!(help.contains("Usage: swcache"), "{help}");
        assert!(!help.contains("swrouter:"), "{help}");
        let long = Args::command().render_long_help().to_string();
        assert!(long.starts_with("swcache: a WCCPv2 cache agent"), "{long}");
        assert!(long.contains("cache.conf"), "{long}");
    }

    #[test]
    fn flags_alone_give_the_old_defaults() {
        let s = args(&["--address", "10.0.3.2", "--router", "10.0.3.1"])
            .settings()
            .unwrap();
        assert_eq!(
            s.conf,
            CacheConf {
                address: Some(Ipv4Addr::new(10, 0, 3, 2)),
                routers: vec![Ipv4Addr::new(10, 0, 3, 1)],
                ..CacheConf::default()
            }
        );
        assert_eq!(s.log_filter, "info");
        let e = s.conf.engine_config().unwrap().unwrap();
        assert_eq!(e.weight, 10000);
        assert_eq!(e.forwarding, vec![ForwardingMethod::Gre]);
        assert_eq!(e.packet_return, vec![ReturnMethod::Gre]);
        assert_eq!(e.assignment, vec![AssignmentMethod::Hash]);
        assert_eq!(e.services.len(), 1);
        assert_eq!(e.services[0].service, ServiceInfo::standard(0));
        assert_eq!(s.conf.tun, "wccp0");
    }

    #[test]
    fn timer_flags_reach_the_engine_and_are_range_checked() {
        let base = ["--address", "10.0.3.2", "--router", "10.0.3.1"];
        let with = |extra: &[&str]| {
            let flags: Vec<&str> = std::iter::once("swcache")
                .chain(base.iter().copied())
                .chain(extra.iter().copied())
                .collect();
            Args::try_parse_from(flags)
        };
        let a = with(&[
            "--transmit-timer-ms",
            "500",
            "--timeout-scale",
            "2",
            "--ra-timer-scale",
            "3",
        ])
        .unwrap();
        let e = a.settings().unwrap().conf.engine_config().unwrap().unwrap();
        assert_eq!(e.timers.transmit_t, std::time::Duration::from_millis(500));
        assert_eq!((e.timers.timeout_scale, e.timers.ra_timer_scale), (2, 3));
        let d = with(&[]).unwrap().settings().unwrap().conf;
        let e = d.engine_config().unwrap().unwrap();
        assert!(e.timers.is_default());
        for bad in [
            ["--transmit-timer-ms", "499"],
            ["--transmit-timer-ms", "60001"],
            ["--timeout-scale", "0"],
            ["--ra-timer-scale", "6"],
        ] {
            assert!(with(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn address_and_router_are_required_without_a_file_or_gre_only() {
        let parse = |flags: &[&str]| {
            Args::try_parse_from(std::iter::once("swcache").chain(flags.iter().copied()))
        };
        assert!(parse(&[]).is_err());
        assert!(parse(&["--address", "10.0.3.2"]).is_err());
        assert!(parse(&["--gre-only"]).is_ok());
        assert!(parse(&["-c", "cache.conf"]).is_ok());
        assert!(parse(&["--config", "cache.conf"]).is_ok());
    }

    #[test]
    fn every_flag_is_read() {
        let a = args(&[
            "--address",
            "10.0.3.2",
            "--router",
            "10.0.3.1",
            "--router",
            "10.0.4.1",
            "--service",
            "0",
            "--service",
            "90:tcp:80,8080:src-ip",
            "--password",
            "pw",
            "--weight",
            "7",
            "--forwarding",
            "l2",
            "--forwarding",
            "gre",
            "--return",
            "l2",
            "--assignment",
            "mask",
            "--tun",
            "wccp9",
            "--socket",
            "/tmp/s.sock",
            "--log-level",
            "debug,wccp=trace",
            "--bypass",
            "10.0.2.77/24",
        ]);
        let s = a.apply(CacheConf::default());
        let c = &s.conf;
        assert_eq!(c.routers.len(), 2);
        assert_eq!(c.services.len(), 2);
        assert!(c
            .services
            .iter()
            .all(|s| s.password.as_deref() == Some("pw")));
        assert_eq!(
            c.services[1].service.flags,
            ServiceFlags::SRC_IP_HASH | ServiceFlags::PORTS_DEFINED
        );
        assert_eq!(c.weight, 7);
        assert_eq!(
            c.forwarding,
            vec![ForwardingMethod::L2, ForwardingMethod::Gre]
        );
        assert_eq!(c.packet_return, vec![ReturnMethod::L2]);
        assert_eq!(c.assignment, vec![AssignmentMethod::Mask]);
        assert_eq!(c.tun, "wccp9");
        assert_eq!(c.socket, Some(PathBuf::from("/tmp/s.sock")));
        assert_eq!(c.bypass, vec!["10.0.2.0/24".parse().unwrap()]);
        // Directives go to the filter as given; the file's level stays.
        assert_eq!(s.log_filter, "debug,wccp=trace");
        assert_eq!(c.log_level, LogLevel::Info);
        assert!(Args::try_parse_from(["swcache", "--gre-only", "--forwarding", "ip"]).is_err());
        assert!(Args::try_parse_from(["swcache", "--gre-only", "--service", "90"]).is_err());
    }

    #[test]
    fn flags_override_the_file_key_by_key() {
        let file = conf::cache::parse_str(
            "cache.conf",
            "[cache]\naddress = \"10.0.3.2\"\ntun = \"wccp1\"\nlog-level = \"warn\"\nbypass = [\"10.0.2.3\"]\n\n\
             [wccp]\nrouters = [\"10.0.3.1\"]\nweight = 500\nforwarding = [\"l2\"]\n\n\
             [[wccp.service]]\nid = 0\npassword = \"filepw\"\n\n\
             [[wccp.service]]\nid = 90\nprotocol = \"tcp\"\nports = [8080]\n",
        )
        .unwrap();
        // Nothing given: the file as it is.
        let none = args(&["-c", "x"]).apply(file.clone());
        assert_eq!(none.conf, file);
        assert_eq!(none.log_filter, "warn");
        // Scalars replace their key, lists replace the whole list, the rest stays.
        let s = args(&[
            "-c",
            "x",
            "--router",
            "10.0.9.1",
            "--weight",
            "1",
            "--log-level",
            "debug",
            "--bypass",
            "10.0.2.9",
        ])
        .apply(file.clone());
        assert_eq!(s.conf.routers, vec![Ipv4Addr::new(10, 0, 9, 1)]);
        assert_eq!(s.conf.weight, 1);
        assert_eq!(s.conf.log_level, LogLevel::Debug);
        assert_eq!(s.log_filter, "debug");
        assert_eq!(s.conf.bypass, vec!["10.0.2.9/32".parse().unwrap()]);
        assert_eq!(s.conf.address, file.address);
        assert_eq!(s.conf.tun, "wccp1");
        assert_eq!(s.conf.forwarding, vec![ForwardingMethod::L2]);
        assert_eq!(s.conf.services, file.services);
        // --password reaches every service of the file; --service replaces them.
        let p = args(&["-c", "x", "--password", "cli"]).apply(file.clone());
        assert!(p
            .conf
            .services
            .iter()
            .all(|s| s.password.as_deref() == Some("cli")));
        assert_eq!(p.conf.services.len(), 2);
        let svc = args(&["-c", "x", "--service", "0"]).apply(file.clone());
        assert_eq!(svc.conf.services, vec![CacheServiceConf::standard()]);
        // --gre-only turns the mode on.
        assert!(args(&["-c", "x", "--gre-only"]).apply(file).conf.gre_only);
    }

    #[test]
    fn a_bad_file_is_reported_with_its_position() {
        let path = std::env::temp_dir().join(format!("swcache-cli-{}.conf", std::process::id()));
        std::fs::write(&path, "[cache]\naddress = \"10.0.3\"\n").unwrap();
        let e = args(&["-c", &path.to_string_lossy()])
            .settings()
            .unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert_eq!(
            format!("{e:#}"),
            format!(
                "{}:2:11: `10.0.3` in `address` is not an IPv4 address",
                path.display()
            )
        );
    }

    #[test]
    fn prefixes() {
        let p = parse_prefix("10.0.2.3/32").unwrap();
        assert!(p.contains(Ipv4Addr::new(10, 0, 2, 3)));
        assert!(!p.contains(Ipv4Addr::new(10, 0, 2, 2)));
        let p = parse_prefix("10.0.2.77/24").unwrap();
        assert_eq!(p.to_string(), "10.0.2.0/24");
        assert!(p.contains(Ipv4Addr::new(10, 0, 2, 200)));
        let all = parse_prefix("0.0.0.0/0").unwrap();
        assert!(all.contains(Ipv4Addr::new(192, 0, 2, 1)));
        assert!(parse_prefix("10.0.2.3/33").is_err());
        assert!(parse_prefix("10.0.2/8").is_err());
        assert_eq!(parse_prefix("10.0.2.3").unwrap().prefix(), 32);
    }
}
