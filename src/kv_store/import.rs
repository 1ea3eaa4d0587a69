//! Owns importing another etcd's keyspace into an empty store: the key-values a consistent
//! range read at one upstream revision R returned (`watchkv import`, the mirror's bootstrap)
//! become the store's state at R, each key with upstream's create and mod revisions, version
//! and lease id, and R becomes the compact revision because the history before R is unknown
//! (docs/etcd-semantics.md "Importing from etcd"). Rows are written directly, as a snapshot
//! restore writes them, and the index is built as the open path builds it.

use std::collections::HashMap;

use super::KvStore;
use crate::backend::{
    Backend, Batch, META_FINISHED_COMPACT, META_IMPORTING, META_SCHEDULED_COMPACT, META_UPSTREAM_CLUSTER,
    META_UPSTREAM_PREFIX,
};
use crate::codec;
use crate::compaction::{Compactor, CompactorSettings};
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::kv::KeyValue;
use crate::revision::Revision;

/// An import commits its rows in batches of about this many bytes, so that its memory stays
/// bounded whatever upstream's size.
const IMPORT_BATCH_BYTES: usize = 4 << 20;

/// What an import produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportedSnapshot {
    /// The revision imported at: the store's current and compact revision.
    pub revision: i64,
    /// Keys imported.
    pub keys: usize,
    /// Keys that carry an upstream lease id (kept, never expired locally).
    pub leased_keys: usize,
}

/// Where a store's whole state came from ([`KvStore::upstream_origin`]): the etcd cluster and
/// the prefix of its keyspace that was copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamOrigin {
    /// The keys copied: those under this prefix, or every key when it is empty.
    pub prefix: Vec<u8>,
    /// The cluster id upstream's responses carried.
    pub cluster_id: u64,
}

impl UpstreamOrigin {
    /// Reads the record from `backend`'s meta keyspace; `None` when it is not whole.
    pub(super) fn read(backend: &Backend) -> Result<Option<Self>> {
        let prefix = backend.get_meta_bytes(META_UPSTREAM_PREFIX)?;
        let cluster = backend.get_meta(META_UPSTREAM_CLUSTER)?;
        Ok(match (prefix, cluster) {
            (Some(prefix), Some(cluster)) => Some(Self { prefix, cluster_id: cluster.cast_unsigned() }),
            _ => None,
        })
    }

    /// Writes the record with `batch`.
    fn write_to(&self, batch: &mut Batch) {
        batch.put_meta_bytes(META_UPSTREAM_PREFIX, self.prefix.clone());
        batch.put_meta(META_UPSTREAM_CLUSTER, self.cluster_id.cast_signed());
    }

    /// Removes the record with `batch`: the store has taken a write or a lease of its own.
    pub(super) fn delete_with(batch: &mut Batch) {
        batch.delete_meta(META_UPSTREAM_PREFIX);
        batch.delete_meta(META_UPSTREAM_CLUSTER);
    }
}

/// An import in progress, from [`KvStore::begin_import`]: feed it upstream's key-values in key
/// order with [`push`](Self::push), then [`finish`](Self::finish). Until `finish`, the data
/// directory is marked half imported and [`KvStore::open`] refuses it; an import that fails or
/// is dropped leaves the store refusing writes and the directory for the caller to remove.
pub struct Import<'a> {
    store: &'a mut KvStore,
    revision: i64,
    batch: Option<Batch>,
    batch_bytes: usize,
    /// The next sub revision of each upstream mod revision seen so far.
    next_sub: HashMap<i64, i64>,
    last_key: Option<Vec<u8>>,
    keys: usize,
    leased_keys: usize,
    /// The origin to record at `finish` ([`Self::from_upstream`]).
    upstream_origin: Option<UpstreamOrigin>,
    finished: bool,
}

impl std::fmt::Debug for Import<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Import").field("revision", &self.revision).field("keys", &self.keys).finish_non_exhaustive()
    }
}

impl Drop for Import<'_> {
    /// An import that did not finish leaves the index half built: the store refuses writes
    /// and reads from then on, and the directory's mark makes a reopen refuse it too.
    fn drop(&mut self) {
        if !self.finished {
            self.store.poisoned = true;
            self.store.index_incomplete = true;
        }
    }
}

