//! The epoch-numbered id → owner table (design note §3, §5): how it is computed from the
//! membership, how it is stored in etcd's `alloc` key and relayed in the sync stream, and what
//! a node gains and loses between two epochs.
//!
//! **Computation.** [`compute`] splits the 256 ids over the members (sorted by node id) with
//! WCCP's rule ([`wccp::assign::distribute`]): exact largest-remainder quotas by weight, every id
//! stays with its previous owner while that owner is under quota, freed ids go to the member
//! with the largest unfilled share. Every node computes the same table from the same etcd
//! state; a joining node takes exactly its quota, a leaving node's ids are the only ones that
//! move.
//!
//! **Codec** (version 1, big-endian):
//! `version u8 | epoch u64 | nmembers u8 | (node_id u32, weight u16)* | owner[256] u8 |
//! committed_by u32`, where an owner is an index into the member list or `0xFF` for none.
//! [`Allocation::decode`] checks every length and index and never panics.

use core::fmt;

use crate::id::{Id, IDS};

/// A node's id in the cluster (`[cluster] node-id`), unique among the members.
pub type NodeId = u32;

/// Codec version written by [`Allocation::encode`].
pub const VERSION: u8 = 1;

/// Most members one table can name (owner index 0xFF means "none").
pub const MAX_MEMBERS: usize = 255;

const NO_OWNER: u8 = 0xFF;

/// A member as the allocation sees it: its id and weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    /// The member's node id.
    pub node: NodeId,
    /// Its share weight (all 0 = equal shares; otherwise a 0 weight gets no ids).
    pub weight: u16,
}

/// One committed (or proposed) epoch of the id → owner table.
#[derive(Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The epoch number; 0 is the empty table before the first commit.
    pub epoch: u64,
    /// The members the table was computed from, sorted by node id.
    pub members: Vec<Member>,
    /// Each id's owner, always one of `members`.
    pub owners: [Option<NodeId>; IDS],
    /// The node that committed it (0 for the empty table).
    pub committed_by: NodeId,
}

impl fmt::Debug for Allocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Allocation(epoch={}; by={}; ",
            self.epoch, self.committed_by
        )?;
        for m in &self.members {
            write!(f, "{}(w{})={} ", m.node, m.weight, self.count(m.node))?;
        }
        write!(
            f,
            "none={})",
            self.owners.iter().filter(|o| o.is_none()).count()
        )
    }
}

impl Default for Allocation {
    fn default() -> Self {
        Allocation::empty()
    }
}

/// Why a stored table could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The value is shorter or longer than its member count says.
    #[error("allocation table: {have} octets, {need} expected")]
    Length {
        /// Octets expected.
        need: usize,
        /// Octets present.
        have: usize,
    },
    /// A version this build does not know.
    #[error("allocation table version {0}, this build knows version 1")]
    Version(u8),
    /// The member list is not strictly ascending by node id.
    #[error("allocation table: members not sorted or duplicated")]
    Members,
    /// An owner index past the member list.
    #[error("allocation table: id {id} names member index {index} of {members}")]
    Owner {
        /// The id.
        id: Id,
        /// The bad index.
        index: u8,
        /// Number of members.
        members: usize,
    },
}

impl Allocation {
    /// The table before any commit: epoch 0, no members, no owners.
    pub fn empty() -> Allocation {
        Allocation {
            epoch: 0,
            members: Vec::new(),
            owners: [None; IDS],
            committed_by: 0,
        }
    }

    /// Number of ids `node` owns.
    pub fn count(&self, node: NodeId) -> usize {
        self.owners.iter().filter(|o| **o == Some(node)).count()
    }

    /// The ids `node` owns, ascending.
    pub fn ids_of(&self, node: NodeId) -> Vec<Id> {
        (0..IDS)
            .filter(|i| self.owners[*i] == Some(node))
            .map(|i| i as Id)
            .collect()
    }

    /// True when `node` is one of the table's members.
    pub fn has_member(&self, node: NodeId) -> bool {
        self.members.iter().any(|m| m.node == node)
    }

    /// True when both tables give the same members (with weights) and owners, whatever
    /// their epochs: a proposal that would change nothing is not made.
    pub fn same_assignment(&self, other: &Allocation) -> bool {
        self.members == other.members && self.owners == other.owners
    }

