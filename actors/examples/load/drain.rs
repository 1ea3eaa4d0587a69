//! The wait after the last put of a fan-out scenario, shared by the gateway and gRPC fan-outs:
//! until every watcher has every event it can still get, then a little longer for duplicates.

use std::time::{Duration, Instant};

/// What the watch streams of a scenario have received so far.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Events received, over every watcher.
    pub events: u64,
    /// When the latest event arrived.
    pub last_event: Option<Instant>,
    /// Streams that failed.
    pub failed_streams: u64,
}

/// Waits until every watcher has an event for every put sent (`most`), or for every
/// acknowledged put (`expected`) with nothing more arriving for 1 s (a failed put may or may not
/// have been applied), or a stream failed, or `timeout`; then 300 ms more, to catch duplicates.
/// `received` tells how far the streams are. Returns whether it gave up before `expected` events
/// arrived, and how long it waited.
pub async fn drain(received: impl Fn() -> Received, expected: u64, most: u64, timeout: Duration) -> (bool, f64) {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut timed_out = false;
    if most > 0 {
        loop {
            let now = received();
            let got = now.events;
            let idle = now.last_event.is_none_or(|t| t.elapsed() > Duration::from_secs(1));
            if got >= most || (got >= expected && idle) || Instant::now() >= deadline || now.failed_streams > 0 {
                break;
            }
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
        timed_out = received().events < expected;
        actix_rt::time::sleep(Duration::from_millis(300)).await;
    }
    (timed_out, start.elapsed().as_secs_f64())
}
