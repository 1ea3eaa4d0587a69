//! Owns `KvStore`: the MVCC store (etcd `kvstore.go`, `kvstore_txn.go`, `txn.go`). It holds the
//! key index, the lease table, the current and compact revisions, and writes through the
//! backend. Every committed write hands back the events it produced, so the watch layer never
//! reads storage on the live path.
//!
//! Revision rules (spec §1.2–§1.3): a fresh store is at revision 1; a write transaction that
//! changes anything takes exactly one new revision however many changes it makes; one that
//! changes nothing keeps the revision, writes nothing and produces no event.

use std::collections::HashMap;
use std::time::Instant;

use crate::backend::{Backend, RevisionReader, META_FINISHED_COMPACT, META_SCHEDULED_COMPACT};
use crate::codec::{self, LeaseRecord};
use crate::compaction::{CompactionTicket, Compactor, CompactorSettings};
use crate::config::{StoreConfig, MAX_LEASE_TTL};
use crate::error::{Error, Result};
use crate::index::Index;
use crate::key_index::KeyVersion;
use crate::key_range::KeyRange;
use crate::kv::{Event, EventKind, KeyValue, LeaseId};
use crate::lease::{deadline_after, Lessor};
use crate::request::{
    check_put, check_range, check_txn, check_txn_shape, Compare, CompareResult, CompareTarget, DeleteRangeRequest,
    DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp, SortOrder,
    SortTarget, TxnRequest, TxnResponse,
};
use crate::revision::{BackendKey, Revision};

/// A committed write: the response, and the events it produced in `(revision, sub)` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed<T> {
    /// What the client is told.
    pub response: T,
    /// The changes, with `prev_kv` filled where the key existed before.
    pub events: Vec<Event>,
}

/// A write request that joins a group commit: [`PutRequest`], [`DeleteRangeRequest`],
/// [`TxnRequest`] or [`LeaseRevokeRequest`], each answered with its own response type, so a
/// runtime that batches writes of every kind hands each writer a result of the right kind.
///
/// Sealed: only the core's requests implement it.
pub trait Write: sealed::Sealed + Send + 'static {
    /// What the client is told.
    type Response: std::fmt::Debug + Send + 'static;

    /// Applies the write without persisting it (the token keeps this inside the core).
    #[doc(hidden)]
    fn apply_to(self, store: &mut KvStore, token: sealed::Token) -> Result<Committed<Self::Response>>;
}

mod sealed {
    /// Only the core's requests are [`super::Write`]s.
    pub trait Sealed {}
    /// Proof that the caller is the core: [`super::Write::apply_to`] cannot be called outside.
    #[derive(Debug, Clone, Copy)]
    pub struct Token;
}

impl sealed::Sealed for PutRequest {}
impl sealed::Sealed for DeleteRangeRequest {}
impl sealed::Sealed for TxnRequest {}
impl sealed::Sealed for LeaseRevokeRequest {}

impl Write for PutRequest {
    type Response = PutResponse;

    fn apply_to(self, store: &mut KvStore, _: sealed::Token) -> Result<Committed<PutResponse>> {
        store.apply_put(self)
    }
}

impl Write for DeleteRangeRequest {
    type Response = DeleteRangeResponse;

    fn apply_to(self, store: &mut KvStore, _: sealed::Token) -> Result<Committed<DeleteRangeResponse>> {
        store.apply_delete(self)
    }
}

impl Write for TxnRequest {
    type Response = TxnResponse;

    fn apply_to(self, store: &mut KvStore, _: sealed::Token) -> Result<Committed<TxnResponse>> {
        store.apply_txn(self, true)
    }
}

impl Write for LeaseRevokeRequest {
    /// The revision after the revoke.
    type Response = i64;

    fn apply_to(self, store: &mut KvStore, _: sealed::Token) -> Result<Committed<i64>> {
        store.apply_lease_revoke(self.0)
    }
}

/// Revokes a lease, deleting its keys in one revision (etcd `LeaseRevoke`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRevokeRequest(pub LeaseId);

