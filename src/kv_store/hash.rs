//! Owns planning the store's integrity hashes (etcd: mvcc/kvstore.go `hashByRev`): the checks
//! and the state taken at one instant; [`crate::hash`] runs them.

use super::KvStore;
use crate::backend::WholeSnapshot;
use crate::error::Result;
use crate::hash::{self, HashKvPlan};

impl KvStore {
    /// Plans a `HashKV` up to `rev` (0 = the current revision): takes a snapshot and what a
    /// compaction at that revision would keep. Costs one pass over the key index here; the scan
    /// of the rows happens in [`HashKvPlan::run`], wherever the caller runs it.
    ///
    /// # Errors
    /// `Compacted` below the compact revision, `FutureRev` above the current one.
    pub fn hash_kv_plan(&self, rev: i64) -> Result<HashKvPlan> {
        // The revision reads are served at: on a store a storage failure poisoned, the last one
        // persisted, not the refused writes' (a reference hash taken there would hold rows the
        // reopened store does not have, and the integrity check would raise a false CORRUPT).
        let current_rev = self.read_rev();
        let hash_revision = hash::hash_revision(rev, self.compact_rev, current_rev)?;
        Ok(HashKvPlan {
            snapshot: self.backend.reader().snapshot(),
            keep: self.index.keep(hash_revision),
            compact_revision: self.compact_rev,
            hash_revision,
            current_revision: current_rev,
            compaction_settled: self.last_compaction.as_ref().is_none_or(crate::compaction::CompactionTicket::is_done),
        })
    }

    /// Returns a snapshot of everything the store holds, for the whole-store hash
    /// ([`WholeSnapshot::hash`]), with the revision it was taken at.
    #[must_use]
    pub fn whole_snapshot(&self) -> (WholeSnapshot, i64) {
        (self.backend.whole_snapshot(), self.current_rev)
    }
}
