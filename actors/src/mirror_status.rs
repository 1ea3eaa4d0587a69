//! Owns [`UpstreamStatus`], what a mirror's follower (`crate::mirror`) records about its upstream
//! watch for `/health`, `Maintenance.Status` and `/metrics` to show: whether the watch is up,
//! on which endpoint, the last revision upstream reported, and when an upstream revision was
//! last applied. Atomics (as the store's revision clock), written by the follower only.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the upstream watch may stay down before `/health` reports the mirror unhealthy.
/// Shorter losses are the follower's ordinary resumes (a member restarting, a leader change:
/// the follower moves to the next endpoint within its backoff of at most 5 s); longer ones mean
/// the mirror's reads are getting stale and a probe should route clients elsewhere.
pub const UPSTREAM_DOWN_UNHEALTHY_AFTER: Duration = Duration::from_secs(10);

/// The follower's view of its upstream, shared with the transports through
/// [`crate::Handle::upstream_status`] (present only on a mirror).
#[derive(Debug)]
pub struct UpstreamStatus {
    /// The origin of the millisecond stamps below.
    origin: Instant,
    connected: AtomicBool,
    /// Milliseconds after `origin` at which the watch was last lost (or the follower started).
    down_since_ms: AtomicU64,
    /// Milliseconds after `origin` at which an upstream revision was last applied.
    applied_at_ms: AtomicU64,
    /// The highest revision upstream reported in a watch response header.
    upstream_revision: AtomicI64,
    /// The endpoint the follower is on, or trying.
    endpoint: Mutex<String>,
}

impl Default for UpstreamStatus {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            connected: AtomicBool::new(false),
            down_since_ms: AtomicU64::new(0),
            applied_at_ms: AtomicU64::new(0),
            upstream_revision: AtomicI64::new(0),
            endpoint: Mutex::new(String::new()),
        }
    }
}

/// One reading of [`UpstreamStatus`] against the mirror's applied revision.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamReport {
    /// Whether the upstream watch is up.
    pub connected: bool,
    /// The endpoint the follower is on, or trying (empty before its first try).
    pub endpoint: String,
    /// How long the watch has been down (zero while it is up).
    pub down_for: Duration,
    /// The mirror's applied revision.
    pub applied_revision: i64,
    /// The highest revision upstream reported in a watch response header.
    pub upstream_revision: i64,
    /// How many revisions upstream is ahead of the mirror (0 when it is not).
    pub lag_revisions: i64,
    /// How long since an upstream revision was last applied while upstream is ahead (0 when it
    /// is not).
    pub lag_seconds: f64,
}

impl UpstreamReport {
    /// The `Maintenance.Status` error line while the upstream watch is down (etcd puts
    /// "etcdserver: no leader"-style texts there), else `None`.
    #[must_use]
    pub fn status_error(&self) -> Option<String> {
        (!self.connected).then(|| {
            format!(
                "mirror: upstream {} lost for {}s; serving revision {}",
                self.endpoint_name(),
                self.down_for.as_secs(),
                self.applied_revision
            )
        })
    }

    /// `/health`'s reason once the upstream watch has been down for longer than
    /// [`UPSTREAM_DOWN_UNHEALTHY_AFTER`], else `None`.
    #[must_use]
    pub fn health_problem(&self) -> Option<String> {
        if self.connected || self.down_for <= UPSTREAM_DOWN_UNHEALTHY_AFTER {
            return None;
        }
        self.status_error()
    }

    fn endpoint_name(&self) -> &str {
        if self.endpoint.is_empty() {
            "(not tried yet)"
        } else {
            &self.endpoint
        }
    }
}

impl UpstreamStatus {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The follower is about to watch `endpoint`.
    pub fn trying(&self, endpoint: &str) {
        let mut current = self.endpoint.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        endpoint.clone_into(&mut current);
    }

    /// The upstream watch is up.
    pub fn connected(&self) {
        self.connected.store(true, Ordering::Release);
    }

    /// The upstream watch is down; the down time counts from its first loss.
    pub fn lost(&self) {
        if self.connected.swap(false, Ordering::AcqRel) {
            self.down_since_ms.store(self.now_ms(), Ordering::Release);
        }
    }

    /// Upstream reported `revision` in a watch response header.
    pub fn upstream_at(&self, revision: i64) {
        self.upstream_revision.fetch_max(revision, Ordering::AcqRel);
    }

    /// The follower applied upstream revisions just now.
    pub fn applied(&self) {
        self.applied_at_ms.store(self.now_ms(), Ordering::Release);
    }

    /// Reads the status against the mirror's `applied_revision`.
    #[must_use]
    pub fn report(&self, applied_revision: i64) -> UpstreamReport {
        let now = self.now_ms();
        let connected = self.connected.load(Ordering::Acquire);
        let down_for = if connected {
            Duration::ZERO
        } else {
            Duration::from_millis(now.saturating_sub(self.down_since_ms.load(Ordering::Acquire)))
        };
        let upstream_revision = self.upstream_revision.load(Ordering::Acquire);
        let lag_revisions = upstream_revision.saturating_sub(applied_revision).max(0);
        let lag_seconds = if lag_revisions > 0 {
            Duration::from_millis(now.saturating_sub(self.applied_at_ms.load(Ordering::Acquire))).as_secs_f64()
        } else {
            0.0
        };
        let endpoint = self.endpoint.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        UpstreamReport {
            connected,
            endpoint,
            down_for,
            applied_revision,
            upstream_revision,
            lag_revisions,
            lag_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_until_connected_then_lag_follows_upstreams_revision() {
        let status = UpstreamStatus::default();
        status.trying("http://a:2379");
        let down = status.report(5);
        assert!(!down.connected);
        assert!(down.status_error().is_some_and(|e| e.contains("http://a:2379")), "{down:?}");
        // Down for less than the threshold: still healthy.
        assert_eq!(down.health_problem(), None);

        status.connected();
        status.upstream_at(9);
        status.upstream_at(7);
        let behind = status.report(5);
        assert_eq!((behind.upstream_revision, behind.lag_revisions), (9, 4));
        assert_eq!(behind.status_error(), None);
        let caught_up = status.report(9);
        assert_eq!((caught_up.lag_revisions, caught_up.lag_seconds), (0, 0.0));

        status.lost();
        let lost = status.report(9);
        assert!(!lost.connected && lost.down_for < UPSTREAM_DOWN_UNHEALTHY_AFTER, "{lost:?}");
        let long_down = UpstreamReport { down_for: UPSTREAM_DOWN_UNHEALTHY_AFTER * 2, ..lost };
        assert!(long_down.health_problem().is_some_and(|p| p.contains("http://a:2379 lost for 20s")), "{long_down:?}");
    }
}
