//! Owns the runtime's tunables: [`ActorsConfig`] (the core's `StoreConfig` and `WatchConfig`
//! plus what only the actors use) and [`SlowConsumerPolicy`], in the core's style: a getter
//! named after each setting, a consuming `with_*` setter that checks its range and panics
//! outside it, and its default and range exported as `DEFAULT_*` / `*_RANGE` constants
//! (durations in the unit the name says: `*_MS`, `*_US`), so that the CLI takes its defaults
//! from here and rejects bad input with a clear error before a setter could panic.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use watchkv::{StoreConfig, WatchConfig};

use crate::sched::CatchUpPriority;

/// What to do with a watcher whose client stops reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowConsumerPolicy {
    /// etcd's: keep it parked as a victim for as long as it takes. Default.
    #[default]
    Keep,
    /// Cancel it (with a `cancel_reason` naming the cause) once more than `lag_revisions`
    /// revisions have been committed since it was parked, or it has been undeliverable for
    /// longer than `parked_for`, so a dead client cannot hold memory forever (etcd #16839).
    /// A watcher catching up from an old revision is not judged by how far behind it is.
    CancelAfter {
        /// Largest tolerated distance from the current revision, in
        /// [`SLOW_CONSUMER_LAG_RANGE`].
        lag_revisions: i64,
        /// Longest tolerated time parked.
        parked_for: Duration,
    },
}

/// Default of [`ActorsConfig::slow_consumer`]: etcd's behaviour.
pub const DEFAULT_SLOW_CONSUMER: SlowConsumerPolicy = SlowConsumerPolicy::Keep;
/// Valid `lag_revisions` of [`SlowConsumerPolicy::CancelAfter`].
pub const SLOW_CONSUMER_LAG_RANGE: RangeInclusive<i64> = 1..=i64::MAX;

/// Default of [`ActorsConfig::lease_tick`] in milliseconds.
pub const DEFAULT_LEASE_TICK_MS: u64 = 500;
/// Valid [`ActorsConfig::lease_tick`] periods in milliseconds.
pub const LEASE_TICK_MS_RANGE: RangeInclusive<u64> = 1..=60_000;

/// Default of [`ActorsConfig::max_watchers_per_stream`].
pub const DEFAULT_MAX_WATCHERS_PER_STREAM: usize = 10_000;
/// Valid [`ActorsConfig::max_watchers_per_stream`] values.
pub const MAX_WATCHERS_PER_STREAM_RANGE: RangeInclusive<usize> = 1..=10_000_000;

/// Default of [`ActorsConfig::ring_revisions`].
pub const DEFAULT_RING_REVISIONS: usize = 4096;
/// Valid [`ActorsConfig::ring_revisions`] values; 0 turns the ring off (every promoted watcher
/// that is behind catches up through the syncer).
pub const RING_REVISIONS_RANGE: RangeInclusive<usize> = 0..=1_000_000;

/// Default of [`ActorsConfig::stream_buffer_bytes`]: 256 KiB.
pub const DEFAULT_STREAM_BUFFER_BYTES: usize = 256 * 1024;
/// Valid [`ActorsConfig::stream_buffer_bytes`] values: 1 KiB to 1 GiB.
pub const STREAM_BUFFER_BYTES_RANGE: RangeInclusive<usize> = 1024..=1 << 30;

/// Default of [`ActorsConfig::store_mailbox`].
pub const DEFAULT_STORE_MAILBOX: usize = 1024;
/// Valid [`ActorsConfig::store_mailbox`] values.
pub const STORE_MAILBOX_RANGE: RangeInclusive<usize> = 1..=65_536;

/// Default of [`ActorsConfig::catch_up_priority`].
pub const DEFAULT_CATCH_UP_PRIORITY: CatchUpPriority = CatchUpPriority::Idle;

/// Default of [`ActorsConfig::store_time_slice`] in microseconds: the shortest the kernel
/// grants.
pub const DEFAULT_STORE_TIME_SLICE_US: u64 = 100;
/// Valid [`ActorsConfig::store_time_slice`] values in microseconds: what Linux accepts as a
/// custom slice (`sched_attr.sched_runtime`, 100 µs to 100 ms).
pub const STORE_TIME_SLICE_US_RANGE: RangeInclusive<u64> = 100..=100_000;

