//! Software TCP segmentation of GSO super-packets (what a NIC does for TSO), for the paths
//! where the kernel cannot do it on transmit: a super-packet that is GRE-encapsulated toward a
//! cache must become MSS-sized segments first, each a complete TCP/IPv4 packet with its own
//! checksums, or the cache would receive one oversized datagram it cannot use.

use super::packet::{Packet, Pool};
use crate::wire::ethernet::HEADER_LEN;
use crate::wire::ipv4;
use crate::wire::tcp::{flags as tcp_flags, TcpPacket};
use crate::wire::vnet;

/// Splits a TCPv4 GSO super-packet into segments of at most `gso_size` payload bytes; each is
/// handed to `out` as a whole Ethernet frame with final checksums and no offload state.
/// Returns false (and emits nothing) when the packet is not a TCPv4 super-packet it can split.
pub fn segment_tcpv4(pkt: &Packet, pool: &mut Pool, mut out: impl FnMut(Packet)) -> bool {
    let o = pkt.meta.offload;
    if o.gso_type & !vnet::GSO_ECN != vnet::GSO_TCPV4 || o.gso_size == 0 {
        return false;
    }
    let frame = pkt.frame();
    let Some(l3) = frame.get(HEADER_LEN..) else {
        return false;
    };
    if l3.len() < ipv4::MIN_HEADER_LEN || ipv4::protocol(l3) != ipv4::PROTO_TCP {
        return false;
    }
    let hlen = ipv4::header_len(l3);
    let Some(first) = l3.get(hlen..).and_then(|t| TcpPacket::new_checked(t).ok()) else {
        return false;
    };
    let thlen = first.header_len();
    let headers = HEADER_LEN + hlen + thlen;
    if frame.len() <= headers {
        return false;
    }
    let payload = &frame[headers..];
    let mss = usize::from(o.gso_size);
    let tcp_at = HEADER_LEN + hlen;
    let (seq0, flags0) = (first.seq_number(), first.flags());
    let ident0 = u16::from_be_bytes([frame[HEADER_LEN + 4], frame[HEADER_LEN + 5]]);
    let (src, dst) = (ipv4::src(l3), ipv4::dst(l3));
    let n = payload.len().div_ceil(mss);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        let mut seg = pool.get();
        let f = seg.reset(headers + chunk.len());
        f[..headers].copy_from_slice(&frame[..headers]);
        f[headers..].copy_from_slice(chunk);
        // IPv4: length, a fresh identification per segment, header checksum.
        let ip = &mut f[HEADER_LEN..];
        let total = (hlen + thlen + chunk.len()) as u16;
        ip[2..4].copy_from_slice(&total.to_be_bytes());
        ip[4..6].copy_from_slice(&ident0.wrapping_add(i as u16).to_be_bytes());
        ipv4::fill_checksum(ip, hlen);
        // TCP: sequence number, per-segment flags (FIN and PSH belong to the last segment
        // only, CWR to the first only), full checksum.
        let mut t = TcpPacket::new_unchecked(&mut f[tcp_at..]);
        t.set_seq_number(seq0.wrapping_add((i * mss) as u32));
        let mut fl = flags0;
        if i + 1 < n {
            fl &= !(tcp_flags::FIN | tcp_flags::PSH);
        }
        if i > 0 {
            fl &= !tcp_flags::CWR;
        }
        t.set_flags(fl);
        t.fill_checksum(src, dst);
        seg.meta = pkt.meta;
        seg.meta.offload = Default::default();
        out(seg);
    }
    true
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A 14 + 20 + 20 + `n` byte TCP super-packet with PSH|ACK|FIN|CWR and gso_size `mss`.
    fn super_packet(n: usize, mss: u16) -> Packet {
        let mut f = vec![0u8; HEADER_LEN + 40 + n];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        ipv4::Ipv4Repr {
            src: [10, 0, 1, 2].into(),
            dst: [10, 0, 2, 2].into(),
            protocol: 6,
            payload_len: 20 + n,
            ttl: 64,
            ident: 100,
            tos: 0,
            dont_fragment: true,
        }
        .emit(&mut f[14..34]);
        let t = &mut f[34..54];
        t[4..8].copy_from_slice(&1000u32.to_be_bytes());
        t[12] = 0x50;
        t[13] = tcp_flags::PSH | tcp_flags::FIN | tcp_flags::CWR | tcp_flags::ACK;
        for (i, b) in f[54..].iter_mut().enumerate() {
            *b = i as u8;
        }
        let mut p = Packet::from_frame(&f);
        p.meta.offload.gso_type = vnet::GSO_TCPV4;
        p.meta.offload.gso_size = mss;
        p.meta.offload.flags = vnet::F_NEEDS_CSUM;
        p
    }

    #[test]
    fn splits_into_valid_segments_that_add_up() {
        let p = super_packet(3000, 1448);
        let mut pool = Pool::new(4);
        let mut segs = Vec::new();
        assert!(segment_tcpv4(&p, &mut pool, |s| segs.push(s)));
        assert_eq!(segs.len(), 3);
        let mut data = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let l3 = &s.frame()[14..];
            assert_eq!(ipv4::check(l3).map(|_| ()), Ok(()), "segment {i}");
            let t = &l3[20..];
            assert!(
                TcpPacket::new_checked(t)
                    .unwrap()
                    .verify_checksum([10, 0, 1, 2].into(), [10, 0, 2, 2].into()),
                "TCP checksum of segment {i}"
            );
            let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
            assert_eq!(seq, 1000 + (i * 1448) as u32);
            let fl = t[13];
            assert_eq!(fl & tcp_flags::CWR != 0, i == 0, "CWR on the first only");
            assert_eq!(
                fl & (tcp_flags::FIN | tcp_flags::PSH) != 0,
                i == 2,
                "FIN/PSH on the last only"
            );
            assert!(!s.meta.offload.is_gso() && !s.meta.offload.needs_csum());
            data.extend_from_slice(&t[20..]);
        }
        assert_eq!(data, p.frame()[54..].to_vec(), "payload preserved in order");
        assert_eq!(segs[2].frame().len(), 54 + 3000 - 2 * 1448);
    }

    #[test]
    fn refuses_what_it_cannot_split() {
        let mut p = super_packet(100, 1448);
        p.meta.offload.gso_type = vnet::GSO_UDP_L4;
        let mut pool = Pool::new(1);
        assert!(!segment_tcpv4(&p, &mut pool, |_| panic!("no output")));
        p.meta.offload.gso_type = vnet::GSO_TCPV4;
        p.meta.offload.gso_size = 0;
        assert!(!segment_tcpv4(&p, &mut pool, |_| panic!("no output")));
    }
}
