//! The VID manager: the switch processor's state (seed claims 4, 5, 7, 8, 10).
//!
//! A VID (virtual identifier) names a block of outside ports, the same block on every pool
//! address. The worker that owns a VID allocates the outside ports of its new sessions from that
//! block, so every packet the outside sends back carries the VID in its destination port (or
//! ICMP identifier) and the line interface finds the worker with a shift (claims 2, 12).
//!
//! **Geometry.** The port range `min..=max` is cut into blocks of `2^shift` ports, the largest
//! power of two that still gives at least [`SPARE_FACTOR`] × workers whole VIDs. The ports past
//! the last whole block form one more, shorter VID, so no port of the range is lost (with the
//! default range and 2 workers, 64512 ports make 7 blocks of 8192 and an eighth of 7168; with
//! 16 workers, 63 blocks of 1024). A power of two makes [`Geometry::vid_of_port`] a
//! subtraction and a shift.
//!
//! **Spares.** Half the VIDs (or more) start free. A worker that dies leaves its VIDs with their
//! backups, which keep serving the existing sessions but allocate new ports only from their own
//! home VID; a backup releases an adopted VID when its last session there has gone
//! ([`VidManager::release_vid`]). A restarting worker is given the free VID that has been free
//! longest (a FIFO), so it gets a fresh block while its old one is still draining, and may get
//! its old one back later. Stale packets to a recycled block meet no session and are filtered.
//! When no VID is free (more failures than spares while sessions keep the adopted VIDs busy),
//! a worker that adopted one hands it back: its sessions move to the restarted worker, which
//! makes the VID its home, and the giver becomes the VID's backup ([`Grant::handed_back_by`]).
//!
//! **Ownership.** Each VID has an owner and a backup (a different worker, claim 7). When a
//! worker fails its VIDs pass to their backups in one step (claim 14 by table update) and each
//! gets a new backup; the returned [`VidChange`]s tell the driver whom to resynchronise.

use std::collections::VecDeque;

/// A worker (the seed's "processor") index, `0..workers`.
pub type WorkerId = u16;
/// A virtual identifier: the index of a port block.
pub type Vid = u16;

/// VIDs per worker the geometry provides at least: one home VID each plus as many spares.
pub const SPARE_FACTOR: u32 = 2;

/// How the port range is cut into VID blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// First port of block 0.
    pub port_min: u16,
    /// Block size is `1 << shift`.
    pub shift: u8,
    /// Number of blocks (the last may be shorter than `1 << shift`).
    pub vids: u16,
    /// Last port of the range (the end of the last block).
    pub port_max: u16,
}

impl Geometry {
    /// Blocks for `workers` over `port_min..=port_max` (see the module doc for the sizing).
    ///
    /// A range too small for [`SPARE_FACTOR`] blocks per worker still gets one block of at
    /// least one port per worker if it can (`Config::validate` rejects such ranges first).
    pub fn new(port_min: u16, port_max: u16, workers: u16) -> Geometry {
        let ports = (u32::from(port_max) + 1)
            .saturating_sub(u32::from(port_min))
            .max(1);
        let want = SPARE_FACTOR * u32::from(workers.max(1));
        // Largest power of two `b` with ports / b >= want.
        let per = (ports / want).max(1);
        let shift = 31 - per.leading_zeros();
        let vids = ports.div_ceil(1 << shift).min(u32::from(u16::MAX));
        Geometry {
            port_min,
            shift: shift as u8,
            vids: vids as u16,
            port_max: (u32::from(port_min) + ports - 1).min(65535) as u16,
        }
    }

    /// Ports per whole block.
    #[inline]
    pub fn block_len(&self) -> u32 {
        1 << self.shift
    }

    /// Ports in `vid`'s block: [`Geometry::block_len`], less for the last block when the range
    /// does not divide evenly.
    #[inline]
    pub fn len_of(&self, vid: Vid) -> u32 {
        let start = u32::from(self.block_start(vid));
        (u32::from(self.port_max) + 1)
            .saturating_sub(start)
            .min(self.block_len())
    }

    /// First port of `vid`'s block.
    #[inline]
    pub fn block_start(&self, vid: Vid) -> u16 {
        // vid < vids, so the block lies inside the configured range and fits a u16.
        (u32::from(self.port_min) + (u32::from(vid) << self.shift)) as u16
    }

