//! Service Info component body (type 1, Length 24; reference §3.2).

use super::codec::{self, PResult, Writer};

/// Service Info body size in octets (reference §9 fixed-size reminders: component 28).
pub(crate) const SERVICE_INFO_LEN: u16 = 24;

wire_enum! {
    /// Service Type octet (reference §3.2).
    pub enum ServiceType: u8 {
        /// WCCP2_SERVICE_STANDARD: a well-known service; only the ID is meaningful.
        Standard = 0 => "standard",
        /// WCCP2_SERVICE_DYNAMIC: protocol, flags and ports describe the traffic.
        Dynamic = 1 => "dynamic",
    }
}

wire_bits! {
    /// Service Flags (reference §3.2), in the draft's order; reserved bits are kept.
    pub struct ServiceFlags(u32) {
        /// Source IP address in the primary hash.
        const SRC_IP_HASH = 0x0001;
        /// Destination IP address in the primary hash.
        const DST_IP_HASH = 0x0002;
        /// Source port in the primary hash.
        const SRC_PORT_HASH = 0x0004;
        /// Destination port in the primary hash.
        const DST_PORT_HASH = 0x0008;
        /// The port list is meaningful.
        const PORTS_DEFINED = 0x0010;
        /// The ports are source ports (clear: destination ports).
        const PORTS_SOURCE = 0x0020;
        /// \[R1\], v2.01: redirect only protocol 0.
        const REDIRECT_ONLY_PROTOCOL_0 = 0x0040;
        /// Source IP address in the alternate hash.
        const SRC_IP_ALT_HASH = 0x0100;
        /// Destination IP address in the alternate hash.
        const DST_IP_ALT_HASH = 0x0200;
        /// Source port in the alternate hash.
        const SRC_PORT_ALT_HASH = 0x0400;
        /// Destination port in the alternate hash.
        const DST_PORT_ALT_HASH = 0x0800;
    }
}

impl ServiceFlags {
    /// The four packet fields a service can hash on, by the names configuration files and
    /// command lines use, in flag order: field `i`'s primary-hash flag is `1 << i` and its
    /// alternate-hash flag `0x100 << i` (reference §3.2).
    pub const HASH_FIELD_NAMES: [&'static str; 4] = ["src-ip", "dst-ip", "src-port", "dst-port"];

    /// The flag that puts the field called `name` into the primary hash (`alternate` false) or
    /// the alternate hash (`alternate` true); `None` for an unknown name.
    pub fn hash_field(name: &str, alternate: bool) -> Option<Self> {
        let i = Self::HASH_FIELD_NAMES.iter().position(|n| *n == name)?;
        Some(Self(Self::hash_bit(i, alternate)))
    }

    /// The names of the fields set in the primary (`alternate` false) or alternate hash, in
    /// flag order.
    pub fn hash_fields(self, alternate: bool) -> impl Iterator<Item = &'static str> {
        Self::HASH_FIELD_NAMES
            .into_iter()
            .enumerate()
            .filter(move |(i, _)| self.contains(Self(Self::hash_bit(*i, alternate))))
            .map(|(_, name)| name)
    }

    /// The flag bit of hash field `i` (an index into [`Self::HASH_FIELD_NAMES`]).
    const fn hash_bit(i: usize, alternate: bool) -> u32 {
        (if alternate { 0x100 } else { 0x1 }) << i
    }
}

/// The Service Info component: which traffic a service group intercepts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceInfo {
    /// Standard (well-known) or dynamic.
    pub service_type: ServiceType,
    /// Service ID 0–255 (standard 0 = HTTP, TCP dst port 80).
    pub service_id: u8,
    /// Priority, higher wins (well-known services are implicitly 240; sent as 0).
    pub priority: u8,
    /// IP protocol (6 TCP, 17 UDP; \[R1\]: 0 = all).
    pub protocol: u8,
    /// Service flags.
    pub flags: ServiceFlags,
    /// Ports 0..7; with `PORTS_DEFINED`, the list ends at the first 0.
    pub ports: [u16; 8],
}

