//! Owns `KeyIndex`: one key's history as generations of revisions (etcd `key_index.go`,
//! docs/etcd-semantics.md §2). No values live here; rows are read from the backend by revision.
//!
//! Worked example (etcd's own): key "foo" with `put(1.0); put(2.0); tombstone(3.0); put(4.0);
//! tombstone(5.0)` has the generations
//!
//! ```text
//!   {created 1.0, ver 3, revs [1.0, 2.0, 3.0(t)]}
//!   {created 4.0, ver 2, revs [4.0, 5.0(t)]}
//!   {empty}                                   <- current generation
//! ```
//!
//! A tombstone closes a generation; the next put opens a new one with a new `created` and a
//! version count that restarts at 1. `compact(n)` drops every revision that can no longer be
//! read at a revision `>= n` but keeps, per key, the newest revision `<= n`:
//!
//! ```text
//!   compact(2): {1.0 dropped; revs [2.0, 3.0(t)]} {4.0, 5.0(t)} {empty}
//!   compact(4): {4.0, 5.0(t)} {empty}       (generation 1 ended before 4: dropped whole)
//!   compact(5): {5.0(t)} {empty}            (a tombstone exactly at n is kept, etcd #18089)
//!   compact(6): {empty}                     -> the key leaves the index
//! ```

use smallvec::{smallvec, SmallVec};

use crate::revision::Revision;

/// One life of a key: from the put that created it to the tombstone that ended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// Revision of the put that created the key (`(0, 0)` for a generation restored from a
    /// lone tombstone).
    pub created: Revision,
    /// Number of changes appended to the generation over its whole life, including ones that
    /// compaction has since dropped and the closing tombstone.
    pub ver: i64,
    /// Surviving revisions, ascending; the last is the tombstone if the generation is closed.
    pub revs: SmallVec<[Revision; 1]>,
}

impl Generation {
    fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }

    /// Returns the index of the newest revision for which `stop` is true, walking from newest
    /// to oldest (etcd `generation.walk` with the predicate negated).
    fn newest_where(&self, stop: impl Fn(Revision) -> bool) -> Option<usize> {
        self.revs.iter().rposition(|&r| stop(r))
    }
}

/// What a key looked like at some revision: the row to read and the key's life data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyVersion {
    /// Revision of the row holding the key's value at that time.
    pub modified: Revision,
    /// Revision of the put that created the key's life.
    pub created: Revision,
    /// The key's version (puts in its life up to `modified`).
    pub version: i64,
}

/// One key's history (etcd `keyIndex`). The last generation is the current one; it is empty
/// when the key is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIndex {
    generations: SmallVec<[Generation; 1]>,
}

impl KeyIndex {
    /// Returns the index of a key created by a put at `rev`.
    #[must_use]
    pub fn new_put(rev: Revision) -> Self {
        Self { generations: smallvec![Generation { created: rev, ver: 1, revs: smallvec![rev] }] }
    }

    /// Returns the index of a key rebuilt from its oldest surviving row, a put (etcd
    /// `keyIndex.restore`).
    #[must_use]
    pub fn restored(created: Revision, modified: Revision, ver: i64) -> Self {
        Self { generations: smallvec![Generation { created, ver, revs: smallvec![modified] }] }
    }

    /// Returns the index of a key whose only surviving row is a tombstone (etcd
    /// `restoreTombstone`), so the tombstone stays watchable and compactable.
    #[must_use]
    pub fn restored_tombstone(rev: Revision) -> Self {
        Self {
            generations: smallvec![
                Generation { created: Revision::default(), ver: 1, revs: smallvec![rev] },
                Generation { created: Revision::default(), ver: 0, revs: SmallVec::new() },
            ],
        }
    }

    /// Returns the generations, oldest first.
    #[must_use]
    pub fn generations(&self) -> &[Generation] {
        &self.generations
    }

    /// Returns the last revision appended (the key's last change).
    #[must_use]
    pub fn modified(&self) -> Option<Revision> {
        self.generations.iter().rev().find_map(|g| g.revs.last().copied())
    }

    /// Returns the key's state if it is live now.
    #[must_use]
    pub fn latest(&self) -> Option<KeyVersion> {
        let g = self.generations.last()?;
        let modified = *g.revs.last()?;
        Some(KeyVersion { modified, created: g.created, version: g.ver })
    }

    /// Records a put at `rev` (which must be newer than every revision present).
    pub fn put(&mut self, rev: Revision) {
        debug_assert!(self.modified().is_none_or(|m| rev > m), "put {rev} not after {:?}", self.modified());
        match self.generations.last_mut() {
            Some(g) => {
                if g.is_empty() {
                    g.created = rev;
                }
                g.revs.push(rev);
                g.ver += 1;
            }
            None => *self = Self::new_put(rev),
        }
    }