/// Default of [`ActorsConfig::idle_poll`] in microseconds (Seastar's `--idle-poll-time-us`
/// default; the one-client put measured in docs/benchmarks.md).
pub const DEFAULT_IDLE_POLL_US: u64 = 200;
/// Valid [`ActorsConfig::idle_poll`] values in microseconds (0 = off).
pub const IDLE_POLL_US_RANGE: RangeInclusive<u64> = 0..=10_000;

/// Valid bcrypt costs (bcrypt's own bounds, as etcd's `--bcrypt-cost`).
pub const BCRYPT_COST_RANGE: RangeInclusive<u32> = 4..=31;

/// Panics unless `value` lies in `range`, naming the setting (the core's style: a bad value is
/// the caller's bug; a CLI checks user input against the same `*_RANGE` constant first).
#[track_caller]
fn check_range<T: PartialOrd + fmt::Debug>(setting: &str, value: T, range: &RangeInclusive<T>) -> T {
    assert!(range.contains(&value), "{setting} must be in {range:?}, got {value:?}");
    value
}

/// [`check_range`] for a duration against a range in `unit`s (`from_unit` converts).
#[track_caller]
fn check_duration(
    setting: &str,
    value: Duration,
    range: &RangeInclusive<u64>,
    unit: &str,
    from_unit: fn(u64) -> Duration,
) -> Duration {
    let bounds = from_unit(*range.start())..=from_unit(*range.end());
    assert!(bounds.contains(&value), "{setting} must be in {range:?} {unit}, got {value:?}");
    value
}

/// Configuration of the runtime. Every setter panics outside the range it documents.
///
/// ```
/// use std::time::Duration;
/// use watchkv_actors::watchkv::{Durability, StoreConfig, WatchConfig};
/// use watchkv_actors::ActorsConfig;
///
/// let config = ActorsConfig::new("/tmp/watchkv-data")
///     .with_store(StoreConfig::new("/tmp/watchkv-data").with_durability(Durability::Buffered))
///     .with_watch(WatchConfig::default().with_chan_buf_len(256))
///     .with_lease_tick(Some(Duration::from_millis(100)));
/// assert_eq!(config.watch().chan_buf_len(), 256);
/// ```
#[derive(Debug, Clone)]
pub struct ActorsConfig {
    store: StoreConfig,
    watch: WatchConfig,
    slow_consumer: SlowConsumerPolicy,
    lease_tick: Option<Duration>,
    max_watchers_per_stream: usize,
    ring_revisions: usize,
    store_mailbox: usize,
    stream_buffer_bytes: usize,
    manual_ticks: bool,
    catch_up_priority: CatchUpPriority,
    store_time_slice: Option<Duration>,
    idle_poll: Duration,
    auto_compaction: Option<watchkv::auto_compaction::AutoCompaction>,
    revision_compaction_interval: Duration,
    auth_token_ttl: Duration,
    bcrypt_cost: u32,
    integrity_check_interval: Option<Duration>,
    mirror: bool,
}

