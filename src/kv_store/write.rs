//! Owns the write path: the typed write API ([`Write`], [`WriteGroup`], [`Applied`],
//! [`Persisted`]), one write transaction from check to revision (`apply_write`), put and delete
//! (etcd `mvcc/kvstore_txn.go storeTxnWrite.put`, `deleteRange`), and the group batch committed
//! and made durable by one persist.

use std::time::Instant;

use super::leases::LeaseRevokeRequest;
use super::quota::Gate;
use super::{Committed, KvStore};
use crate::codec;
use crate::error::{Error, Result};
use crate::kv::{Event, EventKind, KeyValue, LeaseId};
use crate::request::{
    check_put, check_range, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest, TxnRequest,
    TxnResponse,
};
use crate::revision::{BackendKey, Revision};

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

pub(super) mod sealed {
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

impl KvStore {
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
    pub(super) fn persist(&mut self) -> Result<()> {
        let started = Instant::now();
        let wrote = !self.group.is_empty() || self.unpersisted;
        if !self.group.is_empty() {
            let mut batch = self.backend.batch();
            for (key, value) in self.group.rows.drain(..) {
                batch.put_row(key, value);
            }
            for id in self.group.lease_deletes.drain(..) {
                batch.delete_lease(id);
            }
            if std::mem::take(&mut self.group.forget_upstream) {
                super::UpstreamOrigin::delete_with(&mut batch);
            }
            if let Err(e) = batch.commit() {
                return Err(self.persist_failed(e));
            }
            self.unpersisted = true;
        }
        if self.unpersisted {
            if let Err(e) = self.backend.persist() {
                return Err(self.persist_failed(e));
            }
        }
        self.persisted();
        if wrote {
            self.backend.disk_stats().commit.observe(started.elapsed());
        }
        Ok(())
    }

    fn apply_put(&mut self, p: PutRequest) -> Result<Committed<PutResponse>> {
        self.admit(Gate::Put(&p))?;
        self.apply_write(
            p,
            |store, p| {
                check_put(p)?;
                // A put of its own checks its lease before its key (etcd: apply.go `Put`, with
                // no txn); a txn's put the key first (`checkRequestPut`).
                if p.lease != 0 && !store.lessor.contains(p.lease) {
                    return Err(Error::LeaseNotFound);
                }
                store.check_put_refs(p)?;
                Ok(Vec::new())
            },
            |store, w, p, _| store.exec_put(w, p),
            |r, rev| r.revision = rev,
        )
    }

    fn apply_delete(&mut self, d: DeleteRangeRequest) -> Result<Committed<DeleteRangeResponse>> {
        self.admit(Gate::Free)?;
        self.apply_write(
            d,
            |_, d| check_range(&RangeRequest::new(d.range.clone())).map(|()| Vec::new()),
            |store, w, d, _| store.exec_delete(w, &d),
            |r, rev| r.revision = rev,
        )
    }

    /// One write transaction, without persisting it: `check` validates `req` against the state
    /// before the write and returns the txn's compare path, so that a client error leaves no
    /// trace; `execute` makes the changes; `stamp` writes the revision into the response. Ends
    /// the txn: the revision moves if it changed anything, and its rows wait in the group batch
    /// for `persist`.
    pub(super) fn apply_write<Q, R>(
        &mut self,
        req: Q,
        check: impl FnOnce(&Self, &Q) -> Result<Vec<bool>>,
        execute: impl FnOnce(&mut Self, &mut WriteTxn, Q, &[bool]) -> Result<R>,
        stamp: impl FnOnce(&mut R, i64),
    ) -> Result<Committed<R>> {
        self.check_writable()?;
        let path = check(self, &req)?;
        let mut w = WriteTxn::new(self.current_rev);
        let mark = self.group.mark();
        let mut response = match execute(self, &mut w, req, &path) {
            Ok(r) => r,
            // A read of an `mvcc_txn` naming the txn's own revision before the txn has changed
            // anything fails here on the client's account; nothing has changed yet.
            Err(e) if w.events.is_empty() && e.is_client_error() => return Err(e),
            Err(e) => {
                // Validation passed, so this is a storage failure with the index half-updated:
                // the store is poisoned until it reopens from disk, where none of this write
                // may be.
                self.group.roll_back(mark);
                self.poison(&e);
                return Err(e);
            }
        };
        if !w.events.is_empty() {
            self.current_rev += 1;
            if self.upstream_origin.take().is_some() {
                // The store no longer holds only upstream's state: no mirror may follow from it.
                self.group.forget_upstream = true;
            }
        }
        stamp(&mut response, self.current_rev);
        Ok(Committed { response, events: w.events })
    }

