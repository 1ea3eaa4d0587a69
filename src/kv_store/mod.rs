//! Owns `KvStore`, the MVCC store (etcd `mvcc/kvstore.go`): its state (the key index, the lease
//! table, the current and compact revisions, the backend), opening and restoring it from disk
//! (etcd `kvstore.go restore`), its accessors and stats, and the final sync. The operations live
//! in one file per owner, as etcd splits them:
//! - [`read`]: ranges (etcd `kvstore_txn.go storeTxnRead.rangeKeys`);
//! - [`write`]: the typed write API, group commit and put/delete (etcd `kvstore_txn.go
//!   storeTxnWrite`);
//! - [`txn`]: compares and transactions (etcd `server/etcdserver/txn/txn.go`);
//! - [`auth`]: keeping the auth store on disk (etcd `auth/store.go`);
//! - [`hash`]: planning `HashKV` (etcd `kvstore.go hashByRev`);
//! - [`compact`]: scheduling compaction (etcd `kvstore_compaction.go`, `kvstore.go Compact`);
//! - [`leases`]: grant, keep-alive, time-to-live, revoke and expiry (etcd `lease/lessor.go`);
//! - [`quota`]: alarms and the space quota (etcd `apply.go applierV3Capped`, `quota.go`).
//! - [`snapshot`]: taking and restoring snapshots (etcd `Maintenance.Snapshot`, `snapshot
//!   restore`);
//! - [`import`]: importing another etcd's keyspace at one revision (`watchkv import`);
//! - [`upstream`]: applying an upstream etcd's revisions with their own numbers (mirror mode).
//!
//! Every committed write hands back the events it produced, so the watch layer never reads
//! storage on the live path. Revision rules (docs/etcd-semantics.md §1.2–§1.3): a fresh store is
//! at revision 1; a write transaction that changes anything takes exactly one new revision
//! however many changes it makes; one that changes nothing keeps the revision, writes nothing and
//! produces no event.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use crate::alarm::Alarms;
use crate::backend::{
    Backend, RevisionReader, META_FINISHED_COMPACT, META_IMPORTING, META_RESTORING, META_SCHEDULED_COMPACT,
};
use crate::compaction::{Compactor, CompactorSettings};
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::kv::{Event, LeaseId};
use crate::lease::{deadline_after, Lessor};
use crate::revision::Revision;

mod auth;
mod compact;
mod hash;
mod import;
mod leases;
mod quota;
mod read;
mod snapshot;
mod txn;
mod upstream;
mod write;

pub use import::{Import, ImportedSnapshot, UpstreamOrigin};
pub use leases::{LeaseRevokeRequest, LeaseStatus};
pub use read::{Planning, RangeCursor, RangePlan};
pub use snapshot::{RestoredSnapshot, StoreSnapshot};
pub use txn::{TxnCursor, TxnPlan, TxnPlanning};
pub use upstream::{UpstreamChange, UpstreamRevision};
pub use write::{Applied, Persisted, Write, WriteGroup};

use write::GroupBatch;

/// A committed write: the response, and the events it produced in `(revision, sub)` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed<T> {
    /// What the client is told.
    pub response: T,
    /// The changes, with `prev_kv` filled where the key existed before.
    pub events: Vec<Event>,
}

/// Counters describing the store, for stats and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// The current revision.
    pub current_rev: i64,
    /// The compact revision (-1 = never compacted).
    pub compact_rev: i64,
    /// Keys in the index (live or with uncompacted history).
    pub indexed_keys: usize,
    /// Keys live now (not deleted).
    pub live_keys: usize,
    /// Granted leases.
    pub leases: usize,
}

/// The watchable MVCC key-value store, synchronous: whoever owns it serialises access.
pub struct KvStore {
    config: StoreConfig,
    backend: Backend,
    index: Index,
    lessor: Lessor,
    /// Lease ids that live keys carry with no local lease behind them: upstream's, on keys an
    /// import or a mirror wrote (docs/etcd-semantics.md "Import"). No local lease may take one
    /// of them, or its keys would be attached to it after a reopen (which attaches every key
    /// to its lease) but not before.
    foreign_leases: HashSet<LeaseId>,
    /// An import stopped halfway ([`Import`]'s drop): the key index holds only part of the
    /// keyspace, so reads are refused ([`Self::check_index_whole`]) rather than answered with
    /// a subset of the keys, until the store is opened again.
    index_incomplete: bool,
    /// Where this store's whole state came from, while it has taken no write of its own
    /// ([`Self::upstream_origin`]).
    upstream_origin: Option<UpstreamOrigin>,
    current_rev: i64,
    /// The current revision at the last successful persist (or open): what reads see once a
    /// storage failure has poisoned the store, since the revisions above it may not be on disk
    /// and their writers were told they failed ([`Self::read_rev`]).
    durable_rev: i64,
    /// A persist failed: the revisions applied since the last one that succeeded may not be on
    /// disk, so `durable_rev` stays where it was from then on.
    persist_failed: bool,
    compact_rev: i64,
    /// Rows (and lease deletions) of the current write group, committed to the backend as one
    /// batch by `persist`.
    group: GroupBatch,
    /// Batches committed to the backend but not yet persisted.
    unpersisted: bool,
    poisoned: bool,
    /// Whether the failure that poisoned the store was a full disk.
    poisoned_by_no_space: bool,
    compactor: Compactor,
    /// The last physical compaction scheduled, while it may still be running.
    last_compaction: Option<crate::compaction::CompactionTicket>,
    alarms: Alarms,
    auth: crate::auth::AuthState,
}

