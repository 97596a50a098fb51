//! The per-virtual-router state machine (RFC 5798 §6.4, RFC 9568 §6.4): Initialize, Backup and
//! Master, driven by start-up, shutdown, received advertisements and two timers.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use netwire::MacAddr;

use crate::config::{Config, ConfigError, OWNER_PRIORITY};
use crate::wire::{self, Advert, ChecksumMode, Received};

/// The three states of RFC 5798 §6.4 (RFC 9568 calls Master "Active").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not running: before [`VirtualRouter::startup`] and after [`VirtualRouter::shutdown`].
    Initialize,
    /// Watching the master; takes over when the Master_Down_Timer fires.
    Backup,
    /// Forwarding for the virtual addresses and advertising.
    Master,
}

impl State {
    /// Name for status and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initialize => "initialize",
            Self::Backup => "backup",
            Self::Master => "master",
        }
    }
}

/// Why this router became master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterCause {
    /// Priority 255 at start-up (§6.4.1).
    AddressOwner,
    /// No advertisement for Master_Down_Interval (§6.4.2).
    MasterDown,
    /// The master sent priority 0, and Skew_Time passed (§6.4.2).
    MasterResigned,
    /// Preempt_Mode: the master's priority is lower, its advertisements were ignored (§6.4.2).
    Preempted,
}

/// Why this router became (or stayed) backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackupCause {
    /// Start-up of a non-owner (§6.4.1).
    Startup,
    /// A master with higher priority, or equal priority and a higher address (§6.4.3).
    HigherPriority {
        /// The other master's priority.
        priority: u8,
        /// The other master's primary address.
        from: Ipv4Addr,
    },
    /// [`VirtualRouter::switchover`]: mastership handed away.
    Switchover,
}

/// What the caller must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this advertisement: `frame` is the whole Ethernet frame (from the virtual MAC to
    /// 01:00:5e:00:00:12), for the virtual router's interface.
    SendAdvert {
        /// What it says.
        advert: Advert,
        /// The frame to transmit.
        frame: Vec<u8>,
    },
    /// Broadcast these gratuitous ARPs (one per virtual address, from the virtual MAC), each
    /// `count` times.
    SendGratuitousArp {
        /// One frame per virtual address.
        frames: Vec<Vec<u8>>,
        /// Copies of each.
        count: u8,
    },
    /// Start receiving frames for the virtual MAC and answering ARP for the virtual addresses
    /// with it (§6.4.3: only the master does).
    InstallVirtualMac(MacAddr),
    /// Stop receiving and answering for the virtual MAC.
    RemoveVirtualMac(MacAddr),
    /// Now master.
    BecameMaster(MasterCause),
    /// Now backup.
    BecameBackup(BackupCause),
    /// Now Initialize (after shutdown).
    Stopped,
}

/// Why a received advertisement was not acted on, beyond what [`wire::ParseError`] catches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Drops {
    /// The virtual router is in Initialize.
    pub not_running: u64,
    /// For another VRID (the caller should demultiplex; counted in case it does not).
    pub wrong_vrid: u64,
    /// Our own advertisement, looped back.
    pub own_advert: u64,
    /// We own the addresses (priority 255): adverts are discarded (§7.1).
    pub owner_discards: u64,
    /// Address list differs from ours and the sender is not the owner (§7.1).
    pub address_mismatch: u64,
    /// Lower priority (or equal with a lower address) at a master; lower priority at a
    /// preempting backup (§6.4.2, §6.4.3).
    pub lower_priority: u64,
}

/// What happened, for `swrouter status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Advertisements that passed every check and were acted on.
    pub adverts_received: u64,
    /// Advertisements sent, priority 0 included.
    pub adverts_sent: u64,
    /// Priority-0 advertisements received (a master leaving).
    pub priority_zero_received: u64,
    /// Priority-0 advertisements sent (shutdown, switchover).
    pub priority_zero_sent: u64,
    /// Transitions to Master.
    pub became_master: u64,
    /// Transitions to Backup.
    pub became_backup: u64,
    /// Advertisements accepted under the compatible checksum (no pseudo-header).
    pub no_pseudo_header_checksum: u64,
    /// Owner advertisements accepted although their address list differs from ours (§7.1).
    pub owner_address_mismatch: u64,
    /// Advertisements dropped, by reason.
    pub drops: Drops,
}

