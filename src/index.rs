//! Owns the in-memory key index: every key's `KeyIndex` in key order (etcd `index.go`
//! `treeIndex`). Answers "which row holds key k at revision r" without touching the disk.

use std::collections::{BTreeMap, HashSet};

use crate::key_index::{KeyIndex, KeyVersion};
use crate::key_range::KeyRange;
use crate::revision::Revision;

/// A key and its state at the revision a range was read at.
pub type IndexEntry<'a> = (&'a [u8], KeyVersion);

/// The key index (etcd `treeIndex`): an ordered map from key to its history.
#[derive(Debug, Default)]
pub struct Index {
    keys: BTreeMap<Box<[u8]>, KeyIndex>,
}

impl Index {
    /// Creates an empty index.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the number of keys with any history left (live or deleted but not compacted).
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
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
                prev
            }
            None => {
                self.keys.insert(key.into(), KeyIndex::new_put(rev));
                None
            }
        }
    }

    /// Records a delete of `key` at `rev`; returns `false` if the key was not live.
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> bool {
        self.keys.get_mut(key).is_some_and(|ki| ki.tombstone(rev))
    }

    /// Rebuilds a key's history from a put row read on open (etcd `restore`): the first row of
    /// a key seeds it with the row's own `create_revision` and `version`, later rows append.
    pub fn restore_put(&mut self, key: &[u8], rev: Revision, created: i64, version: i64) {
        match self.keys.get_mut(key) {
            Some(ki) => ki.put(rev),
            None => {
                self.keys.insert(key.into(), KeyIndex::restored(Revision::new(created, 0), rev, version));
            }
        }
    }

    /// Rebuilds a key's history from a tombstone row read on open.
    pub fn restore_tombstone(&mut self, key: &[u8], rev: Revision) {
        match self.keys.get_mut(key) {
            Some(ki) => {
                ki.tombstone(rev);
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
