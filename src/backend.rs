//! Owns the storage engine: the only module that names fjall. Three keyspaces: `kv` (one row
//! per change, keyed by revision), `meta` (compaction markers) and `lease` (granted leases).
//!
//! Writes go through [`Batch`]; a batch commits atomically. Reads of the `kv` keyspace from
//! another thread go through [`RevisionReader`], whose snapshots never block the writer; a
//! [`BackendSnapshot`] is the same kind of view over every keyspace, for a store snapshot.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Readable};

use crate::codec::{self, LeaseRecord, Row, RowHeader};
use crate::config::{Durability, StoreConfig};
use crate::disk_stats::DiskStats;
use crate::error::{Error, Result};
use crate::revision::{main_rev_start, BackendKey, Revision};
use crate::snapshot::SnapshotKeyspace;

/// Meta key of the last compaction that was scheduled (etcd `scheduledCompactRev`).
pub const META_SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
/// Meta key of the last compaction that finished (etcd `finishedCompactRev`).
pub const META_FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
/// Meta key present while an import ([`crate::KvStore::begin_import`]) is writing rows: the
/// revision it imports at. A store that still has it on open is half imported.
pub const META_IMPORTING: &[u8] = b"importingRev";
/// Meta record of a store whose whole state came from another etcd and has taken no write of
/// its own since (an import or a mirror's bootstrap): the upstream prefix it holds, empty for
/// the whole keyspace. A mirror follows upstream only from a directory that has it, for the
/// same prefix; the first local write or local lease removes it.
pub const META_UPSTREAM_PREFIX: &[u8] = b"upstreamPrefix";
/// Meta marker beside [`META_UPSTREAM_PREFIX`]: the cluster id of the etcd the store's state
/// came from (its bits as an `i64`), which a mirror's upstream must answer with.
pub const META_UPSTREAM_CLUSTER: &[u8] = b"upstreamClusterId";
/// Meta key present while a snapshot restore writes its records: a store that still has it on
/// open was cut off partway through its restore.
pub const META_RESTORING: &[u8] = b"restoringSnapshot";

/// Handles to the database and its keyspaces. Cloning is shallow.
#[derive(Clone)]
pub struct Backend {
    db: Database,
    kv: Keyspace,
    meta: Keyspace,
    lease: Keyspace,
    durability: Durability,
    disk_stats: Arc<DiskStats>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("durability", &self.durability).finish_non_exhaustive()
    }
}

/// Creates the data directory (and any missing parent) readable by its owner only, as etcd's
/// `fileutil.TouchDirAll` does (0700): it holds every key and value and the auth store's
/// password hashes. An existing directory open to other users is used as it is, with a
/// warning, as etcd warns (`fileutil.CheckDirPermission`).
fn create_private_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if path.is_dir() {
            let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    dir = %path.display(),
                    mode = format!("{mode:o}"),
                    "the data directory is open to other users; 700 is recommended (chmod 700)"
                );
            }
            return Ok(());
        }
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(path)
    }
}

/// Whether `path` is an etcd data directory (etcd's `--data-dir`, holding `member/snap` or
/// `member/wal`) or the `member` directory inside one (`snap` and `wal`): a user who points
/// watchkv at etcd's files must hear so, not get an empty store created beside them. fjall's
/// own directory holds `lock`, `version`, journals and `keyspaces/`, never these.
fn is_etcd_data_dir(path: &Path) -> bool {
    let member = path.join("member");
    member.join("snap").is_dir()
        || member.join("wal").is_dir()
        || (path.join("snap").is_dir() && path.join("wal").is_dir())
}

fn corrupt(what: impl std::fmt::Display, reason: impl Into<String>) -> Error {
    Error::Corrupt { revision: what.to_string(), reason: reason.into() }
}

impl Backend {
    /// Opens (or creates) the database in `config.path`.
    ///
    /// # Errors
    /// Fails if the directory cannot be created or the database cannot be recovered.
    pub fn open(config: &StoreConfig) -> Result<Self> {
        if is_etcd_data_dir(config.path()) {
            // fjall's `version` marker: a watchkv store made here before this check existed
            // holds writes of its own, so it opens, with a warning, rather than strand them.
            if !config.path().join("version").is_file() {
                return Err(Error::EtcdDataDir(config.path().to_path_buf()));
            }
            tracing::warn!(
                dir = %config.path().display(),
                "the data directory also holds an etcd data directory (member/); watchkv's store there is \
                 opened, etcd's files are not read"
            );
        }
        create_private_dir(config.path())?;
        let db = Database::builder(config.path())
            .cache_size(config.cache_size())
            // We decide when the journal is synced: after each group of writes.
            .manual_journal_persist(true)
            .open()?;
        let kv = db.keyspace("kv", KeyspaceCreateOptions::default)?;
        let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
        let lease = db.keyspace("lease", KeyspaceCreateOptions::default)?;
        Ok(Self { db, kv, meta, lease, durability: config.durability(), disk_stats: Arc::clone(config.disk_stats()) })
    }