/// One virtual router: the RFC state machine, its timers as deadlines, its counters.
#[derive(Debug, Clone)]
pub struct VirtualRouter {
    cfg: Config,
    /// Sorted, for the §7.1 address-list comparison.
    sorted_addrs: Vec<Ipv4Addr>,
    state: State,
    master_adver_interval: u16,
    /// Master_Down_Timer (Backup) or Adver_Timer (Master).
    deadline: Option<Instant>,
    /// What the Master_Down_Timer firing would mean.
    pending: MasterCause,
    started_at: Instant,
    /// Set by [`VirtualRouter::switchover`]; cleared on becoming master or restarting.
    yielded: bool,
    ident: u16,
    counters: Counters,
}

impl VirtualRouter {
    /// A virtual router in Initialize; call [`VirtualRouter::startup`] to run it.
    pub fn new(cfg: Config, now: Instant) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let mut sorted_addrs = cfg.virtual_addrs.clone();
        sorted_addrs.sort_unstable();
        Ok(Self {
            master_adver_interval: cfg.adver_interval,
            sorted_addrs,
            cfg,
            state: State::Initialize,
            deadline: None,
            pending: MasterCause::MasterDown,
            started_at: now,
            yielded: false,
            ident: 0,
            counters: Counters::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Master_Adver_Interval in centiseconds: learnt from the master while Backup (§6.4.2).
    pub fn master_adver_interval(&self) -> u16 {
        self.master_adver_interval
    }

    /// The virtual MAC, 00:00:5e:00:01:VRID.
    pub fn virtual_mac(&self) -> MacAddr {
        wire::virtual_mac(self.cfg.vrid)
    }

    /// When [`VirtualRouter::on_timer`] must next be called (None in Initialize).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// True when the data plane should take packets addressed to the virtual addresses as its
    /// own: the master does if it owns them or Accept_Mode is on (§6.4.3).
    pub fn accepts_virtual_traffic(&self) -> bool {
        self.state == State::Master && (self.cfg.accept_mode || self.cfg.is_owner())
    }

    /// Skew_Time = ((256 − Priority) × Master_Adver_Interval) / 256 (§6.1), kept to the
    /// microsecond rather than truncated to centiseconds.
    pub fn skew_time(&self) -> Duration {
        let cs =
            u64::from(256 - u16::from(self.cfg.priority)) * u64::from(self.master_adver_interval);
        Duration::from_micros(cs * 10_000 / 256)
    }

    /// Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time (§6.1).
    pub fn master_down_interval(&self) -> Duration {
        centis(3 * self.master_adver_interval) + self.skew_time()
    }

    /// Startup event (§6.4.1): the owner becomes master at once, others backup.
    pub fn startup(&mut self, now: Instant) -> Vec<Action> {
        if self.state != State::Initialize {
            return Vec::new();
        }
        self.started_at = now;
        self.yielded = false;
        if self.cfg.priority == OWNER_PRIORITY {
            return self.become_master(now, MasterCause::AddressOwner);
        }
        self.master_adver_interval = self.cfg.adver_interval;
        self.enter_backup(now, self.master_down_interval());
        vec![Action::BecameBackup(BackupCause::Startup)]
    }

    /// Shutdown event (§6.4.2, §6.4.3): a master cancels its timer and sends priority 0 so the
    /// backups take over after Skew_Time; either state goes to Initialize.
    pub fn shutdown(&mut self, _now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.state {
            State::Initialize => return actions,
            State::Master => {
                actions.push(self.send_advert(0));
                actions.push(Action::RemoveVirtualMac(self.virtual_mac()));
            }
            State::Backup => {}
        }
        self.state = State::Initialize;
        self.deadline = None;
        actions.push(Action::Stopped);
        actions
    }

    /// Planned switchover (`swrouter ha switchover`): a master sends priority 0 (the backups
    /// take over after Skew_Time) and becomes backup without preempting back, until it next
    /// becomes master or restarts. If no backup takes over it becomes master again after
    /// Master_Down_Interval, so the addresses are never left without one. Not master: nothing.
    pub fn switchover(&mut self, now: Instant) -> Vec<Action> {
        if self.state != State::Master {
            return Vec::new();
        }
        let actions = vec![
            self.send_advert(0),
            Action::RemoveVirtualMac(self.virtual_mac()),
            Action::BecameBackup(BackupCause::Switchover),
        ];
        self.yielded = true;
        self.master_adver_interval = self.cfg.adver_interval;
        self.enter_backup(now, self.master_down_interval());
        actions
    }

    /// Changes the priority at run time (1..=254; ownership cannot change). It takes effect in
    /// the next advertisement and the next Skew_Time; a lower-priority master is then preempted
    /// by backups in the usual way.
    pub fn set_priority(&mut self, priority: u8) -> Result<(), ConfigError> {
        if priority == 0 {
            return Err(ConfigError::Priority);
        }
        if (priority == OWNER_PRIORITY) != self.cfg.is_owner() {
            return Err(ConfigError::OwnerChange);
        }
        self.cfg.priority = priority;
        Ok(())
    }

    /// Timer expiry: call when `now` reaches [`VirtualRouter::next_deadline`] (earlier calls
    /// do nothing).
    pub fn on_timer(&mut self, now: Instant) -> Vec<Action> {
        match self.deadline {
            Some(due) if due <= now => {}
            _ => return Vec::new(),
        }
        match self.state {
            State::Initialize => Vec::new(),
            // Master_Down_Timer fired (§6.4.2).
            State::Backup => self.become_master(now, self.pending),
            // Adver_Timer fired (§6.4.3).
            State::Master => {
                self.deadline = Some(now + centis(self.cfg.adver_interval));
                vec![self.send_advert(self.cfg.priority)]
            }
        }
    }

    /// A parsed advertisement with its IP header facts: counts the checksum variant, then
    /// [`VirtualRouter::on_advert`].
    pub fn on_received(&mut self, received: &Received, now: Instant) -> Vec<Action> {
        let accepted = self.counters.adverts_received;
        let actions = self.on_advert(&received.advert, received.src, now);
        if received.checksum == ChecksumMode::NoPseudoHeader
            && self.counters.adverts_received > accepted
        {
            self.counters.no_pseudo_header_checksum += 1;
        }
        actions
    }

    /// An advertisement from `src` that passed [`wire::Advert::parse`] (§7.1, §6.4.2, §6.4.3).
    pub fn on_advert(&mut self, advert: &Advert, src: Ipv4Addr, now: Instant) -> Vec<Action> {
        let drops = &mut self.counters.drops;
        if self.state == State::Initialize {
            drops.not_running += 1;
            return Vec::new();
        }
        if advert.vrid() != self.cfg.vrid {
            drops.wrong_vrid += 1;
            return Vec::new();
        }
        if src == self.cfg.primary_addr {
            drops.own_advert += 1;
            return Vec::new();
        }
        // §7.1: the owner discards every advertisement for its VRID.
        if self.cfg.is_owner() {
            drops.owner_discards += 1;
            return Vec::new();
        }
        // §7.1: a list that differs is dropped unless the owner sent it.
        if !self.same_addrs(advert.addrs()) {
            if advert.priority() != OWNER_PRIORITY {
                self.counters.drops.address_mismatch += 1;
                return Vec::new();
            }
            self.counters.owner_address_mismatch += 1;
        }
        self.counters.adverts_received += 1;
        let priority = advert.priority();
        if priority == 0 {
            self.counters.priority_zero_received += 1;
        }
        match self.state {
            State::Initialize => Vec::new(),
            State::Backup => {
                if priority == 0 {
                    // The master is leaving: take over after Skew_Time.
                    self.deadline = Some(now + self.skew_time());
                    self.pending = MasterCause::MasterResigned;
                } else if !self.preempting(now) || priority >= self.cfg.priority {
                    self.master_adver_interval = advert.max_adver_int();
                    self.deadline = Some(now + self.master_down_interval());
                    self.pending = MasterCause::MasterDown;
                } else {
                    // Preempt: ignore the lower master, so the timer runs out.
                    self.counters.drops.lower_priority += 1;
                    self.pending = MasterCause::Preempted;
                }
                Vec::new()
            }
            State::Master => {
                if priority == 0 {
                    // Another master left: assert ourselves at once (§6.4.3).
                    self.deadline = Some(now + centis(self.cfg.adver_interval));
                    vec![self.send_advert(self.cfg.priority)]
                } else if priority > self.cfg.priority
                    || (priority == self.cfg.priority && src > self.cfg.primary_addr)
                {
                    self.master_adver_interval = advert.max_adver_int();
                    self.enter_backup(now, self.master_down_interval());
                    vec![
                        Action::RemoveVirtualMac(self.virtual_mac()),
                        Action::BecameBackup(BackupCause::HigherPriority {
                            priority,
                            from: src,
                        }),
                    ]
                } else {
                    self.counters.drops.lower_priority += 1;
                    Vec::new()
                }
            }
        }
    }

    /// The advertisement this router sends now.
    pub fn advert(&self) -> Advert {
        self.advert_with(self.cfg.priority)
    }

    /// One gratuitous ARP frame per virtual address, from the virtual MAC.
    pub fn gratuitous_arp_frames(&self) -> Vec<Vec<u8>> {
        let mac = self.virtual_mac();
        self.cfg
            .virtual_addrs
            .iter()
            .map(|&addr| wire::gratuitous_arp(mac, addr))
            .collect()
    }

    fn advert_with(&self, priority: u8) -> Advert {
        match Advert::new(
            self.cfg.vrid,
            priority,
            self.cfg.adver_interval,
            self.cfg.virtual_addrs.clone(),
        ) {
            Ok(advert) => advert,
            // Config::validate checked the same bounds as Advert::new.
            Err(e) => unreachable!("validated config made a bad advert: {e}"),
        }
    }

    fn send_advert(&mut self, priority: u8) -> Action {
        let advert = self.advert_with(priority);
        self.ident = self.ident.wrapping_add(1);
        let frame = wire::build_frame(
            &advert,
            self.virtual_mac(),
            self.cfg.primary_addr,
            self.ident,
            self.cfg.checksum,
        );
        self.counters.adverts_sent += 1;
        if priority == 0 {
            self.counters.priority_zero_sent += 1;
        }
        Action::SendAdvert { advert, frame }
    }

    fn become_master(&mut self, now: Instant, cause: MasterCause) -> Vec<Action> {
        self.state = State::Master;
        self.yielded = false;
        self.deadline = Some(now + centis(self.cfg.adver_interval));
        self.counters.became_master += 1;
        vec![
            Action::InstallVirtualMac(self.virtual_mac()),
            self.send_advert(self.cfg.priority),
            Action::SendGratuitousArp {
                frames: self.gratuitous_arp_frames(),
                count: self.cfg.garp_count,
            },
            Action::BecameMaster(cause),
        ]
    }

    fn enter_backup(&mut self, now: Instant, after: Duration) {
        self.state = State::Backup;
        self.deadline = Some(now + after);
        self.pending = MasterCause::MasterDown;
        self.counters.became_backup += 1;
    }

    /// Preempt_Mode as it applies now: off after a switchover and during the preempt delay.
    fn preempting(&self, now: Instant) -> bool {
        self.cfg.preempt
            && !self.yielded
            && now.saturating_duration_since(self.started_at) >= self.cfg.preempt_delay
    }

    fn same_addrs(&self, addrs: &[Ipv4Addr]) -> bool {
        if addrs.len() != self.sorted_addrs.len() {
            return false;
        }
        let mut theirs = addrs.to_vec();
        theirs.sort_unstable();
        theirs == self.sorted_addrs
    }
}

fn centis(cs: u16) -> Duration {
    Duration::from_millis(u64::from(cs) * 10)
}