impl KvStore {
    /// Starts importing another etcd's keyspace as it was at upstream revision `revision` (a
    /// consistent range read at that revision). The store must be empty: never written, never
    /// compacted, no lease. Marks the directory half imported (durably) before any row.
    ///
    /// Leases are not imported: keys keep upstream's lease ids, no local lease is created and
    /// the store never expires those keys (upstream's lessor owns them).
    ///
    /// # Errors
    /// `Error::Import` for a store that is not empty or a revision below 1; storage errors.
    pub fn begin_import(&mut self, revision: i64) -> Result<Import<'_>> {
        self.check_writable()?;
        if revision < 1 {
            return Err(Error::Import(format!("cannot import at revision {revision}: revisions start at 1")));
        }
        let empty = self.current_rev == 1
            && self.compact_rev == -1
            && self.index.is_empty()
            && self.lessor.is_empty()
            && self.group.is_empty()
            && self.backend.last_row_key()?.is_none();
        if !empty {
            return Err(Error::Import(format!(
                "the store in {:?} is not empty (revision {}, compact revision {}, {} keys, {} leases): import \
                 only into a new data directory",
                self.config.path().display(),
                self.current_rev,
                self.compact_rev,
                self.index.len(),
                self.lessor.len()
            )));
        }
        self.mark_importing(revision)?;
        Ok(Import::new(self, revision))
    }

    /// Starts replacing this store's whole state with another etcd's at `revision` (a mirror's
    /// re-bootstrap, after upstream compacted history the mirror had not applied yet): every
    /// history row and the index go, and the key-values pushed to the returned [`Import`]
    /// become the state at `revision`, which [`Import::finish`] makes the current and compact
    /// revision. The directory is marked half imported (durably) before the first row goes,
    /// so a crash in between leaves a directory [`KvStore::open`] refuses, never a mix of two
    /// states. A running physical compaction is stopped first: it would delete rows by the old
    /// index and record the old compact revision after the new one.
    ///
    /// # Errors
    /// `Error::Import` if `revision` is not above the current revision or the store holds
    /// leases of its own (a mirror has none: upstream's lessor owns them); storage errors.
    pub fn begin_reimport(&mut self, revision: i64) -> Result<Import<'_>> {
        self.check_writable()?;
        if revision <= self.current_rev {
            return Err(Error::Import(format!(
                "cannot re-import at revision {revision}: the store is already at revision {}",
                self.current_rev
            )));
        }
        if !self.lessor.is_empty() {
            return Err(Error::Import(format!(
                "cannot re-import into a store that grants leases of its own ({} leases)",
                self.lessor.len()
            )));
        }
        self.persist()?;
        self.mark_importing(revision)?;
        // Dropping the old compactor stops its worker between batches and waits for it.
        self.compactor = Compactor::start(
            self.backend.clone(),
            CompactorSettings {
                batch_limit: self.config.compaction_batch_limit(),
                sleep_interval: self.config.compaction_sleep_interval(),
            },
        )?;
        self.index = Index::new();
        // Until `finish`, the index holds part of the keyspace (none of it, if the rows cannot
        // even be deleted): no read may be answered from it.
        self.index_incomplete = true;
        self.foreign_leases.clear();
        let cleared = self.delete_every_row();
        if let Err(e) = cleared {
            self.poison(&e);
            return Err(e);
        }
        Ok(Import::new(self, revision))
    }

    /// Marks the directory half imported at `revision`, durably, before any row is written.
    fn mark_importing(&mut self, revision: i64) -> Result<()> {
        let mut batch = self.backend.batch();
        batch.put_meta(META_IMPORTING, revision);
        let marked = batch.commit().and_then(|()| self.backend.sync());
        if let Err(e) = &marked {
            self.poison(e);
        }
        marked
    }

    /// Deletes every history row, batch by batch.
    fn delete_every_row(&self) -> Result<()> {
        let limit = self.config.compaction_batch_limit();
        let mut from = Revision::new(0, 0);
        loop {
            let keys = self.backend.row_keys_up_to(from, self.current_rev, limit)?;
            let Some(last) = keys.last().copied() else { return Ok(()) };
            let mut batch = self.backend.batch();
            for key in &keys {
                batch.delete_row(*key);
            }
            batch.commit()?;
            if keys.len() < limit {
                return Ok(());
            }
            from = Revision::new(last.rev.main, last.rev.sub.saturating_add(1));
        }
    }

    /// The revision of an import into `config`'s directory that was cut off before it finished
    /// (the directory [`KvStore::open`] refuses), or `None` for a directory without one.
    ///
    /// # Errors
    /// Storage errors.
    pub fn unfinished_import(config: &StoreConfig) -> Result<Option<i64>> {
        Backend::open(config)?.get_meta(META_IMPORTING)
    }

    /// Replaces the store's state with `kvs` (upstream's live key-values at `revision`, in key
    /// order): [`Self::begin_reimport`], every [`Import::push`], then [`Import::finish`].
    ///
    /// # Errors
    /// As those three.
    pub fn import_snapshot_over(
        &mut self,
        revision: i64,
        kvs: impl IntoIterator<Item = KeyValue>,
    ) -> Result<ImportedSnapshot> {
        self.begin_reimport(revision)?.push_all_and_finish(kvs)
    }

    /// Imports `kvs` (upstream's live key-values at `revision`, in key order) into this empty
    /// store: [`Self::begin_import`], every [`Import::push`], then [`Import::finish`].
    ///
    /// # Errors
    /// As those three.
    pub fn import_snapshot(
        &mut self,
        revision: i64,
        kvs: impl IntoIterator<Item = KeyValue>,
    ) -> Result<ImportedSnapshot> {
        self.begin_import(revision)?.push_all_and_finish(kvs)
    }
}