    /// The VID whose block holds `port`; `None` below the range or past the last whole block.
    /// O(1): the line interface runs this on every outside packet.
    #[inline]
    pub fn vid_of_port(&self, port: u16) -> Option<Vid> {
        if port > self.port_max {
            return None;
        }
        let off = port.checked_sub(self.port_min)?;
        let vid = off >> self.shift;
        (vid < self.vids).then_some(vid)
    }
}

/// Owner and backup of one VID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VidEntry {
    /// The worker that owns the block (allocates from it if it is its home VID).
    pub owner: Option<WorkerId>,
    /// The worker that mirrors the owner's sessions of this VID and takes over on failure.
    pub backup: Option<WorkerId>,
}

/// The read-only table the line interface dispatches with (claim 5): VID → owner/backup and
/// which workers are operational. The router publishes a copy after every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VidTable {
    /// The block geometry.
    pub geometry: Geometry,
    /// Per VID, indexed by VID.
    pub entries: Vec<VidEntry>,
    /// Per worker: operational or not.
    pub operational: Vec<bool>,
}

impl VidTable {
    /// The worker to hand a packet of `vid` to: the owner if operational, else the backup if
    /// operational (claim 14), else none.
    #[inline]
    pub fn worker_for(&self, vid: Vid) -> Option<WorkerId> {
        let e = self.entries.get(usize::from(vid))?;
        let up = |w: WorkerId| self.operational.get(usize::from(w)).copied() == Some(true);
        match (e.owner, e.backup) {
            (Some(o), _) if up(o) => Some(o),
            (_, Some(b)) if up(b) => Some(b),
            _ => None,
        }
    }
}

/// What the switch processor picked for a set-up request (claims 1, 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    /// The worker that creates the session.
    pub worker: WorkerId,
    /// Its home VID: the new session's outside port comes from this block.
    pub vid: Vid,
    /// The backup of that VID, if another worker is operational.
    pub backup: Option<WorkerId>,
}

/// What a VID request gives a starting or restarted worker (claims 10, 15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The worker's home VID.
    pub vid: Vid,
    /// Its backup.
    pub backup: Option<WorkerId>,
    /// VIDs that had no backup and now have this worker: their owners must send it a snapshot.
    pub backup_for: Vec<VidChange>,
    /// When no VID was free: the worker that held this (adopted) VID and hands it back. It
    /// passes its sessions of the VID to the new owner and becomes the VID's backup.
    pub handed_back_by: Option<WorkerId>,
}

/// One change of ownership or backup, for the driver to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VidChange {
    /// `to` now owns `vid` (it was `from`'s): `to` turns its shadow sessions of `vid` live and
    /// sends a snapshot of them to `backup`.
    Takeover {
        /// The VID.
        vid: Vid,
        /// The failed owner.
        from: WorkerId,
        /// The old backup, now owner.
        to: WorkerId,
        /// The new backup.
        backup: Option<WorkerId>,
    },
    /// `vid`'s owner failed with no operational backup: its sessions are lost and the VID is
    /// free again.
    Lost {
        /// The VID.
        vid: Vid,
        /// The failed owner.
        from: WorkerId,
    },
    /// `vid` has a new backup: `owner` sends it a snapshot of its sessions of `vid`, and the
    /// previous backup (if alive) drops its shadow of `vid`.
    NewBackup {
        /// The VID.
        vid: Vid,
        /// Its owner.
        owner: WorkerId,
        /// The new backup.
        backup: WorkerId,
        /// The backup it replaces.
        previous: Option<WorkerId>,
    },
}

/// Why a VID request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VidError {
    /// The worker id is past the configured worker count.
    #[error("worker {0} is not configured")]
    NoSuchWorker(WorkerId),
    /// Every VID is owned (too many failed workers still draining).
    #[error("no free VID left for worker {0}")]
    NoFreeVid(WorkerId),
}

#[derive(Debug, Clone, Copy, Default)]
struct WorkerState {
    operational: bool,
    home: Option<Vid>,
    load: u32,
}

/// The VID manager (claim 4): associations of VIDs with workers, operational state, load.
#[derive(Debug, Clone)]
pub struct VidManager {
    geometry: Geometry,
    entries: Vec<VidEntry>,
    free: VecDeque<Vid>,
    workers: Vec<WorkerState>,
}

