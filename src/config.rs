//! Owns the tunables: `StoreConfig` for the MVCC store and `WatchConfig` for the watch machinery,
//! in one place. Each setting has a getter named after it, a consuming `with_*` setter that
//! checks its range and panics outside it (fjall's style), and its default and range exported as
//! `DEFAULT_*` / `*_RANGE` constants (durations as milliseconds, `*_MS`), so that the CLI takes
//! its defaults from here and rejects bad input with a clear error before a setter could panic.
//! They are values, not constants, so tests can shrink them (etcd's tests reassign `chanBufLen`,
//! `maxWatchersPerSync`, ...).

use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::disk_stats::DiskStats;
use crate::watch::event_batch::BatchLimits;

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

/// The name [`Durability::from_str`](std::str::FromStr) parses, so a CLI can print the default.
impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fsync => "fsync",
            Self::Buffered => "buffered",
        })
    }
}

// ---- StoreConfig: defaults and ranges ----

/// Default of [`StoreConfig::durability`].
pub const DEFAULT_DURABILITY: Durability = Durability::Fsync;

/// Default of [`StoreConfig::compaction_batch_limit`] (etcd `defaultCompactionBatchLimit`).
pub const DEFAULT_COMPACTION_BATCH_LIMIT: usize = 1000;
/// Valid [`StoreConfig::compaction_batch_limit`] values: at least one row per batch.
pub const COMPACTION_BATCH_LIMIT_RANGE: RangeInclusive<usize> = 1..=1_000_000;

/// Default of [`StoreConfig::compaction_sleep_interval`] in milliseconds (etcd
/// `defaultCompactionSleepInterval`).
pub const DEFAULT_COMPACTION_SLEEP_INTERVAL_MS: u64 = 10;
/// Valid [`StoreConfig::compaction_sleep_interval`] values in milliseconds. A pause, not a
/// period: zero (no pause) is allowed.
pub const COMPACTION_SLEEP_INTERVAL_MS_RANGE: RangeInclusive<u64> = 0..=10_000;

/// Default of [`StoreConfig::max_txn_ops`] (etcd `embed.DefaultMaxTxnOps`).
pub const DEFAULT_MAX_TXN_OPS: usize = 128;
/// Valid [`StoreConfig::max_txn_ops`] values.
pub const MAX_TXN_OPS_RANGE: RangeInclusive<usize> = 1..=1_000_000;

/// Default of [`StoreConfig::restore_chunk_keys`] (etcd `restoreChunkKeys`).
pub const DEFAULT_RESTORE_CHUNK_KEYS: usize = 10_000;
/// Valid [`StoreConfig::restore_chunk_keys`] values.
pub const RESTORE_CHUNK_KEYS_RANGE: RangeInclusive<usize> = 1..=1_000_000;

/// Largest lease TTL in seconds (etcd `MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// Default of [`StoreConfig::min_lease_ttl`] in seconds: etcd's `minTTL` with its default
/// 100 ms heartbeat and 1 s election timeout, `ceil(1.5 * 1 s)`.
pub const DEFAULT_MIN_LEASE_TTL: i64 = 2;
/// Valid [`StoreConfig::min_lease_ttl`] values in seconds.
pub const MIN_LEASE_TTL_RANGE: RangeInclusive<i64> = 1..=MAX_LEASE_TTL;

/// Default of [`StoreConfig::cache_size`] in bytes: 64 MiB.
pub const DEFAULT_CACHE_SIZE: u64 = 64 << 20;
/// Valid [`StoreConfig::cache_size`] values in bytes: 1 MiB to 1 TiB.
pub const CACHE_SIZE_RANGE: RangeInclusive<u64> = 1 << 20..=1 << 40;

// ---- WatchConfig: defaults and ranges ----

/// Default of [`WatchConfig::chan_buf_len`] (etcd `chanBufLen`).
pub const DEFAULT_CHAN_BUF_LEN: usize = 128;
/// Valid [`WatchConfig::chan_buf_len`] values.
pub const CHAN_BUF_LEN_RANGE: RangeInclusive<usize> = 1..=65_536;

