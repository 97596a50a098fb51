//! The packet-trace filter: a small subset of tcpdump's expression language that operators
//! already know, compiled once when a trace is armed and evaluated on received frames.
//!
//! ```text
//! filter    := term ( "and" term )*          (empty: every packet)
//! term      := [ "not" ] primitive
//! primitive := [ "src" | "dst" ] [ "host" ] ADDRESS
//!            | [ "src" | "dst" ] "net" ADDRESS/LEN
//!            | [ "src" | "dst" ] "port" NUMBER
//!            | "tcp" | "udp" | "icmp" | "gre" | "proto" NUMBER
//!            | "interface" NAME                (the receiving interface)
//! ```
//!
//! `or` and parentheses are not supported (one conjunction keeps the matcher a loop over a
//! handful of tests); a parse error names the 1-based column of the offending word.

use crate::tables::IfId;
use std::fmt;
use std::net::Ipv4Addr;

/// Which address or port of a packet a primitive tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// The source.
    Src,
    /// The destination.
    Dst,
    /// Either.
    Any,
}

/// One test of the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Primitive {
    /// Address within `addr/len` (a host is /32).
    Net {
        /// Which address.
        dir: Dir,
        /// Network address (host bits cleared).
        addr: Ipv4Addr,
        /// Prefix length.
        len: u8,
    },
    /// TCP or UDP port (first fragments and whole datagrams only).
    Port {
        /// Which port.
        dir: Dir,
        /// The port.
        port: u16,
    },
    /// IPv4 protocol number.
    Proto(u8),
    /// Received on this interface.
    Interface(IfId),
}

/// A primitive, possibly negated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    /// `not` in front.
    pub negated: bool,
    /// The test.
    pub prim: Primitive,
}

/// A compiled filter: every term must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceFilter {
    /// The terms, all of which must match.
    pub terms: Vec<Term>,
}

/// A filter that does not parse, with the 1-based column of the word at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// 1-based column (one past the end when the filter ended too early).
    pub column: usize,
    /// What was wrong there.
    pub message: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "filter column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for FilterError {}

/// The fields of a frame the filter reads, parsed once without trusting any length.
#[derive(Debug, Clone, Copy, Default)]
pub struct Headers {
    /// IPv4 source and destination, protocol (None: not IPv4 or too short).
    pub ip: Option<(Ipv4Addr, Ipv4Addr, u8)>,
    /// TCP/UDP ports of a first fragment or whole datagram.
    pub ports: Option<(u16, u16)>,
}

impl Headers {
    /// Reads an Ethernet frame (truncated or garbage frames give empty headers).
    pub fn of(frame: &[u8]) -> Headers {
        let mut h = Headers::default();
        if frame.get(12..14) != Some(&[0x08, 0x00]) {
            return h;
        }
        let Some(l3) = frame.get(14..) else {
            return h;
        };
        let (Some(&vihl), Some(&proto)) = (l3.first(), l3.get(9)) else {
            return h;
        };
        let hlen = usize::from(vihl & 0x0f) * 4;
        if vihl >> 4 != 4 || hlen < 20 || l3.len() < hlen {
            return h;
        }
        let addr = |at: usize| {
            l3.get(at..at + 4)
                .map(|b| Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        };
        let (Some(src), Some(dst)) = (addr(12), addr(16)) else {
            return h;
        };
        h.ip = Some((src, dst, proto));
        let later = l3
            .get(6..8)
            .is_some_and(|b| u16::from_be_bytes([b[0], b[1]]) & 0x1fff != 0);
        if (proto == 6 || proto == 17) && !later {
            h.ports = l3.get(hlen..hlen + 4).map(|b| {
                (
                    u16::from_be_bytes([b[0], b[1]]),
                    u16::from_be_bytes([b[2], b[3]]),
                )
            });
        }
        h
    }
}

impl TraceFilter {
    /// Parses `text`; `interface` resolves an interface name (None: no such interface).
    pub fn parse(
        text: &str,
        interface: impl Fn(&str) -> Option<IfId>,
    ) -> Result<TraceFilter, FilterError> {
        let words = tokens(text);
        let end = text.chars().count() + 1;
        let mut p = Parser {
            words: &words,
            at: 0,
            end,
        };
        let mut terms = Vec::new();
        if words.is_empty() {
            return Ok(TraceFilter { terms });
        }
        loop {
            terms.push(p.term(&interface)?);
            match p.next() {
                None => break,
                Some((_, "and" | "&&")) => {
                    if p.peek().is_none() {
                        return Err(p.error_here("expected a test after `and`"));
                    }
                }
                Some((col, "or" | "||")) => {
                    return Err(FilterError {
                        column: col,
                        message: "`or` is not supported: terms are joined with `and` (arm a wider filter, or trace twice)".into(),
                    })
                }
                Some((col, w)) => {
                    return Err(FilterError {
                        column: col,
                        message: format!("expected `and` between tests, found `{w}`"),
                    })
                }
            }
        }
        Ok(TraceFilter { terms })
    }

