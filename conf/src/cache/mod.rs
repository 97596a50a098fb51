//! `cache.conf`: the configuration file of swcache, the WCCP cache agent (`swcache -c FILE`).
//!
//! Same contract as router.conf (see the crate docs): [`load_file`] and [`parse_str`] return a
//! validated [`CacheConf`] with every default filled in or one positioned [`ConfError`];
//! [`CacheConf::to_toml`] prints the effective configuration, which loads back to an equal
//! value. The WCCP parts are wccp's own types, read by the same code as router.conf's
//! `[[wccp.service]]` (method names, the dynamic-service definition), so a service reads the
//! same on both sides.
//!
//! ```toml
//! [cache]
//! address = "10.0.3.2"          # this cache (Web-Cache Identity)
//!
//! [wccp]
//! routers = ["10.0.3.1"]        # routers to join
//!
//! [[wccp.service]]
//! id = 0                        # standard web-cache service
//! ```
//!
//! swcache's command-line flags override the file; that merge is swcache's. The keys are
//! documented in this crate's README.md.

mod emit;
mod raw;
mod validate;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use wccp::cache::{CacheConfig, CacheServiceConfig};
use wccp::engine::{AssignmentMethod, ConfigError, ForwardingMethod, ReturnMethod};
use wccp::wire::{ServiceFlags, ServiceInfo};

use crate::{ConfError, Ipv4Network, LogLevel};

/// Default TUN device the decapsulated packets are written to.
pub const DEFAULT_TUN: &str = "wccp0";
/// Default assignment weight (Squid's `wccp2_weight` default).
pub const DEFAULT_WEIGHT: u16 = 10000;
/// Default TRANSMIT_T in ms (reference §1): HERE_I_AM every 10 s.
pub const DEFAULT_TRANSMIT_MS: u16 = 10_000;

/// The whole validated cache.conf, or the defaults swcache starts from without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConf {
    /// This cache's address (`[cache] address`); required unless `gre_only`.
    pub address: Option<Ipv4Addr>,
    /// Only terminate GRE, no WCCP engine (`gre-only`).
    pub gre_only: bool,
    /// TUN device the decapsulated packets are written to (`tun`).
    pub tun: String,
    /// Unix socket answering `status` with JSON (`socket`); none by default.
    pub socket: Option<PathBuf>,
    /// Log verbosity (`log-level`).
    pub log_level: LogLevel,
    /// Destination prefixes whose redirected packets are returned to the router (`bypass`).
    pub bypass: Vec<Ipv4Network>,
    /// Destinations whose redirected packets are returned with a new destination address
    /// (`return-rewrite`), first match first; they are returned like `bypass` ones.
    pub return_rewrite: Vec<ReturnRewrite>,
    /// Where a copy of every returned packet goes (`return-copy`); none by default.
    pub return_copy: Option<ReturnCopy>,
    /// Routers to join (`[wccp] routers`); at least one unless `gre_only`.
    pub routers: Vec<Ipv4Addr>,
    /// Multicast mode (`multicast-group`): HERE_I_AMs and assignments go to this group and
    /// routers are learnt from its I_SEE_YOUs; `routers` may then be empty.
    pub multicast_group: Option<Ipv4Addr>,
    /// Assignment weight (`weight`).
    pub weight: u16,
    /// Forwarding methods offered, most preferred first (`forwarding`).
    pub forwarding: Vec<ForwardingMethod>,
    /// Packet return methods offered, most preferred first (`return`).
    pub packet_return: Vec<ReturnMethod>,
    /// Assignment methods offered, most preferred first (`assignment`).
    pub assignment: Vec<AssignmentMethod>,
    /// TRANSMIT_T asked of the routers, in ms (`transmit-timer-ms`; 10000 = the default, not
    /// negotiated).
    pub transmit_timer_ms: u16,
    /// TIMEOUT_SCALE asked of the routers (`timeout-scale`).
    pub timeout_scale: u8,
    /// RA_TIMER_SCALE asked of the routers (`ra-timer-scale`).
    pub ra_timer_scale: u8,
    /// Service groups to join (`[[wccp.service]]`); service 0 when the file names none.
    pub services: Vec<CacheServiceConf>,
}

