//! Owns the tunables: `StoreConfig` for the MVCC store and `WatchConfig` for the watch machinery,
//! each with etcd's default written next to it. They are values, not constants, so tests can
//! shrink them (etcd's tests reassign `chanBufLen`, `maxWatchersPerSync`, ...).

use std::path::PathBuf;
use std::time::Duration;

/// When a write is acknowledged relative to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Every write batch is synced to disk (`fsync`) before it is acknowledged and before any
    /// watcher hears of it. Nothing acknowledged is lost, even on power loss. Default.
    #[default]
    Fsync,
    /// Every write batch is handed to the OS before it is acknowledged, without `fsync`.
    /// Survives a crash of the process; an OS crash or power loss can lose the writes of the
    /// last few seconds (until the OS writes its page cache back).
    Buffered,
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fsync" => Ok(Self::Fsync),
            "buffered" => Ok(Self::Buffered),
            other => Err(format!("unknown durability {other:?}: expected \"fsync\" or \"buffered\"")),
        }
    }
}

/// Configuration of a [`crate::KvStore`].
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Directory of the fjall database. Created if missing.
    pub path: PathBuf,
    /// Default = [`Durability::Fsync`].
    pub durability: Durability,
    /// Rows deleted per physical compaction batch. Default = 1000 (etcd
    /// `defaultCompactionBatchLimit`).
    pub compaction_batch_limit: usize,
    /// Pause between physical compaction batches. Default = 10 ms (etcd
    /// `defaultCompactionSleepInterval`).
    pub compaction_sleep_interval: Duration,
    /// Maximum operations in one compare / success / failure list of a txn. Default = 128
    /// (etcd `DefaultMaxTxnOps`).
    pub max_txn_ops: usize,
    /// Rows decoded per chunk when the index is rebuilt on open. Default = 10000 (etcd
    /// `restoreChunkKeys`).
    pub restore_chunk_keys: usize,
    /// Smallest lease TTL in seconds; shorter grants are raised to it. Default = 2 (etcd with its
    /// default 100 ms heartbeat and 1 s election timeout: `ceil(1.5 * 1 s)`).
    pub min_lease_ttl: i64,
    /// fjall block cache size in bytes. Default = 64 MiB.
    pub cache_size: u64,
}

/// Largest lease TTL in seconds (etcd `MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

impl StoreConfig {
    /// Returns the default configuration for a store in `path`.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::Fsync,
            compaction_batch_limit: 1000,
            compaction_sleep_interval: Duration::from_millis(10),
            max_txn_ops: 128,
            restore_chunk_keys: 10_000,
            min_lease_ttl: 2,
            cache_size: 64 << 20,
        }
    }

    /// Sets [`Self::durability`].
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets [`Self::compaction_batch_limit`] (at least 1).
    #[must_use]
    pub fn compaction_batch_limit(mut self, rows: usize) -> Self {
        self.compaction_batch_limit = rows.max(1);
        self
    }

    /// Sets [`Self::compaction_sleep_interval`].
    #[must_use]
    pub fn compaction_sleep_interval(mut self, pause: Duration) -> Self {
        self.compaction_sleep_interval = pause;
        self
    }

    /// Sets [`Self::max_txn_ops`].
    #[must_use]
    pub fn max_txn_ops(mut self, ops: usize) -> Self {
        self.max_txn_ops = ops;
        self
    }

    /// Sets [`Self::restore_chunk_keys`] (at least 1).
    #[must_use]
    pub fn restore_chunk_keys(mut self, rows: usize) -> Self {
        self.restore_chunk_keys = rows.max(1);
        self
    }

    /// Sets [`Self::min_lease_ttl`].
    #[must_use]
    pub fn min_lease_ttl(mut self, seconds: i64) -> Self {
        self.min_lease_ttl = seconds;
        self
    }

    /// Sets [`Self::cache_size`].
    #[must_use]
    pub fn cache_size(mut self, bytes: u64) -> Self {
        self.cache_size = bytes;
        self
    }
}

/// Tunables of the watch machinery (spec §0), with etcd's defaults.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Capacity of each stream's bounded mailbox. Default = 128 (etcd `chanBufLen`).
    pub chan_buf_len: usize,
    /// Unsynced watchers handled per catch-up pass. Default = 512 (etcd `maxWatchersPerSync`).
    pub max_watchers_per_sync: usize,
    /// Period of the catch-up loop. Default = 100 ms (etcd `watchResyncPeriod`).
    pub watch_resync_period: Duration,
    /// Period of the victim retry loop. Default = 10 ms (etcd, literal in `syncVictimsLoop`).
    pub victim_retry_period: Duration,
    /// Most distinct revisions in one catch-up response. Default = 1000 (etcd
    /// `watchBatchMaxRevs`).
    pub watch_batch_max_revs: usize,
    /// Period of progress notifications for watchers that asked for them. Default = 10 min
    /// (etcd `progressReportInterval`).
    pub progress_notify_interval: Duration,
    /// Size above which a response to a `fragment` watcher is split. Default = 1.5 MiB + 512
    /// KiB = 2 MiB (etcd `maxRequestBytes` + `grpcOverheadBytes`).
    pub max_response_bytes: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            chan_buf_len: 128,
            max_watchers_per_sync: 512,
            watch_resync_period: Duration::from_millis(100),
            victim_retry_period: Duration::from_millis(10),
            watch_batch_max_revs: 1000,
            progress_notify_interval: Duration::from_secs(600),
            max_response_bytes: 2 << 20,
        }
    }
}
