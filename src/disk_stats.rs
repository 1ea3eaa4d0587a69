//! Owns the disk timings a store records for monitoring: how long each journal sync and each
//! commit of written rows took, counted in etcd's histogram buckets (etcd: wal/metrics.go
//! `walFsyncSec`, mvcc/backend/metrics.go `commitSec`) so that dashboards and alerts written
//! for etcd read them unchanged.
//!
//! The counters are atomics: the store's thread records, a metrics scrape on another thread
//! reads, and neither waits for the other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the finite buckets, in seconds: 1 ms doubling to 8.192 s, etcd's
/// `prometheus.ExponentialBuckets(0.001, 2, 14)` for both histograms.
pub const BUCKET_BOUNDS_SECS: [f64; 14] =
    [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192];

/// A histogram of durations in [`BUCKET_BOUNDS_SECS`], plus one bucket for what is slower.
#[derive(Debug, Default)]
pub struct DurationHistogram {
    /// Observations per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; BUCKET_BOUNDS_SECS.len() + 1],
    /// The sum of every observation, in nanoseconds.
    sum_nanos: AtomicU64,
}

/// What a [`DurationHistogram`] held when it was read.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// The sum of every observation, in seconds.
    pub sum_secs: f64,
    /// Observations.
    pub count: u64,
    /// Observations per bucket, not cumulative, with its upper bound in seconds; the last
    /// bound is `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
}

impl DurationHistogram {
    /// Counts one observation.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKET_BOUNDS_SECS.iter().position(|&bound| secs <= bound).unwrap_or(BUCKET_BOUNDS_SECS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Reads the counts. A scrape that runs while an observation is recorded may see its bucket
    /// and not yet its sum, as with Prometheus' own histograms.
    #[must_use]
    pub fn snapshot(&self) -> HistogramSnapshot {
        let buckets: Vec<(f64, u64)> = BUCKET_BOUNDS_SECS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            sum_secs: Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64(),
            count: buckets.iter().map(|&(_, n)| n).sum(),
            buckets,
        }
    }
}

/// The store's disk timings. One is shared by every store opened with the same
/// [`crate::StoreConfig`], so a store reopened after a storage failure goes on counting in it.
#[derive(Debug, Default)]
pub struct DiskStats {
    /// Each sync of the journal to the disk (`fdatasync`): etcd's
    /// `etcd_disk_wal_fsync_duration_seconds`. Only real syncs count: with
    /// [`crate::Durability::Buffered`] a group's persist hands the journal to the OS and is not
    /// counted.
    pub journal_sync: DurationHistogram,
    /// Each commit of written rows, from writing the batch to its sync: etcd's
    /// `etcd_disk_backend_commit_duration_seconds`.
    pub commit: DurationHistogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_holds_them() {
        let h = DurationHistogram::default();
        h.observe(Duration::from_micros(200));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_micros(1500));
        h.observe(Duration::from_secs(9));
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.buckets.len(), 15);
        assert_eq!(s.buckets[0], (0.001, 2), "a bound is inclusive, as Prometheus' `le`");
        assert_eq!(s.buckets[1], (0.002, 1));
        assert_eq!(s.buckets[14], (f64::INFINITY, 1));
        assert_eq!(s.buckets.iter().map(|&(_, n)| n).sum::<u64>(), 4);
        assert!((s.sum_secs - 9.0027).abs() < 1e-9, "{}", s.sum_secs);
    }

    #[test]
    fn an_empty_histogram_reads_zero() {
        let s = DurationHistogram::default().snapshot();
        assert_eq!((s.count, s.sum_secs), (0, 0.0));
        assert!(s.buckets.iter().all(|&(_, n)| n == 0));
    }
}