/// A destination rewrite on return (seed 001, claims 37-38): a redirected packet whose
/// destination lies in `prefix` is handed back to its router addressed to `to` (for example an
/// alternate origin), its checksums updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnRewrite {
    /// Destinations rewritten.
    pub prefix: Ipv4Network,
    /// The new destination address.
    pub to: Ipv4Addr,
}

impl std::fmt::Display for ReturnRewrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.prefix, self.to)
    }
}

impl std::str::FromStr for ReturnRewrite {
    type Err = String;

    /// `PREFIX=ADDRESS`, e.g. `10.0.2.3/32=10.0.2.9` (a bare address is a /32).
    fn from_str(s: &str) -> Result<Self, String> {
        let (p, a) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not PREFIX=ADDRESS, such as 10.0.2.3/32=10.0.2.9"))?;
        let prefix = crate::validate::parse_prefix_or_address(p.trim())
            .map_err(|e| format!("`{s}`: {e}"))?;
        let to: Ipv4Addr = a
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: `{}` is not an IPv4 address", a.trim()))?;
        if to.is_unspecified() || to.is_multicast() || to.is_broadcast() || to.is_loopback() {
            return Err(format!(
                "`{s}`: {to} is not a unicast address the router can forward to"
            ));
        }
        Ok(ReturnRewrite { prefix, to })
    }
}

/// Where swcache copies the packets it returns (seed 001, claim 39), for an analyser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnCopy {
    /// Append them to a pcap file (raw IPv4 link type), created or truncated at start.
    Pcap(PathBuf),
    /// Write them as Ethernet frames to a TAP device of this name, created and brought up.
    Tap(String),
}

impl std::fmt::Display for ReturnCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReturnCopy::Pcap(p) => write!(f, "pcap:{}", p.display()),
            ReturnCopy::Tap(n) => write!(f, "tap:{n}"),
        }
    }
}

impl std::str::FromStr for ReturnCopy {
    type Err = String;

    /// `pcap:/absolute/file.pcap` or `tap:NAME`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("pcap", p)) => {
                let path = PathBuf::from(p);
                if !path.is_absolute() || path.file_name().is_none() {
                    return Err(format!(
                        "`{s}`: the pcap file must be an absolute path, such as pcap:/var/tmp/returns.pcap"
                    ));
                }
                Ok(ReturnCopy::Pcap(path))
            }
            Some(("tap", n)) => match crate::validate::bad_ifname(n) {
                Some(e) => Err(format!("`{s}`: {e}")),
                None => Ok(ReturnCopy::Tap(n.to_string())),
            },
            _ => Err(format!(
                "`{s}` is not pcap:FILE or tap:NAME, such as pcap:/var/tmp/returns.pcap or tap:wccpcopy"
            )),
        }
    }
}

/// One service group the cache joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheServiceConf {
    /// The Service Info announced: the standard service, or a full dynamic definition.
    pub service: ServiceInfo,
    /// MD5 password (1..=8 bytes), or none.
    pub password: Option<String>,
}

impl CacheServiceConf {
    /// The standard web-cache service 0 without password.
    pub fn standard() -> Self {
        CacheServiceConf {
            service: ServiceInfo::standard(0),
            password: None,
        }
    }
}

impl Default for CacheConf {
    /// swcache's defaults: GRE forwarding and return, hash assignment, weight 10000, service 0,
    /// TUN `wccp0`, no status socket, log level info.
    fn default() -> Self {
        CacheConf {
            address: None,
            gre_only: false,
            tun: DEFAULT_TUN.to_string(),
            socket: None,
            log_level: LogLevel::default(),
            bypass: Vec::new(),
            return_rewrite: Vec::new(),
            return_copy: None,
            routers: Vec::new(),
            multicast_group: None,
            weight: DEFAULT_WEIGHT,
            forwarding: vec![ForwardingMethod::Gre],
            packet_return: vec![ReturnMethod::Gre],
            assignment: vec![AssignmentMethod::Hash],
            transmit_timer_ms: DEFAULT_TRANSMIT_MS,
            timeout_scale: 1,
            ra_timer_scale: 1,
            services: vec![CacheServiceConf::standard()],
        }
    }
}

