//! Owns the recorder: an actor that stands in for a client stream's socket, and
//! [`RecordedStream`], a watch stream whose responses it records, with the waits a test needs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use actix::prelude::*;
use watchkv::watch::response::WatchResponse;
use watchkv::{KeyRange, PutRequest};

use super::{wait_stats, DEADLINE};
use crate::handle::Handle;
use crate::protocol::{CancelWatch, CreateWatch, RequestStreamProgress, WatchCreate};
use crate::sink::StreamOutput;
use crate::stream_actor::StreamActor;

/// How often a paused [`Recorder`] checks whether it may take the next response.
const PAUSED_POLL: Duration = Duration::from_millis(50);

/// How often a wait looks at the recorded responses again.
const WAIT_POLL: Duration = Duration::from_millis(5);

/// What the recorder and its [`RecordedStream`]s share.
type Log = Arc<Mutex<Vec<WatchResponse>>>;

/// Stands in for a client: records every response the stream hands it; while paused it takes
/// nothing more, like a client that stopped reading, so the stream's mailbox fills and its
/// watchers become victims.
pub struct Recorder {
    log: Log,
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
                    actix_rt::time::sleep(PAUSED_POLL).await;
                }
                lock(&log).push(msg.0);
            }
            .into_actor(self),
        )
    }
}

/// Locks the log; a test that panicked while holding it leaves it readable.
fn lock(log: &Log) -> MutexGuard<'_, Vec<WatchResponse>> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A watch stream whose client is a [`Recorder`]: send it messages, then assert on what it
/// recorded. Clones share the stream and its record.
#[derive(Clone)]
pub struct RecordedStream {
    addr: Addr<StreamActor>,
    log: Log,
    paused: Arc<AtomicBool>,
}

impl RecordedStream {
    /// Opens a stream on `handle` (its actor on the caller's arbiter) with a recorder as its
    /// client.
    #[must_use]
    pub fn open(handle: &Handle) -> Self {
        let log = Log::default();
        let paused = Arc::new(AtomicBool::new(false));
        let recorder = Recorder { log: Arc::clone(&log), paused: Arc::clone(&paused) }.start();
        let addr = handle.open_stream(Arc::new(recorder.recipient::<StreamOutput>()));
        Self { addr, log, paused }
    }

    /// Returns the stream actor's address, to send it [`CreateWatch`], [`CancelWatch`],
    /// [`RequestStreamProgress`], [`crate::protocol::ProgressTick`],
    /// [`crate::protocol::GetStreamStats`] or [`crate::CloseStream`].
    #[must_use]
    pub fn addr(&self) -> &Addr<StreamActor> {
        &self.addr
    }

    /// Returns a copy of every response recorded so far.
    #[must_use]
    pub fn responses(&self) -> Vec<WatchResponse> {
        lock(&self.log).clone()
    }

    /// Runs `f` over the responses recorded so far, without copying them.
    pub fn with_log<R>(&self, f: impl FnOnce(&[WatchResponse]) -> R) -> R {
        f(&lock(&self.log))
    }

    /// Returns how many responses were recorded.
    #[must_use]
    pub fn len(&self) -> usize {
        lock(&self.log).len()
    }

    /// Returns whether nothing was recorded yet.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        lock(&self.log).is_empty()
    }

    /// Stops taking responses, like a client that stopped reading.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::Release);
    }

    /// Takes responses again.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::Release);
    }

    /// Returns whether the recorder is paused.
    #[must_use]
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Waits until `cond` holds for the recorded responses and returns them.
    ///
    /// # Panics
    /// After [`DEADLINE`], naming `what` and showing the responses.
    pub async fn wait_for(&self, what: &str, cond: impl Fn(&[WatchResponse]) -> bool) -> Vec<WatchResponse> {
        let start = Instant::now();
        loop {
            {
                let log = lock(&self.log);
                if cond(&log) {
                    return log.clone();
                }
            }
            assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}; got {:#?}", self.responses());
            actix_rt::time::sleep(WAIT_POLL).await;
        }
    }

    /// Waits for `n` responses in all.
    ///
    /// # Panics
    /// After [`DEADLINE`].
    pub async fn wait_len(&self, n: usize) -> Vec<WatchResponse> {
        self.wait_for(&format!("{n} responses"), |r| r.len() >= n).await
    }

    /// Creates a watcher and waits for its `created` (or failed) response; returns that
    /// response.
    ///
    /// # Panics
    /// If the stream has stopped, or after [`DEADLINE`].
    pub async fn create(&self, req: WatchCreate) -> WatchResponse {
        let before = self.len();
        self.addr.send(CreateWatch(req)).await.unwrap_or_else(|_| panic!("the stream has stopped"));
        let log = self.wait_for("created", |r| r[before..].iter().any(|x| x.created)).await;
        let created = log[before..].iter().find(|x| x.created);
        created.cloned().unwrap_or_else(|| unreachable!("wait_for returned without a created response"))
    }

    /// Creates a watcher on `range` from `start` and returns its id.
    ///
    /// # Panics
    /// If the create fails, the stream has stopped, or after [`DEADLINE`].
    pub async fn watch(&self, range: KeyRange, start: i64) -> i64 {
        let created = self.create(WatchCreate::new(&range, start)).await;
        assert!(!created.canceled, "create failed: {created:?}");
        created.watch_id
    }

    /// Cancels watcher `id`.
    ///
    /// # Panics
    /// If the stream has stopped.
    pub async fn cancel(&self, id: i64) {
        self.addr.send(CancelWatch(id)).await.unwrap_or_else(|_| panic!("the stream has stopped"));
    }

    /// Asks for a stream-wide progress notification.
    ///
    /// # Panics
    /// If the stream has stopped.
    pub async fn request_progress(&self) {
        self.addr.send(RequestStreamProgress).await.unwrap_or_else(|_| panic!("the stream has stopped"));
    }

    /// Returns the events received for watcher `id`, as (mod_revision, key, value) in order.
    #[must_use]
    pub fn events_of(&self, id: i64) -> Vec<(i64, String, String)> {
        self.with_log(|log| {
            log.iter()
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
        })
    }

    /// Waits until every response the stream is owed for revisions up to now has arrived,
    /// without sleeping for a guessed time: once nothing is unsynced, parked or waiting at the
    /// store to be synced (a promotion placed over several turns), a sentinel
    /// watcher on a fresh key gets its event only after every earlier revision's events on
    /// this stream (per-stream order). Returns the responses received before the sentinel's,
    /// its own traffic removed. The sentinel's put is a write like any other: it takes the next
    /// revision.
    ///
    /// # Panics
    /// If the put fails, the stream has stopped, or after [`DEADLINE`].
    pub async fn fence(&self, handle: &Handle) -> Vec<WatchResponse> {
        wait_stats(handle, "nothing unsynced, parked or promoting", |s| {
            s.syncer.unsynced == 0 && s.victims.victims == 0 && s.store.promoting == 0
        })
        .await;
        let key = format!("\u{1}fence-{}", rand::random::<u64>());
        let id = self.watch(KeyRange::single(key.clone()), 0).await;
        let rev = match handle.put(PutRequest::new(key, "fence")).await {
            Ok(put) => put.revision,
            Err(e) => panic!("the fence's put failed: {e}"),
        };
        let log = self
            .wait_for("the fence event", |r| {
                r.iter().any(|x| x.watch_id == id && x.events.iter().any(|e| e.kv.mod_revision == rev))
            })
            .await;
        self.cancel(id).await;
        log.into_iter().filter(|r| r.watch_id != id).collect()
    }
}