impl VidManager {
    /// A manager for `workers` workers; every VID starts free and every worker down.
    pub fn new(geometry: Geometry, workers: u16) -> VidManager {
        VidManager {
            geometry,
            entries: vec![VidEntry::default(); usize::from(geometry.vids)],
            free: (0..geometry.vids).collect(),
            workers: vec![WorkerState::default(); usize::from(workers)],
        }
    }

    /// The geometry.
    pub fn geometry(&self) -> Geometry {
        self.geometry
    }

    /// The table the line interface reads.
    pub fn table(&self) -> VidTable {
        VidTable {
            geometry: self.geometry,
            entries: self.entries.clone(),
            operational: self.workers.iter().map(|w| w.operational).collect(),
        }
    }

    /// Owner and backup of `vid`.
    pub fn entry(&self, vid: Vid) -> Option<VidEntry> {
        self.entries.get(usize::from(vid)).copied()
    }

    /// The home VID of `w`, if it has one.
    pub fn home(&self, w: WorkerId) -> Option<Vid> {
        self.workers.get(usize::from(w)).and_then(|s| s.home)
    }

    /// True when `w` is operational.
    pub fn is_operational(&self, w: WorkerId) -> bool {
        self.workers
            .get(usize::from(w))
            .is_some_and(|s| s.operational)
    }

    /// Free VIDs.
    pub fn free_vids(&self) -> usize {
        self.free.len()
    }

    /// A starting or restarted worker asks for its VID (claim 10). It becomes operational, gets
    /// the longest-free VID as its home with a backup, and becomes the backup of every VID that
    /// had none. A worker that still has a home VID (asking twice) gets the same one.
    pub fn request_vid(&mut self, w: WorkerId) -> Result<Grant, VidError> {
        let i = usize::from(w);
        let state = self.workers.get(i).ok_or(VidError::NoSuchWorker(w))?;
        if let Some(vid) = state.home {
            self.workers[i].operational = true;
            let backup = self.entries[usize::from(vid)].backup;
            return Ok(Grant {
                vid,
                backup,
                backup_for: Vec::new(),
                handed_back_by: None,
            });
        }
        let (vid, handed_back_by) = match self.free.pop_front() {
            Some(v) => (v, None),
            None => {
                let (v, from) = self.adopted_vid().ok_or(VidError::NoFreeVid(w))?;
                (v, Some(from))
            }
        };
        self.workers[i] = WorkerState {
            operational: true,
            home: Some(vid),
            load: 0,
        };
        let backup = handed_back_by.or_else(|| self.pick_backup(w));
        self.entries[usize::from(vid)] = VidEntry {
            owner: Some(w),
            backup,
        };
        // The newcomer backs up every VID without a backup, and every VID a failure left with
        // an adopting owner: those are the ones the failure piled onto the survivors.
        let mut backup_for = Vec::new();
        for v in 0..self.entries.len() {
            let e = self.entries[v];
            let Some(owner) = e.owner else { continue };
            let adopted = self.workers[usize::from(owner)].home != Some(v as Vid);
            if owner != w && (e.backup.is_none() || adopted) && e.backup != Some(w) {
                self.entries[v].backup = Some(w);
                backup_for.push(VidChange::NewBackup {
                    vid: v as Vid,
                    owner,
                    backup: w,
                    previous: e.backup,
                });
            }
        }
        Ok(Grant {
            vid,
            backup,
            backup_for,
            handed_back_by,
        })
    }

    /// A VID some operational worker adopted (owns but is not its home), with that worker.
    fn adopted_vid(&self) -> Option<(Vid, WorkerId)> {
        self.entries.iter().enumerate().find_map(|(v, e)| {
            let o = e.owner?;
            let s = self.workers.get(usize::from(o))?;
            (s.operational && s.home != Some(v as Vid)).then_some((v as Vid, o))
        })
    }