    /// Returns the directory the database lives in.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.kv.path()
    }

    /// Starts a write batch.
    #[must_use]
    pub fn batch(&self) -> Batch {
        Batch { inner: self.db.batch().durability(None), backend: self.clone() }
    }

    /// Makes every committed batch durable according to the configured durability: `fsync`
    /// syncs the journal, `buffered` hands it to the OS.
    ///
    /// # Errors
    /// Fails if the disk refuses; the database is then poisoned.
    pub fn persist(&self) -> Result<()> {
        match self.durability {
            Durability::Fsync => self.sync_journal(PersistMode::SyncData),
            Durability::Buffered => Ok(self.db.persist(PersistMode::Buffer)?),
        }
    }

    /// Syncs the journal and counts how long it took ([`DiskStats::journal_sync`]).
    fn sync_journal(&self, mode: PersistMode) -> Result<()> {
        let started = Instant::now();
        self.db.persist(mode)?;
        self.disk_stats.journal_sync.observe(started.elapsed());
        Ok(())
    }

    /// The disk timings this backend records.
    #[must_use]
    pub fn disk_stats(&self) -> &DiskStats {
        &self.disk_stats
    }

    /// Syncs every committed batch to disk whatever the durability mode (used on shutdown and
    /// for compaction markers).
    ///
    /// # Errors
    /// Fails if the disk refuses.
    pub fn sync(&self) -> Result<()> {
        self.sync_journal(PersistMode::SyncAll)
    }

    /// Reads the row stored under `key`.
    ///
    /// # Errors
    /// Fails on I/O errors or if the row does not decode.
    pub fn get_row(&self, key: BackendKey) -> Result<Option<Row>> {
        match self.kv.get(key.encode())? {
            Some(bytes) => codec::decode_row(&bytes).map(Some).map_err(|e| corrupt(key.rev, e)),
            None => Ok(None),
        }
    }

    /// Returns the row key with the highest revision, if any.
    ///
    /// # Errors
    /// Fails on I/O errors or a malformed key.
    pub fn last_row_key(&self) -> Result<Option<BackendKey>> {
        match self.kv.last_key_value() {
            Some(guard) => {
                let key = guard.key()?;
                BackendKey::decode(&key).map(Some).ok_or_else(|| corrupt(format!("{key:?}"), "malformed revision key"))
            }
            None => Ok(None),
        }
    }

    /// Visits the header (row without value) of every row with revision `>= from`, in revision
    /// order, until `visit` returns `false`. Used to rebuild the index on open.
    ///
    /// # Errors
    /// Fails on I/O errors or the first row that does not decode (naming its revision).
    pub fn scan_headers(
        &self,
        from: Revision,
        mut visit: impl FnMut(BackendKey, RowHeader) -> Result<bool>,
    ) -> Result<()> {
        for guard in self.kv.range(from.to_bytes().to_vec()..) {
            let (key, value) = guard.into_inner()?;
            let bkey = BackendKey::decode(&key).ok_or_else(|| corrupt(format!("{key:?}"), "malformed revision key"))?;
            let header = codec::decode_row_header(&value).map_err(|e| corrupt(bkey.rev, e))?;
            if !visit(bkey, header)? {
                break;
            }
        }
        Ok(())
    }

    /// Returns the row keys with `main <= max_main` starting at `from`, at most `limit` of them
    /// (for batched physical compaction).
    ///
    /// # Errors
    /// Fails on I/O errors or a malformed key.
    pub fn row_keys_up_to(&self, from: Revision, max_main: i64, limit: usize) -> Result<Vec<BackendKey>> {
        let lo = from.to_bytes().to_vec();
        let hi = main_rev_start(max_main.saturating_add(1)).to_vec();
        let mut out = Vec::new();
        for guard in self.kv.range(lo..hi).take(limit) {
            let key = guard.key()?;
            out.push(BackendKey::decode(&key).ok_or_else(|| corrupt(format!("{key:?}"), "malformed revision key"))?);
        }
        Ok(out)
    }

    /// Reads a meta marker.
    ///
    /// # Errors
    /// Fails on I/O errors or if the value does not decode.
    pub fn get_meta(&self, key: &[u8]) -> Result<Option<i64>> {
        match self.meta.get(key)? {
            Some(bytes) => codec::decode_i64(&bytes).map(Some).map_err(|e| corrupt(String::from_utf8_lossy(key), e)),
            None => Ok(None),
        }
    }

    /// Reads a meta record of raw bytes.
    ///
    /// # Errors
    /// Fails on I/O errors.
    pub fn get_meta_bytes(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(key)?.map(|bytes| bytes.to_vec()))
    }

    /// Reads every meta marker whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// Fails on I/O errors or a value that does not decode.
    pub fn meta_with_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, i64)>> {
        let mut out = Vec::new();
        for guard in self.meta.prefix(prefix) {
            let (key, value) = guard.into_inner()?;
            let v = codec::decode_i64(&value).map_err(|e| corrupt(String::from_utf8_lossy(&key), e))?;
            out.push((key.to_vec(), v));
        }
        Ok(out)
    }

    /// Reads every meta record of raw bytes whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// Fails on I/O errors.
    pub fn meta_bytes_with_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for guard in self.meta.prefix(prefix) {
            let (key, value) = guard.into_inner()?;
            out.push((key.to_vec(), value.to_vec()));
        }
        Ok(out)
    }

    /// Reads every persisted lease.
    ///
    /// # Errors
    /// Fails on I/O errors or a record that does not decode.
    pub fn leases(&self) -> Result<Vec<LeaseRecord>> {
        let mut out = Vec::new();
        for guard in self.lease.iter() {
            let (key, value) = guard.into_inner()?;
            out.push(codec::decode_lease(&value).map_err(|e| corrupt(format!("lease {key:?}"), e))?);
        }
        Ok(out)
    }

    /// Returns a reader of the `kv` keyspace that other threads can use.
    #[must_use]
    pub fn reader(&self) -> RevisionReader {
        RevisionReader { db: self.db.clone(), kv: self.kv.clone() }
    }

    /// Returns a consistent point-in-time view of every keyspace. Taking it is a counter read;
    /// it never blocks the writer, and keeps what it sees alive until it is dropped.
    #[must_use]
    pub fn snapshot(&self) -> BackendSnapshot {
        BackendSnapshot { snapshot: self.db.snapshot(), backend: self.clone() }
    }

    fn keyspace(&self, keyspace: SnapshotKeyspace) -> &Keyspace {
        match keyspace {
            SnapshotKeyspace::Kv => &self.kv,
            SnapshotKeyspace::Meta => &self.meta,
            SnapshotKeyspace::Lease => &self.lease,
        }
    }

    /// Returns the bytes the database occupies on disk.
    ///
    /// # Errors
    /// Fails if the directory cannot be read.
    pub fn disk_space(&self) -> Result<u64> {
        Ok(self.db.disk_space()?)
    }

    /// Returns the store's size as `Status` reports it and the space quota counts it: the
    /// keyspaces' tables (and blob files) on disk plus what their memtables hold, which is what
    /// the journal holds until a flush. The journal itself is left out: it repeats the
    /// memtables, fjall preallocates it sparsely (64 MiB that an empty store does not use) and
    /// drops it only once it has passed 64 MB. Cheap: fjall keeps these counts.
    #[must_use]
    pub fn data_bytes(&self) -> u64 {
        let tables: u64 = [&self.kv, &self.meta, &self.lease].iter().map(|k| k.disk_space()).sum();
        tables.saturating_add(self.db.write_buffer_size())
    }

    /// Defragments the store (`Maintenance.Defragment`): flushes each keyspace's memtable and
    /// merges its tables into one run (fjall's major compaction), which drops the versions and
    /// deletions that compaction left and lets fjall delete journals it no longer needs. Blocks
    /// the caller only: writes, reads and watchers go on meanwhile (fjall compacts beside
    /// them). fjall marks these two calls as hidden API; they are the only way to ask it to
    /// reclaim space now rather than when its own compaction strategy decides to.
    ///
    /// # Errors
    /// A storage error.
    pub fn defragment(&self) -> Result<()> {
        for keyspace in [&self.kv, &self.meta, &self.lease] {
            // fjall's `rotate_memtable_and_wait` waits for the flush with no way out: a flush
            // that fails (a full disk) poisons the database and is never retried, and the
            // caller, still holding the database, would wait forever (and keep the store from
            // reopening once space is freed). This wait ends with the poisoning.
            if keyspace.rotate_memtable()? {
                while keyspace.sealed_memtable_count() > 0 {
                    // A no-op flush of the journal's buffer, which fails once fjall is poisoned.
                    self.db.persist(PersistMode::Buffer)?;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            keyspace.major_compact()?;
        }
        Ok(())
    }

    /// Returns a point-in-time view of every keyspace, for [`WholeSnapshot::hash`].
    #[must_use]
    pub fn whole_snapshot(&self) -> WholeSnapshot {
        WholeSnapshot {
            snapshot: self.db.snapshot(),
            keyspaces: [self.kv.clone(), self.meta.clone(), self.lease.clone()],
        }
    }
}

/// A point-in-time view of every keyspace, readable from any thread.
pub struct WholeSnapshot {
    snapshot: fjall::Snapshot,
    keyspaces: [Keyspace; 3],
}

impl std::fmt::Debug for WholeSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WholeSnapshot").finish_non_exhaustive()
    }
}