    /// Records a delete at `rev`, closing the current generation. Returns `false` (and changes
    /// nothing) if the key is not live: deleting a missing key is not a change.
    pub fn tombstone(&mut self, rev: Revision) -> bool {
        if self.latest().is_none() {
            return false;
        }
        self.put(rev);
        self.generations.push(Generation { created: Revision::default(), ver: 0, revs: SmallVec::new() });
        true
    }

    /// Returns the key's state at `at_rev`, or `None` if it did not exist then (etcd
    /// `keyIndex.get`).
    #[must_use]
    pub fn get(&self, at_rev: i64) -> Option<KeyVersion> {
        let g = self.find_generation(at_rev)?;
        let n = g.newest_where(|r| r.main <= at_rev)?;
        let after = (g.revs.len() - n - 1) as i64;
        Some(KeyVersion { modified: g.revs[n], created: g.created, version: g.ver - after })
    }

    /// Returns the generation that holds the key's state at `rev` (etcd `findGeneration`):
    /// `None` if the key was deleted at or before `rev` without being re-created, or did not
    /// exist yet.
    fn find_generation(&self, rev: i64) -> Option<&Generation> {
        let last = self.generations.len().checked_sub(1)?;
        for (i, g) in self.generations.iter().enumerate().rev() {
            let (Some(first), Some(tomb)) = (g.revs.first(), g.revs.last()) else { continue };
            if i != last && tomb.main <= rev {
                return None;
            }
            if first.main <= rev {
                return Some(g);
            }
        }
        None
    }

    /// Returns every surviving revision `>= rev`, keeping only the highest `sub` of each `main`
    /// (etcd `keyIndex.since`).
    #[must_use]
    pub fn since(&self, rev: i64) -> Vec<Revision> {
        let mut out: Vec<Revision> = Vec::new();
        for r in self.generations.iter().flat_map(|g| g.revs.iter()).filter(|r| r.main >= rev) {
            match out.last_mut() {
                Some(last) if last.main == r.main => *last = *r,
                _ => out.push(*r),
            }
        }
        out
    }

    /// Drops history that no read at a revision `>= at_rev` needs, and reports in `keep` the
    /// revision whose row must survive (etcd `keyIndex.compact`, docs/etcd-semantics.md §2.1).
    pub fn compact(&mut self, at_rev: i64, keep: &mut impl Extend<Revision>) {
        let (gen_idx, kept) = self.compaction_point(at_rev);
        keep.extend(self.reborn_at(gen_idx, at_rev));
        if let Some(kept) = kept {
            let g = &mut self.generations[gen_idx];
            keep.extend(g.revs[kept.clone()].iter().copied());
            g.revs.drain(..kept.start);
        }
        self.generations.drain(..gen_idx);
    }

    /// Reports in `keep` what [`Self::compact`] would keep, less a tombstone that closes an
    /// earlier generation (etcd `keyIndex.keep`: "remove any tombstone"): the set `HashKV`
    /// filters rows at or below the compact revision by, which must be etcd's for the hashes to
    /// agree.
    pub fn keep(&self, at_rev: i64, keep: &mut impl Extend<Revision>) {
        let (gen_idx, kept) = self.compaction_point(at_rev);
        keep.extend(self.reborn_at(gen_idx, at_rev));
        if let Some(mut kept) = kept {
            let revs = &self.generations[gen_idx].revs;
            if kept.end == revs.len() && gen_idx + 1 < self.generations.len() {
                kept.end -= 1;
            }
            keep.extend(revs[kept].iter().copied());
        }
    }

