//! Shared fixtures for the runtime's message-driven tests: a system in a temporary directory,
//! a `Recorder` actor that stands for a client stream, and waits with generous deadlines.
#![allow(dead_code)]

pub mod checker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use watchkv::watch::response::WatchResponse;
use watchkv::{Durability, KeyRange, PutRequest};
use watchkv_actors::sink::StreamOutput;
use watchkv_actors::stream_actor::{CancelWatch, CreateWatch, RequestStreamProgress, StreamActor, WatchCreate};
use watchkv_actors::{ActorsConfig, Handle};

/// How long a test waits for something it expects before failing. Generous: CI machines are
/// small and noisy.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A running system and the directory it lives in.
pub struct TestSystem {
    pub handle: Handle,
    pub dir: tempfile::TempDir,
}

/// Test configuration: buffered durability, no lease timer, timers on unless `manual`.
pub fn config(dir: &std::path::Path, manual: bool) -> ActorsConfig {
    let mut c = ActorsConfig::new(dir);
    c.store = c.store.with_durability(Durability::Buffered).with_compaction_sleep_interval(Duration::ZERO);
    c.lease_tick = None;
    c.manual_ticks = manual;
    c
}

impl TestSystem {
    pub async fn start(manual: bool) -> Self {
        Self::with(manual, |_| {}).await
    }

    pub async fn with(manual: bool, f: impl FnOnce(&mut ActorsConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut c = config(dir.path(), manual);
        f(&mut c);
        let handle = watchkv_actors::start(c).await.expect("start");
        Self { handle, dir }
    }

    pub async fn put(&self, key: &str, value: &str) -> i64 {
        self.handle.put(PutRequest::new(key, value)).await.expect("put").revision
    }

    /// Opens a stream whose responses a [`Recorder`] collects.
    pub fn stream(&self) -> Recorded {
        let log = Arc::new(Mutex::new(Vec::new()));
        let paused = Arc::new(AtomicBool::new(false));
        let recorder = Recorder { log: Arc::clone(&log), paused: Arc::clone(&paused) }.start();
        let addr = self.handle.open_stream(Arc::new(recorder.recipient::<StreamOutput>()));
        Recorded { addr, log, paused }
    }
}

/// Stands for a client: records every response; while `paused`, takes nothing more (it checks
/// again every 50 ms), like a client that stopped reading.
pub struct Recorder {
    log: Arc<Mutex<Vec<WatchResponse>>>,
    paused: Arc<AtomicBool>,
}

impl Actor for Recorder {
    type Context = Context<Self>;
}

impl Handler<StreamOutput> for Recorder {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: StreamOutput, _: &mut Self::Context) -> Self::Result {
        let log = Arc::clone(&self.log);
        let paused = Arc::clone(&self.paused);
        Box::pin(
            async move {
                while paused.load(Ordering::Acquire) {
                    actix_rt::time::sleep(Duration::from_millis(50)).await;
                }
                log.lock().expect("log").push(msg.0);
            }
            .into_actor(self),
        )
    }
}

/// A stream and what its client received.
pub struct Recorded {
    pub addr: Addr<StreamActor>,
    pub log: Arc<Mutex<Vec<WatchResponse>>>,
    pub paused: Arc<AtomicBool>,
}

impl Recorded {
    pub fn responses(&self) -> Vec<WatchResponse> {
        self.log.lock().expect("log").clone()
    }

    pub fn len(&self) -> usize {
        self.log.lock().expect("log").len()
    }

    /// Waits until `cond` holds for the recorded responses, or fails after [`DEADLINE`].
    pub async fn wait_for(&self, what: &str, cond: impl Fn(&[WatchResponse]) -> bool) -> Vec<WatchResponse> {
        let start = Instant::now();
        loop {
            {
                let log = self.log.lock().expect("log");
                if cond(&log) {
                    return log.clone();
                }
            }
            assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}; got {:#?}", self.responses());
            actix_rt::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for `n` responses in all.
    pub async fn wait_len(&self, n: usize) -> Vec<WatchResponse> {
        self.wait_for(&format!("{n} responses"), |r| r.len() >= n).await
    }

    /// Creates a watcher and waits for its created (or failed) response; returns that response.
    pub async fn create(&self, req: WatchCreate) -> WatchResponse {
        let before = self.len();
        self.addr.send(CreateWatch(req)).await.expect("stream alive");
        let log = self.wait_for("created", |r| r[before..].iter().any(|x| x.created)).await;
        log[before..].iter().find(|x| x.created).cloned().expect("created")
    }

    /// Creates a watcher on `range` from `start` and returns its id.
    pub async fn watch(&self, range: KeyRange, start: i64) -> i64 {
        let created = self.create(WatchCreate::new(&range, start)).await;
        assert!(!created.canceled, "create failed: {created:?}");
        created.watch_id
    }

    pub async fn cancel(&self, id: i64) {
        self.addr.send(CancelWatch(id)).await.expect("stream alive");
    }

    pub async fn request_progress(&self) {
        self.addr.send(RequestStreamProgress).await.expect("stream alive");
    }

    /// Events received for `id`, as (mod_revision, key, value) in order.
    pub fn events_of(&self, id: i64) -> Vec<(i64, String, String)> {
        self.responses()
            .iter()
            .filter(|r| r.watch_id == id)
            .flat_map(|r| r.events.iter())
            .map(|e| {
                (
                    e.kv.mod_revision,
                    String::from_utf8_lossy(&e.kv.key).into(),
                    String::from_utf8_lossy(&e.kv.value).into(),
                )
            })
            .collect()
    }

    /// Waits until every response the stream is owed for revisions up to now has arrived,
    /// without sleeping: once nothing is unsynced or parked, a sentinel watcher on a fresh key
    /// gets its event only after every earlier revision's events on this stream (per-stream
    /// order). Returns the responses received before the sentinel's, sentinel traffic removed.
    pub async fn fence(&self, sys: &TestSystem) -> Vec<WatchResponse> {
        wait_stats(&sys.handle, "nothing unsynced or parked", |s| s.syncer.unsynced == 0 && s.victims.victims == 0)
            .await;
        let key = format!("\u{1}fence-{}", rand::random::<u64>());
        let id = self.watch(KeyRange::single(key.clone()), 0).await;
        let rev = sys.put(&key, "fence").await;
        let log = self
            .wait_for("the fence event", |r| {
                r.iter().any(|x| x.watch_id == id && x.events.iter().any(|e| e.kv.mod_revision == rev))
            })
            .await;
        self.cancel(id).await;
        log.into_iter().filter(|r| r.watch_id != id).collect()
    }
}

/// Waits until `cond` is true of the system's stats.
pub async fn wait_stats(
    handle: &Handle,
    what: &str,
    cond: impl Fn(&watchkv_actors::SystemStats) -> bool,
) -> watchkv_actors::SystemStats {
    let start = Instant::now();
    loop {
        let stats = handle.stats().await.expect("stats");
        if cond(&stats) {
            return stats;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}; stats {stats:#?}");
        actix_rt::time::sleep(Duration::from_millis(5)).await;
    }
}