impl WholeSnapshot {
    /// Returns a CRC-32C over every record the store holds: for each keyspace its name, then
    /// each key and value in key order (`Maintenance.Hash`; etcd hashes its bbolt file).
    ///
    /// # Errors
    /// Fails on I/O errors.
    pub fn hash(&self) -> Result<u32> {
        let mut digest = crate::hash::CASTAGNOLI.digest();
        for keyspace in &self.keyspaces {
            digest.update(keyspace.name().as_bytes());
            for guard in self.snapshot.iter(keyspace) {
                let (key, value) = guard.into_inner()?;
                digest.update(&key);
                digest.update(&value);
            }
        }
        Ok(digest.finalize())
    }
}

/// An atomic group of changes to the backend's keyspaces.
pub struct Batch {
    inner: fjall::OwnedWriteBatch,
    backend: Backend,
}

impl Batch {
    /// Writes a revision row.
    pub fn put_row(&mut self, key: BackendKey, row_value: Vec<u8>) {
        self.inner.insert(&self.backend.kv, key.encode(), row_value);
    }

    /// Deletes a revision row.
    pub fn delete_row(&mut self, key: BackendKey) {
        self.inner.remove(&self.backend.kv, key.encode());
    }

    /// Writes a meta marker.
    pub fn put_meta(&mut self, key: &[u8], value: i64) {
        self.inner.insert(&self.backend.meta, key.to_vec(), codec::encode_i64(value));
    }