    /// Returns the revisions `<= at_rev` of the generations after `gen_idx`. There are some only
    /// when a txn of the MVCC layer ([`crate::KvStore::mvcc_txn`]) deleted and re-created the
    /// key within revision `at_rev`: the generation closed by that tombstone is the compaction
    /// point, but the later one holds the key's state at `at_rev`, and the index keeps pointing
    /// at those rows, so they must survive.
    fn reborn_at(&self, gen_idx: usize, at_rev: i64) -> impl Iterator<Item = Revision> + '_ {
        let later = self.generations.get(gen_idx + 1..).unwrap_or(&[]);
        later.iter().flat_map(|g| g.revs.iter().copied()).filter(move |r| r.main <= at_rev)
    }

    /// Finds the first generation whose tombstone is `>= at_rev` (or the last one), and in it the
    /// newest revision `<= at_rev` (etcd `doCompact`); returns the generation and the positions of
    /// its revisions to keep: that newest one, preceded by the other revisions of `at_rev` when an
    /// `mvcc_txn` changed the key several times within `at_rev` (docs/etcd-semantics.md §5: every
    /// row of the compaction revision is kept, so that a watch from it gets the whole revision).
    fn compaction_point(&self, at_rev: i64) -> (usize, Option<std::ops::Range<usize>>) {
        let last = self.generations.len().saturating_sub(1);
        let gen_idx = self
            .generations
            .iter()
            .position(|g| g.revs.last().is_some_and(|tomb| tomb.main >= at_rev))
            .unwrap_or(last)
            .min(last);
        let kept = self.generations.get(gen_idx).and_then(|g| {
            let newest = g.newest_where(|r| r.main <= at_rev)?;
            let first = g.revs[..newest].iter().position(|r| r.main == at_rev).unwrap_or(newest);
            Some(first..newest + 1)
        });
        (gen_idx, kept)
    }

    /// Returns whether nothing is left (only an empty current generation): the key can leave
    /// the index.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.generations.iter().all(Generation::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    // D11 TestKeyIndexGet.
    #[test]
    fn d11_key_index_get() {
        let mut ki = KeyIndex::new_put(r(2));
        ki.put(r(4));
        assert!(ki.tombstone(r(6)));
        ki.put(r(8));
        ki.put(r(10));
        assert!(ki.tombstone(r(12)));
        ki.put(r(14));
        ki.put(Revision::new(15, 1));
        assert!(ki.tombstone(r(16)));
        let mut keep = Vec::new();
        ki.compact(4, &mut keep);
        assert_eq!(keep, vec![r(4)]);

        let kv = |m: Revision, c: i64, v: i64| Some(KeyVersion { modified: m, created: r(c), version: v });
        let want = [
            (17, None),
            (16, None),
            (15, kv(Revision::new(15, 1), 14, 2)),
            (14, kv(r(14), 14, 1)),
            (13, None),
            (12, None),
            (11, kv(r(10), 8, 2)),
            (10, kv(r(10), 8, 2)),
            (9, kv(r(8), 8, 1)),
            (8, kv(r(8), 8, 1)),
            (7, None),
            (6, None),
            (5, kv(r(4), 2, 2)),
            (4, kv(r(4), 2, 2)),
            (3, None),
            (2, None),
            (1, None),
            (0, None),
        ];
        for (rev, expect) in want {
            assert_eq!(ki.get(rev), expect, "get({rev})");
        }
    }

    // D12 TestKeyIndexTombstone.
    #[test]
    fn d12_key_index_tombstone() {
        let mut ki = KeyIndex::new_put(r(5));
        assert!(ki.tombstone(r(7)));
        assert_eq!(ki.generations().len(), 2);
        assert_eq!(ki.generations()[0].revs.as_slice(), &[r(5), r(7)]);
        assert_eq!(ki.generations()[0].ver, 2);
        ki.put(r(8));
        ki.put(r(9));
        assert!(ki.tombstone(r(15)));
        assert_eq!(ki.generations()[1].revs.as_slice(), &[r(8), r(9), r(15)]);
        assert_eq!((ki.generations()[1].created, ki.generations()[1].ver), (r(8), 3));
        assert!(ki.generations()[2].revs.is_empty());
        assert!(!ki.tombstone(r(16)), "deleting a deleted key is not a change");
    }

    // D13 TestRestoreTombstone.
    #[test]
    fn d13_restore_tombstone() {
        let mut ki = KeyIndex::restored_tombstone(r(16));
        for rev in 16..=20 {
            assert_eq!(ki.get(rev), None);
        }
        // etcd's doCompact keeps that last tombstone; `keep` (what HashKV filters by) leaves it
        // out, as etcd's `keyIndex.keep` removes a tombstone closing a generation.
        let (gen_idx, kept) = ki.compaction_point(16);
        assert_eq!(ki.generations()[gen_idx].revs[kept.expect("a point")].to_vec(), vec![r(16)]);
        let mut keep = Vec::new();
        ki.keep(16, &mut keep);
        assert_eq!(keep, Vec::<Revision>::new());
        ki.put(r(17));
        ki.put(r(18));
        assert_eq!(ki.since(16), vec![r(16), r(17), r(18)]);
        ki.compact(17, &mut Vec::new());
        assert_eq!(ki.generations().len(), 1);
        assert_eq!(ki.generations()[0].revs.as_slice(), &[r(17), r(18)]);
    }

    #[test]
    fn compaction_walk_through_from_module_doc() {
        let build = || {
            let mut ki = KeyIndex::new_put(r(1));
            ki.put(r(2));
            ki.tombstone(r(3));
            ki.put(r(4));
            ki.tombstone(r(5));
            ki
        };
        let mut ki = build();
        ki.compact(2, &mut Vec::new());
        assert_eq!(ki.generations()[0].revs.as_slice(), &[r(2), r(3)]);
        let mut ki = build();
        ki.compact(4, &mut Vec::new());
        assert_eq!(ki.generations()[0].revs.as_slice(), &[r(4), r(5)]);
        let mut ki = build();
        let mut keep = Vec::new();
        ki.compact(5, &mut keep);
        assert_eq!((ki.generations()[0].revs.as_slice(), keep), (&[r(5)][..], vec![r(5)]));
        assert!(!ki.is_empty());
        ki.compact(6, &mut Vec::new());
        assert!(ki.is_empty());
    }
}