    /// The stored form (module docs). Members past [`MAX_MEMBERS`] cannot occur:
    /// [`compute`] keeps at most that many.
    pub fn encode(&self) -> Vec<u8> {
        let n = self.members.len().min(MAX_MEMBERS);
        let mut out = Vec::with_capacity(1 + 8 + 1 + 6 * n + IDS + 4);
        out.push(VERSION);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.push(n as u8);
        for m in &self.members[..n] {
            out.extend_from_slice(&m.node.to_be_bytes());
            out.extend_from_slice(&m.weight.to_be_bytes());
        }
        for o in &self.owners {
            let idx = o
                .and_then(|node| self.members[..n].iter().position(|m| m.node == node))
                .map_or(NO_OWNER, |i| i as u8);
            out.push(idx);
        }
        out.extend_from_slice(&self.committed_by.to_be_bytes());
        out
    }

    /// Decodes the stored form, checking every length, the member order and every owner index.
    pub fn decode(b: &[u8]) -> Result<Allocation, CodecError> {
        let len_err = |need: usize| CodecError::Length {
            need,
            have: b.len(),
        };
        if b.len() < 10 {
            return Err(len_err(10 + IDS + 4));
        }
        if b[0] != VERSION {
            return Err(CodecError::Version(b[0]));
        }
        let mut epoch = [0u8; 8];
        epoch.copy_from_slice(&b[1..9]);
        let n = usize::from(b[9]);
        let need = 10 + 6 * n + IDS + 4;
        if b.len() != need {
            return Err(len_err(need));
        }
        let mut members = Vec::with_capacity(n);
        for c in b[10..10 + 6 * n].chunks_exact(6) {
            let node = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
            let weight = u16::from_be_bytes([c[4], c[5]]);
            if members.last().is_some_and(|m: &Member| m.node >= node) {
                return Err(CodecError::Members);
            }
            members.push(Member { node, weight });
        }
        let at = 10 + 6 * n;
        let mut owners = [None; IDS];
        for (i, (slot, idx)) in owners.iter_mut().zip(&b[at..at + IDS]).enumerate() {
            if *idx == NO_OWNER {
                continue;
            }
            match members.get(usize::from(*idx)) {
                Some(m) => *slot = Some(m.node),
                None => {
                    return Err(CodecError::Owner {
                        id: i as Id,
                        index: *idx,
                        members: n,
                    })
                }
            }
        }
        let c = &b[at + IDS..];
        Ok(Allocation {
            epoch: u64::from_be_bytes(epoch),
            members,
            owners,
            committed_by: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
        })
    }
}

/// The next epoch's table for `members` (any order, duplicates: first wins, at most
/// [`MAX_MEMBERS`] lowest ids), moving as few ids as possible from `previous`. Its epoch is
/// `previous.epoch + 1`; `committed_by` is left 0 for the proposer to set.
pub fn compute(members: &[Member], previous: &Allocation) -> Allocation {
    let mut sorted: Vec<Member> = Vec::with_capacity(members.len());
    for m in members {
        if !sorted.iter().any(|s| s.node == m.node) {
            sorted.push(*m);
        }
    }
    sorted.sort_by_key(|m| m.node);
    sorted.truncate(MAX_MEMBERS);
    let weights: Vec<u32> = sorted.iter().map(|m| u32::from(m.weight)).collect();
    let prev: Vec<Option<usize>> = previous
        .owners
        .iter()
        .map(|o| o.and_then(|node| sorted.iter().position(|m| m.node == node)))
        .collect();
    let split = wccp::assign::distribute(IDS, &weights, &prev);
    let mut owners = [None; IDS];
    for (slot, idx) in owners.iter_mut().zip(split) {
        *slot = idx.and_then(|i| sorted.get(i)).map(|m| m.node);
    }
    Allocation {
        epoch: previous.epoch + 1,
        members: sorted,
        owners,
        committed_by: 0,
    }
}

/// What one node gains and loses from `old` to `new`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Moves {
    /// Ids the node owns in `new` but not in `old`, with their owner in `old`.
    pub gained: Vec<(Id, Option<NodeId>)>,
    /// Ids the node owned in `old` but not in `new`, with their owner in `new`.
    pub lost: Vec<(Id, Option<NodeId>)>,
}

