//! The receiver's mirror of the sender's tables, and order-independent digests to compare two
//! replicas (or a replica with the sender's own state).

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::record::{Op, Record, RecordRef, TableId};

/// One entry: the value and the resync mark it was last confirmed under (0: none).
#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    mark: u32,
}

/// One table's map and running digest.
#[derive(Debug, Clone, Default)]
struct Table {
    map: HashMap<Vec<u8>, Entry>,
    digest: u64,
}

/// Per-table state: key → value, applied in order.
#[derive(Debug, Clone, Default)]
pub struct Replica {
    tables: BTreeMap<TableId, Table>,
    last_mark: u32,
    /// With [`Replica::log_changes`]: every change to the contents, in order, until taken.
    changes: Option<VecDeque<Record>>,
}

/// One table's summary: entry count and an order-independent 64-bit digest of its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableDigest {
    /// Entries.
    pub count: u64,
    /// Wrapping sum of every entry's hash: equal contents give equal digests whatever the
    /// insertion order.
    pub digest: u64,
}

/// Digests of every non-empty table; compare two with `==`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Digests(pub BTreeMap<TableId, TableDigest>);

impl Digests {
    /// Adds one entry (for a sender that digests its own state to compare with the replica).
    pub fn add(&mut self, table: TableId, key: &[u8], value: &[u8]) {
        let d = self.0.entry(table).or_default();
        d.count += 1;
        d.digest = d.digest.wrapping_add(entry_hash(table, key, value));
    }

    /// Digests of a set of (table, key, value) entries.
    pub fn of<'a>(entries: impl IntoIterator<Item = (TableId, &'a [u8], &'a [u8])>) -> Digests {
        let mut d = Digests::default();
        for (t, k, v) in entries {
            d.add(t, k, v);
        }
        d
    }
}

