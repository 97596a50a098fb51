//! A lab: one switch processor, N workers, and the router's glue between them, run
//! synchronously (every packet is followed by a flush of mirror batches and worker events).

use nat::config::{Config, Prefix, Rule};
use nat::dispatch::{dispatch, Direction, Dispatch};
use nat::switch::{SetupOutcome, SwitchProcessor};
use nat::translate::L4Csum;
use nat::vid::{VidChange, WorkerId};
use nat::worker::{vid_of_record, NatWorker, Verdict, WorkerEvent};
use std::net::Ipv4Addr;

pub const OUTSIDE: u32 = 1;
pub const POOL: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const POOL2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

/// Where a packet went and what happened to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The worker that handled it (the last one, for a hairpin).
    pub worker: Option<WorkerId>,
    /// The dispatch decision (the first one).
    pub dispatch: Dispatch,
    /// The worker's verdict, if one saw it.
    pub verdict: Option<Verdict>,
}

impl Outcome {
    pub fn forwarded(&self) -> bool {
        matches!(self.verdict, Some(Verdict::Forward))
    }
}

pub fn config(workers: u16) -> Config {
    Config {
        rules: vec![Rule {
            inside: vec![Prefix::new(Ipv4Addr::new(10, 0, 0, 0), 8)],
            outside: OUTSIDE,
            pool: vec![POOL, POOL2],
        }],
        workers,
        max_sessions: 4096,
        ..Config::default()
    }
}

pub struct Lab {
    pub cfg: Config,
    pub sp: SwitchProcessor,
    pub workers: Vec<Option<NatWorker>>,
    pub now: u32,
    /// Sessions lost because a VID had no backup when its owner failed.
    pub lost_vids: usize,
    /// VIDs handed back to a restarted worker for want of a free one.
    pub handbacks: usize,
    /// Extra VIDs granted to workers whose blocks were full.
    pub extra_vids: usize,
    events: Vec<WorkerEvent>,
}

impl Lab {
    pub fn new(cfg: Config) -> Lab {
        cfg.validate().unwrap();
        let n = cfg.workers;
        let mut lab = Lab {
            sp: SwitchProcessor::new(&cfg, 99),
            workers: (0..n).map(|_| None).collect(),
            cfg,
            now: 1000,
            lost_vids: 0,
            handbacks: 0,
            extra_vids: 0,
            events: Vec::new(),
        };
        for w in 0..n {
            lab.start(w);
        }
        lab
    }

    pub fn worker(&self, w: WorkerId) -> &NatWorker {
        self.workers[usize::from(w)].as_ref().unwrap()
    }

    fn worker_mut(&mut self, w: WorkerId) -> &mut NatWorker {
        self.workers[usize::from(w)].as_mut().unwrap()
    }

    /// Starts (or restarts) worker `w`: it asks for its VID and becomes a backup where needed.
    pub fn start(&mut self, w: WorkerId) {
        let mut worker = NatWorker::new(w, &self.cfg, 1234 + u64::from(w), self.now);
        let grant = self.sp.request_vid(w).unwrap();
        worker.handle_grant(grant.vid);
        if let Some(from) = grant.handed_back_by {
            let mut recs = Vec::new();
            self.worker_mut(from).hand_back(grant.vid, &mut recs);
            worker.handle_mirror(&recs);
            worker.take_over(grant.vid, self.now);
            self.handbacks += 1;
        }
        self.workers[usize::from(w)] = Some(worker);
        for c in grant.backup_for {
            self.apply_change(c);
        }
    }

    /// Kills worker `w`: its VIDs move to their backups in one step.
    pub fn kill(&mut self, w: WorkerId) {
        self.workers[usize::from(w)] = None;
        for c in self.sp.worker_failed(w) {
            self.apply_change(c);
        }
    }

    fn apply_change(&mut self, c: VidChange) {
        match c {
            VidChange::Takeover {
                vid, to, backup, ..
            } => {
                let now = self.now;
                self.worker_mut(to).take_over(vid, now);
                if let Some(b) = backup {
                    self.resync(vid, to, b);
                }
            }
            VidChange::NewBackup {
                vid,
                owner,
                backup,
                previous,
            } => {
                if let Some(Some(p)) = previous.map(|p| self.workers[usize::from(p)].as_mut()) {
                    p.forget_shadow(vid);
                }
                self.resync(vid, owner, backup);
            }
            VidChange::Lost { vid, .. } => {
                self.lost_vids += 1;
                for w in self.workers.iter_mut().flatten() {
                    w.forget_shadow(vid);
                }
            }
        }
    }

