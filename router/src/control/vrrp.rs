//! The VRRP driver (issue 15): one `vrrp::VirtualRouter` per `[[ha.vrrp]]`, run on the control
//! plane's clock.
//!
//! Advertisements reach it from the local-delivery stage's queue (protocol 112 to 224.0.0.18 on
//! an interface that speaks VRRP) and are checked by `vrrp::wire::parse_ipv4` (TTL 255, both
//! checksums, lengths); what it sends (advertisements from the virtual MAC, gratuitous ARP
//! bursts) goes out whole through the outbox's frame entry. Roles are published to the data
//! plane (`tables::vrrp::VrrpPlane`) before anything is sent, so a new master routes for the
//! virtual MAC and answers ARP for the virtual addresses by the time its gratuitous ARPs land.
//!
//! Every state change is a [`Transition`] (logged, and kept as the instance's last one for
//! status); that is where a later state-sync slice learns this router's role changed.

use crate::ha_status::{HaStatus, TransitionStatus, VrrpIfaceStatus, VrrpStatus};
use crate::outbox::Outbox;
use crate::tables::local::VrrpDatagram;
use crate::tables::vrrp::VrrpPlane;
use crate::tables::{IfId, Iface};
use ::vrrp::wire::RxErrors;
use ::vrrp::{Action, BackupCause, MasterCause, State, VirtualRouter};
use anyhow::{Context, Result};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A state change of one virtual router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// When, on the control plane's clock.
    pub at: Instant,
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// Why (kebab-case, with the peer when one caused it).
    pub cause: String,
}

struct Instance {
    iface: IfId,
    iface_name: String,
    vr: VirtualRouter,
    /// The current master's primary address, as far as this router knows.
    master: Option<Ipv4Addr>,
    last: Option<Transition>,
    /// After a planned switchover: the data plane keeps routing frames to the virtual MAC
    /// until then.
    linger_until: Option<Instant>,
}

/// Receive-side drops of one interface.
#[derive(Default)]
struct IfaceRx {
    errors: RxErrors,
    unknown_vrid: u64,
}

/// All virtual routers of the configuration.
pub struct VrrpDriver {
    instances: Vec<Instance>,
    plane: Arc<VrrpPlane>,
    outbox: Outbox,
    /// Indexed by interface id.
    rx: Vec<IfaceRx>,
    outbox_full: u64,
}