    /// Writes a meta record of raw bytes.
    pub fn put_meta_bytes(&mut self, key: &[u8], value: Vec<u8>) {
        self.inner.insert(&self.backend.meta, key.to_vec(), value);
    }

    /// Deletes a meta marker.
    pub fn delete_meta(&mut self, key: &[u8]) {
        self.inner.remove(&self.backend.meta, key.to_vec());
    }

    /// Writes a lease.
    pub fn put_lease(&mut self, lease: &LeaseRecord) {
        self.inner.insert(&self.backend.lease, lease.id.to_be_bytes().to_vec(), codec::encode_lease(lease));
    }

    /// Deletes a lease.
    pub fn delete_lease(&mut self, id: i64) {
        self.inner.remove(&self.backend.lease, id.to_be_bytes().to_vec());
    }

    /// Writes a record of a snapshot into its keyspace, as it was stored.
    pub fn put_record(&mut self, keyspace: SnapshotKeyspace, key: &[u8], value: &[u8]) {
        self.inner.insert(self.backend.keyspace(keyspace), key.to_vec(), value.to_vec());
    }

    /// Returns whether the batch holds no change.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Applies the batch atomically. It is visible to readers at once and durable after the
    /// next [`Backend::persist`].
    ///
    /// # Errors
    /// Fails on I/O errors; the database is then poisoned.
    pub fn commit(self) -> Result<()> {
        self.inner.commit()?;
        Ok(())
    }
}