impl ServiceInfo {
    /// A standard service as Squid sends it: type 0, the ID, and 22 zero octets (§3.2).
    pub fn standard(service_id: u8) -> Self {
        Self {
            service_type: ServiceType::Standard,
            service_id,
            priority: 0,
            protocol: 0,
            flags: ServiceFlags::empty(),
            ports: [0; 8],
        }
    }

    /// A dynamic service; up to 8 ports are kept, and `PORTS_DEFINED` is set when any are given.
    pub fn dynamic(
        service_id: u8,
        protocol: u8,
        priority: u8,
        flags: ServiceFlags,
        ports: &[u16],
    ) -> Self {
        let mut list = [0u16; 8];
        for (slot, port) in list.iter_mut().zip(ports) {
            *slot = *port;
        }
        let flags = if ports.is_empty() {
            flags
        } else {
            flags | ServiceFlags::PORTS_DEFINED
        };
        Self {
            service_type: ServiceType::Dynamic,
            service_id,
            priority,
            protocol,
            flags,
            ports: list,
        }
    }

    /// The ports in use: up to the first 0, and only when `PORTS_DEFINED` is set (§3.2).
    pub fn port_list(&self) -> &[u16] {
        if !self.flags.contains(ServiceFlags::PORTS_DEFINED) {
            return &[];
        }
        let end = self
            .ports
            .iter()
            .position(|p| *p == 0)
            .unwrap_or(self.ports.len());
        self.ports.get(..end).unwrap_or(&[])
    }

    /// The flags the router hashes with: standard services hash on the destination IP (§6.1,
    /// as Squid treats them), dynamic ones use their flags, and a dynamic definition naming no
    /// primary hash field hashes on the destination IP too (the draft's default, as
    /// `assign::default_mask` does for masks): an empty field set would XOR nothing and send
    /// every packet to bucket 0.
    pub fn effective_flags(&self) -> ServiceFlags {
        match self.service_type {
            ServiceType::Standard => ServiceFlags::DST_IP_HASH,
            _ if self.flags.bits() & Self::PRIMARY_HASH_BITS == 0 => {
                self.flags | ServiceFlags::DST_IP_HASH
            }
            _ => self.flags,
        }
    }

    /// The four primary-hash field flags (0x0001..0x0008).
    const PRIMARY_HASH_BITS: u32 = 0x000f;

    /// True when two HERE_I_AMs describe the same group (a router drops conflicting
    /// definitions of a dynamic service, \[R1\] §3.2).
    pub fn same_definition(&self, other: &Self) -> bool {
        self == other
    }