impl<'a> Import<'a> {
    fn new(store: &'a mut KvStore, revision: i64) -> Self {
        Self {
            store,
            revision,
            batch: None,
            batch_bytes: 0,
            next_sub: HashMap::new(),
            last_key: None,
            keys: 0,
            leased_keys: 0,
            upstream_origin: None,
            finished: false,
        }
    }

    /// [`Self::push`] of every key-value in `kvs`, then [`Self::finish`].
    ///
    /// # Errors
    /// As those two.
    pub fn push_all_and_finish(mut self, kvs: impl IntoIterator<Item = KeyValue>) -> Result<ImportedSnapshot> {
        for kv in kvs {
            self.push(kv)?;
        }
        self.finish()
    }

    /// Records, at [`Self::finish`], that the store holds the keys under `origin.prefix`
    /// (empty: the whole keyspace) as the etcd cluster `origin.cluster_id` had them
    /// ([`KvStore::upstream_origin`]), so that a mirror of that prefix may follow that cluster
    /// from the imported revision. A re-import keeps the record the store had unless this is
    /// called.
    #[must_use]
    pub fn from_upstream(mut self, origin: UpstreamOrigin) -> Self {
        self.upstream_origin = Some(origin);
        self
    }

    /// The revision being imported at.
    #[must_use]
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Keys pushed so far.
    #[must_use]
    pub fn keys(&self) -> usize {
        self.keys
    }

    /// Adds one upstream key-value. Keys must come in strictly ascending order (as a range read
    /// returns them). The row is written at the key's own mod revision; keys that share a mod
    /// revision (one upstream txn) take sub revisions 0, 1, … in key order, since upstream's
    /// own order inside the txn is not in a range response.
    ///
    /// # Errors
    /// `Error::Import` for a key-value upstream cannot have sent at this revision (empty or
    /// out-of-order key, revisions out of range, version below 1); storage errors.
    pub fn push(&mut self, kv: KeyValue) -> Result<()> {
        self.check(&kv)?;
        let sub = self.next_sub.entry(kv.mod_revision).or_insert(0);
        let rev = Revision::new(kv.mod_revision, *sub);
        *sub += 1;
        let row = codec::encode_row(&kv, None);
        self.batch_bytes += row.len() + kv.key.len();
        let batch = self.batch.get_or_insert_with(|| self.store.backend.batch());
        batch.put_row(rev.to_key(false), row);
        self.store.index.restore_put(&kv.key, rev, kv.create_revision, kv.version);
        self.keys += 1;
        if kv.lease != 0 {
            self.leased_keys += 1;
            self.store.foreign_leases.insert(kv.lease);
        }
        self.last_key = Some(kv.key);
        if self.batch_bytes >= IMPORT_BATCH_BYTES {
            self.commit_batch()?;
        }
        Ok(())
    }