/// Default of [`WatchConfig::max_watchers_per_sync`] (etcd `maxWatchersPerSync`).
pub const DEFAULT_MAX_WATCHERS_PER_SYNC: usize = 512;
/// Valid [`WatchConfig::max_watchers_per_sync`] values.
pub const MAX_WATCHERS_PER_SYNC_RANGE: RangeInclusive<usize> = 1..=1_000_000;

/// Default of [`WatchConfig::watch_resync_period`] in milliseconds (etcd `watchResyncPeriod`).
pub const DEFAULT_WATCH_RESYNC_PERIOD_MS: u64 = 100;
/// Valid [`WatchConfig::watch_resync_period`] values in milliseconds.
pub const WATCH_RESYNC_PERIOD_MS_RANGE: RangeInclusive<u64> = 1..=60_000;

/// Default of [`WatchConfig::victim_retry_period`] in milliseconds (etcd: the literal
/// `10 * time.Millisecond` in `watchable_store.go syncVictimsLoop`).
pub const DEFAULT_VICTIM_RETRY_PERIOD_MS: u64 = 10;
/// Valid [`WatchConfig::victim_retry_period`] values in milliseconds.
pub const VICTIM_RETRY_PERIOD_MS_RANGE: RangeInclusive<u64> = 1..=60_000;

/// Default of [`WatchConfig::watch_batch_max_revs`] (etcd `watchBatchMaxRevs`).
pub const DEFAULT_WATCH_BATCH_MAX_REVS: usize = 1000;
/// Valid [`WatchConfig::watch_batch_max_revs`] values.
pub const WATCH_BATCH_MAX_REVS_RANGE: RangeInclusive<usize> = 1..=1_000_000;

/// Default of [`WatchConfig::progress_notify_interval`] in milliseconds: 10 minutes (etcd
/// `v3rpc progressReportInterval`).
pub const DEFAULT_PROGRESS_NOTIFY_INTERVAL_MS: u64 = 600_000;
/// Valid [`WatchConfig::progress_notify_interval`] values in milliseconds: at least 100 ms,
/// the floor etcd clamps `--experimental-watch-progress-notify-interval` to (etcd v3rpc
/// `minWatchProgressInterval`), at most one day.
pub const PROGRESS_NOTIFY_INTERVAL_MS_RANGE: RangeInclusive<u64> = 100..=86_400_000;

/// Default largest request in bytes (etcd embed `DefaultMaxRequestBytes`, 1.5 MiB).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 1_572_864;
/// Valid largest request sizes in bytes (see [`WatchConfig::with_max_request_bytes`]).
pub const MAX_REQUEST_BYTES_RANGE: RangeInclusive<usize> = 1..=1 << 30;
/// What a response may exceed the largest request by (etcd v3rpc `grpcOverheadBytes`).
pub const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;
/// Default of [`WatchConfig::max_response_bytes`]: 2 MiB (etcd `maxRequestBytes +
/// grpcOverheadBytes`).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = DEFAULT_MAX_REQUEST_BYTES + GRPC_OVERHEAD_BYTES;
/// Valid [`WatchConfig::max_response_bytes`] values.
pub const MAX_RESPONSE_BYTES_RANGE: RangeInclusive<usize> = 1..=*MAX_REQUEST_BYTES_RANGE.end() + GRPC_OVERHEAD_BYTES;
/// Default of [`WatchConfig::max_batch_bytes`]: 128 KiB. Large enough that a batch of small
/// events is cut by `watch_batch_max_revs` first (1000 events of 64-byte values take about
/// 90 KiB), small enough that a stream whose client lags holds little encoded data
/// (docs/benchmarks.md, "Large values").
pub const DEFAULT_MAX_BATCH_BYTES: usize = 128 * 1024;
/// Valid [`WatchConfig::max_batch_bytes`] values.
pub const MAX_BATCH_BYTES_RANGE: RangeInclusive<usize> = 1..=1 << 30;

/// Panics unless `value` lies in `range`, naming the setting (fjall's style: a bad value is the
/// caller's bug; a CLI checks user input against the same `*_RANGE` constant first).
#[track_caller]
fn check_range<T: PartialOrd + fmt::Debug>(setting: &str, value: T, range: &RangeInclusive<T>) -> T {
    assert!(range.contains(&value), "{setting} must be in {range:?}, got {value:?}");
    value
}

