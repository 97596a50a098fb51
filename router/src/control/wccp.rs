//! The WCCP driver: one loop around the sans-IO `RouterEngine` (ARCHITECTURE.md §2).
//!
//! Inputs are the UDP 2048 datagrams the pipeline delivers (with the local address they were
//! sent to, which becomes our Router ID toward that cache) and the engine's own deadline; after
//! every input the driver drains the engine until it is quiet: datagrams go to the outbox (and
//! through the pipeline), events are logged and their assignments kept for the data plane.

use crate::local::{LocalDatagram, OutDatagram, Outbox};
use crate::status::{WccpCacheStatus, WccpServiceStatus, WccpStatus};
use crate::tables::{Tables, WccpPlane};
use crate::worker::Shared;
use conf::{WccpAssignment, WccpMethod, WccpServiceConf};
use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Instant;
use wccp::router::{RouterEngine, RouterEvent, RouterServiceConfig};
use wccp::wire::{AssignmentMethods, ForwardingMethods, ReturnMethods};

/// The WCCP UDP port, both ends (reference §1).
pub const WCCP_PORT: u16 = 2048;

/// The engine, its assignments, and what the driver itself counts.
pub struct WccpDriver {
    engine: RouterEngine,
    outbox: Outbox,
    buf: Vec<u8>,
    /// Latest assignment per service, as the data plane will read it.
    assignments: BTreeMap<u8, Arc<wccp::assign::Assignment>>,
    outbox_full: u64,
    shared: Arc<Shared>,
}

/// Maps one `[[wccp.service]]` onto the engine's service config.
pub fn service_config(s: &WccpServiceConf) -> RouterServiceConfig {
    let mut c = if s.is_standard() {
        RouterServiceConfig::standard(s.id)
    } else {
        RouterServiceConfig::dynamic(s.id)
    };
    if let Some(p) = &s.password {
        c = c.with_password(p.as_bytes());
    }
    c.forwarding = ForwardingMethods::empty();
    for m in &s.forwarding {
        c.forwarding |= match m {
            WccpMethod::Gre => ForwardingMethods::GRE,
            WccpMethod::L2 => ForwardingMethods::L2,
        };
    }
    c.packet_return = ReturnMethods::empty();
    for m in &s.packet_return {
        c.packet_return |= match m {
            WccpMethod::Gre => ReturnMethods::GRE,
            WccpMethod::L2 => ReturnMethods::L2,
        };
    }
    c.assignment = AssignmentMethods::empty();
    for m in &s.assignment {
        c.assignment |= match m {
            WccpAssignment::Hash => AssignmentMethods::HASH,
            WccpAssignment::Mask => AssignmentMethods::MASK,
        };
    }
    c.group_list = s.caches.clone();
    c
}

impl WccpDriver {
    /// A driver serving `services`, sending through `outbox`.
    pub fn new(services: &[WccpServiceConf], shared: Arc<Shared>) -> anyhow::Result<WccpDriver> {
        let outbox = shared.outbox.clone();
        let mut engine = RouterEngine::new();
        for s in services {
            engine
                .add_service(service_config(s))
                .map_err(|e| anyhow::anyhow!("WCCP service {}: {e}", s.id))?;
            tracing::info!(
                service = s.id,
                md5 = s.password.is_some(),
                "WCCP service group configured"
            );
        }
        Ok(WccpDriver {
            engine,
            outbox,
            buf: Vec::with_capacity(2048),
            assignments: BTreeMap::new(),
            outbox_full: 0,
            shared,
        })
    }

    /// One datagram to UDP 2048 on one of our addresses.
    pub fn handle(&mut self, d: LocalDatagram, tables: &Tables) {
        let now = Instant::now();
        let src = *d.src.ip();
        // L2 forwarding is only for caches on the network the HERE_I_AM came in on.
        let adjacent = tables
            .ifaces
            .get(d.rx_if as usize)
            .is_some_and(|i| i.contains(src));
        self.engine.set_l2_adjacent(now, src, adjacent);
        self.engine
            .handle_message(now, src, *d.dst.ip(), &d.payload);
        self.drain(now);
    }

