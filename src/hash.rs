//! Owns the store's integrity hashes: `HashKV`, computed exactly as etcd computes it (etcd:
//! mvcc/hash.go `unsafeHashByRev`, `kvHasher`; mvcc/kvstore.go `hashByRev`), so that the same
//! operations give the same hash on etcd and on watchkv, and `Hash`, a checksum of everything
//! the store holds (etcd hashes its whole bbolt file instead; see docs/etcd-semantics.md,
//! "Integrity").
//!
//! etcd's `HashKV` is a CRC-32C (Castagnoli) over the bucket name `key`, then, in revision order,
//! each row's 17-byte revision key (18 with the tombstone mark) and the row's value, the
//! protobuf-encoded `mvccpb.KeyValue` (a tombstone's holds only the key). Rows above the hash
//! revision are left out; rows at or below the compact revision count only if a compaction at
//! the hash revision would keep them (and all count when it would keep nothing: etcd's
//! `len(keep) > 0` test). The plan is made where the store's state is (the keep set and a
//! snapshot at one instant), and run anywhere: the scan reads the snapshot, never the store.

use std::collections::HashSet;

use crc::{Crc, CRC_32_ISCSI};

use crate::backend::RevisionSnapshot;
use crate::error::{Error, Result};
use crate::kv::KeyValue;
use crate::revision::Revision;

/// CRC-32C, the polynomial etcd's hashes use (`crc32.MakeTable(crc32.Castagnoli)`).
pub const CASTAGNOLI: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// The name of etcd's key bucket, which starts every `HashKV` (etcd `buckets.Key.Name()`).
const KEY_BUCKET_NAME: &[u8] = b"key";

/// What `HashKV` answers besides the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvHash {
    /// The CRC-32C of the rows, as etcd computes it.
    pub hash: u32,
    /// The compact revision when the hash was planned (-1 = never compacted, as etcd reports
    /// it).
    pub compact_revision: i64,
    /// The revision the hash covers up to (the current revision when 0 was asked for).
    pub hash_revision: i64,
    /// The current revision when the hash was planned.
    pub current_revision: i64,
}

/// A `HashKV` ready to run: the snapshot and the keep set taken at one instant.
pub struct HashKvPlan {
    pub(crate) snapshot: RevisionSnapshot,
    pub(crate) keep: HashSet<Revision>,
    pub(crate) compact_revision: i64,
    pub(crate) hash_revision: i64,
    pub(crate) current_revision: i64,
    pub(crate) compaction_settled: bool,
}

impl std::fmt::Debug for HashKvPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HashKvPlan")
            .field("compact_revision", &self.compact_revision)
            .field("hash_revision", &self.hash_revision)
            .field("keep", &self.keep.len())
            .finish_non_exhaustive()
    }
}

/// Checks a `HashKV` revision against the store's revisions (etcd 3.5 `hashByRev`): 0 means
/// the current revision; below the compact revision is compacted (the compact revision itself
/// can be hashed); above the current revision is a future revision.
///
/// # Errors
/// `Compacted` or `FutureRev`.
pub fn hash_revision(requested: i64, compact_rev: i64, current_rev: i64) -> Result<i64> {
    if requested > 0 && requested < compact_rev {
        return Err(Error::Compacted { requested, compact_rev });
    }
    if requested > current_rev {
        return Err(Error::FutureRev { requested, current_rev });
    }
    Ok(if requested <= 0 { current_rev } else { requested })
}

impl HashKvPlan {
    /// The revision this plan hashes up to.
    #[must_use]
    pub fn hash_revision(&self) -> i64 {
        self.hash_revision
    }

    /// Whether the last physical compaction had finished when the plan was taken. While one
    /// runs, rows below the compact revision that it will delete are still there, and with an
    /// empty keep set (every key deleted) `HashKV` counts them, as etcd's does; such a hash is
    /// right for that instant but no reference for a later one (etcd's corruption check waits
    /// for `prevCompactionCompleted` likewise).
    #[must_use]
    pub fn compaction_settled(&self) -> bool {
        self.compaction_settled
    }

    /// Scans the snapshot and returns the hash. Reads every row up to the hash revision once;
    /// memory stays at one row.
    ///
    /// # Errors
    /// A storage error or a row that does not decode.
    pub fn run(self) -> Result<KvHash> {
        let mut digest = CASTAGNOLI.digest();
        digest.update(KEY_BUCKET_NAME);
        let lower = self.compact_revision.saturating_add(1);
        let mut value = Vec::new();
        self.snapshot.scan(0, self.hash_revision.saturating_add(1), |key, row| {
            // etcd: "skip revisions that are scheduled for deletion due to compacting; don't
            // skip if there isn't one".
            if key.rev.main < lower && !self.keep.is_empty() && !self.keep.contains(&key.rev) {
                return Ok(true);
            }
            // etcd: a tombstone at exactly the compact revision is left out, since etcd before
            // 3.5.16 and 3.4.34 deleted it in the compaction and later releases keep it, as
            // watchkv does (hash.go `WriteKeyValue`); every version then hashes alike.
            if key.tombstone && key.rev.main == self.compact_revision {
                return Ok(true);
            }
            value.clear();
            if key.tombstone {
                encode_key_value(&KeyValue { key: row.key().to_vec(), ..KeyValue::default() }, &mut value);
            } else {
                encode_key_value(&row.decode()?.kv, &mut value);
            }
            digest.update(&key.encode());
            digest.update(&value);
            Ok(true)
        })?;
        Ok(KvHash {
            hash: digest.finalize(),
            compact_revision: self.compact_revision,
            hash_revision: self.hash_revision,
            current_revision: self.current_revision,
        })
    }
}