    /// Checks the references of a put against the state before the write: the lease exists,
    /// and an `ignore_*` put names an existing key (etcd `checkRequestPut`).
    pub(super) fn check_put_refs(&self, p: &PutRequest) -> Result<()> {
        if (p.ignore_value || p.ignore_lease) && self.index.latest(&p.key).is_none() {
            return Err(Error::KeyNotFound);
        }
        if p.lease != 0 && !self.lessor.contains(p.lease) {
            return Err(Error::LeaseNotFound);
        }
        Ok(())
    }

    /// etcd `storeTxnWrite.put`. Takes the request by value: its key and value move into the
    /// new key-value instead of being copied.
    pub(super) fn exec_put(&mut self, w: &mut WriteTxn, p: PutRequest) -> Result<PutResponse> {
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
        w.events.push(Event::new(EventKind::Put, kv, prev_kv));
        Ok(response)
    }

    /// etcd `storeTxnWrite.deleteRange`: deletes live keys in key order, one sub revision each.
    pub(super) fn exec_delete(&mut self, w: &mut WriteTxn, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
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
            w.events.push(Event::new(EventKind::Delete, tomb, Some(prev)));
        }
        let revision = if w.events.is_empty() { w.begin_rev } else { w.begin_rev + 1 };
        Ok(DeleteRangeResponse { revision, deleted: i64::try_from(deleted).unwrap_or(i64::MAX), prev_kvs })
    }
}

/// The changes one write transaction has made so far.
#[derive(Debug)]
pub(super) struct WriteTxn {
    begin_rev: i64,
    events: Vec<Event>,
}

impl WriteTxn {
    pub(super) fn new(begin_rev: i64) -> Self {
        Self { begin_rev, events: Vec::new() }
    }

    /// The revision of the next change: `begin_rev + 1`, sub = changes so far.
    pub(super) fn next_revision(&self) -> Revision {
        Revision::new(self.begin_rev + 1, i64::try_from(self.events.len()).unwrap_or(i64::MAX))
    }