/// The ids `me` gains and loses from `old` to `new`, ascending.
pub fn diff(old: &Allocation, new: &Allocation, me: NodeId) -> Moves {
    let mut out = Moves::default();
    for i in 0..IDS {
        let (o, n) = (old.owners[i], new.owners[i]);
        if o == n {
            continue;
        }
        if n == Some(me) {
            out.gained.push((i as Id, o));
        } else if o == Some(me) {
            out.lost.push((i as Id, n));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(node: NodeId, weight: u16) -> Member {
        Member { node, weight }
    }

    fn counts(a: &Allocation) -> Vec<usize> {
        a.members.iter().map(|x| a.count(x.node)).collect()
    }

    #[test]
    fn three_equal_nodes_get_86_85_85() {
        let a = compute(&[m(3, 1), m(1, 1), m(2, 1)], &Allocation::empty());
        assert_eq!(a.epoch, 1);
        assert_eq!(counts(&a), vec![86, 85, 85]);
        assert!(a.owners.iter().all(|o| o.is_some()));
    }

    #[test]
    fn a_fourth_node_takes_exactly_64_ids_from_the_others() {
        let a = compute(&[m(1, 1), m(2, 1), m(3, 1)], &Allocation::empty());
        let b = compute(&[m(1, 1), m(2, 1), m(3, 1), m(4, 1)], &a);
        assert_eq!(counts(&b), vec![64, 64, 64, 64]);
        let moved: Vec<usize> = (0..IDS).filter(|i| a.owners[*i] != b.owners[*i]).collect();
        assert_eq!(moved.len(), 64);
        assert!(moved.iter().all(|i| b.owners[*i] == Some(4)));
        assert_eq!(diff(&a, &b, 4).gained.len(), 64);
        let lost: usize = (1..=3).map(|n| diff(&a, &b, n).lost.len()).sum();
        assert_eq!(lost, 64);
    }

    #[test]
    fn removing_a_node_moves_only_its_ids() {
        let a = compute(&[m(1, 1), m(2, 1), m(3, 1)], &Allocation::empty());
        let b = compute(&[m(1, 1), m(3, 1)], &a);
        for i in 0..IDS {
            if a.owners[i] != Some(2) {
                assert_eq!(a.owners[i], b.owners[i], "id {i} moved");
            } else {
                assert!(b.owners[i].is_some());
            }
        }
        assert_eq!(counts(&b), vec![128, 128]);
    }

    #[test]
    fn weights_are_respected() {
        let a = compute(&[m(1, 3), m(2, 1)], &Allocation::empty());
        assert_eq!(counts(&a), vec![192, 64]);
        let z = compute(&[m(1, 0), m(2, 5)], &Allocation::empty());
        assert_eq!(counts(&z), vec![0, 256]);
    }

    #[test]
    fn deterministic_in_member_order() {
        let a = compute(&[m(5, 2), m(1, 1), m(9, 1)], &Allocation::empty());
        let b = compute(&[m(9, 1), m(5, 2), m(1, 1), m(5, 7)], &Allocation::empty());
        assert_eq!(a, b);
    }

    #[test]
    fn no_members_no_owners() {
        let a = compute(&[], &Allocation::empty());
        assert!(a.owners.iter().all(|o| o.is_none()));
    }

    #[test]
    fn codec_round_trip_and_errors() {
        let mut a = compute(&[m(1, 1), m(70000, 3)], &Allocation::empty());
        a.committed_by = 1;
        let b = a.encode();
        assert_eq!(b.len(), 10 + 12 + 256 + 4);
        assert_eq!(Allocation::decode(&b), Ok(a.clone()));
        let mut v = b.clone();
        v[0] = 2;
        assert_eq!(Allocation::decode(&v), Err(CodecError::Version(2)));
        let mut o = b.clone();
        o[10 + 12 + 7] = 2;
        assert!(matches!(
            Allocation::decode(&o),
            Err(CodecError::Owner { id: 7, .. })
        ));
        assert!(matches!(
            Allocation::decode(&b[..b.len() - 1]),
            Err(CodecError::Length { .. })
        ));
        let e = Allocation::empty();
        assert_eq!(Allocation::decode(&e.encode()), Ok(e));
    }
}
