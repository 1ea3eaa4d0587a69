//! Owns the in-memory key index: every key's `KeyIndex` in key order (etcd `index.go`
//! `treeIndex`). Answers "which row holds key k at revision r" without touching the disk.

use std::collections::{BTreeMap, HashSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::key_index::{KeyIndex, KeyVersion};
use crate::key_range::KeyRange;
use crate::revision::Revision;

/// A key and its state at the revision a range was read at.
pub type IndexEntry<'a> = (&'a [u8], KeyVersion);

/// Where [`Index::id`]s come from: one per index made in this process.
static NEXT_INDEX_ID: AtomicU64 = AtomicU64::new(1);

/// The key index (etcd `treeIndex`): an ordered map from key to its history.
#[derive(Debug)]
pub struct Index {
    keys: BTreeMap<Box<[u8]>, KeyIndex>,
    /// Keys live now (etcd's `keysGauge`), kept as keys are put, deleted and restored.
    live: usize,
    id: u64,
}

impl Default for Index {
    fn default() -> Self {
        Self::new()
    }
}

/// How far [`Index::walk_at`] got.
#[derive(Debug, PartialEq, Eq)]
pub enum Walked<'a> {
    /// It reached the end of the range, after walking this many keys (fewer than its budget,
    /// or all of it).
    End(usize),
    /// It stopped after this key, its whole budget walked, with more of the range left.
    After(&'a [u8]),
}

impl Index {
    /// Creates an empty index.
    #[must_use]
    pub fn new() -> Self {
        Self { keys: BTreeMap::new(), live: 0, id: NEXT_INDEX_ID.fetch_add(1, Ordering::Relaxed) }
    }

    /// This index's identity in the process: a walk resumed over several calls
    /// ([`Self::walk_at`]) must meet the same index each time, not one rebuilt meanwhile (a
    /// reopened store, an import).
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Returns the number of keys with any history left (live or deleted but not compacted).
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Returns the number of keys live now (not deleted): etcd's `keys_total` metric.
    #[must_use]
    pub fn live_len(&self) -> usize {
        self.live
    }

    /// Returns whether the index holds no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Returns the state of `key` at `at_rev`.
    #[must_use]
    pub fn get(&self, key: &[u8], at_rev: i64) -> Option<KeyVersion> {
        self.keys.get(key)?.get(at_rev)
    }

    /// Returns the state of `key` now, if it is live.
    #[must_use]
    pub fn latest(&self, key: &[u8]) -> Option<KeyVersion> {
        self.keys.get(key)?.latest()
    }

    /// Returns the history of `key`.
    #[must_use]
    pub fn key_index(&self, key: &[u8]) -> Option<&KeyIndex> {
        self.keys.get(key)
    }

    /// Visits, in key order, every key of `range` that exists at `at_rev`, until `visit`
    /// returns `false`. Returns how many were visited.
    pub fn range_at<'a>(
        &'a self,
        range: &KeyRange,
        at_rev: i64,
        mut visit: impl FnMut(IndexEntry<'a>) -> bool,
    ) -> usize {
        if range.is_empty() {
            return 0;
        }
        let mut n = 0;
        for (key, ki) in self.keys.range::<[u8], _>(range.bounds()) {
            if let Some(v) = ki.get(at_rev) {
                n += 1;
                if !visit((key, v)) {
                    break;
                }
            }
        }
        n
    }