/// Why a [`CacheConf`] cannot start a WCCP cache engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheEngineError {
    /// Neither the file nor the command line gave the cache's address.
    #[error("no cache address: set `address` in [cache] or give --address")]
    NoAddress,
    /// Neither the file nor the command line named a router.
    #[error("no router to join: list them in `routers` in [wccp] or give --router (or use multicast: `multicast-group` / --multicast-group)")]
    NoRouters,
    /// The engine rejected the combination.
    #[error("invalid configuration: {0}")]
    Invalid(ConfigError),
}

impl CacheConf {
    /// The effective configuration (defaults filled in) as TOML that [`parse_str`] accepts again.
    pub fn to_toml(&self) -> String {
        emit::to_toml(self)
    }

    /// The cache engine's configuration (`None` in `gre-only` mode): address, routers, weight,
    /// methods, and each service with its password.
    pub fn engine_config(&self) -> Result<Option<CacheConfig>, CacheEngineError> {
        if self.gre_only {
            return Ok(None);
        }
        let address = self.address.ok_or(CacheEngineError::NoAddress)?;
        if self.routers.is_empty() && self.multicast_group.is_none() {
            return Err(CacheEngineError::NoRouters);
        }
        let mut c = CacheConfig::new(address, self.routers.clone());
        c.multicast_group = self.multicast_group;
        c.weight = self.weight;
        c.forwarding = self.forwarding.clone();
        c.packet_return = self.packet_return.clone();
        c.assignment = self.assignment.clone();
        c.timers = wccp::timer::TimerConfig {
            transmit_t: std::time::Duration::from_millis(self.transmit_timer_ms.into()),
            timeout_scale: self.timeout_scale.into(),
            ra_timer_scale: self.ra_timer_scale.into(),
        };
        for s in &self.services {
            let mut sc = CacheServiceConfig::new(s.service.clone());
            if let Some(p) = &s.password {
                sc = sc.with_password(p.as_bytes());
            }
            c = c.with_service(sc);
        }
        c.validate().map_err(CacheEngineError::Invalid)?;
        Ok(Some(c))
    }
}

/// Reads, parses and validates the cache.conf at `path` (errors as [`crate::load_file`]'s).
pub fn load_file(path: &Path) -> Result<CacheConf, ConfError> {
    let (file, text) = crate::read_text(path)?;
    parse_str(&file, &text)
}

/// Parses and validates cache.conf `text`; `file` is used only to label error positions.
pub fn parse_str(file: &str, text: &str) -> Result<CacheConf, ConfError> {
    let at = crate::error::Locator::new(file, text);
    let raw: raw::RawCacheFile =
        toml::from_str(text).map_err(|e| at.toml_error_with(&e, raw::explain))?;
    validate::validate(&at, raw)
}

