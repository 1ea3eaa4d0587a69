//! Owns the read path: ranges at a revision, as of the store or of a write in progress, with
//! etcd's filters, sort and limit (etcd `mvcc/kvstore_txn.go storeTxnRead.rangeKeys`,
//! `server/etcdserver/txn/txn.go executeRange`).

use super::KvStore;
use crate::codec;
use crate::error::{Error, Result};
use crate::key_index::KeyVersion;
use crate::kv::KeyValue;
use crate::request::{check_range, RangeRequest, RangeResponse, SortOrder, SortTarget};
use crate::revision::Revision;

impl KvStore {
    /// Reads a key range (etcd `Range`, docs/etcd-semantics.md §1.4).
    ///
    /// # Errors
    /// `EmptyKey`, `FutureRev`, `Compacted`, or a storage error.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        check_range(req)?;
        self.range_view(req, self.current_rev)
    }

    /// Reads `req` as of a store at `view_rev` (inside a write, the rows of the current group
    /// are read back from the group).
    pub(super) fn range_view(&self, req: &RangeRequest, view_rev: i64) -> Result<RangeResponse> {
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

    /// Applies docs/etcd-semantics.md §1.4 steps 1–3: the revision actually read for a requested
    /// `rev`.
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

    /// Reads the key-value stored in the put row at `rev`. A row of the current group that does
    /// not decode, or a row the index names that the backend lacks, is a broken invariant of
    /// this process, not damage on disk: `Internal` (the backend reports `Corrupt` itself for
    /// bytes read from disk that do not decode).
    pub(super) fn read_kv(&self, rev: Revision) -> Result<KeyValue> {
        if let Some(bytes) = self.group.row(rev) {
            return codec::decode_row(bytes)
                .map(|row| row.kv)
                .map_err(|reason| Error::Internal(format!("row {rev} of the write group does not decode: {reason}")));
        }
        match self.backend.get_row(rev.to_key(false))? {
            Some(row) => Ok(row.kv),
            None => Err(Error::Internal(format!("row {rev} named by the key index is missing"))),
        }
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