    /// Reads inside a write txn see its own writes (docs/etcd-semantics.md §1.2).
    pub(super) fn read_rev(&self) -> i64 {
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
pub(super) struct GroupBatch {
    rows: Vec<(BackendKey, Vec<u8>)>,
    lease_deletes: Vec<LeaseId>,
    /// A write of the group is the store's first of its own since an import: the batch also
    /// removes the upstream origin record ([`KvStore::upstream_origin`]).
    forget_upstream: bool,
}

impl GroupBatch {
    pub(super) fn push(&mut self, key: BackendKey, value: Vec<u8>) {
        debug_assert!(self.rows.last().is_none_or(|(last, _)| last.rev < key.rev));
        self.rows.push((key, value));
    }

    /// Deletes lease `id`'s record with the group's rows.
    pub(super) fn delete_lease(&mut self, id: LeaseId) {
        self.lease_deletes.push(id);
    }

    pub(super) fn row(&self, rev: Revision) -> Option<&[u8]> {
        let i = self.rows.binary_search_by(|(k, _)| k.rev.cmp(&rev)).ok()?;
        self.rows.get(i).map(|(_, v)| v.as_slice())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.lease_deletes.is_empty()
    }

    /// Where the batch stands, for [`Self::roll_back`].
    pub(super) fn mark(&self) -> GroupMark {
        GroupMark { rows: self.rows.len(), lease_deletes: self.lease_deletes.len() }
    }

    /// Drops what was added since `mark`: the rows of a write that failed halfway on a storage
    /// error, which must not reach the disk with the group's other writes (the writer is told it
    /// failed, and a reopened store would take its revision for a real one).
    pub(super) fn roll_back(&mut self, mark: GroupMark) {
        self.rows.truncate(mark.rows);
        self.lease_deletes.truncate(mark.lease_deletes);
    }
}

/// A point of a [`GroupBatch`] to roll back to.
#[derive(Debug, Clone, Copy)]
pub(super) struct GroupMark {
    rows: usize,
    lease_deletes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use crate::revision::Revision;
    use crate::KeyRange;

    /// A delete of two keys whose second row cannot be read fails halfway: the store is
    /// poisoned, the write fails, and none of its rows reach the disk with the group's other
    /// write, so the reopened store has neither its revision nor its tombstones.
    #[test]
    fn a_write_failing_halfway_on_a_storage_error_leaves_nothing_on_disk() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig::new(dir.path());
        let mut store = KvStore::open(config.clone()).expect("open");
        store.put(PutRequest::new("p/a", "1")).expect("put a");
        let b = store.put(PutRequest::new("p/b", "2")).expect("put b").response.revision;
        // Break b's row on disk: reading it is now a storage error.
        let b_key = Revision::new(b, 0).to_key(false);
        let b_row = store.backend.get_row(b_key).expect("read b").expect("b's row");
        let mut batch = store.backend.batch();
        batch.put_row(b_key, b"not a row".to_vec());
        batch.commit().expect("break the row");

        let mut group = store.group();
        let first = group.apply(PutRequest::new("other", "x"));
        let mut delete = DeleteRangeRequest::new(KeyRange::prefix("p/"));
        delete.prev_kv = true;
        let half = group.apply(delete);
        let persisted = group.persist();
        let put_rev = first.settle(&persisted).expect("the other write of the group").response.revision;
        assert!(half.settle(&persisted).is_err(), "the delete cannot read b's row");
        assert!(store.is_poisoned());
        // Mend b's row, so that the store opens again.
        let mut batch = store.backend.batch();
        batch.put_row(b_key, crate::codec::encode_row(&b_row.kv, None));
        batch.commit().expect("mend the row");
        drop(store);

        let reopened = KvStore::open(config).expect("reopen");
        assert_eq!(reopened.current_rev(), put_rev, "the failed delete's revision is not on disk");
        let live = reopened.range(&RangeRequest::new(KeyRange::Single(b"p/a".to_vec()))).expect("range");
        assert_eq!(live.kvs.len(), 1, "p/a's tombstone is not on disk");
    }

    /// Each group commit counts one commit, and one journal sync where the durability syncs;
    /// a store reopened with the same configuration goes on counting in the same place.
    #[test]
    fn commits_and_journal_syncs_are_counted_for_the_metrics() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig::new(dir.path().join("synced"));
        let stats = std::sync::Arc::clone(config.disk_stats());
        let mut store = KvStore::open(config.clone()).expect("open");
        let syncs_at_open = stats.journal_sync.snapshot().count;
        store.put(PutRequest::new("a", "1")).expect("put");
        let mut group = store.group();
        let writes = [group.apply(PutRequest::new("b", "2")), group.apply(PutRequest::new("c", "3"))];
        let persisted = group.persist();
        for w in writes {
            w.settle(&persisted).expect("grouped put");
        }
        assert_eq!(stats.commit.snapshot().count, 2, "one commit per group");
        assert_eq!(stats.journal_sync.snapshot().count, syncs_at_open + 2);
        drop(store);
        let mut store = KvStore::open(config).expect("reopen");
        store.put(PutRequest::new("d", "4")).expect("put after reopen");
        assert_eq!(stats.commit.snapshot().count, 3);

        let buffered = StoreConfig::new(dir.path().join("buffered")).with_durability(crate::Durability::Buffered);
        let stats = std::sync::Arc::clone(buffered.disk_stats());
        let mut store = KvStore::open(buffered).expect("open buffered");
        let syncs_at_open = stats.journal_sync.snapshot().count;
        store.put(PutRequest::new("a", "1")).expect("put");
        assert_eq!(stats.commit.snapshot().count, 1);
        assert_eq!(stats.journal_sync.snapshot().count, syncs_at_open, "a buffered persist syncs nothing");
    }
}