/// [`check_range`] for a duration against a range of milliseconds.
#[track_caller]
fn check_ms_range(setting: &str, value: Duration, range_ms: &RangeInclusive<u64>) -> Duration {
    let range = Duration::from_millis(*range_ms.start())..=Duration::from_millis(*range_ms.end());
    assert!(range.contains(&value), "{setting} must be in {range_ms:?} ms, got {value:?}");
    value
}

/// The member id a store reports when none is configured: a constant, so that a restarted
/// server reports the same identity and its persisted alarms stay its own.
pub const DEFAULT_MEMBER_ID: u64 = 0x0a7c_4b1e_0000_0001;

/// Configuration of a [`crate::KvStore`]. Every setter panics outside the range it documents.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    path: PathBuf,
    durability: Durability,
    compaction_batch_limit: usize,
    compaction_sleep_interval: Duration,
    max_txn_ops: usize,
    restore_chunk_keys: usize,
    min_lease_ttl: i64,
    cache_size: u64,
    quota_backend_bytes: Option<u64>,
    member_id: u64,
    disk_stats: Arc<DiskStats>,
}

impl StoreConfig {
    /// Returns the default configuration for a store in `path`.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: DEFAULT_DURABILITY,
            compaction_batch_limit: DEFAULT_COMPACTION_BATCH_LIMIT,
            compaction_sleep_interval: Duration::from_millis(DEFAULT_COMPACTION_SLEEP_INTERVAL_MS),
            max_txn_ops: DEFAULT_MAX_TXN_OPS,
            restore_chunk_keys: DEFAULT_RESTORE_CHUNK_KEYS,
            min_lease_ttl: DEFAULT_MIN_LEASE_TTL,
            cache_size: DEFAULT_CACHE_SIZE,
            quota_backend_bytes: Some(crate::alarm::DEFAULT_QUOTA_BACKEND_BYTES),
            member_id: DEFAULT_MEMBER_ID,
            disk_stats: Arc::default(),
        }
    }

    /// Directory of the fjall database. Created if missing.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// When a write is acknowledged. Default = [`Durability::Fsync`].
    #[must_use]
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Sets [`Self::durability`].
    #[must_use]
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Rows deleted per physical compaction batch. Default = 1000 (etcd
    /// `defaultCompactionBatchLimit`); range [`COMPACTION_BATCH_LIMIT_RANGE`].
    #[must_use]
    pub fn compaction_batch_limit(&self) -> usize {
        self.compaction_batch_limit
    }

    /// Sets [`Self::compaction_batch_limit`].
    ///
    /// # Panics
    /// If `rows` is outside [`COMPACTION_BATCH_LIMIT_RANGE`].
    #[must_use]
    #[track_caller]
    pub fn with_compaction_batch_limit(mut self, rows: usize) -> Self {
        self.compaction_batch_limit = check_range("compaction_batch_limit", rows, &COMPACTION_BATCH_LIMIT_RANGE);
        self
    }

    /// Pause between physical compaction batches. Default = 10 ms (etcd
    /// `defaultCompactionSleepInterval`); range [`COMPACTION_SLEEP_INTERVAL_MS_RANGE`], zero
    /// meaning no pause.
    #[must_use]
    pub fn compaction_sleep_interval(&self) -> Duration {
        self.compaction_sleep_interval
    }

    /// Sets [`Self::compaction_sleep_interval`].
    ///
    /// # Panics
    /// If `pause` is outside [`COMPACTION_SLEEP_INTERVAL_MS_RANGE`] milliseconds.
    #[must_use]
    #[track_caller]
    pub fn with_compaction_sleep_interval(mut self, pause: Duration) -> Self {
        self.compaction_sleep_interval =
            check_ms_range("compaction_sleep_interval", pause, &COMPACTION_SLEEP_INTERVAL_MS_RANGE);
        self
    }

    /// Maximum operations in one compare / success / failure list of a txn. Default = 128 (etcd
    /// `DefaultMaxTxnOps`, flag `--max-txn-ops`); range [`MAX_TXN_OPS_RANGE`].
    #[must_use]
    pub fn max_txn_ops(&self) -> usize {
        self.max_txn_ops
    }

    /// Sets [`Self::max_txn_ops`].
    ///
    /// # Panics
    /// If `ops` is outside [`MAX_TXN_OPS_RANGE`].
    #[must_use]
    #[track_caller]
    pub fn with_max_txn_ops(mut self, ops: usize) -> Self {
        self.max_txn_ops = check_range("max_txn_ops", ops, &MAX_TXN_OPS_RANGE);
        self
    }

    /// Rows decoded per chunk when the index is rebuilt on open. Default = 10000 (etcd
    /// `restoreChunkKeys`); range [`RESTORE_CHUNK_KEYS_RANGE`].
    #[must_use]
    pub fn restore_chunk_keys(&self) -> usize {
        self.restore_chunk_keys
    }

    /// Sets [`Self::restore_chunk_keys`].
    ///
    /// # Panics
    /// If `rows` is outside [`RESTORE_CHUNK_KEYS_RANGE`].
    #[must_use]
    #[track_caller]
    pub fn with_restore_chunk_keys(mut self, rows: usize) -> Self {
        self.restore_chunk_keys = check_range("restore_chunk_keys", rows, &RESTORE_CHUNK_KEYS_RANGE);
        self
    }

    /// Smallest lease TTL in seconds; shorter grants are raised to it. Default = 2 (etcd
    /// `minTTL` with its default heartbeat and election timeout); range
    /// [`MIN_LEASE_TTL_RANGE`].
    #[must_use]
    pub fn min_lease_ttl(&self) -> i64 {
        self.min_lease_ttl
    }

    /// Sets [`Self::min_lease_ttl`].
    ///
    /// # Panics
    /// If `seconds` is outside [`MIN_LEASE_TTL_RANGE`].
    #[must_use]
    #[track_caller]
    pub fn with_min_lease_ttl(mut self, seconds: i64) -> Self {
        self.min_lease_ttl = check_range("min_lease_ttl", seconds, &MIN_LEASE_TTL_RANGE);
        self
    }

    /// fjall block cache size in bytes. Default = 64 MiB (no etcd counterpart: bbolt relies on
    /// the page cache); range [`CACHE_SIZE_RANGE`].
    #[must_use]
    pub fn cache_size(&self) -> u64 {
        self.cache_size
    }

    /// Sets [`Self::cache_size`].
    ///
    /// # Panics
    /// If `bytes` is outside [`CACHE_SIZE_RANGE`].
    #[must_use]
    #[track_caller]
    pub fn with_cache_size(mut self, bytes: u64) -> Self {
        self.cache_size = check_range("cache_size", bytes, &CACHE_SIZE_RANGE);
        self
    }

    /// The space quota: once the store's files would take more than this many bytes, a write
    /// that adds data raises the `NOSPACE` alarm and is refused (etcd `--quota-backend-bytes`).
    /// Default = 2 GiB, etcd's; `None` = no quota.
    #[must_use]
    pub fn quota_backend_bytes(&self) -> Option<u64> {
        self.quota_backend_bytes
    }

    /// Sets [`Self::quota_backend_bytes`].
    #[must_use]
    pub fn with_quota_backend_bytes(mut self, bytes: Option<u64>) -> Self {
        self.quota_backend_bytes = bytes;
        self
    }

    /// The member id the store raises its own alarms under, and that response headers report.
    /// Default = [`DEFAULT_MEMBER_ID`].
    #[must_use]
    pub fn member_id(&self) -> u64 {
        self.member_id
    }

    /// Sets [`Self::member_id`].
    #[must_use]
    pub fn with_member_id(mut self, id: u64) -> Self {
        self.member_id = id;
        self
    }

    /// Where stores opened with this configuration (and its clones) record their disk
    /// timings, for the metrics endpoint. Default: a new, empty [`DiskStats`] per
    /// [`Self::new`].
    #[must_use]
    pub fn disk_stats(&self) -> &Arc<DiskStats> {
        &self.disk_stats
    }
}