    /// nom parser for the 24-octet body.
    pub(crate) fn parse(i: &[u8]) -> PResult<'_, Self> {
        let (i, service_type) = codec::u8(i)?;
        let (i, service_id) = codec::u8(i)?;
        let (i, priority) = codec::u8(i)?;
        let (i, protocol) = codec::u8(i)?;
        let (mut i, flags) = codec::u32(i)?;
        let mut ports = [0u16; 8];
        for port in &mut ports {
            let (rest, p) = codec::u16(i)?;
            *port = p;
            i = rest;
        }
        let service = Self {
            service_type: ServiceType::from(service_type),
            service_id,
            priority,
            protocol,
            flags: ServiceFlags(flags),
            ports,
        };
        Ok((i, service))
    }

    /// Appends the 24-octet body.
    pub(crate) fn write(&self, w: &mut Writer<'_>) {
        w.u8(self.service_type.into());
        w.u8(self.service_id);
        w.u8(self.priority);
        w.u8(self.protocol);
        w.u32(self.flags.bits());
        for port in self.ports {
            w.u16(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_service_body() {
        // Squid hia-hash-gre-dyn90: dynamic 90, prio 240, TCP, src_ip_hash|src_port_hash|ports
        // defined, ports 80, 443.
        let body: [u8; 24] = [
            0x01, 0x5a, 0xf0, 0x06, 0x00, 0x00, 0x00, 0x15, 0x00, 0x50, 0x01, 0xbb, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0,
        ];
        let (rest, s) = codec::finish(&body, ServiceInfo::parse(&body)).unwrap();
        assert!(rest.is_empty());
        let expected = ServiceInfo::dynamic(
            90,
            6,
            240,
            ServiceFlags::SRC_IP_HASH | ServiceFlags::SRC_PORT_HASH,
            &[80, 443],
        );
        assert_eq!(s, expected);
        assert_eq!(s.port_list(), &[80, 443]);
        let mut out = vec![];
        s.write(&mut Writer::new(&mut out));
        assert_eq!(out, body);
    }

    #[test]
    fn hash_field_names_map_to_their_flags() {
        assert_eq!(
            ServiceFlags::hash_field("src-ip", false),
            Some(ServiceFlags::SRC_IP_HASH)
        );
        assert_eq!(
            ServiceFlags::hash_field("dst-port", true),
            Some(ServiceFlags::DST_PORT_ALT_HASH)
        );
        assert_eq!(
            ServiceFlags::hash_field("src-port", true),
            Some(ServiceFlags::SRC_PORT_ALT_HASH)
        );
        assert_eq!(ServiceFlags::hash_field("dst-mac", false), None);
        for (i, name) in ServiceFlags::HASH_FIELD_NAMES.into_iter().enumerate() {
            let primary = ServiceFlags::hash_field(name, false).unwrap();
            let alternate = ServiceFlags::hash_field(name, true).unwrap();
            assert_eq!(primary.bits(), 1 << i, "{name}");
            assert_eq!(alternate.bits(), 0x100 << i, "{name}");
        }
    }

    #[test]
    fn hash_fields_lists_names_in_flag_order() {
        let f = ServiceFlags::DST_PORT_HASH
            | ServiceFlags::SRC_IP_HASH
            | ServiceFlags::PORTS_DEFINED
            | ServiceFlags::DST_IP_ALT_HASH;
        assert_eq!(
            f.hash_fields(false).collect::<Vec<_>>(),
            ["src-ip", "dst-port"]
        );
        assert_eq!(f.hash_fields(true).collect::<Vec<_>>(), ["dst-ip"]);
        assert_eq!(ServiceFlags::empty().hash_fields(false).count(), 0);
        // Every name reads back to the flag it came from, primary and alternate.
        for alternate in [false, true] {
            let mut all = ServiceFlags::empty();
            for n in ServiceFlags::HASH_FIELD_NAMES {
                all |= ServiceFlags::hash_field(n, alternate).unwrap();
            }
            assert_eq!(
                all.hash_fields(alternate).collect::<Vec<_>>(),
                ServiceFlags::HASH_FIELD_NAMES
            );
            assert_eq!(all.hash_fields(!alternate).count(), 0);
        }
    }

    #[test]
    fn dynamic_service_without_hash_flags_hashes_on_destination() {
        let none = ServiceInfo::dynamic(90, 17, 200, ServiceFlags::PORTS_SOURCE, &[]);
        assert_eq!(
            none.effective_flags(),
            ServiceFlags::DST_IP_HASH | ServiceFlags::PORTS_SOURCE
        );
        // Alternate fields alone leave the primary hash empty: it still gets the default.
        let alt = ServiceInfo::dynamic(91, 6, 200, ServiceFlags::SRC_IP_ALT_HASH, &[80]);
        assert!(alt.effective_flags().contains(ServiceFlags::DST_IP_HASH));
        // Flags that name a field are used as they are.
        let src = ServiceInfo::dynamic(92, 6, 200, ServiceFlags::SRC_PORT_HASH, &[80]);
        assert_eq!(src.effective_flags(), src.flags);
    }

    #[test]
    fn standard_service_hashes_on_destination() {
        let s = ServiceInfo::standard(0);
        assert_eq!(s.effective_flags(), ServiceFlags::DST_IP_HASH);
        assert!(s.port_list().is_empty());
    }
}
