//! The fake clients at the end of the watch streams: counting sinks that accept every response at
//! once, a stalling sink that stops reading on demand, and the shared [`Progress`] they count in.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::Notify;
use watchkv::watch::response::WatchResponse;
use watchkv_actors::sink::{SinkClosed, SinkSend, WatchSink};

/// What a set of sinks received, counted with atomics; a waiter is woken once a target is hit.
pub struct Progress {
    events: AtomicU64,
    responses: AtomicU64,
    created: AtomicU64,
    pub events_target: AtomicU64,
    created_target: AtomicU64,
    notify: Notify,
}

/// How long any wait may take before the bench gives up with a panic.
pub const WAIT_LIMIT: Duration = Duration::from_secs(120);

impl Progress {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            events: AtomicU64::new(0),
            responses: AtomicU64::new(0),
            created: AtomicU64::new(0),
            events_target: AtomicU64::new(u64::MAX),
            created_target: AtomicU64::new(u64::MAX),
            notify: Notify::new(),
        })
    }

    fn record(&self, r: &WatchResponse) {
        self.responses.fetch_add(1, Ordering::Relaxed);
        if r.created {
            let n = self.created.fetch_add(1, Ordering::AcqRel) + 1;
            if n >= self.created_target.load(Ordering::Acquire) {
                self.notify.notify_one();
            }
        }
        let k = r.events.len() as u64;
        if k > 0 {
            let n = self.events.fetch_add(k, Ordering::AcqRel) + k;
            if n >= self.events_target.load(Ordering::Acquire) {
                self.notify.notify_one();
            }
        }
    }

    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Acquire)
    }

    pub fn created(&self) -> u64 {
        self.created.load(Ordering::Acquire)
    }

    pub async fn wait_events(&self, target: u64) {
        self.wait("events", &self.events, &self.events_target, target).await;
    }

    pub async fn wait_created(&self, target: u64) {
        self.wait("created responses", &self.created, &self.created_target, target).await;
    }

    async fn wait(&self, what: &str, counter: &AtomicU64, target_slot: &AtomicU64, target: u64) {
        target_slot.store(target, Ordering::Release);
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let mut notified = pin!(self.notify.notified());
            notified.as_mut().enable();
            let n = counter.load(Ordering::Acquire);
            if n >= target {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                actix_rt::time::timeout(left, notified).await.is_ok(),
                "timed out waiting for {target} {what}; have {}",
                counter.load(Ordering::Acquire)
            );
        }
        target_slot.store(u64::MAX, Ordering::Release);
    }
}

/// A client that reads instantly: counts and accepts every response.
pub struct CountingSink(pub Arc<Progress>);

impl WatchSink for CountingSink {
    fn send(&self, response: WatchResponse) -> BoxFuture<'static, Result<(), SinkClosed>> {
        self.0.record(&response);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Accepts at once without a boxed future, as a transport with a real `try_send` does, so
    /// the figures count the runtime's work and not the bench's allocations.
    fn start_send(&self, response: WatchResponse) -> SinkSend {
        self.0.record(&response);
        SinkSend::Done(Ok(()))
    }
}

/// A client that stops reading while its `stalled` flag is true: a send then completes only once
/// the flag is lowered (a bench that never lowers it has a client that never reads again).
pub struct StallingSink {
    pub progress: Arc<Progress>,
    pub stalled: tokio::sync::watch::Receiver<bool>,
}

impl WatchSink for StallingSink {
    fn send(&self, response: WatchResponse) -> BoxFuture<'static, Result<(), SinkClosed>> {
        if !*self.stalled.borrow() {
            self.progress.record(&response);
            return Box::pin(std::future::ready(Ok(())));
        }
        let mut stalled = self.stalled.clone();
        let progress = Arc::clone(&self.progress);
        Box::pin(async move {
            stalled.wait_for(|s| !*s).await.map_err(|_| SinkClosed)?;
            progress.record(&response);
            Ok(())
        })
    }
}