/// Several writes made durable by one persist (group commit), from [`KvStore::group`].
///
/// Each [`apply`](Self::apply) takes the next revision at once (later writes of the group read
/// earlier ones), and its result can be read only through [`Applied::settle`] with the outcome
/// of [`persist`](Self::persist): a write is never reported done before it is durable, and a
/// failed persist fails every write of the group. A group dropped without `persist` leaves its
/// rows to the next persist.
#[derive(Debug)]
pub struct WriteGroup<'a> {
    store: &'a mut KvStore,
}

impl WriteGroup<'_> {
    /// Applies one write; a failed write does not affect the others.
    pub fn apply<W: Write>(&mut self, req: W) -> Applied<W::Response> {
        Applied(req.apply_to(self.store, sealed::Token))
    }

    /// Makes every write of the group durable, per the durability mode. If the persist fails,
    /// the store is poisoned and every write of the group fails.
    pub fn persist(self) -> Persisted {
        match self.store.persist() {
            Ok(()) => Persisted { failed: false },
            Err(e) => {
                tracing::error!(error = %e, "persist failed; the store is poisoned");
                Persisted { failed: true }
            }
        }
    }
}

/// A write applied inside a [`WriteGroup`], waiting for the group's persist.
#[derive(Debug)]
#[must_use = "a write's result is known only once its group is persisted"]
pub struct Applied<T>(Result<Committed<T>>);

impl<T> Applied<T> {
    /// The write's result once its group has been persisted: `Poisoned` if the persist failed.
    ///
    /// # Errors
    /// The write's own error, or `Poisoned`.
    pub fn settle(self, persisted: &Persisted) -> Result<Committed<T>> {
        match self.0 {
            Ok(_) if persisted.failed => Err(Error::Poisoned),
            other => other,
        }
    }
}

/// The outcome of [`WriteGroup::persist`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persisted {
    failed: bool,
}

impl Persisted {
    /// Whether the group is durable.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        !self.failed
    }
}

/// A lease as `time_to_live` reports it (etcd `LeaseTimeToLiveResponse`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseStatus {
    /// The lease id.
    pub id: LeaseId,
    /// Remaining seconds, rounded up.
    pub ttl: i64,
    /// The TTL it was granted with.
    pub granted_ttl: i64,
    /// Attached keys in key order, if asked for.
    pub keys: Vec<Vec<u8>>,
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
    /// Granted leases.
    pub leases: usize,
}

