//! Owns the core crate's `Error` enum: etcd's message texts where etcd has one.

/// Errors of the watchkv core. Messages are etcd's (`mvcc: ...`, `etcdserver: ...`) so that a
/// transport can hand them to clients unchanged; the gRPC layer adds `etcdserver: ` in front of
/// `mvcc:` texts exactly as etcd's `rpctypes` does.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The requested revision is below the compact revision (docs/etcd-semantics.md §1.4, §5).
    #[error("mvcc: required revision has been compacted")]
    Compacted {
        /// The revision that was asked for.
        requested: i64,
        /// The store's compact revision at the time.
        compact_rev: i64,
    },
    /// The requested revision is above the current revision (docs/etcd-semantics.md §1.4, §5).
    #[error("mvcc: required revision is a future revision")]
    FutureRev {
        /// The revision that was asked for.
        requested: i64,
        /// The store's current revision at the time.
        current_rev: i64,
    },
    /// A txn has more than `max_txn_ops` operations in one list (docs/etcd-semantics.md §1.3).
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A txn branch writes one key twice, or puts a key it also deletes (docs/etcd-semantics.md
    /// §1.3).
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// A request names the empty key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// A request op with no operation set, or `ignore_value`/`ignore_lease` on a missing key.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` together with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` together with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A put names a lease that does not exist, or a lease call names an unknown lease.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A lease grant names an id that is already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// A lease grant asks for more than the maximum TTL.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// A request is larger than `max_request_bytes`.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// A watch on an empty range (`key >= range_end`), docs/etcd-semantics.md §6.2.
    #[error("mvcc: watcher range is empty")]
    EmptyWatcherRange,
    /// An explicit watch id that the stream already uses.
    #[error("mvcc: duplicate watch ID provided on the WatchStream")]
    DuplicateWatchId,
    /// An explicit negative watch id (etcd accepts them; -1 would collide with progress).
    #[error("mvcc: watch ID must not be negative")]
    NegativeWatchId,
    /// A create with a negative start revision (etcd answers with the compacted text).
    #[error("etcdserver: mvcc: required revision has been compacted")]
    NegativeStartRevision,
    /// A stream already has as many watchers as it may.
    #[error("etcdserver: too many watchers on this stream")]
    TooManyWatchers,
    /// A cancel of a watch id the stream does not have.
    #[error("mvcc: watcher does not exist")]
    WatcherNotExist,
    /// A write that adds data while the `NOSPACE` alarm is raised, or one that would take the
    /// store over its space quota (and raises the alarm).
    #[error("mvcc: database space exceeded")]
    NoSpace,
    /// Any request while the `CORRUPT` alarm is raised.
    #[error("etcdserver: corrupt cluster")]
    CorruptAlarm,
    /// An auth request refused, or a request without the permission it needs (etcd's texts).
    #[error("{0}")]
    Auth(#[from] crate::auth::AuthError),
    /// A record on disk does not decode; names the row so an operator can find it.
    #[error("mvcc: corrupt record at revision {revision}: {reason}")]
    Corrupt {
        /// The revision (or other row name) of the damaged record.
        revision: String,
        /// What was wrong with it.
        reason: String,
    },
    /// An earlier write failed to persist; the store refuses writes rather than carry on with
    /// in-memory state that may not be on disk (as fjall poisons itself).
    #[error("mvcc: store is poisoned by a storage failure; writes are refused until it recovers")]
    Poisoned,
    /// A broken internal invariant (a bug, not damage on disk; that is `Corrupt`). In the
    /// runtime the operation did not complete and changed nothing; in the middle of a write the
    /// core poisons the store as for a storage failure.
    #[error("watchkv: internal error: {0}")]
    Internal(String),
    /// The store was closed before the operation could finish.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// A physical compaction failed; it is retried when the store is reopened.
    #[error("mvcc: compaction at revision {rev} failed: {reason}")]
    CompactionFailed {
        /// The compaction revision.
        rev: i64,
        /// What failed.
        reason: String,
    },
    /// A snapshot file that is not whole, not a watchkv snapshot, or damaged; or a restore
    /// that did not give the store the snapshot describes.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// An import of another etcd's keyspace ([`crate::KvStore::begin_import`]) that cannot
    /// go on: a store that is not empty, a key-value that upstream cannot have sent, or a data
    /// directory whose import never finished.
    #[error("import: {0}")]
    Import(String),
    /// A mirror refused an upstream revision it cannot apply
    /// ([`crate::KvStore::apply_upstream`]): one at or below its applied revision, or one that
    /// does not continue the mirror's state (the mirror has diverged from upstream).
    #[error("mirror: {0}")]
    Upstream(String),
    /// A client write sent to a mirror: it serves reads and watches only, writes go to the
    /// upstream cluster (mirror mode).
    #[error("etcdserver: mirror: writes go to upstream")]
    MirrorWrite,
    /// The data directory is etcd's (it holds etcd's `member/` tree, or is that tree): watchkv
    /// cannot read etcd's files, and would otherwise start an empty store beside them.
    #[error(
        "{0:?} is an etcd data directory, which watchkv cannot open: give watchkv a directory of its own and \
         copy the keys with `watchkv import --from <a running etcd's URL>`"
    )]
    EtcdDataDir(std::path::PathBuf),
    /// The storage engine failed.
    #[error("mvcc: storage: {0}")]
    Storage(#[from] fjall::Error),
    /// A file-system operation failed.
    #[error("mvcc: io: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// Whether the data directory is locked by another process that has the store open.
    #[must_use]
    pub fn is_locked(&self) -> bool {
        matches!(self, Self::Storage(fjall::Error::Locked))
    }

    /// Whether the error is a full disk (`ENOSPC`, or a quota's `EDQUOT`) somewhere in its
    /// chain of causes: the storage failure that freeing space cures.
    #[must_use]
    pub fn is_no_space(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::StorageFull || matches!(io.raw_os_error(), Some(28 | 122)) {
                    return true;
                }
            }
            cause = e.source();
        }
        false
    }

    /// Returns whether the error says the store's own bytes are damaged: a record that does not
    /// decode, or a block whose checksum, compression or framing fjall finds wrong. The
    /// integrity self-check raises `CORRUPT` on these rather than skipping the check.
    #[must_use]
    pub fn is_damage(&self) -> bool {
        use fjall::LsmError;
        match self {
            Self::Corrupt { .. } => true,
            Self::Storage(fjall::Error::Decompress(_) | fjall::Error::InvalidTrailer | fjall::Error::InvalidTag(_)) => {
                true
            }
            Self::Storage(fjall::Error::Storage(e)) => matches!(
                e,
                LsmError::ChecksumMismatch { .. }
                    | LsmError::Decompress(_)
                    | LsmError::InvalidTrailer
                    | LsmError::InvalidTag(_)
                    | LsmError::InvalidHeader(_)
            ),
            _ => false,
        }
    }

    /// Returns whether the error is the client's doing (bad input, a compacted or future
    /// revision, an unknown lease) rather than a failure of the server or its disk.
    #[must_use]
    pub fn is_client_error(&self) -> bool {
        !matches!(
            self,
            Self::Corrupt { .. }
                | Self::Internal(_)
                | Self::Poisoned
                | Self::Stopped
                | Self::CompactionFailed { .. }
                | Self::Snapshot(_)
                | Self::Import(_)
                | Self::Upstream(_)
                | Self::Storage(_)
                | Self::Io(_)
        )
    }
}

/// Result with the core's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_is_a_record_or_block_that_does_not_read_back() {
        let undecodable = Error::Corrupt { revision: "7".into(), reason: "truncated".into() };
        assert!(undecodable.is_damage());
        assert!(Error::Storage(fjall::Error::InvalidTrailer).is_damage());
        assert!(Error::Storage(fjall::Error::Storage(fjall::LsmError::InvalidHeader("block"))).is_damage());
        // What a client, a compaction race or a full disk causes is not damage.
        assert!(!Error::Compacted { requested: 3, compact_rev: 5 }.is_damage());
        assert!(!Error::Poisoned.is_damage());
        assert!(!Error::Storage(fjall::Error::Locked).is_damage());
        assert!(!Error::Io(std::io::Error::other("no space")).is_damage());
    }
}
