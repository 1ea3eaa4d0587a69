//! Owns `Revision{main, sub}` and its on-disk key encoding (etcd: `revision.go`).
//!
//! A backend row key is `BE64(main) '_' BE64(sub)` (17 bytes), plus a trailing `'t'` for a
//! tombstone (18 bytes). Rows therefore sort by revision, which is what lets the watch catch-up
//! read "all changes in `[min_rev, max_rev)`" as one contiguous range scan (docs/etcd-semantics.md
//! §1.1).

use std::fmt;

/// Length of a backend key without the tombstone mark (etcd `revBytesLen`).
pub const REV_BYTES_LEN: usize = 17;
/// Length of a tombstone backend key (etcd `markedRevBytesLen`).
pub const MARKED_REV_BYTES_LEN: usize = REV_BYTES_LEN + 1;
/// The byte that marks a tombstone row (etcd `markTombstone`).
pub const MARK_TOMBSTONE: u8 = b't';

/// A position in the store's history: `main` is the revision of an atomic write transaction,
/// `sub` the 0-based index of the change inside it. Ordered lexicographically on `(main, sub)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    /// The store revision of the write transaction.
    pub main: i64,
    /// The index of the change inside its transaction, in execution order.
    pub sub: i64,
}

impl Revision {
    /// Creates a revision.
    #[must_use]
    pub const fn new(main: i64, sub: i64) -> Self {
        Self { main, sub }
    }

    /// Returns the 17-byte backend key of this revision.
    #[must_use]
    pub fn to_bytes(self) -> [u8; REV_BYTES_LEN] {
        let mut out = [0u8; REV_BYTES_LEN];
        out[..8].copy_from_slice(&self.main.to_be_bytes());
        out[8] = b'_';
        out[9..].copy_from_slice(&self.sub.to_be_bytes());
        out
    }

    /// Returns the backend key of this revision, with the tombstone mark if `tombstone`.
    #[must_use]
    pub fn to_key(self, tombstone: bool) -> BackendKey {
        BackendKey { rev: self, tombstone }
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.main, self.sub)
    }
}

/// A decoded backend row key: a revision and whether the row is a tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    /// The revision of the change.
    pub rev: Revision,
    /// Whether the row records a deletion.
    pub tombstone: bool,
}

impl BackendKey {
    /// Encodes the key: 17 bytes, or 18 with the tombstone mark.
    #[must_use]
    pub fn encode(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MARKED_REV_BYTES_LEN);
        out.extend_from_slice(&self.rev.to_bytes());
        if self.tombstone {
            out.push(MARK_TOMBSTONE);
        }
        out
    }

    /// Decodes a backend key, or returns `None` if it is not 17 bytes (or 18 ending in `'t'`)
    /// with `'_'` as separator.
    #[must_use]
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let tombstone = match bytes.len() {
            REV_BYTES_LEN => false,
            MARKED_REV_BYTES_LEN if bytes[REV_BYTES_LEN] == MARK_TOMBSTONE => true,
            _ => return None,
        };
        if bytes[8] != b'_' {
            return None;
        }
        let main = i64::from_be_bytes(bytes[..8].try_into().ok()?);
        let sub = i64::from_be_bytes(bytes[9..REV_BYTES_LEN].try_into().ok()?);
        Some(Self { rev: Revision { main, sub }, tombstone })
    }
}

/// Returns the smallest backend key of revision `main` (sub 0, no mark): the inclusive lower
/// bound of a scan that starts at `main`.
#[must_use]
pub fn main_rev_start(main: i64) -> [u8; REV_BYTES_LEN] {
    Revision::new(main.max(0), 0).to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_and_sorts_by_revision() {
        let revs = [Revision::new(1, 0), Revision::new(1, 5), Revision::new(2, 0), Revision::new(300, 2)];
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for (i, rev) in revs.iter().enumerate() {
            let key = rev.to_key(i % 2 == 1);
            let bytes = key.encode();
            assert_eq!(bytes.len(), if key.tombstone { 18 } else { 17 });
            assert_eq!(BackendKey::decode(&bytes), Some(key));
            keys.push(bytes);
        }
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "byte order must equal revision order");
    }

    #[test]
    fn decode_rejects_malformed_keys() {
        assert_eq!(BackendKey::decode(b"short"), None);
        let mut bad = Revision::new(2, 0).to_bytes().to_vec();
        bad[8] = b'x';
        assert_eq!(BackendKey::decode(&bad), None);
        let mut bad_mark = Revision::new(2, 0).to_bytes().to_vec();
        bad_mark.push(b'x');
        assert_eq!(BackendKey::decode(&bad_mark), None);
    }
}