impl std::fmt::Debug for KvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvStore")
            .field("current_rev", &self.current_rev)
            .field("compact_rev", &self.compact_rev)
            .finish_non_exhaustive()
    }
}

impl KvStore {
    /// Opens the store in `config.path`, creating it if needed, and rebuilds the index from
    /// disk (etcd `restore`). Restored leases expire `ttl` seconds after now.
    ///
    /// # Errors
    /// Fails on I/O errors and on any record that does not decode (naming its revision).
    pub fn open(config: StoreConfig) -> Result<Self> {
        Self::open_at(config, Instant::now())
    }

    /// Like [`Self::open`], with restored lease deadlines counted from `now`.
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn open_at(config: StoreConfig, now: Instant) -> Result<Self> {
        let backend = Backend::open(&config)?;
        if let Some(rev) = backend.get_meta(META_IMPORTING)? {
            return Err(Error::Import(format!(
                "the import at revision {rev} into {:?} did not finish: remove the directory and import again",
                config.path().display()
            )));
        }
        if backend.get_meta(META_RESTORING)?.is_some() {
            return Err(Error::Snapshot(format!(
                "the snapshot restore into {:?} did not finish: remove the directory and restore again",
                config.path().display()
            )));
        }
        let compactor = Compactor::start(
            backend.clone(),
            CompactorSettings {
                batch_limit: config.compaction_batch_limit(),
                sleep_interval: config.compaction_sleep_interval(),
            },
        )?;
        let finished = backend.get_meta(META_FINISHED_COMPACT)?;
        let scheduled = backend.get_meta(META_SCHEDULED_COMPACT)?;
        let mut store = Self {
            index: Index::new(),
            lessor: Lessor::default(),
            foreign_leases: HashSet::new(),
            index_incomplete: false,
            upstream_origin: UpstreamOrigin::read(&backend)?,
            current_rev: 1,
            durable_rev: 1,
            persist_failed: false,
            compact_rev: finished.unwrap_or(-1),
            group: GroupBatch::default(),
            unpersisted: false,
            poisoned: false,
            poisoned_by_no_space: false,
            compactor,
            last_compaction: None,
            backend,
            config,
            alarms: Alarms::default(),
            auth: crate::auth::AuthState::default(),
        };
        store.restore_alarms()?;
        store.restore_auth()?;
        let key_leases = store.restore_index()?;
        // etcd #17780: compaction may have removed the newest rows, so the markers bound the
        // revision from below too; it never goes backwards across a restart.
        store.current_rev = store.current_rev.max(finished.unwrap_or(1)).max(scheduled.unwrap_or(1));
        store.durable_rev = store.current_rev;
        for rec in store.backend.leases()? {
            store.lessor.insert(rec.id, rec.ttl, deadline_after(now, rec.ttl));
        }
        for (key, lease) in key_leases {
            if store.lessor.contains(lease) {
                store.lessor.attach(&key, lease);
            } else {
                store.foreign_leases.insert(lease);
            }
        }
        if let Some(scheduled) = scheduled.filter(|s| finished.is_none_or(|f| *s > f)) {
            // etcd: an unfinished compaction resumes on open (case D7).
            tracing::info!(rev = scheduled, "resuming unfinished compaction");
            store.compact_unchecked(scheduled)?;
        }
        Ok(store)
    }

    /// Rebuilds the index from every row, chunk by chunk; returns the lease of each live key.
    fn restore_index(&mut self) -> Result<HashMap<Vec<u8>, LeaseId>> {
        let mut key_leases: HashMap<Vec<u8>, LeaseId> = HashMap::new();
        let mut from = Revision::new(0, 0);
        let chunk = self.config.restore_chunk_keys();
        loop {
            let mut rows = Vec::with_capacity(chunk.min(100_000));
            self.backend.scan_headers(from, |key, header| {
                rows.push((key, header));
                Ok(rows.len() < chunk)
            })?;
            for (key, header) in &rows {
                if key.tombstone {
                    self.index.restore_tombstone(&header.key, key.rev);
                    key_leases.remove(&header.key);
                } else {
                    self.index.restore_put(&header.key, key.rev, header.create_revision, header.version);
                    if header.lease == 0 {
                        key_leases.remove(&header.key);
                    } else {
                        key_leases.insert(header.key.clone(), header.lease);
                    }
                }
                self.current_rev = self.current_rev.max(key.rev.main);
            }
            match rows.last() {
                Some((last, _)) if rows.len() == chunk => {
                    from = Revision::new(last.rev.main, last.rev.sub.saturating_add(1));
                }
                _ => break,
            }
        }
        Ok(key_leases)
    }