    /// Commits the last rows, records `revision` as the store's compact revision (the
    /// compaction markers) and clears the half-imported mark in one batch, and syncs: the store
    /// is then at `revision`, reads below it fail as compacted, and the next write takes
    /// `revision + 1`, now and after a reopen.
    ///
    /// # Errors
    /// Storage errors (the store is then poisoned).
    pub fn finish(mut self) -> Result<ImportedSnapshot> {
        self.commit_batch()?;
        let mut batch = self.store.backend.batch();
        batch.put_meta(META_SCHEDULED_COMPACT, self.revision);
        batch.put_meta(META_FINISHED_COMPACT, self.revision);
        batch.delete_meta(META_IMPORTING);
        if let Some(origin) = &self.upstream_origin {
            origin.write_to(&mut batch);
        }
        let done = batch.commit().and_then(|()| self.store.backend.sync());
        if let Err(e) = done {
            self.store.poison(&e);
            return Err(e);
        }
        self.store.current_rev = self.revision;
        self.store.index_incomplete = false;
        self.store.durable_rev = self.revision;
        self.store.compact_rev = self.revision;
        if let Some(origin) = self.upstream_origin.take() {
            self.store.upstream_origin = Some(origin);
        }
        self.finished = true;
        Ok(ImportedSnapshot { revision: self.revision, keys: self.keys, leased_keys: self.leased_keys })
    }

    fn check(&self, kv: &KeyValue) -> Result<()> {
        let bad = |why: String| Err(Error::Import(format!("key {:?}: {why}", String::from_utf8_lossy(&kv.key))));
        if kv.key.is_empty() {
            return bad("empty key".into());
        }
        if self.last_key.as_ref().is_some_and(|last| *last >= kv.key) {
            return bad("keys must come in strictly ascending order".into());
        }
        if kv.mod_revision < 1 || kv.mod_revision > self.revision {
            return bad(format!("mod revision {} outside 1..={}", kv.mod_revision, self.revision));
        }
        if kv.create_revision < 1 || kv.create_revision > kv.mod_revision {
            return bad(format!("create revision {} outside 1..={}", kv.create_revision, kv.mod_revision));
        }
        // Each put of a generation has a revision of its own from its create revision on, so
        // a version can be at most their distance plus one (and later puts cannot overflow it).
        let most = kv.mod_revision - kv.create_revision + 1;
        if kv.version < 1 || kv.version > most {
            return bad(format!("version {} outside 1..={most}", kv.version));
        }
        Ok(())
    }

