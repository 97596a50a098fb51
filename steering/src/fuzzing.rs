//! Entry point for the `steering_compile` fuzz target (`../fuzz`) and its corpus replay test:
//! arbitrary [`Definitions`] built from the fuzzer's octets go through [`compile`]; whatever it
//! accepts is then asked for decisions on packets also drawn from the input, with every pool
//! with every device in service and with an empty health state. Nothing may panic.
//!
//! The octets are read as a small program: names come from a short alphabet so that
//! references between devices, pools and services resolve often enough to get past the
//! first checks, and every count is bounded so that one input stays cheap.

use core::net::Ipv4Addr;
use std::time::Duration;

use crate::health::PoolState;
use crate::model::{
    AclAction, AclRule, ActiveCheck, Definitions, DeviceDef, DeviceMode, HopDef, HopTarget,
    OnFailure, PassiveCheck, Policy, PoolDef, Restore, ServiceDef, ServiceKey,
};
use crate::types::{MacAddr, PortRange, Prefix};
use crate::{compile, PacketKey};

/// Reads the input front to back; past the end every read is 0.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.0 = rest;
        first
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn below(&mut self, n: u8) -> u8 {
        self.u8() % n.max(1)
    }

    fn flag(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    fn name(&mut self) -> String {
        // Eight names shared by every kind, and now and then an empty one.
        match self.below(9) {
            8 => String::new(),
            n => format!("n{n}"),
        }
    }

    fn addr(&mut self) -> Ipv4Addr {
        // Mostly inside 10.0.0.0/16 so that addresses collide and overlap.
        if self.flag() {
            Ipv4Addr::new(10, 0, self.below(4), self.u8())
        } else {
            Ipv4Addr::new(self.u8(), self.u8(), self.u8(), self.u8())
        }
    }

    fn mac(&mut self) -> MacAddr {
        MacAddr([2, 0, 0, 0, self.below(4), self.u8()])
    }

    fn ports(&mut self) -> PortRange {
        let (lo, hi) = (self.u16(), self.u16());
        PortRange { lo, hi }
    }

    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        self.flag().then(|| f(self))
    }

    fn ms(&mut self) -> Duration {
        Duration::from_millis(u64::from(self.u16()))
    }
}

fn device(b: &mut Bytes<'_>) -> DeviceDef {
    let mode = match b.below(5) {
        0 => DeviceMode::Transparent,
        1 => DeviceMode::Loopback,
        2 => DeviceMode::Alias,
        3 => DeviceMode::Nat,
        _ => DeviceMode::Router,
    };
    DeviceDef {
        name: b.name(),
        mode,
        interfaces: (0..b.below(4)).map(|_| u16::from(b.below(5))).collect(),
        mac: b.opt(Bytes::mac),
        out_mac: b.opt(Bytes::mac),
        addr: b.opt(Bytes::addr),
    }
}

fn pool(b: &mut Bytes<'_>) -> PoolDef {
    PoolDef {
        name: b.name(),
        members: (0..b.below(5)).map(|_| b.name()).collect(),
        alternate: b.opt(Bytes::name),
        policy: if b.flag() {
            Policy::FlowHash
        } else {
            Policy::ClientHash
        },
        on_failure: if b.flag() {
            OnFailure::Move
        } else {
            OnFailure::Reset { window: b.ms() }
        },
        restore: if b.flag() {
            Restore::Auto
        } else {
            Restore::Manual
        },
        active: b.opt(|b| ActiveCheck {
            port: b.u16(),
            interval: b.ms(),
            timeout: b.ms(),
            rise: u32::from(b.u8()),
            fall: u32::from(b.u8()),
        }),
        passive: b.opt(|b| PassiveCheck {
            syn_threshold: u32::from(b.u8()),
            window: b.ms(),
        }),
    }
}

fn service(b: &mut Bytes<'_>) -> ServiceDef {
    let key = if b.flag() {
        ServiceKey::Address {
            addr: b.addr(),
            proto: b.u8(),
            ports: b.ports(),
        }
    } else {
        ServiceKey::Subscriber {
            prefix: Prefix::new(b.addr(), b.below(34)).unwrap_or(Prefix::ANY),
            proto: b.opt(Bytes::u8),
        }
    };
    let chain = (0..b.below(6))
        .map(|_| HopDef {
            target: if b.flag() {
                HopTarget::Device(b.name())
            } else {
                HopTarget::Pool(b.name())
            },
            copy: b.flag(),
        })
        .collect();
    let acl = (0..b.below(4))
        .map(|_| {
            let mut r = AclRule::new(
                if b.flag() {
                    AclAction::Permit
                } else {
                    AclAction::Deny
                },
                Prefix::new(b.addr(), b.below(34)).unwrap_or(Prefix::ANY),
            );
            r.proto = b.opt(Bytes::u8);
            r.src_ports = b.opt(Bytes::ports);
            r.dst_ports = b.opt(Bytes::ports);
            r
        })
        .collect();
    ServiceDef {
        name: b.name(),
        key,
        ingress: (0..b.below(3)).map(|_| u16::from(b.below(5))).collect(),
        chain,
        translate_port: b.opt(Bytes::u16),
        dynamic_ranges: (0..b.below(3)).map(|_| b.ports()).collect(),
        dscp: b.opt(Bytes::u8),
        acl,
        acl_default: if b.flag() {
            AclAction::Permit
        } else {
            AclAction::Deny
        },
    }
}

/// Builds definitions from `data`, compiles them, and decides a few packets on what compiles,
/// with every device in service and with a health state that matches no table (empty).
pub fn fuzz_compile(data: &[u8]) {
    let mut b = Bytes(data);
    let defs = Definitions {
        devices: (0..b.below(8)).map(|_| device(&mut b)).collect(),
        pools: (0..b.below(5)).map(|_| pool(&mut b)).collect(),
        services: (0..b.below(6)).map(|_| service(&mut b)).collect(),
    };
    let Ok(tables) = compile(&defs) else {
        return;
    };
    let healthy = PoolState::all_in_service(&tables);
    let dead = PoolState::default();
    while !b.0.is_empty() {
        let pkt = PacketKey {
            in_if: u16::from(b.below(5)),
            src_mac: b.mac(),
            src: b.addr(),
            dst: b.addr(),
            proto: b.u8(),
            sport: b.u16(),
            dport: b.u16(),
            tcp_flags: b.u8(),
        };
        let _ = tables.decide(&pkt, &healthy);
        let _ = tables.decide(&pkt, &dead);
    }
}