impl VrrpDriver {
    /// The data-plane view of `ha` over `ifaces` (every virtual router in backup until
    /// [`VrrpDriver::start`]).
    pub fn plane(ha: &conf::HaConf, ifaces: &[Iface]) -> Result<VrrpPlane> {
        let groups = ha
            .vrrp
            .iter()
            .map(|v| {
                let i = iface_of(ifaces, &v.interface)?;
                Ok((i.id, v.config.vrid, v.config.virtual_addrs.clone()))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(VrrpPlane::new(groups))
    }

    /// The driver for `ha`, whose data-plane view is `plane`; nothing runs until
    /// [`VrrpDriver::start`].
    pub fn new(
        ha: &conf::HaConf,
        ifaces: &[Iface],
        plane: Arc<VrrpPlane>,
        outbox: Outbox,
        now: Instant,
    ) -> Result<VrrpDriver> {
        let mut instances = Vec::new();
        for v in &ha.vrrp {
            let i = iface_of(ifaces, &v.interface)?;
            let vr = VirtualRouter::new(v.config.clone(), now)
                .with_context(|| format!("[[ha.vrrp]] vrid {} on {}", v.config.vrid, i.name))?;
            instances.push(Instance {
                iface: i.id,
                iface_name: i.name.clone(),
                vr,
                master: None,
                last: None,
                linger_until: None,
            });
        }
        Ok(VrrpDriver {
            instances,
            plane,
            rx: (0..ifaces.len()).map(|_| IfaceRx::default()).collect(),
            outbox,
            outbox_full: 0,
        })
    }

    /// Startup event for every virtual router (RFC 5798 §6.4.1): each begins as backup.
    pub fn start(&mut self, now: Instant) {
        for i in 0..self.instances.len() {
            let a = self.instances[i].vr.startup(now);
            self.carry_out(i, a, now);
        }
    }

    /// The earliest timer of any virtual router.
    pub fn deadline(&self) -> Option<Instant> {
        self.instances
            .iter()
            .flat_map(|i| [i.vr.next_deadline(), i.linger_until])
            .flatten()
            .min()
    }

    /// Runs every timer that is due.
    pub fn on_timer(&mut self, now: Instant) {
        for i in 0..self.instances.len() {
            if self.instances[i].linger_until.is_some_and(|t| t <= now) {
                self.instances[i].linger_until = None;
                self.plane.set_linger(i, false);
            }
            if self.instances[i]
                .vr
                .next_deadline()
                .is_some_and(|d| d <= now)
            {
                let a = self.instances[i].vr.on_timer(now);
                self.carry_out(i, a, now);
            }
        }
    }

    /// An advertisement from the data plane: checked, then handed to its virtual router.
    pub fn on_datagram(&mut self, d: &VrrpDatagram, now: Instant) {
        let Some(rx) = self.rx.get_mut(usize::from(d.rx_if)) else {
            return;
        };
        let received = match ::vrrp::wire::parse_ipv4(&d.packet) {
            Ok(r) => r,
            Err(e) => {
                rx.errors.count(&e);
                tracing::debug!(interface = d.rx_if, error = %e, "VRRP advertisement dropped");
                return;
            }
        };
        let vrid = received.advert.vrid();
        let Some(i) = self
            .instances
            .iter()
            .position(|x| x.iface == d.rx_if && x.vr.config().vrid == vrid)
        else {
            rx.unknown_vrid += 1;
            return;
        };
        let inst = &mut self.instances[i];
        let accepted = inst.vr.counters().adverts_received;
        let actions = inst.vr.on_received(&received, now);
        if inst.vr.counters().adverts_received > accepted && inst.vr.state() == State::Backup {
            // A backup follows whoever advertises; priority 0 means the master is leaving.
            inst.master = (received.advert.priority() != 0).then_some(received.src);
        }
        self.carry_out(i, actions, now);
    }

    /// `swrouter ha switchover`: every virtual router that is master (or only those on
    /// `interface`) hands mastership to its backups with a priority-0 advertisement.
    pub fn switchover(&mut self, interface: Option<&str>, now: Instant) -> Result<String, String> {
        if let Some(name) = interface {
            if !self.instances.iter().any(|i| i.iface_name == name) {
                let known: Vec<&str> = self
                    .instances
                    .iter()
                    .map(|i| i.iface_name.as_str())
                    .collect();
                return Err(format!(
                    "no VRRP virtual router on interface `{name}`; configured on: {}",
                    known.join(", ")
                ));
            }
        }
        let mut moved = Vec::new();
        for i in 0..self.instances.len() {
            let inst = &self.instances[i];
            if interface.is_some_and(|n| n != inst.iface_name) || inst.vr.state() != State::Master {
                continue;
            }
            moved.push(format!(
                "{} vrid {}",
                inst.iface_name,
                inst.vr.config().vrid
            ));
            // Make before break: frames the switches still send here (until the new
            // master's first frames teach them its port) are routed, not dropped. The linger
            // starts before mastership ends so the data plane never sees neither.
            self.plane.set_linger(i, true);
            let a = self.instances[i].vr.switchover(now);
            self.carry_out(i, a, now);
            if self.instances[i].vr.state() == State::Master {
                self.plane.set_linger(i, false);
            } else {
                self.instances[i].linger_until = Some(now + linger(&self.instances[i].vr));
            }
        }
        if moved.is_empty() {
            return Err("this router is master of no virtual router (nothing to hand over); see `swrouter ha status`".into());
        }
        Ok(format!(
            "switchover: sent priority 0 and became backup for {}",
            moved.join(", ")
        ))
    }

    /// Shutdown event (clean stop): masters send priority 0 so backups take over after
    /// Skew_Time instead of Master_Down_Interval.
    pub fn shutdown(&mut self, now: Instant) {
        for i in 0..self.instances.len() {
            let a = self.instances[i].vr.shutdown(now);
            self.carry_out(i, a, now);
        }
    }

    /// True when some virtual router is master (its priority-0 advert must leave on stop).
    pub fn any_master(&self) -> bool {
        self.instances.iter().any(|i| i.vr.state() == State::Master)
    }

    /// The most recent transition of any virtual router, as "interface vrid from→to (cause)".
    pub fn last_cause(&self) -> Option<String> {
        self.instances
            .iter()
            .filter_map(|i| i.last.as_ref().map(|t| (i, t)))
            .max_by_key(|(_, t)| t.at)
            .map(|(i, t)| {
                format!(
                    "{} vrid {} {}→{} ({})",
                    i.iface_name,
                    i.vr.config().vrid,
                    t.from.as_str(),
                    t.to.as_str(),
                    t.cause
                )
            })
    }

    fn carry_out(&mut self, i: usize, actions: Vec<Action>, now: Instant) {
        let inst = &mut self.instances[i];
        // The data plane's role first: what is sent below announces it.
        self.plane.set_role(
            i,
            inst.vr.state() == State::Master,
            inst.vr.accepts_virtual_traffic(),
        );
        for a in actions {
            let from = inst
                .last
                .as_ref()
                .map(|t| t.to)
                .unwrap_or(State::Initialize);
            let (to, cause) = match a {
                Action::SendAdvert { frame, .. } => {
                    if !self.outbox.send_frame(inst.iface, frame) {
                        self.outbox_full += 1;
                    }
                    continue;
                }
                Action::SendGratuitousArp { frames, count } => {
                    for _ in 0..count {
                        for f in &frames {
                            if !self.outbox.send_frame(inst.iface, f.clone()) {
                                self.outbox_full += 1;
                            }
                        }
                    }
                    continue;
                }
                // The role was published above, from the state these actions lead to.
                Action::InstallVirtualMac(_) | Action::RemoveVirtualMac(_) => continue,
                Action::BecameMaster(c) => {
                    inst.master = Some(inst.vr.config().primary_addr);
                    (State::Master, master_cause(c).to_string())
                }
                Action::BecameBackup(c) => {
                    inst.master = match c {
                        BackupCause::HigherPriority { from, .. } => Some(from),
                        _ => None,
                    };
                    (State::Backup, backup_cause(c))
                }
                Action::Stopped => {
                    inst.master = None;
                    (State::Initialize, "shutdown".to_string())
                }
            };
            let cfg = inst.vr.config();
            if to == State::Master || from == State::Master {
                tracing::warn!(interface = %inst.iface_name, vrid = cfg.vrid, from = from.as_str(), to = to.as_str(), cause = %cause, priority = cfg.priority, "VRRP transition");
            } else {
                tracing::info!(interface = %inst.iface_name, vrid = cfg.vrid, from = from.as_str(), to = to.as_str(), cause = %cause, priority = cfg.priority, "VRRP transition");
            }
            inst.last = Some(Transition {
                at: now,
                from,
                to,
                cause,
            });
        }
    }

    /// The HA part of the status snapshot.
    pub fn status(&self, ifaces: &[Iface]) -> HaStatus {
        let now = Instant::now();
        let ms = |cs: u16| u32::from(cs) * 10;
        let vrrp = self
            .instances
            .iter()
            .map(|inst| {
                let vr = &inst.vr;
                let cfg = vr.config();
                let c = vr.counters();
                let d = &c.drops;
                let drops = [
                    ("not-running", d.not_running),
                    ("wrong-vrid", d.wrong_vrid),
                    ("own-advert", d.own_advert),
                    ("owner-discards", d.owner_discards),
                    ("address-mismatch", d.address_mismatch),
                    ("lower-priority", d.lower_priority),
                ]
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| (k.to_string(), n))
                .collect();
                VrrpStatus {
                    interface: inst.iface_name.clone(),
                    vrid: cfg.vrid,
                    state: vr.state().as_str().to_string(),
                    master: inst.master.map(|a| a.to_string()),
                    priority: cfg.priority,
                    advert_interval_ms: ms(cfg.adver_interval),
                    master_advert_interval_ms: ms(vr.master_adver_interval()),
                    master_down_interval_ms: vr.master_down_interval().as_millis() as u32,
                    virtual_addresses: cfg.virtual_addrs.iter().map(|a| a.to_string()).collect(),
                    virtual_mac: vr.virtual_mac().to_string(),
                    preempt: cfg.preempt,
                    accept_mode: cfg.accept_mode,
                    checksum: cfg.checksum.as_str().to_string(),
                    adverts_sent: c.adverts_sent,
                    adverts_received: c.adverts_received,
                    priority_zero_sent: c.priority_zero_sent,
                    priority_zero_received: c.priority_zero_received,
                    became_master: c.became_master,
                    became_backup: c.became_backup,
                    no_pseudo_header_checksum: c.no_pseudo_header_checksum,
                    drops,
                    last_transition: inst.last.as_ref().map(|t| TransitionStatus {
                        secs_ago: now.saturating_duration_since(t.at).as_secs_f64(),
                        from: t.from.as_str().to_string(),
                        to: t.to.as_str().to_string(),
                        cause: t.cause.clone(),
                    }),
                }
            })
            .collect();
        let interfaces = ifaces
            .iter()
            .filter(|i| self.instances.iter().any(|x| x.iface == i.id))
            .map(|i| {
                let rx = &self.rx[usize::from(i.id)];
                VrrpIfaceStatus {
                    interface: i.name.clone(),
                    rx_errors: rx
                        .errors
                        .iter()
                        .filter(|(_, n)| *n > 0)
                        .map(|(k, n)| (k.to_string(), n))
                        .collect(),
                    unknown_vrid: rx.unknown_vrid,
                }
            })
            .collect();
        HaStatus {
            vrrp,
            interfaces,
            outbox_full: self.outbox_full,
            role: if self.any_master() {
                "active"
            } else {
                "standby"
            }
            .to_string(),
            sync: None,
        }
    }
}

/// How long a router that handed mastership over keeps routing frames to the virtual MAC,
/// beyond the longest a backup waits before it takes over after a priority-0 advertisement
/// (Skew_Time, under one advertisement interval).
pub const SWITCHOVER_LINGER: Duration = Duration::from_millis(500);

/// The linger of a virtual router after its switchover: the backups' longest Skew_Time (one
/// advertisement interval) plus [`SWITCHOVER_LINGER`] for the switches to learn the new port.
fn linger(vr: &VirtualRouter) -> Duration {
    Duration::from_millis(u64::from(vr.config().adver_interval) * 10) + SWITCHOVER_LINGER
}

/// How long a clean stop waits for worker 0 to send the priority-0 advertisements.
pub const STOP_GRACE: Duration = Duration::from_millis(50);

fn iface_of<'a>(ifaces: &'a [Iface], name: &str) -> Result<&'a Iface> {
    ifaces
        .iter()
        .find(|i| i.name == name)
        .with_context(|| format!("[[ha.vrrp]] names interface {name}, which is not configured"))
}

fn master_cause(c: MasterCause) -> &'static str {
    match c {
        MasterCause::AddressOwner => "address-owner",
        MasterCause::MasterDown => "master-down",
        MasterCause::MasterResigned => "master-resigned",
        MasterCause::Preempted => "preempted",
    }
}

fn backup_cause(c: BackupCause) -> String {
    match c {
        BackupCause::Startup => "startup".into(),
        BackupCause::HigherPriority { priority, from } => {
            format!("higher-priority {priority} from {from}")
        }
        BackupCause::Switchover => "switchover".into(),
    }
}