    fn resync(&mut self, vid: u16, owner: WorkerId, backup: WorkerId) {
        let mut snap = Vec::new();
        self.worker(owner).snapshot(vid, &mut snap);
        self.worker_mut(backup).forget_shadow(vid);
        self.worker_mut(backup).handle_mirror(&snap);
    }

    /// An inside packet leaving through the outside interface.
    pub fn send_out(&mut self, pkt: &mut [u8]) -> Outcome {
        let d = dispatch(
            pkt,
            Direction::Outbound(OUTSIDE),
            &self.cfg,
            &self.sp.table(),
            self.sp.flows(),
        );
        let now = self.now;
        let out = match d {
            Dispatch::SetupRequest => match self.sp.handle_setup(pkt, &self.cfg) {
                SetupOutcome::ToWorker {
                    worker,
                    vid,
                    installed,
                } => {
                    let v = self.worker_mut(worker).outbound(
                        pkt,
                        L4Csum::Full,
                        OUTSIDE,
                        vid,
                        true,
                        now,
                    );
                    if installed && !matches!(v, Verdict::Forward | Verdict::Hairpin) {
                        self.sp.setup_failed(pkt);
                    }
                    Outcome {
                        worker: Some(worker),
                        dispatch: d,
                        verdict: Some(v),
                    }
                }
                SetupOutcome::Drop => Outcome {
                    worker: None,
                    dispatch: d,
                    verdict: None,
                },
            },
            Dispatch::ToWorker { worker, vid } => {
                let v =
                    self.worker_mut(worker)
                        .outbound(pkt, L4Csum::Full, OUTSIDE, vid, false, now);
                Outcome {
                    worker: Some(worker),
                    dispatch: d,
                    verdict: Some(v),
                }
            }
            _ => Outcome {
                worker: None,
                dispatch: d,
                verdict: None,
            },
        };
        self.flush();
        if out.verdict == Some(Verdict::Hairpin) {
            let again = self.send_in(pkt);
            return Outcome {
                dispatch: d,
                ..again
            };
        }
        out
    }

    /// A packet arriving on the outside interface.
    pub fn send_in(&mut self, pkt: &mut [u8]) -> Outcome {
        let d = dispatch(
            pkt,
            Direction::Inbound,
            &self.cfg,
            &self.sp.table(),
            self.sp.flows(),
        );
        let now = self.now;
        let out = match d {
            Dispatch::ToWorker { worker, .. } => {
                let v = self.worker_mut(worker).inbound(pkt, L4Csum::Full, now);
                Outcome {
                    worker: Some(worker),
                    dispatch: d,
                    verdict: Some(v),
                }
            }
            _ => Outcome {
                worker: None,
                dispatch: d,
                verdict: None,
            },
        };
        self.flush();
        out
    }

    /// Advances the clock and runs expiry.
    pub fn advance(&mut self, secs: u32) {
        self.now += secs;
        self.flush();
    }

    /// Moves mirror batches to backups and worker events to the switch processor.
    pub fn flush(&mut self) {
        let g = self.sp.vids().geometry();
        let now = self.now;
        for w in 0..self.workers.len() {
            let Some(worker) = self.workers[w].as_mut() else {
                continue;
            };
            let mut batch = Vec::new();
            worker.poll_expired(now, 1_000_000, &mut self.events);
            worker.poll_mirror(&mut batch, usize::MAX);
            for rec in batch {
                let backup = vid_of_record(&g, &rec)
                    .and_then(|v| self.sp.vids().entry(v))
                    .and_then(|e| e.backup);
                if let Some(b) = backup {
                    if let Some(bw) = self.workers[usize::from(b)].as_mut() {
                        bw.handle_mirror(&[rec]);
                    }
                }
            }
            for ev in std::mem::take(&mut self.events) {
                self.sp.handle_event(w as WorkerId, ev);
                match ev {
                    WorkerEvent::VidDrained(v) => {
                        for x in self.workers.iter_mut().flatten() {
                            x.forget_shadow(v);
                        }
                    }
                    WorkerEvent::NeedVid => {
                        if let Some((vid, _)) = self.sp.grant_extra(w as WorkerId) {
                            self.extra_vids += 1;
                            if let Some(x) = self.workers[w].as_mut() {
                                x.handle_extra(vid);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// Packets misdelivered, over all live workers.
    pub fn misdelivered(&self) -> u64 {
        self.workers
            .iter()
            .flatten()
            .map(|w| w.counters.misdelivered)
            .sum()
    }
}