    /// Visits, in key order, every key of `range` after `after` (from the range's start if
    /// `None`) that exists at `at_rev`, walking at most `budget` keys of the index (at least
    /// one; those that do not exist at `at_rev` count too), so that a walk over many keys can
    /// be done in parts with writes between them. A part resumed after later writes sees the
    /// same keys at `at_rev` as one walk would have, as long as no compaction above `at_rev`
    /// ran between the parts: writes only add history above `at_rev`.
    pub fn walk_at<'a>(
        &'a self,
        range: &KeyRange,
        after: Option<&[u8]>,
        at_rev: i64,
        budget: usize,
        mut visit: impl FnMut(IndexEntry<'a>),
    ) -> Walked<'a> {
        if range.is_empty() {
            return Walked::End(0);
        }
        // A part walks at least one key, so that every part makes progress.
        let budget = budget.max(1);
        let (start, end) = range.bounds();
        let start = after.map_or(start, Bound::Excluded);
        if let (Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) = (start, end) {
            // `after` is the last key of the range, or past it.
            if s >= e {
                return Walked::End(0);
            }
        }
        let mut keys = self.keys.range::<[u8], _>((start, end)).peekable();
        let mut walked = 0;
        while let Some((key, ki)) = keys.next() {
            if let Some(v) = ki.get(at_rev) {
                visit((key, v));
            }
            walked += 1;
            if walked == budget {
                return if keys.peek().is_some() { Walked::After(key) } else { Walked::End(walked) };
            }
        }
        Walked::End(walked)
    }

    /// Returns the live keys of `range` now, in key order (used by delete_range).
    #[must_use]
    pub fn live_keys(&self, range: &KeyRange) -> Vec<(Vec<u8>, KeyVersion)> {
        if range.is_empty() {
            return Vec::new();
        }
        self.keys.range::<[u8], _>(range.bounds()).filter_map(|(k, ki)| ki.latest().map(|v| (k.to_vec(), v))).collect()
    }

    /// Records a put of `key` at `rev`; returns the key's state before it, if it was live.
    pub fn put(&mut self, key: &[u8], rev: Revision) -> Option<KeyVersion> {
        match self.keys.get_mut(key) {
            Some(ki) => {
                let prev = ki.latest();
                ki.put(rev);
                if prev.is_none() {
                    self.live += 1;
                }
                prev
            }
            None => {
                self.keys.insert(key.into(), KeyIndex::new_put(rev));
                self.live += 1;
                None
            }
        }
    }

    /// Records a delete of `key` at `rev`; returns `false` if the key was not live.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        let deleted = self.keys.get_mut(key).is_some_and(|ki| ki.tombstone(rev));
        if deleted {
            self.live -= 1;
        }
        deleted
    }

    /// Rebuilds a key's history from a put row read on open (etcd `restore`): the first row of
    /// a key seeds it with the row's own `create_revision` and `version`, later rows append.
    pub fn restore_put(&mut self, key: &[u8], rev: Revision, created: i64, version: i64) {
        match self.keys.get_mut(key) {
            Some(ki) => {
                if ki.latest().is_none() {
                    self.live += 1;
                }
                ki.put(rev);
            }
            None => {
                self.keys.insert(key.into(), KeyIndex::restored(Revision::new(created, 0), rev, version));
                self.live += 1;
            }
        }
    }

    /// Rebuilds a key's history from a tombstone row read on open.
    pub fn restore_tombstone(&mut self, key: &[u8], rev: Revision) {
        match self.keys.get_mut(key) {
            Some(ki) => {
                if ki.tombstone(rev) {
                    self.live -= 1;
                }
            }
            None => {
                self.keys.insert(key.into(), KeyIndex::restored_tombstone(rev));
            }
        }
    }

    /// Compacts every key at `at_rev` and returns the revisions whose rows must survive (etcd
    /// `treeIndex.Compact`). Keys with no history left leave the index.
    pub fn compact(&mut self, at_rev: i64) -> HashSet<Revision> {
        let mut keep = HashSet::new();
        self.keys.retain(|_, ki| {
            ki.compact(at_rev, &mut keep);
            !ki.is_empty()
        });
        keep
    }

    /// Returns what [`Self::compact`] would keep, without changing anything.
    #[must_use]
    pub fn keep(&self, at_rev: i64) -> HashSet<Revision> {
        let mut keep = HashSet::new();
        for ki in self.keys.values() {
            ki.keep(at_rev, &mut keep);
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recount(index: &Index) -> usize {
        index.keys.values().filter(|ki| ki.latest().is_some()).count()
    }

    /// The live count follows puts, deletes, puts after a delete, restored rows and
    /// compactions, as a recount of the keys would.
    #[test]
    fn the_live_key_count_follows_every_change() {
        let mut index = Index::new();
        let mut rev = 1;
        let mut next = || {
            rev += 1;
            Revision::new(rev, 0)
        };
        for key in [b"a", b"b", b"c"] {
            index.put(key, next());
        }
        index.put(b"a", next());
        assert_eq!((index.live_len(), recount(&index)), (3, 3));
        assert!(index.tombstone(b"b", next()));
        assert!(!index.tombstone(b"b", next()), "already deleted");
        assert!(!index.tombstone(b"zz", next()), "never there");
        assert_eq!((index.live_len(), recount(&index)), (2, 2));
        index.put(b"b", next());
        assert_eq!(index.live_len(), 3);
        assert!(index.tombstone(b"c", next()));
        index.compact(rev);
        assert_eq!((index.live_len(), recount(&index)), (2, 2));

        let mut restored = Index::new();
        restored.restore_put(b"a", Revision::new(2, 0), 2, 1);
        restored.restore_tombstone(b"a", Revision::new(3, 0));
        restored.restore_tombstone(b"gone", Revision::new(4, 0));
        restored.restore_put(b"b", Revision::new(5, 0), 5, 1);
        restored.restore_put(b"a", Revision::new(6, 0), 6, 1);
        assert_eq!((restored.live_len(), recount(&restored)), (2, 2));
    }
}
