//! The wait after the last put of a fan-out scenario, shared by the gateway and gRPC fan-outs:
//! until every watcher has every event it can still get, then a little longer for duplicates.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// What the watch streams of a scenario have received so far.
pub struct Received<'a> {
    /// Events received, over every watcher.
    pub events: &'a Cell<u64>,
    /// When the latest event arrived.
    pub last_event: &'a Cell<Option<Instant>>,
    /// Streams that failed.
    pub failed_streams: &'a Cell<u64>,
}

/// Waits until every watcher has an event for every put sent (`most`), or for every
/// acknowledged put (`expected`) with nothing more arriving for 1 s (a failed put may or may not
/// have been applied), or a stream failed, or `timeout`; then 300 ms more, to catch duplicates.
/// Returns whether it gave up before `expected` events arrived, and how long it waited.
pub async fn drain(received: Received<'_>, expected: u64, most: u64, timeout: Duration) -> (bool, f64) {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut timed_out = false;
    if most > 0 {
        loop {
            let got = received.events.get();
            let idle = received.last_event.get().is_none_or(|t| t.elapsed() > Duration::from_secs(1));
            if got >= most
                || (got >= expected && idle)
                || Instant::now() >= deadline
                || received.failed_streams.get() > 0
            {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        timed_out = received.events.get() < expected;
        actix_rt::time::sleep(Duration::from_millis(300)).await;
    }
    (timed_out, start.elapsed().as_secs_f64())
}