/// Appends `kv` as etcd stores it: `mvccpb.KeyValue` in protobuf, fields in number order, zero
/// values left out (gogoproto's `Marshal`).
pub fn encode_key_value(kv: &KeyValue, out: &mut Vec<u8>) {
    put_bytes(out, 1, &kv.key);
    put_int(out, 2, kv.create_revision);
    put_int(out, 3, kv.mod_revision);
    put_int(out, 4, kv.version);
    put_bytes(out, 5, &kv.value);
    put_int(out, 6, kv.lease);
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        // Truncation keeps the low seven bits, which is the point.
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_int(out: &mut Vec<u8>, field: u64, v: i64) {
    if v != 0 {
        put_varint(out, field << 3);
        // int64 is written as its two's-complement bits (ten bytes when negative).
        put_varint(out, v as u64);
    }
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_varint(out, field << 3 | 2);
        put_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn castagnoli_matches_the_standard_check_value() {
        // The CRC-32C check value ("123456789"), as Go's crc32.Castagnoli gives it.
        assert_eq!(CASTAGNOLI.checksum(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn key_value_encodes_as_gogoproto_does() {
        let kv = KeyValue {
            key: b"foo".to_vec(),
            create_revision: 2,
            mod_revision: 300,
            version: 1,
            value: b"bar".to_vec(),
            lease: 0,
        };
        let mut out = Vec::new();
        encode_key_value(&kv, &mut out);
        assert_eq!(out, [0x0a, 3, b'f', b'o', b'o', 0x10, 2, 0x18, 0xac, 0x02, 0x20, 1, 0x2a, 3, b'b', b'a', b'r']);
        out.clear();
        encode_key_value(&KeyValue { key: b"k".to_vec(), lease: -1, ..KeyValue::default() }, &mut out);
        assert_eq!(out, [0x0a, 1, b'k', 0x30, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    }

    #[test]
    fn hash_revision_follows_etcd_3_5() {
        assert_eq!(hash_revision(0, 5, 9).ok(), Some(9));
        assert_eq!(hash_revision(5, 5, 9).ok(), Some(5), "the compact revision itself can be hashed");
        assert!(matches!(hash_revision(4, 5, 9), Err(Error::Compacted { .. })));
        assert!(matches!(hash_revision(10, 5, 9), Err(Error::FutureRev { .. })));
    }
}

/// What the integrity self-check concluded from one `HashKV` of the current revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntegrityVerdict {
    /// Nothing recorded for this compact revision yet: the hash is the new reference.
    Recorded,
    /// The reference revision hashed again to the same value.
    Consistent,
    /// The reference revision now hashes differently although no compaction happened between:
    /// rows at or below it changed on disk. The runtime raises `CORRUPT`.
    Mismatch {
        /// The revision hashed.
        revision: i64,
        /// What it hashed to before.
        expected: u32,
        /// What it hashes to now.
        found: u32,
    },
}

/// The integrity self-check's memory (etcd 3.5's compact hash check, for one member): a
/// `HashKV` reference per compact revision. A history below the reference revision never
/// changes while the compact revision stays the same (writes only add revisions above it), so
/// hashing the reference revision again must give the same value; a compaction changes what
/// `HashKV` counts, so it starts a new reference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IntegrityCheck {
    reference: Option<KvHash>,
}

impl IntegrityCheck {
    /// The revision to hash next: the reference's, or the current one (0) to take a new
    /// reference.
    #[must_use]
    pub fn next_revision(&self, compact_revision: i64) -> i64 {
        match self.reference {
            Some(r) if r.compact_revision == compact_revision => r.hash_revision,
            _ => 0,
        }
    }

    /// Takes the result of hashing [`Self::next_revision`].
    pub fn observe(&mut self, hash: KvHash) -> IntegrityVerdict {
        match self.reference {
            Some(r) if r.compact_revision == hash.compact_revision && r.hash_revision == hash.hash_revision => {
                if r.hash == hash.hash {
                    IntegrityVerdict::Consistent
                } else {
                    IntegrityVerdict::Mismatch { revision: r.hash_revision, expected: r.hash, found: hash.hash }
                }
            }
            _ => {
                self.reference = Some(hash);
                IntegrityVerdict::Recorded
            }
        }
    }
}

#[cfg(test)]
mod integrity_tests {
    use super::*;

    fn h(hash: u32, compact: i64, rev: i64) -> KvHash {
        KvHash { hash, compact_revision: compact, hash_revision: rev, current_revision: rev + 5 }
    }

    #[test]
    fn a_reference_per_compaction_and_a_mismatch_only_within_one() {
        let mut c = IntegrityCheck::default();
        assert_eq!(c.next_revision(-1), 0);
        assert_eq!(c.observe(h(7, -1, 10)), IntegrityVerdict::Recorded);
        assert_eq!(c.next_revision(-1), 10, "hash the reference revision again");
        assert_eq!(c.observe(h(7, -1, 10)), IntegrityVerdict::Consistent);
        assert_eq!(
            c.observe(h(8, -1, 10)),
            IntegrityVerdict::Mismatch { revision: 10, expected: 7, found: 8 },
            "the same history hashing differently is corruption"
        );
        // A compaction since: a new reference, whatever the hash.
        assert_eq!(c.next_revision(6), 0);
        assert_eq!(c.observe(h(99, 6, 20)), IntegrityVerdict::Recorded);
        assert_eq!(c.observe(h(99, 6, 20)), IntegrityVerdict::Consistent);
    }
}
