//! Owns snapshots of the store (etcd `Maintenance.Snapshot`, `etcdctl snapshot restore`):
//! taking one, a point-in-time view of every keyspace with the revisions the store is at, that
//! other threads encode while the store goes on writing; and restoring one into a fresh data
//! directory that the normal open path ([`KvStore::open`]) then rebuilds the index from. The
//! file format is [`crate::snapshot`]'s.

use std::io::Write;
use std::path::Path;

use super::KvStore;
use crate::backend::{Backend, BackendSnapshot, META_RESTORING};
use crate::codec;
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::revision::BackendKey;
use crate::snapshot::{
    self, record_len, SnapshotHeader, SnapshotKeyspace, SnapshotRecord, SnapshotStatus, SnapshotWriter, CHECKSUM_LEN,
};

/// A restore commits its writes in batches of about this many bytes, so that its memory stays
/// bounded whatever the snapshot's size.
const RESTORE_BATCH_BYTES: u64 = 4 << 20;

/// A point-in-time copy of the whole store, from [`KvStore::snapshot`]: cheap to take, and
/// encoded (on any thread) while the store goes on. It keeps the storage it sees alive until
/// it is dropped.
#[derive(Debug)]
pub struct StoreSnapshot {
    backend: BackendSnapshot,
    header: SnapshotHeader,
}

/// What a restore produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredSnapshot {
    /// The snapshot file, checked.
    pub status: SnapshotStatus,
    /// Keys in the restored store's index (live, or with history kept).
    pub indexed_keys: usize,
    /// Leases in the restored store.
    pub leases: usize,
}

impl KvStore {
    /// Takes a snapshot: the store as it is between two writes, with its current and compact
    /// revisions. Every acknowledged write is in it.
    ///
    /// # Errors
    /// `Poisoned` when memory and disk may disagree.
    pub fn snapshot(&self) -> Result<StoreSnapshot> {
        self.check_writable()?;
        if !self.group.is_empty() {
            // The runtime asks between write groups; rows not yet committed would be missing.
            return Err(Error::Internal("a snapshot was asked for inside a write group".into()));
        }
        Ok(StoreSnapshot {
            backend: self.backend.snapshot(),
            header: SnapshotHeader { revision: self.current_rev, compact_revision: self.compact_rev },
        })
    }

    /// Restores the snapshot file `file` into `config.path()`, which must be missing or empty
    /// (as etcd's restore refuses a non-empty data directory), then opens the result and checks
    /// it is at exactly the snapshot's revision and compact revision. On any failure the
    /// directory is left as empty as it was found.
    ///
    /// # Errors
    /// `Error::Snapshot` for a non-empty directory, a damaged file or a restored store that is
    /// not what the snapshot says; storage and I/O errors.
    pub fn restore_snapshot(file: &Path, config: StoreConfig) -> Result<RestoredSnapshot> {
        let dir = config.path().to_path_buf();
        let existed = dir.exists();
        if existed && std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_some()) {
            return Err(Error::Snapshot(format!("data-dir {:?} not empty or could not be read", dir.display())));
        }
        let result = restore_into(file, config);
        if result.is_err() {
            let cleaned = if existed {
                empty_dir(&dir)
            } else if dir.exists() {
                std::fs::remove_dir_all(&dir)
            } else {
                // Never created (its parent is not a directory, say): nothing to clean.
                Ok(())
            };
            if let Err(e) = cleaned {
                tracing::error!(dir = %dir.display(), error = %e, "could not clean up after a failed restore");
            }
        }
        result
    }
}

fn restore_into(file: &Path, config: StoreConfig) -> Result<RestoredSnapshot> {
    let backend = Backend::open(&config)?;
    // Marked durably before the first record and cleared once the last is on disk, so a
    // restore cut off partway (killed, power lost) leaves a directory `KvStore::open` refuses,
    // never part of a store served as if whole.
    let mut mark = backend.batch();
    mark.put_meta(META_RESTORING, 1);
    mark.commit()?;
    backend.sync()?;
    let mut batch = backend.batch();
    let mut batch_bytes = 0u64;
    let status = snapshot::read_file(file, |record| {
        check_record(&record)?;
        batch.put_record(record.keyspace, &record.key, &record.value);
        batch_bytes += record_len(record.key.len(), record.value.len());
        if batch_bytes >= RESTORE_BATCH_BYTES {
            std::mem::replace(&mut batch, backend.batch()).commit()?;
            batch_bytes = 0;
        }
        Ok(())
    })?;
    batch.commit()?;
    backend.sync()?;
    let mut unmark = backend.batch();
    unmark.delete_meta(META_RESTORING);
    unmark.commit()?;
    backend.sync()?;
    drop(backend);

    let store = KvStore::open(config)?;
    let want = status.header;
    if (store.current_rev(), store.compact_rev()) != (want.revision, want.compact_revision) {
        return Err(Error::Snapshot(format!(
            "the restored store is at revision {} (compacted at {}), the snapshot says {} (compacted at {})",
            store.current_rev(),
            store.compact_rev(),
            want.revision,
            want.compact_revision
        )));
    }
    let stats = store.stats();
    if stats.leases as u64 != status.records_in(SnapshotKeyspace::Lease) {
        return Err(Error::Snapshot(format!(
            "the restored store has {} leases, the snapshot {}",
            stats.leases,
            status.records_in(SnapshotKeyspace::Lease)
        )));
    }
    Ok(RestoredSnapshot { status, indexed_keys: stats.indexed_keys, leases: stats.leases })
}

