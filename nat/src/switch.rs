//! The switch processor (seed claims 1, 4, 5, 7, 10): the VID manager plus the flow table it
//! installs. It sees set-up requests only; everything else the line interface sends straight
//! to a worker.

use crate::config::Config;
use crate::dispatch::{is_setup, FlowTable};
use crate::session::{Endpoint, SessionInfo};
use crate::translate::{self, Kind};
use crate::vid::{
    Geometry, Grant, Selection, Vid, VidChange, VidError, VidManager, VidTable, WorkerId,
};
use crate::worker::WorkerEvent;

/// Switch processor counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwitchCounters {
    /// Set-up requests handled.
    pub setups: u64,
    /// Packets handed to it that were not set-up requests (must stay 0: proves the line
    /// interface sends it set-ups only).
    pub not_setup: u64,
    /// Set-ups for an endpoint already installed (a retransmitted SYN racing its own set-up):
    /// sent on to the endpoint's worker.
    pub already_installed: u64,
    /// Set-ups refused because no worker is operational.
    pub no_worker: u64,
}

/// What the switch processor does with a set-up request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupOutcome {
    /// Hand it to `worker` with `setup = true`; its session's port comes from `vid`.
    ToWorker {
        /// The selected worker.
        worker: WorkerId,
        /// The VID to allocate from (the worker's home).
        vid: Vid,
        /// True when the request created a flow-table entry (a worker refusing the session
        /// must be followed by [`SwitchProcessor::setup_failed`]).
        installed: bool,
    },
    /// Drop it (not a set-up, or no worker).
    Drop,
}

/// Where a synced session goes ([`SwitchProcessor::place_synced`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPlacement {
    /// The worker that holds it.
    pub worker: WorkerId,
    /// Its VID on this node.
    pub vid: Vid,
    /// `Some(backup)` when the VID was free and `worker` claimed it just now (the table must
    /// be published, and the backup drop any stale shadow of it).
    pub claimed: Option<Option<WorkerId>>,
    /// The endpoint's flow-table entry changed: every worker's replica needs it.
    pub flow_installed: bool,
}

/// The switch processor.
#[derive(Debug, Clone)]
pub struct SwitchProcessor {
    vids: VidManager,
    flows: FlowTable,
    /// Counters.
    pub counters: SwitchCounters,
}

impl SwitchProcessor {
    /// A switch processor for a validated `cfg`; `seed` keys the flow table's hash.
    pub fn new(cfg: &Config, seed: u64) -> SwitchProcessor {
        let g = Geometry::new(cfg.port_min, cfg.port_max, cfg.workers);
        SwitchProcessor {
            vids: VidManager::new(g, cfg.workers),
            flows: FlowTable::new(cfg.max_sessions as usize * usize::from(cfg.workers), seed),
            counters: SwitchCounters::default(),
        }
    }

    /// The VID manager.
    pub fn vids(&self) -> &VidManager {
        &self.vids
    }

    /// The flow table the line interface reads.
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// The VID table the line interface reads.
    pub fn table(&self) -> VidTable {
        self.vids.table()
    }

    /// A worker (re)starts and asks for its VID (claim 10).
    pub fn request_vid(&mut self, w: WorkerId) -> Result<Grant, VidError> {
        self.vids.request_vid(w)
    }

    /// A worker's allocating blocks are full: one more VID for it, if one can be spared (see
    /// [`VidManager::grant_extra`]). The caller publishes the table before telling the worker.
    pub fn grant_extra(&mut self, w: WorkerId) -> Option<(Vid, Option<WorkerId>)> {
        self.vids.grant_extra(w)
    }

    /// A set-up request from the line interface: pick the least-loaded worker and its backup
    /// (claims 1, 7), install the endpoint in the flow table (claim 5), and say where it goes.
    pub fn handle_setup(&mut self, pkt: &[u8], cfg: &Config) -> SetupOutcome {
        let Ok(f) = translate::parse(pkt) else {
            self.counters.not_setup += 1;
            return SetupOutcome::Drop;
        };
        let setup = matches!(f.kind, Kind::Plain | Kind::EchoRequest)
            && is_setup(f.proto, f.tcp_flags, cfg.non_syn);
        if !setup {
            self.counters.not_setup += 1;
            return SetupOutcome::Drop;
        }
        let ep = Endpoint {
            proto: f.proto,
            addr: f.src,
            port: f.sport,
        };
        if let Some(vid) = self.flows.get(ep) {
            self.counters.already_installed += 1;
            return match self.table_worker(vid) {
                Some(worker) => SetupOutcome::ToWorker {
                    worker,
                    vid,
                    installed: false,
                },
                None => SetupOutcome::Drop,
            };
        }
        let Some(Selection { worker, vid, .. }) = self.vids.select() else {
            self.counters.no_worker += 1;
            return SetupOutcome::Drop;
        };
        self.counters.setups += 1;
        self.flows.install(ep, vid);
        SetupOutcome::ToWorker {
            worker,
            vid,
            installed: true,
        }
    }