/// The watchable MVCC key-value store, synchronous: whoever owns it serialises access.
pub struct KvStore {
    config: StoreConfig,
    backend: Backend,
    index: Index,
    lessor: Lessor,
    current_rev: i64,
    compact_rev: i64,
    /// Rows (and lease deletions) of the current write group, committed to the backend as one
    /// batch by `persist`.
    group: GroupBatch,
    /// Batches committed to the backend but not yet persisted.
    unpersisted: bool,
    poisoned: bool,
    compactor: Compactor,
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
            current_rev: 1,
            compact_rev: finished.unwrap_or(-1),
            group: GroupBatch::default(),
            unpersisted: false,
            poisoned: false,
            compactor,
            backend,
            config,
        };
        let key_leases = store.restore_index()?;
        // etcd #17780: compaction may have removed the newest rows, so the markers bound the
        // revision from below too; it never goes backwards across a restart.
        store.current_rev = store.current_rev.max(finished.unwrap_or(1)).max(scheduled.unwrap_or(1));
        for rec in store.backend.leases()? {
            store.lessor.insert(rec.id, rec.ttl, deadline_after(now, rec.ttl));
        }
        for (key, lease) in key_leases {
            store.lessor.attach(&key, lease);
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

    /// Returns a reader of history rows for other threads (the watch catch-up path).
    #[must_use]
    pub fn reader(&self) -> RevisionReader {
        self.backend.reader()
    }

    /// Returns counters describing the store.
    #[must_use]
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            current_rev: self.current_rev,
            compact_rev: self.compact_rev,
            indexed_keys: self.index.len(),
            leases: self.lessor.len(),
        }
    }

    /// Returns the bytes the store occupies on disk.
    ///
    /// # Errors
    /// Fails if the directory cannot be read.
    pub fn disk_space(&self) -> Result<u64> {
        self.backend.disk_space()
    }

    /// Returns the key index (read-only), for tests and measurements.
    #[must_use]
    pub fn index(&self) -> &Index {
        &self.index
    }

    // ----- reads -----

    /// Reads a key range (etcd `Range`, spec §1.4).
    ///
    /// # Errors
    /// `EmptyKey`, `FutureRev`, `Compacted`, or a storage error.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        check_range(req)?;
        self.range_view(req, self.current_rev)
    }

    /// Reads `req` as of a store at `view_rev` (inside a write, the rows of the current group
    /// are read back from the group).
    fn range_view(&self, req: &RangeRequest, view_rev: i64) -> Result<RangeResponse> {
        let rev = self.check_read_rev(req.revision, view_rev)?;
        let limit = if req.needs_all() || req.limit <= 0 {
            usize::MAX
        } else {
            usize::try_from(req.limit).unwrap_or(usize::MAX).saturating_add(1)
        };
        let mut found: Vec<(&[u8], KeyVersion)> = Vec::new();
        let count = if req.count_only {
            self.index.range_at(&req.range, rev, |_| true)
        } else {
            let mut count = 0;
            self.index.range_at(&req.range, rev, |entry| {
                count += 1;
                if found.len() < limit {
                    found.push(entry);
                }
                true
            });
            count
        };
        let mut kvs = Vec::with_capacity(found.len());
        for (_, v) in found {
            kvs.push(self.read_kv(v.modified)?);
        }
        kvs.retain(|kv| {
            (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        });
        sort_kvs(&mut kvs, req.sort_order, req.sort_target);
        let mut more = false;
        if let Ok(limit) = usize::try_from(req.limit) {
            if limit > 0 && kvs.len() > limit {
                kvs.truncate(limit);
                more = true;
            }
        }
        if req.keys_only {
            for kv in &mut kvs {
                kv.value = Vec::new();
            }
        }
        Ok(RangeResponse { revision: view_rev, kvs, more, count: i64::try_from(count).unwrap_or(i64::MAX) })
    }

    /// Applies spec §1.4 steps 1–3: the revision actually read for a requested `rev`.
    fn check_read_rev(&self, rev: i64, view_rev: i64) -> Result<i64> {
        if rev > view_rev {
            return Err(Error::FutureRev { requested: rev, current_rev: view_rev });
        }
        let rev = if rev <= 0 { view_rev } else { rev };
        if rev < self.compact_rev {
            return Err(Error::Compacted { requested: rev, compact_rev: self.compact_rev });
        }
        Ok(rev)
    }

    /// Reads the key-value stored in the put row at `rev`.
    fn read_kv(&self, rev: Revision) -> Result<KeyValue> {
        if let Some(bytes) = self.group.row(rev) {
            return codec::decode_row(bytes)
                .map(|row| row.kv)
                .map_err(|reason| Error::Corrupt { revision: rev.to_string(), reason });
        }
        match self.backend.get_row(rev.to_key(false))? {
            Some(row) => Ok(row.kv),
            None => {
                Err(Error::Corrupt { revision: rev.to_string(), reason: "row named by the index is missing".into() })
            }
        }
    }

    // ----- writes -----

    fn check_writable(&self) -> Result<()> {
        if self.poisoned {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Writes `value` under `key` (etcd `Put`).
    ///
    /// # Errors
    /// `EmptyKey`, `LeaseNotFound`, `KeyNotFound` (ignore_value/ignore_lease on a missing key),
    /// or a storage error.
    pub fn put(&mut self, req: PutRequest) -> Result<Committed<PutResponse>> {
        self.write(req)
    }

    /// Deletes every live key of a range (etcd `DeleteRange`).
    ///
    /// # Errors
    /// `EmptyKey` or a storage error.
    pub fn delete_range(&mut self, req: DeleteRangeRequest) -> Result<Committed<DeleteRangeResponse>> {
        self.write(req)
    }

    /// Runs a transaction (etcd `Txn`).
    ///
    /// # Errors
    /// The validation errors of [`check_txn`], `LeaseNotFound`, `KeyNotFound`, `FutureRev` /
    /// `Compacted` for a read inside it, or a storage error. A txn that fails changes nothing.
    pub fn txn(&mut self, req: TxnRequest) -> Result<Committed<TxnResponse>> {
        self.write(req)
    }

    /// Runs a transaction with only the MVCC layer's rules: the API-level duplicate-key rule is
    /// skipped, so one txn may put the same key several times (each change gets the next `sub`
    /// and version, etcd case A13). Transports use [`Self::txn`].
    ///
    /// # Errors
    /// As [`Self::txn`], except `DuplicateKey`.
    pub fn mvcc_txn(&mut self, req: TxnRequest) -> Result<Committed<TxnResponse>> {
        let result = self.apply_txn(req, false);
        self.persist()?;
        result
    }

    /// Applies one write and makes it durable before returning.
    ///
    /// # Errors
    /// As the write's own method, or a storage error.
    pub fn write<W: Write>(&mut self, req: W) -> Result<Committed<W::Response>> {
        let result = req.apply_to(self, sealed::Token);
        self.persist()?;
        result
    }

    /// Starts a group commit: several writes, each with its own revision, made durable with a
    /// single persist.
    pub fn group(&mut self) -> WriteGroup<'_> {
        WriteGroup { store: self }
    }

    /// Applies writes of one kind, each with its own revision, and makes them durable with a
    /// single persist (a group commit of one kind; [`Self::group`] mixes kinds). Results come
    /// back in order; a failed write does not affect the others. If the persist fails, every
    /// write fails and the store is poisoned.
    pub fn write_all<W: Write>(&mut self, reqs: impl IntoIterator<Item = W>) -> Vec<Result<Committed<W::Response>>> {
        let mut group = self.group();
        let applied: Vec<_> = reqs.into_iter().map(|r| group.apply(r)).collect();
        let persisted = group.persist();
        applied.into_iter().map(|a| a.settle(&persisted)).collect()
    }

    /// Persists every committed batch, per the durability mode.
    fn persist(&mut self) -> Result<()> {
        if !self.group.is_empty() {
            let mut batch = self.backend.batch();
            for (key, value) in self.group.rows.drain(..) {
                batch.put_row(key, value);
            }
            for id in self.group.lease_deletes.drain(..) {
                batch.delete_lease(id);
            }
            if let Err(e) = batch.commit() {
                self.poisoned = true;
                return Err(e);
            }
            self.unpersisted = true;
        }
        if !self.unpersisted {
            return Ok(());
        }
        if let Err(e) = self.backend.persist() {
            self.poisoned = true;
            return Err(e);
        }
        self.unpersisted = false;
        Ok(())
    }

    fn apply_put(&mut self, p: PutRequest) -> Result<Committed<PutResponse>> {
        self.apply_write(
            p,
            |store, p| {
                check_put(p)?;
                store.check_put_refs(p)?;
                Ok(Vec::new())
            },
            |store, w, p, _| store.exec_put(w, p),
            |r, rev| r.revision = rev,
        )
    }

    fn apply_delete(&mut self, d: DeleteRangeRequest) -> Result<Committed<DeleteRangeResponse>> {
        self.apply_write(
            d,
            |_, d| check_range(&RangeRequest::new(d.range.clone())).map(|()| Vec::new()),
            |store, w, d, _| store.exec_delete(w, &d),
            |r, rev| r.revision = rev,
        )
    }

    /// `api_checks` applies the API layer's duplicate-key rule.
    fn apply_txn(&mut self, t: TxnRequest, api_checks: bool) -> Result<Committed<TxnResponse>> {
        self.apply_write(
            t,
            |store, t| {
                if api_checks {
                    check_txn(t, store.config.max_txn_ops())?;
                } else {
                    check_txn_shape(t, store.config.max_txn_ops())?;
                }
                let path = store.compare_path(t)?;
                store.check_txn_refs(t, &path, &mut 0, api_checks)?;
                Ok(path)
            },
            |store, w, t, path| store.exec_txn(w, t, path).map(|(resp, _)| resp),
            |r, rev| r.revision = rev,
        )
    }

    fn apply_lease_revoke(&mut self, id: LeaseId) -> Result<Committed<i64>> {
        self.apply_write(
            id,
            |store, &id| if store.lessor.contains(id) { Ok(Vec::new()) } else { Err(Error::LeaseNotFound) },
            |store, w, id, _| {
                let keys: Vec<Vec<u8>> =
                    store.lessor.get(id).map(|l| l.keys.iter().cloned().collect()).unwrap_or_default();
                for key in keys {
                    store.exec_delete(w, &DeleteRangeRequest::new(KeyRange::Single(key)))?;
                }
                store.lessor.remove(id);
                store.group.lease_deletes.push(id);
                Ok(0)
            },
            |revision, rev| *revision = rev,
        )
    }

    /// One write transaction, without persisting it: `check` validates `req` against the state
    /// before the write and returns the txn's compare path, so that a client error leaves no
    /// trace; `execute` makes the changes; `stamp` writes the revision into the response. Ends
    /// the txn: the revision moves if it changed anything, and its rows wait in the group batch
    /// for `persist`.
    fn apply_write<Q, R>(
        &mut self,
        req: Q,
        check: impl FnOnce(&Self, &Q) -> Result<Vec<bool>>,
        execute: impl FnOnce(&mut Self, &mut WriteTxn, Q, &[bool]) -> Result<R>,
        stamp: impl FnOnce(&mut R, i64),
    ) -> Result<Committed<R>> {
        self.check_writable()?;
        let path = check(self, &req)?;
        let mut w = WriteTxn::new(self.current_rev);
        let mut response = match execute(self, &mut w, req, &path) {
            Ok(r) => r,
            // A read of an `mvcc_txn` naming the txn's own revision before the txn has changed
            // anything fails here on the client's account; nothing has changed yet.
            Err(e) if w.events.is_empty() && e.is_client_error() => return Err(e),
            Err(e) => {
                // Validation passed, so this is a storage failure with the index half-updated.
                self.poisoned = true;
                return Err(e);
            }
        };
        if !w.events.is_empty() {
            self.current_rev += 1;
        }
        stamp(&mut response, self.current_rev);
        Ok(Committed { response, events: w.events })
    }

    /// Checks the references of a put against the state before the write: the lease exists,
    /// and an `ignore_*` put names an existing key (etcd `checkRequestPut`).
    fn check_put_refs(&self, p: &PutRequest) -> Result<()> {
        if (p.ignore_value || p.ignore_lease) && self.index.latest(&p.key).is_none() {
            return Err(Error::KeyNotFound);
        }
        if p.lease != 0 && !self.lessor.contains(p.lease) {
            return Err(Error::LeaseNotFound);
        }
        Ok(())
    }

    /// Checks the ops of the branches `path` selects, before any of them runs (etcd
    /// `checkRequests` with `checkRequestPut` and, at the API level, `checkRequestRange`).
    ///
    /// Deliberate difference: etcd's `checkRequestRange` compares a negative read revision with
    /// the compact revision (so `revision: -1` in a txn fails after any compaction) although a
    /// plain range treats every `revision <= 0` as "current"; we treat it as current in both.
    fn check_txn_refs(&self, t: &TxnRequest, path: &[bool], at: &mut usize, api_checks: bool) -> Result<()> {
        let succeeded = path.get(*at).copied().unwrap_or(false);
        *at += 1;
        for op in if succeeded { &t.success } else { &t.failure } {
            match op {
                RequestOp::Put(p) => self.check_put_refs(p)?,
                RequestOp::Range(r) if r.revision > 0 => {
                    // The MVCC layer lets a read name the txn's own revision, readable once the
                    // txn has changed something (known only when it runs, see `apply`).
                    let newest = if api_checks { self.current_rev } else { self.current_rev + 1 };
                    if r.revision > newest {
                        return Err(Error::FutureRev { requested: r.revision, current_rev: self.current_rev });
                    }
                    if r.revision < self.compact_rev {
                        return Err(Error::Compacted { requested: r.revision, compact_rev: self.compact_rev });
                    }
                }
                RequestOp::Txn(nested) => self.check_txn_refs(nested, path, at, api_checks)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Evaluates every compare of a txn and of the nested txns it will run, against the state
    /// before the txn, in execution order (etcd `compareToPath`).
    fn compare_path(&self, t: &TxnRequest) -> Result<Vec<bool>> {
        let mut path = Vec::new();
        self.compare_path_into(t, &mut path)?;
        Ok(path)
    }

    fn compare_path_into(&self, t: &TxnRequest, path: &mut Vec<bool>) -> Result<()> {
        let mut ok = true;
        for c in &t.compare {
            if !self.compare_holds(c)? {
                ok = false;
                break;
            }
        }
        path.push(ok);
        for op in if ok { &t.success } else { &t.failure } {
            if let RequestOp::Txn(nested) = op {
                self.compare_path_into(nested, path)?;
            }
        }
        Ok(())
    }

    /// etcd `applyCompare`: every key of the range must satisfy the compare; a missing key
    /// compares as a zero key-value, except that a value compare on no key always fails.
    fn compare_holds(&self, c: &Compare) -> Result<bool> {
        let mut found = Vec::new();
        self.index.range_at(&c.range, self.current_rev, |(_, v)| {
            found.push(v);
            true
        });
        if found.is_empty() {
            return Ok(!matches!(c.target, CompareTarget::Value(_)) && compare_kv(c, &KeyValue::default()));
        }
        for v in found {
            let kv = if matches!(c.target, CompareTarget::Value(_) | CompareTarget::Lease(_)) {
                self.read_kv(v.modified)?
            } else {
                KeyValue {
                    create_revision: v.created.main,
                    mod_revision: v.modified.main,
                    version: v.version,
                    ..KeyValue::default()
                }
            };
            if !compare_kv(c, &kv) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Runs the branch of `t` that `path` selected; returns its response and how many path
    /// entries it used (etcd `executeTxn`).
    fn exec_txn(&mut self, w: &mut WriteTxn, t: TxnRequest, path: &[bool]) -> Result<(TxnResponse, usize)> {
        let succeeded = path.first().copied().unwrap_or(false);
        let mut used = 1;
        let mut responses = Vec::new();
        for op in if succeeded { t.success } else { t.failure } {
            responses.push(match op {
                RequestOp::Range(r) => ResponseOp::Range(self.range_view(&r, w.read_rev())?),
                RequestOp::Put(p) => ResponseOp::Put(self.exec_put(w, p)?),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.exec_delete(w, &d)?),
                RequestOp::Txn(nested) => {
                    let (resp, n) = self.exec_txn(w, nested, path.get(used..).unwrap_or(&[]))?;
                    used += n;
                    ResponseOp::Txn(resp)
                }
                RequestOp::Empty => return Err(Error::KeyNotFound),
            });
        }
        // etcd fills only the top-level header; nested txn responses carry revision 0.
        Ok((TxnResponse { revision: 0, succeeded, responses }, used))
    }

    /// etcd `storeTxnWrite.put`. Takes the request by value: its key and value move into the
    /// new key-value instead of being copied.
    fn exec_put(&mut self, w: &mut WriteTxn, p: PutRequest) -> Result<PutResponse> {
        let rev = w.next_revision();
        let prev_version = self.index.put(&p.key, rev);
        let prev_kv = match prev_version {
            Some(v) => Some(self.read_kv(v.modified)?),
            None => None,
        };
        let (value, lease) = match &prev_kv {
            Some(prev) => (
                if p.ignore_value { prev.value.clone() } else { p.value },
                if p.ignore_lease { prev.lease } else { p.lease },
            ),
            None => (p.value, p.lease),
        };
        let kv = KeyValue {
            key: p.key,
            create_revision: prev_version.map_or(rev.main, |v| v.created.main),
            mod_revision: rev.main,
            version: prev_version.map_or(1, |v| v.version + 1),
            value,
            lease,
        };
        self.group.push(rev.to_key(false), codec::encode_row(&kv, prev_version.map(|v| v.modified)));
        self.lessor.attach(&kv.key, lease);
        let response = PutResponse { revision: rev.main, prev_kv: if p.prev_kv { prev_kv.clone() } else { None } };
        w.events.push(Event { kind: EventKind::Put, kv, prev_kv });
        Ok(response)
    }

    /// etcd `storeTxnWrite.deleteRange`: deletes live keys in key order, one sub revision each.
    fn exec_delete(&mut self, w: &mut WriteTxn, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
        let live = self.index.live_keys(&d.range);
        let mut prev_kvs = Vec::new();
        let deleted = live.len();
        for (key, v) in live {
            let rev = w.next_revision();
            let prev = self.read_kv(v.modified)?;
            let tomb = KeyValue { key: key.clone(), mod_revision: rev.main, ..KeyValue::default() };
            let stored = KeyValue { key: key.clone(), ..KeyValue::default() };
            self.group.push(rev.to_key(true), codec::encode_row(&stored, Some(v.modified)));
            self.index.tombstone(&key, rev);
            self.lessor.attach(&key, 0);
            if d.prev_kv {
                prev_kvs.push(prev.clone());
            }
            w.events.push(Event { kind: EventKind::Delete, kv: tomb, prev_kv: Some(prev) });
        }
        let revision = if w.events.is_empty() { w.begin_rev } else { w.begin_rev + 1 };
        Ok(DeleteRangeResponse { revision, deleted: i64::try_from(deleted).unwrap_or(i64::MAX), prev_kvs })
    }

    // ----- compaction -----

    /// Compacts history at `rev` (etcd `Compact`, spec §5): reads below `rev` fail from now
    /// on; the rows no longer needed are deleted in the background. Wait on the returned ticket
    /// for the physical part (`physical = true`).
    ///
    /// # Errors
    /// `Compacted` if `rev <= compact_rev`, `FutureRev` if `rev > current_rev`, or a storage
    /// error.
    pub fn compact(&mut self, rev: i64) -> Result<CompactionTicket> {
        self.check_writable()?;
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
            self.poisoned = true;
            return Err(e);
        }
        self.unpersisted = false;
        self.compact_unchecked(rev)
    }

    fn compact_unchecked(&mut self, rev: i64) -> Result<CompactionTicket> {
        self.compact_rev = rev;
        let keep = self.index.compact(rev);
        Ok(self.compactor.schedule(rev, keep))
    }

    // ----- leases -----

    /// Grants a lease (etcd `LeaseGrant`). `id` 0 asks the store to pick one; a TTL below
    /// `min_lease_ttl` is raised to it. Returns the id and the granted TTL.
    ///
    /// # Errors
    /// `LeaseExists`, `LeaseTtlTooLarge`, or a storage error.
    pub fn lease_grant(&mut self, id: LeaseId, ttl: i64, now: Instant) -> Result<(LeaseId, i64)> {
        self.check_writable()?;
        if ttl > MAX_LEASE_TTL {
            return Err(Error::LeaseTtlTooLarge);
        }
        let ttl = ttl.max(self.config.min_lease_ttl());
        let id = if id == 0 { self.fresh_lease_id() } else { id };
        if self.lessor.contains(id) {
            return Err(Error::LeaseExists);
        }
        let mut batch = self.backend.batch();
        batch.put_lease(&LeaseRecord { id, ttl });
        if let Err(e) = batch.commit() {
            self.poisoned = true;
            return Err(e);
        }
        self.unpersisted = true;
        self.persist()?;
        self.lessor.insert(id, ttl, deadline_after(now, ttl));
        Ok((id, ttl))
    }

    fn fresh_lease_id(&self) -> LeaseId {
        loop {
            // Positive, non-zero, unused: etcd's server-chosen ids are random too.
            let id = rand::random::<i64>() & i64::MAX;
            if id != 0 && !self.lessor.contains(id) {
                return id;
            }
        }
    }

    /// Revokes a lease: deletes its keys in one revision (DELETE events in key order) and the
    /// lease itself (etcd `LeaseRevoke`). Returns the revision after it.
    ///
    /// # Errors
    /// `LeaseNotFound`, or a storage error.
    pub fn lease_revoke(&mut self, id: LeaseId) -> Result<Committed<i64>> {
        self.write(LeaseRevokeRequest(id))
    }

    /// Renews a lease: its deadline becomes `now + ttl`. Returns the TTL.
    ///
    /// # Errors
    /// `LeaseNotFound` (also for a lease that expired but was not yet revoked).
    pub fn lease_keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<i64> {
        let ttl = match self.lessor.get(id) {
            Some(l) if l.deadline > now => l.ttl,
            _ => return Err(Error::LeaseNotFound),
        };
        self.lessor.set_deadline(id, deadline_after(now, ttl));
        Ok(ttl)
    }

    /// Reports a lease's remaining and granted TTL, and its keys if `with_keys`.
    ///
    /// # Errors
    /// `LeaseNotFound`.
    pub fn lease_time_to_live(&self, id: LeaseId, now: Instant, with_keys: bool) -> Result<LeaseStatus> {
        let lease = self.lessor.get(id).ok_or(Error::LeaseNotFound)?;
        Ok(LeaseStatus {
            id,
            ttl: lease.remaining_secs(now),
            granted_ttl: lease.ttl,
            keys: if with_keys { lease.keys.iter().cloned().collect() } else { Vec::new() },
        })
    }

    /// Returns every lease id, ascending.
    #[must_use]
    pub fn leases(&self) -> Vec<LeaseId> {
        self.lessor.ids()
    }

    /// Returns when the next lease expires, so a runtime knows when to call
    /// [`Self::expire_leases`].
    #[must_use]
    pub fn next_lease_deadline(&self) -> Option<Instant> {
        self.lessor.next_deadline()
    }

    /// Revokes every lease whose deadline is at or before `now`, each in its own write (as
    /// etcd's lessor does), with one persist for all. Returns what each revoke produced.
    pub fn expire_leases(&mut self, now: Instant) -> Vec<(LeaseId, Result<Committed<i64>>)> {
        let expired = self.lessor.expired(now);
        let mut group = self.group();
        let applied: Vec<_> = expired.iter().map(|&id| (id, group.apply(LeaseRevokeRequest(id)))).collect();
        let persisted = group.persist();
        applied.into_iter().map(|(id, a)| (id, a.settle(&persisted))).collect()
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

/// The changes one write transaction has made so far.
#[derive(Debug)]
struct WriteTxn {
    begin_rev: i64,
    events: Vec<Event>,
}

impl WriteTxn {
    fn new(begin_rev: i64) -> Self {
        Self { begin_rev, events: Vec::new() }
    }

    /// The revision of the next change: `begin_rev + 1`, sub = changes so far.
    fn next_revision(&self) -> Revision {
        Revision::new(self.begin_rev + 1, i64::try_from(self.events.len()).unwrap_or(i64::MAX))
    }

    /// Reads inside a write txn see its own writes (spec §1.2).
    fn read_rev(&self) -> i64 {
        if self.events.is_empty() {
            self.begin_rev
        } else {
            self.begin_rev + 1
        }
    }
}

/// The rows a write group has produced, waiting to be committed as one backend batch. Later
/// writes of the same group read earlier rows back from here (read-your-writes). Rows arrive in
/// revision order, so a row is found by binary search.
#[derive(Debug, Default)]
struct GroupBatch {
    rows: Vec<(BackendKey, Vec<u8>)>,
    lease_deletes: Vec<LeaseId>,
}

impl GroupBatch {
    fn push(&mut self, key: BackendKey, value: Vec<u8>) {
        debug_assert!(self.rows.last().is_none_or(|(last, _)| last.rev < key.rev));
        self.rows.push((key, value));
    }

    fn row(&self, rev: Revision) -> Option<&[u8]> {
        let i = self.rows.binary_search_by(|(k, _)| k.rev.cmp(&rev)).ok()?;
        self.rows.get(i).map(|(_, v)| v.as_slice())
    }

    fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.lease_deletes.is_empty()
    }
}

/// etcd `compareKV`.
fn compare_kv(c: &Compare, kv: &KeyValue) -> bool {
    let ord = match &c.target {
        CompareTarget::Value(v) => kv.value.as_slice().cmp(v.as_slice()),
        CompareTarget::Create(r) => kv.create_revision.cmp(r),
        CompareTarget::Mod(r) => kv.mod_revision.cmp(r),
        CompareTarget::Version(v) => kv.version.cmp(v),
        CompareTarget::Lease(l) => kv.lease.cmp(l),
    };
    match c.result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}

/// etcd `txn.go executeRange` sorting: a non-key target without an order sorts ascending; key
/// order ascending is already how the index returns keys.
fn sort_kvs(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    let order = match (order, target) {
        (SortOrder::None, SortTarget::Key) | (SortOrder::Ascend, SortTarget::Key) => return,
        (SortOrder::None, _) => SortOrder::Ascend,
        (o, _) => o,
    };
    let key = |kv: &KeyValue, other: &KeyValue| match target {
        SortTarget::Key => kv.key.cmp(&other.key),
        SortTarget::Version => kv.version.cmp(&other.version),
        SortTarget::Create => kv.create_revision.cmp(&other.create_revision),
        SortTarget::Mod => kv.mod_revision.cmp(&other.mod_revision),
        SortTarget::Value => kv.value.cmp(&other.value),
    };
    // Stable, so ties keep key order.
    if order == SortOrder::Descend {
        kvs.sort_by(|a, b| key(b, a));
    } else {
        kvs.sort_by(|a, b| key(a, b));
    }
}