    fn commit_batch(&mut self) -> Result<()> {
        let Some(batch) = self.batch.take() else { return Ok(()) };
        self.batch_bytes = 0;
        if let Err(e) = batch.commit() {
            self.store.poison(&e);
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Instant;

    use super::*;
    use crate::config::StoreConfig;
    use crate::request::{DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
    use crate::KeyRange;

    /// A key-value as upstream sends it (also used by the upstream tests).
    pub(in crate::kv_store) fn kv(
        key: &str,
        value: &str,
        create: i64,
        modified: i64,
        version: i64,
        lease: i64,
    ) -> KeyValue {
        KeyValue {
            key: key.into(),
            create_revision: create,
            mod_revision: modified,
            version,
            value: value.into(),
            lease,
        }
    }

    /// Upstream's state at revision 20: overwritten keys, two keys of one txn (mod 12), a leased
    /// key, a key last written at 20 itself.
    fn upstream() -> Vec<KeyValue> {
        vec![
            kv("a", "a3", 2, 9, 3, 0),
            kv("b", "b1", 4, 4, 1, 0),
            kv("lease/x", "x", 15, 15, 1, 0x694d_7a1b_2c3d_4e5f),
            kv("t/1", "one", 12, 12, 1, 0),
            kv("t/2", "two", 7, 12, 2, 0),
            kv("z", "last", 20, 20, 1, 0),
        ]
    }

    fn all_at(store: &KvStore, rev: i64) -> Result<Vec<KeyValue>> {
        let mut req = RangeRequest::new(KeyRange::FromKey(vec![0]));
        req.revision = rev;
        store.range(&req).map(|r| r.kvs)
    }

    #[test]
    fn import_gives_upstreams_key_values_at_r_compacted_below_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig::new(dir.path());
        let mut store = KvStore::open(config.clone()).expect("open");
        let imported = store.import_snapshot(20, upstream()).expect("import");
        assert_eq!(imported, ImportedSnapshot { revision: 20, keys: 6, leased_keys: 1 });
        assert_eq!((store.current_rev(), store.compact_rev()), (20, 20));
        assert_eq!(all_at(&store, 20).expect("range at R"), upstream());
        assert_eq!(all_at(&store, 0).expect("range now"), upstream());
        assert!(matches!(all_at(&store, 19), Err(Error::Compacted { requested: 19, compact_rev: 20 })));
        assert!(matches!(all_at(&store, 21), Err(Error::FutureRev { .. })));
        // The two keys of one upstream txn share its revision, with subs in key order.
        let reader = store.reader().snapshot();
        let t1 = reader.get_row(Revision::new(12, 0).to_key(false)).expect("read").expect("row 12.0");
        let t2 = reader.get_row(Revision::new(12, 1).to_key(false)).expect("read").expect("row 12.1");
        assert_eq!((t1.kv.key.as_slice(), t2.kv.key.as_slice()), (&b"t/1"[..], &b"t/2"[..]));
        assert_eq!(t1.prev, None, "history before R is unknown");
        drop(reader);

        // No local lease is made; the key keeps upstream's lease id, which no local lease may
        // take, before a reopen or after (a reopen attaches every key to its lease).
        assert_eq!(store.stats().leases, 0);
        let upstream_lease = 0x694d_7a1b_2c3d_4e5f;
        assert!(matches!(store.lease_grant(upstream_lease, 60, Instant::now()), Err(Error::LeaseExists)));
        // The next local write takes R + 1 and continues the key's life.
        let put = store.put(PutRequest::new("a", "a4")).expect("put");
        assert_eq!(put.response.revision, 21);
        let a = &put.events[0].kv;
        assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 21, 4));
        assert_eq!(put.events[0].prev_kv.as_ref().map(|p| p.value.as_slice()), Some(&b"a3"[..]));
        drop(store);

        let mut reopened = KvStore::open(config).expect("reopen");
        assert!(matches!(reopened.lease_grant(upstream_lease, 60, Instant::now()), Err(Error::LeaseExists)));
        assert_eq!((reopened.current_rev(), reopened.compact_rev()), (21, 20));
        assert_eq!(all_at(&reopened, 20).expect("range at R after reopen"), upstream());
        assert!(matches!(all_at(&reopened, 19), Err(Error::Compacted { .. })));
    }

