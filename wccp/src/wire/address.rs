//! Address Table component (type 17, \[R1\] v2.01; reference §3.11).
//!
//! When present, every 4-octet address field elsewhere in the message holds `u16 reserved(0),
//! u16 index` (1-based; 0 = unspecified). This crate keeps those fields as they are read and
//! offers [`AddressTable::resolve`] to map one; IPv6 support beyond that is out of scope.

use core::net::{Ipv4Addr, Ipv6Addr};

use super::codec::{self, Fail, Writer};
use crate::error::Error;

wire_enum! {
    /// IANA address family number of the table's entries.
    pub enum AddressFamily: u16 {
        /// IPv4 (discouraged in a table: plain fields already carry IPv4).
        Ipv4 = 1 => "IPv4",
        /// IPv6.
        Ipv6 = 2 => "IPv6",
    }
}

/// Address Table: family, per-entry length (multiple of 4), entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AddressTable {
    /// Address family of every entry.
    pub family: AddressFamily,
    /// Octets per entry (multiple of 4; 16 for IPv6).
    pub address_length: u16,
    /// Entries, each exactly `address_length` octets; index 1 is the first.
    pub addresses: Vec<Vec<u8>>,
}

impl AddressTable {
    /// An IPv6 table.
    pub fn ipv6(addresses: &[Ipv6Addr]) -> Self {
        Self {
            family: AddressFamily::Ipv6,
            address_length: 16,
            addresses: addresses.iter().map(|a| a.octets().to_vec()).collect(),
        }
    }

    /// Maps an address field (`0x0000_nnnn`) to its table entry; `None` for index 0, a
    /// non-zero reserved half, or an index past the table.
    pub fn resolve(&self, field: Ipv4Addr) -> Option<&[u8]> {
        let raw = u32::from(field);
        if raw >> 16 != 0 || raw == 0 {
            return None;
        }
        let index = usize::try_from(raw - 1).ok()?;
        self.addresses.get(index).map(Vec::as_slice)
    }

    /// Like [`Self::resolve`] for an IPv6 table.
    pub fn resolve_ipv6(&self, field: Ipv4Addr) -> Option<Ipv6Addr> {
        if self.family != AddressFamily::Ipv6 {
            return None;
        }
        let entry = self.resolve(field)?;
        let raw: [u8; 16] = entry.get(..16)?.try_into().ok()?;
        Some(Ipv6Addr::from(raw))
    }

    /// Decodes the component body, which must be consumed exactly.
    pub(crate) fn parse_exact(i: &[u8]) -> Result<Self, nom::Err<Fail<'_>>> {
        let (rest, family) = codec::u16(i)?;
        let (rest, address_length) = codec::u16(rest)?;
        // [R1] §5.1.5: entries are a non-zero multiple of 4 octets. Zero would also let a
        // count allocate without consuming input.
        if address_length == 0 || address_length % 4 != 0 {
            let expected = usize::from(address_length).div_ceil(4).max(1) * 4;
            return Err(nom::Err::Failure(Fail {
                at: i,
                error: Error::BadLength {
                    what: "address table entry",
                    length: usize::from(address_length),
                    expected,
                    at: 0,
                },
            }));
        }
        let addresses = codec::exact(
            rest,
            codec::counted("address table entry", usize::from(address_length), |d| {
                let (d, a) = codec::take(usize::from(address_length))(d)?;
                Ok((d, a.to_vec()))
            }),
        )?;
        Ok(Self {
            family: AddressFamily::from(family),
            address_length,
            addresses,
        })
    }

    /// Appends the component body.
    pub(crate) fn write(&self, w: &mut Writer<'_>) -> Result<(), Error> {
        if self
            .addresses
            .iter()
            .any(|a| a.len() != usize::from(self.address_length))
        {
            return Err(Error::Inconsistent {
                what: "address table",
            });
        }
        w.u16(self.family.into());
        w.u16(self.address_length);
        w.count("address table", self.addresses.len())?;
        self.addresses.iter().for_each(|a| w.bytes(a));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_table_round_trip_and_resolve() {
        let a = "2001:db8::1".parse::<Ipv6Addr>().unwrap();
        let t = AddressTable::ipv6(&[a]);
        let mut out = vec![];
        t.write(&mut Writer::new(&mut out)).unwrap();
        assert_eq!(&out[..8], &[0x00, 0x02, 0x00, 0x10, 0x00, 0x00, 0x00, 0x01]);
        let back = AddressTable::parse_exact(&out).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.resolve_ipv6(Ipv4Addr::from(1u32)), Some(a));
        assert_eq!(back.resolve(Ipv4Addr::from(0u32)), None);
        assert_eq!(back.resolve(Ipv4Addr::from(2u32)), None);
        assert_eq!(back.resolve(Ipv4Addr::from(0x0001_0001u32)), None);
    }

    #[test]
    fn zero_address_length_is_rejected() {
        let body = [0x00, 0x02, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff];
        assert!(AddressTable::parse_exact(&body).is_err());
    }
}