    fn table_worker(&self, vid: Vid) -> Option<WorkerId> {
        let e = self.vids.entry(vid)?;
        e.owner
            .filter(|&o| self.vids.is_operational(o))
            .or(e.backup.filter(|&b| self.vids.is_operational(b)))
    }

    /// The selected worker refused the session (no port, table full): forget the endpoint.
    pub fn setup_failed(&mut self, pkt: &[u8]) {
        if let Ok(f) = translate::parse(pkt) {
            self.flows.remove(Endpoint {
                proto: f.proto,
                addr: f.src,
                port: f.sport,
            });
        }
    }

    /// Applies a worker's events: flow removals and moves, drained VIDs released.
    pub fn handle_event(&mut self, from: WorkerId, ev: WorkerEvent) {
        match ev {
            WorkerEvent::FlowGone(ep) => {
                self.flows.remove(ep);
            }
            WorkerEvent::FlowMoved(ep, vid) => self.flows.install(ep, vid),
            WorkerEvent::VidDrained(vid) => {
                self.vids.release_vid(from, vid);
            }
            // The driver answers it with [`SwitchProcessor::grant_extra`].
            WorkerEvent::NeedVid => {}
        }
    }

    /// Where a session the HA peer synced goes on this node: its outside port's VID in this
    /// node's geometry, that VID's worker (claiming a free VID for one, see
    /// [`VidManager::place_synced`]), and the endpoint installed in the flow table so its
    /// outbound packets reach that worker. `None` when the port is outside this node's range
    /// or no worker is operational.
    pub fn place_synced(&mut self, info: &SessionInfo) -> Option<SyncPlacement> {
        let vid = self.vids.geometry().vid_of_port(info.outside_port)?;
        let (worker, claimed) = self.vids.place_synced(vid)?;
        let ep = info.endpoint();
        let flow_installed = self.flows.get(ep) != Some(vid);
        if flow_installed {
            self.flows.install(ep, vid);
        }
        Some(SyncPlacement {
            worker,
            vid,
            claimed,
            flow_installed,
        })
    }

    /// The worker holding the session of endpoint `ep` (a synced delete goes there).
    pub fn worker_of(&self, ep: Endpoint) -> Option<WorkerId> {
        self.table_worker(self.flows.get(ep)?)
    }

    /// A worker's load report (its mapping count).
    pub fn set_load(&mut self, w: WorkerId, load: u32) {
        self.vids.set_load(w, load);
    }

    /// `w` failed: its VIDs move to their backups in one step; lost VIDs leave the flow table.
    pub fn worker_failed(&mut self, w: WorkerId) -> Vec<VidChange> {
        let changes = self.vids.worker_failed(w);
        for c in &changes {
            if let VidChange::Lost { vid, .. } = *c {
                self.flows.remove_vid(vid);
            }
        }
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Prefix, Rule};
    use crate::translate::build;
    use netwire::tcp::flags;
    use std::net::Ipv4Addr;

    #[test]
    fn setups_only_and_installs() {
        let cfg = Config {
            rules: vec![Rule {
                inside: vec![Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 8)],
                outside: 1,
                pool: vec![Ipv4Addr::new(192, 0, 2, 1)],
            }],
            workers: 2,
            ..Config::default()
        };
        let mut sp = SwitchProcessor::new(&cfg, 7);
        let (i, r) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(198, 51, 100, 1));
        let syn = build::tcp((i, 1000), (r, 80), flags::SYN, 0);
        assert_eq!(
            sp.handle_setup(&syn, &cfg),
            SetupOutcome::Drop,
            "no worker yet"
        );
        sp.request_vid(0).unwrap();
        sp.request_vid(1).unwrap();
        let SetupOutcome::ToWorker {
            worker,
            vid,
            installed,
        } = sp.handle_setup(&syn, &cfg)
        else {
            panic!()
        };
        assert!(installed);
        assert_eq!(sp.vids().home(worker), Some(vid));
        // The retransmitted SYN goes to the same worker without a new selection.
        assert_eq!(
            sp.handle_setup(&syn, &cfg),
            SetupOutcome::ToWorker {
                worker,
                vid,
                installed: false
            }
        );
        let ack = build::tcp((i, 1000), (r, 80), flags::ACK, 0);
        assert_eq!(sp.handle_setup(&ack, &cfg), SetupOutcome::Drop);
        assert_eq!(sp.counters.not_setup, 1);
        sp.setup_failed(&syn);
        assert!(sp.flows().is_empty());
    }
}