/// Checks a record decodes as what its keyspace stores: the checksum vouches for the bytes,
/// this for the writer.
fn check_record(record: &SnapshotRecord) -> Result<()> {
    let bad = |what: &str, reason: String| {
        Error::Snapshot(format!("a {} record ({what}) does not decode: {reason}", record.keyspace.name()))
    };
    match record.keyspace {
        SnapshotKeyspace::Kv => {
            let key = BackendKey::decode(&record.key)
                .ok_or_else(|| bad(&format!("key {:?}", record.key), "malformed revision key".into()))?;
            codec::decode_row(&record.value).map_err(|e| bad(&format!("revision {}", key.rev), e))?;
        }
        SnapshotKeyspace::Meta => {
            let name = String::from_utf8_lossy(&record.key);
            if record.key == crate::backend::META_UPSTREAM_PREFIX {
                // Raw bytes: any prefix, the empty one (the whole keyspace) too.
            } else if record.key.starts_with(super::auth::META_AUTH_PREFIX) {
                codec::decode_auth_record(&record.value).map_err(|e| bad(&name, e))?;
            } else {
                codec::decode_i64(&record.value).map_err(|e| bad(&name, e))?;
            }
        }
        SnapshotKeyspace::Lease => {
            let lease = codec::decode_lease(&record.value).map_err(|e| bad(&format!("key {:?}", record.key), e))?;
            if record.key != lease.id.to_be_bytes() {
                return Err(bad(&format!("lease {}", lease.id), format!("stored under key {:?}", record.key)));
            }
        }
    }
    Ok(())
}