impl ActorsConfig {
    /// Returns the default configuration for a store in `path`.
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            store: StoreConfig::new(path),
            watch: WatchConfig::default(),
            slow_consumer: DEFAULT_SLOW_CONSUMER,
            lease_tick: Some(Duration::from_millis(DEFAULT_LEASE_TICK_MS)),
            max_watchers_per_stream: DEFAULT_MAX_WATCHERS_PER_STREAM,
            ring_revisions: DEFAULT_RING_REVISIONS,
            store_mailbox: DEFAULT_STORE_MAILBOX,
            stream_buffer_bytes: DEFAULT_STREAM_BUFFER_BYTES,
            manual_ticks: false,
            catch_up_priority: DEFAULT_CATCH_UP_PRIORITY,
            store_time_slice: Some(Duration::from_micros(DEFAULT_STORE_TIME_SLICE_US)),
            idle_poll: Duration::from_micros(DEFAULT_IDLE_POLL_US),
            auto_compaction: None,
            revision_compaction_interval: watchkv::auto_compaction::REVISION_CHECK_INTERVAL,
            auth_token_ttl: crate::api::auth::DEFAULT_TOKEN_TTL,
            bcrypt_cost: crate::api::auth::DEFAULT_BCRYPT_COST,
            integrity_check_interval: None,
            mirror: false,
        }
    }

    /// Whether the store is a mirror of an upstream etcd (`crate::mirror`): client writes and
    /// lease grants reaching the [`crate::Handle`] are refused with `etcdserver: mirror: writes
    /// go to upstream` (the gRPC services forward them first: `crate::forward`), and only the
    /// mirror's follower moves the revision. Default: off.
    #[must_use]
    pub fn is_mirror(&self) -> bool {
        self.mirror
    }

    /// Sets whether the store is a mirror ([`Self::is_mirror`]).
    #[must_use]
    pub fn with_mirror(mut self, mirror: bool) -> Self {
        self.mirror = mirror;
        self
    }

    /// How often the integrity self-check hashes the store's history and compares it with the
    /// reference taken after the last compaction (`crate::integrity_checker`; etcd's
    /// `--experimental-corrupt-check-time`). Default = off, as in etcd: each check reads the
    /// whole history up to its revision.
    #[must_use]
    pub fn integrity_check_interval(&self) -> Option<Duration> {
        self.integrity_check_interval
    }

    /// Sets [`Self::integrity_check_interval`].
    ///
    /// # Panics
    /// If the interval is zero.
    #[must_use]
    #[track_caller]
    pub fn with_integrity_check_interval(mut self, interval: Option<Duration>) -> Self {
        assert!(interval.is_none_or(|i| !i.is_zero()), "integrity_check_interval must be positive");
        self.integrity_check_interval = interval;
        self
    }

    /// How long an auth token may go unused before it expires (etcd `--auth-token-ttl`).
    /// Default = 300 s.
    #[must_use]
    pub fn auth_token_ttl(&self) -> Duration {
        self.auth_token_ttl
    }

    /// Sets [`Self::auth_token_ttl`].
    ///
    /// # Panics
    /// If `ttl` is zero.
    #[must_use]
    #[track_caller]
    pub fn with_auth_token_ttl(mut self, ttl: Duration) -> Self {
        assert!(!ttl.is_zero(), "auth_token_ttl must be positive");
        self.auth_token_ttl = ttl;
        self
    }

    /// The bcrypt cost of new password hashes (etcd `--bcrypt-cost`). Default = 10; range
    /// [`BCRYPT_COST_RANGE`].
    #[must_use]
    pub fn bcrypt_cost(&self) -> u32 {
        self.bcrypt_cost
    }

    /// Sets [`Self::bcrypt_cost`].
    ///
    /// # Panics
    /// If `cost` is outside [`BCRYPT_COST_RANGE`].
    #[must_use]
    #[track_caller]
    pub fn with_bcrypt_cost(mut self, cost: u32) -> Self {
        self.bcrypt_cost = check_range("bcrypt_cost", cost, &BCRYPT_COST_RANGE);
        self
    }

    /// Automatic compaction (etcd's `--auto-compaction-mode`/`--auto-compaction-retention`,
    /// `watchkv::auto_compaction`). Default = off, as in etcd.
    #[must_use]
    pub fn auto_compaction(&self) -> Option<watchkv::auto_compaction::AutoCompaction> {
        self.auto_compaction
    }

    /// Sets [`Self::auto_compaction`].
    #[must_use]
    pub fn with_auto_compaction(mut self, policy: Option<watchkv::auto_compaction::AutoCompaction>) -> Self {
        self.auto_compaction = policy;
        self
    }

    /// How often a `revision` auto-compaction policy looks at the current revision. Default =
    /// etcd's five minutes (`revision.go` `revInterval`, a constant there, so no flag sets it
    /// here either): a seam for tests, which cannot wait that long. A `periodic` policy's
    /// intervals follow its retention and do not change.
    #[must_use]
    pub fn revision_compaction_interval(&self) -> Duration {
        self.revision_compaction_interval
    }

    /// Sets [`Self::revision_compaction_interval`].
    ///
    /// # Panics
    /// If the interval is zero.
    #[must_use]
    #[track_caller]
    pub fn with_revision_compaction_interval(mut self, interval: Duration) -> Self {
        assert!(!interval.is_zero(), "revision_compaction_interval must be positive");
        self.revision_compaction_interval = interval;
        self
    }

    /// The store's configuration. Default = `StoreConfig::new(path)`.
    #[must_use]
    pub fn store(&self) -> &StoreConfig {
        &self.store
    }

    /// Sets [`Self::store`].
    #[must_use]
    pub fn with_store(mut self, store: StoreConfig) -> Self {
        self.store = store;
        self
    }

    /// The watch tunables. Default = `WatchConfig::default()` (etcd's values).
    #[must_use]
    pub fn watch(&self) -> &WatchConfig {
        &self.watch
    }

    /// Sets [`Self::watch`].
    #[must_use]
    pub fn with_watch(mut self, watch: WatchConfig) -> Self {
        self.watch = watch;
        self
    }

    /// Slow-consumer policy. Default = [`SlowConsumerPolicy::Keep`] ([`DEFAULT_SLOW_CONSUMER`]).
    #[must_use]
    pub fn slow_consumer(&self) -> SlowConsumerPolicy {
        self.slow_consumer
    }

    /// Sets [`Self::slow_consumer`].
    ///
    /// # Panics
    /// If a `CancelAfter` policy's `lag_revisions` is outside [`SLOW_CONSUMER_LAG_RANGE`].
    #[must_use]
    #[track_caller]
    pub fn with_slow_consumer(mut self, policy: SlowConsumerPolicy) -> Self {
        if let SlowConsumerPolicy::CancelAfter { lag_revisions, .. } = policy {
            check_range("slow_consumer lag_revisions", lag_revisions, &SLOW_CONSUMER_LAG_RANGE);
        }
        self.slow_consumer = policy;
        self
    }

    /// How often due leases are expired; `None` = only by an explicit `LeaseTick`. Default =
    /// 500 ms ([`DEFAULT_LEASE_TICK_MS`]); range [`LEASE_TICK_MS_RANGE`] milliseconds.
    #[must_use]
    pub fn lease_tick(&self) -> Option<Duration> {
        self.lease_tick
    }

    /// Sets [`Self::lease_tick`].
    ///
    /// # Panics
    /// If `period` is outside [`LEASE_TICK_MS_RANGE`] milliseconds.
    #[must_use]
    #[track_caller]
    pub fn with_lease_tick(mut self, period: Option<Duration>) -> Self {
        self.lease_tick =
            period.map(|p| check_duration("lease_tick", p, &LEASE_TICK_MS_RANGE, "ms", Duration::from_millis));
        self
    }

    /// Most watchers one stream may hold. Default = 10000
    /// ([`DEFAULT_MAX_WATCHERS_PER_STREAM`]); range [`MAX_WATCHERS_PER_STREAM_RANGE`].
    #[must_use]
    pub fn max_watchers_per_stream(&self) -> usize {
        self.max_watchers_per_stream
    }

    /// Sets [`Self::max_watchers_per_stream`].
    ///
    /// # Panics
    /// If `n` is outside [`MAX_WATCHERS_PER_STREAM_RANGE`].
    #[must_use]
    #[track_caller]
    pub fn with_max_watchers_per_stream(mut self, n: usize) -> Self {
        self.max_watchers_per_stream = check_range("max_watchers_per_stream", n, &MAX_WATCHERS_PER_STREAM_RANGE);
        self
    }

    /// Revisions kept in memory to replay to promoted watchers. Default = 4096
    /// ([`DEFAULT_RING_REVISIONS`]); range [`RING_REVISIONS_RANGE`].
    #[must_use]
    pub fn ring_revisions(&self) -> usize {
        self.ring_revisions
    }

    /// Sets [`Self::ring_revisions`].
    ///
    /// # Panics
    /// If `revisions` is outside [`RING_REVISIONS_RANGE`].
    #[must_use]
    #[track_caller]
    pub fn with_ring_revisions(mut self, revisions: usize) -> Self {
        self.ring_revisions = check_range("ring_revisions", revisions, &RING_REVISIONS_RANGE);
        self
    }

    /// Capacity of the store's mailbox; callers wait when it is full. Default = 1024
    /// ([`DEFAULT_STORE_MAILBOX`]); range [`STORE_MAILBOX_RANGE`].
    #[must_use]
    pub fn store_mailbox(&self) -> usize {
        self.store_mailbox
    }

    /// Sets [`Self::store_mailbox`].
    ///
    /// # Panics
    /// If `messages` is outside [`STORE_MAILBOX_RANGE`].
    #[must_use]
    #[track_caller]
    pub fn with_store_mailbox(mut self, messages: usize) -> Self {
        self.store_mailbox = check_range("store_mailbox", messages, &STORE_MAILBOX_RANGE);
        self
    }

    /// The encoded bytes of the responses a stream may hold for its client before further
    /// deliveries make victims, beside `WatchConfig::chan_buf_len`'s count of responses: a
    /// catch-up or victim response may carry `watch_batch_max_revs` revisions, so a count alone
    /// does not bound memory. A stream that holds nothing takes one delivery of any size.
    /// Default = 256 KiB ([`DEFAULT_STREAM_BUFFER_BYTES`]); range [`STREAM_BUFFER_BYTES_RANGE`].
    #[must_use]
    pub fn stream_buffer_bytes(&self) -> usize {
        self.stream_buffer_bytes
    }

    /// Sets [`Self::stream_buffer_bytes`].
    ///
    /// # Panics
    /// If `bytes` is outside [`STREAM_BUFFER_BYTES_RANGE`].
    #[must_use]
    #[track_caller]
    pub fn with_stream_buffer_bytes(mut self, bytes: usize) -> Self {
        self.stream_buffer_bytes = check_range("stream_buffer_bytes", bytes, &STREAM_BUFFER_BYTES_RANGE);
        self
    }

    /// Whether every timer (catch-up, victim retry, progress, catch-up read retry) is off, so
    /// that tests send the ticks by hand, as etcd's tests call `syncWatchers()`. Default =
    /// `false`.
    #[must_use]
    pub fn manual_ticks(&self) -> bool {
        self.manual_ticks
    }

    /// Sets [`Self::manual_ticks`].
    #[must_use]
    pub fn with_manual_ticks(mut self, manual: bool) -> Self {
        self.manual_ticks = manual;
        self
    }

    /// How the syncer's thread competes for the CPU (Linux), so that a long catch-up yields the
    /// CPU to writes and live delivery when cores are short and still uses every idle cycle.
    /// Default = [`CatchUpPriority::Idle`] ([`DEFAULT_CATCH_UP_PRIORITY`]); see
    /// [`crate::sched`].
    #[must_use]
    pub fn catch_up_priority(&self) -> CatchUpPriority {
        self.catch_up_priority
    }

    /// Sets [`Self::catch_up_priority`] (a `Nice` value is checked when it is parsed).
    #[must_use]
    pub fn with_catch_up_priority(mut self, priority: CatchUpPriority) -> Self {
        self.catch_up_priority = priority;
        self
    }

    /// Time slice requested for the store's thread (Linux 6.12 and later), shorter than the
    /// default so that the store, woken by a write, preempts a stream thread's delivery burst
    /// instead of waiting up to a whole slice behind it; `None` leaves the kernel's default.
    /// Default = 100 µs ([`DEFAULT_STORE_TIME_SLICE_US`]); range
    /// [`STORE_TIME_SLICE_US_RANGE`] microseconds.
    #[must_use]
    pub fn store_time_slice(&self) -> Option<Duration> {
        self.store_time_slice
    }

    /// Sets [`Self::store_time_slice`].
    ///
    /// # Panics
    /// If `slice` is outside [`STORE_TIME_SLICE_US_RANGE`] microseconds.
    #[must_use]
    #[track_caller]
    pub fn with_store_time_slice(mut self, slice: Option<Duration>) -> Self {
        self.store_time_slice = slice
            .map(|s| check_duration("store_time_slice", s, &STORE_TIME_SLICE_US_RANGE, "µs", Duration::from_micros));
        self
    }

    /// How long a client-port thread or the store's thread keeps polling for work, instead of
    /// sleeping, after a write, whose answer or next write is likely within microseconds (a
    /// write sent on to the store, its answer given, a commit made), while the machine has CPU
    /// to spare (no CPU quota on its cgroup; while watch events flow, little CPU pressure);
    /// `Duration::ZERO` = off. Saves the wake-ups of a request's hops between threads, which
    /// cost more than the store's own work on a machine whose idle CPUs halt. One setting for
    /// the process: the last system started sets it. An embedder's threads poll too when they
    /// wait on the store from a single-threaded runtime (an actix-web worker calling
    /// [`crate::Handle`]), as the server's own client-port threads do. Default = 200 µs
    /// ([`DEFAULT_IDLE_POLL_US`]); range [`IDLE_POLL_US_RANGE`] microseconds. See
    /// [`crate::idle_poll`].
    #[must_use]
    pub fn idle_poll(&self) -> Duration {
        self.idle_poll
    }

    /// Sets [`Self::idle_poll`].
    ///
    /// # Panics
    /// If `window` is outside [`IDLE_POLL_US_RANGE`] microseconds.
    #[must_use]
    #[track_caller]
    pub fn with_idle_poll(mut self, window: Duration) -> Self {
        self.idle_poll = check_duration("idle_poll", window, &IDLE_POLL_US_RANGE, "µs", Duration::from_micros);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_lie_in_their_ranges() {
        let c = ActorsConfig::new("unused");
        assert!(MAX_WATCHERS_PER_STREAM_RANGE.contains(&c.max_watchers_per_stream()));
        assert!(RING_REVISIONS_RANGE.contains(&c.ring_revisions()));
        assert!(STORE_MAILBOX_RANGE.contains(&c.store_mailbox()));
        assert!(STREAM_BUFFER_BYTES_RANGE.contains(&c.stream_buffer_bytes()));
        assert!(LEASE_TICK_MS_RANGE.contains(&DEFAULT_LEASE_TICK_MS));
        assert!(STORE_TIME_SLICE_US_RANGE.contains(&DEFAULT_STORE_TIME_SLICE_US));
        assert_eq!(c.idle_poll(), Duration::from_micros(DEFAULT_IDLE_POLL_US));
        assert!(IDLE_POLL_US_RANGE.contains(&DEFAULT_IDLE_POLL_US));
        assert_eq!(c.slow_consumer(), SlowConsumerPolicy::Keep);
        assert_eq!(c.catch_up_priority(), CatchUpPriority::Idle);
        assert!(!c.manual_ticks());
    }

    #[test]
    fn setters_keep_the_value_at_the_range_ends() {
        let c = ActorsConfig::new("unused")
            .with_ring_revisions(0)
            .with_store_mailbox(*STORE_MAILBOX_RANGE.end())
            .with_stream_buffer_bytes(*STREAM_BUFFER_BYTES_RANGE.start())
            .with_lease_tick(None)
            .with_store_time_slice(Some(Duration::from_micros(100)))
            .with_idle_poll(Duration::ZERO)
            .with_slow_consumer(SlowConsumerPolicy::CancelAfter { lag_revisions: 1, parked_for: Duration::ZERO });
        assert_eq!(c.ring_revisions(), 0);
        assert_eq!(c.store_mailbox(), 65_536);
        assert_eq!(c.stream_buffer_bytes(), 1024);
        assert_eq!(c.lease_tick(), None);
        assert_eq!(c.store_time_slice(), Some(Duration::from_micros(100)));
        assert_eq!(c.idle_poll(), Duration::ZERO);
        assert_eq!(c.with_idle_poll(Duration::from_millis(10)).idle_poll(), Duration::from_millis(10));
    }

    #[test]
    #[should_panic(expected = "idle_poll must be in 0..=10000 µs")]
    fn an_idle_poll_above_its_range_panics() {
        let _ = ActorsConfig::new("unused").with_idle_poll(Duration::from_micros(10_001));
    }

    #[test]
    #[should_panic(expected = "max_watchers_per_stream must be in 1..=10000000, got 0")]
    fn a_count_below_its_range_panics_naming_the_setting() {
        let _ = ActorsConfig::new("unused").with_max_watchers_per_stream(0);
    }

    #[test]
    #[should_panic(expected = "store_time_slice must be in 100..=100000 µs")]
    fn a_duration_below_its_range_panics_naming_the_setting() {
        let _ = ActorsConfig::new("unused").with_store_time_slice(Some(Duration::from_micros(50)));
    }

    #[test]
    #[should_panic(expected = "slow_consumer lag_revisions must be in 1..=")]
    fn a_slow_consumer_lag_of_zero_panics() {
        let _ = ActorsConfig::new("unused")
            .with_slow_consumer(SlowConsumerPolicy::CancelAfter { lag_revisions: 0, parked_for: Duration::ZERO });
    }
}