    /// The engine's next deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.engine.poll_timeout()
    }

    /// Runs the engine's timers.
    pub fn on_timeout(&mut self) {
        let now = Instant::now();
        self.engine.handle_timeout(now);
        self.drain(now);
    }

    fn drain(&mut self, now: Instant) {
        while let Some(t) = self.engine.poll_transmit(now, &mut self.buf) {
            let payload = self.buf.get(..t.size).unwrap_or_default().to_vec();
            let d = OutDatagram {
                src: SocketAddrV4::new(t.src, WCCP_PORT),
                dst: SocketAddrV4::new(t.dst, WCCP_PORT),
                payload,
            };
            if self.outbox.send(d).is_err() {
                self.outbox_full += 1;
                tracing::warn!(cache = %t.dst, "outbox full: a WCCP datagram was not sent");
            }
        }
        let mut changed = false;
        while let Some(ev) = self.engine.poll_event() {
            match ev {
                RouterEvent::AssignmentChanged {
                    service,
                    assignment,
                } => {
                    tracing::info!(service, key = ?assignment.key(), "WCCP assignment changed");
                    self.assignments.insert(service, assignment);
                    changed = true;
                }
                RouterEvent::CacheUsable {
                    service,
                    cache,
                    methods,
                } => {
                    tracing::info!(service, %cache, ?methods, "WCCP cache usable");
                }
                RouterEvent::CacheLost { service, cache } => {
                    tracing::warn!(service, %cache, "WCCP cache lost");
                }
            }
        }
        if changed {
            // The data plane reads assignments with its table snapshot: publish a new one.
            let old = self.shared.tables.load_full();
            let plane = WccpPlane::new(self.assignments.iter().map(|(id, a)| (*id, a.clone())));
            self.shared.tables.store(Arc::new(Tables {
                wccp: Arc::new(plane),
                ..(*old).clone()
            }));
        }
    }

    /// What `swrouter status` shows about WCCP (`show ip wccp`).
    pub fn status(&self) -> WccpStatus {
        let now = Instant::now();
        let services = self
            .engine
            .services()
            .into_iter()
            .map(|s| WccpServiceStatus {
                id: s.service_id,
                kind: format!("{:?}", s.service_type).to_lowercase(),
                security: format!("{:?}", s.security).to_lowercase(),
                definition: s.definition.as_ref().map(|d| format!("{d:?}")),
                router_ids: s.router_ids.iter().map(|r| r.to_string()).collect(),
                receive_id: s.receive_id,
                change_number: s.member_change_number,
                key: format!("{:?}", s.key),
                designated_cache: s.designated_cache.map(|c| c.to_string()),
                assignment_method: s.assignment_method.map(|m| format!("{m:?}").to_lowercase()),
                caches: s
                    .caches
                    .iter()
                    .map(|c| WccpCacheStatus {
                        address: c.address.to_string(),
                        phase: match &c.phase {
                            wccp::router::CachePhase::Joining => "joining".into(),
                            wccp::router::CachePhase::Usable(_) => "usable".into(),
                            wccp::router::CachePhase::Unusable(r) => format!("unusable: {r}"),
                        },
                        usable: c.usable,
                        designated: c.designated,
                        receive_id_echoed: c.receive_id_echoed,
                        methods: c.methods.map(|m| {
                            format!(
                                "{:?}/{:?}/{:?}",
                                m.forwarding, m.packet_return, m.assignment
                            )
                            .to_lowercase()
                        }),
                        weight: c.weight,
                        buckets: c.buckets,
                        mask_values: c.mask_values,
                        last_seen_secs: now.saturating_duration_since(c.last_seen).as_secs(),
                        l2_adjacent: c.l2_adjacent,
                    })
                    .collect(),
                messages_in: s.counters.rx.here_i_am
                    + s.counters.rx.redirect_assign
                    + s.counters.rx.other,
                drops: s
                    .counters
                    .drops
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
            })
            .collect();
        let c = self.engine.counters();
        WccpStatus {
            services,
            received: counts(&c.rx),
            sent: counts(&c.tx),
            drops: c.drops.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            outbox_full: self.outbox_full,
        }
    }
}

fn counts(m: &wccp::engine::MessageCounts) -> BTreeMap<String, u64> {
    [
        ("here-i-am", m.here_i_am),
        ("i-see-you", m.i_see_you),
        ("redirect-assign", m.redirect_assign),
        ("removal-query", m.removal_query),
        ("other", m.other),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}