/// A consistent point-in-time view of every keyspace (fjall's cross-keyspace snapshot), for
/// store snapshots; usable from any thread.
pub struct BackendSnapshot {
    snapshot: fjall::Snapshot,
    backend: Backend,
}

impl std::fmt::Debug for BackendSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendSnapshot").finish_non_exhaustive()
    }
}

impl BackendSnapshot {
    /// Visits every (key, value) of `keyspace` in key order, as stored, until `visit` fails.
    ///
    /// # Errors
    /// Fails on I/O errors or with the first error of `visit`.
    pub fn visit(&self, keyspace: SnapshotKeyspace, mut visit: impl FnMut(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        for guard in self.snapshot.iter(self.backend.keyspace(keyspace)) {
            let (key, value) = guard.into_inner()?;
            visit(&key, &value)?;
        }
        Ok(())
    }
}

/// Reads history rows, from any thread, without blocking the writer.
#[derive(Clone)]
pub struct RevisionReader {
    db: Database,
    kv: Keyspace,
}

impl std::fmt::Debug for RevisionReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevisionReader").finish_non_exhaustive()
    }
}

/// A consistent point-in-time view of the history rows.
#[derive(Clone)]
pub struct RevisionSnapshot {
    snapshot: fjall::Snapshot,
    kv: Keyspace,
}

/// A history row as [`RevisionSnapshot::scan`] visits it: its key is read in place and the rest
/// is decoded only on [`decode`](Self::decode). A catch-up scan wants few of the rows it passes
/// (512 single-key watchers against 100k revisions want ~5k), and decoding each one cost two
/// allocations and the value's copy. A row nobody decodes is checked no further than its key;
/// one that is decoded is checked whole, as before.
#[derive(Debug, Clone, Copy)]
pub struct RowRef<'a> {
    rev: Revision,
    key: &'a [u8],
    bytes: &'a [u8],
}

impl<'a> RowRef<'a> {
    /// Returns the row's key.
    #[must_use]
    pub fn key(&self) -> &'a [u8] {
        self.key
    }

    /// Decodes the whole row.
    ///
    /// # Errors
    /// Fails if the row does not decode (naming its revision).
    pub fn decode(&self) -> Result<Row> {
        codec::decode_row(self.bytes).map_err(|e| corrupt(self.rev, e))
    }
}

impl std::fmt::Debug for RevisionSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevisionSnapshot").finish_non_exhaustive()
    }
}

impl RevisionReader {
    /// Opens a snapshot of the rows as they are now.
    #[must_use]
    pub fn snapshot(&self) -> RevisionSnapshot {
        RevisionSnapshot { snapshot: self.db.snapshot(), kv: self.kv.clone() }
    }
}