    /// True when the frame received on `rx_if` passes every term.
    pub fn matches(&self, frame: &[u8], rx_if: IfId) -> bool {
        if self.terms.is_empty() {
            return true;
        }
        let h = Headers::of(frame);
        self.terms
            .iter()
            .all(|t| t.prim.test(&h, rx_if) != t.negated)
    }
}

impl Primitive {
    /// The primitive on one packet (IP tests are false on frames that are not IPv4).
    fn test(&self, h: &Headers, rx_if: IfId) -> bool {
        match *self {
            Primitive::Interface(i) => i == rx_if,
            Primitive::Proto(p) => h.ip.is_some_and(|(_, _, proto)| proto == p),
            Primitive::Net { dir, addr, len } => h.ip.is_some_and(|(s, d, _)| {
                let mask = prefix_mask(len);
                let within = |a: Ipv4Addr| u32::from(a) & mask == u32::from(addr);
                match dir {
                    Dir::Src => within(s),
                    Dir::Dst => within(d),
                    Dir::Any => within(s) || within(d),
                }
            }),
            Primitive::Port { dir, port } => h.ports.is_some_and(|(s, d)| match dir {
                Dir::Src => s == port,
                Dir::Dst => d == port,
                Dir::Any => s == port || d == port,
            }),
        }
    }
}

/// The netmask of a prefix length (0..=32).
fn prefix_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// The words of `text` with their 1-based columns (in characters).
fn tokens(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start: Option<(usize, usize)> = None;
    for (col, (byte, c)) in text.char_indices().enumerate() {
        if c.is_whitespace() {
            if let Some((bcol, b0)) = start.take() {
                out.push((bcol, &text[b0..byte]));
            }
        } else if start.is_none() {
            start = Some((col + 1, byte));
        }
    }
    if let Some((bcol, b0)) = start {
        out.push((bcol, &text[b0..]));
    }
    out
}

/// A cursor over the words.
struct Parser<'a> {
    words: &'a [(usize, &'a str)],
    at: usize,
    /// The column just past the text (for "ended too early").
    end: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<(usize, &'a str)> {
        self.words.get(self.at).copied()
    }

    fn next(&mut self) -> Option<(usize, &'a str)> {
        let w = self.peek();
        self.at += usize::from(w.is_some());
        w
    }

    fn error_here(&self, message: &str) -> FilterError {
        let (column, found) = match self.peek() {
            Some((c, w)) => (c, format!("`{w}`")),
            None => (self.end, "the end of the filter".into()),
        };
        FilterError {
            column,
            message: format!("{message}, found {found}"),
        }
    }

    /// The next word, which must be there (`what` names what was expected).
    fn want(&mut self, what: &str) -> Result<(usize, &'a str), FilterError> {
        match self.next() {
            Some(w) => Ok(w),
            None => Err(self.error_here(&format!("expected {what}"))),
        }
    }

    fn term(&mut self, interface: &impl Fn(&str) -> Option<IfId>) -> Result<Term, FilterError> {
        let mut negated = false;
        while matches!(self.peek(), Some((_, "not" | "!"))) {
            self.next();
            negated = !negated;
        }
        let prim = self.primitive(interface)?;
        Ok(Term { negated, prim })
    }

    fn primitive(
        &mut self,
        interface: &impl Fn(&str) -> Option<IfId>,
    ) -> Result<Primitive, FilterError> {
        let (col, word) =
            self.want("a test (src, dst, host, net, port, tcp, udp, icmp, gre, proto, interface)")?;
        let dir = match word {
            "src" => Some(Dir::Src),
            "dst" => Some(Dir::Dst),
            _ => None,
        };
        let (col, word) = match dir {
            Some(_) => self.want("`host`, `net`, `port` or an address")?,
            None => (col, word),
        };
        let dir_or_any = dir.unwrap_or(Dir::Any);
        match word {
            "host" => {
                let (c, a) = self.want("an IPv4 address after `host`")?;
                Ok(Primitive::Net {
                    dir: dir_or_any,
                    addr: parse_addr(c, a)?,
                    len: 32,
                })
            }
            "net" => {
                let (c, n) = self.want("a network (ADDRESS/LEN) after `net`")?;
                let (addr, len) = parse_net(c, n)?;
                Ok(Primitive::Net {
                    dir: dir_or_any,
                    addr,
                    len,
                })
            }
            "port" => {
                let (c, p) = self.want("a port number after `port`")?;
                let port = p.parse::<u16>().map_err(|_| FilterError {
                    column: c,
                    message: format!("`{p}` is not a port number (0-65535)"),
                })?;
                Ok(Primitive::Port {
                    dir: dir_or_any,
                    port,
                })
            }
            w if dir.is_some() && w.parse::<Ipv4Addr>().is_ok() => Ok(Primitive::Net {
                dir: dir_or_any,
                addr: parse_addr(col, w)?,
                len: 32,
            }),
            _ if dir.is_some() => Err(FilterError {
                column: col,
                message: format!(
                    "expected `host`, `net`, `port` or an IPv4 address after `{}`, found `{word}`",
                    if dir == Some(Dir::Src) { "src" } else { "dst" }
                ),
            }),
            "tcp" => Ok(Primitive::Proto(6)),
            "udp" => Ok(Primitive::Proto(17)),
            "icmp" => Ok(Primitive::Proto(1)),
            "gre" => Ok(Primitive::Proto(47)),
            "proto" => {
                let (c, p) = self.want("a protocol number after `proto`")?;
                let proto = match p {
                    "tcp" => 6,
                    "udp" => 17,
                    "icmp" => 1,
                    "gre" => 47,
                    _ => p.parse::<u8>().map_err(|_| FilterError {
                        column: c,
                        message: format!("`{p}` is not a protocol number (0-255) or name"),
                    })?,
                };
                Ok(Primitive::Proto(proto))
            }
            "interface" | "iface" => {
                let (c, name) = self.want("an interface name after `interface`")?;
                interface(name)
                    .map(Primitive::Interface)
                    .ok_or_else(|| FilterError {
                        column: c,
                        message: format!("no interface `{name}` in the router's config"),
                    })
            }
            w if w.parse::<Ipv4Addr>().is_ok() => Ok(Primitive::Net {
                dir: Dir::Any,
                addr: parse_addr(col, w)?,
                len: 32,
            }),
            other => Err(FilterError {
                column: col,
                message: format!(
                    "unknown test `{other}` (expected src, dst, host, net, port, tcp, udp, icmp, gre, proto or interface)"
                ),
            }),
        }
    }
}