/// Tunables of the watch machinery (docs/etcd-semantics.md §0), with etcd's defaults. Every
/// setter panics outside the range it documents.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    chan_buf_len: usize,
    max_watchers_per_sync: usize,
    watch_resync_period: Duration,
    victim_retry_period: Duration,
    watch_batch_max_revs: usize,
    progress_notify_interval: Duration,
    max_response_bytes: usize,
    max_batch_bytes: usize,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            chan_buf_len: DEFAULT_CHAN_BUF_LEN,
            max_watchers_per_sync: DEFAULT_MAX_WATCHERS_PER_SYNC,
            watch_resync_period: Duration::from_millis(DEFAULT_WATCH_RESYNC_PERIOD_MS),
            victim_retry_period: Duration::from_millis(DEFAULT_VICTIM_RETRY_PERIOD_MS),
            watch_batch_max_revs: DEFAULT_WATCH_BATCH_MAX_REVS,
            progress_notify_interval: Duration::from_millis(DEFAULT_PROGRESS_NOTIFY_INTERVAL_MS),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
        }
    }
}

impl WatchConfig {
    /// Responses a stream holds for its client before further deliveries make victims (etcd
    /// `chanBufLen`, counted in responses as etcd's channel is; a stream that holds none takes
    /// one delivery of any size). Default = 128; range [`CHAN_BUF_LEN_RANGE`].
    #[must_use]
    pub fn chan_buf_len(&self) -> usize {
        self.chan_buf_len
    }

