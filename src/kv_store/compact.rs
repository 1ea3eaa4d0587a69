//! Owns scheduling compaction: the checks, the durable `scheduled` marker, the index
//! compaction, and the hand-off of the rows to delete to the background worker in
//! [`crate::compaction`] (etcd `mvcc/kvstore.go Compact`, `kvstore_compaction.go`).

use super::quota::Gate;
use super::KvStore;
use crate::backend::META_SCHEDULED_COMPACT;
use crate::compaction::CompactionTicket;
use crate::error::{Error, Result};

impl KvStore {
    /// Compacts history at `rev` (etcd `Compact`, docs/etcd-semantics.md §5): reads below `rev`
    /// fail from now on; the rows no longer needed are deleted in the background. Wait on the
    /// returned ticket for the physical part (`physical = true`).
    ///
    /// # Errors
    /// `Compacted` if `rev <= compact_rev`, `FutureRev` if `rev > current_rev`, or a storage
    /// error.
    pub fn compact(&mut self, rev: i64) -> Result<CompactionTicket> {
        self.check_writable()?;
        self.admit(Gate::Compact)?;
        // Every row at or below `rev` must be in the backend before the compactor scans it.
        self.persist()?;
        if rev <= self.compact_rev {
            return Err(Error::Compacted { requested: rev, compact_rev: self.compact_rev });
        }
        if rev > self.current_rev {
            return Err(Error::FutureRev { requested: rev, current_rev: self.current_rev });
        }
        let mut batch = self.backend.batch();
        batch.put_meta(META_SCHEDULED_COMPACT, rev);
        let persisted = batch.commit().and_then(|()| self.backend.sync());
        if let Err(e) = persisted {
            // The sync covers writes not yet persisted too.
            return Err(self.persist_failed(e));
        }
        self.persisted();
        self.compact_unchecked(rev)
    }

    /// Whether [`Self::compact`] at `rev` would compact: the revision is in range and neither a
    /// storage failure nor a `CORRUPT` alarm refuses it. A runtime that announces the new
    /// compact revision before compacting asks this first.
    #[must_use]
    pub fn would_compact(&self, rev: i64) -> bool {
        !self.poisoned
            && !self.alarms.is_raised(crate::alarm::AlarmType::Corrupt)
            && rev > self.compact_rev
            && rev <= self.current_rev
    }

    /// Compacts the index at `rev` and schedules the physical part; also resumes an unfinished
    /// compaction on open.
    pub(super) fn compact_unchecked(&mut self, rev: i64) -> Result<CompactionTicket> {
        self.compact_rev = rev;
        let keep = self.index.compact(rev);
        let ticket = self.compactor.schedule(rev, keep);
        self.last_compaction = Some(ticket.clone());
        Ok(ticket)
    }
}