impl RevisionSnapshot {
    /// Visits every row with `min_rev <= main < max_rev` in revision order until `visit` returns
    /// `false`. `min_rev` below 0 counts as 0.
    ///
    /// # Errors
    /// Fails on I/O errors or the first row that does not decode (naming its revision).
    pub fn scan(
        &self,
        min_rev: i64,
        max_rev: i64,
        mut visit: impl FnMut(BackendKey, RowRef<'_>) -> Result<bool>,
    ) -> Result<()> {
        if max_rev <= min_rev.max(0) {
            return Ok(());
        }
        let lo = main_rev_start(min_rev).to_vec();
        let hi = main_rev_start(max_rev).to_vec();
        for guard in self.snapshot.range(&self.kv, (Bound::Included(lo), Bound::Excluded(hi))) {
            let (key, value) = guard.into_inner()?;
            let bkey = BackendKey::decode(&key).ok_or_else(|| corrupt(format!("{key:?}"), "malformed revision key"))?;
            let row_key = codec::row_key(&value).map_err(|e| corrupt(bkey.rev, e))?;
            if !visit(bkey, RowRef { rev: bkey.rev, key: row_key, bytes: &value })? {
                break;
            }
        }
        Ok(())
    }

    /// Reads one row.
    ///
    /// # Errors
    /// Fails on I/O errors or if the row does not decode.
    pub fn get_row(&self, key: BackendKey) -> Result<Option<Row>> {
        match self.snapshot.get(&self.kv, key.encode())? {
            Some(bytes) => codec::decode_row(&bytes).map(Some).map_err(|e| corrupt(key.rev, e)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn an_etcd_data_directory_or_its_member_directory_is_refused_untouched() {
        let dir = tempfile::tempdir().expect("temp dir");
        let etcd = dir.path().join("etcd");
        for sub in ["member/snap", "member/wal"] {
            std::fs::create_dir_all(etcd.join(sub)).expect("mkdir");
        }
        for refused in [etcd.clone(), etcd.join("member")] {
            let listing = |p: &Path| {
                let mut names: Vec<_> =
                    std::fs::read_dir(p).expect("list").map(|e| e.expect("entry").file_name()).collect();
                names.sort();
                names
            };
            let before = listing(&refused);
            let err = Backend::open(&StoreConfig::new(&refused)).map(|_| ()).expect_err("refused");
            assert!(matches!(&err, Error::EtcdDataDir(p) if *p == refused), "{err}");
            assert!(err.to_string().contains("watchkv import"), "{err}");
            assert_eq!(listing(&refused), before, "nothing written into etcd's directory");
        }
        // A directory with only one of them, or neither, is anyone's.
        std::fs::create_dir_all(dir.path().join("mine/snap")).expect("mkdir");
        drop(Backend::open(&StoreConfig::new(dir.path().join("mine"))).expect("open"));
        // A watchkv store already made beside etcd's files (before the check) still opens.
        std::fs::create_dir_all(dir.path().join("mine/member/wal")).expect("mkdir");
        drop(Backend::open(&StoreConfig::new(dir.path().join("mine"))).expect("an existing store opens"));
    }

    /// The active journal: fjall's `<id>.jnl` with the highest id.
    fn active_journal(dir: &Path) -> PathBuf {
        let journals = std::fs::read_dir(dir).expect("list").map(|e| e.expect("entry").path());
        let id = |p: &PathBuf| p.file_stem().and_then(|s| s.to_str()).and_then(|s| s.parse::<u64>().ok());
        journals
            .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
            .max_by_key(|p| id(p).expect("a journal is named by its id"))
            .expect("a journal")
    }

    /// Commits `key = value` to the meta keyspace and syncs it, as a write with `fsync` does.
    fn write_synced(backend: &Backend, key: &[u8], value: i64) {
        let mut batch = backend.batch();
        batch.put_meta(key, value);
        batch.commit().expect("commit");
        backend.persist().expect("persist");
    }

    #[test]
    fn a_reopened_journal_is_written_in_place_and_its_zero_tail_recovers() {
        // fjall as published reopens the active journal to append, so each sync would also
        // commit the file's new length; vendor/fjall/WATCHKV.md. The file must instead keep its
        // preallocated length while it is written, and the zeros past the last batch must read
        // as the journal's end on every later open.
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig::new(dir.path()).with_durability(Durability::Fsync);
        const PREALLOCATED: u64 = 64 * 1024 * 1024;
        let len = |p: &Path| std::fs::metadata(p).expect("stat").len();

        let backend = Backend::open(&config).expect("open");
        write_synced(&backend, b"first", 1);
        drop(backend);

        for (round, key) in [&b"second"[..], &b"third"[..]].into_iter().enumerate() {
            let backend = Backend::open(&config).expect("reopen");
            let journal = active_journal(dir.path());
            assert_eq!(len(&journal), PREALLOCATED, "round {round}: the reopened journal is preallocated");
            for i in 0..200 {
                write_synced(&backend, key, i);
            }
            assert_eq!(len(&journal), PREALLOCATED, "round {round}: writes went into the file, not after it");
            assert_eq!(backend.get_meta(key).expect("read"), Some(199));
            drop(backend);
        }

        let backend = Backend::open(&config).expect("reopen");
        assert_eq!(backend.get_meta(b"first").expect("read"), Some(1));
        assert_eq!(backend.get_meta(b"second").expect("read"), Some(199));
        assert_eq!(backend.get_meta(b"third").expect("read"), Some(199));
    }

    #[cfg(unix)]
    #[test]
    fn a_new_data_directory_is_its_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let nested = dir.path().join("parent").join("data");
        let backend = Backend::open(&StoreConfig::new(&nested)).expect("open");
        drop(backend);
        for made in [dir.path().join("parent"), nested.clone()] {
            let mode = std::fs::metadata(&made).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", made.display());
        }
        // An existing directory keeps the mode its owner gave it.
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).expect("mkdir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o750)).expect("chmod");
        drop(Backend::open(&StoreConfig::new(&shared)).expect("open"));
        assert_eq!(std::fs::metadata(&shared).expect("stat").permissions().mode() & 0o777, 0o750);
    }
}