    /// Sets [`Self::chan_buf_len`].
    ///
    /// # Panics
    /// If `n` is outside [`CHAN_BUF_LEN_RANGE`].
    #[must_use]
    #[track_caller]
    pub fn with_chan_buf_len(mut self, n: usize) -> Self {
        self.chan_buf_len = check_range("chan_buf_len", n, &CHAN_BUF_LEN_RANGE);
        self
    }

    /// Unsynced watchers handled per catch-up pass. Default = 512 (etcd `maxWatchersPerSync`);
    /// range [`MAX_WATCHERS_PER_SYNC_RANGE`].
    #[must_use]
    pub fn max_watchers_per_sync(&self) -> usize {
        self.max_watchers_per_sync
    }

    /// Sets [`Self::max_watchers_per_sync`].
    ///
    /// # Panics
    /// If `n` is outside [`MAX_WATCHERS_PER_SYNC_RANGE`].
    #[must_use]
    #[track_caller]
    pub fn with_max_watchers_per_sync(mut self, n: usize) -> Self {
        self.max_watchers_per_sync = check_range("max_watchers_per_sync", n, &MAX_WATCHERS_PER_SYNC_RANGE);
        self
    }

    /// Period of the catch-up loop. Default = 100 ms (etcd `watchResyncPeriod`); range
    /// [`WATCH_RESYNC_PERIOD_MS_RANGE`] milliseconds.
    #[must_use]
    pub fn watch_resync_period(&self) -> Duration {
        self.watch_resync_period
    }

    /// Sets [`Self::watch_resync_period`].
    ///
    /// # Panics
    /// If `period` is outside [`WATCH_RESYNC_PERIOD_MS_RANGE`] milliseconds.
    #[must_use]
    #[track_caller]
    pub fn with_watch_resync_period(mut self, period: Duration) -> Self {
        self.watch_resync_period = check_ms_range("watch_resync_period", period, &WATCH_RESYNC_PERIOD_MS_RANGE);
        self
    }

    /// Period of the victim retry loop. Default = 10 ms (etcd, literal in
    /// `syncVictimsLoop`); range [`VICTIM_RETRY_PERIOD_MS_RANGE`] milliseconds.
    #[must_use]
    pub fn victim_retry_period(&self) -> Duration {
        self.victim_retry_period
    }

    /// Sets [`Self::victim_retry_period`].
    ///
    /// # Panics
    /// If `period` is outside [`VICTIM_RETRY_PERIOD_MS_RANGE`] milliseconds.
    #[must_use]
    #[track_caller]
    pub fn with_victim_retry_period(mut self, period: Duration) -> Self {
        self.victim_retry_period = check_ms_range("victim_retry_period", period, &VICTIM_RETRY_PERIOD_MS_RANGE);
        self
    }

    /// Most distinct revisions in one catch-up response. Default = 1000 (etcd
    /// `watchBatchMaxRevs`); range [`WATCH_BATCH_MAX_REVS_RANGE`].
    #[must_use]
    pub fn watch_batch_max_revs(&self) -> usize {
        self.watch_batch_max_revs
    }