    /// The etcd cluster and prefix whose keys this store holds as that etcd had them, when its
    /// whole state came from there ([`Import::from_upstream`]: an import, a mirror's
    /// bootstrap) and it has taken no write of its own since, so that a mirror may follow that
    /// cluster from its revision. `None` for any other store: the first local write that
    /// changes anything, or a lease granted locally, removes the record in the same batch.
    #[must_use]
    pub fn upstream_origin(&self) -> Option<&UpstreamOrigin> {
        self.upstream_origin.as_ref()
    }

    /// [`Self::upstream_origin`] of the store in `config`'s directory, read without opening it.
    ///
    /// # Errors
    /// Storage errors.
    pub fn upstream_origin_in(config: &StoreConfig) -> Result<Option<UpstreamOrigin>> {
        UpstreamOrigin::read(&Backend::open(config)?)
    }

    /// Returns the current revision.
    #[must_use]
    pub fn current_rev(&self) -> i64 {
        self.current_rev
    }

    /// Returns the compact revision (-1 if never compacted).
    #[must_use]
    pub fn compact_rev(&self) -> i64 {
        self.compact_rev
    }

    /// Returns the configuration.
    #[must_use]
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Returns a reader of history rows for other threads (the watch catch-up path, and large
    /// ranges: [`RangePlan::finish_from`]).
    #[must_use]
    pub fn reader(&self) -> RevisionReader {
        self.backend.reader()
    }

    /// Returns a handle to the backend for work that runs off the store's thread and needs no
    /// store state: [`Backend::defragment`].
    #[must_use]
    pub fn backend_handle(&self) -> Backend {
        self.backend.clone()
    }

    /// Whether an earlier storage failure poisoned the store: it refuses writes until reopened.
    #[must_use]
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The revision reads are served at: the current one, or on a poisoned store the last one
    /// persisted. A write whose persist failed was applied to the key index, and its writer
    /// was told it failed; reads must not see it (nor may their header revision pass what the
    /// runtime published), whether or not the store that reopens holds it.
    pub(super) fn read_rev(&self) -> i64 {
        if self.poisoned {
            self.durable_rev
        } else {
            self.current_rev
        }
    }

    /// Whether the failure that poisoned the store was a full disk (freeing space cures it).
    #[must_use]
    pub fn is_poisoned_by_no_space(&self) -> bool {
        self.poisoned && self.poisoned_by_no_space
    }

    /// Marks the store poisoned by `e`; the first failure decides the cause (later ones are
    /// fjall's own "poisoned").
    fn poison(&mut self, e: &Error) {
        if !self.poisoned {
            self.poisoned_by_no_space = e.is_no_space();
        }
        self.poisoned = true;
    }

    /// Records a persist that failed with `e`: the store is poisoned, and what was applied since
    /// the last successful persist may not be on disk. Returns `e`.
    fn persist_failed(&mut self, e: Error) -> Error {
        self.persist_failed = true;
        self.poison(&e);
        e
    }

    /// Records a successful persist: everything applied is on disk, unless an earlier persist
    /// lost some of it. (A write that failed halfway poisons the store without moving the
    /// revision: the ones before it in its group are still made durable, and answered.)
    fn persisted(&mut self) {
        self.unpersisted = false;
        if !self.persist_failed {
            self.durable_rev = self.current_rev;
        }
    }

    /// Returns counters describing the store.
    #[must_use]
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            current_rev: self.current_rev,
            compact_rev: self.compact_rev,
            indexed_keys: self.index.len(),
            live_keys: self.index.live_len(),
            leases: self.lessor.len(),
        }
    }

    /// Returns the store's size ([`Backend::data_bytes`]): `Status` reports it as the db size
    /// and the space quota counts it.
    ///
    /// # Errors
    /// Fails if the directory cannot be read.
    pub fn disk_space(&self) -> Result<u64> {
        Ok(self.backend.data_bytes())
    }

    /// Returns the key index (read-only), for tests and measurements.
    #[must_use]
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// Refuses a read while the key index is incomplete (an import stopped halfway).
    fn check_index_whole(&self) -> Result<()> {
        if self.index_incomplete {
            return Err(Error::Internal(
                "mvcc: an import stopped halfway and the key index holds part of the keyspace; no read is served \
                 until the store is opened again"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Refuses every write once a failed persist or a half-applied write has left memory and
    /// disk apart.
    fn check_writable(&self) -> Result<()> {
        if self.poisoned {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Syncs everything to disk (used on shutdown).
    ///
    /// # Errors
    /// A storage error.
    pub fn sync(&mut self) -> Result<()> {
        self.backend.sync()?;
        self.unpersisted = false;
        Ok(())
    }
}

impl Drop for KvStore {
    fn drop(&mut self) {
        if self.unpersisted {
            if let Err(e) = self.backend.sync() {
                tracing::error!(error = %e, "final sync failed");
            }
        }
    }
}