    /// Picks the operational worker with the least load and a home VID, and its VID's backup
    /// (claims 1, 7); counts one more unit of load on it so a burst of set-ups spreads.
    pub fn select(&mut self) -> Option<Selection> {
        let (i, s) = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, s)| s.operational && s.home.is_some())
            .min_by_key(|(i, s)| (s.load, *i))?;
        let vid = s.home?;
        self.workers[i].load += 1;
        Some(Selection {
            worker: i as WorkerId,
            vid,
            backup: self.entries[usize::from(vid)].backup,
        })
    }

    /// Sets `w`'s load (its mapping count, reported by the worker).
    pub fn set_load(&mut self, w: WorkerId, load: u32) {
        if let Some(s) = self.workers.get_mut(usize::from(w)) {
            s.load = load;
        }
    }

    /// `w` has failed: in one step, every VID it owned passes to its backup (or is lost without
    /// one), every VID it backed up gets a new backup, and it is no longer operational. Only
    /// VIDs that involve `w` change.
    pub fn worker_failed(&mut self, w: WorkerId) -> Vec<VidChange> {
        let Some(state) = self.workers.get_mut(usize::from(w)) else {
            return Vec::new();
        };
        *state = WorkerState::default();
        let mut changes = Vec::new();
        for v in 0..self.entries.len() {
            let e = self.entries[v];
            let vid = v as Vid;
            if e.owner == Some(w) {
                match e.backup.filter(|&b| self.is_operational(b)) {
                    Some(to) => {
                        let backup = self.pick_backup(to);
                        self.entries[v] = VidEntry {
                            owner: Some(to),
                            backup,
                        };
                        changes.push(VidChange::Takeover {
                            vid,
                            from: w,
                            to,
                            backup,
                        });
                    }
                    None => {
                        self.entries[v] = VidEntry::default();
                        self.free.push_back(vid);
                        changes.push(VidChange::Lost { vid, from: w });
                    }
                }
            } else if e.backup == Some(w) {
                let owner = e.owner;
                let backup = owner.and_then(|o| self.pick_backup(o));
                self.entries[v].backup = backup;
                if let (Some(owner), Some(backup)) = (owner, backup) {
                    changes.push(VidChange::NewBackup {
                        vid,
                        owner,
                        backup,
                        previous: None,
                    });
                }
            }
        }
        changes
    }

    /// `w` has no session left in `vid`, a VID it adopted: the VID becomes free (at the back of
    /// the queue). A worker's home VID is never released this way. False if `w` does not own
    /// `vid` or it is `w`'s home.
    pub fn release_vid(&mut self, w: WorkerId, vid: Vid) -> bool {
        let Some(e) = self.entries.get_mut(usize::from(vid)) else {
            return false;
        };
        if e.owner != Some(w) || self.workers[usize::from(w)].home == Some(vid) {
            return false;
        }
        *e = VidEntry::default();
        self.free.push_back(vid);
        true
    }

    /// `w`'s allocating blocks are full: it gets one more free VID to allocate from (it owns
    /// it as it owns an adopted VID, so the VID goes back to the free queue when its last
    /// session has gone), with a backup. With more than one worker one VID always stays free,
    /// so a restarting worker gets a fresh block without a hand-back. `None` when `w` is not
    /// operational or no VID can be spared.
    pub fn grant_extra(&mut self, w: WorkerId) -> Option<(Vid, Option<WorkerId>)> {
        let state = self.workers.get(usize::from(w))?;
        if !state.operational || state.home.is_none() {
            return None;
        }
        let reserve = usize::from(self.workers.len() > 1);
        if self.free.len() <= reserve {
            return None;
        }
        let vid = self.free.pop_front()?;
        let backup = self.pick_backup(w);
        self.entries[usize::from(vid)] = VidEntry {
            owner: Some(w),
            backup,
        };
        Some((vid, backup))
    }

    /// The worker to give a session the HA peer synced in `vid` (the standby places its
    /// peer's sessions by its own VID table, whatever the peer's worker count): the owner
    /// (or its backup) when operational; for a free VID, the least-loaded operational worker
    /// claims it as it would adopt one (released once its last session has gone), with a
    /// backup. Returns the worker and, when the VID was claimed here, its backup.
    pub fn place_synced(&mut self, vid: Vid) -> Option<(WorkerId, Option<Option<WorkerId>>)> {
        let e = self.entry(vid)?;
        let up = |w: Option<WorkerId>| w.filter(|&w| self.is_operational(w));
        if let Some(w) = up(e.owner).or(up(e.backup)) {
            return Some((w, None));
        }
        if e.owner.is_some() {
            return None;
        }
        let (w, _) = self
            .workers
            .iter()
            .enumerate()
            .filter(|(_, s)| s.operational)
            .min_by_key(|&(i, s)| (s.load, i))?;
        let w = w as WorkerId;
        self.free.retain(|&v| v != vid);
        let backup = self.pick_backup(w);
        self.entries[usize::from(vid)] = VidEntry {
            owner: Some(w),
            backup,
        };
        Some((w, Some(backup)))
    }

    /// The operational worker other than `not` with the least load, for a backup.
    fn pick_backup(&self, not: WorkerId) -> Option<WorkerId> {
        self.workers
            .iter()
            .enumerate()
            .filter(|&(i, s)| s.operational && i != usize::from(not))
            .min_by_key(|&(i, s)| (s.load, i))
            .map(|(i, _)| i as WorkerId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_sizes_blocks_for_spares() {
        let g = Geometry::new(1024, 65535, 2);
        assert_eq!((g.shift, g.vids), (13, 8));
        assert_eq!(g.vid_of_port(1024), Some(0));
        assert_eq!(g.vid_of_port(1024 + 8191), Some(0));
        assert_eq!(g.vid_of_port(1024 + 8192), Some(1));
        assert_eq!(g.vid_of_port(1023), None);
        // The ports past the last whole block are a shorter eighth VID: none is lost.
        assert_eq!(g.vid_of_port(1024 + 7 * 8192), Some(7));
        assert_eq!(g.vid_of_port(65535), Some(7));
        assert_eq!((g.len_of(6), g.len_of(7)), (8192, 7168));
        assert_eq!(g.block_start(3), 1024 + 3 * 8192);
        let g = Geometry::new(1024, 65535, 3);
        assert_eq!((g.block_len(), g.vids), (8192, 8));
        let g = Geometry::new(1024, 65535, 16);
        assert_eq!((g.block_len(), g.vids, g.len_of(62)), (1024, 63, 1024));
        assert_eq!(g.vid_of_port(65535), Some(62));
        assert!(u32::from(g.vids) >= SPARE_FACTOR * 16);
        let g = Geometry::new(1024, 65535, 1);
        assert_eq!((g.block_len(), g.vids, g.len_of(3)), (16384, 4, 15360));
    }

    #[test]
    fn request_select_fail_restart() {
        let mut m = VidManager::new(Geometry::new(1024, 65535, 3), 3);
        let g0 = m.request_vid(0).unwrap();
        assert_eq!((g0.vid, g0.backup), (0, None));
        let g1 = m.request_vid(1).unwrap();
        assert_eq!(g1.backup, Some(0));
        // Worker 1 became the backup of VID 0, which had none.
        assert_eq!(
            g1.backup_for,
            vec![VidChange::NewBackup {
                vid: 0,
                owner: 0,
                backup: 1,
                previous: None,
            }]
        );
        m.request_vid(2).unwrap();
        // Least load first, ties to the lowest id, each selection adds load.
        let picks: Vec<_> = (0..3).map(|_| m.select().unwrap().worker).collect();
        assert_eq!(picks, vec![0, 1, 2]);
        m.set_load(1, 0);
        assert_eq!(m.select().unwrap().worker, 1);

        let changes = m.worker_failed(0);
        let t = m.table();
        assert!(matches!(
            changes[0],
            VidChange::Takeover {
                vid: 0,
                from: 0,
                to: 1,
                ..
            }
        ));
        assert_eq!(t.worker_for(0), Some(1));
        assert!(!m.is_operational(0));
        // A restarted worker gets a fresh VID, not its old one (still owned by the backup), and
        // backs up the VID its failure left adopted.
        let g = m.request_vid(0).unwrap();
        assert_eq!(g.vid, 3);
        assert_eq!(m.entry(0).unwrap().backup, Some(0));
        assert!(g.backup_for.iter().any(|c| matches!(
            c,
            VidChange::NewBackup {
                vid: 0,
                owner: 1,
                backup: 0,
                ..
            }
        )));
        assert!(m.release_vid(1, 0));
        assert!(!m.release_vid(1, 1), "a home VID is never released");
        assert_eq!(m.entry(0), Some(VidEntry::default()));
    }

    #[test]
    fn without_free_vids_an_adopted_one_is_handed_back() {
        // 2 workers, 32 ports: 2 blocks of 16 (no spare).
        let mut m = VidManager::new(Geometry::new(1024, 1055, 1), 2);
        assert_eq!(m.geometry().vids, 2);
        m.request_vid(0).unwrap();
        m.request_vid(1).unwrap();
        m.worker_failed(0);
        assert_eq!(m.free_vids(), 0);
        let g = m.request_vid(0).unwrap();
        assert_eq!((g.vid, g.backup, g.handed_back_by), (0, Some(1), Some(1)));
        assert_eq!(m.entry(0).unwrap().owner, Some(0));
        assert_eq!(m.home(1), Some(1));
    }

    #[test]
    fn backup_serves_while_owner_is_down() {
        let mut m = VidManager::new(Geometry::new(1024, 65535, 2), 2);
        m.request_vid(0).unwrap();
        m.request_vid(1).unwrap();
        let mut t = m.table();
        t.operational[0] = false;
        assert_eq!(t.worker_for(0), Some(1));
        t.operational[1] = false;
        assert_eq!(t.worker_for(0), None);
        assert_eq!(t.worker_for(200), None);
    }

    #[test]
    fn extra_vids_leave_one_free_for_a_restart() {
        let mut m = VidManager::new(Geometry::new(1024, 65535, 2), 2);
        assert_eq!(m.grant_extra(0), None, "not operational yet");
        m.request_vid(0).unwrap();
        m.request_vid(1).unwrap();
        let mut got = Vec::new();
        while let Some((vid, backup)) = m.grant_extra(0) {
            assert_eq!(backup, Some(1));
            assert_eq!(m.entry(vid).unwrap().owner, Some(0));
            got.push(vid);
        }
        assert_eq!(got, vec![2, 3, 4, 5, 6]);
        assert_eq!(m.free_vids(), 1);
        // An extra VID is released like an adopted one once drained; the home never is.
        assert!(m.release_vid(0, 4));
        assert!(!m.release_vid(0, 0));
        // A lone worker may take every VID: no other worker could restart into one.
        let mut m = VidManager::new(Geometry::new(1024, 65535, 1), 1);
        m.request_vid(0).unwrap();
        assert_eq!(m.grant_extra(0), Some((1, None)));
        assert_eq!(m.grant_extra(0), Some((2, None)));
        assert_eq!(m.grant_extra(0), Some((3, None)));
        assert_eq!(m.grant_extra(0), None);
    }

    #[test]
    fn lone_worker_failure_loses_its_vid() {
        let mut m = VidManager::new(Geometry::new(1024, 65535, 2), 2);
        m.request_vid(0).unwrap();
        assert_eq!(
            m.worker_failed(0),
            vec![VidChange::Lost { vid: 0, from: 0 }]
        );
        assert_eq!(m.free_vids(), usize::from(m.geometry().vids));
        assert_eq!(m.request_vid(9), Err(VidError::NoSuchWorker(9)));
    }
}

#[cfg(test)]
mod sync_tests {
    use super::*;

    #[test]
    fn synced_sessions_go_to_the_owner_or_claim_a_free_vid() {
        let g = Geometry::new(1024, 65535, 2);
        let mut m = VidManager::new(g, 2);
        let h0 = m.request_vid(0).unwrap().vid;
        let h1 = m.request_vid(1).unwrap().vid;
        m.set_load(0, 5);
        assert_eq!(m.place_synced(h0), Some((0, None)));
        assert_eq!(m.place_synced(h1), Some((1, None)));
        // A free VID goes to the least-loaded worker, which owns it like an adopted one.
        let free = (0..g.vids).find(|&v| v != h0 && v != h1).unwrap();
        let before = m.free_vids();
        assert_eq!(m.place_synced(free), Some((1, Some(Some(0)))));
        assert_eq!(m.free_vids(), before - 1);
        assert_eq!(m.entry(free).unwrap().owner, Some(1));
        assert_eq!(m.place_synced(free), Some((1, None)), "claimed once");
        assert!(m.release_vid(1, free));
        assert_eq!(m.place_synced(g.vids), None, "no such VID");
    }
}