    /// Sets [`Self::watch_batch_max_revs`].
    ///
    /// # Panics
    /// If `revs` is outside [`WATCH_BATCH_MAX_REVS_RANGE`].
    #[must_use]
    #[track_caller]
    pub fn with_watch_batch_max_revs(mut self, revs: usize) -> Self {
        self.watch_batch_max_revs = check_range("watch_batch_max_revs", revs, &WATCH_BATCH_MAX_REVS_RANGE);
        self
    }

    /// Most bytes of events the server joins into one response: a catch-up batch, a group
    /// commit's revisions for one watcher, the responses of a watcher that fell behind merged
    /// while they wait. A single revision larger than this still goes whole (a `fragment`
    /// watcher's transport splits it). etcd bounds those batches by revisions only, so 1000
    /// revisions of 5 KiB values make one response of 5 MiB, beyond what grpc-go and tonic
    /// clients decode by default (4 MiB). It also bounds what one stream holds encoded for its
    /// socket (docs/design.md, "Backpressure and batching"). Default = 128 KiB
    /// ([`DEFAULT_MAX_BATCH_BYTES`]); range [`MAX_BATCH_BYTES_RANGE`].
    #[must_use]
    pub fn max_batch_bytes(&self) -> usize {
        self.max_batch_bytes
    }

    /// Sets [`Self::max_batch_bytes`].
    ///
    /// # Panics
    /// If `bytes` is outside [`MAX_BATCH_BYTES_RANGE`].
    #[must_use]
    #[track_caller]
    pub fn with_max_batch_bytes(mut self, bytes: usize) -> Self {
        self.max_batch_bytes = check_range("max_batch_bytes", bytes, &MAX_BATCH_BYTES_RANGE);
        self
    }