fn parse_addr(column: usize, word: &str) -> Result<Ipv4Addr, FilterError> {
    word.parse().map_err(|_| FilterError {
        column,
        message: format!("`{word}` is not an IPv4 address"),
    })
}

fn parse_net(column: usize, word: &str) -> Result<(Ipv4Addr, u8), FilterError> {
    let bad = || FilterError {
        column,
        message: format!("`{word}` is not a network (ADDRESS/LEN, e.g. 10.0.2.0/24)"),
    };
    let (a, l) = word.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
    let len: u8 = l.parse().ok().filter(|l| *l <= 32).ok_or_else(bad)?;
    Ok((Ipv4Addr::from(u32::from(addr) & prefix_mask(len)), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifaces(name: &str) -> Option<IfId> {
        match name {
            "eth0" => Some(0),
            "eth1" => Some(1),
            _ => None,
        }
    }

    fn parse(text: &str) -> Result<TraceFilter, FilterError> {
        TraceFilter::parse(text, ifaces)
    }

    /// Ethernet + IPv4 + 4 bytes of ports.
    fn frame(src: [u8; 4], dst: [u8; 4], proto: u8, sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 9] = proto;
        f[26..30].copy_from_slice(&src);
        f[30..34].copy_from_slice(&dst);
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f
    }

    #[test]
    fn the_operators_examples_parse() {
        assert_eq!(parse("").unwrap().terms, vec![]);
        let f = parse("tcp and port 80").unwrap();
        assert_eq!(
            f.terms,
            vec![
                Term {
                    negated: false,
                    prim: Primitive::Proto(6)
                },
                Term {
                    negated: false,
                    prim: Primitive::Port {
                        dir: Dir::Any,
                        port: 80
                    }
                }
            ]
        );
        let f = parse("src 10.0.1.2 and dst net 10.0.2.77/24 and interface eth1").unwrap();
        assert_eq!(
            f.terms[1].prim,
            Primitive::Net {
                dir: Dir::Dst,
                addr: [10, 0, 2, 0].into(),
                len: 24
            },
            "host bits are cleared"
        );
        assert_eq!(f.terms[2].prim, Primitive::Interface(1));
        let f = parse("not udp && src host 10.0.1.2 and dst port 443 and proto 47").unwrap();
        assert!(f.terms[0].negated);
        assert_eq!(f.terms[3].prim, Primitive::Proto(47));
    }

    #[test]
    fn errors_name_the_column_of_the_word_at_fault() {
        let e = parse("tcp and prot 80").unwrap_err();
        assert_eq!(e.column, 9, "{e}");
        assert!(e.message.contains("unknown test `prot`"), "{e}");
        let e = parse("src 10.0.1").unwrap_err();
        assert_eq!(e.column, 5, "{e}");
        let e = parse("port 99999").unwrap_err();
        assert_eq!((e.column, e.message.contains("not a port")), (6, true));
        let e = parse("tcp port 80").unwrap_err();
        assert_eq!(e.column, 5, "missing `and`: {e}");
        let e = parse("tcp and").unwrap_err();
        assert_eq!(e.column, 8, "one past the end: {e}");
        assert!(e.message.contains("the end of the filter"), "{e}");
        let e = parse("tcp or udp").unwrap_err();
        assert_eq!(e.column, 5);
        assert!(e.message.contains("`or` is not supported"), "{e}");
        let e = parse("interface eth9").unwrap_err();
        assert_eq!(e.column, 11);
        assert!(e.message.contains("no interface `eth9`"), "{e}");
        let e = parse("dst net 10.0.2.0/33").unwrap_err();
        assert_eq!(e.column, 9);
        assert_eq!(
            e.to_string(),
            "filter column 9: `10.0.2.0/33` is not a network (ADDRESS/LEN, e.g. 10.0.2.0/24)"
        );
        let e = parse("src bogus").unwrap_err();
        assert_eq!(e.column, 5);
    }

    #[test]
    fn matching_follows_every_term() {
        let web = frame([10, 0, 1, 2], [10, 0, 2, 80], 6, 40000, 80);
        let dns = frame([10, 0, 1, 2], [10, 0, 2, 53], 17, 40000, 53);
        let yes = |t: &str, f: &[u8], i: IfId| parse(t).unwrap().matches(f, i);
        assert!(yes("", &web, 0));
        assert!(yes("tcp and port 80", &web, 0));
        assert!(!yes("tcp and port 80", &dns, 0));
        assert!(yes("udp and dst port 53", &dns, 0));
        assert!(!yes("udp and src port 53", &dns, 0));
        assert!(yes("src 10.0.1.2 and dst net 10.0.2.0/24", &web, 0));
        assert!(!yes("dst 10.0.1.2", &web, 0));
        assert!(yes("host 10.0.2.80", &web, 0));
        assert!(yes("net 10.0.0.0/8", &web, 0));
        assert!(yes("interface eth0", &web, 0));
        assert!(!yes("interface eth0", &web, 1));
        assert!(yes("not icmp and not port 22", &web, 0));
        // A later fragment carries no ports: a port test does not match it.
        let mut frag = web.clone();
        frag[14 + 7] = 10;
        assert!(!yes("port 80", &frag, 0));
        assert!(yes("tcp", &frag, 0));
        // Not IPv4 (ARP), truncated, garbage: IP tests are false, never a panic.
        let mut arp = web.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(!yes("tcp", &arp, 0));
        assert!(yes("not tcp", &arp, 0));
        assert!(yes("interface eth0", &arp, 0));
        for n in 0..web.len() {
            let _ = yes("tcp and port 80 and src 10.0.1.2", &web[..n], 0);
        }
        let mut bad_ihl = web.clone();
        bad_ihl[14] = 0x4f;
        assert!(!yes("port 80", &bad_ihl, 0));
    }
}
