//! The command line: every flag, and the engine configuration the flags describe.

use anyhow::{bail, Context, Result};
use clap::Parser;
use conf::Ipv4Network;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use wccp::cache::{CacheConfig, CacheServiceConfig};
use wccp::engine::{AssignmentMethod, ForwardingMethod, ReturnMethod};
use wccp::wire::{ServiceFlags, ServiceInfo};

/// swcache: a WCCPv2 cache agent that joins routers and terminates their GRE into a TUN device.
#[derive(Parser, Debug, Clone)]
#[command(name = "swcache", version, about)]
pub struct Args {
    /// This cache's address (Web-Cache Identity; WCCP is sent from address:2048).
    #[arg(long, value_name = "IPV4", required_unless_present = "gre_only")]
    pub address: Option<Ipv4Addr>,
    /// A router to join (repeatable).
    #[arg(
        long = "router",
        value_name = "IPV4",
        required_unless_present = "gre_only"
    )]
    pub routers: Vec<Ipv4Addr>,
    /// A service group: `0` (standard web-cache) or `ID:tcp|udp:PORT[,PORT…][:FIELD+…]`
    /// (dynamic, destination ports, hashed on the FIELDs — src-ip, dst-ip, src-port, dst-port —
    /// by default on the destination address). Repeatable.
    #[arg(long = "service", value_name = "SPEC", default_value = "0")]
    pub services: Vec<ServiceSpec>,
    /// MD5 password shared with the routers (all services).
    #[arg(long)]
    pub password: Option<String>,
    /// Assignment weight.
    #[arg(long, default_value_t = 10000)]
    pub weight: u16,
    /// Forwarding method offered (`gre` or `l2`; repeatable, most preferred first).
    #[arg(long = "forwarding", value_name = "METHOD", default_value = "gre")]
    pub forwarding: Vec<Method>,
    /// Packet return method offered (`gre` or `l2`; repeatable, most preferred first).
    #[arg(long = "return", value_name = "METHOD", default_value = "gre")]
    pub packet_return: Vec<Method>,
    /// Assignment method offered (`hash` or `mask`; repeatable, most preferred first).
    #[arg(long = "assignment", value_name = "METHOD", default_value = "hash")]
    pub assignment: Vec<Assignment>,
    /// TUN device the decapsulated packets are written to.
    #[arg(long, default_value = "wccp0")]
    pub tun: String,
    /// Only terminate GRE (for a cache that speaks WCCP itself); no WCCP engine.
    #[arg(long)]
    pub gre_only: bool,
    /// Unix socket answering `status` with JSON.
    #[arg(long = "socket", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Log level (overridden by RUST_LOG).
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Destination prefix (`A.B.C.D/LEN`) whose redirected packets are not proxied but returned
    /// to the router that redirected them, by the return method negotiated with it (repeatable).
    #[arg(long = "bypass", value_name = "PREFIX", value_parser = parse_prefix)]
    pub bypass: Vec<Ipv4Network>,
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

/// A forwarding or return method on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Method {
    /// GRE with the WCCP redirect header.
    Gre,
    /// Layer 2.
    L2,
}

/// An assignment method on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Assignment {
    /// 256 hash buckets.
    Hash,
    /// Mask/value sets.
    Mask,
}

/// One `--service` argument, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec(pub ServiceInfo);

impl std::str::FromStr for ServiceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(':');
        let id: u8 = parts
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|_| format!("service {s:?}: the ID must be 0–255"))?;
        let Some(proto) = parts.next() else {
            if id == 0 {
                return Ok(ServiceSpec(ServiceInfo::standard(0)));
            }
            return Err(format!(
                "service {id}: a dynamic service needs ID:tcp|udp:PORT[,PORT…]"
            ));
        };
        if id == 0 {
            return Err("service 0 is the standard web-cache service: give just 0".into());
        }
        let protocol = match proto {
            "tcp" => 6,
            "udp" => 17,
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
        // Optional hash fields, `+`-separated; the default hashes the destination address.
        let mut flags = ServiceFlags::empty();
        if let Some(fields) = parts.next() {
            for f in fields.split('+') {
                flags |= match f {
                    "src-ip" => ServiceFlags::SRC_IP_HASH,
                    "dst-ip" => ServiceFlags::DST_IP_HASH,
                    "src-port" => ServiceFlags::SRC_PORT_HASH,
                    "dst-port" => ServiceFlags::DST_PORT_HASH,
                    other => {
                        return Err(format!(
                            "service {id}: unknown hash field {other:?}; expected src-ip, dst-ip, src-port, dst-port joined by +"
                        ))
                    }
                };
            }
        } else {
            flags = ServiceFlags::DST_IP_HASH;
        }
        if parts.next().is_some() {
            return Err(format!("service {s:?}: too many fields"));
        }
        Ok(ServiceSpec(ServiceInfo::dynamic(
            id, protocol, 0, flags, &ports,
        )))
    }
}

impl Args {
    /// The engine configuration these flags describe (`None` in `--gre-only` mode).
    pub fn cache_config(&self) -> Result<Option<CacheConfig>> {
        if self.gre_only {
            return Ok(None);
        }
        let address = self.address.context("--address is required")?;
        if self.routers.is_empty() {
            bail!("at least one --router is required");
        }
        let mut c = CacheConfig::new(address, self.routers.clone());
        c.weight = self.weight;
        c.forwarding = self
            .forwarding
            .iter()
            .map(|m| match m {
                Method::Gre => ForwardingMethod::Gre,
                Method::L2 => ForwardingMethod::L2,
            })
            .collect();
        c.packet_return = self
            .packet_return
            .iter()
            .map(|m| match m {
                Method::Gre => ReturnMethod::Gre,
                Method::L2 => ReturnMethod::L2,
            })
            .collect();
        c.assignment = self
            .assignment
            .iter()
            .map(|m| match m {
                Assignment::Hash => AssignmentMethod::Hash,
                Assignment::Mask => AssignmentMethod::Mask,
            })
            .collect();
        for s in &self.services {
            let mut sc = CacheServiceConfig::new(s.0.clone());
            if let Some(p) = &self.password {
                sc = sc.with_password(p.as_bytes());
            }
            c = c.with_service(sc);
        }
        c.validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        Ok(Some(c))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn service_specs() {
        assert_eq!(
            "0".parse::<ServiceSpec>().unwrap().0,
            ServiceInfo::standard(0)
        );
        let d = "90:tcp:80,8080".parse::<ServiceSpec>().unwrap().0;
        assert_eq!(d.service_id, 90);
        assert_eq!(d.protocol, 6);
        assert_eq!(d.port_list(), &[80, 8080]);
        assert!("90".parse::<ServiceSpec>().is_err());
        assert!("0:tcp:80".parse::<ServiceSpec>().is_err());
        assert!("90:icmp:1".parse::<ServiceSpec>().is_err());
        assert_eq!(
            d.flags,
            ServiceFlags::DST_IP_HASH | ServiceFlags::PORTS_DEFINED
        );
        let h = "61:tcp:8080:src-ip+src-port"
            .parse::<ServiceSpec>()
            .unwrap()
            .0;
        assert_eq!(
            h.flags,
            ServiceFlags::SRC_IP_HASH | ServiceFlags::SRC_PORT_HASH | ServiceFlags::PORTS_DEFINED
        );
        assert!("61:tcp:8080:nope".parse::<ServiceSpec>().is_err());
        assert!("61:tcp:8080:src-ip:x".parse::<ServiceSpec>().is_err());
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