    /// What one response may join: [`Self::watch_batch_max_revs`] revisions, and
    /// [`Self::max_batch_bytes`] of events but no more than [`Self::max_response_bytes`] (a
    /// batch is never made so large that a `fragment` watcher gets it in pieces).
    #[must_use]
    pub fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_revs: self.watch_batch_max_revs,
            max_bytes: self.max_batch_bytes.min(self.max_response_bytes),
        }
    }

    /// Period of progress notifications for watchers that asked for them. Default = 10 min
    /// (etcd `progressReportInterval`); range [`PROGRESS_NOTIFY_INTERVAL_MS_RANGE`]
    /// milliseconds.
    #[must_use]
    pub fn progress_notify_interval(&self) -> Duration {
        self.progress_notify_interval
    }

    /// Sets [`Self::progress_notify_interval`].
    ///
    /// # Panics
    /// If `interval` is outside [`PROGRESS_NOTIFY_INTERVAL_MS_RANGE`] milliseconds.
    #[must_use]
    #[track_caller]
    pub fn with_progress_notify_interval(mut self, interval: Duration) -> Self {
        self.progress_notify_interval =
            check_ms_range("progress_notify_interval", interval, &PROGRESS_NOTIFY_INTERVAL_MS_RANGE);
        self
    }

    /// Size above which a response to a `fragment` watcher is split. Default = 1.5 MiB + 512
    /// KiB = 2 MiB (etcd `maxRequestBytes + grpcOverheadBytes`); range
    /// [`MAX_RESPONSE_BYTES_RANGE`].
    #[must_use]
    pub fn max_response_bytes(&self) -> usize {
        self.max_response_bytes
    }

    /// Sets [`Self::max_response_bytes`] directly (tests use sizes below the gRPC overhead).
    ///
    /// # Panics
    /// If `bytes` is outside [`MAX_RESPONSE_BYTES_RANGE`].
    #[must_use]
    #[track_caller]
    pub fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = check_range("max_response_bytes", bytes, &MAX_RESPONSE_BYTES_RANGE);
        self
    }

    /// Sets [`Self::max_response_bytes`] from the largest request the server accepts, as etcd
    /// does: `max_request_bytes + GRPC_OVERHEAD_BYTES`. Default request size =
    /// [`DEFAULT_MAX_REQUEST_BYTES`] (etcd `--max-request-bytes`).
    ///
    /// # Panics
    /// If `max_request_bytes` is outside [`MAX_REQUEST_BYTES_RANGE`].
    #[must_use]
    #[track_caller]
    pub fn with_max_request_bytes(mut self, max_request_bytes: usize) -> Self {
        let request = check_range("max_request_bytes", max_request_bytes, &MAX_REQUEST_BYTES_RANGE);
        self.max_response_bytes = request + GRPC_OVERHEAD_BYTES;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_lie_in_their_ranges() {
        let s = StoreConfig::new("unused");
        assert!(COMPACTION_BATCH_LIMIT_RANGE.contains(&s.compaction_batch_limit()));
        assert!(MAX_TXN_OPS_RANGE.contains(&s.max_txn_ops()));
        assert!(RESTORE_CHUNK_KEYS_RANGE.contains(&s.restore_chunk_keys()));
        assert!(MIN_LEASE_TTL_RANGE.contains(&s.min_lease_ttl()));
        assert!(CACHE_SIZE_RANGE.contains(&s.cache_size()));
        assert!(COMPACTION_SLEEP_INTERVAL_MS_RANGE.contains(&DEFAULT_COMPACTION_SLEEP_INTERVAL_MS));
        let w = WatchConfig::default();
        assert!(CHAN_BUF_LEN_RANGE.contains(&w.chan_buf_len()));
        assert!(MAX_WATCHERS_PER_SYNC_RANGE.contains(&w.max_watchers_per_sync()));
        assert!(WATCH_BATCH_MAX_REVS_RANGE.contains(&w.watch_batch_max_revs()));
        assert!(WATCH_RESYNC_PERIOD_MS_RANGE.contains(&DEFAULT_WATCH_RESYNC_PERIOD_MS));
        assert!(VICTIM_RETRY_PERIOD_MS_RANGE.contains(&DEFAULT_VICTIM_RETRY_PERIOD_MS));
        assert!(PROGRESS_NOTIFY_INTERVAL_MS_RANGE.contains(&DEFAULT_PROGRESS_NOTIFY_INTERVAL_MS));
        assert!(MAX_REQUEST_BYTES_RANGE.contains(&DEFAULT_MAX_REQUEST_BYTES));
        assert!(MAX_BATCH_BYTES_RANGE.contains(&w.max_batch_bytes()));
        assert_eq!(w.max_response_bytes(), 2 << 20);
        assert_eq!(
            WatchConfig::default().with_max_request_bytes(DEFAULT_MAX_REQUEST_BYTES).max_response_bytes(),
            2 << 20
        );
    }

    #[test]
    fn batch_limits_never_exceed_the_fragment_size() {
        let w = WatchConfig::default();
        assert_eq!(w.batch_limits(), BatchLimits { max_revs: 1000, max_bytes: DEFAULT_MAX_BATCH_BYTES });
        let small = WatchConfig::default().with_max_response_bytes(4096).with_watch_batch_max_revs(7);
        assert_eq!(small.batch_limits(), BatchLimits { max_revs: 7, max_bytes: 4096 });
        let large = WatchConfig::default().with_max_batch_bytes(64 << 20).with_max_request_bytes(10 << 20);
        assert_eq!(large.batch_limits().max_bytes, (10 << 20) + GRPC_OVERHEAD_BYTES);
    }

    #[test]
    fn setters_keep_the_value_at_the_range_ends() {
        let w = WatchConfig::default()
            .with_chan_buf_len(1)
            .with_progress_notify_interval(Duration::from_millis(100))
            .with_max_response_bytes(*MAX_RESPONSE_BYTES_RANGE.end());
        assert_eq!(w.chan_buf_len(), 1);
        assert_eq!(w.progress_notify_interval(), Duration::from_millis(100));
        let s = StoreConfig::new("unused").with_compaction_sleep_interval(Duration::ZERO);
        assert_eq!(s.compaction_sleep_interval(), Duration::ZERO);
    }

    #[test]
    #[should_panic(expected = "chan_buf_len must be in 1..=65536, got 0")]
    fn a_count_below_its_range_panics_naming_the_setting() {
        let _ = WatchConfig::default().with_chan_buf_len(0);
    }

    #[test]
    #[should_panic(expected = "progress_notify_interval must be in 100..=86400000 ms")]
    fn a_duration_below_its_range_panics_naming_the_setting() {
        let _ = WatchConfig::default().with_progress_notify_interval(Duration::from_millis(99));
    }

    #[test]
    fn durability_prints_what_it_parses() {
        for d in [Durability::Fsync, Durability::Buffered] {
            assert_eq!(d.to_string().parse::<Durability>(), Ok(d));
        }
    }
}