/// Removes everything inside `dir`, keeping `dir`.
fn empty_dir(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

impl StoreSnapshot {
    /// The revisions the snapshot is at.
    #[must_use]
    pub fn header(&self) -> SnapshotHeader {
        self.header
    }

    /// The length of the snapshot's body (everything before the checksum), read from the
    /// snapshot without encoding it: a stream counts down from it (etcd `remaining_bytes`).
    ///
    /// # Errors
    /// Storage errors.
    pub fn body_len(&self) -> Result<u64> {
        let mut records = 0u64;
        for keyspace in SnapshotKeyspace::ALL {
            self.backend.visit(keyspace, |key, value| {
                records += record_len(key.len(), value.len());
                Ok(())
            })?;
        }
        Ok(snapshot::body_len(records))
    }

    /// Encodes the snapshot's body into `out`; returns `out`, the body's length and the sha256
    /// that follows it (a stream sends it as its own last message).
    ///
    /// # Errors
    /// Storage errors, or whatever `out` fails with.
    pub fn write_body<W: Write>(&self, out: W) -> Result<(W, u64, [u8; CHECKSUM_LEN])> {
        let mut writer = SnapshotWriter::new(out, &self.header)?;
        for keyspace in SnapshotKeyspace::ALL {
            self.backend.visit(keyspace, |key, value| writer.record(keyspace, key, value))?;
        }
        writer.finish_body()
    }

    /// Writes the whole snapshot file to `path` (through `path.part`, synced, then renamed, as
    /// etcdctl's save does).
    ///
    /// # Errors
    /// Storage and I/O errors.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let part = std::path::PathBuf::from(part);
        let file = std::fs::File::create(&part)?;
        let (out, _, digest) = self.write_body(std::io::BufWriter::new(file))?;
        let mut out = out.into_inner().map_err(|e| e.into_error())?;
        out.write_all(&digest)?;
        out.sync_all()?;
        std::fs::rename(&part, path)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::request::{DeleteRangeRequest, PutRequest, RangeRequest};
    use crate::KeyRange;

    fn open(dir: &Path) -> KvStore {
        KvStore::open(StoreConfig::new(dir)).expect("open")
    }

    /// `(key, value, create_revision, mod_revision, version, lease)`.
    type Row = (Vec<u8>, Vec<u8>, i64, i64, i64, i64);

    /// Every key live at `rev`.
    fn state(store: &KvStore, rev: i64) -> Vec<Row> {
        let mut req = RangeRequest::new(KeyRange::FromKey(vec![0]));
        req.revision = rev;
        let resp = store.range(&req).expect("range");
        resp.kvs
            .into_iter()
            .map(|kv| (kv.key.clone(), kv.value.clone(), kv.create_revision, kv.mod_revision, kv.version, kv.lease))
            .collect()
    }

    #[test]
    fn restore_gives_the_store_at_the_snapshot_revision_while_the_source_moves_on() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = open(&dir.path().join("src"));
        let (lease, _) = store.lease_grant(7, 600, Instant::now()).expect("grant");
        for i in 0..50 {
            store.put(PutRequest::new(format!("k{}", i % 10), format!("v{i}"))).expect("put");
        }
        let mut leased = PutRequest::new("leased", "x");
        leased.lease = lease;
        store.put(leased).expect("leased put");
        store.delete_range(DeleteRangeRequest::new(KeyRange::Single(b"k3".to_vec()))).expect("delete");
        let compact_at = store.current_rev() - 5;
        store.compact(compact_at).expect("compact").wait().expect("physical compaction");
        let snap = store.snapshot().expect("snapshot");
        let at = store.current_rev();
        let expected = state(&store, at);
        assert_eq!(snap.header(), SnapshotHeader { revision: at, compact_revision: compact_at });

        // The store goes on after the snapshot was taken; the snapshot does not see it.
        for i in 0..20 {
            store.put(PutRequest::new(format!("after{i}"), "y")).expect("put after");
        }
        store.delete_range(DeleteRangeRequest::new(KeyRange::Single(b"k1".to_vec()))).expect("delete after");
        let file = dir.path().join("snap.db");
        snap.save(&file).expect("save");
        drop(snap);

        let len = std::fs::metadata(&file).expect("stat").len();
        assert_eq!(len % 512, 32);
        let restored_dir = dir.path().join("restored");
        let report = KvStore::restore_snapshot(&file, StoreConfig::new(&restored_dir)).expect("restore");
        assert_eq!(report.status.header.revision, at);
        assert_eq!(report.leases, 1);
        assert_eq!(report.status.total_size, len);
        let restored = open(&restored_dir);
        assert_eq!((restored.current_rev(), restored.compact_rev()), (at, compact_at));
        assert_eq!(state(&restored, at), expected);
        // History after the compact revision is there; before it, compacted.
        assert_eq!(state(&restored, compact_at + 1), state(&store, compact_at + 1));
        assert!(matches!(
            restored.range(&{
                let mut r = RangeRequest::new(KeyRange::Single(b"k0".to_vec()));
                r.revision = compact_at - 1;
                r
            }),
            Err(Error::Compacted { .. })
        ));
        let ttl = restored.lease_time_to_live(lease, Instant::now(), true).expect("lease restored");
        assert_eq!((ttl.granted_ttl, ttl.keys), (600, vec![b"leased".to_vec()]));
    }

    #[test]
    fn restore_refuses_a_non_empty_directory_and_leaves_nothing_from_a_damaged_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = open(&dir.path().join("src"));
        store.put(PutRequest::new("a", "1")).expect("put");
        let file = dir.path().join("snap.db");
        store.snapshot().expect("snapshot").save(&file).expect("save");

        let busy = dir.path().join("busy");
        std::fs::create_dir_all(&busy).expect("mkdir");
        std::fs::write(busy.join("x"), b"x").expect("write");
        let err = KvStore::restore_snapshot(&file, StoreConfig::new(&busy)).expect_err("non-empty dir");
        assert!(err.to_string().contains("not empty"), "{err}");
        assert!(busy.join("x").exists(), "a refused restore touches nothing");

        let mut bytes = std::fs::read(&file).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        let damaged = dir.path().join("damaged.db");
        std::fs::write(&damaged, &bytes).expect("write");
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).expect("mkdir");
        let err = KvStore::restore_snapshot(&damaged, StoreConfig::new(&empty)).expect_err("damaged");
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        assert_eq!(std::fs::read_dir(&empty).expect("read dir").count(), 0, "nothing left behind");
        let missing = dir.path().join("missing");
        KvStore::restore_snapshot(&damaged, StoreConfig::new(&missing)).expect_err("damaged");
        assert!(!missing.exists(), "a directory the restore made is removed again");
        // Into a path whose parent is a file: refused, and nothing to clean up.
        let under_file = busy.join("x").join("sub");
        KvStore::restore_snapshot(&file, StoreConfig::new(&under_file)).expect_err("not a directory");
    }

    /// A restore cut off partway (killed: no clean-up runs) leaves a directory the store refuses
    /// to open, rather than part of a store served as if whole.
    #[test]
    fn a_restore_cut_off_partway_is_refused_on_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = open(&dir.path().join("src"));
        for i in 0..20 {
            store.put(PutRequest::new(format!("k{i}"), "v")).expect("put");
        }
        let file = dir.path().join("snap.db");
        store.snapshot().expect("snapshot").save(&file).expect("save");
        let mut bytes = std::fs::read(&file).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let damaged = dir.path().join("damaged.db");
        std::fs::write(&damaged, &bytes).expect("write");

        // `restore_into` without `restore_snapshot`'s clean-up: what a kill would leave.
        let target = dir.path().join("cut");
        restore_into(&damaged, StoreConfig::new(&target)).expect_err("the checksum fails at the end");
        let err = KvStore::open(StoreConfig::new(&target)).map(|_| ()).expect_err("refused");
        assert!(err.to_string().contains("restore into") && err.to_string().contains("did not finish"), "{err}");

        // A whole restore clears its mark.
        let whole = dir.path().join("whole");
        KvStore::restore_snapshot(&file, StoreConfig::new(&whole)).expect("restore");
        assert_eq!(open(&whole).current_rev(), store.current_rev());
    }
}