    #[test]
    fn an_empty_upstream_imports_as_a_store_at_r() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = KvStore::open(StoreConfig::new(dir.path())).expect("open");
        store.import_snapshot(7, Vec::new()).expect("import");
        assert_eq!((store.current_rev(), store.compact_rev()), (7, 7));
        assert_eq!(store.put(PutRequest::new("k", "v")).expect("put").response.revision, 8);
    }

    #[test]
    fn import_refuses_a_store_that_is_not_empty_and_key_values_upstream_cannot_send() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut written = KvStore::open(StoreConfig::new(dir.path().join("written"))).expect("open");
        written.put(PutRequest::new("k", "v")).expect("put");
        let err = written.import_snapshot(20, upstream()).expect_err("a written store");
        assert!(matches!(err, Error::Import(_)) && err.to_string().contains("not empty"), "{err}");
        assert_eq!(all_at(&written, 0).expect("range").len(), 1, "a refused import writes nothing");

        let mut imported = KvStore::open(StoreConfig::new(dir.path().join("imported"))).expect("open");
        imported.import_snapshot(20, upstream()).expect("import");
        let err = imported.import_snapshot(30, Vec::new()).expect_err("a second import");
        assert!(err.to_string().contains("not empty"), "{err}");

        let cases = [
            (vec![kv("b", "", 1, 1, 1, 0), kv("a", "", 1, 1, 1, 0)], "ascending"),
            (vec![kv("a", "", 1, 1, 1, 0), kv("a", "", 1, 1, 1, 0)], "ascending"),
            (vec![kv("a", "", 1, 21, 1, 0)], "mod revision 21"),
            (vec![kv("a", "", 5, 4, 1, 0)], "create revision 5"),
            (vec![kv("a", "", 1, 1, 0, 0)], "version 0"),
            (vec![kv("a", "", 3, 5, 4, 0)], "version 4 outside 1..=3"),
            (vec![kv("a", "", 1, 1, i64::MAX, 0)], "outside 1..=1"),
            (vec![kv("", "", 1, 1, 1, 0)], "empty key"),
        ];
        for (i, (kvs, why)) in cases.into_iter().enumerate() {
            let mut store = KvStore::open(StoreConfig::new(dir.path().join(format!("bad{i}")))).expect("open");
            let err = store.import_snapshot(20, kvs).expect_err(why);
            assert!(matches!(err, Error::Import(_)) && err.to_string().contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn a_reimport_replaces_every_key_and_all_history_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig::new(dir.path());
        let mut store = KvStore::open(config.clone()).expect("open");
        store.import_snapshot(5, vec![kv("a", "a1", 2, 2, 1, 0), kv("gone", "g", 4, 4, 1, 0)]).expect("import");
        for i in 0..30 {
            store.put(PutRequest::new(format!("local/{i}"), "v")).expect("put");
        }
        store.put(PutRequest::new("a", "a2")).expect("put");
        assert_eq!(store.current_rev(), 36);

        let err = store.begin_reimport(36).map(|_| ()).expect_err("not above the current revision");
        assert!(matches!(err, Error::Import(_)) && err.to_string().contains("already at revision 36"), "{err}");
        let imported = store.import_snapshot_over(20_000, upstream_later()).expect("reimport");
        assert_eq!(imported, ImportedSnapshot { revision: 20_000, keys: 3, leased_keys: 0 });
        assert_eq!((store.current_rev(), store.compact_rev()), (20_000, 20_000));
        assert_eq!(all_at(&store, 0).expect("range"), upstream_later());
        assert!(matches!(all_at(&store, 36), Err(Error::Compacted { .. })));
        let reader = store.reader().snapshot();
        assert!(reader.get_row(Revision::new(36, 0).to_key(false)).expect("read").is_none(), "old history is gone");
        drop(reader);
        assert_eq!(store.put(PutRequest::new("a", "next")).expect("put").response.revision, 20_001);
        drop(store);

        let reopened = KvStore::open(config).expect("reopen");
        assert_eq!((reopened.current_rev(), reopened.compact_rev()), (20_001, 20_000));
        let mut expected = upstream_later();
        expected[0] = kv("a", "next", 2, 20_001, 4, 0);
        assert_eq!(all_at(&reopened, 0).expect("range after reopen"), expected);
        assert_eq!(all_at(&reopened, 20_000).expect("range at R"), upstream_later());
    }

    /// Imports [`upstream`] at 20 into `store`, recording `origin`.
    fn import_from(store: &mut KvStore, origin: &UpstreamOrigin) {
        let import = store.begin_import(20).expect("begin").from_upstream(origin.clone());
        import.push_all_and_finish(upstream()).expect("import");
    }

    #[test]
    fn the_upstream_origin_record_lasts_until_the_first_write_of_the_stores_own() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig::new(dir.path().join("main"));
        // A cluster id with its top bit set, as etcd's often are, kept whole through the i64.
        let origin = UpstreamOrigin { prefix: b"t/".to_vec(), cluster_id: 0xcdef_0123_4567_89ab };
        let mut store = KvStore::open(config.clone()).expect("open");
        assert_eq!(store.upstream_origin(), None, "a new store holds nothing of upstream's");
        import_from(&mut store, &origin);
        assert_eq!(store.upstream_origin(), Some(&origin));
        drop(store);
        assert_eq!(KvStore::upstream_origin_in(&config).expect("read"), Some(origin.clone()), "durable");

        // A re-import (a mirror's re-bootstrap) keeps it; a write that changes nothing too.
        let mut store = KvStore::open(config.clone()).expect("reopen");
        assert_eq!(store.upstream_origin(), Some(&origin));
        store.import_snapshot_over(20_000, upstream_later()).expect("reimport");
        let nothing = store.delete_range(DeleteRangeRequest::new(KeyRange::Single(b"missing".to_vec())));
        assert_eq!(nothing.expect("delete").response.deleted, 0);
        assert_eq!(store.upstream_origin(), Some(&origin));
        drop(store);
        assert_eq!(KvStore::upstream_origin_in(&config).expect("read"), Some(origin.clone()));

        // A lease of its own removes it too.
        let leased = StoreConfig::new(dir.path().join("leased"));
        let mut store = KvStore::open(leased.clone()).expect("open");
        import_from(&mut store, &origin);
        store.lease_grant(0, 60, Instant::now()).expect("grant");
        assert_eq!(store.upstream_origin(), None);
        drop(store);
        assert_eq!(KvStore::upstream_origin_in(&leased).expect("read"), None);

        // The first write that changes anything removes it, with its own rows.
        let mut store = KvStore::open(config.clone()).expect("reopen");
        store.put(PutRequest::new("local", "v")).expect("put");
        assert_eq!(store.upstream_origin(), None);
        drop(store);
        assert_eq!(KvStore::upstream_origin_in(&config).expect("read"), None);
        assert_eq!(KvStore::open(config).expect("reopen").upstream_origin(), None);

        // An import without `from_upstream` records nothing.
        let plain = tempfile::tempdir().expect("temp dir");
        KvStore::open(StoreConfig::new(plain.path())).expect("open").import_snapshot(20, upstream()).expect("import");
        assert_eq!(KvStore::upstream_origin_in(&StoreConfig::new(plain.path())).expect("read"), None);
    }

    /// A snapshot of a store imported from the whole of upstream's keyspace (its prefix record
    /// empty) restores, and the restored store keeps the record.
    #[test]
    fn a_snapshot_of_a_whole_keyspace_import_restores_with_its_origin() {
        let dir = tempfile::tempdir().expect("temp dir");
        let origin = UpstreamOrigin { prefix: Vec::new(), cluster_id: 7 };
        let mut store = KvStore::open(StoreConfig::new(dir.path().join("a"))).expect("open");
        import_from(&mut store, &origin);
        let file = dir.path().join("snapshot.db");
        store.snapshot().expect("snapshot").save(&file).expect("save");
        let restored = StoreConfig::new(dir.path().join("b"));
        KvStore::restore_snapshot(&file, restored.clone()).expect("restore");
        assert_eq!(KvStore::upstream_origin_in(&restored).expect("read"), Some(origin));
        assert_eq!(all_at(&KvStore::open(restored).expect("open"), 0).expect("range"), upstream());
    }

    #[test]
    fn a_reimport_cut_off_leaves_a_directory_that_open_refuses_and_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig::new(dir.path());
        let mut store = KvStore::open(config.clone()).expect("open");
        store.import_snapshot(20, upstream()).expect("import");
        let mut import = store.begin_reimport(40).expect("begin");
        import.push(kv("a", "1", 3, 33, 1, 0)).expect("push");
        drop(import);
        assert!(matches!(store.put(PutRequest::new("k", "v")), Err(Error::Poisoned)));
        // The key index holds one key of the new keyspace: no read answers with that part.
        let everything = RangeRequest::new(KeyRange::all());
        let refused = store.range(&everything).expect_err("a read of a half-built index");
        assert!(refused.to_string().contains("import stopped halfway"), "{refused}");
        assert!(store.start_range(&everything).is_err());
        let read_txn = TxnRequest { success: vec![RequestOp::Range(everything)], ..TxnRequest::default() };
        assert!(store.read_txn(&read_txn).is_err());
        drop(store);
        assert_eq!(KvStore::unfinished_import(&config).expect("read the mark"), Some(40));
        let err = KvStore::open(config.clone()).expect_err("half imported");
        assert!(err.to_string().contains("did not finish"), "{err}");

        let clean = StoreConfig::new(dir.path().join("clean"));
        KvStore::open(clean.clone()).expect("open").import_snapshot(20, upstream()).expect("import");
        assert_eq!(KvStore::unfinished_import(&clean).expect("read the mark"), None);
    }

    /// Upstream's state at revision 20,000, long after [`upstream`]'s: one key kept from
    /// before the mirror's last revision, one rewritten, one new.
    fn upstream_later() -> Vec<KeyValue> {
        vec![kv("a", "a3", 2, 19_990, 3, 0), kv("b", "b1", 4, 4, 1, 0), kv("new", "n", 20_000, 20_000, 1, 0)]
    }

    #[test]
    fn a_directory_whose_import_never_finished_is_refused_on_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig::new(dir.path());
        let mut store = KvStore::open(config.clone()).expect("open");
        let mut import = store.begin_import(20).expect("begin");
        import.push(kv("a", "1", 3, 3, 1, 0)).expect("push");
        drop(import);
        drop(store);
        let err = KvStore::open(config).expect_err("half imported");
        assert!(matches!(err, Error::Import(_)) && err.to_string().contains("did not finish"), "{err}");
    }
}