#[inline]
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn hash_bytes(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = mix(seed ^ (bytes.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = mix(h ^ u64::from_le_bytes(w)).rotate_left(23);
    }
    let mut w = [0u8; 8];
    w[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    mix(h ^ u64::from_le_bytes(w))
}

/// The hash of one entry (not cryptographic: replicas compare their own honest contents).
pub fn entry_hash(table: TableId, key: &[u8], value: &[u8]) -> u64 {
    let k = hash_bytes(u64::from(table.0) + 1, key);
    mix(hash_bytes(k, value) ^ k.rotate_left(17))
}

impl Replica {
    /// An empty replica.
    pub fn new() -> Replica {
        Replica::default()
    }

    /// Starts (or stops) logging changes for [`Replica::take_change`]: an upsert that adds
    /// an entry or changes its value, a delete of an existing entry, an entry a resync swept
    /// (as a delete). Re-confirming an unchanged value is not a change.
    pub fn log_changes(&mut self, on: bool) {
        self.changes = on.then(VecDeque::new);
    }

    /// The oldest change not yet taken (with [`Replica::log_changes`] on).
    pub fn take_change(&mut self) -> Option<Record> {
        self.changes.as_mut()?.pop_front()
    }

    /// Applies one record.
    pub fn apply(&mut self, rec: RecordRef<'_>) {
        self.apply_marked(rec, 0);
    }

    /// Applies one record, remembering `mark` on an upserted entry.
    pub(crate) fn apply_marked(&mut self, rec: RecordRef<'_>, mark: u32) {
        let table = self.tables.entry(rec.table).or_default();
        match rec.op {
            Op::Upsert => {
                let h = entry_hash(rec.table, rec.key, rec.value);
                if let Some(e) = table.map.get_mut(rec.key) {
                    if e.value != rec.value {
                        if let Some(log) = self.changes.as_mut() {
                            log.push_back(rec.to_owned());
                        }
                    }
                    table.digest = table
                        .digest
                        .wrapping_sub(entry_hash(rec.table, rec.key, &e.value))
                        .wrapping_add(h);
                    e.value.clear();
                    e.value.extend_from_slice(rec.value);
                    e.mark = mark;
                } else {
                    if let Some(log) = self.changes.as_mut() {
                        log.push_back(rec.to_owned());
                    }
                    table.digest = table.digest.wrapping_add(h);
                    table.map.insert(
                        rec.key.to_vec(),
                        Entry {
                            value: rec.value.to_vec(),
                            mark,
                        },
                    );
                }
            }
            Op::Delete => {
                if let Some(e) = table.map.remove(rec.key) {
                    table.digest = table
                        .digest
                        .wrapping_sub(entry_hash(rec.table, rec.key, &e.value));
                    if let Some(log) = self.changes.as_mut() {
                        log.push_back(rec.to_owned());
                    }
                }
            }
        }
    }

    /// Marks the key's entry (if any) as confirmed under `mark`.
    #[cfg(test)]
    pub(crate) fn mark(&mut self, table: TableId, key: &[u8], mark: u32) {
        if let Some(e) = self.tables.get_mut(&table).and_then(|t| t.map.get_mut(key)) {
            e.mark = mark;
        }
    }

    /// A fresh mark for a resync (never 0).
    pub(crate) fn next_mark(&mut self) -> u32 {
        self.last_mark = self.last_mark.wrapping_add(1).max(1);
        self.last_mark
    }

    /// Removes every entry not confirmed under `mark`; returns how many.
    pub(crate) fn sweep(&mut self, mark: u32) -> u64 {
        let mut removed = 0;
        for (&id, table) in self.tables.iter_mut() {
            let before = table.map.len();
            let mut digest = table.digest;
            let log = &mut self.changes;
            table.map.retain(|k, e| {
                let keep = e.mark == mark;
                if !keep {
                    digest = digest.wrapping_sub(entry_hash(id, k, &e.value));
                    if let Some(log) = log.as_mut() {
                        log.push_back(Record::delete(id, k.clone()));
                    }
                }
                keep
            });
            table.digest = digest;
            removed += (before - table.map.len()) as u64;
        }
        removed
    }

    /// The value of `key` in `table`.
    pub fn get(&self, table: TableId, key: &[u8]) -> Option<&[u8]> {
        self.tables.get(&table)?.map.get(key).map(|e| &e.value[..])
    }

    /// Entries in `table`.
    pub fn len(&self, table: TableId) -> usize {
        self.tables.get(&table).map_or(0, |t| t.map.len())
    }

    /// Entries in all tables.
    pub fn total(&self) -> usize {
        self.tables.values().map(|t| t.map.len()).sum()
    }

    /// True when every table is empty.
    pub fn is_empty(&self) -> bool {
        self.total() == 0
    }

    /// The entries of `table` (in no particular order): what the router installs on take-over.
    pub fn iter(&self, table: TableId) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.tables
            .get(&table)
            .into_iter()
            .flat_map(|t| t.map.iter().map(|(k, e)| (&k[..], &e.value[..])))
    }

    /// The tables that have entries.
    pub fn tables(&self) -> impl Iterator<Item = TableId> + '_ {
        self.tables
            .iter()
            .filter(|(_, t)| !t.map.is_empty())
            .map(|(&id, _)| id)
    }

    /// Digests of every non-empty table (kept up to date on every change: O(tables)).
    pub fn digests(&self) -> Digests {
        Digests(
            self.tables
                .iter()
                .filter(|(_, t)| !t.map.is_empty())
                .map(|(&id, t)| {
                    (
                        id,
                        TableDigest {
                            count: t.map.len() as u64,
                            digest: t.digest,
                        },
                    )
                })
                .collect(),
        )
    }

    /// Empties every table.
    pub fn clear(&mut self) {
        self.tables.clear();
    }

    /// Empties one table (no change is logged: the caller drops its own copy).
    pub fn clear_table(&mut self, table: TableId) {
        self.tables.remove(&table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_order_independent_and_tracks_changes() {
        let t = TableId::NAT_SESSION;
        let mut a = Replica::new();
        let mut b = Replica::new();
        a.apply(RecordRef::upsert(t, b"1", b"x"));
        a.apply(RecordRef::upsert(t, b"2", b"y"));
        b.apply(RecordRef::upsert(t, b"2", b"old"));
        b.apply(RecordRef::upsert(t, b"3", b"z"));
        b.apply(RecordRef::upsert(t, b"1", b"x"));
        assert_ne!(a.digests(), b.digests());
        b.apply(RecordRef::delete(t, b"3"));
        b.apply(RecordRef::upsert(t, b"2", b"y"));
        assert_eq!(a.digests(), b.digests());
        assert_eq!(
            a.digests(),
            Digests::of([(t, &b"2"[..], &b"y"[..]), (t, &b"1"[..], &b"x"[..])])
        );
        // Same key and value in another table is a different entry.
        let mut c = Replica::new();
        c.apply(RecordRef::upsert(TableId::AFFINITY, b"1", b"x"));
        c.apply(RecordRef::upsert(TableId::AFFINITY, b"2", b"y"));
        assert_ne!(a.digests(), c.digests());
        // Emptied tables vanish from the digests.
        a.apply(RecordRef::delete(t, b"1"));
        a.apply(RecordRef::delete(t, b"2"));
        assert_eq!(a.digests(), Digests::default());
    }

    #[test]
    fn change_log_reports_real_changes_only() {
        let t = TableId::NAT_SESSION;
        let mut r = Replica::new();
        r.apply(RecordRef::upsert(t, b"0", b"x"));
        assert_eq!(r.take_change(), None, "off by default");
        r.log_changes(true);
        r.apply(RecordRef::upsert(t, b"1", b"x"));
        r.apply(RecordRef::upsert(t, b"1", b"x"));
        r.apply(RecordRef::upsert(t, b"1", b"y"));
        r.apply(RecordRef::delete(t, b"2"));
        r.apply(RecordRef::delete(t, b"1"));
        let m = r.next_mark();
        assert_eq!(r.sweep(m), 1);
        let got: Vec<Record> = std::iter::from_fn(|| r.take_change()).collect();
        assert_eq!(
            got,
            [
                Record::upsert(t, &b"1"[..], &b"x"[..]),
                Record::upsert(t, &b"1"[..], &b"y"[..]),
                Record::delete(t, &b"1"[..]),
                Record::delete(t, &b"0"[..]),
            ]
        );
    }

    #[test]
    fn sweep_removes_unmarked() {
        let t = TableId::CONFIG;
        let mut r = Replica::new();
        r.apply(RecordRef::upsert(t, b"a", b"1"));
        r.apply(RecordRef::upsert(t, b"b", b"2"));
        let m = r.next_mark();
        r.mark(t, b"a", m);
        assert_eq!(r.sweep(m), 1);
        assert_eq!(r.get(t, b"a"), Some(&b"1"[..]));
        assert_eq!(r.get(t, b"b"), None);
        assert_eq!(r.digests(), Digests::of([(t, &b"a"[..], &b"1"[..])]));
    }
}