/// Parses swcache's compact `--service` form: `0` (the standard web-cache service) or
/// `ID:tcp|udp:PORT[,PORT…][:FIELD+…]` (a dynamic service on 1 to 8 destination ports, hashed
/// on the `+`-joined FIELDs, by default on the destination address).
pub fn parse_service_spec(s: &str) -> Result<ServiceInfo, String> {
    let mut parts = s.split(':');
    let id: u8 = parts
        .next()
        .unwrap_or_default()
        .parse()
        .map_err(|_| format!("service {s:?}: the ID must be 0–255"))?;
    let Some(proto) = parts.next() else {
        if id == 0 {
            return Ok(ServiceInfo::standard(0));
        }
        return Err(format!(
            "service {id}: a dynamic service needs ID:tcp|udp:PORT[,PORT…]"
        ));
    };
    if id == 0 {
        return Err("service 0 is the standard web-cache service: give just 0".into());
    }
    // The compact form names only the two protocols whose ports mean something to a proxy.
    let protocol = match proto {
        "tcp" | "udp" => crate::wccp::protocol_number(proto).unwrap_or_default(),
        other => return Err(format!("service {id}: unknown protocol {other:?}")),
    };
    let ports = parts
        .next()
        .ok_or_else(|| format!("service {id}: missing port list"))?
        .split(',')
        .map(|p| p.parse::<u16>().map_err(|_| format!("bad port {p:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    if ports.is_empty() || ports.len() > 8 || ports.contains(&0) {
        return Err(format!("service {id}: 1 to 8 non-zero ports"));
    }
    let flags = match parts.next() {
        None => ServiceFlags::DST_IP_HASH,
        Some(fields) => fields.split('+').try_fold(ServiceFlags::empty(), |acc, f| {
            ServiceFlags::hash_field(f, false)
                .map(|flag| acc | flag)
                .ok_or_else(|| {
                    format!(
                        "service {id}: unknown hash field {f:?}; expected src-ip, dst-ip, src-port, dst-port joined by +"
                    )
                })
        })?,
    };
    if parts.next().is_some() {
        return Err(format!("service {s:?}: too many fields"));
    }
    Ok(ServiceInfo::dynamic(id, protocol, 0, flags, &ports))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn service_specs() {
        assert_eq!(parse_service_spec("0").unwrap(), ServiceInfo::standard(0));
        let d = parse_service_spec("90:tcp:80,8080").unwrap();
        assert_eq!(d.service_id, 90);
        assert_eq!(d.protocol, 6);
        assert_eq!(d.port_list(), &[80, 8080]);
        assert_eq!(
            d.flags,
            ServiceFlags::DST_IP_HASH | ServiceFlags::PORTS_DEFINED
        );
        assert_eq!(parse_service_spec("91:udp:53").unwrap().protocol, 17);
        let h = parse_service_spec("61:tcp:8080:src-ip+src-port").unwrap();
        assert_eq!(
            h.flags,
            ServiceFlags::SRC_IP_HASH | ServiceFlags::SRC_PORT_HASH | ServiceFlags::PORTS_DEFINED
        );
        for (bad, msg) in [
            ("x", "service \"x\": the ID must be 0–255"),
            ("256", "service \"256\": the ID must be 0–255"),
            (
                "90",
                "service 90: a dynamic service needs ID:tcp|udp:PORT[,PORT…]",
            ),
            (
                "0:tcp:80",
                "service 0 is the standard web-cache service: give just 0",
            ),
            ("90:icmp:1", "service 90: unknown protocol \"icmp\""),
            ("90:tcp", "service 90: missing port list"),
            ("90:tcp:x", "bad port \"x\""),
            ("90:tcp:0", "service 90: 1 to 8 non-zero ports"),
            ("90:tcp:1,2,3,4,5,6,7,8,9", "service 90: 1 to 8 non-zero ports"),
            (
                "61:tcp:8080:nope",
                "service 61: unknown hash field \"nope\"; expected src-ip, dst-ip, src-port, dst-port joined by +",
            ),
            ("61:tcp:8080:src-ip:x", "service \"61:tcp:8080:src-ip:x\": too many fields"),
        ] {
            assert_eq!(parse_service_spec(bad), Err(msg.to_string()), "{bad}");
        }
    }

    #[test]
    fn engine_config_of_the_defaults_needs_an_address_and_a_router() {
        let mut c = CacheConf::default();
        assert_eq!(c.engine_config(), Err(CacheEngineError::NoAddress));
        c.address = Some(Ipv4Addr::new(10, 0, 3, 2));
        assert_eq!(c.engine_config(), Err(CacheEngineError::NoRouters));
        c.routers = vec![Ipv4Addr::new(10, 0, 3, 1)];
        let e = c.engine_config().unwrap().unwrap();
        assert_eq!(e.weight, DEFAULT_WEIGHT);
        assert_eq!(e.forwarding, vec![ForwardingMethod::Gre]);
        assert_eq!(e.packet_return, vec![ReturnMethod::Gre]);
        assert_eq!(e.assignment, vec![AssignmentMethod::Hash]);
        assert_eq!(e.services.len(), 1);
        assert_eq!(e.services[0].service, ServiceInfo::standard(0));
        c.gre_only = true;
        assert_eq!(c.engine_config(), Ok(None));
    }

    #[test]
    fn engine_config_carries_passwords_and_rejects_what_the_engine_rejects() {
        let mut c = CacheConf {
            address: Some(Ipv4Addr::new(10, 0, 3, 2)),
            routers: vec![Ipv4Addr::new(10, 0, 3, 1)],
            ..CacheConf::default()
        };
        c.services[0].password = Some("s3cret".into());
        let e = c.engine_config().unwrap().unwrap();
        assert_eq!(
            e.services[0].security,
            wccp::security::Security::Md5(wccp::security::Password::new(b"s3cret"))
        );
        c.services.push(CacheServiceConf::standard());
        assert_eq!(
            c.engine_config(),
            Err(CacheEngineError::Invalid(ConfigError::DuplicateService(0)))
        );
    }
}
